/* route_test.c — `portico route-test -c FILE METHOD URL [-H 'Name: value']...`:
 * explains what the configuration does with one request, without serving
 * it: the route chosen (and the path as routed), the plugins that run in
 * order, the upstream and the exact target sent to it, and for every other
 * route why it did not match. The decision is the real one: the request
 * goes through pt_router_resolve on the configuration's own router. The
 * reasons come from the same router code: each other route is built alone
 * and matched with one predicate at a time left in place. */
#include "cli/route_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin/plugin.h"
#include "proxy/generation.h"
#include "router/router.h"

typedef struct {
    const char *method;
    pt_str host, path, query;
    bool has_query;
    pt_headers headers;
} rt_request;

static void lower(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z') *s = (char)(*s - 'A' + 'a');
}

/* Host without port, lowercased (an IPv6 literal keeps its brackets). */
static pt_str host_part(pt_arena *a, const char *h, size_t n)
{
    size_t end = n;
    if (n && h[0] == '[') {
        const char *rb = memchr(h, ']', n);
        if (rb) end = (size_t)(rb - h) + 1;
    } else {
        const char *colon = memchr(h, ':', n);
        if (colon) end = (size_t)(colon - h);
    }
    char *s = pt_arena_strndup(a, h, end);
    lower(s);
    return pt_str_c(s);
}

/* URL: http(s)://authority/path?query or /path?query; headers "Name: value". */
static int parse_request(pt_arena *a, const char *method, const char *url, char **hdrs, int nhdrs, rt_request *out)
{
    memset(out, 0, sizeof(*out));
    out->method = method;
    const char *p = url;
    if (!strncmp(p, "http://", 7) || !strncmp(p, "https://", 8)) {
        p = strstr(p, "://") + 3;
        size_t alen = strcspn(p, "/?#");
        out->host = host_part(a, p, alen);
        p += alen;
    }
    if (*p != '/' && *p != '?') {
        if (*p) {
            fprintf(stderr, "portico route-test: URL must be http[s]://HOST/PATH or /PATH, got \"%s\"\n", url);
            return -1;
        }
        p = "/";
    }
    size_t plen = strcspn(p, "?#");
    out->path = plen ? pt_arena_str(a, pt_str_make(p, plen)) : PT_STR_LIT("/");
    if (p[plen] == '?') {
        const char *q = p + plen + 1;
        out->query = pt_arena_str(a, pt_str_make(q, strcspn(q, "#")));
        out->has_query = true;
    }
    for (int i = 0; i < nhdrs; i++) {
        const char *colon = strchr(hdrs[i], ':');
        if (!colon || colon == hdrs[i]) {
            fprintf(stderr, "portico route-test: -H needs 'Name: value', got \"%s\"\n", hdrs[i]);
            return -1;
        }
        const char *v = colon + 1;
        while (*v == ' ' || *v == '\t') v++;
        pt_str name = pt_arena_str(a, pt_str_make(hdrs[i], (size_t)(colon - hdrs[i])));
        pt_headers_add(&out->headers, a, name, pt_arena_str(a, pt_str_c(v)));
        if (pt_str_ieq_lit(name, "host")) out->host = host_part(a, v, strlen(v));
    }
    return 0;
}

static const char *kind_name(pt_path_kind k)
{
    switch (k) {
    case PT_PATH_EXACT: return "exact";
    case PT_PATH_PREFIX: return "prefix";
    case PT_PATH_REGEX: return "regex";
    default: return "any path";
    }
}

static void print_methods(uint32_t mask)
{
    if (!mask) {
        printf("any");
        return;
    }
    bool first = true;
    for (int m = 1; m < PT_METHOD__COUNT; m++)
        if (mask & PT_METHOD_BIT(m)) {
            printf("%s%s", first ? "" : ",", pt_method_name((pt_method)m));
            first = false;
        }
}

/* Does route r, built alone, match `in`? keep_* choose which predicates
 * stay in place (the others are dropped). */
static int match_alone(const pt_route_conf *r, const pt_route_input *in, bool keep_host, bool keep_methods,
                       bool keep_headers, bool keep_query, pt_arena *a)
{
    pt_route_conf one = *r;
    one.index = 0;
    if (!keep_host) one.nhosts = 0;
    if (!keep_methods) one.methods = 0;
    if (!keep_headers) one.nheaders = 0;
    if (!keep_query) one.nquery = 0;
    pt_errors errs = {0};
    pt_conf_ctx ctx = {.file = "", .arena = a, .errors = &errs};
    pt_router *rt = pt_router_build(&one, 1, &ctx);
    pt_errors_free(&errs);
    if (!rt) return -1;
    pt_route_match m;
    pt_router_match(rt, in, a, &m);
    pt_router_free(rt);
    return m.status == 0;
}

static void print_kv(const char *what, const pt_kv_match *v, size_t n)
{
    printf("%s ", what);
    for (size_t i = 0; i < n; i++)
        printf("%s%s%s%s", i ? ", " : "", v[i].name, v[i].value ? "=" : " present", v[i].value ? v[i].value : "");
}

