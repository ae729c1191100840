/* test_balance.c — upstream balancing and health (upstream/balance.h):
 * Maglev movement and spread, least_requests, ewma, outlier ejection,
 * the circuit breaker, the shared registry, and the config keys. */
#include <stdio.h>
#include <stdlib.h>

#include "config/config.h"
#include "testlib.h"
#include "upstream/balance.h"

#define NKEYS 100000

static pt_config *load(const char *yaml, pt_errors *e)
{
    return pt_config_load_string("t.yaml", yaml, strlen(yaml), e);
}

/* ------------------------------------------------------------- Maglev */

#define TABLE 65537

/* Target of every key "user-<k>" under a table built from `n` names. */
static void assign(const char *const *names, const uint32_t *weights, size_t n, int *out)
{
    uint16_t *table = calloc(TABLE, sizeof(*table));
    pt_maglev_build(table, TABLE, names, weights, n);
    for (int k = 0; k < NKEYS; k++) {
        char key[32];
        int len = snprintf(key, sizeof(key), "user-%d", k);
        out[k] = table[pt_lb_hash(key, (size_t)len, 0) % TABLE];
    }
    free(table);
}

static char NAMES[12][32];
static const char *NAMEP[12];
static const uint32_t ONES[12] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};

static void names_init(void)
{
    for (int i = 0; i < 12; i++) {
        snprintf(NAMES[i], sizeof(NAMES[i]), "10.0.0.%d:8080", i + 1);
        NAMEP[i] = NAMES[i];
    }
}

/* Spread over 10 equal targets: each gets 10% of the keys within 5% of
 * that share (Maglev tables are balanced to one slot; the rest is the
 * keys' own variance, about 1% here). */
TEST(maglev_spread_even)
{
    names_init();
    int *a = malloc(NKEYS * sizeof(int));
    assign(NAMEP, ONES, 10, a);
    int count[10] = {0};
    for (int k = 0; k < NKEYS; k++) count[a[k]]++;
    for (int i = 0; i < 10; i++) CHECK(count[i] > 9500 && count[i] < 10500);
    free(a);
}

/* Removing one of 10 targets: the keys that must move are the removed
 * target's (about 10%); Maglev moves at most 1.3 times that, and of the
 * keys on the other targets at most 3% move. */
TEST(maglev_remove_one_moves_little)
{
    names_init();
    int *before = malloc(NKEYS * sizeof(int)), *after = malloc(NKEYS * sizeof(int));
    assign(NAMEP, ONES, 10, before);
    const char *rest[9];
    int map[9];
    for (int i = 0, j = 0; i < 10; i++)
        if (i != 4) {
            rest[j] = NAMEP[i];
            map[j++] = i;
        }
    assign(rest, ONES, 9, after);
    int ideal = 0, moved = 0, others = 0, others_moved = 0;
    int count[9] = {0};
    for (int k = 0; k < NKEYS; k++) {
        int now = map[after[k]];
        count[after[k]]++;
        if (before[k] == 4) ideal++;
        else others++, others_moved += now != before[k];
        moved += now != before[k];
    }
    printf("maglev remove: ideal %d moved %d (%.3fx), others moved %d of %d\n", ideal, moved,
           (double)moved / ideal, others_moved, others);
    CHECK(moved >= ideal);
    CHECK(moved * 10 <= ideal * 13);
    CHECK(others_moved * 100 <= others * 3);
    for (int i = 0; i < 9; i++) CHECK(count[i] > NKEYS / 9 * 95 / 100 && count[i] < NKEYS / 9 * 105 / 100);
    free(before);
    free(after);
}

/* Adding an 11th target: the minimum is the new target's share (1/11);
 * at most 1.3 times that moves, and most moved keys go to the new one. */
