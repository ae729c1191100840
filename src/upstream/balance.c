/* balance.c — the balancing algorithms, Maglev, per-attempt accounting and
 * passive outlier detection (see balance.h, docs/traffic.md). The circuit
 * breaker is in breaker.c. */
#include "upstream/balance.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "obs/gateway_metrics.h"

#define EWMA_DECAY_US 10000000.0 /* 10 s: a latency sample's weight halves in ~7 s */
#define EWMA_UNSAMPLED_NS 0      /* a target without samples costs nothing: it gets tried */

uint64_t pt_lb_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* -------------------------------------------------------------- hashing */

uint64_t pt_lb_hash(const void *p, size_t n, uint64_t seed)
{
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ull ^ seed;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* Per-thread xorshift64* state for the random choices of least_requests
 * ties and the two choices of ewma (no shared cache line). */
static _Thread_local uint64_t rng_state;

static uint64_t rng_next(void)
{
    if (!rng_state) rng_state = pt_lb_now_us() ^ (uint64_t)(uintptr_t)&rng_state ^ 0x9e3779b97f4a7c15ull;
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

/* -------------------------------------------------------------- Maglev */

/* Maglev (Eisenbud et al., NSDI 2016): each target walks its own
 * permutation of the table's slots (offset + j * skip, from two hashes of
 * its name) and takes the next free slot on its turn; turns are given in
 * proportion to the weights. Lookup is table[hash(key) % size]. */
void pt_maglev_build(uint16_t *table, uint32_t size, const char *const *names, const uint32_t *weights,
                     size_t ntargets)
{
    uint64_t *offset = pt_xcalloc(ntargets, sizeof(*offset));
    uint64_t *skip = pt_xcalloc(ntargets, sizeof(*skip));
    uint64_t *next = pt_xcalloc(ntargets, sizeof(*next));
    double *credit = pt_xcalloc(ntargets, sizeof(*credit));
    uint32_t wmax = 1;
    for (size_t i = 0; i < ntargets; i++) {
        size_t len = strlen(names[i]);
        offset[i] = pt_lb_hash(names[i], len, 0x6d61676c6576ull) % size;
        skip[i] = pt_lb_hash(names[i], len, 0x736b6970ull) % (size - 1) + 1;
        if (weights[i] > wmax) wmax = weights[i];
    }
    for (uint32_t s = 0; s < size; s++) table[s] = UINT16_MAX;
    uint32_t filled = 0;
    while (filled < size) {
        for (size_t i = 0; i < ntargets && filled < size; i++) {
            credit[i] += (double)weights[i] / wmax;
            if (credit[i] < 1.0) continue;
            credit[i] -= 1.0;
            uint64_t slot;
            do {
                slot = (offset[i] + next[i] * skip[i]) % size;
                next[i]++;
            } while (table[slot] != UINT16_MAX);
            table[slot] = (uint16_t)i;
            filled++;
        }
    }
    free(offset);
    free(skip);
    free(next);
    free(credit);
}

/* The smallest of these primes with at least 100 slots per target. */
static uint32_t maglev_size_for(size_t ntargets)
{
    static const uint32_t primes[] = {65537, 131071, 262147, 524287, 1048573};
    for (size_t i = 0; i < PT_ARRAY_LEN(primes); i++)
        if (primes[i] >= ntargets * 100) return primes[i];
    return primes[PT_ARRAY_LEN(primes) - 1];
}

/* ------------------------------------------------------------ attaching */

static void lb_release(void *data)
{
    pt_lb *lb = data;
    for (size_t i = 0; i < lb->conf->ntargets; i++) pt_shared_release(lb->targets[i]);
    pt_shared_release(lb->breaker);
    free(lb->maglev);
}

void pt_lb_attach(pt_config *cfg)
{
    for (size_t u = 0; u < cfg->nupstreams; u++) {
        pt_upstream_conf *uc = &cfg->upstreams[u];
        pt_lb *lb = pt_arena_calloc(cfg->arena, sizeof(*lb));
        lb->conf = uc;
        lb->targets = pt_arena_calloc(cfg->arena, (uc->ntargets ? uc->ntargets : 1) * sizeof(*lb->targets));
        for (size_t t = 0; t < uc->ntargets; t++)
            lb->targets[t] = pt_shared_acquire(uc->name, uc->targets[t].addr.text, sizeof(pt_target_state));
        if (uc->balance.breaker.enabled) lb->breaker = pt_shared_acquire(uc->name, NULL, sizeof(pt_breaker_state));
        if (uc->balance.kind == PT_BALANCE_HASH && uc->ntargets && uc->ntargets < UINT16_MAX) {
            const char **names = pt_xcalloc(uc->ntargets, sizeof(*names));
            uint32_t *weights = pt_xcalloc(uc->ntargets, sizeof(*weights));
            for (size_t t = 0; t < uc->ntargets; t++) {
                /* a target listed twice gets a name of its own per listing */
                size_t dup = 0;
                for (size_t k = 0; k < t; k++) dup += strcmp(uc->targets[k].addr.text, uc->targets[t].addr.text) == 0;
                names[t] = dup ? pt_arena_printf(cfg->arena, "%s#%zu", uc->targets[t].addr.text, dup)
                               : uc->targets[t].addr.text;
                weights[t] = uc->targets[t].weight ? uc->targets[t].weight : 1;
            }
            lb->maglev_size = maglev_size_for(uc->ntargets);
            lb->maglev = pt_xcalloc(lb->maglev_size, sizeof(*lb->maglev));
            pt_maglev_build(lb->maglev, lb->maglev_size, names, weights, uc->ntargets);
            free(names);
            free(weights);
        }
        pt_arena_on_cleanup(cfg->arena, lb_release, lb);
        uc->lb = lb;
    }
}

/* ----------------------------------------------------- outlier state */

static pt_metric_series *series_at(pt_metric_series **v, size_t i) { return v ? v[i] : NULL; }

bool pt_lb_target_ejected(pt_lb *lb, size_t idx, uint64_t now_us)
{
    pt_target_state *s = lb->targets[idx];
    if (atomic_load_explicit(&s->ejected_until_us, memory_order_acquire) > now_us) return true;
    if (!atomic_load_explicit(&s->ejected, memory_order_relaxed)) return false;
    /* The ejection is over: the target is back; its next result decides
     * (the consecutive counters were left one short of the threshold).
     * `ejected` only tells the gauge: ejected_until_us decides. */
    bool yes = true;
    if (atomic_compare_exchange_strong(&s->ejected, &yes, false)) {
        if (atomic_load(&s->ejected_until_us) > now_us) { /* ejected again meanwhile */
            atomic_store(&s->ejected, true);
            return true;
        }
        const pt_upstream_metrics *m = lb->conf->metrics;
        pt_metric_set(m ? series_at(m->ejected, idx) : NULL, 0, 0);
    }
    return false;
}

/* Ejects target idx unless it is ejected already or that would put more
 * than max_ejected_percent of the upstream's targets out. The time grows
 * with the multiplier, which drops by one for every base_ejection_time
 * since the last ejection ended. A compare-and-swap on the end time makes
 * one worker the ejector. */
static void maybe_eject(pt_lb *lb, size_t idx, uint64_t now_us)
{
    const pt_outlier_conf *o = &lb->conf->balance.outlier;
    pt_target_state *s = lb->targets[idx];
    uint64_t last_end = atomic_load(&s->ejected_until_us);
    if (last_end > now_us) return;
    size_t n = lb->conf->ntargets, ejected = 0;
    for (size_t i = 0; i < n; i++)
        if (i != idx && pt_lb_target_ejected(lb, i, now_us)) ejected++;
    if ((ejected + 1) * 100 > n * o->max_ejected_percent) return; /* never more than the share */
    uint64_t base = o->base_ejection_ms * 1000;
    uint64_t mult = atomic_load(&s->ejections);
    uint64_t decay = last_end && now_us > last_end ? (now_us - last_end) / base : 0;
    mult = (decay >= mult ? 0 : mult - decay) + 1;
    uint64_t dur = base * mult;
    if (dur > o->max_ejection_ms * 1000) dur = o->max_ejection_ms * 1000;
    if (!atomic_compare_exchange_strong(&s->ejected_until_us, &last_end, now_us + dur)) return; /* another worker */
    atomic_store(&s->ejections, (unsigned)mult);
    atomic_store(&s->ejected, true);
    const pt_upstream_metrics *m = lb->conf->metrics;
    if (m) {
        pt_metric_set(series_at(m->ejected, idx), 0, 1);
        pt_metric_add(series_at(m->ejections, idx), 0, 1);
    }
}

static void outlier_result(pt_lb *lb, size_t idx, pt_lb_verdict r, uint64_t now_us)
{
    const pt_outlier_conf *o = &lb->conf->balance.outlier;
    pt_target_state *s = lb->targets[idx];
    if (r == PT_LB_SUCCESS) {
        if (atomic_load_explicit(&s->consecutive_5xx, memory_order_relaxed))
            atomic_store_explicit(&s->consecutive_5xx, 0, memory_order_relaxed);
        if (atomic_load_explicit(&s->consecutive_failures, memory_order_relaxed))
            atomic_store_explicit(&s->consecutive_failures, 0, memory_order_relaxed);
        return;
    }
    if (!o->enabled) return;
    atomic_uint *counter = r == PT_LB_5XX ? &s->consecutive_5xx : &s->consecutive_failures;
    uint32_t threshold = r == PT_LB_5XX ? o->consecutive_5xx : o->consecutive_failures;
    if (!threshold) return;
    unsigned c = atomic_fetch_add_explicit(counter, 1, memory_order_relaxed) + 1;
    if (c < threshold) return;
    maybe_eject(lb, idx, now_us);
    /* ejected or not: one short of the threshold, so that the next failure
     * (after the ejection) decides again and a success clears it */
    if (atomic_load(&s->ejected_until_us) > now_us) atomic_store_explicit(counter, threshold - 1, memory_order_relaxed);
}

/* ----------------------------------------------------- latency (EWMA) */

/* The EWMA decayed towards 0 by the time since its last sample (as
 * Finagle's peak EWMA): an idle slow target is tried again eventually. */
static double ewma_now(pt_target_state *s, uint64_t now_us)
{
    uint64_t v = atomic_load_explicit(&s->ewma_ns, memory_order_relaxed);
    if (!v) return EWMA_UNSAMPLED_NS;
    uint64_t at = atomic_load_explicit(&s->ewma_at_us, memory_order_relaxed);
    double dt = now_us > at ? (double)(now_us - at) : 0.0;
    return (double)v * exp(-dt / EWMA_DECAY_US);
}

static void ewma_sample(pt_target_state *s, uint64_t sample_ns, uint64_t now_us)
{
    double cur = ewma_now(s, now_us);
    uint64_t at = atomic_load_explicit(&s->ewma_at_us, memory_order_relaxed);
    double next;
    if (!cur || (double)sample_ns > cur) {
        next = (double)sample_ns; /* peak: a slow answer counts at once */
    } else {
        double dt = now_us > at ? (double)(now_us - at) : 0.0;
        double w = exp(-dt / (EWMA_DECAY_US / 10)); /* recent samples move it within about a second */
        next = cur * w + (double)sample_ns * (1.0 - w);
    }
    atomic_store_explicit(&s->ewma_ns, next < 1 ? 1 : (uint64_t)next, memory_order_relaxed);
    atomic_store_explicit(&s->ewma_at_us, now_us, memory_order_relaxed);
}

/* ------------------------------------------------------------- picking */

/* Mask of the targets (first 64) to skip: `exclude` plus the ejected and
 * the unhealthy (active checks) ones, unless that leaves nothing: then only
 * `exclude` (fail open). */
static uint64_t skip_mask(pt_lb *lb, uint64_t exclude, uint64_t now_us)
{
    bool outlier = lb->conf->balance.outlier.enabled, checked = lb->conf->balance.health.enabled;
    if (!outlier && !checked) return exclude;
    size_t n = lb->conf->ntargets < 64 ? lb->conf->ntargets : 64;
    uint64_t ejected = 0, all = n == 64 ? ~0ull : (1ull << n) - 1;
    for (size_t i = 0; i < n; i++) {
        if (exclude & (1ull << i)) continue;
        if ((checked && atomic_load_explicit(&lb->targets[i]->unhealthy, memory_order_relaxed)) ||
            (outlier && pt_lb_target_ejected(lb, i, now_us)))
            ejected |= 1ull << i;
    }
    if (((exclude | ejected) & all) == all && lb->conf->ntargets <= 64) return exclude;
    return exclude | ejected;
}

static bool skipped(uint64_t mask, size_t i) { return i < 64 && (mask & (1ull << i)); }

/* Fewest in flight per weight (in / w compared exactly); the targets that
 * tie share the turn by smooth weighted round-robin. */
static int pick_least_requests(pt_upstream_rt *u, pt_lb *lb, uint64_t mask)
{
    const pt_upstream_conf *c = u->conf;
    int best = -1;
    uint64_t best_in = 0, best_w = 1;
    for (size_t i = 0; i < c->ntargets; i++) {
        if (skipped(mask, i)) continue;
        int v = atomic_load_explicit(&lb->targets[i]->inflight, memory_order_relaxed);
        uint64_t in = v > 0 ? (uint64_t)v : 0, w = c->targets[i].weight ? c->targets[i].weight : 1;
        if (best < 0 || in * best_w < best_in * w) {
            best = (int)i;
            best_in = in;
            best_w = w;
        }
    }
    if (best < 0) return -1;
    uint64_t others = mask;
    for (size_t i = 0; i < c->ntargets && i < 64; i++) {
        if (skipped(mask, i)) continue;
        int v = atomic_load_explicit(&lb->targets[i]->inflight, memory_order_relaxed);
        uint64_t in = v > 0 ? (uint64_t)v : 0, w = c->targets[i].weight ? c->targets[i].weight : 1;
        if (in * best_w != best_in * w) others |= 1ull << i;
    }
    int idx = pt_upstream_pick(u, others);
    return idx >= 0 ? idx : best;
}

/* One target drawn with probability proportional to its weight among
 * those not in mask (and not `not`). */
static int weighted_draw(const pt_upstream_conf *c, uint64_t mask, int not)
{
    uint64_t total = 0;
    for (size_t i = 0; i < c->ntargets; i++)
        if (!skipped(mask, i) && (int)i != not) total += c->targets[i].weight ? c->targets[i].weight : 1;
    if (!total) return -1;
    uint64_t r = rng_next() % total;
    for (size_t i = 0; i < c->ntargets; i++) {
        if (skipped(mask, i) || (int)i == not) continue;
        uint64_t w = c->targets[i].weight ? c->targets[i].weight : 1;
        if (r < w) return (int)i;
        r -= w;
    }
    return -1;
}

/* Power of two choices: two distinct targets drawn by weight; the one with
 * the lower EWMA latency x (in flight + 1) wins (a coin decides ties). */
static int pick_ewma(pt_upstream_rt *u, pt_lb *lb, uint64_t mask, uint64_t now_us)
{
    int a = weighted_draw(u->conf, mask, -1);
    if (a < 0) return -1;
    int b = weighted_draw(u->conf, mask, a);
    if (b < 0) return a;
    pt_target_state *sa = lb->targets[a], *sb = lb->targets[b];
    double ca = ewma_now(sa, now_us) * (atomic_load_explicit(&sa->inflight, memory_order_relaxed) + 1);
    double cb = ewma_now(sb, now_us) * (atomic_load_explicit(&sb->inflight, memory_order_relaxed) + 1);
    if (ca == cb) return rng_next() & 1 ? a : b;
    return ca < cb ? a : b;
}

/* Maglev lookup; a skipped target's keys go on to the next slots' targets
 * (each key's choice is still deterministic). */
static int pick_hash(pt_lb *lb, uint64_t mask, pt_str key)
{
    uint64_t h = pt_lb_hash(key.p, key.n, 0);
    uint32_t slot = (uint32_t)(h % lb->maglev_size);
    for (uint32_t k = 0; k < lb->maglev_size; k++) {
        uint16_t idx = lb->maglev[(slot + k) % lb->maglev_size];
        if (!skipped(mask, idx)) return idx;
    }
    return -1;
}

int pt_lb_pick(pt_upstream_rt *u, uint64_t exclude, pt_str key, uint64_t now_us)
{
    pt_lb *lb = u->conf->lb;
    if (!lb) return pt_upstream_pick(u, exclude);
    uint64_t mask = skip_mask(lb, exclude, now_us);
    switch (u->conf->balance.kind) {
    case PT_BALANCE_LEAST_REQUESTS: return pick_least_requests(u, lb, mask);
    case PT_BALANCE_EWMA: return pick_ewma(u, lb, mask, now_us);
    case PT_BALANCE_HASH:
        if (key.p && lb->maglev) return pick_hash(lb, mask, key);
        return pt_upstream_pick(u, mask); /* no hash input: round-robin */
    default: return pt_upstream_pick(u, mask);
    }
}

/* ----------------------------------------------------- attempt accounting */


void pt_lb_begin(pt_lb *lb, pt_lb_attempt *a, int idx, uint64_t now_us)
{
    a->idx = idx;
    a->begun = true;
    a->reported = false;
    a->start_us = now_us;
    a->active = false;
    if (!lb || idx < 0) return;
    atomic_fetch_add_explicit(&lb->targets[idx]->inflight, 1, memory_order_relaxed);
    a->active = true;
}

void pt_lb_result(pt_lb *lb, pt_lb_attempt *a, pt_lb_verdict r, uint64_t now_us)
{
    if (!lb || a->reported || a->idx < 0) return;
    a->reported = true;
    /* the latency average costs an exp(): kept for balance: ewma only */
    if ((r == PT_LB_SUCCESS || r == PT_LB_5XX) && lb->conf->balance.kind == PT_BALANCE_EWMA)
        ewma_sample(lb->targets[a->idx], (now_us > a->start_us ? now_us - a->start_us : 0) * 1000 + 1, now_us);
    if (r != PT_LB_NEUTRAL) outlier_result(lb, (size_t)a->idx, r, now_us);
    pt_lb_breaker_result(lb, a, r, now_us);
}

void pt_lb_end(pt_lb *lb, pt_lb_attempt *a, uint64_t now_us)
{
    if (!lb) return;
    if (!a->begun) {
        if (a->probe) pt_lb_breaker_result(lb, a, PT_LB_NEUTRAL, now_us); /* admitted, never sent */
        return;
    }
    a->begun = false;
    if (!a->reported && a->idx >= 0) pt_lb_result(lb, a, PT_LB_NEUTRAL, now_us);
    if (a->active) {
        a->active = false;
        atomic_fetch_sub_explicit(&lb->targets[a->idx]->inflight, 1, memory_order_relaxed);
    }
}

void pt_lb_open_failed(pt_lb *lb, pt_lb_attempt *a, int idx, uint64_t now_us)
{
    pt_lb_begin(lb, a, idx, now_us);
    pt_lb_result(lb, a, PT_LB_FAILURE, now_us);
    pt_lb_end(lb, a, now_us);
}
