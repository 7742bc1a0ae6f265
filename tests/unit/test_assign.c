/*
 * Assignment (src/server/assign.c): hub choice by policy and weight, the
 * apply-allocation-policy flag, reprovisioning (substatus, which hub), the
 * initial twin handed to connectors, and what a failing connector leaves
 * behind. Connectors are recording doubles here; the real ones (Mosquitto,
 * webhooks) are driven by the system tests t501/t502.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "src/common/log.h"
#include "src/server/assign.h"
#include "src/server/hub.h"
#include "src/server/registration.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* ---- a recording connector ---- */

struct fake_hub {
    int provisioned, deprovisioned;
    bool fail_provision, fail_deprovision;
    char last_device[129];
    char last_twin[512]; /* "(null)" when the twin was to be left alone */
    size_t last_key_len;
};

static int fake_open(const char *url, void **state, char *err, size_t errlen)
{
    return 0;
}

static int fake_provision(void *state, const char *hostname, const struct hub_device *dev,
                          char *err, size_t errlen)
{
    struct fake_hub *h = state;
    char *t =
        dev->initial_twin ? json_dumps(dev->initial_twin, JSON_COMPACT | JSON_SORT_KEYS) : NULL;

    snprintf(h->last_twin, sizeof(h->last_twin), "%s", t ? t : "(null)");
    free(t);
    snprintf(h->last_device, sizeof(h->last_device), "%s", dev->device_id);
    h->last_key_len = dev->key_len;
    if (h->fail_provision) {
        snprintf(err, errlen, "broker says no");
        return -1;
    }
    h->provisioned++;
    return 0;
}

static int fake_deprovision(void *state, const char *hostname, const char *device_id, char *err,
                            size_t errlen)
{
    struct fake_hub *h = state;

    snprintf(h->last_device, sizeof(h->last_device), "%s", device_id);
    if (h->fail_deprovision) {
        snprintf(err, errlen, "broker unreachable");
        return -1;
    }
    h->deprovisioned++;
    return 0;
}

static void fake_close(void *state)
{
}

static const struct hub_connector_ops fake_ops = {
    "fake", fake_open, fake_provision, fake_deprovision, fake_close,
};

/* ---- fixture ---- */

struct fixture {
    struct config cfg;
    struct fake_hub fakes[4];
};

static void add_hub(struct fixture *f, const char *name, unsigned weight, bool apply, bool fake)
{
    struct cfg_hub *h = &f->cfg.hubs[f->cfg.nhubs];

    snprintf(h->hostname, sizeof(h->hostname), "%s", name);
    h->weight = weight;
    h->apply_allocation_policy = apply;
    if (fake) {
        h->ops = &fake_ops;
        h->state = &f->fakes[f->cfg.nhubs];
    }
    f->cfg.nhubs++;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    f->cfg.retry_after = 1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    free(*state);
    return 0;
}

static struct assign_job *job(const char *rid, const char *enrollment_json, const char *prev_json)
{
    struct assign_job *j = calloc(1, sizeof(*j));
    json_error_t e;

    assert_non_null(j);
    j->kind = ASSIGN_PLACE;
    snprintf(j->scope, sizeof(j->scope), "0ne00TEST01");
    snprintf(j->registration_id, sizeof(j->registration_id), "%s", rid);
    snprintf(j->device_id, sizeof(j->device_id), "%s", rid);
    snprintf(j->operation_id, sizeof(j->operation_id), "4.0.op");
    snprintf(j->created, sizeof(j->created), "2026-01-01T00:00:00.000Z");
    snprintf(j->attestation, sizeof(j->attestation), "symmetricKey");
    j->enrollment = json_loads(enrollment_json, 0, &e);
    assert_non_null(j->enrollment);
    if (prev_json != NULL) {
        j->prev = json_loads(prev_json, 0, &e);
        assert_non_null(j->prev);
    }
    memset(j->key, 7, 32);
    j->key_len = 32;
    return j;
}

static const char *str(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));

    return s ? s : "(none)";
}

