/*
 * Enrollment and enrollment-group documents: validation of what clients send,
 * the normalised form that is stored, and what clients get back. See model.h
 * for the stored shape.
 */
#include "model.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/errors.h"
#include "../common/limits.h"
#include "../common/util.h"

#define MAX_DEVICE_ID 128

static void wipe_string(json_t *s);

static const char *const attestation_types[] = {"none", "tpm", "x509", "symmetricKey"};
static const char *const allocation_policies[] = {"hashed", "geoLatency", "static", "custom"};
static const char *const provisioning_statuses[] = {"enabled", "disabled"};

/* Members the model interprets; anything else is kept opaquely. */
static const char *const common_members[] = {
    "attestation", "capabilities", "iotHubHostName", "initialTwin", "provisioningStatus",
    "reprovisionPolicy", "allocationPolicy", "iotHubs", "customAllocationDefinition",
    /* read-only members: ignored in requests */
    "etag", "createdDateTimeUtc", "lastUpdatedDateTimeUtc", "registrationState",
    MODEL_PRIVATE,
};
static const char *const individual_members[] = {
    "registrationId", "deviceId", "optionalDeviceInformation",
};

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err != NULL && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return PROV_EINVAL;
}

static const char *canon(const char *const *table, size_t n, const char *s)
{
    if (s == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (str_ieq(table[i], s))
            return table[i];
    }
    return NULL;
}

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

const char *model_attestation_type(const char *s)
{
    return canon(attestation_types, NELEM(attestation_types), s);
}

const char *model_allocation_policy(const char *s)
{
    return canon(allocation_policies, NELEM(allocation_policies), s);
}

const char *model_provisioning_status(const char *s)
{
    return canon(provisioning_statuses, NELEM(provisioning_statuses), s);
}

int model_bulk_mode(const char *s, enum model_bulk_mode *out)
{
    if (s == NULL)
        return PROV_EINVAL;
    if (str_ieq(s, "create"))
        *out = BULK_CREATE;
    else if (str_ieq(s, "update"))
        *out = BULK_UPDATE;
    else if (str_ieq(s, "updateIfMatchETag")) /* also Node's "updateIfMatchEtag" */
        *out = BULK_UPDATE_IF_MATCH;
    else if (str_ieq(s, "delete"))
        *out = BULK_DELETE;
    else
        return PROV_EINVAL;
    return 0;
}

const char *model_id_member(enum store_kind kind)
{
    return kind == STORE_GROUP ? "enrollmentGroupId" : "registrationId";
}

static bool in_list(const char *const *list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(list[i], s) == 0)
            return true;
    }
    return false;
}

static bool is_known_member(enum store_kind kind, const char *key)
{
    if (in_list(common_members, NELEM(common_members), key))
        return true;
    if (kind == STORE_GROUP)
        return strcmp(key, "enrollmentGroupId") == 0;
    return in_list(individual_members, NELEM(individual_members), key);
}

/* A member of obj, or NULL when absent or JSON null (null means absent). */
static json_t *member(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);

    return json_is_null(v) ? NULL : v;
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "unknown";
}

int model_parse_object(const char *body, size_t len, bool allow_empty, json_t **out, char *err,
                       size_t errlen)
{
    json_error_t jerr;
    json_t *j;
    size_t i;

    *out = NULL;
    for (i = 0; i < len; i++) {
        if (body[i] != ' ' && body[i] != '\t' && body[i] != '\r' && body[i] != '\n')
            break;
    }
    if (i == len) {
        if (allow_empty)
            return 0;
        fail(err, errlen, "the request body is empty; a JSON object is required");
        return PROV_EPROTO;
    }
    j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL) {
        fail(err, errlen, "malformed JSON body: %s (line %d, column %d)", jerr.text, jerr.line,
             jerr.column);
        return PROV_EPROTO;
    }
    if (!json_is_object(j)) {
        fail(err, errlen, "the request body must be a JSON object, not %s", type_name(j));
        json_decref(j);
        return PROV_EPROTO;
    }
    *out = j;
    return 0;
}

