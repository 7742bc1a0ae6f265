/*
 * prov-device: provisions one device through libprov and prints where it was
 * assigned. Uses only the public API (include/prov/prov.h) and libc.
 *
 * Exit status: 0 assigned, 1 registration failed, 2 usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prov/prov.h"

#define PROG "prov-device"
#define EXIT_USAGE 2

/* One credential per run: only one kind may be given. */
enum auth_kind {
    AUTH_NONE = 0,
    AUTH_SYMMETRIC_KEY,
    AUTH_GROUP_KEY,
    AUTH_X509, /* --cert FILE with --key FILE */
    AUTH_TPM,  /* --tpm [--tcti CONF] */
};

struct args {
    const char *scope;
    const char *registration_id;
    const char *host;
    const char *cacert;
    const char *payload;
    enum auth_kind auth;
    const char *auth_option; /* the option that gave the credential, for messages */
    char *key;               /* copy of the key; wiped before exit */
    const char *cert_file;   /* AUTH_X509: PEM leaf [+ intermediates] */
    const char *key_file;    /* AUTH_X509: PEM private key */
    const char *tcti;        /* AUTH_TPM: TCTI configuration; NULL = tpm2-tss default */
    bool tpm_identity;       /* --tpm-identity: print the TPM's EK/SRK and stop */
    bool hub_password;       /* --print-hub-password */
    int timeout;             /* 0 = library default */
    bool json;
    bool verbose;
    enum prov_transport transport; /* --transport, HTTPS by default */
    bool transport_given;
};

enum option_id {
    OPT_SCOPE = 256,
    OPT_REGISTRATION_ID,
    OPT_SYMMETRIC_KEY,
    OPT_GROUP_KEY,
    OPT_CERT,
    OPT_KEY,
    OPT_HOST,
    OPT_CACERT,
    OPT_PAYLOAD,
    OPT_TIMEOUT,
    OPT_TRANSPORT,
    OPT_TPM,
    OPT_TCTI,
    OPT_TPM_IDENTITY,
    OPT_HUB_PASSWORD,
    OPT_JSON,
    OPT_VERBOSE,
    OPT_HELP,
};

