/* test_router.c — route matching priorities, predicates, upstream paths and
 * build-time errors (router/router.h). Routes are built directly as
 * pt_route_conf arrays; no YAML involved. */
#include <stdio.h>

#include "router/router.h"
#include "testlib.h"

/* ---- fixtures ---- */

#define MAXR 64
static pt_route_conf R[MAXR];
static char NAMES[MAXR][16];
static int NR;
static pt_errors ERRS;
static pt_arena *ARENA;
static pt_conf_ctx CTX;
static pt_route_match M;

static void reset(void)
{
    memset(R, 0, sizeof(R));
    NR = 0;
    pt_errors_free(&ERRS);
    if (ARENA) pt_arena_free(ARENA);
    ARENA = pt_arena_new(4096);
    CTX = (pt_conf_ctx){.file = "test.yaml", .arena = ARENA, .errors = &ERRS};
}

/* Appends a route named "rN" (N = config index), line 100+N. */
static pt_route_conf *add(pt_path_kind kind, const char *path)
{
    PT_ASSERT(NR < MAXR);
    pt_route_conf *r = &R[NR];
    snprintf(NAMES[NR], sizeof(NAMES[NR]), "r%d", NR);
    r->name = NAMES[NR];
    r->index = NR;
    r->line = 100 + NR;
    r->path_kind = kind;
    r->path = (char *)path;
    NR++;
    return r;
}

static pt_router *build(void) { return pt_router_build(R, (size_t)NR, &CTX); }

static pt_headers *HDRS;
static const char *QUERY = "";

/* Matches and returns the route name ("404"/"405" when unmatched). */
static const char *match_full(pt_router *rt, const char *host, pt_method m, const char *path)
{
    pt_route_input in = {
        .host = pt_str_c(host), .path = pt_str_c(path), .method = m, .headers = HDRS, .query = pt_str_c(QUERY)};
    pt_router_match(rt, &in, ARENA, &M);
    if (M.status == 404) return "404";
    if (M.status == 405) return "405";
    return M.route ? M.route->name : "(null)";
}
static const char *get(pt_router *rt, const char *path) { return match_full(rt, "", PT_METHOD_GET, path); }
static const char *hget(pt_router *rt, const char *host, const char *path)
{
    return match_full(rt, host, PT_METHOD_GET, path);
}

static const char *param(const char *name)
{
    for (int i = 0; i < M.nparams; i++)
        if (pt_str_eq_lit(M.params[i].name, name)) {
            static char buf[256];
            snprintf(buf, sizeof(buf), "%.*s", (int)M.params[i].value.n, M.params[i].value.p);
            return buf;
        }
    return "(absent)";
}

static bool errors_contain(const char *needle)
{
    for (size_t i = 0; i < ERRS.n; i++)
        if (strstr(ERRS.msgs[i], needle)) return true;
    return false;
}

static pt_str upstream(pt_router *rt, const char *path)
{
    get(rt, path);
    if (!M.route) return PT_STR_LIT("(unmatched)");
    return pt_route_upstream_path(M.route, &M, pt_str_c(path), ARENA);
}

#define M_ALL 0u
#define BIT(m) PT_METHOD_BIT(PT_METHOD_##m)

/* ---- exact / prefix / params ---- */

TEST(exact_match_and_404)
{
    reset();
    add(PT_PATH_EXACT, "/users");
    pt_router *rt = build();
    CHECK(rt != NULL);
    CHECK_STR(get(rt, "/users"), "r0");
    CHECK_STR(get(rt, "/users/"), "404");
    CHECK_STR(get(rt, "/users/1"), "404");
    CHECK_STR(get(rt, "/user"), "404");
    CHECK_INT(M.nparams, 0);
    pt_router_free(rt);
}

TEST(exact_root_and_trailing_slash)
{
    reset();
    add(PT_PATH_EXACT, "/");
    add(PT_PATH_EXACT, "/a/");
    pt_router *rt = build();
    CHECK_STR(get(rt, "/"), "r0");
    CHECK_STR(get(rt, "/a/"), "r1");
    CHECK_STR(get(rt, "/a"), "404");
    pt_router_free(rt);
}

TEST(prefix_segment_boundaries)
{
    reset();
    add(PT_PATH_PREFIX, "/api");
    pt_router *rt = build();
    CHECK_STR(get(rt, "/api"), "r0");
    CHECK_STR(get(rt, "/api/"), "r0");
    CHECK_STR(get(rt, "/api/x/y"), "r0");
    CHECK_STR(get(rt, "/apix"), "404");
    CHECK_STR(get(rt, "/"), "404");
    pt_router_free(rt);
}

TEST(prefix_root_and_any_match_everything)
{
    reset();
    add(PT_PATH_PREFIX, "/");
    pt_router *rt = build();
    CHECK_STR(get(rt, "/"), "r0");
    CHECK_STR(get(rt, "/x/y/z"), "r0");
    pt_router_free(rt);

    reset();
    add(PT_PATH_ANY, NULL);
    rt = build();
    CHECK_STR(get(rt, "/"), "r0");
    CHECK_STR(get(rt, "/anything"), "r0");
    CHECK_INT(M.prefix_len, 0);
    pt_router_free(rt);
}

