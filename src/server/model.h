/*
 * Enrollments and enrollment groups as the service API sees them: request
 * validation, normalisation into the stored document, and the shaping of
 * responses. Pure functions over jansson values (no store, no HTTP), so the
 * unit tests drive them directly.
 *
 * The stored document (store_doc.json) is the entity with canonical members:
 *   registrationId | enrollmentGroupId   the id, as the client spelled it
 *   attestation {type, <type's object>}  type canonical camelCase; secrets kept
 *                                        (symmetric keys, certificates, EK)
 *   provisioningStatus                   "enabled" | "disabled" (default enabled)
 *   capabilities {iotEdge}               default {iotEdge:false}
 *   reprovisionPolicy {updateHubAssignment, migrateDeviceData}  default true/true
 *   allocationPolicy                     canonical; absent = the service default
 *   iotHubs [...]                        configured hub spellings; absent = all hubs
 *   iotHubHostName, customAllocationDefinition, initialTwin, deviceId (individual
 *   only; absent = registrationId), optionalDeviceInformation: as sent
 *   any unknown member                   kept opaquely and echoed
 *   _provd {reprovisionPolicyExplicit}   private marker, never sent to clients
 *
 * X.509 attestation (attestation.x509), as stored:
 *   individual: clientCertificates {primary, secondary?}, each either
 *     {"certificate": PEM, "info": X509CertificateInfo}   a pinned certificate, or
 *     {"info": {"sha256Thumbprint"?, "sha1Thumbprint"?}}  a pinned thumbprint
 *                                        (upper-case hex, no separators; at least one)
 *   group: signingCertificates {primary, secondary?} of {"certificate": PEM,
 *     "info": ...} (CA certificates), or caReferences {primary, secondary?}
 *     naming CA certificates of the scope's store (STORE_CA, below).
 * Certificate bodies are never returned (GET, query, PUT, attestationmechanism):
 * only "info".
 *
 * TPM attestation (attestation.tpm): individual enrollments hold the device's
 * endorsementKey (and optional storageRootKey), base64 TPM2B_PUBLIC, as sent.
 * Groups (a provd extension) hold endorsementCertificateAuthorities: an array
 * of 1 to MODEL_MAX_TPM_GROUP_CAS CA certificates, stored as PEM, that issue
 * the EK certificates of the group's devices (returned as stored: they are
 * public manufacturer CAs).
 *
 * CA certificates (store kind STORE_CA, id = the certificate name, attestation
 * column "x509"; etag, created, updated are store columns):
 *   name                        as the client spelled it
 *   certificatePem              the CA certificate, PEM
 *   isVerified                  proof of possession passed (or asserted on upload)
 *   _provd {verificationCode}   the pending code (64 upper-case hex digits), absent
 *                               when none; only generateVerificationCode returns it
 * The read-only members (etag, createdDateTimeUtc, lastUpdatedDateTimeUtc,
 * registrationState) are never stored in the document: etag and timestamps are
 * store columns, registration state is its own record. JSON null members in a
 * request are treated as absent.
 */
#ifndef PROV_SERVER_MODEL_H
#define PROV_SERVER_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <jansson.h>

#include "../common/limits.h"
#include "../store/store.h"
#include "config.h"

/*
 * The six-digit error codes of the service API, in one table: the first three
 * digits are the HTTP status.
 */
enum svc_errcode {
    SVC_ERR_BAD_REQUEST = 400001,    /* malformed request line, header or path */
    SVC_ERR_INVALID_BODY = 400004,   /* body not JSON, wrong types, failed validation */
    SVC_ERR_INVALID_ID = 400005,     /* registration or group id not valid */
    SVC_ERR_INVALID_HEADER = 400006, /* x-ms-max-item-count, x-ms-continuation */
    SVC_ERR_QUOTA = 400007,          /* too many groups of a kind, or CA certificates */
    SVC_ERR_VERIFICATION = 400010,   /* CA proof of possession refused, or no code pending */
    SVC_ERR_UNAUTHORIZED = 401002,   /* missing, malformed, expired or wrong SAS */
    SVC_ERR_NO_RESOURCE = 404001,    /* unknown path */
    SVC_ERR_ENROLLMENT_NOT_FOUND = 404201,
    SVC_ERR_GROUP_NOT_FOUND = 404203,
    SVC_ERR_REGISTRATION_NOT_FOUND = 404204,
    SVC_ERR_SCOPE_NOT_FOUND = 404205, /* idScope query parameter names no scope */
    SVC_ERR_CA_NOT_FOUND = 404206,   /* no CA certificate of that name */
    SVC_ERR_METHOD = 405001,
    SVC_ERR_EXISTS = 409001,
    SVC_ERR_CERT_IN_USE = 409002,    /* the certificate is already in another enrollment */
    SVC_ERR_CA_REFERENCED = 409003,  /* CA certificate still referenced by a group */
    SVC_ERR_ETAG = 412001,
    SVC_ERR_ETAG_REQUIRED = 412002,  /* If-Match missing where the CA API requires it */
    SVC_ERR_INTERNAL = 500001, /* store failure, out of memory */
};

