/* txn_upstream.c — the transaction's upstream exchange: choosing a target,
 * connecting (pooled or fresh, HTTP/1 or HTTP/2), retries, sending the
 * request head, the events of the exchange, and the gRPC deadline. */
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
    for (;;) {
        int idx = pt_upstream_pick(u, t->tried);
        if (idx < 0) {
            t->upstream_failed = true;
            txn_respond_problem(t, 502, "no upstream target could be reached");
            return;
        }
        if (idx < 64) t->tried |= 1ull << idx;
        t->attempts++;
        t->target = &u->conf->targets[idx];
        if (!t->up_start_us) t->up_start_us = pt_loop_wall_us(t->w->loop);
        bool fresh = false;
        void *c = pt_exchange_open(t->w, u, idx, t->gen->up_tls[u->conf->index], &t->uops, &fresh);
        if (!c) {
            if (pt_method_idempotent(t->req->method) && t->attempts < (int)u->conf->ntargets) continue;
            t->upstream_failed = true;
            txn_respond_problem(t, 502, "upstream connection failed");
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
    if (!t->forwarded_headers_done) { /* a retry reuses them */
        t->forwarded_headers_done = true;
        txn_add_forwarding_headers(t);
    }
    pt_str host = r->authority;
    if (!t->ups->conf->preserve_host || !host.n) {
        const pt_target_conf *tc = t->target;
        host = pt_str_c(pt_arena_printf(t->a, "%s:%u", tc->host, (unsigned)tc->port));
    }
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
    send_request_head(t);
    if (!t->req->has_body) {
        t->req_end_sent = true;
    } else if (!t->uc || t->finished) {
        /* the exchange failed while sending the head */
    } else if (t->req_body_done && (t->req_last_passed || t->req->content_length == 0)) {
        /* the end already went through the plugins (a retry after a stale
         * pooled connection), or "Content-Length: 0": complete before any
         * plugin could see it */
        t->req_end_sent = true;
        if (t->req_held.len) /* a body held for pt_txn_hold_request_head */
            t->uops->send_body(t->uc, pt_buf_head(&t->req_held), t->req_held.len);
        if (t->uc && !t->finished) t->uops->send_end(t->uc, txn_trailers_lines(t, PT_SIDE_REQUEST));
    } else if (!t->req_body_done) {
        t->ops->want_body(t->stream, true);
    }
    /* else: the end is held by a paused request-body plugin; its resume
     * forwards it to this exchange */
    txn_leave(t);
}

static void on_up_writable(void *owner)
{
    pt_txn *t = owner;
    txn_enter(t);
    if (!t->req_body_done && !t->resp_done && !t->side[PT_SIDE_REQUEST].paused && !t->req_responded)
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
    txn_response_chunk(t, data, len, false);
    txn_leave(t);
}

/* Response trailers get the same RFC 9110 §6.5.1 filter as request
 * trailers: framing, routing, authentication and cookie fields never reach
 * the client from a trailer section. */
static void on_up_end(void *owner, pt_str trailers)
{
    pt_txn *t = owner;
    txn_enter(t);
    if (trailers.n) txn_trailers_parse(t, PT_SIDE_RESPONSE, trailers);
    /* The upstream's part is over: give the exchange back now (pooled when
     * the whole request went up, else closed), not when the client has the
     * last byte. A response-body plugin may still hold the end for a while,
     * and an exchange that finished is no longer watched for errors: kept,
     * it could go away under the txn (a write error while the client's body
     * still streams). Later request body bytes are dropped. */
    t->up_end_us = pt_loop_wall_us(t->w->loop);
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
    /* A connection that failed before any response byte may be retried when
     * nothing of the request body has been consumed yet: a stale pooled
     * connection always, a failed connect for idempotent requests. */
    bool body_untouched = !t->req->has_body || t->body_received == 0 ||
                          t->req_held.len; /* held whole (pt_txn_hold_request_head): sent again */
    pt_exchange_retry_kind retry =
        t->resp_started || !body_untouched
            ? PT_RETRY_NONE
            : pt_exchange_retry(err, reused, nothing_received, t->attempts, t->ups->conf->ntargets,
                                pt_method_idempotent(t->req->method));
    if (retry != PT_RETRY_NONE) {
        if (retry == PT_RETRY_STALE) {
            if (t->req->has_body && !t->req_body_done) t->ops->want_body(t->stream, false);
            t->tried = 0;
        }
        txn_connect_upstream(t);
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
