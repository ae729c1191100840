/* config_dns.c — the `dns:` block (resolver settings for upstream host
 * names, see docs/dns.md) and the load-time resolution of a target's host
 * name with those settings. */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

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

bool pt_conf_resolve_target(const pt_config *cfg, pt_arena *a, const char *host, uint16_t port, pt_target_conf *tc,
                            char *err, size_t errcap)
{
    /* the same name earlier in this configuration: one answer for both */
    const pt_dns_answer *same = NULL;
    for (size_t i = 0; i < cfg->nupstreams && !same; i++)
        for (size_t t = 0; t < cfg->upstreams[i].ntargets && !same; t++) {
            const pt_target_conf *o = &cfg->upstreams[i].targets[t];
            if (o->dns && o->answer.n && strcmp(o->host, host) == 0) same = &o->answer;
        }
    if (same) tc->answer = *same;
    else if (!pt_dns_resolve_now(&cfg->dns, host, a, &tc->answer, err, errcap)) return false;
    tc->dns = true;
    /* the first address of the preferred family (the one workers start with) */
    memset(&tc->addr.ss, 0, sizeof(tc->addr.ss));
    tc->addr.sslen = pt_dns_addr_sockaddr(&tc->answer.v[0], port, &tc->addr.ss);
    return true;
}
