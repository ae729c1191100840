/* cache_policy.h — RFC 9111 decisions of the cache plugin, pure functions
 * of header fields and clocks (unit-tested without a transaction):
 * Cache-Control parsing, storability, freshness lifetime, age, validators. */
#ifndef PT_PLUGINS_CACHE_POLICY_H
#define PT_PLUGINS_CACHE_POLICY_H

#include "plugin/plugin.h"

/* The directives the cache acts on (request or response Cache-Control,
 * plus Pragma: no-cache on requests). Seconds; -1 when absent. */
typedef struct {
    int64_t max_age, s_maxage, swr, sie, min_fresh, max_stale;
    bool no_store, no_cache, private_, must_revalidate, proxy_revalidate, public_, only_if_cached;
} pt_cache_cc;

/* Parses every Cache-Control field of `h` (and Pragma: no-cache when
 * `request`). Unknown directives are ignored; a malformed number makes
 * its directive absent except max-age, which then counts as 0 (stale). */
void pt_cache_cc_parse(const pt_headers *h, bool request, pt_cache_cc *cc);

/* An HTTP-date (IMF-fixdate, RFC 850 or asctime form) as seconds since the
 * epoch; -1 when invalid. */
int64_t pt_cache_http_date(pt_str s);
/* Writes `t` as an IMF-fixdate into buf (at least 30 bytes); returns its length. */
size_t pt_cache_http_date_fmt(int64_t t, char *buf);

/* The policy of one cache instance that storability depends on. */
typedef struct {
    int64_t heuristic_ttl;  /* freshness for heuristically cacheable statuses without any; 0: off */
    uint32_t extra_statuses[8]; /* statuses stored when explicitly fresh besides the default list */
    size_t nextra;
    bool allow_set_cookie;
} pt_cache_policy;

/* Why a response is not stored (NULL: it may be). */
const char *pt_cache_unstorable(const pt_cache_policy *p, int status, const pt_headers *h, const pt_cache_cc *cc);
/* The freshness lifetime (RFC 9111 §4.2.1): s-maxage, max-age, Expires -
 * Date, else the heuristic one (0 when off). */
int64_t pt_cache_lifetime(const pt_cache_policy *p, const pt_headers *h, const pt_cache_cc *cc, int64_t now);
/* The corrected initial age (§4.2.3) of a response received at
 * `response_time` for a request sent at `request_time`. */
int64_t pt_cache_initial_age(const pt_headers *h, int64_t request_time, int64_t response_time);

/* Whether an If-None-Match value lists `etag` (weak comparison) or is "*". */
bool pt_cache_inm_matches(pt_str inm, pt_str etag);
/* Whether Vary names `*`. */
bool pt_cache_vary_star(const pt_headers *h);

#endif