TEST(prefix_pattern_trailing_slash_ignored)
{
    reset();
    add(PT_PATH_PREFIX, "/static/");
    pt_router *rt = build();
    CHECK_STR(get(rt, "/static/a.css"), "r0");
    CHECK_STR(get(rt, "/static"), "r0");
    CHECK_STR(get(rt, "/staticx"), "404");
    pt_router_free(rt);
}

TEST(longer_prefix_wins)
{
    reset();
    add(PT_PATH_PREFIX, "/");
    add(PT_PATH_PREFIX, "/api");
    add(PT_PATH_PREFIX, "/api/v1");
    pt_router *rt = build();
    CHECK_STR(get(rt, "/api/v1/users"), "r2");
    CHECK_INT(M.prefix_len, 7);
    CHECK_STR(get(rt, "/api/v2/users"), "r1");
    CHECK_INT(M.prefix_len, 4);
    CHECK_STR(get(rt, "/other"), "r0");
    pt_router_free(rt);
}

TEST(exact_beats_prefix)
{
    reset();
    add(PT_PATH_PREFIX, "/api/users"); /* earlier in config, still loses */
    add(PT_PATH_EXACT, "/api/users");
    pt_router *rt = build();
    CHECK_STR(get(rt, "/api/users"), "r1");
    CHECK_STR(get(rt, "/api/users/7"), "r0");
    pt_router_free(rt);
}

TEST(exact_params_capture_one_nonempty_segment)
{
    reset();
    add(PT_PATH_EXACT, "/users/{id}/posts/{post_id}");
    pt_router *rt = build();
    CHECK_STR(get(rt, "/users/42/posts/7"), "r0");
    CHECK_INT(M.nparams, 2);
    CHECK_STR(param("id"), "42");
    CHECK_STR(param("post_id"), "7");
    CHECK_STR(get(rt, "/users/42/posts/"), "404");
    CHECK_STR(get(rt, "/users/42/posts"), "404");
    CHECK_STR(get(rt, "/users/42/posts/7/x"), "404");
    pt_router_free(rt);
}

TEST(param_value_is_slice_of_input_path)
{
    reset();
    add(PT_PATH_EXACT, "/f/{name}");
    pt_router *rt = build();
    const char *path = "/f/a%2Fb";
    pt_route_input in = {.path = pt_str_c(path), .method = PT_METHOD_GET};
    pt_router_match(rt, &in, ARENA, &M);
    CHECK_INT(M.status, 0);
    CHECK_INT(M.nparams, 1);
    CHECK(M.params[0].value.p == path + 3);
    CHECK_SLICE(M.params[0].value, "a%2Fb");
    pt_router_free(rt);
}

TEST(literal_segment_beats_param)
{
    reset();
    add(PT_PATH_EXACT, "/users/{id}");
    add(PT_PATH_EXACT, "/users/me");
    pt_router *rt = build();
    CHECK_STR(get(rt, "/users/me"), "r1");
    CHECK_INT(M.nparams, 0);
    CHECK_STR(get(rt, "/users/you"), "r0");
    CHECK_STR(param("id"), "you");
    pt_router_free(rt);
}

TEST(literal_branch_backtracks_to_param)
{
    reset();
    add(PT_PATH_EXACT, "/a/b/x");
    add(PT_PATH_EXACT, "/a/{p}/c");
    pt_router *rt = build();
    CHECK_STR(get(rt, "/a/b/c"), "r1"); /* literal "b" branch has no "c": back to {p} */
    CHECK_STR(param("p"), "b");
    CHECK_STR(get(rt, "/a/b/x"), "r0");
    pt_router_free(rt);
}

TEST(prefix_ordering_literal_first_then_longer)
{
    reset();
    add(PT_PATH_PREFIX, "/a/{x}/c");
    add(PT_PATH_PREFIX, "/a/b");
    add(PT_PATH_PREFIX, "/a");
    pt_router *rt = build();
    CHECK_STR(get(rt, "/a/b/c/d"), "r1"); /* literal "b" beats {x} at segment 2 */
    CHECK_STR(get(rt, "/a/z/c/d"), "r0"); /* deeper than "/a" */
    CHECK_STR(param("x"), "z");
    CHECK_INT(M.prefix_len, 6);
    CHECK_STR(get(rt, "/a/z/q"), "r2");
    CHECK_INT(M.nparams, 0);
    pt_router_free(rt);
}

TEST(shared_param_node_keeps_each_routes_names)
{
    reset();
    add(PT_PATH_EXACT, "/u/{id}");
    add(PT_PATH_EXACT, "/u/{uid}/posts");
    pt_router *rt = build();
    CHECK_STR(get(rt, "/u/5"), "r0");
    CHECK_STR(param("id"), "5");
    CHECK_STR(get(rt, "/u/6/posts"), "r1");
    CHECK_STR(param("uid"), "6");
    CHECK_STR(param("id"), "(absent)");
    pt_router_free(rt);
}

