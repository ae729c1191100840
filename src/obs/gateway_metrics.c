/* gateway_metrics.c — see gateway_metrics.h and docs/metrics.md. */
#include "obs/gateway_metrics.h"
#include "obs/trace.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/version.h"
#include "server/worker.h"

/* 0.5 ms .. 30 s: sub-millisecond answers of a local upstream up to the
 * default upstream read timeout's order of magnitude. */
const uint64_t pt_gw_duration_buckets_us[] = {500,    1000,   2500,    5000,    10000,   25000,    50000,   100000,
                                              250000, 500000, 1000000, 2500000, 5000000, 10000000, 30000000};
const size_t pt_gw_duration_nbuckets = PT_ARRAY_LEN(pt_gw_duration_buckets_us);

/* Dim orders: the method dim follows pt_method (GET = 1 ... CONNECT = 9)
 * shifted by one, OTHER last. */
static const char *const METHODS[] = {"GET",     "HEAD",  "POST",    "PUT",   "DELETE",
                                      "PATCH",   "OPTIONS", "TRACE", "CONNECT", "OTHER", NULL};
#define NMETHODS 10
static const char *const CLASSES[] = {"1xx", "2xx", "3xx", "4xx", "5xx", NULL};
#define NCLASSES 5
static const pt_metric_dim REQUEST_DIMS[] = {{"method", METHODS}, {"status_class", CLASSES}};
/* pt_retry_reason order */
static const char *const REASONS[] = {"connect_failure", "reset", "timeout", "status", "stale_connection", NULL};
static const pt_metric_dim RETRY_DIMS[] = {{"reason", REASONS}};

static const char *const L_ROUTE[] = {"route", NULL};
static const char *const L_ROUTE_PLUGIN[] = {"route", "plugin", NULL};
static const pt_metric_dim CLASS_DIMS[] = {{"status_class", CLASSES}};
static const char *const L_UPSTREAM[] = {"upstream", NULL};
static const char *const L_UPSTREAM_TARGET[] = {"upstream", "target", NULL};
static const char *const L_LISTENER[] = {"listener", NULL};
static const char *const L_RESULT[] = {"result", NULL};
static const char *const L_VERSION[] = {"version", NULL};
static const char *const L_LOG[] = {"log", NULL};
static const char *const L_DIRECTION[] = {"direction", NULL};

#define ROUTE_MAX_SERIES 100000 /* bounded by the configuration; this only stops a runaway */

enum {
    F_REQUESTS,
    F_DURATION,
    F_UPSTREAM_DURATION,
    F_BYTES_IN,
    F_BYTES_OUT,
    F_UP_ATTEMPTS,
    F_UP_ERRORS,
    F_UP_RETRIES,
    F_PLUGIN_RESPONSES,
    F_UP_RETRY_BUDGET,
    F_UP_EJECTED,
    F_UP_EJECTIONS,
    F_UP_BREAKER,
    F_UP_CHECK_HEALTHY,
    F_OPEN_CONNS,
    F_CONNS,
    F_CONNS_REJECTED,
    F_H2_OPEN_STREAMS,
    F_H2_STREAMS,
    F_OPEN_TUNNELS,
    F_STREAM_BUF_BYTES,
    F_STREAM_BUFS,
    F_SPLICED_BYTES,
    F_CONFIG_GENERATION,
    F_CONFIG_RELOADS,
    F_BUILD_INFO,
    F_LOG_SAMPLED_OUT,
    F_LOG_DROPPED,
    F_ERRLOG_SUPPRESSED,
    F__COUNT
};

