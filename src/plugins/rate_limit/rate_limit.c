/* rate_limit.c — per-key request limits (GCRA or sliding window), local to
 * the process and shared by its workers without locks; 429 problem+json
 * with Retry-After over the limit, optional delaying of excess requests,
 * and the IETF RateLimit / RateLimit-Policy fields
 * (draft-ietf-httpapi-ratelimit-headers-12) on every response of the route.
 * Configuration in rate_limit.h; counters in rl_table.c. */
#include "plugins/rate_limit/rate_limit.h"

#include <stdio.h>
#include <string.h>

#include "plugins/plugin_util.h"

#define US_PER_S 1000000ULL
#define MAX_PERIOD_S (366ULL * 24 * 3600)
#define DEFAULT_MAX_KEYS 100000
#define MAX_MAX_KEYS 100000000ULL
#define MAX_QUEUE 100000

enum { D_ALLOWED, D_DELAYED, D_REJECTED };
static const char *const decision_values[] = {"allowed", "delayed", "rejected", NULL};
static const pt_metric_dim decision_dims[] = {{"decision", decision_values}};
static const char *const decision_labels[] = {"zone", "limit", NULL};
static const pt_metric_desc decisions_desc = {
    .name = "portico_rate_limit_decisions_total",
    .help = "Requests decided by rate_limit, by zone, limit and decision.",
    .type = PT_METRIC_COUNTER,
    .labels = decision_labels,
    .dims = decision_dims,
    .ndims = 1,
};

static const char *const zone_labels[] = {"zone", NULL};
static const pt_metric_desc redis_errors_desc = {
    .name = "portico_rate_limit_redis_errors_total",
    .help = "rate_limit decisions Redis could not make (down, timeout, error), decided by on_redis_error instead.",
    .type = PT_METRIC_COUNTER,
    .labels = zone_labels,
};

/* ------------------------------------------------------------ configuration */

/* A policy identifier: visible ASCII without '"' or '\' (an sf-string). */
static bool policy_name_ok(const char *s)
{
    if (!*s || strlen(s) > 64) return false;
    for (; *s; s++)
        if (*s < 0x20 || *s > 0x7e || *s == '"' || *s == '\\') return false;
    return true;
}

