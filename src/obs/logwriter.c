/* logwriter.c — see logwriter.h.
 *
 * Design: one writer thread per open log. Workers append to `active` under
 * `mu` (a memcpy, nothing else) and signal `wake` only if the writer is
 * asleep. Each queued line is stored as one severity byte followed by the
 * line and its '\n'. The writer swaps `active` with the empty `spare`,
 * releases the lock and delivers the batch: to a stream (file, stdout,
 * stderr) the severity bytes are squeezed out and the batch goes out in
 * one write(); to syslog each line becomes one datagram with an RFC 5424
 * header. `queued_seq`/`written_seq` count lines so flush() can wait for
 * "everything queued so far is delivered". Rotation is a flag the writer
 * polls at each wakeup (it sleeps at most WAKE_MS), because a signal
 * handler may not touch a mutex or a condition variable. */
#include "obs/logwriter.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define WAKE_MS 100
#define INITIAL_BUF (64u * 1024)
#define SYSLOG_HEADER_MAX 512

typedef struct {
    char *p;
    size_t len, cap;
} log_buf;

/* An opened destination (owned by the writer thread once open). */
typedef struct {
    pt_log_dest dest;  /* strings below are heap copies */
    int fd;            /* file, stdout/stderr, or the syslog socket */
    bool owned_fd;     /* close it (not stdout/stderr) */
} sink;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t wake;  /* writer waits here for lines / stop */
    pthread_cond_t done;  /* flush() waits here for written_seq */
    log_buf active;       /* workers append here (under mu) */
    log_buf spare;        /* owned by the writer while it writes */
    bool open;            /* under mu */
    bool stop;            /* under mu */
    bool writer_waiting;  /* under mu */
    uint64_t queued_seq;  /* lines appended (under mu) */
    uint64_t written_seq; /* lines delivered (under mu) */
    sink cur;             /* writer thread only, after open */
    bool has_next;        /* under mu: a switch (reload) waiting for the writer */
    sink next;            /* under mu */
    size_t next_off;      /* under mu: bytes of `active` queued before the switch */
    pthread_t thread;
    atomic_bool is_open;
    atomic_int reopen_requested; /* lock-free int: safe from a signal handler */
    atomic_uint_fast64_t dropped;
    char hostname[256];
    int pid;
} log_state;

static log_state g_logs[PT_LOG__COUNT] = {
    [PT_LOG_ACCESS] = {.mu = PTHREAD_MUTEX_INITIALIZER, .cur = {.fd = -1}},
    [PT_LOG_ERROR] = {.mu = PTHREAD_MUTEX_INITIALIZER, .cur = {.fd = -1}},
};

/* ------------------------------------------------------------ time */

/* Days since 1970-01-01 -> civil date (proleptic Gregorian), using the
 * era/day-of-era decomposition: 400-year eras of 146097 days, years
 * starting in March so the leap day is the last day of the year. */
static void civil_from_days(int64_t z, int *year, unsigned *month, unsigned *day)
{
    z += 719468; /* shift the epoch to 0000-03-01 */
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);                          /* [0, 146096] */
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
    int64_t y = (int64_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100); /* [0, 365] */
    unsigned mp = (5 * doy + 2) / 153;                      /* [0, 11], March = 0 */
    *day = doy - (153 * mp + 2) / 5 + 1;
    *month = mp < 10 ? mp + 3 : mp - 9;
    *year = (int)(y + (*month <= 2));
}

static char *put_digits(char *p, unsigned v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return p + width;
}

char *pt_log_put_time(char *p, uint64_t us)
{
    uint64_t secs = us / 1000000;
    unsigned ms = (unsigned)((us / 1000) % 1000);
    int64_t days = (int64_t)(secs / 86400);
    unsigned sod = (unsigned)(secs % 86400);
    int year;
    unsigned month, day;
    civil_from_days(days, &year, &month, &day);
    if (year > 9999) year = 9999;
    p = put_digits(p, (unsigned)year, 4);
    *p++ = '-';
    p = put_digits(p, month, 2);
    *p++ = '-';
    p = put_digits(p, day, 2);
    *p++ = 'T';
    p = put_digits(p, sod / 3600, 2);
    *p++ = ':';
    p = put_digits(p, sod / 60 % 60, 2);
    *p++ = ':';
    p = put_digits(p, sod % 60, 2);
    *p++ = '.';
    p = put_digits(p, ms, 3);
    *p++ = 'Z';
    return p;
}

uint64_t pt_log_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ------------------------------------------------------------ destinations */

static bool is_syslog(const pt_log_dest *d) { return d->sink == PT_LOG_SINK_SYSLOG_UNIX || d->sink == PT_LOG_SINK_SYSLOG_UDP; }

static char *dup_or_null(const char *s) { return s ? pt_xstrndup(s, strlen(s)) : NULL; }

