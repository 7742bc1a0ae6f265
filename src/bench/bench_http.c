/*
 * prov-bench over HTTPS (device-protocol doc §3): per device one TLS
 * connection with HTTP/1.1 keep-alive carrying the register PUT and the
 * polling GETs (Retry-After honoured unless --ignore-retry-after). A server
 * that closes the connection between requests gets a new one, as SDKs do.
 * Also the HTTP response parser (http_parser) the enroll subcommand uses.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "../common/util.h"
#include "bench_device.h"

/* ---- response parser ---- */

static void header_done(struct hresp *h)
{
    h->field[h->field_len] = '\0';
    h->value[h->value_len] = '\0';
    if (str_ieq(h->field, "Retry-After")) {
        long v;

        h->retry_after = parse_long(h->value, 0, 86400, &v) == 0 ? (int)v : -1;
    }
    h->field_len = h->value_len = 0;
    h->in_value = false;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct hresp *h = p->data;

    if (h->in_value)
        header_done(h);
    for (size_t i = 0; i < len && h->field_len < sizeof(h->field) - 1; i++)
        h->field[h->field_len++] = at[i];
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct hresp *h = p->data;

    h->in_value = true;
    for (size_t i = 0; i < len && h->value_len < sizeof(h->value) - 1; i++)
        h->value[h->value_len++] = at[i];
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct hresp *h = p->data;

    if (h->in_value)
        header_done(h);
    h->status = (int)p->status_code;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct hresp *h = p->data;

    if (h->body_len + len + 1 > h->body_cap) {
        size_t cap = h->body_cap ? h->body_cap : 4096;
        char *nb;

        while (cap < h->body_len + len + 1)
            cap *= 2;
        if (cap > HRESP_MAX_BODY)
            return -1;
        if ((nb = realloc(h->body, cap)) == NULL)
            return -1;
        h->body = nb;
        h->body_cap = cap;
    }
    memcpy(h->body + h->body_len, at, len);
    h->body_len += len;
    h->body[h->body_len] = '\0';
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct hresp *h = p->data;

    h->complete = true;
    h->keep_alive = http_should_keep_alive(p) != 0;
    http_parser_pause(p, 1); /* one answer per request: stop here */
    return 0;
}

