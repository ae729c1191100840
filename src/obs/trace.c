/* trace.c — W3C Trace Context parsing, ids, sampling, and the OTLP JSON
 * encoding of spans (trace.h). The exporter is trace_export.c. */
#include "obs/trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>

#include "http/problem.h"

/* ------------------------------------------------------------ hex and ids */

static int hexval_lower(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1; /* uppercase is invalid in traceparent */
}

/* Decodes 2n lowercase hex chars into out[0..n); false on any other char. */
static bool unhex(const char *p, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hexval_lower(p[2 * i]), lo = hexval_lower(p[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++) acc |= p[i];
    return acc == 0;
}

/* "000102...ff": the two hex digits of every byte value. */
static const char HEX_PAIRS[513] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

void pt_trace_hex(char *out, const uint8_t *in, size_t n)
{
    for (size_t i = 0; i < n; i++) memcpy(out + 2 * i, HEX_PAIRS + 2 * in[i], 2);
}

bool pt_traceparent_parse(pt_str v, pt_trace_parent *out)
{
    if (v.n < PT_TRACEPARENT_LEN) return false;
    const char *p = v.p;
    uint8_t version;
    if (!unhex(p, &version, 1) || version == 0xff) return false;
    if (version == 0 && v.n != PT_TRACEPARENT_LEN) return false; /* no extra fields in version 00 */
    if (version > 0 && v.n > PT_TRACEPARENT_LEN && p[PT_TRACEPARENT_LEN] != '-') return false;
    if (p[2] != '-' || p[35] != '-' || p[52] != '-') return false;
    pt_trace_parent tp;
    if (!unhex(p + 3, tp.trace_id, 16) || !unhex(p + 36, tp.span_id, 8) || !unhex(p + 53, &tp.flags, 1))
        return false;
    if (all_zero(tp.trace_id, 16) || all_zero(tp.span_id, 8)) return false;
    if (version > 0) tp.flags &= 1; /* only the flags this version defines */
    *out = tp;
    return true;
}

void pt_traceparent_format(char *out, const uint8_t trace_id[16], const uint8_t span_id[8], bool sampled)
{
    char hex[32];
    pt_trace_hex(hex, trace_id, 16);
    pt_traceparent_format_hex(out, hex, span_id, sampled);
}

void pt_traceparent_format_hex(char *out, const char *trace_hex, const uint8_t span_id[8], bool sampled)
{
    out[0] = '0';
    out[1] = '0';
    out[2] = '-';
    memcpy(out + 3, trace_hex, 32);
    out[35] = '-';
    pt_trace_hex(out + 36, span_id, 8);
    out[52] = '-';
    out[53] = '0';
    out[54] = sampled ? '1' : '0';
}

/* ------------------------------------------------------------- tracestate */

static bool key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '*' || c == '/';
}

/* key = simple-key / tenant-id "@" system-id (W3C Trace Context §3.3.1.3.1) */
static bool ts_key_ok(pt_str k)
{
    if (!k.n) return false;
    const char *at = memchr(k.p, '@', k.n);
    if (!at) {
        if (k.n > 256 || !(k.p[0] >= 'a' && k.p[0] <= 'z')) return false;
        for (size_t i = 1; i < k.n; i++)
            if (!key_char(k.p[i])) return false;
        return true;
    }
    size_t tn = (size_t)(at - k.p), sn = k.n - tn - 1;
    if (tn == 0 || tn > 241 || sn == 0 || sn > 14) return false;
    if (!((k.p[0] >= 'a' && k.p[0] <= 'z') || (k.p[0] >= '0' && k.p[0] <= '9'))) return false;
    for (size_t i = 1; i < tn; i++)
        if (!key_char(k.p[i])) return false;
    if (!(at[1] >= 'a' && at[1] <= 'z')) return false;
    for (size_t i = 2; i <= sn; i++)
        if (!key_char(at[i])) return false;
    return true;
}

/* value = 0*255(chr) nblk-chr: printable ASCII except ',' and '=', not
 * ending in a space */
static bool ts_value_ok(pt_str v)
{
    if (!v.n || v.n > 256 || v.p[v.n - 1] == ' ') return false;
    for (size_t i = 0; i < v.n; i++) {
        unsigned char c = (unsigned char)v.p[i];
        if (c < 0x20 || c > 0x7e || c == ',' || c == '=') return false;
    }
    return true;
}

