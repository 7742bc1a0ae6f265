/*
 * Unit tests for CA certificates with proof of possession: the pure model
 * functions (src/server/model.c: names, upload, verification codes, proof of
 * possession, CertificateResponse, RFC 1123 dates) and the admin API
 * (src/server/ca_api.c) driven through the router against a real SQLite store
 * in a temp directory, including the X.509 rules of the service API that need
 * the store (CA references, one certificate per enrollment, group limits).
 * Certificates are made here with OpenSSL.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "src/common/errors.h"
#include "src/common/log.h"
#include "src/common/sas.h"
#include "src/common/util.h"
#include "src/server/config.h"
#include "src/server/http.h"
#include "src/server/model.h"
#include "src/server/server.h"
#include "src/server/x509.h"
#include "testpki.h"
#include "src/store/store.h"

/* ---- test certificates: tests/unit/testpki.c ---- */

/* A small PKI: a root CA, an impostor with the root's name and another key, a leaf. */
struct pki {
    EVP_PKEY *ca_key, *ca2_key, *leaf_key;
    X509 *ca, *ca2, *ca_impostor, *leaf;
    char *ca_pem, *ca_der, *ca2_pem, *leaf_pem;
};

static void pki_make(struct pki *p)
{
    p->ca_key = new_key();
    p->ca2_key = new_key();
    p->leaf_key = new_key();
    p->ca = make_cert("Test Root CA", p->ca_key, NULL, NULL, true, -1, 365);
    p->ca2 = make_cert("Second CA", p->ca2_key, NULL, NULL, true, -1, 365);
    p->ca_impostor = make_cert("Test Root CA", p->ca2_key, NULL, NULL, true, -1, 365);
    p->leaf = make_cert("dev-1", p->leaf_key, p->ca, p->ca_key, false, -1, 30);
    p->ca_pem = pem_of(p->ca);
    p->ca_der = der_b64_of(p->ca);
    p->ca2_pem = pem_of(p->ca2);
    p->leaf_pem = pem_of(p->leaf);
}

static void pki_free(struct pki *p)
{
    EVP_PKEY_free(p->ca_key);
    EVP_PKEY_free(p->ca2_key);
    EVP_PKEY_free(p->leaf_key);
    X509_free(p->ca);
    X509_free(p->ca2);
    X509_free(p->ca_impostor);
    X509_free(p->leaf);
    free(p->ca_pem);
    free(p->ca_der);
    free(p->ca2_pem);
    free(p->leaf_pem);
}

/* ---- the API, through the router, against a real SQLite store ---- */

#define SCOPE "0ne00CATEST"
#define OWNER_KEY "cHJpbWFyeWtleXByaW1hcnlrZXlwcmltYXJ5a2V5MDA="
#define READER_KEY "c2Vjb25kYXJ5a2V5c2Vjb25kYXJ5a2V5c2Vjb25kYXI="
#define HOST "provd.example.test"

struct srv {
    struct pki pki;
    char dir[64];
    struct config *cfg;
    struct store *st;
    struct worker w;
    char *owner;   /* Authorization values */
    char *reader;
};

struct reply {
    int status;
    int code;
    json_t *body;
    char etag[128]; /* ETag header, "" when absent */
    char allow[64];
};

static void reply_release(struct reply *r)
{
    json_decref(r->body);
    memset(r, 0, sizeof(*r));
}

static void add_policy(struct config *cfg, const char *name, const char *b64, unsigned rights)
{
    struct cfg_policy *p = &cfg->policies[cfg->npolicies++];
    int n;

    snprintf(p->name, sizeof(p->name), "%s", name);
    n = b64_decode(b64, strlen(b64), p->key);
    assert_true(n > 0);
    p->keylen = (size_t)n;
    p->rights = rights;
}

static int srv_setup(void **state)
{
    struct srv *s = calloc(1, sizeof(*s));
    char err[256], path[128];

    if (s == NULL)
        return -1;
    pki_make(&s->pki);
    snprintf(s->dir, sizeof(s->dir), "/tmp/test_ca-XXXXXX");
    if (mkdtemp(s->dir) == NULL)
        return -1;
    snprintf(path, sizeof(path), "%s/provd.db", s->dir);
    if (store_sqlite_open(path, &s->st, err, sizeof(err)) != 0) {
        fprintf(stderr, "store: %s\n", err);
        return -1;
    }
    if ((s->cfg = calloc(1, sizeof(*s->cfg))) == NULL)
        return -1;
    snprintf(s->cfg->scopes[0], sizeof(s->cfg->scopes[0]), "%s", SCOPE);
    snprintf(s->cfg->scopes[1], sizeof(s->cfg->scopes[1]), "%s", "0ne00OTHER1");
    s->cfg->nscopes = 2;
    snprintf(s->cfg->hubs[0].hostname, sizeof(s->cfg->hubs[0].hostname), "hub1.example.test");
    s->cfg->hubs[0].weight = 1;
    s->cfg->hubs[0].apply_allocation_policy = true;
    s->cfg->nhubs = 1;
    add_policy(s->cfg, "provisioningserviceowner", OWNER_KEY, RIGHT_ALL);
    add_policy(s->cfg, "reader", READER_KEY,
               RIGHT_ENROLLMENT_READ | RIGHT_ENROLLMENT_WRITE | RIGHT_REGISTRATION_READ);
    s->w.cfg = s->cfg;
    s->w.store = s->st;
    s->owner = sas_build(HOST, OWNER_KEY, "provisioningserviceowner", (long long)time(NULL) + 3600);
    s->reader = sas_build(HOST, READER_KEY, "reader", (long long)time(NULL) + 3600);
    if (s->owner == NULL || s->reader == NULL)
        return -1;
    *state = s;
    return 0;
}

static int srv_teardown(void **state)
{
    struct srv *s = *state;
    char path[160];

    store_close(s->st);
    snprintf(path, sizeof(path), "%s/provd.db", s->dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/provd.db-wal", s->dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/provd.db-shm", s->dir);
    unlink(path);
    rmdir(s->dir);
    pki_free(&s->pki);
    free(s->owner);
    free(s->reader);
    free(s->cfg);
    free(s);
    return 0;
}

