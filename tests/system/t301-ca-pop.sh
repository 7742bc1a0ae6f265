#!/usr/bin/env bash
# CA certificates with proof of possession (provd's admin API at /certificates, in
# DPS's ARM shapes), driven by provctl and curl with certificates made by the openssl
# CLI: upload, verification code, a verification certificate with CN=code signed by
# the CA's key, verify; and the refusals (wrong CN, wrong key, missing If-Match,
# non-CA upload, delete while a group references the CA), each with its status and
# a DPS error body. Also the service API's X.509 rules that need the CA store.
. "$(dirname "$0")/lib/lib.sh"
lib_init 127.0.0.31 t301

PROVCTL=$PROVD_BUILD_DIR/src/cli/provctl
CT='Content-Type: application/json; charset=utf-8'
# DER order O then CN: the .NET-style subject reads "CN=..., O=..."
ROOT_SUBJ='/O=provd tests/CN=provd t301 root CA'

# ctl ARGS...: provctl as the owner; stdout in $T/out, stderr in $T/err, status in CTL_RC.
ctl()
{
    CTL_RC=0
    PROVD_CA_FILE=$CA \
        PROVD_CONNECTION_STRING="HostName=$IP;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=$OWNER_KEY" \
        "$PROVCTL" "$@" >"$T/out" 2>"$T/err" || CTL_RC=$?
}

expect_rc()
{
    [ "$CTL_RC" = "$1" ] ||
        fail "provctl exit status $CTL_RC, expected $1; stdout: $(head -c 400 "$T/out"); stderr: $(head -c 400 "$T/err")"
}

q()
{
    printf '%s?api-version=%s' "$1" "$API_SVC"
}

# owner ARGS...: curl as the owner (sets HTTP_STATUS, body in $T/body).
owner()
{
    local method=$1 path=$2
    shift 2
    req "$method" "$(q "$path")" -H "Authorization: $(owner_sas)" "$@"
}

# ca_etag NAME: the certificate's current etag (from GET), or "".
ca_etag()
{
    owner GET "/certificates/$1"
    [ "$HTTP_STATUS" = 200 ] && json_get etag
}

# cert_json FILE: {"certificate": "<PEM of FILE>"}
cert_json()
{
    "$PY" -I -S -c 'import json,sys; print(json.dumps({"certificate": open(sys.argv[1]).read()}))' "$1"
}

