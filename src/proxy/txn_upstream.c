/* txn_upstream.c — the transaction's upstream exchange: choosing a target,
 * connecting (pooled or fresh, HTTP/1 or HTTP/2), sending the request head,
 * the events of the exchange, and the gRPC deadline. Whether and when a
 * failed attempt is tried again is txn_retry.c's. */
#include "proxy/txn_int.h"

#include "obs/errorlog.h"

static const pt_uconn_cbs up_cbs;

/* One failed upstream attempt into the error log: warn when it is retried,
 * error when the client gets the failure. A stale pooled connection
 * re-sent is routine (debug). */
static void log_upstream_error(const pt_txn *t, pt_uerr err, bool retried, bool stale)
{
    pt_elog_level level = stale ? PT_ELOG_DEBUG : retried ? PT_ELOG_WARN : PT_ELOG_ERROR;
    if (!pt_elog_enabled(level)) return;
    const char *kind, *what;
    switch (err) {
    case PT_UERR_CONNECT: kind = "upstream_connect"; what = "connection to the upstream failed"; break;
    case PT_UERR_CONNECT_TIMEOUT: kind = "upstream_timeout"; what = "timed out connecting to the upstream"; break;
    case PT_UERR_READ_TIMEOUT: kind = "upstream_timeout"; what = "the upstream did not answer in time"; break;
    case PT_UERR_WRITE_TIMEOUT: kind = "upstream_timeout"; what = "timed out sending the request to the upstream"; break;
    case PT_UERR_PROTOCOL: kind = "upstream_protocol"; what = "the upstream sent an invalid response"; break;
    case PT_UERR_TLS: kind = "upstream_tls"; what = "TLS handshake with the upstream failed"; break;
    default: kind = "upstream_reset"; what = "the upstream closed the connection"; break;
    }
    pt_elog_ctx ctx = {
        .worker = t->w->id,
        .route = t->route ? pt_str_c(t->route->name) : PT_STR_NULL,
        .upstream = t->ups ? pt_str_c(t->ups->conf->name) : PT_STR_NULL,
        .target = t->target ? pt_str_c(t->target->addr.text) : PT_STR_NULL,
        .request_id = t->request_id,
        .client = t->client_addr,
    };
    pt_elog(level, kind, &ctx, "%s (attempt %d)%s", what, t->attempts,
            stale ? "; stale pooled connection, re-sent" : retried ? "; retrying" : "");
}

/* The balancer's clock for this request: the precise monotonic clock when
 * the upstream balances on latency (balance: ewma), else the loop's cached
 * monotonic time (ejections and the breaker count in milliseconds; no
 * clock read per event). */
uint64_t txn_lb_now(const pt_txn *t)
{
    if (t->ups && t->ups->conf->balance.kind == PT_BALANCE_EWMA) return pt_lb_now_us();
    return pt_loop_now(t->w->loop) * 1000;
}

void txn_drop_upstream(pt_txn *t)
{
    if (!t->uc) return;
    txn_splice_abandon(t);
    void *c = t->uc;
    t->uc = NULL;
    t->uops->close(c);
}

void txn_connect_upstream(pt_txn *t)
{
    pt_upstream_rt *u = t->ups;
    pt_lb *lb = u->conf->lb;
    uint64_t now = txn_lb_now(t);
    if (t->attempts == 0 && !pt_lb_admit(lb, &t->lb, now)) {
        txn_respond_problem(t, 503, "the upstream's circuit breaker is open");
        return;
    }
    /* a previous attempt (retried 5xx, per-try timeout) still counted; not
     * before the first one: it would spend a half-open probe unsent */
    if (t->attempts > 0) pt_lb_end(lb, &t->lb, now);
    int idx = pt_lb_pick(u, txn_retry_next_attempt(t), txn_lb_key(t), now);
    if (idx < 0) {
        t->upstream_failed = true;
        txn_respond_problem(t, 502, "no upstream target could be reached");
        return;
    }
    if (idx < 64) t->tried |= 1ull << idx;
    t->attempts++;
    t->target = &u->conf->targets[idx];
    if (!t->up_start_us) t->up_start_us = pt_loop_wall_us(t->w->loop);
    txn_trace_attempt_begin(t);
    bool fresh = false;
    void *c = pt_exchange_open(t->w, u, idx, t->gen->up_tls[u->conf->index], &t->uops, &fresh);
    if (!c) {
        pt_lb_open_failed(lb, &t->lb, idx, now);
        txn_trace_attempt_end(t, "connect_error");
        /* a retry (txn_retry.c) comes back here, now or after a backoff */
        if (txn_retry_after_error(t, PT_UERR_CONNECT, false, true)) {
            log_upstream_error(t, PT_UERR_CONNECT, true, false);
            return;
        }
        log_upstream_error(t, PT_UERR_CONNECT, false, false);
        t->upstream_failed = true;
        txn_respond_problem(t, 502, "upstream connection failed");
        return;
    }
    t->uc = c;
    pt_lb_begin(lb, &t->lb, idx, now);
    t->uops->attach(c, &up_cbs, t, t->a, u->conf, &t->gen->h1_limits, u->conf->connect_timeout_ms);
    txn_retry_attempt_started(t);
    if (!fresh) up_cbs.on_ready(t);
}