TEST(maglev_add_one_moves_little)
{
    names_init();
    int *before = malloc(NKEYS * sizeof(int)), *after = malloc(NKEYS * sizeof(int));
    assign(NAMEP, ONES, 10, before);
    assign(NAMEP, ONES, 11, after);
    int moved = 0, to_new = 0;
    for (int k = 0; k < NKEYS; k++) {
        moved += after[k] != before[k];
        to_new += after[k] == 10;
    }
    int ideal = NKEYS / 11;
    printf("maglev add: ideal %d moved %d (%.3fx), to the new target %d\n", ideal, moved, (double)moved / ideal,
           to_new);
    CHECK(moved * 10 <= ideal * 13);
    CHECK(to_new * 100 >= moved * 75);
    CHECK(to_new > ideal * 95 / 100 && to_new < ideal * 105 / 100);
    free(before);
    free(after);
}

/* The names decide, not the order: listing the targets in another order
 * sends every key to the same target. */
TEST(maglev_order_independent)
{
    names_init();
    int *a = malloc(NKEYS * sizeof(int)), *b = malloc(NKEYS * sizeof(int));
    assign(NAMEP, ONES, 10, a);
    const char *rev[10];
    for (int i = 0; i < 10; i++) rev[i] = NAMEP[9 - i];
    assign(rev, ONES, 10, b);
    int same = 0;
    for (int k = 0; k < NKEYS; k++) same += 9 - b[k] == a[k];
    CHECK(same * 100 >= NKEYS * 97);
    free(a);
    free(b);
}

/* Weights: a target of weight 3 among two of weight 1 gets 3/5 of the keys. */
TEST(maglev_weights)
{
    names_init();
    uint32_t w[3] = {3, 1, 1};
    int *a = malloc(NKEYS * sizeof(int));
    assign(NAMEP, w, 3, a);
    int count[3] = {0};
    for (int k = 0; k < NKEYS; k++) count[a[k]]++;
    CHECK(count[0] > 57000 && count[0] < 63000);
    CHECK(count[1] > 18000 && count[1] < 22000);
    free(a);
}

/* --------------------------------------------- algorithms on a config */

typedef struct {
    pt_config *cfg;
    pt_upstream_rt u;
    pt_lb *lb;
} fixture;

static bool fx_load(fixture *f, const char *yaml)
{
    pt_errors e = {0};
    f->cfg = load(yaml, &e);
    for (size_t i = 0; i < e.n; i++) fprintf(stderr, "%s\n", e.msgs[i]);
    pt_errors_free(&e);
    if (!f->cfg) return false;
    pt_lb_attach(f->cfg);
    pt_upstream_conf *uc = &f->cfg->upstreams[0];
    f->u = (pt_upstream_rt){.conf = uc, .current = calloc(uc->ntargets, sizeof(int64_t))};
    f->lb = uc->lb;
    return true;
}

static void fx_free(fixture *f)
{
    free(f->u.current);
    pt_config_free(f->cfg);
}

#define LISTEN "listen: [\"127.0.0.1:8080\"]\n"
#define THREE_TARGETS LISTEN "upstreams:\n  up:\n    targets: [\"127.0.0.1:9001\", \"127.0.0.1:9002\", \"127.0.0.1:9003\"]\n"

TEST(least_requests_prefers_idle)
{
    fixture f;
    CHECK(fx_load(&f, THREE_TARGETS "    balance: least_requests\n"));
    if (!f.cfg) return;
    atomic_store(&f.lb->targets[0]->inflight, 3);
    atomic_store(&f.lb->targets[1]->inflight, 1);
    for (int i = 0; i < 10; i++) CHECK_INT(pt_lb_pick(&f.u, 0, PT_STR_NULL, 1000), 2);
    /* ties share the turn: 1 and 2 both at one in flight alternate */
    atomic_store(&f.lb->targets[2]->inflight, 1);
    int c[3] = {0};
    for (int i = 0; i < 10; i++) c[pt_lb_pick(&f.u, 0, PT_STR_NULL, 1000)]++;
    CHECK_INT(c[0], 0);
    CHECK_INT(c[1], 5);
    CHECK_INT(c[2], 5);
    /* begin/end count in flight */
    pt_lb_attempt a = {0};
    pt_lb_begin(f.lb, &a, 1, 1000);
    CHECK_INT(atomic_load(&f.lb->targets[1]->inflight), 2);
    pt_lb_end(f.lb, &a, 2000);
    pt_lb_end(f.lb, &a, 2000); /* twice: once counted */
    CHECK_INT(atomic_load(&f.lb->targets[1]->inflight), 1);
    fx_free(&f);
}

