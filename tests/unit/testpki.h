/*
 * Test certificates made at test time with OpenSSL (nothing is read from
 * disk), shared by the unit tests that need a small PKI. Failures assert.
 */
#ifndef PROV_TESTS_UNIT_TESTPKI_H
#define PROV_TESTS_UNIT_TESTPKI_H

#include <stdbool.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

/* A new EC P-256 key. */
EVP_PKEY *new_key(void);

/* Adds extension nid=value to x, issued by issuer (NULL: x itself). */
void add_ext(X509 *x, X509 *issuer, int nid, const char *value);

/*
 * A certificate for key with subject CN=cn, signed by issuer_key (issuer NULL:
 * self-signed), valid from `from` to `to` days from now, a CA or a leaf.
 */
X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, bool ca,
                long from, long to);

/* PEM text of x; caller frees with free(). */
char *pem_of(X509 *x);

/* Bare base64 DER of x; caller frees with free(). */
char *der_b64_of(X509 *x);

#endif
