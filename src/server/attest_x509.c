/*
 * X.509 attestation. The device proved possession of its leaf's key in the
 * TLS handshake; here provd decides which enrollment the leaf belongs to:
 *
 *  1. The registration id must equal the leaf's subject CN.
 *  2. An individual enrollment with that registration id decides alone: it
 *     must be an X.509 enrollment pinning this leaf (certificate or
 *     thumbprint, primary or secondary) and the leaf must be within its
 *     validity period; a disabled one refuses (said only to the holder of
 *     the pinned certificate).
 *  3. Otherwise the X.509 enrollment groups: each group's anchors are its
 *     signing certificates, or the CA certificates it references (which must
 *     have passed proof of possession). Only groups whose anchor names an
 *     issuer in the presented chain are tried; the chain is verified by
 *     OpenSSL (x509_verify_chain) with the device's intermediates. Of the
 *     groups that verify, the one whose anchor is nearest the leaf decides
 *     (DPS walks the chain from the leaf up): disabled refuses.
 *
 * Every refusal is 401 and its message names the chain element and why;
 * nothing here is secret (the device sent the certificates).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/x509.h>

#include "../common/errors.h"
#include "../common/log.h"
#include "../common/util.h"
#include "../store/store.h"
#include "attest.h"
#include "x509.h"

#define LOG_MODULE "x509"

static const char *jstr(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static bool is_enabled(const json_t *enr)
{
    const char *s = jstr(enr, "provisioningStatus");

    return s == NULL || str_ieq(s, "enabled");
}

/* "certificate 0 (CN=dev)" */
static void describe(X509 *cert, int depth, char *out, size_t outlen)
{
    char cn[128];

    if (!x509_subject_cn(cert, cn, sizeof(cn)))
        snprintf(cn, sizeof(cn), "?");
    snprintf(out, outlen, "certificate %d (CN=%s)", depth, cn);
}

/* Does the individual enrollment's client certificate entry pin this leaf? */
static bool pins_leaf(const json_t *entry, X509 *leaf)
{
    const json_t *info = json_object_get(entry, "info");
    const char *pem = jstr(entry, "certificate");
    const char *tp;

    if (entry == NULL)
        return false;
    if (pem != NULL)
        return x509_same_der(pem, leaf);
    tp = jstr(info, "sha256Thumbprint");
    if (tp == NULL)
        tp = jstr(info, "sha1Thumbprint");
    return tp != NULL && x509_thumbprint_matches(leaf, tp);
}

static int individual(struct reg_ctx *ctx, const struct reg_request *req, json_t *enr,
                      struct attest_match *m, struct reg_reply *reply)
{
    const json_t *att = json_object_get(enr, "attestation");
    const char *type = jstr(att, "type");
    const json_t *cc = json_object_get(json_object_get(att, "x509"), "clientCertificates");
    struct x509_verdict v;
    char what[200];

    (void)ctx;
    describe(req->peer_leaf, 0, what, sizeof(what));
    if (type == NULL || !str_ieq(type, "x509")) {
        attest_fail(reply, DPS_CERTIFICATE_REFUSED,
                    "the individual enrollment does not use X.509 attestation",
                    "%s: individual enrollment uses %s attestation", what, type ? type : "no");
        return -1;
    }
    if (!pins_leaf(json_object_get(cc, "primary"), req->peer_leaf) &&
        !pins_leaf(json_object_get(cc, "secondary"), req->peer_leaf)) {
        char msg[512];

        snprintf(msg, sizeof(msg), "%s: not the certificate of the individual enrollment", what);
        attest_fail(reply, DPS_CERTIFICATE_REFUSED, msg, "%s", msg);
        return -1;
    }
    if (x509_check_validity(req->peer_leaf, 0, &v) != 0) {
        attest_fail(reply, DPS_CERTIFICATE_REFUSED, v.message, "%s", v.message);
        return -1;
    }
    /* told only to the holder of the pinned certificate */
    if (!is_enabled(enr)) {
        attest_fail(reply, DPS_ENROLLMENT_DISABLED, "enrollment is disabled",
                    "%s: individual enrollment '%s' is disabled", what, req->registration_id);
        return -1;
    }
    m->enrollment = json_incref(enr);
    if (!req->auth_only)
        m->x509 = json_pack("{s:o}", "certificateInfo", x509_info(req->peer_leaf));
    return 0;
}

/* One group's trust anchors, and whether one of them is an unverified CA. */
struct anchors {
    STACK_OF(X509) *certs;
    char unverified_ca[257]; /* name of a referenced CA that is not verified, or "" */
};

static void add_anchor(struct anchors *a, const char *pem)
{
    const char *why;
    X509 *c = pem ? x509_parse_one(pem, &why) : NULL;

    if (c != NULL && !sk_X509_push(a->certs, c))
        X509_free(c);
}