static const pt_metric_desc DESCS[F__COUNT] = {
    [F_REQUESTS] = {.name = "portico_requests_total",
                    .help = "Requests finished, by route (\"\" when no route matched), method and status class.",
                    .type = PT_METRIC_COUNTER, .labels = L_ROUTE, .dims = REQUEST_DIMS, .ndims = 2,
                    .max_series = ROUTE_MAX_SERIES},
    [F_PLUGIN_RESPONSES] = {.name = "portico_plugin_responses_total",
                            .help = "Requests a plugin answered itself (rate limits, authentication, direct "
                                    "responses...), by route, plugin (\"auth\": the 401 sent when authentication "
                                    "found no credential) and status class.",
                            .type = PT_METRIC_COUNTER, .labels = L_ROUTE_PLUGIN, .dims = CLASS_DIMS, .ndims = 1,
                            .max_series = ROUTE_MAX_SERIES},
    [F_DURATION] = {.name = "portico_request_duration_seconds",
                    .help = "Time from the first byte of the request head to the end of the request, by route.",
                    .type = PT_METRIC_HISTOGRAM, .labels = L_ROUTE, .buckets = pt_gw_duration_buckets_us,
                    .nbuckets = PT_ARRAY_LEN(pt_gw_duration_buckets_us), .unit_decimals = 6,
                    .max_series = ROUTE_MAX_SERIES},
    [F_UPSTREAM_DURATION] = {.name = "portico_upstream_duration_seconds",
                             .help = "Time from the first upstream attempt to the end of the upstream response, "
                                     "by route (requests that reached no upstream are not observed).",
                             .type = PT_METRIC_HISTOGRAM, .labels = L_ROUTE, .buckets = pt_gw_duration_buckets_us,
                             .nbuckets = PT_ARRAY_LEN(pt_gw_duration_buckets_us), .unit_decimals = 6,
                             .max_series = ROUTE_MAX_SERIES},
    [F_BYTES_IN] = {.name = "portico_request_bytes_total",
                    .help = "Bytes received from clients (request heads, bodies, trailers), by route.",
                    .type = PT_METRIC_COUNTER, .labels = L_ROUTE, .max_series = ROUTE_MAX_SERIES},
    [F_BYTES_OUT] = {.name = "portico_response_bytes_total",
                     .help = "Bytes written to clients for responses (framing included), by route.",
                     .type = PT_METRIC_COUNTER, .labels = L_ROUTE, .max_series = ROUTE_MAX_SERIES},
    [F_UP_ATTEMPTS] = {.name = "portico_upstream_attempts_total",
                       .help = "Upstream connection attempts (retries included), by upstream and the target a "
                               "request tried last.",
                       .type = PT_METRIC_COUNTER, .labels = L_UPSTREAM_TARGET, .max_series = ROUTE_MAX_SERIES},
    [F_UP_ERRORS] = {.name = "portico_upstream_errors_total",
                     .help = "Requests whose last upstream attempt failed (answered 502/504 by Portico, or the "
                             "response was cut), by upstream and target.",
                     .type = PT_METRIC_COUNTER, .labels = L_UPSTREAM_TARGET, .max_series = ROUTE_MAX_SERIES},
    [F_UP_RETRIES] = {.name = "portico_upstream_retries_total",
                      .help = "Upstream attempts after a failed one, by upstream and the failure retried "
                              "(connect_failure, reset, timeout, status, stale_connection).",
                      .type = PT_METRIC_COUNTER, .labels = L_UPSTREAM, .dims = RETRY_DIMS, .ndims = 1,
                      .max_series = ROUTE_MAX_SERIES},
    [F_UP_RETRY_BUDGET] = {.name = "portico_upstream_retry_budget_exhausted_total",
                           .help = "Retries refused because the upstream's retry budget was spent (the failure "
                                   "went to the client), by upstream.",
                           .type = PT_METRIC_COUNTER, .labels = L_UPSTREAM, .max_series = ROUTE_MAX_SERIES},
    [F_UP_EJECTED] = {.name = "portico_upstream_target_ejected",
                      .help = "1 while passive outlier detection keeps the target out of rotation, else 0, by "
                              "upstream and target (upstreams with an outlier block).",
                      .type = PT_METRIC_GAUGE, .labels = L_UPSTREAM_TARGET, .max_series = ROUTE_MAX_SERIES},
    [F_UP_EJECTIONS] = {.name = "portico_upstream_target_ejections_total",
                        .help = "Times outlier detection ejected the target, by upstream and target.",
                        .type = PT_METRIC_COUNTER, .labels = L_UPSTREAM_TARGET, .max_series = ROUTE_MAX_SERIES},
    [F_UP_BREAKER] = {.name = "portico_upstream_circuit_state",
                      .help = "Circuit breaker state of the upstream: 0 closed, 1 open, 2 half-open "
                              "(upstreams with a circuit_breaker block).",
                      .type = PT_METRIC_GAUGE, .labels = L_UPSTREAM, .max_series = ROUTE_MAX_SERIES},
    [F_UP_CHECK_HEALTHY] = {.name = "portico_upstream_target_healthy",
                            .help = "Verdict of the active health checks: 1 healthy, 0 unhealthy, by upstream and "
                                    "target (upstreams with a health_check block).",
                            .type = PT_METRIC_GAUGE, .labels = L_UPSTREAM_TARGET, .max_series = ROUTE_MAX_SERIES},
    [F_OPEN_CONNS] = {.name = "portico_open_connections",
                      .help = "Client connections open now (HTTP/1 and HTTP/2), by listener.",
                      .type = PT_METRIC_GAUGE, .labels = L_LISTENER},
    [F_CONNS] = {.name = "portico_connections_total", .help = "Client connections accepted, by listener.",
                 .type = PT_METRIC_COUNTER, .labels = L_LISTENER},
    [F_CONNS_REJECTED] = {.name = "portico_connections_rejected_total",
                          .help = "Client connections refused by limits.max_connections[_per_client], by listener.",
                          .type = PT_METRIC_COUNTER, .labels = L_LISTENER},
    [F_H2_OPEN_STREAMS] = {.name = "portico_http2_open_streams",
                           .help = "HTTP/2 streams open now on client connections, by listener.",
                           .type = PT_METRIC_GAUGE, .labels = L_LISTENER},
    [F_H2_STREAMS] = {.name = "portico_http2_streams_total",
                      .help = "HTTP/2 streams opened by clients, by listener.", .type = PT_METRIC_COUNTER,
                      .labels = L_LISTENER},
    [F_OPEN_TUNNELS] = {.name = "portico_open_tunnels",
                        .help = "Tunnels (WebSocket, other HTTP/1.1 upgrades) open now.",
                        .type = PT_METRIC_GAUGE},
    [F_STREAM_BUF_BYTES] = {.name = "portico_stream_buffer_bytes",
                            .help = "Bytes of large stream buffers (limits.stream_buffer) held by streaming "
                                    "bodies now, sampled every 500 ms per worker.",
                            .type = PT_METRIC_GAUGE},
    [F_STREAM_BUFS] = {.name = "portico_stream_buffers_total",
                       .help = "Large stream buffers taken by streaming bodies (a read that filled its "
                               "standard 16 KiB block), sampled every 500 ms per worker.",
                       .type = PT_METRIC_COUNTER},
    [F_SPLICED_BYTES] = {.name = "portico_spliced_bytes_total",
                         .help = "Body bytes moved between plain sockets with splice(2) (limits.splice), by "
                                 "direction (request: client to upstream, response: upstream to client).",
                         .type = PT_METRIC_COUNTER, .labels = L_DIRECTION},
    [F_CONFIG_GENERATION] = {.name = "portico_config_generation",
                             .help = "Id of the configuration generation serving new requests.",
                             .type = PT_METRIC_GAUGE},
    [F_CONFIG_RELOADS] = {.name = "portico_config_reloads_total",
                          .help = "Configuration reloads (SIGHUP) by result: ok, or error (the running "
                                  "configuration kept serving).",
                          .type = PT_METRIC_COUNTER, .labels = L_RESULT},
    [F_BUILD_INFO] = {.name = "portico_build_info", .help = "Always 1; the version is in the label.",
                      .type = PT_METRIC_GAUGE, .labels = L_VERSION},
    [F_LOG_SAMPLED_OUT] = {.name = "portico_access_log_sampled_out_total",
                           .help = "Access-log lines not written because access_log.sample left them out.",
                           .type = PT_METRIC_COUNTER},
    [F_LOG_DROPPED] = {.name = "portico_log_dropped_lines_total",
                       .help = "Log lines lost because the writer fell behind (pending buffer full) or its "
                               "destination failed, by log (access, error); updated every 500 ms.",
                       .type = PT_METRIC_COUNTER, .labels = L_LOG},
    [F_ERRLOG_SUPPRESSED] = {.name = "portico_error_log_suppressed_total",
                             .help = "Error-log lines held back by the per-message-kind rate limit; "
                                     "updated every 500 ms.",
                             .type = PT_METRIC_COUNTER},
};

