/* h1_server.c — see h1_server.h.
 *
 * Connection states:
 *   HEAD  waiting for / reading a request head (idle keep-alive when rbuf is
 *         empty: idle timeout; after the first byte: absolute header deadline)
 *   TXN   a transaction runs; the body is read only while the txn wants it
 *   DONE  the response is complete; flush, then the next request (pipelined
 *         bytes are already in rbuf) or close.
 *   TUNNEL after a 101 the socket carries raw bytes both ways
 *         (http/tunnel.h, docs/websocket.md); the connection closes when
 *         the tunnel ends.
 * Output is appended to wbuf and flushed once per loop iteration (a
 * deferred callback), so a small response costs one write(2).
 * Memory while idle: the struct only (~300 bytes); buffers and the arena go
 * back to the worker's caches. */
#include "http/h1_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/buf.h"
#include "http/body_pace.h"
#include "http/h1.h"
#include "http/h2_server.h"
#include "http/tunnel.h"
#include "proxy/txn.h"
#include "server/worker.h"
#include "obs/gateway_metrics.h"
#include "server/connlimit.h"
#include "tls/tls_io.h"
#include "tls/tls_server.h"

#include <openssl/err.h>

#define WBUF_HIGH (64u * 1024)
#define WBUF_LOW (16u * 1024)
#define ZEROCOPY_MIN 4096u /* body pieces at least this large are written with writev */
#define READ_CHUNK 16384u
/* After a local response, up to this much unread request body is read and
 * dropped so the connection stays usable; more than that closes it. */
#define DISCARD_MAX (1024u * 1024)

enum { ST_HEAD, ST_TXN, ST_CLOSED, ST_HANDSHAKE, ST_TUNNEL };
enum { TM_NONE, TM_IDLE, TM_HEADER, TM_BODY, TM_SEND };

struct pt_h1_conn {
    pt_io io;
    pt_timer timer;
    pt_defer flush_defer;
    pt_defer next_defer;
    pt_defer body_defer;
    pt_defer free_defer;
    pt_worker *w;
    pt_h1_conn *prev, *next;
    pt_buf rbuf, wbuf;
    pt_arena *arena;
    pt_txn *txn;
    pt_request *req;
    pt_chunked_decoder *dec;
    uint64_t body_remaining;
    pt_body_pace pace; /* request body clock: timeouts.body, limits.min_body_rate */
    pt_h1_info info;
    uint8_t state;
    uint8_t timer_kind;
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
    SSL *ssl;          /* HTTPS listener: the TLS session, else NULL */
    bool hs_want_write;/* handshake waits for writability */
    pt_defer read_defer; /* TLS: decrypted bytes may be pending inside OpenSSL */
    pt_worker_gen *hs_wg; /* generation pinned during the handshake (SNI callback state) */
    char *peer_subject;   /* verified mTLS client certificate subject (heap), or NULL */
    char *peer_sans;      /* its subjectAltNames (heap), or NULL */
    uint16_t listener;    /* index of the listener that accepted it */
    bool counted_client;  /* counted per client address by connlimit */
    struct sockaddr_in6 peer; /* client address (v4 or v6) for connlimit */
    bool discarding;   /* txn is over; dropping the rest of the request body */
    bool write_failed; /* a write failed inside a txn callback: close from the loop */
    uint64_t sent;     /* response bytes queued for the current request (access log) */
    /* Whether the client saw any of the current response: until then its
     * head sits in wbuf after `resp_prefix` unsent bytes of earlier output,
     * and can be taken back (ds_retract). */
    uint32_t resp_prefix;
    bool resp_open;    /* a final head was queued for the current request */
    bool resp_visible; /* some byte of it reached the socket */
    uint64_t discarded;
    uint8_t version;
    uint32_t nrequests;
    char client[INET6_ADDRSTRLEN];
    bool tunnel_abort; /* the txn aborted the tunnel: close without waiting */
    pt_tunnel_sock *tun; /* after a 101 (heap: idle connections stay small); freed with the struct */
};

