/*
 * The prov-bench driver: --threads event loops, each with its share of the
 * --concurrency device slots. A slot runs one device at a time on its own TLS
 * connection (a fresh handshake, never a resumed session) and, when the
 * device is done, starts the next one from the shared sequence. Count mode
 * runs every device of the pool once; duration mode cycles through the pool
 * until --duration and counts only what finished after --warmup.
 *
 * Idle mode (--idle-mqtt N, one thread): N MQTT devices connect and subscribe,
 * at most --concurrency handshakes at a time, then hold their connections
 * (PINGREQ every keepalive) while the server's memory is read.
 */
#include "bench_device.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <jansson.h>
#include <openssl/err.h>

#include "../common/errors.h"

double bench_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_self(void)
{
    struct rusage ru;

    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* utime + stime of pid from /proc/PID/stat, in seconds; -1 when unreadable. */
static double cpu_of_one(long pid)
{
    char path[64], buf[1024], *p;
    unsigned long long ut = 0, st = 0;
    FILE *f;
    size_t n;

    if (pid <= 0)
        return -1;
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    if ((f = fopen(path, "r")) == NULL)
        return -1;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* the command name may hold spaces: fields are counted after its ')' */
    if ((p = strrchr(buf, ')')) == NULL ||
        sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* A "VmXXX:" value of /proc/PID/status in kB, or -1. */
static long proc_status_kb_one(long pid, const char *field)
{
    char path[64], line[256];
    size_t flen = strlen(field);
    long v = -1;
    FILE *f;

    if (pid <= 0)
        return -1;
    snprintf(path, sizeof(path), "/proc/%ld/status", pid);
    if ((f = fopen(path, "r")) == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
            v = strtol(line + flen + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

/* Summed over --server-pid; -1 when none is given or one is unreadable. */
static double cpu_of(const struct bench_opts *o)
{
    double sum = 0;

    if (o->nserver_pids == 0)
        return -1;
    for (size_t i = 0; i < o->nserver_pids; i++) {
        double v = cpu_of_one(o->server_pids[i]);

        if (v < 0)
            return -1;
        sum += v;
    }
    return sum;
}

static long proc_status_kb(const struct bench_opts *o, const char *field)
{
    long sum = 0;

    if (o->nserver_pids == 0)
        return -1;
    for (size_t i = 0; i < o->nserver_pids; i++) {
        long v = proc_status_kb_one(o->server_pids[i], field);

        if (v < 0)
            return -1;
        sum += v;
    }
    return sum;
}

/* ---- device lifecycle ---- */

static void dev_start(struct device *d);

static void dev_close(struct device *d)
{
    if (d->fd >= 0) { /* still connecting */
        event_del(d->tcp);
        close(d->fd);
        d->fd = -1;
    }
    if (d->bev != NULL) {
        bufferevent_free(d->bev); /* frees the SSL and closes the socket */
        d->bev = NULL;
    }
    d->connected = false;
}

static void dev_release(struct device *d)
{
    dev_close(d);
    event_del(d->wait);
    event_del(d->deadline);
    if (d->proto != NULL && d->proto->reset != NULL)
        d->proto->reset(d);
    free(d->sas);
    d->sas = NULL;
    d->in_use = false;
}

static bool run_over(const struct bench_shared *sh, double now)
{
    if (sh->o->idle_mqtt > 0)
        return false;
    if (sh->t_stop > 0)
        return now >= sh->t_stop;
    return atomic_load(&sh->next_seq) >= sh->o->count;
}

static void slot_idle(struct bench_thread *th)
{
    if (th->active > 0)
        th->active--;
    if (th->active == 0)
        event_base_loopexit(th->base, NULL);
}

/* Idle mode: starts the next never-started slot, if any. */
static void idle_start_next(struct bench_thread *th)
{
    if (th->next_slot < th->nslots) {
        struct device *n = &th->slots[th->next_slot++];

        th->active++;
        n->restart = true;
        event_active(n->wait, EV_TIMEOUT, 0);
    }
}

void dev_finish(struct device *d, enum dev_outcome outcome, const char *kind_fmt, ...)
{
    struct bench_thread *th = d->th;
    struct bench_shared *sh = th->sh;
    double now = bench_now();

    if (outcome == DEV_IDLE) {
        d->idle = true;
        event_del(d->deadline);
        atomic_fetch_add(&sh->idle_connected, 1);
        idle_start_next(th);
        return;
    }
    if (outcome == DEV_ASSIGNED) {
        th->stats.assigned_total++;
        if (sh->t_stop == 0 || (now >= sh->t_warm && now <= sh->t_stop)) {
            th->stats.assigned++;
            stats_latency(&th->stats, now - d->t_start);
        }
    } else {
        char kind[96];
        va_list ap;

        va_start(ap, kind_fmt);
        vsnprintf(kind, sizeof(kind), kind_fmt, ap);
        va_end(ap);
        stats_error(&th->stats, kind);
    }
    th->t_last = now;
    if (sh->o->idle_mqtt > 0) {
        if (d->idle) /* a held connection dropped */
            atomic_fetch_sub(&sh->idle_connected, 1);
        else
            atomic_fetch_add(&sh->idle_failed, 1);
        dev_release(d);
        idle_start_next(th);
        slot_idle(th);
        return;
    }
    dev_release(d);
    if (run_over(sh, now)) {
        slot_idle(th);
        return;
    }
    /* the next device starts from the loop, not from inside this call chain */
    d->restart = true;
    event_active(d->wait, EV_TIMEOUT, 0);
}

void dev_wait(struct device *d, double seconds)
{
    struct timeval tv;

    if (seconds < 0)
        seconds = 0;
    tv.tv_sec = (time_t)seconds;
    tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
    event_add(d->wait, &tv);
}

static void on_wait(evutil_socket_t fd, short what, void *arg)
{
    struct device *d = arg;

    (void)fd;
    (void)what;
    if (d->restart) {
        d->restart = false;
        dev_start(d);
        if (!d->in_use) /* the pool ran out */
            slot_idle(d->th);
        return;
    }
    d->proto->wait_done(d);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct device *d = arg;

    (void)fd;
    (void)what;
    dev_finish(d, DEV_ERROR, d->connected ? "timeout" : "timeout (TLS connect)");
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct device *d = arg;

    (void)bev;
    d->proto->readable(d);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct device *d = arg;

    if (what & BEV_EVENT_CONNECTED) {
        SSL *ssl = bufferevent_openssl_get_ssl(bev);

        d->connected = true;
        d->th->stats.handshakes++;
        if (ssl != NULL && SSL_session_reused(ssl))
            d->th->stats.resumed++;
        d->proto->connected(d);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        /* unread answer bytes first: they may complete what the peer sent */
        if (evbuffer_get_length(bufferevent_get_input(bev)) > 0) {
            d->proto->readable(d);
            if (!d->in_use || d->bev != bev)
                return;
        }
        if (d->proto->eof(d) == 0)
            return;
        dev_finish(d, DEV_ERROR, d->connected ? "closed by the server" : "closed in handshake");
        return;
    }
    if (what & BEV_EVENT_ERROR) {
        unsigned long e = bufferevent_get_openssl_error(bev);
        int sockerr = EVUTIL_SOCKET_ERROR();

        if (e != 0)
            dev_finish(d, DEV_ERROR, "tls%s: %s", d->connected ? "" : " handshake",
                       tls_error_reason(e, "error"));
        else if (!d->connected && sockerr != 0)
            dev_finish(d, DEV_ERROR, "connect: %s", strerror(sockerr));
        else
            dev_finish(d, DEV_ERROR, "%s", d->connected ? "connection reset" : "handshake reset");
        ERR_clear_error();
        return;
    }
    if (what & BEV_EVENT_TIMEOUT)
        dev_finish(d, DEV_ERROR, "timeout");
}

static int set_x509(struct device *d, SSL *ssl)
{
    const struct x509_cred *xc = &d->th->sh->creds.x509[d->index];

    if (SSL_use_certificate(ssl, xc->leaf) != 1 || SSL_use_PrivateKey(ssl, xc->key) != 1)
        return -1;
    if (d->th->sh->creds.intermediate != NULL &&
        SSL_add1_chain_cert(ssl, d->th->sh->creds.intermediate) != 1)
        return -1;
    return 0;
}

/* The TCP connection is up (or failed): TLS starts on it. */
static void on_tcp(evutil_socket_t sfd, short what, void *arg)
{
    struct device *d = arg;
    struct bench_thread *th = d->th;
    struct bench_shared *sh = th->sh;
    int fd = (int)sfd, soerr = 0;
    socklen_t len = sizeof(soerr);
    SSL *ssl;

    (void)what;
    d->fd = -1;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
        soerr = errno;
    if (soerr != 0) {
        close(fd);
        dev_finish(d, DEV_ERROR, "connect: %s", strerror(soerr));
        return;
    }
    ssl = SSL_new(th->ctx);
    if (ssl != NULL)
        tls_set_sni(ssl, sh->o->host);
    if (ssl == NULL || (sh->creds.att == ATT_X509 && set_x509(d, ssl) != 0)) {
        SSL_free(ssl);
        close(fd);
        ERR_clear_error();
        dev_finish(d, DEV_ERROR, "tls: cannot set up the client");
        return;
    }
    d->bev = bufferevent_openssl_socket_new(th->base, fd, ssl, BUFFEREVENT_SSL_CONNECTING,
                                            BEV_OPT_CLOSE_ON_FREE);
    if (d->bev == NULL) {
        SSL_free(ssl);
        close(fd);
        dev_finish(d, DEV_ERROR, "out of memory");
        return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(d->bev, 1);
    bufferevent_setcb(d->bev, on_read, NULL, on_event, d);
    bufferevent_enable(d->bev, EV_READ | EV_WRITE);
}

static int dev_connect(struct device *d)
{
    struct bench_thread *th = d->th;
    int fd = tls_connect_fd(&th->sh->sa, th->sh->salen, th->sh->o->bind_ip);

    if (fd < 0) {
        dev_finish(d, DEV_ERROR, "connect: %s", strerror(-fd));
        return -1;
    }
    d->fd = fd;
    if (event_assign(d->tcp, th->base, fd, EV_WRITE, on_tcp, d) != 0 ||
        event_add(d->tcp, NULL) != 0) {
        dev_finish(d, DEV_ERROR, "out of memory");
        return -1;
    }
    return 0;
}

int dev_reconnect(struct device *d)
{
    dev_close(d);
    return dev_connect(d);
}

static void dev_start(struct device *d)
{
    struct bench_thread *th = d->th;
    struct bench_shared *sh = th->sh;
    const struct bench_opts *o = sh->o;
    struct timeval tmo;

    if (o->idle_mqtt > 0) {
        d->seq = (unsigned long)(d - th->slots);
    } else {
        d->seq = atomic_fetch_add(&sh->next_seq, 1);
        if (sh->t_stop == 0 && d->seq >= o->count)
            return;
    }
    d->index = d->seq % o->count;
    bench_rid(o, d->index, d->rid, sizeof(d->rid));
    d->in_use = true;
    d->idle = false;
    d->polls = 0;
    d->opid[0] = '\0';
    d->t_start = bench_now();
    th->stats.started++;
    if (sh->creds.att == ATT_SYMKEY) {
        d->sas = creds_sas(&sh->creds, o, d->rid, NULL, 0);
        if (d->sas == NULL) {
            dev_finish(d, DEV_ERROR, "cannot build the SAS token");
            return;
        }
    } else if (sh->creds.att == ATT_TPM) {
        (void)tpm_session_begin(d); /* the SAS comes with the challenge */
    }
    tmo.tv_sec = (time_t)o->timeout;
    tmo.tv_usec = (suseconds_t)((o->timeout - (double)tmo.tv_sec) * 1e6);
    event_add(d->deadline, &tmo);
    (void)dev_connect(d);
}

/* ---- threads ---- */

static int new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct bench_thread *th = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));

    (void)sess;
    th->stats.tickets++;
    return 0; /* not kept: the next connection makes a full handshake */
}

static int thread_init(struct bench_thread *th, struct bench_shared *sh, int index, unsigned nslots,
                       char *err, size_t errlen)
{
    const struct dev_proto *proto = sh->o->transport == TR_MQTT ? &mqtt_proto : &http_proto;

    th->sh = sh;
    th->index = index;
    th->base = event_base_new();
    th->ctx = tls_client_ctx(sh->o, err, errlen);
    if (th->base == NULL || th->ctx == NULL)
        return -1;
    /* sessions the server offers are counted, never reused */
    SSL_CTX_set_app_data(th->ctx, th);
    SSL_CTX_set_session_cache_mode(th->ctx,
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(th->ctx, new_session);
    th->nslots = nslots;
    th->slots = calloc(nslots ? nslots : 1, sizeof(*th->slots));
    if (th->slots == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (unsigned i = 0; i < nslots; i++) {
        struct device *d = &th->slots[i];

        d->th = th;
        d->proto = proto;
        d->fd = -1;
        d->tcp = malloc(event_get_struct_event_size());
        if (d->tcp == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        d->wait = evtimer_new(th->base, on_wait, d);
        d->deadline = evtimer_new(th->base, on_deadline, d);
        if (d->wait == NULL || d->deadline == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    return 0;
}

static void thread_free(struct bench_thread *th)
{
    for (unsigned i = 0; th->slots != NULL && i < th->nslots; i++) {
        struct device *d = &th->slots[i];

        if (d->in_use)
            dev_release(d);
        if (d->wait != NULL)
            event_free(d->wait);
        if (d->deadline != NULL)
            event_free(d->deadline);
        free(d->tcp);
        hresp_free(&d->resp);
    }
    free(th->slots);
    SSL_CTX_free(th->ctx);
    if (th->base != NULL)
        event_base_free(th->base);
    stats_free(&th->stats);
}

static void *thread_main(void *arg)
{
    struct bench_thread *th = arg;
    unsigned n = th->nslots;

    if (th->sh->o->idle_mqtt > 0)
        n = th->sh->o->concurrency < th->nslots ? th->sh->o->concurrency : th->nslots;
    for (unsigned i = 0; i < n; i++) {
        struct device *d = &th->slots[i];

        th->active++;
        th->next_slot = i + 1;
        dev_start(d);
        if (!d->in_use && th->sh->o->idle_mqtt == 0) {
            th->active--;
            break;
        }
    }
    if (th->active > 0)
        event_base_dispatch(th->base);
    return NULL;
}

/* ---- idle mode: wait for the connections, then read the server's memory ---- */

struct idle_watch {
    struct bench_shared *sh;
    struct bench_thread *th;
    struct run_result *res;
    struct event *ev;
    double t_all;  /* when every connection was up (or failed) */
    double t_hold; /* when to let go */
    int phase;
};

static void idle_tick(evutil_socket_t fd, short what, void *arg)
{
    struct idle_watch *iw = arg;
    const struct bench_opts *o = iw->sh->o;
    unsigned long up = atomic_load(&iw->sh->idle_connected);
    unsigned long failed = atomic_load(&iw->sh->idle_failed);
    double now = bench_now();

    (void)fd;
    (void)what;
    if (iw->phase == 0 && up + failed >= o->idle_mqtt) {
        iw->phase = 1;
        iw->t_all = now;
        if (!o->quiet)
            fprintf(stderr, "prov-bench: %lu idle MQTT connections up (%lu failed) in %.1f s\n", up,
                    failed, now - iw->sh->t0);
    }
    /* settle for two seconds, then read the server's memory and hold */
    if (iw->phase == 1 && now >= iw->t_all + 2.0) {
        iw->res->server_hwm_kb = proc_status_kb(o, "VmHWM");
        iw->res->server_rss_kb = proc_status_kb(o, "VmRSS");
        iw->res->idle_connected = atomic_load(&iw->sh->idle_connected);
        iw->t_hold = now + o->hold;
        iw->phase = 2;
    }
    if (iw->phase == 2 && now >= iw->t_hold) {
        iw->res->elapsed = iw->t_all - iw->sh->t0;
        event_base_loopexit(iw->th->base, NULL);
        return;
    }
    if (iw->phase == 0 && now - iw->sh->t0 > o->timeout + (double)o->idle_mqtt / 50.0) {
        iw->res->idle_connected = up;
        iw->res->elapsed = now - iw->sh->t0;
        stats_error(&iw->th->stats, "idle connections did not all come up in time");
        event_base_loopexit(iw->th->base, NULL);
        return;
    }
    {
        struct timeval tv = {0, 100000};

        event_add(iw->ev, &tv);
    }
}

/* ---- window sampling (CPU time at the start and the end of the window) ---- */

struct window_watch {
    struct bench_shared *sh;
    struct run_result *res;
    struct event *ev;
    double cpu0, srv0;
    bool started;
};

static void window_tick(evutil_socket_t fd, short what, void *arg)
{
    struct window_watch *ww = arg;
    struct timeval tv;
    double now = bench_now(), next;

    (void)fd;
    (void)what;
    if (!ww->started) {
        ww->cpu0 = cpu_self();
        ww->srv0 = cpu_of(ww->sh->o);
        ww->started = true;
        next = ww->sh->t_stop;
    } else {
        double srv1 = cpu_of(ww->sh->o);

        ww->res->client_cpu = cpu_self() - ww->cpu0;
        ww->res->server_cpu = ww->srv0 >= 0 && srv1 >= 0 ? srv1 - ww->srv0 : -1;
        return;
    }
    next -= now;
    if (next < 0)
        next = 0;
    tv.tv_sec = (time_t)next;
    tv.tv_usec = (suseconds_t)((next - (double)tv.tv_sec) * 1e6);
    event_add(ww->ev, &tv);
}

static void raise_fd_limit(unsigned want)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < (rlim_t)want + 64) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int check_fd_limit(unsigned want, char *err, size_t errlen)
{
    struct rlimit rl;

    raise_fd_limit(want);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)want + 64) {
        snprintf(err, errlen,
                 "%u connections need more open files than the limit %llu "
                 "(raise it with ulimit -n)",
                 want, (unsigned long long)rl.rlim_cur);
        return -1;
    }
    return 0;
}

static int start_threads(struct bench_shared *sh, struct bench_thread *ths, unsigned nth, char *err,
                         size_t errlen)
{
    const struct bench_opts *o = sh->o;
    unsigned total = o->idle_mqtt > 0 ? o->idle_mqtt : o->concurrency;

    for (unsigned t = 0; t < nth; t++) {
        unsigned share = total / nth + (t < total % nth ? 1 : 0);

        if (thread_init(&ths[t], sh, (int)t, share, err, errlen) != 0)
            return -1;
    }
    return 0;
}

int bench_run(const struct bench_opts *o, struct run_result *res, char *err, size_t errlen)
{
    struct bench_shared sh = {.o = o};
    unsigned nth = o->idle_mqtt > 0 ? 1 : o->threads;
    struct bench_thread *ths = NULL;
    struct window_watch ww = {.sh = &sh, .res = res};
    struct idle_watch iw = {.sh = &sh, .res = res};
    double cpu0, srv0;
    int rc = -1;

    memset(res, 0, sizeof(*res));
    res->server_cpu = -1;
    res->server_hwm_kb = res->server_rss_kb = -1;
    if (nth == 0)
        nth = 1;
    if (check_fd_limit(o->idle_mqtt > 0 ? o->idle_mqtt : o->concurrency, err, errlen) != 0)
        return -1;
    if (tls_resolve(o->host, o->port, &sh.sa, &sh.salen, err, errlen) != 0)
        return -1;
    if (creds_init(&sh.creds, o, err, errlen) != 0)
        return -1;
    ths = calloc(nth, sizeof(*ths));
    if (ths == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (start_threads(&sh, ths, nth, err, errlen) != 0)
        goto out;
    sh.t0 = bench_now();
    if (o->duration > 0) {
        sh.t_warm = sh.t0 + o->warmup;
        sh.t_stop = sh.t0 + o->duration;
    }
    cpu0 = cpu_self();
    srv0 = cpu_of(o);
    if (o->idle_mqtt > 0) {
        struct timeval tv = {0, 100000};

        iw.th = &ths[0];
        iw.ev = evtimer_new(ths[0].base, idle_tick, &iw);
        event_add(iw.ev, &tv);
    } else if (o->duration > 0) {
        struct timeval tv;

        tv.tv_sec = (time_t)o->warmup;
        tv.tv_usec = (suseconds_t)((o->warmup - (double)tv.tv_sec) * 1e6);
        ww.ev = evtimer_new(ths[0].base, window_tick, &ww);
        event_add(ww.ev, &tv);
    }
    for (unsigned t = 0; t < nth; t++) {
        if (pthread_create(&ths[t].thread, NULL, thread_main, &ths[t]) != 0) {
            snprintf(err, errlen, "cannot start threads");
            for (unsigned j = 0; j < t; j++)
                pthread_join(ths[j].thread, NULL);
            goto out;
        }
    }
    for (unsigned t = 0; t < nth; t++)
        pthread_join(ths[t].thread, NULL);
    if (o->idle_mqtt == 0 && o->duration > 0) {
        res->elapsed = o->duration - o->warmup;
        if (!ww.started || res->client_cpu == 0) { /* the window never closed on the loop */
            res->client_cpu = cpu_self() - cpu0;
            res->server_cpu = srv0 >= 0 ? cpu_of(o) - srv0 : -1;
        }
    } else if (o->idle_mqtt == 0) {
        double last = sh.t0;

        for (unsigned t = 0; t < nth; t++)
            last = ths[t].t_last > last ? ths[t].t_last : last;
        res->elapsed = last - sh.t0;
        res->client_cpu = cpu_self() - cpu0;
        res->server_cpu = srv0 >= 0 ? cpu_of(o) - srv0 : -1;
    }
    if (res->server_hwm_kb < 0) {
        res->server_hwm_kb = proc_status_kb(o, "VmHWM");
        res->server_rss_kb = proc_status_kb(o, "VmRSS");
    }
    for (unsigned t = 0; t < nth; t++) {
        if (stats_merge(&res->stats, &ths[t].stats) != 0) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
    }
    stats_sort(&res->stats);
    rc = 0;
out:
    if (iw.ev != NULL)
        event_free(iw.ev);
    if (ww.ev != NULL)
        event_free(ww.ev);
    for (unsigned t = 0; ths != NULL && t < nth; t++)
        thread_free(&ths[t]);
    free(ths);
    creds_free(&sh.creds);
    return rc;
}

char *dev_register_body(struct device *d)
{
    json_t *b = json_pack("{s:s}", "registrationId", d->rid);
    char *s;

    if (b == NULL)
        return NULL;
    if (d->tpm != NULL) {
        json_t *t = tpm_register_member(d);

        if (t == NULL || json_object_set_new(b, "tpm", t) != 0) {
            json_decref(b);
            return NULL;
        }
    }
    s = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    return s;
}

static const char *jstr(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

void dev_refused(struct device *d, const char *transport, int status, const json_t *j)
{
    json_int_t code = json_integer_value(json_object_get(j, "errorCode"));

    if (code != 0)
        dev_finish(d, DEV_ERROR, "%s %d %lld", transport, status, (long long)code);
    else
        dev_finish(d, DEV_ERROR, "%s %d", transport, status);
}

enum judge dev_judge(struct device *d, const json_t *j, int retry_after, int *wait)
{
    const struct bench_opts *o = d->th->sh->o;
    const char *status = jstr(j, "status");
    const char *opid = jstr(j, "operationId");

    if (status == NULL) {
        dev_finish(d, DEV_ERROR, "answer without status");
        return JUDGE_DONE;
    }
    if (strcmp(status, "assigned") == 0) {
        if (d->tpm != NULL && tpm_check_assigned(d, j) != 0)
            dev_finish(d, DEV_ERROR, "tpm: assigned result without a usable hub key blob");
        else
            dev_finish(d, DEV_ASSIGNED, "assigned");
        return JUDGE_DONE;
    }
    if (strcmp(status, "assigning") != 0) {
        json_int_t code = json_integer_value(
            json_object_get(json_object_get(j, "registrationState"), "errorCode"));

        dev_finish(d, DEV_ERROR, "status %s %lld", status, (long long)code);
        return JUDGE_DONE;
    }
    if (opid == NULL || strlen(opid) >= sizeof(d->opid)) {
        dev_finish(d, DEV_ERROR, "assigning answer without a usable operationId");
        return JUDGE_DONE;
    }
    if (d->polls >= o->max_polls) {
        dev_finish(d, DEV_ERROR, "still assigning after %u polls", d->polls);
        return JUDGE_DONE;
    }
    snprintf(d->opid, sizeof(d->opid), "%s", opid);
    if (!o->ignore_retry_after && retry_after > 0) {
        d->th->stats.retry_after_waits++;
        *wait = retry_after;
        return JUDGE_WAIT;
    }
    return JUDGE_POLL;
}
