/* health_check.c — the process's active health checker (see
 * health_check.h, docs/traffic.md "Active health checks").
 *
 * A plan is the list of targets to check, built from a configuration on
 * the main thread (copies only, plus a reference on each target's shared
 * state) and handed to the checker's loop, which drops the previous plan.
 * Each target runs its own cycle: connect (non-blocking), for http (after
 * a TLS handshake for an https upstream, with its verification settings)
 * send one GET — HTTP/1.1 with "Connection: close", or one HTTP/2 stream
 * for an h2/h2c upstream — and read the answer (at most 16 KiB, kept as
 * HTTP/1.1 text either way); the verdict is in when the status line (and, with `body`, the
 * text) is there, the peer closed, or `timeout` passed. Then the next
 * check is `interval` later. */
#include "upstream/health_check.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/loop.h"
#include "net/tls_io.h"
#include "obs/gateway_metrics.h"
#include "tls/tls_client.h"
#include "upstream/balance.h"

#define HC_READ_MAX 16384

typedef struct hc_target {
    pt_health *h;
    const pt_health_conf *conf; /* the plan's copy */
    pt_target_state *state;     /* shared entry (one reference held) */
    pt_metric_series *healthy;  /* gauge (owned by the plan's arena), or NULL */
    struct sockaddr_storage ss;
    socklen_t sslen;
    char *request;              /* http: the whole request; NULL for tcp */
    size_t request_len, sent;
    SSL_CTX *tls_ctx;           /* https upstream: the plan's context */
    const pt_upstream_tls_conf *tls; /* https upstream: the plan's copy (sni, verify); NULL: plain */
    char *tls_host;             /* name sent and verified when tls->sni is NULL */
    SSL *ssl;
    bool handshaking;
    /* HTTP/2 upstream (protocol h2/h2c): the check is one stream */
    bool h2;
    char *path, *authority;     /* h2: :path and :authority */
    nghttp2_session *sess;
    int32_t stream;
    bool stream_closed;
    uint8_t *out;               /* h2: frames not yet written */
    size_t out_len, out_sent;
    int fd;
    pt_io io;
    pt_timer interval, deadline;
    char *buf;                  /* the answer so far */
    size_t got;
} hc_target;

typedef struct hc_plan {
    hc_target *t;
    size_t n;
    pt_health_conf *confs;      /* [nupstreams], strings owned */
    SSL_CTX **tls_ctxs;         /* [nupstreams] */
    pt_upstream_tls_conf *tls;  /* [nupstreams]: verify and sni (owned) */
    size_t nconfs;
    pt_arena *arena;            /* owns the plan's references on metric series */
} hc_plan;

struct pt_health {
    pt_loop *loop;
    pthread_t thread;
    hc_plan *plan;              /* checker thread only */
};

/* --------------------------------------------------------------- verdicts */

static void record(hc_target *t, bool ok)
{
    pt_target_state *s = t->state;
    if (ok) {
        s->checks_failed = 0;
        if (++s->checks_ok >= t->conf->healthy_threshold && atomic_load(&s->unhealthy)) {
            atomic_store(&s->unhealthy, false);
            pt_metric_set(t->healthy, 0, 1);
        }
    } else {
        s->checks_ok = 0;
        if (++s->checks_failed >= t->conf->unhealthy_threshold && !atomic_load(&s->unhealthy)) {
            atomic_store(&s->unhealthy, true);
            pt_metric_set(t->healthy, 0, 0);
        }
    }
}

static void check_begin(pt_loop *loop, hc_target *t);
static void h2_reset(hc_target *t);
static void on_interval(pt_loop *loop, pt_timer *tm) { check_begin(loop, tm->data); }

/* Ends the running check with a verdict and schedules the next one. */
static void check_done(hc_target *t, bool ok)
{
    pt_loop *loop = t->h->loop;
    h2_reset(t);
    if (t->ssl) {
        SSL_free(t->ssl);
        t->ssl = NULL;
    }
    if (t->fd >= 0) {
        pt_io_stop(loop, &t->io);
        close(t->fd);
        t->fd = -1;
    }
    pt_timer_stop(loop, &t->deadline);
    free(t->buf);
    t->buf = NULL;
    record(t, ok);
    pt_timer_start(loop, &t->interval, t->conf->interval_ms, on_interval, t);
}

