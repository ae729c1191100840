/* digest_cache.c — the plugin API's digest cache: a chained hash table over
 * salted digests, one LRU list per class with its own bound, absolute
 * expiries, and the per-worker store of caches by fingerprint (see
 * digest_cache.h). */
#include "plugin/digest_cache.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>

typedef struct dc_entry {
    uint8_t key[PT_DIGEST_LEN];
    uint64_t expires;
    struct dc_entry *hnext;       /* hash chain */
    struct dc_entry *prev, *next; /* LRU list of its class, most recent first */
    size_t len;
    uint8_t cls;
    alignas(max_align_t) unsigned char blob[]; /* the value */
} dc_entry;

typedef struct {
    dc_entry *head, *tail; /* head = most recently used */
    size_t count, max;
} dc_lru;

struct pt_digest_cache {
    uint8_t salt[PT_DIGEST_SALT_LEN];
    EVP_MD_CTX *kctx; /* reused by every pt_digest_cache_key (one thread) */
    dc_entry **table; /* allocated by the first put */
    size_t mask;
    dc_lru lru[2];    /* indexed by pt_digest_class */
    uint64_t latest;  /* latest expiry ever stored */
};

typedef struct dc_ns {
    uint8_t fp[PT_DIGEST_LEN];
    uint64_t used;
    pt_digest_cache *cache;
    struct dc_ns *next;
} dc_ns;

struct pt_digest_store {
    dc_ns *list;
    size_t count;
};

/* A fresh random salt. Without entropy (should not happen after boot) a
 * salt unique to this process, cache and moment keeps the cache correct;
 * only the hiding of low-entropy keys is weaker. */
static void new_salt(uint8_t salt[PT_DIGEST_SALT_LEN], const void *self)
{
    size_t got = 0;
    while (got < PT_DIGEST_SALT_LEN) {
        ssize_t r = getrandom(salt + got, PT_DIGEST_SALT_LEN - got, 0);
        if (r <= 0) break;
        got += (size_t)r;
    }
    if (got < PT_DIGEST_SALT_LEN) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x[3] = {(uint64_t)ts.tv_sec, (uint64_t)ts.tv_nsec, (uint64_t)(uintptr_t)self};
        memcpy(salt, x, sizeof(x));
    }
}

/* Salted SHA-256 digests are uniform: their first bytes are a fine hash. */
static size_t slot(const pt_digest_cache *c, const uint8_t key[PT_DIGEST_LEN])
{
    uint64_t h;
    memcpy(&h, key, sizeof(h));
    return (size_t)h & c->mask;
}

/* SHA-256 fetched once per process: an implicit fetch (EVP_sha256() in
 * EVP_DigestInit_ex) looks the provider up again on every key, and a new
 * context per key allocates; on a cached-credential path (a jwt cache hit)
 * that bookkeeping cost more than hashing the token. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void fetch_sha256(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA2-256", NULL);
    if (!sha256_md) pt_panic(__FILE__, __LINE__, "SHA-256 is not available");
}

pt_digest_cache *pt_digest_cache_new(size_t max_positive, size_t max_negative)
{
    pthread_once(&sha256_once, fetch_sha256);
    pt_digest_cache *c = pt_xcalloc(1, sizeof(*c));
    c->kctx = EVP_MD_CTX_new();
    if (!c->kctx) pt_panic(__FILE__, __LINE__, "out of memory");
    new_salt(c->salt, c);
    c->lru[PT_DIGEST_POSITIVE].max = max_positive ? max_positive : 1;
    c->lru[PT_DIGEST_NEGATIVE].max = max_negative ? max_negative : 1;
    return c;
}

void pt_digest_cache_free(pt_digest_cache *c)
{
    if (!c) return;
    for (int k = 0; k < 2; k++)
        for (dc_entry *e = c->lru[k].head, *nx; e; e = nx) {
            nx = e->next;
            free(e);
        }
    free(c->table);
    EVP_MD_CTX_free(c->kctx);
    explicit_bzero(c->salt, sizeof(c->salt));
    free(c);
}

void pt_digest_cache_set_max(pt_digest_cache *c, pt_digest_class cls, size_t max_entries)
{
    c->lru[cls].max = max_entries ? max_entries : 1;
}

const uint8_t *pt_digest_cache_salt(const pt_digest_cache *c) { return c->salt; }

size_t pt_digest_cache_count(const pt_digest_cache *c, pt_digest_class cls) { return c ? c->lru[cls].count : 0; }

uint64_t pt_digest_cache_latest(const pt_digest_cache *c) { return c->latest; }

void pt_digest_cache_key(const pt_digest_cache *c, const pt_str *parts, size_t n, uint8_t out[PT_DIGEST_LEN])
{
    EVP_MD_CTX *m = c->kctx;
    unsigned int len = 0;
    bool ok = EVP_DigestInit_ex2(m, sha256_md, NULL) == 1 && EVP_DigestUpdate(m, c->salt, sizeof(c->salt)) == 1;
    for (size_t i = 0; ok && i < n; i++)
        if (parts[i].n) ok = EVP_DigestUpdate(m, parts[i].p, parts[i].n) == 1;
    ok = ok && EVP_DigestFinal_ex(m, out, &len) == 1 && len == PT_DIGEST_LEN;
    PT_ASSERT(ok); /* SHA-256 cannot fail short of memory exhaustion */
}

