/*
 * Unit tests for the MQTT side of provd: the codec (src/server/mqtt_codec.c)
 * with every malformed case it must refuse, the DPS user-name and topic
 * parsing (src/server/mqtt_conn.c), the shared DeviceRegistration check and
 * error body (src/server/dps_wire.c) and the --mqtt-listen option.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "src/common/errors.h"
#include "src/common/limits.h"
#include "src/server/config.h"
#include "src/server/dps_wire.h"
#include "src/server/mqtt_codec.h"
#include "src/server/mqtt_conn.h"

#define MAX PROV_MAX_MQTT_PACKET

/* ---- a packet builder ---------------------------------------------------- */

struct pk {
    uint8_t b[MAX + 64];
    size_t len;
};

static void put(struct pk *p, const void *d, size_t n)
{
    assert_true(p->len + n <= sizeof(p->b));
    memcpy(p->b + p->len, d, n);
    p->len += n;
}

static void put8(struct pk *p, uint8_t v)
{
    put(p, &v, 1);
}

static void put16(struct pk *p, uint16_t v)
{
    put8(p, (uint8_t)(v >> 8));
    put8(p, (uint8_t)v);
}

static void putstr(struct pk *p, const char *s)
{
    put16(p, (uint16_t)strlen(s));
    put(p, s, strlen(s));
}

/* Prefixes body (a variable header and payload) with a fixed header. */
static void frame(struct pk *out, uint8_t first, const struct pk *body)
{
    size_t rem = body->len;

    out->len = 0;
    put8(out, first);
    do {
        uint8_t b = rem & 0x7f;

        rem >>= 7;
        put8(out, rem ? (uint8_t)(b | 0x80) : b);
    } while (rem);
    put(out, body->b, body->len);
}

static struct pk *newpk(void)
{
    struct pk *p = calloc(1, sizeof(*p));

    assert_non_null(p);
    return p;
}

#define USERNAME                                                                                 \
    "0ne00ABC123/registrations/my-device-01/api-version=2019-03-31&ClientVersion="               \
    "azure-iot-provisioning-device%2F1.9.1"
#define PASSWORD                                                                                 \
    "SharedAccessSignature sr=0ne00ABC123/registrations/my-device-01&sig=UfHe96bZkR5vZcPmaPXvbv" \
    "hRs0TL46FFXCzLs%2FX06Ug%3D&skn=registration&se=1795981840"

/* A CONNECT as the Node SDK sends it (protocol doc §10.2), with the given flags. */
static void connect_packet(struct pk *out, const char *name, uint8_t level, uint8_t flags,
                           const char *client_id, const char *user, const char *pass)
{
    struct pk *v = newpk();

    putstr(v, name);
    put8(v, level);
    put8(v, flags);
    put16(v, 180);
    putstr(v, client_id);
    if (flags & 0x04) {
        putstr(v, "will/topic");
        putstr(v, "bye");
    }
    if (user != NULL)
        putstr(v, user);
    if (pass != NULL)
        putstr(v, pass);
    frame(out, 0x10, v);
    free(v);
}

static int decode(const struct pk *p, struct mqtt_packet *pkt)
{
    const char *why = NULL;
    int r = mqtt_decode(p->b, p->len, MAX, pkt, &why);

    if (r == PROV_EPROTO || r == PROV_ELIMIT)
        assert_non_null(why); /* every refusal says why */
    return r;
}

static void assert_str(const struct mqtt_str *s, const char *want)
{
    assert_int_equal(s->len, strlen(want));
    assert_memory_equal(s->p, want, s->len);
}

/* ---- CONNECT --------------------------------------------------------------- */

static void test_connect_node(void **state)
{
    struct pk *p = newpk();
    struct mqtt_packet pkt;

    (void)state;
    connect_packet(p, "MQTT", 4, 0xc2, "my-device-01", USERNAME, PASSWORD);
    /* the first bytes match the capture: 10 a0 02 00 04 'MQTT' 04 c2 00 b4 00 0c */
    assert_int_equal(p->b[0], 0x10);
    assert_int_equal(p->b[1], 0xa0);
    assert_int_equal(p->b[2], 0x02);
    assert_int_equal(p->len, 291);
    assert_int_equal(decode(p, &pkt), 0);
    assert_int_equal(pkt.type, MQTT_CONNECT);
    assert_int_equal(pkt.size, 291);
    assert_int_equal(pkt.connect.level, 4);
    assert_false(pkt.connect.unsupported);
    assert_true(pkt.connect.clean_session);
    assert_int_equal(pkt.connect.keepalive, 180);
    assert_str(&pkt.connect.client_id, "my-device-01");
    assert_true(pkt.connect.has_username);
    assert_str(&pkt.connect.username, USERNAME);
    assert_true(pkt.connect.has_password);
    assert_str(&pkt.connect.password, PASSWORD);
    assert_false(pkt.connect.has_will);
    free(p);
}

static void test_connect_variants(void **state)
{
    struct pk *p = newpk();
    struct mqtt_packet pkt;

    (void)state;
    /* X.509: user name, no password */
    connect_packet(p, "MQTT", 4, 0x82, "x509-device-01", USERNAME, NULL);
    assert_int_equal(decode(p, &pkt), 0);
    assert_true(pkt.connect.has_username);
    assert_false(pkt.connect.has_password);
    /* clean session 0 (Python, Embedded C), no user name at all, empty client id */
    connect_packet(p, "MQTT", 4, 0x00, "", NULL, NULL);
    assert_int_equal(decode(p, &pkt), 0);
    assert_false(pkt.connect.clean_session);
    assert_false(pkt.connect.has_username);
    assert_int_equal(pkt.connect.client_id.len, 0);
    /* a will (QoS 1, retained) is decoded */
    connect_packet(p, "MQTT", 4, 0x02 | 0x04 | 0x08 | 0x20, "d", NULL, NULL);
    assert_int_equal(decode(p, &pkt), 0);
    assert_true(pkt.connect.has_will);
    assert_int_equal(pkt.connect.will_qos, 1);
    assert_true(pkt.connect.will_retain);
    assert_str(&pkt.connect.will_topic, "will/topic");
    assert_str(&pkt.connect.will_message, "bye");
    /* a password may hold any byte (binary data) */
    {
        struct pk *v = newpk();

        putstr(v, "MQTT");
        put8(v, 4);
        put8(v, 0xc2);
        put16(v, 0);
        putstr(v, "d");
        putstr(v, "u");
        put16(v, 3);
        put(v, "a\0\xff", 3);
        frame(p, 0x10, v);
        free(v);
    }
    assert_int_equal(decode(p, &pkt), 0);
    assert_int_equal(pkt.connect.password.len, 3);
    assert_int_equal(pkt.connect.keepalive, 0);
    free(p);
}

