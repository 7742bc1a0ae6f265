#!/usr/bin/env bash
# X.509 device attestation with bad certificates, driven by curl and openssl
# s_client with TLS client certificates. Each refusal must be a 401 with a DPS
# error body whose message names the chain element and the reason, and must
# leave the store unchanged. Positive controls first (a device of each kind of
# enrollment registers), so that a refusal cannot pass because the test's own
# certificates or enrollments were wrong.
. "$(dirname "$0")/lib/lib.sh"
. "$(dirname "$0")/lib/pki.sh"
lib_init 127.0.0.104 t104

PKI=$T/pki

reg_path()
{
    printf '/%s/registrations/%s/register?api-version=%s' "$SCOPE" "$1" "$API_DEV"
}

# x509_args NAME: curl arguments presenting certificate NAME (with its chain) and its key.
x509_args()
{
    X509_ARGS=(--cert "$PKI/$1.chain.pem" --key "$PKI/$1.key")
}

# json_pem NAME: the PEM of certificate NAME as a JSON string.
json_pem()
{
    pki_json_pem "$1"
}

# service_req METHOD PATH [BODY] [curl args]: a service/admin request as the owner.
service_req()
{
    local method=$1 path=$2 data=${3:-}
    shift 3 2>/dev/null || shift $#
    local extra=()
    [ -z "$data" ] || extra=(-H 'Content-Type: application/json; charset=utf-8' --data-binary "$data")
    req "$method" "$path" -H "Authorization: $(owner_sas)" "${extra[@]}" "$@"
}

put_ok()
{
    # put_ok PATH JSON: PUT as the owner, must be 200 or 201
    service_put "$1" "$2"
    case "$HTTP_STATUS" in
    200 | 201) return 0 ;;
    *) fail "PUT $1: HTTP $HTTP_STATUS: $(body | head -c 600)"; return 1 ;;
    esac
}

# entity_json IDFIELD ID STATUS X509: an enrollment (IDFIELD registrationId) or a
# group (enrollmentGroupId) with X.509 attestation X509 (a JSON object).
entity_json()
{
    printf '{"%s":"%s","provisioningStatus":"%s","attestation":{"type":"x509","x509":%s}}' \
        "$1" "$2" "$3" "$4"
}

# individual_json REGID CERTNAME STATUS: an individual enrollment pinning CERTNAME.
individual_json()
{
    entity_json registrationId "$1" "$3" \
        "{\"clientCertificates\":{\"primary\":{\"certificate\":$(json_pem "$2")}}}"
}

# group_signing_json GROUPID CERTNAME STATUS: a group holding CA certificate CERTNAME.
group_signing_json()
{
    entity_json enrollmentGroupId "$1" "$3" \
        "{\"signingCertificates\":{\"primary\":{\"certificate\":$(json_pem "$2")}}}"
}

# group_ref_json GROUPID CANAME STATUS: a group referencing uploaded CA certificate CANAME.
group_ref_json()
{
    entity_json enrollmentGroupId "$1" "$3" "{\"caReferences\":{\"primary\":\"$2\"}}"
}

# register_x509 CERTNAME REGID [curl args]: PUT .../register with the certificate
# (202) then poll with the same certificate until assigned. Leaves the last
# answer in $T/body.
register_x509()
{
    local cert=$1 regid=$2 op i status
    shift 2
    x509_args "$cert"
    X509_ARGS+=("$@")
    expect_status 202 PUT "$(reg_path "$regid")" "${X509_ARGS[@]}" \
        -H 'Content-Type: application/json; charset=utf-8' \
        --data-binary "{\"registrationId\":\"$regid\"}" || return 1
    op=$(json_get operationId) || { fail "no JSON body: $(body | head -c 300)"; return 1; }
    [ -n "$op" ] || { fail "empty operationId: $(body | head -c 300)"; return 1; }
    for ((i = 0; i < 40; i++)); do
        req GET "/$SCOPE/registrations/$regid/operations/$op?api-version=$API_DEV" "${X509_ARGS[@]}"
        status=$(json_get status 2>/dev/null)
        [ "$HTTP_STATUS" = 202 ] || break
        sleep 0.25
    done
    if [ "$HTTP_STATUS" != 200 ] || [ "$status" != assigned ]; then
        fail "poll for $regid: HTTP $HTTP_STATUS status '$status': $(body | head -c 600)"
        return 1
    fi
    LAST_OP=$op
    return 0
}

