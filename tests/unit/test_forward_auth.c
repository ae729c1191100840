/* test_forward_auth.c — the forward_auth plugin's pure parts: configure()
 * through the real config loader (valid blocks -> the expected config,
 * invalid ones -> FILE:LINE:COL errors), the auth request it builds (target,
 * fields, normalised URI), the verdict on an auth result, the cache key and
 * ttl, and the cache itself (expiry, LRU eviction, namespaces). The
 * sub-request round trip is covered by tests/integration/test_forward_auth.py. */
#include <stdio.h>

#include "config/config.h"
#include "plugins/forward_auth/forward_auth.h"
#include "plugin/plugin.h"
#include "testlib.h"

#include "router/normalize.h"

/* ------------------------------------------------------------- helpers */

#define HEAD                                                                                                    \
    "listen: [127.0.0.1:8080]\n"                                                                                \
    "upstreams:\n"                                                                                              \
    "  auth: {targets: [127.0.0.1:9000]}\n"                                                                     \
    "  other: {targets: [127.0.0.1:9001]}\n"                                                                    \
    "plugins:\n"                                                                                                \
    "  - forward_auth:\n"
/* Line of the first key inside the forward_auth block. */
#define BLOCK_LINE 7

static pt_config *load(const char *block, pt_errors *e)
{
    char text[4096];
    snprintf(text, sizeof(text), "%s%s", HEAD, block);
    return pt_config_load_string("t.yaml", text, strlen(text), e);
}

static const pt_fauth_conf *conf_of(const pt_config *cfg)
{
    if (!cfg || cfg->plugins.n != 1) return NULL;
    return cfg->plugins.v[0].conf;
}

static bool has_error(const pt_errors *e, const char *needle)
{
    for (size_t i = 0; i < e->n; i++)
        if (strstr(e->msgs[i], needle)) return true;
    fprintf(stderr, "  no error containing \"%s\"; got %zu:\n", needle, e->n);
    for (size_t i = 0; i < e->n; i++) fprintf(stderr, "    %s\n", e->msgs[i]);
    return false;
}

/* Expects the block to be refused with an error containing `needle`. */
static bool refused(const char *block, const char *needle)
{
    pt_errors e = {0};
    pt_config *cfg = load(block, &e);
    bool ok = cfg == NULL && has_error(&e, needle);
    pt_config_free(cfg);
    pt_errors_free(&e);
    return ok;
}

static bool names_are(const pt_fauth_names *l, const char *const *want, size_t n)
{
    if (l->n != n) return false;
    for (size_t i = 0; i < n; i++)
        if (!pt_str_eq_lit(l->v[i], want[i])) return false;
    return true;
}

/* A request with the given header lines "Name: value" (NULL-terminated). */
static pt_request make_req(pt_arena *a, const char *method, const char *target, const char *const *fields)
{
    pt_request r = {0};
    r.method_str = pt_str_c(method);
    r.method = pt_method_from_str(r.method_str);
    r.scheme = PT_STR_LIT("https");
    r.authority = PT_STR_LIT("api.example:8443");
    r.host = PT_STR_LIT("api.example");
    r.target = pt_str_c(target);
    const char *q = strchr(target, '?');
    r.path = q ? pt_str_make(target, (size_t)(q - target)) : r.target;
    r.has_query = q != NULL;
    r.query = q ? pt_str_c(q + 1) : PT_STR_NULL;
    r.version = 11;
    for (size_t i = 0; fields && fields[i]; i++) {
        const char *colon = strchr(fields[i], ':');
        pt_str value = pt_str_c(colon + 1);
        while (value.n && value.p[0] == ' ') value = pt_str_make(value.p + 1, value.n - 1);
        pt_headers_add(&r.headers, a, pt_str_make(fields[i], (size_t)(colon - fields[i])), value);
    }
    return r;
}

static int count_field(const pt_headers *h, const char *name)
{
    int n = 0;
    for (uint32_t i = 0; i < h->n; i++)
        if (pt_str_ieq_lit(h->v[i].name, name)) n++;
    return n;
}

