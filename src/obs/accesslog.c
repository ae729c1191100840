/* accesslog.c — see accesslog.h.
 *
 * Design: one process-wide writer. Workers append to `active` under `mu`
 * (a memcpy, nothing else) and signal `wake` only if the writer is asleep.
 * The writer swaps `active` with the empty `spare`, releases the lock and
 * write()s the batch. `queued_seq`/`written_seq` count lines so flush() can
 * wait for "everything queued so far is written". Rotation is a flag the
 * writer polls at each wakeup (it sleeps at most WAKE_MS), because a signal
 * handler may not touch a mutex or a condition variable. */
#include "obs/accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "http/problem.h"

#define WAKE_MS 100
#define INITIAL_BUF (64u * 1024)

typedef struct {
    char *p;
    size_t len, cap;
} log_buf;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t wake; /* writer waits here for lines / stop */
    pthread_cond_t done; /* flush() waits here for written_seq */
    log_buf active;      /* workers append here (under mu) */
    log_buf spare;       /* owned by the writer while it writes */
    bool open;           /* under mu */
    bool stop;           /* under mu */
    bool writer_waiting; /* under mu */
    uint64_t queued_seq; /* lines appended (under mu) */
    uint64_t written_seq;/* lines handed to write(2) (under mu) */
    int fd;              /* writer thread only, after open */
    bool is_stdout;
    char *path;
    /* a destination switch (reload) waiting for the writer's next batch */
    char *next_path;     /* under mu; NULL = none pending */
    int next_fd;         /* under mu */
    bool next_is_stdout; /* under mu */
    size_t next_off;     /* under mu: bytes of `active` queued before the switch */
    pthread_t thread;
} accesslog_state;

static accesslog_state g_log = {.mu = PTHREAD_MUTEX_INITIALIZER, .fd = -1};
static atomic_bool g_open;
static atomic_int g_reopen_requested; /* lock-free int: safe from a signal handler */
static atomic_uint_fast64_t g_dropped;

static uint64_t count_lines(const char *p, size_t n)
{
    uint64_t c = 0;
    const char *end = p + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) {
            c++; /* a trailing partial line still counts as one */
            break;
        }
        c++;
        p = nl + 1;
    }
    return c;
}

/* Writes all of buf to fd, retrying on EINTR and waiting on EAGAIN (a
 * non-blocking stdout). Returns the number of bytes that could not be
 * written (0 on success). Writer thread only. */
static size_t write_all(int fd, const char *p, size_t n)
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
            pthread_mutex_lock(&g_log.mu);
            bool stopping = g_log.stop;
            pthread_mutex_unlock(&g_log.mu);
            if (stopping) return n; /* do not hang shutdown on a stuck pipe */
            continue;
        }
        return n;
    }
    return 0;
}

/* Reopens the log file at its path (after logrotate renamed it). On failure
 * keeps writing to the old descriptor. Writer thread only. */
static void reopen_file(void)
{
    if (g_log.is_stdout) return;
    int fd = open(g_log.path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "portico: access log: cannot reopen %s: %s\n", g_log.path, strerror(errno));
        return;
    }
    close(g_log.fd);
    g_log.fd = fd;
}

static void *writer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&g_log.mu);
    for (;;) {
        while (g_log.active.len == 0 && !g_log.stop && !atomic_load(&g_reopen_requested) && !g_log.next_path) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += WAKE_MS * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            g_log.writer_waiting = true;
            pthread_cond_timedwait(&g_log.wake, &g_log.mu, &ts);
            g_log.writer_waiting = false;
        }
        if (g_log.active.len == 0 && g_log.stop && !g_log.next_path) break;

        log_buf batch = g_log.active;
        g_log.active = g_log.spare;
        g_log.spare = (log_buf){0};
        uint64_t seq = g_log.queued_seq;
        char *next_path = g_log.next_path;
        int next_fd = g_log.next_fd;
        bool next_is_stdout = g_log.next_is_stdout;
        size_t old_part = next_path ? g_log.next_off : batch.len; /* bytes for the old file */
        g_log.next_path = NULL;
        pthread_mutex_unlock(&g_log.mu);

        if (!next_path && atomic_exchange(&g_reopen_requested, 0)) reopen_file();
        if (old_part) {
            size_t left = write_all(g_log.fd, batch.p, old_part);
            if (left) atomic_fetch_add(&g_dropped, count_lines(batch.p + old_part - left, left));
        }
        if (next_path) { /* pt_accesslog_switch: lines queued before it went to
                          * the old file above; the rest goes to the new one */
            if (!g_log.is_stdout) close(g_log.fd);
            free(g_log.path);
            g_log.fd = next_fd;
            g_log.is_stdout = next_is_stdout;
            g_log.path = next_path;
            atomic_store(&g_reopen_requested, 0);
            if (batch.len > old_part) {
                size_t left = write_all(g_log.fd, batch.p + old_part, batch.len - old_part);
                if (left) atomic_fetch_add(&g_dropped, count_lines(batch.p + batch.len - left, left));
            }
        }
        batch.len = 0;

        pthread_mutex_lock(&g_log.mu);
        g_log.spare = batch;
        g_log.written_seq = seq;
        pthread_cond_broadcast(&g_log.done);
    }
    pthread_mutex_unlock(&g_log.mu);
    return NULL;
}

