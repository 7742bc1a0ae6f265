#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <openssl/err.h>

#include "../common/errors.h"
#include "../common/limits.h"
#include "../common/log.h"
#include "../store/store.h"
#include "http.h"
#include "assign.h"
#include "committer.h"
#include "mqtt_conn.h"
#include "webhook.h"

#define LOG_MODULE "server"

struct http_conn {
    struct conn c;
    struct bufferevent *bev;
    struct http_parser_state *ps;
    struct http_conn *prev, *next; /* the worker's connections, freed at shutdown */
    bool closing;                  /* no more requests: answer, then close */
    bool lingering;                /* answered and shut down: draining until the peer closes */
    size_t discarded;
    char peer[64];
    struct held hold; /* a request held until its commit is written */
};
/* Input a connection buffers while its request is held (more than one request). */
#define HELD_INPUT_MAX (2 * (PROV_MAX_BODY + PROV_MAX_HEADER_BYTES))

/* Bytes a closing connection may still swallow before it is cut off. */
#define LINGER_MAX_BYTES (4 * 1024 * 1024)
#define LINGER_SECONDS 2

static void log_ssl_errors(const char *what)
{
    unsigned long e;
    char buf[256];

    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
        plog(LOG_DEBUG, "%s: %s", what, buf);
    }
}

/*
 * Request but do not require a client certificate, and do not verify its
 * chain in the handshake: chains are judged by attestation (attest_x509.c),
 * which knows the anchors of the enrollment that applies and builds the
 * chain only when a group needs it; a leaf pinned by an individual
 * enrollment needs no chain at all. This replaces X509_verify_cert in the
 * handshake (for an X.509 device, one signature verification of the leaf by
 * its issuer saved). The device's proof that it holds the leaf's key, its
 * CertificateVerify signature, is still checked by OpenSSL.
 */
static int skip_chain_verification(X509_STORE_CTX *ctx, void *arg)
{
    (void)ctx;
    (void)arg;
    return 1;
}

