#include "committer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/errors.h"
#include "../common/log.h"
#include "../common/util.h"
#include "../store/store.h"

#define LOG_MODULE "commit"

#define COMMIT_QUEUE_MAX 20000 /* commits waiting; beyond, devices are asked to retry */
#define COMMIT_BATCH_MAX 512   /* commits per transaction */
/*
 * How long the committer lets a batch gather after its first commit arrives
 * (or until COMMIT_BATCH_MAX). Each batch costs an fsync and the journal work
 * behind it, the larger part of a commit's CPU: at 2,000 registrations/s
 * without a window batches held 2.8 commits. Devices waiting on a commit are
 * held, not told to come back (committer_wait), so the window adds at most
 * this much to a registration's latency.
 */
#define COMMIT_WINDOW_US 2000

/* A queued commit: copies of the documents, in one allocation with the struct. */
struct pending {
    struct pending *next;
    char *scope;
    struct store_doc reg;
    struct store_doc op;
    long long op_expires;
    uint64_t ticket; /* its place in the queue: 1, 2, ... */
    bool waited; /* committer_commit waits for it (and frees it) */
    bool done;
    int result;
};

struct committer {
    pthread_t thread;
    bool started;
    struct store *store;
    pthread_mutex_t lock;
    pthread_cond_t work;    /* something queued (while idle), a batch is full, or stopping */
    bool idle;              /* the thread waits for a first commit */
    pthread_cond_t done;    /* a batch was written */
    struct pending *head, *tail;
    size_t queued;
    struct pending *batch[COMMIT_BATCH_MAX]; /* being written */
    size_t nbatch;
    bool stopping;
    uint64_t last_ticket;             /* given to the newest commit queued */
    _Atomic uint64_t written;         /* every ticket up to this one is written */
    struct committer_listener *listeners[COMMIT_LISTENERS_MAX];
    size_t nlisteners;
};

static size_t slen(const char *s)
{
    return s != NULL ? strlen(s) + 1 : 0;
}

/* Copies s (may be NULL) to *at and advances it. */
static char *put(char **at, const char *s)
{
    char *out;
    size_t n = slen(s);

    if (n == 0)
        return NULL;
    out = *at;
    memcpy(out, s, n);
    *at += n;
    return out;
}

static struct pending *pending_new(const char *scope, const struct store_doc *reg,
                                   const struct store_doc *op, long long op_expires)
{
    size_t size = sizeof(struct pending) + slen(scope) + slen(reg->id) + slen(reg->etag) +
                  slen(reg->json) + slen(reg->created) + slen(reg->updated) + slen(reg->group_id) +
                  slen(op->id) + slen(op->json) + slen(op->created);
    struct pending *p = calloc(1, size);
    char *at;

    if (p == NULL)
        return NULL;
    at = (char *)(p + 1);
    p->scope = put(&at, scope);
    p->reg.id = put(&at, reg->id);
    p->reg.etag = put(&at, reg->etag);
    p->reg.json = put(&at, reg->json);
    p->reg.created = put(&at, reg->created);
    p->reg.updated = put(&at, reg->updated);
    p->reg.group_id = put(&at, reg->group_id);
    p->op.id = put(&at, op->id);
    p->op.json = put(&at, op->json);
    p->op.created = put(&at, op->created);
    p->op_expires = op_expires;
    return p;
}

/* Writes one batch (taken off the queue under the lock); called without the lock. */
static void write_batch(struct committer *c, struct pending **batch, size_t n)
{
    struct store_commit items[COMMIT_BATCH_MAX];

    for (size_t i = 0; i < n; i++) {
        items[i].scope = batch[i]->scope;
        items[i].reg = batch[i]->reg;
        items[i].op = batch[i]->op;
        items[i].op_expires = batch[i]->op_expires;
        items[i].result = 0;
    }
    (void)c->store->ops->registration_commit_many(c->store, items, n);
    for (size_t i = 0; i < n; i++) {
        batch[i]->result = items[i].result;
        if (items[i].result != 0 && !batch[i]->waited)
            plog(LOG_ERROR, "%s/%s: registration commit failed: %s (the device registers again)",
                 batch[i]->scope, batch[i]->reg.id, prov_strerror(items[i].result));
    }
}

/* Lets the batch grow for COMMIT_WINDOW_US; called with the lock held. */
static void gather(struct committer *c)
{
    struct timespec until;

    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += COMMIT_WINDOW_US * 1000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (c->queued < COMMIT_BATCH_MAX && !c->stopping &&
           pthread_cond_timedwait(&c->work, &c->lock, &until) == 0)
        ;
}

/*
 * Wakes the listeners that wait for a ticket up to written (with the lock
 * held). A listener stores its lowest ticket before it checks committer_done,
 * and this runs after `written` was stored: one of the two sees the other.
 */
static void notify(struct committer *c, uint64_t written)
{
    for (size_t i = 0; i < c->nlisteners; i++) {
        uint64_t w = atomic_load(&c->listeners[i]->waiting);

        if (w != 0 && w <= written)
            c->listeners[i]->notify(c->listeners[i]->arg);
    }
}