TEST(least_requests_weighted)
{
    fixture f;
    CHECK(fx_load(&f, LISTEN "upstreams:\n  up:\n    balance: least_requests\n    targets:\n"
                      "      - {address: \"127.0.0.1:9001\", weight: 3}\n      - \"127.0.0.1:9002\"\n"));
    if (!f.cfg) return;
    int c[2] = {0};
    for (int i = 0; i < 40; i++) c[pt_lb_pick(&f.u, 0, PT_STR_NULL, 1000)]++;
    CHECK_INT(c[0], 30); /* all idle: weighted round-robin */
    atomic_store(&f.lb->targets[0]->inflight, 2); /* 2/3 < 1/1? no: 0/1 wins */
    CHECK_INT(pt_lb_pick(&f.u, 0, PT_STR_NULL, 1000), 1);
    atomic_store(&f.lb->targets[1]->inflight, 1); /* 2/3 < 1/1 */
    CHECK_INT(pt_lb_pick(&f.u, 0, PT_STR_NULL, 1000), 0);
    fx_free(&f);
}

TEST(ewma_avoids_slow_target)
{
    fixture f;
    CHECK(fx_load(&f, THREE_TARGETS "    balance: ewma\n"));
    if (!f.cfg) return;
    uint64_t now = 1000000;
    pt_lb_attempt a = {0};
    for (int t = 0; t < 3; t++) {
        pt_lb_begin(f.lb, &a, t, now);
        pt_lb_result(f.lb, &a, PT_LB_SUCCESS, now + (t == 0 ? 200000 : 1000)); /* 200 ms vs 1 ms */
        pt_lb_end(f.lb, &a, now);
    }
    now += 200000;
    int c[3] = {0};
    for (int i = 0; i < 300; i++) c[pt_lb_pick(&f.u, 0, PT_STR_NULL, now)]++;
    /* target 0 wins only when both choices... never: two distinct draws */
    CHECK_INT(c[0], 0);
    CHECK(c[1] > 100 && c[2] > 100);
    /* a minute later, the fast targets still answering in 1 ms: the idle
     * slow target's average has decayed (to 0.5 ms) and it is tried again */
    for (int t = 1; t < 3; t++) {
        pt_lb_begin(f.lb, &a, t, now + 59999000);
        pt_lb_result(f.lb, &a, PT_LB_SUCCESS, now + 60000000);
        pt_lb_end(f.lb, &a, now + 60000000);
    }
    int back = 0;
    for (int i = 0; i < 300; i++) back += pt_lb_pick(&f.u, 0, PT_STR_NULL, now + 60000000) == 0;
    CHECK(back > 0);
    fx_free(&f);
}

TEST(hash_sticks_and_falls_back)
{
    fixture f;
    CHECK(fx_load(&f, THREE_TARGETS "    balance: hash\n    hash_on: {header: X-User}\n"));
    if (!f.cfg) return;
    CHECK(f.cfg->upstreams[0].balance.hash_on == PT_HASH_HEADER);
    int first = pt_lb_pick(&f.u, 0, PT_STR_LIT("alice"), 1000);
    for (int i = 0; i < 20; i++) CHECK_INT(pt_lb_pick(&f.u, 0, PT_STR_LIT("alice"), 1000), first);
    /* a retry (the first target excluded) goes to another, deterministically */
    int second = pt_lb_pick(&f.u, 1ull << first, PT_STR_LIT("alice"), 1000);
    CHECK(second >= 0 && second != first);
    CHECK_INT(pt_lb_pick(&f.u, 1ull << first, PT_STR_LIT("alice"), 1000), second);
    /* no key: round-robin */
    int c[3] = {0};
    for (int i = 0; i < 9; i++) c[pt_lb_pick(&f.u, 0, PT_STR_NULL, 1000)]++;
    CHECK(c[0] == 3 && c[1] == 3 && c[2] == 3);
    fx_free(&f);
}

/* ---------------------------------------------------- outlier detection */

