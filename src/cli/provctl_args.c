/* provctl: connection strings, command lines and help texts. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/errors.h"
#include "../common/limits.h"
#include "../common/util.h"
#include "provctl.h"

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- connection string ------------------------------------------------ */

void pc_connstr_free(struct pc_connstr *cs)
{
    if (cs == NULL)
        return;
    free(cs->host);
    free(cs->key_name);
    if (cs->key != NULL)
        prov_freezero(cs->key, strlen(cs->key));
    cs->host = cs->key_name = cs->key = NULL;
}

/* Host, optionally ":port"; an IPv6 literal must be bracketed. */
static bool host_is_valid(const char *h)
{
    const char *port = NULL;
    long v;

    if (*h == '\0' || strlen(h) > 253 + 6)
        return false;
    for (const char *p = h; *p != '\0'; p++) {
        unsigned char c = (unsigned char)*p;

        if (c <= ' ' || c >= 0x7f || c == '/' || c == '?' || c == '#' || c == '@' || c == '\\')
            return false;
    }
    if (h[0] == '[') {
        const char *close = strchr(h, ']');

        if (close == NULL || close == h + 1)
            return false;
        if (close[1] == ':')
            port = close + 2;
        else if (close[1] != '\0')
            return false;
    } else {
        port = strchr(h, ':');
        if (port == h)
            return false;
        if (port != NULL && strchr(port + 1, ':') != NULL)
            return false;
        if (port != NULL)
            port++;
    }
    if (port != NULL && parse_long(port, 1, 65535, &v) != 0)
        return false;
    return true;
}

static int key_check(const char *b64, size_t min, size_t max)
{
    size_t len = strlen(b64);
    uint8_t *buf;
    int n;

    if (len == 0 || len > 4 * ((max + 2) / 3))
        return PROV_EINVAL;
    buf = malloc(b64_decoded_max(len));
    if (buf == NULL)
        return PROV_ENOMEM;
    n = b64_decode(b64, len, buf);
    prov_freezero(buf, b64_decoded_max(len));
    if (n < 0 || (size_t)n < min || (size_t)n > max)
        return PROV_EINVAL;
    return 0;
}

int pc_connstr_parse(const char *s, struct pc_connstr *out, char *err, size_t errlen)
{
    int r = PROV_EINVAL;
    char *copy = NULL, *save = NULL, *seg;
    size_t copylen = 0;

    memset(out, 0, sizeof(*out));
    if (s == NULL || *s == '\0') {
        seterr(err, errlen, "empty connection string");
        return PROV_EINVAL;
    }
    copylen = strlen(s);
    if ((copy = strdup(s)) == NULL) {
        r = PROV_ENOMEM;
        seterr(err, errlen, "out of memory");
        goto out;
    }
    for (seg = strtok_r(copy, ";", &save); seg != NULL; seg = strtok_r(NULL, ";", &save)) {
        char *eq, **slot;
        const char *name;

        while (*seg == ' ' || *seg == '\t')
            seg++;
        if (*seg == '\0')
            continue;
        if ((eq = strchr(seg, '=')) == NULL) {
            seterr(err, errlen, "connection string: segment without '=' (expected Name=value)");
            goto out;
        }
        *eq = '\0';
        name = seg;
        if (str_ieq(name, "HostName")) {
            slot = &out->host;
        } else if (str_ieq(name, "SharedAccessKeyName")) {
            slot = &out->key_name;
        } else if (str_ieq(name, "SharedAccessKey")) {
            slot = &out->key;
        } else {
            /* the name only: a mistyped name must not echo a key value */
            seterr(err, errlen, "connection string: unknown field '%.40s'", name);
            goto out;
        }
        if (*slot != NULL) {
            seterr(err, errlen, "connection string: field '%.40s' given twice", name);
            goto out;
        }
        if (eq[1] == '\0') {
            seterr(err, errlen, "connection string: field '%.40s' is empty", name);
            goto out;
        }
        if ((*slot = strdup(eq + 1)) == NULL) {
            r = PROV_ENOMEM;
            seterr(err, errlen, "out of memory");
            goto out;
        }
    }
    if (out->host == NULL) {
        seterr(err, errlen, "connection string: missing HostName");
        goto out;
    }
    if (out->key_name == NULL) {
        seterr(err, errlen, "connection string: missing SharedAccessKeyName");
        goto out;
    }
    if (out->key == NULL) {
        seterr(err, errlen, "connection string: missing SharedAccessKey");
        goto out;
    }
    if (!host_is_valid(out->host)) {
        seterr(err, errlen, "connection string: HostName '%.260s' is not a host name with an "
               "optional :port", out->host);
        goto out;
    }
    if ((r = key_check(out->key, 1, 256)) != 0) {
        if (r == PROV_EINVAL)
            seterr(err, errlen, "connection string: SharedAccessKey is not valid base64");
        else
            seterr(err, errlen, "out of memory");
        goto out;
    }
    r = 0;
out:
    if (copy != NULL)
        prov_freezero(copy, copylen);
    if (r != 0)
        pc_connstr_free(out);
    return r;
}

/* ---- names ------------------------------------------------------------ */