/* Why route r did not win. */
static void explain(const pt_route_conf *r, const pt_route_input *in, const pt_route_conf *winner, pt_arena *a)
{
    printf("  %-20s line %-4d ", r->name, r->line);
    if (match_alone(r, in, true, true, true, true, a) == 1) {
        if (winner)
            printf("matches too, but route '%s' takes precedence (more specific host or path, or earlier in "
                   "the file; see docs/routing.md)\n", winner->name);
        else
            printf("matches alone, but not with the other routes (see docs/routing.md)\n");
        return;
    }
    if (match_alone(r, in, false, false, false, false, a) != 1) {
        printf("path %.*s does not match %s %s\n", (int)in->path.n, in->path.p, kind_name(r->path_kind),
               r->path ? r->path : "");
        return;
    }
    bool first = true;
    if (r->nhosts && match_alone(r, in, true, false, false, false, a) != 1) {
        printf("host \"%.*s\" is not ", (int)in->host.n, in->host.p);
        for (size_t i = 0; i < r->nhosts; i++) printf("%s%s", i ? "|" : "", r->hosts[i]);
        first = false;
    }
    if (r->methods && match_alone(r, in, false, true, false, false, a) != 1) {
        printf("%smethod not allowed (allows ", first ? "" : "; ");
        print_methods(r->methods);
        printf(")");
        first = false;
    }
    if (r->nheaders && match_alone(r, in, false, false, true, false, a) != 1) {
        printf("%s", first ? "" : "; ");
        print_kv("needs header", r->headers, r->nheaders);
        first = false;
    }
    if (r->nquery && match_alone(r, in, false, false, false, true, a) != 1) {
        printf("%s", first ? "" : "; ");
        print_kv("needs query", r->query, r->nquery);
        first = false;
    }
    if (first) printf("its predicates do not hold together");
    printf("\n");
}

static void print_plugins(const pt_generation *g, const pt_route_conf *route)
{
    const pt_pipeline *p = route ? &g->route_pipes[route->index] : &g->global;
    printf("plugins (in order):%s\n", p->n ? "" : " none");
    size_t nglobal = g->cfg->plugins.n;
    for (size_t i = 0; i < p->n; i++)
        printf("  %zu. %-22s %s, line %d\n", i + 1, p->v[i]->type->name, i < nglobal ? "global" : "route",
               p->v[i]->line);
}

int pt_cli_route_test(pt_generation *g, const char *method, const char *url, char **hdrs, int nhdrs)
{
    pt_arena *a = pt_arena_new(16384);
    rt_request rq;
    if (parse_request(a, method, url, hdrs, nhdrs, &rq) != 0) {
        pt_arena_free(a);
        return 2;
    }
    pt_route_input in = {.host = rq.host,
                         .method = pt_method_from_str(pt_str_c(method)),
                         .headers = &rq.headers,
                         .query = rq.query};
    pt_route_match m;
    const char *detail = NULL;
    printf("request: %s %.*s%s%.*s (host \"%.*s\")\n", method, (int)rq.path.n, rq.path.p,
           rq.has_query ? "?" : "", (int)rq.query.n, rq.query.p, (int)rq.host.n, rq.host.p);
    if (pt_router_resolve(g->router, &g->cfg->path_rules, rq.path, &in, a, &m, &detail) != 0) {
        printf("answer: 400 (%s): the path is refused by the path rules (docs/routing.md)\n", detail);
        pt_arena_free(a);
        return 1;
    }
    printf("path as routed: %.*s\n", (int)in.path.n, in.path.p);
    const pt_route_conf *route = m.status == 0 ? m.route : NULL;
    if (route) {
        printf("route: %s (line %d): %s %s, methods ", route->name, route->line, kind_name(route->path_kind),
               route->path ? route->path : "");
        print_methods(route->methods);
        printf("\n");
        for (int i = 0; i < m.nparams; i++)
            printf("  param %.*s = %.*s\n", (int)m.params[i].name.n, m.params[i].name.p, (int)m.params[i].value.n,
                   m.params[i].value.p);
        print_plugins(g, route);
        if (route->upstream) {
            pt_str up = pt_route_upstream_path(route, &m, in.path, a);
            printf("upstream: %s, target sent: %.*s%s%.*s\n", route->upstream->name, (int)up.n, up.p,
                   rq.has_query ? "?" : "", (int)rq.query.n, rq.query.p);
        } else {
            printf("upstream: none (the route's plugins answer)\n");
        }
    } else {
        printf("answer: %d (%s)", m.status, m.status == 405 ? "path and host match, method not allowed" : "no route");
        if (m.status == 405) {
            printf("; Allow: ");
            print_methods(m.allowed_methods);
        }
        printf("\n");
        print_plugins(g, NULL);
    }
    if (g->cfg->nroutes > (route ? 1u : 0u)) printf("other routes:\n");
    for (size_t i = 0; i < g->cfg->nroutes; i++) {
        const pt_route_conf *r = &g->cfg->routes[i];
        if (r != route) explain(r, &in, route, a);
    }
    pt_arena_free(a);
    return route ? 0 : 1;
}
