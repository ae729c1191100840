/* errorlog.c — see errorlog.h. */
#include "obs/errorlog.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "http/problem.h"
#include "obs/accesslog.h"
#include "obs/logwriter.h"

#define MAX_KINDS 64
#define LINE_MAX_BYTES 4096
#define MSG_MAX 1024
#define SUMMARY_INTERVAL_US 1000000

static const char *const level_names[] = {"error", "warn", "info", "debug"};
static const int level_severity[] = {PT_SEV_ERR, PT_SEV_WARNING, PT_SEV_INFO, PT_SEV_DEBUG};

typedef struct {
    const char *kind;      /* NULL = free slot */
    pt_elog_level level;   /* of the last suppressed event (for the summary line) */
    double tokens;
    uint64_t last_us;      /* last refill (monotonic) */
    uint64_t suppressed;   /* since the last summary */
    uint64_t last_summary_us;
} bucket;

static struct {
    pthread_mutex_t mu;
    bucket b[MAX_KINDS];
    uint32_t burst, per_second;
    bool json;
    pt_log_dest dest; /* what the writer has open (strings owned by the config that set it) */
    bool open;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .burst = 10, .per_second = 1};

static atomic_int g_level = PT_ELOG_WARN;
static atomic_bool g_json;
static atomic_uint_fast64_t g_suppressed;

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int pt_elog_configure(const pt_config *cfg)
{
    const pt_log_dest *d = &cfg->error_log.dest;
    if (!g.open) {
        if (pt_logwriter_open(PT_LOG_ERROR, d) != PT_OK) return PT_ERR;
        g.open = true;
    } else if (!pt_log_dest_same(&g.dest, d)) {
        if (pt_logwriter_switch(PT_LOG_ERROR, d) != PT_OK) return PT_ERR;
    }
    g.dest = *d; /* only compared with pt_log_dest_same while this config lives */
    pthread_mutex_lock(&g.mu);
    g.burst = cfg->error_log.burst;
    g.per_second = cfg->error_log.per_second;
    for (int i = 0; i < MAX_KINDS; i++)
        if (g.b[i].tokens > g.burst) g.b[i].tokens = g.burst;
    pthread_mutex_unlock(&g.mu);
    atomic_store(&g_level, (int)cfg->error_log.level);
    atomic_store(&g_json, cfg->error_log.json);
    return PT_OK;
}

void pt_elog_close(void)
{
    pt_elog_tick();
    pt_logwriter_close(PT_LOG_ERROR);
    g.open = false;
    g.dest = (pt_log_dest){0};
}

bool pt_elog_enabled(pt_elog_level level) { return (int)level <= atomic_load_explicit(&g_level, memory_order_relaxed); }

uint64_t pt_elog_suppressed_total(void) { return atomic_load(&g_suppressed); }

/* ------------------------------------------------------------ format */

typedef struct {
    char *p, *end;
    bool json, first;
} line_out;

static void put_raw(line_out *o, const char *s, size_t n)
{
    if (n > (size_t)(o->end - o->p)) n = (size_t)(o->end - o->p);
    memcpy(o->p, s, n);
    o->p += n;
}

/* key=value (text) or "key":"value" (json); `quote` false for values that
 * are known safe and bare (level, time). Reserves `keep` bytes at the end
 * for what must follow. */
static void put_field(line_out *o, const char *key, pt_str v, bool always_quote, size_t keep)
{
    if (!o->first) put_raw(o, o->json ? "," : " ", 1);
    o->first = false;
    if (o->json) put_raw(o, "\"", 1);
    put_raw(o, key, strlen(key));
    put_raw(o, o->json ? "\":\"" : "=", o->json ? 3 : 1);
    bool quote = !o->json && always_quote;
    if (quote) put_raw(o, "\"", 1);
    size_t tail = keep + 1 + (quote || o->json ? 1 : 0);
    size_t room = (size_t)(o->end - o->p) > tail ? (size_t)(o->end - o->p) - tail : 0;
    o->p += o->json ? pt_json_escape_bounded(o->p, room, v.p, v.n, NULL) : pt_logfmt_escape_bounded(o->p, room, v.p, v.n);
    if (quote || o->json) put_raw(o, "\"", 1);
}

/* A text value needs quotes unless it is non-empty printable ASCII without
 * space, '"', '=' or '\'. */
static bool text_needs_quotes(pt_str s)
{
    if (!s.n) return true;
    for (size_t i = 0; i < s.n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (c <= 0x20 || c >= 0x7f || c == '"' || c == '=' || c == '\\') return true;
    }
    return false;
}

