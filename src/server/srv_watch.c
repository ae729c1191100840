/* srv_watch.c — see srv_watch.h. */
#include "server/srv_watch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/dns.h"

/* Names are asked at most this often, whatever their TTL and dns.min_ttl
 * (each query blocks the main thread for a moment). */
#define SRV_MIN_INTERVAL_MS 1000u

static uint64_t srv_ttl_ms(uint32_t ttl_s, const pt_dns_conf *conf)
{
    uint64_t ms = pt_dns_ttl_ms(ttl_s, conf);
    return ms < SRV_MIN_INTERVAL_MS ? SRV_MIN_INTERVAL_MS : ms;
}

typedef struct {
    const pt_srv_conf *sc;       /* the running configuration's name and answer */
    uint64_t due;                /* monotonic ms: ask again from then on */
    uint32_t failures;           /* consecutive failed queries */
    uint32_t reload_failures;    /* consecutive reloads that did not take */
} watched;

struct pt_srv_watch {
    const pt_config *cfg;
    watched *v;
    size_t n;
};

pt_srv_watch *pt_srv_watch_new(void) { return pt_xcalloc(1, sizeof(pt_srv_watch)); }

void pt_srv_watch_free(pt_srv_watch *w)
{
    if (!w) return;
    free(w->v);
    free(w);
}

void pt_srv_watch_adopt(pt_srv_watch *w, const pt_config *cfg)
{
    free(w->v);
    w->cfg = cfg;
    w->n = cfg->nsrv;
    w->v = pt_xcalloc(w->n ? w->n : 1, sizeof(*w->v));
    for (size_t i = 0; i < w->n; i++) {
        const pt_srv_conf *sc = &cfg->srv[i];
        w->v[i] = (watched){.sc = sc, .due = sc->answer.at_ms + srv_ttl_ms(sc->answer.ttl_s, &cfg->dns)};
    }
}

int64_t pt_srv_watch_wait_ms(const pt_srv_watch *w)
{
    if (!w->n) return -1;
    uint64_t due = w->v[0].due, now = pt_dns_mono_ms();
    for (size_t i = 1; i < w->n; i++)
        if (w->v[i].due < due) due = w->v[i].due;
    return due > now ? (int64_t)(due - now) : 0;
}

/* "a:1 (weight 1), b:2 (weight 3)" into buf, shortened with "..." */
static void describe(const pt_dns_srv_answer *a, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    for (uint32_t i = 0; i < a->n && len < cap; i++) {
        int k = snprintf(buf + len, cap - len, "%s%s:%u (weight %u)", i ? ", " : "", a->v[i].host,
                         (unsigned)a->v[i].port, (unsigned)a->v[i].weight);
        if (k < 0 || (size_t)k >= cap - len) {
            if (cap >= 4) memcpy(buf + cap - 4, "...", 4);
            return;
        }
        len += (size_t)k;
    }
}

/* Whether a signal of `set` is pending (the server is about to stop). */
static bool pending(const sigset_t *set)
{
    sigset_t p;
    if (!set || sigpending(&p) != 0) return false;
    for (int sig = 1; sig < NSIG; sig++)
        if (sigismember(set, sig) == 1 && sigismember(&p, sig) == 1) return true;
    return false;
}

int pt_srv_watch_refresh(pt_srv_watch *w, const sigset_t *interrupt, char *msg, size_t cap)
{
    for (size_t i = 0; i < w->n; i++) {
        watched *x = &w->v[i];
        if (pt_dns_mono_ms() < x->due) continue;
        const pt_dns_conf *conf = &w->cfg->dns;
        pt_arena *a = pt_arena_new(4096);
        pt_dns_srv_answer ans;
        char err[512];
        if (!pt_dns_resolve_srv_now(conf, x->sc->name, interrupt, a, &ans, err, sizeof(err))) {
            if (pending(interrupt)) { /* stopping: not a DNS failure */
                pt_arena_free(a);
                return -1;
            }
            if (++x->failures == 1)
                fprintf(stderr, "portico: dns: %s; keeping the last good answer (%u record%s), asking again later\n",
                        err, x->sc->answer.n, x->sc->answer.n == 1 ? "" : "s");
            x->due = pt_dns_mono_ms() + pt_dns_retry_ms(x->failures);
            pt_arena_free(a);
            continue;
        }
        x->failures = 0;
        x->due = ans.at_ms + srv_ttl_ms(ans.ttl_s, conf);
        bool same = pt_dns_srv_same(&ans, &x->sc->answer);
        if (!same) {
            char now[600];
            describe(&ans, now, sizeof(now));
            snprintf(msg, cap, "SRV %s changed (%u -> %u record%s: %s)", x->sc->name, x->sc->answer.n, ans.n,
                     ans.n == 1 ? "" : "s", now);
        } else {
            x->reload_failures = 0;
        }
        pt_arena_free(a);
        if (!same) return (int)i;
    }
    return -1;
}

void pt_srv_watch_reload_failed(pt_srv_watch *w, int i)
{
    if (i < 0 || (size_t)i >= w->n) return;
    watched *x = &w->v[i];
    x->due = pt_dns_mono_ms() + pt_dns_retry_ms(++x->reload_failures);
}
