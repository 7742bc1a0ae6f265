/*
 * libFuzzer target for provd's MQTT input: the codec (src/server/mqtt_codec.c)
 * and the DPS parsing on top of it (user name, request topic, subscription
 * match, DeviceRegistration payload). The input is a byte stream from a
 * connection, decoded packet after packet as mqtt_conn.c does. Invariants
 * checked (abort on violation):
 *   - a decoded packet lies inside the input and every string inside it;
 *   - every shorter prefix of a decoded packet asks for more bytes;
 *   - what the server would send back (PUBLISH answer, SUBACK, CONNACK)
 *     encodes and decodes back to the same topic and payload.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "src/common/errors.h"
#include "src/common/limits.h"
#include "src/server/dps_wire.h"
#include "src/server/mqtt_codec.h"
#include "src/server/mqtt_conn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                 \
    do {                                                                                         \
        if (!(c))                                                                                \
            abort();                                                                             \
    } while (0)

static void inside(const uint8_t *buf, size_t len, const void *p, size_t n)
{
    if (n == 0)
        return;
    CHECK((const uint8_t *)p >= buf && (const uint8_t *)p + n <= buf + len);
}

static void round_trip_publish(const char *topic, size_t tlen, const uint8_t *payload,
                               size_t plen)
{
    size_t need = mqtt_publish_size(tlen, plen), n = 0;
    uint8_t *out;
    struct mqtt_packet pkt;

    if (need == 0)
        return;
    out = malloc(need);
    if (out == NULL)
        return;
    CHECK(mqtt_encode_publish(topic, tlen, payload, plen, out, need, &n) == 0);
    CHECK(n == need);
    /* the topic came from a decoded packet, so it is valid: the answer decodes back */
    CHECK(mqtt_decode(out, n, need, &pkt, NULL) == 0);
    CHECK(pkt.type == MQTT_PUBLISH && pkt.size == n && pkt.publish.qos == 0);
    CHECK(pkt.publish.topic.len == tlen && memcmp(pkt.publish.topic.p, topic, tlen) == 0);
    CHECK(pkt.publish.payload_len == plen);
    CHECK(plen == 0 || memcmp(pkt.publish.payload, payload, plen) == 0);
    free(out);
}

static void on_packet(const uint8_t *buf, size_t len, const struct mqtt_packet *pkt)
{
    uint8_t b[64];
    size_t n;

    inside(buf, len, buf, pkt->size);
    switch (pkt->type) {
    case MQTT_CONNECT: {
        const struct mqtt_connect *c = &pkt->connect;
        char scope[PROV_MAX_SCOPE + 1], rid[PROV_MAX_REG_ID + 1];

        CHECK(mqtt_encode_connack(false, c->unsupported ? 1 : 0, b, sizeof(b), &n) == 0);
        if (c->unsupported)
            break;
        inside(buf, pkt->size, c->client_id.p, c->client_id.len);
        inside(buf, pkt->size, c->username.p, c->username.len);
        inside(buf, pkt->size, c->password.p, c->password.len);
        CHECK(mqtt_utf8_valid(c->client_id.p, c->client_id.len));
        if (c->has_username &&
            mqtt_parse_username(c->username.p, c->username.len, scope, sizeof(scope), rid,
                                sizeof(rid)) == 0) {
            CHECK(strlen(scope) > 0 && strlen(rid) > 0);
        }
        break;
    }
    case MQTT_PUBLISH: {
        const struct mqtt_publish *p = &pkt->publish;
        struct mqtt_dps_topic t;
        static const char *const filters[] = {"$dps/registrations/res/#", "#", "+/+/+/+/#",
                                              "$dps/registrations/PUT/+/#"};

        inside(buf, pkt->size, p->topic.p, p->topic.len);
        inside(buf, pkt->size, p->payload, p->payload_len);
        CHECK(p->qos <= 1 && (p->qos == 1) == (p->packet_id != 0));
        for (size_t i = 0; i < sizeof(filters) / sizeof(filters[0]); i++)
            (void)mqtt_topic_match(filters[i], strlen(filters[i]), p->topic.p, p->topic.len);
        CHECK(mqtt_topic_match(p->topic.p, p->topic.len, p->topic.p, p->topic.len));
        if (mqtt_parse_dps_topic(p->topic.p, p->topic.len, &t) == 0) {
            json_t *body = NULL;
            struct reg_reply reply;

            inside((const uint8_t *)p->topic.p, p->topic.len, t.rid, t.rid_len);
            CHECK(t.rid_len > 0 && t.rid_len <= PROV_MQTT_MAX_RID);
            if (t.opid != NULL)
                inside((const uint8_t *)p->topic.p, p->topic.len, t.opid, t.opid_len);
            if (t.op == MQTT_DPS_REGISTER && p->payload_len <= PROV_MAX_BODY &&
                dps_parse_registration((const char *)p->payload, p->payload_len, "fuzz-device",
                                       DPS_TRANSPORT_MQTT, &body, &reply) != 0)
                CHECK(reply.status == 400 && reply.error_code / 1000 == 400);
            json_decref(body);
        }
        round_trip_publish(p->topic.p, p->topic.len, p->payload, p->payload_len);
        break;
    }
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE: {
        uint8_t codes[MQTT_MAX_FILTERS];

        CHECK(pkt->subscribe.count >= 1 && pkt->subscribe.count <= MQTT_MAX_FILTERS);
        for (size_t i = 0; i < pkt->subscribe.count; i++) {
            inside(buf, pkt->size, pkt->subscribe.filters[i].p, pkt->subscribe.filters[i].len);
            CHECK(pkt->subscribe.qos[i] <= 2);
            codes[i] = pkt->subscribe.qos[i];
        }
        CHECK(mqtt_encode_suback(pkt->subscribe.packet_id, codes, pkt->subscribe.count, b,
                                 sizeof(b), &n) == 0);
        break;
    }
    default: break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    /* a small maximum half of the time, so the limit paths run too */
    size_t max = size > 0 && (data[0] & 1) ? 300 : PROV_MAX_MQTT_PACKET;

    while (off < size) {
        struct mqtt_packet pkt;
        const char *why = NULL;
        int r = mqtt_decode(data + off, size - off, max, &pkt, &why);

        if (r == PROV_EAGAIN)
            break;
        if (r != 0) {
            CHECK((r == PROV_EPROTO || r == PROV_ELIMIT) && why != NULL);
            break; /* the server closes the connection */
        }
        CHECK(pkt.size >= 2 && pkt.size <= size - off && pkt.size <= max);
        /* a shorter prefix of a good packet always asks for more */
        {
            struct mqtt_packet tmp;

            CHECK(mqtt_decode(data + off, pkt.size - 1, max, &tmp, NULL) == PROV_EAGAIN);
            CHECK(mqtt_decode(data + off, pkt.size / 2, max, &tmp, NULL) == PROV_EAGAIN);
        }
        on_packet(data + off, size - off, &pkt);
        off += pkt.size;
    }
    return 0;
}
