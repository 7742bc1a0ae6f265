/*
 * Linked-hub connectors: what provd does at the destination when it places a
 * device there (docs/architecture.md "Hubs"). A linked hub is configured as
 * `--hub HOSTNAME[=CONNECTOR-URL]`; the URL's scheme picks the connector:
 *
 *   (none)                    record: only the host name is returned
 *   mosquitto://U:P@HOST:PORT  a Mosquitto 2 broker's dynamic-security plugin
 *   mosquittos://...           the same over TLS (hub_mosquitto.c)
 *   https://... / http://...   a webhook that receives the new identity
 *                              (hub_webhook.c)
 *
 * provision/deprovision block (network round trips with timeouts), so they
 * are called only from the assigner threads (assign.c), never from an event
 * loop. They must be safe to call from several threads at once on the same
 * connector state. Both are idempotent: provisioning a device that exists
 * replaces its credentials and role; deprovisioning one that does not exist
 * succeeds. On failure they leave nothing half-created (what they created is
 * removed again) and write a one-line reason for the registration record into
 * err (no secrets).
 */
#ifndef PROV_SERVER_HUB_H
#define PROV_SERVER_HUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* The device identity to create at the hub. Everything is borrowed. */
struct hub_device {
    const char *device_id;
    const char *registration_id;
    const char *attestation; /* "symmetricKey", "x509" or "tpm" */
    /*
     * symmetricKey and tpm: the device's key (see hub_password_derive in
     * common/sas.h); NULL for x509.
     */
    const uint8_t *key;
    size_t key_len;
    /* x509: the leaf certificate's subject CN (= registration id) and SHA-256 thumbprint (hex). */
    const char *x509_cn;
    const char *x509_thumbprint;
    /*
     * {"tags":{...},"properties":{"desired":{...}}}: the configuration to set
     * (an object without desired properties clears what an earlier assignment
     * left, e.g. mosquitto's retained message); NULL: leave the device's
     * configuration at the hub as it is (a re-registration that keeps its data).
     */
    const json_t *initial_twin;
    bool iot_edge;
};

struct hub_connector_ops {
    const char *name; /* "mosquitto", "webhook" */
    /*
     * Parses and keeps the URL (nothing is contacted yet: provd must start
     * while a hub is down). 0, or PROV_EINVAL with a one-line message in err.
     */
    int (*open)(const char *url, void **state, char *err, size_t errlen);
    int (*provision)(void *state, const char *hostname, const struct hub_device *dev, char *err,
                     size_t errlen);
    int (*deprovision)(void *state, const char *hostname, const char *device_id, char *err,
                       size_t errlen);
    void (*close)(void *state);
};

extern const struct hub_connector_ops hub_mosquitto_ops; /* mosquitto://, mosquittos:// */
extern const struct hub_connector_ops hub_webhook_ops;   /* https://, http:// */
/* The connector a URL names by its scheme (one of the above), or NULL. */
const struct hub_connector_ops *hub_connector_for(const char *url);

#endif
