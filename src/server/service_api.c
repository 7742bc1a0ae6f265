/*
 * The DPS service (management) API: individual enrollments, enrollment groups
 * and registration records, as the Azure provisioning service SDKs call it.
 *
 * Scope rule: a service request names no ID scope, so the optional query
 * parameter idScope selects one of the configured scopes (matched
 * case-insensitively; an unknown one is 404); without it the request works on
 * the first configured scope. Every store call passes that scope's configured
 * spelling.
 *
 * Choices where Azure is silent or where we differ on purpose:
 *  - api-version is accepted and ignored; paths match case-insensitively and
 *    ids are percent-decoded.
 *  - Rights: EnrollmentRead for GET, query and attestationmechanism;
 *    EnrollmentWrite for PUT, DELETE and bulk; RegistrationStatusRead for GET
 *    and query of registrations; RegistrationStatusWrite for their DELETE.
 *    Write does not imply read. A missing right is 401 (IoT Hub parity).
 *  - If-Match: "*" means "must exist"; any If-Match on a missing entity is 412.
 *  - Deleting an individual enrollment also deletes its registration record
 *    (the enrollment embeds it as registrationState, so they go together);
 *    deleting a group keeps its devices' records, as Azure does.
 *  - Queries: the query text is accepted but not interpreted: every entity of
 *    the kind is returned, in ascending lower-case id order, paged. The
 *    continuation token is base64url of the last id of the page.
 *    x-ms-max-item-count above 1000 is clamped to 1000.
 *  - Bulk: up to 1000 items rather than Azure's 10; the 96 KB body cap bounds
 *    the work anyway, and per-item processing needs no larger transaction.
 *    "delete" honours an item's etag when it carries one.
 *  - At most PROV_MAX_SYMKEY_GROUPS symmetric-key groups per scope: the device
 *    side finds a device's group by trying every symmetric-key group; and at
 *    most MODEL_MAX_X509_GROUPS X.509 groups (the DPS limit).
 *  - X.509 (model.c validates and normalises the certificates): a group's
 *    caReferences must name CA certificates of the scope when written (their
 *    verification is judged at registration); a certificate (by thumbprint)
 *    may be in only one individual enrollment, and a signing certificate in
 *    only one group, of a scope: 409 (409002) otherwise.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "../common/errors.h"
#include "../common/limits.h"
#include "../common/log.h"
#include "../common/util.h"
#include "../store/store.h"
#include "api.h"
#include "assign.h"
#include "model.h"
#include "service_auth.h"

#define LOG_MODULE "service"

#define MAX_BULK_ITEMS 1000
#define ETAG_MAX 128

enum svc_op {
    OP_GET,
    OP_PUT,
    OP_DELETE,
    OP_ATTESTATION,
    OP_QUERY,
    OP_BULK,
    OP_REG_GET,
    OP_REG_DELETE,
    OP_REG_QUERY,
};

struct svc_ctx {
    struct worker *w;
    struct store *st;
    struct http_request *req;
    struct http_response *resp;
    const char *scope;
    enum store_kind kind;
    char id[PROV_MAX_REG_ID + 1]; /* decoded path id, when the path has one */
};

/* A per-item failure: six-digit code plus message. */
struct svc_fail {
    int code;
    char msg[384];
};