typedef struct {
    pt_metric_series *open, *total, *rejected, *h2_open, *h2_total;
} listener_metrics;

struct pt_gw_metrics {
    pt_metrics *reg;
    pt_metric_family *fam[F__COUNT];
    pt_route_metrics unrouted; /* route "" */
    listener_metrics *listeners;
    size_t nlisteners;
    pt_metric_series *generation, *reloads_ok, *reloads_error;
    pt_metric_series *open_tunnels;
    pt_metric_series *stream_buf_bytes, *stream_bufs;
    pt_metric_series *spliced[2]; /* request, response */
    pt_metric_series *log_sampled_out, *access_dropped, *error_dropped, *error_suppressed;
};

pt_gw_metrics *pt_gw_metrics_new(pt_metrics *reg, const pt_config *cfg)
{
    pt_gw_metrics *gm = pt_xcalloc(1, sizeof(*gm));
    gm->reg = reg;
    for (int i = 0; i < F__COUNT; i++) {
        char err[256];
        gm->fam[i] = pt_metrics_family(reg, &DESCS[i], err, sizeof(err));
        if (!gm->fam[i]) pt_panic(__FILE__, __LINE__, err);
    }
    const char *none[] = {""};
    gm->unrouted = (pt_route_metrics){
        .requests = pt_metrics_series(gm->fam[F_REQUESTS], none, NULL),
        .duration = pt_metrics_series(gm->fam[F_DURATION], none, NULL),
        .bytes_in = pt_metrics_series(gm->fam[F_BYTES_IN], none, NULL),
        .bytes_out = pt_metrics_series(gm->fam[F_BYTES_OUT], none, NULL),
    };
    gm->nlisteners = cfg->nlisteners;
    gm->listeners = pt_xcalloc(cfg->nlisteners ? cfg->nlisteners : 1, sizeof(*gm->listeners));
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const char *l[] = {cfg->listeners[i].addr.text};
        gm->listeners[i] = (listener_metrics){
            .open = pt_metrics_series(gm->fam[F_OPEN_CONNS], l, NULL),
            .total = pt_metrics_series(gm->fam[F_CONNS], l, NULL),
            .rejected = pt_metrics_series(gm->fam[F_CONNS_REJECTED], l, NULL),
            .h2_open = pt_metrics_series(gm->fam[F_H2_OPEN_STREAMS], l, NULL),
            .h2_total = pt_metrics_series(gm->fam[F_H2_STREAMS], l, NULL),
        };
    }
    gm->open_tunnels = pt_metrics_series(gm->fam[F_OPEN_TUNNELS], NULL, NULL);
    gm->stream_buf_bytes = pt_metrics_series(gm->fam[F_STREAM_BUF_BYTES], NULL, NULL);
    gm->stream_bufs = pt_metrics_series(gm->fam[F_STREAM_BUFS], NULL, NULL);
    gm->spliced[0] = pt_metrics_series(gm->fam[F_SPLICED_BYTES], (const char *[]){"request"}, NULL);
    gm->spliced[1] = pt_metrics_series(gm->fam[F_SPLICED_BYTES], (const char *[]){"response"}, NULL);
    gm->generation = pt_metrics_series(gm->fam[F_CONFIG_GENERATION], NULL, NULL);
    gm->reloads_ok = pt_metrics_series(gm->fam[F_CONFIG_RELOADS], (const char *[]){"ok"}, NULL);
    gm->reloads_error = pt_metrics_series(gm->fam[F_CONFIG_RELOADS], (const char *[]){"error"}, NULL);
    gm->log_sampled_out = pt_metrics_series(gm->fam[F_LOG_SAMPLED_OUT], NULL, NULL);
    gm->access_dropped = pt_metrics_series(gm->fam[F_LOG_DROPPED], (const char *[]){"access"}, NULL);
    gm->error_dropped = pt_metrics_series(gm->fam[F_LOG_DROPPED], (const char *[]){"error"}, NULL);
    gm->error_suppressed = pt_metrics_series(gm->fam[F_ERRLOG_SUPPRESSED], NULL, NULL);
    pt_metric_set(pt_metrics_series(gm->fam[F_BUILD_INFO], (const char *[]){PORTICO_VERSION}, NULL), 0, 1);
    pt_trace_metrics_init(reg);
    return gm;
}

