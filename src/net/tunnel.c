/* tunnel.c — see tunnel.h. */
#include "net/tunnel.h"

#include <errno.h>
#include <sys/socket.h>

#include <openssl/err.h>

#include "net/tls_io.h"

#define TUN_READ 16384u
#define TUN_READ_ROUNDS 8

static void work_cb(pt_loop *loop, pt_defer *d);

static void schedule(pt_tunnel_sock *t)
{
    if (!t->stopped) pt_defer_queue(t->loop, &t->work, work_cb, t);
}

/* Registers what the tunnel waits for. Once nothing can come any more (both
 * directions over, failed) or the peer hung up while we do not read (an
 * EPOLLHUP would be reported again and again), the socket leaves epoll. */
static void update_events(pt_tunnel_sock *t)
{
    if (t->stopped || t->detached) return;
    if (t->failed || (t->rd_eof && t->shut_done) || t->hup) {
        pt_io_stop(t->loop, t->io);
        t->detached = true;
        return;
    }
    uint32_t ev = 0;
    if (t->reading && !t->rd_eof) ev |= EPOLLIN | EPOLLRDHUP;
    if (t->wbuf.len || t->shut_want_write) ev |= EPOLLOUT;
    pt_io_modify(t->loop, t->io, ev);
}

/* Our FIN after the output: close_notify first on TLS. */
static void do_shutdown(pt_tunnel_sock *t)
{
    if (t->ssl && !t->ssl_shut) {
        ERR_clear_error();
        int r = SSL_shutdown(t->ssl);
        if (r < 0 && SSL_get_error(t->ssl, r) == SSL_ERROR_WANT_WRITE) {
            t->shut_want_write = true;
            return;
        }
        ERR_clear_error();
        t->ssl_shut = true; /* sent, or the session cannot send it: FIN alone */
        t->shut_want_write = false;
    }
    shutdown(t->io->fd, SHUT_WR);
    t->shut_done = true;
}

