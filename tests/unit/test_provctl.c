/*
 * Unit tests for provctl's pure parts (src/cli/provctl_{args,entity,fmt}.c):
 * connection strings, command lines (X.509 and CA commands included),
 * certificate files, request paths and bodies, and the human-readable output.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "src/cli/provctl.h"
#include "src/common/errors.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* A 32-byte key, and a 16-byte one (the minimum). */
#define KEY32 "llbXt1AZ5RELJWOjp9Xm42MrmYYU6X6st66vl5mHb9Y="
#define KEY16 "AAECAwQFBgcICQoLDA0ODw=="
#define CS "HostName=127.0.0.1:8443;SharedAccessKeyName=owner;SharedAccessKey=" KEY32

/* ---- helpers ---------------------------------------------------------- */

struct capture {
    char *buf;
    size_t len;
    FILE *f;
};

static void cap_open(struct capture *c)
{
    c->buf = NULL;
    c->len = 0;
    c->f = open_memstream(&c->buf, &c->len);
    assert_non_null(c->f);
}

/* Closes the stream; the text is in c->buf (caller frees). */
static const char *cap_close(struct capture *c)
{
    assert_int_equal(fclose(c->f), 0);
    return c->buf;
}

static json_t *J(const char *text)
{
    json_error_t err;
    json_t *j = json_loads(text, 0, &err);

    if (j == NULL)
        fail_msg("bad test JSON: %s", err.text);
    return j;
}

static void assert_json_equal(const json_t *got, const char *want_text)
{
    json_t *want = J(want_text);

    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS);

        print_error("got:  %s\nwant: %s\n", g ? g : "(null)", want_text);
        free(g);
        json_decref(want);
        fail();
    }
    json_decref(want);
}

/* Parses a NULL-terminated word list as a command line. */
static int parse(struct pc_command *cmd, char *err, size_t errlen, const char *env_cs,
                 const char *env_ca, ...)
{
    char *argv[40];
    int argc = 0;
    va_list ap;
    const char *a;

    argv[argc++] = (char *)"provctl";
    va_start(ap, env_ca);
    while ((a = va_arg(ap, const char *)) != NULL && argc < 39)
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    err[0] = '\0';
    return pc_parse_args(argc, argv, env_cs, env_ca, cmd, err, errlen);
}

#define PARSE_OK(cmd, ...)                                                                  \
    do {                                                                                    \
        char e_[256];                                                                       \
        int r_ = parse((cmd), e_, sizeof(e_), CS, NULL, __VA_ARGS__, NULL);                 \
        if (r_ != 0)                                                                        \
            fail_msg("parse failed: %s", e_);                                               \
    } while (0)

/* Expects a usage error whose message contains want. */
#define PARSE_ERR(want, ...)                                                                \
    do {                                                                                    \
        struct pc_command c_;                                                               \
        char e_[256];                                                                       \
        int r_ = parse(&c_, e_, sizeof(e_), CS, NULL, __VA_ARGS__, NULL);                   \
        assert_int_equal(r_, PROV_EINVAL);                                                  \
        if (strstr(e_, (want)) == NULL)                                                     \
            fail_msg("error '%s' lacks '%s'", e_, (want));                                  \
    } while (0)

/* ---- connection strings ----------------------------------------------- */

static void test_connstr_valid(void **state)
{
    static const char *const ok[] = {
        CS,
        ("SharedAccessKey=" KEY32 ";sharedaccesskeyname=owner;HOSTNAME=127.0.0.1:8443"),
        (";HostName=127.0.0.1:8443;;SharedAccessKeyName=owner;SharedAccessKey=" KEY32 ";"),
        (" HostName=127.0.0.1:8443; SharedAccessKeyName=owner; SharedAccessKey=" KEY32),
    };
    (void)state;
    for (size_t i = 0; i < N(ok); i++) {
        struct pc_connstr cs;
        char err[256] = "";

        assert_int_equal(pc_connstr_parse(ok[i], &cs, err, sizeof(err)), 0);
        assert_string_equal(cs.host, "127.0.0.1:8443");
        assert_string_equal(cs.key_name, "owner");
        /* the key keeps its '=' padding: only the first '=' splits */
        assert_string_equal(cs.key, KEY32);
        pc_connstr_free(&cs);
        assert_null(cs.key);
    }
}

static void test_connstr_hosts(void **state)
{
    static const struct {
        const char *host;
        bool ok;
    } v[] = {
        {"mydps.azure-devices-provisioning.net", true},
        {"LocalHost", true},
        {"localhost:443", true},
        {"[::1]:8443", true},
        {"[::1]", true},
        {"localhost:0", false},
        {"localhost:65536", false},
        {"localhost:http", false},
        {"localhost:", false},
        {":443", false},
        {"a:1:2", false},
        {"[::1", false},
        {"[::1]x", false},
        {"host/path", false},
        {"host name", false},
        {"user@host", false},
    };
    (void)state;
    for (size_t i = 0; i < N(v); i++) {
        char s[512], err[256] = "";
        struct pc_connstr cs;
        int r;

        snprintf(s, sizeof(s), "HostName=%s;SharedAccessKeyName=n;SharedAccessKey=%s", v[i].host,
                 KEY16);
        r = pc_connstr_parse(s, &cs, err, sizeof(err));
        if (v[i].ok != (r == 0))
            fail_msg("host '%s': r=%d err=%s", v[i].host, r, err);
        if (r == 0) {
            assert_string_equal(cs.host, v[i].host);
            pc_connstr_free(&cs);
        } else {
            assert_non_null(strstr(err, "HostName"));
        }
    }
}

static void test_connstr_errors(void **state)
{
    static const struct {
        const char *cs;
        const char *want;
    } v[] = {
        {"", "empty connection string"},
        {"SharedAccessKeyName=n;SharedAccessKey=" KEY16, "missing HostName"},
        {"HostName=h;SharedAccessKey=" KEY16, "missing SharedAccessKeyName"},
        {"HostName=h;SharedAccessKeyName=n", "missing SharedAccessKey"},
        {"HostName=h;HostName=g;SharedAccessKeyName=n;SharedAccessKey=" KEY16, "given twice"},
        {"HostName=h;SharedAccessKeyName=;SharedAccessKey=" KEY16, "is empty"},
        {"HostName=h;SharedAccessKeyName=n;SharedAccessKey=" KEY16 ";DeviceId=d",
         "unknown field 'DeviceId'"},
        {"HostName=h;SharedAccessKeyName=n;garbage", "without '='"},
    };
    (void)state;
    for (size_t i = 0; i < N(v); i++) {
        struct pc_connstr cs;
        char err[256] = "";

        assert_int_equal(pc_connstr_parse(v[i].cs, &cs, err, sizeof(err)), PROV_EINVAL);
        if (strstr(err, v[i].want) == NULL)
            fail_msg("'%s': error '%s' lacks '%s'", v[i].cs, err, v[i].want);
        assert_null(cs.host);
        assert_null(cs.key);
    }
}

/* A bad key or a mistyped key field name must not echo the key. */
static void test_connstr_never_echoes_key(void **state)
{
    static const char *const bad[] = {
        "HostName=h;SharedAccessKeyName=n;SharedAccessKey=c2VjcmV0c2VjcmV0!!",
        "HostName=h;SharedAccessKeyName=n;SharedAcessKey=c2VjcmV0c2VjcmV0",
        "HostName=h;SharedAccessKeyName=n;SharedAccessKey=c2VjcmV0c2VjcmV0c",
    };
    (void)state;
    for (size_t i = 0; i < N(bad); i++) {
        struct pc_connstr cs;
        char err[256] = "";

        assert_int_equal(pc_connstr_parse(bad[i], &cs, err, sizeof(err)), PROV_EINVAL);
        assert_null(strstr(err, "c2VjcmV0"));
        assert_true(err[0] != '\0');
    }
}

