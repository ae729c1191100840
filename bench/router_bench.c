/* router_bench.c — shows that route lookup cost does not grow with the
 * number of routes: builds a router with 10 and with 10,000 routes (a mix of
 * literal exact paths, exact paths with {param}, prefixes, prefixes with
 * params, and host-bound routes over a few exact and wildcard hosts), times
 * the same fixed set of lookups against both with clock_gettime, and prints
 * ns/lookup for each and their ratio (target: <= 2).
 *
 * Build and run (from the repository root):
 *   cc -O2 -std=c17 -D_GNU_SOURCE -Isrc bench/router_bench.c \
 *      src/router/router.c src/router/normalize.c src/config/conf_node.c \
 *      src/http/message.c src/core/common.c src/core/arena.c \
 *      -lyaml -lpcre2-8 -o /tmp/router_bench && /tmp/router_bench
 * or, with the library built (make):
 *   cc -O2 -std=c17 -D_GNU_SOURCE -Isrc bench/router_bench.c build/libportico.a \
 *      -lyaml -lpcre2-8 -pthread -o /tmp/router_bench && /tmp/router_bench
 * Optional argument: iterations over the lookup set (default 200000).
 * Each size is measured 5 times (alternating); the best run is reported. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "router/normalize.h"
#include "router/router.h"

static char *const HOSTS[] = {"api.example.com", "*.tenants.example.com", "shop.example.com"};

typedef struct {
    pt_route_conf *routes;
    char (*paths)[48];
    char (*names)[16];
    size_t n;
} route_set;

/* Route i, by i % 5: exact literal, exact with a param, prefix, prefix with
 * a param, exact literal bound to one of three hosts (route 4: api, route 9:
 * the wildcard, route 14: shop, ...). */
static route_set make_routes(size_t n)
{
    route_set s = {pt_xcalloc(n, sizeof(pt_route_conf)), pt_xcalloc(n, 48), pt_xcalloc(n, 16), n};
    for (size_t i = 0; i < n; i++) {
        pt_route_conf *r = &s.routes[i];
        r->index = (int)i;
        r->line = (int)i + 1;
        snprintf(s.names[i], 16, "r%zu", i);
        r->name = s.names[i];
        switch (i % 5) {
        case 0: snprintf(s.paths[i], 48, "/svc%zu/items", i); r->path_kind = PT_PATH_EXACT; break;
        case 1: snprintf(s.paths[i], 48, "/svc%zu/items/{id}", i); r->path_kind = PT_PATH_EXACT; break;
        case 2: snprintf(s.paths[i], 48, "/pre%zu/static", i); r->path_kind = PT_PATH_PREFIX; break;
        case 3: snprintf(s.paths[i], 48, "/svc%zu/{tenant}/x", i); r->path_kind = PT_PATH_PREFIX; break;
        default:
            snprintf(s.paths[i], 48, "/h%zu/status", i);
            r->path_kind = PT_PATH_EXACT;
            r->hosts = (char **)&HOSTS[(i / 5) % 3];
            r->nhosts = 1;
            r->methods = PT_METHOD_BIT(PT_METHOD_GET);
            break;
        }
        r->path = s.paths[i];
    }
    return s;
}

typedef struct {
    const char *host;
    const char *path;
} lookup;

/* The same lookups for both sizes: each hits a route that exists in both
 * sets (indices < 10), plus misses and host fallbacks. */
static const lookup LOOKUPS[] = {
    {"", "/svc0/items"},
    {"", "/svc1/items/12345"},
    {"", "/pre2/static/css/site.css"},
    {"", "/svc3/acme/x/y/z"},
    {"api.example.com", "/h4/status"},
    {"", "/svc5/items"},
    {"", "/svc6/items/abc"},
    {"", "/pre7/static"},
    {"", "/svc8/globex/x"},
    {"a.tenants.example.com", "/h9/status"},
    {"shop.example.com", "/svc0/items"},  /* host group miss -> any */
    {"", "/svc1/items"},                  /* miss */
    {"", "/nothing/here/at/all"},         /* miss */
    {"", "/svc3/acme/y"},                 /* miss (prefix needs x) */
    {"other.org", "/h4/status"},          /* miss (host) */
    {"", "/"},                            /* miss */
};

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Returns ns per lookup over `iters` passes of LOOKUPS; *hits counts matches
 * in one pass (a sanity check that both sizes resolve the same lookups). */
