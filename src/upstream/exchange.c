/* exchange.c — opening an upstream exchange (see exchange.h), and the DNS
 * entries of host-name targets (docs/dns.md). */
#include "upstream/exchange.h"

#include <stdlib.h>
#include <string.h>

#include "net/dns.h"
#include "server/worker.h"
#include "upstream/h2_client.h"

void pt_upstream_dns_attach(pt_worker *w, pt_upstream_rt *u)
{
    const pt_upstream_conf *uc = u->conf;
    if (!w->dns) return;
    for (size_t t = 0; t < uc->ntargets; t++) {
        const pt_target_conf *tc = &uc->targets[t];
        if (!tc->dns) continue;
        if (!u->dns) u->dns = pt_xcalloc(uc->ntargets, sizeof(*u->dns));
        u->dns[t] = pt_dns_acquire(w->dns, tc->host, &tc->answer);
    }
}

void pt_upstream_dns_detach(pt_worker *w, pt_upstream_rt *u)
{
    if (!u->dns) return;
    for (size_t t = 0; t < u->conf->ntargets; t++)
        if (u->dns[t]) pt_dns_release(w->dns, u->dns[t]);
    free(u->dns);
    u->dns = NULL;
}

const pt_target_conf *pt_upstream_connect_target(pt_worker *w, pt_dns_entry *e, const pt_target_conf *t,
                                                 pt_target_conf *tmp, pt_dns_stamp *st)
{
    struct sockaddr_storage ss;
    socklen_t len = e ? pt_dns_connect_addr(w->dns, e, t->port, &ss, st) : 0;
    if (!len) {
        memset(st, 0, sizeof(*st));
        return t;
    }
    *tmp = *t;
    tmp->addr.ss = ss;
    tmp->addr.sslen = len;
    return tmp;
}

/* A host-name target over HTTP/1.1: a pooled connection only if its address
 * is still one of the name's (others are closed as they come up), else a
 * new connection to the entry's next address. */
static void *open_h1_named(pt_worker *w, pt_upstream_rt *u, int idx, pt_dns_entry *e, SSL_CTX *tls_ctx, bool *fresh)
{
    const pt_target_conf *t = &u->conf->targets[idx];
    pt_uconn *c;
    while ((c = pt_pool_take(u->pools[idx]))) {
        if (pt_dns_stamp_valid(e, &c->dns, (const struct sockaddr *)&t->addr.ss)) return c;
        pt_uconn_close(c);
    }
    *fresh = true;
    pt_target_conf tmp;
    pt_dns_stamp st;
    c = pt_uconn_connect(w, pt_upstream_connect_target(w, e, t, &tmp, &st), u->pools[idx], tls_ctx, &u->conf->tls);
    if (c) c->dns = st;
    return c;
}

void *pt_exchange_open(struct pt_worker *w, pt_upstream_rt *u, int idx, SSL_CTX *tls_ctx,
                       const pt_upstream_exchange_ops **ops, bool *fresh)
{
    if (w->open_exchange) return w->open_exchange(w, u, idx, tls_ctx, ops, fresh);
    const pt_target_conf *t = &u->conf->targets[idx];
    pt_dns_entry *dns = u->dns ? u->dns[idx] : NULL; /* NULL for IP literals: the path below is as before */
    if (dns) pt_dns_touch(w->dns, dns);
    *fresh = false;
    if (u->conf->protocol != PT_UPROTO_HTTP1) {
        *ops = &pt_h2_exchange_ops;
        return pt_h2up_stream_open(w, t, u->pools[idx], tls_ctx, u->conf, dns, fresh);
    }
    *ops = &pt_h1_exchange_ops;
    if (dns) return open_h1_named(w, u, idx, dns, tls_ctx, fresh);
    void *c = pt_pool_take(u->pools[idx]);
    if (c) return c;
    *fresh = true;
    return pt_uconn_connect(w, t, u->pools[idx], tls_ctx, &u->conf->tls);
}

pt_exchange_retry_kind pt_exchange_retry(pt_uerr err, bool reused, bool nothing_received, int attempts,
                                         size_t ntargets, bool connect_retry_ok)
{
    if (!nothing_received || attempts >= PT_EXCHANGE_MAX_ATTEMPTS) return PT_RETRY_NONE;
    if (reused && err == PT_UERR_CLOSED) return PT_RETRY_STALE;
    if ((err == PT_UERR_CONNECT || err == PT_UERR_CONNECT_TIMEOUT) && connect_retry_ok && attempts < (int)ntargets)
        return PT_RETRY_NEXT_TARGET;
    return PT_RETRY_NONE;
}