/* ---- command lines ---------------------------------------------------- */

static void test_args_create_all_flags(void **state)
{
    struct pc_command c;
    (void)state;

    PARSE_OK(&c, "--id-scope", "0ne00TEST01", "enrollment", "create", "dev-1", "--primary-key",
             KEY32, "--secondary-key=" KEY16, "--device-id", "devA", "--hub", "h1.example.net",
             "--hub", "h2.example.net", "--allocation-policy", "GEOLATENCY", "--disabled",
             "--iot-edge", "--initial-twin", "{\"tags\":{\"a\":1}}", "--json");
    assert_int_equal(c.res, PC_RES_ENROLLMENT);
    assert_int_equal(c.verb, PC_VERB_CREATE);
    assert_string_equal(c.id, "dev-1");
    assert_string_equal(c.id_scope, "0ne00TEST01");
    assert_string_equal(c.primary_key, KEY32);
    assert_string_equal(c.secondary_key, KEY16);
    assert_string_equal(c.device_id, "devA");
    assert_int_equal(c.nhubs, 2);
    assert_string_equal(c.hubs[0], "h1.example.net");
    assert_string_equal(c.hubs[1], "h2.example.net");
    assert_string_equal(c.allocation_policy, "geoLatency"); /* canonical spelling */
    assert_int_equal(c.enabled, 0);
    assert_int_equal(c.iot_edge, 1);
    assert_string_equal(c.initial_twin, "{\"tags\":{\"a\":1}}");
    assert_true(c.json);
    assert_false(c.keys);
    assert_int_equal(c.timeout, PC_DEFAULT_TIMEOUT);
    assert_string_equal(c.connection_string, CS);
}

static void test_args_defaults_and_env(void **state)
{
    struct pc_command c;
    char err[256];
    (void)state;

    /* env values are used when no option is given */
    assert_int_equal(parse(&c, err, sizeof(err), "ENVCS", "/env/ca.pem", "group", "list", NULL),
                     0);
    assert_string_equal(c.connection_string, "ENVCS");
    assert_string_equal(c.cacert, "/env/ca.pem");
    assert_int_equal(c.res, PC_RES_GROUP);
    assert_int_equal(c.verb, PC_VERB_LIST);
    assert_null(c.id);
    assert_int_equal(c.enabled, -1);
    assert_int_equal(c.iot_edge, -1);
    assert_int_equal(c.page_size, 0);
    /* options win over env, and global options may follow the command */
    assert_int_equal(parse(&c, err, sizeof(err), "ENVCS", "/env/ca.pem", "registration", "list",
                           "grp", "--cacert", "/opt/ca.pem", "--connection-string", "OPTCS",
                           "--page-size", "7", "--timeout=5", "--verbose", NULL), 0);
    assert_string_equal(c.connection_string, "OPTCS");
    assert_string_equal(c.cacert, "/opt/ca.pem");
    assert_string_equal(c.id, "grp");
    assert_int_equal(c.page_size, 7);
    assert_int_equal(c.timeout, 5);
    assert_true(c.verbose);
    /* empty env values count as unset */
    assert_int_equal(parse(&c, err, sizeof(err), "", "", "enrollment", "list", NULL),
                     PROV_EINVAL);
    assert_non_null(strstr(err, "no connection string"));
}

static void test_args_ids_and_words(void **state)
{
    struct pc_command c;
    (void)state;

    PARSE_OK(&c, "enrollment", "show", "dev:1", "--keys");
    assert_true(c.keys);
    assert_string_equal(c.id, "dev:1");
    /* after "--" a word that looks like an option is an id */
    PARSE_OK(&c, "registration", "delete", "--etag", "abc", "--", "-weird");
    assert_string_equal(c.id, "-weird");
    assert_string_equal(c.etag, "abc");
    PARSE_OK(&c, "groups", "delete", "g1");
    assert_int_equal(c.res, PC_RES_GROUP);
    assert_int_equal(c.verb, PC_VERB_DELETE);

    PARSE_ERR("no command given", "--json");
    PARSE_ERR("unknown command 'device'", "device", "list");
    PARSE_ERR("enrollment: missing subcommand", "enrollment");
    PARSE_ERR("unknown subcommand 'get'", "enrollment", "get", "x");
    PARSE_ERR("unknown subcommand 'create'", "registration", "create", "x");
    PARSE_ERR("unknown subcommand 'update'", "registration", "update", "x");
    PARSE_ERR("missing ID", "enrollment", "show");
    PARSE_ERR("missing GROUP-ID", "registration", "list");
    PARSE_ERR("unexpected argument 'x'", "enrollment", "list", "x");
    PARSE_ERR("unexpected argument 'b'", "enrollment", "delete", "a", "b");
    PARSE_ERR("invalid ID", "enrollment", "create", "bad id");
    PARSE_ERR("invalid ID", "group", "create", "ends-with.");
    PARSE_ERR("empty ID", "enrollment", "delete", "");
}

static void test_args_option_errors(void **state)
{
    (void)state;
    PARSE_ERR("unknown option '--frobnicate'", "enrollment", "list", "--frobnicate");
    PARSE_ERR("unknown option '-x'", "enrollment", "list", "-x");
    PARSE_ERR("needs a value", "enrollment", "create", "a", "--hub");
    PARSE_ERR("takes no value", "enrollment", "create", "a", "--disabled=yes");
    PARSE_ERR("--device-id does not apply", "group", "create", "g", "--device-id", "d");
    PARSE_ERR("--keys does not apply", "enrollment", "list", "--keys");
    PARSE_ERR("--keys does not apply", "registration", "show", "r", "--keys");
    PARSE_ERR("--page-size does not apply", "enrollment", "show", "a", "--page-size", "3");
    PARSE_ERR("--etag does not apply", "enrollment", "show", "a", "--etag", "x");
    PARSE_ERR("--hub does not apply", "enrollment", "delete", "a", "--hub", "h");
    PARSE_ERR("--page-size: expected", "enrollment", "list", "--page-size", "0");
    PARSE_ERR("--page-size: expected", "enrollment", "list", "--page-size", "1001");
    PARSE_ERR("--page-size: expected", "enrollment", "list", "--page-size", "5x");
    PARSE_ERR("--timeout: expected", "enrollment", "list", "--timeout", "0");
    PARSE_ERR("--primary-key: expected base64", "enrollment", "create", "a", "--primary-key",
              "not base64!");
    /* 8 bytes: too short; 65 bytes: too long */
    PARSE_ERR("--secondary-key: expected base64", "enrollment", "create", "a",
              "--secondary-key", "AAECAwQFBgc=");
    PARSE_ERR("--primary-key: expected base64", "enrollment", "create", "a", "--primary-key",
              "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
              "AAAAAAA=");
    PARSE_ERR("--allocation-policy: expected", "enrollment", "create", "a",
              "--allocation-policy", "random");
    PARSE_ERR("custom needs --webhook-url", "enrollment", "create", "a", "--allocation-policy",
              "custom");
    PARSE_ERR("--webhook-url: expected", "enrollment", "create", "a", "--webhook-url", "ftp://x");
    PARSE_ERR("exclude each other", "enrollment", "create", "a", "--disabled", "--enabled");
    PARSE_ERR("exclude each other", "enrollment", "create", "a", "--no-iot-edge", "--iot-edge");
    PARSE_ERR("exclude each other", "enrollment", "update", "a", "--hub", "h", "--all-hubs");
    PARSE_ERR("given twice", "enrollment", "create", "a", "--hub", "h", "--hub", "H");
    PARSE_ERR("--initial-twin: expected a JSON object", "enrollment", "create", "a",
              "--initial-twin", "[1,2]");
    PARSE_ERR("--initial-twin: expected a JSON object", "enrollment", "create", "a",
              "--initial-twin", "{\"tags\":");
    PARSE_ERR("nothing to change", "enrollment", "update", "a");
    PARSE_ERR("nothing to change", "group", "update", "g", "--etag", "x");
    PARSE_ERR("--id-scope: expected", "enrollment", "list", "--id-scope", "");
}

