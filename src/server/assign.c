#include "assign.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../common/errors.h"
#include "../common/log.h"
#include "../common/util.h"
#include "../store/store.h"
#include "alloc.h"
#include "committer.h"
#include "hub.h"
#include "registration.h"
#include "webhook.h"

#define LOG_MODULE "assign"

#define ASSIGN_QUEUE_MAX 10000 /* jobs waiting, all threads together */
#define REMOVE_ATTEMPTS 3

void assign_job_free(struct assign_job *job)
{
    if (job == NULL)
        return;
    json_decref(job->enrollment);
    json_decref(job->x509);
    json_decref(job->tpm);
    json_decref(job->payload);
    json_decref(job->prev);
    prov_freezero(job, sizeof(*job));
}

static const char *json_str(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static bool reprovision_flag(const json_t *enr, const char *name)
{
    const json_t *v = json_object_get(json_object_get(enr, "reprovisionPolicy"), name);

    return v == NULL ? true : json_is_true(v);
}

static bool policy_is(const json_t *enr, const char *name)
{
    const char *p = json_str(enr, "allocationPolicy");

    return p != NULL && str_ieq(p, name);
}

/* The hub the device is at now: the previous record's assignedHub (kept while assigning or failed).
 */
static const char *current_hub_name(const struct assign_job *job)
{
    return job->prev ? json_str(job->prev, "assignedHub") : NULL;
}

/*
 * Candidate hubs: the enrollment's iotHubs when non-empty, else its legacy
 * iotHubHostName, else every linked hub that applies allocation policies.
 * Hubs no longer configured are skipped.
 */
static size_t candidate_hubs(const struct config *cfg, const json_t *enr,
                             const struct cfg_hub **out)
{
    const json_t *list = json_object_get(enr, "iotHubs");
    size_t n = 0;

    if (json_is_array(list) && json_array_size(list) > 0) {
        size_t i;
        const json_t *v;

        json_array_foreach(list, i, v)
        {
            const struct cfg_hub *h = config_find_hub(cfg, json_string_value(v));

            if (h != NULL && n < CFG_MAX_LIST)
                out[n++] = h;
        }
        return n;
    }
    if (json_str(enr, "iotHubHostName") != NULL) {
        const struct cfg_hub *h = config_find_hub(cfg, json_str(enr, "iotHubHostName"));

        if (h != NULL)
            out[n++] = h;
        return n;
    }
    for (size_t i = 0; i < cfg->nhubs && n < CFG_MAX_LIST; i++) {
        if (cfg->hubs[i].apply_allocation_policy)
            out[n++] = &cfg->hubs[i];
    }
    return n;
}

/* The hubs the device may go to (linkedHubs of the custom allocation request). */
static size_t linked_hubs(const struct config *cfg, const struct assign_job *job,
                          const struct cfg_hub **out)
{
    const struct cfg_hub *cur = config_find_hub(cfg, current_hub_name(job));

    if (cur != NULL && !reprovision_flag(job->enrollment, "updateHubAssignment")) {
        out[0] = cur;
        return 1;
    }
    return candidate_hubs(cfg, job->enrollment, out);
}

/*
 * A hub chosen without a webhook: NULL when none can take the device.
 * Decided once per job (assign_needs_thread asks first, assign_compute after).
 */
static const struct cfg_hub *choose_local(const struct config *cfg, struct assign_job *job)
{
    const struct cfg_hub *cands[CFG_MAX_LIST];
    size_t n;

    if (job->local_hub_known)
        return job->local_hub;
    n = linked_hubs(cfg, job, cands);
    if (n == 0)
        job->local_hub = NULL;
    else if (n == 1 || policy_is(job->enrollment, "static"))
        job->local_hub = cands[0];
    else /* hashed, and geoLatency (no latency data here: it falls back to hashed) */
        job->local_hub = cands[alloc_hashed(job->registration_id, cands, n)];
    job->local_hub_known = true;
    return job->local_hub;
}

bool assign_needs_thread(const struct config *cfg, struct assign_job *job)
{
    const struct cfg_hub *cur, *next;

    if (job->kind == ASSIGN_REMOVE)
        return true;
    if (policy_is(job->enrollment, "custom")) /* without a webhook URL it fails at once */
        return json_str(json_object_get(job->enrollment, "customAllocationDefinition"),
                        "webhookUrl") != NULL;
    next = choose_local(cfg, job);
    if (next != NULL && next->ops != NULL)
        return true;
    cur = config_find_hub(cfg, current_hub_name(job));
    return cur != NULL && cur->ops != NULL && cur != next;
}

/* ---- custom allocation (service-API doc §9.4) --------------------------- */

/* The enrollment as the webhook sees it: no secrets, only the attestation type. */
static json_t *enrollment_for_webhook(const json_t *enr)
{
    json_t *copy = json_deep_copy(enr);
    const char *type = json_str(json_object_get(enr, "attestation"), "type");

    if (copy != NULL)
        json_object_set_new(copy, "attestation", json_pack("{s:s}", "type", type ? type : ""));
    return copy;
}

static json_t *allocation_request(const struct assign_job *job, const struct cfg_hub *const *hubs,
                                  size_t n)
{
    json_t *req = json_object(), *ctx = json_object(), *list = json_array();
    const char *cur = current_hub_name(job);

    if (req == NULL || ctx == NULL || list == NULL) {
        json_decref(req);
        json_decref(ctx);
        json_decref(list);
        return NULL;
    }
    json_object_set_new(req, job->is_group ? "enrollmentGroup" : "individualEnrollment",
                        enrollment_for_webhook(job->enrollment));
    json_object_set_new(ctx, "registrationId", json_string(job->registration_id));
    if (cur != NULL) {
        json_object_set_new(ctx, "currentIotHubHostName", json_string(cur));
        if (json_str(job->prev, "deviceId") != NULL)
            json_object_set_new(ctx, "currentDeviceId",
                                json_string(json_str(job->prev, "deviceId")));
    }
    if (strcmp(job->attestation, "x509") == 0)
        json_object_set_new(ctx, "x509", job->x509 ? json_incref(job->x509) : json_object());
    else
        json_object_set_new(ctx, job->attestation, json_object());
    if (job->payload != NULL)
        json_object_set(ctx, "payload", job->payload);
    json_object_set_new(req, "deviceRuntimeContext", ctx);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, json_string(hubs[i]->hostname));
    json_object_set_new(req, "linkedHubs", list);
    return req;
}

