/* txn.c — the transaction state machine (see txn.h).
 *
 * Order of events for a proxied request:
 *   pt_txn_start: normalise path, route (404/405), body-size check (413),
 *     request-header phase of the pipeline (each plugin may continue,
 *     respond or pause);
 *   connect_upstream: pick a target (smooth WRR), take a pooled connection
 *     or connect; a failed connect tries the next target for idempotent
 *     requests;
 *   on_up_ready: send the head, then ask the codec for the body, which is
 *     streamed with backpressure (codec -> txn -> upstream);
 *   on_up_head: response-header phase, then the head goes to the codec;
 *   on_up_body / on_up_end: streamed with backpressure (upstream -> codec);
 *   finish: log phase, access log, release upstream connection and
 *     generation, tell the codec we are done.
 * A local response (plugin, or an error Portico generates) goes through the
 * response-header phase as well, so response plugins apply to it. */
#include "proxy/txn.h"

#include <stdio.h>

#include "core/accesslog.h"
#include "core/buf.h"
#include "http/problem.h"
#include "router/normalize.h"
#include "server/worker.h"
#include "tls/tls_server.h"
#include "upstream/exchange.h"
#include "upstream/h2_client.h"

enum phase { PH_NONE, PH_REQUEST, PH_REQUEST_BODY, PH_RESPONSE, PH_RESPONSE_BODY };

struct pt_txn {
    pt_worker *w;
    pt_arena *a;
    const pt_downstream_ops *ops;
    void *stream;
    pt_worker_gen *wg;
    pt_generation *gen;
    pt_str client_addr;
    pt_conn_info conn;
    uint64_t start_us;

    pt_request *req;
    pt_str norm_path;
    pt_route_match match;
    const pt_route_conf *route;
    const pt_pipeline *pipe;
    char *states;
    pt_str request_id;

    /* pipeline position */
    enum phase phase;
    size_t plugin_idx;
    bool paused;
    pt_defer resume_defer;
    pt_plugin_result resume_result;

    /* a body chunk held while a body plugin is paused */
    pt_buf held;
    bool held_last;
    pt_str held_trailers;

    /* the response being sent */
    pt_response res;
    bool local;         /* res is a local response with local_body */
    bool problem;       /* local_body is a problem+json built at emit time */
    const char *problem_detail;
    pt_str local_body;
    bool response_plugins_done;

    /* upstream */
    pt_upstream_rt *ups;
    const pt_target_conf *target;
    uint64_t tried;
    int attempts;
    void *uc;                 /* the upstream exchange (h1 connection or h2 stream) */
    const pt_upstream_exchange_ops *uops;
    pt_str upstream_target; /* path[?query] sent upstream */
    uint64_t up_start_us;
    uint64_t up_end_us;

    /* body and lifecycle */
    uint64_t max_body;
    uint64_t body_received;
    bool req_body_done;
    pt_str req_trailers;      /* filtered request trailers, forwarded with send_end */
    bool forwarded_headers_done;
    pt_timer deadline;  /* grpc-timeout */
    bool head_waiting;  /* upstream head arrived during a request-body pause */
    int pending_error;  /* routing/limit error to answer after the request phase */
    const char *pending_detail;
    bool resp_started;
    bool resp_done;
    bool finished;
    bool up_read_paused_by_ds;
    uint64_t bytes_in;
    uint64_t bytes_out;
    int status;
};

static const pt_uconn_cbs up_cbs;
static void run_request_phase(pt_txn *t);
static void run_response_phase(pt_txn *t);
static void connect_upstream(pt_txn *t);
static void finish(pt_txn *t);
static void respond_problem(pt_txn *t, int status, const char *detail);
static void request_body_responded(pt_txn *t);
static void forward_request_chunk(pt_txn *t, const char *data, size_t len, bool last);
static void run_request_body_held(pt_txn *t);
static void run_response_body_held(pt_txn *t);

/* ---------------------------------------------------------------- accessors */

pt_request *pt_txn_request(pt_txn *t) { return t->req; }
pt_response *pt_txn_response(pt_txn *t) { return &t->res; }
pt_arena *pt_txn_arena(pt_txn *t) { return t->a; }
struct pt_loop *pt_txn_loop(pt_txn *t) { return t->w->loop; }
const pt_route_conf *pt_txn_route(pt_txn *t) { return t->route; }
pt_str pt_txn_request_id(pt_txn *t) { return t->request_id; }
pt_str pt_txn_client_addr(pt_txn *t) { return t->client_addr; }
pt_str pt_txn_client_cert_subject(pt_txn *t) { return t->conn.client_cert_subject; }
pt_str pt_txn_client_cert_sans(pt_txn *t) { return t->conn.client_cert_sans; }

/* The listener the request arrived on (NULL if the generation changed its list). */
static const pt_listener_conf *txn_listener(const pt_txn *t)
{
    return t->conn.listener < t->gen->cfg->nlisteners ? &t->gen->cfg->listeners[t->conn.listener] : NULL;
}
bool pt_txn_response_started(const pt_txn *t) { return t->resp_started; }

