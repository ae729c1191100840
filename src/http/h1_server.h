/* h1_server.h — the downstream HTTP/1.x connection: reads and parses
 * request heads with the strict codec (h1.h), decodes request bodies, feeds
 * a protocol-neutral pt_txn, and serialises the response with the right
 * framing (Content-Length, chunked, or close-delimited for HTTP/1.0).
 *
 * Handles keep-alive, pipelining (one request at a time, in order),
 * Expect: 100-continue, and the client-side timeouts: idle keep-alive,
 * absolute header deadline (trickling cannot extend it), body inactivity
 * and response send inactivity. */
#ifndef PT_HTTP_H1_SERVER_H
#define PT_HTTP_H1_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct pt_worker;
typedef struct pt_h1_conn pt_h1_conn;

struct pt_tls_server;

/* Takes ownership of the accepted, non-blocking socket `fd`. With `tls`
 * (an HTTPS listener) the connection first completes a TLS handshake,
 * bounded by the header timeout, and then speaks HTTP/1.1 over it. */
/* The connection was counted by connlimit (always per listener; per client
 * when counted_client) and releases that count when it closes. */
void pt_h1_conn_accept(struct pt_worker *w, int fd, const struct sockaddr *peer, socklen_t peerlen, size_t listener,
                       struct pt_tls_server *tls, bool counted_client);

/* Graceful drain: close idle connections now; active ones close after
 * their current response. */
void pt_h1_conns_drain(struct pt_worker *w);
/* Close everything now (drain deadline passed / shutdown). */
void pt_h1_conns_close_all(struct pt_worker *w);

#endif