static void *committer_main(void *arg)
{
    struct committer *c = arg;

    pthread_mutex_lock(&c->lock);
    for (;;) {
        size_t n = 0;

        while (c->head == NULL && !c->stopping) {
            c->idle = true;
            pthread_cond_wait(&c->work, &c->lock);
        }
        c->idle = false;
        if (c->head == NULL)
            break; /* stopping, and everything is written */
        gather(c);
        while (c->head != NULL && n < COMMIT_BATCH_MAX) {
            c->batch[n++] = c->head;
            c->head = c->head->next;
            c->queued--;
        }
        if (c->head == NULL)
            c->tail = NULL;
        c->nbatch = n;
        pthread_mutex_unlock(&c->lock);
        write_batch(c, c->batch, n);
        pthread_mutex_lock(&c->lock);
        for (size_t i = 0; i < n; i++) {
            if (c->batch[i]->waited)
                c->batch[i]->done = true;
        }
        atomic_store(&c->written, c->batch[n - 1]->ticket);
        notify(c, c->batch[n - 1]->ticket);
        for (size_t i = 0; i < n; i++) {
            if (!c->batch[i]->waited)
                free(c->batch[i]);
        }
        c->nbatch = 0;
        pthread_cond_broadcast(&c->done);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

int committer_start(const char *store_path, struct committer **out, char *err, size_t errlen)
{
    struct committer *c = calloc(1, sizeof(*c));
    char serr[256];

    *out = NULL;
    if (c == NULL)
        return PROV_ENOMEM;
    pthread_mutex_init(&c->lock, NULL);
    {
        pthread_condattr_t ca;

        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&c->work, &ca);
        pthread_condattr_destroy(&ca);
    }
    pthread_cond_init(&c->done, NULL);
    if (store_sqlite_open(store_path, &c->store, serr, sizeof(serr)) != 0) {
        snprintf(err, errlen, "--data-dir: %s", serr);
        committer_stop(c);
        return PROV_ESTORE;
    }
    if (pthread_create(&c->thread, NULL, committer_main, c) != 0) {
        snprintf(err, errlen, "cannot start the commit thread");
        committer_stop(c);
        return PROV_EINTERNAL;
    }
    c->started = true;
    *out = c;
    return 0;
}

void committer_stop(struct committer *c)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    c->stopping = true;
    pthread_cond_broadcast(&c->work);
    pthread_mutex_unlock(&c->lock);
    if (c->started)
        pthread_join(c->thread, NULL);
    store_close(c->store);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->work);
    pthread_cond_destroy(&c->done);
    free(c);
}

static int enqueue(struct committer *c, struct pending *p)
{
    pthread_mutex_lock(&c->lock);
    if (c->stopping || c->queued >= COMMIT_QUEUE_MAX) {
        pthread_mutex_unlock(&c->lock);
        return PROV_ELIMIT;
    }
    p->ticket = ++c->last_ticket;
    if (c->tail != NULL)
        c->tail->next = p;
    else
        c->head = p;
    c->tail = p;
    c->queued++;
    /* the thread sleeps through a gathering window unless the batch is full */
    if (c->idle || c->queued >= COMMIT_BATCH_MAX)
        pthread_cond_signal(&c->work);
    pthread_mutex_unlock(&c->lock);
    return 0;
}

int committer_submit(struct committer *c, const char *scope, const struct store_doc *reg,
                     const struct store_doc *op, long long op_expires)
{
    struct pending *p = pending_new(scope, reg, op, op_expires);
    int r;

    if (p == NULL)
        return PROV_ENOMEM;
    if ((r = enqueue(c, p)) != 0)
        free(p);
    return r;
}

int committer_commit(struct committer *c, const char *scope, const struct store_doc *reg,
                     const struct store_doc *op, long long op_expires)
{
    struct pending *p = pending_new(scope, reg, op, op_expires);
    int r;

    if (p == NULL)
        return PROV_ENOMEM;
    p->waited = true;
    if ((r = enqueue(c, p)) != 0) {
        free(p);
        return r;
    }
    pthread_mutex_lock(&c->lock);
    while (!p->done)
        pthread_cond_wait(&c->done, &c->lock);
    pthread_mutex_unlock(&c->lock);
    r = p->result;
    free(p);
    return r;
}

static bool matches(const struct pending *p, const char *scope, const char *operation_id,
                    const char *registration_id)
{
    return strcmp(p->op.id, operation_id) == 0 && strcmp(p->scope, scope) == 0 &&
           str_ieq(p->reg.id, registration_id);
}

uint64_t committer_ticket(struct committer *c, const char *scope, const char *operation_id,
                          const char *registration_id)
{
    uint64_t ticket = 0;

    if (c == NULL)
        return 0;
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->nbatch && ticket == 0; i++) {
        if (matches(c->batch[i], scope, operation_id, registration_id))
            ticket = c->batch[i]->ticket;
    }
    for (const struct pending *p = c->head; p != NULL && ticket == 0; p = p->next) {
        if (matches(p, scope, operation_id, registration_id))
            ticket = p->ticket;
    }
    pthread_mutex_unlock(&c->lock);
    return ticket;
}

bool committer_pending(struct committer *c, const char *scope, const char *operation_id,
                       const char *registration_id)
{
    return committer_ticket(c, scope, operation_id, registration_id) != 0;
}

bool committer_done(struct committer *c, uint64_t ticket)
{
    return c == NULL || atomic_load(&c->written) >= ticket;
}

int committer_add_listener(struct committer *c, struct committer_listener *l)
{
    int r = 0;

    pthread_mutex_lock(&c->lock);
    if (c->nlisteners == COMMIT_LISTENERS_MAX)
        r = PROV_ELIMIT;
    else
        c->listeners[c->nlisteners++] = l;
    pthread_mutex_unlock(&c->lock);
    return r;
}

void committer_clear_listeners(struct committer *c)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    c->nlisteners = 0;
    pthread_mutex_unlock(&c->lock);
}