int pt_accesslog_open(const char *path)
{
    pthread_mutex_lock(&g_log.mu);
    bool already = g_log.open;
    pthread_mutex_unlock(&g_log.mu);
    if (already) {
        errno = EBUSY;
        return PT_ERR;
    }

    bool is_stdout = strcmp(path, "stdout") == 0;
    int fd = is_stdout ? STDOUT_FILENO : open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return PT_ERR;

    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g_log.wake, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&g_log.done, NULL);

    g_log.fd = fd;
    g_log.is_stdout = is_stdout;
    g_log.path = pt_xstrndup(path, strlen(path));
    g_log.active = (log_buf){pt_xmalloc(INITIAL_BUF), 0, INITIAL_BUF};
    g_log.spare = (log_buf){pt_xmalloc(INITIAL_BUF), 0, INITIAL_BUF};
    g_log.stop = false;
    g_log.writer_waiting = false;
    g_log.queued_seq = g_log.written_seq = 0;
    atomic_store(&g_dropped, 0);
    atomic_store(&g_reopen_requested, 0);

    /* The writer must never receive process signals (SIGUSR1, SIGTERM...). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&g_log.thread, NULL, writer_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        if (!is_stdout) close(fd);
        free(g_log.path);
        free(g_log.active.p);
        free(g_log.spare.p);
        g_log.path = NULL;
        g_log.active = g_log.spare = (log_buf){0};
        pthread_cond_destroy(&g_log.wake);
        pthread_cond_destroy(&g_log.done);
        errno = rc;
        return PT_ERR;
    }
    pthread_mutex_lock(&g_log.mu);
    g_log.open = true;
    pthread_mutex_unlock(&g_log.mu);
    atomic_store(&g_open, true);
    return PT_OK;
}

void pt_accesslog_write(const char *line, size_t len)
{
    if (!atomic_load_explicit(&g_open, memory_order_acquire) || len == 0) return;
    pthread_mutex_lock(&g_log.mu);
    if (!g_log.open || g_log.active.len + len > PT_ACCESSLOG_MAX_PENDING) {
        bool was_open = g_log.open;
        pthread_mutex_unlock(&g_log.mu);
        if (was_open) atomic_fetch_add(&g_dropped, 1);
        return;
    }
    log_buf *b = &g_log.active;
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : INITIAL_BUF;
        while (cap < b->len + len) cap *= 2;
        if (cap > PT_ACCESSLOG_MAX_PENDING) cap = PT_ACCESSLOG_MAX_PENDING;
        b->p = pt_xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, line, len);
    b->len += len;
    g_log.queued_seq++;
    if (g_log.writer_waiting) pthread_cond_signal(&g_log.wake);
    pthread_mutex_unlock(&g_log.mu);
}

void pt_accesslog_flush(void)
{
    pthread_mutex_lock(&g_log.mu);
    if (g_log.open) {
        uint64_t target = g_log.queued_seq;
        if (g_log.writer_waiting) pthread_cond_signal(&g_log.wake);
        while (g_log.written_seq < target) pthread_cond_wait(&g_log.done, &g_log.mu);
    }
    pthread_mutex_unlock(&g_log.mu);
}

void pt_accesslog_request_reopen(void) { atomic_store(&g_reopen_requested, 1); }

void pt_accesslog_reopen(void) { pt_accesslog_request_reopen(); }

int pt_accesslog_switch(const char *path)
{
    bool is_stdout = strcmp(path, "stdout") == 0;
    int fd = is_stdout ? STDOUT_FILENO : open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return PT_ERR;
    pthread_mutex_lock(&g_log.mu);
    if (!g_log.open) {
        pthread_mutex_unlock(&g_log.mu);
        if (!is_stdout) close(fd);
        errno = EBADF;
        return PT_ERR;
    }
    if (g_log.next_path) { /* an earlier switch the writer has not taken yet:
                            * lines since then go to this newer path */
        if (!g_log.next_is_stdout) close(g_log.next_fd);
        free(g_log.next_path);
    } else {
        g_log.next_off = g_log.active.len;
    }
    g_log.next_path = pt_xstrndup(path, strlen(path));
    g_log.next_fd = fd;
    g_log.next_is_stdout = is_stdout;
    if (g_log.writer_waiting) pthread_cond_signal(&g_log.wake);
    pthread_mutex_unlock(&g_log.mu);
    return PT_OK;
}

