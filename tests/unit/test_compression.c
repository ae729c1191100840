/* test_compression.c — the compression plugin's pure parts: Accept-Encoding
 * negotiation (q-values, "*", identity, case, whitespace, garbage), media
 * type patterns, Cache-Control no-transform, Vary merging, the response
 * decision (every skip rule), configure() (defaults, every key, errors with
 * FILE:LINE:COL), and the streaming codecs: each encoder through the
 * matching decoder with chunked input in every flush mode, flushed output
 * decodable at every step, deflate in both framings, several gzip members /
 * zstd frames, malformed and truncated input, and the bomb caps (max_size,
 * max_ratio overall and per call, zstd window limit). The phase callbacks
 * are covered by tests/integration/test_compression.py. */
#include <brotli/encode.h>
#include <stdio.h>
#include <stdlib.h>
#include <zlib.h>
#include <zstd.h>

#include "config/conf_node.h"
#include "plugins/compression/compression.h"
#include "testlib.h"

static const pt_coding all3[] = {PT_CODING_BR, PT_CODING_ZSTD, PT_CODING_GZIP};

/* ------------------------------------------------------------ negotiation */

/* The coding chosen for one Accept-Encoding value (NULL: no field). */
static pt_coding choose_with(const char *ae, const pt_coding *prefs, size_t n)
{
    pt_accept_enc a;
    pt_accept_enc_init(&a);
    if (ae) pt_accept_enc_parse(&a, pt_str_c(ae));
    return pt_accept_enc_choose(&a, prefs, n);
}

static const char *choose(const char *ae) { return pt_coding_name(choose_with(ae, all3, 3)); }

TEST(negotiate_basic_and_preference_order)
{
    CHECK_STR(choose(NULL), "identity"); /* no field: never compress */
    CHECK_STR(choose(""), "identity");
    CHECK_STR(choose("gzip"), "gzip");
    CHECK_STR(choose("zstd"), "zstd");
    CHECK_STR(choose("br"), "br");
    CHECK_STR(choose("gzip, deflate, br, zstd"), "br"); /* browsers: ties go to the server's order */
    CHECK_STR(choose("gzip, zstd"), "zstd");
    CHECK_STR(choose("deflate"), "identity"); /* not offered for responses */
    CHECK_STR(choose("compress, x-compress"), "identity");
    static const pt_coding gz_first[] = {PT_CODING_GZIP, PT_CODING_ZSTD, PT_CODING_BR};
    CHECK_INT(choose_with("gzip, deflate, br, zstd", gz_first, 3), PT_CODING_GZIP);
    static const pt_coding only_gzip[] = {PT_CODING_GZIP};
    CHECK_INT(choose_with("br, zstd", only_gzip, 1), PT_CODING_IDENTITY);
    CHECK_INT(choose_with("*", only_gzip, 1), PT_CODING_GZIP);
}

TEST(negotiate_qvalues)
{
    CHECK_STR(choose("br;q=0.5, gzip"), "gzip");
    CHECK_STR(choose("br;q=0.5, gzip;q=0.5"), "br"); /* tie: preference */
    CHECK_STR(choose("gzip;q=0.9, zstd;q=0.91"), "zstd");
    CHECK_STR(choose("gzip;q=0.001"), "gzip");
    CHECK_STR(choose("gzip;q=0"), "identity");
    CHECK_STR(choose("gzip;q=0.000"), "identity");
    CHECK_STR(choose("br;q=0, gzip"), "gzip");
    CHECK_STR(choose("gzip;q=1.000, br;q=1.0"), "br");
    CHECK_STR(choose("br;q=0.2, zstd;q=0.3, gzip;q=0.1"), "zstd");
    /* a coding listed twice keeps its lowest weight: q=0 always forbids */
    CHECK_STR(choose("br, br;q=0, gzip;q=0.5"), "gzip");
    CHECK_STR(choose("br;q=0, br"), "identity");
}

TEST(negotiate_star_and_identity)
{
    CHECK_STR(choose("*"), "br");
    CHECK_STR(choose("*;q=0"), "identity");
    CHECK_STR(choose("*, br;q=0"), "zstd");
    CHECK_STR(choose("*;q=0, gzip"), "gzip");
    CHECK_STR(choose("*;q=0.5, gzip;q=0.4"), "br"); /* br and zstd weigh 0.5 through "*" */
    CHECK_STR(choose("*;q=0.1, gzip"), "gzip");
    CHECK_STR(choose("identity"), "identity");
    CHECK_STR(choose("identity;q=0"), "identity"); /* nothing acceptable: identity is still sent */
    CHECK_STR(choose("identity;q=0, gzip"), "gzip");
    CHECK_STR(choose("gzip;q=0.5, identity"), "identity");  /* identity explicitly preferred */
    CHECK_STR(choose("gzip;q=0.5, identity;q=0.5"), "gzip"); /* tie: compress */
    CHECK_STR(choose("gzip, identity;q=0.5"), "gzip");
    CHECK_STR(choose("gzip;q=0.5"), "gzip"); /* an unlisted identity does not beat a listed coding */
}

TEST(negotiate_case_and_whitespace)
{
    CHECK_STR(choose("GZIP"), "gzip");
    CHECK_STR(choose("X-Gzip"), "gzip");
    CHECK_STR(choose("Br;Q=0.9, gZip;q=0.8"), "br");
    CHECK_STR(choose("  gzip ; q=0.8 ,\tbr ; q = 0.9  "), "br");
    CHECK_STR(choose("gzip;q=0.8,br;q=0.9"), "br");
    CHECK_STR(choose("IDENTITY;Q=0, *"), "br");
    CHECK_STR(choose(",,, ,gzip,,"), "gzip");
}

TEST(negotiate_garbage_is_ignored_safely)
{
    CHECK_STR(choose("gzip;q=abc, br;q=0.1"), "br"); /* bad weight: entry ignored */
    CHECK_STR(choose("gzip;q=1.5"), "identity");
    CHECK_STR(choose("gzip;q=0.1234"), "identity");
    CHECK_STR(choose("gzip;q=-1"), "identity");
    CHECK_STR(choose("gzip;q=.5"), "identity");
    CHECK_STR(choose("gzip;q="), "identity");
    CHECK_STR(choose("gzip;q"), "identity");
    CHECK_STR(choose("gzip;q=1e0"), "identity");
    CHECK_STR(choose("gz ip, \"br\", zstd"), "zstd");
    CHECK_STR(choose("gzip;level=9"), "gzip"); /* other parameters ignored */
    CHECK_STR(choose("gzip;q=0.5;foo=bar"), "gzip");
    CHECK_STR(choose(";;;, ;q=1, =, *;"), "br"); /* only "*;" survives, with weight 1 */
    CHECK_STR(choose("\x01\x7f\xff, gzip"), "gzip");
    CHECK_STR(choose("br;q=0 , br;q=junk"), "identity");
    /* a long hostile value: linear, still finds the good entry */
    size_t n = 100000;
    char *big = malloc(n + 16);
    for (size_t i = 0; i < n; i++) big[i] = (i % 7 == 6) ? ',' : (i % 3 ? ';' : 'x');
    strcpy(big + n, ", zstd;q=0.3");
    CHECK_STR(choose(big), "zstd");
    free(big);
}

