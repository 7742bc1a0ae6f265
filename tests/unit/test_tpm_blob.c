/*
 * Unit tests for src/server/tpm_blob.c: TPM2B_PUBLIC parsing and its refusals,
 * Names, KDFa, the default registration id (device-protocol §5.1) and the
 * activation blob (§5.2, §5.4).
 *
 * The blob vectors below were produced once by running the study's reference
 * implementation (device-protocol Appendix A, Node crypto) with the EK and SRK
 * captured in §10.6, K = a0 a1 .. bf and every random value fixed as the
 * FIXED_* patterns below give them. Everything in the blob is deterministic
 * then except the two RSA-OAEP ciphertexts (OpenSSL randomizes OAEP): those
 * are checked by decrypting them with keys generated here. The real-TPM check
 * is tests/system/t401-tpm-blob-swtpm.sh.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>

#include "src/common/errors.h"
#include "src/common/util.h"
#include "src/server/tpm_blob.h"

/* device-protocol §10.6: the EK and SRK a real (swtpm) device sent */
#define EK_B64                                                                                  \
    "AToAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEAoR4OQ3+YBO" \
    "MZlGi3zSV6hpXsY+GGlLflkfMYK1whbbYJInE5gW4+2LaqSCwnq5cEF0Auk1OKdZPHHf+UCUmYBWh3+ZLb2hIxYH4R" \
    "tUOrHDN8KVD+l+/DzbNSLihUcZ10hGWXuwZX98TSD69aui5YyYZowKzgoW9UV0wCl0MoacnkY4HKkq6Ij4I17nHo5g" \
    "N3p14lQRf+j5+j4pw8Umtm6ePg6tuGRyQE8ZrJ0VuZmVYICA2Kequiy1XC/6ojW0iv/En/PN2WhP1Wvn2hcy8101pK" \
    "SD97iBKVdR3C/LShLovOomykU1zQKWykanJLDGjbLKlgOhuFGT4GdGRwbC3eww=="
#define SRK_B64                                                                                 \
    "ARoAAQALAAMEcgAAAAYAgABDABAIAAAAAAABAIVAPQp9ldpqUtqev5s6Z/Q5Bxll3D6aBj4Gnv1ZFbmgrZzqNE/Rrr" \
    "gZ43rmoFqsOHHIDHBUMFOj+2rtp8lTV9ce6sPD0jgjPjU7/3+7sG1dJs1Fmt0intBusia/yieQqs+pMnJYlgccZH9Q" \
    "bUVgoHABOZDi2wXGb3crA/XqaTf8Hvi3F4dxxmNX5+8shXsIWX5BPAEWlL1jw5eFIZM+fAk0KqznFD1Q8oBJmIQp/P" \
    "chrPoVZSopwss4eZg3awvZCvzxNVpUUN7koz3+QC/AwX/dkPJU13J58CNfhEKELew8DAnAbUEdVIgb0u65G/yY0ADA" \
    "vKjoTJpjyVlkIPn1EP0="
/* §5.1: verified registration id of that EK */
#define EK_REGISTRATION_ID "q46kn7ve4vjqxenzdsuygh7udtv2ehr2s3h3vtvu6e5o4e3lygba"

/* Names computed by the reference implementation */
#define EK_NAME_HEX "000b823c90c1d2c97e249775527bc7cf303db07b9ac645cfdbc4ad8c34499241b85f"
#define SRK_NAME_HEX "000b73ac08974a2fc12a59146d880854ce21a5b4466374718bee1f8242163e4eec24"

/* Fixed random values: byte i of each is base + i. */
#define FIXED_INNER_KEY 0x10
#define FIXED_CRED_SEED 0x20
#define FIXED_OBFUSCATION 0x40
#define FIXED_DUP_SEED 0x60
#define FIXED_HMAC_KEY 0xa0

/* Reference output for those values (elements #1, #3, #5, #6 with their size fields). */
static const char ref_id_object[] =
    "00340020028d1c9930dd15baea28e2d9e1589aa8456f305f6f39029194316f42f3c5b7bcea619d37ad2b18f1"
    "b5b17d242b0a1c3ce306";
static const char ref_private[] =
    "008e002031de8302973b84b1309796830e5f0b81aa01f95622e4b08d9438d37468954cc710106b14e8a9542a"
    "6f988d948ae29fdebf4822bc60309b86efb2dec3d2dfc7721adb0cc1c60b2474e73cb2c3b855dd0a6b308794"
    "4eeed8574d7596ad76268ab7b6a77ca197b70b33191ace216d808a91aa0646332bff13cac1df745eb7875814"
    "860947ffc891ea5ea010e0b9";
static const char ref_public[] =
    "00500008000b000404400020bef56b8c1cc84e11edd717528d2cd99356bd2bbf8f015209c3f84aeeaba8e8a2"
    "0005000b0020c7fb1779f02a75b64f4f5e681f6e632ac540d9ed9a834fe9318a9ef389d1efbf";
