/* h1_client.h — an HTTP/1.1 connection to an upstream target: non-blocking
 * connect, request serialisation, response parsing with the strict codec,
 * body decoding, timeouts, and the rule that a connection goes back to the
 * pool only after a complete, well-framed exchange.
 *
 * One exchange at a time: the owner (a pt_txn) attaches, sends the request,
 * receives events, then calls pt_uconn_release(). */
#ifndef PT_UPSTREAM_H1_CLIENT_H
#define PT_UPSTREAM_H1_CLIENT_H

#include "core/buf.h"
#include "core/loop.h"
#include "http/h1.h"
#include "net/tunnel.h"
#include "net/dns_cache.h"
#include "upstream/upstream.h"

#include <openssl/ssl.h>

struct pt_worker;

typedef enum {
    PT_UERR_CONNECT = 1,   /* connect() failed (refused, unreachable) */
    PT_UERR_CONNECT_TIMEOUT,
    PT_UERR_WRITE_TIMEOUT,
    PT_UERR_READ_TIMEOUT,
    PT_UERR_CLOSED,        /* reset or closed before the response was complete */
    PT_UERR_PROTOCOL,      /* invalid response (framing, syntax) */
    PT_UERR_TLS,           /* TLS handshake or certificate verification failed */
} pt_uerr;

typedef struct {
    void (*on_ready)(void *owner);    /* connected: the request may be sent */
    void (*on_writable)(void *owner); /* output drained below the low watermark */
    void (*on_informational)(void *owner, pt_response *res); /* 1xx other than 100 */
    void (*on_head)(void *owner, pt_response *res);          /* final head (in the owner's arena) */
    void (*on_body)(void *owner, const char *data, size_t len);
    void (*on_end)(void *owner, pt_str trailers);            /* response complete */
    /* Failure. `nothing_received`: no response byte arrived, so an
     * idempotent request may be retried elsewhere. */
    void (*on_error)(void *owner, pt_uerr err, bool nothing_received);
    /* A splice end (exchange.h splice_*) is ready: readable / writable. */
    void (*on_splice)(void *owner);
} pt_uconn_cbs;

typedef struct pt_uconn pt_uconn;
struct pt_uconn {
    pt_io io;
    pt_timer timer;
    pt_defer resume_defer; /* re-run input processing after an unpause */
    pt_defer flush_defer;  /* write wbuf once per loop iteration */
    pt_defer free_defer;   /* free after the current epoll batch */
    pt_defer read_defer;   /* TLS: read bytes OpenSSL already decrypted */
    struct pt_worker *w;
    pt_pool *pool;
    pt_uconn *pool_prev, *pool_next; /* idle list */
    pt_buf rbuf, wbuf;
    int state;
    bool reused;
    bool read_paused;
    bool in_disabled;        /* EPOLLIN removed: bytes arrived while paused */
    bool head_request;
    bool req_chunked;
    bool req_done;
    bool resp_done;
    bool got_bytes;
    bool in_callback;
    pt_h1_info info;
    uint64_t resp_remaining;
    bool have_head;          /* final response head received */
    bool stream_large;       /* the body's reads fill the buffer: read it in large blocks (core/buf.h) */
    bool eof;                /* the upstream closed its side (seen while reading) */
    uint64_t idle_until;     /* pooled: keep-alive deadline */
    uint64_t connect_timeout_ms;
    uint32_t keepalive_max;  /* pool size limit of the upstream */
    uint64_t keepalive_ms;   /* idle lifetime in the pool */
    pt_chunked_decoder *dec; /* in the owner's arena, only for chunked responses */
    uint64_t read_timeout_ms, write_timeout_ms;
    const pt_h1_limits *limits;
    const pt_uconn_cbs *cbs;
    void *owner;
    pt_arena *arena;
    char peer[64];           /* "host:port" for logs */
    SSL *ssl;                /* https upstream: the TLS session */
    bool hs_want_write;
    bool upgrade_sent;       /* the request asked for an upgrade: a 101 is its answer */
    bool tunnel_head;        /* the 101 arrived: nothing more is parsed */
    pt_tunnel_sock tun;      /* after tunnel_start (state TUNNEL; never pooled again) */
    pt_dns_stamp dns;        /* the address it was opened to, for a host-name target (net/dns.h) */
    uint8_t splice;          /* UP_SPLICE_*: this socket is one end of its owner's splice (exchange.h) */
    bool splice_wait;        /* ...and the owner waits for it (readiness goes to cbs->on_splice) */
};

/* Starts a non-blocking connect to `t` (then a TLS handshake when tls_ctx is
 * given). Returns NULL (errno set) if it failed at once. */
pt_uconn *pt_uconn_connect(struct pt_worker *w, const pt_target_conf *t, pt_pool *pool, SSL_CTX *tls_ctx,
                           const pt_upstream_tls_conf *tls);

/* Binds the connection to an owner for one exchange. For a fresh connection
 * on_ready fires once connected (or on_error); for a pooled one the owner may
 * send at once. */
void pt_uconn_attach(pt_uconn *c, const pt_uconn_cbs *cbs, void *owner, pt_arena *a,
                     const pt_upstream_conf *u, const pt_h1_limits *limits, uint64_t connect_timeout_ms);

/* Serialises the request head. content_length: -1 => chunked body, 0 with
 * has_body false => none. `target` is path[?query]; `host` the Host value.
 * A request with req->upgrade adds "Connection: Upgrade" and that Upgrade
 * list, and takes a 101 as its final head (see exchange.h, tunnels). */
void pt_uconn_send_head(pt_uconn *c, const pt_request *req, pt_str target, pt_str host,
                        const pt_headers *headers, bool has_body, int64_t content_length);
/* Request body bytes (copied). Returns false above the high watermark. */
bool pt_uconn_send_body(pt_uconn *c, const char *data, size_t len);
/* End of the request body. With a chunked body the trailer field lines
 * ("name: value\r\n"..., copied) follow the last chunk; a Content-Length
 * framed body has no place for them: they are dropped. */
void pt_uconn_send_end(pt_uconn *c, pt_str trailers);
/* Stop/start reading the response (downstream backpressure). */
void pt_uconn_pause_read(pt_uconn *c, bool paused);
/* Ends the exchange: the connection goes back to its pool if the exchange
 * was complete and well-framed, otherwise it is closed. */
void pt_uconn_release(pt_uconn *c);
/* Closes now (the owner gave up). */
void pt_uconn_close(pt_uconn *c);
/* Pool support: arm the keep-alive timer of an idle connection. */
void pt_uconn_idle_timer(pt_uconn *c, uint64_t ms);

#endif
