/* config_dns.c — the `dns:` block (resolver settings for upstream host
 * names, see docs/dns.md) and the load-time resolution of a target's host
 * name with those settings. */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config_int.h"
#include "net/dns.h"

/* One server: an IP literal with an optional port ("10.0.0.2",
 * "127.0.0.1:5353", "[::1]:53", "::1"), normalised for c-ares to
 * "ip:port" / "[v6]:port". NULL when invalid. */
static char *server_entry(pt_arena *a, const char *s)
{
    char host[64];
    unsigned long port = 53;
    const char *port_str = NULL;
    size_t hl;
    bool v6;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close) return NULL;
        hl = (size_t)(close - s - 1);
        if (hl >= sizeof(host)) return NULL;
        memcpy(host, s + 1, hl);
        if (close[1] == ':') port_str = close + 2;
        else if (close[1]) return NULL;
        v6 = true;
    } else {
        const char *colon = strchr(s, ':');
        v6 = colon && strchr(colon + 1, ':'); /* a bare IPv6 address */
        hl = (!v6 && colon) ? (size_t)(colon - s) : strlen(s);
        if (hl >= sizeof(host)) return NULL;
        memcpy(host, s, hl);
        if (!v6 && colon) port_str = colon + 1;
    }
    host[hl] = '\0';
    unsigned char buf[16];
    if (inet_pton(v6 ? AF_INET6 : AF_INET, host, buf) != 1) return NULL;
    if (port_str) {
        char *end;
        if (!*port_str || *port_str < '0' || *port_str > '9') return NULL;
        port = strtoul(port_str, &end, 10);
        if (*end || port < 1 || port > 65535) return NULL;
    }
    return v6 ? pt_arena_printf(a, "[%s]:%lu", host, port) : pt_arena_printf(a, "%s:%lu", host, port);
}

void pt_conf_dns(pt_conf_ctx *ctx, const pt_conf_node *root, pt_config *cfg)
{
    pt_dns_conf_defaults(&cfg->dns);
    const pt_conf_node *m = pt_conf_opt(root, "dns");
    static const char *const keys[] = {"servers", "timeout", "attempts", "min_ttl", "max_ttl", NULL};
    if (!m || !pt_conf_check_keys(ctx, m, keys, "dns")) return;
    pt_dns_conf *d = &cfg->dns;
    const pt_conf_node *n = pt_conf_opt(m, "servers");
    if (n) {
        if (n->kind != PT_NODE_SEQ || n->n == 0) {
            pt_conf_error(ctx, n, "dns.servers must be a non-empty list of IP[:PORT] (e.g. [\"10.0.0.2\", "
                                  "\"127.0.0.1:5353\"])");
        } else {
            char *csv = NULL;
            for (size_t i = 0; i < n->n; i++) {
                char *s;
                if (!pt_conf_string(ctx, n->vals[i], &s)) continue;
                char *e = server_entry(ctx->arena, s);
                if (!e) {
                    pt_conf_error(ctx, n->vals[i], "invalid dns server '%s' (expected an IP address with an "
                                                   "optional port: 10.0.0.2, 127.0.0.1:5353, [::1]:53)", s);
                    continue;
                }
                csv = csv ? pt_arena_printf(ctx->arena, "%s,%s", csv, e) : e;
            }
            d->servers = csv;
        }
    }
    uint64_t v;
    if ((n = pt_conf_opt(m, "timeout")) && pt_conf_duration_ms(ctx, n, &v)) {
        if (v == 0 || v > 10000) pt_conf_error(ctx, n, "dns.timeout must be between 1ms and 10s");
        else d->timeout_ms = v;
    }
    int64_t iv;
    if ((n = pt_conf_opt(m, "attempts")) && pt_conf_int(ctx, n, 1, 5, &iv)) d->attempts = (uint32_t)iv;
    const pt_conf_node *mn = pt_conf_opt(m, "min_ttl"), *mx = pt_conf_opt(m, "max_ttl");
    if (mn && pt_conf_duration_ms(ctx, mn, &v)) d->min_ttl_ms = v;
    if (mx && pt_conf_duration_ms(ctx, mx, &v)) {
        if (v == 0) pt_conf_error(ctx, mx, "dns.max_ttl must be greater than 0");
        else d->max_ttl_ms = v;
    }
    if (d->min_ttl_ms > d->max_ttl_ms)
        pt_conf_error(ctx, mx ? mx : mn, "dns.min_ttl (%" PRIu64 "ms) must not exceed dns.max_ttl (%" PRIu64 "ms)",
                      d->min_ttl_ms, d->max_ttl_ms);
}

