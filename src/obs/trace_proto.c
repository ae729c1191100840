/* trace_proto.c — the OTLP protobuf encoding of spans (trace.h), written
 * straight from pt_span in one pass: each attribute's nested lengths are
 * known from its key and value before it is written (protobuf puts a
 * length before each message); the span's own length goes in 4 bytes kept
 * in front, and the span moves up against it when it needs fewer. The schema is
 * fixed (opentelemetry/proto/trace/v1 and common/v1): only the fields
 * Portico sets are written.
 *
 *   ExportTraceServiceRequest { 1: ResourceSpans }
 *   ResourceSpans  { 1: Resource { 1: KeyValue "service.name" }, 2: ScopeSpans }
 *   ScopeSpans     { 1: InstrumentationScope { 1: "portico" }, 2: Span ... }
 *   Span           { 1: trace_id, 2: span_id, 4: parent_span_id, 5: name,
 *                    6: kind, 7: start (fixed64), 8: end (fixed64),
 *                    9: KeyValue ..., 15: Status { 2: message, 3: code } }
 *   KeyValue       { 1: key, 2: AnyValue { 1: string_value | 3: int_value } }
 *
 * Protobuf strings must be UTF-8: a value that is not (a header may carry
 * any byte) has each invalid byte replaced by U+FFFD, so one odd
 * User-Agent cannot get a whole batch refused. */
#include "obs/trace.h"

#include <stdlib.h>

/* wire types */
enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2 };
#define TAG(field, wt) ((uint8_t)((field) << 3 | (wt)))

