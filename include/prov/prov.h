/*
 * libprov: device-side client for provd and other servers that speak the
 * Azure IoT Hub Device Provisioning Service (DPS) device protocol.
 *
 * A device describes its provisioning service (host, ID scope, registration
 * id), sets one credential (a symmetric key, an enrollment group key, or an
 * X.509 certificate and its private key) and calls prov_register(), which
 * sends the register request over HTTPS (or MQTT, see below), polls the
 * operation until the service has decided, and returns the assigned hub and
 * device id.
 *
 *     struct prov_options opt = PROV_OPTIONS_INIT;
 *     struct prov_client *c = NULL;
 *     struct prov_result *res = NULL;
 *     int r;
 *
 *     opt.host = "dps.example.net";
 *     opt.id_scope = "0ne00ABC123";
 *     opt.registration_id = "my-device-01";
 *     if ((r = prov_client_new(&opt, &c)) != 0 ||
 *         (r = prov_client_set_symmetric_key(c, key_b64)) != 0 ||
 *         (r = prov_register(c, &res)) != 0)
 *         ... prov_strerror(r), and res (may be NULL) says what the service answered ...
 *     prov_result_free(res);
 *     prov_client_free(c);
 *
 * An X.509 device leaves registration_id NULL (its certificate's subject CN
 * is the registration id) and calls
 * prov_client_set_x509(c, "device-chain.pem", "device-key.pem") instead.
 *
 * A TPM 2.0 device (since 0.4) calls prov_client_set_tpm(c, "device:/dev/tpmrm0")
 * instead; registration_id may then be NULL (the EK gives the default one).
 *
 * Transports (since 0.3): opt.transport = PROV_TRANSPORT_MQTT registers over
 * MQTT 3.1.1 on TLS (port 8883 unless the host carries one) instead of HTTPS
 * (port 443), with every credential kind; the answers and return codes are
 * the same. MQTT uses libmosquitto; see prov_register for what that implies.
 *
 * Conventions:
 * - Functions returning int return 0 on success or a negative PROV_E* code.
 * - Strings passed in are copied; the caller keeps ownership of its arguments.
 * - Every pointer handed back says who frees it and how.
 * - The library never prints. It reports what happened through the log
 *   callback (prov_set_log_callback); without one it is silent.
 * - Threads: one client must not be used by two threads at once; different
 *   clients may run in different threads. Set the log callback before the
 *   first client is created.
 * - Secrets (keys, SAS tokens) are never logged and are wiped when freed.
 * - X.509 needs libcurl built with OpenSSL (the Debian libcurl4 flavour).
 * - TPM needs tpm2-tss (libtss2-esys, -tctildr and a TCTI module).
 */
#ifndef PROV_PROV_H
#define PROV_PROV_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define PROV_EXPORT __attribute__((visibility("default")))
#else
#define PROV_EXPORT
#endif

/*
 * Error codes. PROV_ERROR_MAP(XX) lists them as XX(NAME, value); the enum
 * defines PROV_E<NAME> = value. The values are stable.
 *   NOMEM     out of memory
 *   INVAL     an argument or option is invalid (a log message says which)
 *   IO        network failure (name resolution, connect, send, receive)
 *   TIMEOUT   the overall timeout passed before the service decided
 *   AGAIN     try again
 *   PROTO     the service answered something this library does not understand,
 *             or an HTTP error this library has no better code for
 *   TLS       TLS handshake or certificate verification failed
 *   CRYPTO    a cryptographic operation failed
 *   AUTH      the service refused the credential (HTTP 401/403, or a failed
 *             registration whose errorCode starts with 401 or 403)
 *   NOTFOUND  the service does not know the scope or registration (HTTP 404)
 *   EXISTS, STORE, LIMIT, CONFLICT: not returned by the device API
 *   INTERNAL  a bug
 *   PRECONDITION  the service finished the registration with status "failed"
 *             for a reason other than authentication (see the result)
 *   DISABLED  the enrollment is disabled (status "disabled")
 */
