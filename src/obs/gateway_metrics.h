/* gateway_metrics.h — Portico's own metrics (every family is listed in
 * docs/metrics.md), built on the registry of obs/metrics.h.
 *
 * Who calls what:
 *   - server.c: pt_gw_metrics_new at startup (families, permanent series:
 *     build info, config generation, reload results, one series per
 *     listener); pt_gw_metrics_bind for every generation it adopts (first
 *     and reloaded), on the main thread, before the generation reaches a
 *     worker; pt_gw_metrics_reloaded after each SIGHUP.
 *   - the codecs (h1_server.c, h2_server.c): connection and HTTP/2 stream
 *     open/close, on the worker that owns them.
 *   - the txn: pt_metrics_tunnel when a tunnel opens and ends
 *     (txn_tunnel.c); pt_metrics_request_done once per request, from its finish,
 *     BEFORE it releases its worker generation (the route and upstream
 *     series live as long as that generation's configuration).
 * The worker functions do nothing when metrics are off (w->metrics NULL:
 * no admin listener configured) and take no lock when on: each worker
 * writes its own shard. */
#ifndef PT_OBS_GATEWAY_METRICS_H
#define PT_OBS_GATEWAY_METRICS_H

#include "config/config.h"
#include "obs/metrics.h"
#include "obs/txn_stats.h"

struct pt_worker;

typedef struct pt_gw_metrics pt_gw_metrics;

/* Per-route series (in the configuration arena), see pt_route_conf.metrics. */
typedef struct pt_route_metrics {
    pt_metric_series *requests;          /* dims: method x status_class */
    pt_metric_series *duration;          /* histogram, microseconds */
    pt_metric_series *upstream_duration; /* histogram, microseconds */
    pt_metric_series *bytes_in, *bytes_out;
    /* answers the route's plugins gave themselves: one series per distinct
     * plugin name of its pipeline, plus "auth" (dims: status_class) */
    const char **responders;
    pt_metric_series **responses;
    size_t nresponders;
} pt_route_metrics;

/* Per-upstream series (in the configuration arena), see pt_upstream_conf.metrics. */
typedef struct pt_upstream_metrics {
    pt_metric_series **attempts; /* [ntargets] */
    pt_metric_series **errors;   /* [ntargets] */
    pt_metric_series *retries;          /* dim: reason (pt_retry_reason) */
    pt_metric_series *budget_exhausted;
    /* load balancing and health (upstream/balance.c, breaker.c) */
    pt_metric_series **ejected;   /* [ntargets] gauge: 1 while outlier detection ejects the target */
    pt_metric_series **ejections; /* [ntargets] counter */
    pt_metric_series *breaker_state; /* gauge: 0 closed, 1 open, 2 half-open; NULL without a breaker */
} pt_upstream_metrics;

/* Why an upstream attempt was retried (the `reason` of portico_upstream_retries_total). */
typedef enum {
    PT_RETRY_REASON_CONNECT = 0, /* connect_failure */
    PT_RETRY_REASON_RESET,       /* reset */
    PT_RETRY_REASON_TIMEOUT,     /* timeout */
    PT_RETRY_REASON_STATUS,      /* status: a listed 5xx, read and discarded */
    PT_RETRY_REASON_STALE,       /* stale_connection: a pooled keep-alive connection closed under the request */
    PT_RETRY_REASON__COUNT
} pt_retry_reason;

/* Declares the families in `reg` and the permanent series (listeners of
 * `cfg`: they cannot change without a restart). */
pt_gw_metrics *pt_gw_metrics_new(pt_metrics *reg, const pt_config *cfg);
void pt_gw_metrics_free(pt_gw_metrics *gm);
/* Acquires the series of cfg's routes and upstreams (owned by cfg->arena:
 * a route or target that keeps its name across a reload keeps its
 * counters) and stores them in cfg->routes[].metrics and
 * cfg->upstreams[].metrics. Main thread, before publishing cfg. */
void pt_gw_metrics_bind(pt_gw_metrics *gm, pt_config *cfg);
/* The active health-check gauge of (upstream, target), held until `owner`
 * is freed (upstream/health_check.c; NULL when gm is NULL). Main thread. */
pt_metric_series *pt_gw_metrics_target_healthy(pt_gw_metrics *gm, const char *upstream, const char *target,
                                               pt_arena *owner);
/* The running configuration generation (portico_config_generation). */
void pt_gw_metrics_generation(pt_gw_metrics *gm, uint64_t generation);
/* One reload attempt, successful or refused (portico_config_reloads_total). */
void pt_gw_metrics_reloaded(pt_gw_metrics *gm, bool ok);

/* ---- worker side (the worker's own thread) ---- */

/* One request is over; `s` as for the log phase (pt_txn_stats()). */
void pt_metrics_request_done(struct pt_worker *w, const pt_txn_stats *s);
/* A client connection was accepted on / closed from listener `listener`
 * (an HTTP/1 connection handed to HTTP/2 stays one open connection). */
void pt_metrics_conn_opened(struct pt_worker *w, size_t listener);
void pt_metrics_conn_closed(struct pt_worker *w, size_t listener);
/* A connection refused by limits.max_connections[_per_client]. */
void pt_metrics_conn_rejected(struct pt_worker *w, size_t listener);
/* An HTTP/2 stream opened by the client / freed. */
void pt_metrics_h2_stream_opened(struct pt_worker *w, size_t listener);
void pt_metrics_h2_stream_closed(struct pt_worker *w, size_t listener);

/* One retry of an attempt on upstream u (counted when it is decided). */
void pt_metrics_upstream_retry(struct pt_worker *w, const pt_upstream_conf *u, pt_retry_reason reason);
/* A retry refused by u's retry budget. */
void pt_metrics_retry_budget_exhausted(struct pt_worker *w, const pt_upstream_conf *u);

/* A tunnel started (opened true) or ended (portico_open_tunnels). */
void pt_metrics_tunnel(struct pt_worker *w, bool opened);
/* Body bytes moved with splice(2) (portico_spliced_bytes_total), request or
 * response direction. */
void pt_metrics_spliced(struct pt_worker *w, bool response, uint64_t bytes);

/* This worker's large stream buffers (core/buf.h): bytes held now and
 * blocks taken since it started (the change since the last call goes to
 * the worker's shard). Call on the worker's thread. */
/* One access-log line left out by sampling (worker thread). */
void pt_metrics_access_log_sampled_out(struct pt_worker *w);
/* The log writers' running totals (lines dropped by the access and error
 * logs, error lines suppressed by rate limiting); worker 0's periodic tick
 * reports them, other workers' calls are ignored. */
void pt_metrics_log_counters(struct pt_worker *w, uint64_t access_dropped, uint64_t error_dropped,
                             uint64_t error_suppressed);
void pt_metrics_stream_buffers(struct pt_worker *w, size_t bytes_held, uint64_t taken);

/* The buckets of both duration histograms, in microseconds (docs/metrics.md). */
extern const uint64_t pt_gw_duration_buckets_us[];
extern const size_t pt_gw_duration_nbuckets;

#endif
