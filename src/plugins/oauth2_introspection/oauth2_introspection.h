/* oauth2_introspection.h — private: the oauth2_introspection plugin's
 * config and its pure helpers, exposed for unit tests. Reference:
 * docs/authentication.md ("oauth2_introspection").
 *
 *   plugins:
 *     - oauth2_introspection:
 *         upstream: idp                  # required: the authorization server's upstream
 *         path: /oauth2/introspect       # default "/"
 *         client_id: portico             # required
 *         client_secret: ${IDP_SECRET}   # required, exactly one ${ENV} reference
 *         client_auth: basic             # basic (RFC 6749 §2.3.1, default) | post
 *         timeout: 2s                    # whole call (default 2s)
 *         max_response: 64k              # answer cap (default 64k, at most 1m)
 *         max_token_size: 4k             # longer tokens are refused unasked
 *         realm: api                     # WWW-Authenticate realm (default "portico")
 *         consumer: {claims: [sub, username, client_id], lookup: prefer}  # prefer | require | never
 *         issuers: [https://idp.example] # optional: iss must be one of them
 *         audiences: [orders-api]        # optional: aud must contain one of them
 *         forward_token: false           # default: the Bearer Authorization is removed
 *         cache: {ttl: 60s, max_entries: 10000, negative_ttl: 10s, negative_max_entries: 2500}
 *         stale_if_error: 0s             # > 0: serve cached positives that long past their ttl
 *                                        #      while the server fails (never past exp)
 *         max_in_flight: 256             # distinct calls in flight per worker (all instances)
 *
 * Decision (the identity contract of plugin/plugin.h): no Bearer token ->
 * pt_txn_auth_none with a Bearer challenge; several -> 400 invalid_request;
 * a malformed or oversized token, an inactive one, or an active one that
 * fails iss/aud/consumer checks -> 401 error="invalid_token"; active -> the
 * consumer, its scopes and claims. The server unreachable, slow, answering
 * non-200 or invalid JSON -> 503 problem+json (unless a stale positive may
 * be served).
 *
 * Calls in flight (flight.h): requests on one worker that carry the same
 * token while it is not cached share one call (same settings: the key is
 * the token with the fingerprint, timeout and max_response); the call
 * belongs to the worker, so a waiter whose client leaves does not end it
 * for the others. A request that would start a call while the worker has
 * max_in_flight distinct calls in flight (counted over every instance) is
 * answered 503 problem+json with Retry-After, unasked. */
#ifndef PT_PLUGINS_OAUTH2_INTROSPECTION_H
#define PT_PLUGINS_OAUTH2_INTROSPECTION_H

#include "plugin/plugin.h"
#include "plugins/oauth2_introspection/flight.h"

#define PT_OI_DEFAULT_TIMEOUT_MS 2000
#define PT_OI_MAX_TIMEOUT_MS 60000
#define PT_OI_DEFAULT_MAX_RESPONSE (64u << 10)
#define PT_OI_MAX_MAX_RESPONSE (1u << 20)
#define PT_OI_DEFAULT_MAX_TOKEN 4096
#define PT_OI_MAX_MAX_TOKEN (64u << 10)
#define PT_OI_DEFAULT_TTL_MS 60000
#define PT_OI_MAX_TTL_MS (24ull * 3600 * 1000)
#define PT_OI_DEFAULT_NEGATIVE_TTL_MS 10000
#define PT_OI_DEFAULT_MAX_ENTRIES 10000
#define PT_OI_MAX_MAX_ENTRIES 1000000
#define PT_OI_DEFAULT_MAX_IN_FLIGHT 256
#define PT_OI_MAX_MAX_IN_FLIGHT 100000
#define PT_OI_RETRY_AFTER "1"    /* seconds, on the 503 of a full in-flight table */
#define PT_OI_MAX_JSON_DEPTH 16
#define PT_OI_MAX_CLAIM 4096     /* a longer claim value is not kept */
#define PT_OI_MAX_CONSUMER 256   /* a longer consumer name is refused */

