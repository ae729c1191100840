/* resolve.c — normalization under path rules plus routing, so that the
 * route that decides and the path that is forwarded always agree. See
 * pt_router_resolve in router.h and docs/routing.md "Path rules". */
#include "router/normalize.h"
#include "router/router.h"

/* The rules that govern a decision: the route's, or the global ones for a
 * 404/405 (no single route decided). */
static const pt_path_rules *rules_of(const pt_route_match *m, const pt_path_rules *global)
{
    return m->status == 0 && m->route ? &m->route->path_rules : global;
}

static bool same_decision(const pt_route_match *a, const pt_route_match *b)
{
    return a->status == b->status && a->route == b->route;
}

static bool same_path(const char *a, ssize_t an, const char *b, ssize_t bn)
{
    return an == bn && memcmp(a, b, (size_t)an) == 0;
}

/* Output room for raw[0..n): n + 1, plus 2 per raw '\' (kept as "%5C"). */
static size_t norm_cap(pt_str raw)
{
    size_t cap = raw.n + 1;
    for (size_t i = 0; i < raw.n; i++) cap += raw.p[i] == '\\' ? 2 : 0;
    return cap;
}

int pt_router_resolve(const pt_router *r, const pt_path_rules *global, pt_str raw, pt_route_input *in,
                      pt_arena *a, pt_route_match *out, const char **detail)
{
    size_t cap = norm_cap(raw);
    char *p0 = pt_arena_alloc(a, cap);
    unsigned seen = 0;
    ssize_t n0 = pt_path_normalize_rules(raw.p, raw.n, &pt_path_rules_keep_all, p0, &seen, detail);
    if (n0 < 0) return PT_ERR;
    in->path = pt_str_make(p0, (size_t)n0);
    pt_router_match(r, in, a, out);
    if (!seen) return 0; /* no class present: every rule set gives p0 */

    pt_route_match m0 = *out;
    const pt_path_rules *rules0 = rules_of(&m0, global);
    char *p1 = pt_arena_alloc(a, cap);
    ssize_t n1 = pt_path_normalize_rules(raw.p, raw.n, rules0, p1, NULL, detail);
    if (n1 < 0) return PT_ERR;
    if (same_path(p0, n0, p1, n1)) return 0; /* R0 decided on exactly p1 */

    in->path = pt_str_make(p1, (size_t)n1);
    pt_router_match(r, in, a, out); /* params now slice p1 */
    if (same_decision(&m0, out)) return 0;
    const pt_path_rules *rules1 = rules_of(out, global);
    if (memcmp(rules1, rules0, sizeof(*rules0)) == 0) return 0; /* R1's rules give p1 too */
    char *p2 = pt_arena_alloc(a, cap);
    ssize_t n2 = pt_path_normalize_rules(raw.p, raw.n, rules1, p2, NULL, detail);
    if (n2 < 0) return PT_ERR;
    if (same_path(p1, n1, p2, n2)) return 0;
    if (detail) *detail = "the path's spelling resolves to routes with different path rules";
    return PT_ERR;
}
