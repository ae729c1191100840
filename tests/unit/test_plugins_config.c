/* test_plugins_config.c — the built-in plugins' configure() against YAML
 * snippets (valid configs -> the expected precomputed data; invalid ones ->
 * errors that name the offending key), the registry, and the pure helpers
 * (header ops application, request id generation/validation), and
 * pt_conf_metric (metric declaration through the plugin API). The phase
 * callbacks need a real proxy and are covered by the integration tests. */
#include <stdio.h>

#include "config/conf_node.h"
#include "plugins/delay/delay.h"
#include "plugins/direct_response/direct_response.h"
#include "plugins/headers/headers.h"
#include "plugins/key_auth/key_auth.h"
#include "plugins/request_id/request_id.h"
#include "plugin/plugin.h"
#include "testlib.h"

/* One configure() run: the YAML text is the plugin's block. */
typedef struct {
    pt_arena *arena;
    pt_errors errors;
    void *conf;
} run;

static run configure(const char *name, const char *yaml)
{
    run r = {.arena = pt_arena_new(4096)};
    pt_conf_ctx ctx = {.file = "test.yaml", .arena = r.arena, .errors = &r.errors};
    const pt_conf_node *node = pt_conf_parse_yaml(&ctx, yaml, strlen(yaml));
    const pt_plugin_type *type = pt_plugin_find(name);
    if (!node || !type) {
        fprintf(stderr, "  setup failed for %s: %s\n", name, r.errors.n ? r.errors.msgs[0] : "unknown plugin");
        return r;
    }
    r.conf = type->configure(&ctx, node);
    return r;
}

static void run_free(run *r)
{
    pt_errors_free(&r->errors);
    pt_arena_free(r->arena);
}

/* True if some error message contains `needle`. */
static bool has_error(const run *r, const char *needle)
{
    for (size_t i = 0; i < r->errors.n; i++)
        if (strstr(r->errors.msgs[i], needle)) return true;
    fprintf(stderr, "  no error containing \"%s\"; got %zu:\n", needle, r->errors.n);
    for (size_t i = 0; i < r->errors.n; i++) fprintf(stderr, "    %s\n", r->errors.msgs[i]);
    return false;
}

/* Expects configure() to fail with an error mentioning `needle`. */
static void expect_error(const char *plugin, const char *yaml, const char *needle)
{
    run r = configure(plugin, yaml);
    CHECK(r.conf == NULL);
    CHECK(r.errors.n > 0);
    CHECK(has_error(&r, needle));
    run_free(&r);
}

/* ------------------------------------------------------------ registry */

TEST(registry_finds_every_builtin)
{
    const char *names[] = {"request_id", "headers", "direct_response", "delay", "ip_restriction", "forward_auth",
                           "compression", "key_auth", "basic_auth", "acl", "jwt", "mtls_auth",
                           "oauth2_introspection", "rate_limit", "concurrency_limit", "cors", "deprecation", "rewrite",
                           "json_transform", "xml_json", "cache"};
    for (size_t i = 0; i < PT_ARRAY_LEN(names); i++) {
        const pt_plugin_type *t = pt_plugin_find(names[i]);
        CHECK(t != NULL);
        if (t) {
            CHECK_STR(t->name, names[i]);
            CHECK(t->configure != NULL);
            CHECK(t->on_request_headers != NULL || t->on_response_headers != NULL);
        }
    }
    CHECK(pt_plugin_find("nope") == NULL);
    CHECK(pt_plugin_find("") == NULL);
    CHECK(pt_plugin_find(NULL) == NULL);
    CHECK(pt_plugin_find("Headers") == NULL);

    const pt_plugin_type *const *all = pt_plugin_all();
    size_t n = 0;
    while (all[n]) n++;
    CHECK_INT(n, (long long)PT_ARRAY_LEN(names));
    CHECK(pt_plugin_find("delay")->state_size >= sizeof(pt_delay_state));
    CHECK(pt_plugin_find("request_id")->on_response_headers != NULL);
    CHECK(pt_plugin_find("headers")->on_response_headers != NULL);
}

/* ------------------------------------------------------------ direct_response */