/* What the consumer name is checked against (`consumer.lookup`). */
typedef enum {
    PT_OI_LOOKUP_PREFER = 0, /* a configuration consumer of that name if any, else an ad-hoc one */
    PT_OI_LOOKUP_REQUIRE,    /* must be a configuration consumer: else 401 */
    PT_OI_LOOKUP_NEVER,      /* always ad-hoc (no groups) */
} pt_oi_lookup;

typedef struct {
    const pt_upstream_conf *upstream;
    pt_str path;
    pt_str authorization;     /* client_auth basic: "Basic ..."; empty for post */
    pt_str body_prefix;       /* client_auth post: "client_id=..&client_secret=..&" */
    uint64_t timeout_ms;
    uint64_t max_response;
    size_t max_token;
    pt_str challenge;         /* Bearer realm="..." */
    pt_str realm;
    const char *const *consumer_claims;
    size_t nconsumer_claims;
    pt_oi_lookup lookup;
    const char *const *issuers;
    size_t nissuers;
    const char *const *audiences;
    size_t naudiences;
    bool forward_token;
    bool cache;
    size_t max_entries, negative_max_entries;
    uint64_t ttl_ms, negative_ttl_ms, stale_ms;
    size_t max_in_flight;
    /* SHA-256 of every setting that shapes a cached answer: instances with
     * equal fingerprints share entries (across routes and reloads). */
    uint8_t fingerprint[PT_DIGEST_LEN];
    pt_metric_series *decisions; /* portico_oauth2_introspection_decisions_total{result} */
} pt_oi_conf;

/* The `result` label of portico_oauth2_introspection_decisions_total. */
typedef enum {
    PT_OI_R_ACTIVE = 0,      /* the server said active: allowed */
    PT_OI_R_CACHE_HIT,       /* allowed from the cache, no call */
    PT_OI_R_INACTIVE,        /* the server said inactive (or the answer failed a check): 401 */
    PT_OI_R_INACTIVE_CACHED, /* refused from the negative cache, no call */
    PT_OI_R_MISSING,         /* no Bearer token */
    PT_OI_R_MALFORMED,       /* several, oversized or ill-formed tokens: 400/401 unasked */
    PT_OI_R_ERROR,           /* the server failed: 503 */
    PT_OI_R_STALE,           /* the server failed, a stale positive was served */
    PT_OI_R_OVERLOADED,      /* max_in_flight calls already in flight on the worker: 503 unasked */
} pt_oi_result;

/* The answer cache: per worker, one digest cache (plugin/digest_cache.h)
 * per configuration fingerprint, so identical instances share answers and
 * a reload that keeps the settings keeps them. An entry is keyed by
 * SHA-256(cache salt, token) and is positive (the token was active: the
 * consumer name and the claims to apply) or negative (inactive or refused);
 * the two kinds have separate LRU bounds, so a flood of bad tokens cannot
 * evict the good ones. Two wall-clock deadlines: served without asking the
 * server while now < fresh_until; kept (a positive one, for
 * stale_if_error) while now < keep_until. */
typedef struct {
    bool active;
    uint64_t fresh_until;
    uint64_t keep_until;
    pt_str consumer;             /* positive: the consumer name */
    uint32_t nclaims;
    const pt_header *claims;     /* positive: claim name -> value */
} pt_oi_entry;

/* The entry for `key` if now < its keep_until, else NULL. Valid until the
 * next put or free on this cache. */
const pt_oi_entry *pt_oi_cache_get(pt_digest_cache *c, const uint8_t key[PT_DIGEST_LEN], uint64_t now_ms);
/* Stores (or replaces) the entry for `key`; `consumer` and claims[0, n)
 * are copied (ignored for a negative entry); fresh_until is capped at
 * keep_until. Nothing is stored when keep_until <= now. */