static bool read_limit(pt_conf_ctx *ctx, const pt_conf_node *n, rl_conf *c, rl_limit_conf *l, rl_algo dflt_algo,
                       uint64_t queue)
{
    static const char *const allowed[] = {"name", "requests", "per", "algorithm", "queue", "consumers", "groups",
                                          NULL};
    if (!pt_conf_check_keys(ctx, n, allowed, "rate_limit limit")) return false;
    bool ok = true;
    int64_t req = 0;
    const pt_conf_node *r = pt_conf_get(n, "requests"), *per = pt_conf_get(n, "per");
    if (!r || !per) {
        pt_conf_error(ctx, n, "rate_limit: each limit needs 'requests' and 'per', e.g. {requests: 10, per: 1s}");
        return false;
    }
    if (!pt_conf_int(ctx, r, 1, 1000000000, &req)) ok = false;
    uint64_t per_ms = 0;
    if (!pt_conf_duration_ms(ctx, per, &per_ms)) ok = false;
    else if (per_ms < 1000 || per_ms % 1000 || per_ms / 1000 > MAX_PERIOD_S) {
        pt_conf_error(ctx, per, "rate_limit: 'per' must be whole seconds between 1s and 366 days");
        ok = false;
    }
    l->lim.algo = dflt_algo;
    const pt_conf_node *a = pt_conf_get(n, "algorithm");
    if (a) {
        if (a->kind == PT_NODE_SCALAR && a->scalar && strcmp(a->scalar, "gcra") == 0) l->lim.algo = RL_GCRA;
        else if (a->kind == PT_NODE_SCALAR && a->scalar && strcmp(a->scalar, "sliding_window") == 0)
            l->lim.algo = RL_SLIDING;
        else {
            pt_conf_error(ctx, a, "rate_limit: 'algorithm' must be gcra or sliding_window");
            ok = false;
        }
    }
    int64_t q = (int64_t)queue;
    const pt_conf_node *qn = pt_conf_get(n, "queue");
    if (qn && !pt_conf_int(ctx, qn, 0, MAX_QUEUE, &q)) ok = false;
    if (!ok) return false;
    l->lim.requests = (uint64_t)req;
    l->lim.period_us = per_ms * 1000;
    l->lim.interval_us = l->lim.period_us / l->lim.requests;
    l->lim.queue = (uint64_t)q;
    if (l->lim.algo == RL_SLIDING && l->lim.requests > RL_SLIDING_MAX) {
        pt_conf_error(ctx, r, "rate_limit: sliding_window counts at most %u requests per window", RL_SLIDING_MAX);
        return false;
    }
    if (l->lim.algo == RL_SLIDING && l->lim.queue) {
        pt_conf_error(ctx, qn ? qn : n, "rate_limit: 'queue' (delaying excess requests) needs algorithm gcra");
        return false;
    }
    if (l->lim.algo == RL_GCRA && l->lim.interval_us == 0) {
        pt_conf_error(ctx, r, "rate_limit: at most 1000000 requests per second");
        return false;
    }
    const pt_conf_node *nm = pt_conf_get(n, "name");
    if (nm) {
        char *s = NULL;
        if (!pt_conf_string(ctx, nm, &s)) return false;
        if (!policy_name_ok(s)) {
            pt_conf_error(ctx, nm, "rate_limit: 'name' must be 1-64 visible ASCII characters without '\"' or '\\'");
            return false;
        }
        l->name = s;
    } else {
        l->name = pt_arena_printf(ctx->arena, "%lld/%llus", (long long)req, (unsigned long long)(per_ms / 1000));
    }
    if (!pt_plugin_string_list(ctx, pt_conf_get(n, "consumers"), "rate_limit", "consumers", true, &l->consumers,
                               &l->nconsumers))
        return false;
    if (!pt_plugin_string_list(ctx, pt_conf_get(n, "groups"), "rate_limit", "groups", true, &l->groups,
                               &l->ngroups))
        return false;
    if (l->nconsumers || l->ngroups) c->needs_consumer = true;
    return true;
}

/* The response fields' constant parts, built once: each limit's
 * RateLimit-Policy item and the start of its RateLimit item, and the whole
 * RateLimit-Policy value for requests every limit applies to. */
static void build_field_parts(pt_conf_ctx *ctx, rl_conf *c)
{
    char *all = NULL;
    for (size_t i = 0; i < c->nlimits; i++) {
        rl_limit_conf *l = &c->limits[i];
        l->policy_item = pt_str_c(pt_arena_printf(ctx->arena, "\"%s\";q=%llu;w=%llu", l->name,
                                                  (unsigned long long)l->lim.requests,
                                                  (unsigned long long)(l->lim.period_us / US_PER_S)));
        l->live_prefix = pt_str_c(pt_arena_printf(ctx->arena, "\"%s\";r=", l->name));
        all = all ? pt_arena_printf(ctx->arena, "%s, %s", all, l->policy_item.p) : (char *)l->policy_item.p;
    }
    c->policy_all = pt_str_c(all);
}

/* Writes v in decimal at p; returns the end. */
static char *put_u64(char *p, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n) *p++ = tmp[--n];
    return p;
}