static SSL_CTX *make_ssl_ctx(const struct config *cfg, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    if (ctx == NULL) {
        snprintf(err, errlen, "tls: cannot create context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* idle connections (MQTT devices) keep no 16 KB+ read and write buffers */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1) {
        snprintf(err, errlen, "--tls-cert: cannot load certificate chain '%s'", cfg->tls_cert);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1) {
        snprintf(err, errlen, "--tls-key: cannot load private key '%s'", cfg->tls_key);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "--tls-key: key does not match --tls-cert");
        goto fail;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_cert_verify_callback(ctx, skip_chain_verification, NULL);
    /*
     * No session resumption: a resumed session carries the client's leaf but
     * not the intermediates it sent (SSL_get_peer_cert_chain is NULL), so an
     * X.509 device would be judged without its chain; and every connection
     * should prove its certificate afresh. Clients that try to resume (Node
     * 18 does) get a full handshake. The session id context is set anyway:
     * with client certificates requested OpenSSL answers a resumption attempt
     * with an internal_error alert when it is missing.
     */
    {
        static const unsigned char sid_ctx[] = "provd";

        SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ctx, 0);
    }
    return ctx;
fail:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

/*
 * A worker's event loop. With the epoll change list, the read and write
 * interest a TLS bufferevent turns on and off several times while it serves
 * one request reaches the kernel once per loop iteration, as the net change:
 * 9.7 epoll_ctl calls per registration over HTTPS without it (nginx: 1).
 */
static struct event_base *new_worker_base(void)
{
    struct event_config *ec = event_config_new();
    struct event_base *base;

    if (ec == NULL)
        return NULL;
    event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    base = event_base_new_with_config(ec);
    event_config_free(ec);
    return base;
}

static void conn_free(struct http_conn *hc)
{
    struct worker *w = hc->c.w;

    if (hc->prev != NULL)
        hc->prev->next = hc->next;
    else
        w->conns = hc->next;
    if (hc->next != NULL)
        hc->next->prev = hc->prev;
    worker_unhold(w, &hc->hold);
    if (hc->bev != NULL)
        bufferevent_free(hc->bev); /* frees the SSL too (BEV_OPT_CLOSE_ON_FREE) */
    http_parser_state_free(hc->ps);
    free(hc);
    w->nconns--;
}

static void on_request(void *arg, struct http_request *req, struct http_response *resp)
{
    struct http_conn *hc = arg;

    if (req != NULL)
        router_handle(hc->c.w, req, resp);
    if (resp->hold_ticket != 0)
        return; /* logged when it is answered */
    /* one access line per request: the summary every failure is logged by */
    if (resp->status == 401 && resp->error_code == 0) /* a TPM challenge, not a refusal */
        plog(LOG_INFO, "%s %s %s -> %d %s", hc->peer, req ? req->method_name : "-",
             req ? req->path : "-", resp->status, resp->log_note);
    else if (resp->status >= 400)
        plog(resp->status >= 500 ? LOG_ERROR : LOG_WARN, "%s %s %s -> %d %d %s", hc->peer,
             req ? req->method_name : "-", req ? req->path : "-", resp->status, resp->error_code,
             resp->log_note);
    else
        plog(LOG_INFO, "%s %s %s -> %d", hc->peer, req->method_name, req->path, resp->status);
}

/*
 * Closing after an error answer while the client is still sending (a body
 * over the limit, say) must not reset the connection, or the client never
 * reads the answer. So: flush the answer, send close_notify and FIN, then
 * read and discard until the peer closes, for a bounded time and size.
 */
static void start_linger(struct http_conn *hc)
{
    struct timeval t = {LINGER_SECONDS, 0};

    hc->lingering = true;
    (void)SSL_shutdown(hc->c.ssl);
    shutdown(bufferevent_getfd(hc->bev), SHUT_WR);
    bufferevent_set_timeouts(hc->bev, &t, NULL);
    bufferevent_enable(hc->bev, EV_READ);
}

static void http_release(struct held *h, bool final);

/* Holds the request the parser holds; answers it at once when it cannot be held. */
static void hold(struct http_conn *hc)
{
    uint64_t ticket;

    if (!http_parser_state_held(hc->ps, &ticket))
        return;
    hc->hold.release = http_release;
    if (worker_hold(hc->c.w, &hc->hold, ticket) != 0)
        http_release(&hc->hold, true);
}

/* Feeds what the connection has read to its parser; stops at a held request. */
static void serve(struct http_conn *hc)
{
    struct evbuffer *in = bufferevent_get_input(hc->bev);
    struct evbuffer *out = bufferevent_get_output(hc->bev);

    if (hc->hold.active)
        return; /* the input waits (up to HELD_INPUT_MAX, the read watermark) */
    while (!hc->closing && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        int n = evbuffer_peek(in, -1, NULL, &v, 1);
        int r;

        if (n < 1)
            break;
        r = http_parser_state_feed(hc->ps, v.iov_base, v.iov_len, out);
        if (r == HTTP_FEED_HELD) {
            evbuffer_drain(in, http_parser_state_consumed(hc->ps));
            hold(hc);
            return;
        }
        if (r != 0)
            hc->closing = true;
        evbuffer_drain(in, v.iov_len);
    }
    if (!hc->closing)
        return;
    hc->discarded += evbuffer_get_length(in);
    evbuffer_drain(in, evbuffer_get_length(in));
    if (hc->discarded > LINGER_MAX_BYTES) {
        conn_free(hc);
        return;
    }
    if (!hc->lingering && evbuffer_get_length(out) == 0)
        start_linger(hc);
}

/* Answers the held request (final: as it stands), then goes on with the input. */
static void http_release(struct held *h, bool final)
{
    struct http_conn *hc =
        (struct http_conn *)(void *)((char *)h - offsetof(struct http_conn, hold));
    int r = http_parser_state_resume(hc->ps, bufferevent_get_output(hc->bev), final);

    if (r == HTTP_FEED_HELD) {
        hold(hc);
        return;
    }
    if (r != 0)
        hc->closing = true;
    serve(hc);
}

/* ---- held requests (server.h) ------------------------------------------- */

static void held_unlink(struct worker *w, struct held *h)
{
    if (!h->active)
        return;
    if (h->prev != NULL)
        h->prev->next = h->next;
    else
        w->held = h->next;
    if (h->next != NULL)
        h->next->prev = h->prev;
    h->prev = h->next = NULL;
    h->active = false;
    if (h->timer != NULL)
        evtimer_del(h->timer);
}

static void on_hold_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct held *h = arg;

    (void)fd;
    (void)what;
    held_unlink(h->owner, h);
    h->release(h, true);
}

