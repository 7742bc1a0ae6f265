/*
 * Registration over MQTT 3.1.1 on TLS (device protocol §6), on libmosquitto.
 *
 * One connection per prov_register call, driven by mosquitto_loop() in this
 * thread (no libmosquitto threads): CONNECT (client id = registration id,
 * user name with the scope and api-version, password = SAS token or none for
 * X.509), SUBSCRIBE $dps/registrations/res/#, then one QoS 1 PUBLISH per
 * request, each with its own $rid; the answer is the response PUBLISH whose
 * topic carries that $rid. The callbacks only record what arrived; the loop
 * below decides. The TLS context is our own (MOSQ_OPT_SSL_CTX): TLS 1.2 at
 * least, the CA file or the system store, OpenSSL's host name or IP check,
 * and the X.509 certificate chain and key.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#include <mosquitto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "../common/limits.h"
#include "../common/util.h"
#include "lib.h"

#ifndef PROV_LIB_VERSION
#define PROV_LIB_VERSION "unknown"
#endif

#define RES_PREFIX "$dps/registrations/res/"
#define RES_FILTER "$dps/registrations/res/#"
#define REGISTER_TOPIC "$dps/registrations/PUT/iotdps-register/?$rid="
#define POLL_TOPIC "$dps/registrations/GET/iotdps-get-operationstatus/?$rid="

/* One registration's connection and what its callbacks saw. */
struct mq {
    struct lib_reg *g;
    struct mosquitto *m;
    int connack;           /* CONNACK return code; -1 before it arrives */
    int sub_mid;
    bool subscribed;       /* SUBACK for sub_mid arrived */
    bool sub_refused;      /* ... with the failure code 0x80 */
    unsigned int rid_next; /* $rid values are 1, 2, 3, ... per connection */
    char rid[16];          /* $rid of the request in flight; "" when none */
    /* the answer to that request */
    bool answered;
    int status;
    char retry[48];        /* retry-after value as sent (truncated), "" when absent */
    bool has_retry;
    char *body;
    size_t len;
    /* failures the callbacks noticed */
    int failure;           /* negative PROV_E* code, or 0 */
    char why[256];         /* its reason, for the log */
    char tls_why[160];     /* the server certificate check that failed */
    char last_error[256];  /* libmosquitto's last error log line */
};

/* ---- process-wide set-up ---- */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_rc;

static void init_mosquitto(void)
{
    init_rc = mosquitto_lib_init();
}

/*
 * SIGPIPE: libmosquitto writes to its TLS socket with write(), so a server
 * that closed the connection would kill the process. The signal is blocked in
 * this thread while libmosquitto works; one it raised is then discarded, so
 * the application's own handling is untouched.
 */
struct sigpipe_guard {
    sigset_t old_mask;
    bool was_pending;
};

static void sigpipe_block(struct sigpipe_guard *sg)
{
    sigset_t pipe_set, pending;

    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &sg->old_mask);
    sigemptyset(&pending);
    sigpending(&pending);
    sg->was_pending = sigismember(&pending, SIGPIPE) == 1;
}

static void sigpipe_restore(struct sigpipe_guard *sg)
{
    sigset_t pipe_set, pending;
    struct timespec zero = {0, 0};

    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigemptyset(&pending);
    sigpending(&pending);
    if (!sg->was_pending && sigismember(&pending, SIGPIPE) == 1) {
        while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
            continue;
    }
    pthread_sigmask(SIG_SETMASK, &sg->old_mask, NULL);
}

/*
 * mosquitto_new() sets SIGPIPE to SIG_IGN for the whole process: undo that.
 * The lock keeps two registrations in other threads from saving each other's
 * SIG_IGN as the disposition to restore.
 */
static pthread_mutex_t new_lock = PTHREAD_MUTEX_INITIALIZER;

static struct mosquitto *new_mosquitto(const char *id, struct mq *q)
{
    struct sigaction old;
    struct mosquitto *m;
    bool saved;
    int err;

    pthread_mutex_lock(&new_lock);
    saved = sigaction(SIGPIPE, NULL, &old) == 0;
    m = mosquitto_new(id, true, q);
    err = errno;
    if (saved)
        sigaction(SIGPIPE, &old, NULL);
    pthread_mutex_unlock(&new_lock);
    errno = err;
    return m;
}

