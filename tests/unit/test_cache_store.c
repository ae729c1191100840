/* test_cache_store.c — the cache plugin's store: get/put/replace, LRU
 * eviction across shards, the byte bound with a million distinct keys,
 * max object size, purge by key/prefix/tag, request collapsing. */
#include "plugins/cache/cache_store.h"
#include "testlib.h"

#include <pthread.h>

static pt_cache_store *store_new(uint64_t max_size, uint64_t max_object)
{
    pt_cache_store *s = calloc(1, sizeof(*s));
    pt_cache_store_init(s, max_size, max_object);
    return s;
}

static void store_free(pt_cache_store *s)
{
    pt_cache_store_fini(s);
    free(s);
}

/* Puts `key` with body `body` and tags `tags`; false when refused. */
static bool put(pt_cache_store *s, const char *key, const char *body, const char *tags, uint64_t now)
{
    size_t bl = strlen(body), tl = strlen(tags);
    pt_cache_entry *e = pt_cache_entry_new(s, pt_str_c(key), 0, bl, tl);
    if (!e) return false;
    memcpy(e->body, body, bl);
    memcpy(e->tags, tags, tl);
    pt_cache_store_put(s, e, now);
    pt_cache_entry_release(e);
    return true;
}

static bool has(pt_cache_store *s, const char *key)
{
    pt_cache_entry *e = pt_cache_store_get(s, pt_str_c(key), 0);
    pt_cache_entry_release(e);
    return e != NULL;
}

TEST(get_put_replace)
{
    pt_cache_store *s = store_new(1 << 20, 1 << 16);
    CHECK(put(s, "h/a", "one", "", 1));
    pt_cache_entry *e = pt_cache_store_get(s, pt_str_c("h/a"), 2);
    CHECK(e && e->bodylen == 3 && memcmp(e->body, "one", 3) == 0);
    CHECK(put(s, "h/a", "two!", "", 3)); /* replaced; the old entry lives on for its reader */
    CHECK_INT(atomic_load(&s->entries), 1);
    CHECK(e && memcmp(e->body, "one", 3) == 0);
    pt_cache_entry_release(e);
    e = pt_cache_store_get(s, pt_str_c("h/a"), 4);
    CHECK(e && e->bodylen == 4);
    pt_cache_entry_release(e);
    CHECK(!has(s, "h/b"));
    store_free(s);
}