static void *rl_configure(pt_conf_ctx *ctx, const pt_conf_node *node)
{
    static const char *const allowed[] = {"key",  "limits", "algorithm", "queue",          "max_keys", "headers",
                                          "zone", "mode",   "redis",     "on_redis_error", NULL};
    if (!node || node->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, node, "rate_limit: expected a mapping with 'limits', e.g. {limits: [{requests: 10, per: 1s}]}");
        return NULL;
    }
    if (!pt_conf_check_keys(ctx, node, allowed, "rate_limit")) return NULL;
    rl_conf *c = pt_arena_calloc(ctx->arena, sizeof(*c));
    c->headers = true;
    bool ok = pt_plugin_key_read(ctx, pt_conf_get(node, "key"), "rate_limit", PT_PLUGIN_KEY_CONSUMER, &c->key);
    if (c->key.uses_consumer) c->needs_consumer = true;

    rl_algo algo = RL_GCRA;
    const pt_conf_node *a = pt_conf_get(node, "algorithm");
    if (a) {
        if (a->kind == PT_NODE_SCALAR && a->scalar && strcmp(a->scalar, "sliding_window") == 0) algo = RL_SLIDING;
        else if (!(a->kind == PT_NODE_SCALAR && a->scalar && strcmp(a->scalar, "gcra") == 0)) {
            pt_conf_error(ctx, a, "rate_limit: 'algorithm' must be gcra or sliding_window");
            ok = false;
        }
    }
    int64_t queue = 0, max_keys = DEFAULT_MAX_KEYS;
    const pt_conf_node *q = pt_conf_get(node, "queue"), *mk = pt_conf_get(node, "max_keys");
    if (q && !pt_conf_int(ctx, q, 0, MAX_QUEUE, &queue)) ok = false;
    if (mk && !pt_conf_int(ctx, mk, RL_WAYS, (int64_t)MAX_MAX_KEYS, &max_keys)) ok = false;
    const pt_conf_node *h = pt_conf_get(node, "headers");
    if (h && !pt_conf_bool(ctx, h, &c->headers)) ok = false;
    const char *zone = pt_conf_scope(ctx);
    const pt_conf_node *z = pt_conf_get(node, "zone");
    if (z) {
        char *s = NULL;
        if (!pt_conf_string(ctx, z, &s) || !policy_name_ok(s)) {
            if (s) pt_conf_error(ctx, z, "rate_limit: 'zone' must be 1-64 visible ASCII characters");
            ok = false;
        } else {
            zone = pt_arena_printf(ctx->arena, "zone:%s", s);
        }
    }

    const pt_conf_node *mode = pt_conf_get(node, "mode"), *rb = pt_conf_get(node, "redis");
    if (mode) {
        if (mode->kind == PT_NODE_SCALAR && mode->scalar && strcmp(mode->scalar, "redis") == 0) c->redis_mode = true;
        else if (!(mode->kind == PT_NODE_SCALAR && mode->scalar && strcmp(mode->scalar, "local") == 0)) {
            pt_conf_error(ctx, mode, "rate_limit: 'mode' must be local or redis");
            ok = false;
        }
    }
    if (c->redis_mode && !rb) {
        pt_conf_error(ctx, mode, "rate_limit: mode redis needs a 'redis' block (rate_limit.redis: {address: ...})");
        ok = false;
    } else if (c->redis_mode) {
        c->redis = pt_redis_conf_read(ctx, rb, "rate_limit.redis");
        if (!c->redis) ok = false;
        else c->script = rl_redis_script(ctx);
    } else if (rb) {
        pt_conf_error(ctx, rb, "rate_limit: 'redis' needs mode: redis");
        ok = false;
    }
    const pt_conf_node *oe = pt_conf_get(node, "on_redis_error");
    if (oe) {
        static const char *const pol[] = {"local", "allow", "deny"};
        bool found = false;
        for (size_t i = 0; i < PT_ARRAY_LEN(pol) && oe->kind == PT_NODE_SCALAR && oe->scalar; i++)
            if (strcmp(oe->scalar, pol[i]) == 0) {
                c->on_redis_error = (rl_on_error)i;
                found = true;
            }
        if (!found) {
            pt_conf_error(ctx, oe, "rate_limit: 'on_redis_error' must be local, allow or deny");
            ok = false;
        } else if (!c->redis_mode) {
            pt_conf_error(ctx, oe, "rate_limit: 'on_redis_error' needs mode: redis");
            ok = false;
        }
    }

    const pt_conf_node *lims = pt_conf_get(node, "limits");
    if (!lims || lims->kind != PT_NODE_SEQ || lims->n == 0 || lims->n > RL_MAX_LIMITS) {
        pt_conf_error(ctx, lims ? lims : node, "rate_limit: 'limits' must be a list of 1 to %d limits", RL_MAX_LIMITS);
        return NULL;
    }
    for (size_t i = 0; i < lims->n; i++) {
        rl_limit_conf *l = &c->limits[c->nlimits];
        if (!read_limit(ctx, lims->vals[i], c, l, algo, (uint64_t)queue)) {
            ok = false;
            continue;
        }
        for (size_t j = 0; j < c->nlimits; j++)
            if (strcmp(c->limits[j].name, l->name) == 0) {
                pt_conf_error(ctx, lims->vals[i], "rate_limit: two limits named \"%s\" (give them distinct 'name's)",
                              l->name);
                ok = false;
            }
        c->nlimits++;
    }
    if (!ok) return NULL;

    for (size_t i = 0; i < c->nlimits; i++) {
        rl_limit_conf *l = &c->limits[i];
        /* Everything whose change must start the counters afresh. */
        char *sk = pt_arena_printf(ctx->arena, "rate_limit|%s|%s|%d|%llu|%llu|%s|%lld", zone, l->name,
                                   (int)l->lim.algo, (unsigned long long)l->lim.requests,
                                   (unsigned long long)l->lim.period_us, c->key.spec, (long long)max_keys);
        l->table = pt_conf_shared(ctx, lims->vals[i], pt_str_c(sk), rl_table_bytes((uint64_t)max_keys),
                                  rl_table_init);
        if (!l->table) return NULL;
        l->decisions = pt_conf_metric(ctx, lims->vals[i], &decisions_desc, (const char *const[]){zone, l->name});
        if (c->redis_mode) {
            /* the same identity as the local table's key: a change starts afresh */
            char *pfx = pt_arena_printf(ctx->arena, "portico:rl:%s:%s:%d:%llu:%llu:%s:", zone, l->name, (int)l->lim.algo,
                                        (unsigned long long)l->lim.requests, (unsigned long long)l->lim.period_us,
                                        c->key.spec);
            l->redis_prefix = pfx;
            l->redis_prefix_len = strlen(pfx);
        }
    }
    if (c->redis_mode) c->redis_errors = pt_conf_metric(ctx, node, &redis_errors_desc, (const char *const[]){zone});
    build_field_parts(ctx, c);
    return c;
}

