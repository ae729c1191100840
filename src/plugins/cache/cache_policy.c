/* cache_policy.c — RFC 9111 rules of the cache plugin (cache_policy.h). */
#include "plugins/cache/cache_policy.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* A delta-seconds value; -1 when malformed. Saturates at 2^31 (§1.2.2). */
static int64_t delta_seconds(pt_str v)
{
    if (v.n >= 2 && v.p[0] == '"' && v.p[v.n - 1] == '"') v = pt_str_make(v.p + 1, v.n - 2);
    if (v.n == 0) return -1;
    int64_t x = 0;
    for (size_t i = 0; i < v.n; i++) {
        if (v.p[i] < '0' || v.p[i] > '9') return -1;
        if (x < 2147483648) x = x * 10 + (v.p[i] - '0');
    }
    return x > 2147483648 ? 2147483648 : x;
}

void pt_cache_cc_parse(const pt_headers *h, bool request, pt_cache_cc *cc)
{
    memset(cc, 0, sizeof(*cc));
    cc->max_age = cc->s_maxage = cc->swr = cc->sie = cc->min_fresh = cc->max_stale = -1;
    for (uint32_t i = 0; i < h->n; i++) {
        if (request && pt_str_ieq_lit(h->v[i].name, "pragma")) {
            pt_str rest = h->v[i].value, tok;
            while (pt_list_next(&rest, &tok))
                if (pt_str_ieq_lit(tok, "no-cache")) cc->no_cache = true;
            continue;
        }
        if (!pt_str_ieq_lit(h->v[i].name, "cache-control")) continue;
        pt_str rest = h->v[i].value, tok;
        while (pt_list_next(&rest, &tok)) {
            pt_str name = tok, val = PT_STR_NULL;
            const char *eq = memchr(tok.p, '=', tok.n);
            if (eq) {
                name = pt_str_make(tok.p, (size_t)(eq - tok.p));
                val = pt_str_make(eq + 1, tok.n - name.n - 1);
                while (name.n && (name.p[name.n - 1] == ' ' || name.p[name.n - 1] == '\t')) name.n--;
                while (val.n && (val.p[0] == ' ' || val.p[0] == '\t')) val.p++, val.n--;
            }
            if (pt_str_ieq_lit(name, "max-age")) {
                int64_t d = delta_seconds(val);
                cc->max_age = d < 0 ? 0 : d;
            } else if (pt_str_ieq_lit(name, "s-maxage")) {
                int64_t d = delta_seconds(val);
                cc->s_maxage = d < 0 ? 0 : d;
            } else if (pt_str_ieq_lit(name, "stale-while-revalidate")) {
                cc->swr = delta_seconds(val);
            } else if (pt_str_ieq_lit(name, "stale-if-error")) {
                cc->sie = delta_seconds(val);
            } else if (pt_str_ieq_lit(name, "min-fresh")) {
                cc->min_fresh = delta_seconds(val);
            } else if (pt_str_ieq_lit(name, "max-stale")) {
                cc->max_stale = eq ? delta_seconds(val) : 2147483648;
            } else if (pt_str_ieq_lit(name, "no-store")) {
                cc->no_store = true;
            } else if (pt_str_ieq_lit(name, "no-cache")) {
                /* the qualified form (no-cache="Set-Cookie") is treated as unqualified: stricter */
                cc->no_cache = true;
            } else if (pt_str_ieq_lit(name, "private")) {
                cc->private_ = true;
            } else if (pt_str_ieq_lit(name, "must-revalidate")) {
                cc->must_revalidate = true;
            } else if (pt_str_ieq_lit(name, "proxy-revalidate")) {
                cc->proxy_revalidate = true;
            } else if (pt_str_ieq_lit(name, "public")) {
                cc->public_ = true;
            } else if (pt_str_ieq_lit(name, "only-if-cached")) {
                cc->only_if_cached = true;
            }
        }
    }
}

static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
static const char *const wdays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};

int64_t pt_cache_http_date(pt_str s)
{
    char buf[64];
    if (s.n == 0 || s.n >= sizeof(buf)) return -1;
    memcpy(buf, s.p, s.n);
    buf[s.n] = '\0';
    struct tm tm;
    static const char *const forms[] = {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT",
                                        "%a %b %e %H:%M:%S %Y"};
    for (size_t i = 0; i < PT_ARRAY_LEN(forms); i++) {
        memset(&tm, 0, sizeof(tm));
        const char *end = strptime(buf, forms[i], &tm);
        if (end && *end == '\0') return (int64_t)timegm(&tm);
    }
    return -1;
}