TEST(patterns_are_normalized_like_requests)
{
    reset();
    add(PT_PATH_EXACT, "/a//b/./c");
    add(PT_PATH_PREFIX, "/%7euser/x/..");
    add(PT_PATH_EXACT, "/f/%2f/{id}");
    pt_router *rt = build();
    CHECK(rt != NULL);
    CHECK_STR(get(rt, "/a/b/c"), "r0");
    CHECK_STR(get(rt, "/~user/docs"), "r1");
    CHECK_INT(M.prefix_len, 6);
    CHECK_STR(get(rt, "/f/%2F/9"), "r2");
    CHECK_STR(param("id"), "9");
    pt_router_free(rt);
}

/* ---- regex ---- */

TEST(regex_anchored_with_named_groups)
{
    reset();
    add(PT_PATH_REGEX, "/items/(?<id>[0-9]+)(?:/(?<sub>[a-z]+))?");
    pt_router *rt = build();
    CHECK(rt != NULL);
    CHECK_STR(get(rt, "/items/12"), "r0");
    CHECK_INT(M.nparams, 1); /* "sub" did not participate */
    CHECK_STR(param("id"), "12");
    CHECK_STR(get(rt, "/items/12/abc"), "r0");
    CHECK_STR(param("sub"), "abc");
    CHECK_STR(get(rt, "/items/12x"), "404");   /* anchored at the end */
    CHECK_STR(get(rt, "/x/items/12"), "404");  /* anchored at the start */
    pt_router_free(rt);
}

TEST(regex_only_after_tree_and_in_config_order)
{
    reset();
    add(PT_PATH_REGEX, "/v[0-9]/.*");
    add(PT_PATH_REGEX, "/v1/.*");
    add(PT_PATH_PREFIX, "/v2");
    pt_router *rt = build();
    CHECK_STR(get(rt, "/v2/x"), "r2"); /* tree first, despite config order */
    CHECK_STR(get(rt, "/v1/x"), "r0"); /* first regex in config order */
    pt_router_free(rt);
}

TEST(regex_match_without_arena)
{
    reset();
    add(PT_PATH_REGEX, "/r/(?<n>.+)");
    pt_router *rt = build();
    pt_route_input in = {.path = PT_STR_LIT("/r/abc"), .method = PT_METHOD_GET};
    pt_router_match(rt, &in, NULL, &M);
    CHECK_INT(M.status, 0);
    CHECK_STR(param("n"), "abc");
    pt_router_free(rt);
}

TEST(tree_match_does_not_allocate_regex_uses_arena)
{
    reset();
    add(PT_PATH_EXACT, "/a/{id}");
    add(PT_PATH_PREFIX, "/p");
    pt_router *rt = build();
    size_t before = pt_arena_used(ARENA);
    CHECK_STR(get(rt, "/a/1"), "r0");
    CHECK_STR(get(rt, "/p/q"), "r1");
    CHECK_STR(get(rt, "/zzz"), "404");
    CHECK_INT(pt_arena_used(ARENA), before); /* tree path: no allocation */
    pt_router_free(rt);

    reset();
    add(PT_PATH_REGEX, "/re/(?<x>[a-z]+)");
    rt = build();
    before = pt_arena_used(ARENA);
    CHECK_STR(get(rt, "/re/abc"), "r0");
    CHECK(pt_arena_used(ARENA) > before); /* PCRE2 match data came from the arena */
    pt_router_free(rt);
}

/* ---- hosts ---- */

TEST(host_exact_only_matches_that_host)
{
    reset();
    pt_route_conf *r = add(PT_PATH_PREFIX, "/");
    char *hosts[] = {"api.example.com", "api2.example.com"};
    r->hosts = hosts;
    r->nhosts = 2;
    pt_router *rt = build();
    CHECK_STR(hget(rt, "api.example.com", "/x"), "r0");
    CHECK_STR(hget(rt, "api2.example.com", "/x"), "r0");
    CHECK_STR(hget(rt, "api.example.com.", "/x"), "r0"); /* trailing dot */
    CHECK_STR(hget(rt, "www.example.com", "/x"), "404");
    CHECK_STR(hget(rt, "", "/x"), "404");
    pt_router_free(rt);
}

TEST(host_wildcard_needs_a_label)
{
    reset();
    pt_route_conf *r = add(PT_PATH_PREFIX, "/");
    char *hosts[] = {"*.example.com"};
    r->hosts = hosts;
    r->nhosts = 1;
    pt_router *rt = build();
    CHECK_STR(hget(rt, "a.example.com", "/"), "r0");
    CHECK_STR(hget(rt, "a.b.example.com", "/"), "r0");
    CHECK_STR(hget(rt, "example.com", "/"), "404");
    CHECK_STR(hget(rt, "aexample.com", "/"), "404");
    CHECK_STR(hget(rt, "example.com.evil", "/"), "404");
    pt_router_free(rt);
}

