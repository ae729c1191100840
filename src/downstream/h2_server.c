/* h2_server.c — see h2_server.h and docs/http2.md.
 *
 * Structure:
 *   h2_conn    one TCP (or TLS) connection: the nghttp2 session, the output
 *              buffer (flushed once per loop iteration, like h1_server), a
 *              timer (idle / send stall), abuse counters, its streams.
 *   h2_stream  one request: arena, pt_request, pt_txn, response body buffer
 *              (pulled by nghttp2's data provider), buffered request body.
 *
 * Re-entrancy rules: nghttp2 callbacks and txn callbacks never close the
 * connection nor free a stream. They set flags and queue deferred work:
 *   flush_defer   mem_send + write, wake blocked txns, close when done
 *   deliver_defer hand buffered request body to txns that want it
 *   reap_defer    free streams that nghttp2 closed and whose txn finished
 * A stream lives until both nghttp2 closed it (on_stream_close) and its txn
 * called finished(): the txn may finish before nghttp2 has sent the last
 * bytes of the response, which still live in the stream's buffer. */
#include "downstream/h2_server.h"
#include "net/tls_io.h"
#include "tls/tls_server.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>

#include "core/buf.h"
#include "downstream/body_pace.h"
#include "obs/gateway_metrics.h"
#include "server/connlimit.h"
#include "server/worker.h"

#define WBUF_HIGH (64u * 1024)        /* connection output: stop pulling frames from nghttp2 */
#define STREAM_OUT_HIGH (64u * 1024)  /* per-stream response buffer: send_body returns false */
#define STREAM_OUT_LOW (16u * 1024)   /* ... and the txn is woken below this */
#define READ_CHUNK 16384u

#define H2_INITIAL_WINDOW (64u * 1024)
#define H2_CONN_WINDOW (1u << 20)
#define H2_MAX_CONTINUATIONS 32u
#define H2_RESET_WINDOW_MS 10000u
#define H2_RESET_MAX_IN_WINDOW 200u
#define H2_RESET_RATIO_MIN_STREAMS 100u
#define H2_OUTQ_PAUSE 1024u          /* frames queued in nghttp2 (not DATA): stop reading input */
#define H2_MAX_EMPTY_DATA 100u       /* consecutive DATA frames without payload nor END_STREAM */

enum { TM_NONE, TM_IDLE, TM_SEND };

typedef struct h2_conn h2_conn;
typedef struct h2_stream h2_stream;

struct h2_stream {
    h2_conn *c;
    h2_stream *prev, *next;
    int32_t id;
    pt_arena *arena;
    pt_request *req;
    pt_txn *txn;
    pt_buf out;            /* response body not yet pulled by nghttp2 */
    pt_buf in;             /* request body received but not yet taken by the txn */
    pt_timer body_timer;   /* request body late (timeouts.body / limits.min_body_rate) */
    pt_body_pace pace;
    nghttp2_nv *trailers;  /* response trailers (arena), submitted at EOF */
    size_t ntrailers;
    pt_str host_header;    /* "host" field, used when :authority is absent */
    pt_buf cookies;        /* cookie crumbs joined with "; " (RFC 9113 §8.2.3) */
    pt_headers req_trailers; /* request trailer fields (arena), passed at END_STREAM */
    uint64_t trailer_bytes;
    bool trailer_err;      /* trailer block over the header limits: answer 431 */
    uint64_t head_bytes;
    uint64_t sent;         /* bytes framed for this response (access log) */
    uint32_t nfields;
    int err_status;        /* header block rejected: answer this (431/400) */
    const char *err_detail;
    bool has_provider;     /* response has DATA (data provider submitted) */
    bool deferred;         /* the data provider returned NGHTTP2_ERR_DEFERRED */
    bool eof;              /* send_end called */
    bool blocked;          /* send_body returned false: wake the txn below LOW */
    bool want_body;
    bool body_done;        /* END_STREAM received */
    bool last_delivered;   /* the txn got last=true */
    bool txn_done;         /* finished() called (or no txn was ever made) */
    bool ng_closed;        /* nghttp2 closed the stream */
    bool reset_sent;
    bool dead;             /* queued for reaping */
    bool body_late;        /* answered 408: the body is no longer wanted */
    bool tunnel;           /* an extended CONNECT became a tunnel: DATA is raw bytes */
    bool tunnel_read;      /* the txn wants the tunnel's bytes */
};

struct h2_conn {
    pt_conn base;            /* first: the shared connection (downstream/conn.h) */
    pt_timer head_timer;     /* a request header block must complete within timeouts.header */
    uint64_t header_ms;
    pt_defer flush_defer, deliver_defer, reap_defer, read_defer;
    nghttp2_session *sess;
    h2_stream *streams;
    uint32_t nstreams;
    pt_buf wbuf;
    uint32_t max_header_size, max_headers;
    uint64_t idle_ms;
    uint8_t timer_kind;
    bool closed;
    bool peer_closed;
    bool stop_reading;      /* fatal protocol error or ENHANCE_YOUR_CALM: no more input */
    bool in_recv;           /* inside nghttp2_session_mem_recv (feed) */
    bool calm_pending;      /* calm_down ran inside mem_recv: terminate once it returns */
    bool close_after_flush; /* close once the output (GOAWAY) is written */
    bool write_failed;
    bool draining;
    bool progressed;
    /* abuse accounting */
    uint32_t continuations;
    uint32_t empty_data;     /* consecutive DATA frames without payload nor END_STREAM */
    uint64_t reset_window_start;
    uint32_t resets_in_window;
    uint64_t streams_opened, streams_reset;
};

static const pt_downstream_ops h2_ops;
static void conn_close(h2_conn *c);
static void schedule_flush(h2_conn *c);
static void conn_update_events(h2_conn *c);
static void on_readable(h2_conn *c);
static void h2_drain(pt_conn *base);
static const pt_conn_proto h2_proto;

static inline pt_loop *conn_loop(h2_conn *c) { return c->base.w->loop; }

/* ---------------------------------------------------------------- transport */

/* ------------------------------------------------------------------ timers */

static void on_timer(pt_loop *loop, pt_timer *t)
{
    h2_conn *c = t->data;
    int kind = c->timer_kind;
    c->timer_kind = TM_NONE;
    if (c->closed) return;
    if (kind == TM_IDLE) {
        /* No stream for timeouts.idle: say goodbye and close. */
        nghttp2_submit_goaway(c->sess, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->sess),
                              NGHTTP2_NO_ERROR, NULL, 0);
        c->close_after_flush = true;
        c->stop_reading = true;
        schedule_flush(c);
    } else if (kind == TM_SEND) {
        conn_close(c); /* the client stopped reading */
    }
}

