/* test_introspection.c — the oauth2_introspection plugin's pure parts:
 * Bearer token extraction and removal, form encoding and client
 * credentials (RFC 6749 §2.3.1), the judgement of introspection answers
 * (strict JSON, active, exp/nbf, iss/aud, consumer naming, claims), the
 * cache deadlines, the answer cache itself (fresh/kept, separate LRU
 * bounds, namespaces), the table of calls in flight (coalescing waiters,
 * the last waiter leaving, delivery) and configure() through the real
 * loader. The
 * round trip is in tests/integration/test_introspection.py. */
#include <stdio.h>
#include <stdlib.h>

#include "config/config.h"
#include "plugins/oauth2_introspection/oauth2_introspection.h"
#include "plugin/plugin.h"
#include "testlib.h"

/* ------------------------------------------------------------- helpers */

/* A request with the given "Name: value" fields (NULL-terminated). */
static pt_request make_req(pt_arena *a, const char *const *fields)
{
    pt_request r = {0};
    for (size_t i = 0; fields && fields[i]; i++) {
        const char *colon = strchr(fields[i], ':');
        const char *v = colon + 1;
        while (*v == ' ') v++;
        pt_headers_add(&r.headers, a, pt_str_make(fields[i], (size_t)(colon - fields[i])), pt_str_c(v));
    }
    return r;
}

static pt_oi_token_found find(pt_arena *a, const char *const *fields, pt_str *tok)
{
    pt_request r = make_req(a, fields);
    return pt_oi_find_token(&r, tok);
}

static const char *const def_claims[] = {"sub", "username", "client_id"};

static pt_oi_conf base_conf(void)
{
    pt_oi_conf c = {0};
    c.consumer_claims = def_claims;
    c.nconsumer_claims = 3;
    c.ttl_ms = 60000;
    return c;
}

#define NOW 1700000000000ull /* wall ms */

static pt_oi_answer parse(const pt_oi_conf *c, const char *json, pt_arena *a)
{
    pt_oi_answer ans;
    pt_oi_parse_answer(c, pt_str_c(json), NOW, a, &ans);
    return ans;
}

static pt_str claim(const pt_oi_answer *ans, const char *name)
{
    for (size_t i = 0; i < ans->nclaims; i++)
        if (pt_str_eq_lit(ans->claims[i].name, name)) return ans->claims[i].value;
    return PT_STR_NULL;
}

static void key_of(int i, uint8_t out[PT_DIGEST_LEN])
{
    memset(out, 0, PT_DIGEST_LEN);
    memcpy(out, &i, sizeof(i));
    memcpy(out + 8, &i, sizeof(i));
}

/* ------------------------------------------------------------- tokens */

TEST(find_token_cases)
{
    pt_arena *a = pt_arena_new(1024);
    pt_str t;
    CHECK_INT(find(a, NULL, &t), PT_OI_TOKEN_NONE);
    CHECK_INT(find(a, (const char *[]){"Authorization: Basic YTpi", NULL}, &t), PT_OI_TOKEN_NONE);
    CHECK_INT(find(a, (const char *[]){"Authorization: Bearerx abc", NULL}, &t), PT_OI_TOKEN_NONE);
    CHECK_INT(find(a, (const char *[]){"Authorization: Bearer abc.DEF-_~+/==", NULL}, &t), PT_OI_TOKEN_ONE);
    CHECK_SLICE(t, "abc.DEF-_~+/==");
    CHECK_INT(find(a, (const char *[]){"authorization: bEaReR   xyz", NULL}, &t), PT_OI_TOKEN_ONE);
    CHECK_SLICE(t, "xyz");
    CHECK_INT(find(a, (const char *[]){"Authorization: Bearer", NULL}, &t), PT_OI_TOKEN_BAD);
    CHECK_INT(find(a, (const char *[]){"Authorization: Bearer a b", NULL}, &t), PT_OI_TOKEN_BAD);
    CHECK_INT(find(a, (const char *[]){"Authorization: Bearer =abc", NULL}, &t), PT_OI_TOKEN_BAD);
    CHECK_INT(find(a, (const char *[]){"Authorization: Bearer ab=c", NULL}, &t), PT_OI_TOKEN_BAD);
    CHECK_INT(find(a, (const char *[]){"Authorization: Bearer a\"b", NULL}, &t), PT_OI_TOKEN_BAD);
    CHECK_INT(find(a, (const char *[]){"Authorization: Bearer a", "Authorization: Bearer b", NULL}, &t),
              PT_OI_TOKEN_MANY);
    CHECK_INT(find(a, (const char *[]){"Authorization: Basic YTpi", "Authorization: Bearer b", NULL}, &t),
              PT_OI_TOKEN_ONE);
    CHECK_SLICE(t, "b");
    pt_arena_free(a);
}

