/*
 * CA certificates with proof of possession: provd's own admin API, with the
 * paths and shapes of DPS's ARM API (which no service SDK calls):
 *
 *   GET    /certificates                                  {"value": [CertificateResponse]}
 *   GET    /certificates/{name}                           CertificateResponse
 *   PUT    /certificates/{name}                           {"certificate", "isVerified"?}
 *   DELETE /certificates/{name}                           If-Match required
 *   POST   /certificates/{name}/generateVerificationCode  If-Match required
 *   POST   /certificates/{name}/verify                    If-Match required, {"certificate"}
 *
 * also under /subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Devices/
 * provisioningServices/{n} (the router strips that prefix). The certificates
 * of each ID scope are a separate store (kind STORE_CA); the scope is chosen
 * as in the service API (idScope query parameter, else the first scope).
 *
 * Choices where ARM's contract leaves room:
 *  - Every operation needs the ServiceConfig right (ARM is reached by owners
 *    only; reads included). A missing right is 401, as in the service API.
 *  - PUT creates without If-Match; replacing an existing certificate needs it
 *    (412002 when missing, 412001 when stale). "*" matches any etag.
 *  - Upload refuses a certificate that is not a CA (basic constraints). An
 *    upload with isVerified true is verified at once (DPS "automatic
 *    verification": the operator asserts possession).
 *  - A missing certificate is 404206 before any If-Match check, so a typo in
 *    the name is not reported as an etag problem.
 *  - The verification code is 32 random bytes in upper-case hex (64 characters,
 *    the longest CN). Each generateVerificationCode replaces the pending code;
 *    a successful verify clears it. A failed verify changes nothing.
 *  - DELETE of a certificate that an enrollment group references is 409003
 *    (naming the group); successful DELETE is 204.
 *  - At most MODEL_MAX_CAS certificates per scope (the DPS limit): 400007.
 *  - The CertificateResponse id is "/certificates/{name}"; the etag is an
 *    unquoted string in the body and quoted in the ETag header.
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
#include "model.h"
#include "service_auth.h"

#define LOG_MODULE "ca"

#define ETAG_MAX 128

enum ca_op { CA_LIST, CA_GET, CA_PUT, CA_DELETE, CA_CODE, CA_VERIFY };

struct ca_ctx {
    struct worker *w;
    struct store *st;
    struct http_request *req;
    struct http_response *resp;
    const char *scope;
    char name[MODEL_CA_NAME_MAX + 1];
};

/* A stored certificate with its columns. */
struct ca_loaded {
    struct store_doc d;
    json_t *doc;
};

static void ca_loaded_release(struct ca_loaded *l)
{
    store_doc_release(&l->d);
    json_decref(l->doc);
    l->doc = NULL;
}

