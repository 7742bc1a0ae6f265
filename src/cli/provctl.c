/*
 * provctl: admin CLI over the DPS-compatible service API of provd.
 *
 * Exit status: 0 success, 1 the request failed (HTTP error, connection, TLS),
 * 2 usage error. The SAS token and the policy key are never printed.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "../common/errors.h"
#include "../common/util.h"
#include "provctl.h"

#ifndef PROVCTL_VERSION
#define PROVCTL_VERSION "0"
#endif

#define MAX_PAGES 100000

struct ctx {
    const struct pc_command *cmd;
    struct pc_client *client;
};

/*
 * jansson's free: entities may hold symmetric keys, so every block jansson
 * releases is wiped first.
 */
static void wipe_free(void *p)
{
    if (p == NULL)
        return;
    prov_cleanse(p, malloc_usable_size(p));
    free(p);
}

static int fail(const char *msg)
{
    fprintf(stderr, "provctl: %s\n", msg);
    return PC_EXIT_FAIL;
}

static int http_fail(const struct pc_response *resp)
{
    char msg[768];

    pc_format_http_error(resp->status, resp->body, resp->len, msg, sizeof(msg));
    fprintf(stderr, "provctl: %s\n", msg);
    return PC_EXIT_FAIL;
}

/*
 * Sends a request. Returns 0 with the response in resp, or an exit status
 * after printing the transport error.
 */
static int send_req(struct ctx *x, const char *method, const char *path, const json_t *body,
                    const char *etag, const char *continuation, long page_size,
                    struct pc_response *resp)
{
    char err[512];
    char *if_match = NULL;
    int r;

    if (etag != NULL && (if_match = pc_if_match(etag)) == NULL)
        return fail("out of memory");
    r = pc_request(x->client, method, path, body, if_match, continuation, page_size, resp, err,
                   sizeof(err));
    free(if_match);
    if (r != 0) {
        pc_response_free(resp);
        return fail(err);
    }
    return 0;
}

/* Parses a response body as JSON of the expected kind (object or array). */
static json_t *parse_body(const struct pc_response *resp, bool array)
{
    json_error_t jerr;
    json_t *j = json_loadb(resp->body, resp->len, 0, &jerr);

    if (j == NULL || (array ? !json_is_array(j) : !json_is_object(j))) {
        json_decref(j);
        fprintf(stderr, "provctl: the server answered %ld with a body that is not a JSON %s\n",
                resp->status, array ? "array" : "object");
        return NULL;
    }
    return j;
}

static bool ok_status(long status)
{
    return status >= 200 && status < 300;
}

static int print_json(const json_t *j)
{
    if (json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0)
        return PC_EXIT_FAIL;
    fputc('\n', stdout);
    return 0;
}

/* GET an entity; *out is NULL with *code set when it failed. 404 is reported via *missing. */
static int get_entity(struct ctx *x, const char *path, json_t **out, bool *missing)
{
    struct pc_response resp;
    int r;

    *out = NULL;
    if (missing != NULL)
        *missing = false;
    if ((r = send_req(x, "GET", path, NULL, NULL, NULL, 0, &resp)) != 0)
        return r;
    if (resp.status == 404 && missing != NULL) {
        *missing = true;
        pc_response_free(&resp);
        return 0;
    }
    if (!ok_status(resp.status)) {
        r = http_fail(&resp);
        pc_response_free(&resp);
        return r;
    }
    *out = parse_body(&resp, false);
    pc_response_free(&resp);
    return *out != NULL ? 0 : PC_EXIT_FAIL;
}

/* POST .../attestationmechanism: the attestation with its secrets. */
static int get_attestation(struct ctx *x, const char *id, json_t **out)
{
    struct pc_response resp;
    char *path = pc_entity_path(x->cmd->res, id, "/attestationmechanism");
    int r;

    *out = NULL;
    if (path == NULL)
        return fail("out of memory");
    r = send_req(x, "POST", path, NULL, NULL, NULL, 0, &resp);
    free(path);
    if (r != 0)
        return r;
    if (!ok_status(resp.status)) {
        r = http_fail(&resp);
        pc_response_free(&resp);
        return r;
    }
    *out = parse_body(&resp, false);
    pc_response_free(&resp);
    return *out != NULL ? 0 : PC_EXIT_FAIL;
}

