/*
 * The registration pipeline against a real SQLite store in a temporary
 * directory: symmetric-key attestation (individual, group, every refusal),
 * allocation, reprovisioning and the operation that answers the poll.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "src/common/errors.h"
#include "src/common/sas.h"
#include "src/server/registration.h"
#include "src/store/store.h"

#define SCOPE "0ne00TEST01"
static const char key1[] = "dGVzdGtleXRlc3RrZXl0ZXN0a2V5dGVzdGtleTEyMzQ=";
static const char key2[] = "c2Vjb25kYXJ5a2V5c2Vjb25kYXJ5a2V5c2Vjb25kYXI=";
static const char gkey[] = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==";

struct fixture {
    char dir[64];
    struct store *st;
    struct config cfg;
    struct reg_ctx ctx;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char path[128], err[256];

    snprintf(f->dir, sizeof(f->dir), "/tmp/provd-reg-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(path, sizeof(path), "%s/provd.db", f->dir);
    assert_int_equal(store_sqlite_open(path, &f->st, err, sizeof(err)), 0);
    snprintf(f->cfg.scopes[0], sizeof(f->cfg.scopes[0]), SCOPE);
    f->cfg.nscopes = 1;
    snprintf(f->cfg.hubs[0].hostname, sizeof(f->cfg.hubs[0].hostname), "hub1.example.test");
    snprintf(f->cfg.hubs[1].hostname, sizeof(f->cfg.hubs[1].hostname), "hub2.example.test");
    f->cfg.hubs[0].weight = f->cfg.hubs[1].weight = 1;
    f->cfg.hubs[0].apply_allocation_policy = f->cfg.hubs[1].apply_allocation_policy = true;
    f->cfg.nhubs = 2;
    f->cfg.retry_after = 2;
    f->ctx.cfg = &f->cfg;
    f->ctx.store = f->st;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];

    store_close(f->st);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void put_doc(struct fixture *f, enum store_kind kind, const char *id, const char *json)
{
    struct store_doc d = {0};
    char etag[37];

    assert_int_equal(uuid_v4(etag), 0);
    d.id = (char *)id;
    d.etag = etag;
    d.json = (char *)json;
    d.attestation = (char *)"symmetricKey";
    d.created = d.updated = (char *)"2026-01-01T00:00:00.000Z";
    assert_int_equal(f->st->ops->enrollment_put(f->st, SCOPE, kind, &d, STORE_PUT_UPSERT, NULL), 0);
}

static void put_individual(struct fixture *f, const char *id, const char *extra)
{
    char json[1024];

    snprintf(json, sizeof(json),
             "{\"registrationId\":\"%s\",\"attestation\":{\"type\":\"symmetricKey\","
             "\"symmetricKey\":{\"primaryKey\":\"%s\",\"secondaryKey\":\"%s\"}}%s%s}",
             id, key1, key2, extra ? "," : "", extra ? extra : "");
    put_doc(f, STORE_ENROLLMENT, id, json);
}

static void put_group(struct fixture *f, const char *id, const char *extra)
{
    char json[1024];

    snprintf(json, sizeof(json),
             "{\"enrollmentGroupId\":\"%s\",\"attestation\":{\"type\":\"symmetricKey\","
             "\"symmetricKey\":{\"primaryKey\":\"%s\",\"secondaryKey\":\"%s\"}}%s%s}",
             id, gkey, key2, extra ? "," : "", extra ? extra : "");
    put_doc(f, STORE_GROUP, id, json);
}

static char *token_for(const char *rid, const char *key, long long expiry_delta)
{
    char resource[256];

    snprintf(resource, sizeof(resource), "%s/registrations/%s", SCOPE, rid);
    return sas_build(resource, key, "registration", (long long)time(NULL) + expiry_delta);
}

/* Registers and, on 202, polls once; returns the poll's registrationState (owned) or NULL. */
static json_t *provision(struct fixture *f, const char *rid, const char *key, int *status,
                         int *errcode)
{
    struct reg_request rq = {.scope = SCOPE, .registration_id = rid};
    struct reg_reply rep;
    char *tok = token_for(rid, key, 3600);
    char opid[128];
    json_t *state = NULL;

    rq.authorization = tok;
    registration_register(&f->ctx, &rq, &rep);
    *status = rep.status;
    *errcode = rep.error_code;
    if (rep.status == 202) {
        snprintf(opid, sizeof(opid), "%s",
                 json_string_value(json_object_get(rep.body, "operationId")));
        assert_string_equal(json_string_value(json_object_get(rep.body, "status")), "assigning");
        assert_int_equal(rep.retry_after, 2);
        reg_reply_release(&rep);
        registration_poll(&f->ctx, &rq, opid, &rep);
        assert_int_equal(rep.status, 200);
        state = json_incref(json_object_get(rep.body, "registrationState"));
    }
    reg_reply_release(&rep);
    free(tok);
    return state;
}

