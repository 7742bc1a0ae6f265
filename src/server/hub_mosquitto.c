/*
 * The mosquitto hub connector (hub.h): places a provisioned device in a
 * Mosquitto 2 broker through its dynamic-security plugin ("dynsec"), over
 * libmosquitto. docs/operations.md "Mosquitto connector" is the user's side.
 *
 *   mosquitto://USER:PASSWORD@HOST[:PORT][?timeout=S]               port 1883
 *   mosquittos://USER:PASSWORD@HOST[:PORT][?cafile=PATH&timeout=S]  port 8883
 *
 * USER/PASSWORD (percent-encoded in the URL) are a dynsec client allowed on
 * the control topic and to publish to devices/#. mosquittos:// checks the
 * broker's certificate against PATH (default: the system store) and its name
 * or IP address against HOST. S (1..300, default 5) bounds each step: the
 * connection (TCP, TLS, CONNACK, SUBACK) and each command or publication.
 *
 * Device D becomes: role "provd-device-D" whose ACLs allow devices/D/# only
 * (publishClientSend, publishClientReceive, subscribePattern,
 * unsubscribePattern), and client D (username D, client id D, textname
 * CLIENT_TEXTNAME: the mark that provd owns it) with that role and, for
 * symmetricKey and tpm, the password hub_password_derive(key, D); an x509
 * client has no password (the broker's certificate listener makes the CN the
 * user name). A client D that provd did not create is never touched. Then the
 * initial twin's desired properties go to devices/D/twin/desired, retained,
 * QoS 1 (an empty retained message clears an old one; no twin at all leaves
 * it alone). Provisioning deletes and recreates both in one dynsec request,
 * so it is idempotent and a device's old password stops working.
 *
 * Connections speak MQTT 5, so that PUBACK and SUBACK say "not authorised".
 * A call takes an idle connection from a small pool (or opens one) and puts
 * it back when it is sound; no lock is held during network I/O, so assigner
 * threads work at once and each is bounded by its own timeouts. Measured on
 * loopback with 200 devices: a connection per call cost 2.3 ms per provision
 * (4.6 ms with TLS), the pool 1.5 ms either way. An idle connection receives
 * the other calls' dynsec responses (the plugin publishes every response to
 * every subscriber), which are read and dropped before reuse; one idle for
 * IDLE_MAX_MS is closed. Dynsec commands go out at QoS 0: the broker does
 * not disable Nagle, so a PUBACK followed by the response would wait for
 * our delayed ACK (40 ms per command); for the same reason every read is
 * followed by TCP_QUICKACK.
 *
 * The connection is driven by poll() in the calling thread with
 * libmosquitto's loop_read/write/misc, not mosquitto_loop(), whose select()
 * fails for descriptors above FD_SETSIZE (provd has thousands of device
 * connections). libmosquitto 2.0.11 quirks: mosquitto_new() sets SIGPIPE to
 * SIG_IGN (provd ignores it anyway); during the TLS handshake it takes a
 * reset or closed socket for "try again", so a dead socket is detected here;
 * the payloads it copies are freed without wiping.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <time.h>

#include <jansson.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "../common/errors.h"
#include "../common/log.h"
#include "../common/sas.h"
#include "../common/util.h"
#include "hub.h"
#include "hub_mosquitto.h"

#define LOG_MODULE "hub-mosquitto"

#define CONTROL_TOPIC "$CONTROL/dynamic-security/v1"
#define RESPONSE_TOPIC CONTROL_TOPIC "/response"
#define ROLE_PREFIX "provd-device-"
#define CLIENT_TEXTNAME "provd device"
#define ROLE_TEXTNAME "provd device role"
#define DEFAULT_TIMEOUT_S 5
#define MAX_TIMEOUT_S 300
#define KEEPALIVE_S 60
#define POOL_MAX 8        /* idle connections kept between calls */
#define IDLE_MAX_MS 30000 /* well inside the keepalive: the broker never drops one for it */
#define MAX_DEVICE_ID 128
#define PW_LEN 44 /* base64 of an HMAC-SHA256 */
/* stands for the password in the request text until it is sent (same length) */
#define PW_PLACEHOLDER "provd-password-placeholder-0123456789abcdefg"
_Static_assert(sizeof(PW_PLACEHOLDER) - 1 == PW_LEN, "the placeholder has the password's length");

struct mq_conn;

/* What open() parsed (read-only afterwards) and the idle connections. */
struct mq_hub {
    char host[256]; /* DNS name or IP literal, without brackets */
    int port;
    bool tls;
    char user[256];
    char password[256];
    char cafile[1024]; /* "" = the system store */
    int timeout_ms;
    char where[300];      /* "host:port" for messages */
    pthread_mutex_t lock; /* guards idle and nidle */
    struct mq_conn *idle[POOL_MAX];
    size_t nidle;
};

/* One connection: what its callbacks saw. */
struct mq_conn {
    const struct mq_hub *hub;
    struct mosquitto *m;
    SSL_CTX *ctx;
    int connack; /* CONNACK reason code; -1 before it arrives */
    int sub_mid;
    int sub_rc; /* SUBACK reason code; -1 before */
    int pub_mid;
    int pub_rc;         /* PUBACK reason code of pub_mid; -1 before */
    char corr[40];      /* correlationData prefix of the request in flight */
    size_t ncmds;       /* its number of commands */
    json_t *answer;     /* its "responses" array, once it arrived */
    bool malformed;     /* an answer to it arrived that is not usable */
    bool tcp_up;        /* the TCP connection was seen established */
    bool broken;        /* a transport failure or a timeout: never reused */
    int64_t idle_since; /* when it went back to the pool */
    char tls_why[160];
    char last_error[200];
};

enum wait_for { W_CONNACK, W_SUBACK, W_PUBACK, W_ANSWER };

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_rc;

static void init_mosquitto(void)
{
    init_rc = mosquitto_lib_init();
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return code;
}

/* ---- the URL -------------------------------------------------------------- */

/* Percent-decodes [s, s+len) into out (outlen bytes). */
static int decode_part(const char *s, size_t len, char *out, size_t outlen)
{
    if (len >= outlen)
        return PROV_EINVAL;
    return url_decode(s, len, out, false) < 0 ? PROV_EINVAL : 0;
}

