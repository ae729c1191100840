/* config_retry.c — the `retries` block of an upstream (the default of its
 * routes, plus the retry budget) and of a route (overrides, key by key).
 * See docs/traffic.md "Retries and deadlines" and docs/configuration.md. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "config/config_int.h"

/* The values a `retries` block starts from when it is the first one to
 * apply (the built-in rule has none of them). */
static void policy_block_defaults(pt_retry_policy *p)
{
    *p = (pt_retry_policy){
        .configured = true,
        .attempts = 2,
        .on = PT_RETRY_ON_CONNECT | PT_RETRY_ON_RESET | PT_RETRY_ON_TIMEOUT,
        .backoff_base_ms = 25,
        .backoff_max_ms = 250,
        .body_buffer = 64 * 1024,
    };
    p->on_status[0] = (1ull << 2) | (1ull << 3) | (1ull << 4); /* 502, 503, 504 */
}

/* `on: [connect_failure, reset, timeout, 502, 503, ...]` */
static void conf_on(pt_conf_ctx *ctx, const pt_conf_node *n, pt_retry_policy *p)
{
    if (n->kind != PT_NODE_SEQ) {
        pt_conf_error(ctx, n, "retries.on must be a list of failures, e.g. [connect_failure, reset, timeout, 503]");
        return;
    }
    p->on = 0;
    p->on_status[0] = p->on_status[1] = 0;
    for (size_t i = 0; i < n->n; i++) {
        const pt_conf_node *v = n->vals[i];
        if (v->kind != PT_NODE_SCALAR) {
            pt_conf_error(ctx, v, "retries.on: expected a failure name or a 5xx status");
            continue;
        }
        const char *s = v->scalar;
        if (!strcmp(s, "connect_failure")) {
            p->on |= PT_RETRY_ON_CONNECT;
        } else if (!strcmp(s, "reset")) {
            p->on |= PT_RETRY_ON_RESET;
        } else if (!strcmp(s, "timeout")) {
            p->on |= PT_RETRY_ON_TIMEOUT;
        } else {
            char *end;
            errno = 0;
            long code = strtol(s, &end, 10);
            if (errno || end == s || *end || code < 500 || code > 599) {
                pt_conf_error(ctx, v, "retries.on: unknown failure '%s' (expected connect_failure, reset, timeout or "
                                      "an upstream status 500..599)", s);
                continue;
            }
            unsigned bit = (unsigned)(code - 500);
            p->on_status[bit / 64] |= 1ull << (bit % 64);
        }
    }
}

/* `budget: {ratio: 0.2, min_retries: 3}` */
static void conf_budget(pt_conf_ctx *ctx, const pt_conf_node *n, pt_retry_budget_conf *b)
{
    static const char *const keys[] = {"ratio", "min_retries", NULL};
    if (!pt_conf_check_keys(ctx, n, keys, "retries.budget")) return;
    const pt_conf_node *r = pt_conf_opt(n, "ratio");
    if (r) {
        char *end = NULL;
        double v = r->kind == PT_NODE_SCALAR ? strtod(r->scalar, &end) : NAN;
        if (!end || end == r->scalar || *end || !(v >= 0.0 && v <= 1.0))
            pt_conf_error(ctx, r, "retries.budget.ratio must be a number between 0 and 1 (a share of the active "
                                  "requests), e.g. 0.2");
        else
            b->ratio = v;
    }
    const pt_conf_node *m = pt_conf_opt(n, "min_retries");
    int64_t iv;
    if (m && pt_conf_int(ctx, m, 0, 100000, &iv)) b->min_retries = (uint32_t)iv;
}

void pt_conf_retries(pt_conf_ctx *ctx, const pt_conf_node *node, pt_retry_policy *pol, pt_retry_budget_conf *budget)
{
    static const char *const keys[] = {"attempts", "on", "methods", "per_try_timeout", "backoff",
                                       "body_buffer", "budget", NULL};
    if (!node) return;
    if (!pt_conf_check_keys(ctx, node, keys, "retries")) return;
    /* A block with only `budget` sets the budget, not a policy. */
    bool policy_keys = false;
    for (size_t i = 0; i < node->n; i++) policy_keys |= strcmp(node->keys[i]->scalar, "budget") != 0;
    if (policy_keys && !pol->configured) policy_block_defaults(pol);
    const pt_conf_node *n;
    int64_t iv;
    uint64_t v;
    if ((n = pt_conf_opt(node, "attempts")) && pt_conf_int(ctx, n, INT64_MIN, INT64_MAX, &iv)) {
        if (iv < 1 || iv > PT_RETRY_MAX_ATTEMPTS)
            pt_conf_error(ctx, n, "retries.attempts must be between 1 and %d (the first attempt included)",
                          PT_RETRY_MAX_ATTEMPTS);
        else
            pol->attempts = (uint32_t)iv;
    }
    if ((n = pt_conf_opt(node, "on"))) conf_on(ctx, n, pol);
    if ((n = pt_conf_opt(node, "methods"))) {
        if (n->kind == PT_NODE_SCALAR && !strcmp(n->scalar, "idempotent")) pol->all_methods = false;
        else if (n->kind == PT_NODE_SCALAR && !strcmp(n->scalar, "all")) pol->all_methods = true;
        else pt_conf_error(ctx, n, "retries.methods must be idempotent (GET, HEAD, PUT, DELETE, OPTIONS, TRACE) or all");
    }
    if ((n = pt_conf_opt(node, "per_try_timeout")) && pt_conf_duration_ms(ctx, n, &v)) pol->per_try_timeout_ms = v;
    if ((n = pt_conf_opt(node, "backoff"))) {
        static const char *const bkeys[] = {"base", "max", NULL};
        if (pt_conf_check_keys(ctx, n, bkeys, "retries.backoff")) {
            const pt_conf_node *b;
            if ((b = pt_conf_opt(n, "base")) && pt_conf_duration_ms(ctx, b, &v)) pol->backoff_base_ms = v;
            if ((b = pt_conf_opt(n, "max")) && pt_conf_duration_ms(ctx, b, &v)) pol->backoff_max_ms = v;
            if (pol->backoff_max_ms < pol->backoff_base_ms)
                pt_conf_error(ctx, n, "retries.backoff.max must not be less than base");
        }
    }
    if ((n = pt_conf_opt(node, "body_buffer")) && pt_conf_size(ctx, n, &v)) {
        if (v > (64u << 20)) pt_conf_error(ctx, n, "retries.body_buffer must be at most 64m");
        else pol->body_buffer = v;
    }
    if ((n = pt_conf_opt(node, "budget"))) {
        if (budget) conf_budget(ctx, n, budget);
        else pt_conf_error(ctx, n, "retries.budget is set on the upstream (the budget is shared by its routes)");
    }
}
