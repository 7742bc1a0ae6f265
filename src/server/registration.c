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
#include "alloc.h"
#include "attest.h"

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
    m->enrollment = NULL;
    m->x509 = NULL;
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

/* true when the token was signed with the primary or the secondary key of attestation. */
static bool check_symkey(const struct sas_token *tok, const json_t *enr)
{
    const json_t *sk = json_object_get(json_object_get(enr, "attestation"), "symmetricKey");

    return sas_check_b64_key(tok, json_str(sk, "primaryKey")) ||
           sas_check_b64_key(tok, json_str(sk, "secondaryKey"));
}

static bool check_group_key(const struct sas_token *tok, const char *group_key_b64,
                            const char *registration_id)
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
    prov_cleanse(key, sizeof(key));
    prov_cleanse(derived, sizeof(derived));
    return ok;
}

static bool check_group(const struct sas_token *tok, const json_t *grp, const char *rid)
{
    const json_t *att = json_object_get(grp, "attestation");
    const json_t *sk = json_object_get(att, "symmetricKey");

    if (!str_ieq(json_str(att, "type") ? json_str(att, "type") : "", "symmetricKey"))
        return false;
    return check_group_key(tok, json_str(sk, "primaryKey"), rid) ||
           check_group_key(tok, json_str(sk, "secondaryKey"), rid);
}

