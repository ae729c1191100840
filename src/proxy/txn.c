/* txn.c — the transaction state machine (see txn.h): lifecycle, routing,
 * the header phases of both sides, local responses, finishing.
 *
 * Order of events for a proxied request:
 *   pt_txn_start: normalise path, route (404/405), body-size check (413),
 *     request-header phase (each plugin may continue, respond or pause);
 *   txn_connect_upstream (txn_upstream.c): pick a target, take a pooled
 *     connection or connect; failed attempts are retried under the route's
 *     policy (txn_retry.c: failures, 5xx heads, per-try timeout, deadline);
 *   the upstream is ready: send the head, then ask the codec for the body,
 *     which runs through the request-body plugins (txn_body.c) and is
 *     streamed with backpressure (codec -> txn -> upstream);
 *   the upstream's head: response-header phase, then the head goes to the
 *     codec; the body runs through the response-body plugins and streams
 *     with backpressure (upstream -> codec);
 *   txn_finish: log phase, access log, release the upstream exchange; the
 *     codec hears ops->finished when the outermost call into the txn leaves.
 * The request side and the response side have their own pipeline cursor and
 * pause (txn_side), so an early upstream response runs its plugins while a
 * request-body plugin is paused. A local response (plugin, or an error
 * Portico generates) goes through the response side as well. */
#include <stdio.h>

#include "obs/accesslog.h"
#include "http/problem.h"
#include "obs/gateway_metrics.h"
#include "proxy/txn_int.h"
#include "router/normalize.h"
#include "tls/tls_server.h"
#include "upstream/http_client.h"

static void run_request_headers(pt_txn *t);
static void run_response_headers(pt_txn *t);

/* ------------------------------------------------------------ re-entrancy */

/* The outermost leave of a finished txn: release its generation and tell
 * the codec (which may free the txn's arena). */
void txn_leave_finished(pt_txn *t)
{
    if (t->told_codec) return;
    t->told_codec = true;
    pt_worker_gen_release(t->w, t->wg);
    t->ops->finished(t->stream);
}

/* ---------------------------------------------------------------- accessors */

pt_request *pt_txn_request(pt_txn *t) { return t->req; }
pt_response *pt_txn_response(pt_txn *t) { return &t->res; }
pt_arena *pt_txn_arena(pt_txn *t) { return t->a; }
struct pt_loop *pt_txn_loop(pt_txn *t) { return t->w->loop; }
const pt_route_conf *pt_txn_route(pt_txn *t) { return t->route; }
pt_str pt_txn_request_id(pt_txn *t) { return t->request_id; }
pt_str pt_txn_path(pt_txn *t) { return t->norm_path; }
pt_str pt_txn_client_addr(pt_txn *t) { return t->client_addr; }
pt_str pt_txn_client_cert_subject(pt_txn *t) { return t->conn.client_cert_subject; }
pt_str pt_txn_client_cert_sans(pt_txn *t) { return t->conn.client_cert_sans; }
bool pt_txn_response_started(const pt_txn *t) { return t->resp_started; }
bool pt_txn_response_is_local(pt_txn *t) { return t->local; }
void *pt_txn_worker_state(pt_txn *t, const pt_plugin_type *type) { return pt_worker_plugin_state(t->w, type); }

/* The listener the request arrived on (NULL if the generation changed its list). */
const pt_listener_conf *txn_listener(const pt_txn *t)
{
    return t->conn.listener < t->gen->cfg->nlisteners ? &t->gen->cfg->listeners[t->conn.listener] : NULL;
}

void pt_txn_set_request_id(pt_txn *t, pt_str id) { t->request_id = pt_arena_str(t->a, id); }

void pt_txn_redact_query_param(pt_txn *t, pt_str name)
{
    if (name.n) pt_headers_add(&t->redact_query, t->a, pt_arena_str(t->a, name), PT_STR_NULL);
}