TEST(direct_response_valid)
{
    run r = configure("direct_response", "status: 200\n"
                                         "headers:\n"
                                         "  X-A: one\n"
                                         "  content-type: text/plain; charset=utf-8\n"
                                         "  Cache-Control: no-store\n"
                                         "body: \"ok\\n\"\n");
    CHECK_INT(r.errors.n, 0);
    const pt_direct_response_conf *c = r.conf;
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->status, 200);
        CHECK_SLICE(c->content_type, "text/plain; charset=utf-8");
        CHECK_INT(c->nheaders, 2);
        if (c->nheaders == 2) {
            CHECK_SLICE(c->headers[0].name, "X-A");
            CHECK_SLICE(c->headers[0].value, "one");
            CHECK_SLICE(c->headers[1].name, "Cache-Control");
            CHECK_SLICE(c->headers[1].value, "no-store");
        }
        CHECK_SLICE(c->body, "ok\n");
    }
    run_free(&r);
}

TEST(direct_response_minimal)
{
    run r = configure("direct_response", "status: 503\n");
    const pt_direct_response_conf *c = r.conf;
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->status, 503);
        CHECK_INT(c->content_type.n, 0);
        CHECK_INT(c->nheaders, 0);
        CHECK_INT(c->body.n, 0);
    }
    run_free(&r);
    r = configure("direct_response", "{status: 204, body: ''}\n");
    CHECK(r.conf != NULL);
    run_free(&r);
}

TEST(direct_response_errors)
{
    expect_error("direct_response", "body: hi\n", "'status' is required");
    expect_error("direct_response", "", "status");
    expect_error("direct_response", "status: 150\n", "200..599");
    expect_error("direct_response", "status: 600\n", "200..599");
    expect_error("direct_response", "status: abc\n", "integer");
    expect_error("direct_response", "status: 200\nbdy: x\n", "bdy");
    expect_error("direct_response", "status: 200\nheaders: {\"X A\": b}\n", "X A");
    expect_error("direct_response", "status: 200\nheaders: {X-A: \"a\\r\\nInjected: 1\"}\n", "X-A");
    expect_error("direct_response", "status: 200\nheaders: {X-A: \"a\\x01b\"}\n", "X-A");
    run ok = configure("direct_response", "status: 200\nheaders: {X-Tab: \"a\\tb\"}\n"); /* HTAB is fine */
    CHECK(ok.conf != NULL);
    run_free(&ok);
    expect_error("direct_response", "status: 200\nheaders: {Content-Length: \"5\"}\n", "Content-Length");
    expect_error("direct_response", "status: 200\nheaders: {X-A: a, x-a: b}\n", "x-a");
    expect_error("direct_response", "status: 200\nheaders: [a, b]\n", "headers");
    expect_error("direct_response", "status: 200\nbody: [x]\n", "body");
    expect_error("direct_response", "status: 204\nbody: nope\n", "body");
}

/* ------------------------------------------------------------ request_id */

TEST(key_auth_challenge_and_realm)
{
    const char *blocks[] = {"", "~\n", "{}\n", "query: api_key\n"};
    for (size_t i = 0; i < PT_ARRAY_LEN(blocks); i++) {
        run r = configure("key_auth", blocks[i]);
        const pt_key_auth_conf *c = r.conf;
        CHECK(c != NULL);
        if (c) {
            CHECK_STR(c->header, "X-API-Key");
            CHECK_SLICE(c->challenge, "Key realm=\"portico\"");
        }
        run_free(&r);
    }
    run r = configure("key_auth", "realm: orders api\nheader: ~\nquery: k\n");
    const pt_key_auth_conf *c = r.conf;
    CHECK(c != NULL);
    if (c) {
        CHECK(c->header == NULL);
        CHECK_STR(c->query, "k");
        CHECK_SLICE(c->challenge, "Key realm=\"orders api\"");
    }
    run_free(&r);
    expect_error("key_auth", "realm: 'a\"b'\n", "key_auth.realm");
    expect_error("key_auth", "realm: 'a\\\\b'\n", "key_auth.realm");
    expect_error("key_auth", "realm: [x]\n", "expected a string");
    expect_error("key_auth", "header: ~\nquery: ~\n", "both off");
}

