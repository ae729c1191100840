/* test_digest_cache.c — the plugin API's digest cache: expiry, LRU order,
 * bounds per class, overwrite, per-cache salt, blobs intact, the store. */
#include "plugin/plugin.h"
#include "testlib.h"

#include <stdalign.h>

static void kfill(uint8_t k[PT_DIGEST_LEN], int v)
{
    memset(k, 0, PT_DIGEST_LEN);
    memcpy(k, &v, sizeof(v));
    k[PT_DIGEST_LEN - 1] = (uint8_t)v;
}

TEST(expiry)
{
    pt_digest_cache *c = pt_digest_cache_new(10, 10);
    uint8_t k1[PT_DIGEST_LEN], k2[PT_DIGEST_LEN];
    kfill(k1, 1), kfill(k2, 2);
    CHECK(pt_digest_cache_put(c, k1, PT_DIGEST_POSITIVE, 1100, "abc", 3, 100) != NULL);
    CHECK(pt_digest_cache_get(c, k2, 200, NULL, NULL) == NULL);
    size_t len = 0;
    pt_digest_class cls = PT_DIGEST_NEGATIVE;
    const char *b = pt_digest_cache_get(c, k1, 1099, &len, &cls);
    CHECK(b && len == 3 && memcmp(b, "abc", 3) == 0 && cls == PT_DIGEST_POSITIVE);
    CHECK(pt_digest_cache_get(c, k1, 1100, NULL, NULL) == NULL); /* expired: never served, and dropped */
    CHECK_INT(pt_digest_cache_count(c, PT_DIGEST_POSITIVE), 0);
    CHECK(pt_digest_cache_put(c, k2, PT_DIGEST_POSITIVE, 50, NULL, 0, 100) == NULL); /* already expired */
    CHECK_INT(pt_digest_cache_count(c, PT_DIGEST_POSITIVE), 0);
    CHECK_INT(pt_digest_cache_latest(c), 1100);
    pt_digest_cache_free(c);
}

TEST(overwrite_and_remove)
{
    pt_digest_cache *c = pt_digest_cache_new(10, 10);
    uint8_t k[PT_DIGEST_LEN];
    kfill(k, 7);
    pt_digest_cache_put(c, k, PT_DIGEST_POSITIVE, 500, "first", 5, 0);
    pt_digest_cache_put(c, k, PT_DIGEST_NEGATIVE, 900, "x", 1, 0);
    CHECK_INT(pt_digest_cache_count(c, PT_DIGEST_POSITIVE), 0);
    CHECK_INT(pt_digest_cache_count(c, PT_DIGEST_NEGATIVE), 1);
    size_t len = 0;
    pt_digest_class cls = PT_DIGEST_POSITIVE;
    const char *b = pt_digest_cache_get(c, k, 600, &len, &cls); /* the new expiry applies */
    CHECK(b && len == 1 && b[0] == 'x' && cls == PT_DIGEST_NEGATIVE);
    pt_digest_cache_remove(c, k);
    CHECK(pt_digest_cache_get(c, k, 600, NULL, NULL) == NULL);
    CHECK_INT(pt_digest_cache_count(c, PT_DIGEST_NEGATIVE), 0);
    pt_digest_cache_free(c);
}