static inline size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static inline uint8_t *w_varint(uint8_t *o, uint64_t v)
{
    while (v >= 0x80) {
        *o++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *o++ = (uint8_t)v;
    return o;
}

static inline uint8_t *w_fixed64(uint8_t *o, uint64_t v)
{
    for (int i = 0; i < 8; i++) o[i] = (uint8_t)(v >> (8 * i));
    return o + 8;
}

/* ---- UTF-8 ---- */

static bool all_ascii(const uint8_t *p, size_t n)
{
    const uint64_t high = 0x8080808080808080ull;
    uint64_t acc = 0, x;
    if (n >= 8) { /* whole words, then the last 8 bytes (overlapping) */
        for (size_t i = 0; i + 8 <= n; i += 8) {
            memcpy(&x, p + i, 8);
            acc |= x;
        }
        memcpy(&x, p + n - 8, 8);
        return !((acc | x) & high);
    }
    if (n >= 4) { /* two overlapping words */
        uint32_t a, b;
        memcpy(&a, p, 4);
        memcpy(&b, p + n - 4, 4);
        return !((a | b) & 0x80808080u);
    }
    for (size_t i = 0; i < n; i++) acc |= p[i];
    return !(acc & high);
}

/* Bytes the string takes once invalid bytes become U+FFFD (3 bytes). */
static size_t utf8_clean_len(pt_str s)
{
    const uint8_t *p = (const uint8_t *)s.p;
    if (all_ascii(p, s.n)) return s.n;
    size_t out = 0;
    for (size_t i = 0; i < s.n;) {
        size_t k = pt_utf8_seq(p + i, s.n - i);
        out += k ? k : 3;
        i += k ? k : 1;
    }
    return out;
}

static uint8_t *w_utf8_clean(uint8_t *o, pt_str s, size_t clean_len)
{
    if (clean_len == s.n) { /* valid as it is (a replacement always grows) */
        if (s.n) memcpy(o, s.p, s.n); /* an empty string may have no pointer */
        return o + s.n;
    }
    const uint8_t *p = (const uint8_t *)s.p;
    for (size_t i = 0; i < s.n;) {
        size_t k = pt_utf8_seq(p + i, s.n - i);
        if (k) {
            memcpy(o, p + i, k);
            o += k;
            i += k;
        } else {
            *o++ = 0xef, *o++ = 0xbf, *o++ = 0xbd;
            i++;
        }
    }
    return o;
}

/* ---- the span, in one pass ---- */

/* a length-delimited field: tag, length, bytes */
static inline size_t field_len(size_t n) { return 1 + varint_len(n) + n; }

static inline uint8_t *w_len_field(uint8_t *o, uint8_t tag, size_t n)
{
    *o++ = tag;
    return w_varint(o, n);
}

static inline uint8_t *w_bytes_field(uint8_t *o, uint8_t tag, const void *p, size_t n)
{
    o = w_len_field(o, tag, n);
    memcpy(o, p, n);
    return o + n;
}

/* A string field, cleaned to UTF-8. */
static inline uint8_t *w_str_field(uint8_t *o, uint8_t tag, pt_str v)
{
    size_t n = utf8_clean_len(v);
    o = w_len_field(o, tag, n);
    return w_utf8_clean(o, v, n);
}

/* Room for the span's own length: 4 bytes of varint (spans < 256 MiB; a
 * request head is at most a few hundred KiB). */
#define SPAN_LEN_ROOM 4

size_t pt_span_proto_bound(const pt_span *s)
{
    /* framing, ids, kind and times < 128 bytes; strings at most 3x (every
     * byte invalid: U+FFFD); per attribute < 32 bytes of framing */
    size_t n = 128 + 3 * s->name.n + 3 * s->status_message.n;
    for (size_t i = 0; i < s->nattrs; i++)
        n += 32 + s->attrs[i].key_n + (s->attrs[i].is_int ? 0 : 3 * s->attrs[i].str.n);
    return n;
}

size_t pt_span_proto_write(char *out, const pt_span *s)
{
    uint8_t *base = (uint8_t *)out, *body = base + 1 + SPAN_LEN_ROOM, *o = body;
    o = w_bytes_field(o, TAG(1, WT_LEN), s->trace_id, 16);
    o = w_bytes_field(o, TAG(2, WT_LEN), s->span_id, 8);
    if (s->has_parent) o = w_bytes_field(o, TAG(4, WT_LEN), s->parent_id, 8);
    o = w_str_field(o, TAG(5, WT_LEN), s->name);
    *o++ = TAG(6, WT_VARINT);
    o = w_varint(o, (uint64_t)s->kind);
    *o++ = TAG(7, WT_I64);
    o = w_fixed64(o, s->start_ns);
    *o++ = TAG(8, WT_I64);
    o = w_fixed64(o, s->end_ns);
    for (size_t i = 0; i < s->nattrs; i++) {
        const pt_span_attr *a = &s->attrs[i];
        size_t vn = 0, av; /* AnyValue's length */
        if (a->is_int) {
            av = 1 + varint_len((uint64_t)a->num);
        } else {
            vn = utf8_clean_len(a->str);
            av = field_len(vn);
        }
        o = w_len_field(o, TAG(9, WT_LEN), field_len(a->key_n) + field_len(av)); /* KeyValue */
        o = w_bytes_field(o, TAG(1, WT_LEN), a->key, a->key_n);
        o = w_len_field(o, TAG(2, WT_LEN), av);
        if (a->is_int) {
            *o++ = TAG(3, WT_VARINT);
            o = w_varint(o, (uint64_t)a->num); /* int64: two's complement, 10 bytes when negative */
        } else {
            o = w_len_field(o, TAG(1, WT_LEN), vn);
            o = w_utf8_clean(o, a->str, vn);
        }
    }
    if (s->status != PT_SPAN_STATUS_UNSET) {
        size_t mn = s->status_message.n ? utf8_clean_len(s->status_message) : 0;
        o = w_len_field(o, TAG(15, WT_LEN), (mn ? field_len(mn) : 0) + 1 + varint_len((uint64_t)s->status));
        if (mn) {
            o = w_len_field(o, TAG(2, WT_LEN), mn);
            o = w_utf8_clean(o, s->status_message, mn);
        }
        *o++ = TAG(3, WT_VARINT);
        o = w_varint(o, (uint64_t)s->status);
    }
    /* the span's length in front, and the body moved up against it */
    size_t n = (size_t)(o - body), vl = varint_len(n);
    PT_ASSERT(vl <= SPAN_LEN_ROOM);
    base[0] = TAG(2, WT_LEN);
    w_varint(base + 1, n);
    if (vl < SPAN_LEN_ROOM) memmove(base + 1 + vl, body, n);
    return 1 + vl + n;
}

char *pt_span_proto_encode(const pt_span *s, size_t *len)
{
    char *out = pt_xmalloc(pt_span_proto_bound(s));
    *len = pt_span_proto_write(out, s);
    return out;
}

void pt_span_proto(pt_trace_buf *b, const pt_span *s)
{
    size_t n;
    char *p = pt_span_proto_encode(s, &n);
    pt_trace_buf_put(b, p, n);
    free(p);
}

/* ---- the request around the spans ---- */

#define SCOPE_NAME "portico"

void pt_trace_proto_open(pt_trace_buf *b, const char *service_name, size_t spans_len)
{
    pt_str svc_raw = pt_str_c(service_name);
    size_t svc = utf8_clean_len(svc_raw);
    size_t scope = field_len(sizeof(SCOPE_NAME) - 1);            /* InstrumentationScope { 1: name } */
    size_t ss = field_len(scope) + spans_len;                    /* ScopeSpans */
    size_t value = field_len(svc);                               /* AnyValue { 1: string_value } */
    size_t kv = field_len(sizeof("service.name") - 1) + field_len(value);
    size_t res = field_len(kv);                                  /* Resource { 1: KeyValue } */
    size_t rs = field_len(res) + field_len(ss);                  /* ResourceSpans */
    uint8_t *head = pt_xmalloc(96 + svc); /* tags and lengths: < 96 bytes */
    uint8_t *o = w_len_field(head, TAG(1, WT_LEN), rs);         /* ExportTraceServiceRequest.resource_spans */
    o = w_len_field(o, TAG(1, WT_LEN), res);
    o = w_len_field(o, TAG(1, WT_LEN), kv);
    o = w_bytes_field(o, TAG(1, WT_LEN), "service.name", sizeof("service.name") - 1);
    o = w_len_field(o, TAG(2, WT_LEN), value);
    o = w_len_field(o, TAG(1, WT_LEN), svc);
    o = w_utf8_clean(o, svc_raw, svc);
    o = w_len_field(o, TAG(2, WT_LEN), ss);
    o = w_len_field(o, TAG(1, WT_LEN), scope);
    o = w_bytes_field(o, TAG(1, WT_LEN), SCOPE_NAME, sizeof(SCOPE_NAME) - 1);
    size_t hn = (size_t)(o - head);
    PT_ASSERT(hn + spans_len == field_len(rs));
    pt_trace_buf_put(b, (const char *)head, hn);
    free(head);
}

void pt_trace_proto_body(pt_trace_buf *b, const char *service_name, const pt_str *spans, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += spans[i].n;
    pt_trace_proto_open(b, service_name, total);
    for (size_t i = 0; i < n; i++) pt_trace_buf_put(b, spans[i].p, spans[i].n);
}
