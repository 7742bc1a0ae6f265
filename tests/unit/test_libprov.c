/*
 * Unit tests for libprov through its public API (include/prov/prov.h), run
 * against a scripted fake DPS: a TLS server thread on 127.0.0.1 with a
 * certificate made at test time. The fake records every request (method,
 * target, headers, body) and answers from a per-test script, so the tests
 * check what goes on the wire (paths, encoding, headers, SAS token, body,
 * connection reuse) and how each answer is handled (202 polling, immediate
 * 200, 401/404/400 errors, 429 retry, failed status, timeouts, TLS failures).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "src/common/errors.h"
#include "prov/prov.h"
#include "src/common/sas.h"
#include "src/common/util.h"

#define SCOPE "0ne00ABC123"
#define REG_ID "my-device-01"
#define KEY "dGVzdGtleXRlc3RrZXl0ZXN0a2V5dGVzdGtleTEyMzQ="
/* device-protocol §4.2: KEY as a group key, derived for REG_ID */
#define DERIVED_KEY "gnux+XH2snPHbAtAEL2G7i2fdltewR+PV0cVHVydVH0="
#define OP_ID "4.e098e0033c2a16b2.a2c2bacd-a3b2-41c9-a156-cbf929098175"

#define ASSIGNING_BODY "{\"operationId\":\"" OP_ID "\",\"status\":\"assigning\"}"
#define POLL_BODY                                                                   \
    "{\"operationId\":\"" OP_ID "\",\"status\":\"assigning\",\"registrationState\":" \
    "{\"registrationId\":\"" REG_ID "\",\"status\":\"assigning\"}}"
#define ASSIGNED_BODY                                                                        \
    "{\"operationId\":\"" OP_ID "\",\"status\":\"assigned\",\"registrationState\":"          \
    "{\"registrationId\":\"" REG_ID "\",\"status\":\"assigned\",\"createdDateTimeUtc\":"     \
    "\"2026-11-29T18:50:37.660Z\",\"assignedHub\":\"hub1.example.net\",\"deviceId\":\"" REG_ID \
    "\",\"substatus\":\"initialAssignment\",\"lastUpdatedDateTimeUtc\":"                      \
    "\"2026-11-29T18:50:37.660Z\",\"etag\":\"\\\"abc\\\"\",\"payload\":{\"hello\":\"world\"}}}"

#define BIG_BODY ((const char *)1) /* marker: answer with more than 96 KiB */

/* ---- fake DPS ---- */

struct step {
    int status;
    const char *retry_after; /* NULL: no header */
    const char *body;        /* NULL: empty */
};

struct req {
    char method[16];
    char target[1024];
    char auth[1024];
    char content_type[128];
    char accept[128];
    char body[4096];
};

#define MAX_REQS 16

struct fake {
    int lfd;
    int port;
    SSL_CTX *ctx;
    const struct step *steps;
    int nsteps;
    int next;
    struct req reqs[MAX_REQS];
    int nreqs;
    int conns;
    atomic_int stop;
    pthread_t thread;
};

/* made once per run by setup_pki */
static char ca_path[256];
static char tmp_dir[128];
static EVP_PKEY *srv_key;
static X509 *srv_cert;

static int add_ext(X509 *cert, int nid, const char *value)
{
    X509V3_CTX v3;
    X509_EXTENSION *ext;

    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, cert, cert, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (ext == NULL)
        return -1;
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return 0;
}

