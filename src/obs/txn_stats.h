/* txn_stats.h — what is known about a finished (or finishing) request: the
 * one record the access log, the gateway metrics and plugins' log phase
 * (pt_txn_get_stats, plugin/plugin.h) read. Plain data, filled by the
 * transaction (proxy/txn.c). */
#ifndef PT_OBS_TXN_STATS_H
#define PT_OBS_TXN_STATS_H

#include "config/config.h"

/* Statistics of a finished (or finishing) request, for the log phase. */
typedef struct {
    int status;            /* what the client got: the status sent, 502/504 when an upstream
                              failure was answered, 499 when the client left first */
    bool aborted;          /* the response was cut after its head (client saw a broken response) */
    bool upstream_failed;  /* the upstream exchange failed (connect, timeout, invalid or cut response) */
    uint64_t bytes_in;     /* request bytes received (head, body, trailers) */
    uint64_t bytes_out;    /* response bytes the codec wrote for this request */
    uint64_t total_us;     /* from the first byte of the request head to now */
    int64_t upstream_us;   /* first upstream attempt to the end of the upstream response, -1 none */
    int64_t ttfb_us;       /* request start to the upstream's response head, -1 none */
    int attempts;          /* upstream connection attempts (retries included) */
    pt_str target;         /* the last upstream target tried ("10.0.0.1:8080"), empty if none */
    int target_index;      /* its position in the route's upstream targets, -1 if none */
    const pt_route_conf *route; /* NULL when no route matched */
    const char *responder; /* the plugin that answered the request itself (its name; "auth" for the
                              401 the core sends when authentication found no credential), NULL
                              when the upstream or the core (404, 502...) answered */
    pt_method method;
    pt_str trace_id;       /* the request's W3C trace id (32 lowercase hex digits; docs/observability.md
                              "Tracing"), empty when tracing is off */
} pt_txn_stats;

#endif
