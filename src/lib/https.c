/*
 * Registration over HTTPS (device protocol §3): PUT .../register, then GET
 * .../operations/{id} every Retry-After seconds until the status is no longer
 * "assigning". One libcurl easy handle per client, so the TLS connection is
 * kept alive between the PUT and the polls.
 *
 * A TPM client (§4.4) sends the first PUT without Authorization; the 401
 * challenge's authenticationKey is imported into the TPM, which signs the
 * SAS token of the same PUT sent again and of every poll; the assigned
 * answer's hub key is imported at the end.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "../common/limits.h"
#include "../common/curl_errors.h"
#include "../common/util.h"
#include "lib.h"

#ifndef PROV_LIB_VERSION
#define PROV_LIB_VERSION "unknown"
#endif

/* One answer: status, Retry-After and a capped body. */
struct answer {
    long http_status;
    int retry_after; /* seconds, already defaulted and clamped */
    char *body;
    size_t len;
    size_t cap;
    bool too_big;
};

static void answer_reset(struct answer *a)
{
    free(a->body);
    memset(a, 0, sizeof(*a));
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct answer *a = arg;
    int r = buf_append_capped(&a->body, &a->len, &a->cap, data, size * nmemb, PROV_MAX_BODY);

    a->too_big = r == PROV_ELIMIT;
    return r == 0 ? size * nmemb : 0; /* 0 makes libcurl fail the transfer (CURLE_WRITE_ERROR) */
}

/* Retry-After: an integer number of seconds; default 2, clamped to 1..60. */
static int read_retry_after(CURL *h)
{
    struct curl_header *hdr = NULL;

    if (curl_easy_header(h, "Retry-After", 0, CURLH_HEADER, -1, &hdr) != CURLHE_OK)
        return lib_retry_after(NULL);
    return lib_retry_after(hdr->value);
}

/* Creates the easy handle once, with the settings every request shares. */
static int setup_handle(struct prov_client *c)
{
    CURL *h;
    CURLcode cc = CURLE_OK;

    if (c->curl != NULL)
        return 0;
    if ((h = curl_easy_init()) == NULL)
        return PROV_ENOMEM;
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    if (cc == CURLE_OK && c->ca_file != NULL)
        cc = curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
    /*
     * CURLOPT_NOSIGNAL stays off: libcurl then ignores SIGPIPE while it works,
     * so a peer that closes mid-write cannot kill the application (a library
     * must not change the process's signal handling itself). Its threaded
     * resolver needs no signals.
     */
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_USERAGENT, "libprov/" PROV_LIB_VERSION);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    if (cc != CURLE_OK) {
        lib_log(PROV_LOG_ERROR, "libcurl setup failed: %s", curl_easy_strerror(cc));
        curl_easy_cleanup(h);
        return cc == CURLE_OUT_OF_MEMORY ? PROV_ENOMEM : PROV_EINTERNAL;
    }
    c->curl = h;
    return 0;
}

/*
 * The TLS client certificate of an X.509 client (device protocol §4.3). With
 * the OpenSSL backend, libcurl loads a PEM certificate file as a chain, so the
 * intermediates after the leaf are sent too. Set before every registration:
 * prov_client_set_x509 may have changed the files since the last one.
 */
static int apply_credential(struct prov_client *c)
{
    CURL *h = c->curl;
    bool x509 = c->cred == LIB_CRED_X509;
    CURLcode cc = CURLE_OK;

    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_SSLCERT, x509 ? c->cert_file : (char *)NULL);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_SSLCERTTYPE, x509 ? "PEM" : (char *)NULL);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_SSLKEY, x509 ? c->key_file : (char *)NULL);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_SSLKEYTYPE, x509 ? "PEM" : (char *)NULL);
    if (cc != CURLE_OK) {
        lib_log(PROV_LOG_ERROR, "libcurl setup failed: %s", curl_easy_strerror(cc));
        return cc == CURLE_OUT_OF_MEMORY ? PROV_ENOMEM : PROV_EINTERNAL;
    }
    return 0;
}

