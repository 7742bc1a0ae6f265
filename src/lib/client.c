/* Client objects: option checks, credentials, URL building. */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "../common/limits.h"
#include "../common/sas.h"
#include "../common/util.h"
#include "lib.h"
#include "tpm.h"

/* The fields of the first public version of struct prov_options. */
#define OPTIONS_V1_SIZE (offsetof(struct prov_options, timeout_seconds) + sizeof(int))

static bool valid_port(const char *s)
{
    long port;

    return isdigit((unsigned char)s[0]) && parse_long(s, 1, 65535, &port) == 0;
}

int lib_check_host(const char *host)
{
    const char *p, *port = NULL;
    size_t len;

    if (host == NULL || *host == '\0')
        return PROV_EINVAL;
    len = strlen(host);
    if (len > 255 + 6)
        return PROV_EINVAL;
    if (host[0] == '[') {
        const char *close = strchr(host, ']');

        if (close == NULL || close == host + 1)
            return PROV_EINVAL;
        for (p = host + 1; p < close; p++) {
            if (!isxdigit((unsigned char)*p) && *p != ':' && *p != '.')
                return PROV_EINVAL;
        }
        if (close[1] == ':')
            port = close + 2;
        else if (close[1] != '\0')
            return PROV_EINVAL;
    } else {
        const char *colon = strchr(host, ':');

        if (colon == host)
            return PROV_EINVAL;
        for (p = host; *p && p != colon; p++) {
            if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' && *p != '_')
                return PROV_EINVAL;
        }
        if (colon != NULL)
            port = colon + 1;
    }
    if (port != NULL && !valid_port(port))
        return PROV_EINVAL;
    return 0;
}

int lib_split_host(const char *host, int default_port, char *name, size_t namelen, int *port)
{
    const char *start = host, *end, *colon;
    long v;

    if (host[0] == '[') {
        start = host + 1;
        end = strchr(start, ']');
        colon = end != NULL && end[1] == ':' ? end + 1 : NULL;
    } else {
        colon = strchr(host, ':');
        end = colon != NULL ? colon : host + strlen(host);
    }
    if (end == NULL || (size_t)(end - start) >= namelen)
        return PROV_EINVAL;
    memcpy(name, start, (size_t)(end - start));
    name[end - start] = '\0';
    *port = default_port;
    if (colon != NULL) {
        if (parse_long(colon + 1, 1, 65535, &v) != 0)
            return PROV_EINVAL;
        *port = (int)v;
    }
    return 0;
}

const char *prov_transport_name(int transport)
{
    switch (transport) {
    case PROV_TRANSPORT_HTTPS:
        return "https";
    case PROV_TRANSPORT_MQTT:
        return "mqtt";
    default:
        return NULL;
    }
}

/* ID scopes are short printable tokens (DPS: "0ne" + 8 hex digits). */
static bool scope_is_valid(const char *s)
{
    size_t len = strlen(s);

    if (len == 0 || len > PROV_MAX_SCOPE)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c <= 0x20 || c >= 0x7f)
            return false;
    }
    return true;
}

char *lib_build_url(const char *host, const char *scope, const char *regid)
{
    char *escope = url_encode_alloc(scope);
    char *eid = url_encode_alloc(regid);
    char *url = NULL;

    if (escope == NULL || eid == NULL)
        goto out;
    if (asprintf(&url, "https://%s/%s/registrations/%s", host, escope, eid) < 0)
        url = NULL;
out:
    free(escope);
    free(eid);
    return url;
}

/*
 * Options from a program built against another version of this header: only
 * the first opt->size bytes exist. Fields this library does not know must be
 * zero, so a newer program never has a setting silently ignored.
 */
static int read_options(const struct prov_options *opt, struct prov_options *o)
{
    const unsigned char *extra;

    if (opt == NULL) {
        lib_log(PROV_LOG_ERROR, "no options given");
        return PROV_EINVAL;
    }
    if (opt->size < OPTIONS_V1_SIZE) {
        lib_log(PROV_LOG_ERROR, "invalid options: size %zu, initialise with PROV_OPTIONS_INIT",
                opt->size);
        return PROV_EINVAL;
    }
    memset(o, 0, sizeof(*o));
    memcpy(o, opt, opt->size < sizeof(*o) ? opt->size : sizeof(*o));
    extra = (const unsigned char *)opt;
    for (size_t i = sizeof(*o); i < opt->size; i++) {
        if (extra[i] != 0) {
            lib_log(PROV_LOG_ERROR, "options set that this libprov version does not support");
            return PROV_EINVAL;
        }
    }
    return 0;
}