/* A self-signed P-256 certificate for IP 127.0.0.1, written as the CA file. */
static int setup_pki(void **state)
{
    X509_NAME *name;
    FILE *f;

    (void)state;
    snprintf(tmp_dir, sizeof(tmp_dir), "%s/test_libprov.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (mkdtemp(tmp_dir) == NULL)
        return -1;
    snprintf(ca_path, sizeof(ca_path), "%s/ca.pem", tmp_dir);
    srv_key = EVP_EC_gen("P-256");
    srv_cert = X509_new();
    if (srv_key == NULL || srv_cert == NULL)
        return -1;
    X509_set_version(srv_cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(srv_cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(srv_cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(srv_cert), 3600);
    X509_set_pubkey(srv_cert, srv_key);
    name = X509_get_subject_name(srv_cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"fake dps", -1,
                               -1, 0);
    X509_set_issuer_name(srv_cert, name);
    if (add_ext(srv_cert, NID_basic_constraints, "critical,CA:TRUE") != 0 ||
        add_ext(srv_cert, NID_subject_alt_name, "IP:127.0.0.1") != 0 ||
        X509_sign(srv_cert, srv_key, EVP_sha256()) == 0)
        return -1;
    if ((f = fopen(ca_path, "w")) == NULL)
        return -1;
    PEM_write_X509(f, srv_cert);
    fclose(f);
    return 0;
}

static int teardown_pki(void **state)
{
    (void)state;
    unlink(ca_path);
    rmdir(tmp_dir);
    X509_free(srv_cert);
    EVP_PKEY_free(srv_key);
    return 0;
}

/* Copies header value name (case-insensitive) from the header block into dst. */
static void get_header(const char *head, const char *name, char *dst, size_t dstlen)
{
    size_t nlen = strlen(name);
    const char *p = strstr(head, "\r\n");

    dst[0] = '\0';
    while (p != NULL && p[2] != '\r') {
        const char *line = p + 2;
        const char *end = strstr(line, "\r\n");

        if (end == NULL)
            return;
        if (strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
            const char *v = line + nlen + 1;

            while (*v == ' ')
                v++;
            snprintf(dst, dstlen, "%.*s", (int)(end - v), v);
            return;
        }
        p = end;
    }
}

/* Reads one request; 0, or -1 when the client closed the connection. */
static int read_request(SSL *ssl, struct req *rq)
{
    char buf[16384];
    size_t len = 0, want;
    char *hend = NULL, cl[32];
    int n;

    memset(rq, 0, sizeof(*rq));
    while (hend == NULL) {
        if (len >= sizeof(buf) - 1)
            return -1;
        if ((n = SSL_read(ssl, buf + len, (int)(sizeof(buf) - 1 - len))) <= 0)
            return -1;
        len += (size_t)n;
        buf[len] = '\0';
        hend = strstr(buf, "\r\n\r\n");
    }
    sscanf(buf, "%15s %1023s", rq->method, rq->target);
    hend[2] = '\0';
    get_header(buf, "Authorization", rq->auth, sizeof(rq->auth));
    get_header(buf, "Content-Type", rq->content_type, sizeof(rq->content_type));
    get_header(buf, "Accept", rq->accept, sizeof(rq->accept));
    get_header(buf, "Content-Length", cl, sizeof(cl));
    want = (size_t)strtoul(cl, NULL, 10);
    if (want >= sizeof(rq->body))
        return -1;
    len -= (size_t)(hend + 4 - buf);
    memcpy(rq->body, hend + 4, len);
    while (len < want) {
        if ((n = SSL_read(ssl, rq->body + len, (int)(want - len))) <= 0)
            return -1;
        len += (size_t)n;
    }
    rq->body[want] = '\0';
    return 0;
}

static int write_all(SSL *ssl, const char *p, size_t len)
{
    while (len > 0) {
        int n = SSL_write(ssl, p, (int)len);

        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int send_step(SSL *ssl, const struct step *st)
{
    char head[512];
    char *big = NULL;
    const char *body = st->body ? st->body : "";
    size_t blen;
    int r;

    if (st->body == BIG_BODY) {
        blen = 100 * 1024;
        if ((big = malloc(blen)) == NULL)
            return -1;
        memset(big, ' ', blen);
        big[0] = '{';
        big[blen - 1] = '}';
        body = big;
    } else {
        blen = strlen(body);
    }
    snprintf(head, sizeof(head),
             "HTTP/1.1 %d X\r\nContent-Type: application/json; charset=utf-8\r\n"
             "Content-Length: %zu\r\n%s%s%s\r\n",
             st->status, blen, st->retry_after ? "Retry-After: " : "",
             st->retry_after ? st->retry_after : "", st->retry_after ? "\r\n" : "");
    r = write_all(ssl, head, strlen(head)) == 0 && write_all(ssl, body, blen) == 0 ? 0 : -1;
    free(big);
    return r;
}

static void serve_conn(struct fake *f, int fd)
{
    static const struct step exhausted = {500, NULL, "{\"message\":\"script exhausted\"}"};
    struct timeval tv = {10, 0};
    SSL *ssl = SSL_new(f->ctx);

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (ssl == NULL)
        return;
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) == 1) {
        struct req rq;

        while (read_request(ssl, &rq) == 0) {
            const struct step *st = f->next < f->nsteps ? &f->steps[f->next] : &exhausted;

            if (f->nreqs < MAX_REQS)
                f->reqs[f->nreqs++] = rq;
            f->next++;
            if (send_step(ssl, st) != 0)
                break;
        }
        SSL_shutdown(ssl);
    }
    SSL_free(ssl);
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;

    while (!atomic_load(&f->stop)) {
        struct pollfd p = {.fd = f->lfd, .events = POLLIN};
        int fd;

        if (poll(&p, 1, 50) <= 0)
            continue;
        if ((fd = accept(f->lfd, NULL, NULL)) < 0)
            continue;
        f->conns++;
        serve_conn(f, fd);
        close(fd);
    }
    return NULL;
}

static struct fake *fake_start(const struct step *steps, int nsteps)
{
    struct fake *f = calloc(1, sizeof(*f));
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t salen = sizeof(sa);

    assert_non_null(f);
    f->steps = steps;
    f->nsteps = nsteps;
    f->ctx = SSL_CTX_new(TLS_server_method());
    assert_non_null(f->ctx);
    assert_int_equal(SSL_CTX_use_certificate(f->ctx, srv_cert), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(f->ctx, srv_key), 1);
    f->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(f->lfd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(f->lfd, 8), 0);
    assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&sa, &salen), 0);
    f->port = ntohs(sa.sin_port);
    assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
    return f;
}

/* Call after prov_client_free, which closes the kept-alive connection. */
static void fake_stop(struct fake *f)
{
    atomic_store(&f->stop, 1);
    pthread_join(f->thread, NULL);
    close(f->lfd);
    SSL_CTX_free(f->ctx);
    free(f);
}

/* ---- log capture ---- */

static char logbuf[65536];
static size_t loglen;

static void capture_log(int level, const char *msg, void *arg)
{
    (void)arg;
    if (loglen < sizeof(logbuf))
        loglen += (size_t)snprintf(logbuf + loglen, sizeof(logbuf) - loglen, "%d %s\n", level,
                                   msg);
}

static int reset_log(void **state)
{
    (void)state;
    logbuf[0] = '\0';
    loglen = 0;
    prov_set_log_callback(capture_log, NULL);
    return 0;
}

/* ---- helpers ---- */

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct prov_client *new_client(int port, const char *regid, const char *payload,
                                      int timeout)
{
    struct prov_options opt = PROV_OPTIONS_INIT;
    struct prov_client *c = NULL;
    char host[64];

    snprintf(host, sizeof(host), "127.0.0.1:%d", port);
    opt.host = host;
    opt.id_scope = SCOPE;
    opt.registration_id = regid;
    opt.ca_file = ca_path;
    opt.payload_json = payload;
    opt.timeout_seconds = timeout;
    assert_int_equal(prov_client_new(&opt, &c), 0);
    assert_non_null(c);
    return c;
}

/* Checks the SAS token of a recorded request against key and the resource. */
static void check_sas(const struct req *rq, const char *key, const char *regid)
{
    struct sas_token tok;
    const char *why = NULL;
    char want[256];
    long long now = (long long)time(NULL);

    assert_int_equal(sas_parse(rq->auth, &tok, &why), 0);
    assert_true(sas_check_b64_key(&tok, key));
    snprintf(want, sizeof(want), SCOPE "/registrations/%s", regid);
    assert_string_equal(tok.sr, want);
    assert_true(tok.has_skn);
    assert_string_equal(tok.skn, "registration");
    /* expiry is now + 3600 */
    assert_in_range(tok.se, now + 3600 - 10, now + 3600 + 10);
}

static void assert_no_secrets_logged(void)
{
    assert_null(strstr(logbuf, KEY));
    assert_null(strstr(logbuf, DERIVED_KEY));
    assert_null(strstr(logbuf, "sig="));
    assert_null(strstr(logbuf, "SharedAccessSignature"));
}

/* ---- tests: input checks ---- */

static void test_options_invalid(void **state)
{
    struct prov_options opt = PROV_OPTIONS_INIT;
    struct prov_client *c = (struct prov_client *)&opt; /* must be reset to NULL */
    static const struct {
        const char *host, *scope, *regid, *ca, *payload;
        int timeout;
        const char *log;
    } cases[] = {
        {NULL, SCOPE, REG_ID, NULL, NULL, 0, "invalid host"},
        {"", SCOPE, REG_ID, NULL, NULL, 0, "invalid host"},
        {"a/b", SCOPE, REG_ID, NULL, NULL, 0, "invalid host"},
        {"a@b", SCOPE, REG_ID, NULL, NULL, 0, "invalid host"},
        {"h:0", SCOPE, REG_ID, NULL, NULL, 0, "invalid host"},
        {"h:65536", SCOPE, REG_ID, NULL, NULL, 0, "invalid host"},
        {"h:+1", SCOPE, REG_ID, NULL, NULL, 0, "invalid host"},
        {"h:", SCOPE, REG_ID, NULL, NULL, 0, "invalid host"},
        {"[::1", SCOPE, REG_ID, NULL, NULL, 0, "invalid host"},
        {"[zz]:1", SCOPE, REG_ID, NULL, NULL, 0, "invalid host"},
        {"h", NULL, REG_ID, NULL, NULL, 0, "invalid id scope"},
        {"h", "", REG_ID, NULL, NULL, 0, "invalid id scope"},
        {"h", "a b", REG_ID, NULL, NULL, 0, "invalid id scope"},
        {"h", SCOPE, NULL, NULL, NULL, 0, "invalid registration id"},
        {"h", SCOPE, "", NULL, NULL, 0, "invalid registration id"},
        {"h", SCOPE, "bad id", NULL, NULL, 0, "invalid registration id"},
        {"h", SCOPE, "ends.", NULL, NULL, 0, "invalid registration id"},
        {"h", SCOPE, "a/b", NULL, NULL, 0, "invalid registration id"},
        {"h", SCOPE, REG_ID, "/nonexistent/ca.pem", NULL, 0, "cannot read CA file"},
        {"h", SCOPE, REG_ID, NULL, "{\"a\":", 0, "invalid payload JSON"},
        {"h", SCOPE, REG_ID, NULL, "{\"a\":1,\"a\":2}", 0, "invalid payload JSON"},
        {"h", SCOPE, REG_ID, NULL, NULL, -1, "invalid timeout"},
        {"h", SCOPE, REG_ID, NULL, NULL, 86401, "invalid timeout"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        reset_log(NULL);
        opt.host = cases[i].host;
        opt.id_scope = cases[i].scope;
        opt.registration_id = cases[i].regid;
        opt.ca_file = cases[i].ca;
        opt.payload_json = cases[i].payload;
        opt.timeout_seconds = cases[i].timeout;
        c = (struct prov_client *)&opt;
        assert_int_equal(prov_client_new(&opt, &c), PROV_EINVAL);
        assert_null(c);
        if (strstr(logbuf, cases[i].log) == NULL)
            fail_msg("case %zu: log '%s' lacks '%s'", i, logbuf, cases[i].log);
    }
    assert_int_equal(prov_client_new(NULL, &c), PROV_EINVAL);
    opt.host = "h";
    opt.id_scope = SCOPE;
    opt.registration_id = REG_ID;
    opt.ca_file = NULL;
    opt.payload_json = NULL;
    opt.timeout_seconds = 0;
    assert_int_equal(prov_client_new(&opt, NULL), PROV_EINVAL);
    /* a struct not initialised with PROV_OPTIONS_INIT */
    opt.size = 0;
    assert_int_equal(prov_client_new(&opt, &c), PROV_EINVAL);
}

static void test_options_valid(void **state)
{
    static const char *const hosts[] = {"h", "dps.example.net", "dps.example.net:443",
                                        "127.0.0.1:8443", "[::1]", "[::1]:8443", "a_b-c.d"};
    struct prov_options opt = PROV_OPTIONS_INIT;
    struct prov_client *c = NULL;

    (void)state;
    opt.id_scope = SCOPE;
    opt.registration_id = "dev:01.a_b-c";
    opt.payload_json = "[1,\"x\",null]";
    for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
        opt.host = hosts[i];
        assert_int_equal(prov_client_new(&opt, &c), 0);
        prov_client_free(c);
        c = NULL;
    }
}

/* A newer program may pass a larger struct; unknown fields must be zero. */
static void test_options_size(void **state)
{
    struct {
        struct prov_options o;
        int newer_field;
    } big;
    struct prov_client *c = NULL;

    (void)state;
    memset(&big, 0, sizeof(big));
    big.o.size = sizeof(big);
    big.o.host = "h";
    big.o.id_scope = SCOPE;
    big.o.registration_id = REG_ID;
    assert_int_equal(prov_client_new(&big.o, &c), 0);
    prov_client_free(c);
    c = NULL;
    big.newer_field = 1;
    assert_int_equal(prov_client_new(&big.o, &c), PROV_EINVAL);
    assert_null(c);
}

static void test_keys(void **state)
{
    struct prov_options opt = PROV_OPTIONS_INIT;
    struct prov_client *c = NULL;
    struct prov_result *res = (struct prov_result *)&opt;

    (void)state;
    opt.host = "h";
    opt.id_scope = SCOPE;
    opt.registration_id = REG_ID;
    assert_int_equal(prov_client_new(&opt, &c), 0);
    /* no credential yet: refused before any network traffic */
    assert_int_equal(prov_register(c, &res), PROV_EINVAL);
    assert_null(res);
    assert_non_null(strstr(logbuf, "no credential"));
    assert_int_equal(prov_client_set_symmetric_key(c, NULL), PROV_EINVAL);
    assert_int_equal(prov_client_set_symmetric_key(c, "abc"), PROV_EINVAL);
    assert_int_equal(prov_client_set_symmetric_key(c, "not base64!!"), PROV_EINVAL);
    assert_int_equal(prov_client_set_symmetric_key(c, "AAAAAAAAAAA="), PROV_EINVAL); /* 8 B */
    assert_int_equal(prov_client_set_symmetric_key(c,
                                                   "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                                                   "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                                                   "AAAA"), /* 69 bytes */
                     PROV_EINVAL);
    assert_int_equal(prov_client_set_group_key(c, "abc"), PROV_EINVAL);
    assert_int_equal(prov_client_set_symmetric_key(c, "AAAAAAAAAAAAAAAAAAAAAA=="), 0); /* 16 B */
    assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
    assert_int_equal(prov_client_set_group_key(c, KEY), 0);
    assert_int_equal(prov_client_set_symmetric_key(NULL, KEY), PROV_EINVAL);
    assert_int_equal(prov_register(NULL, &res), PROV_EINVAL);
    assert_int_equal(prov_register(c, NULL), PROV_EINVAL);
    prov_client_free(c);
    prov_client_free(NULL);
    prov_result_free(NULL);
    assert_null(prov_result_to_json(NULL));
    assert_no_secrets_logged();
}

static void test_errors(void **state)
{
    (void)state;
    assert_int_equal(PROV_EAUTH, -9);
    assert_int_equal(PROV_ETIMEOUT, -4);
    assert_string_equal(prov_strerror(PROV_EAUTH), "authentication refused");
    assert_string_equal(prov_strerror(0), "success");
    assert_string_equal(prov_strerror(12345), "unknown error");
    prov_free(NULL);
}

/* ---- tests: protocol against the fake ---- */

/* PUT -> 202, GET -> 202, GET -> 200 assigned (device protocol §10.1). */
static void test_register_polls(void **state)
{
    static const struct step steps[] = {
        {202, "1", ASSIGNING_BODY},
        {202, "1", POLL_BODY},
        {200, NULL, ASSIGNED_BODY},
    };
    struct fake *f = fake_start(steps, 3);
    struct prov_client *c = new_client(f->port, REG_ID, "{\"modelId\":\"dtmi:x;1\"}", 30);
    struct prov_result *res = NULL;
    char *js;
    int64_t t0 = mono_ms(), elapsed;

    (void)state;
    assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
    assert_int_equal(prov_register(c, &res), 0);
    elapsed = mono_ms() - t0;
    prov_client_free(c);
    fake_stop(f);

    /* two Retry-After waits of one second */
    assert_in_range(elapsed, 1900, 6000);
    assert_non_null(res);
    assert_int_equal(res->http_status, 200);
    assert_string_equal(res->status, "assigned");
    assert_string_equal(res->assigned_hub, "hub1.example.net");
    assert_string_equal(res->device_id, REG_ID);
    assert_string_equal(res->registration_id, REG_ID);
    assert_string_equal(res->substatus, "initialAssignment");
    assert_string_equal(res->operation_id, OP_ID);
    assert_string_equal(res->created_utc, "2026-11-29T18:50:37.660Z");
    assert_string_equal(res->etag, "\"abc\"");
    assert_string_equal(res->payload_json, "{\"hello\":\"world\"}");
    assert_int_equal(res->error_code, 0);
    assert_null(res->error_message);
    assert_string_equal(res->response_json, ASSIGNED_BODY);
    assert_non_null(strstr(res->registration_state_json, "\"assignedHub\":\"hub1.example.net\""));
    js = prov_result_to_json(res);
    assert_non_null(js);
    assert_string_equal(js, "{\"status\":\"assigned\",\"assignedHub\":\"hub1.example.net\","
                            "\"deviceId\":\"" REG_ID "\",\"substatus\":\"initialAssignment\","
                            "\"operationId\":\"" OP_ID "\",\"payload\":{\"hello\":\"world\"}}");
    prov_free(js);
    prov_result_free(res);
}

/* What goes on the wire for a PUT and a poll, request by request. */
static void test_register_wire(void **state)
{
    static const struct step steps[] = {
        {202, "1", ASSIGNING_BODY},
        {200, NULL, ASSIGNED_BODY},
    };
    struct fake *f = fake_start(steps, 2);
    struct prov_client *c = new_client(f->port, REG_ID, "{\"modelId\":\"dtmi:x;1\"}", 30);
    struct prov_result *res = NULL;
    json_t *body;

    (void)state;
    assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
    assert_int_equal(prov_register(c, &res), 0);
    prov_result_free(res);
    prov_client_free(c);

    assert_int_equal(f->nreqs, 2);
    /* one TLS connection for the PUT and the poll */
    assert_int_equal(f->conns, 1);
    assert_string_equal(f->reqs[0].method, "PUT");
    assert_string_equal(f->reqs[0].target,
                        "/" SCOPE "/registrations/" REG_ID "/register?api-version=2021-06-01");
    assert_string_equal(f->reqs[0].content_type, "application/json; charset=utf-8");
    assert_string_equal(f->reqs[0].accept, "application/json");
    check_sas(&f->reqs[0], KEY, REG_ID);
    /* sr is sent percent-encoded and skn names the registration key */
    assert_true(strncmp(f->reqs[0].auth,
                        "SharedAccessSignature sr=" SCOPE "%2Fregistrations%2F" REG_ID "&sig=",
                        strlen("SharedAccessSignature sr=" SCOPE "%2Fregistrations%2F" REG_ID
                               "&sig=")) == 0);
    body = json_loads(f->reqs[0].body, 0, NULL);
    assert_non_null(body);
    assert_string_equal(json_string_value(json_object_get(body, "registrationId")), REG_ID);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(body, "payload"), "modelId")),
        "dtmi:x;1");
    assert_int_equal(json_object_size(body), 2);
    json_decref(body);

    assert_string_equal(f->reqs[1].method, "GET");
    assert_string_equal(f->reqs[1].target, "/" SCOPE "/registrations/" REG_ID
                                           "/operations/" OP_ID "?api-version=2021-06-01");
    assert_string_equal(f->reqs[1].body, "");
    check_sas(&f->reqs[1], KEY, REG_ID);
    fake_stop(f);
    assert_no_secrets_logged();
}

