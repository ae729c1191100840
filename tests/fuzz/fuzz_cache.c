/* fuzz_cache.c — libFuzzer driver for the cache plugin's parsers and
 * store (src/plugins/cache/). The input is split at '\n' into fields:
 *   0  a Cache-Control value (parsed as a request and as a response field
 *      beside Pragma), then storability and freshness with it;
 *   1  Expires, 2  Date, 3  Age: the lifetime and initial age must be
 *      non-negative and a parsed date must format back to a date that
 *      parses to the same second;
 *   4  If-None-Match, 5  ETag: weak comparison; "*" always matches;
 *   6  Vary;
 *   7.. keys put into a small store with tags taken from the next field,
 *      then purged by key, prefix and tag with fuzzed arguments: the byte
 *      accounting must stay within max_size and return to 0 when every
 *      entry is purged. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/cache/cache_policy.h"
#include "plugins/cache/cache_store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NFIELDS 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pt_str f[NFIELDS] = {0};
    size_t nf = 0, start = 0;
    for (size_t i = 0; i <= size && nf < NFIELDS; i++)
        if (i == size || data[i] == '\n') {
            f[nf++] = pt_str_make((const char *)data + start, i - start);
            start = i + 1;
        }
    pt_arena *a = pt_arena_new(4096);
    pt_headers h = {0};
    static const char *const names[] = {"Cache-Control", "Expires", "Date", "Age"};
    for (size_t i = 0; i < 4; i++)
        if (f[i].n) pt_headers_add(&h, a, pt_str_c(names[i]), f[i]);
    if (f[6].n) pt_headers_add(&h, a, PT_STR_LIT("Vary"), f[6]);
    pt_headers_add(&h, a, PT_STR_LIT("Pragma"), f[0]);
    pt_cache_cc req, res;
    pt_cache_cc_parse(&h, true, &req);
    pt_cache_cc_parse(&h, false, &res);
    if (res.max_age < -1 || res.s_maxage < -1 || res.max_age > 2147483648LL) __builtin_trap();
    pt_cache_policy p = {.heuristic_ttl = size % 3 ? 0 : 60};
    (void)pt_cache_unstorable(&p, 200, &h, &res);
    (void)pt_cache_vary_star(&h);
    if (pt_cache_lifetime(&p, &h, &res, 1700000000) < 0) __builtin_trap();
    if (pt_cache_initial_age(&h, 1700000000, 1700000001) < 0) __builtin_trap();
    for (size_t i = 1; i <= 2; i++) {
        int64_t t = pt_cache_http_date(f[i]);
        if (t >= 0 && t < 253402300800LL) {
            char buf[40];
            size_t n = pt_cache_http_date_fmt(t, buf);
            if (pt_cache_http_date(pt_str_make(buf, n)) != t) __builtin_trap();
        }
    }
    if (f[5].n && !pt_cache_inm_matches(PT_STR_LIT("*"), f[5])) __builtin_trap();
    (void)pt_cache_inm_matches(f[4], f[5]);

    pt_cache_store *s = calloc(1, sizeof(*s));
    pt_cache_store_init(s, 1 << 16, 4096);
    for (size_t i = 7; i + 1 < nf; i += 2) {
        pt_cache_entry *e = pt_cache_entry_new(s, f[i], 0, f[i].n, f[i + 1].n);
        if (!e) continue;
        memcpy(e->body, f[i].p, f[i].n);
        memcpy(e->tags, f[i + 1].p, f[i + 1].n);
        pt_cache_store_put(s, e, i);
        pt_cache_entry_release(e);
        if (atomic_load(&s->bytes) > s->max_size) __builtin_trap();
    }
    for (size_t i = 7; i < nf; i++) {
        pt_cache_purge_mode m = (pt_cache_purge_mode)(f[i].n % 3);
        pt_cache_entry_release(pt_cache_store_get(s, f[i], 100));
        pt_cache_store_purge(s, m, f[i]);
    }
    pt_cache_store_purge(s, PT_CACHE_PURGE_PREFIX, PT_STR_NULL);
    if (atomic_load(&s->entries) != 0) __builtin_trap();
    uint64_t tables = 0;
    for (int i = 0; i < PT_CACHE_SHARDS; i++)
        if (s->shards[i].tsize) tables += s->shards[i].tsize * sizeof(void *) + PT_CACHE_MALLOC_OVERHEAD;
    if (atomic_load(&s->bytes) != tables) __builtin_trap();
    pt_cache_store_fini(s);
    free(s);
    pt_arena_free(a);
    return 0;
}