static int check_options(const struct prov_options *o)
{
    if (lib_check_host(o->host) != 0) {
        lib_log(PROV_LOG_ERROR, "invalid host '%s': expected name[:port]",
                o->host ? o->host : "");
        return PROV_EINVAL;
    }
    if (o->id_scope == NULL || !scope_is_valid(o->id_scope)) {
        lib_log(PROV_LOG_ERROR, "invalid id scope '%s'", o->id_scope ? o->id_scope : "");
        return PROV_EINVAL;
    }
    /* NULL is allowed: an X.509 certificate may give it later */
    if (o->registration_id != NULL && !id_is_valid(o->registration_id)) {
        lib_log(PROV_LOG_ERROR,
                "invalid registration id '%.140s': 1-128 of A-Z a-z 0-9 - . _ :, "
                "ending with a letter, digit or '-'",
                o->registration_id ? o->registration_id : "");
        return PROV_EINVAL;
    }
    if (o->ca_file != NULL && access(o->ca_file, R_OK) != 0) {
        lib_log(PROV_LOG_ERROR, "cannot read CA file '%s'", o->ca_file);
        return PROV_EINVAL;
    }
    if (prov_transport_name((int)o->transport) == NULL) {
        lib_log(PROV_LOG_ERROR, "invalid transport %d: PROV_TRANSPORT_HTTPS or "
                                "PROV_TRANSPORT_MQTT", (int)o->transport);
        return PROV_EINVAL;
    }
    if (o->timeout_seconds < 0 || o->timeout_seconds > PROV_MAX_TIMEOUT) {
        lib_log(PROV_LOG_ERROR, "invalid timeout %d: 1..%d seconds, 0 for the default",
                o->timeout_seconds, PROV_MAX_TIMEOUT);
        return PROV_EINVAL;
    }
    return 0;
}

/* Validates the payload and keeps a compact copy. */
static int copy_payload(const char *text, char **out)
{
    json_error_t jerr;
    json_t *v;

    *out = NULL;
    if (text == NULL)
        return 0;
    if (strlen(text) > PROV_MAX_BODY / 2) {
        lib_log(PROV_LOG_ERROR, "payload too large: more than %d bytes", PROV_MAX_BODY / 2);
        return PROV_EINVAL;
    }
    v = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (v == NULL) {
        lib_log(PROV_LOG_ERROR, "invalid payload JSON: %s at line %d column %d", jerr.text,
                jerr.line, jerr.column);
        return PROV_EINVAL;
    }
    *out = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(v);
    return *out == NULL ? PROV_ENOMEM : 0;
}

static char *dup_or_null(const char *s, bool *oom)
{
    char *d;

    if (s == NULL)
        return NULL;
    if ((d = strdup(s)) == NULL)
        *oom = true;
    return d;
}

int prov_client_new(const struct prov_options *opt, struct prov_client **out)
{
    struct prov_options o;
    struct prov_client *c = NULL;
    bool oom = false;
    int r = PROV_EINTERNAL;

    if (out == NULL) {
        lib_log(PROV_LOG_ERROR, "prov_client_new: out is NULL");
        return PROV_EINVAL;
    }
    *out = NULL;
    if ((r = read_options(opt, &o)) != 0 || (r = check_options(&o)) != 0)
        goto out;
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        r = PROV_ENOMEM;
        goto out;
    }
    c->host = dup_or_null(o.host, &oom);
    c->id_scope = dup_or_null(o.id_scope, &oom);
    c->registration_id = dup_or_null(o.registration_id, &oom);
    c->ca_file = dup_or_null(o.ca_file, &oom);
    c->timeout_seconds = o.timeout_seconds ? o.timeout_seconds : PROV_DEFAULT_TIMEOUT;
    c->transport = o.transport;
    if (oom) {
        r = PROV_ENOMEM;
        goto out;
    }
    if ((r = copy_payload(o.payload_json, &c->payload_json)) != 0)
        goto out;
    if (c->registration_id != NULL &&
        (c->base_url = lib_build_url(c->host, c->id_scope, c->registration_id)) == NULL) {
        r = PROV_ENOMEM;
        goto out;
    }
    *out = c;
    c = NULL; /* transferred */
    r = 0;
out:
    prov_client_free(c);
    return r;
}

