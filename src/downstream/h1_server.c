/* h1_server.c — see h1_server.h.
 *
 * Connection states:
 *   HEAD  waiting for / reading a request head (idle keep-alive when rbuf is
 *         empty: idle timeout; after the first byte: absolute header deadline)
 *   TXN   a transaction runs; the body is read only while the txn wants it
 *   DONE  the response is complete; flush, then the next request (pipelined
 *         bytes are already in rbuf) or close.
 *   TUNNEL after a 101 the socket carries raw bytes both ways
 *         (net/tunnel.h, docs/websocket.md); the connection closes when
 *         the tunnel ends.
 * Output is appended to wbuf and flushed once per loop iteration (a
 * deferred callback), so a small response costs one write(2).
 * Memory while idle: the struct only (pt_conn + ~170 bytes); buffers, the
 * arena and the per-request state in it (h1_req) go back to the worker's
 * caches between requests. The TLS handshake, peer identity, limits and
 * drain are the shared connection's (downstream/conn.h). */
#include "downstream/h1_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/buf.h"
#include "downstream/body_pace.h"
#include "downstream/h2_server.h"
#include "http/h1.h"
#include "net/tunnel.h"
#include "proxy/txn.h"
#include "server/worker.h"
#include "net/tls_io.h"

#define ZEROCOPY_MIN 4096u /* body pieces at least this large are written with writev */
#define READ_CHUNK 16384u
/* After a local response, up to this much unread request body is read and
 * dropped so the connection stays usable; more than that closes it. */
#define DISCARD_MAX (1024u * 1024)

enum { ST_HEAD, ST_TXN, ST_CLOSED, ST_TUNNEL };
enum { TM_NONE, TM_IDLE, TM_HEADER, TM_BODY, TM_SEND };
/* c->splice: which body moves through the txn's pipe (txn.h splice_*) */
enum { DS_SPLICE_NONE = 0, DS_SPLICE_REQUEST, DS_SPLICE_RESPONSE };
/* Deferred work (one pt_defer, a bit per kind): */
enum {
    WORK_BODY = 1,  /* deliver buffered request body bytes the txn now wants */
    WORK_READ = 2,  /* TLS: decrypted bytes may be pending inside OpenSSL */
    WORK_NEXT = 4,  /* serve the next (pipelined) request */
    WORK_CLOSE = 8, /* the tunnel is over: close */
};

/* What one request needs beyond the connection: allocated in the request
 * arena with it (ensure_request) and gone with it (release_request), so an
 * idle keep-alive connection does not carry it. */
typedef struct h1_req {
    pt_request *req;
    pt_chunked_decoder *dec;
    uint64_t body_remaining;
    pt_body_pace pace; /* request body clock: timeouts.body, limits.min_body_rate */
    pt_h1_info info;
    uint64_t sent;     /* response bytes queued for this request (access log) */
    uint64_t discarded;
    bool body_large;   /* the body's reads fill the buffer: read it in large blocks (core/buf.h) */
} h1_req;

struct pt_h1_conn {
    pt_conn base;      /* first: the shared connection (downstream/conn.h) */
    pt_defer flush_defer;
    pt_defer work_defer; /* WORK_* bits in `work` */
    pt_buf rbuf, wbuf;
    pt_arena *arena;   /* the current request's, or NULL between requests */
    h1_req *rq;        /* in arena */
    pt_txn *txn;
    pt_tunnel_sock *tun; /* after a 101 (heap: idle connections stay small); freed with the struct */
    uint32_t nrequests;
    /* Whether the client saw any of the current response: until then its
     * head sits in wbuf after `resp_prefix` unsent bytes of earlier output,
     * and can be taken back (ds_retract). */
    uint32_t resp_prefix;
    uint8_t state;
    uint8_t timer_kind;
    uint8_t work;
    uint8_t version;
    uint8_t splice;    /* DS_SPLICE_*: the socket is one end of the txn's splice */
    bool splice_wait;  /* response splice: the txn waits for the socket to be writable */
    bool want_body;
    bool body_done;
    bool txn_done;     /* txn called finished() */
    bool resp_chunked; /* writing a chunked response */
    bool resp_close;   /* close-delimited response body */
    bool close_after;  /* close once wbuf is flushed */
    bool sent_100;
    bool peer_closed;
    bool reading;      /* EPOLLIN wanted */
    bool in_disabled;  /* EPOLLIN removed because unwanted bytes arrived */
    bool discarding;   /* txn is over; dropping the rest of the request body */
    bool write_failed; /* a write failed inside a txn callback: close from the loop */
    bool resp_open;    /* a final head was queued for the current request */
    bool resp_visible; /* some byte of it reached the socket */
    bool tunnel_abort; /* the txn aborted the tunnel: close without waiting */
};

static const pt_downstream_ops ds_ops;
static void conn_close(pt_h1_conn *c);
static void schedule_flush(pt_h1_conn *c);
static void conn_update_events(pt_h1_conn *c);
static void process_input(pt_h1_conn *c);
static void deliver_body(pt_h1_conn *c);
static void queue_work(pt_h1_conn *c, uint8_t work);
static bool conn_wants_read(const pt_h1_conn *c);
static void release_request(pt_h1_conn *c);

static inline const pt_config *conn_cfg(const pt_h1_conn *c) { return c->base.w->wgen->gen->cfg; }

/* Output watermarks: above the high one (limits.output_buffer) the txn is
 * told to stop producing (backpressure) and no pipelined request is read;
 * below the low one it is woken again. They bound what a connection whose
 * client does not read holds: the high mark plus one piece. */
static inline uint32_t wbuf_high(const pt_h1_conn *c) { return conn_cfg(c)->limits.output_buffer; }
static inline uint32_t wbuf_low(const pt_h1_conn *c) { return conn_cfg(c)->limits.output_buffer / 4; }

static void set_timer(pt_h1_conn *c, int kind, uint64_t deadline);
static void body_pace_update(pt_h1_conn *c);
static void body_expired(pt_h1_conn *c, uint64_t now);

/* ------------------------------------------------------------------ output */

/* n bytes of wbuf's front reached the socket. */
static void note_written(pt_h1_conn *c, size_t n)
{
    if (!c->resp_open || c->resp_visible) return;
    if (n > c->resp_prefix) c->resp_visible = true;
    else c->resp_prefix -= (uint32_t)n;
}

