# shellcheck shell=bash
# Mosquitto 2 brokers for the system tests: the dynamic-security plugin
# ("dynsec"), an admin client provd's mosquitto connector can use, listeners
# on a test's own 127.0.0.N, and helpers to talk to the broker as the admin.
# Independent of lib.sh; source it, then:
#
#   mosq_init DIR                  where brokers keep their files (DIR/mosq-NAME.*)
#   mosq_server_cert NAME IP CA_PEM CA_KEY
#                                  a broker certificate NAME.pem/NAME.key in DIR
#                                  (EC P-256, SAN IP:IP and DNS:localhost, serverAuth)
#                                  signed by CA_PEM/CA_KEY (e.g. a pki.sh root)
#   mosq_start NAME IP PORT [tls PORT CA CERT KEY] [x509 PORT CA CERT KEY]
#                                  starts broker NAME (again: same dynsec file):
#                                  - PORT: plain MQTT, user name and password;
#                                  - tls PORT: TLS, user name and password (a
#                                    mosquittos:// connector URL, password devices);
#                                  - x509 PORT: TLS with require_certificate and
#                                    use_identity_as_username: a device certificate
#                                    issued under CA is the login, its CN the user name.
#                                  Waits until the plain port answers MQTT (10 s).
#   mosq_stop NAME                 SIGTERM, waits for the exit
#   mosq_stop_all                  every broker started here (call it from an EXIT trap)
#   mosq_admin_pw NAME             the admin's password
#   mosq_url NAME                  mosquitto://admin:PASSWORD@IP:PORT
#   mosq_tls_url NAME              mosquittos://admin:PASSWORD@IP:TLSPORT?cafile=CA
#   mosq_ctrl NAME JSON            sends {"commands":[...]} JSON to the dynsec control
#                                  topic as the admin, prints the response
#   mosq_admin NAME CMD ARGS...    runs a mosquitto client (mosquitto_pub, _sub, _rr,
#                                  _ctrl) on broker NAME's plain port as the admin
#   mosq_admin_argv NAME           sets the array MOSQ_ARGV to those options (host, port,
#                                  admin login), for a client run as a background job
#                                  (`mosquitto_sub "${MOSQ_ARGV[@]}" ... &`: $! is then
#                                  the client's pid, not a subshell's)
#
# The admin client ($MOSQ_ADMIN_USER, password in MOSQ_ADMIN_PW_<NAME>) has
# the role `mosquitto_ctrl dynsec init` makes (the control topic, and subscribe
# and receive on everything) plus publishClientSend devices/#, which the
# connector needs for the retained twins (docs/operations.md). Brokers run in
# the foreground of a background job, log to DIR/mosq-NAME.log (MOSQ_DEBUG=1:
# everything) and keep no persistence file. Run as root, a broker keeps root
# (`user root`) so it can read keys in a private temp dir.

MOSQ_DIR=
MOSQ_ADMIN_USER="admin"
MOSQ_NAMES=()
MOSQ_PLUGIN=${MOSQ_PLUGIN:-}

mosq_init()
{
    MOSQ_DIR=$1
    mkdir -p "$MOSQ_DIR" || return 1
    if [ -z "$MOSQ_PLUGIN" ]; then
        MOSQ_PLUGIN=$(dpkg -L mosquitto 2>/dev/null | grep '/mosquitto_dynamic_security\.so$' |
            head -n 1)
        [ -n "$MOSQ_PLUGIN" ] || MOSQ_PLUGIN=/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so
    fi
    if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
        echo "mosquitto.sh: the mosquitto broker is not installed" >&2
        return 1
    fi
    [ -f "$MOSQ_PLUGIN" ] || { echo "mosquitto.sh: no dynsec plugin at $MOSQ_PLUGIN" >&2; return 1; }
}

_mosq_bin()
{
    command -v mosquitto 2>/dev/null || echo /usr/sbin/mosquitto
}

_mosq_get()
{
    local v="MOSQ_$1_$2"
    printf '%s' "${!v:-}"
}

mosq_server_cert()
{
    local name=$1 ip=$2 ca=$3 cakey=$4 d=$MOSQ_DIR
    printf 'subjectAltName=IP:%s,DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
        "$ip" >"$d/$name.ext"
    if ! openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/$name.key" \
        -out "$d/$name.csr" -subj "/CN=$name" 2>"$d/$name.err" ||
        ! openssl x509 -req -in "$d/$name.csr" -CA "$ca" -CAkey "$cakey" \
            -set_serial "0x$(openssl rand -hex 8)" -days 2 -extfile "$d/$name.ext" \
            -out "$d/$name.pem" 2>"$d/$name.err"; then
        echo "mosquitto.sh: server certificate: $(cat "$d/$name.err")" >&2
        return 1
    fi
    rm -f "$d/$name.csr" "$d/$name.ext" "$d/$name.err"
}

# The dynsec file: `mosquitto_ctrl dynsec init` (admin client and role), then
# publishClientSend devices/# added to the admin role.
_mosq_dynsec_file()
{
    local file=$1 pw=$2
    mosquitto_ctrl dynsec init "$file" "$MOSQ_ADMIN_USER" "$pw" >/dev/null || return 1
    python3 - "$file" <<'EOF'
import json, sys
p = sys.argv[1]
d = json.load(open(p))
for r in d["roles"]:
    if r["rolename"] == "admin":
        r["acls"].append({"acltype": "publishClientSend", "topic": "devices/#", "allow": True})
json.dump(d, open(p, "w"), indent=1)
EOF
}

