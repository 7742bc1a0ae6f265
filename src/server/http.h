/*
 * HTTP/1.1 server side on libevent bufferevents over TLS. Requests are parsed
 * by http-parser (Debian libhttp-parser), bounded by limits.h, and handed to
 * one synchronous handler; the handler fills a struct http_response. Parser
 * errors, oversized headers or bodies get a DPS error body here, so every
 * failure a client can cause is answered the same way.
 */
#ifndef PROV_SERVER_HTTP_H
#define PROV_SERVER_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct evbuffer;
struct conn;

enum http_method_id {
    HM_OTHER = 0,
    HM_GET,
    HM_PUT,
    HM_POST,
    HM_DELETE,
    HM_HEAD,
    HM_PATCH,
};

struct http_header {
    char *name;  /* as sent */
    char *value; /* leading/trailing blanks stripped */
};

struct http_request {
    enum http_method_id method;
    const char *method_name;   /* "GET", ... */
    char *target;              /* raw request target */
    char *path;                /* raw path (not decoded), without the query */
    char *query;               /* raw query string without '?', or NULL */
    struct http_header headers[64];
    size_t nheaders;
    char *body;                /* NUL-terminated copy of the body (may be "") */
    size_t body_len;
    char request_id[37];       /* fresh UUID, echoed as x-ms-request-id / trackingId */
    char peer[64];             /* "ip:port" of the client */
    struct conn *conn;         /* the connection (TLS peer certificates later) */
    bool final_try;            /* a held request asked again for the last time: answer now */
};

/* Case-insensitive lookup; NULL when absent. */
const char *http_request_header(const struct http_request *req, const char *name);

/*
 * Looks up query parameter `name` (case-insensitive) and percent-decodes it
 * into out. Returns the decoded length, PROV_ENOTFOUND, or PROV_EPROTO.
 */
int http_query_param(const struct http_request *req, const char *name, char *out, size_t outlen);

struct http_response {
    int status;
    struct evbuffer *body;
    char headers[2048];      /* extra header lines, CRLF-terminated */
    size_t headers_len;
    int error_code;          /* six-digit DPS code for the access log, 0 if none */
    char log_note[512];      /* why, for the access log (no secrets) */
    bool close;              /* close the connection after this response */
    /*
     * Set by a handler that cannot answer yet but will be able to once
     * something with this ticket is done (a queued registration commit,
     * committer.h): nothing is sent, the connection reads no further request,
     * and the handler is called again for the same request when the
     * connection layer resumes it (http_parser_state_resume), the last time
     * with req->final_try set, when it must answer.
     */
    uint64_t hold_ticket;
};

void http_response_set_header(struct http_response *resp, const char *name, const char *value);
/* Serializes json (borrowed) as the body with Content-Type application/json. */
void http_response_json(struct http_response *resp, int status, const json_t *json);
/*
 * A DPS error body {"errorCode","trackingId","message","timestampUtc"} with
 * status errcode/1000, plus x-ms-error-code. message is for the client and the
 * log, so it must never contain secrets.
 */
void http_response_error(struct http_response *resp, const struct http_request *req, int errcode,
                         const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Reason phrase for a status code. */
const char *http_status_text(int status);

/*
 * The parser, exposed for the unit tests and the fuzzer: feeds bytes, calls
 * on_request for each complete request (synchronously), and reports framing
 * errors. The connection layer in server.c uses the same object.
 */
struct http_parser_state;
/*
 * Called for each complete request; req is NULL when the parser itself
 * answered (framing error, limits): resp then holds that error, for logging.
 */
typedef void (*http_on_request)(void *arg, struct http_request *req, struct http_response *resp);

struct http_parser_state *http_parser_state_new(http_on_request cb, void *arg);
void http_parser_state_free(struct http_parser_state *ps);
/*
 * Feeds len bytes. Complete requests are handled and their responses appended
 * to out (an evbuffer). Returns 0 to keep reading, 1 when the connection must
 * be closed once out is flushed (error responses have been appended already),
 * or HTTP_FEED_HELD (below).
 */
int http_parser_state_feed(struct http_parser_state *ps, const char *data, size_t len,
                           struct evbuffer *out);
/*
 * feed's answer when the handler held a request: only
 * http_parser_state_consumed() bytes of that feed were parsed; the caller
 * keeps the rest and feeds it after http_parser_state_resume answered.
 */
#define HTTP_FEED_HELD 2
size_t http_parser_state_consumed(const struct http_parser_state *ps);
/* true while a request is held, with its ticket. */
bool http_parser_state_held(const struct http_parser_state *ps, uint64_t *ticket);
/*
 * Calls the handler again for the held request (final: it must answer now)
 * and writes the response to out: 0 (answered, keep reading), 1 (answered,
 * close once out is flushed) or HTTP_FEED_HELD (held again). 0 when nothing
 * is held.
 */
int http_parser_state_resume(struct http_parser_state *ps, struct evbuffer *out, bool final);
/* Connection metadata copied into every request. */
void http_parser_state_set_peer(struct http_parser_state *ps, const char *peer, struct conn *conn);

#endif