TEST(max_object_refused)
{
    pt_cache_store *s = store_new(1 << 20, 1024);
    char big[2000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    CHECK(!put(s, "h/big", big, "", 1));
    CHECK(put(s, "h/small", "x", "", 1));
    store_free(s);
}

TEST(lru_evicts_coldest)
{
    /* room for about 8 entries of ~300 bytes plus tables */
    pt_cache_store *s = store_new(64 * 16 * 8 + 8 * 400, 4096);
    char body[200];
    memset(body, 'b', sizeof(body) - 1);
    body[sizeof(body) - 1] = '\0';
    char key[32];
    for (int i = 0; i < 40; i++) {
        snprintf(key, sizeof(key), "h/%d", i);
        put(s, key, body, "", (uint64_t)i + 1);
        if (i >= 1) CHECK(has(s, "h/0") || i > 30); /* touched below keeps it warm */
        pt_cache_entry_release(pt_cache_store_get(s, pt_str_c("h/0"), (uint64_t)i + 1));
    }
    CHECK(has(s, "h/0"));  /* used at every step */
    CHECK(has(s, "h/39")); /* the newest */
    CHECK(!has(s, "h/1")); /* cold */
    CHECK(atomic_load(&s->evictions) > 0);
    CHECK(atomic_load(&s->bytes) <= s->max_size);
    store_free(s);
}

TEST(million_keys_stay_under_max_size)
{
    const uint64_t max = 8u << 20;
    pt_cache_store *s = store_new(max, 1 << 16);
    char key[64];
    uint64_t peak = 0;
    for (int i = 0; i < 1000000; i++) {
        int n = snprintf(key, sizeof(key), "example.com/items/%d?x=%d", i, i * 7);
        pt_cache_entry *e = pt_cache_entry_new(s, pt_str_make(key, (size_t)n), 24, 32, 0);
        CHECK(e != NULL);
        if (!e) break;
        memset(e->head, 'h', 24);
        memset(e->body, 'b', 32);
        pt_cache_store_put(s, e, (uint64_t)i);
        pt_cache_entry_release(e);
        uint64_t b = atomic_load(&s->bytes);
        if (b > peak) peak = b;
    }
    CHECK(peak <= max);
    /* the accounting is what the store holds: recount it from the entries and tables */
    uint64_t recount = 0, count = 0;
    for (int i = 0; i < PT_CACHE_SHARDS; i++) {
        pt_cache_shard *sh = &s->shards[i];
        if (sh->tsize) recount += sh->tsize * sizeof(void *) + PT_CACHE_MALLOC_OVERHEAD;
        for (pt_cache_entry *e = sh->lru_head; e; e = e->next) {
            recount += sizeof(*e) + e->keylen + 1 + e->headlen + e->bodylen + e->tagslen + PT_CACHE_MALLOC_OVERHEAD;
            count++;
        }
    }
    CHECK_INT(recount, atomic_load(&s->bytes));
    CHECK_INT(count, atomic_load(&s->entries));
    CHECK(count > 10000);                   /* the budget is used, not wasted */
    CHECK(has(s, "example.com/items/999999?x=6999993"));
    CHECK(!has(s, "example.com/items/0?x=0"));
    CHECK_INT(atomic_load(&s->evictions) + count, 1000000);
    store_free(s);
}

TEST(purge_key_prefix_tag)
{
    pt_cache_store *s = store_new(1 << 20, 1 << 16);
    put(s, "h/a", "1", "", 1);
    put(s, "h/a\naccept-language=fr", "2", "", 1); /* a Vary variant of h/a */
    put(s, "h/ab", "3", "", 1);
    put(s, "h/p/1", "4", "t1, prod-7", 1);
    put(s, "h/p/2", "5", "prod-7 other", 1);
    put(s, "h/q/3", "6", "prod-77", 1);
    /* an empty argument (the admin endpoint refuses it; the fuzzer found the
     * memcmp with NULL): no key is "", a tag is never empty */
    CHECK_INT(pt_cache_store_purge(s, PT_CACHE_PURGE_KEY, PT_STR_NULL), 0);
    CHECK_INT(pt_cache_store_purge(s, PT_CACHE_PURGE_TAG, PT_STR_NULL), 0);
    CHECK_INT(pt_cache_store_purge(s, PT_CACHE_PURGE_KEY, pt_str_c("h/a")), 2);
    CHECK(has(s, "h/ab"));
    CHECK_INT(pt_cache_store_purge(s, PT_CACHE_PURGE_TAG, pt_str_c("prod-7")), 2);
    CHECK(has(s, "h/q/3"));
    CHECK_INT(pt_cache_store_purge(s, PT_CACHE_PURGE_PREFIX, pt_str_c("h/")), 2);
    CHECK_INT(atomic_load(&s->entries), 0);
    store_free(s);
}

static int woken;
static void wake(pt_cache_waiter *w) { woken++; }

TEST(collapsing)
{
    pt_cache_store *s = store_new(1 << 20, 1 << 16);
    pt_cache_waiter w1 = {.wake = wake}, w2 = {.wake = wake}, w3 = {.wake = wake};
    CHECK(pt_cache_fill_join(s, pt_str_c("k"), NULL, NULL)); /* the first fetches */
    CHECK(!pt_cache_fill_join(s, pt_str_c("k"), &w1, NULL));
    CHECK(!pt_cache_fill_join(s, pt_str_c("k"), &w2, NULL));
    CHECK(!pt_cache_fill_join(s, pt_str_c("k"), &w3, NULL));
    CHECK(pt_cache_fill_leave(s, pt_str_c("k"), &w2)); /* timed out */
    CHECK(pt_cache_fill_join(s, pt_str_c("other"), NULL, NULL));
    woken = 0;
    pt_cache_fill_end(s, pt_str_c("k"));
    CHECK_INT(woken, 2);
    CHECK(!pt_cache_fill_leave(s, pt_str_c("k"), &w1)); /* already woken */
    CHECK(pt_cache_fill_join(s, pt_str_c("k"), NULL, NULL));  /* a new fetch may start */
    pt_cache_fill_end(s, pt_str_c("k"));
    store_free(s); /* frees the fill of "other" */
}

TEST(pending_streams_to_readers)
{
    pt_cache_store *s = store_new(1 << 20, 1 << 16);
    pt_cache_waiter w1 = {.wake = wake}, w2 = {.wake = wake}, r1 = {.wake = wake};
    CHECK(pt_cache_fill_join(s, pt_str_c("k"), NULL, NULL));
    CHECK(!pt_cache_fill_join(s, pt_str_c("k"), &w1, NULL));
    pt_cache_pending *p = pt_cache_pending_new(pt_str_c("Content-Type: text/plain\r\n"), 200, 10);
    woken = 0;
    pt_cache_fill_publish(s, pt_str_c("k"), p);
    CHECK_INT(woken, 1); /* the waiter joins again and reads */
    pt_cache_pending *got = NULL;
    CHECK(!pt_cache_fill_join(s, pt_str_c("k"), &w2, &got));
    CHECK(got == p);
    CHECK(!pt_cache_fill_leave(s, pt_str_c("k"), &w2)); /* not registered: it streams */
    CHECK(pt_cache_pending_wait(p, 0, &r1));            /* nothing yet */
    woken = 0;
    pt_cache_pending_append(p, "01234", 5);
    CHECK_INT(woken, 1);
    CHECK(!pt_cache_pending_wait(p, 0, &r1)); /* bytes past 0 are there */
    CHECK(pt_cache_pending_wait(p, 5, &r1));
    CHECK(pt_cache_pending_unwait(p, &r1));
    CHECK(!pt_cache_pending_unwait(p, &r1));
    pt_cache_pending_append(p, "56789abc", 8); /* only the announced 10 bytes are taken */
    CHECK_INT(atomic_load(&p->len), 10);
    CHECK(memcmp(p->body, "0123456789", 10) == 0);
    CHECK(pt_cache_pending_wait(p, 10, &r1));
    woken = 0;
    pt_cache_pending_end(p, true);
    CHECK_INT(woken, 1);
    CHECK_INT(atomic_load(&p->state), PT_PENDING_COMPLETE);
    CHECK(!pt_cache_pending_wait(p, 10, &r1)); /* ended: never waits */
    pt_cache_fill_end(s, pt_str_c("k"));
    pt_cache_pending_release(got);
    pt_cache_pending_release(p);
    /* a short body ends FAILED even when told complete */
    p = pt_cache_pending_new(PT_STR_NULL, 200, 4);
    pt_cache_pending_append(p, "ab", 2);
    pt_cache_pending_end(p, true);
    CHECK_INT(atomic_load(&p->state), PT_PENDING_FAILED);
    pt_cache_pending_release(p);
    store_free(s);
}

/* Four threads put, get, check and purge overlapping keys at once: every
 * entry read must be intact (its body is derived from its key), and the
 * accounting must come back to the tables alone. */
typedef struct {
    pt_cache_store *s;
    int id;
    int bad;
} race_arg;

static void *race_thread(void *p)
{
    race_arg *a = p;
    char key[32], body[300];
    uint64_t x = (uint64_t)a->id * 7919 + 1;
    for (int i = 0; i < 20000; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        int k = (int)((x >> 33) % 500);
        int n = snprintf(key, sizeof(key), "h/%d", k);
        size_t bl = 50 + (size_t)k % 200;
        switch ((x >> 20) % 8) {
        case 0:
        case 1: {
            pt_cache_entry *e = pt_cache_entry_new(a->s, pt_str_make(key, (size_t)n), 0, bl, 3);
            memset(e->body, 'a' + k % 26, bl);
            memcpy(e->tags, k % 2 ? "odd" : "evn", 3);
            pt_cache_store_put(a->s, e, (uint64_t)i);
            pt_cache_entry_release(e);
            break;
        }
        case 7:
            pt_cache_store_purge(a->s, (x >> 40) % 2 ? PT_CACHE_PURGE_TAG : PT_CACHE_PURGE_KEY,
                                 (x >> 40) % 2 ? pt_str_c("odd") : pt_str_make(key, (size_t)n));
            break;
        default: {
            pt_cache_entry *e = pt_cache_store_get(a->s, pt_str_make(key, (size_t)n), (uint64_t)i);
            if (e) {
                memset(body, 'a' + k % 26, bl);
                if (e->bodylen != bl || memcmp(e->body, body, bl) != 0) a->bad++;
                pt_cache_entry_release(e);
            }
        }
        }
    }
    return NULL;
}

TEST(concurrent_put_get_purge)
{
    pt_cache_store *s = store_new(64 * 1024, 4096); /* small: evictions all the time */
    pthread_t t[4];
    race_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (race_arg){s, i, 0};
        pthread_create(&t[i], NULL, race_thread, &a[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CHECK_INT(a[i].bad, 0);
    }
    CHECK(atomic_load(&s->bytes) <= s->max_size);
    CHECK(atomic_load(&s->evictions) > 0);
    pt_cache_store_purge(s, PT_CACHE_PURGE_PREFIX, pt_str_c("h/"));
    CHECK_INT(atomic_load(&s->entries), 0);
    uint64_t tables = 0;
    for (int i = 0; i < PT_CACHE_SHARDS; i++)
        if (s->shards[i].tsize) tables += s->shards[i].tsize * sizeof(void *) + PT_CACHE_MALLOC_OVERHEAD;
    CHECK_INT(atomic_load(&s->bytes), tables);
    store_free(s);
}

TEST_MAIN()
