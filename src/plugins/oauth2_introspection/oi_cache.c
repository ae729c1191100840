/* oi_cache.c — oauth2_introspection's answer cache: a chained hash table
 * over salted token digests, one LRU list per kind (positive / negative)
 * with its own bound, absolute wall-clock deadlines, and the per-worker
 * store of namespaces (see oi_cache.h). */
#include "plugins/oauth2_introspection/oi_cache.h"

#include <stdlib.h>
#include <sys/random.h>
#include <time.h>

/* One LRU list with its bound. */
typedef struct {
    pt_oi_entry *head, *tail; /* head = most recently used */
    size_t count, max;
} oi_lru;

struct pt_oi_cache {
    pt_oi_entry **table;      /* allocated by the first put */
    size_t mask;
    oi_lru kinds[2];          /* [0] negative, [1] positive */
    uint64_t last_keep;       /* latest keep_until ever stored: all dead once now passes it */
};

typedef struct oi_ns {
    uint8_t fp[PT_OI_DIGEST_LEN];
    uint64_t used_ms;
    pt_oi_cache *cache;
    struct oi_ns *next;
} oi_ns;

struct pt_oi_store {
    uint8_t salt[PT_OI_SALT_LEN];
    oi_ns *list;
    size_t count;
};

/* Salted SHA-256 digests are uniform: their first bytes index the table. */
static size_t slot(const pt_oi_cache *c, const uint8_t key[PT_OI_DIGEST_LEN])
{
    uint64_t h;
    memcpy(&h, key + 8, sizeof(h));
    return (size_t)h & c->mask;
}

pt_oi_cache *pt_oi_cache_new(size_t max_active, size_t max_inactive)
{
    pt_oi_cache *c = pt_xcalloc(1, sizeof(*c));
    c->kinds[1].max = max_active ? max_active : 1;
    c->kinds[0].max = max_inactive ? max_inactive : 1;
    return c;
}

void pt_oi_cache_free(pt_oi_cache *c)
{
    if (!c) return;
    for (int k = 0; k < 2; k++)
        for (pt_oi_entry *e = c->kinds[k].head, *nx; e; e = nx) {
            nx = e->next;
            free(e);
        }
    free(c->table);
    free(c);
}

size_t pt_oi_cache_count(const pt_oi_cache *c, bool active) { return c ? c->kinds[active].count : 0; }

