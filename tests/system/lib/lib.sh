# shellcheck shell=bash disable=SC2034
# System-test helpers for tests/system/t*.sh: a temp dir, a test CA and server
# certificate (openssl CLI), a real provd on 127.0.0.N:443, curl helpers, SAS
# tokens built with openssl, store snapshots with the sqlite3 CLI, and TAP output.
#
# A script sources this file, calls lib_init with its own address, registers
# cases with add_case "description" function, then calls run_cases. run_cases
# prints the plan (cases + 1), starts provd, runs every case (a case function
# returns 0 on success; `fail "why"` records a reason), then stops provd with
# SIGTERM and reports its exit status as the last test.
#
# Environment: PROVD_SRC (repo root), PROVD_BUILD_DIR (default $PROVD_SRC/build),
# PROVD_TEST_KEEP=1 keeps the temp dir even when everything passed.
# A script that sets MQTT_PORT before run_cases gets provd with an MQTT listener
# on $IP:$MQTT_PORT (--mqtt-listen); PROVD_EXTRA_ARGS (an array) adds flags.

set -u

LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROVD_SRC=${PROVD_SRC:-$(cd "$LIB_DIR/../../.." && pwd)}
PROVD_BUILD_DIR=${PROVD_BUILD_DIR:-$PROVD_SRC/build}
PROVD_BIN=$PROVD_BUILD_DIR/src/server/provd
SCOPE=0ne00TEST01
HUB1=hub1.example.test
HUB2=hub2.example.test
API_DEV=2019-03-31
API_SVC=2021-10-01

_CASES_DESC=()
_CASES_FN=()
_FAIL_REASONS=()
_ANY_FAILED=0
_TESTNO=0
PROVD_PID=
_STDERR_MARK=0
MQTT_PORT=${MQTT_PORT:-}
# more provd flags (e.g. --hub NAME=URL); a script sets them before run_cases
PROVD_EXTRA_ARGS=()

# lib_init IP NAME: IP is this script's own 127.0.0.N (provd_start may pick
# another when it is taken; use $IP afterwards).
lib_init()
{
    IP=$1
    NAME=$2
    T=$(mktemp -d "/tmp/provd-st-$NAME-XXXXXX")
    DATA=$T/data
    mkdir -p "$DATA"
    CA=$T/ca.pem
    DB=$DATA/provd.db
    OWNER_KEY=$(rand_key 32)
    READ_KEY=$(rand_key 32)
    trap _lib_exit EXIT
}

rand_key()
{
    openssl rand -base64 "${1:-32}" | tr -d '\n'
}

# ---- TAP ----------------------------------------------------------------

diag()
{
    local line
    while IFS= read -r line; do
        printf '# %s\n' "$line"
    done <<<"$*"
}

# Records why the current case failed; returns 1 so `... || fail "x"` chains.
fail()
{
    _FAIL_REASONS+=("$*")
    return 1
}

add_case()
{
    _CASES_DESC+=("$1")
    _CASES_FN+=("$2")
}

_tap()
{
    # _tap 0|1 description [reasons...]
    local okv=$1 desc=$2
    shift 2
    _TESTNO=$((_TESTNO + 1))
    if [ "$okv" = 0 ]; then
        printf 'ok %d - %s\n' "$_TESTNO" "$desc"
    else
        _ANY_FAILED=1
        printf 'not ok %d - %s\n' "$_TESTNO" "$desc"
        local r
        for r in "$@"; do
            diag "$r"
        done
    fi
}

