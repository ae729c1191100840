/* txn_upstream.c — the transaction's upstream exchange: choosing a target,
 * connecting (pooled or fresh, HTTP/1 or HTTP/2), sending the request head,
 * the events of the exchange, and the gRPC deadline. Whether and when a
 * failed attempt is tried again is txn_retry.c's. */
#include "proxy/txn_int.h"

static const pt_uconn_cbs up_cbs;

void txn_drop_upstream(pt_txn *t)
{
    if (!t->uc) return;
    void *c = t->uc;
    t->uc = NULL;
    t->uops->close(c);
}

void txn_connect_upstream(pt_txn *t)
{
    pt_upstream_rt *u = t->ups;
    int idx = pt_upstream_pick(u, txn_retry_next_attempt(t));
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
        txn_trace_attempt_end(t, "connect_error");
        /* a retry (txn_retry.c) comes back here, now or after a backoff */
        if (txn_retry_after_error(t, PT_UERR_CONNECT, false, true)) return;
        t->upstream_failed = true;
        txn_respond_problem(t, 502, "upstream connection failed");
        return;
    }
    t->uc = c;
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
        t->uops->send_end(t->uc, txn_trailers_lines(t, PT_SIDE_REQUEST));
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
    if (!t->req_body_done && !t->resp_done && !t->side[PT_SIDE_REQUEST].paused && !t->req_responded &&
        t->retry.sending) /* not while a retried 5xx is read */
        t->ops->want_body(t->stream, true);
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
        txn_retry_discard_end(t, true);
        txn_leave(t);
        return;
    }
    if (trailers.n) txn_trailers_parse(t, PT_SIDE_RESPONSE, trailers);
    /* The upstream's part is over: give the exchange back now (pooled when
     * the whole request went up, else closed), not when the client has the
     * last byte. A response-body plugin may still hold the end for a while,
     * and an exchange that finished is no longer watched for errors: kept,
     * it could go away under the txn (a write error while the client's body
     * still streams). Later request body bytes are dropped. */
    t->up_end_us = pt_loop_wall_us(t->w->loop);
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
    void *c = t->uc;
    bool reused = c && t->uops->reused(c);
    t->uc = NULL;
    if (c) t->uops->close(c);
    t->up_end_us = pt_loop_wall_us(t->w->loop);
    txn_trace_attempt_end(t, txn_trace_uerr_type(err));
    if (t->retry.discarding) { /* the retried 5xx broke off: the retry goes on */
        txn_retry_discard_end(t, false);
        txn_leave(t);
        return;
    }
    /* Before any response byte: retried under the route's policy, or a
     * stale pooled connection re-sent (txn_retry.c). */
    if (txn_retry_after_error(t, err, reused, nothing_received)) {
        txn_leave(t);
        return;
    }
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

static const pt_uconn_cbs up_cbs = {
    .on_ready = on_up_ready,
    .on_writable = on_up_writable,
    .on_informational = on_up_informational,
    .on_head = on_up_head,
    .on_body = on_up_body,
    .on_end = on_up_end,
    .on_error = on_up_error,
};