static const char ref_object_name[] =
    "000bbbc4b59b6b2caff64571c61a6c57b7f7cc16685125be439ac9d43d056083643c";

/* KDFa outputs of the reference, key = 00 01 .. 1f */
static const char ref_kdfa_storage[] = "564d1860ca446ee2ba1e253814299d23";
static const char ref_kdfa_integrity[] =
    "bacf689f634ece301e1f1b15b072d9c87db6a69585db42b1a0cb8f73ebe2692e";
static const char ref_kdfa_520[] =
    "dc6550d25be0d751757ded842fe39c83a1f884f081dfc9aeec7180a062cd7cffefd6456fb773cd4e8ca96feb"
    "7c8b179aaacf7820e7dcb87dadcdb6517ae6e6a66a";

/* Attribute sets of the EK and SRK templates (§5.1) */
#define EK_ATTRS 0x000300B2u
#define SRK_ATTRS 0x00030472u

/* ---- helpers -------------------------------------------------------------------------- */

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = strlen(hex) / 2;

    assert_true(n <= cap);
    for (size_t i = 0; i < n; i++) {
        unsigned int v;

        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
    return n;
}

static size_t unb64(const char *b64, uint8_t *out, size_t cap)
{
    int n;

    assert_true(b64_decoded_max(strlen(b64)) <= cap);
    n = b64_decode(b64, strlen(b64), out);
    assert_true(n > 0);
    return (size_t)n;
}

static void assert_hex(const uint8_t *got, size_t len, const char *want_hex)
{
    char *hex = malloc(2 * len + 1);

    assert_non_null(hex);
    hex_encode(got, len, hex, false);
    assert_string_equal(hex, want_hex);
    free(hex);
}

static void pattern(uint8_t *out, size_t len, uint8_t base)
{
    for (size_t i = 0; i < len; i++)
        out[i] = (uint8_t)(base + i);
}

/* A fixed rng that records the order of requests and can fail on request n. */
struct fixed_rng {
    int calls;
    enum tpm_blob_random seen[8];
    size_t lens[8];
    int fail_at; /* -1: never */
};

static int fixed_fill(void *arg, enum tpm_blob_random what, uint8_t *out, size_t len)
{
    static const uint8_t base[] = {
        [TPM_BLOB_RAND_INNER_KEY] = FIXED_INNER_KEY,
        [TPM_BLOB_RAND_CREDENTIAL_SEED] = FIXED_CRED_SEED,
        [TPM_BLOB_RAND_OBFUSCATION] = FIXED_OBFUSCATION,
        [TPM_BLOB_RAND_DUPLICATE_SEED] = FIXED_DUP_SEED,
    };
    struct fixed_rng *f = arg;

    if (f->calls == f->fail_at)
        return PROV_ECRYPTO;
    if (f->calls < 8) {
        f->seen[f->calls] = what;
        f->lens[f->calls] = len;
    }
    f->calls++;
    pattern(out, len, base[what]);
    return 0;
}

static void parse_b64(const char *b64, enum tpm_public_role role, struct tpm_public *out)
{
    uint8_t buf[1024];
    size_t n = unb64(b64, buf, sizeof(buf));
    const char *why = "unset";

    assert_int_equal(tpm_public_parse(buf, n, role, out, &why), 0);
    assert_null(why);
}

/* Splits a decoded blob into its six TPM2B elements; fails unless they cover it exactly. */
static void split_blob(const uint8_t *blob, size_t len, const uint8_t *el[6], size_t el_len[6])
{
    size_t off = 0;

    for (int i = 0; i < 6; i++) {
        size_t n;

        assert_true(off + 2 <= len);
        n = ((size_t)blob[off] << 8) | blob[off + 1];
        assert_true(off + 2 + n <= len);
        el[i] = blob + off;
        el_len[i] = 2 + n;
        off += 2 + n;
    }
    assert_int_equal(off, len);
}

/*
 * Builds an RSA TPM2B_PUBLIC by hand (TPM 2.0 Part 2 marshalling: type,
 * nameAlg, attributes, TPM2B authPolicy, symmetric {alg[, bits, mode]},
 * scheme, keyBits, exponent, TPM2B modulus). Returns its length.
 */
struct rsa_template {
    uint16_t name_alg;
    uint32_t attrs;
    uint16_t sym_alg, sym_bits, sym_mode;
    uint16_t scheme;
    uint16_t key_bits;
    uint32_t exponent;
    const uint8_t *modulus;
    size_t modulus_len;
};

static size_t put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return 2;
}

static size_t put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)(v >> 16));
    put16(p + 2, (uint16_t)v);
    return 4;
}

