/* h1_client.c — see h1_client.h.
 *
 * States: CONNECTING (EPOLLOUT until connect completes), BUSY (one
 * exchange), IDLE (parked in a pool, EPOLLIN only to notice a close),
 * TUNNEL (raw bytes after a 101, net/tunnel.h; closed at the end, never
 * pooled), CLOSED (freed after the current loop iteration).
 * One timer: connect timeout while connecting, write timeout while output
 * is blocked, read timeout while waiting for response bytes, keep-alive
 * timeout while idle. */
#include "upstream/h1_client.h"
#include "upstream/exchange.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "net/dns.h"
#include "server/worker.h"
#include "tls/tls_client.h"
#include "net/tls_io.h"

#include <openssl/err.h>

#define UP_WBUF_HIGH (64u * 1024)
#define UP_WBUF_LOW (16u * 1024)
#define UP_ZEROCOPY_MIN 4096u

enum { US_CONNECTING = 1, US_BUSY, US_IDLE, US_CLOSED, US_HANDSHAKE, US_TUNNEL };
/* c->splice: which body moves through the owner's pipe (exchange.h splice_*) */
enum { UP_SPLICE_NONE = 0, UP_SPLICE_RESPONSE, UP_SPLICE_REQUEST };

static void uconn_io(pt_loop *loop, pt_io *io, uint32_t events);
static void check_tls_pending(pt_uconn *c);

static void process_input(pt_uconn *c);
static void update_events(pt_uconn *c);
static void arm_timer(pt_uconn *c);

static void fail(pt_uconn *c, pt_uerr e)
{
    if (c->state == US_CLOSED) return;
    if (c->state == US_IDLE || !c->cbs) {
        pt_uconn_close(c);
        return;
    }
    if (e == PT_UERR_CONNECT || e == PT_UERR_CONNECT_TIMEOUT) pt_dns_connect_failed(c->w->dns, &c->dns);
    const pt_uconn_cbs *cbs = c->cbs;
    void *owner = c->owner;
    bool nothing = !c->got_bytes;
    c->cbs = NULL;
    /* The owner closes the connection in on_error. */
    cbs->on_error(owner, e, nothing);
    if (c->state != US_CLOSED) pt_uconn_close(c);
}

pt_uconn *pt_uconn_connect(pt_worker *w, const pt_target_conf *t, pt_pool *pool, SSL_CTX *tls_ctx,
                           const pt_upstream_tls_conf *tls)
{
    int fd = pt_sock_connect_start((const struct sockaddr *)&t->addr.ss, t->addr.sslen);
    if (fd < 0) return NULL;
    pt_uconn *c = pt_xcalloc(1, sizeof(*c));
    c->w = w;
    c->pool = pool;
    c->state = US_CONNECTING;
    snprintf(c->peer, sizeof(c->peer), "%s", t->addr.text);
    if (tls_ctx && !(c->ssl = pt_tls_client_ssl(tls_ctx, tls, t->host, fd))) {
        close(fd);
        free(c);
        errno = ENOMEM;
        return NULL;
    }
    if (c->ssl) pt_tls_client_resume(c->ssl, pt_pool_tls_session(pool));
    if (pt_io_start(w->loop, &c->io, fd, EPOLLOUT, uconn_io, c) != PT_OK) {
        if (c->ssl) SSL_free(c->ssl);
        close(fd);
        free(c);
        return NULL;
    }
    return c;
}

void pt_uconn_attach(pt_uconn *c, const pt_uconn_cbs *cbs, void *owner, pt_arena *a, const pt_upstream_conf *u,
                     const pt_h1_limits *limits, uint64_t connect_timeout_ms)
{
    c->cbs = cbs;
    c->owner = owner;
    c->arena = a;
    c->limits = limits;
    c->read_timeout_ms = u->read_timeout_ms;
    c->write_timeout_ms = u->write_timeout_ms;
    c->connect_timeout_ms = connect_timeout_ms;
    c->keepalive_max = u->keepalive;
    c->keepalive_ms = u->keepalive_timeout_ms;
    c->req_done = c->resp_done = c->got_bytes = c->have_head = c->eof = false;
    c->upgrade_sent = c->tunnel_head = false;
    c->stream_large = false;
    c->splice = UP_SPLICE_NONE;
    c->splice_wait = false;
    c->read_paused = false;
    c->in_disabled = false;
    c->dec = NULL;
    c->resp_remaining = 0;
    memset(&c->info, 0, sizeof(c->info));
    if (c->state == US_IDLE) {
        c->state = US_BUSY;
        c->reused = true;
    }
    arm_timer(c);
    update_events(c);
}

