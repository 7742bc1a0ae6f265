#!/usr/bin/env bash
# prov-bench against a real provd for a second or two per case (a smoke test,
# not a measurement): symmetric-key individual enrollments (made with
# `prov-bench enroll` through the bulk API) and an enrollment group key, an
# X.509 CA group (leaves issued by prov-bench under a generated intermediate)
# and X.509 individual enrollments (leaves pinned by `prov-bench enroll`),
# over HTTPS and MQTT: devices are assigned, no errors, no resumed TLS
# session, the registration records exist, and a device that polls at once
# polls once (its poll is held until its registration is committed). Then the failures must show:
# a wrong key gives 401 errors and exit status 1, and a server that is not
# there gives connect errors; and the idle mode holds its MQTT connections.
. "$(dirname "$0")/lib/lib.sh"
. "$(dirname "$0")/lib/pki.sh"
lib_init 127.0.0.161 t601
MQTT_PORT=8883

BENCH=$PROVD_BUILD_DIR/src/bench/prov-bench
IND_KEY=$(rand_key 32)   # the individual enrollments' keys are derived from it
GROUP_KEY=$(rand_key 64) # the enrollment group's key
PKI=$T/pki

# bench ARGS...: prov-bench with --json against this provd; the JSON line in
# $T/out, stderr in $T/err, exit status in BENCH_RC.
bench()
{
    BENCH_RC=0
    timeout 60 "$BENCH" --host "$IP" --scope "$SCOPE" --ca "$CA" --json --quiet \
        --concurrency 4 --timeout 10 "$@" >"$T/out" 2>"$T/err" || BENCH_RC=$?
}

# expect_clean: exit 0, devices assigned, no error, every device on its own
# full TLS handshake.
expect_clean()
{
    local assigned errors resumed handshakes
    assigned=$(out_get assigned_total)
    errors=$(out_get errors)
    resumed=$(out_get resumed)
    handshakes=$(out_get handshakes)
    if [ "$BENCH_RC" != 0 ] || [ -z "$assigned" ] || [ "$assigned" -lt 1 ] ||
        [ "$errors" != 0 ] || [ "$resumed" != 0 ] || [ "$handshakes" -lt "$assigned" ]; then
        fail "exit $BENCH_RC, assigned '$assigned', errors '$errors', resumed '$resumed'," \
            "handshakes '$handshakes'; output: $(head -c 800 "$T/out"); stderr: $(head -c 600 "$T/err")"
        return 1
    fi
}

# record_assigned REGID: the service API has an assigned registration record for REGID.
record_assigned()
{
    expect_status 200 GET "/registrations/$1?api-version=$API_SVC" \
        -H "Authorization: $(owner_sas)" || return 1
    [ "$(json_get status)" = assigned ] || fail "record of $1: $(body | head -c 400)"
}

case_setup()
{
    local rc=0 out
    out=$("$BENCH" enroll --host "$IP" --ca "$CA" --policy-key "$OWNER_KEY" --quiet \
        --prefix sym- --count 8 --group-key "$IND_KEY" 2>&1) || rc=$?
    [ $rc = 0 ] || { fail "enroll symmetric key: exit $rc: $out"; return 1; }
    pki_init "$PKI" && pki_root root "t601 Root" || { fail "test PKI"; return 1; }
    out=$("$BENCH" enroll --host "$IP" --ca "$CA" --policy-key "$OWNER_KEY" --quiet \
        --attestation x509 --prefix x509- --count 6 --x509-ca-cert "$PKI/root.pem" \
        --x509-ca-key "$PKI/root.key" --x509-creds "$T/x509.creds" 2>&1) || rc=$?
    [ $rc = 0 ] || { fail "enroll X.509: exit $rc: $out"; return 1; }
    service_put /enrollmentGroups/bench-group "{\"enrollmentGroupId\":\"bench-group\",\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"$GROUP_KEY\",\"secondaryKey\":\"$(rand_key 32)\"}}}"
    [ "$HTTP_STATUS" = 200 ] || { fail "symmetric-key group: HTTP $HTTP_STATUS $(body | head -c 400)"; return 1; }
    service_put /enrollmentGroups/bench-ca "{\"enrollmentGroupId\":\"bench-ca\",\"attestation\":{\"type\":\"x509\",\"x509\":{\"signingCertificates\":{\"primary\":{\"certificate\":$(pki_json_pem root)}}}}}"
    [ "$HTTP_STATUS" = 200 ] || { fail "X.509 group: HTTP $HTTP_STATUS $(body | head -c 400)"; return 1; }
}