/* Stores the lowest ticket the worker waits for, then makes sure it was not missed. */
static void await_ticket(struct worker *w, uint64_t ticket)
{
    uint64_t cur = atomic_load(&w->listener.waiting);

    if (cur == 0 || ticket < cur)
        atomic_store(&w->listener.waiting, ticket);
    if (committer_done(w->srv->committer, ticket))
        event_active(w->commit_ev, EV_READ, 0);
}

int worker_hold(struct worker *w, struct held *h, uint64_t ticket)
{
    struct timeval t = {HOLD_MAX_MS / 1000, (HOLD_MAX_MS % 1000) * 1000};

    if (h->active)
        held_unlink(w, h);
    if (h->timer == NULL)
        h->timer = evtimer_new(w->base, on_hold_timeout, h);
    if (h->timer == NULL || evtimer_add(h->timer, &t) != 0)
        return -1;
    h->owner = w;
    h->ticket = ticket;
    h->active = true;
    h->prev = NULL;
    h->next = w->held;
    if (w->held != NULL)
        w->held->prev = h;
    w->held = h;
    await_ticket(w, ticket);
    return 0;
}

void worker_unhold(struct worker *w, struct held *h)
{
    held_unlink(w, h);
    if (h->timer != NULL)
        event_free(h->timer);
    h->timer = NULL;
}

/* A batch was written (committer thread): wake the worker. */
static void wake_worker(void *arg)
{
    struct worker *w = arg;

    event_active(w->commit_ev, EV_READ, 0);
}

