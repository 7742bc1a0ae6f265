/*
 * TPM 2.0 activation blob, built in software (device-protocol reference §5.4):
 * TPM2_MakeCredential to the EK and TPM2_Duplicate under the SRK, as a TPM
 * would compute them, with OpenSSL 3 EVP for the cryptography (RSA-OAEP,
 * HMAC, SHA-256, AES-128-CFB) and tss2-mu for every TPM structure that has a
 * marshaller. This is the only file that includes tss2 headers.
 *
 * Every secret intermediate (inner key, seeds, derived keys, the sensitive
 * area holding K and its inner-wrapped form) lives in one struct on the stack,
 * wiped as a whole before returning. Every public function leaves the OpenSSL
 * error queue as it found it.
 */
#include "tpm_blob.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_tpm2_types.h>

#include "../common/errors.h"

#define SHA256_LEN 32
/* seeds are the size of the nameAlg digest of the key they are encrypted to */
#define SEED_LEN SHA256_LEN
#define RSA2048_BYTES 256
#define PARENT_SYM_BITS 128
/* sign | noDA | userWithAuth = 0x00040440, as TSS.MSR's DrsServer sample */
#define HMAC_KEY_ATTRIBUTES \
    (TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_NODA | TPMA_OBJECT_USERWITHAUTH)
/* The whole decoded blob: 798 bytes for RSA-2048 keys. */
#define BLOB_MAX 2048

/* OAEP labels include their terminating NUL (TPM 2.0 Part 1, 11.4.2 and 23.3.2.2). */
static const char label_identity[] = "IDENTITY";
static const char label_duplicate[] = "DUPLICATE";

_Static_assert(TPM_PUBLIC_AREA_MAX <= UINT16_MAX, "area size fits a TPM2B size");
_Static_assert(TPM_RSA_MAX_BYTES == TPM2_MAX_RSA_KEY_BYTES, "modulus buffer matches tss2");
_Static_assert(HMAC_KEY_ATTRIBUTES == 0x00040440, "HMAC key attributes of §5.4");

struct part {
    const void *p;
    size_t len;
};

/* ---- hashes, HMAC, KDFa, AES-CFB, RSA-OAEP ------------------------------------------- */

static int sha256_parts(const struct part *parts, size_t n, uint8_t out[SHA256_LEN])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int outlen = 0;
    int r = PROV_ECRYPTO;

    if (ctx == NULL)
        return PROV_ENOMEM;
    if (EVP_DigestInit_ex2(ctx, EVP_sha256(), NULL) != 1)
        goto out;
    for (size_t i = 0; i < n; i++) {
        if (parts[i].len > 0 && EVP_DigestUpdate(ctx, parts[i].p, parts[i].len) != 1)
            goto out;
    }
    if (EVP_DigestFinal_ex(ctx, out, &outlen) != 1 || outlen != SHA256_LEN)
        goto out;
    r = 0;
out:
    EVP_MD_CTX_free(ctx);
    return r;
}

static int hmac_sha256_parts(const uint8_t *key, size_t key_len, const struct part *parts,
                             size_t n, uint8_t out[SHA256_LEN])
{
    EVP_MAC *mac = NULL;
    EVP_MAC_CTX *ctx = NULL;
    OSSL_PARAM params[2];
    char digest[] = "SHA256";
    size_t outlen = 0;
    int r = PROV_ECRYPTO;

    /* an empty key would mean "keep the previous key" to EVP_MAC_init */
    if (key == NULL || key_len == 0)
        return PROV_EINVAL;
    if ((mac = EVP_MAC_fetch(NULL, "HMAC", NULL)) == NULL)
        goto out;
    if ((ctx = EVP_MAC_CTX_new(mac)) == NULL)
        goto out;
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
    params[1] = OSSL_PARAM_construct_end();
    if (EVP_MAC_init(ctx, key, key_len, params) != 1)
        goto out;
    for (size_t i = 0; i < n; i++) {
        if (parts[i].len > 0 && EVP_MAC_update(ctx, parts[i].p, parts[i].len) != 1)
            goto out;
    }
    if (EVP_MAC_final(ctx, out, &outlen, SHA256_LEN) != 1 || outlen != SHA256_LEN)
        goto out;
    r = 0;
out:
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    return r;
}