TEST(negotiate_several_fields_combine)
{
    pt_accept_enc a;
    pt_accept_enc_init(&a);
    pt_accept_enc_parse(&a, pt_str_c("gzip"));
    pt_accept_enc_parse(&a, pt_str_c("br;q=0"));
    CHECK_INT(pt_accept_enc_choose(&a, all3, 3), PT_CODING_GZIP);
    CHECK_INT(a.q[PT_CODING_BR], 0);
    CHECK_INT(a.q[PT_CODING_GZIP], 1000);
    CHECK_INT(a.q[PT_CODING_ZSTD], -1);
}

TEST(coding_tokens)
{
    CHECK_INT(pt_coding_from_token(pt_str_c("gzip")), PT_CODING_GZIP);
    CHECK_INT(pt_coding_from_token(pt_str_c("x-gzip")), PT_CODING_GZIP);
    CHECK_INT(pt_coding_from_token(pt_str_c("DEFLATE")), PT_CODING_DEFLATE);
    CHECK_INT(pt_coding_from_token(pt_str_c("Br")), PT_CODING_BR);
    CHECK_INT(pt_coding_from_token(pt_str_c("zstd")), PT_CODING_ZSTD);
    CHECK_INT(pt_coding_from_token(pt_str_c("identity")), PT_CODING_IDENTITY);
    CHECK_INT(pt_coding_from_token(pt_str_c("compress")), -1);
    CHECK_INT(pt_coding_from_token(pt_str_c("")), -1);
}

/* ------------------------------------------------------------ media types */

static bool type_matches(const char *pattern, const char *ct)
{
    pt_arena *a = pt_arena_new(1024);
    pt_comp_type_pat p;
    bool ok = pt_comp_type_pat_parse(a, pt_str_c(pattern), &p) && pt_comp_type_match(&p, 1, pt_str_c(ct));
    pt_arena_free(a);
    return ok;
}

static bool pattern_ok(const char *pattern)
{
    pt_arena *a = pt_arena_new(1024);
    pt_comp_type_pat p;
    bool ok = pt_comp_type_pat_parse(a, pt_str_c(pattern), &p);
    pt_arena_free(a);
    return ok;
}

TEST(type_patterns)
{
    CHECK(type_matches("text/*", "text/html"));
    CHECK(type_matches("text/*", "Text/HTML; charset=UTF-8"));
    CHECK(type_matches("TEXT/*", "text/plain"));
    CHECK(!type_matches("text/*", "textx/html"));
    CHECK(!type_matches("text/*", "application/text"));
    CHECK(type_matches("application/json", "application/json;charset=utf-8"));
    CHECK(type_matches("application/json", " application/json ; charset=utf-8"));
    CHECK(!type_matches("application/json", "application/jsonx"));
    CHECK(!type_matches("application/json", "application/json-seq"));
    CHECK(type_matches("application/*+json", "application/problem+json"));
    CHECK(type_matches("application/*+json", "application/vnd.api+JSON; v=2"));
    CHECK(!type_matches("application/*+json", "application/json"));
    CHECK(!type_matches("application/*+json", "application/problem+jsonx"));
    CHECK(type_matches("application/grpc-web*", "application/grpc-web"));
    CHECK(type_matches("application/grpc-web*", "application/grpc-web-text+proto"));
    CHECK(type_matches("*/*", "image/png"));
    CHECK(type_matches("*/json", "application/json"));
    CHECK(type_matches("image/svg+xml", "image/svg+xml"));
    CHECK(!type_matches("image/svg+xml", "image/png"));
    /* unusable Content-Type values match nothing */
    CHECK(!type_matches("*/*", ""));
    CHECK(!type_matches("*/*", "text"));
    CHECK(!type_matches("*/*", "text/"));
    CHECK(!type_matches("*/*", "/html"));
    CHECK(!type_matches("*/*", ";charset=utf-8"));
    CHECK(pattern_ok("text/*"));
    CHECK(pattern_ok("application/*+xml"));
    CHECK(!pattern_ok("text"));
    CHECK(!pattern_ok("text/"));
    CHECK(!pattern_ok("/html"));
    CHECK(!pattern_ok("text/html/x"));
    CHECK(!pattern_ok("te*t/html"));
    CHECK(!pattern_ok("application/*+*"));
    CHECK(!pattern_ok("text/html; charset=utf-8"));
    CHECK(!pattern_ok(""));
}

/* ------------------------------------------------------------------ fields */

static pt_headers hdrs(pt_arena *a, const char *const *kv)
{
    pt_headers h = {0};
    for (size_t i = 0; kv[i]; i += 2) pt_headers_add(&h, a, pt_str_c(kv[i]), pt_str_c(kv[i + 1]));
    return h;
}

TEST(no_transform)
{
    pt_arena *a = pt_arena_new(4096);
    pt_headers h1 = hdrs(a, (const char *[]){"Cache-Control", "no-cache, no-transform", NULL});
    pt_headers h2 = hdrs(a, (const char *[]){"cache-control", "max-age=60", "Cache-Control", "NO-TRANSFORM", NULL});
    pt_headers h3 = hdrs(a, (const char *[]){"Cache-Control", "no-transformx, private", NULL});
    pt_headers h4 = hdrs(a, (const char *[]){"X-Cache-Control", "no-transform", NULL});
    pt_headers h5 = hdrs(a, (const char *[]){"Cache-Control", "private,no-transform", NULL});
    CHECK(pt_comp_no_transform(&h1));
    CHECK(pt_comp_no_transform(&h2));
    CHECK(!pt_comp_no_transform(&h3));
    CHECK(!pt_comp_no_transform(&h4));
    CHECK(pt_comp_no_transform(&h5));
    pt_arena_free(a);
}