/* Base64 that decodes to between min and max bytes (max 0 = no upper bound). */
static bool b64_ok(const char *s, size_t min, size_t max)
{
    size_t len = strlen(s);
    uint8_t *buf;
    int n;

    if (len == 0 || len > PROV_MAX_BODY)
        return false;
    buf = malloc(b64_decoded_max(len));
    if (buf == NULL)
        return false;
    n = b64_decode(s, len, buf);
    prov_freezero(buf, b64_decoded_max(len));
    return n > 0 && (size_t)n >= min && (max == 0 || (size_t)n <= max);
}

static int generate_key(json_t *obj, const char *name)
{
    uint8_t raw[PROV_GENERATED_KEY_BYTES];
    char b64[4 * ((PROV_GENERATED_KEY_BYTES + 2) / 3) + 1];
    int r;

    if ((r = random_bytes(raw, sizeof(raw))) != 0)
        return r;
    b64_encode(raw, sizeof(raw), b64);
    r = json_object_set_new(obj, name, json_string(b64)) == 0 ? 0 : PROV_ENOMEM;
    prov_cleanse(raw, sizeof(raw));
    prov_cleanse(b64, sizeof(b64));
    return r;
}

/* Copies the members of src not named in skip into dst (shallow, by reference). */
static int copy_other_members(json_t *dst, const json_t *src, const char *const *skip,
                              size_t nskip)
{
    const char *key;
    json_t *v;

    json_object_foreach((json_t *)src, key, v) {
        if (in_list(skip, nskip, key))
            continue;
        if (json_object_set_new(dst, key, json_deep_copy(v)) != 0)
            return PROV_ENOMEM;
    }
    return 0;
}

static int prepare_symmetric_key(const json_t *sub, const json_t *existing, json_t *att,
                                 char *err, size_t errlen)
{
    static const char *const names[] = {"primaryKey", "secondaryKey"};
    const json_t *old = NULL;
    json_t *sk = json_object();
    int r = PROV_ENOMEM;

    if (sk == NULL)
        return PROV_ENOMEM;
    if (existing != NULL) {
        const json_t *oa = member(existing, "attestation");
        const json_t *ot = member(oa, "type");

        if (json_is_string(ot) && strcmp(json_string_value(ot), "symmetricKey") == 0)
            old = member(oa, "symmetricKey");
    }
    for (size_t i = 0; i < NELEM(names); i++) {
        const json_t *v = sub != NULL ? member(sub, names[i]) : NULL;
        const json_t *ov = old != NULL ? member(old, names[i]) : NULL;

        /* an empty string is what some clients send for "none given" */
        if (v != NULL && json_is_string(v) && json_string_length(v) == 0)
            v = NULL;
        if (v != NULL) {
            if (!json_is_string(v)) {
                r = fail(err, errlen, "attestation.symmetricKey.%s must be a string", names[i]);
                goto out;
            }
            if (!b64_ok(json_string_value(v), PROV_MIN_KEY_BYTES, PROV_MAX_KEY_BYTES)) {
                r = fail(err, errlen,
                         "attestation.symmetricKey.%s must be base64 of %d to %d bytes", names[i],
                         PROV_MIN_KEY_BYTES, PROV_MAX_KEY_BYTES);
                goto out;
            }
            if (json_object_set_new(sk, names[i], json_string(json_string_value(v))) != 0)
                goto out;
        } else if (json_is_string(ov) && json_string_length(ov) > 0) {
            /*
             * An update without keys keeps the stored ones. Azure generates new
             * keys here; keeping them is safer (a client that round-trips a GET
             * answer, which has no keys, would otherwise lock its devices out).
             */
            if (json_object_set_new(sk, names[i], json_string(json_string_value(ov))) != 0)
                goto out;
        } else if ((r = generate_key(sk, names[i])) != 0) {
            goto out;
        }
    }
    if (sub != NULL && (r = copy_other_members(sk, sub, names, NELEM(names))) != 0)
        goto out;
    r = json_object_set_new(att, "symmetricKey", sk) == 0 ? 0 : PROV_ENOMEM;
    sk = NULL;
out:
    model_json_free(sk);
    return r;
}

