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

int dps_parse_registration(const char *body, size_t len, const char *rid,
                           enum dps_transport transport, json_t **out, struct reg_reply *reply)
{
    json_error_t e;
    const json_t *id;
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
    if (json_object_get(o, "tpm") != NULL) {
        r = refuse(reply, DPS_UNSUPPORTED_ATTESTATION,
                   transport == DPS_TRANSPORT_MQTT
                       ? "TPM attestation is not supported over MQTT (DPS does not offer it "
                         "either): register TPM devices over HTTPS"
                       : "TPM attestation is not supported by this server yet");
        goto fail;
    }
    *out = o;
    return 0;
fail:
    json_decref(o);
    return r;
}
