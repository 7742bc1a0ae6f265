#include "mqtt_conn.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include "../common/errors.h"
#include "../common/limits.h"
#include "../common/log.h"
#include "../common/util.h"
#include "dps_wire.h"
#include "mqtt_codec.h"
#include "registration.h"
#include "server.h"

#define LOG_MODULE "mqtt"

#define RES_FILTER "$dps/registrations/res/#"
#define RES_PREFIX "$dps/registrations/res/"
#define MAX_SUBS 8 /* subscriptions per connection (DPS clients make one) */
#define REQ_PREFIX "$dps/registrations/"
#define REGISTER_TOPIC "PUT/iotdps-register/?"
#define POLL_TOPIC "GET/iotdps-get-operationstatus/?"

/* Closing as in server.c: flush, close_notify and FIN, drain the peer for a while. */
#define LINGER_MAX_BYTES (1024 * 1024)
#define LINGER_SECONDS 2
/* Answers waiting for a peer that does not read: stop reading requests above this. */
#define OUT_HIGH_WATER (256 * 1024)

enum mqtt_state { MS_WAIT_CONNECT, MS_CONNECTED };

struct mqtt_conn {
    struct conn c;                 /* worker and SSL (for the TLS peer chain) */
    struct bufferevent *bev;
    struct event *timer;           /* CONNECT deadline, then keepalive, then linger */
    struct mqtt_conn *prev, *next; /* the worker's MQTT connections */
    enum mqtt_state state;
    char *subs[MAX_SUBS];          /* granted topic filters, under $dps/registrations/res/ */
    size_t nsubs;
    bool closing;                  /* no more packets: flush, then linger */
    bool lingering;
    bool throttled;                /* reading paused until the output drains */
    struct timeval keepalive;      /* 1.5 x the client's keepalive, or the idle default */
    const char *scope;             /* the configured scope (canonical spelling) */
    char rid[PROV_MAX_REG_ID + 1];
    char *sas;                     /* CONNECT password (a SAS token) or NULL; wiped */
    size_t sas_len;
    size_t discarded;
    char peer[64];
    /* a poll held until its registration is committed (server.h), and what answers it */
    struct held hold;
    struct held_poll *poll; /* allocated at the first hold: idle connections do without */
};

struct held_poll {
    char rid[PROV_MQTT_MAX_RID + 1];
    size_t rid_len;
    char opid[128];
    char tracking[37];
};

/*
 * Device-chosen text (user name, topic, $rid) for the log: at most 200
 * bytes, anything but printable ASCII shown as '?', so a client cannot forge
 * log lines.
 */
static const char *printable(const char *p, size_t len, char *out, size_t outlen)
{
    size_t n = len < outlen - 1 ? len : outlen - 1;

    if (n > 200)
        n = 200;
    for (size_t i = 0; i < n; i++)
        out[i] = p[i] >= 0x20 && p[i] < 0x7f ? p[i] : '?';
    out[n] = '\0';
    return out;
}

/* ---- user name and topics ------------------------------------------------ */

static bool decode_part(const char *p, size_t len, char *out, size_t outlen)
{
    return len > 0 && len < outlen && url_decode(p, len, out, false) > 0;
}

int mqtt_parse_username(const char *u, size_t len, char *scope, size_t scopelen, char *rid,
                        size_t ridlen)
{
    static const char mid[] = "/registrations/";
    static const char api[] = "api-version=";
    const char *end = u + len, *slash, *p;

    slash = memchr(u, '/', len);
    if (slash == NULL || slash == u || (size_t)(end - slash) < sizeof(mid) - 1 ||
        memcmp(slash, mid, sizeof(mid) - 1) != 0)
        return PROV_EPROTO;
    if (!decode_part(u, (size_t)(slash - u), scope, scopelen))
        return PROV_EPROTO;
    p = slash + sizeof(mid) - 1;
    slash = memchr(p, '/', (size_t)(end - p));
    if (slash == NULL || slash == p || (size_t)(end - slash - 1) < sizeof(api) - 1 ||
        memcmp(slash + 1, api, sizeof(api) - 1) != 0)
        return PROV_EPROTO;
    if (!decode_part(p, (size_t)(slash - p), rid, ridlen))
        return PROV_EINVAL;
    return 0;
}

