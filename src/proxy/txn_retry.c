/* txn_retry.c — retries and deadlines of a transaction (see txn_retry.h and
 * docs/traffic.md "Retries and deadlines").
 *
 * An attempt ends in one of three ways before the response phase: a
 * failure (connect, reset, timeout), a listed 5xx head, or an accepted head.
 * On the first two, retry_failure() checks the policy; a granted retry goes
 * on after a backoff timer (configured policies) or at once (the built-in
 * rule and stale pooled connections, as before policies existed). Once a
 * head is accepted, nothing here runs again for the request. */
#include <stdatomic.h>

#include "obs/gateway_metrics.h"
#include "proxy/txn_int.h"

/* A retried 5xx's body is read to its end so that the connection can go
 * back to its pool; a longer one is cut (the connection is closed). */
#define DISCARD_MAX (64u * 1024)

static void connect_now(pt_txn *t);

static const pt_retry_policy *policy(const pt_txn *t) { return &t->route->retry; }

/* Attempts allowed in all: the policy's, or once per target (built-in). */
static int max_tries(const pt_txn *t)
{
    const pt_retry_policy *p = policy(t);
    if (p->configured) return (int)p->attempts;
    size_t n = t->ups->conf->ntargets;
    return n < PT_EXCHANGE_MAX_ATTEMPTS ? (int)n : PT_EXCHANGE_MAX_ATTEMPTS;
}

/* Every request body byte sent upstream so far can be sent again. */
static bool body_ok(const pt_txn *t) { return !t->req->has_body || !t->retry.keep_lost; }

static uint64_t elapsed_ms(const pt_txn *t) { return (pt_loop_wall_us(t->w->loop) - t->start_us) / 1000; }

static bool deadline_passed(const pt_txn *t)
{
    return t->route->timeout_ms && elapsed_ms(t) >= t->route->timeout_ms;
}

/* A small per-thread generator for the backoff jitter (xorshift64*). */
static uint64_t jitter_random(pt_txn *t)
{
    static _Thread_local uint64_t s;
    if (!s) s = (pt_loop_wall_us(t->w->loop) ^ (uint64_t)(uintptr_t)&s) | 1;
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
}

/* ------------------------------------------------------------------ budget */

static pt_retry_counters *counters(const pt_txn *t)
{
    return t->gen->retry_counts ? &t->gen->retry_counts[t->ups->conf->index] : NULL;
}

/* Takes a place for one retry in flight, if the upstream's budget has one:
 * at most max(min_retries, ratio x active requests). The built-in rule is
 * not budgeted. */
static bool budget_take(pt_txn *t)
{
    pt_retry_counters *c = counters(t);
    if (!policy(t)->configured || !c) return true;
    const pt_retry_budget_conf *b = &t->ups->conf->retry_budget;
    long allowed = (long)(b->ratio * (double)atomic_load_explicit(&c->active, memory_order_relaxed));
    if (allowed < (long)b->min_retries) allowed = (long)b->min_retries;
    if (atomic_fetch_add_explicit(&c->retries, 1, memory_order_relaxed) >= allowed) {
        atomic_fetch_sub_explicit(&c->retries, 1, memory_order_relaxed);
        pt_metrics_retry_budget_exhausted(t->w, t->ups->conf);
        return false;
    }
    t->retry.budget_retry = true;
    return true;
}

static void budget_release(pt_txn *t)
{
    pt_retry_counters *c = counters(t);
    if (!t->retry.budget_retry || !c) return;
    t->retry.budget_retry = false;
    atomic_fetch_sub_explicit(&c->retries, 1, memory_order_relaxed);
}

/* ---------------------------------------------------------------- deadline */

static void deadline_cb(pt_loop *loop, pt_timer *tm)
{
    pt_txn *t = tm->data;
    if (t->finished || t->resp_started || t->req_responded) return;
    txn_enter(t);
    pt_timer_stop(loop, &t->retry.timer);
    t->retry.waiting = t->retry.discarding = false;
    t->req_body_done = true; /* as for the gRPC deadline: nothing more goes upstream */
    txn_fail_request(t, 504, "the route's timeout passed before the upstream answered");
    txn_leave(t);
}

void txn_retry_route_start(pt_txn *t)
{
    uint64_t ms = t->route->timeout_ms;
    if (!ms) return;
    uint64_t el = elapsed_ms(t);
    pt_timer_start(t->w->loop, &t->retry.deadline, ms > el ? ms - el : 0, deadline_cb, t);
}

/* ---------------------------------------------------------------- attempts */

uint64_t txn_retry_next_attempt(pt_txn *t)
{
    txn_retry *r = &t->retry;
    if (r->stale) r->stale = false; /* a re-send, not a new try */
    else r->tries++;
    pt_retry_counters *c = counters(t);
    if (!r->budget_active && policy(t)->configured && c) {
        r->budget_active = true;
        atomic_fetch_add_explicit(&c->active, 1, memory_order_relaxed);
    }
    size_t n = t->ups->conf->ntargets;
    uint64_t all = n >= 64 ? ~0ull : (1ull << n) - 1;
    if (t->tried && (t->tried & all) == all) {
        /* every target had its turn: any but the last one */
        size_t last = t->target ? (size_t)(t->target - t->ups->conf->targets) : 0;
        t->tried = n > 1 && last < 64 ? 1ull << last : 0;
    }
    return t->tried;
}