static int check_cert_pair(const json_t *x509, const char *name, char *err, size_t errlen)
{
    static const char *const slots[] = {"primary", "secondary"};
    const json_t *pair = member(x509, name);

    if (pair == NULL)
        return 0;
    if (!json_is_object(pair))
        return fail(err, errlen, "attestation.x509.%s must be an object", name);
    if (member(pair, "primary") == NULL)
        return fail(err, errlen, "attestation.x509.%s.primary is required", name);
    for (size_t i = 0; i < NELEM(slots); i++) {
        const json_t *c = member(pair, slots[i]);

        if (c == NULL)
            continue;
        if (strcmp(name, "caReferences") == 0) {
            if (!json_is_string(c) || json_string_length(c) == 0)
                return fail(err, errlen, "attestation.x509.%s.%s must be a CA name", name,
                            slots[i]);
            continue;
        }
        if (!json_is_object(c))
            return fail(err, errlen, "attestation.x509.%s.%s must be an object", name,
                        slots[i]);
        if (member(c, "certificate") != NULL && !json_is_string(member(c, "certificate")))
            return fail(err, errlen, "attestation.x509.%s.%s.certificate must be a string", name,
                        slots[i]);
        if (member(c, "certificate") == NULL && member(c, "info") == NULL)
            return fail(err, errlen, "attestation.x509.%s.%s needs a certificate", name,
                        slots[i]);
    }
    return 0;
}

static int prepare_attestation(enum store_kind kind, const json_t *body, const json_t *existing,
                               json_t *doc, const char **type_out, char *err, size_t errlen)
{
    static const char *const subs[] = {"tpm", "x509", "symmetricKey"};
    static const char *const skip[] = {"type", "tpm", "x509", "symmetricKey"};
    const json_t *a = member(body, "attestation");
    const json_t *t, *sub;
    const char *type;
    json_t *att = NULL;
    int r = PROV_ENOMEM;

    if (a == NULL)
        return fail(err, errlen, "attestation is required");
    if (!json_is_object(a))
        return fail(err, errlen, "attestation must be an object, not %s", type_name(a));
    t = member(a, "type");
    if (t == NULL)
        return fail(err, errlen, "attestation.type is required");
    if (!json_is_string(t))
        return fail(err, errlen, "attestation.type must be a string");
    type = model_attestation_type(json_string_value(t));
    if (type == NULL)
        return fail(err, errlen, "attestation.type must be none, tpm, x509 or symmetricKey");
    if (kind == STORE_GROUP && strcmp(type, "tpm") == 0)
        return fail(err, errlen, "TPM enrollment groups are not supported yet");
    for (size_t i = 0; i < NELEM(subs); i++) {
        const json_t *s = member(a, subs[i]);

        if (s == NULL)
            continue;
        if (strcmp(subs[i], type) != 0)
            return fail(err, errlen, "attestation type '%s' does not match its '%s' object",
                        type, subs[i]);
        if (!json_is_object(s))
            return fail(err, errlen, "attestation.%s must be an object", subs[i]);
    }
    sub = strcmp(type, "none") == 0 ? NULL : member(a, type);
    if ((att = json_object()) == NULL)
        return PROV_ENOMEM;
    if (json_object_set_new(att, "type", json_string(type)) != 0)
        goto out;
    if (strcmp(type, "tpm") == 0) {
        const json_t *ek = member(sub, "endorsementKey");
        const json_t *srk = member(sub, "storageRootKey");

        if (sub == NULL || ek == NULL) {
            r = fail(err, errlen, "attestation.tpm.endorsementKey is required");
            goto out;
        }
        if (!json_is_string(ek) || !b64_ok(json_string_value(ek), 1, 0)) {
            r = fail(err, errlen, "attestation.tpm.endorsementKey must be base64");
            goto out;
        }
        if (srk != NULL && (!json_is_string(srk) || !b64_ok(json_string_value(srk), 1, 0))) {
            r = fail(err, errlen, "attestation.tpm.storageRootKey must be base64");
            goto out;
        }
        if (json_object_set_new(att, "tpm", json_deep_copy(sub)) != 0)
            goto out;
    } else if (strcmp(type, "x509") == 0) {
        static const char *const kinds[] = {"clientCertificates", "signingCertificates",
                                            "caReferences"};
        bool any = false;

        if (sub == NULL) {
            r = fail(err, errlen, "attestation.x509 is required for type x509");
            goto out;
        }
        for (size_t i = 0; i < NELEM(kinds); i++) {
            if ((r = check_cert_pair(sub, kinds[i], err, errlen)) != 0)
                goto out;
            any = any || member(sub, kinds[i]) != NULL;
        }
        if (!any) {
            r = fail(err, errlen, "attestation.x509 needs clientCertificates, "
                                  "signingCertificates or caReferences");
            goto out;
        }
        if (json_object_set_new(att, "x509", json_deep_copy(sub)) != 0)
            goto out;
    } else if (strcmp(type, "symmetricKey") == 0) {
        if ((r = prepare_symmetric_key(sub, existing, att, err, errlen)) != 0)
            goto out;
    }
    if ((r = copy_other_members(att, a, skip, NELEM(skip))) != 0)
        goto out;
    r = json_object_set_new(doc, "attestation", att) == 0 ? 0 : PROV_ENOMEM;
    att = NULL;
    *type_out = type;
out:
    model_json_free(att);
    return r;
}