static enum http_method_id method_id(const char *m)
{
    if (strcmp(m, "GET") == 0)
        return HM_GET;
    if (strcmp(m, "PUT") == 0)
        return HM_PUT;
    if (strcmp(m, "POST") == 0)
        return HM_POST;
    if (strcmp(m, "DELETE") == 0)
        return HM_DELETE;
    if (strcmp(m, "PATCH") == 0)
        return HM_PATCH;
    return HM_OTHER;
}

/* One request through router_handle; body may be NULL (empty). */
static void call(struct srv *s, const char *method, const char *target, const char *auth,
                 const char *if_match, const json_t *body, struct reply *out)
{
    struct http_request req;
    struct http_response resp;
    char *path = strdup(target), *q, *text = NULL;
    const char *h;
    size_t len;

    assert_non_null(path);
    memset(&req, 0, sizeof(req));
    memset(&resp, 0, sizeof(resp));
    memset(out, 0, sizeof(*out));
    if ((q = strchr(path, '?')) != NULL)
        *q++ = '\0';
    req.method = method_id(method);
    req.method_name = method;
    req.target = (char *)target;
    req.path = path;
    req.query = q;
    req.headers[req.nheaders++] = (struct http_header){(char *)"Host", (char *)HOST};
    if (auth != NULL)
        req.headers[req.nheaders++] = (struct http_header){(char *)"Authorization", (char *)auth};
    if (if_match != NULL)
        req.headers[req.nheaders++] = (struct http_header){(char *)"If-Match", (char *)if_match};
    text = body != NULL ? json_dumps(body, JSON_COMPACT) : strdup("");
    assert_non_null(text);
    req.body = text;
    req.body_len = strlen(text);
    memcpy(req.request_id, "00000000-0000-4000-8000-000000000000", 37);
    snprintf(req.peer, sizeof(req.peer), "127.0.0.1:1");
    resp.body = evbuffer_new();
    assert_non_null(resp.body);
    router_handle(&s->w, &req, &resp);
    out->status = resp.status;
    out->code = resp.error_code;
    len = evbuffer_get_length(resp.body);
    if (len > 0) {
        out->body = json_loadb((const char *)evbuffer_pullup(resp.body, -1), len, 0, NULL);
        if (out->body == NULL)
            fail_msg("%s %s: the answer is not JSON", method, target);
    }
    resp.headers[sizeof(resp.headers) - 1] = '\0';
    if ((h = strstr(resp.headers, "ETag: ")) != NULL)
        sscanf(h + 6, "%127[^\r]", out->etag);
    if ((h = strstr(resp.headers, "Allow: ")) != NULL)
        sscanf(h + 7, "%63[^\r]", out->allow);
    evbuffer_free(resp.body);
    free(text);
    free(path);
}

/* {"certificate": text[, "isVerified": v]} (v < 0: absent) */
static json_t *cert_body(const char *text, int verified)
{
    json_t *b = json_pack("{s:s}", "certificate", text);

    assert_non_null(b);
    if (verified >= 0)
        assert_int_equal(json_object_set_new(b, "isVerified", json_boolean(verified)), 0);
    return b;
}

static const char *jstr(const json_t *o, const char *a, const char *b)
{
    const json_t *v = json_object_get(o, a);

    if (b != NULL)
        v = json_object_get(v, b);
    return json_string_value(v);
}

/* Status and (for errors) six-digit code, with the message in the failure. */
static void expect(const struct reply *r, int status, int code, const char *msg_part)
{
    const char *msg = jstr(r->body, "message", NULL);

    if (r->status != status || (code != 0 && r->code != code))
        fail_msg("status %d code %d (%s), expected %d %d", r->status, r->code,
                 msg != NULL ? msg : "-", status, code);
    if (msg_part != NULL && (msg == NULL || strstr(msg, msg_part) == NULL))
        fail_msg("message '%s' lacks '%s'", msg != NULL ? msg : "-", msg_part);
    if (code != 0) {
        assert_true(json_is_integer(json_object_get(r->body, "errorCode")));
        assert_int_equal(json_integer_value(json_object_get(r->body, "errorCode")), code);
    }
}


/* ---- the CA model (pure functions) ---- */

static void test_rfc1123(void **state)
{
    static const struct {
        const char *in, *out;
    } ok[] = {
        {"2039-12-31T23:59:59Z", "Sat, 31 Dec 2039 23:59:59 GMT"},
        {"2017-10-12T19:23:50.660Z", "Thu, 12 Oct 2017 19:23:50 GMT"},
        {"1970-01-01T00:00:00Z", "Thu, 01 Jan 1970 00:00:00 GMT"},
        {"1969-12-31T23:59:59Z", "Wed, 31 Dec 1969 23:59:59 GMT"},
        {"2000-02-29T12:00:00Z", "Tue, 29 Feb 2000 12:00:00 GMT"},
        {"2100-03-01T00:00:00Z", "Mon, 01 Mar 2100 00:00:00 GMT"},
        {"9999-12-31T23:59:59Z", "Fri, 31 Dec 9999 23:59:59 GMT"},
    };
    static const char *const bad[] = {
        "", "2039-12-31", "2039-12-31T23:59:59", "2039-12-31 23:59:59Z", "2039-13-01T00:00:00Z",
        "2039-12-00T00:00:00Z", "2039-12-31T24:00:00Z", "2039-12-31T23:59:59+01:00",
        "2039-1a-31T23:59:59Z", "2039-12-31T23:59:59.Zx",
    };
    char out[64];

    (void)state;
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_int_equal(model_rfc1123(ok[i].in, out, sizeof(out)), 0);
        assert_string_equal(out, ok[i].out);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (model_rfc1123(bad[i], out, sizeof(out)) != PROV_EINVAL)
            fail_msg("'%s' was accepted as '%s'", bad[i], out);
    }
    assert_int_equal(model_rfc1123(NULL, out, sizeof(out)), PROV_EINVAL);
}

