#!/usr/bin/env bash
# make run: starts provd in the foreground on a development setup kept in run/
# (git-ignored), created on first use and reused afterwards:
#   run/ca.pem, run/ca.key           a development CA (EC P-256)
#   run/server.pem, run/server.key   the server certificate (localhost, 127.0.0.1)
#   run/policy.key                   key of the provisioningserviceowner policy
#   run/device.key                   key for the first device
#   run/id-scope                     the instance's ID scope
#   run/data/                        the SQLite store
# Starts provd, makes sure the enrollment "first-device" exists, prints the
# service connection string and one command that provisions that device, and
# waits for provd. PORT (default 8443) picks the HTTPS port, MQTT_PORT (8883) the MQTT one, RUN_DIR (default run)
# the state directory, BUILD_DIR (default build) the binaries.
# Delete run/ to start from scratch.
set -euo pipefail

cd "$(dirname "$0")/.."

PORT=${PORT:-8443}
MQTT_PORT=${MQTT_PORT:-8883}
HUB=hub.localdomain
RUN=${RUN_DIR:-run}
BUILD_DIR=${BUILD_DIR:-build}
PROVD=$BUILD_DIR/src/server/provd

case "$PORT" in
'' | *[!0-9]*)
    echo "run.sh: PORT must be a number, not '$PORT'" >&2
    exit 2
    ;;
esac
if [ ! -x "$PROVD" ]; then
    echo "run.sh: $PROVD is not built; run 'make run' (or 'make build')" >&2
    exit 1
fi

umask 077
mkdir -p "$RUN" "$RUN/data"

# A random 32-byte key, base64, kept in FILE (0600); created once.
make_key()
{
    if [ ! -s "$1" ]; then
        openssl rand -base64 32 > "$1.tmp"
        mv "$1.tmp" "$1"
    fi
}

if [ ! -s "$RUN/ca.pem" ] || [ ! -s "$RUN/ca.key" ]; then
    echo "run.sh: creating a development CA in $RUN/" >&2
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$RUN/ca.key" -out "$RUN/ca.pem" -days 3650 -sha256 \
        -subj "/CN=provd development CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    rm -f "$RUN/server.pem" # issued by the previous CA, if any
fi

if [ ! -s "$RUN/server.pem" ] || [ ! -s "$RUN/server.key" ]; then
    echo "run.sh: issuing a server certificate for localhost and 127.0.0.1" >&2
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$RUN/server.key" -out "$RUN/server.csr" -subj "/CN=localhost" 2>/dev/null
    cat > "$RUN/server.ext" <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    openssl x509 -req -in "$RUN/server.csr" -CA "$RUN/ca.pem" -CAkey "$RUN/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days 825 -sha256 \
        -extfile "$RUN/server.ext" -out "$RUN/server.pem" 2>/dev/null
    rm -f "$RUN/server.csr" "$RUN/server.ext"
fi

make_key "$RUN/policy.key"
make_key "$RUN/device.key"
if [ ! -s "$RUN/id-scope" ]; then
    printf '0ne%s\n' "$(openssl rand -hex 4 | tr 'a-f' 'A-F')" > "$RUN/id-scope"
fi

policy_key=$(cat "$RUN/policy.key")
device_key=$(cat "$RUN/device.key")
scope=$(cat "$RUN/id-scope")
conn="HostName=127.0.0.1:$PORT;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=$policy_key"

# provd runs in the foreground of this script: started here, waited for below,
# and stopped with it (Ctrl-C reaches both).
"$PROVD" --listen "127.0.0.1:$PORT" --tls-cert "$RUN/server.pem" --tls-key "$RUN/server.key" \
    --data-dir "$RUN/data" --id-scope "$scope" \
    --policy "provisioningserviceowner=$policy_key" --hub "$HUB" --retry-after 1 \
    --mqtt-listen "127.0.0.1:$MQTT_PORT" &
provd_pid=$!
stop_provd()
{
    kill -TERM $provd_pid 2>/dev/null
    wait $provd_pid
    exit $?
}
trap stop_provd INT TERM

# The first device's enrollment, created once through the service API, so the
# command printed below works on every run.
export PROVD_CA_FILE=$RUN/ca.pem PROVD_CONNECTION_STRING=$conn
ready=0
for _ in $(seq 1 100); do
    if ! kill -0 $provd_pid 2>/dev/null; then
        wait $provd_pid
        exit $?
    fi
    if $BUILD_DIR/src/cli/provctl enrollment show first-device >/dev/null 2>&1 ||
        $BUILD_DIR/src/cli/provctl enrollment create first-device --primary-key "$device_key" \
            >/dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 0.1
done
if [ $ready -ne 1 ]; then
    echo "run.sh: provd did not answer on 127.0.0.1:$PORT" >&2
    kill -TERM $provd_pid 2>/dev/null
    wait $provd_pid
    exit 1
fi

cat <<EOF

provd development instance (state in $RUN/; delete it to start over)

  listening on          https://127.0.0.1:$PORT  (device and service APIs)
                        mqtts://127.0.0.1:$MQTT_PORT  (device API over MQTT)
  ID scope              $scope
  CA certificate        $RUN/ca.pem
  connection string     $conn

An individual enrollment "first-device" exists (its key is in $RUN/device.key).
To provision that first device, run this in another terminal, from $(pwd):

$BUILD_DIR/src/cli/prov-device --host 127.0.0.1:$PORT --cacert $RUN/ca.pem --scope $scope --registration-id first-device --symmetric-key $device_key

The same over MQTT:

$BUILD_DIR/src/cli/prov-device --transport mqtt --host 127.0.0.1:$MQTT_PORT --cacert $RUN/ca.pem --scope $scope --registration-id first-device --symmetric-key $device_key

Manage enrollments with provctl, for example:

PROVD_CA_FILE=$RUN/ca.pem PROVD_CONNECTION_STRING='$conn' $BUILD_DIR/src/cli/provctl enrollment list

Stop provd with Ctrl-C.

EOF

wait $provd_pid
