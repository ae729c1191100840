/* cache.c — the `cache` plugin: configuration, the request side (key,
 * lookup, freshness, conditional answers, collapsing, stale-while-
 * revalidate) and the response side (storing, revalidation results,
 * stale-if-error, Cache-Status). The design is in docs/caching.md. */
#include "plugins/cache/cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/plugin_util.h"

/* ================================================================ metrics */

enum { R_HIT, R_MISS, R_STALE, R_REVALIDATED, R_BYPASS };
static const char *const results[] = {"hit", "miss", "stale", "revalidated", "bypass", NULL};
static const pt_metric_dim result_dims[] = {{"result", results}};
static const char *const zone_label[] = {"zone", NULL};
static const pt_metric_desc requests_desc = {
    .name = "portico_cache_requests_total",
    .help = "Requests on cached routes by how the cache answered: hit (fresh, also 304s), miss (forwarded, no "
            "usable entry), stale (a stale entry served: stale-while-revalidate, stale-if-error), revalidated "
            "(a stale entry refreshed by the upstream), bypass (not cacheable).",
    .type = PT_METRIC_COUNTER, .labels = zone_label, .dims = result_dims, .ndims = 1};
static const pt_metric_desc stores_desc = {.name = "portico_cache_stores_total",
                                           .help = "Responses stored in the cache.",
                                           .type = PT_METRIC_COUNTER, .labels = zone_label};
static const pt_metric_desc bytes_desc = {.name = "portico_cache_bytes",
                                          .help = "Bytes held by the cache store (entries and tables).",
                                          .type = PT_METRIC_GAUGE, .labels = zone_label};
static const pt_metric_desc entries_desc = {.name = "portico_cache_entries",
                                            .help = "Entries in the cache store.",
                                            .type = PT_METRIC_GAUGE, .labels = zone_label};
static const pt_metric_desc evictions_desc = {.name = "portico_cache_evicted_entries",
                                              .help = "Entries evicted (LRU) since the store was created.",
                                              .type = PT_METRIC_GAUGE, .labels = zone_label};
static const pt_metric_desc purged_desc = {.name = "portico_cache_purged_entries",
                                           .help = "Entries removed by purges since the store was created.",
                                           .type = PT_METRIC_GAUGE, .labels = zone_label};

static void store_gauges(const pt_cache_conf *c)
{
    pt_metric_set(c->m_bytes, 0, (int64_t)atomic_load_explicit(&c->store->bytes, memory_order_relaxed));
    pt_metric_set(c->m_entries, 0, (int64_t)atomic_load_explicit(&c->store->entries, memory_order_relaxed));
    pt_metric_set(c->m_evictions, 0, (int64_t)atomic_load_explicit(&c->store->evictions, memory_order_relaxed));
    pt_metric_set(c->m_purged, 0, (int64_t)atomic_load_explicit(&c->store->purged, memory_order_relaxed));
}

/* ========================================================== configuration */

static uint64_t cfg_max_size, cfg_max_object; /* passed to store_init (configure runs on one thread) */
static char cfg_zone[64];

static void store_init(void *mem, size_t size)
{
    pt_cache_store *s = mem;
    pt_cache_store_init(s, cfg_max_size, cfg_max_object);
    snprintf(s->zone, sizeof(s->zone), "%s", cfg_zone);
    pt_cache_registry_add(s);
}

static void store_fini(void *mem, size_t size)
{
    pt_cache_registry_remove(mem);
    pt_cache_store_fini(mem);
}

static bool read_seconds(pt_conf_ctx *ctx, const pt_conf_node *n, int64_t *out)
{
    uint64_t ms;
    if (!pt_conf_duration_ms(ctx, n, &ms)) return false;
    *out = (int64_t)(ms / 1000);
    return true;
}

static bool read_key(pt_conf_ctx *ctx, const pt_conf_node *n, pt_cache_conf *c)
{
    static const char *const keys[] = {"query", "ignore_query", "headers", NULL};
    if (n->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, n, "cache.key: expected a mapping such as {query: all, ignore_query: [utm_source]}");
        return false;
    }
    bool ok = pt_conf_check_keys(ctx, n, keys, "cache.key");
    const pt_conf_node *v;
    if ((v = pt_conf_get(n, "query"))) {
        if (v->kind == PT_NODE_SCALAR && strcmp(v->scalar, "all") == 0) {
        } else if (v->kind == PT_NODE_SCALAR && strcmp(v->scalar, "none") == 0) {
            c->query_none = true;
        } else if (v->kind == PT_NODE_SEQ) {
            ok &= pt_plugin_string_list(ctx, v, "cache", "key.query", true, &c->query_keep, &c->nquery_keep);
        } else {
            pt_conf_error(ctx, v, "cache.key.query: expected all, none or a list of parameter names to keep");
            ok = false;
        }
    }
    if ((v = pt_conf_get(n, "ignore_query")))
        ok &= pt_plugin_string_list(ctx, v, "cache", "key.ignore_query", false, &c->query_ignore, &c->nquery_ignore);
    if ((v = pt_conf_get(n, "headers"))) {
        if (pt_plugin_string_list(ctx, v, "cache", "key.headers", false, &c->key_headers, &c->nkey_headers)) {
            for (size_t i = 0; i < c->nkey_headers; i++)
                if (!pt_plugin_header_name_ok(c->key_headers[i], strlen(c->key_headers[i]))) {
                    pt_conf_error(ctx, v, "cache.key.headers: \"%s\" is not a header name", c->key_headers[i]);
                    ok = false;
                }
        } else {
            ok = false;
        }
    }
    return ok;
}