TEST(remove_bearer_keeps_other_schemes)
{
    pt_arena *a = pt_arena_new(1024);
    pt_request r = make_req(a, (const char *[]){"Authorization: Basic YTpi", "X-Other: 1",
                                                "authorization: bearer tok", "Authorization: Bearer", NULL});
    CHECK_INT(pt_oi_remove_bearer(&r), 2);
    CHECK_INT(r.headers.n, 2);
    CHECK_SLICE(r.headers.v[0].value, "Basic YTpi");
    CHECK_SLICE(r.headers.v[1].name, "X-Other");
    pt_arena_free(a);
}

/* ------------------------------------------------------------- the call */

TEST(form_encoding_and_client_credentials)
{
    pt_arena *a = pt_arena_new(1024);
    CHECK_SLICE(pt_oi_form_encode(PT_STR_LIT("a b+c/d:e%f~g.h-i_j*"), a), "a+b%2Bc%2Fd%3Ae%25f%7Eg.h-i_j*");
    CHECK_SLICE(pt_oi_form_encode(PT_STR_LIT(""), a), "");
    /* RFC 6749 §2.3.1: each part form-encoded before base64 (python's quote_plus agrees). */
    CHECK_SLICE(pt_oi_basic_credentials(PT_STR_LIT("portico gw"), PT_STR_LIT("s3cr:t/+%x"), a),
                "Basic cG9ydGljbytndzpzM2NyJTNBdCUyRiUyQiUyNXg=");
    pt_oi_conf c = base_conf();
    CHECK_SLICE(pt_oi_request_body(&c, PT_STR_LIT("ab+/="), a), "token=ab%2B%2F%3D&token_type_hint=access_token");
    c.body_prefix = PT_STR_LIT("client_id=x&client_secret=y&");
    CHECK_SLICE(pt_oi_request_body(&c, PT_STR_LIT("t"), a),
                "client_id=x&client_secret=y&token=t&token_type_hint=access_token");
    pt_arena_free(a);
}

/* ------------------------------------------------------------- answers */

TEST(active_answer_consumer_claims_exp)
{
    pt_arena *a = pt_arena_new(4096);
    pt_oi_conf c = base_conf();
    pt_oi_answer ans = parse(&c,
                             "{\"active\":true,\"sub\":\"alice\",\"client_id\":\"app\",\"scope\":\"read write\","
                             "\"aud\":[\"a\",\"b\"],\"iss\":\"https://i\",\"exp\":1700000100,\"ext\":{\"x\":1}}",
                             a);
    CHECK_INT(ans.kind, PT_OI_ANSWER_ACTIVE);
    CHECK_SLICE(ans.consumer, "alice");
    CHECK(ans.exp_ms == 1700000100000ull);
    CHECK_SLICE(claim(&ans, "scope"), "read write");
    CHECK_SLICE(claim(&ans, "aud"), "[\"a\",\"b\"]");
    CHECK_SLICE(claim(&ans, "client_id"), "app");
    CHECK_SLICE(claim(&ans, "iss"), "https://i");
    CHECK(claim(&ans, "ext").p == NULL);      /* only the listed claims */
    CHECK(claim(&ans, "username").p == NULL); /* absent */
    /* The first usable claim names the consumer: an empty or control-laden sub is skipped. */
    ans = parse(&c, "{\"active\":true,\"sub\":\"\",\"username\":\"bob\\n\",\"client_id\":\"svc\"}", a);
    CHECK_INT(ans.kind, PT_OI_ANSWER_ACTIVE);
    CHECK_SLICE(ans.consumer, "svc");
    ans = parse(&c, "{\"active\":true,\"sub\":42}", a);
    CHECK_INT(ans.kind, PT_OI_ANSWER_REFUSED);
    CHECK(strstr(ans.detail, "no consumer") != NULL);
    pt_arena_free(a);
}

