#!/usr/bin/env bash
# prov-device --tpm (libprov's TPM backend on tpm2-tss ESAPI, src/lib/tpm.c) against
# software TPMs (swtpm) and provd, device protocol §4.4 and §5.
#
# First without provd's TPM flow: tests/tools/tpm_device_tool drives the backend, which
# must create the EK/SRK with the §5.1 templates (the same EK tpm2_createek makes), give
# the default registration id, import blobs that tests/tools/tpm_blob_tool builds for a
# random K (the TPM's HMAC, by TPM2_HMAC and by an HMAC sequence, equals openssl's with
# K), refuse a blob made for another TPM, and leave no transient object or session on
# the TPM (swtpm has no resource manager).
#
# Then the whole flow: TPM A is enrolled through the service API (individual enrollment,
# its EK and SRK as prov-device --tpm-identity prints them); prov-device --tpm gets the
# 401 challenge, imports it, signs the SAS in the TPM, is assigned and imports the hub
# key. The hub key is checked end to end: the enrollment names a hub whose connector is a
# webhook (tests/system/lib/webhook_server.py), to which provd sends the device's hub
# password, computed from the hub key it sent; it must equal the password prov-device
# computes inside the TPM (--print-hub-password). Refusals, each with exit status 1 and
# no registration record in the store: TPM B (not enrolled), TPM B with TPM A's
# registration id, a disabled enrollment. Skips only when swtpm is not installed.
#
# swtpm listens on this file's address, on ports the kernel picks.
. "$(dirname "$0")/lib/lib.sh"
lib_init 127.0.0.42 t402
. "$(dirname "$0")/lib/swtpm.sh" # start_tpm, SWTPM_PIDS

if ! command -v swtpm >/dev/null 2>&1; then
    echo "1..0 # SKIP swtpm is not installed (scripts/install-deps.sh installs it)"
    exit 0
fi

PROVDEV=$PROVD_BUILD_DIR/src/cli/prov-device
DEVTOOL=$PROVD_BUILD_DIR/tests/tools/tpm_device_tool
BLOBTOOL=$PROVD_BUILD_DIR/tests/tools/tpm_blob_tool
HUB3=hub3.example.test
WEBHOOK_PID=
A_ID=
B_ID=
HUB_PW=

# ---- the webhook hub connector's receiver, and provd with that hub -----------------
# The receiver must run before provd starts (its URL is on provd's command line), so it
# listens on this file's preferred address (the port is the kernel's, so another run on
# the same address does not matter).
"$PY" "$PROVD_SRC/tests/system/lib/webhook_server.py" --listen "$IP:0" --mode hub-accept \
    --log "$T/webhook.log" >"$T/webhook.out" 2>"$T/webhook.err" &
WEBHOOK_PID=$!
for _ in $(seq 1 100); do
    grep -q '^LISTEN ' "$T/webhook.out" 2>/dev/null && break
    sleep 0.05
done
WEBHOOK_ADDR=$(sed -n 's/^LISTEN //p' "$T/webhook.out")
PROVD_EXTRA_ARGS=(--hub "$HUB3=http://$WEBHOOK_ADDR/hub" --hub-apply-allocation-policy "$HUB3=false")

t402_exit()
{
    local rc=$? pid
    for pid in "${SWTPM_PIDS[@]}" $WEBHOOK_PID; do
        kill -TERM "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    (exit $rc)
    _lib_exit
}
trap t402_exit EXIT

# ---- swtpm ---------------------------------------------------------------------------

# manufacture_tpm NAME: swtpm state for TPM NAME with an RSA EK certificate at NV
# 0x01c00002, issued by a test CA of its own (swtpm_setup + swtpm_localca in $T/NAME.ca:
# NAME.ca/swtpm-localca-rootca-cert.pem, then NAME.ca/issuercert.pem, then the EK).
manufacture_tpm()
{
    local name=$1
    mkdir -p "$T/$name" "$T/$name.ca"
    printf 'statedir = %s\nsigningkey = %s/signkey.pem\nissuercert = %s/issuercert.pem\ncertserial = %s/certserial\n' \
        "$T/$name.ca" "$T/$name.ca" "$T/$name.ca" "$T/$name.ca" >"$T/$name.localca.conf"
    printf 'create_certs_tool = %s\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\n' \
        "$(command -v swtpm_localca)" "$T/$name.localca.conf" /dev/null >"$T/$name.setup.conf"
    timeout 120 swtpm_setup --tpm2 --tpmstate "$T/$name" --create-ek-cert \
        --config "$T/$name.setup.conf" >"$T/$name.setup.out" 2>&1
}

