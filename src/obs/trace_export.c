/* trace_export.c — the asynchronous OTLP/HTTP JSON exporter (trace.h).
 *
 * Workers encode a finished span to JSON (pt_span_json) and append it to a
 * bounded queue under a short mutex: no I/O and no wait under it; over the
 * bound the span is dropped and counted. One exporter thread takes up to
 * batch_size spans when that many are queued or batch_delay passed, and
 * POSTs them as one ExportTraceServiceRequest. The exporter is not a worker:
 * it is the only thread that talks to the collector, with plain blocking
 * calls bounded by poll() timeouts (connect, send and the response all
 * within `timeout`), one connection per batch (`Connection: close`), and
 * retries with exponential backoff (100 ms doubling, up to max_retries) on a
 * network error, 429 or 5xx. A batch that still fails is counted in
 * portico_tracing_spans_failed_total. Only http:// endpoints. */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "obs/trace.h"

typedef struct {
    char *p;
    size_t n;
} span_item;

typedef struct {
    char *endpoint;             /* as configured */
    char host[256], port[8];
    char path[1024];
    char *service_name;
    uint64_t timeout_ms, batch_delay_ms;
    uint32_t batch_size, max_retries;
} export_settings;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cond;        /* work for the exporter: a full batch, stop */
    pthread_t thread;
    bool running, stopping;
    export_settings set;        /* under mu; the thread copies what it needs */
    span_item *q;               /* ring */
    size_t cap, head, n;        /* cap = queue_size */
    _Atomic bool room;          /* running and n < cap (a hint for workers) */
    pt_trace_buf body;          /* the exporter thread's request body, reused */
} X = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static _Atomic uint64_t n_dropped, n_exported, n_failed;
static pt_metric_series *_Atomic m_dropped, *_Atomic m_exported, *_Atomic m_failed;

static void count(_Atomic uint64_t *c, pt_metric_series *_Atomic *m, uint64_t k)
{
    atomic_fetch_add_explicit(c, k, memory_order_relaxed);
    pt_metric_series *s = atomic_load_explicit(m, memory_order_acquire);
    if (s) pt_metric_add(s, 0, (int64_t)k);
}

uint64_t pt_trace_spans_dropped(void) { return atomic_load(&n_dropped); }
uint64_t pt_trace_spans_exported(void) { return atomic_load(&n_exported); }
uint64_t pt_trace_spans_failed(void) { return atomic_load(&n_failed); }

void pt_trace_metrics_init(pt_metrics *reg)
{
    static const pt_metric_desc d[3] = {
        {.name = "portico_tracing_spans_exported_total", .help = "Spans the OTLP collector accepted",
         .type = PT_METRIC_COUNTER},
        {.name = "portico_tracing_spans_failed_total",
         .help = "Spans whose export failed after every retry (collector down, refused, timeout)",
         .type = PT_METRIC_COUNTER},
        {.name = "portico_tracing_spans_dropped_total",
         .help = "Spans dropped before export because the exporter queue was full (or no exporter runs)",
         .type = PT_METRIC_COUNTER},
    };
    pt_metric_series *s[3];
    for (int i = 0; i < 3; i++) {
        char err[256];
        pt_metric_family *f = pt_metrics_family(reg, &d[i], err, sizeof(err));
        if (!f) pt_panic(__FILE__, __LINE__, err);
        s[i] = pt_metrics_series(f, NULL, NULL);
    }
    /* what was counted before the registry existed */
    pt_metric_add(s[0], 0, (int64_t)pt_trace_spans_exported());
    pt_metric_add(s[1], 0, (int64_t)pt_trace_spans_failed());
    pt_metric_add(s[2], 0, (int64_t)pt_trace_spans_dropped());
    atomic_store(&m_exported, s[0]);
    atomic_store(&m_failed, s[1]);
    atomic_store(&m_dropped, s[2]);
}

/* ------------------------------------------------------------- the queue */

bool pt_trace_export_room(void) { return atomic_load_explicit(&X.room, memory_order_relaxed); }

void pt_trace_drop_one(void) { count(&n_dropped, &m_dropped, 1); }

void pt_trace_submit(const pt_span *s)
{
    if (!pt_trace_export_room()) {
        pt_trace_drop_one();
        return;
    }
    /* encoded on the stack, queued as an exact copy: small enough for the
     * allocator's per-thread cache (a worst-case bound would not be) */
    char tmp[4096];
    size_t bound = pt_span_json_bound(s);
    char *enc = bound <= sizeof(tmp) ? tmp : pt_xmalloc(bound);
    size_t n = pt_span_json_write(enc, s);
    span_item it = {pt_xmalloc(n), n};
    memcpy(it.p, enc, n);
    if (enc != tmp) free(enc);
    bool queued = false, wake = false;
    pthread_mutex_lock(&X.mu);
    if (X.running && !X.stopping && X.n < X.cap) {
        X.q[(X.head + X.n) % X.cap] = it;
        X.n++;
        queued = true;
        wake = X.n == X.set.batch_size;
        if (X.n == X.cap) atomic_store_explicit(&X.room, false, memory_order_relaxed);
    }
    pthread_mutex_unlock(&X.mu);
    if (wake) pthread_cond_signal(&X.cond);
    if (!queued) {
        free(it.p);
        pt_trace_drop_one();
    }
}

