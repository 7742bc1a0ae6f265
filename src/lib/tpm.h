/*
 * libprov internals: the TPM 2.0 backend of TPM attestation (device protocol
 * §5) on tpm2-tss ESAPI. It knows nothing about clients or HTTP: it opens a
 * TPM through a TCTI configuration string, makes sure the EK and the SRK
 * exist at their persistent handles, imports "authenticationKey" blobs into
 * the identity key at 0x81000100 and computes HMAC-SHA256 with that key.
 * tests/tools/tpm_device_tool drives it directly, so only tpm.c and log.c
 * may be linked in (see src/lib/meson.build).
 *
 * Every transient object and session the backend creates is flushed before
 * the function returns (swtpm has no resource manager). The TPM's owner and
 * endorsement hierarchies must have an empty authorization, as the DPS SDKs
 * assume. Key material handed out by the TPM (the inner wrapper key) is
 * wiped as soon as it was used; nothing secret is logged.
 */
#ifndef PROV_LIB_TPM_H
#define PROV_LIB_TPM_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* Persistent handles of §5.1. */
#define LIB_TPM_EK_HANDLE 0x81010001u
#define LIB_TPM_SRK_HANDLE 0x81000001u
#define LIB_TPM_ID_KEY_HANDLE 0x81000100u
/* NV index of the RSA EK certificate (TCG EK Credential Profile). */
#define LIB_TPM_EK_CERT_NV_INDEX 0x01c00002u
/* lowercase base32 of a SHA-256 without padding: 52 characters + NUL */
#define LIB_TPM_REGID_SIZE 53
/* Largest TPM2B_PUBLIC the backend reads (an RSA-2048 key is 314 bytes). */
#define LIB_TPM_PUBLIC_MAX 1024
#define LIB_TPM_EK_CERT_MAX 8192
/* Largest authenticationKey blob accepted (an RSA-2048 one is 798 bytes). */
#define LIB_TPM_BLOB_MAX 4096

struct lib_tpm;

/*
 * Opens the TPM named by tcti_conf (Tss2_TctiLdr_Initialize syntax, e.g.
 * "swtpm:host=127.0.0.1,port=2321" or "device:/dev/tpmrm0"; NULL or "" is
 * tpm2-tss's default TCTI), creates the EK and the SRK with the §5.1
 * templates where their handles are empty (persisting them with
 * EvictControl), and reads their public areas and the EK certificate, if the
 * TPM has one. Logs what it did. On success *out is an open TPM the caller
 * closes with lib_tpm_close().
 * 0, PROV_EIO (no TCTI or the TPM does not answer), PROV_ECRYPTO (a TPM
 * command failed), PROV_ENOMEM.
 */
int lib_tpm_open(const char *tcti_conf, struct lib_tpm **out);
void lib_tpm_close(struct lib_tpm *t);

/* The EK's and SRK's TPM2B_PUBLIC bytes, valid until lib_tpm_close. */
const uint8_t *lib_tpm_ek_public(const struct lib_tpm *t, size_t *len);
const uint8_t *lib_tpm_srk_public(const struct lib_tpm *t, size_t *len);
/* The DER EK certificate from NV 0x01c00002, or NULL (*len 0) when absent. */
const uint8_t *lib_tpm_ek_cert(const struct lib_tpm *t, size_t *len);

/*
 * The default registration id (§5.1): lowercase base32 without padding of
 * SHA-256 over the EK's TPM2B_PUBLIC bytes. 0 or PROV_ECRYPTO.
 */
int lib_tpm_registration_id(const struct lib_tpm *t, char out[LIB_TPM_REGID_SIZE]);

/*
 * The "tpm" object of the register body: {"endorsementKey": b64,
 * "storageRootKey": b64[, "endorsementKeyCertificate": b64 DER]}.
 * A new reference, or NULL when out of memory.
 */
json_t *lib_tpm_attestation_json(const struct lib_tpm *t);

/*
 * Imports an authenticationKey blob (§5.2, base64 text) as §5.3 does:
 * PolicySecret(endorsement) session, ActivateCredential(SRK, EK), Import
 * under the SRK with the AES-128-CFB inner wrapper, Load, EvictControl of
 * the old key at 0x81000100 (errors ignored) and of the new one to it.
 * 0; PROV_EPROTO (not base64 or not the §5.2 layout); PROV_ECRYPTO (the TPM
 * refused: a blob for another TPM, or corrupted); PROV_ENOMEM.
 */
int lib_tpm_import_blob(struct lib_tpm *t, const char *blob_b64);

/*
 * HMAC-SHA256 with the key at 0x81000100 over data: TPM2_HMAC, or an HMAC
 * sequence when len exceeds the TPM's input buffer. 0, PROV_ENOTFOUND (no
 * key at 0x81000100), PROV_ECRYPTO.
 */
int lib_tpm_hmac(struct lib_tpm *t, const void *data, size_t len, uint8_t mac[32]);

#endif