TEST(inactive_expired_and_not_yet_valid)
{
    pt_arena *a = pt_arena_new(4096);
    pt_oi_conf c = base_conf();
    CHECK_INT(parse(&c, "{\"active\":false}", a).kind, PT_OI_ANSWER_INACTIVE);
    CHECK_INT(parse(&c, "{\"active\":false,\"sub\":\"a\",\"exp\":\"bad\"}", a).kind, PT_OI_ANSWER_INACTIVE);
    CHECK_INT(parse(&c, "{\"active\":true,\"sub\":\"a\",\"exp\":1700000000}", a).kind, PT_OI_ANSWER_INACTIVE);
    CHECK_INT(parse(&c, "{\"active\":true,\"sub\":\"a\",\"exp\":1700000001}", a).kind, PT_OI_ANSWER_ACTIVE);
    CHECK_INT(parse(&c, "{\"active\":true,\"sub\":\"a\",\"nbf\":1700000001}", a).kind, PT_OI_ANSWER_INACTIVE);
    CHECK_INT(parse(&c, "{\"active\":true,\"sub\":\"a\",\"nbf\":1700000000}", a).kind, PT_OI_ANSWER_ACTIVE);
    pt_arena_free(a);
}

TEST(invalid_answers)
{
    pt_arena *a = pt_arena_new(4096);
    pt_oi_conf c = base_conf();
    const char *bad[] = {
        "",
        "not json",
        "[{\"active\":true}]",
        "{\"active\":\"true\",\"sub\":\"a\"}",
        "{\"active\":1,\"sub\":\"a\"}",
        "{\"sub\":\"a\"}",
        "{\"active\":true,\"sub\":\"a\",\"active\":false}",        /* duplicate member */
        "{\"active\":true,\"sub\":\"a\"} x",                        /* trailing bytes */
        "{\"active\":true,\"sub\":\"a\",\"exp\":\"soon\"}",
        "{\"active\":true,\"sub\":\"a\",\"exp\":-5}",
        "{\"active\":true,\"sub\":\"a\",\"scope\":[\"r\"]}",
        "{\"active\":true,\"sub\":\"a\\u0000b\"}",                  /* NUL in a string */
    };
    for (size_t i = 0; i < PT_ARRAY_LEN(bad); i++) {
        pt_oi_answer ans = parse(&c, bad[i], a);
        if (ans.kind != PT_OI_ANSWER_INVALID) fprintf(stderr, "  accepted: %s\n", bad[i]);
        CHECK_INT(ans.kind, PT_OI_ANSWER_INVALID);
    }
    /* nesting: 16 levels pass, 17 do not (strings with brackets do not count) */
    char deep[256];
    for (int depth = 15; depth <= 16; depth++) {
        int n = snprintf(deep, sizeof(deep), "{\"active\":true,\"sub\":\"[[[{\",\"x\":");
        for (int i = 0; i < depth; i++) deep[n++] = '[';
        for (int i = 0; i < depth; i++) deep[n++] = ']';
        deep[n++] = '}';
        deep[n] = '\0';
        CHECK_INT(parse(&c, deep, a).kind, depth == 15 ? PT_OI_ANSWER_ACTIVE : PT_OI_ANSWER_INVALID);
    }
    pt_arena_free(a);
}

TEST(issuer_and_audience_checks)
{
    pt_arena *a = pt_arena_new(4096);
    pt_oi_conf c = base_conf();
    const char *iss[] = {"https://i"}, *aud[] = {"orders", "billing"};
    c.issuers = iss, c.nissuers = 1;
    c.audiences = aud, c.naudiences = 2;
    CHECK_INT(parse(&c, "{\"active\":true,\"sub\":\"a\",\"iss\":\"https://i\",\"aud\":\"billing\"}", a).kind,
              PT_OI_ANSWER_ACTIVE);
    CHECK_INT(parse(&c, "{\"active\":true,\"sub\":\"a\",\"iss\":\"https://i\",\"aud\":[\"x\",\"orders\"]}", a).kind,
              PT_OI_ANSWER_ACTIVE);
    pt_oi_answer ans = parse(&c, "{\"active\":true,\"sub\":\"a\",\"iss\":\"https://i/\",\"aud\":\"orders\"}", a);
    CHECK_INT(ans.kind, PT_OI_ANSWER_REFUSED);
    CHECK(strstr(ans.detail, "issuer") != NULL);
    CHECK_INT(parse(&c, "{\"active\":true,\"sub\":\"a\",\"aud\":\"orders\"}", a).kind, PT_OI_ANSWER_REFUSED);
    ans = parse(&c, "{\"active\":true,\"sub\":\"a\",\"iss\":\"https://i\",\"aud\":[\"x\"]}", a);
    CHECK_INT(ans.kind, PT_OI_ANSWER_REFUSED);
    CHECK(strstr(ans.detail, "audience") != NULL);
    CHECK_INT(parse(&c, "{\"active\":true,\"sub\":\"a\",\"iss\":\"https://i\"}", a).kind, PT_OI_ANSWER_REFUSED);
    CHECK_INT(parse(&c, "{\"active\":true,\"sub\":\"a\",\"iss\":\"https://i\",\"aud\":\"ordersX\"}", a).kind,
              PT_OI_ANSWER_REFUSED);
    pt_arena_free(a);
}

