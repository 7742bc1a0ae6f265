/*
 * Outgoing webhooks (docs/webhooks.md): one blocking JSON POST over libcurl,
 * and on top of it the custom allocation call (DPS service API §9.4). Both
 * block for up to their timeout, so they are called only from the assigner
 * threads, never from an event loop. Every call uses its own easy handle, so
 * any number of threads may call at once.
 *
 * Rules every call follows: POST with Content-Type: application/json; http://
 * and https:// only; https verifies the peer (certificate chain against the
 * system CA store plus the --webhook-ca file, and the host name); redirects
 * are not followed (a 3xx is a failure); no proxy; the answer body is capped at
 * WEBHOOK_MAX_ANSWER. Error messages and log lines name the webhook by
 * scheme://host:port only: a URL's user info, path and query (an Azure
 * Function's ?code= key) never appear.
 */
#ifndef PROV_SERVER_WEBHOOK_H
#define PROV_SERVER_WEBHOOK_H

#include <stddef.h>

#include <jansson.h>

#define WEBHOOK_MAX_ANSWER (64 * 1024)      /* bytes of answer body read */
#define WEBHOOK_CONNECT_TIMEOUT_MS 5000L    /* TCP + TLS handshake, within the total */
#define WEBHOOK_EXCERPT_MAX 200             /* bytes of a failure answer put in err */
#define CUSTOM_ALLOCATION_TIMEOUT_MS 10000L /* suggested total timeout per call */

/*
 * curl_global_init, once, before any thread calls a webhook (provd's main).
 * 0 or PROV_EINTERNAL. webhook_global_cleanup undoes it (and drops the CA
 * file's certificates) at exit.
 */
int webhook_global_init(void);
void webhook_global_cleanup(void);

/*
 * Trusts the PEM certificates of path for https webhooks, in addition to the
 * system store (--webhook-ca). Call at start-up, after webhook_global_init
 * and before the assigner threads start; NULL forgets them again. The file is
 * read now: 0, or PROV_EINVAL (unreadable, no certificate, or libcurl without
 * OpenSSL) with a one-line reason in err that does not repeat the path.
 */
int webhook_set_ca_file(const char *path, char *err, size_t errlen);

/*
 * POSTs body (compact JSON) to url and waits at most timeout_ms in total.
 * what names the webhook in err ("custom allocation webhook").
 *
 * Returns 0 when the answer's status is 2xx; then, if response is not NULL,
 * *response is the answer parsed as a JSON object (new reference), or NULL
 * when the body was empty. With response NULL the body is read (capped) and
 * ignored. On failure *response is NULL and err holds one line such as:
 *   PROV_ETIMEOUT  "<what> timed out after 5000 ms",
 *                  "<what> could not connect within 5000 ms"
 *   PROV_EIO       "<what> could not connect: Connection refused",
 *                  "<what> host name could not be resolved", ...
 *   PROV_ETLS      "<what> TLS failed: SSL certificate problem: ..."
 *   PROV_EPROTO    "<what> answered 400: <first 200 bytes of the body>",
 *                  "<what> answer is not valid JSON: ...",
 *                  "<what> answer is not a JSON object"
 *   PROV_ELIMIT    "<what> answer is larger than 64 KB"
 *   PROV_EINVAL    "<what> URL is not a valid http(s) URL" (or a bad timeout)
 *   PROV_ENOMEM
 * *http_status (may be NULL) is the answer's status, 0 when none came.
 */
int webhook_post_json(const char *what, const char *url, const json_t *body, long timeout_ms,
                      long *http_status, json_t **response, char *err, size_t errlen);

/*
 * The custom allocation webhook: POSTs request (the AllocationRequest the
 * caller built: deviceRuntimeContext, linkedHubs, the enrollment) and checks
 * the answer. Success is status 200 with a JSON object whose iotHubHostName
 * is a non-empty string (at most 255 bytes) equal, ignoring case, to one of
 * request's linkedHubs; initialTwin, when present and not null, must be an
 * object; payload may be any JSON value. A null initialTwin is removed, so
 * the caller sees an object or nothing. Returns 0 with *answer the answer
 * object (new reference; caller json_decref()s), or a negative PROV_E* with
 * *answer NULL and a one-line reason in err that starts with "custom
 * allocation webhook" (see webhook_post_json, plus "answered 204, not 200",
 * "answer has no iotHubHostName", "chose hub X, which is not among
 * linkedHubs", "initialTwin is not an object"; all PROV_EPROTO). The reason
 * is meant for the registration record (errorMessage).
 */
int custom_allocation_call(const char *url, long timeout_ms, const json_t *request, json_t **answer,
                           char *err, size_t errlen);

/*
 * 0 when url is an absolute http:// or https:// URL with a host (and at most
 * PROV_MAX_URL bytes), else PROV_EINVAL. Nothing is contacted.
 */
int webhook_url_check(const char *url);

/*
 * The checks custom_allocation_call applies to a 200 answer's body (len
 * bytes, not NUL-terminated): a JSON object with a linked iotHubHostName, an
 * object or null initialTwin. 0 with *answer (new reference), or PROV_EPROTO
 * with *answer NULL and the reason in err. Untrusted input: fuzz_webhook.
 */
int custom_allocation_parse(const char *body, size_t len, const json_t *request,
                            json_t **answer, char *err, size_t errlen);

/*
 * scheme://host[:port] of url, for log lines (no user info, path or query);
 * "(invalid URL)" when it does not parse.
 */
void webhook_url_origin(const char *url, char *out, size_t outlen);

/*
 * Copies the first max bytes (at most; out holds max + 1) of in[0..len) as
 * one line of valid UTF-8: control characters become spaces (runs collapsed),
 * invalid bytes '?', a cut never splits a character, trailing spaces go.
 * For quoting what a webhook answered in an error message.
 */
void webhook_excerpt(const char *in, size_t len, char *out, size_t max);

#endif
