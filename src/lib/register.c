/*
 * prov_register and what its two transports share (device protocol §3.6,
 * §6.2): the register body, the SAS token, Retry-After values, and the
 * judgement of each answer (poll, retry, or done, with the same return codes
 * and result fields whichever transport carried it).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/limits.h"
#include "../common/sas.h"
#include "../common/util.h"
#include "lib.h"
#include "tpm.h"

int64_t lib_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void lib_sleep_ms(int64_t ms)
{
    struct timespec until;
    int64_t t = lib_now_ms() + ms;

    until.tv_sec = (time_t)(t / 1000);
    until.tv_nsec = (long)(t % 1000) * 1000000L;
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR)
        continue;
}

int lib_retry_after(const char *text)
{
    long v;

    if (text == NULL)
        return PROV_RETRY_DEFAULT;
    if (parse_long(text, 0, 1000000000L, &v) != 0) {
        lib_log(PROV_LOG_WARN, "ignoring Retry-After '%.40s': not a number of seconds", text);
        return PROV_RETRY_DEFAULT;
    }
    if (v < PROV_RETRY_MIN)
        return PROV_RETRY_MIN;
    return v > PROV_RETRY_MAX ? PROV_RETRY_MAX : (int)v;
}

char *lib_register_body(const struct prov_client *c)
{
    json_t *o = json_object();
    json_t *payload = NULL;
    char *text = NULL;

    if (o == NULL)
        return NULL;
    if (json_object_set_new(o, "registrationId", json_string(c->registration_id)) != 0)
        goto out;
    /* TPM: the same body on the challenged and the signed request (§4.4) */
    if (c->cred == LIB_CRED_TPM &&
        json_object_set_new(o, "tpm", lib_tpm_attestation_json(c->tpm)) != 0)
        goto out;
    if (c->payload_json != NULL) {
        payload = json_loads(c->payload_json, JSON_DECODE_ANY, NULL);
        if (payload == NULL || json_object_set_new(o, "payload", payload) != 0)
            goto out;
    }
    text = json_dumps(o, JSON_COMPACT);
out:
    json_decref(o);
    return text;
}

char *lib_sas_token(const struct prov_client *c)
{
    char resource[PROV_MAX_SCOPE + PROV_MAX_REG_ID + 32];
    char *token;

    snprintf(resource, sizeof(resource), "%s/registrations/%s", c->id_scope,
             c->registration_id);
    token = sas_build(resource, c->key_b64, "registration",
                      (long long)time(NULL) + PROV_SAS_LIFETIME);
    if (token == NULL)
        lib_log(PROV_LOG_ERROR, "cannot build the SAS token");
    return token;
}

/*
 * The SAS token of a TPM client, signed inside the TPM by the key at
 * 0x81000100; the same form as sas_build (sr url-encoded, as the Node TPM
 * client sends it). Caller wipes and frees it. 0 or a negative code (logged).
 */
static int tpm_sas_build(struct prov_client *c, long long expiry, char **out)
{
    char resource[PROV_MAX_SCOPE + PROV_MAX_REG_ID + 32];
    char *sr = NULL, *msg = NULL, *sig_enc = NULL, *skn = NULL;
    char sig[45];
    uint8_t mac[32];
    int r = PROV_ENOMEM;

    *out = NULL;
    snprintf(resource, sizeof(resource), "%s/registrations/%s", c->id_scope,
             c->registration_id);
    if ((sr = url_encode_alloc(resource)) == NULL ||
        (skn = url_encode_alloc(c->tpm_key_name)) == NULL ||
        asprintf(&msg, "%s\n%lld", sr, expiry) < 0) {
        msg = NULL;
        goto out;
    }
    if ((r = lib_tpm_hmac(c->tpm, msg, strlen(msg), mac)) != 0) {
        lib_log(PROV_LOG_ERROR, "cannot sign the SAS token in the TPM: %s", prov_strerror(r));
        goto out;
    }
    b64_encode(mac, sizeof(mac), sig);
    r = PROV_ENOMEM;
    if ((sig_enc = url_encode_alloc(sig)) == NULL ||
        asprintf(out, "SharedAccessSignature sr=%s&sig=%s&se=%lld&skn=%s", sr, sig_enc, expiry,
                 skn) < 0) {
        *out = NULL;
        goto out;
    }
    r = 0;
out:
    prov_cleanse(mac, sizeof(mac));
    prov_cleanse(sig, sizeof(sig));
    if (sig_enc != NULL)
        prov_freezero(sig_enc, strlen(sig_enc));
    free(sr);
    free(msg);
    free(skn);
    return r;
}

