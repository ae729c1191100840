/* txn_splice.c — bulk bodies moved with splice(2) (net/splice.h;
 * docs/performance.md "splice(2) for bulk bodies").
 *
 * A body no plugin sees, framed by Content-Length on both sides, between
 * two plain HTTP/1.1 sockets, may skip user space: once the bytes read with
 * the head went through the copy path and the codec's and the exchange's
 * buffers are empty, the rest goes socket -> pipe -> socket. The codec
 * (pt_downstream_ops.splice_*) and the exchange (exchange.h splice_*) keep
 * their sockets and timers and report readiness; this file runs the steps,
 * counts the bytes as the copy path does (bytes_in, bytes_out, the codec's
 * bytes_sent), and ends the splice the way the copy path would end the body
 * (the response's on_end, the request's send_end), or fails it on the side
 * that failed. Anything else — chunked bodies, TLS, HTTP/2, body plugins,
 * a request body retries may need, limits.splice: false — keeps copying.
 *
 * Directions: the response body (upstream -> client) and the request body
 * (client -> upstream), never both at once (each socket is one end of at
 * most one splice). */
#include <errno.h>
#include <string.h>

#include "obs/errorlog.h"
#include "obs/gateway_metrics.h"
#include "proxy/txn_int.h"

#define STEP_PIPES 4

struct txn_splice {
    pt_splice sp[2];  /* [PT_SIDE_REQUEST], [PT_SIDE_RESPONSE] */
    bool active[2];
    void *uc[2];      /* the exchange each runs on */
    int client_fd, up_fd;
    pt_defer first;   /* the first step runs from the loop */
};

static const pt_config *cfg_of(const pt_txn *t) { return t->gen->cfg; }

bool txn_splice_active(const pt_txn *t, pt_side side) { return t->spl && t->spl->active[side]; }

/* Whether side's body may be spliced from now on, by the txn's own state
 * (the codec and the exchange then check theirs in splice_fd). */
static bool eligible(const pt_txn *t, pt_side side)
{
    const pt_config *cfg = cfg_of(t);
    if (!cfg->limits.splice || t->finished || !t->uc || !t->route || t->tun) return false;
    if (!t->ops->splice_fd || !t->uops->splice_fd) return false;
    if (t->spl && (t->spl->active[0] || t->spl->active[1])) return false;
    const txn_side *s = &t->side[side];
    if (s->paused || s->queued_any || s->buffered) return false;
    if (side == PT_SIDE_RESPONSE) {
        return !t->pipe->has_response_body && !t->local && t->resp_started && !t->head_waiting && !t->resp_done &&
               t->res.has_body && t->res.content_length >= 0 && !t->ds_full && !t->up_read_paused_by_ds &&
               !t->retry.discarding && t->req->method != PT_METHOD_HEAD && t->req_body_done && t->req_end_sent;
    }
    /* request: the retry policy no longer keeps the body (keep_lost), no
     * response yet, the exchange is the one sending */
    return !t->pipe->has_request_body && !t->req_hold && !t->req_responded && !t->req_body_done &&
           !t->resp_started && t->req->has_body && t->req->content_length >= 0 && t->retry.sending &&
           t->retry.keep_lost && !t->retry.waiting && !t->retry.discarding;
}

static void first_step(pt_loop *loop, pt_defer *d);

void txn_splice_try(pt_txn *t, pt_side side)
{
    bool resp = side == PT_SIDE_RESPONSE;
    uint64_t threshold = cfg_of(t)->limits.stream_buffer;
    /* what is left of the body by the txn's count: worth it only when large
     * (checked first: most bodies are small, and this is on their path) */
    int64_t cl = resp ? t->res.content_length : t->req ? t->req->content_length : -1;
    uint64_t len = (uint64_t)cl, done = resp ? t->bytes_out : t->body_received;
    if (cl < 0 || done > len || len - done < threshold || !eligible(t, side)) return;
    /* both ends must have nothing of the body buffered (asked first, then taken) */
    uint64_t remaining = 0, unused = 0;
    int src = resp ? t->uops->splice_fd(t->uc, true, false, &remaining)
                   : t->ops->splice_fd(t->stream, false, false, &remaining);
    if (src < 0 || remaining != len - done) return;
    int dst = resp ? t->ops->splice_fd(t->stream, true, false, &unused) : t->uops->splice_fd(t->uc, false, false, &unused);
    if (dst < 0) return;
    if (!t->spl) {
        t->spl = pt_arena_calloc(t->a, sizeof(*t->spl));
        t->spl->sp[0].rd = t->spl->sp[0].wr = t->spl->sp[1].rd = t->spl->sp[1].wr = -1;
    }
    struct txn_splice *x = t->spl;
    if (!pt_splice_open(t->w->loop, &x->sp[side], remaining, threshold)) {
        /* no pipe (EMFILE, ENFILE...): the copy path goes on, and the
         * operator hears why (rate-limited like every error-log kind) */
        if (pt_elog_enabled(PT_ELOG_WARN)) {
            int err = errno;
            pt_elog_ctx ctx = {.worker = t->w->id,
                               .route = pt_str_c(t->route->name),
                               .request_id = t->request_id,
                               .client = t->client_addr};
            pt_elog(PT_ELOG_WARN, "splice_pipe", &ctx, "no pipe for splice(2) (%s): the body is copied",
                    strerror(err));
        }
        return;
    }
    if (resp) {
        t->uops->splice_fd(t->uc, true, true, &remaining);
        t->ops->splice_fd(t->stream, true, true, &unused);
    } else {
        t->ops->splice_fd(t->stream, false, true, &remaining);
        t->uops->splice_fd(t->uc, false, true, &unused);
    }
    x->active[side] = true;
    x->uc[side] = t->uc;
    x->client_fd = resp ? dst : src;
    x->up_fd = resp ? src : dst;
    pt_defer_queue(t->w->loop, &x->first, first_step, t);
}

