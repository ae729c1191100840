/* cache_store.c — the sharded, byte-bounded LRU store of the cache plugin
 * and its request-collapsing registry (see cache_store.h for the model). */
#include "plugins/cache/cache_store.h"

#include <stdlib.h>
#include <string.h>

#include "plugins/plugin_util.h"

struct pt_cache_fill {
    pt_cache_fill *next;
    uint64_t hash;
    char *key;
    size_t keylen;
    pt_cache_waiter *waiters;
    pt_cache_pending *pending; /* a reference, or NULL */
};

static uint64_t key_hash(const pt_cache_store *s, pt_str key)
{
    return pt_plugin_siphash13(s->k0, s->k1, key.p, key.n);
}

static pt_cache_shard *shard_of(pt_cache_store *s, uint64_t h) { return &s->shards[h % PT_CACHE_SHARDS]; }

/* Bucket index: the hash bits above those that chose the shard. */
static size_t bucket_of(const pt_cache_shard *sh, uint64_t h) { return (size_t)(h >> 8) & (sh->tsize - 1); }

void pt_cache_store_init(pt_cache_store *s, uint64_t max_size, uint64_t max_object)
{
    s->max_size = max_size;
    s->max_object = max_object;
    s->k0 = pt_plugin_rand64();
    s->k1 = pt_plugin_rand64();
    atomic_init(&s->bytes, 0);
    atomic_init(&s->entries, 0);
    atomic_init(&s->evictions, 0);
    atomic_init(&s->purged, 0);
    for (int i = 0; i < PT_CACHE_SHARDS; i++) {
        pthread_mutex_init(&s->shards[i].lock, NULL);
        atomic_init(&s->shards[i].tail_stamp, UINT64_MAX);
    }
}

void pt_cache_store_fini(pt_cache_store *s)
{
    for (int i = 0; i < PT_CACHE_SHARDS; i++) {
        pt_cache_shard *sh = &s->shards[i];
        for (pt_cache_entry *e = sh->lru_head, *n; e; e = n) {
            n = e->next;
            e->linked = false;
            pt_cache_entry_release(e);
        }
        free(sh->table);
        for (pt_cache_fill *f = sh->fills, *n; f; f = n) {
            n = f->next;
            pt_cache_pending_release(f->pending);
            free(f->key);
            free(f);
        }
        pthread_mutex_destroy(&sh->lock);
    }
}

pt_cache_entry *pt_cache_entry_new(const pt_cache_store *s, pt_str key, size_t headlen, size_t bodylen,
                                   size_t tagslen)
{
    size_t size = sizeof(pt_cache_entry) + key.n + 1 + headlen + bodylen + tagslen;
    if (size + PT_CACHE_MALLOC_OVERHEAD > s->max_object) return NULL;
    pt_cache_entry *e = pt_xmalloc(size);
    memset(e, 0, sizeof(*e));
    char *p = (char *)(e + 1);
    e->key = p;
    e->keylen = key.n;
    memcpy(p, key.p, key.n);
    p[key.n] = '\0';
    p += key.n + 1;
    e->head = p;
    e->headlen = headlen;
    e->body = p + headlen;
    e->bodylen = bodylen;
    e->tags = p + headlen + bodylen;
    e->tagslen = tagslen;
    e->charge = size + PT_CACHE_MALLOC_OVERHEAD;
    atomic_init(&e->refs, 1);
    return e;
}

void pt_cache_entry_release(pt_cache_entry *e)
{
    if (e && atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1) free(e);
}

/* ------------------------------------------------------------ shard lists */

static void publish_tail(pt_cache_shard *sh)
{
    atomic_store_explicit(&sh->tail_stamp, sh->lru_tail ? sh->lru_tail->stamp : UINT64_MAX, memory_order_relaxed);
}