static void lru_del(dc_lru *l, dc_entry *e)
{
    if (e->prev) e->prev->next = e->next;
    else l->head = e->next;
    if (e->next) e->next->prev = e->prev;
    else l->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_front(dc_lru *l, dc_entry *e)
{
    e->prev = NULL;
    e->next = l->head;
    if (l->head) l->head->prev = e;
    l->head = e;
    if (!l->tail) l->tail = e;
}

/* Takes `e` out of the table and its list, and frees it. */
static void drop(pt_digest_cache *c, dc_entry *e)
{
    for (dc_entry **pp = &c->table[slot(c, e->key)]; *pp; pp = &(*pp)->hnext)
        if (*pp == e) {
            *pp = e->hnext;
            break;
        }
    dc_lru *l = &c->lru[e->cls];
    lru_del(l, e);
    l->count--;
    free(e);
}

static dc_entry *lookup(const pt_digest_cache *c, const uint8_t key[PT_DIGEST_LEN])
{
    if (!c->table) return NULL;
    for (dc_entry *e = c->table[slot(c, key)]; e; e = e->hnext)
        if (memcmp(e->key, key, PT_DIGEST_LEN) == 0) return e;
    return NULL;
}

const void *pt_digest_cache_get(pt_digest_cache *c, const uint8_t key[PT_DIGEST_LEN], uint64_t now, size_t *len,
                                pt_digest_class *cls)
{
    dc_entry *e = lookup(c, key);
    if (!e) return NULL;
    if (now >= e->expires) {
        drop(c, e);
        return NULL;
    }
    lru_del(&c->lru[e->cls], e);
    lru_front(&c->lru[e->cls], e);
    if (len) *len = e->len;
    if (cls) *cls = (pt_digest_class)e->cls;
    return e->blob;
}

void pt_digest_cache_remove(pt_digest_cache *c, const uint8_t key[PT_DIGEST_LEN])
{
    dc_entry *e = lookup(c, key);
    if (e) drop(c, e);
}

void *pt_digest_cache_put(pt_digest_cache *c, const uint8_t key[PT_DIGEST_LEN], pt_digest_class cls, uint64_t expires,
                          const void *blob, size_t len, uint64_t now)
{
    if (expires <= now) return NULL;
    if (!c->table) {
        size_t want = c->lru[0].max + c->lru[1].max, size = 16;
        while (size < want && size < ((size_t)1 << 20)) size <<= 1;
        c->table = pt_xcalloc(size, sizeof(*c->table));
        c->mask = size - 1;
    }
    dc_entry *old = lookup(c, key);
    if (old) drop(c, old);
    dc_lru *l = &c->lru[cls];
    while (l->tail && l->tail->expires <= now) drop(c, l->tail); /* dead ones first */
    while (l->count >= l->max && l->tail) drop(c, l->tail);

    dc_entry *e = pt_xcalloc(1, sizeof(*e) + len);
    memcpy(e->key, key, PT_DIGEST_LEN);
    e->expires = expires;
    e->cls = (uint8_t)cls;
    e->len = len;
    if (blob && len) memcpy(e->blob, blob, len);
    size_t s = slot(c, key);
    e->hnext = c->table[s];
    c->table[s] = e;
    lru_front(l, e);
    l->count++;
    if (expires > c->latest) c->latest = expires;
    return e->blob;
}

/* ------------------------------------------------------------ blob layout */

#define PTR_ALIGN (sizeof(void *) - 1)

static char *align_p(char *p) { return (char *)(((uintptr_t)p + PTR_ALIGN) & ~(uintptr_t)PTR_ALIGN); }

size_t pt_digest_blob_str_size(pt_str s) { return s.n + 1; }

size_t pt_digest_blob_strs_size(const pt_str *v, size_t n)
{
    size_t b = PTR_ALIGN + n * sizeof(pt_str);
    for (size_t i = 0; i < n; i++) b += v[i].n + 1;
    return b;
}

size_t pt_digest_blob_headers_size(const pt_header *v, size_t n)
{
    size_t b = PTR_ALIGN + n * sizeof(pt_header);
    for (size_t i = 0; i < n; i++) b += v[i].name.n + v[i].value.n + 2;
    return b;
}

pt_str pt_digest_blob_str(char **p, pt_str s)
{
    char *d = *p;
    if (s.n) memcpy(d, s.p, s.n);
    d[s.n] = '\0';
    *p += s.n + 1;
    return pt_str_make(d, s.n);
}

pt_str *pt_digest_blob_strs(char **p, const pt_str *v, size_t n)
{
    pt_str *out = (pt_str *)align_p(*p);
    *p = (char *)(out + n);
    for (size_t i = 0; i < n; i++) out[i] = pt_digest_blob_str(p, v[i]);
    return out;
}

pt_header *pt_digest_blob_headers(char **p, const pt_header *v, size_t n)
{
    pt_header *out = (pt_header *)align_p(*p);
    *p = (char *)(out + n);
    for (size_t i = 0; i < n; i++) {
        out[i].name = pt_digest_blob_str(p, v[i].name);
        out[i].value = pt_digest_blob_str(p, v[i].value);
    }
    return out;
}

/* ------------------------------------------------------------------ store */

pt_digest_store *pt_digest_store_new(void) { return pt_xcalloc(1, sizeof(pt_digest_store)); }

void pt_digest_store_free(pt_digest_store *s)
{
    if (!s) return;
    for (dc_ns *ns = s->list, *nx; ns; ns = nx) {
        nx = ns->next;
        pt_digest_cache_free(ns->cache);
        free(ns);
    }
    free(s);
}

size_t pt_digest_store_count(const pt_digest_store *s) { return s ? s->count : 0; }

pt_digest_cache *pt_digest_store_cache(pt_digest_store *s, const uint8_t fp[PT_DIGEST_LEN], size_t max_positive,
                                       size_t max_negative, uint64_t now)
{
    pt_digest_cache *hit = NULL;
    dc_ns **pp = &s->list;
    while (*pp) {
        dc_ns *ns = *pp;
        if (memcmp(ns->fp, fp, PT_DIGEST_LEN) == 0) {
            ns->used = now;
            hit = ns->cache;
        } else if (ns->cache->latest <= now && ns->used + PT_DIGEST_NS_IDLE_MS <= now) {
            *pp = ns->next; /* a configuration gone, or idle with nothing alive */
            pt_digest_cache_free(ns->cache);
            free(ns);
            s->count--;
            continue;
        }
        pp = &ns->next;
    }
    if (hit) return hit;
    dc_ns *ns = pt_xcalloc(1, sizeof(*ns));
    memcpy(ns->fp, fp, PT_DIGEST_LEN);
    ns->used = now;
    ns->cache = pt_digest_cache_new(max_positive, max_negative);
    ns->next = s->list;
    s->list = ns;
    s->count++;
    return ns->cache;
}
