/* provctl: request paths, URLs, certificate files and the entities sent with PUT. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/errors.h"
#include "../common/util.h"
#include "provctl.h"

#define DEFAULT_WEBHOOK_API PC_API_VERSION

const char *pc_collection_path(enum pc_resource res)
{
    switch (res) {
    case PC_RES_ENROLLMENT:
        return "/enrollments";
    case PC_RES_GROUP:
        return "/enrollmentGroups";
    case PC_RES_REGISTRATION:
        return "/registrations";
    case PC_RES_CA:
        return "/certificates";
    case PC_RES_NONE:
        break;
    }
    return "";
}

static const char *id_member(enum pc_resource res)
{
    return res == PC_RES_GROUP ? "enrollmentGroupId" : "registrationId";
}

char *pc_entity_path(enum pc_resource res, const char *id, const char *suffix)
{
    const char *coll = pc_collection_path(res);
    char *enc, *out;
    size_t len;

    if ((enc = url_encode_alloc(id)) == NULL)
        return NULL;
    if (suffix == NULL)
        suffix = "";
    len = strlen(coll) + 1 + strlen(enc) + strlen(suffix) + 1;
    if ((out = malloc(len)) != NULL)
        snprintf(out, len, "%s/%s%s", coll, enc, suffix);
    free(enc);
    return out;
}

char *pc_build_url(const char *host, const char *path, const char *id_scope)
{
    char *scope = NULL, *out = NULL;
    size_t len;

    if (id_scope != NULL && (scope = url_encode_alloc(id_scope)) == NULL)
        return NULL;
    len = strlen("https://") + strlen(host) + strlen(path) + strlen("?api-version=") +
          strlen(PC_API_VERSION) + (scope ? strlen("&idScope=") + strlen(scope) : 0) + 1;
    if ((out = malloc(len)) != NULL)
        snprintf(out, len, "https://%s%s?api-version=%s%s%s", host, path, PC_API_VERSION,
                 scope ? "&idScope=" : "", scope ? scope : "");
    free(scope);
    return out;
}

char *pc_if_match(const char *etag)
{
    size_t len = strlen(etag);
    char *out;

    if (strcmp(etag, "*") == 0 || etag[0] == '"' || strncmp(etag, "W/", 2) == 0)
        return strdup(etag);
    if ((out = malloc(len + 3)) != NULL)
        snprintf(out, len + 3, "\"%s\"", etag);
    return out;
}

bool pc_has_changes(const struct pc_command *cmd)
{
    return cmd->symmetric_key || cmd->primary_key != NULL || cmd->secondary_key != NULL ||
           cmd->device_id != NULL || cmd->nhubs > 0 || cmd->clear_hubs ||
           cmd->allocation_policy != NULL || cmd->webhook_url != NULL ||
           cmd->webhook_api_version != NULL || cmd->enabled >= 0 || cmd->iot_edge >= 0 ||
           cmd->initial_twin != NULL || cmd->cert_file[0] != NULL || cmd->cert_file[1] != NULL ||
           cmd->thumbprint != NULL || cmd->signing_file[0] != NULL ||
           cmd->signing_file[1] != NULL || cmd->ca_ref[0] != NULL || cmd->ca_ref[1] != NULL;
}

bool pc_ca_name_valid(const char *name)
{
    return ca_name_is_valid(name);
}

void pc_cert_files(const struct pc_command *cmd, const char *files[2])
{
    files[0] = files[1] = NULL;
    if (cmd->res == PC_RES_GROUP) {
        files[0] = cmd->signing_file[0];
        files[1] = cmd->signing_file[1];
    } else if (cmd->res == PC_RES_ENROLLMENT) {
        files[0] = cmd->cert_file[0];
        files[1] = cmd->cert_file[1];
    } else if (cmd->res == PC_RES_CA) {
        files[0] = cmd->cert_file[0];
    }
}

int pc_read_cert(const char *path, char **out, char *err, size_t errlen)
{
    FILE *f;
    unsigned char *buf = NULL;
    size_t n = 0;
    int r = PROV_EIO;

    *out = NULL;
    if ((f = fopen(path, "rb")) == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return PROV_EIO;
    }
    if ((buf = malloc(PC_MAX_CERT_FILE + 1)) == NULL) {
        r = PROV_ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    n = fread(buf, 1, PC_MAX_CERT_FILE + 1, f);
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        goto out;
    }
    if (n == 0 || n > PC_MAX_CERT_FILE) {
        r = PROV_EINVAL;
        snprintf(err, errlen, "%s: %s", path, n == 0 ? "empty file"
                 : "larger than 64 KB: not a certificate");
        goto out;
    }
    buf[n] = '\0';
    if (buf[0] == 0x30) {
        /* DER: an ASN.1 SEQUENCE */
        if ((*out = b64_encode_alloc(buf, n)) == NULL) {
            r = PROV_ENOMEM;
            snprintf(err, errlen, "out of memory");
            goto out;
        }
    } else {
        /* text: PEM, or bare base64 of the DER; the server parses both */
        if (memchr(buf, '\0', n) != NULL) {
            r = PROV_EINVAL;
            snprintf(err, errlen, "%s: not a certificate (neither PEM nor DER)", path);
            goto out;
        }
        if (strstr((char *)buf, "PRIVATE KEY-----") != NULL) {
            r = PROV_EINVAL;
            snprintf(err, errlen, "%s holds a private key; give a file with the certificate "
                     "only (a key never leaves this machine)", path);
            goto out;
        }
        *out = (char *)buf;
        buf = NULL;
    }
    r = 0;