#define PROV_ERROR_MAP(XX)                                                                    \
    XX(NOMEM, -1) XX(INVAL, -2) XX(IO, -3) XX(TIMEOUT, -4) XX(AGAIN, -5) XX(PROTO, -6)      \
    XX(TLS, -7) XX(CRYPTO, -8) XX(AUTH, -9) XX(NOTFOUND, -10) XX(EXISTS, -11) XX(STORE, -12) \
    XX(LIMIT, -13) XX(INTERNAL, -14) XX(PRECONDITION, -15) XX(DISABLED, -16)              \
    XX(CONFLICT, -17)

/* Inside libprov the same enum comes from the project's internal errors.h. */
#ifndef PROV_COMMON_ERRORS_H
enum prov_err {
    PROV_OK = 0,
#define PROV_ERROR_ENUM_(name, val) PROV_E##name = (val),
    PROV_ERROR_MAP(PROV_ERROR_ENUM_)
#undef PROV_ERROR_ENUM_
};
#endif

/* Text for an error code; a static string, never NULL, not to be freed. */
PROV_EXPORT const char *prov_strerror(int err);

/* Frees memory the library documents as "free with prov_free()". NULL is fine. */
PROV_EXPORT void prov_free(void *p);

/*
 * Logging. The callback receives one message per event, without a trailing
 * newline; msg is valid only during the call. It may be called from any
 * thread that runs a libprov function. cb NULL turns logging off (the
 * default). Not thread-safe itself: call it before creating clients.
 */
enum prov_log_level {
    PROV_LOG_ERROR = 0,
    PROV_LOG_WARN = 1,
    PROV_LOG_INFO = 2,
    PROV_LOG_DEBUG = 3,
};
typedef void (*prov_log_fn)(int level, const char *msg, void *arg);
PROV_EXPORT void prov_set_log_callback(prov_log_fn cb, void *arg);

/* How prov_register talks to the service (device protocol §3 and §6). */
enum prov_transport {
    PROV_TRANSPORT_HTTPS = 0, /* HTTPS, port 443 by default */
    PROV_TRANSPORT_MQTT = 1,  /* MQTT 3.1.1 over TLS, port 8883 by default */
};

/*
 * The transport's name, "https" or "mqtt"; NULL for an unknown value. A static
 * string, not to be freed. Since 0.3.
 */
PROV_EXPORT const char *prov_transport_name(int transport);

/*
 * Client options. Always start from PROV_OPTIONS_INIT: fields are appended in
 * later versions, and the size field tells the library which ones this
 * program knows about. All strings are copied by prov_client_new().
 */
struct prov_options {
    size_t size;                 /* sizeof(struct prov_options); set by PROV_OPTIONS_INIT */
    const char *host;            /* "name", "name:port", "[v6addr]" or "[v6addr]:port";
                                    port defaults to 443 (HTTPS) or 8883 (MQTT). Required */
    const char *id_scope;        /* required */
    const char *registration_id; /* 1..128 of [A-Za-z0-9-._:], ends alnum or '-'. Required
                                    for keys; with X.509, NULL takes the certificate's
                                    subject CN, and a given id must equal the CN */
    const char *ca_file;         /* PEM bundle of trusted CAs; NULL = system store */
    const char *payload_json;    /* optional JSON value sent as "payload" */
    int timeout_seconds;         /* overall limit for prov_register; 0 = 60 */
    /* since 0.3; a libprov older than the program refuses a non-zero value */
    enum prov_transport transport; /* PROV_TRANSPORT_HTTPS (0, the default) or _MQTT */
};
#define PROV_OPTIONS_INIT                                                   \
    { sizeof(struct prov_options), NULL, NULL, NULL, NULL, NULL, 0,         \
      PROV_TRANSPORT_HTTPS }

struct prov_client;

/*
 * Checks the options and creates a client; no network traffic happens here.
 * On success *out is a client the caller frees with prov_client_free().
 * Returns 0, PROV_EINVAL (logged with the reason) or PROV_ENOMEM; *out is
 * NULL on failure.
 */