static void test_ca_names(void **state)
{
    char long_ok[MODEL_CA_NAME_MAX + 1], too_long[MODEL_CA_NAME_MAX + 2];

    (void)state;
    memset(long_ok, 'a', sizeof(long_ok) - 1);
    long_ok[sizeof(long_ok) - 1] = '\0';
    memset(too_long, 'a', sizeof(too_long) - 1);
    too_long[sizeof(too_long) - 1] = '\0';
    assert_true(model_ca_name_valid("root-CA_1.v2"));
    assert_true(model_ca_name_valid("."));
    assert_true(model_ca_name_valid(long_ok));
    assert_false(model_ca_name_valid(too_long));
    assert_false(model_ca_name_valid(""));
    assert_false(model_ca_name_valid(NULL));
    assert_false(model_ca_name_valid("a b"));
    assert_false(model_ca_name_valid("a/b"));
    assert_false(model_ca_name_valid("a:b"));
    assert_false(model_ca_name_valid("caf\xc3\xa9"));
}


static json_t *ca_prepare_ok(const char *name, json_t *body, const json_t *existing)
{
    char err[384] = "";
    json_t *doc = NULL;
    int r = model_ca_prepare(name, body, existing, &doc, err, sizeof(err));

    if (r != 0)
        fail_msg("model_ca_prepare: %d %s", r, err);
    json_decref(body);
    return doc;
}

static void expect_ca_prepare_fail(json_t *body, const char *msg)
{
    char err[384] = "";
    json_t *doc = (json_t *)1;
    int r = model_ca_prepare("ca", body, NULL, &doc, err, sizeof(err));

    if (r != PROV_EINVAL || strstr(err, msg) == NULL)
        fail_msg("r=%d err='%s', expected '%s'", r, err, msg);
    assert_null(doc);
    json_decref(body);
}

static void test_ca_prepare(void **state)
{
    struct pki *p = *state;
    json_t *doc, *doc2;
    char code[MODEL_CA_CODE_LEN + 1], code2[MODEL_CA_CODE_LEN + 1];

    (void)state;
    doc = ca_prepare_ok("Root-1", cert_body(p->ca_pem, -1), NULL);
    assert_string_equal(json_string_value(json_object_get(doc, "name")), "Root-1");
    assert_true(json_is_false(json_object_get(doc, "isVerified")));
    assert_non_null(strstr(json_string_value(json_object_get(doc, MODEL_CA_PEM)),
                           "-----BEGIN CERTIFICATE-----"));
    assert_null(model_ca_code(doc));
    /* a pending code survives a re-upload of the same certificate (base64 DER) */
    assert_int_equal(model_ca_new_code(doc, code), 0);
    assert_int_equal(strlen(code), MODEL_CA_CODE_LEN);
    for (size_t i = 0; i < MODEL_CA_CODE_LEN; i++)
        assert_true((code[i] >= '0' && code[i] <= '9') || (code[i] >= 'A' && code[i] <= 'F'));
    assert_string_equal(model_ca_code(doc), code);
    doc2 = ca_prepare_ok("Root-1", cert_body(p->ca_der, -1), doc);
    assert_string_equal(model_ca_code(doc2), code);
    assert_true(json_is_false(json_object_get(doc2, "isVerified")));
    json_decref(doc2);
    /* a fresh code differs */
    assert_int_equal(model_ca_new_code(doc, code2), 0);
    assert_string_not_equal(code, code2);
    /* another certificate starts over */
    doc2 = ca_prepare_ok("Root-1", cert_body(p->ca2_pem, -1), doc);
    assert_null(model_ca_code(doc2));
    json_decref(doc2);
    json_decref(doc);

    /* verified on upload; the same certificate stays verified, a new one does not */
    doc = ca_prepare_ok("Root-1", cert_body(p->ca_pem, 1), NULL);
    assert_true(json_is_true(json_object_get(doc, "isVerified")));
    doc2 = ca_prepare_ok("Root-1", cert_body(p->ca_pem, -1), doc);
    assert_true(json_is_true(json_object_get(doc2, "isVerified")));
    json_decref(doc2);
    doc2 = ca_prepare_ok("Root-1", cert_body(p->ca_pem, 0), doc);
    assert_true(json_is_false(json_object_get(doc2, "isVerified")));
    json_decref(doc2);
    doc2 = ca_prepare_ok("Root-1", cert_body(p->ca2_pem, -1), doc);
    assert_true(json_is_false(json_object_get(doc2, "isVerified")));
    json_decref(doc2);
    json_decref(doc);

    expect_ca_prepare_fail(cert_body(p->leaf_pem, -1), "not a CA certificate");
    expect_ca_prepare_fail(cert_body("MIIB", -1), "certificate: ");
    expect_ca_prepare_fail(json_pack("{s:b}", "isVerified", 1), "certificate is required");
    expect_ca_prepare_fail(json_pack("{s:i}", "certificate", 3), "certificate must be a string");
    expect_ca_prepare_fail(json_pack("{s:s, s:s}", "certificate", p->ca_pem, "isVerified", "yes"),
                           "isVerified must be a boolean");
    expect_ca_prepare_fail(json_array(), "must be a JSON object");
}

static json_t *proof_body(X509 *proof)
{
    char *pem = pem_of(proof);
    json_t *b = json_pack("{s:s}", "certificate", pem);

    free(pem);
    assert_non_null(b);
    return b;
}

