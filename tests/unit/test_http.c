/*
 * Unit tests for the HTTP request parser (src/server/http.c), driven through
 * http_parser_state_feed() with an evbuffer, as the connection layer does.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <jansson.h>

#include "src/common/errors.h"
#include "src/common/limits.h"
#include "src/server/http.h"

#define MAX_SEEN 8

/* What the handler saw, copied out of the request (which dies after the call). */
struct seen {
    enum http_method_id method;
    char method_name[16];
    char target[256];
    char path[256];
    char query[256];
    bool has_query;
    char *body;
    size_t body_len;
    char content_type[128];
    char request_id[37];
    size_t nheaders;
    /* results of accessor calls made inside the handler */
    char q_name[64];
    int q_name_r;
    int q_missing_r;
    char q_empty[8];
    int q_empty_r;
    char q_flag[8];
    int q_flag_r;
    int q_bad_r;
    int q_small_r;
    const char *x_blank; /* points to a static "" / "set" marker, not into req */
    char x_trailing[64];
};

struct ctx {
    struct seen seen[MAX_SEEN];
    int nseen;
    int nerrors;          /* handler calls with req == NULL */
    int last_error_status;
    int last_error_code;
    bool close_next;      /* handler asks to close after its answer */
    bool no_status;       /* handler leaves status at 0 */
    int holds;            /* requests to /hold are held this many more times */
    bool hold_on_final;   /* ... even when asked for the last time (a misbehaving handler) */
    bool saw_final[MAX_SEEN];
};

static void handler(void *arg, struct http_request *req, struct http_response *resp)
{
    struct ctx *c = arg;
    struct seen *s;
    const char *v;
    json_t *o;

    if (req == NULL) {
        c->nerrors++;
        c->last_error_status = resp->status;
        c->last_error_code = resp->error_code;
        return;
    }
    assert_true(c->nseen < MAX_SEEN);
    s = &c->seen[c->nseen++];
    s->method = req->method;
    snprintf(s->method_name, sizeof(s->method_name), "%s", req->method_name);
    snprintf(s->target, sizeof(s->target), "%s", req->target);
    snprintf(s->path, sizeof(s->path), "%s", req->path);
    s->has_query = req->query != NULL;
    snprintf(s->query, sizeof(s->query), "%s", req->query ? req->query : "");
    s->body = malloc(req->body_len + 1);
    assert_non_null(s->body);
    assert_non_null(req->body);
    memcpy(s->body, req->body, req->body_len + 1);
    assert_int_equal(req->body[req->body_len], '\0');
    s->body_len = req->body_len;
    v = http_request_header(req, "content-type");
    snprintf(s->content_type, sizeof(s->content_type), "%s", v ? v : "(none)");
    snprintf(s->request_id, sizeof(s->request_id), "%s", req->request_id);
    s->nheaders = req->nheaders;
    s->q_name_r = http_query_param(req, "NAME", s->q_name, sizeof(s->q_name));
    s->q_empty_r = http_query_param(req, "empty", s->q_empty, sizeof(s->q_empty));
    s->q_flag_r = http_query_param(req, "flag", s->q_flag, sizeof(s->q_flag));
    {
        char tmp[64];

        s->q_missing_r = http_query_param(req, "missing", tmp, sizeof(tmp));
        s->q_bad_r = http_query_param(req, "bad", tmp, sizeof(tmp));
        s->q_small_r = http_query_param(req, "name", tmp, 3);
    }
    v = http_request_header(req, "X-BLANK");
    s->x_blank = v == NULL ? NULL : v[0] == '\0' ? "" : "set";
    v = http_request_header(req, "x-trailing");
    snprintf(s->x_trailing, sizeof(s->x_trailing), "%s", v ? v : "(none)");

    c->saw_final[c->nseen - 1] = req->final_try;
    if (strcmp(req->path, "/hold") == 0 && c->holds > 0 && (!req->final_try || c->hold_on_final)) {
        c->holds--;
        resp->hold_ticket = 42;
        return;
    }
    if (c->no_status)
        return;
    o = json_pack("{s:s, s:I}", "path", req->path, "len", (json_int_t)req->body_len);
    http_response_json(resp, 200, o);
    json_decref(o);
    http_response_set_header(resp, "X-Test", "yes");
    if (c->close_next)
        resp->close = true;
}

