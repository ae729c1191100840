/* txn_int.h — the transaction's private state, shared by the files that
 * implement it (txn.c: lifecycle and header phases; txn_body.c: bodies and
 * trailers; txn_upstream.c: the upstream exchange; txn_retry.c: its retries
 * and deadlines; txn_forward.c: client
 * address and forwarding headers; txn_tunnel.c: upgrades and tunnels). Nothing outside src/proxy/txn*.c
 * includes this.
 *
 * Re-entrancy rule: every way into a txn (a codec call, an upstream event, a
 * plugin resume, a timer) goes through txn_enter()/txn_leave(). finish()
 * may run deep inside such a call; the codec is told (ops->finished, which
 * may free the arena holding the txn) only when the outermost call leaves,
 * so no caller ever touches a freed txn. */
#ifndef PT_PROXY_TXN_INT_H
#define PT_PROXY_TXN_INT_H

#include "core/buf.h"
#include "core/loop.h"
#include "proxy/txn.h"
#include "proxy/txn_retry.h"
#include "server/worker.h"
#include "upstream/balance.h"
#include "upstream/exchange.h"

/* Bytes at one plugin position: borrowed from the caller (p, n) until a
 * plugin changes them, then owned (own). */
struct pt_body {
    const char *p;
    size_t n;
    pt_buf own;
    bool owned;
    bool last;
};

/* One direction of the pipeline: its cursor, pause and held data. */
typedef struct {
    size_t idx;               /* header phase: the next (or paused) plugin; body pause: the paused plugin */
    bool running;             /* a callback of this side is on the stack */
    bool paused;
    bool paused_in_body;
    bool early_resume;        /* pt_txn_resume() came while its callback was still running */
    pt_plugin_result early_result;
    pt_defer resume_defer;
    pt_plugin_result resume_result;
    pt_body held;             /* body at the paused plugin */
    pt_buf queued;            /* bytes that arrived while paused, not yet seen by any plugin */
    bool queued_any;
    bool queued_last;
    pt_buf *slots;            /* [pipe->n] bytes kept by PT_PLUGIN_BUFFER, allocated on first use */
    uint64_t buffered;        /* bytes in slots */
    pt_headers trailers;      /* filtered trailer fields (plugins may edit them) */
} txn_side;

/* The request's trace (txn_trace.c, docs/observability.md "Tracing"). */
typedef struct {
    bool on;                  /* tracing is enabled for this request's generation */
    bool sampled;             /* spans are recorded and exported */
    bool has_parent;          /* a trusted, valid traceparent came in */
    uint8_t trace_id[16];
    uint8_t span_id[8];       /* the server span */
    uint8_t parent_id[8];     /* the caller's span (has_parent) */
    pt_str tracestate;        /* to propagate (validated), empty if none */
    pt_str trace_hex;         /* trace_id as 32 hex digits (logs, problems) */
    /* the current upstream attempt's client span */
    bool att_open;
    uint8_t att_id[8];
    uint64_t att_start_ns;
    int att_status;           /* its response status, 0 none yet */
    const char *att_error;    /* error.type of a failed attempt, NULL none */
    const pt_target_conf *att_target;
    int att_resend;           /* http.request.resend_count */
} txn_trace;

typedef struct txn_tunnel txn_tunnel; /* txn_tunnel.c */
typedef struct txn_identity txn_identity; /* txn_identity.c */
struct txn_splice; /* txn_splice.c */

