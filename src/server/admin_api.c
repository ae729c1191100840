/* admin_api.c — the read-only JSON admin API (docs/admin_api.md), served
 * by the admin listener's thread: the running configuration (secrets
 * redacted) and its generation, routes with their plugins in execution
 * order, upstreams and targets, consumers without credentials, and the
 * OpenAPI 3.1 document that describes them (admin_openapi.c).
 *
 * The admin thread never touches a worker: it holds a reference to the
 * generation serving new requests, swapped under a mutex at every reload
 * (pt_admin_api_publish). Everything is rendered with jansson into a
 * malloc'ed body per request; nothing here is on the request path. */
#include "server/admin_api.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "plugin/plugin.h"
#include "upstream/balance.h"

#define RELOADS_KEPT 32

typedef struct {
    bool ok;
    uint64_t generation;
    struct timespec at;
    char detail[256];
} reload_event;

static pthread_mutex_t api_lock = PTHREAD_MUTEX_INITIALIZER;
static pt_generation *api_gen;
static reload_event reloads[RELOADS_KEPT]; /* ring, under api_lock */
static uint64_t nreloads;

void pt_admin_api_reloaded(bool ok, uint64_t generation, const char *detail)
{
    pthread_mutex_lock(&api_lock);
    reload_event *e = &reloads[nreloads++ % RELOADS_KEPT];
    e->ok = ok;
    e->generation = generation;
    clock_gettime(CLOCK_REALTIME, &e->at);
    snprintf(e->detail, sizeof(e->detail), "%s", detail ? detail : "");
    pthread_mutex_unlock(&api_lock);
}

/* The kept events, oldest first, RFC 3339 UTC times. */
static json_t *reloads_json(const pt_generation *g)
{
    json_t *a = json_array();
    pthread_mutex_lock(&api_lock);
    uint64_t first = nreloads > RELOADS_KEPT ? nreloads - RELOADS_KEPT : 0;
    for (uint64_t i = first; i < nreloads; i++) {
        const reload_event *e = &reloads[i % RELOADS_KEPT];
        struct tm tm;
        gmtime_r(&e->at.tv_sec, &tm);
        char when[80];
        snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, e->at.tv_nsec / 1000000);
        json_t *o = json_pack("{s:s, s:s, s:I}", "at", when, "result", e->ok ? "ok" : "error", "generation",
                              (json_int_t)e->generation);
        if (e->detail[0]) json_object_set_new(o, "detail", json_string(e->detail));
        json_array_append_new(a, o);
    }
    pthread_mutex_unlock(&api_lock);
    return json_pack("{s:I, s:o}", "generation", (json_int_t)g->id, "events", a);
}

void pt_admin_api_publish(pt_generation *g)
{
    if (g) pt_generation_ref(g);
    pthread_mutex_lock(&api_lock);
    pt_generation *old = api_gen;
    api_gen = g;
    pthread_mutex_unlock(&api_lock);
    if (old) pt_generation_unref(old);
}

static pt_generation *current(void)
{
    pthread_mutex_lock(&api_lock);
    pt_generation *g = api_gen;
    if (g) pt_generation_ref(g);
    pthread_mutex_unlock(&api_lock);
    return g;
}

/* ------------------------------------------------------------ configuration */

/* Keys whose values are secrets wherever they appear (case-insensitive). */
static bool secret_key(const char *k)
{
    static const char *const secrets[] = {"password", "token", "secret", "client_secret", "key", "keys",
                                          "key_sha256", "password_hash", "private_key", "api_key", NULL};
    for (size_t i = 0; secrets[i]; i++)
        if (!strcasecmp(k, secrets[i])) return true;
    return false;
}

/* The YAML tree as JSON: mappings as objects, sequences as arrays, scalars
 * as strings as written; values under secret keys and values that came
 * from the environment (${NAME}) as "<redacted>". */
static json_t *node_json(const pt_conf_node *n, bool redact)
{
    if (!n) return json_null();
    switch (n->kind) {
    case PT_NODE_MAP: {
        json_t *o = json_object();
        for (size_t i = 0; i < n->n; i++) {
            const char *k = n->keys[i]->scalar ? n->keys[i]->scalar : "";
            json_object_set_new(o, k, node_json(n->vals[i], redact || secret_key(k)));
        }
        return o;
    }
    case PT_NODE_SEQ: {
        json_t *a = json_array();
        for (size_t i = 0; i < n->n; i++) json_array_append_new(a, node_json(n->vals[i], redact));
        return a;
    }
    case PT_NODE_SCALAR:
        if (redact || n->env_ref) return json_string("<redacted>");
        return json_stringn(n->scalar ? n->scalar : "", n->scalar_len);
    default:
        return json_null();
    }
}