/* assign_compute for one job; returns the state (caller decrefs). */
static json_t *compute(struct fixture *f, struct assign_job *j)
{
    json_t *s = assign_compute(&f->cfg, j, "etag-1", "2026-02-02T00:00:00.000Z");

    assert_non_null(s);
    return s;
}

/* ---- tests ---- */

/* 10,000 registration ids over weights 1:3:6 land within 2 points of 10%, 30%, 60%. */
static void test_weighted_spread_and_excluded_hub(void **state)
{
    struct fixture *f = *state;
    int count[4] = {0};
    const int total = 10000;

    add_hub(f, "a.example", 1, true, false);
    add_hub(f, "b.example", 3, true, false);
    add_hub(f, "c.example", 6, true, false);
    add_hub(f, "reserved.example", 1000, false, false); /* apply-allocation-policy false */
    for (int i = 0; i < total; i++) {
        char rid[32];
        struct assign_job *j;
        json_t *s;

        snprintf(rid, sizeof(rid), "device-%05d", i);
        j = job(rid, "{}", NULL);
        assert_false(assign_needs_thread(&f->cfg, j));
        s = compute(f, j);
        assert_string_equal(str(s, "status"), "assigned");
        for (size_t h = 0; h < f->cfg.nhubs; h++) {
            if (strcmp(str(s, "assignedHub"), f->cfg.hubs[h].hostname) == 0)
                count[h]++;
        }
        json_decref(s);
        assign_job_free(j);
    }
    assert_int_equal(count[3], 0);
    assert_int_equal(count[0] + count[1] + count[2], total);
    assert_in_range(count[0], 800, 1200);
    assert_in_range(count[1], 2800, 3200);
    assert_in_range(count[2], 5800, 6200);
}

static void test_named_hubs_and_static(void **state)
{
    struct fixture *f = *state;
    struct assign_job *j;
    json_t *s;

    add_hub(f, "a.example", 1, true, false);
    add_hub(f, "reserved.example", 1, false, false);
    /* a hub excluded from allocation still takes devices of an enrollment that names it */
    j = job("d1", "{\"iotHubs\":[\"Reserved.Example\"]}", NULL);
    s = compute(f, j);
    assert_string_equal(str(s, "assignedHub"), "reserved.example");
    json_decref(s);
    assign_job_free(j);
    /* static: the enrollment's legacy iotHubHostName */
    j = job("d2", "{\"allocationPolicy\":\"static\",\"iotHubHostName\":\"reserved.example\"}",
            NULL);
    s = compute(f, j);
    assert_string_equal(str(s, "assignedHub"), "reserved.example");
    assert_string_equal(str(s, "substatus"), "initialAssignment");
    json_decref(s);
    assign_job_free(j);
    /* a hub that is not linked: failed, 400208 */
    j = job("d3", "{\"iotHubs\":[\"gone.example\"]}", NULL);
    s = compute(f, j);
    assert_string_equal(str(s, "status"), "failed");
    assert_int_equal(json_integer_value(json_object_get(s, "errorCode")), DPS_HUB_NOT_SPECIFIED);
    json_decref(s);
    assign_job_free(j);
}

static void test_custom_without_webhook_fails_inline(void **state)
{
    struct fixture *f = *state;
    struct assign_job *j;
    json_t *s;

    add_hub(f, "a.example", 1, true, false);
    j = job("d1", "{\"allocationPolicy\":\"custom\"}", NULL);
    assert_false(assign_needs_thread(&f->cfg, j));
    s = compute(f, j);
    assert_string_equal(str(s, "status"), "failed");
    assert_int_equal(json_integer_value(json_object_get(s, "errorCode")),
                     DPS_CUSTOM_ALLOCATION_FAILED);
    json_decref(s);
    assign_job_free(j);
    /* with a webhook it must go to an assigner thread */
    j = job("d1",
            "{\"allocationPolicy\":\"custom\",\"customAllocationDefinition\":"
            "{\"webhookUrl\":\"http://127.0.0.1:9/x\",\"apiVersion\":\"2021-10-01\"}}",
            NULL);
    assert_true(assign_needs_thread(&f->cfg, j));
    assign_job_free(j);
}