void pt_gw_metrics_free(pt_gw_metrics *gm)
{
    if (!gm) return;
    free(gm->listeners);
    free(gm);
}

/* A series per distinct plugin name of the route's pipeline (global then
 * route plugins), and "auth". */
static void bind_responders(pt_gw_metrics *gm, pt_config *cfg, const pt_route_conf *r, pt_route_metrics *rm)
{
    pt_arena *a = cfg->arena;
    size_t cap = cfg->plugins.n + r->plugins.n + 1;
    rm->responders = pt_arena_calloc(a, cap * sizeof(*rm->responders));
    rm->responses = pt_arena_calloc(a, cap * sizeof(*rm->responses));
    for (size_t i = 0; i < cap; i++) {
        const char *name = i == cap - 1                 ? "auth"
                           : i < cfg->plugins.n ? cfg->plugins.v[i].name
                                                : r->plugins.v[i - cfg->plugins.n].name;
        bool seen = false;
        for (size_t j = 0; j < rm->nresponders && !seen; j++) seen = strcmp(rm->responders[j], name) == 0;
        if (seen) continue;
        rm->responders[rm->nresponders] = name;
        rm->responses[rm->nresponders++] = pt_metrics_series(gm->fam[F_PLUGIN_RESPONSES], (const char *[]){r->name, name}, a);
    }
}