/* --------------------------------------------------------- configure: ok */

TEST(registered)
{
    const pt_plugin_type *t = pt_plugin_find("forward_auth");
    CHECK(t == &pt_plugin_forward_auth);
    CHECK(t && t->worker_init && t->worker_fini && t->on_request_headers && t->state_size);
}

TEST(defaults)
{
    pt_errors e = {0};
    pt_config *cfg = load("      upstream: auth\n", &e);
    const pt_fauth_conf *c = conf_of(cfg);
    CHECK(c != NULL);
    if (c) {
        CHECK(c->upstream == &cfg->upstreams[0]);
        CHECK_SLICE(c->path, "/");
        CHECK(!c->path_prefix);
        CHECK_INT(c->method.n, 0);
        const char *req[] = {"Authorization", "Cookie"};
        CHECK(names_are(&c->request_headers, req, 2));
        CHECK_INT(c->upstream_headers.n, 0);
        const char *cli[] = {"WWW-Authenticate", "Location", "Set-Cookie"};
        CHECK(names_are(&c->client_headers, cli, 3));
        CHECK_INT(c->timeout_ms, 2000);
        CHECK(!c->failure_allow);
        CHECK_INT(c->max_response, 64 * 1024);
        CHECK(!c->cache);
    }
    CHECK_INT(e.n, 0);
    pt_config_free(cfg);
    pt_errors_free(&e);
}

TEST(full_block)
{
    pt_errors e = {0};
    pt_config *cfg = load("      upstream: other\n"
                          "      path: /verify?app=1\n"
                          "      method: GET\n"
                          "      request_headers: [Authorization, X-Api-Key]\n"
                          "      upstream_headers: [X-User-Id, X-User-Groups]\n"
                          "      client_headers: [WWW-Authenticate]\n"
                          "      timeout: 250ms\n"
                          "      failure: allow\n"
                          "      max_response: 1m\n"
                          "      cache: {ttl: 30s, key: [X-Api-Key, Authorization, ':path', ':method', ':host', "
                          "':client'], max_entries: 5}\n",
                          &e);
    const pt_fauth_conf *c = conf_of(cfg);
    CHECK(c != NULL);
    if (c) {
        CHECK(c->upstream == &cfg->upstreams[1]);
        CHECK_SLICE(c->path, "/verify?app=1");
        CHECK_SLICE(c->method, "GET");
        const char *req[] = {"Authorization", "X-Api-Key"};
        CHECK(names_are(&c->request_headers, req, 2));
        const char *up[] = {"X-User-Id", "X-User-Groups"};
        CHECK(names_are(&c->upstream_headers, up, 2));
        CHECK_INT(c->client_headers.n, 1);
        CHECK_INT(c->timeout_ms, 250);
        CHECK(c->failure_allow);
        CHECK_INT(c->max_response, 1 << 20);
        CHECK(c->cache);
        CHECK_INT(c->cache_ttl_ms, 30000);
        CHECK_INT(c->cache_max_entries, 5);
        CHECK_INT(c->ncache_key, 6);
        if (c->ncache_key == 6) {
            CHECK(c->cache_key[0].kind == PT_FAUTH_KEY_HEADER);
            CHECK_SLICE(c->cache_key[0].name, "X-Api-Key");
            CHECK(c->cache_key[2].kind == PT_FAUTH_KEY_PATH);
            CHECK(c->cache_key[3].kind == PT_FAUTH_KEY_METHOD);
            CHECK(c->cache_key[4].kind == PT_FAUTH_KEY_HOST);
            CHECK(c->cache_key[5].kind == PT_FAUTH_KEY_CLIENT);
        }
    }
    pt_config_free(cfg);
    pt_errors_free(&e);
}