TEST(request_id_defaults)
{
    const char *blocks[] = {"", "~\n", "{}\n"};
    for (size_t i = 0; i < PT_ARRAY_LEN(blocks); i++) {
        run r = configure("request_id", blocks[i]);
        const pt_request_id_conf *c = r.conf;
        CHECK(c != NULL);
        if (c) {
            CHECK_SLICE(c->header, "X-Request-Id");
            CHECK(c->trust_incoming);
            CHECK(c->response_header);
        }
        run_free(&r);
    }
}

TEST(request_id_custom)
{
    run r = configure("request_id", "header: X-Correlation-ID\ntrust_incoming: false\nresponse_header: off\n");
    const pt_request_id_conf *c = r.conf;
    CHECK(c != NULL);
    if (c) {
        CHECK_SLICE(c->header, "X-Correlation-ID");
        CHECK(c->header.p[c->header.n] == '\0');
        CHECK(!c->trust_incoming);
        CHECK(!c->response_header);
    }
    run_free(&r);
}

TEST(request_id_errors)
{
    expect_error("request_id", "header: \"Bad Header\"\n", "Bad Header");
    expect_error("request_id", "header: Connection\n", "Connection");
    expect_error("request_id", "header: \"\"\n", "header");
    expect_error("request_id", "trust_incoming: maybe\n", "boolean");
    expect_error("request_id", "respons_header: true\n", "respons_header");
    expect_error("request_id", "[a]\n", "request_id");
}

TEST(request_id_safe_values)
{
    CHECK(pt_request_id_is_safe(PT_STR_LIT("abc-DEF_123.x:y")));
    CHECK(pt_request_id_is_safe(PT_STR_LIT("a")));
    char max[129];
    memset(max, 'a', sizeof(max));
    CHECK(pt_request_id_is_safe(pt_str_make(max, 128)));
    CHECK(!pt_request_id_is_safe(pt_str_make(max, 129)));
    CHECK(!pt_request_id_is_safe(PT_STR_LIT("")));
    CHECK(!pt_request_id_is_safe(PT_STR_LIT("a b")));
    CHECK(!pt_request_id_is_safe(PT_STR_LIT("a\"b")));
    CHECK(!pt_request_id_is_safe(PT_STR_LIT("a/b")));
    CHECK(!pt_request_id_is_safe(PT_STR_LIT("caf\xc3\xa9")));
    CHECK(!pt_request_id_is_safe(PT_STR_LIT("a\r\nb")));
}

TEST(request_id_generated_ids)
{
    enum { N = 2000 };
    static char ids[N][PT_REQUEST_ID_GEN_LEN];
    int bad = 0, dups = 0;
    unsigned nibble_counts[16] = {0};
    for (int i = 0; i < N; i++) {
        pt_request_id_generate(ids[i]);
        for (int j = 0; j < PT_REQUEST_ID_GEN_LEN; j++) {
            char ch = ids[i][j];
            if (ch >= '0' && ch <= '9') nibble_counts[ch - '0']++;
            else if (ch >= 'a' && ch <= 'f') nibble_counts[ch - 'a' + 10]++;
            else bad++;
        }
    }
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            if (memcmp(ids[i], ids[j], PT_REQUEST_ID_GEN_LEN) == 0) dups++;
    CHECK_INT(bad, 0);
    CHECK_INT(dups, 0);
    /* 64000 hex digits: each of the 16 values should be near 4000. */
    for (int d = 0; d < 16; d++) CHECK(nibble_counts[d] > 3500 && nibble_counts[d] < 4500);
    CHECK(pt_request_id_is_safe(pt_str_make(ids[0], PT_REQUEST_ID_GEN_LEN)));
}

/* ------------------------------------------------------------ headers */

TEST(headers_valid)
{
    run r = configure("headers", "request:\n"
                                 "  remove: [X-Debug, x-internal]\n"
                                 "  set: {X-Forwarded-Proto: http, X-Env: prod}\n"
                                 "  add: {Via: portico}\n"
                                 "response:\n"
                                 "  set: {Cache-Control: no-store}\n");
    CHECK_INT(r.errors.n, 0);
    const pt_headers_plugin_conf *c = r.conf;
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->request.nremove, 2);
        if (c->request.nremove == 2) {
            CHECK_STR(c->request.remove[0], "X-Debug");
            CHECK_STR(c->request.remove[1], "x-internal");
        }
        CHECK_INT(c->request.nset, 2);
        if (c->request.nset == 2) {
            CHECK_SLICE(c->request.set[0].name, "X-Forwarded-Proto");
            CHECK_SLICE(c->request.set[0].value, "http");
            CHECK_SLICE(c->request.set[1].name, "X-Env");
        }
        CHECK_INT(c->request.nadd, 1);
        if (c->request.nadd == 1) CHECK_SLICE(c->request.add[0].value, "portico");
        CHECK_INT(c->response.nremove, 0);
        CHECK_INT(c->response.nadd, 0);
        CHECK_INT(c->response.nset, 1);
        if (c->response.nset == 1) CHECK_SLICE(c->response.set[0].value, "no-store");
    }
    run_free(&r);
}