static void try_timeout_cb(pt_loop *loop, pt_timer *tm);

void txn_retry_attempt_started(pt_txn *t)
{
    t->retry.sending = false;
    const pt_retry_policy *p = policy(t);
    if (p->configured && p->per_try_timeout_ms)
        pt_timer_start(t->w->loop, &t->retry.timer, p->per_try_timeout_ms, try_timeout_cb, t);
}

bool txn_retry_exchange_ready(pt_txn *t)
{
    txn_retry *r = &t->retry;
    r->sending = true;
    if (!t->req->has_body || !r->keep.len) return true;
    /* a retry (or bytes that passed while connecting): send them first */
    return t->uops->send_body(t->uc, pt_buf_head(&r->keep), r->keep.len);
}

/* The attempt is over: its per-try timer stops and its budget place goes back. */
static void attempt_over(pt_txn *t)
{
    if (!t->retry.waiting) pt_timer_stop(t->w->loop, &t->retry.timer);
    t->retry.sending = false;
    budget_release(t);
}

static void backoff_cb(pt_loop *loop, pt_timer *tm)
{
    pt_txn *t = tm->data;
    if (t->finished) return;
    txn_enter(t);
    t->retry.waiting = false;
    if (!t->req_responded && !t->resp_started) connect_now(t);
    txn_leave(t);
}

/* Starts the next attempt: after a full-jitter backoff for a configured
 * policy (a random wait in [0, min(max, base x 2^(retry-1))]), at once for
 * the built-in rule and stale connections. The client's body stops until
 * the next exchange is ready; the request is paused, nothing blocks. */
static void go(pt_txn *t, bool backoff)
{
    txn_retry *r = &t->retry;
    t->req_end_sent = false;
    if (t->req->has_body && !t->req_body_done) t->ops->want_body(t->stream, false);
    const pt_retry_policy *p = policy(t);
    if (!backoff || !p->configured) {
        connect_now(t);
        return;
    }
    int shift = r->tries > 1 ? r->tries - 1 : 0;
    uint64_t cap = shift < 32 ? p->backoff_base_ms << shift : p->backoff_max_ms;
    if (cap > p->backoff_max_ms) cap = p->backoff_max_ms;
    uint64_t ms = cap ? jitter_random(t) % (cap + 1) : 0;
    r->waiting = true;
    pt_timer_start(t->w->loop, &r->timer, ms, backoff_cb, t);
}

static void connect_now(pt_txn *t) { txn_connect_upstream(t); }

/* Whether a failure of kind `reason` (`listed`: in the policy's `on`) is
 * retried; counts it when it is. */
static bool decide(pt_txn *t, pt_retry_reason reason, bool listed)
{
    if (!listed || t->retry.head_accepted || t->resp_started || t->req_responded || t->finished || t->tun)
        return false;
    if (!policy(t)->all_methods && !pt_method_idempotent(t->req->method)) return false;
    if (!body_ok(t) || t->retry.tries >= max_tries(t) || deadline_passed(t)) return false;
    if (!budget_take(t)) return false;
    pt_metrics_upstream_retry(t->w, t->ups->conf, reason);
    return true;
}

static bool listed_on(const pt_txn *t, uint32_t bit)
{
    const pt_retry_policy *p = policy(t);
    return (p->configured ? p->on : PT_RETRY_ON_CONNECT) & bit;
}

bool txn_retry_after_error(pt_txn *t, pt_uerr err, bool reused, bool nothing_received)
{
    attempt_over(t);
    if (t->retry.head_accepted || t->resp_started || t->req_responded || t->finished || !body_ok(t)) return false;
    /* A pooled keep-alive connection the upstream closed as the request
     * went out: re-sent whatever the method (nothing reached the upstream's
     * application), anywhere, without backoff or budget. */
    if (reused && err == PT_UERR_CLOSED && nothing_received && t->attempts < PT_EXCHANGE_MAX_ATTEMPTS) {
        pt_metrics_upstream_retry(t->w, t->ups->conf, PT_RETRY_REASON_STALE);
        t->retry.stale = true;
        t->tried = 0;
        go(t, false);
        return true;
    }
    pt_retry_reason reason;
    bool listed;
    switch (err) {
    case PT_UERR_CONNECT:
    case PT_UERR_CONNECT_TIMEOUT:
        reason = PT_RETRY_REASON_CONNECT;
        listed = listed_on(t, PT_RETRY_ON_CONNECT);
        break;
    case PT_UERR_CLOSED:
        reason = PT_RETRY_REASON_RESET;
        listed = nothing_received && listed_on(t, PT_RETRY_ON_RESET);
        break;
    case PT_UERR_READ_TIMEOUT:
        reason = PT_RETRY_REASON_TIMEOUT;
        listed = nothing_received && listed_on(t, PT_RETRY_ON_TIMEOUT);
        break;
    default:
        return false; /* an invalid response, a TLS failure, a write timeout */
    }
    if (!decide(t, reason, listed)) return false;
    go(t, true);
    return true;
}