TEST(path_prefix_and_original_method)
{
    pt_errors e = {0};
    pt_config *cfg = load("      {upstream: auth, path_prefix: /auth/, method: original, request_headers: []}\n", &e);
    const pt_fauth_conf *c = conf_of(cfg);
    CHECK(c != NULL);
    if (c) {
        CHECK(c->path_prefix);
        CHECK_SLICE(c->path, "/auth"); /* trailing slash dropped: the URI brings its own */
        CHECK_INT(c->method.n, 0);
        CHECK_INT(c->request_headers.n, 0);
    }
    pt_config_free(cfg);
    pt_errors_free(&e);
    cfg = load("      {upstream: auth, path_prefix: /}\n", &e);
    c = conf_of(cfg);
    CHECK(c && c->path_prefix && c->path.n == 0);
    pt_config_free(cfg);
    pt_errors_free(&e);
}

TEST(cache_key_defaults_to_request_headers)
{
    pt_errors e = {0};
    pt_config *cfg = load("      {upstream: auth, cache: {ttl: 5s}}\n", &e);
    const pt_fauth_conf *c = conf_of(cfg);
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->ncache_key, 2);
        CHECK(c->ncache_key == 2 && pt_str_eq_lit(c->cache_key[0].name, "Authorization") &&
              pt_str_eq_lit(c->cache_key[1].name, "Cookie"));
        CHECK_INT(c->cache_max_entries, PT_FAUTH_DEFAULT_MAX_ENTRIES);
    }
    pt_config_free(cfg);
    pt_errors_free(&e);
}

TEST(fingerprint_tracks_settings)
{
    const char *blocks[] = {
        "      {upstream: auth, upstream_headers: [X-User-Id], cache: {ttl: 5s}}\n",
        "      {upstream: auth, upstream_headers: [X-User-Id], cache: {ttl: 5s}, timeout: 1s, failure: allow}\n",
        "      {upstream: auth, upstream_headers: [X-User-Id, X-Groups], cache: {ttl: 5s}}\n",
        "      {upstream: auth, upstream_headers: [X-User-Id], cache: {ttl: 6s}}\n",
        "      {upstream: other, upstream_headers: [X-User-Id], cache: {ttl: 5s}}\n",
        "      {upstream: auth, upstream_headers: [X-User-Id], path: /v, cache: {ttl: 5s}}\n",
        "      {upstream: auth, upstream_headers: [X-User-Id], cache: {ttl: 5s, key: [Authorization, Cookie, ':path']}}\n",
    };
    uint8_t fp[PT_ARRAY_LEN(blocks)][PT_DIGEST_LEN];
    for (size_t i = 0; i < PT_ARRAY_LEN(blocks); i++) {
        pt_errors e = {0};
        pt_config *cfg = load(blocks[i], &e);
        const pt_fauth_conf *c = conf_of(cfg);
        CHECK(c != NULL);
        if (c) memcpy(fp[i], c->fingerprint, PT_DIGEST_LEN);
        pt_config_free(cfg);
        pt_errors_free(&e);
    }
    /* timeout and failure do not change what is cached */
    CHECK(memcmp(fp[0], fp[1], PT_DIGEST_LEN) == 0);
    for (size_t i = 2; i < PT_ARRAY_LEN(blocks); i++) CHECK(memcmp(fp[0], fp[i], PT_DIGEST_LEN) != 0);
}

/* ----------------------------------------------------- configure: errors */

TEST(error_not_a_mapping)
{
    CHECK(refused("      [auth]\n", "t.yaml:7:7: forward_auth: expected a mapping"));
}

TEST(error_upstream_required_and_unknown)
{
    CHECK(refused("      path: /v\n", "t.yaml:7:7: forward_auth: 'upstream' is required"));
    CHECK(refused("      upstream: nope\n", "t.yaml:7:17: unknown upstream 'nope'"));
    CHECK(refused("      upstream: [auth]\n", "t.yaml:7:17: expected the name of an upstream"));
}

TEST(error_unknown_key)
{
    CHECK(refused("      upstream: auth\n      timout: 1s\n", "t.yaml:8:7: unknown key 'timout' in forward_auth"));
}

