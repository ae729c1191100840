/* txn_trace.c — the transaction's part of distributed tracing
 * (docs/observability.md "Tracing"): the incoming W3C trace context, the
 * sampling decision, traceparent on every upstream attempt and
 * sub-request, and the spans: the server span of the request, one client
 * span per upstream attempt (retries included) and per sub-request. The
 * encoding and the exporter are obs/trace*.c. An unsampled request only
 * draws ids and writes traceparent; no span is built. */
#include <stdio.h>

#include "obs/trace.h"
#include "proxy/txn_int.h"

static uint64_t now_ns(pt_txn *t) { return pt_loop_wall_us(t->w->loop) * 1000ull; }

/* The incoming traceparent (exactly one field line) when it may be used. */
static bool incoming_parent(pt_txn *t, pt_trace_parent *tp)
{
    const pt_tracing_conf *c = &t->gen->cfg->tracing;
    if (c->trust_incoming == PT_TRACE_TRUST_NONE || !t->req) return false;
    if (c->trust_incoming == PT_TRACE_TRUST_PROXIES) {
        const pt_config *cfg = t->gen->cfg;
        pt_ip_addr a;
        if (!cfg->has_trusted_proxies || !pt_ip_addr_parse(t->conn.client_addr, &a) ||
            !pt_ip_set_contains(&cfg->trusted_proxies, &a))
            return false;
    }
    const pt_headers *h = &t->req->headers;
    const pt_str *v = NULL;
    for (uint32_t i = 0; i < h->n; i++) {
        if (h->v[i].name.n != 11 || !pt_str_ieq_lit(h->v[i].name, "traceparent")) continue;
        if (v) return false; /* several traceparent fields: invalid */
        v = &h->v[i].value;
    }
    return v && pt_traceparent_parse(*v, tp);
}

/* Every tracestate field line joined by ',' (RFC 9110 list), then filtered. */
static pt_str incoming_tracestate(pt_txn *t)
{
    const pt_headers *h = &t->req->headers;
    pt_str one = PT_STR_NULL;
    size_t lines = 0, total = 0;
    for (uint32_t i = 0; i < h->n; i++)
        if (h->v[i].name.n == 10 && pt_str_ieq_lit(h->v[i].name, "tracestate")) {
            one = h->v[i].value;
            lines++;
            total += h->v[i].value.n + 1;
        }
    if (!lines) return PT_STR_NULL;
    if (lines > 1) {
        char *j = pt_arena_alloc(t->a, total), *o = j;
        for (uint32_t i = 0; i < h->n; i++)
            if (h->v[i].name.n == 10 && pt_str_ieq_lit(h->v[i].name, "tracestate")) {
                if (o != j) *o++ = ',';
                memcpy(o, h->v[i].value.p, h->v[i].value.n);
                o += h->v[i].value.n;
            }
        one = pt_str_make(j, (size_t)(o - j));
    }
    return pt_tracestate_filter(t->a, one);
}

void txn_trace_start(pt_txn *t, bool use_incoming)
{
    const pt_tracing_conf *c = &t->gen->cfg->tracing;
    txn_trace *tr = &t->trace;
    if (!c->enabled || tr->on) return;
    tr->on = true;
    pt_trace_parent tp;
    if (use_incoming && incoming_parent(t, &tp)) {
        memcpy(tr->trace_id, tp.trace_id, 16);
        memcpy(tr->parent_id, tp.span_id, 8);
        tr->has_parent = true;
        tr->tracestate = incoming_tracestate(t);
        tr->sampled = c->parent_based ? (tp.flags & 1) != 0 : pt_trace_ratio_sampled(tr->trace_id, c->sampling);
    } else {
        pt_trace_new_id(tr->trace_id, 16);
        tr->sampled = pt_trace_ratio_sampled(tr->trace_id, c->sampling);
    }
    pt_trace_new_id(tr->span_id, 8);
    char *hex = pt_arena_alloc(t->a, 32);
    pt_trace_hex(hex, tr->trace_id, 16);
    tr->trace_hex = pt_str_make(hex, 32);
}

/* ------------------------------------------------------------ client spans */

/* Sets every field but the attributes (of which none yet: nattrs 0, the
 * array itself is left as it is — 700 bytes nobody reads). */