static void ctx_free(struct ctx *c)
{
    for (int i = 0; i < c->nseen; i++)
        free(c->seen[i].body);
}

/* The output as a NUL-terminated string owned by the evbuffer. */
static const char *out_str(struct evbuffer *out)
{
    evbuffer_add(out, "", 1);
    return (const char *)evbuffer_pullup(out, -1);
}

static void out_reset(struct evbuffer *out)
{
    evbuffer_drain(out, evbuffer_get_length(out));
}

static int count_substr(const char *hay, const char *needle)
{
    int n = 0;

    for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

static int feed_str(struct http_parser_state *ps, const char *s, struct evbuffer *out)
{
    return http_parser_state_feed(ps, s, strlen(s), out);
}

struct fixture {
    struct ctx c;
    struct http_parser_state *ps;
    struct evbuffer *out;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    f->ps = http_parser_state_new(handler, &f->c);
    f->out = evbuffer_new();
    if (f->ps == NULL || f->out == NULL)
        return -1;
    http_parser_state_set_peer(f->ps, "127.0.0.1:5555", NULL);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    ctx_free(&f->c);
    http_parser_state_free(f->ps);
    evbuffer_free(f->out);
    free(f);
    return 0;
}

/* Checks the DPS error body of an answer the parser produced on its own. */
static void check_error_answer(const char *out, int status, int errcode)
{
    char line[64];
    const char *body;
    json_t *j;
    json_error_t e;

    snprintf(line, sizeof(line), "HTTP/1.1 %d ", status);
    if (strncmp(out, line, strlen(line)) != 0)
        fail_msg("expected status %d, got: %.80s", status, out);
    assert_non_null(strstr(out, "\r\nConnection: close\r\n"));
    assert_non_null(strstr(out, "\r\nContent-Type: application/json"));
    snprintf(line, sizeof(line), "\r\nx-ms-error-code: %d\r\n", errcode);
    assert_non_null(strstr(out, line));
    body = strstr(out, "\r\n\r\n");
    assert_non_null(body);
    j = json_loads(body + 4, 0, &e);
    if (j == NULL)
        fail_msg("error body is not JSON: %s (%s)", body + 4, e.text);
    assert_int_equal(json_integer_value(json_object_get(j, "errorCode")), errcode);
    assert_true(json_is_string(json_object_get(j, "trackingId")));
    assert_true(json_is_string(json_object_get(j, "message")));
    assert_true(json_is_string(json_object_get(j, "timestampUtc")));
    json_decref(j);
}

static void test_simple_get(void **state)
{
    struct fixture *f = *state;
    const char *out;
    const char *body;
    char len[40];
    json_t *j;

    assert_int_equal(feed_str(f->ps,
                              "GET /0ne00ABC123/registrations/dev-1/operations/op-9"
                              "?api-version=2021-06-01 HTTP/1.1\r\n"
                              "Host: localhost\r\nAccept: application/json\r\n\r\n",
                              f->out),
                     0);
    assert_int_equal(f->c.nseen, 1);
    assert_int_equal(f->c.nerrors, 0);
    assert_int_equal(f->c.seen[0].method, HM_GET);
    assert_string_equal(f->c.seen[0].method_name, "GET");
    assert_string_equal(f->c.seen[0].path, "/0ne00ABC123/registrations/dev-1/operations/op-9");
    assert_string_equal(f->c.seen[0].target,
                        "/0ne00ABC123/registrations/dev-1/operations/op-9?api-version=2021-06-01");
    assert_true(f->c.seen[0].has_query);
    assert_string_equal(f->c.seen[0].query, "api-version=2021-06-01");
    assert_int_equal(f->c.seen[0].body_len, 0);
    assert_string_equal(f->c.seen[0].body, "");
    assert_int_equal(f->c.seen[0].nheaders, 2);
    assert_int_equal(strlen(f->c.seen[0].request_id), 36);

    out = out_str(f->out);
    assert_true(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0);
    assert_non_null(strstr(out, "\r\nContent-Type: application/json; charset=utf-8\r\n"));
    assert_non_null(strstr(out, "\r\nX-Test: yes\r\n"));
    assert_null(strstr(out, "Connection: close"));
    /* the request id given to the handler is the one sent back */
    assert_non_null(strstr(out, f->c.seen[0].request_id));
    body = strstr(out, "\r\n\r\n");
    assert_non_null(body);
    body += 4;
    snprintf(len, sizeof(len), "\r\nContent-Length: %zu\r\n", strlen(body));
    assert_non_null(strstr(out, len));
    j = json_loads(body, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "path")),
                        "/0ne00ABC123/registrations/dev-1/operations/op-9");
    json_decref(j);
}

