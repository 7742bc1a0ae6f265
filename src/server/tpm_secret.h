/*
 * The server secret of TPM attestation and the keys derived from it
 * (docs/protocol-decisions.md "TPM attestation").
 *
 * The secret is 32 random bytes in <data-dir>/tpm-secret.key (mode 0600),
 * made once, atomically (a temporary file created with O_EXCL, then link()ed
 * into place, so concurrent starts agree on one secret), and read by every
 * worker and every later start. It is never logged. Losing it makes every
 * outstanding challenge invalid and changes the hub key of every TPM device
 * (they get the new one by registering again): back it up with provd.db.
 *
 * From it, without any per-challenge state:
 *   K     = HMAC-SHA256(secret, "provd-tpm-challenge" 0x00 ‖ u64be(bucket) ‖
 *                       lower(scope) 0x00 ‖ lower(registration id) 0x00 ‖ ek_id)
 *           bucket = unix time / TPM_CHALLENGE_BUCKET_SECONDS; K of the current
 *           and the previous bucket are accepted. ek_id = the default
 *           registration id of the EK (lowercase base32 of SHA-256 of its
 *           TPM2B_PUBLIC, 52 characters).
 *   K_hub = HMAC-SHA256(secret, "provd-tpm-hub-key" 0x00 ‖ ek_id)
 *           stable per EK, so re-registrations keep the same hub credentials;
 *           derivable from the EK id alone, so every request that proved K
 *           (also a poll) knows the device's hub key.
 * Thread-safe.
 */
#ifndef PROV_SERVER_TPM_SECRET_H
#define PROV_SERVER_TPM_SECRET_H

#include <stddef.h>
#include <stdint.h>

#include "../common/util.h"

#define TPM_SECRET_SIZE 32
#define TPM_SECRET_FILE "tpm-secret.key"
#define TPM_DERIVED_KEY_SIZE 32
/* K changes every 10 minutes; a challenge stays usable for 10 to 20 minutes. */
#define TPM_CHALLENGE_BUCKET_SECONDS 600
#define TPM_CHALLENGE_LABEL "provd-tpm-challenge"
#define TPM_HUB_KEY_LABEL "provd-tpm-hub-key"

/*
 * Loads the secret of data_dir, creating the directory (0700) and the file if
 * missing; called once at start-up so that a broken data directory stops
 * provd there rather than failing registrations. 0, or PROV_EIO /
 * PROV_ECRYPTO / PROV_EINVAL with a one-line message in err (never the
 * secret).
 */
int tpm_secret_init(const char *data_dir, char *err, size_t errlen) PROV_WUR;

/*
 * Copies the secret of data_dir into out (loading it, as tpm_secret_init
 * does, the first time or when data_dir differs from the last one). 0 or a
 * negative PROV_E* (logged). The caller wipes out after use.
 */
int tpm_secret_get(const char *data_dir, uint8_t out[TPM_SECRET_SIZE]) PROV_WUR;

/* Wipes the cached secret (the next get reads the file again). */
void tpm_secret_forget(void);

/*
 * K for a challenge (see above). scope and registration_id are lowercased
 * here; ek_id is the EK's default registration id (tpm_registration_id).
 * 0, PROV_EINVAL (NULL or oversized argument) or PROV_ECRYPTO.
 */
int tpm_challenge_key(const uint8_t secret[TPM_SECRET_SIZE], const char *scope,
                      const char *registration_id, const char *ek_id, uint64_t bucket,
                      uint8_t out[TPM_DERIVED_KEY_SIZE]) PROV_WUR;

/* K_hub of an EK, from its EK id (lowercased here). 0, PROV_EINVAL or PROV_ECRYPTO. */
int tpm_hub_key(const uint8_t secret[TPM_SECRET_SIZE], const char *ek_id,
                uint8_t out[TPM_DERIVED_KEY_SIZE]) PROV_WUR;

#endif