/* On the worker: answers the held requests whose commit is written. */
static void on_commit(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct held *h, *next;
    uint64_t lowest = 0;

    (void)fd;
    (void)what;
    atomic_store(&w->listener.waiting, 0);
    for (h = w->held; h != NULL; h = next) {
        next = h->next;
        if (committer_done(w->srv->committer, h->ticket)) {
            held_unlink(w, h);
            h->release(h, false); /* held again: at the head, not seen twice */
        }
    }
    for (h = w->held; h != NULL; h = h->next) {
        if (lowest == 0 || h->ticket < lowest)
            lowest = h->ticket;
    }
    if (lowest != 0)
        await_ticket(w, lowest);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    serve(arg);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct http_conn *hc = arg;

    if (hc->closing && !hc->lingering && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        start_linger(hc);
}

void server_log_tls_error(struct bufferevent *bev, const char *peer)
{
    unsigned long e = bufferevent_get_openssl_error(bev);

    if (e != 0) {
        char buf[256];

        ERR_error_string_n(e, buf, sizeof(buf));
        plog(LOG_DEBUG, "%s tls: %s", peer, buf);
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct http_conn *hc = arg;

    if (what & BEV_EVENT_CONNECTED)
        return;
    if (what & BEV_EVENT_ERROR)
        server_log_tls_error(bev, hc->peer);
    conn_free(hc);
}

static void format_peer(const struct sockaddr *sa, char *out, size_t outlen)
{
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;

        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;

        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
    }
    snprintf(out, outlen, "%s:%u", host, port);
}

/* Counts the connection and wraps fd in a TLS bufferevent; NULL (fd closed) on failure. */
static struct bufferevent *accept_tls(struct worker *w, evutil_socket_t fd, SSL **sslp)
{
    struct bufferevent *bev;
    SSL *ssl;
    int one = 1;

    if (w->nconns >= PROV_MAX_CONN_PER_WORKER) {
        plog(LOG_WARN, "connection limit reached, refusing");
        evutil_closesocket(fd);
        return NULL;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ssl = SSL_new(w->srv->ssl_ctx);
    if (ssl == NULL) {
        evutil_closesocket(fd);
        return NULL;
    }
    bev = bufferevent_openssl_socket_new(w->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                         BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        SSL_free(ssl);
        evutil_closesocket(fd);
        return NULL;
    }
    w->nconns++;
    *sslp = ssl;
    return bev;
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    struct worker *w = arg;
    struct http_conn *hc;
    SSL *ssl = NULL;
    struct bufferevent *bev;
    struct timeval idle = {PROV_IDLE_TIMEOUT_SECONDS, 0};

    (void)l;
    (void)salen;
    bev = accept_tls(w, fd, &ssl);
    if (bev == NULL)
        return;
    hc = calloc(1, sizeof(*hc));
    if (hc != NULL)
        hc->ps = http_parser_state_new(on_request, hc);
    if (hc == NULL || hc->ps == NULL) {
        free(hc);
        bufferevent_free(bev);
        w->nconns--;
        return;
    }
    hc->c.w = w;
    hc->c.ssl = ssl;
    hc->bev = bev;
    format_peer(sa, hc->peer, sizeof(hc->peer));
    hc->next = w->conns;
    if (w->conns != NULL)
        w->conns->prev = hc;
    w->conns = hc;
    http_parser_state_set_peer(hc->ps, hc->peer, &hc->c);
    bufferevent_openssl_set_allow_dirty_shutdown(hc->bev, 1);
    bufferevent_setcb(hc->bev, on_read, on_write, on_event, hc);
    bufferevent_set_timeouts(hc->bev, &idle, &idle);
    bufferevent_setwatermark(hc->bev, EV_READ, 0, HELD_INPUT_MAX);
    bufferevent_enable(hc->bev, EV_READ | EV_WRITE);
}

static void on_mqtt_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                           int salen, void *arg)
{
    struct worker *w = arg;
    SSL *ssl = NULL;
    struct bufferevent *bev;
    char peer[64];

    (void)l;
    (void)salen;
    bev = accept_tls(w, fd, &ssl);
    if (bev == NULL)
        return;
    format_peer(sa, peer, sizeof(peer));
    (void)mqtt_conn_start(w, bev, ssl, peer); /* on failure it has freed bev and uncounted */
}

/* The passive address of a listener; caller frees *res with freeaddrinfo. */
static int resolve_listen(const char *opt, const struct cfg_listen *l, struct addrinfo **res,
                          char *err, size_t errlen)
{
    struct addrinfo hints = {0};
    int rc;

    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    rc = getaddrinfo(l->host, l->port, &hints, res);
    if (rc != 0) {
        snprintf(err, errlen, "%s %s:%s: %s", opt, l->host, l->port, gai_strerror(rc));
        return PROV_EINVAL;
    }
    return 0;
}

/*
 * The workers share each address through SO_REUSEPORT, which would also let a
 * second provd join the same address silently and split its traffic. A probe
 * bind without SO_REUSEPORT fails when anything listens there already.
 */
static int probe_address(const char *opt, const struct cfg_listen *l, char *err, size_t errlen)
{
    struct addrinfo *res = NULL;
    int fd, one = 1, rc;

    if (resolve_listen(opt, l, &res, err, errlen) != 0)
        return PROV_EINVAL;
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    rc = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
         bind(fd, res->ai_addr, res->ai_addrlen) == 0;
    if (!rc)
        snprintf(err, errlen, "%s %s:%s: %s", opt, l->host, l->port,
                 errno == EADDRINUSE ? "address already in use (is another provd running?)"
                                     : strerror(errno));
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    return rc ? 0 : PROV_EIO;
}

static evutil_socket_t bind_socket(const char *opt, const struct cfg_listen *l, char *err,
                                   size_t errlen)
{
    struct addrinfo *res = NULL;
    evutil_socket_t fd = -1;
    int one = 1;

    if (resolve_listen(opt, l, &res, err, errlen) != 0)
        return -1;
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
        snprintf(err, errlen, "%s %s:%s: %s", opt, l->host, l->port, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;

    (void)fd;
    (void)what;
    event_base_loopbreak(w->base);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;

    event_base_dispatch(w->base);
    while (w->conns != NULL)
        conn_free(w->conns);
    mqtt_conn_free_all(w);
    return NULL;
}

/*
 * Housekeeping beside the loops (nothing that waits on fsync runs on a
 * worker's loop): expires old operations once a minute with its own store
 * connection.
 */
static void *maint_main(void *arg)
{
    struct server *srv = arg;

    pthread_mutex_lock(&srv->maint_lock);
    while (!srv->stopping) {
        struct timespec until;
        int n;

        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 60;
        pthread_cond_timedwait(&srv->maint_cond, &srv->maint_lock, &until);
        if (srv->stopping)
            break;
        pthread_mutex_unlock(&srv->maint_lock);
        n = srv->maint_store->ops->operation_expire(srv->maint_store, (long long)time(NULL));
        if (n > 0)
            plog(LOG_DEBUG, "expired %d operations", n);
        pthread_mutex_lock(&srv->maint_lock);
    }
    pthread_mutex_unlock(&srv->maint_lock);
    return NULL;
}

int server_start(struct server *srv, char *err, size_t errlen)
{
    const struct config *cfg = &srv->cfg;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int n = cfg->workers > 0 ? cfg->workers : (ncpu > 0 ? (int)ncpu : 1);

    if (evthread_use_pthreads() != 0) {
        snprintf(err, errlen, "libevent: no thread support");
        return PROV_EINTERNAL;
    }
    srv->ssl_ctx = make_ssl_ctx(cfg, err, errlen);
    if (srv->ssl_ctx == NULL)
        return PROV_EINVAL;
    if (mkdir(cfg->data_dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "--data-dir %s: %s", cfg->data_dir, strerror(errno));
        return PROV_EINVAL;
    }
    snprintf(srv->store_path, sizeof(srv->store_path), "%s/provd.db", cfg->data_dir);
    if (webhook_global_init() != 0) {
        snprintf(err, errlen, "libcurl: cannot initialise");
        return PROV_EINTERNAL;
    }
    srv->webhook_init = true;
    if (cfg->webhook_ca[0] != '\0') {
        char why[256] = "";

        if (webhook_set_ca_file(cfg->webhook_ca, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "--webhook-ca %s: %s", cfg->webhook_ca, why);
            return PROV_EINVAL;
        }
    }
    if (hub_open_all(&srv->cfg, err, errlen) != 0)
        return PROV_EINVAL;
    for (size_t k = 0; k < cfg->nlisten; k++) {
        if (probe_address("--listen", &cfg->listen[k], err, errlen) != 0)
            return PROV_EIO;
    }
    for (size_t k = 0; k < cfg->nmqtt_listen; k++) {
        const struct cfg_listen *m = &cfg->mqtt_listen[k];

        /* both would bind with SO_REUSEPORT and silently share the port */
        for (size_t j = 0; j < cfg->nlisten; j++) {
            if (strcmp(m->host, cfg->listen[j].host) == 0 &&
                strcmp(m->port, cfg->listen[j].port) == 0) {
                snprintf(err, errlen, "--mqtt-listen %s:%s: also a --listen address", m->host,
                         m->port);
                return PROV_EINVAL;
            }
        }
        if (probe_address("--mqtt-listen", m, err, errlen) != 0)
            return PROV_EIO;
    }
    srv->workers = calloc((size_t)n, sizeof(*srv->workers));
    if (srv->workers == NULL)
        return PROV_ENOMEM;
    srv->nworkers = n;
    for (int i = 0; i < n; i++) {
        struct worker *w = &srv->workers[i];
        char serr[256];

        w->index = i;
        w->srv = srv;
        w->cfg = cfg;
        w->base = new_worker_base();
        if (w->base == NULL) {
            snprintf(err, errlen, "libevent: cannot create event base");
            return PROV_EINTERNAL;
        }
        if (store_sqlite_open(srv->store_path, &w->store, serr, sizeof(serr)) != 0) {
            snprintf(err, errlen, "--data-dir %s: %s", cfg->data_dir, serr);
            return PROV_ESTORE;
        }
        w->stop_ev = event_new(w->base, -1, 0, on_stop, w);
        for (size_t k = 0; k < cfg->nlisten; k++) {
            evutil_socket_t fd = bind_socket("--listen", &cfg->listen[k], err, errlen);

            if (fd < 0)
                return PROV_EIO;
            w->listeners[k] = evconnlistener_new(w->base, on_accept, w,
                                                 LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1,
                                                 fd);
            if (w->listeners[k] == NULL) {
                close(fd);
                snprintf(err, errlen, "libevent: cannot listen");
                return PROV_EIO;
            }
        }
        for (size_t k = 0; k < cfg->nmqtt_listen; k++) {
            evutil_socket_t fd = bind_socket("--mqtt-listen", &cfg->mqtt_listen[k], err, errlen);

            if (fd < 0)
                return PROV_EIO;
            w->mqtt_listeners[k] = evconnlistener_new(w->base, on_mqtt_accept, w,
                                                      LEV_OPT_CLOSE_ON_FREE |
                                                          LEV_OPT_CLOSE_ON_EXEC,
                                                      -1, fd);
            if (w->mqtt_listeners[k] == NULL) {
                close(fd);
                snprintf(err, errlen, "libevent: cannot listen");
                return PROV_EIO;
            }
        }
    }
    {
        char serr[256];

        if (store_sqlite_open(srv->store_path, &srv->maint_store, serr, sizeof(serr)) != 0) {
            snprintf(err, errlen, "--data-dir %s: %s", cfg->data_dir, serr);
            return PROV_ESTORE;
        }
        pthread_mutex_init(&srv->maint_lock, NULL);
        pthread_cond_init(&srv->maint_cond, NULL);
        if (pthread_create(&srv->maint, NULL, maint_main, srv) != 0) {
            snprintf(err, errlen, "cannot start the maintenance thread");
            return PROV_EINTERNAL;
        }
        srv->maint_started = true;
    }
    if (committer_start(srv->store_path, &srv->committer, err, errlen) != 0)
        return PROV_ESTORE;
    for (int i = 0; i < n; i++) {
        struct worker *w = &srv->workers[i];

        w->commit_ev = event_new(w->base, -1, 0, on_commit, w);
        w->listener.notify = wake_worker;
        w->listener.arg = w;
        atomic_init(&w->listener.waiting, 0);
        if (w->commit_ev == NULL || committer_add_listener(srv->committer, &w->listener) != 0) {
            snprintf(err, errlen, "cannot set up the workers' commit notifications");
            return PROV_EINTERNAL;
        }
    }
    if (assigner_start(cfg, srv->store_path, srv->committer, &srv->assigner, err, errlen) != 0)
        return PROV_EINTERNAL;
    for (int i = 0; i < n; i++) {
        if (pthread_create(&srv->workers[i].thread, NULL, worker_main, &srv->workers[i]) != 0) {
            snprintf(err, errlen, "cannot start worker threads");
            return PROV_EINTERNAL;
        }
    }
    for (size_t k = 0; k < cfg->nlisten; k++)
        plog(LOG_INFO, "listening on https://%s:%s (%d workers)", cfg->listen[k].host,
             cfg->listen[k].port, n);
    for (size_t k = 0; k < cfg->nmqtt_listen; k++)
        plog(LOG_INFO, "listening on mqtts://%s:%s (%d workers)", cfg->mqtt_listen[k].host,
             cfg->mqtt_listen[k].port, n);
    log_ssl_errors("tls");
    return 0;
}

void server_wait(struct server *srv)
{
    sigset_t set;
    int sig = 0;

    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigwait(&set, &sig);
    plog(LOG_INFO, "signal %d, stopping", sig);
    for (int i = 0; i < srv->nworkers; i++)
        event_active(srv->workers[i].stop_ev, EV_READ, 0);
    for (int i = 0; i < srv->nworkers; i++)
        pthread_join(srv->workers[i].thread, NULL);
    committer_clear_listeners(srv->committer); /* the workers hold nothing any more */
    assigner_stop(srv->assigner);
    srv->assigner = NULL;
    committer_stop(srv->committer); /* writes what is queued */
    srv->committer = NULL;
    pthread_mutex_lock(&srv->maint_lock);
    srv->stopping = true;
    pthread_cond_signal(&srv->maint_cond);
    pthread_mutex_unlock(&srv->maint_lock);
    pthread_join(srv->maint, NULL);
    srv->maint_started = false;
}

void server_free(struct server *srv)
{
    committer_clear_listeners(srv->committer); /* before the events it wakes are freed */
    for (int i = 0; i < srv->nworkers; i++) {
        struct worker *w = &srv->workers[i];

        for (size_t k = 0; k < CFG_MAX_LIST; k++) {
            if (w->listeners[k] != NULL)
                evconnlistener_free(w->listeners[k]);
            if (w->mqtt_listeners[k] != NULL)
                evconnlistener_free(w->mqtt_listeners[k]);
        }
        if (w->stop_ev != NULL)
            event_free(w->stop_ev);
        if (w->commit_ev != NULL)
            event_free(w->commit_ev);
        store_close(w->store);
        if (w->base != NULL)
            event_base_free(w->base);
    }
    free(srv->workers);
    if (srv->maint_started) {
        pthread_mutex_lock(&srv->maint_lock);
        srv->stopping = true;
        pthread_cond_signal(&srv->maint_cond);
        pthread_mutex_unlock(&srv->maint_lock);
        pthread_join(srv->maint, NULL);
    }
    store_close(srv->maint_store);
    assigner_stop(srv->assigner);
    srv->assigner = NULL;
    committer_stop(srv->committer);
    srv->committer = NULL;
    hub_close_all(&srv->cfg);
    if (srv->webhook_init)
        webhook_global_cleanup();
    SSL_CTX_free(srv->ssl_ctx);
    config_clear(&srv->cfg);
}