static bool has_keys(const json_t *att)
{
    const json_t *sk = json_object_get(att, "symmetricKey");

    return json_string_value(json_object_get(sk, "primaryKey")) != NULL ||
           json_string_value(json_object_get(sk, "secondaryKey")) != NULL;
}

/* Removes key values from an entity (update output never shows keys). */
static void strip_keys(json_t *e)
{
    json_t *sk = json_object_get(json_object_get(e, "attestation"), "symmetricKey");

    if (json_is_object(sk)) {
        json_object_del(sk, "primaryKey");
        json_object_del(sk, "secondaryKey");
    }
}

static int cmd_show(struct ctx *x)
{
    const struct pc_command *cmd = x->cmd;
    char *path = pc_entity_path(cmd->res, cmd->id, NULL);
    json_t *e = NULL, *att = NULL;
    int r;

    if (path == NULL)
        return fail("out of memory");
    if ((r = get_entity(x, path, &e, NULL)) != 0)
        goto out;
    if (cmd->keys && (r = get_attestation(x, cmd->id, &att)) != 0)
        goto out;
    if (cmd->json) {
        if (att != NULL && json_object_set(e, "attestation", att) != 0) {
            r = fail("out of memory");
            goto out;
        }
        r = print_json(e);
        goto out;
    }
    if (cmd->res == PC_RES_REGISTRATION) {
        pc_print_registration(stdout, e);
    } else {
        pc_print_entity(stdout, cmd->res, e);
        if (att != NULL && pc_print_keys(stdout, att) == 0)
            printf("no keys: %s attestation\n",
                   json_string_value(json_object_get(att, "type")) != NULL
                       ? json_string_value(json_object_get(att, "type")) : "unknown");
    }
    r = 0;
out:
    json_decref(e);
    json_decref(att);
    free(path);
    return r;
}

static int cmd_list(struct ctx *x)
{
    const struct pc_command *cmd = x->cmd;
    json_t *all = json_array(), *query = json_pack("{s:s}", "query", "SELECT *");
    char *path = NULL, *token = NULL;
    size_t pages = 0;
    int r = PC_EXIT_FAIL;

    if (cmd->res == PC_RES_REGISTRATION) {
        path = pc_entity_path(cmd->res, cmd->id, "/query");
    } else {
        size_t len = strlen(pc_collection_path(cmd->res)) + sizeof("/query");

        if ((path = malloc(len)) != NULL)
            snprintf(path, len, "%s/query", pc_collection_path(cmd->res));
    }
    if (all == NULL || query == NULL || path == NULL) {
        r = fail("out of memory");
        goto out;
    }
    for (;;) {
        struct pc_response resp;
        json_t *page;

        if ((r = send_req(x, "POST", path, query, NULL, token, cmd->page_size, &resp)) != 0)
            goto out;
        if (!ok_status(resp.status)) {
            r = http_fail(&resp);
            pc_response_free(&resp);
            goto out;
        }
        page = parse_body(&resp, true);
        if (page == NULL || json_array_extend(all, page) != 0) {
            json_decref(page);
            pc_response_free(&resp);
            r = PC_EXIT_FAIL;
            goto out;
        }
        json_decref(page);
        pages++;
        if (resp.continuation == NULL) {
            pc_response_free(&resp);
            break;
        }
        if (token != NULL && strcmp(token, resp.continuation) == 0) {
            pc_response_free(&resp);
            r = fail("the server repeated its continuation token; stopping");
            goto out;
        }
        if (pages >= MAX_PAGES) {
            pc_response_free(&resp);
            r = fail("more than 100000 pages; stopping");
            goto out;
        }
        free(token);
        token = resp.continuation;
        resp.continuation = NULL;
        pc_response_free(&resp);
    }
    if (cmd->json)
        r = print_json(all);
    else {
        pc_print_list(stdout, cmd->res, all);
        r = 0;
    }
out:
    free(token);
    free(path);
    json_decref(query);
    json_decref(all);
    return r;
}

