/*
 * TPM attestation through the registration pipeline (registration_register,
 * registration_poll, registration_status) against a real SQLite store and a
 * real secret file in a temporary directory. The device side is done in
 * software here: RSA EK and SRK key pairs made with OpenSSL, their
 * TPM2B_PUBLIC built by hand, and the blob opened as a TPM would
 * (RSA-OAEP with the private keys, KDFa, the integrity HMACs, AES-128-CFB) to
 * recover the key it carries. Also: the secret file, the challenge-key
 * window, TPM enrollment groups (EK certificates, model validation) and the
 * wire check of the tpm member.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "src/common/errors.h"
#include "src/common/sas.h"
#include "src/common/util.h"
#include "src/server/dps_wire.h"
#include "src/server/model.h"
#include "src/server/registration.h"
#include "src/server/tpm_blob.h"
#include "src/server/tpm_secret.h"
#include "src/server/tpm_soft.h"
#include "src/store/store.h"
#include "testpki.h"

#define SCOPE "0ne00TPM001"
#define NOT_AUTHORIZED "registration not authorized"

/* ---- a software TPM: the device side ------------------------------------------------ */

struct soft_tpm {
    EVP_PKEY *ek_key, *srk_key;
    char *ek_b64, *srk_b64;
    struct tpm_public ek, srk;
    char rid[TPM_REGISTRATION_ID_SIZE]; /* the default registration id */
};

/* A, B: individual enrollments; C, E: group devices; D: default-id individual */
static struct soft_tpm tpm_a, tpm_b, tpm_c, tpm_d, tpm_e;

static size_t put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return 2;
}

/* TPM2B_PUBLIC of an RSA-2048 restricted decryption key (EK or SRK template, §5.1). */
static size_t build_public(const uint8_t modulus[256], bool ek, uint8_t *out)
{
    static const uint8_t ek_policy[32] = {0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8,
                                          0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
                                          0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64,
                                          0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa};
    uint32_t attrs = ek ? 0x000300B2u : 0x00030472u;
    size_t o = 2;

    o += put16(out + o, 0x0001); /* RSA */
    o += put16(out + o, 0x000B); /* SHA-256 */
    o += put16(out + o, (uint16_t)(attrs >> 16));
    o += put16(out + o, (uint16_t)attrs);
    if (ek) {
        o += put16(out + o, 32);
        memcpy(out + o, ek_policy, 32);
        o += 32;
    } else {
        o += put16(out + o, 0);
    }
    o += put16(out + o, 0x0006); /* AES */
    o += put16(out + o, 128);
    o += put16(out + o, 0x0043); /* CFB */
    o += put16(out + o, 0x0010); /* scheme NULL */
    o += put16(out + o, 2048);
    o += put16(out + o, 0); /* exponent 0 = 65537 */
    o += put16(out + o, 0);
    o += put16(out + o, 256);
    memcpy(out + o, modulus, 256);
    o += 256;
    put16(out, (uint16_t)(o - 2));
    return o;
}

static EVP_PKEY *gen_rsa(uint8_t modulus[256])
{
    EVP_PKEY *pkey = EVP_RSA_gen(2048);
    BIGNUM *n = NULL;

    assert_non_null(pkey);
    assert_int_equal(EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, &n), 1);
    assert_int_equal(BN_bn2binpad(n, modulus, 256), 256);
    BN_free(n);
    return pkey;
}

static void soft_tpm_make(struct soft_tpm *t)
{
    uint8_t mod[256], pub[400];
    size_t n;
    const char *why;

    t->ek_key = gen_rsa(mod);
    n = build_public(mod, true, pub);
    assert_int_equal(tpm_public_parse(pub, n, TPM_PUBLIC_PARENT, &t->ek, &why), 0);
    assert_int_equal(tpm_registration_id(pub, n, t->rid, sizeof(t->rid)), 0);
    t->ek_b64 = b64_encode_alloc(pub, n);
    t->srk_key = gen_rsa(mod);
    n = build_public(mod, false, pub);
    assert_int_equal(tpm_public_parse(pub, n, TPM_PUBLIC_PARENT, &t->srk, &why), 0);
    t->srk_b64 = b64_encode_alloc(pub, n);
    assert_non_null(t->ek_b64);
    assert_non_null(t->srk_b64);
}

static void soft_tpm_free(struct soft_tpm *t)
{
    EVP_PKEY_free(t->ek_key);
    EVP_PKEY_free(t->srk_key);
    free(t->ek_b64);
    free(t->srk_b64);
}

/*
 * What a TPM does with an activation blob (ActivateCredential, Import, then
 * reading the HMAC key; src/server/tpm_soft.c, every integrity check
 * included): true with the 32-byte key in k when t's EK and SRK open it,
 * false when they cannot.
 */
static bool soft_tpm_open(const struct soft_tpm *t, const char *blob_b64, uint8_t k[32])
{
    return tpm_soft_open(t->ek_key, t->srk_key, t->srk.name, blob_b64, k) == 0;
}

/* ---- fixture ------------------------------------------------------------------------ */

struct fixture {
    char dir[64];
    struct store *st;
    struct config cfg;
    struct reg_ctx ctx;
};

