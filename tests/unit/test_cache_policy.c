/* test_cache_policy.c — the cache plugin's RFC 9111 rules: Cache-Control
 * parsing, HTTP-dates, storability, freshness lifetime, age, ETags. */
#include "plugins/cache/cache_policy.h"
#include "testlib.h"

static pt_arena *A;

static pt_headers hdrs(const char *const *kv)
{
    pt_headers h = {0};
    for (size_t i = 0; kv[i]; i += 2) pt_headers_add(&h, A, pt_str_c(kv[i]), pt_str_c(kv[i + 1]));
    return h;
}

TEST(cache_control_parse)
{
    A = pt_arena_new(4096);
    pt_cache_cc cc;
    pt_headers h = hdrs((const char *const[]){"Cache-Control", "public, max-age=60", "cache-control",
                                              "S-MaxAge=\"120\", stale-while-revalidate=30, stale-if-error=600",
                                              "Cache-Control", "must-revalidate,proxy-revalidate", NULL});
    pt_cache_cc_parse(&h, false, &cc);
    CHECK_INT(cc.max_age, 60);
    CHECK_INT(cc.s_maxage, 120);
    CHECK_INT(cc.swr, 30);
    CHECK_INT(cc.sie, 600);
    CHECK(cc.public_ && cc.must_revalidate && cc.proxy_revalidate);
    CHECK(!cc.no_store && !cc.no_cache && !cc.private_);
    h = hdrs((const char *const[]){"Cache-Control", "max-age=abc, no-cache=\"Set-Cookie\", private, no-store", NULL});
    pt_cache_cc_parse(&h, false, &cc);
    CHECK_INT(cc.max_age, 0); /* malformed max-age: stale */
    CHECK(cc.no_cache && cc.private_ && cc.no_store);
    h = hdrs((const char *const[]){"Cache-Control", "max-age=99999999999999", NULL});
    pt_cache_cc_parse(&h, false, &cc);
    CHECK_INT(cc.max_age, 2147483648LL); /* saturates */
    /* Pragma: no-cache counts on requests only */
    h = hdrs((const char *const[]){"Pragma", "no-cache", NULL});
    pt_cache_cc_parse(&h, false, &cc);
    CHECK(!cc.no_cache);
    pt_cache_cc_parse(&h, true, &cc);
    CHECK(cc.no_cache);
    h = hdrs((const char *const[]){"Cache-Control", "max-stale, min-fresh=5, only-if-cached", NULL});
    pt_cache_cc_parse(&h, true, &cc);
    CHECK(cc.max_stale > 0 && cc.min_fresh == 5 && cc.only_if_cached);
    CHECK_INT(cc.max_age, -1);
    pt_arena_free(A);
}

TEST(http_dates)
{
    CHECK_INT(pt_cache_http_date(pt_str_c("Sun, 06 Nov 1994 08:49:37 GMT")), 784111777);
    CHECK_INT(pt_cache_http_date(pt_str_c("Sunday, 06-Nov-94 08:49:37 GMT")), 784111777);
    CHECK_INT(pt_cache_http_date(pt_str_c("Sun Nov  6 08:49:37 1994")), 784111777);
    CHECK_INT(pt_cache_http_date(pt_str_c("yesterday")), -1);
    CHECK_INT(pt_cache_http_date(pt_str_c("Sun, 06 Nov 1994 08:49:37 GMT trailing")), -1);
    CHECK_INT(pt_cache_http_date(pt_str_c("")), -1);
    char buf[32];
    size_t n = pt_cache_http_date_fmt(784111777, buf);
    CHECK_STRN(buf, n, "Sun, 06 Nov 1994 08:49:37 GMT");
}

