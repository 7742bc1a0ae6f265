/*
 * Outgoing webhooks (webhook.h, docs/webhooks.md): a blocking JSON POST on a
 * fresh libcurl easy handle per call, with a total and a connect timeout, a
 * capped answer, no redirects, and TLS verified against the system store plus
 * the optional --webhook-ca certificates; and the custom allocation call,
 * which checks the webhook's answer (DPS service API §9.4).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "../common/errors.h"
#include "../common/limits.h"
#include "../common/log.h"
#include "../common/curl_errors.h"
#include "../common/util.h"
#include "webhook.h"

#define LOG_MODULE "webhook"

#ifndef PROVD_VERSION
#define PROVD_VERSION "unknown"
#endif

#define MAX_HUB_NAME 255

/* The --webhook-ca certificates; set before the assigner threads start, then read-only. */
static STACK_OF(X509) *extra_cas;

int webhook_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : PROV_EINTERNAL;
}

void webhook_global_cleanup(void)
{
    sk_X509_pop_free(extra_cas, X509_free);
    extra_cas = NULL;
    curl_global_cleanup();
}

static bool curl_uses_openssl(void)
{
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);

    return v != NULL && v->ssl_version != NULL && strncmp(v->ssl_version, "OpenSSL", 7) == 0;
}

int webhook_set_ca_file(const char *path, char *err, size_t errlen)
{
    STACK_OF(X509) *certs;
    BIO *bio;
    X509 *x;

    sk_X509_pop_free(extra_cas, X509_free);
    extra_cas = NULL;
    if (path == NULL)
        return 0;
    if (!curl_uses_openssl()) {
        snprintf(err, errlen, "libcurl is not built with OpenSSL");
        return PROV_EINVAL;
    }
    if ((bio = BIO_new_file(path, "r")) == NULL) {
        ERR_clear_error();
        snprintf(err, errlen, "the file cannot be read");
        return PROV_EINVAL;
    }
    if ((certs = sk_X509_new_null()) == NULL) {
        BIO_free(bio);
        snprintf(err, errlen, "out of memory");
        return PROV_ENOMEM;
    }
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (sk_X509_push(certs, x) == 0) {
            X509_free(x);
            break;
        }
    }
    ERR_clear_error(); /* the end of the file reads as an error */
    BIO_free(bio);
    if (sk_X509_num(certs) == 0) {
        sk_X509_free(certs);
        snprintf(err, errlen, "the file holds no PEM certificate");
        return PROV_EINVAL;
    }
    extra_cas = certs;
    return 0;
}

/* libcurl calls this with each new SSL_CTX, after it loaded the system CA store. */
static CURLcode add_extra_cas(CURL *h, void *sslctx, void *arg)
{
    X509_STORE *store = SSL_CTX_get_cert_store(sslctx);

    for (int i = 0; i < sk_X509_num(extra_cas); i++) {
        if (X509_STORE_add_cert(store, sk_X509_value(extra_cas, i)) != 1) {
            unsigned long e = ERR_peek_last_error();

            if (ERR_GET_REASON(e) != X509_R_CERT_ALREADY_IN_HASH_TABLE) {
                ERR_clear_error();
                return CURLE_SSL_CACERT_BADFILE;
            }
        }
    }
    ERR_clear_error();
    return CURLE_OK;
}

int webhook_url_check(const char *url)
{
    CURLU *u;
    char *scheme = NULL, *host = NULL;
    int r = PROV_EINVAL;

    if (url == NULL || strlen(url) > PROV_MAX_URL)
        return PROV_EINVAL;
    if ((u = curl_url()) == NULL)
        return PROV_ENOMEM;
    if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host[0] != '\0' &&
        (strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0))
        r = 0;
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return r;
}

void webhook_url_origin(const char *url, char *out, size_t outlen)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL;

    if (u != NULL && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
        if (curl_url_get(u, CURLUPART_PORT, &port, 0) != CURLUE_OK)
            port = NULL;
        snprintf(out, outlen, "%s://%s%s%s", scheme, host, port ? ":" : "", port ? port : "");
    } else {
        snprintf(out, outlen, "(invalid URL)");
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
}

/* Length of the valid UTF-8 sequence at s (n bytes available), or 0. */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4;
    else
        return 0;
    if (c == 0xe0)
        lo = 0xa0; /* overlong */
    else if (c == 0xed)
        hi = 0x9f; /* surrogates */
    else if (c == 0xf0)
        lo = 0x90; /* overlong */
    else if (c == 0xf4)
        hi = 0x8f; /* above U+10FFFF */
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

