/*
 * TPM attestation, server side (device-protocol §4.4 and §5; the choices are
 * in docs/protocol-decisions.md "TPM attestation"):
 *
 *  1. PUT .../register with {"tpm": {"endorsementKey", "storageRootKey",
 *     "endorsementKeyCertificate"?}} and no Authorization: the EK must belong
 *     to an enrollment: the individual enrollment of the registration id
 *     (same TPMT_PUBLIC), or, when there is none, a TPM enrollment group whose
 *     endorsementCertificateAuthorities verify the EK certificate, which must
 *     certify this EK (same RSA modulus and exponent); a group device must use
 *     its default registration id. Answer: 401 with {"authenticationKey":
 *     blob(K), "keyName": "registration"}, K = the challenge key of
 *     tpm_secret.h (no state is kept per challenge).
 *  2. The same PUT with a SAS signed with K (current or previous 10-minute
 *     bucket): the enrollment must be enabled (401003 otherwise, told only
 *     now); the match carries registrationState.tpm = {"authenticationKey":
 *     blob(K_hub)} and the hub key K_hub.
 *  3. Polls and status lookups carry only the SAS: K is derived again from
 *     what the store knows about the registration id (the individual
 *     enrollment's EK, or, for a group device, its registration id, which is
 *     the EK's default id).
 * Every refusal of the device's credential is 401002 with one message; the
 * log line (reply->detail) says why. Nothing secret is logged.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "../common/errors.h"
#include "../common/limits.h"
#include "../common/log.h"
#include "../common/sas.h"
#include "../common/util.h"
#include "../store/store.h"
#include "attest.h"
#include "tpm_blob.h"
#include "tpm_secret.h"
#include "x509.h"

#define LOG_MODULE "tpm"

#define TPM_KEY_NAME "registration"
#define NOT_AUTHORIZED "registration not authorized"
/* groups read per store call while looking for the one that trusts an EK certificate */
#define GROUP_PAGE 100

/* What the device sent in its "tpm" member. */
struct tpm_device {
    struct tpm_public ek;
    struct tpm_public srk;
    char ek_id[TPM_REGISTRATION_ID_SIZE]; /* the EK's default registration id */
    X509 *ek_cert;                        /* endorsementKeyCertificate, or NULL */
};

