/* body_pace.h — slow-body defence for request bodies, shared by the HTTP/1
 * connection and the HTTP/2 stream codecs. Pure arithmetic on the loop's
 * millisecond clock; the codecs own the timer.
 *
 * Only time during which Portico *wants* the body counts ("wanted time"):
 * while the txn has paused the body (upstream backpressure, a plugin that
 * holds it, routing and connecting before the first want_body(true)) the
 * clock stands still, so a client is never blamed for Portico's own slowness.
 *
 * Two rules, either one makes the body late (answered 408):
 *   gap   no body byte for `gap_ms` (timeouts.body) of wanted time;
 *   rate  with min_rate > 0 (limits.min_body_rate, bytes per second): the
 *         wanted time may not exceed gap_ms + bytes * 1000 / min_rate, i.e.
 *         after a grace period of timeouts.body the body must have arrived at
 *         min_rate on average. Every byte buys 1/min_rate s: a body of N
 *         bytes has an absolute (wanted-time) deadline of
 *         timeouts.body + N / min_rate, so a trickle cannot hold a
 *         connection or stream forever.
 * While the body is wanted, both deadlines only move later as bytes arrive,
 * so a timer armed at pt_body_pace_deadline() may be left alone on
 * progress and re-armed lazily when it fires early. */
#ifndef PT_HTTP_BODY_PACE_H
#define PT_HTTP_BODY_PACE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    uint64_t gap_ms;    /* this body's limits: timeouts.body / limits.min_body_rate, */
    uint64_t min_rate;  /*   or the route's body_timeout / min_body_rate (pt_txn_body_limits) */
    uint64_t wanted_ms; /* wanted time of the spans already closed */
    uint64_t since;     /* start of the open span (valid while running) */
    uint64_t last;      /* last progress, or the start of the open span */
    uint64_t bytes;     /* body bytes received from the client so far */
    bool running;       /* Portico wants the body now */
} pt_body_pace;

/* Opens (run) or closes (!run) a wanted span at `now`; idempotent. A new
 * span restarts the gap rule: the client may have been stopped by us. */
static inline void pt_body_pace_run(pt_body_pace *p, bool run, uint64_t now)
{
    if (run == p->running) return;
    if (run) {
        p->since = now;
        p->last = now;
    } else if (now > p->since) {
        p->wanted_ms += now - p->since;
    }
    p->running = run;
}

/* `n` body bytes arrived at `now` (also counted while not wanted: bytes the
 * client sent ahead are progress too). */
static inline void pt_body_pace_progress(pt_body_pace *p, uint64_t n, uint64_t now)
{
    p->bytes += n;
    if (n && p->running) p->last = now;
}

/* bytes * 1000 / rate without overflow (saturating). */
static inline uint64_t pt_body_pace_credit_ms(uint64_t bytes, uint64_t rate)
{
    uint64_t whole = bytes / rate, part = (bytes % rate) * 1000 / rate;
    if (whole > (UINT64_MAX - part) / 1000) return UINT64_MAX;
    return whole * 1000 + part;
}

/* The loop time at which the body becomes late while it stays wanted and no
 * byte arrives (the earlier of the gap and rate deadlines). Only meaningful
 * while running. */
static inline uint64_t pt_body_pace_deadline(const pt_body_pace *p, uint64_t gap_ms, uint64_t min_rate)
{
    uint64_t d = p->last + gap_ms;
    if (min_rate) {
        uint64_t credit = pt_body_pace_credit_ms(p->bytes, min_rate);
        uint64_t allowed = credit > UINT64_MAX - gap_ms ? UINT64_MAX : gap_ms + credit;
        uint64_t left = allowed > p->wanted_ms ? allowed - p->wanted_ms : 0;
        uint64_t rd = left > UINT64_MAX - p->since ? UINT64_MAX : p->since + left;
        if (rd < d) d = rd;
    }
    return d;
}

/* At `now` (past the deadline): true if the gap rule fired, false if only
 * the rate rule did (for the problem detail). */
static inline bool pt_body_pace_late_by_gap(const pt_body_pace *p, uint64_t gap_ms, uint64_t now)
{
    return now >= p->last + gap_ms;
}

#define PT_BODY_LATE_GAP "the request body was not received in time"
#define PT_BODY_LATE_RATE "the request body arrived slower than limits.min_body_rate"

#endif
