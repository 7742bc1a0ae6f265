/* Weighted rendezvous hashing: deterministic, proportional, stable. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "src/server/alloc.h"

static void make_hubs(struct cfg_hub *hubs, const struct cfg_hub **ptrs, size_t n,
                      const unsigned *weights)
{
    for (size_t i = 0; i < n; i++) {
        snprintf(hubs[i].hostname, sizeof(hubs[i].hostname), "hub%zu.example.test", i);
        hubs[i].weight = weights ? weights[i] : 1;
        ptrs[i] = &hubs[i];
    }
}

static void test_empty(void **state)
{
    (void)state;
    assert_int_equal(alloc_hashed("dev", NULL, 0), -1);
}

static void test_deterministic_and_case_insensitive(void **state)
{
    struct cfg_hub hubs[3];
    const struct cfg_hub *p[3];

    (void)state;
    make_hubs(hubs, p, 3, NULL);
    for (int i = 0; i < 100; i++) {
        char id[32], up[32];

        snprintf(id, sizeof(id), "device-%d", i);
        snprintf(up, sizeof(up), "DEVICE-%d", i);
        assert_int_equal(alloc_hashed(id, p, 3), alloc_hashed(id, p, 3));
        assert_int_equal(alloc_hashed(id, p, 3), alloc_hashed(up, p, 3));
    }
}

static void check_spread(const unsigned *weights, size_t n)
{
    struct cfg_hub hubs[8];
    const struct cfg_hub *p[8];
    unsigned counts[8] = {0};
    unsigned total_w = 0;
    const int total = 10000;

    make_hubs(hubs, p, n, weights);
    for (size_t i = 0; i < n; i++)
        total_w += hubs[i].weight;
    for (int i = 0; i < total; i++) {
        char id[32];
        int k;

        snprintf(id, sizeof(id), "sn-%06d", i);
        k = alloc_hashed(id, p, n);
        assert_true(k >= 0 && (size_t)k < n);
        counts[k]++;
    }
    for (size_t i = 0; i < n; i++) {
        double want = (double)hubs[i].weight / total_w;
        double got = (double)counts[i] / total;

        /* within 2 percentage points of the weight's share over 10,000 ids */
        assert_true(got > want - 0.02 && got < want + 0.02);
    }
}

static void test_uniform_spread(void **state)
{
    (void)state;
    check_spread(NULL, 2);
    check_spread(NULL, 5);
}

static void test_weighted_spread(void **state)
{
    const unsigned w3[] = {1, 2, 7};
    const unsigned w2[] = {3, 1};

    (void)state;
    check_spread(w3, 3);
    check_spread(w2, 2);
}

static void test_stable_when_hub_added(void **state)
{
    struct cfg_hub hubs[4];
    const struct cfg_hub *p[4];
    int moved = 0;

    (void)state;
    make_hubs(hubs, p, 4, NULL);
    for (int i = 0; i < 2000; i++) {
        char id[32];
        int before, after;

        snprintf(id, sizeof(id), "d%d", i);
        before = alloc_hashed(id, p, 3);
        after = alloc_hashed(id, p, 4);
        /* a device only ever moves to the new hub */
        if (after != before) {
            assert_int_equal(after, 3);
            moved++;
        }
    }
    assert_true(moved > 300 && moved < 700); /* about a quarter */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_deterministic_and_case_insensitive),
        cmocka_unit_test(test_uniform_spread),
        cmocka_unit_test(test_weighted_spread),
        cmocka_unit_test(test_stable_when_hub_added),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
