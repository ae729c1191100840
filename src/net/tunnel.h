/* tunnel.h — one end of a byte tunnel on a socket, plain or TLS: what an
 * HTTP/1 connection becomes after a 101 (docs/websocket.md), on the client
 * side (downstream/h1_server.c) and on the upstream side (upstream/h1_client.c).
 *
 * The owner keeps its socket and its epoll registration (pt_io) and, while
 * the tunnel runs, forwards that io's events to pt_tunnel_sock_io(); it
 * closes the socket itself after pt_tunnel_sock_stop(). Bytes are handed on
 * as they are read (never held beyond the read, except those the owner had
 * already read and gives at start, until it asks for bytes); output is
 * queued and written once per loop iteration, at once at the high
 * watermark.
 *
 * Half-close: the peer's FIN (TLS: close_notify) is reported once with
 * on_eof, after every byte before it; pt_tunnel_sock_shutdown() sends ours
 * once the queued output is written (TLS: close_notify, then FIN) and
 * reports on_shutdown. Reading may go on after our FIN.
 *
 * Events come only from the loop (the owner's io callback or a deferred
 * call), never from inside a pt_tunnel_sock_* call; the owner may stop the
 * tunnel (and close its socket) from inside any of them. The struct stays
 * readable until the current loop iteration ends (owners free their
 * connections after it). */
#ifndef PT_HTTP_TUNNEL_H
#define PT_HTTP_TUNNEL_H

#include <openssl/ssl.h>

#include "core/buf.h"
#include "core/loop.h"

#define PT_TUNNEL_HIGH (64u * 1024) /* pt_tunnel_sock_send returns false at or above */
#define PT_TUNNEL_LOW (16u * 1024)  /* on_writable below */

/* The events of one tunnel end. Any may be NULL. */
typedef struct pt_tunnel_cbs {
    void (*on_data)(void *owner, const char *data, size_t len); /* valid during the call */
    void (*on_eof)(void *owner);      /* the peer closed its sending side (once) */
    void (*on_writable)(void *owner); /* output fell below PT_TUNNEL_LOW after a send returned false */
    void (*on_shutdown)(void *owner); /* our FIN went out (once, after pt_tunnel_sock_shutdown) */
    void (*on_error)(void *owner);    /* reset or I/O error (once); nothing else follows */
} pt_tunnel_cbs;

typedef struct pt_tunnel_sock {
    pt_loop *loop;
    pt_io *io;           /* the owner's registration (its fd) */
    SSL *ssl;            /* NULL: plain */
    pt_buf rbuf;         /* bytes read before the owner wanted them (given at start) */
    pt_buf wbuf;         /* output not yet written */
    pt_defer work;       /* flush, deliver, report from the loop */
    const pt_tunnel_cbs *cbs;
    void *owner;
    bool reading;        /* the owner wants bytes */
    bool rd_eof;         /* the peer's FIN was read */
    bool eof_told;
    bool hup;            /* EPOLLHUP while not reading: read without epoll when wanted */
    bool shut_wanted;
    bool ssl_shut;       /* close_notify sent (or given up) */
    bool shut_want_write;/* SSL_shutdown waits for the socket */
    bool shut_done;      /* FIN sent */
    bool shut_told;
    bool blocked;        /* a send returned false: on_writable below LOW */
    bool failed;
    bool err_told;
    bool detached;       /* removed from epoll (nothing more to wait for) */
    bool stopped;
} pt_tunnel_sock;

/* Starts the tunnel on the owner's socket. `rbuf` / `wbuf` (may be NULL)
 * are moved in: bytes the owner read but did not use, and output it queued
 * but did not write yet. `peer_eof`: the owner already saw the peer's FIN.
 * Nothing is read until pt_tunnel_sock_read(t, true). */
void pt_tunnel_sock_start(pt_tunnel_sock *t, pt_loop *loop, pt_io *io, SSL *ssl, pt_buf *rbuf, pt_buf *wbuf,
                          bool peer_eof, const pt_tunnel_cbs *cbs, void *owner);
/* Queues bytes (copied). False at or above PT_TUNNEL_HIGH: on_writable
 * follows. After a failure or a shutdown the bytes are dropped. */
bool pt_tunnel_sock_send(pt_tunnel_sock *t, const char *data, size_t len);
/* Start or stop delivering the peer's bytes (backpressure). */
void pt_tunnel_sock_read(pt_tunnel_sock *t, bool want);
/* Send our FIN after the queued output. */
void pt_tunnel_sock_shutdown(pt_tunnel_sock *t);
/* The owner's io callback, while the tunnel runs. */
void pt_tunnel_sock_io(pt_tunnel_sock *t, uint32_t events);
/* Our FIN is out, or the socket failed: nothing more will be written. */
static inline bool pt_tunnel_sock_done(const pt_tunnel_sock *t) { return t->shut_done || t->failed; }
/* Ends the tunnel: buffers freed, no more events. The owner then stops its
 * io and closes the socket. */
void pt_tunnel_sock_stop(pt_tunnel_sock *t);

#endif
