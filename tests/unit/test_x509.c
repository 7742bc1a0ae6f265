/*
 * Unit tests for the X.509 helpers (src/server/x509.c). The PKI is generated
 * at test time with the EVP/X509 APIs (EC P-256): a root, an intermediate with
 * pathlen 0, client leaves, and broken variants. Certificates carry fixed
 * names, serials and dates, and chains are verified at a fixed time (NOW), so
 * expected strings can be written out exactly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "src/common/errors.h"
#include "src/common/util.h"
#include "src/server/x509.h"

/* ---- building certificates ---------------------------------------------------------------- */

static time_t utc(int y, int mon, int d)
{
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mon - 1, .tm_mday = d};

    return timegm(&tm);
}

#define NOW utc(2030, 6, 1)

struct spec {
    const char *subject;  /* "C=US/O=Contoso/CN=dev-01", DER order, '/' between RDNs */
    long serial;
    time_t not_before, not_after;
    const char *bc;       /* basicConstraints value, or NULL */
    const char *ku;       /* keyUsage value, or NULL */
    const char *eku;      /* extendedKeyUsage value, or NULL */
};

static X509_NAME *make_name(const char *text)
{
    X509_NAME *name = X509_NAME_new();
    const char *p = text;

    assert_non_null(name);
    while (*p != '\0') {
        const char *slash = strchr(p, '/');
        const char *eq = strchr(p, '=');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        char field[32], value[128];

        assert_true(eq != NULL && eq < p + n);
        snprintf(field, sizeof(field), "%.*s", (int)(eq - p), p);
        snprintf(value, sizeof(value), "%.*s", (int)(p + n - eq - 1), eq + 1);
        assert_int_equal(X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8,
                                                    (const unsigned char *)value, -1, -1, 0),
                         1);
        p += n;
        if (*p == '/')
            p++;
    }
    return name;
}

static void add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509_EXTENSION *ext;

    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    ext = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value);
    assert_non_null(ext);
    assert_int_equal(X509_add_ext(cert, ext, -1), 1);
    X509_EXTENSION_free(ext);
}

/* Every certificate make_cert built, freed by teardown. */
static STACK_OF(X509) *made;

/*
 * A v3 certificate for key, issued by issuer (NULL: self-signed) and signed
 * with signer (the issuer's key, or another one to forge a bad signature).
 */
static X509 *make_cert(const struct spec *s, EVP_PKEY *key, X509 *issuer, EVP_PKEY *signer)
{
    X509 *x = X509_new();
    X509_NAME *name = make_name(s->subject);

    assert_non_null(x);
    assert_int_equal(X509_set_version(x, X509_VERSION_3), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), s->serial), 1);
    assert_non_null(ASN1_TIME_set(X509_getm_notBefore(x), s->not_before));
    assert_non_null(ASN1_TIME_set(X509_getm_notAfter(x), s->not_after));
    assert_int_equal(X509_set_subject_name(x, name), 1);
    assert_int_equal(X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name), 1);
    assert_int_equal(X509_set_pubkey(x, key), 1);
    if (s->bc != NULL)
        add_ext(x, issuer ? issuer : x, NID_basic_constraints, s->bc);
    if (s->ku != NULL)
        add_ext(x, issuer ? issuer : x, NID_key_usage, s->ku);
    if (s->eku != NULL)
        add_ext(x, issuer ? issuer : x, NID_ext_key_usage, s->eku);
    add_ext(x, issuer ? issuer : x, NID_subject_key_identifier, "hash");
    if (issuer != NULL)
        add_ext(x, issuer, NID_authority_key_identifier, "keyid:always");
    assert_true(X509_sign(x, signer ? signer : key, EVP_sha256()) > 0);
    X509_NAME_free(name);
    assert_true(sk_X509_push(made, x) > 0);
    return x;
}

static EVP_PKEY *gen_key(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");

    assert_non_null(k);
    return k;
}

#define CA_KU "critical,keyCertSign,cRLSign"
#define LEAF_KU "critical,digitalSignature"

static struct pki {
    EVP_PKEY *root_key, *int_key, *leaf_key, *other_key, *misc_key;
    X509 *root, *inter, *leaf;
    X509 *expired, *future, *notca, *under_notca;
    X509 *other_root, *other_int, *leaf_other;
    X509 *root_pl0, *int_a, *int_b, *leaf_deep, *sub_int, *leaf_sub;
    X509 *server_only, *ku_nods, *badsig, *self_leaf, *leaf_now;
    X509 *proof, *proof_forged, *proof_expired, *proof_future, *proof_int, *proof_now;
} P;

