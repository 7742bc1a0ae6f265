/*
 * provctl internals: the parts of the admin CLI that do no network I/O
 * (connection strings, command lines, certificate files, request bodies,
 * human-readable output), kept in a static library so that they can be
 * unit-tested, plus the HTTP client.
 *
 * Borrowing rule: every const char * stored in these structs points into argv,
 * the environment or a struct pc_connstr and is valid as long as they are.
 */
#ifndef PROV_CLI_PROVCTL_H
#define PROV_CLI_PROVCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

#include "../common/limits.h"

#define PC_API_VERSION "2021-10-01"
#define PC_MAX_HUBS 50           /* DPS links at most 50 hubs */
#define PC_DEFAULT_TIMEOUT 60    /* seconds, whole request */
#define PC_TOKEN_TTL 3600        /* SAS token lifetime, as the Azure SDKs */
#define PC_MAX_CERT_FILE (64 * 1024) /* a certificate file larger than this is refused */
#define PC_CA_NAME_MAX PROV_MAX_CA_NAME

/* Exit statuses. */
#define PC_EXIT_OK 0
#define PC_EXIT_FAIL 1           /* HTTP error, connection or TLS error */
#define PC_EXIT_USAGE 2

/* ---- connection string ------------------------------------------------ */

struct pc_connstr {
    char *host;       /* HostName as given, may carry ":port" */
    char *key_name;   /* SharedAccessKeyName */
    char *key;        /* SharedAccessKey, base64; a secret, wiped by pc_connstr_free */
};

/*
 * Parses "HostName=h[:port];SharedAccessKeyName=n;SharedAccessKey=k" (any
 * order, names case-insensitive, empty segments ignored). Returns 0 or
 * PROV_EINVAL with a message in err that never contains the key. PROV_ENOMEM on
 * OOM. On failure out holds nothing to free. Free a success with
 * pc_connstr_free.
 */
int pc_connstr_parse(const char *s, struct pc_connstr *out, char *err, size_t errlen);
void pc_connstr_free(struct pc_connstr *cs);

/* ---- command line ----------------------------------------------------- */

enum pc_resource { PC_RES_NONE, PC_RES_ENROLLMENT, PC_RES_GROUP, PC_RES_REGISTRATION, PC_RES_CA };

enum pc_verb {
    PC_VERB_NONE,
    PC_VERB_CREATE,
    PC_VERB_UPDATE,
    PC_VERB_SHOW,
    PC_VERB_LIST,
    PC_VERB_DELETE,
    PC_VERB_UPLOAD,    /* ca upload */
    PC_VERB_CODE,      /* ca code: generate a verification code */
    PC_VERB_VERIFY,    /* ca verify: proof of possession */
    PC_VERB_HELP,      /* print help for (res, help_verb) and exit 0 */
    PC_VERB_VERSION,   /* print the version and exit 0 */
};

/* -1 in a tri-state field means "leave unchanged". */
struct pc_command {
    /* global options */
    const char *connection_string;  /* --connection-string, else PROVD_CONNECTION_STRING */
    const char *cacert;             /* --cacert, else PROVD_CA_FILE; NULL: system store */
    const char *id_scope;           /* --id-scope */
    bool json;
    bool verbose;
    long timeout;                   /* seconds */

    enum pc_resource res;
    enum pc_verb verb;
    enum pc_verb help_verb;         /* with PC_VERB_HELP: the verb asked about, or NONE */
    const char *id;                 /* entity id, or group id for registration list */

    /* entity changes (create and update) */
    bool symmetric_key;             /* --symmetric-key */
    const char *primary_key;
    const char *secondary_key;
    const char *device_id;
    const char *hubs[PC_MAX_HUBS];
    size_t nhubs;
    bool clear_hubs;                /* --all-hubs */
    const char *allocation_policy;  /* canonical spelling (static string) or NULL */
    const char *webhook_url;
    const char *webhook_api_version;
    int enabled;                    /* -1, 0 (--disabled) or 1 (--enabled) */
    int iot_edge;                   /* -1, 0 (--no-iot-edge) or 1 (--iot-edge) */
    const char *initial_twin;       /* JSON object text, checked by the parser */
    const char *etag;