/* ---- callbacks: record only ---- */

static void on_log(struct mosquitto *m, void *arg, int level, const char *text)
{
    struct mq *q = arg;

    (void)m;
    if (level == MOSQ_LOG_ERR)
        snprintf(q->last_error, sizeof(q->last_error), "%s", text);
    /* libmosquitto logs packets and their topics, never the password */
    lib_log(PROV_LOG_DEBUG, "mosquitto: %s", text);
}

static void on_connect(struct mosquitto *m, void *arg, int rc)
{
    struct mq *q = arg;

    (void)m;
    q->connack = rc;
}

static void on_subscribe(struct mosquitto *m, void *arg, int mid, int count, const int *granted)
{
    struct mq *q = arg;

    (void)m;
    if (mid != q->sub_mid)
        return;
    q->subscribed = true;
    q->sub_refused = count < 1 || granted[0] == 0x80;
}

static void set_failure(struct mq *q, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_failure(struct mq *q, int code, const char *fmt, ...)
{
    va_list ap;

    if (q->failure != 0)
        return;
    q->failure = code;
    va_start(ap, fmt);
    vsnprintf(q->why, sizeof(q->why), fmt, ap);
    va_end(ap);
}

/* A topic or $rid for the log: printable ASCII, at most 120 characters. */
static void printable(const char *s, size_t len, char *out, size_t outlen)
{
    size_t i;

    for (i = 0; i < len && i + 1 < outlen && i < 120; i++)
        out[i] = s[i] > 0x20 && s[i] < 0x7f ? s[i] : '?';
    out[i] = '\0';
}

struct res_topic {
    int status;
    const char *rid;
    size_t rid_len;
    const char *retry; /* NULL when absent */
    size_t retry_len;
};

/*
 * Parses $dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]
 * (device protocol §6.2, §6.3): a three-digit status, then name=value pairs
 * separated by '&', each name at most once, $rid present and not empty. Other
 * names are ignored. 0, or -1 when the topic is not of that form.
 */
static int parse_res_topic(const char *topic, struct res_topic *t)
{
    const char *p = topic + strlen(RES_PREFIX);

    memset(t, 0, sizeof(*t));
    if (strncmp(topic, RES_PREFIX, strlen(RES_PREFIX)) != 0)
        return -1;
    if (p[0] < '1' || p[0] > '5' || p[1] < '0' || p[1] > '9' || p[2] < '0' || p[2] > '9' ||
        p[3] != '/' || p[4] != '?')
        return -1;
    t->status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
    p += 5;
    for (;;) {
        const char *end = strchr(p, '&');
        const char *eq;
        size_t plen = end != NULL ? (size_t)(end - p) : strlen(p);

        eq = memchr(p, '=', plen);
        if (eq == NULL || eq == p)
            return -1;
        if ((size_t)(eq - p) == 4 && memcmp(p, "$rid", 4) == 0) {
            if (t->rid != NULL)
                return -1;
            t->rid = eq + 1;
            t->rid_len = plen - 5;
        } else if ((size_t)(eq - p) == 11 && memcmp(p, "retry-after", 11) == 0) {
            if (t->retry != NULL)
                return -1;
            t->retry = eq + 1;
            t->retry_len = plen - 12;
        }
        if (end == NULL)
            break;
        p = end + 1;
    }
    return t->rid != NULL && t->rid_len > 0 ? 0 : -1;
}

static void on_message(struct mosquitto *m, void *arg, const struct mosquitto_message *msg)
{
    struct mq *q = arg;
    struct res_topic t;
    char shown[128];
    size_t len = msg->payloadlen > 0 ? (size_t)msg->payloadlen : 0;

    (void)m;
    if (msg->topic == NULL || parse_res_topic(msg->topic, &t) != 0) {
        printable(msg->topic ? msg->topic : "", msg->topic ? strlen(msg->topic) : 0, shown,
                  sizeof(shown));
        set_failure(q, PROV_EPROTO, "malformed response topic '%s': expected "
                    RES_PREFIX "{status}/?$rid={rid}[&retry-after={seconds}]", shown);
        return;
    }
    if (q->rid[0] == '\0' || q->answered || t.rid_len != strlen(q->rid) ||
        memcmp(t.rid, q->rid, t.rid_len) != 0) {
        printable(t.rid, t.rid_len, shown, sizeof(shown));
        lib_log(PROV_LOG_DEBUG, "ignoring an answer to $rid=%s (waiting for %s)", shown,
                q->rid[0] ? q->rid : "none");
        return;
    }
    if (len > PROV_MAX_BODY) {
        set_failure(q, PROV_EPROTO, "answer too large: over %d bytes", PROV_MAX_BODY);
        return;
    }
    if ((q->body = malloc(len + 1)) == NULL) {
        set_failure(q, PROV_ENOMEM, "out of memory");
        return;
    }
    if (len > 0)
        memcpy(q->body, msg->payload, len);
    q->body[len] = '\0';
    q->len = len;
    q->status = t.status;
    q->has_retry = t.retry != NULL;
    if (t.retry != NULL)
        snprintf(q->retry, sizeof(q->retry), "%.*s", (int)(t.retry_len < 40 ? t.retry_len : 40),
                 t.retry);
    q->answered = true;
}

/* ---- TLS ---- */

/* Notes why OpenSSL refused the server's certificate, for the error message. */
static int verify_cb(int ok, X509_STORE_CTX *store)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct mq *q = ssl != NULL ? SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)) : NULL;

    if (!ok && q != NULL && q->tls_why[0] == '\0')
        snprintf(q->tls_why, sizeof(q->tls_why), "server certificate verification failed: %s",
                 X509_verify_cert_error_string(X509_STORE_CTX_get_error(store)));
    return ok;
}