/* The Vary fields of `h` after the merge, joined with " | ". */
static const char *vary_after(pt_arena *a, const char *const *kv)
{
    pt_headers h = hdrs(a, kv);
    pt_comp_vary_merge(&h, a);
    char *out = pt_arena_alloc(a, 512);
    out[0] = 0;
    for (uint32_t i = 0; i < h.n; i++) {
        if (!pt_str_ieq_lit(h.v[i].name, "vary")) continue;
        if (out[0]) strcat(out, " | ");
        strncat(out, h.v[i].value.p, h.v[i].value.n);
    }
    return out;
}

TEST(vary_merge)
{
    pt_arena *a = pt_arena_new(4096);
    CHECK_STR(vary_after(a, (const char *[]){"Content-Type", "text/html", NULL}), "Accept-Encoding");
    CHECK_STR(vary_after(a, (const char *[]){"Vary", "Origin", NULL}), "Origin, Accept-Encoding");
    CHECK_STR(vary_after(a, (const char *[]){"Vary", "accept-encoding", NULL}), "accept-encoding");
    CHECK_STR(vary_after(a, (const char *[]){"Vary", "Origin,Accept-Encoding", NULL}), "Origin,Accept-Encoding");
    CHECK_STR(vary_after(a, (const char *[]){"Vary", "*", NULL}), "*");
    CHECK_STR(vary_after(a, (const char *[]){"vary", "Origin", "X", "y", "Vary", " Cookie ", NULL}),
              "Origin, Cookie, Accept-Encoding");
    CHECK_STR(vary_after(a, (const char *[]){"Vary", "", NULL}), "Accept-Encoding");
    pt_arena_free(a);
}

/* ---------------------------------------------------------------- decision */

typedef struct {
    pt_arena *arena;
    pt_errors errors;
    pt_compression_conf *conf;
} run;

static run configure(const char *yaml)
{
    run r = {.arena = pt_arena_new(4096)};
    pt_conf_ctx ctx = {.file = "test.yaml", .arena = r.arena, .errors = &r.errors};
    const pt_conf_node *node = pt_conf_parse_yaml(&ctx, yaml, strlen(yaml));
    if (!node && r.errors.n) {
        fprintf(stderr, "  YAML setup failed: %s\n", r.errors.msgs[0]);
        return r;
    }
    r.conf = pt_plugin_compression.configure(&ctx, node);
    return r;
}

static void run_free(run *r)
{
    pt_errors_free(&r->errors);
    pt_arena_free(r->arena);
}

/* The decision for a response: status, CL (-1 unknown), header pairs, and
 * the request's Accept-Encoding (NULL none), method HEAD, Range. */
static pt_comp_decision decide(const pt_compression_conf *c, int status, int64_t cl, const char *const *kv,
                               const char *ae, bool head, bool range)
{
    pt_arena *a = pt_arena_new(4096);
    pt_response res = {.status = status, .has_body = !head && status >= 200 && status != 204 && status != 304,
                       .content_length = cl};
    res.headers = hdrs(a, kv);
    pt_request req = {.method = head ? PT_METHOD_HEAD : PT_METHOD_GET};
    if (ae) pt_headers_add(&req.headers, a, PT_STR_LIT("Accept-Encoding"), pt_str_c(ae));
    if (range) pt_headers_add(&req.headers, a, PT_STR_LIT("Range"), PT_STR_LIT("bytes=0-10"));
    pt_comp_req_info ri;
    pt_comp_req_info_read(&ri, &req);
    pt_comp_decision d = pt_comp_decide(c, &ri, &res);
    pt_arena_free(a);
    return d;
}

#define JSON_CT (const char *[]){"Content-Type", "application/json", NULL}

TEST(decide_compresses_and_skips)
{
    run r = configure("{}");
    const pt_compression_conf *c = r.conf;
    CHECK(c != NULL);
    if (!c) return;
    pt_comp_decision d = decide(c, 200, 5000, JSON_CT, "gzip, br", false, false);
    CHECK_INT(d.action, PT_COMP_ENCODE);
    CHECK_INT(d.coding, PT_CODING_BR);
    CHECK(!d.flush_each);
    CHECK_INT(decide(c, 200, -1, JSON_CT, "gzip", false, false).action, PT_COMP_ENCODE); /* unknown length */
    CHECK_INT(decide(c, 404, 5000, JSON_CT, "gzip", false, false).action, PT_COMP_ENCODE);
    /* identity chosen for an eligible response: Vary only */
    CHECK_INT(decide(c, 200, 5000, JSON_CT, NULL, false, false).action, PT_COMP_VARY);
    CHECK_INT(decide(c, 200, 5000, JSON_CT, "gzip;q=0", false, false).action, PT_COMP_VARY);
    CHECK_INT(decide(c, 200, 5000, JSON_CT, "identity", false, false).action, PT_COMP_VARY);
    /* skips */
    CHECK_INT(decide(c, 200, 5000, JSON_CT, "gzip", true, false).action, PT_COMP_SKIP);  /* HEAD */
    CHECK_INT(decide(c, 200, 5000, JSON_CT, "gzip", false, true).action, PT_COMP_SKIP);  /* Range */
    CHECK_INT(decide(c, 206, 5000, JSON_CT, "gzip", false, false).action, PT_COMP_SKIP);
    CHECK_INT(decide(c, 204, -1, JSON_CT, "gzip", false, false).action, PT_COMP_SKIP);
    CHECK_INT(decide(c, 304, -1, JSON_CT, "gzip", false, false).action, PT_COMP_SKIP);
    CHECK_INT(decide(c, 103, -1, JSON_CT, "gzip", false, false).action, PT_COMP_SKIP);
    CHECK_INT(decide(c, 200, 0, JSON_CT, "gzip", false, false).action, PT_COMP_SKIP);    /* empty */
    CHECK_INT(decide(c, 200, 1023, JSON_CT, "gzip", false, false).action, PT_COMP_SKIP); /* < min_size */
    CHECK_INT(decide(c, 200, 1024, JSON_CT, "gzip", false, false).action, PT_COMP_ENCODE);
    CHECK_INT(decide(c, 200, 5000, (const char *[]){"Content-Type", "image/png", NULL}, "gzip", false, false).action,
              PT_COMP_SKIP);
    CHECK_INT(decide(c, 200, 5000, (const char *[]){"X-Other", "1", NULL}, "gzip", false, false).action,
              PT_COMP_SKIP); /* no Content-Type */
    CHECK_INT(decide(c, 200, 5000, (const char *[]){"Content-Type", "text/html", "Content-Encoding", "gzip", NULL},
                     "gzip", false, false)
                  .action,
              PT_COMP_SKIP);
    CHECK_INT(decide(c, 200, 5000, (const char *[]){"Content-Type", "text/html", "Content-Encoding", "Identity", NULL},
                     "gzip", false, false)
                  .action,
              PT_COMP_ENCODE);
    CHECK_INT(decide(c, 200, 5000,
                     (const char *[]){"Content-Type", "text/html", "Cache-Control", "public, no-transform", NULL},
                     "gzip", false, false)
                  .action,
              PT_COMP_SKIP);
    CHECK_INT(decide(c, 200, 5000, (const char *[]){"Content-Type", "text/html", "Content-Digest", "sha-256=:x:", NULL},
                     "gzip", false, false)
                  .action,
              PT_COMP_SKIP);
    /* no request at all (an unparsable head answered by Portico) */
    pt_comp_req_info none;
    pt_comp_req_info_read(&none, NULL);
    CHECK(!none.ae.present && !none.head && !none.range);
    /* streaming types flush at every call */
    d = decide(c, 200, -1, (const char *[]){"Content-Type", "text/event-stream", NULL}, "zstd", false, false);
    CHECK_INT(d.action, PT_COMP_ENCODE);
    CHECK_INT(d.coding, PT_CODING_ZSTD);
    CHECK(d.flush_each);
    run_free(&r);
}

