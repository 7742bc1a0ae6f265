/*
 * provctl: the HTTPS client (libcurl). One easy handle per process, so that
 * the pages of a list reuse one TLS connection. The SAS token and request
 * bodies (which may carry keys) are wiped after use; the token is never printed.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "../common/errors.h"
#include "../common/sas.h"
#include "../common/util.h"
#include "provctl.h"

#ifndef PROVCTL_VERSION
#define PROVCTL_VERSION "0"
#endif

#define MAX_RESPONSE (64u * 1024 * 1024)
#define MAX_CONNECT_TIMEOUT 30L

struct pc_client {
    CURL *h;
    char *host;
    char *auth;          /* "Authorization: SharedAccessSignature ..."; secret */
    char *id_scope;
    char *cacert;
    long timeout;
    bool verbose;
};

struct rx {
    char *buf;
    size_t len, cap;
    bool too_big;
    char *continuation;
};

static void client_seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void client_seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static char *dup_or_null(const char *s, bool *oom)
{
    char *d;

    if (s == NULL)
        return NULL;
    if ((d = strdup(s)) == NULL)
        *oom = true;
    return d;
}

struct pc_client *pc_client_new(const struct pc_connstr *cs, const char *cacert,
                                const char *id_scope, long timeout, bool verbose, char *err,
                                size_t errlen)
{
    struct pc_client *c = calloc(1, sizeof(*c));
    char *token = NULL;
    bool oom = false;
    size_t len;

    if (c == NULL) {
        client_seterr(err, errlen, "out of memory");
        return NULL;
    }
    c->timeout = timeout > 0 ? timeout : PC_DEFAULT_TIMEOUT;
    c->verbose = verbose;
    c->host = dup_or_null(cs->host, &oom);
    c->id_scope = dup_or_null(id_scope, &oom);
    c->cacert = dup_or_null(cacert, &oom);
    if (oom) {
        client_seterr(err, errlen, "out of memory");
        goto fail;
    }
    /* sr is the HostName exactly as given (sas_build url-encodes it) */
    token = sas_build(cs->host, cs->key, cs->key_name, (long long)time(NULL) + PC_TOKEN_TTL);
    if (token == NULL) {
        client_seterr(err, errlen, "cannot build a SAS token from the connection string key");
        goto fail;
    }
    len = strlen("Authorization: ") + strlen(token) + 1;
    if ((c->auth = malloc(len)) == NULL) {
        client_seterr(err, errlen, "out of memory");
        goto fail;
    }
    snprintf(c->auth, len, "Authorization: %s", token);
    prov_freezero(token, strlen(token));
    token = NULL;
    if ((c->h = curl_easy_init()) == NULL) {
        client_seterr(err, errlen, "cannot initialise libcurl");
        goto fail;
    }
    return c;
fail:
    if (token != NULL)
        prov_freezero(token, strlen(token));
    pc_client_free(c);
    return NULL;
}

void pc_client_free(struct pc_client *c)
{
    if (c == NULL)
        return;
    if (c->h != NULL)
        curl_easy_cleanup(c->h);
    if (c->auth != NULL)
        prov_freezero(c->auth, strlen(c->auth));
    free(c->host);
    free(c->id_scope);
    free(c->cacert);
    free(c);
}

void pc_response_free(struct pc_response *resp)
{
    if (resp == NULL)
        return;
    if (resp->body != NULL)
        prov_freezero(resp->body, resp->len + 1);
    free(resp->continuation);
    memset(resp, 0, sizeof(*resp));
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct rx *rx = userdata;
    size_t n = size * nmemb;

    if (n > MAX_RESPONSE - rx->len) {
        rx->too_big = true;
        return 0; /* aborts the transfer */
    }
    if (rx->len + n + 1 > rx->cap) {
        size_t cap = rx->cap ? rx->cap : 4096;
        char *nb;

        while (cap < rx->len + n + 1)
            cap *= 2;
        if ((nb = malloc(cap)) == NULL)
            return 0;
        if (rx->buf != NULL) {
            memcpy(nb, rx->buf, rx->len);
            prov_freezero(rx->buf, rx->cap); /* may hold keys: no realloc */
        }
        rx->buf = nb;
        rx->cap = cap;
    }
    memcpy(rx->buf + rx->len, ptr, n);
    rx->len += n;
    rx->buf[rx->len] = '\0';
    return n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    static const char name[] = "x-ms-continuation:";
    struct rx *rx = userdata;
    size_t n = size * nmemb, vlen;
    const char *v;

    if (n >= 5 && strncmp(ptr, "HTTP/", 5) == 0) {
        /* a new response (after a 100 Continue): forget earlier headers */
        free(rx->continuation);
        rx->continuation = NULL;
        return n;
    }
    if (n <= sizeof(name) - 1 || !str_ieqn(ptr, name, sizeof(name) - 1))
        return n;
    v = ptr + sizeof(name) - 1;
    vlen = n - (sizeof(name) - 1);
    while (vlen > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        vlen--;
    }
    while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' ' ||
                        v[vlen - 1] == '\t'))
        vlen--;
    free(rx->continuation);
    rx->continuation = NULL;
    if (vlen > 0 && (rx->continuation = strndup(v, vlen)) == NULL)
        return 0;
    return n;
}

