/* conn.c — see conn.h. */
#include "downstream/conn.h"

#include "obs/errorlog.h"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <openssl/err.h>

#include "downstream/h1_server.h"
#include "downstream/h2_server.h"
#include "obs/gateway_metrics.h"
#include "server/connlimit.h"
#include "server/worker.h"
#include "net/tls_io.h"
#include "tls/tls_server.h"

/* ------------------------------------------------------ the worker's list */

static void list_add(pt_worker *w, pt_conn *c)
{
    c->prev = NULL;
    c->next = w->conns;
    if (w->conns) w->conns->prev = c;
    w->conns = c;
    w->nconns++;
}

static void list_del(pt_worker *w, pt_conn *c)
{
    if (c->prev) c->prev->next = c->next;
    else w->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
    w->nconns--;
}

/* Closed connections are freed two deferred passes later: never inside the
 * iteration that closed them, whose epoll batch or deferred queue may still
 * name them (each checks `closed` first). */
static void free_dead(pt_loop *loop, pt_defer *d)
{
    pt_worker *w = d->data;
    pt_conn *c = w->dead_conns_old;
    w->dead_conns_old = w->dead_conns;
    w->dead_conns = NULL;
    while (c) {
        pt_conn *n = c->next;
        if (c->proto && c->proto->finalize) c->proto->finalize(c);
        free(c);
        c = n;
    }
    if (w->dead_conns_old) pt_defer_queue(loop, &w->dead_defer, free_dead, w);
}

void pt_conns_reap(pt_worker *w)
{
    w->dead_defer.data = w;
    pt_defer_cancel(w->loop, &w->dead_defer);
    free_dead(w->loop, &w->dead_defer); /* the older list, then ... */
    pt_defer_cancel(w->loop, &w->dead_defer);
    free_dead(w->loop, &w->dead_defer); /* ... the newer one */
    pt_defer_cancel(w->loop, &w->dead_defer);
}

static void bury(pt_worker *w, pt_conn *c)
{
    c->next = w->dead_conns;
    w->dead_conns = c;
    pt_defer_queue(w->loop, &w->dead_defer, free_dead, w);
}

/* ---------------------------------------------------------------- closing */

void pt_conn_close(pt_conn *c, bool tls_shutdown)
{
    if (c->closed) return;
    pt_worker *w = c->w;
    c->closed = true;
    pt_timer_stop(w->loop, &c->timer);
    pt_io_stop(w->loop, &c->io);
    if (c->ssl) {
        if (tls_shutdown) SSL_shutdown(c->ssl); /* best-effort close_notify */
        SSL_free(c->ssl);
        ERR_clear_error();
        c->ssl = NULL;
    }
    if (c->hs_wg) {
        pt_worker_gen_release(w, c->hs_wg);
        c->hs_wg = NULL;
    }
    free(c->cert_subject);
    c->cert_subject = NULL;
    free(c->cert_sans);
    c->cert_sans = NULL;
    pt_connlimit_release(w->connlimit, c->listener, &c->peer.sa, c->counted_client);
    pt_metrics_conn_closed(w, c->listener);
    if (c->io.fd >= 0) close(c->io.fd);
    c->io.fd = -1;
    list_del(w, c);
    bury(w, c);
}

pt_conn *pt_conn_move(pt_conn *from, size_t size)
{
    pt_worker *w = from->w;
    PT_ASSERT(size >= sizeof(pt_conn) && !from->closed);
    pt_conn *c = pt_xcalloc(1, size);
    *c = *from;
    c->timer = (pt_timer){0};
    c->proto = NULL; /* the new protocol's start sets it (its finalize must never see another's struct) */
    pt_timer_stop(w->loop, &from->timer);
    /* the list links follow the struct */
    if (c->prev) c->prev->next = c;
    else w->conns = c;
    if (c->next) c->next->prev = c;
    /* everything owned moves: the old struct only waits to be freed */
    from->ssl = NULL;
    from->cert_subject = from->cert_sans = NULL;
    from->hs_wg = NULL;
    from->closed = true;
    from->proto = NULL;
    int rc = pt_io_move(w->loop, &from->io, &c->io, c);
    bury(w, from);
    if (rc != PT_OK) {
        pt_conn_close(c, false);
        return NULL;
    }
    return c;
}

/* --------------------------------------------------------- TLS handshake */

static void hs_close(pt_conn *c) { pt_conn_close(c, false); }

static const pt_conn_proto hs_proto = {
    .name = "tls-handshake",
    .drain = hs_close, /* no request made yet */
    .close = hs_close,
};

/* One step of the handshake; done, the connection becomes HTTP/2 (ALPN
 * "h2") or HTTP/1.1 whose first request head shares the handshake's
 * deadline. */
