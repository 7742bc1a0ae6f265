# shellcheck shell=bash
# Test PKI for the X.509 system tests, made with the openssl CLI at test time
# (nothing is committed). Every certificate is signed by `openssl ca` so that
# its validity period can be set (-startdate/-enddate), which gives expired
# and not-yet-valid certificates without faking the clock.
#
# Source it and call pki_init DIR first, or run it:
#   bash pki.sh DIR COMMAND ARGS...   (COMMAND is a function name without pki_)
#
# For a certificate NAME the directory holds:
#   NAME.key        its private key (PKCS#8 PEM, unencrypted)
#   NAME.pem        the certificate
#   NAME.chain.pem  the certificate followed by its issuers up to, but not
#                   including, the self-signed root (what a device sends)
# Keys are EC P-256 unless PKI_KEY=rsa (RSA 2048) is set for that call.
#
# Profiles (extensions):
#   root    CA:TRUE (critical), keyCertSign+cRLSign, SKI
#   ca      intermediate: CA:TRUE, pathlen:0, keyCertSign+cRLSign, SKI, AKI
#   notca   an "intermediate" with CA:FALSE but keyCertSign (must not be accepted as an issuer)
#   leaf    CA:FALSE, digitalSignature, extendedKeyUsage clientAuth, SKI, AKI
#
# Validity: PKI_VALIDITY=valid (default: from 1 day ago to 30 days ahead),
# expired (from 30 days ago to 1 day ago) or future (from 10 days to 40 days
# ahead).

PKI_DIR=

pki_init()
{
    PKI_DIR=$1
    mkdir -p "$PKI_DIR/db" || return 1
    [ -f "$PKI_DIR/db/index.txt" ] || : >"$PKI_DIR/db/index.txt"
    # -rand_serial is used, but openssl 3.0 still wants the serial file to be named
    [ -f "$PKI_DIR/db/serial" ] || openssl rand -hex 16 >"$PKI_DIR/db/serial"
    [ -f "$PKI_DIR/db/index.txt.attr" ] || echo 'unique_subject = no' >"$PKI_DIR/db/index.txt.attr"
    [ -f "$PKI_DIR/ca.cnf" ] && return 0
    cat >"$PKI_DIR/ca.cnf" <<EOF
[ca]
default_ca = testca

[testca]
dir = $PKI_DIR/db
database = \$dir/index.txt
serial = \$dir/serial
new_certs_dir = \$dir
default_md = sha256
policy = pol_any
unique_subject = no
copy_extensions = none
email_in_dn = no
preserve = yes

[pol_any]
commonName = supplied
organizationName = optional
organizationalUnitName = optional

[req]
distinguished_name = dn
prompt = no

[dn]
CN = unused

[v3_root]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash

[v3_ca]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[v3_notca]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyCertSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[v3_leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF
}

_pki_fail()
{
    echo "pki.sh: $*" >&2
    return 1
}

# _pki_dates: sets _PKI_START and _PKI_END (GeneralizedTime) from PKI_VALIDITY.
_pki_dates()
{
    local from to
    case "${PKI_VALIDITY:-valid}" in
    valid) from='-1 day' to='+30 days' ;;
    expired) from='-30 days' to='-1 day' ;;
    future) from='+10 days' to='+40 days' ;;
    *) _pki_fail "unknown PKI_VALIDITY '${PKI_VALIDITY}'"; return 1 ;;
    esac
    _PKI_START=$(date -u -d "$from" +%Y%m%d%H%M%SZ) &&
        _PKI_END=$(date -u -d "$to" +%Y%m%d%H%M%SZ)
}

_pki_key()
{
    case "${PKI_KEY:-ec}" in
    ec) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null ;;
    rsa) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null ;;
    *) _pki_fail "unknown PKI_KEY '${PKI_KEY}'" ;;
    esac
}