static void lru_unlink(pt_cache_shard *sh, pt_cache_entry *e)
{
    if (e->prev) e->prev->next = e->next;
    else sh->lru_head = e->next;
    if (e->next) e->next->prev = e->prev;
    else sh->lru_tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_head(pt_cache_shard *sh, pt_cache_entry *e)
{
    e->prev = NULL;
    e->next = sh->lru_head;
    if (sh->lru_head) sh->lru_head->prev = e;
    sh->lru_head = e;
    if (!sh->lru_tail) sh->lru_tail = e;
}

static pt_cache_entry **find_slot(pt_cache_shard *sh, uint64_t h, pt_str key)
{
    if (!sh->tsize) return NULL;
    pt_cache_entry **pp = &sh->table[bucket_of(sh, h)];
    for (; *pp; pp = &(*pp)->hnext)
        if ((*pp)->hash == h && (*pp)->keylen == key.n && memcmp((*pp)->key, key.p, key.n) == 0) return pp;
    return NULL;
}

/* Unlinks the entry at *pp from the table and the LRU (shard lock held);
 * the caller releases the store's reference after unlocking. */
static pt_cache_entry *unlink_at(pt_cache_store *s, pt_cache_shard *sh, pt_cache_entry **pp)
{
    pt_cache_entry *e = *pp;
    *pp = e->hnext;
    e->hnext = NULL;
    lru_unlink(sh, e);
    e->linked = false;
    sh->count--;
    atomic_fetch_sub(&s->bytes, e->charge);
    atomic_fetch_sub(&s->entries, 1);
    publish_tail(sh);
    return e;
}

static pt_cache_entry **slot_of_entry(pt_cache_shard *sh, const pt_cache_entry *e)
{
    pt_cache_entry **pp = &sh->table[bucket_of(sh, e->hash)];
    while (*pp != e) pp = &(*pp)->hnext;
    return pp;
}

/* Doubles the table when it is fuller than one entry per bucket; the
 * table's bytes are charged to the store. */
static void maybe_grow(pt_cache_store *s, pt_cache_shard *sh)
{
    if (sh->tsize && sh->count < sh->tsize) return;
    size_t nsize = sh->tsize ? sh->tsize * 2 : 64;
    pt_cache_entry **nt = pt_xcalloc(nsize, sizeof(*nt));
    for (size_t i = 0; i < sh->tsize; i++)
        for (pt_cache_entry *e = sh->table[i], *n; e; e = n) {
            n = e->hnext;
            size_t b = (size_t)(e->hash >> 8) & (nsize - 1);
            e->hnext = nt[b];
            nt[b] = e;
        }
    size_t old_bytes = sh->tsize ? sh->tsize * sizeof(*nt) + PT_CACHE_MALLOC_OVERHEAD : 0;
    free(sh->table);
    sh->table = nt;
    sh->tsize = nsize;
    atomic_fetch_add(&s->bytes, nsize * sizeof(*nt) + PT_CACHE_MALLOC_OVERHEAD);
    atomic_fetch_sub(&s->bytes, old_bytes);
}

/* Evicts the tail of the shard whose tail is the coldest; false when every
 * shard is empty. */
static bool evict_one(pt_cache_store *s)
{
    int best = -1;
    uint64_t best_stamp = UINT64_MAX;
    for (int i = 0; i < PT_CACHE_SHARDS; i++) {
        uint64_t t = atomic_load_explicit(&s->shards[i].tail_stamp, memory_order_relaxed);
        if (t < best_stamp) best = i, best_stamp = t;
    }
    if (best < 0) return false;
    pt_cache_shard *sh = &s->shards[best];
    pthread_mutex_lock(&sh->lock);
    pt_cache_entry *e = sh->lru_tail ? unlink_at(s, sh, slot_of_entry(sh, sh->lru_tail)) : NULL;
    pthread_mutex_unlock(&sh->lock);
    if (!e) return true; /* emptied meanwhile: look again */
    atomic_fetch_add(&s->evictions, 1);
    pt_cache_entry_release(e);
    return true;
}

void pt_cache_store_put(pt_cache_store *s, pt_cache_entry *e, uint64_t now)
{
    e->hash = key_hash(s, pt_str_make(e->key, e->keylen));
    e->stamp = now;
    pt_cache_shard *sh = shard_of(s, e->hash);
    atomic_fetch_add(&e->refs, 1); /* the store's */
    pthread_mutex_lock(&sh->lock);
    pt_cache_entry **pp = find_slot(sh, e->hash, pt_str_make(e->key, e->keylen));
    pt_cache_entry *old = pp ? unlink_at(s, sh, pp) : NULL;
    maybe_grow(s, sh);
    size_t b = bucket_of(sh, e->hash);
    e->hnext = sh->table[b];
    sh->table[b] = e;
    lru_push_head(sh, e);
    e->linked = true;
    sh->count++;
    atomic_fetch_add(&s->bytes, e->charge);
    atomic_fetch_add(&s->entries, 1);
    publish_tail(sh);
    pthread_mutex_unlock(&sh->lock);
    pt_cache_entry_release(old);
    int guard = 0;
    while (atomic_load(&s->bytes) > s->max_size && guard++ < 1 << 20)
        if (!evict_one(s)) break;
}

pt_cache_entry *pt_cache_store_get(pt_cache_store *s, pt_str key, uint64_t now)
{
    uint64_t h = key_hash(s, key);
    pt_cache_shard *sh = shard_of(s, h);
    pthread_mutex_lock(&sh->lock);
    pt_cache_entry **pp = find_slot(sh, h, key);
    pt_cache_entry *e = pp ? *pp : NULL;
    if (e) {
        atomic_fetch_add(&e->refs, 1);
        if (sh->lru_head != e) {
            lru_unlink(sh, e);
            lru_push_head(sh, e);
        }
        e->stamp = now > e->stamp ? now : e->stamp;
        publish_tail(sh);
    }
    pthread_mutex_unlock(&sh->lock);
    return e;
}

void pt_cache_store_remove(pt_cache_store *s, pt_str key, const pt_cache_entry *e)
{
    uint64_t h = key_hash(s, key);
    pt_cache_shard *sh = shard_of(s, h);
    pthread_mutex_lock(&sh->lock);
    pt_cache_entry **pp = find_slot(sh, h, key);
    pt_cache_entry *gone = pp && *pp == e ? unlink_at(s, sh, pp) : NULL;
    pthread_mutex_unlock(&sh->lock);
    pt_cache_entry_release(gone);
}

/* Whether the tag list `tags` (separated by commas and/or spaces) names `tag`. */
static bool tags_have(const char *tags, size_t n, pt_str tag)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (tags[i] == ',' || tags[i] == ' ' || tags[i] == '\t')) i++;
        size_t start = i;
        while (i < n && tags[i] != ',' && tags[i] != ' ' && tags[i] != '\t') i++;
        if (i > start && i - start == tag.n && memcmp(tags + start, tag.p, tag.n) == 0) return true;
    }
    return false;
}