/* ------------------------------------------------------------ the request */

/* Does limit l apply to the caller? (consumers / groups filters) */
static bool limit_applies(const rl_limit_conf *l, const pt_consumer *who)
{
    if (!l->nconsumers && !l->ngroups) return true;
    if (!who) return false;
    for (size_t i = 0; i < l->nconsumers; i++)
        if (strcmp(l->consumers[i], who->name) == 0) return true;
    for (size_t i = 0; i < l->ngroups; i++)
        for (size_t g = 0; g < who->ngroups; g++)
            if (strcmp(l->groups[i], who->groups[g]) == 0) return true;
    return false;
}

static uint64_t ceil_s(uint64_t us) { return (us + US_PER_S - 1) / US_PER_S; }

static void rl_timer_fired(struct pt_loop *loop, pt_timer *t)
{
    rl_state *st = t->data;
    pt_txn_resume(st->txn, PT_SIDE_REQUEST, PT_PLUGIN_CONTINUE);
}

static void rl_pause_cancelled(pt_txn *txn, const void *conf, void *state, pt_side side)
{
    rl_state *st = state;
    if (pt_timer_active(&st->timer)) pt_timer_stop(st->loop, &st->timer);
}

static void rl_cleanup(void *data)
{
    rl_state *st = data;
    if (pt_timer_active(&st->timer)) pt_timer_stop(st->loop, &st->timer);
}

/* The verdicts of every applied limit are in st: answer 429 for the first
 * refusal, else pause for the longest delay, else go on. */