/* ------------------------------------------------------------------ output */

/* notify: call on_writable when drained (not from inside pt_uconn_send_body,
 * whose caller learns it from the return value). */
static void flush_now(pt_uconn *c, bool notify)
{
    while (c->wbuf.len) {
        ssize_t n = pt_sock_send(c->io.fd, c->ssl, pt_buf_head(&c->wbuf), c->wbuf.len);
        if (n > 0) {
            pt_buf_consume(&c->wbuf, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        fail(c, PT_UERR_CLOSED);
        return;
    }
    if (!c->wbuf.len) pt_buf_release(&c->wbuf);
    arm_timer(c);
    update_events(c);
    if (notify && c->wbuf.len < UP_WBUF_LOW && !c->req_done && c->cbs && c->state == US_BUSY)
        c->cbs->on_writable(c->owner);
}

static void flush_cb(pt_loop *loop, pt_defer *d)
{
    pt_uconn *c = d->data;
    if (c->state == US_BUSY) flush_now(c, true);
}

static void schedule_flush(pt_uconn *c) { pt_defer_queue(c->w->loop, &c->flush_defer, flush_cb, c); }

static void put(pt_buf *b, const char *s, size_t n) { pt_buf_append(b, s, n); }
#define PUT_LIT(b, s) put((b), (s), sizeof(s) - 1)

void pt_uconn_send_head(pt_uconn *c, const pt_request *req, pt_str target, pt_str host, const pt_headers *h,
                        bool has_body, int64_t content_length)
{
    pt_buf *b = &c->wbuf;
    c->head_request = req->method == PT_METHOD_HEAD;
    size_t need = req->method_str.n + target.n + host.n + 64;
    for (uint32_t i = 0; i < h->n; i++) need += h->v[i].name.n + h->v[i].value.n + 4;
    need += req->upgrade.n + 40;
    pt_buf_reserve(b, need);
    put(b, req->method_str.p, req->method_str.n);
    PUT_LIT(b, " ");
    put(b, target.p, target.n);
    PUT_LIT(b, " HTTP/1.1\r\nHost: ");
    put(b, host.p, host.n);
    PUT_LIT(b, "\r\n");
    c->upgrade_sent = req->upgrade.n > 0;
    if (c->upgrade_sent) { /* a tunnel is asked for (the txn kept the intent) */
        PUT_LIT(b, "Connection: Upgrade\r\nUpgrade: ");
        put(b, req->upgrade.p, req->upgrade.n);
        PUT_LIT(b, "\r\n");
    }
    for (uint32_t i = 0; i < h->n; i++) {
        put(b, h->v[i].name.p, h->v[i].name.n);
        PUT_LIT(b, ": ");
        put(b, h->v[i].value.p, h->v[i].value.n);
        PUT_LIT(b, "\r\n");
    }
    c->req_chunked = false;
    if (has_body && content_length < 0) {
        c->req_chunked = true;
        PUT_LIT(b, "Transfer-Encoding: chunked\r\n");
    } else if (has_body || req->method == PT_METHOD_POST || req->method == PT_METHOD_PUT ||
               req->method == PT_METHOD_PATCH) {
        char num[48]; /* "Content-Length: " + up to 19 digits + CRLF */
        int n = snprintf(num, sizeof(num), "Content-Length: %lld\r\n", (long long)(has_body ? content_length : 0));
        put(b, num, (size_t)n);
    }
    PUT_LIT(b, "\r\n");
    if (!has_body) c->req_done = true;
    schedule_flush(c);
}

bool pt_uconn_send_body(pt_uconn *c, const char *data, size_t len)
{
    PT_ASSERT(c->state == US_BUSY); /* the owner sends only after on_ready */
    char hdr[24];
    struct iovec iov[3];
    int n = 0;
    size_t total = len;
    if (c->req_chunked) {
        size_t hn = pt_chunk_header(hdr, len);
        iov[n++] = (struct iovec){hdr, hn};
        total += hn + 2;
    }
    iov[n++] = (struct iovec){(void *)data, len};
    if (c->req_chunked) iov[n++] = (struct iovec){"\r\n", 2};
    /* Batched like the downstream side (see h1_server.c:ds_send_body): queue
     * below the watermark; at it, one writev of queue + piece, no copy. */
    if (total < UP_ZEROCOPY_MIN || c->wbuf.len + total < UP_WBUF_HIGH || (c->io.events & EPOLLOUT) || c->ssl) {
        for (int i = 0; i < n; i++) put(&c->wbuf, iov[i].iov_base, iov[i].iov_len);
        if (c->wbuf.len >= UP_WBUF_HIGH) {
            pt_defer_cancel(c->w->loop, &c->flush_defer);
            flush_now(c, false);
            return c->state == US_BUSY && c->wbuf.len < UP_WBUF_HIGH;
        }
        schedule_flush(c);
        return true;
    }
    /* Errors surface through the deferred flush / the read side. */
    if (pt_buf_writev(c->io.fd, &c->wbuf, iov, n) == PT_ERR) {
        schedule_flush(c);
        return false;
    }
    arm_timer(c);
    update_events(c);
    return c->wbuf.len < UP_WBUF_HIGH;
}

void pt_uconn_send_end(pt_uconn *c, pt_str trailers)
{
    if (c->state != US_BUSY || c->req_done) return; /* one end per exchange */
    if (c->req_chunked) {
        PUT_LIT(&c->wbuf, "0\r\n");
        if (trailers.n) put(&c->wbuf, trailers.p, trailers.n);
        PUT_LIT(&c->wbuf, "\r\n");
    }
    c->req_done = true;
    schedule_flush(c);
}

/* ------------------------------------------------------------------- input */

static void on_eof(pt_uconn *c);

static void resume_cb(pt_loop *loop, pt_defer *d)
{
    pt_uconn *c = d->data;
    if (c->state == US_BUSY && !c->read_paused) process_input(c);
    /* The upstream closed while we were paused: act on it now. */
    if (c->state == US_BUSY && c->cbs && !c->read_paused && c->eof) on_eof(c);
}

void pt_uconn_pause_read(pt_uconn *c, bool paused)
{
    if (c->state == US_TUNNEL) {
        pt_tunnel_sock_read(&c->tun, !paused);
        return;
    }
    if (c->state != US_BUSY || c->read_paused == paused || c->splice == UP_SPLICE_RESPONSE) return;
    c->read_paused = paused;
    arm_timer(c);
    update_events(c);
    /* Resume from the loop: buffered bytes, or a completion that waited. */
    if (!paused && (c->rbuf.len || c->have_head)) pt_defer_queue(c->w->loop, &c->resume_defer, resume_cb, c);
    if (!paused) check_tls_pending(c);
}

static void complete(pt_uconn *c, pt_str trailers)
{
    c->resp_done = true;
    pt_timer_stop(c->w->loop, &c->timer);
    const pt_uconn_cbs *cbs = c->cbs;
    c->cbs = NULL; /* the owner releases or closes us in on_end */
    cbs->on_end(c->owner, trailers);
}

/* Parses/delivers what rbuf holds. Stops when paused, closed or released. */
static void process_input(pt_uconn *c)
{
    while (c->state == US_BUSY && c->cbs && !c->read_paused && !c->tunnel_head && c->splice != UP_SPLICE_RESPONSE) {
        if (!c->have_head) {
            if (!c->rbuf.len) return;
            pt_response res;
            memset(&res, 0, sizeof(res));
            pt_h1_error err = {0, NULL};
            ssize_t n = pt_h1_parse_response(pt_buf_head(&c->rbuf), c->rbuf.len, c->limits, c->head_request, c->arena,
                                             &res, &c->info, &err);
            if (n == PT_AGAIN) return;
            if (n < 0) {
                fail(c, PT_UERR_PROTOCOL);
                return;
            }
            char *copy = pt_arena_alloc(c->arena, (size_t)n);
            memcpy(copy, pt_buf_head(&c->rbuf), (size_t)n);
            pt_response_rebase(&res, pt_buf_head(&c->rbuf), (size_t)n, copy);
            pt_buf_consume(&c->rbuf, (size_t)n);
            if (res.status == 101 && c->upgrade_sent) {
                /* The answer to an upgrade: what follows belongs to the
                 * tunnel (or to nobody, if the owner refuses it). */
                c->have_head = c->tunnel_head = true;
                pt_timer_stop(c->w->loop, &c->timer);
                pt_response *out = pt_arena_alloc(c->arena, sizeof(*out));
                *out = res;
                c->cbs->on_head(c->owner, out);
                return;
            }
            if (res.status < 200) {
                if (res.status == 101) { /* no upgrade was asked for */
                    fail(c, PT_UERR_PROTOCOL);
                    return;
                }
                if (res.status != 100) c->cbs->on_informational(c->owner, &res);
                continue;
            }
            c->have_head = true;
            if (c->info.body == PT_H1_BODY_LENGTH) c->resp_remaining = c->info.content_length;
            if (c->info.body == PT_H1_BODY_CHUNKED) {
                c->dec = pt_arena_alloc(c->arena, sizeof(*c->dec));
                pt_chunked_init(c->dec);
            }
            pt_response *out = pt_arena_alloc(c->arena, sizeof(*out));
            *out = res;
            c->cbs->on_head(c->owner, out);
            if (c->state != US_BUSY || !c->cbs) return;
            continue; /* the owner may have paused reading until its response phase ran */
        }
        /* Completion is checked before anything else so that a pause taken
         * in on_body (a plugin holding a chunk) delays it until resumed. */
        switch (c->info.body) {
        case PT_H1_BODY_NONE:
            complete(c, PT_STR_NULL);
            return;
        case PT_H1_BODY_LENGTH: {
            if (c->resp_remaining == 0) {
                complete(c, PT_STR_NULL);
                return;
            }
            if (!c->rbuf.len) return;
            size_t n = (size_t)PT_MIN((uint64_t)c->rbuf.len, c->resp_remaining);
            c->resp_remaining -= n;
            const char *p = pt_buf_head(&c->rbuf);
            pt_buf_consume(&c->rbuf, n);
            c->cbs->on_body(c->owner, p, n);
            if (c->state != US_BUSY || !c->cbs) return;
            break;
        }
        case PT_H1_BODY_CHUNKED: {
            if (c->dec->done) {
                complete(c, pt_str_make(c->dec->trailers, c->dec->trailers_len));
                return;
            }
            if (!c->rbuf.len) return;
            const char *data = NULL;
            size_t dlen = 0;
            pt_h1_error err = {0, NULL};
            ssize_t used = pt_chunked_decode(c->dec, pt_buf_head(&c->rbuf), c->rbuf.len, &data, &dlen, &err);
            if (used < 0) {
                fail(c, PT_UERR_PROTOCOL);
                return;
            }
            if (dlen) {
                c->cbs->on_body(c->owner, data, dlen);
                if (c->state != US_BUSY || !c->cbs) return;
            }
            pt_buf_consume(&c->rbuf, (size_t)used);
            if (used == 0 && !c->dec->done) return;
            break;
        }
        case PT_H1_BODY_CLOSE: {
            if (!c->rbuf.len) return;
            size_t n = c->rbuf.len;
            const char *p = pt_buf_head(&c->rbuf);
            pt_buf_consume(&c->rbuf, n);
            c->cbs->on_body(c->owner, p, n);
            if (c->state != US_BUSY || !c->cbs) return;
            break;
        }
        default:
            return;
        }
    }
}

static void on_eof(pt_uconn *c)
{
    if (c->tunnel_head) return; /* kept for the tunnel (tunnel_start hands it on) */
    if (c->state == US_BUSY && c->cbs && c->have_head && c->info.body == PT_H1_BODY_CLOSE) {
        c->info.keep_alive = false;
        complete(c, PT_STR_NULL);
        return;
    }
    fail(c, PT_UERR_CLOSED);
}

static void on_readable(pt_uconn *c);

static void read_defer_cb(pt_loop *loop, pt_defer *d)
{
    pt_uconn *c = d->data;
    if (c->state == US_BUSY && !c->read_paused) on_readable(c);
}

/* OpenSSL may hold decrypted bytes that epoll will not announce. */
static void check_tls_pending(pt_uconn *c)
{
    if (c->ssl && c->state == US_BUSY && !c->read_paused && SSL_pending(c->ssl) > 0)
        pt_defer_queue(c->w->loop, &c->read_defer, read_defer_cb, c);
}

static void on_readable(pt_uconn *c)
{
    if (c->state == US_IDLE) { /* a pooled connection spoke or closed: drop it */
        pt_uconn_close(c);
        return;
    }
    for (int rounds = 0; rounds < 4 && c->state == US_BUSY; rounds++) {
        if (c->stream_large && !c->rbuf.len) pt_buf_reserve_large(&c->rbuf);
        pt_buf_reserve(&c->rbuf, 4096);
        size_t room = pt_buf_tailroom(&c->rbuf);
        ssize_t n = pt_sock_recv(c->io.fd, c->ssl, pt_buf_tail(&c->rbuf), room);
        if (n > 0) {
            /* A body read that filled a mostly empty buffer: more is
             * queued; read the rest of this body in large blocks. */
            if (c->have_head && (size_t)n == room && room >= PT_BUF_BLOCK / 2) c->stream_large = true;
            c->rbuf.len += (uint32_t)n;
            c->got_bytes = true;
            arm_timer(c);
            process_input(c);
            if (((size_t)n < room && !c->ssl) || c->read_paused || c->splice == UP_SPLICE_RESPONSE) break;
            continue;
        }
        if (n == 0) {
            c->eof = true;
            process_input(c);
            if (c->state == US_BUSY && c->cbs && !c->read_paused) on_eof(c);
            return;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        fail(c, PT_UERR_CLOSED);
        return;
    }
    if (c->state == US_BUSY && !c->rbuf.len) pt_buf_release(&c->rbuf);
    check_tls_pending(c);
}

static void connected(pt_uconn *c)
{
    c->state = US_BUSY;
    arm_timer(c);
    update_events(c);
    if (c->cbs) c->cbs->on_ready(c->owner);
}

static void up_handshake(pt_uconn *c)
{
    int r = pt_tls_handshake_step(c->ssl, &c->hs_want_write);
    if (r > 0) connected(c);
    else if (r == 0) update_events(c);
    else fail(c, PT_UERR_TLS);
}

static void uconn_io(pt_loop *loop, pt_io *io, uint32_t events)
{
    pt_uconn *c = io->data;
    if (c->state == US_CLOSED) return;
    if (c->state == US_TUNNEL) {
        pt_tunnel_sock_io(&c->tun, events);
        return;
    }
    if (c->state == US_CONNECTING) {
        if (pt_sock_connect_error(io->fd, events)) {
            fail(c, PT_UERR_CONNECT);
            return;
        }
        if (c->ssl) {
            c->state = US_HANDSHAKE; /* still under the connect timeout */
            up_handshake(c);
            return;
        }
        connected(c);
        return;
    }
    if (c->state == US_HANDSHAKE) {
        if (events & (EPOLLERR | EPOLLHUP)) fail(c, PT_UERR_TLS);
        else up_handshake(c);
        return;
    }
    if (events & EPOLLOUT) {
        if (c->splice == UP_SPLICE_REQUEST && !c->wbuf.len) {
            /* the request body goes from the owner's pipe */
            if (c->splice_wait && c->cbs) c->cbs->on_splice(c->owner);
        } else {
            flush_now(c, true);
        }
        if (c->state == US_CLOSED) return;
    }
    if (c->splice == UP_SPLICE_RESPONSE) { /* the response body goes into the owner's pipe */
        if (c->splice_wait && c->cbs && (events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)))
            c->cbs->on_splice(c->owner);
        else if (events & (EPOLLHUP | EPOLLERR)) /* reported whatever the interest: a reset mid-body */
            fail(c, PT_UERR_CLOSED);
        return;
    }
    if (c->state == US_BUSY && c->read_paused && !(events & (EPOLLHUP | EPOLLERR))) {
        if (events & (EPOLLIN | EPOLLRDHUP)) { /* not now: stop listening until resumed */
            c->in_disabled = true;
            update_events(c);
        }
        return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) on_readable(c);
}

/* EPOLLIN|EPOLLRDHUP stays registered both while busy and while pooled, so
 * taking and returning a pooled connection costs no epoll_ctl. A read pause
 * is lazy: EPOLLIN is removed only if bytes arrive while paused. */
static void update_events(pt_uconn *c)
{
    uint32_t ev;
    switch (c->state) {
    case US_CONNECTING: ev = EPOLLOUT; break;
    case US_HANDSHAKE: ev = c->hs_want_write ? EPOLLOUT : EPOLLIN; break;
    case US_IDLE: ev = EPOLLIN | EPOLLRDHUP; break;
    case US_BUSY:
        ev = (c->read_paused && c->in_disabled) ? 0 : EPOLLIN | EPOLLRDHUP;
        if (c->splice == UP_SPLICE_RESPONSE) ev = c->splice_wait ? EPOLLIN | EPOLLRDHUP : 0;
        if (c->wbuf.len || (c->splice == UP_SPLICE_REQUEST && c->splice_wait)) ev |= EPOLLOUT;
        break;
    default: return;
    }
    pt_io_modify(c->w->loop, &c->io, ev);
}

/* ------------------------------------------------------------------ timers */

static void on_timer(pt_loop *loop, pt_timer *t)
{
    pt_uconn *c = t->data;
    switch (c->state) {
    case US_CONNECTING:
    case US_HANDSHAKE: fail(c, PT_UERR_CONNECT_TIMEOUT); break;
    case US_IDLE: pt_uconn_close(c); break;
    case US_BUSY:
        fail(c, c->wbuf.len || (c->splice == UP_SPLICE_REQUEST && c->splice_wait) ? PT_UERR_WRITE_TIMEOUT
                                                                                 : PT_UERR_READ_TIMEOUT);
        break;
    default: break;
    }
}

static void arm_timer(pt_uconn *c)
{
    uint64_t ms;
    switch (c->state) {
    case US_CONNECTING: ms = c->connect_timeout_ms; break;
    case US_HANDSHAKE: return; /* the connect timer keeps running */
    case US_BUSY:
        if (c->resp_done || c->tunnel_head) {
            pt_timer_stop(c->w->loop, &c->timer);
            return;
        }
        /* While the upstream reads our body slowly, the write timeout applies;
         * otherwise we wait for it to answer. */
        if (c->splice == UP_SPLICE_RESPONSE) { /* read timeout only while the pipe waits for us */
            if (!c->splice_wait) {
                pt_timer_stop(c->w->loop, &c->timer);
                return;
            }
            ms = c->read_timeout_ms;
            break;
        }
        if (c->splice == UP_SPLICE_REQUEST && c->splice_wait) {
            ms = c->write_timeout_ms;
            break;
        }
        if (c->read_paused && !c->wbuf.len) {
            /* we stopped reading (downstream backpressure, response phase):
             * the upstream is not the one being slow */
            pt_timer_stop(c->w->loop, &c->timer);
            return;
        }
        ms = c->wbuf.len ? c->write_timeout_ms : c->read_timeout_ms;
        break;
    default: return;
    }
    pt_timer_start(c->w->loop, &c->timer, ms, on_timer, c);
}

/* --------------------------------------------------------------- lifecycle */

void pt_uconn_release(pt_uconn *c)
{
    if (c->state != US_BUSY) {
        if (c->state != US_CLOSED) pt_uconn_close(c);
        return;
    }
    /* Bytes left over after a complete response (in rbuf, or decrypted and
     * held inside OpenSSL, which epoll will never announce) would be read as
     * the next client's response: such a connection is never reused. */
    bool reusable = c->resp_done && c->req_done && c->info.keep_alive && !c->rbuf.len && !c->wbuf.len && c->pool &&
                    c->splice == UP_SPLICE_NONE &&
                    !c->w->draining && !(c->ssl && SSL_has_pending(c->ssl));
    c->cbs = NULL;
    c->owner = NULL;
    c->arena = NULL;
    c->dec = NULL;
    if (!reusable) {
        /* a complete exchange (e.g. "Connection: close") keeps the TLS
         * session resumable; a broken one does not. SSL_set_shutdown only
         * marks the state for OpenSSL: no close_notify is sent. */
        if (c->ssl && c->resp_done && c->req_done) SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN);
        pt_uconn_close(c);
        return;
    }
    pt_buf_release(&c->rbuf);
    pt_buf_release(&c->wbuf);
    pt_defer_cancel(c->w->loop, &c->resume_defer);
    pt_defer_cancel(c->w->loop, &c->flush_defer);
    c->state = US_IDLE;
    c->read_paused = false;
    c->in_disabled = false;
    update_events(c);
    /* pt_pool_put arms the idle timer and may close us if the pool is full */
    pt_pool_put(c->pool, c, c->keepalive_max, c->keepalive_ms);
}

static void free_cb(pt_loop *loop, pt_defer *d) { free(d->data); }

void pt_uconn_close(pt_uconn *c)
{
    if (c->state == US_CLOSED) return;
    if (c->state == US_IDLE && c->pool) pt_pool_remove(c->pool, c);
    /* An idle connection ends cleanly: its TLS session stays resumable
     * (OpenSSL invalidates the session of an SSL freed mid-stream; marking
     * the shutdown state sends no close_notify). */
    if (c->state == US_IDLE && c->ssl) SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN);
    if (c->state == US_TUNNEL) pt_tunnel_sock_stop(&c->tun);
    c->state = US_CLOSED;
    c->cbs = NULL;
    pt_timer_stop(c->w->loop, &c->timer);
    pt_defer_cancel(c->w->loop, &c->resume_defer);
    pt_defer_cancel(c->w->loop, &c->flush_defer);
    pt_defer_cancel(c->w->loop, &c->read_defer);
    pt_io_stop(c->w->loop, &c->io);
    if (c->ssl) {
        SSL_free(c->ssl); /* no close_notify: the exchange is over or broken */
        ERR_clear_error();
        c->ssl = NULL;
    }
    close(c->io.fd);
    c->io.fd = -1;
    pt_buf_release(&c->rbuf);
    pt_buf_release(&c->wbuf);
    pt_defer_queue(c->w->loop, &c->free_defer, free_cb, c);
}