struct choice {
    const struct cfg_hub *hub;
    json_t *twin;    /* owned or NULL: the webhook's initialTwin */
    json_t *payload; /* owned or NULL: the webhook's payload */
    int error_code;
    char message[300];
};

static void choice_fail(struct choice *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void choice_fail(struct choice *c, int code, const char *fmt, ...)
{
    va_list ap;

    c->hub = NULL;
    c->error_code = code;
    va_start(ap, fmt);
    vsnprintf(c->message, sizeof(c->message), fmt, ap);
    va_end(ap);
}

static void choose_custom(const struct config *cfg, const struct assign_job *job, struct choice *c)
{
    const struct cfg_hub *hubs[CFG_MAX_LIST];
    size_t n = linked_hubs(cfg, job, hubs);
    const json_t *def = json_object_get(job->enrollment, "customAllocationDefinition");
    const char *url = json_str(def, "webhookUrl");
    json_t *req, *answer = NULL;
    const char *host;
    char err[256];

    if (url == NULL) {
        choice_fail(
            c, DPS_CUSTOM_ALLOCATION_FAILED,
            "custom allocation: the enrollment has no customAllocationDefinition.webhookUrl");
        return;
    }
    if (n == 0) {
        choice_fail(c, DPS_HUB_NOT_SPECIFIED, "no linked hub is available for this enrollment");
        return;
    }
    req = allocation_request(job, hubs, n);
    if (req == NULL) {
        choice_fail(c, DPS_INTERNAL, "internal error");
        return;
    }
    if (custom_allocation_call(url, cfg->custom_allocation_timeout, req, &answer, err,
                               sizeof(err)) != 0) {
        json_decref(req);
        choice_fail(c, DPS_CUSTOM_ALLOCATION_FAILED, "%s", err);
        return;
    }
    json_decref(req);
    host = json_str(answer, "iotHubHostName");
    for (size_t i = 0; i < n && host != NULL; i++) {
        if (str_ieq(hubs[i]->hostname, host))
            c->hub = hubs[i];
    }
    if (c->hub == NULL) {
        choice_fail(c, DPS_CUSTOM_ALLOCATION_FAILED,
                    "custom allocation webhook chose '%.100s', which is not a linked hub of this "
                    "enrollment",
                    host ? host : "");
        json_decref(answer);
        return;
    }
    if (json_is_object(json_object_get(answer, "initialTwin")))
        c->twin = json_incref(json_object_get(answer, "initialTwin"));
    if (json_object_get(answer, "payload") != NULL &&
        !json_is_null(json_object_get(answer, "payload")))
        c->payload = json_incref(json_object_get(answer, "payload"));
    json_decref(answer);
}

/* ---- the final state ----------------------------------------------------- */

static json_t *quoted_etag(const char *etag)
{
    char q[64];

    snprintf(q, sizeof(q), "\"%s\"", etag);
    return json_string(q);
}

/* assignedHub and deviceId of where the device is now, if anywhere, into record s. */
static void keep_current_place(const struct assign_job *job, json_t *s)
{
    const char *cur = current_hub_name(job);

    if (s != NULL && cur != NULL) {
        json_object_set_new(s, "assignedHub", json_string(cur));
        if (json_str(job->prev, "deviceId") != NULL)
            json_object_set_new(s, "deviceId", json_string(json_str(job->prev, "deviceId")));
    }
}

/*
 * A failed record. It keeps assignedHub and deviceId of where the device still
 * is (if anywhere), so the next registration knows what to move or remove.
 */
static json_t *failed_state(const struct assign_job *job, int code, const char *message,
                            const char *etag, const char *now)
{
    json_t *s = json_pack("{s:s, s:s, s:s, s:i, s:s, s:s, s:o}", "registrationId",
                          job->registration_id, "createdDateTimeUtc", job->created, "status",
                          "failed", "errorCode", code, "errorMessage", message,
                          "lastUpdatedDateTimeUtc", now, "etag", quoted_etag(etag));

    keep_current_place(job, s);
    plog(LOG_WARN, "%s/%s: registration failed (%d): %s", job->scope, job->registration_id, code,
         message);
    return s;
}

static void fill_device(const struct assign_job *job, const json_t *twin, struct hub_device *d)
{
    memset(d, 0, sizeof(*d));
    d->device_id = job->device_id;
    d->registration_id = job->registration_id;
    d->attestation = job->attestation;
    if (job->key_len > 0) {
        d->key = job->key;
        d->key_len = job->key_len;
    }
    if (strcmp(job->attestation, "x509") == 0) {
        d->x509_cn = job->registration_id;
        /* the thumbprint attestation already computed for registrationState.x509 */
        d->x509_thumbprint =
            json_str(json_object_get(job->x509, "certificateInfo"), "sha256Thumbprint");
    }
    d->initial_twin = twin;
    d->iot_edge =
        json_is_true(json_object_get(json_object_get(job->enrollment, "capabilities"), "iotEdge"));
}

json_t *assign_compute(const struct config *cfg, struct assign_job *job, const char *etag,
                       const char *now)
{
    struct choice c = {0};
    const char *cur_name = current_hub_name(job);
    const struct cfg_hub *cur = config_find_hub(cfg, cur_name);
    bool migrate = reprovision_flag(job->enrollment, "migrateDeviceData");
    bool moved;
    const char *substatus = "initialAssignment";
    const json_t *twin;
    json_t *state;
    char err[300];

    if (policy_is(job->enrollment, "custom")) {
        choose_custom(cfg, job, &c);
    } else {
        c.hub = choose_local(cfg, job);
        if (c.hub == NULL)
            choice_fail(&c, DPS_HUB_NOT_SPECIFIED,
                        "no linked hub is available for this enrollment");
    }
    if (c.hub == NULL) {
        state = failed_state(job, c.error_code, c.message, etag, now);
        goto out;
    }
    moved = cur_name != NULL && !str_ieq(cur_name, c.hub->hostname);
    if (moved)
        substatus = migrate ? "deviceDataMigrated" : "deviceDataReset";
    /*
     * The initial twin goes out on a first assignment, on any move (provd keeps
     * no twin of its own to migrate) and on a reset; a re-registration that
     * keeps its hub and its data leaves the hub's configuration alone.
     */
    twin = c.twin ? c.twin : json_object_get(job->enrollment, "initialTwin");
    if (cur_name != NULL && !moved && migrate)
        twin = NULL;
    else if (twin == NULL || json_is_null(twin))
        twin = json_object(); /* nothing configured: clear what an earlier assignment left */
    else
        json_incref((json_t *)twin);
    if (c.hub->ops != NULL) {
        struct hub_device d;

        fill_device(job, twin, &d);
        if (c.hub->ops->provision(c.hub->state, c.hub->hostname, &d, err, sizeof(err)) != 0) {
            json_decref((json_t *)twin);
            choice_fail(&c, DPS_HUB_OPERATION_FAILED, "hub %s: %s", c.hub->hostname, err);
            state = failed_state(job, c.error_code, c.message, etag, now);
            goto out;
        }
    }
    json_decref((json_t *)twin);
    if (moved && cur != NULL && cur->ops != NULL &&
        cur->ops->deprovision(cur->state, cur->hostname,
                              json_str(job->prev, "deviceId") ? json_str(job->prev, "deviceId")
                                                              : job->device_id,
                              err, sizeof(err)) != 0) {
        char undo[300];

        /* the device stays where it was: take back what was created at the new hub */
        if (c.hub->ops != NULL && c.hub->ops->deprovision(c.hub->state, c.hub->hostname,
                                                          job->device_id, undo, sizeof(undo)) != 0)
            plog(LOG_ERROR, "%s/%s: could not undo the identity at %s: %s", job->scope,
                 job->registration_id, c.hub->hostname, undo);
        choice_fail(&c, DPS_HUB_OPERATION_FAILED, "removing the device from hub %s: %s",
                    cur->hostname, err);
        state = failed_state(job, c.error_code, c.message, etag, now);
        goto out;
    } else if (moved && cur == NULL) {
        plog(LOG_WARN, "%s/%s: moved from %s, which is no longer a linked hub: not removed there",
             job->scope, job->registration_id, cur_name);
    }
    state =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o}", "registrationId",
                  job->registration_id, "createdDateTimeUtc", job->created, "assignedHub",
                  c.hub->hostname, "deviceId", job->device_id, "status", "assigned", "substatus",
                  substatus, "lastUpdatedDateTimeUtc", now, "etag", quoted_etag(etag));
    if (state == NULL)
        goto out;
    /* the device's payload comes back to it, unless a custom-allocation webhook gave one */
    if (c.payload != NULL)
        json_object_set(state, "payload", c.payload);
    else if (json_is_object(job->payload))
        json_object_set(state, "payload", job->payload);
    if (job->x509 != NULL)
        json_object_set(state, "x509", job->x509);
    else if (job->tpm != NULL)
        json_object_set(state, "tpm", job->tpm);
    else if (job->is_group)
        json_object_set_new(state, "symmetricKey",
                            json_pack("{s:s}", "enrollmentGroupId", job->group_id));
    plog(LOG_INFO, "%s/%s: assigned to %s as %s (%s%s%s)", job->scope, job->registration_id,
         c.hub->hostname, job->device_id, substatus, job->is_group ? ", group " : "",
         job->is_group ? job->group_id : "");