static void put_u32(uint8_t b[4], uint32_t v)
{
    b[0] = (uint8_t)(v >> 24);
    b[1] = (uint8_t)(v >> 16);
    b[2] = (uint8_t)(v >> 8);
    b[3] = (uint8_t)v;
}

static int kdfa(const uint8_t *key, size_t key_len, const char *label, const uint8_t *u,
                size_t u_len, const uint8_t *v, size_t v_len, size_t bits, uint8_t *out)
{
    uint8_t counter[4], bits_be[4], block[SHA256_LEN];
    size_t want, done = 0;
    int r = 0;

    if (key == NULL || key_len == 0 || label == NULL || out == NULL || bits == 0 ||
        bits % 8 != 0 || bits > 8192 || (u == NULL && u_len > 0) || (v == NULL && v_len > 0))
        return PROV_EINVAL;
    want = bits / 8;
    put_u32(bits_be, (uint32_t)bits);
    for (uint32_t i = 1; done < want; i++) {
        struct part parts[] = {
            {counter, sizeof(counter)}, {label, strlen(label) + 1}, {u, u_len}, {v, v_len},
            {bits_be, sizeof(bits_be)},
        };
        size_t take = want - done < SHA256_LEN ? want - done : SHA256_LEN;

        put_u32(counter, i);
        if ((r = hmac_sha256_parts(key, key_len, parts, sizeof(parts) / sizeof(parts[0]),
                                   block)) != 0)
            break;
        memcpy(out + done, block, take);
        done += take;
    }
    prov_cleanse(block, sizeof(block));
    if (r != 0)
        prov_cleanse(out, want);
    return r;
}

int tpm_kdfa(const uint8_t *key, size_t key_len, const char *label, const uint8_t *u,
             size_t u_len, const uint8_t *v, size_t v_len, size_t bits, uint8_t *out)
{
    int r;

    ERR_set_mark();
    r = kdfa(key, key_len, label, u, u_len, v, v_len, bits, out);
    ERR_pop_to_mark();
    return r;
}

/* AES-128-CFB128 with an all-zero IV (the TPM's "CFB" for these wrappers). */
static int cfb_encrypt(const uint8_t key[16], const uint8_t *in, size_t len, uint8_t *out)
{
    static const uint8_t zero_iv[16];
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n1 = 0, n2 = 0;
    int r = PROV_ECRYPTO;

    if (ctx == NULL)
        return PROV_ENOMEM;
    if (len > INT32_MAX)
        goto out;
    if (EVP_EncryptInit_ex2(ctx, EVP_aes_128_cfb128(), key, zero_iv, NULL) != 1)
        goto out;
    if (EVP_EncryptUpdate(ctx, out, &n1, in, (int)len) != 1)
        goto out;
    if (EVP_EncryptFinal_ex(ctx, out + n1, &n2) != 1 || (size_t)n1 + (size_t)n2 != len)
        goto out;
    r = 0;
out:
    EVP_CIPHER_CTX_free(ctx);
    return r;
}

/* The public RSA key of a parsed parent as an EVP_PKEY (caller frees). */
static int rsa_pkey(const struct tpm_public *key, EVP_PKEY **out)
{
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    BIGNUM *n = NULL, *e = NULL;
    int r = PROV_ECRYPTO;

    *out = NULL;
    if ((n = BN_bin2bn(key->modulus, (int)key->modulus_len, NULL)) == NULL ||
        (e = BN_new()) == NULL || BN_set_word(e, key->exponent) != 1)
        goto out;
    if ((bld = OSSL_PARAM_BLD_new()) == NULL ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) != 1 ||
        (params = OSSL_PARAM_BLD_to_param(bld)) == NULL)
        goto out;
    if ((ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) == NULL ||
        EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, out, EVP_PKEY_PUBLIC_KEY, params) != 1)
        goto out;
    r = 0;
out:
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    return r;
}