static const struct option long_options[] = {
    {"scope", required_argument, NULL, OPT_SCOPE},
    {"registration-id", required_argument, NULL, OPT_REGISTRATION_ID},
    {"symmetric-key", required_argument, NULL, OPT_SYMMETRIC_KEY},
    {"group-key", required_argument, NULL, OPT_GROUP_KEY},
    {"cert", required_argument, NULL, OPT_CERT},
    {"key", required_argument, NULL, OPT_KEY},
    {"host", required_argument, NULL, OPT_HOST},
    {"cacert", required_argument, NULL, OPT_CACERT},
    {"payload", required_argument, NULL, OPT_PAYLOAD},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"transport", required_argument, NULL, OPT_TRANSPORT},
    {"tpm", no_argument, NULL, OPT_TPM},
    {"tcti", required_argument, NULL, OPT_TCTI},
    {"tpm-identity", no_argument, NULL, OPT_TPM_IDENTITY},
    {"print-hub-password", no_argument, NULL, OPT_HUB_PASSWORD},
    {"json", no_argument, NULL, OPT_JSON},
    {"verbose", no_argument, NULL, OPT_VERBOSE},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " --scope SCOPE --registration-id ID\n"
            "                   (--symmetric-key KEY | --group-key KEY) --host HOST[:PORT]\n"
            "                   [--transport https|mqtt] [--cacert FILE] [--payload JSON]\n"
            "                   [--timeout SECONDS] [--json] [--verbose]\n"
            "       " PROG " --scope SCOPE [--registration-id ID]\n"
            "                   --cert FILE --key FILE --host HOST[:PORT] [options as above]\n"
            "       " PROG " --scope SCOPE [--registration-id ID] --tpm [--tcti CONF]\n"
            "                   --host HOST[:PORT] [options as above, HTTPS only]\n"
            "       " PROG " --tpm-identity [--tcti CONF] [--json]\n"
            "\n"
            "Registers a device with a DPS-compatible provisioning service over HTTPS\n"
            "or MQTT and prints the hub and device id it was assigned.\n"
            "\n"
            "  --scope SCOPE            ID scope of the provisioning service\n"
            "  --registration-id ID     the device's registration id; with --cert it\n"
            "                           defaults to, and must equal, the certificate's CN\n"
            "  --symmetric-key KEY      the device's base64 key (individual enrollment)\n"
            "  --group-key KEY          an enrollment group's base64 key; the device key is\n"
            "                           derived from it and the registration id\n"
            "  --cert FILE              X.509: the device certificate (PEM), optionally\n"
            "                           followed by intermediate CA certificates; all are\n"
            "                           sent in the TLS handshake\n"
            "  --key FILE               X.509: the certificate's private key (PEM, not\n"
            "                           encrypted)\n"
            "  --tpm                    TPM 2.0 attestation (HTTPS only): the EK and SRK are\n"
            "                           created at 0x81010001/0x81000001 if absent, the\n"
            "                           service's keys are imported at 0x81000100; the\n"
            "                           registration id defaults to the EK's\n"
            "  --tcti CONF              the TPM to use, as a tpm2-tss TCTI string, e.g.\n"
            "                           device:/dev/tpmrm0 or swtpm:host=127.0.0.1,port=2321\n"
            "                           (default: tpm2-tss's default TCTI)\n"
            "  --tpm-identity           print the TPM's default registration id, EK and SRK\n"
            "                           (base64 TPM2B_PUBLIC, what a TPM enrollment needs)\n"
            "                           and the EK certificate if it has one, then exit\n"
            "  --print-hub-password     after the assignment, also print the password for\n"
            "                           provd's MQTT hub (keys and --tpm; with --tpm it is\n"
            "                           computed inside the TPM)\n"
            "  --host HOST[:PORT]       service host name; the port defaults to 443, or to\n"
            "                           8883 with --transport mqtt\n"
            "  --transport https|mqtt   HTTPS (the default), or MQTT 3.1.1 over TLS; both\n"
            "                           take every credential kind\n"
            "  --cacert FILE            trust the CA certificates in FILE (PEM) instead of\n"
            "                           the system store\n"
            "  --payload JSON           JSON value sent to the service as the payload\n"
            "  --timeout SECONDS        give up after SECONDS (default 60)\n"
            "  --json                   print the result as one JSON object (with the\n"
            "                           service's \"x509\" details for X.509 devices, and\n"
            "                           \"hubPassword\" with --print-hub-password)\n"
            "  --verbose                log each step to stderr\n"
            "  --help                   print this help and exit\n"
            "\n"
            "Give exactly one credential: --symmetric-key, --group-key, --cert with --key,\n"
            "or --tpm.\n"
            "Exit status: 0 assigned, 1 registration failed, 2 usage error.\n");
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, PROG ": ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '" PROG " --help' for more information.\n");
    return EXIT_USAGE;
}

/* The last error the library logged, for the one-line failure message. */
static char last_error[1024];

static void on_log(int level, const char *msg, void *arg)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    const struct args *a = arg;

    if (level == PROV_LOG_ERROR)
        snprintf(last_error, sizeof(last_error), "%s", msg);
    if (a->verbose)
        fprintf(stderr, PROG ": %s: %s\n", level >= 0 && level <= 3 ? names[level] : "log",
                msg);
}

static int parse_timeout(const char *s, int *out)
{
    char *end;
    long v;

    if (s[0] < '0' || s[0] > '9')
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 1 || v > 86400)
        return -1;
    *out = (int)v;
    return 0;
}

/* Records the credential kind an option gives; a usage error for a second kind. */
static int set_kind(struct args *a, enum auth_kind kind, const char *option)
{
    if (a->auth != AUTH_NONE && a->auth != kind) {
        fprintf(stderr, PROG ": give only one of %s and %s\n", a->auth_option, option);
        fprintf(stderr, "Try '" PROG " --help' for more information.\n");
        return EXIT_USAGE;
    }
    if (a->auth == AUTH_NONE) {
        a->auth = kind;
        a->auth_option = option;
    }
    return 0;
}

