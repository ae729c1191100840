/* test_cors.c — the cors plugin's origin parser (serialized form, refused
 * spellings) and the origin decision against a configured policy. The
 * phases are covered by tests/integration/test_cors.py. */
#include "config/conf_node.h"
#include "plugins/cors/cors.h"
#include "testlib.h"

static const char *norm(const char *in)
{
    static pt_cors_origin o;
    return pt_cors_origin_parse(in, strlen(in), &o) ? o.text : NULL;
}

TEST(origin_serialized_form)
{
    CHECK_STR(norm("https://app.example.com"), "https://app.example.com");
    CHECK_STR(norm("HTTPS://APP.Example.COM"), "https://app.example.com");
    CHECK_STR(norm("https://app.example.com:443"), "https://app.example.com");
    CHECK_STR(norm("http://a.test:80"), "http://a.test");
    CHECK_STR(norm("http://a.test:8080"), "http://a.test:8080");
    CHECK_STR(norm("https://a.test:0080"), "https://a.test:80");
    CHECK_STR(norm("http://[::1]:3000"), "http://[::1]:3000");
    CHECK_STR(norm("chrome-extension://abcdef"), "chrome-extension://abcdef");
    pt_cors_origin o;
    CHECK(pt_cors_origin_parse("https://a.b.test:8443", 21, &o));
    CHECK_INT(o.port, 8443);
    CHECK_STRN(o.text + o.host_off, o.host_len, "a.b.test");
}

TEST(origin_refused_spellings)
{
    const char *bad[] = {"", "null", "app.example.com", "https://", "https:/a.test", "https://a.test.",
                         "https://.a.test", "https://a..test", "https://u@a.test", "https://a.test/",
                         "https://a.test/x", "https://a.test?x", "https://a.test#x", "https://a.test:",
                         "https://a.test:0", "https://a.test:65536", "https://a.test:99999999999",
                         "https://a.test:8x", "https://a test", "https://a%2etest", "1http://a.test",
                         "https://[]", "https://[::1", "https://[zz::1]", "https://a.test\r\n"};
    for (size_t i = 0; i < PT_ARRAY_LEN(bad); i++) {
        pt_cors_origin o;
        bool ok = pt_cors_origin_parse(bad[i], strlen(bad[i]), &o);
        if (ok) fprintf(stderr, "accepted: %s\n", bad[i]);
        CHECK(!ok);
    }
    char long_origin[PT_CORS_ORIGIN_MAX + 20] = "https://";
    memset(long_origin + 8, 'a', sizeof(long_origin) - 9);
    long_origin[sizeof(long_origin) - 1] = '\0';
    CHECK(norm(long_origin) == NULL);
}

static pt_cors_conf *configure(pt_arena *a, pt_errors *errs, const char *yaml)
{
    pt_conf_ctx ctx = {.file = "t.yaml", .arena = a, .errors = errs};
    const pt_conf_node *node = pt_conf_parse_yaml(&ctx, yaml, strlen(yaml));
    return node ? pt_plugin_cors.configure(&ctx, node) : NULL;
}

static bool allowed(const pt_cors_conf *c, pt_arena *a, const char *origin, const char *want)
{
    pt_str out;
    bool ok = pt_cors_origin_allowed(c, pt_str_c(origin), a, &out);
    if (ok && want && !pt_str_eq_lit(out, want)) return false;
    return ok;
}

TEST(origin_decision)
{
    pt_arena *a = pt_arena_new(4096);
    pt_errors errs = {0};
    pt_cors_conf *c = configure(a, &errs,
                                "origins: ['https://App.Example.com:443', 'https://*.example.com:8443']\n"
                                "origin_regex: ['https://pr-[0-9]+\\.test']\n");
    CHECK(c != NULL);
    CHECK_INT(errs.n, 0);
    if (c) {
        CHECK(allowed(c, a, "https://app.example.com", "https://app.example.com"));
        CHECK(allowed(c, a, "https://APP.example.com:443", "https://app.example.com"));
        CHECK(!allowed(c, a, "https://x.example.com", NULL)); /* the suffix is for :8443 */
        CHECK(allowed(c, a, "https://x.example.com:8443", "https://x.example.com:8443"));
        CHECK(!allowed(c, a, "https://example.com:8443", NULL));
        CHECK(!allowed(c, a, "https://evil-example.com:8443", NULL));
        CHECK(!allowed(c, a, "https://example.com.evil.net:8443", NULL));
        CHECK(!allowed(c, a, "http://x.example.com:8443", NULL));
        CHECK(allowed(c, a, "https://pr-12.test", "https://pr-12.test"));
        CHECK(!allowed(c, a, "https://pr-12.test.evil", NULL));
        CHECK(!allowed(c, a, "null", NULL));
    }
    pt_errors_free(&errs);
    pt_arena_free(a);
}

TEST_MAIN()