static void *cache_configure(pt_conf_ctx *ctx, const pt_conf_node *node)
{
    static const char *const keys[] = {"zone", "max_size", "max_object_size", "key", "heuristic_ttl", "statuses",
                                       "cache_authorization", "cache_set_cookie", "tag_header", "collapse",
                                       "collapse_timeout", "stale_while_revalidate", "stale_if_error", NULL};
    pt_cache_conf *c = pt_arena_calloc(ctx->arena, sizeof(*c));
    uint64_t max_size = 64u << 20, max_object = 1u << 20;
    c->collapse = true;
    c->collapse_timeout_ms = 5000;
    c->zone = pt_conf_scope(ctx);
    if (node && node->kind != PT_NODE_NULL && node->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, node, "cache: expected a mapping (or nothing, for the defaults)");
        return NULL;
    }
    bool ok = true;
    if (node && node->kind == PT_NODE_MAP) {
        ok = pt_conf_check_keys(ctx, node, keys, "cache");
        const pt_conf_node *v;
        if ((v = pt_conf_get(node, "zone"))) {
            if (v->kind != PT_NODE_SCALAR || v->scalar_len == 0 || v->scalar_len >= sizeof(cfg_zone)) {
                pt_conf_error(ctx, v, "cache.zone: expected a name of 1 to 63 characters");
                ok = false;
            } else {
                c->zone = v->scalar;
            }
        }
        if ((v = pt_conf_get(node, "max_size")) && !pt_conf_size(ctx, v, &max_size)) ok = false;
        if ((v = pt_conf_get(node, "max_object_size")) && !pt_conf_size(ctx, v, &max_object)) ok = false;
        if ((v = pt_conf_get(node, "key")) && !read_key(ctx, v, c)) ok = false;
        if ((v = pt_conf_get(node, "heuristic_ttl")) && !read_seconds(ctx, v, &c->policy.heuristic_ttl)) ok = false;
        if ((v = pt_conf_get(node, "statuses"))) {
            if (v->kind != PT_NODE_SEQ || v->n > PT_ARRAY_LEN(c->policy.extra_statuses)) {
                pt_conf_error(ctx, v, "cache.statuses: expected a list of at most 8 status codes");
                ok = false;
            } else {
                for (size_t i = 0; i < v->n; i++) {
                    int64_t st;
                    if (!pt_conf_int(ctx, v->vals[i], INT32_MIN, INT32_MAX, &st)) {
                        ok = false;
                    } else if (st < 200 || st > 599) {
                        pt_conf_error(ctx, v->vals[i], "cache.statuses: %lld is not a final status (200..599)",
                                      (long long)st);
                        ok = false;
                    } else {
                        c->policy.extra_statuses[c->policy.nextra++] = (uint32_t)st;
                    }
                }
            }
        }
        if ((v = pt_conf_get(node, "cache_authorization")) && !pt_conf_bool(ctx, v, &c->allow_authorization))
            ok = false;
        if ((v = pt_conf_get(node, "cache_set_cookie")) && !pt_conf_bool(ctx, v, &c->policy.allow_set_cookie))
            ok = false;
        if ((v = pt_conf_get(node, "tag_header"))) {
            if (v->kind != PT_NODE_SCALAR || !pt_plugin_header_name_ok(v->scalar, v->scalar_len)) {
                pt_conf_error(ctx, v, "cache.tag_header: expected a header name such as Cache-Tag");
                ok = false;
            } else {
                c->tag_header = v->scalar;
            }
        }
        if ((v = pt_conf_get(node, "collapse")) && !pt_conf_bool(ctx, v, &c->collapse)) ok = false;
        if ((v = pt_conf_get(node, "collapse_timeout")) && !pt_conf_duration_ms(ctx, v, &c->collapse_timeout_ms))
            ok = false;
        if ((v = pt_conf_get(node, "stale_while_revalidate")) && !read_seconds(ctx, v, &c->default_swr)) ok = false;
        if ((v = pt_conf_get(node, "stale_if_error")) && !read_seconds(ctx, v, &c->default_sie)) ok = false;
    }
    if (ok && max_size < (1u << 16)) {
        pt_conf_error(ctx, pt_conf_get(node, "max_size"), "cache.max_size: must be at least 64k");
        ok = false;
    } else if (ok && (max_object == 0 || max_object > max_size / 2)) {
        const pt_conf_node *at = pt_conf_get(node, "max_object_size");
        pt_conf_error(ctx, at ? at : node, "cache.max_object_size: must be between 1 byte and half of max_size");
        ok = false;
    }
    if (!ok) return NULL;
    c->max_object = max_object;
    char key[160];
    snprintf(key, sizeof(key), "cache:%s:%llu:%llu", c->zone, (unsigned long long)max_size,
             (unsigned long long)max_object);
    cfg_max_size = max_size;
    cfg_max_object = max_object;
    snprintf(cfg_zone, sizeof(cfg_zone), "%s", c->zone);
    c->store = pt_conf_shared_ex(ctx, node, pt_str_c(key), sizeof(pt_cache_store), store_init, store_fini);
    if (!c->store) return NULL;
    if (!pt_cache_admin_declare(ctx, node)) return NULL;
    const char *const labels[] = {c->zone, NULL};
    c->m_requests = pt_conf_metric(ctx, node, &requests_desc, labels);
    c->m_stores = pt_conf_metric(ctx, node, &stores_desc, labels);
    c->m_bytes = pt_conf_metric(ctx, node, &bytes_desc, labels);
    c->m_entries = pt_conf_metric(ctx, node, &entries_desc, labels);
    c->m_evictions = pt_conf_metric(ctx, node, &evictions_desc, labels);
    c->m_purged = pt_conf_metric(ctx, node, &purged_desc, labels);
    return c;
}

/* ========================================================== request state */

typedef struct cache_waiter cache_waiter;

typedef struct {
    const pt_cache_conf *conf;
    pt_txn *txn;
    pt_loop *loop;
    bool ran;               /* on_request_headers ran */
    bool cleanup_armed;
    bool served;            /* the answer comes from the cache (hit, 304, stale) */
    bool may_store;         /* a miss or revalidation whose response may be stored */
    bool filler;            /* this request fetches `key` for the waiters */
    bool waited;
    bool unsafe;            /* POST/PUT/DELETE...: invalidate on success */
    int64_t request_time;
    pt_str key;             /* primary key (arena) */
    pt_str vkey;            /* the variant's key (== key without Vary) */
    pt_str fill_key;        /* the key this request fetches for waiters (filler) */
    pt_cache_entry *stale;  /* a stale entry being revalidated (ref) */
    const char *status;     /* Cache-Status value (arena or static) */
    pt_str client_inm, client_ims; /* the client's conditionals (ours replace them upstream) */
    /* storing */
    bool storing;
    size_t overhead;           /* the entry's charge besides its body */
    pt_cache_pending *pending; /* streamed to collapsed waiters (a reference) */
    char *buf;
    size_t len, cap;
    pt_cache_meta meta;
    pt_str head, tags, vary; /* arena */
    /* collapsing */
    cache_waiter *waiter;
    pt_timer timer;
} cache_state;

struct cache_waiter {
    pt_cache_waiter base;
    pt_loop *loop;
    pt_txn_ref *ref;
    cache_state *st;
};

static int64_t wall_now(pt_txn *txn) { return (int64_t)(pt_loop_wall_us(pt_txn_loop(txn)) / 1000000); }

static void stop_storing(cache_state *st)
{
    if (st->pending) {
        pt_cache_pending_end(st->pending, false); /* no-op once complete */
        pt_cache_pending_release(st->pending);
        st->pending = NULL;
    }
    free(st->buf);
    st->buf = NULL;
    st->len = st->cap = 0;
    st->storing = false;
}

static void end_fill(cache_state *st)
{
    if (!st->filler) return;
    st->filler = false;
    pt_cache_fill_end(st->conf->store, st->fill_key);
}

/* The waiter side of collapsing: give the registration back. */
static void leave_wait(cache_state *st)
{
    cache_waiter *w = st->waiter;
    if (!w) return;
    st->waiter = NULL;
    pt_timer_stop(st->loop, &st->timer);
    if (pt_cache_fill_leave(st->conf->store, st->fill_key, &w->base)) {
        pt_txn_ref_release(w->ref);
        free(w);
    } /* else its wake is posted: the posted call frees it */
}