/*
 * RSAES-OAEP with SHA-256 (hash and MGF1) and label (its NUL included) to key;
 * out holds RSA2048_BYTES.
 */
static int oaep_encrypt(const struct tpm_public *key, const char *label, const uint8_t *in,
                        size_t in_len, uint8_t out[RSA2048_BYTES])
{
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    void *lab = NULL;
    size_t lab_len = strlen(label) + 1;
    size_t outlen = RSA2048_BYTES;
    int r;

    if ((r = rsa_pkey(key, &pkey)) != 0)
        return r;
    r = PROV_ECRYPTO;
    if ((ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL)) == NULL ||
        EVP_PKEY_encrypt_init(ctx) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) <= 0 ||
        EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha256()) <= 0 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) <= 0)
        goto out;
    if ((lab = OPENSSL_memdup(label, lab_len)) == NULL)
        goto out;
    if (EVP_PKEY_CTX_set0_rsa_oaep_label(ctx, lab, (int)lab_len) <= 0)
        goto out;
    lab = NULL; /* owned by ctx */
    if (EVP_PKEY_encrypt(ctx, out, &outlen, in, in_len) != 1 || outlen != RSA2048_BYTES)
        goto out;
    r = 0;
out:
    OPENSSL_free(lab);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    return r;
}

/* ---- public areas -------------------------------------------------------------------- */

int tpm_name(const uint8_t *area, size_t len, uint8_t out[TPM_NAME_SIZE])
{
    struct part part = {area, len};
    int r;

    if (area == NULL || out == NULL)
        return PROV_EINVAL;
    ERR_set_mark();
    out[0] = (uint8_t)(TPM2_ALG_SHA256 >> 8);
    out[1] = (uint8_t)TPM2_ALG_SHA256;
    r = sha256_parts(&part, 1, out + 2);
    ERR_pop_to_mark();
    return r;
}

/* The symmetric definition of a public area (TPM2_ALG_NULL when it has none). */
static void public_symmetric(const TPMT_PUBLIC *p, struct tpm_public *out)
{
    const TPMT_SYM_DEF_OBJECT *sym = NULL;

    out->sym_alg = TPM2_ALG_NULL;
    out->sym_bits = 0;
    out->sym_mode = 0;
    if (p->type == TPM2_ALG_RSA)
        sym = &p->parameters.rsaDetail.symmetric;
    else if (p->type == TPM2_ALG_ECC)
        sym = &p->parameters.eccDetail.symmetric;
    else if (p->type == TPM2_ALG_SYMCIPHER)
        sym = &p->parameters.symDetail.sym;
    if (sym == NULL || sym->algorithm == TPM2_ALG_NULL)
        return;
    out->sym_alg = sym->algorithm;
    /* keyBits and mode are unions whose members are all one TPM_KEY_BITS / TPM_ALG_ID */
    out->sym_bits = sym->keyBits.sym;
    out->sym_mode = sym->mode.sym;
}

/* The checks of TPM_PUBLIC_PARENT on an unmarshalled area; NULL when it passes. */
static const char *parent_refusal(const TPMT_PUBLIC *p)
{
    const TPMS_RSA_PARMS *rsa = &p->parameters.rsaDetail;
    const TPMA_OBJECT storage = TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;

    if (p->type != TPM2_ALG_RSA)
        return "not an RSA key";
    if (rsa->keyBits != 2048)
        return "not an RSA 2048 key";
    if (p->unique.rsa.size != RSA2048_BYTES || (p->unique.rsa.buffer[0] & 0x80) == 0)
        return "RSA modulus is not 2048 bits";
    if ((p->objectAttributes & storage) != storage ||
        (p->objectAttributes & TPMA_OBJECT_SIGN_ENCRYPT) != 0)
        return "not a restricted decryption key";
    if (rsa->symmetric.algorithm != TPM2_ALG_AES || rsa->symmetric.keyBits.aes != 128 ||
        rsa->symmetric.mode.aes != TPM2_ALG_CFB)
        return "symmetric algorithm is not AES-128-CFB";
    if (rsa->scheme.scheme != TPM2_ALG_NULL)
        return "RSA scheme is not NULL";
    if (rsa->exponent != 0 && (rsa->exponent % 2 == 0 || rsa->exponent < 3))
        return "invalid RSA exponent";
    return NULL;
}