const char *pc_res_name(enum pc_resource res)
{
    switch (res) {
    case PC_RES_ENROLLMENT:
        return "enrollment";
    case PC_RES_GROUP:
        return "group";
    case PC_RES_REGISTRATION:
        return "registration";
    case PC_RES_CA:
        return "ca";
    case PC_RES_NONE:
        break;
    }
    return "";
}

const char *pc_verb_name(enum pc_verb verb)
{
    switch (verb) {
    case PC_VERB_CREATE:
        return "create";
    case PC_VERB_UPDATE:
        return "update";
    case PC_VERB_SHOW:
        return "show";
    case PC_VERB_LIST:
        return "list";
    case PC_VERB_DELETE:
        return "delete";
    case PC_VERB_UPLOAD:
        return "upload";
    case PC_VERB_CODE:
        return "code";
    case PC_VERB_VERIFY:
        return "verify";
    case PC_VERB_HELP:
        return "help";
    case PC_VERB_VERSION:
        return "version";
    case PC_VERB_NONE:
        break;
    }
    return "";
}

static enum pc_resource res_from_word(const char *w)
{
    if (strcmp(w, "enrollment") == 0 || strcmp(w, "enrollments") == 0)
        return PC_RES_ENROLLMENT;
    if (strcmp(w, "group") == 0 || strcmp(w, "groups") == 0)
        return PC_RES_GROUP;
    if (strcmp(w, "registration") == 0 || strcmp(w, "registrations") == 0)
        return PC_RES_REGISTRATION;
    if (strcmp(w, "ca") == 0 || strcmp(w, "cas") == 0)
        return PC_RES_CA;
    return PC_RES_NONE;
}

static enum pc_verb verb_from_word(enum pc_resource res, const char *w)
{
    static const enum pc_verb all[] = {PC_VERB_CREATE, PC_VERB_UPDATE, PC_VERB_SHOW,
                                       PC_VERB_LIST, PC_VERB_DELETE, PC_VERB_UPLOAD,
                                       PC_VERB_CODE, PC_VERB_VERIFY};

    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        enum pc_verb v = all[i];
        bool write = v == PC_VERB_CREATE || v == PC_VERB_UPDATE;
        bool ca_only = v == PC_VERB_UPLOAD || v == PC_VERB_CODE || v == PC_VERB_VERIFY;

        if (strcmp(w, pc_verb_name(v)) != 0)
            continue;
        if (res == PC_RES_REGISTRATION && write)
            return PC_VERB_NONE; /* registrations are written by devices only */
        if (res == PC_RES_CA && write)
            return PC_VERB_NONE; /* CA certificates are uploaded */
        if (res != PC_RES_CA && ca_only)
            return PC_VERB_NONE;
        return v;
    }
    return PC_VERB_NONE;
}

/* ---- options ---------------------------------------------------------- */

enum opt_id {
    O_CS, O_CACERT, O_SCOPE, O_JSON, O_VERBOSE, O_TIMEOUT, O_HELP, O_VERSION,
    O_SYMKEY, O_PKEY, O_SKEY, O_DEVID, O_HUB, O_ALLHUBS, O_POLICY, O_WEBHOOK, O_WEBHOOK_API,
    O_DISABLED, O_ENABLED, O_EDGE, O_NOEDGE, O_TWIN, O_ETAG, O_KEYS, O_PAGE,
    O_X509, O_CERT, O_CERT2, O_THUMB, O_SIGN, O_SIGN2, O_CAREF, O_CAREF2, O_VERIFIED,
    O_COUNT
};

/* Where an option is allowed. */
enum opt_scope {
    S_GLOBAL,     /* anywhere */
    S_WRITE,      /* enrollment|group create|update */
    S_WRITE_IND,  /* enrollment create|update */
    S_ETAG,       /* create|update|delete; ca upload|code|verify */
    S_KEYS,       /* enrollment|group show */
    S_LIST,       /* list (not ca) */
    S_X509,       /* enrollment|group create|update */
    S_CERT,       /* enrollment create|update; ca upload|verify */
    S_WRITE_GRP,  /* group create|update */
    S_CA_UPLOAD,  /* ca upload */
};

struct opt_def {
    const char *name;
    enum opt_id id;
    bool has_arg;
    enum opt_scope scope;
};

static const struct opt_def opts[] = {
    {"connection-string", O_CS, true, S_GLOBAL},
    {"cacert", O_CACERT, true, S_GLOBAL},
    {"id-scope", O_SCOPE, true, S_GLOBAL},
    {"json", O_JSON, false, S_GLOBAL},
    {"verbose", O_VERBOSE, false, S_GLOBAL},
    {"timeout", O_TIMEOUT, true, S_GLOBAL},
    {"help", O_HELP, false, S_GLOBAL},
    {"version", O_VERSION, false, S_GLOBAL},
    {"symmetric-key", O_SYMKEY, false, S_WRITE},
    {"primary-key", O_PKEY, true, S_WRITE},
    {"secondary-key", O_SKEY, true, S_WRITE},
    {"device-id", O_DEVID, true, S_WRITE_IND},
    {"hub", O_HUB, true, S_WRITE},
    {"all-hubs", O_ALLHUBS, false, S_WRITE},
    {"allocation-policy", O_POLICY, true, S_WRITE},
    {"webhook-url", O_WEBHOOK, true, S_WRITE},
    {"webhook-api-version", O_WEBHOOK_API, true, S_WRITE},
    {"disabled", O_DISABLED, false, S_WRITE},
    {"enabled", O_ENABLED, false, S_WRITE},
    {"iot-edge", O_EDGE, false, S_WRITE},
    {"no-iot-edge", O_NOEDGE, false, S_WRITE},
    {"initial-twin", O_TWIN, true, S_WRITE},
    {"etag", O_ETAG, true, S_ETAG},
    {"keys", O_KEYS, false, S_KEYS},
    {"page-size", O_PAGE, true, S_LIST},
    {"x509", O_X509, false, S_X509},
    {"cert", O_CERT, true, S_CERT},
    {"secondary-cert", O_CERT2, true, S_WRITE_IND},
    {"thumbprint", O_THUMB, true, S_WRITE_IND},
    {"signing-cert", O_SIGN, true, S_WRITE_GRP},
    {"secondary-signing-cert", O_SIGN2, true, S_WRITE_GRP},
    {"ca-ref", O_CAREF, true, S_WRITE_GRP},
    {"secondary-ca-ref", O_CAREF2, true, S_WRITE_GRP},
    {"verified", O_VERIFIED, false, S_CA_UPLOAD},
};

