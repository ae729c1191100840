/* concurrency_limit.c — requests in flight per key, across the workers of
 * the process, with a bounded waiting queue (concurrency_limit.h). */
#include "plugins/concurrency_limit/concurrency_limit.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_KEYS 10000
#define DEFAULT_RECHECK_MS 20
#define MAX_WORKERS 1024
#define INFLIGHT(s) ((uint32_t)(s))
#define WAITING(s) ((uint32_t)((s) >> 32))
#define ONE_WAITING (1ULL << 32)

enum { D_ADMITTED, D_QUEUED, D_REJECTED, D_TIMED_OUT };
static const char *const decision_values[] = {"admitted", "queued", "rejected", "timed_out", NULL};
static const pt_metric_dim decision_dims[] = {{"decision", decision_values}};
static const char *const decision_labels[] = {"zone", NULL};
static const pt_metric_desc decisions_desc = {
    .name = "portico_concurrency_limit_decisions_total",
    .help = "Requests decided by concurrency_limit: admitted at once, queued (then admitted), rejected "
            "(queue full), timed_out (waited queue_timeout).",
    .type = PT_METRIC_COUNTER,
    .labels = decision_labels,
    .dims = decision_dims,
    .ndims = 1,
};

/* ------------------------------------------------------------ the shared table */

size_t cl_table_bytes(uint64_t max_keys)
{
    uint64_t nb = (max_keys + CL_WAYS - 1) / CL_WAYS;
    return sizeof(cl_table) + (nb ? nb : 1) * sizeof(cl_bucket);
}

void cl_table_init(void *mem, size_t size)
{
    cl_table *t = mem;
    t->k0 = pt_plugin_rand64();
    t->k1 = pt_plugin_rand64();
    t->nbuckets = (size - sizeof(cl_table)) / sizeof(cl_bucket);
}

_Atomic uint64_t *cl_slot_for(cl_table *t, uint64_t h)
{
    uint64_t tag = h | 1;
    cl_bucket *b = &t->b[(uint64_t)(((unsigned __int128)(h >> 1)) * t->nbuckets >> 63)];
    for (int attempt = 0; attempt < 4; attempt++) {
        int free_slot = -1;
        uint64_t free_tag = 0;
        for (int i = 0; i < CL_WAYS; i++) {
            uint64_t tg = atomic_load_explicit(&b->s[i].tag, memory_order_acquire);
            if (tg == tag) return &b->s[i].state;
            if (free_slot < 0 && atomic_load_explicit(&b->s[i].state, memory_order_relaxed) == 0) {
                free_slot = i;
                free_tag = tg;
            }
        }
        if (free_slot < 0) return NULL;
        /* A slot counting nothing is free. A request that counted into it
         * under its old tag keeps the slot's address and gives its count
         * back there, so counts stay balanced whatever the tag says. */
        if (atomic_compare_exchange_strong_explicit(&b->s[free_slot].tag, &free_tag, tag, memory_order_acq_rel,
                                                    memory_order_acquire))
            return &b->s[free_slot].state;
    }
    return NULL;
}

bool cl_try_acquire(_Atomic uint64_t *st, uint32_t max)
{
    uint64_t s = atomic_load_explicit(st, memory_order_relaxed);
    while (INFLIGHT(s) < max)
        if (atomic_compare_exchange_weak_explicit(st, &s, s + 1, memory_order_acq_rel, memory_order_relaxed))
            return true;
    return false;
}

/* A waiter becomes a request in flight: waiting - 1, in flight + 1. */
static bool try_promote(_Atomic uint64_t *st, uint32_t max)
{
    uint64_t s = atomic_load_explicit(st, memory_order_relaxed);
    while (INFLIGHT(s) < max)
        if (atomic_compare_exchange_weak_explicit(st, &s, s - ONE_WAITING + 1, memory_order_acq_rel,
                                                  memory_order_relaxed))
            return true;
    return false;
}

/* ------------------------------------------------------------ workers and their waiters */