static const char *ssl_error(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    const char *why = e != 0 ? ERR_reason_error_string(e) : NULL;

    snprintf(buf, len, "%s", why != NULL ? why : "unknown error");
    ERR_clear_error();
    return buf;
}

/*
 * The client's TLS context: TLS 1.2 or later, the server verified against
 * ca_file (or the system store) and host name (a DNS name or an IP literal),
 * and for X.509 the certificate file (leaf and intermediates, all sent) with
 * its key. The caller frees it with SSL_CTX_free.
 */
static int make_ssl_ctx(const struct prov_client *c, const char *name, struct mq *q,
                        SSL_CTX **out)
{
    unsigned char addr[16];
    char why[160];
    X509_VERIFY_PARAM *param;
    SSL_CTX *ctx;
    int r = PROV_ETLS;

    *out = NULL;
    ERR_clear_error();
    if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL)
        return PROV_ENOMEM;
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
        goto out;
    SSL_CTX_set_app_data(ctx, q);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_cb);
    if (c->ca_file != NULL ? SSL_CTX_load_verify_file(ctx, c->ca_file) != 1
                           : SSL_CTX_set_default_verify_paths(ctx) != 1) {
        lib_log(PROV_LOG_ERROR, "cannot load the CA certificates from '%s': %s",
                c->ca_file ? c->ca_file : "the system store", ssl_error(why, sizeof(why)));
        goto out;
    }
    param = SSL_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1) {
        if (X509_VERIFY_PARAM_set1_ip_asc(param, name) != 1)
            goto out;
    } else if (X509_VERIFY_PARAM_set1_host(param, name, 0) != 1) {
        goto out;
    }
    if (c->cred == LIB_CRED_X509) {
        if (SSL_CTX_use_certificate_chain_file(ctx, c->cert_file) != 1) {
            lib_log(PROV_LOG_ERROR, "cannot use the certificate file '%s': %s", c->cert_file,
                    ssl_error(why, sizeof(why)));
            goto out;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, c->key_file, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(ctx) != 1) {
            lib_log(PROV_LOG_ERROR, "cannot use the private key file '%s': %s", c->key_file,
                    ssl_error(why, sizeof(why)));
            goto out;
        }
    }
    *out = ctx;
    ctx = NULL; /* transferred */
    r = 0;
out:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return r;
}

/* ---- the connection ---- */

