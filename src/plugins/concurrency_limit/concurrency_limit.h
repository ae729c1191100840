/* concurrency_limit.h — private: the concurrency_limit plugin.
 *
 *   plugins:
 *     - concurrency_limit:
 *         max: 100             # requests in flight per key, in the process
 *         key: route           # route (default), consumer, client_address, path, header:NAME, or a list
 *         queue: 0             # requests that may wait for a slot, per key
 *         queue_timeout: 1s    # then 503
 *         max_keys: 10000      # distinct keys in flight at once (16 bytes each)
 *         zone: NAME           # share the counts with instances of the same zone
 *         recheck: 20ms        # waiters re-check this often, besides being woken
 *
 * A request takes a slot when it reaches the plugin and gives it back when
 * it is over (response sent, or aborted). Over `max`, it waits in the queue
 * (up to `queue` per key, at most `queue_timeout`) or gets 503
 * problem+json. Counts are shared by all workers (one 64-bit word per key:
 * in flight and waiting, updated with compare-and-swap); a slot freed on
 * one worker wakes waiters on the others (a post to their loops, plus a
 * re-check every `recheck` while anything waits). Waiters of one worker are served
 * in arrival order; across workers the order is not strict. */
#ifndef PT_PLUGINS_CONCURRENCY_LIMIT_H
#define PT_PLUGINS_CONCURRENCY_LIMIT_H

#include <stdatomic.h>

#include "plugin/plugin.h"
#include "plugins/plugin_util.h"

#define CL_WAYS 4

typedef struct {
    _Atomic uint64_t tag;
    _Atomic uint64_t state; /* waiting << 32 | in flight */
} cl_slot;

typedef struct {
    _Alignas(64) cl_slot s[CL_WAYS];
} cl_bucket;

typedef struct {
    uint64_t k0, k1, nbuckets;
    uint64_t pad[5];
    cl_bucket b[];
} cl_table;

typedef struct {
    pt_plugin_key key;
    uint32_t max;
    uint32_t queue;
    uint64_t queue_timeout_ms;
    uint64_t recheck_ms;  /* waiters re-check this often (safety net under the cross-worker wake-ups) */
    cl_table *table;
    pt_metric_series *decisions;
} cl_conf;

struct cl_worker;

/* Per-request state (zeroed, in the request arena). */
typedef struct cl_state {
    const cl_conf *conf;
    _Atomic uint64_t *slot; /* counted here while acquired or queued */
    bool acquired, queued;
    pt_txn *txn;
    struct cl_worker *w;
    pt_timer timeout;
    struct cl_state *prev, *next; /* the worker's waiters, in arrival order */
} cl_state;

/* Table helpers, exposed for unit tests. */
size_t cl_table_bytes(uint64_t max_keys);
void cl_table_init(void *mem, size_t size);
/* The counting word of key h (claiming a free slot), or NULL when its
 * bucket is full of keys in use. */
_Atomic uint64_t *cl_slot_for(cl_table *t, uint64_t h);
/* Takes a slot if fewer than max are in flight. */
bool cl_try_acquire(_Atomic uint64_t *st, uint32_t max);

extern const pt_plugin_type pt_plugin_concurrency_limit;

#endif
