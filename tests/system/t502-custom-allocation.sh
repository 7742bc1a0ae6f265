#!/usr/bin/env bash
# Custom allocation (Azure's webhook contract) and the webhook hub connector,
# against lib/webhook_server.py started by this test on the same loopback
# address. Devices register with curl and SAS tokens made with openssl.
#
# - allocate-first / allocate-by-payload: assigned to the hub the webhook chose,
#   the webhook's payload comes back to the device, the request the webhook got
#   has Azure's shape (linkedHubs, deviceRuntimeContext, the enrollment without
#   its keys) and carries no secret;
# - a failing (400), a slow (past --custom-allocation-timeout), a bad-JSON and a
#   wrong-hub webhook: the registration ends failed with 400009 and a reason, and
#   a slow webhook does not hold up other devices;
# - updateHubAssignment false: linkedHubs holds only the current hub;
# - the webhook connector (--hub NAME=http://...): the new identity is POSTed
#   with the device's hub password; deleting the registration POSTs its removal;
#   a hub that refuses ends the registration failed with 500210, and the record
#   is recreated by the next registration once the hub accepts.
. "$(dirname "$0")/lib/lib.sh"
lib_init 127.0.0.52 t502

WH_LOG=$T/webhook.log
WH_PID=
HOOKHUB=hook.example.test
FAILHUB=refuse.example.test

webhook_start()
{
    local i
    : >"$T/webhook.out"
    python3 "$PROVD_SRC/tests/system/lib/webhook_server.py" --listen "$IP:0" --log "$WH_LOG" \
        --mode allocate-first --delay 30 >"$T/webhook.out" 2>"$T/webhook.err" &
    WH_PID=$!
    for ((i = 0; i < 100; i++)); do
        WH=$(sed -n 's/^LISTEN //p' "$T/webhook.out")
        [ -n "$WH" ] && return 0
        sleep 0.1
    done
    echo "webhook server did not start: $(cat "$T/webhook.err")" >&2
    return 1
}

cleanup_webhook()
{
    [ -z "$WH_PID" ] || kill "$WH_PID" 2>/dev/null
}

# the webhook server must be up before provd starts: its URL goes on provd's command line
# (a port chosen by the kernel on this file's address; provd takes port 443)
webhook_start || { echo "Bail out! webhook server"; exit 1; }
trap 'cleanup_webhook; _lib_exit' EXIT
PROVD_EXTRA_ARGS=(--hub "$HOOKHUB=http://$WH/hub-accept" --hub "$FAILHUB=http://$WH/hub-fail"
    --hub-apply-allocation-policy "$HOOKHUB=false" --hub-apply-allocation-policy "$FAILHUB=false"
    --custom-allocation-timeout 1500)

KEY=$(rand_key 32)

custom_enrollment()
{
    # custom_enrollment REGID MODE [EXTRA-JSON]
    local extra=${3:-}
    service_put "/enrollments/$1" "{\"registrationId\":\"$1\",\"attestation\":{\"type\":\"symmetricKey\",\
\"symmetricKey\":{\"primaryKey\":\"$KEY\",\"secondaryKey\":\"$KEY\"}},\"allocationPolicy\":\"custom\",\
\"customAllocationDefinition\":{\"webhookUrl\":\"http://$WH/$2?code=s3cretcode\",\"apiVersion\":\"2021-10-01\"}$extra}"
    case "$HTTP_STATUS" in
    200 | 201) return 0 ;;
    *) fail "PUT enrollment $1: HTTP $HTTP_STATUS: $(body | head -c 400)"; return 1 ;;
    esac
}

plain_enrollment()
{
    # plain_enrollment REGID JSON-MEMBERS
    service_put "/enrollments/$1" "{\"registrationId\":\"$1\",\"attestation\":{\"type\":\"symmetricKey\",\
\"symmetricKey\":{\"primaryKey\":\"$KEY\",\"secondaryKey\":\"$KEY\"}}$2}"
    case "$HTTP_STATUS" in
    200 | 201) return 0 ;;
    *) fail "PUT enrollment $1: HTTP $HTTP_STATUS: $(body | head -c 400)"; return 1 ;;
    esac
}