static void test_ca_verify(void **state)
{
    struct pki *p = *state;
    char code[MODEL_CA_CODE_LEN + 1], err[384];
    EVP_PKEY *pk = new_key();
    X509 *good, *wrong_cn, *wrong_key, *expired;
    json_t *doc, *b;

    doc = ca_prepare_ok("root", cert_body(p->ca_pem, -1), NULL);
    /* no code yet */
    b = proof_body(p->leaf);
    assert_int_equal(model_ca_verify(doc, b, 0, err, sizeof(err)), PROV_EAUTH);
    assert_non_null(strstr(err, "generateVerificationCode"));
    json_decref(b);
    assert_int_equal(model_ca_new_code(doc, code), 0);

    wrong_cn = make_cert("not-the-code", pk, p->ca, p->ca_key, false, -1, 1);
    b = proof_body(wrong_cn);
    assert_int_equal(model_ca_verify(doc, b, 0, err, sizeof(err)), PROV_EAUTH);
    assert_non_null(strstr(err, "CN"));
    json_decref(b);
    /* signed by another key under the CA's name */
    wrong_key = make_cert(code, pk, p->ca_impostor, p->ca2_key, false, -1, 1);
    b = proof_body(wrong_key);
    assert_int_equal(model_ca_verify(doc, b, 0, err, sizeof(err)), PROV_EAUTH);
    assert_non_null(strstr(err, "not signed by"));
    json_decref(b);
    expired = make_cert(code, pk, p->ca, p->ca_key, false, -10, -1);
    b = proof_body(expired);
    assert_int_equal(model_ca_verify(doc, b, 0, err, sizeof(err)), PROV_EAUTH);
    assert_non_null(strstr(err, "expired"));
    json_decref(b);
    b = json_pack("{s:s}", "certificate", "garbage");
    assert_int_equal(model_ca_verify(doc, b, 0, err, sizeof(err)), PROV_EINVAL);
    json_decref(b);
    b = json_object();
    assert_int_equal(model_ca_verify(doc, b, 0, err, sizeof(err)), PROV_EINVAL);
    json_decref(b);
    /* nothing changed by the failures */
    assert_true(json_is_false(json_object_get(doc, "isVerified")));
    assert_string_equal(model_ca_code(doc), code);

    good = make_cert(code, pk, p->ca, p->ca_key, false, -1, 1);
    b = proof_body(good);
    assert_int_equal(model_ca_verify(doc, b, 0, err, sizeof(err)), 0);
    json_decref(b);
    assert_true(json_is_true(json_object_get(doc, "isVerified")));
    assert_null(model_ca_code(doc));
    assert_null(json_object_get(doc, "_provd"));
    /* the code is spent */
    b = proof_body(good);
    assert_int_equal(model_ca_verify(doc, b, 0, err, sizeof(err)), PROV_EAUTH);
    json_decref(b);
    json_decref(doc);
    X509_free(good);
    X509_free(wrong_cn);
    X509_free(wrong_key);
    X509_free(expired);
    EVP_PKEY_free(pk);
}

static void test_ca_render(void **state)
{
    struct pki *p = *state;
    char code[MODEL_CA_CODE_LEN + 1], sha1[41];
    unsigned char *der = NULL;
    uint8_t decoded[4096];
    json_t *doc, *out, *props;
    const char *b64;
    int derlen, n;

    doc = ca_prepare_ok("root.1", cert_body(p->ca_pem, -1), NULL);
    assert_int_equal(model_ca_new_code(doc, code), 0);
    out = model_ca_render(doc, "e-1", "2017-10-12T19:23:50.000Z", "2039-12-31T23:59:59.000Z",
                          false);
    assert_non_null(out);
    assert_string_equal(json_string_value(json_object_get(out, "id")), "/certificates/root.1");
    assert_string_equal(json_string_value(json_object_get(out, "name")), "root.1");
    assert_string_equal(json_string_value(json_object_get(out, "type")),
                        "Microsoft.Devices/ProvisioningServices/Certificates");
    assert_string_equal(json_string_value(json_object_get(out, "etag")), "e-1");
    props = json_object_get(out, "properties");
    assert_string_equal(json_string_value(json_object_get(props, "subject")), "CN=Test Root CA");
    x509_sha1_thumbprint(p->ca, sha1);
    assert_string_equal(json_string_value(json_object_get(props, "thumbprint")), sha1);
    assert_true(json_is_false(json_object_get(props, "isVerified")));
    assert_string_equal(json_string_value(json_object_get(props, "created")),
                        "Thu, 12 Oct 2017 19:23:50 GMT");
    assert_string_equal(json_string_value(json_object_get(props, "updated")),
                        "Sat, 31 Dec 2039 23:59:59 GMT");
    assert_non_null(strstr(json_string_value(json_object_get(props, "expiry")), " GMT"));
    assert_null(json_object_get(props, "verificationCode"));
    assert_null(json_object_get(out, MODEL_PRIVATE));
    assert_null(json_object_get(props, MODEL_CA_PEM));
    b64 = json_string_value(json_object_get(props, "certificate"));
    assert_non_null(b64);
    derlen = i2d_X509(p->ca, &der);
    assert_true(derlen > 0 && (size_t)derlen < sizeof(decoded));
    assert_true(b64_decoded_max(strlen(b64)) <= sizeof(decoded));
    n = b64_decode(b64, strlen(b64), decoded);
    assert_int_equal(n, derlen);
    assert_memory_equal(decoded, der, (size_t)derlen);
    OPENSSL_free(der);
    json_decref(out);
    /* generateVerificationCode's answer */
    out = model_ca_render(doc, "e-2", NULL, NULL, true);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(out, "properties"), "verificationCode")),
        code);
    json_decref(out);
    json_decref(doc);
}