static size_t build_rsa_public(const struct rsa_template *t, uint8_t *out, size_t cap)
{
    /* the EK template's authPolicy, PolicySecret(TPM_RH_ENDORSEMENT) */
    static const char ek_policy[] =
        "837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa";
    uint8_t policy[32];
    size_t o = 2;

    assert_true(cap >= 2 + 2 + 2 + 4 + 2 + 32 + 6 + 4 + 2 + 4 + 2 + t->modulus_len);
    unhex(ek_policy, policy, sizeof(policy));
    o += put16(out + o, 0x0001);
    o += put16(out + o, t->name_alg);
    o += put32(out + o, t->attrs);
    if (t->attrs & 0x80) { /* adminWithPolicy: carry the EK policy */
        o += put16(out + o, 32);
        memcpy(out + o, policy, 32);
        o += 32;
    } else {
        o += put16(out + o, 0);
    }
    o += put16(out + o, t->sym_alg);
    if (t->sym_alg != 0x0010) {
        o += put16(out + o, t->sym_bits);
        o += put16(out + o, t->sym_mode);
    }
    o += put16(out + o, t->scheme);
    if (t->scheme != 0x0010)
        o += put16(out + o, 0x000B); /* the scheme's hash */
    o += put16(out + o, t->key_bits);
    o += put32(out + o, t->exponent);
    o += put16(out + o, (uint16_t)t->modulus_len);
    memcpy(out + o, t->modulus, t->modulus_len);
    o += t->modulus_len;
    put16(out, (uint16_t)(o - 2));
    return o;
}

static struct rsa_template srk_template(const uint8_t *modulus, size_t len)
{
    struct rsa_template t = {
        .name_alg = 0x000B, .attrs = SRK_ATTRS, .sym_alg = 0x0006, .sym_bits = 128,
        .sym_mode = 0x0043, .scheme = 0x0010, .key_bits = 2048, .exponent = 0,
        .modulus = modulus, .modulus_len = len,
    };
    return t;
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

/* RSA-OAEP-SHA256 decryption with label (NUL included); returns the length or -1. */
static int oaep_decrypt(EVP_PKEY *pkey, const char *label, const uint8_t *in, size_t in_len,
                        uint8_t *out, size_t cap)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    size_t lab_len = strlen(label) + 1;
    void *lab = OPENSSL_memdup(label, lab_len);
    size_t outlen = cap;
    int r = -1;

    assert_non_null(ctx);
    assert_non_null(lab);
    assert_int_equal(EVP_PKEY_decrypt_init(ctx), 1);
    assert_true(EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) > 0);
    assert_true(EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha256()) > 0);
    assert_true(EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) > 0);
    assert_true(EVP_PKEY_CTX_set0_rsa_oaep_label(ctx, lab, (int)lab_len) > 0);
    if (EVP_PKEY_decrypt(ctx, out, &outlen, in, in_len) == 1)
        r = (int)outlen;
    EVP_PKEY_CTX_free(ctx);
    ERR_clear_error();
    return r;
}

/* ---- registration id and Names -------------------------------------------------------- */

static void test_registration_id(void **state)
{
    uint8_t ek[512];
    size_t n = unb64(EK_B64, ek, sizeof(ek));
    char id[TPM_REGISTRATION_ID_SIZE];
    char small[TPM_REGISTRATION_ID_SIZE - 1];

    (void)state;
    assert_int_equal(tpm_registration_id(ek, n, id, sizeof(id)), 0);
    assert_string_equal(id, EK_REGISTRATION_ID);
    /* the hash covers the TPM2B size field too: without it the id changes */
    assert_int_equal(tpm_registration_id(ek + 2, n - 2, id, sizeof(id)), 0);
    assert_string_not_equal(id, EK_REGISTRATION_ID);
    assert_int_equal(strlen(id), 52);
    /* RFC 4648 base32 of SHA-256("") = e3b0c442..., computed independently */
    assert_int_equal(tpm_registration_id((const uint8_t *)"", 0, id, sizeof(id)), 0);
    assert_string_equal(id, "4oymiquy7qobjgx36tejs35zeqt24qpemsnzgtfeswmrw6csxbkq");
    assert_int_equal(tpm_registration_id(ek, n, small, sizeof(small)), PROV_EINVAL);
    assert_int_equal(tpm_registration_id(NULL, 0, id, sizeof(id)), PROV_EINVAL);
}

