/*
 * The daemon's runtime: N worker threads, each with its own libevent loop,
 * its own SO_REUSEPORT listening sockets and its own store handle. A
 * connection lives on one worker for its whole life.
 */
#ifndef PROV_SERVER_SERVER_H
#define PROV_SERVER_SERVER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "committer.h"
#include "config.h"

struct store;
struct event_base;
struct event;
struct evconnlistener;

struct server;
struct http_conn;
struct mqtt_conn;

/*
 * A request held until a registration commit is written (committer.h
 * tickets): a poll that would otherwise be answered "assigning" and come
 * straight back. Embedded in a connection; the worker calls release once the
 * ticket is written, or after HOLD_MAX_MS with final set (answer as it
 * stands). release runs on the worker's loop and may hold again.
 */
#define HOLD_MAX_MS 1000
struct held {
    struct held *prev, *next; /* the worker's held requests */
    bool active;
    uint64_t ticket;
    struct event *timer;
    struct worker *owner;
    void (*release)(struct held *h, bool final);
};
struct worker;
/* Holds h (h->release set) on ticket; -1 when it cannot: answer at once. */
int worker_hold(struct worker *w, struct held *h, uint64_t ticket);
/* Stops holding h (no release call); frees its timer. For a connection being freed. */
void worker_unhold(struct worker *w, struct held *h);

struct worker {
    int index;
    struct server *srv;
    const struct config *cfg;
    struct event_base *base;
    struct store *store;
    struct evconnlistener *listeners[CFG_MAX_LIST];
    struct evconnlistener *mqtt_listeners[CFG_MAX_LIST];
    struct event *stop_ev;
    pthread_t thread;
    unsigned nconns;
    struct http_conn *conns; /* open connections (owned by this thread) */
    /* polls held until their commit is written (server.c); woken by the committer */
    struct held *held;
    struct event *commit_ev;
    struct committer_listener listener;
    struct mqtt_conn *mqtt_conns; /* open MQTT connections (mqtt_conn.c) */
};

struct server {
    struct config cfg;
    SSL_CTX *ssl_ctx;
    struct worker *workers;
    int nworkers;
    char store_path[1100];
    /* housekeeping thread (operation expiry), off the event loops */
    pthread_t maint;
    struct store *maint_store;
    pthread_mutex_t maint_lock;
    pthread_cond_t maint_cond;
    bool stopping;
    bool maint_started;
    /* hub connectors and webhooks run here (assign.c), off the event loops */
    struct assigner *assigner;
    /* registration commits, batched on their own thread (committer.c) */
    struct committer *committer;
    bool webhook_init;
};

/* Per-connection state visible to the API handlers. */
struct conn {
    struct worker *w;
    SSL *ssl; /* for the TLS peer chain */
};

int server_start(struct server *srv, char *err, size_t errlen);
/* Blocks until SIGINT/SIGTERM, then stops the workers. */
void server_wait(struct server *srv);
void server_free(struct server *srv);

/* Logs (debug) the OpenSSL error that ended a TLS connection, if any; never secrets. */
struct bufferevent;
void server_log_tls_error(struct bufferevent *bev, const char *peer);

/* The request router (router.c). */
struct http_request;
struct http_response;
void router_handle(struct worker *w, struct http_request *req, struct http_response *resp);

#endif