out:
    if (buf != NULL)
        prov_freezero(buf, PC_MAX_CERT_FILE + 1);
    fclose(f);
    return r;
}

static json_t *cert_body(const struct pc_command *cmd, bool verified)
{
    json_t *b;

    if (cmd->cert_text[0] == NULL)
        return NULL;
    b = json_pack("{s:s}", "certificate", cmd->cert_text[0]);
    if (b != NULL && verified && json_object_set_new(b, "isVerified", json_true()) != 0) {
        json_decref(b);
        return NULL;
    }
    return b;
}

json_t *pc_ca_upload_body(const struct pc_command *cmd)
{
    return cert_body(cmd, cmd->verified);
}

json_t *pc_ca_verify_body(const struct pc_command *cmd)
{
    return cert_body(cmd, false);
}

/* json_object_set_new that reports failure as PROV_ENOMEM. */
static int set_new(json_t *obj, const char *key, json_t *val)
{
    if (val == NULL)
        return PROV_ENOMEM;
    return json_object_set_new(obj, key, val) == 0 ? 0 : PROV_ENOMEM;
}

static json_t *symkey_attestation(const struct pc_command *cmd)
{
    json_t *att = json_object(), *sk = json_object();

    if (att == NULL || sk == NULL)
        goto fail;
    if (cmd->primary_key != NULL && set_new(sk, "primaryKey", json_string(cmd->primary_key)))
        goto fail;
    if (cmd->secondary_key != NULL &&
        set_new(sk, "secondaryKey", json_string(cmd->secondary_key)))
        goto fail;
    if (set_new(att, "type", json_string("symmetricKey")) != 0)
        goto fail_att;
    if (set_new(att, "symmetricKey", sk) != 0)
        goto fail_att;
    return att;
fail:
    json_decref(sk);
fail_att:
    json_decref(att);
    return NULL;
}

/* The member `key` of obj as an object, made when missing (or not an object). */
static json_t *object_member(json_t *obj, const char *key)
{
    json_t *o = json_object_get(obj, key);

    if (json_is_object(o))
        return o;
    if (set_new(obj, key, json_object()) != 0)
        return NULL;
    return json_object_get(obj, key);
}

/* {"info": {"sha1Thumbprint" | "sha256Thumbprint": tp}} by the number of hex digits. */
static json_t *thumbprint_pin(const char *tp)
{
    size_t n = 0;

    for (const char *p = tp; *p != '\0'; p++)
        n += *p != ':' && *p != ' ';
    return json_pack("{s:{s:s}}", "info", n == 40 ? "sha1Thumbprint" : "sha256Thumbprint", tp);
}

/*
 * Puts the X.509 slots the options name into att (type x509); slots not named
 * stay as they are (info-only from a GET: the server keeps those certificates).
 */