static int hex_digit(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Whether query parameter name `raw` is `want`, as written or percent-decoded. */
static bool query_name_is(pt_str raw, pt_str want)
{
    if (pt_str_eq(raw, want)) return true;
    size_t j = 0;
    for (size_t i = 0; i < raw.n; i++, j++) {
        char c = raw.p[i];
        if (c == '%' && i + 2 < raw.n && hex_digit(raw.p[i + 1]) >= 0 && hex_digit(raw.p[i + 2]) >= 0) {
            c = (char)(hex_digit(raw.p[i + 1]) << 4 | hex_digit(raw.p[i + 2]));
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (j >= want.n || want.p[j] != c) return false;
    }
    return j == want.n;
}

/* The query as the access log shows it: the values of the parameters named
 * with pt_txn_redact_query_param replaced by REDACTED, the rest as received. */
static pt_str redacted_query(pt_txn *t, pt_str q)
{
    if (!t->redact_query.n || !q.n) return q;
    char *out = pt_arena_alloc(t->a, q.n + 16 * (q.n / 2 + 1));
    size_t on = 0;
    for (size_t i = 0; i <= q.n;) {
        size_t e = i;
        while (e < q.n && q.p[e] != '&') e++;
        pt_str pair = pt_str_make(q.p + i, e - i);
        const char *eq = pair.n ? memchr(pair.p, '=', pair.n) : NULL;
        pt_str name = eq ? pt_str_make(pair.p, (size_t)(eq - pair.p)) : pair;
        bool secret = false;
        for (uint32_t k = 0; k < t->redact_query.n && !secret; k++) secret = query_name_is(name, t->redact_query.v[k].name);
        if (i) out[on++] = '&';
        memcpy(out + on, name.p, name.n);
        on += name.n;
        if (eq) {
            pt_str val = secret ? PT_STR_LIT("REDACTED") : pt_str_make(eq + 1, pair.n - name.n - 1);
            out[on++] = '=';
            memcpy(out + on, val.p, val.n);
            on += val.n;
        }
        if (e >= q.n) break;
        i = e + 1;
    }
    return pt_str_make(out, on);
}

pt_str pt_txn_param(pt_txn *t, const char *name)
{
    pt_str n = pt_str_c(name);
    for (int i = 0; i < t->match.nparams; i++)
        if (pt_str_eq(t->match.params[i].name, n)) return t->match.params[i].value;
    return PT_STR_NULL;
}

/* True when a segment of `p` is "." or ".." (also spelled with %2E). */
static bool has_dot_segment(pt_str p)
{
    size_t i = 0;
    while (i < p.n) {
        while (i < p.n && p.p[i] == '/') i++;
        size_t dots = 0, other = 0;
        for (; i < p.n && p.p[i] != '/'; i++) {
            if (p.p[i] == '.') {
                dots++;
            } else if (p.p[i] == '%' && i + 2 < p.n && p.p[i + 1] == '2' && (p.p[i + 2] | 0x20) == 'e') {
                dots++;
                i += 2;
            } else {
                other++;
            }
        }
        if (!other && (dots == 1 || dots == 2)) return true;
    }
    return false;
}

bool pt_txn_set_upstream_path(pt_txn *t, pt_str path, const char **detail)
{
    const char *why = NULL;
    if (!t->route) {
        why = "no route";
    } else if (!path.n || path.p[0] != '/') {
        why = "the rewritten path does not start with '/'";
    } else if (has_dot_segment(path)) {
        why = "the rewritten path has a dot segment";
    } else {
        char *out = pt_arena_alloc(t->a, PT_PATH_NORM_CAP(path.n));
        ssize_t n = pt_path_normalize_rules(path.p, path.n, &t->route->path_rules, out, NULL, &why);
        if (n >= 0) {
            t->upstream_path = pt_str_make(out, (size_t)n);
            return true;
        }
    }
    if (detail) *detail = why;
    return false;
}

void pt_txn_get_stats(pt_txn *t, pt_txn_stats *o)
{
    uint64_t now = pt_loop_wall_us(t->w->loop);
    *o = (pt_txn_stats){
        .status = t->status,
        .aborted = t->aborted,
        .upstream_failed = t->upstream_failed,
        .bytes_in = t->bytes_in,
        .bytes_out = t->ops->bytes_sent ? t->ops->bytes_sent(t->stream) : t->bytes_out,
        .total_us = now > t->start_us ? now - t->start_us : 0,
        .upstream_us = t->up_start_us ? (int64_t)((t->up_end_us ? t->up_end_us : now) - t->up_start_us) : -1,
        .ttfb_us = t->up_head_us ? (int64_t)(t->up_head_us - t->start_us) : -1,
        .attempts = t->attempts,
        .target = t->target ? pt_str_c(t->target->addr.text) : PT_STR_NULL,
        .target_index = t->target && t->ups ? (int)(t->target - t->ups->conf->targets) : -1,
        .route = t->route,
        .responder = t->responder,
        .method = t->req ? t->req->method : PT_METHOD_OTHER,
        .trace_id = t->trace.trace_hex,
    };
}

/* ------------------------------------------------------- local responses */

/* A generator whose response is replaced before it streamed is told so. */
static void stop_generator(pt_txn *t, bool complete)
{
    if (!t->genr || t->genr_stopped) return;
    t->genr_stopped = true;
    t->genr_active = false;
    pt_defer_cancel(t->w->loop, &t->proceed_defer);
    t->genr->stop(t, t->genr_data, complete);
}

void pt_txn_respond(pt_txn *t, int status, pt_str content_type, pt_str body)
{
    stop_generator(t, false);
    t->genr = NULL;
    t->genr_stopped = false;
    memset(&t->res, 0, sizeof(t->res));
    t->res.status = status;
    t->local = true;
    t->problem = false;
    t->local_body = pt_arena_str(t->a, body);
    bool bodiless_status = status < 200 || status == 204 || status == 304;
    t->res.has_body = !bodiless_status && !(t->req && t->req->method == PT_METHOD_HEAD);
    t->res.content_length = bodiless_status ? -1 : (int64_t)body.n; /* HEAD: the length a GET would get */
    if (content_type.n) pt_headers_add(&t->res.headers, t->a, PT_STR_LIT("Content-Type"), pt_arena_str(t->a, content_type));
}

void pt_txn_respond_stream(pt_txn *t, int status, pt_str content_type, int64_t content_length,
                           const pt_generator *gen, void *data)
{
    pt_txn_respond(t, status, content_type, PT_STR_NULL);
    bool bodiless_status = status < 200 || status == 204 || status == 304;
    t->res.content_length = bodiless_status ? -1 : content_length;
    t->genr = gen;
    t->genr_data = data;
}

static void proceed_cb(pt_loop *loop, pt_defer *d)
{
    pt_txn *t = d->data;
    txn_enter(t);
    if (!t->finished && t->genr_active && !t->genr_stopped) {
        t->genr_blocked = false;
        t->genr->proceed(t, t->genr_data);
    }
    txn_leave(t);
}

void txn_generator_kick(pt_txn *t)
{
    if (!t->genr_active || !t->genr_blocked || t->finished || t->ds_full) return;
    const txn_side *s = &t->side[PT_SIDE_RESPONSE];
    if (s->paused || s->queued_any) return;
    pt_defer_queue(t->w->loop, &t->proceed_defer, proceed_cb, t);
}

bool pt_txn_stream_write(pt_txn *t, const char *data, size_t len, bool last)
{
    if (t->finished || !t->genr_active || t->genr_stopped || t->resp_done) return false;
    txn_enter(t);
    txn_response_chunk(t, data, len, last);
    const txn_side *s = &t->side[PT_SIDE_RESPONSE];
    bool more = !t->finished && !last && !t->ds_full && !s->paused && !s->queued_any;
    if (!more && !t->finished && !last) t->genr_blocked = true;
    txn_leave(t);
    return more;
}

void pt_txn_stream_abort(pt_txn *t)
{
    if (t->finished || !t->genr || t->genr_stopped || t->resp_done) return;
    txn_enter(t);
    txn_fail_request(t, 502, "the streamed response could not be completed");
    txn_leave(t);
}

void pt_txn_respond_header(pt_txn *t, pt_str name, pt_str value)
{
    pt_headers_add(&t->res.headers, t->a, pt_arena_str(t->a, name), pt_arena_str(t->a, value));
}

void pt_txn_respond_problem(pt_txn *t, int status, const char *detail)
{
    if (txn_respond_grpc_error(t, status, detail)) return;
    /* The body is built in emit_response, after the response phase, so it
     * carries the request id even when request_id only runs then. */
    pt_txn_respond(t, status, PT_STR_LIT(PT_PROBLEM_CONTENT_TYPE), PT_STR_NULL);
    t->problem_detail = detail ? pt_arena_strndup(t->a, detail, strlen(detail)) : NULL;
    t->problem = true;
    /* After a framing/limit error the rest of the connection is suspect. */
    t->res.close_connection = status == 400 || status == 408 || status == 413 || status == 414 || status == 431;
    if (status == 405 && t->match.allowed_methods) {
        char allow[128];
        size_t n = 0;
        for (int m = 1; m < PT_METHOD__COUNT; m++) {
            if (!(t->match.allowed_methods & PT_METHOD_BIT(m))) continue;
            n += (size_t)snprintf(allow + n, sizeof(allow) - n, "%s%s", n ? ", " : "", pt_method_name((pt_method)m));
            if (n >= sizeof(allow)) { n = sizeof(allow) - 1; break; }
        }
        pt_txn_respond_header(t, PT_STR_LIT("Allow"), pt_str_make(allow, n));
    }
}

void pt_txn_body_will_change(pt_txn *t, pt_side side)
{
    if (side == PT_SIDE_REQUEST) {
        if (t->req && t->req->has_body) t->req->content_length = -1;
        return;
    }
    if (t->res.status >= 200 && t->res.status != 204 && t->res.status != 304) t->res.content_length = -1;
    pt_headers_remove(&t->res.headers, "Content-Length");
    /* A changed representation no longer matches a strong validator. */
    for (uint32_t i = 0; i < t->res.headers.n; i++) {
        pt_header *h = &t->res.headers.v[i];
        if (!pt_str_ieq_lit(h->name, "ETag") || !h->value.n || h->value.p[0] != '"') continue;
        h->value = pt_str_c(pt_arena_printf(t->a, "W/%.*s", (int)h->value.n, h->value.p));
    }
}

void pt_txn_hold_request_head(pt_txn *t)
{
    if (t->req && t->req->has_body && !t->ups) t->req_hold = true; /* the request phase is still on */
}

void pt_txn_hold_response_head(pt_txn *t)
{
    if (!t->resp_started) t->head_hold = true;
}

/* ----------------------------------------------------------------- lifecycle */

pt_txn *pt_txn_new(pt_worker *w, pt_arena *a, const pt_downstream_ops *ops, void *stream, const pt_conn_info *ci,
                   uint64_t start_us)
{
    pt_txn *t = pt_arena_calloc(a, sizeof(*t));
    t->w = w;
    t->a = a;
    t->ops = ops;
    t->stream = stream;
    t->conn = *ci;
    t->client_addr = ci->client_addr;
    t->start_us = start_us;
    t->wg = pt_worker_gen_acquire(w);
    t->gen = t->wg->gen;
    t->pipe = &t->gen->global;
    t->max_buffered = t->gen->cfg->limits.max_buffered_body;
    return t;
}

static void alloc_states(pt_txn *t)
{
    t->states = t->pipe->state_size ? pt_arena_calloc(t->a, t->pipe->state_size) : NULL;
}

void *txn_plugin_state(pt_txn *t, size_t i)
{
    return t->pipe->v[i]->type->state_size ? t->states + t->pipe->state_off[i] : NULL;
}

void pt_txn_start_error(pt_txn *t, pt_request *req, int status, const char *detail, uint64_t bytes_in)
{
    txn_enter(t);
    t->req = req;
    t->bytes_in = bytes_in;
    t->req_body_done = true; /* the codec closes the connection after an error */
    txn_trace_start(t, false); /* the head is not trusted: a new trace */
    alloc_states(t);
    txn_respond_problem(t, status, detail);
    txn_leave(t);
}

/* Routes the request and sets up its pipeline; false when it was answered
 * at once (HTTPS redirect, misdirected host, invalid path). */
static bool route_request(pt_txn *t)
{
    pt_request *req = t->req;
    const pt_listener_conf *lc = txn_listener(t);
    if (lc && lc->redirect_https) {
        /* A plain listener that only redirects to HTTPS (308 keeps the method). */
        alloc_states(t);
        pt_str host = req->host.n ? req->host : PT_STR_LIT("localhost");
        char port[8] = "";
        if (lc->redirect_https != 443) snprintf(port, sizeof(port), ":%u", (unsigned)lc->redirect_https);
        char *loc = pt_arena_printf(t->a, "https://%.*s%s%.*s", (int)host.n, host.p, port, (int)req->target.n,
                                    req->target.p);
        pt_txn_respond(t, 308, PT_STR_NULL, PT_STR_NULL);
        pt_txn_respond_header(t, PT_STR_LIT("Location"), pt_str_c(loc));
        txn_start_response_phase(t);
        return false;
    }

    /* The client_auth policy is chosen per certificate by SNI: a request for
     * a host whose certificate has another policy than the one this
     * connection was authenticated under is misdirected (RFC 9110 §15.5.20),
     * else SNI open.example + Host secure.example would skip client auth. */
    struct pt_tls_server *tls = t->conn.tls && lc ? t->gen->tls[t->conn.listener] : NULL;
    if (tls && !pt_tls_host_allowed(tls, t->conn.tls_policy, req->host)) {
        alloc_states(t);
        txn_respond_problem(t, 421, "this connection cannot serve the requested host; connect with its name as SNI");
        return false;
    }

    /* Normalise under the path rules and route; the upstream receives
     * exactly what was matched (router/resolve.c). */
    pt_route_input in = {.host = req->host, .method = req->method, .headers = &req->headers, .query = req->query};
    const char *detail = NULL;
    if (pt_router_resolve(t->gen->router, &t->gen->cfg->path_rules, req->path, &in, t->a, &t->match, &detail) < 0) {
        alloc_states(t);
        txn_respond_problem(t, 400, detail ? detail : "invalid path");
        return false;
    }
    t->norm_path = in.path;
    if (t->match.status == 0) {
        t->route = t->match.route;
        t->pipe = &t->gen->route_pipes[t->route->index];
        t->max_buffered = t->route->max_buffered_body;
        txn_retry_route_start(t);
    }
    alloc_states(t);
    /* Routing and limit errors are answered after the request phase has run
     * (global plugins for unrouted requests), so request_id, auth and the
     * like apply to error responses too. */
    if (t->match.status == 404) {
        t->pending_error = 404;
        t->pending_detail = "no route matches this request";
    } else if (t->match.status == 405) {
        t->pending_error = 405;
        t->pending_detail = "method not allowed on this route";
    } else {
        t->max_body = t->route->max_body_size ? t->route->max_body_size : t->gen->cfg->limits.max_body_size;
        if (req->has_body && req->content_length >= 0 && t->max_body && (uint64_t)req->content_length > t->max_body) {
            t->pending_error = 413;
            t->pending_detail = "request body exceeds the configured limit";
        }
    }
    if (req->upgrade.n) txn_tunnel_route(t);
    return true;
}

void pt_txn_start(pt_txn *t, pt_request *req, uint64_t head_bytes)
{
    txn_enter(t);
    t->req = req;
    t->bytes_in = head_bytes;
    /* "Content-Length: 0" is a body that is already complete. */
    t->req_body_done = !req->has_body || req->content_length == 0;
    txn_resolve_client_addr(t);
    txn_trace_start(t, true);
    txn_identity_strip(t); /* before any plugin or route predicate sees them */
    if (route_request(t)) run_request_headers(t);
    txn_leave(t);
}

/* ------------------------------------------------------------------ pipeline */

/* A response-header plugin answered: its response replaces the one the
 * earlier plugins saw, so the response side starts over on it (every
 * plugin sees the response that is sent; a few replacements at most, so
 * two plugins that keep replacing each other's answer cannot loop). */
#define MAX_RESPONSE_REPLACEMENTS 3
static void response_replaced(pt_txn *t)
{
    txn_side *s = &t->side[PT_SIDE_RESPONSE];
    txn_drop_upstream(t);
    if (++t->resp_replacements <= MAX_RESPONSE_REPLACEMENTS) s->idx = 0;
    else s->idx++;
}

/* Resumes `side` after a pause in one of its header callbacks. */
static void resume_headers(pt_txn *t, pt_side side, pt_plugin_result r)
{
    txn_side *s = &t->side[side];
    if (side == PT_SIDE_REQUEST) {
        if (r == PT_PLUGIN_RESPOND) {
            if (!t->responder) t->responder = t->pipe->v[s->idx]->name;
            txn_request_side_responded(t);
            return;
        }
        s->idx++;
        run_request_headers(t);
        return;
    }
    if (r == PT_PLUGIN_RESPOND) response_replaced(t);
    else s->idx++;
    run_response_headers(t);
}

static void resume_side(pt_txn *t, pt_side side)
{
    txn_side *s = &t->side[side];
    if (!s->paused || t->finished) return;
    s->paused = false;
    pt_plugin_result r = s->resume_result;
    if (s->paused_in_body) {
        s->paused_in_body = false;
        txn_body_resume(t, side, r);
    } else {
        resume_headers(t, side, r);
    }
}

static void resume_request_cb(pt_loop *loop, pt_defer *d)
{
    pt_txn *t = d->data;
    txn_enter(t);
    resume_side(t, PT_SIDE_REQUEST);
    txn_leave(t);
}

static void resume_response_cb(pt_loop *loop, pt_defer *d)
{
    pt_txn *t = d->data;
    txn_enter(t);
    resume_side(t, PT_SIDE_RESPONSE);
    txn_leave(t);
}

/* Queues the resume of a paused side for the next loop turn (never
 * re-entrantly from inside the plugin that asks for it). */
static void queue_resume(pt_txn *t, pt_side side, pt_plugin_result r)
{
    txn_side *s = &t->side[side];
    s->resume_result = r;
    pt_defer_queue(t->w->loop, &s->resume_defer, side == PT_SIDE_REQUEST ? resume_request_cb : resume_response_cb, t);
}

void pt_txn_resume(pt_txn *t, pt_side side, pt_plugin_result r)
{
    if (t->finished || (side != PT_SIDE_REQUEST && side != PT_SIDE_RESPONSE)) return;
    if (r != PT_PLUGIN_RESPOND) r = PT_PLUGIN_CONTINUE;
    txn_side *s = &t->side[side];
    if (s->running && !s->paused) {
        /* Called from inside the callback that is about to return PAUSE. */
        s->early_resume = true;
        s->early_result = r;
        return;
    }
    if (!s->paused || s->resume_defer.queued) return;
    queue_resume(t, side, r);
}

/* Records a PAUSE returned by a callback of `side` (honouring a resume that
 * the plugin already asked for during the callback). */
void txn_side_paused(pt_txn *t, pt_side side, bool in_body)
{
    txn_side *s = &t->side[side];
    s->paused = true;
    s->paused_in_body = in_body;
    if (s->early_resume) {
        s->early_resume = false;
        queue_resume(t, side, s->early_result);
    }
}

/* Forgets a pause of `side` (its request part is over or replaced). */
static void cancel_pause(pt_txn *t, pt_side side)
{
    txn_side *s = &t->side[side];
    bool was_paused = s->paused && !s->resume_defer.queued;
    pt_defer_cancel(t->w->loop, &s->resume_defer);
    s->paused = s->paused_in_body = s->early_resume = false;
    /* The plugin still waits for its event: tell it to stop, so its late
     * resume cannot release a later pause of this side. */
    if (was_paused && s->idx < t->pipe->n) {
        const pt_plugin_instance *pi = t->pipe->v[s->idx];
        if (pi->type->on_pause_cancelled)
            pi->type->on_pause_cancelled(t, pi->conf, txn_plugin_state(t, s->idx), side);
    }
}

static void run_request_headers(pt_txn *t)
{
    txn_side *s = &t->side[PT_SIDE_REQUEST];
    const pt_pipeline *p = t->pipe;
    for (; s->idx < p->n; s->idx++) {
        const pt_plugin_instance *pi = p->v[s->idx];
        if (!pi->type->on_request_headers) continue;
        s->running = true;
        pt_plugin_result r = pi->type->on_request_headers(t, pi->conf, txn_plugin_state(t, s->idx));
        s->running = false;
        if (r == PT_PLUGIN_PAUSE) {
            txn_side_paused(t, PT_SIDE_REQUEST, false);
            return;
        }
        s->early_resume = false;
        if (r == PT_PLUGIN_RESPOND) {
            PT_ASSERT(t->local);
            if (!t->responder) t->responder = pi->name;
            txn_request_side_responded(t);
            return;
        }
    }
    /* authentication ends with the request phase: anonymous consumer or
     * 401 with every challenge (txn_identity.c) */
    if (pt_txn_auth_settle(t) == PT_PLUGIN_RESPOND) {
        t->responder = "auth";
        txn_request_side_responded(t);
        return;
    }
    if (t->pending_error) {
        txn_respond_problem(t, t->pending_error, t->pending_detail);
        return;
    }
    if (!t->route->upstream) {
        txn_respond_problem(t, 500, "the route has no upstream and no plugin answered");
        return;
    }
    t->ups = &t->wg->upstreams[t->route->upstream->index];
    pt_str path = t->upstream_path.p ? t->upstream_path
                                     : pt_route_upstream_path(t->route, &t->match, t->norm_path, t->a);
    if (t->req->has_query) {
        char *q = pt_arena_alloc(t->a, path.n + 1 + t->req->query.n + 1);
        memcpy(q, path.p, path.n);
        q[path.n] = '?';
        memcpy(q + path.n + 1, t->req->query.p, t->req->query.n);
        q[path.n + 1 + t->req->query.n] = '\0';
        t->upstream_target = pt_str_make(q, path.n + 1 + t->req->query.n);
    } else {
        t->upstream_target = path;
    }
    txn_arm_grpc_deadline(t);
    if (t->req_hold) {
        /* the body comes first; forward_request connects once it passed */
        t->ops->want_body(t->stream, true);
        return;
    }
    txn_connect_upstream(t);
}

/* Sends the head after the response phase; a local body follows through
 * the response-body plugins. */
static void emit_response(pt_txn *t)
{
    t->resp_started = true;
    t->status = t->res.status;
    if (t->local && t->problem) {
        t->local_body = pt_problem_json_traced(t->a, t->res.status, t->problem_detail, t->request_id,
                                               t->trace.trace_hex);
        if (t->res.content_length >= 0) t->res.content_length = (int64_t)t->local_body.n;
    }
    const pt_config *cfg = t->gen->cfg;
    if (cfg->server_header) pt_headers_set(&t->res.headers, t->a, PT_STR_LIT("Server"), pt_str_c(cfg->server_header));
    if (cfg->via && !t->local) pt_headers_add(&t->res.headers, t->a, PT_STR_LIT("Via"), PT_STR_LIT("1.1 portico"));
    const pt_listener_conf *lc = txn_listener(t);
    if (t->conn.tls && lc && lc->tls.hsts_max_age && !pt_headers_get(&t->res.headers, "Strict-Transport-Security")) {
        const char *v = pt_arena_printf(t->a, "max-age=%llu%s%s", (unsigned long long)lc->tls.hsts_max_age,
                                        lc->tls.hsts_subdomains ? "; includeSubDomains" : "",
                                        lc->tls.hsts_preload ? "; preload" : "");
        pt_headers_add(&t->res.headers, t->a, PT_STR_LIT("Strict-Transport-Security"), pt_str_c(v));
    }
    bool tunnel = t->tun && txn_tunnel_prepare_head(t);
    if (t->head_hold && !tunnel && t->res.has_body) t->head_waiting = true; /* txn_body.c sends it */
    else t->ops->send_head(t->stream, &t->res);
    if (tunnel) {
        txn_tunnel_begin(t);
        return;
    }
    if (t->local && t->genr && t->res.has_body) {
        /* pulled from now on: the first proceed comes from the loop */
        t->genr_active = true;
        t->genr_blocked = true;
        txn_generator_kick(t);
        return;
    }
    if (t->local) {
        pt_str b = t->res.has_body ? t->local_body : PT_STR_NULL;
        txn_response_chunk(t, b.p, b.n, true);
        return;
    }
    if (t->uc) t->uops->pause_read(t->uc, false);
}

static void run_response_headers(pt_txn *t)
{
    txn_side *s = &t->side[PT_SIDE_RESPONSE];
    const pt_pipeline *p = t->pipe;
    while (s->idx < p->n) {
        const pt_plugin_instance *pi = p->v[s->idx];
        if (!pi->type->on_response_headers) {
            s->idx++;
            continue;
        }
        s->running = true;
        pt_plugin_result r = pi->type->on_response_headers(t, pi->conf, txn_plugin_state(t, s->idx));
        s->running = false;
        if (r == PT_PLUGIN_PAUSE) {
            txn_side_paused(t, PT_SIDE_RESPONSE, false);
            if (t->uc) t->uops->pause_read(t->uc, true);
            return;
        }
        s->early_resume = false;
        if (r == PT_PLUGIN_RESPOND) response_replaced(t);
        else s->idx++;
    }
    emit_response(t);
}

void txn_start_response_phase(pt_txn *t)
{
    txn_side *s = &t->side[PT_SIDE_RESPONSE];
    if (s->paused) cancel_pause(t, PT_SIDE_RESPONSE);
    s->idx = 0;
    t->head_hold = t->head_waiting = false;
    run_response_headers(t);
}

void txn_respond_problem(pt_txn *t, int status, const char *detail)
{
    if (t->resp_started) {
        txn_abort_response(t);
        return;
    }
    pt_txn_respond_problem(t, status, detail);
    txn_start_response_phase(t);
}

void txn_request_side_responded(pt_txn *t)
{
    t->req_responded = true;
    txn_drop_upstream(t);
    txn_side *rq = &t->side[PT_SIDE_REQUEST];
    if (rq->paused) cancel_pause(t, PT_SIDE_REQUEST);
    if (t->resp_started) {
        txn_abort_response(t);
        return;
    }
    txn_start_response_phase(t);
}

void txn_fail_request(pt_txn *t, int status, const char *detail)
{
    if (!t->resp_started) pt_txn_respond_problem(t, status, detail);
    txn_request_side_responded(t);
}

/* The response in progress never reached the client: forget its side. */
static void forget_response(pt_txn *t)
{
    t->resp_started = false;
    t->head_waiting = false;
    txn_side_release(&t->side[PT_SIDE_RESPONSE], t->pipe->n);
    t->side[PT_SIDE_RESPONSE].trailers = (pt_headers){0};
    t->up_read_paused_by_ds = false;
}

void txn_replace_held_response(pt_txn *t)
{
    PT_ASSERT(t->head_waiting);
    if (!t->local) pt_txn_respond_problem(t, 500, "a response-body plugin answered without a response");
    if (++t->resp_replacements > MAX_RESPONSE_REPLACEMENTS) {
        /* two plugins that keep replacing each other's answer */
        txn_abort_response(t);
        return;
    }
    t->req_responded = true; /* nothing more of the request body goes anywhere */
    txn_drop_upstream(t);
    cancel_pause(t, PT_SIDE_REQUEST);
    forget_response(t);
    txn_start_response_phase(t);
}

void txn_upstream_failed(pt_txn *t, int status, const char *detail)
{
    t->upstream_failed = true;
    t->req_responded = true; /* nothing more of the request body goes anywhere */
    if (t->resp_started && !t->resp_done &&
        (t->head_waiting || (t->ops->retract && t->ops->retract(t->stream)))) {
        /* Nothing of the response reached the client yet (its head is held,
         * or the codec took it back): answer the error instead of cutting
         * a response the client never saw begin. */
        forget_response(t);
    }
    if (t->resp_started) {
        txn_abort_response(t);
        return;
    }
    cancel_pause(t, PT_SIDE_REQUEST);
    pt_txn_respond_problem(t, status, detail);
    txn_start_response_phase(t);
}

void txn_abort_response(pt_txn *t)
{
    t->aborted = true;
    t->ops->abort(t->stream);
    txn_finish(t);
}

/* ------------------------------------------------------ downstream events */

void pt_txn_body_limits(const pt_txn *t, uint64_t *gap_ms, uint64_t *min_rate)
{
    const pt_config *cfg = t->gen->cfg;
    *gap_ms = t->route ? t->route->body_timeout_ms : cfg->timeouts.body_ms;
    *min_rate = t->route ? t->route->min_body_rate : cfg->limits.min_body_rate;
}

void pt_txn_on_request_body(pt_txn *t, const char *data, size_t len, bool last)
{
    if (t->finished) return;
    txn_enter(t);
    t->body_received += len;
    t->bytes_in += len;
    if (t->max_body && t->body_received > t->max_body) {
        t->req_body_done = true; /* the codec closes after the error */
        txn_fail_request(t, 413, "request body exceeds the configured limit");
    } else {
        if (last) t->req_body_done = true;
        txn_request_chunk(t, data, len, last);
    }
    txn_leave(t);
}

void pt_txn_on_request_trailers(pt_txn *t, pt_str trailers)
{
    if (t->finished || t->req_body_done) return;
    t->bytes_in += trailers.n;
    txn_trailers_parse(t, PT_SIDE_REQUEST, trailers);
}

void pt_txn_on_request_error(pt_txn *t, int status, const char *detail)
{
    if (t->finished) return;
    txn_enter(t);
    t->req_body_done = true; /* nothing more will be read; the codec closes */
    txn_fail_request(t, status, detail);
    txn_leave(t);
}

void pt_txn_on_downstream_writable(pt_txn *t)
{
    if (t->finished) return;
    txn_enter(t);
    t->ds_full = false;
    if (txn_splice_active(t, PT_SIDE_RESPONSE)) {
        txn_splice_io(t); /* the spliced response's client socket is writable */
        txn_leave(t);
        return;
    }
    if (t->uc && t->up_read_paused_by_ds) {
        t->up_read_paused_by_ds = false;
        if (!t->side[PT_SIDE_RESPONSE].paused) t->uops->pause_read(t->uc, false);
    }
    txn_generator_kick(t);
    txn_splice_try(t, PT_SIDE_RESPONSE); /* the client took everything queued */
    txn_leave(t);
}

void pt_txn_on_downstream_closed(pt_txn *t)
{
    if (t->finished) return;
    /* The codec frees the arena right after this call: it must not come
     * from inside a call into this txn. */
    PT_ASSERT(t->depth == 0);
    txn_enter(t);
    txn_drop_upstream(t);
    if (!t->resp_done) {
        if (!t->resp_started) t->status = 499;
        else t->aborted = true;
    }
    txn_finish(t);
    txn_leave(t);
}

/* ---------------------------------------------------- asynchronous refs */

pt_txn_ref *pt_txn_ref_new(pt_txn *t)
{
    if (t->finished) { /* taken in on_log or a generator's stop: already over */
        pt_txn_ref *dead = pt_xcalloc(1, sizeof(*dead));
        dead->refs = 1;
        return dead;
    }
    if (!t->ref) {
        t->ref = pt_xcalloc(1, sizeof(*t->ref));
        t->ref->txn = t;
        t->ref->refs = 1; /* the txn's own, dropped when it finishes */
    }
    t->ref->refs++;
    return t->ref;
}

pt_txn *pt_txn_ref_get(const pt_txn_ref *r) { return r ? r->txn : NULL; }

void pt_txn_ref_release(pt_txn_ref *r)
{
    if (r && --r->refs == 0) free(r);
}

/* -------------------------------------------------------------- sub-requests */

pt_http_call *pt_txn_subrequest(pt_txn *t, const pt_http_request *req, pt_http_done_fn done, void *data)
{
    if (t->finished || !req) return NULL;
    pt_http_request r = *req;
    pt_headers h = {0};
    if (req->headers)
        for (uint32_t i = 0; i < req->headers->n; i++)
            if (!pt_str_ieq_lit(req->headers->v[i].name, "X-Request-Id"))
                pt_headers_add(&h, t->a, req->headers->v[i].name, req->headers->v[i].value);
    if (t->request_id.n) pt_headers_add(&h, t->a, PT_STR_LIT("X-Request-Id"), t->request_id);
    txn_trace_subrequest(t, req, &h, &done, &data); /* traceparent, and its span */
    r.headers = &h;
    pt_http_call *c = pt_http_fetch_in(t->w, t->wg, &r, done, data);
    if (c) pt_http_call_link(c, &t->subcalls);
    return c;
}

/* ---------------------------------------------------------------- finishing */

static pt_str protocol_name(const pt_request *req)
{
    if (!req) return PT_STR_NULL;
    if (req->version == 20) return PT_STR_LIT("HTTP/2");
    if (req->version == 10) return PT_STR_LIT("HTTP/1.0");
    return PT_STR_LIT("HTTP/1.1");
}

static void write_access_log(pt_txn *t, const pt_txn_stats *s)
{
    const pt_config *cfg = t->gen->cfg;
    if (!cfg->access_log.enabled) return;
    if (cfg->access_log.sample.on &&
        !pt_accesslog_sample(s->status, s->total_us / 1000, cfg->access_log.sample.ratio,
                             cfg->access_log.sample.always_4xx, cfg->access_log.sample.always_5xx,
                             cfg->access_log.sample.slow_over_ms)) {
        pt_metrics_access_log_sampled_out(t->w);
        return;
    }
    const pt_request *req = t->req;
    const pt_str *ua = req ? pt_headers_get(&req->headers, "User-Agent") : NULL;
    pt_str target = req ? req->target : PT_STR_NULL, query = req ? req->query : PT_STR_NULL;
    if (req && t->redact_query.n && req->has_query) { /* a credential in the query is never logged */
        query = redacted_query(t, req->query);
        char *tp = pt_arena_alloc(t->a, req->path.n + 1 + query.n);
        memcpy(tp, req->path.p, req->path.n);
        tp[req->path.n] = '?';
        memcpy(tp + req->path.n + 1, query.p, query.n);
        target = pt_str_make(tp, req->path.n + 1 + query.n);
    }
    pt_access_record r = {
        .time_us = t->start_us,
        .request_id = t->request_id,
        .trace_id = t->trace.trace_hex,
        .client = t->client_addr,
        .method = req ? req->method_str : PT_STR_NULL,
        .path = target,
        .route = t->route ? pt_str_c(t->route->name) : PT_STR_NULL,
        .consumer = txn_consumer_name(t),
        .upstream = s->target,
        .status = s->status,
        .aborted = s->aborted,
        .bytes_in = s->bytes_in,
        .bytes_out = s->bytes_out,
        .duration_ms = (double)s->total_us / 1000.0,
        .upstream_ms = s->upstream_us >= 0 ? (double)s->upstream_us / 1000.0 : -1.0,
        .attempts = s->attempts,
        .uri_path = req ? req->path : PT_STR_NULL,
        .query = query,
        .host = req ? req->authority : PT_STR_NULL,
        .user_agent = ua ? *ua : PT_STR_NULL,
        .protocol = protocol_name(req),
        .scheme = t->conn.tls ? PT_STR_LIT("https") : PT_STR_LIT("http"),
        .tls_version = t->conn.tls_version,
        .sni = t->conn.sni,
        .stats = s,
        .req_headers = req ? &req->headers : NULL,
        .resp_headers = t->resp_started ? &t->res.headers : NULL,
    };
    pt_accesslog_spec spec = {
        .format = cfg->access_log.format,
        .columns = cfg->access_log.columns,
        .ncolumns = cfg->access_log.ncolumns,
        .header_max = cfg->access_log.header_max,
    };
    char line[PT_ACCESSLOG_LINE_MAX];
    size_t n = pt_accesslog_format_spec(line, sizeof(line), &r, &spec);
    if (n) pt_accesslog_write(line, n);
}

/* Ends the transaction: frees what it holds outside the arena, runs the log
 * phase and writes the access log. The codec is told when the outermost
 * call leaves (txn_leave). */
void txn_finish(pt_txn *t)
{
    if (t->finished) return;
    PT_ASSERT(t->depth > 0);
    t->finished = true;
    pt_timer_stop(t->w->loop, &t->deadline);
    txn_retry_finish(t);
    if (t->tun) txn_tunnel_finish(t);
    stop_generator(t, t->resp_done && !t->aborted);
    for (int i = 0; i < 2; i++) {
        txn_side *s = &t->side[i];
        if (s->paused || s->resume_defer.queued) cancel_pause(t, (pt_side)i);
        if (s->held.owned || s->queued.data || s->slots) txn_side_release(s, t->pipe->n);
    }
    pt_buf_release(&t->req_held);
    txn_splice_abandon(t);
    if (t->uc) {
        void *c = t->uc;
        t->uc = NULL;
        if (t->resp_done && t->req_body_done && t->req_end_sent) t->uops->release(c);
        else t->uops->close(c);
    }
    if (t->ups) pt_lb_end(t->ups->conf->lb, &t->lb, txn_lb_now(t)); /* an attempt still counted */
    while (t->subcalls) pt_http_cancel(t->subcalls); /* each unlinks itself */
    if (t->ref) {
        t->ref->txn = NULL;
        pt_txn_ref_release(t->ref);
        t->ref = NULL;
    }
    const pt_pipeline *p = t->pipe;
    for (size_t i = 0; i < p->n; i++) {
        const pt_plugin_instance *pi = p->v[i];
        if (pi->type->on_log) pi->type->on_log(t, pi->conf, txn_plugin_state(t, i));
    }
    txn_trace_finish(t);
    pt_txn_stats st;
    pt_txn_get_stats(t, &st);
    write_access_log(t, &st);
    /* before txn_leave releases the generation: route and upstream series
     * live as long as its configuration */
    pt_metrics_request_done(t->w, &st);
}
