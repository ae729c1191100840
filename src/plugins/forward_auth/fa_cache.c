/* fa_cache.c — forward_auth's positive-result cache: a chained hash table
 * keyed by salted digests, an LRU list for eviction, absolute expiries, and
 * the per-worker store of namespaces (see fa_cache.h). */
#include "plugins/forward_auth/fa_cache.h"

#include <stdlib.h>
#include <sys/random.h>
#include <time.h>

struct pt_fa_cache {
    pt_fa_entry **buckets;       /* allocated by the first put */
    size_t nbuckets;
    size_t count, max_entries;
    pt_fa_entry *head, *tail;    /* LRU: head = most recently used */
    uint64_t latest_expiry;      /* max expires_ms ever stored: all dead once now passes it */
};

typedef struct fa_ns {
    uint8_t fp[PT_FA_DIGEST_LEN];
    uint64_t last_used_ms;       /* last lookup */
    pt_fa_cache *cache;
    struct fa_ns *next;
} fa_ns;

struct pt_fa_store {
    uint8_t salt[PT_FA_SALT_LEN];
    fa_ns *list;
    size_t count;
};

/* The digest is uniformly distributed (SHA-256 of salted input): its first
 * bytes are a fine hash. */
static size_t bucket_of(const pt_fa_cache *c, const uint8_t key[PT_FA_DIGEST_LEN])
{
    uint64_t h;
    memcpy(&h, key, sizeof(h));
    return (size_t)h & (c->nbuckets - 1);
}

pt_fa_cache *pt_fa_cache_new(size_t max_entries)
{
    pt_fa_cache *c = pt_xcalloc(1, sizeof(*c));
    c->max_entries = max_entries ? max_entries : 1;
    return c;
}

void pt_fa_cache_free(pt_fa_cache *c)
{
    if (!c) return;
    for (pt_fa_entry *e = c->head, *n; e; e = n) {
        n = e->next;
        free(e);
    }
    free(c->buckets);
    free(c);
}

size_t pt_fa_cache_count(const pt_fa_cache *c) { return c ? c->count : 0; }

static void lru_unlink(pt_fa_cache *c, pt_fa_entry *e)
{
    if (e->prev) e->prev->next = e->next;
    else c->head = e->next;
    if (e->next) e->next->prev = e->prev;
    else c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_front(pt_fa_cache *c, pt_fa_entry *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head) c->head->prev = e;
    c->head = e;
    if (!c->tail) c->tail = e;
}

/* Unlinks `e` from its chain and the LRU list and frees it. */
static void entry_remove(pt_fa_cache *c, pt_fa_entry *e)
{
    pt_fa_entry **pp = &c->buckets[bucket_of(c, e->key)];
    while (*pp && *pp != e) pp = &(*pp)->hnext;
    if (*pp) *pp = e->hnext;
    lru_unlink(c, e);
    c->count--;
    free(e);
}

static pt_fa_entry *find(const pt_fa_cache *c, const uint8_t key[PT_FA_DIGEST_LEN])
{
    if (!c->buckets) return NULL;
    for (pt_fa_entry *e = c->buckets[bucket_of(c, key)]; e; e = e->hnext)
        if (memcmp(e->key, key, PT_FA_DIGEST_LEN) == 0) return e;
    return NULL;
}

const pt_fa_entry *pt_fa_cache_get(pt_fa_cache *c, const uint8_t key[PT_FA_DIGEST_LEN], uint64_t now_ms)
{
    pt_fa_entry *e = find(c, key);
    if (!e) return NULL;
    if (now_ms >= e->expires_ms) {
        entry_remove(c, e);
        return NULL;
    }
    lru_unlink(c, e);
    lru_push_front(c, e);
    return e;
}