# _mosq_listener PORT IP CA CERT KEY [x509]: a TLS listener block
_mosq_listener()
{
    printf 'listener %s %s\ncafile %s\ncertfile %s\nkeyfile %s\ntls_version tlsv1.2\n' "$1" "$2" \
        "$3" "$4" "$5"
    [ "${6:-}" != x509 ] || printf 'require_certificate true\nuse_identity_as_username true\n'
}

mosq_start()
{
    local name=$1 ip=$2 port=$3 d=$MOSQ_DIR conf pw pid i
    shift 3
    conf=$d/mosq-$name.conf
    pw=$(_mosq_get ADMIN_PW "$name")
    if [ -z "$pw" ]; then
        pw=$(openssl rand -hex 12)
        rm -f "$d/mosq-$name.dynsec.json"
        _mosq_dynsec_file "$d/mosq-$name.dynsec.json" "$pw" || return 1
        printf -v "MOSQ_ADMIN_PW_$name" '%s' "$pw"
        {
            [ "$(id -u)" -ne 0 ] || echo 'user root'
            echo 'per_listener_settings false'
            echo 'allow_anonymous false'
            echo 'persistence false'
            echo "plugin $MOSQ_PLUGIN"
            echo "plugin_opt_config_file $d/mosq-$name.dynsec.json"
            echo 'log_dest stderr'
            if [ "${MOSQ_DEBUG:-0}" = 1 ]; then echo 'log_type all'; else
                printf 'log_type error\nlog_type warning\nlog_type notice\nlog_type information\n'
            fi
            echo "listener $port $ip"
            while [ $# -gt 0 ]; do
                case "$1" in
                tls)
                    _mosq_listener "$2" "$ip" "$3" "$4" "$5"
                    printf -v "MOSQ_TLSPORT_$name" '%s' "$2"
                    printf -v "MOSQ_CA_$name" '%s' "$3"
                    ;;
                x509)
                    _mosq_listener "$2" "$ip" "$3" "$4" "$5" x509
                    printf -v "MOSQ_X509PORT_$name" '%s' "$2"
                    ;;
                *) echo "mosquitto.sh: unknown listener kind '$1'" >&2; return 1 ;;
                esac
                shift 5
            done
        } >"$conf"
        printf -v "MOSQ_IP_$name" '%s' "$ip"
        printf -v "MOSQ_PORT_$name" '%s' "$port"
        MOSQ_NAMES+=("$name")
    fi
    "$(_mosq_bin)" -c "$conf" </dev/null >>"$d/mosq-$name.log" 2>&1 &
    pid=$!
    printf -v "MOSQ_PID_$name" '%s' "$pid"
    for ((i = 0; i < 100; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "mosquitto.sh: broker $name exited: $(tail -n 5 "$d/mosq-$name.log")" >&2
            printf -v "MOSQ_PID_$name" '%s' ''
            return 1
        fi
        # an MQTT round trip as the admin proves the plugin is loaded
        # shellcheck disable=SC2016
        if mosq_admin "$name" mosquitto_sub -t '$CONTROL/none' -E -W 1 >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "mosquitto.sh: broker $name did not answer on $ip:$port within 10 s" >&2
    return 1
}

mosq_stop()
{
    local pid
    pid=$(_mosq_get PID "$1")
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    printf -v "MOSQ_PID_$1" '%s' ''
}

mosq_stop_all()
{
    local n
    for n in "${MOSQ_NAMES[@]}"; do
        mosq_stop "$n"
    done
}

mosq_admin_argv()
{
    MOSQ_ARGV=(-h "$(_mosq_get IP "$1")" -p "$(_mosq_get PORT "$1")" -u "$MOSQ_ADMIN_USER"
        -P "$(_mosq_get ADMIN_PW "$1")")
}

mosq_admin()
{
    local name=$1 cmd=$2
    shift 2
    mosq_admin_argv "$name"
    "$cmd" "${MOSQ_ARGV[@]}" "$@"
}

mosq_admin_pw()
{
    _mosq_get ADMIN_PW "$1"
}

mosq_url()
{
    printf 'mosquitto://%s:%s@%s:%s' "$MOSQ_ADMIN_USER" "$(_mosq_get ADMIN_PW "$1")" \
        "$(_mosq_get IP "$1")" "$(_mosq_get PORT "$1")"
}

mosq_tls_url()
{
    printf 'mosquittos://%s:%s@%s:%s?cafile=%s' "$MOSQ_ADMIN_USER" "$(_mosq_get ADMIN_PW "$1")" \
        "$(_mosq_get IP "$1")" "$(_mosq_get TLSPORT "$1")" "$(_mosq_get CA "$1")"
}

mosq_ctrl()
{
    # shellcheck disable=SC2016
    mosq_admin "$1" mosquitto_rr -t '$CONTROL/dynamic-security/v1' \
        -e '$CONTROL/dynamic-security/v1/response' -W 5 -m "$2"
}
