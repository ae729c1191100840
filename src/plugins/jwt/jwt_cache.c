/* jwt_cache.c — the verified-token cache: a chained hash table over salted
 * digests with an LRU list and absolute expiries (see jwt_cache.h). */
#include "plugins/jwt/jwt_cache.h"

#include <stdlib.h>

#define NBUCKETS 4096 /* a power of two; chains stay short up to ~10^5 entries */

struct pt_jwt_cache {
    pt_jwt_entry **buckets; /* allocated by the first put */
    size_t count;
    pt_jwt_entry *head, *tail; /* LRU: head = most recently used */
};

/* The digest is uniformly distributed: its first bytes are a fine hash. */
static size_t bucket_of(const uint8_t key[PT_JWT_DIGEST_LEN])
{
    uint64_t h;
    memcpy(&h, key, sizeof(h));
    return (size_t)h & (NBUCKETS - 1);
}

pt_jwt_cache *pt_jwt_cache_new(void) { return pt_xcalloc(1, sizeof(pt_jwt_cache)); }

void pt_jwt_cache_free(pt_jwt_cache *c)
{
    if (!c) return;
    for (pt_jwt_entry *e = c->head, *n; e; e = n) {
        n = e->next;
        free(e);
    }
    free(c->buckets);
    free(c);
}

size_t pt_jwt_cache_count(const pt_jwt_cache *c) { return c ? c->count : 0; }

static void lru_unlink(pt_jwt_cache *c, pt_jwt_entry *e)
{
    if (e->prev) e->prev->next = e->next;
    else c->head = e->next;
    if (e->next) e->next->prev = e->prev;
    else c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_front(pt_jwt_cache *c, pt_jwt_entry *e)
{
    e->next = c->head;
    if (c->head) c->head->prev = e;
    c->head = e;
    if (!c->tail) c->tail = e;
}

/* Unlinks e from its chain and the LRU list and frees it. */
static void remove_entry(pt_jwt_cache *c, pt_jwt_entry *e)
{
    pt_jwt_entry **pp = &c->buckets[bucket_of(e->key)];
    while (*pp && *pp != e) pp = &(*pp)->hnext;
    if (*pp) *pp = e->hnext;
    lru_unlink(c, e);
    c->count--;
    free(e);
}

static pt_jwt_entry *find(const pt_jwt_cache *c, const uint8_t key[PT_JWT_DIGEST_LEN])
{
    if (!c->buckets) return NULL;
    for (pt_jwt_entry *e = c->buckets[bucket_of(key)]; e; e = e->hnext)
        if (memcmp(e->key, key, PT_JWT_DIGEST_LEN) == 0) return e;
    return NULL;
}

const pt_jwt_entry *pt_jwt_cache_get(pt_jwt_cache *c, const uint8_t key[PT_JWT_DIGEST_LEN], uint64_t now_ms)
{
    pt_jwt_entry *e = find(c, key);
    if (!e) return NULL;
    if (now_ms >= e->expires_ms) {
        remove_entry(c, e);
        return NULL;
    }
    lru_unlink(c, e);
    lru_front(c, e);
    return e;
}

void pt_jwt_cache_put(pt_jwt_cache *c, const uint8_t key[PT_JWT_DIGEST_LEN], uint64_t expires_ms,
                      const pt_header *headers, size_t n, size_t max_entries, uint64_t now_ms)
{
    if (expires_ms <= now_ms) return;
    if (max_entries == 0) max_entries = 1;
    if (!c->buckets) c->buckets = pt_xcalloc(NBUCKETS, sizeof(*c->buckets));
    pt_jwt_entry *old = find(c, key);
    if (old) remove_entry(c, old);
    while (c->tail && c->tail->expires_ms <= now_ms) remove_entry(c, c->tail);
    while (c->count >= max_entries && c->tail) remove_entry(c, c->tail);

    size_t bytes = sizeof(pt_jwt_entry) + n * sizeof(pt_header);
    for (size_t i = 0; i < n; i++) bytes += headers[i].name.n + headers[i].value.n + 2;
    pt_jwt_entry *e = pt_xcalloc(1, bytes);
    memcpy(e->key, key, PT_JWT_DIGEST_LEN);
    e->expires_ms = expires_ms;
    e->nheaders = (uint32_t)n;
    e->headers = (pt_header *)(e + 1);
    char *p = (char *)(e->headers + n);
    for (size_t i = 0; i < n; i++) {
        const pt_str src[2] = {headers[i].name, headers[i].value};
        pt_str *dst[2] = {&e->headers[i].name, &e->headers[i].value};
        for (int k = 0; k < 2; k++) {
            if (src[k].n) memcpy(p, src[k].p, src[k].n);
            p[src[k].n] = '\0';
            *dst[k] = pt_str_make(p, src[k].n);
            p += src[k].n + 1;
        }
    }
    size_t b = bucket_of(key);
    e->hnext = c->buckets[b];
    c->buckets[b] = e;
    lru_front(c, e);
    c->count++;
}
