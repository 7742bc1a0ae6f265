/*
 * The DPS device API over MQTT 3.1.1 on TLS (protocol doc §6): one state
 * machine per connection on its worker's event loop, decoding with
 * mqtt_codec.c and answering through the same registration pipeline as HTTPS
 * (registration.h).
 *
 *   CONNECT      user name {idScope}/registrations/{registrationId}/api-version=...,
 *                client id = registration id, password = SAS token (absent
 *                for X.509: the TLS client certificate)
 *   SUBSCRIBE    $dps/registrations/res/#
 *   PUBLISH      $dps/registrations/PUT/iotdps-register/?$rid={rid}
 *                $dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={id}
 *   answer       PUBACK (QoS 1), then PUBLISH QoS 0 to
 *                $dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]
 */
#ifndef PROV_SERVER_MQTT_CONN_H
#define PROV_SERVER_MQTT_CONN_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

struct worker;
struct bufferevent;

/*
 * Serves an accepted TLS connection: takes bev (made with
 * BEV_OPT_CLOSE_ON_FREE over ssl, handshake pending) and frees it with the
 * connection. The caller has counted the connection in w->nconns; it is
 * uncounted when freed. 0, or PROV_ENOMEM (bev already freed).
 */
int mqtt_conn_start(struct worker *w, struct bufferevent *bev, SSL *ssl, const char *peer);

/* Frees every MQTT connection of w still open (worker shutdown, on its thread). */
void mqtt_conn_free_all(struct worker *w);

/* ---- the DPS-specific parsing, exposed for the unit tests and the fuzzer ---- */

/*
 * Splits a CONNECT user name "{idScope}/registrations/{registrationId}/
 * api-version=...[&ClientVersion=...]" and percent-decodes the scope and the
 * registration id into scope and rid (NUL-terminated). 0; PROV_EPROTO when
 * the shape is wrong (CONNACK 4); PROV_EINVAL when the registration id does
 * not decode or fit (CONNACK 2). The id is not checked against the DPS rules.
 */
int mqtt_parse_username(const char *u, size_t len, char *scope, size_t scopelen, char *rid,
                        size_t ridlen);

enum mqtt_dps_op { MQTT_DPS_REGISTER, MQTT_DPS_POLL };

struct mqtt_dps_topic {
    enum mqtt_dps_op op;
    const char *rid;     /* raw $rid value (echoed verbatim), inside the topic */
    size_t rid_len;
    const char *opid;    /* raw operationId value (percent-encoded), or NULL */
    size_t opid_len;
};

/*
 * Parses a device's request topic (len bytes, not NUL-terminated):
 * $dps/registrations/PUT/iotdps-register/?$rid=... or
 * $dps/registrations/GET/iotdps-get-operationstatus/?$rid=...&operationId=...
 * (parameters in any order). 0; PROV_ENOTFOUND for any other topic;
 * PROV_EPROTO when $rid is missing, empty or longer than PROV_MQTT_MAX_RID.
 */
int mqtt_parse_dps_topic(const char *topic, size_t len, struct mqtt_dps_topic *t);

#endif
