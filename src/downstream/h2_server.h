/* h2_server.h — the downstream HTTP/2 connection (nghttp2 server session).
 *
 * One pt_txn per stream, each stream with its own arena from the worker
 * cache. Requests are translated into the protocol-neutral pt_request
 * (message.h); responses come back through pt_downstream_ops and are framed
 * by nghttp2 (HEADERS, DATA pulled from a per-stream buffer, trailers).
 * Flow control gives real backpressure: request DATA is acknowledged
 * (WINDOW_UPDATE) only once the txn has taken it. See docs/http2.md for the
 * limits and the abuse protections (rapid reset, CONTINUATION flood). */
#ifndef PT_DOWNSTREAM_H2_SERVER_H
#define PT_DOWNSTREAM_H2_SERVER_H

#include <stddef.h>

#include "downstream/conn.h"

/* The client connection preface (RFC 9113 §3.4), 24 bytes. */
#define PT_H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define PT_H2_PREFACE_LEN 24u

/* Size of the HTTP/2 connection struct (pt_conn first), for pt_conn_move. */
size_t pt_h2_conn_size(void);

/* Starts HTTP/2 on `c`, a zeroed struct of pt_h2_conn_size() bytes whose
 * shared part was moved in (pt_conn_move): after a TLS handshake that
 * selected ALPN "h2", or from an HTTP/1 connection whose first bytes are
 * the h2c preface. `initial`/`initial_len`: bytes already read from the
 * socket (the preface among them); consumed before this returns. */
void pt_h2_conn_start(pt_conn *c, const char *initial, size_t initial_len);

#endif