static int group_setup(void **state)
{
    (void)state;
    soft_tpm_make(&tpm_a);
    soft_tpm_make(&tpm_b);
    soft_tpm_make(&tpm_c);
    soft_tpm_make(&tpm_d);
    soft_tpm_make(&tpm_e);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    soft_tpm_free(&tpm_a);
    soft_tpm_free(&tpm_b);
    soft_tpm_free(&tpm_c);
    soft_tpm_free(&tpm_d);
    soft_tpm_free(&tpm_e);
    return 0;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char path[128], err[256];

    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/provd-tpm-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(path, sizeof(path), "%s/provd.db", f->dir);
    assert_int_equal(store_sqlite_open(path, &f->st, err, sizeof(err)), 0);
    snprintf(f->cfg.scopes[0], sizeof(f->cfg.scopes[0]), SCOPE);
    f->cfg.nscopes = 1;
    snprintf(f->cfg.hubs[0].hostname, sizeof(f->cfg.hubs[0].hostname), "hub1.example.test");
    f->cfg.hubs[0].weight = 1;
    f->cfg.hubs[0].apply_allocation_policy = true;
    f->cfg.nhubs = 1;
    f->cfg.retry_after = 2;
    snprintf(f->cfg.data_dir, sizeof(f->cfg.data_dir), "%s", f->dir);
    f->ctx.cfg = &f->cfg;
    f->ctx.store = f->st;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];

    store_close(f->st);
    tpm_secret_forget();
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void put_doc(struct fixture *f, enum store_kind kind, const char *id, const char *att,
                    const char *json)
{
    struct store_doc d = {0};
    char etag[37];

    assert_int_equal(uuid_v4(etag), 0);
    d.id = (char *)id;
    d.etag = etag;
    d.json = (char *)json;
    d.attestation = (char *)att;
    d.created = d.updated = (char *)"2026-01-01T00:00:00.000Z";
    assert_int_equal(f->st->ops->enrollment_put(f->st, SCOPE, kind, &d, STORE_PUT_UPSERT, NULL), 0);
}

/* An individual TPM enrollment of t (extra: more members, or NULL). */
static void put_tpm_individual(struct fixture *f, const char *rid, const struct soft_tpm *t,
                               const char *extra)
{
    char json[2048];

    snprintf(json, sizeof(json),
             "{\"registrationId\":\"%s\",\"attestation\":{\"type\":\"tpm\",\"tpm\":{"
             "\"endorsementKey\":\"%s\"}}%s%s}",
             rid, t->ek_b64, extra ? "," : "", extra ? extra : "");
    put_doc(f, STORE_ENROLLMENT, rid, "tpm", json);
}

/* A TPM enrollment group, through the service API's validation (model_prepare). */
static void put_tpm_group(struct fixture *f, const char *id, X509 *const *cas, size_t ncas,
                          const char *extra)
{
    json_t *body, *list = json_array(), *doc = NULL;
    const char *att = NULL;
    char err[256] = "", *text;

    for (size_t i = 0; i < ncas; i++) {
        char *pem = pem_of(cas[i]);

        json_array_append_new(list, json_string(pem));
        free(pem);
    }
    body = json_pack("{s:{s:s, s:{s:o}}}", "attestation", "type", "tpm", "tpm",
                     "endorsementCertificateAuthorities", list);
    assert_non_null(body);
    if (extra != NULL) {
        json_t *x = json_loads(extra, 0, NULL);

        assert_non_null(x);
        json_object_update(body, x);
        json_decref(x);
    }
    assert_int_equal(model_prepare(STORE_GROUP, id, body, NULL, f->cfg.hubs, f->cfg.nhubs, &doc,
                                   &att, err, sizeof(err)),
                     0);
    assert_string_equal(att, "tpm");
    text = json_dumps(doc, JSON_COMPACT);
    put_doc(f, STORE_GROUP, id, att, text);
    free(text);
    json_decref(doc);
    json_decref(body);
}

static json_t *tpm_body(const char *rid, const struct soft_tpm *t, const char *cert_b64)
{
    json_t *b = json_pack("{s:s, s:{s:s, s:s}}", "registrationId", rid, "tpm", "endorsementKey",
                          t->ek_b64, "storageRootKey", t->srk_b64);

    assert_non_null(b);
    if (cert_b64 != NULL)
        json_object_set_new(json_object_get(b, "tpm"), "endorsementKeyCertificate",
                            json_string(cert_b64));
    return b;
}

/* A SAS token for rid signed with the raw key k. */
static char *sas_for(const char *rid, const uint8_t *k, size_t klen, long long expiry_delta)
{
    char resource[256], *b64 = b64_encode_alloc(k, klen), *tok;

    snprintf(resource, sizeof(resource), "%s/registrations/%s", SCOPE, rid);
    tok = sas_build(resource, b64, "registration", (long long)time(NULL) + expiry_delta);
    assert_non_null(tok);
    free(b64);
    return tok;
}

/* One register PUT; the reply is the caller's (reg_reply_release). */
static void put_register(struct fixture *f, const char *rid, const json_t *body, const char *auth,
                         struct reg_reply *rep)
{
    struct reg_request rq = {.scope = SCOPE, .registration_id = rid};

    rq.body = body;
    rq.authorization = auth;
    registration_register(&f->ctx, &rq, rep);
}

/*
 * The first PUT: asserts the 401 challenge and returns its authenticationKey
 * (caller frees).
 */
static char *get_challenge(struct fixture *f, const char *rid, const struct soft_tpm *t,
                           const char *cert_b64)
{
    json_t *body = tpm_body(rid, t, cert_b64);
    struct reg_reply rep;
    char *blob;

    put_register(f, rid, body, NULL, &rep);
    assert_int_equal(rep.status, 401);
    assert_non_null(rep.body);
    assert_string_equal(json_string_value(json_object_get(rep.body, "keyName")), "registration");
    assert_null(json_object_get(rep.body, "status"));
    assert_int_equal(json_object_size(rep.body), 2);
    blob = strdup(json_string_value(json_object_get(rep.body, "authenticationKey")));
    assert_non_null(blob);
    reg_reply_release(&rep);
    json_decref(body);
    return blob;
}

/* The log detail of the last refusal, to check it was refused for the reason meant. */
static char last_detail[512];

#define assert_detail(needle)                                                                      \
    do {                                                                                           \
        if (strstr(last_detail, (needle)) == NULL)                                                 \
            fail_msg("detail '%s' lacks '%s'", last_detail, (needle));                             \
    } while (0)