/* --------------------------------------------------------------- configure */

static bool has_error(const run *r, const char *needle)
{
    for (size_t i = 0; i < r->errors.n; i++)
        if (strstr(r->errors.msgs[i], needle)) return true;
    fprintf(stderr, "  no error containing \"%s\"; got %zu:\n", needle, r->errors.n);
    for (size_t i = 0; i < r->errors.n; i++) fprintf(stderr, "    %s\n", r->errors.msgs[i]);
    return false;
}

static void expect_error(const char *yaml, const char *needle)
{
    run r = configure(yaml);
    CHECK(r.conf == NULL);
    CHECK(r.errors.n > 0);
    CHECK(has_error(&r, needle));
    run_free(&r);
}

TEST(configure_defaults)
{
    run r = configure("~");
    const pt_compression_conf *c = r.conf;
    CHECK(c != NULL);
    if (!c) return;
    CHECK_INT(c->nprefs, 3);
    CHECK_INT(c->prefs[0], PT_CODING_BR);
    CHECK_INT(c->prefs[1], PT_CODING_ZSTD);
    CHECK_INT(c->prefs[2], PT_CODING_GZIP);
    CHECK_INT(c->min_size, 1024);
    CHECK_INT(c->ntypes, 7);
    CHECK_INT(c->level[PT_CODING_GZIP], 6);
    CHECK_INT(c->level[PT_CODING_BR], 4);
    CHECK_INT(c->level[PT_CODING_ZSTD], 3);
    CHECK_INT(c->window_log[PT_CODING_BR], 19);
    CHECK(!c->decompress);
    CHECK_INT(c->req_max_size, 10 << 20);
    CHECK_INT(c->req_max_ratio, 100);
    CHECK(pt_comp_type_match(c->types, c->ntypes, pt_str_c("application/javascript")));
    CHECK(pt_comp_type_match(c->types, c->ntypes, pt_str_c("application/xml")));
    CHECK(pt_comp_type_match(c->types, c->ntypes, pt_str_c("application/atom+xml")));
    CHECK(!pt_comp_type_match(c->types, c->ntypes, pt_str_c("application/octet-stream")));
    CHECK(!pt_comp_type_match(c->types, c->ntypes, pt_str_c("image/jpeg")));
    CHECK(pt_comp_type_match(c->flush_types, c->nflush_types, pt_str_c("text/event-stream")));
    run_free(&r);
}

TEST(configure_every_key)
{
    run r = configure("algorithms: [gzip, zstd]\n"
                      "min_size: 0\n"
                      "types: [text/html, application/*+json]\n"
                      "flush_types: []\n"
                      "gzip: {level: 1}\n"
                      "br: {level: 11, window: 16m}\n"
                      "zstd: {level: 19, window: 1k}\n"
                      "request: {decompress: true, max_size: 1m, max_ratio: 20}\n");
    const pt_compression_conf *c = r.conf;
    CHECK(c != NULL);
    CHECK_INT(r.errors.n, 0);
    if (!c) return;
    CHECK_INT(c->nprefs, 2);
    CHECK_INT(c->prefs[0], PT_CODING_GZIP);
    CHECK_INT(c->prefs[1], PT_CODING_ZSTD);
    CHECK_INT(c->min_size, 0);
    CHECK_INT(c->ntypes, 2);
    CHECK_INT(c->nflush_types, 0);
    CHECK_INT(c->level[PT_CODING_GZIP], 1);
    CHECK_INT(c->level[PT_CODING_BR], 11);
    CHECK_INT(c->window_log[PT_CODING_BR], 24);
    CHECK_INT(c->level[PT_CODING_ZSTD], 19);
    CHECK_INT(c->window_log[PT_CODING_ZSTD], 10);
    CHECK(c->decompress);
    CHECK_INT(c->req_max_size, 1 << 20);
    CHECK_INT(c->req_max_ratio, 20);
    run_free(&r);
}

TEST(configure_errors_with_positions)
{
    expect_error("[gzip]", "test.yaml:1:1: compression: expected a mapping");
    expect_error("bogus: 1", "test.yaml:1:1: unknown key 'bogus' in compression (expected one of: algorithms,");
    expect_error("algorithms: [gzip, lz4]", "test.yaml:1:20: compression.algorithms: unknown algorithm \"lz4\"");
    expect_error("algorithms: [gzip, deflate]", "unknown algorithm \"deflate\"");
    expect_error("algorithms: [GZIP]", "unknown algorithm \"GZIP\"");
    expect_error("algorithms: [gzip, gzip]", "test.yaml:1:20: compression.algorithms: \"gzip\" is listed twice");
    expect_error("algorithms: []", "compression.algorithms: expected a non-empty list");
    expect_error("min_size: lots", "test.yaml:1:11:");
    expect_error("types: []", "compression.types: expected a non-empty list");
    expect_error("types: [text/html, nonsense]", "test.yaml:1:20: compression.types: invalid media type \"nonsense\"");
    expect_error("flush_types: [a/b/c]", "compression.flush_types: invalid media type \"a/b/c\"");
    expect_error("gzip: {level: 0}", "test.yaml:1:15: compression.gzip.level: must be 1..9 (got 0)");
    expect_error("gzip: {level: 10}", "compression.gzip.level: must be 1..9 (got 10)");
    expect_error("br: {level: 12}", "compression.br.level: must be 0..11 (got 12)");
    expect_error("zstd: {level: 20}", "compression.zstd.level: must be 1..19 (got 20)");
    expect_error("zstd: {level: fast}", "expected an integer");
    expect_error("gzip: {window: 32k}", "test.yaml:1:8: unknown key 'window' in compression.gzip");
    expect_error("br: {window: 100k}", "compression.br.window: must be a power of two from 1k to 16m");
    expect_error("zstd: {window: 16m}", "compression.zstd.window: must be a power of two from 1k to 8m");
    expect_error("zstd: 3", "compression.zstd: expected a mapping");
    expect_error("request: {decompress: maybe}", "test.yaml:1:23:");
    expect_error("request: {max_size: 0}", "compression.request.max_size: must be greater than 0");
    expect_error("request: {max_ratio: 0}", "compression.request.max_ratio: must be 1..100000 (got 0)");
    expect_error("request: {max_ratio: 1000001}", "compression.request.max_ratio: must be 1..100000");
    expect_error("request: {decompres: true}", "unknown key 'decompres' in compression.request");
    expect_error("request: true", "compression.request: expected a mapping");
}

