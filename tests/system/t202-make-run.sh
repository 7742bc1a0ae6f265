#!/usr/bin/env bash
# `make run` as a new user meets it: scripts/run.sh (what `make run` starts after
# installing and building) creates a development setup, starts provd and prints one
# command; that command, pasted as printed, must provision the first device. Run
# twice: the second start reuses the setup and the command still works.
set -u
SRC=${PROVD_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${PROVD_BUILD_DIR:-$SRC/build}
T=$(mktemp -d /tmp/provd-st-t202-XXXXXX)
RUN_PID=
n=0
failed=0

cleanup()
{
    [ -n "$RUN_PID" ] && kill -TERM "$RUN_PID" 2>/dev/null
    if [ $failed -eq 0 ]; then rm -rf "$T"; else echo "# kept $T"; fi
}
trap cleanup EXIT

tap()
{
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then
        echo "ok $n - $2"
    else
        failed=1
        echo "not ok $n - $2"
        shift 2
        printf '# %s\n' "$@"
    fi
}

free_port()
{
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start: runs run.sh in the background until it prints its last line.
start()
{
    PORT=$(free_port)
    MQTT_PORT=$(free_port)
    (cd "$SRC" && RUN_DIR=$T/run PORT=$PORT MQTT_PORT=$MQTT_PORT BUILD_DIR=$BUILD \
        exec bash scripts/run.sh) \
        >"$T/out" 2>"$T/err" &
    RUN_PID=$!
    for _ in $(seq 1 150); do
        grep -q 'Stop provd with Ctrl-C' "$T/out" 2>/dev/null && return 0
        kill -0 "$RUN_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

stop()
{
    local rc=0
    # Ctrl-C in a terminal; a background job ignores SIGINT, so TERM stands in
    kill -TERM "$RUN_PID" 2>/dev/null
    wait "$RUN_PID" || rc=$?
    RUN_PID=
    return $rc
}

# the printed commands: the lines that run prov-device (HTTPS first, then MQTT)
printed_command()
{
    grep -E '^[^ ]*/prov-device ' "$T/out" | sed -n "${1:-1}p"
}

echo "1..9"
for round in first second; do
    if start; then
        tap 0 "$round start: run.sh prints the instance and a command"
    else
        tap 1 "$round start: run.sh prints the instance and a command" "stdout:" "$(cat "$T/out")" \
            "stderr:" "$(tail -c 2000 "$T/err")"
        exit 1
    fi
    cmd=$(printed_command)
    out=$(cd "$SRC" && bash -c "$cmd" 2>&1)
    rc=$?
    if [ $rc -eq 0 ] && printf '%s' "$out" | grep -q '^assigned: hub=hub.localdomain device=first-device'; then
        tap 0 "$round start: the printed command provisions the first device"
    else
        tap 1 "$round start: the printed command provisions the first device" "command: $cmd" \
            "exit $rc: $out"
    fi
    cmd=$(printed_command 2)
    out=$(cd "$SRC" && bash -c "$cmd" 2>&1)
    rc=$?
    if [ $rc -eq 0 ] && printf '%s' "$cmd" | grep -q -- '--transport mqtt' &&
        printf '%s' "$out" | grep -q '^assigned: hub=hub.localdomain device=first-device'; then
        tap 0 "$round start: the printed MQTT command provisions the first device"
    else
        tap 1 "$round start: the printed MQTT command provisions the first device" \
            "command: $cmd" "exit $rc: $out"
    fi
    if [ $round = first ]; then
        grep -q 'connection string     HostName=127.0.0.1:' "$T/out" &&
            grep -Eq 'ID scope              0ne[0-9A-F]{8}' "$T/out"
        tap $? "run.sh prints the connection string and the ID scope" "$(cat "$T/out")"
    fi
    stop
    tap $? "$round start: stopping run.sh stops provd cleanly (exit 0)" "$(tail -c 2000 "$T/err")"
done