/* Device protocol §10.4: 200 assigned straight away; no payload sent. */
static void test_register_immediate(void **state)
{
    static const struct step steps[] = {{200, NULL, ASSIGNED_BODY}};
    struct fake *f = fake_start(steps, 1);
    struct prov_client *c = new_client(f->port, REG_ID, NULL, 0);
    struct prov_result *res = NULL;

    (void)state;
    assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
    assert_int_equal(prov_register(c, &res), 0);
    prov_client_free(c);
    assert_int_equal(f->nreqs, 1);
    assert_string_equal(f->reqs[0].body, "{\"registrationId\":\"" REG_ID "\"}");
    fake_stop(f);
    assert_string_equal(res->assigned_hub, "hub1.example.net");
    prov_result_free(res);
}

/* The group key derives the device key (device protocol §4.2 vector). */
static void test_group_key(void **state)
{
    static const struct step steps[] = {{200, NULL, ASSIGNED_BODY}};
    struct fake *f = fake_start(steps, 1);
    struct prov_client *c = new_client(f->port, REG_ID, NULL, 0);
    struct prov_result *res = NULL;

    (void)state;
    assert_int_equal(prov_client_set_group_key(c, KEY), 0);
    assert_int_equal(prov_register(c, &res), 0);
    prov_client_free(c);
    check_sas(&f->reqs[0], DERIVED_KEY, REG_ID);
    {
        struct sas_token tok;

        assert_int_equal(sas_parse(f->reqs[0].auth, &tok, NULL), 0);
        assert_false(sas_check_b64_key(&tok, KEY));
    }
    fake_stop(f);
    prov_result_free(res);
    assert_no_secrets_logged();
}

