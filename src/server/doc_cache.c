#include "doc_cache.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/util.h"
#include "../store/store.h"

#define LOG_MODULE "store"

struct slot {
    char *text; /* the stored text that was parsed, NULL when empty */
    size_t len;
    json_t *parsed;
};

struct doc_cache {
    struct slot slots[DOC_CACHE_SLOTS];
    size_t hits, misses;
};

static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static bool cache_key_ok;

static void cache_free(void *arg)
{
    struct doc_cache *c = arg;

    for (size_t i = 0; i < DOC_CACHE_SLOTS; i++) {
        prov_freezero(c->slots[i].text, c->slots[i].len); /* enrollments carry keys */
        json_decref(c->slots[i].parsed);
    }
    free(c);
}

static void cache_key_make(void)
{
    cache_key_ok = pthread_key_create(&cache_key, cache_free) == 0;
}

/* This thread's cache, created on first use; NULL when it cannot be. */
static struct doc_cache *this_cache(void)
{
    struct doc_cache *c;

    pthread_once(&cache_once, cache_key_make);
    if (!cache_key_ok)
        return NULL;
    c = pthread_getspecific(cache_key);
    if (c == NULL && (c = calloc(1, sizeof(*c))) != NULL &&
        pthread_setspecific(cache_key, c) != 0) {
        free(c);
        c = NULL;
    }
    return c;
}

/* FNV-1a of s, continuing from h. */
static uint64_t fnv(uint64_t h, const char *s)
{
    for (; s != NULL && *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static json_t *parse(const struct store_doc *doc)
{
    json_error_t e;
    json_t *j = json_loads(doc->json, 0, &e);

    if (j == NULL || !json_is_object(j)) {
        plog(LOG_ERROR, "stored document '%s' is not a JSON object", doc->id ? doc->id : "?");
        json_decref(j);
        return NULL;
    }
    return j;
}

json_t *doc_cache_load(const struct store_doc *doc)
{
    struct doc_cache *c = this_cache();
    size_t len = strlen(doc->json);
    struct slot *s;
    json_t *j;
    char *text;

    if (c == NULL || len > DOC_CACHE_MAX_TEXT)
        return parse(doc);
    s = &c->slots[fnv(fnv(14695981039346656037ULL, doc->id), doc->etag) % DOC_CACHE_SLOTS];
    if (s->text != NULL && s->len == len && memcmp(s->text, doc->json, len) == 0) {
        c->hits++;
        return json_deep_copy(s->parsed);
    }
    c->misses++;
    if ((j = parse(doc)) == NULL)
        return NULL;
    /* the slot keeps its own copy; the caller gets j */
    if ((text = malloc(len + 1)) != NULL) {
        json_t *keep = json_deep_copy(j);

        if (keep != NULL) {
            memcpy(text, doc->json, len + 1);
            prov_freezero(s->text, s->len);
            json_decref(s->parsed);
            s->text = text;
            s->len = len;
            s->parsed = keep;
        } else {
            free(text);
        }
    }
    return j;
}

void doc_cache_stats(size_t *hits, size_t *misses)
{
    struct doc_cache *c = this_cache();

    *hits = c != NULL ? c->hits : 0;
    *misses = c != NULL ? c->misses : 0;
}