void pt_uconn_idle_timer(pt_uconn *c, uint64_t ms) { pt_timer_start(c->w->loop, &c->timer, ms, on_timer, c); }

/* ------------------------------------------------------- exchange vtable */

static void x_attach(void *x, const pt_uconn_cbs *cbs, void *owner, pt_arena *a, const pt_upstream_conf *u,
                     const pt_h1_limits *limits, uint64_t connect_timeout_ms)
{
    pt_uconn_attach(x, cbs, owner, a, u, limits, connect_timeout_ms);
}
static void x_send_head(void *x, const pt_request *req, pt_str target, pt_str host, const pt_headers *h,
                        bool has_body, int64_t cl)
{
    pt_uconn_send_head(x, req, target, host, h, has_body, cl);
}
static bool x_send_body(void *x, const char *d, size_t n) { return pt_uconn_send_body(x, d, n); }
static void x_send_end(void *x, pt_str trailers) { pt_uconn_send_end(x, trailers); }
static void x_pause_read(void *x, bool p) { pt_uconn_pause_read(x, p); }
static void x_release(void *x) { pt_uconn_release(x); }
static void x_close(void *x) { pt_uconn_close(x); }
static bool x_reused(const void *x) { return ((const pt_uconn *)x)->reused; }

/* After the 101: bytes the upstream sent behind it, and an EOF already
 * seen, are the tunnel's first events. */
