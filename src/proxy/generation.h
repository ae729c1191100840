/* generation.h — an immutable, reference-counted configuration generation:
 * the validated pt_config plus everything built from it once (the router,
 * one flattened plugin pipeline per route, codec limits). Workers hold a
 * reference for as long as any of their requests use it; SIGHUP builds a new
 * generation and swaps it in atomically (server.c); the old one is freed when
 * its last request finishes. */
#ifndef PT_PROXY_GENERATION_H
#define PT_PROXY_GENERATION_H

#include <stdatomic.h>

#include "config/config.h"
#include "http/h1.h"
#include "router/router.h"

/* The ordered plugin instances a request runs through: global, then route. */
typedef struct {
    const pt_plugin_instance **v;
    size_t n;
    size_t state_size; /* sum of the plugins' per-request state sizes (aligned) */
    size_t *state_off; /* offset of each plugin's state in the state block */
    bool has_request_body;  /* some plugin has on_request_body */
    bool has_response_body; /* some plugin has on_response_body */
} pt_pipeline;

/* One upstream's retry budget counters, shared by every worker of the
 * process for this generation (proxy/txn_retry.c). */
typedef struct {
    atomic_long active;  /* requests with an upstream attempt started and not finished */
    atomic_long retries; /* retries in flight (decided, attempt not over) */
} pt_retry_counters;

typedef struct pt_generation {
    atomic_int refs;
    uint64_t id;
    pt_config *cfg;
    pt_router *router;
    pt_pipeline global;       /* used when no route matched (errors) */
    pt_pipeline *route_pipes; /* [cfg->nroutes] */
    pt_h1_limits h1_limits;
    struct pt_tls_server **tls; /* [cfg->nlisteners]; NULL entries for plain listeners */
    struct ssl_ctx_st **up_tls; /* [cfg->nupstreams] SSL_CTX for https upstreams, else NULL */
    pt_retry_counters *retry_counts; /* [cfg->nupstreams] */
} pt_generation;

/* Builds a generation from `cfg` (ownership moves to the generation on
 * success; on failure cfg is freed and errors are filled). refs starts at 1. */
pt_generation *pt_generation_build(pt_config *cfg, pt_errors *errors);
void pt_generation_ref(pt_generation *g);
void pt_generation_unref(pt_generation *g);

#endif
