/*
 * libFuzzer target for the HTTP request parser (src/server/http.c): bytes
 * from the network go through http_parser_state_feed() exactly as the
 * connection layer feeds them, first in one piece, then again split into
 * small pieces (the first input byte picks the piece size), so that callbacks
 * cut at every position are exercised. The handler touches the accessors the
 * API code uses and answers with a small JSON body; a request whose path
 * starts with "/h" is held first (as a poll waiting for its commit is) and
 * resumed as the connection layer does: asked again, then for the last time,
 * then the rest of the piece is fed, so pipelined input after a held request
 * goes through the parser's pause and resume.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "src/server/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void on_request(void *arg, struct http_request *req, struct http_response *resp)
{
    char v[256];
    json_t *o;

    (void)arg;
    if (req == NULL)
        return; /* the parser answered on its own */
    if (strncmp(req->path, "/h", 2) == 0 && !req->final_try) {
        resp->hold_ticket = 1;
        return;
    }
    (void)http_query_param(req, "api-version", v, sizeof(v));
    (void)http_request_header(req, "Authorization");
    o = json_pack("{s:s, s:I}", "path", req->path, "len", (json_int_t)req->body_len);
    if (o != NULL) {
        http_response_json(resp, 200, o);
        json_decref(o);
    }
}

static void feed(const uint8_t *data, size_t size, size_t piece)
{
    struct http_parser_state *ps = http_parser_state_new(on_request, NULL);
    struct evbuffer *out = evbuffer_new();

    if (ps != NULL && out != NULL) {
        for (size_t off = 0; off < size; off += piece) {
            size_t n = size - off < piece ? size - off : piece;
            const char *at = (const char *)data + off;
            int r = http_parser_state_feed(ps, at, n, out);

            while (r == HTTP_FEED_HELD) {
                size_t used = http_parser_state_consumed(ps);
                int q = http_parser_state_resume(ps, out, false);

                if (q == HTTP_FEED_HELD)
                    q = http_parser_state_resume(ps, out, true);
                if (q != 0)
                    goto done; /* answered, and the connection would be closed */
                /* the rest of this piece, as serve() feeds what stayed in its input */
                at += used;
                n -= used;
                r = n > 0 ? http_parser_state_feed(ps, at, n, out) : 0;
            }
            if (r != 0)
                break; /* the connection would be closed */
            /* the server writes answers out as it goes */
            evbuffer_drain(out, evbuffer_get_length(out));
        }
    }
done:
    http_parser_state_free(ps);
    if (out != NULL)
        evbuffer_free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    feed(data + 1, size - 1, size - 1 > 0 ? size - 1 : 1);
    feed(data + 1, size - 1, (size_t)(data[0] % 17) + 1);
    return 0;
}