static int setup(void **state)
{
    time_t y2020 = utc(2020, 1, 1), y2049 = utc(2049, 12, 31);
    time_t a = utc(2030, 1, 1), b = utc(2031, 1, 1), rt = time(NULL);
    struct spec s;

    (void)state;
    made = sk_X509_new_null();
    assert_non_null(made);
    P.root_key = gen_key();
    P.int_key = gen_key();
    P.leaf_key = gen_key();
    P.other_key = gen_key();
    P.misc_key = gen_key();

    s = (struct spec){"O=Provd Test/CN=Test Root", 1, y2020, y2049, "critical,CA:TRUE", CA_KU,
                      NULL};
    P.root = make_cert(&s, P.root_key, NULL, NULL);
    s = (struct spec){"O=Provd Test/CN=Test Intermediate", 2, y2020, y2049,
                      "critical,CA:TRUE,pathlen:0", CA_KU, NULL};
    P.inter = make_cert(&s, P.int_key, P.root, P.root_key);
    s = (struct spec){"C=US/O=Contoso/OU=Devices/CN=dev-01", 0x0102ABCDEF, a, b, NULL, LEAF_KU,
                      "clientAuth"};
    P.leaf = make_cert(&s, P.leaf_key, P.inter, P.int_key);

    s = (struct spec){"CN=dev-expired", 10, utc(2029, 1, 1), a, NULL, LEAF_KU, "clientAuth"};
    P.expired = make_cert(&s, P.misc_key, P.inter, P.int_key);
    s = (struct spec){"CN=dev-future", 11, utc(2030, 7, 1), utc(2031, 7, 1), NULL, LEAF_KU,
                      "clientAuth"};
    P.future = make_cert(&s, P.misc_key, P.inter, P.int_key);

    s = (struct spec){"O=Provd Test/CN=Not A CA", 12, y2020, y2049, "critical,CA:FALSE", NULL,
                      NULL};
    P.notca = make_cert(&s, P.other_key, P.root, P.root_key);
    s = (struct spec){"CN=dev-under-notca", 13, a, b, NULL, LEAF_KU, "clientAuth"};
    P.under_notca = make_cert(&s, P.misc_key, P.notca, P.other_key);

    s = (struct spec){"CN=Other Root", 20, y2020, y2049, "critical,CA:TRUE", CA_KU, NULL};
    P.other_root = make_cert(&s, P.other_key, NULL, NULL);
    s = (struct spec){"CN=Other Intermediate", 21, y2020, y2049, "critical,CA:TRUE", CA_KU,
                      NULL};
    P.other_int = make_cert(&s, P.misc_key, P.other_root, P.other_key);
    s = (struct spec){"CN=dev-other", 22, a, b, NULL, LEAF_KU, "clientAuth"};
    P.leaf_other = make_cert(&s, P.leaf_key, P.other_int, P.misc_key);

    /* a root allowing no intermediate, and a chain with two */
    s = (struct spec){"CN=Root PL0", 30, y2020, y2049, "critical,CA:TRUE,pathlen:0", CA_KU, NULL};
    P.root_pl0 = make_cert(&s, P.root_key, NULL, NULL);
    s = (struct spec){"CN=Int A", 31, y2020, y2049, "critical,CA:TRUE", CA_KU, NULL};
    P.int_a = make_cert(&s, P.int_key, P.root_pl0, P.root_key);
    s = (struct spec){"CN=Int B", 32, y2020, y2049, "critical,CA:TRUE", CA_KU, NULL};
    P.int_b = make_cert(&s, P.misc_key, P.int_a, P.int_key);
    s = (struct spec){"CN=dev-deep", 33, a, b, NULL, LEAF_KU, "clientAuth"};
    P.leaf_deep = make_cert(&s, P.leaf_key, P.int_b, P.misc_key);
    /* a CA under the pathlen-0 intermediate */
    s = (struct spec){"CN=Sub Intermediate", 34, y2020, y2049, "critical,CA:TRUE", CA_KU, NULL};
    P.sub_int = make_cert(&s, P.other_key, P.inter, P.int_key);
    s = (struct spec){"CN=dev-sub", 35, a, b, NULL, LEAF_KU, "clientAuth"};
    P.leaf_sub = make_cert(&s, P.leaf_key, P.sub_int, P.other_key);

    s = (struct spec){"CN=dev-server", 40, a, b, NULL, LEAF_KU, "serverAuth"};
    P.server_only = make_cert(&s, P.leaf_key, P.inter, P.int_key);
    s = (struct spec){"CN=dev-keyenc", 41, a, b, NULL, "critical,keyEncipherment", "clientAuth"};
    P.ku_nods = make_cert(&s, P.leaf_key, P.inter, P.int_key);
    /* names and AKI say "issued by the intermediate", the signature is another key's */
    s = (struct spec){"CN=dev-badsig", 42, a, b, NULL, LEAF_KU, "clientAuth"};
    P.badsig = make_cert(&s, P.leaf_key, P.inter, P.other_key);
    s = (struct spec){"CN=dev-self", 43, a, b, NULL, LEAF_KU, "clientAuth"};
    P.self_leaf = make_cert(&s, P.leaf_key, NULL, NULL);
    s = (struct spec){"CN=dev-now", 44, rt - 3600, rt + 86400, NULL, LEAF_KU, "clientAuth"};
    P.leaf_now = make_cert(&s, P.leaf_key, P.inter, P.int_key);

    /* proof-of-possession certificates for code A1b2C3d4E5 */
    s = (struct spec){"CN=A1b2C3d4E5", 50, a, b, NULL, NULL, NULL};
    P.proof = make_cert(&s, P.misc_key, P.root, P.root_key);
    P.proof_forged = make_cert(&s, P.misc_key, P.root, P.other_key);
    P.proof_int = make_cert(&s, P.misc_key, P.inter, P.int_key);
    s.not_before = utc(2029, 1, 1);
    s.not_after = utc(2030, 1, 1);
    P.proof_expired = make_cert(&s, P.misc_key, P.root, P.root_key);
    s.not_before = utc(2030, 7, 1);
    s.not_after = utc(2031, 1, 1);
    P.proof_future = make_cert(&s, P.misc_key, P.root, P.root_key);
    s.not_before = rt - 60;
    s.not_after = rt + 3600;
    P.proof_now = make_cert(&s, P.misc_key, P.root, P.root_key);
    ERR_clear_error();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    sk_X509_pop_free(made, X509_free);
    EVP_PKEY_free(P.root_key);
    EVP_PKEY_free(P.int_key);
    EVP_PKEY_free(P.leaf_key);
    EVP_PKEY_free(P.other_key);
    EVP_PKEY_free(P.misc_key);
    return 0;
}

static STACK_OF(X509) *stack_of(X509 *a, X509 *b, X509 *c)
{
    STACK_OF(X509) *sk = sk_X509_new_null();
    X509 *all[3] = {a, b, c};

    assert_non_null(sk);
    for (int i = 0; i < 3; i++) {
        if (all[i] != NULL)
            assert_true(sk_X509_push(sk, all[i]) > 0);
    }
    return sk;
}

/* The error queue must be exactly as before the call. */
#define assert_no_openssl_errors() assert_int_equal(ERR_peek_error(), 0)

static char *pem_of(X509 *x)
{
    char *pem = x509_to_pem(x);

    assert_non_null(pem);
    return pem;
}

static char *b64_der_of(X509 *x, size_t wrap)
{
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    char *flat, *out;
    size_t len, k = 0;

    assert_true(n > 0);
    flat = b64_encode_alloc(der, (size_t)n);
    assert_non_null(flat);
    OPENSSL_free(der);
    if (wrap == 0)
        return flat;
    len = strlen(flat);
    out = malloc(len + 2 * (len / wrap + 1) + 1);
    assert_non_null(out);
    for (size_t i = 0; i < len; i++) {
        out[k++] = flat[i];
        if ((i + 1) % wrap == 0) {
            out[k++] = '\r';
            out[k++] = '\n';
        }
    }
    out[k] = '\0';
    free(flat);
    return out;
}

static void assert_parses_to(const char *text, X509 *want)
{
    const char *why = "unset";
    X509 *x = x509_parse_one(text, &why);

    if (x == NULL)
        fail_msg("parse failed: %s", why);
    assert_null(why);
    assert_int_equal(X509_cmp(x, want), 0);
    X509_free(x);
    assert_no_openssl_errors();
}