/* Scope, registration id and operation id are percent-encoded in the path. */
static void test_path_encoding(void **state)
{
#define ODD_OP "4.a+b/c=d e"
    static const struct step steps[] = {
        {202, "1", "{\"operationId\":\"" ODD_OP "\",\"status\":\"assigning\"}"},
        {200, NULL, ASSIGNED_BODY},
    };
    struct fake *f = fake_start(steps, 2);
    struct prov_client *c = new_client(f->port, "dev:01.a_b-c", NULL, 30);
    struct prov_result *res = NULL;

    (void)state;
    assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
    assert_int_equal(prov_register(c, &res), 0);
    prov_client_free(c);
    assert_int_equal(f->nreqs, 2);
    assert_string_equal(f->reqs[0].target,
                        "/" SCOPE "/registrations/dev%3A01.a_b-c/register?api-version=2021-06-01");
    assert_string_equal(f->reqs[1].target, "/" SCOPE "/registrations/dev%3A01.a_b-c/operations/"
                                           "4.a%2Bb%2Fc%3Dd%20e?api-version=2021-06-01");
    check_sas(&f->reqs[0], KEY, "dev:01.a_b-c");
    fake_stop(f);
    prov_result_free(res);
#undef ODD_OP
}

/* HTTP errors: the DPS error body is read; the code depends on the status. */
static void test_http_errors(void **state)
{
    static const struct {
        int status;
        const char *body;
        int want;
        long long code;
        const char *msg;
    } cases[] = {
        {401, "{\"errorCode\":401002,\"trackingId\":\"t-1\",\"message\":\"Unauthorized\","
              "\"timestampUtc\":\"2026-11-29T18:51:00.081Z\"}",
         PROV_EAUTH, 401002, "Unauthorized"},
        {403, "{\"errorCode\":\"403001\",\"message\":\"forbidden\"}", PROV_EAUTH, 403001,
         "forbidden"},
        {404, "{\"errorCode\":404201,\"message\":\"no such scope\"}", PROV_ENOTFOUND, 404201,
         "no such scope"},
        {400, "{\"errorCode\":400004,\"message\":\"bad request\"}", PROV_EPROTO, 400004,
         "bad request"},
        {500, "not json", PROV_EPROTO, 0, NULL},
        {401, NULL, PROV_EAUTH, 0, NULL},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct step st = {cases[i].status, NULL, cases[i].body};
        struct fake *f = fake_start(&st, 1);
        struct prov_client *c = new_client(f->port, REG_ID, NULL, 10);
        struct prov_result *res = NULL;

        assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
        assert_int_equal(prov_register(c, &res), cases[i].want);
        prov_client_free(c);
        assert_int_equal(f->nreqs, 1);
        fake_stop(f);
        assert_non_null(res);
        assert_int_equal(res->http_status, cases[i].status);
        assert_null(res->status);
        assert_int_equal(res->error_code, cases[i].code);
        if (cases[i].msg != NULL)
            assert_string_equal(res->error_message, cases[i].msg);
        else
            assert_null(res->error_message);
        if (i == 0)
            assert_string_equal(res->tracking_id, "t-1");
        prov_result_free(res);
    }
}

