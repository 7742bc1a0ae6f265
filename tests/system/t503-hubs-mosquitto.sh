#!/usr/bin/env bash
# Devices land in real brokers: two Mosquitto 2 brokers with the dynamic-security
# plugin are provd's linked hubs (--hub NAME=mosquitto://admin:PW@IP:PORT). Devices
# provision with the unmodified Azure IoT SDK (HTTPS and MQTT, lib/sdk_register.js)
# and with prov-device (symmetric key, group key, X.509), then, as each device,
# connect to the broker they were assigned with the credentials provisioning gave
# them: publishing under their own topic is delivered, under another device's topic
# it is not, and the retained initial configuration (initialTwin) arrives.
# Reprovisioning with updateHubAssignment moves a device from broker 1 to broker 2
# and removes it from broker 1; deleting the registration removes it from broker 2;
# a broker that is down ends the registration failed (500210) and the next one,
# after the broker is back, succeeds.
. "$(dirname "$0")/lib/lib.sh"
. "$(dirname "$0")/lib/pki.sh"
. "$(dirname "$0")/lib/mosquitto.sh"
lib_init 127.0.0.53 t503
MQTT_PORT=8883

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    echo "1..0 # SKIP the mosquitto broker is not installed (scripts/install-deps.sh installs it)"
    exit 0
fi

B1=broker1.example.test
B2=broker2.example.test
P1=18831
X1=18832
P2=18841
X2=18842
PROVDEV=$PROVD_BUILD_DIR/src/cli/prov-device
KEY=$(rand_key 32)
GROUP_KEY=$(rand_key 64)
BG_PIDS=()

# brokers and certificates first: their URLs go on provd's command line
pki_init "$T/pki" && pki_root root "t503 root" && pki_leaf cert-dev root cert-dev >/dev/null ||
    { echo "Bail out! test PKI"; exit 1; }
mosq_init "$T/mosq" &&
    mosq_server_cert broker "$IP" "$PKI_DIR/root.pem" "$PKI_DIR/root.key" &&
    mosq_start b1 "$IP" "$P1" x509 "$X1" "$PKI_DIR/root.pem" "$T/mosq/broker.pem" "$T/mosq/broker.key" &&
    mosq_start b2 "$IP" "$P2" x509 "$X2" "$PKI_DIR/root.pem" "$T/mosq/broker.pem" "$T/mosq/broker.key" ||
    { echo "Bail out! brokers: see $T/mosq"; exit 1; }
t503_exit()
{
    local rc=$? pid
    for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    mosq_stop_all
    _lib_exit
    return $rc
}
trap t503_exit EXIT
PROVD_EXTRA_ARGS=(--hub "$B1=$(mosq_url b1)" --hub "$B2=$(mosq_url b2)"
    --hub-apply-allocation-policy "$B1=false" --hub-apply-allocation-policy "$B2=false")

port_of() { case "$1" in "$B1") echo "$P1" ;; "$B2") echo "$P2" ;; esac; }
x509_port_of() { case "$1" in "$B1") echo "$X1" ;; "$B2") echo "$X2" ;; esac; }
name_of() { case "$1" in "$B1") echo b1 ;; "$B2") echo b2 ;; esac; }

put_ok()
{
    service_put "$1" "$2"
    case "$HTTP_STATUS" in
    200 | 201) return 0 ;;
    *) fail "PUT $1: HTTP $HTTP_STATUS: $(body | head -c 600)"; return 1 ;;
    esac
}

symkey_enrollment()
{
    # symkey_enrollment REGID HUB [EXTRA-MEMBERS]
    put_ok "/enrollments/$1" "{\"registrationId\":\"$1\",\"attestation\":{\"type\":\"symmetricKey\",\
\"symmetricKey\":{\"primaryKey\":\"$KEY\",\"secondaryKey\":\"$(rand_key 32)\"}},\"iotHubs\":[\"$2\"],\
\"initialTwin\":{\"tags\":{\"site\":\"t503\"},\"properties\":{\"desired\":{\"device\":\"$1\",\"rate\":30}}}${3:-}}"
}