static void test_connect_protocol_level(void **state)
{
    struct pk *p = newpk();
    struct mqtt_packet pkt;

    (void)state;
    /* MQTT 3.1.1's name at level 3 or 5: decoded as unsupported (CONNACK 1) */
    connect_packet(p, "MQTT", 3, 0xc2, "d", "u", "p");
    assert_int_equal(decode(p, &pkt), 0);
    assert_true(pkt.connect.unsupported);
    assert_int_equal(pkt.connect.level, 3);
    connect_packet(p, "MQTT", 5, 0xc2, "d", "u", "p");
    assert_int_equal(decode(p, &pkt), 0);
    assert_true(pkt.connect.unsupported);
    /* MQTT 3.1 */
    connect_packet(p, "MQIsdp", 3, 0xc2, "d", "u", "p");
    assert_int_equal(decode(p, &pkt), 0);
    assert_true(pkt.connect.unsupported);
    /* any other protocol name is malformed */
    connect_packet(p, "MQTX", 4, 0xc2, "d", "u", "p");
    assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    connect_packet(p, "mqtt", 4, 0xc2, "d", "u", "p");
    assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    connect_packet(p, "", 4, 0xc2, "d", "u", "p");
    assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    free(p);
}

static void test_connect_flags(void **state)
{
    struct pk *p = newpk();
    struct mqtt_packet pkt;

    (void)state;
    /* reserved flag */
    connect_packet(p, "MQTT", 4, 0xc3, "d", "u", "p");
    assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    /* password without a user name */
    connect_packet(p, "MQTT", 4, 0x42, "d", NULL, "p");
    assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    /* will QoS or will retain without the will flag */
    connect_packet(p, "MQTT", 4, 0x02 | 0x08, "d", NULL, NULL);
    assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    connect_packet(p, "MQTT", 4, 0x02 | 0x20, "d", NULL, NULL);
    assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    /* will QoS 3 */
    connect_packet(p, "MQTT", 4, 0x02 | 0x04 | 0x18, "d", NULL, NULL);
    assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    /* fixed-header flags must be 0 */
    connect_packet(p, "MQTT", 4, 0xc2, "d", "u", "p");
    p->b[0] = 0x11;
    assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    free(p);
}

static void test_connect_lengths(void **state)
{
    struct pk *p = newpk(), *v = newpk();
    struct mqtt_packet pkt;

    (void)state;
    /* the user name's length runs past the end of the packet */
    putstr(v, "MQTT");
    put8(v, 4);
    put8(v, 0x82);
    put16(v, 60);
    putstr(v, "d");
    put16(v, 50);
    put(v, "short", 5);
    frame(p, 0x10, v);
    assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    /* a password flag without the password */
    v->len = 0;
    putstr(v, "MQTT");
    put8(v, 4);
    put8(v, 0xc2);
    put16(v, 60);
    putstr(v, "d");
    putstr(v, "u");
    frame(p, 0x10, v);
    assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    /* bytes after the last field */
    v->len = 0;
    putstr(v, "MQTT");
    put8(v, 4);
    put8(v, 0x82);
    put16(v, 60);
    putstr(v, "d");
    putstr(v, "u");
    put8(v, 0);
    frame(p, 0x10, v);
    assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    /* truncated variable header */
    v->len = 0;
    putstr(v, "MQTT");
    put8(v, 4);
    put8(v, 0x02);
    frame(p, 0x10, v);
    assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    free(p);
    free(v);
}

static void test_connect_strings(void **state)
{
    static const char *const bad[] = {
        "a\xc0\x80",          /* overlong NUL */
        "\xe0\x80\xaf",       /* overlong '/' */
        "\xed\xa0\x80",       /* surrogate U+D800 */
        "\xf4\x90\x80\x80",   /* U+110000 */
        "\xff",               /* never valid */
        "\x80",               /* lone continuation */
        "ab\xe2\x82",         /* truncated sequence */
    };
    struct pk *p = newpk();
    struct mqtt_packet pkt;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        connect_packet(p, "MQTT", 4, 0x82, bad[i], "u", NULL);
        assert_int_equal(decode(p, &pkt), PROV_EPROTO);
        connect_packet(p, "MQTT", 4, 0x82, "d", bad[i], NULL);
        assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    }
    /* U+0000 inside a user name: the length says 3, the middle byte is NUL */
    connect_packet(p, "MQTT", 4, 0x82, "d", "uXu", NULL);
    p->b[p->len - 2] = '\0';
    assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    /* well-formed multi-byte text is fine */
    connect_packet(p, "MQTT", 4, 0x82, "d\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", "u", NULL);
    assert_int_equal(decode(p, &pkt), 0);
    free(p);
}