PROV_EXPORT int prov_client_new(const struct prov_options *opt, struct prov_client **out);

/* Frees the client and wipes its key. NULL is fine. */
PROV_EXPORT void prov_client_free(struct prov_client *c);

/*
 * Credentials. A client uses one kind: keys (the two functions below),
 * X.509 (prov_client_set_x509) or a TPM (prov_client_set_tpm). Once one kind
 * is set, setting another kind returns PROV_EINVAL; within a kind the last
 * call wins.
 *
 * The key is the base64 text of 16..64 bytes. prov_client_set_symmetric_key
 * takes the device's own key (individual enrollment, or an already derived
 * group key). prov_client_set_group_key takes an enrollment group's key and
 * derives the device key from it with the registration id:
 * base64(HMAC-SHA256(group key, registration id)). Both need the options'
 * registration_id. The library keeps its own copy; wipe yours when you are
 * done. Returns 0, PROV_EINVAL or PROV_ECRYPTO.
 */
PROV_EXPORT int prov_client_set_symmetric_key(struct prov_client *c, const char *key_b64);
PROV_EXPORT int prov_client_set_group_key(struct prov_client *c, const char *group_key_b64);

/*
 * X.509 (device protocol §4.3): the device authenticates with its TLS client
 * certificate only and sends no Authorization header. cert_file is PEM: the
 * device (leaf) certificate first, optionally followed by intermediate CA
 * certificates; all of them are sent in the TLS handshake. key_file is the
 * leaf's unencrypted PEM private key (PKCS#8, or traditional RSA/EC).
 *
 * Both files are read and checked now: every certificate must parse, the key
 * must match the leaf, and the leaf's subject CN (the first one) must be a
 * valid registration id. When the options' registration_id is NULL, the CN
 * becomes the registration id; when it was given, it must equal the CN
 * (ASCII case-insensitive) or the call fails. The files are read again at
 * each TLS handshake, so they must stay in place while the client is used.
 * The library keeps the file names, not the key; the key bytes it read here
 * are wiped.
 * Returns 0, PROV_EINVAL (logged with the reason: unreadable file, not PEM,
 * key does not match, no or invalid CN, CN differs from the registration id,
 * a symmetric key already set) or PROV_ENOMEM.
 */
PROV_EXPORT int prov_client_set_x509(struct prov_client *c, const char *cert_file,
                                     const char *key_file);

/*
 * TPM 2.0 attestation (device protocol §4.4 and §5; since 0.4), HTTPS only.
 *
 * tcti is a tpm2-tss TCTI configuration string, e.g. "device:/dev/tpmrm0"
 * (the kernel's resource manager), "swtpm:host=127.0.0.1,port=2321" or
 * "mssim:host=...,port=..."; NULL or "" lets tpm2-tss pick its default. The
 * TPM must be started (TPM2_Startup), and its owner and endorsement
 * hierarchies must have an empty authorization, as the DPS SDKs assume.
 *
 * prov_client_set_tpm opens the TPM and keeps it open until
 * prov_client_free (a TPM without resource manager, such as swtpm, then
 * serves no one else meanwhile). Where the persistent handles are empty it
 * creates the endorsement key (EK) at 0x81010001 with the TCG default RSA-2048
 * EK template and the storage root key (SRK) at 0x81000001 with the DPS SDKs'
 * template, and persists them; keys already there are used as they are. It
 * reads the EK certificate from NV index 0x01c00002 when the TPM has one.
 * When the options' registration_id is NULL, the registration id is the EK's
 * default one: lowercase base32 (no padding) of SHA-256 over the EK's
 * TPM2B_PUBLIC.
 * Calling it again closes the TPM first and opens the one named now; when
 * that fails, the client is left without a credential.
 * Returns 0; PROV_EINVAL (another credential kind is set, or the client uses
 * MQTT: no DPS MQTT client supports TPM attestation); PROV_EIO (the TCTI
 * cannot be loaded or the TPM does not answer); PROV_ECRYPTO (a TPM command
 * failed; logged with the TPM's reason); PROV_ENOMEM.
 *
 * prov_register then sends the register request with the EK, the SRK (and
 * the EK certificate, when there is one) but without Authorization; the
 * service answers 401 with an activation blob for this TPM, which the TPM
 * imports (ActivateCredential, Import) as the HMAC key at persistent handle
 * 0x81000100, replacing what was there; the TPM signs the SAS token of the
 * same request sent again and of the polls. When the device is assigned, the
 * answer's registrationState.tpm.authenticationKey (the key for the hub) is
 * imported the same way and stays at 0x81000100. Additional return codes:
 * PROV_ECRYPTO when the TPM refuses the blob (made for another TPM, or
 * damaged), PROV_EPROTO when a blob is malformed or the assigned answer has
 * none (*out still holds the answer). Key material is never seen outside
 * the TPM, except the AES key that unwraps the blob, which is wiped at once.
 * tpm2-tss writes its own error lines to stderr when a TPM command fails;
 * TSS2_LOG=all+none in the environment silences them.
 */
