/* cache_store.h — the cache plugin's memory store: one per process and set
 * of store settings, shared by every worker and kept across reloads
 * (pt_conf_shared_ex), bounded in bytes with LRU eviction.
 *
 * Concurrency: PT_CACHE_SHARDS shards, each an exact LRU list and hash
 * table under its own mutex, chosen by a keyed hash of the key. A hit takes
 * one shard lock for a lookup, a move to the LRU head and a reference, and
 * serves the body after dropping it: entries are immutable once stored and
 * reference-counted, so readers never hold a lock while writing to a
 * client. The byte budget is process-wide (an atomic counter); an insert
 * that takes the store over it evicts the globally coldest shard tail
 * (each shard publishes its tail's last-use stamp) until it fits.
 *
 * Accounting: every byte the store allocates is charged — the entry block
 * (struct, key, head, body, tags) plus a malloc overhead estimate, and the
 * hash tables — so `bytes` is the memory held, not an estimate of bodies. */
#ifndef PT_PLUGINS_CACHE_STORE_H
#define PT_PLUGINS_CACHE_STORE_H

#include <pthread.h>
#include <stdatomic.h>

#include "plugin/plugin.h"

#define PT_CACHE_SHARDS 16
#define PT_CACHE_MALLOC_OVERHEAD 16 /* bytes charged per allocation besides its size */

/* What RFC 9111 needs to know about a stored response (seconds, wall clock). */
typedef struct {
    int status;
    int64_t response_time; /* when the response (or its last 304 refresh) arrived */
    int64_t initial_age;   /* corrected initial age (RFC 9111 §4.2.3) */
    int64_t lifetime;      /* freshness lifetime; 0: stale at once */
    int64_t swr;           /* stale-while-revalidate window, 0: none */
    int64_t sie;           /* stale-if-error window, 0: none */
    bool must_revalidate;  /* must-revalidate / proxy-revalidate / s-maxage: never served stale */
    bool no_cache;         /* no-cache: revalidate before every use */
    bool vary_marker;      /* not a response: `head` holds the Vary field names to key variants on */
} pt_cache_meta;

/* A stored response: immutable once in the store, reference-counted. */
typedef struct pt_cache_entry {
    struct pt_cache_entry *hnext;       /* hash chain (shard lock) */
    struct pt_cache_entry *prev, *next; /* LRU list, head = most recent (shard lock) */
    uint64_t hash;
    uint64_t stamp;    /* last use (shard lock) */
    atomic_int refs;   /* the store's link counts as one */
    bool linked;       /* (shard lock) */
    size_t charge;     /* bytes accounted for it */
    pt_cache_meta meta;
    char *key;         /* keylen bytes, NUL-terminated */
    size_t keylen;
    char *head;        /* header fields as "name: value\r\n" lines (Vary names for a marker) */
    size_t headlen;
    char *body;
    size_t bodylen;
    char *tags;        /* the tag header's value (comma/space separated), may be empty */
    size_t tagslen;
} pt_cache_entry;

/* A client waiting for another request's fetch of the same key (request
 * collapsing). `wake` runs exactly once, on whichever thread ends the fill,
 * outside every store lock, unless pt_cache_fill_leave removed it first. */
typedef struct pt_cache_waiter {
    struct pt_cache_waiter *next;
    void (*wake)(struct pt_cache_waiter *w);
} pt_cache_waiter;

typedef struct pt_cache_fill pt_cache_fill;

/* A response being fetched for waiters, streamed to them as it arrives
 * (only responses of known length within max_object: the body buffer is
 * allocated once and never moves, so readers copy from it without a lock).
 * The fetching request appends; readers read body[0, len) — load `state`
 * first (acquire), then `len`: COMPLETE means `len` is final. */
enum { PT_PENDING_STREAMING, PT_PENDING_COMPLETE, PT_PENDING_FAILED };
typedef struct pt_cache_pending {
    atomic_int refs;
    pthread_mutex_t lock;      /* guards `readers` */
    int status;
    char *head;                /* header lines, as an entry's */
    size_t headlen;
    char *body;
    size_t size;               /* the Content-Length */
    atomic_size_t len;
    atomic_int state;
    pt_cache_waiter *readers;  /* woken once each at the next append or end */
} pt_cache_pending;

typedef struct {
    pthread_mutex_t lock;
    pt_cache_entry **table;
    size_t tsize;      /* power of two (0: not allocated yet) */
    size_t count;
    pt_cache_entry *lru_head, *lru_tail;
    atomic_uint_fast64_t tail_stamp; /* stamp of lru_tail, UINT64_MAX when empty */
    pt_cache_fill *fills;
} pt_cache_shard;

