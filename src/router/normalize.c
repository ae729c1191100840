/* normalize.c — see normalize.h. One pass over the input with an output
 * cursor: the input is read one unit at a time (a raw byte or a %XX escape),
 * each unit is classified (separator, data, start of ';' parameters, or an
 * error under the rules), data is written to `out`, and at each segment end
 * the segment is inspected: trailing dots/spaces, then "." is dropped and
 * ".." rewinds the cursor to the start of the previous segment. Since
 * decoding happens first, "%2e%2E" is "..", and a decoded %2F or '\' is a
 * separator before dot segments are resolved. */
#include "router/normalize.h"

const pt_path_rules pt_path_rules_keep_all = {
    .encoded_slash = PT_PATHRULE_KEEP,
    .backslash = PT_PATHRULE_KEEP,
    .semicolon = PT_PATHRULE_KEEP,
    .double_encoding = PT_PATHRULE_KEEP,
    .encoded_control = PT_PATHRULE_KEEP,
    .invalid_utf8 = PT_PATHRULE_KEEP,
    .trailing_dot_space = PT_PATHRULE_KEEP,
};

/* Value of a hex digit, or -1. */
static inline int hex_val(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* RFC 3986 unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~" */
static inline bool is_unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static const char HEX_UPPER[] = "0123456789ABCDEF";

/* A byte copied as it is, whatever the rules: visible ASCII except '%',
 * '/', '\\' and ';'. */
static inline bool is_plain(unsigned char c)
{
    return c > 0x20 && c < 0x7F && c != '%' && c != '/' && c != '\\' && c != ';';
}

static ssize_t fail(const char **detail, const char *msg)
{
    if (detail) *detail = msg;
    return PT_ERR;
}

/* One input unit: a raw byte or a %XX escape. */
typedef struct {
    unsigned char v; /* the octet (decoded for an escape) */
    bool enc;        /* written as %XX */
    size_t step;     /* input bytes: 1 or 3 */
} unit;

enum { U_ERR = -1, U_DATA = 0, U_SEP, U_PARAMS };

/* Reads the unit at in[i] and classifies it under `r`, recording classes in
 * *seen. U_SEP: a segment separator ('/', or a decoded %2F / '\' / %5C);
 * U_PARAMS: a raw ';' under semicolon=strip; U_DATA: segment data; U_ERR:
 * *msg is the 400 detail. */
static int read_unit(const char *in, size_t len, size_t i, const pt_path_rules *r, unit *u, unsigned *seen,
                     const char **msg)
{
    unsigned char c = (unsigned char)in[i];
    *u = (unit){.v = c, .enc = false, .step = 1};
    if (c <= 0x20 || c >= 0x7F) return *msg = "invalid character in path", U_ERR;
    if (c == '/') return U_SEP;
    if (c == '%') {
        if (len - i < 3) return *msg = "truncated percent-encoding in path", U_ERR;
        int hi = hex_val((unsigned char)in[i + 1]), lo = hex_val((unsigned char)in[i + 2]);
        if (hi < 0 || lo < 0) return *msg = "invalid percent-encoding in path", U_ERR;
        *u = (unit){.v = (unsigned char)(hi << 4 | lo), .enc = true, .step = 3};
    }
    unsigned char v = u->v;
    if (u->enc && v == '/') {
        *seen |= PT_PATHC_ENCODED_SLASH;
        if (r->encoded_slash == PT_PATHRULE_REJECT) return *msg = "encoded slash (%2F) in path", U_ERR;
        return r->encoded_slash == PT_PATHRULE_DECODE ? U_SEP : U_DATA;
    }
    if (v == '\\') {
        *seen |= PT_PATHC_BACKSLASH;
        if (r->backslash == PT_PATHRULE_REJECT)
            return *msg = u->enc ? "encoded backslash (%5C) in path" : "backslash in path", U_ERR;
        return r->backslash == PT_PATHRULE_DECODE ? U_SEP : U_DATA;
    }
    if (v == ';') {
        *seen |= PT_PATHC_SEMICOLON;
        if (r->semicolon == PT_PATHRULE_KEEP) return U_DATA;
        if (u->enc) return *msg = "encoded semicolon (%3B) in path", U_ERR;
        if (r->semicolon == PT_PATHRULE_REJECT) return *msg = "';' path parameter in path", U_ERR;
        return U_PARAMS;
    }
    if (u->enc && v == 0) return *msg = "encoded NUL in path", U_ERR;
    if (u->enc && (v < 0x20 || v == 0x7F)) {
        *seen |= PT_PATHC_ENCODED_CONTROL;
        if (r->encoded_control == PT_PATHRULE_REJECT) return *msg = "encoded control character in path", U_ERR;
    }
    return U_DATA;
}

/* UTF-8 well-formedness (RFC 3629, Unicode table 3-7: no overlong forms,
 * no surrogates, nothing above U+10FFFF) over the octets of one segment. */
typedef struct {
    int need;              /* continuation octets still expected */
    unsigned char lo, hi;  /* allowed range of the next continuation */
} utf8_state;

/* Feeds one octet; false if it makes the sequence ill-formed (state reset). */
static bool utf8_feed(utf8_state *s, unsigned char b)
{
    if (s->need) {
        bool ok = b >= s->lo && b <= s->hi;
        s->need = ok ? s->need - 1 : 0;
        s->lo = 0x80;
        s->hi = 0xBF;
        return ok;
    }
    if (b < 0x80) return true;
    s->lo = 0x80;
    s->hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) s->need = 1;
    else if (b == 0xE0) s->need = 2, s->lo = 0xA0;
    else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) s->need = 2;
    else if (b == 0xED) s->need = 2, s->hi = 0x9F;
    else if (b == 0xF0) s->need = 3, s->lo = 0x90;
    else if (b >= 0xF1 && b <= 0xF3) s->need = 3;
    else if (b == 0xF4) s->need = 3, s->hi = 0x8F;
    else return false;
    return true;
}