static bool purge_match(const pt_cache_entry *e, pt_cache_purge_mode mode, pt_str arg)
{
    switch (mode) {
    case PT_CACHE_PURGE_KEY: /* (an empty argument has no bytes to compare: never memcmp NULL) */
        return e->keylen >= arg.n && (arg.n == 0 || memcmp(e->key, arg.p, arg.n) == 0) &&
               (e->keylen == arg.n || e->key[arg.n] == '\n');
    case PT_CACHE_PURGE_PREFIX:
        return e->keylen >= arg.n && (arg.n == 0 || memcmp(e->key, arg.p, arg.n) == 0);
    case PT_CACHE_PURGE_TAG:
        return tags_have(e->tags, e->tagslen, arg);
    }
    return false;
}

size_t pt_cache_store_purge(pt_cache_store *s, pt_cache_purge_mode mode, pt_str arg)
{
    size_t n = 0;
    for (int i = 0; i < PT_CACHE_SHARDS; i++) {
        pt_cache_shard *sh = &s->shards[i];
        pt_cache_entry *gone = NULL;
        pthread_mutex_lock(&sh->lock);
        for (size_t b = 0; b < sh->tsize; b++) {
            pt_cache_entry **pp = &sh->table[b];
            while (*pp) {
                if (!purge_match(*pp, mode, arg)) {
                    pp = &(*pp)->hnext;
                    continue;
                }
                pt_cache_entry *e = unlink_at(s, sh, pp);
                e->hnext = gone; /* a private list, released after unlocking */
                gone = e;
                n++;
            }
        }
        pthread_mutex_unlock(&sh->lock);
        for (pt_cache_entry *e = gone, *nx; e; e = nx) {
            nx = e->hnext;
            pt_cache_entry_release(e);
        }
    }
    atomic_fetch_add(&s->purged, n);
    return n;
}

/* ---------------------------------------------------------- collapsing */

static pt_cache_fill **fill_find(pt_cache_shard *sh, uint64_t h, pt_str key)
{
    pt_cache_fill **pp = &sh->fills;
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->hash == h && (*pp)->keylen == key.n && memcmp((*pp)->key, key.p, key.n) == 0) return pp;
    return NULL;
}

bool pt_cache_fill_join(pt_cache_store *s, pt_str key, pt_cache_waiter *w, pt_cache_pending **pending)
{
    uint64_t h = key_hash(s, key);
    pt_cache_shard *sh = shard_of(s, h);
    if (pending) *pending = NULL;
    pthread_mutex_lock(&sh->lock);
    pt_cache_fill **pp = fill_find(sh, h, key);
    if (pp && (*pp)->pending && pending) {
        *pending = (*pp)->pending;
        atomic_fetch_add(&(*pending)->refs, 1);
        pthread_mutex_unlock(&sh->lock);
        return false;
    }
    if (pp && !w) {
        pthread_mutex_unlock(&sh->lock);
        return false;
    }
    if (pp) {
        w->next = (*pp)->waiters;
        (*pp)->waiters = w;
        pthread_mutex_unlock(&sh->lock);
        return false;
    }
    pt_cache_fill *f = pt_xcalloc(1, sizeof(*f));
    f->hash = h;
    f->key = pt_xstrndup(key.p, key.n);
    f->keylen = key.n;
    f->next = sh->fills;
    sh->fills = f;
    pthread_mutex_unlock(&sh->lock);
    return true;
}