int mqtt_parse_dps_topic(const char *topic, size_t len, struct mqtt_dps_topic *t)
{
    const char *p = topic, *end = topic + len;
    size_t pre = sizeof(REQ_PREFIX) - 1;

    memset(t, 0, sizeof(*t));
    if (len < pre || memcmp(topic, REQ_PREFIX, pre) != 0)
        return PROV_ENOTFOUND;
    p += pre;
    if ((size_t)(end - p) >= sizeof(REGISTER_TOPIC) - 1 &&
        memcmp(p, REGISTER_TOPIC, sizeof(REGISTER_TOPIC) - 1) == 0) {
        t->op = MQTT_DPS_REGISTER;
        p += sizeof(REGISTER_TOPIC) - 1;
    } else if ((size_t)(end - p) >= sizeof(POLL_TOPIC) - 1 &&
               memcmp(p, POLL_TOPIC, sizeof(POLL_TOPIC) - 1) == 0) {
        t->op = MQTT_DPS_POLL;
        p += sizeof(POLL_TOPIC) - 1;
    } else {
        return PROV_ENOTFOUND;
    }
    /* key=value pairs separated by '&' */
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *fend = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(fend - p));

        if (eq != NULL) {
            size_t klen = (size_t)(eq - p);

            if (klen == 4 && memcmp(p, "$rid", 4) == 0 && t->rid == NULL) {
                t->rid = eq + 1;
                t->rid_len = (size_t)(fend - eq - 1);
            } else if (klen == 11 && str_ieqn(p, "operationId", 11) && t->opid == NULL) {
                t->opid = eq + 1;
                t->opid_len = (size_t)(fend - eq - 1);
            }
        }
        p = amp ? amp + 1 : end;
    }
    if (t->rid == NULL || t->rid_len == 0 || t->rid_len > PROV_MQTT_MAX_RID)
        return PROV_EPROTO;
    return 0;
}

/* ---- connection life ----------------------------------------------------- */

static void conn_free(struct mqtt_conn *mc)
{
    struct worker *w = mc->c.w;

    if (mc->prev != NULL)
        mc->prev->next = mc->next;
    else
        w->mqtt_conns = mc->next;
    if (mc->next != NULL)
        mc->next->prev = mc->prev;
    if (mc->timer != NULL)
        event_free(mc->timer);
    worker_unhold(w, &mc->hold);
    free(mc->poll);
    if (mc->bev != NULL)
        bufferevent_free(mc->bev); /* frees the SSL too (BEV_OPT_CLOSE_ON_FREE) */
    prov_freezero(mc->sas, mc->sas_len);
    for (size_t i = 0; i < mc->nsubs; i++)
        free(mc->subs[i]);
    free(mc);
    w->nconns--;
}

void mqtt_conn_free_all(struct worker *w)
{
    while (w->mqtt_conns != NULL)
        conn_free(w->mqtt_conns);
}

/* Closes at once, without an answer (protocol violations). */
static void drop(struct mqtt_conn *mc, const char *why)
{
    plog(LOG_WARN, "%s closed: %s", mc->peer, why);
    conn_free(mc);
}

static void arm_timer(struct mqtt_conn *mc, const struct timeval *tv)
{
    event_add(mc->timer, tv);
}

static void start_linger(struct mqtt_conn *mc)
{
    struct timeval t = {LINGER_SECONDS, 0};

    mc->lingering = true;
    (void)SSL_shutdown(mc->c.ssl);
    shutdown(bufferevent_getfd(mc->bev), SHUT_WR);
    arm_timer(mc, &t);
    bufferevent_enable(mc->bev, EV_READ);
}