static const struct opt_def *opt_find(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0)
            return &opts[i];
    }
    return NULL;
}

static bool opt_allowed(enum opt_scope scope, enum pc_resource res, enum pc_verb verb)
{
    bool write = verb == PC_VERB_CREATE || verb == PC_VERB_UPDATE;

    switch (scope) {
    case S_GLOBAL:
        return true;
    case S_WRITE:
        return write && (res == PC_RES_ENROLLMENT || res == PC_RES_GROUP);
    case S_WRITE_IND:
        return write && res == PC_RES_ENROLLMENT;
    case S_ETAG:
        return write || verb == PC_VERB_DELETE || verb == PC_VERB_UPLOAD ||
               verb == PC_VERB_CODE || verb == PC_VERB_VERIFY;
    case S_KEYS:
        return verb == PC_VERB_SHOW && (res == PC_RES_ENROLLMENT || res == PC_RES_GROUP);
    case S_LIST:
        return verb == PC_VERB_LIST && res != PC_RES_CA;
    case S_X509:
        return write && (res == PC_RES_ENROLLMENT || res == PC_RES_GROUP);
    case S_CERT:
        return (write && res == PC_RES_ENROLLMENT) ||
               (res == PC_RES_CA && (verb == PC_VERB_UPLOAD || verb == PC_VERB_VERIFY));
    case S_WRITE_GRP:
        return write && res == PC_RES_GROUP;
    case S_CA_UPLOAD:
        return res == PC_RES_CA && verb == PC_VERB_UPLOAD;
    }
    return false;
}

/* A thumbprint as the server takes it: 40 or 64 hex digits, ':' or ' ' between bytes. */
static bool thumbprint_ok(const char *s)
{
    size_t n = 0;

    for (; *s != '\0'; s++) {
        char c = *s;

        if (c == ':' || c == ' ')
            continue;
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return false;
        n++;
    }
    return n == 40 || n == 64;
}

static int set_file(const char **slot, const struct opt_def *o, const char *val, char *err,
                    size_t errlen)
{
    if (*val == '\0') {
        seterr(err, errlen, "--%s: empty file name", o->name);
        return PROV_EINVAL;
    }
    *slot = val;
    return 0;
}

static const char *policy_canonical(const char *s)
{
    static const char *const names[] = {"hashed", "static", "geoLatency", "custom"};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (str_ieq(s, names[i]))
            return names[i];
    }
    return NULL;
}