static void send_request_head(pt_txn *t)
{
    pt_request *r = t->req;
    if (!t->forwarded_headers_done) { /* a retry reuses them */
        t->forwarded_headers_done = true;
        txn_add_forwarding_headers(t);
    }
    pt_str host = r->authority;
    if (!t->ups->conf->preserve_host || !host.n) {
        const pt_target_conf *tc = t->target;
        host = pt_str_c(pt_arena_printf(t->a, "%s:%u", tc->host, (unsigned)tc->port));
    }
    txn_trace_inject(t, &r->headers); /* this attempt's span is the upstream's parent */
    t->uops->send_head(t->uc, r, t->upstream_target, host, &r->headers, r->has_body, r->content_length);
}

/* ------------------------------------------------------------ gRPC deadline */

static void grpc_deadline_cb(pt_loop *loop, pt_timer *tm)
{
    pt_txn *t = tm->data;
    if (t->finished) return;
    txn_enter(t);
    /* The client's deadline passed: stop the upstream exchange and answer
     * DEADLINE_EXCEEDED (504 maps to it), or abort a started response. */
    t->req_body_done = true;
    txn_fail_request(t, 504, "the gRPC deadline (grpc-timeout) passed");
    txn_leave(t);
}

/* Honours grpc-timeout on requests that carry it: the whole exchange must
 * finish by then (a later upstream read timeout does not extend it). */
void txn_arm_grpc_deadline(pt_txn *t)
{
    uint64_t ms = txn_grpc_timeout_ms(t->req);
    if (ms) pt_timer_start(t->w->loop, &t->deadline, ms, grpc_deadline_cb, t);
}

/* ------------------------------------------------------- exchange events */

static void on_up_ready(void *owner)
{
    pt_txn *t = owner;
    txn_enter(t);
    void *x = t->uc;
    send_request_head(t);
    /* a retry sends the body kept so far (txn_retry.c) */
    bool more = t->uc && !t->finished && txn_retry_exchange_ready(t);
    if (t->uc != x || t->finished) {
        /* the exchange failed while sending the head or the kept body: the
         * request is over, or its next attempt sends (or sent) all of it */
    } else if (!t->req->has_body) {
        t->req_end_sent = true;
    } else if (t->req_body_done && (t->req_last_passed || t->req->content_length == 0)) {
        /* the end already went through the plugins (a retry after a stale
         * pooled connection), or "Content-Length: 0": complete before any
         * plugin could see it */
        t->req_end_sent = true;
        if (t->req_held.len) /* a body held for pt_txn_hold_request_head */
            t->uops->send_body(t->uc, pt_buf_head(&t->req_held), t->req_held.len);
        if (t->uc == x && !t->finished) t->uops->send_end(t->uc, txn_trailers_lines(t, PT_SIDE_REQUEST));
    } else if (!t->req_body_done && more) {
        t->ops->want_body(t->stream, true); /* else on_writable asks */
    }
    /* else: the end is held by a paused request-body plugin; its resume
     * forwards it to this exchange */
    txn_leave(t);
}

static void on_up_writable(void *owner)
{
    pt_txn *t = owner;
    txn_enter(t);
    if (txn_splice_active(t, PT_SIDE_REQUEST)) {
        txn_splice_io(t);
        txn_leave(t);
        return;
    }
    if (!t->req_body_done && !t->resp_done && !t->side[PT_SIDE_REQUEST].paused && !t->req_responded &&
        t->retry.sending) /* not while a retried 5xx is read */
        t->ops->want_body(t->stream, true);
    txn_splice_try(t, PT_SIDE_REQUEST);
    txn_leave(t);
}

static void on_up_informational(void *owner, pt_response *res)
{
    pt_txn *t = owner;
    if (!t->resp_started && t->ops->send_informational) t->ops->send_informational(t->stream, res);
}

static void on_up_head(void *owner, pt_response *res)
{
    pt_txn *t = owner;
    txn_enter(t);
    /* the balancer counts every answer, a retried 5xx too */
    pt_lb_result(t->ups->conf->lb, &t->lb, res->status >= 500 ? PT_LB_5XX : PT_LB_SUCCESS, txn_lb_now(t));
    txn_trace_attempt_status(t, res->status);
    if (txn_retry_on_head(t, res)) { /* a listed 5xx: read, dropped, retried */
        txn_leave(t);
        return;
    }
    t->res = *res;
    t->local = false;
    t->up_head_us = pt_loop_wall_us(t->w->loop);
    t->uops->pause_read(t->uc, true); /* until the response phase has run */
    if (!t->tun || txn_tunnel_on_head(t)) txn_start_response_phase(t);
    txn_leave(t);
}

