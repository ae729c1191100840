/* tls_io.h — socket I/O that is the same for plain and TLS connections, with
 * one convention: bytes moved (> 0), 0 for an orderly close (recv), or -1
 * with errno set — EAGAIN when the operation must wait for the socket
 * (OpenSSL's WANT_READ/WANT_WRITE), EPIPE/ECONNRESET when the peer is gone.
 * `ssl` NULL means plain. Used by every codec and the upstream client. */
#ifndef PT_TLS_IO_H
#define PT_TLS_IO_H

#include <openssl/ssl.h>
#include <sys/types.h>

ssize_t pt_sock_recv(int fd, SSL *ssl, char *buf, size_t n);
ssize_t pt_sock_send(int fd, SSL *ssl, const char *buf, size_t n);

#endif
