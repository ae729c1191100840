/* jwt_cache.h — private to the jwt plugin: the per-worker cache of verified
 * tokens, so an RSA/ECDSA verification is paid once per token and worker,
 * not per request.
 *
 * An entry is keyed by a 32-byte digest (SHA-256 of the plugin instance's
 * random salt and the token: the cache never holds a token, and instances
 * never see each other's entries), has an absolute wall-clock expiry (the
 * token's exp, bounded by the configured ttl) and carries what a hit
 * restores: the consumer's name (and an ad-hoc consumer's groups), the
 * scopes, the claims exported as facts and the header fields the token's
 * claims map to (each bounded by the plugin, and all of it by the token's
 * size). Bounded: a put evicts expired entries from the
 * cold end, then the least recently used one. Only the owning worker thread
 * touches a cache: no locks. Pure data structure: the caller passes time. */
#ifndef PT_PLUGINS_JWT_JWT_CACHE_H
#define PT_PLUGINS_JWT_JWT_CACHE_H

#include "plugin/plugin.h"

#define PT_JWT_DIGEST_LEN 32

typedef struct pt_jwt_cache pt_jwt_cache;

/* What a verified token says about its caller (jwt.c builds it; the cache
 * keeps a copy). */
typedef struct {
    pt_str consumer;                   /* the consumer claim's value */
    const pt_str *groups;              /* an ad-hoc consumer's groups */
    uint32_t ngroups;
    const pt_str *scopes;
    uint32_t nscopes;
    const pt_header *claims;           /* name -> value (pt_txn_set_claim) */
    uint32_t nclaims;
    const pt_header *headers;          /* claims_to_headers: header -> value */
    uint32_t nheaders;
} pt_jwt_ident;

typedef struct pt_jwt_entry {
    uint8_t key[PT_JWT_DIGEST_LEN];
    uint64_t expires_ms;               /* served while now < expires_ms */
    struct pt_jwt_entry *hnext;        /* hash chain */
    struct pt_jwt_entry *prev, *next;  /* LRU list, most recent first */
    pt_jwt_ident id;                   /* everything inside the entry's allocation */
} pt_jwt_entry;

pt_jwt_cache *pt_jwt_cache_new(void);
void pt_jwt_cache_free(pt_jwt_cache *c);
/* The live entry for key (made most recently used) or NULL; an expired one
 * met is removed. Valid until the next put or free. */
const pt_jwt_entry *pt_jwt_cache_get(pt_jwt_cache *c, const uint8_t key[PT_JWT_DIGEST_LEN], uint64_t now_ms);
/* Stores a deep copy of *id under key until expires_ms, keeping at most
 * max_entries (>= 1) entries. */
void pt_jwt_cache_put(pt_jwt_cache *c, const uint8_t key[PT_JWT_DIGEST_LEN], uint64_t expires_ms,
                      const pt_jwt_ident *id, size_t max_entries, uint64_t now_ms);
size_t pt_jwt_cache_count(const pt_jwt_cache *c);

#endif
