# shellcheck shell=bash
# Software TPMs for the TPM system tests (t401, t402): swtpm instances on
# loopback, each with a fresh state directory (a new endorsement seed).
# Needs $IP (the script's address), $T (its temp dir) and $PY or python3.
# The script stops SWTPM_PIDS at exit.

SWTPM_PIDS=()

# free_port_pair: a port P on $IP such that P and P + 1 are both free (swtpm's
# server and control ports).
free_port_pair()
{
    "${PY:-python3}" - "$IP" <<'PYEOF'
import socket, sys
for _ in range(50):
    a = socket.socket()
    a.bind((sys.argv[1], 0))
    p = a.getsockname()[1]
    b = socket.socket()
    try:
        b.bind((sys.argv[1], p + 1))
    except OSError:
        continue
    finally:
        a.close()
        b.close()
    print(p)
    break
PYEOF
}

# start_tpm NAME: a fresh swtpm that answers TPM2 commands (tpm2_getcap); sets
# PORT_NAME and TCTI_NAME (swtpm:host=...,port=...). On failure (3 tries) the
# reasons are appended to $T/swtpm.err and it returns 1.
start_tpm()
{
    local name=$1 port pid _ try tcti
    mkdir -p "$T/$name"
    for try in 1 2 3; do
        port=$(free_port_pair)
        [ -n "$port" ] || continue
        swtpm socket --tpm2 --tpmstate dir="$T/$name" \
            --server type=tcp,port="$port",bindaddr="$IP" \
            --ctrl type=tcp,port=$((port + 1)),bindaddr="$IP" \
            --flags not-need-init,startup-clear --log file="$T/$name.log" \
            >"$T/$name.out" 2>&1 &
        pid=$!
        tcti="swtpm:host=$IP,port=$port"
        for _ in $(seq 1 50); do
            if TPM2TOOLS_TCTI=$tcti tpm2_getcap properties-fixed >/dev/null 2>&1; then
                SWTPM_PIDS+=("$pid")
                printf -v "PORT_$name" '%s' "$port"
                printf -v "TCTI_$name" '%s' "$tcti"
                return 0
            fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -TERM "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        echo "swtpm $name on $IP:$port (try $try): $(cat "$T/$name.out")" >>"$T/swtpm.err"
    done
    return 1
}
