/*
 * TPM 2.0 attestation, server side: the public areas a device sends (EK and
 * SRK as TPM2B_PUBLIC), their Names, the default registration id, and the
 * "authenticationKey" activation blob of the device-protocol reference §5:
 *
 *   TPM2B_ID_OBJECT ‖ TPM2B_ENCRYPTED_SECRET   MakeCredential to the EK, bound to
 *                                              Name(SRK); the credential is the
 *                                              16-byte inner wrapper key
 *   TPM2B_PRIVATE ‖ TPM2B_ENCRYPTED_SECRET     Duplicate of an HMAC-SHA256
 *                                              keyedHash object holding K, inner
 *                                              wrapper AES-128-CFB, new parent SRK
 *   TPM2B_PUBLIC                               that object's public area
 *   TPM2B (size 0)                             the "encrypted data" element
 *
 * A device (or tpm2-tools) runs PolicySecret(endorsement) + ActivateCredential,
 * Import with the recovered inner key, Load, and can then compute
 * HMAC-SHA256(K, ·). Everything here is done in software with OpenSSL 3 (EVP)
 * and tss2-mu; no TPM is involved. Only tpm_blob.c includes tss2 headers.
 * Thread-safe; nothing is logged.
 */
#ifndef PROV_SERVER_TPM_BLOB_H
#define PROV_SERVER_TPM_BLOB_H

#include <stddef.h>
#include <stdint.h>

#include "../common/util.h"

/* Algorithm ids and attribute bits (TPM 2.0 Part 2) the callers may look at. */
#define TPM_BLOB_ALG_RSA 0x0001
#define TPM_BLOB_ALG_SHA256 0x000B
#define TPM_BLOB_ALG_KEYEDHASH 0x0008
#define TPM_BLOB_ALG_AES 0x0006
#define TPM_BLOB_ALG_CFB 0x0043
#define TPM_BLOB_ALG_NULL 0x0010

/* Name = u16(nameAlg = SHA-256) ‖ SHA-256(TPMT_PUBLIC): 34 bytes. */
#define TPM_NAME_SIZE 34
/*
 * Largest marshalled TPMT_PUBLIC (an RSA-4096 key with a SHA-512 policy is
 * 604 bytes); a TPM2B_PUBLIC input may be 2 bytes longer.
 */
#define TPM_PUBLIC_AREA_MAX 640
#define TPM_RSA_MAX_BYTES 512
/* HMAC key K carried by the blob, and the inner wrapper key (AES-128). */
#define TPM_BLOB_HMAC_KEY_SIZE 32
#define TPM_BLOB_INNER_KEY_SIZE 16
/* lowercase base32 of a SHA-256 without padding: 52 characters + NUL. */
#define TPM_REGISTRATION_ID_SIZE 53

/* What a public area is parsed for. */
enum tpm_public_role {
    /*
     * Any object tss2-mu can unmarshal, nameAlg SHA-256: only the fields
     * below up to sym_* and area/name are meaningful.
     */
    TPM_PUBLIC_ANY,
    /*
     * The EK or the SRK, the keys a credential or a duplicate is encrypted
     * to: RSA with a 2048-bit modulus (top bit set), nameAlg SHA-256,
     * restricted + decrypt and not sign, symmetric AES-128-CFB, scheme NULL,
     * exponent 0 (read as 65537) or an odd value above 1.
     */
    TPM_PUBLIC_PARENT,
};

struct tpm_public {
    uint16_t type;                       /* TPM_BLOB_ALG_RSA, ... */
    uint16_t name_alg;                   /* always TPM_BLOB_ALG_SHA256 */
    uint32_t attributes;                 /* TPMA_OBJECT */
    uint16_t sym_alg;                    /* TPM_BLOB_ALG_NULL when absent */
    uint16_t sym_bits;
    uint16_t sym_mode;
    /* TPM_PUBLIC_PARENT only (RSA): */
    uint16_t key_bits;
    uint32_t exponent;                   /* 0 on the wire is stored as 65537 */
    size_t modulus_len;
    uint8_t modulus[TPM_RSA_MAX_BYTES];  /* big-endian n */
    /* The TPMT_PUBLIC bytes exactly as received, and their Name. */
    size_t area_len;
    uint8_t area[TPM_PUBLIC_AREA_MAX];
    uint8_t name[TPM_NAME_SIZE];
};