/* The answer so far: 1 passes, 0 fails, -1 not decided yet (eof: the peer
 * closed, nothing more will come). */
static int judge(hc_target *t, bool eof)
{
    const pt_health_conf *c = t->conf;
    const char *b = t->buf;
    size_t n = t->got;
    const char *eol = memchr(b, '\n', n);
    if (!eol) return eof || n >= HC_READ_MAX ? 0 : -1;
    int status = 0;
    if (n < 12 || memcmp(b, "HTTP/1.", 7) != 0 || b[8] != ' ' || sscanf(b + 9, "%3d", &status) != 1) return 0;
    bool status_ok = false;
    if (!c->nstatuses) status_ok = status >= 200 && status < 400;
    for (size_t i = 0; i < c->nstatuses; i++) status_ok |= c->statuses[i] == status;
    if (!status_ok) return 0;
    if (!c->body) return 1;
    const char *sep = memmem(b, n, "\r\n\r\n", 4);
    size_t blen = strlen(c->body);
    if (sep && memmem(sep + 4, n - (size_t)(sep + 4 - b), c->body, blen)) return 1;
    return eof || n >= HC_READ_MAX ? 0 : -1;
}

/* ------------------------------------------------------------- HTTP/2 */

static void h2_reset(hc_target *t)
{
    if (t->sess) nghttp2_session_del(t->sess);
    t->sess = NULL;
    free(t->out);
    t->out = NULL;
    t->out_len = t->out_sent = 0;
    t->stream_closed = false;
}

/* The answer is kept in t->buf as an HTTP/1.1 text ("HTTP/1.1 NNN\r\n\r\n"
 * then the body), so judge() decides for both protocols. */
static int h2_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t namelen,
                        const uint8_t *value, size_t valuelen, uint8_t flags, void *data)
{
    hc_target *t = data;
    if (f->hd.stream_id == t->stream && namelen == 7 && memcmp(name, ":status", 7) == 0 && valuelen == 3 && !t->got)
        t->got = (size_t)snprintf(t->buf, HC_READ_MAX, "HTTP/1.1 %.3s H2\r\n\r\n", (const char *)value);
    return 0;
}

static int h2_on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *d, size_t len, void *data)
{
    hc_target *t = data;
    if (id != t->stream || !t->got) return 0;
    size_t room = HC_READ_MAX - t->got;
    if (len > room) len = room;
    memcpy(t->buf + t->got, d, len);
    t->got += len;
    return 0;
}

static int h2_on_close(nghttp2_session *s, int32_t id, uint32_t error, void *data)
{
    hc_target *t = data;
    if (id == t->stream) t->stream_closed = true;
    return 0;
}

/* Starts the session: SETTINGS and the GET (preface included on send). */
static bool h2_start(hc_target *t)
{
    nghttp2_session_callbacks *cb = NULL;
    if (nghttp2_session_callbacks_new(&cb) != 0) return false;
    nghttp2_session_callbacks_set_on_header_callback(cb, h2_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, h2_on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, h2_on_close);
    int rc = nghttp2_session_client_new(&t->sess, cb, t);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0) return false;
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
    nghttp2_submit_settings(t->sess, NGHTTP2_FLAG_NONE, iv, 1);
    const char *scheme = t->tls ? "https" : "http";
#define HDR(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}
    nghttp2_nv nv[] = {HDR(":method", "GET"), HDR(":scheme", scheme), HDR(":authority", t->authority),
                       HDR(":path", t->path), HDR("user-agent", "portico-health-check")};
#undef HDR
    t->stream = nghttp2_submit_request(t->sess, NULL, nv, PT_ARRAY_LEN(nv), NULL, t);
    return t->stream > 0;
}

