/*
 * The store: enrollments, enrollment groups, registration records and
 * registration operations, keyed by ID scope. A vtable so that SQLite (the
 * embedded default) and PostgreSQL (scale-out) implement the same contract;
 * callers only ever see this header.
 *
 * Documents are JSON text owned by the service layer (src/server/model.c); the
 * store indexes a few columns beside them and never interprets the rest.
 * Identifiers (registration ids, group ids) are case-insensitive: the store
 * keys them by their lower-case form, and the documents keep the caller's
 * spelling.
 *
 * Threading: a struct store is used by one thread at a time; each worker
 * opens its own. All functions return 0 or a negative PROV_E*:
 * PROV_ENOTFOUND, PROV_EEXISTS, PROV_EPRECONDITION (etag mismatch),
 * PROV_ESTORE (backend failure, logged by the backend).
 */
#ifndef PROV_STORE_STORE_H
#define PROV_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>

#include "../common/util.h"

enum store_kind {
    STORE_ENROLLMENT = 0, /* individual enrollment, id = registration id */
    STORE_GROUP = 1,      /* enrollment group, id = enrollment group id */
    STORE_CA = 2,         /* CA certificate (proof of possession), id = certificate name */
};

/* A stored document. Strings are heap-owned; release with store_doc_release(). */
struct store_doc {
    char *id;           /* as the caller spelled it when stored */
    char *etag;         /* unquoted */
    char *json;         /* the document */
    char *created;      /* RFC 3339 */
    char *updated;      /* RFC 3339 */
    char *group_id;     /* registrations only: the group that provisioned it, or NULL */
    char *attestation;  /* enrollments/groups: "symmetricKey", "x509", "tpm", "none" */
};

void store_doc_release(struct store_doc *doc);

/* Conditions for writes. */
enum store_put_mode {
    STORE_PUT_UPSERT = 0,    /* create or replace; if_match checked when non-NULL */
    STORE_PUT_CREATE = 1,    /* fail with PROV_EEXISTS when present */
};

/* Callback for listings; return non-zero to stop early. */
typedef int (*store_list_cb)(void *arg, const struct store_doc *doc);

struct store;

/* One registration commit of a batch (registration_commit_many). */
struct store_commit {
    const char *scope;
    struct store_doc reg;
    struct store_doc op;
    long long op_expires;
    int result; /* set by the store: 0 or a negative PROV_E* */
};

struct store_ops {
    void (*close)(struct store *st);

    /* Enrollments and groups. */
    int (*enrollment_get)(struct store *st, const char *scope, enum store_kind kind,
                          const char *id, struct store_doc *out);
    /*
     * doc->id, doc->etag (new etag), doc->json, doc->attestation, doc->updated
     * are required; doc->created is used only on insert (kept on replace).
     * if_match: NULL = unconditional; "*" = must exist; else must equal the
     * stored etag (PROV_EPRECONDITION otherwise, also when absent).
     * PROV_ECONFLICT (nothing written): an X.509 document holding a
     * certificate thumbprint that another entity of the same kind holds.
     */
    int (*enrollment_put)(struct store *st, const char *scope, enum store_kind kind,
                          const struct store_doc *doc, enum store_put_mode mode,
                          const char *if_match);
    int (*enrollment_delete)(struct store *st, const char *scope, enum store_kind kind,
                             const char *id, const char *if_match);
    /*
     * Lists by ascending lower-case id strictly after `after` (NULL = from the
     * start), at most limit documents. *more is set when further documents
     * exist. attestation: NULL = all, else only that type.
     */
    int (*enrollment_list)(struct store *st, const char *scope, enum store_kind kind,
                           const char *attestation, const char *after, int limit,
                           store_list_cb cb, void *arg, bool *more);
    int (*enrollment_count)(struct store *st, const char *scope, enum store_kind kind,
                            const char *attestation, long *count);
    /*
     * The X.509 enrollments or groups (kind) of scope that hold a certificate
     * with one of these thumbprints (SHA-256 or SHA-1 hex, any case), as their
     * stored attestation.x509 says: cb for each (non-zero stops), in no
     * particular order; an entity holding several of them may come more than
     * once. An index lookup, whatever the number of enrollments.
     */
    int (*enrollment_x509_find)(struct store *st, const char *scope, enum store_kind kind,
                                const char *const *thumbprints, size_t n, store_list_cb cb,
                                void *arg);

    /* Registration records (DeviceRegistrationState documents). */
    int (*registration_get)(struct store *st, const char *scope, const char *id,
                            struct store_doc *out);
    int (*registration_delete)(struct store *st, const char *scope, const char *id,
                               const char *if_match);
    /* Registrations whose group_id equals group (case-insensitive). */
    int (*registration_list)(struct store *st, const char *scope, const char *group,
                             const char *after, int limit, store_list_cb cb, void *arg,
                             bool *more);

    /*
     * The end of a device registration, in one transaction: upsert the
     * registration record (reg; reg->created kept if one exists) and insert the
     * operation (op: op->id = operation id, op->json = the
     * RegistrationOperationStatus document, op->etag unused). Returns only once
     * the transaction is durable. Committing an operation id that exists for
     * the same registration replaces its document (an assigner finishing it).
     */
    int (*registration_commit)(struct store *st, const char *scope, const struct store_doc *reg,
                               const struct store_doc *op, long long op_expires);
    /*
     * Group commit: n registration commits in one durable transaction (one
     * fsync). Each item's result is its own (an item that fails is undone
     * without the others); when the transaction itself fails every result is
     * that error, which is also returned.
     */
    int (*registration_commit_many)(struct store *st, struct store_commit *items, size_t n);

    /* Operations by id; PROV_ENOTFOUND once expired. doc->id is the registration id. */
    int (*operation_get)(struct store *st, const char *scope, const char *operation_id,
                         long long now, struct store_doc *out);
    /* Removes expired operations; returns the count removed or an error. */
    int (*operation_expire)(struct store *st, long long now);
};

struct store {
    const struct store_ops *ops;
};

/*
 * Opens the SQLite store at path (created with its directory's permissions if
 * missing), in WAL mode, running schema migrations. err receives a message on
 * failure. Caller closes with store_close().
 */
int store_sqlite_open(const char *path, struct store **out, char *err, size_t errlen) PROV_WUR;

static inline void store_close(struct store *st)
{
    if (st != NULL)
        st->ops->close(st);
}

#endif
