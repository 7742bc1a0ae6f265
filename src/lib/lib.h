/*
 * libprov internals: shared by the library's own files only, never installed.
 * The project's errors.h comes first so that the public header takes the
 * error enum from it (see PROV_COMMON_ERRORS_H in prov/prov.h).
 */
#ifndef PROV_LIB_LIB_H
#define PROV_LIB_LIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "../common/errors.h"
#include "prov/prov.h"

#define PROV_API_VERSION "2021-06-01"
/* MQTT user names carry the api-version the Azure SDKs send over MQTT */
#define PROV_MQTT_API_VERSION "2019-03-31"
#define PROV_MQTT_PORT 8883
#define PROV_MQTT_KEEPALIVE 60
#define PROV_DEFAULT_TIMEOUT 60
#define PROV_MAX_TIMEOUT (24 * 3600)
#define PROV_SAS_LIFETIME 3600
#define PROV_RETRY_DEFAULT 2
#define PROV_RETRY_MIN 1
#define PROV_RETRY_MAX 60
/* base64 text of PROV_MAX_KEY_BYTES (64) bytes is 88 characters */
#define PROV_KEY_B64_MAX 89

/* Largest certificate or key file prov_client_set_x509 reads. */
#define PROV_MAX_PEM_FILE (256 * 1024)

enum lib_cred {
    LIB_CRED_NONE = 0,
    LIB_CRED_KEY,        /* symmetric key in key_b64 (own or derived from a group key) */
    LIB_CRED_X509,       /* TLS client certificate: cert_file, key_file */
    LIB_CRED_TPM,        /* TPM attestation (tpm.h): HMAC key inside the TPM */
};

struct lib_tpm;

struct prov_client {
    char *host;          /* as given: name[:port] or [v6][:port] */
    char *id_scope;
    char *registration_id; /* NULL until given in the options or taken from a certificate */
    bool regid_from_cert;  /* registration_id is the CN of the current certificate */
    char *ca_file;       /* NULL = system store */
    char *payload_json;  /* compact re-serialisation of the caller's JSON, or NULL */
    int timeout_seconds;
    enum prov_transport transport;
    char *base_url;      /* https://host/{scope}/registrations/{regid}, path segments
                            encoded; NULL while registration_id is */
    enum lib_cred cred;
    char key_b64[PROV_KEY_B64_MAX]; /* device key (LIB_CRED_KEY); wiped on free */
    char *cert_file;     /* LIB_CRED_X509: PEM leaf [+ intermediates] */
    char *key_file;      /* LIB_CRED_X509: PEM private key of the leaf */
    struct lib_tpm *tpm; /* LIB_CRED_TPM: the open TPM */
    bool regid_from_tpm; /* registration_id is the default one of the TPM's EK */
    char *tpm_sas;       /* LIB_CRED_TPM: the SAS token signed by the TPM after the
                            challenge, reused by the polls; wiped and freed after each
                            registration */
    long long tpm_sas_expiry; /* its se (unix seconds) */
    char tpm_key_name[65];    /* the challenge's keyName, the token's skn */
    void *curl;          /* CURL easy handle, created on first use, reused */
};

/* log.c: formats and hands a message to the user's callback, if any. */
void lib_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* client.c */
/* Checks host syntax: name[:port] or [v6][:port]. 0 or PROV_EINVAL. */
int lib_check_host(const char *host);
/*
 * Builds "https://{host}/{scope}/registrations/{regid}" with scope and regid
 * percent-encoded. Caller frees with free(). NULL on OOM.
 */
char *lib_build_url(const char *host, const char *scope, const char *regid);

/*
 * Splits a host checked by lib_check_host into the name (without the
 * brackets of an IPv6 literal) and the port (default_port when absent).
 * 0, or PROV_EINVAL when the name does not fit namelen.
 */
int lib_split_host(const char *host, int default_port, char *name, size_t namelen, int *port);

/* register.c: what both transports share */
int64_t lib_now_ms(void);
void lib_sleep_ms(int64_t ms);
/*
 * A retry-after value (HTTP Retry-After header, MQTT retry-after topic
 * property) in seconds: an integer, clamped to PROV_RETRY_MIN..MAX;
 * PROV_RETRY_DEFAULT when text is NULL or not a number (logged).
 */