static const http_parser_settings hresp_settings = {
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void hresp_init(struct hresp *h)
{
    char *body = h->body;
    size_t cap = h->body_cap;

    memset(h, 0, sizeof(*h));
    h->body = body;
    h->body_cap = cap;
    if (body != NULL)
        body[0] = '\0';
    h->retry_after = -1;
    http_parser_init(&h->parser, HTTP_RESPONSE);
    h->parser.data = h;
}

int hresp_feed(struct hresp *h, const char *data, size_t len)
{
    size_t n;

    if (h->failed)
        return -1;
    n = http_parser_execute(&h->parser, &hresp_settings, data, len);
    if (h->complete)
        return n == len ? 1 : -1; /* bytes after the answer: the server sent more than asked */
    if (HTTP_PARSER_ERRNO(&h->parser) != HPE_OK || n != len) {
        h->failed = true;
        return -1;
    }
    return 0;
}

int hresp_eof(struct hresp *h)
{
    if (h->failed || h->complete)
        return h->complete ? 1 : -1;
    http_parser_execute(&h->parser, &hresp_settings, NULL, 0);
    if (h->complete) {
        h->keep_alive = false;
        return 1;
    }
    return -1;
}

void hresp_free(struct hresp *h)
{
    free(h->body);
    h->body = NULL;
    h->body_cap = h->body_len = 0;
}

/* ---- the HTTPS device ---- */

enum http_step { HS_REGISTER, HS_POLL, HS_WAIT };

static void host_header(const struct bench_opts *o, char *out, size_t outlen)
{
    if (strcmp(o->port, "443") == 0)
        snprintf(out, outlen, "%s", o->host);
    else
        snprintf(out, outlen, "%s:%s", o->host, o->port);
}

static void send_request(struct device *d)
{
    const struct bench_opts *o = d->th->sh->o;
    struct evbuffer *out = bufferevent_get_output(d->bev);
    char host[300];
    int rc;

    host_header(o, host, sizeof(host));
    hresp_init(&d->resp);
    d->th->stats.requests++;
    if (d->http_step == HS_REGISTER) {
        char *body = dev_register_body(d);

        if (body == NULL) {
            dev_finish(d, DEV_ERROR, "out of memory");
            return;
        }
        rc = evbuffer_add_printf(out,
                                 "PUT /%s/registrations/%s/register?api-version=%s HTTP/1.1\r\n"
                                 "Host: %s\r\nAccept: application/json\r\n"
                                 "Content-Type: application/json; charset=utf-8\r\n"
                                 "%s%s%sContent-Length: %zu\r\nConnection: keep-alive\r\n\r\n%s",
                                 o->scope, d->rid, BENCH_API_VERSION, host,
                                 d->sas ? "Authorization: " : "", d->sas ? d->sas : "",
                                 d->sas ? "\r\n" : "", strlen(body), body);
        free(body);
    } else {
        d->th->stats.polls++;
        d->polls++;
        rc = evbuffer_add_printf(out,
                                 "GET /%s/registrations/%s/operations/%s?api-version=%s "
                                 "HTTP/1.1\r\nHost: %s\r\nAccept: application/json\r\n"
                                 "%s%s%sConnection: keep-alive\r\n\r\n",
                                 o->scope, d->rid, d->opid, BENCH_API_VERSION, host,
                                 d->sas ? "Authorization: " : "", d->sas ? d->sas : "",
                                 d->sas ? "\r\n" : "");
    }
    if (rc < 0)
        dev_finish(d, DEV_ERROR, "out of memory");
}

/* The next request on this connection, or on a new one when the server closed it. */
static void next_request(struct device *d)
{
    if (d->bev == NULL || !d->resp.keep_alive) {
        (void)dev_reconnect(d); /* connected() sends it; a failure has finished the device */
        return;
    }
    send_request(d);
}

static void http_connected(struct device *d)
{
    if (d->http_step == HS_WAIT)
        return; /* the wait timer sends the poll */
    send_request(d);
}

/* 200/202 with an operation: done, poll again (now or after Retry-After). */
static void operation_answer(struct device *d, const json_t *j)
{
    int wait = 0;

    switch (dev_judge(d, j, d->resp.retry_after, &wait)) {
    case JUDGE_POLL:
        d->http_step = HS_POLL;
        next_request(d);
        break;
    case JUDGE_WAIT:
        d->http_step = HS_WAIT;
        dev_wait(d, wait);
        break;
    default: break;
    }
}

static void answer(struct device *d)
{
    json_error_t e;
    json_t *j = d->resp.body_len > 0 ? json_loadb(d->resp.body, d->resp.body_len, 0, &e) : NULL;

    if (d->tpm != NULL && d->resp.status == 401 && d->http_step == HS_REGISTER &&
        tpm_challenge(d, j) == 0) {
        json_decref(j);
        next_request(d); /* the same PUT, now signed */
        return;
    }
    if (d->resp.status >= 300)
        dev_refused(d, "http", d->resp.status, j);
    else if (!json_is_object(j))
        dev_finish(d, DEV_ERROR, "http %d answer is not JSON", d->resp.status);
    else
        operation_answer(d, j);
    json_decref(j);
}

static void http_readable(struct device *d)
{
    struct evbuffer *in = bufferevent_get_input(d->bev);

    while (evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        int r;

        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        r = hresp_feed(&d->resp, v.iov_base, v.iov_len);
        evbuffer_drain(in, v.iov_len);
        if (r < 0) {
            dev_finish(d, DEV_ERROR, "malformed HTTP answer");
            return;
        }
        if (r == 1) {
            answer(d);
            return;
        }
    }
}

static int http_eof(struct device *d)
{
    if (d->http_step == HS_WAIT) {
        /* closed while we wait: the poll goes on a new connection */
        d->resp.keep_alive = false;
        bufferevent_free(d->bev);
        d->bev = NULL;
        d->connected = false;
        return 0;
    }
    if (d->connected && hresp_eof(&d->resp) == 1) {
        answer(d);
        return 0;
    }
    return -1;
}

static void http_wait_done(struct device *d)
{
    d->http_step = HS_POLL;
    next_request(d);
}

static void http_reset(struct device *d)
{
    d->http_step = HS_REGISTER;
    d->resp.keep_alive = true;
    if (d->tpm != NULL)
        tpm_session_end(d);
}

const struct dev_proto http_proto = {
    .connected = http_connected,
    .readable = http_readable,
    .eof = http_eof,
    .wait_done = http_wait_done,
    .reset = http_reset,
};