static void test_put_with_body(void **state)
{
    struct fixture *f = *state;
    const char *body = "{\"registrationId\":\"dev-1\"}";
    char req[512];

    snprintf(req, sizeof(req),
             "PUT /0ne00ABC123/registrations/dev-1/register?api-version=2019-03-31 HTTP/1.1\r\n"
             "Host: localhost\r\nContent-Type: application/json; charset=utf-8\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    assert_int_equal(feed_str(f->ps, req, f->out), 0);
    assert_int_equal(f->c.nseen, 1);
    assert_int_equal(f->c.seen[0].method, HM_PUT);
    assert_string_equal(f->c.seen[0].path, "/0ne00ABC123/registrations/dev-1/register");
    assert_int_equal(f->c.seen[0].body_len, strlen(body));
    assert_string_equal(f->c.seen[0].body, body);
    assert_string_equal(f->c.seen[0].content_type, "application/json; charset=utf-8");
    assert_true(strncmp(out_str(f->out), "HTTP/1.1 200 OK\r\n", 17) == 0);
}

static void test_methods(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *name;
        enum http_method_id id;
    } m[] = {
        {"GET", HM_GET},   {"PUT", HM_PUT},   {"POST", HM_POST},      {"DELETE", HM_DELETE},
        {"PATCH", HM_PATCH}, {"OPTIONS", HM_OTHER},
    };

    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
        char req[128];

        snprintf(req, sizeof(req), "%s /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n", m[i].name);
        assert_int_equal(feed_str(f->ps, req, f->out), 0);
        assert_int_equal(f->c.nseen, 1);
        assert_int_equal(f->c.seen[0].method, m[i].id);
        assert_string_equal(f->c.seen[0].method_name, m[i].name);
        ctx_free(&f->c);
        memset(&f->c, 0, sizeof(f->c));
    }
}

static void test_head_has_no_body(void **state)
{
    struct fixture *f = *state;
    const char *out;

    assert_int_equal(feed_str(f->ps, "HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n", f->out), 0);
    assert_int_equal(f->c.nseen, 1);
    assert_int_equal(f->c.seen[0].method, HM_HEAD);
    out = out_str(f->out);
    assert_true(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0);
    /* Content-Length describes the body a GET would get, but none follows */
    assert_null(strstr(out, "Content-Length: 0\r\n"));
    assert_non_null(strstr(out, "Content-Length: "));
    assert_string_equal(strstr(out, "\r\n\r\n"), "\r\n\r\n");
}

static void test_pipelined(void **state)
{
    struct fixture *f = *state;
    const char *out;

    assert_int_equal(feed_str(f->ps,
                              "GET /a?name=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                              "PUT /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                              "POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
                              "GET /d HTTP/1.1\r\nHost: x\r\n\r\n",
                              f->out),
                     0);
    assert_int_equal(f->c.nseen, 4);
    assert_string_equal(f->c.seen[0].path, "/a");
    assert_string_equal(f->c.seen[0].query, "name=1");
    assert_string_equal(f->c.seen[1].path, "/b");
    assert_string_equal(f->c.seen[1].body, "hello");
    assert_int_equal(f->c.seen[2].method, HM_POST);
    assert_string_equal(f->c.seen[2].body, "{}");
    assert_string_equal(f->c.seen[3].path, "/d");
    /* request state does not leak from one request to the next */
    assert_false(f->c.seen[1].has_query);
    assert_int_equal(f->c.seen[3].body_len, 0);
    assert_int_equal(f->c.seen[3].nheaders, 1);
    assert_string_not_equal(f->c.seen[0].request_id, f->c.seen[1].request_id);
    out = out_str(f->out);
    assert_int_equal(count_substr(out, "HTTP/1.1 200 OK\r\n"), 4);
    /* answers come in request order */
    assert_true(strstr(out, "\"/a\"") < strstr(out, "\"/b\""));
    assert_true(strstr(out, "\"/b\"") < strstr(out, "\"/c\""));
    assert_true(strstr(out, "\"/c\"") < strstr(out, "\"/d\""));
}