static void test_args_help_and_version(void **state)
{
    struct pc_command c;
    char err[256];
    (void)state;

    PARSE_OK(&c, "--help");
    assert_int_equal(c.verb, PC_VERB_HELP);
    assert_int_equal(c.res, PC_RES_NONE);
    PARSE_OK(&c, "help", "group", "create");
    assert_int_equal(c.verb, PC_VERB_HELP);
    assert_int_equal(c.res, PC_RES_GROUP);
    assert_int_equal(c.help_verb, PC_VERB_CREATE);
    PARSE_OK(&c, "enrollment", "list", "-h");
    assert_int_equal(c.res, PC_RES_ENROLLMENT);
    assert_int_equal(c.help_verb, PC_VERB_LIST);
    /* help needs no connection string */
    assert_int_equal(parse(&c, err, sizeof(err), NULL, NULL, "registration", "--help", NULL), 0);
    assert_int_equal(c.res, PC_RES_REGISTRATION);
    assert_int_equal(c.help_verb, PC_VERB_NONE);
    assert_int_equal(parse(&c, err, sizeof(err), NULL, NULL, "--version", NULL), 0);
    assert_int_equal(c.verb, PC_VERB_VERSION);
    PARSE_ERR("help: unknown command 'nope'", "help", "nope");
    PARSE_ERR("help: unknown subcommand", "help", "registration", "update");
}

static void test_help_texts(void **state)
{
    static const enum pc_resource res[] = {PC_RES_NONE, PC_RES_ENROLLMENT, PC_RES_GROUP,
                                           PC_RES_REGISTRATION, PC_RES_CA};
    static const enum pc_verb verbs[] = {PC_VERB_NONE, PC_VERB_CREATE, PC_VERB_UPDATE,
                                         PC_VERB_SHOW, PC_VERB_LIST, PC_VERB_DELETE,
                                         PC_VERB_UPLOAD, PC_VERB_CODE, PC_VERB_VERIFY};
    (void)state;
    for (size_t i = 0; i < N(res); i++) {
        for (size_t k = 0; k < N(verbs); k++) {
            struct capture cap;
            const char *t;

            cap_open(&cap);
            pc_print_help(cap.f, res[i], verbs[k]);
            t = cap_close(&cap);
            assert_true(strncmp(t, "usage: provctl", 14) == 0);
            if (res[i] == PC_RES_GROUP && verbs[k] == PC_VERB_CREATE)
                assert_null(strstr(t, "--device-id"));
            if (res[i] == PC_RES_ENROLLMENT && verbs[k] == PC_VERB_UPDATE)
                assert_non_null(strstr(t, "--device-id"));
            if (res[i] == PC_RES_ENROLLMENT && verbs[k] == PC_VERB_CREATE)
                assert_non_null(strstr(t, "--thumbprint"));
            if (res[i] == PC_RES_GROUP && verbs[k] == PC_VERB_CREATE) {
                assert_non_null(strstr(t, "--signing-cert"));
                assert_non_null(strstr(t, "--ca-ref"));
                assert_null(strstr(t, "--thumbprint"));
            }
            if (res[i] == PC_RES_CA && verbs[k] == PC_VERB_UPLOAD)
                assert_non_null(strstr(t, "--verified"));
            if (res[i] == PC_RES_CA && verbs[k] == PC_VERB_CODE)
                assert_non_null(strstr(t, "provctl ca verify"));
            if (res[i] == PC_RES_NONE)
                assert_non_null(strstr(t, "ca upload|list|show|code|verify|delete"));
            if (res[i] != PC_RES_NONE && verbs[k] == PC_VERB_NONE)
                assert_non_null(strstr(t, pc_res_name(res[i])));
            free(cap.buf);
        }
    }
}

/* ---- requests --------------------------------------------------------- */

static void test_paths_and_urls(void **state)
{
    char *s;
    (void)state;

    s = pc_entity_path(PC_RES_ENROLLMENT, "dev:1.a_b-c", NULL);
    assert_string_equal(s, "/enrollments/dev%3A1.a_b-c");
    free(s);
    s = pc_entity_path(PC_RES_GROUP, "g 1/x", "/attestationmechanism");
    assert_string_equal(s, "/enrollmentGroups/g%201%2Fx/attestationmechanism");
    free(s);
    s = pc_entity_path(PC_RES_REGISTRATION, "grp", "/query");
    assert_string_equal(s, "/registrations/grp/query");
    free(s);
    assert_string_equal(pc_collection_path(PC_RES_GROUP), "/enrollmentGroups");

    s = pc_build_url("127.0.0.1:8443", "/enrollments/query", NULL);
    assert_string_equal(s, "https://127.0.0.1:8443/enrollments/query?api-version=2021-10-01");
    free(s);
    s = pc_build_url("h.example", "/registrations/r", "0ne/00 x");
    assert_string_equal(s, "https://h.example/registrations/r?api-version=2021-10-01"
                           "&idScope=0ne%2F00%20x");
    free(s);
}

static void test_if_match(void **state)
{
    static const char *const v[][2] = {
        {"abc", "\"abc\""},
        {"\"abc\"", "\"abc\""},
        {"*", "*"},
        {"W/\"abc\"", "W/\"abc\""},
    };
    (void)state;
    for (size_t i = 0; i < N(v); i++) {
        char *s = pc_if_match(v[i][0]);

        assert_string_equal(s, v[i][1]);
        free(s);
    }
}

static void test_entity_new(void **state)
{
    struct pc_command c;
    json_t *e;
    (void)state;

    /* no key flags: an empty symmetricKey object lets the server generate keys */
    PARSE_OK(&c, "enrollment", "create", "dev-1");
    e = pc_entity_new(&c);
    assert_json_equal(e, "{\"registrationId\":\"dev-1\","
                         "\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{}},"
                         "\"provisioningStatus\":\"enabled\","
                         "\"capabilities\":{\"iotEdge\":false}}");
    json_decref(e);

    PARSE_OK(&c, "enrollment", "create", "dev-1", "--primary-key", KEY32, "--device-id", "d",
             "--hub", "h1", "--allocation-policy", "static", "--disabled", "--iot-edge",
             "--initial-twin", "{\"properties\":{\"desired\":{\"x\":1}}}");
    e = pc_entity_new(&c);
    assert_json_equal(e, "{\"registrationId\":\"dev-1\","
                         "\"attestation\":{\"type\":\"symmetricKey\","
                         "\"symmetricKey\":{\"primaryKey\":\"" KEY32 "\"}},"
                         "\"provisioningStatus\":\"disabled\",\"capabilities\":{\"iotEdge\":true},"
                         "\"deviceId\":\"d\",\"iotHubs\":[\"h1\"],\"allocationPolicy\":\"static\","
                         "\"initialTwin\":{\"properties\":{\"desired\":{\"x\":1}}}}");
    json_decref(e);

    PARSE_OK(&c, "group", "create", "grp", "--secondary-key", KEY16, "--allocation-policy",
             "Custom", "--webhook-url", "https://alloc.example/fn?code=1");
    e = pc_entity_new(&c);
    assert_json_equal(e, "{\"enrollmentGroupId\":\"grp\","
                         "\"attestation\":{\"type\":\"symmetricKey\","
                         "\"symmetricKey\":{\"secondaryKey\":\"" KEY16 "\"}},"
                         "\"provisioningStatus\":\"enabled\",\"capabilities\":{\"iotEdge\":false},"
                         "\"allocationPolicy\":\"custom\",\"customAllocationDefinition\":"
                         "{\"webhookUrl\":\"https://alloc.example/fn?code=1\","
                         "\"apiVersion\":\"2021-10-01\"}}");
    json_decref(e);
}