int tpm_public_parse(const uint8_t *tpm2b, size_t len, enum tpm_public_role role,
                     struct tpm_public *out, const char **why)
{
    TPMT_PUBLIC pub;
    const TPMT_PUBLIC *p = &pub;
    const char *reason = NULL;
    size_t off = 0;
    size_t size;
    int r;

    if (why != NULL)
        *why = NULL;
    if (tpm2b == NULL || out == NULL || (role != TPM_PUBLIC_ANY && role != TPM_PUBLIC_PARENT))
        return PROV_EINVAL;
    if (len < 2) {
        reason = "truncated TPM2B_PUBLIC";
        goto refuse;
    }
    size = ((size_t)tpm2b[0] << 8) | tpm2b[1];
    if (size + 2 > len) {
        reason = "truncated TPM2B_PUBLIC";
        goto refuse;
    }
    if (size + 2 < len) {
        reason = "trailing bytes after TPM2B_PUBLIC";
        goto refuse;
    }
    if (size == 0 || size > TPM_PUBLIC_AREA_MAX) {
        reason = "public area size out of range";
        goto refuse;
    }
    /*
     * The TPMT_PUBLIC is unmarshalled over exactly the bytes the size field
     * covers: Tss2_MU_TPM2B_PUBLIC_Unmarshal before tpm2-tss 4.2.0 (Debian 12
     * has 3.2.1) ignores the result of its inner TPMT_PUBLIC unmarshal, so a
     * truncated area "succeeds", and bounds it by the whole buffer rather
     * than by the size field.
     */
    memset(&pub, 0, sizeof(pub));
    if (Tss2_MU_TPMT_PUBLIC_Unmarshal(tpm2b + 2, size, &off, &pub) != TSS2_RC_SUCCESS) {
        reason = "malformed TPMT_PUBLIC";
        goto refuse;
    }
    if (off != size) {
        reason = "TPMT_PUBLIC does not fill its TPM2B";
        goto refuse;
    }
    if (p->nameAlg != TPM2_ALG_SHA256) {
        reason = "nameAlg is not SHA-256";
        goto refuse;
    }
    if (role == TPM_PUBLIC_PARENT && (reason = parent_refusal(p)) != NULL)
        goto refuse;

    memset(out, 0, sizeof(*out));
    out->type = p->type;
    out->name_alg = p->nameAlg;
    out->attributes = p->objectAttributes;
    public_symmetric(p, out);
    if (role == TPM_PUBLIC_PARENT) {
        out->key_bits = p->parameters.rsaDetail.keyBits;
        out->exponent = p->parameters.rsaDetail.exponent ? p->parameters.rsaDetail.exponent
                                                         : 65537;
        out->modulus_len = p->unique.rsa.size;
        memcpy(out->modulus, p->unique.rsa.buffer, p->unique.rsa.size);
    }
    /* Name over the bytes as received, never over a re-marshalled copy */
    out->area_len = size;
    memcpy(out->area, tpm2b + 2, size);
    if ((r = tpm_name(out->area, out->area_len, out->name)) != 0)
        return r;
    return 0;
refuse:
    if (why != NULL)
        *why = reason;
    return PROV_EPROTO;
}

/* ---- the blob ------------------------------------------------------------------------ */

/* Everything secret while a blob is built; wiped as a whole. */
struct blob_secrets {
    uint8_t inner_key[TPM_BLOB_INNER_KEY_SIZE];
    uint8_t cred_seed[SEED_LEN];
    uint8_t obfuscation[SEED_LEN];
    uint8_t dup_seed[SEED_LEN];
    uint8_t sym_key[PARENT_SYM_BITS / 8];
    uint8_t hmac_key[SHA256_LEN];          /* KDFa "INTEGRITY" outputs */
    uint8_t ident[2 + TPM_BLOB_INNER_KEY_SIZE]; /* TPM2B(innerKey), before encryption */
    TPM2B_SENSITIVE sensitive;
    uint8_t sens[sizeof(TPM2B_SENSITIVE)];      /* its marshalled form */
    size_t sens_len;
    uint8_t inner_plain[2 + SHA256_LEN + sizeof(TPM2B_SENSITIVE)]; /* TPM2B(innerInt) ‖ sens */
    uint8_t inner_enc[2 + SHA256_LEN + sizeof(TPM2B_SENSITIVE)];   /* after the inner CFB */
    size_t inner_len;
};