# ---- helpers ------------------------------------------------------------------------

# dev ARGS...: prov-device against this provd; stdout in $T/out, stderr in $T/err, exit
# status in DEV_RC.
dev()
{
    DEV_RC=0
    timeout 60 "$PROVDEV" --host "$IP" --cacert "$CA" --scope "$SCOPE" --timeout 30 "$@" \
        >"$T/out" 2>"$T/err" || DEV_RC=$?
}

expect_rc()
{
    [ "$DEV_RC" = "$1" ] ||
        fail "exit status $DEV_RC, expected $1; stdout: $(head -c 600 "$T/out");" \
            "stderr: $(head -c 1500 "$T/err")"
}

hexfile()
{
    od -An -tx1 -v "$1" | tr -d ' \n'
}

# sw_hmac KEYHEX FILE: HMAC-SHA256 with openssl, hex
sw_hmac()
{
    openssl dgst -sha256 -mac HMAC -macopt "hexkey:$1" -binary "$2" | od -An -tx1 -v | tr -d ' \n'
}

# tool CMD TPM ARGS...: tpm_device_tool on TPM NAME; stdout in $T/tool.out, stderr
# in $T/tool.err; returns its status.
tool()
{
    local cmd=$1 tcti_var="TCTI_$2"
    shift 2
    "$DEVTOOL" "$cmd" "${!tcti_var}" "$@" >"$T/tool.out" 2>"$T/tool.err"
}

tool_output()
{
    echo "stdout: $(cat "$T/tool.out")"
    echo "stderr: $(cat "$T/tool.err")"
}

# leftovers NAME: transient objects and sessions on TPM NAME (tpm2-tools), one per line
leftovers()
{
    local tcti_var="TCTI_$1" what
    for what in handles-transient handles-loaded-session handles-saved-session; do
        TPM2TOOLS_TCTI=${!tcti_var} tpm2_getcap "$what" 2>&1
    done
}

# identity NAME: prov-device --tpm-identity --json for TPM NAME into $T/NAME.id.json
identity()
{
    local tcti_var="TCTI_$1"
    timeout 30 "$PROVDEV" --tpm-identity --tcti "${!tcti_var}" --json >"$T/$1.id.json" \
        2>"$T/$1.id.err"
}

put_ok()
{
    service_put "$1" "$2"
    case "$HTTP_STATUS" in
    200 | 201) return 0 ;;
    *) fail "PUT $1: HTTP $HTTP_STATUS: $(body | head -c 600)"; return 1 ;;
    esac
}

# tpm_enrollment REGID NAME [STATUS]: an individual TPM enrollment of TPM NAME's EK and SRK
# that sends its devices to the webhook hub.
tpm_enrollment()
{
    local f=$T/$2.id.json
    printf '{"registrationId":"%s","attestation":{"type":"tpm","tpm":{"endorsementKey":"%s",' \
        "$1" "$(out_get endorsementKey "$f")"
    printf '"storageRootKey":"%s"}},"iotHubs":["%s"],"provisioningStatus":"%s"}' \
        "$(out_get storageRootKey "$f")" "$HUB3" "${3:-enabled}"
}

# registration_absent REGID: the service API has no registration record for REGID
registration_absent()
{
    req GET "/registrations/$1?api-version=$API_SVC" -H "Authorization: $(owner_sas)"
    [ "$HTTP_STATUS" = 404 ] ||
        fail "registration record of $1: HTTP $HTTP_STATUS: $(body | head -c 400)"
}

# refused WHAT ARGS...: prov-device refused with 401 401002 (or the code in EXPECT_CODE),
# exit 1, and the store did not change.
refused()
{
    local before after
    before=$(db_snapshot)
    dev "$@"
    after=$(db_snapshot)
    expect_rc 1 || return 1
    grep -q "^prov-device: registration refused: 401 ${EXPECT_CODE:-401002} " "$T/err" ||
        fail "stderr: $(cat "$T/err")" || return 1
    [ "$before" = "$after" ] || fail "store changed:" "--- before" "$before" "--- after" "$after"
}

# ---- cases ---------------------------------------------------------------------------