TEST(host_longest_wildcard_wins)
{
    reset();
    char *h0[] = {"*.example.com"}, *h1[] = {"*.api.example.com"};
    pt_route_conf *r = add(PT_PATH_PREFIX, "/");
    r->hosts = h0, r->nhosts = 1;
    r = add(PT_PATH_PREFIX, "/");
    r->hosts = h1, r->nhosts = 1;
    pt_router *rt = build();
    CHECK_STR(hget(rt, "x.api.example.com", "/"), "r1");
    CHECK_STR(hget(rt, "api.example.com", "/"), "r0");
    pt_router_free(rt);
}

TEST(host_exact_beats_wildcard_beats_any)
{
    reset();
    char *hw[] = {"*.example.com"}, *he[] = {"shop.example.com"};
    add(PT_PATH_PREFIX, "/"); /* any host, first in config */
    pt_route_conf *r = add(PT_PATH_PREFIX, "/");
    r->hosts = hw, r->nhosts = 1;
    r = add(PT_PATH_PREFIX, "/");
    r->hosts = he, r->nhosts = 1;
    pt_router *rt = build();
    CHECK_STR(hget(rt, "shop.example.com", "/"), "r2");
    CHECK_STR(hget(rt, "blog.example.com", "/"), "r1");
    CHECK_STR(hget(rt, "other.org", "/"), "r0");
    CHECK_STR(hget(rt, "", "/"), "r0");
    pt_router_free(rt);
}

TEST(host_falls_back_when_group_has_no_path)
{
    reset();
    char *hw[] = {"*.example.com"}, *he[] = {"shop.example.com"};
    pt_route_conf *r = add(PT_PATH_EXACT, "/cart");
    r->hosts = he, r->nhosts = 1;
    r = add(PT_PATH_PREFIX, "/blog");
    r->hosts = hw, r->nhosts = 1;
    add(PT_PATH_PREFIX, "/");
    pt_router *rt = build();
    CHECK_STR(hget(rt, "shop.example.com", "/cart"), "r0");
    CHECK_STR(hget(rt, "shop.example.com", "/blog/1"), "r1"); /* exact -> wildcard */
    CHECK_STR(hget(rt, "shop.example.com", "/x"), "r2");      /* -> any */
    pt_router_free(rt);
}

/* ---- config order, methods, predicates ---- */

TEST(same_pattern_first_in_config_order)
{
    reset();
    /* array order differs from config order: index decides */
    add(PT_PATH_EXACT, "/a");
    add(PT_PATH_EXACT, "/a");
    R[0].index = 1;
    R[1].index = 0;
    pt_router *rt = build();
    CHECK_STR(get(rt, "/a"), "r1");
    pt_router_free(rt);
}

TEST(method_filter_and_405_allow)
{
    reset();
    add(PT_PATH_EXACT, "/items")->methods = BIT(GET);
    add(PT_PATH_EXACT, "/items")->methods = BIT(POST);
    pt_router *rt = build();
    CHECK_STR(match_full(rt, "", PT_METHOD_POST, "/items"), "r1");
    CHECK_STR(match_full(rt, "", PT_METHOD_GET, "/items"), "r0");
    CHECK_STR(match_full(rt, "", PT_METHOD_HEAD, "/items"), "r0"); /* GET implies HEAD */
    CHECK_STR(match_full(rt, "", PT_METHOD_DELETE, "/items"), "405");
    CHECK(M.route == NULL);
    CHECK_INT(M.allowed_methods, BIT(GET) | BIT(HEAD) | BIT(POST));
    pt_router_free(rt);
}

TEST(method_405_stops_before_shorter_prefix)
{
    reset();
    add(PT_PATH_PREFIX, "/");
    add(PT_PATH_PREFIX, "/api")->methods = BIT(PUT);
    pt_router *rt = build();
    CHECK_STR(match_full(rt, "", PT_METHOD_GET, "/api/x"), "405");
    CHECK_INT(M.allowed_methods, BIT(PUT));
    CHECK_STR(match_full(rt, "", PT_METHOD_GET, "/web"), "r0");
    pt_router_free(rt);
}

TEST(header_failure_continues_to_less_specific)
{
    reset();
    static pt_kv_match h[] = {{"X-Version", "2"}};
    add(PT_PATH_PREFIX, "/");
    pt_route_conf *r = add(PT_PATH_PREFIX, "/api");
    r->headers = h, r->nheaders = 1;
    r->methods = BIT(POST);
    pt_router *rt = build();
    HDRS = NULL;
    /* headers fail (and method too): not a 405, fall through to "/" */
    CHECK_STR(match_full(rt, "", PT_METHOD_GET, "/api/x"), "r0");
    pt_headers hs = {0};
    pt_headers_add(&hs, ARENA, PT_STR_LIT("x-version"), PT_STR_LIT("2"));
    HDRS = &hs;
    CHECK_STR(match_full(rt, "", PT_METHOD_POST, "/api/x"), "r1");
    CHECK_STR(match_full(rt, "", PT_METHOD_GET, "/api/x"), "405");
    HDRS = NULL;
    pt_router_free(rt);
}

