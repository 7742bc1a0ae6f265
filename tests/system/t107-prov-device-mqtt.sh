#!/usr/bin/env bash
# prov-device --transport mqtt (libprov on libmosquitto) against provd's MQTT
# listener: a symmetric-key individual enrollment, an enrollment group key and
# an X.509 individual enrollment are each assigned, and the registration
# records say so through the service API; a wrong key is refused with exit 1
# and the service's 401 on stderr; nothing secret shows in --verbose output.
# The port is left to prov-device (8883 is its MQTT default).
. "$(dirname "$0")/lib/lib.sh"
. "$(dirname "$0")/lib/pki.sh"
lib_init 127.0.0.107 t107
MQTT_PORT=8883

PROVDEV=$PROVD_BUILD_DIR/src/cli/prov-device
KEY=$(rand_key 32)
GROUP_KEY=$(rand_key 64)
PKI=$T/pki

# dev ARGS...: prov-device over MQTT against this provd; stdout in $T/out, stderr in
# $T/err, exit status in DEV_RC.
dev()
{
    DEV_RC=0
    timeout 60 "$PROVDEV" --transport mqtt --host "$IP" --cacert "$CA" --scope "$SCOPE" \
        --timeout 30 "$@" >"$T/out" 2>"$T/err" || DEV_RC=$?
}

expect_rc()
{
    [ "$DEV_RC" = "$1" ] ||
        fail "exit status $DEV_RC, expected $1; stdout: $(head -c 400 "$T/out");" \
            "stderr: $(head -c 600 "$T/err")"
}

# record_assigned REGID: the service API has an assigned registration record for REGID.
record_assigned()
{
    expect_status 200 GET "/registrations/$1?api-version=$API_SVC" \
        -H "Authorization: $(owner_sas)" || return 1
    [ "$(json_get status)" = assigned ] || fail "record of $1: $(body | head -c 400)"
}

put_ok()
{
    service_put "$1" "$2"
    case "$HTTP_STATUS" in
    200 | 201) return 0 ;;
    *) fail "PUT $1: HTTP $HTTP_STATUS: $(body | head -c 600)"; return 1 ;;
    esac
}

# symkey_json IDFIELD ID KEY: an enrollment (registrationId) or a group
# (enrollmentGroupId) with symmetric-key attestation, KEY as the primary key.
symkey_json()
{
    printf '{"%s":"%s","attestation":{"type":"symmetricKey","symmetricKey":' "$1" "$2"
    printf '{"primaryKey":"%s","secondaryKey":"%s"}}}' "$3" "$(rand_key 32)"
}

case_setup()
{
    local pem
    put_ok /enrollments/mq-sym "$(symkey_json registrationId mq-sym "$KEY")" || return 1
    put_ok /enrollmentGroups/mq-group "$(symkey_json enrollmentGroupId mq-group "$GROUP_KEY")" ||
        return 1
    pki_init "$PKI" && pki_root root "t107 Root" && pki_ca int root "t107 Intermediate" &&
        pki_leaf mq-x509 int mq-x509 || { fail "test PKI"; return 1; }
    pem=$(pki_json_pem mq-x509)
    put_ok /enrollments/mq-x509 "{\"registrationId\":\"mq-x509\",\"attestation\":{\"type\":\"x509\",
        \"x509\":{\"clientCertificates\":{\"primary\":{\"certificate\":$pem}}}}}"
}

