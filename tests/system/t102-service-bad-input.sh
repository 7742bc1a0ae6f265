#!/usr/bin/env bash
# Service API with bad input, driven by curl: each case checks the HTTP status,
# that the body is a DPS error document, and that the store did not change.
. "$(dirname "$0")/lib/lib.sh"
lib_init 127.0.0.102 t102

CT='Content-Type: application/json; charset=utf-8'

q()
{
    printf '%s?api-version=%s' "$1" "$API_SVC"
}

symkey_enrollment()
{
    # symkey_enrollment ID PRIMARY SECONDARY
    printf '{"registrationId":"%s","attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":"%s","secondaryKey":"%s"}}}' \
        "$1" "$2" "$3"
}

symkey_group()
{
    printf '{"enrollmentGroupId":"%s","attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":"%s","secondaryKey":"%s"}}}' \
        "$1" "$2" "$3"
}

# owner_put_expect STATUS PATH BODY [curl args]: PUT with the owner policy
owner_put_expect()
{
    local st=$1 p=$2 data=$3
    shift 3
    expect_error "$st" PUT "$(q "$p")" -H "Authorization: $(owner_sas)" -H "$CT" --data-binary "$data" "$@"
}

case_setup()
{
    local rc=0
    service_put /enrollments/enr-a "$(symkey_enrollment enr-a "$(rand_key 32)" "$(rand_key 32)")"
    [ "$HTTP_STATUS" = 200 ] || { fail "PUT /enrollments/enr-a: HTTP $HTTP_STATUS $(body | head -c 600)"; rc=1; }
    ETAG_A=$(json_get etag 2>/dev/null)
    service_put /enrollmentGroups/grp-a "$(symkey_group grp-a "$(rand_key 32)" "$(rand_key 32)")"
    [ "$HTTP_STATUS" = 200 ] || { fail "PUT /enrollmentGroups/grp-a: HTTP $HTTP_STATUS $(body | head -c 600)"; rc=1; }
    [ -n "$ETAG_A" ] || { fail "PUT answer has no etag"; rc=1; }
    [ -s "$DB" ] || { fail "no store at $DB"; rc=1; }
    return $rc
}

case_control()
{
    local rc=0
    expect_status 200 GET "$(q /enrollments/enr-a)" -H "Authorization: $(owner_sas)" || rc=1
    [ "$(json_get registrationId 2>/dev/null)" = enr-a ] || { fail "GET body: $(body | head -c 400)"; rc=1; }
    expect_status 200 GET "$(q /enrollments/enr-a)" \
        -H "Authorization: $(service_sas readonly "$READ_KEY")" || rc=1
    return $rc
}

case_bad_json()
{
    local rc=0 data
    for data in '{"registrationId":"enr-new",' 'not json' '{"registrationId":"enr-new"}}' $'\x80\xff' ''; do
        owner_put_expect 400 /enrollments/enr-new "$data" || { fail "  (body '$data')"; rc=1; }
    done
    owner_put_expect 400 /enrollmentGroups/grp-new '{"enrollmentGroupId":' || rc=1
    expect_error 400 POST "$(q /enrollments/)" -H "Authorization: $(owner_sas)" -H "$CT" \
        --data-binary '{"mode":"create","enrollments":[' || rc=1
    return $rc
}

case_not_object()
{
    local rc=0 data
    for data in '[1,2]' '"enr-new"' '7' 'null'; do
        owner_put_expect 400 /enrollments/enr-new "$data" || { fail "  (body '$data')"; rc=1; }
    done
    return $rc
}