TEST(headers_apply_order_remove_set_add)
{
    run r = configure("headers", "response:\n"
                                 "  remove: [X-Gone, X-Twice]\n"
                                 "  set: {X-Twice: set, X-New: n}\n"
                                 "  add: {X-Twice: added, X-Multi: m2}\n");
    const pt_headers_plugin_conf *c = r.conf;
    CHECK(c != NULL);
    if (!c) {
        run_free(&r);
        return;
    }
    pt_arena *a = pt_arena_new(1024);
    pt_headers h = {0};
    pt_headers_add(&h, a, PT_STR_LIT("x-gone"), PT_STR_LIT("1"));
    pt_headers_add(&h, a, PT_STR_LIT("X-Twice"), PT_STR_LIT("orig1"));
    pt_headers_add(&h, a, PT_STR_LIT("X-Keep"), PT_STR_LIT("k"));
    pt_headers_add(&h, a, PT_STR_LIT("x-twice"), PT_STR_LIT("orig2"));
    pt_headers_add(&h, a, PT_STR_LIT("X-Multi"), PT_STR_LIT("m1"));
    pt_headers_plugin_apply(&c->response, &h, a);

    const char *expect[][2] = {
        {"X-Keep", "k"}, {"X-Multi", "m1"}, {"X-Twice", "set"}, {"X-New", "n"}, {"X-Twice", "added"}, {"X-Multi", "m2"},
    };
    CHECK_INT(h.n, PT_ARRAY_LEN(expect));
    for (uint32_t i = 0; i < h.n && i < PT_ARRAY_LEN(expect); i++) {
        CHECK_SLICE(h.v[i].name, expect[i][0]);
        CHECK_SLICE(h.v[i].value, expect[i][1]);
    }
    /* The request side is empty: applying it changes nothing. */
    pt_headers_plugin_apply(&c->request, &h, a);
    CHECK_INT(h.n, PT_ARRAY_LEN(expect));
    pt_arena_free(a);
    run_free(&r);
}

TEST(headers_errors)
{
    expect_error("headers", "request: {remove: [Content-Length]}\n", "Content-Length");
    expect_error("headers", "request: {remove: [Transfer-Encoding]}\n", "Transfer-Encoding");
    expect_error("headers", "request: {remove: [host]}\n", "host");
    expect_error("headers", "response: {remove: [Connection]}\n", "Connection");
    expect_error("headers", "request: {set: {Host: example.com}}\n", "Host");
    expect_error("headers", "response: {add: {Transfer-Encoding: chunked}}\n", "Transfer-Encoding");
    expect_error("headers", "request: {set: {\"X(bad)\": v}}\n", "X(bad)");
    expect_error("headers", "request: {add: {X-A: \"v\\nX-B: w\"}}\n", "X-A");
    expect_error("headers", "request: {add: {X-A: [v]}}\n", "X-A");
    expect_error("headers", "request: {remove: X-A}\n", "remove");
    expect_error("headers", "request: {remove: [\"a b\"]}\n", "a b");
    expect_error("headers", "request: {sett: {X-A: b}}\n", "sett");
    expect_error("headers", "reqest: {set: {X-A: b}}\n", "reqest");
    expect_error("headers", "{}\n", "request");
    expect_error("headers", "", "headers");
    expect_error("headers", "request: [x]\n", "headers.request");
}

/* ------------------------------------------------------------ delay */