TEST(lru_order_and_bounds)
{
    pt_digest_cache *c = pt_digest_cache_new(3, 1);
    uint8_t k[8][PT_DIGEST_LEN];
    for (int i = 0; i < 8; i++) kfill(k[i], i + 1);
    for (int i = 0; i < 3; i++) pt_digest_cache_put(c, k[i], PT_DIGEST_POSITIVE, 10000, NULL, 0, (uint64_t)i);
    CHECK(pt_digest_cache_get(c, k[0], 10, NULL, NULL) != NULL); /* 0 most recent: 1 is the oldest */
    pt_digest_cache_put(c, k[3], PT_DIGEST_POSITIVE, 10000, NULL, 0, 11);
    CHECK_INT(pt_digest_cache_count(c, PT_DIGEST_POSITIVE), 3);
    CHECK(pt_digest_cache_get(c, k[1], 12, NULL, NULL) == NULL);
    CHECK(pt_digest_cache_get(c, k[0], 12, NULL, NULL) != NULL);
    CHECK(pt_digest_cache_get(c, k[2], 12, NULL, NULL) != NULL);
    CHECK(pt_digest_cache_get(c, k[3], 12, NULL, NULL) != NULL);
    /* negative entries have their own bound: they never evict positive ones */
    pt_digest_cache_put(c, k[4], PT_DIGEST_NEGATIVE, 10000, NULL, 0, 13);
    pt_digest_cache_put(c, k[5], PT_DIGEST_NEGATIVE, 10000, NULL, 0, 14);
    CHECK_INT(pt_digest_cache_count(c, PT_DIGEST_NEGATIVE), 1);
    CHECK_INT(pt_digest_cache_count(c, PT_DIGEST_POSITIVE), 3);
    CHECK(pt_digest_cache_get(c, k[4], 15, NULL, NULL) == NULL);
    CHECK(pt_digest_cache_get(c, k[5], 15, NULL, NULL) != NULL);
    /* expired entries at the cold end go before live ones */
    pt_digest_cache_free(c);
    c = pt_digest_cache_new(3, 1);
    pt_digest_cache_put(c, k[0], PT_DIGEST_POSITIVE, 100, NULL, 0, 0);   /* dies at 100 */
    pt_digest_cache_put(c, k[1], PT_DIGEST_POSITIVE, 10000, NULL, 0, 0);
    pt_digest_cache_put(c, k[2], PT_DIGEST_POSITIVE, 10000, NULL, 0, 0);
    CHECK(pt_digest_cache_get(c, k[1], 1, NULL, NULL) != NULL); /* k[2] is now the LRU live one */
    pt_digest_cache_put(c, k[3], PT_DIGEST_POSITIVE, 10000, NULL, 0, 200);
    CHECK(pt_digest_cache_get(c, k[2], 201, NULL, NULL) != NULL);
    CHECK_INT(pt_digest_cache_count(c, PT_DIGEST_POSITIVE), 3);
    /* a lowered bound applies at the next put */
    pt_digest_cache_set_max(c, PT_DIGEST_POSITIVE, 1);
    pt_digest_cache_put(c, k[6], PT_DIGEST_POSITIVE, 10000, NULL, 0, 300);
    CHECK_INT(pt_digest_cache_count(c, PT_DIGEST_POSITIVE), 1);
    CHECK(pt_digest_cache_get(c, k[6], 301, NULL, NULL) != NULL);
    pt_digest_cache_free(c);
}

TEST(many_entries)
{
    pt_digest_cache *c = pt_digest_cache_new(1000, 1);
    uint8_t k[PT_DIGEST_LEN];
    for (int i = 0; i < 3000; i++) {
        kfill(k, i);
        pt_digest_cache_put(c, k, PT_DIGEST_POSITIVE, 10000, &i, sizeof(i), 0);
    }
    CHECK_INT(pt_digest_cache_count(c, PT_DIGEST_POSITIVE), 1000);
    int hits = 0;
    for (int i = 0; i < 3000; i++) {
        kfill(k, i);
        const int *v = pt_digest_cache_get(c, k, 1, NULL, NULL);
        if (v) {
            CHECK(*v == i && i >= 2000);
            hits++;
        }
    }
    CHECK_INT(hits, 1000);
    pt_digest_cache_free(c);
}

TEST(salt_and_key)
{
    pt_digest_cache *a = pt_digest_cache_new(1, 1), *b = pt_digest_cache_new(1, 1);
    CHECK(memcmp(pt_digest_cache_salt(a), pt_digest_cache_salt(b), PT_DIGEST_SALT_LEN) != 0);
    const pt_str p1[] = {PT_STR_LIT("alice"), PT_STR_LIT(":"), PT_STR_LIT("pw")};
    const pt_str p2[] = {PT_STR_LIT("alice:"), PT_STR_LIT("pw")};
    const pt_str p3[] = {PT_STR_LIT("alice"), PT_STR_LIT(":"), PT_STR_LIT("pX")};
    uint8_t ka[PT_DIGEST_LEN], ka2[PT_DIGEST_LEN], ka3[PT_DIGEST_LEN], kb[PT_DIGEST_LEN];
    pt_digest_cache_key(a, p1, 3, ka);
    pt_digest_cache_key(a, p2, 2, ka2); /* parts are concatenated */
    pt_digest_cache_key(a, p3, 3, ka3);
    pt_digest_cache_key(b, p1, 3, kb);
    CHECK(memcmp(ka, ka2, PT_DIGEST_LEN) == 0);
    CHECK(memcmp(ka, ka3, PT_DIGEST_LEN) != 0);
    CHECK(memcmp(ka, kb, PT_DIGEST_LEN) != 0); /* another cache, another salt */
    pt_digest_cache_free(a);
    pt_digest_cache_free(b);
}