static int default_fill(void *arg, enum tpm_blob_random what, uint8_t *out, size_t len)
{
    (void)arg;
    (void)what;
    return random_bytes(out, len);
}

static int draw(const struct tpm_blob_rng *rng, enum tpm_blob_random what, uint8_t *out,
                size_t len)
{
    int r = rng->fill(rng->arg, what, out, len);

    return r > 0 ? PROV_EINTERNAL : r;
}

/* A parent as tpm_public_parse(TPM_PUBLIC_PARENT) leaves it. */
static bool is_parent(const struct tpm_public *k)
{
    return k->type == TPM2_ALG_RSA && k->name_alg == TPM2_ALG_SHA256 &&
           k->sym_alg == TPM2_ALG_AES && k->sym_bits == PARENT_SYM_BITS &&
           k->sym_mode == TPM2_ALG_CFB && k->key_bits == 2048 &&
           k->modulus_len == RSA2048_BYTES &&
           k->exponent >= 3 && k->exponent % 2 == 1 && k->name[0] == 0x00 &&
           k->name[1] == 0x0B;
}

/* Appends a marshalled TPM2B_DIGEST of len bytes (len <= 64); d may be secret. */
static int put_digest(const uint8_t *d, size_t len, uint8_t *buf, size_t cap, size_t *off)
{
    TPM2B_DIGEST dig = {.size = (UINT16)len};
    int r = PROV_EINTERNAL;

    if (len > sizeof(dig.buffer))
        return PROV_EINTERNAL;
    memcpy(dig.buffer, d, len);
    if (Tss2_MU_TPM2B_DIGEST_Marshal(&dig, buf, cap, off) == TSS2_RC_SUCCESS)
        r = 0;
    prov_cleanse(&dig, sizeof(dig));
    return r;
}

/*
 * TPM2_MakeCredential(ek, credential = inner key, objectName = Name(SRK)):
 * appends TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET to blob.
 */
static int make_credential(const struct tpm_public *ek, const struct tpm_public *srk,
                           struct blob_secrets *s, uint8_t *blob, size_t cap, size_t *off)
{
    TPM2B_ID_OBJECT id = {0};
    TPM2B_ENCRYPTED_SECRET secret = {0};
    uint8_t enc_ident[sizeof(s->ident)];
    uint8_t integrity[SHA256_LEN];
    size_t ident_len = 0, id_len = 0;
    int r;

    if ((r = oaep_encrypt(ek, label_identity, s->cred_seed, SEED_LEN, secret.secret)) != 0)
        return r;
    secret.size = RSA2048_BYTES;
    if ((r = kdfa(s->cred_seed, SEED_LEN, "STORAGE", srk->name, TPM_NAME_SIZE, NULL, 0,
                  ek->sym_bits, s->sym_key)) != 0)
        return r;
    if ((r = put_digest(s->inner_key, sizeof(s->inner_key), s->ident, sizeof(s->ident),
                        &ident_len)) != 0)
        return r;
    if ((r = cfb_encrypt(s->sym_key, s->ident, ident_len, enc_ident)) != 0)
        return r;
    if ((r = kdfa(s->cred_seed, SEED_LEN, "INTEGRITY", NULL, 0, NULL, 0, 8 * SHA256_LEN,
                  s->hmac_key)) != 0)
        return r;
    {
        struct part parts[] = {{enc_ident, ident_len}, {srk->name, TPM_NAME_SIZE}};

        if ((r = hmac_sha256_parts(s->hmac_key, sizeof(s->hmac_key), parts, 2,
                                   integrity)) != 0)
            return r;
    }
    /* credentialBlob = TPM2B(integrity) ‖ encIdentity */
    if ((r = put_digest(integrity, sizeof(integrity), id.credential, sizeof(id.credential),
                        &id_len)) != 0)
        return r;
    if (id_len + ident_len > sizeof(id.credential))
        return PROV_EINTERNAL;
    memcpy(id.credential + id_len, enc_ident, ident_len);
    id.size = (UINT16)(id_len + ident_len);
    if (Tss2_MU_TPM2B_ID_OBJECT_Marshal(&id, blob, cap, off) != TSS2_RC_SUCCESS ||
        Tss2_MU_TPM2B_ENCRYPTED_SECRET_Marshal(&secret, blob, cap, off) != TSS2_RC_SUCCESS)
        return PROV_EINTERNAL;
    return 0;
}