out:
    json_decref(c.twin);
    json_decref(c.payload);
    return state;
}

json_t *assign_pending_state(const struct assign_job *job, const char *etag, const char *now)
{
    json_t *s = json_pack("{s:s, s:s, s:s, s:s, s:o}", "registrationId", job->registration_id,
                          "createdDateTimeUtc", job->created, "status", "assigning",
                          "lastUpdatedDateTimeUtc", now, "etag", quoted_etag(etag));

    keep_current_place(job, s);
    return s;
}

int assign_commit(struct store *st, struct committer *cm, bool wait, const struct assign_job *job,
                  const json_t *state, const char *etag, const char *now)
{
    struct store_doc reg = {0}, op = {0};
    const char *status = json_str(state, "status");
    json_t *opj = json_pack("{s:s, s:s, s:O}", "operationId", job->operation_id, "status",
                            status ? status : "failed", "registrationState", state);
    char *state_text = json_dumps(state, JSON_COMPACT);
    char *op_text = opj ? json_dumps(opj, JSON_COMPACT) : NULL;
    long long expires = (long long)time(NULL) + PROV_OPERATION_TTL_SECONDS;
    int r = PROV_ENOMEM;

    if (state_text != NULL && op_text != NULL) {
        reg.id = (char *)job->registration_id;
        reg.etag = (char *)etag;
        reg.json = state_text;
        reg.created = (char *)job->created;
        reg.updated = (char *)now;
        reg.group_id = job->is_group ? (char *)job->group_id : NULL;
        op.id = (char *)job->operation_id;
        op.json = op_text;
        op.created = (char *)now;
        if (cm == NULL)
            r = st->ops->registration_commit(st, job->scope, &reg, &op, expires);
        else if (wait)
            r = committer_commit(cm, job->scope, &reg, &op, expires);
        else
            r = committer_submit(cm, job->scope, &reg, &op, expires);
    }
    free(state_text);
    free(op_text);
    json_decref(opj);
    return r;
}