void pt_fa_cache_put(pt_fa_cache *c, const uint8_t key[PT_FA_DIGEST_LEN], uint64_t expires_ms,
                     const pt_header *headers, size_t n, uint64_t now_ms)
{
    if (expires_ms <= now_ms) return;
    if (!c->buckets) {
        size_t nb = 16;
        while (nb < c->max_entries && nb < ((size_t)1 << 20)) nb <<= 1;
        c->buckets = pt_xcalloc(nb, sizeof(*c->buckets));
        c->nbuckets = nb;
    }
    pt_fa_entry *old = find(c, key);
    if (old) entry_remove(c, old);
    /* Make room: expired entries from the cold end first, then the least
     * recently used one. */
    while (c->tail && c->tail->expires_ms <= now_ms) entry_remove(c, c->tail);
    while (c->count >= c->max_entries && c->tail) entry_remove(c, c->tail);

    size_t bytes = sizeof(pt_fa_entry) + n * sizeof(pt_header);
    for (size_t i = 0; i < n; i++) bytes += headers[i].name.n + headers[i].value.n + 2;
    pt_fa_entry *e = pt_xcalloc(1, bytes);
    memcpy(e->key, key, PT_FA_DIGEST_LEN);
    e->expires_ms = expires_ms;
    e->nheaders = (uint32_t)n;
    e->headers = (pt_header *)(e + 1);
    char *p = (char *)(e->headers + n);
    for (size_t i = 0; i < n; i++) {
        const pt_str parts[2] = {headers[i].name, headers[i].value};
        pt_str *dst[2] = {&e->headers[i].name, &e->headers[i].value};
        for (int k = 0; k < 2; k++) {
            if (parts[k].n) memcpy(p, parts[k].p, parts[k].n);
            p[parts[k].n] = '\0';
            *dst[k] = pt_str_make(p, parts[k].n);
            p += parts[k].n + 1;
        }
    }
    size_t b = bucket_of(c, key);
    e->hnext = c->buckets[b];
    c->buckets[b] = e;
    lru_push_front(c, e);
    c->count++;
    if (expires_ms > c->latest_expiry) c->latest_expiry = expires_ms;
}

/* ------------------------------------------------------------------ store */

pt_fa_store *pt_fa_store_new(void)
{
    pt_fa_store *s = pt_xcalloc(1, sizeof(*s));
    size_t got = 0;
    while (got < sizeof(s->salt)) {
        ssize_t r = getrandom(s->salt + got, sizeof(s->salt) - got, 0);
        if (r <= 0) break;
        got += (size_t)r;
    }
    if (got < sizeof(s->salt)) {
        /* No entropy (should not happen after boot): the salt still differs
         * per process and worker, which is all the cache needs to stay
         * correct; it only weakens the hiding of low-entropy keys. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x[3] = {(uint64_t)ts.tv_sec, (uint64_t)ts.tv_nsec, (uint64_t)(uintptr_t)s};
        memcpy(s->salt, x, sizeof(x));
    }
    return s;
}

void pt_fa_store_free(pt_fa_store *s)
{
    if (!s) return;
    for (fa_ns *ns = s->list, *n; ns; ns = n) {
        n = ns->next;
        pt_fa_cache_free(ns->cache);
        free(ns);
    }
    free(s);
}

const uint8_t *pt_fa_store_salt(const pt_fa_store *s) { return s->salt; }

size_t pt_fa_store_count(const pt_fa_store *s) { return s ? s->count : 0; }

pt_fa_cache *pt_fa_store_cache(pt_fa_store *s, const uint8_t fp[PT_FA_DIGEST_LEN], size_t max_entries,
                               uint64_t now_ms)
{
    pt_fa_cache *found = NULL;
    for (fa_ns **pp = &s->list; *pp;) {
        fa_ns *ns = *pp;
        if (memcmp(ns->fp, fp, PT_FA_DIGEST_LEN) == 0) {
            found = ns->cache;
            ns->last_used_ms = now_ms;
            pp = &ns->next;
            continue;
        }
        /* Nothing live left and unused for a while: a configuration gone or idle. */
        if (ns->cache->latest_expiry <= now_ms && ns->last_used_ms + PT_FA_NS_IDLE_MS <= now_ms) {
            *pp = ns->next;
            pt_fa_cache_free(ns->cache);
            free(ns);
            s->count--;
            continue;
        }
        pp = &ns->next;
    }
    if (found) return found;
    fa_ns *ns = pt_xcalloc(1, sizeof(*ns));
    memcpy(ns->fp, fp, PT_FA_DIGEST_LEN);
    ns->last_used_ms = now_ms;
    ns->cache = pt_fa_cache_new(max_entries);
    ns->next = s->list;
    s->list = ns;
    s->count++;
    return ns->cache;
}