static pt_plugin_result conclude(pt_txn *txn, const rl_conf *c, rl_state *st)
{
    uint64_t delay = 0;
    for (size_t i = 0; i < c->nlimits; i++) {
        if (!st->applied[i]) continue;
        const rl_limit_conf *l = &c->limits[i];
        if (st->verdict[i].allowed) {
            if (st->verdict[i].delay_us > delay) delay = st->verdict[i].delay_us;
            continue;
        }
        pt_metric_add(l->decisions, D_REJECTED, 1);
        uint64_t retry = ceil_s(st->verdict[i].retry_after_us);
        if (retry == 0) retry = 1;
        char detail[160], ra[24];
        snprintf(detail, sizeof(detail), "rate limit \"%s\" exceeded (%llu requests per %llu s); retry in %llu s",
                 l->name, (unsigned long long)l->lim.requests, (unsigned long long)(l->lim.period_us / US_PER_S),
                 (unsigned long long)retry);
        pt_txn_respond_problem(txn, 429, detail);
        int n = snprintf(ra, sizeof(ra), "%llu", (unsigned long long)retry);
        pt_txn_respond_header(txn, PT_STR_LIT("Retry-After"), pt_str_make(ra, (size_t)n));
        return PT_PLUGIN_RESPOND;
    }
    for (size_t i = 0; i < c->nlimits; i++)
        if (st->applied[i])
            pt_metric_add(c->limits[i].decisions, delay && st->verdict[i].delay_us ? D_DELAYED : D_ALLOWED, 1);
    if (!delay) return PT_PLUGIN_CONTINUE;
    st->txn = txn;
    st->loop = pt_txn_loop(txn);
    pt_arena_on_cleanup(pt_txn_arena(txn), rl_cleanup, st);
    pt_timer_start(st->loop, &st->timer, (delay + 999) / 1000, rl_timer_fired, st);
    return PT_PLUGIN_PAUSE;
}

/* Local mode (and the fallback of mode redis): the process's tables. A
 * limit that refuses makes the ones before it give the request back. */
static pt_plugin_result decide_local(pt_txn *txn, const rl_conf *c, rl_state *st, pt_str key)
{
    uint64_t now = rl_now_us();
    uint64_t hashes[RL_MAX_LIMITS];
    for (size_t i = 0; i < c->nlimits; i++) {
        if (!st->applied[i]) continue;
        const rl_limit_conf *l = &c->limits[i];
        hashes[i] = rl_hash(l->table, key.p, key.n);
        rl_take(l->table, &l->lim, hashes[i], now, &st->verdict[i]);
        if (st->verdict[i].allowed) continue;
        for (size_t j = 0; j < i; j++)
            if (st->applied[j]) {
                rl_give_back(c->limits[j].table, &c->limits[j].lim, hashes[j], now);
                st->verdict[j].remaining++;
            }
        for (size_t j = i + 1; j < c->nlimits; j++) st->applied[j] = 0; /* not evaluated */
        break;
    }
    return conclude(txn, c, st);
}

/* Redis could not decide: on_redis_error says what happens. */
static pt_plugin_result redis_failed(pt_txn *txn, const rl_conf *c, rl_state *st, pt_str key)
{
    pt_metric_add(c->redis_errors, 0, 1);
    switch (c->on_redis_error) {
    case RL_ON_ERROR_ALLOW:
        memset(st->applied, 0, sizeof(st->applied)); /* nothing was counted: no fields */
        return PT_PLUGIN_CONTINUE;
    case RL_ON_ERROR_DENY:
        memset(st->applied, 0, sizeof(st->applied));
        pt_txn_respond_problem(txn, 503, "the rate limit store (Redis) is unavailable");
        pt_txn_respond_header(txn, PT_STR_LIT("Retry-After"), PT_STR_LIT("1"));
        return PT_PLUGIN_RESPOND;
    default:
        return decide_local(txn, c, st, key);
    }
}

static void redis_done(void *data, const pt_redis_result *r)
{
    rl_state *st = data;
    const rl_conf *c = st->conf;
    pt_txn *txn = st->txn;
    pt_plugin_result res;
    if (r->error == PT_REDIS_OK && rl_redis_verdicts(r->reply, st)) {
        res = conclude(txn, c, st);
    } else {
        char buf[512];
        res = redis_failed(txn, c, st, pt_plugin_key_build(txn, &c->key, buf, sizeof(buf)));
    }
    if (res != PT_PLUGIN_PAUSE) pt_txn_resume(txn, PT_SIDE_REQUEST, res); /* PAUSE: the delay timer resumes */
}

