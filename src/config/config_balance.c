/* config_balance.c — upstreams.NAME.{balance, hash_on, outlier,
 * circuit_breaker} into pt_upstream_conf.balance (config/balance_conf.h,
 * docs/configuration.md). */
#include <stdlib.h>
#include <string.h>

#include "config/config_int.h"

static void opt_ms(pt_conf_ctx *ctx, const pt_conf_node *map, const char *key, uint64_t *out)
{
    const pt_conf_node *n = pt_conf_opt(map, key);
    uint64_t v;
    if (!n || !pt_conf_duration_ms(ctx, n, &v)) return;
    if (v == 0) {
        pt_conf_error(ctx, n, "%s must be greater than 0", key);
        return;
    }
    *out = v;
}

static void opt_u32(pt_conf_ctx *ctx, const pt_conf_node *map, const char *key, int64_t min, int64_t max,
                    uint32_t *out)
{
    const pt_conf_node *n = pt_conf_opt(map, key);
    int64_t v;
    if (n && pt_conf_int(ctx, n, min, max, &v)) *out = (uint32_t)v;
}

/* hash_on: client_addr | path | {header: NAME} | {cookie: NAME} */
static void conf_hash_on(pt_conf_ctx *ctx, const pt_conf_node *n, pt_balance_conf *b, const char *up)
{
    if (n->kind == PT_NODE_SCALAR) {
        if (strcmp(n->scalar, "client_addr") == 0) b->hash_on = PT_HASH_CLIENT_ADDR;
        else if (strcmp(n->scalar, "path") == 0) b->hash_on = PT_HASH_PATH;
        else
            pt_conf_error(ctx, n, "upstream '%s': hash_on must be client_addr, path, {header: NAME} or "
                                  "{cookie: NAME}", up);
        return;
    }
    static const char *const keys[] = {"header", "cookie", NULL};
    if (!pt_conf_check_keys(ctx, n, keys, "hash_on")) return;
    if (n->n != 1) {
        pt_conf_error(ctx, n, "upstream '%s': hash_on takes one of header or cookie", up);
        return;
    }
    const pt_conf_node *h = pt_conf_opt(n, "header"), *c = pt_conf_opt(n, "cookie");
    const pt_conf_node *v = h ? h : c;
    if (!v || !pt_conf_string(ctx, v, &b->hash_name)) return;
    if (!b->hash_name[0]) {
        pt_conf_error(ctx, v, "upstream '%s': hash_on needs a non-empty name", up);
        return;
    }
    b->hash_on = h ? PT_HASH_HEADER : PT_HASH_COOKIE;
}

static void conf_outlier(pt_conf_ctx *ctx, const pt_conf_node *n, pt_outlier_conf *o)
{
    static const char *const keys[] = {"consecutive_5xx", "consecutive_failures", "base_ejection_time",
                                       "max_ejection_time", "max_ejected_percent", NULL};
    *o = (pt_outlier_conf){.enabled = true, .consecutive_5xx = 5, .consecutive_failures = 5,
                           .base_ejection_ms = 30000, .max_ejection_ms = 300000, .max_ejected_percent = 50};
    if (n->kind == PT_NODE_NULL) return;
    if (!pt_conf_check_keys(ctx, n, keys, "outlier")) return;
    opt_u32(ctx, n, "consecutive_5xx", 0, 1000000, &o->consecutive_5xx);
    opt_u32(ctx, n, "consecutive_failures", 0, 1000000, &o->consecutive_failures);
    opt_ms(ctx, n, "base_ejection_time", &o->base_ejection_ms);
    opt_ms(ctx, n, "max_ejection_time", &o->max_ejection_ms);
    opt_u32(ctx, n, "max_ejected_percent", 0, 100, &o->max_ejected_percent);
    if (o->max_ejection_ms < o->base_ejection_ms)
        pt_conf_error(ctx, n, "outlier: max_ejection_time is shorter than base_ejection_time");
}

static void conf_breaker(pt_conf_ctx *ctx, const pt_conf_node *n, pt_breaker_conf *b)
{
    static const char *const keys[] = {"consecutive_failures", "failure_ratio", "window", "min_requests",
                                       "open_time", "half_open_requests", NULL};
    *b = (pt_breaker_conf){.enabled = true, .failure_ratio_pct = 50, .window_ms = 10000, .min_requests = 20,
                           .open_ms = 30000, .half_open_requests = 1};
    if (n->kind == PT_NODE_NULL) return;
    if (!pt_conf_check_keys(ctx, n, keys, "circuit_breaker")) return;
    opt_u32(ctx, n, "consecutive_failures", 0, 1000000, &b->consecutive_failures);
    const pt_conf_node *r = pt_conf_opt(n, "failure_ratio");
    if (r) {
        /* a fraction 0 < r <= 1 ("0.5") or a percentage ("50%") */
        char *end = NULL;
        double v = r->kind == PT_NODE_SCALAR ? strtod(r->scalar, &end) : -1;
        bool pct = end && *end == '%' && end[1] == 0;
        if (pct) v /= 100.0;
        if (!end || end == r->scalar || (*end && !pct) || !(v > 0 && v <= 1.0))
            pt_conf_error(ctx, r, "circuit_breaker: failure_ratio must be a fraction in (0, 1] or a percentage");
        else
            b->failure_ratio_pct = (uint32_t)(v * 100.0 + 0.5) ? (uint32_t)(v * 100.0 + 0.5) : 1;
    }
    opt_ms(ctx, n, "window", &b->window_ms);
    opt_u32(ctx, n, "min_requests", 1, 1000000, &b->min_requests);
    opt_ms(ctx, n, "open_time", &b->open_ms);
    opt_u32(ctx, n, "half_open_requests", 1, 10000, &b->half_open_requests);
}

