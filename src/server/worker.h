/* worker.h — one worker thread: an event loop, its listening sockets
 * (SO_REUSEPORT: the kernel spreads connections across workers), its
 * current config generation, and its per-thread caches (request arenas,
 * upstream pools). Nothing here is shared between workers except the
 * generation objects (reference-counted, immutable). */
#ifndef PT_SERVER_WORKER_H
#define PT_SERVER_WORKER_H

#include <pthread.h>

#include "core/loop.h"
#include "proxy/generation.h"
#include "upstream/upstream.h"

struct pt_server;
struct pt_upstream_exchange_ops;

/* Per-worker state tied to one generation: balancer state per upstream. */
typedef struct pt_worker_gen {
    pt_generation *gen;       /* one reference held */
    pt_upstream_rt *upstreams; /* [gen->cfg->nupstreams] */
    uint32_t users;           /* requests of this worker using it */
    bool retired;             /* a newer generation is current */
} pt_worker_gen;

typedef struct pt_worker {
    int id;
    struct pt_server *server;
    struct pt_connlimit *connlimit; /* process-wide connection counters */
    pt_loop *loop;
    pthread_t thread;
    pt_worker_gen *wgen;      /* current */
    pt_io *listeners;         /* [nlisteners] */
    size_t nlisteners;
    bool draining;
    uint64_t drain_deadline;
    pt_timer drain_timer;
    pt_timer buf_trim_timer;  /* returns idle buffer blocks to the OS (core/buf.h) */
    /* client connections (downstream/conn.h): every open one, and the
     * closed ones waiting to be freed */
    struct pt_conn *conns;
    size_t nconns;
    struct pt_conn *dead_conns, *dead_conns_old;
    pt_defer dead_defer;
    /* caches */
    pt_arena **arena_cache;
    size_t narena_cache;
    struct pt_pool **pools;   /* small open hash by address, see upstream/pool.c */
    size_t npools, pools_cap;
    void **plugin_state;      /* [number of built-in plugin types]: their worker_init results */
    struct pt_dns *dns;       /* resolver + cache of upstream host names (net/dns.h); NULL in unit tests */
    /* replaces pt_exchange_open (tests); NULL in production */
    void *(*open_exchange)(struct pt_worker *w, pt_upstream_rt *u, int idx, SSL_CTX *tls_ctx,
                           const struct pt_upstream_exchange_ops **ops, bool *fresh);
    /* metrics: the gateway's families (NULL when no admin listener is
     * configured: nothing is counted) and this thread's shard */
    struct pt_gw_metrics *metrics;
    struct pt_metrics_shard *metrics_shard;
} pt_worker;

/* Takes a request arena from the worker cache (or a new one). */
pt_arena *pt_worker_arena_get(pt_worker *w);
/* Returns it (reset) to the cache. */
void pt_worker_arena_put(pt_worker *w, pt_arena *a);
struct pt_plugin_type;
/* Runs every plugin type's worker_init on the worker's thread (before it
 * serves) / worker_fini (after it stopped). */
void pt_worker_plugins_init(pt_worker *w);
void pt_worker_plugins_fini(pt_worker *w);
/* The worker_init result of `type` on this worker, NULL if none. */
void *pt_worker_plugin_state(pt_worker *w, const struct pt_plugin_type *type);
/* A worker's state for generation g (balancers, pool references); takes
 * the caller's reference on g. Freed when retired and unused. */
pt_worker_gen *pt_worker_gen_new(pt_worker *w, pt_generation *g);
void pt_worker_gen_free(pt_worker *w, pt_worker_gen *wg);
/* Current worker-generation for a new request; pins it until pt_worker_gen_release. */
pt_worker_gen *pt_worker_gen_acquire(pt_worker *w);
void pt_worker_gen_release(pt_worker *w, pt_worker_gen *wg);

#endif
