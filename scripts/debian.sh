# shellcheck shell=bash
# Debian helpers sourced by scripts/install-deps.sh and scripts/node18.sh.

# missing_pkgs PKG...: sets MISSING to those of the packages dpkg has not installed.
missing_pkgs()
{
    local p
    MISSING=()
    for p in "$@"; do
        case "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)" in
        ii*) ;;
        *) MISSING+=("$p") ;;
        esac
    done
}

# root_cmd: sets AS_ROOT to what runs a command as root (root itself or sudo);
# returns 1 when neither is possible.
root_cmd()
{
    if [ "$(id -u)" -eq 0 ]; then
        AS_ROOT=(env DEBIAN_FRONTEND=noninteractive)
    elif command -v sudo >/dev/null 2>&1; then
        AS_ROOT=(sudo env DEBIAN_FRONTEND=noninteractive)
    else
        return 1
    fi
}