static void test_utf8(void **state)
{
    (void)state;
    assert_true(mqtt_utf8_valid("", 0));
    assert_true(mqtt_utf8_valid("plain", 5));
    assert_true(mqtt_utf8_valid("\xc2\x80", 2));
    assert_true(mqtt_utf8_valid("\xed\x9f\xbf", 3));     /* U+D7FF */
    assert_true(mqtt_utf8_valid("\xee\x80\x80", 3));     /* U+E000 */
    assert_true(mqtt_utf8_valid("\xf4\x8f\xbf\xbf", 4)); /* U+10FFFF */
    assert_false(mqtt_utf8_valid("\0", 1));
    assert_false(mqtt_utf8_valid("\xc1\xbf", 2));
    assert_false(mqtt_utf8_valid("\xf0\x8f\xbf\xbf", 4)); /* overlong */
    assert_false(mqtt_utf8_valid("\xed\xbf\xbf", 3));     /* surrogate U+DFFF */
    assert_false(mqtt_utf8_valid("\xc3", 1));
    assert_false(mqtt_utf8_valid("\xc3\x28", 2));
}

/* ---- framing --------------------------------------------------------------- */

static void test_remaining_length(void **state)
{
    const char *why;
    size_t size = 0;
    struct mqtt_packet pkt;

    (void)state;
    /* five length bytes: malformed as soon as the fourth has its continuation bit */
    {
        const uint8_t b[] = {0x30, 0xff, 0xff, 0xff, 0xff, 0x01};

        assert_int_equal(mqtt_frame(b, 5, MQTT_MAX_REMAINING + 10, &size, &why), PROV_EPROTO);
        assert_int_equal(mqtt_frame(b, 6, MQTT_MAX_REMAINING + 10, &size, &why), PROV_EPROTO);
        assert_int_equal(mqtt_decode(b, 6, MAX, &pkt, &why), PROV_EPROTO);
        /* three continuation bytes: more is needed to tell */
        assert_int_equal(mqtt_frame(b, 4, MQTT_MAX_REMAINING + 10, &size, &why), PROV_EAGAIN);
    }
    /* not the shortest form */
    {
        const uint8_t zero2[] = {0xc0, 0x80, 0x00};
        const uint8_t short3[] = {0x30, 0x85, 0x80, 0x00};

        assert_int_equal(mqtt_frame(zero2, 3, MAX, &size, &why), PROV_EPROTO);
        assert_int_equal(mqtt_frame(short3, 4, MAX, &size, &why), PROV_EPROTO);
    }
    /* four bytes, largest value: refused by size, not by form */
    {
        const uint8_t b[] = {0x30, 0xff, 0xff, 0xff, 0x7f};

        assert_int_equal(mqtt_frame(b, 5, MAX, &size, &why), PROV_ELIMIT);
        assert_int_equal(mqtt_frame(b, 5, (size_t)MQTT_MAX_REMAINING + 5, &size, &why), 0);
        assert_int_equal(size, (size_t)MQTT_MAX_REMAINING + 5);
    }
    /* boundaries of the encoding */
    {
        const uint8_t b127[] = {0x30, 0x7f}, b128[] = {0x30, 0x80, 0x01},
                      b16383[] = {0x30, 0xff, 0x7f}, b16384[] = {0x30, 0x80, 0x80, 0x01};

        assert_int_equal(mqtt_frame(b127, 2, MAX, &size, &why), 0);
        assert_int_equal(size, 2 + 127);
        assert_int_equal(mqtt_frame(b128, 3, MAX, &size, &why), 0);
        assert_int_equal(size, 3 + 128);
        assert_int_equal(mqtt_frame(b16383, 3, MAX, &size, &why), 0);
        assert_int_equal(size, 3 + 16383);
        assert_int_equal(mqtt_frame(b16384, 4, MAX, &size, &why), 0);
        assert_int_equal(size, 4 + 16384);
    }
    /* nothing, or only the type byte: need more */
    assert_int_equal(mqtt_frame((const uint8_t *)"", 0, MAX, &size, &why), PROV_EAGAIN);
    assert_int_equal(mqtt_frame((const uint8_t *)"\x30", 1, MAX, &size, &why), PROV_EAGAIN);
}

static void test_oversize(void **state)
{
    struct pk *p = newpk(), *v = newpk();
    struct mqtt_packet pkt;
    size_t size;
    const char *why;
    int r;

    (void)state;
    /* exactly the maximum is fine; one more byte is refused from the header alone */
    putstr(v, "$dps/registrations/PUT/iotdps-register/?$rid=1");
    put16(v, 7);
    while (v->len < MAX - 4)
        put8(v, 'x');
    frame(p, 0x32, v);
    assert_int_equal(p->len, MAX);
    assert_int_equal(decode(p, &pkt), 0);
    assert_int_equal(pkt.publish.payload_len,
                     MAX - 4 - 2 - strlen("$dps/registrations/PUT/iotdps-register/?$rid=1") - 2);
    put8(v, 'x');
    frame(p, 0x32, v);
    assert_int_equal(p->len, MAX + 1);
    assert_int_equal(mqtt_frame(p->b, 4, MAX, &size, &why), PROV_ELIMIT);
    r = decode(p, &pkt);
    assert_int_equal(r, PROV_ELIMIT);
    free(p);
    free(v);
}

static void test_incremental(void **state)
{
    struct pk *p = newpk();
    struct mqtt_packet pkt;

    (void)state;
    connect_packet(p, "MQTT", 4, 0xc2, "my-device-01", USERNAME, PASSWORD);
    for (size_t n = 0; n < p->len; n++)
        assert_int_equal(mqtt_decode(p->b, n, MAX, &pkt, NULL), PROV_EAGAIN);
    assert_int_equal(mqtt_decode(p->b, p->len, MAX, &pkt, NULL), 0);
    /* two packets back to back: the first is decoded, its size says where the next starts */
    {
        size_t first = p->len;

        p->b[p->len++] = 0xc0; /* PINGREQ */
        p->b[p->len++] = 0x00;
        assert_int_equal(mqtt_decode(p->b, p->len, MAX, &pkt, NULL), 0);
        assert_int_equal(pkt.size, first);
        assert_int_equal(mqtt_decode(p->b + first, 2, MAX, &pkt, NULL), 0);
        assert_int_equal(pkt.type, MQTT_PINGREQ);
    }
    free(p);
}