static int x509_overlay(json_t *att, const struct pc_command *cmd, char *err, size_t errlen)
{
    static const char *const slots[] = {"primary", "secondary"};
    bool grp = cmd->res == PC_RES_GROUP;
    const char *const *files = grp ? cmd->signing_file : cmd->cert_file;
    bool certs = files[0] != NULL || files[1] != NULL;
    bool refs = grp && (cmd->ca_ref[0] != NULL || cmd->ca_ref[1] != NULL);
    const char *kind;
    json_t *x, *pair;
    int r;

    if ((x = object_member(att, "x509")) == NULL)
        return PROV_ENOMEM;
    if (grp && certs)
        json_object_del(x, "caReferences");
    if (refs)
        json_object_del(x, "signingCertificates");
    kind = !grp ? "clientCertificates" : refs ? "caReferences" : "signingCertificates";
    if (grp && !certs && !refs && json_is_object(json_object_get(x, "caReferences")))
        kind = "caReferences";
    if ((pair = object_member(x, kind)) == NULL)
        return PROV_ENOMEM;
    for (size_t i = 0; i < 2; i++) {
        json_t *v = NULL;

        if (refs && cmd->ca_ref[i] != NULL) {
            v = json_string(cmd->ca_ref[i]);
        } else if (files[i] != NULL) {
            if (cmd->cert_text[i] == NULL) {
                snprintf(err, errlen, "the certificate file %s was not read", files[i]);
                return PROV_EINVAL;
            }
            v = json_pack("{s:s}", "certificate", cmd->cert_text[i]);
        } else if (i == 0 && !grp && cmd->thumbprint != NULL) {
            v = thumbprint_pin(cmd->thumbprint);
        } else {
            continue;
        }
        if ((r = set_new(pair, slots[i], v)) != 0)
            return r;
    }
    if (json_object_get(pair, "primary") == NULL) {
        snprintf(err, errlen, "the %s has no primary %s; give %s", pc_res_name(cmd->res),
                 grp ? "signing certificate or CA reference" : "certificate",
                 grp ? "--signing-cert FILE or --ca-ref NAME" : "--cert FILE or --thumbprint HEX");
        return PROV_EINVAL;
    }
    return 0;
}

/* {"type": "x509", "x509": {...}} from the options alone. */
static json_t *x509_attestation(const struct pc_command *cmd, char *err, size_t errlen)
{
    json_t *att = json_pack("{s:s, s:{}}", "type", "x509", "x509");

    if (att != NULL && x509_overlay(att, cmd, err, errlen) != 0) {
        json_decref(att);
        return NULL;
    }
    return att;
}