/* Opens `d`'s descriptor. PT_ERR with errno. */
static int sink_connect(sink *s)
{
    const pt_log_dest *d = &s->dest;
    int fd = -1;
    switch (d->sink) {
    case PT_LOG_SINK_STDOUT:
        s->fd = STDOUT_FILENO;
        s->owned_fd = false;
        return PT_OK;
    case PT_LOG_SINK_STDERR:
        s->fd = STDERR_FILENO;
        s->owned_fd = false;
        return PT_OK;
    case PT_LOG_SINK_FILE:
        fd = open(d->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        break;
    case PT_LOG_SINK_SYSLOG_UNIX: {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(d->path) >= sizeof(sa.sun_path)) {
            errno = ENAMETOOLONG;
            return PT_ERR;
        }
        strcpy(sa.sun_path, d->path);
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
            int e = errno;
            close(fd);
            errno = e;
            fd = -1;
        }
        break;
    }
    case PT_LOG_SINK_SYSLOG_UDP:
        fd = socket(d->udp.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (const struct sockaddr *)&d->udp, d->udp_len) != 0) {
            int e = errno;
            close(fd);
            errno = e;
            fd = -1;
        }
        break;
    }
    if (fd < 0) return PT_ERR;
    s->fd = fd;
    s->owned_fd = true;
    return PT_OK;
}

/* Copies `d` into a new sink and opens it. PT_ERR with errno. */
static int sink_open(sink *s, const pt_log_dest *d)
{
    *s = (sink){.dest = *d, .fd = -1};
    s->dest.path = dup_or_null(d->path);
    s->dest.address = dup_or_null(d->address);
    s->dest.app_name = dup_or_null(d->app_name ? d->app_name : "portico");
    s->dest.msgid = dup_or_null(d->msgid ? d->msgid : "-");
    if (sink_connect(s) == PT_OK) return PT_OK;
    int e = errno;
    free((char *)s->dest.path);
    free((char *)s->dest.address);
    free((char *)s->dest.app_name);
    free((char *)s->dest.msgid);
    errno = e;
    return PT_ERR;
}

static void sink_close(sink *s)
{
    if (s->owned_fd && s->fd >= 0) close(s->fd);
    free((char *)s->dest.path);
    free((char *)s->dest.address);
    free((char *)s->dest.app_name);
    free((char *)s->dest.msgid);
    *s = (sink){.fd = -1};
}

/* SIGUSR1: reopens the file at its path (after logrotate renamed it) or
 * reconnects the syslog socket (the daemon restarted). On failure keeps the
 * old descriptor. Writer thread only. */
static void sink_reopen(sink *s)
{
    if (!s->owned_fd) return;
    int old = s->fd;
    if (sink_connect(s) != PT_OK) {
        fprintf(stderr, "portico: log: cannot reopen %s: %s\n", pt_log_dest_text(&s->dest), strerror(errno));
        s->fd = old;
        return;
    }
    close(old);
}

bool pt_log_dest_same(const pt_log_dest *a, const pt_log_dest *b)
{
    if (a->sink != b->sink) return false;
    switch (a->sink) {
    case PT_LOG_SINK_STDOUT:
    case PT_LOG_SINK_STDERR:
        return true;
    case PT_LOG_SINK_FILE:
        return strcmp(a->path, b->path) == 0;
    default:
        return strcmp(a->address ? a->address : "", b->address ? b->address : "") == 0 &&
               a->facility == b->facility &&
               strcmp(a->app_name ? a->app_name : "", b->app_name ? b->app_name : "") == 0;
    }
}

const char *pt_log_dest_text(const pt_log_dest *d)
{
    switch (d->sink) {
    case PT_LOG_SINK_STDOUT:
        return "stdout";
    case PT_LOG_SINK_STDERR:
        return "stderr";
    case PT_LOG_SINK_FILE:
        return d->path;
    default:
        return d->address ? d->address : "syslog";
    }
}

/* ------------------------------------------------------------ delivery */

/* Writes all of buf to fd, retrying on EINTR and waiting on EAGAIN (a
 * non-blocking stdout). Returns the number of bytes that could not be
 * written (0 on success). Writer thread only. */
static size_t write_all(log_state *L, int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            if (poll(&pfd, 1, 1000) > 0) continue;
            pthread_mutex_lock(&L->mu);
            bool stopping = L->stop;
            pthread_mutex_unlock(&L->mu);
            if (stopping) return n; /* do not hang shutdown on a stuck pipe */
            continue;
        }
        return n;
    }
    return 0;
}

static uint64_t count_lines(const char *p, size_t n)
{
    uint64_t c = 0;
    const char *end = p + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        c++;
        if (!nl) break;
        p = nl + 1;
    }
    return c;
}