/* ---------------------------------------------------------- per-try timeout */

static void try_timeout_cb(pt_loop *loop, pt_timer *tm)
{
    pt_txn *t = tm->data;
    if (t->finished) return;
    txn_enter(t);
    if (t->retry.discarding) {
        txn_retry_discard_end(t, false);
        txn_leave(t);
        return;
    }
    txn_splice_abandon(t); /* a request body being spliced to this exchange */
    void *c = t->uc;
    t->uc = NULL;
    if (c) t->uops->close(c);
    t->up_end_us = pt_loop_wall_us(loop);
    pt_lb_result(t->ups->conf->lb, &t->lb, PT_LB_FAILURE, txn_lb_now(t)); /* no answer in time */
    pt_lb_end(t->ups->conf->lb, &t->lb, txn_lb_now(t));
    txn_trace_attempt_end(t, "timeout");
    attempt_over(t);
    if (decide(t, PT_RETRY_REASON_TIMEOUT, listed_on(t, PT_RETRY_ON_TIMEOUT)))
        go(t, true);
    else
        txn_upstream_failed(t, 504, "the upstream did not answer within the route's per_try_timeout");
    txn_leave(t);
}

/* ------------------------------------------------------------ retried 5xx */

bool txn_retry_on_head(pt_txn *t, const pt_response *res)
{
    const pt_retry_policy *p = policy(t);
    unsigned bit = (unsigned)(res->status - 500);
    bool listed = p->configured && res->status >= 500 && res->status <= 599 &&
                  ((p->on_status[bit / 64] >> (bit % 64)) & 1);
    budget_release(t); /* this attempt's place; a retry takes a new one */
    if (!listed || !decide(t, PT_RETRY_REASON_STATUS, true)) {
        /* The head goes to the response phase: no retry from now on; the
         * body keeps streaming to this exchange, no longer kept. */
        t->retry.head_accepted = true;
        pt_timer_stop(t->w->loop, &t->retry.timer);
        pt_timer_stop(t->w->loop, &t->retry.deadline);
        t->retry.keep_lost = true;
        pt_buf_release(&t->retry.keep);
        return false;
    }
    /* Read to the end and dropped (the per-try timer, if any, still
     * bounds it); the client's body waits for the next attempt. */
    t->retry.sending = false;
    t->retry.discarding = true;
    t->retry.discarded = 0;
    if (t->req->has_body && !t->req_body_done) t->ops->want_body(t->stream, false);
    return true;
}

void txn_retry_discard_body(pt_txn *t, size_t len)
{
    t->retry.discarded += len;
    if (t->retry.discarded > DISCARD_MAX) txn_retry_discard_end(t, false);
}

void txn_retry_discard_end(pt_txn *t, bool clean)
{
    t->retry.discarding = false;
    pt_timer_stop(t->w->loop, &t->retry.timer);
    void *c = t->uc;
    t->uc = NULL;
    t->up_end_us = pt_loop_wall_us(t->w->loop);
    /* pooled only after a complete exchange both ways */
    if (c) {
        if (clean && t->req_end_sent) t->uops->release(c);
        else t->uops->close(c);
    }
    go(t, true);
}

/* ---------------------------------------------------------- request body */

bool txn_retry_pass_body(pt_txn *t, const char *data, size_t len)
{
    txn_retry *r = &t->retry;
    r->passed += len;
    if (t->uc && r->sending) {
        if (!r->keep_lost && len) {
            uint64_t bound = t->route ? t->route->retry.body_buffer : 0;
            if (r->keep.len + len <= bound) {
                pt_buf_append(&r->keep, data, len);
            } else {
                r->keep_lost = true; /* from now on, no retry once this attempt failed */
                pt_buf_release(&r->keep);
            }
        }
        return true;
    }
    if (!t->uc && !r->waiting) return false; /* the upstream part is over: dropped */
    /* Between attempts (connecting, backing off, discarding a 5xx): these
     * bytes go to the next exchange when it is ready. Only plugins release
     * bytes now (the codec was told to stop), so they are bounded by what
     * the plugins held. */
    if (!r->keep_lost && len) pt_buf_append(&r->keep, data, len);
    return false;
}

/* ------------------------------------------------------------------ finish */

void txn_retry_finish(pt_txn *t)
{
    txn_retry *r = &t->retry;
    pt_timer_stop(t->w->loop, &r->timer);
    pt_timer_stop(t->w->loop, &r->deadline);
    r->waiting = r->discarding = false;
    pt_buf_release(&r->keep);
    if (!t->ups) return;
    budget_release(t);
    pt_retry_counters *c = counters(t);
    if (r->budget_active && c) {
        r->budget_active = false;
        atomic_fetch_sub_explicit(&c->active, 1, memory_order_relaxed);
    }
}