static void test_fixed_header_flags(void **state)
{
    struct mqtt_packet pkt;
    const char *why;
    /* the first byte of each, with wrong flags */
    static const uint8_t bad[][2] = {
        {0x12, 0x00}, {0x41, 0x00}, {0x80, 0x00}, {0x83, 0x00}, {0xa0, 0x00},
        {0xc1, 0x00}, {0xe8, 0x00}, {0x00, 0x00}, {0xf0, 0x00}, {0x36, 0x00},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(mqtt_decode(bad[i], 2, MAX, &pkt, &why), PROV_EPROTO);
    /* right flags, wrong length: PINGREQ and DISCONNECT carry nothing, PUBACK two bytes */
    assert_int_equal(mqtt_decode((const uint8_t *)"\xc0\x01\x00", 3, MAX, &pkt, &why),
                     PROV_EPROTO);
    assert_int_equal(mqtt_decode((const uint8_t *)"\xe0\x01\x00", 3, MAX, &pkt, &why),
                     PROV_EPROTO);
    assert_int_equal(mqtt_decode((const uint8_t *)"\x40\x01\x00", 3, MAX, &pkt, &why),
                     PROV_EPROTO);
    assert_int_equal(mqtt_decode((const uint8_t *)"\x40\x03\x00\x01\x00", 5, MAX, &pkt, &why),
                     PROV_EPROTO);
    /* server-to-client packets and the QoS 2 flow are refused */
    assert_int_equal(mqtt_decode((const uint8_t *)"\x20\x02\x00\x00", 4, MAX, &pkt, &why),
                     PROV_EPROTO);
    assert_int_equal(mqtt_decode((const uint8_t *)"\xd0\x00", 2, MAX, &pkt, &why), PROV_EPROTO);
    assert_int_equal(mqtt_decode((const uint8_t *)"\x90\x03\x00\x01\x00", 5, MAX, &pkt, &why),
                     PROV_EPROTO);
    assert_int_equal(mqtt_decode((const uint8_t *)"\x50\x02\x00\x01", 4, MAX, &pkt, &why),
                     PROV_EPROTO);
    assert_int_equal(mqtt_decode((const uint8_t *)"\x62\x02\x00\x01", 4, MAX, &pkt, &why),
                     PROV_EPROTO);
    /* the good ones */
    assert_int_equal(mqtt_decode((const uint8_t *)"\xc0\x00", 2, MAX, &pkt, &why), 0);
    assert_int_equal(pkt.type, MQTT_PINGREQ);
    assert_int_equal(mqtt_decode((const uint8_t *)"\xe0\x00", 2, MAX, &pkt, &why), 0);
    assert_int_equal(pkt.type, MQTT_DISCONNECT);
    assert_int_equal(mqtt_decode((const uint8_t *)"\x40\x02\x12\x34", 4, MAX, &pkt, &why), 0);
    assert_int_equal(pkt.type, MQTT_PUBACK);
    assert_int_equal(pkt.packet_id, 0x1234);
    /* packet id 0: C# acknowledges QoS 0 answers that way */
    assert_int_equal(mqtt_decode((const uint8_t *)"\x40\x02\x00\x00", 4, MAX, &pkt, &why), 0);
}

/* ---- PUBLISH, SUBSCRIBE, UNSUBSCRIBE ---------------------------------------- */

static void publish_packet(struct pk *out, uint8_t flags, const char *topic, uint16_t id,
                           const char *payload)
{
    struct pk *v = newpk();

    putstr(v, topic);
    if ((flags >> 1) & 3)
        put16(v, id);
    put(v, payload, strlen(payload));
    frame(out, (uint8_t)(0x30 | flags), v);
    free(v);
}

static void test_publish(void **state)
{
    struct pk *p = newpk();
    struct mqtt_packet pkt;
    const char *topic = "$dps/registrations/PUT/iotdps-register/?$rid=e6795cef";

    (void)state;
    publish_packet(p, 0x02, topic, 49227, "{\"registrationId\":\"my-device-01\"}");
    assert_int_equal(decode(p, &pkt), 0);
    assert_int_equal(pkt.type, MQTT_PUBLISH);
    assert_int_equal(pkt.publish.qos, 1);
    assert_int_equal(pkt.publish.packet_id, 49227);
    assert_false(pkt.publish.dup);
    assert_false(pkt.publish.retain);
    assert_str(&pkt.publish.topic, topic);
    assert_int_equal(pkt.publish.payload_len, 33);
    assert_memory_equal(pkt.publish.payload, "{\"registrationId\"", 17);
    /* QoS 0 (C SDK), with RETAIN; an empty payload (C#) */
    publish_packet(p, 0x01, topic, 0, "");
    assert_int_equal(decode(p, &pkt), 0);
    assert_int_equal(pkt.publish.qos, 0);
    assert_true(pkt.publish.retain);
    assert_int_equal(pkt.publish.packet_id, 0);
    assert_int_equal(pkt.publish.payload_len, 0);
    /* QoS 1 re-sent with DUP */
    publish_packet(p, 0x0a, topic, 7, " ");
    assert_int_equal(decode(p, &pkt), 0);
    assert_true(pkt.publish.dup);
    /* QoS 2 and 3, DUP at QoS 0, packet id 0, wildcards, empty topic, bad UTF-8 */
    publish_packet(p, 0x04, topic, 7, "x");
    assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    publish_packet(p, 0x06, topic, 7, "x");
    assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    publish_packet(p, 0x08, topic, 0, "x");
    assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    publish_packet(p, 0x02, topic, 0, "x");
    assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    publish_packet(p, 0x00, "a/+/b", 0, "x");
    assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    publish_packet(p, 0x00, "a/#", 0, "x");
    assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    publish_packet(p, 0x00, "", 0, "x");
    assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    publish_packet(p, 0x00, "a\xed\xa0\x80", 0, "x");
    assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    /* topic length beyond the packet; QoS 1 without room for the packet id */
    {
        static const uint8_t b1[] = {0x30, 0x04, 0x00, 0x09, 'a', 'b'};
        static const uint8_t b2[] = {0x32, 0x03, 0x00, 0x01, 'a'};

        assert_int_equal(mqtt_decode(b1, sizeof(b1), MAX, &pkt, NULL), PROV_EPROTO);
        assert_int_equal(mqtt_decode(b2, sizeof(b2), MAX, &pkt, NULL), PROV_EPROTO);
    }
    free(p);
}

static void subscribe_packet(struct pk *out, uint8_t first, uint16_t id, const char *const *f,
                             const uint8_t *qos, size_t n)
{
    struct pk *v = newpk();

    put16(v, id);
    for (size_t i = 0; i < n; i++) {
        putstr(v, f[i]);
        if (qos != NULL)
            put8(v, qos[i]);
    }
    frame(out, first, v);
    free(v);
}

static void test_subscribe(void **state)
{
    struct pk *p = newpk();
    struct mqtt_packet pkt;
    const char *const one[] = {"$dps/registrations/res/#"};
    const char *const two[] = {"$dps/registrations/res/#", "a/+/c"};
    const uint8_t q1[] = {1}, q12[] = {1, 2};

    (void)state;
    subscribe_packet(p, 0x82, 49226, one, q1, 1);
    assert_int_equal(decode(p, &pkt), 0);
    assert_int_equal(pkt.type, MQTT_SUBSCRIBE);
    assert_int_equal(pkt.subscribe.packet_id, 49226);
    assert_int_equal(pkt.subscribe.count, 1);
    assert_str(&pkt.subscribe.filters[0], one[0]);
    assert_int_equal(pkt.subscribe.qos[0], 1);
    subscribe_packet(p, 0x82, 2, two, q12, 2);
    assert_int_equal(decode(p, &pkt), 0);
    assert_int_equal(pkt.subscribe.count, 2);
    assert_int_equal(pkt.subscribe.qos[1], 2);
    /* UNSUBSCRIBE: filters without QoS */
    subscribe_packet(p, 0xa2, 49230, one, NULL, 1);
    assert_int_equal(decode(p, &pkt), 0);
    assert_int_equal(pkt.type, MQTT_UNSUBSCRIBE);
    assert_int_equal(pkt.subscribe.packet_id, 49230);
    assert_str(&pkt.subscribe.filters[0], one[0]);
    /* no filter, packet id 0, a bad QoS byte, reserved QoS bits, a missing QoS byte */
    subscribe_packet(p, 0x82, 3, one, q1, 0);
    assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    subscribe_packet(p, 0xa2, 3, one, NULL, 0);
    assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    subscribe_packet(p, 0x82, 0, one, q1, 1);
    assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    {
        const uint8_t q3[] = {3}, q81[] = {0x81};

        subscribe_packet(p, 0x82, 3, one, q3, 1);
        assert_int_equal(decode(p, &pkt), PROV_EPROTO);
        subscribe_packet(p, 0x82, 3, one, q81, 1);
        assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    }
    subscribe_packet(p, 0x82, 3, one, NULL, 1);
    assert_int_equal(decode(p, &pkt), PROV_EPROTO);
    /* invalid filters */
    {
        const char *const bad[] = {"a/#/b", "a#", "a/b+", "+a", ""};

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            subscribe_packet(p, 0x82, 3, &bad[i], q1, 1);
            assert_int_equal(decode(p, &pkt), PROV_EPROTO);
        }
    }
    /* more filters than provd takes */
    {
        const char *f[MQTT_MAX_FILTERS + 1];
        uint8_t q[MQTT_MAX_FILTERS + 1] = {0};

        for (size_t i = 0; i <= MQTT_MAX_FILTERS; i++)
            f[i] = "x/y";
        subscribe_packet(p, 0x82, 3, f, q, MQTT_MAX_FILTERS);
        assert_int_equal(decode(p, &pkt), 0);
        subscribe_packet(p, 0x82, 3, f, q, MQTT_MAX_FILTERS + 1);
        assert_int_equal(decode(p, &pkt), PROV_ELIMIT);
    }
    free(p);
}