# register REGID [BODY-JSON]: PUT register, then poll until the operation is done
# (at most 15 s); the final operation is in $T/body. Sets REG_SECONDS.
register()
{
    local rid=$1 data=${2:-"{\"registrationId\":\"$1\"}"} auth opid i start
    auth=$(device_sas "$KEY" "$rid")
    start=$(date +%s%N)
    expect_status 202 PUT "/$SCOPE/registrations/$rid/register?api-version=2021-06-01" \
        -H "Authorization: $auth" -H 'Content-Type: application/json' --data-binary "$data" ||
        return 1
    opid=$(json_get operationId)
    for ((i = 0; i < 60; i++)); do
        req GET "/$SCOPE/registrations/$rid/operations/$opid?api-version=2021-06-01" \
            -H "Authorization: $auth"
        [ "$HTTP_STATUS" = 200 ] && break
        [ "$HTTP_STATUS" = 202 ] || { fail "poll: HTTP $HTTP_STATUS: $(body | head -c 300)"; return 1; }
        sleep 0.25
    done
    REG_SECONDS=$((($(date +%s%N) - start) / 1000000))
    [ "$HTTP_STATUS" = 200 ] || { fail "operation of $rid still not done after 15 s"; return 1; }
}

expect_state()
{
    # expect_state STATUS [HUB|ERRORCODE]
    local st
    st=$(json_get registrationState.status)
    [ "$st" = "$1" ] || { fail "status '$st', expected '$1': $(body | head -c 600)"; return 1; }
    if [ "$1" = assigned ] && [ -n "${2:-}" ] && [ "$(json_get registrationState.assignedHub)" != "$2" ]; then
        fail "hub '$(json_get registrationState.assignedHub)', expected '$2'"
        return 1
    fi
    if [ "$1" = failed ] && [ -n "${2:-}" ] && [ "$(json_get registrationState.errorCode)" != "$2" ]; then
        fail "errorCode '$(json_get registrationState.errorCode)', expected '$2': $(body | head -c 400)"
        return 1
    fi
}

# last_request PATH-PREFIX: the last request the webhook got on that path, as JSON, in $T/req.json
last_request()
{
    "$PY" -I -S -c '
import json, sys
last = None
for line in open(sys.argv[1], encoding="utf-8"):
    r = json.loads(line)
    if r["path"].startswith(sys.argv[2]):
        last = r
if last is None:
    sys.exit(1)
json.dump(last, open(sys.argv[3], "w"))
' "$WH_LOG" "$1" "$T/req.json" || { fail "the webhook got no request on $1"; return 1; }
}

req_get()
{
    "$PY" -I -S -c '
import json, sys
v = json.load(open(sys.argv[1], encoding="utf-8"))
for k in sys.argv[2].split("."):
    v = v[int(k)] if isinstance(v, list) else v.get(k) if isinstance(v, dict) else None
sys.stdout.write("" if v is None else v if isinstance(v, str) else json.dumps(v, sort_keys=True))
' "$T/req.json" "$1"
}

case_allocate_first()
{
    custom_enrollment cust-1 allocate-first ",\"iotHubs\":[\"$HUB2\",\"$HUB1\"]" || return 1
    register cust-1 '{"registrationId":"cust-1","payload":{"model":"m1"}}' || return 1
    expect_state assigned "$HUB2" || return 1
    [ "$(json_get registrationState.payload.fromWebhook)" = true ] ||
        fail "payload not from the webhook: $(body | head -c 400)" || return 1
    [ "$(json_get registrationState.payload.echo)" = '{"model": "m1"}' ] ||
        fail "webhook did not see the device payload: $(json_get registrationState.payload)" || return 1
    last_request /allocate-first || return 1
    [ "$(req_get body.linkedHubs)" = "[\"$HUB2\", \"$HUB1\"]" ] ||
        fail "linkedHubs: $(req_get body.linkedHubs)" || return 1
    [ "$(req_get body.deviceRuntimeContext.registrationId)" = cust-1 ] ||
        fail "deviceRuntimeContext: $(req_get body.deviceRuntimeContext)" || return 1
    [ "$(req_get body.individualEnrollment.registrationId)" = cust-1 ] ||
        fail "individualEnrollment: $(req_get body.individualEnrollment | head -c 300)" || return 1
    [ "$(req_get body.individualEnrollment.attestation)" = '{"type": "symmetricKey"}' ] ||
        fail "the enrollment's attestation went out: $(req_get body.individualEnrollment.attestation)" ||
        return 1
    [ "$(req_get headers.content-type)" = application/json ] ||
        fail "content-type $(req_get headers.content-type)" || return 1
    ! grep -q "$KEY" "$WH_LOG" || fail "the device key reached the webhook" || return 1
    # the record the service API shows
    expect_status 200 GET "/registrations/cust-1?api-version=$API_SVC" -H "Authorization: $(owner_sas)" ||
        return 1
    [ "$(json_get assignedHub)" = "$HUB2" ] || fail "record: $(body | head -c 300)"
}