static void test_parse_captured_keys(void **state)
{
    struct tpm_public ek, srk;
    uint8_t raw[512], digest[32];
    size_t n;

    (void)state;
    parse_b64(EK_B64, TPM_PUBLIC_PARENT, &ek);
    assert_int_equal(ek.type, TPM_BLOB_ALG_RSA);
    assert_int_equal(ek.name_alg, TPM_BLOB_ALG_SHA256);
    assert_int_equal(ek.attributes, EK_ATTRS);
    assert_int_equal(ek.sym_alg, TPM_BLOB_ALG_AES);
    assert_int_equal(ek.sym_bits, 128);
    assert_int_equal(ek.sym_mode, TPM_BLOB_ALG_CFB);
    assert_int_equal(ek.key_bits, 2048);
    assert_int_equal(ek.exponent, 65537);
    assert_int_equal(ek.modulus_len, 256);
    assert_int_equal(ek.area_len, 314); /* §5.1: EK TPM2B size 314 */
    assert_hex(ek.name, sizeof(ek.name), EK_NAME_HEX);

    parse_b64(SRK_B64, TPM_PUBLIC_PARENT, &srk);
    assert_int_equal(srk.attributes, SRK_ATTRS);
    assert_int_equal(srk.area_len, 282);
    assert_int_equal(srk.exponent, 65537);
    assert_hex(srk.name, sizeof(srk.name), SRK_NAME_HEX);

    /* Name = 000b ‖ SHA-256 over the received TPMT_PUBLIC bytes, computed here independently */
    n = unb64(SRK_B64, raw, sizeof(raw));
    assert_int_equal(EVP_Digest(raw + 2, n - 2, digest, NULL, EVP_sha256(), NULL), 1);
    assert_memory_equal(srk.area, raw + 2, n - 2);
    assert_int_equal(srk.name[0], 0x00);
    assert_int_equal(srk.name[1], 0x0b);
    assert_memory_equal(srk.name + 2, digest, 32);
    /* the modulus is the last 256 bytes of the area */
    assert_memory_equal(srk.modulus, raw + n - 256, 256);

    /* the same keys parse as TPM_PUBLIC_ANY with the same Name */
    parse_b64(EK_B64, TPM_PUBLIC_ANY, &srk);
    assert_hex(srk.name, sizeof(srk.name), EK_NAME_HEX);
}

static void test_name(void **state)
{
    uint8_t area[82], name[TPM_NAME_SIZE], digest[32];
    size_t n = unhex(ref_public + 4, area, sizeof(area)); /* without the TPM2B size */

    (void)state;
    assert_int_equal(tpm_name(area, n, name), 0);
    assert_hex(name, sizeof(name), ref_object_name);
    assert_int_equal(EVP_Digest(area, n, digest, NULL, EVP_sha256(), NULL), 1);
    assert_memory_equal(name + 2, digest, 32);
    /* one changed byte changes the Name */
    area[n - 1] ^= 1;
    assert_int_equal(tpm_name(area, n, name), 0);
    assert_memory_not_equal(name + 2, digest, 32);
}

/* ---- KDFa ----------------------------------------------------------------------------- */

/* KDFa written out with OpenSSL's one-shot HMAC(), block by block. */
static void kdfa_independent(const uint8_t *key, size_t key_len, const char *label,
                             const uint8_t *u, size_t u_len, const uint8_t *v, size_t v_len,
                             size_t bits, uint8_t *out)
{
    uint8_t msg[256];
    uint8_t md[32];
    size_t done = 0;

    for (uint32_t i = 1; done < bits / 8; i++) {
        size_t o = 0, l = strlen(label) + 1, take;
        unsigned int mdlen = 0;

        o += put32(msg + o, i);
        memcpy(msg + o, label, l);
        o += l;
        if (u_len > 0)
            memcpy(msg + o, u, u_len);
        o += u_len;
        if (v_len > 0)
            memcpy(msg + o, v, v_len);
        o += v_len;
        o += put32(msg + o, (uint32_t)bits);
        assert_non_null(HMAC(EVP_sha256(), key, (int)key_len, msg, o, md, &mdlen));
        take = bits / 8 - done < 32 ? bits / 8 - done : 32;
        memcpy(out + done, md, take);
        done += take;
    }
}

static void test_kdfa(void **state)
{
    uint8_t key[32], srk_name[TPM_NAME_SIZE], got[65], want[65];
    static const uint8_t abc[] = "abc", defg[] = "defg";

    (void)state;
    pattern(key, sizeof(key), 0);
    unhex(SRK_NAME_HEX, srk_name, sizeof(srk_name));

    assert_int_equal(tpm_kdfa(key, 32, "STORAGE", srk_name, sizeof(srk_name), NULL, 0, 128, got),
                     0);
    assert_hex(got, 16, ref_kdfa_storage);
    kdfa_independent(key, 32, "STORAGE", srk_name, sizeof(srk_name), NULL, 0, 128, want);
    assert_memory_equal(got, want, 16);

    assert_int_equal(tpm_kdfa(key, 32, "INTEGRITY", NULL, 0, NULL, 0, 256, got), 0);
    assert_hex(got, 32, ref_kdfa_integrity);

    /* three blocks, the last one cut: 520 bits = 65 bytes */
    assert_int_equal(tpm_kdfa(key, 32, "XYZ", abc, 3, defg, 4, 520, got), 0);
    assert_hex(got, 65, ref_kdfa_520);
    kdfa_independent(key, 32, "XYZ", abc, 3, defg, 4, 520, want);
    assert_memory_equal(got, want, 65);

    /* a shorter request is a prefix (bits enter the HMAC, so not a prefix of 520) */
    assert_int_equal(tpm_kdfa(key, 7, "XYZ", abc, 3, defg, 4, 8, got), 0);
    kdfa_independent(key, 7, "XYZ", abc, 3, defg, 4, 8, want);
    assert_int_equal(got[0], want[0]);

    assert_int_equal(tpm_kdfa(key, 32, "X", NULL, 0, NULL, 0, 0, got), PROV_EINVAL);
    assert_int_equal(tpm_kdfa(key, 32, "X", NULL, 0, NULL, 0, 12, got), PROV_EINVAL);
    assert_int_equal(tpm_kdfa(key, 32, "X", NULL, 0, NULL, 0, 8200, got), PROV_EINVAL);
    assert_int_equal(tpm_kdfa(key, 32, NULL, NULL, 0, NULL, 0, 128, got), PROV_EINVAL);
    assert_int_equal(tpm_kdfa(key, 0, "X", NULL, 0, NULL, 0, 128, got), PROV_EINVAL);
    assert_int_equal(tpm_kdfa(key, 32, "X", NULL, 3, NULL, 0, 128, got), PROV_EINVAL);
}