# dev ARGS...: prov-device; stdout $T/out, stderr $T/err, DEV_RC
dev()
{
    DEV_RC=0
    timeout 60 "$PROVDEV" --host "$IP" --cacert "$CA" --scope "$SCOPE" --timeout 30 --json "$@" \
        >"$T/out" 2>"$T/err" || DEV_RC=$?
    [ "$DEV_RC" = 0 ] || fail "prov-device exit $DEV_RC: $(head -c 400 "$T/err")"
}

# sdk REGID KEY TRANSPORT: the Azure SDK registers; the result JSON in $T/out
sdk()
{
    DEV_RC=0
    NODE_EXTRA_CA_CERTS=$CA timeout 90 node "$PROVD_SRC/tests/system/lib/sdk_register.js" "$IP" \
        "$SCOPE" "$1" "$2" "$3" >"$T/out" 2>"$T/err" || DEV_RC=$?
    [ "$DEV_RC" = 0 ] || fail "SDK ($3) registration of $1 failed: $(head -c 400 "$T/err")"
}

# as_device HUB ID PW|cert:NAME CMD ARGS...: a mosquitto client command as the device at its broker
as_device()
{
    local hub=$1 id=$2 cred=$3
    shift 3
    case "$cred" in
    cert:*)
        timeout 10 "$@" -h "$IP" -p "$(x509_port_of "$hub")" --cafile "$PKI_DIR/root.pem" \
            --cert "$PKI_DIR/${cred#cert:}.pem" --key "$PKI_DIR/${cred#cert:}.key" -i "$id"
        ;;
    *) timeout 10 "$@" -h "$IP" -p "$(port_of "$hub")" -u "$id" -P "$cred" -i "$id" ;;
    esac
}

# admin_sub HUB TOPIC OUT: an admin subscriber at HUB for 3 s (background; pid in SUB_PID)
admin_sub()
{
    mosq_admin "$(name_of "$1")" mosquitto_sub -t "$2" -C 1 -W 3 >"$3" 2>&1 &
    SUB_PID=$!
    sleep 0.5
}

# check_device HUB ID CRED: the retained initial twin arrives; a publish under the
# device's own topic is delivered, one under another device's topic is not (an admin
# subscriber at the broker sees the first and not the second), and subscribing to
# another device's topic is refused. The broker wants client id = device id, so the
# device's connections are made one after the other.
check_device()
{
    local hub=$1 id=$2 cred=$3 twin got tag=$RANDOM$RANDOM
    twin=$(as_device "$hub" "$id" "$cred" mosquitto_sub -t "devices/$id/twin/desired" -C 1 -W 3 2>&1)
    "$PY" -c 'import json,sys; d=json.loads(sys.argv[1]); sys.exit(not (d.get("rate")==30 and d.get("device")==sys.argv[2]))' \
        "$twin" "$id" 2>/dev/null || { fail "$id at $hub: twin '$twin'"; return 1; }
    admin_sub "$hub" "devices/$id/telemetry" "$T/own.$id"
    as_device "$hub" "$id" "$cred" mosquitto_pub -t "devices/$id/telemetry" -m "own-$tag" -q 1 2>"$T/pub.err" ||
        { fail "$id: publish to its own topic: $(cat "$T/pub.err")"; return 1; }
    wait "$SUB_PID"
    got=$(cat "$T/own.$id")
    [ "$got" = "own-$tag" ] || { fail "$id: own publish not delivered: '$got'"; return 1; }
    admin_sub "$hub" "devices/someone-else/#" "$T/other.$id"
    as_device "$hub" "$id" "$cred" mosquitto_pub -t "devices/someone-else/telemetry" -m "foreign-$tag" -q 1 \
        >/dev/null 2>&1
    wait "$SUB_PID"
    ! grep -q "foreign-$tag" "$T/other.$id" || { fail "$id published under another device's topic"; return 1; }
    # nor does it receive what is published under another device's topic
    as_device "$hub" "$id" "$cred" mosquitto_sub -t "devices/someone-else/#" -C 1 -W 3 \
        >"$T/snoop.$id" 2>&1 &
    SUB_PID=$!
    sleep 0.5
    mosq_admin "$(name_of "$hub")" mosquitto_pub -t "devices/someone-else/cfg" -m "secret-$tag" -q 1
    wait "$SUB_PID"
    ! grep -q "secret-$tag" "$T/snoop.$id" ||
        { fail "$id received another device's message"; return 1; }
    return 0
}

