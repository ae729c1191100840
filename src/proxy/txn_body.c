/* txn_body.c — bodies and trailers of both sides: the pt_body a body
 * plugin works on, the run of the body callbacks (continue, buffer, pause,
 * respond), bytes held while a side is paused, and forwarding what passed
 * to the upstream (request) or the codec (response). */
#include <stdlib.h>

#include "proxy/txn_int.h"

/* internal result of a body run: a PT_PLUGIN_BUFFER slot went over the cap */
enum { BODY_OVER_LIMIT = 100 };

void txn_side_paused(pt_txn *t, pt_side side, bool in_body); /* txn.c */

/* ------------------------------------------------------------------ pt_body */

const char *pt_body_data(const pt_body *b) { return b->owned ? pt_buf_head(&b->own) : b->p; }
size_t pt_body_len(const pt_body *b) { return b->owned ? b->own.len : b->n; }
bool pt_body_last(const pt_body *b) { return b->last; }

void pt_body_consume(pt_body *b, size_t n)
{
    size_t len = pt_body_len(b);
    if (n > len) n = len;
    if (b->owned) {
        pt_buf_consume(&b->own, n);
    } else {
        b->p += n;
        b->n -= n;
    }
}

void pt_body_replace(pt_body *b, const char *data, size_t len)
{
    pt_buf nb = {0};
    if (len) pt_buf_append(&nb, data, len); /* data may point into b->own */
    pt_buf_release(&b->own);
    b->own = nb;
    b->owned = true;
}

/* Makes b own its bytes (a copy of the borrowed slice). */
static void body_own(pt_body *b)
{
    if (b->owned) return;
    b->own = (pt_buf){0};
    if (b->n) pt_buf_append(&b->own, b->p, b->n);
    b->owned = true;
}

void pt_body_append(pt_body *b, const char *data, size_t len)
{
    if (!len) return;
    body_own(b);
    const pt_buf *o = &b->own;
    if (o->data && data >= o->data && data < o->data + o->cap) {
        /* appending (part of) itself: the buffer may move */
        char *tmp = pt_xmalloc(len);
        memcpy(tmp, data, len);
        pt_buf_append(&b->own, tmp, len);
        free(tmp);
        return;
    }
    pt_buf_append(&b->own, data, len);
}

static void body_release(pt_body *b)
{
    pt_buf_release(&b->own);
    *b = (pt_body){0};
}

/* Moves b's bytes into *dst (appending), leaving b empty and borrowed. */
static void body_move_to(pt_body *b, pt_buf *dst)
{
    size_t n = pt_body_len(b);
    if (b->owned && !dst->len && !dst->data) {
        *dst = b->own;
        b->own = (pt_buf){0};
    } else if (n) {
        pt_buf_append(dst, pt_body_data(b), n);
        pt_buf_release(&b->own);
    }
    bool last = b->last;
    *b = (pt_body){.last = last};
}

/* Puts the bytes of slot (kept by a BUFFER plugin) in front of b's. */
static void body_prepend_slot(pt_body *b, pt_buf *slot)
{
    size_t n = pt_body_len(b);
    if (n) pt_buf_append(slot, pt_body_data(b), n);
    pt_buf_release(&b->own);
    b->own = *slot;
    b->owned = true;
    *slot = (pt_buf){0};
}

void txn_side_release(txn_side *s, size_t nslots)
{
    body_release(&s->held);
    pt_buf_release(&s->queued);
    s->queued_any = false;
    if (s->slots)
        for (size_t i = 0; i < nslots; i++) pt_buf_release(&s->slots[i]);
    s->buffered = 0;
}

/* ------------------------------------------------------------------ trailers */

void txn_trailers_parse(pt_txn *t, pt_side side, pt_str raw) { pt_trailers_parse(&t->side[side].trailers, t->a, raw); }

pt_str txn_trailers_lines(pt_txn *t, pt_side side) { return pt_trailers_lines(t->a, &t->side[side].trailers); }

pt_headers *pt_txn_trailers(pt_txn *t, pt_side side) { return &t->side[side == PT_SIDE_RESPONSE].trailers; }

pt_body *pt_txn_held_body(pt_txn *t, pt_side side)
{
    txn_side *s = &t->side[side == PT_SIDE_RESPONSE];
    return s->paused && s->paused_in_body ? &s->held : NULL;
}

/* ------------------------------------------------------------- body runs */

static bool pipe_has_body_cbs(const pt_txn *t, pt_side side)
{
    return side == PT_SIDE_REQUEST ? t->pipe->has_request_body : t->pipe->has_response_body;
}

/* Runs the body callbacks of `side` from plugin `from` over b. CONTINUE:
 * what is left in b goes on (it may be empty); PAUSE: b was moved into the
 * side's held body; RESPOND: the plugin answered; BODY_OVER_LIMIT: a
 * BUFFER slot exceeded the cap. */