static void set_timer(h2_conn *c, int kind)
{
    c->timer_kind = (uint8_t)kind;
    if (kind == TM_NONE) pt_timer_stop(conn_loop(c), &c->base.timer);
    else pt_timer_start(conn_loop(c), &c->base.timer, c->idle_ms, on_timer, c);
}

/* Idle timer while no stream exists and nothing is queued; send-stall timer
 * while output waits for the socket (restarted on progress). */
static void update_timer(h2_conn *c)
{
    if (c->closed) return;
    if (c->wbuf.len) {
        if (c->timer_kind != TM_SEND || c->progressed) set_timer(c, TM_SEND);
    } else if (c->nstreams == 0) {
        if (c->timer_kind != TM_IDLE) set_timer(c, TM_IDLE);
    } else if (c->timer_kind != TM_NONE) {
        set_timer(c, TM_NONE);
    }
    c->progressed = false;
}

/* ----------------------------------------------------------------- streams */

static void stream_free(h2_conn *c, h2_stream *s)
{
    if (s->prev) s->prev->next = s->next;
    else c->streams = s->next;
    if (s->next) s->next->prev = s->prev;
    c->nstreams--;
    pt_metrics_h2_stream_closed(c->base.w, c->base.listener);
    pt_timer_stop(conn_loop(c), &s->body_timer);
    pt_buf_release(&s->out);
    pt_buf_release(&s->in);
    pt_buf_release(&s->cookies);
    if (s->arena) pt_worker_arena_put(c->base.w, s->arena);
    free(s);
}

static void reap_cb(pt_loop *loop, pt_defer *d)
{
    h2_conn *c = d->data;
    if (c->closed) return;
    h2_stream *s = c->streams;
    while (s) {
        h2_stream *n = s->next;
        if (s->dead) stream_free(c, s);
        s = n;
    }
    update_timer(c);
    schedule_flush(c); /* a draining connection may be done now */
}

/* Frees the stream (deferred) once nghttp2 and the txn are both done with it. */
static void maybe_reap(h2_stream *s)
{
    if (s->dead || !s->ng_closed || !s->txn_done) return;
    s->dead = true;
    pt_defer_queue(conn_loop(s->c), &s->c->reap_defer, reap_cb, s->c);
}

static h2_stream *stream_new(h2_conn *c, int32_t id)
{
    h2_stream *s = pt_xcalloc(1, sizeof(*s));
    s->c = c;
    s->id = id;
    s->txn_done = true; /* until a txn exists */
    s->arena = pt_worker_arena_get(c->base.w);
    s->req = pt_arena_calloc(s->arena, sizeof(*s->req));
    s->req->version = 20;
    s->req->content_length = -1;
    s->next = c->streams;
    if (c->streams) c->streams->prev = s;
    c->streams = s;
    c->nstreams++;
    c->streams_opened++;
    pt_metrics_h2_stream_opened(c->base.w, c->base.listener);
    if (c->timer_kind == TM_IDLE) set_timer(c, TM_NONE);
    return s;
}

static h2_stream *stream_of(h2_conn *c, int32_t id)
{
    return nghttp2_session_get_stream_user_data(c->sess, id);
}

static void stream_reset(h2_stream *s, uint32_t code)
{
    if (s->ng_closed || s->reset_sent) return;
    s->reset_sent = true;
    nghttp2_submit_rst_stream(s->c->sess, NGHTTP2_FLAG_NONE, s->id, code);
    schedule_flush(s->c);
}

/* The client is abusive (rapid reset, CONTINUATION flood): GOAWAY
 * ENHANCE_YOUR_CALM, stop reading, close once the GOAWAY is written.
 * Inside nghttp2_session_mem_recv (a receive callback) the session is not
 * terminated there: nghttp2 may reset its inbound state after the callback
 * returns and go on parsing the buffer, and a later frame-size error then
 * trips its assertion that a terminated session ignores all input (an
 * abort of the whole process, found by tests/fuzz/fuzz_h2_server.c).
 * The callback returns NGHTTP2_ERR_CALLBACK_FAILURE instead (see
 * recv_result), which stops mem_recv at once, and feed() terminates. */
static void calm_down(h2_conn *c)
{
    if (c->stop_reading) return;
    c->stop_reading = true;
    c->close_after_flush = true;
    if (c->in_recv) {
        c->calm_pending = true;
        return;
    }
    nghttp2_session_terminate_session(c->sess, NGHTTP2_ENHANCE_YOUR_CALM);
    schedule_flush(c);
}

/* What a receive callback returns once it may have called calm_down. */
static int recv_result(const h2_conn *c) { return c->calm_pending ? NGHTTP2_ERR_CALLBACK_FAILURE : 0; }

/* ------------------------------------------------------------ request body */

/* A tunnel stream (RFC 8441): DATA goes to the txn as raw bytes while it
 * reads, END_STREAM as the end of the client's side; what waits is not
 * acknowledged, so the stream window holds the client back. */
static bool tunnel_wants(const h2_stream *s)
{
    return s->tunnel && s->tunnel_read && !s->txn_done && !s->c->closed;
}

static void deliver_tunnel(h2_stream *s)
{
    h2_conn *c = s->c;
    while (tunnel_wants(s) && s->in.len) {
        size_t n = s->in.len;
        pt_txn_on_tunnel_data(s->txn, pt_buf_head(&s->in), n);
        if (c->closed) return;
        pt_buf_consume(&s->in, n);
        if (!s->ng_closed) nghttp2_session_consume_stream(c->sess, s->id, n);
    }
    if (!s->in.len) pt_buf_release(&s->in);
    if (tunnel_wants(s) && s->body_done && !s->last_delivered) {
        s->last_delivered = true;
        pt_txn_on_tunnel_eof(s->txn);
    }
    schedule_flush(c); /* WINDOW_UPDATE */
}

/* Hands the stream's buffered request body (and the end of it) to its txn
 * while it wants it; acknowledges what was taken to the flow control. */
static void deliver_buffered(h2_stream *s)
{
    h2_conn *c = s->c;
    if (s->tunnel) {
        deliver_tunnel(s);
        return;
    }
    while (s->want_body && !s->txn_done && !c->closed && (s->in.len || (s->body_done && !s->last_delivered))) {
        size_t n = s->in.len;
        bool last = s->body_done;
        if (last) s->last_delivered = true;
        pt_txn_on_request_body(s->txn, n ? pt_buf_head(&s->in) : "", n, last);
        if (c->closed) return;
        if (s->txn_done) break; /* finished inside: ds_finished dropped (and acknowledged) the rest */
        pt_buf_consume(&s->in, n);
        if (n && !s->ng_closed) nghttp2_session_consume_stream(c->sess, s->id, n);
        if (!s->in.len) pt_buf_release(&s->in);
    }
    schedule_flush(c); /* WINDOW_UPDATE */
}