static void cache_cleanup(void *data)
{
    cache_state *st = data;
    leave_wait(st);
    end_fill(st);
    stop_storing(st);
    pt_cache_entry_release(st->stale);
    st->stale = NULL;
}

static void arm_cleanup(pt_txn *txn, cache_state *st)
{
    if (st->cleanup_armed) return;
    st->cleanup_armed = true;
    pt_arena_on_cleanup(pt_txn_arena(txn), cache_cleanup, st);
}

/* ================================================================== keys */

static bool in_list(const char *const *v, size_t n, pt_str s)
{
    for (size_t i = 0; i < n; i++)
        if (pt_str_eq_lit(s, v[i])) return true;
    return false;
}

/* The primary key: host, normalised path, filtered query, key headers. */
static pt_str build_key(pt_txn *txn, const pt_cache_conf *c)
{
    pt_request *req = pt_txn_request(txn);
    pt_str path = pt_txn_path(txn);
    size_t cap = req->host.n + path.n + req->query.n + 8;
    for (size_t i = 0; i < c->nkey_headers; i++) {
        const pt_str *v = pt_headers_get(&req->headers, c->key_headers[i]);
        cap += strlen(c->key_headers[i]) + 3 + (v ? v->n : 0);
    }
    char *b = pt_arena_alloc(pt_txn_arena(txn), cap);
    size_t n = 0;
    memcpy(b + n, req->host.p, req->host.n), n += req->host.n;
    memcpy(b + n, path.p, path.n), n += path.n;
    if (req->has_query && !c->query_none) {
        size_t mark = n;
        b[n++] = '?';
        pt_str rest = req->query, p, name, value;
        bool any = false, has_eq;
        while (pt_plugin_query_next(&rest, &p, &name, &value, &has_eq)) {
            if (p.n == 0 || in_list(c->query_ignore, c->nquery_ignore, name)) continue;
            if (c->query_keep && !in_list(c->query_keep, c->nquery_keep, name)) continue;
            if (any) b[n++] = '&';
            memcpy(b + n, p.p, p.n), n += p.n;
            any = true;
        }
        if (!any) n = mark;
    }
    for (size_t i = 0; i < c->nkey_headers; i++) {
        const pt_str *v = pt_headers_get(&req->headers, c->key_headers[i]);
        b[n++] = '\x1e';
        size_t hl = strlen(c->key_headers[i]);
        memcpy(b + n, c->key_headers[i], hl), n += hl;
        b[n++] = ':';
        if (v) memcpy(b + n, v->p, v->n), n += v->n;
    }
    return pt_str_make(b, n);
}

/* The variant key: key "\n" name=values per Vary name ("a\nb" in `names`). */
static pt_str variant_key(pt_txn *txn, pt_str key, pt_str names)
{
    const pt_headers *h = &pt_txn_request(txn)->headers;
    size_t cap = key.n + 1;
    for (uint32_t i = 0; i < h->n; i++) cap += h->v[i].value.n + 1;
    cap += names.n * 2 + 2;
    char *b = pt_arena_alloc(pt_txn_arena(txn), cap);
    size_t n = 0;
    memcpy(b, key.p, key.n), n = key.n;
    pt_str rest = names;
    while (rest.n) {
        const char *nl = memchr(rest.p, '\n', rest.n);
        pt_str name = pt_str_make(rest.p, nl ? (size_t)(nl - rest.p) : rest.n);
        rest = nl ? pt_str_make(nl + 1, rest.n - name.n - 1) : PT_STR_NULL;
        b[n++] = '\n';
        memcpy(b + n, name.p, name.n), n += name.n;
        b[n++] = '=';
        bool first = true;
        for (uint32_t i = 0; i < h->n; i++) {
            if (!pt_str_ieq(h->v[i].name, name)) continue;
            if (!first) b[n++] = ',';
            memcpy(b + n, h->v[i].value.p, h->v[i].value.n), n += h->v[i].value.n;
            first = false;
        }
    }
    PT_ASSERT(n <= cap);
    return pt_str_make(b, n);
}

/* ================================================================ serving */

typedef struct {
    pt_cache_entry *e;
    size_t off;
} gen_state;

static void gen_proceed(pt_txn *txn, void *data)
{
    gen_state *g = data;
    while (g->off < g->e->bodylen) {
        size_t n = g->e->bodylen - g->off;
        if (n > 65536) n = 65536;
        bool last = g->off + n == g->e->bodylen;
        bool more = pt_txn_stream_write(txn, g->e->body + g->off, n, last);
        g->off += n;
        if (!more) return;
    }
    if (g->e->bodylen == 0 && g->off == 0) {
        g->off = 1; /* once */
        pt_txn_stream_write(txn, NULL, 0, true);
    }
}

static void gen_stop(pt_txn *txn, void *data, bool complete)
{
    gen_state *g = data;
    pt_cache_entry_release(g->e);
    g->e = NULL;
}

static const pt_generator entry_gen = {gen_proceed, gen_stop};

static int64_t entry_age(const pt_cache_entry *e, int64_t now)
{
    return e->meta.initial_age + (now > e->meta.response_time ? now - e->meta.response_time : 0);
}

/* The stored field `name`, or a null slice. */
static pt_str head_get(const pt_cache_entry *e, const char *name)
{
    pt_str rest = pt_str_make(e->head, e->headlen), n, v;
    while (pt_field_line_next(&rest, &n, &v))
        if (pt_str_ieq_lit(n, name)) return v;
    return PT_STR_NULL;
}

/* Whether the client's conditionals (If-None-Match, else If-Modified-Since)
 * hold for `e`: it may get 304. */
static bool client_has_copy(const cache_state *st, const pt_cache_entry *e)
{
    if (e->meta.status != 200) return false;
    if (st->client_inm.p) {
        pt_str etag = head_get(e, "etag");
        return etag.n && pt_cache_inm_matches(st->client_inm, etag);
    }
    if (!st->client_ims.p) return false;
    pt_str lm = head_get(e, "last-modified");
    int64_t a = pt_cache_http_date(st->client_ims), b = lm.n ? pt_cache_http_date(lm) : -1;
    return a >= 0 && b >= 0 && b <= a;
}

/* Prepares the answer from `e` (a 304 when the client holds it); the
 * caller returns RESPOND (or resumes with it). */