static int set_opt(struct pc_command *cmd, const struct opt_def *o, const char *val, char *err,
                   size_t errlen)
{
    switch (o->id) {
    case O_CS:
        cmd->connection_string = val;
        break;
    case O_CACERT:
        cmd->cacert = val;
        break;
    case O_SCOPE:
        if (*val == '\0' || strlen(val) > PROV_MAX_SCOPE) {
            seterr(err, errlen, "--id-scope: expected 1 to %d characters", PROV_MAX_SCOPE);
            return PROV_EINVAL;
        }
        cmd->id_scope = val;
        break;
    case O_JSON:
        cmd->json = true;
        break;
    case O_VERBOSE:
        cmd->verbose = true;
        break;
    case O_TIMEOUT:
        if (parse_long(val, 1, 3600, &cmd->timeout) != 0) {
            seterr(err, errlen, "--timeout: expected seconds between 1 and 3600");
            return PROV_EINVAL;
        }
        break;
    case O_HELP:
    case O_VERSION:
    case O_COUNT:
        break; /* handled by the caller */
    case O_SYMKEY:
        cmd->symmetric_key = true;
        break;
    case O_PKEY:
    case O_SKEY:
        if (key_check(val, PROV_MIN_KEY_BYTES, PROV_MAX_KEY_BYTES) != 0) {
            seterr(err, errlen, "--%s: expected base64 of %d to %d bytes", o->name,
                   PROV_MIN_KEY_BYTES, PROV_MAX_KEY_BYTES);
            return PROV_EINVAL;
        }
        if (o->id == O_PKEY)
            cmd->primary_key = val;
        else
            cmd->secondary_key = val;
        break;
    case O_DEVID:
        if (*val == '\0' || strlen(val) > PROV_MAX_REG_ID) {
            seterr(err, errlen, "--device-id: expected 1 to %d characters", PROV_MAX_REG_ID);
            return PROV_EINVAL;
        }
        cmd->device_id = val;
        break;
    case O_HUB:
        if (*val == '\0' || strchr(val, '/') != NULL || strchr(val, ' ') != NULL) {
            seterr(err, errlen, "--hub: expected a hub host name");
            return PROV_EINVAL;
        }
        if (cmd->nhubs == PC_MAX_HUBS) {
            seterr(err, errlen, "--hub: at most %d hubs", PC_MAX_HUBS);
            return PROV_EINVAL;
        }
        for (size_t i = 0; i < cmd->nhubs; i++) {
            if (str_ieq(cmd->hubs[i], val)) {
                seterr(err, errlen, "--hub: '%.200s' given twice", val);
                return PROV_EINVAL;
            }
        }
        cmd->hubs[cmd->nhubs++] = val;
        break;
    case O_ALLHUBS:
        cmd->clear_hubs = true;
        break;
    case O_POLICY:
        if ((cmd->allocation_policy = policy_canonical(val)) == NULL) {
            seterr(err, errlen,
                   "--allocation-policy: expected hashed, static, geoLatency or custom");
            return PROV_EINVAL;
        }
        break;
    case O_WEBHOOK:
        if (strncmp(val, "https://", 8) != 0 && strncmp(val, "http://", 7) != 0) {
            seterr(err, errlen, "--webhook-url: expected an http:// or https:// URL");
            return PROV_EINVAL;
        }
        cmd->webhook_url = val;
        break;
    case O_WEBHOOK_API:
        if (*val == '\0') {
            seterr(err, errlen, "--webhook-api-version: empty value");
            return PROV_EINVAL;
        }
        cmd->webhook_api_version = val;
        break;
    case O_DISABLED:
    case O_ENABLED:
        if (cmd->enabled == (o->id == O_DISABLED ? 1 : 0)) {
            seterr(err, errlen, "--enabled and --disabled exclude each other");
            return PROV_EINVAL;
        }
        cmd->enabled = o->id == O_ENABLED;
        break;
    case O_EDGE:
    case O_NOEDGE:
        if (cmd->iot_edge == (o->id == O_NOEDGE ? 1 : 0)) {
            seterr(err, errlen, "--iot-edge and --no-iot-edge exclude each other");
            return PROV_EINVAL;
        }
        cmd->iot_edge = o->id == O_EDGE;
        break;
    case O_TWIN: {
        json_error_t jerr;
        json_t *j = json_loads(val, JSON_REJECT_DUPLICATES, &jerr);
        bool ok = json_is_object(j);

        json_decref(j);
        if (!ok) {
            seterr(err, errlen, "--initial-twin: expected a JSON object such as "
                   "'{\"tags\":{},\"properties\":{\"desired\":{}}}'");
            return PROV_EINVAL;
        }
        cmd->initial_twin = val;
        break;
    }
    case O_ETAG:
        if (*val == '\0') {
            seterr(err, errlen, "--etag: empty value");
            return PROV_EINVAL;
        }
        cmd->etag = val;
        break;
    case O_KEYS:
        cmd->keys = true;
        break;
    case O_PAGE:
        if (parse_long(val, 1, PROV_MAX_PAGE, &cmd->page_size) != 0) {
            seterr(err, errlen, "--page-size: expected a number between 1 and %d",
                   PROV_MAX_PAGE);
            return PROV_EINVAL;
        }
        break;
    case O_X509:
        cmd->x509 = true;
        break;
    case O_CERT:
    case O_CERT2:
        return set_file(&cmd->cert_file[o->id == O_CERT ? 0 : 1], o, val, err, errlen);
    case O_SIGN:
    case O_SIGN2:
        return set_file(&cmd->signing_file[o->id == O_SIGN ? 0 : 1], o, val, err, errlen);
    case O_THUMB:
        if (!thumbprint_ok(val)) {
            seterr(err, errlen, "--thumbprint: expected a SHA-1 (40) or SHA-256 (64 hex "
                   "digits) certificate thumbprint");
            return PROV_EINVAL;
        }
        cmd->thumbprint = val;
        break;
    case O_CAREF:
    case O_CAREF2:
        if (!pc_ca_name_valid(val)) {
            seterr(err, errlen, "--%s: expected a CA certificate name (1 to %d letters, "
                   "digits, '-', '_' and '.')", o->name, PC_CA_NAME_MAX);
            return PROV_EINVAL;
        }
        cmd->ca_ref[o->id == O_CAREF ? 0 : 1] = val;
        break;
    case O_VERIFIED:
        cmd->verified = true;
        break;
    }
    return 0;
}

