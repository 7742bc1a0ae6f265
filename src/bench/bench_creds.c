/*
 * prov-bench device credentials:
 *  - symmetric key: one key for every device (--key), or per-device keys
 *    derived from a group key (--group-key) exactly as DPS derives them;
 *  - X.509: an EC P-256 leaf per device (CN = registration id, clientAuth)
 *    under an intermediate that is either generated under a given CA
 *    (--x509-ca-cert/--x509-ca-key) or given (--x509-int-cert/--x509-int-key);
 *    a credentials file (--x509-creds) keeps them between the enroll
 *    subcommand, which pins each leaf in an individual enrollment, and runs;
 *  - TPM: see bench_tpm.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "../common/errors.h"
#include "../common/sas.h"
#include "../common/util.h"
#include "bench.h"

#define LEAF_DAYS 30
#define SAS_LIFETIME 3600

void bench_rid(const struct bench_opts *o, unsigned long i, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s%lu", o->prefix, o->first + i * o->stride);
}

/* ---- symmetric keys ---- */

int creds_symkey(const struct bench_creds *c, const char *rid, unsigned char *out)
{
    if (c->group_key != NULL)
        return derive_device_key_raw(c->group_key, c->group_key_len, rid, out) == 0 ? 32 : -1;
    if (c->key_b64 != NULL) {
        size_t len = strlen(c->key_b64);
        int n;

        if (b64_decoded_max(len) > 64)
            return -1;
        n = b64_decode(c->key_b64, len, out);
        return n > 0 ? n : -1;
    }
    return -1;
}

char *creds_sas(const struct bench_creds *c, const struct bench_opts *o, const char *rid,
                const unsigned char *key, size_t keylen)
{
    char resource[PROV_MAX_SCOPE + PROV_MAX_REG_ID + 32];
    unsigned char k[64];
    char kb64[90];
    char *tok;
    int n = (int)keylen;

    if (key == NULL) {
        if ((n = creds_symkey(c, rid, k)) < 0)
            return NULL;
        key = k;
    }
    if ((size_t)n > sizeof(k))
        return NULL;
    b64_encode(key, (size_t)n, kb64);
    snprintf(resource, sizeof(resource), "%s/registrations/%s", o->scope, rid);
    tok = sas_build(resource, kb64, "registration", (long long)time(NULL) + SAS_LIFETIME);
    prov_cleanse(k, sizeof(k));
    prov_cleanse(kb64, sizeof(kb64));
    return tok;
}

/* ---- X.509 ---- */

EVP_PKEY *x509_gen_key(void)
{
    return EVP_EC_gen("P-256");
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509_EXTENSION *e;
    int ok;

    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    e = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value);
    if (e == NULL)
        return -1;
    ok = X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    return ok == 1 ? 0 : -1;
}

/* A certificate for key, issued by (issuer, issuer_key); issuer NULL = self-issued. */
static X509 *make_cert(X509 *issuer, EVP_PKEY *issuer_key, EVP_PKEY *key, const char *cn, bool ca)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    BIGNUM *serial = BN_new();
    bool ok;

    ok = x != NULL && name != NULL && serial != NULL && X509_set_version(x, X509_VERSION_3) == 1 &&
         BN_rand(serial, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) == 1 &&
         BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) != NULL &&
         X509_gmtime_adj(X509_getm_notBefore(x), -3600) != NULL &&
         X509_gmtime_adj(X509_getm_notAfter(x), (long)LEAF_DAYS * 86400) != NULL &&
         X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
                                    0) == 1 &&
         X509_set_subject_name(x, name) == 1 &&
         X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name) == 1 &&
         X509_set_pubkey(x, key) == 1;
    if (ok && ca)
        ok = add_ext(x, issuer, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") == 0 &&
             add_ext(x, issuer, NID_key_usage, "critical,keyCertSign,cRLSign") == 0;
    else if (ok)
        ok = add_ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE") == 0 &&
             add_ext(x, issuer, NID_key_usage, "critical,digitalSignature") == 0 &&
             add_ext(x, issuer, NID_ext_key_usage, "clientAuth") == 0;
    ok =
        ok && add_ext(x, issuer, NID_subject_key_identifier, "hash") == 0 &&
        (issuer == NULL || add_ext(x, issuer, NID_authority_key_identifier, "keyid:always") == 0) &&
        X509_sign(x, issuer_key, EVP_sha256()) > 0;
    BN_free(serial);
    X509_NAME_free(name);
    if (!ok) {
        X509_free(x);
        ERR_clear_error();
        return NULL;
    }
    return x;
}