static void x_tunnel_start(void *x, const pt_tunnel_cbs *cbs, void *owner)
{
    pt_uconn *c = x;
    PT_ASSERT(c->state == US_BUSY && c->tunnel_head);
    c->state = US_TUNNEL;
    c->cbs = NULL;
    pt_timer_stop(c->w->loop, &c->timer);
    pt_defer_cancel(c->w->loop, &c->resume_defer);
    pt_defer_cancel(c->w->loop, &c->flush_defer);
    pt_defer_cancel(c->w->loop, &c->read_defer);
    pt_tunnel_sock_start(&c->tun, c->w->loop, &c->io, c->ssl, &c->rbuf, &c->wbuf, c->eof, cbs, owner);
}
static bool x_tunnel_send(void *x, const char *d, size_t n) { return pt_tunnel_sock_send(&((pt_uconn *)x)->tun, d, n); }
static void x_tunnel_shutdown(void *x) { pt_tunnel_sock_shutdown(&((pt_uconn *)x)->tun); }

/* ------------------------------------------------------------- splicing */

static int x_splice_fd(void *x, bool response, bool take, uint64_t *remaining)
{
    pt_uconn *c = x;
    if (c->ssl || c->state != US_BUSY || !c->cbs || c->splice != UP_SPLICE_NONE) return -1;
    if (response) {
        if (!c->have_head || c->tunnel_head || c->info.body != PT_H1_BODY_LENGTH || c->rbuf.len || c->read_paused ||
            c->eof || !c->resp_remaining || c->resp_done)
            return -1;
        *remaining = c->resp_remaining;
        if (!take) return c->io.fd;
        c->splice = UP_SPLICE_RESPONSE;
        pt_defer_cancel(c->w->loop, &c->resume_defer);
        pt_buf_release(&c->rbuf);
    } else {
        if (c->req_chunked || c->req_done || c->wbuf.len || c->upgrade_sent) return -1;
        if (!take) return c->io.fd;
        c->splice = UP_SPLICE_REQUEST;
    }
    c->splice_wait = false;
    arm_timer(c);
    update_events(c);
    return c->io.fd;
}