/* 429 and 503 are retried after Retry-After (the same PUT again). */
static void test_throttled_then_assigned(void **state)
{
    static const struct step steps[] = {
        {429, "1", "{\"errorCode\":429001,\"message\":\"throttled\"}"},
        {503, "1", NULL},
        {200, NULL, ASSIGNED_BODY},
    };
    struct fake *f = fake_start(steps, 3);
    struct prov_client *c = new_client(f->port, REG_ID, NULL, 30);
    struct prov_result *res = NULL;
    int64_t t0 = mono_ms();

    (void)state;
    assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
    assert_int_equal(prov_register(c, &res), 0);
    assert_in_range(mono_ms() - t0, 1900, 6000);
    prov_client_free(c);
    assert_int_equal(f->nreqs, 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(f->reqs[i].method, "PUT");
        check_sas(&f->reqs[i], KEY, REG_ID);
    }
    fake_stop(f);
    assert_string_equal(res->status, "assigned");
    prov_result_free(res);
}

/* A final "failed" status: the result carries the service's reason. */
static void test_failed_status(void **state)
{
    static const struct {
        const char *body;
        int want;
    } cases[] = {
        {"{\"operationId\":\"o\",\"status\":\"failed\",\"registrationState\":{\"registrationId\":"
         "\"" REG_ID "\",\"status\":\"failed\",\"errorCode\":400208,\"errorMessage\":\"no hub\"}}",
         PROV_EPRECONDITION},
        {"{\"operationId\":\"o\",\"status\":\"failed\",\"registrationState\":{\"registrationId\":"
         "\"" REG_ID "\",\"status\":\"failed\",\"errorCode\":401002,\"errorMessage\":\"no hub\"}}",
         PROV_EAUTH},
        {"{\"operationId\":\"o\",\"status\":\"disabled\",\"registrationState\":{\"registrationId\":"
         "\"" REG_ID "\",\"status\":\"disabled\",\"errorMessage\":\"no hub\"}}",
         PROV_EDISABLED},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        /* the first case polls once, the others get the answer on the PUT */
        const struct step steps[] = {{202, "1", "{\"operationId\":\"o\",\"status\":\"assigning\"}"},
                                     {200, NULL, cases[i].body}};
        struct fake *f = i == 0 ? fake_start(steps, 2) : fake_start(steps + 1, 1);
        struct prov_client *c = new_client(f->port, REG_ID, NULL, 30);
        struct prov_result *res = NULL;
        char *js;

        assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
        assert_int_equal(prov_register(c, &res), cases[i].want);
        prov_client_free(c);
        fake_stop(f);
        assert_non_null(res);
        assert_string_equal(res->error_message, "no hub");
        assert_null(res->assigned_hub);
        js = prov_result_to_json(res);
        assert_non_null(strstr(js, "\"errorMessage\":\"no hub\""));
        prov_free(js);
        prov_result_free(res);
    }
}