static void span_init(pt_txn *t, pt_span *s, const uint8_t id[8], pt_span_kind kind, uint64_t start_ns)
{
    s->name = PT_STR_NULL;
    s->status = PT_SPAN_STATUS_UNSET;
    s->status_message = PT_STR_NULL;
    s->nattrs = 0;
    memcpy(s->trace_id, t->trace.trace_id, 16);
    memcpy(s->span_id, id, 8);
    memcpy(s->parent_id, t->trace.span_id, 8);
    s->has_parent = kind != PT_SPAN_SERVER || t->trace.has_parent;
    if (kind == PT_SPAN_SERVER) memcpy(s->parent_id, t->trace.parent_id, 8);
    s->kind = kind;
    s->start_ns = start_ns;
    s->end_ns = now_ns(t);
    if (s->end_ns < start_ns) s->end_ns = start_ns;
}

/* "502": the status as error.type. */
static pt_str status_text(pt_txn *t, int status)
{
    char *d = pt_arena_alloc(t->a, 3);
    d[0] = (char)('0' + status / 100 % 10);
    d[1] = (char)('0' + status / 10 % 10);
    d[2] = (char)('0' + status % 10);
    return pt_str_make(d, 3);
}

/* Submits the span unless the queue is full (then only counted). */
static bool room_or_drop(void)
{
    if (pt_trace_export_room()) return true;
    pt_trace_drop_one();
    return false;
}

void txn_trace_attempt_end(pt_txn *t, const char *error_type)
{
    txn_trace *tr = &t->trace;
    if (!tr->att_open) return;
    tr->att_open = false;
    if (!tr->sampled || !room_or_drop()) return;
    pt_span s;
    span_init(t, &s, tr->att_id, PT_SPAN_CLIENT, tr->att_start_ns);
    s.name = t->req->method_str;
    pt_span_str(&s, "http.request.method", t->req->method_str);
    if (tr->att_target) {
        pt_span_str(&s, "server.address", pt_str_c(tr->att_target->host));
        pt_span_int(&s, "server.port", tr->att_target->port);
    }
    pt_span_str(&s, "url.path", t->upstream_target);
    if (t->ups) pt_span_str(&s, "portico.upstream", pt_str_c(t->ups->conf->name));
    if (tr->att_resend > 0) pt_span_int(&s, "http.request.resend_count", tr->att_resend);
    if (tr->att_status) pt_span_int(&s, "http.response.status_code", tr->att_status);
    if (!error_type && !tr->att_status) error_type = tr->att_error ? tr->att_error : "aborted";
    if (error_type) {
        pt_span_str(&s, "error.type", pt_str_c(error_type));
        s.status = PT_SPAN_STATUS_ERROR;
    } else if (tr->att_status >= 500) {
        pt_span_str(&s, "error.type", status_text(t, tr->att_status));
        s.status = PT_SPAN_STATUS_ERROR;
    }
    pt_trace_submit(t->w->loop, &s);
}

void txn_trace_attempt_begin(pt_txn *t)
{
    txn_trace *tr = &t->trace;
    if (!tr->on) return;
    if (tr->att_open) txn_trace_attempt_end(t, NULL);
    tr->att_open = true;
    pt_trace_new_id(tr->att_id, 8);
    tr->att_start_ns = now_ns(t);
    tr->att_status = 0;
    tr->att_error = NULL;
    tr->att_target = t->target;
    tr->att_resend = t->attempts > 0 ? t->attempts - 1 : 0;
}

void txn_trace_inject(pt_txn *t, pt_headers *h)
{
    txn_trace *tr = &t->trace;
    if (!tr->on) return;
    char *v = pt_arena_alloc(t->a, PT_TRACEPARENT_LEN);
    pt_traceparent_format_hex(v, tr->trace_hex.p, tr->att_open ? tr->att_id : tr->span_id, tr->sampled);
    pt_str tp = pt_str_make(v, PT_TRACEPARENT_LEN);
    /* one pass: the first traceparent gets our value (a retry finds the
     * previous attempt's), other copies and every tracestate go */
    bool set = false;
    uint32_t w = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        pt_str n = h->v[i].name;
        if (n.n == 11 && pt_str_ieq_lit(n, "traceparent")) {
            if (set) continue;
            h->v[i].value = tp;
            set = true;
        } else if (n.n == 10 && pt_str_ieq_lit(n, "tracestate")) {
            continue;
        }
        h->v[w++] = h->v[i];
    }
    h->n = w;
    if (!set) pt_headers_add(h, t->a, PT_STR_LIT("traceparent"), tp);
    if (tr->tracestate.n) pt_headers_add(h, t->a, PT_STR_LIT("tracestate"), tr->tracestate);
}