size_t pt_cache_http_date_fmt(int64_t t, char *buf)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    int n = snprintf(buf, 30, "%s, %02d %s %04d %02d:%02d:%02d GMT", wdays[tm.tm_wday], tm.tm_mday,
                     months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return n > 0 ? (size_t)n : 0;
}

/* Statuses RFC 9110 §15.1 makes heuristically cacheable (206 left out: the
 * cache stores whole representations only). */
static bool heuristic_status(int status)
{
    static const int list[] = {200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501};
    for (size_t i = 0; i < PT_ARRAY_LEN(list); i++)
        if (list[i] == status) return true;
    return false;
}

static bool explicit_freshness(const pt_headers *h, const pt_cache_cc *cc)
{
    return cc->max_age >= 0 || cc->s_maxage >= 0 || pt_headers_get(h, "expires") != NULL;
}

bool pt_cache_vary_star(const pt_headers *h)
{
    for (uint32_t i = 0; i < h->n; i++) {
        if (!pt_str_ieq_lit(h->v[i].name, "vary")) continue;
        pt_str rest = h->v[i].value, tok;
        while (pt_list_next(&rest, &tok))
            if (pt_str_eq_lit(tok, "*")) return true;
    }
    return false;
}

const char *pt_cache_unstorable(const pt_cache_policy *p, int status, const pt_headers *h, const pt_cache_cc *cc)
{
    if (cc->no_store) return "no-store";
    if (cc->private_) return "private";
    if (pt_cache_vary_star(h)) return "vary-star";
    if (!p->allow_set_cookie && pt_headers_get(h, "set-cookie")) return "set-cookie";
    bool extra = false;
    for (size_t i = 0; i < p->nextra; i++) extra |= p->extra_statuses[i] == (uint32_t)status;
    bool explicit_ = explicit_freshness(h, cc);
    if (heuristic_status(status)) {
        if (!explicit_ && p->heuristic_ttl <= 0 && !cc->no_cache) return "no-freshness";
        return NULL;
    }
    if (!extra) return "status";
    if (!explicit_) return "no-freshness";
    return NULL;
}

int64_t pt_cache_lifetime(const pt_cache_policy *p, const pt_headers *h, const pt_cache_cc *cc, int64_t now)
{
    if (cc->s_maxage >= 0) return cc->s_maxage;
    if (cc->max_age >= 0) return cc->max_age;
    const pt_str *exp = pt_headers_get(h, "expires");
    if (exp) {
        int64_t e = pt_cache_http_date(*exp);
        if (e < 0) return 0; /* an invalid Expires means already expired (§5.3) */
        const pt_str *date = pt_headers_get(h, "date");
        int64_t d = date ? pt_cache_http_date(*date) : -1;
        if (d < 0) d = now;
        return e > d ? e - d : 0;
    }
    return p->heuristic_ttl > 0 ? p->heuristic_ttl : 0;
}

int64_t pt_cache_initial_age(const pt_headers *h, int64_t request_time, int64_t response_time)
{
    const pt_str *date = pt_headers_get(h, "date");
    const pt_str *age = pt_headers_get(h, "age");
    int64_t d = date ? pt_cache_http_date(*date) : -1;
    int64_t apparent = d >= 0 && response_time > d ? response_time - d : 0;
    int64_t age_value = age ? delta_seconds(*age) : 0;
    if (age_value < 0) age_value = 0;
    int64_t delay = response_time > request_time ? response_time - request_time : 0;
    int64_t corrected = age_value + delay;
    return apparent > corrected ? apparent : corrected;
}

/* An entity-tag without its weakness prefix. */
static pt_str etag_opaque(pt_str t)
{
    if (t.n >= 2 && t.p[0] == 'W' && t.p[1] == '/') t = pt_str_make(t.p + 2, t.n - 2);
    return t;
}

bool pt_cache_inm_matches(pt_str inm, pt_str etag)
{
    pt_str rest = inm, tok;
    while (pt_list_next(&rest, &tok)) {
        if (pt_str_eq_lit(tok, "*")) return true;
        if (pt_str_eq(etag_opaque(tok), etag_opaque(etag))) return true;
    }
    return false;
}