# refused CERTNAME REGID SUBSTRING...: the register request is refused with 401,
# a DPS error body whose message contains every SUBSTRING, and no store change.
refused()
{
    local cert=$1 regid=$2 msg s rc=0
    shift 2
    x509_args "$cert"
    expect_error 401 PUT "$(reg_path "$regid")" "${X509_ARGS[@]}" \
        -H 'Content-Type: application/json; charset=utf-8' \
        --data-binary "{\"registrationId\":\"$regid\"}" || rc=1
    msg=$(json_get message 2>/dev/null)
    for s in "$@"; do
        case "$msg" in
        *"$s"*) ;;
        *) fail "message '$msg' does not contain '$s'"; rc=1 ;;
        esac
    done
    [ $rc -eq 0 ] || return 1
    # and the device has no registration record
    req GET "/registrations/$regid?api-version=$API_SVC" -H "Authorization: $(owner_sas)"
    if [ "$HTTP_STATUS" != 404 ]; then
        fail "registration record of $regid: HTTP $HTTP_STATUS, expected 404: $(body | head -c 300)"
        return 1
    fi
}

# upload_ca NAME CERTNAME [VERIFIED]: PUT /certificates/NAME; sets CA_ETAG.
upload_ca()
{
    local verified=
    [ -z "${3:-}" ] || verified=',"isVerified":true'
    service_req PUT "/certificates/$1?api-version=$API_SVC" \
        "{\"certificate\":$(json_pem "$2")$verified}"
    case "$HTTP_STATUS" in
    200 | 201) ;;
    *) fail "PUT /certificates/$1: HTTP $HTTP_STATUS: $(body | head -c 600)"; return 1 ;;
    esac
    CA_ETAG=$(header ETag)
    [ -n "$CA_ETAG" ] || { fail "PUT /certificates/$1: no ETag header"; return 1; }
}

# prove_ca NAME CERTNAME: proof of possession for an uploaded CA (code, then a
# certificate with CN = code signed by the CA's key).
prove_ca()
{
    local name=$1 ca=$2 code
    service_req POST "/certificates/$name/generateVerificationCode?api-version=$API_SVC" "" \
        -H "If-Match: $CA_ETAG"
    if [ "$HTTP_STATUS" != 200 ]; then
        fail "generateVerificationCode: HTTP $HTTP_STATUS: $(body | head -c 600)"
        return 1
    fi
    code=$(json_get properties.verificationCode)
    if [ -z "$code" ] || [ "$code" = null ]; then
        fail "no verificationCode: $(body | head -c 600)"
        return 1
    fi
    CA_ETAG=$(header ETag)
    pki_leaf "pop-$name" "$ca" "$code" || { fail "cannot make the verification certificate"; return 1; }
    service_req POST "/certificates/$name/verify?api-version=$API_SVC" \
        "{\"certificate\":$(json_pem "pop-$name")}" -H "If-Match: $CA_ETAG"
    [ "$HTTP_STATUS" = 200 ] || { fail "verify: HTTP $HTTP_STATUS: $(body | head -c 600)"; return 1; }
    [ "$(json_get properties.isVerified)" = true ] ||
        { fail "not verified after verify: $(body | head -c 600)"; return 1; }
}

# ---- cases ----------------------------------------------------------------

