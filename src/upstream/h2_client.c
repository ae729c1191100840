/* h2_client.c — see h2_client.h.
 *
 * Connection states: CONNECTING (TCP), HANDSHAKE (TLS, ALPN must select
 * h2), READY, CLOSED (freed after the current loop iteration). The nghttp2
 * session exists from the start; frames are serialised only once READY.
 *
 * Re-entrancy rule: nothing calls into a transaction from inside an nghttp2
 * callback except 1xx heads. Callbacks only record what arrived on the
 * stream (head, body bytes, end, error) and queue the stream's deliver
 * defer, which runs from the loop and hands events to the owner, honouring
 * its read pause. Received DATA is acknowledged per stream only as it is
 * delivered (NGHTTP2_OPT_NO_AUTO_WINDOW_UPDATE), so a paused owner stops the
 * upstream through the stream window; the connection window is acknowledged
 * at once so one slow stream never blocks the others.
 *
 * A stream object lives until its owner let go of it (release/close) and
 * nghttp2 is done with it (closed, never submitted, or the connection died). */
#include "upstream/h2_client.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "net/dns.h"
#include "server/worker.h"
#include "tls/tls_client.h"
#include "net/tls_io.h"
#include "upstream/exchange.h"

#define SEND_HIGH (64u * 1024)        /* per-stream request body buffer */
#define SEND_LOW (16u * 1024)
#define WBUF_HIGH (64u * 1024)
#define STREAM_WINDOW (256u * 1024)   /* our SETTINGS_INITIAL_WINDOW_SIZE */
#define CONN_WINDOW (16u * 1024 * 1024)
#define DEFAULT_MAX_STREAMS 100u      /* until the peer's SETTINGS arrive */

enum { CS_CONNECTING = 1, CS_HANDSHAKE, CS_READY, CS_CLOSED };

struct pt_h2up_stream {
    pt_h2up_conn *c;
    pt_h2up_stream *prev, *next;
    int32_t id;              /* 0: not submitted yet */
    bool nghttp2_done;       /* nghttp2 closed the stream (or never knew it) */
    bool detached;           /* the owner let go */
    bool in_cb;              /* inside an owner callback: do not free */
    bool ready_sent;
    bool reused;             /* the connection was established before this stream */
    bool refused;            /* REFUSED_STREAM / beyond GOAWAY: never processed */
    bool head_request;
    bool req_end, req_done, deferred, want_writable, notify_writable;
    bool head_ready, head_delivered, in_trailers, end_received, resp_done;
    bool paused;
    bool got_bytes;
    int pending_err;         /* pt_uerr to deliver, 0 none */
    const pt_uconn_cbs *cbs;
    void *owner;
    pt_arena *arena;
    const pt_h1_limits *limits;
    uint64_t read_timeout_ms, write_timeout_ms;
    pt_timer timer;
    pt_defer deliver_defer;
    pt_buf sbuf;             /* request body not yet taken by nghttp2 */
    pt_buf rbuf;             /* response body not yet delivered */
    pt_buf trailers;         /* "name: value\r\n" lines */
    pt_buf req_trailers;     /* request trailers: lowercased "name\0value\0" pairs */
    uint32_t nreq_trailers;
    pt_response *res;        /* head being collected (owner's arena) */
};

struct pt_h2up_conn {
    pt_io io;
    pt_timer timer;          /* connect timeout, then idle lifetime */
    pt_defer flush_defer;
    pt_defer free_defer;
    pt_worker *w;
    pt_pool *pool;
    pt_h2up_conn *pool_prev, *pool_next;
    nghttp2_session *sess;
    SSL *ssl;
    bool hs_want_write;
    int state;
    bool goaway;             /* no new streams (peer GOAWAY, drain) */
    bool settings_received;
    pt_buf wbuf;
    pt_h2up_stream *streams;
    uint32_t nstreams;
    uint64_t idle_ms;
    uint32_t keepalive;
    char peer[64];
    pt_dns_stamp dns;        /* the address it was opened to, for a host-name target (net/dns.h) */
};

static void conn_fail(pt_h2up_conn *c, pt_uerr err);
static void conn_close(pt_h2up_conn *c);
static void schedule_flush(pt_h2up_conn *c);
static void stream_arm_timer(pt_h2up_stream *s);
static void queue_deliver(pt_h2up_stream *s);
static void conn_timeout(pt_loop *loop, pt_timer *t);

/* ------------------------------------------------------------ stream list */