/* Answers the library must refuse. */
static void test_bad_answers(void **state)
{
    static const struct {
        struct step st;
        const char *log;
    } cases[] = {
        {{200, NULL, "{\"status\":\"assigned\",\"registrationState\":{\"deviceId\":\"d\"}}"},
         "no assignedHub"},
        {{202, NULL, "{\"status\":\"assigning\"}"}, "no operationId"},
        {{200, NULL, "{\"status\":\"unassigned\"}"}, "unexpected registration status"},
        {{200, NULL, "[1,2]"}, "not a JSON object"},
        {{200, NULL, "{\"status\":"}, "unreadable answer"},
        {{200, NULL, NULL}, "empty body"},
        {{200, NULL, BIG_BODY}, "too large"},
        {{302, NULL, NULL}, "unexpected answer"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fake *f = fake_start(&cases[i].st, 1);
        struct prov_client *c = new_client(f->port, REG_ID, NULL, 10);
        struct prov_result *res = NULL;

        reset_log(NULL);
        assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
        assert_int_equal(prov_register(c, &res), PROV_EPROTO);
        prov_client_free(c);
        fake_stop(f);
        if (strstr(logbuf, cases[i].log) == NULL)
            fail_msg("case %zu: log '%s' lacks '%s'", i, logbuf, cases[i].log);
        prov_result_free(res);
    }
}

/* Still assigning when the overall timeout passes. */
static void test_timeout_polling(void **state)
{
    static const struct step steps[] = {
        {202, "1", ASSIGNING_BODY}, {202, "1", POLL_BODY}, {202, "1", POLL_BODY},
        {202, "1", POLL_BODY},      {202, "1", POLL_BODY}, {202, "1", POLL_BODY},
    };
    struct fake *f = fake_start(steps, 6);
    struct prov_client *c = new_client(f->port, REG_ID, NULL, 2);
    struct prov_result *res = NULL;
    int64_t t0 = mono_ms(), elapsed;

    (void)state;
    assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
    assert_int_equal(prov_register(c, &res), PROV_ETIMEOUT);
    elapsed = mono_ms() - t0;
    prov_client_free(c);
    fake_stop(f);
    assert_in_range(elapsed, 900, 3000);
    assert_non_null(res);
    assert_string_equal(res->status, "assigning");
    prov_result_free(res);
}

/*
 * Retry-After is clamped to 1..60: 0 waits one second, 1000 waits 60 s, which
 * is past a 5 s timeout, so the library gives up at once.
 */
static void test_retry_after_clamp(void **state)
{
    static const struct step zero[] = {{202, "0", ASSIGNING_BODY}, {200, NULL, ASSIGNED_BODY}};
    static const struct step huge[] = {{429, "1000", NULL}};
    static const struct step junk[] = {{202, "Wed, 21 Oct 2015 07:28:00 GMT", ASSIGNING_BODY},
                                       {200, NULL, ASSIGNED_BODY}};
    struct fake *f;
    struct prov_client *c;
    struct prov_result *res = NULL;
    int64_t t0;

    (void)state;
    f = fake_start(zero, 2);
    c = new_client(f->port, REG_ID, NULL, 30);
    assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
    t0 = mono_ms();
    assert_int_equal(prov_register(c, &res), 0);
    assert_in_range(mono_ms() - t0, 950, 3000);
    prov_client_free(c);
    fake_stop(f);
    prov_result_free(res);

    f = fake_start(huge, 1);
    c = new_client(f->port, REG_ID, NULL, 5);
    assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
    t0 = mono_ms();
    assert_int_equal(prov_register(c, &res), PROV_ETIMEOUT);
    assert_in_range(mono_ms() - t0, 0, 1500);
    assert_int_equal(res->http_status, 429);
    prov_client_free(c);
    fake_stop(f);
    prov_result_free(res);

    /* an HTTP-date is not understood: the default of 2 s applies */
    reset_log(NULL);
    f = fake_start(junk, 2);
    c = new_client(f->port, REG_ID, NULL, 30);
    assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
    t0 = mono_ms();
    assert_int_equal(prov_register(c, &res), 0);
    assert_in_range(mono_ms() - t0, 1900, 4000);
    assert_non_null(strstr(logbuf, "ignoring Retry-After"));
    prov_client_free(c);
    fake_stop(f);
    prov_result_free(res);
}

/* The server's certificate must verify: system store, wrong name. */
static void test_tls_failures(void **state)
{
    static const struct step steps[] = {{200, NULL, ASSIGNED_BODY}};
    struct prov_options opt = PROV_OPTIONS_INIT;
    struct prov_client *c = NULL;
    struct prov_result *res = NULL;
    struct fake *f = fake_start(steps, 1);
    char host[64];

    (void)state;
    opt.id_scope = SCOPE;
    opt.registration_id = REG_ID;
    opt.timeout_seconds = 10;
    /* not signed by anything in the system store */
    snprintf(host, sizeof(host), "127.0.0.1:%d", f->port);
    opt.host = host;
    assert_int_equal(prov_client_new(&opt, &c), 0);
    assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
    assert_int_equal(prov_register(c, &res), PROV_ETLS);
    assert_null(res);
    prov_client_free(c);
    /* trusted, but issued for 127.0.0.1, not for localhost */
    snprintf(host, sizeof(host), "localhost:%d", f->port);
    opt.ca_file = ca_path;
    assert_int_equal(prov_client_new(&opt, &c), 0);
    assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
    assert_int_equal(prov_register(c, &res), PROV_ETLS);
    prov_client_free(c);
    assert_int_equal(f->nreqs, 0);
    fake_stop(f);
}

static void test_connect_refused(void **state)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t salen = sizeof(sa);
    struct prov_client *c;
    struct prov_result *res = NULL;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    (void)state;
    /* a port that was free a moment ago and has no listener */
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &salen), 0);
    close(fd);
    reset_log(NULL);
    c = new_client(ntohs(sa.sin_port), REG_ID, NULL, 5);
    assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
    assert_int_equal(prov_register(c, &res), PROV_EIO);
    assert_null(res);
    assert_non_null(strstr(logbuf, "failed"));
    prov_client_free(c);
}

