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

/* Bytes a copy of strs[0, n) needs (each NUL-terminated). */
static size_t strs_size(const pt_str *v, uint32_t n)
{
    size_t b = n * sizeof(pt_str);
    for (uint32_t i = 0; i < n; i++) b += v[i].n + 1;
    return b;
}

/* Copies s to *p (NUL-terminated), advancing *p. */
static pt_str copy_str(char **p, pt_str s)
{
    char *d = *p;
    if (s.n) memcpy(d, s.p, s.n);
    d[s.n] = '\0';
    *p += s.n + 1;
    return pt_str_make(d, s.n);
}

/* Copies strs[0, n): the array at *p, then the bytes. */
static const pt_str *copy_strs(char **p, const pt_str *v, uint32_t n)
{
    pt_str *out = (pt_str *)*p;
    *p += n * sizeof(pt_str);
    for (uint32_t i = 0; i < n; i++) out[i] = copy_str(p, v[i]);
    return out;
}

/* Copies headers[0, n): the array at *p, then the bytes. */
static const pt_header *copy_headers(char **p, const pt_header *v, uint32_t n)
{
    pt_header *out = (pt_header *)*p;
    *p += n * sizeof(pt_header);
    for (uint32_t i = 0; i < n; i++) {
        out[i].name = copy_str(p, v[i].name);
        out[i].value = copy_str(p, v[i].value);
    }
    return out;
}

static size_t headers_size(const pt_header *v, uint32_t n)
{
    size_t b = n * sizeof(pt_header);
    for (uint32_t i = 0; i < n; i++) b += v[i].name.n + v[i].value.n + 2;
    return b;
}

void pt_jwt_cache_put(pt_jwt_cache *c, const uint8_t key[PT_JWT_DIGEST_LEN], uint64_t expires_ms,
                      const pt_jwt_ident *id, size_t max_entries, uint64_t now_ms)
{
    if (expires_ms <= now_ms) return;
    if (max_entries == 0) max_entries = 1;
    if (!c->buckets) c->buckets = pt_xcalloc(NBUCKETS, sizeof(*c->buckets));
    pt_jwt_entry *old = find(c, key);
    if (old) remove_entry(c, old);
    while (c->tail && c->tail->expires_ms <= now_ms) remove_entry(c, c->tail);
    while (c->count >= max_entries && c->tail) remove_entry(c, c->tail);

    static const pt_jwt_ident none;
    if (!id) id = &none;
    /* pt_str and pt_header arrays first (pointer-aligned), then bytes: each
     * copy_* call places its array right after the previous bytes, so round
     * every array up to pointer alignment. */
    size_t align = sizeof(void *) - 1;
    size_t bytes = sizeof(pt_jwt_entry) + id->consumer.n + 1 + 4 * align + strs_size(id->groups, id->ngroups) +
                   strs_size(id->scopes, id->nscopes) + headers_size(id->claims, id->nclaims) +
                   headers_size(id->headers, id->nheaders);
    pt_jwt_entry *e = pt_xcalloc(1, bytes);
    memcpy(e->key, key, PT_JWT_DIGEST_LEN);
    e->expires_ms = expires_ms;
    char *p = (char *)(e + 1);
#define ALIGN_P() (p = (char *)(((uintptr_t)p + align) & ~(uintptr_t)align))
    ALIGN_P();
    e->id.groups = copy_strs(&p, id->groups, id->ngroups);
    e->id.ngroups = id->ngroups;
    ALIGN_P();
    e->id.scopes = copy_strs(&p, id->scopes, id->nscopes);
    e->id.nscopes = id->nscopes;
    ALIGN_P();
    e->id.claims = copy_headers(&p, id->claims, id->nclaims);
    e->id.nclaims = id->nclaims;
    ALIGN_P();
    e->id.headers = copy_headers(&p, id->headers, id->nheaders);
    e->id.nheaders = id->nheaders;
#undef ALIGN_P
    e->id.consumer = copy_str(&p, id->consumer);
    PT_ASSERT((size_t)(p - (char *)e) <= bytes);
    size_t b = bucket_of(key);
    e->hnext = c->buckets[b];
    c->buckets[b] = e;
    lru_front(c, e);
    c->count++;
}