json_t *attest_load_doc(const struct store_doc *doc)
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
    if (g != NULL && check_group(gs->tok, g, gs->rid)) {
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
    struct group_scan gs = {.tok = tok, .rid = req->registration_id};
    bool more = false;
    int r;

    r = st->ops->registration_get(st, req->scope, req->registration_id, &reg);
    if (r == 0 && reg.group_id != NULL &&
        st->ops->enrollment_get(st, req->scope, STORE_GROUP, reg.group_id, &grp) == 0) {
        json_t *g = attest_load_doc(&grp);

        if (g != NULL && check_group(tok, g, req->registration_id)) {
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
    const char *why = NULL;
    char expected[PROV_MAX_SCOPE + PROV_MAX_REG_ID + 32];
    long long now = (long long)time(NULL);
    int r;

    memset(m, 0, sizeof(*m));
    if (req->authorization == NULL) {
        attest_fail(reply, DPS_UNAUTHORIZED,
                    "missing Authorization: a SharedAccessSignature token is required",
                    "no authorization header");
        return -1;
    }
    if (sas_parse(req->authorization, &tok, &why) != 0) {
        attest_fail(reply, DPS_UNAUTHORIZED, "malformed SharedAccessSignature token",
                    "malformed token: %s", why);
        return -1;
    }
    snprintf(expected, sizeof(expected), "%s/registrations/%s", req->scope, req->registration_id);
    if (!str_ieq(tok.sr, expected)) {
        attest_fail(reply, DPS_UNAUTHORIZED, "token audience (sr) does not match this registration",
                    "token sr '%.100s' is not '%.100s'", tok.sr, expected);
        goto refused;
    }
    if (tok.se + PROV_SAS_SKEW_SECONDS <= now) {
        attest_fail(reply, DPS_UNAUTHORIZED, "token expired", "token expired at %lld (now %lld)",
                    tok.se, now);
        goto refused;
    }
    if (tok.has_skn && strcmp(tok.skn, "registration") != 0) {
        attest_fail(reply, DPS_UNAUTHORIZED, "token key name (skn) must be 'registration'",
                    "token skn is not 'registration'");
        goto refused;
    }

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
        if (!check_symkey(&tok, e)) {
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
 * A SAS token means symmetric-key attestation; no token and a TLS client
 * certificate means X.509. (TPM comes with its own request member.)
 */
static int attest(struct reg_ctx *ctx, const struct reg_request *req, struct attest_match *m,
                  struct reg_reply *reply)
{
    memset(m, 0, sizeof(*m));
    if (req->authorization == NULL && req->peer_leaf != NULL)
        return attest_x509(ctx, req, m, reply);
    return attest_symkey(ctx, req, m, reply);
}

static const struct cfg_hub *find_hub(const struct config *cfg, const char *host)
{
    for (size_t i = 0; i < cfg->nhubs; i++) {
        if (host != NULL && str_ieq(cfg->hubs[i].hostname, host))
            return &cfg->hubs[i];
    }
    return NULL;
}

/*
 * Candidate hubs: the enrollment's iotHubs when non-empty, else its legacy
 * iotHubHostName, else every linked hub. Hubs no longer configured are
 * skipped.
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
            const struct cfg_hub *h = find_hub(cfg, json_string_value(v));

            if (h != NULL && n < CFG_MAX_LIST)
                out[n++] = h;
        }
        return n;
    }
    if (json_str(enr, "iotHubHostName") != NULL) {
        const struct cfg_hub *h = find_hub(cfg, json_str(enr, "iotHubHostName"));

        if (h != NULL)
            out[n++] = h;
        return n;
    }
    for (size_t i = 0; i < cfg->nhubs && n < CFG_MAX_LIST; i++)
        out[n++] = &cfg->hubs[i];
    return n;
}

/* Chooses the hub; NULL with reply filled when the device cannot be placed. */
static const struct cfg_hub *allocate(struct reg_ctx *ctx, const struct reg_request *req,
                                      const json_t *enr, struct reg_reply *reply)
{
    const struct cfg_hub *cands[CFG_MAX_LIST];
    size_t n = candidate_hubs(ctx->cfg, enr, cands);
    const char *policy = json_str(enr, "allocationPolicy");
    int i;

    if (n == 0) {
        attest_fail(reply, DPS_HUB_NOT_SPECIFIED, "no linked hub is available for this enrollment",
                    "no candidate hub");
        return NULL;
    }
    if (policy != NULL && str_ieq(policy, "custom")) {
        attest_fail(reply, DPS_ALLOCATION_UNSUPPORTED, "custom allocation is not supported yet",
                    "custom allocation policy");
        return NULL;
    }
    if (policy != NULL && str_ieq(policy, "static"))
        return cands[0];
    /* hashed, and geoLatency (no latency data here: it falls back to hashed) */
    i = alloc_hashed(req->registration_id, cands, n);
    return cands[i];
}

static bool reprovision_flag(const json_t *enr, const char *name)
{
    const json_t *v = json_object_get(json_object_get(enr, "reprovisionPolicy"), name);

    return v == NULL ? true : json_is_true(v);
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

static json_t *quoted_etag(const char *etag)
{
    char q[64];

    snprintf(q, sizeof(q), "\"%s\"", etag);
    return json_string(q);
}

void registration_register(struct reg_ctx *ctx, const struct reg_request *req,
                           struct reg_reply *reply)
{
    struct store *st = ctx->store;
    struct attest_match m;
    struct store_doc prev = {0}, regdoc = {0}, opdoc = {0};
    json_t *prev_state = NULL, *state = NULL, *op = NULL;
    const struct cfg_hub *hub = NULL;
    const char *substatus = "initialAssignment";
    const json_t *payload = req->body ? json_object_get(req->body, "payload") : NULL;
    char now[40], etag[37], opid[80];
    char *state_text = NULL, *op_text = NULL;
    const char *device_id;
    int r;

    memset(reply, 0, sizeof(*reply));
    if (attest(ctx, req, &m, reply) != 0)
        return;

    r = st->ops->registration_get(st, req->scope, req->registration_id, &prev);
    if (r == 0)
        prev_state = attest_load_doc(&prev);
    else if (r != PROV_ENOTFOUND) {
        attest_fail(reply, DPS_INTERNAL, "internal error", "store: %s", prov_strerror(r));
        goto out;
    }

    time_now_rfc3339(now, sizeof(now));
    if (uuid_v4(etag) != 0 || make_operation_id(opid, sizeof(opid)) != 0) {
        attest_fail(reply, DPS_INTERNAL, "internal error", "no randomness");
        goto out;
    }
    if (m.is_group)
        device_id = req->registration_id;
    else
        device_id = json_str(m.enrollment, "deviceId") ? json_str(m.enrollment, "deviceId")
                                                       : req->registration_id;

    /* reprovisioning: a device already assigned keeps its hub unless the policy says otherwise */
    {
        const char *old_hub = NULL;

        if (prev_state != NULL &&
            str_ieq(json_str(prev_state, "status") ? json_str(prev_state, "status") : "",
                    "assigned"))
            old_hub = json_str(prev_state, "assignedHub");
        if (old_hub != NULL && !reprovision_flag(m.enrollment, "updateHubAssignment"))
            hub = find_hub(ctx->cfg, old_hub);
        if (hub == NULL) {
            struct reg_reply why = {0};

            hub = allocate(ctx, req, m.enrollment, &why);
            if (hub == NULL) {
                /* the device is authenticated: record the failure, answer through the operation */
                state = json_pack("{s:s, s:s, s:i, s:s, s:s, s:o}", "registrationId",
                                  req->registration_id, "status", "failed", "errorCode",
                                  why.error_code, "errorMessage", why.message,
                                  "lastUpdatedDateTimeUtc", now, "etag", quoted_etag(etag));
                plog(LOG_WARN, "%s/%s: registration failed: %s", req->scope, req->registration_id,
                     why.detail);
            }
        }
        if (hub != NULL && old_hub != NULL && !str_ieq(old_hub, hub->hostname))
            substatus = reprovision_flag(m.enrollment, "migrateDeviceData") ? "deviceDataMigrated"
                                                                            : "deviceDataReset";
    }
    if (state == NULL) {
        const char *created = prev_state && json_str(prev_state, "createdDateTimeUtc")
                                  ? json_str(prev_state, "createdDateTimeUtc")
                                  : now;

        state = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o}", "registrationId",
                          req->registration_id, "createdDateTimeUtc", created, "assignedHub",
                          hub->hostname, "deviceId", device_id, "status", "assigned", "substatus",
                          substatus, "lastUpdatedDateTimeUtc", now, "etag", quoted_etag(etag));
        /* the device's payload comes back to it (a custom-allocation webhook may replace it) */
        if (state != NULL && json_is_object(payload))
            json_object_set(state, "payload", (json_t *)payload);
        if (state != NULL && m.x509 != NULL)
            json_object_set(state, "x509", m.x509);
        else if (state != NULL && m.is_group)
            json_object_set_new(state, "symmetricKey",
                                json_pack("{s:s}", "enrollmentGroupId", m.group_id));
    }
    op = json_pack("{s:s, s:s, s:O}", "operationId", opid, "status",
                   json_str(state, "status") ? json_str(state, "status") : "failed",
                   "registrationState", state);
    state_text = state ? json_dumps(state, JSON_COMPACT) : NULL;
    op_text = op ? json_dumps(op, JSON_COMPACT) : NULL;
    if (state_text == NULL || op_text == NULL) {
        attest_fail(reply, DPS_INTERNAL, "internal error", "out of memory");
        goto out;
    }
    regdoc.id = (char *)req->registration_id;
    regdoc.etag = etag;
    regdoc.json = state_text;
    regdoc.created =
        (char *)(json_str(state, "createdDateTimeUtc") ? json_str(state, "createdDateTimeUtc")
                                                       : now);
    regdoc.updated = now;
    regdoc.group_id = m.is_group ? m.group_id : NULL;
    opdoc.id = opid;
    opdoc.json = op_text;
    opdoc.created = now;
    r = st->ops->registration_commit(st, req->scope, &regdoc, &opdoc,
                                     (long long)time(NULL) + PROV_OPERATION_TTL_SECONDS);
    if (r != 0) {
        attest_fail(reply, DPS_INTERNAL, "internal error", "store commit: %s", prov_strerror(r));
        goto out;
    }
    if (hub != NULL)
        plog(LOG_INFO, "%s/%s: assigned to %s as %s (%s%s%s)", req->scope, req->registration_id,
             hub->hostname, device_id, substatus, m.is_group ? ", group " : "",
             m.is_group ? m.group_id : "");
    reply->status = 202;
    reply->retry_after = ctx->cfg->retry_after;
    reply->body = json_pack("{s:s, s:s, s:{s:s, s:s}}", "operationId", opid, "status", "assigning",
                            "registrationState", "registrationId", req->registration_id, "status",
                            "assigning");
    if (reply->body == NULL)
        attest_fail(reply, DPS_INTERNAL, "internal error", "out of memory");
out:
    free(state_text);
    free(op_text);
    json_decref(state);
    json_decref(op);
    json_decref(prev_state);
    attest_match_release(&m);
    store_doc_release(&prev);
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

    memset(reply, 0, sizeof(*reply));
    if (attest(ctx, req, &m, reply) != 0)
        return;
    attest_match_release(&m);
    r = st->ops->operation_get(st, req->scope, operation_id, (long long)time(NULL), &op);
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
    doc = attest_load_doc(&op);
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

    memset(reply, 0, sizeof(*reply));
    if (attest(ctx, req, &m, reply) != 0)
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
    reply->body = attest_load_doc(&reg);
    store_doc_release(&reg);
    if (reply->body == NULL) {
        attest_fail(reply, DPS_INTERNAL, "internal error", "unreadable registration record");
        return;
    }
    reply->status = 200;
}