/* Writes what is queued; no callbacks. */
static void flush(pt_tunnel_sock *t)
{
    while (t->wbuf.len && !t->failed) {
        ssize_t n = pt_sock_send(t->io->fd, t->ssl, pt_buf_head(&t->wbuf), t->wbuf.len);
        if (n > 0) {
            pt_buf_consume(&t->wbuf, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        t->failed = true;
    }
    if (!t->wbuf.len) pt_buf_release(&t->wbuf);
    if (!t->failed && !t->wbuf.len && t->shut_wanted && !t->shut_done) do_shutdown(t);
}

/* Hands the bytes in rbuf to the owner. False if it stopped the tunnel. */
static bool deliver(pt_tunnel_sock *t)
{
    while (t->rbuf.len && t->reading) {
        size_t n = t->rbuf.len;
        if (t->cbs->on_data) t->cbs->on_data(t->owner, pt_buf_head(&t->rbuf), n);
        if (t->stopped) return false;
        pt_buf_consume(&t->rbuf, n);
    }
    if (!t->rbuf.len) pt_buf_release(&t->rbuf);
    return true;
}

/* Reads and delivers while the owner wants bytes. False if it stopped. */
static bool do_read(pt_tunnel_sock *t)
{
    for (int round = 0; round < TUN_READ_ROUNDS && t->reading && !t->rd_eof && !t->failed; round++) {
        pt_buf_reserve(&t->rbuf, TUN_READ);
        size_t room = PT_MIN(pt_buf_tailroom(&t->rbuf), (size_t)TUN_READ * 4);
        ssize_t n = pt_sock_recv(t->io->fd, t->ssl, pt_buf_tail(&t->rbuf), room);
        if (n > 0) {
            t->rbuf.len += (uint32_t)n;
            if (!deliver(t)) return false;
            continue;
        }
        if (n == 0) {
            t->rd_eof = true;
            break;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (t->hup) t->rd_eof = true; /* hung up: nothing more will come */
            break;
        }
        t->failed = true;
    }
    if (!t->rbuf.len) pt_buf_release(&t->rbuf);
    /* OpenSSL may hold decrypted bytes that epoll will not announce. */
    if (t->reading && !t->rd_eof && !t->failed && t->ssl && SSL_pending(t->ssl) > 0) schedule(t);
    return true;
}

#define CALL(t, cb)                                      \
    do {                                                 \
        if ((t)->cbs->cb) (t)->cbs->cb((t)->owner);      \
        if ((t)->stopped) return;                        \
    } while (0)

/* Tells the owner what happened, then waits for what comes next. */
static void report(pt_tunnel_sock *t)
{
    if (t->failed) {
        if (!t->err_told) {
            t->err_told = true;
            CALL(t, on_error);
        }
    } else {
        if (t->rd_eof && !t->rbuf.len && !t->eof_told) {
            t->eof_told = true;
            CALL(t, on_eof);
        }
        if (t->blocked && t->wbuf.len < PT_TUNNEL_LOW && !t->failed) {
            t->blocked = false;
            CALL(t, on_writable);
        }
        if (t->shut_done && !t->shut_told) {
            t->shut_told = true;
            CALL(t, on_shutdown);
        }
        if (t->failed) { /* the owner's calls found the socket dead */
            schedule(t);
            return;
        }
    }
    update_events(t);
}

static void work_cb(pt_loop *loop, pt_defer *d)
{
    pt_tunnel_sock *t = d->data;
    if (t->stopped) return;
    if (!t->failed) flush(t);
    if (!t->failed && t->reading) {
        if (!deliver(t)) return;
        if ((t->hup || (t->ssl && SSL_pending(t->ssl) > 0)) && !do_read(t)) return;
    }
    report(t);
}

void pt_tunnel_sock_start(pt_tunnel_sock *t, pt_loop *loop, pt_io *io, SSL *ssl, pt_buf *rbuf, pt_buf *wbuf,
                          bool peer_eof, const pt_tunnel_cbs *cbs, void *owner)
{
    *t = (pt_tunnel_sock){.loop = loop, .io = io, .ssl = ssl, .cbs = cbs, .owner = owner, .rd_eof = peer_eof};
    if (rbuf) {
        t->rbuf = *rbuf;
        *rbuf = (pt_buf){0};
    }
    if (wbuf) {
        t->wbuf = *wbuf;
        *wbuf = (pt_buf){0};
    }
    update_events(t);
    schedule(t);
}

bool pt_tunnel_sock_send(pt_tunnel_sock *t, const char *data, size_t len)
{
    if (t->stopped || t->failed || t->shut_wanted) return true;
    pt_buf_append(&t->wbuf, data, len);
    if (t->wbuf.len >= PT_TUNNEL_HIGH) {
        pt_defer_cancel(t->loop, &t->work);
        flush(t); /* no callbacks here: a failure is reported from the loop */
        if (t->failed) {
            schedule(t);
            return true;
        }
        update_events(t);
        if (t->wbuf.len >= PT_TUNNEL_HIGH) {
            t->blocked = true;
            return false;
        }
        if (t->wbuf.len) schedule(t);
        return true;
    }
    schedule(t);
    return true;
}

void pt_tunnel_sock_read(pt_tunnel_sock *t, bool want)
{
    if (t->stopped || t->reading == want) return;
    t->reading = want;
    if (want && (t->rbuf.len || t->hup || (t->rd_eof && !t->eof_told) || (t->ssl && SSL_pending(t->ssl) > 0)))
        schedule(t);
    update_events(t);
}

void pt_tunnel_sock_shutdown(pt_tunnel_sock *t)
{
    if (t->stopped || t->shut_wanted) return;
    t->shut_wanted = true;
    schedule(t);
}

void pt_tunnel_sock_io(pt_tunnel_sock *t, uint32_t events)
{
    if (t->stopped) return;
    if (events & EPOLLERR) t->failed = true;
    if (!t->failed && ((events & EPOLLOUT) || t->shut_want_write)) flush(t);
    if (!t->failed && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP))) {
        if (t->reading) {
            if (events & EPOLLHUP) t->hup = true;
            if (!do_read(t)) return;
        } else if (events & EPOLLHUP) {
            t->hup = true; /* read when wanted (update_events leaves epoll) */
        }
    }
    report(t);
}

void pt_tunnel_sock_stop(pt_tunnel_sock *t)
{
    if (t->stopped) return;
    t->stopped = true;
    pt_defer_cancel(t->loop, &t->work);
    pt_buf_release(&t->rbuf);
    pt_buf_release(&t->wbuf);
}