/* --cert and --key: file names, each given once. */
static int set_x509_file(struct args *a, const char *option, const char **slot,
                         const char *value)
{
    int r;

    if (*slot != NULL)
        return usage_error("%s given twice", option);
    if ((r = set_kind(a, AUTH_X509, option)) != 0)
        return r;
    *slot = value;
    return 0;
}

/*
 * Keeps a copy of a key and blanks the command-line copy, so it no longer
 * shows in /proc/PID/cmdline for the rest of the run.
 */
static int set_credential(struct args *a, enum auth_kind kind, const char *option, char *value)
{
    int r;

    if (a->auth == kind)
        return usage_error("%s given twice", option);
    if ((r = set_kind(a, kind, option)) != 0)
        return r;
    if ((a->key = strdup(value)) == NULL) {
        fprintf(stderr, PROG ": out of memory\n");
        return EXIT_FAILURE;
    }
    explicit_bzero(value, strlen(value));
    return 0;
}

/* --tpm-identity takes only --tcti, --json and --verbose. */
static int check_identity_args(const struct args *a)
{
    if (a->auth != AUTH_NONE && a->auth != AUTH_TPM)
        return usage_error("--tpm-identity takes no %s", a->auth_option);
    if (a->scope != NULL || a->host != NULL || a->registration_id != NULL || a->payload != NULL ||
        a->cacert != NULL || a->hub_password || a->transport_given)
        return usage_error("--tpm-identity takes only --tcti, --json and --verbose");
    return 0;
}