static const char *jstr(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static const json_t *tpm_object(const json_t *enrollment)
{
    return json_object_get(json_object_get(enrollment, "attestation"), "tpm");
}

static bool is_tpm(const json_t *enrollment)
{
    const char *type = jstr(json_object_get(enrollment, "attestation"), "type");

    return type != NULL && str_ieq(type, "tpm");
}

static bool is_enabled(const json_t *enrollment)
{
    const char *s = jstr(enrollment, "provisioningStatus");

    return s == NULL || str_ieq(s, "enabled");
}

static uint64_t current_bucket(void)
{
    return (uint64_t)time(NULL) / TPM_CHALLENGE_BUCKET_SECONDS;
}

/*
 * Decodes a base64 TPM2B_PUBLIC of an EK or SRK into out; raw (cap bytes)
 * receives the TPM2B bytes. 0, or PROV_EPROTO with *why set.
 */
static int decode_public(const char *b64, struct tpm_public *out, uint8_t *raw, size_t cap,
                         size_t *raw_len, const char **why)
{
    size_t len = b64 != NULL ? strlen(b64) : 0;
    int n;

    *why = "not base64";
    if (len == 0 || b64_decoded_max(len) > cap)
        return PROV_EPROTO;
    n = b64_decode(b64, len, raw);
    if (n <= 0)
        return PROV_EPROTO;
    *raw_len = (size_t)n;
    return tpm_public_parse(raw, (size_t)n, TPM_PUBLIC_PARENT, out, why) == 0 ? 0 : PROV_EPROTO;
}

/* The EK's default registration id from a base64 TPM2B_PUBLIC (parsed as an EK). */
static int ek_id_of(const char *b64, struct tpm_public *ek, char id[TPM_REGISTRATION_ID_SIZE])
{
    uint8_t raw[TPM_PUBLIC_AREA_MAX + 8];
    size_t len = 0;
    const char *why;

    if (decode_public(b64, ek, raw, sizeof(raw), &len, &why) != 0)
        return PROV_EPROTO;
    return tpm_registration_id(raw, len, id, TPM_REGISTRATION_ID_SIZE);
}

/* Parses the request's "tpm" member; -1 with reply filled (400004) when it is unusable. */
static int parse_device(const json_t *tpm, struct tpm_device *dev, struct reg_reply *reply)
{
    uint8_t raw[TPM_PUBLIC_AREA_MAX + 8];
    size_t len = 0;
    const char *why = NULL, *cert = jstr(tpm, "endorsementKeyCertificate");
    char msg[300];

    if (decode_public(jstr(tpm, "endorsementKey"), &dev->ek, raw, sizeof(raw), &len, &why) != 0) {
        snprintf(msg, sizeof(msg),
                 "tpm.endorsementKey is not an RSA-2048 TPM2B_PUBLIC of an EK: %s", why);
        attest_fail(reply, DPS_INVALID_BODY, msg, "%s", msg);
        return -1;
    }
    if (tpm_registration_id(raw, len, dev->ek_id, sizeof(dev->ek_id)) != 0) {
        attest_fail(reply, DPS_INTERNAL, "internal error", "cannot hash the EK");
        return -1;
    }
    if (decode_public(jstr(tpm, "storageRootKey"), &dev->srk, raw, sizeof(raw), &len, &why) != 0) {
        snprintf(msg, sizeof(msg),
                 "tpm.storageRootKey is not an RSA-2048 TPM2B_PUBLIC of an SRK: %s", why);
        attest_fail(reply, DPS_INVALID_BODY, msg, "%s", msg);
        return -1;
    }
    if (cert != NULL && cert[0] != '\0' && (dev->ek_cert = x509_parse_one(cert, &why)) == NULL) {
        snprintf(msg, sizeof(msg), "tpm.endorsementKeyCertificate: %s",
                 why != NULL ? why : "not a certificate");
        attest_fail(reply, DPS_INVALID_BODY, msg, "%s", msg);
        return -1;
    }
    return 0;
}

/* Does the individual enrollment hold this EK (the same TPMT_PUBLIC bytes)? */
static bool enrollment_has_ek(const json_t *enrollment, const struct tpm_public *ek)
{
    struct tpm_public stored;
    uint8_t raw[TPM_PUBLIC_AREA_MAX + 8];
    size_t len = 0;
    const char *why;

    if (decode_public(jstr(tpm_object(enrollment), "endorsementKey"), &stored, raw, sizeof(raw),
                      &len, &why) != 0)
        return false;
    return stored.area_len == ek->area_len && memcmp(stored.area, ek->area, ek->area_len) == 0;
}

/* Is cert's public key the EK (RSA, same modulus and exponent)? */
static bool cert_certifies_ek(X509 *cert, const struct tpm_public *ek)
{
    EVP_PKEY *pk = X509_get0_pubkey(cert);
    BIGNUM *n = NULL, *e = NULL, *want = NULL;
    bool same = false;

    ERR_set_mark();
    if (pk != NULL && EVP_PKEY_is_a(pk, "RSA") &&
        EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_N, &n) == 1 &&
        EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_E, &e) == 1 &&
        (want = BN_bin2bn(ek->modulus, (int)ek->modulus_len, NULL)) != NULL)
        same = BN_cmp(n, want) == 0 && BN_is_word(e, ek->exponent);
    BN_free(n);
    BN_free(e);
    BN_free(want);
    ERR_pop_to_mark();
    return same;
}

/*
 * Verifies an EK certificate against a group's endorsementCertificateAuthorities
 * (each a trust anchor, root or intermediate: X509_V_FLAG_PARTIAL_CHAIN). The
 * validity periods, signatures and basic constraints of the chain are
 * enforced; no purpose and no extended key usage (manufacturers' EK
 * certificates have none for TLS). 0, PROV_EAUTH (why filled) or PROV_ENOMEM.
 */
