#include "registration.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/errors.h"
#include "../common/limits.h"
#include "../common/log.h"
#include "../common/sas.h"
#include "../common/util.h"
#include "../store/store.h"
#include "assign.h"
#include "committer.h"
#include "attest.h"
#include "doc_cache.h"

#define LOG_MODULE "registration"

void reg_reply_release(struct reg_reply *reply)
{
    json_decref(reply->body);
    reply->body = NULL;
}

void attest_match_release(struct attest_match *m)
{
    json_decref(m->enrollment);
    json_decref(m->x509);
    json_decref(m->tpm);
    m->enrollment = NULL;
    m->x509 = NULL;
    m->tpm = NULL;
    prov_cleanse(m->hub_key, sizeof(m->hub_key));
    m->hub_key_len = 0;
}

void attest_fail(struct reg_reply *reply, int code, const char *message, const char *detail_fmt,
                 ...)
{
    va_list ap;

    reply->status = code / 1000;
    reply->error_code = code;
    snprintf(reply->message, sizeof(reply->message), "%s", message);
    va_start(ap, detail_fmt);
    vsnprintf(reply->detail, sizeof(reply->detail), detail_fmt, ap);
    va_end(ap);
}

static const char *json_str(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static bool enrollment_enabled(const json_t *enr)
{
    const char *s = json_str(enr, "provisioningStatus");

    return s == NULL || str_ieq(s, "enabled");
}

/* Decodes a base64 key into m->hub_key; false when it is not a usable key. */
static bool keep_b64_key(struct attest_match *m, const char *b64)
{
    size_t len = b64 ? strlen(b64) : 0;
    int n;

    if (len == 0 || b64_decoded_max(len) > sizeof(m->hub_key))
        return false;
    n = b64_decode(b64, len, m->hub_key);
    m->hub_key_len = n > 0 ? (size_t)n : 0;
    return n > 0;
}

/*
 * true when the token was signed with the primary or the secondary key of
 * attestation; that key is kept in m->hub_key.
 */
static bool check_symkey(const struct sas_token *tok, const json_t *enr, struct attest_match *m)
{
    const json_t *sk = json_object_get(json_object_get(enr, "attestation"), "symmetricKey");
    const char *keys[2] = {json_str(sk, "primaryKey"), json_str(sk, "secondaryKey")};

    for (int i = 0; i < 2; i++) {
        if (sas_check_b64_key(tok, keys[i])) {
            (void)keep_b64_key(m, keys[i]);
            return true;
        }
    }
    return false;
}

static bool check_group_key(const struct sas_token *tok, const char *group_key_b64,
                            const char *registration_id, struct attest_match *m)
{
    uint8_t key[2 * PROV_MAX_KEY_BYTES];
    uint8_t derived[32];
    size_t len;
    int n;
    bool ok = false;

    if (group_key_b64 == NULL)
        return false;
    len = strlen(group_key_b64);
    if (b64_decoded_max(len) > sizeof(key))
        return false;
    n = b64_decode(group_key_b64, len, key);
    if (n > 0 && derive_device_key_raw(key, (size_t)n, registration_id, derived) == 0)
        ok = sas_check_key(tok, derived, sizeof(derived));
    if (ok && m != NULL) {
        memcpy(m->hub_key, derived, sizeof(derived));
        m->hub_key_len = sizeof(derived);
    }
    prov_cleanse(key, sizeof(key));
    prov_cleanse(derived, sizeof(derived));
    return ok;
}

static bool check_group(const struct sas_token *tok, const json_t *grp, const char *rid,
                        struct attest_match *m)
{
    const json_t *att = json_object_get(grp, "attestation");
    const json_t *sk = json_object_get(att, "symmetricKey");

    if (!str_ieq(json_str(att, "type") ? json_str(att, "type") : "", "symmetricKey"))
        return false;
    return check_group_key(tok, json_str(sk, "primaryKey"), rid, m) ||
           check_group_key(tok, json_str(sk, "secondaryKey"), rid, m);
}

json_t *attest_load_doc(const struct store_doc *doc)
{
    return doc_cache_load(doc);
}

/* A registration record or operation: read once per request, not worth caching. */
static json_t *load_record(const struct store_doc *doc)
{
    json_error_t e;
    json_t *j = json_loads(doc->json, 0, &e);

    if (j == NULL || !json_is_object(j)) {
        plog(LOG_ERROR, "stored document '%s' is not a JSON object", doc->id);
        json_decref(j);
        return NULL;
    }
    return j;
}

struct group_scan {
    const struct sas_token *tok;
    struct attest_match *m;
    const char *rid;
    json_t *found;
    char last_id[PROV_MAX_REG_ID + 1];
    int seen;
};

static int scan_group(void *arg, const struct store_doc *doc)
{
    struct group_scan *gs = arg;
    json_t *g = attest_load_doc(doc);

    gs->seen++;
    snprintf(gs->last_id, sizeof(gs->last_id), "%s", doc->id);
    if (g != NULL && check_group(gs->tok, g, gs->rid, gs->m)) {
        gs->found = g;
        return 1;
    }
    json_decref(g);
    return 0;
}

/*
 * Group discovery. A device sends no group id, so: (1) the group recorded on
 * the device's registration record, if any, is tried first (re-registration is
 * one lookup); (2) otherwise every symmetric-key group of the scope is tried.
 * The service API caps them at PROV_MAX_SYMKEY_GROUPS per scope, as DPS does,
 * so a first registration costs at most 4 HMACs per group.
 */
static int find_group(struct reg_ctx *ctx, const struct reg_request *req,
                      const struct sas_token *tok, struct attest_match *m)
{
    struct store *st = ctx->store;
    struct store_doc reg = {0}, grp = {0};
    struct group_scan gs = {.tok = tok, .m = m, .rid = req->registration_id};
    bool more = false;
    int r;

    r = st->ops->registration_get(st, req->scope, req->registration_id, &reg);
    if (r == 0 && reg.group_id != NULL &&
        st->ops->enrollment_get(st, req->scope, STORE_GROUP, reg.group_id, &grp) == 0) {
        json_t *g = attest_load_doc(&grp);

        if (g != NULL && check_group(tok, g, req->registration_id, m)) {
            m->enrollment = g;
            m->is_group = true;
            snprintf(m->group_id, sizeof(m->group_id), "%s", grp.id);
        } else {
            json_decref(g);
        }
    }
    store_doc_release(&reg);
    store_doc_release(&grp);
    if (r != 0 && r != PROV_ENOTFOUND)
        return r;
    if (m->enrollment != NULL)
        return 0;
    do {
        r = st->ops->enrollment_list(st, req->scope, STORE_GROUP, "symmetricKey",
                                     gs.seen ? gs.last_id : NULL, PROV_MAX_SYMKEY_GROUPS,
                                     scan_group, &gs, &more);
        if (r != 0)
            return r;
    } while (gs.found == NULL && more);
    if (gs.found == NULL)
        return PROV_ENOTFOUND;
    m->enrollment = gs.found;
    m->is_group = true;
    snprintf(m->group_id, sizeof(m->group_id), "%s",
             json_str(gs.found, "enrollmentGroupId") ? json_str(gs.found, "enrollmentGroupId")
                                                     : gs.last_id);
    return 0;
}

/* Checks shared by every SAS-token attestation (attest.h). */
int attest_sas_precheck(const struct reg_request *req, struct sas_token *tok,
                        struct reg_reply *reply)
{
    char expected[PROV_MAX_SCOPE + PROV_MAX_REG_ID + 32];
    long long now = (long long)time(NULL);
    const char *why = NULL;

    memset(tok, 0, sizeof(*tok));
    if (req->authorization == NULL) {
        attest_fail(reply, DPS_UNAUTHORIZED,
                    "missing Authorization: a SharedAccessSignature token is required",
                    "no authorization header");
        return -1;
    }
    if (sas_parse(req->authorization, tok, &why) != 0) {
        attest_fail(reply, DPS_UNAUTHORIZED, "malformed SharedAccessSignature token",
                    "malformed token: %s", why);
        goto refused;
    }
    snprintf(expected, sizeof(expected), "%s/registrations/%s", req->scope, req->registration_id);
    if (!str_ieq(tok->sr, expected)) {
        attest_fail(reply, DPS_UNAUTHORIZED, "token audience (sr) does not match this registration",
                    "token sr '%.100s' is not '%.100s'", tok->sr, expected);
        goto refused;
    }
    if (tok->se + PROV_SAS_SKEW_SECONDS <= now) {
        attest_fail(reply, DPS_UNAUTHORIZED, "token expired", "token expired at %lld (now %lld)",
                    tok->se, now);
        goto refused;
    }
    if (tok->has_skn && strcmp(tok->skn, "registration") != 0) {
        attest_fail(reply, DPS_UNAUTHORIZED, "token key name (skn) must be 'registration'",
                    "token skn is not 'registration'");
        goto refused;
    }
    return 0;
refused:
    prov_cleanse(tok, sizeof(*tok));
    return -1;
}

/*
 * Symmetric-key attestation. On success fills *m (caller releases
 * m->enrollment) and returns 0; otherwise fills reply and returns non-zero.
 * Unknown enrollments and wrong keys get the same answer, so a caller without
 * a key cannot probe which registration ids exist.
 */
static int attest_symkey(struct reg_ctx *ctx, const struct reg_request *req, struct attest_match *m,
                         struct reg_reply *reply)
{
    struct store *st = ctx->store;
    struct sas_token tok;
    struct store_doc doc = {0};
    int r;

    memset(m, 0, sizeof(*m));
    if (attest_sas_precheck(req, &tok, reply) != 0)
        return -1;

    r = st->ops->enrollment_get(st, req->scope, STORE_ENROLLMENT, req->registration_id, &doc);
    if (r == 0) {
        /* an individual enrollment decides, whatever groups exist */
        json_t *e = attest_load_doc(&doc);
        const char *type;

        store_doc_release(&doc);
        if (e == NULL) {
            attest_fail(reply, DPS_INTERNAL, "internal error", "unreadable enrollment");
            goto refused;
        }
        type = json_str(json_object_get(e, "attestation"), "type");
        if (type == NULL || !str_ieq(type, "symmetricKey")) {
            attest_fail(reply, DPS_UNAUTHORIZED, "registration not authorized",
                        "individual enrollment uses %s attestation, device sent a SAS token",
                        type ? type : "no");
            json_decref(e);
            goto refused;
        }
        if (!check_symkey(&tok, e, m)) {
            attest_fail(reply, DPS_UNAUTHORIZED, "registration not authorized",
                        "signature does not match the individual enrollment's keys");
            json_decref(e);
            goto refused;
        }
        m->enrollment = e;
    } else if (r == PROV_ENOTFOUND) {
        r = find_group(ctx, req, &tok, m);
        if (r == PROV_ENOTFOUND) {
            attest_fail(reply, DPS_UNAUTHORIZED, "registration not authorized",
                        "no enrollment or enrollment group key matches");
            goto refused;
        }
        if (r != 0) {
            attest_fail(reply, DPS_INTERNAL, "internal error", "store: %s", prov_strerror(r));
            goto refused;
        }
    } else {
        attest_fail(reply, DPS_INTERNAL, "internal error", "store: %s", prov_strerror(r));
        goto refused;
    }
    if (!enrollment_enabled(m->enrollment)) {
        attest_fail(reply, DPS_ENROLLMENT_DISABLED,
                    m->is_group ? "enrollment group is disabled" : "enrollment is disabled",
                    "%s%s is disabled", m->is_group ? "enrollment group " : "enrollment ",
                    m->is_group ? m->group_id : req->registration_id);
        json_decref(m->enrollment);
        m->enrollment = NULL;
        goto refused;
    }
    prov_cleanse(&tok, sizeof(tok));
    return 0;
refused:
    prov_cleanse(&tok, sizeof(tok));
    return -1;
}

/*
 * A "tpm" member in the body means TPM; otherwise a SAS token means
 * symmetric-key attestation, and no token with a TLS client certificate
 * X.509. A SAS token that no symmetric key verifies may be a TPM device's
 * poll or status lookup (signed with its challenge key, no tpm member):
 * attest_tpm decides then, or leaves the symmetric-key refusal standing when
 * the registration id is not a TPM device's.
 */
static int attest(struct reg_ctx *ctx, const struct reg_request *req, struct attest_match *m,
                  struct reg_reply *reply)
{
    struct reg_reply tpm_reply = {0};
    int r;

    memset(m, 0, sizeof(*m));
    if (req->body != NULL && json_object_get(req->body, "tpm") != NULL)
        return attest_tpm(ctx, req, m, reply);
    if (req->authorization == NULL && req->peer_leaf != NULL)
        return attest_x509(ctx, req, m, reply);
    if (attest_symkey(ctx, req, m, reply) == 0)
        return 0;
    if (reply->error_code != DPS_UNAUTHORIZED || req->authorization == NULL)
        return -1;
    r = attest_tpm(ctx, req, m, &tpm_reply);
    if (r > 0)
        return -1;
    reg_reply_release(reply);
    *reply = tpm_reply;
    return r;
}

static int make_operation_id(char *out, size_t outlen)
{
    uint8_t r[8];
    char hex[17];
    char uuid[37];

    if (random_bytes(r, sizeof(r)) != 0 || uuid_v4(uuid) != 0)
        return PROV_ECRYPTO;
    hex_encode(r, sizeof(r), hex, false);
    snprintf(out, outlen, "4.%s.%s", hex, uuid);
    return 0;
}

static const char *attestation_name(const struct reg_request *req, const struct attest_match *m)
{
    if (m->tpm != NULL)
        return "tpm";
    if (m->x509 != NULL || (req->authorization == NULL && req->peer_leaf != NULL))
        return "x509";
    return "symmetricKey";
}

/*
 * The assignment job for an authenticated device; takes m's documents and key
 * and prev (the previous record, or NULL). NULL when out of memory.
 */
static struct assign_job *job_from(const struct reg_request *req, struct attest_match *m,
                                   json_t *prev, const char *opid, const char *now)
{
    struct assign_job *job = calloc(1, sizeof(*job));
    const json_t *payload = req->body ? json_object_get(req->body, "payload") : NULL;
    const char *device_id = req->registration_id;
    const char *created = prev && json_str(prev, "createdDateTimeUtc")
                              ? json_str(prev, "createdDateTimeUtc")
                              : now;

    if (job == NULL) {
        json_decref(prev);
        return NULL;
    }
    if (!m->is_group && json_str(m->enrollment, "deviceId") != NULL)
        device_id = json_str(m->enrollment, "deviceId");
    job->kind = ASSIGN_PLACE;
    snprintf(job->scope, sizeof(job->scope), "%s", req->scope);
    snprintf(job->registration_id, sizeof(job->registration_id), "%s", req->registration_id);
    snprintf(job->device_id, sizeof(job->device_id), "%s", device_id);
    snprintf(job->operation_id, sizeof(job->operation_id), "%s", opid);
    snprintf(job->created, sizeof(job->created), "%s", created);
    snprintf(job->attestation, sizeof(job->attestation), "%s", attestation_name(req, m));
    job->is_group = m->is_group;
    snprintf(job->group_id, sizeof(job->group_id), "%s", m->group_id);
    job->enrollment = m->enrollment;
    job->x509 = m->x509;
    job->tpm = m->tpm;
    m->enrollment = m->x509 = m->tpm = NULL;
    memcpy(job->key, m->hub_key, m->hub_key_len);
    job->key_len = m->hub_key_len;
    job->payload = json_is_object(payload) ? json_incref((json_t *)payload) : NULL;
    job->prev = prev;
    return job;
}

/* 202 with the operation "assigning": a register answer, or a poll before the result is durable. */
static void accepted(struct reg_ctx *ctx, const struct reg_request *req, const char *opid,
                     struct reg_reply *reply)
{
    reply->status = 202;
    reply->retry_after = ctx->cfg->retry_after;
    reply->body = json_pack("{s:s, s:s, s:{s:s, s:s}}", "operationId", opid, "status", "assigning",
                            "registrationState", "registrationId", req->registration_id, "status",
                            "assigning");
    if (reply->body == NULL)
        attest_fail(reply, DPS_INTERNAL, "internal error", "out of memory");
}

void registration_register(struct reg_ctx *ctx, const struct reg_request *req,
                           struct reg_reply *reply)
{
    struct store *st = ctx->store;
    struct attest_match m;
    struct store_doc prev = {0};
    struct assign_job *job = NULL;
    json_t *prev_state = NULL, *state = NULL;
    char now[40], etag[37], opid[80];
    bool async;
    int r;

    memset(reply, 0, sizeof(*reply));
    if (attest(ctx, req, &m, reply) != 0)
        return;
    /*
     * A TPM device's token also verifies on a poll, which has no tpm member;
     * a register request must carry it, or the device would never get its
     * hub key (registrationState.tpm).
     */
    if (m.tpm == NULL && str_ieq(json_str(json_object_get(m.enrollment, "attestation"), "type")
                                     ? json_str(json_object_get(m.enrollment, "attestation"), "type")
                                     : "",
                                 "tpm")) {
        attest_fail(reply, DPS_UNAUTHORIZED, "registration not authorized",
                    "a TPM device's register request lacks its tpm member");
        goto out;
    }

    r = st->ops->registration_get(st, req->scope, req->registration_id, &prev);
    if (r == 0)
        prev_state = load_record(&prev);
    store_doc_release(&prev);
    if (r != 0 && r != PROV_ENOTFOUND) {
        attest_fail(reply, DPS_INTERNAL, "internal error", "store: %s", prov_strerror(r));
        goto out;
    }
    time_now_rfc3339(now, sizeof(now));
    if (uuid_v4(etag) != 0 || make_operation_id(opid, sizeof(opid)) != 0) {
        json_decref(prev_state);
        attest_fail(reply, DPS_INTERNAL, "internal error", "no randomness");
        goto out;
    }
    job = job_from(req, &m, prev_state, opid, now);
    if (job == NULL) {
        attest_fail(reply, DPS_INTERNAL, "internal error", "out of memory");
        goto out;
    }
    /* connectors and webhooks block: they run on an assigner thread, never on this loop */
    async = assign_needs_thread(ctx->cfg, job);
    if (async && (ctx->assigner == NULL || !assigner_has_room(ctx->assigner))) {
        attest_fail(reply, DPS_THROTTLED, "too many registrations in progress, retry later",
                    ctx->assigner ? "assigner queue full" : "no assigner threads");
        reply->retry_after = ctx->cfg->retry_after;
        goto out;
    }
    state = async ? assign_pending_state(job, etag, now) : assign_compute(ctx->cfg, job, etag, now);
    if (state == NULL) {
        attest_fail(reply, DPS_INTERNAL, "internal error", "out of memory");
        goto out;
    }
    /*
     * Durable before the device can learn anything from its operation: with a
     * committer the commit is queued and a poll says "assigning" until it is
     * written (registration_poll).
     */
    r = assign_commit(st, ctx->committer, false, job, state, etag, now);
    if (r == PROV_ELIMIT) {
        attest_fail(reply, DPS_THROTTLED, "too many registrations in progress, retry later",
                    "commit queue full");
        reply->retry_after = ctx->cfg->retry_after;
        goto out;
    }
    if (r != 0) {
        attest_fail(reply, DPS_INTERNAL, "internal error", "store commit: %s", prov_strerror(r));
        goto out;
    }
    if (async) {
        r = assigner_submit(ctx->assigner, job);
        job = NULL;
        if (r != 0) {
            /* the operation stays "assigning" until it expires; the device registers again */
            attest_fail(reply, DPS_THROTTLED, "too many registrations in progress, retry later",
                        "assigner queue full");
            reply->retry_after = ctx->cfg->retry_after;
            goto out;
        }
    }
    accepted(ctx, req, opid, reply);
out:
    json_decref(state);
    assign_job_free(job);
    attest_match_release(&m);
}

void registration_poll(struct reg_ctx *ctx, const struct reg_request *req, const char *operation_id,
                       struct reg_reply *reply)
{
    struct store *st = ctx->store;
    struct attest_match m;
    struct store_doc op = {0};
    json_t *doc;
    const char *status;
    int r;

    struct reg_request auth = *req;
    uint64_t ticket;

    memset(reply, 0, sizeof(*reply));
    /*
     * Queued, not yet durable: the device must not learn more until it is.
     * A transport that can hold the request is asked to, before any work is
     * done (nothing is answered yet, so nothing is told before attestation);
     * the whole poll runs once the commit is written.
     */
    ticket = req->may_hold ? committer_ticket(ctx->committer, req->scope, operation_id,
                                              req->registration_id)
                           : 0;
    if (ticket != 0) {
        reply->hold_ticket = ticket;
        return;
    }
    auth.auth_only = true;
    if (attest(ctx, &auth, &m, reply) != 0)
        return;
    attest_match_release(&m);
    r = st->ops->operation_get(st, req->scope, operation_id, (long long)time(NULL), &op);
    if (r == PROV_ENOTFOUND && ctx->committer != NULL &&
        !committer_pending(ctx->committer, req->scope, operation_id, req->registration_id)) {
        /* not queued (any more): it may have been written since the first read */
        r = st->ops->operation_get(st, req->scope, operation_id, (long long)time(NULL), &op);
    } else if (r == PROV_ENOTFOUND && ctx->committer != NULL) {
        accepted(ctx, req, operation_id, reply);
        return;
    }
    if (r == PROV_ENOTFOUND || (r == 0 && !str_ieq(op.id, req->registration_id))) {
        attest_fail(reply, DPS_OPERATION_NOT_FOUND, "operation not found",
                    "operation %.80s not found for this registration", operation_id);
        store_doc_release(&op);
        return;
    }
    if (r != 0) {
        attest_fail(reply, DPS_INTERNAL, "internal error", "store: %s", prov_strerror(r));
        return;
    }
    doc = load_record(&op);
    store_doc_release(&op);
    if (doc == NULL) {
        attest_fail(reply, DPS_INTERNAL, "internal error", "unreadable operation");
        return;
    }
    status = json_str(doc, "status");
    if (status != NULL && str_ieq(status, "assigning")) {
        reply->status = 202;
        reply->retry_after = ctx->cfg->retry_after;
    } else {
        reply->status = 200;
    }
    reply->body = doc;
}

void registration_status(struct reg_ctx *ctx, const struct reg_request *req,
                         struct reg_reply *reply)
{
    struct store *st = ctx->store;
    struct attest_match m;
    struct store_doc reg = {0};
    int r;

    struct reg_request auth = *req;

    memset(reply, 0, sizeof(*reply));
    auth.auth_only = true;
    if (attest(ctx, &auth, &m, reply) != 0)
        return;
    attest_match_release(&m);
    r = st->ops->registration_get(st, req->scope, req->registration_id, &reg);
    if (r == PROV_ENOTFOUND) {
        attest_fail(reply, DPS_REGISTRATION_NOT_FOUND, "device has not registered",
                    "no registration record");
        return;
    }
    if (r != 0) {
        attest_fail(reply, DPS_INTERNAL, "internal error", "store: %s", prov_strerror(r));
        return;
    }
    reply->body = load_record(&reg);
    store_doc_release(&reg);
    if (reply->body == NULL) {
        attest_fail(reply, DPS_INTERNAL, "internal error", "unreadable registration record");
        return;
    }
    reply->status = 200;
}
