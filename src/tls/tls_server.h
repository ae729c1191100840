/* tls_server.h — TLS termination contexts (OpenSSL 3) for HTTPS listeners.
 *
 * One pt_tls_server per TLS listener and per config generation: it owns one
 * SSL_CTX per configured certificate and picks among them by SNI (exact
 * names first, then the longest matching "*.suffix" wildcard, else the
 * first certificate). The names come from each certificate's
 * subjectAltName DNS entries (CN when there are none). Each certificate
 * carries a client_auth policy (its own, else the listener's), applied to
 * the connection when its SNI selects that certificate; sessions resume
 * only under the certificate they were established with. ALPN prefers "h2"
 * (unless the listener disables http2), then "http/1.1". Session resumption uses
 * OpenSSL's server cache and stateless tickets.
 *
 * Certificates and keys are read when the generation is built, so SIGHUP
 * re-reads them: new connections get the new certificate, existing ones keep
 * theirs (OpenSSL reference-counts the SSL_CTX an SSL object uses). */
#ifndef PT_TLS_SERVER_H
#define PT_TLS_SERVER_H

#include <openssl/ssl.h>

#include "config/config.h"

typedef struct pt_tls_server pt_tls_server;

/* Builds the contexts for `conf`; on failure returns NULL and records
 * "FILE:LINE:COL: ..." errors (file is the config file name). */
/* http2: offer ALPN "h2" (before "http/1.1"). */
pt_tls_server *pt_tls_server_new(const pt_tls_conf *conf, bool http2, const char *file, pt_errors *errors);
void pt_tls_server_free(pt_tls_server *s);

/* The verified client certificate's subject (RFC 2253, control characters
 * replaced), heap-allocated; NULL when the client sent no certificate. */
char *pt_tls_peer_subject(SSL *ssl);

/* The verified client certificate's subjectAltNames as one list, e.g.
 * "DNS:a.example,URI:spiffe://acme/ns/x,email:bob@acme.com,IP:10.0.0.1"
 * (DNS, URI, email and IP entries in certificate order; other kinds are
 * left out). Control characters are replaced by '?' and a ',' inside a
 * value is written "%2C", so the list splits unambiguously on ','.
 * Heap-allocated; NULL when no verified certificate, no such names, or
 * the list would exceed PT_TLS_SANS_MAX - 1 bytes. */
#define PT_TLS_SANS_MAX 4096
char *pt_tls_peer_sans(SSL *ssl);
/* The same list for any certificate (no verification check). */
char *pt_tls_format_sans(X509 *x);

/* The client_auth policy key of the certificate an established connection
 * was handshaken under (0: no client authentication). */
uintptr_t pt_tls_conn_policy(SSL *ssl);
/* True if a request for `host` (no port, any case, trailing dot allowed, any
 * length) may use a connection with policy `conn_policy`: the certificate
 * SNI `host` would select — or, when no name covers it, the one whose
 * wildcard covers it at any depth, as the router matches — has the same
 * client_auth policy (mode and CA contents). Otherwise the request must be
 * refused (421), or a client could authenticate under a lenient host's
 * policy and send requests for a strict host (SNI and Host differ; also
 * HTTP/2 connection coalescing), or keep using a connection after a reload
 * changed its host's policy. */
bool pt_tls_host_allowed(const pt_tls_server *s, uintptr_t conn_policy, pt_str host);

/* A new server-side SSL object for an accepted socket (in accept state). */
SSL *pt_tls_server_ssl(pt_tls_server *s, int fd);

#endif