static pt_plugin_result rl_on_request_headers(pt_txn *txn, const void *conf, void *state)
{
    const rl_conf *c = conf;
    rl_state *st = state;
    /* after the authentication plugins: a request without credentials gets
     * its 401 and uses no quota */
    if (c->needs_consumer || pt_txn_auth_started(txn)) {
        pt_plugin_result r = pt_txn_auth_settle(txn);
        if (r != PT_PLUGIN_CONTINUE) return r;
    }
    const pt_consumer *who = pt_txn_consumer(txn);
    char buf[512];
    pt_str key = pt_plugin_key_build(txn, &c->key, buf, sizeof(buf));
    st->evaluated = true;
    bool any = false;
    for (size_t i = 0; i < c->nlimits; i++)
        if (limit_applies(&c->limits[i], who)) st->applied[i] = 1, any = true;
    if (!any) return PT_PLUGIN_CONTINUE;
    if (!c->redis_mode) return decide_local(txn, c, st, key);
    st->conf = c;
    st->txn = txn;
    pt_redis_error err;
    if (rl_redis_start(txn, c, st, key, redis_done, &err)) return PT_PLUGIN_PAUSE;
    return redis_failed(txn, c, st, key);
}

/* RateLimit-Policy and RateLimit on the response (also on our own 429),
 * from the parts built at configure time: no formatting but the numbers. */
static pt_plugin_result rl_on_response_headers(pt_txn *txn, const void *conf, void *state)
{
    const rl_conf *c = conf;
    const rl_state *st = state;
    if (!c->headers || !st->evaluated) return PT_PLUGIN_CONTINUE;
    pt_response *resp = pt_txn_response(txn);
    if (!resp) return PT_PLUGIN_CONTINUE;
    size_t napplied = 0, plen = 0, llen = 0;
    for (size_t i = 0; i < c->nlimits; i++)
        if (st->applied[i]) {
            napplied++;
            plen += c->limits[i].policy_item.n + 2;
            llen += c->limits[i].live_prefix.n + 2 + 20 + 3 + 20;
        }
    if (!napplied) return PT_PLUGIN_CONTINUE;
    pt_arena *a = pt_txn_arena(txn);
    pt_str policy = c->policy_all; /* the configuration outlives the request */
    char *live = pt_arena_alloc(a, llen + (napplied == c->nlimits ? 0 : plen)), *p = live;
    for (size_t i = 0, k = 0; i < c->nlimits; i++) {
        if (!st->applied[i]) continue;
        const rl_limit_conf *l = &c->limits[i];
        if (k++) *p++ = ',', *p++ = ' ';
        memcpy(p, l->live_prefix.p, l->live_prefix.n);
        p = put_u64(p + l->live_prefix.n, st->verdict[i].remaining);
        memcpy(p, ";t=", 3);
        p = put_u64(p + 3, ceil_s(st->verdict[i].reset_us));
    }
    size_t ln = (size_t)(p - live);
    if (napplied != c->nlimits) { /* only the limits that applied are advertised */
        char *q = p, *start = p;
        for (size_t i = 0, k = 0; i < c->nlimits; i++) {
            if (!st->applied[i]) continue;
            if (k++) *q++ = ',', *q++ = ' ';
            memcpy(q, c->limits[i].policy_item.p, c->limits[i].policy_item.n);
            q += c->limits[i].policy_item.n;
        }
        policy = pt_str_make(start, (size_t)(q - start));
    }
    pt_headers_add(&resp->headers, a, PT_STR_LIT("RateLimit-Policy"), policy);
    pt_headers_add(&resp->headers, a, PT_STR_LIT("RateLimit"), pt_str_make(live, ln));
    return PT_PLUGIN_CONTINUE;
}

const pt_plugin_type pt_plugin_rate_limit = {
    .name = "rate_limit",
    .configure = rl_configure,
    .state_size = sizeof(rl_state),
    .on_request_headers = rl_on_request_headers,
    .on_response_headers = rl_on_response_headers,
    .on_pause_cancelled = rl_pause_cancelled,
};
