/* tls_io.h — socket I/O that is the same for plain and TLS connections, with
 * one convention: bytes moved (> 0), 0 for an orderly close (recv), or -1
 * with errno set — EAGAIN when the operation must wait for the socket
 * (OpenSSL's WANT_READ/WANT_WRITE), EPIPE/ECONNRESET when the peer is gone.
 * `ssl` NULL means plain. Used by every codec and the upstream client. */
#ifndef PT_TLS_IO_H
#define PT_TLS_IO_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

ssize_t pt_sock_recv(int fd, SSL *ssl, char *buf, size_t n);
ssize_t pt_sock_send(int fd, SSL *ssl, const char *buf, size_t n);

struct sockaddr;
/* Starts a non-blocking TCP connect (TCP_NODELAY, close-on-exec). Returns
 * the socket, or -1 with errno set if it failed at once. */
int pt_sock_connect_start(const struct sockaddr *addr, unsigned int addrlen);

/* The outcome of a non-blocking connect() once epoll reported the socket:
 * 0 when connected, else the error (errno value). */
int pt_sock_connect_error(int fd, uint32_t events);

/* One step of a non-blocking TLS handshake: 1 done, 0 call again when the
 * socket is ready (*want_write says for writing, else for reading), -1
 * failed (OpenSSL's error queue is cleared). */
int pt_tls_handshake_step(SSL *ssl, bool *want_write);

/* True when ALPN selected `proto` (e.g. "h2"). */
bool pt_tls_alpn_is(SSL *ssl, const char *proto);

#endif
