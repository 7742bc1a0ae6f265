#!/usr/bin/env bash
# A poll that arrives before its registration is durable is held until the
# registration is committed, then answered "assigned" (one poll instead of a
# 202 "assigning" and another poll); held at most 1 s, then answered
# "assigning" with Retry-After as before. The commit is delayed for real: a
# second SQLite connection (python3's sqlite3) holds the database's write lock
# while curl (HTTPS) or prov-bench (MQTT) registers and polls.
. "$(dirname "$0")/lib/lib.sh"
lib_init 127.0.0.108 t108
MQTT_PORT=8883
BENCH=$PROVD_BUILD_DIR/src/bench/prov-bench

# lock_db SECONDS: holds the store's write lock for SECONDS in the background
# (returns once it is held; LOCK_PID is the holder).
lock_db()
{
    local i
    rm -f "$T/locked"
    "$PY" -I -S -c '
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
c.execute("BEGIN IMMEDIATE")
open(sys.argv[2], "w").close()
time.sleep(float(sys.argv[3]))
c.execute("COMMIT")
' "$DB" "$T/locked" "$1" &
    LOCK_PID=$!
    for ((i = 0; i < 100; i++)); do
        [ -e "$T/locked" ] && return 0
        sleep 0.05
    done
    fail "could not lock the store"
    return 1
}

# register REGID: the register PUT (202); sets OP.
register()
{
    expect_status 202 PUT "/$SCOPE/registrations/$1/register?api-version=$API_DEV" \
        -H "Authorization: $AUTH" -H 'Content-Type: application/json' \
        --data-binary "{\"registrationId\":\"$1\"}" || return 1
    OP=$(json_get operationId)
    [ -n "$OP" ] || { fail "no operationId: $(body | head -c 300)"; return 1; }
}

# enroll_and_register REGID: an individual symmetric-key enrollment, then a
# first registration; sets KEY, AUTH and OP.
enroll_and_register()
{
    KEY=$(rand_key 32)
    service_put "/enrollments/$1" "{\"registrationId\":\"$1\",\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"$KEY\",\"secondaryKey\":\"$(rand_key 32)\"}}}"
    [ "$HTTP_STATUS" = 200 ] || { fail "enrollment: HTTP $HTTP_STATUS $(body | head -c 300)"; return 1; }
    AUTH=$(device_sas "$KEY" "$1")
    register "$1"
}

# poll REGID: one poll; sets HTTP_STATUS and ELAPSED (seconds, as curl measured).
poll()
{
    : >"$T/body"
    : >"$T/headers"
    ELAPSED=$(curl -sS --max-time 20 --cacert "$CA" -o "$T/body" -D "$T/headers" \
        -w '%{time_total}' -H "Authorization: $AUTH" \
        "https://$IP/$SCOPE/registrations/$1/operations/$OP?api-version=$API_DEV" 2>"$T/curl.err")
    HTTP_STATUS=$(sed -n '1s/^HTTP\/[0-9.]* \([0-9]*\).*/\1/p' "$T/headers")
}

# secs_between VALUE LO HI: LO <= VALUE < HI (decimal seconds)
secs_between()
{
    "$PY" -I -S -c 'import sys; v, lo, hi = map(float, sys.argv[1:4]); sys.exit(0 if lo <= v < hi else 1)' "$1" "$2" "$3"
}

case_held_until_committed()
{
    enroll_and_register held-1 || return 1
    # the registration above is durable; the next one waits behind the lock
    lock_db 0.8 || return 1
    register held-1 || return 1
    poll held-1
    wait "$LOCK_PID"
    [ "$HTTP_STATUS" = 200 ] && [ "$(json_get status)" = assigned ] ||
        { fail "poll: HTTP $HTTP_STATUS $(body | head -c 300)"; return 1; }
    [ "$(json_get operationId)" = "$OP" ] || fail "operationId $(json_get operationId), not $OP"
    secs_between "$ELAPSED" 0.3 5 || fail "answered after ${ELAPSED}s: not held until the commit"
}