PROV_EXPORT int prov_client_set_tpm(struct prov_client *c, const char *tcti);

/*
 * What an operator needs to enroll a TPM device (an individual enrollment
 * with attestation "tpm"): opens the TPM as prov_client_set_tpm does
 * (creating the EK and SRK if needed), then closes it. Each output may be
 * NULL when not wanted; otherwise it receives a string the caller frees with
 * prov_free(): the default registration id, the base64 TPM2B_PUBLIC of the
 * EK and of the SRK, and the base64 DER EK certificate (NULL when the TPM
 * has none). Returns as prov_client_set_tpm; on failure every output is NULL.
 * Since 0.4.
 */
PROV_EXPORT int prov_tpm_identity(const char *tcti, char **registration_id,
                                  char **endorsement_key, char **storage_root_key,
                                  char **ek_certificate);

/*
 * The password the device presents to an MQTT broker that provd provisioned
 * it in (provd's mosquitto hub connector): base64(HMAC-SHA256(key,
 * "provd-hub-password:" || device_id)), device_id being the assigned
 * result's device_id. The key is the device key of a symmetric-key client
 * (for a group key, the derived key) or, for a TPM client, the hub key at
 * 0x81000100, used inside the TPM: the key of the last successful
 * registration with this TPM, so it works without registering again.
 * On success *out is a NUL-terminated string the caller wipes and frees
 * with prov_free(). Returns 0; PROV_EINVAL (X.509 client: it uses its
 * certificate at the hub; no credential; device_id empty or longer than
 * 128); PROV_ENOTFOUND (TPM: no key at 0x81000100 yet); PROV_ECRYPTO;
 * PROV_ENOMEM. Since 0.4.
 */
PROV_EXPORT int prov_client_hub_password(struct prov_client *c, const char *device_id,
                                         char **out);

/*
 * What the service answered last. The struct and every string in it belong to
 * the result: read them, free the whole thing with prov_result_free(). Fields
 * are appended in later versions; never allocate or copy this struct.
 * Strings are NULL when the service did not send the field.
 */
struct prov_result {
    int http_status;                     /* HTTP status of the last answer (MQTT: the
                                            status in its response topic) */
    const char *status;                  /* "assigned", "failed", "disabled", "assigning";
                                            NULL when the answer was an HTTP error */
    const char *operation_id;
    const char *registration_id;
    const char *assigned_hub;            /* set when status is "assigned" */
    const char *device_id;               /* set when status is "assigned" */
    const char *substatus;               /* e.g. "initialAssignment" */
    const char *created_utc;
    const char *last_updated_utc;
    const char *etag;
    long long error_code;                /* DPS errorCode (e.g. 401002); 0 when none */
    const char *error_message;           /* errorMessage (failed) or message (HTTP error) */
    const char *tracking_id;             /* trackingId of an HTTP error answer */
    const char *payload_json;            /* registrationState.payload as compact JSON */
    const char *registration_state_json; /* registrationState as compact JSON */
    const char *response_json;           /* the whole last response body as received */
    /* since 0.2 */
    const char *x509_json;               /* registrationState.x509 as compact JSON:
                                            {certificateInfo, enrollmentGroupId,
                                            signingCertificateInfo}; may be "{}" */
    const char *enrollment_group_id;     /* registrationState.x509.enrollmentGroupId, or
                                            registrationState.symmetricKey.enrollmentGroupId */
};