static const char *sget(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static void test_individual_primary_and_secondary(void **state)
{
    struct fixture *f = *state;
    int st, ec;
    json_t *s;

    put_individual(f, "dev-1", "\"deviceId\":\"dev-1-device\"");
    s = provision(f, "dev-1", key1, &st, &ec);
    assert_int_equal(st, 202);
    assert_non_null(s);
    assert_string_equal(sget(s, "status"), "assigned");
    assert_string_equal(sget(s, "deviceId"), "dev-1-device");
    assert_string_equal(sget(s, "substatus"), "initialAssignment");
    assert_true(strncmp(sget(s, "assignedHub"), "hub", 3) == 0);
    json_decref(s);
    s = provision(f, "DEV-1", key2, &st, &ec); /* ids are case-insensitive */
    assert_int_equal(st, 202);
    assert_string_equal(sget(s, "status"), "assigned");
    json_decref(s);
    /* 64-byte keys, the size the service generates */
    {
        char json[512];

        snprintf(json, sizeof(json),
                 "{\"registrationId\":\"dev-64\",\"attestation\":{\"type\":\"symmetricKey\","
                 "\"symmetricKey\":{\"primaryKey\":\"%s\",\"secondaryKey\":\"%s\"}}}",
                 key2, gkey);
        put_doc(f, STORE_ENROLLMENT, "dev-64", json);
        s = provision(f, "dev-64", gkey, &st, &ec);
        assert_int_equal(st, 202);
        assert_string_equal(sget(s, "status"), "assigned");
        json_decref(s);
    }
}

static void test_refusals(void **state)
{
    struct fixture *f = *state;
    struct reg_request rq = {.scope = SCOPE, .registration_id = "dev-2"};
    struct reg_reply rep;
    char *tok;
    int st, ec;
    json_t *s;

    put_individual(f, "dev-2", NULL);
    put_individual(f, "dev-off", "\"provisioningStatus\":\"disabled\"");
    /* wrong key */
    s = provision(f, "dev-2", gkey, &st, &ec);
    assert_null(s);
    assert_int_equal(st, 401);
    assert_int_equal(ec, 401002);
    /* unknown enrollment: same answer as a wrong key */
    s = provision(f, "nobody", key1, &st, &ec);
    assert_null(s);
    assert_int_equal(ec, 401002);
    /* disabled, with the right key */
    s = provision(f, "dev-off", key1, &st, &ec);
    assert_null(s);
    assert_int_equal(st, 401);
    assert_int_equal(ec, 401003);
    /* expired beyond the skew */
    tok = token_for("dev-2", key1, -3600);
    rq.authorization = tok;
    registration_register(&f->ctx, &rq, &rep);
    assert_int_equal(rep.status, 401);
    assert_string_equal(rep.message, "token expired");
    free(tok);
    /* a token for another registration id */
    tok = token_for("dev-1", key1, 3600);
    rq.authorization = tok;
    registration_register(&f->ctx, &rq, &rep);
    assert_int_equal(rep.status, 401);
    free(tok);
    /* no token, garbage token */
    rq.authorization = NULL;
    registration_register(&f->ctx, &rq, &rep);
    assert_int_equal(rep.status, 401);
    rq.authorization = "SharedAccessSignature sr=x";
    registration_register(&f->ctx, &rq, &rep);
    assert_int_equal(rep.status, 401);
    /* nothing was recorded for any of them */
    {
        struct store_doc d = {0};

        assert_int_equal(f->st->ops->registration_get(f->st, SCOPE, "dev-2", &d), PROV_ENOTFOUND);
        assert_int_equal(f->st->ops->registration_get(f->st, SCOPE, "dev-off", &d),
                         PROV_ENOTFOUND);
    }
}

static void test_group_derived_key(void **state)
{
    struct fixture *f = *state;
    char derived[45];
    int st, ec;
    json_t *s;
    struct store_doc d = {0};

    put_group(f, "aaa-other", NULL);
    put_group(f, "group-a", NULL);
    assert_int_equal(derive_device_key(gkey, "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6", derived), 0);
    assert_string_equal(derived, "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=");
    s = provision(f, "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6", derived, &st, &ec);
    assert_int_equal(st, 202);
    assert_string_equal(sget(s, "status"), "assigned");
    assert_string_equal(sget(s, "deviceId"), "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6");
    /* both groups hold the same key: the first by id wins */
    assert_string_equal(sget(json_object_get(s, "symmetricKey"), "enrollmentGroupId"),
                        "aaa-other");
    json_decref(s);
    assert_int_equal(f->st->ops->registration_get(f->st, SCOPE,
                                                  "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6", &d), 0);
    assert_string_equal(d.group_id, "aaa-other");
    store_doc_release(&d);
    /* the group key itself is not a device key */
    s = provision(f, "sn-2", gkey, &st, &ec);
    assert_int_equal(st, 401);
    /* a disabled group refuses its devices */
    put_group(f, "aaa-other", "\"provisioningStatus\":\"disabled\"");
    put_group(f, "group-a", "\"provisioningStatus\":\"disabled\"");
    s = provision(f, "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6", derived, &st, &ec);
    assert_null(s);
    assert_int_equal(st, 401);
    assert_int_equal(ec, 401003);
}

static void test_individual_overrides_group(void **state)
{
    struct fixture *f = *state;
    char derived[45];
    int st, ec;
    json_t *s;

    put_group(f, "group-a", NULL);
    assert_int_equal(derive_device_key(gkey, "blocked-1", derived), 0);
    s = provision(f, "blocked-1", derived, &st, &ec);
    assert_int_equal(st, 202);
    json_decref(s);
    /* a disabled individual enrollment with that registration id blocks the device */
    put_individual(f, "blocked-1", "\"provisioningStatus\":\"disabled\"");
    s = provision(f, "blocked-1", derived, &st, &ec);
    assert_null(s);
    assert_int_equal(st, 401);
}

static void test_static_and_reprovision(void **state)
{
    struct fixture *f = *state;
    int st, ec;
    json_t *s;
    char created[40], updated[40];

    put_individual(f, "mover", "\"allocationPolicy\":\"static\",\"iotHubs\":[\"hub2.example.test\"]");
    s = provision(f, "mover", key1, &st, &ec);
    assert_string_equal(sget(s, "assignedHub"), "hub2.example.test");
    snprintf(created, sizeof(created), "%s", sget(s, "createdDateTimeUtc"));
    snprintf(updated, sizeof(updated), "%s", sget(s, "lastUpdatedDateTimeUtc"));
    json_decref(s);
    usleep(5000);
    s = provision(f, "mover", key1, &st, &ec);
    assert_string_equal(sget(s, "assignedHub"), "hub2.example.test");
    assert_string_equal(sget(s, "substatus"), "initialAssignment");
    assert_string_equal(sget(s, "createdDateTimeUtc"), created);
    assert_string_not_equal(sget(s, "lastUpdatedDateTimeUtc"), updated);
    json_decref(s);
    /* moved by the enrollment: data migrated by default */
    put_individual(f, "mover", "\"allocationPolicy\":\"static\",\"iotHubs\":[\"hub1.example.test\"]");
    s = provision(f, "mover", key1, &st, &ec);
    assert_string_equal(sget(s, "assignedHub"), "hub1.example.test");
    assert_string_equal(sget(s, "substatus"), "deviceDataMigrated");
    json_decref(s);
    put_individual(f, "mover", "\"allocationPolicy\":\"static\",\"iotHubs\":[\"hub2.example.test\"],"
                               "\"reprovisionPolicy\":{\"updateHubAssignment\":true,"
                               "\"migrateDeviceData\":false}");
    s = provision(f, "mover", key1, &st, &ec);
    assert_string_equal(sget(s, "assignedHub"), "hub2.example.test");
    assert_string_equal(sget(s, "substatus"), "deviceDataReset");
    json_decref(s);
    /* never reprovision: stays where it is */
    put_individual(f, "mover", "\"allocationPolicy\":\"static\",\"iotHubs\":[\"hub1.example.test\"],"
                               "\"reprovisionPolicy\":{\"updateHubAssignment\":false,"
                               "\"migrateDeviceData\":false}");
    s = provision(f, "mover", key1, &st, &ec);
    assert_string_equal(sget(s, "assignedHub"), "hub2.example.test");
    json_decref(s);
}

static void test_no_hub_fails_cleanly(void **state)
{
    struct fixture *f = *state;
    int st, ec;
    json_t *s;

    f->cfg.nhubs = 0;
    put_individual(f, "lonely", NULL);
    s = provision(f, "lonely", key1, &st, &ec);
    assert_int_equal(st, 202);
    assert_string_equal(sget(s, "status"), "failed");
    assert_int_equal(json_integer_value(json_object_get(s, "errorCode")), 400208);
    assert_non_null(sget(s, "errorMessage"));
    json_decref(s);
}

static void test_poll_and_status(void **state)
{
    struct fixture *f = *state;
    struct reg_request rq = {.scope = SCOPE, .registration_id = "dev-p"};
    struct reg_request other = {.scope = SCOPE, .registration_id = "dev-q"};
    struct reg_reply rep;
    char *tok = token_for("dev-p", key1, 3600);
    char *tok2 = token_for("dev-q", key1, 3600);
    char opid[128];

    put_individual(f, "dev-p", NULL);
    put_individual(f, "dev-q", NULL);
    rq.authorization = tok;
    other.authorization = tok2;
    registration_status(&f->ctx, &rq, &rep);
    assert_int_equal(rep.status, 404);
    registration_register(&f->ctx, &rq, &rep);
    assert_int_equal(rep.status, 202);
    snprintf(opid, sizeof(opid), "%s", json_string_value(json_object_get(rep.body, "operationId")));
    assert_true(strncmp(opid, "4.", 2) == 0);
    reg_reply_release(&rep);
    /* another device cannot read this operation */
    registration_poll(&f->ctx, &other, opid, &rep);
    assert_int_equal(rep.status, 404);
    registration_poll(&f->ctx, &rq, "4.0000000000000000.nope", &rep);
    assert_int_equal(rep.status, 404);
    registration_status(&f->ctx, &rq, &rep);
    assert_int_equal(rep.status, 200);
    assert_string_equal(sget(rep.body, "status"), "assigned");
    reg_reply_release(&rep);
    free(tok);
    free(tok2);
}

static void test_payload_echoed(void **state)
{
    struct fixture *f = *state;
    struct reg_request rq = {.scope = SCOPE, .registration_id = "dev-pl"};
    struct reg_reply rep;
    char *tok = token_for("dev-pl", key1, 3600);
    json_t *body = json_pack("{s:s, s:{s:s}}", "registrationId", "dev-pl", "payload", "modelId",
                             "dtmi:x;1");
    char opid[128];

    put_individual(f, "dev-pl", NULL);
    rq.authorization = tok;
    rq.body = body;
    registration_register(&f->ctx, &rq, &rep);
    assert_int_equal(rep.status, 202);
    snprintf(opid, sizeof(opid), "%s", json_string_value(json_object_get(rep.body, "operationId")));
    reg_reply_release(&rep);
    registration_poll(&f->ctx, &rq, opid, &rep);
    assert_string_equal(sget(json_object_get(json_object_get(rep.body, "registrationState"),
                                             "payload"),
                             "modelId"),
                        "dtmi:x;1");
    reg_reply_release(&rep);
    json_decref(body);
    free(tok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_individual_primary_and_secondary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_derived_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_individual_overrides_group, setup, teardown),
        cmocka_unit_test_setup_teardown(test_static_and_reprovision, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_hub_fails_cleanly, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poll_and_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_payload_echoed, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