TEST(header_predicates)
{
    reset();
    static pt_kv_match present[] = {{"X-Beta", NULL}};
    static pt_kv_match valued[] = {{"X-Tenant", "Acme"}};
    add(PT_PATH_EXACT, "/p")->headers = present, R[0].nheaders = 1;
    add(PT_PATH_EXACT, "/p")->headers = valued, R[1].nheaders = 1;
    add(PT_PATH_EXACT, "/p");
    pt_router *rt = build();
    pt_headers hs = {0};
    HDRS = &hs;
    CHECK_STR(get(rt, "/p"), "r2");
    pt_headers_add(&hs, ARENA, PT_STR_LIT("X-TENANT"), PT_STR_LIT("acme"));
    CHECK_STR(get(rt, "/p"), "r2"); /* value is case-sensitive */
    pt_headers_add(&hs, ARENA, PT_STR_LIT("x-tenant"), PT_STR_LIT("Acme"));
    CHECK_STR(get(rt, "/p"), "r1"); /* any field with the name may carry the value */
    pt_headers_add(&hs, ARENA, PT_STR_LIT("x-beta"), PT_STR_LIT(""));
    CHECK_STR(get(rt, "/p"), "r0"); /* presence only */
    HDRS = NULL;
    pt_router_free(rt);
}

TEST(query_predicates)
{
    reset();
    static pt_kv_match q0[] = {{"debug", NULL}};
    static pt_kv_match q1[] = {{"name", "a b/c"}, {"v", "1"}};
    add(PT_PATH_EXACT, "/q")->query = q0, R[0].nquery = 1;
    add(PT_PATH_EXACT, "/q")->query = q1, R[1].nquery = 2;
    add(PT_PATH_EXACT, "/q");
    pt_router *rt = build();
    QUERY = "";
    CHECK_STR(get(rt, "/q"), "r2");
    QUERY = "x=1&debug";
    CHECK_STR(get(rt, "/q"), "r0");
    QUERY = "debug=0";
    CHECK_STR(get(rt, "/q"), "r0");
    QUERY = "debugger=1";
    CHECK_STR(get(rt, "/q"), "r2");
    QUERY = "v=1&name=a+b%2Fc";
    CHECK_STR(get(rt, "/q"), "r1");
    QUERY = "v=1&name=a%20b%2fc";
    CHECK_STR(get(rt, "/q"), "r1");
    QUERY = "v=1&name=a+b";
    CHECK_STR(get(rt, "/q"), "r2");
    QUERY = "name=a+b%2Fc";
    CHECK_STR(get(rt, "/q"), "r2"); /* all predicates must match */
    QUERY = "";
    pt_router_free(rt);
}

/* ---- upstream paths ---- */

TEST(strip_prefix)
{
    reset();
    add(PT_PATH_PREFIX, "/api")->strip_prefix = true;
    add(PT_PATH_PREFIX, "/svc/{name}")->strip_prefix = true;
    add(PT_PATH_PREFIX, "/keep");
    pt_router *rt = build();
    CHECK_SLICE(upstream(rt, "/api/users/1"), "/users/1");
    CHECK_SLICE(upstream(rt, "/api"), "/");
    CHECK_SLICE(upstream(rt, "/api/"), "/");
    CHECK_SLICE(upstream(rt, "/svc/billing/inv/3"), "/inv/3");
    CHECK_SLICE(upstream(rt, "/keep/x"), "/keep/x");
    pt_router_free(rt);
}

TEST(rewrite_with_params)
{
    reset();
    add(PT_PATH_EXACT, "/users/{id}/profile")->rewrite = "/v2/profiles/{id}.json";
    add(PT_PATH_REGEX, "/old/(?<year>[0-9]{4})/(?<slug>[^/]+)")->rewrite = "/posts/{slug}?y={year}";
    add(PT_PATH_PREFIX, "/legacy")->rewrite = "/modern/";
    R[2].strip_prefix = true;
    pt_router *rt = build();
    CHECK(rt != NULL);
    CHECK_SLICE(upstream(rt, "/users/42/profile"), "/v2/profiles/42.json");
    CHECK_SLICE(upstream(rt, "/old/2020/hello"), "/posts/hello?y=2020");
    CHECK_SLICE(upstream(rt, "/legacy/a/b"), "/modern/a/b"); /* strip_prefix + rewrite */
    CHECK_SLICE(upstream(rt, "/legacy"), "/modern/");
    pt_router_free(rt);
}

/* ---- scale ---- */