/* The client can register twice (e.g. re-provisioning) with one handle. */
static void test_register_twice(void **state)
{
    static const struct step steps[] = {{200, NULL, ASSIGNED_BODY}, {200, NULL, ASSIGNED_BODY}};
    struct fake *f = fake_start(steps, 2);
    struct prov_client *c = new_client(f->port, REG_ID, NULL, 10);
    struct prov_result *res = NULL;

    (void)state;
    assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
    assert_int_equal(prov_register(c, &res), 0);
    prov_result_free(res);
    res = NULL;
    assert_int_equal(prov_register(c, &res), 0);
    prov_result_free(res);
    prov_client_free(c);
    assert_int_equal(f->nreqs, 2);
    assert_int_equal(f->conns, 1);
    assert_string_equal(f->reqs[1].method, "PUT");
    fake_stop(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_options_invalid, reset_log),
        cmocka_unit_test_setup(test_options_valid, reset_log),
        cmocka_unit_test_setup(test_options_size, reset_log),
        cmocka_unit_test_setup(test_keys, reset_log),
        cmocka_unit_test_setup(test_errors, reset_log),
        cmocka_unit_test_setup(test_register_polls, reset_log),
        cmocka_unit_test_setup(test_register_wire, reset_log),
        cmocka_unit_test_setup(test_register_immediate, reset_log),
        cmocka_unit_test_setup(test_group_key, reset_log),
        cmocka_unit_test_setup(test_path_encoding, reset_log),
        cmocka_unit_test_setup(test_http_errors, reset_log),
        cmocka_unit_test_setup(test_throttled_then_assigned, reset_log),
        cmocka_unit_test_setup(test_failed_status, reset_log),
        cmocka_unit_test_setup(test_bad_answers, reset_log),
        cmocka_unit_test_setup(test_timeout_polling, reset_log),
        cmocka_unit_test_setup(test_retry_after_clamp, reset_log),
        cmocka_unit_test_setup(test_tls_failures, reset_log),
        cmocka_unit_test_setup(test_connect_refused, reset_log),
        cmocka_unit_test_setup(test_register_twice, reset_log),
    };

    /* the fake server writes to sockets the client may have dropped (TLS failures) */
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, setup_pki, teardown_pki);
}
