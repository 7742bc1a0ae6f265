/*
 * MQTT 3.1.1 codec for the subset the DPS device protocol uses (protocol doc
 * §6): decodes what a device sends (CONNECT, SUBSCRIBE, UNSUBSCRIBE, PUBLISH at
 * QoS 0 and 1, PUBACK, PINGREQ, DISCONNECT) and encodes what provd answers
 * (CONNACK, SUBACK, UNSUBACK, PUBLISH at QoS 0, PUBACK, PINGRESP).
 *
 * Pure: no I/O, no allocation, no OpenSSL, so the unit tests and the fuzzer
 * drive it directly. Decoding is strict: a remaining length of at most four
 * bytes in its shortest form, the fixed-header flag bits the specification
 * gives for each type, well-formed UTF-8 strings without U+0000, every length
 * inside the packet and nothing left over. Decoded strings point into the
 * caller's buffer (not NUL-terminated) and live as long as it does.
 */
#ifndef PROV_SERVER_MQTT_CODEC_H
#define PROV_SERVER_MQTT_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MQTT_PROTOCOL_LEVEL 4 /* 3.1.1 */
/* Topic filters per SUBSCRIBE or UNSUBSCRIBE; DPS clients send one. More: PROV_ELIMIT. */
#define MQTT_MAX_FILTERS 16
/* The largest remaining length the four-byte encoding can carry. */
#define MQTT_MAX_REMAINING 268435455u

enum mqtt_type {
    MQTT_CONNECT = 1,
    MQTT_CONNACK = 2,
    MQTT_PUBLISH = 3,
    MQTT_PUBACK = 4,
    MQTT_PUBREC = 5,
    MQTT_PUBREL = 6,
    MQTT_PUBCOMP = 7,
    MQTT_SUBSCRIBE = 8,
    MQTT_SUBACK = 9,
    MQTT_UNSUBSCRIBE = 10,
    MQTT_UNSUBACK = 11,
    MQTT_PINGREQ = 12,
    MQTT_PINGRESP = 13,
    MQTT_DISCONNECT = 14,
};

/* CONNACK return codes (3.1.1 §3.2.2.3). */
enum mqtt_connack_code {
    MQTT_CONNACK_ACCEPTED = 0,
    MQTT_CONNACK_BAD_PROTOCOL = 1,    /* unacceptable protocol version */
    MQTT_CONNACK_ID_REJECTED = 2,     /* identifier rejected */
    MQTT_CONNACK_UNAVAILABLE = 3,     /* server unavailable */
    MQTT_CONNACK_BAD_CREDENTIALS = 4, /* bad user name or password */
    MQTT_CONNACK_NOT_AUTHORIZED = 5,
};

#define MQTT_SUBACK_FAILURE 0x80

/* A UTF-8 string or binary field inside the decoded buffer. */
struct mqtt_str {
    const char *p;
    size_t len;
};

struct mqtt_connect {
    /*
     * Protocol level. When the protocol is not MQTT 3.1.1 ("MQTT" level 4) but
     * a known older one ("MQTT" at another level, or 3.1's "MQIsdp"),
     * unsupported is set and nothing after the level is decoded: the server
     * answers CONNACK 1 (unacceptable protocol version) and closes.
     */
    uint8_t level;
    bool unsupported;
    bool clean_session;
    uint16_t keepalive;          /* seconds; 0 = no keepalive */
    struct mqtt_str client_id;   /* may be empty */
    bool has_will;
    uint8_t will_qos;
    bool will_retain;
    struct mqtt_str will_topic;
    struct mqtt_str will_message; /* binary */
    bool has_username;
    struct mqtt_str username;
    bool has_password;
    struct mqtt_str password;    /* binary: may hold any byte, NUL included */
};

struct mqtt_publish {
    struct mqtt_str topic;       /* a topic name: no wildcards, not empty */
    uint8_t qos;                 /* 0 or 1; QoS 2 is refused as malformed */
    bool dup;
    bool retain;
    uint16_t packet_id;          /* QoS 1 only (non-zero); 0 for QoS 0 */
    const uint8_t *payload;
    size_t payload_len;
};

