/* fa_cache.h — private to forward_auth: the positive-result cache.
 *
 * A store (one per worker, from forward_auth's worker_init) holds a random
 * salt and a list of caches ("namespaces"), one per distinct forward_auth
 * configuration fingerprint: identical instances (on several routes, or
 * across a reload that kept the settings) share entries, different ones never
 * see each other's. A namespace whose entries have all expired and that
 * has not been looked up for PT_FA_NS_IDLE_MS is freed the next time another
 * namespace is looked up, so configurations removed by a reload do not keep
 * memory. A namespace allocates its hash table with its first entry.
 *
 * An entry is keyed by a 32-byte digest (SHA-256 of the salt and the
 * configured key material: the cache never holds a credential itself), has
 * an absolute expiry, and carries the header fields to copy onto the
 * upstream request, in one allocation. Each namespace is bounded: a put into
 * a full namespace evicts the least recently used entry. An expired entry is
 * never returned (it is dropped when met).
 *
 * Pure data structure: the caller passes the time (pt_loop_now() ms). Only
 * the owning worker's thread touches a store: no locks. */
#ifndef PT_PLUGINS_FORWARD_AUTH_FA_CACHE_H
#define PT_PLUGINS_FORWARD_AUTH_FA_CACHE_H

#include "plugin/plugin.h"

#define PT_FA_DIGEST_LEN 32
#define PT_FA_SALT_LEN 32
#define PT_FA_NS_IDLE_MS 60000

typedef struct pt_fa_cache pt_fa_cache;
typedef struct pt_fa_store pt_fa_store;

/* One cached positive result. `headers` point into the entry itself. */
typedef struct pt_fa_entry {
    uint8_t key[PT_FA_DIGEST_LEN];
    uint64_t expires_ms;         /* served while now < expires_ms */
    struct pt_fa_entry *hnext;   /* hash chain */
    struct pt_fa_entry *prev, *next; /* LRU list, most recent first */
    uint32_t nheaders;
    pt_header *headers;
} pt_fa_entry;

/* ---- one namespace ---- */

/* A cache of at most max_entries (>= 1) entries. */
pt_fa_cache *pt_fa_cache_new(size_t max_entries);
void pt_fa_cache_free(pt_fa_cache *c);
/* The live entry for `key` (made most recently used), or NULL. An expired
 * entry met here is removed. The entry stays valid until the next put or
 * free on this cache. */
const pt_fa_entry *pt_fa_cache_get(pt_fa_cache *c, const uint8_t key[PT_FA_DIGEST_LEN], uint64_t now_ms);
/* Stores (or replaces) the entry for `key` with a copy of headers[0, n),
 * valid until expires_ms; evicts the least recently used entry when full. */
void pt_fa_cache_put(pt_fa_cache *c, const uint8_t key[PT_FA_DIGEST_LEN], uint64_t expires_ms,
                     const pt_header *headers, size_t n, uint64_t now_ms);
size_t pt_fa_cache_count(const pt_fa_cache *c);

/* ---- per-worker store ---- */

/* A store with a fresh random salt. */
pt_fa_store *pt_fa_store_new(void);
void pt_fa_store_free(pt_fa_store *s);
const uint8_t *pt_fa_store_salt(const pt_fa_store *s);
/* The namespace for configuration fingerprint `fp` (created with
 * max_entries when missing). Frees the other namespaces whose entries have
 * all expired by now_ms and that were idle for PT_FA_NS_IDLE_MS, so the
 * pointer returned is only valid until the next call: look it up again
 * after any wait. */
pt_fa_cache *pt_fa_store_cache(pt_fa_store *s, const uint8_t fp[PT_FA_DIGEST_LEN], size_t max_entries,
                               uint64_t now_ms);
size_t pt_fa_store_count(const pt_fa_store *s); /* namespaces held */

#endif
