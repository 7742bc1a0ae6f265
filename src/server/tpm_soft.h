/*
 * The device side of an activation blob, done in software (device-protocol
 * §5.3): what a TPM does with it in ActivateCredential (EK) and Import (SRK),
 * given the EK's and SRK's RSA private keys. For the programs that play
 * devices without a TPM, prov-bench and the tests; provd never calls it (the
 * server library is static, so provd does not link it either).
 */
#ifndef PROV_SERVER_TPM_SOFT_H
#define PROV_SERVER_TPM_SOFT_H

#include <stdbool.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "tpm_blob.h"

/*
 * Opens a base64 activation blob: 0 with the 32-byte HMAC key it carries, or
 * -1 when these keys cannot open it or a check fails (the credential's and
 * the duplicate's integrity HMACs, the inner integrity, the sensitive area's
 * type and sizes, the public area's unique = H(seedValue ‖ K)).
 */
int tpm_soft_open(EVP_PKEY *ek, EVP_PKEY *srk, const uint8_t srk_name[TPM_NAME_SIZE],
                  const char *blob_b64, uint8_t key[32]);

/* Is it base64 of exactly six TPM2B elements (the §5.2 layout)? */
bool tpm_soft_blob_well_formed(const char *blob_b64);

#endif