/* Member names of the private marker object. */
#define MODEL_PRIVATE "_provd"
#define MODEL_REPROVISION_EXPLICIT "reprovisionPolicyExplicit"

/* Output shaping flags for model_render(). */
enum model_render_flags {
    MODEL_WITH_KEYS = 1 << 0,  /* keep symmetric keys (PUT answer) */
    MODEL_WITH_CERTS = 1 << 1, /* keep x509 "certificate" bodies */
};

/* "registrationId" or "enrollmentGroupId". */
const char *model_id_member(enum store_kind kind);

/*
 * Parses a request body as one JSON object. With allow_empty, a body of only
 * whitespace yields *out = NULL and 0. Returns 0, or PROV_EPROTO with a
 * message (jansson's text with line and column) in err. *out is a new
 * reference; the caller frees it with model_json_free().
 */
int model_parse_object(const char *body, size_t len, bool allow_empty, json_t **out, char *err,
                       size_t errlen) PROV_WUR;

/*
 * Validates a create-or-update body for the entity `id` (the decoded path id,
 * already checked with id_is_valid) and builds the document to store.
 * existing: the stored document when updating, NULL when creating; symmetric
 * keys the body leaves out are kept from it (or generated when creating).
 * hubs/nhubs: the configured linked hubs.
 * On success *out is a new object (free with model_json_free()) and
 * *attestation a static canonical type name for the store column.
 * Returns 0, PROV_EINVAL with a client-safe message in err, or PROV_ENOMEM /
 * PROV_ECRYPTO.
 */
int model_prepare(enum store_kind kind, const char *id, const json_t *body, const json_t *existing,
                  const struct cfg_hub *hubs, size_t nhubs, json_t **out,
                  const char **attestation, char *err, size_t errlen) PROV_WUR;

/*
 * The entity as a client sees it: a copy of the stored document without the
 * private marker, with "etag" (quoted: "\"<etag>\""), createdDateTimeUtc and
 * lastUpdatedDateTimeUtc added; symmetric keys and x509 certificate bodies
 * dropped unless flags ask for them. NULL on OOM; caller frees with
 * model_json_free().
 */
json_t *model_render(const json_t *stored, const char *etag, const char *created,
                     const char *updated, unsigned flags);

/*
 * The stored attestation mechanism with its secrets (the attestationmechanism
 * answer). NULL when the document has none or on OOM; caller frees with
 * model_json_free().
 */
json_t *model_attestation(const json_t *stored);

/* Whether the client set reprovisionPolicy explicitly (the stored marker). */
bool model_reprovision_explicit(const json_t *stored);

/*
 * Normalises an If-Match value: strips blanks, an optional W/ and surrounding
 * quotes. "*" stays "*". Returns 0, or PROV_EINVAL for an empty or oversized
 * value.
 */
int model_etag_normalize(const char *if_match, char *out, size_t outlen) PROV_WUR;

/* "\"<etag>\"" into out; out must hold strlen(etag) + 3. */
void model_etag_quote(const char *etag, char *out, size_t outlen);

/*
 * Canonical enum values: the static canonical spelling of s (matched
 * case-insensitively), or NULL when s is not one of them.
 */
const char *model_attestation_type(const char *s);
const char *model_allocation_policy(const char *s);
const char *model_provisioning_status(const char *s);

/* Bulk modes. */
enum model_bulk_mode { BULK_CREATE, BULK_UPDATE, BULK_UPDATE_IF_MATCH, BULK_DELETE };
/* Case-insensitive; 0 or PROV_EINVAL. Accepts both updateIfMatchETag spellings. */
int model_bulk_mode(const char *s, enum model_bulk_mode *out) PROV_WUR;

/*
 * Query continuation tokens: base64url (no padding) of the last lower-case id
 * of a page. encode: out must hold 4 * ((strlen(id) + 2) / 3) + 1 bytes.
 * decode: 0 with the id in out (out must hold PROV_MAX_REG_ID + 1), or
 * PROV_EINVAL for anything that is not such a token.
 */
void model_continuation_encode(const char *id, char *out, size_t outlen);
int model_continuation_decode(const char *token, char *out, size_t outlen) PROV_WUR;

/*
 * Wipes the symmetric keys held in a document's string values, then drops the
 * reference. Accepts NULL. Use it for every object that may hold keys.
 */