static int verify_ek_cert(X509 *cert, const json_t *cas, char *why, size_t whylen)
{
    X509_STORE *store;
    X509_STORE_CTX *vctx = NULL;
    size_t i, added = 0;
    const json_t *v;
    int r = PROV_ENOMEM;

    ERR_set_mark();
    if ((store = X509_STORE_new()) == NULL)
        goto out;
    json_array_foreach(cas, i, v)
    {
        X509 *ca = json_is_string(v) ? x509_parse_one(json_string_value(v), NULL) : NULL;

        if (ca != NULL && X509_STORE_add_cert(store, ca) == 1)
            added++;
        X509_free(ca);
    }
    if (added == 0) {
        snprintf(why, whylen, "the group holds no readable CA certificate");
        r = PROV_EAUTH;
        goto out;
    }
    if ((vctx = X509_STORE_CTX_new()) == NULL || X509_STORE_CTX_init(vctx, store, cert, NULL) != 1)
        goto out;
    X509_VERIFY_PARAM_set_flags(X509_STORE_CTX_get0_param(vctx), X509_V_FLAG_PARTIAL_CHAIN);
    X509_VERIFY_PARAM_set_depth(X509_STORE_CTX_get0_param(vctx), PROV_X509_MAX_DEPTH);
    if (X509_verify_cert(vctx) == 1) {
        r = 0;
    } else {
        int err = X509_STORE_CTX_get_error(vctx);

        snprintf(why, whylen, "EK certificate chain element %d: %s",
                 X509_STORE_CTX_get_error_depth(vctx), X509_verify_cert_error_string(err));
        r = err == X509_V_ERR_OUT_OF_MEM ? PROV_ENOMEM : PROV_EAUTH;
    }
out:
    X509_STORE_CTX_free(vctx);
    X509_STORE_free(store);
    ERR_pop_to_mark();
    return r;
}

struct group_scan {
    X509 *ek_cert;
    json_t *found;
    char found_id[PROV_MAX_REG_ID + 1];
    char last_id[PROV_MAX_REG_ID + 1];
    int seen;
    int err;       /* PROV_ENOMEM stops the scan */
    char why[256]; /* the last group's refusal, for the log */
};

static int scan_group(void *arg, const struct store_doc *doc)
{
    struct group_scan *gs = arg;
    json_t *g = attest_load_doc(doc);
    const json_t *cas = json_object_get(tpm_object(g), "endorsementCertificateAuthorities");
    int r;

    gs->seen++;
    snprintf(gs->last_id, sizeof(gs->last_id), "%s", doc->id);
    if (g == NULL || !is_tpm(g) || !json_is_array(cas)) {
        json_decref(g);
        return 0;
    }
    r = verify_ek_cert(gs->ek_cert, cas, gs->why, sizeof(gs->why));
    if (r == 0) {
        gs->found = g;
        snprintf(gs->found_id, sizeof(gs->found_id), "%s", doc->id);
        return 1;
    }
    json_decref(g);
    if (r != PROV_EAUTH) {
        gs->err = r;
        return 1;
    }
    return 0;
}

/*
 * The TPM enrollment groups of the scope, in id order; the first whose CAs
 * verify the EK certificate decides. 0 (m filled), PROV_ENOTFOUND (why
 * filled) or a store / memory error.
 */
static int find_group(struct reg_ctx *ctx, const struct reg_request *req, X509 *ek_cert,
                      struct attest_match *m, char *why, size_t whylen)
{
    struct store *st = ctx->store;
    struct group_scan gs = {.ek_cert = ek_cert};
    bool more = false;
    int r;

    snprintf(gs.why, sizeof(gs.why), "no TPM enrollment group in the scope");
    do {
        r = st->ops->enrollment_list(st, req->scope, STORE_GROUP, "tpm",
                                     gs.seen ? gs.last_id : NULL, GROUP_PAGE, scan_group, &gs,
                                     &more);
        if (r != 0)
            return r;
        if (gs.err != 0)
            return gs.err;
    } while (gs.found == NULL && more);
    if (gs.found == NULL) {
        snprintf(why, whylen, "%s", gs.why);
        return PROV_ENOTFOUND;
    }
    m->enrollment = gs.found;
    m->is_group = true;
    snprintf(m->group_id, sizeof(m->group_id), "%s", gs.found_id);
    return 0;
}

/*
 * Which enrollment the EK belongs to. An individual enrollment of the
 * registration id decides alone; otherwise the groups, for a device that
 * uses its default registration id and sent an EK certificate of its EK.
 * 0 with m->enrollment (and is_group, group_id), or -1 with reply filled.
 */
static int resolve(struct reg_ctx *ctx, const struct reg_request *req, const struct tpm_device *dev,
                   struct attest_match *m, struct reg_reply *reply)
{
    struct store *st = ctx->store;
    struct store_doc doc = {0};
    char why[256];
    int r;

