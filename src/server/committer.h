/*
 * Group commit of registration records, off the event loops.
 *
 * One committer thread owns a store connection and writes queued
 * registration commits in batches: one transaction, one fsync, for every
 * commit that arrived while the previous batch was being written. Workers
 * queue and go on serving (committer_submit); nothing waits on the disk on an
 * event loop, and the workers never contend for SQLite's write lock.
 *
 * Durability is unchanged for devices: a device learns its result only by
 * polling its operation, and a poll of an operation that is still queued or
 * being written is held until its batch is written (tickets and listeners
 * below; server.c) or, where it cannot be held, answered "assigning"
 * (committer_pending), so no device is told "assigned" before its record is
 * durable. Assigner threads, which must order their final commit after the
 * "assigning" one, use committer_commit, which waits for durability; both go
 * through the same FIFO. A batch gathers for up to 2 ms after its first
 * commit (COMMIT_WINDOW_US in committer.c): one fsync for more commits.
 */
#ifndef PROV_SERVER_COMMITTER_H
#define PROV_SERVER_COMMITTER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct committer;
struct store_doc;

/* Opens the committer's own store connection and starts its thread. */
int committer_start(const char *store_path, struct committer **out, char *err, size_t errlen);
/* Writes what is queued, then stops the thread and closes its store. NULL is fine. */
void committer_stop(struct committer *c);

/*
 * Queues the commit of a registration record and its operation (the
 * documents are copied). 0 at once, or PROV_ENOMEM / PROV_ELIMIT (queue full:
 * the caller tells the device to retry) when nothing was queued.
 */
int committer_submit(struct committer *c, const char *scope, const struct store_doc *reg,
                     const struct store_doc *op, long long op_expires);
/* Queues the same and waits until it is durable: the store's result. */
int committer_commit(struct committer *c, const char *scope, const struct store_doc *reg,
                     const struct store_doc *op, long long op_expires);

/* true while the operation (of that scope and registration id) is queued or being written. */
bool committer_pending(struct committer *c, const char *scope, const char *operation_id,
                       const char *registration_id);

/*
 * Tickets: every queued commit gets the next number (1, 2, ...), and batches
 * are written in that order. committer_ticket gives the ticket of the
 * operation while it is queued or being written (0 when it is not);
 * committer_done tells, without a lock, whether that ticket is written. A
 * poll of a queued operation is held on its ticket rather than answered
 * "assigning" (device_api.c, server.c), so a device that polls at once does
 * not poll again and again while its commit gathers.
 */
uint64_t committer_ticket(struct committer *c, const char *scope, const char *operation_id,
                          const char *registration_id);
bool committer_done(struct committer *c, uint64_t ticket);

/*
 * A worker holding requests on tickets. After each batch, notify(arg) is
 * called on the committer thread, with its lock held (it must not block nor
 * call back into the committer), when waiting is not 0 and at most the last
 * ticket written. The worker stores its lowest awaited ticket in waiting
 * (0: none) and checks committer_done after storing it, so no wake-up is
 * lost. Listeners are added before requests arrive and cleared (all at once)
 * before they are freed.
 */
#define COMMIT_LISTENERS_MAX 256
struct committer_listener {
    void (*notify)(void *arg);
    void *arg;
    _Atomic uint64_t waiting;
};
int committer_add_listener(struct committer *c, struct committer_listener *l);
void committer_clear_listeners(struct committer *c);

#endif