case_setup()
{
    local missing= t
    for t in tpm2_getcap tpm2_createek tpm2_readpublic tpm2_flushcontext openssl od timeout; do
        command -v $t >/dev/null 2>&1 || missing="$missing $t"
    done
    for t in "$PROVDEV" "$DEVTOOL" "$BLOBTOOL"; do
        [ -x "$t" ] || missing="$missing $t"
    done
    [ -z "$missing" ] || fail "missing:$missing" || return 1
    [ -n "$WEBHOOK_ADDR" ] || fail "webhook receiver: $(cat "$T/webhook.err")" || return 1
    start_tpm A && start_tpm B || fail "swtpm: $(cat "$T/swtpm.err" 2>/dev/null)"
}

case_keys()
{
    local want
    tool keys A "$T/A.ek" "$T/A.srk" || fail "tpm_device_tool keys: $(tool_output)" || return 1
    want=$("$PY" -c 'import base64, hashlib, sys
d = hashlib.sha256(open(sys.argv[1], "rb").read()).digest()
print(base64.b32encode(d).decode().lower().rstrip("="))' "$T/A.ek")
    [ "$(cat "$T/tool.out")" = "$want" ] ||
        fail "registration id $(cat "$T/tool.out"), python: $want" || return 1
    # the §5.1 attributes: EK 0x000300b2, SRK 0x00030472
    [ "$(od -An -tx1 -j6 -N4 "$T/A.ek" | tr -d ' \n')" = 000300b2 ] &&
        [ "$(od -An -tx1 -j6 -N4 "$T/A.srk" | tr -d ' \n')" = 00030472 ] ||
        fail "attributes: EK $(od -An -tx1 -j6 -N4 "$T/A.ek"), SRK $(od -An -tx1 -j6 -N4 "$T/A.srk")" ||
        return 1
    # a second open reuses the persistent keys
    tool keys A "$T/A.ek2" "$T/A.srk2" && cmp -s "$T/A.ek" "$T/A.ek2" &&
        cmp -s "$T/A.srk" "$T/A.srk2" || fail "second open: other keys: $(tool_output)" ||
        return 1
    # the EK is the one tpm2_createek makes (TCG template): what an EK certificate certifies
    TPM2TOOLS_TCTI=$TCTI_A tpm2_createek -G rsa -c "$T/ek.ctx" -u "$T/ek.tmp" >/dev/null 2>&1 &&
        TPM2TOOLS_TCTI=$TCTI_A tpm2_readpublic -c "$T/ek.ctx" -f tss -o "$T/A.ek.tools" \
            >/dev/null 2>&1
    TPM2TOOLS_TCTI=$TCTI_A tpm2_flushcontext -t >/dev/null 2>&1
    cmp -s "$T/A.ek" "$T/A.ek.tools" || fail "EK differs from tpm2_createek's" || return 1
    # prov-device --tpm-identity prints the same keys and id
    identity A || fail "--tpm-identity: $(cat "$T/A.id.err")" || return 1
    [ "$(out_get registrationId "$T/A.id.json")" = "$want" ] &&
        [ "$(out_get endorsementKey "$T/A.id.json")" = "$(base64 -w0 "$T/A.ek")" ] &&
        [ "$(out_get storageRootKey "$T/A.id.json")" = "$(base64 -w0 "$T/A.srk")" ] ||
        fail "--tpm-identity: $(cat "$T/A.id.json")" || return 1
    A_ID=$want
    identity B || fail "--tpm-identity B: $(cat "$T/B.id.err")" || return 1
    B_ID=$(out_get registrationId "$T/B.id.json")
    [ -n "$B_ID" ] && [ "$B_ID" != "$A_ID" ] || fail "TPM B's id '$B_ID' (A: $A_ID)"
    out_get endorsementKey "$T/B.id.json" | base64 -d >"$T/B.ek"
    out_get storageRootKey "$T/B.id.json" | base64 -d >"$T/B.srk"
}

case_import()
{
    local k1 k2 m t s
    k1=$(openssl rand -hex 32)
    "$BLOBTOOL" blob "$T/A.ek" "$T/A.srk" "$k1" >"$T/blob1" 2>"$T/tool.err" ||
        fail "tpm_blob_tool: $(cat "$T/tool.err")" || return 1
    tool import A "$T/blob1" || fail "import: $(tool_output)" || return 1
    printf 'hello-from-tpm' >"$T/msg1"
    printf '0ne00TEST01%%2Fregistrations%%2Fdevice\n1795981833' >"$T/msg2"
    # above the TPM's input buffer (1024 on swtpm): the HMAC sequence path
    head -c 5000 /dev/urandom >"$T/msg3"
    for m in msg1 msg2 msg3; do
        tool hmac A "$T/$m" || fail "hmac $m: $(tool_output)" || return 1
        t=$(cat "$T/tool.out")
        s=$(sw_hmac "$k1" "$T/$m")
        [ "$t" = "$s" ] || fail "$m: TPM $t, openssl $s" || return 1
    done
    # a second blob (as the hub key) replaces the key at 0x81000100
    k2=$(openssl rand -hex 32)
    "$BLOBTOOL" blob "$T/A.ek" "$T/A.srk" "$k2" >"$T/blob2" 2>"$T/tool.err" &&
        tool import A "$T/blob2" && tool hmac A "$T/msg1" ||
        fail "second blob: $(tool_output)" || return 1
    [ "$(cat "$T/tool.out")" = "$(sw_hmac "$k2" "$T/msg1")" ] ||
        fail "after the second blob: TPM $(cat "$T/tool.out"), openssl $(sw_hmac "$k2" "$T/msg1")"
}

case_import_refused()
{
    local k
    k=$(openssl rand -hex 32)
    "$BLOBTOOL" blob "$T/B.ek" "$T/A.srk" "$k" >"$T/blob_b" 2>"$T/tool.err" ||
        fail "tpm_blob_tool: $(cat "$T/tool.err")" || return 1
    if tool import A "$T/blob_b"; then
        fail "TPM A imported a blob made for TPM B's EK"
        return 1
    fi
    grep -q 'not made for this TPM' "$T/tool.err" || fail "$(tool_output)" || return 1
    # not base64 / not a blob
    printf 'bm90IGEgYmxvYg==' >"$T/blob_bad"
    if tool import A "$T/blob_bad"; then
        fail "TPM A imported garbage"
        return 1
    fi
    grep -q 'layout of an activation blob' "$T/tool.err" || fail "$(tool_output)"
}

case_no_leftovers()
{
    local l
    l=$(leftovers A)
    [ -z "$(printf '%s' "$l" | grep -v '^$')" ] || fail "left on TPM A: $l"
}

case_enroll()
{
    put_ok "/enrollments/$A_ID" "$(tpm_enrollment "$A_ID" A)" || return 1
    put_ok /enrollments/t402-disabled "$(tpm_enrollment t402-disabled B disabled)"
}

case_register()
{
    local pw before
    dev --tpm --tcti "$TCTI_A" --json --print-hub-password --verbose
    expect_rc 0 || return 1
    [ "$(out_get status)" = assigned ] && [ "$(out_get deviceId)" = "$A_ID" ] &&
        [ "$(out_get assignedHub)" = "$HUB3" ] || fail "--json: $(cat "$T/out")" || return 1
    pw=$(out_get hubPassword)
    [ ${#pw} = 44 ] || fail "hubPassword '$pw'" || return 1
    HUB_PW=$pw
    # the flow as the library logged it: challenge, import, signed PUT, hub key import
    grep -q 'TPM challenge (401 with authenticationKey)' "$T/err" &&
        grep -q 'hub key imported into the TPM at 0x81000100' "$T/err" ||
        fail "log: $(head -c 3000 "$T/err")" || return 1
    # nothing secret in the log
    if grep -q -e 'SharedAccessSignature' -e 'sig=' -e "$pw" "$T/err"; then
        fail "--verbose output shows the SAS token or the hub password"
        return 1
    fi
    expect_status 200 GET "/registrations/$A_ID?api-version=$API_SVC" \
        -H "Authorization: $(owner_sas)" || return 1
    [ "$(json_get status)" = assigned ] || fail "record: $(body | head -c 400)"
}

# hook_password DEVICE: the password provd's webhook hub connector sent for DEVICE (last create)
hook_password()
{
    "$PY" -I -S -c '
import json, sys
pw = ""
for line in open(sys.argv[1], encoding="utf-8"):
    b = json.loads(line).get("body") or {}
    if b.get("operation") == "create" and b.get("deviceId") == sys.argv[2]:
        pw = (b.get("authentication") or {}).get("password") or ""
sys.stdout.write(pw)
' "$T/webhook.log" "$1" 2>&1
}

case_hub_key()
{
    local hook tpm
    # the password provd sent to the hub connector, computed from the hub key it sent
    hook=$(hook_password "$A_ID")
    [ -n "$hook" ] || fail "no create for $A_ID at the webhook hub: $(head -c 2000 "$T/webhook.log")" ||
        return 1
    [ "$hook" = "$HUB_PW" ] ||
        fail "hub password: prov-device (TPM) $HUB_PW, provd's hub connector $hook" || return 1
    # and the key stays in the TPM: TPM2_HMAC at 0x81000100 gives the same password
    printf 'provd-hub-password:%s' "$A_ID" >"$T/pwmsg"
    tool hmac A "$T/pwmsg" || fail "hmac: $(tool_output)" || return 1
    tpm=$("$PY" -I -S -c 'import base64, sys
print(base64.b64encode(bytes.fromhex(sys.argv[1])).decode())' "$(cat "$T/tool.out")" 2>&1)
    [ "$tpm" = "$HUB_PW" ] || fail "TPM HMAC at 0x81000100: $tpm, printed: $HUB_PW"
}

# the same password rule for a symmetric-key device (its own key, computed in software)
case_symkey_password()
{
    local key hook
    key=$(rand_key 32)
    put_ok /enrollments/t402-sym "{\"registrationId\":\"t402-sym\",\"attestation\":{\"type\":
        \"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"$key\",\"secondaryKey\":
        \"$(rand_key 32)\"}},\"iotHubs\":[\"$HUB3\"]}" || return 1
    dev --registration-id t402-sym --symmetric-key "$key" --print-hub-password
    expect_rc 0 || return 1
    hook=$(hook_password t402-sym)
    [ -n "$hook" ] && grep -qx "hub password: $hook" "$T/out" ||
        fail "output: $(cat "$T/out"); the hub connector's password: '$hook'"
}

# TPM C has an EK certificate: prov-device sends it, and a TPM enrollment group that trusts
# its issuer takes the device (no individual enrollment).
case_group()
{
    local pem_root pem_issuer cert
    command -v swtpm_setup >/dev/null 2>&1 && command -v swtpm_localca >/dev/null 2>&1 ||
        fail "swtpm_setup or swtpm_localca missing (package swtpm-tools)" || return 1
    manufacture_tpm C || fail "swtpm_setup: $(tail -c 1500 "$T/C.setup.out")" || return 1
    start_tpm C || fail "swtpm C: $(cat "$T/swtpm.err" 2>/dev/null)" || return 1
    identity C || fail "--tpm-identity C: $(cat "$T/C.id.err")" || return 1
    cert=$(out_get endorsementKeyCertificate "$T/C.id.json")
    [ -n "$cert" ] || fail "no endorsementKeyCertificate: $(cat "$T/C.id.json")" || return 1
    # the certificate certifies this EK: same RSA modulus
    printf '%s' "$cert" | base64 -d >"$T/C.ekcert.der"
    out_get endorsementKey "$T/C.id.json" | base64 -d >"$T/C.ek"
    [ "$(openssl x509 -inform der -in "$T/C.ekcert.der" -noout -modulus | sed 's/^Modulus=//')" = \
        "$(tail -c 256 "$T/C.ek" | od -An -tx1 -v | tr -d ' \n' | tr a-f A-F)" ] ||
        fail "the EK certificate's key is not the EK" || return 1
    pem_root=$("$PY" -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read()))' \
        "$T/C.ca/swtpm-localca-rootca-cert.pem")
    pem_issuer=$("$PY" -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read()))' \
        "$T/C.ca/issuercert.pem")
    put_ok /enrollmentGroups/t402-group "{\"enrollmentGroupId\":\"t402-group\",
        \"attestation\":{\"type\":\"tpm\",\"tpm\":{\"endorsementCertificateAuthorities\":
        [$pem_root,$pem_issuer]}},\"iotHubs\":[\"$HUB3\"]}" || return 1
    dev --tpm --tcti "$TCTI_C" --json --verbose
    expect_rc 0 || return 1
    grep -q 'EK certificate read from NV index 0x01c00002' "$T/err" ||
        fail "log: $(head -c 3000 "$T/err")" || return 1
    # assigned without an individual enrollment: only the group can have matched, and only
    # through the EK certificate the request carried
    [ "$(out_get status)" = assigned ] &&
        [ "$(out_get deviceId)" = "$(out_get registrationId "$T/C.id.json")" ] ||
        fail "--json: $(cat "$T/out")" || return 1
    req GET "/registrations/$(out_get registrationId "$T/C.id.json")?api-version=$API_SVC" \
        -H "Authorization: $(owner_sas)"
    [ "$HTTP_STATUS" = 200 ] && [ "$(json_get status)" = assigned ] ||
        fail "no assigned record: HTTP $HTTP_STATUS $(body | head -c 400)"
}