/* ------------------------------------------------------------------ codecs */

/* Deterministic JSON-ish text: compresses well but not trivially. */
static char *make_text(size_t n, uint32_t seed)
{
    char *p = malloc(n + 64);
    size_t len = 0;
    uint32_t x = seed * 2654435761u + 1;
    static const char *const words[] = {"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"};
    while (len < n) {
        x = x * 1103515245u + 12345u;
        len += (size_t)snprintf(p + len, 64, "{\"id\":%u,\"name\":\"%s\",\"v\":%u},\n", x >> 16,
                                words[(x >> 8) & 7], x & 0xfff);
    }
    return p;
}

/* Decodes `in` in pieces of `piece` bytes (0: all at once) with a decoder
 * for `c`; returns the result, the output in *out. */
static pt_dec_result decode_all(pt_coding c, const char *in, size_t n, size_t piece, uint64_t max_size,
                                uint32_t ratio, pt_comp_buf *out)
{
    pt_decoder *d = pt_decoder_new(c, max_size, ratio);
    if (!d) return PT_DEC_MALFORMED;
    pt_dec_result r = PT_DEC_OK;
    size_t off = 0;
    do {
        size_t k = piece ? PT_MIN(piece, n - off) : n - off;
        r = pt_decoder_write(d, in + off, k, off + k == n, out);
        off += k;
    } while (r == PT_DEC_OK && off < n);
    pt_decoder_free(d);
    return r;
}

static const pt_coding encoders[] = {PT_CODING_GZIP, PT_CODING_BR, PT_CODING_ZSTD};
static const int enc_levels[] = {6, 4, 3};

TEST(codec_round_trips_chunked_every_mode)
{
    size_t n = 300000;
    char *text = make_text(n, 7);
    uint32_t x = 99;
    for (size_t e = 0; e < PT_ARRAY_LEN(encoders); e++) {
        for (int mode = PT_ENC_PROCESS; mode <= PT_ENC_FLUSH; mode++) {
            for (int hinted = 0; hinted < 2; hinted++) {
                pt_encoder *enc = pt_encoder_new(encoders[e], enc_levels[e], 19, hinted ? (int64_t)n : -1);
                CHECK(enc != NULL);
                if (!enc) continue;
                pt_comp_buf z = {0};
                size_t off = 0;
                while (off < n) {
                    x = x * 1103515245u + 12345u;
                    size_t k = PT_MIN(n - off, (size_t)(1 + (x >> 8) % 20000));
                    CHECK_INT(pt_encoder_write(enc, text + off, k, (pt_enc_mode)mode, &z), PT_OK);
                    off += k;
                }
                CHECK_INT(pt_encoder_write(enc, NULL, 0, PT_ENC_FINISH, &z), PT_OK);
                CHECK(z.len < n / 3); /* it did compress */
                CHECK_INT(pt_encoder_write(enc, "x", 1, PT_ENC_PROCESS, &z), PT_ERR); /* finished */
                pt_encoder_free(enc);
                size_t pieces[] = {0, 1, 7, 1000, 65536};
                for (size_t pi = 0; pi < PT_ARRAY_LEN(pieces); pi++) {
                    pt_comp_buf out = {0};
                    CHECK_INT(decode_all(encoders[e], z.p, z.len, pieces[pi], 1 << 30, 100, &out), PT_DEC_OK);
                    CHECK_INT(out.len, n);
                    CHECK(out.len == n && memcmp(out.p, text, n) == 0);
                    pt_comp_buf_free(&out);
                }
                pt_comp_buf_free(&z);
            }
        }
    }
    free(text);
}

/* After every FLUSH call the output so far decodes to exactly the input so
 * far: what streaming relies on. PROCESS holds data back (it may). */
TEST(codec_flush_makes_everything_so_far_decodable)
{
    size_t n = 40000;
    char *text = make_text(n, 3);
    for (size_t e = 0; e < PT_ARRAY_LEN(encoders); e++) {
        pt_encoder *enc = pt_encoder_new(encoders[e], enc_levels[e], 19, -1);
        pt_decoder *dec = pt_decoder_new(encoders[e], 1 << 30, 1000);
        pt_comp_buf z = {0}, out = {0};
        size_t off = 0, fed = 0;
        while (off < n) {
            size_t k = PT_MIN(n - off, (size_t)777);
            CHECK_INT(pt_encoder_write(enc, text + off, k, PT_ENC_FLUSH, &z), PT_OK);
            off += k;
            CHECK_INT(pt_decoder_write(dec, z.p + fed, z.len - fed, false, &out), PT_DEC_OK);
            fed = z.len;
            CHECK_INT(out.len, off);
            if (out.len != off) break;
        }
        CHECK(memcmp(out.p, text, PT_MIN(out.len, n)) == 0);
        CHECK_INT(pt_encoder_write(enc, NULL, 0, PT_ENC_FINISH, &z), PT_OK);
        CHECK_INT(pt_decoder_write(dec, z.p + fed, z.len - fed, true, &out), PT_DEC_OK);
        CHECK_INT(out.len, n);
        pt_encoder_free(enc);
        pt_decoder_free(dec);
        pt_comp_buf_free(&z);
        pt_comp_buf_free(&out);
    }
    free(text);
}

/* PROCESS holds back at most PT_ENC_MAX_HELD of input (brotli would keep
 * a whole metablock): what came out so far always decodes to all but the
 * last <= 64 KiB + one call of what went in. */