# one_poll_each: every device polled once: a poll that arrives before its
# registration is committed is held until it is, then answered "assigned"
# (Retry-After ignored, so a device polls at once)
one_poll_each()
{
    local started polls
    started=$(out_get started)
    polls=$(out_get polls)
    [ -n "$polls" ] && [ "$polls" = "$started" ] ||
        fail "$polls polls for $started devices: $(head -c 600 "$T/out")"
}

case_symkey_https()
{
    bench --transport https --prefix sym- --count 8 --group-key "$IND_KEY" --duration 1 \
        --ignore-retry-after
    expect_clean && one_poll_each && record_assigned sym-7
}

case_symkey_mqtt_retry_after()
{
    # Retry-After (1 s from this provd) honoured: every device waits once
    bench --transport mqtt --prefix sym- --count 8 --group-key "$IND_KEY" --duration 2
    expect_clean || return 1
    [ "$(out_get retry_after_waits)" -ge 1 ] 2>/dev/null ||
        fail "no Retry-After wait: $(cat "$T/out")"
}

case_group_https()
{
    bench --transport https --prefix grp- --count 20 --group-key "$GROUP_KEY" --ignore-retry-after
    expect_clean && one_poll_each || return 1
    [ "$(out_get assigned)" = 20 ] || fail "count mode: $(out_get assigned) of 20 assigned"
    record_assigned grp-19
}

case_group_mqtt()
{
    bench --transport mqtt --prefix grpm- --count 10 --group-key "$GROUP_KEY" --ignore-retry-after
    expect_clean && one_poll_each && record_assigned grpm-0
}

case_x509_group_https()
{
    bench --transport https --attestation x509 --prefix ca-dev- --count 6 \
        --x509-ca-cert "$PKI/root.pem" --x509-ca-key "$PKI/root.key" --duration 1 \
        --ignore-retry-after
    expect_clean && record_assigned ca-dev-5
}

case_x509_group_mqtt()
{
    bench --transport mqtt --attestation x509 --prefix ca-mq- --count 6 \
        --x509-ca-cert "$PKI/root.pem" --x509-ca-key "$PKI/root.key" --duration 1 \
        --ignore-retry-after
    expect_clean && record_assigned ca-mq-0
}

case_x509_individual()
{
    bench --transport https --attestation x509 --prefix x509- --count 6 \
        --x509-creds "$T/x509.creds" --duration 1 --ignore-retry-after --threads 2
    expect_clean || return 1
    bench --transport mqtt --attestation x509 --prefix x509- --count 6 \
        --x509-creds "$T/x509.creds" --duration 1 --ignore-retry-after
    expect_clean && record_assigned x509-5
}

case_tpm()
{
    local rc=0 out
    # two devices: RSA-2048 EK and SRK each, made by prov-bench (software TPM)
    out=$("$BENCH" enroll --host "$IP" --ca "$CA" --policy-key "$OWNER_KEY" --quiet \
        --attestation tpm --prefix tpm- --count 2 --tpm-keys "$T/tpm.keys" 2>&1) || rc=$?
    [ $rc = 0 ] || { fail "enroll TPM: exit $rc: $out"; return 1; }
    bench --transport https --attestation tpm --prefix tpm- --count 2 --tpm-keys "$T/tpm.keys" \
        --ignore-retry-after
    expect_clean || return 1
    # challenge (401), signed register (202), poll (200)
    [ "$(out_get assigned)" = 2 ] && [ "$(out_get requests)" = 6 ] ||
        fail "TPM: $(cat "$T/out")"
    record_assigned tpm-1
}

