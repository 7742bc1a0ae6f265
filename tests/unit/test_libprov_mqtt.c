/*
 * Unit tests for libprov's MQTT transport (PROV_TRANSPORT_MQTT) through the
 * public API, against a fake DPS MQTT server: a thread with an OpenSSL server
 * socket on 127.0.0.1 that speaks just enough MQTT 3.1.1 (CONNACK, SUBACK,
 * PUBACK, PINGRESP) and answers each request PUBLISH from a per-test script
 * with a response PUBLISH. It records the CONNECT (client id, user name,
 * password, flags, keepalive), the SUBSCRIBE, every PUBLISH, the DISCONNECT
 * and the client certificate chain, so the tests check what goes on the wire
 * and how each answer is handled. Certificates are made at test time.
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
#include <stdbool.h>
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
#include <openssl/err.h>
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
#define OP_ID "4.2548b37bc634e718.0ada8ebb-0b25-4d70-8eae-a4c4c7e12c53"
#define DEV_CN "x509-device-01"
#define INTERMEDIATE_CN "Test Intermediate CA"

#define RES_FILTER "$dps/registrations/res/#"
#define REGISTER_TOPIC "$dps/registrations/PUT/iotdps-register/?$rid="
#define POLL_TOPIC "$dps/registrations/GET/iotdps-get-operationstatus/?$rid="

#define ASSIGNING_BODY "{\"operationId\":\"" OP_ID "\",\"status\":\"assigning\"}"
#define POLL_BODY                                                                   \
    "{\"operationId\":\"" OP_ID "\",\"status\":\"assigning\",\"registrationState\":" \
    "{\"registrationId\":\"" REG_ID "\",\"status\":\"assigning\"}}"
#define ASSIGNED_BODY                                                                        \
    "{\"operationId\":\"" OP_ID "\",\"status\":\"assigned\",\"registrationState\":"          \
    "{\"registrationId\":\"" REG_ID "\",\"status\":\"assigned\",\"createdDateTimeUtc\":"     \
    "\"2026-11-29T18:50:41.551Z\",\"assignedHub\":\"myhub.example.test\",\"deviceId\":\"" REG_ID \
    "\",\"substatus\":\"initialAssignment\",\"lastUpdatedDateTimeUtc\":"                      \
    "\"2026-11-29T18:50:41.551Z\",\"etag\":\"\\\"abc\\\"\",\"payload\":{\"hello\":\"world\"}}}"
#define ERROR_401_BODY                                                                   \
    "{\"errorCode\":401002,\"trackingId\":\"276e0260-d041-46ae-853a-7e2468849f77\","    \
    "\"message\":\"Unauthorized\",\"timestampUtc\":\"2026-11-29T18:51:00.404Z\"}"
#define ERROR_429_BODY                                                                   \
    "{\"errorCode\":429001,\"trackingId\":\"72a1fdf2-9f40-4302-8c25-a858e1e8f012\","    \
    "\"message\":\"throttled\",\"timestampUtc\":\"2026-11-29T18:50:51.578Z\"}"

/* ---- fake DPS over MQTT ---- */

/* What the fake does with a request PUBLISH. */
enum step_kind {
    ANSWER = 0,   /* PUBACK, then PUBLISH res/{status}/?$rid={rid}[&retry-after=..] */
    ANSWER_QOS1,  /* the same, the response at QoS 1 (the client must PUBACK it) */
    OTHER_RID,    /* first an answer with another $rid (status 401), then as ANSWER */
    RAW_TOPIC,    /* PUBACK, then a response PUBLISH on `topic` as it is */
    SILENT,       /* PUBACK only */
    CLOSE,        /* close the connection without any answer */
};

struct step {
    enum step_kind kind;
    int status;
    const char *retry_after; /* NULL: no retry-after property */
    const char *body;
    const char *topic;       /* RAW_TOPIC */
};

#define MAX_PUBS 16
#define MAX_PEER_CERTS 4

struct pub {
    char topic[512];
    int qos;
    char payload[4096];
    size_t payload_len;
    int64_t at_ms;
};

/* How the fake treats client certificates. */
enum fake_tls {
    FAKE_NO_CLIENT_CERT = 0, /* does not ask for one */
    FAKE_REQUEST_CERT,       /* asks, accepts any certificate or none (as provd does) */
    /* asks, and fails the handshake unless the certificate chains to srv_cert: */
    FAKE_REFUSE,             /* then reads until the client closes, so the alert arrives */
    FAKE_REFUSE_RESET,       /* then closes at once (unread data: the kernel sends a reset) */
    FAKE_REFUSE_TLS12,       /* like FAKE_REFUSE, TLS 1.2 at most */
};

struct fake {
    int lfd;
    int port;
    SSL_CTX *ctx;
    enum fake_tls tls;
    int connack_code;
    bool refuse_sub;
    const struct step *steps;
    int nsteps;
    int next;
    /* what the client sent */
    int conns;
    bool got_connect;
    int level;
    uint8_t connect_flags;
    int keepalive;
    char client_id[256];
    char username[512];
    bool has_password;
    char password[2048];
    char sub_filter[256];
    int sub_qos;
    int nsubs;
    struct pub pubs[MAX_PUBS];
    int npubs;
    int pubacks_in; /* PUBACKs the client sent (for QoS 1 responses) */
    bool got_disconnect;
    int peer_certs;
    char peer_cn[MAX_PEER_CERTS][128];
    atomic_int stop;
    pthread_t thread;
};

/* made once per run by setup_pki */
static char tmp_dir[128];
static char ca_path[256];
static char chain_path[256];
static char key_path[256];
static EVP_PKEY *srv_key;
static X509 *srv_cert;

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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

/* A certificate for key, signed by issuer_key (issuer NULL: self-signed). */
static X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key,
                       const char *basic, const char *san, long serial)
{
    X509 *cert = X509_new();
    X509_NAME *name;

    if (cert == NULL)
        return NULL;
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), serial);
    X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_set_pubkey(cert, key);
    name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(cert, issuer != NULL ? X509_get_subject_name(issuer) : name);
    if (add_ext(cert, NID_basic_constraints, basic) != 0 ||
        (san != NULL && add_ext(cert, NID_subject_alt_name, san) != 0) ||
        X509_sign(cert, issuer_key != NULL ? issuer_key : key, EVP_sha256()) == 0) {
        X509_free(cert);
        return NULL;
    }
    return cert;
}

/*
 * The fake's self-signed certificate for IP 127.0.0.1 (written as the CA
 * file), and a device chain: leaf DEV_CN signed by an intermediate that a
 * separate root signed (chain file: leaf + intermediate; key file).
 */