void pt_txn_set_request_id(pt_txn *t, pt_str id) { t->request_id = pt_arena_str(t->a, id); }

pt_str pt_txn_param(pt_txn *t, const char *name)
{
    pt_str n = pt_str_c(name);
    for (int i = 0; i < t->match.nparams; i++)
        if (pt_str_eq(t->match.params[i].name, n)) return t->match.params[i].value;
    return PT_STR_NULL;
}

void pt_txn_respond(pt_txn *t, int status, pt_str content_type, pt_str body)
{
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

void pt_txn_respond_header(pt_txn *t, pt_str name, pt_str value)
{
    pt_headers_add(&t->res.headers, t->a, pt_arena_str(t->a, name), pt_arena_str(t->a, value));
}

/* gRPC status code for an HTTP status Portico would answer (the mapping of
 * gRPC's "HTTP to gRPC status code mapping" document, plus Portico's own
 * cases: 404 no route is UNIMPLEMENTED, 504 is DEADLINE_EXCEEDED). */
static int grpc_status_for(int http)
{
    switch (http) {
    case 400: return 13; /* INTERNAL (malformed request) */
    case 401: return 16; /* UNAUTHENTICATED */
    case 403: return 7;  /* PERMISSION_DENIED */
    case 404: return 12; /* UNIMPLEMENTED */
    case 413: case 429: return 8; /* RESOURCE_EXHAUSTED */
    case 502: case 503: return 14; /* UNAVAILABLE */
    case 504: case 408: return 4;  /* DEADLINE_EXCEEDED */
    default: return 2;   /* UNKNOWN */
    }
}

/* A gRPC client (HTTP/2, content-type application/grpc...) understands
 * errors only as grpc-status: answer "Trailers-Only" (HTTP 200, no body,
 * grpc-status and grpc-message in the head). */
static bool respond_grpc_error(pt_txn *t, int status, const char *detail)
{
    const pt_str *ct = t->req ? pt_headers_get(&t->req->headers, "content-type") : NULL;
    if (!t->req || t->req->version != 20 || !ct || ct->n < 16 || memcmp(ct->p, "application/grpc", 16) != 0)
        return false;
    pt_txn_respond(t, 200, PT_STR_LIT("application/grpc"), PT_STR_NULL);
    t->res.has_body = false;
    t->res.content_length = -1;
    char code[8];
    snprintf(code, sizeof(code), "%d", grpc_status_for(status));
    pt_txn_respond_header(t, PT_STR_LIT("grpc-status"), pt_str_c(code));
    /* grpc-message is percent-encoded (printable ASCII except '%' passes) */
    const char *d = detail ? detail : pt_status_reason(status);
    size_t n = strlen(d);
    char *enc = pt_arena_alloc(t->a, n * 3 + 1), *o = enc;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)d[i];
        if (ch >= 0x20 && ch <= 0x7e && ch != '%') *o++ = (char)ch;
        else o += sprintf(o, "%%%02X", ch);
    }
    pt_txn_respond_header(t, PT_STR_LIT("grpc-message"), pt_str_make(enc, (size_t)(o - enc)));
    return true;
}

void pt_txn_respond_problem(pt_txn *t, int status, const char *detail)
{
    if (respond_grpc_error(t, status, detail)) return;
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
    t->status = 0;
    return t;
}

static void alloc_states(pt_txn *t)
{
    t->states = t->pipe->state_size ? pt_arena_calloc(t->a, t->pipe->state_size) : NULL;
}

static inline void *plugin_state(pt_txn *t, size_t i)
{
    return t->pipe->v[i]->type->state_size ? t->states + t->pipe->state_off[i] : NULL;
}

void pt_txn_start_error(pt_txn *t, pt_request *req, int status, const char *detail, uint64_t bytes_in)
{
    t->req = req;
    t->bytes_in = bytes_in;
    t->req_body_done = true; /* the codec closes the connection after an error */
    alloc_states(t);
    respond_problem(t, status, detail);
}

/* The address inside one Forwarded element (RFC 7239): the value of its
 * for= parameter, unquoted, without a port or IPv6 brackets. Empty when the
 * element has none. */
static pt_str forwarded_for(pt_str el)
{
    size_t i = 0;
    while (i < el.n) {
        while (i < el.n && (el.p[i] == ' ' || el.p[i] == '\t' || el.p[i] == ';')) i++;
        size_t k = i;
        while (i < el.n && el.p[i] != '=' && el.p[i] != ';') i++;
        pt_str key = pt_str_make(el.p + k, i - k);
        if (i >= el.n || el.p[i] != '=') continue;
        i++;
        size_t vs = i, ve;
        if (i < el.n && el.p[i] == '"') {
            vs = ++i;
            while (i < el.n && el.p[i] != '"') i++;
            ve = i;
            if (i < el.n) i++;
        } else {
            while (i < el.n && el.p[i] != ';') i++;
            ve = i;
        }
        while (ve > vs && (el.p[ve - 1] == ' ' || el.p[ve - 1] == '\t')) ve--;
        if (!pt_str_ieq_lit(key, "for")) continue;
        pt_str v = pt_str_make(el.p + vs, ve - vs);
        if (v.n && v.p[0] == '[') { /* "[2001:db8::1]:4711" -> "2001:db8::1" */
            const char *rb = memchr(v.p, ']', v.n);
            if (!rb) return PT_STR_NULL;
            v = pt_str_make(v.p + 1, (size_t)(rb - v.p) - 1);
        } else {
            const char *colon = memchr(v.p, ':', v.n);
            if (colon && !memchr(colon + 1, ':', v.n - (size_t)(colon + 1 - v.p))) v.n = (size_t)(colon - v.p);
        }
        return v;
    }
    return PT_STR_NULL;
}

