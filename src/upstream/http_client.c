/* http_client.c — the internal HTTP client (see plugin/plugin.h and
 * http_client.h).
 *
 * A call owns an arena (request copy, response head and body), pins the
 * worker's generation while it runs (so the upstream's pools stay), and
 * finishes exactly once: success, failure or timeout all go through
 * complete(), which delivers the result from a deferred callback — never
 * inside pt_http_fetch or inside an exchange callback — and then frees the
 * call. pt_http_cancel before that delivery frees it without a callback. */
#include "upstream/http_client.h"

#include <stdlib.h>

#include "core/buf.h"
#include "core/loop.h"
#include "server/worker.h"
#include "upstream/balance.h"
#include "upstream/exchange.h"

#define DEFAULT_MAX_BODY (1u << 20)

struct pt_http_call {
    pt_worker *w;
    pt_worker_gen *wg;
    pt_upstream_rt *ups;
    pt_arena *a;
    pt_request req;          /* method only: what the exchanges read */
    pt_str target, host;     /* host: the one this attempt sends */
    pt_str req_host;         /* the caller's; empty: each target's "host:port" */
    pt_headers headers;
    pt_str body;
    size_t max_body;
    uint64_t tried;
    int attempts;
    void *x;                 /* the exchange, while one is open */
    const pt_upstream_exchange_ops *xops;
    pt_timer timer;
    pt_defer done_defer;
    bool completed;
    bool delivering;         /* inside the callback: a cancel there is a no-op */
    pt_http_result result;
    pt_response *res;
    pt_buf rbody;
    pt_http_done_fn done;
    void *data;
    pt_http_call **list;     /* the owner list it is on, or NULL */
    pt_http_call *next, *prev;
};

static const pt_uconn_cbs call_cbs;
static void start_attempt(pt_http_call *c);

void pt_http_call_link(pt_http_call *c, pt_http_call **head)
{
    c->list = head;
    c->prev = NULL;
    c->next = *head;
    if (*head) (*head)->prev = c;
    *head = c;
}

static void unlink_call(pt_http_call *c)
{
    if (!c->list) return;
    if (c->prev) c->prev->next = c->next;
    else *c->list = c->next;
    if (c->next) c->next->prev = c->prev;
    c->list = NULL;
    c->next = c->prev = NULL;
}

static void close_exchange(pt_http_call *c)
{
    if (!c->x) return;
    void *x = c->x;
    c->x = NULL;
    c->xops->close(x);
}

static void free_call(pt_http_call *c)
{
    pt_timer_stop(c->w->loop, &c->timer);
    pt_defer_cancel(c->w->loop, &c->done_defer);
    close_exchange(c);
    unlink_call(c);
    pt_buf_release(&c->rbody);
    pt_worker_gen_release(c->w, c->wg);
    pt_worker_arena_put(c->w, c->a);
    free(c);
}

static void deliver_cb(pt_loop *loop, pt_defer *d)
{
    pt_http_call *c = d->data;
    unlink_call(c);
    if (c->result.error == PT_HTTP_OK) {
        c->result.status = c->res->status;
        c->result.headers = &c->res->headers;
        c->result.body = pt_str_make(c->rbody.len ? pt_buf_head(&c->rbody) : "", c->rbody.len);
    }
    c->delivering = true;
    c->done(c->data, &c->result);
    free_call(c);
}

/* The call's outcome is decided: stop everything and deliver it from the loop. */
static void complete(pt_http_call *c, pt_http_error err, const char *detail)
{
    if (c->completed) return;
    c->completed = true;
    c->result.error = err;
    c->result.detail = detail;
    pt_timer_stop(c->w->loop, &c->timer);
    if (err != PT_HTTP_OK) close_exchange(c);
    pt_defer_queue(c->w->loop, &c->done_defer, deliver_cb, c);
}

static void timeout_cb(pt_loop *loop, pt_timer *t)
{
    complete(t->data, PT_HTTP_ERR_TIMEOUT, "the upstream did not answer in time");
}

/* ------------------------------------------------------- exchange events */