TEST(ten_thousand_routes_resolve_correctly)
{
    enum { N = 10000 };
    pt_route_conf *rs = pt_xcalloc(N, sizeof(*rs));
    char (*paths)[48] = pt_xcalloc(N, 48);
    char (*names)[16] = pt_xcalloc(N, 16);
    static char *hosts[] = {"h1.example.com", "*.tenants.example.com"};
    for (int i = 0; i < N; i++) {
        pt_route_conf *r = &rs[i];
        r->index = i;
        r->line = i + 1;
        snprintf(names[i], 16, "n%d", i);
        r->name = names[i];
        switch (i % 4) {
        case 0: snprintf(paths[i], 48, "/svc%d/items", i); r->path_kind = PT_PATH_EXACT; break;
        case 1: snprintf(paths[i], 48, "/svc%d/items/{id}", i); r->path_kind = PT_PATH_EXACT; break;
        case 2: snprintf(paths[i], 48, "/pre%d", i); r->path_kind = PT_PATH_PREFIX; break;
        default: snprintf(paths[i], 48, "/svc%d/{a}/x/{b}", i); r->path_kind = PT_PATH_PREFIX; break;
        }
        r->path = paths[i];
        if (i % 100 == 7) r->hosts = &hosts[0], r->nhosts = 1;
        if (i % 100 == 11) r->hosts = &hosts[1], r->nhosts = 1;
    }
    reset();
    pt_router *rt = pt_router_build(rs, N, &CTX);
    CHECK(rt != NULL);
    CHECK_STR(get(rt, "/svc0/items"), "n0");
    CHECK_STR(get(rt, "/svc9996/items"), "n9996");
    CHECK_STR(get(rt, "/svc5001/items/abc"), "n5001");
    CHECK_STR(param("id"), "abc");
    CHECK_STR(get(rt, "/pre9998/deep/path"), "n9998");
    CHECK_STR(get(rt, "/svc4003/q/x/r/tail"), "n4003");
    CHECK_STR(param("a"), "q");
    CHECK_STR(param("b"), "r");
    CHECK_STR(get(rt, "/svc4/items/1"), "404"); /* route 4 is exact "/svc4/items" */
    CHECK_STR(hget(rt, "h1.example.com", "/svc707/x/x/y"), "n707");
    CHECK_STR(get(rt, "/svc707/x/x/y"), "404"); /* that route requires host h1 */
    CHECK_STR(hget(rt, "a.tenants.example.com", "/svc811/x/x/y"), "n811");
    CHECK_STR(hget(rt, "h1.example.com", "/svc0/items"), "n0"); /* host group fallback */
    pt_router_free(rt);
    free(rs);
    free(paths);
    free(names);
}

/* ---- build errors ---- */

TEST(bad_regex_reported_with_line)
{
    reset();
    add(PT_PATH_EXACT, "/ok");
    add(PT_PATH_REGEX, "/a/(unclosed");
    pt_router *rt = build();
    CHECK(rt == NULL);
    CHECK_INT(ERRS.n, 1);
    CHECK(errors_contain("test.yaml:101:"));
    CHECK(errors_contain("r1"));
    CHECK(errors_contain("regex"));
}

TEST(bad_templates_rejected)
{
    const char *bad[] = {"/a/{}", "/a/{id", "/a/x{id}", "/a/{i-d}", "/a/%zz", "/../x", "a/b"};
    for (size_t i = 0; i < PT_ARRAY_LEN(bad); i++) {
        reset();
        add(PT_PATH_EXACT, bad[i]);
        pt_router *rt = build();
        CHECK(rt == NULL);
        CHECK_INT(ERRS.n, 1);
        CHECK(errors_contain("test.yaml:100:"));
    }
}

TEST(duplicate_param_names_rejected)
{
    reset();
    add(PT_PATH_PREFIX, "/a/{id}/b/{id}");
    CHECK(build() == NULL);
    CHECK(errors_contain("duplicate parameter name 'id'"));
}

TEST(rewrite_unknown_param_rejected)
{
    reset();
    add(PT_PATH_EXACT, "/a/{id}")->rewrite = "/b/{user}";
    add(PT_PATH_REGEX, "/r/(?<x>.*)")->rewrite = "/s/{y}";
    add(PT_PATH_EXACT, "/c")->rewrite = "no-slash";
    CHECK(build() == NULL);
    CHECK_INT(ERRS.n, 3); /* every bad route is reported */
    CHECK(errors_contain("unknown parameter 'user'"));
    CHECK(errors_contain("unknown parameter 'y'"));
    CHECK(errors_contain("must start with '/'"));
}

TEST(check_rewrite_api)
{
    pt_str names[] = {PT_STR_LIT("id")};
    pt_str bad = PT_STR_NULL;
    CHECK(pt_route_check_rewrite("/x/{id}", names, 1, &bad) == NULL);
    CHECK(pt_route_check_rewrite("/x/{id", names, 1, &bad) != NULL);
    CHECK(pt_route_check_rewrite("/x/{}", names, 1, &bad) != NULL);
    CHECK(pt_route_check_rewrite("/x/}", names, 1, &bad) != NULL);
    CHECK(pt_route_check_rewrite("/x/{nope}", names, 1, &bad) != NULL);
    CHECK_SLICE(bad, "nope");
}