/* The X.509 options of enrollment and group create|update. */
static int check_x509(struct pc_command *cmd, char *err, size_t errlen)
{
    bool create = cmd->verb == PC_VERB_CREATE;
    bool any = cmd->cert_file[0] || cmd->cert_file[1] || cmd->thumbprint ||
               cmd->signing_file[0] || cmd->signing_file[1] || cmd->ca_ref[0] || cmd->ca_ref[1];
    bool keys = cmd->symmetric_key || cmd->primary_key != NULL || cmd->secondary_key != NULL;

    if (cmd->res != PC_RES_ENROLLMENT && cmd->res != PC_RES_GROUP)
        return 0;
    if (any)
        cmd->x509 = true; /* certificate options imply --x509 */
    if (!cmd->x509)
        return 0;
    if (keys) {
        seterr(err, errlen, "--x509 excludes --symmetric-key, --primary-key and "
               "--secondary-key");
        return PROV_EINVAL;
    }
    if (cmd->res == PC_RES_ENROLLMENT) {
        if (cmd->cert_file[0] != NULL && cmd->thumbprint != NULL) {
            seterr(err, errlen, "--cert and --thumbprint exclude each other (both give the "
                   "primary certificate)");
            return PROV_EINVAL;
        }
        if (create && cmd->cert_file[0] == NULL && cmd->thumbprint == NULL) {
            seterr(err, errlen, "enrollment create --x509 needs --cert FILE or --thumbprint "
                   "HEX");
            return PROV_EINVAL;
        }
        return 0;
    }
    if ((cmd->signing_file[0] || cmd->signing_file[1]) && (cmd->ca_ref[0] || cmd->ca_ref[1])) {
        seterr(err, errlen, "signing certificates (--signing-cert) and CA references "
               "(--ca-ref) exclude each other");
        return PROV_EINVAL;
    }
    if (create && cmd->signing_file[0] == NULL && cmd->ca_ref[0] == NULL) {
        seterr(err, errlen, "group create --x509 needs --signing-cert FILE or --ca-ref NAME");
        return PROV_EINVAL;
    }
    return 0;
}

/* Checks the words and options once the whole command line is known. */
static int check_command(struct pc_command *cmd, const char **words, size_t nwords,
                         const bool *seen, char *err, size_t errlen)
{
    size_t want_ids;
    const char *rn, *vn;

    if (nwords == 0) {
        seterr(err, errlen, "no command given");
        return PROV_EINVAL;
    }
    if ((cmd->res = res_from_word(words[0])) == PC_RES_NONE) {
        seterr(err, errlen, "unknown command '%.60s'", words[0]);
        return PROV_EINVAL;
    }
    rn = pc_res_name(cmd->res);
    if (nwords < 2) {
        seterr(err, errlen, "%s: missing subcommand", rn);
        return PROV_EINVAL;
    }
    if ((cmd->verb = verb_from_word(cmd->res, words[1])) == PC_VERB_NONE) {
        seterr(err, errlen, "%s: unknown subcommand '%.60s'", rn, words[1]);
        return PROV_EINVAL;
    }
    vn = pc_verb_name(cmd->verb);
    want_ids = (cmd->verb == PC_VERB_LIST && cmd->res != PC_RES_REGISTRATION) ? 0 : 1;
    if (nwords - 2 < want_ids) {
        seterr(err, errlen, "%s %s: missing %s", rn, vn,
               cmd->res == PC_RES_REGISTRATION && cmd->verb == PC_VERB_LIST ? "GROUP-ID" : "ID");
        return PROV_EINVAL;
    }
    if (nwords - 2 > want_ids) {
        seterr(err, errlen, "%s %s: unexpected argument '%.60s'", rn, vn, words[2 + want_ids]);
        return PROV_EINVAL;
    }
    cmd->id = want_ids ? words[2] : NULL;
    if (cmd->id != NULL && *cmd->id == '\0') {
        seterr(err, errlen, "%s %s: empty ID", rn, vn);
        return PROV_EINVAL;
    }
    if (cmd->res == PC_RES_CA && cmd->id != NULL && !pc_ca_name_valid(cmd->id)) {
        seterr(err, errlen, "ca %s: invalid name '%.60s' (1-%d of A-Z a-z 0-9 - _ .)", vn,
               cmd->id, PC_CA_NAME_MAX);
        return PROV_EINVAL;
    }
    if ((cmd->verb == PC_VERB_CREATE || cmd->verb == PC_VERB_UPDATE) && !id_is_valid(cmd->id)) {
        seterr(err, errlen, "%s %s: invalid ID '%.60s' (1-128 of A-Z a-z 0-9 - . _ :, ending in "
               "a letter, digit or '-')", rn, vn, cmd->id);
        return PROV_EINVAL;
    }
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        if (seen[opts[i].id] && !opt_allowed(opts[i].scope, cmd->res, cmd->verb)) {
            seterr(err, errlen, "%s %s: option --%s does not apply here", rn, vn, opts[i].name);
            return PROV_EINVAL;
        }
    }
    if (cmd->nhubs > 0 && cmd->clear_hubs) {
        seterr(err, errlen, "--hub and --all-hubs exclude each other");
        return PROV_EINVAL;
    }
    if (cmd->verb == PC_VERB_CREATE && cmd->allocation_policy != NULL &&
        strcmp(cmd->allocation_policy, "custom") == 0 && cmd->webhook_url == NULL) {
        seterr(err, errlen, "--allocation-policy custom needs --webhook-url");
        return PROV_EINVAL;
    }
    if (cmd->verb == PC_VERB_CREATE && cmd->webhook_api_version != NULL &&
        cmd->webhook_url == NULL) {
        seterr(err, errlen, "--webhook-api-version needs --webhook-url");
        return PROV_EINVAL;
    }
    if ((cmd->verb == PC_VERB_CREATE || cmd->verb == PC_VERB_UPDATE) &&
        check_x509(cmd, err, errlen) != 0)
        return PROV_EINVAL;
    if ((cmd->verb == PC_VERB_UPLOAD || cmd->verb == PC_VERB_VERIFY) &&
        cmd->cert_file[0] == NULL) {
        seterr(err, errlen, "ca %s: --cert FILE is required", vn);
        return PROV_EINVAL;
    }
    if (cmd->verb == PC_VERB_UPDATE && !pc_has_changes(cmd)) {
        seterr(err, errlen, "%s update: nothing to change (give at least one option)", rn);
        return PROV_EINVAL;
    }
    return 0;
}