static void test_topic_match(void **state)
{
    const char *res = "$dps/registrations/res/202/?$rid=1&retry-after=3";
#define M(f, t) mqtt_topic_match((f), strlen(f), (t), strlen(t))

    (void)state;
    assert_true(M("$dps/registrations/res/#", res));
    assert_true(M(res, res));
    assert_true(M("$dps/registrations/res/+/?$rid=1&retry-after=3", res));
    assert_true(M("$dps/+/res/#", res));
    assert_true(M("a/#", "a"));
    assert_true(M("a/#", "a/b/c"));
    assert_true(M("a/+", "a/"));
    assert_true(M("+/+", "/x"));
    assert_false(M("#", res)); /* wildcards do not match $ topics */
    assert_false(M("+/registrations/res/#", res));
    assert_false(M("$dps/registrations/res/200/#", res));
    assert_false(M("$dps/registrations/res/+", res));
    assert_false(M("a/+", "a"));
    assert_false(M("a/b", "a/b/c"));
    assert_false(M("a/b/c", "a/b"));
    assert_false(M("a", "ab"));
    assert_true(M("#", "a/b"));
#undef M
}

/* ---- encoders ---------------------------------------------------------------- */

static void test_encode_small(void **state)
{
    uint8_t b[32];
    size_t n = 0;
    const uint8_t codes[] = {1, MQTT_SUBACK_FAILURE, 0};

    (void)state;
    assert_int_equal(mqtt_encode_connack(false, 0, b, sizeof(b), &n), 0);
    assert_int_equal(n, 4);
    assert_memory_equal(b, "\x20\x02\x00\x00", 4);
    assert_int_equal(mqtt_encode_connack(false, MQTT_CONNACK_NOT_AUTHORIZED, b, sizeof(b), &n), 0);
    assert_memory_equal(b, "\x20\x02\x00\x05", 4);
    assert_int_equal(mqtt_encode_connack(true, 0, b, sizeof(b), &n), 0);
    assert_memory_equal(b, "\x20\x02\x01\x00", 4);
    assert_int_equal(mqtt_encode_connack(false, 6, b, sizeof(b), &n), PROV_EINVAL);
    assert_int_equal(mqtt_encode_connack(true, 4, b, sizeof(b), &n), PROV_EINVAL);
    assert_int_equal(mqtt_encode_connack(false, 0, b, 3, &n), PROV_ELIMIT);
    assert_int_equal(mqtt_encode_suback(0xc04a, codes, 3, b, sizeof(b), &n), 0);
    assert_int_equal(n, 7);
    assert_memory_equal(b, "\x90\x05\xc0\x4a\x01\x80\x00", 7);
    assert_int_equal(mqtt_encode_suback(1, codes, 0, b, sizeof(b), &n), PROV_EINVAL);
    assert_int_equal(mqtt_encode_suback(1, (const uint8_t *)"\x03", 1, b, sizeof(b), &n),
                     PROV_EINVAL);
    assert_int_equal(mqtt_encode_suback(1, codes, 3, b, 6, &n), PROV_ELIMIT);
    assert_int_equal(mqtt_encode_unsuback(0xc04e, b, sizeof(b), &n), 0);
    assert_memory_equal(b, "\xb0\x02\xc0\x4e", 4);
    assert_int_equal(mqtt_encode_puback(49227, b, sizeof(b), &n), 0);
    assert_memory_equal(b, "\x40\x02\xc0\x4b", 4);
    assert_int_equal(mqtt_encode_pingresp(b, sizeof(b), &n), 0);
    assert_int_equal(n, 2);
    assert_memory_equal(b, "\xd0\x00", 2);
    assert_int_equal(mqtt_encode_pingresp(b, 1, &n), PROV_ELIMIT);
}