TEST(deadlines_bounded_by_exp)
{
    pt_oi_conf c = base_conf();
    uint64_t f, k;
    pt_oi_deadlines(&c, 0, 1000, &f, &k);
    CHECK(f == 61000 && k == 61000);
    c.stale_ms = 30000;
    pt_oi_deadlines(&c, 0, 1000, &f, &k);
    CHECK(f == 61000 && k == 91000);
    pt_oi_deadlines(&c, 70000, 1000, &f, &k); /* exp between fresh and keep */
    CHECK(f == 61000 && k == 70000);
    pt_oi_deadlines(&c, 5000, 1000, &f, &k);  /* exp before the ttl */
    CHECK(f == 5000 && k == 5000);
}

/* ------------------------------------------------------------- cache */

TEST(cache_fresh_kept_and_replaced)
{
    pt_digest_cache *c = pt_digest_cache_new(4, 2);
    uint8_t k[PT_DIGEST_LEN];
    key_of(1, k);
    pt_header claims[] = {{PT_STR_LIT("scope"), PT_STR_LIT("read")}};
    pt_oi_cache_put(c, k, true, 100, 200, PT_STR_LIT("alice"), claims, 1, 10);
    const pt_oi_entry *e = pt_oi_cache_get(c, k, 50);
    CHECK(e && e->active && e->fresh_until == 100 && e->keep_until == 200);
    if (e) {
        CHECK_SLICE(e->consumer, "alice");
        CHECK_INT(e->nclaims, 1);
        CHECK_SLICE(e->claims[0].value, "read");
    }
    CHECK(pt_oi_cache_get(c, k, 150) != NULL); /* stale but kept */
    CHECK(pt_oi_cache_get(c, k, 200) == NULL); /* gone */
    CHECK_INT(pt_digest_cache_count(c, true), 0);
    /* replace a positive with a negative */
    pt_oi_cache_put(c, k, true, 100, 200, PT_STR_LIT("alice"), NULL, 0, 10);
    pt_oi_cache_put(c, k, false, 50, 50, PT_STR_LIT("ignored"), claims, 1, 20);
    e = pt_oi_cache_get(c, k, 30);
    CHECK(e && !e->active && e->consumer.n == 0 && e->nclaims == 0);
    CHECK_INT(pt_digest_cache_count(c, true), 0);
    CHECK_INT(pt_digest_cache_count(c, false), 1);
    /* nothing stored when already dead */
    key_of(2, k);
    pt_oi_cache_put(c, k, true, 10, 10, PT_STR_LIT("x"), NULL, 0, 10);
    CHECK(pt_oi_cache_get(c, k, 0) == NULL);
    pt_digest_cache_free(c);
}