/* A reload whose query for `host` failed (err says why): the running
 * configuration's answer for it, copied into the new arena (its time kept,
 * so it does not look newer than a worker's own). */
static bool running_answer(pt_conf_ctx *ctx, const char *host, const char *err, pt_dns_answer *out)
{
    const pt_config *r = ctx->running;
    for (size_t i = 0; r && i < r->nupstreams; i++)
        for (size_t t = 0; t < r->upstreams[i].ntargets; t++) {
            const pt_target_conf *o = &r->upstreams[i].targets[t];
            if (!o->dns || !o->answer.n || strcasecmp(o->host, host) != 0) continue;
            *out = o->answer;
            out->v = pt_arena_alloc(ctx->arena, o->answer.n * sizeof(*out->v));
            memcpy(out->v, o->answer.v, o->answer.n * sizeof(*out->v));
            fprintf(stderr, "portico: dns: %s; this load keeps the running configuration's answer (%u address%s)\n",
                    err, out->n, out->n == 1 ? "" : "es");
            return true;
        }
    return false;
}

bool pt_conf_resolve_target(pt_conf_ctx *ctx, const char *host, uint16_t port, pt_target_conf *tc, char *err,
                            size_t errcap)
{
    const pt_config *cfg = ctx->cfg;
    /* the same name earlier in this configuration: one answer for both */
    const pt_dns_answer *same = NULL;
    for (size_t i = 0; i < cfg->nupstreams && !same; i++)
        for (size_t t = 0; t < cfg->upstreams[i].ntargets && !same; t++) {
            const pt_target_conf *o = &cfg->upstreams[i].targets[t];
            if (o->dns && o->answer.n && strcmp(o->host, host) == 0) same = &o->answer;
        }
    if (same) tc->answer = *same;
    else if (!pt_dns_resolve_now(&cfg->dns, host, ctx->arena, &tc->answer, err, errcap) &&
             !running_answer(ctx, host, err, &tc->answer))
        return false;
    tc->dns = true;
    /* the first address of the preferred family (the one workers start with) */
    memset(&tc->addr.ss, 0, sizeof(tc->addr.ss));
    tc->addr.sslen = pt_dns_addr_sockaddr(&tc->answer.v[0], port, &tc->addr.ss);
    return true;
}

/* --------------------------------------------------------- SRV targets */

/* A DNS name: letters, digits, '-', '_' and dots, at most 253 characters. */
static bool valid_srv_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 254 || (n == 254 && s[253] != '.') || s[0] == '.') return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
              c == '.'))
            return false;
        if (c == '.' && i + 1 < n && s[i + 1] == '.') return false;
    }
    return true;
}

/* A reload whose query for `name` failed (err says why): the running
 * configuration's answer, copied into this one's arena, dated now (so the
 * server asks again after its TTL, not at once). False when the running
 * configuration does not have the name. */
static bool srv_running_answer(pt_conf_ctx *ctx, const char *name, const char *err, pt_dns_srv_answer *out)
{
    for (size_t i = 0; ctx->running && i < ctx->running->nsrv; i++) {
        const pt_srv_conf *o = &ctx->running->srv[i];
        if (strcasecmp(o->name, name) != 0) continue;
        *out = o->answer;
        out->v = pt_arena_alloc(ctx->arena, o->answer.n * sizeof(*out->v));
        for (uint32_t r = 0; r < o->answer.n; r++) {
            out->v[r] = o->answer.v[r];
            out->v[r].host = pt_arena_strndup(ctx->arena, o->answer.v[r].host, strlen(o->answer.v[r].host));
        }
        out->at_ms = pt_dns_mono_ms();
        fprintf(stderr, "portico: dns: %s; this load keeps the running configuration's answer (%u record%s)\n", err,
                out->n, out->n == 1 ? "" : "s");
        return true;
    }
    return false;
}

/* The SRV answer for `name`: the one this configuration already has, a new
 * query, or (a reload whose query failed) the running configuration's;
 * recorded in cfg->srv. NULL with a message in err. */