static void serve_entry(pt_txn *txn, cache_state *st, pt_cache_entry *e, const char *status)
{
    int64_t now = wall_now(txn);
    int64_t age = entry_age(e, now);
    char agebuf[24];
    snprintf(agebuf, sizeof(agebuf), "%lld", (long long)age);
    st->served = true;
    st->status = status;
    bool not_modified = client_has_copy(st, e);
    pt_str rest = pt_str_make(e->head, e->headlen), n, v, ctype = PT_STR_NULL;
    if (not_modified) {
        pt_txn_respond(txn, 304, PT_STR_NULL, PT_STR_NULL);
    } else {
        while (pt_field_line_next(&rest, &n, &v))
            if (pt_str_ieq_lit(n, "content-type")) ctype = v;
        gen_state *g = pt_arena_calloc(pt_txn_arena(txn), sizeof(*g));
        atomic_fetch_add(&e->refs, 1);
        g->e = e;
        pt_txn_respond_stream(txn, e->meta.status, ctype, (int64_t)e->bodylen, &entry_gen, g);
    }
    static const char *const kept_304[] = {"etag", "last-modified", "cache-control", "expires", "vary",
                                           "content-location", "date"};
    rest = pt_str_make(e->head, e->headlen);
    while (pt_field_line_next(&rest, &n, &v)) {
        if (pt_str_ieq_lit(n, "content-type")) continue;
        if (not_modified) {
            bool keep = false;
            for (size_t i = 0; i < PT_ARRAY_LEN(kept_304); i++) keep |= pt_str_ieq_lit(n, kept_304[i]);
            if (!keep) continue;
        }
        pt_txn_respond_header(txn, n, v);
    }
    pt_txn_respond_header(txn, PT_STR_LIT("Age"), pt_str_c(agebuf));
}

/* ================================================ background revalidation */

typedef struct {
    const pt_cache_store *store;
    uint64_t store_id;
    char *key;
    size_t keylen;
    pt_cache_policy policy;
    int64_t request_time;
    int64_t default_swr, default_sie;
    char *tag_header;  /* copied: the configuration may go first */
    pt_loop *loop;
} refresh;

static pt_cache_entry *entry_from_response(pt_cache_store *s, pt_str key, int status, const pt_headers *h,
                                           pt_str body, const pt_cache_policy *p, int64_t request_time,
                                           int64_t now, int64_t dswr, int64_t dsie, const char *tag_header);

typedef struct {
    refresh *r;
    const pt_http_result *res;
} refresh_arg;

static void refresh_store(pt_cache_store *s, void *arg)
{
    refresh_arg *a = arg;
    refresh *r = a->r;
    pt_str key = pt_str_make(r->key, r->keylen);
    const pt_http_result *res = a->res;
    /* a background refresh only replaces plain entries (start_refresh) */
    if (res && res->error == PT_HTTP_OK && !pt_headers_get(res->headers, "vary")) {
        int64_t now = (int64_t)(pt_loop_wall_us(r->loop) / 1000000);
        pt_cache_entry *e = entry_from_response(s, key, res->status, res->headers, res->body, &r->policy,
                                                r->request_time, now, r->default_swr, r->default_sie, r->tag_header);
        if (e) {
            pt_cache_store_put(s, e, pt_loop_now(r->loop));
            pt_cache_entry_release(e);
        }
    }
    pt_cache_fill_end(s, key);
}

static void refresh_done(void *data, const pt_http_result *res)
{
    refresh *r = data;
    refresh_arg a = {r, res};
    pt_cache_registry_with(r->store, r->store_id, refresh_store, &a);
    free(r->key);
    free(r->tag_header);
    free(r);
}

/* Starts fetching the request's target again in the background (for
 * stale-while-revalidate); only one refresh per key at a time. Routes that
 * change the upstream path (strip_prefix, rewrite) and Vary variants (whose
 * key depends on the answer) revalidate in line instead: false. */
static bool start_refresh(pt_txn *txn, const pt_cache_conf *c, cache_state *st)
{
    const pt_route_conf *route = pt_txn_route(txn);
    if (!route || !route->upstream || route->strip_prefix || route->rewrite) return false;
    if (!pt_str_eq(st->vkey, st->key)) return false;
    if (!pt_cache_fill_join(c->store, st->vkey, NULL, NULL)) return true; /* someone refreshes it already */
    pt_request *req = pt_txn_request(txn);
    refresh *r = pt_xcalloc(1, sizeof(*r));
    *r = (refresh){.store = c->store, .store_id = c->store->id, .key = pt_xstrndup(st->vkey.p, st->vkey.n),
                   .keylen = st->vkey.n, .policy = c->policy, .request_time = wall_now(txn),
                   .default_swr = c->default_swr, .default_sie = c->default_sie,
                   .tag_header = c->tag_header ? pt_xstrndup(c->tag_header, strlen(c->tag_header)) : NULL,
                   .loop = pt_txn_loop(txn)};
    pt_headers h = {0};
    for (uint32_t i = 0; i < req->headers.n; i++) {
        pt_str n = req->headers.v[i].name;
        if (pt_str_ieq_lit(n, "if-none-match") || pt_str_ieq_lit(n, "if-modified-since") ||
            pt_str_ieq_lit(n, "cache-control") || pt_str_ieq_lit(n, "pragma"))
            continue;
        pt_headers_add(&h, pt_txn_arena(txn), n, req->headers.v[i].value);
    }
    pt_http_request hr = {.upstream = route->upstream, .method = PT_STR_LIT("GET"), .target = req->target,
                          .host = req->authority, .headers = &h, .max_body = c->max_object};
    if (!pt_http_fetch(pt_txn_loop(txn), &hr, refresh_done, r)) {
        pt_cache_fill_end(c->store, st->vkey);
        free(r->key);
        free(r->tag_header);
        free(r);
    }
    return true;
}

/* ==================================== streaming a fetch still arriving */

typedef struct pend_reader pend_reader;

typedef struct {
    pt_cache_pending *p; /* a reference until stop */
    size_t off;
    bool stopped;
    pend_reader *r;      /* registered for the next append or end, or NULL */
} pend_state;

struct pend_reader {
    pt_cache_waiter base;
    pt_loop *loop;
    pt_txn_ref *ref;
    pend_state *ps;
};

static void pend_pump(pt_txn *txn, pend_state *ps);

static void pend_posted(pt_loop *loop, void *data)
{
    pend_reader *r = data;
    pt_txn *txn = pt_txn_ref_get(r->ref);
    if (txn && r->ps->r == r && !r->ps->stopped) {
        r->ps->r = NULL;
        pend_pump(txn, r->ps);
    }
    pt_txn_ref_release(r->ref);
    free(r);
}

static void pend_wake(pt_cache_waiter *base)
{
    pend_reader *r = (pend_reader *)base;
    pt_loop_post(r->loop, pend_posted, r);
}

/* Writes what has arrived (as the client takes it); at the end of what is
 * there, registers for the next piece; cuts the response if the fetch
 * failed. */