static int setup_pki(void **state)
{
    EVP_PKEY *root_key = EVP_EC_gen("P-256"), *int_key = EVP_EC_gen("P-256");
    EVP_PKEY *dev_key = EVP_EC_gen("P-256");
    X509 *root = NULL, *inter = NULL, *leaf = NULL;
    FILE *f = NULL;
    BIO *bio = NULL;
    int r = -1;

    (void)state;
    snprintf(tmp_dir, sizeof(tmp_dir), "%s/test_libprov_mqtt.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (mkdtemp(tmp_dir) == NULL)
        return -1;
    snprintf(ca_path, sizeof(ca_path), "%s/ca.pem", tmp_dir);
    snprintf(chain_path, sizeof(chain_path), "%s/chain.pem", tmp_dir);
    snprintf(key_path, sizeof(key_path), "%s/key.pem", tmp_dir);
    srv_key = EVP_EC_gen("P-256");
    if (srv_key == NULL || root_key == NULL || int_key == NULL || dev_key == NULL)
        goto out;
    srv_cert = make_cert("fake dps", srv_key, NULL, NULL, "critical,CA:TRUE", "IP:127.0.0.1", 1);
    root = make_cert("Test Root CA", root_key, NULL, NULL, "critical,CA:TRUE", NULL, 10);
    inter = make_cert(INTERMEDIATE_CN, int_key, root, root_key, "critical,CA:TRUE", NULL, 11);
    leaf = make_cert(DEV_CN, dev_key, inter, int_key, "critical,CA:FALSE", NULL, 12);
    if (srv_cert == NULL || root == NULL || inter == NULL || leaf == NULL)
        goto out;
    if ((f = fopen(ca_path, "w")) == NULL || PEM_write_X509(f, srv_cert) != 1 || fclose(f) != 0)
        goto out;
    if ((f = fopen(chain_path, "w")) == NULL || PEM_write_X509(f, leaf) != 1 ||
        PEM_write_X509(f, inter) != 1 || fclose(f) != 0)
        goto out;
    f = NULL;
    if ((bio = BIO_new_file(key_path, "w")) == NULL ||
        PEM_write_bio_PrivateKey(bio, dev_key, NULL, NULL, 0, NULL, NULL) != 1)
        goto out;
    r = 0;
out:
    BIO_free(bio);
    X509_free(root);
    X509_free(inter);
    X509_free(leaf);
    EVP_PKEY_free(root_key);
    EVP_PKEY_free(int_key);
    EVP_PKEY_free(dev_key);
    return r;
}

static int teardown_pki(void **state)
{
    (void)state;
    unlink(ca_path);
    unlink(chain_path);
    unlink(key_path);
    rmdir(tmp_dir);
    X509_free(srv_cert);
    EVP_PKEY_free(srv_key);
    return 0;
}

/* -- MQTT framing on the TLS connection -- */

static int read_full(SSL *ssl, uint8_t *buf, size_t n)
{
    size_t got = 0;

    while (got < n) {
        int k = SSL_read(ssl, buf + got, (int)(n - got));

        if (k <= 0)
            return -1;
        got += (size_t)k;
    }
    return 0;
}

static int write_all(SSL *ssl, const uint8_t *p, size_t len)
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

/* Reads one packet: its first byte and its body (at most cap bytes). 0 or -1. */
static int read_packet(SSL *ssl, uint8_t *first, uint8_t *body, size_t cap, size_t *len)
{
    size_t n = 0, mult = 1;
    uint8_t b;

    if (read_full(ssl, first, 1) != 0)
        return -1;
    for (int i = 0; i < 4; i++) {
        if (read_full(ssl, &b, 1) != 0)
            return -1;
        n += (size_t)(b & 0x7f) * mult;
        mult *= 128;
        if ((b & 0x80) == 0)
            break;
    }
    if (n > cap)
        return -1;
    *len = n;
    return n > 0 ? read_full(ssl, body, n) : 0;
}

static int write_packet(SSL *ssl, uint8_t first, const uint8_t *body, size_t len)
{
    uint8_t head[5];
    size_t h = 0, n = len;

    head[h++] = first;
    do {
        uint8_t b = n % 128;

        n /= 128;
        head[h++] = (uint8_t)(n > 0 ? b | 0x80 : b);
    } while (n > 0);
    return write_all(ssl, head, h) == 0 && (len == 0 || write_all(ssl, body, len) == 0) ? 0
                                                                                       : -1;
}

/* A length-prefixed string at *p into out; advances *p. -1 when it does not fit. */
static int get_str(const uint8_t *body, size_t len, size_t *p, char *out, size_t outlen)
{
    size_t n;

    if (*p + 2 > len)
        return -1;
    n = (size_t)body[*p] << 8 | body[*p + 1];
    *p += 2;
    if (*p + n > len || n >= outlen)
        return -1;
    memcpy(out, body + *p, n);
    out[n] = '\0';
    *p += n;
    return 0;
}

static int on_connect_pkt(struct fake *f, SSL *ssl, const uint8_t *b, size_t len)
{
    char proto[8], skip[1024];
    size_t p = 0;
    uint8_t ack[2] = {0, (uint8_t)f->connack_code};

    if (get_str(b, len, &p, proto, sizeof(proto)) != 0 || p + 4 > len)
        return -1;
    f->got_connect = true;
    f->level = b[p];
    f->connect_flags = b[p + 1];
    f->keepalive = b[p + 2] << 8 | b[p + 3];
    p += 4;
    if (get_str(b, len, &p, f->client_id, sizeof(f->client_id)) != 0)
        return -1;
    if ((f->connect_flags & 0x04) != 0 && (get_str(b, len, &p, skip, sizeof(skip)) != 0 ||
                                           get_str(b, len, &p, skip, sizeof(skip)) != 0))
        return -1;
    if ((f->connect_flags & 0x80) != 0 &&
        get_str(b, len, &p, f->username, sizeof(f->username)) != 0)
        return -1;
    f->has_password = (f->connect_flags & 0x40) != 0;
    if (f->has_password && get_str(b, len, &p, f->password, sizeof(f->password)) != 0)
        return -1;
    if (strcmp(proto, "MQTT") != 0)
        return -1;
    if (write_packet(ssl, 0x20, ack, 2) != 0)
        return -1;
    return f->connack_code == 0 ? 0 : -1;
}

static int on_subscribe_pkt(struct fake *f, SSL *ssl, const uint8_t *b, size_t len)
{
    size_t p = 2;
    uint8_t ack[3];

    if (len < 2 || get_str(b, len, &p, f->sub_filter, sizeof(f->sub_filter)) != 0 || p >= len)
        return -1;
    f->sub_qos = b[p];
    f->nsubs++;
    ack[0] = b[0];
    ack[1] = b[1];
    ack[2] = f->refuse_sub ? 0x80 : 1;
    return write_packet(ssl, 0x90, ack, 3);
}

static int send_publish(SSL *ssl, const char *topic, const char *body, int qos)
{
    size_t tlen = strlen(topic), blen = body ? strlen(body) : 0, n = 0;
    uint8_t *pkt = malloc(tlen + blen + 4);
    int r;

    if (pkt == NULL)
        return -1;
    pkt[n++] = (uint8_t)(tlen >> 8);
    pkt[n++] = (uint8_t)tlen;
    memcpy(pkt + n, topic, tlen);
    n += tlen;
    if (qos == 1) {
        pkt[n++] = 0x12;
        pkt[n++] = 0x34;
    }
    if (blen > 0)
        memcpy(pkt + n, body, blen);
    r = write_packet(ssl, qos == 1 ? 0x32 : 0x30, pkt, n + blen);
    free(pkt);
    return r;
}

/* The request's $rid: what follows "?$rid=" up to '&'. */
static void request_rid(const char *topic, char *rid, size_t ridlen)
{
    const char *p = strstr(topic, "?$rid=");
    size_t n;

    rid[0] = '\0';
    if (p == NULL)
        return;
    p += 6;
    n = strcspn(p, "&");
    snprintf(rid, ridlen, "%.*s", (int)n, p);
}

/* 0 to go on, 1 to close the connection, -1 on error. */
static int on_publish_pkt(struct fake *f, SSL *ssl, uint8_t first, const uint8_t *b, size_t len)
{
    static const struct step exhausted = {ANSWER, 500, NULL, "{\"message\":\"script exhausted\"}",
                                          NULL};
    const struct step *st = f->next < f->nsteps ? &f->steps[f->next] : &exhausted;
    struct pub *pb = f->npubs < MAX_PUBS ? &f->pubs[f->npubs] : NULL;
    int qos = (first >> 1) & 3;
    uint8_t ack[2] = {0, 0};
    char topic[512], rid[300], rtopic[1024];
    size_t p = 0;

    if (get_str(b, len, &p, topic, sizeof(topic)) != 0)
        return -1;
    if (qos > 0) {
        if (p + 2 > len)
            return -1;
        ack[0] = b[p];
        ack[1] = b[p + 1];
        p += 2;
    }
    if (pb != NULL) {
        snprintf(pb->topic, sizeof(pb->topic), "%s", topic);
        pb->qos = qos;
        pb->payload_len = len - p;
        snprintf(pb->payload, sizeof(pb->payload), "%.*s", (int)(len - p), (const char *)b + p);
        pb->at_ms = mono_ms();
        f->npubs++;
    }
    f->next++;
    if (st->kind == CLOSE)
        return 1;
    /* the acknowledgement goes before the answer (device protocol §6.4) */
    if (qos == 1 && write_packet(ssl, 0x40, ack, 2) != 0)
        return -1;
    request_rid(topic, rid, sizeof(rid));
    switch (st->kind) {
    case SILENT:
        return 0;
    case RAW_TOPIC:
        return send_publish(ssl, st->topic, st->body, 0);
    case OTHER_RID:
        snprintf(rtopic, sizeof(rtopic), "$dps/registrations/res/401/?$rid=%s0", rid);
        if (send_publish(ssl, rtopic, ERROR_401_BODY, 0) != 0)
            return -1;
        break;
    default:
        break;
    }
    if (st->retry_after != NULL)
        snprintf(rtopic, sizeof(rtopic), "$dps/registrations/res/%d/?$rid=%s&retry-after=%s",
                 st->status, rid, st->retry_after);
    else
        snprintf(rtopic, sizeof(rtopic), "$dps/registrations/res/%d/?$rid=%s", st->status, rid);
    return send_publish(ssl, rtopic, st->body, st->kind == ANSWER_QOS1 ? 1 : 0);
}

static void cert_cn(X509 *cert, char *out, size_t outlen)
{
    out[0] = '\0';
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, out, (int)outlen);
}

