/* forward_auth.h — private: the forward_auth plugin's config and its pure
 * helpers, exposed for unit tests. Design note: docs/forward_auth.md.
 *
 *   plugins:
 *     - forward_auth:
 *         upstream: auth                 # required: a named upstream
 *         path: /verify                  # target on the auth service (default "/")
 *         # path_prefix: /auth           #   or: prefix + the original path and query
 *         method: original               # or a method token (GET, POST...)
 *         request_headers: [Authorization, Cookie]      # client -> auth (default)
 *         upstream_headers: [X-User-Id, X-User-Groups]  # auth 2xx -> upstream request
 *         client_headers: [WWW-Authenticate, Location, Set-Cookie]  # denial -> client (default)
 *         timeout: 2s                    # whole auth call (default 2s)
 *         failure: deny                  # deny (503/504, default) | allow
 *         max_response: 64k              # auth response body cap (default 64k)
 *         cache: {ttl: 30s, key: [Authorization, ":path"], max_entries: 10000}
 *
 * Decision: a 2xx from the auth service allows (upstream_headers copied onto
 * the request); any other final status (3xx, 4xx, 5xx) is a denial sent to
 * the client as-is: status, client_headers, Content-Type and body. No valid
 * answer (unreachable, timeout, invalid or oversized response) is a failure:
 * 503 / 504 problem+json, or with `failure: allow` the request goes on.
 * Whatever happens, the client's own copies of upstream_headers never reach
 * the upstream. */
#ifndef PT_PLUGINS_FORWARD_AUTH_H
#define PT_PLUGINS_FORWARD_AUTH_H

#include "plugin/plugin.h"

#define PT_FAUTH_DEFAULT_TIMEOUT_MS 2000
#define PT_FAUTH_MAX_TIMEOUT_MS 300000
#define PT_FAUTH_DEFAULT_MAX_RESPONSE (64u << 10)
#define PT_FAUTH_MAX_MAX_RESPONSE (16u << 20)
#define PT_FAUTH_DEFAULT_MAX_ENTRIES 10000
#define PT_FAUTH_MAX_MAX_ENTRIES 1000000
#define PT_FAUTH_MAX_TTL_MS (24ull * 3600 * 1000)
/* A positive result whose copied headers exceed this is not cached (it is
 * still used for its request): bounds a cache to max_entries * ~8 KiB. */
#define PT_FAUTH_MAX_CACHED_HEADER_BYTES 8192

/* One element of the cache key: a request header (all its values) or a
 * property of the request. */
typedef enum {
    PT_FAUTH_KEY_HEADER = 0,
    PT_FAUTH_KEY_METHOD, /* ":method" */
    PT_FAUTH_KEY_PATH,   /* ":path"   normalised path and query (X-Forwarded-Uri) */
    PT_FAUTH_KEY_HOST,   /* ":host"   the authority (X-Forwarded-Host) */
    PT_FAUTH_KEY_CLIENT, /* ":client" the client address (X-Real-IP) */
} pt_fauth_key_kind;

typedef struct {
    pt_fauth_key_kind kind;
    pt_str name; /* HEADER: NUL-terminated, in the config arena */
} pt_fauth_key;

/* A list of header names (NUL-terminated, in the config arena). */
typedef struct {
    pt_str *v;
    size_t n;
} pt_fauth_names;

typedef struct {
    const pt_upstream_conf *upstream;
    pt_str path;             /* NUL-terminated; the target, or the prefix when path_prefix */
    bool path_prefix;        /* append the original normalised path and query to `path` */
    pt_str method;           /* empty: the original request's method */
    pt_fauth_names request_headers;
    pt_fauth_names upstream_headers;
    pt_fauth_names client_headers;
    uint64_t timeout_ms;
    bool failure_allow;
    uint64_t max_response;
    bool cache;
    uint64_t cache_ttl_ms;
    size_t cache_max_entries;
    pt_fauth_key *cache_key;
    size_t ncache_key;
    /* SHA-256 of every setting that shapes an auth call or a cached entry:
     * instances with equal fingerprints share cache entries. */
    uint8_t fingerprint[PT_DIGEST_LEN];
    /* portico_forward_auth_decisions_total{upstream, result}: cells in
     * pt_fauth_result order; NULL when metrics are off. */
    pt_metric_series *decisions;
} pt_fauth_conf;

/* The `result` label of portico_forward_auth_decisions_total, one per
 * request the plugin decided (docs/metrics.md). */
typedef enum {
    PT_FAUTH_R_ALLOWED = 0,  /* the auth service answered 2xx */
    PT_FAUTH_R_DENIED,       /* it answered another final status, passed to the client */
    PT_FAUTH_R_ERROR,        /* no valid answer: unreachable, invalid or oversized */
    PT_FAUTH_R_TIMEOUT,      /* no answer within `timeout` */
    PT_FAUTH_R_CACHE_HIT,    /* allowed from the positive cache, no call made */
} pt_fauth_result;

/* Per-request state (zeroed, in the request arena). */
typedef struct {
    pt_txn *txn;
    const pt_fauth_conf *conf;
    pt_http_call *call;      /* the auth call in flight, NULL otherwise */
    bool has_key;
    uint8_t key[PT_DIGEST_LEN];
} pt_fauth_state;

extern const pt_plugin_type pt_plugin_forward_auth;

/* What an auth call's outcome means, before the failure policy. */
typedef enum {
    PT_FAUTH_ALLOW = 0,
    PT_FAUTH_DENY,           /* pass the auth service's answer to the client */
    PT_FAUTH_FAIL,           /* unreachable / invalid: 503 (or allow) */
    PT_FAUTH_FAIL_TIMEOUT,   /* timed out: 504 (or allow) */
} pt_fauth_verdict;

/* Classifies `r`: 2xx allows, another final status (300..599) denies; a
 * transport error, a status outside 200..599 or, for the fields that would
 * be copied (upstream_headers on a 2xx, client_headers and Content-Type on a
 * denial), a value with control bytes, fails. */
pt_fauth_verdict pt_fauth_classify(const pt_fauth_conf *c, const pt_http_result *r);

/* `path` (the request path as the router saw it: pt_txn_path) plus
 * "?query", in `a`; the raw target when path is empty (not routed). */
pt_str pt_fauth_uri(pt_str path, const pt_request *req, pt_arena *a);
/* The auth request's target: `path`, or `path` prefix + uri. */
pt_str pt_fauth_target(const pt_fauth_conf *c, pt_str uri, pt_arena *a);
/* The auth request's fields: request_headers copied from `req` (every
 * occurrence), then X-Forwarded-Method, -Proto, -Host, -Uri, X-Forwarded-For
 * and X-Real-IP (the client address). */
void pt_fauth_auth_headers(const pt_fauth_conf *c, const pt_request *req, pt_str uri, pt_str client, pt_arena *a,
                           pt_headers *out);
/* The cache key: SHA-256 over the salt and each key element (tagged and
 * length-prefixed, so no two different requests collide by concatenation). */
void pt_fauth_cache_key(const pt_fauth_conf *c, const uint8_t salt[PT_DIGEST_SALT_LEN], const pt_request *req,
                        pt_str uri, pt_str client, uint8_t out[PT_DIGEST_LEN]);
/* How long a positive result may be cached: the configured ttl, lowered by
 * the auth response's Cache-Control max-age; 0 (do not cache) for
 * no-store, no-cache or max-age=0. */
uint64_t pt_fauth_cache_ttl(const pt_fauth_conf *c, const pt_headers *auth_response);

#endif