static void stream_unlink_free(pt_h2up_stream *s)
{
    pt_h2up_conn *c = s->c;
    if (s->prev) s->prev->next = s->next;
    else c->streams = s->next;
    if (s->next) s->next->prev = s->prev;
    c->nstreams--;
    pt_timer_stop(c->w->loop, &s->timer);
    pt_defer_cancel(c->w->loop, &s->deliver_defer);
    if (s->id > 0 && c->sess && !s->nghttp2_done) nghttp2_session_set_stream_user_data(c->sess, s->id, NULL);
    pt_buf_release(&s->sbuf);
    pt_buf_release(&s->rbuf);
    pt_buf_release(&s->trailers);
    pt_buf_release(&s->req_trailers);
    free(s);
    if (c->state != CS_CLOSED && c->nstreams == 0) {
        if (c->goaway || c->w->draining || c->keepalive == 0) schedule_flush(c); /* closes when empty */
        else pt_timer_start(c->w->loop, &c->timer, c->idle_ms, conn_timeout, c);
    }
}

/* Frees the stream if both sides are done with it. */
static void stream_maybe_free(pt_h2up_stream *s)
{
    if (s->detached && s->nghttp2_done && !s->in_cb) stream_unlink_free(s);
}

static void stream_detach(pt_h2up_stream *s)
{
    s->detached = true;
    s->cbs = NULL;
    s->owner = NULL;
    s->arena = NULL;
    s->res = NULL;
    pt_timer_stop(s->c->w->loop, &s->timer);
    pt_defer_cancel(s->c->w->loop, &s->deliver_defer);
}

/* ---------------------------------------------------------------- delivery */

/* Hands recorded events to the owner, in order: error, head, body (unless
 * paused), end. Runs from the loop, never inside nghttp2. */
static void deliver(pt_h2up_stream *s)
{
    pt_h2up_conn *c = s->c;
    s->in_cb = true;
    if (s->cbs && s->pending_err) {
        const pt_uconn_cbs *cbs = s->cbs;
        void *owner = s->owner;
        bool nothing = s->refused || !s->got_bytes;
        int err = s->pending_err;
        stream_detach(s); /* the owner forgets us in on_error */
        cbs->on_error(owner, (pt_uerr)err, nothing);
        goto out;
    }
    if (s->cbs && s->notify_writable && !s->req_done) {
        s->notify_writable = false;
        s->cbs->on_writable(s->owner);
    }
    if (s->cbs && s->head_ready && !s->head_delivered) {
        s->head_delivered = true;
        s->cbs->on_head(s->owner, s->res);
    }
    size_t taken = 0;
    while (s->cbs && s->head_delivered && !s->paused && s->rbuf.len) {
        size_t n = s->rbuf.len;
        const char *p = pt_buf_head(&s->rbuf);
        s->cbs->on_body(s->owner, p, n);
        pt_buf_consume(&s->rbuf, n);
        taken += n;
    }
    if (taken && s->id > 0 && !s->nghttp2_done && c->state == CS_READY) {
        nghttp2_session_consume_stream(c->sess, s->id, taken);
        schedule_flush(c);
    }
    if (!s->rbuf.len) pt_buf_release(&s->rbuf);
    if (s->cbs && s->head_delivered && !s->paused && s->end_received && !s->rbuf.len) {
        const pt_uconn_cbs *cbs = s->cbs;
        s->resp_done = true;
        pt_timer_stop(c->w->loop, &s->timer);
        pt_str tr = PT_STR_NULL;
        if (s->trailers.len) tr = pt_arena_str(s->arena, pt_str_make(pt_buf_head(&s->trailers), s->trailers.len));
        cbs->on_end(s->owner, tr); /* the owner releases or closes us */
    }
out:
    s->in_cb = false;
    if (s->cbs) stream_arm_timer(s);
    stream_maybe_free(s);
}

static void deliver_cb(pt_loop *loop, pt_defer *d) { deliver(d->data); }

static void queue_deliver(pt_h2up_stream *s)
{
    if (!s->detached) pt_defer_queue(s->c->w->loop, &s->deliver_defer, deliver_cb, s);
}