TEST(error_bad_header_names)
{
    CHECK(refused("      upstream: auth\n      request_headers: [Authorization, 'Bad Header']\n",
                  "t.yaml:8:40: forward_auth: 'request_headers': invalid header name \"Bad Header\""));
    CHECK(refused("      upstream: auth\n      upstream_headers: ['X-User:Id']\n",
                  "t.yaml:8:26: forward_auth: 'upstream_headers': invalid header name"));
    CHECK(refused("      upstream: auth\n      client_headers: ['']\n", "t.yaml:8:24: forward_auth: 'client_headers': invalid"));
    CHECK(refused("      upstream: auth\n      request_headers: Authorization\n",
                  "t.yaml:8:24: forward_auth: 'request_headers' must be a list"));
    CHECK(refused("      upstream: auth\n      upstream_headers: [X-A, x-a]\n", "\"x-a\" appears more than once"));
}

TEST(error_managed_and_reserved_headers)
{
    CHECK(refused("      upstream: auth\n      request_headers: [Host]\n", "framing/hop-by-hop header"));
    CHECK(refused("      upstream: auth\n      upstream_headers: [Content-Length]\n", "framing/hop-by-hop header"));
    CHECK(refused("      upstream: auth\n      client_headers: [Transfer-Encoding]\n", "framing/hop-by-hop header"));
    CHECK(refused("      upstream: auth\n      request_headers: [X-Forwarded-Uri]\n",
                  "\"X-Forwarded-Uri\" is set by forward_auth itself"));
    CHECK(refused("      upstream: auth\n      request_headers: [x-real-ip]\n", "is set by forward_auth itself"));
    CHECK(refused("      upstream: auth\n      request_headers: [X-Request-Id]\n", "is set by forward_auth itself"));
    CHECK(refused("      upstream: auth\n      upstream_headers: [X-Forwarded-For]\n",
                  "is set by the proxy on every upstream request"));
    CHECK(refused("      upstream: auth\n      client_headers: [Content-Type]\n",
                  "always travels with a denial's body"));
}

TEST(error_bad_durations_and_sizes)
{
    CHECK(refused("      upstream: auth\n      timeout: soon\n", "t.yaml:8:16: invalid duration 'soon'"));
    CHECK(refused("      upstream: auth\n      timeout: 0\n", "t.yaml:8:16: forward_auth: 'timeout' must be between"));
    CHECK(refused("      upstream: auth\n      timeout: 6m\n", "'timeout' must be between 1ms and 5m"));
    CHECK(refused("      upstream: auth\n      max_response: 0\n", "'max_response' must be between 1 and 16m"));
    CHECK(refused("      upstream: auth\n      max_response: 1g\n", "'max_response' must be between 1 and 16m"));
    CHECK(refused("      upstream: auth\n      max_response: lots\n", "t.yaml:8:21: invalid size"));
    CHECK(refused("      upstream: auth\n      cache: {ttl: 0}\n", "'cache.ttl' must be between 1ms and 24h"));
    CHECK(refused("      upstream: auth\n      cache: {ttl: 2d}\n", "invalid duration '2d'"));
    CHECK(refused("      upstream: auth\n      cache: {ttl: 25h}\n", "'cache.ttl' must be between"));
}

TEST(error_other_values)
{
    CHECK(refused("      upstream: auth\n      failure: open\n", "t.yaml:8:16: forward_auth: 'failure' must be 'deny' or 'allow'"));
    CHECK(refused("      upstream: auth\n      method: 'GE T'\n", "'method' must be 'original' or a method token"));
    CHECK(refused("      upstream: auth\n      path: verify\n", "t.yaml:8:13: forward_auth: 'path' must start with '/'"));
    CHECK(refused("      upstream: auth\n      path: '/a b'\n", "'path' must start with '/'"));
    CHECK(refused("      upstream: auth\n      path: '/a#b'\n", "'path' must start with '/'"));
    CHECK(refused("      upstream: auth\n      path_prefix: '/a?b=1'\n", "'path_prefix' must start with '/'"));
    CHECK(refused("      upstream: auth\n      path: /a\n      path_prefix: /b\n",
                  "t.yaml:9:20: forward_auth: 'path' and 'path_prefix' are mutually exclusive"));
}