static void test_api_lifecycle(void **state)
{
    struct srv *s = *state;
    struct reply r, r2;
    char etag[128], code[MODEL_CA_CODE_LEN + 1], bad[140];
    EVP_PKEY *pk = new_key();
    X509 *proof, *wrong;
    json_t *b;

    b = cert_body(s->pki.ca_pem, -1);
    call(s, "PUT", "/certificates/root?api-version=2021-10-01", s->owner, NULL, b, &r);
    json_decref(b);
    expect(&r, 200, 0, NULL);
    assert_string_equal(jstr(r.body, "name", NULL), "root");
    assert_string_equal(jstr(r.body, "id", NULL), "/certificates/root");
    assert_true(json_is_false(json_object_get(json_object_get(r.body, "properties"),
                                              "isVerified")));
    snprintf(etag, sizeof(etag), "\"%s\"", jstr(r.body, "etag", NULL));
    assert_string_equal(r.etag, etag);
    reply_release(&r);

    call(s, "GET", "/certificates/ROOT", s->owner, NULL, NULL, &r);
    expect(&r, 200, 0, NULL);
    assert_string_equal(r.etag, etag);
    assert_string_equal(jstr(r.body, "properties", "subject"), "CN=Test Root CA");
    reply_release(&r);
    call(s, "GET", "/certificates", s->owner, NULL, NULL, &r);
    expect(&r, 200, 0, NULL);
    assert_int_equal(json_array_size(json_object_get(r.body, "value")), 1);
    assert_string_equal(jstr(json_array_get(json_object_get(r.body, "value"), 0), "name", NULL),
                        "root");
    reply_release(&r);
    /* the other scope has none */
    call(s, "GET", "/certificates?idScope=0ne00other1", s->owner, NULL, NULL, &r);
    expect(&r, 200, 0, NULL);
    assert_int_equal(json_array_size(json_object_get(r.body, "value")), 0);
    reply_release(&r);

    /* replacing needs If-Match */
    b = cert_body(s->pki.ca_pem, -1);
    call(s, "PUT", "/certificates/root", s->owner, NULL, b, &r);
    expect(&r, 412, 412002, "If-Match is required");
    reply_release(&r);
    call(s, "PUT", "/certificates/root", s->owner, "\"stale\"", b, &r);
    expect(&r, 412, 412001, NULL);
    reply_release(&r);
    call(s, "PUT", "/certificates/root", s->owner, etag, b, &r);
    json_decref(b);
    expect(&r, 200, 0, NULL);
    assert_string_not_equal(r.etag, etag);
    snprintf(etag, sizeof(etag), "%s", r.etag);
    reply_release(&r);

    /* verification code */
    call(s, "POST", "/certificates/root/generateVerificationCode", s->owner, NULL, NULL, &r);
    expect(&r, 412, 412002, "If-Match is required");
    reply_release(&r);
    call(s, "POST", "/certificates/root/generateVerificationCode", s->owner, "\"stale\"", NULL,
         &r);
    expect(&r, 412, 412001, NULL);
    reply_release(&r);
    call(s, "POST", "/certificates/root/generateverificationcode", s->owner, etag, NULL, &r);
    expect(&r, 200, 0, NULL);
    assert_non_null(jstr(r.body, "properties", "verificationCode"));
    snprintf(code, sizeof(code), "%s", jstr(r.body, "properties", "verificationCode"));
    assert_int_equal(strlen(code), MODEL_CA_CODE_LEN);
    assert_string_not_equal(r.etag, etag);
    snprintf(etag, sizeof(etag), "%s", r.etag);
    reply_release(&r);
    call(s, "GET", "/certificates/root", s->owner, NULL, NULL, &r);
    assert_null(jstr(r.body, "properties", "verificationCode"));
    reply_release(&r);

    /* a wrong proof is refused and changes nothing */
    wrong = make_cert("not-the-code", pk, s->pki.ca, s->pki.ca_key, false, -1, 1);
    b = proof_body(wrong);
    call(s, "POST", "/certificates/root/verify", s->owner, NULL, b, &r);
    expect(&r, 412, 412002, NULL);
    reply_release(&r);
    call(s, "POST", "/certificates/root/verify", s->owner, etag, b, &r);
    json_decref(b);
    expect(&r, 400, 400010, "subject CN");
    reply_release(&r);
    call(s, "GET", "/certificates/root", s->owner, NULL, NULL, &r);
    assert_string_equal(r.etag, etag);
    assert_true(json_is_false(json_object_get(json_object_get(r.body, "properties"),
                                              "isVerified")));
    reply_release(&r);
    /* the right one */
    proof = make_cert(code, pk, s->pki.ca, s->pki.ca_key, false, -1, 1);
    b = proof_body(proof);
    call(s, "POST", "/certificates/root/verify", s->owner, "*", b, &r);
    expect(&r, 200, 0, NULL);
    assert_true(json_is_true(json_object_get(json_object_get(r.body, "properties"),
                                             "isVerified")));
    snprintf(etag, sizeof(etag), "%s", r.etag);
    reply_release(&r);
    /* the code is spent */
    call(s, "POST", "/certificates/root/verify", s->owner, etag, b, &r);
    json_decref(b);
    expect(&r, 400, 400010, "generateVerificationCode");
    reply_release(&r);
    call(s, "GET", "/certificates/root", s->owner, NULL, NULL, &r2);
    assert_true(json_is_true(json_object_get(json_object_get(r2.body, "properties"),
                                             "isVerified")));
    reply_release(&r2);

    /* delete */
    call(s, "DELETE", "/certificates/root", s->owner, NULL, NULL, &r);
    expect(&r, 412, 412002, NULL);
    reply_release(&r);
    snprintf(bad, sizeof(bad), "\"00000000-0000-4000-8000-000000000000\"");
    call(s, "DELETE", "/certificates/root", s->owner, bad, NULL, &r);
    expect(&r, 412, 412001, NULL);
    reply_release(&r);
    call(s, "DELETE", "/certificates/root", s->owner, etag, NULL, &r);
    expect(&r, 204, 0, NULL);
    reply_release(&r);
    call(s, "GET", "/certificates/root", s->owner, NULL, NULL, &r);
    expect(&r, 404, 404206, "root");
    reply_release(&r);
    call(s, "DELETE", "/certificates/root", s->owner, "*", NULL, &r);
    expect(&r, 404, 404206, NULL);
    reply_release(&r);
    X509_free(proof);
    X509_free(wrong);
    EVP_PKEY_free(pk);
}