/* ---- parse refusals ------------------------------------------------------------------- */

/* reports the caller's line */
#define expect_refusal(buf, len, role, reason) \
    expect_refusal_at(buf, len, role, reason, __FILE__, __LINE__)

static void expect_refusal_at(const uint8_t *buf, size_t len, enum tpm_public_role role,
                              const char *reason, const char *file, int line)
{
    struct tpm_public pub;
    const char *why = NULL;

    _assert_int_equal(tpm_public_parse(buf, len, role, &pub, &why), PROV_EPROTO, file, line);
    _assert_true(why != NULL, "why", file, line);
    _assert_string_equal(why, reason, file, line);
}

static void test_parse_refusals(void **state)
{
    uint8_t srk[512], buf[600], modulus[256];
    size_t n = unb64(SRK_B64, srk, sizeof(srk));
    struct tpm_public pub;
    struct rsa_template t;
    size_t len;

    (void)state;
    memcpy(modulus, srk + n - 256, 256);

    /* framing */
    expect_refusal(srk, 0, TPM_PUBLIC_ANY, "truncated TPM2B_PUBLIC");
    expect_refusal(srk, 1, TPM_PUBLIC_ANY, "truncated TPM2B_PUBLIC");
    expect_refusal(srk, n - 1, TPM_PUBLIC_PARENT, "truncated TPM2B_PUBLIC");
    memcpy(buf, srk, n);
    buf[n] = 0;
    expect_refusal(buf, n + 1, TPM_PUBLIC_PARENT, "trailing bytes after TPM2B_PUBLIC");
    /* a size field that claims one byte more than the TPMT_PUBLIC uses */
    put16(buf, (uint16_t)(n - 1));
    expect_refusal(buf, n + 1, TPM_PUBLIC_ANY, "TPMT_PUBLIC does not fill its TPM2B");
    /* cut inside the modulus, size field adjusted: the TPMT_PUBLIC is incomplete */
    memcpy(buf, srk, n);
    put16(buf, (uint16_t)(n - 2 - 10));
    expect_refusal(buf, n - 10, TPM_PUBLIC_ANY, "malformed TPMT_PUBLIC");
    /* empty area */
    put16(buf, 0);
    expect_refusal(buf, 2, TPM_PUBLIC_ANY, "public area size out of range");
    /* unknown object type */
    memcpy(buf, srk, n);
    put16(buf + 2, 0x0099);
    expect_refusal(buf, n, TPM_PUBLIC_ANY, "malformed TPMT_PUBLIC");

    /* wrong nameAlg (SHA-1) */
    memcpy(buf, srk, n);
    put16(buf + 4, 0x0004);
    expect_refusal(buf, n, TPM_PUBLIC_ANY, "nameAlg is not SHA-256");

    /* a keyedHash object is not a parent, but is a valid public area */
    len = unhex(ref_public, buf, sizeof(buf));
    expect_refusal(buf, len, TPM_PUBLIC_PARENT, "not an RSA key");
    assert_int_equal(tpm_public_parse(buf, len, TPM_PUBLIC_ANY, &pub, NULL), 0);
    assert_int_equal(pub.type, TPM_BLOB_ALG_KEYEDHASH);
    assert_int_equal(pub.attributes, 0x00040440);
    assert_int_equal(pub.sym_alg, TPM_BLOB_ALG_NULL);
    assert_hex(pub.name, sizeof(pub.name), ref_object_name);

    /* the hand-built SRK equals the captured one, so the template below is right */
    t = srk_template(modulus, 256);
    len = build_rsa_public(&t, buf, sizeof(buf));
    assert_int_equal(len, n);
    assert_memory_equal(buf, srk, n);

    /* RSA 1024 */
    t = srk_template(modulus, 128);
    t.key_bits = 1024;
    len = build_rsa_public(&t, buf, sizeof(buf));
    assert_int_equal(tpm_public_parse(buf, len, TPM_PUBLIC_ANY, &pub, NULL), 0);
    expect_refusal(buf, len, TPM_PUBLIC_PARENT, "not an RSA 2048 key");
    /* keyBits says 2048 but the modulus is shorter, or lacks its top bit */
    t.key_bits = 2048;
    len = build_rsa_public(&t, buf, sizeof(buf));
    expect_refusal(buf, len, TPM_PUBLIC_PARENT, "RSA modulus is not 2048 bits");
    t = srk_template(modulus, 256);
    modulus[0] &= 0x7f;
    len = build_rsa_public(&t, buf, sizeof(buf));
    expect_refusal(buf, len, TPM_PUBLIC_PARENT, "RSA modulus is not 2048 bits");
    modulus[0] |= 0x80;
    /* not a storage key: sign set, or restricted clear */
    t.attrs = SRK_ATTRS | 0x00040000;
    len = build_rsa_public(&t, buf, sizeof(buf));
    expect_refusal(buf, len, TPM_PUBLIC_PARENT, "not a restricted decryption key");
    t.attrs = SRK_ATTRS & ~0x00010000u;
    len = build_rsa_public(&t, buf, sizeof(buf));
    expect_refusal(buf, len, TPM_PUBLIC_PARENT, "not a restricted decryption key");
    /* symmetric: AES-256, CTR mode, none */
    t = srk_template(modulus, 256);
    t.sym_bits = 256;
    len = build_rsa_public(&t, buf, sizeof(buf));
    expect_refusal(buf, len, TPM_PUBLIC_PARENT, "symmetric algorithm is not AES-128-CFB");
    t.sym_bits = 128;
    t.sym_mode = 0x0040; /* CTR */
    len = build_rsa_public(&t, buf, sizeof(buf));
    expect_refusal(buf, len, TPM_PUBLIC_PARENT, "symmetric algorithm is not AES-128-CFB");
    t.sym_alg = 0x0010;
    len = build_rsa_public(&t, buf, sizeof(buf));
    assert_int_equal(tpm_public_parse(buf, len, TPM_PUBLIC_ANY, &pub, NULL), 0);
    assert_int_equal(pub.sym_alg, TPM_BLOB_ALG_NULL);
    expect_refusal(buf, len, TPM_PUBLIC_PARENT, "symmetric algorithm is not AES-128-CFB");
    /* a scheme (OAEP) on a restricted decryption key */
    t = srk_template(modulus, 256);
    t.scheme = 0x0017;
    len = build_rsa_public(&t, buf, sizeof(buf));
    expect_refusal(buf, len, TPM_PUBLIC_PARENT, "RSA scheme is not NULL");
    /* exponents: even and 1 refused, 3 accepted as is */
    t = srk_template(modulus, 256);
    t.exponent = 65536;
    len = build_rsa_public(&t, buf, sizeof(buf));
    expect_refusal(buf, len, TPM_PUBLIC_PARENT, "invalid RSA exponent");
    t.exponent = 1;
    len = build_rsa_public(&t, buf, sizeof(buf));
    expect_refusal(buf, len, TPM_PUBLIC_PARENT, "invalid RSA exponent");
    t.exponent = 3;
    len = build_rsa_public(&t, buf, sizeof(buf));
    assert_int_equal(tpm_public_parse(buf, len, TPM_PUBLIC_PARENT, &pub, NULL), 0);
    assert_int_equal(pub.exponent, 3);

    /* arguments */
    assert_int_equal(tpm_public_parse(NULL, 4, TPM_PUBLIC_ANY, &pub, NULL), PROV_EINVAL);
    assert_int_equal(tpm_public_parse(srk, n, TPM_PUBLIC_ANY, NULL, NULL), PROV_EINVAL);
    assert_int_equal(tpm_public_parse(srk, n, (enum tpm_public_role)7, &pub, NULL), PROV_EINVAL);
}