/* The client address: the peer, unless the peer is a trusted proxy; then
 * the configured header (X-Forwarded-For, or Forwarded's for= values) is
 * walked from the right, skipping trusted hops, and the first untrusted
 * address is the client (all trusted: the leftmost). An entry that is not
 * an IP address (garbage, "unknown", an obfuscated name) stops the walk at
 * the last address known to be good. */
static void resolve_client_addr(pt_txn *t)
{
    const pt_config *cfg = t->gen->cfg;
    if (!cfg->has_trusted_proxies) return;
    pt_ip_addr a;
    if (!pt_ip_addr_parse(t->conn.client_addr, &a) || !pt_ip_set_contains(&cfg->trusted_proxies, &a)) return;
    const char *hname = cfg->client_ip_forwarded ? "Forwarded" : "X-Forwarded-For";
    pt_str client = t->conn.client_addr;
    const pt_headers *h = &t->req->headers;
    /* fields in reverse order, entries right to left */
    for (uint32_t i = h->n; i-- > 0;) {
        if (!pt_str_ieq_lit(h->v[i].name, hname)) continue;
        pt_str v = h->v[i].value;
        size_t end = v.n;
        for (;;) {
            size_t start = end;
            while (start > 0 && v.p[start - 1] != ',') start--;
            size_t b = start, e = end;
            while (b < e && (v.p[b] == ' ' || v.p[b] == '\t')) b++;
            while (e > b && (v.p[e - 1] == ' ' || v.p[e - 1] == '\t')) e--;
            pt_str entry = pt_str_make(v.p + b, e - b);
            if (entry.n) {
                if (cfg->client_ip_forwarded) entry = forwarded_for(entry);
                if (!pt_ip_addr_parse(entry, &a)) goto done;
                client = entry;
                if (!pt_ip_set_contains(&cfg->trusted_proxies, &a)) goto done;
            }
            if (start == 0) break;
            end = start - 1;
        }
    }
done:
    t->client_addr = pt_arena_str(t->a, client);
}

void pt_txn_start(pt_txn *t, pt_request *req, uint64_t head_bytes)
{
    t->req = req;
    t->bytes_in = head_bytes;
    /* "Content-Length: 0" is a body that is already complete. */
    t->req_body_done = !req->has_body || req->content_length == 0;
    resolve_client_addr(t);

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
        run_response_phase(t);
        return;
    }

    /* The client_auth policy is chosen per certificate by SNI: a request for
     * a host whose certificate has another policy than the one this
     * connection was authenticated under is misdirected (RFC 9110 §15.5.20),
     * else SNI open.example + Host secure.example would skip client auth. */
    struct pt_tls_server *tls = t->conn.tls && lc ? t->gen->tls[t->conn.listener] : NULL;
    if (tls && !pt_tls_host_allowed(tls, t->conn.tls_policy, req->host)) {
        alloc_states(t);
        respond_problem(t, 421, "this connection cannot serve the requested host; connect with its name as SNI");
        return;
    }

    /* Normalise once; the upstream receives exactly what was matched. */
    char *np = pt_arena_alloc(t->a, req->path.n + 1);
    const char *detail = NULL;
    ssize_t nl = pt_path_normalize(req->path.p, req->path.n, np, &detail);
    if (nl < 0) {
        alloc_states(t);
        respond_problem(t, 400, detail ? detail : "invalid path");
        return;
    }
    t->norm_path = pt_str_make(np, (size_t)nl);

    pt_route_input in = {
        .host = req->host, .path = t->norm_path, .method = req->method, .headers = &req->headers, .query = req->query,
    };
    pt_router_match(t->gen->router, &in, t->a, &t->match);
    if (t->match.status == 0) {
        t->route = t->match.route;
        t->pipe = &t->gen->route_pipes[t->route->index];
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
    t->phase = PH_REQUEST;
    t->plugin_idx = 0;
    run_request_phase(t);
}

/* ------------------------------------------------------------------ pipeline */

static void resume_cb(pt_loop *loop, pt_defer *d)
{
    pt_txn *t = d->data;
    t->paused = false;
    if (t->finished) return;
    if (t->phase == PH_REQUEST) {
        if (t->resume_result == PT_PLUGIN_RESPOND) {
            run_response_phase(t);
            return;
        }
        t->plugin_idx++;
        run_request_phase(t);
    } else if (t->phase == PH_RESPONSE) {
        t->plugin_idx++;
        run_response_phase(t);
    } else if (t->phase == PH_REQUEST_BODY) {
        if (t->resume_result == PT_PLUGIN_RESPOND) {
            request_body_responded(t);
            return;
        }
        t->plugin_idx++;
        run_request_body_held(t);
    } else if (t->phase == PH_RESPONSE_BODY) {
        if (t->resume_result == PT_PLUGIN_RESPOND) {
            respond_problem(t, 502, NULL); /* the head is out: abort */
            return;
        }
        t->plugin_idx++;
        run_response_body_held(t);
    }
}