static void flush_now_ex(pt_h1_conn *c, bool in_txn_callback)
{
    if (c->state == ST_TUNNEL) return; /* the tunnel writes its own output */
    if (c->write_failed) {
        conn_close(c);
        return;
    }
    bool progressed = false;
    while (c->wbuf.len) {
        ssize_t n = pt_sock_send(c->base.io.fd, c->base.ssl, pt_buf_head(&c->wbuf), c->wbuf.len);
        if (n > 0) {
            pt_buf_consume(&c->wbuf, (size_t)n);
            note_written(c, (size_t)n);
            progressed = true;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            /* TLS: OpenSSL may already have encrypted (committed) bytes of
             * the current response into a record it will retry; they can no
             * longer be taken back (ds_retract). */
            if (c->base.ssl && c->resp_open && c->wbuf.len > c->resp_prefix) c->resp_visible = true;
            break;
        }
        /* EPIPE / ECONNRESET: the client is gone. Inside a txn callback the
         * txn must not be finished under its feet: close from the loop. */
        if (in_txn_callback) {
            c->write_failed = true;
            c->wbuf.len = 0;
            schedule_flush(c);
            return;
        }
        conn_close(c);
        return;
    }
    if (!c->wbuf.len) {
        pt_buf_release(&c->wbuf);
        if (c->timer_kind == TM_SEND) {
            bool idle = c->state == ST_HEAD && !c->txn && !c->rbuf.len;
            set_timer(c, idle ? TM_IDLE : TM_NONE, pt_loop_now(c->base.w->loop) + conn_cfg(c)->timeouts.idle_ms);
        }
        if (c->txn && !c->txn_done) pt_txn_on_downstream_writable(c->txn);
        if (c->state == ST_CLOSED) return;
        if (c->txn_done && c->close_after) {
            conn_close(c);
            return;
        }
    } else {
        /* Send inactivity timeout: every bit of progress restarts it. */
        if (progressed || c->timer_kind != TM_SEND)
            set_timer(c, TM_SEND, pt_loop_now(c->base.w->loop) + conn_cfg(c)->timeouts.idle_ms);
        if (c->wbuf.len < wbuf_low(c) && c->txn && !c->txn_done) pt_txn_on_downstream_writable(c->txn);
    }
    if (c->state == ST_HEAD && !c->txn && c->rbuf.len && c->wbuf.len < wbuf_low(c) && !c->close_after)
        queue_work(c, WORK_NEXT);
    if (c->state != ST_CLOSED) conn_update_events(c);
}

static void flush_now(pt_h1_conn *c) { flush_now_ex(c, false); }

static void flush_cb(pt_loop *loop, pt_defer *d) { flush_now(d->data); }

static void schedule_flush(pt_h1_conn *c) { pt_defer_queue(c->base.w->loop, &c->flush_defer, flush_cb, c); }

static void append_lit(pt_buf *b, const char *s) { pt_buf_append(b, s, strlen(s)); }