static void pend_pump(pt_txn *txn, pend_state *ps)
{
    pt_cache_pending *p = ps->p;
    for (;;) {
        int state = atomic_load_explicit(&p->state, memory_order_acquire);
        size_t len = atomic_load_explicit(&p->len, memory_order_acquire);
        if (state == PT_PENDING_FAILED) {
            pt_txn_stream_abort(txn);
            return;
        }
        if (ps->off < len || state == PT_PENDING_COMPLETE) {
            size_t n = len - ps->off;
            if (n > 65536) n = 65536;
            bool last = state == PT_PENDING_COMPLETE && ps->off + n == len;
            bool more = pt_txn_stream_write(txn, p->body + ps->off, n, last);
            ps->off += n;
            if (last || !more) return; /* done, or wait for the next proceed */
            continue;
        }
        pend_reader *r = pt_xcalloc(1, sizeof(*r));
        r->base.wake = pend_wake;
        r->loop = pt_txn_loop(txn);
        r->ps = ps;
        r->ref = pt_txn_ref_new(txn);
        if (pt_cache_pending_wait(p, ps->off, &r->base)) {
            ps->r = r;
            return;
        }
        pt_txn_ref_release(r->ref); /* arrived meanwhile */
        free(r);
    }
}

static void pend_proceed(pt_txn *txn, void *data)
{
    pend_state *ps = data;
    if (!ps->r) pend_pump(txn, ps);
}

static void pend_stop(pt_txn *txn, void *data, bool complete)
{
    pend_state *ps = data;
    ps->stopped = true;
    if (ps->r && pt_cache_pending_unwait(ps->p, &ps->r->base)) {
        pt_txn_ref_release(ps->r->ref);
        free(ps->r);
    } /* else its wake is posted: pend_posted frees it */
    ps->r = NULL;
    pt_cache_pending_release(ps->p);
    ps->p = NULL;
}

static const pt_generator pending_gen = {pend_proceed, pend_stop};

/* Answers a collapsed request from the fetch streaming its response
 * (takes the reference `p`). */
static pt_plugin_result serve_pending(pt_txn *txn, const pt_cache_conf *c, cache_state *st, pt_cache_pending *p)
{
    pt_metric_add(c->m_requests, R_HIT, 1);
    st->served = true;
    st->status = "portico; fwd=uri-miss; collapsed";
    pt_str rest = pt_str_make(p->head, p->headlen), n, v, ctype = PT_STR_NULL;
    while (pt_field_line_next(&rest, &n, &v))
        if (pt_str_ieq_lit(n, "content-type")) ctype = v;
    pend_state *ps = pt_arena_calloc(pt_txn_arena(txn), sizeof(*ps));
    ps->p = p;
    pt_txn_respond_stream(txn, p->status, ctype, (int64_t)p->size, &pending_gen, ps);
    rest = pt_str_make(p->head, p->headlen);
    while (pt_field_line_next(&rest, &n, &v))
        if (!pt_str_ieq_lit(n, "content-type")) pt_txn_respond_header(txn, n, v);
    pt_txn_respond_header(txn, PT_STR_LIT("Age"), PT_STR_LIT("0"));
    return PT_PLUGIN_RESPOND;
}

/* ========================================================== request side */

static pt_plugin_result lookup(pt_txn *txn, const pt_cache_conf *c, cache_state *st);

static void waiter_posted(pt_loop *loop, void *data)
{
    cache_waiter *w = data;
    pt_txn *txn = pt_txn_ref_get(w->ref);
    if (txn && w->st->waiter == w) {
        cache_state *st = w->st;
        st->waiter = NULL;
        pt_timer_stop(loop, &st->timer);
        pt_txn_resume(txn, PT_SIDE_REQUEST, lookup(txn, st->conf, st));
    }
    pt_txn_ref_release(w->ref);
    free(w);
}

static void waiter_wake(pt_cache_waiter *base)
{
    cache_waiter *w = (cache_waiter *)base;
    pt_loop_post(w->loop, waiter_posted, w);
}

static void wait_timeout(pt_loop *loop, pt_timer *t)
{
    cache_state *st = t->data;
    leave_wait(st);
    st->status = "portico; fwd=uri-miss; detail=collapse-timeout";
    pt_txn_resume(st->txn, PT_SIDE_REQUEST, PT_PLUGIN_CONTINUE);
}

/* Adds the entry's validators to the upstream request (the client's own
 * conditionals are replaced: the answer to the client is decided here). */
static void add_validators(pt_txn *txn, const pt_cache_entry *e)
{
    pt_request *req = pt_txn_request(txn);
    pt_arena *a = pt_txn_arena(txn);
    pt_headers_remove(&req->headers, "if-none-match");
    pt_headers_remove(&req->headers, "if-modified-since");
    pt_str etag = head_get(e, "etag"), lm = head_get(e, "last-modified");
    if (etag.n) pt_headers_add(&req->headers, a, PT_STR_LIT("If-None-Match"), pt_arena_str(a, etag));
    if (lm.n) pt_headers_add(&req->headers, a, PT_STR_LIT("If-Modified-Since"), pt_arena_str(a, lm));
}

static char *fmt_status(pt_txn *txn, const char *what, int64_t ttl, const char *detail)
{
    return pt_arena_printf(pt_txn_arena(txn), "portico; %s; ttl=%lld%s%s", what, (long long)ttl,
                           detail ? "; detail=" : "", detail ? detail : "");
}

/* Finds the entry of the request and decides: serve it, revalidate it,
 * wait for another fetch of the key, or forward. */