typedef struct pt_cache_store {
    uint64_t max_size;
    uint64_t max_object;
    uint64_t k0, k1;   /* hash key, random per store */
    atomic_uint_fast64_t bytes;
    atomic_uint_fast64_t entries;
    atomic_uint_fast64_t evictions;
    atomic_uint_fast64_t purged;
    char zone[64];     /* the configured zone name (purges may name it) */
    uint64_t id;       /* unique per process (cache.c's registry) */
    struct pt_cache_store *reg_next; /* the plugin's list of live stores (cache.c) */
    pt_cache_shard shards[PT_CACHE_SHARDS];
} pt_cache_store;

/* Initialises a store in zeroed memory `mem` (sizeof(pt_cache_store)). */
void pt_cache_store_init(pt_cache_store *s, uint64_t max_size, uint64_t max_object);
/* Frees every entry and fill (no reader may still use the store). */
void pt_cache_store_fini(pt_cache_store *s);

/* A new unlinked entry with room for the key (copied) and the given
 * lengths of head, body and tags (to be filled by the caller); refs = 1
 * (the caller's). NULL when its charge exceeds the store's max_object. */
pt_cache_entry *pt_cache_entry_new(const pt_cache_store *s, pt_str key, size_t headlen, size_t bodylen,
                                   size_t tagslen);
/* Drops a reference; the last one frees the entry. Any thread. */
void pt_cache_entry_release(pt_cache_entry *e);

/* Stores `e` (the caller's reference stays the caller's), replacing an
 * entry of the same key, then evicts the coldest entries until the store
 * is within max_size. `now` is the caller's monotonic clock (LRU stamps). */
void pt_cache_store_put(pt_cache_store *s, pt_cache_entry *e, uint64_t now);
/* The entry of `key` with a reference for the caller (release it), moved
 * to the LRU head; NULL when absent. */
pt_cache_entry *pt_cache_store_get(pt_cache_store *s, pt_str key, uint64_t now);
/* Removes the entry of `key` if it is still `e` (a stale one found unusable). */
void pt_cache_store_remove(pt_cache_store *s, pt_str key, const pt_cache_entry *e);

typedef enum { PT_CACHE_PURGE_KEY, PT_CACHE_PURGE_PREFIX, PT_CACHE_PURGE_TAG } pt_cache_purge_mode;
/* Removes entries: KEY the entry of `arg` and its Vary variants ("arg\n..."),
 * PREFIX every key starting with `arg`, TAG every entry whose tags list
 * `arg`. Returns how many were removed. Any thread (walks every shard). */
size_t pt_cache_store_purge(pt_cache_store *s, pt_cache_purge_mode mode, pt_str arg);

/* A pending response with `head` (copied) for a body of `size` bytes; refs 1. */
pt_cache_pending *pt_cache_pending_new(pt_str head, int status, size_t size);
void pt_cache_pending_release(pt_cache_pending *p);
/* The fetching request's side: appends (at most size - len bytes are
 * taken), or ends it (complete or failed); both wake the readers. */
void pt_cache_pending_append(pt_cache_pending *p, const char *data, size_t n);
void pt_cache_pending_end(pt_cache_pending *p, bool complete);
/* A reader at offset `off`: false when bytes past `off` or the end are
 * there now; else registers `w` (true) for the next append or end. */
bool pt_cache_pending_wait(pt_cache_pending *p, size_t off, pt_cache_waiter *w);
/* Takes `w` back: true when it was still registered. */
bool pt_cache_pending_unwait(pt_cache_pending *p, pt_cache_waiter *w);

/* Request collapsing. join: when nobody fetches `key`, registers the
 * caller as the one who does (true: go fetch, then call fill_end); else
 * adds `w` to the waiters (false: wait for w->wake; `w` NULL: false, and
 * nothing is registered) — unless the fetch already streams its response:
 * then false, nothing registered, and *pending (if `pending` is not NULL)
 * gets a reference to it. */
bool pt_cache_fill_join(pt_cache_store *s, pt_str key, pt_cache_waiter *w, pt_cache_pending **pending);
/* The fetch of `key` streams its response through `p`: later joiners get
 * it, and the waiters are woken now (they join again and read it). */
void pt_cache_fill_publish(pt_cache_store *s, pt_str key, pt_cache_pending *p);
/* The fetch of `key` is over (stored or not): wakes every waiter. */
void pt_cache_fill_end(pt_cache_store *s, pt_str key);
/* Takes `w` back (its wait timed out or its request ended): true when it
 * was still waiting (it will not be woken), false when its wake is already
 * running or done. */
bool pt_cache_fill_leave(pt_cache_store *s, pt_str key, pt_cache_waiter *w);

#endif