static const char cur_text[] =
    "{\"registrationId\":\"dev-1\",\"deviceId\":\"d\","
    "\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{}},"
    "\"capabilities\":{\"iotEdge\":false},\"etag\":\"\\\"e1\\\"\","
    "\"provisioningStatus\":\"enabled\",\"allocationPolicy\":\"static\","
    "\"iotHubs\":[\"h1\"],\"iotHubHostName\":\"h1\","
    "\"createdDateTimeUtc\":\"2026-01-01T00:00:00Z\","
    "\"lastUpdatedDateTimeUtc\":\"2026-01-02T00:00:00Z\","
    "\"registrationState\":{\"registrationId\":\"dev-1\",\"status\":\"assigned\"},"
    "\"futureField\":{\"kept\":true}}";

static void test_entity_apply(void **state)
{
    struct pc_command c;
    json_t *cur, *att;
    char err[256];
    (void)state;

    /* keys from attestationmechanism are put back; only the options given change */
    PARSE_OK(&c, "enrollment", "update", "dev-1", "--disabled", "--all-hubs",
             "--allocation-policy", "hashed", "--iot-edge");
    cur = J(cur_text);
    att = J("{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"P\","
            "\"secondaryKey\":\"S\"}}");
    assert_int_equal(pc_entity_apply(cur, att, &c, err, sizeof(err)), 0);
    assert_json_equal(cur, "{\"registrationId\":\"dev-1\",\"deviceId\":\"d\","
                           "\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":"
                           "{\"primaryKey\":\"P\",\"secondaryKey\":\"S\"}},"
                           "\"capabilities\":{\"iotEdge\":true},"
                           "\"provisioningStatus\":\"disabled\",\"allocationPolicy\":\"hashed\","
                           "\"futureField\":{\"kept\":true}}");
    json_decref(cur);

    /* a new primary key overlays the fetched one and keeps the secondary */
    PARSE_OK(&c, "enrollment", "update", "dev-1", "--primary-key", KEY16, "--hub", "h2",
             "--initial-twin", "{\"tags\":{}}");
    cur = J(cur_text);
    assert_int_equal(pc_entity_apply(cur, att, &c, err, sizeof(err)), 0);
    assert_json_equal(json_object_get(cur, "attestation"),
                      "{\"type\":\"symmetricKey\",\"symmetricKey\":"
                      "{\"primaryKey\":\"" KEY16 "\",\"secondaryKey\":\"S\"}}");
    assert_json_equal(json_object_get(cur, "iotHubs"), "[\"h2\"]");
    assert_json_equal(json_object_get(cur, "initialTwin"), "{\"tags\":{}}");
    /* att is borrowed and left alone */
    assert_string_equal(json_string_value(json_object_get(json_object_get(att, "symmetricKey"),
                                                          "primaryKey")), "P");
    json_decref(cur);
    json_decref(att);

    /* no capabilities object yet: one is made */
    PARSE_OK(&c, "group", "update", "g", "--no-iot-edge", "--enabled");
    cur = J("{\"enrollmentGroupId\":\"g\",\"attestation\":{\"type\":\"symmetricKey\"},"
            "\"provisioningStatus\":\"disabled\"}");
    assert_int_equal(pc_entity_apply(cur, NULL, &c, err, sizeof(err)), 0);
    assert_json_equal(cur, "{\"enrollmentGroupId\":\"g\",\"attestation\":"
                           "{\"type\":\"symmetricKey\"},\"provisioningStatus\":\"enabled\","
                           "\"capabilities\":{\"iotEdge\":false}}");
    json_decref(cur);
}

static void test_entity_apply_attestation_types(void **state)
{
    static const char x509[] =
        "{\"registrationId\":\"x\",\"attestation\":{\"type\":\"x509\",\"x509\":"
        "{\"clientCertificates\":{\"primary\":{\"info\":{\"subjectName\":\"CN=x\"}}}}}}";
    struct pc_command c;
    json_t *cur;
    char err[256];
    (void)state;

    /* keys for an X.509 enrollment: refused, the attestation is not switched silently */
    PARSE_OK(&c, "enrollment", "update", "x", "--primary-key", KEY16);
    cur = J(x509);
    assert_int_equal(pc_entity_apply(cur, NULL, &c, err, sizeof(err)), PROV_EINVAL);
    assert_non_null(strstr(err, "x509"));
    assert_non_null(strstr(err, "--symmetric-key"));
    json_decref(cur);

    /* an unrelated change leaves the info-only X.509 attestation as it came */
    PARSE_OK(&c, "enrollment", "update", "x", "--disabled");
    cur = J(x509);
    assert_int_equal(pc_entity_apply(cur, NULL, &c, err, sizeof(err)), 0);
    assert_json_equal(json_object_get(cur, "attestation"),
                      "{\"type\":\"x509\",\"x509\":{\"clientCertificates\":{\"primary\":"
                      "{\"info\":{\"subjectName\":\"CN=x\"}}}}}");
    json_decref(cur);

    /* --symmetric-key switches; without keys the server generates them */
    PARSE_OK(&c, "enrollment", "update", "x", "--symmetric-key");
    cur = J(x509);
    assert_int_equal(pc_entity_apply(cur, NULL, &c, err, sizeof(err)), 0);
    assert_json_equal(json_object_get(cur, "attestation"),
                      "{\"type\":\"symmetricKey\",\"symmetricKey\":{}}");
    json_decref(cur);

    /* the webhook api version alone needs an existing webhook */
    PARSE_OK(&c, "enrollment", "update", "x", "--webhook-api-version", "2019-03-31");
    cur = J(x509);
    assert_int_equal(pc_entity_apply(cur, NULL, &c, err, sizeof(err)), PROV_EINVAL);
    assert_non_null(strstr(err, "--webhook-url"));
    json_decref(cur);
    cur = J("{\"registrationId\":\"x\",\"customAllocationDefinition\":"
            "{\"webhookUrl\":\"https://a\",\"apiVersion\":\"2018-11-01\"}}");
    assert_int_equal(pc_entity_apply(cur, NULL, &c, err, sizeof(err)), 0);
    assert_json_equal(json_object_get(cur, "customAllocationDefinition"),
                      "{\"webhookUrl\":\"https://a\",\"apiVersion\":\"2019-03-31\"}");
    json_decref(cur);
    /* a new URL keeps the stored api version */
    PARSE_OK(&c, "enrollment", "update", "x", "--webhook-url", "https://b");
    cur = J("{\"registrationId\":\"x\",\"customAllocationDefinition\":"
            "{\"webhookUrl\":\"https://a\",\"apiVersion\":\"2018-11-01\"}}");
    assert_int_equal(pc_entity_apply(cur, NULL, &c, err, sizeof(err)), 0);
    assert_json_equal(json_object_get(cur, "customAllocationDefinition"),
                      "{\"webhookUrl\":\"https://b\",\"apiVersion\":\"2018-11-01\"}");
    json_decref(cur);

    /* not an object */
    cur = J("[1]");
    assert_int_equal(pc_entity_apply(cur, NULL, &c, err, sizeof(err)), PROV_EINVAL);
    json_decref(cur);
}

/* ---- X.509 and CA commands -------------------------------------------- */

#define TP1 "0123456789ABCDEF0123456789ABCDEF01234567"
#define TP256                                                                                  \
    "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:"                                           \
    "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff"