struct pt_txn_ref {
    pt_txn *txn; /* NULL once the request is over */
    uint32_t refs;
};

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
    unsigned depth;           /* nested entries (see the re-entrancy rule) */

    pt_request *req;
    pt_str norm_path;
    pt_route_match match;
    const pt_route_conf *route;
    const pt_pipeline *pipe;
    char *states;
    pt_str request_id;

    txn_side side[2];         /* [PT_SIDE_REQUEST], [PT_SIDE_RESPONSE] */

    /* the response being sent */
    pt_response res;
    bool local;               /* res is a local response with local_body */
    bool problem;             /* local_body is a problem+json built at emit time */
    const char *problem_detail;
    pt_str local_body;
    const pt_generator *genr; /* the local response's body comes from this generator */
    void *genr_data;
    bool genr_active;         /* its head went out: it is being pulled */
    bool genr_blocked;        /* it must wait for the next proceed */
    bool genr_stopped;        /* stop() was called */
    pt_defer proceed_defer;
    bool ds_full;             /* the codec's output is above its high watermark */

    /* upstream */
    pt_upstream_rt *ups;
    const pt_target_conf *target;
    uint64_t tried;
    int attempts;
    void *uc;                 /* the upstream exchange (h1 connection or h2 stream) */
    const pt_upstream_exchange_ops *uops;
    pt_str upstream_target;   /* path[?query] sent upstream */
    pt_str upstream_path;     /* set by a plugin (pt_txn_set_upstream_path); null: the route's */
    uint64_t up_start_us;
    uint64_t up_head_us;
    uint64_t up_end_us;
    txn_retry retry;          /* retries, per-try timeout, route deadline (txn_retry.c) */
    pt_lb_attempt lb;         /* the current attempt as the balancer counts it (upstream/balance.h) */

    /* body and lifecycle */
    uint64_t max_body;
    uint64_t max_buffered;    /* PT_PLUGIN_BUFFER cap per side */
    uint64_t body_received;
    bool req_body_done;       /* the client's body is complete (or will never be read) */
    bool req_end_sent;        /* the upstream got the whole request (head and body end) */
    bool req_last_passed;     /* the body's end got through the request-body plugins */
    bool req_responded;       /* the request side answered locally: later body bytes are dropped */
    const char *responder;    /* pt_txn_stats.responder */
    pt_headers redact_query;  /* query parameter names the access log masks (pt_txn_redact_query_param) */
    bool req_hold;            /* pt_txn_hold_request_head: the upstream waits for the whole body */
    pt_buf req_held;          /* the request body that passed the plugins while held */
    bool forwarded_headers_done;
    pt_timer deadline;        /* grpc-timeout */
    int pending_error;        /* routing/limit error to answer after the request phase */
    const char *pending_detail;
    uint8_t resp_replacements; /* responses replaced by response-header plugins */
    bool resp_started;
    bool head_hold;           /* a response-header plugin asked to hold the head (pt_txn_hold_response_head) */
    bool head_waiting;        /* the head is held: it goes out with the first body bytes that pass */
    bool resp_done;
    bool aborted;             /* the response was cut after its head */
    bool upstream_failed;     /* the upstream exchange failed for good */
    bool finished;
    bool told_codec;          /* ops->finished() called */
    bool up_read_paused_by_ds;
    uint64_t bytes_in;
    uint64_t bytes_out;
    int status;
    pt_txn_ref *ref;
    txn_tunnel *tun;          /* an upgrade asked for and kept (txn_tunnel.c), else NULL */
    pt_http_call *subcalls;   /* sub-requests still running (cancelled at finish) */
    txn_identity *id;         /* consumer and authorization facts (txn_identity.c), NULL until used */
    txn_trace trace;          /* W3C trace context and spans (txn_trace.c) */
    struct txn_splice *spl;   /* bodies moved with splice(2) (txn_splice.c), NULL until one starts */
};

/* ---- txn.c ---- */
/* The outermost leave of a finished txn: tell the codec. */
void txn_leave_finished(pt_txn *t);
static inline void txn_enter(pt_txn *t) { t->depth++; }
static inline void txn_leave(pt_txn *t)
{
    PT_ASSERT(t->depth > 0);
    if (--t->depth == 0 && t->finished) txn_leave_finished(t);
}
void *txn_plugin_state(pt_txn *t, size_t i);
const pt_listener_conf *txn_listener(const pt_txn *t);
/* Answers `status` with problem+json, or aborts a started response. */
void txn_respond_problem(pt_txn *t, int status, const char *detail);
/* Runs the response-header phase from the start on t->res (a new upstream
 * head or a local response), cancelling a pause left from an earlier one. */
void txn_start_response_phase(pt_txn *t);
/* The request side decided on a local response (t->res): drop the upstream
 * exchange and send it, or abort a response that already started. */
void txn_request_side_responded(pt_txn *t);
/* The balancer's clock for this request's attempts (txn_upstream.c). */
uint64_t txn_lb_now(const pt_txn *t);
/* An error of Portico's ends the request side (deadline, body error):
 * answer it, or abort a response that already started. */
void txn_fail_request(pt_txn *t, int status, const char *detail);
/* The upstream exchange failed for good: answer status/detail, take back
 * a response head the client has not seen yet (ops->retract), or abort. */
void txn_upstream_failed(pt_txn *t, int status, const char *detail);
void txn_finish(pt_txn *t);
/* Aborts a response whose head went out: the codec cuts it. */
void txn_abort_response(pt_txn *t);
/* A response-body plugin answered (or over-buffered) while the head was
 * still held: the response side starts over on the local answer. */
void txn_replace_held_response(pt_txn *t);

/* Queues the generator's next proceed when it is waiting and may go on. */
void txn_generator_kick(pt_txn *t);