/* ------------------------------------------------------------ HTTP POST */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Waits for `ev` on fd until the deadline; false on timeout or error. */
static bool wait_fd(int fd, short ev, uint64_t deadline)
{
    for (;;) {
        uint64_t now = mono_ms();
        if (now >= deadline) return false;
        struct pollfd p = {.fd = fd, .events = ev};
        int r = poll(&p, 1, (int)(deadline - now));
        if (r > 0) return true;
        if (r == 0) return false;
        if (errno != EINTR) return false;
    }
}

/* One POST of `body` to the endpoint; the response status, or -1 on a
 * network error or timeout. */
static int post_once(const export_settings *st, const char *body, size_t n)
{
    uint64_t deadline = mono_ms() + st->timeout_ms;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(st->host, st->port, &hints, &res) != 0 || !res) return -1;
    int fd = -1;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
            close(fd);
            fd = -1;
            continue;
        }
        int err = 0;
        socklen_t el = sizeof(err);
        if (!wait_fd(fd, POLLOUT, deadline) || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) return -1;
    char head[1536];
    int hn = snprintf(head, sizeof(head),
                      "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\nUser-Agent: portico\r\n\r\n",
                      st->path, st->host, st->port, n);
    const char *parts[2] = {head, body};
    size_t lens[2] = {(size_t)hn, n};
    int status = -1;
    for (int i = 0; i < 2; i++) {
        size_t off = 0;
        while (off < lens[i]) {
            ssize_t w = send(fd, parts[i] + off, lens[i] - off, MSG_NOSIGNAL);
            if (w > 0) off += (size_t)w;
            else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
                if (!wait_fd(fd, POLLOUT, deadline)) goto out;
            } else goto out;
        }
    }
    /* the status line is enough: "HTTP/1.1 200 ..." */
    char rbuf[512];
    size_t got = 0;
    while (got < 12) {
        ssize_t r = recv(fd, rbuf + got, sizeof(rbuf) - 1 - got, 0);
        if (r > 0) got += (size_t)r;
        else if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (!wait_fd(fd, POLLIN, deadline)) goto out;
        } else goto out;
    }
    rbuf[got] = '\0';
    if (strncmp(rbuf, "HTTP/1.", 7) == 0 && rbuf[8] == ' ') status = atoi(rbuf + 9);
out:
    close(fd);
    return status;
}

/* Sleeps up to ms, waking early when the exporter stops. X.mu held. */
static void backoff_locked(uint64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + ms * 1000000ull;
    ts.tv_sec += (time_t)(ns / 1000000000ull);
    ts.tv_nsec = (long)(ns % 1000000000ull);
    while (!X.stopping)
        if (pthread_cond_timedwait(&X.cond, &X.mu, &ts) == ETIMEDOUT) break;
}

/* Exports one batch; spans are freed. X.mu not held. False when it failed. */
static bool export_batch(span_item *items, size_t k, const export_settings *st)
{
    pt_trace_buf body = X.body; /* the exporter thread's, reused across batches */
    body.n = 0;
    pt_trace_export_open(&body, st->service_name);
    for (size_t i = 0; i < k; i++) {
        if (i) pt_trace_buf_put(&body, ",", 1);
        pt_trace_buf_put(&body, items[i].p, items[i].n);
        free(items[i].p);
    }
    pt_trace_export_close(&body);
    bool ok = false;
    uint64_t delay = 100;
    for (uint32_t attempt = 0;; attempt++) {
        int status = post_once(st, body.p, body.n);
        if (status >= 200 && status < 300) {
            ok = true;
            break;
        }
        bool retryable = status < 0 || status == 429 || status >= 500;
        pthread_mutex_lock(&X.mu);
        bool stop = X.stopping;
        if (retryable && !stop && attempt < st->max_retries) backoff_locked(delay);
        stop = X.stopping;
        pthread_mutex_unlock(&X.mu);
        if (!retryable || stop || attempt >= st->max_retries) break;
        delay *= 2;
    }
    X.body = body;
    if (ok) count(&n_exported, &m_exported, k);
    else count(&n_failed, &m_failed, k);
    return ok;
}

static void copy_settings(export_settings *dst, const export_settings *src)
{
    *dst = *src;
    dst->endpoint = NULL;
    dst->service_name = strdup(src->service_name);
}

