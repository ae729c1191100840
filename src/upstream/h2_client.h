/* h2_client.h — HTTP/2 to upstream targets (nghttp2 client sessions).
 *
 * One connection per worker and target (more when the peer's
 * SETTINGS_MAX_CONCURRENT_STREAMS is reached) carries many concurrent
 * streams; each transaction gets one stream and drives it through
 * pt_h2_exchange_ops (exchange.h), with the same events and error
 * semantics as an HTTP/1 upstream connection. `h2` runs over TLS with ALPN
 * h2; `h2c` is HTTP/2 with prior knowledge over plain TCP. */
#ifndef PT_UPSTREAM_H2_CLIENT_H
#define PT_UPSTREAM_H2_CLIENT_H

#include <openssl/ssl.h>
#include <stdbool.h>

#include "upstream/upstream.h"

struct pt_worker;
typedef struct pt_h2up_conn pt_h2up_conn;
typedef struct pt_h2up_stream pt_h2up_stream;

/* A new stream towards target `t` of upstream `u` on a pooled connection
 * with room, else on a new connection (TLS when tls_ctx is given). *fresh is
 * set when the connection is not established yet (on_ready follows attach).
 * `dns`: the worker's entry of a host-name target (NULL for an IP literal):
 * connections to addresses the name no longer has take no new streams, and
 * a new connection goes to the entry's next address. 
 * NULL (errno set) if a needed connect failed at once. */
pt_h2up_stream *pt_h2up_stream_open(struct pt_worker *w, const pt_target_conf *t, pt_pool *pool, SSL_CTX *tls_ctx,
                                    const pt_upstream_conf *u, struct pt_dns_entry *dns, bool *fresh);

/* Pool support (pool.c): the pool's list of HTTP/2 connections. */
pt_h2up_conn **pt_pool_h2_list(pt_pool *p);
/* Closes connections without streams; the others close when their last
 * stream ends (drain). With `force` every connection closes now. */
void pt_h2up_pool_close(pt_pool *p, bool force);

#endif