/* Records a stream failure to be delivered; resets it if still open. */
static void stream_error(pt_h2up_stream *s, pt_uerr err)
{
    if (!s->pending_err) s->pending_err = (int)err;
    if (s->id > 0 && !s->nghttp2_done && s->c->state == CS_READY) {
        nghttp2_submit_rst_stream(s->c->sess, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
        schedule_flush(s->c);
    }
    queue_deliver(s);
}

/* ------------------------------------------------------------------ timers */

static void stream_timeout(pt_loop *loop, pt_timer *t)
{
    pt_h2up_stream *s = t->data;
    stream_error(s, s->sbuf.len || (s->id > 0 && !s->req_done) ? PT_UERR_WRITE_TIMEOUT : PT_UERR_READ_TIMEOUT);
}

/* Write timeout while request bytes wait, read timeout while we wait for
 * the upstream; none while the owner paused reading or before READY. */
static void stream_arm_timer(pt_h2up_stream *s)
{
    pt_loop *loop = s->c->w->loop;
    if (!s->cbs || s->resp_done || s->c->state != CS_READY || s->id <= 0 || s->pending_err) {
        pt_timer_stop(loop, &s->timer);
        return;
    }
    if (s->sbuf.len) {
        pt_timer_start(loop, &s->timer, s->write_timeout_ms, stream_timeout, s);
        return;
    }
    if (s->paused) {
        pt_timer_stop(loop, &s->timer);
        return;
    }
    pt_timer_start(loop, &s->timer, s->read_timeout_ms, stream_timeout, s);
}

static void conn_timeout(pt_loop *loop, pt_timer *t)
{
    pt_h2up_conn *c = t->data;
    if (c->state == CS_CONNECTING || c->state == CS_HANDSHAKE) conn_fail(c, PT_UERR_CONNECT_TIMEOUT);
    else if (c->nstreams == 0) conn_close(c);
}

/* ------------------------------------------------------- nghttp2 callbacks */

static pt_h2up_stream *stream_of(nghttp2_session *sess, int32_t id)
{
    return id > 0 ? nghttp2_session_get_stream_user_data(sess, id) : NULL;
}

static int on_begin_headers(nghttp2_session *sess, const nghttp2_frame *f, void *ud)
{
    pt_h2up_stream *s = stream_of(sess, f->hd.stream_id);
    if (!s || s->detached || f->hd.type != NGHTTP2_HEADERS) return 0;
    s->got_bytes = true;
    if (s->head_ready) {
        s->in_trailers = true;
        return 0;
    }
    s->res = pt_arena_calloc(s->arena, sizeof(*s->res));
    s->res->content_length = -1;
    return 0;
}

static int on_header(nghttp2_session *sess, const nghttp2_frame *f, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    pt_h2up_stream *s = stream_of(sess, f->hd.stream_id);
    if (!s || s->detached || f->hd.type != NGHTTP2_HEADERS) return 0;
    pt_str n = pt_str_make((const char *)name, namelen), v = pt_str_make((const char *)value, valuelen);
    if (s->in_trailers) {
        if (namelen && name[0] == ':') return 0;
        pt_buf_append(&s->trailers, n.p, n.n);
        pt_buf_append(&s->trailers, ": ", 2);
        pt_buf_append(&s->trailers, v.p, v.n);
        pt_buf_append(&s->trailers, "\r\n", 2);
        return 0;
    }
    if (!s->res) return 0;
    if (pt_str_eq(n, PT_STR_LIT(":status"))) {
        int st = 0;
        for (size_t i = 0; i < valuelen && i < 3; i++) st = st * 10 + (value[i] - '0');
        s->res->status = st;
        return 0;
    }
    if (namelen && name[0] == ':') return 0;
    if (s->limits && s->limits->max_headers && s->res->headers.n >= s->limits->max_headers) {
        s->pending_err = PT_UERR_PROTOCOL;
        queue_deliver(s);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
    }
    if (pt_str_eq(n, PT_STR_LIT("content-length"))) {
        int64_t cl = 0;
        for (size_t i = 0; i < valuelen; i++) cl = cl * 10 + (value[i] - '0'); /* nghttp2 checked the syntax */
        s->res->content_length = cl;
        return 0;
    }
    pt_headers_add(&s->res->headers, s->arena, pt_arena_str(s->arena, n), pt_arena_str(s->arena, v));
    return 0;
}

/* A complete head: 1xx are forwarded at once (100 dropped, 101 is an
 * error), the final head is recorded for delivery. */
static void head_complete(pt_h2up_stream *s, bool end_stream)
{
    pt_response *res = s->res;
    if (!res) return;
    if (res->status < 200) {
        s->res = NULL;
        if (res->status == 101 || res->status < 100) {
            stream_error(s, PT_UERR_PROTOCOL);
            return;
        }
        if (res->status != 100 && s->cbs) s->cbs->on_informational(s->owner, res);
        return;
    }
    bool bodiless = res->status == 204 || res->status == 304;
    res->has_body = !end_stream && !s->head_request && !bodiless;
    if (bodiless) res->content_length = -1;
    else if (end_stream && !s->head_request) res->content_length = 0;
    s->head_ready = true;
    queue_deliver(s);
}

static int on_frame_recv(nghttp2_session *sess, const nghttp2_frame *f, void *ud)
{
    pt_h2up_conn *c = ud;
    if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags & NGHTTP2_FLAG_ACK)) c->settings_received = true;
    if (f->hd.type == NGHTTP2_GOAWAY) c->goaway = true;
    pt_h2up_stream *s = stream_of(sess, f->hd.stream_id);
    if (!s || s->detached) return 0;
    bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (f->hd.type == NGHTTP2_HEADERS) {
        if (s->in_trailers) {
            s->end_received = true; /* trailers always end the stream */
            queue_deliver(s);
        } else {
            head_complete(s, end);
            if (end && s->head_ready) s->end_received = true;
        }
        stream_arm_timer(s);
    } else if (f->hd.type == NGHTTP2_DATA && end) {
        s->end_received = true;
        queue_deliver(s);
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *sess, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *ud)
{
    nghttp2_session_consume_connection(sess, len);
    pt_h2up_stream *s = stream_of(sess, id);
    if (!s || s->detached) {
        nghttp2_session_consume_stream(sess, id, len);
        return 0;
    }
    s->got_bytes = true;
    pt_buf_append(&s->rbuf, data, len);
    queue_deliver(s);
    stream_arm_timer(s);
    return 0;
}

