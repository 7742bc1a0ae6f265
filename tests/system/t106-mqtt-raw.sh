#!/usr/bin/env bash
# The DPS device API over MQTT (provd --mqtt-listen), at the protocol level:
# a full register + poll with the mosquitto clients (mosquitto_rr, which
# subscribes to the exact response topic, so each answer's topic is checked
# byte for byte), then hand-made packets (lib/mqtt_raw.py) for every refusal.
# A protocol violation closes the connection without an answer; each such case
# also checks that the store did not change and that provd still registers a
# device afterwards.
. "$(dirname "$0")/lib/lib.sh"
. "$(dirname "$0")/lib/pki.sh"
lib_init 127.0.0.106 t106
MQTT_PORT=8883

RAW=("$PY" "$(dirname "$0")/lib/mqtt_raw.py")
KEY=$(rand_key 32)
KEY_OFF=$(rand_key 32)
RID=mq-dev
RES='$dps/registrations/res'
REG_TOPIC='$dps/registrations/PUT/iotdps-register/?$rid='
POLL_TOPIC='$dps/registrations/GET/iotdps-get-operationstatus/?$rid='
MAX_PACKET=$((96 * 1024 + 4096))
PKI=
IDLE_PID=

user_for()
{
    printf '%s/registrations/%s/api-version=2019-03-31&ClientVersion=provd-t106' "${2:-$SCOPE}" "$1"
}

# raw STEP...: one mqtt_raw.py connection; its stdout in $T/raw.out. Fails with its reason.
raw()
{
    "${RAW[@]}" "$IP" "$MQTT_PORT" "$CA" "$@" >"$T/raw.out" 2>"$T/raw.err" || {
        fail "mqtt_raw: $(cat "$T/raw.err")"
        return 1
    }
}

# connect_steps REGID [KEY]: the steps of a good CONNECT (SAS when KEY is given).
connect_steps()
{
    STEPS=(connect "$1" "$(user_for "$1")" "${2:+$(device_sas "$2" "$1")}" 60 expect_connack 0)
    [ -n "${2:-}" ] || STEPS[3]=-
}

# rr REGID RESPONSE_TOPIC TOPIC PAYLOAD [mosquitto args]: one request with mosquitto_rr,
# which subscribes to RESPONSE_TOPIC, publishes at QoS 1 and prints the answer. The
# answer's payload goes to $T/body (for json_get), its topic to RR_TOPIC.
rr()
{
    local regid=$1 rtopic=$2 topic=$3 payload=$4
    shift 4
    : >"$T/body"
    RR_TOPIC=
    if ! timeout 30 mosquitto_rr -V mqttv311 -h "$IP" -p "$MQTT_PORT" --cafile "$CA" \
        -i "$regid" -u "$(user_for "$regid")" -t "$topic" -e "$rtopic" -q 1 -m "$payload" \
        -v -W 8 "$@" >"$T/rr.out" 2>"$T/rr.err"; then
        fail "mosquitto_rr got no answer on '$rtopic': $(head -c 300 "$T/rr.err")"
        return 1
    fi
    RR_TOPIC=$(head -n 1 "$T/rr.out" | cut -d' ' -f1)
    head -n 1 "$T/rr.out" | cut -d' ' -f2- | tr -d '\n' >"$T/body"
    [ "$RR_TOPIC" = "$rtopic" ] || { fail "answer on '$RR_TOPIC', expected '$rtopic'"; return 1; }
}