void pt_cache_fill_end(pt_cache_store *s, pt_str key)
{
    uint64_t h = key_hash(s, key);
    pt_cache_shard *sh = shard_of(s, h);
    pthread_mutex_lock(&sh->lock);
    pt_cache_fill **pp = fill_find(sh, h, key);
    pt_cache_fill *f = pp ? *pp : NULL;
    if (f) *pp = f->next;
    pthread_mutex_unlock(&sh->lock);
    if (!f) return;
    for (pt_cache_waiter *w = f->waiters, *n; w; w = n) {
        n = w->next;
        w->wake(w);
    }
    pt_cache_pending_release(f->pending);
    free(f->key);
    free(f);
}

void pt_cache_fill_publish(pt_cache_store *s, pt_str key, pt_cache_pending *p)
{
    uint64_t h = key_hash(s, key);
    pt_cache_shard *sh = shard_of(s, h);
    pthread_mutex_lock(&sh->lock);
    pt_cache_fill **pp = fill_find(sh, h, key);
    pt_cache_waiter *ws = NULL;
    if (pp && !(*pp)->pending) {
        (*pp)->pending = p;
        atomic_fetch_add(&p->refs, 1);
        ws = (*pp)->waiters;
        (*pp)->waiters = NULL;
    }
    pthread_mutex_unlock(&sh->lock);
    for (pt_cache_waiter *n; ws; ws = n) {
        n = ws->next;
        ws->wake(ws);
    }
}

/* ------------------------------------------------------ pending responses */

pt_cache_pending *pt_cache_pending_new(pt_str head, int status, size_t size)
{
    pt_cache_pending *p = pt_xcalloc(1, sizeof(*p));
    atomic_init(&p->refs, 1);
    pthread_mutex_init(&p->lock, NULL);
    p->status = status;
    p->head = pt_xstrndup(head.p, head.n);
    p->headlen = head.n;
    p->body = pt_xmalloc(size ? size : 1);
    p->size = size;
    atomic_init(&p->len, 0);
    atomic_init(&p->state, PT_PENDING_STREAMING);
    return p;
}

void pt_cache_pending_release(pt_cache_pending *p)
{
    if (!p || atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1) return;
    pthread_mutex_destroy(&p->lock);
    free(p->head);
    free(p->body);
    free(p);
}

/* Wakes the registered readers (outside the lock). */
static void pending_notify(pt_cache_pending *p)
{
    pthread_mutex_lock(&p->lock);
    pt_cache_waiter *ws = p->readers;
    p->readers = NULL;
    pthread_mutex_unlock(&p->lock);
    for (pt_cache_waiter *n; ws; ws = n) {
        n = ws->next;
        ws->wake(ws);
    }
}

void pt_cache_pending_append(pt_cache_pending *p, const char *data, size_t n)
{
    size_t len = atomic_load_explicit(&p->len, memory_order_relaxed);
    if (n > p->size - len) n = p->size - len;
    if (n == 0) return;
    memcpy(p->body + len, data, n);
    atomic_store_explicit(&p->len, len + n, memory_order_release);
    pending_notify(p);
}

void pt_cache_pending_end(pt_cache_pending *p, bool complete)
{
    if (atomic_load(&p->state) != PT_PENDING_STREAMING) return;
    bool whole = atomic_load(&p->len) == p->size;
    atomic_store_explicit(&p->state, complete && whole ? PT_PENDING_COMPLETE : PT_PENDING_FAILED,
                          memory_order_release);
    pending_notify(p);
}

bool pt_cache_pending_wait(pt_cache_pending *p, size_t off, pt_cache_waiter *w)
{
    pthread_mutex_lock(&p->lock);
    bool wait = atomic_load_explicit(&p->state, memory_order_acquire) == PT_PENDING_STREAMING &&
                atomic_load_explicit(&p->len, memory_order_acquire) <= off;
    if (wait) {
        w->next = p->readers;
        p->readers = w;
    }
    pthread_mutex_unlock(&p->lock);
    return wait;
}

bool pt_cache_pending_unwait(pt_cache_pending *p, pt_cache_waiter *w)
{
    bool found = false;
    pthread_mutex_lock(&p->lock);
    for (pt_cache_waiter **pp = &p->readers; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            found = true;
            break;
        }
    pthread_mutex_unlock(&p->lock);
    return found;
}

bool pt_cache_fill_leave(pt_cache_store *s, pt_str key, pt_cache_waiter *w)
{
    uint64_t h = key_hash(s, key);
    pt_cache_shard *sh = shard_of(s, h);
    bool found = false;
    pthread_mutex_lock(&sh->lock);
    pt_cache_fill **fp = fill_find(sh, h, key);
    if (fp)
        for (pt_cache_waiter **pp = &(*fp)->waiters; *pp; pp = &(*pp)->next)
            if (*pp == w) {
                *pp = w->next;
                found = true;
                break;
            }
    pthread_mutex_unlock(&sh->lock);
    return found;
}
