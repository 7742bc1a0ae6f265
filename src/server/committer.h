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
 * being written is answered "assigning" (committer_pending), so no device is
 * told "assigned" before its record is durable. Assigner threads, which must
 * order their final commit after the "assigning" one, use committer_commit,
 * which waits for durability; both go through the same FIFO.
 */
#ifndef PROV_SERVER_COMMITTER_H
#define PROV_SERVER_COMMITTER_H

#include <stdbool.h>
#include <stddef.h>

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

#endif