static void assert_refused(const char *text, const char *phrase)
{
    const char *why = NULL;
    X509 *x = x509_parse_one(text, &why);

    assert_null(x);
    assert_non_null(why);
    if (strstr(why, phrase) == NULL)
        fail_msg("reason '%s' lacks '%s'", why, phrase);
    assert_no_openssl_errors();
}

/* ---- parsing ------------------------------------------------------------------------------ */

static void test_parse_pem_forms(void **state)
{
    char *pem = pem_of(P.leaf);
    size_t n = strlen(pem);
    char *buf = malloc(3 * n + 64);
    size_t k = 0;

    (void)state;
    assert_non_null(buf);
    assert_true(strncmp(pem, "-----BEGIN CERTIFICATE-----\n", 28) == 0);
    assert_parses_to(pem, P.leaf);
    snprintf(buf, 3 * n + 64, " \n\t%s\n\n  ", pem);
    assert_parses_to(buf, P.leaf);
    /* CRLF line ends */
    for (size_t i = 0; i < n; i++) {
        if (pem[i] == '\n')
            buf[k++] = '\r';
        buf[k++] = pem[i];
    }
    buf[k] = '\0';
    assert_parses_to(buf, P.leaf);
    /* no newline after the END line */
    snprintf(buf, 3 * n + 64, "%.*s", (int)(n - 1), pem);
    assert_parses_to(buf, P.leaf);
    free(buf);
    free(pem);
}

static void test_parse_base64_der(void **state)
{
    char *flat = b64_der_of(P.inter, 0);
    char *wrapped = b64_der_of(P.inter, 64);
    char buf[4096];

    (void)state;
    assert_parses_to(flat, P.inter);
    assert_non_null(strchr(wrapped, '\n'));
    assert_parses_to(wrapped, P.inter);
    snprintf(buf, sizeof(buf), "\n  %s \n", wrapped);
    assert_parses_to(buf, P.inter);
    free(flat);
    free(wrapped);
}

static void test_parse_garbage(void **state)
{
    char *pem = pem_of(P.leaf);
    char *flat = b64_der_of(P.leaf, 0);
    unsigned char *der = NULL;
    int n = i2d_X509(P.leaf, &der);
    unsigned char *longer = malloc((size_t)n + 2);
    char *b64;
    char buf[8192];
    const char *why = NULL;

    (void)state;
    assert_null(x509_parse_one(NULL, &why));
    assert_non_null(why);
    assert_null(x509_parse_one("x", NULL)); /* why may be NULL */
    assert_refused("", "empty");
    assert_refused(" \r\n\t ", "empty");
    assert_refused("hello world", "not a certificate");
    assert_refused("AAAA", "not a valid X.509 certificate");
    assert_refused("QUJD=", "invalid base64");
    assert_refused("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", "PEM");
    assert_refused("-----BEGIN CERTIFICATE-----\nQUJDRA==\n-----END CERTIFICATE-----\n",
                   "not a valid X.509 certificate");
    assert_refused("-----BEGIN CERTIFICATE-----\nQUJDRA==\n", "END");
    assert_refused("-----BEGIN CERTIFICATE REQUEST-----\nQUJDRA==\n"
                   "-----END CERTIFICATE REQUEST-----\n", "certificate request");
    snprintf(buf, sizeof(buf), "%sjunk\n", pem);
    assert_refused(buf, "trailing data");
    snprintf(buf, sizeof(buf), "junk\n%s", pem);
    assert_refused(buf, "not a certificate");
    snprintf(buf, sizeof(buf), "-----END CERTIFICATE-----\n%s", pem);
    assert_refused(buf, "unexpected text before");
    snprintf(buf, sizeof(buf), "%s!", flat);
    assert_refused(buf, "not a certificate");
    /* DER followed by two more bytes */
    assert_non_null(longer);
    memcpy(longer, der, (size_t)n);
    longer[n] = 0x05;
    longer[n + 1] = 0x00;
    b64 = b64_encode_alloc(longer, (size_t)n + 2);
    assert_non_null(b64);
    assert_refused(b64, "trailing data");
    free(b64);
    free(longer);
    OPENSSL_free(der);
    free(flat);
    free(pem);
}

static char *key_pem(EVP_PKEY *k, bool traditional)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data, *out;
    long n;

    assert_non_null(bio);
    if (traditional)
        assert_int_equal(PEM_write_bio_PrivateKey_traditional(bio, k, NULL, NULL, 0, NULL, NULL),
                         1);
    else
        assert_int_equal(PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL), 1);
    n = BIO_get_mem_data(bio, &data);
    out = calloc(1, (size_t)n + 1);
    assert_non_null(out);
    memcpy(out, data, (size_t)n);
    BIO_free(bio);
    return out;
}

static void test_parse_private_keys_and_two_certs(void **state)
{
    char *pkcs8 = key_pem(P.misc_key, false);
    char *trad = key_pem(P.misc_key, true);
    char *pem = pem_of(P.leaf), *pem2 = pem_of(P.inter);
    unsigned char *der = NULL;
    int n = i2d_PrivateKey(P.misc_key, &der);
    char *b64 = b64_encode_alloc(der, (size_t)n);
    char buf[8192];

    (void)state;
    assert_non_null(strstr(pkcs8, "BEGIN PRIVATE KEY"));
    assert_non_null(strstr(trad, "BEGIN EC PRIVATE KEY"));
    assert_refused(pkcs8, "a private key is not a certificate");
    assert_refused(trad, "a private key is not a certificate");
    assert_non_null(b64);
    assert_refused(b64, "a private key is not a certificate");
    snprintf(buf, sizeof(buf), "%s%s", pem, pkcs8);
    assert_refused(buf, "a private key is not a certificate");
    snprintf(buf, sizeof(buf), "%s\n%s", pem, pem2);
    assert_refused(buf, "more than one certificate");
    OPENSSL_free(der);
    free(b64);
    free(pem);
    free(pem2);
    free(trad);
    free(pkcs8);
}

static void test_parse_size_limit(void **state)
{
    char *pem = pem_of(P.leaf);
    size_t n = strlen(pem);
    char *big = malloc(PROV_X509_MAX_TEXT + 2);

    (void)state;
    assert_non_null(big);
    /* exactly 64 KB: accepted */
    memset(big, ' ', PROV_X509_MAX_TEXT);
    memcpy(big, pem, n);
    big[PROV_X509_MAX_TEXT] = '\0';
    assert_parses_to(big, P.leaf);
    /* one byte more: refused before anything is decoded */
    big[PROV_X509_MAX_TEXT] = ' ';
    big[PROV_X509_MAX_TEXT + 1] = '\0';
    assert_refused(big, "64 KB");
    free(big);
    free(pem);
}