/* The configured spelling of hub host name s, or NULL. */
static const char *find_hub(const struct cfg_hub *hubs, size_t nhubs, const char *s)
{
    for (size_t i = 0; i < nhubs; i++) {
        if (str_ieq(hubs[i].hostname, s))
            return hubs[i].hostname;
    }
    return NULL;
}

/*
 * IoT Hub device ids: up to 128 ASCII alphanumerics and - . + % _ # * ? ! ( ) , : = @ $ '
 * (the set IoT Hub accepts; it also keeps the id safe for MQTT topics).
 */
static bool device_id_ok(const char *s)
{
    size_t len = strlen(s);

    if (len == 0 || len > MAX_DEVICE_ID)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("-.+%_#*?!(),:=@$'", c) != NULL))
            return false;
    }
    return true;
}

static int set_bool_object(json_t *doc, const json_t *src, const char *name,
                           const char *const *fields, const bool *defaults, size_t n, char *err,
                           size_t errlen)
{
    json_t *o;
    int r;

    if (src != NULL && !json_is_object(src))
        return fail(err, errlen, "%s must be an object, not %s", name, type_name(src));
    if ((o = json_object()) == NULL)
        return PROV_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const json_t *v = src != NULL ? member(src, fields[i]) : NULL;

        if (v != NULL && !json_is_boolean(v)) {
            json_decref(o);
            return fail(err, errlen, "%s.%s must be a boolean", name, fields[i]);
        }
        if (json_object_set_new(o, fields[i],
                                json_boolean(v != NULL ? json_is_true(v) : defaults[i])) != 0) {
            json_decref(o);
            return PROV_ENOMEM;
        }
    }
    if (src != NULL && (r = copy_other_members(o, src, fields, n)) != 0) {
        json_decref(o);
        return r;
    }
    return json_object_set_new(doc, name, o) == 0 ? 0 : PROV_ENOMEM;
}