case_allocate_by_payload()
{
    custom_enrollment cust-2 allocate-by-payload || return 1
    register cust-2 "{\"registrationId\":\"cust-2\",\"payload\":{\"hub\":\"$HUB1\"}}" || return 1
    expect_state assigned "$HUB1" || return 1
    last_request /allocate-by-payload || return 1
    # without iotHubs: every hub that applies allocation policies, not the two excluded ones
    [ "$(req_get body.linkedHubs)" = "[\"$HUB1\", \"$HUB2\"]" ] ||
        fail "linkedHubs: $(req_get body.linkedHubs)" || return 1
    # again, now choosing the other hub: the device moves, the webhook sees where it was
    register cust-2 "{\"registrationId\":\"cust-2\",\"payload\":{\"hub\":\"$HUB2\"}}" || return 1
    expect_state assigned "$HUB2" || return 1
    [ "$(json_get registrationState.substatus)" = deviceDataMigrated ] ||
        fail "substatus $(json_get registrationState.substatus)" || return 1
    last_request /allocate-by-payload || return 1
    [ "$(req_get body.deviceRuntimeContext.currentIotHubHostName)" = "$HUB1" ] ||
        fail "currentIotHubHostName: $(req_get body.deviceRuntimeContext)"
}

case_never_reprovision()
{
    custom_enrollment cust-3 allocate-by-payload \
        ',"reprovisionPolicy":{"updateHubAssignment":false,"migrateDeviceData":true}' || return 1
    register cust-3 "{\"registrationId\":\"cust-3\",\"payload\":{\"hub\":\"$HUB1\"}}" || return 1
    expect_state assigned "$HUB1" || return 1
    register cust-3 "{\"registrationId\":\"cust-3\",\"payload\":{\"hub\":\"$HUB1\"}}" || return 1
    last_request /allocate-by-payload || return 1
    [ "$(req_get body.linkedHubs)" = "[\"$HUB1\"]" ] ||
        fail "linkedHubs under updateHubAssignment false: $(req_get body.linkedHubs)" || return 1
    # asking for the other hub is refused by provd (not a linked hub for this device)
    register cust-3 "{\"registrationId\":\"cust-3\",\"payload\":{\"hub\":\"$HUB2\"}}" || return 1
    expect_state failed 400009
}

# each failing webhook: failed 400009, the reason in errorMessage, no URL or key in it
check_failure()
{
    local rid=$1 mode=$2 want=$3 msg
    custom_enrollment "$rid" "$mode" || return 1
    register "$rid" || return 1
    expect_state failed 400009 || return 1
    msg=$(json_get registrationState.errorMessage)
    case "$msg" in
    *"$want"*) ;;
    *) fail "$mode: errorMessage '$msg' does not say '$want'"; return 1 ;;
    esac
    case "$msg" in
    *s3cretcode* | *"$WH"*) fail "$mode: errorMessage shows the webhook URL: $msg"; return 1 ;;
    esac
    expect_status 200 GET "/registrations/$rid?api-version=$API_SVC" -H "Authorization: $(owner_sas)" ||
        return 1
    [ "$(json_get status)" = failed ] || fail "$mode: record $(body | head -c 300)"
}

case_failing_webhook() { check_failure cust-fail fail "answered 400"; }
case_bad_json() { check_failure cust-badjson badjson "not valid JSON"; }
case_unlinked_hub() { check_failure cust-unlinked allocate-unlinked "not"; }
case_no_hub() { check_failure cust-nohub nohub "iotHubHostName"; }

