/* upstream.h — per-worker upstream state: balancers (smooth weighted
 * round-robin) and keep-alive connection pools.
 *
 * Round-robin state is per worker and per generation (no atomics on the
 * hot path); the other algorithms and target health read the process-wide
 * state of upstream/balance.h. Pools are per worker and keyed by target address, so pooled
 * connections survive a config reload when the target stays the same. */
#ifndef PT_UPSTREAM_UPSTREAM_H
#define PT_UPSTREAM_UPSTREAM_H

#include "config/config.h"
#include "tls/tls_client.h"

struct pt_uconn;
struct pt_worker;

typedef struct pt_pool pt_pool;

typedef struct {
    const pt_upstream_conf *conf;
    int64_t *current;  /* SWRR current weights, one per target */
    int64_t total;     /* sum of weights */
    pt_pool **pools;   /* one per target */
    struct pt_dns_entry **dns; /* per target: the worker's DNS entry of a host-name target (NULL for an
                                  IP literal); NULL when no target is a name (upstream/exchange.c) */
} pt_upstream_rt;

/* Takes / drops the worker's DNS cache entries of u's host-name targets
 * (with a worker generation; no-op without w->dns). */
void pt_upstream_dns_attach(struct pt_worker *w, pt_upstream_rt *u);
void pt_upstream_dns_detach(struct pt_worker *w, pt_upstream_rt *u);
/* The target a new connection to `t` opens: `t` itself, or, for a host-name
 * target with a cache entry `e` that has an address, a copy in *tmp with
 * the entry's next address (net/dns.h). *st records which (zeroed: t's
 * load-time address). */
const pt_target_conf *pt_upstream_connect_target(struct pt_worker *w, struct pt_dns_entry *e, const pt_target_conf *t,
                                                 pt_target_conf *tmp, pt_dns_stamp *st);

/* Smooth weighted round-robin (as in nginx's description of the algorithm:
 * every pick adds each weight to its current value, takes the largest, and
 * subtracts the total from the winner). Targets whose bit is set in
 * `exclude` (first 64 targets) are skipped; returns -1 if none left. */
int pt_upstream_pick(pt_upstream_rt *u, uint64_t exclude);

/* The pool for target `t` on worker w (created on first use), with one more
 * reference (a worker generation holds one per target). Pools are keyed by
 * address, TLS server name and the generation's TLS context of the upstream
 * (NULL for plain HTTP): a connection is only ever reused under the TLS
 * settings (verification, CA, client certificate) it was established with,
 * so two upstreams with different `tls` on one address never share, and a
 * reload starts TLS upstreams on fresh pools (plain pools carry over). */
pt_pool *pt_pool_for(struct pt_worker *w, const pt_target_conf *t, SSL_CTX *tls_ctx, const char *sni);
/* Drops a reference; the last one closes the pool's connections and frees
 * it (its generation is gone, so no exchange uses it any more). */
void pt_pool_unref(struct pt_worker *w, pt_pool *p);
/* An idle pooled connection, or NULL. */
struct pt_uconn *pt_pool_take(pt_pool *p);
/* Parks a healthy idle connection (closes it if the pool is full). */
void pt_pool_put(pt_pool *p, struct pt_uconn *c, uint32_t max_idle, uint64_t idle_timeout_ms);
/* Removes a connection from its pool's idle list (it closed while idle). */
void pt_pool_remove(pt_pool *p, struct pt_uconn *c);
/* The pool's TLS session slot (resumption of new TLS connections). */
pt_tls_session_slot *pt_pool_tls_session(pt_pool *p);
/* Closes every idle connection of the worker (shutdown). */
void pt_pools_close_all(struct pt_worker *w);
void pt_pools_free(struct pt_worker *w);

#endif