/* Encodes a PUBLISH with payload_len bytes and decodes it back. */
static void publish_round_trip(size_t payload_len)
{
    const char *topic = "$dps/registrations/res/202/?$rid=8194b20c&retry-after=1";
    size_t tlen = strlen(topic), need = mqtt_publish_size(tlen, payload_len), n = 0;
    uint8_t *payload = malloc(payload_len + 1), *out = malloc(need);
    struct mqtt_packet pkt;

    assert_non_null(payload);
    assert_non_null(out);
    for (size_t i = 0; i < payload_len; i++)
        payload[i] = (uint8_t)('a' + i % 26);
    assert_int_equal(mqtt_encode_publish(topic, tlen, payload, payload_len, out, need - 1, &n),
                     PROV_ELIMIT);
    assert_int_equal(mqtt_encode_publish(topic, tlen, payload, payload_len, out, need, &n), 0);
    assert_int_equal(n, need);
    assert_int_equal(out[0], 0x30); /* QoS 0, no DUP, no RETAIN */
    assert_int_equal(mqtt_decode(out, n, MAX + 1024, &pkt, NULL), 0);
    assert_int_equal(pkt.size, need);
    assert_int_equal(pkt.publish.qos, 0);
    assert_str(&pkt.publish.topic, topic);
    assert_int_equal(pkt.publish.payload_len, payload_len);
    if (payload_len > 0)
        assert_memory_equal(pkt.publish.payload, payload, payload_len);
    free(payload);
    free(out);
}

static void test_encode_publish(void **state)
{
    const size_t tlen = strlen("$dps/registrations/res/202/?$rid=8194b20c&retry-after=1");
    uint8_t b[8];
    size_t n;

    (void)state;
    publish_round_trip(0);
    publish_round_trip(1);
    /* remaining length 127 / 128 / 16383 / 16384: one, two and three length bytes */
    publish_round_trip(127 - 2 - tlen);
    publish_round_trip(128 - 2 - tlen);
    publish_round_trip(16383 - 2 - tlen);
    publish_round_trip(16384 - 2 - tlen);
    publish_round_trip(PROV_MAX_BODY);
    assert_int_equal(mqtt_publish_size(tlen, 127 - 2 - tlen), 2 + 127);
    assert_int_equal(mqtt_publish_size(tlen, 128 - 2 - tlen), 3 + 128);
    assert_int_equal(mqtt_publish_size(0, 1), 0);
    assert_int_equal(mqtt_publish_size(65536, 1), 0);
    assert_int_equal(mqtt_encode_publish("", 0, NULL, 0, b, sizeof(b), &n), PROV_EINVAL);
}

/* ---- DPS parsing --------------------------------------------------------------- */

static int user(const char *u, char *scope, char *rid)
{
    return mqtt_parse_username(u, strlen(u), scope, PROV_MAX_SCOPE + 1, rid, PROV_MAX_REG_ID + 1);
}