    r = st->ops->enrollment_get(st, req->scope, STORE_ENROLLMENT, req->registration_id, &doc);
    if (r == 0) {
        json_t *e = attest_load_doc(&doc);

        store_doc_release(&doc);
        if (e == NULL) {
            attest_fail(reply, DPS_INTERNAL, "internal error", "unreadable enrollment");
            return -1;
        }
        if (!is_tpm(e)) {
            attest_fail(reply, DPS_UNAUTHORIZED, NOT_AUTHORIZED,
                        "individual enrollment uses %s attestation, device sent a TPM EK",
                        jstr(json_object_get(e, "attestation"), "type")
                            ? jstr(json_object_get(e, "attestation"), "type")
                            : "no");
            json_decref(e);
            return -1;
        }
        if (!enrollment_has_ek(e, &dev->ek)) {
            attest_fail(reply, DPS_UNAUTHORIZED, NOT_AUTHORIZED,
                        "the EK is not the individual enrollment's endorsementKey");
            json_decref(e);
            return -1;
        }
        m->enrollment = e;
        return 0;
    }
    if (r != PROV_ENOTFOUND) {
        attest_fail(reply, DPS_INTERNAL, "internal error", "store: %s", prov_strerror(r));
        return -1;
    }
    if (!str_ieq(req->registration_id, dev->ek_id)) {
        attest_fail(reply, DPS_UNAUTHORIZED, NOT_AUTHORIZED,
                    "no individual enrollment; a TPM group device must use its default "
                    "registration id %s",
                    dev->ek_id);
        return -1;
    }
    if (dev->ek_cert == NULL) {
        attest_fail(reply, DPS_UNAUTHORIZED, NOT_AUTHORIZED,
                    "no individual enrollment, and no endorsementKeyCertificate for a group");
        return -1;
    }
    if (!cert_certifies_ek(dev->ek_cert, &dev->ek)) {
        attest_fail(reply, DPS_UNAUTHORIZED, NOT_AUTHORIZED,
                    "the endorsementKeyCertificate is not a certificate of the EK");
        return -1;
    }
    r = find_group(ctx, req, dev->ek_cert, m, why, sizeof(why));
    if (r == PROV_ENOTFOUND) {
        attest_fail(reply, DPS_UNAUTHORIZED, NOT_AUTHORIZED,
                    "no TPM enrollment group trusts the EK certificate (%s)", why);
        return -1;
    }
    if (r != 0) {
        attest_fail(reply, DPS_INTERNAL, "internal error", "group lookup: %s", prov_strerror(r));
        return -1;
    }
    return 0;
}

/*
 * Checks the request's SAS against K of the current and the previous bucket.
 * 0, or -1 with reply filled.
 */
static int verify_token(const struct reg_request *req, const uint8_t secret[TPM_SECRET_SIZE],
                        const char *ek_id, struct reg_reply *reply)
{
    struct sas_token tok;
    uint8_t k[TPM_DERIVED_KEY_SIZE];
    uint64_t bucket = current_bucket();
    bool ok = false;
    int bad = 0;

    if (attest_sas_precheck(req, &tok, reply) != 0)
        return -1;
    for (uint64_t i = 0; i < 2; i++) {
        if (tpm_challenge_key(secret, req->scope, req->registration_id, ek_id, bucket - i, k) != 0)
            bad = 1;
        else if (sas_check_key(&tok, k, sizeof(k)))
            ok = true;
    }
    prov_cleanse(k, sizeof(k));
    prov_cleanse(&tok, sizeof(tok));
    if (bad) {
        attest_fail(reply, DPS_INTERNAL, "internal error", "cannot derive the TPM challenge key");
        return -1;
    }
    if (!ok) {
        attest_fail(reply, DPS_UNAUTHORIZED, NOT_AUTHORIZED,
                    "signature does not match the TPM challenge key of this EK (current or "
                    "previous %d-second window)",
                    TPM_CHALLENGE_BUCKET_SECONDS);
        return -1;
    }
    return 0;
}

/* The 401 challenge: {"authenticationKey": blob(K), "keyName": "registration"}. */
static void challenge(const struct reg_request *req, const struct tpm_device *dev,
                      const struct attest_match *m, const uint8_t secret[TPM_SECRET_SIZE],
                      struct reg_reply *reply)
{
    uint8_t k[TPM_DERIVED_KEY_SIZE];
    char *blob = NULL;
    int r;