/*
 * The HMAC key object: its public area (into *pub, marshalled into area with
 * its Name) and its marshalled TPM2B_SENSITIVE (into s->sens).
 */
static int hmac_object(const uint8_t hmac_key[TPM_BLOB_HMAC_KEY_SIZE], struct blob_secrets *s,
                       TPMT_PUBLIC *pub, uint8_t *area, size_t cap, size_t *area_len,
                       uint8_t name[TPM_NAME_SIZE])
{
    /* DrsServer's authPolicy: PolicyCommandCode(TPM_CC_Duplicate) from an empty digest */
    static const uint8_t zero_digest[SHA256_LEN];
    uint8_t cc[8];
    TPMT_SENSITIVE *sa = &s->sensitive.sensitiveArea;
    int r;

    memset(pub, 0, sizeof(*pub));
    pub->type = TPM2_ALG_KEYEDHASH;
    pub->nameAlg = TPM2_ALG_SHA256;
    pub->objectAttributes = HMAC_KEY_ATTRIBUTES;
    put_u32(cc, TPM2_CC_PolicyCommandCode);
    put_u32(cc + 4, TPM2_CC_Duplicate);
    {
        struct part parts[] = {{zero_digest, sizeof(zero_digest)}, {cc, sizeof(cc)}};

        if ((r = sha256_parts(parts, 2, pub->authPolicy.buffer)) != 0)
            return r;
        pub->authPolicy.size = SHA256_LEN;
    }
    pub->parameters.keyedHashDetail.scheme.scheme = TPM2_ALG_HMAC;
    pub->parameters.keyedHashDetail.scheme.details.hmac.hashAlg = TPM2_ALG_SHA256;
    {
        /* unique = H(obfuscation ‖ K) */
        struct part parts[] = {{s->obfuscation, SEED_LEN}, {hmac_key, TPM_BLOB_HMAC_KEY_SIZE}};

        if ((r = sha256_parts(parts, 2, pub->unique.keyedHash.buffer)) != 0)
            return r;
        pub->unique.keyedHash.size = SHA256_LEN;
    }
    *area_len = 0;
    if (Tss2_MU_TPMT_PUBLIC_Marshal(pub, area, cap, area_len) != TSS2_RC_SUCCESS)
        return PROV_EINTERNAL;
    if ((r = tpm_name(area, *area_len, name)) != 0)
        return r;

    sa->sensitiveType = TPM2_ALG_KEYEDHASH;
    sa->authValue.size = 0;
    sa->seedValue.size = SEED_LEN;
    memcpy(sa->seedValue.buffer, s->obfuscation, SEED_LEN);
    sa->sensitive.bits.size = TPM_BLOB_HMAC_KEY_SIZE;
    memcpy(sa->sensitive.bits.buffer, hmac_key, TPM_BLOB_HMAC_KEY_SIZE);
    s->sens_len = 0;
    if (Tss2_MU_TPM2B_SENSITIVE_Marshal(&s->sensitive, s->sens, sizeof(s->sens),
                                        &s->sens_len) != TSS2_RC_SUCCESS)
        return PROV_EINTERNAL;
    return 0;
}