run_cases()
{
    local n=${#_CASES_FN[@]} i rc
    printf '1..%d\n' $((n + 1))
    if ! provd_start; then
        local why
        why=$(cat "$T/start.err" 2>/dev/null)
        for ((i = 0; i < n; i++)); do
            _tap 1 "${_CASES_DESC[$i]}" "not run: provd did not start"
        done
        _tap 1 "provd exits 0 on SIGTERM" "provd did not start: $why" "stderr:" \
            "$(tail -c 8192 "$T/provd.stderr" 2>/dev/null)"
        exit 1
    fi
    diag "provd on $IP:443, temp dir $T"
    for ((i = 0; i < n; i++)); do
        _FAIL_REASONS=()
        _stderr_mark
        rc=0
        "${_CASES_FN[$i]}" || rc=1
        if [ $rc -ne 0 ] && [ ${#_FAIL_REASONS[@]} -eq 0 ]; then
            _FAIL_REASONS=("case function returned non-zero")
        fi
        if [ $rc -ne 0 ]; then
            _tap 1 "${_CASES_DESC[$i]}" "${_FAIL_REASONS[@]}" \
                "--- provd stderr during this case ---" "$(_stderr_since_mark)"
        else
            _tap 0 "${_CASES_DESC[$i]}"
        fi
    done
    provd_stop_check
    [ $_ANY_FAILED -eq 0 ]
}

_lib_exit()
{
    local rc=$?
    if [ -n "$PROVD_PID" ] && kill -0 "$PROVD_PID" 2>/dev/null; then
        kill -KILL "$PROVD_PID" 2>/dev/null
        wait "$PROVD_PID" 2>/dev/null
    fi
    [ -z "$_CLAIM" ] || rm -rf "$_CLAIM"
    if [ $_ANY_FAILED -eq 0 ] && [ $rc -eq 0 ] && [ "${PROVD_TEST_KEEP:-0}" != 1 ]; then
        rm -rf "$T"
    else
        printf '# temp dir kept: %s\n' "$T"
    fi
}

# ---- provd --------------------------------------------------------------

make_certs()
{
    (
        cd "$T" || exit 1
        printf 'subjectAltName=IP:%s,DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
            "$IP" >server.ext
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
            -out ca.pem -days 2 -subj '/CN=provd system-test CA' \
            -addext basicConstraints=critical,CA:TRUE \
            -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null &&
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key \
            -out server.csr -subj /CN=localhost 2>/dev/null &&
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key \
            -set_serial "0x$(openssl rand -hex 8)" -days 2 -extfile server.ext \
            -out server.pem 2>/dev/null
    )
}

# Address claims (same scheme as lib/provd.js): provd binds with SO_REUSEPORT, so
# a second provd on the same address would silently share the port. A claim is
# the directory $LOCKS/<ip> made with mkdir and holding the owner's pid; a dead
# owner's claim is taken over; the address must also refuse connections on 443.
# When the preferred address is taken, 127.0.0.200-254 are tried. Sets IP.
LOCKS=${TMPDIR:-/tmp}/provd-systest-locks
_CLAIM=

_try_claim()
{
    local dir=$LOCKS/$1 pid _
    for _ in 1 2; do
        if mkdir "$dir" 2>/dev/null; then
            echo $$ >"$dir/pid"
            _CLAIM=$dir
            return 0
        fi
        pid=$(cat "$dir/pid" 2>/dev/null)
        if [ -z "$pid" ] || kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        rm -rf "$dir"
    done
    return 1
}

claim_address()
{
    local want=$1 ip n
    mkdir -p "$LOCKS"
    for ip in "$want" $(for ((n = 200; n <= 254; n++)); do echo "127.0.0.$n"; done); do
        _try_claim "$ip" || continue
        if (exec 3<>"/dev/tcp/$ip/443") 2>/dev/null; then
            rm -rf "$_CLAIM"
            _CLAIM=
            continue
        fi
        IP=$ip
        return 0
    done
    return 1
}

provd_start()
{
    local i
    if [ ! -x "$PROVD_BIN" ]; then
        echo "provd binary not found at $PROVD_BIN (set PROVD_BUILD_DIR)" >"$T/start.err"
        return 1
    fi
    if ! claim_address "$IP"; then
        echo "no free test address (tried $IP and 127.0.0.200-254)" >"$T/start.err"
        return 1
    fi
    if ! make_certs; then
        echo "certificate generation with openssl failed" >"$T/start.err"
        return 1
    fi
    "$PROVD_BIN" --listen "$IP:443" --tls-cert "$T/server.pem" --tls-key "$T/server.key" \
        --data-dir "$DATA" --id-scope "$SCOPE" \
        --policy "provisioningserviceowner=$OWNER_KEY" \
        --policy "readonly=$READ_KEY:EnrollmentRead,RegistrationStatusRead" \
        --hub "$HUB1" --hub "$HUB2" --retry-after 1 --workers 2 \
        ${MQTT_PORT:+--mqtt-listen "$IP:$MQTT_PORT"} "${PROVD_EXTRA_ARGS[@]}" \
        </dev/null >"$T/provd.stderr" 2>&1 &
    PROVD_PID=$!
    for ((i = 0; i < 100; i++)); do
        if ! kill -0 "$PROVD_PID" 2>/dev/null; then
            wait "$PROVD_PID"
            echo "provd exited with status $? before accepting TLS" >"$T/start.err"
            PROVD_PID=
            return 1
        fi
        # any HTTP answer proves the TLS listener works
        if curl -s -o /dev/null --max-time 2 --cacert "$CA" "https://$IP/" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "provd did not accept TLS on $IP:443 within 10 s" >"$T/start.err"
    return 1
}

provd_stop_check()
{
    local rc killer
    if [ -z "$PROVD_PID" ]; then
        _tap 1 "provd exits 0 on SIGTERM" "provd is not running"
        return
    fi
    kill -TERM "$PROVD_PID"
    (sleep 15 && kill -KILL "$PROVD_PID" 2>/dev/null) &
    killer=$!
    wait "$PROVD_PID"
    rc=$?
    kill "$killer" 2>/dev/null
    wait "$killer" 2>/dev/null
    PROVD_PID=
    if [ $rc -eq 0 ]; then
        _tap 0 "provd exits 0 on SIGTERM"
    else
        _tap 1 "provd exits 0 on SIGTERM" "exit status $rc" "--- provd stderr (tail) ---" \
            "$(tail -c 16384 "$T/provd.stderr")"
    fi
}

_stderr_mark()
{
    _STDERR_MARK=$(stat -c %s "$T/provd.stderr" 2>/dev/null || echo 0)
}

_stderr_since_mark()
{
    tail -c +$((_STDERR_MARK + 1)) "$T/provd.stderr" 2>/dev/null | tail -c 8192
}

# ---- crypto and tokens ---------------------------------------------------

# hmac_b64 KEY_B64 MESSAGE: base64(HMAC-SHA256(base64decode(KEY), MESSAGE)).
hmac_b64()
{
    local hexkey
    hexkey=$(printf '%s' "$1" | base64 -d | od -An -tx1 -v | tr -d ' \n')
    printf '%s' "$2" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$hexkey" -binary | base64 -w0
}

# urlenc_b64 STRING: percent-encodes the base64 specials + / =.
urlenc_b64()
{
    printf '%s' "$1" | sed -e 's/+/%2B/g' -e 's|/|%2F|g' -e 's/=/%3D/g'
}

# derive_key GROUP_KEY_B64 REGID: a group member's device key.
derive_key()
{
    hmac_b64 "$1" "$2"
}

# device_sas KEY_B64 REGID [SE] [SR]: the Authorization value for a device, with
# the sr form the Node SDK sends ({scope}/registrations/{id}, not encoded).
device_sas()
{
    local key=$1 regid=$2 se=${3:-$(($(date +%s) + 3600))} sr=${4:-}
    [ -n "$sr" ] || sr="$SCOPE/registrations/$regid"
    local sig
    sig=$(hmac_b64 "$key" "$sr"$'\n'"$se")
    printf 'SharedAccessSignature sr=%s&sig=%s&se=%s&skn=registration' "$sr" "$(urlenc_b64 "$sig")" "$se"
}

# service_sas POLICY KEY_B64 [SE] [SR]: the Authorization value for the service API.
service_sas()
{
    local policy=$1 key=$2 se=${3:-$(($(date +%s) + 3600))} sr=${4:-$IP}
    local sig
    sig=$(hmac_b64 "$key" "$sr"$'\n'"$se")
    printf 'SharedAccessSignature sr=%s&sig=%s&skn=%s&se=%s' "$sr" "$(urlenc_b64 "$sig")" "$policy" "$se"
}

owner_sas()
{
    service_sas provisioningserviceowner "$OWNER_KEY"
}

# ---- HTTP ---------------------------------------------------------------

# req METHOD PATH [curl args...]: sets HTTP_STATUS (000 when no answer) and CURL_RC;
# the body is in $T/body, the headers in $T/headers.
req()
{
    local method=$1 path=$2
    shift 2
    : >"$T/body"
    : >"$T/headers"
    HTTP_STATUS=$(curl -sS --path-as-is --max-time 20 --cacert "$CA" -H 'Expect:' \
        -o "$T/body" -D "$T/headers" -w '%{http_code}' -X "$method" "https://$IP$path" "$@" \
        2>"$T/curl.err")
    CURL_RC=$?
    [ -n "$HTTP_STATUS" ] || HTTP_STATUS=000
}

body()
{
    cat "$T/body"
}

# header NAME: value of a response header (last one), without CR.
header()
{
    grep -i "^$1:" "$T/headers" | tail -n 1 | sed -e 's/^[^:]*:[[:space:]]*//' -e 's/\r$//'
}

# service_put PATH JSON: PUT with the owner policy; sets HTTP_STATUS.
service_put()
{
    req PUT "$1?api-version=$API_SVC" -H "Authorization: $(owner_sas)" \
        -H 'Content-Type: application/json; charset=utf-8' --data-binary "$2"
}

# JSON checks run in python3 (the test runner needs it anyway; it starts faster than node).
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=python3; fi

# json_get PATH: the value at a dotted PATH (e.g. registrationState.status) of the
# response body; strings raw, anything else as JSON. Fails when the body is not JSON.
json_get()
{
    "$PY" -I -S -c '
import json, sys
v = json.load(open(sys.argv[1], encoding="utf-8"))
for k in sys.argv[2].split("."):
    v = v.get(k) if isinstance(v, dict) else None
sys.stdout.write(v if isinstance(v, str) else json.dumps(v))
' "$T/body" "$1"
}

# out_get PATH [FILE]: a field of the JSON a CLI printed into FILE (default $T/out:
# prov-device --json, prov-bench --json; the last line when there are several);
# strings raw, anything else as JSON, nothing when absent or not JSON.
out_get()
{
    "$PY" -I -S -c '
import json, sys
text = open(sys.argv[1], encoding="utf-8").read().strip()
try:
    v = json.loads(text)
except ValueError:
    v = json.loads(text.splitlines()[-1])
for k in sys.argv[2].split("."):
    v = v.get(k) if isinstance(v, dict) else None
sys.stdout.write("" if v is None else v if isinstance(v, str) else json.dumps(v))
' "${2:-$T/out}" "$1" 2>/dev/null
}

# check_error_body STATUS [json-only]: the body is a DPS error document for STATUS,
# sent as JSON (json-only: no Content-Type to check, e.g. an MQTT payload).
check_error_body()
{
    local why
    why=$("$PY" -I -S -c '
import json, re, sys
from datetime import datetime
st = int(sys.argv[2])
try:
    b = json.load(open(sys.argv[1], encoding="utf-8"))
except Exception as e:
    print("body is not JSON: %s" % e); sys.exit(1)
if not isinstance(b, dict):
    print("body is not an object"); sys.exit(1)
bad = []
c = b.get("errorCode")
if not isinstance(c, int) or isinstance(c, bool):
    bad.append("errorCode is not an integer")
elif len(str(c)) != 6:
    bad.append("errorCode %d is not six digits" % c)
elif c // 1000 != st:
    bad.append("errorCode %d does not start with %d" % (c, st))
if not isinstance(b.get("trackingId"), str) or not b["trackingId"]:
    bad.append("no trackingId")
if not isinstance(b.get("message"), str) or not b["message"]:
    bad.append("no message")
t = b.get("timestampUtc")
ok = isinstance(t, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", t) is not None
if ok:
    try:
        datetime.strptime(t[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        ok = False
if not ok:
    bad.append("timestampUtc is not an RFC 3339 UTC time: %r" % (t,))
if bad:
    print("; ".join(bad)); sys.exit(1)
' "$T/body" "$1" 2>&1) || {
        fail "bad error body ($why): $(head -c 600 "$T/body")"
        return 1
    }
    [ "${2:-}" != json-only ] || return 0
    local ct
    ct=$(header Content-Type)
    case "$ct" in
    application/json*) ;;
    *) fail "error Content-Type is '$ct', not application/json"; return 1 ;;
    esac
    return 0
}

# ---- store --------------------------------------------------------------

db_snapshot()
{
    sqlite3 "$DB" "select scope,kind,id_key,etag from enrollments order by 1,2,3;
select scope,id_key,etag from registrations order by 1,2;
select count(*) from operations;" 2>&1
}

# expect_error STATUS METHOD PATH [curl args...]: the request gets STATUS with a
# DPS error body, and the store is unchanged.
expect_error()
{
    local want=$1 before after rc=0
    shift
    before=$(db_snapshot)
    req "$@"
    after=$(db_snapshot)
    if [ "$HTTP_STATUS" != "$want" ]; then
        fail "$1 $2: HTTP $HTTP_STATUS, expected $want (curl rc $CURL_RC: $(head -c 300 "$T/curl.err")); body: $(head -c 600 "$T/body")"
        rc=1
    else
        check_error_body "$want" || rc=1
    fi
    if [ "$before" != "$after" ]; then
        fail "store changed:" "--- before" "$before" "--- after" "$after"
        rc=1
    fi
    return $rc
}

# expect_status STATUS METHOD PATH [curl args...]: just the status (positive controls).
expect_status()
{
    local want=$1
    shift
    req "$@"
    if [ "$HTTP_STATUS" != "$want" ]; then
        fail "$1 $2: HTTP $HTTP_STATUS, expected $want (curl rc $CURL_RC: $(head -c 300 "$T/curl.err")); body: $(head -c 600 "$T/body")"
        return 1
    fi
    return 0
}