static void test_byte_by_byte(void **state)
{
    struct fixture *f = *state;
    const char *req = "PUT /0ne/registrations/dev/register?name=a%20b HTTP/1.1\r\n"
                      "Host: localhost\r\n"
                      "Content-Type: application/json\r\n"
                      "X-Trailing: value with blanks   \t \r\n"
                      "Content-Length: 13\r\n\r\n"
                      "{\"a\":\"12345\"}"
                      "GET /second HTTP/1.1\r\nHost: x\r\n\r\n";

    for (size_t i = 0; req[i] != '\0'; i++)
        assert_int_equal(http_parser_state_feed(f->ps, req + i, 1, f->out), 0);
    assert_int_equal(f->c.nseen, 2);
    assert_string_equal(f->c.seen[0].path, "/0ne/registrations/dev/register");
    assert_string_equal(f->c.seen[0].body, "{\"a\":\"12345\"}");
    assert_int_equal(f->c.seen[0].nheaders, 4);
    assert_string_equal(f->c.seen[0].content_type, "application/json");
    assert_string_equal(f->c.seen[0].x_trailing, "value with blanks");
    assert_int_equal(f->c.seen[0].q_name_r, 3);
    assert_string_equal(f->c.seen[0].q_name, "a b");
    assert_string_equal(f->c.seen[1].path, "/second");
    assert_int_equal(count_substr(out_str(f->out), "HTTP/1.1 200 OK\r\n"), 2);
}

static void test_chunked(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(feed_str(f->ps,
                              "PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
                              f->out),
                     0);
    assert_int_equal(f->c.nseen, 1);
    assert_int_equal(f->c.seen[0].body_len, 11);
    assert_string_equal(f->c.seen[0].body, "hello world");
    /* and a chunked request split in the middle of a chunk */
    assert_int_equal(feed_str(f->ps,
                              "POST /d HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123",
                              f->out),
                     0);
    assert_int_equal(f->c.nseen, 1);
    assert_int_equal(feed_str(f->ps, "456789\r\n0\r\n\r\n", f->out), 0);
    assert_int_equal(f->c.nseen, 2);
    assert_string_equal(f->c.seen[1].body, "0123456789");
}

static void test_body_at_limit(void **state)
{
    struct fixture *f = *state;
    char head[128];
    char *body = malloc(PROV_MAX_BODY);

    assert_non_null(body);
    memset(body, 'b', PROV_MAX_BODY);
    snprintf(head, sizeof(head), "PUT /big HTTP/1.1\r\nContent-Length: %d\r\n\r\n", PROV_MAX_BODY);
    assert_int_equal(feed_str(f->ps, head, f->out), 0);
    assert_int_equal(http_parser_state_feed(f->ps, body, PROV_MAX_BODY, f->out), 0);
    assert_int_equal(f->c.nseen, 1);
    assert_int_equal(f->c.seen[0].body_len, PROV_MAX_BODY);
    assert_int_equal(f->c.nerrors, 0);
    free(body);
}

static void test_content_length_too_large(void **state)
{
    struct fixture *f = *state;
    char head[128];

    snprintf(head, sizeof(head), "PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\nxx",
             PROV_MAX_BODY + 1);
    assert_int_equal(feed_str(f->ps, head, f->out), 1);
    assert_int_equal(f->c.nseen, 0);
    assert_int_equal(f->c.nerrors, 1);
    assert_int_equal(f->c.last_error_status, 413);
    assert_int_equal(f->c.last_error_code, 413001);
    check_error_answer(out_str(f->out), 413, 413001);
    assert_non_null(strstr(out_str(f->out), "Payload Too Large"));
}