static void test_args_x509(void **state)
{
    struct pc_command c;
    const char *files[2];
    (void)state;

    /* certificate options imply --x509 */
    PARSE_OK(&c, "enrollment", "create", "dev-1", "--cert", "a.pem", "--secondary-cert",
             "b.der");
    assert_true(c.x509);
    assert_string_equal(c.cert_file[0], "a.pem");
    assert_string_equal(c.cert_file[1], "b.der");
    pc_cert_files(&c, files);
    assert_string_equal(files[0], "a.pem");
    assert_string_equal(files[1], "b.der");
    PARSE_OK(&c, "enrollment", "create", "dev-1", "--x509", "--thumbprint", TP256);
    assert_true(c.x509);
    assert_string_equal(c.thumbprint, TP256);
    pc_cert_files(&c, files);
    assert_null(files[0]);
    PARSE_OK(&c, "group", "create", "g", "--x509", "--signing-cert", "root.pem",
             "--secondary-signing-cert", "int.pem");
    assert_string_equal(c.signing_file[0], "root.pem");
    pc_cert_files(&c, files);
    assert_string_equal(files[0], "root.pem");
    assert_string_equal(files[1], "int.pem");
    PARSE_OK(&c, "group", "create", "g", "--ca-ref", "root-1", "--secondary-ca-ref", "root.2");
    assert_true(c.x509);
    assert_string_equal(c.ca_ref[0], "root-1");
    assert_string_equal(c.ca_ref[1], "root.2");
    /* update: any one slot is a change */
    PARSE_OK(&c, "enrollment", "update", "dev-1", "--secondary-cert", "b.pem");
    assert_true(pc_has_changes(&c));
    PARSE_OK(&c, "group", "update", "g", "--secondary-ca-ref", "r");
    assert_true(pc_has_changes(&c));

    PARSE_ERR("needs --cert FILE or --thumbprint", "enrollment", "create", "d", "--x509");
    PARSE_ERR("needs --cert FILE or --thumbprint", "enrollment", "create", "d",
              "--secondary-cert", "b.pem");
    PARSE_ERR("needs --signing-cert FILE or --ca-ref", "group", "create", "g", "--x509");
    PARSE_ERR("--cert and --thumbprint exclude each other", "enrollment", "create", "d",
              "--cert", "a.pem", "--thumbprint", TP1);
    PARSE_ERR("--x509 excludes", "enrollment", "create", "d", "--cert", "a.pem",
              "--primary-key", KEY32);
    PARSE_ERR("--x509 excludes", "group", "update", "g", "--x509", "--symmetric-key");
    PARSE_ERR("exclude each other", "group", "create", "g", "--signing-cert", "a.pem",
              "--ca-ref", "r");
    PARSE_ERR("--thumbprint: expected", "enrollment", "create", "d", "--thumbprint", "abc");
    PARSE_ERR("--thumbprint: expected", "enrollment", "create", "d", "--thumbprint",
              TP1 "0");
    PARSE_ERR("--thumbprint: expected", "enrollment", "create", "d", "--thumbprint",
              "0123456789ABCDEF0123456789ABCDEF0123456G");
    PARSE_ERR("--ca-ref: expected a CA certificate name", "group", "create", "g", "--ca-ref",
              "a b");
    PARSE_ERR("--cert: empty file name", "enrollment", "create", "d", "--cert", "");
    PARSE_ERR("--signing-cert does not apply", "enrollment", "create", "d", "--signing-cert",
              "a.pem");
    PARSE_ERR("--ca-ref does not apply", "enrollment", "create", "d", "--ca-ref", "r");
    PARSE_ERR("--cert does not apply", "group", "create", "g", "--cert", "a.pem");
    PARSE_ERR("--thumbprint does not apply", "group", "create", "g", "--thumbprint", TP1);
    PARSE_ERR("--x509 does not apply", "enrollment", "show", "d", "--x509");
    PARSE_ERR("--verified does not apply", "enrollment", "create", "d", "--verified");
    PARSE_ERR("nothing to change", "group", "update", "g", "--x509");
}

static void test_args_ca(void **state)
{
    struct pc_command c;
    const char *files[2];
    (void)state;

    PARSE_OK(&c, "ca", "upload", "root-1", "--cert", "ca.pem", "--verified");
    assert_int_equal(c.res, PC_RES_CA);
    assert_int_equal(c.verb, PC_VERB_UPLOAD);
    assert_string_equal(c.id, "root-1");
    assert_true(c.verified);
    assert_false(c.x509);
    pc_cert_files(&c, files);
    assert_string_equal(files[0], "ca.pem");
    assert_null(files[1]);
    PARSE_OK(&c, "ca", "upload", "root-1", "--cert", "ca.pem", "--etag", "e1");
    assert_string_equal(c.etag, "e1");
    PARSE_OK(&c, "ca", "list");
    assert_int_equal(c.verb, PC_VERB_LIST);
    assert_null(c.id);
    PARSE_OK(&c, "cas", "show", "root-1");
    assert_int_equal(c.verb, PC_VERB_SHOW);
    PARSE_OK(&c, "ca", "code", "root-1");
    assert_int_equal(c.verb, PC_VERB_CODE);
    PARSE_OK(&c, "ca", "verify", "root-1", "--cert", "v.pem");
    assert_int_equal(c.verb, PC_VERB_VERIFY);
    assert_string_equal(c.cert_file[0], "v.pem");
    PARSE_OK(&c, "ca", "delete", "root-1", "--etag", "x");
    assert_int_equal(c.verb, PC_VERB_DELETE);
    assert_string_equal(pc_collection_path(PC_RES_CA), "/certificates");
    assert_string_equal(pc_res_name(PC_RES_CA), "ca");
    assert_string_equal(pc_verb_name(PC_VERB_CODE), "code");

    PARSE_ERR("ca upload: --cert FILE is required", "ca", "upload", "r");
    PARSE_ERR("ca verify: --cert FILE is required", "ca", "verify", "r");
    PARSE_ERR("invalid name 'a b'", "ca", "show", "a b");
    PARSE_ERR("invalid name", "ca", "upload", "r/x", "--cert", "c.pem");
    PARSE_ERR("missing ID", "ca", "code");
    PARSE_ERR("unknown subcommand 'create'", "ca", "create", "r");
    PARSE_ERR("unknown subcommand 'update'", "ca", "update", "r");
    PARSE_ERR("unknown subcommand 'upload'", "enrollment", "upload", "r");
    PARSE_ERR("unknown subcommand 'code'", "group", "code", "r");
    PARSE_ERR("unknown subcommand 'verify'", "registration", "verify", "r");
    PARSE_ERR("--page-size does not apply", "ca", "list", "--page-size", "5");
    PARSE_ERR("--cert does not apply", "ca", "code", "r", "--cert", "c.pem");
    PARSE_ERR("--verified does not apply", "ca", "verify", "r", "--cert", "c.pem",
              "--verified");
    PARSE_ERR("--keys does not apply", "ca", "show", "r", "--keys");
    PARSE_ERR("--x509 does not apply", "ca", "upload", "r", "--cert", "c", "--x509");
    PARSE_ERR("--hub does not apply", "ca", "upload", "r", "--cert", "c", "--hub", "h");
    assert_true(pc_ca_name_valid("A-z_0.9"));
    assert_false(pc_ca_name_valid(""));
    assert_false(pc_ca_name_valid("a:b"));
}