static void deliver_cb(pt_loop *loop, pt_defer *d)
{
    h2_conn *c = d->data;
    for (h2_stream *s = c->streams; s && !c->closed; s = s->next)
        if (!s->dead && (s->want_body || tunnel_wants(s)) && (s->in.len || (s->body_done && !s->last_delivered)))
            deliver_buffered(s);
}

/* Per-stream slow-body defence (downstream/body_pace.h). One pt_timer per stream
 * rather than a per-connection scan: arming is O(log timers) in the loop's
 * heap and nothing ever walks the streams. The timer runs only while the
 * txn wants the body and END_STREAM has not arrived; DATA does not touch it
 * (the deadline only moves later with progress): when it fires early it is
 * re-armed at the new deadline. A stream whose body completed keeps a stale
 * timer until want_body(false)/finished()/free, and its firing is ignored. */
static bool body_wanted(const h2_stream *s)
{
    /* Once the response has started, the upstream has engaged in the
     * exchange (gRPC bidirectional streams...): the request stream is then
     * bounded by the upstream's timeouts, not by the slow-body rules. */
    return s->want_body && !s->body_done && !s->txn_done && !s->body_late && !s->ng_closed && !s->c->closed &&
           !pt_txn_response_started(s->txn);
}

static void on_body_timer(pt_loop *loop, pt_timer *t)
{
    h2_stream *s = t->data;
    h2_conn *c = s->c;
    if (!body_wanted(s)) return;
    uint64_t now = pt_loop_now(loop);
    uint64_t due = pt_body_pace_deadline(&s->pace, s->pace.gap_ms, s->pace.min_rate);
    if (due > now) {
        pt_timer_start_at(loop, &s->body_timer, due, on_body_timer, s);
        return;
    }
    /* Late (and no response started, see body_wanted): the txn answers 408
     * (gRPC: DEADLINE_EXCEEDED); on_frame_send then resets the stream with
     * NO_ERROR because its body is unfinished. The rest of the body is no
     * longer wanted; the stream window stops the client. */
    s->body_late = true;
    s->want_body = false;
    pt_body_pace_run(&s->pace, false, now);
    pt_txn_on_request_error(s->txn, 408,
                            pt_body_pace_late_by_gap(&s->pace, s->pace.gap_ms, now) ? PT_BODY_LATE_GAP
                                                                                    : PT_BODY_LATE_RATE);
    schedule_flush(c);
}

/* Starts or stops the stream's body clock and timer after want_body, the
 * txn or the stream changed. */
static void body_pace_update(h2_stream *s)
{
    pt_loop *loop = conn_loop(s->c);
    bool run = body_wanted(s);
    bool was = s->pace.running;
    if (run) pt_txn_body_limits(s->txn, &s->pace.gap_ms, &s->pace.min_rate);
    pt_body_pace_run(&s->pace, run, pt_loop_now(loop));
    if (run && !was)
        pt_timer_start_at(loop, &s->body_timer, pt_body_pace_deadline(&s->pace, s->pace.gap_ms, s->pace.min_rate),
                          on_body_timer, s);
    else if (!run)
        pt_timer_stop(loop, &s->body_timer);
}

/* ---------------------------------------------------------- request head */

static pt_str arena_copy(pt_arena *a, const uint8_t *p, size_t n) { return pt_arena_str(a, pt_str_make((const char *)p, n)); }

static pt_str trim_ows(pt_str v)
{
    while (v.n && (v.p[0] == ' ' || v.p[0] == '\t')) {
        v.p++;
        v.n--;
    }
    while (v.n && (v.p[v.n - 1] == ' ' || v.p[v.n - 1] == '\t')) v.n--;
    return v;
}

static pt_str lowercase(pt_arena *a, pt_str s)
{
    size_t i = 0;
    while (i < s.n && !(s.p[i] >= 'A' && s.p[i] <= 'Z')) i++;
    if (i == s.n) return s;
    char *d = pt_arena_alloc(a, s.n + 1);
    for (size_t k = 0; k < s.n; k++) d[k] = (char)tolower((unsigned char)s.p[k]);
    d[s.n] = '\0';
    return pt_str_make(d, s.n);
}

static bool parse_u64(pt_str v, int64_t *out)
{
    if (!v.n || v.n > 18) return false;
    int64_t x = 0;
    for (size_t i = 0; i < v.n; i++) {
        if (v.p[i] < '0' || v.p[i] > '9') return false;
        x = x * 10 + (v.p[i] - '0');
    }
    *out = x;
    return true;
}

static void reject_head(h2_stream *s, int status, const char *detail)
{
    if (!s->err_status) {
        s->err_status = status;
        s->err_detail = detail;
    }
}

static void on_head_timeout(pt_loop *loop, pt_timer *t)
{
    h2_conn *c = t->data;
    if (c->closed) return;
    /* A header block left unfinished for timeouts.header: slowloris. */
    nghttp2_submit_goaway(c->sess, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->sess),
                          NGHTTP2_ENHANCE_YOUR_CALM, NULL, 0);
    c->close_after_flush = true;
    c->stop_reading = true;
    schedule_flush(c);
}

static int on_begin_headers(nghttp2_session *sess, const nghttp2_frame *frame, void *ud)
{
    h2_conn *c = ud;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    if (c->stop_reading || c->draining) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    h2_stream *s = stream_new(c, frame->hd.stream_id);
    nghttp2_session_set_stream_user_data(sess, frame->hd.stream_id, s);
    /* Frames cannot interleave inside a header block, so one deadline per
     * connection covers the block in progress (slow CONTINUATION trickle). */
    pt_timer_start(conn_loop(c), &c->head_timer, c->header_ms, on_head_timeout, c);
    return 0;
}

/* One field of a request trailer block (nghttp2 already rejected
 * pseudo-headers, uppercase names and connection-specific fields in it):
 * kept in the arena within the request head's size/count limits. */