static void lru_del(oi_lru *l, pt_oi_entry *e)
{
    if (e->prev) e->prev->next = e->next;
    else l->head = e->next;
    if (e->next) e->next->prev = e->prev;
    else l->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_front(oi_lru *l, pt_oi_entry *e)
{
    e->prev = NULL;
    e->next = l->head;
    if (l->head) l->head->prev = e;
    l->head = e;
    if (!l->tail) l->tail = e;
}

/* Takes `e` out of the table and its list, and frees it. */
static void drop(pt_oi_cache *c, pt_oi_entry *e)
{
    for (pt_oi_entry **pp = &c->table[slot(c, e->key)]; *pp; pp = &(*pp)->hnext)
        if (*pp == e) {
            *pp = e->hnext;
            break;
        }
    oi_lru *l = &c->kinds[e->active];
    lru_del(l, e);
    l->count--;
    free(e);
}

static pt_oi_entry *lookup(const pt_oi_cache *c, const uint8_t key[PT_OI_DIGEST_LEN])
{
    if (!c->table) return NULL;
    for (pt_oi_entry *e = c->table[slot(c, key)]; e; e = e->hnext)
        if (memcmp(e->key, key, PT_OI_DIGEST_LEN) == 0) return e;
    return NULL;
}

const pt_oi_entry *pt_oi_cache_get(pt_oi_cache *c, const uint8_t key[PT_OI_DIGEST_LEN], uint64_t now_ms)
{
    pt_oi_entry *e = lookup(c, key);
    if (!e) return NULL;
    if (now_ms >= e->keep_until) {
        drop(c, e);
        return NULL;
    }
    lru_del(&c->kinds[e->active], e);
    lru_front(&c->kinds[e->active], e);
    return e;
}

/* Copies s into *p as a NUL-terminated string; returns the copy. */
static pt_str put_str(char **p, pt_str s)
{
    char *d = *p;
    if (s.n) memcpy(d, s.p, s.n);
    d[s.n] = '\0';
    *p += s.n + 1;
    return pt_str_make(d, s.n);
}

void pt_oi_cache_put(pt_oi_cache *c, const uint8_t key[PT_OI_DIGEST_LEN], bool active, uint64_t fresh_until,
                     uint64_t keep_until, pt_str consumer, const pt_header *claims, size_t n, uint64_t now_ms)
{
    if (keep_until <= now_ms) return;
    if (fresh_until > keep_until) fresh_until = keep_until;
    if (!c->table) {
        size_t want = c->kinds[0].max + c->kinds[1].max, size = 16;
        while (size < want && size < ((size_t)1 << 20)) size <<= 1;
        c->table = pt_xcalloc(size, sizeof(*c->table));
        c->mask = size - 1;
    }
    pt_oi_entry *old = lookup(c, key);
    if (old) drop(c, old);
    oi_lru *l = &c->kinds[active];
    while (l->tail && l->tail->keep_until <= now_ms) drop(c, l->tail); /* dead ones first */
    while (l->count >= l->max && l->tail) drop(c, l->tail);

    if (!active) consumer = PT_STR_NULL, n = 0;
    size_t bytes = sizeof(pt_oi_entry) + n * sizeof(pt_header) + consumer.n + 1;
    for (size_t i = 0; i < n; i++) bytes += claims[i].name.n + claims[i].value.n + 2;
    pt_oi_entry *e = pt_xcalloc(1, bytes);
    memcpy(e->key, key, PT_OI_DIGEST_LEN);
    e->active = active;
    e->fresh_until = fresh_until;
    e->keep_until = keep_until;
    e->claims = (pt_header *)(e + 1);
    e->nclaims = (uint32_t)n;
    char *p = (char *)(e->claims + n);
    e->consumer = put_str(&p, consumer);
    for (size_t i = 0; i < n; i++) {
        e->claims[i].name = put_str(&p, claims[i].name);
        e->claims[i].value = put_str(&p, claims[i].value);
    }
    size_t s = slot(c, key);
    e->hnext = c->table[s];
    c->table[s] = e;
    lru_front(l, e);
    l->count++;
    if (keep_until > c->last_keep) c->last_keep = keep_until;
}

/* ------------------------------------------------------------------ store */

pt_oi_store *pt_oi_store_new(void)
{
    pt_oi_store *s = pt_xcalloc(1, sizeof(*s));
    size_t got = 0;
    while (got < sizeof(s->salt)) {
        ssize_t r = getrandom(s->salt + got, sizeof(s->salt) - got, 0);
        if (r <= 0) break;
        got += (size_t)r;
    }
    if (got < sizeof(s->salt)) {
        /* No entropy yet: a salt unique to this process and worker keeps the
         * cache correct; only the hiding of short tokens is weaker. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t mix[3] = {(uint64_t)ts.tv_nsec, (uint64_t)ts.tv_sec, (uint64_t)(uintptr_t)s};
        memcpy(s->salt + 8, mix, sizeof(mix));
    }
    return s;
}

void pt_oi_store_free(pt_oi_store *s)
{
    if (!s) return;
    for (oi_ns *ns = s->list, *nx; ns; ns = nx) {
        nx = ns->next;
        pt_oi_cache_free(ns->cache);
        free(ns);
    }
    free(s);
}

const uint8_t *pt_oi_store_salt(const pt_oi_store *s) { return s->salt; }

size_t pt_oi_store_count(const pt_oi_store *s) { return s ? s->count : 0; }

pt_oi_cache *pt_oi_store_cache(pt_oi_store *s, const uint8_t fp[PT_OI_DIGEST_LEN], size_t max_active,
                               size_t max_inactive, uint64_t now_ms)
{
    pt_oi_cache *hit = NULL;
    oi_ns **pp = &s->list;
    while (*pp) {
        oi_ns *ns = *pp;
        if (memcmp(ns->fp, fp, PT_OI_DIGEST_LEN) == 0) {
            ns->used_ms = now_ms;
            hit = ns->cache;
        } else if (ns->cache->last_keep <= now_ms && ns->used_ms + PT_OI_NS_IDLE_MS <= now_ms) {
            *pp = ns->next; /* a configuration gone, or idle with nothing alive */
            pt_oi_cache_free(ns->cache);
            free(ns);
            s->count--;
            continue;
        }
        pp = &ns->next;
    }
    if (hit) return hit;
    oi_ns *ns = pt_xcalloc(1, sizeof(*ns));
    memcpy(ns->fp, fp, PT_OI_DIGEST_LEN);
    ns->used_ms = now_ms;
    ns->cache = pt_oi_cache_new(max_active, max_inactive);
    ns->next = s->list;
    s->list = ns;
    s->count++;
    return ns->cache;
}