static int load_anchors(struct reg_ctx *ctx, const struct reg_request *req, const json_t *grp,
                        struct anchors *a)
{
    const json_t *x = json_object_get(json_object_get(grp, "attestation"), "x509");
    const json_t *sc = json_object_get(x, "signingCertificates");
    const json_t *refs = json_object_get(x, "caReferences");
    static const char *const slots[] = {"primary", "secondary"};

    a->certs = sk_X509_new_null();
    a->unverified_ca[0] = '\0';
    if (a->certs == NULL)
        return PROV_ENOMEM;
    for (int i = 0; i < 2; i++) {
        const char *name = jstr(refs, slots[i]);
        struct store_doc doc = {0};
        json_t *ca;

        add_anchor(a, jstr(json_object_get(sc, slots[i]), "certificate"));
        if (name == NULL)
            continue;
        if (ctx->store->ops->enrollment_get(ctx->store, req->scope, STORE_CA, name, &doc) != 0)
            continue; /* deleted since: the reference matches nothing */
        ca = attest_load_doc(&doc);
        store_doc_release(&doc);
        if (ca == NULL)
            continue;
        if (json_is_true(json_object_get(json_object_get(ca, "properties"), "isVerified")) ||
            json_is_true(json_object_get(ca, "isVerified"))) {
            const char *pem = jstr(ca, "certificatePem");

            add_anchor(a, pem ? pem : jstr(json_object_get(ca, "properties"), "certificate"));
        } else {
            snprintf(a->unverified_ca, sizeof(a->unverified_ca), "%s", name);
        }
        json_decref(ca);
    }
    return 0;
}

/* Is some anchor the issuer of a certificate in the presented chain? */
static bool anchor_relevant(X509 *anchor, X509 *leaf, STACK_OF(X509) *chain)
{
    X509_NAME *subj = X509_get_subject_name(anchor);

    if (X509_NAME_cmp(subj, X509_get_issuer_name(leaf)) == 0)
        return true;
    for (int i = 0; chain != NULL && i < sk_X509_num(chain); i++) {
        X509 *c = sk_X509_value(chain, i);

        if (X509_NAME_cmp(subj, X509_get_issuer_name(c)) == 0 ||
            X509_NAME_cmp(subj, X509_get_subject_name(c)) == 0)
            return true;
    }
    return false;
}

/* A CA certificate's stored PEM may fail to parse only if the store was edited by hand. */
static X509 *unverified_ca_cert(struct reg_ctx *ctx, const struct reg_request *req,
                                const char *name)
{
    struct store_doc doc = {0};
    json_t *ca;
    X509 *c = NULL;
    const char *why;

    if (ctx->store->ops->enrollment_get(ctx->store, req->scope, STORE_CA, name, &doc) != 0)
        return NULL;
    ca = attest_load_doc(&doc);
    store_doc_release(&doc);
    if (ca != NULL) {
        const char *pem = jstr(ca, "certificatePem");

        if (pem == NULL)
            pem = jstr(json_object_get(ca, "properties"), "certificate");
        if (pem != NULL)
            c = x509_parse_one(pem, &why);
    }
    json_decref(ca);
    return c;
}

struct group_pick {
    json_t *grp; /* owned */
    char id[PROV_MAX_REG_ID + 1];
    int anchor_depth;
    X509 *anchor; /* owned reference */
};

struct group_walk {
    struct reg_ctx *ctx;
    const struct reg_request *req;
    struct group_pick best;
    struct x509_verdict failure; /* most informative failure seen */
    bool have_failure;
    char unverified[129]; /* a relevant but unverified CA reference */
    char last_id[PROV_MAX_REG_ID + 1];
    int seen;
};

/* Failures that only mean "this group's anchor is not this chain's issuer". */
static bool uninformative(int error)
{
    return error == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT ||
           error == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
           error == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT ||
           error == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN ||
           error == X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE;
}

static int walk_group(void *arg, const struct store_doc *doc)
{
    struct group_walk *gw = arg;
    const struct reg_request *req = gw->req;
    json_t *grp = attest_load_doc(doc);
    struct anchors a = {0};
    bool relevant = false;

    gw->seen++;
    snprintf(gw->last_id, sizeof(gw->last_id), "%s", doc->id);
    if (grp == NULL || load_anchors(gw->ctx, req, grp, &a) != 0)
        goto out;
    for (int i = 0; i < sk_X509_num(a.certs); i++)
        relevant =
            relevant || anchor_relevant(sk_X509_value(a.certs, i), req->peer_leaf, req->peer_chain);
    if (a.unverified_ca[0] != '\0' && gw->unverified[0] == '\0') {
        X509 *c = unverified_ca_cert(gw->ctx, req, a.unverified_ca);

        if (c != NULL && anchor_relevant(c, req->peer_leaf, req->peer_chain))
            snprintf(gw->unverified, sizeof(gw->unverified), "%.128s", a.unverified_ca);
        X509_free(c);
    }
    if (relevant) {
        struct x509_verdict v;
        STACK_OF(X509) *chain = NULL;

        if (x509_verify_chain_ex(req->peer_leaf, req->peer_chain, a.certs, 0, &v, &chain) == 0) {
            if (gw->best.grp == NULL || v.anchor_depth < gw->best.anchor_depth) {
                X509 *anchor = sk_X509_value(chain, sk_X509_num(chain) - 1);

                json_decref(gw->best.grp);
                X509_free(gw->best.anchor);
                gw->best.grp = json_incref(grp);
                gw->best.anchor_depth = v.anchor_depth;
                gw->best.anchor = anchor;
                if (anchor != NULL)
                    X509_up_ref(anchor);
                snprintf(gw->best.id, sizeof(gw->best.id), "%s",
                         jstr(grp, "enrollmentGroupId") ? jstr(grp, "enrollmentGroupId") : doc->id);
            }
            sk_X509_pop_free(chain, X509_free);
        } else if (!gw->have_failure ||
                   (uninformative(gw->failure.error) && !uninformative(v.error))) {
            gw->failure = v;
            gw->have_failure = true;
        }
    }
out:
    if (a.certs != NULL)
        sk_X509_pop_free(a.certs, X509_free);
    json_decref(grp);
    return 0;
}

