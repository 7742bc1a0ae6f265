#!/usr/bin/env bash
# Device API wire compatibility, driven by curl: the token and request shapes that
# the other device SDKs send (C, C#, Python, Embedded C, IoT Edge's aziot), which the
# Node SDK tests do not exercise. Facts from docs: device protocol sections 3 and 4.1.
. "$(dirname "$0")/lib/lib.sh"
lib_init 127.0.0.103 t103

KEY_W=$(rand_key 32)
KEY_M=$(rand_key 32)
GROUP_KEY=$(rand_key 64)

# sas_token SR KEY FORM [SKN]: signs SR exactly as given (HMAC over the raw sr).
# FORM: node (sr,sig,skn,se), c (sr,sig,se,skn; lower-case %xx in sig), python (sr,sig,se; no
# skn), csharp (sr,sig,se,skn).
sas_token()
{
    local sr=$1 key=$2 form=$3 skn=${4:-registration} se sig
    se=$(($(date +%s) + 3600))
    sig=$(urlenc_b64 "$(hmac_b64 "$key" "$sr"$'\n'"$se")")
    case "$form" in
    node) printf 'SharedAccessSignature sr=%s&sig=%s&skn=%s&se=%s' "$sr" "$sig" "$skn" "$se" ;;
    c)
        sig=$(printf '%s' "$sig" | sed -e 's/%2B/%2b/g' -e 's/%2F/%2f/g' -e 's/%3D/%3d/g')
        printf 'SharedAccessSignature sr=%s&sig=%s&se=%s&skn=%s' "$sr" "$sig" "$se" "$skn"
        ;;
    python) printf 'SharedAccessSignature sr=%s&sig=%s&se=%s' "$sr" "$sig" "$se" ;;
    csharp) printf 'SharedAccessSignature sr=%s&sig=%s&se=%s&skn=%s' "$sr" "$sig" "$se" "$skn" ;;
    esac
}

