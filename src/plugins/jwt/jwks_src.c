/* jwks_src.c — per-worker JWK Set sources fetched from a URL, refreshed on
 * demand with Cache-Control bounds, last good set kept (see jwks_src.h). */
#include "plugins/jwt/jwks_src.h"

#include <stdlib.h>

struct pt_jwks_src {
    struct pt_jwks_src *next;
    char *id;                 /* heap copy of pt_jwks_conf.id */
    struct pt_loop *loop;
    pt_jwt_keyset keys;       /* last good set */
    bool have_keys;
    uint64_t refresh_at_ms;   /* due for a refresh from then (0: now) */
    uint64_t last_attempt_ms;
    bool attempted;
    pt_http_call *call;       /* in flight, or NULL */
    pt_jwks_conf bounds;      /* alg and refresh bounds for the answer of `call` (a copy:
                                 the configuration may be gone when it arrives) */
    pt_jwks_waiter waiters;   /* list head (circular) */
};

pt_jwks_src *pt_jwks_src_get(pt_jwks_src **list, struct pt_loop *loop, const pt_jwks_conf *c)
{
    for (pt_jwks_src *s = *list; s; s = s->next)
        if (strcmp(s->id, c->id) == 0) return s;
    pt_jwks_src *s = pt_xcalloc(1, sizeof(*s));
    s->id = strdup(c->id);
    if (!s->id) pt_panic(__FILE__, __LINE__, "out of memory");
    s->loop = loop;
    s->waiters.prev = s->waiters.next = &s->waiters;
    s->next = *list;
    *list = s;
    return s;
}

const pt_jwt_keyset *pt_jwks_src_keys(const pt_jwks_src *s) { return s->have_keys ? &s->keys : NULL; }

/* Parses a decimal max-age argument; false if not all digits. */
static bool parse_secs(pt_str a, uint64_t *out)
{
    uint64_t v = 0;
    if (!a.n) return false;
    for (size_t i = 0; i < a.n; i++) {
        if (a.p[i] < '0' || a.p[i] > '9') return false;
        if (v < 10ull * 365 * 86400) v = v * 10 + (uint64_t)(a.p[i] - '0');
    }
    *out = v;
    return true;
}

uint64_t pt_jwks_refresh_delay(const pt_jwks_conf *c, const pt_headers *res)
{
    uint64_t ms = c->refresh_ms;
    for (uint32_t j = 0; res && j < res->n; j++) {
        if (!pt_str_ieq_lit(res->v[j].name, "cache-control")) continue;
        pt_str rest = res->v[j].value, tok;
        while (pt_list_next(&rest, &tok)) {
            const char *eq = memchr(tok.p, '=', tok.n);
            pt_str name = eq ? pt_str_make(tok.p, (size_t)(eq - tok.p)) : tok;
            while (name.n && (name.p[name.n - 1] == ' ' || name.p[name.n - 1] == '\t')) name.n--;
            if (pt_str_ieq_lit(name, "no-cache") || pt_str_ieq_lit(name, "no-store")) {
                ms = 0;
            } else if (pt_str_ieq_lit(name, "max-age") && eq) {
                pt_str arg = pt_str_make(eq + 1, tok.n - (size_t)(eq + 1 - tok.p));
                if (arg.n >= 2 && arg.p[0] == '"' && arg.p[arg.n - 1] == '"') arg = pt_str_make(arg.p + 1, arg.n - 2);
                uint64_t secs;
                if (parse_secs(arg, &secs)) ms = secs * 1000;
            }
        }
    }
    if (ms < c->min_refresh_ms) ms = c->min_refresh_ms;
    if (ms > c->max_refresh_ms) ms = c->max_refresh_ms;
    return ms;
}

/* Wakes every waiter, taking one off the list at a time (a woken request
 * may end and so cancel, or be cancelled by, any other). A woken request
 * never waits again (the plugin waits at most once per request). */
static void wake_all(pt_jwks_src *s)
{
    while (s->waiters.next != &s->waiters) {
        pt_jwks_waiter *w = s->waiters.next;
        pt_jwks_waiter_cancel(w);
        w->wake(w);
    }
}

/* The fetch's answer: a 200 with a JWK Set holding at least one usable key
 * replaces the set; anything else keeps the last good one. */
static void fetch_done(void *data, const pt_http_result *r)
{
    pt_jwks_src *s = data;
    const pt_jwks_conf *c = &s->bounds;
    s->call = NULL;
    uint64_t now = pt_loop_now(s->loop);
    bool ok = false;
    if (r->error == PT_HTTP_OK && r->status == 200) {
        pt_jwt_keyset fresh = {0};
        char err[160];
        if (pt_jwks_parse(r->body.p, r->body.n, c->alg, false, &fresh, NULL, err, sizeof(err)) && fresh.n > 0) {
            pt_jwt_keyset_free(&s->keys);
            s->keys = fresh;
            s->have_keys = true;
            s->refresh_at_ms = now + pt_jwks_refresh_delay(c, r->headers);
            ok = true;
        } else {
            pt_jwt_keyset_free(&fresh);
        }
    }
    if (!ok) s->refresh_at_ms = now + c->min_refresh_ms;
    wake_all(s);
}

bool pt_jwks_src_refresh(pt_jwks_src *s, const pt_jwks_conf *c, uint64_t now_ms, bool unknown_kid)
{
    if (s->call) return true;
    bool due = !s->attempted || now_ms >= s->refresh_at_ms;
    if (!due && unknown_kid) due = now_ms >= s->last_attempt_ms + c->min_refresh_ms;
    if (!due) return false;
    s->attempted = true;
    s->last_attempt_ms = now_ms;
    s->refresh_at_ms = now_ms + c->min_refresh_ms; /* until an answer says otherwise */
    pt_headers hs = {0};
    pt_header accept = {PT_STR_LIT("Accept"), PT_STR_LIT("application/jwk-set+json, application/json")};
    hs.v = &accept;
    hs.n = hs.cap = 1;
    pt_http_request req = {
        .upstream = c->upstream,
        .method = PT_STR_LIT("GET"),
        .target = c->path,
        .headers = &hs,
        .timeout_ms = c->timeout_ms,
        .max_body = PT_JWKS_MAX_BODY,
    };
    s->bounds = *c;
    s->bounds.upstream = NULL, s->bounds.path = PT_STR_NULL, s->bounds.id = NULL;
    s->call = pt_http_fetch(s->loop, &req, fetch_done, s);
    return s->call != NULL;
}

void pt_jwks_src_wait(pt_jwks_src *s, pt_jwks_waiter *w)
{
    w->src = s;
    w->prev = s->waiters.prev;
    w->next = &s->waiters;
    s->waiters.prev->next = w;
    s->waiters.prev = w;
}

void pt_jwks_waiter_cancel(pt_jwks_waiter *w)
{
    if (!w->src) return;
    w->prev->next = w->next;
    w->next->prev = w->prev;
    w->prev = w->next = NULL;
    w->src = NULL;
}

void pt_jwks_src_free_all(pt_jwks_src **list)
{
    for (pt_jwks_src *s = *list, *n; s; s = n) {
        n = s->next;
        if (s->call) pt_http_cancel(s->call);
        while (s->waiters.next != &s->waiters) pt_jwks_waiter_cancel(s->waiters.next);
        pt_jwt_keyset_free(&s->keys);
        free(s->id);
        free(s);
    }
    *list = NULL;
}
