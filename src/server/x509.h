/*
 * X.509 helpers for attestation and for the service API, on OpenSSL 3
 * (X509_STORE / X509_verify_cert for chains: no hand-written chain logic).
 * Nothing here touches the network or the store. Every function leaves the
 * calling thread's OpenSSL error queue as it found it. Thread-safe.
 */
#ifndef PROV_SERVER_X509_H
#define PROV_SERVER_X509_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <jansson.h>
#include <openssl/x509.h>

/* Input limits of the parsers (bytes of text) and of chain verification. */
#define PROV_X509_MAX_TEXT (64 * 1024)      /* x509_parse_one */
#define PROV_X509_MAX_BUNDLE (1024 * 1024)  /* x509_parse_pem_chain */
#define PROV_X509_MAX_BUNDLE_CERTS 256
#define PROV_X509_MAX_DEPTH 16              /* X509_VERIFY_PARAM_set_depth */

/*
 * Parses one certificate given as PEM text or as bare base64 DER (the two
 * forms the Azure SDKs send); surrounding whitespace and line breaks inside
 * the base64 are allowed. Refused (NULL): more than PROV_X509_MAX_TEXT bytes,
 * anything before or after the one certificate, a second PEM block, a private
 * key ("a private key is not a certificate"), DER with trailing bytes. Returns
 * the certificate (caller frees with X509_free) or NULL with a reason (static
 * string) in *why (why may be NULL; *why is NULL on success).
 */
X509 *x509_parse_one(const char *text, const char **why);

/*
 * Parses every PEM certificate in text (at most PROV_X509_MAX_BUNDLE bytes and
 * PROV_X509_MAX_BUNDLE_CERTS certificates), in order, at least one. Text
 * outside the PEM blocks is ignored (as OpenSSL's PEM reader does), but every
 * block must be a valid CERTIFICATE: a private key or any other block fails
 * the whole bundle. Caller frees with sk_X509_pop_free(chain, X509_free);
 * NULL with a static reason in *why.
 */
STACK_OF(X509) *x509_parse_pem_chain(const char *text, const char **why);

/* PEM text of cert, caller frees with free(). NULL on OOM. */
char *x509_to_pem(X509 *cert);

/*
 * Upper-case hex SHA-1 / SHA-256 of the DER encoding, no separators (what
 * `openssl x509 -fingerprint` prints without the colons); out holds 41 / 65
 * bytes ("" if the digest cannot be computed).
 */
void x509_sha1_thumbprint(X509 *cert, char out[41]);
void x509_sha256_thumbprint(X509 *cert, char out[65]);

/*
 * DPS X509CertificateInfo: {"subjectName","sha1Thumbprint","sha256Thumbprint",
 * "issuerName","notBeforeUtc","notAfterUtc","serialNumber","version"}.
 * Names in the .NET form "CN=dev, OU=unit, O=org, C=US": most specific RDN
 * first (the order of `openssl x509 -nameopt RFC2253`, the reverse of the DER
 * order), ", " between RDNs, " + " inside a multi-valued RDN, keys CN OU O L
 * S C E STREET DC SERIALNUMBER T G SN I PostalCode Description POBox Phone,
 * other attributes as OID.n.n.n; a value is put in double quotes (inner
 * quotes doubled) when empty, starting or ending with a space, or containing
 * , + = " newline < > # or ;. Thumbprints as x509_sha*_thumbprint. Times
 * "YYYY-MM-DDTHH:MM:SSZ" ("" if unreadable). serialNumber: upper-case hex of
 * the serial's bytes, as `openssl x509 -serial` prints it (no leading 00 added
 * for a high first bit). version: 1..3 (X509_get_version + 1).
 * New reference, NULL on OOM (or cert == NULL).
 */
json_t *x509_info(X509 *cert);

/*
 * The subject's first CN (DER order) as UTF-8, copied into out; false (out =
 * "") when absent, too long for out, or containing a NUL byte.
 */
bool x509_subject_cn(X509 *cert, char *out, size_t outlen);

/*
 * Is cert the certificate stored as text (PEM or base64 DER, as enrollments
 * hold it)? Compares DER bytes; nothing is parsed with OpenSSL, so this is
 * cheap enough for every request of a pinned device.
 */
bool x509_same_der(const char *text, X509 *cert);