static int on_trailer_field(h2_conn *c, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                            const uint8_t *value, size_t valuelen)
{
    h2_stream *s = stream_of(c, frame->hd.stream_id);
    if (!s || s->txn_done || s->last_delivered || s->trailer_err) return 0;
    if (namelen && name[0] == ':') return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    s->trailer_bytes += namelen + valuelen + 4;
    if (s->trailer_bytes > c->max_header_size || s->req_trailers.n >= c->max_headers) {
        s->trailer_err = true;
        return 0;
    }
    pt_headers_add(&s->req_trailers, s->arena, arena_copy(s->arena, name, namelen),
                   trim_ows(arena_copy(s->arena, value, valuelen)));
    return 0;
}

/* One field of a request header block: pseudo-headers fill the pt_request,
 * regular fields are copied into the arena (nghttp2 already rejected
 * uppercase names, connection-specific fields and bad pseudo-headers). */
static int on_header(nghttp2_session *sess, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    h2_conn *c = ud;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_HEADERS)
        return on_trailer_field(c, frame, name, namelen, value, valuelen);
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    h2_stream *s = stream_of(c, frame->hd.stream_id);
    if (!s || s->err_status) return 0;
    pt_request *req = s->req;
    pt_arena *a = s->arena;
    s->head_bytes += namelen + valuelen + 4;
    if (s->head_bytes > c->max_header_size || ++s->nfields > c->max_headers) {
        reject_head(s, 431, "request header fields too large");
        return 0;
    }
    pt_str n = pt_str_make((const char *)name, namelen);
    pt_str v = arena_copy(a, value, valuelen);
    if (namelen && name[0] == ':') {
        if (pt_str_eq_lit(n, ":method")) {
            req->method_str = v;
            req->method = pt_method_from_str(v);
        } else if (pt_str_eq_lit(n, ":authority")) {
            req->authority = v;
        } else if (pt_str_eq_lit(n, ":path")) {
            req->target = v;
        } else if (pt_str_eq_lit(n, ":protocol")) {
            req->upgrade = v; /* extended CONNECT (RFC 8441) */
        }
        /* :scheme is validated by nghttp2; the transport decides req->scheme */
        return 0;
    }
    v = trim_ows(v);
    if (pt_str_eq_lit(n, "host")) {
        s->host_header = v;
    } else if (pt_str_eq_lit(n, "content-length")) {
        if (!parse_u64(v, &req->content_length)) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    } else if (pt_str_eq_lit(n, "cookie")) {
        if (s->cookies.len) pt_buf_append(&s->cookies, "; ", 2);
        pt_buf_append(&s->cookies, v.p, v.n);
    } else if (pt_str_eq_lit(n, "te") || pt_str_eq_lit(n, "expect")) {
        /* te: trailers is hop-by-hop; 100-continue does not exist in h2 */
    } else {
        pt_headers_add(&req->headers, a, arena_copy(a, name, namelen), v);
    }
    return 0;
}

/* An invalid field name/value that nghttp2 would silently ignore: reset the
 * stream instead (be as strict as the HTTP/1 parser). */
static int on_invalid_header(nghttp2_session *sess, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                             const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

/* The request head is complete: finish the pt_request and start the txn. */
static void start_stream(h2_conn *c, h2_stream *s, bool end_stream)
{
    pt_request *req = s->req;
    pt_arena *a = s->arena;
    req->scheme = c->base.ssl ? PT_STR_LIT("https") : PT_STR_LIT("http");
    req->has_body = !end_stream;
    if (!req->has_body) req->content_length = 0;
    s->body_done = end_stream;
    s->last_delivered = end_stream;
    if (s->cookies.len) {
        pt_headers_add(&req->headers, a, PT_STR_LIT("cookie"),
                       pt_arena_str(a, pt_str_make(pt_buf_head(&s->cookies), s->cookies.len)));
        pt_buf_release(&s->cookies);
    }
    if (!req->authority.n) req->authority = s->host_header;
    pt_str host = PT_STR_NULL;
    if (req->method == PT_METHOD_CONNECT && req->upgrade.n && !s->err_status) {
        /* Extended CONNECT (RFC 8441): the request for a tunnel is a GET
         * with an upgrade intent (docs/websocket.md); DATA after the 200 is
         * the tunnel's, never a body. */
        req->method = PT_METHOD_GET;
        req->method_str = PT_STR_LIT("GET");
        req->has_body = false;
        req->content_length = 0;
    }
    if (!s->err_status) {
        if (req->method == PT_METHOD_CONNECT) reject_head(s, 400, "CONNECT is not supported");
        else if (!req->authority.n) reject_head(s, 400, "missing :authority");
        else if (!pt_h1_split_authority(req->authority, &host)) reject_head(s, 400, "invalid :authority");
        else if (!req->target.n) reject_head(s, 400, "missing :path");
        else if (!pt_h1_target_valid(req->target, req->method)) reject_head(s, 400, "invalid :path");
    }
    if (host.p) req->host = lowercase(a, host);
    const char *q = req->target.n ? memchr(req->target.p, '?', req->target.n) : NULL;
    if (q) {
        req->path = pt_str_make(req->target.p, (size_t)(q - req->target.p));
        req->query = pt_str_make(q + 1, (size_t)(req->target.p + req->target.n - q - 1));
        req->has_query = true;
    } else {
        req->path = req->target;
    }
    pt_conn_info ci;
    pt_conn_info_fill(&c->base, a, &ci);
    s->txn = pt_txn_new(c->base.w, a, &h2_ops, s, &ci, pt_loop_wall_us(conn_loop(c)));
    s->txn_done = false;
    if (s->err_status) {
        s->body_done = s->last_delivered = true; /* nothing of the body is read */
        pt_txn_start_error(s->txn, req->method_str.n ? req : NULL, s->err_status, s->err_detail, s->head_bytes);
        return;
    }
    pt_txn_start(s->txn, req, s->head_bytes);
}

/* Rapid reset (CVE-2023-44487): more than H2_RESET_MAX_IN_WINDOW client
 * resets within H2_RESET_WINDOW_MS, or more than half of the streams once
 * H2_RESET_RATIO_MIN_STREAMS were opened. */
static void count_reset(h2_conn *c)
{
    uint64_t now = pt_loop_now(conn_loop(c));
    if (now - c->reset_window_start > H2_RESET_WINDOW_MS) {
        c->reset_window_start = now;
        c->resets_in_window = 0;
    }
    c->resets_in_window++;
    c->streams_reset++;
    if (c->resets_in_window > H2_RESET_MAX_IN_WINDOW ||
        (c->streams_opened >= H2_RESET_RATIO_MIN_STREAMS && c->streams_reset * 2 > c->streams_opened))
        calm_down(c);
}

static void end_of_request_body(h2_stream *s)
{
    s->body_done = true;
    if (s->txn_done) {
        s->last_delivered = true;
        return;
    }
    if (s->tunnel) {
        if (tunnel_wants(s) && !s->in.len) {
            s->last_delivered = true;
            pt_txn_on_tunnel_eof(s->txn);
        }
        return; /* else with the buffered bytes, when the txn reads */
    }
    if (s->want_body && !s->in.len) {
        s->last_delivered = true;
        pt_txn_on_request_body(s->txn, "", 0, true);
    } else if (s->want_body) {
        pt_defer_queue(conn_loop(s->c), &s->c->deliver_defer, deliver_cb, s->c);
    }
}

/* The request trailer block is complete (nghttp2 made sure it carries
 * END_STREAM): hand it to the txn as raw lines, then end the body. A block
 * over the limits is answered 431. */
static void request_trailers_done(h2_stream *s)
{
    if (s->txn_done || s->last_delivered) {
        end_of_request_body(s);
        return;
    }
    if (s->trailer_err) {
        s->body_done = s->last_delivered = true;
        pt_txn_on_request_error(s->txn, 431, "request trailer fields too large");
        return;
    }
    if (s->req_trailers.n) {
        size_t len = 0;
        for (uint32_t i = 0; i < s->req_trailers.n; i++)
            len += s->req_trailers.v[i].name.n + s->req_trailers.v[i].value.n + 4;
        char *raw = pt_arena_alloc(s->arena, len), *o = raw;
        for (uint32_t i = 0; i < s->req_trailers.n; i++) {
            const pt_header *h = &s->req_trailers.v[i];
            memcpy(o, h->name.p, h->name.n);
            o += h->name.n;
            memcpy(o, ": ", 2);
            memcpy(o + 2, h->value.p, h->value.n);
            o += 2 + h->value.n;
            memcpy(o, "\r\n", 2);
            o += 2;
        }
        pt_txn_on_request_trailers(s->txn, pt_str_make(raw, len));
    }
    end_of_request_body(s);
}

static int on_frame_recv(nghttp2_session *sess, const nghttp2_frame *frame, void *ud)
{
    h2_conn *c = ud;
    h2_stream *s = frame->hd.stream_id ? stream_of(c, frame->hd.stream_id) : NULL;
    bool end_stream = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        pt_timer_stop(conn_loop(c), &c->head_timer); /* the header block is complete */
        if (!s || c->closed) return 0;
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) start_stream(c, s, end_stream);
        else if (end_stream && !s->body_done) request_trailers_done(s);
        return 0;
    case NGHTTP2_DATA:
        /* Empty frames flood (CVE-2019-9518): DATA that carries nothing
         * (padding at most) and does not end the stream costs work and
         * makes no progress. More than H2_MAX_EMPTY_DATA in a row, with no
         * payload in between: GOAWAY ENHANCE_YOUR_CALM. */
        if (frame->hd.length > frame->data.padlen) c->empty_data = 0;
        else if (!end_stream && ++c->empty_data > H2_MAX_EMPTY_DATA) calm_down(c);
        if (s && end_stream && !s->body_done) end_of_request_body(s);
        return recv_result(c);
    case NGHTTP2_RST_STREAM:
        count_reset(c);
        return recv_result(c);
    default:
        return 0;
    }
}