/* Wipes the Authorization line before libcurl's list is freed. */
static void free_headers(struct curl_slist *list)
{
    for (struct curl_slist *s = list; s != NULL; s = s->next)
        prov_cleanse(s->data, strlen(s->data));
    curl_slist_free_all(list);
}

static int build_headers(struct prov_client *c, bool with_body, struct curl_slist **out)
{
    struct curl_slist *list = NULL, *t;
    char *token = NULL, *auth = NULL;
    int r = PROV_ENOMEM;

    *out = NULL;
    /*
     * An X.509 device authenticates in the TLS handshake only, a TPM device
     * sends its first request without a token: no Authorization.
     */
    if (c->cred == LIB_CRED_KEY && (token = lib_sas_token(c)) == NULL) {
        r = PROV_ECRYPTO;
        goto out;
    }
    if (token != NULL || (c->cred == LIB_CRED_TPM && c->tpm_sas != NULL)) {
        if (asprintf(&auth, "Authorization: %s", token != NULL ? token : c->tpm_sas) < 0) {
            auth = NULL;
            goto out;
        }
    }
    if ((t = curl_slist_append(list, "Accept: application/json")) == NULL)
        goto out;
    list = t;
    if (with_body) {
        if ((t = curl_slist_append(list, "Content-Type: application/json; charset=utf-8")) ==
            NULL)
            goto out;
        list = t;
    }
    /* no "Expect: 100-continue" round trip before the body */
    if ((t = curl_slist_append(list, "Expect:")) == NULL)
        goto out;
    list = t;
    if (auth != NULL) {
        if ((t = curl_slist_append(list, auth)) == NULL)
            goto out;
        list = t;
    }
    *out = list;
    list = NULL; /* transferred */
    r = 0;
out:
    if (token != NULL)
        prov_freezero(token, strlen(token));
    if (auth != NULL)
        prov_freezero(auth, strlen(auth));
    free_headers(list);
    return r;
}

/*
 * One HTTP exchange. body NULL means GET. The transfer may use at most
 * remaining_ms. Fills a; returns 0 when an HTTP answer arrived (any status).
 */
static int exchange(struct prov_client *c, const char *url, const char *body,
                    int64_t remaining_ms, struct answer *a)
{
    CURL *h = c->curl;
    struct curl_slist *headers = NULL;
    char errbuf[CURL_ERROR_SIZE];
    CURLcode cc = CURLE_OK;
    long new_conns = 0;
    int64_t t0 = lib_now_ms();
    int r = PROV_EINTERNAL;

    answer_reset(a);
    errbuf[0] = '\0';
    if ((r = build_headers(c, body != NULL, &headers)) != 0)
        goto out;
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_URL, url);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_WRITEDATA, a);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(remaining_ms > 0 ? remaining_ms : 1));
    if (body != NULL) {
        if (cc == CURLE_OK)
            cc = curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
        if (cc == CURLE_OK)
            cc = curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        if (cc == CURLE_OK)
            cc = curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT");
    } else {
        if (cc == CURLE_OK)
            cc = curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
        if (cc == CURLE_OK)
            cc = curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, (char *)NULL);
    }
    if (cc != CURLE_OK) {
        lib_log(PROV_LOG_ERROR, "libcurl setup failed: %s", curl_easy_strerror(cc));
        r = cc == CURLE_OUT_OF_MEMORY ? PROV_ENOMEM : PROV_EINTERNAL;
        goto out;
    }
    lib_log(PROV_LOG_DEBUG, "%s %s", body ? "PUT" : "GET", url);
    if (body != NULL)
        lib_log(PROV_LOG_DEBUG, "request body: %.600s", body);
    cc = curl_easy_perform(h);
    /* the handle must not keep pointers to this call's stack and list */
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, (char *)NULL);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, (void *)NULL);
    if (cc != CURLE_OK) {
        if (a->too_big) {
            lib_log(PROV_LOG_ERROR, "answer from '%s' too large: over %d bytes", c->host,
                    PROV_MAX_BODY);
            r = PROV_EPROTO;
        } else {
            const char *why = errbuf[0] ? errbuf : curl_easy_strerror(cc);
            bool hint = false;

            r = prov_curl_error(cc);
            /*
             * With TLS 1.3 a server checks the client certificate after the
             * client has finished its side of the handshake, so a refusal
             * shows up as a failed send or receive, often as a reset
             * connection whose alert is lost.
             */
            if (c->cred == LIB_CRED_X509 && (cc == CURLE_SEND_ERROR || cc == CURLE_RECV_ERROR ||
                                             cc == CURLE_GOT_NOTHING)) {
                curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &new_conns);
                if (strstr(why, " alert ") != NULL)
                    r = PROV_ETLS; /* the server's TLS alert says why */
                else
                    hint = new_conns > 0;
            }
            lib_log(PROV_LOG_ERROR, "%s '%s' failed: %s%s", body ? "PUT" : "GET", c->host, why,
                    hint ? " (the server may have refused the client certificate)" : "");
        }
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &a->http_status);
    curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &new_conns);
    a->retry_after = read_retry_after(h);
    lib_log(PROV_LOG_DEBUG, "answer %ld in %lld ms (%s connection): %.600s", a->http_status,
            (long long)(lib_now_ms() - t0), new_conns ? "new" : "reused", a->body ? a->body : "");
    r = 0;