static bool host_ok(const char *h, bool bracketed)
{
    unsigned char addr[16];

    if (bracketed)
        return inet_pton(AF_INET6, h, addr) == 1;
    if (h[0] == '\0' || h[0] == '-' || h[0] == '.')
        return false;
    for (const char *p = h; *p != '\0'; p++) {
        if (!(isalnum((unsigned char)*p) || *p == '-' || *p == '.'))
            return false;
    }
    return true;
}

/* HOST[:PORT] or [V6][:PORT] of [s, s+len). */
static int parse_hostport(struct mq_hub *h, const char *s, size_t len, char *err, size_t errlen)
{
    const char *end = s + len, *colon;
    bool bracketed = len > 0 && s[0] == '[';
    long port = h->tls ? 8883 : 1883;
    char portbuf[8];

    if (bracketed) {
        const char *rb = memchr(s, ']', len);

        if (rb == NULL)
            return fail(err, errlen, PROV_EINVAL, "mosquitto URL: unclosed '[' in the host");
        colon = rb + 1 < end ? rb + 1 : NULL;
        if (colon != NULL && *colon != ':')
            return fail(err, errlen, PROV_EINVAL, "mosquitto URL: junk after the IPv6 address");
        s++;
        len = (size_t)(rb - s);
    } else {
        colon = memchr(s, ':', len);
        len = colon != NULL ? (size_t)(colon - s) : len;
    }
    if (len == 0 || len >= sizeof(h->host))
        return fail(err, errlen, PROV_EINVAL, "mosquitto URL: no host, or a host name too long");
    memcpy(h->host, s, len);
    h->host[len] = '\0';
    if (!host_ok(h->host, bracketed))
        return fail(err, errlen, PROV_EINVAL, "mosquitto URL: '%s' is not a host name or address",
                    h->host);
    if (colon != NULL) {
        size_t plen = (size_t)(end - colon - 1);

        if (plen == 0 || plen >= sizeof(portbuf))
            return fail(err, errlen, PROV_EINVAL, "mosquitto URL: the port must be 1..65535");
        memcpy(portbuf, colon + 1, plen);
        portbuf[plen] = '\0';
        if (parse_long(portbuf, 1, 65535, &port) != 0)
            return fail(err, errlen, PROV_EINVAL, "mosquitto URL: the port must be 1..65535");
    }
    h->port = (int)port;
    snprintf(h->where, sizeof(h->where), bracketed ? "[%s]:%d" : "%s:%d", h->host, h->port);
    return 0;
}

/* USER:PASSWORD of [s, s+len), both required, percent-decoded. */
static int parse_userinfo(struct mq_hub *h, const char *s, size_t len, char *err, size_t errlen)
{
    const char *colon = memchr(s, ':', len);

    if (colon == NULL || colon == s || colon + 1 == s + len)
        return fail(err, errlen, PROV_EINVAL,
                    "mosquitto URL: USER:PASSWORD@ of the broker's dynsec admin is required");
    if (decode_part(s, (size_t)(colon - s), h->user, sizeof(h->user)) != 0 ||
        decode_part(colon + 1, (size_t)(s + len - colon - 1), h->password, sizeof(h->password)) !=
            0)
        return fail(err, errlen, PROV_EINVAL,
                    "mosquitto URL: bad percent-encoding or too long a user name or password");
    if (h->user[0] == '\0' || h->password[0] == '\0')
        return fail(err, errlen, PROV_EINVAL, "mosquitto URL: empty user name or password");
    return 0;
}

/* Checks that the CA file loads (a bad one should stop provd at start-up). */
static int check_cafile(const char *path, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    int r = 0;

    if (ctx == NULL)
        return fail(err, errlen, PROV_ENOMEM, "mosquitto URL: out of memory");
    if (SSL_CTX_load_verify_file(ctx, path) != 1)
        r = fail(err, errlen, PROV_EINVAL, "mosquitto URL: cannot load CA certificates from '%s'",
                 path);
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return r;
}

/* k=v&k=v of [s, s+len): cafile (TLS only) and timeout. */
static int parse_query(struct mq_hub *h, const char *s, size_t len, char *err, size_t errlen)
{
    const char *end = s + len;

    while (s < end) {
        const char *amp = memchr(s, '&', (size_t)(end - s));
        const char *pe = amp != NULL ? amp : end;
        const char *eq = memchr(s, '=', (size_t)(pe - s));
        char val[1024];
        long t;

        if (eq == NULL || decode_part(eq + 1, (size_t)(pe - eq - 1), val, sizeof(val)) != 0 ||
            val[0] == '\0')
            return fail(err, errlen, PROV_EINVAL, "mosquitto URL: bad query parameter '%.*s'",
                        (int)(pe - s > 40 ? 40 : pe - s), s);
        if ((size_t)(eq - s) == 6 && strncmp(s, "cafile", 6) == 0) {
            if (!h->tls)
                return fail(err, errlen, PROV_EINVAL,
                            "mosquitto URL: cafile needs mosquittos:// (TLS)");
            snprintf(h->cafile, sizeof(h->cafile), "%s", val);
        } else if ((size_t)(eq - s) == 7 && strncmp(s, "timeout", 7) == 0) {
            if (parse_long(val, 1, MAX_TIMEOUT_S, &t) != 0)
                return fail(err, errlen, PROV_EINVAL,
                            "mosquitto URL: timeout must be 1..%d seconds", MAX_TIMEOUT_S);
            h->timeout_ms = (int)t * 1000;
        } else {
            return fail(err, errlen, PROV_EINVAL,
                        "mosquitto URL: unknown query parameter '%.*s' (cafile, timeout)",
                        (int)(eq - s > 40 ? 40 : eq - s), s);
        }
        s = pe + 1;
    }
    return h->cafile[0] != '\0' ? check_cafile(h->cafile, err, errlen) : 0;
}