int pc_parse_args(int argc, char **argv, const char *env_cs, const char *env_ca,
                  struct pc_command *cmd, char *err, size_t errlen)
{
    const char *words[8];
    size_t nwords = 0;
    bool seen[O_COUNT] = {false};
    bool only_words = false;
    int r;

    memset(cmd, 0, sizeof(*cmd));
    cmd->enabled = -1;
    cmd->iot_edge = -1;
    cmd->timeout = PC_DEFAULT_TIMEOUT;
    cmd->connection_string = env_cs != NULL && *env_cs != '\0' ? env_cs : NULL;
    cmd->cacert = env_ca != NULL && *env_ca != '\0' ? env_ca : NULL;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const struct opt_def *o;
        const char *val = NULL, *eq;
        size_t nlen;

        if (only_words || a[0] != '-' || a[1] == '\0') {
            if (nwords == sizeof(words) / sizeof(words[0])) {
                seterr(err, errlen, "too many arguments");
                return PROV_EINVAL;
            }
            words[nwords++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_words = true;
            continue;
        }
        if (strcmp(a, "-h") == 0) {
            seen[O_HELP] = true;
            continue;
        }
        if (a[1] != '-') {
            seterr(err, errlen, "unknown option '%.60s'", a);
            return PROV_EINVAL;
        }
        eq = strchr(a + 2, '=');
        nlen = eq != NULL ? (size_t)(eq - (a + 2)) : strlen(a + 2);
        if ((o = opt_find(a + 2, nlen)) == NULL) {
            seterr(err, errlen, "unknown option '--%.*s'", (int)(nlen > 60 ? 60 : nlen), a + 2);
            return PROV_EINVAL;
        }
        if (o->has_arg) {
            if (eq != NULL) {
                val = eq + 1;
            } else if (i + 1 < argc) {
                val = argv[++i];
            } else {
                seterr(err, errlen, "option --%s needs a value", o->name);
                return PROV_EINVAL;
            }
        } else if (eq != NULL) {
            seterr(err, errlen, "option --%s takes no value", o->name);
            return PROV_EINVAL;
        }
        seen[o->id] = true;
        if ((r = set_opt(cmd, o, val, err, errlen)) != 0)
            return r;
    }

    /* "help [RESOURCE [VERB]]", "--help" anywhere, "--version" */
    if (seen[O_HELP] || (nwords > 0 && strcmp(words[0], "help") == 0)) {
        size_t first = (nwords > 0 && strcmp(words[0], "help") == 0) ? 1 : 0;

        cmd->verb = PC_VERB_HELP;
        cmd->res = PC_RES_NONE;
        cmd->help_verb = PC_VERB_NONE;
        if (nwords > first) {
            if ((cmd->res = res_from_word(words[first])) == PC_RES_NONE) {
                seterr(err, errlen, "help: unknown command '%.60s'", words[first]);
                return PROV_EINVAL;
            }
            if (nwords > first + 1 &&
                (cmd->help_verb = verb_from_word(cmd->res, words[first + 1])) == PC_VERB_NONE) {
                seterr(err, errlen, "help: unknown subcommand '%s %.60s'",
                       pc_res_name(cmd->res), words[first + 1]);
                return PROV_EINVAL;
            }
        }
        return 0;
    }
    if (seen[O_VERSION]) {
        cmd->verb = PC_VERB_VERSION;
        return 0;
    }
    if ((r = check_command(cmd, words, nwords, seen, err, errlen)) != 0)
        return r;
    if (cmd->connection_string == NULL) {
        seterr(err, errlen, "no connection string: set PROVD_CONNECTION_STRING or use "
               "--connection-string");
        return PROV_EINVAL;
    }
    return 0;
}

/* ---- help ------------------------------------------------------------- */

static const char help_overview[] =
    "usage: provctl [global options] COMMAND SUBCOMMAND [ARGS] [options]\n"
    "\n"
    "Manages enrollments, enrollment groups, registration records and CA\n"
    "certificates of a provd (or Azure IoT Hub DPS) service API.\n"
    "\n"
    "commands:\n"
    "  enrollment create|update|show|list|delete   individual enrollments\n"
    "  group create|update|show|list|delete        enrollment groups (symmetric key, X.509)\n"
    "  registration show|list|delete               device registration records\n"
    "  ca upload|list|show|code|verify|delete      CA certificates and proof of possession\n"
    "                                              (provd only)\n"
    "  help [COMMAND [SUBCOMMAND]]                 help on a command\n"
    "\n"
    "global options:\n"
    "  --connection-string CS  HostName=host[:port];SharedAccessKeyName=name;\n"
    "                          SharedAccessKey=base64\n"
    "                          (default: $PROVD_CONNECTION_STRING, which keeps the\n"
    "                          key out of the process list)\n"
    "  --cacert FILE           trust this CA bundle\n"
    "                          (default: $PROVD_CA_FILE, else the system store)\n"
    "  --id-scope S            address one ID scope of a multi-scope server\n"
    "  --json                  print the JSON entities instead of text\n"
    "  --timeout SECONDS       per-request time limit (default 60)\n"
    "  --verbose               print each request line and status on stderr\n"
    "  --help, -h              this help (after a command: that command's help)\n"
    "  --version               print the version\n"
    "\n"
    "exit status: 0 success, 1 request failed (HTTP, connection or TLS error),\n"
    "2 usage error.\n";