/* Stops taking packets; the connection closes once what was answered is sent. */
static void close_after_flush(struct mqtt_conn *mc)
{
    mc->closing = true;
    if (!mc->lingering && evbuffer_get_length(bufferevent_get_output(mc->bev)) == 0)
        start_linger(mc);
}

static void send_bytes(struct mqtt_conn *mc, const uint8_t *p, size_t n)
{
    bufferevent_write(mc->bev, p, n);
}

/* ---- packets ------------------------------------------------------------- */

static void send_connack(struct mqtt_conn *mc, uint8_t code)
{
    uint8_t b[4];
    size_t n;

    /* no session is ever kept: session present is always 0 (C# requires it) */
    if (mqtt_encode_connack(false, code, b, sizeof(b), &n) == 0)
        send_bytes(mc, b, n);
}

/* Refuses a CONNECT with a CONNACK return code, then closes. */
static void refuse_connect(struct mqtt_conn *mc, uint8_t code, const char *why)
{
    plog(LOG_WARN, "%s CONNECT refused (CONNACK %u): %s", mc->peer, code, why);
    send_connack(mc, code);
    close_after_flush(mc);
}

/* Answers a CONNECT; a refusal closes once its CONNACK is sent. Always 0 (mc lives on). */
static int on_connect(struct mqtt_conn *mc, const struct mqtt_connect *c)
{
    char scope[PROV_MAX_SCOPE + 1], rid[PROV_MAX_REG_ID + 1], user[204];
    int r;

    if (c->unsupported) {
        refuse_connect(mc, MQTT_CONNACK_BAD_PROTOCOL, "not MQTT 3.1.1");
        return 0;
    }
    if (!c->has_username) {
        refuse_connect(mc, MQTT_CONNACK_BAD_CREDENTIALS, "no user name");
        return 0;
    }
    r = mqtt_parse_username(c->username.p, c->username.len, scope, sizeof(scope), rid,
                            sizeof(rid));
    if (r == PROV_EPROTO) {
        refuse_connect(mc, MQTT_CONNACK_BAD_CREDENTIALS,
                       "user name is not {idScope}/registrations/{registrationId}/api-version=...");
        /* the user name is no secret */
        plog(LOG_DEBUG, "%s user name was '%s'", mc->peer,
             printable(c->username.p, c->username.len, user, sizeof(user)));
        return 0;
    }
    if (r != 0 || !id_is_valid(rid)) {
        refuse_connect(mc, MQTT_CONNACK_ID_REJECTED, "invalid registration id in the user name");
        return 0;
    }
    mc->scope = config_find_scope(mc->c.w->cfg, scope);
    if (mc->scope == NULL) {
        refuse_connect(mc, MQTT_CONNACK_NOT_AUTHORIZED, "unknown ID scope");
        return 0;
    }
    if (c->client_id.len != strlen(rid) || !str_ieqn(c->client_id.p, rid, strlen(rid))) {
        refuse_connect(mc, MQTT_CONNACK_ID_REJECTED,
                       "client id is not the registration id of the user name");
        return 0;
    }
    if (c->has_password) {
        if (c->password.len == 0 || c->password.len > PROV_MAX_SAS_TOKEN ||
            memchr(c->password.p, '\0', c->password.len) != NULL) {
            refuse_connect(mc, MQTT_CONNACK_BAD_CREDENTIALS,
                           "password is not a SAS token (empty, too long or binary)");
            return 0;
        }
        mc->sas = malloc(c->password.len + 1);
        if (mc->sas == NULL) {
            refuse_connect(mc, MQTT_CONNACK_UNAVAILABLE, "out of memory");
            return 0;
        }
        memcpy(mc->sas, c->password.p, c->password.len);
        mc->sas[c->password.len] = '\0';
        mc->sas_len = c->password.len + 1;
    }
    snprintf(mc->rid, sizeof(mc->rid), "%s", rid);
    mc->state = MS_CONNECTED;
    if (c->keepalive > 0) {
        unsigned long ms = (unsigned long)c->keepalive * 1500;

        mc->keepalive.tv_sec = (time_t)(ms / 1000);
        mc->keepalive.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    } else {
        mc->keepalive.tv_sec = PROV_IDLE_TIMEOUT_SECONDS;
        mc->keepalive.tv_usec = 0;
    }
    send_connack(mc, MQTT_CONNACK_ACCEPTED);
    arm_timer(mc, &mc->keepalive);
    plog(LOG_INFO, "%s CONNECT %s/%s (%s, keepalive %u s%s)", mc->peer, mc->scope, mc->rid,
         mc->sas ? "SAS token"
                 : SSL_get0_peer_certificate(mc->c.ssl) ? "client certificate" : "no credential",
         c->keepalive, c->has_will ? ", will ignored" : "");
    return 0;
}