void prov_client_free(struct prov_client *c)
{
    if (c == NULL)
        return;
    if (c->curl != NULL)
        curl_easy_cleanup(c->curl);
    free(c->host);
    free(c->id_scope);
    free(c->registration_id);
    free(c->ca_file);
    free(c->payload_json);
    free(c->base_url);
    free(c->cert_file);
    free(c->key_file);
    lib_tpm_close(c->tpm);
    lib_tpm_sas_clear(c);
    prov_freezero(c, sizeof(*c));
}

/* Keys need a registration id (SAS resource, group key derivation) and no certificate. */
static int key_allowed(const struct prov_client *c, const char *what)
{
    if (c->cred == LIB_CRED_X509 || c->cred == LIB_CRED_TPM) {
        lib_log(PROV_LOG_ERROR, "cannot set a %s: this client uses %s (one credential kind "
                "per client)", what, c->cred == LIB_CRED_TPM ? "a TPM" : "an X.509 certificate");
        return PROV_EINVAL;
    }
    if (c->registration_id == NULL) {
        lib_log(PROV_LOG_ERROR, "cannot set a %s: the options have no registration id", what);
        return PROV_EINVAL;
    }
    return 0;
}

/* A canonical base64 key of PROV_MIN_KEY_BYTES..PROV_MAX_KEY_BYTES bytes. */
static int check_key(const char *what, const char *key_b64)
{
    uint8_t raw[PROV_KEY_B64_MAX];
    size_t len;
    int n;

    if (key_b64 == NULL) {
        lib_log(PROV_LOG_ERROR, "no %s given", what);
        return PROV_EINVAL;
    }
    len = strlen(key_b64);
    if (len >= PROV_KEY_B64_MAX || b64_decoded_max(len) > sizeof(raw)) {
        lib_log(PROV_LOG_ERROR, "invalid %s: longer than %d bytes", what, PROV_MAX_KEY_BYTES);
        return PROV_EINVAL;
    }
    n = b64_decode(key_b64, len, raw);
    prov_cleanse(raw, sizeof(raw));
    if (n < 0) {
        lib_log(PROV_LOG_ERROR, "invalid %s: not base64", what);
        return PROV_EINVAL;
    }
    if (n < PROV_MIN_KEY_BYTES || n > PROV_MAX_KEY_BYTES) {
        lib_log(PROV_LOG_ERROR, "invalid %s: %d bytes, expected %d to %d", what, n,
                PROV_MIN_KEY_BYTES, PROV_MAX_KEY_BYTES);
        return PROV_EINVAL;
    }
    return 0;
}

int prov_client_set_symmetric_key(struct prov_client *c, const char *key_b64)
{
    int r;

    if (c == NULL)
        return PROV_EINVAL;
    if ((r = key_allowed(c, "symmetric key")) != 0 ||
        (r = check_key("symmetric key", key_b64)) != 0)
        return r;
    prov_cleanse(c->key_b64, sizeof(c->key_b64));
    snprintf(c->key_b64, sizeof(c->key_b64), "%s", key_b64);
    c->cred = LIB_CRED_KEY;
    return 0;
}

int prov_client_set_group_key(struct prov_client *c, const char *group_key_b64)
{
    char derived[45];
    int r;

    if (c == NULL)
        return PROV_EINVAL;
    if ((r = key_allowed(c, "group key")) != 0 || (r = check_key("group key", group_key_b64)) != 0)
        return r;
    if ((r = derive_device_key(group_key_b64, c->registration_id, derived)) != 0) {
        lib_log(PROV_LOG_ERROR, "cannot derive the device key: %s", prov_strerror(r));
        return r;
    }
    prov_cleanse(c->key_b64, sizeof(c->key_b64));
    snprintf(c->key_b64, sizeof(c->key_b64), "%s", derived);
    prov_cleanse(derived, sizeof(derived));
    c->cred = LIB_CRED_KEY;
    lib_log(PROV_LOG_DEBUG, "device key derived from the group key for '%s'",
            c->registration_id);
    return 0;
}

