#include "dps_wire.h"

#include <stdio.h>
#include <string.h>

#include "../common/errors.h"
#include "../common/util.h"

json_t *dps_error_body(int errcode, const char *tracking_id, const char *message)
{
    char ts[40];

    time_now_rfc3339(ts, sizeof(ts));
    return json_pack("{s:i, s:s, s:s, s:s}", "errorCode", errcode, "trackingId",
                     tracking_id ? tracking_id : "", "message", message, "timestampUtc", ts);
}

json_t *dps_reply_body(const struct reg_reply *reply, const char *tracking_id)
{
    if (reply->status >= 400 || reply->body == NULL)
        return dps_error_body(reply->status >= 400 ? reply->error_code : 500001, tracking_id,
                              reply->status >= 400 ? reply->message : "internal error");
    return json_incref(reply->body);
}

static int refuse(struct reg_reply *reply, int code, const char *message)
{
    memset(reply, 0, sizeof(*reply));
    reply->status = code / 1000;
    reply->error_code = code;
    snprintf(reply->message, sizeof(reply->message), "%s", message);
    snprintf(reply->detail, sizeof(reply->detail), "%s", message);
    return PROV_EPROTO;
}

/*
 * The shape of a request's "tpm" member: {"endorsementKey": string,
 * "storageRootKey": string, "endorsementKeyCertificate"?: string} (the keys
 * base64 TPM2B_PUBLIC, the certificate base64 DER or PEM; their content is
 * checked by attest_tpm.c). NULL when well-formed, else the message.
 */
static const char *tpm_shape(const json_t *tpm)
{
    const json_t *cert = json_object_get(tpm, "endorsementKeyCertificate");

    if (!json_is_object(tpm))
        return "tpm must be an object";
    if (!json_is_string(json_object_get(tpm, "endorsementKey")) ||
        json_string_length(json_object_get(tpm, "endorsementKey")) == 0)
        return "tpm.endorsementKey must be a base64 TPM2B_PUBLIC";
    if (!json_is_string(json_object_get(tpm, "storageRootKey")) ||
        json_string_length(json_object_get(tpm, "storageRootKey")) == 0)
        return "tpm.storageRootKey must be a base64 TPM2B_PUBLIC";
    if (cert != NULL && !json_is_null(cert) && !json_is_string(cert))
        return "tpm.endorsementKeyCertificate must be a base64 DER certificate";
    return NULL;
}

int dps_parse_registration(const char *body, size_t len, const char *rid,
                           enum dps_transport transport, json_t **out, struct reg_reply *reply)
{
    json_error_t e;
    const json_t *id;
    const char *why;
    json_t *o;
    int r;

    *out = NULL;
    if (len == 0)
        return 0;
    o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &e);
    if (o == NULL || !json_is_object(o)) {
        char msg[300];

        if (o == NULL)
            snprintf(msg, sizeof(msg), "malformed JSON body: %s (line %d, column %d)", e.text,
                     e.line, e.column);
        else
            snprintf(msg, sizeof(msg), "request body must be a JSON object");
        r = refuse(reply, DPS_INVALID_BODY, msg);
        goto fail;
    }
    id = json_object_get(o, "registrationId");
    if (id != NULL && (!json_is_string(id) || !str_ieq(json_string_value(id), rid))) {
        r = refuse(reply, DPS_REGISTRATION_ID_MISMATCH,
                   transport == DPS_TRANSPORT_MQTT
                       ? "registrationId in the payload does not match the MQTT user name"
                       : "registrationId in the body does not match the path");
        goto fail;
    }
    if (json_object_get(o, "tpm") != NULL && transport == DPS_TRANSPORT_MQTT) {
        r = refuse(reply, DPS_UNSUPPORTED_ATTESTATION,
                   "TPM attestation is not supported over MQTT (DPS does not offer it "
                   "either): register TPM devices over HTTPS");
        goto fail;
    }
    if (json_object_get(o, "tpm") != NULL && (why = tpm_shape(json_object_get(o, "tpm")))) {
        r = refuse(reply, DPS_INVALID_BODY, why);
        goto fail;
    }
    *out = o;
    return 0;
fail:
    json_decref(o);
    return r;
}