/* Moves the session's pending frames to t->out. */
static void h2_pump(hc_target *t)
{
    const uint8_t *data;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(t->sess, &data)) > 0) {
        if (t->out_sent == t->out_len) t->out_sent = t->out_len = 0;
        t->out = pt_xrealloc(t->out, t->out_len + (size_t)n);
        memcpy(t->out + t->out_len, data, (size_t)n);
        t->out_len += (size_t)n;
    }
}

/* The HTTP/2 exchange once connected (and after TLS): write what is
 * pending, feed what arrives, decide when the stream closed. */
static void h2_io(pt_loop *loop, hc_target *t)
{
    if (!t->sess && !h2_start(t)) {
        check_done(t, false);
        return;
    }
    for (;;) {
        h2_pump(t);
        while (t->out_sent < t->out_len) {
            ssize_t w = pt_sock_send(t->fd, t->ssl, (const char *)t->out + t->out_sent, t->out_len - t->out_sent);
            if (w < 0 && (errno == EAGAIN || errno == EINTR)) break;
            if (w <= 0) {
                check_done(t, false);
                return;
            }
            t->out_sent += (size_t)w;
        }
        pt_io_modify(loop, &t->io, t->out_sent < t->out_len ? EPOLLOUT | EPOLLIN : EPOLLIN);
        char in[8192];
        ssize_t r = pt_sock_recv(t->fd, t->ssl, in, sizeof(in));
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (r <= 0 || nghttp2_session_mem_recv(t->sess, (const uint8_t *)in, (size_t)r) < 0) {
            check_done(t, judge(t, true) == 1);
            return;
        }
        int v = judge(t, t->stream_closed);
        if (v >= 0) {
            check_done(t, v == 1);
            return;
        }
    }
}

/* One step of the TLS handshake: true when done (the request may go). */
static bool handshake(pt_loop *loop, hc_target *t)
{
    bool want_write = false;
    int r = pt_tls_handshake_step(t->ssl, &want_write);
    if (r < 0) {
        check_done(t, false);
        return false;
    }
    if (r == 0) {
        pt_io_modify(loop, &t->io, want_write ? EPOLLOUT : EPOLLIN);
        return false;
    }
    t->handshaking = false;
    return true;
}

static void on_io(pt_loop *loop, pt_io *io, uint32_t events)
{
    hc_target *t = io->data;
    if (!t->buf) { /* connecting */
        if (pt_sock_connect_error(t->fd, events) != 0) {
            check_done(t, false);
            return;
        }
        if (!t->request) {
            check_done(t, true); /* tcp: connected is healthy */
            return;
        }
        t->buf = pt_xmalloc(HC_READ_MAX);
        t->got = 0;
        t->sent = 0;
        if (t->tls) { /* no context (it could not be built, logged): the check fails */
            t->ssl = t->tls_ctx ? pt_tls_client_ssl(t->tls_ctx, t->tls, t->tls_host, t->fd) : NULL;
            if (!t->ssl) {
                check_done(t, false);
                return;
            }
            t->handshaking = true;
        }
    }
    if (t->handshaking && !handshake(loop, t)) return;
    if (t->h2) {
        h2_io(loop, t);
        return;
    }
    if (t->sent < t->request_len) {
        ssize_t w = pt_sock_send(t->fd, t->ssl, t->request + t->sent, t->request_len - t->sent);
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            check_done(t, false);
            return;
        }
        if (w > 0) t->sent += (size_t)w;
        pt_io_modify(loop, &t->io, t->sent < t->request_len ? EPOLLOUT : EPOLLIN);
        if (t->sent < t->request_len || !t->ssl) return;
        /* TLS: the answer may be buffered already; read now */
    }
    for (;;) {
        ssize_t r = pt_sock_recv(t->fd, t->ssl, t->buf + t->got, HC_READ_MAX - t->got);
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) break;
        bool eof = r <= 0;
        if (r > 0) t->got += (size_t)r;
        int v = judge(t, eof || t->got == HC_READ_MAX);
        if (v >= 0) {
            check_done(t, v == 1);
            return;
        }
        if (eof) break;
    }
}