pt_str pt_tracestate_filter(pt_arena *a, pt_str v)
{
    if (!v.n) return PT_STR_NULL; /* an empty value may have no pointer */
    pt_str mem[PT_TRACESTATE_MAX_MEMBERS];
    size_t n = 0, total = 0;
    size_t i = 0;
    while (i <= v.n) {
        size_t j = i;
        while (j < v.n && v.p[j] != ',') j++;
        pt_str m = pt_str_make(v.p + i, j - i);
        while (m.n && (m.p[0] == ' ' || m.p[0] == '\t')) m.p++, m.n--;
        while (m.n && (m.p[m.n - 1] == ' ' || m.p[m.n - 1] == '\t')) m.n--;
        i = j + 1;
        if (!m.n) continue; /* empty members are allowed and dropped */
        const char *eq = memchr(m.p, '=', m.n);
        if (!eq || n == PT_TRACESTATE_MAX_MEMBERS) return PT_STR_NULL;
        pt_str key = pt_str_make(m.p, (size_t)(eq - m.p));
        pt_str val = pt_str_make(eq + 1, m.n - key.n - 1);
        if (!ts_key_ok(key) || !ts_value_ok(val)) return PT_STR_NULL;
        for (size_t k = 0; k < n; k++) {
            const char *e = memchr(mem[k].p, '=', mem[k].n);
            if ((size_t)(e - mem[k].p) == key.n && memcmp(mem[k].p, key.p, key.n) == 0) return PT_STR_NULL;
        }
        mem[n++] = m;
        total += m.n;
    }
    if (!n) return PT_STR_NULL;
    total += n - 1; /* commas */
    bool keep[PT_TRACESTATE_MAX_MEMBERS];
    for (size_t k = 0; k < n; k++) keep[k] = true;
    /* Over the limit: members longer than 128 bytes first, then from the end. */
    for (size_t k = 0; k < n && total > PT_TRACESTATE_MAX; k++)
        if (mem[k].n > 128) keep[k] = false, total -= mem[k].n + 1;
    for (size_t k = n; k-- > 0 && total > PT_TRACESTATE_MAX;)
        if (keep[k]) keep[k] = false, total -= mem[k].n + 1;
    char *out = pt_arena_alloc(a, v.n + 1), *o = out;
    for (size_t k = 0; k < n; k++) {
        if (!keep[k]) continue;
        if (o != out) *o++ = ',';
        memcpy(o, mem[k].p, mem[k].n);
        o += mem[k].n;
    }
    return pt_str_make(out, (size_t)(o - out));
}

/* ---------------------------------------------------------------- random */

uint64_t pt_trace_rand64(void) { return pt_rand64(); }

void pt_trace_new_id(uint8_t *id, size_t n)
{
    PT_ASSERT(n % 8 == 0);
    for (;;) {
        uint64_t acc = 0;
        for (size_t i = 0; i < n; i += 8) {
            uint64_t r = pt_trace_rand64();
            memcpy(id + i, &r, 8);
            acc |= r;
        }
        if (acc) return;
    }
}

bool pt_trace_ratio_sampled(const uint8_t trace_id[16], double ratio)
{
    if (ratio >= 1.0) return true;
    if (ratio <= 0.0) return false;
    uint64_t x = 0;
    for (int i = 8; i < 16; i++) x = x << 8 | trace_id[i];
    uint64_t bound = (uint64_t)(ratio * 9223372036854775808.0); /* ratio * 2^63 */
    return (x >> 1) < bound;
}

/* ----------------------------------------------------------------- spans */

/* Room for n more bytes (a span usually fits the first 1 KiB). */
static inline void reserve(pt_trace_buf *b, size_t n)
{
    if (__builtin_expect(b->n + n <= b->cap, 1)) return;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->n + n) cap *= 2;
    b->p = pt_xrealloc(b->p, cap);
    b->cap = cap;
}

void pt_trace_buf_put(pt_trace_buf *b, const char *p, size_t n)
{
    reserve(b, n);
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

void pt_trace_buf_free(pt_trace_buf *b)
{
    free(b->p);
    *b = (pt_trace_buf){0};
}

#define PUT_LIT(b, lit) pt_trace_buf_put((b), (lit), sizeof(lit) - 1)

/* A JSON string's inside (escaped) into a buffer. */
static void put_escaped(pt_trace_buf *b, const char *p, size_t n)
{
    reserve(b, 6 * n);
    b->n += pt_json_escape(b->p + b->n, p, n);
}

/* ---- span encoding: straight writes into a buffer sized beforehand ---- */

#define W_LIT(p, lit) (memcpy((p), (lit), sizeof(lit) - 1), (p) + sizeof(lit) - 1)

/* The inside of a JSON string: printable ASCII without '"' and '\' (nearly
 * every value) is copied as is; anything else goes through the escaper.
 * Needs 6n bytes of room. */
/* Eight bytes at a time (SWAR): a nonzero result when any byte of x is a
 * control character, DEL or above, '"' or '\\'. */
static inline uint64_t needs_escape8(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    uint64_t ctl = (x - ones * 0x20) & ~x;           /* bytes < 0x20 (high bit clear) */
    uint64_t del = (x + ones * 0x01) & high;         /* bytes >= 0x7f (0x7f+1 sets the high bit) */
    uint64_t q = x ^ (ones * '"'), bs = x ^ (ones * '\\');
    uint64_t quote = (q - ones) & ~q, back = (bs - ones) & ~bs; /* zero bytes: '"' or '\\' */
    return ((ctl | quote | back) & high) | del | (x & high);
}

static char *w_escaped(char *o, const char *p, size_t n)
{
    if (!n) return o;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, p + i, 8);
        if (needs_escape8(x)) return o + pt_json_escape(o, p, n);
    }
    for (; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') return o + pt_json_escape(o, p, n);
    }
    memcpy(o, p, n);
    return o + n;
}