static int tpm_sas_sign(struct prov_client *c)
{
    long long expiry = (long long)time(NULL) + PROV_SAS_LIFETIME;
    char *token = NULL;
    int r;

    if ((r = tpm_sas_build(c, expiry, &token)) != 0)
        return r;
    lib_tpm_sas_clear(c);
    c->tpm_sas = token;
    c->tpm_sas_expiry = expiry;
    return 0;
}

void lib_tpm_sas_clear(struct prov_client *c)
{
    if (c->tpm_sas != NULL)
        prov_freezero(c->tpm_sas, strlen(c->tpm_sas));
    c->tpm_sas = NULL;
    c->tpm_sas_expiry = 0;
}

int lib_tpm_sas_refresh(struct prov_client *c)
{
    if (c->tpm_sas == NULL || c->tpm_sas_expiry - 60 > (long long)time(NULL))
        return 0;
    lib_log(PROV_LOG_DEBUG, "the TPM-signed SAS token expires: signing a new one");
    return tpm_sas_sign(c);
}

/* keyName of a challenge: a short token; anything else falls back to "registration". */
static bool key_name_ok(const char *s)
{
    size_t len = s != NULL ? strlen(s) : 0;

    if (len == 0 || len > 64)
        return false;
    for (const char *p = s; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_'))
            return false;
    }
    return true;
}

int lib_tpm_challenge(struct prov_client *c, const char *body, size_t len, bool *handled)
{
    json_t *root = len > 0 ? json_loadb(body, len, 0, NULL) : NULL;
    const char *blob = json_string_value(json_object_get(root, "authenticationKey"));
    const char *name = json_string_value(json_object_get(root, "keyName"));
    int r = 0;

    *handled = false;
    if (blob == NULL)
        goto out; /* a refusal, not a challenge */
    if (!key_name_ok(name)) {
        if (name != NULL)
            lib_log(PROV_LOG_WARN, "ignoring the challenge's keyName '%.64s': using "
                    "'registration'", name);
        name = "registration";
    }
    snprintf(c->tpm_key_name, sizeof(c->tpm_key_name), "%s", name);
    lib_log(PROV_LOG_INFO, "TPM challenge (401 with authenticationKey): activating and "
                           "importing the key");
    if ((r = lib_tpm_import_blob(c->tpm, blob)) != 0 || (r = tpm_sas_sign(c)) != 0)
        goto out;
    *handled = true;
out:
    json_decref(root);
    return r;
}

int lib_tpm_assigned(struct prov_client *c, const struct prov_result *res)
{
    json_t *rs = res->registration_state_json != NULL
                     ? json_loads(res->registration_state_json, 0, NULL)
                     : NULL;
    const char *blob =
        json_string_value(json_object_get(json_object_get(rs, "tpm"), "authenticationKey"));
    int r;

    if (blob == NULL) {
        lib_log(PROV_LOG_ERROR, "the assigned answer has no registrationState.tpm."
                                "authenticationKey: no hub key to import");
        r = PROV_EPROTO;
    } else if ((r = lib_tpm_import_blob(c->tpm, blob)) == 0) {
        lib_log(PROV_LOG_INFO, "hub key imported into the TPM at 0x%08x",
                (unsigned)LIB_TPM_ID_KEY_HANDLE);
    }
    json_decref(rs);
    return r;
}

int lib_reg_may_wait(const struct lib_reg *g, int wait_s, const char *why)
{
    int64_t left = g->deadline - lib_now_ms();

    if ((int64_t)wait_s * 1000 >= left) {
        lib_log(PROV_LOG_ERROR, "timed out: %s, and the next try in %d s would pass the %d s "
                "timeout", why, wait_s, g->c->timeout_seconds);
        return PROV_ETIMEOUT;
    }
    lib_log(PROV_LOG_DEBUG, "%s, next request in %d s (Retry-After)", why, wait_s);
    return 0;
}