static void on_deadline(pt_loop *loop, pt_timer *tm)
{
    check_done(tm->data, false);
}

static void check_begin(pt_loop *loop, hc_target *t)
{
    t->fd = pt_sock_connect_start((const struct sockaddr *)&t->ss, t->sslen);
    if (t->fd < 0) {
        check_done(t, false);
        return;
    }
    if (pt_io_start(loop, &t->io, t->fd, EPOLLOUT, on_io, t) != PT_OK) {
        check_done(t, false);
        return;
    }
    pt_timer_start(loop, &t->deadline, t->conf->timeout_ms, on_deadline, t);
}

/* ------------------------------------------------------------------ plans */

static void plan_free(pt_health *h, hc_plan *p, const hc_plan *next)
{
    if (!p) return;
    for (size_t i = 0; i < p->n; i++) {
        hc_target *t = &p->t[i];
        if (h && h->loop) {
            pt_timer_stop(h->loop, &t->interval);
            pt_timer_stop(h->loop, &t->deadline);
            if (t->fd >= 0) pt_io_stop(h->loop, &t->io);
        }
        if (t->ssl) SSL_free(t->ssl);
        if (t->fd >= 0) close(t->fd);
        free(t->buf);
        free(t->request);
        free(t->tls_host);
        free(t->path);
        free(t->authority);
        if (t->sess) nghttp2_session_del(t->sess);
        free(t->out);
        /* no longer checked: no verdict of ours may keep it out of rotation */
        bool kept = false;
        for (size_t k = 0; next && k < next->n; k++) kept |= next->t[k].state == t->state;
        if (!kept) {
            atomic_store(&t->state->unhealthy, false);
            t->state->checks_ok = t->state->checks_failed = 0;
        }
        pt_shared_release(t->state);
    }
    for (size_t i = 0; i < p->nconfs; i++) {
        free(p->confs[i].body);
        free(p->tls[i].sni);
        SSL_CTX_free(p->tls_ctxs[i]);
    }
    free(p->confs);
    free(p->tls);
    free(p->tls_ctxs);
    free(p->t);
    pt_arena_free(p->arena);
    free(p);
}