static int on_stream_close(nghttp2_session *sess, int32_t id, uint32_t code, void *ud)
{
    pt_h2up_stream *s = stream_of(sess, id);
    if (!s) return 0;
    s->nghttp2_done = true;
    if (!s->detached && !s->end_received && !s->pending_err) {
        if (code == NGHTTP2_REFUSED_STREAM) s->refused = true;
        s->pending_err = code == NGHTTP2_PROTOCOL_ERROR ? PT_UERR_PROTOCOL : PT_UERR_CLOSED;
        queue_deliver(s);
    }
    stream_maybe_free(s);
    return 0;
}

/* Submits the request trailers kept in req_trailers (from inside the data
 * source callback, as nghttp2 wants it: it copies the fields). False if
 * nghttp2 refused them (the body then ends with END_STREAM on DATA). */
static bool submit_request_trailers(nghttp2_session *sess, pt_h2up_stream *s)
{
    nghttp2_nv *v = pt_xcalloc(s->nreq_trailers, sizeof(*v));
    const char *p = pt_buf_head(&s->req_trailers);
    for (uint32_t i = 0; i < s->nreq_trailers; i++) {
        size_t nl = strlen(p);
        const char *val = p + nl + 1;
        size_t vl = strlen(val);
        v[i] = (nghttp2_nv){(uint8_t *)(uintptr_t)p, (uint8_t *)(uintptr_t)val, nl, vl, NGHTTP2_NV_FLAG_NONE};
        p = val + vl + 1;
    }
    int rv = nghttp2_submit_trailer(sess, s->id, v, s->nreq_trailers);
    free(v);
    return rv == 0;
}

/* Request body source: the stream's sbuf; deferred while empty. At the end
 * of the body, trailers (if any) follow in a HEADERS frame that carries
 * END_STREAM instead of the last DATA frame. */