/* The final answer (not "assigning", not an error status) mapped to the result code. */
static int final_code(const struct prov_result *res)
{
    int r = lib_result_code(res);

    if (r == 0 && (res->assigned_hub == NULL || res->device_id == NULL)) {
        lib_log(PROV_LOG_ERROR, "answer has status 'assigned' but no %s",
                res->assigned_hub == NULL ? "assignedHub" : "deviceId");
        r = PROV_EPROTO;
    } else if (r == 0) {
        lib_log(PROV_LOG_INFO, "assigned to hub '%s' as device '%s'", res->assigned_hub,
                res->device_id);
    } else if (r == PROV_EPROTO) {
        lib_log(PROV_LOG_ERROR, "unexpected registration status '%s'",
                res->status ? res->status : "(none)");
    } else {
        lib_log(PROV_LOG_ERROR, "registration %s: errorCode %lld: %s", res->status,
                res->error_code, res->error_message ? res->error_message : "(no message)");
    }
    return r;
}

int lib_reg_answer(struct lib_reg *g, int status, bool transient, const char *body, size_t len,
                   enum lib_next *next)
{
    const char *id;
    int r;

    *next = LIB_NEXT_DONE;
    if (transient) {
        /* kept, so that a timeout still tells what the service said */
        prov_result_free(g->res);
        g->res = NULL;
        if (lib_result_parse(status, body, len, &g->res) == PROV_ENOMEM)
            return PROV_ENOMEM;
        *next = LIB_NEXT_AGAIN;
        return 0;
    }
    if (status < 200 || (status >= 300 && status < 400)) {
        lib_log(PROV_LOG_ERROR, "unexpected answer from '%s': %s %d", g->c->host,
                g->status_word, status);
        return PROV_EPROTO;
    }
    prov_result_free(g->res);
    g->res = NULL;
    if ((r = lib_result_parse(status, body, len, &g->res)) != 0)
        return r;
    if (status >= 400) {
        r = lib_result_code(g->res);
        lib_log(PROV_LOG_ERROR, "registration refused: %s %d, errorCode %lld: %s",
                g->status_word, status, g->res->error_code,
                g->res->error_message ? g->res->error_message : "(no message)");
        return r;
    }
    if (g->res->status == NULL || strcmp(g->res->status, "assigning") != 0)
        return final_code(g->res);
    id = g->res->operation_id;
    if (id == NULL && g->op_id == NULL) {
        lib_log(PROV_LOG_ERROR, "answer has status 'assigning' but no operationId");
        return PROV_EPROTO;
    }
    if (id != NULL && (g->op_id == NULL || strcmp(id, g->op_id) != 0)) {
        char *copy = strdup(id);

        if (copy == NULL)
            return PROV_ENOMEM;
        free(g->op_id);
        g->op_id = copy;
    }
    *next = LIB_NEXT_POLL;
    return 0;
}

int prov_register(struct prov_client *c, struct prov_result **out)
{
    struct lib_reg g = {0};
    int r = PROV_EINTERNAL;

    if (out == NULL || c == NULL) {
        lib_log(PROV_LOG_ERROR, "prov_register: %s is NULL", c ? "out" : "client");
        return PROV_EINVAL;
    }
    *out = NULL;
    if (c->cred == LIB_CRED_NONE || c->registration_id == NULL) {
        lib_log(PROV_LOG_ERROR, "no credential set: call prov_client_set_symmetric_key, "
                                "prov_client_set_group_key, prov_client_set_x509 or "
                                "prov_client_set_tpm first");
        return PROV_EINVAL;
    }
    g.c = c;
    g.deadline = lib_now_ms() + (int64_t)c->timeout_seconds * 1000;
    lib_log(PROV_LOG_INFO, "registering '%s' in scope '%s' at %s over %s (%s)",
            c->registration_id, c->id_scope, c->host,
            c->transport == PROV_TRANSPORT_MQTT ? "MQTT" : "HTTPS",
            c->cred == LIB_CRED_X509 ? "X.509" : c->cred == LIB_CRED_TPM ? "TPM" :
            "symmetric key");
    if (c->transport == PROV_TRANSPORT_MQTT) {
        g.status_word = "MQTT status";
        r = lib_mqtt_register(c, &g);
    } else {
        g.status_word = "HTTP";
        r = lib_https_register(c, &g);
    }
    /* the last answer explains most failures: hand it over too */
    *out = g.res;
    free(g.op_id);
    return r;
}