/*
 * Compares a thumbprint as a client may write it (hex, any case, optional
 * ':' or ' ' separators anywhere, 40 digits = SHA-1 or 64 digits = SHA-256)
 * with cert's, with CRYPTO_memcmp. false for any other form.
 */
bool x509_thumbprint_matches(X509 *cert, const char *thumbprint);

/* Why a chain failed, for the log and the device's message. */
struct x509_verdict {
    int depth;              /* chain element that failed: 0 = leaf, -1 = none/unknown */
    int error;              /* OpenSSL X509_V_ERR_*, 0 when verified */
    char message[256];      /* "certificate 1 (CN=Int CA): not a CA (basic constraints)" */
    int anchor_depth;       /* on success: depth in the verified chain of the anchor; else -1 */
};

/*
 * Messages have the form "certificate <depth> (CN=<cn>): <reason>" (the whole
 * subject when there is no CN; non-printable bytes shown as '?'); reasons
 * include "expired at 2030-01-01T00:00:00Z", "not yet valid until <time>",
 * "not a CA (basic constraints)", "issuer not trusted (unknown CA)",
 * "self-signed and not trusted (unknown CA)", "path length exceeded ...",
 * "bad signature ...", "unsuitable purpose: extended key usage lacks
 * clientAuth", "unsuitable key usage: lacks digitalSignature", and otherwise
 * X509_verify_cert_error_string. On success depth = -1, error = 0 and message
 * is "verified up to certificate <anchor_depth> (CN=...)".
 */

/*
 * Verifies leaf for TLS client authentication against trust anchors
 * (anchors may be roots or intermediates: X509_V_FLAG_PARTIAL_CHAIN), using
 * untrusted (the device's intermediates, then the group's; may be NULL) to
 * build the chain. Enforces validity periods at `now` (0 = current time),
 * basic constraints, key usage, extended key usage (clientAuth when present)
 * and path length, with X509_V_FLAG_X509_STRICT (OpenSSL 3.0's RFC 5280
 * checks: among others a CA certificate needs critical basic constraints, key
 * usage and a subject key identifier, and a leaf an authority key identifier;
 * a CA made by plain `openssl req -x509` lacks key usage and is refused). At most
 * PROV_X509_MAX_DEPTH intermediates. A leaf that is itself among the anchors
 * verifies with anchor_depth 0. Returns 0 when verified, PROV_EAUTH when
 * refused, PROV_ENOMEM / PROV_EINTERNAL when OpenSSL failed (v->error is then
 * X509_V_ERR_UNSPECIFIED or X509_V_ERR_OUT_OF_MEM), PROV_EINVAL for a NULL
 * leaf; fills *v in every case (v may be NULL). Nothing is retained.
 */
int x509_verify_chain(X509 *leaf, STACK_OF(X509) *untrusted, STACK_OF(X509) *anchors,
                      time_t now, struct x509_verdict *v);

/*
 * The same, and on success (when chain_out is not NULL) the verified chain,
 * leaf first and the anchor last (at anchor_depth); caller frees with
 * sk_X509_pop_free(chain, X509_free). *chain_out is NULL on failure.
 */
int x509_verify_chain_ex(X509 *leaf, STACK_OF(X509) *untrusted, STACK_OF(X509) *anchors,
                         time_t now, struct x509_verdict *v, STACK_OF(X509) **chain_out);

/*
 * Checks a leaf pinned by an individual enrollment: only its validity period
 * at now (0 = current time; the same comparisons as X509_verify_cert). 0
 * (anchor_depth 0) or PROV_EAUTH with *v filled as by x509_verify_chain
 * ("certificate 0 (CN=dev): expired at ..."); PROV_EINVAL for a NULL cert.
 */
int x509_check_validity(X509 *cert, time_t now, struct x509_verdict *v);

/*
 * Proof of possession: proof must carry subject CN == code (exact,
 * case-sensitive), be signed by ca's key (issuer name == ca subject and
 * X509_verify with ca's public key succeeds), and be within its validity
 * period at now (0 = current time). ca need not be self-signed (an
 * intermediate can be proven). 0, or PROV_EAUTH with a static reason in *why
 * (PROV_EINVAL when an argument is NULL or code is empty).
 */
int x509_verify_pop(X509 *ca, X509 *proof, const char *code, time_t now, const char **why);

/* true when cert is a CA certificate (basic constraints CA:TRUE, extensions decodable). */
bool x509_is_ca(X509 *cert);

#endif