static void record_peer(struct fake *f, SSL *ssl)
{
    X509 *leaf = SSL_get0_peer_certificate(ssl);
    STACK_OF(X509) *rest = SSL_get_peer_cert_chain(ssl); /* server side: without the leaf */

    f->peer_certs = 0;
    if (leaf == NULL)
        return;
    cert_cn(leaf, f->peer_cn[0], sizeof(f->peer_cn[0]));
    f->peer_certs = 1;
    for (int i = 0; rest != NULL && i < sk_X509_num(rest); i++) {
        if (f->peer_certs < MAX_PEER_CERTS)
            cert_cn(sk_X509_value(rest, i), f->peer_cn[f->peer_certs],
                    sizeof(f->peer_cn[0]));
        f->peer_certs++;
    }
}

static void serve_conn(struct fake *f, int fd)
{
    static uint8_t body[128 * 1024];
    struct timeval tv = {10, 0};
    SSL *ssl = SSL_new(f->ctx);
    uint8_t first;
    size_t len;

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (ssl == NULL)
        return;
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) == 1) {
        record_peer(f, ssl);
        while (read_packet(ssl, &first, body, sizeof(body), &len) == 0) {
            int r = 0;

            switch (first >> 4) {
            case 1:
                r = on_connect_pkt(f, ssl, body, len);
                break;
            case 3:
                r = on_publish_pkt(f, ssl, first, body, len);
                break;
            case 4:
                f->pubacks_in++;
                break;
            case 8:
                r = on_subscribe_pkt(f, ssl, body, len);
                break;
            case 12:
                r = write_packet(ssl, 0xd0, NULL, 0);
                break;
            case 14:
                f->got_disconnect = true;
                r = 1;
                break;
            default:
                r = -1;
                break;
            }
            if (r != 0)
                break;
        }
        SSL_shutdown(ssl);
    } else if (f->tls == FAKE_REFUSE || f->tls == FAKE_REFUSE_TLS12) {
        char buf[4096];

        /* read until the client closes, so that the alert reaches it */
        shutdown(fd, SHUT_WR);
        while (read(fd, buf, sizeof(buf)) > 0)
            continue;
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

static int accept_any_cert(int preverify_ok, X509_STORE_CTX *ctx)
{
    (void)preverify_ok;
    (void)ctx;
    return 1;
}

static struct fake *fake_start_full(const struct step *steps, int nsteps, enum fake_tls tls,
                                    int connack_code, bool refuse_sub)
{
    struct fake *f = calloc(1, sizeof(*f));
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t salen = sizeof(sa);

    assert_non_null(f);
    f->steps = steps;
    f->nsteps = nsteps;
    f->tls = tls;
    f->connack_code = connack_code;
    f->refuse_sub = refuse_sub;
    f->ctx = SSL_CTX_new(TLS_server_method());
    assert_non_null(f->ctx);
    assert_int_equal(SSL_CTX_use_certificate(f->ctx, srv_cert), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(f->ctx, srv_key), 1);
    if (tls == FAKE_REQUEST_CERT) {
        SSL_CTX_set_verify(f->ctx, SSL_VERIFY_PEER, accept_any_cert);
    } else if (tls != FAKE_NO_CLIENT_CERT) {
        /* trusts only its own certificate, which signed no client certificate */
        assert_int_equal(X509_STORE_add_cert(SSL_CTX_get_cert_store(f->ctx), srv_cert), 1);
        SSL_CTX_set_verify(f->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        if (tls == FAKE_REFUSE_TLS12)
            assert_int_equal(SSL_CTX_set_max_proto_version(f->ctx, TLS1_2_VERSION), 1);
    }
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

static struct fake *fake_start(const struct step *steps, int nsteps)
{
    return fake_start_full(steps, nsteps, FAKE_NO_CLIENT_CERT, 0, false);
}

/* Stopped fakes, freed after each test so that the test can read their records. */
static struct fake *stopped[8];
static int nstopped;

/* Stops the fake; prov_register has closed its connection by then. */
static void fake_stop(struct fake *f)
{
    atomic_store(&f->stop, 1);
    pthread_join(f->thread, NULL);
    close(f->lfd);
    SSL_CTX_free(f->ctx);
    f->ctx = NULL;
    if (nstopped == (int)(sizeof(stopped) / sizeof(stopped[0]))) {
        free(stopped[0]);
        memmove(stopped, stopped + 1, sizeof(stopped) - sizeof(stopped[0]));
        nstopped--;
    }
    stopped[nstopped++] = f;
}

static int free_fakes(void **state)
{
    (void)state;
    while (nstopped > 0)
        free(stopped[--nstopped]);
    return 0;
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

static void assert_no_secrets_logged(void)
{
    assert_null(strstr(logbuf, KEY));
    assert_null(strstr(logbuf, DERIVED_KEY));
    assert_null(strstr(logbuf, "sig="));
    assert_null(strstr(logbuf, "SharedAccessSignature"));
    assert_null(strstr(logbuf, "PRIVATE KEY"));
}

/* ---- helpers ---- */

static struct prov_client *new_client_host(const char *host, const char *regid,
                                           const char *payload, int timeout, const char *ca)
{
    struct prov_options opt = PROV_OPTIONS_INIT;
    struct prov_client *c = NULL;

    opt.host = host;
    opt.id_scope = SCOPE;
    opt.registration_id = regid;
    opt.ca_file = ca;
    opt.payload_json = payload;
    opt.timeout_seconds = timeout;
    opt.transport = PROV_TRANSPORT_MQTT;
    assert_int_equal(prov_client_new(&opt, &c), 0);
    assert_non_null(c);
    return c;
}

static struct prov_client *new_client(int port, const char *regid, const char *payload,
                                      int timeout)
{
    char host[64];

    snprintf(host, sizeof(host), "127.0.0.1:%d", port);
    return new_client_host(host, regid, payload, timeout, ca_path);
}

/* A key client (symmetric key KEY) against the fake. */
static struct prov_client *key_client(const struct fake *f, int timeout)
{
    struct prov_client *c = new_client(f->port, REG_ID, NULL, timeout);

    assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
    return c;
}

/* The CONNECT of a key client: MQTT 3.1.1, clean session, keepalive 60, SAS password. */
static void check_connect(const struct fake *f, const char *regid, const char *key)
{
    struct sas_token tok;
    const char *why = NULL;
    char want[256];
    long long now = (long long)time(NULL);
    const char *version;

    assert_true(f->got_connect);
    assert_int_equal(f->level, 4);
    /* user name, clean session; no will */
    assert_int_equal(f->connect_flags & 0xbe, 0x82);
    assert_int_equal(f->keepalive, 60);
    assert_string_equal(f->client_id, regid);
    snprintf(want, sizeof(want), SCOPE "/registrations/%s/api-version=2019-03-31"
             "&ClientVersion=libprov%%2F", regid);
    assert_memory_equal(f->username, want, strlen(want));
    /* libprov%2F<major>.<minor>.<patch> */
    version = f->username + strlen(want);
    assert_true(strlen(version) >= 5 && strspn(version, "0123456789.") == strlen(version));
    if (key == NULL) {
        assert_false(f->has_password);
        assert_int_equal(f->connect_flags & 0x40, 0);
        return;
    }
    assert_true(f->has_password);
    assert_int_equal(sas_parse(f->password, &tok, &why), 0);
    assert_true(sas_check_b64_key(&tok, key));
    snprintf(want, sizeof(want), SCOPE "/registrations/%s", regid);
    assert_string_equal(tok.sr, want);
    assert_true(tok.has_skn);
    assert_string_equal(tok.skn, "registration");
    assert_in_range(tok.se, now + 3600 - 10, now + 3600 + 10);
}

static void check_subscribe(const struct fake *f)
{
    assert_int_equal(f->nsubs, 1);
    assert_string_equal(f->sub_filter, RES_FILTER);
    assert_int_equal(f->sub_qos, 1);
}

/* Publication i is a register request (QoS 1) with $rid rid and body {"registrationId":..}. */
static void check_register_pub(const struct fake *f, int i, const char *rid, const char *regid)
{
    char want[128];
    json_t *body;

    assert_true(i < f->npubs);
    snprintf(want, sizeof(want), REGISTER_TOPIC "%s", rid);
    assert_string_equal(f->pubs[i].topic, want);
    assert_int_equal(f->pubs[i].qos, 1);
    body = json_loads(f->pubs[i].payload, 0, NULL);
    assert_non_null(body);
    assert_string_equal(json_string_value(json_object_get(body, "registrationId")), regid);
    json_decref(body);
}

static void check_poll_pub(const struct fake *f, int i, const char *rid)
{
    char want[256];

    assert_true(i < f->npubs);
    snprintf(want, sizeof(want), POLL_TOPIC "%s&operationId=" OP_ID, rid);
    assert_string_equal(f->pubs[i].topic, want);
    assert_int_equal(f->pubs[i].qos, 1);
    assert_int_equal(f->pubs[i].payload_len, 0);
}

/* ---- tests: options ---- */

static void test_transport_option(void **state)
{
    struct prov_options opt = PROV_OPTIONS_INIT;
    struct prov_client *c = NULL;

    (void)state;
    assert_int_equal(opt.transport, PROV_TRANSPORT_HTTPS);
    assert_string_equal(prov_transport_name(PROV_TRANSPORT_HTTPS), "https");
    assert_string_equal(prov_transport_name(PROV_TRANSPORT_MQTT), "mqtt");
    assert_null(prov_transport_name(2));
    assert_null(prov_transport_name(-1));
    opt.host = "h";
    opt.id_scope = SCOPE;
    opt.registration_id = REG_ID;
    opt.transport = (enum prov_transport)2;
    assert_int_equal(prov_client_new(&opt, &c), PROV_EINVAL);
    assert_null(c);
    assert_non_null(strstr(logbuf, "invalid transport 2"));
    opt.transport = PROV_TRANSPORT_MQTT;
    assert_int_equal(prov_client_new(&opt, &c), 0);
    prov_client_free(c);
    /* a program built before 0.3 passes a smaller struct: HTTPS */
    opt.size = offsetof(struct prov_options, transport);
    c = NULL;
    assert_int_equal(prov_client_new(&opt, &c), 0);
    prov_client_free(c);
}

/* ---- tests: protocol against the fake ---- */

/* register -> 202, poll -> 202, poll -> 200 assigned (device protocol §10.2). */
static void test_register_polls(void **state)
{
    static const struct step steps[] = {
        {ANSWER, 202, "1", ASSIGNING_BODY, NULL},
        {ANSWER, 202, "1", POLL_BODY, NULL},
        {ANSWER, 200, NULL, ASSIGNED_BODY, NULL},
    };
    struct fake *f = fake_start(steps, 3);
    struct prov_client *c = new_client(f->port, REG_ID, "{\"modelId\":\"dtmi:x;1\"}", 20);
    struct prov_result *res = NULL;
    int64_t t0;
    json_t *body;

    (void)state;
    assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
    t0 = mono_ms();
    assert_int_equal(prov_register(c, &res), 0);
    assert_in_range(mono_ms() - t0, 1900, 6000);
    prov_client_free(c);
    fake_stop(f);

    assert_int_equal(f->conns, 1);
    check_connect(f, REG_ID, KEY);
    check_subscribe(f);
    assert_int_equal(f->npubs, 3);
    check_register_pub(f, 0, "1", REG_ID);
    body = json_loads(f->pubs[0].payload, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(json_object_get(body, "payload"),
                                                          "modelId")),
                        "dtmi:x;1");
    json_decref(body);
    check_poll_pub(f, 1, "2");
    check_poll_pub(f, 2, "3");
    /* each poll waited the retry-after second */
    assert_in_range(f->pubs[1].at_ms - f->pubs[0].at_ms, 950, 3000);
    assert_in_range(f->pubs[2].at_ms - f->pubs[1].at_ms, 950, 3000);
    assert_true(f->got_disconnect);

    assert_non_null(res);
    assert_int_equal(res->http_status, 200);
    assert_string_equal(res->status, "assigned");
    assert_string_equal(res->assigned_hub, "myhub.example.test");
    assert_string_equal(res->device_id, REG_ID);
    assert_string_equal(res->operation_id, OP_ID);
    assert_string_equal(res->substatus, "initialAssignment");
    assert_string_equal(res->payload_json, "{\"hello\":\"world\"}");
    assert_string_equal(res->response_json, ASSIGNED_BODY);
    prov_result_free(res);
    assert_non_null(strstr(logbuf, "over MQTT"));
    assert_no_secrets_logged();
}

/* An immediate 200 assigned on the register request (device protocol §10.4). */
static void test_register_immediate(void **state)
{
    static const struct step steps[] = {{ANSWER, 200, NULL, ASSIGNED_BODY, NULL}};
    struct fake *f = fake_start(steps, 1);
    struct prov_client *c = key_client(f, 10);
    struct prov_result *res = NULL;

    (void)state;
    assert_int_equal(prov_register(c, &res), 0);
    prov_client_free(c);
    fake_stop(f);
    assert_int_equal(f->npubs, 1);
    check_register_pub(f, 0, "1", REG_ID);
    assert_string_equal(res->device_id, REG_ID);
    assert_true(f->got_disconnect);
    prov_result_free(res);
}

/* The longest registration id (128 characters) is the client id, unshortened. */
static void test_long_registration_id(void **state)
{
    static const struct step steps[] = {{ANSWER, 200, NULL, ASSIGNED_BODY, NULL}};
    struct fake *f = fake_start(steps, 1);
    struct prov_client *c;
    struct prov_result *res = NULL;
    char regid[129];

    (void)state;
    for (size_t i = 0; i < 128; i++)
        regid[i] = "abcdefghijklmnopqrstuvwxyz0123456789.-_:"[i % 40];
    regid[127] = 'z';
    regid[128] = '\0';
    c = new_client(f->port, regid, NULL, 10);
    assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
    assert_int_equal(prov_register(c, &res), 0);
    prov_client_free(c);
    fake_stop(f);
    check_connect(f, regid, KEY);
    check_register_pub(f, 0, "1", regid);
    prov_result_free(res);
}

/* A group key: the derived key signs the SAS token in the password. */
static void test_group_key(void **state)
{
    static const struct step steps[] = {{ANSWER, 200, NULL, ASSIGNED_BODY, NULL}};
    struct fake *f = fake_start(steps, 1);
    struct prov_client *c = new_client(f->port, REG_ID, NULL, 10);
    struct prov_result *res = NULL;

    (void)state;
    assert_int_equal(prov_client_set_group_key(c, KEY), 0);
    assert_int_equal(prov_register(c, &res), 0);
    prov_client_free(c);
    fake_stop(f);
    check_connect(f, REG_ID, DERIVED_KEY);
    prov_result_free(res);
    assert_no_secrets_logged();
}

/* The same client registers twice: one connection each, $rid starting at 1 again. */
static void test_register_twice(void **state)
{
    static const struct step steps[] = {{ANSWER, 200, NULL, ASSIGNED_BODY, NULL},
                                        {ANSWER, 200, NULL, ASSIGNED_BODY, NULL}};
    struct fake *f = fake_start(steps, 2);
    struct prov_client *c = key_client(f, 10);
    struct prov_result *res = NULL;

    (void)state;
    assert_int_equal(prov_register(c, &res), 0);
    prov_result_free(res);
    res = NULL;
    assert_int_equal(prov_register(c, &res), 0);
    prov_result_free(res);
    prov_client_free(c);
    fake_stop(f);
    assert_int_equal(f->conns, 2);
    assert_int_equal(f->npubs, 2);
    check_register_pub(f, 1, "1", REG_ID);
}

/* X.509: no password, the certificate chain in the TLS handshake. */
static void test_x509(void **state)
{
    static const struct step steps[] = {
        {ANSWER, 202, "1", "{\"operationId\":\"" OP_ID "\",\"status\":\"assigning\"}", NULL},
        {ANSWER, 200, NULL,
         "{\"operationId\":\"" OP_ID "\",\"status\":\"assigned\",\"registrationState\":"
         "{\"registrationId\":\"" DEV_CN "\",\"status\":\"assigned\",\"assignedHub\":\"h\","
         "\"deviceId\":\"" DEV_CN "\",\"x509\":{\"enrollmentGroupId\":\"g1\"}}}",
         NULL},
    };
    struct fake *f = fake_start_full(steps, 2, FAKE_REQUEST_CERT, 0, false);
    struct prov_client *c = new_client(f->port, NULL, NULL, 20);
    struct prov_result *res = NULL;

    (void)state;
    assert_int_equal(prov_client_set_x509(c, chain_path, key_path), 0);
    assert_int_equal(prov_register(c, &res), 0);
    prov_client_free(c);
    fake_stop(f);
    check_connect(f, DEV_CN, NULL);
    assert_int_equal(f->peer_certs, 2);
    assert_string_equal(f->peer_cn[0], DEV_CN);
    assert_string_equal(f->peer_cn[1], INTERMEDIATE_CN);
    check_register_pub(f, 0, "1", DEV_CN);
    assert_int_equal(f->npubs, 2);
    assert_string_equal(res->device_id, DEV_CN);
    assert_string_equal(res->enrollment_group_id, "g1");
    prov_result_free(res);
    assert_no_secrets_logged();
}

/*
 * A server that refuses the client certificate in the handshake. With TLS
 * 1.2 the handshake fails; with TLS 1.3 the client has finished its side, so
 * the server's alert arrives on the first read: PROV_ETLS either way, naming
 * the alert. When the server resets the connection instead, the alert is
 * usually lost (PROV_EIO, logged with a hint) but may still be read first.
 * No CONNECT gets through.
 */
static void test_x509_refused(void **state)
{
    static const struct {
        enum fake_tls tls;
        int want;
    } cases[] = {
        {FAKE_REFUSE_TLS12, PROV_ETLS},
        {FAKE_REFUSE, PROV_ETLS},
        {FAKE_REFUSE_RESET, PROV_EIO}, /* or PROV_ETLS */
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fake *f = fake_start_full(NULL, 0, cases[i].tls, 0, false);
        struct prov_client *c = new_client(f->port, NULL, NULL, 10);
        struct prov_result *res = NULL;
        int r;

        reset_log(NULL);
        assert_int_equal(prov_client_set_x509(c, chain_path, key_path), 0);
        r = prov_register(c, &res);
        prov_client_free(c);
        fake_stop(f);
        if (r != cases[i].want && !(cases[i].tls == FAKE_REFUSE_RESET && r == PROV_ETLS))
            fail_msg("case %zu: %s; log: %s", i, prov_strerror(r), logbuf);
        if (strstr(logbuf, r == PROV_EIO ? "may have refused the client certificate"
                                         : " alert ") == NULL)
            fail_msg("case %zu: %s; log: %s", i, prov_strerror(r), logbuf);
        assert_null(res);
        assert_false(f->got_connect);
    }
}

/* 401 with an error body: PROV_EAUTH, the body in the result, no poll. */
static void test_error_401(void **state)
{
    static const struct step steps[] = {{ANSWER, 401, NULL, ERROR_401_BODY, NULL}};
    struct fake *f = fake_start(steps, 1);
    struct prov_client *c = key_client(f, 10);
    struct prov_result *res = NULL;

    (void)state;
    assert_int_equal(prov_register(c, &res), PROV_EAUTH);
    prov_client_free(c);
    fake_stop(f);
    assert_int_equal(f->npubs, 1);
    assert_non_null(res);
    assert_int_equal(res->http_status, 401);
    assert_null(res->status);
    assert_int_equal(res->error_code, 401002);
    assert_string_equal(res->error_message, "Unauthorized");
    assert_string_equal(res->tracking_id, "276e0260-d041-46ae-853a-7e2468849f77");
    prov_result_free(res);
    assert_non_null(strstr(logbuf, "registration refused: MQTT status 401, errorCode 401002"));
    assert_no_secrets_logged();
}

/* Other error statuses map as over HTTPS; a failed status too. */
static void test_error_codes(void **state)
{
    static const struct {
        struct step st;
        int want;
    } cases[] = {
        {{ANSWER, 404, NULL, "{\"errorCode\":404002,\"message\":\"nope\"}", NULL},
         PROV_ENOTFOUND},
        {{ANSWER, 400, NULL, "{\"errorCode\":400004,\"message\":\"bad\"}", NULL}, PROV_EPROTO},
        {{ANSWER, 403, NULL, NULL, NULL}, PROV_EAUTH},
        {{ANSWER, 200, NULL,
          "{\"operationId\":\"o\",\"status\":\"failed\",\"registrationState\":{\"status\":"
          "\"failed\",\"errorCode\":400209,\"errorMessage\":\"no hub\"}}",
          NULL},
         PROV_EPRECONDITION},
        {{ANSWER, 200, NULL, "{\"operationId\":\"o\",\"status\":\"disabled\"}", NULL},
         PROV_EDISABLED},
        {{ANSWER, 202, "1", "{\"status\":\"assigning\"}", NULL}, PROV_EPROTO},
        {{ANSWER, 200, NULL, "[1]", NULL}, PROV_EPROTO},
        {{ANSWER, 302, NULL, NULL, NULL}, PROV_EPROTO},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fake *f = fake_start(&cases[i].st, 1);
        struct prov_client *c = key_client(f, 10);
        struct prov_result *res = NULL;
        int r = prov_register(c, &res);

        prov_client_free(c);
        fake_stop(f);
        if (r != cases[i].want)
            fail_msg("case %zu: %d, expected %d; log: %s", i, r, cases[i].want, logbuf);
        assert_int_equal(f->npubs, 1);
        prov_result_free(res);
    }
}

/* 429 with retry-after 1, then the same register again (new $rid): assigned. */
static void test_throttled_then_assigned(void **state)
{
    static const struct step steps[] = {
        {ANSWER, 429, "1", ERROR_429_BODY, NULL},
        {ANSWER, 503, "1", NULL, NULL},
        {ANSWER, 200, NULL, ASSIGNED_BODY, NULL},
    };
    struct fake *f = fake_start(steps, 3);
    struct prov_client *c = key_client(f, 20);
    struct prov_result *res = NULL;

    (void)state;
    assert_int_equal(prov_register(c, &res), 0);
    prov_client_free(c);
    fake_stop(f);
    assert_int_equal(f->conns, 1);
    assert_int_equal(f->npubs, 3);
    check_register_pub(f, 0, "1", REG_ID);
    check_register_pub(f, 1, "2", REG_ID);
    check_register_pub(f, 2, "3", REG_ID);
    assert_in_range(f->pubs[1].at_ms - f->pubs[0].at_ms, 950, 3000);
    assert_string_equal(res->status, "assigned");
    prov_result_free(res);
}

/* 429 whose retry-after passes the timeout: PROV_ETIMEOUT at once, with the 429 answer. */
static void test_throttled_past_timeout(void **state)
{
    static const struct step steps[] = {{ANSWER, 429, "30", ERROR_429_BODY, NULL}};
    struct fake *f = fake_start(steps, 1);
    struct prov_client *c = key_client(f, 5);
    struct prov_result *res = NULL;
    int64_t t0 = mono_ms();

    (void)state;
    assert_int_equal(prov_register(c, &res), PROV_ETIMEOUT);
    assert_in_range(mono_ms() - t0, 0, 2000);
    prov_client_free(c);
    fake_stop(f);
    assert_non_null(res);
    assert_int_equal(res->http_status, 429);
    assert_int_equal(res->error_code, 429001);
    prov_result_free(res);
}

/* A retry-after that is not an integer is ignored for the default of 2 s. */
static void test_retry_after_junk(void **state)
{
    static const struct step steps[] = {
        {ANSWER, 202, "soon", ASSIGNING_BODY, NULL},
        {ANSWER, 200, NULL, ASSIGNED_BODY, NULL},
    };
    struct fake *f = fake_start(steps, 2);
    struct prov_client *c = key_client(f, 20);
    struct prov_result *res = NULL;

    (void)state;
    assert_int_equal(prov_register(c, &res), 0);
    prov_client_free(c);
    fake_stop(f);
    assert_in_range(f->pubs[1].at_ms - f->pubs[0].at_ms, 1900, 4000);
    assert_non_null(strstr(logbuf, "ignoring Retry-After 'soon'"));
    prov_result_free(res);
}

/* Response topics the library cannot read: PROV_EPROTO at once, not a timeout. */
static void test_malformed_topic(void **state)
{
    static const char *const topics[] = {
        "$dps/registrations/res/abc/?$rid=1",
        "$dps/registrations/res/200/$rid=1",
        "$dps/registrations/res/200?$rid=1",
        "$dps/registrations/res/2000/?$rid=1",
        "$dps/registrations/res/600/?$rid=1",
        "$dps/registrations/res/200/?rid=1",
        "$dps/registrations/res/200/?$rid=",
        "$dps/registrations/res/200/?$rid=1&$rid=1",
        "$dps/registrations/res/200/?$rid=1&retry-after=1&retry-after=2",
        "$dps/registrations/res/200/?$rid=1&novalue",
        "$dps/registrations/res/200/",
        "$dps/registrations/res/",
        "$dps/registrations/res/200/?$rid=1&",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++) {
        struct step st = {RAW_TOPIC, 0, NULL, ASSIGNED_BODY, topics[i]};
        struct fake *f = fake_start(&st, 1);
        struct prov_client *c = key_client(f, 10);
        struct prov_result *res = NULL;
        int64_t t0 = mono_ms();
        int r;

        reset_log(NULL);
        r = prov_register(c, &res);
        prov_client_free(c);
        fake_stop(f);
        if (r != PROV_EPROTO)
            fail_msg("topic '%s': %d, expected PROV_EPROTO; log: %s", topics[i], r, logbuf);
        assert_in_range(mono_ms() - t0, 0, 5000);
        assert_null(res);
        assert_non_null(strstr(logbuf, "malformed response topic"));
    }
}

/* Accepted forms: retry-after first, an unknown property; $rid compared exactly. */
static void test_topic_forms(void **state)
{
    static const char *const topics[] = {
        "$dps/registrations/res/200/?retry-after=3&$rid=1",
        "$dps/registrations/res/200/?$rid=1&x-other=y",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++) {
        struct step st = {RAW_TOPIC, 0, NULL, ASSIGNED_BODY, topics[i]};
        struct fake *f = fake_start(&st, 1);
        struct prov_client *c = key_client(f, 10);
        struct prov_result *res = NULL;

        assert_int_equal(prov_register(c, &res), 0);
        prov_client_free(c);
        fake_stop(f);
        assert_int_equal(res->http_status, 200);
        prov_result_free(res);
    }
}

/* An answer to another $rid is ignored; the one to ours counts. */
static void test_rid_mismatch_ignored(void **state)
{
    static const struct step steps[] = {
        {OTHER_RID, 202, "1", ASSIGNING_BODY, NULL},
        {OTHER_RID, 200, NULL, ASSIGNED_BODY, NULL},
    };
    struct fake *f = fake_start(steps, 2);
    struct prov_client *c = key_client(f, 20);
    struct prov_result *res = NULL;

    (void)state;
    assert_int_equal(prov_register(c, &res), 0);
    prov_client_free(c);
    fake_stop(f);
    assert_int_equal(f->npubs, 2);
    assert_string_equal(res->status, "assigned");
    /* $rid=10 is not $rid=1: compared whole, not as a prefix */
    assert_non_null(strstr(logbuf, "ignoring an answer to $rid=10 (waiting for 1)"));
    assert_non_null(strstr(logbuf, "ignoring an answer to $rid=20 (waiting for 2)"));
    prov_result_free(res);
}

/* A response published at QoS 1 is acknowledged by the client. */
static void test_response_qos1(void **state)
{
    static const struct step steps[] = {{ANSWER_QOS1, 200, NULL, ASSIGNED_BODY, NULL}};
    struct fake *f = fake_start(steps, 1);
    struct prov_client *c = key_client(f, 10);
    struct prov_result *res = NULL;

    (void)state;
    assert_int_equal(prov_register(c, &res), 0);
    prov_client_free(c);
    fake_stop(f);
    assert_int_equal(f->pubacks_in, 1);
    prov_result_free(res);
}

/* No answer: PROV_ETIMEOUT after the overall timeout. */
static void test_timeout_no_answer(void **state)
{
    static const struct step steps[] = {{SILENT, 0, NULL, NULL, NULL}};
    struct fake *f = fake_start(steps, 1);
    struct prov_client *c = key_client(f, 2);
    struct prov_result *res = NULL;
    int64_t t0 = mono_ms();

    (void)state;
    assert_int_equal(prov_register(c, &res), PROV_ETIMEOUT);
    assert_in_range(mono_ms() - t0, 1900, 4000);
    prov_client_free(c);
    fake_stop(f);
    assert_null(res);
    assert_int_equal(f->npubs, 1);
    assert_non_null(strstr(logbuf, "timed out after 2 s waiting for the answer to $rid=1"));
}

/* Still assigning when the timeout passes: PROV_ETIMEOUT with the last answer. */
static void test_timeout_polling(void **state)
{
    static const struct step steps[] = {
        {ANSWER, 202, "1", ASSIGNING_BODY, NULL}, {ANSWER, 202, "1", POLL_BODY, NULL},
        {ANSWER, 202, "1", POLL_BODY, NULL},      {ANSWER, 202, "1", POLL_BODY, NULL},
    };
    struct fake *f = fake_start(steps, 4);
    struct prov_client *c = key_client(f, 2);
    struct prov_result *res = NULL;
    int64_t t0 = mono_ms();

    (void)state;
    assert_int_equal(prov_register(c, &res), PROV_ETIMEOUT);
    assert_in_range(mono_ms() - t0, 900, 3500);
    prov_client_free(c);
    fake_stop(f);
    assert_non_null(res);
    assert_string_equal(res->status, "assigning");
    prov_result_free(res);
}

/* The server closes the connection instead of answering: PROV_EIO. */
static void test_server_closes(void **state)
{
    static const struct step steps[] = {{CLOSE, 0, NULL, NULL, NULL}};
    struct fake *f = fake_start(steps, 1);
    struct prov_client *c = key_client(f, 10);
    struct prov_result *res = NULL;
    int64_t t0 = mono_ms();

    (void)state;
    assert_int_equal(prov_register(c, &res), PROV_EIO);
    assert_in_range(mono_ms() - t0, 0, 5000);
    prov_client_free(c);
    fake_stop(f);
    assert_null(res);
    assert_non_null(strstr(logbuf, "the server closed the connection"));
}

/* CONNACK refusals map to codes, without a result. */
static void test_connack_refused(void **state)
{
    static const struct {
        int code;
        int want;
    } cases[] = {
        {5, PROV_EAUTH}, {4, PROV_EAUTH}, {3, PROV_EAGAIN}, {2, PROV_EPROTO}, {1, PROV_EPROTO},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fake *f = fake_start_full(NULL, 0, FAKE_NO_CLIENT_CERT, cases[i].code, false);
        struct prov_client *c = key_client(f, 10);
        struct prov_result *res = NULL;
        char want[32];
        int r;

        reset_log(NULL);
        r = prov_register(c, &res);
        prov_client_free(c);
        fake_stop(f);
        if (r != cases[i].want)
            fail_msg("CONNACK %d: %d, expected %d; log: %s", cases[i].code, r, cases[i].want,
                     logbuf);
        assert_null(res);
        assert_int_equal(f->npubs, 0);
        snprintf(want, sizeof(want), "CONNACK %d", cases[i].code);
        assert_non_null(strstr(logbuf, want));
    }
}

/* A SUBACK with the failure code 0x80: PROV_EPROTO, nothing published. */
static void test_subscription_refused(void **state)
{
    struct fake *f = fake_start_full(NULL, 0, FAKE_NO_CLIENT_CERT, 0, true);
    struct prov_client *c = key_client(f, 10);
    struct prov_result *res = NULL;

    (void)state;
    assert_int_equal(prov_register(c, &res), PROV_EPROTO);
    prov_client_free(c);
    fake_stop(f);
    assert_int_equal(f->npubs, 0);
    assert_non_null(strstr(logbuf, "refused the subscription"));
}

/* The server's certificate must verify: an unknown CA, a wrong host name. */
static void test_tls_failures(void **state)
{
    static const struct step steps[] = {{ANSWER, 200, NULL, ASSIGNED_BODY, NULL}};
    struct fake *f = fake_start(steps, 1);
    struct prov_client *c;
    struct prov_result *res = NULL;
    char host[64];

    (void)state;
    /* not signed by anything in the system store */
    snprintf(host, sizeof(host), "127.0.0.1:%d", f->port);
    c = new_client_host(host, REG_ID, NULL, 10, NULL);
    assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
    assert_int_equal(prov_register(c, &res), PROV_ETLS);
    assert_null(res);
    prov_client_free(c);
    assert_non_null(strstr(logbuf, "server certificate verification failed"));
    /* trusted, but issued for 127.0.0.1, not for localhost */
    reset_log(NULL);
    snprintf(host, sizeof(host), "localhost:%d", f->port);
    c = new_client_host(host, REG_ID, NULL, 10, ca_path);
    assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
    assert_int_equal(prov_register(c, &res), PROV_ETLS);
    prov_client_free(c);
    assert_non_null(strstr(logbuf, "mismatch"));
    assert_int_equal(f->npubs, 0);
    assert_false(f->got_connect);
    fake_stop(f);
}

static void test_connect_refused(void **state)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t salen = sizeof(sa);
    struct prov_client *c;
    struct prov_result *res = NULL;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int64_t t0;

    (void)state;
    /* a port that was free a moment ago and has no listener */
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &salen), 0);
    close(fd);
    c = new_client(ntohs(sa.sin_port), REG_ID, NULL, 5);
    assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
    t0 = mono_ms();
    assert_int_equal(prov_register(c, &res), PROV_EIO);
    assert_in_range(mono_ms() - t0, 0, 2000);
    assert_null(res);
    assert_non_null(strstr(logbuf, "failed"));
    prov_client_free(c);
}