void webhook_excerpt(const char *in, size_t len, char *out, size_t max)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t i = 0, o = 0;

    while (i < len) {
        size_t n = utf8_seq_len(s + i, len - i);

        if (n == 0 || (n == 1 && (s[i] < 0x20 || s[i] == 0x7f))) {
            char c = n == 0 ? '?' : ' ';

            if (o >= max)
                break;
            if (!(c == ' ' && (o == 0 || out[o - 1] == ' ')))
                out[o++] = c;
            i++;
            continue;
        }
        if (o + n > max)
            break;
        memcpy(out + o, s + i, n);
        o += n;
        i += n;
    }
    while (o > 0 && out[o - 1] == ' ')
        o--;
    out[o] = '\0';
}

/* The answer body, capped at WEBHOOK_MAX_ANSWER. */
struct answer_buf {
    char *data;
    size_t len;
    size_t cap;
    bool too_big;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct answer_buf *a = arg;
    int r = buf_append_capped(&a->data, &a->len, &a->cap, data, size * nmemb, WEBHOOK_MAX_ANSWER);

    a->too_big = r == PROV_ELIMIT;
    return r == 0 ? size * nmemb : 0; /* 0 makes libcurl fail the transfer (CURLE_WRITE_ERROR) */
}

static CURLcode set_options(CURL *h, const char *url, const char *text, long timeout_ms,
                            struct curl_slist *headers, struct answer_buf *buf, char *errbuf)
{
    long connect_ms =
        timeout_ms < WEBHOOK_CONNECT_TIMEOUT_MS ? timeout_ms : WEBHOOK_CONNECT_TIMEOUT_MS;
    CURLcode cc = curl_easy_setopt(h, CURLOPT_URL, url);

    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_PROXY, ""); /* none, whatever the environment says */
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    if (cc == CURLE_OK && extra_cas != NULL)
        cc = curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, add_extra_cas);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_USERAGENT, "provd/" PROVD_VERSION);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(text));
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_POSTFIELDS, text);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_WRITEDATA, buf);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    return cc;
}

static struct curl_slist *make_headers(void)
{
    static const char *const lines[] = {"Content-Type: application/json",
                                        "Accept: application/json", "Expect:"};
    struct curl_slist *list = NULL, *t;

    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        if ((t = curl_slist_append(list, lines[i])) == NULL) {
            curl_slist_free_all(list);
            return NULL;
        }
        list = t;
    }
    return list;
}

/* true when the TCP connection (and, for https, the TLS handshake) completed. */
static bool was_connected(CURL *h)
{
    curl_off_t tcp = 0, tls = 0;
    const char *scheme = NULL;

    curl_easy_getinfo(h, CURLINFO_CONNECT_TIME_T, &tcp);
    curl_easy_getinfo(h, CURLINFO_APPCONNECT_TIME_T, &tls);
    curl_easy_getinfo(h, CURLINFO_SCHEME, &scheme);
    if (tcp <= 0)
        return false;
    return scheme == NULL || !str_ieq(scheme, "https") || tls > 0;
}

