/*
 * prov-bench statistics: counters, errors by kind (never hidden: every error
 * lands in a kind, the ones past STATS_MAX_KINDS distinct kinds in "other"),
 * and the latency of every registration in the window, in microseconds, for
 * exact percentiles.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/errors.h"
#include "bench.h"

static void add_errors(struct bench_stats *s, const char *kind, unsigned long n)
{
    s->errors += n;
    for (size_t i = 0; i < s->nkinds; i++) {
        if (strcmp(s->kinds[i].name, kind) == 0) {
            s->kinds[i].n += n;
            return;
        }
    }
    if (s->nkinds == STATS_MAX_KINDS) {
        s->other_kinds += n;
        return;
    }
    snprintf(s->kinds[s->nkinds].name, sizeof(s->kinds[0].name), "%s", kind);
    s->kinds[s->nkinds++].n = n;
}

void stats_error(struct bench_stats *s, const char *kind)
{
    add_errors(s, kind, 1);
}

static int lat_reserve(struct bench_stats *s, size_t more)
{
    size_t cap = s->caplat ? s->caplat : 4096;
    uint32_t *p;

    if (s->nlat + more <= s->caplat)
        return 0;
    while (cap < s->nlat + more)
        cap *= 2;
    p = realloc(s->lat_us, cap * sizeof(*p));
    if (p == NULL)
        return PROV_ENOMEM;
    s->lat_us = p;
    s->caplat = cap;
    return 0;
}

void stats_latency(struct bench_stats *s, double seconds)
{
    double us = seconds * 1e6;

    if (lat_reserve(s, 1) != 0)
        return; /* the registration still counts; only its latency is lost */
    s->lat_us[s->nlat++] = us < 0 ? 0 : us > 4e9 ? 4000000000u : (uint32_t)us;
}

int stats_merge(struct bench_stats *dst, const struct bench_stats *src)
{
    dst->started += src->started;
    dst->assigned += src->assigned;
    dst->assigned_total += src->assigned_total;
    dst->requests += src->requests;
    dst->polls += src->polls;
    dst->handshakes += src->handshakes;
    dst->resumed += src->resumed;
    dst->tickets += src->tickets;
    dst->retry_after_waits += src->retry_after_waits;
    for (size_t i = 0; i < src->nkinds; i++)
        add_errors(dst, src->kinds[i].name, src->kinds[i].n);
    if (src->other_kinds > 0)
        add_errors(dst, "other errors", src->other_kinds);
    if (src->nlat > 0) {
        if (lat_reserve(dst, src->nlat) != 0)
            return PROV_ENOMEM;
        memcpy(dst->lat_us + dst->nlat, src->lat_us, src->nlat * sizeof(*src->lat_us));
        dst->nlat += src->nlat;
    }
    return 0;
}

void stats_free(struct bench_stats *s)
{
    free(s->lat_us);
    s->lat_us = NULL;
    s->nlat = s->caplat = 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

void stats_sort(struct bench_stats *s)
{
    if (s->nlat > 1)
        qsort(s->lat_us, s->nlat, sizeof(*s->lat_us), cmp_u32);
}

/* Nearest-rank percentile. */
double stats_pct_ms(const struct bench_stats *s, double p)
{
    size_t rank;

    if (s->nlat == 0)
        return 0;
    rank = (size_t)(p / 100.0 * (double)s->nlat + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > s->nlat)
        rank = s->nlat;
    return (double)s->lat_us[rank - 1] / 1000.0;
}