void pt_txn_resume(pt_txn *t, pt_plugin_result r)
{
    if (!t->paused || t->finished) return; /* the request was aborted meanwhile */
    t->resume_result = r;
    pt_defer_queue(t->w->loop, &t->resume_defer, resume_cb, t);
}

/* gRPC deadline (grpc-timeout: 1-8 digits and a unit H M S m u n). Returns
 * milliseconds (rounded up, at least 1), or 0 when absent or malformed. */
static uint64_t grpc_timeout_ms(const pt_request *req)
{
    const pt_str *v = pt_headers_get(&req->headers, "grpc-timeout");
    if (!v || v->n < 2 || v->n > 9) return 0;
    uint64_t n = 0;
    for (size_t i = 0; i + 1 < v->n; i++) {
        if (v->p[i] < '0' || v->p[i] > '9') return 0;
        n = n * 10 + (uint64_t)(v->p[i] - '0');
    }
    uint64_t ms;
    switch (v->p[v->n - 1]) {
    case 'H': ms = n * 3600000; break;
    case 'M': ms = n * 60000; break;
    case 'S': ms = n * 1000; break;
    case 'm': ms = n; break;
    case 'u': ms = (n + 999) / 1000; break;
    case 'n': ms = (n + 999999) / 1000000; break;
    default: return 0;
    }
    return ms ? ms : 1;
}

static void grpc_deadline_cb(pt_loop *loop, pt_timer *tm)
{
    pt_txn *t = tm->data;
    if (t->finished) return;
    /* The client's deadline passed: stop the upstream exchange and answer
     * DEADLINE_EXCEEDED (504 maps to it), or abort a started response. */
    if (t->uc) {
        t->uops->close(t->uc);
        t->uc = NULL;
    }
    if (t->paused) {
        pt_defer_cancel(t->w->loop, &t->resume_defer);
        t->paused = false;
    }
    t->req_body_done = true;
    respond_problem(t, 504, "the gRPC deadline (grpc-timeout) passed");
}

/* Honours grpc-timeout on requests that carry it: the whole exchange must
 * finish by then (a later upstream read timeout does not extend it). */
static void arm_grpc_deadline(pt_txn *t)
{
    uint64_t ms = grpc_timeout_ms(t->req);
    if (ms) pt_timer_start(t->w->loop, &t->deadline, ms, grpc_deadline_cb, t);
}

static void run_request_phase(pt_txn *t)
{
    const pt_pipeline *p = t->pipe;
    for (; t->plugin_idx < p->n; t->plugin_idx++) {
        const pt_plugin_instance *pi = p->v[t->plugin_idx];
        if (!pi->type->on_request_headers) continue;
        pt_plugin_result r = pi->type->on_request_headers(t, pi->conf, plugin_state(t, t->plugin_idx));
        if (r == PT_PLUGIN_PAUSE) {
            t->paused = true;
            return;
        }
        if (r == PT_PLUGIN_RESPOND) {
            PT_ASSERT(t->local);
            run_response_phase(t);
            return;
        }
    }
    t->phase = PH_NONE;
    if (t->pending_error) {
        respond_problem(t, t->pending_error, t->pending_detail);
        return;
    }
    if (!t->route->upstream) {
        respond_problem(t, 500, "the route has no upstream and no plugin answered");
        return;
    }
    t->ups = &t->wg->upstreams[t->route->upstream->index];
    pt_str path = pt_route_upstream_path(t->route, &t->match, t->norm_path, t->a);
    if (t->req->has_query) {
        char *s = pt_arena_alloc(t->a, path.n + 1 + t->req->query.n + 1);
        memcpy(s, path.p, path.n);
        s[path.n] = '?';
        memcpy(s + path.n + 1, t->req->query.p, t->req->query.n);
        s[path.n + 1 + t->req->query.n] = '\0';
        t->upstream_target = pt_str_make(s, path.n + 1 + t->req->query.n);
    } else {
        t->upstream_target = path;
    }
    arm_grpc_deadline(t);
    connect_upstream(t);
}