/* Turns a failed transfer into a PROV_E* and a one-line reason. */
static int transfer_failure(CURL *h, CURLcode cc, const struct answer_buf *buf, const char *errbuf,
                            const char *what, long timeout_ms, char *err, size_t errlen)
{
    long os_errno = 0;
    char eb[128];

    if (cc == CURLE_OPERATION_TIMEDOUT) {
        if (was_connected(h))
            snprintf(err, errlen, "%s timed out after %ld ms", what, timeout_ms);
        else
            snprintf(err, errlen, "%s could not connect within %ld ms", what,
                     timeout_ms < WEBHOOK_CONNECT_TIMEOUT_MS ? timeout_ms
                                                             : WEBHOOK_CONNECT_TIMEOUT_MS);
        return PROV_ETIMEOUT;
    }
    if (prov_curl_error(cc) == PROV_ETLS) {
        webhook_excerpt(errbuf, strlen(errbuf), eb, sizeof(eb) - 1);
        snprintf(err, errlen, "%s TLS failed: %s", what, eb[0] ? eb : curl_easy_strerror(cc));
        return PROV_ETLS;
    }
    switch (cc) {
    case CURLE_COULDNT_CONNECT:
        curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno);
        if (os_errno != 0)
            snprintf(err, errlen, "%s could not connect: %s", what,
                     strerror_r((int)os_errno, eb, sizeof(eb)));
        else
            snprintf(err, errlen, "%s could not connect", what);
        return PROV_EIO;
    case CURLE_COULDNT_RESOLVE_HOST:
        snprintf(err, errlen, "%s host name could not be resolved", what);
        return PROV_EIO;
    case CURLE_WRITE_ERROR:
        if (buf->too_big) {
            snprintf(err, errlen, "%s answer is larger than %d KB", what,
                     WEBHOOK_MAX_ANSWER / 1024);
            return PROV_ELIMIT;
        }
        snprintf(err, errlen, "out of memory");
        return PROV_ENOMEM;
    case CURLE_OUT_OF_MEMORY: snprintf(err, errlen, "out of memory"); return PROV_ENOMEM;
    case CURLE_GOT_NOTHING:
        snprintf(err, errlen, "%s closed the connection without answering", what);
        return PROV_EIO;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        snprintf(err, errlen, "%s URL is not a valid http(s) URL", what);
        return PROV_EINVAL;
    default:
        /* curl_easy_strerror is a fixed text per code: never the URL */
        snprintf(err, errlen, "%s failed: %s", what, curl_easy_strerror(cc));
        return PROV_EIO;
    }
}

/* An answer body as a JSON object: 0 with *out, or PROV_EPROTO with err. */
static int parse_object(const char *data, size_t len, const char *what, json_t **out, char *err,
                        size_t errlen)
{
    char ex[WEBHOOK_EXCERPT_MAX + 1];
    json_error_t jerr;
    json_t *j;

    if ((j = json_loadb(data, len, 0, &jerr)) == NULL) {
        webhook_excerpt(jerr.text, strlen(jerr.text), ex, 120);
        snprintf(err, errlen, "%s answer is not valid JSON: %s", what, ex);
        return PROV_EPROTO;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        snprintf(err, errlen, "%s answer is not a JSON object", what);
        return PROV_EPROTO;
    }
    *out = j;
    return 0;
}

/* Judges a completed exchange: status, then (if wanted) the body as a JSON object. */
static int judge_answer(long status, const struct answer_buf *buf, const char *what,
                        json_t **response, char *err, size_t errlen)
{
    char ex[WEBHOOK_EXCERPT_MAX + 1];

    if (status < 200 || status > 299) {
        webhook_excerpt(buf->data ? buf->data : "", buf->len, ex, WEBHOOK_EXCERPT_MAX);
        snprintf(err, errlen, "%s answered %ld%s%s", what, status, ex[0] ? ": " : "", ex);
        return PROV_EPROTO;
    }
    if (response == NULL || buf->len == 0)
        return 0;
    return parse_object(buf->data, buf->len, what, response, err, errlen);
}

/* Runs one prepared POST; the handle and buffers belong to the caller. */
static int perform(CURL *h, const char *url, const char *text, long timeout_ms, const char *what,
                   long *status, json_t **response, char *err, size_t errlen)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    struct answer_buf buf = {0};
    struct curl_slist *headers = make_headers();
    CURLcode cc;
    int r;

    if (headers == NULL) {
        snprintf(err, errlen, "out of memory");
        return PROV_ENOMEM;
    }
    cc = set_options(h, url, text, timeout_ms, headers, &buf, errbuf);
    if (cc == CURLE_OK)
        cc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    if (cc != CURLE_OK)
        r = transfer_failure(h, cc, &buf, errbuf, what, timeout_ms, err, errlen);
    else
        r = judge_answer(*status, &buf, what, response, err, errlen);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
    curl_slist_free_all(headers);
    free(buf.data);
    return r;
}

