/* router.h — chooses the route for a request.
 *
 * Built once per config generation from the route list (pt_router_build),
 * immutable afterwards, shared by every worker thread (pt_router_match is
 * read-only on the router). Lookup cost does not grow with the number of
 * routes: hosts are found by hash, paths by a segment trie per host group
 * whose children are hash tables. Details and rationale: docs/routing.md.
 *
 * Matching, in priority order (deterministic):
 *  1. Host groups, most specific first: the exact host; then wildcard groups
 *     "*.example.com" whose suffix matches (one or more labels before
 *     ".example.com"; never "example.com" itself), longest suffix first;
 *     then routes without hosts. A host group that yields no decision (no
 *     path candidate, or only candidates that failed on headers/query) falls
 *     back to the next, less specific group.
 *  2. Inside a host group: EXACT patterns, then PREFIX patterns, then REGEX.
 *     - EXACT/PREFIX patterns are normalized at build time exactly like
 *       request paths (pt_path_normalize), so "/a//b" matches "/a/b".
 *     - EXACT: the pattern equals the path; "{name}" segments match one
 *       non-empty segment.
 *     - PREFIX: the pattern matches whole leading segments of the path
 *       ("/api" matches "/api", "/api/", "/api/x", not "/apix"; "/" and
 *       PT_PATH_ANY match everything; a trailing '/' in a prefix pattern is
 *       ignored). "{name}" segments are allowed.
 *     - Among tree candidates, patterns are ordered segment by segment: at
 *       the first segment where two patterns differ, a literal beats a
 *       "{name}"; when one PREFIX pattern extends the other, the longer wins.
 *     - REGEX routes are tried only when the tree has no decision, in config
 *       order, as an anchored match of the whole normalized path; named
 *       groups become parameters.
 *  3. For one pattern (same host group, same pattern), routes are tried in
 *     config order; the first whose methods, headers and query predicates all
 *     match wins. If none wins but some failed only on the method, the answer
 *     is 405 with allowed_methods = union of those routes' methods (the
 *     regex routes of a host group count as one pattern for this rule).
 *     Otherwise the search continues with the next candidate; nothing => 404.
 *  Methods: 0 means any; a route allowing GET also allows HEAD.
 *  Header predicate: value NULL => header present; else some field with that
 *  name (case-insensitive) has exactly that value (case-sensitive).
 *  Query predicate: value NULL => parameter present; else some parameter with
 *  that (percent-decoded) name has that percent-decoded value ('+' = space).
 */
#ifndef PT_ROUTER_ROUTER_H
#define PT_ROUTER_ROUTER_H

#include "config/config.h"
#include "core/arena.h"
#include "http/message.h"

#define PT_MAX_ROUTE_PARAMS 16

typedef struct {
    pt_str name;
    pt_str value;
} pt_route_param;

typedef struct {
    const pt_route_conf *route; /* NULL unless status == 0 */
    int status;                 /* 0 matched; 404 no route; 405 path+host matched but not the method */
    uint32_t allowed_methods;   /* for 405: PT_METHOD_BIT union (the Allow header) */
    pt_route_param params[PT_MAX_ROUTE_PARAMS];
    int nparams;
    size_t prefix_len;          /* bytes of the normalized path matched by a PREFIX pattern (strip_prefix) */
} pt_route_match;

typedef struct {
    pt_str host;                /* lowercased, no port; may be empty (HTTP/1.0) */
    pt_str path;                /* normalized (pt_path_normalize) */
    pt_method method;
    const pt_headers *headers;  /* may be NULL (no headers) */
    pt_str query;               /* raw query string, without '?' */
} pt_route_input;

typedef struct pt_router pt_router;

/* Builds the lookup structures for routes[0..n) (config order is
 * routes[i].index). `routes` must outlive the router (matches point at it).
 * Compiles REGEX patterns with PCRE2 (JIT when available). Errors (bad
 * regex, bad template such as "/a/{}" or a duplicate parameter name, more
 * than PT_MAX_ROUTE_PARAMS parameters, a rewrite naming an unknown
 * parameter) are reported with pt_conf_error() as "FILE:LINE:1: route 'NAME':
 * ..." at the route's line; all of them are reported, then NULL is returned.
 * The router owns its memory (heap); free with pt_router_free. */
pt_router *pt_router_build(const pt_route_conf *routes, size_t n, pt_conf_ctx *ctx);
void pt_router_free(pt_router *r);

/* Finds the route for `in` and fills *out (see the rules above). Safe for
 * concurrent callers. Does not allocate on the tree path; when REGEX routes
 * are tried, PCRE2 match data comes from arena `a` (a may be NULL: then the
 * heap is used and released before returning). Parameter values are slices
 * of in->path; parameter names point into the router (valid while it lives). */
void pt_router_match(const pt_router *r, const pt_route_input *in, pt_arena *a, pt_route_match *out);

/* Normalizes the raw request path and routes it so that the route's own
 * path rules (route->path_rules; `global` when no route matches) hold for
 * the path that is matched AND forwarded (docs/routing.md "Path rules"):
 *   1. p0 = the keep-all form (every class opaque); if it shows no class
 *      (the common case), route it and stop: all rules agree.
 *   2. R0 = match(p0); p1 = normalize under R0's rules (a rejection is 400).
 *      p1 == p0, or match(p1) is R0 again: R0 with p1.
 *   3. Otherwise R1 = match(p1) is accepted only when R1's rules also give
 *      p1; else 400 (the spelling leads to routes that disagree about it).
 * So whatever is served satisfies: match(path) == route and
 * normalize(raw, route's rules) == path. `in` carries host, method,
 * headers and query; on success in->path is the normalized path (arena
 * memory) and *out the decision (status 0/404/405, as pt_router_match).
 * Returns 0, or PT_ERR with *detail set (answer 400). `r` may be NULL (no
 * routes: 404 after the global rules); `a` (the request arena) may not. */
int pt_router_resolve(const pt_router *r, const pt_path_rules *global, pt_str raw_path, pt_route_input *in,
                      pt_arena *a, pt_route_match *out, const char **detail);

/* The path to send upstream for a matched route:
 *  - rewrite set: the template with each "{name}" replaced by the parameter
 *    value (values are already-normalized path bytes); for a PREFIX route
 *    with strip_prefix, the rest of the path after the prefix is appended;
 *  - else strip_prefix on a PREFIX route: the path minus m->prefix_len
 *    bytes, "/" if nothing is left;
 *  - else normalized_path unchanged.
 * The result is allocated in `a` or is a slice of normalized_path / a static
 * "/" — valid as long as both are. Unknown names cannot occur (rejected at
 * build time) and expand to nothing. */
pt_str pt_route_upstream_path(const pt_route_conf *route, const pt_route_match *m, pt_str normalized_path,
                              pt_arena *a);

/* Checks `tmpl` (a rewrite template) at build time: starts with '/', every
 * '{' opens a "{name}" that is closed and names one of names[0..nnames).
 * Returns NULL if valid, else a static description of the problem; for an
 * unknown name, *bad_name (if not NULL) is set to it. */
const char *pt_route_check_rewrite(const char *tmpl, const pt_str *names, size_t nnames, pt_str *bad_name);

#endif