/*
 * Registers the device: PUT .../register, then polls the operation every
 * Retry-After seconds until the service decides or the timeout passes.
 * Reuses one TLS connection when the server keeps it open.
 *
 * Over MQTT (device protocol §6) it opens one connection per call: client id
 * = registration id, user name {idScope}/registrations/{registrationId}/
 * api-version=2019-03-31&ClientVersion=libprov%2F<version>, password = the
 * SAS token (none for X.509, which presents its certificate in the TLS
 * handshake), clean session, keepalive 60 s. It subscribes to
 * $dps/registrations/res/#, publishes the register request and then the
 * polls (QoS 1, each with a new $rid), and reads each answer from
 * $dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]; answers
 * to another $rid are ignored. Statuses 429 and 5xx are retried after
 * retry-after seconds until the timeout (HTTPS retries 429 and 503). A
 * CONNACK that refuses the connection gives PROV_EAUTH (bad user name or
 * password, not authorised), PROV_EAGAIN (server unavailable) or
 * PROV_EPROTO, with no result. Notes on libmosquitto:
 *   - the first MQTT registration calls mosquitto_lib_init() once for the
 *     process (under pthread_once; it also seeds rand()); the library never
 *     calls mosquitto_lib_cleanup(), so a program that uses libmosquitto
 *     itself keeps its own init/cleanup pairs;
 *   - mosquitto_new() sets SIGPIPE to SIG_IGN; libprov puts the previous
 *     disposition back and instead blocks SIGPIPE in the calling thread while
 *     it works, discarding one it caused;
 *   - libmosquitto keeps its own copy of the SAS token (which expires after
 *     an hour; never the key) and frees it without wiping;
 *   - its loop uses select(), so the socket must be below FD_SETSIZE (1024):
 *     a process with more descriptors open gets PROV_EIO.
 *
 * Returns 0 when the device was assigned; then (*out)->assigned_hub and
 * (*out)->device_id are set. Otherwise a negative code:
 *   PROV_EAUTH / PROV_ENOTFOUND / PROV_EPROTO  the service refused (HTTP error);
 *   PROV_EAUTH / PROV_EPRECONDITION / PROV_EDISABLED  final status failed/disabled;
 *   PROV_ETIMEOUT, PROV_EIO, PROV_ETLS, PROV_EPROTO, PROV_EINVAL (no credential set),
 *   PROV_ENOMEM, PROV_ECRYPTO.
 * A server that refuses an X.509 client certificate during the TLS handshake
 * gives PROV_ETLS; with TLS 1.3 the refusal may instead look like a dropped
 * connection, PROV_EIO, logged with a hint.
 * *out is NULL or a result the caller frees with prov_result_free(), whatever
 * the return value: it is set on success and whenever the service's last
 * answer could be read (an HTTP error body, a failed status, the last
 * "assigning" answer before a timeout).
 */
PROV_EXPORT int prov_register(struct prov_client *c, struct prov_result **out);

/* Frees a result. NULL is fine. */
PROV_EXPORT void prov_result_free(struct prov_result *r);

/*
 * A one-line JSON summary of a result:
 *   {"status":..,"assignedHub":..,"deviceId":..,"substatus":..,"operationId":..,"payload":..}
 * absent fields are null; "errorCode", "errorMessage", "enrollmentGroupId"
 * and "x509" (registrationState.x509 as the service sent it) are added when
 * set.
 * Returns a NUL-terminated string the caller frees with prov_free(), or NULL
 * (r NULL or out of memory).
 */
PROV_EXPORT char *prov_result_to_json(const struct prov_result *r);

#ifdef __cplusplus
}
#endif

#endif