static int cmd_delete(struct ctx *x)
{
    const struct pc_command *cmd = x->cmd;
    char *path = pc_entity_path(cmd->res, cmd->id, NULL);
    struct pc_response resp;
    int r;

    if (path == NULL)
        return fail("out of memory");
    r = send_req(x, "DELETE", path, NULL, cmd->etag, NULL, 0, &resp);
    free(path);
    if (r != 0)
        return r;
    if (!ok_status(resp.status)) {
        r = http_fail(&resp);
        pc_response_free(&resp);
        return r;
    }
    pc_response_free(&resp);
    if (!cmd->json) {
        printf("deleted %s ", pc_res_name(cmd->res));
        for (const char *p = cmd->id; *p != '\0'; p++)
            putchar((unsigned char)*p < 0x20 ? '?' : *p);
        putchar('\n');
    }
    return 0;
}

/* PUT the entity and print the result; keys only after a create. */
static int put_and_print(struct ctx *x, const char *path, const json_t *body, const char *etag,
                         bool show_keys)
{
    const struct pc_command *cmd = x->cmd;
    struct pc_response resp;
    json_t *e = NULL, *att = NULL;
    int r;

    if ((r = send_req(x, "PUT", path, body, etag, NULL, 0, &resp)) != 0)
        return r;
    if (!ok_status(resp.status)) {
        r = http_fail(&resp);
        pc_response_free(&resp);
        return r;
    }
    e = parse_body(&resp, false);
    pc_response_free(&resp);
    if (e == NULL)
        return PC_EXIT_FAIL;
    if (show_keys) {
        const json_t *a = json_object_get(e, "attestation");
        const char *type = json_string_value(json_object_get(a, "type"));

        /* the PUT response normally echoes the keys; if not, ask for them */
        if (type != NULL && strcmp(type, "symmetricKey") == 0 && !has_keys(a)) {
            if ((r = get_attestation(x, cmd->id, &att)) != 0)
                goto out;
            if (json_object_set(e, "attestation", att) != 0) {
                r = fail("out of memory");
                goto out;
            }
        }
    } else {
        strip_keys(e);
    }
    if (cmd->json) {
        r = print_json(e);
        goto out;
    }
    pc_print_entity(stdout, cmd->res, e);
    if (show_keys)
        pc_print_keys(stdout, json_object_get(e, "attestation"));
    r = 0;
out:
    json_decref(att);
    json_decref(e);
    return r;
}

static int cmd_create(struct ctx *x)
{
    const struct pc_command *cmd = x->cmd;
    char *path = pc_entity_path(cmd->res, cmd->id, NULL);
    json_t *body = NULL, *cur = NULL;
    bool missing = false;
    int r;

    if (path == NULL)
        return fail("out of memory");
    if (cmd->etag == NULL) {
        /* PUT is an upsert: make sure create does not silently replace */
        if ((r = get_entity(x, path, &cur, &missing)) != 0)
            goto out;
        if (!missing) {
            fprintf(stderr, "provctl: %s %s already exists; use 'provctl %s update', or "
                    "'create --etag' to replace it\n", pc_res_name(cmd->res), cmd->id,
                    pc_res_name(cmd->res));
            r = PC_EXIT_FAIL;
            goto out;
        }
    }
    if ((body = pc_entity_new(cmd)) == NULL) {
        r = fail("out of memory");
        goto out;
    }
    r = put_and_print(x, path, body, cmd->etag, true);
out:
    json_decref(cur);
    json_decref(body);
    free(path);
    return r;
}