static int add_header(struct curl_slist **list, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int add_header(struct curl_slist **list, const char *fmt, ...)
{
    char line[4096];
    struct curl_slist *n;
    va_list ap;
    int len;

    va_start(ap, fmt);
    len = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (len < 0 || (size_t)len >= sizeof(line))
        return PROV_EINVAL;
    if ((n = curl_slist_append(*list, line)) == NULL)
        return PROV_ENOMEM;
    *list = n;
    return 0;
}

/* Wipes every header line (one is the SAS token) before freeing the list. */
static void free_headers(struct curl_slist *list)
{
    for (struct curl_slist *p = list; p != NULL; p = p->next)
        prov_cleanse(p->data, strlen(p->data));
    curl_slist_free_all(list);
}

static bool is_tls_error(CURLcode cc)
{
    switch (cc) {
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CLIENTCERT:
        return true;
    default:
        return false;
    }
}

int pc_request(struct pc_client *c, const char *method, const char *path, const json_t *body,
               const char *if_match, const char *continuation, long page_size,
               struct pc_response *resp, char *err, size_t errlen)
{
    int r = PROV_EINTERNAL;
    struct curl_slist *hdrs = NULL;
    struct rx rx = {0};
    char errbuf[CURL_ERROR_SIZE] = "";
    char *url = NULL, *payload = NULL;
    size_t payload_len = 0;
    CURLcode cc;
    CURL *h = c->h;

    memset(resp, 0, sizeof(*resp));
    if ((url = pc_build_url(c->host, path, c->id_scope)) == NULL) {
        r = PROV_ENOMEM;
        client_seterr(err, errlen, "out of memory");
        goto out;
    }
    if (body != NULL) {
        payload = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (payload == NULL) {
            r = PROV_ENOMEM;
            client_seterr(err, errlen, "cannot serialise the request body");
            goto out;
        }
        payload_len = strlen(payload);
    }
    if ((r = add_header(&hdrs, "%s", c->auth)) != 0 ||
        (r = add_header(&hdrs, "Accept: application/json")) != 0 ||
        (r = add_header(&hdrs, "Expect:")) != 0 ||
        (body != NULL &&
         (r = add_header(&hdrs, "Content-Type: application/json; charset=utf-8")) != 0) ||
        (if_match != NULL && (r = add_header(&hdrs, "If-Match: %s", if_match)) != 0) ||
        (continuation != NULL &&
         (r = add_header(&hdrs, "x-ms-continuation: %s", continuation)) != 0) ||
        (page_size > 0 && (r = add_header(&hdrs, "x-ms-max-item-count: %ld", page_size)) != 0)) {
        client_seterr(err, errlen, "cannot build the request headers");
        goto out;
    }

    curl_easy_reset(h); /* keeps the connection cache */
    if (curl_easy_setopt(h, CURLOPT_URL, url) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https") != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_USERAGENT, "provctl/" PROVCTL_VERSION) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_TIMEOUT, c->timeout) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT,
                         c->timeout < MAX_CONNECT_TIMEOUT ? c->timeout : MAX_CONNECT_TIMEOUT)
            != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &rx) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_HEADERDATA, &rx) != CURLE_OK ||
        (c->cacert != NULL && curl_easy_setopt(h, CURLOPT_CAINFO, c->cacert) != CURLE_OK)) {
        r = PROV_EINTERNAL;
        client_seterr(err, errlen, "libcurl refused an option (too old a libcurl?)");
        goto out;
    }
    if (strcmp(method, "GET") == 0) {
        cc = curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0) {
        cc = curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)payload_len);
        if (cc == CURLE_OK)
            cc = curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload != NULL ? payload : "");
        if (cc == CURLE_OK && strcmp(method, "PUT") == 0)
            cc = curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT");
    } else {
        cc = curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }
    if (cc != CURLE_OK) {
        r = PROV_EINTERNAL;
        client_seterr(err, errlen, "libcurl: %s", curl_easy_strerror(cc));
        goto out;
    }
    if (c->verbose)
        fprintf(stderr, "> %s %s\n", method, url);

    cc = curl_easy_perform(h);
    if (cc != CURLE_OK) {
        r = is_tls_error(cc) ? PROV_ETLS : PROV_EIO;
        if (rx.too_big)
            client_seterr(err, errlen, "response larger than %u bytes", MAX_RESPONSE);
        else
            client_seterr(err, errlen, "%s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
    if (c->verbose)
        fprintf(stderr, "< %ld (%zu bytes)\n", resp->status, rx.len);
    if (rx.buf == NULL && (rx.buf = calloc(1, 1)) == NULL) {
        r = PROV_ENOMEM;
        client_seterr(err, errlen, "out of memory");
        goto out;
    }
    /* hand the buffer over; its allocation size is rx.cap, wiped up to len + 1 later */
    if (rx.cap > rx.len + 1)
        prov_cleanse(rx.buf + rx.len + 1, rx.cap - rx.len - 1);
    resp->body = rx.buf;
    resp->len = rx.len;
    resp->continuation = rx.continuation;
    rx.buf = NULL;
    rx.continuation = NULL;
    r = 0;
out:
    /* drop the handle's pointers to errbuf, hdrs and payload before they go */
    curl_easy_reset(h);
    if (rx.buf != NULL)
        prov_freezero(rx.buf, rx.cap);
    free(rx.continuation);
    if (payload != NULL) {
        prov_cleanse(payload, payload_len);
        free(payload);
    }
    free_headers(hdrs);
    free(url);
    return r;
}