static const pt_downstream_ops ds_ops;
static void conn_close(pt_h1_conn *c);
static void schedule_flush(pt_h1_conn *c);
static void conn_update_events(pt_h1_conn *c);
static void process_input(pt_h1_conn *c);
static void deliver_body(pt_h1_conn *c);
static void body_defer_cb(pt_loop *loop, pt_defer *d);
static void next_request_cb(pt_loop *loop, pt_defer *d);
static void release_request(pt_h1_conn *c);

static inline const pt_config *conn_cfg(pt_h1_conn *c) { return c->w->wgen->gen->cfg; }

static void set_timer(pt_h1_conn *c, int kind, uint64_t deadline);
static void body_pace_update(pt_h1_conn *c);

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
        ssize_t n = pt_sock_send(c->io.fd, c->ssl, pt_buf_head(&c->wbuf), c->wbuf.len);
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
            if (c->ssl && c->resp_open && c->wbuf.len > c->resp_prefix) c->resp_visible = true;
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
            set_timer(c, idle ? TM_IDLE : TM_NONE, pt_loop_now(c->w->loop) + conn_cfg(c)->timeouts.idle_ms);
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
            set_timer(c, TM_SEND, pt_loop_now(c->w->loop) + conn_cfg(c)->timeouts.idle_ms);
        if (c->wbuf.len < WBUF_LOW && c->txn && !c->txn_done) pt_txn_on_downstream_writable(c->txn);
    }
    if (c->state == ST_HEAD && !c->txn && c->rbuf.len && c->wbuf.len < WBUF_LOW && !c->close_after)
        pt_defer_queue(c->w->loop, &c->next_defer, next_request_cb, c);
    if (c->state != ST_CLOSED) conn_update_events(c);
}

static void flush_now(pt_h1_conn *c) { flush_now_ex(c, false); }

static void flush_cb(pt_loop *loop, pt_defer *d) { flush_now(d->data); }

static void schedule_flush(pt_h1_conn *c) { pt_defer_queue(c->w->loop, &c->flush_defer, flush_cb, c); }

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
    c->sent += c->wbuf.len - before;
    schedule_flush(c);
}

static void ds_send_head(void *stream, const pt_response *res)
{
    pt_h1_conn *c = stream;
    pt_buf *b = &c->wbuf;
    int st = res->status;
    bool bodiless_status = st < 200 || st == 204 || st == 304;
    bool head_req = c->req && c->req->method == PT_METHOD_HEAD;

    c->resp_chunked = c->resp_close = false;
    uint32_t before = b->len;
    c->resp_open = true;
    c->resp_visible = false;
    c->resp_prefix = before;
    if (res->close_connection || c->peer_closed || !c->info.keep_alive || c->w->draining ||
        (!c->body_done && c->info.body == PT_H1_BODY_LENGTH && c->body_remaining > DISCARD_MAX))
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
    c->sent += b->len - before;
    schedule_flush(c);
    body_pace_update(c); /* the response started: the slow-body clock stops */
}

static bool ds_send_body(void *stream, const char *data, size_t len)
{
    pt_h1_conn *c = stream;
    if (c->write_failed) return false;
    if (!len) return c->wbuf.len < WBUF_HIGH;
    if (c->req && c->req->method == PT_METHOD_HEAD) return true;
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
    c->sent += total;
    /* Output is batched: queue until the high watermark (flushed once per
     * loop iteration). At the watermark, one writev(2) sends the queue plus
     * this piece without copying it — unless the socket is known to be full
     * (waiting for EPOLLOUT), where writing would only trickle. */
    if (total < ZEROCOPY_MIN || c->wbuf.len + total < WBUF_HIGH || (c->io.events & EPOLLOUT) || c->ssl) {
        for (int i = 0; i < n; i++) pt_buf_append(&c->wbuf, iov[i].iov_base, iov[i].iov_len);
        if (c->wbuf.len >= WBUF_HIGH) {
            flush_now_ex(c, true); /* try at once; the caller pauses if still high */
            if (c->write_failed) return false;
        } else {
            schedule_flush(c);
        }
        return c->wbuf.len < WBUF_HIGH;
    }
    size_t queued = c->wbuf.len + total;
    int wrc = pt_buf_writev(c->io.fd, &c->wbuf, iov, n);
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
            set_timer(c, TM_SEND, pt_loop_now(c->w->loop) + conn_cfg(c)->timeouts.idle_ms);
        conn_update_events(c);
    }
    return c->wbuf.len < WBUF_HIGH;
}