static pt_plugin_result lookup(pt_txn *txn, const pt_cache_conf *c, cache_state *st)
{
    pt_request *req = pt_txn_request(txn);
    uint64_t mono = pt_loop_now(pt_txn_loop(txn));
    int64_t now = wall_now(txn);
    pt_cache_cc rcc;
    pt_cache_cc_parse(&req->headers, true, &rcc);
    st->vkey = st->key;
    pt_cache_entry *e = pt_cache_store_get(c->store, st->key, mono);
    bool vary_miss = false;
    if (e && e->meta.vary_marker) {
        st->vkey = variant_key(txn, st->key, pt_str_make(e->head, e->headlen));
        pt_cache_entry_release(e);
        e = pt_cache_store_get(c->store, st->vkey, mono);
        vary_miss = e == NULL;
    }
    if (e) {
        int64_t age = entry_age(e, now);
        int64_t ttl = e->meta.lifetime - age;
        bool fresh = ttl > 0 && !e->meta.no_cache;
        if (fresh && rcc.max_age >= 0 && age > rcc.max_age) fresh = false;
        if (fresh && rcc.min_fresh >= 0 && ttl < rcc.min_fresh) fresh = false;
        if (fresh && rcc.no_cache) {
            pt_metric_add(c->m_requests, R_MISS, 1);
            st->status = "portico; fwd=request";
            st->stale = e;
            if (req->method == PT_METHOD_GET) add_validators(txn, e);
            return PT_PLUGIN_CONTINUE;
        }
        if (fresh) {
            pt_metric_add(c->m_requests, R_HIT, 1);
            serve_entry(txn, st, e, fmt_status(txn, "hit", ttl, NULL));
            pt_cache_entry_release(e);
            return PT_PLUGIN_RESPOND;
        }
        bool may_stale = !e->meta.must_revalidate && !e->meta.no_cache && !rcc.no_cache;
        if (may_stale && e->meta.swr > 0 && -ttl < e->meta.swr && start_refresh(txn, c, st)) {
            pt_metric_add(c->m_requests, R_STALE, 1);
            serve_entry(txn, st, e, fmt_status(txn, "hit", ttl, "stale-while-revalidate"));
            pt_cache_entry_release(e);
            return PT_PLUGIN_RESPOND;
        }
        if (rcc.only_if_cached) goto gateway_timeout;
        st->status = "portico; fwd=stale";
        st->stale = e; /* kept for the 304 and stale-if-error */
        if (req->method == PT_METHOD_GET) add_validators(txn, e); /* a HEAD just goes through */
        return PT_PLUGIN_CONTINUE;
    }
    if (rcc.only_if_cached) goto gateway_timeout;
    st->status = vary_miss ? "portico; fwd=vary-miss" : "portico; fwd=uri-miss";
    if (req->method != PT_METHOD_GET || !c->collapse || st->filler) return PT_PLUGIN_CONTINUE;
    pt_cache_pending *pend = NULL;
    if (st->waited) {
        /* woken: read the fetch's response as it streams, else (nothing
         * stored) fetch, as the filler if nobody else is */
        st->fill_key = st->vkey;
        st->filler = pt_cache_fill_join(c->store, st->vkey, NULL, &pend);
        if (pend) return serve_pending(txn, c, st, pend);
        if (!st->filler) st->status = "portico; fwd=uri-miss; detail=collapse-retry";
        return PT_PLUGIN_CONTINUE;
    }
    st->fill_key = st->vkey;
    /* most misses find nobody fetching: no waiter to allocate then */
    if (pt_cache_fill_join(c->store, st->vkey, NULL, &pend)) {
        st->filler = true;
        return PT_PLUGIN_CONTINUE;
    }
    if (pend) return serve_pending(txn, c, st, pend);
    cache_waiter *w = pt_xcalloc(1, sizeof(*w));
    w->base.wake = waiter_wake;
    w->loop = pt_txn_loop(txn);
    w->st = st;
    if (pt_cache_fill_join(c->store, st->vkey, &w->base, &pend)) { /* the fetch ended meanwhile */
        free(w);
        st->filler = true;
        return PT_PLUGIN_CONTINUE;
    }
    if (pend) {
        free(w);
        return serve_pending(txn, c, st, pend);
    }
    w->ref = pt_txn_ref_new(txn);
    st->waiter = w;
    st->waited = true;
    pt_timer_start(pt_txn_loop(txn), &st->timer, c->collapse_timeout_ms, wait_timeout, st);
    return PT_PLUGIN_PAUSE;

gateway_timeout:
    pt_metric_add(c->m_requests, R_BYPASS, 1);
    st->status = "portico; fwd=miss; detail=only-if-cached";
    st->served = true;
    pt_txn_respond_problem(txn, 504, "only-if-cached: no fresh response is stored");
    return PT_PLUGIN_RESPOND;
}

/* Whether an authentication plugin named the caller (not the anonymous consumer). */
static bool authenticated(pt_txn *txn)
{
    const char *method = pt_txn_auth_method(txn);
    return pt_txn_consumer(txn) && !(method && strcmp(method, "anonymous") == 0);
}

static pt_plugin_result cache_on_request_headers(pt_txn *txn, const void *conf, void *state)
{
    const pt_cache_conf *c = conf;
    cache_state *st = state;
    pt_request *req = pt_txn_request(txn);
    st->conf = c;
    st->txn = txn;
    st->loop = pt_txn_loop(txn);
    st->ran = true;
    st->request_time = wall_now(txn);
    arm_cleanup(txn, st);
    store_gauges(c);
    st->key = build_key(txn, c);
    st->vkey = st->key;
    const pt_str *inm = pt_headers_get(&req->headers, "if-none-match");
    const pt_str *ims = pt_headers_get(&req->headers, "if-modified-since");
    if (inm) st->client_inm = *inm;
    if (ims) st->client_ims = *ims;
    if (req->method != PT_METHOD_GET && req->method != PT_METHOD_HEAD) {
        st->unsafe = !pt_method_idempotent(req->method) || req->method == PT_METHOD_PUT ||
                     req->method == PT_METHOD_DELETE;
        st->status = "portico; fwd=bypass; detail=method";
        pt_metric_add(c->m_requests, R_BYPASS, 1);
        return PT_PLUGIN_CONTINUE;
    }
    /* credentials: an Authorization field, or a caller an authentication
     * plugin before this one named (it removed its credential) */
    if (!c->allow_authorization && (pt_headers_get(&req->headers, "authorization") || authenticated(txn))) {
        st->status = "portico; fwd=bypass; detail=authorization";
        pt_metric_add(c->m_requests, R_BYPASS, 1);
        return PT_PLUGIN_CONTINUE;
    }
    if (pt_headers_get(&req->headers, "range")) {
        st->status = "portico; fwd=bypass; detail=range";
        pt_metric_add(c->m_requests, R_BYPASS, 1);
        return PT_PLUGIN_CONTINUE;
    }
    pt_cache_cc rcc;
    pt_cache_cc_parse(&req->headers, true, &rcc);
    /* if forwarded, may the response be stored? (a body on a GET never enters the key: its answer is not stored) */
    st->may_store = req->method == PT_METHOD_GET && !rcc.no_store && !req->has_body;
    pt_plugin_result r = lookup(txn, c, st);
    if (r == PT_PLUGIN_CONTINUE && !st->served) {
        if (req->has_body) st->status = "portico; fwd=bypass; detail=request-body";
        if (!st->stale && !st->waited) pt_metric_add(c->m_requests, req->has_body ? R_BYPASS : R_MISS, 1);
    }
    return r;
}

static void cache_on_pause_cancelled(pt_txn *txn, const void *conf, void *state, pt_side side)
{
    leave_wait(state);
}

/* ========================================================= response side */

/* Header fields that are not stored with a response. */
static bool unstored_field(pt_str n)
{
    return pt_str_ieq_lit(n, "age") || pt_str_ieq_lit(n, "cache-status") || pt_str_ieq_lit(n, "set-cookie") ||
           pt_str_ieq_lit(n, "connection") || pt_str_ieq_lit(n, "proxy-authenticate");
}

/* Builds an entry (not stored) for a response, or NULL when it may not be
 * stored. `p` NULL: nothing to do (a no-op used by the registry). */