/* Records an ill-formed UTF-8 octet; false when the rules reject it. */
static bool utf8_bad(const pt_path_rules *r, unsigned *seen)
{
    *seen |= PT_PATHC_INVALID_UTF8;
    return r->invalid_utf8 != PT_PATHRULE_REJECT;
}

/* Is out[s..e) made only of '.' and "%20"? */
static bool only_dots_spaces(const char *out, size_t s, size_t e)
{
    while (s < e) {
        if (out[s] == '.') s++;
        else if (e - s >= 3 && memcmp(out + s, "%20", 3) == 0) s += 3;
        else return false;
    }
    return true;
}

/* Length of out[s..e) without its trailing run of '.' and "%20". */
static size_t trim_dots_spaces(const char *out, size_t s, size_t e)
{
    for (;;) {
        if (e > s && out[e - 1] == '.') e--;
        else if (e - s >= 3 && memcmp(out + e - 3, "%20", 3) == 0) e -= 3;
        else return e - s;
    }
}

/* Applies trailing_dot_space to the segment out[seg..*o) (not a dot
 * segment). Returns NULL or the 400 detail. */
static const char *trailing_rule(const pt_path_rules *r, char *out, size_t seg, size_t *o, unsigned *seen)
{
    size_t n = *o - seg;
    if (n == 0) return NULL;
    bool dot = out[*o - 1] == '.';
    bool sp = n >= 3 && memcmp(out + *o - 3, "%20", 3) == 0;
    bool dotseg = (n == 1 && dot) || (n == 2 && out[seg] == '.' && dot);
    if ((!dot && !sp) || dotseg) return NULL;
    *seen |= PT_PATHC_TRAILING_DOT_SPACE;
    if (r->trailing_dot_space == PT_PATHRULE_KEEP) return NULL;
    if (r->trailing_dot_space == PT_PATHRULE_REJECT) return "path segment ends with a dot or a space";
    if (only_dots_spaces(out, seg, *o)) return "path segment made only of dots and spaces";
    *o = seg + trim_dots_spaces(out, seg, *o);
    return NULL;
}