static void ds_send_end(void *stream, pt_str trailers)
{
    pt_h1_conn *c = stream;
    if (c->resp_chunked) {
        append_lit(&c->wbuf, "0\r\n");
        pt_buf_append(&c->wbuf, trailers.p, trailers.n);
        pt_buf_append(&c->wbuf, "\r\n", 2);
        c->sent += 5 + trailers.n;
    }
    schedule_flush(c);
}

static void ds_want_body(void *stream, bool want)
{
    pt_h1_conn *c = stream;
    if (c->body_done) return;
    c->want_body = want;
    if (want && c->req && c->req->expect_continue && !c->sent_100 && c->rbuf.len == 0) {
        append_lit(&c->wbuf, "HTTP/1.1 100 Continue\r\n\r\n");
        schedule_flush(c);
    }
    if (want) c->sent_100 = true;
    /* Buffered body bytes are delivered from the loop, never re-entrantly
     * from inside a txn callback. */
    if (want && c->rbuf.len) pt_defer_queue(c->w->loop, &c->body_defer, body_defer_cb, c);
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
    c->sent = 0;
    c->close_after = true;
    return true;
}

static void body_defer_cb(pt_loop *loop, pt_defer *d)
{
    pt_h1_conn *c = d->data;
    if (c->state != ST_TXN) return;
    deliver_body(c);
    if (c->state == ST_CLOSED) return;
    body_pace_update(c); /* stops TM_BODY once the body is complete */
    conn_update_events(c);
}

static void next_request_cb(pt_loop *loop, pt_defer *d)
{
    pt_h1_conn *c = d->data;
    if (c->state == ST_CLOSED) return;
    process_input(c);
}

/* Returns the finished request's arena (and what lives in it) to the worker. */
static void release_request(pt_h1_conn *c)
{
    c->dec = NULL;
    if (c->arena) {
        pt_worker_arena_put(c->w, c->arena);
        c->arena = NULL;
    }
}

static void tunnel_finished(pt_h1_conn *c);

static void ds_finished(void *stream)
{
    pt_h1_conn *c = stream;
    c->txn_done = true;
    c->txn = NULL;
    c->req = NULL;
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
        c->discarded = 0;
        c->want_body = true;
        body_pace_update(c);
        pt_defer_queue(c->w->loop, &c->body_defer, body_defer_cb, c);
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
    pt_defer_queue(c->w->loop, &c->next_defer, next_request_cb, c);
}

static uint64_t ds_bytes_sent(void *stream) { return ((pt_h1_conn *)stream)->sent; }

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
    pt_defer_cancel(c->w->loop, &c->flush_defer);
    pt_defer_cancel(c->w->loop, &c->body_defer);
    pt_defer_cancel(c->w->loop, &c->read_defer);
    pt_tunnel_sock_start(c->tun, c->w->loop, &c->io, c->ssl, &c->rbuf, &c->wbuf, c->peer_closed, &tun_cbs, c);
}

static bool ds_tunnel_send(void *stream, const char *data, size_t len)
{
    pt_h1_conn *c = stream;
    c->sent += len;
    return pt_tunnel_sock_send(c->tun, data, len);
}

static void ds_tunnel_read(void *stream, bool want) { pt_tunnel_sock_read(((pt_h1_conn *)stream)->tun, want); }

static void ds_tunnel_shutdown(void *stream) { pt_tunnel_sock_shutdown(((pt_h1_conn *)stream)->tun); }

static void tunnel_close_cb(pt_loop *loop, pt_defer *d) { conn_close(d->data); }

/* The txn ended the tunnel: the connection closes once our FIN is out (at
 * once after an abort); a client that does not take its last bytes is
 * bounded by timeouts.idle (TM_SEND). */
