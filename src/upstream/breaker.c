/* breaker.c — the circuit breaker of an upstream, shared by every worker
 * (see balance.h, docs/traffic.md "Circuit breaker").
 *
 * closed: requests go through; results are counted (failures in a row, and
 *   totals in a sliding window of PT_BREAKER_BUCKETS buckets). Crossing the
 *   threshold opens it.
 * open: every request is answered 503 at once, until open_time has passed.
 * half-open: the first half_open_requests requests go through as probes,
 *   the others get 503. One failed probe opens it again; when every probe
 *   succeeded it closes (counts start afresh). A probe with no verdict (the
 *   client left) gives its place back.
 * Transitions are compare-and-swap on `phase`, so one worker makes each. */
#include "obs/gateway_metrics.h"
#include "upstream/balance.h"

static void set_phase_metric(pt_lb *lb, pt_breaker_phase p)
{
    const pt_upstream_metrics *m = lb->conf->metrics;
    if (m) pt_metric_set(m->breaker_state, 0, (int64_t)p);
}

static void reset_counts(pt_breaker_state *b)
{
    atomic_store(&b->consecutive, 0);
    for (int i = 0; i < PT_BREAKER_BUCKETS; i++) {
        atomic_store(&b->buckets[i].total, 0);
        atomic_store(&b->buckets[i].failures, 0);
    }
}

/* Moves `from` -> open for open_time. */
static void trip(pt_lb *lb, pt_breaker_phase from, uint64_t now_us)
{
    pt_breaker_state *b = lb->breaker;
    atomic_store(&b->open_until_us, now_us + lb->conf->balance.breaker.open_ms * 1000);
    /* the next half-open starts with no probe counted */
    atomic_store(&b->half_open_admitted, 0);
    atomic_store(&b->half_open_succeeded, 0);
    unsigned expected = from;
    if (atomic_compare_exchange_strong(&b->phase, &expected, PT_BREAKER_OPEN)) set_phase_metric(lb, PT_BREAKER_OPEN);
}

pt_breaker_phase pt_lb_breaker_phase(const pt_lb *lb, uint64_t now_us)
{
    if (!lb || !lb->breaker) return PT_BREAKER_CLOSED;
    unsigned p = atomic_load(&lb->breaker->phase);
    if (p == PT_BREAKER_OPEN && now_us >= atomic_load(&lb->breaker->open_until_us)) return PT_BREAKER_HALF_OPEN;
    return (pt_breaker_phase)p;
}

bool pt_lb_admit(pt_lb *lb, pt_lb_attempt *a, uint64_t now_us)
{
    a->probe = false;
    a->idx = -1;
    if (!lb || !lb->breaker) return true;
    pt_breaker_state *b = lb->breaker;
    unsigned p = atomic_load_explicit(&b->phase, memory_order_acquire);
    if (p == PT_BREAKER_CLOSED) return true;
    if (p == PT_BREAKER_OPEN) {
        if (now_us < atomic_load(&b->open_until_us)) return false;
        unsigned expected = PT_BREAKER_OPEN;
        if (atomic_compare_exchange_strong(&b->phase, &expected, PT_BREAKER_HALF_OPEN))
            set_phase_metric(lb, PT_BREAKER_HALF_OPEN);
        else if (expected == PT_BREAKER_CLOSED)
            return true;
    }
    unsigned limit = lb->conf->balance.breaker.half_open_requests;
    if (atomic_fetch_add(&b->half_open_admitted, 1) < limit) {
        a->probe = true;
        return true;
    }
    atomic_fetch_sub(&b->half_open_admitted, 1);
    return false;
}

static void count_closed(pt_lb *lb, bool failed, uint64_t now_us)
{
    const pt_breaker_conf *c = &lb->conf->balance.breaker;
    pt_breaker_state *b = lb->breaker;
    unsigned consecutive = failed ? atomic_fetch_add(&b->consecutive, 1) + 1 : 0;
    if (!failed && atomic_load_explicit(&b->consecutive, memory_order_relaxed))
        atomic_store_explicit(&b->consecutive, 0, memory_order_relaxed);
    if (c->consecutive_failures) {
        if (failed && consecutive >= c->consecutive_failures) trip(lb, PT_BREAKER_CLOSED, now_us);
        return;
    }
    uint64_t width = c->window_ms * 1000 / PT_BREAKER_BUCKETS;
    if (!width) width = 1;
    uint64_t epoch = now_us / width + 1; /* + 1: epoch 0 marks an unused bucket */
    __typeof__(&b->buckets[0]) k = &b->buckets[epoch % PT_BREAKER_BUCKETS];
    uint64_t seen = atomic_load(&k->epoch);
    if (seen != epoch && atomic_compare_exchange_strong(&k->epoch, &seen, epoch)) {
        atomic_store(&k->total, 0);
        atomic_store(&k->failures, 0);
    }
    atomic_fetch_add_explicit(&k->total, 1, memory_order_relaxed);
    if (failed) atomic_fetch_add_explicit(&k->failures, 1, memory_order_relaxed);
    if (!failed) return;
    uint64_t total = 0, failures = 0;
    for (int i = 0; i < PT_BREAKER_BUCKETS; i++) {
        uint64_t e = atomic_load(&b->buckets[i].epoch);
        if (!e || e + PT_BREAKER_BUCKETS <= epoch) continue;
        total += atomic_load_explicit(&b->buckets[i].total, memory_order_relaxed);
        failures += atomic_load_explicit(&b->buckets[i].failures, memory_order_relaxed);
    }
    if (total >= c->min_requests && failures * 100 >= (uint64_t)c->failure_ratio_pct * total)
        trip(lb, PT_BREAKER_CLOSED, now_us);
}

/* One attempt's result (balance.c, pt_lb_result). */
void pt_lb_breaker_result(pt_lb *lb, pt_lb_attempt *a, pt_lb_verdict r, uint64_t now_us)
{
    pt_breaker_state *b = lb->breaker;
    bool probe = a->probe;
    a->probe = false; /* the first attempt's verdict is the probe's */
    if (!b) return;
    bool failed = r == PT_LB_5XX || r == PT_LB_FAILURE;
    unsigned p = atomic_load(&b->phase);
    if (probe) {
        if (p != PT_BREAKER_HALF_OPEN) return;
        if (r == PT_LB_NEUTRAL) {
            unsigned n = atomic_load(&b->half_open_admitted);
            while (n && !atomic_compare_exchange_weak(&b->half_open_admitted, &n, n - 1)) {
            }
        } else if (failed) {
            trip(lb, PT_BREAKER_HALF_OPEN, now_us);
        } else if (atomic_fetch_add(&b->half_open_succeeded, 1) + 1 >= lb->conf->balance.breaker.half_open_requests) {
            reset_counts(b);
            unsigned expected = PT_BREAKER_HALF_OPEN;
            if (atomic_compare_exchange_strong(&b->phase, &expected, PT_BREAKER_CLOSED))
                set_phase_metric(lb, PT_BREAKER_CLOSED);
        }
        return;
    }
    if (p == PT_BREAKER_CLOSED && r != PT_LB_NEUTRAL) count_closed(lb, failed, now_us);
}
