/*
 * prov-bench enroll: creates the individual enrollments of the devices a run
 * will use, through provd's real interface, the service API's bulk operation
 * (POST /enrollments, mode create), with --concurrency requests in flight on
 * keep-alive connections and as many enrollments per request as fit under the
 * 96 KB body limit (at most 1000, the bulk limit).
 *
 *  - symmetric key: primaryKey = secondaryKey = --key, or the key derived
 *    from --group-key for the registration id (so that one run option gives
 *    every device its own key);
 *  - X.509: the leaf of each device (generated, saved in --x509-creds) pinned
 *    as clientCertificates.primary;
 *  - TPM: the EK and SRK (TPM2B_PUBLIC) of each device from --tpm-keys.
 */
#include "bench_enroll.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <jansson.h>
#include <openssl/err.h>

#include "../common/sas.h"
#include "../common/util.h"

#define SERVICE_API_VERSION "2021-10-01"
#define BODY_BUDGET (90 * 1024) /* under PROV_MAX_BODY with room for the envelope */
#define BULK_MAX 1000
#define MAX_REPORTED 5

struct enroll_ctx;

struct enroll_conn {
    struct enroll_ctx *ec;
    struct bufferevent *bev;
    struct hresp resp;
    unsigned long in_flight; /* enrollments in the request on the wire */
};