static int run_body(pt_txn *t, pt_side side, size_t from, pt_body *b)
{
    txn_side *s = &t->side[side];
    const pt_pipeline *p = t->pipe;
    for (size_t i = from; i < p->n; i++) {
        const pt_plugin_instance *pi = p->v[i];
        pt_plugin_result (*cb)(pt_txn *, const void *, void *, pt_body *) =
            side == PT_SIDE_REQUEST ? pi->type->on_request_body : pi->type->on_response_body;
        if (!cb) continue;
        if (s->slots && s->slots[i].len) {
            s->buffered -= s->slots[i].len;
            body_prepend_slot(b, &s->slots[i]);
        }
        if (!pt_body_len(b) && !b->last) return PT_PLUGIN_CONTINUE; /* nothing to pass on */
        s->running = true;
        pt_plugin_result r = cb(t, pi->conf, txn_plugin_state(t, i), b);
        s->running = false;
        if (r != PT_PLUGIN_PAUSE) s->early_resume = false;
        switch (r) {
        case PT_PLUGIN_PAUSE:
            s->idx = i;
            body_release(&s->held);
            body_own(b);
            s->held = *b;
            *b = (pt_body){0};
            txn_side_paused(t, side, true);
            return PT_PLUGIN_PAUSE;
        case PT_PLUGIN_RESPOND:
            s->idx = i;
            return PT_PLUGIN_RESPOND;
        case PT_PLUGIN_BUFFER:
            if (b->last) break; /* the last call cannot wait for more */
            if (!s->slots) s->slots = pt_arena_calloc(t->a, p->n * sizeof(*s->slots));
            s->buffered += pt_body_len(b);
            body_move_to(b, &s->slots[i]);
            if (t->max_buffered && s->buffered > t->max_buffered) return BODY_OVER_LIMIT;
            return PT_PLUGIN_CONTINUE;
        default:
            break;
        }
    }
    return PT_PLUGIN_CONTINUE;
}

/* ---------------------------------------------------------------- request */

/* Sends request bytes that passed the plugins to the upstream. */
static void forward_request(pt_txn *t, const char *data, size_t len, bool last)
{
    if (last) t->req_last_passed = true; /* a retried exchange sends the end at once */
    if (t->req_hold) {
        /* pt_txn_hold_request_head: keep what passed; the upstream is
         * contacted with the whole body and its exact length */
        if (len) pt_buf_append(&t->req_held, data, len);
        if (t->max_buffered && t->req_held.len > t->max_buffered) {
            t->req_hold = false;
            txn_fail_request(t, 413, "request body exceeds what the route's plugins may buffer");
            return;
        }
        if (!last) return;
        t->req_hold = false;
        t->req->content_length = (int64_t)t->req_held.len;
        txn_connect_upstream(t);
        return;
    }
    if (!txn_retry_pass_body(t, data, len)) return; /* kept for the next attempt, or dropped */
    void *x = t->uc;
    bool more = len ? t->uops->send_body(t->uc, data, len) : true;
    /* failed inside send_body: over, or a retry that already sent these bytes */
    if (t->finished || t->uc != x) return;
    if (last) {
        t->req_end_sent = true;
        t->uops->send_end(t->uc, txn_trailers_lines(t, PT_SIDE_REQUEST));
        if (!t->finished) t->ops->want_body(t->stream, false);
    } else if (!more) {
        t->ops->want_body(t->stream, false);
    }
}

/* What a request-body run decided. */
static void request_run_done(pt_txn *t, int r, pt_body *b)
{
    switch (r) {
    case PT_PLUGIN_PAUSE:
        if (!t->finished) t->ops->want_body(t->stream, false);
        return;
    case PT_PLUGIN_RESPOND:
        body_release(b);
        txn_request_side_responded(t);
        return;
    case BODY_OVER_LIMIT:
        body_release(b);
        txn_fail_request(t, 413, "request body exceeds what the route's plugins may buffer");
        return;
    default:
        forward_request(t, pt_body_data(b), pt_body_len(b), b->last);
        body_release(b);
    }
}

void txn_request_chunk(pt_txn *t, const char *data, size_t len, bool last)
{
    txn_side *s = &t->side[PT_SIDE_REQUEST];
    if (t->req_responded) return; /* a local response replaced the exchange */
    if (s->paused || s->queued_any) {
        /* the codec had bytes in flight when the side paused: keep them */
        pt_buf_append(&s->queued, data, len);
        s->queued_any = true;
        s->queued_last = last;
        return;
    }
    if (!pipe_has_body_cbs(t, PT_SIDE_REQUEST)) {
        forward_request(t, data, len, last);
        if (!last && !t->finished) txn_splice_try(t, PT_SIDE_REQUEST); /* the rest may skip user space */
        return;
    }
    pt_body b = {.p = data, .n = len, .last = last};
    request_run_done(t, run_body(t, PT_SIDE_REQUEST, 0, &b), &b);
}

