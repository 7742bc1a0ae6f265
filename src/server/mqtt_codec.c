#include "mqtt_codec.h"

#include <string.h>

#include "../common/errors.h"

/* A cursor over the variable header and payload of one packet. */
struct rd {
    const uint8_t *p;
    size_t left;
};

static void set_why(const char **why, const char *s)
{
    if (why != NULL)
        *why = s;
}

static int fail(const char **why, int err, const char *s)
{
    set_why(why, s);
    return err;
}

static bool rd_u8(struct rd *r, uint8_t *v)
{
    if (r->left < 1)
        return false;
    *v = r->p[0];
    r->p++;
    r->left--;
    return true;
}

static bool rd_u16(struct rd *r, uint16_t *v)
{
    if (r->left < 2)
        return false;
    *v = (uint16_t)((r->p[0] << 8) | r->p[1]);
    r->p += 2;
    r->left -= 2;
    return true;
}

/* A two-byte length and that many bytes (binary data). */
static bool rd_bytes(struct rd *r, struct mqtt_str *s)
{
    uint16_t n;

    if (!rd_u16(r, &n) || r->left < n)
        return false;
    s->p = (const char *)r->p;
    s->len = n;
    r->p += n;
    r->left -= n;
    return true;
}

bool mqtt_utf8_valid(const char *str, size_t len)
{
    const unsigned char *p = (const unsigned char *)str;
    size_t i = 0;

    while (i < len) {
        unsigned c = p[i];
        unsigned cp, n, min;

        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
            min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
            min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
            min = 0x10000;
        } else {
            return false; /* continuation byte, overlong 0xc0/0xc1, or beyond U+10FFFF */
        }
        if (len - i <= n)
            return false;
        for (unsigned k = 1; k <= n; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

/* A UTF-8 string field: length, well-formed, no U+0000. */
static int rd_string(struct rd *r, struct mqtt_str *s, const char **why, const char *what)
{
    if (!rd_bytes(r, s))
        return fail(why, PROV_EPROTO, what);
    if (!mqtt_utf8_valid(s->p, s->len))
        return fail(why, PROV_EPROTO, "string is not well-formed UTF-8 or holds U+0000");
    return 0;
}

/* A topic filter: not empty; '#' only as the last level, '+' only as a whole level. */
static bool filter_valid(const struct mqtt_str *f)
{
    if (f->len == 0)
        return false;
    for (size_t i = 0; i < f->len; i++) {
        char c = f->p[i];
        bool starts_level = i == 0 || f->p[i - 1] == '/';
        bool ends_level = i + 1 == f->len || f->p[i + 1] == '/';

        if (c == '#' && !(starts_level && i + 1 == f->len))
            return false;
        if (c == '+' && !(starts_level && ends_level))
            return false;
    }
    return true;
}

bool mqtt_topic_match(const char *filter, size_t flen, const char *topic, size_t tlen)
{
    const char *f = filter, *fe = filter + flen, *t = topic, *te = topic + tlen;
    bool topic_done = false;

    if (flen == 0 || tlen == 0)
        return false;
    if (topic[0] == '$' && (filter[0] == '+' || filter[0] == '#'))
        return false;
    for (;;) {
        const char *fl_end = memchr(f, '/', (size_t)(fe - f));
        const char *tl_end;
        size_t fl;

        if (fl_end == NULL)
            fl_end = fe;
        fl = (size_t)(fl_end - f);
        if (fl == 1 && f[0] == '#')
            return true;
        if (topic_done)
            return false; /* the filter has more levels than the topic */
        tl_end = memchr(t, '/', (size_t)(te - t));
        if (tl_end == NULL)
            tl_end = te;
        if (!(fl == 1 && f[0] == '+') &&
            !(fl == (size_t)(tl_end - t) && memcmp(f, t, fl) == 0))
            return false;
        if (fl_end == fe)
            return tl_end == te;
        f = fl_end + 1;
        if (tl_end == te)
            topic_done = true;
        else
            t = tl_end + 1;
    }
}

/* The fixed-header flag bits 3.1.1 §2.2.2 prescribes; -1 for PUBLISH (they carry meaning). */
static int required_flags(unsigned type)
{
    switch (type) {
    case MQTT_PUBLISH: return -1;
    case MQTT_PUBREL:
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE: return 2;
    default: return 0;
    }
}

int mqtt_frame(const uint8_t *buf, size_t len, size_t max, size_t *size, const char **why)
{
    unsigned type, flags;
    size_t rem = 0;
    size_t i;
    int req;

    if (len < 1)
        return PROV_EAGAIN;
    type = buf[0] >> 4;
    flags = buf[0] & 0x0f;
    if (type == 0 || type == 15)
        return fail(why, PROV_EPROTO, "reserved packet type");
    req = required_flags(type);
    if (req >= 0 && flags != (unsigned)req)
        return fail(why, PROV_EPROTO, "wrong fixed-header flags for the packet type");
    if (type == MQTT_PUBLISH && ((flags >> 1) & 3) == 3)
        return fail(why, PROV_EPROTO, "PUBLISH with QoS 3");
    for (i = 1; i <= 4; i++) {
        uint8_t b;

        if (i >= len)
            return PROV_EAGAIN;
        b = buf[i];
        rem |= (size_t)(b & 0x7f) << (7 * (i - 1));
        if ((b & 0x80) == 0) {
            /* shortest form: a multi-byte length never ends with a zero byte */
            if (i > 1 && b == 0)
                return fail(why, PROV_EPROTO, "remaining length not in its shortest form");
            break;
        }
    }
    if (i > 4)
        return fail(why, PROV_EPROTO, "remaining length longer than four bytes");
    if (rem > max || 1 + i + rem > max)
        return fail(why, PROV_ELIMIT, "packet larger than the maximum packet size");
    *size = 1 + i + rem;
    return 0;
}

static int decode_connect(struct rd *r, struct mqtt_connect *c, const char **why)
{
    struct mqtt_str name;
    uint8_t flags;
    int e;

    if (!rd_bytes(r, &name) || !rd_u8(r, &c->level))
        return fail(why, PROV_EPROTO, "CONNECT variable header truncated");
    if (name.len == 6 && memcmp(name.p, "MQIsdp", 6) == 0) {
        c->unsupported = true; /* MQTT 3.1 */
        return 0;
    }
    if (name.len != 4 || memcmp(name.p, "MQTT", 4) != 0)
        return fail(why, PROV_EPROTO, "CONNECT protocol name is not MQTT");
    if (c->level != MQTT_PROTOCOL_LEVEL) {
        c->unsupported = true;
        return 0;
    }
    if (!rd_u8(r, &flags) || !rd_u16(r, &c->keepalive))
        return fail(why, PROV_EPROTO, "CONNECT variable header truncated");
    if (flags & 0x01)
        return fail(why, PROV_EPROTO, "CONNECT reserved flag set");
    c->clean_session = (flags & 0x02) != 0;
    c->has_will = (flags & 0x04) != 0;
    c->will_qos = (flags >> 3) & 3;
    c->will_retain = (flags & 0x20) != 0;
    c->has_password = (flags & 0x40) != 0;
    c->has_username = (flags & 0x80) != 0;
    if (!c->has_will && (c->will_qos != 0 || c->will_retain))
        return fail(why, PROV_EPROTO, "CONNECT will QoS or retain without a will");
    if (c->will_qos == 3)
        return fail(why, PROV_EPROTO, "CONNECT will QoS 3");
    if (c->has_password && !c->has_username)
        return fail(why, PROV_EPROTO, "CONNECT password without a user name");
    if ((e = rd_string(r, &c->client_id, why, "CONNECT client id truncated")) != 0)
        return e;
    if (c->has_will) {
        if ((e = rd_string(r, &c->will_topic, why, "CONNECT will topic truncated")) != 0)
            return e;
        if (c->will_topic.len == 0 || memchr(c->will_topic.p, '+', c->will_topic.len) ||
            memchr(c->will_topic.p, '#', c->will_topic.len))
            return fail(why, PROV_EPROTO, "CONNECT will topic is not a topic name");
        if (!rd_bytes(r, &c->will_message))
            return fail(why, PROV_EPROTO, "CONNECT will message truncated");
    }
    if (c->has_username &&
        (e = rd_string(r, &c->username, why, "CONNECT user name truncated")) != 0)
        return e;
    if (c->has_password && !rd_bytes(r, &c->password))
        return fail(why, PROV_EPROTO, "CONNECT password truncated");
    return 0;
}

static int decode_publish(struct rd *r, uint8_t flags, struct mqtt_publish *p, const char **why)
{
    int e;

    p->retain = (flags & 1) != 0;
    p->qos = (flags >> 1) & 3;
    p->dup = (flags & 8) != 0;
    if (p->qos == 2)
        return fail(why, PROV_EPROTO, "PUBLISH with QoS 2 (not supported)");
    if (p->qos == 0 && p->dup)
        return fail(why, PROV_EPROTO, "PUBLISH with QoS 0 and DUP set");
    if ((e = rd_string(r, &p->topic, why, "PUBLISH topic truncated")) != 0)
        return e;
    if (p->topic.len == 0 || memchr(p->topic.p, '+', p->topic.len) != NULL ||
        memchr(p->topic.p, '#', p->topic.len) != NULL)
        return fail(why, PROV_EPROTO, "PUBLISH topic is empty or has a wildcard");
    if (p->qos > 0) {
        if (!rd_u16(r, &p->packet_id))
            return fail(why, PROV_EPROTO, "PUBLISH packet id truncated");
        if (p->packet_id == 0)
            return fail(why, PROV_EPROTO, "PUBLISH packet id 0");
    }
    p->payload = r->p;
    p->payload_len = r->left;
    r->p += r->left;
    r->left = 0;
    return 0;
}

static int decode_subscribe(struct rd *r, bool with_qos, struct mqtt_subscribe *s,
                            const char **why)
{
    int e;

    if (!rd_u16(r, &s->packet_id))
        return fail(why, PROV_EPROTO, "packet id truncated");
    if (s->packet_id == 0)
        return fail(why, PROV_EPROTO, "packet id 0");
    if (r->left == 0)
        return fail(why, PROV_EPROTO, "no topic filter");
    while (r->left > 0) {
        struct mqtt_str f;
        uint8_t q = 0;

        if ((e = rd_string(r, &f, why, "topic filter truncated")) != 0)
            return e;
        if (!filter_valid(&f))
            return fail(why, PROV_EPROTO, "invalid topic filter");
        if (with_qos) {
            if (!rd_u8(r, &q))
                return fail(why, PROV_EPROTO, "requested QoS missing");
            if (q > 2)
                return fail(why, PROV_EPROTO, "requested QoS byte invalid");
        }
        if (s->count == MQTT_MAX_FILTERS)
            return fail(why, PROV_ELIMIT, "too many topic filters");
        s->filters[s->count] = f;
        s->qos[s->count] = q;
        s->count++;
    }
    return 0;
}

int mqtt_decode(const uint8_t *buf, size_t len, size_t max, struct mqtt_packet *pkt,
                const char **why)
{
    struct rd r;
    size_t size, hdr;
    int e;

    memset(pkt, 0, sizeof(*pkt));
    if ((e = mqtt_frame(buf, len, max, &size, why)) != 0)
        return e;
    if (len < size)
        return PROV_EAGAIN;
    for (hdr = 2; buf[hdr - 1] & 0x80; hdr++)
        ;
    pkt->type = (enum mqtt_type)(buf[0] >> 4);
    pkt->flags = buf[0] & 0x0f;
    pkt->size = size;
    r.p = buf + hdr;
    r.left = size - hdr;
    switch (pkt->type) {
    case MQTT_CONNECT:
        e = decode_connect(&r, &pkt->connect, why);
        if (e == 0 && pkt->connect.unsupported)
            return 0; /* the rest is another protocol's */
        break;
    case MQTT_PUBLISH: e = decode_publish(&r, pkt->flags, &pkt->publish, why); break;
    case MQTT_PUBACK:
        e = rd_u16(&r, &pkt->packet_id) ? 0 : fail(why, PROV_EPROTO, "PUBACK truncated");
        break;
    case MQTT_SUBSCRIBE: e = decode_subscribe(&r, true, &pkt->subscribe, why); break;
    case MQTT_UNSUBSCRIBE: e = decode_subscribe(&r, false, &pkt->subscribe, why); break;
    case MQTT_PINGREQ:
    case MQTT_DISCONNECT: e = 0; break;
    case MQTT_CONNACK:
    case MQTT_SUBACK:
    case MQTT_UNSUBACK:
    case MQTT_PINGRESP: return fail(why, PROV_EPROTO, "server-to-client packet type");
    default: return fail(why, PROV_EPROTO, "packet type not used by DPS (QoS 2 flow)");
    }
    if (e != 0)
        return e;
    if (r.left != 0)
        return fail(why, PROV_EPROTO, "bytes left over after the packet's fields");
    return 0;
}

/* ---- encoding ---------------------------------------------------------- */

static size_t remaining_len_bytes(size_t rem)
{
    return rem < 128 ? 1 : rem < 16384 ? 2 : rem < 2097152 ? 3 : 4;
}

/* Writes the fixed header; returns its length. out must have room (checked by the caller). */
static size_t put_header(uint8_t *out, uint8_t first, size_t rem)
{
    size_t i = 0;

    out[i++] = first;
    do {
        uint8_t b = rem & 0x7f;

        rem >>= 7;
        out[i++] = rem > 0 ? (uint8_t)(b | 0x80) : b;
    } while (rem > 0);
    return i;
}

static int fixed4(uint8_t first, uint8_t b2, uint8_t b3, uint8_t *out, size_t outlen,
                  size_t *written)
{
    if (outlen < 4)
        return PROV_ELIMIT;
    out[0] = first;
    out[1] = 2;
    out[2] = b2;
    out[3] = b3;
    *written = 4;
    return 0;
}

int mqtt_encode_connack(bool session_present, uint8_t code, uint8_t *out, size_t outlen,
                        size_t *written)
{
    if (code > MQTT_CONNACK_NOT_AUTHORIZED || (session_present && code != 0))
        return PROV_EINVAL;
    return fixed4(MQTT_CONNACK << 4, session_present ? 1 : 0, code, out, outlen, written);
}

int mqtt_encode_puback(uint16_t packet_id, uint8_t *out, size_t outlen, size_t *written)
{
    return fixed4(MQTT_PUBACK << 4, (uint8_t)(packet_id >> 8), (uint8_t)packet_id, out, outlen,
                  written);
}

int mqtt_encode_unsuback(uint16_t packet_id, uint8_t *out, size_t outlen, size_t *written)
{
    return fixed4(MQTT_UNSUBACK << 4, (uint8_t)(packet_id >> 8), (uint8_t)packet_id, out, outlen,
                  written);
}

int mqtt_encode_pingresp(uint8_t *out, size_t outlen, size_t *written)
{
    if (outlen < 2)
        return PROV_ELIMIT;
    out[0] = MQTT_PINGRESP << 4;
    out[1] = 0;
    *written = 2;
    return 0;
}

int mqtt_encode_suback(uint16_t packet_id, const uint8_t *codes, size_t ncodes, uint8_t *out,
                       size_t outlen, size_t *written)
{
    size_t rem = 2 + ncodes, h;

    if (ncodes == 0 || ncodes > MQTT_MAX_FILTERS)
        return PROV_EINVAL;
    for (size_t i = 0; i < ncodes; i++) {
        if (codes[i] > 2 && codes[i] != MQTT_SUBACK_FAILURE)
            return PROV_EINVAL;
    }
    if (outlen < 1 + remaining_len_bytes(rem) + rem)
        return PROV_ELIMIT;
    h = put_header(out, MQTT_SUBACK << 4, rem);
    out[h] = (uint8_t)(packet_id >> 8);
    out[h + 1] = (uint8_t)packet_id;
    memcpy(out + h + 2, codes, ncodes);
    *written = h + rem;
    return 0;
}

size_t mqtt_publish_size(size_t topic_len, size_t payload_len)
{
    size_t rem;

    if (topic_len == 0 || topic_len > 65535 || payload_len > MQTT_MAX_REMAINING - 2 - topic_len)
        return 0;
    rem = 2 + topic_len + payload_len;
    return 1 + remaining_len_bytes(rem) + rem;
}

int mqtt_encode_publish(const char *topic, size_t topic_len, const uint8_t *payload,
                        size_t payload_len, uint8_t *out, size_t outlen, size_t *written)
{
    size_t need = mqtt_publish_size(topic_len, payload_len), h;

    if (need == 0)
        return PROV_EINVAL;
    if (outlen < need)
        return PROV_ELIMIT;
    h = put_header(out, MQTT_PUBLISH << 4, 2 + topic_len + payload_len);
    out[h] = (uint8_t)(topic_len >> 8);
    out[h + 1] = (uint8_t)topic_len;
    memcpy(out + h + 2, topic, topic_len);
    if (payload_len > 0)
        memcpy(out + h + 2 + topic_len, payload, payload_len);
    *written = need;
    return 0;
}
