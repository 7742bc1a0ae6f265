#!/usr/bin/env bash
# Prints the path of a Node.js 18 binary for the system tests (make test runs
# the Node SDK tests with it as well when the node on PATH is another major
# version): Debian 12's own nodejs 18 is what a fresh Debian 12 gets, while a
# machine may come with a newer node preinstalled, and the tests must pass on
# both.
#
#   - the node on PATH, when it is Node 18;
#   - otherwise Debian 12's nodejs and libnode108 packages, downloaded with
#     apt-get download (no install: the node on PATH stays as it is) and
#     unpacked into $NODE18_DIR (default build-node18/), with a wrapper that
#     finds its libnode; the shared libraries libnode needs are installed as
#     Debian packages when missing (they do not touch the installed node).
#
# Exits non-zero, saying why on stderr, when no Node 18 can be had.
set -euo pipefail

cd "$(dirname "$0")/.."
. scripts/debian.sh
DIR=${NODE18_DIR:-$PWD/build-node18}
LIB_PKGS=(libuv1 libc-ares2 libnghttp2-14 libbrotli1 libicu72 zlib1g libstdc++6)

log()
{
    printf 'node18: %s\n' "$*" >&2
}

major()
{
    "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0
}

if command -v node >/dev/null 2>&1 && [ "$(major node)" = 18 ]; then
    command -v node
    exit 0
fi
if [ -x "$DIR/bin/node" ] && [ "$(major "$DIR/bin/node")" = 18 ]; then
    echo "$DIR/bin/node"
    exit 0
fi

root_cmd || { log "not root and no sudo: cannot fetch Debian's nodejs 18"; exit 1; }

# the newest nodejs 18 that Debian offers, from its package lists
version()
{
    apt-cache madison nodejs 2>/dev/null | awk -F'|' '$2 ~ /^ *18\./ {gsub(/ /, "", $2); print $2; exit}'
}
v=$(version)
if [ -z "$v" ]; then
    "${AS_ROOT[@]}" apt-get update -q >/dev/null
    v=$(version)
fi
[ -n "$v" ] || { log "Debian offers no nodejs 18 (apt-cache madison nodejs)"; exit 1; }

missing_pkgs "${LIB_PKGS[@]}"
if [ "${#MISSING[@]}" -gt 0 ]; then
    log "installing ${MISSING[*]} (libraries libnode needs)"
    "${AS_ROOT[@]}" apt-get update -q >/dev/null
    "${AS_ROOT[@]}" apt-get install -y -q --no-install-recommends "${MISSING[@]}" >/dev/null
fi

log "fetching Debian's nodejs $v into $DIR"
rm -rf "$DIR"
mkdir -p "$DIR/debs" "$DIR/root" "$DIR/bin"
(cd "$DIR/debs" && apt-get download -q "nodejs=$v" "libnode108=$v" >/dev/null 2>&1) || {
    log "apt-get download nodejs=$v libnode108=$v failed"
    exit 1
}
for deb in "$DIR"/debs/*.deb; do
    dpkg-deb -x "$deb" "$DIR/root"
done
cat >"$DIR/bin/node" <<EOF
#!/bin/sh
LD_LIBRARY_PATH=$DIR/root/usr/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH} exec $DIR/root/usr/bin/node "\$@"
EOF
chmod +x "$DIR/bin/node"
if [ "$(major "$DIR/bin/node")" != 18 ]; then
    log "the unpacked node does not run: $("$DIR/bin/node" --version 2>&1 | head -c 300)"
    exit 1
fi
echo "$DIR/bin/node"
