#!/usr/bin/env bash
# The two CLIs against a real provd: provctl (admin, over the service API) manages
# enrollments, groups and registration records; prov-device (on libprov) provisions
# devices with them. Exit codes and messages are part of the contract.
. "$(dirname "$0")/lib/lib.sh"
lib_init 127.0.0.111 t201

PROVCTL=$PROVD_BUILD_DIR/src/cli/provctl
PROVDEV=$PROVD_BUILD_DIR/src/cli/prov-device

# ctl ARGS...: provctl as the owner; output in $T/out, stderr in $T/err, status in CTL_RC.
ctl()
{
    CTL_RC=0
    PROVD_CA_FILE=$CA \
        PROVD_CONNECTION_STRING="HostName=$IP;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=$OWNER_KEY" \
        "$PROVCTL" "$@" >"$T/out" 2>"$T/err" || CTL_RC=$?
}

# dev ARGS...: prov-device against this provd; same conventions (DEV_RC).
dev()
{
    DEV_RC=0
    "$PROVDEV" --host "$IP" --cacert "$CA" --scope "$SCOPE" "$@" >"$T/out" 2>"$T/err" ||
        DEV_RC=$?
}

json_get()
{
    python3 -c 'import json,sys
d=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."):
    d=d[int(k)] if isinstance(d,list) else d.get(k) if isinstance(d,dict) else None
print("" if d is None else d)' "$T/out" "$1"
}

expect_rc()
{
    [ "$1" = "$2" ] || fail "exit status $1, expected $2; stdout: $(head -c 400 "$T/out"); stderr: $(head -c 400 "$T/err")"
}