case_slow_webhook()
{
    local start elapsed
    custom_enrollment cust-slow slow || return 1
    plain_enrollment plain-1 "" || return 1
    # the slow registration runs in the background; a plain device is served meanwhile
    start=$(date +%s%N)
    (
        T2=$T/slow
        mkdir -p "$T2"
        T=$T2 register cust-slow && T=$T2 expect_state failed 400009 && echo ok >"$T2/result"
        [ -f "$T2/result" ] || printf '%s\n' "${_FAIL_REASONS[@]}" >"$T2/why"
    ) &
    local bg=$!
    sleep 0.3
    register plain-1 || return 1
    expect_state assigned || return 1
    [ "$REG_SECONDS" -lt 1400 ] ||
        fail "a plain registration took $REG_SECONDS ms while a webhook was slow" || return 1
    wait "$bg"
    elapsed=$((($(date +%s%N) - start) / 1000000))
    [ -f "$T/slow/result" ] || fail "slow webhook: $(cat "$T/slow/why" 2>/dev/null)" || return 1
    grep -q "timed out after 1500 ms" "$T/slow/body" ||
        fail "slow webhook: $(head -c 400 "$T/slow/body")" || return 1
    [ "$elapsed" -lt 8000 ] || fail "the slow webhook held the registration for $elapsed ms"
}

case_webhook_connector()
{
    local pw want i
    plain_enrollment conn-1 ",\"iotHubs\":[\"$HOOKHUB\"],\"initialTwin\":{\"properties\":{\"desired\":{\"rate\":5}}}" ||
        return 1
    register conn-1 || return 1
    expect_state assigned "$HOOKHUB" || return 1
    last_request /hub-accept || return 1
    [ "$(req_get body.operation)" = create ] || fail "operation $(req_get body.operation)" || return 1
    [ "$(req_get body.deviceId)" = conn-1 ] || fail "deviceId $(req_get body.deviceId)" || return 1
    [ "$(req_get body.hubHostName)" = "$HOOKHUB" ] || fail "hub $(req_get body.hubHostName)" || return 1
    [ "$(req_get body.initialTwin.properties.desired.rate)" = 5 ] ||
        fail "initialTwin $(req_get body.initialTwin)" || return 1
    pw=$(req_get body.authentication.password)
    want=$(hmac_b64 "$KEY" "provd-hub-password:conn-1")
    [ "$pw" = "$want" ] || fail "hub password '$pw', expected '$want'" || return 1
    # deleting the registration removes the identity (queued; give it a moment)
    expect_status 204 DELETE "/registrations/conn-1?api-version=$API_SVC" -H "Authorization: $(owner_sas)" ||
        return 1
    for ((i = 0; i < 50; i++)); do
        last_request /hub-accept 2>/dev/null && [ "$(req_get body.operation)" = delete ] && break
        sleep 0.1
    done
    _FAIL_REASONS=()
    [ "$(req_get body.operation)" = delete ] || fail "no delete reached the hub" || return 1
    [ "$(req_get body.deviceId)" = conn-1 ] || fail "delete of $(req_get body.deviceId)"
}

case_refusing_hub()
{
    local before
    plain_enrollment conn-2 ",\"iotHubs\":[\"$FAILHUB\"]" || return 1
    register conn-2 || return 1
    expect_state failed 500210 || return 1
    case "$(json_get registrationState.errorMessage)" in
    *"$FAILHUB"*500*) ;;
    *) fail "errorMessage: $(json_get registrationState.errorMessage)"; return 1 ;;
    esac
    # the next registration retries: to an accepting hub now
    plain_enrollment conn-2 ",\"iotHubs\":[\"$HOOKHUB\"]" || return 1
    before=$(grep -c '"/hub-accept' "$WH_LOG")
    register conn-2 || return 1
    expect_state assigned "$HOOKHUB" || return 1
    [ "$(grep -c '"/hub-accept' "$WH_LOG")" -gt "$before" ] || fail "no create reached the hub"
}

add_case "custom allocation: the webhook's hub and payload, Azure's request shape, no secrets" case_allocate_first
add_case "custom allocation by device payload; a move reports currentIotHubHostName" case_allocate_by_payload
add_case "updateHubAssignment false: linkedHubs is the current hub only" case_never_reprovision
add_case "a webhook answering 400: failed 400009 with the reason" case_failing_webhook
add_case "a webhook answering bad JSON: failed 400009" case_bad_json
add_case "a webhook choosing a hub that is not linked: failed 400009" case_unlinked_hub
add_case "a webhook answer without iotHubHostName: failed 400009" case_no_hub
add_case "a slow webhook times out (1.5 s) without holding up other devices" case_slow_webhook
add_case "webhook connector: identity with hub password and twin, removed on delete" case_webhook_connector
add_case "a refusing hub: failed 500210, the next registration retries" case_refusing_hub
run_cases
