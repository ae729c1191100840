/* fuzz_trace.c — libFuzzer driver for the tracing encoders and parsers of
 * obs/trace*.c. The input is cut at NUL bytes into a traceparent value, a
 * tracestate value, a span name, two attribute values and a status
 * message. Besides crashes, leaks and UB, the driver aborts when a
 * contract breaks:
 *  - a traceparent that parses formats back (version 00) to the same text;
 *  - a filtered tracestate is at most 512 bytes and filtering it again
 *    changes nothing;
 *  - the protobuf span fits its bound, and walking its wire
 *    format finds well-formed fields whose strings (name, attribute keys
 *    and values, status message) are valid UTF-8 (checked by a decoder in
 *    this driver, not by Portico's code), and a value that was valid UTF-8
 *    is written unchanged;
 *  - the JSON span parses with jansson. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "obs/trace.h"

/* UTF-8 as RFC 3629 defines it, decoded to code points (a different
 * method from trace_proto.c's lead-byte tables): no overlong forms, no
 * surrogates, nothing above U+10FFFF. */
static bool utf8_ok(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint32_t c = p[i], min;
        size_t k;
        if (c < 0x80) { i++; continue; }
        if ((c & 0xe0) == 0xc0) k = 2, c &= 0x1f, min = 0x80;
        else if ((c & 0xf0) == 0xe0) k = 3, c &= 0x0f, min = 0x800;
        else if ((c & 0xf8) == 0xf0) k = 4, c &= 0x07, min = 0x10000;
        else return false;
        if (n - i < k) return false;
        for (size_t j = 1; j < k; j++) {
            if ((p[i + j] & 0xc0) != 0x80) return false;
            c = c << 6 | (p[i + j] & 0x3f);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return false;
        i += k;
    }
    return true;
}

static uint64_t rd_varint(const uint8_t **p, const uint8_t *end)
{
    uint64_t v = 0;
    for (int sh = 0; sh < 64; sh += 7) {
        if (*p >= end) __builtin_trap();
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << sh;
        if (!(b & 0x80)) return v;
    }
    __builtin_trap();
}

enum { M_SPAN, M_KEYVALUE, M_ANYVALUE, M_STATUS };

/* Walks a message of type `t`: every field well-formed, nested messages
 * walked, string fields valid UTF-8. */
static void walk(const uint8_t *p, const uint8_t *end, int t)
{
    while (p < end) {
        uint64_t key = rd_varint(&p, end);
        unsigned field = (unsigned)(key >> 3), wt = key & 7;
        if (wt == 0) {
            rd_varint(&p, end);
        } else if (wt == 1) {
            if (end - p < 8) __builtin_trap();
            p += 8;
        } else if (wt == 2) {
            uint64_t n = rd_varint(&p, end);
            if (n > (uint64_t)(end - p)) __builtin_trap();
            const uint8_t *q = p, *qe = p + n;
            if (t == M_SPAN && field == 9) walk(q, qe, M_KEYVALUE);
            else if (t == M_SPAN && field == 15) walk(q, qe, M_STATUS);
            else if (t == M_KEYVALUE && field == 2) walk(q, qe, M_ANYVALUE);
            else if ((t == M_SPAN && field == 5) || (t == M_KEYVALUE && field == 1) ||
                     (t == M_ANYVALUE && field == 1) || (t == M_STATUS && field == 2)) {
                if (!utf8_ok(q, (size_t)n)) __builtin_trap();
            } else if (!(t == M_SPAN && field <= 4)) { /* ids: bytes */
                __builtin_trap();
            }
            p = qe;
        } else {
            __builtin_trap();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192) return 0;
    pt_str part[6] = {{0}};
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= size && k < 6; i++)
        if (i == size || data[i] == 0) {
            part[k++] = pt_str_make((const char *)data + start, i - start);
            start = i + 1;
        }

    /* traceparent */
    pt_trace_parent tp;
    if (pt_traceparent_parse(part[0], &tp) && part[0].n == PT_TRACEPARENT_LEN && part[0].p[0] == '0' &&
        part[0].p[1] == '0') {
        char out[PT_TRACEPARENT_LEN];
        pt_traceparent_format(out, tp.trace_id, tp.span_id, tp.flags & 1);
        if (tp.flags <= 1 && memcmp(out, part[0].p, PT_TRACEPARENT_LEN) != 0) __builtin_trap();
    }

    /* tracestate */
    pt_arena *a = pt_arena_new(1024);
    pt_str ts = pt_tracestate_filter(a, part[1]);
    if (ts.n > PT_TRACESTATE_MAX) __builtin_trap();
    pt_str ts2 = pt_tracestate_filter(a, ts);
    if (ts2.n != ts.n || (ts.n && memcmp(ts2.p, ts.p, ts.n) != 0)) __builtin_trap();

    /* a span from the pieces */
    pt_span s = {0};
    memset(s.trace_id, 0xab, 16);
    memset(s.span_id, 0xcd, 8);
    s.has_parent = size & 1;
    s.name = part[2];
    s.kind = PT_SPAN_SERVER;
    s.start_ns = size * 1000003u;
    s.end_ns = s.start_ns + 17;
    pt_span_str(&s, "user_agent.original", part[3]);
    pt_span_int(&s, "http.response.status_code", (int64_t)size - 4096);
    pt_span_str(&s, "url.path", part[4]);
    if (part[5].n) {
        s.status = PT_SPAN_STATUS_ERROR;
        s.status_message = part[5];
    }
    size_t bound = pt_span_proto_bound(&s);
    uint8_t *buf = malloc(bound); /* exactly: ASan sees a write past the bound */
    size_t m = pt_span_proto_write((char *)buf, &s);
    if (m > bound) __builtin_trap();
    const uint8_t *p = buf, *end = buf + m;
    if (rd_varint(&p, end) != ((2 << 3) | 2)) __builtin_trap(); /* ScopeSpans.spans */
    uint64_t len = rd_varint(&p, end);
    if (len != (uint64_t)(end - p)) __builtin_trap();
    walk(p, end, M_SPAN);
    /* a valid UTF-8 name is written as it is */
    if (utf8_ok((const uint8_t *)part[2].p, part[2].n) && part[2].n &&
        !memmem(buf, m, part[2].p, part[2].n))
        __builtin_trap();
    free(buf);

    pt_trace_buf jb = {0};
    pt_span_json(&jb, &s);
    json_error_t err;
    json_t *j = json_loadb(jb.p, jb.n, 0, &err);
    if (!j) __builtin_trap();
    json_decref(j);
    pt_trace_buf_free(&jb);
    pt_arena_free(a);
    return 0;
}
