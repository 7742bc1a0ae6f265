#!/usr/bin/env bash
# make bench: provd measured against an nginx baseline, on loopback, with the
# load generator prov-bench (src/bench; docs/benchmarks.md explains the method).
#
#  1. builds provd and prov-bench with -Dbuildtype=release in build-bench/;
#  2. starts provd on SQLite and creates 1,000 individual enrollments through
#     the service API's bulk operation (450 symmetric-key, 450 X.509 with
#     generated leaf certificates, 100 TPM with generated EK/SRK keys), then
#     runs every attestation type over HTTPS and MQTT (TPM: HTTPS only, as in
#     DPS), and the nginx baseline (static JSON answers, same TLS set-up) for
#     the symmetric-key and X.509 HTTPS cases;
#  3. grows the store to 1,000,000 enrollments (bulk API, in parallel) and runs
#     the same cases again;
#  4. restarts provd and holds 10,000 idle MQTT connections: peak RSS (VmHWM);
#  5. prints the report (markdown) and writes it to $BENCH_REPORT.
#
# Environment:
#   BENCH_QUICK=1        quick pass: 20,000 instead of 1,000,000 enrollments,
#                        5 s per case, 1,000 idle connections
#   BENCH_DURATION S     seconds per case (default 12; quick 5), of which
#   BENCH_WARMUP S       are not counted (default 2; quick 1)
#   BENCH_REPEAT N       runs of every case, in turn; the report takes the
#                        median (default 3; quick 1)
#   BENCH_CONCURRENCY C  devices in flight (default 32)
#   BENCH_THREADS T      prov-bench threads (default 2)
#   BENCH_WORKERS N      provd workers = nginx workers (default: nproc)
#   BENCH_BIG N          the large store (default 1000000; quick 20000)
#   BENCH_IDLE N         idle MQTT connections (default 10000; quick 1000)
#   BENCH_PERF=1         also profile provd with perf during one case
#   BENCH_PERF_ATTESTATION  the case profiled: symkey (default) or x509, HTTPS
#   BENCH_FOCUS=1        only what the HTTPS targets compare: the small store,
#                        symmetric key and X.509 over HTTPS, provd and nginx
#                        (no MQTT, TPM, large store or idle connections); for
#                        trying a change quickly, not for docs/benchmarks.md
#   BENCH_BUILD_DIR      default build-bench
#   BENCH_REPORT         default $BENCH_BUILD_DIR/benchmarks.md
#   BENCH_KEEP=1         keep the work directory (/tmp/provd-bench-*), with the
#                        keys in keys.env to drive it again by hand
# provd listens on 127.0.0.171 (443, 8883) and nginx on 127.0.0.172 (443), so
# this runs as root (as the system tests do); nginx comes from make deps.
set -euo pipefail

cd "$(dirname "$0")/.."
SRC=$(pwd)

QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
    DURATION=${BENCH_DURATION:-5}
    WARMUP=${BENCH_WARMUP:-1}
    REPEAT=${BENCH_REPEAT:-1}
    BIG=${BENCH_BIG:-20000}
    IDLE=${BENCH_IDLE:-1000}
else
    DURATION=${BENCH_DURATION:-12}
    WARMUP=${BENCH_WARMUP:-2}
    REPEAT=${BENCH_REPEAT:-3}
    BIG=${BENCH_BIG:-1000000}
    IDLE=${BENCH_IDLE:-10000}
fi
CONC=${BENCH_CONCURRENCY:-32}
THREADS=${BENCH_THREADS:-2}
WORKERS=${BENCH_WORKERS:-$(nproc)}
BUILD=${BENCH_BUILD_DIR:-build-bench}
REPORT=${BENCH_REPORT:-$BUILD/benchmarks.md}
PERF=${BENCH_PERF:-0}
PERF_ATT=${BENCH_PERF_ATTESTATION:-symkey}
FOCUS=${BENCH_FOCUS:-0}

IP=127.0.0.171
NGINX_IP=127.0.0.172
SCOPE=0ne00BENCH01
HUB=hub1.bench.test
NSYM=450  # symmetric-key devices driven (and enrolled in the small store)
NX509=450 # X.509 devices driven (and enrolled)
NTPM=100  # TPM devices driven (and enrolled; RSA-2048 EK and SRK each, slow to make)
SMALL=$((NSYM + NX509 + NTPM))