X509 *x509_make_intermediate(X509 *ca, EVP_PKEY *cakey, EVP_PKEY *key)
{
    return make_cert(ca, cakey, key, "prov-bench intermediate", true);
}

X509 *x509_make_leaf(X509 *issuer, EVP_PKEY *issuer_key, EVP_PKEY *key, const char *cn)
{
    return make_cert(issuer, issuer_key, key, cn, false);
}

char *x509_pem(X509 *cert)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data, *out = NULL;
    long n;

    if (b == NULL)
        return NULL;
    if (PEM_write_bio_X509(b, cert) == 1 && (n = BIO_get_mem_data(b, &data)) > 0 &&
        (out = malloc((size_t)n + 1)) != NULL) {
        memcpy(out, data, (size_t)n);
        out[n] = '\0';
    }
    BIO_free(b);
    return out;
}

static X509 *read_cert(const char *path)
{
    FILE *f = fopen(path, "r");
    X509 *x;

    if (f == NULL)
        return NULL;
    x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    return x;
}

static EVP_PKEY *read_key(const char *path)
{
    FILE *f = fopen(path, "r");
    EVP_PKEY *k;

    if (f == NULL)
        return NULL;
    k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    return k;
}

static bool cn_is(X509 *x, const char *want)
{
    char cn[PROV_MAX_REG_ID + 2];
    int n = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));

    return n > 0 && strcmp(cn, want) == 0;
}

/* The credentials file: the intermediate, then per device its leaf and key (PEM). */
static int load_x509(struct bench_creds *c, const struct bench_opts *o, FILE *f, char *err,
                     size_t errlen)
{
    char rid[PROV_MAX_REG_ID + 1];

    c->intermediate = PEM_read_X509(f, NULL, NULL, NULL);
    if (c->intermediate == NULL) {
        snprintf(err, errlen, "--x509-creds %s: no intermediate certificate", o->x509_creds);
        return -1;
    }
    for (unsigned long i = 0; i < c->count; i++) {
        struct x509_cred *xc = &c->x509[i];

        bench_rid(o, i, rid, sizeof(rid));
        xc->leaf = PEM_read_X509(f, NULL, NULL, NULL);
        xc->key = xc->leaf ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
        if (xc->key == NULL) {
            snprintf(err, errlen, "--x509-creds %s: holds fewer than %lu devices", o->x509_creds,
                     c->count);
            return -1;
        }
        if (!cn_is(xc->leaf, rid)) {
            snprintf(err, errlen,
                     "--x509-creds %s: device %lu is not %s (made for other "
                     "--prefix/--first/--stride?)",
                     o->x509_creds, i, rid);
            return -1;
        }
    }
    return 0;
}

static int make_x509(struct bench_creds *c, const struct bench_opts *o, char *err, size_t errlen)
{
    EVP_PKEY *ikey = NULL;
    char rid[PROV_MAX_REG_ID + 1];
    int rc = -1;

    if (o->x509_int_cert != NULL) {
        c->intermediate = read_cert(o->x509_int_cert);
        ikey = read_key(o->x509_int_key);
        if (c->intermediate == NULL || ikey == NULL) {
            snprintf(err, errlen, "--x509-int-cert/--x509-int-key: cannot read them");
            goto out;
        }
    } else {
        X509 *ca = read_cert(o->x509_ca_cert);
        EVP_PKEY *cakey = read_key(o->x509_ca_key);

        ikey = x509_gen_key();
        if (ca != NULL && cakey != NULL && ikey != NULL)
            c->intermediate = x509_make_intermediate(ca, cakey, ikey);
        X509_free(ca);
        EVP_PKEY_free(cakey);
        if (c->intermediate == NULL) {
            snprintf(err, errlen, "--x509-ca-cert/--x509-ca-key: cannot issue an intermediate");
            goto out;
        }
    }
    for (unsigned long i = 0; i < c->count; i++) {
        struct x509_cred *xc = &c->x509[i];

        bench_rid(o, i, rid, sizeof(rid));
        xc->key = x509_gen_key();
        xc->leaf = xc->key ? x509_make_leaf(c->intermediate, ikey, xc->key, rid) : NULL;
        if (xc->leaf == NULL) {
            snprintf(err, errlen, "cannot make the certificate of %s", rid);
            goto out;
        }
    }
    rc = 0;
out:
    EVP_PKEY_free(ikey);
    ERR_clear_error();
    return rc;
}

