/* rl_table.h — the local rate-limit counters: one lock-free table per
 * limit, shared by every worker thread of the process (it lives in a
 * pt_conf_shared object, so it survives reloads that keep the limit).
 *
 * Layout: buckets of 4 slots (one 64-byte cache line); a slot is a 64-bit
 * tag (keyed SipHash of the limit key, 0 = empty) and a 64-bit state
 * updated with compare-and-swap — no lock anywhere. A key whose state says
 * "nothing owed" (GCRA: theoretical arrival time in the past; sliding
 * window: both windows over) is equivalent to an absent key, so such slots
 * are reused freely. When a bucket holds 4 live keys the one that owes the
 * least is evicted: memory is fixed (16 bytes per key slot), and keys close
 * to their limit are the last to lose their count.
 *
 * Algorithms (docs/traffic.md):
 *   GCRA     generic cell rate algorithm (token bucket): emission interval
 *            T = period / requests, burst tolerance = period; the state is
 *            the theoretical arrival time in microseconds. With a queue of
 *            N, a request that is up to N*T early is delayed instead of
 *            refused (nginx limit_req burst=N without nodelay).
 *   SLIDING  sliding-window counter: counts of the current and previous
 *            fixed windows, the previous weighted by how much of it still
 *            overlaps the sliding window. Packed in 64 bits: window number
 *            (24 bits), previous and current counts (20 bits each), so at
 *            most RL_SLIDING_MAX requests per window. */
#ifndef PT_PLUGINS_RATE_LIMIT_RL_TABLE_H
#define PT_PLUGINS_RATE_LIMIT_RL_TABLE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RL_WAYS 4
#define RL_SLIDING_MAX 1000000u

typedef enum { RL_GCRA = 0, RL_SLIDING } rl_algo;

typedef struct {
    rl_algo algo;
    uint64_t requests;    /* per period */
    uint64_t period_us;
    uint64_t interval_us; /* GCRA: period / requests (>= 1) */
    uint64_t queue;       /* GCRA: excess requests delayed rather than refused */
} rl_limit;

typedef struct {
    bool allowed;
    uint64_t delay_us;       /* allowed after this wait (queued), 0: now */
    uint64_t remaining;      /* requests left now (after this one) */
    uint64_t reset_us;       /* until the quota is whole again (GCRA) / the window ends (sliding) */
    uint64_t retry_after_us; /* refused: until a request would be accepted */
} rl_verdict;

typedef struct {
    _Atomic uint64_t tag;
    _Atomic uint64_t state;
} rl_slot;

typedef struct {
    _Alignas(64) rl_slot s[RL_WAYS];
} rl_bucket;

typedef struct {
    uint64_t k0, k1;   /* SipHash key: random per table, so clients cannot aim at one bucket */
    uint64_t nbuckets;
    uint64_t pad[5];
    rl_bucket b[];
} rl_table;

/* Bytes of a table holding at least max_keys keys. */
size_t rl_table_bytes(uint64_t max_keys);
/* pt_conf_shared init: draws the hash key and sizes the table to `size`. */
void rl_table_init(void *mem, size_t size);

/* Keyed 64-bit hash of a limit key (SipHash-1-3). */
uint64_t rl_hash(const rl_table *t, const void *data, size_t len);

/* Takes one request for key `h` under `l` at `now_us` (a monotonic clock):
 * fills *v; the table changes only when v->allowed. */
void rl_take(rl_table *t, const rl_limit *l, uint64_t h, uint64_t now_us, rl_verdict *v);
/* Returns the request rl_take counted (another limit refused the request). */
void rl_give_back(rl_table *t, const rl_limit *l, uint64_t h, uint64_t now_us);

/* Microseconds on the monotonic clock (what rl_take expects). */
uint64_t rl_now_us(void);

#endif