static void test_entity_x509(void **state)
{
    struct pc_command c;
    json_t *e;
    (void)state;

    PARSE_OK(&c, "enrollment", "create", "dev-1", "--cert", "a.pem", "--secondary-cert", "b.pem");
    c.cert_text[0] = "PEM-A";
    c.cert_text[1] = "PEM-B";
    e = pc_entity_new(&c);
    assert_json_equal(json_object_get(e, "attestation"),
                      "{\"type\":\"x509\",\"x509\":{\"clientCertificates\":{"
                      "\"primary\":{\"certificate\":\"PEM-A\"},"
                      "\"secondary\":{\"certificate\":\"PEM-B\"}}}}");
    json_decref(e);
    PARSE_OK(&c, "enrollment", "create", "dev-1", "--thumbprint", TP1);
    e = pc_entity_new(&c);
    assert_json_equal(json_object_get(e, "attestation"),
                      "{\"type\":\"x509\",\"x509\":{\"clientCertificates\":{"
                      "\"primary\":{\"info\":{\"sha1Thumbprint\":\"" TP1 "\"}}}}}");
    json_decref(e);
    PARSE_OK(&c, "enrollment", "create", "dev-1", "--thumbprint", TP256, "--secondary-cert",
             "b.pem");
    c.cert_text[1] = "PEM-B";
    e = pc_entity_new(&c);
    assert_json_equal(json_object_get(e, "attestation"),
                      "{\"type\":\"x509\",\"x509\":{\"clientCertificates\":{"
                      "\"primary\":{\"info\":{\"sha256Thumbprint\":\"" TP256 "\"}},"
                      "\"secondary\":{\"certificate\":\"PEM-B\"}}}}");
    json_decref(e);
    PARSE_OK(&c, "group", "create", "g", "--signing-cert", "root.pem");
    c.cert_text[0] = "ROOT";
    e = pc_entity_new(&c);
    assert_json_equal(e, "{\"enrollmentGroupId\":\"g\",\"attestation\":{\"type\":\"x509\","
                         "\"x509\":{\"signingCertificates\":{\"primary\":"
                         "{\"certificate\":\"ROOT\"}}}},\"provisioningStatus\":\"enabled\","
                         "\"capabilities\":{\"iotEdge\":false}}");
    json_decref(e);
    PARSE_OK(&c, "group", "create", "g", "--ca-ref", "root", "--secondary-ca-ref", "int");
    e = pc_entity_new(&c);
    assert_json_equal(json_object_get(e, "attestation"),
                      "{\"type\":\"x509\",\"x509\":{\"caReferences\":{\"primary\":\"root\","
                      "\"secondary\":\"int\"}}}");
    json_decref(e);
    /* a file that was not read cannot become a body */
    PARSE_OK(&c, "group", "create", "g", "--signing-cert", "root.pem");
    assert_null(pc_entity_new(&c));
}

static void test_entity_apply_x509(void **state)
{
    static const char enr[] =
        "{\"registrationId\":\"x\",\"etag\":\"\\\"e\\\"\",\"attestation\":{\"type\":\"x509\","
        "\"x509\":{\"clientCertificates\":{\"primary\":{\"info\":{\"subjectName\":\"CN=x\","
        "\"sha256Thumbprint\":\"AA\"}}}}}}";
    static const char grp[] =
        "{\"enrollmentGroupId\":\"g\",\"attestation\":{\"type\":\"x509\",\"x509\":"
        "{\"signingCertificates\":{\"primary\":{\"info\":{\"subjectName\":\"CN=root\"}}}}}}";
    struct pc_command c;
    json_t *cur;
    char err[256];
    (void)state;

    /* a new secondary; the primary stays info-only (the server keeps it) */
    PARSE_OK(&c, "enrollment", "update", "x", "--secondary-cert", "b.pem");
    c.cert_text[1] = "PEM-B";
    cur = J(enr);
    assert_int_equal(pc_entity_apply(cur, NULL, &c, err, sizeof(err)), 0);
    assert_json_equal(cur, "{\"registrationId\":\"x\",\"attestation\":{\"type\":\"x509\","
                           "\"x509\":{\"clientCertificates\":{\"primary\":{\"info\":"
                           "{\"subjectName\":\"CN=x\",\"sha256Thumbprint\":\"AA\"}},"
                           "\"secondary\":{\"certificate\":\"PEM-B\"}}}}}");
    json_decref(cur);
    /* symmetric key -> X.509 */
    PARSE_OK(&c, "enrollment", "update", "dev-1", "--cert", "a.pem");
    c.cert_text[0] = "PEM-A";
    cur = J(cur_text);
    assert_int_equal(pc_entity_apply(cur, NULL, &c, err, sizeof(err)), 0);
    assert_json_equal(json_object_get(cur, "attestation"),
                      "{\"type\":\"x509\",\"x509\":{\"clientCertificates\":"
                      "{\"primary\":{\"certificate\":\"PEM-A\"}}}}");
    json_decref(cur);
    /* switching needs a primary */
    PARSE_OK(&c, "enrollment", "update", "dev-1", "--secondary-cert", "b.pem");
    c.cert_text[1] = "PEM-B";
    cur = J(cur_text);
    assert_int_equal(pc_entity_apply(cur, NULL, &c, err, sizeof(err)), PROV_EINVAL);
    assert_non_null(strstr(err, "no primary certificate"));
    json_decref(cur);
    /* a group moves from a signing certificate to a CA reference */
    PARSE_OK(&c, "group", "update", "g", "--ca-ref", "root");
    cur = J(grp);
    assert_int_equal(pc_entity_apply(cur, NULL, &c, err, sizeof(err)), 0);
    assert_json_equal(json_object_get(cur, "attestation"),
                      "{\"type\":\"x509\",\"x509\":{\"caReferences\":{\"primary\":\"root\"}}}");
    json_decref(cur);
    /* a secondary signing certificate keeps the primary */
    PARSE_OK(&c, "group", "update", "g", "--secondary-signing-cert", "int.pem");
    c.cert_text[1] = "INT";
    cur = J(grp);
    assert_int_equal(pc_entity_apply(cur, NULL, &c, err, sizeof(err)), 0);
    assert_json_equal(json_object_get(cur, "attestation"),
                      "{\"type\":\"x509\",\"x509\":{\"signingCertificates\":{\"primary\":"
                      "{\"info\":{\"subjectName\":\"CN=root\"}},\"secondary\":"
                      "{\"certificate\":\"INT\"}}}}");
    json_decref(cur);
    /* a secondary CA reference alone on a group with signing certificates: no primary */
    PARSE_OK(&c, "group", "update", "g", "--secondary-ca-ref", "r2");
    cur = J(grp);
    assert_int_equal(pc_entity_apply(cur, NULL, &c, err, sizeof(err)), PROV_EINVAL);
    assert_non_null(strstr(err, "--ca-ref NAME"));
    json_decref(cur);
}