static ssize_t body_read(nghttp2_session *sess, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    pt_h2up_stream *s = src->ptr;
    size_t n = PT_MIN(length, (size_t)s->sbuf.len);
    if (n) {
        memcpy(buf, pt_buf_head(&s->sbuf), n);
        pt_buf_consume(&s->sbuf, n);
    }
    if (!s->sbuf.len) {
        pt_buf_release(&s->sbuf);
        if (s->req_end) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            s->req_done = true;
            if (s->nreq_trailers && submit_request_trailers(sess, s)) *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            pt_buf_release(&s->req_trailers);
            s->nreq_trailers = 0;
        } else if (!n) {
            s->deferred = true;
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    if (s->want_writable && s->sbuf.len < SEND_LOW && !s->detached) {
        s->want_writable = false;
        s->notify_writable = true;
        queue_deliver(s);
    }
    if (s->cbs) stream_arm_timer(s);
    return (ssize_t)n;
}

/* ------------------------------------------------------------------- output */

static void update_events(pt_h2up_conn *c)
{
    uint32_t ev;
    switch (c->state) {
    case CS_CONNECTING: ev = EPOLLOUT; break;
    case CS_HANDSHAKE: ev = c->hs_want_write ? EPOLLOUT : EPOLLIN; break;
    case CS_READY: ev = EPOLLIN | EPOLLRDHUP | (c->wbuf.len ? EPOLLOUT : 0); break;
    default: return;
    }
    pt_io_modify(c->w->loop, &c->io, ev);
}

/* Serialises pending frames into wbuf and writes them; closes an empty
 * connection that must not be kept. Runs from the loop only. */
static void conn_flush(pt_h2up_conn *c)
{
    if (c->state != CS_READY) return;
    for (;;) {
        while (c->wbuf.len < WBUF_HIGH) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->sess, &data);
            if (n < 0) {
                conn_fail(c, PT_UERR_PROTOCOL);
                return;
            }
            if (n == 0) break;
            pt_buf_append(&c->wbuf, data, (size_t)n);
        }
        if (!c->wbuf.len) break;
        ssize_t n = pt_sock_send(c->io.fd, c->ssl, pt_buf_head(&c->wbuf), c->wbuf.len);
        if (n > 0) {
            pt_buf_consume(&c->wbuf, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        conn_fail(c, PT_UERR_CLOSED);
        return;
    }
    if (!c->wbuf.len) pt_buf_release(&c->wbuf);
    if (c->nstreams == 0 && !c->wbuf.len && (c->goaway || c->w->draining || c->keepalive == 0)) {
        conn_close(c);
        return;
    }
    if (!nghttp2_session_want_read(c->sess) && !nghttp2_session_want_write(c->sess) && !c->wbuf.len) {
        conn_fail(c, PT_UERR_CLOSED);
        return;
    }
    update_events(c);
}

static void flush_cb(pt_loop *loop, pt_defer *d) { conn_flush(d->data); }

static void schedule_flush(pt_h2up_conn *c)
{
    if (c->state != CS_CLOSED) pt_defer_queue(c->w->loop, &c->flush_defer, flush_cb, c);
}

/* -------------------------------------------------------------------- input */

static void conn_readable(pt_h2up_conn *c)
{
    char buf[16384];
    for (;;) {
        ssize_t n = pt_sock_recv(c->io.fd, c->ssl, buf, sizeof(buf));
        if (n > 0) {
            ssize_t r = nghttp2_session_mem_recv(c->sess, (const uint8_t *)buf, (size_t)n);
            if (r < 0) {
                conn_fail(c, PT_UERR_PROTOCOL);
                return;
            }
            continue;
        }
        if (n == 0) {
            conn_fail(c, PT_UERR_CLOSED);
            return;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        conn_fail(c, PT_UERR_CLOSED);
        return;
    }
    conn_flush(c);
}

/* The connection is usable: tell every waiting owner (restarting the scan,
 * since an owner may close its stream or others from on_ready). */
static void conn_ready(pt_h2up_conn *c)
{
    c->state = CS_READY;
    pt_timer_stop(c->w->loop, &c->timer);
    update_events(c);
    for (;;) {
        pt_h2up_stream *s = c->streams;
        while (s && (s->ready_sent || !s->cbs)) s = s->next;
        if (!s || c->state != CS_READY) break;
        s->ready_sent = true;
        s->in_cb = true;
        s->cbs->on_ready(s->owner);
        s->in_cb = false;
        stream_maybe_free(s);
    }
    schedule_flush(c);
}

static void conn_handshake(pt_h2up_conn *c)
{
    int r = pt_tls_handshake_step(c->ssl, &c->hs_want_write);
    if (r == 0) {
        update_events(c);
    } else if (r < 0 || !pt_tls_alpn_is(c->ssl, "h2")) {
        conn_fail(c, PT_UERR_TLS); /* failed, or the upstream does not speak HTTP/2 */
    } else {
        conn_ready(c);
    }
}

static void conn_io(pt_loop *loop, pt_io *io, uint32_t events)
{
    pt_h2up_conn *c = io->data;
    if (c->state == CS_CLOSED) return;
    if (c->state == CS_CONNECTING) {
        if (pt_sock_connect_error(io->fd, events)) {
            conn_fail(c, PT_UERR_CONNECT);
            return;
        }
        if (c->ssl) {
            c->state = CS_HANDSHAKE; /* still under the connect timeout */
            conn_handshake(c);
        } else {
            conn_ready(c);
        }
        return;
    }
    if (c->state == CS_HANDSHAKE) {
        if (events & (EPOLLERR | EPOLLHUP)) conn_fail(c, PT_UERR_TLS);
        else conn_handshake(c);
        return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) conn_readable(c);
    else if (events & EPOLLOUT) conn_flush(c);
}

/* --------------------------------------------------------------- lifecycle */

static void pool_unlink(pt_h2up_conn *c)
{
    pt_h2up_conn **head = pt_pool_h2_list(c->pool);
    if (c->pool_prev) c->pool_prev->pool_next = c->pool_next;
    else if (*head == c) *head = c->pool_next;
    if (c->pool_next) c->pool_next->pool_prev = c->pool_prev;
    c->pool_prev = c->pool_next = NULL;
}

static void free_cb(pt_loop *loop, pt_defer *d) { free(d->data); }

/* Tears the connection down: every attached owner gets on_error(err), every
 * stream is freed, the connection is freed after this loop iteration. */
static void conn_fail(pt_h2up_conn *c, pt_uerr err)
{
    if (c->state == CS_CLOSED) return;
    bool was_ready = c->state == CS_READY;
    if (err == PT_UERR_CONNECT || err == PT_UERR_CONNECT_TIMEOUT) pt_dns_connect_failed(c->w->dns, &c->dns);
    c->state = CS_CLOSED;
    pool_unlink(c);
    pt_timer_stop(c->w->loop, &c->timer);
    pt_defer_cancel(c->w->loop, &c->flush_defer);
    pt_io_stop(c->w->loop, &c->io);
    for (;;) {
        pt_h2up_stream *s = c->streams;
        while (s && !s->cbs) s = s->next;
        if (!s) break;
        const pt_uconn_cbs *cbs = s->cbs;
        void *owner = s->owner;
        bool nothing = s->refused || !s->got_bytes;
        stream_detach(s);
        s->in_cb = true;
        cbs->on_error(owner, was_ready || err != PT_UERR_CONNECT ? err : PT_UERR_CONNECT, nothing);
        s->in_cb = false;
    }
    while (c->streams) {
        c->streams->nghttp2_done = true;
        stream_unlink_free(c->streams);
    }
    nghttp2_session_del(c->sess);
    c->sess = NULL;
    if (c->ssl) {
        SSL_free(c->ssl);
        ERR_clear_error();
        c->ssl = NULL;
    }
    close(c->io.fd);
    c->io.fd = -1;
    pt_buf_release(&c->wbuf);
    pt_defer_queue(c->w->loop, &c->free_defer, free_cb, c);
}

/* Orderly close of a connection without streams. */
static void conn_close(pt_h2up_conn *c)
{
    if (c->state == CS_READY && c->sess) {
        nghttp2_submit_goaway(c->sess, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
        const uint8_t *data;
        ssize_t n;
        while ((n = nghttp2_session_mem_send(c->sess, &data)) > 0) pt_buf_append(&c->wbuf, data, (size_t)n);
        if (c->wbuf.len) (void)pt_sock_send(c->io.fd, c->ssl, pt_buf_head(&c->wbuf), c->wbuf.len); /* best effort */
        /* orderly: keep the TLS session resumable (marks OpenSSL's state
         * only; no close_notify is sent) */
        if (c->ssl) SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN);
    }
    conn_fail(c, PT_UERR_CLOSED);
}

static pt_h2up_conn *conn_new(pt_worker *w, const pt_target_conf *t, pt_pool *pool, SSL_CTX *tls_ctx,
                              const pt_upstream_conf *u)
{
    int fd = pt_sock_connect_start((const struct sockaddr *)&t->addr.ss, t->addr.sslen);
    if (fd < 0) return NULL;
    pt_h2up_conn *c = pt_xcalloc(1, sizeof(*c));
    c->w = w;
    c->pool = pool;
    c->state = CS_CONNECTING;
    c->idle_ms = u->keepalive_timeout_ms;
    c->keepalive = u->keepalive;
    snprintf(c->peer, sizeof(c->peer), "%s", t->addr.text);
    c->io.fd = fd;
    if (tls_ctx && !(c->ssl = pt_tls_client_ssl(tls_ctx, &u->tls, t->host, fd))) goto fail;
    if (c->ssl) pt_tls_client_resume(c->ssl, pt_pool_tls_session(pool));

    nghttp2_session_callbacks *cb = NULL;
    nghttp2_option *opt = NULL;
    bool ok = nghttp2_session_callbacks_new(&cb) == 0 && nghttp2_option_new(&opt) == 0;
    if (ok) {
        nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
        nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
        nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
        nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
        nghttp2_option_set_no_auto_window_update(opt, 1);
        ok = nghttp2_session_client_new2(&c->sess, cb, c, opt) == 0;
    }
    if (cb) nghttp2_session_callbacks_del(cb);
    if (opt) nghttp2_option_del(opt);
    if (!ok) goto fail;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
    };
    nghttp2_submit_settings(c->sess, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    nghttp2_session_set_local_window_size(c->sess, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW);
    if (pt_io_start(w->loop, &c->io, fd, EPOLLOUT, conn_io, c) != PT_OK) goto fail;
    pt_timer_start(w->loop, &c->timer, u->connect_timeout_ms, conn_timeout, c);
    /* newest first: the pool prefers the connection opened last */
    pt_h2up_conn **head = pt_pool_h2_list(pool);
    c->pool_next = *head;
    if (*head) (*head)->pool_prev = c;
    *head = c;
    return c;
fail:
    if (c->sess) nghttp2_session_del(c->sess);
    if (c->ssl) SSL_free(c->ssl);
    close(fd);
    free(c);
    errno = ENOMEM;
    return NULL;
}

/* A host-name target: whether c's address is still one of the name's. A
 * connection left behind by a new answer takes no new streams; it closes
 * when its last stream ends, or at once if it has none. */
static bool dns_still_valid(pt_h2up_conn *c, struct pt_dns_entry *dns, const pt_target_conf *t)
{
    if (pt_dns_stamp_valid(dns, &c->dns, (const struct sockaddr *)&t->addr.ss)) return true;
    c->goaway = true;
    if (c->nstreams == 0 && c->state == CS_READY) schedule_flush(c); /* closes it */
    return false;
}

static uint32_t conn_max_streams(const pt_h2up_conn *c)
{
    if (!c->settings_received) return DEFAULT_MAX_STREAMS;
    return nghttp2_session_get_remote_settings(c->sess, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
}

pt_h2up_stream *pt_h2up_stream_open(pt_worker *w, const pt_target_conf *t, pt_pool *pool, SSL_CTX *tls_ctx,
                                    const pt_upstream_conf *u, struct pt_dns_entry *dns, bool *fresh)
{
    pt_h2up_conn *c = *pt_pool_h2_list(pool);
    while (c && (c->state == CS_CLOSED || c->goaway || c->nstreams >= conn_max_streams(c) ||
                 (c->state == CS_READY && !nghttp2_session_check_request_allowed(c->sess)) ||
                 (dns && !dns_still_valid(c, dns, t))))
        c = c->pool_next;
    if (!c) {
        pt_target_conf tmp;
        pt_dns_stamp st = {0};
        if (!(c = conn_new(w, pt_upstream_connect_target(w, dns, t, &tmp, &st), pool, tls_ctx, u)))
            return NULL;
        c->dns = st;
    }
    pt_h2up_stream *s = pt_xcalloc(1, sizeof(*s));
    s->c = c;
    s->reused = c->state == CS_READY;
    s->ready_sent = s->reused;
    s->next = c->streams;
    if (c->streams) c->streams->prev = s;
    c->streams = s;
    c->nstreams++;
    if (c->state == CS_READY) pt_timer_stop(w->loop, &c->timer); /* no longer idle */
    *fresh = c->state != CS_READY;
    return s;
}

/* ------------------------------------------------------- exchange vtable */

static void x_attach(void *x, const pt_uconn_cbs *cbs, void *owner, pt_arena *a, const pt_upstream_conf *u,
                     const pt_h1_limits *limits, uint64_t connect_timeout_ms)
{
    pt_h2up_stream *s = x;
    s->cbs = cbs;
    s->owner = owner;
    s->arena = a;
    s->limits = limits;
    s->read_timeout_ms = u->read_timeout_ms;
    s->write_timeout_ms = u->write_timeout_ms;
}

/* Fields that HTTP/2 does not carry (RFC 9113 §8.2.2; te only as
 * "trailers"), plus those this codec sets itself. */
static bool connection_specific(pt_str n, pt_str v)
{
    if (pt_str_ieq_lit(n, "te")) return !pt_str_ieq_lit(v, "trailers");
    return pt_field_connection_specific(n) || pt_str_ieq_lit(n, "host") || pt_str_ieq_lit(n, "http2-settings") ||
           pt_str_ieq_lit(n, "content-length");
}

static nghttp2_nv nv(pt_str n, pt_str v)
{
    return (nghttp2_nv){(uint8_t *)n.p, (uint8_t *)v.p, n.n, v.n, NGHTTP2_NV_FLAG_NONE};
}

/* Submits HEADERS: pseudo-headers, then the fields lowercased without the
 * connection-specific ones; the body (if any) follows as DATA. */
static void x_send_head(void *x, const pt_request *req, pt_str target, pt_str host, const pt_headers *h,
                        bool has_body, int64_t content_length)
{
    pt_h2up_stream *s = x;
    pt_h2up_conn *c = s->c;
    s->head_request = req->method == PT_METHOD_HEAD;
    nghttp2_nv *v = pt_arena_alloc(s->arena, (h->n + 7) * sizeof(*v));
    size_t k = 0;
    v[k++] = nv(PT_STR_LIT(":method"), req->method_str);
    v[k++] = nv(PT_STR_LIT(":scheme"), c->ssl ? PT_STR_LIT("https") : PT_STR_LIT("http"));
    v[k++] = nv(PT_STR_LIT(":authority"), host);
    v[k++] = nv(PT_STR_LIT(":path"), target);
    bool grpc = false, have_te = false;
    for (uint32_t i = 0; i < h->n; i++) {
        pt_str n = h->v[i].name;
        if (connection_specific(n, h->v[i].value)) continue;
        char *lower = pt_arena_alloc(s->arena, n.n + 1);
        for (size_t j = 0; j < n.n; j++) lower[j] = (n.p[j] >= 'A' && n.p[j] <= 'Z') ? (char)(n.p[j] + 32) : n.p[j];
        lower[n.n] = '\0';
        pt_str ln = pt_str_make(lower, n.n);
        if (pt_str_eq(ln, PT_STR_LIT("content-type")) && h->v[i].value.n >= 16 &&
            memcmp(h->v[i].value.p, "application/grpc", 16) == 0)
            grpc = true;
        if (pt_str_eq(ln, PT_STR_LIT("te"))) have_te = true;
        v[k++] = nv(ln, h->v[i].value);
    }
    /* gRPC servers expect "te: trailers"; the downstream codecs drop te. */
    if (grpc && !have_te) v[k++] = nv(PT_STR_LIT("te"), PT_STR_LIT("trailers"));
    char *num = pt_arena_alloc(s->arena, 24);
    if (has_body && content_length >= 0) {
        snprintf(num, 24, "%lld", (long long)content_length);
        v[k++] = nv(PT_STR_LIT("content-length"), pt_str_c(num));
    } else if (!has_body && (req->method == PT_METHOD_POST || req->method == PT_METHOD_PUT ||
                             req->method == PT_METHOD_PATCH)) {
        v[k++] = nv(PT_STR_LIT("content-length"), PT_STR_LIT("0"));
    }
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = body_read};
    if (!has_body) s->req_end = s->req_done = true;
    int32_t id = nghttp2_submit_request(c->sess, NULL, v, k, has_body ? &prd : NULL, s);
    if (id < 0) {
        s->nghttp2_done = true;
        s->refused = id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE;
        c->goaway = c->goaway || s->refused;
        stream_error(s, PT_UERR_CLOSED);
        return;
    }
    s->id = id;
    stream_arm_timer(s);
    schedule_flush(c);
}

static void resume_body(pt_h2up_stream *s)
{
    if (s->deferred && s->id > 0 && !s->nghttp2_done && s->c->state == CS_READY) {
        s->deferred = false;
        nghttp2_session_resume_data(s->c->sess, s->id);
    }
    schedule_flush(s->c);
}

static bool x_send_body(void *x, const char *data, size_t len)
{
    pt_h2up_stream *s = x;
    if (s->id <= 0 || s->nghttp2_done) return true; /* an error is on its way */
    pt_buf_append(&s->sbuf, data, len);
    resume_body(s);
    stream_arm_timer(s);
    if (s->sbuf.len >= SEND_HIGH) {
        s->want_writable = true;
        return false;
    }
    return true;
}

/* Keeps the trailer lines (names lowercased, connection-specific fields
 * dropped) in the stream until the data source reaches the end of the body. */
static void keep_request_trailers(pt_h2up_stream *s, pt_str t)
{
    pt_str rest = t, n, v;
    while (pt_field_line_next(&rest, &n, &v)) {
        if (connection_specific(n, v) || pt_str_ieq_lit(n, "te")) continue;
        for (size_t i = 0; i < n.n; i++) {
            char ch = n.p[i];
            ch = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
            pt_buf_append(&s->req_trailers, &ch, 1);
        }
        pt_buf_append(&s->req_trailers, "", 1);
        pt_buf_append(&s->req_trailers, v.p, v.n);
        pt_buf_append(&s->req_trailers, "", 1);
        s->nreq_trailers++;
    }
}

static void x_send_end(void *x, pt_str trailers)
{
    pt_h2up_stream *s = x;
    if (!s->req_end && trailers.n) keep_request_trailers(s, trailers);
    s->req_end = true;
    if (s->id > 0 && !s->nghttp2_done) resume_body(s);
}

static void x_pause_read(void *x, bool paused)
{
    pt_h2up_stream *s = x;
    if (s->paused == paused) return;
    s->paused = paused;
    if (!paused) queue_deliver(s);
    stream_arm_timer(s);
}

static void x_close(void *x)
{
    pt_h2up_stream *s = x;
    pt_h2up_conn *c = s->c;
    stream_detach(s);
    if (s->id <= 0) s->nghttp2_done = true; /* nghttp2 never knew it */
    if (!s->nghttp2_done && c->state == CS_READY) {
        nghttp2_submit_rst_stream(c->sess, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
        schedule_flush(c);
    }
    stream_maybe_free(s);
}

/* The exchange is complete: a stream still open in nghttp2 closes by
 * itself once our END_STREAM is out. */
static void x_release(void *x)
{
    pt_h2up_stream *s = x;
    if (!s->req_done || !s->resp_done) {
        x_close(x);
        return;
    }
    stream_detach(s);
    if (s->id <= 0) s->nghttp2_done = true;
    stream_maybe_free(s);
}

static bool x_reused(const void *x)
{
    const pt_h2up_stream *s = x;
    return s->reused || s->refused; /* a refused stream is always safe to retry */
}

const pt_upstream_exchange_ops pt_h2_exchange_ops = {
    .attach = x_attach,
    .send_head = x_send_head,
    .send_body = x_send_body,
    .send_end = x_send_end,
    .pause_read = x_pause_read,
    .release = x_release,
    .close = x_close,
    .reused = x_reused,
};

/* -------------------------------------------------------------------- pool */

void pt_h2up_pool_close(pt_pool *p, bool force)
{
    pt_h2up_conn *c = *pt_pool_h2_list(p);
    while (c) {
        pt_h2up_conn *next = c->pool_next;
        c->goaway = true;
        if (force) conn_fail(c, PT_UERR_CLOSED);
        else if (c->nstreams == 0) conn_close(c);
        c = next;
    }
}