/* SUBSCRIBE and UNSUBSCRIBE (qos is 0 for the latter). */
struct mqtt_subscribe {
    uint16_t packet_id;
    size_t count;                /* 1..MQTT_MAX_FILTERS */
    struct mqtt_str filters[MQTT_MAX_FILTERS];
    uint8_t qos[MQTT_MAX_FILTERS];
};

struct mqtt_packet {
    enum mqtt_type type;
    uint8_t flags;               /* low nibble of the first byte */
    size_t size;                 /* bytes of the whole packet, fixed header included */
    union {
        struct mqtt_connect connect;     /* MQTT_CONNECT */
        struct mqtt_publish publish;     /* MQTT_PUBLISH */
        struct mqtt_subscribe subscribe; /* MQTT_SUBSCRIBE, MQTT_UNSUBSCRIBE */
        uint16_t packet_id;              /* MQTT_PUBACK */
    };
};

/*
 * Frames the packet at the start of buf (len bytes so far): on 0, *size is
 * the whole packet's length (which may be more than len). PROV_EAGAIN: more
 * bytes are needed to tell. PROV_EPROTO: a reserved type, wrong fixed-header
 * flags, or a remaining length that is longer than four bytes or not in its
 * shortest form. PROV_ELIMIT: the packet would be larger than max. Errors are
 * reported as soon as the bytes that prove them are there. *why (when why is
 * not NULL) gets a static reason on errors.
 */
int mqtt_frame(const uint8_t *buf, size_t len, size_t max, size_t *size, const char **why);

/*
 * Decodes the packet at the start of buf into *pkt. 0: pkt->size bytes made
 * one packet. PROV_EAGAIN: the packet is not complete yet. PROV_EPROTO:
 * malformed or outside the subset (QoS 2, a packet type a client must not
 * send or DPS does not use). PROV_ELIMIT: larger than max, or more than
 * MQTT_MAX_FILTERS topic filters. *why as for mqtt_frame.
 *
 * PUBACK with packet id 0 is accepted: the C# SDK acknowledges provd's QoS 0
 * responses that way (protocol doc §6.4), and the server ignores PUBACKs.
 */
int mqtt_decode(const uint8_t *buf, size_t len, size_t max, struct mqtt_packet *pkt,
                const char **why);

/*
 * Whether topic name topic matches topic filter filter (3.1.1 §4.7): '+' is
 * one level, '#' (last) the rest including the parent level, and filters
 * starting with a wildcard do not match topics starting with '$'.
 */
bool mqtt_topic_match(const char *filter, size_t flen, const char *topic, size_t tlen);

/* Well-formed UTF-8 (no overlong forms, no surrogates, at most U+10FFFF) without U+0000. */
bool mqtt_utf8_valid(const char *p, size_t len);

/*
 * Encoders: write one packet into out (outlen bytes) and set *written.
 * 0, or PROV_ELIMIT when out is too small, or PROV_EINVAL for arguments the
 * protocol cannot carry (a string over 65535 bytes, an empty SUBACK).
 */
int mqtt_encode_connack(bool session_present, uint8_t code, uint8_t *out, size_t outlen,
                        size_t *written);
int mqtt_encode_suback(uint16_t packet_id, const uint8_t *codes, size_t ncodes, uint8_t *out,
                       size_t outlen, size_t *written);
int mqtt_encode_unsuback(uint16_t packet_id, uint8_t *out, size_t outlen, size_t *written);
int mqtt_encode_puback(uint16_t packet_id, uint8_t *out, size_t outlen, size_t *written);
int mqtt_encode_pingresp(uint8_t *out, size_t outlen, size_t *written);
/* PUBLISH at QoS 0, no DUP, no RETAIN. */
int mqtt_encode_publish(const char *topic, size_t topic_len, const uint8_t *payload,
                        size_t payload_len, uint8_t *out, size_t outlen, size_t *written);
/* Bytes mqtt_encode_publish needs; 0 when the packet cannot be encoded at all. */
size_t mqtt_publish_size(size_t topic_len, size_t payload_len);

#endif
