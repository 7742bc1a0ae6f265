/* Reading DPS answers (RegistrationOperationStatus, error bodies) into results. */
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"
#include "lib.h"

/*
 * The public struct comes first; the strings in it point into root (jansson
 * keeps them alive until root is released) or into the owned copies below.
 */
struct result_impl {
    struct prov_result pub;
    json_t *root;
    json_t *payload; /* borrowed from root */
    json_t *x509;    /* borrowed from root: registrationState.x509 when an object */
    char *payload_json;
    char *x509_json;
    char *state_json;
    char *response_json;
};

static const char *get_str(json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

/* errorCode is an integer; some servers send it as a string of digits. */
static long long get_code(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    const char *s;
    long long n = 0;

    if (json_is_integer(v))
        return (long long)json_integer_value(v);
    if ((s = json_string_value(v)) == NULL || *s == '\0' || strlen(s) > 12)
        return 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return 0;
        n = n * 10 + (*s - '0');
    }
    return n;
}

static void fill_state(struct result_impl *r, json_t *rs)
{
    struct prov_result *p = &r->pub;

    p->registration_id = get_str(rs, "registrationId");
    p->assigned_hub = get_str(rs, "assignedHub");
    p->device_id = get_str(rs, "deviceId");
    p->substatus = get_str(rs, "substatus");
    p->created_utc = get_str(rs, "createdDateTimeUtc");
    p->last_updated_utc = get_str(rs, "lastUpdatedDateTimeUtc");
    p->etag = get_str(rs, "etag");
    p->error_code = get_code(rs, "errorCode");
    p->error_message = get_str(rs, "errorMessage");
    if (p->status == NULL)
        p->status = get_str(rs, "status");
    r->payload = json_object_get(rs, "payload");
    if (json_is_object(json_object_get(rs, "x509")))
        r->x509 = json_object_get(rs, "x509");
    p->enrollment_group_id = get_str(r->x509, "enrollmentGroupId");
    if (p->enrollment_group_id == NULL)
        p->enrollment_group_id = get_str(json_object_get(rs, "symmetricKey"),
                                         "enrollmentGroupId");
}

int lib_result_parse(int http_status, const char *body, size_t len, struct prov_result **out)
{
    struct result_impl *r = NULL;
    json_error_t jerr;
    json_t *rs;
    int ret = PROV_EINTERNAL;

    *out = NULL;
    if ((r = calloc(1, sizeof(*r))) == NULL)
        return PROV_ENOMEM;
    r->pub.http_status = http_status;
    if ((r->response_json = malloc(len + 1)) == NULL) {
        ret = PROV_ENOMEM;
        goto out;
    }
    if (len > 0)
        memcpy(r->response_json, body, len);
    r->response_json[len] = '\0';
    r->pub.response_json = r->response_json;

    if (len > 0)
        r->root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(r->root)) {
        if (http_status >= 400) {
            /* an error without a readable body is still an answer */
            json_decref(r->root);
            r->root = NULL;
            goto done;
        }
        lib_log(PROV_LOG_ERROR, "unreadable answer (status %d): %s", http_status,
                r->root == NULL ? (len ? jerr.text : "empty body") : "not a JSON object");
        ret = PROV_EPROTO;
        goto out;
    }
    if (http_status >= 400) {
        r->pub.error_code = get_code(r->root, "errorCode");
        r->pub.error_message = get_str(r->root, "message");
        r->pub.tracking_id = get_str(r->root, "trackingId");
        goto done;
    }
    r->pub.status = get_str(r->root, "status");
    r->pub.operation_id = get_str(r->root, "operationId");
    rs = json_object_get(r->root, "registrationState");
    if (json_is_object(rs)) {
        fill_state(r, rs);
        if ((r->state_json = json_dumps(rs, JSON_COMPACT)) == NULL) {
            ret = PROV_ENOMEM;
            goto out;
        }
        r->pub.registration_state_json = r->state_json;
    }
    if (r->payload != NULL && !json_is_null(r->payload)) {
        r->payload_json = json_dumps(r->payload, JSON_COMPACT | JSON_ENCODE_ANY);
        if (r->payload_json == NULL) {
            ret = PROV_ENOMEM;
            goto out;
        }
        r->pub.payload_json = r->payload_json;
    }
    if (r->x509 != NULL) {
        if ((r->x509_json = json_dumps(r->x509, JSON_COMPACT)) == NULL) {
            ret = PROV_ENOMEM;
            goto out;
        }
        r->pub.x509_json = r->x509_json;
    }
done:
    *out = &r->pub;
    r = NULL; /* transferred */
    ret = 0;
out:
    prov_result_free(r ? &r->pub : NULL);
    return ret;
}

static bool is_status(const struct prov_result *r, const char *s)
{
    return r->status != NULL && strcmp(r->status, s) == 0;
}

int lib_result_code(const struct prov_result *r)
{
    long long cls = r->error_code / 1000;

    if (r->http_status >= 400) {
        if (r->http_status == 401 || r->http_status == 403)
            return PROV_EAUTH;
        if (r->http_status == 404)
            return PROV_ENOTFOUND;
        return PROV_EPROTO;
    }
    if (is_status(r, "assigned"))
        return 0;
    if (is_status(r, "disabled"))
        return PROV_EDISABLED;
    if (is_status(r, "failed")) {
        if (cls == 401 || cls == 403)
            return PROV_EAUTH;
        if (cls == 404)
            return PROV_ENOTFOUND;
        return PROV_EPRECONDITION;
    }
    return PROV_EPROTO;
}

void prov_result_free(struct prov_result *pub)
{
    struct result_impl *r = (struct result_impl *)pub;

    if (r == NULL)
        return;
    json_decref(r->root);
    free(r->payload_json);
    free(r->x509_json);
    free(r->state_json);
    free(r->response_json);
    free(r);
}

static int set_str(json_t *o, const char *key, const char *v)
{
    return json_object_set_new(o, key, v ? json_string(v) : json_null());
}

char *prov_result_to_json(const struct prov_result *pub)
{
    const struct result_impl *r = (const struct result_impl *)pub;
    json_t *o;
    char *text = NULL;
    int bad = 0;

    if (r == NULL || (o = json_object()) == NULL)
        return NULL;
    bad |= set_str(o, "status", pub->status);
    bad |= set_str(o, "assignedHub", pub->assigned_hub);
    bad |= set_str(o, "deviceId", pub->device_id);
    bad |= set_str(o, "substatus", pub->substatus);
    bad |= set_str(o, "operationId", pub->operation_id);
    bad |= json_object_set(o, "payload", r->payload ? r->payload : json_null());
    if (pub->error_code != 0)
        bad |= json_object_set_new(o, "errorCode", json_integer((json_int_t)pub->error_code));
    if (pub->error_message != NULL)
        bad |= set_str(o, "errorMessage", pub->error_message);
    if (pub->enrollment_group_id != NULL)
        bad |= set_str(o, "enrollmentGroupId", pub->enrollment_group_id);
    if (r->x509 != NULL)
        bad |= json_object_set(o, "x509", r->x509);
    if (bad == 0)
        text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}
