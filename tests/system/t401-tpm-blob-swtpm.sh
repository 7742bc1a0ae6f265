#!/usr/bin/env bash
# The server-side TPM activation blob (src/server/tpm_blob.c, device-protocol §5)
# against a real software TPM: two swtpm instances on loopback (TPM A, the device,
# and TPM B, another device), driven with tpm2-tools the way a DPS device drives its
# TPM (§5.3). For TPM A: EK at 0x81010001 and SRK at 0x81000001 with the §5.1
# templates; tests/tools/tpm_blob_tool builds a blob for them carrying a random K;
# PolicySecret(endorsement) + ActivateCredential recovers the inner key, Import +
# Load bring in the HMAC key, and the TPM's HMAC must equal openssl's HMAC-SHA256
# with K. A blob made for TPM B's EK, or bound to TPM B's SRK, must be refused by
# TPM A. No provd is involved.
#
# swtpm has no resource manager in front of it, so every tpm2-tools command is
# followed by flushing what the tools leave loaded (transient objects, sessions).
# Skips (TAP `1..0 # SKIP`) only when swtpm is not installed.
set -u
SRC=${PROVD_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${PROVD_BUILD_DIR:-$SRC/build}
TOOL=$BUILD/tests/tools/tpm_blob_tool
IP=127.0.0.41
EK_HANDLE=0x81010001
SRK_HANDLE=0x81000001
ID_HANDLE=0x81000100
SRK_ATTRS='fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt'

if ! command -v swtpm >/dev/null 2>&1; then
    echo "1..0 # SKIP swtpm is not installed (scripts/install-deps.sh installs it)"
    exit 0
fi

T=$(mktemp -d /tmp/provd-st-t401-XXXXXX)
. "$(dirname "$0")/lib/swtpm.sh" # start_tpm, SWTPM_PIDS
n=0
failed=0

cleanup()
{
    local pid
    for pid in "${SWTPM_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [ $failed -eq 0 ] && [ "${PROVD_TEST_KEEP:-0}" != 1 ]; then
        rm -rf "$T"
    else
        echo "# kept $T"
    fi
}
trap cleanup EXIT

# tap 0|1 DESCRIPTION [DIAGNOSTIC...]
tap()
{
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then
        echo "ok $n - $2"
    else
        failed=1
        echo "not ok $n - $2"
        shift 2
        local line
        for line in "$@"; do
            while IFS= read -r l; do printf '# %s\n' "$l"; done <<<"$line"
        done
    fi
}

# tcti NAME: points tpm2-tools at TPM NAME
tcti()
{
    local port_var="PORT_$1"
    export TPM2TOOLS_TCTI="swtpm:host=$IP,port=${!port_var}"
}

# flush: what tpm2-tools left loaded on the current TPM (objects, sessions)
flush()
{
    tpm2_flushcontext -t >/dev/null 2>&1
    tpm2_flushcontext -l >/dev/null 2>&1
    tpm2_flushcontext -s >/dev/null 2>&1
}

# on NAME CMD...: runs a tpm2-tools command on TPM NAME, then flushes. Output in
# $T/cmd.out and $T/cmd.err; returns the command's status.
on()
{
    local rc
    tcti "$1"
    shift
    "$@" >"$T/cmd.out" 2>"$T/cmd.err"
    rc=$?
    flush
    return $rc
}

cmd_output()
{
    echo "stdout: $(cat "$T/cmd.out")"
    echo "stderr: $(cat "$T/cmd.err")"
}

# make_keys NAME: EK and SRK as a DPS device makes them (§5.1), persisted at their
# handles; their TPM2B_PUBLIC in NAME.ek/NAME.srk and the TPM's Names in *.name.
make_keys()
{
    local name=$1
    on "$name" tpm2_createek -c $EK_HANDLE -G rsa -u "$T/$name.ek.pub" &&
        on "$name" tpm2_createprimary -C o -g sha256 -G rsa2048:aes128cfb -a "$SRK_ATTRS" \
            -c "$T/$name.srk.ctx" &&
        on "$name" tpm2_evictcontrol -C o -c "$T/$name.srk.ctx" $SRK_HANDLE &&
        on "$name" tpm2_readpublic -c $EK_HANDLE -f tss -o "$T/$name.ek" -n "$T/$name.ek.name" &&
        on "$name" tpm2_readpublic -c $SRK_HANDLE -f tss -o "$T/$name.srk" -n "$T/$name.srk.name"
}

# u32 at byte offset 6 of a TPM2B_PUBLIC: objectAttributes, as 8 hex digits
attributes()
{
    od -An -tx1 -j6 -N4 "$1" | tr -d ' \n'
}

hexfile()
{
    od -An -tx1 -v "$1" | tr -d ' \n'
}

# blob EK SRK KEYHEX PREFIX: builds a blob and splits it into PREFIX.cred (the
# tpm2_makecredential file: magic, version, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET),
# PREFIX.dpriv, PREFIX.seed, PREFIX.pub; the element sizes go to PREFIX.sizes.
blob()
{
    "$TOOL" blob "$1" "$2" "$3" >"$T/$4.b64" 2>"$T/tool.err" || {
        echo "tpm_blob_tool: $(cat "$T/tool.err")" >"$T/blob.err"
        return 1
    }
    python3 - "$T/$4" <<'EOF' 2>"$T/blob.err"
import base64, sys
p = sys.argv[1]
b = base64.b64decode(open(p + '.b64').read().strip(), validate=True)
el, o = [], 0
while o < len(b):
    n = int.from_bytes(b[o:o + 2], 'big')
    if o + 2 + n > len(b):
        sys.exit('element %d overruns the blob' % (len(el) + 1))
    el.append(b[o:o + 2 + n])
    o += 2 + n
if len(el) != 6:
    sys.exit('%d elements, not 6' % len(el))
open(p + '.cred', 'wb').write(bytes.fromhex('badcc0de00000001') + el[0] + el[1])
open(p + '.dpriv', 'wb').write(el[2])
open(p + '.seed', 'wb').write(el[3])
open(p + '.pub', 'wb').write(el[4])
open(p + '.sizes', 'w').write(' '.join(str(len(e)) for e in el) + ' %d\n' % len(b))
EOF
}

# activate NAME PREFIX OUT: PolicySecret(endorsement) session, then
# ActivateCredential(SRK, EK) of PREFIX.cred on TPM NAME; the inner key into OUT.
# The session lives from StartAuthSession to ActivateCredential without a flush.
activate()
{
    local rc=1
    tcti "$1"
    if tpm2_startauthsession --policy-session -S "$T/session.ctx" >"$T/cmd.out" 2>"$T/cmd.err" &&
        tpm2_policysecret -S "$T/session.ctx" -c e >"$T/cmd.out" 2>"$T/cmd.err"; then
        tpm2_activatecredential -c $SRK_HANDLE -C $EK_HANDLE -i "$T/$2.cred" -o "$T/$3" \
            -P "session:$T/session.ctx" >"$T/cmd.out" 2>"$T/cmd.err"
        rc=$?
    fi
    tpm2_flushcontext "$T/session.ctx" >/dev/null 2>&1
    flush
    return $rc
}

# import_load NAME PREFIX INNERKEY: Import (inner wrapper AES-128-CFB) + Load, then
# persist at ID_HANDLE like the device (removing what was there).
import_load()
{
    local name=$1
    on "$name" tpm2_import -C $SRK_HANDLE -u "$T/$2.pub" -i "$T/$2.dpriv" -s "$T/$2.seed" \
        -k "$T/$3" -r "$T/$2.priv" || return 1
    on "$name" tpm2_load -C $SRK_HANDLE -u "$T/$2.pub" -r "$T/$2.priv" -c "$T/$2.ctx" || return 1
    on "$name" tpm2_evictcontrol -C o -c $ID_HANDLE >/dev/null 2>&1
    on "$name" tpm2_evictcontrol -C o -c "$T/$2.ctx" $ID_HANDLE
}

# tpm_hmac NAME MSGFILE: HMAC-SHA256 by the key at ID_HANDLE, hex on stdout
tpm_hmac()
{
    on "$1" tpm2_hmac -c $ID_HANDLE -g sha256 -o "$T/tpm.mac" "$2" || return 1
    hexfile "$T/tpm.mac"
}

# sw_hmac KEYHEX MSGFILE: the same with openssl
sw_hmac()
{
    openssl dgst -sha256 -mac HMAC -macopt "hexkey:$1" -binary "$2" | od -An -tx1 -v | tr -d ' \n'
}

echo "1..12"

missing=
for t in tpm2_createek tpm2_activatecredential tpm2_import tpm2_hmac openssl python3 od; do
    command -v $t >/dev/null 2>&1 || missing="$missing $t"
done
[ -x "$TOOL" ] || missing="$missing $TOOL"
if [ -n "$missing" ]; then
    tap 1 "swtpm A and B start on $IP" "missing:$missing (scripts/install-deps.sh)"
    exit 1
fi
if start_tpm A && start_tpm B; then
    tap 0 "swtpm A and B start on $IP"
else
    tap 1 "swtpm A and B start on $IP" "$(cat "$T/swtpm.err" 2>/dev/null)"
    exit 1
fi

# 2
if make_keys A && make_keys B; then
    ek_attrs=$(attributes "$T/A.ek")
    srk_attrs=$(attributes "$T/A.srk")
    [ "$ek_attrs" = 000300b2 ] && [ "$srk_attrs" = 00030472 ] &&
        ! cmp -s "$T/A.ek" "$T/B.ek"
    tap $? "EK and SRK on both TPMs with the §5.1 templates, distinct TPMs" \
        "EK attributes $ek_attrs, SRK attributes $srk_attrs"
else
    tap 1 "EK and SRK on both TPMs with the §5.1 templates, distinct TPMs" "$(cmd_output)"
    exit 1
fi

# 3: Names as tpm_blob.c computes them (over the bytes received) equal the TPM's
ok=0
why=()
for k in A.ek A.srk B.ek B.srk; do
    mine=$("$TOOL" name "$T/$k" 2>&1)
    tpms=$(hexfile "$T/$k.name")
    if [ "$mine" != "$tpms" ]; then
        ok=1
        why+=("$k: tool $mine, TPM $tpms")
    fi
done
tap $ok "tpm_public_parse accepts the TPM's EK and SRK; their Names equal the TPM's" "${why[@]}"

# 4: registration id = lowercase base32 (no padding) of SHA-256 over the EK TPM2B_PUBLIC
mine=$("$TOOL" regid "$T/A.ek" 2>&1)
want=$(python3 -c 'import base64, hashlib, sys
d = hashlib.sha256(open(sys.argv[1], "rb").read()).digest()
print(base64.b32encode(d).decode().lower().rstrip("="))' "$T/A.ek")
[ "$mine" = "$want" ]
tap $? "default registration id of the EK (§5.1)" "tool: $mine" "python: $want"

# 5: blob for A with a random K: layout of §5.2
K1=$(openssl rand -hex 32)
if blob "$T/A.ek" "$T/A.srk" "$K1" good; then
    sizes=$(cat "$T/good.sizes")
    [ "$sizes" = "54 258 144 258 82 2 798" ]
    tap $? "blob: six TPM2B elements of 54 258 144 258 82 2 bytes, 798 in all (§5.2)" \
        "sizes: $sizes"
else
    tap 1 "blob: six TPM2B elements of 54 258 144 258 82 2 bytes, 798 in all (§5.2)" \
        "$(cat "$T/blob.err")"
fi

# 6
if activate A good inner.key && [ "$(stat -c %s "$T/inner.key")" -eq 16 ]; then
    tap 0 "PolicySecret(endorsement) + ActivateCredential recover a 16-byte inner key"
else
    tap 1 "PolicySecret(endorsement) + ActivateCredential recover a 16-byte inner key" \
        "$(cmd_output)"
fi

# 7
if import_load A good inner.key; then
    tap 0 "Import with the inner key (AES-128-CFB), Load, EvictControl to $ID_HANDLE"
else
    tap 1 "Import with the inner key (AES-128-CFB), Load, EvictControl to $ID_HANDLE" \
        "$(cmd_output)"
fi

# 8: the TPM's HMAC equals HMAC-SHA256(K, message), for two messages
printf 'hello-from-tpm' >"$T/msg1"
printf '0ne00TEST01%%2Fregistrations%%2Fdevice\n1795981833' >"$T/msg2"
ok=0
why=()
for m in msg1 msg2; do
    t=$(tpm_hmac A "$T/$m") || why+=("tpm2_hmac: $(cmd_output)")
    s=$(sw_hmac "$K1" "$T/$m")
    if [ -z "$t" ] || [ "$t" != "$s" ]; then
        ok=1
        why+=("$m: TPM $t, openssl $s")
    fi
done
tap $ok "TPM HMAC with the imported key = openssl HMAC-SHA256(K, message)" "${why[@]}"

# 9: a second blob (another K, as for the assigned hub key) replaces the key
K2=$(openssl rand -hex 32)
why=()
if blob "$T/A.ek" "$T/A.srk" "$K2" second && activate A second inner2.key &&
    import_load A second inner2.key; then
    t=$(tpm_hmac A "$T/msg1")
    s=$(sw_hmac "$K2" "$T/msg1")
    [ -n "$t" ] && [ "$t" = "$s" ] && ! cmp -s "$T/inner.key" "$T/inner2.key"
    tap $? "a second blob with a new K imports the same way; HMAC follows the new K" \
        "TPM $t, openssl $s"
else
    tap 1 "a second blob with a new K imports the same way; HMAC follows the new K" \
        "$(cat "$T/blob.err" 2>/dev/null)" "$(cmd_output)"
fi

# 10: made for TPM B's EK (bound to A's SRK): A cannot decrypt the seed
if blob "$T/B.ek" "$T/A.srk" "$K1" other_ek; then
    if activate A other_ek bad1.key; then
        tap 1 "a blob for another TPM's EK fails ActivateCredential" "it was activated"
    else
        cp "$T/cmd.err" "$T/t10.err"
        grep -q 'Esys_ActivateCredential' "$T/cmd.err"
        tap $? "a blob for another TPM's EK fails ActivateCredential" "$(cmd_output)"
    fi
else
    tap 1 "a blob for another TPM's EK fails ActivateCredential" "$(cat "$T/blob.err")"
fi

# 11: made for A's EK but bound to TPM B's SRK: the integrity check fails on A
if blob "$T/A.ek" "$T/B.srk" "$K1" other_srk; then
    if activate A other_srk bad2.key; then
        tap 1 "a blob bound to another SRK fails ActivateCredential" "it was activated"
    else
        cp "$T/cmd.err" "$T/t11.err"
        grep -qi 'integrity' "$T/cmd.err"
        tap $? "a blob bound to another SRK fails ActivateCredential" "$(cmd_output)"
    fi
else
    tap 1 "a blob bound to another SRK fails ActivateCredential" "$(cat "$T/blob.err")"
fi

# 12: the duplicate needs the right inner key
head -c 16 /dev/zero >"$T/zero.key"
if on A tpm2_import -C $SRK_HANDLE -u "$T/good.pub" -i "$T/good.dpriv" -s "$T/good.seed" \
    -k "$T/zero.key" -r "$T/bad.priv"; then
    tap 1 "Import with a wrong inner key fails" "it was imported"
else
    grep -q 'Esys_Import' "$T/cmd.err"
    tap $? "Import with a wrong inner key fails" "$(cmd_output)"
fi

[ $failed -eq 0 ]
