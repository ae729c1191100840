/* trace_export.c — the asynchronous OTLP/HTTP exporter (trace.h).
 *
 * A worker encodes each finished span (protobuf by default, or JSON) into
 * its own chunk, a loop-local buffer of up to CHUNK_SPANS spans: no lock
 * and no allocation per span. A chunk goes to the process's bounded queue
 * under a short mutex (no I/O and no wait under it) when it is full or
 * FLUSH_MS after its first span; spans over the queue's bound are dropped
 * and counted. One exporter thread takes up to batch_size queued spans when
 * that many wait or batch_delay passed, and POSTs them as one
 * ExportTraceServiceRequest. The exporter is not a worker: it is the only
 * thread that talks to the collector, with plain blocking calls bounded by
 * poll() timeouts (connect, send and the response all within `timeout`),
 * one connection per batch (`Connection: close`), and retries with
 * exponential backoff (100 ms doubling, up to max_retries) on a network
 * error, 429 or 5xx. A batch that still fails is counted in
 * portico_tracing_spans_failed_total. Only http:// endpoints. */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "core/loop.h"
#include "obs/trace.h"

/* Spans a worker gathers before it queues them (at most; fewer when
 * batch_size is smaller), and the longest a span waits in a worker. */
#define CHUNK_SPANS 64
#define CHUNK_BYTES (64 * 1024)
#define FLUSH_MS 100

/* Encoded spans of one encoding, back to back (JSON: comma-separated). */
typedef struct span_chunk {
    struct span_chunk *next;
    bool proto;                 /* protobuf (else JSON): a batch holds one kind */
    uint32_t spans;
    uint32_t ends[CHUNK_SPANS]; /* where each span ends: a chunk may be cut to fit the queue */
    size_t n, cap;
    char *p;
} span_chunk;

/* A worker's chunk being filled (loop slot PT_LOOP_SLOT_TRACE). */
typedef struct {
    pt_loop *loop;
    span_chunk *cur;
    pt_timer flush;
} worker_spans;

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
    span_chunk *head, *tail;    /* the queue, oldest first */
    size_t cap, n;              /* cap = queue_size; n = spans queued */
    _Atomic bool room;          /* running and n < cap (a hint for workers) */
    _Atomic bool protobuf;      /* exporter.protocol of the running configuration */
    _Atomic uint32_t chunk_spans; /* min(CHUNK_SPANS, batch_size) */
    _Atomic uint64_t flush_ms;    /* min(FLUSH_MS, batch_delay) */
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

static void chunk_free(span_chunk *c)
{
    free(c->p);
    free(c);
}

/* Queues a worker's chunk, or as many of its first spans as the queue has
 * room for; the rest is dropped and counted. */
static void queue_chunk(span_chunk *c)
{
    uint32_t spans = c->spans, keep = 0;
    bool wake = false;
    /* Queued, a chunk holds its spans' bytes, not the CHUNK_BYTES it was
     * given: a quiet worker hands over chunks of one span (the memory bound
     * of observability.md is queue_size encoded spans). */
    if (c->cap > c->n) {
        c->p = pt_xrealloc(c->p, c->n);
        c->cap = c->n;
    }
    pthread_mutex_lock(&X.mu);
    if (X.running && !X.stopping && X.n < X.cap) {
        keep = X.cap - X.n < c->spans ? (uint32_t)(X.cap - X.n) : c->spans;
        if (keep < c->spans) { /* cut after span `keep` (JSON: before its comma) */
            c->n = c->ends[keep - 1];
            c->spans = keep;
        }
        c->next = NULL;
        if (X.tail) X.tail->next = c;
        else X.head = c;
        X.tail = c;
        X.n += keep;
        wake = X.n >= X.set.batch_size;
        if (X.n >= X.cap) atomic_store_explicit(&X.room, false, memory_order_relaxed);
    }
    pthread_mutex_unlock(&X.mu);
    if (wake) pthread_cond_signal(&X.cond);
    if (keep < spans) count(&n_dropped, &m_dropped, spans - keep);
    if (!keep) chunk_free(c);
}

size_t pt_trace_export_queued(size_t *bytes)
{
    pthread_mutex_lock(&X.mu);
    size_t n = X.n, b = 0;
    for (const span_chunk *c = X.head; c; c = c->next) b += c->cap;
    pthread_mutex_unlock(&X.mu);
    *bytes = b;
    return n;
}