struct enroll_ctx {
    const struct bench_opts *o;
    const struct enroll_opts *e;
    struct bench_creds creds;
    struct event_base *base;
    SSL_CTX *ctx;
    struct sockaddr_storage sa;
    socklen_t salen;
    unsigned long next, done, failed;
    unsigned reported;
    unsigned active;
    char host[300];
    double t0, last_progress;
};

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One enrollment as compact JSON (caller frees). */
static char *item_json(struct enroll_ctx *ec, unsigned long i)
{
    char rid[PROV_MAX_REG_ID + 1];
    json_t *j = NULL;
    char *s = NULL;

    bench_rid(ec->o, i, rid, sizeof(rid));
    if (ec->o->att == ATT_SYMKEY) {
        unsigned char k[64];
        char kb64[90];
        int n = creds_symkey(&ec->creds, rid, k);

        if (n < 0)
            return NULL;
        b64_encode(k, (size_t)n, kb64);
        j = json_pack("{s:s, s:{s:s, s:{s:s, s:s}}}", "registrationId", rid, "attestation", "type",
                      "symmetricKey", "symmetricKey", "primaryKey", kb64, "secondaryKey", kb64);
        prov_cleanse(k, sizeof(k));
        prov_cleanse(kb64, sizeof(kb64));
    } else if (ec->o->att == ATT_TPM) {
        j = json_pack("{s:s, s:{s:s, s:o}}", "registrationId", rid, "attestation", "type", "tpm",
                      "tpm", tpm_enrollment_member(&ec->creds, i));
    } else {
        char *pem = x509_pem(ec->creds.x509[i].leaf);

        if (pem == NULL)
            return NULL;
        j = json_pack("{s:s, s:{s:s, s:{s:{s:{s:s}}}}}", "registrationId", rid, "attestation",
                      "type", "x509", "x509", "clientCertificates", "primary", "certificate", pem);
        free(pem);
    }
    if (j != NULL)
        s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

static void conn_done(struct enroll_conn *c)
{
    struct enroll_ctx *ec = c->ec;

    if (c->bev != NULL)
        bufferevent_free(c->bev);
    c->bev = NULL;
    if (--ec->active == 0)
        event_base_loopexit(ec->base, NULL);
}

static void conn_fail(struct enroll_conn *c, const char *why)
{
    struct enroll_ctx *ec = c->ec;

    ec->failed += c->in_flight;
    c->in_flight = 0;
    fprintf(stderr, "prov-bench enroll: %s\n", why);
    conn_done(c);
}

/* Builds and sends the next bulk request; closes the connection when none is left. */
static void send_batch(struct enroll_conn *c)
{
    struct enroll_ctx *ec = c->ec;
    unsigned max = ec->e->batch ? ec->e->batch : BULK_MAX;
    struct evbuffer *body = evbuffer_new();
    struct evbuffer *out = bufferevent_get_output(c->bev);
    char *sas;
    bool ok;

    if (ec->next >= ec->o->count || body == NULL) {
        evbuffer_free(body);
        conn_done(c);
        return;
    }
    ok = evbuffer_add_printf(body, "{\"mode\":\"%s\",\"enrollments\":[",
                             ec->e->update ? "update" : "create") > 0;
    c->in_flight = 0;
    while (ok && ec->next < ec->o->count && c->in_flight < max) {
        char *item = item_json(ec, ec->next);
        size_t len = item ? strlen(item) : 0;

        if (item == NULL) {
            ok = false;
            break;
        }
        if (c->in_flight > 0 && ec->e->batch == 0 &&
            evbuffer_get_length(body) + len + 3 > BODY_BUDGET) {
            free(item);
            break;
        }
        ok = (c->in_flight == 0 || evbuffer_add(body, ",", 1) == 0) &&
             evbuffer_add(body, item, len) == 0;
        free(item);
        c->in_flight++;
        ec->next++;
    }
    ok = ok && evbuffer_add(body, "]}", 2) == 0;
    sas = sas_build(ec->o->host, ec->e->policy_key_b64, ec->e->policy_name,
                    (long long)time(NULL) + 3600);
    ok = ok && sas != NULL &&
         evbuffer_add_printf(out,
                             "POST /enrollments?api-version=%s HTTP/1.1\r\nHost: %s\r\n"
                             "Authorization: %s\r\nContent-Type: application/json\r\n"
                             "Content-Length: %zu\r\nConnection: keep-alive\r\n\r\n",
                             SERVICE_API_VERSION, ec->host, sas, evbuffer_get_length(body)) > 0 &&
         evbuffer_add_buffer(out, body) == 0;
    free(sas);
    evbuffer_free(body);
    hresp_init(&c->resp);
    if (!ok)
        conn_fail(c, "cannot build a bulk request (out of memory or a bad key)");
}

static void report_errors(struct enroll_ctx *ec, const json_t *errors)
{
    size_t i;
    const json_t *e;

    json_array_foreach(errors, i, e)
    {
        if (ec->reported++ >= MAX_REPORTED)
            return;
        fprintf(stderr, "prov-bench enroll: %s: %lld %s\n",
                json_string_value(json_object_get(e, "registrationId")),
                (long long)json_integer_value(json_object_get(e, "errorCode")),
                json_string_value(json_object_get(e, "errorStatus")));
    }
}

static void progress(struct enroll_ctx *ec)
{
    double t = now_s();

    if (ec->o->quiet || t - ec->last_progress < 5)
        return;
    ec->last_progress = t;
    fprintf(stderr, "prov-bench enroll: %lu of %lu (%.0f/s)\n", ec->done, ec->o->count,
            (double)ec->done / (t - ec->t0));
}

static void on_answer(struct enroll_conn *c)
{
    struct enroll_ctx *ec = c->ec;
    json_error_t err;
    json_t *j = json_loadb(c->resp.body ? c->resp.body : "", c->resp.body_len, 0, &err);
    const json_t *errors = json_object_get(j, "errors");
    unsigned long bad = 0;

    if (c->resp.status == 200 && json_is_array(errors)) {
        bad = json_array_size(errors);
        report_errors(ec, errors);
    } else {
        bad = c->in_flight;
        if (ec->reported++ < MAX_REPORTED)
            fprintf(stderr, "prov-bench enroll: HTTP %d: %.300s\n", c->resp.status,
                    c->resp.body ? c->resp.body : "");
    }
    json_decref(j);
    if (bad > c->in_flight)
        bad = c->in_flight;
    ec->failed += bad;
    ec->done += c->in_flight - bad;
    c->in_flight = 0;
    progress(ec);
    if (!c->resp.keep_alive) {
        conn_fail(c, "the server closed the connection");
        return;
    }
    send_batch(c);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct enroll_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    while (evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        int r;

        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            return;
        r = hresp_feed(&c->resp, v.iov_base, v.iov_len);
        evbuffer_drain(in, v.iov_len);
        if (r < 0) {
            conn_fail(c, "malformed HTTP answer");
            return;
        }
        if (r == 1) {
            on_answer(c);
            return;
        }
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct enroll_conn *c = arg;
    char why[256];

    if (what & BEV_EVENT_CONNECTED) {
        send_batch(c);
        return;
    }
    snprintf(why, sizeof(why), "connection to %s:%s ended: %s", c->ec->o->host, c->ec->o->port,
             tls_error_reason(bufferevent_get_openssl_error(bev),
                              (what & BEV_EVENT_EOF) ? "closed" : "error"));
    ERR_clear_error();
    conn_fail(c, why);
}

static int conn_start(struct enroll_conn *c)
{
    struct enroll_ctx *ec = c->ec;
    int fd = tls_connect_fd(&ec->sa, ec->salen, ec->o->bind_ip);
    SSL *ssl;

    if (fd < 0)
        return -1;
    ssl = SSL_new(ec->ctx);
    if (ssl != NULL)
        tls_set_sni(ssl, ec->o->host);
    c->bev = ssl ? bufferevent_openssl_socket_new(ec->base, fd, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                  BEV_OPT_CLOSE_ON_FREE)
                 : NULL;
    if (c->bev == NULL) {
        SSL_free(ssl);
        close(fd);
        return -1;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    ec->active++;
    return 0;
}

static int run(struct enroll_ctx *ec, char *err, size_t errlen)
{
    unsigned n = ec->o->concurrency;
    struct enroll_conn *conns = calloc(n, sizeof(*conns));
    int rc = -1;

    if (conns == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (unsigned i = 0; i < n; i++) {
        conns[i].ec = ec;
        if (conn_start(&conns[i]) != 0) {
            snprintf(err, errlen, "cannot connect to %s:%s", ec->o->host, ec->o->port);
            goto out;
        }
    }
    event_base_dispatch(ec->base);
    rc = 0;
out:
    for (unsigned i = 0; i < n; i++) {
        if (conns[i].bev != NULL)
            bufferevent_free(conns[i].bev);
        hresp_free(&conns[i].resp);
    }
    free(conns);
    return rc;
}

int enroll_main(const struct bench_opts *o, const struct enroll_opts *e)
{
    struct enroll_ctx ec = {.o = o, .e = e};
    char err[512] = "";
    double dt;
    int rc = 1;

    if (e->policy_key_b64 == NULL) {
        fprintf(stderr, "prov-bench enroll: --policy-key is required\n");
        return 2;
    }
    if (o->att == ATT_X509 && o->x509_creds == NULL) {
        fprintf(stderr, "prov-bench enroll: X.509 needs --x509-creds FILE (the run uses the "
                        "same leaves)\n");
        return 2;
    }
    if (strcmp(o->port, "443") == 0)
        snprintf(ec.host, sizeof(ec.host), "%s", o->host);
    else
        snprintf(ec.host, sizeof(ec.host), "%s:%s", o->host, o->port);
    ec.base = event_base_new();
    ec.ctx = tls_client_ctx(o, err, sizeof(err));
    if (ec.base == NULL || ec.ctx == NULL ||
        tls_resolve(o->host, o->port, &ec.sa, &ec.salen, err, sizeof(err)) != 0 ||
        creds_init(&ec.creds, o, err, sizeof(err)) != 0)
        goto out;
    ec.t0 = ec.last_progress = now_s();
    if (run(&ec, err, sizeof(err)) != 0)
        goto out;
    dt = now_s() - ec.t0;
    ec.failed += o->count - ec.next; /* never sent (a connection failed) */
    printf("prov-bench enroll: %lu enrollments created in %.1f s (%.0f/s), %lu failed\n", ec.done,
           dt, dt > 0 ? (double)ec.done / dt : 0, ec.failed);
    rc = ec.failed == 0 ? 0 : 1;
out:
    if (err[0] != '\0')
        fprintf(stderr, "prov-bench enroll: %s\n", err);
    creds_free(&ec.creds);
    SSL_CTX_free(ec.ctx);
    if (ec.base != NULL)
        event_base_free(ec.base);
    return rc;
}