/* Sends the head (and body for local responses) after the response phase. */
static void emit_response(pt_txn *t)
{
    t->resp_started = true;
    t->status = t->res.status;
    if (t->local && t->problem) {
        t->local_body = pt_problem_json(t->a, t->res.status, t->problem_detail, t->request_id);
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
    t->ops->send_head(t->stream, &t->res);
    if (t->local) {
        if (t->res.has_body && t->local_body.n) t->ops->send_body(t->stream, t->local_body.p, t->local_body.n);
        t->bytes_out += t->local_body.n;
        t->resp_done = true;
        t->ops->send_end(t->stream, PT_STR_NULL);
        finish(t);
        return;
    }
    if (t->uc) t->uops->pause_read(t->uc, false);
}

static void run_response_phase(pt_txn *t)
{
    if (t->phase != PH_RESPONSE) {
        t->phase = PH_RESPONSE;
        t->plugin_idx = 0;
    }
    const pt_pipeline *p = t->pipe;
    for (; t->plugin_idx < p->n; t->plugin_idx++) {
        const pt_plugin_instance *pi = p->v[t->plugin_idx];
        if (!pi->type->on_response_headers) continue;
        pt_plugin_result r = pi->type->on_response_headers(t, pi->conf, plugin_state(t, t->plugin_idx));
        if (r == PT_PLUGIN_PAUSE) {
            t->paused = true;
            if (t->uc) t->uops->pause_read(t->uc, true);
            return;
        }
        if (r == PT_PLUGIN_RESPOND && t->uc) {
            /* A response plugin replaced the upstream response. */
            t->uops->close(t->uc);
            t->uc = NULL;
        }
    }
    t->phase = PH_NONE;
    t->response_plugins_done = true;
    emit_response(t);
}

static void respond_problem(pt_txn *t, int status, const char *detail)
{
    if (t->resp_started) {
        t->ops->abort(t->stream);
        finish(t);
        return;
    }
    pt_txn_respond_problem(t, status, detail);
    t->phase = PH_NONE;
    run_response_phase(t);
}

/* ------------------------------------------------------------------ upstream */

static void connect_upstream(pt_txn *t)
{
    pt_upstream_rt *u = t->ups;
    for (;;) {
        int idx = pt_upstream_pick(u, t->tried);
        if (idx < 0) {
            respond_problem(t, 502, "no upstream target could be reached");
            return;
        }
        if (idx < 64) t->tried |= 1ull << idx;
        t->attempts++;
        t->target = &u->conf->targets[idx];
        if (!t->up_start_us) t->up_start_us = pt_loop_wall_us(t->w->loop);
        void *c;
        bool fresh = false;
        SSL_CTX *tls_ctx = t->gen->up_tls[u->conf->index];
        if (u->conf->protocol != PT_UPROTO_HTTP1) {
            c = pt_h2up_stream_open(t->w, t->target, u->pools[idx], tls_ctx, u->conf, &fresh);
            t->uops = &pt_h2_exchange_ops;
        } else {
            c = pt_pool_take(u->pools[idx]);
            if (!c) {
                c = pt_uconn_connect(t->w, t->target, u->pools[idx], tls_ctx, &u->conf->tls);
                fresh = true;
            }
            t->uops = &pt_h1_exchange_ops;
        }
        if (!c) {
            if (pt_method_idempotent(t->req->method) && t->attempts < (int)u->conf->ntargets) continue;
            respond_problem(t, 502, "upstream connection failed");
            return;
        }
        t->uc = c;
        t->uops->attach(c, &up_cbs, t, t->a, u->conf, &t->gen->h1_limits, u->conf->connect_timeout_ms);
        if (!fresh) up_cbs.on_ready(t);
        return;
    }
}

static void send_request_head(pt_txn *t)
{
    pt_request *r = t->req;
    const pt_upstream_conf *uc = t->ups->conf;
    pt_headers *h = &r->headers;
    if (t->forwarded_headers_done) goto send; /* a retry: headers are ready */
    t->forwarded_headers_done = true;

    /* X-Forwarded-*: append the client to XFF; set Proto and Host. */
    /* XFF: the chain as received plus the peer that connected to us. */
    /* Several XFF fields form one list (RFC 9110 §5.3): join them in order. */
    pt_str peer = t->conn.client_addr;
    size_t total = peer.n;
    for (uint32_t i = 0; i < h->n; i++)
        if (pt_str_ieq_lit(h->v[i].name, "X-Forwarded-For") && h->v[i].value.n) total += h->v[i].value.n + 2;
    char *s = pt_arena_alloc(t->a, total + 1);
    size_t n = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (!pt_str_ieq_lit(h->v[i].name, "X-Forwarded-For") || !h->v[i].value.n) continue;
        memcpy(s + n, h->v[i].value.p, h->v[i].value.n);
        n += h->v[i].value.n;
        memcpy(s + n, ", ", 2);
        n += 2;
    }
    memcpy(s + n, peer.p, peer.n);
    n += peer.n;
    pt_str xffv = pt_str_make(s, n);
    pt_headers_set(h, t->a, PT_STR_LIT("X-Forwarded-For"), xffv);
    /* X-Real-IP: the client address Portico decided on (trusted_proxies);
     * a client-sent copy is always replaced. */
    pt_headers_set(h, t->a, PT_STR_LIT("X-Real-IP"), t->client_addr);
    pt_headers_set(h, t->a, PT_STR_LIT("X-Forwarded-Proto"), r->scheme.n ? r->scheme : PT_STR_LIT("http"));
    if (r->authority.n) pt_headers_set(h, t->a, PT_STR_LIT("X-Forwarded-Host"), r->authority);
    pt_headers_remove(h, "Expect"); /* the codec answers 100-continue itself */
    if (t->gen->cfg->via) pt_headers_add(h, t->a, PT_STR_LIT("Via"), PT_STR_LIT("1.1 portico"));
    /* mTLS identity: never trust a client-supplied copy of the header. */
    const pt_listener_conf *lc = txn_listener(t);
    if (lc && lc->tls.client_forward_header) {
        pt_headers_remove(h, lc->tls.client_forward_header);
        if (t->conn.client_cert_subject.n)
            pt_headers_add(h, t->a, pt_str_c(lc->tls.client_forward_header), t->conn.client_cert_subject);
    }
    if (lc && lc->tls.client_forward_san_header) {
        pt_headers_remove(h, lc->tls.client_forward_san_header);
        if (t->conn.client_cert_sans.n)
            pt_headers_add(h, t->a, pt_str_c(lc->tls.client_forward_san_header), t->conn.client_cert_sans);
    }

send:;
    pt_str host = r->authority;
    if (!uc->preserve_host || !host.n) {
        const pt_target_conf *tc = t->target;
        host = pt_str_c(pt_arena_printf(t->a, "%s:%u", tc->host, (unsigned)tc->port));
    }
    t->uops->send_head(t->uc, r, t->upstream_target, host, h, r->has_body, r->content_length);
}