static const pt_dns_srv_answer *srv_answer(pt_conf_ctx *ctx, pt_config *cfg, const pt_conf_node *n, const char *name,
                                           char *err, size_t errcap)
{
    for (size_t i = 0; i < cfg->nsrv; i++)
        if (strcasecmp(cfg->srv[i].name, name) == 0) return &cfg->srv[i].answer;
    pt_dns_srv_answer a;
    if (!pt_dns_resolve_srv_now(&cfg->dns, name, NULL, ctx->arena, &a, err, errcap) &&
        !srv_running_answer(ctx, name, err, &a))
        return NULL;
    pt_srv_conf *v = pt_arena_calloc(ctx->arena, (cfg->nsrv + 1) * sizeof(*v));
    if (cfg->nsrv) memcpy(v, cfg->srv, cfg->nsrv * sizeof(*v));
    v[cfg->nsrv] = (pt_srv_conf){.name = pt_arena_strndup(ctx->arena, name, strlen(name)), .answer = a,
                                 .line = n->line, .col = n->col};
    cfg->srv = v;
    return &v[cfg->nsrv++].answer;
}

/* One record as a target: host:port, its weight clamped to 1..1000, the
 * host an IP literal or a name resolved like any target's. */
static bool srv_target(pt_conf_ctx *ctx, const char *name, const pt_dns_srv *r, pt_target_conf *tc,
                       char *err, size_t errcap)
{
    unsigned char ip[16];
    bool v4 = inet_pton(AF_INET, r->host, ip) == 1, v6 = !v4 && inet_pton(AF_INET6, r->host, ip) == 1;
    *tc = (pt_target_conf){.port = r->port, .srv = name,
                           .weight = r->weight < 1 ? 1 : r->weight > 1000 ? 1000 : r->weight};
    tc->host = v6 ? pt_arena_printf(ctx->arena, "[%s]", r->host) : pt_arena_strndup(ctx->arena, r->host, strlen(r->host));
    tc->addr.text = pt_arena_printf(ctx->arena, "%s:%u", tc->host, (unsigned)r->port);
    if (v4 || v6) {
        pt_dns_addr a = {.family = v4 ? AF_INET : AF_INET6};
        memcpy(a.ip, ip, v4 ? 4 : 16);
        tc->addr.sslen = pt_dns_addr_sockaddr(&a, r->port, &tc->addr.ss);
        return true;
    }
    return pt_conf_resolve_target(ctx, r->host, r->port, tc, err, errcap);
}

void pt_conf_srv_targets(pt_conf_ctx *ctx, const pt_conf_node *t, pt_config *cfg, pt_upstream_conf *u)
{
    static const char *const keys[] = {"srv", NULL};
    for (size_t i = 0; i < t->n; i++) {
        const pt_conf_node *item = t->vals[i], *n = pt_conf_opt(item, "srv");
        char *name;
        if (!pt_conf_check_keys(ctx, item, keys, "SRV target")) continue;
        if (!n || !pt_conf_string(ctx, n, &name)) {
            if (!n) pt_conf_error(ctx, item, "srv needs a DNS name (e.g. _http._tcp.backend.example)");
            continue;
        }
        if (!valid_srv_name(name)) {
            pt_conf_error(ctx, n, "invalid SRV name '%s' (a DNS name such as _http._tcp.backend.example)", name);
            continue;
        }
        char err[512];
        const pt_dns_srv_answer *a = srv_answer(ctx, cfg, n, name, err, sizeof(err));
        if (!a) {
            pt_conf_error(ctx, n, "upstream '%s': %s", u->name, err);
            continue;
        }
        /* u->targets stays a valid array throughout: pt_conf_resolve_target
         * looks at the targets resolved so far */
        pt_target_conf *v = pt_arena_calloc(ctx->arena, (u->ntargets + a->n) * sizeof(*v));
        if (u->ntargets) memcpy(v, u->targets, u->ntargets * sizeof(*v));
        u->targets = v;
        for (uint32_t r = 0; r < a->n; r++) {
            pt_target_conf tc;
            if (!srv_target(ctx, name, &a->v[r], &tc, err, sizeof(err))) {
                pt_conf_error(ctx, n, "upstream '%s': SRV '%s' target %s:%u: %s", u->name, name, a->v[r].host,
                              (unsigned)a->v[r].port, err);
                continue;
            }
            u->targets[u->ntargets++] = tc;
        }
    }
}