static void test_api_errors(void **state)
{
    struct srv *s = *state;
    struct reply r;
    char long_name[300], target[400];
    json_t *b = cert_body(s->pki.ca_pem, -1);

    call(s, "GET", "/certificates", NULL, NULL, NULL, &r);
    expect(&r, 401, 401002, NULL);
    reply_release(&r);
    /* a policy without ServiceConfig */
    call(s, "GET", "/certificates", s->reader, NULL, NULL, &r);
    expect(&r, 401, 401002, NULL);
    reply_release(&r);
    call(s, "PUT", "/certificates/x", s->reader, NULL, b, &r);
    expect(&r, 401, 401002, NULL);
    reply_release(&r);
    /* names */
    call(s, "PUT", "/certificates/a%20b", s->owner, NULL, b, &r);
    expect(&r, 400, 400005, NULL);
    reply_release(&r);
    memset(long_name, 'n', 257);
    long_name[257] = '\0';
    snprintf(target, sizeof(target), "/certificates/%s", long_name);
    call(s, "PUT", target, s->owner, NULL, b, &r);
    expect(&r, 400, 400005, NULL);
    reply_release(&r);
    long_name[256] = '\0';
    snprintf(target, sizeof(target), "/certificates/%s", long_name);
    call(s, "PUT", target, s->owner, NULL, b, &r);
    expect(&r, 200, 0, NULL);
    reply_release(&r);
    call(s, "DELETE", target, s->owner, "*", NULL, &r);
    expect(&r, 204, 0, NULL);
    reply_release(&r);
    /* If-Match on a certificate that does not exist */
    call(s, "PUT", "/certificates/fresh", s->owner, "*", b, &r);
    expect(&r, 412, 412001, "does not exist");
    reply_release(&r);
    json_decref(b);
    /* bodies */
    b = cert_body(s->pki.leaf_pem, -1);
    call(s, "PUT", "/certificates/leaf", s->owner, NULL, b, &r);
    json_decref(b);
    expect(&r, 400, 400004, "not a CA certificate");
    reply_release(&r);
    b = json_pack("{s:s}", "certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n");
    call(s, "PUT", "/certificates/junk", s->owner, NULL, b, &r);
    json_decref(b);
    expect(&r, 400, 400004, "certificate: ");
    reply_release(&r);
    b = json_array();
    call(s, "PUT", "/certificates/junk", s->owner, NULL, b, &r);
    json_decref(b);
    expect(&r, 400, 400004, NULL);
    reply_release(&r);
    call(s, "GET", "/certificates/leaf", s->owner, NULL, NULL, &r);
    expect(&r, 404, 404206, NULL);
    reply_release(&r);
    call(s, "GET", "/certificates/junk", s->owner, NULL, NULL, &r);
    expect(&r, 404, 404206, NULL);
    reply_release(&r);
    /* methods and paths */
    call(s, "POST", "/certificates", s->owner, NULL, NULL, &r);
    expect(&r, 405, 405001, NULL);
    assert_string_equal(r.allow, "GET");
    reply_release(&r);
    call(s, "PATCH", "/certificates/x", s->owner, NULL, NULL, &r);
    expect(&r, 405, 405001, NULL);
    reply_release(&r);
    call(s, "GET", "/certificates/x/verify", s->owner, NULL, NULL, &r);
    expect(&r, 405, 405001, NULL);
    assert_string_equal(r.allow, "POST");
    reply_release(&r);
    call(s, "POST", "/certificates/x/other", s->owner, NULL, NULL, &r);
    expect(&r, 404, 404001, NULL);
    reply_release(&r);
    call(s, "POST", "/certificates/x/verify/more", s->owner, NULL, NULL, &r);
    expect(&r, 404, 404001, NULL);
    reply_release(&r);
    call(s, "GET", "/certificates?idScope=0ne00NOPE00", s->owner, NULL, NULL, &r);
    expect(&r, 404, 404205, NULL);
    reply_release(&r);
}

static void test_api_arm_prefix(void **state)
{
    struct srv *s = *state;
    struct reply r;
    json_t *b = cert_body(s->pki.ca_pem, 1);

    call(s, "PUT",
         "/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Devices/"
         "provisioningServices/dps1/certificates/armca?api-version=2022-02-05",
         s->owner, NULL, b, &r);
    json_decref(b);
    expect(&r, 200, 0, NULL);
    assert_true(json_is_true(json_object_get(json_object_get(r.body, "properties"),
                                             "isVerified")));
    reply_release(&r);
    call(s, "GET",
         "/SUBSCRIPTIONS/sub-1/resourcegroups/rg/PROVIDERS/microsoft.devices/"
         "provisioningservices/dps1/Certificates/armca",
         s->owner, NULL, NULL, &r);
    expect(&r, 200, 0, NULL);
    assert_string_equal(jstr(r.body, "name", NULL), "armca");
    reply_release(&r);
    call(s, "GET",
         "/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Devices/"
         "provisioningServices/dps1/certificates",
         s->owner, NULL, NULL, &r);
    expect(&r, 200, 0, NULL);
    assert_int_equal(json_array_size(json_object_get(r.body, "value")), 1);
    reply_release(&r);
    call(s, "GET",
         "/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Other/"
         "provisioningServices/dps1/certificates/armca",
         s->owner, NULL, NULL, &r);
    expect(&r, 404, 404001, NULL);
    reply_release(&r);
    call(s, "DELETE", "/certificates/armca", s->owner, "*", NULL, &r);
    expect(&r, 204, 0, NULL);
    reply_release(&r);
}

static void test_api_quota(void **state)
{
    struct srv *s = *state;
    struct reply r;
    char target[64];
    json_t *b = cert_body(s->pki.ca_pem, -1);

    for (int i = 0; i < MODEL_MAX_CAS; i++) {
        snprintf(target, sizeof(target), "/certificates/ca-%02d", i);
        call(s, "PUT", target, s->owner, NULL, b, &r);
        expect(&r, 200, 0, NULL);
        reply_release(&r);
    }
    call(s, "PUT", "/certificates/one-too-many", s->owner, NULL, b, &r);
    expect(&r, 400, 400007, "at most 25");
    reply_release(&r);
    /* replacing is not adding; another scope has its own quota */
    call(s, "PUT", "/certificates/ca-00", s->owner, "*", b, &r);
    expect(&r, 200, 0, NULL);
    reply_release(&r);
    call(s, "PUT", "/certificates/one-too-many?idScope=0ne00OTHER1", s->owner, NULL, b, &r);
    expect(&r, 200, 0, NULL);
    reply_release(&r);
    call(s, "GET", "/certificates", s->owner, NULL, NULL, &r);
    assert_int_equal(json_array_size(json_object_get(r.body, "value")), MODEL_MAX_CAS);
    reply_release(&r);
    json_decref(b);
}

static json_t *group_refs(const char *id, const char *ca)
{
    return json_pack("{s:s, s:{s:s, s:{s:{s:s}}}}", "enrollmentGroupId", id, "attestation", "type",
                     "x509", "x509", "caReferences", "primary", ca);
}

static json_t *group_signing(const char *id, const char *pem)
{
    return json_pack("{s:s, s:{s:s, s:{s:{s:{s:s}}}}}", "enrollmentGroupId", id, "attestation",
                     "type", "x509", "x509", "signingCertificates", "primary", "certificate", pem);
}