/*
 * The user name of device protocol §6.1. The registration id goes in as it is
 * (its characters need no encoding; the SDKs do not encode it either); the
 * scope is percent-encoded, which leaves a DPS scope ("0ne" and hex digits)
 * unchanged and keeps a custom one with '/' or '&' from breaking the name.
 * Caller frees with free(); NULL when out of memory.
 */
static char *make_username(const struct prov_client *c)
{
    char *scope = url_encode_alloc(c->id_scope);
    char *u = NULL;

    if (scope != NULL &&
        asprintf(&u, "%s/registrations/%s/api-version=" PROV_MQTT_API_VERSION
                 "&ClientVersion=libprov%%2F" PROV_LIB_VERSION, scope, c->registration_id) < 0)
        u = NULL;
    free(scope);
    return u;
}

/*
 * A libmosquitto error code (err: errno for MOSQ_ERR_ERRNO) as a PROV_E* code,
 * logged with the best reason known: the server certificate check, the TLS
 * error libmosquitto logged (a TLS alert from the server), errno, or the code.
 */
static int map_mosq_error(struct mq *q, int rc, int err, const char *doing)
{
    const struct prov_client *c = q->g->c;
    const char *ssl_why = strstr(q->last_error, "SSL routines::");
    char why[320];
    bool hint;
    int r = PROV_EIO;

    if (rc == MOSQ_ERR_NOMEM) {
        r = PROV_ENOMEM;
        snprintf(why, sizeof(why), "out of memory");
    } else if (q->tls_why[0] != '\0') {
        r = PROV_ETLS;
        snprintf(why, sizeof(why), "%s", q->tls_why);
    } else if (ssl_why != NULL && (rc == MOSQ_ERR_TLS || rc == MOSQ_ERR_TLS_HANDSHAKE ||
                                   rc == MOSQ_ERR_ERRNO || rc == MOSQ_ERR_CONN_LOST)) {
        /* e.g. "tlsv13 alert certificate required": the server's TLS alert says why */
        r = PROV_ETLS;
        snprintf(why, sizeof(why), "TLS: %s", ssl_why + strlen("SSL routines::"));
    } else if (rc == MOSQ_ERR_TLS || rc == MOSQ_ERR_TLS_HANDSHAKE) {
        r = PROV_ETLS;
        snprintf(why, sizeof(why), "TLS handshake failed");
    } else if (rc == MOSQ_ERR_ERRNO && err == EPROTO) {
        /* libmosquitto's errno for any failed TLS read or write; no TLS error: a reset */
        snprintf(why, sizeof(why), "the TLS connection failed (reset by the server?)");
    } else if (rc == MOSQ_ERR_ERRNO) {
        snprintf(why, sizeof(why), "%s", strerror(err));
    } else if (rc == MOSQ_ERR_CONN_LOST) {
        snprintf(why, sizeof(why), "the server closed the connection");
    } else if (rc == MOSQ_ERR_PROTOCOL || rc == MOSQ_ERR_MALFORMED_PACKET ||
               rc == MOSQ_ERR_MALFORMED_UTF8 || rc == MOSQ_ERR_PAYLOAD_SIZE) {
        r = PROV_EPROTO;
        snprintf(why, sizeof(why), "%s", mosquitto_strerror(rc));
    } else {
        snprintf(why, sizeof(why), "%s", mosquitto_strerror(rc));
    }
    /* with TLS 1.3 a refused client certificate may look like a dropped connection */
    hint = r == PROV_EIO && q->connack < 0 && c->cred == LIB_CRED_X509 &&
           (rc == MOSQ_ERR_CONN_LOST || err == ECONNRESET || err == EPIPE || err == EPROTO);
    lib_log(PROV_LOG_ERROR, "%s '%s' failed: %s%s", doing, c->host, why,
            hint ? " (the server may have refused the client certificate)" : "");
    return r;
}

