/*
 * prov-bench over MQTT 3.1.1 on TLS (device-protocol doc §6): CONNECT with
 * user name {scope}/registrations/{rid}/api-version=... and the SAS token as
 * password (none for X.509), SUBSCRIBE $dps/registrations/res/#, PUBLISH the
 * register request, then the operation-status polls, each waiting for the
 * answer on the response topic (and for its retry-after unless
 * --ignore-retry-after). Requests go at QoS 1, as the Node, Python and C#
 * SDKs send them. In idle mode the device stops after SUBACK and holds the
 * connection, sending PINGREQ within its keepalive.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "bench_device.h"
#include "bench_mqtt_wire.h"

#define RES_PREFIX "$dps/registrations/res/"
#define MQTT_KEEPALIVE 180
#define IDLE_KEEPALIVE 60
#define IDLE_PING_SECONDS 45
#define MQTT_MAX_IN (256 * 1024)

enum mqtt_step { MS_CONNACK, MS_SUBACK, MS_ANSWER, MS_WAIT, MS_IDLE };

static uint16_t next_packet_id(struct device *d)
{
    if (++d->packet_id == 0)
        d->packet_id = 1;
    return d->packet_id;
}

static void mqtt_connected(struct device *d)
{
    const struct bench_opts *o = d->th->sh->o;
    char user[PROV_MAX_SCOPE + PROV_MAX_REG_ID + 64];

    snprintf(user, sizeof(user), "%s/registrations/%s/api-version=%s", o->scope, d->rid,
             BENCH_API_VERSION);
    d->mqtt_step = MS_CONNACK;
    if (mw_connect(bufferevent_get_output(d->bev), d->rid, user, d->sas,
                   d->th->sh->o->idle_mqtt > 0 ? IDLE_KEEPALIVE : MQTT_KEEPALIVE) != 0)
        dev_finish(d, DEV_ERROR, "out of memory");
}

static void send_register(struct device *d)
{
    char topic[96];
    char *body = dev_register_body(d);

    if (body == NULL) {
        dev_finish(d, DEV_ERROR, "out of memory");
        return;
    }
    d->req_rid++;
    snprintf(topic, sizeof(topic), "$dps/registrations/PUT/iotdps-register/?$rid=%lu", d->req_rid);
    d->mqtt_step = MS_ANSWER;
    d->th->stats.requests++;
    if (mw_publish(bufferevent_get_output(d->bev), topic, body, strlen(body), 1,
                   next_packet_id(d)) != 0)
        dev_finish(d, DEV_ERROR, "out of memory");
    free(body);
}

static void send_poll(struct device *d)
{
    char topic[300];

    d->req_rid++;
    snprintf(topic, sizeof(topic),
             "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=%lu&operationId=%s",
             d->req_rid, d->opid);
    d->mqtt_step = MS_ANSWER;
    d->polls++;
    d->th->stats.polls++;
    d->th->stats.requests++;
    if (mw_publish(bufferevent_get_output(d->bev), topic, " ", 1, 1, next_packet_id(d)) != 0)
        dev_finish(d, DEV_ERROR, "out of memory");
}

/* Parses "res/{status}/?$rid={n}[&retry-after={s}]" after RES_PREFIX. */
static int parse_topic(const char *t, size_t len, int *status, unsigned long *rid, int *retry_after)
{
    char buf[256], *q, *tok, *save = NULL;

    if (len <= strlen(RES_PREFIX) || len >= sizeof(buf) ||
        memcmp(t, RES_PREFIX, strlen(RES_PREFIX)) != 0)
        return -1;
    memcpy(buf, t + strlen(RES_PREFIX), len - strlen(RES_PREFIX));
    buf[len - strlen(RES_PREFIX)] = '\0';
    *status = atoi(buf);
    *rid = 0;
    *retry_after = -1;
    if ((q = strstr(buf, "/?")) == NULL)
        return -1;
    for (tok = strtok_r(q + 2, "&", &save); tok != NULL; tok = strtok_r(NULL, "&", &save)) {
        if (strncmp(tok, "$rid=", 5) == 0)
            *rid = strtoul(tok + 5, NULL, 10);
        else if (strncmp(tok, "retry-after=", 12) == 0)
            *retry_after = atoi(tok + 12);
    }
    return 0;
}