static pt_cache_entry *entry_from_response(pt_cache_store *s, pt_str key, int status, const pt_headers *h,
                                           pt_str body, const pt_cache_policy *p, int64_t request_time,
                                           int64_t now, int64_t dswr, int64_t dsie, const char *tag_header)
{
    if (!p) return NULL;
    pt_cache_cc cc;
    pt_cache_cc_parse(h, false, &cc);
    if (pt_cache_unstorable(p, status, h, &cc)) return NULL;
    size_t headlen = 0;
    for (uint32_t i = 0; i < h->n; i++)
        if (!unstored_field(h->v[i].name)) headlen += h->v[i].name.n + h->v[i].value.n + 4;
    const pt_str *tags = tag_header ? pt_headers_get(h, tag_header) : NULL;
    pt_cache_entry *e = pt_cache_entry_new(s, key, headlen, body.n, tags ? tags->n : 0);
    if (!e) return NULL;
    char *w = e->head;
    for (uint32_t i = 0; i < h->n; i++) {
        if (unstored_field(h->v[i].name)) continue;
        w += sprintf(w, "%.*s: %.*s\r\n", (int)h->v[i].name.n, h->v[i].name.p, (int)h->v[i].value.n,
                     h->v[i].value.p);
    }
    e->headlen = (size_t)(w - e->head);
    if (body.n) memcpy(e->body, body.p, body.n);
    if (tags) memcpy(e->tags, tags->p, tags->n);
    e->meta = (pt_cache_meta){.status = status, .response_time = now,
                              .initial_age = pt_cache_initial_age(h, request_time, now),
                              .lifetime = pt_cache_lifetime(p, h, &cc, now),
                              .swr = cc.swr >= 0 ? cc.swr : dswr, .sie = cc.sie >= 0 ? cc.sie : dsie,
                              .must_revalidate = cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage >= 0,
                              .no_cache = cc.no_cache};
    return e;
}

/* Stores a Vary marker under the primary key when the response varies. */
static void put_vary_marker(const pt_cache_conf *c, cache_state *st, uint64_t mono)
{
    pt_cache_entry *m = pt_cache_entry_new(c->store, st->key, st->vary.n, 0, 0);
    if (!m) return;
    memcpy(m->head, st->vary.p, st->vary.n);
    m->meta.vary_marker = true;
    pt_cache_store_put(c->store, m, mono);
    pt_cache_entry_release(m);
}

/* The Vary names of `h`, lowercased, one per line; empty when none. */
static pt_str vary_names(pt_arena *a, const pt_headers *h)
{
    size_t cap = 0;
    for (uint32_t i = 0; i < h->n; i++)
        if (pt_str_ieq_lit(h->v[i].name, "vary")) cap += h->v[i].value.n + 1;
    if (!cap) return PT_STR_NULL;
    char *b = pt_arena_alloc(a, cap);
    size_t n = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (!pt_str_ieq_lit(h->v[i].name, "vary")) continue;
        pt_str rest = h->v[i].value, tok;
        while (pt_list_next(&rest, &tok)) {
            if (n) b[n++] = '\n';
            for (size_t k = 0; k < tok.n; k++) {
                char ch = tok.p[k];
                b[n++] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
            }
        }
    }
    return pt_str_make(b, n);
}

static void set_status_header(pt_txn *txn, cache_state *st)
{
    pt_response *res = pt_txn_response(txn);
    const char *v = st->status ? st->status : "portico; fwd=bypass";
    pt_arena *a = pt_txn_arena(txn);
    const pt_str *prev = pt_headers_get(&res->headers, "cache-status");
    if (prev && !st->served) {
        char *both = pt_arena_printf(a, "%.*s, %s", (int)prev->n, prev->p, v);
        pt_headers_set(&res->headers, a, PT_STR_LIT("Cache-Status"), pt_str_c(both));
    } else {
        pt_headers_set(&res->headers, a, PT_STR_LIT("Cache-Status"), pt_str_c(v));
    }
}

/* Begins storing the response being forwarded (its body is collected as
 * it streams to the client). */
static void begin_store(pt_txn *txn, const pt_cache_conf *c, cache_state *st, pt_response *res)
{
    pt_arena *a = pt_txn_arena(txn);
    pt_cache_cc cc;
    pt_cache_cc_parse(&res->headers, false, &cc);
    const char *why = pt_cache_unstorable(&c->policy, res->status, &res->headers, &cc);
    if (why) {
        st->status = pt_arena_printf(a, "%s; detail=%s", st->status ? st->status : "portico; fwd=uri-miss", why);
        end_fill(st);
        return;
    }
    st->vary = vary_names(a, &res->headers);
    /* the key from this response's Vary (a marker found at lookup may name
     * other fields, or the origin stopped varying: then the entry replaces
     * the marker under the primary key) */
    st->vkey = st->vary.n ? variant_key(txn, st->key, st->vary) : st->key;
    if (st->filler && !pt_str_eq(st->vkey, st->fill_key))
        end_fill(st); /* waiters of the other key look again (and find the marker once stored) */
    int64_t now = wall_now(txn);
    size_t headlen = 0;
    for (uint32_t i = 0; i < res->headers.n; i++)
        if (!unstored_field(res->headers.v[i].name))
            headlen += res->headers.v[i].name.n + res->headers.v[i].value.n + 4;
    char *head = pt_arena_alloc(a, headlen + 1), *w = head;
    for (uint32_t i = 0; i < res->headers.n; i++) {
        if (unstored_field(res->headers.v[i].name)) continue;
        w += sprintf(w, "%.*s: %.*s\r\n", (int)res->headers.v[i].name.n, res->headers.v[i].name.p,
                     (int)res->headers.v[i].value.n, res->headers.v[i].value.p);
    }
    st->head = pt_str_make(head, (size_t)(w - head));
    const pt_str *tags = c->tag_header ? pt_headers_get(&res->headers, c->tag_header) : NULL;
    st->tags = tags ? pt_arena_str(a, *tags) : PT_STR_NULL;
    /* what the entry will charge besides its body: max_object bounds the whole */
    st->overhead = sizeof(pt_cache_entry) + st->vkey.n + 1 + st->head.n + st->tags.n + PT_CACHE_MALLOC_OVERHEAD;
    if (st->overhead > c->max_object ||
        (res->content_length > 0 && (uint64_t)res->content_length > c->max_object - st->overhead)) {
        st->status = pt_arena_printf(a, "%s; detail=too-large", st->status ? st->status : "portico; fwd=uri-miss");
        end_fill(st);
        return;
    }
    st->meta = (pt_cache_meta){.status = res->status, .response_time = now,
                               .initial_age = pt_cache_initial_age(&res->headers, st->request_time, now),
                               .lifetime = pt_cache_lifetime(&c->policy, &res->headers, &cc, now),
                               .swr = cc.swr >= 0 ? cc.swr : c->default_swr,
                               .sie = cc.sie >= 0 ? cc.sie : c->default_sie,
                               .must_revalidate = cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage >= 0,
                               .no_cache = cc.no_cache};
    st->storing = true;
    st->status = pt_arena_printf(a, "%s; stored", st->status ? st->status : "portico; fwd=uri-miss");
    if (st->filler && res->has_body && res->content_length > 0) {
        /* the waiters read it as it arrives (its length is known and within max_object) */
        st->pending = pt_cache_pending_new(st->head, res->status, (size_t)res->content_length);
        pt_cache_fill_publish(c->store, st->fill_key, st->pending);
    }
}