/* Writes len bytes to a fresh temp file; returns its path (static buffer). */
static const char *temp_file(const void *data, size_t len)
{
    static char path[64];
    int fd;

    snprintf(path, sizeof(path), "/tmp/test_provctl-XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
    return path;
}

static void test_read_cert(void **state)
{
    static const char pem[] = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    static const unsigned char der[] = {0x30, 0x82, 0x00, 0x01, 0xff};
    static const char key[] = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
                              "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n";
    char err[256], *out = NULL, *big;
    const char *p;
    (void)state;

    p = temp_file(pem, strlen(pem));
    assert_int_equal(pc_read_cert(p, &out, err, sizeof(err)), 0);
    assert_string_equal(out, pem);
    free(out);
    unlink(p);
    p = temp_file(der, sizeof(der));
    assert_int_equal(pc_read_cert(p, &out, err, sizeof(err)), 0);
    assert_string_equal(out, "MIIAAf8=");
    free(out);
    unlink(p);
    p = temp_file(key, strlen(key));
    assert_int_equal(pc_read_cert(p, &out, err, sizeof(err)), PROV_EINVAL);
    assert_non_null(strstr(err, "private key"));
    assert_null(out);
    unlink(p);
    p = temp_file("", 0);
    assert_int_equal(pc_read_cert(p, &out, err, sizeof(err)), PROV_EINVAL);
    assert_non_null(strstr(err, "empty"));
    unlink(p);
    p = temp_file("a\0b", 3);
    assert_int_equal(pc_read_cert(p, &out, err, sizeof(err)), PROV_EINVAL);
    unlink(p);
    big = malloc(PC_MAX_CERT_FILE + 1);
    assert_non_null(big);
    memset(big, 'A', PC_MAX_CERT_FILE + 1);
    p = temp_file(big, PC_MAX_CERT_FILE + 1);
    free(big);
    assert_int_equal(pc_read_cert(p, &out, err, sizeof(err)), PROV_EINVAL);
    assert_non_null(strstr(err, "64 KB"));
    unlink(p);
    assert_int_equal(pc_read_cert("/nonexistent/x.pem", &out, err, sizeof(err)), PROV_EIO);
    assert_non_null(strstr(err, "/nonexistent/x.pem"));
}

static void test_ca_bodies(void **state)
{
    struct pc_command c;
    json_t *b;
    (void)state;

    PARSE_OK(&c, "ca", "upload", "r", "--cert", "ca.pem");
    assert_null(pc_ca_upload_body(&c)); /* not read yet */
    c.cert_text[0] = "PEM";
    b = pc_ca_upload_body(&c);
    assert_json_equal(b, "{\"certificate\":\"PEM\"}");
    json_decref(b);
    PARSE_OK(&c, "ca", "upload", "r", "--cert", "ca.pem", "--verified");
    c.cert_text[0] = "PEM";
    b = pc_ca_upload_body(&c);
    assert_json_equal(b, "{\"certificate\":\"PEM\",\"isVerified\":true}");
    json_decref(b);
    PARSE_OK(&c, "ca", "verify", "r", "--cert", "v.pem");
    c.cert_text[0] = "V";
    b = pc_ca_verify_body(&c);
    assert_json_equal(b, "{\"certificate\":\"V\"}");
    json_decref(b);
}

static void test_print_ca(void **state)
{
    struct capture cap;
    json_t *c = J("{\"id\":\"/certificates/root\",\"name\":\"root\",\"etag\":\"e1\","
                  "\"properties\":{\"subject\":\"CN=Root\",\"expiry\":\"Sat, 31 Dec 2039 "
                  "23:59:59 GMT\",\"thumbprint\":\"97388663\",\"isVerified\":true,"
                  "\"certificate\":\"MII\",\"created\":\"Thu, 12 Oct 2017 19:23:50 GMT\","
                  "\"updated\":\"Fri, 13 Oct 2017 19:23:50 GMT\"}}");
    json_t *arr;
    (void)state;

    cap_open(&cap);
    pc_print_ca(cap.f, c);
    assert_string_equal(cap_close(&cap),
                        "ca root: verified, subject CN=Root\n"
                        "  expires: Sat, 31 Dec 2039 23:59:59 GMT\n"
                        "  thumbprint: 97388663\n"
                        "  etag: e1\n"
                        "  created: Thu, 12 Oct 2017 19:23:50 GMT, updated: Fri, 13 Oct 2017 "
                        "19:23:50 GMT\n");
    free(cap.buf);
    arr = json_array();
    json_array_append(arr, c);
    json_array_append_new(arr, J("{\"name\":\"int-ca\",\"properties\":{\"subject\":"
                                 "\"CN=Intermediate\",\"isVerified\":false}}"));
    cap_open(&cap);
    pc_print_list(cap.f, PC_RES_CA, arr);
    assert_string_equal(cap_close(&cap),
                        "NAME    VERIFIED  SUBJECT          EXPIRES\n"
                        "root    yes       CN=Root          Sat, 31 Dec 2039 23:59:59 GMT\n"
                        "int-ca  no        CN=Intermediate  -\n"
                        "2 CA certificates\n");
    free(cap.buf);
    json_decref(arr);
    json_decref(c);

    /* a thumbprint pin and signing certificates in an entity */
    c = J("{\"registrationId\":\"r\",\"attestation\":{\"type\":\"x509\",\"x509\":"
          "{\"clientCertificates\":{\"primary\":{\"info\":{\"sha1Thumbprint\":\"AB\"}}}}}}");
    cap_open(&cap);
    pc_print_entity(cap.f, PC_RES_ENROLLMENT, c);
    assert_non_null(strstr(cap_close(&cap),
                           "  primary certificate: pinned by thumbprint, sha1 AB\n"));
    free(cap.buf);
    json_decref(c);
    c = J("{\"enrollmentGroupId\":\"g\",\"attestation\":{\"type\":\"x509\",\"x509\":"
          "{\"signingCertificates\":{\"primary\":{\"info\":{\"subjectName\":\"CN=Root\","
          "\"sha256Thumbprint\":\"CD\",\"notAfterUtc\":\"2039-12-31T23:59:59Z\"}}}}}}");
    cap_open(&cap);
    pc_print_entity(cap.f, PC_RES_GROUP, c);
    assert_non_null(strstr(cap_close(&cap), "  primary signing certificate: CN=Root, sha256 CD, "
                                            "expires 2039-12-31T23:59:59Z\n"));
    free(cap.buf);
    json_decref(c);
}

/* ---- output ----------------------------------------------------------- */

static void test_print_entity(void **state)
{
    struct capture cap;
    json_t *e = J(cur_text);
    (void)state;

    json_object_set_new(e, "initialTwin", J("{\"tags\":{\"site\":\"lab\"}}"));
    json_object_set_new(e, "reprovisionPolicy",
                        J("{\"updateHubAssignment\":true,\"migrateDeviceData\":false}"));
    json_object_set_new(e, "lastUpdatedDateTimeUtc", json_string("2026-01-02T03:04:05.1234567Z"));
    json_object_set_new(e, "registrationState",
                        J("{\"registrationId\":\"dev-1\",\"status\":\"assigned\","
                          "\"assignedHub\":\"h1\",\"deviceId\":\"d\","
                          "\"lastUpdatedDateTimeUtc\":\"2026-01-03T00:00:00.5Z\"}"));
    cap_open(&cap);
    pc_print_entity(cap.f, PC_RES_ENROLLMENT, e);
    assert_string_equal(cap_close(&cap),
                        "enrollment dev-1: symmetricKey, enabled, device id d, hub h1\n"
                        "  allocation policy: static\n"
                        "  iot edge: no\n"
                        "  reprovision: update hub assignment yes, migrate device data no\n"
                        "  initial twin: {\"tags\":{\"site\":\"lab\"}}\n"
                        "  registration: assigned, hub h1, device id d (2026-01-03T00:00:00Z)\n"
                        "  etag: \"e1\"\n"
                        "  created: 2026-01-01T00:00:00Z, updated: 2026-01-02T03:04:05Z\n");
    free(cap.buf);
    json_decref(e);

    /* a group: no device id; no hubs means all linked hubs; keys never printed */
    e = J("{\"enrollmentGroupId\":\"grp\",\"attestation\":{\"type\":\"symmetricKey\","
          "\"symmetricKey\":{\"primaryKey\":\"SECRET\"}},\"provisioningStatus\":\"disabled\","
          "\"iotHubs\":[\"a\",\"b\"],\"capabilities\":{\"iotEdge\":true},"
          "\"customAllocationDefinition\":{\"webhookUrl\":\"https://w\",\"apiVersion\":\"v\"},"
          "\"allocationPolicy\":\"custom\"}");
    cap_open(&cap);
    pc_print_entity(cap.f, PC_RES_GROUP, e);
    assert_string_equal(cap_close(&cap),
                        "group grp: symmetricKey, disabled, hubs a,b\n"
                        "  allocation policy: custom\n"
                        "  webhook: https://w (api v)\n"
                        "  iot edge: yes\n"
                        "  created: -, updated: -\n");
    free(cap.buf);
    json_decref(e);

    e = J("{\"registrationId\":\"r\",\"attestation\":{\"type\":\"x509\",\"x509\":"
          "{\"clientCertificates\":{\"primary\":{\"info\":{\"subjectName\":\"CN=r\","
          "\"sha256Thumbprint\":\"AB\",\"notAfterUtc\":\"2030-01-01T00:00:00Z\"}}}}}}");
    cap_open(&cap);
    pc_print_entity(cap.f, PC_RES_ENROLLMENT, e);
    assert_string_equal(cap_close(&cap),
                        "enrollment r: x509, enabled, device id r, all linked hubs\n"
                        "  allocation policy: service default\n"
                        "  iot edge: no\n"
                        "  primary certificate: CN=r, sha256 AB, expires 2030-01-01T00:00:00Z\n"
                        "  created: -, updated: -\n");
    free(cap.buf);
    json_decref(e);
}

static void test_print_control_chars(void **state)
{
    struct capture cap;
    json_t *e = J("{\"registrationId\":\"a\\u001b[31mb\",\"deviceId\":\"x\\ny\"}");
    (void)state;

    cap_open(&cap);
    pc_print_entity(cap.f, PC_RES_ENROLLMENT, e);
    cap_close(&cap);
    assert_null(strchr(cap.buf, '\x1b'));
    assert_non_null(strstr(cap.buf, "enrollment a?[31mb: none, enabled, device id x?y,"));
    free(cap.buf);
    json_decref(e);
}

static void test_print_keys(void **state)
{
    struct capture cap;
    json_t *att = J("{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"P1\","
                    "\"secondaryKey\":\"S1\"}}");
    (void)state;

    cap_open(&cap);
    assert_int_equal(pc_print_keys(cap.f, att), 2);
    assert_string_equal(cap_close(&cap), "primary key: P1\nsecondary key: S1\n");
    free(cap.buf);
    json_decref(att);
    att = J("{\"type\":\"x509\"}");
    cap_open(&cap);
    assert_int_equal(pc_print_keys(cap.f, att), 0);
    assert_string_equal(cap_close(&cap), "");
    free(cap.buf);
    json_decref(att);
}

static void test_print_registration(void **state)
{
    struct capture cap;
    json_t *r = J("{\"registrationId\":\"dev-9\",\"status\":\"failed\",\"substatus\":"
                  "\"initialAssignment\",\"errorCode\":400208,\"errorMessage\":\"no hub\","
                  "\"etag\":\"\\\"r1\\\"\",\"createdDateTimeUtc\":\"2026-02-01T00:00:00.1Z\","
                  "\"lastUpdatedDateTimeUtc\":\"2026-02-01T00:00:01Z\","
                  "\"payload\":{\"k\":[1,2]}}");
    (void)state;

    cap_open(&cap);
    pc_print_registration(cap.f, r);
    assert_string_equal(cap_close(&cap),
                        "registration dev-9: failed\n"
                        "  substatus: initialAssignment\n"
                        "  error: 400208 no hub\n"
                        "  payload: {\"k\":[1,2]}\n"
                        "  etag: \"r1\"\n"
                        "  created: 2026-02-01T00:00:00Z, updated: 2026-02-01T00:00:01Z\n");
    free(cap.buf);
    json_decref(r);
}

static void test_print_list(void **state)
{
    struct capture cap;
    json_t *arr = J("[{\"registrationId\":\"a\",\"attestation\":{\"type\":\"symmetricKey\"},"
                    "\"provisioningStatus\":\"enabled\","
                    "\"lastUpdatedDateTimeUtc\":\"2026-03-01T10:00:00.999Z\"},"
                    "{\"registrationId\":\"longer-id-1\",\"attestation\":{\"type\":\"x509\"},"
                    "\"provisioningStatus\":\"disabled\"}]");
    (void)state;

    cap_open(&cap);
    pc_print_list(cap.f, PC_RES_ENROLLMENT, arr);
    assert_string_equal(cap_close(&cap),
                        "ID           ATTESTATION   STATUS    UPDATED\n"
                        "a            symmetricKey  enabled   2026-03-01T10:00:00Z\n"
                        "longer-id-1  x509          disabled  -\n"
                        "2 enrollments\n");
    free(cap.buf);
    json_decref(arr);

    arr = J("[{\"registrationId\":\"d1\",\"status\":\"assigned\",\"assignedHub\":\"hub1\","
            "\"deviceId\":\"d1\",\"lastUpdatedDateTimeUtc\":\"2026-03-01T10:00:00Z\"}]");
    cap_open(&cap);
    pc_print_list(cap.f, PC_RES_REGISTRATION, arr);
    assert_string_equal(cap_close(&cap),
                        "ID  STATUS    HUB   DEVICE ID  UPDATED\n"
                        "d1  assigned  hub1  d1         2026-03-01T10:00:00Z\n"
                        "1 registration\n");
    free(cap.buf);
    json_decref(arr);

    arr = json_array();
    cap_open(&cap);
    pc_print_list(cap.f, PC_RES_GROUP, arr);
    assert_string_equal(cap_close(&cap), "0 enrollment groups\n");
    free(cap.buf);
    json_decref(arr);
}

static void test_http_error_format(void **state)
{
    static const struct {
        long status;
        const char *body;
        const char *want;
    } v[] = {
        {404,
         "{\"errorCode\":404201,\"trackingId\":\"t\",\"message\":\"Enrollment not found\","
         "\"timestampUtc\":\"2026-01-01T00:00:00Z\"}",
         "404 404201: Enrollment not found"},
        {412, "{\"errorCode\":\"412001\",\"message\":\"etag mismatch\\nsecond line\"}",
         "412 412001: etag mismatch"},
        {401, "{\"Message\":\"ErrorCode:IotHubUnauthorizedAccess;Unauthorized\"}",
         "401: ErrorCode:IotHubUnauthorizedAccess;Unauthorized"},
        {502, "<html>bad gateway</html>\r\nmore", "502 Bad Gateway: <html>bad gateway</html>"},
        {409, "{\"errorCode\":409001}", "409 409001 Conflict: {\"errorCode\":409001}"},
        {500, "", "500 Internal Server Error"},
        {418, NULL, "418 HTTP error"},
        {400, "{\"errorCode\":400004,\"message\":\"bad\\u001b[0m\"}", "400 400004: bad?[0m"},
    };
    (void)state;
    for (size_t i = 0; i < N(v); i++) {
        char out[256];

        pc_format_http_error(v[i].status, v[i].body, v[i].body ? strlen(v[i].body) : 0, out,
                             sizeof(out));
        assert_string_equal(out, v[i].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connstr_valid),
        cmocka_unit_test(test_connstr_hosts),
        cmocka_unit_test(test_connstr_errors),
        cmocka_unit_test(test_connstr_never_echoes_key),
        cmocka_unit_test(test_args_create_all_flags),
        cmocka_unit_test(test_args_defaults_and_env),
        cmocka_unit_test(test_args_ids_and_words),
        cmocka_unit_test(test_args_option_errors),
        cmocka_unit_test(test_args_help_and_version),
        cmocka_unit_test(test_help_texts),
        cmocka_unit_test(test_paths_and_urls),
        cmocka_unit_test(test_if_match),
        cmocka_unit_test(test_entity_new),
        cmocka_unit_test(test_entity_apply),
        cmocka_unit_test(test_entity_apply_attestation_types),
        cmocka_unit_test(test_print_entity),
        cmocka_unit_test(test_print_control_chars),
        cmocka_unit_test(test_print_keys),
        cmocka_unit_test(test_print_registration),
        cmocka_unit_test(test_print_list),
        cmocka_unit_test(test_http_error_format),
        cmocka_unit_test(test_args_x509),
        cmocka_unit_test(test_args_ca),
        cmocka_unit_test(test_entity_x509),
        cmocka_unit_test(test_entity_apply_x509),
        cmocka_unit_test(test_read_cert),
        cmocka_unit_test(test_ca_bodies),
        cmocka_unit_test(test_print_ca),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
