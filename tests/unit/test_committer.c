/*
 * Group commit (src/server/committer.c, store registration_commit_many)
 * against a real SQLite store in a temporary directory: queued commits are
 * durable once the committer stops or a waited commit returns, a failing item
 * of a batch does not take the others with it, and committer_pending tells
 * queued operations from unknown ones.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "src/common/errors.h"
#include "src/server/committer.h"
#include "src/store/store.h"

#define SCOPE "0ne00TEST01"

struct fixture {
    char dir[64];
    char path[96];
    struct store *st; /* a reader, as a worker's */
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char err[256];

    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/provd-commit-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/provd.db", f->dir);
    if (store_sqlite_open(f->path, &f->st, err, sizeof(err)) != 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];

    store_close(f->st);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static void docs(const char *rid, const char *opid, struct store_doc *reg, struct store_doc *op)
{
    memset(reg, 0, sizeof(*reg));
    memset(op, 0, sizeof(*op));
    reg->id = (char *)rid;
    reg->etag = (char *)"e1";
    reg->json = (char *)"{\"status\":\"assigned\"}";
    reg->updated = (char *)"2026-01-01T00:00:00.000Z";
    op->id = (char *)opid;
    op->json = (char *)"{\"status\":\"assigned\"}";
}

static int op_owner(struct fixture *f, const char *opid, char *rid, size_t len)
{
    struct store_doc d = {0};
    int r = f->st->ops->operation_get(f->st, SCOPE, opid, 0, &d);

    if (r == 0)
        snprintf(rid, len, "%s", d.id);
    store_doc_release(&d);
    return r;
}

/* The store's batch: one item that fails is undone alone. */
static void test_commit_many_isolates_failures(void **state)
{
    struct fixture *f = *state;
    struct store_commit items[3];
    char rid[64];

    docs("dev-a", "op-a", &items[0].reg, &items[0].op);
    docs("dev-b", "op-a", &items[1].reg, &items[1].op); /* dev-a's operation id */
    docs("dev-c", "op-c", &items[2].reg, &items[2].op);
    for (int i = 0; i < 3; i++) {
        items[i].scope = SCOPE;
        items[i].op_expires = 1000;
        items[i].result = 99;
    }
    assert_int_equal(f->st->ops->registration_commit_many(f->st, items, 3), 0);
    assert_int_equal(items[0].result, 0);
    assert_int_equal(items[1].result, PROV_EEXISTS);
    assert_int_equal(items[2].result, 0);
    assert_int_equal(op_owner(f, "op-a", rid, sizeof(rid)), 0);
    assert_string_equal(rid, "dev-a");
    assert_int_equal(op_owner(f, "op-c", rid, sizeof(rid)), 0);
    {
        struct store_doc d = {0};

        /* dev-b's record was undone with its operation */
        assert_int_equal(f->st->ops->registration_get(f->st, SCOPE, "dev-b", &d), PROV_ENOTFOUND);
        assert_int_equal(f->st->ops->registration_get(f->st, SCOPE, "dev-c", &d), 0);
        store_doc_release(&d);
    }
}

struct submitter {
    struct committer *c;
    int first, n;
    int failures;
};

static void *submit_many(void *arg)
{
    struct submitter *s = arg;

    for (int i = s->first; i < s->first + s->n; i++) {
        char rid[32], opid[32];
        struct store_doc reg, op;

        snprintf(rid, sizeof(rid), "dev-%d", i);
        snprintf(opid, sizeof(opid), "op-%d", i);
        docs(rid, opid, &reg, &op);
        if (committer_submit(s->c, SCOPE, &reg, &op, 1000) != 0)
            s->failures++;
    }
    return NULL;
}