log()
{
    printf 'bench: %s\n' "$*" >&2
}

die()
{
    log "$*"
    exit 1
}

[ "$BIG" -gt "$SMALL" ] || die "BENCH_BIG must be larger than $SMALL"
for tool in nginx openssl curl python3; do
    command -v "$tool" >/dev/null || die "$tool is missing (make deps installs it)"
done

# ---- build -----------------------------------------------------------------

if [ ! -f "$BUILD/build.ninja" ]; then
    log "configuring $BUILD (release)"
    meson setup --buildtype=release -Dwerror=false "$BUILD" >/dev/null
fi
log "building provd and prov-bench in $BUILD"
ninja -C "$BUILD" src/server/provd src/bench/prov-bench >/dev/null
PROVD=$SRC/$BUILD/src/server/provd
BENCH=$SRC/$BUILD/src/bench/prov-bench

# ---- work directory, certificates, keys ----------------------------------

W=$(mktemp -d /tmp/provd-bench-XXXXXX)
mkdir -p "$W/results" "$W/nginx" "$W/data"
PROVD_PID=
NGINX_PID=

cleanup()
{
    local rc=$?
    [ -z "$PROVD_PID" ] || { kill -TERM "$PROVD_PID" 2>/dev/null; wait "$PROVD_PID" 2>/dev/null; }
    [ -z "$NGINX_PID" ] || { kill -TERM "$NGINX_PID" 2>/dev/null; wait "$NGINX_PID" 2>/dev/null; }
    if [ "${BENCH_KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then
        log "work directory kept: $W"
    else
        rm -rf "$W"
    fi
}
trap cleanup EXIT

for a in "$IP" "$NGINX_IP"; do
    if (exec 3<>"/dev/tcp/$a/443") 2>/dev/null; then
        die "something already listens on $a:443 (another make bench?)"
    fi
done

(
    cd "$W"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
        -out ca.pem -days 7 -subj '/CN=provd bench CA' \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key \
        -out server.csr -subj /CN=localhost
    printf 'subjectAltName=IP:%s,IP:%s,DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
        "$IP" "$NGINX_IP" >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial "0x$(openssl rand -hex 8)" \
        -days 7 -extfile server.ext -out server.pem
) 2>/dev/null || die "certificate generation failed"
POLICY_KEY=$(openssl rand -base64 32)
GROUP_KEY=$(openssl rand -base64 32) # the symmetric-key devices' keys are derived from it
if [ "${BENCH_KEEP:-0}" = 1 ]; then
    # a kept work directory can be driven again by hand: . $W/keys.env
    (umask 077 && printf 'POLICY_KEY=%s\nGROUP_KEY=%s\n' "$POLICY_KEY" "$GROUP_KEY" >"$W/keys.env")
fi

# ---- machine ---------------------------------------------------------------

{
    echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
    echo "nproc=$(nproc)"
    echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
    echo "mem=$(awk '/MemTotal/ {printf "%.1f GB", $2 / 1048576}' /proc/meminfo)"
    echo "kernel=$(uname -sr)"
    echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "provd=$("$PROVD" --version 2>&1 | head -n 1)"
    echo "git=$(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$SRC" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "nginx=$(nginx -v 2>&1 | sed 's/^nginx version: //')"
    echo "openssl=$(openssl version)"
    echo "libevent=$(pkg-config --modversion libevent 2>/dev/null || echo '?')"
    echo "sqlite=$(pkg-config --modversion sqlite3 2>/dev/null || echo '?')"
    echo "cc=$(cc --version | head -n 1)"
    echo "loadavg=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "quick=$QUICK"
    echo "duration=$DURATION"
    echo "warmup=$WARMUP"
    echo "concurrency=$CONC"
    echo "threads=$THREADS"
    echo "workers=$WORKERS"
    echo "big=$BIG"
    echo "small=$SMALL"
    echo "idle=$IDLE"
    echo "focus=$FOCUS"
    echo "perf_att=$PERF_ATT"
    echo "repeat=$REPEAT"
} >"$W/meta"

# ---- servers ---------------------------------------------------------------

wait_tls()
{
    local host=$1 i
    for ((i = 0; i < 200; i++)); do
        if curl -s -o /dev/null --max-time 2 --cacert "$W/ca.pem" "https://$host/"; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

start_provd()
{
    record "$PROVD" --listen "$IP:443" --mqtt-listen "$IP:8883" --tls-cert "$W/server.pem" \
        --tls-key "$W/server.key" --data-dir "$W/data" --id-scope "$SCOPE" \
        --policy "provisioningserviceowner=$POLICY_KEY" --hub "$HUB" --workers "$WORKERS" \
        --retry-after 1 --log-level warn
    "$PROVD" --listen "$IP:443" --mqtt-listen "$IP:8883" --tls-cert "$W/server.pem" \
        --tls-key "$W/server.key" --data-dir "$W/data" --id-scope "$SCOPE" \
        --policy "provisioningserviceowner=$POLICY_KEY" --hub "$HUB" --workers "$WORKERS" \
        --retry-after 1 --log-level warn </dev/null >>"$W/provd.log" 2>&1 &
    PROVD_PID=$!
    wait_tls "$IP" || die "provd did not start (log: $W/provd.log)"
}

stop_provd()
{
    kill -TERM "$PROVD_PID"
    wait "$PROVD_PID" || log "provd exited with status $?"
    PROVD_PID=
}

start_nginx()
{
    python3 - "$SRC/bench" "$W" "$WORKERS" "$NGINX_IP:443" <<'EOF'
import sys
src, w, workers, listen = sys.argv[1:5]
def answer(name):
    # nginx single-quoted string: escape backslash and quote
    return open("%s/%s" % (src, name)).read().strip().replace("\\", "\\\\").replace("'", "\\'")
conf = open(src + "/nginx.conf.in").read()
for k, v in {"@WORKERS@": workers, "@DIR@": w + "/nginx", "@LISTEN@": listen,
             "@CERT@": w + "/server.pem", "@KEY@": w + "/server.key", "@CA@": w + "/ca.pem",
             "@REGISTER_JSON@": answer("register.json"),
             "@ASSIGNED_JSON@": answer("assigned.json")}.items():
    conf = conf.replace(k, v)
open(w + "/nginx/nginx.conf", "w").write(conf)
EOF
    record nginx -p "$W/nginx" -c "$W/nginx/nginx.conf" -e "$W/nginx/error.log"
    nginx -p "$W/nginx" -c "$W/nginx/nginx.conf" -e "$W/nginx/error.log" \
        </dev/null >>"$W/nginx/out.log" 2>&1 &
    NGINX_PID=$!
    wait_tls "$NGINX_IP" || die "nginx did not start (log: $W/nginx/error.log)"
}

# master and workers, comma-separated (prov-bench sums their CPU time)
nginx_pids()
{
    local p
    p=$(pgrep -d, -P "$NGINX_PID" || true)
    echo "$NGINX_PID${p:+,$p}"
}

# record CMD...: the command, as the report shows it (keys and paths replaced by names)
# shellcheck disable=SC2016
record()
{
    local line="$*"
    line=${line//"$GROUP_KEY"/'$GROUP_KEY'}
    line=${line//"$POLICY_KEY"/'$POLICY_KEY'}
    line=${line//"$W"/'$W'}
    line=${line//"$SRC/$BUILD"/"$BUILD"}
    printf '%s\n' "$line" >>"$W/commands"
}

# ---- enrollments -------------------------------------------------------------

# enroll NAME ARGS...: prov-bench enroll; its summary line goes to results/NAME.enroll
enroll()
{
    local name=$1
    shift
    log "enrolling: $name"
    record "$BENCH" enroll --host "$IP" --ca "$W/ca.pem" --policy-key "$POLICY_KEY" --quiet "$@"
    "$BENCH" enroll --host "$IP" --ca "$W/ca.pem" --policy-key "$POLICY_KEY" --quiet "$@" \
        >"$W/results/$name.enroll" || die "enrollment failed: $(cat "$W/results/$name.enroll")"
    cat "$W/results/$name.enroll" >&2
}

# ---- cases -------------------------------------------------------------------

# Device options per attestation type and store (symmetric-key devices are
# spread over the whole store when it is large).
devices()
{
    local att=$1 store=$2
    case $att in
    symkey)
        if [ "$store" = big ]; then
            echo --prefix sym- --count "$NSYM" --stride $(((BIG - NX509 - NTPM) / NSYM)) \
                --group-key "$GROUP_KEY"
        else
            echo --prefix sym- --count "$NSYM" --group-key "$GROUP_KEY"
        fi
        ;;
    x509) echo --prefix x509- --count "$NX509" --x509-creds "$W/x509.creds" ;;
    tpm) echo --prefix tpm- --count "$NTPM" --tpm-keys "$W/tpm.keys" ;;
    esac
}

# run_case NAME HOST PIDS ATT TRANSPORT STORE: one measurement, JSON in results/NAME.json
run_case()
{
    local name=$1 host=$2 pids=$3 att=$4 tr=$5 store=$6 rc=0
    local port=443
    [ "$tr" = mqtt ] && port=8883
    log "case $name"
    # shellcheck disable=SC2046
    record "$BENCH" --host "$host" --port "$port" --scope "$SCOPE" --ca "$W/ca.pem" \
        --transport "$tr" --attestation "$att" $(devices "$att" "$store") --concurrency "$CONC" \
        --threads "$THREADS" --duration "$DURATION" --warmup "$WARMUP" --ignore-retry-after \
        --server-pid "$pids" --label "$name" --json --quiet
    # shellcheck disable=SC2046
    "$BENCH" --host "$host" --port "$port" --scope "$SCOPE" --ca "$W/ca.pem" --transport "$tr" \
        --attestation "$att" $(devices "$att" "$store") --concurrency "$CONC" \
        --threads "$THREADS" --duration "$DURATION" --warmup "$WARMUP" --ignore-retry-after \
        --server-pid "$pids" --label "$name" --json --quiet \
        >"$W/results/$name.json" 2>>"$W/results/$name.err" || rc=$?
    [ $rc -eq 0 ] || log "case $name: prov-bench exit status $rc (errors are in the report)"
    [ -s "$W/results/$name.json" ] || echo "{\"label\":\"$name\",\"failed\":true}" >"$W/results/$name.json"
}

# cases STORE: every attestation type and transport against provd, and nginx for
# HTTPS, BENCH_REPEAT times in turn (the report takes each case's median)
cases()
{
    local store=$1 att rep
    for ((rep = 1; rep <= REPEAT; rep++)); do
        for att in symkey x509 ${TPM_OK:+tpm}; do
            run_case "$store-$att-https-provd.r$rep" "$IP" "$PROVD_PID" "$att" https "$store"
            if [ "$att" != tpm ]; then
                run_case "$store-$att-https-nginx.r$rep" "$NGINX_IP" "$(nginx_pids)" "$att" \
                    https "$store"
                [ "$FOCUS" = 1 ] ||
                    run_case "$store-$att-mqtt-provd.r$rep" "$IP" "$PROVD_PID" "$att" mqtt "$store"
            fi
        done
    done
}

profile()
{
    command -v perf >/dev/null || { log "perf is missing: no profile"; return 0; }
    log "profiling provd (perf, $PERF_ATT over HTTPS)"
    perf record -F 999 -o "$W/perf.data" -p "$PROVD_PID" -- sleep "$DURATION" \
        >"$W/perf.log" 2>&1 &
    local perf_pid=$!
    run_case "profile.$PERF_ATT-https" "$IP" "$PROVD_PID" "$PERF_ATT" https "$1"
    wait "$perf_pid" || log "perf record: exit status $? ($(tail -c 300 "$W/perf.log"))"
    {
        echo "by library:"
        perf report -i "$W/perf.data" --sort dso --stdio 2>>"$W/perf.log" |
            grep -E '^ +[0-9.]+%' | head -n 12
        echo "by function (libcrypto has no symbols in Debian's build):"
        perf report -i "$W/perf.data" --sort dso,symbol --stdio 2>>"$W/perf.log" |
            grep -E '^ +[0-9.]+%' | head -n 30
    } | sed -e 's/[[:space:]-]*$//' >"$W/results/profile.txt" || true
}

# ---- the report (markdown, from $W/meta, $W/results and $W/commands) ----------

report()
{
    python3 - "$W" <<'EOF'
import glob, json, os, re, sys

w = sys.argv[1]
meta = dict(l.rstrip("\n").split("=", 1) for l in open(w + "/meta") if "=" in l)
runs = {}
for f in glob.glob(w + "/results/*.json"):
    name = os.path.basename(f)[:-5]
    try:
        r = json.loads(open(f).read().strip().splitlines()[-1])
    except (ValueError, IndexError):
        r = {"failed": True}
    runs.setdefault(name.split(".r")[0], []).append(r)
# a case repeated: its median run by rate (a failed run counts as the slowest), and the range
res, spread = {}, {}
for name, rs in runs.items():
    rs.sort(key=lambda r: -1 if r.get("failed") else r.get("rate", 0))
    res[name] = rs[(len(rs) - 1) // 2]
    rates = [r["rate"] for r in rs if not r.get("failed") and "rate" in r]
    if len(rs) > 1 and rates:
        spread[name] = (min(rates), max(rates), len(rs))
big, small = int(meta["big"]), int(meta["small"])
names = {"small": "{:,}".format(small), "big": "{:,}".format(big)}
atts = {"symkey": "symmetric key", "x509": "X.509", "tpm": "TPM"}

def g(name, key, fmt="{:.0f}"):
    r = res.get(name)
    if r is None:
        return "-"
    if r.get("failed"):
        return "failed"
    v = r.get(key)
    return "-" if v is None else fmt.format(v)

def rate_cell(name):
    v = g(name, "rate")
    if name in spread and v not in ("-", "failed"):
        lo, hi, n = spread[name]
        return "{} ({:.0f}-{:.0f})".format(v, lo, hi)
    return v

def ratio(a, b, key):
    ra, rb = res.get(a, {}), res.get(b, {})
    if ra.get(key) is None or not rb.get(key):
        return "-"
    return "{:.2f}".format(ra[key] / rb[key])

def errors(name):
    r = res.get(name)
    if r is None:
        return "-"
    if r.get("failed"):
        return "run failed"
    n = r.get("errors", 0)
    return str(n) if n == 0 else "**{}**".format(n)

out = []
p = out.append
p("# provd benchmarks")
p("")
p("Produced by `make bench` (`scripts/bench.sh`{}) on {}. How the figures are made is "
  "described after the tables.".format(", `BENCH_QUICK=1`" if meta["quick"] == "1" else "",
                                      meta["date"]))
p("")
p("## Machine")
p("")
p("| | |")
p("|---|---|")
for k, label in [("cpu", "CPU"), ("nproc", "cores (nproc)"), ("mem", "memory"),
                 ("kernel", "kernel"), ("os", "system"), ("provd", "provd"), ("git", "commit"),
                 ("nginx", "nginx"), ("openssl", "OpenSSL"), ("libevent", "libevent"),
                 ("sqlite", "SQLite"), ("cc", "compiler")]:
    p("| {} | {} |".format(label, meta.get(k, "?")))
p("| load average (1, 5, 15 min) | {} at the start, {} at the end |".format(
    meta.get("loadavg", "?"), meta.get("loadavg_end", "?")))
p("")
p("Set-up: provd `--workers {w}` and nginx `worker_processes {w}`; prov-bench with {c} devices "
  "in flight on {t} threads, each device on its own TLS connection (full handshake, no "
  "resumption) making a register request and polls until assigned, Retry-After ignored; "
  "{d} s per case of which the first {wu} s are not counted; each case run {r} times in "
  "turn, the tables give the median run (and the range of the rates).".format(
      w=meta["workers"], c=meta["concurrency"], t=meta["threads"], d=meta["duration"],
      wu=meta["warmup"], r=meta["repeat"]))
p("")
p("## Registrations per second: provd and the nginx baseline")
p("")
p("| enrollments | attestation | transport | provd reg/s | nginx reg/s | provd / nginx | "
  "provd latency p50 / p90 / p99 ms | provd CPU ms/reg | nginx CPU ms/reg | provd requests/reg "
  "| errors (provd, nginx) |")
p("|---:|---|---|---:|---:|---:|---|---:|---:|---:|---|")
for store in ("small", "big"):
    for att in ("symkey", "x509", "tpm"):
        for tr in ("https", "mqtt"):
            pv = "{}-{}-{}-provd".format(store, att, tr)
            ng = "{}-{}-{}-nginx".format(store, att, tr)
            if pv not in res:
                continue
            p("| {} | {} | {} | {} | {} | {} | {} / {} / {} | {} | {} | {} | {}, {} |".format(
                names[store], atts[att], tr.upper() if tr == "mqtt" else "HTTPS",
                rate_cell(pv), rate_cell(ng), ratio(pv, ng, "rate"),
                g(pv, "p50_ms", "{:.1f}"), g(pv, "p90_ms", "{:.1f}"), g(pv, "p99_ms", "{:.1f}"),
                g(pv, "server_cpu_ms_per_reg", "{:.3f}"), g(ng, "server_cpu_ms_per_reg", "{:.3f}"),
                g(pv, "requests_per_registration", "{:.2f}"),
                errors(pv), errors(ng) if ng in res else "-"))
p("")
p("TPM has no nginx row: a static answer cannot play the challenge (the device must "
  "decrypt a blob made for its own EK).")
if "tpm" in meta:
    p("TPM: " + meta["tpm"])
p("")
kinds = [(n, r["error_kinds"]) for n, r in sorted(res.items()) if r.get("error_kinds")]
if kinds:
    p("Errors by kind:")
    p("")
    for n, k in kinds:
        p("- `{}`: {}".format(n, ", ".join("{} x {}".format(v, e) for e, v in k.items())))
    p("")
p("## {} against {} enrollments".format(names["big"], names["small"]))
p("")
p("| attestation | transport | {} reg/s | {} reg/s | ratio |".format(names["small"], names["big"]))
p("|---|---|---:|---:|---:|")
for att in ("symkey", "x509", "tpm"):
    for tr in ("https", "mqtt"):
        a, b = "small-{}-{}-provd".format(att, tr), "big-{}-{}-provd".format(att, tr)
        if a in res or b in res:
            p("| {} | {} | {} | {} | {} |".format(atts[att], "MQTT" if tr == "mqtt" else "HTTPS",
                                               g(a, "rate"), g(b, "rate"), ratio(b, a, "rate")))
p("")
p("## Creating the enrollments (service API, bulk create)")
p("")
p("| enrollments | result |")
p("|---|---|")
for n in ("small-symkey", "small-x509", "small-tpm", "big-symkey"):
    f = "{}/results/{}.enroll".format(w, n)
    if os.path.exists(f):
        p("| {} | {} |".format(n, open(f).read().strip().replace("prov-bench enroll: ", "")))
p("")
p("## Idle MQTT connections")
p("")
idle = res.get("idle", {})
proc = {}
if os.path.exists(w + "/results/idle.proc"):
    for l in open(w + "/results/idle.proc"):
        k, v = l.split(":", 1)
        proc[k] = v.strip()
p("| connections | connected | provd VmHWM | provd VmRSS (held) | errors |")
p("|---:|---:|---:|---:|---:|")
p("| {} | {} | {} | {} | {} |".format(
    meta["idle"], idle.get("connected", "-"),
    "{:.1f} MB".format(idle["server_vmhwm_kb"] / 1024) if idle.get("server_vmhwm_kb", -1) >= 0 else proc.get("VmHWM", "-"),
    "{:.1f} MB".format(idle["server_vmrss_kb"] / 1024) if idle.get("server_vmrss_kb", -1) >= 0 else proc.get("VmRSS", "-"),
    idle.get("errors", "-")))
p("")
p("VmHWM is the peak resident set of a provd started for this measurement (its store "
  "holding the {} enrollments), read from /proc while the connections are held.".format(names["big"]))
p("")
if os.path.exists(w + "/results/profile.txt"):
    p("## Profile (perf, provd, {} over HTTPS)".format(atts.get(meta.get("perf_att"), "?")))
    p("")
    p("```")
    p(open(w + "/results/profile.txt").read().rstrip())
    p("```")
    p("")
p("## Targets (issue 7), as reached in this run")
p("")
def verdict(ok):
    return "met" if ok else "**not met**"
def rate(n):
    r = res.get(n, {})
    return None if r.get("failed") else r.get("rate")
rows = []
for store in ("small", "big"):
    for att in ("symkey", "x509"):
        a, b = rate("{}-{}-https-provd".format(store, att)), rate("{}-{}-https-nginx".format(store, att))
        if a is not None and b:
            rows.append("- {} over HTTPS, {} enrollments: provd/nginx = {:.2f} (target >= 0.8): {}".format(
                atts[att], names[store], a / b, verdict(a / b >= 0.8)))
for att in ("symkey", "x509", "tpm"):
    for tr in ("https", "mqtt"):
        a, b = rate("small-{}-{}-provd".format(att, tr)), rate("big-{}-{}-provd".format(att, tr))
        if a and b is not None:
            rows.append("- {} over {}: {} / {} enrollments = {:.2f} (target >= 0.90): {}".format(
                atts[att], "MQTT" if tr == "mqtt" else "HTTPS", names["big"], names["small"], b / a,
                verdict(b / a >= 0.9)))
hwm = idle.get("server_vmhwm_kb", -1)
if hwm is not None and hwm >= 0:
    rows.append("- peak RSS with {} idle MQTT connections: {:.1f} MB (target < 256 MB): {}".format(
        meta["idle"], hwm / 1024, verdict(hwm / 1024 < 256 and idle.get("connected") == int(meta["idle"]))))
if big < 1000000 or int(meta["idle"]) < 10000:
    rows.append("- (a reduced run: the targets are defined for 1,000,000 enrollments and 10,000 connections)")
for r in rows:
    p(r)
p("")
p("## How the figures are made")
p("")
p("- **Devices.** prov-bench (`src/bench`) keeps {} devices in flight. Each device opens its own "
  "TCP and TLS connection (a full handshake: the sessions or tickets a server offers are "
  "counted and never reused), sends the register request and then polls until it is assigned "
  "on that connection (HTTPS: HTTP/1.1 keep-alive; MQTT 3.1.1: CONNECT, SUBSCRIBE "
  "`$dps/registrations/res/#`, the register PUBLISH and the poll PUBLISHes at QoS 1), and "
  "closes. Retry-After is ignored, so a device polls at once and the server's capacity is "
  "what limits the rate. TPM devices make the DPS challenge round trip (401 with the "
  "activation blob, decrypted in software with the device's EK and SRK) before the signed "
  "register request.".format(meta["concurrency"]))
p("- **Rate and latency.** The rate counts the devices assigned between the end of the warm-up "
  "and the end of the case; devices still in flight then finish but are not counted. The "
  "latency of a device runs from its TCP connect to the assigned answer.")
p("- **CPU per registration.** The server's CPU time (utime + stime from /proc, summed over "
  "nginx's master and workers) during the counted window, divided by the registrations "
  "counted. prov-bench runs on the same machine and takes a large share of its cores (a TLS "
  "client's handshake costs about as much as the server's), so the rates are shared-machine "
  "figures; the CPU per registration is the cleaner comparison of what each server costs.")
p("- **Baseline.** nginx (`bench/nginx.conf.in`) with the same certificate and key (EC P-256), "
  "a client certificate requested and verified against the same CA when sent (`ssl_verify_client "
  "optional`), no session cache, no tickets (`ssl_session_tickets off`, `NumTickets 0`), "
  "`reuseport`, as many workers as provd, answering the register PUT with 202 and a static "
  "operation (`bench/register.json`) and the poll with 200 and a static assigned result "
  "(`bench/assigned.json`): the same two requests per device as provd. It shows what TLS, "
  "HTTP and the kernel cost on this machine, with no attestation and no store.")
p("- **Enrollments.** Created through provd's service API, `POST /enrollments` bulk create "
  "(`prov-bench enroll`, as many per request as fit in 96 KB, one request in flight per "
  "worker). Symmetric-key devices have individual enrollments whose keys are derived from "
  "one random key (each device has its own key; the server does not know they are related); "
  "X.509 devices have EC P-256 leaves (CN = registration id) under a generated intermediate, "
  "pinned in their enrollments; TPM devices have RSA-2048 EK and SRK keys.")
p("- **The large store.** The {} enrollments are the small store's {} plus symmetric-key "
  "enrollments; the symmetric-key devices driven are spread over the whole id range (every "
  "n-th id), the X.509 and TPM devices are the same as in the small store. Symmetric-key "
  "enrollments are the quickest to create, and the store's size, which is what the lookups "
  "feel, is the same whatever the type. Only the driven devices "
  "have registration records.".format(names["big"], names["small"]))
p("- **Servers.** provd runs with `--log-level warn` (no line per request; nginx has "
  "`access_log off`) and `--retry-after 1`; both bind 127.0.0.x only.")
p("")
p("## Commands")
p("")
p("```sh")
seen = set()
for l in open(w + "/commands"):
    # the repetitions of a case differ only in their label and the server's process ids
    l = re.sub(r"--server-pid ([0-9]+)(,[0-9,]+)?",
               lambda m: "--server-pid " + ("$NGINX_PIDS" if m.group(2) else "$PROVD_PID"), l)
    l = re.sub(r"(--label [^ ]+)\.r[0-9]+", r"\1", l).rstrip()
    if l not in seen:
        seen.add(l)
        p(l)
p("```")
print("\n".join(out))
EOF
}

# enroll_tpm: the TPM enrollments; TPM_OK=1 when this provd attests TPM devices
enroll_tpm()
{
    log "enrolling: small-tpm (makes $((2 * NTPM)) RSA-2048 keys first)"
    record "$BENCH" enroll --host "$IP" --ca "$W/ca.pem" --policy-key "$POLICY_KEY" --quiet \
        --attestation tpm --prefix tpm- --count "$NTPM" --tpm-keys "$W/tpm.keys"
    if "$BENCH" enroll --host "$IP" --ca "$W/ca.pem" --policy-key "$POLICY_KEY" --quiet \
        --attestation tpm --prefix tpm- --count "$NTPM" --tpm-keys "$W/tpm.keys" \
        >"$W/results/small-tpm.enroll" 2>"$W/results/tpm-probe.err" &&
        "$BENCH" --host "$IP" --scope "$SCOPE" --ca "$W/ca.pem" --attestation tpm --prefix tpm- \
            --count 1 --tpm-keys "$W/tpm.keys" --quiet >/dev/null 2>>"$W/results/tpm-probe.err"; then
        TPM_OK=1
        log "TPM attestation available"
    else
        echo "tpm=not measured: $(tr '\n' ' ' <"$W/results/tpm-probe.err" | head -c 300)" >>"$W/meta"
        log "TPM attestation not measured: $(head -c 300 "$W/results/tpm-probe.err")"
    fi
}

# ---- the run -----------------------------------------------------------------

ulimit -n "$(ulimit -Hn)" # idle connections: one descriptor each, in provd and prov-bench
log "work directory $W; provd on $IP, nginx on $NGINX_IP; $WORKERS workers"
start_provd
start_nginx

enroll small-symkey --prefix sym- --count "$NSYM" --group-key "$GROUP_KEY"
enroll small-x509 --attestation x509 --prefix x509- --count "$NX509" \
    --x509-ca-cert "$W/ca.pem" --x509-ca-key "$W/ca.key" --x509-creds "$W/x509.creds"

# TPM: measured when this provd supports it (enrollments accepted, a first device assigned)
TPM_OK=
[ "$FOCUS" = 1 ] || enroll_tpm

cases small
if [ "$FOCUS" = 1 ]; then
    [ "$PERF" != 1 ] || profile small
    echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$W/meta"
    mkdir -p "$(dirname "$REPORT")"
    report | tee "$REPORT"
    exit 0
fi

enroll big-symkey --prefix sym- --first "$NSYM" --count $((BIG - SMALL)) --group-key "$GROUP_KEY" \
    --concurrency "$WORKERS"
cases big
[ "$PERF" != 1 ] || profile big

log "restarting provd for the idle-connection measurement"
stop_provd
start_provd
IDLE_CMD=("$BENCH" --host "$IP" --scope "$SCOPE" --ca "$W/ca.pem" --transport mqtt --prefix sym-
    --group-key "$GROUP_KEY" --idle-mqtt "$IDLE" --concurrency 100 --server-pid "$PROVD_PID"
    --label idle --json --quiet)
record "${IDLE_CMD[@]}"
"${IDLE_CMD[@]}" >"$W/results/idle.json" 2>"$W/results/idle.err" ||
    log "idle connections: prov-bench exit status $? ($(head -c 300 "$W/results/idle.err"))"
grep -E '^Vm(HWM|RSS)' "/proc/$PROVD_PID/status" >"$W/results/idle.proc" || true
stop_provd
echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$W/meta"

mkdir -p "$(dirname "$REPORT")"
report >"$REPORT"
cat "$REPORT"
log "report written to $REPORT"