/* Asserts a refusal without a challenge body; returns the error code. */
static int refused(struct fixture *f, const char *rid, const json_t *body, const char *auth,
                   char *message, size_t msglen)
{
    struct reg_reply rep;
    int code;

    put_register(f, rid, body, auth, &rep);
    assert_true(rep.status >= 400);
    assert_null(rep.body);
    code = rep.error_code;
    if (message != NULL)
        snprintf(message, msglen, "%s", rep.message);
    snprintf(last_detail, sizeof(last_detail), "%s", rep.detail);
    reg_reply_release(&rep);
    return code;
}

static void assert_no_record(struct fixture *f, const char *rid)
{
    struct store_doc d = {0};

    assert_int_equal(f->st->ops->registration_get(f->st, SCOPE, rid, &d), PROV_ENOTFOUND);
}

static void read_secret(struct fixture *f, uint8_t secret[TPM_SECRET_SIZE])
{
    assert_int_equal(tpm_secret_get(f->cfg.data_dir, secret), 0);
}

/* K of rid for t in the bucket now + delta. */
static void challenge_key(struct fixture *f, const char *rid, const struct soft_tpm *t, int delta,
                          uint8_t k[32])
{
    uint8_t secret[TPM_SECRET_SIZE];
    uint64_t bucket = (uint64_t)time(NULL) / TPM_CHALLENGE_BUCKET_SECONDS;

    read_secret(f, secret);
    assert_int_equal(
        tpm_challenge_key(secret, SCOPE, rid, t->rid, (uint64_t)((int64_t)bucket + delta), k), 0);
}

/*
 * The whole TPM flow: challenge, open the blob, PUT with the SAS, poll with
 * the SAS only. Returns the assigned registrationState (owned) and the keys.
 */
static json_t *tpm_provision(struct fixture *f, const char *rid, const struct soft_tpm *t,
                             const char *cert_b64, uint8_t k[32], uint8_t k_hub[32])
{
    char *blob = get_challenge(f, rid, t, cert_b64);
    json_t *body = tpm_body(rid, t, cert_b64), *state;
    struct reg_request rq = {.scope = SCOPE, .registration_id = rid};
    struct reg_reply rep;
    uint8_t now_k[32], prev_k[32];
    char opid[128], *tok;

    assert_true(soft_tpm_open(t, blob, k));
    free(blob);
    /* K is the challenge key of this bucket (or of the last one, at a boundary) */
    challenge_key(f, rid, t, 0, now_k);
    challenge_key(f, rid, t, -1, prev_k);
    assert_true(memcmp(k, now_k, 32) == 0 || memcmp(k, prev_k, 32) == 0);
    tok = sas_for(rid, k, 32, 3600);
    put_register(f, rid, body, tok, &rep);
    assert_int_equal(rep.status, 202);
    snprintf(opid, sizeof(opid), "%s", json_string_value(json_object_get(rep.body, "operationId")));
    reg_reply_release(&rep);
    /* the poll carries only the token (no body), as every SDK's */
    rq.authorization = tok;
    registration_poll(&f->ctx, &rq, opid, &rep);
    assert_int_equal(rep.status, 200);
    assert_string_equal(json_string_value(json_object_get(rep.body, "status")), "assigned");
    state = json_incref(json_object_get(rep.body, "registrationState"));
    reg_reply_release(&rep);
    /* the hub key comes in a second blob for the same TPM */
    assert_true(soft_tpm_open(
        t, json_string_value(json_object_get(json_object_get(state, "tpm"), "authenticationKey")),
        k_hub));
    free(tok);
    json_decref(body);
    return state;
}