/* Four threads queue 2,000 commits; after stop every one is in the store. */
static void test_submit_then_stop_writes_everything(void **state)
{
    struct fixture *f = *state;
    struct committer *c;
    struct submitter s[4];
    pthread_t t[4];
    char err[256], rid[64];

    assert_int_equal(committer_start(f->path, &c, err, sizeof(err)), 0);
    for (int i = 0; i < 4; i++) {
        s[i] = (struct submitter){.c = c, .first = i * 500, .n = 500};
        assert_int_equal(pthread_create(&t[i], NULL, submit_many, &s[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(s[i].failures, 0);
    }
    committer_stop(c);
    for (int i = 0; i < 2000; i += 97) {
        char opid[32], want[32];

        snprintf(opid, sizeof(opid), "op-%d", i);
        snprintf(want, sizeof(want), "dev-%d", i);
        assert_int_equal(op_owner(f, opid, rid, sizeof(rid)), 0);
        assert_string_equal(rid, want);
    }
    assert_int_equal(op_owner(f, "op-1999", rid, sizeof(rid)), 0);
}

/* A waited commit is readable when it returns; its error comes back; pending is exact. */
static void test_commit_waits_and_pending(void **state)
{
    struct fixture *f = *state;
    struct committer *c;
    struct store_doc reg, op;
    char err[256], rid[64];

    assert_int_equal(committer_start(f->path, &c, err, sizeof(err)), 0);
    docs("Dev-W", "op-w", &reg, &op);
    assert_int_equal(committer_commit(c, SCOPE, &reg, &op, 1000), 0);
    assert_int_equal(op_owner(f, "op-w", rid, sizeof(rid)), 0);
    assert_string_equal(rid, "Dev-W");
    /* written: no longer pending */
    assert_false(committer_pending(c, SCOPE, "op-w", "dev-w"));
    /* another registration's operation id: refused, reported to the waiter */
    docs("dev-x", "op-w", &reg, &op);
    assert_int_equal(committer_commit(c, SCOPE, &reg, &op, 1000), PROV_EEXISTS);
    /* never queued */
    assert_false(committer_pending(c, SCOPE, "op-nope", "dev-w"));
    assert_false(committer_pending(NULL, SCOPE, "op-w", "dev-w"));
    committer_stop(c);
    committer_stop(NULL);
}

/* Queued and not yet written: pending, for its own registration and scope only. */
static void test_pending_while_queued(void **state)
{
    struct fixture *f = *state;
    struct committer *c;
    struct store_doc reg, op;
    char err[256];
    bool seen = false, other = false;

    assert_int_equal(committer_start(f->path, &c, err, sizeof(err)), 0);
    /* many commits at once, then look for the last one while the batch may still be queued */
    for (int round = 0; round < 50 && !seen; round++) {
        char rid[32], opid[32];

        for (int i = 0; i < 200; i++) {
            snprintf(rid, sizeof(rid), "q-%d-%d", round, i);
            snprintf(opid, sizeof(opid), "qop-%d-%d", round, i);
            docs(rid, opid, &reg, &op);
            assert_int_equal(committer_submit(c, SCOPE, &reg, &op, 1000), 0);
        }
        if (committer_pending(c, SCOPE, opid, rid)) {
            seen = true;
            other = committer_pending(c, SCOPE, opid, "someone-else") ||
                    committer_pending(c, "0ne00OTHER1", opid, rid);
        }
    }
    committer_stop(c);
    assert_true(seen);
    assert_false(other);
}

static void count_notify(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
}

/*
 * Tickets are given in queue order and done once their batch is written; a
 * listener is woken after the batch holding the ticket it waits for, not
 * before, and no more once the listeners are cleared.
 */
static void test_tickets_and_listener(void **state)
{
    struct fixture *f = *state;
    struct committer *c;
    struct committer_listener l = {0};
    atomic_int woken = 0;
    struct store_doc reg, op;
    char err[256];
    uint64_t last = 0;
    bool seen = false;

    assert_int_equal(committer_start(f->path, &c, err, sizeof(err)), 0);
    l.notify = count_notify;
    l.arg = &woken;
    atomic_init(&l.waiting, 0);
    assert_int_equal(committer_add_listener(c, &l), 0);
    assert_false(committer_done(c, 1));
    docs("t-1", "top-1", &reg, &op);
    assert_int_equal(committer_commit(c, SCOPE, &reg, &op, 1000), 0); /* ticket 1 */
    assert_true(committer_done(c, 1));
    assert_false(committer_done(c, 2));
    assert_int_equal(atomic_load(&woken), 0); /* waiting 0: nobody to wake */
    /* waiting for ticket 3: ticket 2's batch does not wake, ticket 3's does */
    atomic_store(&l.waiting, 3);
    docs("t-2", "top-2", &reg, &op);
    assert_int_equal(committer_commit(c, SCOPE, &reg, &op, 1000), 0);
    assert_int_equal(atomic_load(&woken), 0);
    docs("t-3", "top-3", &reg, &op);
    assert_int_equal(committer_commit(c, SCOPE, &reg, &op, 1000), 0);
    assert_int_equal(atomic_load(&woken), 1);
    assert_true(committer_done(c, 3));
    /* queued commits have increasing tickets, and only their own operation has one */
    for (int round = 0; round < 50 && !seen; round++) {
        char rid[32], opid[32];

        for (int i = 0; i < 200; i++) {
            uint64_t t;

            snprintf(rid, sizeof(rid), "tq-%d-%d", round, i);
            snprintf(opid, sizeof(opid), "tqop-%d-%d", round, i);
            docs(rid, opid, &reg, &op);
            assert_int_equal(committer_submit(c, SCOPE, &reg, &op, 1000), 0);
            t = committer_ticket(c, SCOPE, opid, rid);
            if (t != 0) {
                assert_true(t > last);
                assert_true(t > 3);
                assert_int_equal(committer_ticket(c, SCOPE, opid, "someone-else"), 0);
                last = t;
                seen = true;
            }
        }
    }
    assert_true(seen);
    /* cleared: a batch wakes nobody */
    committer_clear_listeners(c);
    atomic_store(&l.waiting, 1);
    atomic_store(&woken, 0);
    docs("t-4", "top-4", &reg, &op);
    assert_int_equal(committer_commit(c, SCOPE, &reg, &op, 1000), 0);
    assert_int_equal(atomic_load(&woken), 0);
    assert_int_equal(committer_ticket(NULL, SCOPE, "top-4", "t-4"), 0);
    assert_true(committer_done(NULL, 99));
    committer_stop(c);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_commit_many_isolates_failures),
        T(test_submit_then_stop_writes_everything),
        T(test_commit_waits_and_pending),
        T(test_pending_while_queued),
        T(test_tickets_and_listener),
    };

    return cmocka_run_group_tests_name("committer", tests, NULL, NULL);
}