TEST(storability)
{
    A = pt_arena_new(4096);
    pt_cache_policy p = {0};
    pt_cache_cc cc;
#define WHY(status, ...)                                                             \
    (h = hdrs((const char *const[]){__VA_ARGS__, NULL}), pt_cache_cc_parse(&h, false, &cc), \
     pt_cache_unstorable(&p, status, &h, &cc))
    pt_headers h;
    CHECK(WHY(200, "Cache-Control", "max-age=10") == NULL);
    CHECK_STR(WHY(200, "Content-Type", "text/plain"), "no-freshness");
    CHECK_STR(WHY(200, "Cache-Control", "max-age=10, no-store"), "no-store");
    CHECK_STR(WHY(200, "Cache-Control", "private, max-age=10"), "private");
    CHECK_STR(WHY(200, "Cache-Control", "max-age=10", "Vary", "Accept, *"), "vary-star");
    CHECK_STR(WHY(200, "Cache-Control", "max-age=10", "Set-Cookie", "a=b"), "set-cookie");
    CHECK(WHY(404, "Expires", "Sun, 06 Nov 2094 08:49:37 GMT") == NULL);
    CHECK_STR(WHY(500, "Cache-Control", "max-age=10"), "status");
    CHECK_STR(WHY(302, "Cache-Control", "max-age=10"), "status");
    CHECK_STR(WHY(206, "Cache-Control", "max-age=10"), "status"); /* whole representations only */
    CHECK(WHY(200, "Cache-Control", "no-cache") == NULL);         /* stored, revalidated at each use */
    p.heuristic_ttl = 60;
    CHECK(WHY(200, "Content-Type", "text/plain") == NULL);
    p.extra_statuses[p.nextra++] = 503;
    CHECK(WHY(503, "Cache-Control", "max-age=10") == NULL);
    CHECK_STR(WHY(503, "Content-Type", "x"), "no-freshness"); /* listed statuses need explicit freshness */
    p.allow_set_cookie = true;
    CHECK(WHY(200, "Cache-Control", "max-age=10", "Set-Cookie", "a=b") == NULL);
#undef WHY
    pt_arena_free(A);
}

TEST(lifetime_and_age)
{
    A = pt_arena_new(4096);
    pt_cache_policy p = {0};
    pt_cache_cc cc;
    pt_headers h = hdrs((const char *const[]){"Cache-Control", "max-age=10, s-maxage=20", "Expires",
                                              "Sun, 06 Nov 1994 08:59:37 GMT", NULL});
    pt_cache_cc_parse(&h, false, &cc);
    CHECK_INT(pt_cache_lifetime(&p, &h, &cc, 784111777), 20);
    h = hdrs((const char *const[]){"Date", "Sun, 06 Nov 1994 08:49:37 GMT", "Expires",
                                   "Sun, 06 Nov 1994 08:59:37 GMT", NULL});
    pt_cache_cc_parse(&h, false, &cc);
    CHECK_INT(pt_cache_lifetime(&p, &h, &cc, 0), 600); /* Expires - Date */
    h = hdrs((const char *const[]){"Expires", "0", NULL});
    pt_cache_cc_parse(&h, false, &cc);
    CHECK_INT(pt_cache_lifetime(&p, &h, &cc, 784111777), 0); /* invalid Expires: stale */
    h = hdrs((const char *const[]){"Content-Type", "x", NULL});
    pt_cache_cc_parse(&h, false, &cc);
    CHECK_INT(pt_cache_lifetime(&p, &h, &cc, 0), 0);
    p.heuristic_ttl = 30;
    CHECK_INT(pt_cache_lifetime(&p, &h, &cc, 0), 30);
    /* age: the larger of the apparent age and Age + response delay */
    h = hdrs((const char *const[]){"Date", "Sun, 06 Nov 1994 08:49:37 GMT", "Age", "5", NULL});
    CHECK_INT(pt_cache_initial_age(&h, 784111777 + 100, 784111777 + 102), 102);
    h = hdrs((const char *const[]){"Age", "50", NULL});
    CHECK_INT(pt_cache_initial_age(&h, 1000, 1002), 52);
    h = hdrs((const char *const[]){"Age", "junk", NULL});
    CHECK_INT(pt_cache_initial_age(&h, 1000, 1000), 0);
    pt_arena_free(A);
}

TEST(etag_matching)
{
    CHECK(pt_cache_inm_matches(pt_str_c("\"a\", \"b\""), pt_str_c("\"b\"")));
    CHECK(pt_cache_inm_matches(pt_str_c("W/\"a\""), pt_str_c("\"a\""))); /* weak comparison */
    CHECK(pt_cache_inm_matches(pt_str_c("\"a\""), pt_str_c("W/\"a\"")));
    CHECK(pt_cache_inm_matches(pt_str_c("*"), pt_str_c("\"zz\"")));
    CHECK(!pt_cache_inm_matches(pt_str_c("\"ab\""), pt_str_c("\"a\"")));
    CHECK(!pt_cache_inm_matches(pt_str_c(""), pt_str_c("\"a\"")));
}

TEST_MAIN()
