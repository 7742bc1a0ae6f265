#!/usr/bin/env bash
# The mosquitto hub connector (src/server/hub_mosquitto.c) against a real
# Mosquitto 2 broker with the dynamic-security plugin (lib/mosquitto.sh):
# a plain listener (admin and password devices), a TLS listener (the
# mosquittos:// admin connection) and a TLS listener with require_certificate
# and use_identity_as_username (X.509 devices, certificates from lib/pki.sh).
# tests/tools/hub_tool calls the connector as provd's assigner threads do; the
# devices are mosquitto_pub/mosquitto_sub with the password computed here with
# openssl (base64(HMAC-SHA256(key, "provd-hub-password:" || id))).
#
# Mosquitto 2.0.11 acknowledges a QoS 1 PUBLISH it refused, so a refusal is
# checked by non-delivery: an admin subscriber on devices/# records what
# arrives, and a marker published after the refused message shows when it
# would have arrived. No provd is involved.
set -u
SRC=${PROVD_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${PROVD_BUILD_DIR:-$SRC/build}
HT=$BUILD/tests/tools/hub_tool
IP=127.0.0.151
PORT=1883     # plain
TLSPORT=8883  # TLS, passwords
X509PORT=8884 # TLS, the certificate's CN is the user name
B=b1          # the broker's name in mosquitto.sh

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    echo "1..0 # SKIP mosquitto is not installed (scripts/install-deps.sh installs it)"
    exit 0
fi

# shellcheck source-path=SCRIPTDIR source=lib/lib.sh
. "$SRC/tests/system/lib/lib.sh"
# shellcheck source=lib/pki.sh
. "$SRC/tests/system/lib/pki.sh"
# shellcheck source=lib/mosquitto.sh
. "$SRC/tests/system/lib/mosquitto.sh"

T=$(mktemp -d /tmp/provd-st-t501-XXXXXX)
n=0
failed=0
REASONS=()
BG_PIDS=()

cleanup()
{
    local pid
    for pid in "${BG_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    mosq_stop_all
    [ -z "$_CLAIM" ] || rm -rf "$_CLAIM"
    if [ $failed -eq 0 ] && [ "${PROVD_TEST_KEEP:-0}" != 1 ]; then
        rm -rf "$T"
    else
        echo "# kept $T"
    fi
}
trap cleanup EXIT

fail()
{
    REASONS+=("$*")
    return 1
}

# case DESCRIPTION FUNCTION: runs it and prints its TAP line
case_()
{
    local line
    REASONS=()
    n=$((n + 1))
    if "$2"; then
        echo "ok $n - $1"
    else
        failed=1
        echo "not ok $n - $1"
        [ ${#REASONS[@]} -gt 0 ] || REASONS=("the case function failed")
        for line in "${REASONS[@]}"; do
            while IFS= read -r l; do printf '# %s\n' "$l"; done <<<"$line"
        done
        printf '# --- broker log (tail) ---\n'
        tail -n 15 "$T/mosq-$B.log" 2>/dev/null | sed 's/^/# /'
    fi
}

# ---- helpers ------------------------------------------------------------

# ht ARGS...: hub_tool URL ...; output in $T/ht.out and $T/ht.err, sets HT_RC and HT_MS
ht()
{
    local t0 t1
    t0=$(date +%s%N)
    "$HT" "$@" >"$T/ht.out" 2>"$T/ht.err"
    HT_RC=$?
    t1=$(date +%s%N)
    HT_MS=$(((t1 - t0) / 1000000))
}

ht_ok()
{
    ht "$@"
    [ "$HT_RC" -eq 0 ] || fail "hub_tool ${*:2}: exit $HT_RC: $(cat "$T/ht.err")"
}

# ht_fails PATTERN ARGS...: exit 1 and PATTERN (grep -E) in stderr
ht_fails()
{
    local pat=$1
    shift
    ht "$@"
    [ "$HT_RC" -eq 1 ] || { fail "hub_tool ${*:2}: exit $HT_RC, expected 1: $(cat "$T/ht.err")"; return 1; }
    grep -Eq -- "$pat" "$T/ht.err" || fail "hub_tool ${*:2}: stderr lacks /$pat/: $(cat "$T/ht.err")"
}

dev_pw()
{
    hmac_b64 "$1" "provd-hub-password:$2"
}

ctrl()
{
    mosq_ctrl "$B" "$1"
}

# ctrl_get COMMAND KEY NAME PYEXPR: runs get{Client,Role} and evaluates PYEXPR on
# r (the response object); prints the result
ctrl_eval()
{
    ctrl "{\"commands\":[{\"command\":\"$1\",\"$2\":\"$3\"}]}" >"$T/ctrl.out" 2>&1
    python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))["responses"][0]
print(eval(sys.argv[2]))
' "$T/ctrl.out" "$4" 2>&1
}

client_absent()
{
    [ "$(ctrl_eval getClient username "$1" 'r.get("error")')" = "Client not found" ] ||
        fail "client $1 exists at the broker: $(cat "$T/ctrl.out")"
}

role_absent()
{
    [ "$(ctrl_eval getRole rolename "provd-device-$1" 'r.get("error")')" = "Role not found" ] ||
        fail "role provd-device-$1 exists at the broker: $(cat "$T/ctrl.out")"
}

# Devices: plain listener with a password, or the X.509 listener with a certificate.
dev_plain()
{
    local id=$1 pw=$2
    shift 2
    timeout 10 "$@" -h "$IP" -p "$PORT" -u "$id" -P "$pw" -i "$id"
}

dev_cert()
{
    local name=$1
    shift
    timeout 10 "$@" -h "$IP" -p "$X509PORT" --cafile "$PKI_DIR/root.pem" \
        --cert "$PKI_DIR/$name.pem" --key "$PKI_DIR/$name.key" -i "$name"
}

# The admin subscriber on devices/# (started once; lines "topic payload").
SUB_LOG=
sub_start()
{
    local i
    SUB_LOG=$T/sub.log
    : >"$SUB_LOG"
    mosq_admin_argv "$B"
    mosquitto_sub "${MOSQ_ARGV[@]}" -t 'devices/#' -v >>"$SUB_LOG" 2>&1 &
    BG_PIDS+=($!)
    for ((i = 0; i < 50; i++)); do
        mosq_admin "$B" mosquitto_pub -t devices/probe/x -m "probe-$i" -q 1 >/dev/null 2>&1
        sleep 0.1
        grep -q "^devices/probe/x probe-" "$SUB_LOG" && return 0
    done
    return 1
}

# sub_wait LINE: the subscriber got exactly LINE within 5 s
sub_wait()
{
    local i
    for ((i = 0; i < 50; i++)); do
        grep -Fxq -- "$1" "$SUB_LOG" && return 0
        sleep 0.1
    done
    fail "the admin subscriber did not receive '$1'; it has: $(tail -n 5 "$SUB_LOG")"
}

sub_lacks()
{
    ! grep -Fq -- "$1" "$SUB_LOG" || fail "the admin subscriber received '$1'"
}

MARK=0
# mark_as CMD...: a unique marker published on devices/probe/m as the admin; waits for it
mark()
{
    MARK=$((MARK + 1))
    mosq_admin "$B" mosquitto_pub -t devices/probe/m -m "mark-$MARK" -q 1 >/dev/null 2>&1
    sub_wait "devices/probe/m mark-$MARK"
}

# twin_of ID PW|cert: the retained twin a device sees ("" when none within 2 s)
twin_plain()
{
    dev_plain "$1" "$2" mosquitto_sub -t "devices/$1/twin/desired" -C 1 -W 2 2>/dev/null
}

twin_admin()
{
    mosq_admin "$B" mosquitto_sub -t "devices/$1/twin/desired" -C 1 -W 2 2>/dev/null
}

same_json()
{
    python3 -c 'import json, sys; sys.exit(json.loads(sys.argv[1]) != json.loads(sys.argv[2]))' \
        "$1" "$2" 2>/dev/null || fail "twin '$1', expected '$2'"
}

# A TCP listener on a free port of $IP that accepts and then never answers
# (hang) or closes at once (close); sets FAKE_PORT. (Not in a command
# substitution: cleanup must know the pid.)
fake_broker()
{
    python3 - "$IP" "$1" >"$T/fake.$1" 2>&1 <<'EOF' &
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 0))
s.listen(16)
print(s.getsockname()[1], flush=True)
held = []
while True:
    c, _ = s.accept()
    if sys.argv[2] == "close":
        c.close()
    else:
        held.append(c)