int prov_client_set_x509(struct prov_client *c, const char *cert_file, const char *key_file)
{
    char *cn = NULL, *cert = NULL, *key = NULL, *url = NULL;
    int chain_len = 0, r = PROV_EINTERNAL;

    if (c == NULL)
        return PROV_EINVAL;
    if (c->cred == LIB_CRED_KEY || c->cred == LIB_CRED_TPM) {
        lib_log(PROV_LOG_ERROR, "cannot set an X.509 certificate: this client uses %s (one "
                "credential kind per client)", c->cred == LIB_CRED_TPM ? "a TPM" :
                "a symmetric key");
        return PROV_EINVAL;
    }
    if (cert_file == NULL || *cert_file == '\0' || key_file == NULL || *key_file == '\0') {
        lib_log(PROV_LOG_ERROR, "no %s file given", cert_file == NULL || *cert_file == '\0' ?
                                "certificate" : "private key");
        return PROV_EINVAL;
    }
    if ((r = lib_x509_load(cert_file, key_file, &cn, &chain_len)) != 0)
        goto out;
    if (c->registration_id != NULL && !c->regid_from_cert && !str_ieq(c->registration_id, cn)) {
        lib_log(PROV_LOG_ERROR, "registration id must equal the certificate's CN: '%s' is not "
                "'%s' (the subject CN in '%s')", c->registration_id, cn, cert_file);
        r = PROV_EINVAL;
        goto out;
    }
    if ((cert = strdup(cert_file)) == NULL || (key = strdup(key_file)) == NULL) {
        r = PROV_ENOMEM;
        goto out;
    }
    if (c->registration_id == NULL || c->regid_from_cert) {
        if ((url = lib_build_url(c->host, c->id_scope, cn)) == NULL) {
            r = PROV_ENOMEM;
            goto out;
        }
        free(c->registration_id);
        free(c->base_url);
        c->registration_id = cn;
        c->base_url = url;
        c->regid_from_cert = true;
        cn = url = NULL; /* transferred */
    }
    free(c->cert_file);
    free(c->key_file);
    c->cert_file = cert;
    c->key_file = key;
    cert = key = NULL; /* transferred */
    c->cred = LIB_CRED_X509;
    lib_log(PROV_LOG_DEBUG, "X.509 credential for '%s': %d certificate%s in '%s', key in '%s'",
            c->registration_id, chain_len, chain_len == 1 ? "" : "s", c->cert_file,
            c->key_file);
    r = 0;
out:
    free(cn);
    free(cert);
    free(key);
    free(url);
    return r;
}

/* Replaces the registration id (and the URL built from it). 0 or PROV_ENOMEM. */
static int set_registration_id(struct prov_client *c, const char *id)
{
    char *copy = strdup(id);
    char *url = lib_build_url(c->host, c->id_scope, id);

    if (copy == NULL || url == NULL) {
        free(copy);
        free(url);
        return PROV_ENOMEM;
    }
    free(c->registration_id);
    free(c->base_url);
    c->registration_id = copy;
    c->base_url = url;
    return 0;
}

int prov_client_set_tpm(struct prov_client *c, const char *tcti)
{
    struct lib_tpm *t = NULL;
    char regid[LIB_TPM_REGID_SIZE];
    int r;

    if (c == NULL)
        return PROV_EINVAL;
    if (c->cred == LIB_CRED_KEY || c->cred == LIB_CRED_X509) {
        lib_log(PROV_LOG_ERROR, "cannot use a TPM: this client uses %s (one credential kind "
                "per client)", c->cred == LIB_CRED_KEY ? "a symmetric key" :
                "an X.509 certificate");
        return PROV_EINVAL;
    }
    if (c->transport != PROV_TRANSPORT_HTTPS) {
        lib_log(PROV_LOG_ERROR, "TPM attestation works over HTTPS only: DPS's MQTT protocol has "
                                "no TPM challenge (no SDK supports it either)");
        return PROV_EINVAL;
    }
    /* a TPM without resource manager serves one connection: close ours first */
    lib_tpm_close(c->tpm);
    c->tpm = NULL;
    c->cred = LIB_CRED_NONE;
    if ((r = lib_tpm_open(tcti, &t)) != 0)
        return r;
    if (c->registration_id == NULL || c->regid_from_tpm) {
        if ((r = lib_tpm_registration_id(t, regid)) != 0 ||
            (r = set_registration_id(c, regid)) != 0) {
            lib_tpm_close(t);
            return r;
        }
        c->regid_from_tpm = true;
    }
    c->tpm = t;
    c->cred = LIB_CRED_TPM;
    lib_log(PROV_LOG_DEBUG, "TPM credential for '%s'%s", c->registration_id,
            c->regid_from_tpm ? " (the EK's default registration id)" : "");
    return 0;
}

/* Strings handed to the caller: copies freed with prov_free(). */
static int give_b64(const uint8_t *data, size_t len, char **out)
{
    if (out == NULL)
        return 0;
    *out = NULL;
    if (data == NULL)
        return 0;
    return (*out = b64_encode_alloc(data, len)) == NULL ? PROV_ENOMEM : 0;
}

