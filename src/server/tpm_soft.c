#include "tpm_soft.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rsa.h>

#include "../common/util.h"

#define SOFT_RSA_MAX 512 /* RSA up to 4096 bits */
#define SOFT_BLOB_MAX 2048

struct tpm2b {
    const uint8_t *p;
    size_t len;
};

/* SHA-256(a ‖ b). */
static int sha256_2(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen, uint8_t out[32])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned int n = 0;
    bool ok = md != NULL && EVP_DigestInit_ex(md, prov_md_sha256(), NULL) == 1 &&
              EVP_DigestUpdate(md, a, alen) == 1 && EVP_DigestUpdate(md, b, blen) == 1 &&
              EVP_DigestFinal_ex(md, out, &n) == 1 && n == 32;

    EVP_MD_CTX_free(md);
    return ok ? 0 : -1;
}

/* Reads one TPM2B at *off; false when it does not fit. */
static bool take(const uint8_t *buf, size_t len, size_t *off, struct tpm2b *out)
{
    size_t n;

    if (*off + 2 > len)
        return false;
    n = (size_t)buf[*off] << 8 | buf[*off + 1];
    if (*off + 2 + n > len)
        return false;
    out->p = buf + *off + 2;
    out->len = n;
    *off += 2 + n;
    return true;
}

/* The six elements of an activation blob (§5.2), covering it exactly. */
static bool split_blob(const uint8_t *blob, size_t len, struct tpm2b el[6])
{
    size_t off = 0;

    for (int i = 0; i < 6; i++) {
        if (!take(blob, len, &off, &el[i]))
            return false;
    }
    return off == len;
}

/* RSA-OAEP-SHA256 decryption; out holds SOFT_RSA_MAX (OpenSSL wants room for a whole block). */
static int oaep_decrypt(EVP_PKEY *key, const char *label, const struct tpm2b *in,
                        uint8_t out[SOFT_RSA_MAX])
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
    size_t lab_len = strlen(label) + 1; /* the label includes its NUL */
    void *lab = OPENSSL_memdup(label, lab_len);
    size_t outlen = SOFT_RSA_MAX;
    int r = -1;

    if (ctx != NULL && lab != NULL && EVP_PKEY_decrypt_init(ctx) == 1 &&
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) > 0 &&
        EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha256()) > 0 &&
        EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) > 0 &&
        EVP_PKEY_CTX_set0_rsa_oaep_label(ctx, lab, (int)lab_len) > 0) {
        lab = NULL; /* owned by ctx now */
        if (EVP_PKEY_decrypt(ctx, out, &outlen, in->p, in->len) == 1)
            r = (int)outlen;
    }
    OPENSSL_free(lab);
    EVP_PKEY_CTX_free(ctx);
    ERR_clear_error();
    return r;
}

static int cfb_decrypt(const uint8_t key[16], const uint8_t *in, size_t len, uint8_t *out)
{
    static const uint8_t iv[16];
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int n = 0, m = 0, ok;

    ok = c != NULL && EVP_DecryptInit_ex(c, EVP_aes_128_cfb128(), NULL, key, iv) == 1 &&
         EVP_DecryptUpdate(c, out, &n, in, (int)len) == 1 &&
         EVP_DecryptFinal_ex(c, out + n, &m) == 1 && (size_t)(n + m) == len;
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : -1;
}

/* HMAC-SHA256(key, a ‖ b) == mac, in constant time. */
static bool hmac_ok(const uint8_t *key, size_t klen, const uint8_t *a, size_t alen,
                    const uint8_t *b, size_t blen, const struct tpm2b *mac)
{
    uint8_t got[32];
    EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *c = m ? EVP_MAC_CTX_new(m) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
                           OSSL_PARAM_construct_end()};
    size_t n = 0;
    bool ok;

    ok = c != NULL && EVP_MAC_init(c, key, klen, params) == 1 && EVP_MAC_update(c, a, alen) == 1 &&
         EVP_MAC_update(c, b, blen) == 1 && EVP_MAC_final(c, got, &n, sizeof(got)) == 1 &&
         n == 32 && mac->len == 32 && ct_equal(got, mac->p, 32);
    EVP_MAC_CTX_free(c);
    EVP_MAC_free(m);
    return ok;
}

/* ActivateCredential: the 16-byte inner wrapper key from elements #1 and #2. */
static int activate(EVP_PKEY *ek, const uint8_t srk_name[TPM_NAME_SIZE], const struct tpm2b el[6],
                    uint8_t inner[16])
{
    uint8_t seed[SOFT_RSA_MAX], sym[16], hkey[32], plain[64];
    struct tpm2b integrity, enc, cred;
    size_t off = 0;
    int n, rc = -1;

    if (!take(el[0].p, el[0].len, &off, &integrity))
        return -1;
    enc.p = el[0].p + off;
    enc.len = el[0].len - off;
    n = oaep_decrypt(ek, "IDENTITY", &el[1], seed);
    if (n != 32 || enc.len > sizeof(plain) ||
        tpm_kdfa(seed, 32, "STORAGE", srk_name, TPM_NAME_SIZE, NULL, 0, 128, sym) != 0 ||
        tpm_kdfa(seed, 32, "INTEGRITY", NULL, 0, NULL, 0, 256, hkey) != 0 ||
        !hmac_ok(hkey, 32, enc.p, enc.len, srk_name, TPM_NAME_SIZE, &integrity) ||
        cfb_decrypt(sym, enc.p, enc.len, plain) != 0)
        goto out;
    off = 0;
    if (!take(plain, enc.len, &off, &cred) || cred.len != 16)
        goto out;
    memcpy(inner, cred.p, 16);
    rc = 0;
out:
    prov_cleanse(seed, sizeof(seed));
    prov_cleanse(sym, sizeof(sym));
    prov_cleanse(hkey, sizeof(hkey));
    prov_cleanse(plain, sizeof(plain));
    return rc;
}