case_wrong_key()
{
    bench --transport https --prefix sym- --count 4 --key "$(rand_key 32)" --ignore-retry-after
    [ "$BENCH_RC" = 1 ] || { fail "exit status $BENCH_RC, expected 1: $(cat "$T/out")"; return 1; }
    [ "$(out_get errors)" = 4 ] && [ "$(out_get assigned)" = 0 ] &&
        [ "$(out_get 'error_kinds.http 401 401002')" = 4 ] ||
        fail "wrong key over HTTPS: $(cat "$T/out")"
    bench --transport mqtt --prefix sym- --count 4 --key "$(rand_key 32)" --ignore-retry-after
    [ "$BENCH_RC" = 1 ] && [ "$(out_get 'error_kinds.mqtt 401 401002')" = 4 ] ||
        fail "wrong key over MQTT: exit $BENCH_RC: $(cat "$T/out")"
    # --allow-errors: still exit status 1 when nothing at all was assigned
    bench --transport https --prefix sym- --count 2 --key "$(rand_key 32)" --allow-errors
    [ "$BENCH_RC" = 1 ] || fail "nothing assigned must still exit 1, got $BENCH_RC"
}

case_no_server()
{
    BENCH_RC=0
    timeout 30 "$BENCH" --host "$IP" --port 1 --scope "$SCOPE" --ca "$CA" --json --quiet \
        --prefix sym- --count 3 --group-key "$IND_KEY" >"$T/out" 2>"$T/err" || BENCH_RC=$?
    [ "$BENCH_RC" = 1 ] && [ "$(out_get errors)" = 3 ] &&
        [ "$(out_get 'error_kinds.connect: Connection refused')" = 3 ] ||
        fail "exit $BENCH_RC: $(cat "$T/out") $(head -c 300 "$T/err")"
}

case_idle()
{
    bench --transport mqtt --prefix sym- --group-key "$IND_KEY" --idle-mqtt 40 \
        --concurrency 10 --server-pid "$PROVD_PID"
    [ "$BENCH_RC" = 0 ] && [ "$(out_get connected)" = 40 ] &&
        [ "$(out_get server_vmhwm_kb)" -gt 0 ] ||
        fail "exit $BENCH_RC: $(cat "$T/out") $(head -c 300 "$T/err")"
}

case_usage()
{
    local rc=0
    "$BENCH" --scope "$SCOPE" --ca "$CA" --transport mqtt --attestation tpm >/dev/null 2>&1 || rc=$?
    [ $rc = 2 ] || fail "TPM over MQTT: exit $rc, expected 2"
    rc=0
    "$BENCH" --ca "$CA" --count 1 >/dev/null 2>&1 || rc=$?
    [ $rc = 2 ] || fail "no --scope: exit $rc, expected 2"
}

add_case "setup: enroll with prov-bench (bulk API), a key group and an X.509 CA group" case_setup
add_case "HTTPS, symmetric-key individual enrollments: assigned, no errors" case_symkey_https
add_case "MQTT, symmetric key, Retry-After honoured: assigned, no errors" case_symkey_mqtt_retry_after
add_case "HTTPS, enrollment group key, count mode: every device assigned once" case_group_https
add_case "MQTT, enrollment group key: assigned, no errors" case_group_mqtt
add_case "HTTPS, X.509 CA group (leaf + generated intermediate): assigned" case_x509_group_https
add_case "MQTT, X.509 CA group: assigned" case_x509_group_mqtt
add_case "X.509 individual enrollments (leaves from prov-bench enroll), both transports" case_x509_individual
add_case "TPM (software EK/SRK), challenge and signed register: assigned" case_tpm
add_case "wrong key: 401 errors counted by kind, exit status 1" case_wrong_key
add_case "no server: connect errors counted, exit status 1" case_no_server
add_case "idle MQTT mode: connections held, server memory read" case_idle
add_case "usage errors exit 2" case_usage
run_cases
