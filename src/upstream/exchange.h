/* exchange.h — the interface a transaction uses to run one request/response
 * exchange with an upstream, whatever the protocol: an HTTP/1.1 connection
 * (h1_client.c, one exchange per connection at a time) or an HTTP/2 stream
 * (h2_client.c, many streams multiplexed on one connection).
 *
 * The handle is opaque (`void *`); events come back through pt_uconn_cbs
 * (h1_client.h) with the same meaning for both protocols. */
#ifndef PT_UPSTREAM_EXCHANGE_H
#define PT_UPSTREAM_EXCHANGE_H

#include "net/splice.h"
#include "net/tunnel.h"
#include "upstream/h1_client.h"

typedef struct pt_upstream_exchange_ops {
    /* Binds the exchange to its owner; for a fresh one on_ready fires later. */
    void (*attach)(void *x, const pt_uconn_cbs *cbs, void *owner, pt_arena *a, const pt_upstream_conf *u,
                   const pt_h1_limits *limits, uint64_t connect_timeout_ms);
    void (*send_head)(void *x, const pt_request *req, pt_str target, pt_str host, const pt_headers *headers,
                      bool has_body, int64_t content_length);
    bool (*send_body)(void *x, const char *data, size_t len); /* false above the high watermark */
    /* End of the request body. `trailers`: filtered field lines
     * ("name: value\r\n"..., possibly empty, valid during the call); HTTP/1
     * sends them only with a chunked body, HTTP/2 as a trailing HEADERS. */
    void (*send_end)(void *x, pt_str trailers);
    /* Stop/start reading the response; in tunnel mode, the tunnel bytes. */
    void (*pause_read)(void *x, bool paused);
    void (*release)(void *x); /* exchange over: keep the connection if healthy */
    void (*close)(void *x);   /* abandon the exchange */
    bool (*reused)(const void *x); /* ran on a connection established before it */

    /* Tunnels (docs/websocket.md). Optional: NULL when the protocol cannot
     * carry one (HTTP/2). A request whose req->upgrade is set is sent with
     * Upgrade / "Connection: Upgrade"; the upstream's 101 comes as on_head
     * (nothing after it is parsed). The owner then calls tunnel_start, and
     * the exchange carries raw bytes: events come through `cbs` (on_data,
     * on_eof once for the upstream's FIN, on_writable after tunnel_send
     * returned false, on_shutdown once our FIN is out, on_error), reading
     * is controlled with pause_read (paused until the owner unpauses it),
     * tunnel_shutdown sends our FIN after the queued bytes. A tunnel's
     * connection is never pooled: release and close both close it. */
    void (*tunnel_start)(void *x, const pt_tunnel_cbs *cbs, void *owner);
    bool (*tunnel_send)(void *x, const char *data, size_t len); /* false above the high watermark */
    void (*tunnel_shutdown)(void *x);

    /* Splicing a body (net/splice.h, docs/performance.md). Optional: NULL
     * when the protocol cannot (HTTP/2). splice_fd returns the socket when
     * the rest of a body can move without the exchange touching its bytes,
     * else -1 (`take` false only asks, true hands the socket over):
     *   response (read from this socket): plain TCP, a Content-Length body
     *   none of whose bytes are buffered (*remaining: those still to come);
     *   the exchange stops reading the response itself;
     *   request (written to it): plain TCP, the request framed by
     *   Content-Length, nothing queued; the response is still read as usual.
     * splice_wait(x, true): report readiness (response: readable, request:
     * writable) through cbs->on_splice, under the read (write) timeout;
     * false: the other end is the slow one (no timer for this direction).
     * splice_moved: n response bytes were taken from the socket / n request
     * bytes written (progress restarts the timer). splice_end: DONE (a
     * response completes through on_end), STOP (back to the exchange's own
     * I/O), FAIL (the upstream closed early or the socket failed: on_error). */
    int (*splice_fd)(void *x, bool response, bool take, uint64_t *remaining);
    void (*splice_wait)(void *x, bool wait);
    void (*splice_moved)(void *x, uint64_t n);
    void (*splice_end)(void *x, pt_splice_end how);
} pt_upstream_exchange_ops;

extern const pt_upstream_exchange_ops pt_h1_exchange_ops;
extern const pt_upstream_exchange_ops pt_h2_exchange_ops;

struct pt_worker;

/* The retry rule shared by the proxy and the internal HTTP client. An
 * exchange that failed before any response byte arrived may be tried again
 * (at most PT_EXCHANGE_MAX_ATTEMPTS attempts in all): on a stale pooled
 * connection (reused, then closed) whatever the target — the caller starts
 * its target choice over — and after a failed connect on another target
 * while untried targets remain, when `connect_retry_ok` (the caller's own
 * condition, e.g. an idempotent method). */
#define PT_EXCHANGE_MAX_ATTEMPTS 8
typedef enum { PT_RETRY_NONE = 0, PT_RETRY_STALE, PT_RETRY_NEXT_TARGET } pt_exchange_retry_kind;
pt_exchange_retry_kind pt_exchange_retry(pt_uerr err, bool reused, bool nothing_received, int attempts,
                                         size_t ntargets, bool connect_retry_ok);

/* Opens an exchange with target `idx` of upstream `u` on worker w: an HTTP/2
 * stream (protocol h2/h2c), else a pooled HTTP/1 connection or a new one.
 * `tls_ctx`: the generation's SSL_CTX for an https upstream, else NULL.
 * Sets *ops, and *fresh when the exchange is still connecting (on_ready
 * fires after attach). NULL (errno set) when it failed at once. The one way
 * an exchange is opened; a worker may replace it (w->open_exchange, used by
 * the txn unit tests to put a scripted upstream behind a real txn). */
typedef void *(*pt_exchange_open_fn)(struct pt_worker *w, pt_upstream_rt *u, int idx, SSL_CTX *tls_ctx,
                                     const pt_upstream_exchange_ops **ops, bool *fresh);
void *pt_exchange_open(struct pt_worker *w, pt_upstream_rt *u, int idx, SSL_CTX *tls_ctx,
                       const pt_upstream_exchange_ops **ops, bool *fresh);

#endif
