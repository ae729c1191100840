/* rl_table.c — lock-free GCRA and sliding-window counters (rl_table.h). */
#include "plugins/rate_limit/rl_table.h"

#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "plugins/plugin_util.h"

/* ------------------------------------------------------------ hashing */

/* Keyed with the table's random key (plugin_util.h). */
uint64_t rl_hash(const rl_table *t, const void *data, size_t len) { return pt_plugin_siphash13(t->k0, t->k1, data, len); }

/* ------------------------------------------------------------ table */

size_t rl_table_bytes(uint64_t max_keys)
{
    uint64_t nb = (max_keys + RL_WAYS - 1) / RL_WAYS;
    if (nb == 0) nb = 1;
    return sizeof(rl_table) + nb * sizeof(rl_bucket);
}

void rl_table_init(void *mem, size_t size)
{
    rl_table *t = mem;
    t->k0 = pt_plugin_rand64();
    t->k1 = pt_plugin_rand64();
    t->nbuckets = (size - sizeof(rl_table)) / sizeof(rl_bucket);
}

uint64_t rl_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ------------------------------------------------------------ sliding window state */

#define M20 0xfffffULL
#define M24 0xffffffULL

typedef struct {
    uint64_t win, prev, cur;
} sw_state;

/* The state seen from window `win`: rolled forward when it is older. */
static sw_state sw_view(uint64_t s, uint64_t win)
{
    uint64_t sw = s >> 40, prev = (s >> 20) & M20, cur = s & M20;
    if (sw == (win & M24)) return (sw_state){win, prev, cur};
    if (sw == ((win - 1) & M24)) return (sw_state){win, cur, 0};
    return (sw_state){win, 0, 0};
}

static uint64_t sw_pack(sw_state v) { return (v.win & M24) << 40 | (v.prev & M20) << 20 | (v.cur & M20); }

/* prev weighted by the share of the previous window still inside the
 * sliding window, plus cur (rounded down). */
static uint64_t sw_estimate(sw_state v, uint64_t into, uint64_t period)
{
    return v.prev * (period - into) / period + v.cur;
}

/* How much a key owes at `now` (eviction picks the smallest). */
static uint64_t owed(const rl_limit *l, uint64_t s, uint64_t now)
{
    if (l->algo == RL_GCRA) return s > now ? s - now : 0;
    uint64_t win = now / l->period_us;
    return sw_estimate(sw_view(s, win), now % l->period_us, l->period_us);
}

/* The state word of key h, claiming a slot when the key is absent (NULL
 * only under heavy contention on one bucket: the caller lets the request
 * through uncounted rather than spin). */