case_register_again()
{
    dev --tpm --tcti "$TCTI_A" --registration-id "$A_ID" --print-hub-password
    expect_rc 0 || return 1
    grep -qx "assigned: hub=$HUB3 device=$A_ID" "$T/out" &&
        grep -qx "hub password: $HUB_PW" "$T/out" ||
        fail "output: $(cat "$T/out") (hub password before: $HUB_PW)" || return 1
    [ -z "$(leftovers A | grep -v '^$')" ] || fail "left on TPM A: $(leftovers A)"
}

case_not_enrolled()
{
    refused --tpm --tcti "$TCTI_B" || return 1
    registration_absent "$B_ID"
}

case_other_tpm()
{
    local before
    before=$(sqlite3 "$DB" "select etag from registrations;" 2>&1)
    refused --tpm --tcti "$TCTI_B" --registration-id "$A_ID" || return 1
    [ "$(sqlite3 "$DB" "select etag from registrations;" 2>&1)" = "$before" ] ||
        fail "A's registration record changed"
}

case_disabled()
{
    EXPECT_CODE=401003 refused --tpm --tcti "$TCTI_B" --registration-id t402-disabled ||
        return 1
    registration_absent t402-disabled
}

case_usage()
{
    dev --tpm --tcti "$TCTI_A" --transport mqtt
    expect_rc 2 || return 1
    grep -q 'TPM attestation works over HTTPS only' "$T/err" || fail "stderr: $(cat "$T/err")" ||
        return 1
    dev --tcti "$TCTI_A" --registration-id x --symmetric-key "$(rand_key 32)"
    expect_rc 2 || return 1
    grep -q -- '--tcti needs --tpm' "$T/err" || fail "stderr: $(cat "$T/err")" || return 1
    dev --tpm --symmetric-key "$(rand_key 32)" --registration-id x
    expect_rc 2 || return 1
    grep -q 'give only one of --tpm and --symmetric-key' "$T/err" ||
        fail "stderr: $(cat "$T/err")" || return 1
    # no TPM at the TCTI: a clear error, exit 1
    dev --tpm --tcti "swtpm:host=$IP,port=1"
    expect_rc 1 || return 1
    grep -q 'TPM: cannot' "$T/err" || fail "stderr: $(cat "$T/err")"
}