/*
 * TPM2_Duplicate(object, newParent = srk, encryptionKey = inner key,
 * symmetricAlg = AES-128-CFB): appends TPM2B_PRIVATE and TPM2B_ENCRYPTED_SECRET.
 */
static int duplicate(const struct tpm_public *srk, const uint8_t name[TPM_NAME_SIZE],
                     struct blob_secrets *s, uint8_t *blob, size_t cap, size_t *off)
{
    TPM2B_PRIVATE priv = {0};
    TPM2B_ENCRYPTED_SECRET seed = {0};
    uint8_t inner_int[SHA256_LEN], outer_hmac[SHA256_LEN];
    uint8_t dup_sens[sizeof(s->inner_enc)];
    size_t plen = 0;
    int r;

    /* inner wrapper: CFB(innerKey, TPM2B(H(sens ‖ name)) ‖ sens) */
    {
        struct part parts[] = {{s->sens, s->sens_len}, {name, TPM_NAME_SIZE}};

        if ((r = sha256_parts(parts, 2, inner_int)) != 0)
            return r;
    }
    if ((r = put_digest(inner_int, sizeof(inner_int), s->inner_plain, sizeof(s->inner_plain),
                        &plen)) != 0)
        return r;
    if (plen + s->sens_len > sizeof(s->inner_plain))
        return PROV_EINTERNAL;
    memcpy(s->inner_plain + plen, s->sens, s->sens_len);
    s->inner_len = plen + s->sens_len;
    if ((r = cfb_encrypt(s->inner_key, s->inner_plain, s->inner_len, s->inner_enc)) != 0)
        return r;

    /* outer wrapper to the SRK: TPM2B(HMAC(dupSens ‖ name)) ‖ dupSens */
    if ((r = oaep_encrypt(srk, label_duplicate, s->dup_seed, SEED_LEN, seed.secret)) != 0)
        return r;
    seed.size = RSA2048_BYTES;
    if ((r = kdfa(s->dup_seed, SEED_LEN, "STORAGE", name, TPM_NAME_SIZE, NULL, 0, srk->sym_bits,
                  s->sym_key)) != 0)
        return r;
    if ((r = cfb_encrypt(s->sym_key, s->inner_enc, s->inner_len, dup_sens)) != 0)
        return r;
    if ((r = kdfa(s->dup_seed, SEED_LEN, "INTEGRITY", NULL, 0, NULL, 0, 8 * SHA256_LEN,
                  s->hmac_key)) != 0)
        return r;
    {
        struct part parts[] = {{dup_sens, s->inner_len}, {name, TPM_NAME_SIZE}};

        if ((r = hmac_sha256_parts(s->hmac_key, sizeof(s->hmac_key), parts, 2,
                                   outer_hmac)) != 0)
            return r;
    }
    plen = 0;
    if ((r = put_digest(outer_hmac, sizeof(outer_hmac), priv.buffer, sizeof(priv.buffer),
                        &plen)) != 0)
        return r;
    if (plen + s->inner_len > sizeof(priv.buffer))
        return PROV_EINTERNAL;
    memcpy(priv.buffer + plen, dup_sens, s->inner_len);
    priv.size = (UINT16)(plen + s->inner_len);
    if (Tss2_MU_TPM2B_PRIVATE_Marshal(&priv, blob, cap, off) != TSS2_RC_SUCCESS ||
        Tss2_MU_TPM2B_ENCRYPTED_SECRET_Marshal(&seed, blob, cap, off) != TSS2_RC_SUCCESS)
        return PROV_EINTERNAL;
    return 0;
}