static void *exporter_main(void *arg)
{
    span_item *batch = NULL;
    size_t batch_cap = 0;
    bool give_up = false; /* stopping and a batch failed: count the rest as failed, do not wait on them */
    pthread_mutex_lock(&X.mu);
    for (;;) {
        if (!X.n && X.stopping) break;
        if (X.n < X.set.batch_size && !X.stopping) {
            /* wait for a full batch, at most batch_delay */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t ns = (uint64_t)ts.tv_nsec + X.set.batch_delay_ms * 1000000ull;
            ts.tv_sec += (time_t)(ns / 1000000000ull);
            ts.tv_nsec = (long)(ns % 1000000000ull);
            while (X.n < X.set.batch_size && !X.stopping)
                if (pthread_cond_timedwait(&X.cond, &X.mu, &ts) == ETIMEDOUT) break;
        }
        if (!X.n) continue;
        size_t k = X.n < X.set.batch_size ? X.n : X.set.batch_size;
        if (k > batch_cap) {
            batch = pt_xrealloc(batch, k * sizeof(*batch));
            batch_cap = k;
        }
        for (size_t i = 0; i < k; i++) batch[i] = X.q[(X.head + i) % X.cap];
        X.head = (X.head + k) % X.cap;
        X.n -= k;
        atomic_store_explicit(&X.room, !X.stopping, memory_order_relaxed);
        bool stopping = X.stopping;
        export_settings st;
        copy_settings(&st, &X.set);
        pthread_mutex_unlock(&X.mu);
        if (give_up) {
            for (size_t i = 0; i < k; i++) free(batch[i].p);
            count(&n_failed, &m_failed, k);
        } else if (!export_batch(batch, k, &st) && stopping) {
            give_up = true;
        }
        free(st.service_name);
        pthread_mutex_lock(&X.mu);
    }
    pthread_mutex_unlock(&X.mu);
    free(batch);
    pt_trace_buf_free(&X.body);
    return NULL;
}

/* http://HOST[:PORT][/PATH] into the settings (checked by the loader). */
static void parse_endpoint(export_settings *st, const char *url)
{
    const char *h = url + 7; /* "http://" */
    const char *slash = strchr(h, '/');
    size_t hl = slash ? (size_t)(slash - h) : strlen(h);
    snprintf(st->path, sizeof(st->path), "%s", slash ? slash : "/v1/traces");
    snprintf(st->port, sizeof(st->port), "80");
    const char *colon = NULL;
    if (h[0] == '[') { /* [v6]:port */
        const char *close = memchr(h, ']', hl);
        size_t n = close ? (size_t)(close - h - 1) : hl;
        snprintf(st->host, sizeof(st->host), "%.*s", (int)n, h + 1);
        if (close && close + 1 < h + hl && close[1] == ':') colon = close + 1;
    } else {
        colon = memchr(h, ':', hl);
        size_t n = colon ? (size_t)(colon - h) : hl;
        snprintf(st->host, sizeof(st->host), "%.*s", (int)n, h);
    }
    if (colon) snprintf(st->port, sizeof(st->port), "%.*s", (int)(h + hl - colon - 1), colon + 1);
}

void pt_trace_export_configure(const pt_tracing_conf *c)
{
    if (!c->enabled || !c->endpoint) {
        /* nothing to export to: spans are dropped and counted until a
         * configuration names an endpoint again */
        pthread_mutex_lock(&X.mu);
        if (X.running) atomic_store(&X.room, false);
        free(X.set.endpoint);
        X.set.endpoint = NULL;
        pthread_mutex_unlock(&X.mu);
        return;
    }
    pthread_mutex_lock(&X.mu);
    free(X.set.endpoint);
    free(X.set.service_name);
    X.set.endpoint = strdup(c->endpoint);
    parse_endpoint(&X.set, c->endpoint);
    X.set.service_name = strdup(c->service_name ? c->service_name : "portico");
    X.set.timeout_ms = c->timeout_ms;
    X.set.batch_delay_ms = c->batch_delay_ms;
    X.set.batch_size = c->batch_size;
    X.set.max_retries = c->max_retries;
    if (c->queue_size != X.cap) { /* a new ring; what is queued moves over (the rest is dropped) */
        span_item *q = pt_xcalloc(c->queue_size, sizeof(*q));
        size_t n = 0;
        for (size_t i = 0; i < X.n; i++) {
            span_item it = X.q[(X.head + i) % X.cap];
            if (n < c->queue_size) q[n++] = it;
            else {
                free(it.p);
                pt_trace_drop_one();
            }
        }
        free(X.q);
        X.q = q;
        X.cap = c->queue_size;
        X.head = 0;
        X.n = n;
    }
    if (!X.running) {
        X.stopping = false;
        if (pthread_create(&X.thread, NULL, exporter_main, NULL) != 0)
            pt_panic(__FILE__, __LINE__, "cannot start the trace exporter thread");
        X.running = true;
    }
    atomic_store(&X.room, X.n < X.cap);
    pthread_mutex_unlock(&X.mu);
    pthread_cond_signal(&X.cond);
}

void pt_trace_export_stop(void)
{
    pthread_mutex_lock(&X.mu);
    if (!X.running) {
        pthread_mutex_unlock(&X.mu);
        return;
    }
    X.stopping = true;
    atomic_store(&X.room, false);
    pthread_mutex_unlock(&X.mu);
    pthread_cond_broadcast(&X.cond);
    pthread_join(X.thread, NULL);
    pthread_mutex_lock(&X.mu);
    X.running = false;
    free(X.q);
    X.q = NULL;
    X.cap = X.head = X.n = 0;
    free(X.set.endpoint);
    free(X.set.service_name);
    X.set.endpoint = X.set.service_name = NULL;
    pthread_mutex_unlock(&X.mu);
}