static int cmd_update(struct ctx *x)
{
    const struct pc_command *cmd = x->cmd;
    char *path = pc_entity_path(cmd->res, cmd->id, NULL);
    char *etag = NULL;
    json_t *cur = NULL, *att = NULL;
    char err[256];
    const char *type;
    int r;

    if (path == NULL)
        return fail("out of memory");
    if ((r = get_entity(x, path, &cur, NULL)) != 0)
        goto out;
    if (cmd->etag != NULL)
        etag = strdup(cmd->etag);
    else if (json_string_value(json_object_get(cur, "etag")) != NULL)
        etag = strdup(json_string_value(json_object_get(cur, "etag")));
    if ((cmd->etag != NULL || json_object_get(cur, "etag") != NULL) && etag == NULL) {
        r = fail("out of memory");
        goto out;
    }
    /*
     * GET carries no secrets. Send back the attestation with its keys (like
     * the Azure CLI does), so a server that would generate fresh keys for a
     * key-less PUT keeps the old ones.
     */
    type = json_string_value(json_object_get(json_object_get(cur, "attestation"), "type"));
    if (type != NULL && (strcmp(type, "symmetricKey") == 0 || strcmp(type, "tpm") == 0) &&
        !(cmd->primary_key != NULL && cmd->secondary_key != NULL)) {
        if ((r = get_attestation(x, cmd->id, &att)) != 0)
            goto out;
    }
    if ((r = pc_entity_apply(cur, att, cmd, err, sizeof(err))) != 0) {
        if (r == PROV_EINVAL) {
            fprintf(stderr, "provctl: %s\n", err);
            r = PC_EXIT_USAGE;
        } else {
            r = fail("out of memory");
        }
        goto out;
    }
    r = put_and_print(x, path, cur, etag, false);
out:
    free(etag);
    json_decref(att);
    json_decref(cur);
    free(path);
    return r;
}

/* ---- CA certificates ---- */

/* POST or PUT to a CA path, expecting a CertificateResponse in *out. */
static int ca_send(struct ctx *x, const char *method, const char *suffix, const json_t *body,
                   const char *etag, json_t **out, long *status_out, int *code_out)
{
    struct pc_response resp;
    char *path = pc_entity_path(PC_RES_CA, x->cmd->id, suffix);
    int r;

    *out = NULL;
    if (path == NULL)
        return fail("out of memory");
    r = send_req(x, method, path, body, etag, NULL, 0, &resp);
    free(path);
    if (r != 0)
        return r;
    if (!ok_status(resp.status)) {
        json_t *e = json_loadb(resp.body, resp.len, 0, NULL);

        *status_out = resp.status;
        *code_out = (int)json_integer_value(json_object_get(e, "errorCode"));
        json_decref(e);
        if (*code_out == 412002 && strcmp(method, "PUT") == 0) {
            fprintf(stderr, "provctl: ca %s already exists; to replace it add --etag E (the "
                    "etag of 'provctl ca show %s')\n", x->cmd->id, x->cmd->id);
            r = PC_EXIT_FAIL;
        } else {
            r = http_fail(&resp);
        }
        pc_response_free(&resp);
        return r;
    }
    *out = parse_body(&resp, false);
    pc_response_free(&resp);
    return *out != NULL ? 0 : PC_EXIT_FAIL;
}

/* The current etag of the CA (--etag when given); caller frees. */
static int ca_etag(struct ctx *x, char **etag)
{
    char *path;
    json_t *c = NULL;
    const char *e;
    int r;

    *etag = NULL;
    if (x->cmd->etag != NULL) {
        if ((*etag = strdup(x->cmd->etag)) == NULL)
            return fail("out of memory");
        return 0;
    }
    if ((path = pc_entity_path(PC_RES_CA, x->cmd->id, NULL)) == NULL)
        return fail("out of memory");
    r = get_entity(x, path, &c, NULL);
    free(path);
    if (r != 0)
        return r;
    e = json_string_value(json_object_get(c, "etag"));
    if (e == NULL || (*etag = strdup(e)) == NULL) {
        json_decref(c);
        return fail(e == NULL ? "the server's answer has no etag" : "out of memory");
    }
    json_decref(c);
    return 0;
}