# make_ca NAME SUBJECT: a self-signed CA ($T/pki/NAME.pem, NAME.key).
make_ca()
{
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$T/pki/$1.key" -out "$T/pki/$1.pem" -days 30 -subj "$2" \
        -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}

# sign_cert CN ISSUER OUT [EXTFILE]: a certificate for a fresh key with subject CN,
# signed by $T/pki/ISSUER.key, issuer $T/pki/ISSUER.pem's subject.
sign_cert()
{
    local cn=$1 issuer=$2 out=$3 ext=${4:-}
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$T/pki/$out.key" -out "$T/pki/$out.csr" -subj "/CN=$cn" 2>/dev/null &&
        openssl x509 -req -in "$T/pki/$out.csr" -CA "$T/pki/$issuer.pem" \
            -CAkey "$T/pki/$issuer.key" -set_serial "0x$(openssl rand -hex 8)" -days 1 \
            ${ext:+-extfile "$ext"} -out "$T/pki/$out.pem" 2>/dev/null
}

case_setup()
{
    mkdir -p "$T/pki" || return 1
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' \
        >"$T/pki/leaf.ext"
    make_ca root "$ROOT_SUBJ" || fail "openssl: root CA" || return 1
    # the impostor has the root's name and its own key
    make_ca impostor "$ROOT_SUBJ" || fail "openssl: impostor CA" || return 1
    make_ca other '/CN=provd t301 other CA' || fail "openssl: other CA" || return 1
    sign_cert t301-dev-1 root leaf "$T/pki/leaf.ext" || fail "openssl: leaf" || return 1
    ROOT_SHA1=$(openssl x509 -in "$T/pki/root.pem" -noout -fingerprint -sha1 | sed 's/^.*=//; s/://g')
    [ ${#ROOT_SHA1} -eq 40 ] || fail "cannot read the root's SHA-1 fingerprint" || return 1
    # control: the owner sees an empty CA store
    ctl ca list
    expect_rc 0 || return 1
    grep -qx '0 CA certificates' "$T/out" || fail "ca list: $(cat "$T/out")"
}

case_upload()
{
    local rc=0
    ctl ca upload root --cert "$T/pki/root.pem"
    expect_rc 0 || return 1
    grep -q '^ca root: unverified, subject CN=provd t301 root CA, O=provd tests$' "$T/out" ||
        fail "upload output: $(cat "$T/out")" || rc=1
    owner GET /certificates/root
    [ "$HTTP_STATUS" = 200 ] || { fail "GET: HTTP $HTTP_STATUS $(body | head -c 300)"; return 1; }
    [ "$(json_get name)" = root ] || { fail "name: $(body | head -c 300)"; rc=1; }
    [ "$(json_get type)" = Microsoft.Devices/ProvisioningServices/Certificates ] ||
        { fail "type: $(json_get type)"; rc=1; }
    [ "$(json_get properties.isVerified)" = false ] || { fail "isVerified: $(body)"; rc=1; }
    [ "$(json_get properties.thumbprint)" = "$ROOT_SHA1" ] ||
        { fail "thumbprint $(json_get properties.thumbprint), openssl says $ROOT_SHA1"; rc=1; }
    [[ "$(json_get properties.expiry)" =~ ^(Mon|Tue|Wed|Thu|Fri|Sat|Sun),\ [0-9]{2}\ [A-Z][a-z]{2}\ [0-9]{4}\ [0-9]{2}:[0-9]{2}:[0-9]{2}\ GMT$ ]] ||
        { fail "expiry is not RFC 1123: $(json_get properties.expiry)"; rc=1; }
    [ "$(json_get properties.certificate | base64 -d | openssl x509 -inform DER -noout -fingerprint -sha1 2>/dev/null | sed 's/^.*=//; s/://g')" = "$ROOT_SHA1" ] ||
        { fail "properties.certificate is not the base64 DER of the upload"; rc=1; }
    [ "\"$(json_get etag)\"" = "$(header ETag)" ] ||
        { fail "etag $(json_get etag) vs ETag header $(header ETag)"; rc=1; }
    return $rc
}

case_code()
{
    ctl ca code root
    expect_rc 0 || return 1
    CODE=$(cat "$T/out")
    [[ "$CODE" =~ ^[0-9A-F]{64}$ ]] || fail "code is not 64 upper-case hex digits: '$CODE'" || return 1
    owner GET /certificates/root
    [ "$(json_get properties.verificationCode)" = null ] ||
        fail "GET shows the verification code: $(body | head -c 300)"
}

case_missing_if_match()
{
    local rc=0 e
    e=$(ca_etag root)
    [ -n "$e" ] || { fail "no etag"; return 1; }
    sign_cert "$CODE" root proof || { fail "openssl: proof"; return 1; }
    expect_error 412 POST "$(q /certificates/root/verify)" -H "Authorization: $(owner_sas)" \
        -H "$CT" --data-binary "$(cert_json "$T/pki/proof.pem")" || rc=1
    [ "$(json_get errorCode)" = 412002 ] || { fail "errorCode $(json_get errorCode)"; rc=1; }
    grep -q 'If-Match is required' "$T/body" || { fail "message: $(body)"; rc=1; }
    expect_error 412 POST "$(q /certificates/root/generateVerificationCode)" \
        -H "Authorization: $(owner_sas)" || rc=1
    expect_error 412 DELETE "$(q /certificates/root)" -H "Authorization: $(owner_sas)" || rc=1
    expect_error 412 PUT "$(q /certificates/root)" -H "Authorization: $(owner_sas)" -H "$CT" \
        --data-binary "$(cert_json "$T/pki/root.pem")" || rc=1
    # a stale etag is 412 as well
    expect_error 412 POST "$(q /certificates/root/verify)" -H "Authorization: $(owner_sas)" \
        -H 'If-Match: "00000000-0000-4000-8000-000000000000"' -H "$CT" \
        --data-binary "$(cert_json "$T/pki/proof.pem")" || rc=1
    [ "$(json_get errorCode)" = 412001 ] || { fail "stale etag: errorCode $(json_get errorCode)"; rc=1; }
    return $rc
}

case_wrong_cn()
{
    local rc=0 e
    sign_cert "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF" root wrongcn ||
        { fail "openssl"; return 1; }
    e=$(ca_etag root)
    expect_error 400 POST "$(q /certificates/root/verify)" -H "Authorization: $(owner_sas)" \
        -H "If-Match: \"$e\"" -H "$CT" --data-binary "$(cert_json "$T/pki/wrongcn.pem")" || rc=1
    [ "$(json_get errorCode)" = 400010 ] || { fail "errorCode $(json_get errorCode)"; rc=1; }
    grep -q 'subject CN' "$T/body" || { fail "message: $(body)"; rc=1; }
    ctl ca verify root --cert "$T/pki/wrongcn.pem"
    expect_rc 1 || rc=1
    grep -q '^provctl: 400 400010: ' "$T/err" || { fail "stderr: $(cat "$T/err")"; rc=1; }
    owner GET /certificates/root
    [ "$(json_get properties.isVerified)" = false ] || { fail "verified by a wrong CN"; rc=1; }
    return $rc
}

case_wrong_key()
{
    local rc=0 e
    sign_cert "$CODE" impostor wrongkey || { fail "openssl"; return 1; }
    e=$(ca_etag root)
    expect_error 400 POST "$(q /certificates/root/verify)" -H "Authorization: $(owner_sas)" \
        -H "If-Match: \"$e\"" -H "$CT" --data-binary "$(cert_json "$T/pki/wrongkey.pem")" || rc=1
    grep -q 'not signed by' "$T/body" || { fail "message: $(body)"; rc=1; }
    owner GET /certificates/root
    [ "$(json_get properties.isVerified)" = false ] || { fail "verified by the wrong key"; rc=1; }
    return $rc
}

case_verify()
{
    local rc=0
    ctl ca verify root --cert "$T/pki/proof.pem"
    expect_rc 0 || return 1
    grep -q '^ca root: verified' "$T/out" || { fail "verify output: $(cat "$T/out")"; rc=1; }
    owner GET /certificates/root
    [ "$(json_get properties.isVerified)" = true ] || { fail "GET: $(body | head -c 300)"; rc=1; }
    # the code is spent
    ctl ca verify root --cert "$T/pki/proof.pem"
    expect_rc 1 || rc=1
    grep -q 'generateVerificationCode' "$T/err" || { fail "stderr: $(cat "$T/err")"; rc=1; }
    return $rc
}

case_non_ca_upload()
{
    local rc=0
    expect_error 400 PUT "$(q /certificates/leaf)" -H "Authorization: $(owner_sas)" -H "$CT" \
        --data-binary "$(cert_json "$T/pki/leaf.pem")" || rc=1
    grep -q 'not a CA certificate' "$T/body" || { fail "message: $(body)"; rc=1; }
    ctl ca upload leaf --cert "$T/pki/leaf.pem"
    expect_rc 1 || rc=1
    grep -q '^provctl: 400 400004: the certificate is not a CA certificate' "$T/err" ||
        { fail "stderr: $(cat "$T/err")"; rc=1; }
    # a key file never leaves the client
    ctl ca upload leaf --cert "$T/pki/leaf.key"
    expect_rc 2 || rc=1
    grep -q 'private key' "$T/err" || { fail "stderr: $(cat "$T/err")"; rc=1; }
    return $rc
}

case_rights_and_paths()
{
    local rc=0
    expect_error 401 GET "$(q /certificates)" \
        -H "Authorization: $(service_sas readonly "$READ_KEY")" || rc=1
    expect_error 401 GET "$(q /certificates/root)" || rc=1
    expect_error 400 PUT "$(q '/certificates/bad%20name')" -H "Authorization: $(owner_sas)" \
        -H "$CT" --data-binary "$(cert_json "$T/pki/other.pem")" || rc=1
    expect_error 404 GET "$(q /certificates/nosuch)" -H "Authorization: $(owner_sas)" || rc=1
    expect_error 405 POST "$(q /certificates)" -H "Authorization: $(owner_sas)" || rc=1
    # the ARM-shaped prefix reaches the same store
    owner GET /subscriptions/s1/resourceGroups/rg1/providers/Microsoft.Devices/provisioningServices/dps1/certificates/root
    [ "$HTTP_STATUS" = 200 ] && [ "$(json_get properties.isVerified)" = true ] ||
        { fail "ARM path: HTTP $HTTP_STATUS $(body | head -c 300)"; rc=1; }
    return $rc
}

case_verified_upload()
{
    ctl ca upload other --cert "$T/pki/other.pem" --verified
    expect_rc 0 || return 1
    grep -q '^ca other: verified' "$T/out" || fail "output: $(cat "$T/out")" || return 1
    ctl ca list
    expect_rc 0 || return 1
    grep -q '^2 CA certificates$' "$T/out" || fail "list: $(cat "$T/out")"
}

case_delete_referenced()
{
    local rc=0 e
    ctl group create t301-grp --ca-ref nosuch
    expect_rc 1 || rc=1
    grep -q "unknown CA certificate 'nosuch'" "$T/err" || { fail "stderr: $(cat "$T/err")"; rc=1; }
    ctl group create t301-grp --ca-ref root
    expect_rc 0 || return 1
    grep -q '  ca reference: root' "$T/out" || { fail "group output: $(cat "$T/out")"; rc=1; }
    e=$(ca_etag root)
    expect_error 409 DELETE "$(q /certificates/root)" -H "Authorization: $(owner_sas)" \
        -H "If-Match: \"$e\"" || rc=1
    [ "$(json_get errorCode)" = 409003 ] || { fail "errorCode $(json_get errorCode)"; rc=1; }
    grep -q "t301-grp" "$T/body" || { fail "the message does not name the group: $(body)"; rc=1; }
    ctl ca delete root
    expect_rc 1 || rc=1
    grep -q "^provctl: 409 409003: .*'t301-grp'" "$T/err" || { fail "stderr: $(cat "$T/err")"; rc=1; }
    ctl group delete t301-grp
    expect_rc 0 || return 1
    ctl ca delete root
    expect_rc 0 || return 1
    grep -qx 'deleted ca root' "$T/out" || { fail "output: $(cat "$T/out")"; rc=1; }
    expect_error 404 GET "$(q /certificates/root)" -H "Authorization: $(owner_sas)" || rc=1
    [ "$(json_get errorCode)" = 404206 ] || { fail "errorCode $(json_get errorCode)"; rc=1; }
    return $rc
}

case_x509_enrollments()
{
    local rc=0 sha256
    sha256=$(openssl x509 -in "$T/pki/leaf.pem" -noout -fingerprint -sha256 | sed 's/^.*=//; s/://g')
    ctl enrollment create t301-dev-1 --x509 --cert "$T/pki/leaf.pem"
    expect_rc 0 || return 1
    grep -q "^  primary certificate: CN=t301-dev-1, sha256 $sha256, expires " "$T/out" ||
        { fail "create output: $(cat "$T/out")"; rc=1; }
    # the same certificate, or its thumbprint, in a second enrollment: 409
    ctl enrollment create t301-dev-2 --cert "$T/pki/leaf.pem"
    expect_rc 1 || rc=1
    grep -q "^provctl: 409 409002: .*'t301-dev-1'" "$T/err" || { fail "stderr: $(cat "$T/err")"; rc=1; }
    ctl enrollment create t301-dev-2 --thumbprint "$sha256"
    expect_rc 1 || rc=1
    # an update that leaves the certificate alone keeps it (info-only round trip)
    ctl enrollment update t301-dev-1 --disabled
    expect_rc 0 || return 1
    # (the update would be 400 had the server not kept it; the unit tests check the store)
    ctl --json enrollment show t301-dev-1
    expect_rc 0 || return 1
    grep -q '"provisioningStatus": "disabled"' "$T/out" || { fail "show: $(head -c 300 "$T/out")"; rc=1; }
    grep -q "\"sha256Thumbprint\": \"$sha256\"" "$T/out" || { fail "show: $(head -c 600 "$T/out")"; rc=1; }
    ctl enrollment create t301-dev-2 --cert "$T/pki/leaf.pem"
    expect_rc 1 || rc=1
    # GET returns info only
    owner GET /enrollments/t301-dev-1
    grep -q 'BEGIN CERTIFICATE' "$T/body" && { fail "GET returns the certificate body"; rc=1; }
    # a leaf cannot be a group's signing certificate
    ctl group create t301-grp2 --signing-cert "$T/pki/leaf.pem"
    expect_rc 1 || rc=1
    grep -q 'not a CA certificate' "$T/err" || { fail "stderr: $(cat "$T/err")"; rc=1; }
    return $rc
}

add_case "setup: CAs and a leaf made with openssl; empty CA store" case_setup
add_case "provctl ca upload; GET shape (RFC 1123 expiry, SHA-1 thumbprint, base64 DER)" case_upload
add_case "provctl ca code: 64 hex digits, not shown by GET" case_code
add_case "verify, code, delete, replace without If-Match -> 412 (412002); stale -> 412001" case_missing_if_match
add_case "verification certificate with the wrong CN -> 400 (400010), still unverified" case_wrong_cn
add_case "verification certificate signed by another key -> 400, still unverified" case_wrong_key
add_case "provctl ca verify with CN=code signed by the CA -> verified; the code is spent" case_verify
add_case "non-CA upload -> 400 (400004); a key file is refused by provctl" case_non_ca_upload
add_case "rights (ServiceConfig), bad name, unknown, wrong method; ARM prefix" case_rights_and_paths
add_case "upload --verified; ca list" case_verified_upload
add_case "delete while a group references the CA -> 409 (409003) naming it" case_delete_referenced
add_case "X.509 enrollments: one certificate per enrollment (409002), kept on update" case_x509_enrollments
run_cases
