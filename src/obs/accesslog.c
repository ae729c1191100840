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
#include <stddef.h>
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

/* ----------------------------------------------------------- sampling */

static atomic_uint_fast64_t g_sample_seq;

bool pt_accesslog_sample(int status, uint64_t total_ms, double ratio, bool always_4xx, bool always_5xx,
                         uint64_t slow_over_ms)
{
    if (status >= 500 && always_5xx) return true;
    if (status >= 400 && status < 500 && always_4xx) return true;
    if (slow_over_ms && total_ms >= slow_over_ms) return true;
    if (ratio >= 1.0) return true;
    if (ratio <= 0.0) return false;
    uint64_t n = atomic_fetch_add_explicit(&g_sample_seq, 1, memory_order_relaxed) + 1;
    return (uint64_t)floor((double)n * ratio) > (uint64_t)floor((double)(n - 1) * ratio);
}

/* ------------------------------------------------------------- kinds */

/* How a field of config/log_fields.h is read: R_* from the record, S_* from
 * *record->stats. The table below is built from the same X-macro as the
 * config's names, and each entry's member type is checked at compile time. */
enum {
    K_R_TIME, K_R_STR, K_R_STATUS, K_R_BOOL, K_R_U64, K_R_MS, K_R_MS_NULL, K_R_COUNT,
    K_S_STR, K_S_CSTR, K_S_BOOL, K_S_US_NULL, K_S_INT
};
#define REC_OFF(m) offsetof(pt_access_record, m)
#define STATS_OFF(m) offsetof(pt_txn_stats, m)
#define OFF_R_TIME REC_OFF
#define OFF_R_STR REC_OFF
#define OFF_R_STATUS REC_OFF
#define OFF_R_BOOL REC_OFF
#define OFF_R_U64 REC_OFF
#define OFF_R_MS REC_OFF
#define OFF_R_MS_NULL REC_OFF
#define OFF_R_COUNT REC_OFF
#define OFF_S_STR STATS_OFF
#define OFF_S_CSTR STATS_OFF
#define OFF_S_BOOL STATS_OFF
#define OFF_S_US_NULL STATS_OFF
#define OFF_S_INT STATS_OFF
#define TYPE_R_TIME uint64_t
#define TYPE_R_STR pt_str
#define TYPE_R_STATUS int
#define TYPE_R_BOOL bool
#define TYPE_R_U64 uint64_t
#define TYPE_R_MS double
#define TYPE_R_MS_NULL double
#define TYPE_R_COUNT int
#define TYPE_S_STR pt_str
#define TYPE_S_CSTR const char *
#define TYPE_S_BOOL bool
#define TYPE_S_US_NULL int64_t
#define TYPE_S_INT int

static const struct {
    uint8_t kind;
    uint16_t off;
} field_src[PT_LF_COUNT] = {
#define FIELD_SRC(name, kind, member) [PT_LF_##name] = {K_##kind, (uint16_t)OFF_##kind(member)},
    PT_ACCESS_LOG_FIELDS(FIELD_SRC)
#undef FIELD_SRC
};