/* Finds "%25" followed by two hex digits (a double-encoded octet). */
static bool has_double_encoding(const char *out, size_t n)
{
    for (size_t i = 0; i + 4 < n; i++)
        if (out[i] == '%' && out[i + 1] == '2' && out[i + 2] == '5' && hex_val((unsigned char)out[i + 3]) >= 0 &&
            hex_val((unsigned char)out[i + 4]) >= 0)
            return true;
    return false;
}

ssize_t pt_path_normalize_rules(const char *in, size_t len, const pt_path_rules *r, char *out, unsigned *seen_out,
                                const char **detail)
{
    if (len == 0 || in[0] != '/') return fail(detail, "path must start with '/'");
    unsigned seen = 0;
    const char *msg = NULL;
    bool pct25 = false; /* "%25" written: scan for double encoding at the end */
    size_t i = 1, o = 1;
    unit u;
    out[0] = '/';
    while (i < len) {
        int k = U_DATA;
        while (i < len) { /* rule 3: merge separators */
            if (in[i] == '/') {
                i++;
                continue;
            }
            if (is_plain((unsigned char)in[i])) break;
            k = read_unit(in, len, i, r, &u, &seen, &msg);
            if (k != U_SEP) break;
            i += u.step;
            k = U_DATA;
        }
        if (i == len) break; /* trailing slash already in out */
        if (k == U_ERR) return fail(detail, msg);
        size_t seg = o;     /* segment start in out (after a '/') */
        bool params = false; /* inside ";..." being stripped */
        utf8_state us = {0};
        while (i < len) {
            unsigned char c = (unsigned char)in[i];
            if (is_plain(c) && !params && !us.need) { /* fast path: an ordinary visible byte */
                out[o++] = (char)c;
                i++;
                continue;
            }
            if (c == '/') break;
            k = read_unit(in, len, i, r, &u, &seen, &msg);
            if (k == U_ERR) return fail(detail, msg);
            if (k == U_SEP) break;
            i += u.step;
            if (k == U_PARAMS) params = true;
            if (params) continue;
            if (!utf8_feed(&us, u.v) && !utf8_bad(r, &seen))
                return fail(detail, "percent-encoded bytes in path are not valid UTF-8");
            if (!u.enc && u.v != '\\') {
                out[o++] = (char)u.v;
            } else if (u.enc && is_unreserved(u.v)) {
                out[o++] = (char)u.v;
            } else { /* keep encoded, canonical uppercase hex (a raw '\' becomes %5C) */
                pct25 |= u.v == '%';
                out[o++] = '%';
                out[o++] = HEX_UPPER[u.v >> 4];
                out[o++] = HEX_UPPER[u.v & 15];
            }
        }
        if (us.need && !utf8_bad(r, &seen))
            return fail(detail, "percent-encoded bytes in path are not valid UTF-8");
        bool more = i < len; /* a separator follows */
        if (o > seg && (out[o - 1] == '.' || out[o - 1] == '0')) { /* may end in '.' or "%20" */
            const char *why = trailing_rule(r, out, seg, &o, &seen);
            if (why) return fail(detail, why);
        }
        size_t seglen = o - seg;
        if (seglen == 0) {
            /* an empty segment (";x" stripped): like "//", nothing to add */
        } else if (seglen == 1 && out[seg] == '.') {
            o = seg; /* drop "."; out still ends with '/' */
        } else if (seglen == 2 && out[seg] == '.' && out[seg + 1] == '.') {
            if (seg == 1) return fail(detail, "path escapes root");
            o = seg - 1;                   /* the '/' before ".." */
            while (out[o - 1] != '/') o--; /* back to just after the previous '/' */
        } else if (more) {
            out[o++] = '/';
        }
    }
    out[o] = '\0';
    if (pct25 && has_double_encoding(out, o)) {
        seen |= PT_PATHC_DOUBLE_ENCODING;
        if (r->double_encoding == PT_PATHRULE_REJECT)
            return fail(detail, "double percent-encoding (%25 followed by hex digits) in path");
    }
    if (seen_out) *seen_out = seen;
    return (ssize_t)o;
}

ssize_t pt_path_normalize(const char *in, size_t len, char *out, const char **detail)
{
    return pt_path_normalize_rules(in, len, &pt_path_rules_keep_all, out, NULL, detail);
}
