/*
 * Assignment: where an authenticated device goes and what is done there
 * (service-API doc §9.2-9.5). Given the enrollment the device proved it
 * belongs to and its previous registration record, assign_compute picks the
 * hub (hashed, static, custom webhook, geoLatency -> hashed), applies the
 * reprovision policy, runs the hubs' connectors (create at the new hub,
 * remove from the old one) and returns the final registration state:
 * "assigned", or "failed" with an error code.
 *
 * Most registrations need no network: record-only hubs and no custom policy.
 * They are computed on the worker's loop (assign_needs_thread() == false).
 * The others are queued to a small pool of assigner threads with their own
 * store connections; the device meanwhile sees "assigning" through its
 * operation. Jobs of one registration id always go to the same thread, so
 * they run in order.
 */
#ifndef PROV_SERVER_ASSIGN_H
#define PROV_SERVER_ASSIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "../common/limits.h"
#include "config.h"

struct store;

enum assign_kind {
    ASSIGN_PLACE,  /* place a device (a registration) */
    ASSIGN_REMOVE, /* remove a device from a hub (its registration record was deleted) */
};

struct assign_job {
    enum assign_kind kind;
    char scope[PROV_MAX_SCOPE + 1];
    char registration_id[PROV_MAX_REG_ID + 1];
    char device_id[PROV_MAX_REG_ID + 1];
    char operation_id[80];
    char created[40];     /* the record's createdDateTimeUtc */
    char attestation[16]; /* "symmetricKey", "x509", "tpm" */
    json_t *enrollment;   /* owned: individual enrollment or group */
    bool is_group;
    char group_id[PROV_MAX_REG_ID + 1];
    json_t *x509;    /* owned or NULL: registrationState.x509 */
    json_t *tpm;     /* owned or NULL: registrationState.tpm */
    json_t *payload; /* owned or NULL: the device's payload */
    json_t *prev;    /* owned or NULL: the previous registration record */
    uint8_t key[64]; /* the device's hub key (attest_match.hub_key), wiped on free */
    size_t key_len;
    char hub[256];                   /* ASSIGN_REMOVE: the hub to remove device_id from */
    const struct cfg_hub *local_hub; /* the choice without a webhook, once local_hub_known */
    bool local_hub_known;
    struct assign_job *next;
};

/* Frees a job and wipes its key. */
void assign_job_free(struct assign_job *job);

/* true when placing the device needs a connector or a webhook (must not run on a loop). */
bool assign_needs_thread(const struct config *cfg, struct assign_job *job);

/*
 * The final registration state of job (a new object; NULL only when out of
 * memory). may_block false: only record hubs and no webhook (see above).
 * etag and now go into the document.
 */
json_t *assign_compute(const struct config *cfg, struct assign_job *job, const char *etag,
                       const char *now);

/* The "assigning" record written while an assigner works: the previous one, or a new one. */
json_t *assign_pending_state(const struct assign_job *job, const char *etag, const char *now);

/*
 * Commits state as the registration record and {operationId, status,
 * registrationState} as the operation, in one transaction: through cm when
 * there is one (queued, or waited for when wait is true), else on st.
 */
struct committer;
int assign_commit(struct store *st, struct committer *cm, bool wait, const struct assign_job *job,
                  const json_t *state, const char *etag, const char *now);

/* Opens the connectors of the configured hubs (hub->ops, hub->state). */
int hub_open_all(struct config *cfg, char *err, size_t errlen);
void hub_close_all(struct config *cfg);

/* The assigner threads. */
struct assigner;
int assigner_start(const struct config *cfg, const char *store_path, struct committer *cm,
                   struct assigner **out, char *err, size_t errlen);
/* Lets running jobs finish; queued ones are dropped (their devices retry). */
void assigner_stop(struct assigner *a);
/* false when the queue is full (the device is told to retry later). */
bool assigner_has_room(struct assigner *a);
/* Takes ownership of job. PROV_ELIMIT when the queue is full (job freed). */
int assigner_submit(struct assigner *a, struct assign_job *job);

/*
 * After a registration record was deleted (record_json: what it held): when
 * the device was placed at a hub with a connector, queues its removal there
 * (retried a few times, logged). Returns at once.
 */
void assign_remove_later(struct assigner *a, const struct config *cfg, const char *scope,
                         const char *registration_id, const char *record_json);

#endif