/* Six 16 KB chunks: exactly PROV_MAX_BODY. */
static void feed_six_chunks(struct fixture *f)
{
    char chunk[6 + 16 * 1024 + 2];

    assert_int_equal(16 * 1024 * 6, PROV_MAX_BODY);
    memcpy(chunk, "4000\r\n", 6);
    memset(chunk + 6, 'c', 16 * 1024);
    memcpy(chunk + 6 + 16 * 1024, "\r\n", 2);
    assert_int_equal(feed_str(f->ps, "PUT /big HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                              f->out),
                     0);
    for (int i = 0; i < 6; i++)
        assert_int_equal(http_parser_state_feed(f->ps, chunk, sizeof(chunk), f->out), 0);
}

static void test_chunked_at_limit(void **state)
{
    struct fixture *f = *state;

    feed_six_chunks(f);
    assert_int_equal(feed_str(f->ps, "0\r\n\r\n", f->out), 0);
    assert_int_equal(f->c.nseen, 1);
    assert_int_equal(f->c.seen[0].body_len, PROV_MAX_BODY);
    assert_int_equal(f->c.nerrors, 0);
}

static void test_chunked_too_large(void **state)
{
    struct fixture *f = *state;

    /* one byte more than the limit */
    feed_six_chunks(f);
    assert_int_equal(feed_str(f->ps, "1\r\nx\r\n0\r\n\r\n", f->out), 1);
    assert_int_equal(f->c.nseen, 0);
    assert_int_equal(f->c.nerrors, 1);
    check_error_answer(out_str(f->out), 413, 413001);
}

static void test_too_many_headers(void **state)
{
    struct fixture *f = *state;
    char req[8192];
    size_t o;

    o = (size_t)snprintf(req, sizeof(req), "GET /h HTTP/1.1\r\n");
    for (int i = 0; i < PROV_MAX_HEADERS; i++)
        o += (size_t)snprintf(req + o, sizeof(req) - o, "X-H%d: %d\r\n", i, i);
    snprintf(req + o, sizeof(req) - o, "\r\n");
    /* exactly the maximum is fine */
    assert_int_equal(feed_str(f->ps, req, f->out), 0);
    assert_int_equal(f->c.nseen, 1);
    assert_int_equal(f->c.seen[0].nheaders, PROV_MAX_HEADERS);
    out_reset(f->out);
    /* one more is refused */
    snprintf(req + o, sizeof(req) - o, "X-One-More: 1\r\n\r\n");
    assert_int_equal(feed_str(f->ps, req, f->out), 1);
    assert_int_equal(f->c.nseen, 1);
    assert_int_equal(f->c.nerrors, 1);
    check_error_answer(out_str(f->out), 431, 431002);
}

static void test_header_bytes_too_large(void **state)
{
    struct fixture *f = *state;
    size_t vlen = PROV_MAX_HEADER_BYTES;
    char *req = malloc(vlen + 128);
    size_t o;

    assert_non_null(req);
    o = (size_t)snprintf(req, 128, "GET /h HTTP/1.1\r\nX-Big: ");
    memset(req + o, 'v', vlen);
    o += vlen;
    snprintf(req + o, 128, "\r\n\r\n");
    assert_int_equal(feed_str(f->ps, req, f->out), 1);
    assert_int_equal(f->c.nseen, 0);
    check_error_answer(out_str(f->out), 431, 431001);
    free(req);
}

static void test_header_bytes_split(void **state)
{
    struct fixture *f = *state;
    char line[1100];
    int r = 0;
    int n = 0;

    /* many moderate headers fed one by one add up past the limit */
    assert_int_equal(feed_str(f->ps, "GET /h HTTP/1.1\r\n", f->out), 0);
    memset(line, 'v', sizeof(line));
    memcpy(line, "X-A: ", 5);
    memcpy(line + sizeof(line) - 2, "\r\n", 2);
    while (r == 0 && n < 40) {
        r = http_parser_state_feed(f->ps, line, sizeof(line), f->out);
        n++;
    }
    assert_int_equal(r, 1);
    assert_true(n <= 16);
    check_error_answer(out_str(f->out), 431, 431001);
}

static void test_garbage(void **state)
{
    static const char *const garbage[] = {
        "\x01\x02\x03garbage\r\n\r\n",
        "GET\r\n\r\n",
        "GET / HTTP/9.9.9\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        "PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++) {
        struct ctx c = {0};
        struct http_parser_state *ps = http_parser_state_new(handler, &c);
        struct evbuffer *out = evbuffer_new();

        assert_non_null(ps);
        assert_non_null(out);
        if (feed_str(ps, garbage[i], out) != 1)
            fail_msg("garbage %zu was not refused", i);
        assert_int_equal(c.nseen, 0);
        assert_int_equal(c.nerrors, 1);
        check_error_answer(out_str(out), 400, 400001);
        http_parser_state_free(ps);
        evbuffer_free(out);
    }
}

static void test_bad_targets(void **state)
{
    struct fixture *f = *state;
    char *req;
    size_t o;

    /* absolute-form and asterisk-form targets are not served */
    assert_int_equal(feed_str(f->ps, "GET http://example.com/x HTTP/1.1\r\n\r\n", f->out), 1);
    assert_int_equal(f->c.nseen, 0);
    check_error_answer(out_str(f->out), 400, 400002);
    http_parser_state_free(f->ps);
    out_reset(f->out);
    f->ps = http_parser_state_new(handler, &f->c);
    assert_non_null(f->ps);

    /* a request target over PROV_MAX_URL */
    req = malloc(PROV_MAX_URL + 64);
    assert_non_null(req);
    o = (size_t)snprintf(req, 64, "GET /");
    memset(req + o, 'u', PROV_MAX_URL);
    o += PROV_MAX_URL;
    snprintf(req + o, 64, " HTTP/1.1\r\n\r\n");
    assert_int_equal(feed_str(f->ps, req, f->out), 1);
    assert_int_equal(f->c.nseen, 0);
    check_error_answer(out_str(f->out), 414, 414001);
    free(req);
}

static void test_connection_close(void **state)
{
    struct fixture *f = *state;
    const char *out;

    /* a client asking to close: answered, then the parser stops */
    assert_int_equal(feed_str(f->ps,
                              "GET /a HTTP/1.1\r\nConnection: close\r\n\r\n"
                              "GET /b HTTP/1.1\r\n\r\n",
                              f->out),
                     1);
    assert_int_equal(f->c.nseen, 1);
    out = out_str(f->out);
    assert_int_equal(count_substr(out, "HTTP/1.1 200 OK\r\n"), 1);
    assert_non_null(strstr(out, "\r\nConnection: close\r\n"));
}

static void test_http10_closes(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(feed_str(f->ps, "GET /a HTTP/1.0\r\n\r\n", f->out), 1);
    assert_int_equal(f->c.nseen, 1);
    assert_non_null(strstr(out_str(f->out), "\r\nConnection: close\r\n"));
}

static void test_upgrade_ignored(void **state)
{
    struct fixture *f = *state;

    /* the server never switches protocols, so what follows is the next request */
    assert_int_equal(feed_str(f->ps,
                              "GET /a HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                              "GET /b HTTP/1.1\r\n\r\n",
                              f->out),
                     0);
    assert_int_equal(f->c.nerrors, 0);
    assert_int_equal(f->c.nseen, 2);
    assert_string_equal(f->c.seen[1].path, "/b");
    assert_int_equal(count_substr(out_str(f->out), "HTTP/1.1 200 OK\r\n"), 2);
}

static void test_handler_close_and_no_status(void **state)
{
    struct fixture *f = *state;
    const char *out;

    f->c.close_next = true;
    assert_int_equal(feed_str(f->ps, "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n", f->out), 1);
    assert_int_equal(f->c.nseen, 1);
    assert_non_null(strstr(out_str(f->out), "\r\nConnection: close\r\n"));

    /* a handler that sets no status produces a 500, not a malformed answer */
    http_parser_state_free(f->ps);
    out_reset(f->out);
    f->ps = http_parser_state_new(handler, &f->c);
    assert_non_null(f->ps);
    f->c.close_next = false;
    f->c.no_status = true;
    assert_int_equal(feed_str(f->ps, "GET /a HTTP/1.1\r\n\r\n", f->out), 0);
    out = out_str(f->out);
    assert_true(strncmp(out, "HTTP/1.1 500 Internal Server Error\r\n", 36) == 0);
    assert_non_null(strstr(out, "\r\nContent-Length: 0\r\n"));
}

static void test_query_params(void **state)
{
    struct fixture *f = *state;
    struct seen *s;

    assert_int_equal(feed_str(f->ps,
                              "GET /q?api-version=2019-03-31&Name=a%2Fb+c%2b&empty=&flag&bad=%zz"
                              " HTTP/1.1\r\n\r\n",
                              f->out),
                     0);
    assert_int_equal(f->c.nseen, 1);
    s = &f->c.seen[0];
    assert_string_equal(s->path, "/q");
    /* names match case-insensitively, values are decoded, '+' is a space */
    assert_int_equal(s->q_name_r, 6);
    assert_string_equal(s->q_name, "a/b c+");
    assert_int_equal(s->q_missing_r, PROV_ENOTFOUND);
    assert_int_equal(s->q_empty_r, 0);
    assert_string_equal(s->q_empty, "");
    assert_int_equal(s->q_flag_r, 0);
    assert_string_equal(s->q_flag, "");
    assert_int_equal(s->q_bad_r, PROV_EPROTO);
    assert_int_equal(s->q_small_r, PROV_EPROTO); /* value does not fit */

    /* no query at all */
    assert_int_equal(feed_str(f->ps, "GET /noq HTTP/1.1\r\n\r\n", f->out), 0);
    assert_false(f->c.seen[1].has_query);
    assert_int_equal(f->c.seen[1].q_name_r, PROV_ENOTFOUND);
    assert_int_equal(f->c.seen[1].q_flag_r, PROV_ENOTFOUND);
}

static void test_header_lookup(void **state)
{
    struct fixture *f = *state;
    struct seen *s;

    assert_int_equal(feed_str(f->ps,
                              "GET /h HTTP/1.1\r\n"
                              "CONTENT-TYPE: text/plain\r\n"
                              "x-blank:\r\n"
                              "X-Trailing:   padded value  \r\n\r\n",
                              f->out),
                     0);
    s = &f->c.seen[0];
    assert_string_equal(s->content_type, "text/plain");
    assert_non_null(s->x_blank);
    assert_string_equal(s->x_blank, "");
    assert_string_equal(s->x_trailing, "padded value");
    /* absent header */
    assert_int_equal(feed_str(f->ps, "GET /h HTTP/1.1\r\n\r\n", f->out), 0);
    assert_null(f->c.seen[1].x_blank);
    assert_string_equal(f->c.seen[1].content_type, "(none)");
}

static void test_response_helpers(void **state)
{
    struct http_response resp = {0};
    struct http_request req = {0};
    char big[4096];
    json_t *j;

    (void)state;
    resp.body = evbuffer_new();
    assert_non_null(resp.body);
    memcpy(req.request_id, "00000000-0000-4000-8000-000000000000", 37);
    http_response_error(&resp, &req, 404001, "no such %s", "thing");
    assert_int_equal(resp.status, 404);
    assert_int_equal(resp.error_code, 404001);
    assert_string_equal(resp.log_note, "no such thing");
    assert_non_null(strstr(resp.headers, "x-ms-error-code: 404001\r\n"));
    evbuffer_add(resp.body, "", 1);
    j = json_loads((const char *)evbuffer_pullup(resp.body, -1), 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "trackingId")), req.request_id);
    assert_string_equal(json_string_value(json_object_get(j, "message")), "no such thing");
    json_decref(j);
    /* header injection is refused, overflow is dropped without corruption */
    resp.headers_len = 0;
    resp.headers[0] = '\0';
    http_response_set_header(&resp, "X-Evil", "a\r\nSet-Cookie: x");
    assert_int_equal(resp.headers_len, 0);
    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    http_response_set_header(&resp, "X-Ok", "1");
    http_response_set_header(&resp, "X-Big", big);
    assert_string_equal(resp.headers, "X-Ok: 1\r\n");
    assert_int_equal(resp.headers_len, 9);
    assert_string_equal(http_status_text(413), "Payload Too Large");
    assert_string_equal(http_status_text(431), "Request Header Fields Too Large");
    evbuffer_free(resp.body);
}