static void results(fixture *f, int idx, pt_lb_verdict r, int n, uint64_t now)
{
    for (int i = 0; i < n; i++) {
        pt_lb_attempt a = {0};
        pt_lb_begin(f->lb, &a, idx, now);
        pt_lb_result(f->lb, &a, r, now);
        pt_lb_end(f->lb, &a, now);
    }
}

TEST(outlier_ejects_and_returns)
{
    fixture f;
    CHECK(fx_load(&f, THREE_TARGETS "    outlier: {consecutive_5xx: 3, base_ejection_time: 1s, max_ejection_time: 3s}\n"));
    if (!f.cfg) return;
    uint64_t t0 = 10000000;
    results(&f, 0, PT_LB_5XX, 2, t0);
    results(&f, 0, PT_LB_SUCCESS, 1, t0); /* a success clears the count */
    results(&f, 0, PT_LB_5XX, 2, t0);
    CHECK(!pt_lb_target_ejected(f.lb, 0, t0));
    results(&f, 0, PT_LB_5XX, 1, t0);
    CHECK(pt_lb_target_ejected(f.lb, 0, t0));
    for (int i = 0; i < 30; i++) CHECK(pt_lb_pick(&f.u, 0, PT_STR_NULL, t0 + 500000) != 0);
    /* back after 1 s; the next failure ejects again, for 2 s */
    CHECK(!pt_lb_target_ejected(f.lb, 0, t0 + 1000001));
    results(&f, 0, PT_LB_5XX, 1, t0 + 1000001);
    CHECK(pt_lb_target_ejected(f.lb, 0, t0 + 2900000));
    CHECK(!pt_lb_target_ejected(f.lb, 0, t0 + 3000002));
    /* after its return a success clears it: one failure is not enough */
    results(&f, 0, PT_LB_SUCCESS, 1, t0 + 3000002);
    results(&f, 0, PT_LB_5XX, 1, t0 + 3000002);
    CHECK(!pt_lb_target_ejected(f.lb, 0, t0 + 3000002));
    fx_free(&f);
}

TEST(outlier_max_percent_and_fail_open)
{
    fixture f;
    CHECK(fx_load(&f, THREE_TARGETS "    outlier: {consecutive_failures: 2, max_ejected_percent: 50}\n"));
    if (!f.cfg) return;
    uint64_t now = 5000000;
    results(&f, 0, PT_LB_FAILURE, 2, now);
    results(&f, 1, PT_LB_FAILURE, 2, now);
    CHECK(pt_lb_target_ejected(f.lb, 0, now));
    CHECK(!pt_lb_target_ejected(f.lb, 1, now)); /* 50% of 3: one at a time */
    results(&f, 2, PT_LB_FAILURE, 2, now);
    CHECK(!pt_lb_target_ejected(f.lb, 2, now));
    /* fail open: with 1 and 2 excluded (tried), the ejected 0 is used */
    CHECK_INT(pt_lb_pick(&f.u, 0x6, PT_STR_NULL, now), 0);
    CHECK(pt_lb_pick(&f.u, 0x2, PT_STR_NULL, now) == 2);
    fx_free(&f);
}

TEST(outlier_max_percent_zero_share)
{
    fixture f;
    CHECK(fx_load(&f, THREE_TARGETS "    outlier: {consecutive_5xx: 1, max_ejected_percent: 30}\n"));
    if (!f.cfg) return;
    results(&f, 0, PT_LB_5XX, 3, 1000);
    CHECK(!pt_lb_target_ejected(f.lb, 0, 1000)); /* 30% of 3 targets is less than one */
    fx_free(&f);
}

/* ------------------------------------------------------ circuit breaker */

