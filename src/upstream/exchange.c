/* exchange.c — opening an upstream exchange (see exchange.h). */
#include "upstream/exchange.h"

#include "server/worker.h"
#include "upstream/h2_client.h"

void *pt_exchange_open(struct pt_worker *w, pt_upstream_rt *u, int idx, SSL_CTX *tls_ctx,
                       const pt_upstream_exchange_ops **ops, bool *fresh)
{
    if (w->open_exchange) return w->open_exchange(w, u, idx, tls_ctx, ops, fresh);
    const pt_target_conf *t = &u->conf->targets[idx];
    *fresh = false;
    if (u->conf->protocol != PT_UPROTO_HTTP1) {
        *ops = &pt_h2_exchange_ops;
        return pt_h2up_stream_open(w, t, u->pools[idx], tls_ctx, u->conf, fresh);
    }
    *ops = &pt_h1_exchange_ops;
    void *c = pt_pool_take(u->pools[idx]);
    if (c) return c;
    *fresh = true;
    return pt_uconn_connect(w, t, u->pools[idx], tls_ctx, &u->conf->tls);
}