case_too_big()
{
    local f=$T/big.json rc=0 head tail n size
    for size in 102400 1048576; do
        head='{"registrationId":"enr-big","attestation":{"type":"symmetricKey"},"initialTwin":{"tags":{"pad":"'
        tail='"}}}'
        n=$((size - ${#head} - ${#tail}))
        { printf '%s' "$head"; head -c "$n" /dev/zero | tr '\0' 'a'; printf '%s' "$tail"; } >"$f"
        owner_put_expect 413 /enrollments/enr-big "@$f" || { fail "  ($size bytes, Content-Length)"; rc=1; }
        owner_put_expect 413 /enrollments/enr-big "@$f" -H 'Transfer-Encoding: chunked' ||
            { fail "  ($size bytes, chunked)"; rc=1; }
    done
    return $rc
}

case_no_auth()
{
    local rc=0
    expect_error 401 GET "$(q /enrollments/enr-a)" || rc=1
    expect_error 401 PUT "$(q /enrollments/enr-a)" -H "$CT" \
        --data-binary "$(symkey_enrollment enr-a "$(rand_key 32)" "$(rand_key 32)")" || rc=1
    expect_error 401 DELETE "$(q /enrollments/enr-a)" || rc=1
    return $rc
}

case_malformed_sas()
{
    local rc=0 good sig se=$(($(date +%s) + 3600)) a
    good=$(service_sas provisioningserviceowner "$OWNER_KEY" "$se")
    sig=${good#*sig=}
    sig=${sig%%&*}
    local bad=(
        "SharedAccessSignature"
        "SharedAccessSignature garbage"
        "SharedAccessSignature sr=$IP&se=$se&skn=provisioningserviceowner"
        "SharedAccessSignature sr=$IP&sig=$sig&skn=provisioningserviceowner"
        "SharedAccessSignature sig=$sig&se=$se&skn=provisioningserviceowner"
        "SharedAccessSignature sr=$IP&sig=$sig&se=$se"
        "SharedAccessSignature sr=$IP&sig=$sig&se=soon&skn=provisioningserviceowner"
        "SharedAccessSignature sr=$IP&sig=!!&se=$se&skn=provisioningserviceowner"
        "Bearer eyJhbGciOiJub25lIn0.e30."
        "${good#SharedAccessSignature }"
    )
    for a in "${bad[@]}"; do
        expect_error 401 GET "$(q /enrollments/enr-a)" -H "Authorization: $a" ||
            { fail "  (Authorization: $a)"; rc=1; }
    done
    return $rc
}

case_expired()
{
    expect_error 401 GET "$(q /enrollments/enr-a)" \
        -H "Authorization: $(service_sas provisioningserviceowner "$OWNER_KEY" $(($(date +%s) - 600)))"
}

case_wrong_key()
{
    local rc=0
    expect_error 401 GET "$(q /enrollments/enr-a)" \
        -H "Authorization: $(service_sas provisioningserviceowner "$(rand_key 32)")" || rc=1
    # the read-only policy's key under the owner's name
    expect_error 401 PUT "$(q /enrollments/enr-a)" -H "$CT" \
        -H "Authorization: $(service_sas provisioningserviceowner "$READ_KEY")" \
        --data-binary "$(symkey_enrollment enr-a "$(rand_key 32)" "$(rand_key 32)")" || rc=1
    expect_error 401 GET "$(q /enrollments/enr-a)" \
        -H "Authorization: $(service_sas nosuchpolicy "$OWNER_KEY")" || rc=1
    return $rc
}

case_wrong_audience()
{
    expect_error 401 GET "$(q /enrollments/enr-a)" \
        -H "Authorization: $(service_sas provisioningserviceowner "$OWNER_KEY" "" other.example.test)"
}

case_rights()
{
    local rc=0 ro
    ro="Authorization: $(service_sas readonly "$READ_KEY")"
    expect_error 401 PUT "$(q /enrollments/enr-a)" -H "$ro" -H "$CT" \
        --data-binary "$(symkey_enrollment enr-a "$(rand_key 32)" "$(rand_key 32)")" || rc=1
    expect_error 401 PUT "$(q /enrollments/enr-ro)" -H "$ro" -H "$CT" \
        --data-binary "$(symkey_enrollment enr-ro "$(rand_key 32)" "$(rand_key 32)")" || rc=1
    expect_error 401 DELETE "$(q /enrollments/enr-a)" -H "$ro" || rc=1
    expect_error 401 PUT "$(q /enrollmentGroups/grp-a)" -H "$ro" -H "$CT" \
        --data-binary "$(symkey_group grp-a "$(rand_key 32)" "$(rand_key 32)")" || rc=1
    expect_error 401 DELETE "$(q /enrollmentGroups/grp-a)" -H "$ro" || rc=1
    expect_error 401 POST "$(q /enrollments/)" -H "$ro" -H "$CT" \
        --data-binary "{\"mode\":\"delete\",\"enrollments\":[{\"registrationId\":\"enr-a\",\"attestation\":{\"type\":\"symmetricKey\"}}]}" ||
        rc=1
    expect_error 401 DELETE "$(q /registrations/enr-a)" -H "$ro" || rc=1
    return $rc
}

case_bad_ids()
{
    local rc=0 id long
    long=$(head -c 129 /dev/zero | tr '\0' 'e')
    for id in "$long" 'bad$id' 'bad%20id' 'bad_' 'a%2Fb' '..' '%2e%2e'; do
        owner_put_expect 400 "/enrollments/$id" \
            "$(symkey_enrollment "$id" "$(rand_key 32)" "$(rand_key 32)")" ||
            { fail "  (enrollment id $id)"; rc=1; }
        owner_put_expect 400 "/enrollmentGroups/$id" \
            "$(symkey_group "$id" "$(rand_key 32)" "$(rand_key 32)")" ||
            { fail "  (group id $id)"; rc=1; }
    done
    return $rc
}

case_id_mismatch()
{
    local rc=0
    owner_put_expect 400 /enrollments/enr-x \
        "$(symkey_enrollment enr-y "$(rand_key 32)" "$(rand_key 32)")" || rc=1
    owner_put_expect 400 /enrollmentGroups/grp-x \
        "$(symkey_group grp-y "$(rand_key 32)" "$(rand_key 32)")" || rc=1
    return $rc
}

case_attestation_mismatch()
{
    local rc=0 k1 k2 data
    k1=$(rand_key 32)
    k2=$(rand_key 32)
    for data in \
        '{"registrationId":"enr-m","attestation":{"type":"tpm","symmetricKey":{"primaryKey":"'$k1'","secondaryKey":"'$k2'"}}}' \
        '{"registrationId":"enr-m","attestation":{"type":"x509","symmetricKey":{"primaryKey":"'$k1'","secondaryKey":"'$k2'"}}}' \
        '{"registrationId":"enr-m","attestation":{"type":"magic"}}' \
        '{"registrationId":"enr-m","attestation":{}}' \
        '{"registrationId":"enr-m"}' \
        '{"registrationId":"enr-m","attestation":"symmetricKey"}'; do
        owner_put_expect 400 /enrollments/enr-m "$data" || { fail "  (body $data)"; rc=1; }
    done
    return $rc
}

case_bad_base64()
{
    local rc=0 k
    k=$(rand_key 32)
    for bad in '!!!not-base64!!!' 'QUJD$$$$RUZHSElKS0xNTk9QUVJTVFVWV1hZWjAxMjM=' 'QUJDRA=x'; do
        owner_put_expect 400 /enrollments/enr-b64 "$(symkey_enrollment enr-b64 "$bad" "$k")" ||
            { fail "  (primary $bad)"; rc=1; }
        owner_put_expect 400 /enrollments/enr-b64 "$(symkey_enrollment enr-b64 "$k" "$bad")" ||
            { fail "  (secondary $bad)"; rc=1; }
    done
    owner_put_expect 400 /enrollmentGroups/grp-b64 "$(symkey_group grp-b64 '!!!' "$k")" || rc=1
    return $rc
}

case_key_length()
{
    local rc=0 k n
    k=$(rand_key 32)
    for n in 1 8 15 65 96; do
        owner_put_expect 400 /enrollments/enr-len "$(symkey_enrollment enr-len "$(rand_key $n)" "$k")" ||
            { fail "  (primary of $n bytes)"; rc=1; }
    done
    owner_put_expect 400 /enrollments/enr-len "$(symkey_enrollment enr-len "$k" "$(rand_key 8)")" || rc=1
    owner_put_expect 400 /enrollmentGroups/grp-len "$(symkey_group grp-len "$(rand_key 8)" "$k")" || rc=1
    return $rc
}

case_bad_enums()
{
    local rc=0 k1 k2 att
    k1=$(rand_key 32)
    k2=$(rand_key 32)
    att='"attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":"'$k1'","secondaryKey":"'$k2'"}}'
    owner_put_expect 400 /enrollments/enr-e '{"registrationId":"enr-e",'"$att"',"provisioningStatus":"maybe"}' || rc=1
    owner_put_expect 400 /enrollments/enr-e '{"registrationId":"enr-e",'"$att"',"allocationPolicy":"random"}' || rc=1
    owner_put_expect 400 /enrollments/enr-e '{"registrationId":"enr-e",'"$att"',"iotHubs":["not-linked.example.test"]}' || rc=1
    return $rc
}

case_etag_mismatch()
{
    local rc=0 body
    body=$(symkey_enrollment enr-a "$(rand_key 32)" "$(rand_key 32)")
    owner_put_expect 412 /enrollments/enr-a "$body" -H 'If-Match: "00000000-0000-0000-0000-000000000000"' || rc=1
    owner_put_expect 412 /enrollments/enr-a "$body" -H 'If-Match: stale' || rc=1
    expect_error 412 DELETE "$(q /enrollments/enr-a)" -H "Authorization: $(owner_sas)" \
        -H 'If-Match: "00000000-0000-0000-0000-000000000000"' || rc=1
    owner_put_expect 412 /enrollmentGroups/grp-a "$(symkey_group grp-a "$(rand_key 32)" "$(rand_key 32)")" \
        -H 'If-Match: "nope"' || rc=1
    expect_error 412 DELETE "$(q /enrollmentGroups/grp-a)" -H "Authorization: $(owner_sas)" \
        -H 'If-Match: "nope"' || rc=1
    return $rc
}

case_unknown()
{
    local rc=0 auth
    auth="Authorization: $(owner_sas)"
    expect_error 404 GET "$(q /enrollments/nobody)" -H "$auth" || rc=1
    expect_error 404 DELETE "$(q /enrollments/nobody)" -H "$auth" || rc=1
    expect_error 404 GET "$(q /enrollmentGroups/nobody)" -H "$auth" || rc=1
    expect_error 404 DELETE "$(q /enrollmentGroups/nobody)" -H "$auth" || rc=1
    expect_error 404 GET "$(q /registrations/nobody)" -H "$auth" || rc=1
    expect_error 404 DELETE "$(q /registrations/nobody)" -H "$auth" || rc=1
    expect_error 404 POST "$(q /enrollments/nobody/attestationmechanism)" -H "$auth" || rc=1
    expect_error 404 POST "$(q /enrollmentGroups/nobody/attestationmechanism)" -H "$auth" || rc=1
    return $rc
}

case_bad_bulk()
{
    local rc=0 auth k
    auth="Authorization: $(owner_sas)"
    k=$(rand_key 32)
    expect_error 400 POST "$(q /enrollments/)" -H "$auth" -H "$CT" \
        --data-binary '{"mode":"explode","enrollments":[]}' || rc=1
    expect_error 400 POST "$(q /enrollments/)" -H "$auth" -H "$CT" \
        --data-binary '{"mode":"create"}' || rc=1
    expect_error 400 POST "$(q /enrollments/)" -H "$auth" -H "$CT" \
        --data-binary '{"mode":"create","enrollments":{}}' || rc=1
    return $rc
}

add_case "setup: an enrollment and a group created" case_setup
add_case "control: GET with the owner and the read-only policy -> 200" case_control
add_case "malformed JSON -> 400" case_bad_json
add_case "JSON that is not an object -> 400" case_not_object
add_case "body of 100 KB and 1 MB (Content-Length and chunked) -> 413" case_too_big
add_case "missing Authorization -> 401" case_no_auth
add_case "malformed SAS tokens -> 401" case_malformed_sas
add_case "expired SAS -> 401" case_expired
add_case "wrong policy key or unknown policy -> 401" case_wrong_key
add_case "SAS for another host -> 401" case_wrong_audience
add_case "read-only policy cannot write -> 401" case_rights
add_case "invalid enrollment and group ids -> 400" case_bad_ids
add_case "path id differs from body id -> 400" case_id_mismatch
add_case "attestation type mismatch or missing -> 400" case_attestation_mismatch
add_case "bad base64 keys -> 400" case_bad_base64
add_case "keys shorter than 16 or longer than 64 bytes -> 400" case_key_length
add_case "invalid provisioningStatus, allocationPolicy, iotHubs -> 400" case_bad_enums
add_case "etag mismatch on PUT and DELETE -> 412" case_etag_mismatch
add_case "unknown enrollment, group, registration -> 404" case_unknown
add_case "malformed bulk operations -> 400" case_bad_bulk
run_cases