TEST(breaker_three_states)
{
    fixture f;
    CHECK(fx_load(&f, THREE_TARGETS "    circuit_breaker: {consecutive_failures: 3, open_time: 2s, half_open_requests: 2}\n"));
    if (!f.cfg) return;
    uint64_t now = 1000000;
    pt_lb_attempt a = {0};
    CHECK(pt_lb_admit(f.lb, &a, now) && !a.probe);
    results(&f, 1, PT_LB_FAILURE, 2, now);
    CHECK(pt_lb_breaker_phase(f.lb, now) == PT_BREAKER_CLOSED);
    results(&f, 2, PT_LB_5XX, 1, now);
    CHECK(pt_lb_breaker_phase(f.lb, now) == PT_BREAKER_OPEN);
    CHECK(!pt_lb_admit(f.lb, &a, now + 1000000));
    /* half-open after 2 s: two probes, the third waits */
    pt_lb_attempt p1 = {0}, p2 = {0}, p3 = {0};
    CHECK(pt_lb_admit(f.lb, &p1, now + 2000000) && p1.probe);
    CHECK(pt_lb_admit(f.lb, &p2, now + 2000000) && p2.probe);
    CHECK(!pt_lb_admit(f.lb, &p3, now + 2000000));
    /* one probe fails: open again */
    pt_lb_begin(f.lb, &p1, 0, now + 2000000);
    pt_lb_result(f.lb, &p1, PT_LB_5XX, now + 2000100);
    pt_lb_end(f.lb, &p1, now + 2000100);
    CHECK(pt_lb_breaker_phase(f.lb, now + 2000100) == PT_BREAKER_OPEN);
    pt_lb_end(f.lb, &p2, now + 2000100); /* never sent: gives its place back (ignored now) */
    /* half-open again; both probes succeed: closed */
    uint64_t t2 = now + 4000200;
    CHECK(pt_lb_admit(f.lb, &p1, t2) && p1.probe);
    CHECK(pt_lb_admit(f.lb, &p2, t2) && p2.probe);
    pt_lb_begin(f.lb, &p1, 0, t2);
    pt_lb_result(f.lb, &p1, PT_LB_SUCCESS, t2);
    pt_lb_end(f.lb, &p1, t2);
    CHECK(pt_lb_breaker_phase(f.lb, t2) == PT_BREAKER_HALF_OPEN);
    pt_lb_begin(f.lb, &p2, 1, t2);
    pt_lb_result(f.lb, &p2, PT_LB_SUCCESS, t2);
    pt_lb_end(f.lb, &p2, t2);
    CHECK(pt_lb_breaker_phase(f.lb, t2) == PT_BREAKER_CLOSED);
    CHECK(pt_lb_admit(f.lb, &a, t2) && !a.probe);
    fx_free(&f);
}

TEST(breaker_failure_ratio)
{
    fixture f;
    CHECK(fx_load(&f, THREE_TARGETS "    circuit_breaker: {failure_ratio: 0.5, window: 10s, min_requests: 10}\n"));
    if (!f.cfg) return;
    CHECK_INT(f.cfg->upstreams[0].balance.breaker.failure_ratio_pct, 50);
    uint64_t now = 50000000;
    results(&f, 0, PT_LB_FAILURE, 6, now); /* 6 of 6, under min_requests */
    CHECK(pt_lb_breaker_phase(f.lb, now) == PT_BREAKER_CLOSED);
    results(&f, 0, PT_LB_SUCCESS, 3, now);
    results(&f, 0, PT_LB_FAILURE, 1, now); /* 7 of 10 */
    CHECK(pt_lb_breaker_phase(f.lb, now) == PT_BREAKER_OPEN);
    fx_free(&f);
}

TEST(breaker_ratio_window_forgets)
{
    fixture f;
    CHECK(fx_load(&f, THREE_TARGETS "    circuit_breaker: {failure_ratio: 50%, window: 1s, min_requests: 4}\n"));
    if (!f.cfg) return;
    uint64_t now = 50000000;
    results(&f, 0, PT_LB_FAILURE, 3, now);
    /* two seconds later the old failures are out of the window */
    results(&f, 0, PT_LB_SUCCESS, 3, now + 2000000);
    results(&f, 0, PT_LB_FAILURE, 1, now + 2000000);
    CHECK(pt_lb_breaker_phase(f.lb, now + 2000000) == PT_BREAKER_CLOSED);
    fx_free(&f);
}

/* ------------------------------------------------ shared across reloads */