static int ca_print(const struct pc_command *cmd, const json_t *c)
{
    if (cmd->json)
        return print_json(c);
    pc_print_ca(stdout, c);
    return 0;
}

static int cmd_ca_upload(struct ctx *x)
{
    json_t *body = pc_ca_upload_body(x->cmd), *c = NULL;
    long status = 0;
    int code = 0, r;

    if (body == NULL)
        return fail("out of memory");
    r = ca_send(x, "PUT", NULL, body, x->cmd->etag, &c, &status, &code);
    json_decref(body);
    if (r == 0)
        r = ca_print(x->cmd, c);
    json_decref(c);
    return r;
}

static int cmd_ca_list(struct ctx *x)
{
    json_t *all = NULL;
    const json_t *value;
    int r;

    if ((r = get_entity(x, pc_collection_path(PC_RES_CA), &all, NULL)) != 0)
        return r;
    value = json_object_get(all, "value");
    if (!json_is_array(value)) {
        json_decref(all);
        return fail("the server's answer has no \"value\" array");
    }
    if (x->cmd->json)
        r = print_json(value);
    else
        pc_print_list(stdout, PC_RES_CA, value);
    json_decref(all);
    return r;
}

static int cmd_ca_show(struct ctx *x)
{
    char *path = pc_entity_path(PC_RES_CA, x->cmd->id, NULL);
    json_t *c = NULL;
    int r;

    if (path == NULL)
        return fail("out of memory");
    r = get_entity(x, path, &c, NULL);
    free(path);
    if (r == 0)
        r = ca_print(x->cmd, c);
    json_decref(c);
    return r;
}

static int cmd_ca_code(struct ctx *x)
{
    char *etag = NULL;
    json_t *c = NULL;
    const char *code;
    long status = 0;
    int ecode = 0, r;

    if ((r = ca_etag(x, &etag)) != 0)
        return r;
    r = ca_send(x, "POST", "/generateVerificationCode", NULL, etag, &c, &status, &ecode);
    free(etag);
    if (r != 0)
        return r;
    code = json_string_value(json_object_get(json_object_get(c, "properties"),
                                             "verificationCode"));
    if (x->cmd->json) {
        r = print_json(c);
    } else if (code == NULL) {
        r = fail("the server's answer has no properties.verificationCode");
    } else {
        for (const char *p = code; *p != '\0'; p++)
            putchar((unsigned char)*p < 0x20 || *p == 0x7f ? '?' : *p);
        putchar('\n');
    }
    json_decref(c);
    return r;
}

static int cmd_ca_verify(struct ctx *x)
{
    json_t *body = pc_ca_verify_body(x->cmd), *c = NULL;
    char *etag = NULL;
    long status = 0;
    int code = 0, r;

    if (body == NULL)
        return fail("out of memory");
    if ((r = ca_etag(x, &etag)) == 0)
        r = ca_send(x, "POST", "/verify", body, etag, &c, &status, &code);
    free(etag);
    json_decref(body);
    if (r == 0)
        r = ca_print(x->cmd, c);
    json_decref(c);
    return r;
}

static int cmd_ca_delete(struct ctx *x)
{
    char *etag = NULL, *path = NULL;
    struct pc_response resp;
    int r;

    if ((r = ca_etag(x, &etag)) != 0)
        return r;
    if ((path = pc_entity_path(PC_RES_CA, x->cmd->id, NULL)) == NULL) {
        free(etag);
        return fail("out of memory");
    }
    r = send_req(x, "DELETE", path, NULL, etag, NULL, 0, &resp);
    free(path);
    free(etag);
    if (r != 0)
        return r;
    if (!ok_status(resp.status)) {
        r = http_fail(&resp);
        pc_response_free(&resp);
        return r;
    }
    pc_response_free(&resp);
    if (!x->cmd->json)
        printf("deleted ca %s\n", x->cmd->id); /* the parser checked the name's characters */
    return 0;
}