static int find_sub(const struct mqtt_conn *mc, const struct mqtt_str *f)
{
    for (size_t i = 0; i < mc->nsubs; i++) {
        if (strlen(mc->subs[i]) == f->len && memcmp(mc->subs[i], f->p, f->len) == 0)
            return (int)i;
    }
    return -1;
}

/*
 * Grants a filter under the response tree (DPS clients subscribe to
 * $dps/registrations/res/#; an exact response topic works too, which is what
 * request-response tools such as mosquitto_rr do). QoS 1 at most.
 */
static uint8_t subscribe_one(struct mqtt_conn *mc, const struct mqtt_str *f, uint8_t qos)
{
    size_t plen = sizeof(RES_PREFIX) - 1;
    const char *why = NULL;

    if (f->len < plen || memcmp(f->p, RES_PREFIX, plen) != 0)
        why = "DPS serves only " RES_FILTER;
    else if (find_sub(mc, f) < 0) {
        if (mc->nsubs == MAX_SUBS)
            why = "too many subscriptions";
        else if ((mc->subs[mc->nsubs] = strndup(f->p, f->len)) == NULL)
            why = "out of memory";
        else
            mc->nsubs++;
    }
    if (why != NULL) {
        char text[204];

        plog(LOG_INFO, "%s SUBSCRIBE '%s' refused: %s", mc->peer,
             printable(f->p, f->len, text, sizeof(text)), why);
        return MQTT_SUBACK_FAILURE;
    }
    return qos > 1 ? 1 : qos;
}

static void on_subscribe(struct mqtt_conn *mc, const struct mqtt_subscribe *s, bool unsub)
{
    uint8_t codes[MQTT_MAX_FILTERS];
    uint8_t b[4 + MQTT_MAX_FILTERS + 4];
    size_t n;

    for (size_t i = 0; i < s->count; i++) {
        int k;

        if (!unsub) {
            codes[i] = subscribe_one(mc, &s->filters[i], s->qos[i]);
        } else if ((k = find_sub(mc, &s->filters[i])) >= 0) {
            free(mc->subs[k]);
            mc->subs[k] = mc->subs[--mc->nsubs];
        }
    }
    if (unsub ? mqtt_encode_unsuback(s->packet_id, b, sizeof(b), &n) == 0
              : mqtt_encode_suback(s->packet_id, codes, s->count, b, sizeof(b), &n) == 0)
        send_bytes(mc, b, n);
}

static bool subscribed_to(const struct mqtt_conn *mc, const char *topic, size_t len)
{
    for (size_t i = 0; i < mc->nsubs; i++) {
        if (mqtt_topic_match(mc->subs[i], strlen(mc->subs[i]), topic, len))
            return true;
    }
    return false;
}