case_setup()
{
    pki_init "$PKI" || { fail "pki_init"; return 1; }
    if ! {
        # A: root -> intermediate -> leaves; group g-root-a trusts the root
        pki_root rootA "t104 Root A" && pki_ca intA rootA "t104 Intermediate A" &&
            pki_leaf dev-ok intA dev-ok &&
            pki_leaf dev-ind intA dev-ind &&
            pki_leaf dev-ind-off intA dev-ind-off &&
            pki_leaf dev-pin intA dev-pin &&
            pki_leaf dev-pin-other intA dev-pin &&
            pki_leaf dev-cn-other intA dev-cn-other &&
            PKI_VALIDITY=expired pki_leaf dev-expired intA dev-expired &&
            PKI_VALIDITY=future pki_leaf dev-future intA dev-future &&
            PKI_VALIDITY=expired pki_leaf dev-ind-expired intA dev-ind-expired &&
            pki_notca notcaA rootA "t104 Not a CA" &&
            pki_leaf dev-notca notcaA dev-notca &&
            # X: an unrelated root nobody trusts
            pki_root rootX "t104 Unrelated Root" &&
            pki_leaf dev-unknown rootX dev-unknown &&
            pki_leaf dev-ind-off-other rootX dev-ind-off &&
            # V: a CA referenced by a group and verified by proof of possession (RSA)
            PKI_KEY=rsa pki_root rootV "t104 Verified Root" &&
            pki_leaf dev-ver rootV dev-ver &&
            # U: a CA referenced by a group but never verified
            pki_root rootU "t104 Unverified Root" &&
            pki_leaf dev-unverified rootU dev-unverified &&
            # D: a disabled group
            pki_root rootD "t104 Disabled Root" &&
            pki_leaf dev-grpoff rootD dev-grpoff
    }; then
        fail "test PKI generation failed"
        return 1
    fi

    put_ok /enrollmentGroups/g-root-a "$(group_signing_json g-root-a rootA enabled)" &&
        put_ok /enrollmentGroups/g-off "$(group_signing_json g-off rootD disabled)" &&
        put_ok /enrollments/dev-ind "$(individual_json dev-ind dev-ind enabled)" &&
        put_ok /enrollments/dev-ind-off "$(individual_json dev-ind-off dev-ind-off disabled)" &&
        put_ok /enrollments/dev-pin "$(individual_json dev-pin dev-pin enabled)" &&
        put_ok /enrollments/dev-ind-expired \
            "$(individual_json dev-ind-expired dev-ind-expired enabled)" || return 1
    upload_ca ca-v rootV || return 1
    prove_ca ca-v rootV || return 1
    upload_ca ca-u rootU || return 1
    put_ok /enrollmentGroups/g-ver "$(group_ref_json g-ver ca-v enabled)" &&
        put_ok /enrollmentGroups/g-unverified "$(group_ref_json g-unverified ca-u enabled)"
}

case_control_group()
{
    register_x509 dev-ok dev-ok || return 1
    [ "$(json_get registrationState.x509.enrollmentGroupId)" = g-root-a ] ||
        fail "enrollmentGroupId: $(body | head -c 800)"
}

case_control_individual()
{
    register_x509 dev-ind dev-ind || return 1
    local tp
    tp=$(pki_sha256 dev-ind)
    [ "$(json_get registrationState.x509.certificateInfo.sha256Thumbprint | tr a-f A-F)" = "$tp" ] ||
        fail "sha256Thumbprint is not $tp: $(body | head -c 800)"
}

case_control_verified_ca()
{
    register_x509 dev-ver dev-ver || return 1
    [ "$(json_get registrationState.x509.enrollmentGroupId)" = g-ver ] ||
        fail "enrollmentGroupId: $(body | head -c 800)"
}

case_poll_other_device()
{
    # the operation of dev-ok polled with another device's certificate
    register_x509 dev-ok dev-ok || return 1
    x509_args dev-ver
    expect_error 401 GET "/$SCOPE/registrations/dev-ok/operations/$LAST_OP?api-version=$API_DEV" \
        "${X509_ARGS[@]}"
}

case_unknown_ca()
{
    refused dev-unknown dev-unknown "certificate 0 (CN=dev-unknown)" "unknown CA"
}

case_expired()
{
    refused dev-expired dev-expired "certificate 0 (CN=dev-expired)" "expired"
}

case_future()
{
    refused dev-future dev-future "certificate 0 (CN=dev-future)" "not yet valid"
}

case_ind_expired()
{
    refused dev-ind-expired dev-ind-expired "certificate 0 (CN=dev-ind-expired)" "expired"
}

case_cn_mismatch()
{
    refused dev-cn-other dev-cn "certificate 0 (CN=dev-cn-other)" \
        "subject CN does not match registration id"
}

case_not_ca()
{
    refused dev-notca dev-notca "certificate 1 (CN=t104 Not a CA)" "not a CA"
}

case_unverified()
{
    refused dev-unverified dev-unverified "certificate 0 (CN=dev-unverified)" "ca-u" "unverified CA"
}