static int run_ca(struct ctx *x)
{
    switch (x->cmd->verb) {
    case PC_VERB_UPLOAD:
        return cmd_ca_upload(x);
    case PC_VERB_LIST:
        return cmd_ca_list(x);
    case PC_VERB_SHOW:
        return cmd_ca_show(x);
    case PC_VERB_CODE:
        return cmd_ca_code(x);
    case PC_VERB_VERIFY:
        return cmd_ca_verify(x);
    case PC_VERB_DELETE:
        return cmd_ca_delete(x);
    default:
        return fail("internal error: no ca command");
    }
}

static int run(const struct pc_command *cmd)
{
    struct pc_connstr cs;
    struct ctx x = {.cmd = cmd};
    char err[512];
    int r;

    if (pc_connstr_parse(cmd->connection_string, &cs, err, sizeof(err)) != 0) {
        fprintf(stderr, "provctl: %s\n", err);
        return PC_EXIT_USAGE;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        pc_connstr_free(&cs);
        return fail("cannot initialise libcurl");
    }
    x.client = pc_client_new(&cs, cmd->cacert, cmd->id_scope, cmd->timeout, cmd->verbose, err,
                             sizeof(err));
    pc_connstr_free(&cs);
    if (x.client == NULL) {
        r = fail(err);
        goto out;
    }
    if (cmd->res == PC_RES_CA) {
        r = run_ca(&x);
        goto out;
    }
    switch (cmd->verb) {
    case PC_VERB_CREATE:
        r = cmd_create(&x);
        break;
    case PC_VERB_UPDATE:
        r = cmd_update(&x);
        break;
    case PC_VERB_SHOW:
        r = cmd_show(&x);
        break;
    case PC_VERB_LIST:
        r = cmd_list(&x);
        break;
    case PC_VERB_DELETE:
        r = cmd_delete(&x);
        break;
    default:
        r = fail("internal error: no command");
        break;
    }
out:
    pc_client_free(x.client);
    curl_global_cleanup();
    return r;
}

int main(int argc, char **argv)
{
    struct pc_command cmd;
    char err[512];
    int r;

    json_set_alloc_funcs(malloc, wipe_free);
    if (pc_parse_args(argc, argv, getenv("PROVD_CONNECTION_STRING"), getenv("PROVD_CA_FILE"),
                      &cmd, err, sizeof(err)) != 0) {
        fprintf(stderr, "provctl: %s\n", err);
        if (cmd.res != PC_RES_NONE && cmd.verb != PC_VERB_NONE && cmd.verb != PC_VERB_HELP)
            fprintf(stderr, "Try 'provctl help %s %s'.\n", pc_res_name(cmd.res),
                    pc_verb_name(cmd.verb));
        else if (cmd.res != PC_RES_NONE)
            fprintf(stderr, "Try 'provctl help %s'.\n", pc_res_name(cmd.res));
        else
            fprintf(stderr, "Try 'provctl --help'.\n");
        return PC_EXIT_USAGE;
    }
    if (cmd.verb == PC_VERB_HELP) {
        pc_print_help(stdout, cmd.res, cmd.help_verb);
        return fflush(stdout) == 0 ? PC_EXIT_OK : PC_EXIT_FAIL;
    }
    if (cmd.verb == PC_VERB_VERSION) {
        printf("provctl %s (api-version %s)\n", PROVCTL_VERSION, PC_API_VERSION);
        return fflush(stdout) == 0 ? PC_EXIT_OK : PC_EXIT_FAIL;
    }
    {
        /* certificate files are read before any request */
        const char *files[2];
        char *texts[2] = {NULL, NULL};

        pc_cert_files(&cmd, files);
        for (size_t i = 0; i < 2; i++) {
            if (files[i] != NULL && pc_read_cert(files[i], &texts[i], err, sizeof(err)) != 0) {
                fprintf(stderr, "provctl: %s\n", err);
                free(texts[0]);
                return PC_EXIT_USAGE;
            }
            cmd.cert_text[i] = texts[i];
        }
        r = run(&cmd);
        free(texts[0]);
        free(texts[1]);
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "provctl: cannot write the output\n");
        return PC_EXIT_FAIL;
    }
    return r;
}