static int parse_url(struct mq_hub *h, const char *url, char *err, size_t errlen)
{
    const char *auth, *auth_end, *at, *q;
    int r;

    if (strncmp(url, "mosquittos://", 13) == 0) {
        h->tls = true;
        auth = url + 13;
    } else if (strncmp(url, "mosquitto://", 12) == 0) {
        auth = url + 12;
    } else {
        return fail(err, errlen, PROV_EINVAL, "not a mosquitto:// or mosquittos:// URL");
    }
    h->timeout_ms = DEFAULT_TIMEOUT_S * 1000;
    auth_end = auth + strcspn(auth, "/?#");
    q = auth_end;
    if (*q == '/')
        q++; /* an empty path */
    if (*q != '\0' && *q != '?')
        return fail(err, errlen, PROV_EINVAL, "mosquitto URL: no path or fragment allowed");
    /* the last '@': a raw '@' in the password is tolerated */
    at = NULL;
    for (const char *p = auth; p < auth_end; p++) {
        if (*p == '@')
            at = p;
    }
    if (at == NULL)
        return fail(err, errlen, PROV_EINVAL,
                    "mosquitto URL: USER:PASSWORD@ of the broker's dynsec admin is required");
    if ((r = parse_userinfo(h, auth, (size_t)(at - auth), err, errlen)) != 0 ||
        (r = parse_hostport(h, at + 1, (size_t)(auth_end - at - 1), err, errlen)) != 0)
        return r;
    if (*q == '?' && (r = parse_query(h, q + 1, strlen(q + 1), err, errlen)) != 0)
        return r;
    return 0;
}

/* ---- one connection -------------------------------------------------------- */

static void on_log(struct mosquitto *m, void *arg, int level, const char *text)
{
    struct mq_conn *c = arg;

    (void)m;
    if (level == MOSQ_LOG_ERR)
        snprintf(c->last_error, sizeof(c->last_error), "%s", text);
    /* packets and topics, never a password */
    plog(LOG_DEBUG, "%s: %s", c->hub->where, text);
}

static void on_connect(struct mosquitto *m, void *arg, int rc, int flags,
                       const mosquitto_property *props)
{
    struct mq_conn *c = arg;

    (void)m;
    (void)flags;
    (void)props;
    c->connack = rc;
}

static void on_subscribe(struct mosquitto *m, void *arg, int mid, int count, const int *granted,
                         const mosquitto_property *props)
{
    struct mq_conn *c = arg;

    (void)m;
    (void)props;
    if (mid == c->sub_mid)
        c->sub_rc = count < 1 ? MQTT_RC_UNSPECIFIED : granted[0];
}

static void on_publish(struct mosquitto *m, void *arg, int mid, int rc,
                       const mosquitto_property *props)
{
    struct mq_conn *c = arg;

    (void)m;
    (void)props;
    if (mid == c->pub_mid)
        c->pub_rc = rc;
}

/* hub_mosquitto.h */
enum dynsec_answer dynsec_parse_answer(const void *payload, size_t len, const char *corr_prefix,
                                       size_t ncmds, json_t **responses)
{
    json_t *doc = json_loadb(payload, len, 0, NULL);
    json_t *resp = json_object_get(doc, "responses");
    const char *first = json_string_value(
        json_object_get(json_array_get(resp, 0), "correlationData"));
    size_t plen = strlen(corr_prefix);
    enum dynsec_answer a = DYNSEC_OURS;

    *responses = NULL;
    if (!json_is_array(resp) || first == NULL || plen == 0 ||
        strncmp(first, corr_prefix, plen) != 0) {
        json_decref(doc);
        return DYNSEC_NOT_OURS;
    }
    if (json_array_size(resp) != ncmds)
        a = DYNSEC_MALFORMED;
    for (size_t i = 0; a == DYNSEC_OURS && i < ncmds; i++) {
        const json_t *e = json_array_get(resp, i);
        const char *got = json_string_value(json_object_get(e, "correlationData"));
        char want[64];

        snprintf(want, sizeof(want), "%s%zu", corr_prefix, i);
        if (!json_is_object(e) || got == NULL || strcmp(got, want) != 0)
            a = DYNSEC_MALFORMED;
    }
    if (a == DYNSEC_OURS)
        *responses = json_incref(resp);
    json_decref(doc);
    return a;
}

/* Keeps the answer to the request in flight, or notes that it is unusable. */
static void on_message(struct mosquitto *m, void *arg, const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
    struct mq_conn *c = arg;
    json_t *resp;

    (void)m;
    (void)props;
    if (c->answer != NULL || c->malformed || c->corr[0] == '\0' ||
        strcmp(msg->topic, RESPONSE_TOPIC) != 0 || msg->payloadlen < 0)
        return;
    switch (dynsec_parse_answer(msg->payload, (size_t)msg->payloadlen, c->corr, c->ncmds, &resp)) {
    case DYNSEC_OURS: c->answer = resp; break;
    case DYNSEC_MALFORMED: c->malformed = true; break;
    case DYNSEC_NOT_OURS: break;
    }
}

static int verify_cb(int ok, X509_STORE_CTX *store)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct mq_conn *c = ssl != NULL ? SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)) : NULL;

    if (!ok && c != NULL && c->tls_why[0] == '\0')
        snprintf(c->tls_why, sizeof(c->tls_why), "broker certificate verification failed: %s",
                 X509_verify_cert_error_string(X509_STORE_CTX_get_error(store)));
    return ok;
}

/* TLS 1.2 or later; the broker checked against the CA file and its name against host. */
static int make_ssl_ctx(struct mq_conn *c, char *err, size_t errlen)
{
    const struct mq_hub *h = c->hub;
    unsigned char addr[16];
    X509_VERIFY_PARAM *param;
    int r = PROV_ETLS;

    ERR_clear_error();
    if ((c->ctx = SSL_CTX_new(TLS_client_method())) == NULL)
        return fail(err, errlen, PROV_ENOMEM, "out of memory");
    SSL_CTX_set_app_data(c->ctx, c);
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, verify_cb);
    if (SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION) != 1)
        goto out;
    if (h->cafile[0] != '\0' ? SSL_CTX_load_verify_file(c->ctx, h->cafile) != 1
                             : SSL_CTX_set_default_verify_paths(c->ctx) != 1) {
        fail(err, errlen, PROV_ETLS, "cannot load the CA certificates from %s",
             h->cafile[0] != '\0' ? h->cafile : "the system store");
        goto out;
    }
    param = SSL_CTX_get0_param(c->ctx);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (inet_pton(AF_INET, h->host, addr) == 1 || inet_pton(AF_INET6, h->host, addr) == 1
            ? X509_VERIFY_PARAM_set1_ip_asc(param, h->host) != 1
            : X509_VERIFY_PARAM_set1_host(param, h->host, 0) != 1)
        goto out;
    r = 0;
out:
    if (r != 0 && err[0] == '\0')
        fail(err, errlen, r, "cannot set up TLS");
    ERR_clear_error();
    return r;
}