/* The RFC 5424 header of one message: "<PRI>1 TIMESTAMP HOSTNAME APP-NAME
 * PROCID MSGID - " (no structured data). */
static size_t syslog_header(const log_state *L, const sink *s, int severity, char *out)
{
    char ts[32];
    *pt_log_put_time(ts, pt_log_now_us()) = 0;
    int n = snprintf(out, SYSLOG_HEADER_MAX, "<%d>1 %s %s %s %d %s - ", s->dest.facility * 8 + severity, ts,
                     L->hostname, s->dest.app_name, L->pid, s->dest.msgid);
    return n > 0 && n < SYSLOG_HEADER_MAX ? (size_t)n : 0;
}

/* Delivers `n` bytes of queued lines (severity byte + line + '\n' each) to
 * `s`. Writer thread only. */
static void deliver(log_state *L, sink *s, char *p, size_t n)
{
    if (!n) return;
    if (!is_syslog(&s->dest)) {
        /* squeeze out the severity bytes, then one write */
        size_t o = 0, i = 0;
        while (i < n) {
            const char *nl = memchr(p + i + 1, '\n', n - i - 1);
            size_t end = nl ? (size_t)(nl - p) + 1 : n;
            memmove(p + o, p + i + 1, end - i - 1);
            o += end - i - 1;
            i = end;
        }
        size_t left = write_all(L, s->fd, p, o);
        if (left) atomic_fetch_add(&L->dropped, count_lines(p + o - left, left));
        return;
    }
    static __thread char dgram[SYSLOG_HEADER_MAX + 65536];
    size_t i = 0;
    while (i < n) {
        int sev = (unsigned char)p[i];
        const char *line = p + i + 1;
        const char *nl = memchr(line, '\n', n - i - 1);
        size_t ln = nl ? (size_t)(nl - line) : n - i - 1;
        i += 1 + ln + (nl ? 1 : 0);
        size_t h = syslog_header(L, s, sev, dgram);
        if (ln > sizeof(dgram) - h) ln = sizeof(dgram) - h;
        memcpy(dgram + h, line, ln);
        ssize_t w;
        do
            w = send(s->fd, dgram, h + ln, MSG_NOSIGNAL | MSG_DONTWAIT);
        while (w < 0 && errno == EINTR);
        if (w < 0) atomic_fetch_add(&L->dropped, 1); /* full, refused, no daemon: never wait */
    }
}

static void *writer_main(void *arg)
{
    log_state *L = arg;
    pthread_mutex_lock(&L->mu);
    for (;;) {
        while (L->active.len == 0 && !L->stop && !atomic_load(&L->reopen_requested) && !L->has_next) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += WAKE_MS * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            L->writer_waiting = true;
            pthread_cond_timedwait(&L->wake, &L->mu, &ts);
            L->writer_waiting = false;
        }
        if (L->active.len == 0 && L->stop && !L->has_next) break;

        log_buf batch = L->active;
        L->active = L->spare;
        L->spare = (log_buf){0};
        uint64_t seq = L->queued_seq;
        bool switching = L->has_next;
        sink next = L->next;
        size_t old_part = switching ? L->next_off : batch.len; /* bytes for the old destination */
        L->has_next = false;
        pthread_mutex_unlock(&L->mu);

        if (!switching && atomic_exchange(&L->reopen_requested, 0)) sink_reopen(&L->cur);
        deliver(L, &L->cur, batch.p, old_part);
        if (switching) { /* pt_logwriter_switch: lines queued before it went to
                          * the old destination above; the rest to the new one */
            sink_close(&L->cur);
            L->cur = next;
            atomic_store(&L->reopen_requested, 0);
            deliver(L, &L->cur, batch.p + old_part, batch.len - old_part);
        }
        batch.len = 0;

        pthread_mutex_lock(&L->mu);
        L->spare = batch;
        L->written_seq = seq;
        pthread_cond_broadcast(&L->done);
    }
    pthread_mutex_unlock(&L->mu);
    return NULL;
}

/* ------------------------------------------------------------ API */

