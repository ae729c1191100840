/* h1_server.h — the downstream HTTP/1.x connection: reads and parses
 * request heads with the strict codec (h1.h), decodes request bodies, feeds
 * a protocol-neutral pt_txn, and serialises the response with the right
 * framing (Content-Length, chunked, or close-delimited for HTTP/1.0).
 *
 * Handles keep-alive, pipelining (one request at a time, in order),
 * Expect: 100-continue, and the client-side timeouts: idle keep-alive,
 * absolute header deadline (trickling cannot extend it), body inactivity
 * and response send inactivity. */
#ifndef PT_DOWNSTREAM_H1_SERVER_H
#define PT_DOWNSTREAM_H1_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "downstream/conn.h"

typedef struct pt_h1_conn pt_h1_conn;

/* Size of the HTTP/1 connection struct (pt_conn first), for pt_conn_accept
 * and pt_conn_move. */
size_t pt_h1_conn_size(void);

/* Starts HTTP/1.1 on `c`, a zeroed struct of pt_h1_conn_size() bytes whose
 * shared part is set up (accepted, or moved after a TLS handshake). The
 * first request head must be complete by `header_deadline` (after a
 * handshake: the handshake's), or 0: timeouts.header from now; a
 * connection that sent nothing by then is closed without an answer, a
 * partial head gets a 408. Between requests the idle timeout applies. */
void pt_h1_conn_start(pt_conn *c, uint64_t header_deadline);

#endif