#define FIELD_TYPE_CHECK(name, kind, member)                                                                  \
    _Static_assert(__builtin_types_compatible_p(__typeof__(((OWNER_##kind *)0)->member), TYPE_##kind),         \
                   "access-log field " #name ": member type does not match kind " #kind);
#define OWNER_R_TIME pt_access_record
#define OWNER_R_STR pt_access_record
#define OWNER_R_STATUS pt_access_record
#define OWNER_R_BOOL pt_access_record
#define OWNER_R_U64 pt_access_record
#define OWNER_R_MS pt_access_record
#define OWNER_R_MS_NULL pt_access_record
#define OWNER_R_COUNT pt_access_record
#define OWNER_S_STR pt_txn_stats
#define OWNER_S_CSTR pt_txn_stats
#define OWNER_S_BOOL pt_txn_stats
#define OWNER_S_US_NULL pt_txn_stats
#define OWNER_S_INT pt_txn_stats
PT_ACCESS_LOG_FIELDS(FIELD_TYPE_CHECK)
#undef FIELD_TYPE_CHECK

/* One value ready to write: a string to escape, preformatted text
 * (numbers, booleans; `quote_json` for the time), or null. */
typedef struct {
    enum { V_NULL, V_STR, V_RAW } k;
    bool quote_json;
    pt_str s;
    char raw[40];
    size_t raw_n;
} log_val;

static void val_raw_u64(log_val *v, uint64_t x)
{
    v->k = V_RAW;
    v->raw_n = (size_t)(put_u64(v->raw, x) - v->raw);
}

static void val_ms(log_val *v, double ms, bool null_if_negative)
{
    v->k = V_RAW;
    v->raw_n = (size_t)(put_ms(v->raw, ms, null_if_negative) - v->raw);
    if (v->raw_n == 4 && memcmp(v->raw, "null", 4) == 0) v->k = V_NULL;
}

static void val_bool(log_val *v, bool b)
{
    v->k = V_RAW;
    v->raw_n = b ? 4 : 5;
    memcpy(v->raw, b ? "true" : "false", v->raw_n);
}

/* The value of column `c` for record `r`. Captured header values are cut to
 * `header_max` bytes (at a UTF-8 boundary when the cut falls inside one). */
static void column_value(const pt_access_record *r, const pt_log_column *c, uint32_t header_max, log_val *v)
{
    memset(v, 0, sizeof(*v));
    if (c->source != PT_LOG_COL_FIELD) {
        const pt_headers *h = c->source == PT_LOG_COL_REQ_HEADER ? r->req_headers : r->resp_headers;
        const pt_str *hv = h ? pt_headers_get(h, c->header) : NULL;
        if (!hv) return;
        size_t n = hv->n;
        if (n > header_max) {
            n = header_max;
            for (int back = 0; back < 3 && n > 0 && ((unsigned char)hv->p[n] & 0xC0) == 0x80; back++) n--;
        }
        v->k = V_STR;
        v->s = pt_str_make(hv->p, n);
        return;
    }
    if ((unsigned)c->field >= PT_LF_COUNT) return;
    uint8_t kind = field_src[c->field].kind;
    const char *base = kind >= K_S_STR ? (const char *)r->stats : (const char *)r;
    if (!base) return;
    const char *m = base + field_src[c->field].off;
    switch (kind) {
    case K_R_TIME: {
        uint64_t us;
        memcpy(&us, m, sizeof(us));
        v->k = V_RAW;
        v->quote_json = true;
        v->raw_n = (size_t)(put_time(v->raw, us) - v->raw);
        break;
    }
    case K_R_STR:
    case K_S_STR:
        v->k = V_STR;
        memcpy(&v->s, m, sizeof(pt_str));
        break;
    case K_S_CSTR: {
        const char *cs;
        memcpy(&cs, m, sizeof(cs));
        if (cs) {
            v->k = V_STR;
            v->s = pt_str_c(cs);
        }
        break;
    }
    case K_R_STATUS: {
        int st;
        memcpy(&st, m, sizeof(st));
        val_raw_u64(v, (uint64_t)(st < 0 ? 0 : (st > 999999 ? 999999 : st)));
        break;
    }
    case K_R_COUNT:
    case K_S_INT: {
        int x;
        memcpy(&x, m, sizeof(x));
        val_raw_u64(v, x > 0 ? (uint64_t)x : 0);
        break;
    }
    case K_R_BOOL:
    case K_S_BOOL: {
        bool b;
        memcpy(&b, m, sizeof(b));
        val_bool(v, b);
        break;
    }
    case K_R_U64: {
        uint64_t x;
        memcpy(&x, m, sizeof(x));
        val_raw_u64(v, x);
        break;
    }
    case K_R_MS:
    case K_R_MS_NULL: {
        double d;
        memcpy(&d, m, sizeof(d));
        val_ms(v, d, kind == K_R_MS_NULL);
        break;
    }
    case K_S_US_NULL: {
        int64_t us;
        memcpy(&us, m, sizeof(us));
        if (us >= 0) val_ms(v, (double)us / 1000.0, true);
        break;
    }
    default:
        break;
    }
}

/* ------------------------------------------------------------ logfmt */

/* Length of the valid UTF-8 sequence at p (2..4), or 0 when p[0] does not
 * start one (overlong forms, surrogates and > U+10FFFF are invalid). */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return 0;
    if (n < len || p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    return len;
}

/* A logfmt value must be quoted unless it is non-empty printable ASCII
 * without space, '"', '=' or '\'. */
static bool logfmt_needs_quotes(pt_str s)
{
    if (s.n == 0) return true;
    for (size_t i = 0; i < s.n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (c <= 0x20 || c >= 0x7f || c == '"' || c == '=' || c == '\\') return true;
    }
    return false;
}

size_t pt_logfmt_escape_bounded(char *out, size_t cap, const char *in, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)in;
    size_t o = 0, i = 0;
    while (i < n) {
        unsigned char c = p[i];
        char esc[4];
        size_t en = 0, take = 1;
        const char *src = esc;
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            esc[0] = (char)c;
            en = 1;
        } else if (c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t') {
            esc[0] = '\\';
            esc[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't' : (char)c;
            en = 2;
        } else if (c >= 0x80 && (take = utf8_seq(p + i, n - i)) > 0) {
            src = (const char *)p + i;
            en = take;
        } else {
            take = 1;
            esc[0] = '\\';
            esc[1] = 'x';
            esc[2] = hex[c >> 4];
            esc[3] = hex[c & 15];
            en = 4;
        }
        if (o + en > cap) break;
        memcpy(out + o, src, en);
        o += en;
        i += take;
    }
    return o;
}

/* ------------------------------------------------------------- format */

#define LIT(s) s, sizeof(s) - 1
#define RESERVE_PER_STRING 64

static const pt_log_column *default_columns(size_t *n)
{
    static const pt_log_field f[] = {PT_ACCESS_LOG_DEFAULT_FIELDS};
    static pt_log_column cols[PT_ARRAY_LEN(f)];
    static atomic_bool ready;
    if (!atomic_load_explicit(&ready, memory_order_acquire)) { /* idempotent: racing threads write the same */
        for (size_t i = 0; i < PT_ARRAY_LEN(f); i++)
            cols[i] = (pt_log_column){.key = pt_log_field_name(f[i]), .source = PT_LOG_COL_FIELD, .field = f[i]};
        atomic_store_explicit(&ready, true, memory_order_release);
    }
    *n = PT_ARRAY_LEN(f);
    return cols;
}

#define MAX_COLUMNS 128

size_t pt_accesslog_format_spec(char *out, size_t cap, const pt_access_record *r, const pt_accesslog_spec *spec)
{
    size_t ncols;
    const pt_log_column *cols;
    if (spec && spec->columns) {
        cols = spec->columns;
        ncols = PT_MIN(spec->ncolumns, (size_t)MAX_COLUMNS);
    } else {
        cols = default_columns(&ncols);
    }
    bool json = !spec || spec->format == PT_LOG_FORMAT_JSON;
    uint32_t header_max = spec && spec->header_max ? spec->header_max : 256;

    log_val vals[MAX_COLUMNS];
    size_t fixed[MAX_COLUMNS]; /* bytes of column i that are not an escaped string */
    bool quoted[MAX_COLUMNS];
    size_t total = json ? 3 : 1; /* "{" "}\n" or "\n" */
    for (size_t i = 0; i < ncols; i++) {
        log_val *v = &vals[i];
        column_value(r, &cols[i], header_max, v);
        size_t keyn = strlen(cols[i].key);
        quoted[i] = json ? (v->k == V_STR || v->quote_json) : (v->k == V_STR && logfmt_needs_quotes(v->s));
        size_t f = keyn + 1 + (i > 0); /* key, ':' or '=', separator */
        if (json) f += 2;              /* the key's quotes */
        if (quoted[i]) f += 2;
        if (v->k == V_RAW) f += v->raw_n;
        else if (v->k == V_NULL && json) f += 4;
        fixed[i] = f;
        total += f;
    }
    if (total > cap || cap < PT_ACCESSLOG_MIN_CAP) return 0;

    char *p = out;
    if (json) *p++ = '{';
    size_t after = total - (json ? 1 : 0); /* bytes still to come, strings excluded */
    size_t reserve = 0;
    for (size_t i = 0; i < ncols; i++)
        if (vals[i].k == V_STR) reserve += PT_MIN(vals[i].s.n, (size_t)RESERVE_PER_STRING);
    for (size_t i = 0; i < ncols; i++) {
        const log_val *v = &vals[i];
        after -= fixed[i];
        if (v->k == V_STR) reserve -= PT_MIN(v->s.n, (size_t)RESERVE_PER_STRING);
        if (i > 0) *p++ = json ? ',' : ' ';
        size_t keyn = strlen(cols[i].key);
        if (json) *p++ = '"';
        memcpy(p, cols[i].key, keyn);
        p += keyn;
        if (json) {
            *p++ = '"';
            *p++ = ':';
        } else {
            *p++ = '=';
        }
        if (quoted[i]) *p++ = '"';
        if (v->k == V_RAW) {
            memcpy(p, v->raw, v->raw_n);
            p += v->raw_n;
        } else if (v->k == V_NULL) {
            if (json) {
                memcpy(p, "null", 4);
                p += 4;
            }
        } else if (v->s.n) {
            size_t used = (size_t)(p - out) + (quoted[i] ? 1 : 0);
            PT_ASSERT(used + after <= cap);
            size_t room = cap - used - after;
            room = room > reserve ? room - reserve : 0;
            if (room)
                p += json ? pt_json_escape_bounded(p, room, v->s.p, v->s.n, NULL)
                          : pt_logfmt_escape_bounded(p, room, v->s.p, v->s.n);
        }
        if (quoted[i]) *p++ = '"';
    }
    if (json) *p++ = '}';
    *p++ = '\n';
    PT_ASSERT((size_t)(p - out) <= cap);
    return (size_t)(p - out);
}

size_t pt_accesslog_format(char *out, size_t cap, const pt_access_record *r)
{
    return pt_accesslog_format_spec(out, cap, r, NULL);
}
