/*
 * The per-thread cache of parsed enrollment documents (src/server/doc_cache.c):
 * a text seen before is answered from the cache, anything else is parsed, the
 * caller always owns an independent copy, and each thread has its own cache.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "src/server/doc_cache.h"
#include "src/store/store.h"

static struct store_doc doc(const char *id, const char *etag, const char *json)
{
    struct store_doc d = {0};

    d.id = (char *)id;
    d.etag = (char *)etag;
    d.json = (char *)json;
    return d;
}

static void stats(size_t *hits, size_t *misses)
{
    doc_cache_stats(hits, misses);
}

/* Loads d twice (*a, *b, both non-NULL); the hits and misses these two loads made. */
static void load_twice(const struct store_doc *d, json_t **a, json_t **b, size_t *hits,
                       size_t *misses)
{
    size_t h0, m0, h1, m1;

    stats(&h0, &m0);
    *a = doc_cache_load(d);
    *b = doc_cache_load(d);
    stats(&h1, &m1);
    assert_non_null(*a);
    assert_non_null(*b);
    *hits = h1 - h0;
    *misses = m1 - m0;
}

static void test_same_text_is_a_hit_and_a_copy(void **state)
{
    struct store_doc d = doc("dev-1", "e1", "{\"registrationId\":\"dev-1\",\"n\":1}");
    size_t hits, misses;
    json_t *a, *b, *c;

    (void)state;
    load_twice(&d, &a, &b, &hits, &misses);
    assert_int_equal(misses, 1);
    assert_int_equal(hits, 1);
    assert_true(a != b);
    assert_true(json_equal(a, b));
    /* what a caller does with its copy does not reach the cache */
    json_object_set_new(b, "n", json_integer(2));
    json_object_del(a, "registrationId");
    c = doc_cache_load(&d);
    assert_int_equal(json_integer_value(json_object_get(c, "n")), 1);
    assert_string_equal(json_string_value(json_object_get(c, "registrationId")), "dev-1");
    json_decref(a);
    json_decref(b);
    json_decref(c);
}

static void test_changed_text_is_parsed_again(void **state)
{
    /* same id and etag, other text: the text decides, not the etag */
    struct store_doc d1 = doc("dev-2", "e1", "{\"provisioningStatus\":\"enabled\"}");
    struct store_doc d2 = doc("dev-2", "e1", "{\"provisioningStatus\":\"disabled\"}");
    struct store_doc d3 = doc("dev-2", "e1", "{\"provisioningStatus\":\"disabled\"} ");
    json_t *a, *b, *c;
    size_t h0, m0, h1, m1;

    (void)state;
    a = doc_cache_load(&d1);
    stats(&h0, &m0);
    b = doc_cache_load(&d2);
    c = doc_cache_load(&d3);
    stats(&h1, &m1);
    assert_string_equal(json_string_value(json_object_get(a, "provisioningStatus")), "enabled");
    assert_string_equal(json_string_value(json_object_get(b, "provisioningStatus")), "disabled");
    assert_string_equal(json_string_value(json_object_get(c, "provisioningStatus")), "disabled");
    assert_int_equal(h1 - h0, 0);
    assert_int_equal(m1 - m0, 2);
    json_decref(a);
    json_decref(b);
    json_decref(c);
}

static void test_many_documents(void **state)
{
    /* more documents than slots: every answer is still the right one */
    char json[128], id[32];
    struct store_doc d;

    (void)state;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 3 * DOC_CACHE_SLOTS; i++) {
            json_t *j;

            snprintf(id, sizeof(id), "dev-%d", i);
            snprintf(json, sizeof(json), "{\"registrationId\":\"%s\",\"i\":%d}", id, i);
            d = doc(id, "etag", json);
            j = doc_cache_load(&d);
            assert_non_null(j);
            assert_int_equal(json_integer_value(json_object_get(j, "i")), i);
            json_decref(j);
        }
    }
}

static void test_not_an_object(void **state)
{
    struct store_doc bad = doc("dev-3", "e", "[1,2]");
    struct store_doc broken = doc("dev-3", "e", "{\"a\":");

    (void)state;
    assert_null(doc_cache_load(&bad));
    assert_null(doc_cache_load(&bad)); /* not cached as anything */
    assert_null(doc_cache_load(&broken));
}

static void test_large_text_not_kept(void **state)
{
    static char json[DOC_CACHE_MAX_TEXT + 64];
    struct store_doc d;
    size_t hits, misses;
    json_t *a, *b;
    int n;

    (void)state;
    n = snprintf(json, sizeof(json), "{\"pad\":\"");
    memset(json + n, 'x', DOC_CACHE_MAX_TEXT);
    snprintf(json + n + DOC_CACHE_MAX_TEXT, sizeof(json) - (size_t)n - DOC_CACHE_MAX_TEXT, "\"}");
    d = doc("big", "e", json);
    load_twice(&d, &a, &b, &hits, &misses);
    assert_int_equal(hits, 0);
    assert_int_equal(misses, 0); /* not a cache lookup at all */
    assert_int_equal(strlen(json_string_value(json_object_get(b, "pad"))), DOC_CACHE_MAX_TEXT);
    json_decref(a);
    json_decref(b);
}

static void *other_thread(void *arg)
{
    struct store_doc d = doc("dev-1", "e1", "{\"registrationId\":\"dev-1\",\"n\":1}");
    size_t *out = arg;
    json_t *j;

    doc_cache_stats(&out[0], &out[1]); /* a fresh cache */
    j = doc_cache_load(&d);
    json_decref(j);
    j = doc_cache_load(&d);
    json_decref(j);
    doc_cache_stats(&out[2], &out[3]);
    return NULL; /* its cache is freed now (ASan would report a leak) */
}

static void test_per_thread(void **state)
{
    struct store_doc d = doc("dev-1", "e1", "{\"registrationId\":\"dev-1\",\"n\":1}");
    size_t counts[4];
    pthread_t t;
    json_t *j;

    (void)state;
    j = doc_cache_load(&d); /* cached on this thread */
    json_decref(j);
    assert_int_equal(pthread_create(&t, NULL, other_thread, counts), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(counts[0], 0);
    assert_int_equal(counts[1], 0);
    assert_int_equal(counts[2], 1); /* hits */
    assert_int_equal(counts[3], 1); /* misses: its own first load */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_text_is_a_hit_and_a_copy),
        cmocka_unit_test(test_changed_text_is_parsed_again),
        cmocka_unit_test(test_many_documents),
        cmocka_unit_test(test_not_an_object),
        cmocka_unit_test(test_large_text_not_kept),
        cmocka_unit_test(test_per_thread),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
