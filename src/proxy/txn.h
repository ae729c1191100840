/* txn.h — the protocol-neutral transaction: one request/response exchange,
 * from a parsed request head to the last response byte. This is the heart of
 * the proxy: it routes, runs the plugin pipeline (with pause/resume), picks
 * an upstream target, streams the body both ways with backpressure and
 * writes the access log.
 *
 * A downstream codec (HTTP/1 today, HTTP/2 later) owns the stream and its
 * arena, creates the txn in that arena, feeds it the request through the
 * pt_txn_* functions below and receives the response through the
 * pt_downstream_ops callbacks. The txn never sees wire framing. */
#ifndef PT_PROXY_TXN_H
#define PT_PROXY_TXN_H

#include "http/message.h"
#include "net/splice.h"
#include "plugin/plugin.h"

struct pt_worker;

/* Response side, implemented by the downstream codec. `stream` is the
 * codec's own pointer. */
typedef struct {
    /* Interim 1xx response (103 Early Hints); the codec may drop it. */
    void (*send_informational)(void *stream, const pt_response *res);
    /* Final response head. res->has_body / content_length (-1 = unknown) tell
     * the codec how to frame. */
    void (*send_head)(void *stream, const pt_response *res);
    /* Body bytes (copied by the codec). Returns false when the codec's
     * output is above its high watermark: stop producing until
     * pt_txn_on_downstream_writable(). */
    bool (*send_body)(void *stream, const char *data, size_t len);
    /* End of the response body; `trailers` are HTTP field lines
     * ("name: value\r\n"...), possibly empty. */
    void (*send_end)(void *stream, pt_str trailers);
    /* Start (true) or stop (false) delivering request body bytes through
     * pt_txn_on_request_body(). The first `true` answers Expect: 100-continue. */
    void (*want_body)(void *stream, bool want);
    /* The response cannot be completed (upstream died mid-body): the codec
     * must make that visible to the client (HTTP/1: close the connection
     * without completing the framing). */
    void (*abort)(void *stream);
    /* Optional: take back the response head and body queued so far when
     * none of it has reached the client; returns true if done (a new head
     * may then be sent), false if the client may have seen some of it. */
    bool (*retract)(void *stream);
    /* The txn is over (logged, upstream released). The codec may free the
     * arena now or later; the txn must not be touched afterwards. */
    void (*finished)(void *stream);
    /* Bytes written to the client for this response so far, framing
     * included (for the access log). */
    uint64_t (*bytes_sent)(void *stream);

    /* Tunnels (docs/websocket.md). Optional: NULL when the codec cannot
     * carry one. tunnel_start comes right after send_head of the response
     * that opens the tunnel (status 101; the HTTP/2 codec sends it as
     * :status 200 to an extended CONNECT). From then on the stream carries
     * raw bytes both ways and nothing else of the ops above is used except
     * abort, finished and bytes_sent:
     *   the codec hands the client's bytes to pt_txn_on_tunnel_data() while
     *   reading is wanted (tunnel_read, off at start), then its end (FIN,
     *   END_STREAM) once to pt_txn_on_tunnel_eof(); a reset or an error is
     *   pt_txn_on_downstream_closed();
     *   tunnel_send queues bytes for the client (copied) and returns false
     *   above the high watermark (then pt_txn_on_downstream_writable);
     *   tunnel_shutdown sends the end of our side (FIN / END_STREAM) after
     *   the queued bytes.
     * After finished the codec ends the stream: the connection (HTTP/1)
     * closes once the end of our side is out, an HTTP/2 stream the client
     * keeps open is reset; after abort, at once. */
    void (*tunnel_start)(void *stream);
    bool (*tunnel_send)(void *stream, const char *data, size_t len);
    void (*tunnel_read)(void *stream, bool want);
    void (*tunnel_shutdown)(void *stream);

    /* Splicing a body (net/splice.h, docs/performance.md). Optional: NULL
     * when the codec cannot (HTTP/2). splice_fd returns the client socket
     * when the rest of a body can move without the codec touching its
     * bytes, else -1 (`take` false only asks, true hands the socket over):
     *   request (read from the client): plain HTTP/1.1, a Content-Length
     *   body none of whose bytes are buffered (*remaining: those still to
     *   come); the codec stops reading the body itself and, while the body
     *   is wanted (want_body), reports readability through
     *   pt_txn_on_splice_io with its body clock running as usual;
     *   response (written to the client): plain HTTP/1.1, the response
     *   framed by Content-Length, nothing queued; splice_wait(true) reports
     *   writability through pt_txn_on_splice_io under the send timeout.
     * splice_moved: n request body bytes were taken from the socket (the
     * body clock, what remains) or n response bytes written (bytes_sent).
     * splice_end: DONE (the request body is complete), STOP (back to the
     * codec's own I/O), FAIL (the client closed or its socket failed: the
     * codec closes the connection from the loop, and
     * pt_txn_on_downstream_closed follows). */
    int (*splice_fd)(void *stream, bool response, bool take, uint64_t *remaining);
    void (*splice_wait)(void *stream, bool wait);
    void (*splice_moved)(void *stream, bool response, uint64_t n);
    void (*splice_end)(void *stream, pt_splice_end how);
} pt_downstream_ops;