out:
    free_headers(headers);
    return r;
}

static char *operation_url(const struct prov_client *c, const char *op_id)
{
    char *eop = url_encode_alloc(op_id);
    char *url = NULL;

    if (eop == NULL)
        return NULL;
    if (asprintf(&url, "%s/operations/%s?api-version=" PROV_API_VERSION, c->base_url, eop) < 0)
        url = NULL;
    free(eop);
    return url;
}

int lib_https_register(struct prov_client *c, struct lib_reg *g)
{
    struct answer a = {0};
    char *body = NULL, *reg_url = NULL, *poll_url = NULL;
    const char *url;
    enum lib_next next;
    int r = PROV_EINTERNAL;

    if ((r = setup_handle(c)) != 0 || (r = apply_credential(c)) != 0)
        goto out;
    if (asprintf(&reg_url, "%s/register?api-version=" PROV_API_VERSION, c->base_url) < 0)
        reg_url = NULL;
    if (reg_url == NULL || (body = lib_register_body(c)) == NULL) {
        r = PROV_ENOMEM;
        goto out;
    }
    url = reg_url;
    lib_tpm_sas_clear(c);
    for (;;) {
        bool transient, handled = false;
        char why[48];

        if (c->cred == LIB_CRED_TPM && (r = lib_tpm_sas_refresh(c)) != 0)
            goto out;
        if ((r = exchange(c, url, url == reg_url ? body : NULL, g->deadline - lib_now_ms(),
                          &a)) != 0)
            goto out;
        /* one challenge per registration: a 401 to the signed request is a refusal */
        if (c->cred == LIB_CRED_TPM && c->tpm_sas == NULL && a.http_status == 401 &&
            url == reg_url) {
            if ((r = lib_tpm_challenge(c, a.body, a.len, &handled)) != 0)
                goto out;
            if (handled)
                continue;
        }
        transient = a.http_status == 429 || a.http_status == 503;
        if ((r = lib_reg_answer(g, (int)a.http_status, transient, a.body, a.len, &next)) != 0)
            goto out;
        if (next == LIB_NEXT_DONE) {
            if (c->cred == LIB_CRED_TPM)
                r = lib_tpm_assigned(c, g->res);
            goto out;
        }
        if (next == LIB_NEXT_POLL) {
            free(poll_url);
            if ((poll_url = operation_url(c, g->op_id)) == NULL) {
                r = PROV_ENOMEM;
                goto out;
            }
            url = poll_url;
            snprintf(why, sizeof(why), "status assigning");
        } else {
            snprintf(why, sizeof(why), "service busy (HTTP %ld)", a.http_status);
        }
        if ((r = lib_reg_may_wait(g, a.retry_after, why)) != 0)
            goto out;
        lib_sleep_ms((int64_t)a.retry_after * 1000);
    }
out:
    lib_tpm_sas_clear(c);
    answer_reset(&a);
    free(body);
    free(reg_url);
    free(poll_url);
    return r;
}