static json_t *enrollment_cert(const char *id, const char *pem)
{
    return json_pack("{s:s, s:{s:s, s:{s:{s:{s:s}}}}}", "registrationId", id, "attestation",
                     "type", "x509", "x509", "clientCertificates", "primary", "certificate", pem);
}

static void test_api_group_references(void **state)
{
    struct srv *s = *state;
    struct reply r;
    char etag[128];
    json_t *b;

    b = group_refs("g1", "root");
    call(s, "PUT", "/enrollmentGroups/g1", s->owner, NULL, b, &r);
    expect(&r, 400, 400004, "unknown CA certificate 'root'");
    reply_release(&r);
    {
        json_t *c = cert_body(s->pki.ca_pem, -1);

        call(s, "PUT", "/certificates/Root", s->owner, NULL, c, &r);
        json_decref(c);
        expect(&r, 200, 0, NULL);
        snprintf(etag, sizeof(etag), "%s", r.etag);
        reply_release(&r);
    }
    /* the reference is accepted before verification (judged at registration) */
    call(s, "PUT", "/enrollmentGroups/g1", s->owner, NULL, b, &r);
    json_decref(b);
    expect(&r, 200, 0, NULL);
    assert_string_equal(jstr(json_object_get(json_object_get(r.body, "attestation"), "x509"),
                             "caReferences", "primary"),
                        "root");
    reply_release(&r);
    /* other scopes do not see it */
    b = group_refs("g1", "root");
    call(s, "PUT", "/enrollmentGroups/g1?idScope=0ne00OTHER1", s->owner, NULL, b, &r);
    json_decref(b);
    expect(&r, 400, 400004, "unknown CA certificate");
    reply_release(&r);
    call(s, "DELETE", "/certificates/root", s->owner, etag, NULL, &r);
    expect(&r, 409, 409003, "enrollment group 'g1'");
    reply_release(&r);
    call(s, "GET", "/certificates/root", s->owner, NULL, NULL, &r);
    expect(&r, 200, 0, NULL);
    reply_release(&r);
    call(s, "DELETE", "/enrollmentGroups/g1", s->owner, NULL, NULL, &r);
    expect(&r, 204, 0, NULL);
    reply_release(&r);
    call(s, "DELETE", "/certificates/root", s->owner, etag, NULL, &r);
    expect(&r, 204, 0, NULL);
    reply_release(&r);
}

static void test_api_unique_certificates(void **state)
{
    struct srv *s = *state;
    struct reply r;
    struct store_doc d = {0};
    char sha256[65], ifm[140];
    json_t *b, *got, *stored;

    x509_sha256_thumbprint(s->pki.leaf, sha256);
    b = enrollment_cert("dev-1", s->pki.leaf_pem);
    call(s, "PUT", "/enrollments/dev-1", s->owner, NULL, b, &r);
    json_decref(b);
    expect(&r, 200, 0, NULL);
    assert_null(json_object_get(json_object_get(json_object_get(json_object_get(
                                    json_object_get(r.body, "attestation"), "x509"),
                                    "clientCertificates"), "primary"), "certificate"));
    reply_release(&r);
    call(s, "POST", "/enrollments/dev-1/attestationmechanism", s->owner, NULL, NULL, &r);
    expect(&r, 200, 0, NULL);
    assert_null(json_object_get(json_object_get(json_object_get(json_object_get(r.body, "x509"),
                                                                "clientCertificates"),
                                                "primary"), "certificate"));
    assert_string_equal(jstr(json_object_get(json_object_get(json_object_get(r.body, "x509"),
                                                             "clientCertificates"), "primary"),
                             "info", "sha256Thumbprint"),
                        sha256);
    reply_release(&r);

    /* the same certificate, or its thumbprint, in another enrollment */
    b = enrollment_cert("dev-2", s->pki.leaf_pem);
    call(s, "PUT", "/enrollments/dev-2", s->owner, NULL, b, &r);
    json_decref(b);
    expect(&r, 409, 409002, "enrollment 'dev-1'");
    reply_release(&r);
    b = json_pack("{s:{s:s, s:{s:{s:{s:{s:s}}}}}}", "attestation", "type", "x509", "x509",
                  "clientCertificates", "primary", "info", "sha256Thumbprint", sha256);
    call(s, "PUT", "/enrollments/dev-2", s->owner, NULL, b, &r);
    expect(&r, 409, 409002, sha256);
    reply_release(&r);
    /* bulk goes through the same check */
    {
        json_t *bulk = json_pack("{s:s, s:[O]}", "mode", "create", "enrollments", b);

        json_object_set_new(json_array_get(json_object_get(bulk, "enrollments"), 0),
                            "registrationId", json_string("dev-3"));
        call(s, "POST", "/enrollments", s->owner, NULL, bulk, &r);
        json_decref(bulk);
        expect(&r, 200, 0, NULL);
        assert_true(json_is_false(json_object_get(r.body, "isSuccessful")));
        assert_int_equal(json_integer_value(json_object_get(
                             json_array_get(json_object_get(r.body, "errors"), 0), "errorCode")),
                         409002);
        reply_release(&r);
    }
    json_decref(b);
    /* rewriting the enrollment that holds it is fine: the GET answer sent back keeps it */
    call(s, "GET", "/enrollments/dev-1", s->owner, NULL, NULL, &r);
    expect(&r, 200, 0, NULL);
    got = json_incref(r.body);
    snprintf(ifm, sizeof(ifm), "%s", r.etag);
    reply_release(&r);
    call(s, "PUT", "/enrollments/dev-1", s->owner, ifm, got, &r);
    json_decref(got);
    expect(&r, 200, 0, NULL);
    reply_release(&r);
    assert_int_equal(s->st->ops->enrollment_get(s->st, SCOPE, STORE_ENROLLMENT, "dev-1", &d), 0);
    stored = json_loads(d.json, 0, NULL);
    assert_non_null(stored);
    assert_non_null(strstr(jstr(json_object_get(json_object_get(json_object_get(
                                    stored, "attestation"), "x509"), "clientCertificates"),
                                "primary", "certificate"),
                           "BEGIN CERTIFICATE"));
    json_decref(stored);
    store_doc_release(&d);
    /* once the first is gone, the certificate is free again */
    call(s, "DELETE", "/enrollments/dev-1", s->owner, NULL, NULL, &r);
    expect(&r, 204, 0, NULL);
    reply_release(&r);
    b = enrollment_cert("dev-2", s->pki.leaf_pem);
    call(s, "PUT", "/enrollments/dev-2", s->owner, NULL, b, &r);
    json_decref(b);
    expect(&r, 200, 0, NULL);
    reply_release(&r);

    /* signing certificates: one group each */
    b = group_signing("sg-1", s->pki.ca_pem);
    call(s, "PUT", "/enrollmentGroups/sg-1", s->owner, NULL, b, &r);
    json_decref(b);
    expect(&r, 200, 0, NULL);
    reply_release(&r);
    b = group_signing("sg-2", s->pki.ca_pem);
    call(s, "PUT", "/enrollmentGroups/sg-2", s->owner, NULL, b, &r);
    json_decref(b);
    expect(&r, 409, 409002, "enrollment group 'sg-1'");
    reply_release(&r);
    b = group_signing("sg-1", s->pki.ca_pem);
    call(s, "PUT", "/enrollmentGroups/sg-1", s->owner, NULL, b, &r);
    json_decref(b);
    expect(&r, 200, 0, NULL);
    reply_release(&r);
    /* a leaf cannot sign */
    b = group_signing("sg-3", s->pki.leaf_pem);
    call(s, "PUT", "/enrollmentGroups/sg-3", s->owner, NULL, b, &r);
    json_decref(b);
    expect(&r, 400, 400004, "not a CA certificate");
    reply_release(&r);
}