static double bench(size_t nroutes, long iters, int *hits)
{
    route_set s = make_routes(nroutes);
    pt_errors errs = {0};
    pt_arena *conf_arena = pt_arena_new(4096);
    pt_conf_ctx ctx = {.file = "bench", .arena = conf_arena, .errors = &errs};
    pt_router *rt = pt_router_build(s.routes, s.n, &ctx);
    if (!rt) {
        fprintf(stderr, "build failed: %s\n", errs.n ? errs.msgs[0] : "?");
        exit(1);
    }
    size_t nl = PT_ARRAY_LEN(LOOKUPS);
    pt_route_input in[PT_ARRAY_LEN(LOOKUPS)];
    for (size_t i = 0; i < nl; i++)
        in[i] = (pt_route_input){.host = pt_str_c(LOOKUPS[i].host), .path = pt_str_c(LOOKUPS[i].path),
                                 .method = PT_METHOD_GET};
    pt_arena *a = pt_arena_new(4096);
    pt_route_match m;
    *hits = 0;
    for (size_t i = 0; i < nl; i++) {
        pt_router_match(rt, &in[i], a, &m);
        *hits += m.status == 0;
    }
    volatile uintptr_t sink = 0;
    for (long it = 0; it < iters / 10; it++) /* warm-up */
        for (size_t i = 0; i < nl; i++) pt_router_match(rt, &in[i], a, &m), sink += (uintptr_t)m.route;
    double t0 = now_ns();
    for (long it = 0; it < iters; it++)
        for (size_t i = 0; i < nl; i++) pt_router_match(rt, &in[i], a, &m), sink += (uintptr_t)m.route;
    double t1 = now_ns();
    (void)sink;
    pt_arena_free(a);
    pt_router_free(rt);
    pt_arena_free(conf_arena);
    pt_errors_free(&errs);
    free(s.routes);
    free(s.paths);
    free(s.names);
    return (t1 - t0) / ((double)iters * (double)nl);
}

/* Normalization cost, for reference. */
static double bench_normalize(long iters)
{
    static const char *p = "/api//v1/./users/../users/%7Ejohn/%2e%2e/profile%2Fx";
    char out[PT_PATH_NORM_CAP(64)];
    size_t n = strlen(p);
    volatile ssize_t sink = 0;
    double t0 = now_ns();
    for (long i = 0; i < iters; i++) sink += pt_path_normalize(p, n, out, NULL);
    (void)sink;
    return (now_ns() - t0) / (double)iters;
}

int main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 200000;
    if (iters < 10) iters = 10;
    int hits_small = 0, hits_large = 0;
    double small = 1e18, large = 1e18;
    for (int round = 0; round < 5; round++) { /* best of 5, alternating, to damp machine noise */
        small = PT_MIN(small, bench(10, iters, &hits_small));
        large = PT_MIN(large, bench(10000, iters, &hits_large));
    }
    printf("routes=10     %7.1f ns/lookup (%d/%zu lookups matched)\n", small, hits_small, PT_ARRAY_LEN(LOOKUPS));
    printf("routes=10000  %7.1f ns/lookup (%d/%zu lookups matched)\n", large, hits_large, PT_ARRAY_LEN(LOOKUPS));
    printf("ratio (10000/10) = %.2f (target <= 2)\n", large / small);
    printf("normalize: %.1f ns/path (52-byte path with dots, slashes, escapes)\n", bench_normalize(iters * 5));
    return hits_small == hits_large ? 0 : 1;
}