int pt_logwriter_open(pt_log_id id, const pt_log_dest *dest)
{
    log_state *L = &g_logs[id];
    pthread_mutex_lock(&L->mu);
    bool already = L->open;
    pthread_mutex_unlock(&L->mu);
    if (already) {
        errno = EBUSY;
        return PT_ERR;
    }
    if (sink_open(&L->cur, dest) != PT_OK) return PT_ERR;

    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&L->wake, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&L->done, NULL);

    if (gethostname(L->hostname, sizeof(L->hostname) - 1) != 0 || !L->hostname[0]) strcpy(L->hostname, "-");
    for (char *c = L->hostname; *c; c++)
        if (*c < 33 || *c > 126) *c = '_';
    L->pid = (int)getpid();
    L->active = (log_buf){pt_xmalloc(INITIAL_BUF), 0, INITIAL_BUF};
    L->spare = (log_buf){pt_xmalloc(INITIAL_BUF), 0, INITIAL_BUF};
    L->stop = false;
    L->writer_waiting = false;
    L->has_next = false;
    L->queued_seq = L->written_seq = 0;
    atomic_store(&L->dropped, 0);
    atomic_store(&L->reopen_requested, 0);

    /* The writer must never receive process signals (SIGUSR1, SIGTERM...). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&L->thread, NULL, writer_main, L);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        sink_close(&L->cur);
        free(L->active.p);
        free(L->spare.p);
        L->active = L->spare = (log_buf){0};
        pthread_cond_destroy(&L->wake);
        pthread_cond_destroy(&L->done);
        errno = rc;
        return PT_ERR;
    }
    pthread_mutex_lock(&L->mu);
    L->open = true;
    pthread_mutex_unlock(&L->mu);
    atomic_store(&L->is_open, true);
    return PT_OK;
}

bool pt_logwriter_is_open(pt_log_id id) { return atomic_load_explicit(&g_logs[id].is_open, memory_order_acquire); }

void pt_logwriter_write(pt_log_id id, int severity, const char *line, size_t len)
{
    log_state *L = &g_logs[id];
    if (!atomic_load_explicit(&L->is_open, memory_order_acquire) || len == 0) return;
    bool add_nl = line[len - 1] != '\n';
    size_t need = 1 + len + add_nl;
    pthread_mutex_lock(&L->mu);
    if (!L->open || L->active.len + need > PT_LOG_MAX_PENDING) {
        bool was_open = L->open;
        pthread_mutex_unlock(&L->mu);
        if (was_open) atomic_fetch_add(&L->dropped, 1);
        return;
    }
    log_buf *b = &L->active;
    if (b->len + need > b->cap) {
        size_t cap = b->cap ? b->cap : INITIAL_BUF;
        while (cap < b->len + need) cap *= 2;
        if (cap > PT_LOG_MAX_PENDING) cap = PT_LOG_MAX_PENDING;
        b->p = pt_xrealloc(b->p, cap);
        b->cap = cap;
    }
    b->p[b->len++] = (char)(severity & 7);
    memcpy(b->p + b->len, line, len);
    b->len += len;
    if (add_nl) b->p[b->len++] = '\n';
    L->queued_seq++;
    if (L->writer_waiting) pthread_cond_signal(&L->wake);
    pthread_mutex_unlock(&L->mu);
}

void pt_logwriter_flush(pt_log_id id)
{
    log_state *L = &g_logs[id];
    pthread_mutex_lock(&L->mu);
    if (L->open) {
        uint64_t target = L->queued_seq;
        if (L->writer_waiting) pthread_cond_signal(&L->wake);
        while (L->written_seq < target) pthread_cond_wait(&L->done, &L->mu);
    }
    pthread_mutex_unlock(&L->mu);
}

void pt_logwriter_request_reopen(pt_log_id id) { atomic_store(&g_logs[id].reopen_requested, 1); }

int pt_logwriter_switch(pt_log_id id, const pt_log_dest *dest)
{
    log_state *L = &g_logs[id];
    sink s;
    if (sink_open(&s, dest) != PT_OK) return PT_ERR;
    pthread_mutex_lock(&L->mu);
    if (!L->open) {
        pthread_mutex_unlock(&L->mu);
        sink_close(&s);
        errno = EBADF;
        return PT_ERR;
    }
    if (L->has_next) /* an earlier switch the writer has not taken yet:
                      * lines since then go to this newer destination */
        sink_close(&L->next);
    else
        L->next_off = L->active.len;
    L->next = s;
    L->has_next = true;
    if (L->writer_waiting) pthread_cond_signal(&L->wake);
    pthread_mutex_unlock(&L->mu);
    return PT_OK;
}

void pt_logwriter_close(pt_log_id id)
{
    log_state *L = &g_logs[id];
    pthread_mutex_lock(&L->mu);
    if (!L->open) {
        pthread_mutex_unlock(&L->mu);
        return;
    }
    L->open = false;
    atomic_store(&L->is_open, false);
    L->stop = true;
    pthread_cond_signal(&L->wake);
    pthread_mutex_unlock(&L->mu);

    pthread_join(L->thread, NULL); /* the writer drains `active` first */

    sink_close(&L->cur);
    free(L->active.p);
    free(L->spare.p);
    L->active = L->spare = (log_buf){0};
    L->stop = false;
    pthread_cond_destroy(&L->wake);
    pthread_cond_destroy(&L->done);
}

uint64_t pt_logwriter_dropped(pt_log_id id) { return atomic_load(&g_logs[id].dropped); }