/* ---- connectors ---------------------------------------------------------- */

const struct hub_connector_ops *hub_connector_for(const char *url)
{
    if (strncmp(url, "mosquitto://", 12) == 0 || strncmp(url, "mosquittos://", 13) == 0)
        return &hub_mosquitto_ops;
    if (strncmp(url, "https://", 8) == 0 || strncmp(url, "http://", 7) == 0)
        return &hub_webhook_ops;
    return NULL;
}

int hub_open_all(struct config *cfg, char *err, size_t errlen)
{
    for (size_t i = 0; i < cfg->nhubs; i++) {
        struct cfg_hub *h = &cfg->hubs[i];
        char why[256] = "";

        if (h->url[0] == '\0')
            continue;
        h->ops = hub_connector_for(h->url);
        if (h->ops == NULL || h->ops->open(h->url, &h->state, why, sizeof(why)) != 0) {
            h->ops = NULL;
            snprintf(err, errlen, "--hub %s: %s", h->hostname, why[0] ? why : "unknown connector");
            return PROV_EINVAL;
        }
        plog(LOG_INFO, "hub %s: %s connector (weight %u%s)", h->hostname, h->ops->name, h->weight,
             h->apply_allocation_policy ? "" : ", only when named by an enrollment");
    }
    return 0;
}