TEST(error_cache_block)
{
    CHECK(refused("      upstream: auth\n      cache: 30s\n", "'cache' must be a mapping"));
    CHECK(refused("      upstream: auth\n      cache: {key: [Authorization, Cookie]}\n", "'cache.ttl' is required"));
    CHECK(refused("      upstream: auth\n      cache: {ttl: 1s, size: 3}\n", "unknown key 'size' in forward_auth.cache"));
    CHECK(refused("      upstream: auth\n      cache: {ttl: 1s, max_entries: 0}\n", "t.yaml:8:37:"));
    CHECK(refused("      upstream: auth\n      cache: {ttl: 1s, max_entries: 2000000}\n", "t.yaml:8:37:"));
    CHECK(refused("      upstream: auth\n      cache: {ttl: 1s, key: [Authorization]}\n",
                  "t.yaml:8:29: forward_auth: 'cache.key' must include every request_headers entry: \"Cookie\""));
    CHECK(refused("      upstream: auth\n      cache: {ttl: 1s, key: [Authorization, Cookie, ':query']}\n",
                  "\":query\" is neither a header name nor one of :method, :path, :host, :client"));
    CHECK(refused("      upstream: auth\n      cache: {ttl: 1s, key: [Authorization, Cookie, cookie]}\n",
                  "'cache.key': \"cookie\" appears more than once"));
    CHECK(refused("      upstream: auth\n      cache: {ttl: 1s, key: Authorization}\n", "'cache.key' must be a list"));
}

/* ------------------------------------------------------ the auth request */

static const pt_fauth_conf *load_ok(const char *block, pt_config **cfg)
{
    pt_errors e = {0};
    *cfg = load(block, &e);
    if (!*cfg) {
        for (size_t i = 0; i < e.n; i++) fprintf(stderr, "    %s\n", e.msgs[i]);
    }
    pt_errors_free(&e);
    return conf_of(*cfg);
}

/* pt_fauth_uri over the path the core would route (pt_txn_path). */
static pt_str uri_of(const pt_request *r, pt_arena *a)
{
    char *np = pt_arena_alloc(a, PT_PATH_NORM_CAP(r->path.n));
    const char *detail = NULL;
    ssize_t n = pt_path_normalize(r->path.p, r->path.n, np, &detail);
    return pt_fauth_uri(n < 0 ? PT_STR_NULL : pt_str_make(np, (size_t)n), r, a);
}

TEST(uri_is_normalised_with_raw_query)
{
    pt_arena *a = pt_arena_new(1024);
    pt_request r = make_req(a, "GET", "/a/./b//c/../%64?x=%41&y", NULL);
    CHECK_SLICE(uri_of(&r, a), "/a/b/d?x=%41&y");
    r = make_req(a, "GET", "/public/%2e%2e/admin", NULL);
    CHECK_SLICE(uri_of(&r, a), "/admin");
    r = make_req(a, "GET", "/q?", NULL);
    CHECK_SLICE(uri_of(&r, a), "/q?");
    r = make_req(a, "GET", "/..", NULL); /* cannot normalise (the core answers 400): raw */
    CHECK_SLICE(uri_of(&r, a), "/..");
    pt_arena_free(a);
}

TEST(target_fixed_or_prefixed)
{
    pt_config *cfg;
    pt_arena *a = pt_arena_new(1024);
    const pt_fauth_conf *c = load_ok("      {upstream: auth, path: '/verify?x=1'}\n", &cfg);
    CHECK(c && pt_str_eq_lit(pt_fauth_target(c, PT_STR_LIT("/a?b"), a), "/verify?x=1"));
    pt_config_free(cfg);
    c = load_ok("      {upstream: auth, path_prefix: /auth/}\n", &cfg);
    CHECK(c && pt_str_eq_lit(pt_fauth_target(c, PT_STR_LIT("/a?b"), a), "/auth/a?b"));
    pt_config_free(cfg);
    c = load_ok("      {upstream: auth, path_prefix: /}\n", &cfg);
    CHECK(c && pt_str_eq_lit(pt_fauth_target(c, PT_STR_LIT("/a?b"), a), "/a?b"));
    pt_config_free(cfg);
    pt_arena_free(a);
}