static void append_u64(pt_buf *b, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[sizeof(tmp) - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    pt_buf_append(b, tmp + sizeof(tmp) - n, (size_t)n);
}

static void write_status_line(pt_h1_conn *c, int status)
{
    pt_buf *b = &c->wbuf;
    const char *reason = pt_status_reason(status);
    pt_buf_reserve(b, 64);
    append_lit(b, "HTTP/1.1 ");
    append_u64(b, (uint64_t)status);
    pt_buf_append(b, " ", 1);
    append_lit(b, reason);
    pt_buf_append(b, "\r\n", 2);
}

static void write_headers(pt_buf *b, const pt_headers *h)
{
    for (uint32_t i = 0; i < h->n; i++) {
        const pt_header *f = &h->v[i];
        pt_buf_reserve(b, f->name.n + f->value.n + 4);
        char *p = pt_buf_tail(b);
        memcpy(p, f->name.p, f->name.n);
        p += f->name.n;
        *p++ = ':';
        *p++ = ' ';
        memcpy(p, f->value.p, f->value.n);
        p += f->value.n;
        *p++ = '\r';
        *p++ = '\n';
        b->len += (uint32_t)(f->name.n + f->value.n + 4);
    }
}

static void ds_send_informational(void *stream, const pt_response *res)
{
    pt_h1_conn *c = stream;
    if (c->version < 11 || res->status == 100 || res->status == 101) return;
    uint32_t before = c->wbuf.len;
    write_status_line(c, res->status);
    write_headers(&c->wbuf, &res->headers);
    pt_buf_append(&c->wbuf, "\r\n", 2);
    c->rq->sent += c->wbuf.len - before;
    schedule_flush(c);
}

static void ds_send_head(void *stream, const pt_response *res)
{
    pt_h1_conn *c = stream;
    pt_buf *b = &c->wbuf;
    int st = res->status;
    bool bodiless_status = st < 200 || st == 204 || st == 304;
    bool head_req = c->rq->req && c->rq->req->method == PT_METHOD_HEAD;

    c->resp_chunked = c->resp_close = false;
    uint32_t before = b->len;
    c->resp_open = true;
    c->resp_visible = false;
    c->resp_prefix = before;
    if (res->close_connection || c->peer_closed || !c->rq->info.keep_alive || c->base.w->draining ||
        (!c->body_done && c->rq->info.body == PT_H1_BODY_LENGTH && c->rq->body_remaining > DISCARD_MAX))
        c->close_after = true;

    write_status_line(c, st);
    write_headers(b, &res->headers);
    if (!bodiless_status) {
        if (res->content_length >= 0) {
            append_lit(b, "Content-Length: ");
            append_u64(b, (uint64_t)res->content_length);
            pt_buf_append(b, "\r\n", 2);
        } else if (res->has_body && !head_req) {
            if (c->version >= 11) {
                c->resp_chunked = true;
                append_lit(b, "Transfer-Encoding: chunked\r\n");
            } else {
                c->resp_close = true;
                c->close_after = true;
            }
        }
    }
    if (st == 101) { /* a tunnel opens (ds_tunnel_start follows) */
        append_lit(b, "Upgrade: ");
        pt_buf_append(b, res->upgrade.p, res->upgrade.n);
        append_lit(b, "\r\nConnection: Upgrade\r\n");
    } else if (c->close_after) {
        append_lit(b, "Connection: close\r\n");
    } else if (c->version == 10) {
        append_lit(b, "Connection: keep-alive\r\n");
    }
    pt_buf_append(b, "\r\n", 2);
    c->rq->sent += b->len - before;
    schedule_flush(c);
    body_pace_update(c); /* the response started: the slow-body clock stops */
}

static bool ds_send_body(void *stream, const char *data, size_t len)
{
    pt_h1_conn *c = stream;
    if (c->write_failed) return false;
    if (!len) return c->wbuf.len < wbuf_high(c);
    if (c->rq->req && c->rq->req->method == PT_METHOD_HEAD) return true;
    char hdr[24];
    struct iovec iov[3];
    int n = 0;
    size_t total = len;
    if (c->resp_chunked) {
        size_t hn = pt_chunk_header(hdr, len);
        iov[n++] = (struct iovec){hdr, hn};
        total += hn + 2;
    }
    iov[n++] = (struct iovec){(void *)data, len};
    if (c->resp_chunked) iov[n++] = (struct iovec){"\r\n", 2};
    c->rq->sent += total;
    /* Output is batched: queue until the high watermark (flushed once per
     * loop iteration). At the watermark, one writev(2) sends the queue plus
     * this piece without copying it — unless the socket is known to be full
     * (waiting for EPOLLOUT), where writing would only trickle. */
    if (total < ZEROCOPY_MIN || c->wbuf.len + total < wbuf_high(c) || (c->base.io.events & EPOLLOUT) || c->base.ssl) {
        for (int i = 0; i < n; i++) pt_buf_append(&c->wbuf, iov[i].iov_base, iov[i].iov_len);
        if (c->wbuf.len >= wbuf_high(c)) {
            flush_now_ex(c, true); /* try at once; the caller pauses if still high */
            if (c->write_failed) return false;
        } else {
            schedule_flush(c);
        }
        return c->wbuf.len < wbuf_high(c);
    }
    size_t queued = c->wbuf.len + total;
    int wrc = pt_buf_writev(c->base.io.fd, &c->wbuf, iov, n);
    if (wrc != PT_ERR) note_written(c, queued - c->wbuf.len);
    if (wrc == PT_ERR) {
        /* inside a txn callback: close from the loop */
        c->write_failed = true;
        c->wbuf.len = 0;
        schedule_flush(c);
        return false;
    }
    if (c->wbuf.len) {
        if (c->timer_kind != TM_SEND)
            set_timer(c, TM_SEND, pt_loop_now(c->base.w->loop) + conn_cfg(c)->timeouts.idle_ms);
        conn_update_events(c);
    }
    return c->wbuf.len < wbuf_high(c);
}

static void ds_send_end(void *stream, pt_str trailers)
{
    pt_h1_conn *c = stream;
    if (c->resp_chunked) {
        append_lit(&c->wbuf, "0\r\n");
        pt_buf_append(&c->wbuf, trailers.p, trailers.n);
        pt_buf_append(&c->wbuf, "\r\n", 2);
        c->rq->sent += 5 + trailers.n;
    }
    schedule_flush(c);
}

static void ds_want_body(void *stream, bool want)
{
    pt_h1_conn *c = stream;
    if (c->body_done) return;
    c->want_body = want;
    if (want && c->rq->req && c->rq->req->expect_continue && !c->sent_100 && c->rbuf.len == 0) {
        append_lit(&c->wbuf, "HTTP/1.1 100 Continue\r\n\r\n");
        schedule_flush(c);
    }
    if (want) c->sent_100 = true;
    /* Buffered body bytes are delivered from the loop, never re-entrantly
     * from inside a txn callback. */
    if (want && c->rbuf.len) queue_work(c, WORK_BODY);
    body_pace_update(c);
    conn_update_events(c);
}

static void ds_abort(void *stream)
{
    pt_h1_conn *c = stream;
    if (c->state == ST_TUNNEL) {
        c->tunnel_abort = true; /* ds_finished closes at once */
        return;
    }
    /* Make the failure visible: drop the unsent bytes of this response
     * (earlier responses' bytes still go out) and close. */
    c->wbuf.len = c->resp_open && !c->resp_visible ? c->resp_prefix : 0;
    c->close_after = true;
}

/* Takes back a response none of whose bytes reached the client; the
 * connection closes after the response that replaces it. */
static bool ds_retract(void *stream)
{
    pt_h1_conn *c = stream;
    if (!c->resp_open || c->resp_visible || c->write_failed) return false;
    c->wbuf.len = c->resp_prefix;
    c->resp_open = false;
    c->resp_chunked = c->resp_close = false;
    c->rq->sent = 0;
    c->close_after = true;
    return true;
}

static void on_readable(pt_h1_conn *c);

/* Runs the deferred work: never re-entrantly from inside a txn callback. */
static void work_cb(pt_loop *loop, pt_defer *d)
{
    pt_h1_conn *c = d->data;
    uint8_t work = c->work;
    c->work = 0;
    if (c->state == ST_CLOSED) return;
    if (work & WORK_CLOSE) {
        conn_close(c);
        return;
    }
    if ((work & WORK_BODY) && c->state == ST_TXN) {
        deliver_body(c);
        if (c->state == ST_CLOSED) return;
        body_pace_update(c); /* stops TM_BODY once the body is complete */
        conn_update_events(c);
    }
    if ((work & WORK_READ) && c->state != ST_TUNNEL && conn_wants_read(c)) {
        on_readable(c);
        if (c->state == ST_CLOSED) return;
    }
    if (work & WORK_NEXT) process_input(c);
}

static void queue_work(pt_h1_conn *c, uint8_t work)
{
    c->work |= work;
    pt_defer_queue(c->base.w->loop, &c->work_defer, work_cb, c);
}

static void cancel_work(pt_h1_conn *c, uint8_t work)
{
    c->work &= (uint8_t)~work;
    if (!c->work) pt_defer_cancel(c->base.w->loop, &c->work_defer);
}

/* The current request's arena and per-request state (taken when the first
 * byte of a request head is parsed or a head timeout is answered). */
static void ensure_request(pt_h1_conn *c)
{
    if (c->arena) return;
    c->arena = pt_worker_arena_get(c->base.w);
    c->rq = pt_arena_calloc(c->arena, sizeof(*c->rq));
}

/* Returns the finished request's arena (and what lives in it) to the worker. */
static void release_request(pt_h1_conn *c)
{
    c->rq = NULL;
    if (c->arena) {
        pt_worker_arena_put(c->base.w, c->arena);
        c->arena = NULL;
    }
}

static void tunnel_finished(pt_h1_conn *c);

static void ds_finished(void *stream)
{
    pt_h1_conn *c = stream;
    c->splice = DS_SPLICE_NONE; /* the txn ended its splice */
    c->splice_wait = false;
    c->txn_done = true;
    c->txn = NULL;
    if (c->rq) c->rq->req = NULL;
    c->want_body = false;
    if (c->state == ST_CLOSED) return; /* called from conn_close: it cleans up */
    if (c->state == ST_TUNNEL) {
        tunnel_finished(c);
        return;
    }
    if (!c->body_done && !c->close_after) {
        /* Drop the rest of the body, then serve the next request. The arena
         * (which holds the chunked decoder) is kept until then. */
        c->discarding = true;
        c->rq->discarded = 0;
        c->want_body = true;
        body_pace_update(c);
        queue_work(c, WORK_BODY);
        conn_update_events(c);
        return;
    }
    release_request(c);
    c->state = ST_HEAD;
    if (c->close_after) {
        if (!c->wbuf.len) {
            /* nothing pending (or aborted): close after this iteration */
            schedule_flush(c);
        }
        return;
    }
    queue_work(c, WORK_NEXT);
}

static uint64_t ds_bytes_sent(void *stream)
{
    pt_h1_conn *c = stream;
    return c->rq ? c->rq->sent : 0;
}

/* ----------------------------------------------------------------- tunnel */

static void tun_data(void *o, const char *data, size_t len)
{
    pt_h1_conn *c = o;
    if (c->txn && !c->txn_done) pt_txn_on_tunnel_data(c->txn, data, len);
}

static void tun_eof(void *o)
{
    pt_h1_conn *c = o;
    c->peer_closed = true;
    if (c->txn && !c->txn_done) pt_txn_on_tunnel_eof(c->txn);
}

static void tun_writable(void *o)
{
    pt_h1_conn *c = o;
    if (c->txn && !c->txn_done) pt_txn_on_downstream_writable(c->txn);
}

static void tun_shutdown(void *o)
{
    pt_h1_conn *c = o;
    if (c->txn_done) conn_close(c); /* the tunnel is over and our FIN is out */
}

static void tun_error(void *o)
{
    pt_h1_conn *c = o;
    c->write_failed = true; /* no close_notify on a dead socket */
    conn_close(c);          /* tells a live txn the client is gone */
}

static const pt_tunnel_cbs tun_cbs = {
    .on_data = tun_data,
    .on_eof = tun_eof,
    .on_writable = tun_writable,
    .on_shutdown = tun_shutdown,
    .on_error = tun_error,
};

/* After the 101 head (still queued in wbuf): the socket becomes a tunnel;
 * bytes the client sent after its request head are its first bytes. */
static void ds_tunnel_start(void *stream)
{
    pt_h1_conn *c = stream;
    c->state = ST_TUNNEL;
    c->tun = pt_xcalloc(1, sizeof(*c->tun));
    set_timer(c, TM_NONE, 0);
    pt_defer_cancel(c->base.w->loop, &c->flush_defer);
    cancel_work(c, WORK_BODY | WORK_READ);
    pt_tunnel_sock_start(c->tun, c->base.w->loop, &c->base.io, c->base.ssl, &c->rbuf, &c->wbuf, c->peer_closed, &tun_cbs, c);
}

static bool ds_tunnel_send(void *stream, const char *data, size_t len)
{
    pt_h1_conn *c = stream;
    c->rq->sent += len;
    return pt_tunnel_sock_send(c->tun, data, len);
}

static void ds_tunnel_read(void *stream, bool want) { pt_tunnel_sock_read(((pt_h1_conn *)stream)->tun, want); }

static void ds_tunnel_shutdown(void *stream) { pt_tunnel_sock_shutdown(((pt_h1_conn *)stream)->tun); }

/* The txn ended the tunnel: the connection closes once our FIN is out (at
 * once after an abort); a client that does not take its last bytes is
 * bounded by timeouts.idle (TM_SEND). */
static void tunnel_finished(pt_h1_conn *c)
{
    pt_tunnel_sock_read(c->tun, false);
    if (c->tunnel_abort || pt_tunnel_sock_done(c->tun)) {
        queue_work(c, WORK_CLOSE);
        return;
    }
    pt_tunnel_sock_shutdown(c->tun);
    set_timer(c, TM_SEND, pt_loop_now(c->base.w->loop) + conn_cfg(c)->timeouts.idle_ms);
}

/* ---------------------------------------------------------------- splicing */

static int ds_splice_fd(void *stream, bool response, bool take, uint64_t *remaining)
{
    pt_h1_conn *c = stream;
    if (c->base.ssl || c->state != ST_TXN || !c->rq || !c->rq->req || c->version != 11 || c->write_failed ||
        c->splice != DS_SPLICE_NONE || !c->txn || c->txn_done)
        return -1;
    if (response) {
        if (!c->resp_open || c->resp_chunked || c->resp_close || c->wbuf.len ||
            c->rq->req->method == PT_METHOD_HEAD)
            return -1;
        if (!take) return c->base.io.fd;
        c->splice = DS_SPLICE_RESPONSE;
    } else {
        if (c->rq->info.body != PT_H1_BODY_LENGTH || c->body_done || c->discarding || c->rbuf.len ||
            c->peer_closed || !c->rq->body_remaining)
            return -1;
        *remaining = c->rq->body_remaining;
        if (!take) return c->base.io.fd;
        c->splice = DS_SPLICE_REQUEST;
        pt_buf_release(&c->rbuf);
    }
    c->splice_wait = false;
    return c->base.io.fd;
}

static void ds_splice_wait(void *stream, bool wait)
{
    pt_h1_conn *c = stream;
    if (c->state != ST_TXN || c->splice != DS_SPLICE_RESPONSE) return;
    c->splice_wait = wait;
    /* a client that does not take the spliced bytes: timeouts.idle, as for queued output */
    if (wait && c->timer_kind != TM_SEND)
        set_timer(c, TM_SEND, pt_loop_now(c->base.w->loop) + conn_cfg(c)->timeouts.idle_ms);
    else if (!wait && c->timer_kind == TM_SEND && !c->wbuf.len)
        set_timer(c, TM_NONE, 0);
    conn_update_events(c);
}

static void ds_splice_moved(void *stream, bool response, uint64_t n)
{
    pt_h1_conn *c = stream;
    if (!n || c->state != ST_TXN || !c->rq) return;
    uint64_t now = pt_loop_now(c->base.w->loop);
    if (response) {
        c->rq->sent += n;
        c->resp_visible = true;
        if (c->timer_kind == TM_SEND) set_timer(c, TM_SEND, now + conn_cfg(c)->timeouts.idle_ms);
        return;
    }
    PT_ASSERT(n <= c->rq->body_remaining);
    c->rq->body_remaining -= n;
    pt_body_pace_progress(&c->rq->pace, n, now);
    if (!c->rq->body_remaining) c->body_done = true;
}

static void ds_splice_end(void *stream, pt_splice_end how)
{
    pt_h1_conn *c = stream;
    c->splice = DS_SPLICE_NONE;
    c->splice_wait = false;
    if (c->state != ST_TXN) return;
    if (how == PT_SPLICE_END_FAIL) {
        /* the client is gone: close from the loop, never inside the txn */
        c->peer_closed = true;
        c->write_failed = true;
        c->wbuf.len = 0;
        schedule_flush(c);
        return;
    }
    if (c->timer_kind == TM_SEND && !c->wbuf.len) set_timer(c, TM_NONE, 0);
    body_pace_update(c);
    conn_update_events(c);
}

/* The client socket of a request splice is readable (the txn wants the body). */
static void splice_readable(pt_h1_conn *c)
{
    uint64_t now = pt_loop_now(c->base.w->loop);
    if (c->rq->pace.running && now >= pt_body_pace_deadline(&c->rq->pace, c->rq->pace.gap_ms, c->rq->pace.min_rate)) {
        body_expired(c, now);
        return;
    }
    pt_txn_on_splice_io(c->txn);
    if (c->state == ST_CLOSED) return;
    body_pace_update(c);
    conn_update_events(c);
}

static const pt_downstream_ops ds_ops = {
    .bytes_sent = ds_bytes_sent,
    .send_informational = ds_send_informational,
    .send_head = ds_send_head,
    .send_body = ds_send_body,
    .send_end = ds_send_end,
    .want_body = ds_want_body,
    .abort = ds_abort,
    .retract = ds_retract,
    .finished = ds_finished,
    .tunnel_start = ds_tunnel_start,
    .tunnel_send = ds_tunnel_send,
    .tunnel_read = ds_tunnel_read,
    .tunnel_shutdown = ds_tunnel_shutdown,
    .splice_fd = ds_splice_fd,
    .splice_wait = ds_splice_wait,
    .splice_moved = ds_splice_moved,
    .splice_end = ds_splice_end,
};

/* ------------------------------------------------------------------- input */

/* Whether the connection wants request bytes now. */
static bool conn_wants_read(const pt_h1_conn *c)
{
    return !c->peer_closed && ((c->state == ST_HEAD && !c->txn && !c->close_after && c->wbuf.len < wbuf_high(c)) ||
                               (c->want_body && !c->body_done));
}

/* Interest in EPOLLIN is dropped lazily: it stays registered while a txn runs
 * (a typical client sends nothing then), and is removed only when bytes
 * arrive that we do not want yet (in_disabled). This saves two epoll_ctl
 * calls per request. */
static void conn_update_events(pt_h1_conn *c)
{
    if (c->state == ST_CLOSED || c->state == ST_TUNNEL) return;
    bool read = conn_wants_read(c);
    /* OpenSSL may hold decrypted bytes that epoll will never announce. */
    if (read && c->base.ssl && SSL_pending(c->base.ssl) > 0) queue_work(c, WORK_READ);
    c->reading = read;
    if (read) c->in_disabled = false;
    /* RDHUP is level-triggered: once seen, stop asking or the loop spins. */
    uint32_t ev = c->peer_closed ? 0 : EPOLLRDHUP;
    if (read || (!c->in_disabled && !c->peer_closed)) ev |= EPOLLIN;
    if (c->wbuf.len || (c->splice == DS_SPLICE_RESPONSE && c->splice_wait)) ev |= EPOLLOUT;
    pt_io_modify(c->base.w->loop, &c->base.io, ev);
}

/* Hands body bytes to the txn, or drops them when discarding. Returns false
 * if the connection was closed. */
static bool feed_body(pt_h1_conn *c, const char *p, size_t n, bool last)
{
    if (!c->discarding) {
        pt_txn_on_request_body(c->txn, p, n, last);
        return c->state != ST_CLOSED;
    }
    c->rq->discarded += n;
    if (c->rq->discarded > DISCARD_MAX) {
        conn_close(c);
        return false;
    }
    if (last) {
        c->discarding = false;
        c->want_body = false;
        release_request(c);
        c->state = ST_HEAD;
        set_timer(c, TM_NONE, 0);
        queue_work(c, WORK_NEXT);
    }
    return true;
}

/* Feeds buffered body bytes to the txn while it wants them (or discards). */
static void deliver_body(pt_h1_conn *c)
{
    while (c->want_body && !c->body_done && c->state != ST_CLOSED &&
           (c->discarding || (c->txn && !c->txn_done))) {
        if (c->rq->info.body == PT_H1_BODY_LENGTH) {
            size_t n = PT_MIN((uint64_t)c->rbuf.len, c->rq->body_remaining);
            if (!n && c->rq->body_remaining) return;
            c->rq->body_remaining -= n;
            bool last = c->rq->body_remaining == 0;
            const char *p = pt_buf_head(&c->rbuf);
            if (last) c->body_done = true;
            pt_buf_consume(&c->rbuf, n);
            if (!feed_body(c, p, n, last) || last) return;
        } else {
            if (!c->rbuf.len) return;
            const char *data = NULL;
            size_t dlen = 0;
            pt_h1_error err = {0, NULL};
            ssize_t used = pt_chunked_decode(c->rq->dec, pt_buf_head(&c->rbuf), c->rbuf.len, &data, &dlen, &err);
            if (used < 0) {
                c->body_done = true;
                c->close_after = true;
                if (c->discarding) {
                    conn_close(c);
                    return;
                }
                pt_txn_on_request_error(c->txn, err.status ? err.status : 400,
                                        err.detail ? err.detail : "malformed chunked body");
                return;
            }
            bool last = c->rq->dec->done;
            if (last) c->body_done = true;
            if (last && c->rq->dec->trailers_len && !c->discarding)
                pt_txn_on_request_trailers(c->txn, pt_str_make(c->rq->dec->trailers, c->rq->dec->trailers_len));
            /* data points into rbuf; consume after the callback copied it */
            if ((dlen || last) && !feed_body(c, data, dlen, last)) return;
            pt_buf_consume(&c->rbuf, (size_t)used);
            if (used == 0 && !dlen) return;
            if (last) return;
        }
    }
}

static pt_txn *new_txn(pt_h1_conn *c)
{
    pt_conn_info ci;
    pt_conn_info_fill(&c->base, c->arena, &ci);
    /* Every path that creates a txn (a request, a parse error, a header
     * timeout) must mark it live, or conn_close would skip it and it would
     * never finish (its generation and arena leak). */
    c->txn_done = false;
    return pt_txn_new(c->base.w, c->arena, &ds_ops, c, &ci, pt_loop_wall_us(c->base.w->loop));
}

static void start_request(pt_h1_conn *c, size_t head_len, pt_request *req, const pt_h1_info *info)
{
    pt_arena *a = c->arena;
    /* The parsed slices point into rbuf: move the head into the arena. */
    char *copy = pt_arena_alloc(a, head_len);
    memcpy(copy, pt_buf_head(&c->rbuf), head_len);
    pt_request_rebase(req, pt_buf_head(&c->rbuf), head_len, copy);
    pt_buf_consume(&c->rbuf, head_len);

    c->rq->info = *info;
    c->rq->req = req;
    if (c->base.ssl) req->scheme = PT_STR_LIT("https");
    c->version = req->version;
    c->body_done = info->body == PT_H1_BODY_NONE;
    c->rq->body_remaining = info->body == PT_H1_BODY_LENGTH ? info->content_length : 0;
    if (info->body == PT_H1_BODY_LENGTH && info->content_length == 0) c->body_done = true;
    if (info->body == PT_H1_BODY_CHUNKED) {
        c->rq->dec = pt_arena_alloc(a, sizeof(*c->rq->dec));
        pt_chunked_init(c->rq->dec);
    }
    c->sent_100 = false;
    c->want_body = false;
    /* body bytes that came with the head count as received */
    c->rq->pace = (pt_body_pace){.bytes = c->body_done ? 0 : c->rbuf.len};
    if (info->body == PT_H1_BODY_LENGTH) c->rq->pace.bytes = PT_MIN(c->rq->pace.bytes, c->rq->body_remaining);
    c->txn_done = false;
    c->state = ST_TXN;
    c->nrequests++;
    set_timer(c, TM_NONE, 0);
    conn_update_events(c);
    pt_txn_start(c->txn, req, head_len);
}

/* Hands the connection (fd, TLS session, bytes already read) to the HTTP/2
 * codec: the shared part moves (pt_conn_move), this struct is retired.
 * Only before the first request: no txn, no arena in use. */
static void handoff_h2(pt_h1_conn *c)
{
    c->state = ST_CLOSED;
    pt_defer_cancel(c->base.w->loop, &c->flush_defer);
    cancel_work(c, 0xff);
    release_request(c);
    pt_conn *n = pt_conn_move(&c->base, pt_h2_conn_size());
    if (n) pt_h2_conn_start(n, c->rbuf.len ? pt_buf_head(&c->rbuf) : NULL, c->rbuf.len);
    pt_buf_release(&c->rbuf);
    pt_buf_release(&c->wbuf);
}

static bool listener_http2(const pt_h1_conn *c)
{
    const pt_config *cfg = c->base.w->wgen->gen->cfg;
    return c->base.listener < cfg->nlisteners && cfg->listeners[c->base.listener].http2;
}

/* HTTP/2 with prior knowledge: whether the first bytes of a plaintext
 * connection are (the start of) the client preface. */
static bool rbuf_is_preface(const pt_h1_conn *c)
{
    return !c->base.ssl && c->nrequests == 0 && c->rbuf.len && listener_http2(c) &&
           memcmp(pt_buf_head(&c->rbuf), PT_H2_PREFACE, PT_MIN((size_t)c->rbuf.len, PT_H2_PREFACE_LEN)) == 0;
}

/* Parses as many requests as possible from rbuf (one at a time). */
static void process_input(pt_h1_conn *c)
{
    if (c->state != ST_HEAD || c->txn) return;
    if (rbuf_is_preface(c)) {
        if (c->rbuf.len >= PT_H2_PREFACE_LEN) {
            handoff_h2(c);
            return;
        }
        if (c->peer_closed) {
            conn_close(c);
            return;
        }
        /* wait for the rest of the preface, within the header deadline */
        if (c->timer_kind != TM_HEADER)
            set_timer(c, TM_HEADER, pt_loop_now(c->base.w->loop) + conn_cfg(c)->timeouts.header_ms);
        conn_update_events(c);
        return;
    }
    if (c->wbuf.len >= wbuf_high(c)) {
        /* The client is not reading its responses: stop taking pipelined
         * requests until the output drains (flush_now resumes us). */
        conn_update_events(c);
        return;
    }
    if (!c->rbuf.len) {
        pt_buf_release(&c->rbuf);
        if (c->peer_closed) {
            conn_close(c);
            return;
        }
        /* Pending output keeps its send timeout; flush_now arms the idle
         * timeout once it has drained. A new connection waits for its
         * first request within the header deadline armed at its start. */
        if (!c->wbuf.len) {
            uint64_t now = pt_loop_now(c->base.w->loop);
            if (c->nrequests) set_timer(c, TM_IDLE, now + conn_cfg(c)->timeouts.idle_ms);
            else if (c->timer_kind != TM_HEADER) set_timer(c, TM_HEADER, now + conn_cfg(c)->timeouts.header_ms);
        }
        conn_update_events(c);
        return;
    }
    if (c->timer_kind != TM_HEADER)
        set_timer(c, TM_HEADER, pt_loop_now(c->base.w->loop) + conn_cfg(c)->timeouts.header_ms);

    ensure_request(c);
    pt_request *req = pt_arena_calloc(c->arena, sizeof(*req));
    pt_h1_info info;
    pt_h1_error err = {0, NULL};
    ssize_t n = pt_h1_parse_request(pt_buf_head(&c->rbuf), c->rbuf.len, &c->base.w->wgen->gen->h1_limits, c->arena, req,
                                    &info, &err);
    if (n == PT_AGAIN) {
        if (c->peer_closed) conn_close(c);
        else conn_update_events(c);
        return;
    }
    c->rq->sent = 0;
    c->resp_open = false;
    c->txn = new_txn(c);
    if (n < 0) {
        /* Nothing reaches an upstream; answer and close. */
        c->state = ST_TXN;
        c->body_done = false;
        c->close_after = true;
        c->version = 11;
        set_timer(c, TM_NONE, 0);
        uint64_t received = c->rbuf.len;
        c->rbuf.len = 0;
        pt_txn_start_error(c->txn, req->method_str.n ? req : NULL, err.status ? err.status : 400,
                           err.detail ? err.detail : "malformed request", received);
        return;
    }
    start_request(c, (size_t)n, req, &info);
}

static void body_expired(pt_h1_conn *c, uint64_t now);

static void on_readable(pt_h1_conn *c)
{
    if (c->splice == DS_SPLICE_REQUEST && c->state == ST_TXN && c->txn && !c->txn_done) {
        splice_readable(c); /* the body goes into the txn's pipe */
        return;
    }
    for (int rounds = 0; rounds < 4; rounds++) {
        bool body = c->state == ST_TXN && c->rq;
        if (body && c->rq->body_large && !c->rbuf.len) pt_buf_reserve_large(&c->rbuf);
        pt_buf_reserve(&c->rbuf, READ_CHUNK / 4);
        size_t room = pt_buf_tailroom(&c->rbuf);
        ssize_t n = pt_sock_recv(c->base.io.fd, c->base.ssl, pt_buf_tail(&c->rbuf), room);
        if (n > 0) {
            /* A body read that filled a mostly empty buffer: more is
             * queued; read the rest of this body in large blocks. */
            if (body && (size_t)n == room && room >= PT_BUF_BLOCK / 2) c->rq->body_large = true;
            c->rbuf.len += (uint32_t)n;
            if (c->state == ST_TXN) pt_body_pace_progress(&c->rq->pace, (uint64_t)n, pt_loop_now(c->base.w->loop));
            if ((size_t)n < room && !c->base.ssl) break;
            if (c->state == ST_TXN) break; /* deliver before reading more */
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
    if (c->state == ST_HEAD) {
        if (!c->rbuf.len && c->peer_closed) {
            conn_close(c);
            return;
        }
        process_input(c);
        return;
    }
    if (c->state == ST_TXN) {
        if (c->want_body && !c->body_done) {
            /* Checked on each read too: the bytes just read may come too late
             * to meet limits.min_body_rate (the timer may not have run yet). */
            uint64_t now = pt_loop_now(c->base.w->loop);
            if (c->rq->pace.running &&
                now >= pt_body_pace_deadline(&c->rq->pace, c->rq->pace.gap_ms, c->rq->pace.min_rate)) {
                body_expired(c, now);
                if (c->state == ST_CLOSED) return;
            } else {
                deliver_body(c);
                if (c->state == ST_CLOSED) return;
            }
            body_pace_update(c);
        }
        if (c->peer_closed && c->txn && !c->txn_done && !c->body_done) {
            /* the client hung up in the middle of its request */
            pt_txn_on_downstream_closed(c->txn);
            conn_close(c);
            return;
        }
        conn_update_events(c);
    }
}

static void on_io(pt_loop *loop, pt_io *io, uint32_t events)
{
    pt_h1_conn *c = io->data;
    if (c->state == ST_CLOSED) return;
    if (c->state == ST_TUNNEL) {
        pt_tunnel_sock_io(c->tun, events);
        return;
    }
    if (events & (EPOLLERR | EPOLLHUP)) {
        if (c->txn && !c->txn_done) pt_txn_on_downstream_closed(c->txn);
        conn_close(c);
        return;
    }
    if (events & EPOLLOUT) {
        flush_now(c);
        if (c->state == ST_CLOSED) return;
    }
    if ((events & EPOLLIN) && !conn_wants_read(c) && !(events & EPOLLRDHUP)) {
        /* Bytes we do not want yet (pipelined request, early body): stop
         * listening until we do (see conn_update_events). */
        c->in_disabled = true;
        conn_update_events(c);
        return;
    }
    if ((events & EPOLLIN) && conn_wants_read(c)) {
        on_readable(c);
        return;
    }
    if (events & EPOLLRDHUP) {
        /* Peer shut down its side while we were not reading. */
        c->peer_closed = true;
        if (c->txn && !c->txn_done) {
            pt_txn_on_downstream_closed(c->txn);
            conn_close(c);
            return;
        }
        if (!c->wbuf.len) conn_close(c);
        else conn_update_events(c);
    }
}

/* ------------------------------------------------------------------ timers */

static void on_timer(pt_loop *loop, pt_timer *t)
{
    pt_h1_conn *c = t->data;
    int kind = c->timer_kind;
    c->timer_kind = TM_NONE;
    if (c->state == ST_CLOSED) return;
    switch (kind) {
    case TM_IDLE:
        conn_close(c);
        return;
    case TM_HEADER: {
        /* A new connection that sent no request (nothing, or part of the
         * h2c preface): just close. */
        if (c->nrequests == 0 && (!c->rbuf.len || rbuf_is_preface(c))) {
            conn_close(c);
            return;
        }
        /* Partial head: answer 408 and close. */
        ensure_request(c);
        c->rq->sent = 0;
        c->resp_open = false;
        c->txn = new_txn(c);
        c->state = ST_TXN;
        c->close_after = true;
        c->version = 11;
        uint64_t received = c->rbuf.len;
        c->rbuf.len = 0;
        pt_txn_start_error(c->txn, NULL, 408, "the request head was not received in time", received);
        return;
    }
    case TM_BODY: {
        /* Stale once the body is complete (the timer is not stopped there). */
        if (c->state != ST_TXN || !c->want_body || c->body_done) return;
        uint64_t now = pt_loop_now(loop);
        uint64_t due = pt_body_pace_deadline(&c->rq->pace, c->rq->pace.gap_ms, c->rq->pace.min_rate);
        if (due > now) { /* bytes arrived since it was armed: not late yet */
            set_timer(c, TM_BODY, due);
            return;
        }
        body_expired(c, now);
        return;
    }
    case TM_SEND:
        if (c->txn && !c->txn_done) pt_txn_on_downstream_closed(c->txn);
        conn_close(c);
        return;
    default:
        return;
    }
}

static void set_timer(pt_h1_conn *c, int kind, uint64_t deadline)
{
    c->timer_kind = (uint8_t)kind;
    if (kind == TM_NONE) pt_timer_stop(c->base.w->loop, &c->base.timer);
    else pt_timer_start_at(c->base.w->loop, &c->base.timer, deadline, on_timer, c);
}

/* Keeps the body clock (downstream/body_pace.h) and the TM_BODY timer in step with
 * whether the connection wants request body bytes now. While wanted, the
 * armed deadline is only moved earlier here: progress moves it later, and
 * on_timer re-arms when it fires early (no heap update per read). Once the
 * body is complete or not wanted, a TM_BODY timer is stopped. */
static void body_pace_update(pt_h1_conn *c)
{
    if (!c->rq) { /* the request is over (released): no body clock */
        if (c->timer_kind == TM_BODY) set_timer(c, TM_NONE, 0);
        return;
    }
    const pt_config *cfg = conn_cfg(c);
    bool live = c->txn && !c->txn_done;
    if (live) {
        pt_txn_body_limits(c->txn, &c->rq->pace.gap_ms, &c->rq->pace.min_rate);
    } else { /* discarding the rest of a body after the response */
        c->rq->pace.gap_ms = cfg->timeouts.body_ms;
        c->rq->pace.min_rate = cfg->limits.min_body_rate;
    }
    /* Once the response has started the upstream has engaged in the
     * exchange: the request stream is then bounded by the upstream's own
     * timeouts, not by the slow-body rules (full-duplex streams). */
    bool run = c->state == ST_TXN && c->want_body && !c->body_done && !(live && pt_txn_response_started(c->txn));
    pt_body_pace_run(&c->rq->pace, run, pt_loop_now(c->base.w->loop));
    if (run) {
        uint64_t due = pt_body_pace_deadline(&c->rq->pace, c->rq->pace.gap_ms, c->rq->pace.min_rate);
        if (c->timer_kind != TM_BODY || due < c->base.timer.deadline) set_timer(c, TM_BODY, due);
    } else if (c->timer_kind == TM_BODY) {
        set_timer(c, TM_NONE, 0);
    }
}

/* The request body is late (gap or rate rule): 408 problem+json, then the
 * connection closes; a body being discarded after the response just closes. */
static void body_expired(pt_h1_conn *c, uint64_t now)
{
    if (c->discarding) {
        conn_close(c);
        return;
    }
    if (c->txn && !c->txn_done) {
        c->close_after = true;
        c->body_done = true;
        pt_txn_on_request_error(c->txn, 408,
                                pt_body_pace_late_by_gap(&c->rq->pace, c->rq->pace.gap_ms, now) ? PT_BODY_LATE_GAP
                                                                                                      : PT_BODY_LATE_RATE);
    }
}

/* --------------------------------------------------------------- lifecycle */

static void conn_close(pt_h1_conn *c)
{
    if (c->state == ST_CLOSED) return;
    pt_loop *loop = c->base.w->loop;
    c->state = ST_CLOSED;
    if (c->txn && !c->txn_done) pt_txn_on_downstream_closed(c->txn);
    pt_defer_cancel(loop, &c->flush_defer);
    cancel_work(c, 0xff);
    if (c->tun) pt_tunnel_sock_stop(c->tun); /* allocated only once a tunnel starts */
    pt_buf_release(&c->rbuf);
    pt_buf_release(&c->wbuf);
    release_request(c);
    pt_conn_close(&c->base, !c->peer_closed && !c->write_failed && !c->tun);
}

static void h1_finalize(pt_conn *base) { free(((pt_h1_conn *)base)->tun); }

static void h1_close(pt_conn *base) { conn_close((pt_h1_conn *)base); }

/* Graceful drain: an idle connection closes now, an active one after its
 * current response. A partly received head is read to the end and
 * answered; the response says Connection: close because the worker is
 * draining. */
static void h1_drain(pt_conn *base)
{
    pt_h1_conn *c = (pt_h1_conn *)base;
    if (c->state == ST_HEAD && !c->txn && !c->rbuf.len && !c->wbuf.len) conn_close(c); /* idle keep-alive */
    else if (c->state == ST_HEAD && !c->txn && rbuf_is_preface(c)) conn_close(c); /* no request yet */
    else if (c->state != ST_HEAD || c->txn) c->close_after = true;
}

static const pt_conn_proto h1_proto = {
    .name = "http/1.1",
    .drain = h1_drain,
    .close = h1_close,
    .finalize = h1_finalize,
};

size_t pt_h1_conn_size(void) { return sizeof(pt_h1_conn); }

void pt_h1_conn_start(pt_conn *base, uint64_t header_deadline)
{
    pt_h1_conn *c = (pt_h1_conn *)base;
    base->proto = &h1_proto;
    base->io.cb = on_io;
    c->state = ST_HEAD;
    c->reading = true;
    if (base->w->draining) c->close_after = true;
    /* The first request head must be complete by the header deadline
     * (counted from accept: after a TLS handshake it is the handshake's). */
    if (!header_deadline) {
        set_timer(c, TM_HEADER, pt_loop_now(base->w->loop) + conn_cfg(c)->timeouts.header_ms);
        return;
    }
    set_timer(c, TM_HEADER, header_deadline);
    conn_update_events(c);
    queue_work(c, WORK_READ); /* the first request may already be decrypted inside OpenSSL */
}