static int prepare_hubs(const json_t *body, json_t *doc, const struct cfg_hub *hubs,
                        size_t nhubs, const char **single, size_t *count, char *err,
                        size_t errlen)
{
    const json_t *list = member(body, "iotHubs");
    const json_t *legacy = member(body, "iotHubHostName");
    const char *legacy_hub = NULL;
    json_t *out = NULL;
    size_t i;
    const json_t *v;

    *single = NULL;
    *count = 0;
    if (legacy != NULL) {
        if (!json_is_string(legacy))
            return fail(err, errlen, "iotHubHostName must be a string");
        legacy_hub = find_hub(hubs, nhubs, json_string_value(legacy));
        if (legacy_hub == NULL)
            return fail(err, errlen, "iotHubHostName '%.256s' is not a linked hub",
                        json_string_value(legacy));
        if (json_object_set_new(doc, "iotHubHostName", json_string(legacy_hub)) != 0)
            return PROV_ENOMEM;
        *single = legacy_hub;
        *count = 1;
    }
    if (list == NULL)
        return 0;
    if (!json_is_array(list))
        return fail(err, errlen, "iotHubs must be an array, not %s", type_name(list));
    if ((out = json_array()) == NULL)
        return PROV_ENOMEM;
    json_array_foreach(list, i, v) {
        const char *hub;
        bool dup = false;

        if (!json_is_string(v)) {
            json_decref(out);
            return fail(err, errlen, "iotHubs[%zu] must be a string", i);
        }
        hub = find_hub(hubs, nhubs, json_string_value(v));
        if (hub == NULL) {
            json_decref(out);
            return fail(err, errlen, "iotHubs[%zu] '%.256s' is not a linked hub", i,
                        json_string_value(v));
        }
        for (size_t k = 0; k < json_array_size(out); k++)
            dup = dup || strcmp(json_string_value(json_array_get(out, k)), hub) == 0;
        if (dup)
            continue;
        if (json_array_append_new(out, json_string(hub)) != 0) {
            json_decref(out);
            return PROV_ENOMEM;
        }
        if (*single == NULL || strcmp(*single, hub) != 0)
            (*count)++;
        if (*single == NULL)
            *single = hub;
    }
    return json_object_set_new(doc, "iotHubs", out) == 0 ? 0 : PROV_ENOMEM;
}

static bool url_ok(const char *s)
{
    size_t skip;

    if (str_ieqn(s, "https://", 8))
        skip = 8;
    else if (str_ieqn(s, "http://", 7))
        skip = 7;
    else
        return false;
    if (s[skip] == '\0' || s[skip] == '/')
        return false;
    for (; *s; s++) {
        if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f)
            return false;
    }
    return true;
}

static int prepare_custom(const json_t *body, json_t *doc, bool required, char *err,
                          size_t errlen)
{
    static const char *const fields[] = {"webhookUrl", "apiVersion"};
    const json_t *c = member(body, "customAllocationDefinition");
    const json_t *url, *ver;
    json_t *o;
    int r;

    if (c == NULL) {
        if (required)
            return fail(err, errlen, "allocationPolicy custom needs customAllocationDefinition");
        return 0;
    }
    if (!json_is_object(c))
        return fail(err, errlen, "customAllocationDefinition must be an object");
    url = member(c, "webhookUrl");
    ver = member(c, "apiVersion");
    if (url == NULL || !json_is_string(url) || !url_ok(json_string_value(url)))
        return fail(err, errlen,
                    "customAllocationDefinition.webhookUrl must be an http(s) URL");
    if (ver == NULL || !json_is_string(ver) || json_string_length(ver) == 0 ||
        json_string_length(ver) > 64)
        return fail(err, errlen, "customAllocationDefinition.apiVersion must be a string");
    o = json_pack("{s:s, s:s}", "webhookUrl", json_string_value(url), "apiVersion",
                  json_string_value(ver));
    if (o == NULL)
        return PROV_ENOMEM;
    if ((r = copy_other_members(o, c, fields, NELEM(fields))) != 0) {
        json_decref(o);
        return r;
    }
    return json_object_set_new(doc, "customAllocationDefinition", o) == 0 ? 0 : PROV_ENOMEM;
}

