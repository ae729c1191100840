/* generation.c — see generation.h. */
#include "proxy/generation.h"

#include <stdlib.h>

#include "plugin/plugin.h"
#include "tls/tls_client.h"
#include "tls/tls_server.h"
#include "upstream/balance.h"

static atomic_uint_fast64_t next_generation_id = 1;

/* Flattens global + route plugins into one array with state offsets. */
static void build_pipeline(pt_arena *a, pt_pipeline *p, const pt_plugin_list *global, const pt_plugin_list *route)
{
    size_t n = global->n + (route ? route->n : 0);
    p->n = n;
    p->v = pt_arena_calloc(a, (n ? n : 1) * sizeof(*p->v));
    p->state_off = pt_arena_calloc(a, (n ? n : 1) * sizeof(*p->state_off));
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const pt_plugin_instance *pi = i < global->n ? &global->v[i] : &route->v[i - global->n];
        p->v[i] = pi;
        p->state_off[i] = off;
        p->has_request_body |= pi->type->on_request_body != NULL;
        p->has_response_body |= pi->type->on_response_body != NULL;
        off += (pi->type->state_size + 15) & ~(size_t)15;
    }
    p->state_size = off;
}

pt_generation *pt_generation_build(pt_config *cfg, pt_errors *errors)
{
    pt_conf_ctx ctx = {.file = cfg->file, .arena = cfg->arena, .errors = errors, .cfg = cfg};
    pt_router *router = pt_router_build(cfg->routes, cfg->nroutes, &ctx);
    if (!router) {
        pt_config_free(cfg);
        return NULL;
    }
    pt_generation *g = pt_xcalloc(1, sizeof(*g));
    atomic_init(&g->refs, 1);
    g->id = atomic_fetch_add(&next_generation_id, 1);
    g->cfg = cfg;
    g->router = router;
    pt_lb_attach(cfg); /* shared target health, Maglev tables (released with cfg) */
    build_pipeline(cfg->arena, &g->global, &cfg->plugins, NULL);
    g->route_pipes = pt_arena_calloc(cfg->arena, (cfg->nroutes ? cfg->nroutes : 1) * sizeof(pt_pipeline));
    for (size_t i = 0; i < cfg->nroutes; i++)
        build_pipeline(cfg->arena, &g->route_pipes[i], &cfg->plugins, &cfg->routes[i].plugins);
    g->h1_limits.max_request_line = cfg->limits.max_request_line;
    g->h1_limits.max_header_size = cfg->limits.max_header_size;
    g->h1_limits.max_headers = cfg->limits.max_headers;
    /* TLS: certificates and keys are read now, so a reload re-reads them. */
    g->tls = pt_xcalloc(cfg->nlisteners ? cfg->nlisteners : 1, sizeof(*g->tls));
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        if (!cfg->listeners[i].tls.enabled) continue;
        g->tls[i] = pt_tls_server_new(&cfg->listeners[i].tls, cfg->listeners[i].http2, cfg->file, errors);
        if (!g->tls[i]) {
            pt_generation_unref(g);
            return NULL;
        }
    }
    g->retry_counts = pt_xcalloc(cfg->nupstreams ? cfg->nupstreams : 1, sizeof(*g->retry_counts));
    g->up_tls = pt_xcalloc(cfg->nupstreams ? cfg->nupstreams : 1, sizeof(*g->up_tls));
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        if (!cfg->upstreams[i].tls.enabled) continue;
        g->up_tls[i] = pt_tls_client_ctx_new(&cfg->upstreams[i].tls, cfg->upstreams[i].protocol == PT_UPROTO_H2, cfg->file, errors);
        if (!g->up_tls[i]) {
            pt_generation_unref(g);
            return NULL;
        }
    }
    return g;
}

void pt_generation_ref(pt_generation *g) { atomic_fetch_add(&g->refs, 1); }

void pt_generation_unref(pt_generation *g)
{
    if (!g || atomic_fetch_sub(&g->refs, 1) != 1) return;
    if (g->tls)
        for (size_t i = 0; i < g->cfg->nlisteners; i++) pt_tls_server_free(g->tls[i]);
    free(g->tls);
    if (g->up_tls)
        for (size_t i = 0; i < g->cfg->nupstreams; i++) SSL_CTX_free(g->up_tls[i]);
    free(g->up_tls);
    free(g->retry_counts);
    pt_router_free(g->router);
    pt_config_free(g->cfg);
    free(g);
}