/* PUBLISH of the answer to $dps/registrations/res/{status}/?$rid={rid}[&retry-after={n}]. */
static void send_response(struct mqtt_conn *mc, const struct mqtt_dps_topic *t,
                          const struct reg_reply *reply, const char *tracking_id)
{
    char topic[96 + PROV_MQTT_MAX_RID];
    int tlen;
    json_t *doc = dps_reply_body(reply, tracking_id);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    size_t len = text ? strlen(text) : 0, need, n;
    uint8_t *pkt = NULL;

    if (reply->retry_after > 0)
        tlen = snprintf(topic, sizeof(topic), "$dps/registrations/res/%d/?$rid=%.*s&retry-after=%d",
                        reply->status, (int)t->rid_len, t->rid, reply->retry_after);
    else
        tlen = snprintf(topic, sizeof(topic), "$dps/registrations/res/%d/?$rid=%.*s",
                        reply->status, (int)t->rid_len, t->rid);
    need = mqtt_publish_size((size_t)tlen, len);
    if (tlen > 0 && (size_t)tlen < sizeof(topic) && !subscribed_to(mc, topic, (size_t)tlen)) {
        char shown[204];

        plog(LOG_WARN, "%s no subscription matches %s, the answer is not delivered", mc->peer,
             printable(topic, (size_t)tlen, shown, sizeof(shown)));
    } else if (text == NULL || tlen <= 0 || (size_t)tlen >= sizeof(topic) || need == 0 ||
               (pkt = malloc(need)) == NULL) {
        plog(LOG_ERROR, "%s cannot build the response (out of memory)", mc->peer);
    } else if (mqtt_encode_publish(topic, (size_t)tlen, (const uint8_t *)text, len, pkt, need,
                                   &n) == 0) {
        send_bytes(mc, pkt, n);
    }
    /* answers may carry keys (none today, but treat them as HTTP does) */
    prov_freezero(pkt, need);
    prov_freezero(text, len);
    json_decref(doc);
}

/* The pipeline's view of a request on this connection. */
static void device_request(struct mqtt_conn *mc, struct reg_ctx *ctx, struct reg_request *rr)
{
    memset(ctx, 0, sizeof(*ctx));
    memset(rr, 0, sizeof(*rr));
    ctx->cfg = mc->c.w->cfg;
    ctx->store = mc->c.w->store;
    ctx->assigner = mc->c.w->srv->assigner;
    ctx->committer = mc->c.w->srv->committer;
    rr->scope = mc->scope;
    rr->registration_id = mc->rid;
    rr->authorization = mc->sas;
    /* the TLS client certificate, for X.509 attestation (verified there, not by TLS) */
    rr->peer_leaf = SSL_get0_peer_certificate(mc->c.ssl);
    rr->peer_chain = SSL_get_peer_cert_chain(mc->c.ssl);
}

/* One access line per request, as HTTP's (never the token), then the answer. */
static void finish(struct mqtt_conn *mc, const struct mqtt_dps_topic *t, struct reg_reply *reply,
                   const char *tracking, const char *opname)
{
    char ridtext[68];

    printable(t->rid, t->rid_len > 64 ? 64 : t->rid_len, ridtext, sizeof(ridtext));
    if (reply->status >= 400)
        plog(reply->status >= 500 ? LOG_ERROR : LOG_WARN, "%s %s %s/%s $rid=%s -> %d %d %s",
             mc->peer, opname, mc->scope, mc->rid, ridtext, reply->status, reply->error_code,
             reply->detail);
    else
        plog(LOG_INFO, "%s %s %s/%s $rid=%s -> %d", mc->peer, opname, mc->scope, mc->rid,
             ridtext, reply->status);
    send_response(mc, t, reply, tracking);
    reg_reply_release(reply);
}

static void on_read(struct bufferevent *bev, void *arg);
static void poll_release(struct held *h, bool final);

/*
 * A poll: answered now, or held until its registration is committed (the
 * connection reads no further packet meanwhile). 0 when answered, 1 when held.
 */
