/* tls_client.h — TLS to upstream targets (OpenSSL 3).
 *
 * One SSL_CTX per upstream with `tls`, built with the configuration
 * generation (so a reload re-reads the CA bundle and client certificate).
 * Verification is on by default: chain against `ca` (or the system store)
 * and the server name — the configured `sni`, else the target's host (a DNS
 * name is checked against the SAN/CN, an IP address against IP SANs). */
#ifndef PT_TLS_CLIENT_H
#define PT_TLS_CLIENT_H

#include <openssl/ssl.h>

#include "config/config.h"

/* NULL on error (recorded as "FILE:LINE:COL: ..."). ALPN offers h2 when
 * `h2` (upstream protocol h2), else http/1.1. */
SSL_CTX *pt_tls_client_ctx_new(const pt_upstream_tls_conf *conf, bool h2, const char *file, pt_errors *errors);

/* A client SSL object for a connected socket to `host` (sni overrides). */
SSL *pt_tls_client_ssl(SSL_CTX *ctx, const pt_upstream_tls_conf *conf, const char *host, int fd);

/* Session resumption towards upstreams. A slot remembers the newest session
 * an upstream issued for one (address, server name) on one worker (it lives
 * in that worker's pool). pt_tls_client_resume offers the slot's session on
 * a new connection when it came from the same SSL_CTX (same generation, so
 * the same verification settings; pools are keyed by that context, so this
 * check only guards against misuse; the slot holds a reference on the
 * context) and makes every session the server issues on that connection
 * (TLS 1.2 at the handshake, TLS 1.3 tickets later) replace the slot's.
 * The slot must outlive `ssl`'s I/O; single-threaded (one worker). */
typedef struct {
    SSL_SESSION *sess;
    SSL_CTX *ctx;
} pt_tls_session_slot;

void pt_tls_client_resume(SSL *ssl, pt_tls_session_slot *slot);
void pt_tls_session_slot_clear(pt_tls_session_slot *slot);

#endif