static void hs_step(pt_conn *c)
{
    int r = pt_tls_handshake_step(c->ssl, &c->hs_want_write);
    if (r < 0) { /* a failed handshake (bad client, wrong version): logged at info, closed */
        if (pt_elog_enabled(PT_ELOG_INFO)) {
            pt_arena *a = pt_arena_new(256);
            pt_conn_info ci;
            pt_conn_info_fill(c, a, &ci);
            pt_elog(PT_ELOG_INFO, "tls_handshake", &(pt_elog_ctx){.worker = c->w->id, .client = ci.client_addr},
                    "TLS handshake with the client failed");
            pt_arena_free(a);
        }
        hs_close(c);
        return;
    }
    if (r == 0) {
        pt_io_modify(c->w->loop, &c->io, c->hs_want_write ? EPOLLOUT : EPOLLIN);
        return;
    }
    c->cert_subject = pt_tls_peer_subject(c->ssl);
    c->cert_sans = pt_tls_peer_sans(c->ssl);
    if (c->hs_wg) {
        pt_worker_gen_release(c->w, c->hs_wg);
        c->hs_wg = NULL;
    }
    uint64_t deadline = c->timer.deadline;
    bool h2 = pt_tls_alpn_is(c->ssl, "h2");
    pt_conn *n = pt_conn_move(c, h2 ? pt_h2_conn_size() : pt_h1_conn_size());
    if (!n) return;
    if (h2) pt_h2_conn_start(n, NULL, 0);
    else pt_h1_conn_start(n, deadline);
}

static void hs_on_io(pt_loop *loop, pt_io *io, uint32_t events)
{
    pt_conn *c = io->data;
    if (c->closed) return;
    if (events & (EPOLLERR | EPOLLHUP)) hs_close(c);
    else hs_step(c);
}

static void hs_timeout(pt_loop *loop, pt_timer *t)
{
    pt_conn *c = t->data;
    if (!c->closed) hs_close(c); /* the handshake did not finish in time */
}

/* ----------------------------------------------------------------- accept */

void pt_conn_accept(pt_worker *w, int fd, const struct sockaddr *peer, socklen_t peerlen, size_t listener,
                    struct pt_tls_server *tls, bool counted_client)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    pt_conn *c = pt_xcalloc(1, tls ? sizeof(pt_conn) : pt_h1_conn_size());
    c->w = w;
    c->listener = (uint16_t)listener;
    c->counted_client = counted_client;
    memcpy(&c->peer, peer, PT_MIN((size_t)peerlen, sizeof(c->peer)));
    if (pt_io_start(w->loop, &c->io, fd, EPOLLIN | EPOLLRDHUP, hs_on_io, c) != PT_OK) {
        pt_connlimit_release(w->connlimit, listener, peer, counted_client);
        close(fd);
        free(c);
        return;
    }
    list_add(w, c);
    pt_metrics_conn_opened(w, listener);
    if (!tls) {
        pt_h1_conn_start(c, 0);
        return;
    }
    c->proto = &hs_proto;
    c->ssl = pt_tls_server_ssl(tls, fd);
    if (!c->ssl) {
        hs_close(c);
        return;
    }
    /* The SNI callback uses the generation's TLS state: pin it. */
    c->hs_wg = pt_worker_gen_acquire(w);
    /* handshake + first request head share the absolute header deadline */
    pt_timer_start(w->loop, &c->timer, w->wgen->gen->cfg->timeouts.header_ms, hs_timeout, c);
    hs_step(c);
}

/* ------------------------------------------------------------ per request */

/* "203.0.113.7" without inet_ntop's generality: this runs per request.
 * octet_text[v] holds v's digits, octet_len[v] how many. */
static char octet_text[256][4];
static uint8_t octet_len[256];

__attribute__((constructor)) static void octets_init(void)
{
    for (unsigned v = 0; v < 256; v++) octet_len[v] = (uint8_t)snprintf(octet_text[v], sizeof(octet_text[v]), "%u", v);
}

static size_t format_ipv4(char *out, const uint8_t a[4])
{
    size_t n = 0;
    for (int i = 0; i < 4; i++) {
        memcpy(out + n, octet_text[a[i]], 4); /* 4 bytes: the digits, then bytes overwritten next */
        n += octet_len[a[i]];
        out[n++] = '.';
    }
    return n - 1;
}

void pt_conn_info_fill(const pt_conn *c, pt_arena *a, pt_conn_info *ci)
{
    char *s = pt_arena_alloc(a, INET6_ADDRSTRLEN);
    size_t n;
    if (c->peer.sa.sa_family == AF_INET) {
        n = format_ipv4(s, (const uint8_t *)&c->peer.in.sin_addr);
    } else if (c->peer.sa.sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &c->peer.in6.sin6_addr, s, INET6_ADDRSTRLEN);
        n = strlen(s);
    } else {
        memcpy(s, "unix", 4);
        n = 4;
    }
    *ci = (pt_conn_info){
        .client_addr = pt_str_make(s, n),
        .listener = c->listener,
        .tls = c->ssl != NULL,
        .client_cert_subject = pt_str_c(c->cert_subject),
        .client_cert_sans = pt_str_c(c->cert_sans),
        .tls_policy = c->ssl ? pt_tls_conn_policy(c->ssl) : 0,
        .tls_version = c->ssl ? pt_str_c(SSL_get_version(c->ssl)) : PT_STR_NULL,
        .sni = c->ssl ? pt_str_c(SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name)) : PT_STR_NULL,
    };
}

/* ------------------------------------------------------- drain / shutdown */

void pt_conns_drain(pt_worker *w)
{
    pt_conn *c = w->conns;
    while (c) {
        pt_conn *n = c->next; /* drain may close (and unlink) c */
        c->proto->drain(c);
        c = n;
    }
}

void pt_conns_close_all(pt_worker *w)
{
    while (w->conns) w->conns->proto->close(w->conns);
}

size_t pt_conns_count(pt_worker *w, const char *proto_name)
{
    size_t n = 0;
    for (pt_conn *c = w->conns; c; c = c->next)
        n += !proto_name || strcmp(c->proto->name, proto_name) == 0;
    return n;
}