/* The worker's chunk goes to the queue now. */
static void worker_flush(worker_spans *ws)
{
    span_chunk *c = ws->cur;
    ws->cur = NULL;
    pt_timer_stop(ws->loop, &ws->flush);
    if (c) queue_chunk(c);
}

static void flush_tick(pt_loop *loop, pt_timer *t) { worker_flush(t->data); }

static worker_spans *worker_spans_of(pt_loop *loop)
{
    worker_spans *ws = pt_loop_slot(loop, PT_LOOP_SLOT_TRACE);
    if (!ws) {
        ws = pt_xcalloc(1, sizeof(*ws));
        ws->loop = loop;
        pt_loop_set_slot(loop, PT_LOOP_SLOT_TRACE, ws);
    }
    return ws;
}

void pt_trace_worker_fini(pt_loop *loop)
{
    worker_spans *ws = pt_loop_slot(loop, PT_LOOP_SLOT_TRACE);
    if (!ws) return;
    worker_flush(ws);
    free(ws);
    pt_loop_set_slot(loop, PT_LOOP_SLOT_TRACE, NULL);
}

/* The worker's chunk with room for n more bytes: the current one, or a
 * new one (CHUNK_BYTES, or n when a span is larger) after the current one
 * is queued. */
static span_chunk *chunk_for(worker_spans *ws, bool proto, size_t n)
{
    span_chunk *c = ws->cur;
    if (c && (c->proto != proto || c->n + n > c->cap)) { /* exporter.protocol changed, or full */
        worker_flush(ws);
        c = NULL;
    }
    if (!c) {
        c = ws->cur = pt_xmalloc(sizeof(*c));
        c->proto = proto;
        c->spans = 0;
        c->n = 0;
        c->cap = n > CHUNK_BYTES ? n : CHUNK_BYTES;
        c->p = pt_xmalloc(c->cap);
        pt_timer_start(ws->loop, &ws->flush, atomic_load_explicit(&X.flush_ms, memory_order_relaxed), flush_tick,
                       ws);
    }
    return c;
}

void pt_trace_submit(pt_loop *loop, const pt_span *s)
{
    if (!pt_trace_export_room()) {
        pt_trace_drop_one();
        return;
    }
    worker_spans *ws = worker_spans_of(loop);
    bool proto = atomic_load_explicit(&X.protobuf, memory_order_relaxed);
    span_chunk *c;
    if (proto) {
        c = chunk_for(ws, proto, pt_span_proto_bound(s));
        c->n += pt_span_proto_write(c->p + c->n, s);
    } else {
        c = chunk_for(ws, proto, 1 + pt_span_json_bound(s));
        if (c->spans) c->p[c->n++] = ',';
        c->n += pt_span_json_write(c->p + c->n, s);
    }
    c->ends[c->spans++] = (uint32_t)c->n;
    if (c->spans >= atomic_load_explicit(&X.chunk_spans, memory_order_relaxed) || c->spans >= CHUNK_SPANS)
        worker_flush(ws);
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

/* Sends iov[0..niov) in order (sendmsg, partial writes resumed; the
 * array is not changed). False on an error or the deadline. */
static bool send_all(int fd, const struct iovec *iov, size_t niov, uint64_t deadline)
{
    size_t i = 0, off = 0; /* the next byte: iov[i] at off */
    while (i < niov) {
        struct iovec v[64];
        size_t k = 0;
        for (size_t j = i; j < niov && k < 64; j++, k++)
            v[k] = (struct iovec){(char *)iov[j].iov_base + (j == i ? off : 0), iov[j].iov_len - (j == i ? off : 0)};
        struct msghdr m = {.msg_iov = v, .msg_iovlen = k};
        ssize_t w = sendmsg(fd, &m, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (!wait_fd(fd, POLLOUT, deadline)) return false;
            continue;
        }
        if (w < 0) return false;
        size_t left = (size_t)w;
        while (i < niov && left >= iov[i].iov_len - off) {
            left -= iov[i].iov_len - off;
            i++;
            off = 0;
        }
        off += left;
    }
    return true;
}

/* One POST of the body iov[0..niov) (n bytes in all) to the endpoint; the
 * response status, or -1 on a network error or timeout. */
static int post_once(const export_settings *st, const struct iovec *iov, size_t niov, size_t n, bool proto)
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
                      "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: %s\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\nUser-Agent: portico\r\n\r\n",
                      st->path, st->host, st->port, proto ? "application/x-protobuf" : "application/json", n);
    int status = -1;
    struct iovec hv = {head, (size_t)hn};
    if (!send_all(fd, &hv, 1, deadline) || !send_all(fd, iov, niov, deadline)) goto out;
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