    r = tpm_challenge_key(secret, req->scope, req->registration_id, dev->ek_id, current_bucket(),
                          k);
    if (r == 0)
        r = tpm_activation_blob(&dev->ek, &dev->srk, k, NULL, &blob);
    prov_cleanse(k, sizeof(k));
    if (r != 0) {
        attest_fail(reply, DPS_INTERNAL, "internal error", "activation blob: %s", prov_strerror(r));
        return;
    }
    reply->body = json_pack("{s:s, s:s}", "authenticationKey", blob, "keyName", TPM_KEY_NAME);
    free(blob);
    if (reply->body == NULL) {
        attest_fail(reply, DPS_INTERNAL, "internal error", "out of memory");
        return;
    }
    attest_fail(reply, DPS_UNAUTHORIZED, "TPM challenge", "TPM challenge sent (%s%s)",
                m->is_group ? "enrollment group " : "individual enrollment",
                m->is_group ? m->group_id : "");
}

/* After the proof: registrationState.tpm and the hub key. 0 or -1 (reply filled). */
static int hub_credentials(const struct tpm_device *dev, const uint8_t secret[TPM_SECRET_SIZE],
                           struct attest_match *m, struct reg_reply *reply)
{
    char *blob = NULL;
    int r;

    _Static_assert(sizeof(m->hub_key) >= TPM_DERIVED_KEY_SIZE, "hub key fits");
    r = tpm_hub_key(secret, dev->ek_id, m->hub_key);
    if (r == 0) {
        m->hub_key_len = TPM_DERIVED_KEY_SIZE;
        r = tpm_activation_blob(&dev->ek, &dev->srk, m->hub_key, NULL, &blob);
    }
    if (r == 0 && (m->tpm = json_pack("{s:s}", "authenticationKey", blob)) == NULL)
        r = PROV_ENOMEM;
    free(blob);
    if (r != 0) {
        attest_fail(reply, DPS_INTERNAL, "internal error", "hub key blob: %s", prov_strerror(r));
        return -1;
    }
    return 0;
}

static void refuse_disabled(const struct reg_request *req, const struct attest_match *m,
                            struct reg_reply *reply)
{
    attest_fail(reply, DPS_ENROLLMENT_DISABLED,
                m->is_group ? "enrollment group is disabled" : "enrollment is disabled",
                "%s%s is disabled", m->is_group ? "enrollment group " : "enrollment ",
                m->is_group ? m->group_id : req->registration_id);
}

/*
 * The TPM enrollment group a device was registered through, from its
 * registration record. 0 (*group set, m->is_group and group_id filled), 1
 * when there is none, -1 with reply filled on a store failure.
 */
static int record_group(struct reg_ctx *ctx, const struct reg_request *req, json_t **group,
                        struct attest_match *m, struct reg_reply *reply)
{
    struct store *st = ctx->store;
    struct store_doc reg = {0}, grp = {0};
    int r, ret = 1;

    r = st->ops->registration_get(st, req->scope, req->registration_id, &reg);
    if (r == 0)
        r = reg.group_id != NULL
                ? st->ops->enrollment_get(st, req->scope, STORE_GROUP, reg.group_id, &grp)
                : PROV_ENOTFOUND;
    if (r == 0) {
        json_t *g = attest_load_doc(&grp);

        if (g != NULL && is_tpm(g)) {
            *group = g;
            m->is_group = true;
            snprintf(m->group_id, sizeof(m->group_id), "%s", grp.id);
            ret = 0;
        } else {
            json_decref(g);
        }
    } else if (r != PROV_ENOTFOUND) {
        attest_fail(reply, DPS_INTERNAL, "internal error", "store: %s", prov_strerror(r));
        ret = -1;
    }
    store_doc_release(&reg);
    store_doc_release(&grp);
    return ret;
}

/*
 * A request without the tpm member (poll, status lookup). The EK id comes
 * from the individual enrollment, or for a group device from its registration
 * id (which is its EK id), the group from its registration record. 1 when
 * the registration id is not a TPM device's.
 */