static int groups(struct reg_ctx *ctx, const struct reg_request *req, struct attest_match *m,
                  struct reg_reply *reply)
{
    struct group_walk gw = {.ctx = ctx, .req = req};
    bool more = false;
    char what[200];
    int r;

    gw.best.anchor_depth = 1 << 30;
    describe(req->peer_leaf, 0, what, sizeof(what));
    do {
        r = ctx->store->ops->enrollment_list(ctx->store, req->scope, STORE_GROUP, "x509",
                                             gw.seen ? gw.last_id : NULL, 100, walk_group, &gw,
                                             &more);
        if (r != 0) {
            attest_fail(reply, DPS_INTERNAL, "internal error", "store: %s", prov_strerror(r));
            return -1;
        }
    } while (more);
    if (gw.best.grp == NULL) {
        char msg[512];

        if (gw.unverified[0] != '\0')
            snprintf(msg, sizeof(msg),
                     "%s: its chain reaches CA certificate '%.128s', which has not passed proof "
                     "of possession (unverified CA)",
                     what, gw.unverified);
        else if (gw.have_failure && !uninformative(gw.failure.error))
            snprintf(msg, sizeof(msg), "%s", gw.failure.message);
        else
            snprintf(msg, sizeof(msg),
                     "%s: no enrollment matches it and no enrollment group trusts its issuer "
                     "(unknown CA)",
                     what);
        attest_fail(reply, DPS_CERTIFICATE_REFUSED, msg, "%s", msg);
        return -1;
    }
    if (!is_enabled(gw.best.grp)) {
        attest_fail(reply, DPS_ENROLLMENT_DISABLED, "enrollment group is disabled",
                    "%s: enrollment group '%s' is disabled", what, gw.best.id);
        json_decref(gw.best.grp);
        X509_free(gw.best.anchor);
        return -1;
    }
    m->enrollment = gw.best.grp;
    m->is_group = true;
    snprintf(m->group_id, sizeof(m->group_id), "%s", gw.best.id);
    if (!req->auth_only)
        m->x509 = json_pack("{s:o, s:s}", "certificateInfo", x509_info(req->peer_leaf),
                            "enrollmentGroupId", gw.best.id);
    if (m->x509 != NULL && gw.best.anchor != NULL)
        json_object_set_new(m->x509, "signingCertificateInfo", x509_info(gw.best.anchor));
    X509_free(gw.best.anchor);
    return 0;
}

int attest_x509(struct reg_ctx *ctx, const struct reg_request *req, struct attest_match *m,
                struct reg_reply *reply)
{
    struct store_doc doc = {0};
    char cn[PROV_MAX_REG_ID + 1];
    char what[200];
    int r;

    describe(req->peer_leaf, 0, what, sizeof(what));
    if (!x509_subject_cn(req->peer_leaf, cn, sizeof(cn)) || !str_ieq(cn, req->registration_id)) {
        char msg[512];

        snprintf(msg, sizeof(msg), "%s: subject CN does not match registration id '%s'", what,
                 req->registration_id);
        attest_fail(reply, DPS_CERTIFICATE_REFUSED, msg, "%s", msg);
        return -1;
    }
    r = ctx->store->ops->enrollment_get(ctx->store, req->scope, STORE_ENROLLMENT,
                                        req->registration_id, &doc);
    if (r == 0) {
        json_t *enr = attest_load_doc(&doc);

        store_doc_release(&doc);
        if (enr == NULL) {
            attest_fail(reply, DPS_INTERNAL, "internal error", "unreadable enrollment");
            return -1;
        }
        r = individual(ctx, req, enr, m, reply);
        json_decref(enr);
        return r;
    }
    if (r != PROV_ENOTFOUND) {
        attest_fail(reply, DPS_INTERNAL, "internal error", "store: %s", prov_strerror(r));
        return -1;
    }
    return groups(ctx, req, m, reply);
}