/* ---------------------------------------------------------------- response */

/* Sends response bytes that passed the plugins to the codec; `last` ends
 * the response (with the response trailers) and the transaction. */
static void forward_response(pt_txn *t, const char *data, size_t len, bool last)
{
    if (t->head_waiting) {
        if (!len && !last) return; /* a plugin kept the bytes: nothing passed yet */
        /* A held head goes out with the first bytes that passed every
         * plugin; when they are the whole body its length is known. */
        t->head_waiting = false;
        if (last && t->res.content_length < 0) t->res.content_length = (int64_t)len;
        t->ops->send_head(t->stream, &t->res);
        if (t->finished) return;
    }
    if (len && t->res.has_body) {
        t->bytes_out += len;
        if (!t->ops->send_body(t->stream, data, len)) {
            t->ds_full = true;
            if (t->uc) {
                t->up_read_paused_by_ds = true;
                t->uops->pause_read(t->uc, true);
            }
        }
    }
    if (last && !t->finished) {
        if (!t->up_end_us) t->up_end_us = pt_loop_wall_us(t->w->loop);
        t->resp_done = true;
        t->ops->send_end(t->stream, txn_trailers_lines(t, PT_SIDE_RESPONSE));
        txn_finish(t);
    }
}

static void response_run_done(pt_txn *t, int r, pt_body *b)
{
    switch (r) {
    case PT_PLUGIN_PAUSE:
        if (t->uc) t->uops->pause_read(t->uc, true);
        return;
    case PT_PLUGIN_RESPOND: /* too late to answer unless the head is held */
    case BODY_OVER_LIMIT:
        body_release(b);
        if (t->head_waiting) {
            if (r == BODY_OVER_LIMIT)
                pt_txn_respond_problem(t, 502, "response body exceeds what the route's plugins may buffer");
            txn_replace_held_response(t);
            return;
        }
        txn_abort_response(t);
        return;
    default: {
        bool last = b->last;
        forward_response(t, pt_body_data(b), pt_body_len(b), last);
        body_release(b);
    }
    }
}

void txn_response_chunk(pt_txn *t, const char *data, size_t len, bool last)
{
    txn_side *s = &t->side[PT_SIDE_RESPONSE];
    if (s->paused || s->queued_any) {
        pt_buf_append(&s->queued, data, len);
        s->queued_any = true;
        s->queued_last = last;
        if (t->uc) t->uops->pause_read(t->uc, true);
        return;
    }
    if (!pipe_has_body_cbs(t, PT_SIDE_RESPONSE)) {
        forward_response(t, data, len, last);
        return;
    }
    pt_body b = {.p = data, .n = len, .last = last};
    response_run_done(t, run_body(t, PT_SIDE_RESPONSE, 0, &b), &b);
}

/* ------------------------------------------------------------------ resume */

/* After a body pause ended and its held bytes went on: the bytes queued
 * meanwhile run from the first plugin, then reading starts again. */
static void drain_queued(pt_txn *t, pt_side side)
{
    txn_side *s = &t->side[side];
    while (!t->finished && !s->paused && s->queued_any) {
        pt_buf q = s->queued;
        bool last = s->queued_last;
        s->queued = (pt_buf){0};
        s->queued_any = false;
        if (side == PT_SIDE_REQUEST) txn_request_chunk(t, pt_buf_head(&q), q.len, last);
        else txn_response_chunk(t, pt_buf_head(&q), q.len, last);
        pt_buf_release(&q);
    }
    if (t->finished || s->paused) return;
    if (side == PT_SIDE_REQUEST) {
        /* only into a ready exchange (txn_retry.c: not while connecting or between attempts) */
        if (!t->req_body_done && t->uc && t->retry.sending && !t->resp_done) t->ops->want_body(t->stream, true);
    } else if (t->uc && !t->up_read_paused_by_ds) {
        t->uops->pause_read(t->uc, false);
    } else {
        txn_generator_kick(t);
    }
}

void txn_body_resume(pt_txn *t, pt_side side, pt_plugin_result r)
{
    txn_side *s = &t->side[side];
    pt_body b = s->held;
    s->held = (pt_body){0};
    int rr = r == PT_PLUGIN_RESPOND ? PT_PLUGIN_RESPOND : run_body(t, side, s->idx + 1, &b);
    if (side == PT_SIDE_REQUEST) request_run_done(t, rr, &b);
    else response_run_done(t, rr, &b);
    drain_queued(t, side);
}