static void finish_store(pt_txn *txn, const pt_cache_conf *c, cache_state *st)
{
    uint64_t mono = pt_loop_now(pt_txn_loop(txn));
    pt_cache_entry *e = pt_cache_entry_new(c->store, st->vkey, st->head.n, st->len, st->tags.n);
    if (e) {
        memcpy(e->head, st->head.p, st->head.n);
        if (st->len) memcpy(e->body, st->buf, st->len);
        if (st->tags.n) memcpy(e->tags, st->tags.p, st->tags.n);
        e->meta = st->meta;
        if (st->vary.n) put_vary_marker(c, st, mono);
        pt_cache_store_put(c->store, e, mono);
        pt_cache_entry_release(e);
        pt_metric_add(c->m_stores, 0, 1);
        store_gauges(c);
    }
    if (st->pending) pt_cache_pending_end(st->pending, true);
    stop_storing(st);
    end_fill(st);
}

/* Answers from the stale entry instead of an upstream failure. */
static bool stale_if_error(pt_txn *txn, const pt_cache_conf *c, cache_state *st, int status)
{
    pt_cache_entry *e = st->stale;
    if (!e || e->meta.must_revalidate || e->meta.sie <= 0) return false;
    int64_t ttl = e->meta.lifetime - entry_age(e, wall_now(txn));
    if (-ttl >= e->meta.sie) return false;
    pt_metric_add(c->m_requests, R_STALE, 1);
    char *s = pt_arena_printf(pt_txn_arena(txn), "portico; fwd=stale; fwd-status=%d; ttl=%lld; detail=stale-if-error",
                              status, (long long)ttl);
    serve_entry(txn, st, e, s);
    return true;
}

/* The upstream confirmed the stale entry (304): refresh and serve it. */
static void refreshed(pt_txn *txn, const pt_cache_conf *c, cache_state *st, pt_response *res)
{
    pt_cache_entry *old = st->stale;
    /* the stored fields, updated with the 304's (RFC 9111 §4.3.4) */
    pt_headers merged = {0};
    pt_arena *a = pt_txn_arena(txn);
    pt_str rest = pt_str_make(old->head, old->headlen), n, v;
    while (pt_field_line_next(&rest, &n, &v))
        if (!pt_headers_get(&res->headers, pt_arena_strndup(a, n.p, n.n))) pt_headers_add(&merged, a, n, v);
    for (uint32_t i = 0; i < res->headers.n; i++)
        if (!pt_str_ieq_lit(res->headers.v[i].name, "content-length"))
            pt_headers_add(&merged, a, res->headers.v[i].name, res->headers.v[i].value);
    int64_t now = wall_now(txn);
    pt_cache_entry *e = entry_from_response(c->store, st->vkey, old->meta.status, &merged,
                                            pt_str_make(old->body, old->bodylen), &c->policy, st->request_time,
                                            now, c->default_swr, c->default_sie, c->tag_header);
    pt_metric_add(c->m_requests, R_REVALIDATED, 1);
    const char *s = pt_arena_printf(a, "%s; fwd-status=304%s", st->status, e ? "; stored" : "");
    if (e) {
        pt_cache_store_put(c->store, e, pt_loop_now(pt_txn_loop(txn)));
        serve_entry(txn, st, e, s);
        pt_cache_entry_release(e);
    } else {
        serve_entry(txn, st, old, s);
    }
}

static pt_plugin_result cache_on_response_headers(pt_txn *txn, const void *conf, void *state)
{
    const pt_cache_conf *c = conf;
    cache_state *st = state;
    pt_response *res = pt_txn_response(txn);
    stop_storing(st);
    if (!st->ran || st->served) {
        set_status_header(txn, st);
        return PT_PLUGIN_CONTINUE;
    }
    pt_txn_stats stats;
    pt_txn_get_stats(txn, &stats);
    if (stats.responder) {
        /* a later plugin answered: not the origin's response */
        end_fill(st);
        st->status = "portico; fwd=bypass; detail=local-answer";
        set_status_header(txn, st);
        return PT_PLUGIN_CONTINUE;
    }
    if (st->unsafe) {
        /* RFC 9111 §4.4: a successful unsafe request invalidates the target */
        if (res->status >= 200 && res->status < 400)
            pt_cache_store_purge(c->store, PT_CACHE_PURGE_KEY, st->key);
        set_status_header(txn, st);
        return PT_PLUGIN_CONTINUE;
    }
    if ((stats.upstream_failed || res->status >= 500) && stale_if_error(txn, c, st, res->status)) {
        end_fill(st);
        return PT_PLUGIN_RESPOND;
    }
    if (res->status == 304 && st->stale && pt_txn_request(txn)->method == PT_METHOD_GET) {
        refreshed(txn, c, st, res);
        end_fill(st);
        return PT_PLUGIN_RESPOND;
    }
    if (st->stale && st->status && strncmp(st->status, "portico; fwd=stale", 18) == 0)
        pt_metric_add(c->m_requests, R_MISS, 1);
    if (st->may_store && !c->allow_authorization && authenticated(txn)) {
        /* an authentication plugin after the cache named the caller: personal */
        st->may_store = false;
        st->status = "portico; fwd=bypass; detail=authorization";
    }
    if (st->may_store) begin_store(txn, c, st, res);
    else end_fill(st);
    if (st->storing && !res->has_body) finish_store(txn, c, st);
    set_status_header(txn, st);
    return PT_PLUGIN_CONTINUE;
}

static pt_plugin_result cache_on_response_body(pt_txn *txn, const void *conf, void *state, pt_body *body)
{
    const pt_cache_conf *c = conf;
    cache_state *st = state;
    if (!st->storing) return PT_PLUGIN_CONTINUE;
    size_t n = pt_body_len(body);
    if (st->overhead + st->len + n > c->max_object) {
        /* over the object bound: forwarded, not stored */
        stop_storing(st);
        end_fill(st);
        return PT_PLUGIN_CONTINUE;
    }
    if (st->len + n > st->cap) {
        size_t cap = st->cap ? st->cap * 2 : 4096;
        while (cap < st->len + n) cap *= 2;
        if (cap > c->max_object) cap = c->max_object;
        st->buf = pt_xrealloc(st->buf, cap);
        st->cap = cap;
    }
    if (n) memcpy(st->buf + st->len, pt_body_data(body), n);
    st->len += n;
    if (st->pending) pt_cache_pending_append(st->pending, pt_body_data(body), n);
    if (pt_body_last(body)) {
        pt_txn_stats stats;
        pt_txn_get_stats(txn, &stats);
        if (!stats.aborted) finish_store(txn, c, st);
        else stop_storing(st);
    }
    return PT_PLUGIN_CONTINUE;
}

const pt_plugin_type pt_plugin_cache = {
    .name = "cache",
    .configure = cache_configure,
    .state_size = sizeof(cache_state),
    .on_request_headers = cache_on_request_headers,
    .on_response_headers = cache_on_response_headers,
    .on_response_body = cache_on_response_body,
    .on_pause_cancelled = cache_on_pause_cancelled,
};