# cannot_connect HUB ID PW: the broker refuses the login
cannot_connect()
{
    local out
    out=$(as_device "$1" "$2" "$3" mosquitto_sub -t "devices/$2/#" -C 1 -W 2 2>&1)
    case "$out" in
    *"not authorised"* | *"Not authorized"* | *"Connection Refused"*) return 0 ;;
    *) fail "$2 still logs in at $1: '$out'"; return 1 ;;
    esac
}

hub_pw() { hmac_b64 "$1" "provd-hub-password:$2"; }

case_prov_device_symkey()
{
    symkey_enrollment pd-sym "$B1" || return 1
    dev --registration-id pd-sym --symmetric-key "$KEY" --print-hub-password || return 1
    [ "$(out_get assignedHub)" = "$B1" ] || fail "assigned to '$(out_get assignedHub)': $(cat "$T/out")" ||
        return 1
    [ "$(out_get hubPassword)" = "$(hub_pw "$KEY" pd-sym)" ] ||
        fail "hub password '$(out_get hubPassword)' is not the documented derivation" || return 1
    check_device "$B1" pd-sym "$(out_get hubPassword)"
}

case_prov_device_x509()
{
    put_ok "/enrollments/cert-dev" "{\"registrationId\":\"cert-dev\",\"attestation\":{\"type\":\"x509\",\
\"x509\":{\"clientCertificates\":{\"primary\":{\"certificate\":$(pki_json_pem cert-dev)}}}},\
\"iotHubs\":[\"$B2\"],\"initialTwin\":{\"properties\":{\"desired\":{\"device\":\"cert-dev\",\"rate\":30}}}}" ||
        return 1
    dev --cert "$PKI_DIR/cert-dev.pem" --key "$PKI_DIR/cert-dev.key" || return 1
    [ "$(out_get assignedHub)" = "$B2" ] || fail "assigned to '$(out_get assignedHub)'" || return 1
    check_device "$B2" cert-dev cert:cert-dev
}

case_sdk_https_group()
{
    local dkey
    put_ok "/enrollmentGroups/grp-b2" "{\"enrollmentGroupId\":\"grp-b2\",\"attestation\":{\"type\":\"symmetricKey\",\
\"symmetricKey\":{\"primaryKey\":\"$GROUP_KEY\",\"secondaryKey\":\"$(rand_key 64)\"}},\"iotHubs\":[\"$B2\"],\
\"initialTwin\":{\"properties\":{\"desired\":{\"device\":\"sdk-grp-1\",\"rate\":30}}}}" || return 1
    dkey=$(derive_key "$GROUP_KEY" sdk-grp-1)
    sdk sdk-grp-1 "$dkey" http || return 1
    grep -q "\"assignedHub\":\"$B2\"" "$T/out" || fail "SDK result: $(cat "$T/out")" || return 1
    check_device "$B2" sdk-grp-1 "$(hub_pw "$dkey" sdk-grp-1)"
}

case_sdk_mqtt_individual()
{
    symkey_enrollment sdk-mqtt-1 "$B1" || return 1
    sdk sdk-mqtt-1 "$KEY" mqtt || return 1
    grep -q "\"assignedHub\":\"$B1\"" "$T/out" || fail "SDK result: $(cat "$T/out")" || return 1
    check_device "$B1" sdk-mqtt-1 "$(hub_pw "$KEY" sdk-mqtt-1)"
}

case_reprovision_moves()
{
    local pw
    pw=$(hub_pw "$KEY" pd-sym)
    # the enrollment now names broker 2; updateHubAssignment (default true) moves the device
    symkey_enrollment pd-sym "$B2" || return 1
    dev --registration-id pd-sym --symmetric-key "$KEY" || return 1
    [ "$(out_get assignedHub)" = "$B2" ] || fail "after the move: '$(out_get assignedHub)'" || return 1
    [ "$(out_get substatus)" = deviceDataMigrated ] ||
        fail "substatus '$(out_get substatus)': $(cat "$T/out")" || return 1
    check_device "$B2" pd-sym "$pw" || return 1
    cannot_connect "$B1" pd-sym "$pw" || return 1
    # broker 1's dynsec no longer knows the client
    [ "$(mosq_ctrl b1 '{"commands":[{"command":"getClient","username":"pd-sym"}]}' |
        "$PY" -c 'import json,sys; print(json.load(sys.stdin)["responses"][0].get("error",""))')" != "" ] ||
        fail "broker 1 still has client pd-sym"
}