/*
 * Why a connection that was up ended before the CONNACK, when neither TLS nor
 * the socket says more: the likely listener mismatch.
 */
static const char *early_close_hint(const struct mq_conn *c, int rc, int e)
{
    bool dropped = rc == MOSQ_ERR_CONN_LOST || rc == MOSQ_ERR_NO_CONN ||
                   (rc == MOSQ_ERR_ERRNO && (e == ECONNRESET || e == EPIPE || e == EPROTO));

    /*
     * A reset, a broken pipe or a failed TLS read or write (EPROTO; even from
     * mosquitto_connect_async, which may finish the handshake and send
     * CONNECT) need a connection that was up.
     */
    bool up = c->tcp_up || (rc == MOSQ_ERR_ERRNO && (e == ECONNRESET || e == EPIPE || e == EPROTO));

    if (!dropped || c->connack >= 0 || !up)
        return "";
    return c->hub->tls ? " (not a TLS listener, or one that requires client certificates? the "
                         "connector logs in with a password)"
                       : " (a TLS listener? that needs mosquittos://)";
}

/* A libmosquitto failure (e: errno for MOSQ_ERR_ERRNO) as a code and a reason in err. */
static int conn_error(struct mq_conn *c, int rc, int e, char *err, size_t errlen)
{
    const char *ssl_why = strstr(c->last_error, "SSL routines::");
    const char *w = c->hub->where, *hint = early_close_hint(c, rc, e);

    c->broken = true;
    if (c->connack > 0)
        return fail(err, errlen,
                    c->connack == MQTT_RC_NOT_AUTHORIZED ||
                            c->connack == MQTT_RC_BAD_USERNAME_OR_PASSWORD
                        ? PROV_EAUTH
                        : PROV_EPROTO,
                    "broker %s refused the connection: %s", w, mosquitto_reason_string(c->connack));
    if (rc == MOSQ_ERR_NOMEM)
        return fail(err, errlen, PROV_ENOMEM, "out of memory");
    if (c->tls_why[0] != '\0')
        return fail(err, errlen, PROV_ETLS, "broker %s: %s", w, c->tls_why);
    if (ssl_why != NULL && rc != MOSQ_ERR_EAI)
        return fail(err, errlen, PROV_ETLS, "broker %s: TLS: %s", w,
                    ssl_why + strlen("SSL routines::"));
    if (rc == MOSQ_ERR_TLS || rc == MOSQ_ERR_TLS_HANDSHAKE)
        return fail(err, errlen, PROV_ETLS, "broker %s: TLS handshake failed", w);
    if (rc == MOSQ_ERR_EAI)
        return fail(err, errlen, PROV_EIO, "broker %s: cannot resolve the host name", w);
    if (rc == MOSQ_ERR_ERRNO && e == ENOTCONN)
        return fail(err, errlen, PROV_EIO, "broker %s: cannot connect (refused or unreachable)", w);
    if (rc == MOSQ_ERR_ERRNO && e == EPROTO)
        return fail(err, errlen, PROV_EIO, "broker %s: the TLS connection failed%s", w, hint);
    if (rc == MOSQ_ERR_ERRNO && e != 0)
        return fail(err, errlen, PROV_EIO, "broker %s: %s%s", w, strerror(e), hint);
    if (rc == MOSQ_ERR_CONN_LOST || rc == MOSQ_ERR_NO_CONN || rc == MOSQ_ERR_ERRNO)
        return fail(err, errlen, PROV_EIO, "broker %s closed the connection%s", w, hint);
    return fail(err, errlen, PROV_EIO, "broker %s: %s", w, mosquitto_strerror(rc));
}

/*
 * Before the CONNACK: notes whether the TCP connection was ever up, and on
 * POLLERR or POLLHUP reports the socket error (before a TLS write takes it).
 */
static int connect_check(struct mq_conn *c, short revents, char *err, size_t errlen)
{
    int fd = mosquitto_socket(c->m), soerr = 0;
    socklen_t len = sizeof(soerr), peerlen = sizeof(struct sockaddr_storage);
    struct sockaddr_storage peer;

    if (fd < 0)
        return conn_error(c, MOSQ_ERR_CONN_LOST, 0, err, errlen);
    if (!c->tcp_up && getpeername(fd, (struct sockaddr *)&peer, &peerlen) == 0)
        c->tcp_up = true;
    if ((revents & (POLLERR | POLLHUP)) != 0 &&
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr != 0)
        return conn_error(c, MOSQ_ERR_ERRNO, soerr, err, errlen);
    return 0;
}

/*
 * Before the CONNACK: a socket that failed or that the broker closed. In the
 * TLS handshake libmosquitto 2.0.11 would take it for "try again" until the
 * timeout, with poll() returning at once.
 */
static int connect_dead(struct mq_conn *c, short revents, char *err, size_t errlen)
{
    int fd = mosquitto_socket(c->m), r;
    ssize_t n;
    char b;

    if ((r = connect_check(c, revents, err, errlen)) != 0)
        return r;
    if ((revents & (POLLIN | POLLHUP | POLLERR)) == 0)
        return 0;
    n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)))
        return 0;
    if (n < 0 && errno != ENOTCONN)
        return conn_error(c, MOSQ_ERR_ERRNO, errno, err, errlen);
    /* the first TLS write took the connect error: the socket never got a peer */
    if (!c->tcp_up)
        return conn_error(c, MOSQ_ERR_ERRNO, ENOTCONN, err, errlen);
    return conn_error(c, MOSQ_ERR_CONN_LOST, 0, err, errlen);
}

