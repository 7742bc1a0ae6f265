/*
 * A minimal MQTT 3.1.1 client codec for prov-bench: encodes CONNECT,
 * SUBSCRIBE, PUBLISH (QoS 0/1), PINGREQ and DISCONNECT into an evbuffer and
 * frames and decodes what a DPS server sends (CONNACK, SUBACK, PUBACK,
 * PUBLISH, PINGRESP). The server side has its own strict decoder
 * (src/server/mqtt_codec.c); this one only needs to be correct for what it
 * sends and tolerant of nothing it does not expect.
 */
#ifndef PROV_BENCH_MQTT_WIRE_H
#define PROV_BENCH_MQTT_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

enum mw_type {
    MW_CONNECT = 1,
    MW_CONNACK = 2,
    MW_PUBLISH = 3,
    MW_PUBACK = 4,
    MW_SUBSCRIBE = 8,
    MW_SUBACK = 9,
    MW_PINGREQ = 12,
    MW_PINGRESP = 13,
    MW_DISCONNECT = 14,
};

struct mw_packet {
    int type;
    uint8_t flags;
    size_t size;         /* whole packet */
    const uint8_t *body; /* after the fixed header */
    size_t body_len;
    /* PUBLISH */
    const char *topic;
    size_t topic_len;
    const uint8_t *payload;
    size_t payload_len;
};

int mw_connect(struct evbuffer *out, const char *client_id, const char *username,
               const char *password, uint16_t keepalive);
int mw_subscribe(struct evbuffer *out, uint16_t packet_id, const char *filter, uint8_t qos);
/* qos 0 (packet_id ignored) or 1 */
int mw_publish(struct evbuffer *out, const char *topic, const void *payload, size_t len,
               uint8_t qos, uint16_t packet_id);
int mw_pingreq(struct evbuffer *out);
int mw_disconnect(struct evbuffer *out);

/*
 * Frames and decodes the packet at the start of buf. 1: *p describes a whole
 * packet of p->size bytes; 0: more bytes needed; -1: malformed or larger than
 * max.
 */
int mw_parse(const uint8_t *buf, size_t len, size_t max, struct mw_packet *p);

#endif