TEST(auth_headers)
{
    pt_config *cfg;
    pt_arena *a = pt_arena_new(1024);
    const pt_fauth_conf *c = load_ok("      {upstream: auth, request_headers: [authorization, Cookie]}\n", &cfg);
    const char *fields[] = {"Authorization: Bearer t", "Cookie: a=1", "X-Secret: s", "cookie: b=2",
                            "X-Forwarded-For: 6.6.6.6", NULL};
    pt_request r = make_req(a, "PATCH", "/x?y", fields);
    pt_headers out = {0};
    if (c) pt_fauth_auth_headers(c, &r, PT_STR_LIT("/x?y"), PT_STR_LIT("203.0.113.9"), a, &out);
    CHECK_INT(count_field(&out, "Authorization"), 1);
    CHECK_INT(count_field(&out, "Cookie"), 2);
    CHECK_INT(count_field(&out, "X-Secret"), 0);
    CHECK_INT(count_field(&out, "X-Forwarded-For"), 1);
    const pt_str *v;
    CHECK((v = pt_headers_get(&out, "X-Forwarded-For")) && pt_str_eq_lit(*v, "203.0.113.9"));
    CHECK((v = pt_headers_get(&out, "X-Real-IP")) && pt_str_eq_lit(*v, "203.0.113.9"));
    CHECK((v = pt_headers_get(&out, "X-Forwarded-Method")) && pt_str_eq_lit(*v, "PATCH"));
    CHECK((v = pt_headers_get(&out, "X-Forwarded-Proto")) && pt_str_eq_lit(*v, "https"));
    CHECK((v = pt_headers_get(&out, "X-Forwarded-Host")) && pt_str_eq_lit(*v, "api.example:8443"));
    CHECK((v = pt_headers_get(&out, "X-Forwarded-Uri")) && pt_str_eq_lit(*v, "/x?y"));
    CHECK((v = pt_headers_get(&out, "Cookie")) && pt_str_eq_lit(*v, "a=1"));
    pt_config_free(cfg);
    pt_arena_free(a);
}

/* ------------------------------------------------------------- verdicts */