/*
 * A held request: nothing is written, the parser stops after it (a pipelined
 * request waits), resuming calls the handler again with the same request and
 * body, and the last try must answer.
 */
static void test_hold_and_resume(void **state)
{
    struct fixture *f = *state;
    const char *first = "PUT /hold HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n{\"a\":\"b\"}";
    char data[512];
    size_t consumed;
    uint64_t ticket = 0;
    const char *out;

    snprintf(data, sizeof(data), "%sGET /next HTTP/1.1\r\nHost: x\r\n\r\n", first);
    f->c.holds = 2;
    assert_false(http_parser_state_held(f->ps, NULL));
    assert_int_equal(feed_str(f->ps, data, f->out), HTTP_FEED_HELD);
    consumed = http_parser_state_consumed(f->ps);
    assert_int_equal(consumed, strlen(first));
    assert_int_equal(evbuffer_get_length(f->out), 0);
    assert_int_equal(f->c.nseen, 1);
    assert_true(http_parser_state_held(f->ps, &ticket));
    assert_int_equal(ticket, 42);
    /* more input while held is not parsed */
    assert_int_equal(feed_str(f->ps, data + consumed, f->out), HTTP_FEED_HELD);
    assert_int_equal(f->c.nseen, 1);
    /* asked again: held again */
    assert_int_equal(http_parser_state_resume(f->ps, f->out, false), HTTP_FEED_HELD);
    assert_int_equal(f->c.nseen, 2);
    assert_int_equal(evbuffer_get_length(f->out), 0);
    /* the last time: answered */
    assert_int_equal(http_parser_state_resume(f->ps, f->out, true), 0);
    assert_false(http_parser_state_held(f->ps, NULL));
    assert_int_equal(f->c.nseen, 3);
    assert_false(f->c.saw_final[0]);
    assert_false(f->c.saw_final[1]);
    assert_true(f->c.saw_final[2]);
    for (int i = 1; i < 3; i++) {
        assert_string_equal(f->c.seen[i].path, "/hold");
        assert_string_equal(f->c.seen[i].body, "{\"a\":\"b\"}");
        assert_string_equal(f->c.seen[i].request_id, f->c.seen[0].request_id);
    }
    /* nothing held: resume is a no-op */
    assert_int_equal(http_parser_state_resume(f->ps, f->out, true), 0);
    assert_int_equal(f->c.nseen, 3);
    /* the pipelined request, fed again by the connection layer */
    assert_int_equal(feed_str(f->ps, data + consumed, f->out), 0);
    assert_int_equal(f->c.nseen, 4);
    assert_string_equal(f->c.seen[3].path, "/next");
    out = out_str(f->out);
    assert_int_equal(count_substr(out, "HTTP/1.1 200 OK\r\n"), 2);
    assert_true(strstr(out, "\"path\":\"/hold\"") < strstr(out, "\"path\":\"/next\""));
}