static int on_data_chunk(nghttp2_session *sess, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len,
                         void *ud)
{
    h2_conn *c = ud;
    nghttp2_session_consume_connection(sess, len); /* per-stream windows bound the buffering */
    h2_stream *s = stream_of(c, stream_id);
    if (s && len) pt_body_pace_progress(&s->pace, len, pt_loop_now(conn_loop(c)));
    if (!s || s->txn_done || s->last_delivered) {
        nghttp2_session_consume_stream(sess, stream_id, len); /* nobody wants it: drop */
        return 0;
    }
    if (s->want_body && !s->in.len) {
        pt_txn_on_request_body(s->txn, (const char *)data, len, false);
        nghttp2_session_consume_stream(sess, stream_id, len);
        return 0;
    }
    if (tunnel_wants(s) && !s->in.len) {
        pt_txn_on_tunnel_data(s->txn, (const char *)data, len);
        nghttp2_session_consume_stream(sess, stream_id, len);
        return 0;
    }
    /* Not wanted yet: keep it, unacknowledged (the stream window stops the client). */
    pt_buf_append(&s->in, data, len);
    return 0;
}

static int on_stream_close(nghttp2_session *sess, int32_t stream_id, uint32_t error_code, void *ud)
{
    h2_conn *c = ud;
    h2_stream *s = stream_of(c, stream_id);
    if (!s) return 0;
    s->ng_closed = true;
    nghttp2_session_set_stream_user_data(sess, stream_id, NULL);
    if (!s->txn_done && s->tunnel && error_code == NGHTTP2_NO_ERROR && s->body_done && s->eof) {
        /* Both halves of a tunnel ended cleanly: its txn still takes the
         * client's last buffered bytes and end, then finishes by itself. */
        if (tunnel_wants(s)) pt_defer_queue(conn_loop(c), &c->deliver_defer, deliver_cb, c);
        return 0;
    }
    if (!s->txn_done) pt_txn_on_downstream_closed(s->txn); /* calls finished() */
    s->txn_done = true;
    maybe_reap(s);
    return 0;
}