# register_poll REGID KEY|-: register (202 on .../res/202/?$rid=..&retry-after=1), then
# poll (200 assigned). Extra mosquitto_rr arguments follow (a client certificate).
register_poll()
{
    local regid=$1 key=$2 rid op
    shift 2
    local auth=()
    [ "$key" = - ] || auth=(-P "$(device_sas "$key" "$regid")")
    rid=reg-$RANDOM-$$
    rr "$regid" "$RES/202/?\$rid=$rid&retry-after=1" "$REG_TOPIC$rid" \
        "{\"registrationId\":\"$regid\"}" "${auth[@]}" "$@" || return 1
    [ "$(json_get status)" = assigning ] || { fail "register: $(body | head -c 300)"; return 1; }
    op=$(json_get operationId)
    [ -n "$op" ] || { fail "no operationId: $(body | head -c 300)"; return 1; }
    rid=poll-$RANDOM-$$
    rr "$regid" "$RES/200/?\$rid=$rid" "$POLL_TOPIC$rid&operationId=$op" ' ' "${auth[@]}" "$@" ||
        return 1
    [ "$(json_get status)" = assigned ] &&
        [ "$(json_get registrationState.registrationId)" = "$regid" ] ||
        { fail "poll: $(body | head -c 600)"; return 1; }
    case "$(json_get registrationState.assignedHub)" in
    "$HUB1" | "$HUB2") ;;
    *) fail "assignedHub: $(body | head -c 600)"; return 1 ;;
    esac
}

# still_serves: after a refused connection, provd registers a device over MQTT and answers HTTPS.
still_serves()
{
    register_poll "$RID" "$KEY" || { fail "provd no longer registers over MQTT"; return 1; }
    expect_status 200 GET "/registrations/$RID?api-version=$API_SVC" \
        -H "Authorization: $(owner_sas)" || { fail "provd no longer answers HTTPS"; return 1; }
}

# refused STEP...: the raw steps must pass with the store unchanged, then provd still serves.
refused()
{
    local before after rc=0
    before=$(db_snapshot)
    raw "$@" || rc=1
    after=$(db_snapshot)
    if [ "$before" != "$after" ]; then
        fail "store changed:" "--- before" "$before" "--- after" "$after"
        rc=1
    fi
    still_serves || rc=1
    return $rc
}

enrollment_json()
{
    printf '{"registrationId":"%s","attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":"%s","secondaryKey":"%s"}},"provisioningStatus":"%s"}' \
        "$1" "$2" "$(rand_key 32)" "$3"
}

case_setup()
{
    local rc=0 spec id key st
    # a connection that never sends CONNECT, checked by case_connect_timeout
    "${RAW[@]}" "$IP" "$MQTT_PORT" "$CA" silent 8 closed 5 >"$T/idle.out" 2>"$T/idle.err" &
    IDLE_PID=$!
    for spec in "$RID $KEY enabled" "mq-off $KEY_OFF disabled"; do
        read -r id key st <<<"$spec"
        service_put "/enrollments/$id" "$(enrollment_json "$id" "$key" "$st")"
        [ "$HTTP_STATUS" = 200 ] || { fail "PUT /enrollments/$id: HTTP $HTTP_STATUS"; rc=1; }
    done
    return $rc
}

case_register_poll()
{
    register_poll "$RID" "$KEY" || return 1
    expect_status 200 GET "/registrations/$RID?api-version=$API_SVC" -H "Authorization: $(owner_sas)" ||
        return 1
    [ "$(json_get status)" = assigned ] || fail "record: $(body | head -c 300)"
}

case_wrong_key()
{
    local before
    before=$(db_snapshot)
    rr "$RID" "$RES/401/?\$rid=wk1" "${REG_TOPIC}wk1" "{\"registrationId\":\"$RID\"}" \
        -P "$(device_sas "$(rand_key 32)" "$RID")" || return 1
    check_error_body 401 json-only || return 1
    [ "$(json_get errorCode)" = 401002 ] || fail "errorCode $(json_get errorCode)"
    [ "$before" = "$(db_snapshot)" ] || fail "store changed"
}

case_disabled()
{
    rr mq-off "$RES/401/?\$rid=off" "${REG_TOPIC}off" '{"registrationId":"mq-off"}' \
        -P "$(device_sas "$KEY_OFF" mq-off)" || return 1
    check_error_body 401 json-only && [ "$(json_get errorCode)" = 401003 ] ||
        fail "disabled: $(body | head -c 300)"
}

