/* balance.h — choosing an upstream target, and the health of targets and
 * upstreams shared by every worker of the process (docs/traffic.md "Load
 * balancing and health").
 *
 * Shared state. One pt_target_state per (upstream name, target address)
 * and one pt_breaker_state per upstream name live in a process-wide
 * registry (target_state.c). Each configuration generation takes a
 * reference on the entries its upstreams name (pt_lb_attach, when the
 * generation is built) and drops them when its configuration is freed, so
 * a target that stays in the configuration keeps its in-flight count,
 * latency and ejection across reloads. Workers read and write the entries
 * with relaxed/acq-rel atomics only: no lock on the request path (the
 * registry mutex is taken at configuration time only). Updates that race
 * (two workers folding a latency sample into the EWMA at once) may lose
 * one sample; counts (in flight) never do.
 *
 * Per generation and upstream, a pt_lb holds the entries in target order
 * and, for `balance: hash`, the Maglev lookup table.
 *
 * Times are microseconds of pt_lb_now_us() (CLOCK_MONOTONIC); the
 * functions that take `now_us` never read the clock themselves (tests
 * pass their own). */
#ifndef PT_UPSTREAM_BALANCE_H
#define PT_UPSTREAM_BALANCE_H

#include <stdatomic.h>

#include "config/config.h"
#include "upstream/upstream.h"

struct pt_metric_series;

typedef struct pt_target_state {
    atomic_int inflight;              /* requests with an open exchange on this target */
    atomic_uint_fast64_t ewma_ns;     /* peak-EWMA of the time to the response head */
    atomic_uint_fast64_t ewma_at_us;  /* when ewma_ns was last written */
    atomic_uint consecutive_5xx;
    atomic_uint consecutive_failures; /* connect errors, resets, timeouts, invalid responses */
    atomic_uint_fast64_t ejected_until_us; /* end of the current or last ejection (ejected while in the
                                              future); 0 = never ejected */
    atomic_bool ejected;              /* the gauge says ejected (cleared after the end by the next pick) */
    atomic_uint ejections;            /* the ejection multiplier (decays while healthy) */
    /* active health checks (health_check.c): written by the checker thread only */
    atomic_bool unhealthy;            /* failed unhealthy_threshold checks in a row (until healthy_threshold pass) */
    unsigned checks_ok, checks_failed; /* in a row */
} pt_target_state;

typedef enum { PT_BREAKER_CLOSED = 0, PT_BREAKER_OPEN = 1, PT_BREAKER_HALF_OPEN = 2 } pt_breaker_phase;

#define PT_BREAKER_BUCKETS 10

typedef struct pt_breaker_state {
    atomic_uint phase;                /* pt_breaker_phase */
    atomic_uint_fast64_t open_until_us;
    atomic_uint consecutive;          /* failures in a row (closed) */
    atomic_uint half_open_admitted;   /* probes let through since half-open */
    atomic_uint half_open_succeeded;
    struct {
        atomic_uint_fast64_t epoch;   /* now / (window / PT_BREAKER_BUCKETS) this bucket counts */
        atomic_uint total, failures;
    } buckets[PT_BREAKER_BUCKETS];
} pt_breaker_state;

/* One generation's view of an upstream's balancer and health. */
typedef struct pt_lb {
    const pt_upstream_conf *conf;
    pt_target_state **targets;        /* [conf->ntargets], shared entries */
    pt_breaker_state *breaker;        /* shared entry; NULL without circuit_breaker */
    uint16_t *maglev;                 /* [maglev_size] target indexes; balance hash only */
    uint32_t maglev_size;             /* a prime */
} pt_lb;

/* Result of one attempt on a target, for outlier detection, the breaker
 * and the latency average. */
typedef enum {
    PT_LB_NEUTRAL = 0,  /* no verdict (the client went away, a 4xx...) */
    PT_LB_SUCCESS,      /* a response head below 500 */
    PT_LB_5XX,          /* a 5xx response head */
    PT_LB_FAILURE,      /* connect error, reset, timeout, invalid response */
} pt_lb_verdict;