static void x_splice_wait(void *x, bool wait)
{
    pt_uconn *c = x;
    if (c->state != US_BUSY || c->splice == UP_SPLICE_NONE || c->splice_wait == wait) return;
    c->splice_wait = wait;
    arm_timer(c);
    update_events(c);
}

static void x_splice_moved(void *x, uint64_t n)
{
    pt_uconn *c = x;
    if (!n || c->state != US_BUSY) return;
    if (c->splice == UP_SPLICE_RESPONSE) {
        PT_ASSERT(n <= c->resp_remaining);
        c->resp_remaining -= n;
        c->got_bytes = true;
    }
    arm_timer(c); /* progress */
}

static void x_splice_end(void *x, pt_splice_end how)
{
    pt_uconn *c = x;
    if (c->state != US_BUSY) return;
    bool response = c->splice == UP_SPLICE_RESPONSE;
    c->splice = UP_SPLICE_NONE;
    c->splice_wait = false;
    if (how == PT_SPLICE_END_FAIL) {
        if (response) c->eof = true;
        fail(c, PT_UERR_CLOSED);
        return;
    }
    arm_timer(c);
    update_events(c);
    if (how != PT_SPLICE_END_DONE || !response || c->resp_remaining || !c->cbs) return;
    /* Bytes behind the response, still in the socket (the copy path would
     * have read them into rbuf): never pool such a connection. */
    int pending = 0;
    if (ioctl(c->io.fd, FIONREAD, &pending) != 0 || pending > 0) c->info.keep_alive = false;
    complete(c, PT_STR_NULL);
}

const pt_upstream_exchange_ops pt_h1_exchange_ops = {
    .attach = x_attach,
    .send_head = x_send_head,
    .send_body = x_send_body,
    .send_end = x_send_end,
    .pause_read = x_pause_read,
    .release = x_release,
    .close = x_close,
    .reused = x_reused,
    .tunnel_start = x_tunnel_start,
    .tunnel_send = x_tunnel_send,
    .tunnel_shutdown = x_tunnel_shutdown,
    .splice_fd = x_splice_fd,
    .splice_wait = x_splice_wait,
    .splice_moved = x_splice_moved,
    .splice_end = x_splice_end,
};