#define PREV_ON_A                                                                                  \
    "{\"registrationId\":\"dev\",\"status\":\"assigned\",\"assignedHub\":\"a.example\","           \
    "\"deviceId\":\"dev\"}"

static void test_reprovision_policies(void **state)
{
    static const struct {
        const char *policy;
        const char *hub, *substatus, *twin_at_b;
        int removed_from_a;
    } cases[] = {
        /* default policy = update + migrate */
        {"", "b.example", "deviceDataMigrated", "{\"properties\":{\"desired\":{\"v\":1}}}", 1},
        {",\"reprovisionPolicy\":{\"updateHubAssignment\":true,\"migrateDeviceData\":false}",
         "b.example", "deviceDataReset", "{\"properties\":{\"desired\":{\"v\":1}}}", 1},
        {",\"reprovisionPolicy\":{\"updateHubAssignment\":false,\"migrateDeviceData\":true}",
         "a.example", "initialAssignment", NULL, 0},
    };
    struct fixture *f = *state;

    add_hub(f, "a.example", 1, true, true);
    add_hub(f, "b.example", 1, true, true);
    for (size_t i = 0; i < N(cases); i++) {
        char enr[512];
        struct assign_job *j;
        json_t *s;

        memset(f->fakes, 0, sizeof(f->fakes));
        snprintf(enr, sizeof(enr),
                 "{\"iotHubs\":[\"b.example\"],\"initialTwin\":{\"properties\":{\"desired\":"
                 "{\"v\":1}}}%s}",
                 cases[i].policy);
        j = job("dev", enr, PREV_ON_A);
        assert_true(assign_needs_thread(&f->cfg, j));
        s = compute(f, j);
        assert_string_equal(str(s, "status"), "assigned");
        assert_string_equal(str(s, "assignedHub"), cases[i].hub);
        assert_string_equal(str(s, "substatus"), cases[i].substatus);
        assert_int_equal(f->fakes[0].deprovisioned, cases[i].removed_from_a);
        if (cases[i].twin_at_b != NULL) {
            assert_int_equal(f->fakes[1].provisioned, 1);
            assert_string_equal(f->fakes[1].last_twin, cases[i].twin_at_b);
            assert_int_equal(f->fakes[1].last_key_len, 32);
        } else {
            /* stays on a: refreshed there, its configuration left alone */
            assert_int_equal(f->fakes[0].provisioned, 1);
            assert_string_equal(f->fakes[0].last_twin, "(null)");
        }
        json_decref(s);
        assign_job_free(j);
    }
}

static void test_first_assignment_twin(void **state)
{
    struct fixture *f = *state;
    struct assign_job *j;
    json_t *s;

    add_hub(f, "a.example", 1, true, true);
    /* no initialTwin: an empty one, so that an old retained configuration is cleared */
    j = job("dev", "{}", NULL);
    s = compute(f, j);
    assert_string_equal(f->fakes[0].last_twin, "{}");
    json_decref(s);
    assign_job_free(j);
    /* same hub, reset policy: the initial twin again */
    j = job("dev",
            "{\"initialTwin\":{\"tags\":{\"t\":1}},\"reprovisionPolicy\":{\"updateHubAssignment\":"
            "true,\"migrateDeviceData\":false}}",
            PREV_ON_A);
    s = compute(f, j);
    assert_string_equal(f->fakes[0].last_twin, "{\"tags\":{\"t\":1}}");
    assert_string_equal(str(s, "substatus"), "initialAssignment");
    json_decref(s);
    assign_job_free(j);
}