/* ---- the blob ------------------------------------------------------------------------- */

static void test_blob_matches_reference(void **state)
{
    struct tpm_public ek, srk;
    struct fixed_rng rng_state = {.fail_at = -1};
    struct tpm_blob_rng rng = {fixed_fill, &rng_state};
    uint8_t k[TPM_BLOB_HMAC_KEY_SIZE], blob[1200];
    const uint8_t *el[6];
    size_t el_len[6], n;
    char *b64 = NULL;

    (void)state;
    parse_b64(EK_B64, TPM_PUBLIC_PARENT, &ek);
    parse_b64(SRK_B64, TPM_PUBLIC_PARENT, &srk);
    pattern(k, sizeof(k), FIXED_HMAC_KEY);
    assert_int_equal(tpm_activation_blob(&ek, &srk, k, &rng, &b64), 0);
    assert_non_null(b64);
    n = unb64(b64, blob, sizeof(blob));
    assert_int_equal(n, 798); /* §5.2 observed size */
    split_blob(blob, n, el, el_len);

    /* the random values are asked for once each, in the documented order and sizes */
    assert_int_equal(rng_state.calls, 4);
    assert_int_equal(rng_state.seen[0], TPM_BLOB_RAND_INNER_KEY);
    assert_int_equal(rng_state.lens[0], 16);
    assert_int_equal(rng_state.seen[1], TPM_BLOB_RAND_CREDENTIAL_SEED);
    assert_int_equal(rng_state.lens[1], 32);
    assert_int_equal(rng_state.seen[2], TPM_BLOB_RAND_OBFUSCATION);
    assert_int_equal(rng_state.lens[2], 32);
    assert_int_equal(rng_state.seen[3], TPM_BLOB_RAND_DUPLICATE_SEED);
    assert_int_equal(rng_state.lens[3], 32);

    assert_hex(el[0], el_len[0], ref_id_object);
    assert_int_equal(el_len[1], 2 + 256);
    assert_int_equal(el[1][0], 0x01);
    assert_int_equal(el[1][1], 0x00);
    assert_hex(el[2], el_len[2], ref_private);
    assert_int_equal(el_len[3], 2 + 256);
    assert_hex(el[4], el_len[4], ref_public);
    assert_hex(el[5], el_len[5], "0000");
    free(b64);

    /* another K changes #3 and #5 (unique = H(obfuscation ‖ K)) but not #1 */
    k[0] ^= 0xff;
    rng_state.calls = 0;
    assert_int_equal(tpm_activation_blob(&ek, &srk, k, &rng, &b64), 0);
    n = unb64(b64, blob, sizeof(blob));
    split_blob(blob, n, el, el_len);
    assert_hex(el[0], el_len[0], ref_id_object);
    {
        uint8_t ref[160];
        size_t rn = unhex(ref_private, ref, sizeof(ref));

        assert_int_equal(el_len[2], rn);
        assert_memory_not_equal(el[2], ref, rn);
        rn = unhex(ref_public, ref, sizeof(ref));
        assert_int_equal(el_len[4], rn);
        assert_memory_not_equal(el[4], ref, rn);
        /* only the unique field (the last 32 bytes) differs in the public area */
        assert_memory_equal(el[4], ref, rn - 32);
    }
    free(b64);

    /* with the CSPRNG two blobs differ */
    {
        char *b1 = NULL, *b2 = NULL;

        assert_int_equal(tpm_activation_blob(&ek, &srk, k, NULL, &b1), 0);
        assert_int_equal(tpm_activation_blob(&ek, &srk, k, NULL, &b2), 0);
        assert_int_equal(strlen(b1), strlen(b2));
        assert_string_not_equal(b1, b2);
        free(b1);
        free(b2);
    }
}

