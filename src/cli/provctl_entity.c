/* provctl: request paths, URLs and the entities sent with PUT. */
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
           cmd->initial_twin != NULL;
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
        set_new(e, "attestation", symkey_attestation(cmd)) != 0 ||
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
    if (type == NULL || strcmp(type, "symmetricKey") != 0) {
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
