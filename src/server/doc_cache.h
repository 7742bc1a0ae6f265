/*
 * Parsed enrollment documents, kept per thread.
 *
 * Every device request (a register and each poll) reads its enrollment from
 * the store and used to parse its JSON each time: 4.5 us for a symmetric-key
 * enrollment and 12.7 us for an X.509 one with its pinned certificate on the
 * bench machine, the largest share of jansson in a registration's profile.
 * The cache keeps the parsed document of the most recent texts seen on this
 * thread and hands out a deep copy (1-1.5 us), so the caller owns what it gets
 * and may change it or pass it to another thread.
 *
 * The key is the stored text itself: an entry is used only when the text read
 * from the store now is byte for byte the text that was parsed, so a changed
 * enrollment is never answered from the cache, whatever wrote it (this
 * process, another one on the same database, or a hand edit).
 *
 * Bounded: DOC_CACHE_SLOTS entries per thread, direct-mapped by a hash of the
 * id and etag; texts larger than DOC_CACHE_MAX_TEXT are not kept. Entries
 * are freed when their thread exits.
 */
#ifndef PROV_SERVER_DOC_CACHE_H
#define PROV_SERVER_DOC_CACHE_H

#include <stddef.h>

#include <jansson.h>

#define DOC_CACHE_SLOTS 1024
#define DOC_CACHE_MAX_TEXT 16384

struct store_doc;

/*
 * A JSON object parsed from doc->json, owned by the caller; NULL (logged)
 * when the text is not a JSON object or memory runs out.
 */
json_t *doc_cache_load(const struct store_doc *doc);

/* This thread's hits and misses since it started (for tests and profiling). */
void doc_cache_stats(size_t *hits, size_t *misses);

#endif
