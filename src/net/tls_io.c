/* tls_io.c — see tls_io.h. */
#include "net/tls_io.h"

#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <sys/socket.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <unistd.h>

/* Maps an SSL_read/SSL_write result <= 0 to the convention. */
static ssize_t tls_result(SSL *ssl, int r)
{
    switch (SSL_get_error(ssl, r)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE: errno = EAGAIN; return -1;
    case SSL_ERROR_ZERO_RETURN: return 0;
    default: ERR_clear_error(); errno = ECONNRESET; return -1;
    }
}

ssize_t pt_sock_recv(int fd, SSL *ssl, char *buf, size_t n)
{
    if (!ssl) return read(fd, buf, n);
    int r = SSL_read(ssl, buf, (int)(n > INT_MAX ? INT_MAX : n));
    return r > 0 ? r : tls_result(ssl, r);
}

ssize_t pt_sock_send(int fd, SSL *ssl, const char *buf, size_t n)
{
    if (!ssl) return send(fd, buf, n, MSG_NOSIGNAL);
    int r = SSL_write(ssl, buf, (int)(n > INT_MAX ? INT_MAX : n));
    if (r > 0) return r;
    ssize_t e = tls_result(ssl, r);
    if (e == 0) {
        errno = EPIPE;
        return -1;
    }
    return e;
}

int pt_sock_connect_error(int fd, uint32_t events)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (!err && (events & (EPOLLERR | EPOLLHUP))) err = ECONNREFUSED;
    return err;
}

int pt_tls_handshake_step(SSL *ssl, bool *want_write)
{
    ERR_clear_error();
    int r = SSL_do_handshake(ssl);
    if (r == 1) return 1;
    int e = SSL_get_error(ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        *want_write = e == SSL_ERROR_WANT_WRITE;
        return 0;
    }
    ERR_clear_error();
    return -1;
}

bool pt_tls_alpn_is(SSL *ssl, const char *proto)
{
    const unsigned char *alpn = NULL;
    unsigned int len = 0;
    SSL_get0_alpn_selected(ssl, &alpn, &len);
    return len == strlen(proto) && memcmp(alpn, proto, len) == 0;
}

int pt_sock_connect_start(const struct sockaddr *addr, unsigned int addrlen)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, addr, (socklen_t)addrlen) < 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}