static int answer_poll(struct mqtt_conn *mc, const struct mqtt_dps_topic *t, const char *opid,
                       const char *tracking, bool final)
{
    struct reg_ctx ctx;
    struct reg_request rr;
    struct reg_reply reply = {0};

    device_request(mc, &ctx, &rr);
    rr.may_hold = !final;
    registration_poll(&ctx, &rr, opid, &reply);
    if (reply.hold_ticket != 0 && mc->poll == NULL)
        mc->poll = malloc(sizeof(*mc->poll)); /* NULL: answered as it stands, below */
    if (reply.hold_ticket != 0 && mc->poll != NULL) {
        struct held_poll *hp = mc->poll;

        if (t->rid != hp->rid) {
            memcpy(hp->rid, t->rid, t->rid_len); /* rid_len <= PROV_MQTT_MAX_RID */
            hp->rid_len = t->rid_len;
            snprintf(hp->opid, sizeof(hp->opid), "%s", opid);
            snprintf(hp->tracking, sizeof(hp->tracking), "%s", tracking);
        }
        mc->hold.release = poll_release;
        if (worker_hold(mc->c.w, &mc->hold, reply.hold_ticket) == 0)
            return 1;
    }
    if (reply.hold_ticket != 0) {
        /* cannot hold: answer as it stands */
        memset(&reply, 0, sizeof(reply));
        rr.may_hold = false;
        registration_poll(&ctx, &rr, opid, &reply);
    }
    finish(mc, t, &reply, tracking, "poll");
    return 0;
}

/* The held poll's registration is committed (or the hold ran out): answer, read on. */
static void poll_release(struct held *h, bool final)
{
    struct mqtt_conn *mc =
        (struct mqtt_conn *)(void *)((char *)h - offsetof(struct mqtt_conn, hold));
    struct held_poll *hp = mc->poll;
    struct mqtt_dps_topic t = {.op = MQTT_DPS_POLL, .rid = hp->rid, .rid_len = hp->rid_len};

    if (answer_poll(mc, &t, hp->opid, hp->tracking, final) != 0)
        return; /* held again */
    on_read(mc->bev, mc); /* the packets that waited (may free mc) */
}

/* 0 to go on, -1 when mc was freed. */
static int on_publish(struct mqtt_conn *mc, const struct mqtt_publish *p)
{
    struct mqtt_dps_topic t;
    struct reg_ctx ctx;
    struct reg_request rr;
    struct reg_reply reply = {0};
    json_t *body = NULL;
    char tracking[37], opid[128] = "";
    int r;

    r = mqtt_parse_dps_topic(p->topic.p, p->topic.len, &t);
    if (r != 0) {
        char why[320], text[204];

        snprintf(why, sizeof(why), "PUBLISH to %s '%s'",
                 r == PROV_ENOTFOUND ? "a topic DPS does not serve"
                                     : "a request topic without a usable $rid",
                 printable(p->topic.p, p->topic.len, text, sizeof(text)));
        drop(mc, why);
        return -1;
    }
    if (p->qos == 1) {
        uint8_t b[4];
        size_t n;

        /* the acknowledgement goes before the answer (C#'s state machine, doc §6.4) */
        if (mqtt_encode_puback(p->packet_id, b, sizeof(b), &n) == 0)
            send_bytes(mc, b, n);
    }
    if (uuid_v4(tracking) != 0)
        snprintf(tracking, sizeof(tracking), "-");
    device_request(mc, &ctx, &rr);
    if (t.op == MQTT_DPS_REGISTER) {
        if (p->payload_len > PROV_MAX_BODY) {
            reply.status = 413;
            reply.error_code = 413001;
            snprintf(reply.message, sizeof(reply.message), "payload larger than 96 KB");
            snprintf(reply.detail, sizeof(reply.detail), "payload of %zu bytes", p->payload_len);
        } else if (dps_parse_registration((const char *)p->payload, p->payload_len, mc->rid,
                                          DPS_TRANSPORT_MQTT, &body, &reply) == 0) {
            rr.body = body;
            registration_register(&ctx, &rr, &reply);
        }
    } else if (t.opid == NULL || t.opid_len == 0) {
        reply.status = 400;
        reply.error_code = DPS_BAD_REQUEST;
        snprintf(reply.message, sizeof(reply.message), "operationId missing from the topic");
        snprintf(reply.detail, sizeof(reply.detail), "%s", reply.message);
    } else if (t.opid_len >= sizeof(opid) ||
               url_decode(t.opid, t.opid_len, opid, false) < 0) {
        reply.status = 404;
        reply.error_code = DPS_OPERATION_NOT_FOUND;
        snprintf(reply.message, sizeof(reply.message), "operation not found");
        snprintf(reply.detail, sizeof(reply.detail), "operationId does not decode or is too long");
    } else {
        (void)answer_poll(mc, &t, opid, tracking, false);
        return 0;
    }
    finish(mc, &t, &reply, tracking, t.op == MQTT_DPS_REGISTER ? "register" : "poll");
    json_decref(body);
    return 0;
}