static const char help_write_opts[] =
    "  --symmetric-key         symmetric-key attestation (the default)\n"
    "  --primary-key K         primary key, base64 of 16-64 bytes\n"
    "  --secondary-key K       secondary key (a key not given is made by the server)\n"
    "  --hub HOST              an IoT hub to allocate to; repeat for several\n"
    "  --all-hubs              allocate among all linked hubs (clears --hub)\n"
    "  --allocation-policy P   hashed, static, geoLatency or custom\n"
    "  --webhook-url URL       webhook of the custom allocation policy\n"
    "  --webhook-api-version V api version sent to the webhook (default 2021-10-01)\n"
    "  --disabled, --enabled   provisioning status\n"
    "  --iot-edge, --no-iot-edge  the device is (not) an IoT Edge device\n"
    "  --initial-twin JSON     initial twin, e.g.\n"
    "                          '{\"tags\":{},\"properties\":{\"desired\":{}}}'\n";

static const char help_x509_ind[] =
    "  --x509                  X.509 attestation (implied by the two options below)\n"
    "  --cert FILE             the device certificate (PEM or DER; never a key)\n"
    "  --secondary-cert FILE   a second device certificate\n"
    "  --thumbprint HEX        pin the device certificate by its SHA-1 or SHA-256\n"
    "                          thumbprint instead of --cert\n";

static const char help_x509_grp[] =
    "  --x509                  X.509 attestation (implied by the options below)\n"
    "  --signing-cert FILE     a CA certificate (root or intermediate) that signs\n"
    "                          the devices' certificates, held in the group\n"
    "  --secondary-signing-cert FILE  a second one\n"
    "  --ca-ref NAME           instead: a CA certificate uploaded with 'provctl ca\n"
    "                          upload' (it must pass proof of possession)\n"
    "  --secondary-ca-ref NAME a second reference\n";

static void help_write(FILE *f, enum pc_resource res, enum pc_verb verb)
{
    const char *rn = pc_res_name(res);
    bool ind = res == PC_RES_ENROLLMENT;

    if (verb == PC_VERB_CREATE) {
        fprintf(f, "usage: provctl %s create ID [options]\n", rn);
        if (ind)
            fputs("       provctl enrollment create ID --x509 (--cert FILE [--secondary-cert "
                  "FILE] |\n                                             --thumbprint HEX)\n", f);
        else
            fputs("       provctl group create ID --x509 (--signing-cert FILE\n"
                  "           [--secondary-signing-cert FILE] | --ca-ref NAME "
                  "[--secondary-ca-ref NAME])\n", f);
        fprintf(f, "\nCreates %s.\nWithout key options the server generates the keys; they "
                "are\nprinted once, here (later: 'provctl %s show ID --keys').\n"
                "Refuses to replace an existing entity unless --etag is given.\n\noptions:\n",
                ind ? "an individual enrollment" : "an enrollment group", rn);
    } else {
        fprintf(f, "usage: provctl %s update ID [options]\n\n", rn);
        fprintf(f, "Fetches the %s, applies the options given and writes it back\n"
                "with If-Match, so a concurrent change fails with 412 instead of being lost.\n"
                "Keys and certificates not given are kept.\n\noptions:\n", rn);
    }
    fputs(help_write_opts, f);
    fputs(ind ? help_x509_ind : help_x509_grp, f);
    if (ind)
        fputs("  --device-id D           IoT hub device id (default: the registration id)\n",
              f);
    if (verb == PC_VERB_CREATE)
        fputs("  --etag E                replace an existing entity whose etag is E\n", f);
    else
        fputs("  --etag E                write only if the current etag is E\n", f);
}

static void help_command(FILE *f, enum pc_resource res, enum pc_verb verb);

void pc_print_help(FILE *f, enum pc_resource res, enum pc_verb verb)
{
    help_command(f, res, verb);
    if (res != PC_RES_NONE)
        fputs("\nGlobal options (--connection-string, --cacert, --id-scope, --json, ...):\n"
              "see 'provctl --help'.\n", f);
}