typedef struct cl_worker {
    struct pt_loop *loop;
    cl_state *head, *tail;
    pt_timer poll;
    bool running, again; /* serve_waiters is on the stack / must run once more */
    uint64_t poll_ms;     /* the shortest `recheck` of the waiters queued since the list was last empty */
    uint64_t unlinks;     /* bumped by every unlink: a walk that resumed a request checks it */
    _Atomic bool has_waiters; /* read by other workers deciding whom to wake */
} cl_worker;

/* Every worker's state, so a slot freed on one worker can wake the others. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static cl_worker *registry[MAX_WORKERS];

static void unlink_waiter(cl_state *st)
{
    cl_worker *w = st->w;
    if (st->prev) st->prev->next = st->next;
    else w->head = st->next;
    if (st->next) st->next->prev = st->prev;
    else w->tail = st->prev;
    st->prev = st->next = NULL;
    st->queued = false;
    w->unlinks++;
    if (!w->head) atomic_store_explicit(&w->has_waiters, false, memory_order_relaxed);
    if (pt_timer_active(&st->timeout)) pt_timer_stop(w->loop, &st->timeout);
    if (!w->head) {
        if (pt_timer_active(&w->poll)) pt_timer_stop(w->loop, &w->poll);
        w->poll_ms = 0;
    }
}

/* Admits the waiters that now fit, in arrival order. Re-entrant calls (a
 * resumed request that ends at once releases its slot) only ask for one
 * more pass. */
static void serve_waiters(cl_worker *w)
{
    if (w->running) {
        w->again = true;
        return;
    }
    w->running = true;
    do {
        w->again = false;
        cl_state *st = w->head;
        while (st) {
            cl_state *next = st->next;
            if (try_promote(st->slot, st->conf->max)) {
                unlink_waiter(st);
                st->acquired = true;
                pt_metric_add(st->conf->decisions, D_QUEUED, 1);
                uint64_t before = w->unlinks;
                pt_txn_resume(st->txn, PT_SIDE_REQUEST, PT_PLUGIN_CONTINUE);
                /* the resumed request (or a connection it closed) may have
                 * removed other waiters, `next` among them: start over */
                if (w->again || w->unlinks != before) {
                    w->again = true;
                    break;
                }
            }
            st = next;
        }
    } while (w->again);
    w->running = false;
}

static void poll_fired(struct pt_loop *loop, pt_timer *t)
{
    cl_worker *w = t->data;
    serve_waiters(w);
    if (w->head && !pt_timer_active(&w->poll)) pt_timer_start(w->loop, &w->poll, w->poll_ms, poll_fired, w);
}

static void kicked(struct pt_loop *loop, void *data) { serve_waiters(data); }

/* Wakes the other workers' waiters (a slot with waiters was freed). */
static void kick_others(cl_worker *self)
{
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < MAX_WORKERS; i++)
        if (registry[i] && registry[i] != self && atomic_load_explicit(&registry[i]->has_waiters, memory_order_relaxed))
            pt_loop_post(registry[i]->loop, kicked, registry[i]);
    pthread_mutex_unlock(&registry_lock);
}

static void *cl_worker_init(struct pt_loop *loop)
{
    cl_worker *w = pt_xcalloc(1, sizeof(*w));
    w->loop = loop;
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < MAX_WORKERS; i++)
        if (!registry[i]) {
            registry[i] = w;
            break;
        }
    pthread_mutex_unlock(&registry_lock);
    return w;
}

static void cl_worker_fini(struct pt_loop *loop, void *wstate)
{
    cl_worker *w = wstate;
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < MAX_WORKERS; i++)
        if (registry[i] == w) registry[i] = NULL;
    pthread_mutex_unlock(&registry_lock);
    if (pt_timer_active(&w->poll)) pt_timer_stop(loop, &w->poll);
    free(w);
}

/* ------------------------------------------------------------ configuration */