/* A refused CONNACK (MQTT 3.1.1 return codes 1..5) as a PROV_E* code. */
static int connack_error(struct mq *q)
{
    int r;

    switch (q->connack) {
    case 4: /* bad user name or password */
    case 5: /* not authorised */
        r = PROV_EAUTH;
        break;
    case 3: /* server unavailable */
        r = PROV_EAGAIN;
        break;
    default: /* 1 protocol version, 2 identifier rejected, or not MQTT 3.1.1 */
        r = PROV_EPROTO;
        break;
    }
    lib_log(PROV_LOG_ERROR, "MQTT connection refused by '%s': CONNACK %d (%s)", q->g->c->host,
            q->connack, mosquitto_connack_string(q->connack));
    return r;
}

/*
 * During the TLS handshake libmosquitto 2.0.11 takes a reset connection for
 * "try again" and would spin until the timeout; a closed socket ends it here.
 */
static int handshake_dead(struct mq *q)
{
    struct pollfd p = {.fd = mosquitto_socket(q->m), .events = POLLIN};
    struct sockaddr_storage peer;
    socklen_t peerlen = sizeof(peer), errlen = sizeof(int);
    int soerr = 0;
    char b;
    ssize_t n;

    if (p.fd < 0 || poll(&p, 1, 0) <= 0)
        return 0;
    n = recv(p.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)))
        return 0;
    if (n < 0)
        return map_mosq_error(q, MOSQ_ERR_ERRNO, errno, "MQTT connection to");
    if (getsockopt(p.fd, SOL_SOCKET, SO_ERROR, &soerr, &errlen) == 0 && soerr != 0)
        return map_mosq_error(q, MOSQ_ERR_ERRNO, soerr, "MQTT connection to");
    /* the first TLS write took the connect error: the socket never got a peer */
    if (getpeername(p.fd, (struct sockaddr *)&peer, &peerlen) != 0 && errno == ENOTCONN) {
        lib_log(PROV_LOG_ERROR, "MQTT connection to '%s' failed: cannot connect (refused or "
                "unreachable)", q->g->c->host);
        return PROV_EIO;
    }
    return map_mosq_error(q, MOSQ_ERR_CONN_LOST, 0, "MQTT connection to");
}

enum wait_for {
    WAIT_CONNACK,
    WAIT_SUBACK,
    WAIT_ANSWER,
    WAIT_TIME, /* only the time: keeps the connection serviced meanwhile */
};

static bool reached(const struct mq *q, enum wait_for what)
{
    switch (what) {
    case WAIT_CONNACK:
        return q->connack >= 0;
    case WAIT_SUBACK:
        return q->subscribed;
    case WAIT_ANSWER:
        return q->answered;
    case WAIT_TIME:
        break;
    }
    return false;
}

/*
 * Runs libmosquitto's loop until `what` happened or until `until` (monotonic
 * ms). 0 when it happened, PROV_ETIMEOUT when the time came first (not
 * logged: WAIT_TIME expects it), or a negative code (logged).
 */
static int run_until(struct mq *q, enum wait_for what, int64_t until)
{
    for (;;) {
        int64_t left = until - lib_now_ms();
        int rc, err, r;

        if (q->failure != 0) {
            lib_log(PROV_LOG_ERROR, "%s", q->why);
            return q->failure;
        }
        if (q->connack > 0)
            return connack_error(q);
        if (reached(q, what))
            return 0;
        if (left <= 0)
            return PROV_ETIMEOUT;
        errno = 0;
        rc = mosquitto_loop(q->m, left > 1000 ? 1000 : (int)left, 1);
        err = errno;
        if (rc == MOSQ_ERR_CONN_REFUSED && q->connack > 0)
            return connack_error(q);
        if (rc == MOSQ_ERR_INVAL) {
            lib_log(PROV_LOG_ERROR, "MQTT with '%s' failed: the socket does not fit select() "
                    "(descriptor above FD_SETSIZE)", q->g->c->host);
            return PROV_EIO;
        }
        if (rc != MOSQ_ERR_SUCCESS) {
            if (q->failure != 0)
                continue; /* reported above */
            return map_mosq_error(q, rc, err, q->connack < 0 ? "MQTT connection to"
                                                            : "MQTT exchange with");
        }
        if (q->connack < 0 && (r = handshake_dead(q)) != 0)
            return r;
    }
}