case_held_at_most_one_second()
{
    enroll_and_register held-2 || return 1
    lock_db 3 || return 1
    register held-2 || return 1
    poll held-2
    if [ "$HTTP_STATUS" != 202 ] || [ "$(json_get status)" != assigning ]; then
        fail "poll while the commit waits: HTTP $HTTP_STATUS $(body | head -c 300)"
    fi
    [[ "$(header Retry-After)" =~ ^[1-9][0-9]*$ ]] || fail "Retry-After '$(header Retry-After)'"
    secs_between "$ELAPSED" 0.9 2.5 || fail "answered after ${ELAPSED}s, not after the 1 s hold"
    wait "$LOCK_PID"
    poll held-2
    [ "$HTTP_STATUS" = 200 ] && [ "$(json_get status)" = assigned ] ||
        fail "poll after the commit: HTTP $HTTP_STATUS $(body | head -c 300)"
}

case_held_poll_still_authenticated()
{
    # a wrong token is refused once the commit is written, not before, and not "assigned"
    enroll_and_register held-3 || return 1
    lock_db 0.6 || return 1
    register held-3 || return 1
    AUTH=$(device_sas "$(rand_key 32)" held-3)
    poll held-3
    wait "$LOCK_PID"
    [ "$HTTP_STATUS" = 401 ] || fail "poll with a wrong key: HTTP $HTTP_STATUS $(body | head -c 300)"
    check_error_body 401 && [ "$(json_get errorCode)" = 401002 ] ||
        fail "errorCode $(json_get errorCode)"
}

case_mqtt_held_until_committed()
{
    # prov-bench's device mq-0 has the key derived from G (its individual-enrollment mode)
    local g out rc=0 polls assigned p50
    g=$(rand_key 32)
    service_put /enrollments/mq-0 "{\"registrationId\":\"mq-0\",\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"$(derive_key "$g" mq-0)\",\"secondaryKey\":\"$(rand_key 32)\"}}}"
    [ "$HTTP_STATUS" = 200 ] || { fail "enrollment: HTTP $HTTP_STATUS $(body | head -c 300)"; return 1; }
    lock_db 0.8 || return 1
    out=$(timeout 30 "$BENCH" --host "$IP" --port "$MQTT_PORT" --scope "$SCOPE" --ca "$CA" \
        --transport mqtt --prefix mq- --count 1 --group-key "$g" --ignore-retry-after --json \
        --quiet 2>"$T/bench.err") || rc=$?
    wait "$LOCK_PID"
    [ $rc = 0 ] || { fail "prov-bench: exit $rc: $out $(head -c 300 "$T/bench.err")"; return 1; }
    polls=$(printf '%s' "$out" | "$PY" -I -S -c 'import json,sys; print(json.load(sys.stdin)["polls"])')
    assigned=$(printf '%s' "$out" | "$PY" -I -S -c 'import json,sys; print(json.load(sys.stdin)["assigned_total"])')
    p50=$(printf '%s' "$out" | "$PY" -I -S -c 'import json,sys; print(json.load(sys.stdin)["p50_ms"] / 1000)')
    [ "$assigned" = 1 ] && [ "$polls" = 1 ] || fail "assigned $assigned with $polls polls: $out"
    secs_between "$p50" 0.3 5 || fail "assigned after ${p50}s: not held until the commit"
}

add_case "a poll that arrives while its registration is being committed is held, then answered assigned" case_held_until_committed
add_case "a poll is held at most 1 s, then answered assigning with Retry-After" case_held_at_most_one_second
add_case "a held poll is authenticated when it is answered (wrong key: 401)" case_held_poll_still_authenticated
add_case "over MQTT too: the poll is held until the commit, one poll per device" case_mqtt_held_until_committed
run_cases