static void test_parse_chain(void **state)
{
    char *a = pem_of(P.leaf), *b = pem_of(P.inter), *c = pem_of(P.root);
    char *key = key_pem(P.misc_key, false);
    char buf[16384];
    const char *why = NULL;
    STACK_OF(X509) *sk;

    (void)state;
    snprintf(buf, sizeof(buf), "%s%s%s", a, b, c);
    sk = x509_parse_pem_chain(buf, &why);
    assert_non_null(sk);
    assert_null(why);
    assert_int_equal(sk_X509_num(sk), 3);
    assert_int_equal(X509_cmp(sk_X509_value(sk, 0), P.leaf), 0);
    assert_int_equal(X509_cmp(sk_X509_value(sk, 1), P.inter), 0);
    assert_int_equal(X509_cmp(sk_X509_value(sk, 2), P.root), 0);
    sk_X509_pop_free(sk, X509_free);
    /* explanatory text around blocks, as `openssl x509 -subject` writes it */
    snprintf(buf, sizeof(buf), "subject=CN=dev-01\n%s\nsubject=CN=Test Root\n%s\n", a, c);
    sk = x509_parse_pem_chain(buf, &why);
    assert_non_null(sk);
    assert_int_equal(sk_X509_num(sk), 2);
    assert_int_equal(X509_cmp(sk_X509_value(sk, 1), P.root), 0);
    sk_X509_pop_free(sk, X509_free);
    /* one certificate is a chain too */
    sk = x509_parse_pem_chain(b, &why);
    assert_non_null(sk);
    assert_int_equal(sk_X509_num(sk), 1);
    sk_X509_pop_free(sk, X509_free);

    assert_null(x509_parse_pem_chain("no certificate here", &why));
    assert_non_null(strstr(why, "no PEM certificate"));
    assert_null(x509_parse_pem_chain(NULL, &why));
    snprintf(buf, sizeof(buf), "%s%s", a, key);
    assert_null(x509_parse_pem_chain(buf, &why));
    assert_string_equal(why, "a private key is not a certificate");
    snprintf(buf, sizeof(buf), "%s-----BEGIN CERTIFICATE-----\nQUJDRA==\n"
             "-----END CERTIFICATE-----\n", a);
    assert_null(x509_parse_pem_chain(buf, &why));
    assert_non_null(strstr(why, "not a valid X.509 certificate"));
    snprintf(buf, sizeof(buf), "%s-----BEGIN CERTIFICATE-----\nQUJD", a);
    assert_null(x509_parse_pem_chain(buf, &why));
    assert_no_openssl_errors();
    free(a);
    free(b);
    free(c);
    free(key);
}

static void test_to_pem_round_trip(void **state)
{
    char *pem = pem_of(P.root);
    const char *why;
    X509 *x = x509_parse_one(pem, &why);

    (void)state;
    assert_non_null(x);
    assert_int_equal(X509_cmp(x, P.root), 0);
    assert_null(x509_to_pem(NULL));
    X509_free(x);
    free(pem);
}

/* An error queued before a call survives it; nothing the call causes stays. */
static void test_error_queue_preserved(void **state)
{
    const char *why;
    struct x509_verdict v;
    STACK_OF(X509) *anchors = stack_of(P.root, NULL, NULL);
    X509 *x1, *x2;
    int r1, r2;
    unsigned long e1, e2;

    (void)state;
    ERR_raise(ERR_LIB_USER, 42);
    x1 = x509_parse_one("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----", &why);
    x2 = x509_parse_one("AAAA", &why);
    r1 = x509_verify_chain(P.badsig, NULL, anchors, NOW, &v);
    r2 = x509_verify_pop(P.root, P.proof_forged, "A1b2C3d4E5", NOW, &why);
    e1 = ERR_get_error();
    e2 = ERR_get_error();
    /* leave a clean queue for the other tests whatever happens below */
    ERR_clear_error();
    sk_X509_free(anchors);
    assert_null(x1);
    assert_null(x2);
    assert_int_equal(r1, PROV_EAUTH);
    assert_int_equal(r2, PROV_EAUTH);
    assert_int_equal(ERR_GET_LIB(e1), ERR_LIB_USER);
    assert_int_equal(ERR_GET_REASON(e1), 42);
    assert_int_equal(e2, 0);
}

/* ---- info, names, thumbprints ------------------------------------------------------------- */

static void hex_digest(X509 *x, const EVP_MD *md, char *out)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    assert_int_equal(X509_digest(x, md, d, &n), 1);
    for (unsigned int i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02X", d[i]);
}

static const char *jstr(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));

    if (s == NULL)
        fail_msg("info has no string '%s'", k);
    return s;
}

static void test_info_known_cert(void **state)
{
    json_t *info = x509_info(P.leaf);
    char sha1[41], sha256[65], mine1[41], mine256[65];

    (void)state;
    assert_non_null(info);
    assert_int_equal(json_object_size(info), 8);
    assert_string_equal(jstr(info, "subjectName"), "CN=dev-01, OU=Devices, O=Contoso, C=US");
    assert_string_equal(jstr(info, "issuerName"), "CN=Test Intermediate, O=Provd Test");
    assert_string_equal(jstr(info, "notBeforeUtc"), "2030-01-01T00:00:00Z");
    assert_string_equal(jstr(info, "notAfterUtc"), "2031-01-01T00:00:00Z");
    assert_string_equal(jstr(info, "serialNumber"), "0102ABCDEF");
    assert_int_equal(json_integer_value(json_object_get(info, "version")), 3);
    hex_digest(P.leaf, EVP_sha1(), mine1);
    hex_digest(P.leaf, EVP_sha256(), mine256);
    assert_string_equal(jstr(info, "sha1Thumbprint"), mine1);
    assert_string_equal(jstr(info, "sha256Thumbprint"), mine256);
    x509_sha1_thumbprint(P.leaf, sha1);
    x509_sha256_thumbprint(P.leaf, sha256);
    assert_string_equal(sha1, mine1);
    assert_string_equal(sha256, mine256);
    assert_int_equal(strlen(sha1), 40);
    assert_int_equal(strlen(sha256), 64);
    assert_int_equal(strspn(sha256, "0123456789ABCDEF"), 64);
    json_decref(info);
    assert_null(x509_info(NULL));

    info = x509_info(P.root);
    assert_string_equal(jstr(info, "subjectName"), "CN=Test Root, O=Provd Test");
    assert_string_equal(jstr(info, "issuerName"), "CN=Test Root, O=Provd Test");
    assert_string_equal(jstr(info, "serialNumber"), "01");
    assert_string_equal(jstr(info, "notAfterUtc"), "2049-12-31T00:00:00Z");
    json_decref(info);
}