/* What a request holds while it uses a target (embedded in the txn). */
typedef struct {
    int idx;            /* target index of the current attempt */
    bool begun;         /* an attempt began and has not ended */
    bool active;        /* counted in the target's in-flight */
    bool reported;      /* this attempt's result went in */
    bool probe;         /* the request is a half-open breaker probe */
    uint64_t start_us;
} pt_lb_attempt;

uint64_t pt_lb_now_us(void);

/* Builds cfg->upstreams[i].lb for every upstream (shared entries acquired;
 * all released by an arena cleanup when the configuration is freed). Main
 * thread, configuration time. */
void pt_lb_attach(pt_config *cfg);

/* The target for a new attempt of a request on u (per worker: u holds the
 * round-robin state). Targets whose bit is set in `exclude` (already
 * tried) are skipped, and so are ejected targets — unless every remaining
 * target is ejected: then they all count as healthy (fail open). `key` is
 * the hash input for balance: hash (a null slice: none, round-robin).
 * -1 when nothing is left. */
int pt_lb_pick(pt_upstream_rt *u, uint64_t exclude, pt_str key, uint64_t now_us);

/* The circuit breaker's verdict for a new request of the upstream: true
 * (go on; a->probe set when it is a half-open probe) or false (open: answer
 * 503 without contacting the upstream). Always true without a breaker. */
bool pt_lb_admit(pt_lb *lb, pt_lb_attempt *a, uint64_t now_us);

/* An attempt on target idx starts (counted in flight) / its result is known
 * (at most once per attempt; the latency sample is now - start) / it ends
 * (the in-flight count drops; neutral result if none was given). All accept
 * lb NULL. */
void pt_lb_begin(pt_lb *lb, pt_lb_attempt *a, int idx, uint64_t now_us);
void pt_lb_result(pt_lb *lb, pt_lb_attempt *a, pt_lb_verdict r, uint64_t now_us);
void pt_lb_end(pt_lb *lb, pt_lb_attempt *a, uint64_t now_us);
/* A target whose exchange could not even be opened (no attempt began). */
void pt_lb_open_failed(pt_lb *lb, pt_lb_attempt *a, int idx, uint64_t now_us);

/* breaker.c: one attempt's verdict for the upstream's breaker (from
 * pt_lb_result / pt_lb_end; consumes a->probe). */
void pt_lb_breaker_result(pt_lb *lb, pt_lb_attempt *a, pt_lb_verdict r, uint64_t now_us);

/* ---- pieces, exposed for tests ---- */

/* 64-bit hash of the key bytes (FNV-1a folded through a murmur3 finaliser). */
uint64_t pt_lb_hash(const void *p, size_t n, uint64_t seed);
/* Fills table[size] (size prime, > ntargets) with target indexes by
 * weighted Maglev over the target names (the names, not their order,
 * decide where keys go). */
void pt_maglev_build(uint16_t *table, uint32_t size, const char *const *names, const uint32_t *weights,
                     size_t ntargets);
/* Whether target state `s` is ejected at now_us (clears a finished
 * ejection, see pt_lb_pick). */
bool pt_lb_target_ejected(pt_lb *lb, size_t idx, uint64_t now_us);
/* The breaker's phase at now_us as admit would see it (open past its time
 * reads half-open). */
pt_breaker_phase pt_lb_breaker_phase(const pt_lb *lb, uint64_t now_us);

/* ---- target_state.c: the registry ---- */

/* The shared entry for (upstream, target) — target NULL: the upstream's
 * breaker — created zeroed with `size` bytes on first use, with one more
 * reference. Thread-safe (a mutex; configuration time only). */
void *pt_shared_acquire(const char *upstream, const char *target, size_t size);
void pt_shared_release(void *entry);
/* Entries alive (tests). */
size_t pt_shared_count(void);

#endif