int lib_retry_after(const char *text);
/* The DeviceRegistration JSON of the register request; caller frees with free(). NULL: OOM. */
char *lib_register_body(const struct prov_client *c);
/*
 * A SAS token for a key client, valid PROV_SAS_LIFETIME seconds; the caller
 * wipes and frees it with prov_freezero(t, strlen(t)). NULL on failure (logged).
 */
char *lib_sas_token(const struct prov_client *c);

/*
 * TPM clients (device protocol §4.4, §5): the 401 challenge of the first
 * register request. When the answer body carries an "authenticationKey",
 * imports it into the TPM and signs c->tpm_sas with it (skn = the answer's
 * "keyName"); *handled is then true and the caller sends the same request
 * again. *handled false: not a challenge, judge the answer as usual.
 * 0, or the import's or signing's error (logged).
 */
int lib_tpm_challenge(struct prov_client *c, const char *body, size_t len, bool *handled);
/*
 * TPM clients: renews c->tpm_sas when it expires within a minute (a long
 * poll); 0 or a negative code (logged).
 */
int lib_tpm_sas_refresh(struct prov_client *c);
/*
 * TPM clients, after "assigned": imports registrationState.tpm.authenticationKey
 * (the hub key) into the TPM at 0x81000100. 0, PROV_EPROTO when the result has
 * none, or the import's error (logged).
 */
int lib_tpm_assigned(struct prov_client *c, const struct prov_result *res);
/* Wipes and frees c->tpm_sas. */
void lib_tpm_sas_clear(struct prov_client *c);

/* One registration in progress, as the transports drive it. */
struct lib_reg {
    const struct prov_client *c;
    const char *status_word; /* "HTTP" or "MQTT status", for log lines */
    int64_t deadline;        /* monotonic ms */
    struct prov_result *res; /* the last answer; handed to the caller at the end */
    char *op_id;             /* the operation to poll, from the first "assigning" answer */
};

enum lib_next {
    LIB_NEXT_DONE = 0, /* the registration is over: the return value says how */
    LIB_NEXT_AGAIN,    /* send the same request again after the wait */
    LIB_NEXT_POLL,     /* poll g->op_id after the wait */
};

/*
 * Judges one answer: its status (HTTP, or MQTT topic status), whether the
 * transport retries that status (transient), and the body. Keeps the parsed
 * answer in g->res. With *next LIB_NEXT_AGAIN or LIB_NEXT_POLL it returns 0
 * and the caller waits (lib_reg_may_wait) and sends the next request; with
 * LIB_NEXT_DONE it returns the registration's result: 0 when assigned, or a
 * negative code (logged), exactly as prov_register documents.
 */
int lib_reg_answer(struct lib_reg *g, int status, bool transient, const char *body, size_t len,
                   enum lib_next *next);
/*
 * Whether waiting wait_s seconds before the next request stays inside the
 * deadline: 0 (logged at debug level with why), or PROV_ETIMEOUT (logged).
 */
int lib_reg_may_wait(const struct lib_reg *g, int wait_s, const char *why);

/* https.c: one registration over HTTPS (reusing the client's connection). */
int lib_https_register(struct prov_client *c, struct lib_reg *g);

/* mqtt.c: one registration over MQTT (its own connection). */
int lib_mqtt_register(struct prov_client *c, struct lib_reg *g);

/* x509.c */
/*
 * Reads and checks an X.509 credential (see prov_client_set_x509): the
 * certificates of cert_file, the key of key_file, key/leaf match, and the
 * leaf's first subject CN, which must be a valid registration id. On success
 * *cn_out is that CN (caller frees with free()) and *chain_len the number of
 * certificates in cert_file. Logs the reason of any failure.
 * Returns 0, PROV_EINVAL or PROV_ENOMEM.
 */
int lib_x509_load(const char *cert_file, const char *key_file, char **cn_out,
                  int *chain_len);

/* result.c */
/*
 * Parses a DPS response body (JSON object) into a new result. A body that is
 * not a JSON object gives PROV_EPROTO for 2xx answers; for HTTP errors an
 * unreadable body still yields a result with only http_status set.
 * On success *out is a result the caller frees with prov_result_free().
 */
int lib_result_parse(int http_status, const char *body, size_t len, struct prov_result **out);
/* The status string mapped to a return code: 0 for assigned, see prov.h. */
int lib_result_code(const struct prov_result *r);

#endif