/* A failing connector: failed record, code 500210, nothing half-done, the old place remembered. */
static void test_connector_failures(void **state)
{
    struct fixture *f = *state;
    struct assign_job *j;
    json_t *s;

    add_hub(f, "a.example", 1, true, true);
    add_hub(f, "b.example", 1, true, true);
    /* creation at b fails: nothing to undo, a untouched */
    f->fakes[1].fail_provision = true;
    j = job("dev", "{\"iotHubs\":[\"b.example\"]}", PREV_ON_A);
    s = compute(f, j);
    assert_string_equal(str(s, "status"), "failed");
    assert_int_equal(json_integer_value(json_object_get(s, "errorCode")), DPS_HUB_OPERATION_FAILED);
    assert_non_null(strstr(str(s, "errorMessage"), "broker says no"));
    assert_string_equal(str(s, "assignedHub"), "a.example"); /* where the device still is */
    assert_int_equal(f->fakes[0].deprovisioned, 0);
    json_decref(s);
    assign_job_free(j);

    /* removal from a fails: the identity created at b is taken back */
    memset(f->fakes, 0, sizeof(f->fakes));
    f->fakes[0].fail_deprovision = true;
    j = job("dev", "{\"iotHubs\":[\"b.example\"]}", PREV_ON_A);
    s = compute(f, j);
    assert_string_equal(str(s, "status"), "failed");
    assert_int_equal(f->fakes[1].provisioned, 1);
    assert_int_equal(f->fakes[1].deprovisioned, 1);
    assert_string_equal(str(s, "assignedHub"), "a.example");
    json_decref(s);
    assign_job_free(j);

    /* the next registration retries: now it works and moves the device */
    memset(f->fakes, 0, sizeof(f->fakes));
    j = job("dev", "{\"iotHubs\":[\"b.example\"]}",
            "{\"registrationId\":\"dev\",\"status\":\"failed\",\"errorCode\":500210,"
            "\"assignedHub\":\"a.example\",\"deviceId\":\"dev\"}");
    s = compute(f, j);
    assert_string_equal(str(s, "status"), "assigned");
    assert_string_equal(str(s, "assignedHub"), "b.example");
    assert_int_equal(f->fakes[0].deprovisioned, 1);
    json_decref(s);
    assign_job_free(j);
}

static void test_payload_and_attestation_members(void **state)
{
    struct fixture *f = *state;
    struct assign_job *j;
    json_t *s;

    add_hub(f, "a.example", 1, true, false);
    j = job("dev", "{}", NULL);
    j->payload = json_pack("{s:i}", "modelId", 7);
    j->is_group = true;
    snprintf(j->group_id, sizeof(j->group_id), "grp");
    s = compute(f, j);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(s, "payload"), "modelId")),
                     7);
    assert_string_equal(str(json_object_get(s, "symmetricKey"), "enrollmentGroupId"), "grp");
    json_decref(s);
    assign_job_free(j);

    j = job("dev", "{}", NULL);
    j->tpm = json_pack("{s:s}", "authenticationKey", "AAAA");
    s = compute(f, j);
    assert_string_equal(str(json_object_get(s, "tpm"), "authenticationKey"), "AAAA");
    json_decref(s);
    assign_job_free(j);
}

static void test_pending_state_keeps_place(void **state)
{
    struct assign_job *j = job("dev", "{}", PREV_ON_A);
    json_t *s = assign_pending_state(j, "e", "2026-02-02T00:00:00.000Z");

    (void)state;
    assert_string_equal(str(s, "status"), "assigning");
    assert_string_equal(str(s, "assignedHub"), "a.example");
    assert_null(json_object_get(s, "substatus"));
    json_decref(s);
    assign_job_free(j);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_weighted_spread_and_excluded_hub),
        T(test_named_hubs_and_static),
        T(test_custom_without_webhook_fails_inline),
        T(test_reprovision_policies),
        T(test_first_assignment_twin),
        T(test_connector_failures),
        T(test_payload_and_attestation_members),
        T(test_pending_state_keeps_place),
    };

    log_set_level(LOG_ERROR); /* 10,000 assignments would log a line each */
    return cmocka_run_group_tests_name("assign", tests, NULL, NULL);
}