void pt_gw_metrics_bind(pt_gw_metrics *gm, pt_config *cfg)
{
    pt_arena *a = cfg->arena;
    for (size_t i = 0; i < cfg->nroutes; i++) {
        pt_route_conf *r = &cfg->routes[i];
        const char *v[] = {r->name};
        pt_route_metrics *rm = pt_arena_calloc(a, sizeof(*rm));
        rm->requests = pt_metrics_series(gm->fam[F_REQUESTS], v, a);
        rm->duration = pt_metrics_series(gm->fam[F_DURATION], v, a);
        if (r->upstream) rm->upstream_duration = pt_metrics_series(gm->fam[F_UPSTREAM_DURATION], v, a);
        rm->bytes_in = pt_metrics_series(gm->fam[F_BYTES_IN], v, a);
        rm->bytes_out = pt_metrics_series(gm->fam[F_BYTES_OUT], v, a);
        bind_responders(gm, cfg, r, rm);
        r->metrics = rm;
    }
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        pt_upstream_conf *u = &cfg->upstreams[i];
        pt_upstream_metrics *um = pt_arena_calloc(a, sizeof(*um));
        size_t n = u->ntargets ? u->ntargets : 1;
        um->attempts = pt_arena_calloc(a, n * sizeof(*um->attempts));
        um->errors = pt_arena_calloc(a, n * sizeof(*um->errors));
        for (size_t t = 0; t < u->ntargets; t++) {
            const char *v[] = {u->name, u->targets[t].addr.text};
            um->attempts[t] = pt_metrics_series(gm->fam[F_UP_ATTEMPTS], v, a);
            um->errors[t] = pt_metrics_series(gm->fam[F_UP_ERRORS], v, a);
        }
        um->retries = pt_metrics_series(gm->fam[F_UP_RETRIES], (const char *[]){u->name}, a);
        um->budget_exhausted = pt_metrics_series(gm->fam[F_UP_RETRY_BUDGET], (const char *[]){u->name}, a);
        if (u->balance.outlier.enabled) {
            um->ejected = pt_arena_calloc(a, n * sizeof(*um->ejected));
            um->ejections = pt_arena_calloc(a, n * sizeof(*um->ejections));
            for (size_t t = 0; t < u->ntargets; t++) {
                const char *v[] = {u->name, u->targets[t].addr.text};
                um->ejected[t] = pt_metrics_series(gm->fam[F_UP_EJECTED], v, a);
                um->ejections[t] = pt_metrics_series(gm->fam[F_UP_EJECTIONS], v, a);
            }
        }
        if (u->balance.breaker.enabled)
            um->breaker_state = pt_metrics_series(gm->fam[F_UP_BREAKER], (const char *[]){u->name}, a);
        u->metrics = um;
    }
}