static int on_begin_frame(nghttp2_session *sess, const nghttp2_frame_hd *hd, void *ud)
{
    h2_conn *c = ud;
    if (hd->type == NGHTTP2_HEADERS) {
        c->continuations = 0;
    } else if (hd->type == NGHTTP2_CONTINUATION && ++c->continuations > H2_MAX_CONTINUATIONS) {
        calm_down(c);
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

/* Our response ended (END_STREAM sent) while the client is still sending a
 * body nobody will read: RST_STREAM NO_ERROR (RFC 9113 §8.1). */
static int on_frame_send(nghttp2_session *sess, const nghttp2_frame *frame, void *ud)
{
    h2_conn *c = ud;
    /* "MadeYouReset" (CVE-2025-8671): a client can make the server reset
     * its streams (a zero WINDOW_UPDATE, DATA on a closed stream, a
     * malformed header...) and so open and cancel streams as fast as with
     * RST_STREAM, without sending one. Resets for the client's errors count
     * like its own resets; ours (NO_ERROR after an early response, CANCEL,
     * INTERNAL_ERROR) do not. */
    if (frame->hd.type == NGHTTP2_RST_STREAM) {
        uint32_t code = frame->rst_stream.error_code;
        if (code != NGHTTP2_NO_ERROR && code != NGHTTP2_CANCEL && code != NGHTTP2_INTERNAL_ERROR) count_reset(c);
        return 0;
    }
    if ((frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        h2_stream *s = stream_of(c, frame->hd.stream_id);
        /* a live tunnel's END_STREAM is a half-close: the client may go on */
        if (s && !s->body_done && (!s->tunnel || s->txn_done)) stream_reset(s, NGHTTP2_NO_ERROR);
    }
    return 0;
}

/* --------------------------------------------------------------- response */

/* nghttp2 pulls response body bytes: copies from the stream buffer; defers
 * when empty and not finished; at EOF submits trailers if any. */
static ssize_t read_body(nghttp2_session *sess, int32_t stream_id, uint8_t *buf, size_t length, uint32_t *flags,
                         nghttp2_data_source *source, void *ud)
{
    h2_stream *s = source->ptr;
    size_t n = PT_MIN(length, (size_t)s->out.len);
    if (n) {
        memcpy(buf, pt_buf_head(&s->out), n);
        pt_buf_consume(&s->out, n);
        s->sent += n + 9;
    }
    if (!s->out.len) {
        pt_buf_release(&s->out);
        if (s->eof) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            if (s->ntrailers) {
                *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
                nghttp2_submit_trailer(sess, stream_id, s->trailers, s->ntrailers);
            }
        } else if (!n) {
            s->deferred = true;
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    return (ssize_t)n;
}

static bool connection_specific(pt_str n)
{
    return pt_field_connection_specific(n) || pt_str_ieq_lit(n, "content-length");
}

static nghttp2_nv make_nv(pt_str n, pt_str v)
{
    return (nghttp2_nv){(uint8_t *)(uintptr_t)n.p, (uint8_t *)(uintptr_t)v.p, n.n, v.n, NGHTTP2_NV_FLAG_NONE};
}

/* Builds the header list of a response: :status, the fields (names
 * lowercased, connection-specific ones dropped), content-length. nghttp2
 * copies the strings, the array lives in the arena. */
static size_t build_nv(h2_stream *s, const pt_response *res, bool with_length, nghttp2_nv **out)
{
    pt_arena *a = s->arena;
    nghttp2_nv *nv = pt_arena_alloc(a, sizeof(*nv) * (res->headers.n + 2));
    size_t k = 0;
    char *status = pt_arena_printf(a, "%03d", res->status);
    nv[k++] = make_nv(PT_STR_LIT(":status"), pt_str_c(status));
    for (uint32_t i = 0; i < res->headers.n; i++) {
        const pt_header *h = &res->headers.v[i];
        if (connection_specific(h->name) || !h->name.n) continue;
        nv[k++] = make_nv(lowercase(a, h->name), h->value);
    }
    if (with_length) nv[k++] = make_nv(PT_STR_LIT("content-length"), pt_str_c(pt_arena_printf(a, "%lld", (long long)res->content_length)));
    for (size_t i = 0; i < k; i++) s->sent += nv[i].namelen + nv[i].valuelen + 2;
    s->sent += 9;
    *out = nv;
    return k;
}

static void ds_send_informational(void *stream, const pt_response *res)
{
    h2_stream *s = stream;
    if (s->ng_closed || s->reset_sent || res->status != 103) return;
    nghttp2_nv *nv;
    size_t n = build_nv(s, res, false, &nv);
    nghttp2_submit_headers(s->c->sess, NGHTTP2_FLAG_NONE, s->id, NULL, nv, n, NULL);
    schedule_flush(s->c);
}

static void ds_send_head(void *stream, const pt_response *res)
{
    h2_stream *s = stream;
    body_pace_update(s); /* the response started: the slow-body clock stops */
    if (s->ng_closed || s->reset_sent) return;
    pt_response tunnel_res;
    if (res->status == 101) { /* a tunnel opens: RFC 8441 answers 200, DATA unframed */
        tunnel_res = *res;
        tunnel_res.status = 200;
        tunnel_res.has_body = true;
        tunnel_res.content_length = -1;
        res = &tunnel_res;
    }
    int st = res->status;
    bool bodiless_status = st < 200 || st == 204 || st == 304;
    bool head_req = s->req && s->req->method == PT_METHOD_HEAD;
    nghttp2_nv *nv;
    size_t n = build_nv(s, res, !bodiless_status && res->content_length >= 0, &nv);
    s->has_provider = res->has_body && !head_req && !bodiless_status;
    nghttp2_data_provider dp = {.source.ptr = s, .read_callback = read_body};
    if (nghttp2_submit_response(s->c->sess, s->id, nv, n, s->has_provider ? &dp : NULL) != 0) {
        s->has_provider = false;
        stream_reset(s, NGHTTP2_INTERNAL_ERROR);
    }
    schedule_flush(s->c);
}

static void resume(h2_stream *s)
{
    if (s->deferred && !s->ng_closed) {
        s->deferred = false;
        nghttp2_session_resume_data(s->c->sess, s->id);
    }
    schedule_flush(s->c);
}

static bool ds_send_body(void *stream, const char *data, size_t len)
{
    h2_stream *s = stream;
    if (!s->has_provider || s->ng_closed || s->reset_sent) return true; /* HEAD / bodiless / gone: drop */
    if (len) {
        pt_buf_append(&s->out, data, len);
        resume(s);
    }
    if (s->out.len >= STREAM_OUT_HIGH) {
        s->blocked = true;
        return false;
    }
    return true;
}

/* Parses "name: value\r\n" lines into the trailer list (names lowercased). */
static void parse_trailers(h2_stream *s, pt_str t)
{
    pt_arena *a = s->arena;
    size_t cap = 0;
    for (size_t i = 0; i < t.n; i++) cap += t.p[i] == '\n';
    if (!cap) return;
    s->trailers = pt_arena_alloc(a, sizeof(nghttp2_nv) * cap);
    pt_str rest = t, name, value;
    while (s->ntrailers < cap && pt_field_line_next(&rest, &name, &value))
        if (!connection_specific(name)) s->trailers[s->ntrailers++] = make_nv(lowercase(a, name), value);
}

static void ds_send_end(void *stream, pt_str trailers)
{
    h2_stream *s = stream;
    if (s->eof) return;
    s->eof = true;
    if (!s->has_provider || s->ng_closed) return;
    if (trailers.n) parse_trailers(s, trailers);
    resume(s);
}

static void ds_want_body(void *stream, bool want)
{
    h2_stream *s = stream;
    s->want_body = want && !s->body_late;
    if (s->want_body && (s->in.len || (s->body_done && !s->last_delivered)))
        pt_defer_queue(conn_loop(s->c), &s->c->deliver_defer, deliver_cb, s->c);
    body_pace_update(s);
}

static void ds_abort(void *stream)
{
    h2_stream *s = stream;
    s->out.len = 0;
    stream_reset(s, NGHTTP2_INTERNAL_ERROR);
}

static void ds_finished(void *stream)
{
    h2_stream *s = stream;
    s->txn_done = true;
    s->txn = NULL;
    s->want_body = false;
    pt_timer_stop(conn_loop(s->c), &s->body_timer);
    if (s->c->closed) return; /* conn_close frees everything */
    /* A response that never completed must not look complete. */
    if (!s->ng_closed && !s->eof) stream_reset(s, NGHTTP2_INTERNAL_ERROR);
    /* A tunnel whose client side is still open once our END_STREAM went
     * out: nothing more will be read (on_frame_send resets it if our
     * END_STREAM is still queued). */
    if (s->tunnel && !s->ng_closed && !s->body_done && nghttp2_session_get_stream_local_close(s->c->sess, s->id) == 1)
        stream_reset(s, NGHTTP2_NO_ERROR);
    /* Unread request body is dropped and acknowledged. */
    if (s->in.len && !s->ng_closed) nghttp2_session_consume_stream(s->c->sess, s->id, s->in.len);
    s->in.len = 0;
    pt_buf_release(&s->in);
    maybe_reap(s);
}

static uint64_t ds_bytes_sent(void *stream) { return ((h2_stream *)stream)->sent; }

/* Tunnels (RFC 8441): after the 200, the stream's DATA both ways is raw
 * bytes; the response buffer and the request buffer (unacknowledged until
 * taken) give backpressure, END_STREAM is the half-close. */
static void ds_tunnel_start(void *stream)
{
    h2_stream *s = stream;
    s->tunnel = true;
}

static bool ds_tunnel_send(void *stream, const char *data, size_t len) { return ds_send_body(stream, data, len); }

static void ds_tunnel_read(void *stream, bool want)
{
    h2_stream *s = stream;
    s->tunnel_read = want;
    if (tunnel_wants(s) && (s->in.len || (s->body_done && !s->last_delivered)))
        pt_defer_queue(conn_loop(s->c), &s->c->deliver_defer, deliver_cb, s->c);
}

static void ds_tunnel_shutdown(void *stream) { ds_send_end(stream, PT_STR_NULL); }

static const pt_downstream_ops h2_ops = {
    .send_informational = ds_send_informational,
    .send_head = ds_send_head,
    .send_body = ds_send_body,
    .send_end = ds_send_end,
    .want_body = ds_want_body,
    .abort = ds_abort,
    .finished = ds_finished,
    .bytes_sent = ds_bytes_sent,
    .tunnel_start = ds_tunnel_start,
    .tunnel_send = ds_tunnel_send,
    .tunnel_read = ds_tunnel_read,
    .tunnel_shutdown = ds_tunnel_shutdown,
};

/* ------------------------------------------------------------------ output */

/* Wakes txns whose stream buffer drained below the low watermark. */
static void wake_writers(h2_conn *c)
{
    for (h2_stream *s = c->streams; s && !c->closed; s = s->next)
        if (s->blocked && !s->txn_done && s->out.len < STREAM_OUT_LOW) {
            s->blocked = false;
            pt_txn_on_downstream_writable(s->txn);
        }
}

/* Serialises pending frames (nghttp2_session_mem_send) into wbuf and writes
 * it; runs from the loop only (never inside nghttp2 or txn callbacks).
 * Closes the connection when the session is over. */
static void conn_flush(h2_conn *c)
{
    if (c->closed) return;
    for (;;) {
        while (c->wbuf.len < WBUF_HIGH && !c->write_failed) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->sess, &data);
            if (n < 0) {
                conn_close(c);
                return;
            }
            if (n == 0) break;
            pt_buf_append(&c->wbuf, data, (size_t)n);
        }
        if (!c->wbuf.len || c->write_failed) break;
        ssize_t n = pt_sock_send(c->base.io.fd, c->base.ssl, pt_buf_head(&c->wbuf), c->wbuf.len);
        if (n > 0) {
            pt_buf_consume(&c->wbuf, (size_t)n);
            c->progressed = true;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        c->write_failed = true;
        break;
    }
    if (c->write_failed) {
        conn_close(c);
        return;
    }
    if (!c->wbuf.len) pt_buf_release(&c->wbuf);
    wake_writers(c);
    if (c->closed) return;
    bool session_over = !nghttp2_session_want_read(c->sess) && !nghttp2_session_want_write(c->sess);
    if (!c->wbuf.len && (session_over || c->close_after_flush || c->peer_closed ||
                         (c->draining && c->nstreams == 0))) {
        if (!c->close_after_flush || !nghttp2_session_want_write(c->sess)) {
            conn_close(c);
            return;
        }
    }
    conn_update_events(c);
    update_timer(c);
}

static void flush_cb(pt_loop *loop, pt_defer *d) { conn_flush(d->data); }

static void schedule_flush(h2_conn *c)
{
    if (!c->closed) pt_defer_queue(conn_loop(c), &c->flush_defer, flush_cb, c);
}

/* ------------------------------------------------------------------- input */

/* Whether to read the client now. Besides a finished input side, reading
 * pauses while nghttp2 holds H2_OUTQ_PAUSE or more frames other than DATA
 * (RST_STREAM, ACKs, response HEADERS...) that the stalled output could not
 * take: a client that does not read (or advertises a zero TCP window) could
 * otherwise make nghttp2 queue without bound, e.g. the REFUSED_STREAM resets
 * of a reset flood (CVE-2019-9514), which count toward the rapid-reset
 * limit only once serialised. DATA is not counted, so a large download
 * never stops the client's WINDOW_UPDATEs and new requests from being read.
 * conn_flush re-evaluates this whenever the output progresses. */
static bool want_input(h2_conn *c)
{
    return !c->stop_reading && !c->peer_closed && nghttp2_session_get_outbound_queue_size(c->sess) < H2_OUTQ_PAUSE;
}

static void read_defer_cb(pt_loop *loop, pt_defer *d)
{
    h2_conn *c = d->data;
    if (!c->closed && want_input(c)) on_readable(c);
}

static void conn_update_events(h2_conn *c)
{
    if (c->closed) return;
    bool read = want_input(c);
    if (read && c->base.ssl && SSL_pending(c->base.ssl) > 0) pt_defer_queue(conn_loop(c), &c->read_defer, read_defer_cb, c);
    uint32_t ev = 0;
    if (read) ev |= EPOLLIN | EPOLLRDHUP;
    if (c->wbuf.len) ev |= EPOLLOUT;
    pt_io_modify(conn_loop(c), &c->base.io, ev);
}

/* Feeds received bytes to nghttp2. A fatal error (bad preface, flood,
 * callback failure) stops reading; whatever nghttp2 queued (GOAWAY) is
 * flushed before the connection closes. */
static void feed(h2_conn *c, const char *p, size_t n)
{
    if (c->stop_reading) return;
    c->in_recv = true;
    ssize_t r = nghttp2_session_mem_recv(c->sess, (const uint8_t *)p, n);
    c->in_recv = false;
    if (c->calm_pending) { /* see calm_down */
        c->calm_pending = false;
        nghttp2_session_terminate_session(c->sess, NGHTTP2_ENHANCE_YOUR_CALM);
        schedule_flush(c);
    }
    if (r < 0) {
        c->stop_reading = true;
        c->close_after_flush = true;
    }
}

static void on_readable(h2_conn *c)
{
    char buf[READ_CHUNK];
    for (int rounds = 0; rounds < 8 && !c->closed && want_input(c); rounds++) {
        ssize_t n = pt_sock_recv(c->base.io.fd, c->base.ssl, buf, sizeof(buf));
        if (n > 0) {
            feed(c, buf, (size_t)n);
            continue;
        }
        if (n == 0) {
            c->peer_closed = true;
            break;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        c->peer_closed = true;
        break;
    }
    if (c->closed) return;
    if (c->peer_closed) {
        conn_close(c); /* open txns are told the client went away */
        return;
    }
    conn_update_events(c); /* re-queues the read if OpenSSL holds more */
    schedule_flush(c);
}

static void on_io(pt_loop *loop, pt_io *io, uint32_t events)
{
    h2_conn *c = io->data;
    if (c->closed) return;
    if (events & (EPOLLERR | EPOLLHUP)) {
        conn_close(c);
        return;
    }
    if (events & EPOLLOUT) {
        conn_flush(c);
        if (c->closed) return;
    }
    if ((events & (EPOLLIN | EPOLLRDHUP)) && want_input(c)) on_readable(c);
}

/* --------------------------------------------------------------- lifecycle */

/* Closes now: open txns are told the client is gone, streams and the
 * session are freed, then the shared connection closes (socket, TLS,
 * counts; the struct is freed after this loop iteration). Must not run
 * inside an nghttp2 or txn callback. */
static void conn_close(h2_conn *c)
{
    if (c->closed) return;
    pt_worker *w = c->base.w;
    c->closed = true;
    for (h2_stream *s = c->streams; s; s = s->next)
        if (!s->txn_done && s->txn) {
            pt_txn *t = s->txn;
            s->txn_done = true;
            pt_txn_on_downstream_closed(t);
        }
    while (c->streams) stream_free(c, c->streams);
    nghttp2_session_del(c->sess);
    c->sess = NULL;
    pt_timer_stop(w->loop, &c->head_timer);
    pt_defer_cancel(w->loop, &c->flush_defer);
    pt_defer_cancel(w->loop, &c->deliver_defer);
    pt_defer_cancel(w->loop, &c->reap_defer);
    pt_defer_cancel(w->loop, &c->read_defer);
    pt_buf_release(&c->wbuf);
    pt_conn_close(&c->base, !c->peer_closed && !c->write_failed);
}

static nghttp2_session_callbacks *make_callbacks(void)
{
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0) return NULL;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_invalid_header_callback(cb, on_invalid_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_begin_frame_callback(cb, on_begin_frame);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    return cb;
}

void pt_h2_conn_start(pt_conn *base, const char *initial, size_t initial_len)
{
    h2_conn *c = (h2_conn *)base;
    pt_worker *w = base->w;
    base->proto = &h2_proto;
    base->io.cb = on_io;
    const pt_config *cfg = w->wgen->gen->cfg;
    c->max_header_size = cfg->limits.max_header_size;
    c->max_headers = cfg->limits.max_headers;
    c->idle_ms = cfg->timeouts.idle_ms;
    c->header_ms = cfg->timeouts.header_ms;
    c->reset_window_start = pt_loop_now(w->loop);

    nghttp2_session_callbacks *cb = make_callbacks();
    nghttp2_option *opt = NULL;
    bool ok = cb && nghttp2_option_new(&opt) == 0;
    if (ok) {
        nghttp2_option_set_no_auto_window_update(opt, 1);
        ok = nghttp2_session_server_new2(&c->sess, cb, c, opt) == 0;
    }
    if (opt) nghttp2_option_del(opt);
    if (cb) nghttp2_session_callbacks_del(cb);
    if (ok) {
        nghttp2_settings_entry iv[] = {
            {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, cfg->limits.http2_max_concurrent_streams},
            {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_INITIAL_WINDOW},
            {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, c->max_header_size},
            {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1}, /* RFC 8441: WebSocket over HTTP/2 */
        };
        ok = nghttp2_submit_settings(c->sess, NGHTTP2_FLAG_NONE, iv, PT_ARRAY_LEN(iv)) == 0 &&
             nghttp2_session_set_local_window_size(c->sess, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW) == 0;
    }
    if (!ok) {
        conn_close(c);
        return;
    }
    if (w->draining) h2_drain(base);
    if (initial_len) feed(c, initial, initial_len);
    if (c->closed) return;
    /* OpenSSL may already hold decrypted bytes that epoll will not announce */
    if (base->ssl) pt_defer_queue(w->loop, &c->read_defer, read_defer_cb, c);
    schedule_flush(c);
    update_timer(c);
    conn_update_events(c);
}

/* Graceful drain: GOAWAY (last stream id = the last one accepted), finish
 * the open streams, then close; an idle connection closes once the GOAWAY
 * is written. */
static void h2_drain(pt_conn *base)
{
    h2_conn *c = (h2_conn *)base;
    if (c->closed || c->draining) return;
    c->draining = true;
    nghttp2_submit_goaway(c->sess, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->sess),
                          NGHTTP2_NO_ERROR, NULL, 0);
    schedule_flush(c);
}

static void h2_close(pt_conn *base) { conn_close((h2_conn *)base); }

static const pt_conn_proto h2_proto = {
    .name = "h2",
    .drain = h2_drain,
    .close = h2_close,
};

size_t pt_h2_conn_size(void) { return sizeof(h2_conn); }
