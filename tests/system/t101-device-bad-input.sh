#!/usr/bin/env bash
# Device API (HTTPS) with bad input, driven by curl: each case checks the HTTP
# status, that the body is a DPS error document, and that the store did not change.
. "$(dirname "$0")/lib/lib.sh"
lib_init 127.0.0.101 t101

KEY_OK=$(rand_key 32)
KEY_OFF=$(rand_key 32)
KEY_B=$(rand_key 48)
RID=dev-ok

reg_path()
{
    printf '/%s/registrations/%s/register?api-version=%s' "${2:-$SCOPE}" "$1" "$API_DEV"
}

# register_req REGID AUTH BODY [curl args]: PUT .../register
put_register()
{
    local regid=$1 auth=$2 data=$3
    shift 3
    expect_error_args=(PUT "$(reg_path "$regid")" -H 'Content-Type: application/json; charset=utf-8'
        -H "Authorization: $auth" --data-binary "$data" "$@")
}

# pad_body FILE SIZE: a valid register body for $RID of exactly SIZE bytes.
pad_body()
{
    local head='{"registrationId":"'$RID'","payload":{"pad":"' tail='"}}'
    local n=$(($2 - ${#head} - ${#tail}))
    { printf '%s' "$head"; head -c "$n" /dev/zero | tr '\0' 'a'; printf '%s' "$tail"; } >"$1"
}

enrollment_json()
{
    # enrollment_json REGID KEY STATUS
    printf '{"registrationId":"%s","attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":"%s","secondaryKey":"%s"}},"provisioningStatus":"%s"}' \
        "$1" "$2" "$(rand_key 32)" "$3"
}

case_setup()
{
    local id key st rc=0
    for spec in "dev-ok $KEY_OK enabled" "dev-off $KEY_OFF disabled" "dev-b $KEY_B enabled"; do
        read -r id key st <<<"$spec"
        service_put "/enrollments/$id" "$(enrollment_json "$id" "$key" "$st")"
        if [ "$HTTP_STATUS" != 200 ]; then
            fail "PUT /enrollments/$id: HTTP $HTTP_STATUS: $(body | head -c 600)"
            rc=1
        fi
    done
    [ -s "$DB" ] || { fail "no store at $DB"; rc=1; }
    return $rc
}

# register_wait REGID KEY BODY_OR_@FILE: PUT register (202) then poll until assigned.
register_wait()
{
    local regid=$1 key=$2 op i status
    put_register "$regid" "$(device_sas "$key" "$regid")" "$3"
    expect_status 202 "${expect_error_args[@]}" || return 1
    op=$(json_get operationId) || { fail "no JSON body: $(body | head -c 300)"; return 1; }
    [ "$(json_get status)" = assigning ] || fail "status is not assigning: $(body | head -c 300)"
    [[ "$(header Retry-After)" =~ ^[1-9][0-9]*$ ]] ||
        fail "Retry-After '$(header Retry-After)' is not an integer >= 1"
    [ -n "$op" ] || { fail "empty operationId"; return 1; }
    # poll until assigned, so that later snapshots see a quiet store
    for ((i = 0; i < 40; i++)); do
        req GET "/$SCOPE/registrations/$regid/operations/$op?api-version=$API_DEV" \
            -H "Authorization: $(device_sas "$key" "$regid")"
        status=$(json_get status 2>/dev/null)
        [ "$HTTP_STATUS" = 202 ] || break
        sleep 0.25
    done
    [ "$HTTP_STATUS" = 200 ] && [ "$status" = assigned ] ||
        fail "poll: HTTP $HTTP_STATUS status '$status': $(body | head -c 600)"
    [ ${#_FAIL_REASONS[@]} -eq 0 ]
}

case_control()
{
    register_wait "$RID" "$KEY_OK" '{"registrationId":"'$RID'"}'
}

case_bad_json()
{
    local rc=0 data
    for data in '{"registrationId":"dev-ok",' 'not json' '{"registrationId":"dev-ok"}}' $'\x80\xff'; do
        put_register "$RID" "$(device_sas "$KEY_OK" "$RID")" "$data"
        expect_error 400 "${expect_error_args[@]}" || rc=1
    done
    return $rc
}

case_json_not_object()
{
    local rc=0 data
    for data in '[1,2]' '"dev-ok"' '42' 'null'; do
        put_register "$RID" "$(device_sas "$KEY_OK" "$RID")" "$data"
        expect_error 400 "${expect_error_args[@]}" || rc=1
    done
    return $rc
}

case_body_id_mismatch()
{
    put_register "$RID" "$(device_sas "$KEY_OK" "$RID")" '{"registrationId":"dev-b"}'
    expect_error 400 "${expect_error_args[@]}"
}

case_too_big()
{
    # too_big SIZE chunked|length
    local f=$T/big.json
    pad_body "$f" "$1"
    if [ "$2" = chunked ]; then
        put_register "$RID" "$(device_sas "$KEY_OK" "$RID")" "@$f" -H 'Transfer-Encoding: chunked'
    else
        put_register "$RID" "$(device_sas "$KEY_OK" "$RID")" "@$f"
    fi
    expect_error 413 "${expect_error_args[@]}"
}
case_100k_length() { case_too_big 102400 length; }
case_1m_length() { case_too_big 1048576 length; }
case_100k_chunked() { case_too_big 102400 chunked; }
case_1m_chunked() { case_too_big 1048576 chunked; }

case_just_under_limit()
{
    # the limit is 96 KB: a 90 KB body is read and judged on its content
    local f=$T/ok.json
    pad_body "$f" 92160
    register_wait "$RID" "$KEY_OK" "@$f"
}

case_unknown_scope()
{
    local sr=0ne00NOPE99/registrations/$RID
    put_register "$RID" "$(device_sas "$KEY_OK" "$RID" "" "$sr")" '{"registrationId":"'$RID'"}'
    expect_error_args[1]=$(reg_path "$RID" 0ne00NOPE99)
    expect_error 404 "${expect_error_args[@]}"
}

case_no_auth()
{
    expect_error 401 PUT "$(reg_path "$RID")" -H 'Content-Type: application/json' \
        --data-binary '{"registrationId":"'$RID'"}'
}

case_malformed_sas()
{
    local rc=0 good sr="$SCOPE/registrations/$RID" se=$(($(date +%s) + 3600)) a
    good=$(device_sas "$KEY_OK" "$RID" "$se")
    local sig=${good#*sig=}
    sig=${sig%%&*}
    local bad=(
        "SharedAccessSignature"
        "SharedAccessSignature "
        "SharedAccessSignature garbage"
        "SharedAccessSignature sr=$sr&se=$se&skn=registration"
        "SharedAccessSignature sig=$sig&se=$se&skn=registration"
        "SharedAccessSignature sr=$sr&sig=$sig&skn=registration"
        "SharedAccessSignature sr=$sr&sig=$sig&se=notanumber&skn=registration"
        "SharedAccessSignature sr=$sr&sig=%%%%&se=$se&skn=registration"
        "SharedAccessSignature sr=$sr&sig=!!notbase64!!&se=$se&skn=registration"
        "Bearer ${good#SharedAccessSignature }"
        "${good#SharedAccessSignature }"
    )
    for a in "${bad[@]}"; do
        put_register "$RID" "$a" '{"registrationId":"'$RID'"}'
        expect_error 401 "${expect_error_args[@]}" || { fail "  (Authorization: $a)"; rc=1; }
    done
    return $rc
}

case_wrong_skn()
{
    local a
    a=$(device_sas "$KEY_OK" "$RID")
    a=${a/skn=registration/skn=provisioningserviceowner}
    put_register "$RID" "$a" '{"registrationId":"'$RID'"}'
    expect_error 401 "${expect_error_args[@]}"
}

case_expired()
{
    local se=$(($(date +%s) - 600))
    put_register "$RID" "$(device_sas "$KEY_OK" "$RID" "$se")" '{"registrationId":"'$RID'"}'
    expect_error 401 "${expect_error_args[@]}"
}

case_tampered()
{
    local rc=0 a sig newsig
    a=$(device_sas "$KEY_OK" "$RID")
    sig=${a#*sig=}
    sig=${sig%%&*}
    # flip the first character of the signature
    if [ "${sig:0:1}" = A ]; then newsig="B${sig:1}"; else newsig="A${sig:1}"; fi
    put_register "$RID" "${a/sig=$sig/sig=$newsig}" '{"registrationId":"'$RID'"}'
    expect_error 401 "${expect_error_args[@]}" || rc=1
    # a valid signature with a changed expiry
    local se=${a##*se=}
    se=${se%%&*}
    put_register "$RID" "${a/se=$se/se=$((se + 1))}" '{"registrationId":"'$RID'"}'
    expect_error 401 "${expect_error_args[@]}" || rc=1
    return $rc
}

case_sr_form_mismatch()
{
    # the signature covers the sr exactly as sent: signing the decoded form but sending
    # the encoded one (or the reverse) must fail
    local rc=0 se sig dec="$SCOPE/registrations/$RID" enc="$SCOPE%2Fregistrations%2F$RID"
    se=$(($(date +%s) + 3600))
    sig=$(urlenc_b64 "$(hmac_b64 "$KEY_OK" "$dec"$'\n'"$se")")
    put_register "$RID" "SharedAccessSignature sr=$enc&sig=$sig&se=$se&skn=registration" \
        '{"registrationId":"'$RID'"}'
    expect_error 401 "${expect_error_args[@]}" || rc=1
    sig=$(urlenc_b64 "$(hmac_b64 "$KEY_OK" "$enc"$'\n'"$se")")
    put_register "$RID" "SharedAccessSignature sr=$dec&sig=$sig&se=$se&skn=registration" \
        '{"registrationId":"'$RID'"}'
    expect_error 401 "${expect_error_args[@]}" || rc=1
    return $rc
}

case_other_regid()
{
    local rc=0
    # dev-b's own valid token, presented on dev-ok's path
    put_register "$RID" "$(device_sas "$KEY_B" dev-b)" '{"registrationId":"'$RID'"}'
    expect_error 401 "${expect_error_args[@]}" || rc=1
    # dev-ok's key, but sr names dev-b
    put_register "$RID" "$(device_sas "$KEY_OK" "$RID" "" "$SCOPE/registrations/dev-b")" \
        '{"registrationId":"'$RID'"}'
    expect_error 401 "${expect_error_args[@]}" || rc=1
    # right sr, wrong key (dev-b's)
    put_register "$RID" "$(device_sas "$KEY_B" "$RID")" '{"registrationId":"'$RID'"}'
    expect_error 401 "${expect_error_args[@]}" || rc=1
    return $rc
}

case_unknown_enrollment()
{
    local k
    k=$(rand_key 32)
    put_register dev-nobody "$(device_sas "$k" dev-nobody)" '{"registrationId":"dev-nobody"}'
    expect_error 401 "${expect_error_args[@]}"
}

case_disabled()
{
    put_register dev-off "$(device_sas "$KEY_OFF" dev-off)" '{"registrationId":"dev-off"}'
    expect_error 401 "${expect_error_args[@]}" || return 1
    grep -q '"errorCode": *401003' "$T/body" || fail "expected errorCode 401003 (disabled)"
}

case_disabled_wrong_key()
{
    # a caller without the key must not learn that the enrollment exists
    put_register dev-off "$(device_sas "$KEY_OK" dev-off)" '{"registrationId":"dev-off"}'
    expect_error 401 "${expect_error_args[@]}"
}

# bad_id PATH_FORM JSON_ID: the id as it appears in the path (and sr) and as a JSON string.
bad_id()
{
    put_register "$1" "$(device_sas "$KEY_OK" "$1" "" "$SCOPE/registrations/$1")" \
        "{\"registrationId\":$2}"
    expect_error 400 "${expect_error_args[@]}" || { fail "  (registration id $2)"; return 1; }
}

case_id_too_long()
{
    local id
    id=$(head -c 129 /dev/zero | tr '\0' 'a')
    bad_id "$id" "\"$id\""
}

case_id_bad_chars()
{
    local rc=0
    bad_id 'dev$x' '"dev$x"' || rc=1
    bad_id 'dev%20x' '"dev x"' || rc=1
    bad_id 'dev%2Fx' '"dev/x"' || rc=1
    bad_id 'dev_' '"dev_"' || rc=1
    bad_id 'dev@x' '"dev@x"' || rc=1
    bad_id 'd%C3%A9v' '"d\u00e9v"' || rc=1
    bad_id 'dev%00x' '"dev\u0000x"' || rc=1
    return $rc
}

case_id_dotdot()
{
    local rc=0
    bad_id '..' '".."' || rc=1
    bad_id '%2e%2e' '".."' || rc=1
    bad_id '.' '"."' || rc=1
    return $rc
}

case_wrong_method()
{
    local rc=0 m
    for m in DELETE GET PATCH POST; do
        expect_error 405 "$m" "$(reg_path "$RID")" -H "Authorization: $(device_sas "$KEY_OK" "$RID")" \
            -H 'Content-Type: application/json' --data-binary '{"registrationId":"'$RID'"}' || rc=1
        [ -n "$(header Allow)" ] || { fail "$m: 405 without an Allow header"; rc=1; }
    done
    expect_error 405 DELETE "/$SCOPE/registrations/$RID/operations/4.0000000000000000.x?api-version=$API_DEV" \
        -H "Authorization: $(device_sas "$KEY_OK" "$RID")" || rc=1
    return $rc
}

case_unknown_path()
{
    local rc=0 p
    for p in "/" "/nope" "/$SCOPE" "/$SCOPE/foo/bar" "/$SCOPE/registrations/$RID/bogus" \
        "/$SCOPE/registrations/$RID/register/extra" "/$SCOPE/registrations/$RID/operations"; do
        expect_error 404 GET "$p?api-version=$API_DEV" \
            -H "Authorization: $(device_sas "$KEY_OK" "$RID")" || { fail "  (path $p)"; rc=1; }
    done
    return $rc
}

add_case "setup: enrollments created through the service API" case_setup
add_case "control: a valid register answers 202 and the poll reaches assigned" case_control
add_case "a 90 KB body is accepted (limit is 96 KB)" case_just_under_limit
add_case "malformed JSON body -> 400" case_bad_json
add_case "JSON body that is not an object -> 400" case_json_not_object
add_case "body registrationId differs from the path -> 400" case_body_id_mismatch
add_case "100 KB body with Content-Length -> 413" case_100k_length
add_case "1 MB body with Content-Length -> 413" case_1m_length
add_case "100 KB chunked body -> 413" case_100k_chunked
add_case "1 MB chunked body -> 413" case_1m_chunked
add_case "unknown ID scope -> 404" case_unknown_scope
add_case "missing Authorization -> 401" case_no_auth
add_case "malformed SAS tokens -> 401" case_malformed_sas
add_case "SAS with skn other than registration -> 401" case_wrong_skn
add_case "expired SAS (se 10 minutes ago) -> 401" case_expired
add_case "tampered signature or expiry -> 401" case_tampered
add_case "signature over another form of sr (decoded vs encoded) -> 401" case_sr_form_mismatch
add_case "SAS for another registration id / wrong key -> 401" case_other_regid
add_case "unknown enrollment -> 401" case_unknown_enrollment
add_case "disabled enrollment with the right key -> 401 401003" case_disabled
add_case "disabled enrollment with a wrong key -> 401" case_disabled_wrong_key
add_case "registration id of 129 characters -> 400" case_id_too_long
add_case "registration ids with bad characters -> 400" case_id_bad_chars
add_case "registration ids '..', '%2e%2e', '.' -> 400" case_id_dotdot
add_case "wrong methods on device paths -> 405 with Allow" case_wrong_method
add_case "unknown paths -> 404" case_unknown_path
run_cases