case_never_reprovision()
{
    symkey_enrollment stay-1 "$B1" ',"reprovisionPolicy":{"updateHubAssignment":false,"migrateDeviceData":true}' ||
        return 1
    dev --registration-id stay-1 --symmetric-key "$KEY" || return 1
    symkey_enrollment stay-1 "$B2" ',"reprovisionPolicy":{"updateHubAssignment":false,"migrateDeviceData":true}' ||
        return 1
    dev --registration-id stay-1 --symmetric-key "$KEY" || return 1
    [ "$(out_get assignedHub)" = "$B1" ] || fail "moved to '$(out_get assignedHub)'" || return 1
    check_device "$B1" stay-1 "$(hub_pw "$KEY" stay-1)"
}

case_delete_removes()
{
    local pw i
    pw=$(hub_pw "$KEY" pd-sym)
    expect_status 204 DELETE "/registrations/pd-sym?api-version=$API_SVC" -H "Authorization: $(owner_sas)" ||
        return 1
    for ((i = 0; i < 30; i++)); do
        as_device "$B2" pd-sym "$pw" mosquitto_sub -t "devices/pd-sym/#" -C 1 -W 1 2>&1 |
            grep -qi "not authori" && return 0
        sleep 0.2
    done
    cannot_connect "$B2" pd-sym "$pw"
}

case_broker_down()
{
    local i pw
    symkey_enrollment down-1 "$B1" || return 1
    mosq_stop b1
    DEV_RC=0
    timeout 60 "$PROVDEV" --host "$IP" --cacert "$CA" --scope "$SCOPE" --timeout 30 --json \
        --registration-id down-1 --symmetric-key "$KEY" >"$T/out" 2>"$T/err" || DEV_RC=$?
    mosq_start b1 "$IP" "$P1" 2>"$T/restart.err" || { fail "broker 1 restart: $(cat "$T/restart.err")"; return 1; }
    [ "$DEV_RC" != 0 ] || fail "registration with broker 1 down succeeded: $(cat "$T/out")" || return 1
    expect_status 200 GET "/registrations/down-1?api-version=$API_SVC" -H "Authorization: $(owner_sas)" ||
        return 1
    [ "$(json_get status)" = failed ] && [ "$(json_get errorCode)" = 500210 ] ||
        fail "record while broker 1 was down: $(body | head -c 400)" || return 1
    # back up: the next registration succeeds, and the device can log in
    dev --registration-id down-1 --symmetric-key "$KEY" || return 1
    [ "$(out_get assignedHub)" = "$B1" ] || fail "after restart: $(cat "$T/out")" || return 1
    pw=$(hub_pw "$KEY" down-1)
    for ((i = 0; i < 20; i++)); do
        as_device "$B1" down-1 "$pw" mosquitto_sub -t "devices/down-1/twin/desired" -C 1 -W 2 \
            >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    fail "down-1 cannot use broker 1 after it came back"
}

add_case "prov-device (symmetric key): at broker 1 with the derived password; own topic, not another's, twin" case_prov_device_symkey
add_case "prov-device (X.509): at broker 2 by certificate identity; own topic, not another's, twin" case_prov_device_x509
add_case "Azure SDK over HTTPS (group key): at broker 2; own topic, not another's, twin" case_sdk_https_group
add_case "Azure SDK over MQTT (individual): at broker 1; own topic, not another's, twin" case_sdk_mqtt_individual
add_case "reprovisioning moves a device from broker 1 to broker 2 and removes it from broker 1" case_reprovision_moves
add_case "updateHubAssignment false keeps the device at broker 1" case_never_reprovision
add_case "deleting the registration removes the device from its broker" case_delete_removes
add_case "a broker that is down: failed 500210; once it is back the next registration works" case_broker_down
run_cases