static void on_up_ready(void *owner)
{
    pt_txn *t = owner;
    send_request_head(t);
    if (t->req->has_body) {
        if (t->req_body_done) t->uops->send_end(t->uc, t->req_trailers);
        else t->ops->want_body(t->stream, true);
    }
}

static void on_up_writable(void *owner)
{
    pt_txn *t = owner;
    if (!t->req_body_done && !t->resp_done) t->ops->want_body(t->stream, true);
}

static void on_up_informational(void *owner, pt_response *res)
{
    pt_txn *t = owner;
    if (!t->resp_started && t->ops->send_informational) t->ops->send_informational(t->stream, res);
}

static void on_up_head(void *owner, pt_response *res)
{
    pt_txn *t = owner;
    t->res = *res;
    t->local = false;
    t->uops->pause_read(t->uc, true); /* until the response phase has run */
    if (t->paused && t->phase == PH_REQUEST_BODY) {
        /* An early answer while a request-body plugin is paused: one pause at
         * a time, so the response phase waits for that plugin. */
        t->head_waiting = true;
        return;
    }
    run_response_phase(t);
}

/* ---------------------------------------------------------- body phases
 * Body callbacks run from plugin_idx over one chunk. If one pauses, the
 * chunk is copied into t->held, reading on that side stops, and the rest of
 * the plugins run on the copy after pt_txn_resume(). */

/* Runs body callbacks of `response` side from t->plugin_idx. Returns
 * CONTINUE when every plugin let the chunk through, else PAUSE/RESPOND
 * (plugin_idx then names the plugin). */
static pt_plugin_result run_body_plugins(pt_txn *t, bool response, const char *data, size_t len, bool last)
{
    const pt_pipeline *p = t->pipe;
    pt_body_chunk chunk = {data, len, last};
    for (; t->plugin_idx < p->n; t->plugin_idx++) {
        const pt_plugin_instance *pi = p->v[t->plugin_idx];
        pt_plugin_result r = PT_PLUGIN_CONTINUE;
        if (response && pi->type->on_response_body)
            r = pi->type->on_response_body(t, pi->conf, plugin_state(t, t->plugin_idx), &chunk);
        else if (!response && pi->type->on_request_body)
            r = pi->type->on_request_body(t, pi->conf, plugin_state(t, t->plugin_idx), &chunk);
        if (r != PT_PLUGIN_CONTINUE) return r;
    }
    return PT_PLUGIN_CONTINUE;
}

static void hold_chunk(pt_txn *t, enum phase ph, const char *data, size_t len, bool last)
{
    t->held.len = 0;
    pt_buf_append(&t->held, data, len);
    t->held_last = last;
    t->phase = ph;
    t->paused = true;
}

/* Sends a response chunk that passed the plugins; `last` ends the response. */
static void forward_response_chunk(pt_txn *t, const char *data, size_t len, bool last, pt_str trailers)
{
    if (len) {
        t->bytes_out += len;
        if (!t->ops->send_body(t->stream, data, len) && t->uc) {
            t->up_read_paused_by_ds = true;
            t->uops->pause_read(t->uc, true);
        }
    }
    if (last) {
        t->up_end_us = pt_loop_wall_us(t->w->loop);
        t->resp_done = true;
        t->ops->send_end(t->stream, trailers);
        finish(t);
    }
}

static void response_chunk(pt_txn *t, const char *data, size_t len, bool last, pt_str trailers)
{
    t->plugin_idx = 0;
    pt_plugin_result r = t->pipe->n ? run_body_plugins(t, true, data, len, last) : PT_PLUGIN_CONTINUE;
    if (r == PT_PLUGIN_PAUSE) {
        hold_chunk(t, PH_RESPONSE_BODY, data, len, last);
        t->held_trailers = pt_arena_str(t->a, trailers);
        if (t->uc) t->uops->pause_read(t->uc, true);
        return;
    }
    if (r == PT_PLUGIN_RESPOND) { /* too late to answer: the head is out */
        respond_problem(t, 502, NULL);
        return;
    }
    forward_response_chunk(t, data, len, last, trailers);
}