case_subscribe_other()
{
    timeout 20 mosquitto_sub -V mqttv311 -h "$IP" -p "$MQTT_PORT" --cafile "$CA" -i "$RID" \
        -u "$(user_for "$RID")" -t 'devices/#' -q 1 -W 5 -C 1 -d >"$T/sub.out" 2>&1
    grep -q 'Subscribed (mid: 1): 128' "$T/sub.out" ||
        fail "SUBACK for devices/# is not 0x80: $(head -c 400 "$T/sub.out")"
    timeout 20 mosquitto_sub -V mqttv311 -h "$IP" -p "$MQTT_PORT" --cafile "$CA" -i "$RID" \
        -u "$(user_for "$RID")" -t "$RES/#" -q 1 -W 1 -C 1 -d >"$T/sub.out" 2>&1
    grep -q 'Subscribed (mid: 1): 1$' "$T/sub.out" ||
        fail "SUBACK for $RES/# is not QoS 1: $(head -c 400 "$T/sub.out")"
    [ ${#_FAIL_REASONS[@]} -eq 0 ]
}

case_qos0_ping_unsub()
{
    connect_steps "$RID" "$KEY"
    raw "${STEPS[@]}" sub "$RES/#" 2 11 expect_suback 11 1 \
        pub "${REG_TOPIC}q0" "{\"registrationId\":\"$RID\"}" 0 0 expect_publish \
        ping expect_pingresp \
        unsub "$RES/#" 12 expect_unsuback 12 \
        pub "${POLL_TOPIC}q1&operationId=none" ' ' 1 13 expect_puback 13 silent 1 \
        disconnect closed 3 || return 1
    grep -q "^$RES/202/?\\\$rid=q0&retry-after=1 {" "$T/raw.out" ||
        fail "QoS 0 register answer: $(head -c 300 "$T/raw.out")"
}

case_poll_unknown()
{
    connect_steps "$RID" "$KEY"
    raw "${STEPS[@]}" sub "$RES/#" 1 1 expect_suback 1 1 \
        pub "${POLL_TOPIC}p404&operationId=4.0000000000000000.nope" ' ' 1 2 expect_puback 2 \
        expect_publish pub "${POLL_TOPIC}p400" ' ' 1 3 expect_puback 3 expect_publish || return 1
    head -n 1 "$T/raw.out" | cut -d' ' -f2- >"$T/body"
    grep -q "^$RES/404/?\\\$rid=p404 " "$T/raw.out" && check_error_body 404 json-only &&
        [ "$(json_get errorCode)" = 404002 ] || fail "unknown operation: $(head -c 300 "$T/raw.out")"
    tail -n 1 "$T/raw.out" | cut -d' ' -f2- >"$T/body"
    tail -n 1 "$T/raw.out" | grep -q "^$RES/400/?\\\$rid=p400 " && check_error_body 400 json-only ||
        fail "poll without operationId: $(tail -c 300 "$T/raw.out")"
    [ ${#_FAIL_REASONS[@]} -eq 0 ]
}

# A register PUBLISH whose payload is refused: answer STATUS CODE, store unchanged.
bad_payload()
{
    local status=$1 code=$2 payload_file=$3 before
    before=$(db_snapshot)
    connect_steps "$RID" "$KEY"
    raw "${STEPS[@]}" sub "$RES/#" 1 1 expect_suback 1 1 \
        pubfile "${REG_TOPIC}bp" "$payload_file" 1 2 expect_puback 2 expect_publish \
        ping expect_pingresp || return 1
    grep -q "^$RES/$status/?\\\$rid=bp {" "$T/raw.out" ||
        { fail "answer: $(head -c 400 "$T/raw.out")"; return 1; }
    cut -d' ' -f2- "$T/raw.out" >"$T/body"
    check_error_body "$status" json-only || return 1
    [ "$(json_get errorCode)" = "$code" ] || fail "errorCode $(json_get errorCode), expected $code"
    [ "$before" = "$(db_snapshot)" ] || fail "store changed"
    [ ${#_FAIL_REASONS[@]} -eq 0 ]
}

case_tpm()
{
    printf '{"registrationId":"%s","tpm":{"endorsementKey":"AToAAQALAAMAsgAgg3GXZ0SEs","storageRootKey":"ARgAAQALAAMAcgAAAAYAgAB"}}' \
        "$RID" >"$T/tpm.json"
    bad_payload 400 400008 "$T/tpm.json" || return 1
    json_get message | grep -q 'TPM' && json_get message | grep -q 'MQTT' ||
        fail "message does not say TPM is not supported over MQTT: $(json_get message)"
}

case_payload_mismatch()
{
    printf '{"registrationId":"someone-else"}' >"$T/other.json"
    bad_payload 400 400003 "$T/other.json" || return 1
    printf '{"registrationId":' >"$T/broken.json"
    bad_payload 400 400004 "$T/broken.json"
}

case_payload_too_large()
{
    { printf '{"registrationId":"%s","payload":"' "$RID"; head -c $((96 * 1024)) /dev/zero |
        tr '\0' a; printf '"}'; } >"$T/big.json"
    bad_payload 413 413001 "$T/big.json"
}

case_connack_refusals()
{
    local rc=0 long
    long=$(head -c 129 /dev/zero | tr '\0' a)
    raw connect "$RID" "not-a-dps-user-name" - 60 expect_connack 4 closed 3 || rc=1
    raw connect "$RID" "$SCOPE/registrations/$RID" - 60 expect_connack 4 closed 3 || rc=1
    raw connect "$RID" - - 60 expect_connack 4 closed 3 || rc=1
    raw connect "$RID" "$(user_for "$RID" 0ne00NOPE99)" - 60 expect_connack 5 closed 3 || rc=1
    raw connect "bad!id" "$(user_for 'bad!id')" - 60 expect_connack 2 closed 3 || rc=1
    raw connect "$long" "$(user_for "$long")" - 60 expect_connack 2 closed 3 || rc=1
    raw connect other-id "$(user_for "$RID")" - 60 expect_connack 2 closed 3 || rc=1
    # MQTT 3.1.1's protocol name at level 3: unacceptable protocol version
    raw raw "100f00044d5154540302003c0003616263" expect_connack 1 closed 3 || rc=1
    return $rc
}

case_bad_remaining_length()
{
    connect_steps "$RID" "$KEY"
    refused "${STEPS[@]}" raw 30ffffffff01 closed 3 || return 1
    refused raw 10ffffffff01 closed 3
}

case_oversized()
{
    local h
    # only the fixed header of a PUBLISH one byte over the limit: refused before the body comes
    h=$(printf '32%02x%02x%02x' $(((MAX_PACKET - 3) % 128 + 128)) $((((MAX_PACKET - 3) / 128) % 128 + 128)) \
        $(((MAX_PACKET - 3) / 16384)))
    connect_steps "$RID" "$KEY"
    refused "${STEPS[@]}" raw "${h}00" closed 3
}

case_publish_before_connect()
{
    refused pub "${REG_TOPIC}x" "{\"registrationId\":\"$RID\"}" 1 1 closed 3 || return 1
    refused sub "$RES/#" 1 1 closed 3
}

case_wrong_topic()
{
    connect_steps "$RID" "$KEY"
    refused "${STEPS[@]}" sub "$RES/#" 1 1 expect_suback 1 1 \
        pub "devices/$RID/messages/events/" x 1 2 closed 3 || return 1
    # a request topic without $rid cannot be answered either
    refused "${STEPS[@]}" pub '$dps/registrations/PUT/iotdps-register/?rid=1' x 0 0 closed 3
}

case_second_connect()
{
    connect_steps "$RID" "$KEY"
    refused "${STEPS[@]}" "${STEPS[@]:0:5}" closed 3
}

case_qos2_and_bad_utf8()
{
    connect_steps "$RID" "$KEY"
    # QoS 2 PUBLISH, then a topic that is not UTF-8
    refused "${STEPS[@]}" raw "34080003612f62000178" closed 3 || return 1
    refused "${STEPS[@]}" raw "30050003c0ae61" closed 3
}

case_keepalive()
{
    # PINGREQs within the keepalive keep the connection; 1.5 s of silence closes it
    refused connect "$RID" "$(user_for "$RID")" - 1 expect_connack 0 \
        sleep 0.8 ping expect_pingresp sleep 0.8 ping expect_pingresp \
        silent 1.2 closed 1.5
}

case_connect_timeout()
{
    # started in case_setup: it stayed open 8 s without CONNECT, then was closed within 5 s more
    wait "$IDLE_PID" || { fail "connection without CONNECT: $(cat "$T/idle.err")"; return 1; }
}

case_x509()
{
    local pem
    PKI=$T/pki
    pki_init "$PKI" && pki_root root "t106 Root" && pki_ca int root "t106 Intermediate" &&
        pki_leaf mq-x509 int mq-x509 || { fail "test PKI"; return 1; }
    pem=$(pki_json_pem mq-x509)
    service_put /enrollments/mq-x509 \
        "{\"registrationId\":\"mq-x509\",\"attestation\":{\"type\":\"x509\",\"x509\":{\"clientCertificates\":{\"primary\":{\"certificate\":$pem}}}}}"
    [ "$HTTP_STATUS" = 200 ] || { fail "enrollment: HTTP $HTTP_STATUS $(body | head -c 300)"; return 1; }
    register_poll mq-x509 - --cert "$PKI/mq-x509.chain.pem" --key "$PKI/mq-x509.key" || return 1
    [ -n "$(json_get registrationState.x509)" ] && [ "$(json_get registrationState.x509)" != null ] ||
        fail "no registrationState.x509: $(body | head -c 400)"
    # without the certificate (and without a token) the same device is refused
    rr mq-x509 "$RES/401/?\$rid=nocert" "${REG_TOPIC}nocert" '{"registrationId":"mq-x509"}' ||
        return 1
    check_error_body 401 json-only
}

case_still_serves()
{
    still_serves
}

add_case "setup: enrollments through the service API" case_setup
add_case "mosquitto_rr: register answers on res/202/?\$rid=..&retry-after=1, poll on res/200: assigned" case_register_poll
add_case "wrong key: res/401 with a DPS error body (401002), store unchanged" case_wrong_key
add_case "disabled enrollment: res/401 (401003)" case_disabled
add_case "mosquitto_sub: a filter outside \$dps/registrations/res/ gets SUBACK 0x80; res/# gets QoS 1" case_subscribe_other
add_case "QoS 0 register answered without PUBACK; PINGREQ; UNSUBSCRIBE stops the answers" case_qos0_ping_unsub
add_case "poll: unknown operation res/404 (404002); no operationId res/400" case_poll_unknown
add_case "TPM over MQTT refused: res/400 400008 saying TPM is not supported over MQTT" case_tpm
add_case "payload registrationId mismatch (400003) and malformed JSON (400004)" case_payload_mismatch
add_case "payload over 96 KB: res/413 (413001), the connection stays usable" case_payload_too_large
add_case "CONNECT refusals: CONNACK 4 (user name), 5 (scope), 2 (registration id, client id), 1 (level)" case_connack_refusals
add_case "remaining length of five bytes: closed without an answer" case_bad_remaining_length
add_case "packet over the maximum size: closed on its fixed header" case_oversized
add_case "PUBLISH or SUBSCRIBE before CONNECT: closed" case_publish_before_connect
add_case "PUBLISH to a topic DPS does not serve, or without \$rid: closed" case_wrong_topic
add_case "second CONNECT: closed" case_second_connect
add_case "QoS 2 PUBLISH and a non-UTF-8 topic: closed" case_qos2_and_bad_utf8
add_case "keepalive 1 s: PINGREQs keep it, 1.5 s of silence closes it" case_keepalive
add_case "no CONNECT within 10 s: closed" case_connect_timeout
add_case "X.509 device over MQTT (client certificate, no password): assigned" case_x509
add_case "provd still serves MQTT and HTTPS after all of the above" case_still_serves
run_cases
