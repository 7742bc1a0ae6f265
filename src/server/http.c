#include "http.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <http_parser.h>

#include "../common/errors.h"
#include "../common/limits.h"
#include "../common/util.h"
#include "dps_wire.h"

struct http_parser_state {
    http_parser parser;
    http_parser_settings settings;
    http_on_request cb;
    void *cb_arg;
    struct http_request req;
    struct evbuffer *out;
    size_t header_bytes;     /* request line + headers of the current request */
    int last_was_value;      /* header callback state */
    char *url;
    size_t url_len;
    char *body;
    size_t body_len;
    size_t body_cap;
    int fail_code;           /* DPS error code to answer with, 0 = parser error */
    const char *fail_msg;
    bool in_message;
    bool held;               /* the request in req is held (http_parser_state_resume) */
    bool held_keep_alive;    /* what the held request said about the connection */
    size_t consumed;         /* bytes of the last feed parsed, when it returned HTTP_FEED_HELD */
    uint64_t hold_ticket;
    char peer[64];
    struct conn *conn;
};

const char *http_request_header(const struct http_request *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++) {
        if (str_ieq(req->headers[i].name, name))
            return req->headers[i].value;
    }
    return NULL;
}

int http_query_param(const struct http_request *req, const char *name, char *out, size_t outlen)
{
    const char *p = req->query;
    size_t nlen = strlen(name);

    while (p != NULL && *p) {
        const char *end = strchr(p, '&');
        size_t flen = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', flen);
        size_t klen = eq ? (size_t)(eq - p) : flen;

        if (klen == nlen && str_ieqn(p, name, nlen)) {
            const char *v = eq ? eq + 1 : p + flen;
            size_t vlen = eq ? flen - klen - 1 : 0;

            if (vlen + 1 > outlen)
                return PROV_EPROTO;
            return url_decode(v, vlen, out, true);
        }
        p = end ? end + 1 : NULL;
    }
    return PROV_ENOTFOUND;
}

const char *http_status_text(int status)
{
    const char *phrase = http_reason_phrase(status);

    return phrase != NULL ? phrase : "Unknown";
}

void http_response_set_header(struct http_response *resp, const char *name, const char *value)
{
    int n;
    size_t room = sizeof(resp->headers) - resp->headers_len;

    /* header values we set never carry CR/LF; refuse them anyway */
    if (strpbrk(name, "\r\n") != NULL || strpbrk(value, "\r\n") != NULL)
        return;
    n = snprintf(resp->headers + resp->headers_len, room, "%s: %s\r\n", name, value);
    if (n > 0 && (size_t)n < room)
        resp->headers_len += (size_t)n;
    else
        resp->headers[resp->headers_len] = '\0';
}

void http_response_json(struct http_response *resp, int status, const json_t *json)
{
    char *text = json_dumps(json, JSON_COMPACT);

    resp->status = status;
    evbuffer_drain(resp->body, evbuffer_get_length(resp->body));
    if (text == NULL) {
        resp->status = 500;
        return;
    }
    evbuffer_add(resp->body, text, strlen(text));
    prov_freezero(text, strlen(text)); /* answers may carry keys */
}

void http_response_error(struct http_response *resp, const struct http_request *req, int errcode,
                         const char *fmt, ...)
{
    char msg[512];
    char code[16];
    va_list ap;
    json_t *o;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    o = dps_error_body(errcode, req ? req->request_id : "", msg);
    http_response_json(resp, errcode / 1000, o);
    json_decref(o);
    snprintf(code, sizeof(code), "%d", errcode);
    http_response_set_header(resp, "x-ms-error-code", code);
    resp->error_code = errcode;
    snprintf(resp->log_note, sizeof(resp->log_note), "%s", msg);
}

static void request_reset(struct http_parser_state *ps)
{
    struct http_request *req = &ps->req;

    for (size_t i = 0; i < req->nheaders; i++) {
        free(req->headers[i].name);
        free(req->headers[i].value);
    }
    free(req->target);
    free(req->path);
    free(req->query);
    prov_freezero(req->body, req->body_len); /* set only when on_message_complete failed */
    memset(req, 0, sizeof(*req));
    free(ps->url);
    ps->url = NULL;
    ps->url_len = 0;
    prov_freezero(ps->body, ps->body_cap);
    ps->body = NULL;
    ps->body_len = ps->body_cap = 0;
    ps->header_bytes = 0;
    ps->last_was_value = 0;
    ps->fail_code = 0;
    ps->fail_msg = NULL;
    ps->in_message = false;
}