static void tunnel_finished(pt_h1_conn *c)
{
    pt_tunnel_sock_read(c->tun, false);
    if (c->tunnel_abort || pt_tunnel_sock_done(c->tun)) {
        pt_defer_queue(c->w->loop, &c->next_defer, tunnel_close_cb, c);
        return;
    }
    pt_tunnel_sock_shutdown(c->tun);
    set_timer(c, TM_SEND, pt_loop_now(c->w->loop) + conn_cfg(c)->timeouts.idle_ms);
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
};

/* ------------------------------------------------------------------- input */

/* Whether the connection wants request bytes now. */
static bool conn_wants_read(const pt_h1_conn *c)
{
    return !c->peer_closed && ((c->state == ST_HEAD && !c->txn && !c->close_after && c->wbuf.len < WBUF_HIGH) ||
                               (c->want_body && !c->body_done));
}

/* Interest in EPOLLIN is dropped lazily: it stays registered while a txn runs
 * (a typical client sends nothing then), and is removed only when bytes
 * arrive that we do not want yet (in_disabled). This saves two epoll_ctl
 * calls per request. */
static void read_defer_cb(pt_loop *loop, pt_defer *d);

static void conn_update_events(pt_h1_conn *c)
{
    if (c->state == ST_CLOSED || c->state == ST_TUNNEL) return;
    if (c->state == ST_HANDSHAKE) {
        pt_io_modify(c->w->loop, &c->io, c->hs_want_write ? EPOLLOUT : EPOLLIN);
        return;
    }
    bool read = conn_wants_read(c);
    /* OpenSSL may hold decrypted bytes that epoll will never announce. */
    if (read && c->ssl && SSL_pending(c->ssl) > 0) pt_defer_queue(c->w->loop, &c->read_defer, read_defer_cb, c);
    c->reading = read;
    if (read) c->in_disabled = false;
    /* RDHUP is level-triggered: once seen, stop asking or the loop spins. */
    uint32_t ev = c->peer_closed ? 0 : EPOLLRDHUP;
    if (read || (!c->in_disabled && !c->peer_closed)) ev |= EPOLLIN;
    if (c->wbuf.len) ev |= EPOLLOUT;
    pt_io_modify(c->w->loop, &c->io, ev);
}

/* Hands body bytes to the txn, or drops them when discarding. Returns false
 * if the connection was closed. */
static bool feed_body(pt_h1_conn *c, const char *p, size_t n, bool last)
{
    if (!c->discarding) {
        pt_txn_on_request_body(c->txn, p, n, last);
        return c->state != ST_CLOSED;
    }
    c->discarded += n;
    if (c->discarded > DISCARD_MAX) {
        conn_close(c);
        return false;
    }
    if (last) {
        c->discarding = false;
        c->want_body = false;
        release_request(c);
        c->state = ST_HEAD;
        set_timer(c, TM_NONE, 0);
        pt_defer_queue(c->w->loop, &c->next_defer, next_request_cb, c);
    }
    return true;
}

