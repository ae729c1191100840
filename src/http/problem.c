/* problem.c — see problem.h. */
#include "http/problem.h"

#include <stdio.h>

#include "http/message.h"

const char *pt_problem_slug(int status)
{
    switch (status) {
    case 400: return "bad-request";
    case 401: return "unauthorized";
    case 403: return "forbidden";
    case 404: return "no-route";
    case 405: return "method-not-allowed";
    case 408: return "request-timeout";
    case 413: return "body-too-large";
    case 414: return "uri-too-long";
    case 417: return "expectation-failed";
    case 421: return "misdirected-request";
    case 429: return "rate-limited";
    case 431: return "headers-too-large";
    case 500: return "internal";
    case 501: return "not-implemented";
    case 502: return "bad-gateway";
    case 503: return "unavailable";
    case 504: return "gateway-timeout";
    case 505: return "version-not-supported";
    default: return "error";
    }
}

static const char hex_digits[] = "0123456789abcdef";

/* Escapes one unit starting at in[i]: writes its output to `tmp` (<= 6
 * bytes) and returns the output length; *in_len receives the number of
 * input bytes the unit covers. */
static size_t escape_unit(const unsigned char *in, size_t n, char tmp[6], size_t *in_len)
{
    unsigned char c = in[0];
    *in_len = 1;
    if (c >= 0x80) {
        size_t l = pt_utf8_seq(in, n);
        if (l) {
            memcpy(tmp, in, l);
            *in_len = l;
            return l;
        }
        memcpy(tmp, "\\ufffd", 6);
        return 6;
    }
    switch (c) {
    case '"': tmp[0] = '\\'; tmp[1] = '"'; return 2;
    case '\\': tmp[0] = '\\'; tmp[1] = '\\'; return 2;
    case '\n': tmp[0] = '\\'; tmp[1] = 'n'; return 2;
    case '\r': tmp[0] = '\\'; tmp[1] = 'r'; return 2;
    case '\t': tmp[0] = '\\'; tmp[1] = 't'; return 2;
    case '\b': tmp[0] = '\\'; tmp[1] = 'b'; return 2;
    case '\f': tmp[0] = '\\'; tmp[1] = 'f'; return 2;
    default: break;
    }
    if (c < 0x20) {
        memcpy(tmp, "\\u00", 4);
        tmp[4] = hex_digits[c >> 4];
        tmp[5] = hex_digits[c & 15];
        return 6;
    }
    tmp[0] = (char)c;
    return 1;
}

/* True for bytes that are copied verbatim (printable ASCII except '"' '\'). */
static inline bool plain_byte(unsigned char c) { return c >= 0x20 && c < 0x80 && c != '"' && c != '\\'; }

size_t pt_json_escape(char *out, const char *in, size_t n)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t o = 0, i = 0;
    while (i < n) {
        if (plain_byte(s[i])) {
            out[o++] = (char)s[i++];
            continue;
        }
        size_t used;
        char tmp[6];
        size_t w = escape_unit(s + i, n - i, tmp, &used);
        memcpy(out + o, tmp, w);
        o += w;
        i += used;
    }
    return o;
}

size_t pt_json_escape_bounded(char *out, size_t cap, const char *in, size_t n, size_t *consumed)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t o = 0, i = 0;
    while (i < n && o < cap) {
        if (plain_byte(s[i])) {
            out[o++] = (char)s[i++];
            continue;
        }
        size_t used;
        char tmp[6];
        size_t w = escape_unit(s + i, n - i, tmp, &used);
        if (w > cap - o) break;
        memcpy(out + o, tmp, w);
        o += w;
        i += used;
    }
    if (consumed) *consumed = i;
    return o;
}

/* Appends a C string literal part; `p` must have room (sized below). */
static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}
#define PUT_LIT(p, lit) put((p), (lit), sizeof(lit) - 1)

pt_str pt_problem_json(pt_arena *a, int status, const char *detail, pt_str request_id)
{
    return pt_problem_json_traced(a, status, detail, request_id, PT_STR_NULL);
}

pt_str pt_problem_json_traced(pt_arena *a, int status, const char *detail, pt_str request_id, pt_str trace_id)
{
    const char *slug = pt_problem_slug(status);
    const char *title = pt_status_reason(status);
    size_t detail_n = detail ? strlen(detail) : 0;
    size_t slug_n = strlen(slug), title_n = strlen(title);
    /* Fixed text is < 96 bytes; status < 12 digits; strings worst case 6x. */
    size_t cap = 160 + slug_n + 6 * title_n + 6 * detail_n + 6 * request_id.n + 6 * trace_id.n;
    char *buf = pt_arena_alloc(a, cap);
    char *p = buf;

    p = PUT_LIT(p, "{\"type\":\"urn:portico:error:");
    p = put(p, slug, slug_n);
    p = PUT_LIT(p, "\",\"title\":\"");
    p += pt_json_escape(p, title, title_n);
    p = PUT_LIT(p, "\",\"status\":");
    p += snprintf(p, 16, "%d", status);
    if (detail_n) {
        p = PUT_LIT(p, ",\"detail\":\"");
        p += pt_json_escape(p, detail, detail_n);
        *p++ = '"';
    }
    if (request_id.n) {
        p = PUT_LIT(p, ",\"request_id\":\"");
        p += pt_json_escape(p, request_id.p, request_id.n);
        *p++ = '"';
    }
    if (trace_id.n) {
        p = PUT_LIT(p, ",\"trace_id\":\"");
        p += pt_json_escape(p, trace_id.p, trace_id.n);
        *p++ = '"';
    }
    *p++ = '}';
    *p = '\0';
    PT_ASSERT((size_t)(p - buf) < cap);
    return pt_str_make(buf, (size_t)(p - buf));
}