typedef struct pt_txn pt_txn;

/* What the codec knows about the connection a request arrived on. */
typedef struct {
    pt_str client_addr;         /* "203.0.113.7" */
    size_t listener;            /* index in the generation's cfg->listeners */
    bool tls;
    pt_str client_cert_subject; /* verified mTLS client subject, empty if none */
    pt_str client_cert_sans;    /* its subjectAltNames ("DNS:a,URI:b"), empty if none */
    uintptr_t tls_policy;       /* TLS: client_auth policy key of the handshake (pt_tls_conn_policy) */
    pt_str tls_version;         /* TLS: "TLSv1.3", "TLSv1.2" (static), else empty */
    pt_str sni;                 /* TLS: the server name the client sent (lives with the connection), else empty */
} pt_conn_info;

/* Creates a transaction in `a` (the stream's arena) on worker `w`; `ci` is
 * copied (its strings must outlive the txn: the connection owns them). */
pt_txn *pt_txn_new(struct pt_worker *w, pt_arena *a, const pt_downstream_ops *ops, void *stream,
                   const pt_conn_info *ci, uint64_t start_us);

/* The request head is parsed (req lives in the arena). head_bytes counts
 * toward bytes_in. Starts routing and the request phases. */
void pt_txn_start(pt_txn *txn, pt_request *req, uint64_t head_bytes);

/* The request could not be parsed: answer `status` (problem+json), log it.
 * `req` may be partially filled or NULL; bytes_in is what was received. */
void pt_txn_start_error(pt_txn *txn, pt_request *req, int status, const char *detail, uint64_t bytes_in);

/* Request body bytes (valid only during the call); last = end of body. */
void pt_txn_on_request_body(pt_txn *txn, const char *data, size_t len, bool last);

/* The request's trailer section, raw field lines ("name: value\r\n"...,
 * valid only during the call), given at most once, at any time before the
 * last pt_txn_on_request_body() (last = true): HTTP/1 just before it,
 * HTTP/2 when the trailing HEADERS arrive (DATA may still be queued). Counted in bytes_in; the fields
 * RFC 9110 §6.5.1 keeps out of trailers are dropped
 * (pt_trailer_field_forbidden), the rest is copied into the arena and sent
 * with the upstream exchange's send_end. Ignored once the body is complete. */
void pt_txn_on_request_trailers(pt_txn *txn, pt_str trailers);

/* The slow-body limits for this request (downstream/body_pace.h): the matched
 * route's body_timeout / min_body_rate, else timeouts.body /
 * limits.min_body_rate. */
void pt_txn_body_limits(const pt_txn *txn, uint64_t *gap_ms, uint64_t *min_rate);

/* A request body error detected by the codec (malformed chunk, too large,
 * timeout): status is 400/413/408. */
void pt_txn_on_request_error(pt_txn *txn, int status, const char *detail);

/* The codec's output dropped below its low watermark. */
void pt_txn_on_downstream_writable(pt_txn *txn);

/* The client went away or the codec hit a fatal error: abort, log, and
 * call ops->finished(). Never from inside a call the txn made into the
 * codec (the codec frees the arena after this returns). */
void pt_txn_on_downstream_closed(pt_txn *txn);

/* Tunnel bytes from the client (valid only during the call); see the
 * tunnel ops above. Never seen by plugins; counted in bytes_in. */
void pt_txn_on_tunnel_data(pt_txn *txn, const char *data, size_t len);
/* The client ended its side of the tunnel (FIN, END_STREAM). */
void pt_txn_on_tunnel_eof(pt_txn *txn);

/* The client socket of a splice is ready (see splice_fd above). */
void pt_txn_on_splice_io(pt_txn *txn);

/* True once a response head has been handed to the codec. */
bool pt_txn_response_started(const pt_txn *txn);

#endif
