#include "testpki.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "src/common/util.h"

EVP_PKEY *new_key(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");

    assert_non_null(k);
    return k;
}

void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509_EXTENSION *ext;

    X509V3_set_ctx(&ctx, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    assert_non_null(ext);
    assert_int_equal(X509_add_ext(x, ext, -1), 1);
    X509_EXTENSION_free(ext);
}

/*
 * A certificate for key with subject CN=cn, signed by issuer_key (issuer NULL:
 * self-signed), valid from `from` to `to` days from now, a CA or a leaf.
 */
X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, bool ca,
                       long from, long to)
{
    X509 *x = X509_new();
    X509_NAME *name;
    BIGNUM *bn;
    unsigned char serial[8];

    assert_non_null(x);
    assert_int_equal(X509_set_version(x, 2), 1);
    assert_int_equal(RAND_bytes(serial, sizeof(serial)), 1);
    serial[0] &= 0x7f;
    bn = BN_bin2bn(serial, sizeof(serial), NULL);
    assert_non_null(bn);
    assert_non_null(BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)));
    BN_free(bn);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), from * 86400L));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), to * 86400L));
    assert_int_equal(X509_set_pubkey(x, key), 1);
    name = X509_get_subject_name(x);
    assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                                (const unsigned char *)cn, -1, -1, 0), 1);
    assert_int_equal(X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer)
                                                             : name), 1);
    add_ext(x, issuer, NID_basic_constraints, ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
    add_ext(x, issuer, NID_key_usage, ca ? "critical,keyCertSign,cRLSign"
                                         : "critical,digitalSignature");
    add_ext(x, issuer, NID_subject_key_identifier, "hash");
    assert_true(X509_sign(x, issuer_key != NULL ? issuer_key : key, EVP_sha256()) > 0);
    return x;
}

/* PEM text of x; caller frees. */
char *pem_of(X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data, *out;
    long n;

    assert_non_null(b);
    assert_int_equal(PEM_write_bio_X509(b, x), 1);
    n = BIO_get_mem_data(b, &data);
    out = strndup(data, (size_t)n);
    assert_non_null(out);
    BIO_free(b);
    return out;
}

/* Bare base64 DER of x; caller frees. */
char *der_b64_of(X509 *x)
{
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    char *out;

    assert_true(n > 0);
    out = b64_encode_alloc(der, (size_t)n);
    assert_non_null(out);
    OPENSSL_free(der);
    return out;
}
