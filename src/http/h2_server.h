/* h2_server.h — the downstream HTTP/2 connection (nghttp2 server session).
 *
 * One pt_txn per stream, each stream with its own arena from the worker
 * cache. Requests are translated into the protocol-neutral pt_request
 * (message.h); responses come back through pt_downstream_ops and are framed
 * by nghttp2 (HEADERS, DATA pulled from a per-stream buffer, trailers).
 * Flow control gives real backpressure: request DATA is acknowledged
 * (WINDOW_UPDATE) only once the txn has taken it. See docs/http2.md for the
 * limits and the abuse protections (rapid reset, CONTINUATION flood). */
#ifndef PT_HTTP_H2_SERVER_H
#define PT_HTTP_H2_SERVER_H

#include <stddef.h>

#include <openssl/ssl.h>

#include "proxy/txn.h"

struct pt_worker;

/* The client connection preface (RFC 9113 §3.4), 24 bytes. */
#define PT_H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define PT_H2_PREFACE_LEN 24u

/* Takes over an accepted connection that speaks HTTP/2: after a TLS
 * handshake that selected ALPN "h2" (ssl != NULL), or a plaintext connection
 * whose first bytes are the h2 preface (ssl == NULL).
 * `initial`/`initial_len`: bytes already read from the socket (may contain
 * the preface); they are consumed before this returns (the caller may free
 * them afterwards). The h2 connection owns fd and ssl from now on (closes /
 * frees them). `ci_template` is copied, strings included. The socket must no
 * longer be registered with the loop. */
void pt_h2_conn_start(struct pt_worker *w, int fd, SSL *ssl, const char *initial, size_t initial_len,
                      const pt_conn_info *ci_template);

/* The same for a connection counted by connlimit (server/connlimit.h): the
 * h2 connection releases that count (listener ci_template->listener, `peer`,
 * `counted_client`) when it closes, instead of the HTTP/1 connection that
 * handed it over. `peer` is copied. */
struct sockaddr;
void pt_h2_conn_start_counted(struct pt_worker *w, int fd, SSL *ssl, const char *initial, size_t initial_len,
                              const pt_conn_info *ci_template, const struct sockaddr *peer, bool counted_client);

/* Graceful drain: every HTTP/2 connection of this worker sends GOAWAY
 * (last stream id = the last one it accepted), finishes its open streams and
 * closes; idle ones close as soon as the GOAWAY is written. */
void pt_h2_conns_drain(struct pt_worker *w);

/* Closes every HTTP/2 connection of this worker now (open txns are told the
 * client went away). For the drain deadline / shutdown. */
void pt_h2_conns_close_all(struct pt_worker *w);

/* Number of open HTTP/2 connections on the calling worker thread. */
size_t pt_h2_conns_count(struct pt_worker *w);

#endif