# CNs go into -subj: / and \ would need escaping there, and no test needs them.
_pki_check_cn()
{
    case "$1" in
    '' | */* | *\\*) _pki_fail "CN '$1' must be non-empty without / or \\" ;;
    *) return 0 ;;
    esac
}

# _pki_issue NAME CN PROFILE ISSUER: ISSUER "" means self-signed.
_pki_issue()
{
    local name=$1 cn=$2 profile=$3 issuer=$4 d=$PKI_DIR
    [ -n "$d" ] || { _pki_fail "pki_init was not called"; return 1; }
    _pki_check_cn "$cn" || return 1
    _pki_dates || return 1
    if [ -n "$issuer" ] && { [ ! -f "$d/$issuer.pem" ] || [ ! -f "$d/$issuer.key" ]; }; then
        _pki_fail "issuer '$issuer' does not exist in $d"
        return 1
    fi
    _pki_key "$d/$name.key" || { _pki_fail "key generation for $name failed"; return 1; }
    openssl req -new -config "$d/ca.cnf" -key "$d/$name.key" -subj "/CN=$cn" \
        -out "$d/$name.csr" 2>"$d/$name.err" ||
        { _pki_fail "req $name: $(cat "$d/$name.err")"; return 1; }
    local sign=(-cert "$d/$issuer.pem" -keyfile "$d/$issuer.key")
    [ -n "$issuer" ] || sign=(-selfsign -keyfile "$d/$name.key")
    openssl ca -batch -notext -config "$d/ca.cnf" -rand_serial "${sign[@]}" \
        -extensions "v3_$profile" -startdate "$_PKI_START" -enddate "$_PKI_END" \
        -in "$d/$name.csr" -out "$d/$name.pem" 2>"$d/$name.err" ||
        { _pki_fail "ca $name: $(cat "$d/$name.err")"; return 1; }
    # the chain a device sends: this certificate, then its issuers below the root
    if [ -n "$issuer" ]; then
        cat "$d/$name.pem" "$d/$issuer.path" >"$d/$name.chain.pem"
    else
        cat "$d/$name.pem" >"$d/$name.chain.pem"
    fi
    # what this certificate contributes to the chains of the certificates it signs
    if [ "$profile" = root ]; then
        : >"$d/$name.path"
    else
        cp "$d/$name.chain.pem" "$d/$name.path"
    fi
    rm -f "$d/$name.csr" "$d/$name.err"
}

# pki_root NAME CN: a self-signed root CA.
pki_root()
{
    _pki_issue "$1" "$2" root ""
}

# pki_ca NAME ISSUER CN: an intermediate CA (pathlen 0) signed by ISSUER.
pki_ca()
{
    _pki_issue "$1" "$3" ca "$2"
}

# pki_notca NAME ISSUER CN: a certificate without the CA flag that is then used
# to sign leaves (keyUsage keyCertSign, so only the basic constraints are wrong).
pki_notca()
{
    _pki_issue "$1" "$3" notca "$2"
}

# pki_leaf NAME ISSUER CN: a device certificate (clientAuth) signed by ISSUER.
pki_leaf()
{
    _pki_issue "$1" "$3" leaf "$2"
}

# pki_sha256 NAME / pki_sha1 NAME: the thumbprint, upper-case hex without colons.
pki_sha256()
{
    openssl x509 -in "$PKI_DIR/$1.pem" -noout -fingerprint -sha256 | sed -e 's/^.*=//' -e 's/://g'
}

pki_sha1()
{
    openssl x509 -in "$PKI_DIR/$1.pem" -noout -fingerprint -sha1 | sed -e 's/^.*=//' -e 's/://g'
}

# pki_json_pem NAME: the certificate as a JSON string (PEM with \n escapes).
pki_json_pem()
{
    awk 'BEGIN { printf "\"" } { printf "%s\\n", $0 } END { printf "\"" }' "$PKI_DIR/$1.pem"
}

# Run as a script: bash pki.sh DIR COMMAND ARGS...
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -u
    if [ $# -lt 2 ]; then
        echo "usage: pki.sh DIR root|ca|notca|leaf|sha256|sha1|json_pem ARGS..." >&2
        exit 2
    fi
    pki_init "$1" || exit 1
    cmd=$2
    shift 2
    case "$cmd" in
    root | ca | notca | leaf | sha256 | sha1 | json_pem) "pki_$cmd" "$@" ;;
    *) echo "pki.sh: unknown command '$cmd'" >&2; exit 2 ;;
    esac
fi