static void conf_health(pt_conf_ctx *ctx, const pt_conf_node *n, pt_upstream_conf *u)
{
    static const char *const keys[] = {"type", "path", "host", "expected_statuses", "body", "interval", "timeout",
                                       "healthy_threshold", "unhealthy_threshold", NULL};
    pt_health_conf *h = &u->balance.health;
    *h = (pt_health_conf){.enabled = true, .path = "/", .interval_ms = 10000, .timeout_ms = 2000,
                          .healthy_threshold = 2, .unhealthy_threshold = 3};
    if (!pt_conf_check_keys(ctx, n, keys, "health_check")) return;
    const pt_conf_node *v;
    if ((v = pt_conf_opt(n, "type"))) {
        const char *s = v->kind == PT_NODE_SCALAR ? v->scalar : "";
        if (strcmp(s, "tcp") == 0) h->tcp = true;
        else if (strcmp(s, "http") != 0) pt_conf_error(ctx, v, "health_check: type must be http or tcp");
    }
    if ((v = pt_conf_opt(n, "path")) && pt_conf_string(ctx, v, &h->path)) {
        bool ok = h->path[0] == '/';
        for (const char *c = h->path; *c; c++) ok &= *c > 0x20 && *c < 0x7f;
        if (!ok) pt_conf_error(ctx, v, "health_check: path must start with '/' and hold visible ASCII only");
    }
    if ((v = pt_conf_opt(n, "host")) && pt_conf_string(ctx, v, &h->host)) {
        bool ok = h->host[0] != 0;
        for (const char *c = h->host; *c; c++) ok &= *c > 0x20 && *c < 0x7f;
        if (!ok) pt_conf_error(ctx, v, "health_check: host must be a non-empty host name");
    }
    if ((v = pt_conf_opt(n, "body")) && pt_conf_string(ctx, v, &h->body) && !h->body[0]) h->body = NULL;
    if ((v = pt_conf_opt(n, "expected_statuses"))) {
        if (v->kind != PT_NODE_SEQ || v->n == 0 || v->n > PT_HEALTH_MAX_STATUSES) {
            pt_conf_error(ctx, v, "health_check: expected_statuses must be a list of 1 to %d statuses",
                          PT_HEALTH_MAX_STATUSES);
        } else {
            for (size_t i = 0; i < v->n; i++) {
                int64_t st;
                if (pt_conf_int(ctx, v->vals[i], 100, 599, &st)) h->statuses[h->nstatuses++] = (uint16_t)st;
            }
        }
    }
    opt_ms(ctx, n, "interval", &h->interval_ms);
    opt_ms(ctx, n, "timeout", &h->timeout_ms);
    opt_u32(ctx, n, "healthy_threshold", 1, 1000, &h->healthy_threshold);
    opt_u32(ctx, n, "unhealthy_threshold", 1, 1000, &h->unhealthy_threshold);
}

void pt_conf_upstream_balance(pt_conf_ctx *ctx, const pt_conf_node *v, pt_upstream_conf *u)
{
    pt_balance_conf *b = &u->balance;
    const pt_conf_node *n = pt_conf_opt(v, "balance");
    if (n) {
        const char *s = n->kind == PT_NODE_SCALAR ? n->scalar : "";
        if (strcmp(s, "round_robin") == 0) b->kind = PT_BALANCE_ROUND_ROBIN;
        else if (strcmp(s, "least_requests") == 0) b->kind = PT_BALANCE_LEAST_REQUESTS;
        else if (strcmp(s, "ewma") == 0) b->kind = PT_BALANCE_EWMA;
        else if (strcmp(s, "hash") == 0) b->kind = PT_BALANCE_HASH;
        else
            pt_conf_error(ctx, n, "upstream '%s': balance must be one of round_robin, least_requests, ewma, hash",
                          u->name);
    }
    const pt_conf_node *h = pt_conf_opt(v, "hash_on");
    if (h) conf_hash_on(ctx, h, b, u->name);
    if (b->kind == PT_BALANCE_HASH && !h)
        pt_conf_error(ctx, n, "upstream '%s': balance hash needs 'hash_on'", u->name);
    if (h && b->kind != PT_BALANCE_HASH)
        pt_conf_error(ctx, h, "upstream '%s': hash_on applies to 'balance: hash' only", u->name);
    if ((n = pt_conf_opt(v, "outlier"))) conf_outlier(ctx, n, &b->outlier);
    if ((n = pt_conf_opt(v, "circuit_breaker"))) conf_breaker(ctx, n, &b->breaker);
    if ((n = pt_conf_opt(v, "health_check"))) conf_health(ctx, n, u);
}