static void on_up_body(void *owner, const char *data, size_t len)
{
    pt_txn *t = owner;
    txn_enter(t);
    if (t->retry.discarding) txn_retry_discard_body(t, len);
    else txn_response_chunk(t, data, len, false);
    if (!t->finished) txn_splice_try(t, PT_SIDE_RESPONSE); /* the rest may skip user space */
    txn_leave(t);
}

/* Response trailers get the same RFC 9110 §6.5.1 filter as request
 * trailers: framing, routing, authentication and cookie fields never reach
 * the client from a trailer section. */
static void on_up_end(void *owner, pt_str trailers)
{
    pt_txn *t = owner;
    txn_enter(t);
    if (t->retry.discarding) {
        pt_lb_end(t->ups->conf->lb, &t->lb, txn_lb_now(t));
        txn_retry_discard_end(t, true);
        txn_leave(t);
        return;
    }
    if (trailers.n) txn_trailers_parse(t, PT_SIDE_RESPONSE, trailers);
    txn_splice_abandon(t); /* a request body still spliced: the exchange goes */
    /* The upstream's part is over: give the exchange back now (pooled when
     * the whole request went up, else closed), not when the client has the
     * last byte. A response-body plugin may still hold the end for a while,
     * and an exchange that finished is no longer watched for errors: kept,
     * it could go away under the txn (a write error while the client's body
     * still streams). Later request body bytes are dropped. */
    t->up_end_us = pt_loop_wall_us(t->w->loop);
    pt_lb_end(t->ups->conf->lb, &t->lb, txn_lb_now(t));
    txn_trace_attempt_end(t, NULL);
    void *c = t->uc;
    t->uc = NULL;
    t->up_read_paused_by_ds = false;
    if (c) {
        if (t->req_end_sent) t->uops->release(c);
        else t->uops->close(c);
    }
    txn_response_chunk(t, NULL, 0, true);
    txn_leave(t);
}

static void on_up_error(void *owner, pt_uerr err, bool nothing_received)
{
    pt_txn *t = owner;
    txn_enter(t);
    txn_splice_abandon(t);
    void *c = t->uc;
    bool reused = c && t->uops->reused(c);
    t->uc = NULL;
    if (c) t->uops->close(c);
    t->up_end_us = pt_loop_wall_us(t->w->loop);
    txn_trace_attempt_end(t, txn_trace_uerr_type(err));
    if (t->retry.discarding) { /* the retried 5xx broke off: the retry goes on */
        pt_lb_end(t->ups->conf->lb, &t->lb, txn_lb_now(t));
        txn_retry_discard_end(t, false);
        txn_leave(t);
        return;
    }
    /* a stale pooled connection is not the target's fault */
    pt_lb_result(t->ups->conf->lb, &t->lb, reused && err == PT_UERR_CLOSED ? PT_LB_NEUTRAL : PT_LB_FAILURE,
                 txn_lb_now(t));
    pt_lb_end(t->ups->conf->lb, &t->lb, txn_lb_now(t));
    /* Before any response byte: retried under the route's policy, or a
     * stale pooled connection re-sent (txn_retry.c). */
    if (txn_retry_after_error(t, err, reused, nothing_received)) {
        log_upstream_error(t, err, true, t->retry.stale);
        txn_leave(t);
        return;
    }
    log_upstream_error(t, err, false, false);
    int status = 502;
    const char *detail;
    switch (err) {
    case PT_UERR_CONNECT_TIMEOUT: status = 504; detail = "timed out connecting to the upstream"; break;
    case PT_UERR_READ_TIMEOUT: status = 504; detail = "the upstream did not answer in time"; break;
    case PT_UERR_WRITE_TIMEOUT: status = 504; detail = "timed out sending the request to the upstream"; break;
    case PT_UERR_CONNECT: detail = "upstream connection failed"; break;
    case PT_UERR_PROTOCOL: detail = "the upstream sent an invalid response"; break;
    case PT_UERR_TLS: detail = "TLS handshake with the upstream failed"; break;
    default: detail = "the upstream closed the connection"; break;
    }
    txn_upstream_failed(t, status, detail);
    txn_leave(t);
}

static void on_up_splice(void *owner)
{
    pt_txn *t = owner;
    txn_enter(t);
    txn_splice_io(t);
    txn_leave(t);
}

static const pt_uconn_cbs up_cbs = {
    .on_ready = on_up_ready,
    .on_writable = on_up_writable,
    .on_informational = on_up_informational,
    .on_head = on_up_head,
    .on_body = on_up_body,
    .on_end = on_up_end,
    .on_error = on_up_error,
    .on_splice = on_up_splice,
};