TEST(classify)
{
    pt_config *cfg;
    pt_arena *a = pt_arena_new(1024);
    const pt_fauth_conf *c = load_ok("      {upstream: auth, upstream_headers: [X-User-Id]}\n", &cfg);
    CHECK(c != NULL);
    if (!c) return;
    pt_headers h = {0};
    pt_http_result r = {.error = PT_HTTP_OK, .status = 200, .headers = &h};
    CHECK(pt_fauth_classify(c, &r) == PT_FAUTH_ALLOW);
    r.status = 204;
    CHECK(pt_fauth_classify(c, &r) == PT_FAUTH_ALLOW);
    r.status = 299;
    CHECK(pt_fauth_classify(c, &r) == PT_FAUTH_ALLOW);
    int denials[] = {300, 302, 304, 401, 403, 404, 429, 500, 502, 503, 599};
    for (size_t i = 0; i < PT_ARRAY_LEN(denials); i++) {
        r.status = denials[i];
        CHECK(pt_fauth_classify(c, &r) == PT_FAUTH_DENY);
    }
    int invalid[] = {0, 100, 101, 199, 600, 999};
    for (size_t i = 0; i < PT_ARRAY_LEN(invalid); i++) {
        r.status = invalid[i];
        CHECK(pt_fauth_classify(c, &r) == PT_FAUTH_FAIL);
    }
    pt_http_error errs[] = {PT_HTTP_ERR_CONNECT, PT_HTTP_ERR_TOO_LARGE, PT_HTTP_ERR_PROTOCOL, PT_HTTP_ERR_UPSTREAM_GONE};
    for (size_t i = 0; i < PT_ARRAY_LEN(errs); i++) {
        pt_http_result f = {.error = errs[i]};
        CHECK(pt_fauth_classify(c, &f) == PT_FAUTH_FAIL);
    }
    pt_http_result t = {.error = PT_HTTP_ERR_TIMEOUT};
    CHECK(pt_fauth_classify(c, &t) == PT_FAUTH_FAIL_TIMEOUT);

    /* Values that would be copied must be clean; others do not matter. */
    pt_headers_add(&h, a, PT_STR_LIT("X-Other"), PT_STR_LIT("bad\r\nX-Injected: 1"));
    r.status = 200;
    CHECK(pt_fauth_classify(c, &r) == PT_FAUTH_ALLOW);
    pt_headers_add(&h, a, PT_STR_LIT("x-user-id"), pt_str_make("4\0" "2", 3));
    CHECK(pt_fauth_classify(c, &r) == PT_FAUTH_FAIL);
    pt_headers_remove(&h, "x-user-id");
    pt_headers_add(&h, a, PT_STR_LIT("X-User-Id"), PT_STR_LIT("1\n2"));
    CHECK(pt_fauth_classify(c, &r) == PT_FAUTH_FAIL);
    r.status = 401; /* upstream_headers are not copied on a denial */
    CHECK(pt_fauth_classify(c, &r) == PT_FAUTH_DENY);
    pt_headers_add(&h, a, PT_STR_LIT("WWW-Authenticate"), PT_STR_LIT("Basic\r\nSet-Cookie: x"));
    CHECK(pt_fauth_classify(c, &r) == PT_FAUTH_FAIL);
    pt_headers_remove(&h, "WWW-Authenticate");
    pt_headers_add(&h, a, PT_STR_LIT("Content-Type"), PT_STR_LIT("text/html\x01"));
    CHECK(pt_fauth_classify(c, &r) == PT_FAUTH_FAIL);
    pt_headers_remove(&h, "Content-Type");
    pt_headers_add(&h, a, PT_STR_LIT("Content-Type"), PT_STR_LIT("text/html;\tcharset=utf-8"));
    CHECK(pt_fauth_classify(c, &r) == PT_FAUTH_DENY);
    pt_config_free(cfg);
    pt_arena_free(a);
}

/* ------------------------------------------------------------ cache key */

static void key_of(const pt_fauth_conf *c, const uint8_t *salt, const char *method, const char *target,
                   const char *const *fields, const char *client, uint8_t out[PT_DIGEST_LEN])
{
    pt_arena *a = pt_arena_new(1024);
    pt_request r = make_req(a, method, target, fields);
    pt_fauth_cache_key(c, salt, &r, uri_of(&r, a), pt_str_c(client), out);
    pt_arena_free(a);
}