void hub_close_all(struct config *cfg)
{
    for (size_t i = 0; i < cfg->nhubs; i++) {
        struct cfg_hub *h = &cfg->hubs[i];

        if (h->ops != NULL)
            h->ops->close(h->state);
        h->ops = NULL;
        h->state = NULL;
    }
}

/* ---- assigner threads ---------------------------------------------------- */

struct assigner_thread {
    struct assigner *a;
    pthread_t thread;
    struct store *store;
    struct assign_job *head, *tail;
    bool started;
};

struct assigner {
    const struct config *cfg;
    struct committer *committer; /* final commits go through it, after the "assigning" one */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stopping;
    size_t queued;
    int n;
    struct assigner_thread *threads;
};

static void run_remove(struct assigner *a, struct assign_job *job)
{
    const struct cfg_hub *h = config_find_hub(a->cfg, job->hub);
    char err[300];

    if (h == NULL || h->ops == NULL)
        return;
    for (int attempt = 1; attempt <= REMOVE_ATTEMPTS; attempt++) {
        if (h->ops->deprovision(h->state, h->hostname, job->device_id, err, sizeof(err)) == 0) {
            plog(LOG_INFO, "%s/%s: removed %s from hub %s", job->scope, job->registration_id,
                 job->device_id, h->hostname);
            return;
        }
        plog(attempt == REMOVE_ATTEMPTS ? LOG_ERROR : LOG_WARN,
             "%s/%s: removing %s from hub %s (attempt %d of %d): %s", job->scope,
             job->registration_id, job->device_id, h->hostname, attempt, REMOVE_ATTEMPTS, err);
        if (attempt < REMOVE_ATTEMPTS)
            sleep(1);
    }
}

static void run_place(struct assigner_thread *t, struct assign_job *job)
{
    char now[40], etag[37];
    json_t *state;
    int r;

    time_now_rfc3339(now, sizeof(now));
    if (uuid_v4(etag) != 0)
        snprintf(etag, sizeof(etag), "%s", "00000000-0000-4000-8000-000000000000");
    state = assign_compute(t->a->cfg, job, etag, now);
    if (state == NULL) {
        plog(LOG_ERROR, "%s/%s: out of memory computing the assignment", job->scope,
             job->registration_id);
        return;
    }
    r = assign_commit(t->store, t->a->committer, true, job, state, etag, now);
    if (r != 0)
        plog(LOG_ERROR, "%s/%s: store commit: %s (the device retries)", job->scope,
             job->registration_id, prov_strerror(r));
    json_decref(state);
}

static void *assigner_main(void *arg)
{
    struct assigner_thread *t = arg;
    struct assigner *a = t->a;

    pthread_mutex_lock(&a->lock);
    for (;;) {
        struct assign_job *job;

        while (!a->stopping && t->head == NULL)
            pthread_cond_wait(&a->cond, &a->lock);
        if (a->stopping)
            break;
        job = t->head;
        t->head = job->next;
        if (t->head == NULL)
            t->tail = NULL;
        a->queued--;
        pthread_mutex_unlock(&a->lock);
        if (job->kind == ASSIGN_REMOVE)
            run_remove(a, job);
        else
            run_place(t, job);
        assign_job_free(job);
        pthread_mutex_lock(&a->lock);
    }
    pthread_mutex_unlock(&a->lock);
    return NULL;
}

