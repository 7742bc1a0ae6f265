/*
 * DPS wire pieces the two device transports share (HTTPS in device_api.c,
 * MQTT in mqtt_conn.c), so they answer alike by construction: the error body
 * and the check of a DeviceRegistration request body. The HTTP layer's own
 * error answers (http.c) use the same error body.
 */
#ifndef PROV_SERVER_DPS_WIRE_H
#define PROV_SERVER_DPS_WIRE_H

#include <stddef.h>

#include <jansson.h>

#include "registration.h"

/*
 * {"errorCode","trackingId","message","timestampUtc"} (docs/errors.md). Returns
 * a new object the caller releases with json_decref, or NULL when out of
 * memory. message goes to the client: never secrets.
 */
json_t *dps_error_body(int errcode, const char *tracking_id, const char *message);

/*
 * The document a device gets for a pipeline reply: the success body, or the
 * error body built from reply->error_code and reply->message. A new reference
 * (json_decref), or NULL when out of memory.
 */
json_t *dps_reply_body(const struct reg_reply *reply, const char *tracking_id);

enum dps_transport { DPS_TRANSPORT_HTTPS, DPS_TRANSPORT_MQTT };

/*
 * Checks a DeviceRegistration request body of len bytes (0: no body): a JSON
 * object without duplicate keys whose registrationId, when present, equals rid
 * (case-insensitively), and whose tpm member, when present, has the shape
 * {"endorsementKey": string, "storageRootKey": string,
 * "endorsementKeyCertificate"?: string} (400004 otherwise) and comes over
 * HTTPS (DPS does not offer TPM over MQTT: 400008). On success returns
 * 0 with *out the object (the caller's, json_decref) or NULL for no body. On a
 * refusal returns PROV_EPROTO with reply filled (status, error_code, message
 * for the device, detail for the log).
 */
int dps_parse_registration(const char *body, size_t len, const char *rid,
                           enum dps_transport transport, json_t **out, struct reg_reply *reply);

#endif
