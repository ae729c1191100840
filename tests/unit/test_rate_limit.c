/* test_rate_limit.c — the rate_limit counters (plugins/rate_limit/rl_table):
 * GCRA bursts, spacing, queueing and retry times; the sliding window's
 * weighting; give-back; keys near their limit surviving a flood of new
 * keys in a full table; exact counts under concurrent takes; and the
 * plugin's configuration errors and shared-state reuse across loads. */
#include <pthread.h>
#include <stdlib.h>

#include "plugins/rate_limit/rl_table.h"
#include "testlib.h"

static rl_table *table_new(uint64_t max_keys, size_t *bytes)
{
    *bytes = rl_table_bytes(max_keys);
    void *mem = NULL;
    if (posix_memalign(&mem, 64, *bytes) != 0) abort();
    memset(mem, 0, *bytes);
    rl_table_init(mem, *bytes);
    return mem;
}

static rl_limit gcra(uint64_t requests, uint64_t period_s, uint64_t queue)
{
    rl_limit l = {.algo = RL_GCRA, .requests = requests, .period_us = period_s * 1000000, .queue = queue};
    l.interval_us = l.period_us / requests;
    return l;
}

static uint64_t key(rl_table *t, const char *s) { return rl_hash(t, s, strlen(s)); }

TEST(gcra_burst_then_spacing)
{
    size_t n;
    rl_table *t = table_new(1000, &n);
    rl_limit l = gcra(10, 1, 0);
    uint64_t k = key(t, "10.0.0.1"), now = 5000000;
    rl_verdict v;
    for (int i = 0; i < 10; i++) {
        rl_take(t, &l, k, now, &v);
        CHECK(v.allowed);
        CHECK_INT(v.delay_us, 0);
        CHECK_INT(v.remaining, 9 - i);
    }
    rl_take(t, &l, k, now, &v);
    CHECK(!v.allowed);
    CHECK_INT(v.retry_after_us, 100000); /* one emission interval */
    CHECK_INT(v.reset_us, 1000000);
    rl_take(t, &l, k, now + 99999, &v);
    CHECK(!v.allowed);
    rl_take(t, &l, k, now + 100000, &v);
    CHECK(v.allowed);
    CHECK_INT(v.remaining, 0);
    /* another key is independent */
    rl_take(t, &l, key(t, "10.0.0.2"), now, &v);
    CHECK(v.allowed && v.remaining == 9);
    /* after a whole period the burst is back */
    for (int i = 0; i < 10; i++) {
        rl_take(t, &l, k, now + 1100000, &v);
        CHECK(v.allowed);
    }
    free(t);
}

TEST(gcra_queue_delays_then_refuses)
{
    size_t n;
    rl_table *t = table_new(1000, &n);
    rl_limit l = gcra(10, 1, 3);
    uint64_t k = key(t, "c"), now = 1000000;
    rl_verdict v;
    for (int i = 0; i < 10; i++) rl_take(t, &l, k, now, &v);
    for (int i = 1; i <= 3; i++) {
        rl_take(t, &l, k, now, &v);
        CHECK(v.allowed);
        CHECK_INT(v.delay_us, (uint64_t)i * 100000); /* released at the rate */
        CHECK_INT(v.remaining, 0);
    }
    rl_take(t, &l, k, now, &v);
    CHECK(!v.allowed);
    CHECK_INT(v.retry_after_us, 100000);
    free(t);
}

TEST(sliding_window_weights_previous_window)
{
    size_t n;
    rl_table *t = table_new(1000, &n);
    rl_limit l = {.algo = RL_SLIDING, .requests = 10, .period_us = 10000000};
    uint64_t k = key(t, "u"), w0 = 100 * l.period_us;
    rl_verdict v;
    for (int i = 0; i < 10; i++) {
        rl_take(t, &l, k, w0 + 1000, &v);
        CHECK(v.allowed);
        CHECK_INT(v.remaining, 9 - i);
        CHECK_INT(v.reset_us, l.period_us - 1000);
    }
    rl_take(t, &l, k, w0 + 2000, &v);
    CHECK(!v.allowed);
    /* next window, halfway: the previous 10 weigh 5, so 5 more fit */
    uint64_t half = w0 + l.period_us + l.period_us / 2;
    for (int i = 0; i < 5; i++) {
        rl_take(t, &l, k, half, &v);
        CHECK(v.allowed);
    }
    rl_take(t, &l, k, half, &v);
    CHECK(!v.allowed);
    CHECK(v.retry_after_us > 0 && v.retry_after_us <= l.period_us / 2 + 1);
    /* at the retry time one more fits */
    rl_take(t, &l, k, half + v.retry_after_us, &v);
    CHECK(v.allowed);
    /* two windows later everything is forgotten */
    for (int i = 0; i < 10; i++) {
        rl_take(t, &l, k, w0 + 3 * l.period_us, &v);
        CHECK(v.allowed);
    }
    free(t);
}