TEST(cache_key)
{
    pt_config *cfg;
    const pt_fauth_conf *c = load_ok("      {upstream: auth, cache: {ttl: 1s}}\n", &cfg);
    CHECK(c != NULL);
    if (!c) return;
    uint8_t salt[PT_DIGEST_SALT_LEN] = {1}, salt2[PT_DIGEST_SALT_LEN] = {2};
    uint8_t k[12][PT_DIGEST_LEN];
    const char *alice[] = {"Authorization: Bearer alice", "X-Noise: 1", NULL};
    const char *alice2[] = {"X-Noise: 2", "authorization: Bearer alice", NULL};
    const char *bob[] = {"Authorization: Bearer bob", NULL};
    const char *empty[] = {"Authorization: ", NULL};
    const char *two[] = {"Cookie: a", "Cookie: b", NULL};
    const char *two_rev[] = {"Cookie: b", "Cookie: a", NULL};
    const char *joined[] = {"Cookie: ab", NULL};
    const char *cookie_as_auth[] = {"Authorization: a", NULL};
    key_of(c, salt, "GET", "/a", alice, "1.1.1.1", k[0]);
    key_of(c, salt, "POST", "/b", alice2, "2.2.2.2", k[1]); /* other fields, method, path, client: same key */
    key_of(c, salt, "GET", "/a", bob, "1.1.1.1", k[2]);
    key_of(c, salt, "GET", "/a", NULL, "1.1.1.1", k[3]);
    key_of(c, salt, "GET", "/a", empty, "1.1.1.1", k[4]);
    key_of(c, salt, "GET", "/a", two, "1.1.1.1", k[5]);
    key_of(c, salt, "GET", "/a", two_rev, "1.1.1.1", k[6]);
    key_of(c, salt, "GET", "/a", joined, "1.1.1.1", k[7]);
    key_of(c, salt, "GET", "/a", cookie_as_auth, "1.1.1.1", k[8]);
    key_of(c, salt2, "GET", "/a", alice, "1.1.1.1", k[9]);
    CHECK(memcmp(k[0], k[1], PT_DIGEST_LEN) == 0);
    for (int i = 2; i <= 9; i++) {
        CHECK(memcmp(k[0], k[i], PT_DIGEST_LEN) != 0);
        for (int j = i + 1; j <= 9; j++) CHECK(memcmp(k[i], k[j], PT_DIGEST_LEN) != 0);
    }
    pt_config_free(cfg);

    c = load_ok("      {upstream: auth, request_headers: [], cache: {ttl: 1s, key: [':method', ':path', ':host', "
                "':client']}}\n",
                &cfg);
    CHECK(c != NULL);
    if (!c) return;
    key_of(c, salt, "GET", "/a/../b?x", alice, "1.1.1.1", k[0]);
    key_of(c, salt, "GET", "/b?x", bob, "1.1.1.1", k[1]); /* same normalised path; headers not in the key */
    key_of(c, salt, "HEAD", "/b?x", NULL, "1.1.1.1", k[2]);
    key_of(c, salt, "GET", "/b?y", NULL, "1.1.1.1", k[3]);
    key_of(c, salt, "GET", "/b?x", NULL, "1.1.1.2", k[4]);
    CHECK(memcmp(k[0], k[1], PT_DIGEST_LEN) == 0);
    for (int i = 2; i <= 4; i++) CHECK(memcmp(k[0], k[i], PT_DIGEST_LEN) != 0);
    pt_config_free(cfg);
}

TEST(cache_ttl_from_cache_control)
{
    pt_config *cfg;
    const pt_fauth_conf *c = load_ok("      {upstream: auth, cache: {ttl: 30s}}\n", &cfg);
    CHECK(c != NULL);
    if (!c) return;
    struct {
        const char *cc;
        uint64_t ttl;
    } cases[] = {
        {NULL, 30000},
        {"public", 30000},
        {"max-age=10", 10000},
        {"max-age=100", 30000},
        {"private, max-age=5", 5000},
        {"max-age=\"7\"", 7000},
        {"MAX-AGE = 3", 3000},
        {"max-age=0", 0},
        {"max-age=abc", 0},
        {"max-age=", 0},
        {"no-store", 0},
        {"No-Cache", 0},
        {"private, no-cache=\"set-cookie\"", 0},
        {"s-maxage=1", 30000},
        {"max-age=99999999999999999999", 30000},
        {"x=\"a,no-store\", max-age=4", 4000},
    };
    pt_arena *a = pt_arena_new(1024);
    for (size_t i = 0; i < PT_ARRAY_LEN(cases); i++) {
        pt_headers h = {0};
        if (cases[i].cc) pt_headers_add(&h, a, PT_STR_LIT("Cache-Control"), pt_str_c(cases[i].cc));
        uint64_t got = pt_fauth_cache_ttl(c, &h);
        if (got != cases[i].ttl) fprintf(stderr, "  Cache-Control \"%s\"\n", cases[i].cc ? cases[i].cc : "(none)");
        CHECK_INT(got, cases[i].ttl);
    }
    pt_headers h = {0}; /* several fields: the most restrictive wins */
    pt_headers_add(&h, a, PT_STR_LIT("cache-control"), PT_STR_LIT("max-age=20"));
    pt_headers_add(&h, a, PT_STR_LIT("Cache-Control"), PT_STR_LIT("max-age=2"));
    CHECK_INT(pt_fauth_cache_ttl(c, &h), 2000);
    CHECK_INT(pt_fauth_cache_ttl(c, NULL), 30000);
    pt_arena_free(a);
    pt_config_free(cfg);
}

TEST_MAIN()