size_t pt_elog_format(char *out, size_t cap, bool json, uint64_t time_us, pt_elog_level level, const char *kind,
                      const pt_elog_ctx *ctx, const char *msg)
{
    if (cap < 512) return 0;
    line_out o = {.p = out, .end = out + cap - 2 /* "}\n" */, .json = json, .first = true};
    if (json) put_raw(&o, "{", 1);
    char ts[32];
    size_t tn = (size_t)(pt_log_put_time(ts, time_us) - ts);
    put_field(&o, "time", pt_str_make(ts, tn), false, 0);
    put_field(&o, "level", pt_str_c(level_names[(unsigned)level < 4 ? level : 0]), false, 0);
    char wbuf[16];
    if (ctx && ctx->worker >= 0) {
        int wn = snprintf(wbuf, sizeof(wbuf), "%d", ctx->worker);
        put_field(&o, "worker", pt_str_make(wbuf, (size_t)wn), false, 0);
    }
    pt_str k = pt_str_c(kind ? kind : "event");
    put_field(&o, "kind", k, text_needs_quotes(k), 0);
    /* the message is kept whole when it can be: context values get at most
     * 256 bytes each */
    size_t keep = PT_MIN(strlen(msg), (size_t)MSG_MAX) + 8;
    if (ctx) {
        struct {
            const char *key;
            pt_str v;
        } f[] = {{"route", ctx->route},     {"upstream", ctx->upstream},     {"target", ctx->target},
                 {"request_id", ctx->request_id}, {"client", ctx->client}};
        for (size_t i = 0; i < PT_ARRAY_LEN(f); i++) {
            if (!f[i].v.n) continue;
            pt_str v = pt_str_make(f[i].v.p, PT_MIN(f[i].v.n, (size_t)256));
            put_field(&o, f[i].key, v, text_needs_quotes(v), keep);
        }
    }
    put_field(&o, "msg", pt_str_c(msg), true, 0);
    o.end = out + cap;
    if (json) put_raw(&o, "}", 1);
    put_raw(&o, "\n", 1);
    return (size_t)(o.p - out);
}

/* ------------------------------------------------------------ events */

static void emit(pt_elog_level level, const char *kind, const pt_elog_ctx *ctx, const char *msg)
{
    char line[LINE_MAX_BYTES];
    size_t n = pt_elog_format(line, sizeof(line), atomic_load(&g_json), pt_log_now_us(), level, kind, ctx, msg);
    if (!n) return;
    if (pt_logwriter_is_open(PT_LOG_ERROR)) {
        pt_logwriter_write(PT_LOG_ERROR, level_severity[level], line, n);
    } else {
        ssize_t w = write(STDERR_FILENO, line, n); /* no writer (check, tests): nothing to block */
        (void)w;
    }
}

/* The bucket of `kind` (created on first use). Under g.mu. */
static bucket *bucket_of(const char *kind, uint64_t now)
{
    bucket *free_slot = NULL;
    for (int i = 0; i < MAX_KINDS; i++) {
        if (g.b[i].kind && (g.b[i].kind == kind || strcmp(g.b[i].kind, kind) == 0)) return &g.b[i];
        if (!g.b[i].kind && !free_slot) free_slot = &g.b[i];
    }
    if (!free_slot) free_slot = &g.b[MAX_KINDS - 1]; /* more kinds than slots: the last is shared */
    if (!free_slot->kind) *free_slot = (bucket){.kind = kind, .tokens = g.burst, .last_us = now};
    return free_slot;
}

void pt_elog(pt_elog_level level, const char *kind, const pt_elog_ctx *ctx, const char *fmt, ...)
{
    if (!pt_elog_enabled(level)) return;
    if (!kind) kind = "event";
    uint64_t now = mono_us();
    pthread_mutex_lock(&g.mu);
    bucket *b = bucket_of(kind, now);
    b->tokens += (double)(now - b->last_us) / 1e6 * g.per_second;
    if (b->tokens > g.burst) b->tokens = g.burst;
    b->last_us = now;
    bool pass = b->tokens >= 1.0;
    if (pass) b->tokens -= 1.0;
    else {
        b->suppressed++;
        b->level = level;
    }
    pthread_mutex_unlock(&g.mu);
    if (!pass) {
        atomic_fetch_add(&g_suppressed, 1);
        return;
    }
    char msg[MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    emit(level, kind, ctx, msg);
}

void pt_elog_tick(void)
{
    typedef struct {
        const char *kind;
        pt_elog_level level;
        uint64_t n;
    } summary;
    summary due[MAX_KINDS];
    size_t nd = 0;
    uint64_t now = mono_us();
    pthread_mutex_lock(&g.mu);
    for (int i = 0; i < MAX_KINDS; i++) {
        bucket *b = &g.b[i];
        if (!b->kind || !b->suppressed || now - b->last_summary_us < SUMMARY_INTERVAL_US) continue;
        due[nd++] = (summary){b->kind, b->level, b->suppressed};
        b->suppressed = 0;
        b->last_summary_us = now;
    }
    pthread_mutex_unlock(&g.mu);
    for (size_t i = 0; i < nd; i++) {
        char msg[128];
        snprintf(msg, sizeof(msg), "suppressed %llu similar messages", (unsigned long long)due[i].n);
        emit(due[i].level, due[i].kind, &(pt_elog_ctx){.worker = -1}, msg);
    }
}
