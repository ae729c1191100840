/* jwks_src.h — private to the jwt plugin: JWK Sets fetched from an
 * identity provider's URL through the internal HTTP client.
 *
 * Each worker keeps one source per distinct (upstream, path, default alg),
 * shared by every jwt instance and configuration generation that names
 * it, so a reload does not refetch. Refreshes are driven by requests
 * (stale-while-revalidate): a request that finds the set older than its
 * refresh time starts a background fetch and goes on with the current keys;
 * only the first fetch, and a fetch for a kid no key carries (rate-limited
 * to one per min_refresh), make requests wait. A fetch is only ever started
 * from a request callback, whose generation holds the upstream
 * configuration alive (the HTTP client resolves it at once). A failed or
 * unusable answer keeps the last good key set and is retried after
 * min_refresh. The refresh time is the response's Cache-Control max-age,
 * else `refresh`, bounded to [min_refresh, max_refresh]. Only the owning
 * worker's thread touches a source: no locks. */
#ifndef PT_PLUGINS_JWT_JWKS_SRC_H
#define PT_PLUGINS_JWT_JWKS_SRC_H

#include "plugins/jwt/jwk.h"
#include "plugin/plugin.h"

#define PT_JWKS_DEFAULT_REFRESH_MS (5ull * 60 * 1000)
#define PT_JWKS_DEFAULT_MIN_REFRESH_MS (30ull * 1000)
#define PT_JWKS_DEFAULT_MAX_REFRESH_MS (24ull * 3600 * 1000)
#define PT_JWKS_DEFAULT_TIMEOUT_MS 5000
#define PT_JWKS_MAX_BODY (512u << 10)

/* The `jwks` block of a jwt instance (config arena). */
typedef struct {
    const pt_upstream_conf *upstream;
    pt_str path;            /* origin-form target, NUL-terminated */
    int alg;                /* for keys without alg; PT_JWT_ALG_UNKNOWN: such keys are skipped */
    uint64_t refresh_ms, min_refresh_ms, max_refresh_ms, timeout_ms;
    char *id;               /* "upstream\npath\nalg": what identifies the source */
} pt_jwks_conf;

typedef struct pt_jwks_src pt_jwks_src;

/* A request waiting for a fetch: embedded in the plugin's request state.
 * `wake` runs once when the fetch ends (successfully or not), unless
 * cancelled first. */
typedef struct pt_jwks_waiter {
    struct pt_jwks_waiter *prev, *next;
    pt_jwks_src *src;       /* non-NULL while waiting */
    void (*wake)(struct pt_jwks_waiter *w);
} pt_jwks_waiter;

/* The worker's source for `c` in *list, created (empty, nothing fetched
 * yet) when missing. */
pt_jwks_src *pt_jwks_src_get(pt_jwks_src **list, struct pt_loop *loop, const pt_jwks_conf *c);
/* The last good key set, or NULL before the first successful fetch. */
const pt_jwt_keyset *pt_jwks_src_keys(const pt_jwks_src *s);
/* Starts a fetch when none is in flight and either the set is due
 * (never fetched, or its refresh time passed) or `unknown_kid` and the last
 * attempt is at least min_refresh old. Returns true when a fetch is in
 * flight afterwards (started now or before). now_ms: pt_loop_now. */
bool pt_jwks_src_refresh(pt_jwks_src *s, const pt_jwks_conf *c, uint64_t now_ms, bool unknown_kid);
/* Parks w until the fetch in flight ends (call only when one is). */
void pt_jwks_src_wait(pt_jwks_src *s, pt_jwks_waiter *w);
/* Removes w from its wait list, if it is on one (idempotent). */
void pt_jwks_waiter_cancel(pt_jwks_waiter *w);
/* Frees every source of the list (cancelling fetches in flight). */
void pt_jwks_src_free_all(pt_jwks_src **list);

/* Pure: the refresh delay for a response's fields (Cache-Control max-age,
 * no-cache/no-store meaning min_refresh), bounded by the configuration. */
uint64_t pt_jwks_refresh_delay(const pt_jwks_conf *c, const pt_headers *res);

#endif