static void test_username(void **state)
{
    char scope[PROV_MAX_SCOPE + 1], rid[PROV_MAX_REG_ID + 1];
    static const char *const bad_shape[] = {
        "", "0ne00ABC123", "0ne00ABC123/registrations/dev", "0ne00ABC123/registrations/dev/",
        "0ne00ABC123/registrations/dev/ClientVersion=x",
        "0ne00ABC123/Registrations/dev/api-version=1",
        "/registrations/dev/api-version=1", "0ne00ABC123/registrations//api-version=1",
        "0ne00ABC123/devices/dev/api-version=1", "0ne00ABC123/registrations/dev/api-versio",
        "0ne%zz/registrations/dev/api-version=1",
    };

    (void)state;
    /* Node, C, Python (percent-encoded client version), Embedded C (no ClientVersion) */
    assert_int_equal(user(USERNAME, scope, rid), 0);
    assert_string_equal(scope, "0ne00ABC123");
    assert_string_equal(rid, "my-device-01");
    assert_int_equal(user("0ne00ABC123/registrations/dev/api-version=2021-06-01&ClientVersion="
                          "1.15.0", scope, rid), 0);
    assert_string_equal(rid, "dev");
    assert_int_equal(user("0ne00ABC123/registrations/dev/api-version=2019-03-31", scope, rid), 0);
    /* a percent-encoded registration id is decoded */
    assert_int_equal(user("0ne00ABC123/registrations/dev%2Dx%3a1/api-version=1", scope, rid), 0);
    assert_string_equal(rid, "dev-x:1");
    for (size_t i = 0; i < sizeof(bad_shape) / sizeof(bad_shape[0]); i++)
        assert_int_equal(user(bad_shape[i], scope, rid), PROV_EPROTO);
    /* a registration id that does not decode, or is too long: identifier rejected */
    assert_int_equal(user("0ne00ABC123/registrations/dev%4/api-version=1", scope, rid),
                     PROV_EINVAL);
    assert_int_equal(user("0ne00ABC123/registrations/a%00b/api-version=1", scope, rid),
                     PROV_EINVAL);
    {
        char u[512];

        snprintf(u, sizeof(u), "s/registrations/%0129d/api-version=1", 7);
        assert_int_equal(user(u, scope, rid), PROV_EINVAL);
        snprintf(u, sizeof(u), "s/registrations/%0128d/api-version=1", 7);
        assert_int_equal(user(u, scope, rid), 0);
        snprintf(u, sizeof(u), "%065d/registrations/x/api-version=1", 7);
        assert_int_equal(user(u, scope, rid), PROV_EPROTO);
    }
}

static int topic(const char *t, struct mqtt_dps_topic *out)
{
    return mqtt_parse_dps_topic(t, strlen(t), out);
}

static void test_request_topic(void **state)
{
    struct mqtt_dps_topic t;
    char longrid[PROV_MQTT_MAX_RID + 64];

    (void)state;
    assert_int_equal(topic("$dps/registrations/PUT/iotdps-register/?$rid=e6795cef-a246", &t), 0);
    assert_int_equal(t.op, MQTT_DPS_REGISTER);
    assert_int_equal(t.rid_len, strlen("e6795cef-a246"));
    assert_memory_equal(t.rid, "e6795cef-a246", t.rid_len);
    assert_null(t.opid);
    assert_int_equal(topic("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=53&"
                           "operationId=4.2548b37bc634e718.0ada8ebb", &t), 0);
    assert_int_equal(t.op, MQTT_DPS_POLL);
    assert_memory_equal(t.rid, "53", 2);
    assert_int_equal(t.opid_len, strlen("4.2548b37bc634e718.0ada8ebb"));
    /* any order, unknown parameters ignored, percent-encoded values kept raw */
    assert_int_equal(topic("$dps/registrations/GET/iotdps-get-operationstatus/?x=1&operationId="
                           "4.a%2Eb&$rid=1", &t), 0);
    assert_memory_equal(t.opid, "4.a%2Eb", t.opid_len);
    assert_int_equal(t.rid_len, 1);
    /* not a request topic */
    assert_int_equal(topic("devices/d/messages/events/", &t), PROV_ENOTFOUND);
    assert_int_equal(topic("$dps/registrations/PUT/iotdps-register", &t), PROV_ENOTFOUND);
    assert_int_equal(topic("$dps/registrations/put/iotdps-register/?$rid=1", &t), PROV_ENOTFOUND);
    assert_int_equal(topic("$dps/registrations/res/202/?$rid=1", &t), PROV_ENOTFOUND);
    assert_int_equal(topic("$dps/registrations/POST/iotdps-register/?$rid=1", &t), PROV_ENOTFOUND);
    /* request topics without a usable $rid */
    assert_int_equal(topic("$dps/registrations/PUT/iotdps-register/?", &t), PROV_EPROTO);
    assert_int_equal(topic("$dps/registrations/PUT/iotdps-register/?$rid=", &t), PROV_EPROTO);
    assert_int_equal(topic("$dps/registrations/PUT/iotdps-register/?rid=1", &t), PROV_EPROTO);
    snprintf(longrid, sizeof(longrid), "$dps/registrations/PUT/iotdps-register/?$rid=%0*d",
             PROV_MQTT_MAX_RID, 1);
    assert_int_equal(topic(longrid, &t), 0);
    snprintf(longrid, sizeof(longrid), "$dps/registrations/PUT/iotdps-register/?$rid=%0*d",
             PROV_MQTT_MAX_RID + 1, 1);
    assert_int_equal(topic(longrid, &t), PROV_EPROTO);
}

static void test_registration_body(void **state)
{
    struct reg_reply reply;
    json_t *body = (json_t *)1;
#define PARSE(s, tr) dps_parse_registration((s), strlen(s), "dev-1", (tr), &body, &reply)

    (void)state;
    assert_int_equal(dps_parse_registration("", 0, "dev-1", DPS_TRANSPORT_MQTT, &body, &reply), 0);
    assert_null(body);
    assert_int_equal(PARSE("{\"registrationId\":\"DEV-1\",\"payload\":{\"a\":1}}",
                           DPS_TRANSPORT_MQTT), 0);
    assert_non_null(body);
    assert_non_null(json_object_get(body, "payload"));
    json_decref(body);
    /* TPM over MQTT: refused with a clear DPS error */
    assert_int_equal(PARSE("{\"registrationId\":\"dev-1\",\"tpm\":{\"endorsementKey\":\"AAA=\","
                           "\"storageRootKey\":\"AAA=\"}}", DPS_TRANSPORT_MQTT), PROV_EPROTO);
    assert_null(body);
    assert_int_equal(reply.status, 400);
    assert_int_equal(reply.error_code, 400008);
    assert_non_null(strstr(reply.message, "TPM"));
    assert_non_null(strstr(reply.message, "MQTT"));
    /* over HTTPS TPM is supported: an empty tpm member is a bad body */
    assert_int_equal(PARSE("{\"tpm\":{}}", DPS_TRANSPORT_HTTPS), PROV_EPROTO);
    assert_int_equal(reply.error_code, 400004);
    assert_null(strstr(reply.message, "MQTT"));
    assert_int_equal(PARSE("{\"registrationId\":\"other\"}", DPS_TRANSPORT_MQTT), PROV_EPROTO);
    assert_int_equal(reply.error_code, 400003);
    assert_int_equal(PARSE("{\"registrationId\":5}", DPS_TRANSPORT_MQTT), PROV_EPROTO);
    assert_int_equal(reply.error_code, 400003);
    assert_int_equal(PARSE("{\"registrationId\":", DPS_TRANSPORT_MQTT), PROV_EPROTO);
    assert_int_equal(reply.status, 400);
    assert_int_equal(reply.error_code, 400004);
    assert_int_equal(PARSE("[1]", DPS_TRANSPORT_MQTT), PROV_EPROTO);
    assert_int_equal(reply.error_code, 400004);
    assert_int_equal(PARSE(" ", DPS_TRANSPORT_MQTT), PROV_EPROTO);
    assert_int_equal(PARSE("{\"a\":1,\"a\":2}", DPS_TRANSPORT_MQTT), PROV_EPROTO);
    assert_int_equal(reply.error_code, 400004);
#undef PARSE
}