/*
 * Parses a TPM2B_PUBLIC (2-byte size, then a TPMT_PUBLIC, unmarshalled by tss2-mu).
 * Refused with PROV_EPROTO and a reason in *why (static string; why may be
 * NULL; *why is NULL on success): a size field that does not cover exactly the
 * rest of the input, a TPMT_PUBLIC that does not unmarshal or does not use all
 * of it, nameAlg other than SHA-256, and for TPM_PUBLIC_PARENT every key that
 * is not as described there. PROV_EINVAL for a NULL argument or an unknown
 * role, PROV_ECRYPTO if the Name cannot be hashed. out is written only once
 * the input is accepted (so only a PROV_ECRYPTO leaves it partly written).
 */
int tpm_public_parse(const uint8_t *tpm2b, size_t len, enum tpm_public_role role,
                     struct tpm_public *out, const char **why) PROV_WUR;

/*
 * Name of a public area: u16(0x000B) ‖ SHA-256(area), area being the
 * TPMT_PUBLIC bytes (a TPM2B_PUBLIC without its size). 0 or PROV_ECRYPTO.
 */
int tpm_name(const uint8_t *area, size_t len, uint8_t out[TPM_NAME_SIZE]) PROV_WUR;

/*
 * KDFa of TPM 2.0 Part 1 (11.4.10.2) with HMAC-SHA256: the first bits/8 bytes
 * of HMAC(key, u32(i) ‖ label ‖ 0x00 ‖ u ‖ v ‖ u32(bits)) for i = 1, 2, ...
 * label is a C string (its NUL is the 0x00). bits must be a non-zero multiple
 * of 8, at most 8192; out holds bits/8 bytes. 0, PROV_EINVAL or PROV_ECRYPTO
 * (out is wiped then).
 */
int tpm_kdfa(const uint8_t *key, size_t key_len, const char *label, const uint8_t *u,
             size_t u_len, const uint8_t *v, size_t v_len, size_t bits, uint8_t *out) PROV_WUR;

/* The random values of one blob, in the order they are asked for. */
enum tpm_blob_random {
    TPM_BLOB_RAND_INNER_KEY,        /* 16 bytes: inner wrapper key = the credential */
    TPM_BLOB_RAND_CREDENTIAL_SEED,  /* 32 bytes: MakeCredential seed (OAEP to the EK) */
    TPM_BLOB_RAND_OBFUSCATION,      /* 32 bytes: the HMAC object's seedValue */
    TPM_BLOB_RAND_DUPLICATE_SEED,   /* 32 bytes: Duplicate seed (OAEP to the SRK) */
};

/*
 * Test seam: where tpm_activation_blob gets its random values. fill writes
 * len bytes for `what` and returns 0 or a negative PROV_E* (which aborts the
 * build and is returned). With a fixed fill, every byte of the blob is
 * deterministic except the two RSA-OAEP ciphertexts (elements #2 and #4),
 * which OpenSSL randomizes with its own CSPRNG; tests check those by
 * decrypting them with the private key, not by comparing bytes.
 */
struct tpm_blob_rng {
    int (*fill)(void *arg, enum tpm_blob_random what, uint8_t *out, size_t len);
    void *arg;
};

/*
 * Builds the activation blob (§5.4) that gives the TPM holding ek and srk
 * (both parsed with TPM_PUBLIC_PARENT) the HMAC key hmac_key, and returns its
 * base64 text (standard alphabet, padded) in *b64_out; the caller frees it
 * with free(). rng NULL = the OpenSSL CSPRNG. The key, seeds, inner key and
 * every intermediate holding them are wiped before returning.
 * 0, PROV_EINVAL (NULL argument, a key that is not a parent), PROV_ENOMEM,
 * PROV_ECRYPTO, or the rng's error; *b64_out is NULL on failure.
 */
int tpm_activation_blob(const struct tpm_public *ek, const struct tpm_public *srk,
                        const uint8_t hmac_key[TPM_BLOB_HMAC_KEY_SIZE],
                        const struct tpm_blob_rng *rng, char **b64_out) PROV_WUR;

/*
 * The registration id a device uses by default (§5.1): lowercase RFC 4648
 * base32, without padding, of SHA-256 over the EK's TPM2B_PUBLIC bytes as
 * sent (the bytes are not parsed). out must hold TPM_REGISTRATION_ID_SIZE.
 * 0, PROV_EINVAL (NULL input or outlen too small) or PROV_ECRYPTO.
 */
int tpm_registration_id(const uint8_t *ek_tpm2b, size_t len, char *out, size_t outlen) PROV_WUR;

#endif
