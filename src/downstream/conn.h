/* conn.h — the downstream connection object, shared by the HTTP/1 and
 * HTTP/2 servers (docs/architecture.md, "Downstream").
 *
 * What every client connection has, whatever it speaks, lives here once:
 *   - accept: TCP_NODELAY, registration with the worker loop, the
 *     connection metrics (opened at accept, closed once at the end);
 *   - the TLS handshake of an HTTPS listener, bounded by timeouts.header,
 *     the verified client certificate (mTLS identity) and the protocol
 *     choice (ALPN "h2" -> HTTP/2, else HTTP/1.1);
 *   - the peer: its address (printable per request, pt_conn_info_fill) and
 *     the connlimit counts taken at accept, released exactly once at close;
 *   - the worker's list of client connections, so a drain or a shutdown
 *     reaches every connection through its protocol's callbacks;
 *   - freeing: a closed connection is freed after the loop iteration (an
 *     event for its fd may still sit in the current epoll batch).
 *
 * A protocol embeds pt_conn as the FIRST member of its own connection
 * struct (so a pt_conn * is also a pointer to that struct) and is
 * described by a pt_conn_proto. A connection changes protocol (TLS
 * handshake -> HTTP/1 or HTTP/2; HTTP/1 seeing the h2c preface -> HTTP/2)
 * with pt_conn_move: the shared part moves into the new struct, nothing
 * is reopened or recounted. */
#ifndef PT_DOWNSTREAM_CONN_H
#define PT_DOWNSTREAM_CONN_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "core/loop.h"
#include "proxy/txn.h"

struct pt_worker;
struct pt_worker_gen;
struct pt_tls_server;
typedef struct pt_conn pt_conn;

typedef struct pt_conn_proto {
    const char *name;
    /* The worker starts draining: finish what is in flight, take nothing
     * new, close when done. */
    void (*drain)(pt_conn *c);
    /* Close now (drain deadline passed, shutdown): live requests are told
     * the client is gone. Must end in pt_conn_close. */
    void (*close)(pt_conn *c);
    /* Optional: frees what the protocol keeps until the struct itself goes
     * (called when a closed connection is freed, after the iteration). */
    void (*finalize)(pt_conn *c);
} pt_conn_proto;

struct pt_conn {
    pt_io io;                 /* io.data == this connection */
    pt_timer timer;           /* the protocol's connection timer (the handshake's before) */
    struct pt_worker *w;
    pt_conn *prev, *next;     /* the worker's client connections; the free list once closed */
    const pt_conn_proto *proto;
    SSL *ssl;                 /* HTTPS listener: the TLS session, else NULL */
    char *cert_subject;       /* verified client certificate subject (heap), or NULL */
    char *cert_sans;          /* its subjectAltNames (heap), or NULL */
    struct pt_worker_gen *hs_wg; /* generation pinned during the TLS handshake (SNI state) */
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } peer;                   /* client address as accepted (for connlimit) */
    uint16_t listener;        /* index of the listener that accepted it */
    bool counted_client;      /* counted per client address by connlimit */
    bool closed;              /* pt_conn_close ran (or the connection moved) */
    bool hs_want_write;       /* the handshake waits for writability */
};

/* Takes ownership of the accepted, non-blocking socket `fd` counted by
 * connlimit for `listener` (and per client when counted_client). With `tls`
 * (an HTTPS listener) the TLS handshake runs first, bounded by
 * timeouts.header; the connection then speaks HTTP/2 if ALPN chose "h2",
 * HTTP/1.1 otherwise. A plaintext connection starts as HTTP/1.1 (which
 * switches to HTTP/2 on the h2c preface, listeners with http2). */
void pt_conn_accept(struct pt_worker *w, int fd, const struct sockaddr *peer, socklen_t peerlen, size_t listener,
                    struct pt_tls_server *tls, bool counted_client);

/* Moves the shared part of `from` into a new zeroed struct of `size` bytes
 * (>= sizeof(pt_conn)); `from` is retired without closing anything (marked
 * closed, freed after this loop iteration). The connection timer is
 * stopped. The new protocol's start function then sets c->proto and
 * c->io.cb (the loop reads io.cb at each event) and arms its timer.
 * Returns the new connection. */
pt_conn *pt_conn_move(pt_conn *from, size_t size);

/* Releases what every connection holds: the loop registration, the timer,
 * the TLS session (close_notify first when `tls_shutdown`), the socket,
 * the peer identity, the connlimit counts and the connection metric; the
 * struct is freed after this loop iteration. The protocol must have
 * released its own parts (buffers, defers, requests) first. Idempotent. */
void pt_conn_close(pt_conn *c, bool tls_shutdown);

/* The per-request view of the connection for pt_txn_new: the client
 * address formatted into `a`, listener, TLS and client certificate. */
void pt_conn_info_fill(const pt_conn *c, pt_arena *a, pt_conn_info *ci);

/* Every connection of the worker: drain (pt_conn_proto.drain; handshakes
 * in progress are closed) / close now / how many (by protocol name, or all
 * with NULL). */
void pt_conns_drain(struct pt_worker *w);
void pt_conns_close_all(struct pt_worker *w);
size_t pt_conns_count(struct pt_worker *w, const char *proto_name);
/* Frees the closed connections now. Only once the worker's loop has
 * stopped (nothing can name them any more). */
void pt_conns_reap(struct pt_worker *w);

#endif