case_wrong_pinned_leaf()
{
    # same CN and issuer as the pinned certificate, but another certificate: the
    # individual enrollment decides alone, even though group g-root-a trusts the issuer
    refused dev-pin-other dev-pin "certificate 0 (CN=dev-pin)" \
        "not the certificate of the individual enrollment"
}

case_ind_disabled()
{
    refused dev-ind-off dev-ind-off "enrollment is disabled"
}

case_ind_disabled_wrong_cert()
{
    # "disabled" is told only to the device that proved it holds the enrolled
    # certificate; anybody can make a certificate with that CN
    refused dev-ind-off-other dev-ind-off "certificate 0 (CN=dev-ind-off)" \
        "not the certificate of the individual enrollment" || return 1
    case "$(json_get message)" in
    *disabled*) fail "the refusal tells a stranger the enrollment is disabled: $(body)"; return 1 ;;
    esac
}

case_group_disabled()
{
    refused dev-grpoff dev-grpoff "enrollment group is disabled"
}

case_no_credentials()
{
    expect_error 401 PUT "$(reg_path dev-ok)" -H 'Content-Type: application/json; charset=utf-8' \
        --data-binary '{"registrationId":"dev-ok"}'
}

case_leaf_without_chain()
{
    # dev-ok's leaf alone: nothing links it to the root that g-root-a trusts
    expect_error 401 PUT "$(reg_path dev-ok)" --cert "$PKI/dev-ok.pem" --key "$PKI/dev-ok.key" \
        -H 'Content-Type: application/json; charset=utf-8' --data-binary '{"registrationId":"dev-ok"}'
}

case_tls_curl()
{
    register_x509 dev-ok dev-ok --tls-max 1.2 || return 1
    register_x509 dev-ok dev-ok --tlsv1.3 || return 1
}

# s_client_register VERSION CERTNAME REGID [s_client args]: a raw HTTP/1.1
# register request over openssl s_client pinned to one TLS version (tls1_2 or
# tls1_3), presenting CERTNAME and intermediate A. Sets HTTP_STATUS and SC_PROTO (the negotiated
# version); the answer's headers and body go to $T/headers and $T/body, as req does.
s_client_register()
{
    local v=$1 cert=$2 regid=$3 bodytxt
    shift 3
    bodytxt="{\"registrationId\":\"$regid\"}"
    printf 'PUT %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
        "$(reg_path "$regid")" "$IP" "${#bodytxt}" "$bodytxt" |
        timeout 20 openssl s_client -connect "$IP:443" "-$v" -CAfile "$CA" -verify_return_error \
            -cert "$PKI/$cert.pem" -cert_chain "$PKI/intA.pem" -key "$PKI/$cert.key" \
            -brief -ign_eof "$@" >"$T/sc.out" 2>"$T/sc.err"
    SC_PROTO=$(sed -n 's/^Protocol version: *//p' "$T/sc.err" | head -n 1)
    HTTP_STATUS=$(head -n 1 "$T/sc.out" | sed -n 's/^HTTP\/1\.1 \([0-9][0-9][0-9]\) .*/\1/p')
    [ -n "$HTTP_STATUS" ] || HTTP_STATUS=000
    # headers up to the first empty line, the body after it
    awk '{ sub(/\r$/, "") } !done && $0 == "" { done = 1; next } !done { print }' "$T/sc.out" >"$T/headers"
    awk '{ sub(/\r$/, "") } done { print } !done && $0 == "" { done = 1 }' "$T/sc.out" >"$T/body"
}

case_tls_versions_s_client()
{
    local v rc=0
    for v in tls1_2 tls1_3; do
        s_client_register "$v" dev-ok dev-ok
        case "$v:$SC_PROTO" in
        tls1_2:TLSv1.2 | tls1_3:TLSv1.3) ;;
        *) fail "-$v negotiated '$SC_PROTO': $(head -c 400 "$T/sc.err")"; rc=1 ;;
        esac
        if [ "$HTTP_STATUS" != 202 ] || [ "$(json_get status 2>/dev/null)" != assigning ]; then
            fail "-$v: HTTP $HTTP_STATUS: $(head -c 600 "$T/sc.out")"
            rc=1
        fi
    done
    return $rc
}