int webhook_post_json(const char *what, const char *url, const json_t *body, long timeout_ms,
                      long *http_status, json_t **response, char *err, size_t errlen)
{
    char origin[300];
    long status = 0;
    char *text;
    CURL *h;
    int r;

    if (response != NULL)
        *response = NULL;
    if (http_status != NULL)
        *http_status = 0;
    if (errlen > 0)
        err[0] = '\0';
    if (timeout_ms <= 0 || body == NULL) {
        snprintf(err, errlen, "%s: bad timeout or body", what);
        return PROV_EINVAL;
    }
    if ((r = webhook_url_check(url)) != 0) {
        snprintf(err, errlen, "%s URL is not a valid http(s) URL", what);
        return r;
    }
    if ((text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY)) == NULL) {
        snprintf(err, errlen, "out of memory");
        return PROV_ENOMEM;
    }
    if ((h = curl_easy_init()) == NULL) {
        prov_freezero(text, strlen(text));
        snprintf(err, errlen, "out of memory");
        return PROV_ENOMEM;
    }
    r = perform(h, url, text, timeout_ms, what, &status, response, err, errlen);
    webhook_url_origin(url, origin, sizeof(origin));
    if (r == 0)
        plog(LOG_DEBUG, "%s %s answered %ld", what, origin, status);
    else
        plog(LOG_WARN, "%s (%s)", err, origin);
    if (http_status != NULL)
        *http_status = status;
    curl_easy_cleanup(h);
    prov_freezero(text, strlen(text)); /* a hub connector body carries a password */
    return r;
}

/* true when hub is one of request.linkedHubs (ignoring case), or there is no such list. */
static bool hub_is_linked(const json_t *request, const char *hub)
{
    const json_t *hubs = json_object_get(request, "linkedHubs");
    size_t i;
    json_t *v;

    if (!json_is_array(hubs))
        return true;
    json_array_foreach(hubs, i, v)
    {
        if (json_is_string(v) && str_ieq(json_string_value(v), hub))
            return true;
    }
    return false;
}

/* Checks a 200 answer's shape (§9.4); drops a null initialTwin. */
static int check_allocation(json_t *ans, const json_t *request, const char *what, char *err,
                            size_t errlen)
{
    json_t *hub = json_object_get(ans, "iotHubHostName");
    json_t *twin = json_object_get(ans, "initialTwin");
    char ex[80];

    if (!json_is_string(hub) || json_string_length(hub) == 0) {
        snprintf(err, errlen, "%s answer has no iotHubHostName", what);
        return PROV_EPROTO;
    }
    if (json_string_length(hub) > MAX_HUB_NAME) {
        snprintf(err, errlen, "%s answer's iotHubHostName is longer than %d bytes", what,
                 MAX_HUB_NAME);
        return PROV_EPROTO;
    }
    if (!hub_is_linked(request, json_string_value(hub))) {
        webhook_excerpt(json_string_value(hub), json_string_length(hub), ex, 64);
        snprintf(err, errlen, "%s chose hub %s, which is not among linkedHubs", what, ex);
        return PROV_EPROTO;
    }
    if (json_is_null(twin)) {
        json_object_del(ans, "initialTwin");
    } else if (twin != NULL && !json_is_object(twin)) {
        snprintf(err, errlen, "%s answer's initialTwin is not an object", what);
        return PROV_EPROTO;
    }
    return 0;
}

int custom_allocation_parse(const char *body, size_t len, const json_t *request, json_t **answer,
                            char *err, size_t errlen)
{
    static const char what[] = "custom allocation webhook";
    json_t *ans = NULL;
    int r;

    *answer = NULL;
    if ((r = parse_object(body, len, what, &ans, err, errlen)) != 0)
        return r;
    if ((r = check_allocation(ans, request, what, err, errlen)) != 0) {
        json_decref(ans);
        return r;
    }
    *answer = ans;
    return 0;
}

int custom_allocation_call(const char *url, long timeout_ms, const json_t *request, json_t **answer,
                           char *err, size_t errlen)
{
    static const char what[] = "custom allocation webhook";
    long status = 0;
    json_t *ans = NULL;
    int r;

    *answer = NULL;
    r = webhook_post_json(what, url, request, timeout_ms, &status, &ans, err, errlen);
    if (r != 0)
        return r;
    if (status != 200) {
        snprintf(err, errlen, "%s answered %ld, not 200", what, status);
        r = PROV_EPROTO;
    } else if (ans == NULL) {
        snprintf(err, errlen, "%s answered 200 without a body", what);
        r = PROV_EPROTO;
    } else {
        r = check_allocation(ans, request, what, err, errlen);
    }
    if (r != 0) {
        char origin[300];

        webhook_url_origin(url, origin, sizeof(origin));
        plog(LOG_WARN, "%s (%s)", err, origin);
        json_decref(ans);
        return r;
    }
    *answer = ans;
    return 0;
}