add_case "setup: swtpm A and B on $IP, the webhook hub's receiver" case_setup
add_case "backend: EK/SRK with the §5.1 templates (EK = tpm2_createek's), default id, --tpm-identity" \
    case_keys
add_case "backend: tpm_blob_tool's blob imports; TPM HMAC (also a sequence) = openssl's with K" \
    case_import
add_case "backend: a blob for TPM B's EK, and garbage, are refused" case_import_refused
add_case "backend: no transient object or session left on the TPM" case_no_leftovers
add_case "setup: TPM A enrolled (default id), a disabled enrollment of TPM B (service API)" \
    case_enroll
add_case "--tpm: challenge, import, TPM-signed SAS, assigned, hub key imported; no secret logged" \
    case_register
add_case "hub key: prov-device's TPM-computed hub password = the one provd gave the hub" \
    case_hub_key
add_case "--symmetric-key --print-hub-password = the password provd gave the hub" \
    case_symkey_password
add_case "EK certificate (swtpm_setup): sent by --tpm; a TPM group trusting its CA assigns" \
    case_group
add_case "--tpm again (explicit id): assigned, same hub password, nothing left on the TPM" \
    case_register_again
add_case "TPM B (EK not enrolled): 401 401002, exit 1, no registration record" case_not_enrolled
add_case "TPM B with TPM A's registration id: 401 401002, exit 1, store unchanged" \
    case_other_tpm
add_case "disabled enrollment: 401 401003, exit 1, no registration record" case_disabled
add_case "usage: --tpm over MQTT, --tcti without --tpm, two credentials (exit 2); no TPM (exit 1)" \
    case_usage
run_cases
