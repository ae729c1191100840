/* config_tracing.c — the `tracing:` block (docs/observability.md "Tracing"):
 * sampling, trust of incoming trace context, and the OTLP/HTTP exporter
 * (protobuf or JSON). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config_int.h"

static void tracing_defaults(pt_tracing_conf *t, pt_arena *a)
{
    *t = (pt_tracing_conf){
        .sampling = 1.0,
        .parent_based = true,
        .trust_incoming = PT_TRACE_TRUST_ALL,
        .service_name = pt_arena_strndup(a, "portico", 7),
        .timeout_ms = 5000,
        .batch_size = 512,
        .batch_delay_ms = 1000,
        .queue_size = 8192,
        .max_retries = 3,
        .protobuf = true,
    };
}

/* http://HOST[:PORT]/PATH (https is not supported by the exporter). */
static bool endpoint_ok(const char *s)
{
    if (strncmp(s, "http://", 7) != 0) return false;
    const char *h = s + 7;
    return *h && *h != '/' && *h != ':';
}

static void conf_exporter(pt_conf_ctx *ctx, const pt_conf_node *m, pt_tracing_conf *t)
{
    static const char *const keys[] = {"endpoint", "timeout", "batch_size", "batch_delay", "queue_size",
                                       "max_retries", "protocol", NULL};
    if (m->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, m, "tracing.exporter must be a mapping (endpoint, timeout, batch_size, ...)");
        return;
    }
    if (!pt_conf_check_keys(ctx, m, keys, "tracing.exporter")) return;
    const pt_conf_node *n;
    char *s;
    if ((n = pt_conf_opt(m, "endpoint")) && pt_conf_string(ctx, n, &s)) {
        if (!endpoint_ok(s))
            pt_conf_error(ctx, n, "tracing.exporter.endpoint must be an http:// URL "
                                  "(e.g. http://127.0.0.1:4318/v1/traces)");
        else
            t->endpoint = s;
    }
    uint64_t v;
    int64_t iv;
    if ((n = pt_conf_opt(m, "timeout")) && pt_conf_duration_ms(ctx, n, &v)) {
        if (v == 0) pt_conf_error(ctx, n, "tracing.exporter.timeout must be greater than 0");
        else t->timeout_ms = v;
    }
    if ((n = pt_conf_opt(m, "batch_size")) && pt_conf_int(ctx, n, 1, 100000, &iv)) t->batch_size = (uint32_t)iv;
    if ((n = pt_conf_opt(m, "batch_delay")) && pt_conf_duration_ms(ctx, n, &v)) {
        if (v == 0) pt_conf_error(ctx, n, "tracing.exporter.batch_delay must be greater than 0");
        else t->batch_delay_ms = v;
    }
    if ((n = pt_conf_opt(m, "queue_size")) && pt_conf_int(ctx, n, 1, 10000000, &iv)) t->queue_size = (uint32_t)iv;
    if ((n = pt_conf_opt(m, "max_retries")) && pt_conf_int(ctx, n, 0, 10, &iv)) t->max_retries = (uint32_t)iv;
    if ((n = pt_conf_opt(m, "protocol"))) {
        const char *p = n->kind == PT_NODE_SCALAR ? n->scalar : "";
        if (strcmp(p, "http/protobuf") == 0) t->protobuf = true;
        else if (strcmp(p, "http/json") == 0) t->protobuf = false;
        else pt_conf_error(ctx, n, "tracing.exporter.protocol must be http/protobuf or http/json");
    }
}

void pt_conf_tracing(pt_conf_ctx *ctx, const pt_conf_node *root, pt_config *cfg)
{
    pt_tracing_conf *t = &cfg->tracing;
    tracing_defaults(t, ctx->arena);
    const pt_conf_node *m = pt_conf_opt(root, "tracing");
    if (!m) return;
    static const char *const keys[] = {"enabled", "sampling", "parent_based", "trust_incoming", "service_name",
                                       "exporter", NULL};
    if (m->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, m, "tracing must be a mapping (enabled, sampling, parent_based, trust_incoming, "
                              "service_name, exporter)");
        return;
    }
    if (!pt_conf_check_keys(ctx, m, keys, "tracing")) return;
    t->enabled = true;
    const pt_conf_node *n;
    if ((n = pt_conf_opt(m, "enabled"))) pt_conf_bool(ctx, n, &t->enabled);
    if ((n = pt_conf_opt(m, "sampling"))) {
        char *end = NULL;
        errno = 0;
        double r = n->kind == PT_NODE_SCALAR ? strtod(n->scalar, &end) : NAN;
        if (n->kind != PT_NODE_SCALAR || end == n->scalar || *end || errno || !(r >= 0.0 && r <= 1.0))
            pt_conf_error(ctx, n, "tracing.sampling must be a number between 0 and 1 (e.g. 0.01 for 1%%)");
        else
            t->sampling = r;
    }
    if ((n = pt_conf_opt(m, "parent_based"))) pt_conf_bool(ctx, n, &t->parent_based);
    if ((n = pt_conf_opt(m, "trust_incoming"))) {
        const char *s = n->kind == PT_NODE_SCALAR ? n->scalar : "";
        if (strcmp(s, "all") == 0) t->trust_incoming = PT_TRACE_TRUST_ALL;
        else if (strcmp(s, "trusted_proxies") == 0) t->trust_incoming = PT_TRACE_TRUST_PROXIES;
        else if (strcmp(s, "none") == 0) t->trust_incoming = PT_TRACE_TRUST_NONE;
        else pt_conf_error(ctx, n, "tracing.trust_incoming must be all, trusted_proxies or none");
    }
    char *s;
    if ((n = pt_conf_opt(m, "service_name")) && pt_conf_string(ctx, n, &s)) {
        if (!*s) pt_conf_error(ctx, n, "tracing.service_name must not be empty");
        else t->service_name = s;
    }
    if ((n = pt_conf_opt(m, "exporter"))) conf_exporter(ctx, n, t);
}