pt_metric_series *pt_gw_metrics_target_healthy(pt_gw_metrics *gm, const char *upstream, const char *target,
                                               pt_arena *owner)
{
    return gm ? pt_metrics_series(gm->fam[F_UP_CHECK_HEALTHY], (const char *[]){upstream, target}, owner) : NULL;
}

void pt_gw_metrics_generation(pt_gw_metrics *gm, uint64_t generation)
{
    pt_metric_set(gm->generation, 0, (int64_t)generation);
}

void pt_gw_metrics_reloaded(pt_gw_metrics *gm, bool ok) { pt_metric_add(ok ? gm->reloads_ok : gm->reloads_error, 0, 1); }

/* ------------------------------------------------------------- worker side */


void pt_metrics_request_done(struct pt_worker *w, const pt_txn_stats *s)
{
    pt_gw_metrics *gm = w->metrics;
    if (!gm) return;
    const pt_route_conf *r = s->route;
    const pt_route_metrics *rm = r ? r->metrics : &gm->unrouted;
    if (!rm) return;
    size_t method = s->method > PT_METHOD_OTHER && s->method < PT_METHOD__COUNT ? (size_t)s->method - 1 : NMETHODS - 1;
    int cls = s->status / 100;
    cls = cls < 1 ? 1 : cls > NCLASSES ? NCLASSES : cls;
    pt_metric_add(rm->requests, method * NCLASSES + (size_t)(cls - 1), 1);
    if (s->responder)
        for (size_t i = 0; i < rm->nresponders; i++)
            if (strcmp(rm->responders[i], s->responder) == 0) {
                pt_metric_add(rm->responses[i], (size_t)(cls - 1), 1);
                break;
            }
    pt_metric_observe(rm->duration, 0, s->total_us);
    if (s->upstream_us >= 0) pt_metric_observe(rm->upstream_duration, 0, (uint64_t)s->upstream_us);
    pt_metric_add(rm->bytes_in, 0, (int64_t)s->bytes_in);
    pt_metric_add(rm->bytes_out, 0, (int64_t)s->bytes_out);
    if (s->attempts <= 0 || !r || !r->upstream || !r->upstream->metrics) return;
    const pt_upstream_metrics *um = r->upstream->metrics;
    int t = s->target_index < (int)r->upstream->ntargets ? s->target_index : -1;
    if (t < 0) return;
    pt_metric_add(um->attempts[t], 0, s->attempts);
    /* The exchange failed for good (connect, timeout, invalid or cut
     * response; not the client leaving): counted on the last target. */
    if (s->upstream_failed) pt_metric_add(um->errors[t], 0, 1);
}

void pt_metrics_upstream_retry(struct pt_worker *w, const pt_upstream_conf *u, pt_retry_reason reason)
{
    if (w->metrics && u->metrics && reason < PT_RETRY_REASON__COUNT) pt_metric_add(u->metrics->retries, reason, 1);
}