/* Ends side's splice: the pipe (pooled when clean and empty), then each end
 * hears how (the client first: a DONE response is sent by the exchange's
 * on_end, which must find the codec back on its own I/O). */
static void end(pt_txn *t, pt_side side, pt_splice_end client, pt_splice_end up)
{
    struct txn_splice *x = t->spl;
    if (!x->active[side]) return;
    x->active[side] = false;
    if (!x->active[0] && !x->active[1]) pt_defer_cancel(t->w->loop, &x->first);
    bool clean = client == PT_SPLICE_END_DONE && up == PT_SPLICE_END_DONE;
    pt_splice_close(t->w->loop, &x->sp[side], clean);
    void *uc = x->uc[side];
    x->uc[side] = NULL;
    t->ops->splice_end(t->stream, client);
    if (uc && uc == t->uc && !t->finished) t->uops->splice_end(uc, up);
    else if (uc && uc == t->uc) t->uops->splice_end(uc, PT_SPLICE_END_STOP);
}

void txn_splice_abandon(pt_txn *t)
{
    if (!t->spl) return;
    for (int i = 0; i < 2; i++)
        if (t->spl->active[i]) end(t, (pt_side)i, PT_SPLICE_END_STOP, PT_SPLICE_END_STOP);
}

/* Counts what a step moved where the copy path counts it. */
static void account(pt_txn *t, pt_side side, const pt_splice_moved *mv)
{
    if (side == PT_SIDE_RESPONSE) {
        if (mv->in) t->uops->splice_moved(t->uc, mv->in);
        if (mv->out) {
            t->bytes_out += mv->out;
            t->ops->splice_moved(t->stream, true, mv->out);
        }
    } else {
        if (mv->in) {
            t->body_received += mv->in;
            t->bytes_in += mv->in;
            t->retry.passed += mv->in;
            t->ops->splice_moved(t->stream, false, mv->in);
        }
        if (mv->out) t->uops->splice_moved(t->uc, mv->out);
    }
    if (mv->out) pt_metrics_spliced(t->w, side == PT_SIDE_RESPONSE, mv->out);
}

/* Runs one step of side's splice and sets who waits for what. */
static void step(pt_txn *t, pt_side side)
{
    struct txn_splice *x = t->spl;
    if (!x || !x->active[side]) return;
    if (t->finished || t->uc != x->uc[side]) { /* the exchange went away under it */
        end(t, side, PT_SPLICE_END_STOP, PT_SPLICE_END_STOP);
        return;
    }
    bool resp = side == PT_SIDE_RESPONSE;
    int src = resp ? x->up_fd : x->client_fd, dst = resp ? x->client_fd : x->up_fd;
    pt_splice_moved mv = {0, 0};
    /* at most STEP_PIPES pipes' worth per event, like the copy path's
     * reads: other connections get their turn (epoll is level-triggered) */
    pt_splice_status st = pt_splice_step(&x->sp[side], src, dst, true, (size_t)x->sp[side].pipe_cap * STEP_PIPES, &mv);
    account(t, side, &mv);
    switch (st) {
    case PT_SPLICE_WAIT_SRC:
    case PT_SPLICE_WAIT_DST: {
        bool src_wait = st == PT_SPLICE_WAIT_SRC;
        if (resp) {
            t->uops->splice_wait(t->uc, src_wait);
            t->ops->splice_wait(t->stream, !src_wait);
        } else {
            /* the codec reads (and runs its body clock) only while wanted */
            t->uops->splice_wait(t->uc, !src_wait);
            t->ops->want_body(t->stream, src_wait);
        }
        return;
    }
    case PT_SPLICE_DONE:
        if (resp) {
            /* the exchange completes the response (on_end: pooled, then
             * the codec's send_end and the txn's finish) */
            end(t, side, PT_SPLICE_END_DONE, PT_SPLICE_END_DONE);
            return;
        }
        end(t, side, PT_SPLICE_END_DONE, PT_SPLICE_END_DONE);
        if (t->finished) return;
        t->req_body_done = true;
        txn_request_chunk(t, NULL, 0, true); /* the end, as the copy path sends it */
        return;
    case PT_SPLICE_SRC_EOF:
    case PT_SPLICE_SRC_ERROR:
        /* the reading side failed: the upstream cut its response (the
         * client sees the connection close), or the client left mid-body */
        if (resp) end(t, side, PT_SPLICE_END_STOP, PT_SPLICE_END_FAIL);
        else end(t, side, PT_SPLICE_END_FAIL, PT_SPLICE_END_STOP);
        return;
    case PT_SPLICE_DST_ERROR:
        if (resp) {
            end(t, side, PT_SPLICE_END_FAIL, PT_SPLICE_END_STOP);
            if (t->uc) t->uops->pause_read(t->uc, true); /* the codec closes from the loop */
        } else {
            end(t, side, PT_SPLICE_END_STOP, PT_SPLICE_END_FAIL);
        }
        return;
    }
}

static void first_step(pt_loop *loop, pt_defer *d)
{
    pt_txn *t = d->data;
    txn_enter(t);
    for (int i = 0; i < 2 && !t->finished; i++) step(t, (pt_side)i);
    txn_leave(t);
}

void txn_splice_io(pt_txn *t)
{
    if (!t->spl || t->finished) return;
    for (int i = 0; i < 2 && !t->finished; i++) step(t, (pt_side)i);
}

void pt_txn_on_splice_io(pt_txn *t)
{
    if (t->finished) return;
    txn_enter(t);
    txn_splice_io(t);
    txn_leave(t);
}