static void set_fail(struct svc_fail *f, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_fail(struct svc_fail *f, int code, const char *fmt, ...)
{
    va_list ap;

    f->code = code;
    va_start(ap, fmt);
    vsnprintf(f->msg, sizeof(f->msg), fmt, ap);
    va_end(ap);
}

static void send_fail(struct svc_ctx *c, const struct svc_fail *f)
{
    http_response_error(c->resp, c->req, f->code, "%s", f->msg);
}

static const char *kind_name(enum store_kind kind)
{
    return kind == STORE_GROUP ? "enrollment group" : "enrollment";
}

static int not_found_code(enum store_kind kind)
{
    return kind == STORE_GROUP ? SVC_ERR_GROUP_NOT_FOUND : SVC_ERR_ENROLLMENT_NOT_FOUND;
}

static void store_fail(struct svc_fail *f, int r, const char *what)
{
    plog(LOG_ERROR, "store: %s failed: %s", what, prov_strerror(r));
    set_fail(f, SVC_ERR_INTERNAL, "internal error: %s failed", what);
}

/* Parses a stored document; NULL (logged) when the store holds garbage. */
static json_t *parse_stored(const struct store_doc *d)
{
    json_error_t jerr;
    json_t *j = d->json != NULL ? json_loads(d->json, 0, &jerr) : NULL;

    if (!json_is_object(j)) {
        plog(LOG_ERROR, "stored document '%s' is not a JSON object", d->id ? d->id : "?");
        json_decref(j);
        return NULL;
    }
    return j;
}

/* If-Match, normalised into out; *has = false when absent. 0 or a filled fail. */
static int read_if_match(struct svc_ctx *c, char *out, size_t outlen, bool *has,
                         struct svc_fail *f)
{
    const char *v = http_request_header(c->req, "If-Match");

    *has = false;
    if (v == NULL)
        return 0;
    if (model_etag_normalize(v, out, outlen) != 0) {
        set_fail(f, SVC_ERR_BAD_REQUEST, "the If-Match header is not a valid etag");
        return PROV_EINVAL;
    }
    *has = true;
    return 0;
}

static void send_json(struct svc_ctx *c, int status, const json_t *j, const char *etag)
{
    char quoted[ETAG_MAX + 3];

    if (etag != NULL) {
        model_etag_quote(etag, quoted, sizeof(quoted));
        http_response_set_header(c->resp, "ETag", quoted);
    }
    http_response_json(c->resp, status, j);
}

/*
 * Adds registrationState to an individual enrollment when a registration
 * record exists. 0 or a filled fail.
 */
static int embed_registration_state(struct svc_ctx *c, json_t *entity, const char *id,
                                    struct svc_fail *f)
{
    struct store_doc d = {0};
    json_t *state;
    int r;

    r = c->st->ops->registration_get(c->st, c->scope, id, &d);
    if (r == PROV_ENOTFOUND)
        return 0;
    if (r != 0) {
        store_fail(f, r, "registration lookup");
        return r;
    }
    state = parse_stored(&d);
    store_doc_release(&d);
    if (state != NULL && json_object_set_new(entity, "registrationState", state) != 0) {
        set_fail(f, SVC_ERR_INTERNAL, "out of memory");
        return PROV_ENOMEM;
    }
    return 0;
}

/* ---- X.509 checks that need the store ---- */

struct cert_scan {
    const json_t *doc;      /* the entity being written */
    const char *id;         /* its id (skipped in the scan) */
    bool failed;            /* a stored document did not parse */
    bool found;
    char other[PROV_MAX_REG_ID + 1];
    char thumbprint[65];
};

static int cert_scan_one(void *arg, const struct store_doc *d)
{
    struct cert_scan *cs = arg;
    json_t *other;

    if (d->id == NULL || str_ieq(d->id, cs->id))
        return 0;
    if ((other = parse_stored(d)) == NULL) {
        cs->failed = true;
        return 1;
    }
    if (model_x509_shares_certificate(cs->doc, other, cs->thumbprint, sizeof(cs->thumbprint))) {
        cs->found = true;
        snprintf(cs->other, sizeof(cs->other), "%s", d->id);
    }
    json_decref(other);
    return cs->found ? 1 : 0;
}

/*
 * An X.509 entity about to be stored: its CA references must name CA
 * certificates of the scope, and its certificates must not be in another
 * entity of the same kind ("a certificate can be specified in only one
 * enrollment entry"). The store's thumbprint index finds the candidates, the
 * model compares them. Two writers of one certificate may both pass this
 * check; the store then refuses the second inside its write transaction
 * (PROV_ECONFLICT, answered 409002 too).
 */
static int check_x509(struct svc_ctx *c, const char *id, const json_t *doc, struct svc_fail *f)
{
    struct cert_scan cs = {.doc = doc, .id = id};
    const char *names[2], *tps[8];
    size_t n = model_x509_ca_references(doc, names), tp_n;
    int r;

    for (size_t i = 0; i < n; i++) {
        struct store_doc ca = {0};

        r = c->st->ops->enrollment_get(c->st, c->scope, STORE_CA, names[i], &ca);
        store_doc_release(&ca);
        if (r == PROV_ENOTFOUND) {
            set_fail(f, SVC_ERR_INVALID_BODY, "unknown CA certificate '%s' (upload it with "
                     "PUT /certificates/%s first)", names[i], names[i]);
            return PROV_EINVAL;
        }
        if (r != 0) {
            store_fail(f, r, "CA certificate lookup");
            return r;
        }
    }
    /* the entities that hold one of its thumbprints (an index lookup), compared in full */
    tp_n = model_x509_thumbprints(doc, tps);
    r = c->st->ops->enrollment_x509_find(c->st, c->scope, c->kind, tps, tp_n, cert_scan_one, &cs);
    if (r != 0) {
        store_fail(f, r, "certificate lookup");
        return r;
    }
    if (cs.failed) {
        set_fail(f, SVC_ERR_INTERNAL, "internal error: a stored %s is corrupt",
                 kind_name(c->kind));
        return PROV_ESTORE;
    }
    if (cs.found) {
        set_fail(f, SVC_ERR_CERT_IN_USE, "the certificate with thumbprint %s is already in %s "
                 "'%s'; a certificate may be in only one %s", cs.thumbprint, kind_name(c->kind),
                 cs.other, kind_name(c->kind));
        return PROV_EEXISTS;
    }
    return 0;
}

/* ---- create or replace (PUT and bulk) ---- */

struct put_args {
    const char *id;           /* decoded, valid */
    const json_t *body;
    enum store_put_mode mode; /* CREATE fails with 409 when present */
    const char *if_match;     /* normalised, "*" or NULL */
};

/*
 * Validates, stores and renders one entity. On success *rendered (if not NULL)
 * is the PUT answer (with keys) and *etag_out the new etag.
 */
static int put_entity(struct svc_ctx *c, const struct put_args *a, json_t **rendered,
                      char *etag_out, struct svc_fail *f)
{
    struct store_doc old = {0};
    struct store_doc nd = {0};
    json_t *existing = NULL, *doc = NULL, *out = NULL;
    const char *att = NULL;
    char *text = NULL;
    char etag[37], now[40], err[384];
    bool have_old;
    int r;

    if (rendered != NULL)
        *rendered = NULL;
    r = c->st->ops->enrollment_get(c->st, c->scope, c->kind, a->id, &old);
    if (r != 0 && r != PROV_ENOTFOUND) {
        store_fail(f, r, "enrollment lookup");
        goto out;
    }
    have_old = r == 0;
    if (have_old && a->mode == STORE_PUT_CREATE) {
        set_fail(f, SVC_ERR_EXISTS, "%s '%s' already exists", kind_name(c->kind), a->id);
        r = PROV_EEXISTS;
        goto out;
    }
    if (a->if_match != NULL && !have_old) {
        set_fail(f, SVC_ERR_ETAG, "%s '%s' does not exist (If-Match)", kind_name(c->kind),
                 a->id);
        r = PROV_EPRECONDITION;
        goto out;
    }
    if (a->if_match != NULL && strcmp(a->if_match, "*") != 0 &&
        (old.etag == NULL || strcmp(old.etag, a->if_match) != 0)) {
        set_fail(f, SVC_ERR_ETAG, "the etag does not match %s '%s'", kind_name(c->kind), a->id);
        r = PROV_EPRECONDITION;
        goto out;
    }
    if (have_old && (existing = parse_stored(&old)) == NULL) {
        set_fail(f, SVC_ERR_INTERNAL, "internal error: stored %s is corrupt", kind_name(c->kind));
        r = PROV_ESTORE;
        goto out;
    }
    r = model_prepare(c->kind, a->id, a->body, existing, c->w->cfg->hubs, c->w->cfg->nhubs, &doc,
                      &att, err, sizeof(err));
    if (r == PROV_EINVAL) {
        set_fail(f, SVC_ERR_INVALID_BODY, "%s", err);
        goto out;
    }
    if (r != 0) {
        set_fail(f, SVC_ERR_INTERNAL, "internal error: %s", prov_strerror(r));
        goto out;
    }
    if (c->kind == STORE_GROUP &&
        (strcmp(att, "symmetricKey") == 0 || strcmp(att, "x509") == 0) &&
        !(have_old && old.attestation != NULL && strcmp(old.attestation, att) == 0)) {
        bool symkey = strcmp(att, "symmetricKey") == 0;
        long n = 0, max = symkey ? PROV_MAX_SYMKEY_GROUPS : MODEL_MAX_X509_GROUPS;

        r = c->st->ops->enrollment_count(c->st, c->scope, STORE_GROUP, att, &n);
        if (r != 0) {
            store_fail(f, r, "enrollment count");
            goto out;
        }
        if (n >= max) {
            set_fail(f, SVC_ERR_QUOTA, "an ID scope holds at most %ld %s enrollment groups",
                     max, symkey ? "symmetric-key" : "X.509");
            r = PROV_ELIMIT;
            goto out;
        }
    }
    if (strcmp(att, "x509") == 0 && (r = check_x509(c, a->id, doc, f)) != 0)
        goto out;
    if ((r = uuid_v4(etag)) != 0) {
        set_fail(f, SVC_ERR_INTERNAL, "internal error: no randomness");
        goto out;
    }
    time_now_rfc3339(now, sizeof(now));
    text = json_dumps(doc, JSON_COMPACT);
    if (text == NULL) {
        set_fail(f, SVC_ERR_INTERNAL, "out of memory");
        r = PROV_ENOMEM;
        goto out;
    }
    nd.id = (char *)json_string_value(json_object_get(doc, model_id_member(c->kind)));
    nd.etag = etag;
    nd.json = text;
    nd.attestation = (char *)att;
    nd.created = have_old && old.created != NULL ? old.created : now;
    nd.updated = now;
    r = c->st->ops->enrollment_put(c->st, c->scope, c->kind, &nd, a->mode, a->if_match);
    if (r == PROV_EEXISTS) {
        set_fail(f, SVC_ERR_EXISTS, "%s '%s' already exists", kind_name(c->kind), a->id);
        goto out;
    }
    if (r == PROV_ECONFLICT) {
        /* check_x509 passed, but another writer stored one of its certificates meanwhile */
        set_fail(f, SVC_ERR_CERT_IN_USE, "a certificate of %s '%s' is already in another %s; a "
                 "certificate may be in only one %s", kind_name(c->kind), a->id,
                 kind_name(c->kind), kind_name(c->kind));
        goto out;
    }
    if (r == PROV_EPRECONDITION || r == PROV_ENOTFOUND) {
        set_fail(f, SVC_ERR_ETAG, "the etag does not match %s '%s'", kind_name(c->kind), a->id);
        r = PROV_EPRECONDITION;
        goto out;
    }
    if (r != 0) {
        store_fail(f, r, "enrollment write");
        goto out;
    }
    if (rendered != NULL) {
        out = model_render(doc, etag, nd.created, now, MODEL_WITH_KEYS);
        if (out == NULL) {
            set_fail(f, SVC_ERR_INTERNAL, "out of memory");
            r = PROV_ENOMEM;
            goto out;
        }
        if (c->kind == STORE_ENROLLMENT &&
            (r = embed_registration_state(c, out, a->id, f)) != 0)
            goto out;
        *rendered = out;
        out = NULL;
    }
    if (etag_out != NULL)
        memcpy(etag_out, etag, sizeof(etag));
    r = 0;
out:
    if (text != NULL)
        prov_freezero(text, strlen(text));
    model_json_free(out);
    model_json_free(doc);
    model_json_free(existing);
    store_doc_release(&old);
    return r;
}

/* Deletes one entity (and an individual enrollment's registration record). */
/*
 * Deletes a registration record; a device that a hub connector placed is then
 * removed from that hub too (queued: connectors block).
 */
static int delete_registration(struct svc_ctx *c, const char *id, const char *if_match)
{
    struct store_doc d = {0};
    int r = c->st->ops->registration_get(c->st, c->scope, id, &d);

    if (r == 0)
        r = c->st->ops->registration_delete(c->st, c->scope, id, if_match);
    if (r == 0)
        assign_remove_later(c->w->srv->assigner, c->w->cfg, c->scope, id, d.json);
    store_doc_release(&d);
    return r;
}

static int delete_entity(struct svc_ctx *c, const char *id, const char *if_match,
                         struct svc_fail *f)
{
    int r = c->st->ops->enrollment_delete(c->st, c->scope, c->kind, id, if_match);

    if (r == PROV_ENOTFOUND && if_match == NULL) {
        set_fail(f, not_found_code(c->kind), "%s '%s' not found", kind_name(c->kind), id);
        return r;
    }
    if (r == PROV_ENOTFOUND || r == PROV_EPRECONDITION) {
        set_fail(f, SVC_ERR_ETAG, "the etag does not match %s '%s'", kind_name(c->kind), id);
        return PROV_EPRECONDITION;
    }
    if (r != 0) {
        store_fail(f, r, "enrollment delete");
        return r;
    }
    if (c->kind == STORE_ENROLLMENT) {
        r = delete_registration(c, id, NULL);
        if (r != 0 && r != PROV_ENOTFOUND) {
            store_fail(f, r, "registration delete");
            return r;
        }
    }
    return 0;
}

/* ---- handlers ---- */

static void handle_put(struct svc_ctx *c)
{
    struct svc_fail f = {0};
    struct put_args a = {.id = c->id, .mode = STORE_PUT_UPSERT};
    json_t *body = NULL, *out = NULL;
    char ifm[ETAG_MAX], etag[37], err[384];
    bool has_ifm;

    if (read_if_match(c, ifm, sizeof(ifm), &has_ifm, &f) != 0)
        goto fail;
    if (model_parse_object(c->req->body, c->req->body_len, false, &body, err, sizeof(err)) != 0) {
        set_fail(&f, SVC_ERR_INVALID_BODY, "%s", err);
        goto fail;
    }
    a.body = body;
    a.if_match = has_ifm ? ifm : NULL;
    if (put_entity(c, &a, &out, etag, &f) != 0)
        goto fail;
    send_json(c, 200, out, etag);
    goto out;
fail:
    send_fail(c, &f);
out:
    model_json_free(out);
    model_json_free(body);
}

static void handle_get(struct svc_ctx *c, bool attestation_only)
{
    struct svc_fail f = {0};
    struct store_doc d = {0};
    json_t *stored = NULL, *out = NULL;
    int r;

    r = c->st->ops->enrollment_get(c->st, c->scope, c->kind, c->id, &d);
    if (r == PROV_ENOTFOUND) {
        set_fail(&f, not_found_code(c->kind), "%s '%s' not found", kind_name(c->kind), c->id);
        goto fail;
    }
    if (r != 0) {
        store_fail(&f, r, "enrollment lookup");
        goto fail;
    }
    if ((stored = parse_stored(&d)) == NULL) {
        set_fail(&f, SVC_ERR_INTERNAL, "internal error: stored %s is corrupt", kind_name(c->kind));
        goto fail;
    }
    if (attestation_only)
        out = model_attestation(stored);
    else
        out = model_render(stored, d.etag, d.created, d.updated, 0);
    if (out == NULL) {
        set_fail(&f, SVC_ERR_INTERNAL, "internal error: cannot render the %s",
                 kind_name(c->kind));
        goto fail;
    }
    if (!attestation_only && c->kind == STORE_ENROLLMENT &&
        embed_registration_state(c, out, c->id, &f) != 0)
        goto fail;
    send_json(c, 200, out, attestation_only ? NULL : d.etag);
    goto out;
fail:
    send_fail(c, &f);
out:
    model_json_free(out);
    model_json_free(stored);
    store_doc_release(&d);
}

static void handle_delete(struct svc_ctx *c)
{
    struct svc_fail f = {0};
    char ifm[ETAG_MAX];
    bool has_ifm;

    if (read_if_match(c, ifm, sizeof(ifm), &has_ifm, &f) != 0 ||
        delete_entity(c, c->id, has_ifm ? ifm : NULL, &f) != 0) {
        send_fail(c, &f);
        return;
    }
    c->resp->status = 204;
}

/* ---- queries ---- */

struct page {
    json_t *items;
    bool render;       /* enrollments and groups: shape as GET does */
    bool failed;
    char last[PROV_MAX_REG_ID + 1];
};

static int page_add(void *arg, const struct store_doc *doc)
{
    struct page *p = arg;
    json_t *stored = parse_stored(doc);
    json_t *item;

    if (stored == NULL) {
        p->failed = true;
        return 1;
    }
    item = p->render ? model_render(stored, doc->etag, doc->created, doc->updated, 0) : stored;
    if (item == NULL || json_array_append_new(p->items, item) != 0) {
        if (item != stored)
            model_json_free(stored);
        p->failed = true;
        return 1;
    }
    if (item != stored)
        model_json_free(stored);
    snprintf(p->last, sizeof(p->last), "%s", doc->id != NULL ? doc->id : "");
    str_lower(p->last);
    return 0;
}

/* Reads the paging headers: limit and the id to continue after ("" = start). */
static int read_paging(struct svc_ctx *c, long *limit, char *after, size_t afterlen,
                       struct svc_fail *f)
{
    const char *n = http_request_header(c->req, "x-ms-max-item-count");
    const char *t = http_request_header(c->req, "x-ms-continuation");

    *limit = PROV_DEFAULT_PAGE;
    after[0] = '\0';
    if (n != NULL && *n != '\0') {
        if (parse_long(n, 1, 1000000000L, limit) != 0) {
            set_fail(f, SVC_ERR_INVALID_HEADER,
                     "x-ms-max-item-count must be a positive integer");
            return PROV_EINVAL;
        }
        if (*limit > PROV_MAX_PAGE)
            *limit = PROV_MAX_PAGE;
    }
    if (t != NULL && *t != '\0' && model_continuation_decode(t, after, afterlen) != 0) {
        set_fail(f, SVC_ERR_INVALID_HEADER, "x-ms-continuation is not a token from this server");
        return PROV_EINVAL;
    }
    return 0;
}

/* The optional {"query": "..."} body; its text is not interpreted. */
static int read_query_body(struct svc_ctx *c, struct svc_fail *f)
{
    json_t *body = NULL, *q;
    char err[384];

    if (model_parse_object(c->req->body, c->req->body_len, true, &body, err, sizeof(err)) != 0) {
        set_fail(f, SVC_ERR_INVALID_BODY, "%s", err);
        return PROV_EINVAL;
    }
    q = json_object_get(body, "query");
    if (q != NULL && !json_is_string(q) && !json_is_null(q)) {
        json_decref(body);
        set_fail(f, SVC_ERR_INVALID_BODY, "query must be a string");
        return PROV_EINVAL;
    }
    json_decref(body);
    return 0;
}

static void handle_query(struct svc_ctx *c, enum svc_op op)
{
    struct svc_fail f = {0};
    struct page p = {.render = op == OP_QUERY};
    char after[PROV_MAX_REG_ID + 1], num[24];
    const char *item_type;
    bool more = false;
    long limit;
    int r;

    if (read_query_body(c, &f) != 0 || read_paging(c, &limit, after, sizeof(after), &f) != 0)
        goto fail;
    if ((p.items = json_array()) == NULL) {
        set_fail(&f, SVC_ERR_INTERNAL, "out of memory");
        goto fail;
    }
    if (op == OP_REG_QUERY) {
        item_type = "DeviceRegistration";
        r = c->st->ops->registration_list(c->st, c->scope, c->id, after[0] ? after : NULL,
                                          (int)limit, page_add, &p, &more);
    } else {
        item_type = c->kind == STORE_GROUP ? "EnrollmentGroup" : "Enrollment";
        r = c->st->ops->enrollment_list(c->st, c->scope, c->kind, NULL, after[0] ? after : NULL,
                                        (int)limit, page_add, &p, &more);
    }
    if (r != 0) {
        store_fail(&f, r, "listing");
        goto fail;
    }
    if (p.failed) {
        set_fail(&f, SVC_ERR_INTERNAL, "internal error: cannot render the listing");
        goto fail;
    }
    if (op == OP_QUERY && c->kind == STORE_ENROLLMENT) {
        /* after the listing: a store handle runs one statement at a time */
        size_t i;
        json_t *item;

        json_array_foreach(p.items, i, item) {
            const char *id = json_string_value(json_object_get(item, "registrationId"));

            if (id != NULL && embed_registration_state(c, item, id, &f) != 0)
                goto fail;
        }
    }
    http_response_set_header(c->resp, "x-ms-item-type", item_type);
    snprintf(num, sizeof(num), "%ld", limit);
    http_response_set_header(c->resp, "x-ms-max-item-count", num);
    if (more && p.last[0] != '\0') {
        char token[4 * ((PROV_MAX_REG_ID + 2) / 3) + 1];

        model_continuation_encode(p.last, token, sizeof(token));
        http_response_set_header(c->resp, "x-ms-continuation", token);
    }
    send_json(c, 200, p.items, NULL);
    goto out;
fail:
    send_fail(c, &f);
out:
    json_decref(p.items);
}

/* ---- bulk ---- */

static int add_bulk_error(json_t *errors, const char *idm, const char *id,
                          const struct svc_fail *f)
{
    json_t *e = json_pack("{s:s, s:i, s:s}", idm, id, "errorCode", f->code, "errorStatus",
                          f->msg);

    return e != NULL && json_array_append_new(errors, e) == 0 ? 0 : PROV_ENOMEM;
}

static void bulk_item(struct svc_ctx *c, enum model_bulk_mode mode, size_t i, const json_t *item,
                      struct svc_fail *f, const char **id_out)
{
    const char *idm = model_id_member(c->kind);
    const json_t *idv = json_object_get(item, idm);
    const json_t *ev = json_object_get(item, "etag");
    struct put_args a = {.body = item};
    char ifm[ETAG_MAX];
    const char *id;

    f->code = 0;
    *id_out = "";
    if (!json_is_object(item)) {
        set_fail(f, SVC_ERR_INVALID_BODY, "item %zu is not an object", i);
        return;
    }
    if (!json_is_string(idv)) {
        set_fail(f, SVC_ERR_INVALID_ID, "item %zu has no %s", i, idm);
        return;
    }
    id = json_string_value(idv);
    if (!id_is_valid(id)) {
        set_fail(f, SVC_ERR_INVALID_ID, "item %zu: %s is not a valid id", i, idm);
        return;
    }
    *id_out = id;
    if (ev != NULL && !json_is_null(ev) &&
        (!json_is_string(ev) || model_etag_normalize(json_string_value(ev), ifm, sizeof(ifm)))) {
        set_fail(f, SVC_ERR_INVALID_BODY, "item %zu: etag is not valid", i);
        return;
    }
    if (mode == BULK_DELETE) {
        (void)delete_entity(c, id, json_is_string(ev) ? ifm : NULL, f);
        return;
    }
    a.id = id;
    a.mode = mode == BULK_CREATE ? STORE_PUT_CREATE : STORE_PUT_UPSERT;
    if (mode == BULK_UPDATE_IF_MATCH) {
        if (!json_is_string(ev)) {
            set_fail(f, SVC_ERR_ETAG, "item %zu: updateIfMatchETag needs the item's etag", i);
            return;
        }
        a.if_match = ifm;
    }
    (void)put_entity(c, &a, NULL, NULL, f);
}

static void handle_bulk(struct svc_ctx *c)
{
    const char *list_name = c->kind == STORE_GROUP ? "enrollmentGroups" : "enrollments";
    struct svc_fail f = {0};
    json_t *body = NULL, *errors = NULL, *result = NULL, *items, *mode_v, *item;
    enum model_bulk_mode mode;
    char err[384];
    size_t i;

    if (model_parse_object(c->req->body, c->req->body_len, false, &body, err, sizeof(err)) != 0) {
        set_fail(&f, SVC_ERR_INVALID_BODY, "%s", err);
        goto fail;
    }
    mode_v = json_object_get(body, "mode");
    if (!json_is_string(mode_v) || model_bulk_mode(json_string_value(mode_v), &mode) != 0) {
        set_fail(&f, SVC_ERR_INVALID_BODY,
                 "mode must be create, update, updateIfMatchETag or delete");
        goto fail;
    }
    items = json_object_get(body, list_name);
    if (!json_is_array(items)) {
        set_fail(&f, SVC_ERR_INVALID_BODY, "%s must be an array", list_name);
        goto fail;
    }
    if (json_array_size(items) > MAX_BULK_ITEMS) {
        set_fail(&f, SVC_ERR_INVALID_BODY, "a bulk operation takes at most %d items",
                 MAX_BULK_ITEMS);
        goto fail;
    }
    if ((errors = json_array()) == NULL) {
        set_fail(&f, SVC_ERR_INTERNAL, "out of memory");
        goto fail;
    }
    json_array_foreach(items, i, item) {
        struct svc_fail itf = {0};
        const char *id;

        bulk_item(c, mode, i, item, &itf, &id);
        if (itf.code != 0 && add_bulk_error(errors, model_id_member(c->kind), id, &itf) != 0) {
            set_fail(&f, SVC_ERR_INTERNAL, "out of memory");
            goto fail;
        }
    }
    result = json_pack("{s:b, s:O}", "isSuccessful", json_array_size(errors) == 0, "errors",
                       errors);
    if (result == NULL) {
        set_fail(&f, SVC_ERR_INTERNAL, "out of memory");
        goto fail;
    }
    send_json(c, 200, result, NULL);
    goto out;
fail:
    send_fail(c, &f);
out:
    json_decref(result);
    json_decref(errors);
    model_json_free(body);
}

/* ---- registration records ---- */

static void handle_reg_get(struct svc_ctx *c)
{
    struct svc_fail f = {0};
    struct store_doc d = {0};
    json_t *j = NULL;
    int r;

    r = c->st->ops->registration_get(c->st, c->scope, c->id, &d);
    if (r == PROV_ENOTFOUND) {
        set_fail(&f, SVC_ERR_REGISTRATION_NOT_FOUND, "registration '%s' not found", c->id);
        goto fail;
    }
    if (r != 0) {
        store_fail(&f, r, "registration lookup");
        goto fail;
    }
    if ((j = parse_stored(&d)) == NULL) {
        set_fail(&f, SVC_ERR_INTERNAL, "internal error: stored registration is corrupt");
        goto fail;
    }
    send_json(c, 200, j, d.etag);
    goto out;
fail:
    send_fail(c, &f);
out:
    json_decref(j);
    store_doc_release(&d);
}

static void handle_reg_delete(struct svc_ctx *c)
{
    struct svc_fail f = {0};
    char ifm[ETAG_MAX];
    bool has_ifm;
    int r;

    if (read_if_match(c, ifm, sizeof(ifm), &has_ifm, &f) != 0)
        goto fail;
    r = delete_registration(c, c->id, has_ifm ? ifm : NULL);
    if (r == PROV_ENOTFOUND && !has_ifm) {
        set_fail(&f, SVC_ERR_REGISTRATION_NOT_FOUND, "registration '%s' not found", c->id);
        goto fail;
    }
    if (r == PROV_ENOTFOUND || r == PROV_EPRECONDITION) {
        set_fail(&f, SVC_ERR_ETAG, "the etag does not match registration '%s'", c->id);
        goto fail;
    }
    if (r != 0) {
        store_fail(&f, r, "registration delete");
        goto fail;
    }
    c->resp->status = 204;
    return;
fail:
    send_fail(c, &f);
}

/* ---- routing ---- */

struct route {
    enum svc_op op;
    enum store_kind kind;
    unsigned rights;
    const char *raw_id; /* path segment holding the id, or NULL */
};

static void method_not_allowed(struct svc_ctx *c, const char *allow)
{
    http_response_set_header(c->resp, "Allow", allow);
    http_response_error(c->resp, c->req, SVC_ERR_METHOD, "method %s is not allowed here",
                        c->req->method_name != NULL ? c->req->method_name : "?");
}

/* Maps method and path to an operation; false after answering 404/405. */
static bool route(struct svc_ctx *c, char **segs, int nsegs, struct route *rt)
{
    enum http_method_id m = c->req->method;
    bool registrations = str_ieq(segs[0], "registrations");

    rt->kind = str_ieq(segs[0], "enrollmentGroups") ? STORE_GROUP : STORE_ENROLLMENT;
    rt->raw_id = nsegs >= 2 ? segs[1] : NULL;
    if (registrations) {
        if (nsegs == 2) {
            if (m == HM_GET) {
                *rt = (struct route){OP_REG_GET, STORE_ENROLLMENT, RIGHT_REGISTRATION_READ,
                                     segs[1]};
                return true;
            }
            if (m == HM_DELETE) {
                *rt = (struct route){OP_REG_DELETE, STORE_ENROLLMENT, RIGHT_REGISTRATION_WRITE,
                                     segs[1]};
                return true;
            }
            method_not_allowed(c, "GET, DELETE");
            return false;
        }
        if (nsegs == 3 && str_ieq(segs[2], "query")) {
            if (m == HM_POST) {
                *rt = (struct route){OP_REG_QUERY, STORE_ENROLLMENT, RIGHT_REGISTRATION_READ,
                                     segs[1]};
                return true;
            }
            method_not_allowed(c, "POST");
            return false;
        }
    } else if (nsegs == 1) {
        if (m == HM_POST) {
            rt->op = OP_BULK;
            rt->rights = RIGHT_ENROLLMENT_WRITE;
            rt->raw_id = NULL;
            return true;
        }
        method_not_allowed(c, "POST");
        return false;
    } else if (nsegs == 2) {
        if (m == HM_POST && str_ieq(segs[1], "query")) {
            rt->op = OP_QUERY;
            rt->rights = RIGHT_ENROLLMENT_READ;
            rt->raw_id = NULL;
            return true;
        }
        switch (m) {
        case HM_GET: rt->op = OP_GET; rt->rights = RIGHT_ENROLLMENT_READ; return true;
        case HM_PUT: rt->op = OP_PUT; rt->rights = RIGHT_ENROLLMENT_WRITE; return true;
        case HM_DELETE: rt->op = OP_DELETE; rt->rights = RIGHT_ENROLLMENT_WRITE; return true;
        default: method_not_allowed(c, "GET, PUT, DELETE"); return false;
        }
    } else if (nsegs == 3 && str_ieq(segs[2], "attestationmechanism")) {
        if (m == HM_POST) {
            rt->op = OP_ATTESTATION;
            rt->rights = RIGHT_ENROLLMENT_READ;
            return true;
        }
        method_not_allowed(c, "POST");
        return false;
    }
    http_response_error(c->resp, c->req, SVC_ERR_NO_RESOURCE, "no such resource");
    return false;
}

/* Decodes and checks the id segment into c->id. */
static bool decode_id(struct svc_ctx *c, const char *raw)
{
    size_t len = strlen(raw);
    char *dec;
    int n;

    if (len > 3 * PROV_MAX_REG_ID) {
        http_response_error(c->resp, c->req, SVC_ERR_INVALID_ID, "the id is too long");
        return false;
    }
    dec = malloc(len + 1);
    if (dec == NULL) {
        http_response_error(c->resp, c->req, SVC_ERR_INTERNAL, "out of memory");
        return false;
    }
    n = url_decode(raw, len, dec, false);
    if (n < 0 || !id_is_valid(dec)) {
        free(dec);
        http_response_error(c->resp, c->req, SVC_ERR_INVALID_ID,
                            "the id in the path is not a valid %s id: 1 to %d letters, digits "
                            "and - . _ :, ending with a letter, digit or -",
                            "registration or enrollment group", PROV_MAX_REG_ID);
        return false;
    }
    snprintf(c->id, sizeof(c->id), "%s", dec);
    free(dec);
    return true;
}

const char *service_pick_scope(struct worker *w, struct http_request *req,
                               struct http_response *resp)
{
    char buf[PROV_MAX_SCOPE + 1];
    const char *scope;
    int n = http_query_param(req, "idScope", buf, sizeof(buf));

    if (n == PROV_ENOTFOUND) {
        if (w->cfg->nscopes == 0) {
            http_response_error(resp, req, SVC_ERR_SCOPE_NOT_FOUND, "no ID scope is configured");
            return NULL;
        }
        return w->cfg->scopes[0];
    }
    if (n < 0) {
        http_response_error(resp, req, SVC_ERR_BAD_REQUEST,
                            "the idScope query parameter is malformed or too long");
        return NULL;
    }
    if ((scope = config_find_scope(w->cfg, buf)) == NULL) {
        http_response_error(resp, req, SVC_ERR_SCOPE_NOT_FOUND,
                            "idScope names no ID scope of this service");
        return NULL;
    }
    return scope;
}

void service_api_handle(struct worker *w, struct http_request *req, struct http_response *resp,
                        char **segs, int nsegs)
{
    struct svc_ctx c = {.w = w, .st = w->store, .req = req, .resp = resp};
    struct route rt = {0};
    const struct cfg_policy *policy = NULL;
    char why[256];

    if (!route(&c, segs, nsegs, &rt))
        return;
    if (service_auth_check(w->cfg, http_request_header(req, "Authorization"),
                           http_request_header(req, "Host"), req->path, rt.rights,
                           (long long)time(NULL), &policy, why, sizeof(why)) != 0) {
        http_response_error(resp, req, SVC_ERR_UNAUTHORIZED, "%s", why);
        return;
    }
    if ((c.scope = service_pick_scope(w, req, resp)) == NULL)
        return;
    if (rt.raw_id != NULL && !decode_id(&c, rt.raw_id))
        return;
    if (c.st == NULL) {
        http_response_error(resp, req, SVC_ERR_INTERNAL, "no store");
        return;
    }
    c.kind = rt.kind;
    switch (rt.op) {
    case OP_PUT: handle_put(&c); break;
    case OP_GET: handle_get(&c, false); break;
    case OP_ATTESTATION: handle_get(&c, true); break;
    case OP_DELETE: handle_delete(&c); break;
    case OP_QUERY: handle_query(&c, OP_QUERY); break;
    case OP_BULK: handle_bulk(&c); break;
    case OP_REG_GET: handle_reg_get(&c); break;
    case OP_REG_DELETE: handle_reg_delete(&c); break;
    case OP_REG_QUERY: handle_query(&c, OP_REG_QUERY); break;
    }
    plog(LOG_DEBUG, "%s %s by policy %s in scope %s -> %d", req->method_name, req->path,
         policy != NULL ? policy->name : "?", c.scope, resp->status);
}