static void run_response_body_held(pt_txn *t)
{
    pt_plugin_result r = run_body_plugins(t, true, pt_buf_head(&t->held), t->held.len, t->held_last);
    if (r == PT_PLUGIN_PAUSE) {
        t->paused = true;
        return;
    }
    if (r == PT_PLUGIN_RESPOND) {
        respond_problem(t, 502, NULL);
        return;
    }
    t->phase = PH_NONE;
    forward_response_chunk(t, pt_buf_head(&t->held), t->held.len, t->held_last, t->held_trailers);
    if (t->finished) return;
    pt_buf_release(&t->held);
    if (t->uc && !t->up_read_paused_by_ds) t->uops->pause_read(t->uc, false);
}

static void on_up_body(void *owner, const char *data, size_t len) { response_chunk(owner, data, len, false, PT_STR_NULL); }

/* Response trailers get the same RFC 9110 §6.5.1 filter as request
 * trailers: framing, routing, authentication and cookie fields never reach
 * the client from a trailer section. */
static void on_up_end(void *owner, pt_str trailers)
{
    pt_txn *t = owner;
    response_chunk(t, NULL, 0, true, trailers.n ? pt_trailers_filter(t->a, trailers) : PT_STR_NULL);
}

static void on_up_error(void *owner, pt_uerr err, bool nothing_received)
{
    pt_txn *t = owner;
    void *c = t->uc;
    bool reused = c && t->uops->reused(c);
    t->uc = NULL;
    if (c) t->uops->close(c);
    t->up_end_us = pt_loop_wall_us(t->w->loop);
    if (t->resp_started) {
        t->ops->abort(t->stream);
        finish(t);
        return;
    }
    /* A connection that failed before any response byte may be retried when
     * nothing of the request body has been consumed yet: a stale pooled
     * connection always, a failed connect for idempotent requests. */
    bool body_untouched = !t->req->has_body || t->body_received == 0;
    if (nothing_received && body_untouched && t->attempts < 8) {
        if (reused && (err == PT_UERR_CLOSED)) {
            if (t->req->has_body && !t->req_body_done) t->ops->want_body(t->stream, false);
            t->tried = 0;
            connect_upstream(t);
            return;
        }
        if ((err == PT_UERR_CONNECT || err == PT_UERR_CONNECT_TIMEOUT) && pt_method_idempotent(t->req->method) &&
            t->attempts < (int)t->ups->conf->ntargets) {
            connect_upstream(t);
            return;
        }
    }
    switch (err) {
    case PT_UERR_CONNECT_TIMEOUT: respond_problem(t, 504, "timed out connecting to the upstream"); break;
    case PT_UERR_READ_TIMEOUT: respond_problem(t, 504, "the upstream did not answer in time"); break;
    case PT_UERR_WRITE_TIMEOUT: respond_problem(t, 504, "timed out sending the request to the upstream"); break;
    case PT_UERR_CONNECT: respond_problem(t, 502, "upstream connection failed"); break;
    case PT_UERR_PROTOCOL: respond_problem(t, 502, "the upstream sent an invalid response"); break;
    case PT_UERR_TLS: respond_problem(t, 502, "TLS handshake with the upstream failed"); break;
    default: respond_problem(t, 502, "the upstream closed the connection"); break;
    }
}

static const pt_uconn_cbs up_cbs = {
    .on_ready = on_up_ready,
    .on_writable = on_up_writable,
    .on_informational = on_up_informational,
    .on_head = on_up_head,
    .on_body = on_up_body,
    .on_end = on_up_end,
    .on_error = on_up_error,
};

/* ------------------------------------------------------ downstream events */

void pt_txn_on_request_body(pt_txn *t, const char *data, size_t len, bool last)
{
    if (t->finished) return;
    t->body_received += len;
    t->bytes_in += len;
    if (t->max_body && t->body_received > t->max_body) {
        pt_txn_on_request_error(t, 413, "request body exceeds the configured limit");
        return;
    }
    if (last) t->req_body_done = true;
    t->plugin_idx = 0;
    pt_plugin_result r = t->pipe->n ? run_body_plugins(t, false, data, len, last) : PT_PLUGIN_CONTINUE;
    if (r == PT_PLUGIN_PAUSE) {
        hold_chunk(t, PH_REQUEST_BODY, data, len, last);
        t->ops->want_body(t->stream, false);
        return;
    }
    if (r == PT_PLUGIN_RESPOND) {
        request_body_responded(t);
        return;
    }
    forward_request_chunk(t, data, len, last);
}

void pt_txn_body_limits(const pt_txn *t, uint64_t *gap_ms, uint64_t *min_rate)
{
    const pt_config *cfg = t->gen->cfg;
    *gap_ms = t->route ? t->route->body_timeout_ms : cfg->timeouts.body_ms;
    *min_rate = t->route ? t->route->min_body_rate : cfg->limits.min_body_rate;
}