void pt_accesslog_close(void)
{
    pthread_mutex_lock(&g_log.mu);
    if (!g_log.open) {
        pthread_mutex_unlock(&g_log.mu);
        return;
    }
    g_log.open = false;
    atomic_store(&g_open, false);
    g_log.stop = true;
    pthread_cond_signal(&g_log.wake);
    pthread_mutex_unlock(&g_log.mu);

    pthread_join(g_log.thread, NULL); /* the writer drains `active` first */

    if (!g_log.is_stdout) close(g_log.fd);
    g_log.fd = -1;
    free(g_log.path);
    free(g_log.active.p);
    free(g_log.spare.p);
    g_log.path = NULL;
    g_log.active = g_log.spare = (log_buf){0};
    g_log.stop = false;
    pthread_cond_destroy(&g_log.wake);
    pthread_cond_destroy(&g_log.done);
}

uint64_t pt_accesslog_dropped(void) { return atomic_load(&g_dropped); }

/* ---------------------------------------------------------------- format */

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

/* Writes "YYYY-MM-DDTHH:MM:SS.mmmZ" (24 bytes). */
static char *put_time(char *p, uint64_t us)
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

static char *put_u64(char *p, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n) *p++ = tmp[--n];
    return p;
}

/* Milliseconds with 3 decimals; negative/NaN/inf => "null" when
 * null_if_negative, otherwise clamped to 0. At most 24 bytes. */
static char *put_ms(char *p, double v, bool null_if_negative)
{
    if (isnan(v) || (null_if_negative && v < 0)) {
        memcpy(p, "null", 4);
        return p + 4;
    }
    if (v < 0) v = 0;
    if (v > 1e12) v = 1e12;
    uint64_t micros = (uint64_t)(v * 1000.0 + 0.5); /* thousandths of a ms */
    p = put_u64(p, micros / 1000);
    *p++ = '.';
    return put_digits(p, (unsigned)(micros % 1000), 3);
}

#define LIT(s) s, sizeof(s) - 1

size_t pt_accesslog_format(char *out, size_t cap, const pt_access_record *r)
{
    if (cap < PT_ACCESSLOG_MIN_CAP) return 0;

    /* The numeric tail, built first so its exact size is known. */
    char tail[256];
    char *t = tail;
    memcpy(t, LIT("\",\"status\":"));
    t += sizeof("\",\"status\":") - 1;
    int status = r->status < 0 ? 0 : (r->status > 999999 ? 999999 : r->status);
    t = put_u64(t, (uint64_t)status);
    if (r->aborted) {
        memcpy(t, LIT(",\"aborted\":true"));
        t += sizeof(",\"aborted\":true") - 1;
    } else {
        memcpy(t, LIT(",\"aborted\":false"));
        t += sizeof(",\"aborted\":false") - 1;
    }
    memcpy(t, LIT(",\"bytes_in\":"));
    t += sizeof(",\"bytes_in\":") - 1;
    t = put_u64(t, r->bytes_in);
    memcpy(t, LIT(",\"bytes_out\":"));
    t += sizeof(",\"bytes_out\":") - 1;
    t = put_u64(t, r->bytes_out);
    memcpy(t, LIT(",\"duration_ms\":"));
    t += sizeof(",\"duration_ms\":") - 1;
    t = put_ms(t, r->duration_ms, false);
    memcpy(t, LIT(",\"upstream_ms\":"));
    t += sizeof(",\"upstream_ms\":") - 1;
    t = put_ms(t, r->upstream_ms, true);
    memcpy(t, LIT(",\"attempts\":"));
    t += sizeof(",\"attempts\":") - 1;
    t = put_u64(t, r->attempts > 0 ? (uint64_t)r->attempts : 0);
    *t++ = '}';
    *t++ = '\n';
    size_t tail_n = (size_t)(t - tail);

    struct {
        const char *key;
        size_t key_n;
        pt_str val;
    } fields[8] = {
        {LIT("\",\"request_id\":\""), r->request_id},
        {LIT("\",\"trace_id\":\""), r->trace_id},
        {LIT("\",\"client\":\""), r->client},
        {LIT("\",\"method\":\""), r->method},
        {LIT("\",\"path\":\""), r->path},
        {LIT("\",\"route\":\""), r->route},
        {LIT("\",\"consumer\":\""), r->consumer},
        {LIT("\",\"upstream\":\""), r->upstream},
    };

    char *p = out;
    memcpy(p, LIT("{\"time\":\""));
    p += sizeof("{\"time\":\"") - 1;
    p = put_time(p, r->time_us);

    /* Space still needed after field i: its successors' keys, a modest
     * reserve for their values (so a huge path cannot starve the route
     * name), and the tail. */
    for (int i = 0; i < 8; i++) {
        size_t after = tail_n, reserve = 0;
        for (int j = i + 1; j < 8; j++) {
            after += fields[j].key_n;
            reserve += PT_MIN(fields[j].val.n, (size_t)64);
        }
        memcpy(p, fields[i].key, fields[i].key_n);
        p += fields[i].key_n;
        size_t used = (size_t)(p - out);
        PT_ASSERT(used + after <= cap);
        size_t room = cap - used - after;
        room = room > reserve ? room - reserve : 0;
        if (fields[i].val.n && room)
            p += pt_json_escape_bounded(p, room, fields[i].val.p, fields[i].val.n, NULL);
    }
    memcpy(p, tail, tail_n);
    p += tail_n;
    return (size_t)(p - out);
}