/* Import: the HMAC key K from elements #3, #4 and #5, unwrapped with inner. */
static int import(EVP_PKEY *srk, const struct tpm2b el[6], const uint8_t inner[16], uint8_t key[32])
{
    uint8_t seed[SOFT_RSA_MAX], sym[16], hkey[32], name[TPM_NAME_SIZE], digest[32];
    uint8_t outer[512], plain[512];
    struct tpm2b hmac, dup, innerint, sens, auth, obf, k;
    size_t off = 0, soff;
    int n, rc = -1;

    if (!take(el[2].p, el[2].len, &off, &hmac))
        return -1;
    dup.p = el[2].p + off;
    dup.len = el[2].len - off;
    n = oaep_decrypt(srk, "DUPLICATE", &el[3], seed);
    if (n != 32 || dup.len > sizeof(outer) || tpm_name(el[4].p, el[4].len, name) != 0 ||
        tpm_kdfa(seed, 32, "STORAGE", name, sizeof(name), NULL, 0, 128, sym) != 0 ||
        tpm_kdfa(seed, 32, "INTEGRITY", NULL, 0, NULL, 0, 256, hkey) != 0 ||
        !hmac_ok(hkey, 32, dup.p, dup.len, name, sizeof(name), &hmac) ||
        cfb_decrypt(sym, dup.p, dup.len, outer) != 0 ||
        cfb_decrypt(inner, outer, dup.len, plain) != 0)
        goto out;
    /* TPM2B(innerIntegrity) ‖ TPM2B_SENSITIVE, innerIntegrity = H(sensitive ‖ Name) */
    off = 0;
    if (!take(plain, dup.len, &off, &innerint) || innerint.len != 32)
        goto out;
    soff = off;
    if (!take(plain, dup.len, &off, &sens) || off != dup.len)
        goto out;
    if (sha256_2(plain + soff, dup.len - soff, name, sizeof(name), digest) != 0 ||
        !ct_equal(digest, innerint.p, 32))
        goto out;
    /* sensitiveType (KEYEDHASH), authValue, seedValue, sensitive = K */
    off = 2;
    if (sens.len < 2 || sens.p[0] != 0x00 || sens.p[1] != 0x08 ||
        !take(sens.p, sens.len, &off, &auth) || !take(sens.p, sens.len, &off, &obf) ||
        !take(sens.p, sens.len, &off, &k) || k.len != 32 || obf.len != 32)
        goto out;
    /* the public area ends with TPM2B(unique), unique = H(seedValue ‖ K) */
    if (el[4].len < 34 || el[4].p[el[4].len - 34] != 0x00 || el[4].p[el[4].len - 33] != 32 ||
        sha256_2(obf.p, 32, k.p, 32, digest) != 0 ||
        !ct_equal(digest, el[4].p + el[4].len - 32, 32))
        goto out;
    memcpy(key, k.p, 32);
    rc = 0;
out:
    prov_cleanse(seed, sizeof(seed));
    prov_cleanse(sym, sizeof(sym));
    prov_cleanse(hkey, sizeof(hkey));
    prov_cleanse(outer, sizeof(outer));
    prov_cleanse(plain, sizeof(plain));
    return rc;
}

/* Decodes a base64 blob into buf (cap bytes) and splits it; its length, or -1. */
static int decode_blob(const char *b64, uint8_t *buf, size_t cap, struct tpm2b el[6])
{
    size_t len = b64 ? strlen(b64) : 0;
    int n;

    if (len == 0 || b64_decoded_max(len) > cap)
        return -1;
    n = b64_decode(b64, len, buf);
    if (n <= 0 || !split_blob(buf, (size_t)n, el))
        return -1;
    return n;
}

int tpm_soft_open(EVP_PKEY *ek, EVP_PKEY *srk, const uint8_t srk_name[TPM_NAME_SIZE],
                  const char *blob_b64, uint8_t key[32])
{
    uint8_t buf[SOFT_BLOB_MAX], inner[16];
    struct tpm2b el[6];
    int rc = -1;

    if (decode_blob(blob_b64, buf, sizeof(buf), el) >= 0 &&
        activate(ek, srk_name, el, inner) == 0 && import(srk, el, inner, key) == 0)
        rc = 0;
    prov_cleanse(inner, sizeof(inner));
    return rc;
}

bool tpm_soft_blob_well_formed(const char *blob_b64)
{
    uint8_t buf[SOFT_BLOB_MAX];
    struct tpm2b el[6];

    return decode_blob(blob_b64, buf, sizeof(buf), el) >= 0;
}