static hc_plan *plan_build(const pt_config *cfg, pt_gw_metrics *gw)
{
    hc_plan *p = pt_xcalloc(1, sizeof(*p));
    p->arena = pt_arena_new(1024);
    size_t n = 0;
    for (size_t u = 0; u < cfg->nupstreams; u++)
        if (cfg->upstreams[u].balance.health.enabled) n += cfg->upstreams[u].ntargets;
    p->t = pt_xcalloc(n ? n : 1, sizeof(*p->t));
    p->confs = pt_xcalloc(cfg->nupstreams ? cfg->nupstreams : 1, sizeof(*p->confs));
    p->tls_ctxs = pt_xcalloc(cfg->nupstreams ? cfg->nupstreams : 1, sizeof(*p->tls_ctxs));
    p->tls = pt_xcalloc(cfg->nupstreams ? cfg->nupstreams : 1, sizeof(*p->tls));
    p->nconfs = cfg->nupstreams;
    for (size_t u = 0; u < cfg->nupstreams; u++) {
        const pt_upstream_conf *uc = &cfg->upstreams[u];
        const pt_health_conf *hc = &uc->balance.health;
        if (!hc->enabled) continue;
        pt_health_conf *c = &p->confs[u];
        *c = *hc;
        c->path = c->host = NULL; /* used below, not kept */
        c->body = hc->body ? pt_xstrndup(hc->body, strlen(hc->body)) : NULL;
        if (!hc->tcp && uc->tls.enabled) {
            /* the same settings as the proxied requests (CA, verification,
             * client certificate, SNI); files re-read for this plan */
            pt_errors errs = {0};
            p->tls_ctxs[u] = pt_tls_client_ctx_new(&uc->tls, uc->protocol == PT_UPROTO_H2, cfg->file, &errs);
            for (size_t e = 0; e < errs.n; e++) fprintf(stderr, "portico: health checks: %s\n", errs.msgs[e]);
            pt_errors_free(&errs);
            p->tls[u] = (pt_upstream_tls_conf){
                .enabled = true, .verify = uc->tls.verify,
                .sni = uc->tls.sni ? pt_xstrndup(uc->tls.sni, strlen(uc->tls.sni)) : NULL};
        }
        for (size_t i = 0; i < uc->ntargets; i++) {
            const pt_target_conf *tc = &uc->targets[i];
            hc_target *t = &p->t[p->n++];
            t->conf = c;
            t->fd = -1;
            t->state = pt_shared_acquire(uc->name, tc->addr.text, sizeof(pt_target_state));
            t->healthy = pt_gw_metrics_target_healthy(gw, uc->name, tc->addr.text, p->arena);
            pt_metric_set(t->healthy, 0, atomic_load(&t->state->unhealthy) ? 0 : 1);
            memcpy(&t->ss, &tc->addr.ss, tc->addr.sslen);
            t->sslen = tc->addr.sslen;
            if (hc->tcp) continue;
            if (uc->tls.enabled) {
                t->tls_ctx = p->tls_ctxs[u];
                t->tls = &p->tls[u];
                t->tls_host = pt_xstrndup(tc->host, strlen(tc->host));
            }
            char host[300];
            snprintf(host, sizeof(host), "%s:%u", tc->host, (unsigned)tc->port);
            size_t cap = strlen(hc->path) + strlen(hc->host ? hc->host : host) + 128;
            t->request = pt_xmalloc(cap);
            int len = snprintf(t->request, cap,
                               "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: portico-health-check\r\n"
                               "Connection: close\r\n\r\n",
                               hc->path, hc->host ? hc->host : host);
            t->request_len = (size_t)len;
            if (uc->protocol != PT_UPROTO_HTTP1) {
                t->h2 = true;
                t->path = pt_xstrndup(hc->path, strlen(hc->path));
                const char *a = hc->host ? hc->host : host;
                t->authority = pt_xstrndup(a, strlen(a));
            }
        }
    }
    return p;
}

static void install_cb(pt_loop *loop, void *data)
{
    pt_health *h = pt_loop_data(loop);
    hc_plan *next = data;
    plan_free(h, h->plan, next);
    h->plan = next;
    for (size_t i = 0; i < next->n; i++) {
        next->t[i].h = h;
        check_begin(loop, &next->t[i]);
    }
}

static void *health_main(void *arg)
{
    pt_health *h = arg;
    pt_loop_run(h->loop);
    return NULL;
}

pt_health *pt_health_update(pt_health *h, const pt_config *cfg, pt_gw_metrics *gw)
{
    bool any = false;
    for (size_t u = 0; u < cfg->nupstreams; u++) any |= cfg->upstreams[u].balance.health.enabled;
    if (!h && !any) return NULL;
    if (!h) {
        h = pt_xcalloc(1, sizeof(*h));
        h->loop = pt_loop_new();
        if (!h->loop) pt_panic(__FILE__, __LINE__, "cannot create the health-check event loop");
        pt_loop_set_data(h->loop, h);
        if (pthread_create(&h->thread, NULL, health_main, h) != 0)
            pt_panic(__FILE__, __LINE__, "cannot start the health-check thread");
    }
    pt_loop_post(h->loop, install_cb, plan_build(cfg, gw));
    return h;
}

static void stop_cb(pt_loop *loop, void *data)
{
    pt_health *h = pt_loop_data(loop);
    plan_free(h, h->plan, NULL);
    h->plan = NULL;
    pt_loop_stop(loop);
}

void pt_health_stop(pt_health *h)
{
    if (!h) return;
    pt_loop_post(h->loop, stop_cb, NULL);
    pthread_join(h->thread, NULL);
    pt_loop_free(h->loop);
    free(h);
}