static int build_blob(const struct tpm_public *ek, const struct tpm_public *srk,
                      const uint8_t hmac_key[TPM_BLOB_HMAC_KEY_SIZE],
                      const struct tpm_blob_rng *rng, struct blob_secrets *s, uint8_t *blob,
                      size_t cap, size_t *off)
{
    TPM2B_PUBLIC object = {0};
    TPM2B_DATA enc_data = {0}; /* element #6: present, empty */
    uint8_t area[TPM_PUBLIC_AREA_MAX], name[TPM_NAME_SIZE];
    size_t area_len = 0;
    int r;

    if ((r = draw(rng, TPM_BLOB_RAND_INNER_KEY, s->inner_key, sizeof(s->inner_key))) != 0 ||
        (r = draw(rng, TPM_BLOB_RAND_CREDENTIAL_SEED, s->cred_seed, SEED_LEN)) != 0)
        return r;
    if ((r = make_credential(ek, srk, s, blob, cap, off)) != 0)
        return r;
    if ((r = draw(rng, TPM_BLOB_RAND_OBFUSCATION, s->obfuscation, SEED_LEN)) != 0)
        return r;
    if ((r = hmac_object(hmac_key, s, &object.publicArea, area, sizeof(area), &area_len,
                         name)) != 0)
        return r;
    if ((r = draw(rng, TPM_BLOB_RAND_DUPLICATE_SEED, s->dup_seed, SEED_LEN)) != 0)
        return r;
    if ((r = duplicate(srk, name, s, blob, cap, off)) != 0)
        return r;
    /* #5 must carry exactly the bytes the Name was computed over */
    {
        size_t start = *off;

        if (Tss2_MU_TPM2B_PUBLIC_Marshal(&object, blob, cap, off) != TSS2_RC_SUCCESS)
            return PROV_EINTERNAL;
        if (*off - start != area_len + 2 || memcmp(blob + start + 2, area, area_len) != 0)
            return PROV_EINTERNAL;
    }
    if (Tss2_MU_TPM2B_DATA_Marshal(&enc_data, blob, cap, off) != TSS2_RC_SUCCESS)
        return PROV_EINTERNAL;
    return 0;
}

int tpm_activation_blob(const struct tpm_public *ek, const struct tpm_public *srk,
                        const uint8_t hmac_key[TPM_BLOB_HMAC_KEY_SIZE],
                        const struct tpm_blob_rng *rng, char **b64_out)
{
    static const struct tpm_blob_rng csprng = {default_fill, NULL};
    struct blob_secrets s;
    uint8_t blob[BLOB_MAX];
    size_t len = 0;
    int r;

    if (b64_out != NULL)
        *b64_out = NULL;
    if (ek == NULL || srk == NULL || hmac_key == NULL || b64_out == NULL ||
        (rng != NULL && rng->fill == NULL))
        return PROV_EINVAL;
    if (!is_parent(ek) || !is_parent(srk))
        return PROV_EINVAL;
    if (rng == NULL)
        rng = &csprng;
    memset(&s, 0, sizeof(s));
    ERR_set_mark();
    r = build_blob(ek, srk, hmac_key, rng, &s, blob, sizeof(blob), &len);
    ERR_pop_to_mark();
    prov_cleanse(&s, sizeof(s));
    if (r != 0)
        return r;
    if ((*b64_out = b64_encode_alloc(blob, len)) == NULL)
        return PROV_ENOMEM;
    return 0;
}

/* ---- registration id ----------------------------------------------------------------- */

int tpm_registration_id(const uint8_t *ek_tpm2b, size_t len, char *out, size_t outlen)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
    uint8_t digest[SHA256_LEN];
    struct part part = {ek_tpm2b, len};
    uint32_t acc = 0;
    int nbits = 0;
    size_t o = 0;
    int r;

    if (out != NULL && outlen > 0)
        out[0] = '\0';
    if (ek_tpm2b == NULL || out == NULL || outlen < TPM_REGISTRATION_ID_SIZE)
        return PROV_EINVAL;
    ERR_set_mark();
    r = sha256_parts(&part, 1, digest);
    ERR_pop_to_mark();
    if (r != 0)
        return r;
    for (size_t i = 0; i < sizeof(digest); i++) {
        acc = (acc << 8) | digest[i];
        nbits += 8;
        while (nbits >= 5) {
            nbits -= 5;
            out[o++] = alphabet[(acc >> nbits) & 0x1f];
        }
    }
    if (nbits > 0)
        out[o++] = alphabet[(acc << (5 - nbits)) & 0x1f];
    out[o] = '\0';
    return 0;
}