/* Names with quoting, multi-valued RDNs, .NET keys and unknown OIDs; a v1 certificate. */
static void test_info_name_forms(void **state)
{
    X509 *x = X509_new();
    X509_NAME *n = X509_NAME_new();
    json_t *info;

    (void)state;
    assert_non_null(x);
    assert_non_null(n);
    X509_NAME_add_entry_by_txt(n, "C", MBSTRING_ASC, (const unsigned char *)"DE", -1, -1, 0);
    X509_NAME_add_entry_by_txt(n, "ST", MBSTRING_ASC, (const unsigned char *)"Bayern", -1, -1,
                               0);
    X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8,
                               (const unsigned char *)"Contoso, \"Ltd\"", -1, -1, 0);
    X509_NAME_add_entry_by_txt(n, "OU", MBSTRING_UTF8, (const unsigned char *)"M\xc3\xbcnchen",
                               -1, -1, 0);
    /* one RDN with two values */
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"multi", -1, -1, 0);
    X509_NAME_add_entry_by_txt(n, "UID", MBSTRING_ASC, (const unsigned char *)"u1", -1, -1, -1);
    X509_NAME_add_entry_by_txt(n, "emailAddress", MBSTRING_ASC,
                               (const unsigned char *)"a@b.example", -1, -1, 0);
    X509_NAME_add_entry_by_txt(n, "L", MBSTRING_ASC, (const unsigned char *)" padded", -1, -1,
                               0);
    /* an empty value (the table-driven MBSTRING path would refuse it) */
    assert_int_equal(X509_NAME_add_entry_by_NID(n, NID_domainComponent, V_ASN1_IA5STRING,
                                                (const unsigned char *)"", 0, -1, 0),
                     1);
    assert_int_equal(X509_set_subject_name(x, n), 1);
    assert_int_equal(X509_set_issuer_name(x, n), 1);
    assert_int_equal(X509_set_version(x, X509_VERSION_1), 1);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 0x80);
    ASN1_TIME_set(X509_getm_notBefore(x), utc(2030, 1, 1));
    ASN1_TIME_set(X509_getm_notAfter(x), utc(2030, 12, 31) + 23 * 3600 + 59 * 60 + 59);
    X509_set_pubkey(x, P.misc_key);
    assert_true(X509_sign(x, P.misc_key, EVP_sha256()) > 0);

    info = x509_info(x);
    assert_non_null(info);
    assert_string_equal(jstr(info, "subjectName"),
                        "DC=\"\", L=\" padded\", E=a@b.example, CN=multi + "
                        "OID.0.9.2342.19200300.100.1.1=u1, OU=M\xc3\xbcnchen, "
                        "O=\"Contoso, \"\"Ltd\"\"\", S=Bayern, C=DE");
    assert_string_equal(jstr(info, "serialNumber"), "80");
    assert_string_equal(jstr(info, "notAfterUtc"), "2030-12-31T23:59:59Z");
    assert_int_equal(json_integer_value(json_object_get(info, "version")), 1);
    json_decref(info);
    X509_NAME_free(n);
    X509_free(x);
    assert_no_openssl_errors();
}

/*
 * A value that is not a character string (here a BIT STRING) is shown as
 * '#' and hex. (Character strings that are not valid UTF-8 never get this far:
 * OpenSSL refuses them when it decodes or builds the name.)
 */
static void test_info_hostile_names(void **state)
{
    X509 *x = X509_new();
    X509_NAME *n = X509_NAME_new();
    json_t *info;
    char cn[64];

    (void)state;
    assert_non_null(x);
    assert_non_null(n);
    assert_int_equal(X509_NAME_add_entry_by_NID(n, NID_organizationName, V_ASN1_BIT_STRING,
                                                (const unsigned char *)"\x01\xfe", 2, -1, 0),
                     1);
    assert_int_equal(X509_NAME_add_entry_by_NID(n, NID_commonName, V_ASN1_BIT_STRING,
                                                (const unsigned char *)"ab", 2, -1, 0),
                     1);
    assert_int_equal(X509_set_subject_name(x, n), 1);
    assert_int_equal(X509_set_issuer_name(x, n), 1);
    info = x509_info(x);
    assert_non_null(info);
    assert_string_equal(jstr(info, "subjectName"), "CN=#6162, O=#01FE");
    json_decref(info);
    assert_false(x509_subject_cn(x, cn, sizeof(cn)));
    X509_NAME_free(n);
    X509_free(x);
    assert_no_openssl_errors();
}

static void test_subject_cn(void **state)
{
    char cn[64], tiny[4];
    X509 *x = X509_new();
    X509_NAME *n = X509_NAME_new();

    (void)state;
    assert_true(x509_subject_cn(P.leaf, cn, sizeof(cn)));
    assert_string_equal(cn, "dev-01");
    assert_false(x509_subject_cn(P.leaf, tiny, sizeof(tiny)));
    assert_string_equal(tiny, "");
    assert_true(x509_subject_cn(P.inter, cn, 18));
    assert_string_equal(cn, "Test Intermediate");
    assert_false(x509_subject_cn(P.inter, cn, 17));
    /* no CN; then a CN with an embedded NUL */
    X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC, (const unsigned char *)"org", -1, -1, 0);
    X509_set_subject_name(x, n);
    assert_false(x509_subject_cn(x, cn, sizeof(cn)));
    X509_NAME_add_entry_by_NID(n, NID_commonName, V_ASN1_UTF8STRING,
                               (const unsigned char *)"a\0b", 3, -1, 0);
    X509_set_subject_name(x, n);
    assert_false(x509_subject_cn(x, cn, sizeof(cn)));
    assert_false(x509_subject_cn(NULL, cn, sizeof(cn)));
    X509_NAME_free(n);
    X509_free(x);
}

static void with_separators(const char *hex, const char *sep, char *out)
{
    size_t k = 0;

    for (size_t i = 0; hex[i] != '\0'; i++) {
        if (i > 0 && i % 2 == 0)
            for (const char *s = sep; *s; s++)
                out[k++] = *s;
        out[k++] = hex[i];
    }
    out[k] = '\0';
}