/* Handles one decoded packet. 0 to go on, -1 when mc was freed. */
static int on_packet(struct mqtt_conn *mc, const struct mqtt_packet *pkt)
{
    if (mc->state == MS_WAIT_CONNECT) {
        if (pkt->type != MQTT_CONNECT) {
            drop(mc, "first packet is not CONNECT");
            return -1;
        }
        return on_connect(mc, &pkt->connect);
    }
    /* any packet from the client counts for its keepalive */
    arm_timer(mc, &mc->keepalive);
    switch (pkt->type) {
    case MQTT_CONNECT: drop(mc, "second CONNECT"); return -1;
    case MQTT_PUBLISH: return on_publish(mc, &pkt->publish);
    case MQTT_SUBSCRIBE: on_subscribe(mc, &pkt->subscribe, false); return 0;
    case MQTT_UNSUBSCRIBE: on_subscribe(mc, &pkt->subscribe, true); return 0;
    case MQTT_PUBACK: return 0; /* our answers are QoS 0; C# acknowledges them anyway */
    case MQTT_PINGREQ: {
        uint8_t b[2];
        size_t n;

        if (mqtt_encode_pingresp(b, sizeof(b), &n) == 0)
            send_bytes(mc, b, n);
        return 0;
    }
    case MQTT_DISCONNECT:
        plog(LOG_DEBUG, "%s DISCONNECT", mc->peer);
        close_after_flush(mc);
        return 0;
    default: drop(mc, "unexpected packet type"); return -1;
    }
}

/* ---- bufferevent callbacks ----------------------------------------------- */

