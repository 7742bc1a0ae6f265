/* prov-bench's MQTT 3.1.1 client codec (see bench_mqtt_wire.h). */
#include "bench_mqtt_wire.h"

#include <string.h>

#include <event2/buffer.h>

static size_t varint(size_t n, uint8_t out[4])
{
    size_t i = 0;

    do {
        uint8_t b = n % 128;

        n /= 128;
        out[i++] = n > 0 ? (uint8_t)(b | 0x80) : b;
    } while (n > 0 && i < 4);
    return i;
}

static int header(struct evbuffer *out, uint8_t first, size_t remaining)
{
    uint8_t h[5];
    size_t n;

    if (remaining > 268435455u)
        return -1;
    h[0] = first;
    n = varint(remaining, h + 1);
    return evbuffer_add(out, h, n + 1);
}

static int u16(struct evbuffer *out, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};

    return evbuffer_add(out, b, 2);
}

static int str(struct evbuffer *out, const char *s)
{
    size_t n = strlen(s);

    if (n > 65535 || u16(out, (uint16_t)n) != 0)
        return -1;
    return evbuffer_add(out, s, n);
}

int mw_connect(struct evbuffer *out, const char *client_id, const char *username,
               const char *password, uint16_t keepalive)
{
    static const uint8_t proto[] = {0, 4, 'M', 'Q', 'T', 'T', 4};
    size_t rem = sizeof(proto) + 1 + 2 + 2 + strlen(client_id);
    uint8_t flags = 0x02; /* clean session */

    if (username != NULL) {
        flags |= 0x80;
        rem += 2 + strlen(username);
    }
    if (password != NULL) {
        flags |= 0x40;
        rem += 2 + strlen(password);
    }
    if (header(out, MW_CONNECT << 4, rem) != 0 || evbuffer_add(out, proto, sizeof(proto)) != 0 ||
        evbuffer_add(out, &flags, 1) != 0 || u16(out, keepalive) != 0 || str(out, client_id) != 0)
        return -1;
    if (username != NULL && str(out, username) != 0)
        return -1;
    if (password != NULL && str(out, password) != 0)
        return -1;
    return 0;
}

int mw_subscribe(struct evbuffer *out, uint16_t packet_id, const char *filter, uint8_t qos)
{
    size_t rem = 2 + 2 + strlen(filter) + 1;

    if (header(out, (MW_SUBSCRIBE << 4) | 0x02, rem) != 0 || u16(out, packet_id) != 0 ||
        str(out, filter) != 0)
        return -1;
    return evbuffer_add(out, &qos, 1);
}

int mw_publish(struct evbuffer *out, const char *topic, const void *payload, size_t len,
               uint8_t qos, uint16_t packet_id)
{
    size_t rem = 2 + strlen(topic) + (qos > 0 ? 2 : 0) + len;

    if (header(out, (uint8_t)((MW_PUBLISH << 4) | (qos > 0 ? 0x02 : 0)), rem) != 0 ||
        str(out, topic) != 0)
        return -1;
    if (qos > 0 && u16(out, packet_id) != 0)
        return -1;
    return len > 0 ? evbuffer_add(out, payload, len) : 0;
}

int mw_pingreq(struct evbuffer *out)
{
    return header(out, MW_PINGREQ << 4, 0);
}

int mw_disconnect(struct evbuffer *out)
{
    return header(out, MW_DISCONNECT << 4, 0);
}

int mw_parse(const uint8_t *buf, size_t len, size_t max, struct mw_packet *p)
{
    size_t rem = 0, mult = 1, i = 1;

    if (len < 2)
        return 0;
    for (;;) {
        if (i >= len)
            return 0;
        if (i > 4)
            return -1;
        rem += (size_t)(buf[i] & 0x7f) * mult;
        mult *= 128;
        if ((buf[i++] & 0x80) == 0)
            break;
    }
    if (rem + i > max)
        return -1;
    if (len < rem + i)
        return 0;
    memset(p, 0, sizeof(*p));
    p->type = buf[0] >> 4;
    p->flags = buf[0] & 0x0f;
    p->size = rem + i;
    p->body = buf + i;
    p->body_len = rem;
    if (p->type == MW_PUBLISH) {
        size_t tl, off;

        if (rem < 2)
            return -1;
        tl = (size_t)p->body[0] << 8 | p->body[1];
        off = 2 + tl + (((p->flags >> 1) & 3) > 0 ? 2 : 0);
        if (off > rem)
            return -1;
        p->topic = (const char *)p->body + 2;
        p->topic_len = tl;
        p->payload = p->body + off;
        p->payload_len = rem - off;
    }
    return 1;
}