TEST(too_many_params_rejected)
{
    reset();
    add(PT_PATH_EXACT, "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}/{j}/{k}/{l}/{m}/{n}/{o}/{p}/{q}");
    CHECK(build() == NULL);
    CHECK(errors_contain("more than 16"));
}

TEST(empty_router_answers_404)
{
    reset();
    pt_router *rt = build();
    CHECK(rt != NULL);
    CHECK_STR(get(rt, "/"), "404");
    CHECK_STR(hget(rt, "a.b", "/x"), "404");
    pt_router_free(rt);
}

static void __attribute__((destructor)) cleanup(void)
{
    pt_errors_free(&ERRS);
    if (ARENA) pt_arena_free(ARENA);
}

/* ---- pt_router_resolve: normalization under path rules + routing ---- */

#include "router/normalize.h"

static pt_path_rules GLOBAL; /* zero: reject everything */
static const char *RDETAIL;
static char RPATH_BUF[512];
static const char *RPATH = RPATH_BUF; /* a pointer, so CHECK_STR can test it for NULL */

/* Resolves raw `path`; returns the route name, "404"/"405", or "400"
 * (RDETAIL set). RPATH receives the normalized path on success. */
static const char *resolve(pt_router *rt, const char *path)
{
    pt_route_input in = {.host = PT_STR_LIT(""), .method = PT_METHOD_GET, .query = PT_STR_LIT("")};
    RDETAIL = NULL;
    RPATH_BUF[0] = '\0';
    if (pt_router_resolve(rt, &GLOBAL, pt_str_c(path), &in, ARENA, &M, &RDETAIL) < 0) return "400";
    snprintf(RPATH_BUF, sizeof(RPATH_BUF), "%.*s", (int)in.path.n, in.path.p);
    if (M.status == 404) return "404";
    if (M.status == 405) return "405";
    return M.route->name;
}

static pt_router *admin_and_root(void)
{
    reset();
    add(PT_PATH_PREFIX, "/admin");
    add(PT_PATH_PREFIX, "/");
    return NULL;
}

TEST(resolve_defaults_reject_and_route_plain_paths)
{
    GLOBAL = (pt_path_rules){0};
    admin_and_root();
    pt_router *rt = build();
    CHECK_STR(resolve(rt, "/admin"), "r0");
    CHECK_STR(resolve(rt, "//x/../admin/y"), "r0");
    CHECK_STR(RPATH, "/admin/y");
    CHECK_STR(resolve(rt, "/other"), "r1");
    CHECK_STR(resolve(rt, "/admin%2Fx"), "400");
    CHECK(RDETAIL && strstr(RDETAIL, "encoded slash"));
    CHECK_STR(resolve(rt, "/admin;x=1"), "400");
    CHECK_STR(resolve(rt, "/x\\..\\admin"), "400");
    CHECK_STR(resolve(rt, "/x/..%2F"), "400");
    pt_router_free(rt);
}

/* A route's keep override governs the requests that reach it (the kept form
 * is opaque: "admin%2Fx" is one segment, not under /admin). */
TEST(resolve_route_keep_override)
{
    GLOBAL = (pt_path_rules){0};
    admin_and_root();
    R[1].path_rules.encoded_slash = PT_PATHRULE_KEEP;
    pt_router *rt = build();
    CHECK_STR(resolve(rt, "/admin%2fx"), "r1");
    CHECK_STR(RPATH, "/admin%2Fx");
    CHECK_STR(resolve(rt, "/admin/a%2Fb"), "400"); /* reaches /admin, whose rules reject */
    pt_router_free(rt);
}

TEST(resolve_global_decode_routes_decoded_path)
{
    GLOBAL = (pt_path_rules){.encoded_slash = PT_PATHRULE_DECODE, .semicolon = PT_PATHRULE_DECODE,
                             .backslash = PT_PATHRULE_DECODE};
    admin_and_root();
    R[0].path_rules = R[1].path_rules = GLOBAL; /* what the loader stores */
    pt_router *rt = build();
    CHECK_STR(resolve(rt, "/admin%2Fx"), "r0");
    CHECK_STR(RPATH, "/admin/x");
    CHECK_STR(resolve(rt, "/x%2F..%2Fadmin"), "r0");
    CHECK_STR(resolve(rt, "/x/..;/admin;jsessionid=1"), "r0");
    CHECK_STR(RPATH, "/admin");
    CHECK_STR(resolve(rt, "/x\\..\\admin"), "r0");
    CHECK_STR(resolve(rt, "/x%2Fy"), "r1");
    CHECK_STR(RPATH, "/x/y");
    pt_router_free(rt);
}

/* "/" decodes but "/admin" rejects: the decoded form reaches /admin, whose
 * rules refuse the spelling -> 400, never the "/" upstream. */