static void *cl_configure(pt_conf_ctx *ctx, const pt_conf_node *node)
{
    static const char *const allowed[] = {"max", "key", "queue", "queue_timeout", "max_keys", "zone", "recheck", NULL};
    if (!node || node->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, node, "concurrency_limit: expected a mapping with 'max', e.g. {max: 100}");
        return NULL;
    }
    bool ok = pt_conf_check_keys(ctx, node, allowed, "concurrency_limit");
    cl_conf *c = pt_arena_calloc(ctx->arena, sizeof(*c));
    int64_t max = 0, queue = 0, max_keys = DEFAULT_MAX_KEYS;
    const pt_conf_node *m = pt_conf_get(node, "max");
    if (!m) {
        pt_conf_error(ctx, node, "concurrency_limit: 'max' (requests in flight per key) is required");
        ok = false;
    } else if (!pt_conf_int(ctx, m, 1, 1000000, &max)) {
        ok = false;
    }
    const pt_conf_node *q = pt_conf_get(node, "queue"), *mk = pt_conf_get(node, "max_keys");
    if (q && !pt_conf_int(ctx, q, 0, 1000000, &queue)) ok = false;
    if (mk && !pt_conf_int(ctx, mk, CL_WAYS, 100000000, &max_keys)) ok = false;
    c->queue_timeout_ms = 1000;
    const pt_conf_node *qt = pt_conf_get(node, "queue_timeout");
    if (qt && !pt_conf_duration_ms(ctx, qt, &c->queue_timeout_ms)) ok = false;
    else if (qt && (c->queue_timeout_ms == 0 || c->queue_timeout_ms > 600000)) {
        pt_conf_error(ctx, qt, "concurrency_limit: 'queue_timeout' must be between 1ms and 10m");
        ok = false;
    }
    c->recheck_ms = DEFAULT_RECHECK_MS;
    const pt_conf_node *rc = pt_conf_get(node, "recheck");
    if (rc && !pt_conf_duration_ms(ctx, rc, &c->recheck_ms)) ok = false;
    else if (rc && (c->recheck_ms == 0 || c->recheck_ms > 60000)) {
        pt_conf_error(ctx, rc, "concurrency_limit: 'recheck' must be between 1ms and 60s");
        ok = false;
    }
    if (!pt_plugin_key_read(ctx, pt_conf_get(node, "key"), "concurrency_limit", PT_PLUGIN_KEY_ROUTE, &c->key))
        ok = false;
    const char *zone = pt_conf_scope(ctx);
    const pt_conf_node *z = pt_conf_get(node, "zone");
    if (z) {
        char *s = NULL;
        if (!pt_conf_string(ctx, z, &s)) ok = false;
        else zone = pt_arena_printf(ctx->arena, "zone:%s", s);
    }
    if (!ok) return NULL;
    c->max = (uint32_t)max;
    c->queue = (uint32_t)queue;
    /* max and queue are not in the key: the counts of requests in flight
     * are facts, kept across a reload that changes the limits. */
    char *sk = pt_arena_printf(ctx->arena, "concurrency_limit|%s|%s|%lld", zone, c->key.spec, (long long)max_keys);
    c->table = pt_conf_shared(ctx, node, pt_str_c(sk), cl_table_bytes((uint64_t)max_keys), cl_table_init);
    if (!c->table) return NULL;
    c->decisions = pt_conf_metric(ctx, node, &decisions_desc, (const char *const[]){zone});
    return c;
}

/* ------------------------------------------------------------ the request */

static void reject(pt_txn *txn, const cl_conf *c, const char *why)
{
    char detail[160];
    snprintf(detail, sizeof(detail), "%s (at most %u requests in flight%s)", why, c->max,
             c->queue ? ", and the waiting queue is full or timed out" : "");
    pt_txn_respond_problem(txn, 503, detail);
    pt_txn_respond_header(txn, PT_STR_LIT("Retry-After"), PT_STR_LIT("1"));
}

static void waiter_timed_out(struct pt_loop *loop, pt_timer *t)
{
    cl_state *st = t->data;
    unlink_waiter(st);
    atomic_fetch_sub_explicit(st->slot, ONE_WAITING, memory_order_acq_rel);
    pt_metric_add(st->conf->decisions, D_TIMED_OUT, 1);
    reject(st->txn, st->conf, "too many requests in flight");
    pt_txn_resume(st->txn, PT_SIDE_REQUEST, PT_PLUGIN_RESPOND);
}