int prov_tpm_identity(const char *tcti, char **registration_id, char **endorsement_key,
                      char **storage_root_key, char **ek_certificate)
{
    struct lib_tpm *t = NULL;
    char regid[LIB_TPM_REGID_SIZE];
    const uint8_t *p;
    size_t len;
    int r;

    if (registration_id != NULL)
        *registration_id = NULL;
    if (endorsement_key != NULL)
        *endorsement_key = NULL;
    if (storage_root_key != NULL)
        *storage_root_key = NULL;
    if (ek_certificate != NULL)
        *ek_certificate = NULL;
    if ((r = lib_tpm_open(tcti, &t)) != 0)
        return r;
    if ((r = lib_tpm_registration_id(t, regid)) != 0)
        goto out;
    if (registration_id != NULL && (*registration_id = strdup(regid)) == NULL) {
        r = PROV_ENOMEM;
        goto out;
    }
    p = lib_tpm_ek_public(t, &len);
    if ((r = give_b64(p, len, endorsement_key)) != 0)
        goto out;
    p = lib_tpm_srk_public(t, &len);
    if ((r = give_b64(p, len, storage_root_key)) != 0)
        goto out;
    p = lib_tpm_ek_cert(t, &len);
    r = give_b64(p, len, ek_certificate);
out:
    lib_tpm_close(t);
    if (r != 0) {
        char **outs[] = {registration_id, endorsement_key, storage_root_key, ek_certificate};

        for (size_t i = 0; i < sizeof(outs) / sizeof(outs[0]); i++) {
            if (outs[i] != NULL) {
                free(*outs[i]);
                *outs[i] = NULL;
            }
        }
    }
    return r;
}

/* The hub password of a key client: HMAC with the (derived) device key. */
static int key_hub_password(const struct prov_client *c, const char *device_id, char pw[45])
{
    uint8_t key[PROV_KEY_B64_MAX];
    size_t len = strlen(c->key_b64);
    int n, r;

    if (b64_decoded_max(len) > sizeof(key) || (n = b64_decode(c->key_b64, len, key)) <= 0)
        return PROV_EINTERNAL; /* checked when it was set */
    r = hub_password_derive(key, (size_t)n, device_id, pw);
    prov_cleanse(key, sizeof(key));
    return r;
}

/* The same inside the TPM, with the hub key at 0x81000100. */
static int tpm_hub_password(const struct prov_client *c, const char *device_id, char pw[45])
{
    size_t label = strlen(PROV_HUB_PASSWORD_LABEL), len = strlen(device_id);
    char msg[sizeof(PROV_HUB_PASSWORD_LABEL) + PROV_MAX_REG_ID];
    uint8_t mac[32];
    int r;

    memcpy(msg, PROV_HUB_PASSWORD_LABEL, label);
    memcpy(msg + label, device_id, len);
    if ((r = lib_tpm_hmac(c->tpm, msg, label + len, mac)) == 0)
        b64_encode(mac, sizeof(mac), pw);
    prov_cleanse(mac, sizeof(mac));
    return r;
}

int prov_client_hub_password(struct prov_client *c, const char *device_id, char **out)
{
    char pw[45];
    size_t len;
    int r;

    if (out != NULL)
        *out = NULL;
    if (c == NULL || out == NULL || device_id == NULL) {
        lib_log(PROV_LOG_ERROR, "prov_client_hub_password: %s is NULL",
                c == NULL ? "client" : out == NULL ? "out" : "device_id");
        return PROV_EINVAL;
    }
    len = strlen(device_id);
    if (len == 0 || len > PROV_MAX_REG_ID) {
        lib_log(PROV_LOG_ERROR, "invalid device id: %zu characters, expected 1 to %d", len,
                PROV_MAX_REG_ID);
        return PROV_EINVAL;
    }
    switch (c->cred) {
    case LIB_CRED_KEY:
        r = key_hub_password(c, device_id, pw);
        break;
    case LIB_CRED_TPM:
        r = tpm_hub_password(c, device_id, pw);
        break;
    case LIB_CRED_X509:
        lib_log(PROV_LOG_ERROR, "no hub password for an X.509 device: it authenticates at the "
                                "hub with its certificate");
        return PROV_EINVAL;
    default:
        lib_log(PROV_LOG_ERROR, "no credential set: a hub password needs a key or a TPM");
        return PROV_EINVAL;
    }
    if (r == 0 && (*out = strdup(pw)) == NULL)
        r = PROV_ENOMEM;
    if (r != 0 && r != PROV_ENOMEM && r != PROV_ENOTFOUND)
        lib_log(PROV_LOG_ERROR, "cannot compute the hub password: %s", prov_strerror(r));
    prov_cleanse(pw, sizeof(pw));
    return r;
}