void txn_trace_attempt_status(pt_txn *t, int status)
{
    if (t->trace.att_open) t->trace.att_status = status;
}

const char *txn_trace_uerr_type(pt_uerr err)
{
    switch (err) {
    case PT_UERR_CONNECT: return "connect_error";
    case PT_UERR_CONNECT_TIMEOUT: return "connect_timeout";
    case PT_UERR_WRITE_TIMEOUT: return "write_timeout";
    case PT_UERR_READ_TIMEOUT: return "timeout";
    case PT_UERR_CLOSED: return "connection_closed";
    case PT_UERR_PROTOCOL: return "protocol_error";
    case PT_UERR_TLS: return "tls_error";
    default: return "_OTHER";
    }
}

/* ------------------------------------------------------------ sub-requests */

typedef struct {
    pt_txn *t;
    pt_http_done_fn done;
    void *data;
    uint8_t id[8];
    uint64_t start_ns;
    pt_str method, target, upstream;
} sub_span;

static const char *http_error_type(pt_http_error e)
{
    switch (e) {
    case PT_HTTP_ERR_CONNECT: return "connect_error";
    case PT_HTTP_ERR_TIMEOUT: return "timeout";
    case PT_HTTP_ERR_TOO_LARGE: return "response_too_large";
    case PT_HTTP_ERR_PROTOCOL: return "protocol_error";
    case PT_HTTP_ERR_UPSTREAM_GONE: return "upstream_gone";
    default: return "_OTHER";
    }
}

/* The sub-request's callback: its span, then the caller's callback (the
 * txn is alive: a txn's sub-requests are cancelled when it finishes). */
static void sub_done(void *data, const pt_http_result *r)
{
    sub_span *ss = data;
    pt_txn *t = ss->t;
    if (room_or_drop()) {
        pt_span s;
        span_init(t, &s, ss->id, PT_SPAN_CLIENT, ss->start_ns);
        s.name = ss->method;
        pt_span_str(&s, "http.request.method", ss->method);
        pt_span_str(&s, "url.path", ss->target);
        pt_span_str(&s, "portico.upstream", ss->upstream);
        pt_span_str(&s, "portico.subrequest", PT_STR_LIT("true"));
        if (r->error == PT_HTTP_OK) {
            pt_span_int(&s, "http.response.status_code", r->status);
            if (r->status >= 500) {
                pt_span_str(&s, "error.type", status_text(t, r->status));
                s.status = PT_SPAN_STATUS_ERROR;
            }
        } else {
            pt_span_str(&s, "error.type", pt_str_c(http_error_type(r->error)));
            s.status = PT_SPAN_STATUS_ERROR;
            if (r->detail) s.status_message = pt_str_c(r->detail);
        }
        pt_trace_submit(t->w->loop, &s);
    }
    ss->done(ss->data, r);
}

void txn_trace_subrequest(pt_txn *t, const pt_http_request *req, pt_headers *h, pt_http_done_fn *done, void **data)
{
    txn_trace *tr = &t->trace;
    if (!tr->on) return;
    uint8_t id[8];
    pt_trace_new_id(id, 8);
    char *v = pt_arena_alloc(t->a, PT_TRACEPARENT_LEN);
    pt_traceparent_format_hex(v, tr->trace_hex.p, id, tr->sampled);
    pt_headers_remove(h, "traceparent");
    pt_headers_remove(h, "tracestate");
    pt_headers_add(h, t->a, PT_STR_LIT("traceparent"), pt_str_make(v, PT_TRACEPARENT_LEN));
    if (tr->tracestate.n) pt_headers_add(h, t->a, PT_STR_LIT("tracestate"), tr->tracestate);
    if (!tr->sampled) return;
    sub_span *ss = pt_arena_calloc(t->a, sizeof(*ss));
    *ss = (sub_span){.t = t, .done = *done, .data = *data, .start_ns = now_ns(t)};
    memcpy(ss->id, id, 8);
    ss->method = pt_arena_str(t->a, req->method);
    ss->target = pt_arena_str(t->a, req->target);
    ss->upstream = req->upstream ? pt_str_c(req->upstream->name) : PT_STR_NULL;
    *done = sub_done;
    *data = ss;
}