TEST(cache_negative_flood_does_not_evict_positives)
{
    pt_digest_cache *c = pt_digest_cache_new(3, 2);
    uint8_t k[PT_DIGEST_LEN];
    for (int i = 0; i < 3; i++) {
        key_of(i, k);
        pt_oi_cache_put(c, k, true, 1000, 1000, PT_STR_LIT("u"), NULL, 0, 0);
    }
    for (int i = 100; i < 200; i++) {
        key_of(i, k);
        pt_oi_cache_put(c, k, false, 1000, 1000, PT_STR_NULL, NULL, 0, 0);
    }
    CHECK_INT(pt_digest_cache_count(c, true), 3);
    CHECK_INT(pt_digest_cache_count(c, false), 2);
    for (int i = 0; i < 3; i++) {
        key_of(i, k);
        CHECK(pt_oi_cache_get(c, k, 1) != NULL);
    }
    key_of(198, k);
    CHECK(pt_oi_cache_get(c, k, 1) != NULL);
    key_of(150, k);
    CHECK(pt_oi_cache_get(c, k, 1) == NULL);
    /* LRU among positives: touch 0, add 3 -> 1 is evicted */
    key_of(0, k);
    CHECK(pt_oi_cache_get(c, k, 1) != NULL);
    key_of(3, k);
    pt_oi_cache_put(c, k, true, 1000, 1000, PT_STR_LIT("u"), NULL, 0, 1);
    key_of(1, k);
    CHECK(pt_oi_cache_get(c, k, 2) == NULL);
    key_of(0, k);
    CHECK(pt_oi_cache_get(c, k, 2) != NULL);
    pt_digest_cache_free(c);
}

TEST(store_namespaces_and_idle_release)
{
    pt_digest_store *s = pt_digest_store_new();
    uint8_t fp1[PT_DIGEST_LEN] = {1}, fp2[PT_DIGEST_LEN] = {2}, k[PT_DIGEST_LEN];
    pt_digest_cache *c1 = pt_digest_store_cache(s, fp1, 10, 10, 0);
    key_of(7, k);
    pt_oi_cache_put(c1, k, true, 5000, 5000, PT_STR_LIT("a"), NULL, 0, 0);
    pt_digest_cache *c2 = pt_digest_store_cache(s, fp2, 10, 10, 0);
    CHECK(c1 != c2);
    CHECK(pt_oi_cache_get(c2, k, 1) == NULL); /* namespaces do not share */
    CHECK(pt_digest_store_cache(s, fp1, 10, 10, 1) == c1);
    CHECK_INT(pt_digest_store_count(s), 2);
    /* fp1 still has a live entry at 4000: kept; fp2 is empty but recently used: kept */
    pt_digest_store_cache(s, fp1, 10, 10, 4000);
    CHECK_INT(pt_digest_store_count(s), 2);
    /* long after: fp2 idle and empty -> freed when fp1 is looked up */
    pt_digest_store_cache(s, fp1, 10, 10, PT_DIGEST_NS_IDLE_MS + 10);
    CHECK_INT(pt_digest_store_count(s), 1);
    /* two caches have different salts */
    c2 = pt_digest_store_cache(s, fp2, 10, 10, PT_DIGEST_NS_IDLE_MS + 11);
    CHECK(memcmp(pt_digest_cache_salt(c1), pt_digest_cache_salt(c2), PT_DIGEST_SALT_LEN) != 0);
    pt_digest_store_free(s);
}

/* ------------------------------------------------------------- calls in flight */

static void fkey(const pt_oi_flight *f, const char *tok, uint8_t out[PT_DIGEST_LEN])
{
    pt_str part = pt_str_c(tok);
    pt_oi_flight_key(f, &part, 1, out);
}