/* Returns 0 to go on, or an exit status (-1 for a successful --help). */
static int parse_args(int argc, char **argv, struct args *a)
{
    int c, r;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", long_options, NULL)) != -1) {
        switch (c) {
        case OPT_SCOPE:
            a->scope = optarg;
            break;
        case OPT_REGISTRATION_ID:
            a->registration_id = optarg;
            break;
        case OPT_SYMMETRIC_KEY:
            if ((r = set_credential(a, AUTH_SYMMETRIC_KEY, "--symmetric-key", optarg)) != 0)
                return r;
            break;
        case OPT_GROUP_KEY:
            if ((r = set_credential(a, AUTH_GROUP_KEY, "--group-key", optarg)) != 0)
                return r;
            break;
        case OPT_CERT:
            if ((r = set_x509_file(a, "--cert", &a->cert_file, optarg)) != 0)
                return r;
            break;
        case OPT_KEY:
            if ((r = set_x509_file(a, "--key", &a->key_file, optarg)) != 0)
                return r;
            break;
        case OPT_HOST:
            a->host = optarg;
            break;
        case OPT_CACERT:
            a->cacert = optarg;
            break;
        case OPT_PAYLOAD:
            a->payload = optarg;
            break;
        case OPT_TIMEOUT:
            if (parse_timeout(optarg, &a->timeout) != 0)
                return usage_error("invalid timeout '%s': expected 1 to 86400 seconds", optarg);
            break;
        case OPT_TRANSPORT:
            if (a->transport_given)
                return usage_error("%s given twice", "--transport");
            if (strcmp(optarg, "https") == 0)
                a->transport = PROV_TRANSPORT_HTTPS;
            else if (strcmp(optarg, "mqtt") == 0)
                a->transport = PROV_TRANSPORT_MQTT;
            else
                return usage_error("invalid transport '%s': expected https or mqtt", optarg);
            a->transport_given = true;
            break;
        case OPT_TPM:
            if ((r = set_kind(a, AUTH_TPM, "--tpm")) != 0)
                return r;
            break;
        case OPT_TCTI:
            if (a->tcti != NULL)
                return usage_error("%s given twice", "--tcti");
            a->tcti = optarg;
            break;
        case OPT_TPM_IDENTITY:
            a->tpm_identity = true;
            break;
        case OPT_HUB_PASSWORD:
            a->hub_password = true;
            break;
        case OPT_JSON:
            a->json = true;
            break;
        case OPT_VERBOSE:
            a->verbose = true;
            break;
        case OPT_HELP:
            usage(stdout);
            return -1;
        case ':':
            return usage_error("option '%s' needs a value", argv[optind - 1]);
        default:
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    if (a->tpm_identity)
        return check_identity_args(a);
    if (a->tcti != NULL && a->auth != AUTH_TPM)
        return usage_error("%s needs %s", "--tcti", "--tpm or --tpm-identity");
    if (a->hub_password && a->auth == AUTH_X509)
        return usage_error("%s: an X.509 device uses its certificate at the hub",
                           "--print-hub-password");
    if (a->scope == NULL)
        return usage_error("%s is required", "--scope");
    if (a->host == NULL)
        return usage_error("%s is required", "--host");
    if (a->auth == AUTH_NONE)
        return usage_error("%s is required",
                           "--symmetric-key, --group-key, --cert with --key, or --tpm");
    if (a->auth == AUTH_X509 && (a->cert_file == NULL || a->key_file == NULL))
        return usage_error("%s needs %s", a->cert_file ? "--cert" : "--key",
                           a->cert_file ? "--key" : "--cert");
    /* an X.509 device's registration id is its certificate's CN, a TPM's comes from its EK */
    if (a->registration_id == NULL && a->auth != AUTH_X509 && a->auth != AUTH_TPM)
        return usage_error("%s is required", "--registration-id");
    return 0;
}

static int set_credential_in_client(struct prov_client *c, const struct args *a)
{
    switch (a->auth) {
    case AUTH_SYMMETRIC_KEY:
        return prov_client_set_symmetric_key(c, a->key);
    case AUTH_GROUP_KEY:
        return prov_client_set_group_key(c, a->key);
    case AUTH_X509:
        return prov_client_set_x509(c, a->cert_file, a->key_file);
    case AUTH_TPM:
        return prov_client_set_tpm(c, a->tcti);
    case AUTH_NONE:
        break;
    }
    return PROV_EINVAL;
}

static void print_failure(int r, const struct prov_result *res)
{
    if (res != NULL && res->status == NULL && res->http_status >= 400 && r != PROV_ETIMEOUT) {
        fprintf(stderr, PROG ": registration refused: %d", res->http_status);
        if (res->error_code != 0)
            fprintf(stderr, " %lld", res->error_code);
        fprintf(stderr, " %s\n", res->error_message ? res->error_message : prov_strerror(r));
    } else if (res != NULL && res->status != NULL &&
               (strcmp(res->status, "failed") == 0 || strcmp(res->status, "disabled") == 0)) {
        fprintf(stderr, PROG ": registration %s:", res->status);
        if (res->error_code != 0)
            fprintf(stderr, " %lld", res->error_code);
        fprintf(stderr, " %s\n", res->error_message ? res->error_message : prov_strerror(r));
    } else if (last_error[0] != '\0') {
        fprintf(stderr, PROG ": %s\n", last_error);
    } else {
        fprintf(stderr, PROG ": registration failed: %s\n", prov_strerror(r));
    }
}

/* Wipes and frees a secret string the library handed out. */
static void free_secret(char *s)
{
    if (s != NULL) {
        explicit_bzero(s, strlen(s));
        prov_free(s);
    }
}

/*
 * The JSON summary, with "hubPassword" added when there is one (base64 needs
 * no escaping; the summary is one object ending in '}').
 */
static int print_json(const struct prov_result *res, const char *password)
{
    char *text = prov_result_to_json(res);
    size_t len = text != NULL ? strlen(text) : 0;

    if (text == NULL || len < 2 || text[len - 1] != '}') {
        fprintf(stderr, PROG ": out of memory\n");
        prov_free(text);
        return EXIT_FAILURE;
    }
    if (password != NULL) {
        text[len - 1] = '\0';
        printf("%s,\"hubPassword\":\"%s\"}\n", text, password);
    } else {
        printf("%s\n", text);
    }
    prov_free(text);
    return EXIT_SUCCESS;
}

static int print_success(const struct args *a, struct prov_client *client,
                         const struct prov_result *res)
{
    char *password = NULL;
    int r;

    if (a->hub_password) {
        if ((r = prov_client_hub_password(client, res->device_id, &password)) != 0) {
            fprintf(stderr, PROG ": assigned, but the hub password cannot be computed: %s\n",
                    last_error[0] ? last_error : prov_strerror(r));
            return EXIT_FAILURE;
        }
    }
    if (a->json) {
        r = print_json(res, password);
        free_secret(password);
        if (r != EXIT_SUCCESS)
            return r;
    } else {
        printf("assigned: hub=%s device=%s", res->assigned_hub, res->device_id);
        if (res->enrollment_group_id != NULL)
            printf(" group=%s", res->enrollment_group_id);
        printf("\n");
        if (password != NULL)
            printf("hub password: %s\n", password);
        free_secret(password);
    }
    if (fflush(stdout) != 0) {
        fprintf(stderr, PROG ": cannot write the result: %s\n", strerror(errno));
        return EXIT_FAILURE;
    }
    return EXIT_SUCCESS;
}

/* --tpm-identity: what an operator enrolls, read from (or created in) the TPM. */
static int print_tpm_identity(const struct args *a)
{
    char *id = NULL, *ek = NULL, *srk = NULL, *cert = NULL;
    int r, status = EXIT_FAILURE;

    if ((r = prov_tpm_identity(a->tcti, &id, &ek, &srk, &cert)) != 0) {
        fprintf(stderr, PROG ": %s\n", last_error[0] ? last_error : prov_strerror(r));
        return EXIT_FAILURE;
    }
    if (a->json) {
        printf("{\"registrationId\":\"%s\",\"endorsementKey\":\"%s\",\"storageRootKey\":\"%s\"",
               id, ek, srk);
        if (cert != NULL)
            printf(",\"endorsementKeyCertificate\":\"%s\"", cert);
        printf("}\n");
    } else {
        printf("registrationId: %s\nendorsementKey: %s\nstorageRootKey: %s\n", id, ek, srk);
        if (cert != NULL)
            printf("endorsementKeyCertificate: %s\n", cert);
    }
    if (fflush(stdout) != 0)
        fprintf(stderr, PROG ": cannot write the result: %s\n", strerror(errno));
    else
        status = EXIT_SUCCESS;
    prov_free(id);
    prov_free(ek);
    prov_free(srk);
    prov_free(cert);
    return status;
}

int main(int argc, char **argv)
{
    struct args a;
    struct prov_options opt = PROV_OPTIONS_INIT;
    struct prov_client *client = NULL;
    struct prov_result *res = NULL;
    int r, status = EXIT_FAILURE;

    memset(&a, 0, sizeof(a));
    if ((r = parse_args(argc, argv, &a)) != 0) {
        status = r < 0 ? EXIT_SUCCESS : r;
        goto out;
    }
    prov_set_log_callback(on_log, &a);
    if (a.tpm_identity) {
        status = print_tpm_identity(&a);
        goto out;
    }
    opt.host = a.host;
    opt.id_scope = a.scope;
    opt.registration_id = a.registration_id;
    opt.ca_file = a.cacert;
    opt.payload_json = a.payload;
    opt.timeout_seconds = a.timeout;
    opt.transport = a.transport;
    if ((r = prov_client_new(&opt, &client)) != 0 ||
        (r = set_credential_in_client(client, &a)) != 0) {
        /* the options were refused before any network traffic */
        if (r == PROV_EINVAL) {
            fprintf(stderr, PROG ": %s\n", last_error[0] ? last_error : prov_strerror(r));
            fprintf(stderr, "Try '" PROG " --help' for more information.\n");
            status = EXIT_USAGE;
        } else {
            fprintf(stderr, PROG ": %s\n", last_error[0] ? last_error : prov_strerror(r));
        }
        goto out;
    }
    last_error[0] = '\0';
    if ((r = prov_register(client, &res)) != 0) {
        print_failure(r, res);
        goto out;
    }
    status = print_success(&a, client, res);
out:
    prov_result_free(res);
    prov_client_free(client);
    if (a.key != NULL) {
        explicit_bzero(a.key, strlen(a.key));
        free(a.key);
    }
    return status;
}