static json_t *hubs_array(const struct pc_command *cmd)
{
    json_t *arr = json_array();

    if (arr == NULL)
        return NULL;
    for (size_t i = 0; i < cmd->nhubs; i++) {
        if (json_array_append_new(arr, json_string(cmd->hubs[i])) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

/* Sets every option that is given in cmd (shared by create and update). */
static int apply_options(json_t *e, const struct pc_command *cmd, char *err, size_t errlen)
{
    int r;

    if (cmd->device_id != NULL && (r = set_new(e, "deviceId", json_string(cmd->device_id))))
        return r;
    if (cmd->nhubs > 0 && (r = set_new(e, "iotHubs", hubs_array(cmd))) != 0)
        return r;
    if (cmd->clear_hubs) {
        json_object_del(e, "iotHubs");
        /* the legacy single-hub field would otherwise pin the old hub */
        json_object_del(e, "iotHubHostName");
    }
    if (cmd->allocation_policy != NULL &&
        (r = set_new(e, "allocationPolicy", json_string(cmd->allocation_policy))) != 0)
        return r;
    if (cmd->webhook_url != NULL || cmd->webhook_api_version != NULL) {
        json_t *def = json_object_get(e, "customAllocationDefinition");
        const char *api = cmd->webhook_api_version;

        if (!json_is_object(def)) {
            if (cmd->webhook_url == NULL) {
                snprintf(err, errlen, "--webhook-api-version: the entity has no custom "
                         "allocation webhook; give --webhook-url too");
                return PROV_EINVAL;
            }
            if ((r = set_new(e, "customAllocationDefinition", json_object())) != 0)
                return r;
            def = json_object_get(e, "customAllocationDefinition");
        }
        if (api == NULL && !json_is_string(json_object_get(def, "apiVersion")))
            api = DEFAULT_WEBHOOK_API;
        if (cmd->webhook_url != NULL &&
            (r = set_new(def, "webhookUrl", json_string(cmd->webhook_url))) != 0)
            return r;
        if (api != NULL && (r = set_new(def, "apiVersion", json_string(api))) != 0)
            return r;
    }
    if (cmd->enabled >= 0 &&
        (r = set_new(e, "provisioningStatus", json_string(cmd->enabled ? "enabled" : "disabled"))))
        return r;
    if (cmd->iot_edge >= 0) {
        json_t *cap = json_object_get(e, "capabilities");

        if (!json_is_object(cap)) {
            if ((r = set_new(e, "capabilities", json_object())) != 0)
                return r;
            cap = json_object_get(e, "capabilities");
        }
        if ((r = set_new(cap, "iotEdge", json_boolean(cmd->iot_edge))) != 0)
            return r;
    }
    if (cmd->initial_twin != NULL) {
        json_t *twin = json_loads(cmd->initial_twin, JSON_REJECT_DUPLICATES, NULL);

        if (!json_is_object(twin)) {
            json_decref(twin);
            snprintf(err, errlen, "--initial-twin: expected a JSON object");
            return PROV_EINVAL;
        }
        if ((r = set_new(e, "initialTwin", twin)) != 0)
            return r;
    }
    return 0;
}

json_t *pc_entity_new(const struct pc_command *cmd)
{
    json_t *e = json_object();
    char err[128];

    if (e == NULL)
        return NULL;
    if (set_new(e, id_member(cmd->res), json_string(cmd->id)) != 0 ||
        set_new(e, "attestation", cmd->x509 ? x509_attestation(cmd, err, sizeof(err))
                                            : symkey_attestation(cmd)) != 0 ||
        set_new(e, "provisioningStatus", json_string("enabled")) != 0 ||
        set_new(e, "capabilities", json_pack("{s:b}", "iotEdge", 0)) != 0 ||
        apply_options(e, cmd, err, sizeof(err)) != 0) {
        json_decref(e);
        return NULL;
    }
    return e;
}

int pc_entity_apply(json_t *cur, const json_t *att, const struct pc_command *cmd, char *err,
                    size_t errlen)
{
    static const char *const server_owned[] = {
        "etag", "createdDateTimeUtc", "lastUpdatedDateTimeUtc", "registrationState",
    };
    json_t *a;
    const char *type;
    bool keys = cmd->primary_key != NULL || cmd->secondary_key != NULL;
    int r;

    if (!json_is_object(cur)) {
        snprintf(err, errlen, "the server returned an entity that is not a JSON object");
        return PROV_EINVAL;
    }
    for (size_t i = 0; i < sizeof(server_owned) / sizeof(server_owned[0]); i++)
        json_object_del(cur, server_owned[i]);
    if (att != NULL && (r = set_new(cur, "attestation", json_deep_copy(att))) != 0)
        return r;

    a = json_object_get(cur, "attestation");
    type = json_string_value(json_object_get(a, "type"));
    if (cmd->x509) {
        if (type == NULL || strcmp(type, "x509") != 0) {
            /* switching to X.509: the options must give the whole mechanism */
            if ((r = set_new(cur, "attestation", json_pack("{s:s}", "type", "x509"))) != 0)
                return r;
            a = json_object_get(cur, "attestation");
        }
        if ((r = x509_overlay(a, cmd, err, errlen)) != 0)
            return r;
    } else if (type == NULL || strcmp(type, "symmetricKey") != 0) {
        if (cmd->symmetric_key) {
            /* switching to symmetric keys: given keys, or the server generates them */
            if ((r = set_new(cur, "attestation", symkey_attestation(cmd))) != 0)
                return r;
        } else if (keys) {
            snprintf(err, errlen, "the %s uses %s attestation, not symmetricKey (add "
                     "--symmetric-key to switch)", pc_res_name(cmd->res),
                     type != NULL ? type : "no");
            return PROV_EINVAL;
        }
    } else if (keys) {
        json_t *sk = json_object_get(a, "symmetricKey");

        if (!json_is_object(sk)) {
            if ((r = set_new(a, "symmetricKey", json_object())) != 0)
                return r;
            sk = json_object_get(a, "symmetricKey");
        }
        if (cmd->primary_key != NULL &&
            (r = set_new(sk, "primaryKey", json_string(cmd->primary_key))) != 0)
            return r;
        if (cmd->secondary_key != NULL &&
            (r = set_new(sk, "secondaryKey", json_string(cmd->secondary_key))) != 0)
            return r;
    }
    return apply_options(cur, cmd, err, errlen);
}