static void test_thumbprint_matching(void **state)
{
    char sha1[41], sha256[65], buf[256];

    (void)state;
    x509_sha1_thumbprint(P.leaf, sha1);
    x509_sha256_thumbprint(P.leaf, sha256);
    assert_true(x509_thumbprint_matches(P.leaf, sha1));
    assert_true(x509_thumbprint_matches(P.leaf, sha256));
    snprintf(buf, sizeof(buf), "%s", sha256);
    str_lower(buf);
    assert_true(x509_thumbprint_matches(P.leaf, buf));
    with_separators(sha1, ":", buf);
    assert_true(x509_thumbprint_matches(P.leaf, buf));
    str_lower(buf);
    assert_true(x509_thumbprint_matches(P.leaf, buf));
    with_separators(sha256, " ", buf);
    assert_true(x509_thumbprint_matches(P.leaf, buf));
    snprintf(buf, sizeof(buf), " %s ", sha1);
    assert_true(x509_thumbprint_matches(P.leaf, buf));

    assert_false(x509_thumbprint_matches(P.inter, sha1));
    assert_false(x509_thumbprint_matches(P.inter, sha256));
    snprintf(buf, sizeof(buf), "%s", sha1);
    buf[39] = buf[39] == '0' ? '1' : '0';
    assert_false(x509_thumbprint_matches(P.leaf, buf));
    snprintf(buf, sizeof(buf), "%.39s", sha1);
    assert_false(x509_thumbprint_matches(P.leaf, buf));
    snprintf(buf, sizeof(buf), "%s0", sha1);
    assert_false(x509_thumbprint_matches(P.leaf, buf));
    snprintf(buf, sizeof(buf), "%s00", sha256);
    assert_false(x509_thumbprint_matches(P.leaf, buf));
    snprintf(buf, sizeof(buf), "%s", sha1);
    buf[0] = 'g';
    assert_false(x509_thumbprint_matches(P.leaf, buf));
    snprintf(buf, sizeof(buf), "%.20s-%s", sha1, sha1 + 20);
    assert_false(x509_thumbprint_matches(P.leaf, buf));
    assert_false(x509_thumbprint_matches(P.leaf, ""));
    assert_false(x509_thumbprint_matches(P.leaf, NULL));
    assert_false(x509_thumbprint_matches(NULL, sha1));
}

static void test_is_ca(void **state)
{
    (void)state;
    assert_true(x509_is_ca(P.root));
    assert_true(x509_is_ca(P.inter));
    assert_false(x509_is_ca(P.leaf));
    assert_false(x509_is_ca(P.notca));
    assert_false(x509_is_ca(NULL));
}

/* ---- chain verification ------------------------------------------------------------------- */

static void expect_ok(X509 *leaf, X509 *u1, X509 *u2, X509 *anchor, int anchor_depth)
{
    STACK_OF(X509) *untrusted = stack_of(u1, u2, NULL);
    STACK_OF(X509) *anchors = stack_of(anchor, NULL, NULL);
    struct x509_verdict v;
    int r = x509_verify_chain(leaf, untrusted, anchors, NOW, &v);

    if (r != 0)
        fail_msg("verification failed: %s", v.message);
    assert_int_equal(v.anchor_depth, anchor_depth);
    assert_int_equal(v.depth, -1);
    assert_int_equal(v.error, 0);
    assert_non_null(strstr(v.message, "verified"));
    assert_no_openssl_errors();
    sk_X509_free(untrusted);
    sk_X509_free(anchors);
}

static void expect_fail(X509 *leaf, X509 *u1, X509 *u2, X509 *anchor, int depth, int error,
                        const char *message)
{
    STACK_OF(X509) *untrusted = stack_of(u1, u2, NULL);
    STACK_OF(X509) *anchors = stack_of(anchor, NULL, NULL);
    struct x509_verdict v;

    assert_int_equal(x509_verify_chain(leaf, untrusted, anchors, NOW, &v), PROV_EAUTH);
    if (v.error != error || v.depth != depth || strstr(v.message, message) == NULL)
        fail_msg("got depth %d error %d '%s'; want depth %d error %d '%s'", v.depth, v.error,
                 v.message, depth, error, message);
    assert_int_equal(v.anchor_depth, -1);
    assert_no_openssl_errors();
    sk_X509_free(untrusted);
    sk_X509_free(anchors);
}

static void test_chain_good(void **state)
{
    (void)state;
    /* intermediate sent by the device, root as anchor */
    expect_ok(P.leaf, P.inter, NULL, P.root, 2);
    /* intermediate as anchor (partial chain), whether the device sends it or not */
    expect_ok(P.leaf, P.inter, NULL, P.inter, 1);
    expect_ok(P.leaf, NULL, NULL, P.inter, 1);
    /* intermediate held by the group (after unrelated device extras) */
    expect_ok(P.leaf, P.other_int, P.inter, P.root, 2);
    /* the device also sends the root */
    expect_ok(P.leaf, P.inter, P.root, P.root, 2);
    /* a pinned leaf is its own anchor */
    expect_ok(P.leaf, NULL, NULL, P.leaf, 0);
}

static void test_chain_ex_returns_chain(void **state)
{
    STACK_OF(X509) *untrusted = stack_of(P.inter, NULL, NULL);
    STACK_OF(X509) *anchors = stack_of(P.root, P.other_root, NULL);
    STACK_OF(X509) *chain = NULL;
    struct x509_verdict v;

    (void)state;
    assert_int_equal(x509_verify_chain_ex(P.leaf, untrusted, anchors, NOW, &v, &chain), 0);
    assert_non_null(chain);
    assert_int_equal(sk_X509_num(chain), 3);
    assert_int_equal(X509_cmp(sk_X509_value(chain, 0), P.leaf), 0);
    assert_int_equal(X509_cmp(sk_X509_value(chain, 1), P.inter), 0);
    assert_int_equal(X509_cmp(sk_X509_value(chain, v.anchor_depth), P.root), 0);
    assert_string_equal(v.message, "verified up to certificate 2 (CN=Test Root)");
    sk_X509_pop_free(chain, X509_free);
    chain = (STACK_OF(X509) *)1;
    assert_int_equal(x509_verify_chain_ex(P.expired, untrusted, anchors, NOW, &v, &chain),
                     PROV_EAUTH);
    assert_null(chain);
    /* v may be NULL; so may the stacks (no anchors: nothing verifies) */
    assert_int_equal(x509_verify_chain(P.leaf, untrusted, anchors, NOW, NULL), 0);
    assert_int_equal(x509_verify_chain(P.leaf, NULL, NULL, NOW, &v), PROV_EAUTH);
    assert_int_equal(x509_verify_chain(NULL, NULL, anchors, NOW, &v), PROV_EINVAL);
    sk_X509_free(untrusted);
    sk_X509_free(anchors);
}