TEST(codec_process_holds_back_a_bounded_amount)
{
    size_t n = 1 << 20, call = 16384;
    char *text = make_text(n, 21);
    for (size_t e = 0; e < PT_ARRAY_LEN(encoders); e++) {
        pt_encoder *enc = pt_encoder_new(encoders[e], enc_levels[e], 19, -1);
        pt_decoder *dec = pt_decoder_new(encoders[e], 1 << 30, 1000);
        pt_comp_buf z = {0}, out = {0};
        size_t fed = 0;
        for (size_t off = 0; off < n; off += call) {
            CHECK_INT(pt_encoder_write(enc, text + off, call, PT_ENC_PROCESS, &z), PT_OK);
            CHECK_INT(pt_decoder_write(dec, z.p + fed, z.len - fed, false, &out), PT_DEC_OK);
            fed = z.len;
            CHECK(out.len + PT_ENC_MAX_HELD + call >= off + call);
        }
        CHECK(memcmp(out.p, text, out.len) == 0);
        pt_encoder_free(enc);
        pt_decoder_free(dec);
        pt_comp_buf_free(&z);
        pt_comp_buf_free(&out);
    }
    free(text);
}

TEST(codec_empty_body_and_tiny_bodies)
{
    for (size_t e = 0; e < PT_ARRAY_LEN(encoders); e++) {
        for (int64_t hint = -1; hint <= 1; hint += 2) {
            pt_encoder *enc = pt_encoder_new(encoders[e], enc_levels[e], 19, hint == 1 ? 1 : -1);
            pt_comp_buf z = {0}, out = {0};
            if (hint == 1) CHECK_INT(pt_encoder_write(enc, "a", 1, PT_ENC_PROCESS, &z), PT_OK);
            CHECK_INT(pt_encoder_write(enc, NULL, 0, PT_ENC_FINISH, &z), PT_OK);
            CHECK(z.len > 0);
            CHECK_INT(decode_all(encoders[e], z.p, z.len, 1, 1 << 20, 100, &out), PT_DEC_OK);
            CHECK_INT(out.len, hint == 1 ? 1 : 0);
            pt_encoder_free(enc);
            pt_comp_buf_free(&z);
            pt_comp_buf_free(&out);
        }
        /* no input at all: an empty body, accepted */
        pt_comp_buf out = {0};
        CHECK_INT(decode_all(encoders[e], "", 0, 0, 1 << 20, 100, &out), PT_DEC_OK);
        CHECK_INT(out.len, 0);
        pt_comp_buf_free(&out);
    }
    /* zstd with a known length refuses a different one (the length is
     * pledged; given in one piece zstd takes the real one) */
    pt_encoder *enc = pt_encoder_new(PT_CODING_ZSTD, 3, 19, 10);
    pt_comp_buf z = {0};
    CHECK_INT(pt_encoder_write(enc, "ab", 2, PT_ENC_PROCESS, &z), PT_OK);
    CHECK_INT(pt_encoder_write(enc, "c", 1, PT_ENC_FINISH, &z), PT_ERR);
    pt_encoder_free(enc);
    pt_comp_buf_free(&z);
}

TEST(codec_small_hint_window_still_decodes_with_other_tools)
{
    /* gzip with a shrunk window (hint 2000) must be plain gzip to zlib */
    size_t n = 2000;
    char *text = make_text(n, 11);
    pt_encoder *enc = pt_encoder_new(PT_CODING_GZIP, 9, 15, (int64_t)n);
    pt_comp_buf z = {0};
    CHECK_INT(pt_encoder_write(enc, text, n, PT_ENC_FINISH, &z), PT_OK);
    pt_encoder_free(enc);
    z_stream s = {0};
    CHECK_INT(inflateInit2(&s, 16 + 15), Z_OK);
    char *back = malloc(n + 10);
    s.next_in = (Bytef *)z.p;
    s.avail_in = (uInt)z.len;
    s.next_out = (Bytef *)back;
    s.avail_out = (uInt)n + 10;
    CHECK_INT(inflate(&s, Z_FINISH), Z_STREAM_END);
    CHECK_INT(s.total_out, n);
    CHECK(memcmp(back, text, n) == 0);
    inflateEnd(&s);
    /* zstd with a pledged size: ZSTD_getFrameContentSize sees it */
    enc = pt_encoder_new(PT_CODING_ZSTD, 3, 19, (int64_t)n);
    pt_comp_buf zs = {0};
    CHECK_INT(pt_encoder_write(enc, text, 1000, PT_ENC_PROCESS, &zs), PT_OK);
    CHECK_INT(pt_encoder_write(enc, text + 1000, n - 1000, PT_ENC_FINISH, &zs), PT_OK);
    pt_encoder_free(enc);
    CHECK_INT(ZSTD_getFrameContentSize(zs.p, zs.len), n);
    free(back);
    free(text);
    pt_comp_buf_free(&z);
    pt_comp_buf_free(&zs);
}