static json_t *config_json(const pt_generation *g)
{
    return json_pack("{s:I, s:s, s:o}", "generation", (json_int_t)g->id, "file", g->cfg->file ? g->cfg->file : "",
                     "config", node_json(g->cfg->root, false));
}

/* ------------------------------------------------------------ routes */

static json_t *methods_json(uint32_t mask)
{
    json_t *a = json_array();
    for (int m = 1; m < PT_METHOD__COUNT; m++)
        if (mask & PT_METHOD_BIT(m)) json_array_append_new(a, json_string(pt_method_name((pt_method)m)));
    return a;
}

static json_t *strings_json(char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_string(v[i]));
    return a;
}

static json_t *kv_json(const pt_kv_match *v, size_t n)
{
    json_t *o = json_object();
    for (size_t i = 0; i < n; i++) json_object_set_new(o, v[i].name, v[i].value ? json_string(v[i].value) : json_true());
    return o;
}

static json_t *plugins_json(const pt_generation *g, const pt_pipeline *p)
{
    json_t *a = json_array();
    for (size_t i = 0; i < p->n; i++)
        json_array_append_new(a, json_pack("{s:s, s:s, s:i}", "name", p->v[i]->type->name, "scope",
                                           i < g->cfg->plugins.n ? "global" : "route", "line", p->v[i]->line));
    return a;
}

static json_t *routes_json(const pt_generation *g)
{
    static const char *const kinds[] = {"any", "exact", "prefix", "regex"};
    json_t *a = json_array();
    for (size_t i = 0; i < g->cfg->nroutes; i++) {
        const pt_route_conf *r = &g->cfg->routes[i];
        json_t *match = json_pack("{s:o, s:s, s:o, s:o, s:o}", "hosts", strings_json(r->hosts, r->nhosts), "path_kind",
                                  kinds[r->path_kind], "methods", methods_json(r->methods), "headers",
                                  kv_json(r->headers, r->nheaders), "query", kv_json(r->query, r->nquery));
        if (r->path) json_object_set_new(match, "path", json_string(r->path));
        json_t *o = json_pack("{s:s, s:i, s:o, s:o, s:o}", "name", r->name, "line", r->line, "match", match, "upstream",
                              r->upstream ? json_string(r->upstream->name) : json_null(), "plugins",
                              plugins_json(g, &g->route_pipes[i]));
        if (r->rewrite) json_object_set_new(o, "rewrite", json_string(r->rewrite));
        json_object_set_new(o, "strip_prefix", json_boolean(r->strip_prefix));
        json_object_set_new(o, "auth", json_pack("{s:s, s:o}", "mode", r->auth.mode == PT_AUTH_ALL ? "all" : "any",
                                                 "anonymous", r->auth.anonymous ? json_string(r->auth.anonymous->name)
                                                                                : json_null()));
        json_array_append_new(a, o);
    }
    return json_pack("{s:I, s:o, s:o}", "generation", (json_int_t)g->id, "global_plugins",
                     plugins_json(g, &g->global), "routes", a);
}

/* ------------------------------------------------------------ upstreams, consumers */

/* The live state of a target, shared by the workers (upstream/balance.h):
 * requests in flight, ejection by outlier detection, the active checks'
 * verdict (null without health_check), failures in a row, latency. */
static json_t *target_state_json(const pt_upstream_conf *u, size_t t, uint64_t now)
{
    const pt_target_state *s = u->lb && u->lb->targets ? u->lb->targets[t] : NULL;
    if (!s) return json_null();
    uint64_t until = atomic_load_explicit(&s->ejected_until_us, memory_order_relaxed);
    bool ejected = u->balance.outlier.enabled && until > now;
    json_t *o = json_pack("{s:i, s:b, s:I, s:i, s:i, s:f}", "in_flight",
                          atomic_load_explicit(&s->inflight, memory_order_relaxed), "ejected", ejected,
                          "ejected_for_ms", (json_int_t)(ejected ? (until - now) / 1000 : 0), "consecutive_failures",
                          (int)atomic_load_explicit(&s->consecutive_failures, memory_order_relaxed),
                          "consecutive_5xx", (int)atomic_load_explicit(&s->consecutive_5xx, memory_order_relaxed),
                          "latency_ewma_ms",
                          (double)atomic_load_explicit(&s->ewma_ns, memory_order_relaxed) / 1e6);
    json_object_set_new(o, "healthy", u->balance.health.enabled
                                          ? json_boolean(!atomic_load_explicit(&s->unhealthy, memory_order_relaxed))
                                          : json_null());
    return o;
}

static json_t *breaker_json(const pt_upstream_conf *u)
{
    static const char *const phases[] = {"closed", "open", "half_open"};
    if (!u->lb || !u->lb->breaker) return json_null();
    unsigned ph = atomic_load_explicit(&u->lb->breaker->phase, memory_order_relaxed);
    return json_string(ph < 3 ? phases[ph] : "closed");
}