/* A blob filled in place with pointers into itself survives other puts. */
TEST(blob_intact)
{
    pt_digest_cache *c = pt_digest_cache_new(100, 1);
    uint8_t k[PT_DIGEST_LEN];
    kfill(k, 42);
    typedef struct { const char *s; size_t n; } hdr;
    hdr *h = pt_digest_cache_put(c, k, PT_DIGEST_POSITIVE, 1000, NULL, sizeof(hdr) + 6, 0);
    CHECK(h && ((uintptr_t)h % alignof(max_align_t)) == 0);
    char *p = (char *)(h + 1);
    memcpy(p, "hello", 6);
    *h = (hdr){p, 5};
    for (int i = 0; i < 50; i++) {
        uint8_t o[PT_DIGEST_LEN];
        kfill(o, 1000 + i);
        pt_digest_cache_put(c, o, PT_DIGEST_POSITIVE, 1000, "zzzzzzzz", 8, 0);
    }
    size_t len = 0;
    const hdr *g = pt_digest_cache_get(c, k, 1, &len, NULL);
    CHECK(g && len == sizeof(hdr) + 6 && g->n == 5 && memcmp(g->s, "hello", 6) == 0);
    pt_digest_cache_free(c);
}

TEST(store)
{
    pt_digest_store *s = pt_digest_store_new();
    uint8_t fa[PT_DIGEST_LEN], fb[PT_DIGEST_LEN], k[PT_DIGEST_LEN];
    kfill(fa, 1), kfill(fb, 2), kfill(k, 3);
    pt_digest_cache *a = pt_digest_store_cache(s, fa, 10, 10, 0);
    CHECK(pt_digest_store_cache(s, fa, 10, 10, 5) == a);
    pt_digest_cache_put(a, k, PT_DIGEST_POSITIVE, 100000, NULL, 0, 5);
    pt_digest_cache *b = pt_digest_store_cache(s, fb, 10, 10, 10);
    CHECK(b != a && pt_digest_store_count(s) == 2);
    CHECK(memcmp(pt_digest_cache_salt(a), pt_digest_cache_salt(b), PT_DIGEST_SALT_LEN) != 0);
    CHECK(pt_digest_cache_get(b, k, 10, NULL, NULL) == NULL);
    /* a idle with something alive: kept */
    pt_digest_store_cache(s, fb, 10, 10, 5 + PT_DIGEST_NS_IDLE_MS);
    CHECK_INT(pt_digest_store_count(s), 2);
    /* a idle with nothing alive: freed when another is looked up */
    pt_digest_store_cache(s, fb, 10, 10, 100000);
    CHECK_INT(pt_digest_store_count(s), 1);
    pt_digest_store_free(s);
}

/* Keys differing only after the hashed bytes share a bucket: chains work. */
TEST(same_bucket_chains)
{
    pt_digest_cache *c = pt_digest_cache_new(1000, 1);
    uint8_t k[PT_DIGEST_LEN];
    for (int i = 0; i < 1000; i++) {
        memset(k, 0, sizeof(k));
        k[20] = (uint8_t)i;
        k[21] = (uint8_t)(i >> 8);
        pt_digest_cache_put(c, k, PT_DIGEST_POSITIVE, 1000, NULL, 0, 0);
    }
    CHECK_INT(pt_digest_cache_count(c, PT_DIGEST_POSITIVE), 1000);
    int found = 0;
    for (int i = 0; i < 1000; i++) {
        memset(k, 0, sizeof(k));
        k[20] = (uint8_t)i;
        k[21] = (uint8_t)(i >> 8);
        if (pt_digest_cache_get(c, k, 1, NULL, NULL)) found++;
    }
    CHECK_INT(found, 1000);
    memset(k, 0, sizeof(k));
    k[22] = 1;
    pt_digest_cache_put(c, k, PT_DIGEST_POSITIVE, 1000, NULL, 0, 2); /* evicts one */
    CHECK_INT(pt_digest_cache_count(c, PT_DIGEST_POSITIVE), 1000);
    pt_digest_cache_free(c);
}

