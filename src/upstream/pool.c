/* pool.c — per-worker keep-alive pools keyed by target address, and the
 * smooth weighted round-robin balancer (see upstream.h). */
#include <stdlib.h>

#include "server/worker.h"
#include "upstream/h1_client.h"
#include "upstream/h2_client.h"

struct pt_pool {
    struct sockaddr_storage ss;
    socklen_t sslen;
    SSL_CTX *tls_ctx; /* the generation's TLS context for this upstream; NULL = plain */
    char *sni;
    uint32_t refs;    /* worker generations using this pool */
    pt_uconn *idle; /* most recently parked first (LIFO keeps hot connections hot) */
    uint32_t nidle;
    pt_h2up_conn *h2; /* HTTP/2 connections (busy or idle), see h2_client.c */
    pt_tls_session_slot tls_session; /* TLS resumption towards this address + name */
};

pt_h2up_conn **pt_pool_h2_list(pt_pool *p) { return &p->h2; }

pt_tls_session_slot *pt_pool_tls_session(pt_pool *p) { return &p->tls_session; }

int pt_upstream_pick(pt_upstream_rt *u, uint64_t exclude)
{
    const pt_upstream_conf *c = u->conf;
    int best = -1;
    int64_t total = 0;
    for (size_t i = 0; i < c->ntargets; i++) {
        if (i < 64 && (exclude & (1ull << i))) continue;
        int64_t wgt = c->targets[i].weight;
        u->current[i] += wgt;
        total += wgt;
        if (best < 0 || u->current[i] > u->current[best]) best = (int)i;
    }
    if (best >= 0) u->current[best] -= total;
    return best;
}

pt_pool *pt_pool_for(pt_worker *w, const pt_target_conf *t, SSL_CTX *tls_ctx, const char *sni)
{
    if (!tls_ctx) sni = "";
    for (size_t i = 0; i < w->npools; i++) {
        pt_pool *p = w->pools[i];
        if (p->sslen == t->addr.sslen && memcmp(&p->ss, &t->addr.ss, t->addr.sslen) == 0 &&
            p->tls_ctx == tls_ctx && strcmp(p->sni, sni) == 0) {
            p->refs++;
            return p;
        }
    }
    if (w->npools == w->pools_cap) {
        w->pools_cap = w->pools_cap ? w->pools_cap * 2 : 16;
        w->pools = pt_xrealloc(w->pools, w->pools_cap * sizeof(*w->pools));
    }
    pt_pool *p = pt_xcalloc(1, sizeof(*p));
    memcpy(&p->ss, &t->addr.ss, t->addr.sslen);
    p->sslen = t->addr.sslen;
    p->tls_ctx = tls_ctx;
    p->sni = pt_xstrndup(sni, strlen(sni));
    p->refs = 1;
    w->pools[w->npools++] = p;
    return p;
}

/* Closes every connection of the pool and frees it. */
static void pool_destroy(pt_pool *p)
{
    while (p->idle) pt_uconn_close(p->idle);
    pt_h2up_pool_close(p, true);
    pt_tls_session_slot_clear(&p->tls_session);
    free(p->sni);
    free(p);
}

void pt_pool_unref(pt_worker *w, pt_pool *p)
{
    PT_ASSERT(p->refs > 0);
    if (--p->refs) return;
    for (size_t i = 0; i < w->npools; i++)
        if (w->pools[i] == p) {
            w->pools[i] = w->pools[--w->npools];
            break;
        }
    pool_destroy(p);
}

pt_uconn *pt_pool_take(pt_pool *p)
{
    pt_uconn *c = p->idle;
    if (!c) return NULL;
    pt_pool_remove(p, c);
    return c;
}

void pt_pool_put(pt_pool *p, pt_uconn *c, uint32_t max_idle, uint64_t idle_timeout_ms)
{
    if (p->nidle >= max_idle) {
        pt_uconn_close(c);
        return;
    }
    c->pool_prev = NULL;
    c->pool_next = p->idle;
    if (p->idle) p->idle->pool_prev = c;
    p->idle = c;
    p->nidle++;
    pt_uconn_idle_timer(c, idle_timeout_ms);
}

void pt_pool_remove(pt_pool *p, pt_uconn *c)
{
    if (c->pool_prev) c->pool_prev->pool_next = c->pool_next;
    else if (p->idle == c) p->idle = c->pool_next;
    else return; /* not in the list */
    if (c->pool_next) c->pool_next->pool_prev = c->pool_prev;
    c->pool_prev = c->pool_next = NULL;
    p->nidle--;
}

void pt_pools_close_all(pt_worker *w)
{
    for (size_t i = 0; i < w->npools; i++) {
        while (w->pools[i]->idle) pt_uconn_close(w->pools[i]->idle);
        pt_h2up_pool_close(w->pools[i], false);
    }
}

void pt_pools_free(pt_worker *w)
{
    pt_pools_close_all(w);
    for (size_t i = 0; i < w->npools; i++) pool_destroy(w->pools[i]);
    free(w->pools);
    w->pools = NULL;
    w->npools = w->pools_cap = 0;
}