void pt_txn_on_request_trailers(pt_txn *t, pt_str trailers)
{
    if (t->finished || t->req_body_done) return;
    t->bytes_in += trailers.n;
    t->req_trailers = pt_trailers_filter(t->a, trailers);
}

/* Sends a request chunk that passed the plugins to the upstream. */
static void forward_request_chunk(pt_txn *t, const char *data, size_t len, bool last)
{
    if (!t->uc) return;
    bool more = len ? t->uops->send_body(t->uc, data, len) : true;
    if (last) {
        t->uops->send_end(t->uc, t->req_trailers);
        t->ops->want_body(t->stream, false);
    } else if (!more) {
        t->ops->want_body(t->stream, false);
    }
}

static void run_request_body_held(pt_txn *t)
{
    pt_plugin_result r = run_body_plugins(t, false, pt_buf_head(&t->held), t->held.len, t->held_last);
    if (r == PT_PLUGIN_PAUSE) {
        t->paused = true;
        return;
    }
    if (r == PT_PLUGIN_RESPOND) {
        request_body_responded(t);
        return;
    }
    t->phase = PH_NONE;
    bool last = t->held_last;
    forward_request_chunk(t, pt_buf_head(&t->held), t->held.len, last);
    pt_buf_release(&t->held);
    if (t->head_waiting) {
        t->head_waiting = false;
        run_response_phase(t);
        return;
    }
    if (!last && !t->finished && t->uc && !t->resp_done) t->ops->want_body(t->stream, true);
}

/* A request-body plugin answered: drop the upstream exchange (it saw part
 * of the body) and send the plugin's response. */
static void request_body_responded(pt_txn *t)
{
    if (t->uc) {
        t->uops->close(t->uc);
        t->uc = NULL;
    }
    t->phase = PH_NONE;
    pt_buf_release(&t->held);
    if (t->resp_started) {
        t->ops->abort(t->stream);
        finish(t);
        return;
    }
    run_response_phase(t);
}

void pt_txn_on_request_error(pt_txn *t, int status, const char *detail)
{
    if (t->finished) return;
    if (t->uc) {
        t->uops->close(t->uc);
        t->uc = NULL;
    }
    t->req_body_done = true; /* nothing more will be read; the codec closes */
    if (t->paused) {
        pt_defer_cancel(t->w->loop, &t->resume_defer);
        t->paused = false;
    }
    respond_problem(t, status, detail);
}

void pt_txn_on_downstream_writable(pt_txn *t)
{
    if (t->finished) return;
    if (t->uc && t->up_read_paused_by_ds) {
        t->up_read_paused_by_ds = false;
        t->uops->pause_read(t->uc, false);
    }
}

void pt_txn_on_downstream_closed(pt_txn *t)
{
    if (t->finished) return;
    if (t->uc) {
        t->uops->close(t->uc);
        t->uc = NULL;
    }
    pt_defer_cancel(t->w->loop, &t->resume_defer);
    t->paused = false;
    if (!t->resp_done) t->status = t->resp_started ? t->status : 499;
    finish(t);
}

/* ---------------------------------------------------------------- finishing */

static void write_access_log(pt_txn *t)
{
    const pt_config *cfg = t->gen->cfg;
    if (!cfg->access_log.enabled) return;
    uint64_t now = pt_loop_wall_us(t->w->loop);
    pt_access_record r = {
        .time_us = t->start_us,
        .request_id = t->request_id,
        .client = t->client_addr,
        .method = t->req ? t->req->method_str : PT_STR_NULL,
        .path = t->req ? t->req->target : PT_STR_NULL,
        .route = t->route ? pt_str_c(t->route->name) : PT_STR_NULL,
        .upstream = t->target ? pt_str_c(t->target->addr.text) : PT_STR_NULL,
        .status = t->status,
        .bytes_in = t->bytes_in,
        .bytes_out = t->ops->bytes_sent ? t->ops->bytes_sent(t->stream) : t->bytes_out,
        .duration_ms = (double)(now - t->start_us) / 1000.0,
        .upstream_ms = t->up_start_us ? (double)((t->up_end_us ? t->up_end_us : now) - t->up_start_us) / 1000.0 : -1.0,
    };
    char line[PT_ACCESSLOG_LINE_MAX];
    size_t n = pt_accesslog_format(line, sizeof(line), &r);
    if (n) pt_accesslog_write(line, n);
}

static void finish(pt_txn *t)
{
    if (t->finished) return;
    t->finished = true;
    pt_timer_stop(t->w->loop, &t->deadline);
    pt_buf_release(&t->held);
    if (t->uc) {
        void *c = t->uc;
        t->uc = NULL;
        if (t->resp_done && t->req_body_done) t->uops->release(c);
        else t->uops->close(c);
    }
    const pt_pipeline *p = t->pipe;
    for (size_t i = 0; i < p->n; i++) {
        const pt_plugin_instance *pi = p->v[i];
        if (pi->type->on_log) pi->type->on_log(t, pi->conf, plugin_state(t, i));
    }
    write_access_log(t);
    pt_worker_gen_release(t->w, t->wg);
    t->ops->finished(t->stream);
}