/* The layout helpers: header lists and strings copied into a blob. */
TEST(blob_helpers)
{
    pt_digest_cache *c = pt_digest_cache_new(10, 1);
    uint8_t k[PT_DIGEST_LEN];
    kfill(k, 5);
    char name[] = "X-User-Id", value[] = "42";
    pt_header hs[2] = {{pt_str_c(name), pt_str_c(value)}, {PT_STR_LIT("X-Groups"), PT_STR_LIT("")}};
    pt_str ss[3] = {PT_STR_LIT("a"), PT_STR_LIT(""), PT_STR_LIT("ccc")};
    typedef struct { pt_str who; pt_header *h; pt_str *s; } blob;
    size_t len = sizeof(blob) + pt_digest_blob_str_size(PT_STR_LIT("alice")) + pt_digest_blob_headers_size(hs, 2) +
                 pt_digest_blob_strs_size(ss, 3);
    blob *b = pt_digest_cache_put(c, k, PT_DIGEST_POSITIVE, 100, NULL, len, 0);
    char *p = (char *)(b + 1);
    b->who = pt_digest_blob_str(&p, PT_STR_LIT("alice"));
    b->h = pt_digest_blob_headers(&p, hs, 2);
    b->s = pt_digest_blob_strs(&p, ss, 3);
    CHECK(p <= (char *)b + len);
    memset(value, 'x', 2); /* the entry holds its own copy */
    const blob *g = pt_digest_cache_get(c, k, 1, NULL, NULL);
    CHECK(g && pt_str_eq_lit(g->who, "alice") && g->who.p[5] == '\0');
    CHECK(g && pt_str_eq_lit(g->h[0].name, "X-User-Id") && pt_str_eq_lit(g->h[0].value, "42"));
    CHECK(g && pt_str_eq_lit(g->h[1].name, "X-Groups") && g->h[1].value.n == 0);
    CHECK(g && pt_str_eq_lit(g->s[0], "a") && g->s[1].n == 0 && pt_str_eq_lit(g->s[2], "ccc"));
    CHECK(g && ((uintptr_t)g->h % alignof(pt_header)) == 0 && ((uintptr_t)g->s % alignof(pt_str)) == 0);
    pt_digest_cache_free(c);
}

TEST(store_namespaces)
{
    pt_digest_store *s = pt_digest_store_new();
    uint8_t fa[PT_DIGEST_LEN] = {1}, fb[PT_DIGEST_LEN] = {2}, key[PT_DIGEST_LEN] = {9};
    pt_digest_cache *a = pt_digest_store_cache(s, fa, 10, 1, 0);
    pt_digest_cache_put(a, key, PT_DIGEST_POSITIVE, 1000, NULL, 0, 0);
    pt_digest_cache *b = pt_digest_store_cache(s, fb, 10, 1, 1);
    CHECK(a != b);
    CHECK(pt_digest_cache_get(b, key, 2, NULL, NULL) == NULL); /* caches never share entries */
    CHECK(pt_digest_store_cache(s, fa, 10, 1, 3) == a);
    CHECK(pt_digest_cache_get(a, key, 3, NULL, NULL) != NULL);
    CHECK_INT(pt_digest_store_count(s), 2);
    /* b holds nothing but was used recently: kept */
    pt_digest_store_cache(s, fa, 10, 1, 4);
    CHECK_INT(pt_digest_store_count(s), 2);
    /* b idle for PT_DIGEST_NS_IDLE_MS with nothing live: freed when a is looked up */
    pt_digest_store_cache(s, fa, 10, 1, 1 + PT_DIGEST_NS_IDLE_MS);
    CHECK_INT(pt_digest_store_count(s), 1);
    /* a's entries expired long ago and a is idle: freed when another is looked up */
    uint64_t t = 2 * PT_DIGEST_NS_IDLE_MS + 10;
    b = pt_digest_store_cache(s, fb, 10, 1, t);
    CHECK_INT(pt_digest_store_count(s), 1);
    pt_digest_cache_put(b, key, PT_DIGEST_POSITIVE, t + 10 * PT_DIGEST_NS_IDLE_MS, NULL, 0, t);
    /* a cache with live entries is kept however idle */
    pt_digest_store_cache(s, fa, 10, 1, t + 1);
    pt_digest_store_cache(s, fa, 10, 1, t + 2 + PT_DIGEST_NS_IDLE_MS);
    CHECK_INT(pt_digest_store_count(s), 2);
    CHECK(pt_digest_cache_get(pt_digest_store_cache(s, fb, 10, 1, t + 3), key, t + 3, NULL, NULL) != NULL);
    pt_digest_store_free(s);
}

TEST_MAIN()