static int prepare_twin(const json_t *body, json_t *doc, char *err, size_t errlen)
{
    const json_t *t = member(body, "initialTwin");
    const json_t *tags, *props, *desired;

    if (t == NULL)
        return 0;
    if (!json_is_object(t))
        return fail(err, errlen, "initialTwin must be an object, not %s", type_name(t));
    tags = member(t, "tags");
    props = member(t, "properties");
    if (tags != NULL && !json_is_object(tags))
        return fail(err, errlen, "initialTwin.tags must be an object");
    if (props != NULL) {
        if (!json_is_object(props))
            return fail(err, errlen, "initialTwin.properties must be an object");
        desired = member(props, "desired");
        if (desired != NULL && !json_is_object(desired))
            return fail(err, errlen, "initialTwin.properties.desired must be an object");
    }
    return json_object_set_new(doc, "initialTwin", json_deep_copy(t)) == 0 ? 0 : PROV_ENOMEM;
}

int model_prepare(enum store_kind kind, const char *id, const json_t *body, const json_t *existing,
                  const struct cfg_hub *hubs, size_t nhubs, json_t **out,
                  const char **attestation, char *err, size_t errlen)
{
    static const char *const cap_fields[] = {"iotEdge"};
    static const bool cap_defaults[] = {false};
    static const char *const rp_fields[] = {"updateHubAssignment", "migrateDeviceData"};
    static const bool rp_defaults[] = {true, true};
    const char *idm = model_id_member(kind);
    const char *type = NULL, *policy = NULL, *single_hub = NULL;
    const json_t *v;
    const char *key;
    json_t *doc = NULL, *val;
    size_t nhub = 0;
    bool explicit_rp;
    int r = PROV_ENOMEM;

    *out = NULL;
    *attestation = NULL;
    if (!json_is_object(body))
        return fail(err, errlen, "the body must be a JSON object");
    if ((doc = json_object()) == NULL)
        return PROV_ENOMEM;

    v = member(body, idm);
    if (v != NULL && !json_is_string(v)) {
        r = fail(err, errlen, "%s must be a string", idm);
        goto out;
    }
    if (v != NULL && !str_ieq(json_string_value(v), id)) {
        r = fail(err, errlen, "%s in the body does not match the id in the path", idm);
        goto out;
    }
    if (json_object_set_new(doc, idm, json_string(v != NULL ? json_string_value(v) : id)) != 0)
        goto out;

    if (kind == STORE_ENROLLMENT && (v = member(body, "deviceId")) != NULL) {
        if (!json_is_string(v) || !device_id_ok(json_string_value(v))) {
            r = fail(err, errlen, "deviceId must be 1 to %d characters of letters, digits and "
                                  "-.+%%_#*?!(),:=@$'", MAX_DEVICE_ID);
            goto out;
        }
        if (json_object_set_new(doc, "deviceId", json_string(json_string_value(v))) != 0)
            goto out;
    }

    if ((r = prepare_attestation(kind, body, existing, doc, &type, err, errlen)) != 0)
        goto out;

    if ((r = set_bool_object(doc, member(body, "capabilities"), "capabilities", cap_fields,
                             cap_defaults, NELEM(cap_fields), err, errlen)) != 0)
        goto out;

    if ((r = prepare_hubs(body, doc, hubs, nhubs, &single_hub, &nhub, err, errlen)) != 0)
        goto out;

    if ((r = prepare_twin(body, doc, err, errlen)) != 0)
        goto out;

    v = member(body, "provisioningStatus");
    if (v != NULL && (!json_is_string(v) || model_provisioning_status(json_string_value(v)) ==
                                                NULL)) {
        r = fail(err, errlen, "provisioningStatus must be enabled or disabled");
        goto out;
    }
    if (json_object_set_new(doc, "provisioningStatus",
                            json_string(v != NULL ? model_provisioning_status(
                                                        json_string_value(v))
                                                  : "enabled")) != 0) {
        r = PROV_ENOMEM;
        goto out;
    }

    v = member(body, "reprovisionPolicy");
    explicit_rp = v != NULL;
    if ((r = set_bool_object(doc, v, "reprovisionPolicy", rp_fields, rp_defaults,
                             NELEM(rp_fields), err, errlen)) != 0)
        goto out;

    v = member(body, "allocationPolicy");
    if (v != NULL) {
        if (!json_is_string(v) ||
            (policy = model_allocation_policy(json_string_value(v))) == NULL) {
            r = fail(err, errlen, "allocationPolicy must be hashed, geoLatency, static or custom");
            goto out;
        }
        if (json_object_set_new(doc, "allocationPolicy", json_string(policy)) != 0) {
            r = PROV_ENOMEM;
            goto out;
        }
    }
    if (policy != NULL && strcmp(policy, "static") == 0 && nhub != 1) {
        r = fail(err, errlen,
                 "allocationPolicy static needs exactly one hub (iotHubs or iotHubHostName)");
        goto out;
    }
    if ((r = prepare_custom(body, doc, policy != NULL && strcmp(policy, "custom") == 0, err,
                            errlen)) != 0)
        goto out;

    if (kind == STORE_ENROLLMENT && (v = member(body, "optionalDeviceInformation")) != NULL) {
        if (!json_is_object(v)) {
            r = fail(err, errlen, "optionalDeviceInformation must be an object");
            goto out;
        }
        if (json_object_set_new(doc, "optionalDeviceInformation", json_deep_copy(v)) != 0) {
            r = PROV_ENOMEM;
            goto out;
        }
    }

    /* unknown members: kept and echoed as sent */
    r = PROV_ENOMEM;
    json_object_foreach((json_t *)body, key, val) {
        if (is_known_member(kind, key))
            continue;
        if (json_object_set_new(doc, key, json_deep_copy(val)) != 0)
            goto out;
    }
    if (json_object_set_new(doc, MODEL_PRIVATE,
                            json_pack("{s:b}", MODEL_REPROVISION_EXPLICIT, explicit_rp)) != 0)
        goto out;

    *attestation = type;
    *out = doc;
    doc = NULL;
    r = 0;
out:
    model_json_free(doc);
    return r;
}