/* Feeds buffered body bytes to the txn while it wants them (or discards). */
static void deliver_body(pt_h1_conn *c)
{
    while (c->want_body && !c->body_done && c->state != ST_CLOSED &&
           (c->discarding || (c->txn && !c->txn_done))) {
        if (c->info.body == PT_H1_BODY_LENGTH) {
            size_t n = PT_MIN((uint64_t)c->rbuf.len, c->body_remaining);
            if (!n && c->body_remaining) return;
            c->body_remaining -= n;
            bool last = c->body_remaining == 0;
            const char *p = pt_buf_head(&c->rbuf);
            if (last) c->body_done = true;
            pt_buf_consume(&c->rbuf, n);
            if (!feed_body(c, p, n, last) || last) return;
        } else {
            if (!c->rbuf.len) return;
            const char *data = NULL;
            size_t dlen = 0;
            pt_h1_error err = {0, NULL};
            ssize_t used = pt_chunked_decode(c->dec, pt_buf_head(&c->rbuf), c->rbuf.len, &data, &dlen, &err);
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
            bool last = c->dec->done;
            if (last) c->body_done = true;
            if (last && c->dec->trailers_len && !c->discarding)
                pt_txn_on_request_trailers(c->txn, pt_str_make(c->dec->trailers, c->dec->trailers_len));
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
    pt_conn_info ci = {
        .client_addr = pt_str_c(c->client),
        .listener = c->listener,
        .tls = c->ssl != NULL,
        .client_cert_subject = pt_str_c(c->peer_subject),
        .client_cert_sans = pt_str_c(c->peer_sans),
        .tls_policy = c->ssl ? pt_tls_conn_policy(c->ssl) : 0,
    };
    /* Every path that creates a txn (a request, a parse error, a header
     * timeout) must mark it live, or conn_close would skip it and it would
     * never finish (its generation and arena leak). */
    c->txn_done = false;
    return pt_txn_new(c->w, c->arena, &ds_ops, c, &ci, pt_loop_wall_us(c->w->loop));
}

static void start_request(pt_h1_conn *c, size_t head_len, pt_request *req, const pt_h1_info *info)
{
    pt_arena *a = c->arena;
    /* The parsed slices point into rbuf: move the head into the arena. */
    char *copy = pt_arena_alloc(a, head_len);
    memcpy(copy, pt_buf_head(&c->rbuf), head_len);
    pt_request_rebase(req, pt_buf_head(&c->rbuf), head_len, copy);
    pt_buf_consume(&c->rbuf, head_len);

    c->info = *info;
    c->req = req;
    if (c->ssl) req->scheme = PT_STR_LIT("https");
    c->version = req->version;
    c->body_done = info->body == PT_H1_BODY_NONE;
    c->body_remaining = info->body == PT_H1_BODY_LENGTH ? info->content_length : 0;
    if (info->body == PT_H1_BODY_LENGTH && info->content_length == 0) c->body_done = true;
    if (info->body == PT_H1_BODY_CHUNKED) {
        c->dec = pt_arena_alloc(a, sizeof(*c->dec));
        pt_chunked_init(c->dec);
    }
    c->sent_100 = false;
    c->want_body = false;
    /* body bytes that came with the head count as received */
    c->pace = (pt_body_pace){.bytes = c->body_done ? 0 : c->rbuf.len};
    if (info->body == PT_H1_BODY_LENGTH) c->pace.bytes = PT_MIN(c->pace.bytes, c->body_remaining);
    c->txn_done = false;
    c->state = ST_TXN;
    c->nrequests++;
    set_timer(c, TM_NONE, 0);
    conn_update_events(c);
    pt_txn_start(c->txn, req, head_len);
}

static void free_cb(pt_loop *loop, pt_defer *d);

/* Hands the connection (fd, TLS session, bytes already read) to the HTTP/2
 * codec and retires this struct without closing the socket. Only before the
 * first request: no txn, no arena in use. */
static void handoff_h2(pt_h1_conn *c)
{
    pt_worker *w = c->w;
    pt_conn_info ci = {
        .client_addr = pt_str_c(c->client),
        .listener = c->listener,
        .tls = c->ssl != NULL,
        .client_cert_subject = pt_str_c(c->peer_subject),
        .client_cert_sans = pt_str_c(c->peer_sans),
        .tls_policy = c->ssl ? pt_tls_conn_policy(c->ssl) : 0, /* (h2 streams read it from the SSL again) */
    };
    int fd = c->io.fd;
    SSL *ssl = c->ssl;
    c->state = ST_CLOSED;
    pt_timer_stop(w->loop, &c->timer);
    pt_defer_cancel(w->loop, &c->flush_defer);
    pt_defer_cancel(w->loop, &c->next_defer);
    pt_defer_cancel(w->loop, &c->body_defer);
    pt_defer_cancel(w->loop, &c->read_defer);
    pt_io_stop(w->loop, &c->io);
    if (c->prev) c->prev->next = c->next;
    else w->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    w->nconns--;
    c->ssl = NULL;
    c->io.fd = -1;
    pt_h2_conn_start_counted(w, fd, ssl, c->rbuf.len ? pt_buf_head(&c->rbuf) : NULL, c->rbuf.len, &ci,
                             (const struct sockaddr *)&c->peer, c->counted_client);
    free(c->peer_subject);
    c->peer_subject = NULL;
    free(c->peer_sans);
    c->peer_sans = NULL;
    pt_buf_release(&c->rbuf);
    pt_buf_release(&c->wbuf);
    if (c->arena) {
        pt_worker_arena_put(w, c->arena);
        c->arena = NULL;
    }
    pt_defer_queue(w->loop, &c->free_defer, free_cb, c);
}

static bool listener_http2(const pt_h1_conn *c)
{
    const pt_config *cfg = c->w->wgen->gen->cfg;
    return c->listener < cfg->nlisteners && cfg->listeners[c->listener].http2;
}

/* Parses as many requests as possible from rbuf (one at a time). */
static void process_input(pt_h1_conn *c)
{
    if (c->state != ST_HEAD || c->txn) return;
    /* HTTP/2 with prior knowledge: the first bytes of a plaintext
     * connection are the client preface. */
    if (!c->ssl && c->nrequests == 0 && c->rbuf.len && listener_http2(c) &&
        memcmp(pt_buf_head(&c->rbuf), PT_H2_PREFACE, PT_MIN((size_t)c->rbuf.len, PT_H2_PREFACE_LEN)) == 0) {
        if (c->rbuf.len >= PT_H2_PREFACE_LEN) {
            handoff_h2(c);
            return;
        }
        if (c->peer_closed) conn_close(c);
        else conn_update_events(c); /* wait for the rest of the preface */
        return;
    }
    if (c->wbuf.len >= WBUF_HIGH) {
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
         * timeout once it has drained. */
        if (!c->wbuf.len) set_timer(c, TM_IDLE, pt_loop_now(c->w->loop) + conn_cfg(c)->timeouts.idle_ms);
        conn_update_events(c);
        return;
    }
    if (c->timer_kind != TM_HEADER)
        set_timer(c, TM_HEADER, pt_loop_now(c->w->loop) + conn_cfg(c)->timeouts.header_ms);

    if (!c->arena) c->arena = pt_worker_arena_get(c->w);
    pt_request *req = pt_arena_calloc(c->arena, sizeof(*req));
    pt_h1_info info;
    pt_h1_error err = {0, NULL};
    ssize_t n = pt_h1_parse_request(pt_buf_head(&c->rbuf), c->rbuf.len, &c->w->wgen->gen->h1_limits, c->arena, req,
                                    &info, &err);
    if (n == PT_AGAIN) {
        if (c->peer_closed) conn_close(c);
        else conn_update_events(c);
        return;
    }
    c->sent = 0;
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

static void on_readable(pt_h1_conn *c);

static void read_defer_cb(pt_loop *loop, pt_defer *d)
{
    pt_h1_conn *c = d->data;
    if (c->state != ST_CLOSED && c->state != ST_HANDSHAKE && conn_wants_read(c)) on_readable(c);
}

/* Drives the TLS handshake; on success the connection becomes an ordinary
 * HTTP/1.1 connection waiting for its first request. */
static void do_handshake(pt_h1_conn *c)
{
    int r = pt_tls_handshake_step(c->ssl, &c->hs_want_write);
    if (r < 0) { /* a failed handshake (bad client, wrong version): just close */
        conn_close(c);
        return;
    }
    if (r == 0) {
        conn_update_events(c);
        return;
    }
    c->state = ST_HEAD;
    c->peer_subject = pt_tls_peer_subject(c->ssl);
    c->peer_sans = pt_tls_peer_sans(c->ssl);
    if (c->hs_wg) {
        pt_worker_gen_release(c->w, c->hs_wg);
        c->hs_wg = NULL;
    }
    if (pt_tls_alpn_is(c->ssl, "h2")) {
        handoff_h2(c);
        return;
    }
    conn_update_events(c);
    /* the client's first request may already be decrypted and pending */
    pt_defer_queue(c->w->loop, &c->read_defer, read_defer_cb, c);
}

static void body_expired(pt_h1_conn *c, uint64_t now);

static void on_readable(pt_h1_conn *c)
{
    for (int rounds = 0; rounds < 4; rounds++) {
        pt_buf_reserve(&c->rbuf, READ_CHUNK / 4);
        size_t room = pt_buf_tailroom(&c->rbuf);
        ssize_t n = pt_sock_recv(c->io.fd, c->ssl, pt_buf_tail(&c->rbuf), room);
        if (n > 0) {
            c->rbuf.len += (uint32_t)n;
            if (c->state == ST_TXN) pt_body_pace_progress(&c->pace, (uint64_t)n, pt_loop_now(c->w->loop));
            if ((size_t)n < room && !c->ssl) break;
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
            uint64_t now = pt_loop_now(c->w->loop);
            if (c->pace.running &&
                now >= pt_body_pace_deadline(&c->pace, c->pace.gap_ms, c->pace.min_rate)) {
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
    if (c->state == ST_HANDSHAKE) {
        if (events & (EPOLLERR | EPOLLHUP)) conn_close(c);
        else do_handshake(c);
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
        if (c->state == ST_HANDSHAKE) { /* the TLS handshake did not finish in time */
            conn_close(c);
            return;
        }
        /* Partial head: answer 408 and close. */
        if (!c->arena) c->arena = pt_worker_arena_get(c->w);
        c->sent = 0;
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
        uint64_t due = pt_body_pace_deadline(&c->pace, c->pace.gap_ms, c->pace.min_rate);
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
    if (kind == TM_NONE) pt_timer_stop(c->w->loop, &c->timer);
    else pt_timer_start_at(c->w->loop, &c->timer, deadline, on_timer, c);
}

/* Keeps the body clock (http/body_pace.h) and the TM_BODY timer in step with
 * whether the connection wants request body bytes now. While wanted, the
 * armed deadline is only moved earlier here: progress moves it later, and
 * on_timer re-arms when it fires early (no heap update per read). Once the
 * body is complete or not wanted, a TM_BODY timer is stopped. */
static void body_pace_update(pt_h1_conn *c)
{
    const pt_config *cfg = conn_cfg(c);
    bool live = c->txn && !c->txn_done;
    if (live) {
        pt_txn_body_limits(c->txn, &c->pace.gap_ms, &c->pace.min_rate);
    } else { /* discarding the rest of a body after the response */
        c->pace.gap_ms = cfg->timeouts.body_ms;
        c->pace.min_rate = cfg->limits.min_body_rate;
    }
    /* Once the response has started the upstream has engaged in the
     * exchange: the request stream is then bounded by the upstream's own
     * timeouts, not by the slow-body rules (full-duplex streams). */
    bool run = c->state == ST_TXN && c->want_body && !c->body_done && !(live && pt_txn_response_started(c->txn));
    pt_body_pace_run(&c->pace, run, pt_loop_now(c->w->loop));
    if (run) {
        uint64_t due = pt_body_pace_deadline(&c->pace, c->pace.gap_ms, c->pace.min_rate);
        if (c->timer_kind != TM_BODY || due < c->timer.deadline) set_timer(c, TM_BODY, due);
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
                                pt_body_pace_late_by_gap(&c->pace, c->pace.gap_ms, now) ? PT_BODY_LATE_GAP
                                                                                                      : PT_BODY_LATE_RATE);
    }
}

/* --------------------------------------------------------------- lifecycle */

static void free_cb(pt_loop *loop, pt_defer *d)
{
    pt_h1_conn *c = d->data;
    free(c->tun);
    free(c);
}

static void conn_close(pt_h1_conn *c)
{
    if (c->state == ST_CLOSED) return;
    pt_worker *w = c->w;
    c->state = ST_CLOSED;
    if (c->txn && !c->txn_done) pt_txn_on_downstream_closed(c->txn);
    pt_timer_stop(w->loop, &c->timer);
    pt_defer_cancel(w->loop, &c->flush_defer);
    pt_defer_cancel(w->loop, &c->next_defer);
    pt_defer_cancel(w->loop, &c->body_defer);
    pt_defer_cancel(w->loop, &c->read_defer);
    if (c->tun) pt_tunnel_sock_stop(c->tun); /* allocated only once a tunnel starts */
    pt_io_stop(w->loop, &c->io);
    if (c->ssl) {
        if (!c->peer_closed && !c->write_failed && !c->tun) SSL_shutdown(c->ssl); /* best effort close_notify */
        SSL_free(c->ssl);
        ERR_clear_error();
        c->ssl = NULL;
    }
    if (c->hs_wg) {
        pt_worker_gen_release(w, c->hs_wg);
        c->hs_wg = NULL;
    }
    free(c->peer_subject);
    c->peer_subject = NULL;
    free(c->peer_sans);
    c->peer_sans = NULL;
    pt_connlimit_release(w->connlimit, c->listener, (const struct sockaddr *)&c->peer, c->counted_client);
    pt_metrics_conn_closed(w, c->listener);
    close(c->io.fd);
    c->io.fd = -1;
    pt_buf_release(&c->rbuf);
    pt_buf_release(&c->wbuf);
    if (c->arena) {
        pt_worker_arena_put(w, c->arena);
        c->arena = NULL;
    }
    if (c->prev) c->prev->next = c->next;
    else w->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    w->nconns--;
    /* Free after this loop iteration: an event for this fd may still be
     * pending in the current epoll batch. */
    pt_defer_queue(w->loop, &c->free_defer, free_cb, c);
}

void pt_h1_conn_accept(pt_worker *w, int fd, const struct sockaddr *peer, socklen_t peerlen, size_t listener,
                       struct pt_tls_server *tls, bool counted_client)
{
    pt_h1_conn *c = pt_xcalloc(1, sizeof(*c));
    c->w = w;
    c->state = ST_HEAD;
    c->info.keep_alive = true;
    c->listener = (uint16_t)listener;
    c->counted_client = counted_client;
    memcpy(&c->peer, peer, PT_MIN((size_t)peerlen, sizeof(c->peer)));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (peer->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)peer)->sin_addr, c->client, sizeof(c->client));
    else if (peer->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)peer)->sin6_addr, c->client,
                  sizeof(c->client));
    else
        strcpy(c->client, "unix");
    PT_UNUSED(peerlen);
    if (pt_io_start(w->loop, &c->io, fd, EPOLLIN | EPOLLRDHUP, on_io, c) != PT_OK) {
        close(fd);
        free(c);
        return;
    }
    c->reading = true;
    c->next = w->conns;
    if (w->conns) w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    pt_metrics_conn_opened(w, listener);
    if (w->draining) c->close_after = true;
    if (tls) {
        c->ssl = pt_tls_server_ssl(tls, fd);
        if (!c->ssl) {
            conn_close(c);
            return;
        }
        /* The SNI callback uses the generation's TLS state: pin it. */
        c->hs_wg = pt_worker_gen_acquire(w);
        c->state = ST_HANDSHAKE;
        /* handshake + first request head share the absolute header deadline */
        set_timer(c, TM_HEADER, pt_loop_now(w->loop) + conn_cfg(c)->timeouts.header_ms);
        do_handshake(c);
        return;
    }
    set_timer(c, TM_IDLE, pt_loop_now(w->loop) + conn_cfg(c)->timeouts.idle_ms);
}

void pt_h1_conns_drain(pt_worker *w)
{
    pt_h1_conn *c = w->conns;
    while (c) {
        pt_h1_conn *n = c->next;
        if (c->state == ST_HANDSHAKE) {
            conn_close(c); /* no request made yet */
        } else if (c->state == ST_HEAD && !c->txn && !c->rbuf.len && !c->wbuf.len) {
            conn_close(c); /* idle keep-alive */
        } else if (c->state != ST_HEAD || c->txn) {
            c->close_after = true; /* finish the current exchange, then close */
        }
        /* A partly received head is read to the end and answered; the
         * response says Connection: close because the worker is draining. */
        c = n;
    }
}

void pt_h1_conns_close_all(pt_worker *w)
{
    while (w->conns) conn_close(w->conns);
}
