/* txn_retry.h — retries and deadlines of a transaction (txn_retry.c; docs/traffic.md
 * "Retries and deadlines"). Private to src/proxy/txn*.c, like txn_int.h,
 * which embeds a txn_retry in every pt_txn.
 *
 * What it decides: whether a failed upstream attempt (a connect failure, a
 * reset or a timeout before any response byte, a listed 5xx head) is tried
 * again — on the route's policy, the method, the request body kept so far,
 * attempts left, the route's deadline and the upstream's retry budget —
 * and when: at once, or after a full-jitter exponential backoff on a loop
 * timer. A retry happens only before the response phase starts, so never
 * after a response byte reached the client. It also keeps the request body
 * bytes that went (or go) upstream, up to the policy's body_buffer, so that
 * a retry can send them again; and it runs the per-try timeout and the
 * route's deadline (`timeout`). */
#ifndef PT_PROXY_TXN_RETRY_H
#define PT_PROXY_TXN_RETRY_H

#include "core/buf.h"
#include "core/loop.h"
#include "proxy/txn.h"
#include "upstream/h1_client.h"

typedef struct {
    pt_timer timer;           /* per-try timeout while an attempt waits for its head; backoff between attempts */
    pt_timer deadline;        /* the route's `timeout` */
    int tries;                /* attempts under the policy (stale-connection re-sends not counted) */
    bool waiting;             /* backing off: no exchange until the timer fires */
    bool sending;             /* the current exchange is ready: body bytes go to it */
    bool discarding;          /* reading a retried 5xx to its end (never forwarded) */
    bool head_accepted;       /* a head went to the response phase: no retry any more */
    bool budget_active;       /* counted in the upstream's active requests */
    bool budget_retry;        /* counted in its retries in flight */
    bool stale;               /* the next attempt re-sends after a stale pooled connection */
    bool keep_lost;           /* `keep` no longer holds every request body byte that passed the plugins */
    uint64_t passed;          /* request body bytes that passed the plugins */
    uint64_t discarded;       /* body bytes of the retried 5xx read so far */
    pt_buf keep;              /* those bytes, for a re-send (bounded by body_buffer) */
} txn_retry;

/* After routing: arms the route's deadline (from the request's arrival). */
void txn_retry_route_start(pt_txn *t);
/* Before an attempt picks its target: counts the attempt (and the request
 * as active on its upstream, once). Returns the exclude mask for the
 * balancer: the targets tried already, or (every target tried) only the
 * last one. */
uint64_t txn_retry_next_attempt(pt_txn *t);
/* An exchange was opened for the attempt: starts its per-try timer. */
void txn_retry_attempt_started(pt_txn *t);
/* The exchange is ready: the kept body goes again (a retry). Returns
 * false when the exchange is above its watermark (do not ask for more). */
bool txn_retry_exchange_ready(pt_txn *t);
/* A connect failed at once or the exchange failed (already closed, t->uc
 * NULL): true when a retry is under way (now or after a backoff). */
bool txn_retry_after_error(pt_txn *t, pt_uerr err, bool reused, bool nothing_received);
/* A final upstream head: true when it is a listed 5xx that will be retried;
 * its body is then read and dropped (txn_retry_discard_*), never forwarded
 * and never seen by a plugin. Otherwise the attempt is over: its per-try
 * timer and the route's deadline stop. */
bool txn_retry_on_head(pt_txn *t, const pt_response *res);
/* Body bytes of a response being discarded; its end (`clean`: complete, the
 * connection may be pooled) or failure: the retry goes on. */
void txn_retry_discard_body(pt_txn *t, size_t len);
void txn_retry_discard_end(pt_txn *t, bool clean);
/* Request body bytes that passed the plugins: true when they go to the
 * exchange now; false when they were kept for the next attempt (none is
 * ready) or dropped (the upstream part is over). */
bool txn_retry_pass_body(pt_txn *t, const char *data, size_t len);
/* From txn_finish: timers, kept bytes, budget counters. */
void txn_retry_finish(pt_txn *t);

#endif