static void test_error_body(void **state)
{
    struct reg_reply reply = {0};
    json_t *o = dps_error_body(401002, "abc", "registration not authorized");
    const char *ts;

    (void)state;
    assert_non_null(o);
    assert_int_equal(json_object_size(o), 4);
    assert_int_equal(json_integer_value(json_object_get(o, "errorCode")), 401002);
    assert_string_equal(json_string_value(json_object_get(o, "trackingId")), "abc");
    assert_string_equal(json_string_value(json_object_get(o, "message")),
                        "registration not authorized");
    ts = json_string_value(json_object_get(o, "timestampUtc"));
    assert_non_null(ts);
    assert_int_equal(strlen(ts), 24);
    assert_int_equal(ts[23], 'Z');
    json_decref(o);
    /* a reply: errors become the error body, successes their document */
    reply.status = 404;
    reply.error_code = 404002;
    snprintf(reply.message, sizeof(reply.message), "operation not found");
    o = dps_reply_body(&reply, "t");
    assert_int_equal(json_integer_value(json_object_get(o, "errorCode")), 404002);
    json_decref(o);
    reply.status = 202;
    reply.body = json_pack("{s:s}", "status", "assigning");
    o = dps_reply_body(&reply, "t");
    assert_ptr_equal(o, reply.body);
    json_decref(o);
    reg_reply_release(&reply);
}

/* ---- --mqtt-listen ------------------------------------------------------------------ */

static int load(struct config *cfg, const char *a, const char *b, char *err, size_t errlen)
{
    char *argv[] = {(char *)"provd", (char *)"--tls-cert", (char *)"c.pem",
                    (char *)"--tls-key", (char *)"k.pem", (char *)"--id-scope", (char *)"s",
                    (char *)a, (char *)b, NULL};
    bool exit_now = false;
    int argc = a == NULL ? 7 : b == NULL ? 8 : 9;

    return config_load(cfg, argc, argv, &exit_now, err, errlen);
}

static void test_mqtt_listen_option(void **state)
{
    struct config *cfg = calloc(1, sizeof(*cfg));
    char err[256];
    static const struct {
        const char *v, *host, *port;
    } good[] = {
        {"127.0.0.1", "127.0.0.1", "8883"},     {"127.0.0.5:18883", "127.0.0.5", "18883"},
        {"localhost", "localhost", "8883"},     {"[::1]:8884", "::1", "8884"},
        {"[::1]", "::1", "8883"},               {"::1", "::1", "8883"},
        {"0.0.0.0:1", "0.0.0.0", "1"},
    };
    static const char *const bad[] = {
        ":8883", "1.2.3.4:", "1.2.3.4:0", "1.2.3.4:65536", "1.2.3.4:x", "[::1", "[::1]x",
        "[]:8883", "[::1]:", "",
    };

    (void)state;
    assert_non_null(cfg);
    assert_int_equal(load(cfg, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(cfg->nmqtt_listen, 0); /* no MQTT unless asked */
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_int_equal(load(cfg, "--mqtt-listen", good[i].v, err, sizeof(err)), 0);
        assert_int_equal(cfg->nmqtt_listen, 1);
        assert_string_equal(cfg->mqtt_listen[0].host, good[i].host);
        assert_string_equal(cfg->mqtt_listen[0].port, good[i].port);
        assert_int_equal(cfg->nlisten, 1); /* the HTTPS default is still there */
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_equal(load(cfg, "--mqtt-listen", bad[i], err, sizeof(err)), PROV_EINVAL);
        assert_non_null(strstr(err, "mqtt-listen"));
    }
    assert_int_equal(load(cfg, "--mqtt-listen=127.0.0.1:1883", NULL, err, sizeof(err)), 0);
    assert_string_equal(cfg->mqtt_listen[0].port, "1883");
    config_clear(cfg);
    free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_node),
        cmocka_unit_test(test_connect_variants),
        cmocka_unit_test(test_connect_protocol_level),
        cmocka_unit_test(test_connect_flags),
        cmocka_unit_test(test_connect_lengths),
        cmocka_unit_test(test_connect_strings),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_remaining_length),
        cmocka_unit_test(test_oversize),
        cmocka_unit_test(test_incremental),
        cmocka_unit_test(test_fixed_header_flags),
        cmocka_unit_test(test_publish),
        cmocka_unit_test(test_subscribe),
        cmocka_unit_test(test_topic_match),
        cmocka_unit_test(test_encode_small),
        cmocka_unit_test(test_encode_publish),
        cmocka_unit_test(test_username),
        cmocka_unit_test(test_request_topic),
        cmocka_unit_test(test_registration_body),
        cmocka_unit_test(test_error_body),
        cmocka_unit_test(test_mqtt_listen_option),
    };

    return cmocka_run_group_tests_name("mqtt", tests, NULL, NULL);
}