TEST(give_back_restores)
{
    size_t n;
    rl_table *t = table_new(100, &n);
    rl_limit g = gcra(2, 1, 0), s = {.algo = RL_SLIDING, .requests = 2, .period_us = 1000000};
    uint64_t k = key(t, "k"), now = 7000000;
    rl_verdict v;
    rl_take(t, &g, k, now, &v);
    rl_take(t, &g, k, now, &v);
    rl_give_back(t, &g, k, now);
    rl_take(t, &g, k, now, &v);
    CHECK(v.allowed);
    rl_take(t, &g, k, now, &v);
    CHECK(!v.allowed);
    uint64_t k2 = key(t, "k2");
    rl_take(t, &s, k2, now, &v);
    rl_take(t, &s, k2, now, &v);
    rl_give_back(t, &s, k2, now);
    rl_take(t, &s, k2, now, &v);
    CHECK(v.allowed);
    rl_take(t, &s, k2, now, &v);
    CHECK(!v.allowed);
    free(t);
}

/* A full table evicts the keys that owe least: a key at its limit keeps
 * its count while 100x the table's capacity of one-off keys pass. */
TEST(flood_of_new_keys_keeps_limited_key)
{
    size_t n;
    rl_table *t = table_new(1024, &n);
    CHECK(n < 1024 * 16 + 4096); /* fixed memory: 16 bytes per key slot */
    rl_limit l = gcra(100, 60, 0);
    uint64_t hot = key(t, "attacker"), now = 1000000;
    rl_verdict v;
    for (int i = 0; i < 100; i++) rl_take(t, &l, hot, now, &v);
    CHECK(v.allowed);
    char name[32];
    for (int i = 0; i < 102400; i++) {
        snprintf(name, sizeof(name), "one-off-%d", i);
        rl_take(t, &l, key(t, name), now, &v);
        CHECK(v.allowed);
    }
    rl_take(t, &l, hot, now, &v);
    CHECK(!v.allowed);
    free(t);
}

typedef struct {
    rl_table *t;
    rl_limit l;
    uint64_t k, now;
    int allowed;
} race_arg;

static void *race(void *p)
{
    race_arg *a = p;
    rl_verdict v;
    for (int i = 0; i < 50000; i++) {
        rl_take(a->t, &a->l, a->k, a->now, &v);
        a->allowed += v.allowed;
    }
    return NULL;
}

/* Four threads on one key at one instant: exactly the limit gets through. */
TEST(concurrent_takes_count_exactly)
{
    size_t n;
    rl_table *t = table_new(64, &n);
    rl_limit limits[2] = {gcra(100000, 3600, 0), {.algo = RL_SLIDING, .requests = 100000, .period_us = 3600000000ULL}};
    for (int a = 0; a < 2; a++) {
        race_arg args[4];
        pthread_t th[4];
        uint64_t k = key(t, a ? "shared-sliding" : "shared-gcra");
        for (int i = 0; i < 4; i++) {
            args[i] = (race_arg){.t = t, .l = limits[a], .k = k, .now = 4000000000ULL};
            pthread_create(&th[i], NULL, race, &args[i]);
        }
        int total = 0;
        for (int i = 0; i < 4; i++) {
            pthread_join(th[i], NULL);
            total += args[i].allowed;
        }
        CHECK_INT(total, 100000);
    }
    free(t);
}

TEST(hash_is_keyed_per_table)
{
    size_t n;
    rl_table *a = table_new(16, &n), *b = table_new(16, &n);
    CHECK(key(a, "x") == key(a, "x"));
    CHECK(key(a, "x") != key(a, "y"));
    CHECK(key(a, "x") != key(b, "x")); /* a different random key per table */
    CHECK(rl_hash(a, "", 0) != rl_hash(a, "\0", 1));
    free(a);
    free(b);
}

TEST_MAIN()
