/* accesslog.c — see accesslog.h: the access log's line format (columns,
 * json/logfmt, escaping, truncation), sampling, and the path-based API over
 * the PT_LOG_ACCESS writer (obs/logwriter.c). */
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
#include "obs/logwriter.h"

/* The access log is writer PT_LOG_ACCESS (obs/logwriter.c); these keep
 * the path-based API the server and the tests use. */
static pt_log_dest path_dest(const char *path)
{
    bool out = strcmp(path, "stdout") == 0;
    return (pt_log_dest){.sink = out ? PT_LOG_SINK_STDOUT : PT_LOG_SINK_FILE, .path = path, .msgid = "access"};
}

int pt_accesslog_open(const char *path)
{
    pt_log_dest d = path_dest(path);
    return pt_logwriter_open(PT_LOG_ACCESS, &d);
}

int pt_accesslog_open_dest(const pt_log_dest *dest) { return pt_logwriter_open(PT_LOG_ACCESS, dest); }

void pt_accesslog_write(const char *line, size_t len) { pt_logwriter_write(PT_LOG_ACCESS, PT_SEV_INFO, line, len); }

void pt_accesslog_flush(void) { pt_logwriter_flush(PT_LOG_ACCESS); }

void pt_accesslog_request_reopen(void) { pt_logwriter_request_reopen(PT_LOG_ACCESS); }

void pt_accesslog_reopen(void) { pt_accesslog_request_reopen(); }

int pt_accesslog_switch(const char *path)
{
    pt_log_dest d = path_dest(path);
    return pt_logwriter_switch(PT_LOG_ACCESS, &d);
}

int pt_accesslog_switch_dest(const pt_log_dest *dest) { return pt_logwriter_switch(PT_LOG_ACCESS, dest); }

void pt_accesslog_close(void) { pt_logwriter_close(PT_LOG_ACCESS); }

uint64_t pt_accesslog_dropped(void) { return pt_logwriter_dropped(PT_LOG_ACCESS); }

/* ---------------------------------------------------------------- format */

#define put_time pt_log_put_time

static char *put_digits(char *p, unsigned v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return p + width;
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
    return (uint64_t)((double)n * ratio) > (uint64_t)((double)(n - 1) * ratio); /* >= 0: truncation is floor */
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
        } else if (c >= 0x80 && (take = pt_utf8_seq(p + i, n - i)) > 0) {
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