TEST(flight_waiters_share_an_entry)
{
    pt_oi_flight f;
    pt_oi_flight_init(&f);
    uint8_t ka[PT_DIGEST_LEN], kb[PT_DIGEST_LEN], ka2[PT_DIGEST_LEN];
    fkey(&f, "tok-a", ka);
    fkey(&f, "tok-b", kb);
    fkey(&f, "tok-a", ka2);
    CHECK(memcmp(ka, ka2, PT_DIGEST_LEN) == 0 && memcmp(ka, kb, PT_DIGEST_LEN) != 0);
    pt_oi_flight g;
    pt_oi_flight_init(&g);
    uint8_t kg[PT_DIGEST_LEN];
    fkey(&g, "tok-a", kg);
    CHECK(memcmp(ka, kg, PT_DIGEST_LEN) != 0); /* salted per table */

    CHECK(pt_oi_flight_find(&f, ka) == NULL);
    pt_oi_pending *pa = pt_oi_flight_add(&f, ka);
    pt_oi_pending *pb = pt_oi_flight_add(&f, kb);
    CHECK_INT(f.count, 2);
    CHECK(pt_oi_flight_find(&f, ka) == pa && pt_oi_flight_find(&f, kb) == pb);
    pt_oi_waiter w[3] = {0};
    for (int i = 0; i < 3; i++) pt_oi_pending_wait(pa, &w[i]);
    CHECK_INT(pa->nwaiters, 3);
    CHECK(pt_oi_pending_first(pa) == &w[0]);

    /* The first waiter leaves: the entry stays for the others. */
    pt_oi_waiter_cancel(&w[0]);
    pt_oi_waiter_cancel(&w[0]); /* idempotent */
    CHECK(w[0].pending == NULL && pt_oi_flight_find(&f, ka) == pa && pa->nwaiters == 2);
    CHECK(pt_oi_pending_first(pa) == &w[1]);

    /* The answer: detached (a new request starts a new call), waiters taken in order. */
    pt_oi_pending_detach(pa);
    CHECK(pt_oi_flight_find(&f, ka) == NULL && f.count == 1);
    CHECK(pt_oi_pending_pop(pa) == &w[1]);
    pt_oi_waiter_cancel(&w[2]);              /* leaves during delivery: the entry is not freed under it */
    CHECK(pt_oi_pending_pop(pa) == NULL && w[2].pending == NULL);
    pt_oi_pending_free(pa);

    /* The last waiter of an entry still in flight leaves: the entry goes. */
    pt_oi_waiter x = {0};
    pt_oi_pending_wait(pb, &x);
    pt_oi_waiter_cancel(&x);
    CHECK(pt_oi_flight_find(&f, kb) == NULL && f.count == 0);

    /* fini frees what is left, waiters unlinked. */
    pt_oi_pending *pc = pt_oi_flight_add(&f, ka);
    pt_oi_waiter y = {0};
    pt_oi_pending_wait(pc, &y);
    pt_oi_flight_fini(&f);
    CHECK(y.pending == NULL && f.count == 0);
    pt_oi_flight_fini(&g);
}

/* ------------------------------------------------------------- configure */

#define HEAD                                                                                                    \
    "listen: [127.0.0.1:8080]\n"                                                                                \
    "upstreams:\n"                                                                                              \
    "  idp: {targets: [127.0.0.1:9000]}\n"                                                                      \
    "plugins:\n"                                                                                                \
    "  - oauth2_introspection:\n"                                                                               \
    "      upstream: idp\n"

static pt_config *load(const char *block, pt_errors *e)
{
    char text[4096];
    snprintf(text, sizeof(text), "%s%s", HEAD, block);
    return pt_config_load_string("t.yaml", text, strlen(text), e);
}

static bool refused(const char *block, const char *needle)
{
    pt_errors e = {0};
    pt_config *cfg = load(block, &e);
    bool found = false;
    for (size_t i = 0; i < e.n; i++)
        if (strstr(e.msgs[i], needle)) found = true;
    if (cfg || !found) {
        fprintf(stderr, "  block not refused with \"%s\" (%zu errors):\n", needle, e.n);
        for (size_t i = 0; i < e.n; i++) fprintf(stderr, "    %s\n", e.msgs[i]);
    }
    pt_config_free(cfg);
    pt_errors_free(&e);
    return cfg == NULL && found;
}