case_symmetric_key()
{
    dev --registration-id mq-sym --symmetric-key "$KEY" --payload '{"modelId":"dtmi:t107;1"}' \
        --verbose
    expect_rc 0 || return 1
    grep -qx "assigned: hub=$HUB1 device=mq-sym\|assigned: hub=$HUB2 device=mq-sym" "$T/out" ||
        fail "output: $(cat "$T/out")" || return 1
    # it really went over MQTT: the library logged the CONNECT and the response topics
    grep -q 'MQTT CONNECT to .* port 8883' "$T/err" ||
        fail "no MQTT CONNECT in: $(head -c 2000 "$T/err")" || return 1
    grep -q 'registrations/res/202/?$rid=1&retry-after=1' "$T/err" &&
        grep -q 'registrations/res/200/?$rid=' "$T/err" ||
        fail "no 202 then 200 response topics in: $(head -c 3000 "$T/err")" || return 1
    # secrets stay out of the log
    if grep -q -e "$KEY" -e 'SharedAccessSignature' -e 'sig=' "$T/err"; then
        fail "--verbose output shows the key or the SAS token"
        return 1
    fi
    record_assigned mq-sym
}

case_json_output()
{
    dev --registration-id mq-sym --symmetric-key "$KEY" --json
    expect_rc 0 || return 1
    [ "$(out_get status)" = assigned ] && [ "$(out_get deviceId)" = mq-sym ] &&
        [ -n "$(out_get operationId)" ] || fail "--json: $(cat "$T/out")"
}

case_group_key()
{
    dev --registration-id mq-member-1 --group-key "$GROUP_KEY"
    expect_rc 0 || return 1
    grep -q '^assigned: hub=.* device=mq-member-1 group=mq-group$' "$T/out" ||
        fail "output: $(cat "$T/out")" || return 1
    record_assigned mq-member-1
}

case_x509()
{
    dev --cert "$PKI/mq-x509.chain.pem" --key "$PKI/mq-x509.key" --json
    expect_rc 0 || return 1
    [ "$(out_get status)" = assigned ] && [ "$(out_get deviceId)" = mq-x509 ] ||
        fail "--json: $(cat "$T/out")" || return 1
    [ -n "$(out_get x509)" ] || fail "no x509 details: $(cat "$T/out")" || return 1
    record_assigned mq-x509
}

case_wrong_key()
{
    dev --registration-id mq-sym --symmetric-key "$(rand_key 32)"
    expect_rc 1 || return 1
    grep -q '^prov-device: registration refused: 401 401002 ' "$T/err" ||
        fail "stderr: $(cat "$T/err")"
}

case_unknown_scope()
{
    DEV_RC=0
    timeout 60 "$PROVDEV" --transport mqtt --host "$IP:$MQTT_PORT" --cacert "$CA" \
        --scope 0ne00NOPE00 --registration-id mq-sym --symmetric-key "$KEY" \
        >"$T/out" 2>"$T/err" || DEV_RC=$?
    expect_rc 1 || return 1
    grep -q 'CONNACK 5' "$T/err" || fail "stderr: $(cat "$T/err")"
}

case_transport_usage()
{
    dev --transport mqtt --registration-id mq-sym --symmetric-key "$KEY"
    expect_rc 2 || return 1
    grep -q 'given twice' "$T/err" || fail "stderr: $(cat "$T/err")" || return 1
    DEV_RC=0
    "$PROVDEV" --transport amqp --host "$IP" --scope "$SCOPE" --registration-id mq-sym \
        --symmetric-key "$KEY" >"$T/out" 2>"$T/err" || DEV_RC=$?
    expect_rc 2 || return 1
    grep -q "invalid transport 'amqp'" "$T/err" || fail "stderr: $(cat "$T/err")"
}

add_case "setup: symmetric-key enrollment, group, X.509 enrollment (service API)" case_setup
add_case "--symmetric-key over MQTT, port 8883 by default: 202 then 200, no secret logged" \
    case_symmetric_key
add_case "--json over MQTT: status, deviceId, operationId" case_json_output
add_case "--group-key over MQTT: the derived key is assigned in the group" case_group_key
add_case "--cert/--key over MQTT (client certificate, no password): assigned, x509" case_x509
add_case "a wrong key over MQTT: exit 1, 401 401002 on stderr" case_wrong_key
add_case "an unknown ID scope: CONNACK 5, exit 1" case_unknown_scope
add_case "--transport given twice or unknown: exit 2" case_transport_usage
run_cases