case_tls_resumption()
{
    # Clients resume sessions (Node's https agent caches them). A resumed
    # handshake carries no certificates, so the server must either refuse
    # resumption (full handshake) or still know the whole chain; the device
    # relies on its intermediate (group g-root-a trusts the root only).
    local v rc=0
    for v in tls1_2 tls1_3; do
        rm -f "$T/sess"
        s_client_register "$v" dev-ok dev-ok -sess_out "$T/sess"
        if [ "$HTTP_STATUS" != 202 ]; then
            fail "-$v first connection: HTTP $HTTP_STATUS: $(head -c 300 "$T/sc.err")"
            rc=1
            continue
        fi
        # a server that offers no resumable session is fine: nothing to resume
        [ -s "$T/sess" ] || continue
        s_client_register "$v" dev-ok dev-ok -sess_in "$T/sess"
        if [ "$HTTP_STATUS" != 202 ] || [ "$(json_get status 2>/dev/null)" != assigning ]; then
            fail "-$v resumed connection: HTTP $HTTP_STATUS: $(head -c 300 "$T/sc.out")" \
                "$(grep -a -i 'error\|alert' "$T/sc.err" | head -c 300)"
            rc=1
        fi
    done
    return $rc
}

case_tls_versions_refusal()
{
    # a refusal is the same over TLS 1.2 and 1.3 (the certificate is read after either handshake)
    local v rc=0 before after
    for v in tls1_2 tls1_3; do
        before=$(db_snapshot)
        s_client_register "$v" dev-cn-other dev-cn
        after=$(db_snapshot)
        [ "$SC_PROTO" = "TLSv1.${v#tls1_}" ] || { fail "-$v negotiated '$SC_PROTO'"; rc=1; }
        if [ "$HTTP_STATUS" != 401 ]; then
            fail "-$v: HTTP $HTTP_STATUS, expected 401: $(head -c 600 "$T/sc.out")"
            rc=1
            continue
        fi
        check_error_body 401 || rc=1
        case "$(json_get message)" in
        *"subject CN does not match registration id"*) ;;
        *) fail "-$v: message '$(json_get message)'"; rc=1 ;;
        esac
        [ "$before" = "$after" ] || { fail "-$v: store changed"; rc=1; }
    done
    return $rc
}

add_case "setup: X.509 enrollments, CA upload and proof of possession" case_setup
add_case "control: group on the root, device sends leaf + intermediate" case_control_group
add_case "control: individual enrollment, thumbprint in the result" case_control_individual
add_case "control: group on a CA verified by proof of possession" case_control_verified_ca
add_case "curl --tls-max 1.2 and --tlsv1.3: X.509 device registers" case_tls_curl
add_case "TLS 1.2 and 1.3 (openssl s_client): register answered 202" case_tls_versions_s_client
add_case "TLS 1.2 and 1.3: CN mismatch refused alike" case_tls_versions_refusal
add_case "TLS 1.2 and 1.3 session resumed by the client: register answered 202" case_tls_resumption
add_case "poll of an operation with another device's certificate: 401" case_poll_other_device
add_case "unknown CA: 401 naming the leaf and 'unknown CA'" case_unknown_ca
add_case "expired leaf (group): 401 'expired'" case_expired
add_case "not-yet-valid leaf: 401 'not yet valid'" case_future
add_case "expired leaf pinned by an individual enrollment: 401 'expired'" case_ind_expired
add_case "CN differs from the registration id: 401" case_cn_mismatch
add_case "intermediate without the CA flag: 401 naming certificate 1 'not a CA'" case_not_ca
add_case "group on a CA that never passed proof of possession: 401 'unverified CA'" case_unverified
add_case "another leaf than the pinned one (same CN and issuer): 401" case_wrong_pinned_leaf
add_case "disabled individual enrollment: 401 'enrollment is disabled'" case_ind_disabled
add_case "disabled individual enrollment, another certificate with its CN: not told 'disabled'" \
    case_ind_disabled_wrong_cert
add_case "disabled group: 401 'enrollment group is disabled'" case_group_disabled
add_case "no certificate and no Authorization: 401" case_no_credentials
add_case "leaf without its intermediate, group on the root: 401" case_leaf_without_chain

run_cases