static int append(char **buf, size_t *len, const char *at, size_t n)
{
    char *p = realloc(*buf, *len + n + 1);

    if (p == NULL)
        return -1;
    memcpy(p + *len, at, n);
    *len += n;
    p[*len] = '\0';
    *buf = p;
    return 0;
}

static int fail(struct http_parser_state *ps, int code, const char *msg)
{
    ps->fail_code = code;
    ps->fail_msg = msg;
    return -1;
}

static int count_header_bytes(struct http_parser_state *ps, size_t n)
{
    ps->header_bytes += n;
    if (ps->header_bytes > PROV_MAX_HEADER_BYTES)
        return fail(ps, 431001, "request headers too large");
    return 0;
}

static int on_message_begin(http_parser *p)
{
    struct http_parser_state *ps = p->data;

    request_reset(ps);
    ps->in_message = true;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct http_parser_state *ps = p->data;

    if (count_header_bytes(ps, n) != 0)
        return -1;
    if (ps->url_len + n > PROV_MAX_URL)
        return fail(ps, 414001, "request target too long");
    return append(&ps->url, &ps->url_len, at, n) == 0 ? 0 : fail(ps, 500001, "out of memory");
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct http_parser_state *ps = p->data;
    struct http_request *req = &ps->req;
    size_t len;

    if (count_header_bytes(ps, n) != 0)
        return -1;
    if (ps->last_was_value || req->nheaders == 0) {
        if (req->nheaders == sizeof(req->headers) / sizeof(req->headers[0]))
            return fail(ps, 431002, "too many request headers");
        req->nheaders++;
        ps->last_was_value = 0;
    }
    len = req->headers[req->nheaders - 1].name ? strlen(req->headers[req->nheaders - 1].name) : 0;
    return append(&req->headers[req->nheaders - 1].name, &len, at, n) == 0
               ? 0
               : fail(ps, 500001, "out of memory");
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct http_parser_state *ps = p->data;
    struct http_request *req = &ps->req;
    struct http_header *h;
    size_t len;

    if (count_header_bytes(ps, n) != 0)
        return -1;
    if (req->nheaders == 0)
        return fail(ps, 400001, "malformed header");
    h = &req->headers[req->nheaders - 1];
    ps->last_was_value = 1;
    len = h->value ? strlen(h->value) : 0;
    if (h->value == NULL && n == 0)
        return append(&h->value, &len, "", 0) == 0 ? 0 : fail(ps, 500001, "out of memory");
    return append(&h->value, &len, at, n) == 0 ? 0 : fail(ps, 500001, "out of memory");
}