static void on_ready(void *owner)
{
    pt_http_call *c = owner;
    void *x = c->x;
    c->xops->send_head(x, &c->req, c->target, c->host, &c->headers, c->body.n > 0, (int64_t)c->body.n);
    if (c->x != x || !c->body.n) return;
    c->xops->send_body(x, c->body.p, c->body.n);
    if (c->x != x) return;
    c->xops->send_end(x, PT_STR_NULL);
}

static void on_writable(void *owner) {}
static void on_informational(void *owner, pt_response *res) {}

static void on_head(void *owner, pt_response *res) { ((pt_http_call *)owner)->res = res; }

static void on_body(void *owner, const char *data, size_t len)
{
    pt_http_call *c = owner;
    if (c->completed) return;
    if (c->rbody.len + len > c->max_body) {
        complete(c, PT_HTTP_ERR_TOO_LARGE, "the response body exceeds the configured limit");
        return;
    }
    pt_buf_append(&c->rbody, data, len);
}

static void on_end(void *owner, pt_str trailers)
{
    pt_http_call *c = owner;
    if (c->completed) return;
    void *x = c->x;
    c->x = NULL;
    c->xops->release(x); /* complete and well framed: back to the pool */
    complete(c, PT_HTTP_OK, NULL);
}

static void on_error(void *owner, pt_uerr err, bool nothing_received)
{
    pt_http_call *c = owner;
    bool reused = c->x && c->xops->reused(c->x);
    close_exchange(c);
    if (c->completed) return;
    /* The proxy's retry rule (pt_exchange_retry); a failed connect sent
     * nothing, so any method may go to another target. */
    pt_exchange_retry_kind retry =
        pt_exchange_retry(err, reused, nothing_received, c->attempts, c->ups->conf->ntargets, true);
    if (retry != PT_RETRY_NONE) {
        if (retry == PT_RETRY_STALE) c->tried = 0;
        start_attempt(c);
        return;
    }
    switch (err) {
    case PT_UERR_CONNECT:
    case PT_UERR_CONNECT_TIMEOUT: complete(c, PT_HTTP_ERR_CONNECT, "the upstream could not be reached"); break;
    case PT_UERR_READ_TIMEOUT:
    case PT_UERR_WRITE_TIMEOUT: complete(c, PT_HTTP_ERR_TIMEOUT, "the upstream did not answer in time"); break;
    case PT_UERR_TLS: complete(c, PT_HTTP_ERR_PROTOCOL, "TLS handshake with the upstream failed"); break;
    case PT_UERR_PROTOCOL: complete(c, PT_HTTP_ERR_PROTOCOL, "the upstream sent an invalid response"); break;
    default: complete(c, PT_HTTP_ERR_PROTOCOL, "the upstream closed the connection"); break;
    }
}

static const pt_uconn_cbs call_cbs = {
    .on_ready = on_ready,
    .on_writable = on_writable,
    .on_informational = on_informational,
    .on_head = on_head,
    .on_body = on_body,
    .on_end = on_end,
    .on_error = on_error,
};

/* ------------------------------------------------------------------ calls */

static void start_attempt(pt_http_call *c)
{
    const pt_upstream_conf *u = c->ups->conf;
    for (;;) {
        int idx = pt_lb_pick(c->ups, c->tried, PT_STR_NULL, pt_lb_now_us()); /* skips ejected/unhealthy targets */
        if (idx < 0 || c->attempts >= PT_EXCHANGE_MAX_ATTEMPTS) {
            complete(c, PT_HTTP_ERR_CONNECT, "no upstream target could be reached");
            return;
        }
        if (idx < 64) c->tried |= 1ull << idx;
        c->attempts++;
        c->res = NULL;
        c->rbody.len = 0;
        bool fresh = false;
        void *x = pt_exchange_open(c->w, c->ups, idx, c->wg->gen->up_tls[u->index], &c->xops, &fresh);
        if (!x) {
            if (c->attempts < (int)u->ntargets) continue;
            complete(c, PT_HTTP_ERR_CONNECT, "upstream connection failed");
            return;
        }
        c->x = x;
        pt_str host = c->req_host;
        if (!host.n) {
            const pt_target_conf *t = &u->targets[idx];
            host = pt_str_c(pt_arena_printf(c->a, "%s:%u", t->host, (unsigned)t->port));
        }
        c->host = host;
        c->xops->attach(x, &call_cbs, c, c->a, u, &c->wg->gen->h1_limits, u->connect_timeout_ms);
        if (!fresh) on_ready(c);
        return;
    }
}