/*
 * With keys made here, the OAEP elements decrypt (with the right label only)
 * to the fixed seeds, and the credential decrypts to the inner key: the TPM's
 * half of MakeCredential, done with OpenSSL from the spec.
 */
static void test_blob_oaep_elements(void **state)
{
    uint8_t ek_mod[256], srk_mod[256], buf[600], blob[1200], out[256], want[32];
    struct fixed_rng rng_state = {.fail_at = -1};
    struct tpm_blob_rng rng = {fixed_fill, &rng_state};
    struct tpm_public ek, srk;
    struct rsa_template t;
    EVP_PKEY *ek_key = gen_rsa(ek_mod), *srk_key = gen_rsa(srk_mod);
    uint8_t k[32], sym[16], hkey[32], mac[32], ident[18], iv[16] = {0};
    const uint8_t *el[6];
    size_t el_len[6], n, len;
    unsigned int maclen = 0;
    char *b64 = NULL;
    int outl = 0;
    EVP_CIPHER_CTX *c;

    (void)state;
    t = srk_template(ek_mod, 256);
    t.attrs = EK_ATTRS;
    len = build_rsa_public(&t, buf, sizeof(buf));
    assert_int_equal(tpm_public_parse(buf, len, TPM_PUBLIC_PARENT, &ek, NULL), 0);
    t = srk_template(srk_mod, 256);
    len = build_rsa_public(&t, buf, sizeof(buf));
    assert_int_equal(tpm_public_parse(buf, len, TPM_PUBLIC_PARENT, &srk, NULL), 0);

    pattern(k, sizeof(k), FIXED_HMAC_KEY);
    assert_int_equal(tpm_activation_blob(&ek, &srk, k, &rng, &b64), 0);
    n = unb64(b64, blob, sizeof(blob));
    free(b64);
    split_blob(blob, n, el, el_len);

    /* #2: OAEP(EK, "IDENTITY\0", credential seed) */
    pattern(want, 32, FIXED_CRED_SEED);
    assert_int_equal(oaep_decrypt(ek_key, "IDENTITY", el[1] + 2, el_len[1] - 2, out, sizeof(out)),
                     32);
    assert_memory_equal(out, want, 32);
    assert_int_equal(oaep_decrypt(ek_key, "DUPLICATE", el[1] + 2, el_len[1] - 2, out,
                                  sizeof(out)), -1);
    assert_int_equal(oaep_decrypt(srk_key, "IDENTITY", el[1] + 2, el_len[1] - 2, out,
                                  sizeof(out)), -1);
    /* #4: OAEP(SRK, "DUPLICATE\0", duplication seed) */
    pattern(want, 32, FIXED_DUP_SEED);
    assert_int_equal(oaep_decrypt(srk_key, "DUPLICATE", el[3] + 2, el_len[3] - 2, out,
                                  sizeof(out)), 32);
    assert_memory_equal(out, want, 32);

    /* #1 = TPM2B(TPM2B(integrity) ‖ CFB(KDFa(seed,"STORAGE",Name(SRK)), TPM2B(innerKey))) */
    assert_int_equal(el_len[0], 2 + 2 + 32 + 18);
    pattern(want, 32, FIXED_CRED_SEED);
    kdfa_independent(want, 32, "INTEGRITY", NULL, 0, NULL, 0, 256, hkey);
    {
        uint8_t msg[18 + TPM_NAME_SIZE];

        memcpy(msg, el[0] + 36, 18);
        memcpy(msg + 18, srk.name, TPM_NAME_SIZE);
        assert_non_null(HMAC(EVP_sha256(), hkey, 32, msg, sizeof(msg), mac, &maclen));
        assert_memory_equal(el[0] + 4, mac, 32);
    }
    kdfa_independent(want, 32, "STORAGE", srk.name, TPM_NAME_SIZE, NULL, 0, 128, sym);
    c = EVP_CIPHER_CTX_new();
    assert_non_null(c);
    assert_int_equal(EVP_DecryptInit_ex2(c, EVP_aes_128_cfb128(), sym, iv, NULL), 1);
    assert_int_equal(EVP_DecryptUpdate(c, ident, &outl, el[0] + 36, 18), 1);
    assert_int_equal(outl, 18);
    EVP_CIPHER_CTX_free(c);
    pattern(want, 16, FIXED_INNER_KEY);
    assert_int_equal(ident[0], 0);
    assert_int_equal(ident[1], 16);
    assert_memory_equal(ident + 2, want, 16);

    EVP_PKEY_free(ek_key);
    EVP_PKEY_free(srk_key);
}