static int on_headers_complete(http_parser *p)
{
    struct http_parser_state *ps = p->data;
    struct http_request *req = &ps->req;
    const char *q;
    size_t plen;

    for (size_t i = 0; i < req->nheaders; i++) {
        struct http_header *h = &req->headers[i];

        if (h->name == NULL)
            return fail(ps, 400001, "malformed header");
        if (h->value == NULL) {
            h->value = strdup("");
            if (h->value == NULL)
                return fail(ps, 500001, "out of memory");
        }
        /* strip trailing blanks */
        for (size_t l = strlen(h->value); l > 0 && isblank((unsigned char)h->value[l - 1]); l--)
            h->value[l - 1] = '\0';
    }
    if (ps->url == NULL || ps->url[0] != '/')
        return fail(ps, 400002, "request target must be an absolute path");
    req->target = strdup(ps->url);
    q = strchr(ps->url, '?');
    plen = q ? (size_t)(q - ps->url) : ps->url_len;
    req->path = strndup(ps->url, plen);
    req->query = q ? strdup(q + 1) : NULL;
    if (req->target == NULL || req->path == NULL || (q != NULL && req->query == NULL))
        return fail(ps, 500001, "out of memory");
    if (strchr(req->path, '#') != NULL)
        return fail(ps, 400002, "fragment in request target");
    switch (p->method) {
    case HTTP_GET: req->method = HM_GET; break;
    case HTTP_PUT: req->method = HM_PUT; break;
    case HTTP_POST: req->method = HM_POST; break;
    case HTTP_DELETE: req->method = HM_DELETE; break;
    case HTTP_HEAD: req->method = HM_HEAD; break;
    case HTTP_PATCH: req->method = HM_PATCH; break;
    default: req->method = HM_OTHER; break;
    }
    req->method_name = http_method_str((enum http_method)p->method);
    /*
     * We never switch protocols (RFC 9110 lets a server ignore Upgrade): left
     * set, http-parser would stop after this request and the next pipelined
     * one would be refused as malformed.
     */
    p->upgrade = 0;
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > PROV_MAX_BODY)
        return fail(ps, 413001, "request body larger than 96 KB");
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct http_parser_state *ps = p->data;

    if (ps->body_len + n > PROV_MAX_BODY)
        return fail(ps, 413001, "request body larger than 96 KB");
    if (ps->body_len + n + 1 > ps->body_cap) {
        size_t cap = ps->body_cap ? ps->body_cap : 1024;
        char *b;

        while (cap < ps->body_len + n + 1)
            cap *= 2;
        b = realloc(ps->body, cap);
        if (b == NULL)
            return fail(ps, 500001, "out of memory");
        ps->body = b;
        ps->body_cap = cap;
    }
    memcpy(ps->body + ps->body_len, at, n);
    ps->body_len += n;
    ps->body[ps->body_len] = '\0';
    return 0;
}

/*
 * The status line, headers and body go into out as one contiguous piece: a
 * TLS bufferevent writes each piece of its output buffer as its own record
 * and write(2), so a response in pieces cost a record and a system call each.
 */
static void write_response(struct evbuffer *out, struct http_response *resp, bool head)
{
    size_t blen = evbuffer_get_length(resp->body);
    struct evbuffer *msg = evbuffer_new();
    struct evbuffer *to = msg != NULL ? msg : out; /* out of memory: in pieces then */

    evbuffer_expand(to, 256 + resp->headers_len + (head ? 0 : blen));
    evbuffer_add_printf(to, "HTTP/1.1 %d %s\r\n", resp->status, http_status_text(resp->status));
    if (blen > 0)
        evbuffer_add_printf(to, "Content-Type: application/json; charset=utf-8\r\n");
    if (resp->status != 204 && resp->status >= 200)
        evbuffer_add_printf(to, "Content-Length: %zu\r\n", blen);
    if (resp->close)
        evbuffer_add_printf(to, "Connection: close\r\n");
    evbuffer_add(to, resp->headers, resp->headers_len);
    evbuffer_add(to, "\r\n", 2);
    if (!head)
        evbuffer_add_buffer(to, resp->body);
    if (msg != NULL) {
        (void)evbuffer_pullup(msg, -1);
        evbuffer_add_buffer(out, msg);
        evbuffer_free(msg);
    }
}

/*
 * Runs the handler for the request in ps->req and writes its response, unless
 * the handler holds it (resp.hold_ticket): then the request, its body
 * included, stays in ps->req for http_parser_state_resume.
 */
static void answer(struct http_parser_state *ps, bool keep_alive, bool final)
{
    struct http_request *req = &ps->req;
    struct http_response resp = {0};

    resp.body = evbuffer_new();
    if (resp.body == NULL) {
        /* no answer possible: close (the client sees the connection end) */
        http_parser_pause(&ps->parser, 1);
        ps->fail_code = -1;
        ps->held = false;
        return;
    }
    resp.close = !keep_alive;
    req->final_try = final;
    http_response_set_header(&resp, "x-ms-request-id", req->request_id);
    ps->cb(ps->cb_arg, req, &resp);
    if (resp.hold_ticket != 0 && !final) {
        evbuffer_free(resp.body);
        ps->held = true;
        ps->held_keep_alive = keep_alive;
        ps->hold_ticket = resp.hold_ticket;
        http_parser_pause(&ps->parser, 1);
        return;
    }
    ps->held = false;
    if (resp.status == 0)
        resp.status = 500;
    write_response(ps->out, &resp, req->method == HM_HEAD);
    evbuffer_free(resp.body);
    prov_freezero(req->body, req->body_len); /* bodies may carry keys */
    req->body = NULL;
    ps->in_message = false;
    if (resp.close) {
        http_parser_pause(&ps->parser, 1);
        ps->fail_code = -1; /* close without a further answer */
    } else {
        http_parser_pause(&ps->parser, 0);
    }
}