static char *w_hex(char *o, const uint8_t *id, size_t n)
{
    pt_trace_hex(o, id, n);
    return o + 2 * n;
}

/* "00".."99" */
static const char DEC_PAIRS[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

static char *w_u64(char *o, uint64_t v)
{
    char d[20], *e = d + sizeof(d), *q = e;
    while (v >= 100) {
        q -= 2;
        memcpy(q, DEC_PAIRS + 2 * (v % 100), 2);
        v /= 100;
    }
    if (v >= 10) {
        q -= 2;
        memcpy(q, DEC_PAIRS + 2 * v, 2);
    } else {
        *--q = (char)('0' + v);
    }
    memcpy(o, q, (size_t)(e - q));
    return o + (e - q);
}

static char *w_i64(char *o, int64_t v)
{
    if (v >= 0) return w_u64(o, (uint64_t)v);
    *o++ = '-';
    return w_u64(o, (uint64_t)0 - (uint64_t)v);
}

size_t pt_span_json_bound(const pt_span *s)
{
    /* fixed text and ids < 256, numbers 20 digits, strings 6x */
    size_t bound = 256 + 6 * s->name.n + 6 * s->status_message.n;
    for (size_t i = 0; i < s->nattrs; i++) {
        const pt_span_attr *a = &s->attrs[i];
        bound += 48 + a->key_n + (a->is_int ? 21 : 6 * a->str.n);
    }
    return bound;
}

void pt_span_json(pt_trace_buf *b, const pt_span *s)
{
    reserve(b, pt_span_json_bound(s));
    b->n += pt_span_json_write(b->p + b->n, s);
    PT_ASSERT(b->n <= b->cap);
}

size_t pt_span_json_write(char *out, const pt_span *s)
{
    char *o = out;
    o = W_LIT(o, "{\"traceId\":\"");
    o = w_hex(o, s->trace_id, 16);
    o = W_LIT(o, "\",\"spanId\":\"");
    o = w_hex(o, s->span_id, 8);
    if (s->has_parent) {
        o = W_LIT(o, "\",\"parentSpanId\":\"");
        o = w_hex(o, s->parent_id, 8);
    }
    o = W_LIT(o, "\",\"name\":\"");
    o = w_escaped(o, s->name.p, s->name.n);
    o = W_LIT(o, "\",\"kind\":");
    o = w_u64(o, (uint64_t)s->kind);
    o = W_LIT(o, ",\"startTimeUnixNano\":\"");
    o = w_u64(o, s->start_ns);
    o = W_LIT(o, "\",\"endTimeUnixNano\":\"");
    o = w_u64(o, s->end_ns);
    o = W_LIT(o, "\",\"attributes\":[");
    for (size_t i = 0; i < s->nattrs; i++) {
        const pt_span_attr *a = &s->attrs[i];
        if (i) *o++ = ',';
        o = W_LIT(o, "{\"key\":\"");
        memcpy(o, a->key, a->key_n); /* static names: nothing to escape */
        o += a->key_n;
        if (a->is_int) {
            o = W_LIT(o, "\",\"value\":{\"intValue\":\"");
            o = w_i64(o, a->num);
        } else {
            o = W_LIT(o, "\",\"value\":{\"stringValue\":\"");
            o = w_escaped(o, a->str.p, a->str.n);
        }
        o = W_LIT(o, "\"}}");
    }
    o = W_LIT(o, "],\"status\":{");
    if (s->status != PT_SPAN_STATUS_UNSET) {
        o = W_LIT(o, "\"code\":");
        o = w_u64(o, (uint64_t)s->status);
        if (s->status_message.n) {
            o = W_LIT(o, ",\"message\":\"");
            o = w_escaped(o, s->status_message.p, s->status_message.n);
            *o++ = '"';
        }
    }
    o = W_LIT(o, "}}");
    return (size_t)(o - out);
}

void pt_trace_export_open(pt_trace_buf *b, const char *service_name)
{
    PUT_LIT(b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":"
               "{\"stringValue\":\"");
    put_escaped(b, service_name, strlen(service_name));
    PUT_LIT(b, "\"}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"portico\"},\"spans\":[");
}

void pt_trace_export_close(pt_trace_buf *b) { PUT_LIT(b, "]}]}]}"); }

void pt_trace_export_body(pt_trace_buf *b, const char *service_name, const pt_str *spans, size_t n)
{
    pt_trace_export_open(b, service_name);
    for (size_t i = 0; i < n; i++) {
        if (i) PUT_LIT(b, ",");
        pt_trace_buf_put(b, spans[i].p, spans[i].n);
    }
    pt_trace_export_close(b);
}