static void on_read(struct bufferevent *bev, void *arg)
{
    struct mqtt_conn *mc = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer *out = bufferevent_get_output(bev);

    while (!mc->closing) {
        uint8_t hdr[5];
        size_t avail = evbuffer_get_length(in), size = 0;
        ev_ssize_t got;
        const char *why = NULL;
        struct mqtt_packet pkt;
        const uint8_t *buf;
        int r;

        if (mc->hold.active)
            return; /* the packets wait until the held poll is answered */
        if (evbuffer_get_length(out) > OUT_HIGH_WATER) {
            /* the peer does not read its answers: wait until they drain */
            mc->throttled = true;
            bufferevent_disable(bev, EV_READ);
            return;
        }
        got = evbuffer_copyout(in, hdr, avail < sizeof(hdr) ? avail : sizeof(hdr));
        if (got <= 0)
            return;
        r = mqtt_frame(hdr, (size_t)got, PROV_MAX_MQTT_PACKET, &size, &why);
        if (r == PROV_EAGAIN)
            return;
        if (r == 0 && avail < size)
            return; /* the rest of the packet is still on its way */
        if (r == 0) {
            buf = evbuffer_pullup(in, (ev_ssize_t)size);
            r = buf ? mqtt_decode(buf, size, PROV_MAX_MQTT_PACKET, &pkt, &why) : PROV_ENOMEM;
        }
        if (r != 0) {
            char msg[160];

            snprintf(msg, sizeof(msg), "%s: %s",
                     r == PROV_ELIMIT ? "limit" : r == PROV_ENOMEM ? "out of memory"
                                                                   : "malformed packet",
                     why ? why : prov_strerror(r));
            drop(mc, msg);
            return;
        }
        if (on_packet(mc, &pkt) != 0)
            return; /* freed */
        evbuffer_drain(in, size);
    }
    /* closing: swallow whatever still comes, up to a bound */
    mc->discarded += evbuffer_get_length(in);
    evbuffer_drain(in, evbuffer_get_length(in));
    if (mc->discarded > LINGER_MAX_BYTES) {
        conn_free(mc);
        return;
    }
    if (!mc->lingering && evbuffer_get_length(out) == 0)
        start_linger(mc);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct mqtt_conn *mc = arg;

    if (mc->closing) {
        if (!mc->lingering && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
            start_linger(mc);
        return;
    }
    if (mc->throttled) {
        mc->throttled = false;
        bufferevent_enable(bev, EV_READ);
        on_read(bev, mc); /* packets already buffered */
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct mqtt_conn *mc = arg;

    if (what & BEV_EVENT_CONNECTED)
        return;
    if (what & BEV_EVENT_ERROR)
        server_log_tls_error(bev, mc->peer);
    if ((what & BEV_EVENT_TIMEOUT) && !mc->lingering)
        plog(LOG_WARN, "%s closed: the peer does not read", mc->peer);
    else if ((what & BEV_EVENT_EOF) && mc->state == MS_CONNECTED && !mc->closing)
        plog(LOG_DEBUG, "%s closed by the peer without DISCONNECT", mc->peer);
    conn_free(mc);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct mqtt_conn *mc = arg;

    (void)fd;
    (void)what;
    if (mc->lingering)
        conn_free(mc);
    else if (mc->state == MS_WAIT_CONNECT)
        drop(mc, "no CONNECT within the connect timeout");
    else
        drop(mc, "keepalive expired (no packet for 1.5 times the keepalive)");
}

int mqtt_conn_start(struct worker *w, struct bufferevent *bev, SSL *ssl, const char *peer)
{
    struct mqtt_conn *mc = calloc(1, sizeof(*mc));
    struct timeval connect_to = {PROV_MQTT_CONNECT_TIMEOUT_SECONDS, 0};
    struct timeval idle = {PROV_IDLE_TIMEOUT_SECONDS, 0};

    if (mc != NULL)
        mc->timer = event_new(w->base, -1, 0, on_timer, mc);
    if (mc == NULL || mc->timer == NULL) {
        free(mc);
        bufferevent_free(bev);
        w->nconns--;
        return PROV_ENOMEM;
    }
    mc->c.w = w;
    mc->c.ssl = ssl;
    mc->bev = bev;
    snprintf(mc->peer, sizeof(mc->peer), "%s", peer);
    mc->next = w->mqtt_conns;
    if (w->mqtt_conns != NULL)
        w->mqtt_conns->prev = mc;
    w->mqtt_conns = mc;
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    bufferevent_setcb(bev, on_read, on_write, on_event, mc);
    /* reads are bounded by the CONNECT deadline and the keepalive timer, writes here */
    bufferevent_set_timeouts(bev, NULL, &idle);
    /* what a connection buffers while a poll is held: a packet in full, and one more */
    bufferevent_setwatermark(bev, EV_READ, 0, 2 * (PROV_MAX_MQTT_PACKET + 5));
    arm_timer(mc, &connect_to);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    return 0;
}