TEST(resolve_decode_into_rejecting_route_is_400)
{
    GLOBAL = (pt_path_rules){0};
    admin_and_root();
    R[1].path_rules.encoded_slash = PT_PATHRULE_DECODE;
    pt_router *rt = build();
    CHECK_STR(resolve(rt, "/admin%2Fx"), "400");
    CHECK(RDETAIL && strstr(RDETAIL, "encoded slash"));
    CHECK_STR(resolve(rt, "/a%2Fb"), "r1");
    CHECK_STR(RPATH, "/a/b");
    /* /admin keeps: the decoded and the kept form lead to different routes */
    R[0].path_rules.encoded_slash = PT_PATHRULE_KEEP;
    pt_router_free(rt);
    rt = build();
    CHECK_STR(resolve(rt, "/admin%2Fx"), "400");
    CHECK(RDETAIL && strstr(RDETAIL, "different path rules"));
    pt_router_free(rt);
}

TEST(resolve_params_slice_the_final_path)
{
    GLOBAL = (pt_path_rules){0};
    reset();
    add(PT_PATH_EXACT, "/files/{name}")->path_rules.encoded_slash = PT_PATHRULE_KEEP;
    pt_router *rt = build();
    CHECK_STR(resolve(rt, "/files/a%2fb"), "r0");
    CHECK_STR(param("name"), "a%2Fb");
    CHECK_STR(resolve(rt, "/nothing%2F"), "400"); /* no route: the global rules */
    GLOBAL.encoded_slash = PT_PATHRULE_KEEP;
    CHECK_STR(resolve(rt, "/nothing%2F"), "404");
    pt_router_free(rt);
}

/* The invariant, over generated spellings and random per-route rules: a
 * request served by route R with path p satisfies match(p) == R and
 * normalize(raw, R's rules) == p — the route that decided is the route the
 * forwarded path selects, under that route's own rules. */
TEST(resolve_invariant_on_generated_spellings)
{
    static const char *pieces[] = {"/", "admin", "x", "..", ".", "%2f", "%5c", "\\", ";", ";a=1", "%3b",
                                   "%2e%2e", "%252f", "files", ".%20", "%c0%af", "//"};
    uint32_t seed = 99;
#define RND() ((seed = seed * 1103515245u + 12345u) >> 16)
    int served = 0, refused = 0;
    for (int round = 0; round < 40 && !tl_cur_failed; round++) {
        reset();
        add(PT_PATH_PREFIX, "/admin");
        add(PT_PATH_PREFIX, "/files");
        add(PT_PATH_EXACT, "/x/{p}");
        add(PT_PATH_PREFIX, "/");
        GLOBAL = (pt_path_rules){0};
        uint8_t *g = (uint8_t *)&GLOBAL;
        for (size_t k = 0; k < sizeof(GLOBAL); k++) g[k] = (uint8_t)(RND() % 3);
        for (int i = 0; i < NR; i++) {
            R[i].path_rules = GLOBAL;
            uint8_t *f = (uint8_t *)&R[i].path_rules;
            for (size_t k = 0; k < sizeof(GLOBAL); k++)
                if (RND() % 3 == 0) f[k] = (uint8_t)(RND() % 3);
        }
        pt_router *rt = build();
        for (int iter = 0; iter < 500 && !tl_cur_failed; iter++) {
            char in[256] = "/";
            size_t n = 1;
            int parts = 1 + (int)(RND() % 7);
            for (int k = 0; k < parts; k++) {
                const char *pc = pieces[RND() % PT_ARRAY_LEN(pieces)];
                memcpy(in + n, pc, strlen(pc));
                n += strlen(pc);
            }
            in[n] = '\0';
            const char *who = resolve(rt, in);
            if (strcmp(who, "400") == 0) {
                refused++;
                continue;
            }
            served++;
            const pt_route_conf *rc = M.status == 0 ? M.route : NULL;
            char path[512];
            snprintf(path, sizeof(path), "%s", RPATH);
            /* match(p) == R */
            pt_route_input again = {.host = PT_STR_LIT(""), .path = pt_str_c(path), .method = PT_METHOD_GET,
                                    .query = PT_STR_LIT("")};
            pt_route_match m2;
            pt_router_match(rt, &again, ARENA, &m2);
            CHECK(m2.status == M.status && m2.route == rc);
            /* normalize(raw, R's rules) == p */
            char out[PT_PATH_NORM_CAP(256)];
            ssize_t nn = pt_path_normalize_rules(in, n, rc ? &rc->path_rules : &GLOBAL, out, NULL, NULL);
            CHECK(nn >= 0);
            if (nn >= 0) CHECK_STRN(out, (size_t)nn, path);
            if (tl_cur_failed) fprintf(stderr, "  (input \"%s\" round %d -> %s %s)\n", in, round, who, path);
        }
        pt_router_free(rt);
    }
#undef RND
    CHECK(served > 2000 && refused > 1000);
}

TEST_MAIN()
