#include "committer.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/errors.h"
#include "../common/log.h"
#include "../common/util.h"
#include "../store/store.h"

#define LOG_MODULE "commit"

#define COMMIT_QUEUE_MAX 20000 /* commits waiting; beyond, devices are asked to retry */
#define COMMIT_BATCH_MAX 512   /* commits per transaction */

/* A queued commit: copies of the documents, in one allocation with the struct. */
struct pending {
    struct pending *next;
    char *scope;
    struct store_doc reg;
    struct store_doc op;
    long long op_expires;
    bool waited; /* committer_commit waits for it (and frees it) */
    bool done;
    int result;
};

struct committer {
    pthread_t thread;
    bool started;
    struct store *store;
    pthread_mutex_t lock;
    pthread_cond_t work;    /* something queued, or stopping */
    pthread_cond_t written; /* a batch was written */
    struct pending *head, *tail;
    size_t queued;
    struct pending *batch[COMMIT_BATCH_MAX]; /* being written */
    size_t nbatch;
    bool stopping;
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

static void *committer_main(void *arg)
{
    struct committer *c = arg;

    pthread_mutex_lock(&c->lock);
    for (;;) {
        size_t n = 0;

        while (c->head == NULL && !c->stopping)
            pthread_cond_wait(&c->work, &c->lock);
        if (c->head == NULL)
            break; /* stopping, and everything is written */
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
            else
                free(c->batch[i]);
        }
        c->nbatch = 0;
        pthread_cond_broadcast(&c->written);
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
    pthread_cond_init(&c->work, NULL);
    pthread_cond_init(&c->written, NULL);
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
    pthread_cond_destroy(&c->written);
    free(c);
}

static int enqueue(struct committer *c, struct pending *p)
{
    pthread_mutex_lock(&c->lock);
    if (c->stopping || c->queued >= COMMIT_QUEUE_MAX) {
        pthread_mutex_unlock(&c->lock);
        return PROV_ELIMIT;
    }
    if (c->tail != NULL)
        c->tail->next = p;
    else
        c->head = p;
    c->tail = p;
    c->queued++;
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
        pthread_cond_wait(&c->written, &c->lock);
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

bool committer_pending(struct committer *c, const char *scope, const char *operation_id,
                       const char *registration_id)
{
    bool found = false;

    if (c == NULL)
        return false;
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->nbatch && !found; i++)
        found = matches(c->batch[i], scope, operation_id, registration_id);
    for (const struct pending *p = c->head; p != NULL && !found; p = p->next)
        found = matches(p, scope, operation_id, registration_id);
    pthread_mutex_unlock(&c->lock);
    return found;
}