/* ---- txn_body.c ---- */
/* A request body chunk from the codec (counted already). */
void txn_request_chunk(pt_txn *t, const char *data, size_t len, bool last);
/* A response body chunk (upstream or local); `last` ends the response. */
void txn_response_chunk(pt_txn *t, const char *data, size_t len, bool last);
/* Resumes a side paused in a body callback. */
void txn_body_resume(pt_txn *t, pt_side side, pt_plugin_result r);
/* Parses raw trailer lines into side's trailer list (forbidden fields dropped). */
void txn_trailers_parse(pt_txn *t, pt_side side, pt_str raw);
/* The side's trailers as field lines for a codec or exchange (empty if none). */
pt_str txn_trailers_lines(pt_txn *t, pt_side side);
/* Frees the bytes a side holds (held, queued, buffered slots). */
void txn_side_release(txn_side *s, size_t nslots);

/* ---- txn_upstream.c ---- */
void txn_connect_upstream(pt_txn *t);
void txn_arm_grpc_deadline(pt_txn *t);
/* Closes the upstream exchange, if any. */
void txn_drop_upstream(pt_txn *t);

/* ---- txn_balance.c ---- */
/* The hash input for `balance: hash` (null slice: none, round-robin). */
pt_str txn_lb_key(const pt_txn *t);

/* ---- txn_tunnel.c ---- (docs/websocket.md) */
/* After routing: keeps the request's upgrade intent when the route tunnels
 * it (t->tun set, WebSocket handshake checked: a bad one becomes a pending
 * 400), or clears it (the request goes on as plain HTTP). */
void txn_tunnel_route(pt_txn *t);
/* The upstream's head for a tunnel request (t->res): a 101 is checked
 * (Upgrade, Sec-WebSocket-Accept); false when it was bad and answered 502. */
bool txn_tunnel_on_head(pt_txn *t);
/* Just before send_head: adjusts the head (an accepted tunnel, a refused
 * WebSocket version); true when the tunnel starts after it. */
bool txn_tunnel_prepare_head(pt_txn *t);
/* Just after send_head, when prepare said so: both ends go raw. */
void txn_tunnel_begin(pt_txn *t);
/* From txn_finish: stops the tunnel's timer and closes its upstream. */
void txn_tunnel_finish(pt_txn *t);

/* ---- txn_splice.c ---- (net/splice.h, docs/performance.md) */
/* Starts moving the rest of side's body with splice(2) when everything
 * allows it (else nothing happens and the copy path goes on); called where
 * the copy path may just have emptied the buffers of both ends. */
void txn_splice_try(pt_txn *t, pt_side side);
bool txn_splice_active(const pt_txn *t, pt_side side);
/* A readiness event of either end: runs the active splice. */
void txn_splice_io(pt_txn *t);
/* Ends any splice (both ends back on their own I/O, the pipe closed): the
 * exchange is about to go, or the request is over. */
void txn_splice_abandon(pt_txn *t);

/* ---- txn_forward.c ---- */
/* The client address after trusted_proxies (t->client_addr). */
void txn_resolve_client_addr(pt_txn *t);
/* X-Forwarded-*, X-Real-IP, Via, mTLS identity headers on the upstream request. */
void txn_add_forwarding_headers(pt_txn *t);
/* grpc-status for an HTTP status Portico answers; gRPC error as Trailers-Only. */
bool txn_respond_grpc_error(pt_txn *t, int status, const char *detail);
uint64_t txn_grpc_timeout_ms(const pt_request *req);

/* ---- txn_identity.c ---- (plugin.h "Identity") */
/* Removes client-sent copies of the identity headers (every request). */
void txn_identity_strip(pt_txn *t);
/* Sets the identity headers on the upstream request when a consumer is set. */
void txn_identity_forward(pt_txn *t);
/* The consumer's name for the access log, or an empty slice. */
pt_str txn_consumer_name(const pt_txn *t);

/* ---- txn_trace.c ---- (docs/observability.md "Tracing") */
/* The request's trace: an incoming traceparent/tracestate when valid and
 * trusted (use_incoming), else a new trace; the sampling decision. */
void txn_trace_start(pt_txn *t, bool use_incoming);
/* An upstream attempt starts (target chosen): a new client span, ending
 * the previous attempt's if still open. */
void txn_trace_attempt_begin(pt_txn *t);
/* traceparent (this attempt's span as parent) and tracestate on the
 * upstream request's fields. */
void txn_trace_inject(pt_txn *t, pt_headers *h);
/* The attempt got a response head. */
void txn_trace_attempt_status(pt_txn *t, int status);
/* The attempt is over: error_type NULL when it completed. */
void txn_trace_attempt_end(pt_txn *t, const char *error_type);
/* error.type for an upstream failure. */
const char *txn_trace_uerr_type(pt_uerr err);
/* A sub-request of t: traceparent on its fields (h), and a client span
 * ended when its callback runs. Returns the callback and data to give
 * the HTTP client in place of (*done, *data). */
void txn_trace_subrequest(pt_txn *t, const pt_http_request *req, pt_headers *h, pt_http_done_fn *done, void **data);
/* The request is over: the open attempt's span and the server span. */
void txn_trace_finish(pt_txn *t);

#endif