case_create_generates_keys()
{
    ctl enrollment create cli-dev-1 --device-id cli-device-1
    expect_rc $CTL_RC 0 || return 1
    grep -q '^primary key: ' "$T/out" || fail "create did not print the generated keys" || return 1
    ctl --json enrollment show cli-dev-1
    expect_rc $CTL_RC 0 || return 1
    [ -z "$(json_get attestation.symmetricKey.primaryKey)" ] ||
        fail "show returned a key without --keys" || return 1
    ctl --json enrollment show cli-dev-1 --keys
    KEY1=$(json_get attestation.symmetricKey.primaryKey)
    KEY1B=$(json_get attestation.symmetricKey.secondaryKey)
    [ ${#KEY1} -eq 88 ] || fail "show --keys: primary key '$KEY1' is not 64 bytes of base64"
}

case_device_individual()
{
    dev --registration-id cli-dev-1 --symmetric-key "$KEY1"
    expect_rc $DEV_RC 0 || return 1
    grep -Eq '^assigned: hub=hub[12]\.example\.test device=cli-device-1' "$T/out" ||
        fail "unexpected output: $(cat "$T/out")" || return 1
    dev --registration-id cli-dev-1 --symmetric-key "$KEY1B" --json --payload '{"fw":"1.2"}'
    expect_rc $DEV_RC 0 || return 1
    [ "$(json_get status)" = assigned ] && [ "$(json_get deviceId)" = cli-device-1 ] &&
        [ "$(json_get payload.fw)" = 1.2 ] || fail "--json output: $(cat "$T/out")"
}

case_device_refused()
{
    dev --registration-id cli-dev-1 --symmetric-key "$(rand_key 32)"
    expect_rc $DEV_RC 1 || return 1
    grep -q 'registration refused: 401 401002' "$T/err" || fail "stderr: $(cat "$T/err")"
}

case_device_usage()
{
    dev --registration-id cli-dev-1
    expect_rc $DEV_RC 2 || return 1
    dev --registration-id cli-dev-1 --symmetric-key "$KEY1" --group-key "$KEY1"
    expect_rc $DEV_RC 2 || return 1
    dev --registration-id 'bad id!' --symmetric-key "$KEY1"
    expect_rc $DEV_RC 2
}

case_group()
{
    local gk
    gk=$(rand_key 64)
    ctl group create cli-group --primary-key "$gk"
    expect_rc $CTL_RC 0 || return 1
    dev --registration-id cli-member-7 --group-key "$gk"
    expect_rc $DEV_RC 0 || return 1
    grep -q 'device=cli-member-7' "$T/out" || fail "output: $(cat "$T/out")" || return 1
    ctl --json registration list cli-group
    expect_rc $CTL_RC 0 || return 1
    [ "$(json_get 0.registrationId)" = cli-member-7 ] || fail "registration list: $(cat "$T/out")"
}

case_registration_show_delete()
{
    ctl registration show cli-member-7
    expect_rc $CTL_RC 0 || return 1
    grep -q 'assigned' "$T/out" || fail "show: $(cat "$T/out")" || return 1
    ctl registration delete cli-member-7
    expect_rc $CTL_RC 0 || return 1
    ctl registration show cli-member-7
    expect_rc $CTL_RC 1 || return 1
    grep -q '404' "$T/err" || fail "stderr: $(cat "$T/err")"
}

case_disable_blocks()
{
    ctl enrollment update cli-dev-1 --disabled
    expect_rc $CTL_RC 0 || return 1
    dev --registration-id cli-dev-1 --symmetric-key "$KEY1"
    expect_rc $DEV_RC 1 || return 1
    grep -q '401003' "$T/err" || fail "stderr: $(cat "$T/err")" || return 1
    ctl enrollment update cli-dev-1 --enabled
    dev --registration-id cli-dev-1 --symmetric-key "$KEY1"
    expect_rc $DEV_RC 0
}

case_list_and_delete()
{
    ctl enrollment list
    expect_rc $CTL_RC 0 || return 1
    grep -q '^cli-dev-1 ' "$T/out" || fail "list: $(cat "$T/out")" || return 1
    ctl enrollment delete cli-dev-1
    expect_rc $CTL_RC 0 || return 1
    ctl enrollment show cli-dev-1
    expect_rc $CTL_RC 1 || return 1
    dev --registration-id cli-dev-1 --symmetric-key "$KEY1"
    expect_rc $DEV_RC 1
}

case_readonly_policy()
{
    local rc=0
    PROVD_CA_FILE=$CA \
        PROVD_CONNECTION_STRING="HostName=$IP;SharedAccessKeyName=readonly;SharedAccessKey=$READ_KEY" \
        "$PROVCTL" enrollment list >"$T/out" 2>"$T/err" || rc=$?
    expect_rc $rc 0 || return 1
    rc=0
    PROVD_CA_FILE=$CA \
        PROVD_CONNECTION_STRING="HostName=$IP;SharedAccessKeyName=readonly;SharedAccessKey=$READ_KEY" \
        "$PROVCTL" enrollment create ro-denied >"$T/out" 2>"$T/err" || rc=$?
    expect_rc $rc 1 || return 1
    grep -q '401' "$T/err" || fail "stderr: $(cat "$T/err")"
}

case_provctl_usage()
{
    local rc=0
    env -u PROVD_CONNECTION_STRING "$PROVCTL" enrollment list >"$T/out" 2>"$T/err" || rc=$?
    expect_rc $rc 2 || return 1
    grep -q 'connection string' "$T/err" || fail "stderr: $(cat "$T/err")" || return 1
    ctl enrollment frobnicate
    expect_rc $CTL_RC 2
}

# A reader of the database file (the sqlite3 CLI, a backup) must not make provd lose
# commits: provd once dropped its own SQLite file locks (open+close of the file at every
# connection open), so the CLI, seeing no other user, deleted the WAL provd was still
# writing to; the next records were gone after a restart.
case_durable_with_outside_reader()
{
    local k rc=0
    k=$(rand_key 32)
    ctl enrollment create cli-dur-a --primary-key "$k" && ctl enrollment create cli-dur-b --primary-key "$k"
    dev --registration-id cli-dur-a --symmetric-key "$k"
    expect_rc $DEV_RC 0 || return 1
    sqlite3 "$DB" "select count(*) from registrations" >/dev/null || fail "sqlite3 CLI failed" || return 1
    dev --registration-id cli-dur-b --symmetric-key "$k"
    expect_rc $DEV_RC 0 || return 1
    if ls -l "/proc/$PROVD_PID/fd" 2>/dev/null | grep -q 'provd.db-wal (deleted)'; then
        fail "provd is writing to a WAL file that was deleted under it"
        rc=1
    fi
    # a crash right after the commit: what the device was told must survive it
    kill -KILL "$PROVD_PID"
    wait "$PROVD_PID" 2>/dev/null
    PROVD_PID=
    provd_start || fail "provd did not restart: $(cat "$T/start.err")" || return 1
    ctl registration show cli-dur-b
    expect_rc $CTL_RC 0 || fail "the registration committed after the outside read was lost" ||
        return 1
    return $rc
}

add_case "provctl enrollment create generates keys; show hides them, show --keys has them" case_create_generates_keys
add_case "prov-device provisions with the primary and the secondary key (--json, --payload)" case_device_individual
add_case "prov-device with a wrong key: exit 1, 401 401002 on stderr" case_device_refused
add_case "prov-device usage errors exit 2" case_device_usage
add_case "provctl group create; prov-device --group-key; provctl registration list" case_group
add_case "provctl registration show and delete" case_registration_show_delete
add_case "provctl enrollment update --disabled blocks the device, --enabled lets it back" case_disable_blocks
add_case "provctl enrollment list and delete; the deleted device is refused" case_list_and_delete
add_case "a read-only policy lists but cannot create (401)" case_readonly_policy
add_case "provctl usage errors exit 2" case_provctl_usage
add_case "a sqlite3 reader of the store file does not make provd lose commits (kill -9, restart)" case_durable_with_outside_reader
run_cases