static int on_message_complete(http_parser *p)
{
    struct http_parser_state *ps = p->data;
    struct http_request *req = &ps->req;

    req->body = ps->body ? ps->body : strdup("");
    if (req->body == NULL)
        return fail(ps, 500001, "out of memory");
    ps->body = NULL;
    req->body_len = ps->body_len;
    snprintf(req->peer, sizeof(req->peer), "%s", ps->peer);
    req->conn = ps->conn;
    if (uuid_v4(req->request_id) != 0)
        return fail(ps, 500001, "no randomness");
    answer(ps, http_should_keep_alive(p) != 0, false);
    return 0;
}

struct http_parser_state *http_parser_state_new(http_on_request cb, void *arg)
{
    struct http_parser_state *ps = calloc(1, sizeof(*ps));

    if (ps == NULL)
        return NULL;
    http_parser_init(&ps->parser, HTTP_REQUEST);
    ps->parser.data = ps;
    http_parser_settings_init(&ps->settings);
    ps->settings.on_message_begin = on_message_begin;
    ps->settings.on_url = on_url;
    ps->settings.on_header_field = on_header_field;
    ps->settings.on_header_value = on_header_value;
    ps->settings.on_headers_complete = on_headers_complete;
    ps->settings.on_body = on_body;
    ps->settings.on_message_complete = on_message_complete;
    ps->cb = cb;
    ps->cb_arg = arg;
    return ps;
}

void http_parser_state_free(struct http_parser_state *ps)
{
    if (ps == NULL)
        return;
    request_reset(ps);
    free(ps);
}

void http_parser_state_set_peer(struct http_parser_state *ps, const char *peer, struct conn *conn)
{
    snprintf(ps->peer, sizeof(ps->peer), "%s", peer);
    ps->conn = conn;
}

int http_parser_state_feed(struct http_parser_state *ps, const char *data, size_t len,
                           struct evbuffer *out)
{
    size_t n;
    enum http_errno e;

    if (ps->held)
        return HTTP_FEED_HELD; /* nothing more until the held request is answered */
    ps->out = out;
    n = http_parser_execute(&ps->parser, &ps->settings, data, len);
    e = HTTP_PARSER_ERRNO(&ps->parser);
    if (ps->fail_code == -1)
        return 1; /* response written, close requested */
    if (ps->held) {
        ps->consumed = n;
        return HTTP_FEED_HELD;
    }
    if (e == HPE_OK && n == len)
        return 0;
    if (e == HPE_PAUSED)
        return 1;
    {
        struct http_response resp = {0};
        struct http_request *req = &ps->req;
        int code = ps->fail_code ? ps->fail_code : 400001;
        const char *msg = ps->fail_msg ? ps->fail_msg : http_errno_description(e);

        resp.body = evbuffer_new();
        if (resp.body == NULL)
            return 1;
        if (req->request_id[0] == '\0' && uuid_v4(req->request_id) != 0)
            req->request_id[0] = '\0';
        resp.close = true;
        http_response_set_header(&resp, "x-ms-request-id", req->request_id);
        if (ps->fail_msg != NULL)
            http_response_error(&resp, req, code, "%s", msg);
        else
            http_response_error(&resp, req, code, "malformed request: %s", msg);
        ps->cb(ps->cb_arg, NULL, &resp); /* lets the server log the failure */
        write_response(out, &resp, false);
        evbuffer_free(resp.body);
    }
    return 1;
}

size_t http_parser_state_consumed(const struct http_parser_state *ps)
{
    return ps->consumed;
}

bool http_parser_state_held(const struct http_parser_state *ps, uint64_t *ticket)
{
    if (ps->held && ticket != NULL)
        *ticket = ps->hold_ticket;
    return ps->held;
}

int http_parser_state_resume(struct http_parser_state *ps, struct evbuffer *out, bool final)
{
    if (!ps->held)
        return 0;
    ps->out = out;
    answer(ps, ps->held_keep_alive, final);
    if (ps->held)
        return HTTP_FEED_HELD;
    return ps->fail_code == -1 ? 1 : 0;
}