static json_t *upstreams_json(const pt_generation *g)
{
    static const char *const protos[] = {"http1", "h2", "h2c"};
    static const char *const balances[] = {"round_robin", "least_requests", "ewma", "hash"};
    uint64_t now = pt_lb_now_us();
    json_t *a = json_array();
    for (size_t i = 0; i < g->cfg->nupstreams; i++) {
        const pt_upstream_conf *u = &g->cfg->upstreams[i];
        json_t *targets = json_array();
        for (size_t t = 0; t < u->ntargets; t++) {
            const pt_target_conf *tc = &u->targets[t];
            json_t *to = json_pack("{s:s, s:i, s:i, s:b, s:s}", "host", tc->host, "port", tc->port, "weight",
                                   (int)tc->weight, "dns", tc->dns, "address", tc->addr.text ? tc->addr.text : "");
            if (tc->srv) json_object_set_new(to, "srv", json_string(tc->srv));
            json_object_set_new(to, "state", target_state_json(u, t, now));
            json_array_append_new(targets, to);
        }
        json_array_append_new(
            a, json_pack("{s:s, s:i, s:s, s:b, s:o, s:{s:I, s:I, s:I}, s:i}", "name", u->name, "line", u->line,
                         "protocol", protos[u->protocol], "tls", u->tls.enabled, "targets", targets, "timeouts_ms",
                         "connect", (json_int_t)u->connect_timeout_ms, "read", (json_int_t)u->read_timeout_ms, "write",
                         (json_int_t)u->write_timeout_ms, "keepalive", (int)u->keepalive));
        json_t *last = json_array_get(a, json_array_size(a) - 1);
        json_object_set_new(last, "balance", json_string(balances[u->balance.kind < 4 ? u->balance.kind : 0]));
        json_object_set_new(last, "circuit", breaker_json(u));
    }
    return json_pack("{s:I, s:o}", "generation", (json_int_t)g->id, "upstreams", a);
}

static json_t *consumers_json(const pt_generation *g)
{
    const pt_consumers *cs = &g->cfg->consumers;
    json_t *a = json_array();
    for (size_t i = 0; i < cs->n; i++) {
        const pt_consumer *c = &cs->v[i];
        json_t *groups = json_array(), *meta = json_object();
        for (size_t k = 0; k < c->ngroups; k++) json_array_append_new(groups, json_string(c->groups[k]));
        for (size_t k = 0; k < c->nmetadata; k++)
            json_object_set_new(meta, c->metadata[k].key, json_string(c->metadata[k].value));
        size_t nkeys = 0, ncerts = 0;
        for (size_t k = 0; k < cs->nkeys; k++) nkeys += cs->keys[k].consumer == c;
        for (size_t k = 0; k < cs->ncerts; k++) ncerts += cs->certs[k].consumer == c;
        /* how many credentials of each kind, never the credentials */
        json_array_append_new(a, json_pack("{s:s, s:i, s:o, s:o, s:{s:i, s:b, s:i}}", "name", c->name, "line", c->line,
                                           "groups", groups, "metadata", meta, "credentials", "keys", (int)nkeys,
                                           "basic", c->password_hash != NULL, "mtls", (int)ncerts));
    }
    return json_pack("{s:I, s:o}", "generation", (json_int_t)g->id, "consumers", a);
}

/* ------------------------------------------------------------ dispatch */

int pt_admin_api(void *data, pt_str path, char **body, size_t *len, const char **content_type)
{
    *content_type = "application/json";
    if (pt_str_eq_lit(path, "/api/openapi.json")) {
        *body = pt_admin_openapi(len);
        return 200;
    }
    pt_generation *g = current();
    if (!g) return 503;
    json_t *doc = NULL;
    if (pt_str_eq_lit(path, "/api") || pt_str_eq_lit(path, "/api/"))
        doc = json_pack("{s:I, s:[s,s,s,s,s,s]}", "generation", (json_int_t)g->id, "endpoints", "/api/config",
                        "/api/routes", "/api/upstreams", "/api/consumers", "/api/reloads", "/api/openapi.json");
    else if (pt_str_eq_lit(path, "/api/config"))
        doc = config_json(g);
    else if (pt_str_eq_lit(path, "/api/routes"))
        doc = routes_json(g);
    else if (pt_str_eq_lit(path, "/api/upstreams"))
        doc = upstreams_json(g);
    else if (pt_str_eq_lit(path, "/api/consumers"))
        doc = consumers_json(g);
    else if (pt_str_eq_lit(path, "/api/reloads"))
        doc = reloads_json(g);
    pt_generation_unref(g);
    if (!doc) return 0;
    *body = json_dumps(doc, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(doc);
    *len = *body ? strlen(*body) : 0;
    return *body ? 200 : 500;
}