static void drop_certificates(json_t *x509)
{
    static const char *const pairs[] = {"clientCertificates", "signingCertificates"};
    static const char *const slots[] = {"primary", "secondary"};

    for (size_t i = 0; i < NELEM(pairs); i++) {
        json_t *p = json_object_get(x509, pairs[i]);

        for (size_t k = 0; k < NELEM(slots); k++) {
            json_t *c = json_object_get(p, slots[k]);

            if (json_is_object(c))
                json_object_del(c, "certificate");
        }
    }
}

json_t *model_render(const json_t *stored, const char *etag, const char *created,
                     const char *updated, unsigned flags)
{
    json_t *o = json_deep_copy(stored);
    json_t *att;
    char quoted[128];

    if (o == NULL || !json_is_object(o)) {
        json_decref(o);
        return NULL;
    }
    json_object_del(o, MODEL_PRIVATE);
    att = json_object_get(o, "attestation");
    if (!(flags & MODEL_WITH_KEYS)) {
        json_t *sk = json_object_get(att, "symmetricKey");

        if (json_is_object(sk)) {
            /* o is a deep copy: the key strings are ours to wipe */
            wipe_string(json_object_get(sk, "primaryKey"));
            wipe_string(json_object_get(sk, "secondaryKey"));
            json_object_del(sk, "primaryKey");
            json_object_del(sk, "secondaryKey");
        }
    }
    if (!(flags & MODEL_WITH_CERTS))
        drop_certificates(json_object_get(att, "x509"));
    if (etag != NULL) {
        model_etag_quote(etag, quoted, sizeof(quoted));
        if (json_object_set_new(o, "etag", json_string(quoted)) != 0)
            goto oom;
    }
    if (created != NULL && json_object_set_new(o, "createdDateTimeUtc", json_string(created)) != 0)
        goto oom;
    if (updated != NULL &&
        json_object_set_new(o, "lastUpdatedDateTimeUtc", json_string(updated)) != 0)
        goto oom;
    return o;
oom:
    model_json_free(o);
    return NULL;
}

