/* oi_cache.h — private to oauth2_introspection: the per-worker cache of
 * introspection answers.
 *
 * A store (one per worker, from the plugin's worker_init) holds a random
 * salt and one cache ("namespace") per configuration fingerprint, so
 * identical instances share answers and a reload that keeps the settings
 * keeps them; a namespace with nothing left alive and idle for
 * PT_OI_NS_IDLE_MS is freed when another one is looked up.
 *
 * An entry is keyed by a 32-byte digest (SHA-256 of the worker salt and the
 * token: the cache never holds a token) and is either positive (the token
 * was active: the consumer name and the claims to apply) or negative (the
 * token was inactive or refused). It has two deadlines in wall-clock ms:
 * `fresh_until` (served without asking the authorization server) and
 * `keep_until` >= fresh_until (a positive entry past its freshness is kept
 * for stale_if_error: served only when the server cannot answer).
 * Positive and negative entries have separate LRU lists and bounds, so a
 * flood of bad tokens cannot evict the good ones. An entry past keep_until
 * is never returned (dropped when met).
 *
 * Pure data structure: the caller passes the time. Only the owning
 * worker's thread touches a store: no locks. */
#ifndef PT_PLUGINS_OAUTH2_INTROSPECTION_OI_CACHE_H
#define PT_PLUGINS_OAUTH2_INTROSPECTION_OI_CACHE_H

#include "plugin/plugin.h"

#define PT_OI_DIGEST_LEN 32
#define PT_OI_SALT_LEN 32
#define PT_OI_NS_IDLE_MS 60000

typedef struct pt_oi_cache pt_oi_cache;
typedef struct pt_oi_store pt_oi_store;

/* One cached answer. Strings point into the entry itself (NUL-terminated). */
typedef struct pt_oi_entry {
    uint8_t key[PT_OI_DIGEST_LEN];
    bool active;
    uint64_t fresh_until;        /* wall ms: served as is while now < fresh_until */
    uint64_t keep_until;         /* wall ms: kept (for stale_if_error) while now < keep_until */
    struct pt_oi_entry *hnext;   /* hash chain */
    struct pt_oi_entry *prev, *next; /* LRU list of its kind, most recent first */
    pt_str consumer;             /* positive: the consumer name */
    uint32_t nclaims;
    pt_header *claims;           /* positive: claim name -> value */
} pt_oi_entry;

/* ---- one namespace ---- */

/* A cache of at most max_active positive and max_inactive negative entries
 * (each >= 1). */
pt_oi_cache *pt_oi_cache_new(size_t max_active, size_t max_inactive);
void pt_oi_cache_free(pt_oi_cache *c);
/* The entry for `key` if now < its keep_until (made most recently used),
 * else NULL (an entry past keep_until is removed). Valid until the next
 * put or free on this cache. */
const pt_oi_entry *pt_oi_cache_get(pt_oi_cache *c, const uint8_t key[PT_OI_DIGEST_LEN], uint64_t now_ms);
/* Stores (or replaces) the entry for `key`; `consumer` and claims[0, n)
 * are copied (ignored for a negative entry). Nothing is stored when
 * keep_until <= now. Evicts the least recently used entry of the same kind
 * when that kind is full. */
void pt_oi_cache_put(pt_oi_cache *c, const uint8_t key[PT_OI_DIGEST_LEN], bool active, uint64_t fresh_until,
                     uint64_t keep_until, pt_str consumer, const pt_header *claims, size_t n, uint64_t now_ms);
/* Entries held: positive ones (active) or negative ones. */
size_t pt_oi_cache_count(const pt_oi_cache *c, bool active);

/* ---- per-worker store ---- */

pt_oi_store *pt_oi_store_new(void); /* with a fresh random salt */
void pt_oi_store_free(pt_oi_store *s);
const uint8_t *pt_oi_store_salt(const pt_oi_store *s);
/* The namespace for fingerprint `fp` (created with these bounds when
 * missing); frees other namespaces with nothing alive that were idle for
 * PT_OI_NS_IDLE_MS, so the pointer is only valid until the next call:
 * look it up again after any wait. */
pt_oi_cache *pt_oi_store_cache(pt_oi_store *s, const uint8_t fp[PT_OI_DIGEST_LEN], size_t max_active,
                               size_t max_inactive, uint64_t now_ms);
size_t pt_oi_store_count(const pt_oi_store *s); /* namespaces held */

#endif