static const char *sget(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* ---- individual enrollments ---------------------------------------------------------- */

static void test_individual(void **state)
{
    struct fixture *f = *state;
    uint8_t k[32], k_hub[32], k2[32], k_hub2[32], secret[TPM_SECRET_SIZE], want[32];
    struct reg_request rq = {.scope = SCOPE, .registration_id = "dev-a"};
    struct reg_reply rep;
    struct store_doc d = {0};
    json_t *s;
    char *tok, *blob1, *blob2;

    put_tpm_individual(f, "dev-a", &tpm_a, "\"deviceId\":\"dev-a-device\"");
    s = tpm_provision(f, "dev-a", &tpm_a, NULL, k, k_hub);
    assert_string_equal(sget(s, "status"), "assigned");
    assert_string_equal(sget(s, "deviceId"), "dev-a-device");
    assert_string_equal(sget(s, "assignedHub"), "hub1.example.test");
    assert_string_equal(sget(s, "registrationId"), "dev-a");
    /* K_hub is the hub key of the EK, not the challenge key */
    read_secret(f, secret);
    assert_int_equal(tpm_hub_key(secret, tpm_a.rid, want), 0);
    assert_memory_equal(k_hub, want, 32);
    assert_memory_not_equal(k_hub, k, 32);
    json_decref(s);
    /* the record is committed, in its individual-enrollment form */
    assert_int_equal(f->st->ops->registration_get(f->st, SCOPE, "dev-a", &d), 0);
    assert_null(d.group_id);
    store_doc_release(&d);
    /* status lookup with the token only (no body) */
    tok = sas_for("dev-a", k, 32, 3600);
    rq.authorization = tok;
    registration_status(&f->ctx, &rq, &rep);
    assert_int_equal(rep.status, 200);
    assert_string_equal(sget(rep.body, "status"), "assigned");
    reg_reply_release(&rep);
    free(tok);
    /* a re-registration: the same K in this window, a fresh blob, the same hub key */
    blob1 = get_challenge(f, "dev-a", &tpm_a, NULL);
    blob2 = get_challenge(f, "dev-a", &tpm_a, NULL);
    assert_string_not_equal(blob1, blob2);
    free(blob1);
    free(blob2);
    s = tpm_provision(f, "DEV-A", &tpm_a, NULL, k2, k_hub2);
    assert_memory_equal(k_hub2, k_hub, 32);
    json_decref(s);
}

static void test_default_registration_id(void **state)
{
    struct fixture *f = *state;
    uint8_t k[32], k_hub[32];
    json_t *s;

    put_tpm_individual(f, tpm_d.rid, &tpm_d, NULL);
    s = tpm_provision(f, tpm_d.rid, &tpm_d, NULL, k, k_hub);
    assert_string_equal(sget(s, "deviceId"), tpm_d.rid);
    json_decref(s);
    /* the default id of an EK enrolled under another id is nothing without a group */
    put_tpm_individual(f, "dev-a", &tpm_a, NULL);
    {
        json_t *b = tpm_body(tpm_a.rid, &tpm_a, NULL);

        assert_int_equal(refused(f, tpm_a.rid, b, NULL, NULL, 0), 401002);
        assert_detail("no endorsementKeyCertificate");
        json_decref(b);
        assert_no_record(f, tpm_a.rid);
    }
}

static void test_unknown_and_wrong_ek(void **state)
{
    struct fixture *f = *state;
    char m1[512], m2[512], m3[512];
    json_t *b;

    put_tpm_individual(f, "dev-a", &tpm_a, NULL);
    put_doc(f, STORE_ENROLLMENT, "dev-sym", "symmetricKey",
            "{\"registrationId\":\"dev-sym\",\"attestation\":{\"type\":\"symmetricKey\","
            "\"symmetricKey\":{\"primaryKey\":\"dGVzdGtleXRlc3RrZXl0ZXN0a2V5dGVzdGtleTEyMzQ=\","
            "\"secondaryKey\":\"dGVzdGtleXRlc3RrZXl0ZXN0a2V5dGVzdGtleTEyMzQ=\"}}}");
    /* no enrollment */
    b = tpm_body("nobody", &tpm_a, NULL);
    assert_int_equal(refused(f, "nobody", b, NULL, m1, sizeof(m1)), 401002);
    assert_detail("no individual enrollment");
    json_decref(b);
    /* another TPM's EK for an enrolled id: the same answer */
    b = tpm_body("dev-a", &tpm_b, NULL);
    assert_int_equal(refused(f, "dev-a", b, NULL, m2, sizeof(m2)), 401002);
    assert_detail("is not the individual enrollment's endorsementKey");
    json_decref(b);
    /* an enrollment of another attestation type: the same answer */
    b = tpm_body("dev-sym", &tpm_a, NULL);
    assert_int_equal(refused(f, "dev-sym", b, NULL, m3, sizeof(m3)), 401002);
    assert_detail("uses symmetricKey attestation");
    json_decref(b);
    assert_string_equal(m1, NOT_AUTHORIZED);
    assert_string_equal(m2, NOT_AUTHORIZED);
    assert_string_equal(m3, NOT_AUTHORIZED);
    assert_no_record(f, "nobody");
    assert_no_record(f, "dev-a");
    assert_no_record(f, "dev-sym");
}

static void test_malformed_tpm(void **state)
{
    struct fixture *f = *state;
    json_t *b;
    char msg[512];

    put_tpm_individual(f, "dev-a", &tpm_a, NULL);
    /* an EK that is not an EK (the SRK is not a sign key either, but an EK must parse) */
    b = json_pack("{s:s, s:{s:s, s:s}}", "registrationId", "dev-a", "tpm", "endorsementKey", "AAAA",
                  "storageRootKey", tpm_a.srk_b64);
    assert_int_equal(refused(f, "dev-a", b, NULL, msg, sizeof(msg)), 400004);
    assert_non_null(strstr(msg, "tpm.endorsementKey"));
    json_decref(b);
    b = json_pack("{s:s, s:{s:s, s:s}}", "registrationId", "dev-a", "tpm", "endorsementKey",
                  tpm_a.ek_b64, "storageRootKey", "not base64!");
    assert_int_equal(refused(f, "dev-a", b, NULL, msg, sizeof(msg)), 400004);
    assert_non_null(strstr(msg, "tpm.storageRootKey"));
    json_decref(b);
    b = tpm_body("dev-a", &tpm_a, "bm90IGEgY2VydGlmaWNhdGU=");
    assert_int_equal(refused(f, "dev-a", b, NULL, msg, sizeof(msg)), 400004);
    assert_non_null(strstr(msg, "tpm.endorsementKeyCertificate"));
    json_decref(b);
    assert_no_record(f, "dev-a");
}

static void test_disabled(void **state)
{
    struct fixture *f = *state;
    json_t *b = tpm_body("dev-off", &tpm_a, NULL);
    char *blob, *tok;
    uint8_t k[32], wrong[32];

    put_tpm_individual(f, "dev-off", &tpm_a, "\"provisioningStatus\":\"disabled\"");
    /* the challenge is sent: "disabled" is told only to the holder of the TPM */
    blob = get_challenge(f, "dev-off", &tpm_a, NULL);
    assert_true(soft_tpm_open(&tpm_a, blob, k));
    free(blob);
    memset(wrong, 0x5a, sizeof(wrong));
    tok = sas_for("dev-off", wrong, 32, 3600);
    assert_int_equal(refused(f, "dev-off", b, tok, NULL, 0), 401002);
    assert_detail("signature does not match");
    free(tok);
    tok = sas_for("dev-off", k, 32, 3600);
    assert_int_equal(refused(f, "dev-off", b, tok, NULL, 0), 401003);
    free(tok);
    json_decref(b);
    assert_no_record(f, "dev-off");
}

static void test_wrong_tokens(void **state)
{
    struct fixture *f = *state;
    json_t *b = tpm_body("dev-a", &tpm_a, NULL);
    char *blob, *tok;
    uint8_t k[32], wrong[32];
    char msg[512];

    put_tpm_individual(f, "dev-a", &tpm_a, NULL);
    put_tpm_individual(f, "dev-b", &tpm_b, NULL);
    blob = get_challenge(f, "dev-a", &tpm_a, NULL);
    assert_true(soft_tpm_open(&tpm_a, blob, k));
    free(blob);
    /* a key that is not K */
    assert_int_equal(random_bytes(wrong, sizeof(wrong)), 0);
    tok = sas_for("dev-a", wrong, 32, 3600);
    assert_int_equal(refused(f, "dev-a", b, tok, msg, sizeof(msg)), 401002);
    assert_string_equal(msg, NOT_AUTHORIZED);
    assert_detail("signature does not match");
    free(tok);
    /* K, but expired beyond the skew */
    tok = sas_for("dev-a", k, 32, -3600);
    assert_int_equal(refused(f, "dev-a", b, tok, msg, sizeof(msg)), 401002);
    assert_string_equal(msg, "token expired");
    free(tok);
    /* K, for another registration id's audience */
    tok = sas_for("dev-b", k, 32, 3600);
    assert_int_equal(refused(f, "dev-a", b, tok, NULL, 0), 401002);
    assert_detail("token sr");
    free(tok);
    /* garbage */
    assert_int_equal(refused(f, "dev-a", b, "SharedAccessSignature sr=x", NULL, 0), 401002);
    json_decref(b);
    assert_no_record(f, "dev-a");
}

/* A blob and K obtained by TPM A are of no use with TPM B. */
static void test_cross_tpm(void **state)
{
    struct fixture *f = *state;
    struct reg_request rq = {.scope = SCOPE, .registration_id = "dev-b"};
    struct reg_reply rep;
    char *blob, *tok;
    uint8_t k_a[32], k_b[32], junk[32];
    json_t *b;

    put_tpm_individual(f, "dev-a", &tpm_a, NULL);
    put_tpm_individual(f, "dev-b", &tpm_b, NULL);
    blob = get_challenge(f, "dev-a", &tpm_a, NULL);
    /* only A's EK opens A's blob */
    assert_false(soft_tpm_open(&tpm_b, blob, junk));
    assert_true(soft_tpm_open(&tpm_a, blob, k_a));
    free(blob);
    /* B's challenge carries another K */
    blob = get_challenge(f, "dev-b", &tpm_b, NULL);
    assert_true(soft_tpm_open(&tpm_b, blob, k_b));
    free(blob);
    assert_memory_not_equal(k_a, k_b, 32);
    /* A's K signing for B's id and B's EK */
    b = tpm_body("dev-b", &tpm_b, NULL);
    tok = sas_for("dev-b", k_a, 32, 3600);
    assert_int_equal(refused(f, "dev-b", b, tok, NULL, 0), 401002);
    assert_detail("signature does not match");
    json_decref(b);
    /* ... nor for B's polls and status */
    rq.authorization = tok;
    registration_poll(&f->ctx, &rq, "4.0000000000000000.00000000-0000-4000-8000-000000000000",
                      &rep);
    assert_int_equal(rep.status, 401);
    assert_int_equal(rep.error_code, 401002);
    reg_reply_release(&rep);
    registration_status(&f->ctx, &rq, &rep);
    assert_int_equal(rep.status, 401);
    reg_reply_release(&rep);
    free(tok);
    /* A's K with B's EK under A's id: refused at the EK already */
    b = tpm_body("dev-a", &tpm_b, NULL);
    tok = sas_for("dev-a", k_a, 32, 3600);
    assert_int_equal(refused(f, "dev-a", b, tok, NULL, 0), 401002);
    assert_detail("is not the individual enrollment's endorsementKey");
    json_decref(b);
    free(tok);
    assert_no_record(f, "dev-a");
    assert_no_record(f, "dev-b");
}

/* K is accepted in its bucket and the next one, not later and not from the future. */
static void test_bucket_window(void **state)
{
    struct fixture *f = *state;
    json_t *b = tpm_body("dev-a", &tpm_a, NULL);
    struct reg_reply rep;
    uint8_t k[32];
    char *tok;

    put_tpm_individual(f, "dev-a", &tpm_a, NULL);
    challenge_key(f, "dev-a", &tpm_a, -2, k);
    tok = sas_for("dev-a", k, 32, 3600);
    assert_int_equal(refused(f, "dev-a", b, tok, NULL, 0), 401002);
    assert_detail("signature does not match");
    free(tok);
    challenge_key(f, "dev-a", &tpm_a, 1, k);
    tok = sas_for("dev-a", k, 32, 3600);
    assert_int_equal(refused(f, "dev-a", b, tok, NULL, 0), 401002);
    assert_detail("signature does not match");
    free(tok);
    assert_no_record(f, "dev-a");
    /* K of another scope or another EK id: refused */
    {
        uint8_t secret[TPM_SECRET_SIZE];
        uint64_t bucket = (uint64_t)time(NULL) / TPM_CHALLENGE_BUCKET_SECONDS;

        read_secret(f, secret);
        assert_int_equal(tpm_challenge_key(secret, "0ne00OTHER1", "dev-a", tpm_a.rid, bucket, k),
                         0);
        tok = sas_for("dev-a", k, 32, 3600);
        assert_int_equal(refused(f, "dev-a", b, tok, NULL, 0), 401002);
        assert_detail("signature does not match");
        free(tok);
        assert_int_equal(tpm_challenge_key(secret, SCOPE, "dev-a", tpm_b.rid, bucket, k), 0);
        tok = sas_for("dev-a", k, 32, 3600);
        assert_int_equal(refused(f, "dev-a", b, tok, NULL, 0), 401002);
        assert_detail("signature does not match");
        free(tok);
    }
    /* the previous bucket's K is still good */
    challenge_key(f, "dev-a", &tpm_a, -1, k);
    tok = sas_for("dev-a", k, 32, 3600);
    put_register(f, "dev-a", b, tok, &rep);
    assert_int_equal(rep.status, 202);
    reg_reply_release(&rep);
    free(tok);
    json_decref(b);
}

/* ---- groups ------------------------------------------------------------------------- */

struct pki {
    EVP_PKEY *root_key, *int_key, *other_key;
    X509 *root, *inter, *other;
};

static void pki_make(struct pki *p)
{
    p->root_key = new_key();
    p->int_key = new_key();
    p->other_key = new_key();
    p->root = make_cert("TPM Manufacturer Root", p->root_key, NULL, NULL, true, -1, 3650);
    p->inter =
        make_cert("TPM Manufacturing CA 001", p->int_key, p->root, p->root_key, true, -1, 3650);
    p->other = make_cert("Another Manufacturer Root", p->other_key, NULL, NULL, true, -1, 3650);
}

static void pki_free(struct pki *p)
{
    X509_free(p->root);
    X509_free(p->inter);
    X509_free(p->other);
    EVP_PKEY_free(p->root_key);
    EVP_PKEY_free(p->int_key);
    EVP_PKEY_free(p->other_key);
}

/* An EK certificate for t's EK (no EKU, as manufacturers issue them). */
static char *ek_cert(const struct soft_tpm *t, X509 *issuer, EVP_PKEY *issuer_key, long from,
                     long to)
{
    X509 *x = make_cert("TPM EK", t->ek_key, issuer, issuer_key, false, from, to);
    char *b64 = der_b64_of(x);

    X509_free(x);
    return b64;
}

static void test_group(void **state)
{
    struct fixture *f = *state;
    struct pki p;
    uint8_t k[32], k_hub[32], secret[TPM_SECRET_SIZE], want[32];
    struct reg_request rq = {.scope = SCOPE};
    struct reg_reply rep;
    struct store_doc d = {0};
    char *cert, *tok;
    json_t *s;

    pki_make(&p);
    put_tpm_group(f, "grp-other", &p.other, 1, NULL);
    /* anchored on the intermediate that issues the EK certificates (a partial chain) */
    put_tpm_group(f, "grp-tpm", &p.inter, 1, NULL);
    cert = ek_cert(&tpm_c, p.inter, p.int_key, -1, 365);
    s = tpm_provision(f, tpm_c.rid, &tpm_c, cert, k, k_hub);
    assert_string_equal(sget(s, "deviceId"), tpm_c.rid);
    read_secret(f, secret);
    assert_int_equal(tpm_hub_key(secret, tpm_c.rid, want), 0);
    assert_memory_equal(k_hub, want, 32);
    json_decref(s);
    assert_int_equal(f->st->ops->registration_get(f->st, SCOPE, tpm_c.rid, &d), 0);
    assert_string_equal(d.group_id, "grp-tpm");
    store_doc_release(&d);
    /* a group device's status lookup (token only: the group comes from its record) */
    rq.registration_id = tpm_c.rid;
    tok = sas_for(tpm_c.rid, k, 32, 3600);
    rq.authorization = tok;
    registration_status(&f->ctx, &rq, &rep);
    assert_int_equal(rep.status, 200);
    reg_reply_release(&rep);
    free(tok);
    /* another key: refused */
    memset(k, 1, sizeof(k));
    tok = sas_for(tpm_c.rid, k, 32, 3600);
    rq.authorization = tok;
    registration_status(&f->ctx, &rq, &rep);
    assert_int_equal(rep.status, 401);
    assert_int_equal(rep.error_code, 401002);
    reg_reply_release(&rep);
    free(tok);
    free(cert);
    /* a group holding the root and the intermediate; certificates issued by the root too */
    {
        X509 *both[2] = {p.root, p.inter};

        put_tpm_group(f, "grp-both", both, 2, NULL);
        cert = ek_cert(&tpm_e, p.root, p.root_key, -1, 365);
        s = tpm_provision(f, tpm_e.rid, &tpm_e, cert, k, k_hub);
        json_decref(s);
        free(cert);
        assert_int_equal(f->st->ops->registration_get(f->st, SCOPE, tpm_e.rid, &d), 0);
        assert_string_equal(d.group_id, "grp-both");
        store_doc_release(&d);
    }
    /* an individual enrollment of the id decides alone, whatever groups trust the EK */
    put_tpm_individual(f, tpm_c.rid, &tpm_a, NULL);
    cert = ek_cert(&tpm_c, p.inter, p.int_key, -1, 365);
    {
        json_t *b = tpm_body(tpm_c.rid, &tpm_c, cert);

        assert_int_equal(refused(f, tpm_c.rid, b, NULL, NULL, 0), 401002);
        assert_detail("is not the individual enrollment's endorsementKey");
        json_decref(b);
    }
    free(cert);
    pki_free(&p);
}

static void test_group_refusals(void **state)
{
    struct fixture *f = *state;
    struct pki p;
    char *cert, *blob, *tok;
    uint8_t k[32];
    json_t *b;

    pki_make(&p);
    put_tpm_group(f, "grp-tpm", &p.inter, 1, NULL);
    /* an EK certificate from a CA no group trusts */
    cert = ek_cert(&tpm_c, p.other, p.other_key, -1, 365);
    b = tpm_body(tpm_c.rid, &tpm_c, cert);
    assert_int_equal(refused(f, tpm_c.rid, b, NULL, NULL, 0), 401002);
    assert_detail("no TPM enrollment group trusts the EK certificate");
    json_decref(b);
    free(cert);
    /* a good certificate, but of another TPM's EK */
    cert = ek_cert(&tpm_b, p.inter, p.int_key, -1, 365);
    b = tpm_body(tpm_c.rid, &tpm_c, cert);
    assert_int_equal(refused(f, tpm_c.rid, b, NULL, NULL, 0), 401002);
    assert_detail("not a certificate of the EK");
    json_decref(b);
    free(cert);
    /* expired, or not yet valid */
    cert = ek_cert(&tpm_c, p.inter, p.int_key, -30, -1);
    b = tpm_body(tpm_c.rid, &tpm_c, cert);
    assert_int_equal(refused(f, tpm_c.rid, b, NULL, NULL, 0), 401002);
    assert_detail("expired");
    json_decref(b);
    free(cert);
    cert = ek_cert(&tpm_c, p.inter, p.int_key, 1, 30);
    b = tpm_body(tpm_c.rid, &tpm_c, cert);
    assert_int_equal(refused(f, tpm_c.rid, b, NULL, NULL, 0), 401002);
    assert_detail("not yet valid");
    json_decref(b);
    free(cert);
    /* no certificate at all */
    b = tpm_body(tpm_c.rid, &tpm_c, NULL);
    assert_int_equal(refused(f, tpm_c.rid, b, NULL, NULL, 0), 401002);
    assert_detail("no endorsementKeyCertificate");
    json_decref(b);
    /* a good certificate, but not the device's default registration id */
    cert = ek_cert(&tpm_c, p.inter, p.int_key, -1, 365);
    b = tpm_body("my-chosen-id", &tpm_c, cert);
    assert_int_equal(refused(f, "my-chosen-id", b, NULL, NULL, 0), 401002);
    assert_detail("default registration id");
    json_decref(b);
    assert_no_record(f, "my-chosen-id");
    assert_no_record(f, tpm_c.rid);
    /* a disabled group: challenge, then 401003 once K is proven */
    put_tpm_group(f, "grp-tpm", &p.inter, 1, "{\"provisioningStatus\":\"disabled\"}");
    blob = get_challenge(f, tpm_c.rid, &tpm_c, cert);
    assert_true(soft_tpm_open(&tpm_c, blob, k));
    free(blob);
    b = tpm_body(tpm_c.rid, &tpm_c, cert);
    tok = sas_for(tpm_c.rid, k, 32, 3600);
    assert_int_equal(refused(f, tpm_c.rid, b, tok, NULL, 0), 401003);
    json_decref(b);
    free(tok);
    free(cert);
    assert_no_record(f, tpm_c.rid);
    pki_free(&p);
}

static void test_group_model(void **state)
{
    struct fixture *f = *state;
    struct pki p;
    EVP_PKEY *leaf_key = new_key();
    X509 *leaf;
    char *pem, *der, *leaf_pem, err[256];
    const char *att;
    json_t *body, *doc, *cas;

    pki_make(&p);
    leaf = make_cert("leaf", leaf_key, p.root, p.root_key, false, -1, 30);
    pem = pem_of(p.root);
    der = der_b64_of(p.inter);
    leaf_pem = pem_of(leaf);
    /* PEM and base64 DER, both stored as PEM */
    body = json_pack("{s:{s:s, s:{s:[s,s]}}}", "attestation", "type", "TPM", "tpm",
                     "endorsementCertificateAuthorities", pem, der);
    doc = NULL;
    assert_int_equal(model_prepare(STORE_GROUP, "g1", body, NULL, f->cfg.hubs, f->cfg.nhubs, &doc,
                                   &att, err, sizeof(err)),
                     0);
    assert_string_equal(att, "tpm");
    cas = json_object_get(json_object_get(json_object_get(doc, "attestation"), "tpm"),
                          "endorsementCertificateAuthorities");
    assert_int_equal(json_array_size(cas), 2);
    assert_string_equal(json_string_value(json_array_get(cas, 0)), pem);
    assert_non_null(strstr(json_string_value(json_array_get(cas, 1)), "BEGIN CERTIFICATE"));
    json_decref(doc);
    json_decref(body);
#define REFUSE(json_body, needle)                                                                  \
    do {                                                                                           \
        json_t *b_ = (json_body);                                                                  \
        doc = NULL;                                                                                \
        assert_int_equal(model_prepare(STORE_GROUP, "g1", b_, NULL, f->cfg.hubs, f->cfg.nhubs,     \
                                       &doc, &att, err, sizeof(err)),                              \
                         PROV_EINVAL);                                                             \
        assert_null(doc);                                                                          \
        assert_non_null(strstr(err, needle));                                                      \
        json_decref(b_);                                                                           \
    } while (0)
    REFUSE(json_pack("{s:{s:s}}", "attestation", "type", "tpm"),
           "endorsementCertificateAuthorities is required");
    REFUSE(json_pack("{s:{s:s, s:{s:[]}}}", "attestation", "type", "tpm", "tpm",
                     "endorsementCertificateAuthorities"),
           "array of 1 to 10");
    REFUSE(json_pack("{s:{s:s, s:{s:s}}}", "attestation", "type", "tpm", "tpm",
                     "endorsementCertificateAuthorities", pem),
           "array of 1 to 10");
    REFUSE(json_pack("{s:{s:s, s:{s:[s]}}}", "attestation", "type", "tpm", "tpm",
                     "endorsementCertificateAuthorities", leaf_pem),
           "not a CA certificate");
    REFUSE(json_pack("{s:{s:s, s:{s:[s]}}}", "attestation", "type", "tpm", "tpm",
                     "endorsementCertificateAuthorities", "garbage"),
           "endorsementCertificateAuthorities[0]");
    REFUSE(json_pack("{s:{s:s, s:{s:[i]}}}", "attestation", "type", "tpm", "tpm",
                     "endorsementCertificateAuthorities", 7),
           "endorsementCertificateAuthorities[0]");
    REFUSE(json_pack("{s:{s:s, s:{s:s, s:[s]}}}", "attestation", "type", "tpm", "tpm",
                     "endorsementKey", tpm_a.ek_b64, "endorsementCertificateAuthorities", pem),
           "endorsementKey is for individual enrollments");
#undef REFUSE
    /* individual TPM enrollments are as before */
    body = json_pack("{s:{s:s, s:{s:s}}}", "attestation", "type", "tpm", "tpm", "endorsementKey",
                     tpm_a.ek_b64);
    doc = NULL;
    assert_int_equal(model_prepare(STORE_ENROLLMENT, "dev-a", body, NULL, f->cfg.hubs, f->cfg.nhubs,
                                   &doc, &att, err, sizeof(err)),
                     0);
    json_decref(doc);
    json_decref(body);
    free(pem);
    free(der);
    free(leaf_pem);
    X509_free(leaf);
    EVP_PKEY_free(leaf_key);
    pki_free(&p);
}

/* ---- the secret file ---------------------------------------------------------------- */

static void test_secret_file(void **state)
{
    struct fixture *f = *state;
    uint8_t s1[TPM_SECRET_SIZE], s2[TPM_SECRET_SIZE], zero[TPM_SECRET_SIZE] = {0};
    char path[128], err[256], sub[128];
    struct stat sb;
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", f->dir, TPM_SECRET_FILE);
    assert_int_equal(stat(path, &sb), -1);
    assert_int_equal(tpm_secret_init(f->dir, err, sizeof(err)), 0);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(sb.st_size, TPM_SECRET_SIZE);
    assert_int_equal(tpm_secret_get(f->dir, s1), 0);
    assert_memory_not_equal(s1, zero, sizeof(s1));
    /* a restart reads the same secret */
    tpm_secret_forget();
    assert_int_equal(tpm_secret_get(f->dir, s2), 0);
    assert_memory_equal(s1, s2, sizeof(s1));
    fp = fopen(path, "rb");
    assert_non_null(fp);
    assert_int_equal(fread(s2, 1, sizeof(s2), fp), sizeof(s2));
    fclose(fp);
    assert_memory_equal(s1, s2, sizeof(s1));
    /* a missing data directory is made; no temporary file is left behind */
    snprintf(sub, sizeof(sub), "%s/sub", f->dir);
    assert_int_equal(tpm_secret_init(sub, err, sizeof(err)), 0);
    assert_int_equal(tpm_secret_get(sub, s2), 0);
    assert_memory_not_equal(s1, s2, sizeof(s1));
    {
        char cmd[256];

        snprintf(cmd, sizeof(cmd), "test $(ls -A %s | wc -l) -eq 1", sub);
        assert_int_equal(system(cmd), 0);
    }
    /* a file of another size is refused, not replaced */
    tpm_secret_forget();
    fp = fopen(path, "ab");
    assert_non_null(fp);
    fputc('x', fp);
    fclose(fp);
    assert_int_equal(tpm_secret_init(f->dir, err, sizeof(err)), PROV_EIO);
    assert_non_null(strstr(err, "not a 32-byte file"));
    assert_int_equal(tpm_secret_get(f->dir, s2), PROV_EIO);
    assert_int_equal(tpm_secret_init("", err, sizeof(err)), PROV_EINVAL);
    /* the derivations separate their inputs */
    {
        uint8_t a[32], b[32];

        assert_int_equal(tpm_challenge_key(s1, "S", "ab", "c", 1, a), 0);
        assert_int_equal(tpm_challenge_key(s1, "S", "a", "bc", 1, b), 0);
        assert_memory_not_equal(a, b, 32);
        assert_int_equal(tpm_challenge_key(s1, "s", "AB", "C", 1, b), 0);
        assert_memory_equal(a, b, 32); /* case-insensitive ids */
        assert_int_equal(tpm_challenge_key(s1, "S", "ab", "c", 2, b), 0);
        assert_memory_not_equal(a, b, 32);
        assert_int_equal(tpm_hub_key(s1, "c", b), 0);
        assert_memory_not_equal(a, b, 32);
    }
}

/* ---- the wire: the tpm member ------------------------------------------------------- */

static void test_wire(void **state)
{
    struct reg_reply rep;
    json_t *out = NULL;
    char body[2048];

    (void)state;
    snprintf(body, sizeof(body),
             "{\"registrationId\":\"dev\",\"tpm\":{\"endorsementKey\":\"%s\","
             "\"storageRootKey\":\"%s\",\"endorsementKeyCertificate\":\"AAAA\"}}",
             tpm_a.ek_b64, tpm_a.srk_b64);
    assert_int_equal(
        dps_parse_registration(body, strlen(body), "dev", DPS_TRANSPORT_HTTPS, &out, &rep), 0);
    assert_non_null(json_object_get(out, "tpm"));
    json_decref(out);
    assert_int_equal(
        dps_parse_registration(body, strlen(body), "dev", DPS_TRANSPORT_MQTT, &out, &rep),
        PROV_EPROTO);
    assert_int_equal(rep.error_code, 400008);
#define BAD(text)                                                                                  \
    do {                                                                                           \
        const char *t_ = (text);                                                                   \
        assert_int_equal(                                                                          \
            dps_parse_registration(t_, strlen(t_), "dev", DPS_TRANSPORT_HTTPS, &out, &rep),        \
            PROV_EPROTO);                                                                          \
        assert_int_equal(rep.error_code, 400004);                                                  \
        assert_null(out);                                                                          \
    } while (0)
    BAD("{\"tpm\":\"x\"}");
    BAD("{\"tpm\":{\"storageRootKey\":\"AAAA\"}}");
    BAD("{\"tpm\":{\"endorsementKey\":\"AAAA\"}}");
    BAD("{\"tpm\":{\"endorsementKey\":\"\",\"storageRootKey\":\"AAAA\"}}");
    BAD("{\"tpm\":{\"endorsementKey\":1,\"storageRootKey\":\"AAAA\"}}");
    BAD("{\"tpm\":{\"endorsementKey\":\"AAAA\",\"storageRootKey\":\"AAAA\","
        "\"endorsementKeyCertificate\":{}}}");
#undef BAD
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_individual, setup, teardown),
        cmocka_unit_test_setup_teardown(test_default_registration_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_and_wrong_ek, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_tpm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disabled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cross_tpm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bucket_window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_model, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secret_file, setup, teardown),
        cmocka_unit_test(test_wire),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
