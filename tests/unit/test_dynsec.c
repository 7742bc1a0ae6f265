/*
 * The Mosquitto connector's reading of the broker's dynamic-security answers
 * (src/server/hub_mosquitto.c, dynsec_parse_answer): which messages answer
 * the request in flight, and which of those are usable. The connector
 * itself runs against a real broker in tests/system/t501 and t503.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "src/server/hub_mosquitto.h"

#define P "provd-0123456789abcdef-"

static enum dynsec_answer parse(const char *text, size_t ncmds, json_t **resp)
{
    return dynsec_parse_answer(text, strlen(text), P, ncmds, resp);
}

static void test_ours(void **state)
{
    json_t *r = NULL;

    (void)state;
    assert_int_equal(parse("{\"responses\":[{\"command\":\"getClient\",\"correlationData\":\"" P
                           "0\",\"data\":{\"client\":{\"textname\":\"x\"}}}]}",
                           1, &r),
                     DYNSEC_OURS);
    assert_non_null(r);
    assert_int_equal(json_array_size(r), 1);
    assert_non_null(json_object_get(json_array_get(r, 0), "data"));
    json_decref(r);
    assert_int_equal(parse("{\"responses\":[{\"correlationData\":\"" P "0\"},"
                           "{\"correlationData\":\"" P "1\",\"error\":\"Client not found\"}]}",
                           2, &r),
                     DYNSEC_OURS);
    assert_string_equal(json_string_value(json_object_get(json_array_get(r, 1), "error")),
                        "Client not found");
    json_decref(r);
}

static void test_not_ours(void **state)
{
    static const char *const cases[] = {
        "",
        "not json",
        "[]",
        "{\"responses\":{\"correlationData\":\"" P "0\"}}",
        "{\"responses\":[]}",
        "{\"responses\":[{\"correlationData\":\"provd-fedcba9876543210-0\"}]}",
        "{\"responses\":[{\"correlationData\":7}]}",
        "{\"responses\":[{}]}",
    };
    json_t *r = (json_t *)cases; /* reset by the call */

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(parse(cases[i], 1, &r), DYNSEC_NOT_OURS);
        assert_null(r);
    }
}

static void test_malformed(void **state)
{
    static const char *const cases[] = {
        /* fewer or more responses than commands */
        "{\"responses\":[{\"correlationData\":\"" P "0\"}]}",
        "{\"responses\":[{\"correlationData\":\"" P "0\"},{\"correlationData\":\"" P "1\"},"
        "{\"correlationData\":\"" P "2\"}]}",
        /* out of order, missing, or the prefix with something else after it */
        "{\"responses\":[{\"correlationData\":\"" P "1\"},{\"correlationData\":\"" P "0\"}]}",
        "{\"responses\":[{\"correlationData\":\"" P "0\"},{}]}",
        "{\"responses\":[{\"correlationData\":\"" P "0x\"},{\"correlationData\":\"" P "1\"}]}",
    };
    json_t *r = NULL;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(parse(cases[i], 2, &r), DYNSEC_MALFORMED);
        assert_null(r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ours),
        cmocka_unit_test(test_not_ours),
        cmocka_unit_test(test_malformed),
    };

    return cmocka_run_group_tests_name("dynsec", tests, NULL, NULL);
}