/* Publishes the next request (QoS 1) with a new $rid. */
static int send_request(struct mq *q, bool poll_op)
{
    const struct prov_client *c = q->g->c;
    char *topic = NULL, *body = NULL, *eop = NULL;
    int rc, r = PROV_ENOMEM;

    snprintf(q->rid, sizeof(q->rid), "%u", ++q->rid_next);
    q->answered = false;
    free(q->body);
    q->body = NULL;
    q->len = 0;
    if (poll_op) {
        /* the operation id goes into the topic percent-encoded, as Python does */
        if ((eop = url_encode_alloc(q->g->op_id)) == NULL ||
            asprintf(&topic, POLL_TOPIC "%s&operationId=%s", q->rid, eop) < 0) {
            topic = NULL;
            goto out;
        }
    } else {
        if ((body = lib_register_body(c)) == NULL ||
            asprintf(&topic, REGISTER_TOPIC "%s", q->rid) < 0) {
            topic = NULL;
            goto out;
        }
    }
    lib_log(PROV_LOG_DEBUG, "PUBLISH %s", topic);
    if (body != NULL)
        lib_log(PROV_LOG_DEBUG, "request body: %.600s", body);
    rc = mosquitto_publish(q->m, NULL, topic, body ? (int)strlen(body) : 0, body, 1, false);
    if (rc != MOSQ_ERR_SUCCESS) {
        r = map_mosq_error(q, rc, errno, "MQTT PUBLISH to");
        goto out;
    }
    r = 0;
out:
    free(topic);
    free(body);
    free(eop);
    return r;
}

/* Connects, subscribes to the response topics. */
static int open_session(struct mq *q, SSL_CTX *ctx, const char *name, int port)
{
    const struct prov_client *c = q->g->c;
    char *user = NULL, *token = NULL;
    int rc, r = PROV_EINTERNAL;

    if ((user = make_username(c)) == NULL) {
        r = PROV_ENOMEM;
        goto out;
    }
    /* X.509: no password, the certificate in the TLS handshake authenticates */
    if (c->cred == LIB_CRED_KEY && (token = lib_sas_token(c)) == NULL) {
        r = PROV_ECRYPTO;
        goto out;
    }
    /* our context as it is: without _WITH_DEFAULTS libmosquitto leaves it alone */
    if (mosquitto_int_option(q->m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311) != 0 ||
        mosquitto_int_option(q->m, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0) != 0 ||
        mosquitto_void_option(q->m, MOSQ_OPT_SSL_CTX, ctx) != 0) {
        r = PROV_EINTERNAL;
        goto out;
    }
    if ((rc = mosquitto_username_pw_set(q->m, user, token)) != MOSQ_ERR_SUCCESS) {
        r = rc == MOSQ_ERR_NOMEM ? PROV_ENOMEM : PROV_EINTERNAL;
        goto out;
    }
    mosquitto_log_callback_set(q->m, on_log);
    mosquitto_connect_callback_set(q->m, on_connect);
    mosquitto_subscribe_callback_set(q->m, on_subscribe);
    mosquitto_message_callback_set(q->m, on_message);
    lib_log(PROV_LOG_DEBUG, "MQTT CONNECT to %s port %d as '%s', user name '%s', %s", name, port,
            c->registration_id, user, token ? "SAS token as password" : "no password");
    errno = 0;
    rc = mosquitto_connect_async(q->m, name, port, PROV_MQTT_KEEPALIVE);
    if (rc == MOSQ_ERR_EAI) {
        lib_log(PROV_LOG_ERROR, "cannot resolve '%s'", name);
        r = PROV_EIO;
        goto out;
    }
    if (rc != MOSQ_ERR_SUCCESS) {
        r = map_mosq_error(q, rc, errno, "MQTT connection to");
        goto out;
    }
    if ((r = run_until(q, WAIT_CONNACK, q->g->deadline)) != 0) {
        if (r == PROV_ETIMEOUT)
            lib_log(PROV_LOG_ERROR, "timed out connecting to '%s' (TLS and CONNACK) after %d s",
                    c->host, c->timeout_seconds);
        goto out;
    }
    rc = mosquitto_subscribe(q->m, &q->sub_mid, RES_FILTER, 1);
    if (rc != MOSQ_ERR_SUCCESS) {
        r = map_mosq_error(q, rc, errno, "MQTT SUBSCRIBE to");
        goto out;
    }
    if ((r = run_until(q, WAIT_SUBACK, q->g->deadline)) != 0) {
        if (r == PROV_ETIMEOUT)
            lib_log(PROV_LOG_ERROR, "timed out waiting for the SUBACK of '%s'", c->host);
        goto out;
    }
    if (q->sub_refused) {
        lib_log(PROV_LOG_ERROR, "'%s' refused the subscription to " RES_FILTER, c->host);
        r = PROV_EPROTO;
        goto out;
    }
    r = 0;
out:
    free(user);
    if (token != NULL)
        prov_freezero(token, strlen(token));
    return r;
}