static void help_ca(FILE *f, enum pc_verb verb)
{
    switch (verb) {
    case PC_VERB_UPLOAD:
        fputs("usage: provctl ca upload NAME --cert FILE [--verified] [--etag E]\n\n"
              "Uploads a CA certificate (root or intermediate; PEM or DER, never a key)\n"
              "under NAME (1-256 of A-Z a-z 0-9 - _ .). It starts unverified; --verified\n"
              "marks it verified at once (you assert you hold its key). Replacing an\n"
              "existing certificate needs --etag (see 'provctl ca show NAME').\n", f);
        return;
    case PC_VERB_LIST:
        fputs("usage: provctl ca list\n\nLists the CA certificates of the ID scope.\n", f);
        return;
    case PC_VERB_SHOW:
        fputs("usage: provctl ca show NAME\n\n"
              "Shows a CA certificate: subject, expiry, thumbprint, verification.\n", f);
        return;
    case PC_VERB_CODE:
        fputs("usage: provctl ca code NAME\n\n"
              "Makes a new verification code for proof of possession and prints it.\n"
              "Sign a certificate whose subject CN is the code with the CA's key, e.g.\n"
              "  openssl req -new -key ca.key -subj \"/CN=$CODE\" -out v.csr\n"
              "  openssl x509 -req -in v.csr -CA ca.pem -CAkey ca.key -days 1 -out v.pem\n"
              "then run 'provctl ca verify NAME --cert v.pem'.\n", f);
        return;
    case PC_VERB_VERIFY:
        fputs("usage: provctl ca verify NAME --cert FILE\n\n"
              "Sends the verification certificate (subject CN = the code of 'provctl ca\n"
              "code', signed by the CA's key); on success the CA is verified and enrollment\n"
              "groups may reference it with --ca-ref.\n", f);
        return;
    case PC_VERB_DELETE:
        fputs("usage: provctl ca delete NAME [--etag E]\n\n"
              "Deletes a CA certificate (its current etag is fetched unless --etag is\n"
              "given). Refused while an enrollment group references it.\n", f);
        return;
    default:
        fputs("usage: provctl ca upload NAME --cert FILE [--verified] [--etag E]\n"
              "       provctl ca list\n"
              "       provctl ca show NAME\n"
              "       provctl ca code NAME\n"
              "       provctl ca verify NAME --cert FILE\n"
              "       provctl ca delete NAME [--etag E]\n\n"
              "CA certificates of the ID scope, with proof of possession (provd's admin\n"
              "API, needs a policy with the ServiceConfig right).\n"
              "'provctl help ca SUBCOMMAND' for details.\n", f);
        return;
    }
}

static void help_command(FILE *f, enum pc_resource res, enum pc_verb verb)
{
    const char *rn = pc_res_name(res);

    switch (res) {
    case PC_RES_NONE:
        fputs(help_overview, f);
        return;
    case PC_RES_CA:
        help_ca(f, verb);
        return;
    case PC_RES_ENROLLMENT:
    case PC_RES_GROUP:
        break;
    case PC_RES_REGISTRATION:
        switch (verb) {
        case PC_VERB_SHOW:
            fputs("usage: provctl registration show ID\n\n"
                  "Shows the registration record a device left when it registered.\n", f);
            return;
        case PC_VERB_LIST:
            fputs("usage: provctl registration list GROUP-ID [--page-size N]\n\n"
                  "Lists the registration records of the devices of an enrollment group,\n"
                  "following continuation tokens across all pages.\n", f);
            return;
        case PC_VERB_DELETE:
            fputs("usage: provctl registration delete ID [--etag E]\n\n"
                  "Deletes a registration record, so that the next registration of the\n"
                  "device is an initial assignment. With --etag only if it still matches.\n", f);
            return;
        default:
            fputs("usage: provctl registration show ID\n"
                  "       provctl registration list GROUP-ID [--page-size N]\n"
                  "       provctl registration delete ID [--etag E]\n\n"
                  "Device registration records (created by devices; read and delete only).\n"
                  "'provctl help registration SUBCOMMAND' for details.\n", f);
            return;
        }
    }
    switch (verb) {
    case PC_VERB_CREATE:
    case PC_VERB_UPDATE:
        help_write(f, res, verb);
        return;
    case PC_VERB_SHOW:
        fprintf(f, "usage: provctl %s show ID [--keys]\n\n"
                "Shows %s. --keys also fetches and prints its keys\n"
                "(the only way to see them after create).\n", rn,
                res == PC_RES_GROUP ? "an enrollment group" : "an individual enrollment");
        return;
    case PC_VERB_LIST:
        fprintf(f, "usage: provctl %s list [--page-size N]\n\n"
                "Lists every %s, following continuation tokens\n"
                "across all pages; --page-size sets the page size asked of the server\n"
                "(1-%d).\n", rn,
                res == PC_RES_GROUP ? "enrollment group" : "individual enrollment",
                PROV_MAX_PAGE);
        return;
    case PC_VERB_DELETE:
        fprintf(f, "usage: provctl %s delete ID [--etag E]\n\n"
                "Deletes the %s; with --etag only if its etag is still E.\n", rn, rn);
        if (res == PC_RES_GROUP)
            fputs("The registration records of the group's devices are kept; delete them\n"
                  "with 'provctl registration delete'.\n", f);
        return;
    default:
        fprintf(f, "usage: provctl %s create ID [options]\n"
                "       provctl %s update ID [options]\n"
                "       provctl %s show ID [--keys]\n"
                "       provctl %s list [--page-size N]\n"
                "       provctl %s delete ID [--etag E]\n\n"
                "'provctl help %s SUBCOMMAND' for details.\n", rn, rn, rn, rn, rn, rn);
        return;
    }
}