void pt_oi_cache_put(pt_digest_cache *c, const uint8_t key[PT_DIGEST_LEN], bool active, uint64_t fresh_until,
                     uint64_t keep_until, pt_str consumer, const pt_header *claims, size_t n, uint64_t now_ms);

/* The per-worker state: the answer caches and the calls in flight. */
typedef struct {
    pt_digest_store *store;
    pt_oi_flight flight;
} pt_oi_worker;

/* Per-request state (zeroed, in the request arena). `wait` first: a
 * waiter is its request's state. */
typedef struct {
    pt_oi_waiter wait;
    pt_txn *txn;
    const pt_oi_conf *conf;
    pt_str token;            /* points into the request */
    bool cleanup;            /* the arena cleanup that leaves the wait is registered */
} pt_oi_state;

extern const pt_plugin_type pt_plugin_oauth2_introspection;

/* ---- pure helpers ---- */

typedef enum { PT_OI_TOKEN_NONE = 0, PT_OI_TOKEN_ONE, PT_OI_TOKEN_MANY, PT_OI_TOKEN_BAD } pt_oi_token_found;

/* The Bearer token of the request's Authorization fields (RFC 6750 §2.1:
 * scheme case-insensitive, then spaces, then a b64token). Fields of other
 * schemes are ignored; a Bearer field whose value is not a b64token is
 * BAD; several Bearer fields are MANY. */
pt_oi_token_found pt_oi_find_token(const pt_request *req, pt_str *token);
/* Removes the Authorization fields that carry a Bearer credential (other
 * schemes stay for their plugins); returns how many. */
int pt_oi_remove_bearer(pt_request *req);

/* application/x-www-form-urlencoded encoding of s (unreserved bytes kept,
 * space as '+', the rest %XX), in `a`. */
pt_str pt_oi_form_encode(pt_str s, pt_arena *a);
/* The introspection request body: prefix + "token=..&token_type_hint=access_token". */
pt_str pt_oi_request_body(const pt_oi_conf *c, pt_str token, pt_arena *a);
/* "Basic " + base64(form(id) ":" form(secret)) (RFC 6749 §2.3.1), in `a`. */
pt_str pt_oi_basic_credentials(pt_str id, pt_str secret, pt_arena *a);

/* What an introspection answer says. */
typedef enum {
    PT_OI_ANSWER_ACTIVE = 0,
    PT_OI_ANSWER_INACTIVE,   /* active false, expired, not yet valid */
    PT_OI_ANSWER_REFUSED,    /* active, but iss/aud/consumer checks failed (detail says which) */
    PT_OI_ANSWER_INVALID,    /* not an RFC 7662 answer: a server failure */
} pt_oi_answer_kind;

typedef struct {
    pt_oi_answer_kind kind;
    const char *detail;      /* REFUSED / INVALID: why (static) */
    pt_str consumer;         /* ACTIVE: the consumer name (in the arena) */
    uint64_t exp_ms;         /* ACTIVE: exp in wall ms, 0 when absent */
    pt_header *claims;       /* ACTIVE: sub, client_id, username, iss, aud, scope, token_type when present */
    size_t nclaims;
} pt_oi_answer;

/* Parses and judges the server's 200 body at wall time now_ms: a JSON
 * object (duplicate members, nesting deeper than PT_OI_MAX_JSON_DEPTH,
 * trailing bytes refused) whose `active` is a boolean; for an active token
 * exp/nbf (integers) against now, iss/aud against the configuration, and
 * the consumer name from the first configured claim that is a usable
 * string. Strings go to `a`. */
void pt_oi_parse_answer(const pt_oi_conf *c, pt_str body, uint64_t now_ms, pt_arena *a, pt_oi_answer *out);

/* How long an active answer stays fresh and kept: fresh = min(exp, now +
 * ttl); keep = min(exp, fresh + stale) (exp 0: none). */
void pt_oi_deadlines(const pt_oi_conf *c, uint64_t exp_ms, uint64_t now_ms, uint64_t *fresh, uint64_t *keep);

#endif