/* A server that accepts TCP and never speaks TLS: the timeout still holds. */
static void test_tls_silent_server(void **state)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t salen = sizeof(sa);
    struct prov_client *c;
    struct prov_result *res = NULL;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    int64_t t0;

    (void)state;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(lfd, 4), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &salen), 0);
    c = new_client(ntohs(sa.sin_port), REG_ID, NULL, 2);
    assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
    t0 = mono_ms();
    assert_int_equal(prov_register(c, &res), PROV_ETIMEOUT);
    assert_in_range(mono_ms() - t0, 1900, 4000);
    assert_null(res);
    prov_client_free(c);
    close(lfd);
}

static void on_sigpipe(int sig)
{
    (void)sig;
}

/* libmosquitto sets SIGPIPE to SIG_IGN; libprov puts the application's handler back. */
static void test_sigpipe_untouched(void **state)
{
    static const struct step steps[] = {{ANSWER, 200, NULL, ASSIGNED_BODY, NULL}};
    struct sigaction sa, old, now;
    struct fake *f = fake_start(steps, 1);
    struct prov_client *c = key_client(f, 10);
    struct prov_result *res = NULL;
    sigset_t mask_before, mask_after;

    (void)state;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigpipe;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGPIPE, &sa, &old), 0);
    pthread_sigmask(SIG_SETMASK, NULL, &mask_before);
    assert_int_equal(prov_register(c, &res), 0);
    pthread_sigmask(SIG_SETMASK, NULL, &mask_after);
    assert_int_equal(sigaction(SIGPIPE, &old, &now), 0);
    assert_ptr_equal(now.sa_handler, on_sigpipe);
    assert_int_equal(sigismember(&mask_before, SIGPIPE), sigismember(&mask_after, SIGPIPE));
    prov_client_free(c);
    fake_stop(f);
    prov_result_free(res);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_transport_option, reset_log, free_fakes),
        cmocka_unit_test_setup_teardown(test_register_polls, reset_log, free_fakes),
        cmocka_unit_test_setup_teardown(test_register_immediate, reset_log, free_fakes),
        cmocka_unit_test_setup_teardown(test_long_registration_id, reset_log, free_fakes),
        cmocka_unit_test_setup_teardown(test_group_key, reset_log, free_fakes),
        cmocka_unit_test_setup_teardown(test_register_twice, reset_log, free_fakes),
        cmocka_unit_test_setup_teardown(test_x509, reset_log, free_fakes),
        cmocka_unit_test_setup_teardown(test_x509_refused, reset_log, free_fakes),
        cmocka_unit_test_setup_teardown(test_error_401, reset_log, free_fakes),
        cmocka_unit_test_setup_teardown(test_error_codes, reset_log, free_fakes),
        cmocka_unit_test_setup_teardown(test_throttled_then_assigned, reset_log, free_fakes),
        cmocka_unit_test_setup_teardown(test_throttled_past_timeout, reset_log, free_fakes),
        cmocka_unit_test_setup_teardown(test_retry_after_junk, reset_log, free_fakes),
        cmocka_unit_test_setup_teardown(test_malformed_topic, reset_log, free_fakes),
        cmocka_unit_test_setup_teardown(test_topic_forms, reset_log, free_fakes),
        cmocka_unit_test_setup_teardown(test_rid_mismatch_ignored, reset_log, free_fakes),
        cmocka_unit_test_setup_teardown(test_response_qos1, reset_log, free_fakes),
        cmocka_unit_test_setup_teardown(test_timeout_no_answer, reset_log, free_fakes),
        cmocka_unit_test_setup_teardown(test_timeout_polling, reset_log, free_fakes),
        cmocka_unit_test_setup_teardown(test_server_closes, reset_log, free_fakes),
        cmocka_unit_test_setup_teardown(test_connack_refused, reset_log, free_fakes),
        cmocka_unit_test_setup_teardown(test_subscription_refused, reset_log, free_fakes),
        cmocka_unit_test_setup_teardown(test_tls_failures, reset_log, free_fakes),
        cmocka_unit_test_setup_teardown(test_connect_refused, reset_log, free_fakes),
        cmocka_unit_test_setup_teardown(test_tls_silent_server, reset_log, free_fakes),
        cmocka_unit_test_setup_teardown(test_sigpipe_untouched, reset_log, free_fakes),
    };

    return cmocka_run_group_tests(tests, setup_pki, teardown_pki);
}
