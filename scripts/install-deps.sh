#!/usr/bin/env bash
# Installs what provd needs to build, run and test on Debian 12, and nothing
# that is already there: the single list of Debian packages lives here.
# Then installs the system tests' npm packages (tests/system) when their lock
# file is newer than the last install.
#
# Runs apt-get as root, or through sudo; without either it prints the command
# to run and fails. Safe to run again: with nothing missing it only asks dpkg.
set -euo pipefail

cd "$(dirname "$0")/.."
. scripts/debian.sh

build_pkgs=(
    build-essential meson ninja-build pkg-config clang libclang-rt-14-dev
    libssl-dev libevent-dev libjansson-dev libsqlite3-dev libcurl4-openssl-dev
    libhttp-parser-dev libcmocka-dev libmosquitto-dev libtss2-dev
)
run_pkgs=(openssl curl sqlite3 ca-certificates python3 mosquitto mosquitto-clients swtpm swtpm-tools tpm2-tools
    nginx)
node_pkgs=(nodejs npm)

log()
{
    printf 'install-deps: %s\n' "$*" >&2
}

# Node: keep a node >= 18 that is already on PATH (it may come from elsewhere,
# with its own npm); otherwise Debian 12's nodejs 18 and npm 9.
node_major=0
if command -v node >/dev/null 2>&1; then
    node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
fi
wanted=("${build_pkgs[@]}" "${run_pkgs[@]}")
if [ "$node_major" -ge 18 ] 2>/dev/null; then
    if ! command -v npm >/dev/null 2>&1; then
        log "node $(node --version) is on PATH but npm is not; install the npm that goes with it"
        exit 1
    fi
else
    wanted+=("${node_pkgs[@]}")
fi

missing_pkgs "${wanted[@]}"
if [ "${#MISSING[@]}" -gt 0 ]; then
    apt_install=(apt-get install -y -q --no-install-recommends "${MISSING[@]}")
    if ! root_cmd; then
        log "missing Debian packages: ${MISSING[*]}"
        log "run as root: apt-get update && ${apt_install[*]}"
        exit 1
    fi
    log "installing: ${MISSING[*]}"
    "${AS_ROOT[@]}" apt-get update -q
    "${AS_ROOT[@]}" "${apt_install[@]}"
fi

# System tests' npm packages. npm ci wipes node_modules and installs exactly
# the lock file; the stamp records which lock file that was.
sysdir=tests/system
stamp=$sysdir/node_modules/.provd-npm-ci.stamp
if [ -f "$sysdir/package-lock.json" ]; then
    if [ ! -f "$stamp" ] || [ "$sysdir/package-lock.json" -nt "$stamp" ] ||
        [ "$sysdir/package.json" -nt "$stamp" ]; then
        log "npm ci in $sysdir"
        (cd "$sysdir" && npm ci --ignore-scripts --no-audit --no-fund)
        touch "$stamp"
    fi
fi