void model_json_free(json_t *doc);

/* ---- X.509 attestation helpers (service layer checks that need the store) ---- */

/* Limits (DPS's): X.509 enrollment groups and CA certificates per ID scope. */
#define MODEL_MAX_X509_GROUPS 100
#define MODEL_MAX_CAS 25
/* endorsementCertificateAuthorities of one TPM enrollment group (provd's limit) */
#define MODEL_MAX_TPM_GROUP_CAS 10

/*
 * Whether two stored X.509 entities hold the same certificate in their
 * clientCertificates or signingCertificates (by SHA-256 thumbprint when both
 * entries know it, else by SHA-1). On true, thumbprint (if not NULL) receives
 * the matching thumbprint.
 */
bool model_x509_shares_certificate(const json_t *a, const json_t *b, char *thumbprint,
                                   size_t tplen);

/*
 * The thumbprints (SHA-256 and SHA-1, as their "info" holds them) of a stored
 * X.509 entity's clientCertificates or signingCertificates, borrowed from doc;
 * the count, 0..8. What the store's enrollment_x509_find looks up.
 */
size_t model_x509_thumbprints(const json_t *doc, const char *out[8]);

/* The caReferences names of a stored X.509 group (borrowed from doc); the count, 0..2. */
size_t model_x509_ca_references(const json_t *doc, const char *names[2]);

/* Whether a stored group references CA certificate name (case-insensitive). */
bool model_references_ca(const json_t *doc, const char *name);

/* ---- CA certificates (provd's admin API, the ARM shapes of DPS) ---- */

#define MODEL_CA_NAME_MAX PROV_MAX_CA_NAME
#define MODEL_CA_CODE_LEN 64 /* hex digits: 32 random bytes; a CN holds at most 64 */
#define MODEL_CA_PEM "certificatePem"
#define MODEL_CA_CODE "verificationCode"
#define MODEL_CA_TYPE "Microsoft.Devices/ProvisioningServices/Certificates"

/* 1 to 256 letters, digits, '-', '_' and '.'. */
bool model_ca_name_valid(const char *name);

/*
 * Validates an upload body {"certificate": PEM or base64 DER, "isVerified":
 * bool?} for CA certificate `name` and builds the document to store. The
 * certificate must be a CA (basic constraints CA:TRUE). existing: the stored
 * document when replacing, else NULL. isVerified when given is taken as is
 * (DPS "verify on upload"); when absent, re-uploading the same certificate
 * keeps its state (and pending code), a different one starts unverified.
 * 0 with *out (caller json_decref()s), PROV_EINVAL with a message, PROV_ENOMEM.
 */
int model_ca_prepare(const char *name, const json_t *body, const json_t *existing, json_t **out,
                     char *err, size_t errlen) PROV_WUR;

/* The pending verification code of a stored CA (borrowed), or NULL. */
const char *model_ca_code(const json_t *stored);

/*
 * Makes a fresh verification code (32 random bytes, upper-case hex), stores it
 * in the document and copies it into code. 0, PROV_ECRYPTO or PROV_ENOMEM.
 */
int model_ca_new_code(json_t *stored, char code[MODEL_CA_CODE_LEN + 1]) PROV_WUR;

/*
 * Proof of possession: body {"certificate": the verification certificate}
 * must have subject CN equal to the pending code and be signed by the stored
 * CA's key, within its validity at `now` (0 = the current time). On success
 * the document is marked verified and the code removed. Returns 0,
 * PROV_EINVAL (malformed body), PROV_EAUTH (refused or no code pending; the
 * reason in err), PROV_EINTERNAL (stored certificate unreadable), PROV_ENOMEM.
 */
int model_ca_verify(json_t *stored, const json_t *body, time_t now, char *err,
                    size_t errlen) PROV_WUR;

/*
 * CertificateResponse: {"id": "/certificates/<name>", "name", "type", "etag",
 * "properties": {"subject", "expiry", "thumbprint" (SHA-1, upper-case hex),
 * "isVerified", "certificate" (base64 DER), "created", "updated"}}, dates in
 * RFC 1123; with_code adds properties.verificationCode (when one is pending).
 * created/updated are RFC 3339 (store columns). NULL on OOM or an unreadable
 * stored certificate; caller json_decref()s.
 */
json_t *model_ca_render(const json_t *stored, const char *etag, const char *created,
                        const char *updated, bool with_code);

/*
 * "2039-12-31T23:59:59[.fff]Z" -> "Sat, 31 Dec 2039 23:59:59 GMT" (out: 30 bytes
 * or more). 0 or PROV_EINVAL.
 */
int model_rfc1123(const char *rfc3339, char *out, size_t outlen) PROV_WUR;

#endif