static _Atomic uint64_t *find_slot(rl_table *t, const rl_limit *l, uint64_t h, uint64_t now)
{
    uint64_t tag = h | 1;
    rl_bucket *b = &t->b[(uint64_t)(((unsigned __int128)(h >> 1)) * t->nbuckets >> 63)];
    for (int attempt = 0; attempt < 4; attempt++) {
        int victim = -1;
        uint64_t victim_owed = UINT64_MAX, victim_tag = 0, victim_state = 0;
        for (int i = 0; i < RL_WAYS; i++) {
            uint64_t tg = atomic_load_explicit(&b->s[i].tag, memory_order_acquire);
            if (tg == tag) return &b->s[i].state;
            uint64_t st = atomic_load_explicit(&b->s[i].state, memory_order_relaxed);
            uint64_t o = tg == 0 ? 0 : owed(l, st, now);
            if (o < victim_owed) {
                victim = i;
                victim_owed = o;
                victim_tag = tg;
                victim_state = st;
            }
        }
        rl_slot *s = &b->s[victim];
        if (atomic_compare_exchange_strong_explicit(&s->tag, &victim_tag, tag, memory_order_acq_rel,
                                                    memory_order_acquire)) {
            /* Start from nothing owed, unless a thread that found the new
             * tag already counted into the slot. */
            atomic_compare_exchange_strong_explicit(&s->state, &victim_state, 0, memory_order_relaxed,
                                                    memory_order_relaxed);
            return &s->state;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------ decisions */

static void gcra_take(_Atomic uint64_t *st, const rl_limit *l, uint64_t now, rl_verdict *v)
{
    const uint64_t T = l->interval_us, P = l->period_us, slack = l->queue * T;
    uint64_t tat = atomic_load_explicit(st, memory_order_relaxed);
    for (;;) {
        uint64_t ntat = (tat > now ? tat : now) + T;
        uint64_t ahead = ntat - now; /* > 0 */
        if (ahead > P + slack) {
            *v = (rl_verdict){.allowed = false,
                              .remaining = 0,
                              .reset_us = tat > now ? tat - now : 0,
                              .retry_after_us = ahead - P - slack};
            return;
        }
        if (atomic_compare_exchange_weak_explicit(st, &tat, ntat, memory_order_relaxed, memory_order_relaxed)) {
            *v = (rl_verdict){.allowed = true,
                              .delay_us = ahead > P ? ahead - P : 0,
                              .remaining = ahead >= P ? 0 : (P - ahead) / T,
                              .reset_us = ahead};
            return;
        }
    }
}

/* Sliding window refused at estimate `est` (>= limit): the wait until
 * est - 1 < limit, i.e. until one more request fits. */
static uint64_t sw_retry_after(const rl_limit *l, sw_state v, uint64_t into)
{
    const uint64_t W = l->period_us, L = l->requests;
    /* within this window: prev*(W-x)/W + cur <= L-1 ⇔ x >= W - (L-1-cur)*W/prev */
    if (v.cur + 1 <= L && v.prev > 0) {
        uint64_t room = (L - 1 - v.cur) * W / v.prev;
        uint64_t x = room >= W ? 0 : W - room;
        return x > into ? x - into : 1;
    }
    /* next window: cur*(W-y)/W <= L-1 ⇔ y >= W - (L-1)*W/cur */
    uint64_t room = v.cur > 0 ? (L - 1) * W / v.cur : W;
    uint64_t y = room >= W ? 0 : W - room;
    return (W - into) + y;
}

static void sliding_take(_Atomic uint64_t *st, const rl_limit *l, uint64_t now, rl_verdict *v)
{
    const uint64_t W = l->period_us, win = now / W, into = now % W;
    uint64_t s = atomic_load_explicit(st, memory_order_relaxed);
    for (;;) {
        sw_state cur = sw_view(s, win);
        uint64_t est = sw_estimate(cur, into, W);
        if (est + 1 > l->requests || cur.cur >= M20) {
            *v = (rl_verdict){.allowed = false, .remaining = 0, .reset_us = W - into,
                              .retry_after_us = sw_retry_after(l, cur, into)};
            return;
        }
        sw_state next = cur;
        next.cur++;
        if (atomic_compare_exchange_weak_explicit(st, &s, sw_pack(next), memory_order_relaxed,
                                                  memory_order_relaxed)) {
            *v = (rl_verdict){.allowed = true, .remaining = l->requests - (est + 1), .reset_us = W - into};
            return;
        }
    }
}

void rl_take(rl_table *t, const rl_limit *l, uint64_t h, uint64_t now_us, rl_verdict *v)
{
    _Atomic uint64_t *st = find_slot(t, l, h, now_us);
    if (!st) {
        *v = (rl_verdict){.allowed = true, .remaining = 0, .reset_us = l->period_us};
        return;
    }
    if (l->algo == RL_GCRA)
        gcra_take(st, l, now_us, v);
    else
        sliding_take(st, l, now_us, v);
}

void rl_give_back(rl_table *t, const rl_limit *l, uint64_t h, uint64_t now_us)
{
    _Atomic uint64_t *st = find_slot(t, l, h, now_us);
    if (!st) return;
    uint64_t s = atomic_load_explicit(st, memory_order_relaxed);
    for (;;) {
        uint64_t n;
        if (l->algo == RL_GCRA) {
            n = s > l->interval_us ? s - l->interval_us : 0;
        } else {
            sw_state v = sw_view(s, now_us / l->period_us);
            if (v.cur == 0) return;
            v.cur--;
            n = sw_pack(v);
        }
        if (atomic_compare_exchange_weak_explicit(st, &s, n, memory_order_relaxed, memory_order_relaxed)) return;
    }
}