/* The request is over, or its wait was dropped: give back what it holds. */
static void release(cl_state *st)
{
    if (st->queued) {
        unlink_waiter(st);
        atomic_fetch_sub_explicit(st->slot, ONE_WAITING, memory_order_acq_rel);
    }
    if (!st->acquired) return;
    st->acquired = false;
    uint64_t s = atomic_fetch_sub_explicit(st->slot, 1, memory_order_acq_rel) - 1;
    if (WAITING(s) == 0) return;
    serve_waiters(st->w);
    if (WAITING(atomic_load_explicit(st->slot, memory_order_relaxed)) > 0) kick_others(st->w);
}

static void release_cleanup(void *data) { release(data); }

static pt_plugin_result cl_on_request_headers(pt_txn *txn, const void *conf, void *state)
{
    const cl_conf *c = conf;
    cl_state *st = state;
    /* after the authentication plugins: a request without credentials gets
     * its 401 and uses no slot */
    if (c->key.uses_consumer || pt_txn_auth_started(txn)) {
        pt_plugin_result r = pt_txn_auth_settle(txn);
        if (r != PT_PLUGIN_CONTINUE) return r;
    }
    char buf[512];
    pt_str key = pt_plugin_key_build(txn, &c->key, buf, sizeof(buf));
    _Atomic uint64_t *slot = cl_slot_for(c->table, pt_plugin_siphash13(c->table->k0, c->table->k1, key.p, key.n));
    if (!slot) return PT_PLUGIN_CONTINUE; /* every slot of the bucket in use: uncounted (max_keys, docs) */
    st->conf = c;
    st->slot = slot;
    st->txn = txn;
    st->w = pt_txn_worker_state(txn, &pt_plugin_concurrency_limit);
    if (!st->w) return PT_PLUGIN_CONTINUE; /* no worker (unit tests): nothing to count with */
    pt_arena_on_cleanup(pt_txn_arena(txn), release_cleanup, st);
    /* a slot, else a place in the queue if it has room, else 503 */
    uint64_t s = atomic_load_explicit(slot, memory_order_relaxed);
    for (;;) {
        if (INFLIGHT(s) < c->max) {
            if (atomic_compare_exchange_weak_explicit(slot, &s, s + 1, memory_order_acq_rel, memory_order_relaxed)) {
                st->acquired = true;
                pt_metric_add(c->decisions, D_ADMITTED, 1);
                return PT_PLUGIN_CONTINUE;
            }
            continue;
        }
        if (WAITING(s) >= c->queue) {
            pt_metric_add(c->decisions, D_REJECTED, 1);
            reject(txn, c, "too many requests in flight");
            return PT_PLUGIN_RESPOND;
        }
        if (atomic_compare_exchange_weak_explicit(slot, &s, s + ONE_WAITING, memory_order_acq_rel,
                                                  memory_order_relaxed))
            break;
    }
    cl_worker *w = st->w;
    atomic_store_explicit(&w->has_waiters, true, memory_order_relaxed);
    st->queued = true;
    st->prev = w->tail;
    if (w->tail) w->tail->next = st;
    else w->head = st;
    w->tail = st;
    pt_timer_start(w->loop, &st->timeout, c->queue_timeout_ms, waiter_timed_out, st);
    if (!w->poll_ms || c->recheck_ms < w->poll_ms) {
        w->poll_ms = c->recheck_ms;
        if (pt_timer_active(&w->poll)) pt_timer_stop(w->loop, &w->poll);
    }
    if (!pt_timer_active(&w->poll)) pt_timer_start(w->loop, &w->poll, w->poll_ms, poll_fired, w);
    return PT_PLUGIN_PAUSE;
}

static void cl_pause_cancelled(pt_txn *txn, const void *conf, void *state, pt_side side)
{
    cl_state *st = state;
    if (st->queued) release(st);
}

static void cl_on_log(pt_txn *txn, const void *conf, void *state) { release(state); }

const pt_plugin_type pt_plugin_concurrency_limit = {
    .name = "concurrency_limit",
    .configure = cl_configure,
    .worker_init = cl_worker_init,
    .worker_fini = cl_worker_fini,
    .state_size = sizeof(cl_state),
    .on_request_headers = cl_on_request_headers,
    .on_pause_cancelled = cl_pause_cancelled,
    .on_log = cl_on_log,
};