EOF
    BG_PIDS+=($!)
    local i
    for ((i = 0; i < 50; i++)); do
        [ -s "$T/fake.$1" ] && { FAKE_PORT=$(head -n 1 "$T/fake.$1"); return 0; }
        sleep 0.1
    done
    return 1
}

# An openssl s_server on a free port of $IP whose certificate, issued by the
# test root, is for 127.0.0.99; sets FAKE_PORT.
fake_tls()
{
    local port i
    port=$(python3 -c 'import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$IP")
    [ -f "$T/wrongip.pem" ] || mosq_server_cert wrongip 127.0.0.99 "$PKI_DIR/root.pem" \
        "$PKI_DIR/root.key" || return 1
    openssl s_server -accept "$IP:$port" -cert "$T/wrongip.pem" -key "$T/wrongip.key" -quiet \
        </dev/null >"$T/s_server.log" 2>&1 &
    BG_PIDS+=($!)
    for ((i = 0; i < 50; i++)); do
        (exec 3<>"/dev/tcp/$IP/$port") 2>/dev/null && { FAKE_PORT=$port; return 0; }
        sleep 0.1
    done
    return 1
}

# ---- set-up ---------------------------------------------------------------

setup()
{
    claim_address "$IP" || { echo "no free test address" >"$T/setup.err"; return 1; }
    if ! pki_init "$T/pki" || ! pki_root root "t501 root" || ! pki_root other "t501 other root" ||
        ! pki_leaf dev-x509 root dev-x509 || ! pki_leaf stranger root stranger; then
        echo "pki failed" >"$T/setup.err"
        return 1
    fi
    mosq_init "$T" &&
        mosq_server_cert broker "$IP" "$PKI_DIR/root.pem" "$PKI_DIR/root.key" &&
        mosq_start "$B" "$IP" "$PORT" \
            tls "$TLSPORT" "$PKI_DIR/root.pem" "$T/broker.pem" "$T/broker.key" \
            x509 "$X509PORT" "$PKI_DIR/root.pem" "$T/broker.pem" "$T/broker.key" \
            2>"$T/setup.err" || return 1
    URL=$(mosq_url "$B")
    TLS_URL=$(mosq_tls_url "$B")
    sub_start || { echo "the admin subscriber did not start" >"$T/setup.err"; return 1; }
}

# ---- cases ----------------------------------------------------------------

KEY1=$(rand_key 32)
KEY2=$(rand_key 32)
TWIN1='{"tags":{"site":"a"},"properties":{"desired":{"temp":21,"mode":"eco"}}}'
DESIRED1='{"temp":21,"mode":"eco"}'

c_open_good()
{
    local u
    for u in "$URL" "$TLS_URL" "mosquitto://admin:pw@127.0.0.1:1" "mosquitto://a:b@[::1]" \
        "mosquitto://a%40x:p%3Aw@broker.example:1883/" "mosquittos://a:b@broker.example" \
        "mosquitto://a:b@broker.example:1883?timeout=30"; do
        ht "$u" open
        [ "$HT_RC" -eq 0 ] || fail "open '$u': exit $HT_RC: $(cat "$T/ht.err")"
    done
    [ ${#REASONS[@]} -eq 0 ]
}

c_open_bad()
{
    local u s=Pw-s3cret
    for u in "mosquitto://$IP:$PORT" "mosquitto://admin@$IP:$PORT" "mosquitto://admin:@$IP:$PORT" \
        "mosquitto://:$s@$IP:$PORT" "mosquitto://admin:$s@:$PORT" "mosquitto://admin:$s@$IP:0" \
        "mosquitto://admin:$s@$IP:65536" "mosquitto://admin:$s@$IP:x" "mosquitto://admin:$s@$IP:" \
        "mosquitto://admin:$s@ho_st:$PORT" "mosquitto://admin:$s@[::1:$PORT" \
        "mosquitto://admin:$s@[nothex]:$PORT" "mosquitto://admin:$s@$IP:$PORT/path" \
        "mosquitto://admin:$s@$IP:$PORT#frag" "mosquitto://admin:$s@$IP:$PORT?cafile=$PKI_DIR/root.pem" \
        "mosquittos://admin:$s@$IP:$TLSPORT?cafile=$T/missing.pem" \
        "mosquittos://admin:$s@$IP:$TLSPORT?cafile=$T/mosq-$B.conf" \
        "mosquittos://admin:$s@$IP:$TLSPORT?cafile=" "mosquitto://admin:$s@$IP:$PORT?bogus=1" \
        "mosquitto://admin:$s@$IP:$PORT?timeout=0" "mosquitto://admin:$s@$IP:$PORT?timeout=301" \
        "mosquitto://admin:$s%zz@$IP:$PORT" "mosquitto:/admin:$s@$IP:$PORT"; do
        ht "$u" open
        if [ "$HT_RC" -ne 1 ]; then
            fail "open '$u': exit $HT_RC, expected 1"
        elif [[ "$u" == mosquitto:/a* ]]; then
            continue # not a connector URL at all: hub_tool finds no connector
        elif ! grep -q "open failed (EINVAL): mosquitto URL: \|open failed (EINVAL): not a mosquitto" \
            "$T/ht.err"; then
            fail "open '$u': $(cat "$T/ht.err")"
        elif grep -q "$s" "$T/ht.err"; then
            fail "open '$u': the message shows the password: $(cat "$T/ht.err")"
        fi
    done
    [ ${#REASONS[@]} -eq 0 ]
}

c_sym_provision()
{
    local acls
    ht_ok "$URL" provision hub1 dev-sym symmetricKey "$KEY1" "$TWIN1" || return 1
    [ "$(ctrl_eval getClient username dev-sym \
        '(r["data"]["client"]["textname"], r["data"]["client"]["clientid"], [x["rolename"] for x in r["data"]["client"]["roles"]])')" = \
        "('provd device', 'dev-sym', ['provd-device-dev-sym'])" ] ||
        fail "getClient dev-sym: $(cat "$T/ctrl.out")"
    acls=$(ctrl_eval getRole rolename provd-device-dev-sym \
        'sorted((a["acltype"], a["topic"], a["allow"]) for a in r["data"]["role"]["acls"])')
    [ "$acls" = "[('publishClientReceive', 'devices/dev-sym/#', True), ('publishClientSend', 'devices/dev-sym/#', True), ('subscribePattern', 'devices/dev-sym/#', True), ('unsubscribePattern', 'devices/dev-sym/#', True)]" ] ||
        fail "role ACLs: $acls"
    [ ${#REASONS[@]} -eq 0 ]
}

c_sym_own_topic()
{
    dev_plain dev-sym "$(dev_pw "$KEY1" dev-sym)" mosquitto_pub -t devices/dev-sym/telemetry \
        -m sym-own-1 -q 1 2>"$T/pub.err" || { fail "publish refused: $(cat "$T/pub.err")"; return 1; }
    sub_wait "devices/dev-sym/telemetry sym-own-1"
}

c_sym_other_topic()
{
    dev_plain dev-sym "$(dev_pw "$KEY1" dev-sym)" mosquitto_pub -t devices/dev-x509/telemetry \
        -m sym-other-1 -q 1 2>/dev/null
    dev_plain dev-sym "$(dev_pw "$KEY1" dev-sym)" mosquitto_pub -t elsewhere -m sym-other-2 -q 1 \
        2>/dev/null
    mark && sub_lacks sym-other-1 && sub_lacks sym-other-2
}

c_sym_subscribe_other()
{
    local t out
    for t in 'devices/dev-x509/#' 'devices/#' '#' 'devices/+/twin/desired'; do
        out=$(dev_plain dev-sym "$(dev_pw "$KEY1" dev-sym)" mosquitto_sub -t "$t" -W 2 2>&1)
        grep -q "All subscription requests were denied" <<<"$out" ||
            fail "subscription to '$t' not denied: $out"
    done
    [ ${#REASONS[@]} -eq 0 ]
}

c_sym_twin()
{
    same_json "$(twin_plain dev-sym "$(dev_pw "$KEY1" dev-sym)")" "$DESIRED1" &&
        same_json "$(twin_admin dev-sym)" "$DESIRED1"
}

c_sym_refused_logins()
{
    local out
    out=$(dev_plain dev-sym "$(dev_pw "$KEY2" dev-sym)" mosquitto_pub -t devices/dev-sym/x -m no 2>&1) &&
        fail "a wrong password was accepted"
    grep -q "not authorised" <<<"$out" || fail "wrong password: $out"
    out=$(timeout 10 mosquitto_pub -h "$IP" -p "$PORT" -u dev-sym -P "$(dev_pw "$KEY1" dev-sym)" \
        -i other-id -t devices/dev-sym/x -m no 2>&1) && fail "another client id was accepted"
    out=$(timeout 10 mosquitto_pub -h "$IP" -p "$PORT" -u dev-sym -i dev-sym -t devices/dev-sym/x \
        -m no 2>&1) && fail "no password was accepted"
    [ ${#REASONS[@]} -eq 0 ]
}

c_x509_provision()
{
    ht_ok "$URL" provision hub1 dev-x509 x509 - '{"properties":{"desired":{"fw":"1.2"}}}' || return 1
    [ "$(ctrl_eval getClient username dev-x509 '[x["rolename"] for x in r["data"]["client"]["roles"]]')" = \
        "['provd-device-dev-x509']" ] || fail "getClient dev-x509: $(cat "$T/ctrl.out")"
}

c_x509_device()
{
    local out
    dev_cert dev-x509 mosquitto_pub -t devices/dev-x509/telemetry -m x509-own-1 -q 1 \
        2>"$T/pub.err" || fail "publish refused: $(cat "$T/pub.err")"
    dev_cert dev-x509 mosquitto_pub -t devices/dev-sym/telemetry -m x509-other-1 -q 1 2>/dev/null
    sub_wait "devices/dev-x509/telemetry x509-own-1" && mark && sub_lacks x509-other-1
    same_json "$(dev_cert dev-x509 mosquitto_sub -t devices/dev-x509/twin/desired -C 1 -W 2)" \
        '{"fw":"1.2"}'
    # a user name in CONNECT does not count on the certificate listener
    dev_cert dev-x509 mosquitto_pub -u dev-sym -t devices/dev-sym/telemetry -m x509-as-sym -q 1 \
        2>/dev/null
    # a certificate the broker trusts, but no dynsec client of that name: no rights
    dev_cert stranger mosquitto_pub -t devices/stranger/telemetry -m stranger-1 -q 1 2>/dev/null
    mark && sub_lacks x509-as-sym && sub_lacks stranger-1
    # no password login for an X.509 device on the password listener
    out=$(dev_plain dev-x509 anything mosquitto_pub -t devices/dev-x509/x -m no 2>&1) &&
        fail "dev-x509 logged in with a password: $out"
    [ ${#REASONS[@]} -eq 0 ]
}

c_reprovision()
{
    local old new pid i
    old=$(dev_pw "$KEY1" dev-sym)
    new=$(dev_pw "$KEY2" dev-sym)
    # the device's open session, with the old password
    timeout 10 mosquitto_sub -h "$IP" -p "$PORT" -u dev-sym -P "$old" -i dev-sym \
        -t 'devices/dev-sym/#' >"$T/old-session.out" 2>&1 &
    pid=$!
    BG_PIDS+=("$pid")
    sleep 0.5
    kill -0 "$pid" 2>/dev/null || fail "the old session did not start: $(cat "$T/old-session.out")"
    ht_ok "$URL" provision hub1 dev-sym symmetricKey "$KEY2" '{"properties":{"desired":{"temp":22}}}' ||
        return 1
    # the broker closed it; mosquitto_sub's new login with the old password fails
    for ((i = 0; i < 30; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && fail "the old session is still open"
    dev_plain dev-sym "$new" mosquitto_pub -t devices/dev-sym/telemetry -m sym-new-1 -q 1 \
        2>"$T/pub.err" || fail "the new password is refused: $(cat "$T/pub.err")"
    sub_wait "devices/dev-sym/telemetry sym-new-1"
    dev_plain dev-sym "$old" mosquitto_pub -t devices/dev-sym/telemetry -m sym-old-1 -q 1 \
        >/dev/null 2>&1 && fail "the old password still works"
    same_json "$(twin_plain dev-sym "$new")" '{"temp":22}'
    [ "$(ctrl_eval listRoles x x 'r["data"]["roles"].count("provd-device-dev-sym")')" = 1 ] ||
        fail "not exactly one role: $(cat "$T/ctrl.out")"
    [ ${#REASONS[@]} -eq 0 ]
}

c_reprovision_twins()
{
    local new
    new=$(dev_pw "$KEY2" dev-sym)
    # no initial twin at all (a re-registration that keeps its data): left alone
    ht_ok "$URL" provision hub1 dev-sym symmetricKey "$KEY2" null || return 1
    same_json "$(twin_plain dev-sym "$new")" '{"temp":22}'
    # a twin without desired properties: the retained message is cleared
    ht_ok "$URL" provision hub1 dev-sym symmetricKey "$KEY2" '{"tags":{"a":1}}' || return 1
    [ -z "$(twin_plain dev-sym "$new")" ] || fail "the retained twin was not cleared"
    ht_ok "$URL" provision hub1 dev-sym symmetricKey "$KEY2" "$TWIN1" || return 1
    same_json "$(twin_plain dev-sym "$new")" "$DESIRED1"
    [ ${#REASONS[@]} -eq 0 ]
}

c_foreign_client()
{
    ctrl '{"commands":[{"command":"createClient","username":"foreign","password":"x"}]}' >/dev/null
    ht_fails "EEXISTS.*already has a client 'foreign' that provd did not create" \
        "$URL" provision hub1 foreign symmetricKey "$KEY1"
    role_absent foreign
    ht_ok "$URL" deprovision hub1 foreign
    [ "$(ctrl_eval getClient username foreign 'r.get("error")')" = None ] ||
        fail "the foreign client was removed: $(cat "$T/ctrl.out")"
    [ ${#REASONS[@]} -eq 0 ]
}

c_bad_ids()
{
    local id
    for id in 'a+b' 'a#' '+' '#' "$MOSQ_ADMIN_USER"; do
        ht_fails "EINVAL" "$URL" provision hub1 "$id" symmetricKey "$KEY1"
        ht_fails "EINVAL" "$URL" deprovision hub1 "$id"
    done
    ht_fails "EINVAL.*unknown attestation" "$URL" provision hub1 dev-bad sasToken "$KEY1"
    ht_fails "EINVAL.*no device key" "$URL" provision hub1 dev-bad symmetricKey -
    client_absent 'a+b'
    client_absent dev-bad
    [ ${#REASONS[@]} -eq 0 ]
}

# An admin whose role lacks publishClientSend devices/#: the client and role are
# created, the twin is refused, and both are removed again.
c_undo_half_made()
{
    local pw
    pw=$(openssl rand -hex 8)
    # shellcheck disable=SC2016
    ctrl '{"commands":[{"command":"createRole","rolename":"limited","acls":[{"acltype":"publishClientSend","topic":"$CONTROL/dynamic-security/#","allow":true},{"acltype":"publishClientReceive","topic":"$CONTROL/dynamic-security/#","allow":true},{"acltype":"subscribePattern","topic":"$CONTROL/dynamic-security/#","allow":true}]},{"command":"createClient","username":"limited","password":"'"$pw"'","roles":[{"rolename":"limited"}]}]}' \
        >/dev/null
    ht_fails "EAUTH.*refused the publication to devices/dev-half/twin/desired" \
        "mosquitto://limited:$pw@$IP:$PORT" provision hub1 dev-half symmetricKey "$KEY1" "$TWIN1"
    client_absent dev-half
    role_absent dev-half
    # a user without the dynsec rights at all
    ctrl '{"commands":[{"command":"createClient","username":"nobody","password":"'"$pw"'"}]}' >/dev/null
    ht_fails "EAUTH.*refused the subscription" \
        "mosquitto://nobody:$pw@$IP:$PORT" provision hub1 dev-half symmetricKey "$KEY1"
    ht_fails "EAUTH.*refused the connection" \
        "mosquitto://$MOSQ_ADMIN_USER:wrong@$IP:$PORT" provision hub1 dev-half symmetricKey "$KEY1"
    [ ${#REASONS[@]} -eq 0 ]
}

c_tls_admin()
{
    local pw
    pw=$(dev_pw "$KEY1" dev-tls)
    ht_ok "$TLS_URL" provision hub1 dev-tls symmetricKey "$KEY1" "$TWIN1" || return 1
    timeout 10 mosquitto_pub -h "$IP" -p "$TLSPORT" --cafile "$PKI_DIR/root.pem" -u dev-tls \
        -P "$pw" -i dev-tls -t devices/dev-tls/telemetry -m tls-own-1 -q 1 2>"$T/pub.err" ||
        fail "the device login over TLS failed: $(cat "$T/pub.err")"
    sub_wait "devices/dev-tls/telemetry tls-own-1"
    ht_ok "$TLS_URL" deprovision hub1 dev-tls
    client_absent dev-tls
    [ ${#REASONS[@]} -eq 0 ]
}

c_tls_refusals()
{
    local pw
    pw=$(mosq_admin_pw "$B")
    ht_fails "ETLS.*certificate verification failed" \
        "mosquittos://admin:$pw@$IP:$TLSPORT?cafile=$PKI_DIR/other.pem" provision hub1 dev-t2 x509
    # a server whose certificate (from the right CA) names another address
    fake_tls || { fail "no openssl s_server"; return 1; }
    ht_fails "ETLS.*certificate verification failed: IP address mismatch" \
        "mosquittos://admin:$pw@$IP:$FAKE_PORT?cafile=$PKI_DIR/root.pem" provision hub1 dev-t2 x509
    # the alert, or when a reset overtook it, the hint
    ht_fails "ETLS.*certificate required|EIO.*requires client certificates" \
        "mosquittos://admin:$pw@$IP:$X509PORT?cafile=$PKI_DIR/root.pem" provision hub1 dev-t2 x509
    ht_fails "EIO.*mosquittos://" "mosquitto://admin:$pw@$IP:$TLSPORT" provision hub1 dev-t2 x509
    ht_fails "ETLS|EIO.*not a TLS listener" "mosquittos://admin:$pw@$IP:$PORT?cafile=$PKI_DIR/root.pem" \
        provision hub1 dev-t2 x509
    client_absent dev-t2
    [ ${#REASONS[@]} -eq 0 ]
}

c_deprovision()
{
    local out
    ht_ok "$URL" deprovision hub1 dev-sym || return 1
    out=$(dev_plain dev-sym "$(dev_pw "$KEY2" dev-sym)" mosquitto_pub -t devices/dev-sym/x -m no 2>&1) &&
        fail "the device can still log in"
    grep -q "not authorised" <<<"$out" || fail "login after deprovision: $out"
    [ -z "$(twin_admin dev-sym)" ] || fail "the retained twin is still there"
    client_absent dev-sym
    role_absent dev-sym
    ht_ok "$URL" deprovision hub1 dev-sym # again: nothing there is fine
    [ ${#REASONS[@]} -eq 0 ]
}

c_deprovision_x509()
{
    local out
    ht_ok "$URL" deprovision hub1 dev-x509 || return 1
    # the certificate still logs in (2.0.11 asks no plugin on such a listener), but has no rights
    dev_cert dev-x509 mosquitto_pub -t devices/dev-x509/telemetry -m x509-gone-1 -q 1 2>/dev/null
    mark && sub_lacks x509-gone-1
    out=$(dev_cert dev-x509 mosquitto_sub -t 'devices/dev-x509/#' -W 2 2>&1)
    grep -q "All subscription requests were denied" <<<"$out" ||
        fail "a subscription to its own topics was not denied: $out"
    [ -z "$(twin_admin dev-x509)" ] || fail "the retained twin is still there"
    client_absent dev-x509
    role_absent dev-x509
    [ ${#REASONS[@]} -eq 0 ]
}

c_concurrent()
{
    ht_ok "$URL" bench hub1 bench 40 4 || return 1
    diag "$(cat "$T/ht.out")"
    ht_ok "$TLS_URL" bench hub1 bench 40 4 || return 1
    diag "TLS: $(cat "$T/ht.out")"
    [ "$(ctrl_eval listClients x x 'sum(1 for x in r["data"]["clients"] if x.startswith("bench-"))')" = 0 ] ||
        fail "bench clients left: $(cat "$T/ctrl.out")"
    [ ${#REASONS[@]} -eq 0 ]
}

# One connector across a broker restart: its pooled connection dies; calls
# while the broker is down fail fast; nothing is left of them afterwards.
c_broker_restart()
{
    local out
    coproc HTR { exec "$HT" "$URL" repl 2>"$T/repl.err"; }
    BG_PIDS+=("$HTR_PID")
    repl_cmd()
    {
        echo "$1" >&"${HTR[1]}"
        IFS= read -r -t 20 out <&"${HTR[0]}" || out="(no answer)"
    }
    repl_cmd "provision hub1 dev-r1 symmetricKey $KEY1"
    [ "$out" = ok ] || fail "before the restart: $out"
    mosq_stop "$B"
    local t0=$SECONDS
    repl_cmd "provision hub1 dev-down symmetricKey $KEY1 $TWIN1"
    [[ "$out" == "fail EIO: broker $IP:$PORT"*"refused"* ]] ||
        fail "with the broker down: '$out' (expected EIO, connection refused)"
    [ $((SECONDS - t0)) -le 6 ] || fail "with the broker down it took $((SECONDS - t0)) s"
    mosq_start "$B" "$IP" "$PORT" 2>"$T/restart.err" ||
        { fail "the broker did not restart: $(cat "$T/restart.err")"; return 1; }
    sub_start || fail "the admin subscriber did not restart"
    client_absent dev-down
    role_absent dev-down
    repl_cmd "provision hub1 dev-r2 symmetricKey $KEY1"
    [ "$out" = ok ] || fail "after the restart: $out"
    repl_cmd "deprovision hub1 dev-r1"
    [ "$out" = ok ] || fail "deprovision after the restart: $out"
    repl_cmd "deprovision hub1 dev-r2"
    eval "exec ${HTR[1]}>&-"
    wait "$HTR_PID" 2>/dev/null
    client_absent dev-r1
    [ ${#REASONS[@]} -eq 0 ]
}

# A peer that accepts and never answers: each step ends at its timeout.
c_hanging_broker()
{
    local port
    fake_broker hang || { fail "no fake broker"; return 1; }
    port=$FAKE_PORT
    ht_fails "ETIMEOUT.*no CONNACK within 2 s" "mosquitto://a:b@$IP:$port?timeout=2" \
        provision hub1 dev-h symmetricKey "$KEY1"
    if [ "$HT_MS" -lt 1800 ] || [ "$HT_MS" -gt 4500 ]; then
        fail "plain: took $HT_MS ms for a 2 s timeout"
    fi
    ht_fails "ETIMEOUT.*no CONNACK within 2 s" \
        "mosquittos://a:b@$IP:$port?timeout=2&cafile=$PKI_DIR/root.pem" \
        provision hub1 dev-h symmetricKey "$KEY1"
    if [ "$HT_MS" -lt 1800 ] || [ "$HT_MS" -gt 4500 ]; then
        fail "TLS: took $HT_MS ms for a 2 s timeout"
    fi
    [ ${#REASONS[@]} -eq 0 ]
}

# A peer that closes at once: an error at once, even in the TLS handshake
# (where libmosquitto 2.0.11 would retry until the timeout).
c_closing_broker()
{
    local port
    fake_broker close || { fail "no fake broker"; return 1; }
    port=$FAKE_PORT
    ht_fails "EIO.*(closed the connection|reset by peer|Broken pipe)" "mosquitto://a:b@$IP:$port" \
        provision hub1 dev-c symmetricKey "$KEY1"
    [ "$HT_MS" -le 1500 ] || fail "plain: took $HT_MS ms"
    ht_fails "E(IO|TLS).*(closed|reset|TLS)" "mosquittos://a:b@$IP:$port?cafile=$PKI_DIR/root.pem" \
        provision hub1 dev-c symmetricKey "$KEY1"
    [ "$HT_MS" -le 1500 ] || fail "TLS: took $HT_MS ms with a 5 s timeout"
    [ ${#REASONS[@]} -eq 0 ]
}

CASES=(
    "open accepts well-formed URLs without connecting|c_open_good"
    "open refuses bad URLs (EINVAL) without showing the password|c_open_bad"
    "provision a symmetric-key device: client, role and ACLs at the broker|c_sym_provision"
    "the device publishes to devices/ID/#|c_sym_own_topic"
    "the device cannot publish elsewhere (not delivered)|c_sym_other_topic"
    "the device cannot subscribe to other devices' topics|c_sym_subscribe_other"
    "the device receives its retained initial twin|c_sym_twin"
    "wrong password, wrong client id, no password are refused|c_sym_refused_logins"
    "provision an X.509 device (no password)|c_x509_provision"
    "the X.509 device (CN = user name) has exactly its own topics and twin|c_x509_device"
    "provisioning again replaces the password (old one refused) and the twin|c_reprovision"
    "twin rules: none leaves it, no desired clears it|c_reprovision_twins"
    "a client provd did not create is never touched|c_foreign_client"
    "ids with MQTT wildcards or the admin's name are refused|c_bad_ids"
    "a failure after creating removes what was created|c_undo_half_made"
    "mosquittos:// admin connection (cafile) provisions and deprovisions|c_tls_admin"
    "TLS failures have clear errors (CA, name, listener kind)|c_tls_refusals"
    "deprovision: no login, no twin, no client or role; twice is fine|c_deprovision"
    "deprovision an X.509 device: its certificate has no rights left|c_deprovision_x509"
    "concurrent provision/deprovision (4 threads, plain and TLS)|c_concurrent"
    "broker down: fails fast, leaves nothing; the connector recovers|c_broker_restart"
    "a broker that never answers: each step times out|c_hanging_broker"
    "a peer that closes at once: fails at once (also in the TLS handshake)|c_closing_broker"
)

echo "1..${#CASES[@]}"
if [ ! -x "$HT" ]; then
    why="hub_tool not found at $HT (set PROVD_BUILD_DIR)"
elif ! setup; then
    why="set-up failed: $(cat "$T/setup.err" 2>/dev/null)"
else
    why=
fi
for c in "${CASES[@]}"; do
    if [ -n "$why" ]; then
        n=$((n + 1))
        failed=1
        echo "not ok $n - ${c%%|*}"
        echo "# $why"
        continue
    fi
    case_ "${c%%|*}" "${c##*|}"
done
[ $failed -eq 0 ]
