/* digest_cache.h — part of the plugin API (through plugin/plugin.h): a
 * bounded, TTL'd LRU cache keyed by salted digests, for plugins that
 * remember the outcome of an expensive check (a password hash, a signature,
 * an HTTP call) per worker.
 *
 * A cache has its own random salt (getrandom). A key is SHA-256(salt ||
 * parts...) (pt_digest_cache_key): the cache never holds a credential, and
 * two caches never share keys. An entry is that 32-byte key, an absolute
 * expiry (in whatever clock the caller uses: it passes `now` to every call)
 * and an opaque value blob the caller serialises (header lists, a consumer
 * name, claims...), stored in the entry's own allocation.
 *
 * Entries belong to one of two classes, each with its own LRU list and
 * bound: PT_DIGEST_POSITIVE and PT_DIGEST_NEGATIVE (for remembered
 * refusals, so a flood of bad credentials cannot evict the good ones). A put
 * evicts, within its class, expired entries from the cold end, then the least
 * recently used ones. An expired entry is never returned (dropped when met).
 *
 * A pt_digest_store is a per-worker set of caches keyed by a configuration
 * fingerprint, so identical plugin instances (several routes, or a reload
 * that kept the settings) share entries; a cache with nothing alive that was
 * not looked up for PT_DIGEST_NS_IDLE_MS is freed when another one is.
 *
 * Single-threaded: only the owning worker's thread touches a cache or a
 * store (create them in worker_init): no locks. */
#ifndef PT_PLUGIN_DIGEST_CACHE_H
#define PT_PLUGIN_DIGEST_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/common.h"
#include "http/message.h"

#define PT_DIGEST_LEN 32
#define PT_DIGEST_SALT_LEN 32
#define PT_DIGEST_NS_IDLE_MS 60000

typedef struct pt_digest_cache pt_digest_cache;
typedef struct pt_digest_store pt_digest_store;

typedef enum { PT_DIGEST_NEGATIVE = 0, PT_DIGEST_POSITIVE = 1 } pt_digest_class;

/* ---- one cache ---- */

/* A cache with a fresh random salt, holding at most max_positive positive
 * and max_negative negative entries (each bound raised to 1 if 0). */
pt_digest_cache *pt_digest_cache_new(size_t max_positive, size_t max_negative);
void pt_digest_cache_free(pt_digest_cache *c);
/* Changes a class's bound; takes effect at the next put into that class. */
void pt_digest_cache_set_max(pt_digest_cache *c, pt_digest_class cls, size_t max_entries);
const uint8_t *pt_digest_cache_salt(const pt_digest_cache *c); /* PT_DIGEST_SALT_LEN bytes */
/* out = SHA-256(salt || parts[0] || ... || parts[n-1]). Parts are hashed as
 * is (no separators): the caller adds any it needs to keep them apart. */
void pt_digest_cache_key(const pt_digest_cache *c, const pt_str *parts, size_t n, uint8_t out[PT_DIGEST_LEN]);

/* The live entry's blob for `key` (the entry becomes the most recently used
 * of its class), or NULL; an entry with now >= its expiry is removed. *len
 * and *cls (each optional) receive the blob's length and the class. The
 * blob (aligned for any type) stays valid until the next put or free. */
const void *pt_digest_cache_get(pt_digest_cache *c, const uint8_t key[PT_DIGEST_LEN], uint64_t now, size_t *len,
                                pt_digest_class *cls);
/* Stores (replacing any entry for `key`) a blob of `len` bytes, a copy of
 * `blob` (or zeros if NULL), served while now < expires. Returns the stored
 * blob — writable, aligned for any type, valid until the next put or free —
 * so a caller may fill it in place (e.g. pointers into the blob itself);
 * NULL when nothing was stored (expires <= now). */
void *pt_digest_cache_put(pt_digest_cache *c, const uint8_t key[PT_DIGEST_LEN], pt_digest_class cls, uint64_t expires,
                          const void *blob, size_t len, uint64_t now);
/* Removes the entry for `key`, if any. */
void pt_digest_cache_remove(pt_digest_cache *c, const uint8_t key[PT_DIGEST_LEN]);
size_t pt_digest_cache_count(const pt_digest_cache *c, pt_digest_class cls);
/* The latest expiry ever stored: nothing is alive once now passes it. */
uint64_t pt_digest_cache_latest(const pt_digest_cache *c);

/* ---- laying out a blob filled in place (after pt_digest_cache_put with
 * blob NULL): size first, then copy with *p walking through the blob ---- */

/* Bytes pt_digest_blob_str / _strs / _headers need for these values,
 * alignment included (each string NUL-terminated). */
size_t pt_digest_blob_str_size(pt_str s);
size_t pt_digest_blob_strs_size(const pt_str *v, size_t n);
size_t pt_digest_blob_headers_size(const pt_header *v, size_t n);
/* Copies into *p and advances it; the copies point into the blob. */
pt_str pt_digest_blob_str(char **p, pt_str s);
pt_str *pt_digest_blob_strs(char **p, const pt_str *v, size_t n);
pt_header *pt_digest_blob_headers(char **p, const pt_header *v, size_t n);

/* ---- per-worker store of caches by configuration fingerprint ---- */

pt_digest_store *pt_digest_store_new(void);
void pt_digest_store_free(pt_digest_store *s);
/* The cache for fingerprint `fp` (created with these bounds when missing;
 * an existing one keeps its bounds). Frees the other caches with nothing
 * alive at `now` that were idle for PT_DIGEST_NS_IDLE_MS, so the pointer is
 * only valid until the next call: look it up again after any wait. */
pt_digest_cache *pt_digest_store_cache(pt_digest_store *s, const uint8_t fp[PT_DIGEST_LEN], size_t max_positive,
                                       size_t max_negative, uint64_t now);
size_t pt_digest_store_count(const pt_digest_store *s); /* caches held */

#endif