/* Compresses with zlib directly: windowBits as deflateInit2 takes them. */
static pt_comp_buf zlib_compress(const char *in, size_t n, int wbits, int level)
{
    pt_comp_buf b = {0};
    z_stream s = {0};
    PT_ASSERT(deflateInit2(&s, level, Z_DEFLATED, wbits, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    pt_comp_buf_reserve(&b, deflateBound(&s, n) + 64);
    s.next_in = (Bytef *)(uintptr_t)in;
    s.avail_in = (uInt)n;
    s.next_out = (Bytef *)b.p;
    s.avail_out = (uInt)b.cap;
    PT_ASSERT(deflate(&s, Z_FINISH) == Z_STREAM_END);
    b.len = s.total_out;
    deflateEnd(&s);
    return b;
}

TEST(decoder_deflate_both_framings_and_gzip_members)
{
    size_t n = 50000;
    char *text = make_text(n, 5);
    pt_comp_buf zl = zlib_compress(text, n, 15, 6);  /* RFC 1950 */
    pt_comp_buf raw = zlib_compress(text, n, -15, 6); /* raw deflate */
    size_t pieces[] = {0, 1, 2, 3, 4096};
    for (size_t i = 0; i < PT_ARRAY_LEN(pieces); i++) {
        pt_comp_buf o1 = {0}, o2 = {0};
        CHECK_INT(decode_all(PT_CODING_DEFLATE, zl.p, zl.len, pieces[i], 1 << 30, 100, &o1), PT_DEC_OK);
        CHECK_INT(decode_all(PT_CODING_DEFLATE, raw.p, raw.len, pieces[i], 1 << 30, 100, &o2), PT_DEC_OK);
        CHECK(o1.len == n && memcmp(o1.p, text, n) == 0);
        CHECK(o2.len == n && memcmp(o2.p, text, n) == 0);
        pt_comp_buf_free(&o1);
        pt_comp_buf_free(&o2);
    }
    /* two gzip members = the concatenation (RFC 1952) */
    pt_comp_buf g1 = zlib_compress(text, 1000, 31, 6), g2 = zlib_compress(text + 1000, n - 1000, 31, 1);
    pt_comp_buf both = {0};
    pt_comp_buf_reserve(&both, g1.len + g2.len);
    memcpy(both.p, g1.p, g1.len);
    memcpy(both.p + g1.len, g2.p, g2.len);
    both.len = g1.len + g2.len;
    for (size_t i = 0; i < PT_ARRAY_LEN(pieces); i++) {
        pt_comp_buf o = {0};
        CHECK_INT(decode_all(PT_CODING_GZIP, both.p, both.len, pieces[i], 1 << 30, 100, &o), PT_DEC_OK);
        CHECK(o.len == n && memcmp(o.p, text, n) == 0);
        pt_comp_buf_free(&o);
    }
    /* ...but a zlib stream is one stream: bytes after it are malformed */
    pt_comp_buf twice = {0};
    pt_comp_buf_reserve(&twice, 2 * zl.len);
    memcpy(twice.p, zl.p, zl.len);
    memcpy(twice.p + zl.len, zl.p, zl.len);
    twice.len = 2 * zl.len;
    pt_comp_buf o = {0};
    CHECK_INT(decode_all(PT_CODING_DEFLATE, twice.p, twice.len, 0, 1 << 30, 100, &o), PT_DEC_MALFORMED);
    pt_comp_buf_free(&o);
    pt_comp_buf_free(&twice);
    pt_comp_buf_free(&both);
    pt_comp_buf_free(&g1);
    pt_comp_buf_free(&g2);
    pt_comp_buf_free(&zl);
    pt_comp_buf_free(&raw);
    free(text);
}

/* A valid encoded body of `text` in coding c (our encoder). */
static pt_comp_buf encode(pt_coding c, const char *text, size_t n)
{
    pt_encoder *enc = pt_encoder_new(c, c == PT_CODING_GZIP ? 6 : c == PT_CODING_BR ? 4 : 3, 19, -1);
    pt_comp_buf z = {0};
    PT_ASSERT(pt_encoder_write(enc, text, n, PT_ENC_FINISH, &z) == PT_OK);
    pt_encoder_free(enc);
    return z;
}

TEST(decoder_malformed_truncated_and_trailing)
{
    size_t n = 20000;
    char *text = make_text(n, 9);
    for (size_t e = 0; e < PT_ARRAY_LEN(encoders); e++) {
        pt_coding c = encoders[e];
        pt_comp_buf z = encode(c, text, n);
        pt_comp_buf o = {0};
        /* truncated: fine until the last call says so */
        CHECK_INT(decode_all(c, z.p, z.len - 3, 0, 1 << 30, 100, &o), PT_DEC_MALFORMED);
        o.len = 0;
        CHECK_INT(decode_all(c, z.p, z.len / 2, 100, 1 << 30, 100, &o), PT_DEC_MALFORMED);
        o.len = 0;
        /* trailing garbage */
        pt_comp_buf t = {0};
        pt_comp_buf_reserve(&t, z.len + 8);
        memcpy(t.p, z.p, z.len);
        memcpy(t.p + z.len, "garbage!", 8);
        t.len = z.len + 8;
        CHECK_INT(decode_all(c, t.p, t.len, 0, 1 << 30, 100, &o), PT_DEC_MALFORMED);
        o.len = 0;
        /* corrupted middle */
        memcpy(t.p, z.p, z.len);
        for (size_t i = z.len / 3; i < z.len / 3 + 16; i++) t.p[i] ^= 0x5a;
        pt_dec_result r = decode_all(c, t.p, z.len, 0, 1 << 30, 100, &o);
        CHECK(r == PT_DEC_MALFORMED || (r == PT_DEC_OK && (o.len != n || memcmp(o.p, text, n) != 0)));
        o.len = 0;
        /* plain text is not compressed data */
        CHECK_INT(decode_all(c, text, 1000, 0, 1 << 30, 100, &o), PT_DEC_MALFORMED);
        o.len = 0;
        /* after a failure the decoder stays failed */
        pt_decoder *d = pt_decoder_new(c, 1 << 30, 100);
        CHECK_INT(pt_decoder_write(d, "\xff\xff\xff\xff\xff\xff", 6, false, &o), PT_DEC_MALFORMED);
        CHECK_INT(pt_decoder_write(d, z.p, z.len, true, &o), PT_DEC_MALFORMED);
        pt_decoder_free(d);
        pt_comp_buf_free(&t);
        pt_comp_buf_free(&o);
        pt_comp_buf_free(&z);
    }
    /* zstd: two frames concatenated are one body */
    pt_comp_buf f1 = encode(PT_CODING_ZSTD, text, 5000), f2 = encode(PT_CODING_ZSTD, text + 5000, n - 5000);
    pt_comp_buf both = {0};
    pt_comp_buf_reserve(&both, f1.len + f2.len);
    memcpy(both.p, f1.p, f1.len);
    memcpy(both.p + f1.len, f2.p, f2.len);
    both.len = f1.len + f2.len;
    pt_comp_buf o = {0};
    CHECK_INT(decode_all(PT_CODING_ZSTD, both.p, both.len, 333, 1 << 30, 100, &o), PT_DEC_OK);
    CHECK(o.len == n && memcmp(o.p, text, n) == 0);
    pt_comp_buf_free(&o);
    pt_comp_buf_free(&both);
    pt_comp_buf_free(&f1);
    pt_comp_buf_free(&f2);
    free(text);
}

/* A highly compressible body: n zero bytes, encoded in c. */
static pt_comp_buf bomb(pt_coding c, size_t n)
{
    char *zeros = calloc(1, n);
    pt_comp_buf z;
    if (c == PT_CODING_GZIP) {
        z = zlib_compress(zeros, n, 31, 9);
    } else if (c == PT_CODING_BR) {
        z = (pt_comp_buf){0};
        pt_comp_buf_reserve(&z, BrotliEncoderMaxCompressedSize(n) + 16);
        size_t len = z.cap;
        PT_ASSERT(BrotliEncoderCompress(11, 22, BROTLI_MODE_GENERIC, n, (const uint8_t *)zeros, &len,
                                        (uint8_t *)z.p));
        z.len = len;
    } else {
        z = (pt_comp_buf){0};
        pt_comp_buf_reserve(&z, ZSTD_compressBound(n));
        z.len = ZSTD_compress(z.p, z.cap, zeros, n, 19);
        PT_ASSERT(!ZSTD_isError(z.len));
    }
    free(zeros);
    return z;
}

TEST(decoder_bomb_caps)
{
    const size_t big = 64u << 20; /* 64 MiB of zeros */
    for (size_t e = 0; e < PT_ARRAY_LEN(encoders); e++) {
        pt_coding c = encoders[e];
        pt_comp_buf z = bomb(c, big);
        CHECK(z.len < 100000);
        /* ratio: stops within one step of ratio * input + slack */
        pt_comp_buf o = {0};
        CHECK_INT(decode_all(c, z.p, z.len, 16384, 1ull << 40, 100, &o), PT_DEC_TOO_DENSE);
        CHECK(o.len <= 100 * (uint64_t)z.len + PT_DEC_SLACK + PT_DEC_STEP);
        pt_comp_buf_free(&o);
        /* max_size: never one byte more than max_size + 1 */
        CHECK_INT(decode_all(c, z.p, z.len, 0, 1 << 20, 100000, &o), PT_DEC_TOO_LARGE);
        CHECK(o.len <= (1 << 20) + 1);
        pt_comp_buf_free(&o);
        CHECK_INT(decode_all(c, z.p, z.len, 0, 1000, 100000, &o), PT_DEC_TOO_LARGE);
        CHECK_INT(o.len, 1001);
        pt_comp_buf_free(&o);
        /* generous limits: the whole thing decodes */
        CHECK_INT(decode_all(c, z.p, z.len, 0, 1ull << 40, UINT32_MAX, &o), PT_DEC_OK);
        CHECK_INT(o.len, big);
        pt_comp_buf_free(&o);
        pt_comp_buf_free(&z);
    }
}

/* One call's output stays <= max_ratio * that call's input + CALL_SLACK
 * (+ one step) even when a long incompressible prefix gave the overall
 * ratio room: gzip members / zstd frames of random bytes, then a bomb. */
TEST(decoder_per_call_cap_after_incompressible_prefix)
{
    size_t nrand = 2u << 20, nzero = 256u << 20;
    char *rnd = malloc(nrand);
    uint32_t x = 12345;
    for (size_t i = 0; i < nrand; i++) {
        x = x * 1103515245u + 12345u;
        rnd[i] = (char)(x >> 23);
    }
    static const pt_coding multi[] = {PT_CODING_GZIP, PT_CODING_ZSTD};
    for (size_t e = 0; e < PT_ARRAY_LEN(multi); e++) {
        pt_coding c = multi[e];
        pt_comp_buf pre = c == PT_CODING_GZIP ? zlib_compress(rnd, nrand, 31, 1) : encode(c, rnd, nrand);
        pt_comp_buf b = bomb(c, nzero);
        pt_decoder *d = pt_decoder_new(c, 1ull << 40, 100);
        pt_comp_buf out = {0};
        /* the prefix, in 16 KiB calls: fine (ratio ~1) */
        pt_dec_result r = PT_DEC_OK;
        for (size_t off = 0; off < pre.len && r == PT_DEC_OK; off += 16384) {
            out.len = 0;
            r = pt_decoder_write(d, pre.p + off, PT_MIN((size_t)16384, pre.len - off), false, &out);
        }
        CHECK_INT(r, PT_DEC_OK);
        CHECK_INT(pt_decoder_total_out(d), nrand);
        /* overall, 100 * ~2 MiB would allow ~200 MiB more; one call may
         * not produce more than 100 * its input + 1 MiB */
        size_t k = PT_MIN(b.len, (size_t)4096);
        out.len = 0;
        CHECK_INT(pt_decoder_write(d, b.p, k, false, &out), PT_DEC_TOO_DENSE);
        CHECK(out.len <= 100u * k + PT_DEC_CALL_SLACK + PT_DEC_STEP);
        CHECK(out.len > PT_DEC_CALL_SLACK);
        pt_decoder_free(d);
        pt_comp_buf_free(&out);
        pt_comp_buf_free(&pre);
        pt_comp_buf_free(&b);
    }
    free(rnd);
}

TEST(decoder_ratio_boundary_is_exact_enough)
{
    /* 1 MiB of text at ratio ~5 passes a max_ratio of 10 and fails 2 */
    size_t n = 1 << 20;
    char *text = make_text(n, 1);
    for (size_t e = 0; e < PT_ARRAY_LEN(encoders); e++) {
        pt_comp_buf z = encode(encoders[e], text, n);
        double ratio = (double)n / (double)z.len;
        CHECK(ratio > 2.5 && ratio < 10);
        pt_comp_buf o = {0};
        CHECK_INT(decode_all(encoders[e], z.p, z.len, 16384, 1 << 30, 10, &o), PT_DEC_OK);
        CHECK_INT(o.len, n);
        o.len = 0;
        CHECK_INT(decode_all(encoders[e], z.p, z.len, 16384, 1 << 30, 2, &o), PT_DEC_TOO_DENSE);
        /* max_size equal to the body is enough */
        o.len = 0;
        CHECK_INT(decode_all(encoders[e], z.p, z.len, 16384, n, 100, &o), PT_DEC_OK);
        o.len = 0;
        CHECK_INT(decode_all(encoders[e], z.p, z.len, 16384, n - 1, 100, &o), PT_DEC_TOO_LARGE);
        pt_comp_buf_free(&o);
        pt_comp_buf_free(&z);
    }
    free(text);
}

TEST(decoder_zstd_window_over_8m_refused)
{
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cc, ZSTD_c_windowLog, 25);
    size_t n = 1 << 16;
    char *text = make_text(n, 2);
    pt_comp_buf z = {0};
    pt_comp_buf_reserve(&z, ZSTD_compressBound(n) + 64);
    ZSTD_outBuffer ob = {z.p, z.cap, 0};
    ZSTD_inBuffer ib = {text, n, 0};
    PT_ASSERT(!ZSTD_isError(ZSTD_compressStream2(cc, &ob, &ib, ZSTD_e_continue)));
    ZSTD_inBuffer none = {NULL, 0, 0};
    PT_ASSERT(ZSTD_compressStream2(cc, &ob, &none, ZSTD_e_end) == 0);
    z.len = ob.pos;
    ZSTD_freeCCtx(cc);
    pt_comp_buf o = {0};
    CHECK_INT(decode_all(PT_CODING_ZSTD, z.p, z.len, 0, 1 << 30, 100, &o), PT_DEC_MALFORMED);
    pt_comp_buf_free(&o);
    pt_comp_buf_free(&z);
    free(text);
}

TEST_MAIN()