static void on_answer(struct device *d, const struct mw_packet *p)
{
    int status, retry_after, wait = 0;
    unsigned long rid;
    json_error_t e;
    json_t *j;

    if (parse_topic(p->topic, p->topic_len, &status, &rid, &retry_after) != 0) {
        dev_finish(d, DEV_ERROR, "mqtt: unexpected topic");
        return;
    }
    if (d->mqtt_step != MS_ANSWER || rid != d->req_rid)
        return; /* not the answer we wait for */
    j = json_loadb((const char *)p->payload, p->payload_len, 0, &e);
    if (status >= 300)
        dev_refused(d, "mqtt", status, j);
    else if (!json_is_object(j))
        dev_finish(d, DEV_ERROR, "mqtt %d answer is not JSON", status);
    else {
        switch (dev_judge(d, j, retry_after, &wait)) {
        case JUDGE_POLL: send_poll(d); break;
        case JUDGE_WAIT:
            d->mqtt_step = MS_WAIT;
            dev_wait(d, wait);
            break;
        default: break;
        }
    }
    json_decref(j);
}

/* Handles one packet; false when the device finished. */
static bool on_packet(struct device *d, const struct mw_packet *p)
{
    switch (p->type) {
    case MW_CONNACK:
        if (d->mqtt_step != MS_CONNACK || p->body_len != 2) {
            dev_finish(d, DEV_ERROR, "mqtt: unexpected CONNACK");
            return false;
        }
        if (p->body[1] != 0) {
            dev_finish(d, DEV_ERROR, "mqtt CONNACK %u", p->body[1]);
            return false;
        }
        d->mqtt_step = MS_SUBACK;
        if (mw_subscribe(bufferevent_get_output(d->bev), next_packet_id(d), RES_PREFIX "#", 1) !=
            0) {
            dev_finish(d, DEV_ERROR, "out of memory");
            return false;
        }
        return true;
    case MW_SUBACK:
        if (d->mqtt_step != MS_SUBACK || p->body_len != 3 || p->body[2] > 1) {
            dev_finish(d, DEV_ERROR, "mqtt: SUBACK refused");
            return false;
        }
        if (d->th->sh->o->idle_mqtt > 0) {
            d->mqtt_step = MS_IDLE;
            dev_finish(d, DEV_IDLE, "idle");
            dev_wait(d, IDLE_PING_SECONDS);
            return true;
        }
        send_register(d);
        return d->in_use;
    case MW_PUBLISH: on_answer(d, p); return d->in_use && d->mqtt_step != MS_CONNACK;
    case MW_PUBACK:
    case MW_PINGRESP: return true;
    default: dev_finish(d, DEV_ERROR, "mqtt: unexpected packet type %d", p->type); return false;
    }
}

static void mqtt_readable(struct device *d)
{
    struct bufferevent *bev = d->bev;
    struct evbuffer *in = bufferevent_get_input(bev);

    while (d->in_use && d->bev == bev && evbuffer_get_length(in) > 0) {
        size_t len = evbuffer_get_length(in);
        const uint8_t *buf = evbuffer_pullup(in, (ev_ssize_t)len);
        struct mw_packet p;
        int r = mw_parse(buf, len, MQTT_MAX_IN, &p);
        bool more;

        if (r == 0)
            return;
        if (r < 0) {
            dev_finish(d, DEV_ERROR, "mqtt: malformed packet");
            return;
        }
        more = on_packet(d, &p);
        if (!more || !d->in_use || d->bev != bev)
            return;
        evbuffer_drain(in, p.size);
    }
}

static int mqtt_eof(struct device *d)
{
    (void)d;
    return -1;
}

static void mqtt_wait_done(struct device *d)
{
    if (d->mqtt_step == MS_IDLE) {
        if (mw_pingreq(bufferevent_get_output(d->bev)) == 0)
            dev_wait(d, IDLE_PING_SECONDS);
        return;
    }
    send_poll(d);
}

static void mqtt_reset(struct device *d)
{
    d->mqtt_step = MS_CONNACK;
}

const struct dev_proto mqtt_proto = {
    .connected = mqtt_connected,
    .readable = mqtt_readable,
    .eof = mqtt_eof,
    .wait_done = mqtt_wait_done,
    .reset = mqtt_reset,
};