TEST(state_survives_reload)
{
    size_t base = pt_shared_count();
    fixture a, b;
    CHECK(fx_load(&a, THREE_TARGETS));
    CHECK(fx_load(&b, LISTEN "upstreams:\n  up:\n    targets: [\"127.0.0.1:9002\", \"127.0.0.1:9004\"]\n"));
    if (!a.cfg || !b.cfg) return;
    CHECK(a.lb->targets[1] == b.lb->targets[0]); /* same (upstream, address): same state */
    CHECK_INT(pt_shared_count(), base + 4);
    atomic_store(&a.lb->targets[1]->inflight, 7);
    fx_free(&a);
    CHECK_INT(atomic_load(&b.lb->targets[0]->inflight), 7);
    CHECK_INT(pt_shared_count(), base + 2);
    fx_free(&b);
    CHECK_INT(pt_shared_count(), base);
}

/* ------------------------------------------------------------ config */

static void expect_error(const char *yaml, const char *needle)
{
    pt_errors e = {0};
    pt_config *c = load(yaml, &e);
    CHECK(c == NULL);
    bool found = false;
    for (size_t i = 0; i < e.n; i++) found |= strstr(e.msgs[i], needle) != NULL;
    if (!found)
        for (size_t i = 0; i < e.n; i++) fprintf(stderr, "  got: %s\n", e.msgs[i]);
    CHECK(found);
    pt_errors_free(&e);
    pt_config_free(c);
}

TEST(config_errors)
{
    expect_error(THREE_TARGETS "    balance: random\n", "t.yaml:5:14: upstream 'up': balance must be one of");
    expect_error(THREE_TARGETS "    balance: hash\n", "balance hash needs 'hash_on'");
    expect_error(THREE_TARGETS "    hash_on: path\n", "hash_on applies to 'balance: hash' only");
    expect_error(THREE_TARGETS "    balance: hash\n    hash_on: {query: x}\n", "query");
    expect_error(THREE_TARGETS "    balance: hash\n    hash_on: uri\n", "hash_on must be client_addr, path");
    expect_error(THREE_TARGETS "    outlier: {consecutive_5xx: -1}\n", "t.yaml:5");
    expect_error(THREE_TARGETS "    outlier: {max_ejected_percent: 101}\n", "t.yaml:5");
    expect_error(THREE_TARGETS "    outlier: {base_ejection_time: 10s, max_ejection_time: 1s}\n", "max_ejection_time");
    expect_error(THREE_TARGETS "    circuit_breaker: {failure_ratio: 2}\n", "failure_ratio must be");
    expect_error(THREE_TARGETS "    circuit_breaker: {open: 1s}\n", "open");
    expect_error(THREE_TARGETS "    health_check: {type: udp}\n", "type must be http or tcp");
    expect_error(THREE_TARGETS "    health_check: {expected_statuses: [700]}\n", "t.yaml:5");
    expect_error(THREE_TARGETS "    health_check: {path: healthz}\n", "path must start with '/'");
    expect_error(THREE_TARGETS "    health_check: {interval: 0s}\n", "interval must be greater than 0");
}

TEST(config_defaults)
{
    pt_errors e = {0};
    pt_config *c = load(THREE_TARGETS "    outlier: {}\n    circuit_breaker: {}\n", &e);
    CHECK(c != NULL);
    if (!c) return;
    const pt_balance_conf *b = &c->upstreams[0].balance;
    CHECK(b->kind == PT_BALANCE_ROUND_ROBIN);
    CHECK(b->outlier.enabled && b->outlier.consecutive_5xx == 5 && b->outlier.consecutive_failures == 5);
    CHECK(b->outlier.base_ejection_ms == 30000 && b->outlier.max_ejection_ms == 300000);
    CHECK(b->outlier.max_ejected_percent == 50);
    CHECK(b->breaker.enabled && b->breaker.failure_ratio_pct == 50 && b->breaker.min_requests == 20);
    CHECK(b->breaker.open_ms == 30000 && b->breaker.half_open_requests == 1 && b->breaker.window_ms == 10000);
    CHECK(!b->health.enabled);
    pt_config_free(c);
    pt_errors_free(&e);
}

TEST_MAIN()
