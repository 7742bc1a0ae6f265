/*
 * The webhook hub connector (hub.h): for a linked hub configured as
 * `--hub HOST=https://...` (or http://), provd POSTs each identity change to
 * that URL and the user's service applies it to the real hub
 * (docs/webhooks.md "Hub connector"):
 *
 *   {"operation":"create","hubHostName","deviceId","registrationId",
 *    "attestation","iotEdge","initialTwin"?,"authentication":
 *      {"type":"sas","password"}                      symmetricKey, tpm
 *      {"type":"x509","thumbprint","subjectName"}}    x509
 *   {"operation":"delete","hubHostName","deviceId"}
 *
 * The password is hub_password_derive(device key, device id), the one the
 * device itself derives (common/sas.h); the device key is never sent. Any 2xx
 * answer is success (its body is ignored), anything else a failure whose
 * reason names the status and the start of the body. Idempotency is the
 * receiver's: provd may send the same create or delete again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../common/errors.h"
#include "../common/sas.h"
#include "../common/util.h"
#include "hub.h"
#include "webhook.h"

#define HUB_WEBHOOK_TIMEOUT_MS 10000L

static const char what[] = "hub webhook";

struct hub_webhook {
    char *url;
};

static int hw_open(const char *url, void **state, char *err, size_t errlen)
{
    struct hub_webhook *hw;

    *state = NULL;
    if (webhook_url_check(url) != 0) {
        snprintf(err, errlen, "hub connector URL is not a valid http(s) URL");
        return PROV_EINVAL;
    }
    if ((hw = calloc(1, sizeof(*hw))) == NULL || (hw->url = strdup(url)) == NULL) {
        free(hw);
        snprintf(err, errlen, "out of memory");
        return PROV_ENOMEM;
    }
    *state = hw;
    return 0;
}

static void hw_close(void *state)
{
    struct hub_webhook *hw = state;

    if (hw == NULL)
        return;
    /* the URL may carry a key (?code=...) */
    prov_freezero(hw->url, strlen(hw->url));
    free(hw);
}

/* {"type":"sas","password":...} or {"type":"x509",...} into *out; 0 or PROV_E* (err set). */
static int authentication(const struct hub_device *dev, json_t **out, char *err, size_t errlen)
{
    char password[45];

    if (str_ieq(dev->attestation, "x509")) {
        if (dev->x509_thumbprint == NULL || dev->x509_cn == NULL) {
            snprintf(err, errlen, "hub webhook: X.509 device without thumbprint or subject");
            return PROV_EINVAL;
        }
        *out = json_pack("{s:s, s:s, s:s}", "type", "x509", "thumbprint", dev->x509_thumbprint,
                         "subjectName", dev->x509_cn);
    } else {
        if (dev->key == NULL || dev->key_len == 0) {
            snprintf(err, errlen, "hub webhook: %s device without a key", dev->attestation);
            return PROV_EINVAL;
        }
        if (hub_password_derive(dev->key, dev->key_len, dev->device_id, password) != 0) {
            snprintf(err, errlen, "hub webhook: deriving the device password failed");
            return PROV_ECRYPTO;
        }
        *out = json_pack("{s:s, s:s}", "type", "sas", "password", password);
        prov_cleanse(password, sizeof(password));
    }
    if (*out == NULL) {
        snprintf(err, errlen, "out of memory");
        return PROV_ENOMEM;
    }
    return 0;
}

/* The create body into *out; 0 or PROV_E* (err set). */
static int create_body(const char *hostname, const struct hub_device *dev, json_t **out, char *err,
                       size_t errlen)
{
    json_t *auth = NULL, *body, *twin = NULL;
    int r;

    *out = NULL;
    if (hostname == NULL || dev->device_id == NULL || dev->registration_id == NULL ||
        dev->attestation == NULL) {
        snprintf(err, errlen, "hub webhook: incomplete device");
        return PROV_EINVAL;
    }
    if ((r = authentication(dev, &auth, err, errlen)) != 0)
        return r;
    if (dev->initial_twin != NULL && (twin = json_deep_copy(dev->initial_twin)) == NULL) {
        json_decref(auth);
        snprintf(err, errlen, "out of memory");
        return PROV_ENOMEM;
    }
    /* "o" steals auth, also when packing fails */
    body = json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:o}", "operation", "create", "hubHostName",
                     hostname, "deviceId", dev->device_id, "registrationId", dev->registration_id,
                     "attestation", dev->attestation, "iotEdge", (int)dev->iot_edge,
                     "authentication", auth);
    if (body == NULL || (twin != NULL && json_object_set_new(body, "initialTwin", twin) != 0)) {
        if (body == NULL)
            json_decref(twin);
        json_decref(body);
        snprintf(err, errlen, "out of memory");
        return PROV_ENOMEM;
    }
    *out = body;
    return 0;
}

/* Wipes the password inside a create body before it is freed. */
static void body_free(json_t *body)
{
    json_t *pw = json_object_get(json_object_get(body, "authentication"), "password");

    if (json_is_string(pw))
        prov_cleanse((char *)json_string_value(pw), json_string_length(pw));
    json_decref(body);
}

static int hw_provision(void *state, const char *hostname, const struct hub_device *dev, char *err,
                        size_t errlen)
{
    struct hub_webhook *hw = state;
    json_t *body;
    int r;

    if ((r = create_body(hostname, dev, &body, err, errlen)) != 0)
        return r;
    r = webhook_post_json(what, hw->url, body, HUB_WEBHOOK_TIMEOUT_MS, NULL, NULL, err, errlen);
    body_free(body);
    return r;
}

static int hw_deprovision(void *state, const char *hostname, const char *device_id, char *err,
                          size_t errlen)
{
    struct hub_webhook *hw = state;
    json_t *body = json_pack("{s:s, s:s, s:s}", "operation", "delete", "hubHostName", hostname,
                             "deviceId", device_id);
    int r;

    if (body == NULL) {
        snprintf(err, errlen, "out of memory");
        return PROV_ENOMEM;
    }
    r = webhook_post_json(what, hw->url, body, HUB_WEBHOOK_TIMEOUT_MS, NULL, NULL, err, errlen);
    json_decref(body);
    return r;
}

const struct hub_connector_ops hub_webhook_ops = {
    .name = "webhook",
    .open = hw_open,
    .provision = hw_provision,
    .deprovision = hw_deprovision,
    .close = hw_close,
};
