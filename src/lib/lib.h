/*
 * libprov internals: shared by the library's own files only, never installed.
 * The project's errors.h comes first so that the public header takes the
 * error enum from it (see PROV_COMMON_ERRORS_H in prov/prov.h).
 */
#ifndef PROV_LIB_LIB_H
#define PROV_LIB_LIB_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "../common/errors.h"
#include "prov/prov.h"

#define PROV_API_VERSION "2021-06-01"
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
};

struct prov_client {
    char *host;          /* as given: name[:port] or [v6][:port] */
    char *id_scope;
    char *registration_id; /* NULL until given in the options or taken from a certificate */
    bool regid_from_cert;  /* registration_id is the CN of the current certificate */
    char *ca_file;       /* NULL = system store */
    char *payload_json;  /* compact re-serialisation of the caller's JSON, or NULL */
    int timeout_seconds;
    char *base_url;      /* https://host/{scope}/registrations/{regid}, path segments
                            encoded; NULL while registration_id is */
    enum lib_cred cred;
    char key_b64[PROV_KEY_B64_MAX]; /* device key (LIB_CRED_KEY); wiped on free */
    char *cert_file;     /* LIB_CRED_X509: PEM leaf [+ intermediates] */
    char *key_file;      /* LIB_CRED_X509: PEM private key of the leaf */
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