TEST(configure_defaults_and_values)
{
    setenv("OI_TEST_SECRET", "s3cr:t/+%x", 1);
    pt_errors e = {0};
    pt_config *cfg = load("      client_id: portico gw\n"
                          "      client_secret: ${OI_TEST_SECRET}\n",
                          &e);
    CHECK(cfg != NULL);
    const pt_oi_conf *c = cfg ? cfg->plugins.v[0].conf : NULL;
    if (c) {
        CHECK_SLICE(c->path, "/");
        CHECK_SLICE(c->authorization, "Basic cG9ydGljbytndzpzM2NyJTNBdCUyRiUyQiUyNXg=");
        CHECK_INT(c->body_prefix.n, 0);
        CHECK_SLICE(c->challenge, "Bearer realm=\"portico\"");
        CHECK(c->cache && c->ttl_ms == 60000 && c->negative_ttl_ms == 10000);
        CHECK_INT(c->max_entries, 10000);
        CHECK_INT(c->negative_max_entries, 2500);
        CHECK_INT(c->stale_ms, 0);
        CHECK(!c->forward_token);
        CHECK_INT(c->nconsumer_claims, 3);
        CHECK_INT(c->lookup, PT_OI_LOOKUP_PREFER);
        CHECK_INT(c->max_in_flight, PT_OI_DEFAULT_MAX_IN_FLIGHT);
    }
    pt_config_free(cfg);
    pt_errors_free(&e);

    cfg = load("      path: /oauth2/introspect\n"
               "      client_id: gw\n"
               "      client_secret: ${OI_TEST_SECRET}\n"
               "      client_auth: post\n"
               "      realm: api\n"
               "      consumer: {claims: [client_id], lookup: require}\n"
               "      audiences: orders\n"
               "      forward_token: true\n"
               "      cache: {ttl: 5m, max_entries: 8, negative_ttl: 0, negative_max_entries: 3}\n"
               "      stale_if_error: 1h\n"
               "      max_in_flight: 7\n",
               &e);
    CHECK(cfg != NULL);
    c = cfg ? cfg->plugins.v[0].conf : NULL;
    if (c) {
        CHECK_SLICE(c->path, "/oauth2/introspect");
        CHECK_INT(c->authorization.n, 0);
        CHECK_SLICE(c->body_prefix, "client_id=gw&client_secret=s3cr%3At%2F%2B%25x&");
        CHECK_SLICE(c->challenge, "Bearer realm=\"api\"");
        CHECK_INT(c->lookup, PT_OI_LOOKUP_REQUIRE);
        CHECK(c->naudiences == 1 && strcmp(c->audiences[0], "orders") == 0);
        CHECK(c->forward_token && c->ttl_ms == 300000 && c->negative_ttl_ms == 0 && c->stale_ms == 3600000);
        CHECK(c->max_entries == 8 && c->negative_max_entries == 3);
        CHECK_INT(c->max_in_flight, 7);
    }
    pt_config_free(cfg);
    pt_errors_free(&e);

    cfg = load("      client_id: gw\n      client_secret: ${OI_TEST_SECRET}\n      cache: off\n", &e);
    CHECK(cfg && !((const pt_oi_conf *)cfg->plugins.v[0].conf)->cache);
    pt_config_free(cfg);
    pt_errors_free(&e);
}

TEST(configure_errors)
{
    setenv("OI_TEST_SECRET", "x", 1);
    CHECK(refused("      client_id: gw\n      client_secret: literal\n", "client_secret"));
    CHECK(refused("      client_id: gw\n      client_secret: pre${OI_TEST_SECRET}\n", "client_secret"));
    CHECK(refused("      client_secret: ${OI_TEST_SECRET}\n", "client_id"));
    CHECK(refused("      client_id: gw\n      client_secret: ${OI_TEST_SECRET}\n      client_auth: jwt\n",
                  "client_auth"));
    CHECK(refused("      client_id: gw\n      client_secret: ${OI_TEST_SECRET}\n      cache: off\n"
                  "      stale_if_error: 5s\n",
                  "needs the cache"));
    CHECK(refused("      client_id: gw\n      client_secret: ${OI_TEST_SECRET}\n      path: nope\n", "path"));
    CHECK(refused("      client_id: gw\n      client_secret: ${OI_TEST_SECRET}\n      realm: 'a\"b'\n", "realm"));
    CHECK(refused("      client_id: gw\n      client_secret: ${OI_TEST_SECRET}\n      timeout: 0s\n", "timeout"));
    CHECK(refused("      client_id: gw\n      client_secret: ${OI_TEST_SECRET}\n      max_response: 2m\n",
                  "max_response"));
    CHECK(refused("      client_id: gw\n      client_secret: ${OI_TEST_SECRET}\n      consumer: {lookup: maybe}\n",
                  "lookup"));
    CHECK(refused("      client_id: gw\n      client_secret: ${OI_TEST_SECRET}\n      audiences: []\n",
                  "audiences"));
    CHECK(refused("      client_id: gw\n      client_secret: ${OI_TEST_SECRET}\n      bogus: 1\n", "bogus"));
    CHECK(refused("      client_id: gw\n      client_secret: ${OI_TEST_SECRET}\n      cache: {ttl: 0s}\n",
                  "cache.ttl"));
    CHECK(refused("      client_id: gw\n      client_secret: ${OI_TEST_SECRET}\n      max_in_flight: 0\n",
                  "max_in_flight"));
    CHECK(refused("      client_id: gw\n      client_secret: ${OI_TEST_SECRET}\n      max_in_flight: 100001\n",
                  "max_in_flight"));
}

TEST_MAIN()