static void test_api_x509_group_limit(void **state)
{
    struct srv *s = *state;
    struct reply r;
    char target[64], id[32];
    json_t *b = cert_body(s->pki.ca_pem, 1);

    call(s, "PUT", "/certificates/lim", s->owner, NULL, b, &r);
    json_decref(b);
    expect(&r, 200, 0, NULL);
    reply_release(&r);
    for (int i = 0; i < MODEL_MAX_X509_GROUPS; i++) {
        snprintf(id, sizeof(id), "xg-%03d", i);
        snprintf(target, sizeof(target), "/enrollmentGroups/%s", id);
        b = group_refs(id, "lim");
        call(s, "PUT", target, s->owner, NULL, b, &r);
        json_decref(b);
        expect(&r, 200, 0, NULL);
        reply_release(&r);
    }
    b = group_refs("xg-extra", "lim");
    call(s, "PUT", "/enrollmentGroups/xg-extra", s->owner, NULL, b, &r);
    json_decref(b);
    expect(&r, 400, 400007, "X.509 enrollment groups");
    reply_release(&r);
    /* an update of an existing X.509 group is not an addition */
    b = group_refs("xg-000", "lim");
    call(s, "PUT", "/enrollmentGroups/xg-000", s->owner, NULL, b, &r);
    json_decref(b);
    expect(&r, 200, 0, NULL);
    reply_release(&r);
    /* symmetric-key groups count separately */
    b = json_pack("{s:{s:s}}", "attestation", "type", "symmetricKey");
    call(s, "PUT", "/enrollmentGroups/sym-1", s->owner, NULL, b, &r);
    json_decref(b);
    expect(&r, 200, 0, NULL);
    reply_release(&r);
}

/* A writer racing the others: its own store connection, as a worker has. */
#define RACERS 8
struct racer {
    struct srv *s;
    pthread_barrier_t *start;
    int index;
    int status, code;
};

static void *race_put(void *arg)
{
    struct racer *r = arg;
    struct srv mine = *r->s;
    char path[128], err[256], id[32], target[64];
    struct reply rep;
    json_t *b;

    snprintf(path, sizeof(path), "%s/provd.db", r->s->dir);
    if (store_sqlite_open(path, &mine.st, err, sizeof(err)) != 0)
        return NULL; /* status stays 0: the main thread fails the test */
    mine.w.store = mine.st;
    snprintf(id, sizeof(id), "race-%d", r->index);
    snprintf(target, sizeof(target), "/enrollments/%s", id);
    b = enrollment_cert(id, r->s->pki.leaf_pem);
    pthread_barrier_wait(r->start);
    call(&mine, "PUT", target, r->s->owner, NULL, b, &rep);
    r->status = rep.status;
    r->code = rep.code;
    reply_release(&rep);
    json_decref(b);
    store_close(mine.st);
    return NULL;
}

/*
 * Writers that put one certificate into different enrollments at the same
 * time: exactly one succeeds, whatever their checks saw before writing (the
 * store refuses the others inside its write transaction).
 */
static void test_api_unique_certificates_race(void **state)
{
    struct srv *s = *state;
    struct racer r[RACERS];
    pthread_t t[RACERS];
    pthread_barrier_t start;
    int ok = 0, refused = 0;

    assert_int_equal(pthread_barrier_init(&start, NULL, RACERS), 0);
    for (int i = 0; i < RACERS; i++) {
        r[i] = (struct racer){.s = s, .start = &start, .index = i};
        assert_int_equal(pthread_create(&t[i], NULL, race_put, &r[i]), 0);
    }
    for (int i = 0; i < RACERS; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        if (r[i].status == 200)
            ok++;
        else if (r[i].status == 409 && r[i].code == 409002)
            refused++;
        else
            fail_msg("racer %d: HTTP %d %d", i, r[i].status, r[i].code);
    }
    pthread_barrier_destroy(&start);
    assert_int_equal(ok, 1);
    assert_int_equal(refused, RACERS - 1);
}

#define T(name) cmocka_unit_test_setup_teardown(name, srv_setup, srv_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc1123),
        cmocka_unit_test(test_ca_names),
        T(test_ca_prepare),
        T(test_ca_verify),
        T(test_ca_render),
        T(test_api_lifecycle),
        T(test_api_errors),
        T(test_api_arm_prefix),
        T(test_api_quota),
        T(test_api_group_references),
        T(test_api_unique_certificates),
        T(test_api_unique_certificates_race),
        T(test_api_x509_group_limit),
    };

    log_set_level(LOG_ERROR);
    return cmocka_run_group_tests_name("ca", tests, NULL, NULL);
}