FILE *creds_file_open(const char *path, char *tmp, size_t tmplen, char *err, size_t errlen)
{
    int fd;
    FILE *f = NULL;

    snprintf(tmp, tmplen, "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || (f = fdopen(fd, "w")) == NULL) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
    }
    return f;
}

int creds_file_close(FILE *f, bool ok, const char *tmp, const char *path, const char *what,
                     char *err, size_t errlen)
{
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: cannot write the %s", path, what);
        unlink(tmp);
        return -1;
    }
    return 0;
}

int creds_save_x509(const struct bench_creds *c, const char *path, char *err, size_t errlen)
{
    char tmp[4096];
    FILE *f = creds_file_open(path, tmp, sizeof(tmp), err, errlen);
    bool ok;

    if (f == NULL)
        return -1;
    ok = PEM_write_X509(f, c->intermediate) == 1;
    for (unsigned long i = 0; ok && i < c->count; i++)
        ok = PEM_write_X509(f, c->x509[i].leaf) == 1 &&
             PEM_write_PrivateKey(f, c->x509[i].key, NULL, NULL, 0, NULL, NULL) == 1;
    return creds_file_close(f, ok, tmp, path, "credentials", err, errlen);
}

static int init_x509(struct bench_creds *c, const struct bench_opts *o, char *err, size_t errlen)
{
    FILE *f = o->x509_creds ? fopen(o->x509_creds, "r") : NULL;
    int rc;

    c->x509 = calloc(c->count, sizeof(*c->x509));
    if (c->x509 == NULL) {
        if (f != NULL)
            fclose(f);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (f != NULL) {
        rc = load_x509(c, o, f, err, errlen);
        fclose(f);
        ERR_clear_error();
        return rc;
    }
    if (o->x509_ca_cert == NULL && o->x509_int_cert == NULL) {
        snprintf(err, errlen,
                 "X.509 needs --x509-creds FILE (existing), --x509-ca-cert and "
                 "--x509-ca-key, or --x509-int-cert and --x509-int-key");
        return -1;
    }
    if (make_x509(c, o, err, errlen) != 0)
        return -1;
    if (o->x509_creds != NULL)
        return creds_save_x509(c, o->x509_creds, err, errlen);
    return 0;
}

int creds_init(struct bench_creds *c, const struct bench_opts *o, char *err, size_t errlen)
{
    memset(c, 0, sizeof(*c));
    c->att = o->att;
    c->count = o->count;
    switch (o->att) {
    case ATT_SYMKEY:
        if (o->group_key_b64 != NULL) {
            size_t len = strlen(o->group_key_b64);
            int n;

            c->group_key = malloc(b64_decoded_max(len) + 1);
            n = c->group_key ? b64_decode(o->group_key_b64, len, c->group_key) : -1;
            if (n <= 0) {
                snprintf(err, errlen, "--group-key is not base64");
                return -1;
            }
            c->group_key_len = (size_t)n;
        } else if (o->key_b64 != NULL) {
            unsigned char k[64];

            if (creds_symkey(&(struct bench_creds){.key_b64 = o->key_b64}, "", k) < 0) {
                snprintf(err, errlen, "--key is not base64 of at most 64 bytes");
                return -1;
            }
            prov_cleanse(k, sizeof(k));
            c->key_b64 = o->key_b64;
        } else {
            snprintf(err, errlen, "symmetric key needs --key or --group-key");
            return -1;
        }
        return 0;
    case ATT_X509: return init_x509(c, o, err, errlen);
    case ATT_TPM: return tpm_creds_init(c, o, err, errlen);
    }
    return -1;
}

void creds_free(struct bench_creds *c)
{
    if (c->group_key != NULL)
        prov_freezero(c->group_key, c->group_key_len);
    for (unsigned long i = 0; c->x509 != NULL && i < c->count; i++) {
        X509_free(c->x509[i].leaf);
        EVP_PKEY_free(c->x509[i].key);
    }
    free(c->x509);
    X509_free(c->intermediate);
    tpm_creds_free(c);
    memset(c, 0, sizeof(*c));
}