TEST(delay_valid)
{
    run r = configure("delay", "duration: 250ms\npercentage: 12.5\n");
    const pt_delay_conf *c = r.conf;
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->duration_ms, 250);
        CHECK(c->fraction > 0.1249 && c->fraction < 0.1251);
    }
    run_free(&r);

    r = configure("delay", "duration: 2s\n");
    c = r.conf;
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->duration_ms, 2000);
        CHECK(c->fraction == 1.0);
    }
    run_free(&r);

    r = configure("delay", "{duration: 60s, percentage: 0}\n");
    c = r.conf;
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->duration_ms, 60000);
        CHECK(c->fraction == 0.0);
    }
    run_free(&r);
}

TEST(delay_errors)
{
    expect_error("delay", "percentage: 50\n", "'duration' is required");
    expect_error("delay", "", "duration");
    expect_error("delay", "duration: 61s\n", "at most 60s");
    expect_error("delay", "duration: 2m\n", "duration");
    expect_error("delay", "duration: soon\n", "soon");
    expect_error("delay", "duration: 1s\npercentage: 101\n", "percentage");
    expect_error("delay", "duration: 1s\npercentage: -1\n", "percentage");
    expect_error("delay", "duration: 1s\npercentage: 5%\n", "percentage");
    expect_error("delay", "duration: 1s\npercentage: nan\n", "percentage");
    expect_error("delay", "duration: 1s\npercentage: [5]\n", "percentage");
    expect_error("delay", "duration: 1s\nprob: 5\n", "prob");
}

static const char *const UPSTREAM_LABEL[] = {"upstream", NULL};
static const char *const RESULTS[] = {"allowed", "denied", NULL};
static const pt_metric_dim RESULT_DIM[] = {{"result", RESULTS}};
static const pt_metric_desc DECISIONS = {.name = "t_decisions_total", .help = "Decisions.",
                                         .type = PT_METRIC_COUNTER, .labels = UPSTREAM_LABEL,
                                         .dims = RESULT_DIM, .ndims = 1};

TEST(conf_metric_declares_once_and_shares_series)
{
    pt_metrics *m = pt_metrics_new();
    pt_arena *a = pt_arena_new(1024);
    pt_errors errs = {0};
    pt_config cfg = {0};
    cfg.admin.enabled = true;
    pt_conf_ctx ctx = {.file = "t.yaml", .arena = a, .errors = &errs, .cfg = &cfg, .metrics = m};
    /* two instances naming the same upstream: one family, one series */
    pt_metric_series *s1 = pt_conf_metric(&ctx, NULL, &DECISIONS, (const char *const[]){"auth"});
    pt_metric_series *s2 = pt_conf_metric(&ctx, NULL, &DECISIONS, (const char *const[]){"auth"});
    pt_metric_series *s3 = pt_conf_metric(&ctx, NULL, &DECISIONS, (const char *const[]){"other"});
    CHECK(s1 != NULL && s1 == s2 && s3 != s1);
    CHECK_INT(errs.n, 0);
    pt_metric_add(s1, 1, 2);
    pt_metric_add(s2, 1, 1);
    size_t len;
    char *t = pt_metrics_expose(m, &len);
    CHECK(strstr(t, "t_decisions_total{upstream=\"auth\",result=\"denied\"} 3\n") != NULL);
    CHECK(strstr(t, "# TYPE t_decisions_total counter\n") == strstr(t, "# TYPE t_decisions_total"));
    free(t);
    /* the same name described differently: a config error, no series */
    pt_metric_desc other = DECISIONS;
    other.type = PT_METRIC_GAUGE;
    CHECK(pt_conf_metric(&ctx, NULL, &other, (const char *const[]){"auth"}) == NULL);
    CHECK_INT(errs.n, 1);
    CHECK(strstr(errs.msgs[0], "metric t_decisions_total") != NULL);
    /* metrics off: no admin listener, or no registry (portico check) */
    cfg.admin.enabled = false;
    CHECK(pt_conf_metric(&ctx, NULL, &DECISIONS, (const char *const[]){"auth"}) == NULL);
    cfg.admin.enabled = true;
    ctx.metrics = NULL;
    CHECK(pt_conf_metric(&ctx, NULL, &DECISIONS, (const char *const[]){"auth"}) == NULL);
    CHECK_INT(errs.n, 1);
    pt_metric_add(NULL, 0, 1); /* writes to a NULL series are ignored */
    pt_errors_free(&errs);
    pt_arena_free(a);
    pt_metrics_free(m);
}

TEST_MAIN()
