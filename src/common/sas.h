/*
 * Shared access signature tokens, as DPS devices and service clients send them:
 *   SharedAccessSignature sr=<sr>&sig=<urlenc(b64(HMAC-SHA256(key, sr "\n" se)))>&se=<n>[&skn=<name>]
 * The HMAC is always computed over sr and se exactly as they appear in the token
 * (every SDK signs what it sends), so the parser keeps them raw.
 */
#ifndef PROV_COMMON_SAS_H
#define PROV_COMMON_SAS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct sas_token {
    char sr_raw[512];     /* as sent */
    char sr[512];         /* percent-decoded */
    char se_raw[24];      /* as sent */
    long long se;         /* expiry, unix seconds */
    uint8_t sig[32];      /* decoded signature */
    char skn[129];        /* percent-decoded, "" when absent */
    bool has_skn;
};

/*
 * Parses an Authorization header value. Field names match case-insensitively,
 * in any order; sr, sig and se are required. Returns 0, or PROV_EPROTO with a
 * short reason in *why (static string).
 */
int sas_parse(const char *header, struct sas_token *out, const char **why) PROV_WUR;

/* HMAC-SHA256(key, sr_raw "\n" se_raw) into mac[32]. 0 or PROV_ECRYPTO. */
int sas_compute(const uint8_t *key, size_t keylen, const char *sr_raw, const char *se_raw,
                uint8_t mac[32]) PROV_WUR;

/* true when the token's signature was made with key (constant time). */
bool sas_check_key(const struct sas_token *tok, const uint8_t *key, size_t keylen);

/*
 * Decodes a base64 key and checks the token with it. false for an undecodable
 * key. The decoded key is wiped.
 */
bool sas_check_b64_key(const struct sas_token *tok, const char *b64key);

/*
 * Builds a token string "SharedAccessSignature sr=...&sig=...&se=...[&skn=...]"
 * with sr url-encoded. key_b64 is the base64 key. Caller frees. NULL on error.
 */
char *sas_build(const char *resource, const char *key_b64, const char *skn, long long expiry);

/*
 * Group key derivation: base64(HMAC-SHA256(b64decode(group_key), registration_id)).
 * out must hold 45 bytes. 0, PROV_EINVAL (bad group key) or PROV_ECRYPTO.
 */
int derive_device_key(const char *group_key_b64, const char *registration_id, char out[45]) PROV_WUR;
/* Raw variant: derived key bytes into out[32] from a decoded group key. */
int derive_device_key_raw(const uint8_t *group_key, size_t len, const char *registration_id,
                          uint8_t out[32]) PROV_WUR;

/*
 * The password a device uses at an MQTT broker that provd provisioned it in
 * (the mosquitto connector; docs/protocol-decisions.md "Hub credentials"):
 * base64(HMAC-SHA256(key, "provd-hub-password:" || device_id)), where key is
 * the device's key: its symmetric key (individual: the enrollment key it
 * signed with; group: the derived key) or, for TPM, the hub key the assigned
 * result delivered. A TPM device computes the same HMAC inside the TPM.
 * out must hold 45 bytes. 0 or PROV_ECRYPTO.
 */
#define PROV_HUB_PASSWORD_LABEL "provd-hub-password:"
int hub_password_derive(const uint8_t *key, size_t keylen, const char *device_id,
                        char out[45]) PROV_WUR;

#endif