    /* X.509 (enrollment and group create|update; ca upload|verify) */
    bool x509;                      /* --x509, also implied by the options below */
    const char *cert_file[2];       /* --cert, --secondary-cert (ca: --cert only) */
    const char *thumbprint;         /* --thumbprint: pin the primary by SHA-1 or SHA-256 */
    const char *signing_file[2];    /* --signing-cert, --secondary-signing-cert (group) */
    const char *ca_ref[2];          /* --ca-ref, --secondary-ca-ref (group) */
    bool verified;                  /* ca upload --verified */
    /*
     * The certificates named by cert_file (enrollment, ca) or signing_file
     * (group), as pc_read_cert returns them. Not set by the parser: the caller
     * reads the files and owns the texts.
     */
    const char *cert_text[2];

    bool keys;                      /* show --keys */
    long page_size;                 /* list --page-size, 0 = server default */
};

/*
 * Parses argv (argv[0] is the program name). env_cs and env_ca are the values
 * of PROVD_CONNECTION_STRING and PROVD_CA_FILE (may be NULL); options win.
 * Global options are accepted before and after the command words. Returns 0,
 * or PROV_EINVAL with a one-line message in err for a usage error.
 */
int pc_parse_args(int argc, char **argv, const char *env_cs, const char *env_ca,
                  struct pc_command *cmd, char *err, size_t errlen);

/* "enrollment", "group", "registration", "ca". */
const char *pc_res_name(enum pc_resource res);
const char *pc_verb_name(enum pc_verb verb);

/* Writes the help text for a resource/verb (PC_RES_NONE: the overview). */
void pc_print_help(FILE *f, enum pc_resource res, enum pc_verb verb);

/* ---- requests --------------------------------------------------------- */

/*
 * Collection path of a resource: "/enrollments", "/enrollmentGroups",
 * "/registrations" or "/certificates". Entity path: collection + "/" + url-encoded id + suffix
 * (suffix may be NULL, e.g. "/attestationmechanism" or "/query"). Caller frees;
 * NULL on OOM.
 */
const char *pc_collection_path(enum pc_resource res);
char *pc_entity_path(enum pc_resource res, const char *id, const char *suffix);

/*
 * Full URL: "https://" host path "?api-version=2021-10-01" ["&idScope=" enc].
 * Caller frees; NULL on OOM.
 */
char *pc_build_url(const char *host, const char *path, const char *id_scope);

/*
 * If-Match value for a user- or server-supplied etag: "*" and quoted values are
 * kept, a bare value is quoted, a W/ prefix is kept. Caller frees; NULL on OOM.
 */
char *pc_if_match(const char *etag);

/*
 * The entity to PUT for "create": id member, attestation and every option
 * that was given. Attestation: with x509, the certificates (cert_text), the
 * thumbprint pin or the CA references; otherwise symmetric keys (the given
 * ones, or an empty object so that the server generates them). NULL on OOM or
 * if initial_twin does not parse (the parser already rejects that). Caller
 * json_decref()s.
 */
json_t *pc_entity_new(const struct pc_command *cmd);

/*
 * Applies the changes of an "update" to cur, the entity fetched with GET:
 * removes the server-owned members (etag, dates, registrationState), replaces
 * the attestation with att (the entity's attestation mechanism with its
 * secrets, borrowed, may be NULL to keep cur's), overlays keys and options.
 * X.509 options replace the slots they name ({"certificate": text}, a
 * thumbprint pin or a CA name); slots not named stay info-only, which the
 * server reads as "keep the stored certificate". Returns 0, PROV_EINVAL (e.g.
 * keys given for a non-symmetric-key entity, with a message in err) or
 * PROV_ENOMEM.
 */
int pc_entity_apply(json_t *cur, const json_t *att, const struct pc_command *cmd, char *err,
                    size_t errlen);