# register_flow PATH_ID BODY_ID AUTH API [curl args]: PUT register -> 202 (with
# registrationState.registrationId), then polls with the same token until assigned.
# Leaves the final poll answer in $T/body.
register_flow()
{
    local pid=$1 bid=$2 auth=$3 api=$4 op i rs
    shift 4
    expect_status 202 PUT "/$SCOPE/registrations/$pid/register?api-version=$api" \
        -H "Authorization: $auth" -H 'Content-Type: application/json; charset=utf-8' \
        --data-binary "{\"registrationId\":\"$bid\"}" "$@" || return 1
    op=$(json_get operationId) || { fail "202 body is not JSON: $(body | head -c 300)"; return 1; }
    [ -n "$op" ] || { fail "no operationId: $(body | head -c 300)"; return 1; }
    [ "$(json_get status)" = assigning ] || fail "PUT status is not assigning: $(body | head -c 300)"
    rs=$(json_get registrationState.registrationId)
    [ "${rs,,}" = "${bid,,}" ] || fail "PUT registrationState.registrationId is '$rs'"
    [[ "$(header Retry-After)" =~ ^[1-9][0-9]*$ ]] || fail "Retry-After '$(header Retry-After)'"
    case "$(header Content-Type)" in application/json*) ;; *) fail "Content-Type $(header Content-Type)" ;; esac
    for ((i = 0; i < 40; i++)); do
        # Node polls with a '{}' body and a JSON content type
        req GET "/$SCOPE/registrations/$pid/operations/$op?api-version=$api" \
            -H "Authorization: $auth" -H 'Content-Type: application/json; charset=utf-8' \
            --data-binary '{}' "$@"
        [ "$HTTP_STATUS" = 202 ] || break
        rs=$(json_get registrationState.registrationId)
        [ "${rs,,}" = "${bid,,}" ] ||
            fail "202 poll without registrationState.registrationId: $(body | head -c 300)"
        [[ "$(header Retry-After)" =~ ^[1-9][0-9]*$ ]] || fail "poll Retry-After '$(header Retry-After)'"
        sleep 0.25
    done
    if [ "$HTTP_STATUS" != 200 ] || [ "$(json_get status)" != assigned ]; then
        fail "poll: HTTP $HTTP_STATUS $(body | head -c 600)"
        return 1
    fi
    case "$(json_get registrationState.assignedHub)" in
    "$HUB1" | "$HUB2") ;;
    *) fail "assignedHub: $(body | head -c 600)" ;;
    esac
    [ -n "$(json_get registrationState.deviceId)" ] || fail "no deviceId: $(body | head -c 600)"
    [ "$(json_get registrationState.status)" = assigned ] || fail "registrationState.status: $(body | head -c 600)"
    [ ${#_FAIL_REASONS[@]} -eq 0 ]
}

case_setup()
{
    local rc=0 id key
    for spec in "dev-w $KEY_W" "Dev-Mixed-07 $KEY_M"; do
        read -r id key <<<"$spec"
        service_put "/enrollments/$id" \
            "{\"registrationId\":\"$id\",\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"$key\",\"secondaryKey\":\"$(rand_key 32)\"}}}"
        [ "$HTTP_STATUS" = 200 ] || { fail "PUT /enrollments/$id: HTTP $HTTP_STATUS $(body | head -c 400)"; rc=1; }
    done
    service_put /enrollmentGroups/grp-w \
        "{\"enrollmentGroupId\":\"grp-w\",\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"$GROUP_KEY\",\"secondaryKey\":\"$(rand_key 64)\"}}}"
    [ "$HTTP_STATUS" = 200 ] || { fail "PUT /enrollmentGroups/grp-w: HTTP $HTTP_STATUS $(body | head -c 400)"; rc=1; }
    return $rc
}

case_node()
{
    register_flow dev-w dev-w "$(sas_token "$SCOPE/registrations/dev-w" "$KEY_W" node)" 2019-03-31
}

case_c_sdk()
{
    # lower-case %2f in sr and in sig, 'UserAgent' header instead of User-Agent, api 2021-06-01
    register_flow dev-w dev-w "$(sas_token "$SCOPE%2fregistrations%2fdev-w" "$KEY_W" c)" 2021-06-01 \
        -H 'User-Agent:' -H 'UserAgent: prov_device_client/1.0' -H 'Accept: application/json'
}

case_python()
{
    # upper-case %2F, no skn, no User-Agent
    register_flow dev-w dev-w "$(sas_token "$SCOPE%2Fregistrations%2Fdev-w" "$KEY_W" python)" \
        2019-03-31 -H 'User-Agent:'
}

case_csharp()
{
    register_flow dev-w dev-w "$(sas_token "$SCOPE%2Fregistrations%2Fdev-w" "$KEY_W" csharp)" 2019-03-31
}

case_aziot_lowercase()
{
    # aziot lower-cases the whole audience; the path keeps the enrollment's spelling
    local sr="${SCOPE,,}/registrations/dev-mixed-07"
    register_flow Dev-Mixed-07 Dev-Mixed-07 "$(sas_token "$sr" "$KEY_M" csharp)" 2021-06-01
}

case_id_case_insensitive()
{
    # the registration id is case-insensitive: an upper-case path and body find the enrollment
    register_flow DEV-W DEV-W "$(sas_token "$SCOPE/registrations/DEV-W" "$KEY_W" node)" 2019-03-31
}

case_api_versions()
{
    local rc=0 v
    for v in 2021-10-01 2025-07-01-preview 2099-01-01; do
        register_flow dev-w dev-w "$(sas_token "$SCOPE/registrations/dev-w" "$KEY_W" node)" "$v" ||
            { fail "  (api-version $v)"; rc=1; }
    done
    return $rc
}

case_force_registration()
{
    # Node appends &forceRegistration=true after the api-version
    local auth
    auth=$(sas_token "$SCOPE/registrations/dev-w" "$KEY_W" node)
    expect_status 202 PUT "/$SCOPE/registrations/dev-w/register?api-version=2019-03-31&forceRegistration=true" \
        -H "Authorization: $auth" -H 'Content-Type: application/json; charset=utf-8' \
        --data-binary '{"registrationId":"dev-w"}'
}

case_python_null_payload()
{
    # Python always sends "payload": null, with sorted keys
    local auth
    auth=$(sas_token "$SCOPE%2Fregistrations%2Fdev-w" "$KEY_W" python)
    expect_status 202 PUT "/$SCOPE/registrations/dev-w/register?api-version=2019-03-31" \
        -H "Authorization: $auth" -H 'Content-Type: application/json' \
        --data-binary '{"payload": null, "registrationId": "dev-w"}'
}

case_group_c_form()
{
    local id=grp-w-dev-1 key
    key=$(derive_key "$GROUP_KEY" "$id")
    register_flow "$id" "$id" "$(sas_token "$SCOPE%2fregistrations%2f$id" "$key" c)" 2021-06-01 || return 1
    [ "$(json_get registrationState.deviceId)" = "$id" ] || fail "group device id: $(body | head -c 400)"
    [ ${#_FAIL_REASONS[@]} -eq 0 ]
}

case_status_lookup()
{
    # POST /{scope}/registrations/{id}: the registration record of an assigned device
    local auth
    auth=$(sas_token "$SCOPE/registrations/dev-w" "$KEY_W" node)
    expect_status 200 POST "/$SCOPE/registrations/dev-w?api-version=2019-03-31" \
        -H "Authorization: $auth" -H 'Content-Type: application/json' \
        --data-binary '{"registrationId":"dev-w"}' || return 1
    [ "$(json_get status)" = assigned ] || fail "lookup status: $(body | head -c 400)"
    [ "$(json_get registrationId)" = dev-w ] || fail "lookup registrationId: $(body | head -c 400)"
    case "$(json_get assignedHub)" in "$HUB1" | "$HUB2") ;; *) fail "lookup assignedHub: $(body | head -c 400)" ;; esac
    [ ${#_FAIL_REASONS[@]} -eq 0 ]
}

case_keepalive()
{
    # several requests on one TLS connection (the SDKs keep connections alive)
    local auth out n
    auth=$(sas_token "$SCOPE/registrations/dev-w" "$KEY_W" node)
    out=$(curl -sS --cacert "$CA" -o /dev/null -w '%{http_code} %{num_connects}\n' \
        -X POST -H "Authorization: $auth" -H 'Content-Type: application/json' \
        --data-binary '{"registrationId":"dev-w"}' \
        "https://$IP/$SCOPE/registrations/dev-w?api-version=2019-03-31" \
        --next -sS --cacert "$CA" -o /dev/null -w '%{http_code} %{num_connects}\n' \
        -X POST -H "Authorization: $auth" -H 'Content-Type: application/json' \
        --data-binary '{"registrationId":"dev-w"}' \
        "https://$IP/$SCOPE/registrations/dev-w?api-version=2019-03-31" 2>&1)
    n=$(printf '%s\n' "$out" | awk '{s += $2} END {print s}')
    [ "$(printf '%s\n' "$out" | awk '{print $1}' | sort -u)" = 200 ] || { fail "statuses: $out"; return 1; }
    [ "$n" = 1 ] || { fail "connections opened for two requests: $n ($out)"; return 1; }
}

add_case "setup: enrollments and a group created" case_setup
add_case "Node form: raw sr, fields sr,sig,skn,se" case_node
add_case "C SDK form: %2f in sr, lower-case escapes in sig, UserAgent header, api 2021-06-01" case_c_sdk
add_case "Python form: %2F in sr, no skn, no User-Agent" case_python
add_case "C# form: %2F in sr, fields sr,sig,se,skn" case_csharp
add_case "aziot form: lower-cased sr for a mixed-case registration id" case_aziot_lowercase
add_case "registration id is case-insensitive" case_id_case_insensitive
add_case "other api-versions are accepted" case_api_versions
add_case "forceRegistration=true after api-version" case_force_registration
add_case "Python's \"payload\": null" case_python_null_payload
add_case "group device with a derived key, C SDK form" case_group_c_form
add_case "status lookup POST returns the registration record" case_status_lookup
add_case "two requests share one keep-alive connection" case_keepalive
run_cases