/* One poll() of at most ms, then libmosquitto reads, writes and keeps alive. */
static int step(struct mq_conn *c, int ms, char *err, size_t errlen)
{
    struct pollfd p = {.fd = mosquitto_socket(c->m), .events = POLLIN};
    int n, rc, e;

    if (p.fd < 0)
        return conn_error(c, MOSQ_ERR_NO_CONN, 0, err, errlen);
    if (mosquitto_want_write(c->m))
        p.events |= POLLOUT;
    n = poll(&p, 1, ms);
    if (n < 0)
        return errno == EINTR ? 0 : conn_error(c, MOSQ_ERR_ERRNO, errno, err, errlen);
    if (n > 0) {
        int one = 1;

        /* ACK at once: the broker does not disable Nagle, so its next small packet waits for it */
        setsockopt(p.fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
        if (c->connack < 0 && (rc = connect_check(c, p.revents, err, errlen)) != 0)
            return rc;
        /* loop_read also drives the TLS handshake */
        errno = 0;
        rc = mosquitto_loop_read(c->m, 1);
        e = errno;
        if (rc == MOSQ_ERR_SUCCESS && mosquitto_socket(c->m) >= 0 && mosquitto_want_write(c->m)) {
            errno = 0;
            rc = mosquitto_loop_write(c->m, 1);
            e = errno;
        }
        if (rc != MOSQ_ERR_SUCCESS)
            return conn_error(c, rc, e, err, errlen);
        if (c->connack < 0 && (rc = connect_dead(c, p.revents, err, errlen)) != 0)
            return rc;
    }
    rc = mosquitto_loop_misc(c->m);
    return rc == MOSQ_ERR_SUCCESS ? 0 : conn_error(c, rc, errno, err, errlen);
}

static bool reached(const struct mq_conn *c, enum wait_for w)
{
    switch (w) {
    case W_CONNACK: return c->connack == 0;
    case W_SUBACK: return c->sub_rc >= 0;
    case W_PUBACK: return c->pub_rc >= 0;
    case W_ANSWER: return c->answer != NULL || c->malformed;
    }
    return false;
}

/* Runs the connection until w happened, for at most the step timeout. */
static int wait_for(struct mq_conn *c, enum wait_for w, const char *what, char *err, size_t errlen)
{
    int64_t deadline = now_ms() + c->hub->timeout_ms;
    int r;

    for (;;) {
        int64_t left = deadline - now_ms();

        if (c->connack > 0)
            return conn_error(c, MOSQ_ERR_CONN_REFUSED, 0, err, errlen);
        if (reached(c, w))
            return 0;
        if (left <= 0) {
            c->broken = true;
            return fail(err, errlen, PROV_ETIMEOUT, "broker %s: no %s within %d s", c->hub->where,
                        what, c->hub->timeout_ms / 1000);
        }
        if ((r = step(c, left > 1000 ? 1000 : (int)left, err, errlen)) != 0)
            return r;
    }
}

static void conn_free(struct mq_conn *c)
{
    if (c == NULL)
        return;
    if (c->m != NULL) {
        if (c->connack == 0 && mosquitto_socket(c->m) >= 0) {
            /* DISCONNECT goes out at once; what happens to it does not matter */
            mosquitto_disconnect(c->m);
            mosquitto_loop_write(c->m, 1);
        }
        mosquitto_destroy(c->m);
    }
    SSL_CTX_free(c->ctx);
    json_decref(c->answer);
    free(c);
    ERR_clear_error();
}

static int conn_setup(struct mq_conn *c, char *err, size_t errlen)
{
    const struct mq_hub *h = c->hub;
    uint8_t rnd[6];
    char id[32], hex[13];
    int rc;

    if (random_bytes(rnd, sizeof(rnd)) != 0)
        return fail(err, errlen, PROV_ECRYPTO, "no random bytes for the client id");
    hex_encode(rnd, sizeof(rnd), hex, false);
    snprintf(id, sizeof(id), "provd-hub-%s", hex);
    if ((c->m = mosquitto_new(id, true, c)) == NULL)
        return fail(err, errlen, PROV_ENOMEM, "out of memory");
    if (mosquitto_int_option(c->m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5) != 0)
        return fail(err, errlen, PROV_EINTERNAL, "libmosquitto refused MQTT 5");
    if (h->tls) {
        if ((rc = make_ssl_ctx(c, err, errlen)) != 0)
            return rc;
        /* our context as it is: without _WITH_DEFAULTS libmosquitto leaves it alone */
        if (mosquitto_int_option(c->m, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0) != 0 ||
            mosquitto_void_option(c->m, MOSQ_OPT_SSL_CTX, c->ctx) != 0)
            return fail(err, errlen, PROV_EINTERNAL, "libmosquitto refused the TLS context");
    }
    if (mosquitto_username_pw_set(c->m, h->user, h->password) != MOSQ_ERR_SUCCESS)
        return fail(err, errlen, PROV_ENOMEM, "out of memory");
    mosquitto_log_callback_set(c->m, on_log);
    mosquitto_connect_v5_callback_set(c->m, on_connect);
    mosquitto_subscribe_v5_callback_set(c->m, on_subscribe);
    mosquitto_publish_v5_callback_set(c->m, on_publish);
    mosquitto_message_v5_callback_set(c->m, on_message);
    return 0;
}

/* A new connection (TCP, TLS, CONNECT), subscribed to the dynsec responses. */
static int conn_new(const struct mq_hub *h, struct mq_conn **out, char *err, size_t errlen)
{
    struct mq_conn *c;
    int rc, r;

    *out = NULL;
    pthread_once(&init_once, init_mosquitto);
    if (init_rc != MOSQ_ERR_SUCCESS)
        return fail(err, errlen, PROV_EINTERNAL, "mosquitto_lib_init failed");
    if ((c = calloc(1, sizeof(*c))) == NULL)
        return fail(err, errlen, PROV_ENOMEM, "out of memory");
    c->hub = h;
    c->connack = c->sub_rc = c->pub_rc = -1;
    if ((r = conn_setup(c, err, errlen)) != 0)
        goto out;
    errno = 0;
    rc = mosquitto_connect_async(c->m, h->host, h->port, KEEPALIVE_S);
    if (rc != MOSQ_ERR_SUCCESS) {
        r = conn_error(c, rc, errno, err, errlen);
        goto out;
    }
    if ((r = connect_check(c, 0, err, errlen)) != 0 ||
        (r = wait_for(c, W_CONNACK, "CONNACK", err, errlen)) != 0)
        goto out;
    rc = mosquitto_subscribe_v5(c->m, &c->sub_mid, RESPONSE_TOPIC, 1, 0, NULL);
    if (rc != MOSQ_ERR_SUCCESS) {
        r = conn_error(c, rc, errno, err, errlen);
        goto out;
    }
    if ((r = wait_for(c, W_SUBACK, "SUBACK", err, errlen)) != 0)
        goto out;
    if (c->sub_rc >= MQTT_RC_UNSPECIFIED)
        r = fail(err, errlen, PROV_EAUTH,
                 "broker %s refused the subscription to " RESPONSE_TOPIC
                 ": %s (the user needs the dynsec admin role)",
                 h->where, mosquitto_reason_string(c->sub_rc));
out:
    if (r != 0)
        conn_free(c);
    else
        *out = c;
    return r;
}

/*
 * Reads what reached an idle connection: every admin connection receives
 * every dynsec response, also those of other calls. false: it is gone.
 */
static bool conn_revive(struct mq_conn *c)
{
    char why[200];

    for (int i = 0; i < 1000; i++) {
        struct pollfd p = {.fd = mosquitto_socket(c->m), .events = POLLIN};

        if (p.fd < 0 || poll(&p, 1, 0) < 0)
            return false;
        if (p.revents == 0)
            return true;
        if (step(c, 0, why, sizeof(why)) != 0)
            return false;
    }
    return false;
}

/* An idle connection from the pool (*reused) or a new one. */
static int conn_get(struct mq_hub *h, struct mq_conn **out, bool *reused, char *err, size_t errlen)
{
    struct mq_conn *c;

    *reused = false;
    for (;;) {
        pthread_mutex_lock(&h->lock);
        c = h->nidle > 0 ? h->idle[--h->nidle] : NULL;
        pthread_mutex_unlock(&h->lock);
        if (c == NULL)
            return conn_new(h, out, err, errlen);
        if (now_ms() - c->idle_since < IDLE_MAX_MS && conn_revive(c)) {
            *out = c;
            *reused = true;
            return 0;
        }
        conn_free(c);
    }
}

/* Back to the pool when it is sound and there is room, else closed. */
static void conn_put(struct mq_hub *h, struct mq_conn *c)
{
    if (c == NULL)
        return;
    if (!c->broken && mosquitto_socket(c->m) >= 0) {
        json_decref(c->answer);
        c->answer = NULL;
        c->malformed = false;
        c->corr[0] = '\0';
        c->idle_since = now_ms();
        pthread_mutex_lock(&h->lock);
        if (h->nidle < POOL_MAX) {
            h->idle[h->nidle++] = c;
            c = NULL;
        }
        pthread_mutex_unlock(&h->lock);
    }
    conn_free(c);
}

/* Publishes; for QoS 1 waits for the PUBACK, which must not refuse it. */
static int conn_publish(struct mq_conn *c, const char *topic, const char *payload, int qos,
                        bool retain, char *err, size_t errlen)
{
    int rc, r;

    c->pub_rc = -1;
    rc = mosquitto_publish_v5(c->m, &c->pub_mid, topic, (int)strlen(payload), payload, qos, retain,
                              NULL);
    if (rc != MOSQ_ERR_SUCCESS)
        return conn_error(c, rc, errno, err, errlen);
    if (qos == 0)
        return 0; /* written by the next step */
    if ((r = wait_for(c, W_PUBACK, "PUBACK", err, errlen)) != 0)
        return r;
    if (c->pub_rc >= MQTT_RC_UNSPECIFIED)
        return fail(err, errlen, PROV_EAUTH, "broker %s refused the publication to %s: %s",
                    c->hub->where, topic, mosquitto_reason_string(c->pub_rc));
    return 0;
}

/*
 * Sends the dynsec commands (an array; each gets correlationData PREFIX-i)
 * and returns their responses, checked to be one per command in order.
 * password, when not NULL, replaces PW_PLACEHOLDER in the request text.
 */
static int dynsec(struct mq_conn *c, json_t *cmds, const char *password, json_t **out, char *err,
                  size_t errlen)
{
    uint8_t rnd[8];
    char hex[17], corr[64];
    json_t *req;
    char *text = NULL, *pw;
    size_t i;
    int r;

    *out = NULL;
    if (random_bytes(rnd, sizeof(rnd)) != 0)
        return fail(err, errlen, PROV_ECRYPTO, "no random bytes for the correlation data");
    hex_encode(rnd, sizeof(rnd), hex, false);
    snprintf(c->corr, sizeof(c->corr), "provd-%s-", hex);
    for (i = 0; i < json_array_size(cmds); i++) {
        snprintf(corr, sizeof(corr), "%s%zu", c->corr, i);
        json_object_set_new(json_array_get(cmds, i), "correlationData", json_string(corr));
    }
    req = json_pack("{s:O}", "commands", cmds);
    text = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (text == NULL)
        return fail(err, errlen, PROV_ENOMEM, "out of memory");
    if (password != NULL) {
        if ((pw = strstr(text, "\"password\":\"" PW_PLACEHOLDER "\"")) == NULL ||
            strlen(password) != PW_LEN) {
            free(text);
            return fail(err, errlen, PROV_EINTERNAL, "password placeholder missing");
        }
        memcpy(pw + strlen("\"password\":\""), password, PW_LEN);
    }
    json_decref(c->answer);
    c->answer = NULL;
    c->malformed = false;
    c->ncmds = json_array_size(cmds);
    r = conn_publish(c, CONTROL_TOPIC, text, 0, false, err, errlen);
    prov_freezero(text, strlen(text));
    if (r == 0)
        r = wait_for(c, W_ANSWER, "dynsec response (may the user publish to " CONTROL_TOPIC "?)",
                     err, errlen);
    if (r == 0 && c->malformed)
        r = fail(err, errlen, PROV_EPROTO, "broker %s: malformed dynsec response", c->hub->where);
    c->corr[0] = '\0';
    c->malformed = false;
    if (r == 0) {
        *out = c->answer;
        c->answer = NULL;
    }
    return r;
}

/* The error of response i, or NULL when it succeeded. */
static const char *resp_error(json_t *resp, size_t i)
{
    return json_string_value(json_object_get(json_array_get(resp, i), "error"));
}

static json_t *cmd_user(const char *command, const char *id)
{
    return json_pack("{s:s, s:s}", "command", command, "username", id);
}

static json_t *cmd_role(const char *command, const char *role)
{
    return json_pack("{s:s, s:s}", "command", command, "rolename", role);
}

/* createRole with the four ACLs of devices/D/#. */
static json_t *cmd_create_role(const char *role, const char *id)
{
    static const char *const types[] = {"publishClientSend", "publishClientReceive",
                                        "subscribePattern", "unsubscribePattern"};
    char topic[MAX_DEVICE_ID + 16];
    json_t *acls = json_array();

    snprintf(topic, sizeof(topic), "devices/%s/#", id);
    for (size_t i = 0; acls != NULL && i < sizeof(types) / sizeof(types[0]); i++)
        json_array_append_new(
            acls, json_pack("{s:s, s:s, s:b}", "acltype", types[i], "topic", topic, "allow", 1));
    return json_pack("{s:s, s:s, s:s, s:o}", "command", "createRole", "rolename", role, "textname",
                     ROLE_TEXTNAME, "acls", acls);
}

static json_t *cmd_create_client(const char *id, const char *role, bool with_password)
{
    json_t *cmd =
        json_pack("{s:s, s:s, s:s, s:s, s:[{s:s}]}", "command", "createClient", "username", id,
                  "clientid", id, "textname", CLIENT_TEXTNAME, "roles", "rolename", role);

    if (cmd != NULL && with_password)
        json_object_set_new(cmd, "password", json_string(PW_PLACEHOLDER));
    return cmd;
}

/* ---- provision / deprovision ---------------------------------------------- */

/* Device ids become user names, role names and a topic level: no MQTT wildcards. */
static int check_id(const struct mq_hub *h, const char *id, char *err, size_t errlen)
{
    size_t len = id != NULL ? strlen(id) : 0;

    if (len == 0 || len > MAX_DEVICE_ID || strpbrk(id, "+#/") != NULL)
        return fail(err, errlen, PROV_EINVAL,
                    "device id '%.*s' cannot be placed in an MQTT broker (1..%d characters, no "
                    "+ # /)",
                    (int)(len > MAX_DEVICE_ID ? MAX_DEVICE_ID : len), id ? id : "", MAX_DEVICE_ID);
    if (strcmp(id, h->user) == 0)
        return fail(err, errlen, PROV_EINVAL,
                    "device id '%s' is the connector's own broker user name", id);
    return 0;
}

/*
 * Whether client id exists at the broker and provd made it (its textname).
 * 0 (exists / ours set), or a failure.
 */
static int lookup_client(struct mq_conn *c, const char *id, bool *exists, bool *ours, char *err,
                         size_t errlen)
{
    json_t *cmds = json_pack("[o]", cmd_user("getClient", id)), *resp = NULL;
    const char *e, *textname;
    int r;

    if (cmds == NULL)
        return fail(err, errlen, PROV_ENOMEM, "out of memory");
    r = dynsec(c, cmds, NULL, &resp, err, errlen);
    json_decref(cmds);
    if (r != 0)
        return r;
    e = resp_error(resp, 0);
    *exists = e == NULL;
    textname = json_string_value(json_object_get(
        json_object_get(json_object_get(json_array_get(resp, 0), "data"), "client"), "textname"));
    *ours = *exists && textname != NULL && strcmp(textname, CLIENT_TEXTNAME) == 0;
    if (e != NULL && strcmp(e, "Client not found") != 0)
        r = fail(err, errlen, PROV_EPROTO, "broker %s: getClient: %s", c->hub->where, e);
    json_decref(resp);
    return r;
}

/* deleteClient (when del_client) and deleteRole; "not found" is fine. */
static int remove_identity(struct mq_conn *c, const char *id, const char *role, bool del_client,
                           char *err, size_t errlen)
{
    json_t *cmds = json_array(), *resp = NULL;
    const char *e;
    int r;

    if (cmds == NULL || (del_client && json_array_append_new(cmds, cmd_user("deleteClient", id))) ||
        json_array_append_new(cmds, cmd_role("deleteRole", role)) != 0) {
        json_decref(cmds);
        return fail(err, errlen, PROV_ENOMEM, "out of memory");
    }
    r = dynsec(c, cmds, NULL, &resp, err, errlen);
    for (size_t i = 0; r == 0 && i < json_array_size(resp); i++) {
        e = resp_error(resp, i);
        if (e != NULL && strcmp(e, "Client not found") != 0 && strcmp(e, "Role not found") != 0)
            r = fail(err, errlen, PROV_EPROTO, "broker %s: %s: %s", c->hub->where,
                     json_string_value(json_object_get(json_array_get(resp, i), "command")), e);
    }
    json_decref(cmds);
    json_decref(resp);
    return r;
}

/* [deleteClient,] deleteRole, createRole, createClient in one request. */
static int create_identity(struct mq_conn *c, const char *id, const char *role,
                           const char *password, bool replace, char *err, size_t errlen)
{
    json_t *cmds = json_array(), *resp = NULL;
    size_t first = replace ? 2 : 1; /* the first create */
    const char *e;
    int r;

    if (cmds == NULL || (replace && json_array_append_new(cmds, cmd_user("deleteClient", id))) ||
        json_array_append_new(cmds, cmd_role("deleteRole", role)) ||
        json_array_append_new(cmds, cmd_create_role(role, id)) ||
        json_array_append_new(cmds, cmd_create_client(id, role, password != NULL)) != 0) {
        json_decref(cmds);
        return fail(err, errlen, PROV_ENOMEM, "out of memory");
    }
    r = dynsec(c, cmds, password, &resp, err, errlen);
    for (size_t i = 0; r == 0 && i < json_array_size(resp); i++) {
        e = resp_error(resp, i);
        if (e != NULL && (i >= first || strcmp(e, "Role not found") != 0))
            r = fail(err, errlen, PROV_EPROTO, "broker %s: %s: %s", c->hub->where,
                     json_string_value(json_object_get(json_array_get(resp, i), "command")), e);
    }
    json_decref(cmds);
    json_decref(resp);
    return r;
}

/*
 * The retained twin: the desired properties when there are any, else an
 * empty message (clears an old one). twin NULL: nothing to do.
 */
static int publish_twin(struct mq_conn *c, const char *id, const json_t *twin, char *err,
                        size_t errlen)
{
    const json_t *desired = json_object_get(json_object_get(twin, "properties"), "desired");
    char topic[MAX_DEVICE_ID + 32];
    char *text = NULL;
    int r;

    if (twin == NULL)
        return 0;
    snprintf(topic, sizeof(topic), "devices/%s/twin/desired", id);
    if (json_is_object(desired) && json_object_size(desired) > 0 &&
        (text = json_dumps(desired, JSON_COMPACT)) == NULL)
        return fail(err, errlen, PROV_ENOMEM, "out of memory");
    r = conn_publish(c, topic, text != NULL ? text : "", 1, true, err, errlen);
    free(text);
    return r;
}

/* Best effort after a failure: what this call created goes again. */
static void undo(struct mq_hub *h, struct mq_conn *c, const char *id, const char *role)
{
    struct mq_conn *fresh = NULL;
    char why[200];

    if (c == NULL || c->broken) {
        if (conn_new(h, &fresh, why, sizeof(why)) != 0) {
            plog(LOG_ERROR, "%s: cannot remove the half-made identity of '%s': %s", h->where, id,
                 why);
            return;
        }
        c = fresh;
    }
    if (remove_identity(c, id, role, true, why, sizeof(why)) != 0)
        plog(LOG_ERROR, "%s: cannot remove the half-made identity of '%s': %s", h->where, id, why);
    conn_put(h, fresh);
}

/*
 * A connection and the lookup of client id. A pooled connection that the
 * broker dropped meanwhile (a restart) is replaced once: the lookup changes
 * nothing, so it can be repeated.
 */
static int begin(struct mq_hub *h, const char *id, struct mq_conn **c, bool *exists, bool *ours,
                 char *err, size_t errlen)
{
    bool reused;
    int r;

    if ((r = conn_get(h, c, &reused, err, errlen)) != 0)
        return r;
    r = lookup_client(*c, id, exists, ours, err, errlen);
    if (r != 0 && reused && (*c)->broken) {
        plog(LOG_DEBUG, "%s: a pooled connection failed (%s), trying a new one", h->where, err);
        conn_free(*c);
        if ((r = conn_new(h, c, err, errlen)) == 0)
            r = lookup_client(*c, id, exists, ours, err, errlen);
    }
    return r;
}

static int mq_provision(void *state, const char *hostname, const struct hub_device *dev, char *err,
                        size_t errlen)
{
    struct mq_hub *h = state;
    const char *id = dev->device_id;
    bool keyed = dev->attestation != NULL && (strcmp(dev->attestation, "symmetricKey") == 0 ||
                                              strcmp(dev->attestation, "tpm") == 0);
    bool exists = false, ours = false, created = false;
    char role[sizeof(ROLE_PREFIX) + MAX_DEVICE_ID];
    char password[PW_LEN + 1] = "";
    struct mq_conn *c = NULL;
    int64_t t0 = now_ms();
    int r;

    err[0] = '\0';
    if ((r = check_id(h, id, err, errlen)) != 0)
        return r;
    if (!keyed && (dev->attestation == NULL || strcmp(dev->attestation, "x509") != 0))
        return fail(err, errlen, PROV_EINVAL, "unknown attestation '%s'",
                    dev->attestation ? dev->attestation : "(none)");
    if (keyed && (dev->key == NULL || dev->key_len == 0))
        return fail(err, errlen, PROV_EINVAL, "no device key for the broker password");
    if (keyed && hub_password_derive(dev->key, dev->key_len, id, password) != 0)
        return fail(err, errlen, PROV_ECRYPTO, "cannot derive the broker password");
    snprintf(role, sizeof(role), ROLE_PREFIX "%s", id);
    if ((r = begin(h, id, &c, &exists, &ours, err, errlen)) != 0)
        goto out;
    if (exists && !ours) {
        r = fail(err, errlen, PROV_EEXISTS,
                 "broker %s already has a client '%s' that provd did not create", h->where, id);
        goto out;
    }
    created = true; /* from here on a failure removes client and role */
    if ((r = create_identity(c, id, role, keyed ? password : NULL, exists, err, errlen)) != 0 ||
        (r = publish_twin(c, id, dev->initial_twin, err, errlen)) != 0)
        goto out;
    plog(LOG_INFO, "hub %s: device '%s' %s at %s (%s, %lld ms)", hostname, id,
         exists ? "replaced" : "created", h->where, keyed ? "password" : "certificate identity",
         (long long)(now_ms() - t0));
out:
    if (r != 0 && created)
        undo(h, c, id, role);
    conn_put(h, c);
    prov_cleanse(password, sizeof(password));
    return r;
}

static int mq_deprovision(void *state, const char *hostname, const char *device_id, char *err,
                          size_t errlen)
{
    struct mq_hub *h = state;
    char role[sizeof(ROLE_PREFIX) + MAX_DEVICE_ID];
    bool exists = false, ours = false;
    struct mq_conn *c = NULL;
    json_t *clear;
    int r;

    err[0] = '\0';
    if ((r = check_id(h, device_id, err, errlen)) != 0)
        return r;
    snprintf(role, sizeof(role), ROLE_PREFIX "%s", device_id);
    if ((r = begin(h, device_id, &c, &exists, &ours, err, errlen)) != 0)
        goto out;
    if (exists && !ours)
        plog(LOG_WARN, "hub %s: client '%s' at %s was not created by provd: left alone", hostname,
             device_id, h->where);
    if ((r = remove_identity(c, device_id, role, ours, err, errlen)) != 0)
        goto out;
    /* an empty twin document: the retained message is cleared */
    clear = json_object();
    r = clear != NULL ? publish_twin(c, device_id, clear, err, errlen)
                      : fail(err, errlen, PROV_ENOMEM, "out of memory");
    json_decref(clear);
    if (r == 0)
        plog(LOG_INFO, "hub %s: device '%s' removed from %s", hostname, device_id, h->where);
out:
    conn_put(h, c);
    return r;
}

static int mq_open(const char *url, void **state, char *err, size_t errlen)
{
    struct mq_hub *h = calloc(1, sizeof(*h));
    int r;

    *state = NULL;
    if (h == NULL)
        return fail(err, errlen, PROV_ENOMEM, "out of memory");
    if ((r = parse_url(h, url, err, errlen)) != 0) {
        prov_freezero(h, sizeof(*h));
        return r == PROV_ENOMEM ? r : PROV_EINVAL;
    }
    pthread_mutex_init(&h->lock, NULL);
    *state = h;
    return 0;
}

static void mq_close(void *state)
{
    struct mq_hub *h = state;

    if (h == NULL)
        return;
    while (h->nidle > 0)
        conn_free(h->idle[--h->nidle]);
    pthread_mutex_destroy(&h->lock);
    prov_freezero(h, sizeof(*h));
}

const struct hub_connector_ops hub_mosquitto_ops = {
    .name = "mosquitto",
    .open = mq_open,
    .provision = mq_provision,
    .deprovision = mq_deprovision,
    .close = mq_close,
};