int assigner_start(const struct config *cfg, const char *store_path, struct committer *cm,
                   struct assigner **out, char *err, size_t errlen)
{
    struct assigner *a = calloc(1, sizeof(*a));
    int n = cfg->assigners > 0 ? cfg->assigners : 4;

    *out = NULL;
    if (a == NULL || (a->threads = calloc((size_t)n, sizeof(*a->threads))) == NULL) {
        free(a);
        return PROV_ENOMEM;
    }
    a->cfg = cfg;
    a->committer = cm;
    a->n = n;
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->cond, NULL);
    for (int i = 0; i < n; i++) {
        struct assigner_thread *t = &a->threads[i];
        char serr[256];

        t->a = a;
        if (store_sqlite_open(store_path, &t->store, serr, sizeof(serr)) != 0) {
            snprintf(err, errlen, "--data-dir: %s", serr);
            assigner_stop(a);
            return PROV_ESTORE;
        }
        if (pthread_create(&t->thread, NULL, assigner_main, t) != 0) {
            snprintf(err, errlen, "cannot start the assigner threads");
            assigner_stop(a);
            return PROV_EINTERNAL;
        }
        t->started = true;
    }
    *out = a;
    return 0;
}

void assigner_stop(struct assigner *a)
{
    if (a == NULL)
        return;
    pthread_mutex_lock(&a->lock);
    a->stopping = true;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
    for (int i = 0; i < a->n; i++) {
        struct assigner_thread *t = &a->threads[i];

        if (t->started)
            pthread_join(t->thread, NULL);
        while (t->head != NULL) {
            struct assign_job *next = t->head->next;

            assign_job_free(t->head);
            t->head = next;
        }
        store_close(t->store);
    }
    pthread_mutex_destroy(&a->lock);
    pthread_cond_destroy(&a->cond);
    free(a->threads);
    free(a);
}

bool assigner_has_room(struct assigner *a)
{
    bool room;

    pthread_mutex_lock(&a->lock);
    room = a->queued < ASSIGN_QUEUE_MAX;
    pthread_mutex_unlock(&a->lock);
    return room;
}

/* FNV-1a of the lower-case registration id: one device's jobs stay on one thread, in order. */
static unsigned thread_of(const struct assigner *a, const char *rid)
{
    uint32_t h = 2166136261u;

    for (const char *p = rid; *p; p++) {
        char c = *p;

        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        h = (h ^ (uint8_t)c) * 16777619u;
    }
    return h % (unsigned)a->n;
}

int assigner_submit(struct assigner *a, struct assign_job *job)
{
    struct assigner_thread *t;

    pthread_mutex_lock(&a->lock);
    /* a little beyond the soft limit that assigner_has_room checks: no caller is refused twice */
    if (a->stopping || a->queued >= 2 * ASSIGN_QUEUE_MAX) {
        pthread_mutex_unlock(&a->lock);
        assign_job_free(job);
        return PROV_ELIMIT;
    }
    t = &a->threads[thread_of(a, job->registration_id)];
    job->next = NULL;
    if (t->tail != NULL)
        t->tail->next = job;
    else
        t->head = job;
    t->tail = job;
    a->queued++;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
    return 0;
}

void assign_remove_later(struct assigner *a, const struct config *cfg, const char *scope,
                         const char *registration_id, const char *record_json)
{
    json_t *rec = record_json ? json_loads(record_json, 0, NULL) : NULL;
    const struct cfg_hub *h = config_find_hub(cfg, json_str(rec, "assignedHub"));
    const char *device_id = json_str(rec, "deviceId");
    struct assign_job *job;

    if (a == NULL || h == NULL || h->ops == NULL || device_id == NULL ||
        (job = calloc(1, sizeof(*job))) == NULL) {
        json_decref(rec);
        return;
    }
    job->kind = ASSIGN_REMOVE;
    snprintf(job->scope, sizeof(job->scope), "%s", scope);
    snprintf(job->registration_id, sizeof(job->registration_id), "%s", registration_id);
    snprintf(job->device_id, sizeof(job->device_id), "%s", device_id);
    snprintf(job->hub, sizeof(job->hub), "%s", h->hostname);
    json_decref(rec);
    if (assigner_submit(a, job) != 0)
        plog(LOG_ERROR, "%s/%s: could not queue the removal from hub %s", scope, registration_id,
             h->hostname);
}
