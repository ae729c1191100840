/* normalize.c — see normalize.h. One pass over the input with an output
 * cursor: each segment is decoded straight into `out`, then inspected; a
 * "." segment is dropped and a ".." segment rewinds the cursor to the start
 * of the previous segment. Since decoding happens first, "%2e%2E" is "..". */
#include "router/normalize.h"

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

static ssize_t fail(const char **detail, const char *msg)
{
    if (detail) *detail = msg;
    return PT_ERR;
}

ssize_t pt_path_normalize(const char *in, size_t len, char *out, const char **detail)
{
    if (len == 0 || in[0] != '/') return fail(detail, "path must start with '/'");
    size_t i = 1, o = 1;
    out[0] = '/';
    while (i < len) {
        while (i < len && in[i] == '/') i++; /* rule 3: merge slashes */
        if (i == len) break;                 /* trailing slash already in out */
        size_t seg = o;                      /* segment start in out (after a '/') */
        while (i < len && in[i] != '/') {
            unsigned char c = (unsigned char)in[i];
            if (c <= 0x20 || c >= 0x7F) return fail(detail, "invalid character in path");
            if (c != '%') {
                out[o++] = (char)c;
                i++;
                continue;
            }
            if (len - i < 3) return fail(detail, "truncated percent-encoding in path");
            int hi = hex_val((unsigned char)in[i + 1]), lo = hex_val((unsigned char)in[i + 2]);
            if (hi < 0 || lo < 0) return fail(detail, "invalid percent-encoding in path");
            unsigned char v = (unsigned char)(hi << 4 | lo);
            if (v == 0) return fail(detail, "encoded NUL in path");
            if (is_unreserved(v)) {
                out[o++] = (char)v;
            } else { /* keep encoded, canonical uppercase hex */
                out[o++] = '%';
                out[o++] = HEX_UPPER[v >> 4];
                out[o++] = HEX_UPPER[v & 15];
            }
            i += 3;
        }
        size_t seglen = o - seg;
        bool more = i < len; /* a '/' follows */
        if (seglen == 1 && out[seg] == '.') {
            o = seg; /* drop "."; out still ends with '/' */
        } else if (seglen == 2 && out[seg] == '.' && out[seg + 1] == '.') {
            if (seg == 1) return fail(detail, "path escapes root");
            o = seg - 1; /* the '/' before ".." */
            while (out[o - 1] != '/') o--; /* back to just after the previous '/' */
        } else if (more) {
            out[o++] = '/';
        }
    }
    out[o] = '\0';
    return (ssize_t)o;
}