static void answer_error(struct ca_ctx *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void answer_error(struct ca_ctx *c, int code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    http_response_error(c->resp, c->req, code, "%s", msg);
}

static void store_error(struct ca_ctx *c, int r, const char *what)
{
    plog(LOG_ERROR, "store: %s failed: %s", what, prov_strerror(r));
    answer_error(c, SVC_ERR_INTERNAL, "internal error: %s failed", what);
}

static json_t *parse_stored(const struct store_doc *d)
{
    json_error_t jerr;
    json_t *j = d->json != NULL ? json_loads(d->json, 0, &jerr) : NULL;

    if (!json_is_object(j)) {
        plog(LOG_ERROR, "stored CA certificate '%s' is not a JSON object",
             d->id != NULL ? d->id : "?");
        json_decref(j);
        return NULL;
    }
    return j;
}

/* Loads c->name; false after answering (404206 or 500). */
static bool load(struct ca_ctx *c, struct ca_loaded *l)
{
    int r = c->st->ops->enrollment_get(c->st, c->scope, STORE_CA, c->name, &l->d);

    if (r == PROV_ENOTFOUND) {
        answer_error(c, SVC_ERR_CA_NOT_FOUND, "CA certificate '%s' not found", c->name);
        return false;
    }
    if (r != 0) {
        store_error(c, r, "CA certificate lookup");
        return false;
    }
    if ((l->doc = parse_stored(&l->d)) == NULL) {
        answer_error(c, SVC_ERR_INTERNAL, "internal error: stored CA certificate is corrupt");
        return false;
    }
    return true;
}

/*
 * If-Match against a stored certificate (cur, NULL when there is none).
 * required: a missing header is 412002, naming `action`. On success out
 * holds the normalised value ("" when absent and not required). false after
 * answering.
 */
static bool check_if_match(struct ca_ctx *c, const struct store_doc *cur, bool required,
                           const char *action, char *out, size_t outlen)
{
    const char *v = http_request_header(c->req, "If-Match");

    out[0] = '\0';
    if (v == NULL) {
        if (!required)
            return true;
        answer_error(c, SVC_ERR_ETAG_REQUIRED,
                     "If-Match is required to %s CA certificate '%s': send its etag (from GET "
                     "/certificates/%s)", action, c->name, c->name);
        return false;
    }
    if (model_etag_normalize(v, out, outlen) != 0) {
        answer_error(c, SVC_ERR_BAD_REQUEST, "the If-Match header is not a valid etag");
        return false;
    }
    if (cur == NULL) {
        answer_error(c, SVC_ERR_ETAG, "CA certificate '%s' does not exist (If-Match)", c->name);
        return false;
    }
    if (strcmp(out, "*") != 0 && (cur->etag == NULL || strcmp(cur->etag, out) != 0)) {
        answer_error(c, SVC_ERR_ETAG, "the etag does not match CA certificate '%s'", c->name);
        return false;
    }
    return true;
}

/*
 * Writes doc as c->name. old: the stored columns when replacing (created is
 * kept), NULL when creating. if_match: the caller's normalised etag (checked
 * again by the store, atomically) or NULL. On success etag_out holds the new
 * etag and created/updated the columns written. false after answering.
 */
static bool write_doc(struct ca_ctx *c, const json_t *doc, const struct store_doc *old,
                      const char *if_match, char etag_out[37], char *created, char *updated,
                      size_t tlen)
{
    struct store_doc nd = {0};
    char *text;
    int r;

    if (uuid_v4(etag_out) != 0) {
        answer_error(c, SVC_ERR_INTERNAL, "internal error: no randomness");
        return false;
    }
    time_now_rfc3339(updated, tlen);
    snprintf(created, tlen, "%s", old != NULL && old->created != NULL ? old->created : updated);
    if ((text = json_dumps(doc, JSON_COMPACT)) == NULL) {
        answer_error(c, SVC_ERR_INTERNAL, "out of memory");
        return false;
    }
    nd.id = c->name;
    nd.etag = etag_out;
    nd.json = text;
    nd.attestation = (char *)"x509";
    nd.created = created;
    nd.updated = updated;
    r = c->st->ops->enrollment_put(c->st, c->scope, STORE_CA, &nd,
                                   old == NULL ? STORE_PUT_CREATE : STORE_PUT_UPSERT,
                                   old == NULL ? NULL : if_match);
    free(text);
    if (r == PROV_EEXISTS) {
        answer_error(c, SVC_ERR_EXISTS, "CA certificate '%s' was created concurrently; send "
                     "If-Match to replace it", c->name);
        return false;
    }
    if (r == PROV_EPRECONDITION || r == PROV_ENOTFOUND) {
        answer_error(c, SVC_ERR_ETAG, "the etag does not match CA certificate '%s'", c->name);
        return false;
    }
    if (r != 0) {
        store_error(c, r, "CA certificate write");
        return false;
    }
    return true;
}

static void respond(struct ca_ctx *c, const json_t *doc, const char *etag, const char *created,
                    const char *updated, bool with_code)
{
    json_t *out = model_ca_render(doc, etag, created, updated, with_code);
    char quoted[ETAG_MAX + 3];

    if (out == NULL) {
        answer_error(c, SVC_ERR_INTERNAL, "internal error: cannot render CA certificate '%s'",
                     c->name);
        return;
    }
    model_etag_quote(etag, quoted, sizeof(quoted));
    http_response_set_header(c->resp, "ETag", quoted);
    http_response_json(c->resp, 200, out);
    json_decref(out);
}

/* ---- handlers ---- */

struct list_acc {
    json_t *items;
    bool failed;
    char last[MODEL_CA_NAME_MAX + 1];
};

static int list_one(void *arg, const struct store_doc *d)
{
    struct list_acc *a = arg;
    json_t *doc = parse_stored(d);
    json_t *item = doc != NULL ? model_ca_render(doc, d->etag, d->created, d->updated, false)
                               : NULL;

    json_decref(doc);
    if (item == NULL || json_array_append_new(a->items, item) != 0) {
        a->failed = true;
        return 1;
    }
    snprintf(a->last, sizeof(a->last), "%s", d->id != NULL ? d->id : "");
    str_lower(a->last);
    return 0;
}

static void handle_list(struct ca_ctx *c)
{
    struct list_acc a = {.items = json_array()};
    json_t *out = NULL;
    bool more = false;
    int r;

    if (a.items == NULL) {
        answer_error(c, SVC_ERR_INTERNAL, "out of memory");
        return;
    }
    do {
        r = c->st->ops->enrollment_list(c->st, c->scope, STORE_CA, NULL,
                                        a.last[0] ? a.last : NULL, PROV_DEFAULT_PAGE, list_one,
                                        &a, &more);
        if (r != 0) {
            store_error(c, r, "CA certificate listing");
            goto out;
        }
        if (a.failed) {
            answer_error(c, SVC_ERR_INTERNAL, "internal error: cannot render the listing");
            goto out;
        }
    } while (more);
    if ((out = json_pack("{s:O}", "value", a.items)) == NULL) {
        answer_error(c, SVC_ERR_INTERNAL, "out of memory");
        goto out;
    }
    http_response_json(c->resp, 200, out);
out:
    json_decref(out);
    json_decref(a.items);
}

static void handle_get(struct ca_ctx *c)
{
    struct ca_loaded l = {0};
    char ifm[ETAG_MAX];

    if (load(c, &l) && check_if_match(c, &l.d, false, "read", ifm, sizeof(ifm)))
        respond(c, l.doc, l.d.etag, l.d.created, l.d.updated, false);
    ca_loaded_release(&l);
}

static void handle_put(struct ca_ctx *c)
{
    struct ca_loaded l = {0};
    json_t *body = NULL, *doc = NULL;
    char ifm[ETAG_MAX], err[384], etag[37], created[40], updated[40];
    bool exists;
    int r;

    if (model_parse_object(c->req->body, c->req->body_len, false, &body, err, sizeof(err)) != 0) {
        answer_error(c, SVC_ERR_INVALID_BODY, "%s", err);
        goto out;
    }
    r = c->st->ops->enrollment_get(c->st, c->scope, STORE_CA, c->name, &l.d);
    if (r != 0 && r != PROV_ENOTFOUND) {
        store_error(c, r, "CA certificate lookup");
        goto out;
    }
    exists = r == 0;
    if (exists && (l.doc = parse_stored(&l.d)) == NULL) {
        answer_error(c, SVC_ERR_INTERNAL, "internal error: stored CA certificate is corrupt");
        goto out;
    }
    if (!check_if_match(c, exists ? &l.d : NULL, exists, "replace", ifm, sizeof(ifm)))
        goto out;
    if (!exists) {
        long n = 0;

        r = c->st->ops->enrollment_count(c->st, c->scope, STORE_CA, NULL, &n);
        if (r != 0) {
            store_error(c, r, "CA certificate count");
            goto out;
        }
        if (n >= MODEL_MAX_CAS) {
            answer_error(c, SVC_ERR_QUOTA, "an ID scope holds at most %d CA certificates",
                         MODEL_MAX_CAS);
            goto out;
        }
    }
    r = model_ca_prepare(c->name, body, l.doc, &doc, err, sizeof(err));
    if (r == PROV_EINVAL) {
        answer_error(c, SVC_ERR_INVALID_BODY, "%s", err);
        goto out;
    }
    if (r != 0) {
        answer_error(c, SVC_ERR_INTERNAL, "internal error: %s", prov_strerror(r));
        goto out;
    }
    if (!write_doc(c, doc, exists ? &l.d : NULL, ifm, etag, created, updated, sizeof(created)))
        goto out;
    plog(LOG_INFO, "CA certificate '%s' %s in scope %s (verified: %s)", c->name,
         exists ? "replaced" : "uploaded", c->scope,
         json_is_true(json_object_get(doc, "isVerified")) ? "yes" : "no");
    respond(c, doc, etag, created, updated, false);
out:
    json_decref(doc);
    json_decref(body);
    ca_loaded_release(&l);
}

struct ref_scan {
    const char *name;
    bool failed;
    char group[PROV_MAX_REG_ID + 1];
    char last[PROV_MAX_REG_ID + 1];
};

static int ref_one(void *arg, const struct store_doc *d)
{
    struct ref_scan *rs = arg;
    json_t *g = parse_stored(d);

    snprintf(rs->last, sizeof(rs->last), "%s", d->id != NULL ? d->id : "");
    str_lower(rs->last);
    if (g == NULL) {
        rs->failed = true;
        return 1;
    }
    if (model_references_ca(g, rs->name))
        snprintf(rs->group, sizeof(rs->group), "%s", d->id != NULL ? d->id : "?");
    json_decref(g);
    return rs->group[0] != '\0';
}

/*
 * The first enrollment group referencing c->name into rs->group ("" when
 * none); false after answering.
 */
static bool find_reference(struct ca_ctx *c, struct ref_scan *rs)
{
    bool more = false;
    int r;

    rs->name = c->name;
    do {
        r = c->st->ops->enrollment_list(c->st, c->scope, STORE_GROUP, "x509",
                                        rs->last[0] ? rs->last : NULL, PROV_DEFAULT_PAGE,
                                        ref_one, rs, &more);
        if (r != 0) {
            store_error(c, r, "enrollment group listing");
            return false;
        }
        if (rs->failed) {
            answer_error(c, SVC_ERR_INTERNAL, "internal error: a stored group is corrupt");
            return false;
        }
    } while (more && rs->group[0] == '\0');
    return true;
}

static void handle_delete(struct ca_ctx *c)
{
    struct ca_loaded l = {0};
    struct ref_scan rs = {0};
    char ifm[ETAG_MAX];
    int r;

    if (!load(c, &l) || !check_if_match(c, &l.d, true, "delete", ifm, sizeof(ifm)) ||
        !find_reference(c, &rs))
        goto out;
    if (rs.group[0] != '\0') {
        answer_error(c, SVC_ERR_CA_REFERENCED, "CA certificate '%s' is referenced by enrollment "
                     "group '%s'; change or delete the group first", c->name, rs.group);
        goto out;
    }
    r = c->st->ops->enrollment_delete(c->st, c->scope, STORE_CA, c->name, ifm);
    if (r == PROV_EPRECONDITION || r == PROV_ENOTFOUND) {
        answer_error(c, SVC_ERR_ETAG, "the etag does not match CA certificate '%s'", c->name);
        goto out;
    }
    if (r != 0) {
        store_error(c, r, "CA certificate delete");
        goto out;
    }
    plog(LOG_INFO, "CA certificate '%s' deleted from scope %s", c->name, c->scope);
    c->resp->status = 204;
out:
    ca_loaded_release(&l);
}

static void handle_code(struct ca_ctx *c)
{
    struct ca_loaded l = {0};
    char ifm[ETAG_MAX], code[MODEL_CA_CODE_LEN + 1] = "", etag[37], created[40], updated[40];
    int r;

    if (!load(c, &l) ||
        !check_if_match(c, &l.d, true, "make a verification code for", ifm, sizeof(ifm)))
        goto out;
    if ((r = model_ca_new_code(l.doc, code)) != 0) {
        answer_error(c, SVC_ERR_INTERNAL, "internal error: %s", prov_strerror(r));
        goto out;
    }
    if (!write_doc(c, l.doc, &l.d, ifm, etag, created, updated, sizeof(created)))
        goto out;
    respond(c, l.doc, etag, created, updated, true);
out:
    prov_cleanse(code, sizeof(code));
    ca_loaded_release(&l);
}

static void handle_verify(struct ca_ctx *c)
{
    struct ca_loaded l = {0};
    json_t *body = NULL;
    char ifm[ETAG_MAX], err[384], etag[37], created[40], updated[40];
    int r;

    if (!load(c, &l) || !check_if_match(c, &l.d, true, "verify", ifm, sizeof(ifm)))
        goto out;
    if (model_parse_object(c->req->body, c->req->body_len, false, &body, err, sizeof(err)) != 0) {
        answer_error(c, SVC_ERR_INVALID_BODY, "%s", err);
        goto out;
    }
    r = model_ca_verify(l.doc, body, 0, err, sizeof(err));
    if (r == PROV_EINVAL) {
        answer_error(c, SVC_ERR_INVALID_BODY, "%s", err);
        goto out;
    }
    if (r == PROV_EAUTH) {
        answer_error(c, SVC_ERR_VERIFICATION, "CA certificate '%s': %s", c->name, err);
        goto out;
    }
    if (r != 0) {
        plog(LOG_ERROR, "verify of CA certificate '%s': %s", c->name,
             r == PROV_EINTERNAL ? err : prov_strerror(r));
        answer_error(c, SVC_ERR_INTERNAL, "internal error: %s", prov_strerror(r));
        goto out;
    }
    if (!write_doc(c, l.doc, &l.d, ifm, etag, created, updated, sizeof(created)))
        goto out;
    plog(LOG_INFO, "CA certificate '%s' of scope %s verified by proof of possession", c->name,
         c->scope);
    respond(c, l.doc, etag, created, updated, false);
out:
    json_decref(body);
    ca_loaded_release(&l);
}

/* ---- routing ---- */

static void method_not_allowed(struct ca_ctx *c, const char *allow)
{
    http_response_set_header(c->resp, "Allow", allow);
    http_response_error(c->resp, c->req, SVC_ERR_METHOD, "method %s is not allowed here",
                        c->req->method_name != NULL ? c->req->method_name : "?");
}

/* Maps method and path to an operation; false after answering 404/405. */
static bool route(struct ca_ctx *c, char **segs, int nsegs, enum ca_op *op)
{
    enum http_method_id m = c->req->method;

    if (nsegs == 1) {
        if (m == HM_GET) {
            *op = CA_LIST;
            return true;
        }
        method_not_allowed(c, "GET");
        return false;
    }
    if (nsegs == 2) {
        switch (m) {
        case HM_GET: *op = CA_GET; return true;
        case HM_PUT: *op = CA_PUT; return true;
        case HM_DELETE: *op = CA_DELETE; return true;
        default: method_not_allowed(c, "GET, PUT, DELETE"); return false;
        }
    }
    if (nsegs == 3 && (str_ieq(segs[2], "generateVerificationCode") ||
                       str_ieq(segs[2], "verify"))) {
        if (m != HM_POST) {
            method_not_allowed(c, "POST");
            return false;
        }
        *op = str_ieq(segs[2], "verify") ? CA_VERIFY : CA_CODE;
        return true;
    }
    http_response_error(c->resp, c->req, SVC_ERR_NO_RESOURCE, "no such resource");
    return false;
}

/* Decodes and checks the name segment into c->name. */
static bool decode_name(struct ca_ctx *c, const char *raw)
{
    size_t len = strlen(raw);
    char *dec;
    int n;

    if (len > 3 * MODEL_CA_NAME_MAX) {
        http_response_error(c->resp, c->req, SVC_ERR_INVALID_ID,
                            "the certificate name is too long");
        return false;
    }
    if ((dec = malloc(len + 1)) == NULL) {
        http_response_error(c->resp, c->req, SVC_ERR_INTERNAL, "out of memory");
        return false;
    }
    n = url_decode(raw, len, dec, false);
    if (n < 0 || !model_ca_name_valid(dec)) {
        free(dec);
        http_response_error(c->resp, c->req, SVC_ERR_INVALID_ID,
                            "the certificate name must be 1 to %d letters, digits, '-', '_' "
                            "and '.'", MODEL_CA_NAME_MAX);
        return false;
    }
    snprintf(c->name, sizeof(c->name), "%s", dec);
    free(dec);
    return true;
}

void ca_api_handle(struct worker *w, struct http_request *req, struct http_response *resp,
                   char **segs, int nsegs)
{
    struct ca_ctx c = {.w = w, .st = w->store, .req = req, .resp = resp};
    const struct cfg_policy *policy = NULL;
    enum ca_op op = CA_LIST;
    char why[256];

    if (!route(&c, segs, nsegs, &op))
        return;
    if (service_auth_check(w->cfg, http_request_header(req, "Authorization"),
                           http_request_header(req, "Host"), req->path, RIGHT_SERVICE_CONFIG,
                           (long long)time(NULL), &policy, why, sizeof(why)) != 0) {
        http_response_error(resp, req, SVC_ERR_UNAUTHORIZED, "%s", why);
        return;
    }
    if ((c.scope = service_pick_scope(w, req, resp)) == NULL)
        return;
    if (nsegs >= 2 && !decode_name(&c, segs[1]))
        return;
    if (c.st == NULL) {
        http_response_error(resp, req, SVC_ERR_INTERNAL, "no store");
        return;
    }
    switch (op) {
    case CA_LIST: handle_list(&c); break;
    case CA_GET: handle_get(&c); break;
    case CA_PUT: handle_put(&c); break;
    case CA_DELETE: handle_delete(&c); break;
    case CA_CODE: handle_code(&c); break;
    case CA_VERIFY: handle_verify(&c); break;
    }
    plog(LOG_DEBUG, "%s %s by policy %s in scope %s -> %d", req->method_name, req->path,
         policy != NULL ? policy->name : "?", c.scope, resp->status);
}
