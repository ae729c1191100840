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

#endif