static void test_chain_validity(void **state)
{
    STACK_OF(X509) *untrusted = stack_of(P.inter, NULL, NULL);
    STACK_OF(X509) *anchors = stack_of(P.root, NULL, NULL);
    struct x509_verdict v;

    (void)state;
    expect_fail(P.expired, P.inter, NULL, P.root, 0, X509_V_ERR_CERT_HAS_EXPIRED,
                "certificate 0 (CN=dev-expired): expired at 2030-01-01T00:00:00Z");
    expect_fail(P.future, P.inter, NULL, P.root, 0, X509_V_ERR_CERT_NOT_YET_VALID,
                "certificate 0 (CN=dev-future): not yet valid until 2030-07-01T00:00:00Z");
    /* now = 0 is the current time: the fixed-date leaf is not valid yet, leaf_now is */
    assert_int_equal(x509_verify_chain(P.leaf, untrusted, anchors, 0, &v), PROV_EAUTH);
    assert_int_equal(v.error, X509_V_ERR_CERT_NOT_YET_VALID);
    assert_int_equal(x509_verify_chain(P.leaf_now, untrusted, anchors, 0, &v), 0);
    assert_int_equal(v.anchor_depth, 2);
    /* the instant of expiry is already expired, as OpenSSL compares */
    assert_int_equal(x509_verify_chain(P.leaf, untrusted, anchors, utc(2031, 1, 1) - 1, &v), 0);
    assert_int_equal(x509_verify_chain(P.leaf, untrusted, anchors, utc(2031, 1, 1) + 1, &v),
                     PROV_EAUTH);
    sk_X509_free(untrusted);
    sk_X509_free(anchors);
}

static void test_chain_broken(void **state)
{
    (void)state;
    expect_fail(P.under_notca, P.notca, NULL, P.root, 1, X509_V_ERR_INVALID_CA,
                "certificate 1 (CN=Not A CA): not a CA (basic constraints)");
    /* unrelated CA: the leaf alone, then with its own intermediate */
    expect_fail(P.leaf_other, NULL, NULL, P.root, 0, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
                "certificate 0 (CN=dev-other): issuer not trusted (unknown CA)");
    expect_fail(P.leaf_other, P.other_int, NULL, P.root, 1,
                X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
                "certificate 1 (CN=Other Intermediate): issuer not trusted (unknown CA)");
    expect_fail(P.leaf_other, P.other_int, P.other_root, P.root, 2,
                X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN,
                "certificate 2 (CN=Other Root): self-signed root not trusted");
    /* our leaf, but the anchor is another CA */
    expect_fail(P.leaf, P.inter, NULL, P.other_root, 1,
                X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
                "certificate 1 (CN=Test Intermediate): issuer not trusted (unknown CA)");
    expect_fail(P.self_leaf, NULL, NULL, P.root, 0, X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT,
                "certificate 0 (CN=dev-self): self-signed and not trusted");
    /* root pathlen 0 with two intermediates; intermediate pathlen 0 with a CA below */
    expect_fail(P.leaf_deep, P.int_b, P.int_a, P.root_pl0, 3, X509_V_ERR_PATH_LENGTH_EXCEEDED,
                "certificate 3 (CN=Root PL0): path length exceeded");
    expect_fail(P.leaf_sub, P.sub_int, P.inter, P.root, 2, X509_V_ERR_PATH_LENGTH_EXCEEDED,
                "certificate 2 (CN=Test Intermediate): path length exceeded");
    /* ... which passes when the intermediate above the constraint is the anchor */
    expect_ok(P.leaf_deep, P.int_b, NULL, P.int_a, 2);
    expect_fail(P.server_only, P.inter, NULL, P.root, 0, X509_V_ERR_INVALID_PURPOSE,
                "certificate 0 (CN=dev-server): unsuitable purpose: extended key usage lacks "
                "clientAuth");
    expect_fail(P.ku_nods, P.inter, NULL, P.root, 0, X509_V_ERR_INVALID_PURPOSE,
                "certificate 0 (CN=dev-keyenc): unsuitable key usage: lacks digitalSignature");
    expect_fail(P.badsig, P.inter, NULL, P.root, 0, X509_V_ERR_CERT_SIGNATURE_FAILURE,
                "certificate 0 (CN=dev-badsig): bad signature");
    expect_fail(P.badsig, NULL, NULL, P.inter, 0, X509_V_ERR_CERT_SIGNATURE_FAILURE,
                "bad signature");
}

/* A leaf under ca (which has no SKI), with or without an AKI key id (set by hand). */
static X509 *lax_leaf(X509 *ca, bool with_akid)
{
    X509 *leaf = X509_new();
    X509_NAME *n = make_name("CN=dev-lax");

    assert_non_null(leaf);
    X509_set_version(leaf, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(leaf), 60);
    ASN1_TIME_set(X509_getm_notBefore(leaf), utc(2030, 1, 1));
    ASN1_TIME_set(X509_getm_notAfter(leaf), utc(2031, 1, 1));
    X509_set_subject_name(leaf, n);
    X509_set_issuer_name(leaf, X509_get_subject_name(ca));
    X509_set_pubkey(leaf, P.leaf_key);
    add_ext(leaf, ca, NID_key_usage, LEAF_KU);
    if (with_akid) {
        AUTHORITY_KEYID *akid = AUTHORITY_KEYID_new();

        assert_non_null(akid);
        akid->keyid = ASN1_OCTET_STRING_new();
        assert_non_null(akid->keyid);
        assert_int_equal(ASN1_OCTET_STRING_set(akid->keyid, (const unsigned char *)"0123", 4),
                         1);
        assert_int_equal(X509_add1_ext_i2d(leaf, NID_authority_key_identifier, akid, 0, 0), 1);
        AUTHORITY_KEYID_free(akid);
    }
    assert_true(X509_sign(leaf, P.other_key, EVP_sha256()) > 0);
    X509_NAME_free(n);
    return leaf;
}

/*
 * X509_V_FLAG_X509_STRICT is off on purpose: a leaf without an authority key
 * identifier and a CA without a subject key identifier (common in certificates
 * made with openssl's defaults) still verify; basic constraints do not bend.
 */