/* Exports one batch: the chunks (k spans, one encoding), which are
 * freed. X.mu not held. False when it failed. */
static bool export_batch(span_chunk *chunks, size_t k, const export_settings *st)
{
    /* the body in pieces, sent with sendmsg: what goes before the spans,
     * each chunk as it is (JSON: commas between), what goes after */
    pt_trace_buf open = X.body; /* the exporter thread's, reused across batches */
    open.n = 0;
    bool proto = chunks->proto;
    size_t nchunks = 0, spans_len = 0;
    for (span_chunk *c = chunks; c; c = c->next) {
        nchunks++;
        spans_len += c->n;
    }
    if (proto) pt_trace_proto_open(&open, st->service_name, spans_len);
    else pt_trace_export_open(&open, st->service_name);
    static const char comma[] = ",";
    pt_trace_buf close_json = {0};
    if (!proto) pt_trace_export_close(&close_json);
    struct iovec *iov = pt_xmalloc((2 * nchunks + 2) * sizeof(*iov));
    size_t niov = 0, total = open.n;
    iov[niov++] = (struct iovec){open.p, open.n};
    for (span_chunk *c = chunks; c; c = c->next) {
        if (!proto && c != chunks) {
            iov[niov++] = (struct iovec){(void *)comma, 1};
            total++;
        }
        iov[niov++] = (struct iovec){c->p, c->n};
        total += c->n;
    }
    if (!proto) {
        iov[niov++] = (struct iovec){close_json.p, close_json.n};
        total += close_json.n;
    }
    bool ok = false;
    uint64_t delay = 100;
    for (uint32_t attempt = 0;; attempt++) {
        int status = post_once(st, iov, niov, total, proto);
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
    free(iov);
    pt_trace_buf_free(&close_json);
    for (span_chunk *c = chunks, *next; c; c = next) {
        next = c->next;
        chunk_free(c);
    }
    X.body = open;
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
        /* whole chunks, up to batch_size spans (at least one chunk), of one
         * encoding: a reload that changed exporter.protocol leaves chunks
         * of the old one ahead of the new */
        span_chunk *batch = X.head, *last = X.head;
        size_t k = last->spans;
        while (last->next && last->next->proto == batch->proto && k + last->next->spans <= X.set.batch_size) {
            last = last->next;
            k += last->spans;
        }
        X.head = last->next;
        if (!X.head) X.tail = NULL;
        last->next = NULL;
        X.n -= k;
        /* no endpoint (a reload turned the export off): still no room */
        atomic_store_explicit(&X.room, !X.stopping && X.set.endpoint && X.n < X.cap, memory_order_relaxed);
        bool stopping = X.stopping;
        export_settings st;
        copy_settings(&st, &X.set);
        pthread_mutex_unlock(&X.mu);
        if (give_up) {
            for (span_chunk *c = batch, *next; c; c = next) {
                next = c->next;
                chunk_free(c);
            }
            count(&n_failed, &m_failed, k);
        } else if (!export_batch(batch, k, &st) && stopping) {
            give_up = true;
        }
        free(st.service_name);
        pthread_mutex_lock(&X.mu);
    }
    pthread_mutex_unlock(&X.mu);
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
    atomic_store(&X.protobuf, c->protobuf);
    atomic_store(&X.chunk_spans, c->batch_size < CHUNK_SPANS ? c->batch_size : CHUNK_SPANS);
    atomic_store(&X.flush_ms, c->batch_delay_ms < FLUSH_MS ? c->batch_delay_ms : FLUSH_MS);
    X.cap = c->queue_size; /* a smaller bound: what is queued over it still goes out */
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
    X.cap = X.n = 0; /* the thread sent (or counted as failed) every chunk */
    free(X.set.endpoint);
    free(X.set.service_name);
    X.set.endpoint = X.set.service_name = NULL;
    pthread_mutex_unlock(&X.mu);
}