pt_str pt_txn_trace_id(pt_txn *t) { return t->trace.trace_hex; }

pt_str pt_txn_traceparent(pt_txn *t)
{
    txn_trace *tr = &t->trace;
    if (!tr->on) return PT_STR_NULL;
    char *v = pt_arena_alloc(t->a, PT_TRACEPARENT_LEN);
    pt_traceparent_format_hex(v, tr->trace_hex.p, tr->span_id, tr->sampled);
    return pt_str_make(v, PT_TRACEPARENT_LEN);
}

/* ------------------------------------------------------------ server span */

static pt_str protocol_version(const pt_request *r)
{
    switch (r->version) {
    case 10: return PT_STR_LIT("1.0");
    case 20: return PT_STR_LIT("2");
    default: return PT_STR_LIT("1.1");
    }
}

/* The port of a Host/:authority ("h:8080", "[::1]:8443"); `dflt` when it
 * has none (the codec checked the syntax: digits only, at most 5). */
static int64_t authority_port(pt_str a, int64_t dflt)
{
    const char *end = a.p + a.n, *colon = a.n ? memrchr(a.p, ':', a.n) : NULL;
    if (!colon || memchr(colon, ']', (size_t)(end - colon)) || colon + 1 == end) return dflt;
    int64_t port = 0;
    for (const char *c = colon + 1; c < end && port <= 65535; c++) {
        if (*c < '0' || *c > '9') return dflt;
        port = port * 10 + (*c - '0');
    }
    return port <= 65535 ? port : dflt;
}

void txn_trace_finish(pt_txn *t)
{
    txn_trace *tr = &t->trace;
    if (!tr->on) return;
    if (tr->att_open) txn_trace_attempt_end(t, NULL);
    if (!tr->sampled || !room_or_drop()) return;
    pt_span s;
    span_init(t, &s, tr->span_id, PT_SPAN_SERVER, t->start_us * 1000ull);
    const pt_request *r = t->req;
    pt_str method = r ? r->method_str : PT_STR_LIT("_OTHER");
    const char *route = t->route ? (t->route->path ? t->route->path : t->route->name) : NULL;
    s.name = method;
    if (route) { /* "GET /api" */
        size_t rn = strlen(route);
        char *nm = pt_arena_alloc(t->a, method.n + 1 + rn);
        memcpy(nm, method.p, method.n);
        nm[method.n] = ' ';
        memcpy(nm + method.n + 1, route, rn);
        s.name = pt_str_make(nm, method.n + 1 + rn);
    }
    pt_span_str(&s, "http.request.method", method);
    if (r) {
        pt_span_str(&s, "url.path", r->path);
        pt_span_str(&s, "url.scheme", t->conn.tls ? PT_STR_LIT("https") : PT_STR_LIT("http"));
        if (route) pt_span_str(&s, "http.route", pt_str_c(route));
        pt_span_str(&s, "server.address", r->host);
        pt_span_int(&s, "server.port", authority_port(r->authority, t->conn.tls ? 443 : 80));
        pt_span_str(&s, "network.protocol.version", protocol_version(r));
        const pt_str *ua = pt_headers_get(&r->headers, "user-agent");
        if (ua) pt_span_str(&s, "user_agent.original", *ua);
    }
    pt_span_str(&s, "client.address", t->client_addr);
    if (t->status) pt_span_int(&s, "http.response.status_code", t->status);
    if (t->route) pt_span_str(&s, "portico.route", pt_str_c(t->route->name));
    pt_span_str(&s, "portico.request_id", t->request_id);
    if (t->status >= 500 || t->aborted || !t->status) {
        s.status = PT_SPAN_STATUS_ERROR;
        pt_span_str(&s, "error.type", t->status >= 500 ? status_text(t, t->status)
                                      : t->aborted  ? PT_STR_LIT("aborted")
                                                    : PT_STR_LIT("client_closed"));
    }
    pt_trace_submit(t->w->loop, &s);
}