/* Requests and answers until the service decides (see lib_reg_answer). */
static int exchange(struct mq *q)
{
    struct lib_reg *g = q->g;
    bool poll_op = false;
    enum lib_next next;
    int r, wait_s;

    for (;;) {
        char why[48];

        if ((r = send_request(q, poll_op)) != 0)
            return r;
        if ((r = run_until(q, WAIT_ANSWER, g->deadline)) != 0) {
            if (r == PROV_ETIMEOUT)
                lib_log(PROV_LOG_ERROR, "timed out after %d s waiting for the answer to "
                        "$rid=%s", g->c->timeout_seconds, q->rid);
            return r;
        }
        wait_s = lib_retry_after(q->has_retry ? q->retry : NULL);
        lib_log(PROV_LOG_DEBUG, "answer %d to $rid=%s: %.600s", q->status, q->rid, q->body);
        q->rid[0] = '\0';
        r = lib_reg_answer(g, q->status, q->status == 429 || q->status >= 500, q->body, q->len,
                           &next);
        if (r != 0 || next == LIB_NEXT_DONE)
            return r;
        if (next == LIB_NEXT_POLL) {
            poll_op = true;
            snprintf(why, sizeof(why), "status assigning");
        } else {
            snprintf(why, sizeof(why), "service busy (MQTT status %d)", q->status);
        }
        if ((r = lib_reg_may_wait(g, wait_s, why)) != 0)
            return r;
        r = run_until(q, WAIT_TIME, lib_now_ms() + (int64_t)wait_s * 1000);
        if (r != PROV_ETIMEOUT)
            return r != 0 ? r : PROV_EINTERNAL;
    }
}

int lib_mqtt_register(struct prov_client *c, struct lib_reg *g)
{
    struct mq q;
    struct sigpipe_guard sg;
    char name[300];
    SSL_CTX *ctx = NULL;
    int port, r = PROV_EINTERNAL;

    memset(&q, 0, sizeof(q));
    q.g = g;
    q.connack = -1;
    if (lib_split_host(c->host, PROV_MQTT_PORT, name, sizeof(name), &port) != 0) {
        lib_log(PROV_LOG_ERROR, "invalid host '%s'", c->host);
        return PROV_EINVAL;
    }
    pthread_once(&init_once, init_mosquitto);
    if (init_rc != MOSQ_ERR_SUCCESS) {
        lib_log(PROV_LOG_ERROR, "mosquitto_lib_init failed: %s", mosquitto_strerror(init_rc));
        return PROV_EINTERNAL;
    }
    if ((r = make_ssl_ctx(c, name, &q, &ctx)) != 0)
        return r;
    sigpipe_block(&sg);
    if ((q.m = new_mosquitto(c->registration_id, &q)) == NULL) {
        r = errno == EINVAL ? PROV_EINVAL : PROV_ENOMEM;
        goto out;
    }
    if ((r = open_session(&q, ctx, name, port)) != 0)
        goto out;
    r = exchange(&q);
out:
    if (q.m != NULL) {
        /* DISCONNECT is written at once when the connection is up; errors do not matter */
        if (q.connack == 0)
            mosquitto_disconnect(q.m);
        mosquitto_destroy(q.m);
    }
    sigpipe_restore(&sg);
    SSL_CTX_free(ctx);
    ERR_clear_error();
    free(q.body);
    return r;
}