/* true when an update command carries at least one change. */
bool pc_has_changes(const struct pc_command *cmd);

/* CA certificate names: 1 to 256 letters, digits, '-', '_' and '.'. */
bool pc_ca_name_valid(const char *name);

/*
 * Reads a certificate file for a request body: PEM text is sent as it is (a
 * file holding a private key is refused, so that a key never leaves the
 * machine), anything else is taken as DER and sent as base64. At most
 * PC_MAX_CERT_FILE bytes. Returns 0 with *out (caller frees), or PROV_EINVAL /
 * PROV_EIO / PROV_ENOMEM with a message naming the file in err.
 */
int pc_read_cert(const char *path, char **out, char *err, size_t errlen);

/*
 * Which files of cmd pc_read_cert must read into cmd->cert_text[0..1]: the
 * enrollment's --cert/--secondary-cert, the group's signing certificates, or
 * the ca command's --cert. Entries are NULL when not given.
 */
void pc_cert_files(const struct pc_command *cmd, const char *files[2]);

/*
 * Bodies of the CA API: upload {"certificate": cert_text[0]} plus
 * "isVerified": true with --verified; verify {"certificate": cert_text[0]}.
 * NULL on OOM or when cert_text[0] is unset. Caller json_decref()s.
 */
json_t *pc_ca_upload_body(const struct pc_command *cmd);
json_t *pc_ca_verify_body(const struct pc_command *cmd);

/* ---- output ----------------------------------------------------------- */

/*
 * Human-readable descriptions. The entity printers never print keys; the
 * caller passes att (an attestation mechanism with secrets) to pc_print_keys
 * when keys are to be shown.
 */
void pc_print_entity(FILE *f, enum pc_resource res, const json_t *e);
void pc_print_registration(FILE *f, const json_t *r);
/* Prints "primary key: ..." and "secondary key: ..." lines; 0 lines if att has no keys. */
int pc_print_keys(FILE *f, const json_t *att);
/* Aligned table plus a count line, for an array of entities of res (or CertificateResponses). */
void pc_print_list(FILE *f, enum pc_resource res, const json_t *arr);
/* A CertificateResponse: name, verification state, subject, expiry, thumbprint, etag, dates. */
void pc_print_ca(FILE *f, const json_t *c);

/*
 * The one-line message for an HTTP error status and its body (may be NULL or
 * not JSON): "<status> <errorCode>: <message>" when the body is a DPS error,
 * else "<status> <reason>[: <body text>]". Writes into out (always terminated).
 */
void pc_format_http_error(long status, const char *body, size_t bodylen, char *out,
                          size_t outlen);

/* ---- HTTP ------------------------------------------------------------- */

struct pc_client;

struct pc_response {
    long status;
    char *body;            /* NUL-terminated, may hold secrets; freed (wiped) by pc_response_free */
    size_t len;
    char *continuation;    /* x-ms-continuation header, NULL when absent or empty */
};

/*
 * A libcurl client bound to one host with one SAS token (built here from the
 * connection string, valid for PC_TOKEN_TTL). cacert may be NULL. Returns NULL
 * with a message in err.
 */
struct pc_client *pc_client_new(const struct pc_connstr *cs, const char *cacert,
                                const char *id_scope, long timeout, bool verbose, char *err,
                                size_t errlen);
void pc_client_free(struct pc_client *c);

/*
 * Sends one request. body may be NULL (no body; POST sends Content-Length: 0),
 * if_match, continuation NULL, page_size 0 to omit the headers. Returns 0 when
 * an HTTP response arrived (any status, in resp), or PROV_EIO/PROV_ETLS with
 * curl's error text in err. Free resp with pc_response_free either way.
 */
int pc_request(struct pc_client *c, const char *method, const char *path, const json_t *body,
               const char *if_match, const char *continuation, long page_size,
               struct pc_response *resp, char *err, size_t errlen);
void pc_response_free(struct pc_response *resp);

#endif