void pt_metrics_retry_budget_exhausted(struct pt_worker *w, const pt_upstream_conf *u)
{
    if (w->metrics && u->metrics) pt_metric_add(u->metrics->budget_exhausted, 0, 1);
}

static const listener_metrics *listener_of(struct pt_worker *w, size_t l)
{
    pt_gw_metrics *gm = w->metrics;
    return gm && l < gm->nlisteners ? &gm->listeners[l] : NULL;
}

void pt_metrics_conn_opened(struct pt_worker *w, size_t listener)
{
    const listener_metrics *lm = listener_of(w, listener);
    if (!lm) return;
    pt_metric_add(lm->open, 0, 1);
    pt_metric_add(lm->total, 0, 1);
}

void pt_metrics_conn_closed(struct pt_worker *w, size_t listener)
{
    const listener_metrics *lm = listener_of(w, listener);
    if (lm) pt_metric_add(lm->open, 0, -1);
}

void pt_metrics_conn_rejected(struct pt_worker *w, size_t listener)
{
    const listener_metrics *lm = listener_of(w, listener);
    if (lm) pt_metric_add(lm->rejected, 0, 1);
}

void pt_metrics_h2_stream_opened(struct pt_worker *w, size_t listener)
{
    const listener_metrics *lm = listener_of(w, listener);
    if (!lm) return;
    pt_metric_add(lm->h2_open, 0, 1);
    pt_metric_add(lm->h2_total, 0, 1);
}

void pt_metrics_h2_stream_closed(struct pt_worker *w, size_t listener)
{
    const listener_metrics *lm = listener_of(w, listener);
    if (lm) pt_metric_add(lm->h2_open, 0, -1);
}

void pt_metrics_tunnel(struct pt_worker *w, bool opened)
{
    pt_gw_metrics *gm = w->metrics;
    if (gm) pt_metric_add(gm->open_tunnels, 0, opened ? 1 : -1);
}

void pt_metrics_stream_buffers(struct pt_worker *w, size_t bytes_held, uint64_t taken)
{
    /* what this worker thread reported so far: its shard gets the change */
    static __thread int64_t held_reported;
    static __thread uint64_t taken_reported;
    pt_gw_metrics *gm = w->metrics;
    if (!gm) return;
    pt_metric_add(gm->stream_buf_bytes, 0, (int64_t)bytes_held - held_reported);
    pt_metric_add(gm->stream_bufs, 0, (int64_t)(taken - taken_reported));
    held_reported = (int64_t)bytes_held;
    taken_reported = taken;
}

void pt_metrics_spliced(struct pt_worker *w, bool response, uint64_t bytes)
{
    pt_gw_metrics *gm = w->metrics;
    if (gm && bytes) pt_metric_add(gm->spliced[response], 0, (int64_t)bytes);
}

void pt_metrics_access_log_sampled_out(struct pt_worker *w)
{
    pt_gw_metrics *gm = w->metrics;
    if (gm) pt_metric_add(gm->log_sampled_out, 0, 1);
}

/* Adds to `s` what `now` grew since *reported (a counter restarted at a
 * reopen is taken from its new value). */
static void add_growth(pt_metric_series *s, uint64_t now, uint64_t *reported)
{
    if (now > *reported) pt_metric_add(s, 0, (int64_t)(now - *reported));
    *reported = now;
}

void pt_metrics_log_counters(struct pt_worker *w, uint64_t access_dropped, uint64_t error_dropped,
                             uint64_t error_suppressed)
{
    static uint64_t r_access, r_error, r_suppressed; /* worker 0 only */
    pt_gw_metrics *gm = w->metrics;
    if (!gm || w->id != 0) return;
    add_growth(gm->access_dropped, access_dropped, &r_access);
    add_growth(gm->error_dropped, error_dropped, &r_error);
    add_growth(gm->error_suppressed, error_suppressed, &r_suppressed);
}