static void test_blob_errors(void **state)
{
    struct tpm_public ek, srk, obj;
    uint8_t k[32] = {0}, buf[100];
    struct fixed_rng rng_state;
    struct tpm_blob_rng rng = {fixed_fill, &rng_state};
    struct tpm_blob_rng no_fill = {NULL, NULL};
    char *b64 = (char *)"sentinel";
    size_t len;

    (void)state;
    parse_b64(EK_B64, TPM_PUBLIC_PARENT, &ek);
    parse_b64(SRK_B64, TPM_PUBLIC_PARENT, &srk);
    len = unhex(ref_public, buf, sizeof(buf));
    assert_int_equal(tpm_public_parse(buf, len, TPM_PUBLIC_ANY, &obj, NULL), 0);

    /* an rng failure at any of the four draws is returned, with no output */
    for (int i = 0; i < 4; i++) {
        rng_state = (struct fixed_rng){.fail_at = i};
        b64 = (char *)"sentinel";
        assert_int_equal(tpm_activation_blob(&ek, &srk, k, &rng, &b64), PROV_ECRYPTO);
        assert_null(b64);
        assert_int_equal(rng_state.calls, i);
    }
    assert_int_equal(tpm_activation_blob(&obj, &srk, k, NULL, &b64), PROV_EINVAL);
    assert_int_equal(tpm_activation_blob(&ek, &obj, k, NULL, &b64), PROV_EINVAL);
    assert_int_equal(tpm_activation_blob(NULL, &srk, k, NULL, &b64), PROV_EINVAL);
    assert_int_equal(tpm_activation_blob(&ek, &srk, NULL, NULL, &b64), PROV_EINVAL);
    assert_int_equal(tpm_activation_blob(&ek, &srk, k, &no_fill, &b64), PROV_EINVAL);
    assert_null(b64);
    assert_int_equal(tpm_activation_blob(&ek, &srk, k, NULL, NULL), PROV_EINVAL);
    /* nothing here leaves errors on the OpenSSL queue */
    assert_int_equal(ERR_peek_error(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registration_id),
        cmocka_unit_test(test_parse_captured_keys),
        cmocka_unit_test(test_name),
        cmocka_unit_test(test_kdfa),
        cmocka_unit_test(test_parse_refusals),
        cmocka_unit_test(test_blob_matches_reference),
        cmocka_unit_test(test_blob_oaep_elements),
        cmocka_unit_test(test_blob_errors),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