static int token_only(struct reg_ctx *ctx, const struct reg_request *req, struct attest_match *m,
                      struct reg_reply *reply)
{
    struct store *st = ctx->store;
    struct store_doc doc = {0};
    struct tpm_public ek;
    char ek_id[TPM_REGISTRATION_ID_SIZE] = "";
    uint8_t secret[TPM_SECRET_SIZE];
    json_t *e = NULL;
    int r, ret = -1;

    if (req->authorization == NULL)
        return 1;
    r = st->ops->enrollment_get(st, req->scope, STORE_ENROLLMENT, req->registration_id, &doc);
    if (r == 0) {
        e = attest_load_doc(&doc);
        store_doc_release(&doc);
        if (e == NULL || !is_tpm(e)) {
            ret = 1;
            goto out;
        }
        if (ek_id_of(jstr(tpm_object(e), "endorsementKey"), &ek, ek_id) != 0) {
            attest_fail(reply, DPS_INTERNAL, "internal error", "unreadable enrollment EK");
            goto out;
        }
    } else if (r == PROV_ENOTFOUND) {
        if (strlen(req->registration_id) + 1 != sizeof(ek_id))
            return 1; /* not an EK id: not a TPM group device */
        if ((ret = record_group(ctx, req, &e, m, reply)) != 0)
            goto out;
        ret = -1;
        snprintf(ek_id, sizeof(ek_id), "%s", req->registration_id);
        str_lower(ek_id);
    } else {
        attest_fail(reply, DPS_INTERNAL, "internal error", "store: %s", prov_strerror(r));
        goto out;
    }
    if (tpm_secret_get(ctx->cfg->data_dir, secret) != 0) {
        attest_fail(reply, DPS_INTERNAL, "internal error", "no TPM secret");
        goto out;
    }
    r = verify_token(req, secret, ek_id, reply);
    if (r == 0 && !is_enabled(e)) {
        refuse_disabled(req, m, reply);
        r = -1;
    } else if (r == 0 && tpm_hub_key(secret, ek_id, m->hub_key) != 0) {
        /* never a TPM match without the device's hub key, even where none is needed */
        attest_fail(reply, DPS_INTERNAL, "internal error", "cannot derive the hub key");
        r = -1;
    }
    prov_cleanse(secret, sizeof(secret));
    if (r != 0)
        goto out;
    m->hub_key_len = TPM_DERIVED_KEY_SIZE;
    m->enrollment = e;
    e = NULL;
    ret = 0;
out:
    json_decref(e);
    if (ret != 0) {
        prov_cleanse(m->hub_key, sizeof(m->hub_key));
        m->is_group = false;
        m->group_id[0] = '\0';
    }
    return ret;
}

int attest_tpm(struct reg_ctx *ctx, const struct reg_request *req, struct attest_match *m,
               struct reg_reply *reply)
{
    const json_t *tpm = req->body != NULL ? json_object_get(req->body, "tpm") : NULL;
    struct tpm_device *dev;
    uint8_t secret[TPM_SECRET_SIZE];
    int ret = -1;

    memset(m, 0, sizeof(*m));
    if (tpm == NULL)
        return token_only(ctx, req, m, reply);
    if (!json_is_object(tpm)) {
        attest_fail(reply, DPS_INVALID_BODY, "tpm must be an object", "tpm is not an object");
        return -1;
    }
    /* two public areas of 640+ bytes each: not on a worker's stack */
    if ((dev = calloc(1, sizeof(*dev))) == NULL) {
        attest_fail(reply, DPS_INTERNAL, "internal error", "out of memory");
        return -1;
    }
    if (parse_device(tpm, dev, reply) != 0 || resolve(ctx, req, dev, m, reply) != 0)
        goto out;
    if (tpm_secret_get(ctx->cfg->data_dir, secret) != 0) {
        attest_fail(reply, DPS_INTERNAL, "internal error", "no TPM secret");
        goto out;
    }
    if (req->authorization == NULL) {
        challenge(req, dev, m, secret, reply);
    } else if (verify_token(req, secret, dev->ek_id, reply) == 0) {
        if (!is_enabled(m->enrollment))
            refuse_disabled(req, m, reply);
        else
            ret = hub_credentials(dev, secret, m, reply);
    }
    prov_cleanse(secret, sizeof(secret));
out:
    if (ret != 0)
        attest_match_release(m);
    X509_free(dev->ek_cert);
    free(dev);
    return ret;
}