/* A handler that holds even on the last try gets a 500 written for it. */
static void test_hold_on_final_answers(void **state)
{
    struct fixture *f = *state;

    f->c.holds = 5;
    f->c.hold_on_final = true;
    assert_int_equal(feed_str(f->ps, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n", f->out),
                     HTTP_FEED_HELD);
    assert_int_equal(http_parser_state_resume(f->ps, f->out, true), 0);
    assert_non_null(strstr(out_str(f->out), "HTTP/1.1 500 "));
    assert_false(http_parser_state_held(f->ps, NULL));
}

/* A held request of a connection that is to close: answered, then close. */
static void test_hold_then_close(void **state)
{
    struct fixture *f = *state;

    f->c.holds = 1;
    assert_int_equal(
        feed_str(f->ps, "GET /hold HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", f->out),
        HTTP_FEED_HELD);
    assert_int_equal(http_parser_state_resume(f->ps, f->out, false), 1);
    assert_non_null(strstr(out_str(f->out), "\r\nConnection: close\r\n"));
}

/* A response is one contiguous piece of the output (one TLS record when sent). */
static void test_response_one_piece(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(feed_str(f->ps, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n", f->out), 0);
    assert_int_equal(evbuffer_peek(f->out, -1, NULL, NULL, 0), 1);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_simple_get),
        T(test_hold_and_resume),
        T(test_hold_on_final_answers),
        T(test_hold_then_close),
        T(test_response_one_piece),
        T(test_put_with_body),
        T(test_methods),
        T(test_head_has_no_body),
        T(test_pipelined),
        T(test_byte_by_byte),
        T(test_chunked),
        T(test_body_at_limit),
        T(test_content_length_too_large),
        T(test_chunked_at_limit),
        T(test_chunked_too_large),
        T(test_too_many_headers),
        T(test_header_bytes_too_large),
        T(test_header_bytes_split),
        T(test_garbage),
        T(test_bad_targets),
        T(test_connection_close),
        T(test_http10_closes),
        T(test_upgrade_ignored),
        T(test_handler_close_and_no_status),
        T(test_query_params),
        T(test_header_lookup),
        cmocka_unit_test(test_response_helpers),
    };

    return cmocka_run_group_tests_name("http", tests, NULL, NULL);
}