static void test_chain_lenient_extensions(void **state)
{
    X509 *ca = X509_new(), *leaf;
    X509_NAME *n = make_name("CN=Lax CA");

    (void)state;
    assert_non_null(ca);
    X509_set_version(ca, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(ca), 59);
    ASN1_TIME_set(X509_getm_notBefore(ca), utc(2020, 1, 1));
    ASN1_TIME_set(X509_getm_notAfter(ca), utc(2040, 1, 1));
    X509_set_subject_name(ca, n);
    X509_set_issuer_name(ca, n);
    X509_set_pubkey(ca, P.other_key);
    add_ext(ca, ca, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(ca, ca, NID_key_usage, CA_KU);
    assert_true(X509_sign(ca, P.other_key, EVP_sha256()) > 0);
    leaf = lax_leaf(ca, false);
    expect_ok(leaf, NULL, NULL, ca, 1);
    X509_free(leaf);
    leaf = lax_leaf(ca, true);
    expect_ok(leaf, NULL, NULL, ca, 1);
    X509_free(leaf);
    X509_NAME_free(n);
    X509_free(ca);
}

static void test_check_validity(void **state)
{
    struct x509_verdict v;

    (void)state;
    assert_int_equal(x509_check_validity(P.leaf, NOW, &v), 0);
    assert_int_equal(v.depth, -1);
    assert_int_equal(v.error, 0);
    assert_int_equal(v.anchor_depth, 0);
    assert_int_equal(x509_check_validity(P.expired, NOW, &v), PROV_EAUTH);
    assert_int_equal(v.depth, 0);
    assert_int_equal(v.error, X509_V_ERR_CERT_HAS_EXPIRED);
    assert_string_equal(v.message, "certificate 0 (CN=dev-expired): expired at "
                                   "2030-01-01T00:00:00Z");
    assert_int_equal(x509_check_validity(P.future, NOW, &v), PROV_EAUTH);
    assert_int_equal(v.error, X509_V_ERR_CERT_NOT_YET_VALID);
    assert_string_equal(v.message, "certificate 0 (CN=dev-future): not yet valid until "
                                   "2030-07-01T00:00:00Z");
    /* a pinned certificate needs no chain: the self-signed leaf only has to be in date */
    assert_int_equal(x509_check_validity(P.self_leaf, NOW, &v), 0);
    assert_int_equal(x509_check_validity(P.leaf_now, 0, &v), 0);
    assert_int_equal(x509_check_validity(P.leaf, 0, &v), PROV_EAUTH);
    assert_int_equal(x509_check_validity(P.leaf, utc(2031, 1, 1), &v), PROV_EAUTH);
    assert_int_equal(x509_check_validity(NULL, NOW, &v), PROV_EINVAL);
    assert_no_openssl_errors();
}

/* ---- proof of possession ------------------------------------------------------------------ */

static void expect_pop_fail(X509 *ca, X509 *proof, const char *code, time_t now,
                            const char *phrase)
{
    const char *why = NULL;

    assert_int_equal(x509_verify_pop(ca, proof, code, now, &why), PROV_EAUTH);
    assert_non_null(why);
    if (strstr(why, phrase) == NULL)
        fail_msg("reason '%s' lacks '%s'", why, phrase);
    assert_no_openssl_errors();
}

static void test_pop(void **state)
{
    const char *why = "unset";

    (void)state;
    assert_int_equal(x509_verify_pop(P.root, P.proof, "A1b2C3d4E5", NOW, &why), 0);
    assert_null(why);
    assert_int_equal(x509_verify_pop(P.root, P.proof_now, "A1b2C3d4E5", 0, &why), 0);
    /* an intermediate CA can be proven too */
    assert_int_equal(x509_verify_pop(P.inter, P.proof_int, "A1b2C3d4E5", NOW, &why), 0);

    expect_pop_fail(P.root, P.proof, "a1b2c3d4e5", NOW, "subject CN is not the verification");
    expect_pop_fail(P.root, P.proof, "A1b2C3d4E", NOW, "subject CN is not the verification");
    expect_pop_fail(P.root, P.leaf, "A1b2C3d4E5", NOW, "subject CN is not the verification");
    expect_pop_fail(P.root, P.proof_forged, "A1b2C3d4E5", NOW, "not signed by the CA");
    expect_pop_fail(P.other_root, P.proof, "A1b2C3d4E5", NOW, "issuer is not the CA");
    expect_pop_fail(P.root, P.proof_int, "A1b2C3d4E5", NOW, "issuer is not the CA");
    expect_pop_fail(P.inter, P.proof, "A1b2C3d4E5", NOW, "issuer is not the CA");
    expect_pop_fail(P.root, P.proof_expired, "A1b2C3d4E5", NOW, "expired");
    expect_pop_fail(P.root, P.proof_future, "A1b2C3d4E5", NOW, "not yet valid");
    expect_pop_fail(P.root, P.proof, "A1b2C3d4E5", 0, "not yet valid");
    assert_int_equal(x509_verify_pop(P.root, P.proof, "", NOW, &why), PROV_EINVAL);
    assert_int_equal(x509_verify_pop(P.root, P.proof, NULL, NOW, &why), PROV_EINVAL);
    assert_int_equal(x509_verify_pop(NULL, P.proof, "A1b2C3d4E5", NOW, &why), PROV_EINVAL);
    assert_int_equal(x509_verify_pop(P.root, P.proof, "A1b2C3d4E5", NOW, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_pem_forms),
        cmocka_unit_test(test_parse_base64_der),
        cmocka_unit_test(test_parse_garbage),
        cmocka_unit_test(test_parse_private_keys_and_two_certs),
        cmocka_unit_test(test_parse_size_limit),
        cmocka_unit_test(test_parse_chain),
        cmocka_unit_test(test_to_pem_round_trip),
        cmocka_unit_test(test_error_queue_preserved),
        cmocka_unit_test(test_info_known_cert),
        cmocka_unit_test(test_info_name_forms),
        cmocka_unit_test(test_info_hostile_names),
        cmocka_unit_test(test_subject_cn),
        cmocka_unit_test(test_thumbprint_matching),
        cmocka_unit_test(test_is_ca),
        cmocka_unit_test(test_chain_good),
        cmocka_unit_test(test_chain_ex_returns_chain),
        cmocka_unit_test(test_chain_validity),
        cmocka_unit_test(test_chain_broken),
        cmocka_unit_test(test_chain_lenient_extensions),
        cmocka_unit_test(test_check_validity),
        cmocka_unit_test(test_pop),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