json_t *model_attestation(const json_t *stored)
{
    const json_t *a = json_object_get(stored, "attestation");

    return json_is_object(a) ? json_deep_copy(a) : NULL;
}

bool model_reprovision_explicit(const json_t *stored)
{
    const json_t *p = json_object_get(stored, MODEL_PRIVATE);

    return json_is_true(json_object_get(p, MODEL_REPROVISION_EXPLICIT));
}

int model_etag_normalize(const char *if_match, char *out, size_t outlen)
{
    const char *s = if_match;
    size_t len;

    if (s == NULL)
        return PROV_EINVAL;
    while (*s == ' ' || *s == '\t')
        s++;
    len = strlen(s);
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (len >= 2 && s[0] == 'W' && s[1] == '/') {
        s += 2;
        len -= 2;
    }
    if (len >= 2 && s[0] == '"' && s[len - 1] == '"') {
        s++;
        len -= 2;
    }
    if (len == 0 || len >= outlen)
        return PROV_EINVAL;
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)s[i] < 0x20 || s[i] == '"')
            return PROV_EINVAL;
    }
    memcpy(out, s, len);
    out[len] = '\0';
    return 0;
}

void model_etag_quote(const char *etag, char *out, size_t outlen)
{
    snprintf(out, outlen, "\"%s\"", etag);
}

void model_continuation_encode(const char *id, char *out, size_t outlen)
{
    size_t len = strlen(id);
    char *b = malloc(b64_encoded_len(len) + 1);
    size_t n;

    if (outlen == 0)
        return;
    out[0] = '\0';
    if (b == NULL)
        return;
    b64_encode((const uint8_t *)id, len, b);
    n = strlen(b);
    while (n > 0 && b[n - 1] == '=')
        n--;
    for (size_t i = 0; i < n; i++)
        b[i] = b[i] == '+' ? '-' : b[i] == '/' ? '_' : b[i];
    b[n] = '\0';
    if (n < outlen)
        memcpy(out, b, n + 1);
    free(b);
}

int model_continuation_decode(const char *token, char *out, size_t outlen)
{
    char b[4 * ((PROV_MAX_REG_ID + 2) / 3) + 1];
    uint8_t raw[sizeof(b)];
    size_t len = strlen(token);
    int n;

    if (len == 0 || len % 4 == 1 || len + 3 >= sizeof(b))
        return PROV_EINVAL;
    for (size_t i = 0; i < len; i++) {
        char c = token[i];

        if (c == '-')
            c = '+';
        else if (c == '_')
            c = '/';
        else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return PROV_EINVAL;
        b[i] = c;
    }
    while (len % 4 != 0)
        b[len++] = '=';
    b[len] = '\0';
    n = b64_decode(b, len, raw);
    if (n <= 0 || (size_t)n >= outlen)
        return PROV_EINVAL;
    memcpy(out, raw, (size_t)n);
    out[n] = '\0';
    if (strlen(out) != (size_t)n || !id_is_valid(out))
        return PROV_EINVAL;
    for (int i = 0; i < n; i++) {
        if (out[i] >= 'A' && out[i] <= 'Z')
            return PROV_EINVAL; /* tokens carry the store's lower-case key */
    }
    return 0;
}

static void wipe_string(json_t *s)
{
    if (json_is_string(s) && s->refcount == 1)
        prov_cleanse((char *)json_string_value(s), json_string_length(s));
}

void model_json_free(json_t *doc)
{
    json_t *att, *sk;

    if (doc == NULL)
        return;
    if (doc->refcount == 1 && json_is_object(doc)) {
        /* a document, an attestation mechanism or a symmetricKey object */
        att = json_object_get(doc, "attestation");
        if (att == NULL || att->refcount != 1)
            att = doc;
        sk = json_object_get(att, "symmetricKey");
        if (sk == NULL || sk->refcount != 1)
            sk = att;
        wipe_string(json_object_get(sk, "primaryKey"));
        wipe_string(json_object_get(sk, "secondaryKey"));
    }
    json_decref(doc);
}