/* The runtime state of upstream `conf` in the worker's generation: the
 * same object when conf belongs to it, else the upstream of that name. */
static pt_upstream_rt *find_upstream(pt_worker_gen *wg, const pt_upstream_conf *conf)
{
    const pt_config *cfg = wg->gen->cfg;
    if (conf->index >= 0 && (size_t)conf->index < cfg->nupstreams && &cfg->upstreams[conf->index] == conf)
        return &wg->upstreams[conf->index];
    for (size_t i = 0; i < cfg->nupstreams; i++)
        if (strcmp(cfg->upstreams[i].name, conf->name) == 0) return &wg->upstreams[i];
    return NULL;
}

/* Header fields that describe the connection or the framing: the exchange
 * writes its own. */
static bool field_owned_by_exchange(pt_str name)
{
    return pt_field_connection_specific(name) || pt_str_ieq_lit(name, "host") ||
           pt_str_ieq_lit(name, "content-length");
}

/* Starts a call, pinning `wg` (the caller's generation reference moves in). */
static pt_http_call *fetch_on(pt_worker *w, pt_worker_gen *wg, const pt_http_request *req, pt_http_done_fn done,
                              void *data)
{
    pt_http_call *c = pt_xcalloc(1, sizeof(*c));
    c->w = w;
    c->wg = wg;
    c->a = pt_worker_arena_get(w);
    c->done = done;
    c->data = data;
    c->timer.data = c;
    c->req.method_str = pt_arena_str(c->a, req->method);
    c->req.method = pt_method_from_str(req->method);
    c->target = pt_arena_str(c->a, req->target);
    c->req_host = req->host.n ? pt_arena_str(c->a, req->host) : PT_STR_NULL;
    c->body = req->body.n ? pt_arena_str(c->a, req->body) : PT_STR_NULL;
    c->max_body = req->max_body ? req->max_body : DEFAULT_MAX_BODY;
    if (req->headers)
        for (uint32_t i = 0; i < req->headers->n; i++) {
            const pt_header *h = &req->headers->v[i];
            if (field_owned_by_exchange(h->name)) continue;
            pt_headers_add(&c->headers, c->a, pt_arena_str(c->a, h->name), pt_arena_str(c->a, h->value));
        }
    c->ups = find_upstream(wg, req->upstream);
    if (!c->ups) {
        complete(c, PT_HTTP_ERR_UPSTREAM_GONE, "the upstream is not in the running configuration");
        return c;
    }
    uint64_t ms = req->timeout_ms ? req->timeout_ms : c->ups->conf->read_timeout_ms;
    pt_timer_start(w->loop, &c->timer, ms, timeout_cb, c);
    start_attempt(c);
    return c;
}

pt_http_call *pt_http_fetch(struct pt_loop *loop, const pt_http_request *req, pt_http_done_fn done, void *data)
{
    if (!loop || !req || !req->upstream || !req->method.n || !req->target.n || !done) return NULL;
    pt_worker *w = pt_loop_data(loop);
    return fetch_on(w, pt_worker_gen_acquire(w), req, done, data);
}

void pt_http_cancel(pt_http_call *c)
{
    if (c && !c->delivering) free_call(c);
}

pt_http_call *pt_http_fetch_in(pt_worker *w, pt_worker_gen *wg, const pt_http_request *req, pt_http_done_fn done,
                               void *data)
{
    if (!req || !req->upstream || !req->method.n || !req->target.n || !done) return NULL;
    wg->users++; /* released with the call */
    return fetch_on(w, wg, req, done, data);
}
