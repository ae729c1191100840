/* h1.c — the strict HTTP/1.1 codec; the contract is in h1.h.
 *
 * Design: one pass over the head. The request/status line is located with
 * memchr, header names are scanned with a class table and header values with
 * an 8-bytes-at-a-time control-byte search. Parsed fields are collected in a
 * small on-stack array and copied into the arena only once the whole head is
 * known to be present, so a client that trickles its head byte by byte (and
 * makes the caller re-parse from the start each time) costs no arena memory.
 * Every ambiguity that could let two HTTP implementations disagree about
 * where a message ends is an error. */
#include "http/h1.h"

/* ---------------------------------------------------------------- classes */

enum {
    TK = 1, /* tchar (RFC 9110 §5.6.2) */
    TG = 2, /* request-target byte: VCHAR except '#' */
    RN = 4, /* reg-name byte: unreserved / sub-delims (pct-encoding handled apart) */
    HX = 8, /* HEXDIG */
};

static const uint8_t char_class[256] = {
    ['!'] = TK|TG|RN,    ['"'] = TG,          ['#'] = TK,          ['$'] = TK|TG|RN,
    ['%'] = TK|TG,       ['&'] = TK|TG|RN,    ['\''] = TK|TG|RN,   ['('] = TG|RN,
    [')'] = TG|RN,       ['*'] = TK|TG|RN,    ['+'] = TK|TG|RN,    [','] = TG|RN,
    ['-'] = TK|TG|RN,    ['.'] = TK|TG|RN,    ['/'] = TG,          ['0'] = TK|TG|RN|HX,
    ['1'] = TK|TG|RN|HX, ['2'] = TK|TG|RN|HX, ['3'] = TK|TG|RN|HX, ['4'] = TK|TG|RN|HX,
    ['5'] = TK|TG|RN|HX, ['6'] = TK|TG|RN|HX, ['7'] = TK|TG|RN|HX, ['8'] = TK|TG|RN|HX,
    ['9'] = TK|TG|RN|HX, [':'] = TG,          [';'] = TG|RN,       ['<'] = TG,
    ['='] = TG|RN,       ['>'] = TG,          ['?'] = TG,          ['@'] = TG,
    ['A'] = TK|TG|RN|HX, ['B'] = TK|TG|RN|HX, ['C'] = TK|TG|RN|HX, ['D'] = TK|TG|RN|HX,
    ['E'] = TK|TG|RN|HX, ['F'] = TK|TG|RN|HX, ['G'] = TK|TG|RN,    ['H'] = TK|TG|RN,
    ['I'] = TK|TG|RN,    ['J'] = TK|TG|RN,    ['K'] = TK|TG|RN,    ['L'] = TK|TG|RN,
    ['M'] = TK|TG|RN,    ['N'] = TK|TG|RN,    ['O'] = TK|TG|RN,    ['P'] = TK|TG|RN,
    ['Q'] = TK|TG|RN,    ['R'] = TK|TG|RN,    ['S'] = TK|TG|RN,    ['T'] = TK|TG|RN,
    ['U'] = TK|TG|RN,    ['V'] = TK|TG|RN,    ['W'] = TK|TG|RN,    ['X'] = TK|TG|RN,
    ['Y'] = TK|TG|RN,    ['Z'] = TK|TG|RN,    ['['] = TG,          ['\\'] = TG,
    [']'] = TG,          ['^'] = TK|TG,       ['_'] = TK|TG|RN,    ['`'] = TK|TG,
    ['a'] = TK|TG|RN|HX, ['b'] = TK|TG|RN|HX, ['c'] = TK|TG|RN|HX, ['d'] = TK|TG|RN|HX,
    ['e'] = TK|TG|RN|HX, ['f'] = TK|TG|RN|HX, ['g'] = TK|TG|RN,    ['h'] = TK|TG|RN,
    ['i'] = TK|TG|RN,    ['j'] = TK|TG|RN,    ['k'] = TK|TG|RN,    ['l'] = TK|TG|RN,
    ['m'] = TK|TG|RN,    ['n'] = TK|TG|RN,    ['o'] = TK|TG|RN,    ['p'] = TK|TG|RN,
    ['q'] = TK|TG|RN,    ['r'] = TK|TG|RN,    ['s'] = TK|TG|RN,    ['t'] = TK|TG|RN,
    ['u'] = TK|TG|RN,    ['v'] = TK|TG|RN,    ['w'] = TK|TG|RN,    ['x'] = TK|TG|RN,
    ['y'] = TK|TG|RN,    ['z'] = TK|TG|RN,    ['{'] = TG,          ['|'] = TK|TG,
    ['}'] = TG,          ['~'] = TK|TG|RN,
};

static inline bool is_class(unsigned char c, uint8_t cls) { return (char_class[c] & cls) != 0; }
static inline bool is_tchar(unsigned char c) { return is_class(c, TK); }
static inline bool is_ows(unsigned char c) { return c == ' ' || c == '\t'; }
static inline bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static inline unsigned char ascii_lower(unsigned char c) { return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c; }
/* A byte allowed inside a field value / reason phrase: SP, HTAB, VCHAR, obs-text. */
static inline bool is_field_byte(unsigned char c) { return c >= 0x20 ? c != 0x7f : c == '\t'; }

static bool ascii_ieq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ascii_lower((unsigned char)a[i]) != ascii_lower((unsigned char)b[i])) return false;
    return true;
}

static inline bool slice_ieq(pt_str s, const char *lit, size_t lit_len)
{
    return s.n == lit_len && ascii_ieq(s.p, lit, lit_len);
}
#define SLICE_IEQ(s, lit) slice_ieq((s), (lit), sizeof(lit) - 1)

/* Case-insensitive match of a token against a lowercase literal made of
 * letters and '-'. Valid only when `p` holds tchars: OR-ing 0x20 folds
 * exactly the letters there (no other tchar maps onto a letter or '-'). */
static inline bool token_is(const char *p, const char *lower_lit, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)p[i] | 0x20) != (unsigned char)lower_lit[i]) return false;
    return true;
}

/* First byte in [p, end) that is a control byte (< 0x20, HTAB included, or
 * DEL), or end. Eight bytes per step: field values are the bulk of a head. */
static const char *find_ctl(const char *p, const char *end)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    while (end - p >= 8) {
        uint64_t x;
        memcpy(&x, p, 8);
        uint64_t below_space = (x - ones * 0x20) & ~x & highs; /* some byte < 0x20 */
        uint64_t y = x ^ (ones * 0x7f);
        uint64_t del = (y - ones) & ~y & highs; /* some byte == 0x7f */
        uint64_t hit = below_space | del;
        if (hit) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            /* Borrows only run toward higher bytes, so the lowest flag is exact. */
            return p + (__builtin_ctzll(hit) >> 3);
#else
            break;
#endif
        }
        p += 8;
    }
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c == 0x7f) return p;
        p++;
    }
    return end;
}

/* First byte in [p, end) that cannot appear in a request-target (anything
 * but VCHAR minus '#'), or end. Eight bytes per step, like find_ctl. */
static const char *find_target_end(const char *p, const char *end)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (end - p >= 8) {
        uint64_t x;
        memcpy(&x, p, 8);
        uint64_t low = (x - ones * 0x21) & ~x & highs; /* some byte < 0x21 */
        uint64_t y = x ^ (ones * 0x7f);
        uint64_t del = (y - ones) & ~y & highs;        /* some byte == 0x7f */
        uint64_t z = x ^ (ones * '#');
        uint64_t hash = (z - ones) & ~z & highs;       /* some byte == '#' */
        uint64_t hit = low | del | hash | (x & highs); /* or >= 0x80 */
        if (hit) return p + (__builtin_ctzll(hit) >> 3);
        p += 8;
    }
#endif
    while (p < end && is_class((unsigned char)*p, TG)) p++;
    return p;
}

bool pt_h1_target_valid(pt_str t, pt_method m)
{
    if (t.n == 1 && t.p[0] == '*') return m == PT_METHOD_OPTIONS;
    return t.n && t.p[0] == '/' && find_target_end(t.p, t.p + t.n) == t.p + t.n;
}

/* First byte in [p, end) that is not a tchar, or end (four bytes per step). */
static inline const char *find_token_end(const char *p, const char *end)
{
    while (end - p >= 4 && is_tchar((unsigned char)p[0]) && is_tchar((unsigned char)p[1]) &&
           is_tchar((unsigned char)p[2]) && is_tchar((unsigned char)p[3]))
        p += 4;
    while (p < end && is_tchar((unsigned char)*p)) p++;
    return p;
}

static inline pt_str trim_ows(const char *p, const char *e)
{
    while (p < e && is_ows((unsigned char)*p)) p++;
    while (e > p && is_ows((unsigned char)e[-1])) e--;
    return pt_str_make(p, (size_t)(e - p));
}

static ssize_t fail(pt_h1_error *err, int status, const char *detail)
{
    err->status = status;
    err->detail = detail;
    return PT_ERR;
}

/* ------------------------------------------------------- field collection */

#define LOCAL_FIELDS 32
#define MAX_CONNECTION_FIELDS 8
#define MAX_UPGRADE_FIELDS 4

typedef enum {
    F_OTHER = 0,
    F_HOST,
    F_EXPECT,
    F_CONTENT_LENGTH,
    F_TRANSFER_ENCODING,
    F_CONNECTION,
    F_UPGRADE,
    F_HOP, /* Keep-Alive, Proxy-Connection, TE: dropped */
} field_kind;

/* Everything the field lines of one head tell us, plus where the end-to-end
 * fields go. `local` holds the first LOCAL_FIELDS fields until the head is
 * known to be complete; only then is the arena touched. */
typedef struct {
    const char *buf;
    size_t scan_end;  /* min(len, max_header_size): nothing past it is read */
    uint32_t max_headers;
    bool is_request;
    pt_arena *a;
    pt_headers *out;

    pt_header local[LOCAL_FIELDS];
    uint32_t nlocal;
    bool spilled; /* fields now live in out (arena) */

    uint32_t nfields;
    bool has_cl;
    uint64_t cl;
    uint32_t te_count;
    pt_str te_value;
    uint32_t host_count;
    pt_str host_value;
    bool expect_continue, expect_other;
    bool conn_close, conn_keep_alive, conn_other, conn_upgrade;
    uint32_t nconn;
    pt_str conn_values[MAX_CONNECTION_FIELDS];
    uint32_t nupgrade;
    pt_str upgrade_values[MAX_UPGRADE_FIELDS];
} fields_ctx;

static field_kind classify_field(const char *p, size_t n)
{
    switch (n) {
    case 2: return token_is(p, "te", 2) ? F_HOP : F_OTHER;
    case 4: return token_is(p, "host", 4) ? F_HOST : F_OTHER;
    case 6: return token_is(p, "expect", 6) ? F_EXPECT : F_OTHER;
    case 7: return token_is(p, "upgrade", 7) ? F_UPGRADE : F_OTHER;
    case 10:
        if (token_is(p, "connection", 10)) return F_CONNECTION;
        return token_is(p, "keep-alive", 10) ? F_HOP : F_OTHER;
    case 14: return token_is(p, "content-length", 14) ? F_CONTENT_LENGTH : F_OTHER;
    case 16: return token_is(p, "proxy-connection", 16) ? F_HOP : F_OTHER;
    case 17: return token_is(p, "transfer-encoding", 17) ? F_TRANSFER_ENCODING : F_OTHER;
    default: return F_OTHER;
    }
}

/* Content-Length: 1#(1*DIGIT) whose elements are all the same number, at
 * most INT64_MAX. Returns false on any other shape. */
static bool parse_content_length(pt_str v, uint64_t *out)
{
    const char *p = v.p, *e = v.p + v.n;
    bool have = false;
    uint64_t first = 0;
    for (;;) {
        while (p < e && is_ows((unsigned char)*p)) p++;
        const char *d = p;
        uint64_t n = 0;
        while (p < e && is_digit((unsigned char)*p)) {
            unsigned dig = (unsigned)(*p - '0');
            if (n > ((uint64_t)INT64_MAX - dig) / 10) return false;
            n = n * 10 + dig;
            p++;
        }
        if (p == d) return false; /* empty element or non-digit */
        if (have && n != first) return false;
        first = n;
        have = true;
        while (p < e && is_ows((unsigned char)*p)) p++;
        if (p == e) break;
        if (*p != ',') return false;
        p++;
    }
    *out = first;
    return true;
}

/* Walks the comma-separated token list in `v`. Calls `fn` for each non-empty
 * element; returns false if an element is not a token. */
typedef bool (*token_fn)(void *ud, pt_str tok);
static bool for_each_token(pt_str v, token_fn fn, void *ud)
{
    const char *p = v.p, *e = v.p + v.n;
    while (p < e) {
        while (p < e && (is_ows((unsigned char)*p) || *p == ',')) p++;
        const char *t = p;
        while (p < e && is_tchar((unsigned char)*p)) p++;
        if (p > t && !fn(ud, pt_str_make(t, (size_t)(p - t)))) return true; /* early stop */
        while (p < e && is_ows((unsigned char)*p)) p++;
        if (p < e && *p != ',') return false;
    }
    return true;
}

static bool note_connection_token(void *ud, pt_str tok)
{
    fields_ctx *c = ud;
    if (tok.n == 5 && token_is(tok.p, "close", 5))
        c->conn_close = true;
    else if (tok.n == 10 && token_is(tok.p, "keep-alive", 10))
        c->conn_keep_alive = true;
    else if (tok.n == 7 && token_is(tok.p, "upgrade", 7))
        c->conn_upgrade = true; /* names the Upgrade field, which is consumed anyway */
    else
        c->conn_other = true;
    return true;
}

typedef struct {
    pt_str name;
    bool found;
} name_search;

static bool match_connection_token(void *ud, pt_str tok)
{
    name_search *s = ud;
    if (tok.n == s->name.n && ascii_ieq(tok.p, s->name.p, tok.n)) {
        s->found = true;
        return false;
    }
    return true;
}

/* True if some Connection field of the head names `name`. */
static bool connection_lists(const fields_ctx *c, pt_str name)
{
    name_search s = {name, false};
    for (uint32_t i = 0; i < c->nconn && !s.found; i++) for_each_token(c->conn_values[i], match_connection_token, &s);
    return s.found;
}

/* Records what a consumed field means. Returns 1 when the field is consumed
 * by the codec, 0 when it is end-to-end, PT_ERR (err set, request-flavoured
 * status) when its value is unacceptable. */
static int note_field(fields_ctx *c, field_kind kind, pt_str value, pt_h1_error *err)
{
    switch (kind) {
    case F_OTHER:
        return 0;
    case F_HOST:
        if (!c->is_request) return 0;
        c->host_count++;
        c->host_value = value;
        return 1;
    case F_EXPECT:
        if (!c->is_request) return 0;
        if (SLICE_IEQ(value, "100-continue"))
            c->expect_continue = true;
        else
            c->expect_other = true;
        return 1;
    case F_CONTENT_LENGTH: {
        uint64_t n;
        if (!parse_content_length(value, &n)) return (int)fail(err, 400, "invalid Content-Length");
        if (c->has_cl && n != c->cl) return (int)fail(err, 400, "differing Content-Length values");
        c->has_cl = true;
        c->cl = n;
        return 1;
    }
    case F_TRANSFER_ENCODING:
        c->te_count++;
        c->te_value = value;
        return 1;
    case F_CONNECTION:
        if (c->nconn == MAX_CONNECTION_FIELDS) return (int)fail(err, 400, "too many Connection fields");
        if (!for_each_token(value, note_connection_token, c)) return (int)fail(err, 400, "invalid Connection field");
        c->conn_values[c->nconn++] = value;
        return 1;
    case F_UPGRADE:
        if (c->nupgrade == MAX_UPGRADE_FIELDS) return (int)fail(err, 400, "too many Upgrade fields");
        c->upgrade_values[c->nupgrade++] = value;
        return 1;
    case F_HOP:
        return 1;
    }
    return 0;
}

/* Stores an end-to-end field. While fields fit in `local` nothing is
 * allocated; past that, the fields move to the arena, but only once the end
 * of the head is present in the buffer (else PT_AGAIN, no allocation).
 * `next_line` is the offset just past this field's CRLF. */
static int keep_field(fields_ctx *c, pt_str name, pt_str value, size_t next_line)
{
    if (!c->spilled) {
        if (c->nlocal < LOCAL_FIELDS) {
            c->local[c->nlocal++] = (pt_header){name, value};
            return PT_OK;
        }
        const char *from = c->buf + next_line - 2;
        if (!memmem(from, (size_t)(c->buf + c->scan_end - from), "\r\n\r\n", 4)) return PT_AGAIN;
        uint32_t cap = LOCAL_FIELDS * 2;
        c->out->v = pt_arena_alloc(c->a, cap * sizeof(pt_header));
        c->out->cap = cap;
        memcpy(c->out->v, c->local, c->nlocal * sizeof(pt_header));
        c->out->n = c->nlocal;
        c->spilled = true;
    }
    pt_headers_add(c->out, c->a, name, value);
    return PT_OK;
}

/* Moves the end-to-end fields into the arena (when still local) and drops
 * those named by Connection. Called once the head parsed successfully. */
static void finish_fields(fields_ctx *c)
{
    if (!c->spilled && c->nlocal) {
        uint32_t cap = c->nlocal < 16 ? 16 : c->nlocal;
        c->out->v = pt_arena_alloc(c->a, cap * sizeof(pt_header));
        c->out->cap = cap;
        memcpy(c->out->v, c->local, c->nlocal * sizeof(pt_header));
        c->out->n = c->nlocal;
    }
    if (c->conn_other) {
        uint32_t w = 0;
        for (uint32_t i = 0; i < c->out->n; i++)
            if (!connection_lists(c, c->out->v[i].name)) c->out->v[w++] = c->out->v[i];
        c->out->n = w;
    }
}

/* The Upgrade protocol list: the one field's value (a slice of the buffer),
 * or several fields joined with ", " in the arena (RFC 9110 §5.3). */
static pt_str upgrade_list(const fields_ctx *c)
{
    if (c->nupgrade <= 1) return c->nupgrade ? c->upgrade_values[0] : PT_STR_NULL;
    size_t n = 0;
    for (uint32_t i = 0; i < c->nupgrade; i++) n += c->upgrade_values[i].n + 2;
    char *d = pt_arena_alloc(c->a, n + 1), *o = d;
    for (uint32_t i = 0; i < c->nupgrade; i++) {
        if (o > d) {
            memcpy(o, ", ", 2);
            o += 2;
        }
        memcpy(o, c->upgrade_values[i].p, c->upgrade_values[i].n);
        o += c->upgrade_values[i].n;
    }
    *o = '\0';
    return pt_str_make(d, (size_t)(o - d));
}

/* Parses field lines starting at offset `p` (the first byte after the
 * start line) up to and including the empty line. Reads nothing at or past
 * c->scan_end. Returns the head length, PT_AGAIN when the data runs out
 * first, or PT_ERR with err set (request-flavoured statuses 400/431). */
static ssize_t parse_fields(fields_ctx *c, size_t p, pt_h1_error *err)
{
    const char *buf = c->buf;
    const char *end = buf + c->scan_end;
    const char *q = buf + p;
    for (;;) {
        if (q >= end) return PT_AGAIN;
        unsigned char first = (unsigned char)*q;
        if (first == '\r') {
            if (q + 1 >= end) return PT_AGAIN;
            if (q[1] != '\n') return fail(err, 400, "bare CR in header section");
            return (ssize_t)(q + 2 - buf);
        }
        if (is_ows(first)) return fail(err, 400, "obsolete line folding or leading whitespace");

        const char *name = q;
        q = find_token_end(q, end);
        if (q >= end) return PT_AGAIN;
        if (*q != ':' || q == name) {
            if (*q == ' ' || *q == '\t') return fail(err, 400, "whitespace between field name and colon");
            if (*q == '\n') return fail(err, 400, "bare LF in header section");
            return fail(err, 400, "invalid header field name");
        }
        size_t name_len = (size_t)(q - name);
        q++;

        const char *vstart = q;
        for (;;) {
            q = find_ctl(q, end);
            if (q >= end) return PT_AGAIN;
            if (*q != '\t') break;
            q++;
        }
        if (*q != '\r') {
            if (*q == '\n') return fail(err, 400, "bare LF in header section");
            return fail(err, 400, "control character in header value");
        }
        if (q + 1 >= end) return PT_AGAIN;
        if (q[1] != '\n') return fail(err, 400, "bare CR in header value");
        pt_str value = trim_ows(vstart, q);
        q += 2;

        if (++c->nfields > c->max_headers) return fail(err, 431, "too many header fields");
        int r = note_field(c, classify_field(name, name_len), value, err);
        if (r < 0) return r;
        if (r == 0) {
            r = keep_field(c, pt_str_make(name, name_len), value, (size_t)(q - buf));
            if (r != PT_OK) return r;
        }
    }
}

/* ----------------------------------------------------------------- limits */

typedef struct {
    size_t max_line, max_head;
    uint32_t max_headers;
} limits;

static limits resolve_limits(const pt_h1_limits *lim)
{
    limits l = {PT_H1_DEFAULT_MAX_REQUEST_LINE, PT_H1_DEFAULT_MAX_HEADER_SIZE, PT_H1_DEFAULT_MAX_HEADERS};
    if (lim) {
        if (lim->max_request_line) l.max_line = lim->max_request_line;
        if (lim->max_header_size) l.max_head = lim->max_header_size;
        if (lim->max_headers) l.max_headers = lim->max_headers;
    }
    return l;
}

/* Locates the start line beginning at `start`: on success *lf is the offset
 * of its LF (the byte before is CR). Returns PT_OK, PT_AGAIN, or PT_ERR with
 * err set (too-long line => line_status; bare LF => bad_status). */
static ssize_t find_start_line(const char *buf, size_t len, size_t start, const limits *l, int line_status,
                               int bad_status, size_t *lf, pt_h1_error *err)
{
    size_t window = l->max_line + 2; /* line + CRLF */
    size_t search_end = (len - start > window) ? start + window : len;
    const char *nl = memchr(buf + start, '\n', search_end - start);
    if (!nl) {
        if (len - start >= window) return fail(err, line_status, "start line too long");
        if (len >= l->max_head) return fail(err, line_status == 414 ? 431 : line_status, "header section too large");
        return PT_AGAIN;
    }
    *lf = (size_t)(nl - buf);
    if (*lf == start || buf[*lf - 1] != '\r') return fail(err, bad_status, "bare LF in start line");
    return PT_OK;
}

/* ---------------------------------------------------------------- request */

static pt_method method_id(const char *p, size_t n)
{
    switch (n) {
    case 3:
        if (memcmp(p, "GET", 3) == 0) return PT_METHOD_GET;
        if (memcmp(p, "PUT", 3) == 0) return PT_METHOD_PUT;
        break;
    case 4:
        if (memcmp(p, "POST", 4) == 0) return PT_METHOD_POST;
        if (memcmp(p, "HEAD", 4) == 0) return PT_METHOD_HEAD;
        break;
    case 5:
        if (memcmp(p, "PATCH", 5) == 0) return PT_METHOD_PATCH;
        if (memcmp(p, "TRACE", 5) == 0) return PT_METHOD_TRACE;
        break;
    case 6: if (memcmp(p, "DELETE", 6) == 0) return PT_METHOD_DELETE; break;
    case 7:
        if (memcmp(p, "OPTIONS", 7) == 0) return PT_METHOD_OPTIONS;
        if (memcmp(p, "CONNECT", 7) == 0) return PT_METHOD_CONNECT;
        break;
    default: break;
    }
    return PT_METHOD_OTHER;
}

/* "HTTP/1.1" => 11, "HTTP/1.0" => 10; another well-formed HTTP/D.D with a
 * major version other than 1 => 505; anything else => 400. */
static int parse_version(const char *v, size_t n, uint8_t *version)
{
    if (n != 8 || memcmp(v, "HTTP/", 5) != 0 || !is_digit((unsigned char)v[5]) || v[6] != '.' ||
        !is_digit((unsigned char)v[7]))
        return 400;
    if (v[5] != '1') return 505;
    if (v[7] == '1') *version = 11;
    else if (v[7] == '0') *version = 10;
    else return 400;
    return 0;
}

/* authority = host [ ":" port ]: host is a reg-name (which covers IPv4) or
 * an IPv6 literal in brackets; port is 1*5DIGIT <= 65535. On success *host
 * is the authority without the port (brackets kept). */
bool pt_h1_split_authority(pt_str auth, pt_str *host)
{
    const char *p = auth.p, *e = auth.p + auth.n;
    if (p == e) return false;
    if (*p == '[') {
        const char *q = p + 1;
        bool colon = false;
        while (q < e && (is_class((unsigned char)*q, HX) || *q == ':' || *q == '.')) {
            colon |= *q == ':';
            q++;
        }
        if (q == e || *q != ']' || !colon) return false;
        p = q + 1;
    } else {
        while (p < e) {
            unsigned char c = (unsigned char)*p;
            if (is_class(c, RN)) {
                p++;
            } else if (c == '%' && e - p >= 3 && is_class((unsigned char)p[1], HX) && is_class((unsigned char)p[2], HX)) {
                p += 3;
            } else {
                break;
            }
        }
        if (p == auth.p) return false;
    }
    *host = pt_str_make(auth.p, (size_t)(p - auth.p));
    if (p == e) return true;
    if (*p != ':') return false;
    p++;
    if (p == e || e - p > 5) return false;
    unsigned port = 0;
    for (; p < e; p++) {
        if (!is_digit((unsigned char)*p)) return false;
        port = port * 10 + (unsigned)(*p - '0');
    }
    return port <= 65535;
}

/* The host, lowercased: a slice of the input when it has no uppercase
 * letter, else a copy in the arena. */
static pt_str lowercase_host(pt_arena *a, pt_str host)
{
    size_t i = 0;
    while (i < host.n && !(host.p[i] >= 'A' && host.p[i] <= 'Z')) i++;
    if (i == host.n) return host;
    char *d = pt_arena_alloc(a, host.n + 1);
    for (size_t k = 0; k < host.n; k++) d[k] = (char)ascii_lower((unsigned char)host.p[k]);
    d[host.n] = '\0';
    return pt_str_make(d, host.n);
}

static void split_query(pt_request *out)
{
    const char *qm = out->target.n ? memchr(out->target.p, '?', out->target.n) : NULL;
    if (qm) {
        out->path = pt_str_make(out->target.p, (size_t)(qm - out->target.p));
        out->query = pt_str_make(qm + 1, out->target.n - out->path.n - 1);
        out->has_query = true;
    } else {
        out->path = out->target;
        out->query = pt_str_make(out->target.p + out->target.n, 0);
    }
}

ssize_t pt_h1_parse_request(const char *buf, size_t len, const pt_h1_limits *lim, pt_arena *a,
                            pt_request *out, pt_h1_info *info, pt_h1_error *err)
{
    memset(out, 0, sizeof(*out));
    memset(info, 0, sizeof(*info));
    err->status = 0;
    err->detail = NULL;
    limits l = resolve_limits(lim);
    size_t scan_end = len < l.max_head ? len : l.max_head;
    bool at_limit = len >= l.max_head;

    /* RFC 9112 §2.2: ignore empty lines before the request-line. */
    size_t start = 0;
    while (start < scan_end && buf[start] == '\r') {
        if (start + 1 >= scan_end) return at_limit ? fail(err, 431, "header section too large") : PT_AGAIN;
        if (buf[start + 1] != '\n') return fail(err, 400, "bare CR before request line");
        start += 2;
    }
    if (start >= scan_end) return at_limit ? fail(err, 431, "header section too large") : PT_AGAIN;

    size_t lf;
    ssize_t r = find_start_line(buf, len, start, &l, 414, 400, &lf, err);
    if (r != PT_OK) return r;

    /* request-line = method SP request-target SP HTTP-version */
    const char *s = buf + start, *e = buf + lf - 1, *q = s;
    while (q < e && is_tchar((unsigned char)*q)) q++;
    if (q == s || q == e || *q != ' ') return fail(err, 400, "invalid method");
    out->method_str = pt_str_make(s, (size_t)(q - s));
    out->method = method_id(s, (size_t)(q - s));
    const char *t = ++q;
    q = find_target_end(q, e);
    if (q == t || q == e || *q != ' ') return fail(err, 400, "invalid request-target");
    pt_str target = pt_str_make(t, (size_t)(q - t));
    q++;
    int vs = parse_version(q, (size_t)(e - q), &out->version);
    if (vs) return fail(err, vs, vs == 505 ? "HTTP version not supported" : "invalid HTTP version");
    if (out->method == PT_METHOD_CONNECT) return fail(err, 400, "CONNECT is not supported");

    /* request-target forms */
    bool absolute = false, absolute_needs_slash = false;
    pt_str target_authority = PT_STR_NULL;
    if (target.p[0] == '/') {
        out->target = target;
    } else if (target.n == 1 && target.p[0] == '*') {
        if (out->method != PT_METHOD_OPTIONS) return fail(err, 400, "'*' target is only valid for OPTIONS");
        out->target = target;
    } else if (target.n >= 7 && ascii_ieq(target.p, "http://", 7)) {
        absolute = true;
        const char *ap = target.p + 7, *te = target.p + target.n, *ae = ap;
        while (ae < te && *ae != '/' && *ae != '?') ae++;
        target_authority = pt_str_make(ap, (size_t)(ae - ap));
        if (ae == te) out->target = PT_STR_LIT("/");
        else if (*ae == '/') out->target = pt_str_make(ae, (size_t)(te - ae));
        else { out->target = pt_str_make(ae, (size_t)(te - ae)); absolute_needs_slash = true; }
    } else {
        return fail(err, 400, "unsupported request-target form");
    }

    fields_ctx c;
    c.buf = buf;
    c.scan_end = scan_end;
    c.max_headers = l.max_headers;
    c.is_request = true;
    c.a = a;
    c.out = &out->headers;
    c.nlocal = 0;
    c.spilled = false;
    c.nfields = 0;
    c.has_cl = false;
    c.cl = 0;
    c.te_count = 0;
    c.host_count = 0;
    c.expect_continue = c.expect_other = false;
    c.conn_close = c.conn_keep_alive = c.conn_other = c.conn_upgrade = false;
    c.nconn = 0;
    c.nupgrade = 0;
    ssize_t head_len = parse_fields(&c, lf + 1, err);
    if (head_len == PT_AGAIN) return at_limit ? fail(err, 431, "header section too large") : PT_AGAIN;
    if (head_len < 0) return head_len;

    /* framing */
    if (c.te_count) {
        if (c.has_cl) return fail(err, 400, "Content-Length and Transfer-Encoding both present");
        if (out->version == 10) return fail(err, 400, "Transfer-Encoding in an HTTP/1.0 request");
        if (c.te_count != 1 || !SLICE_IEQ(c.te_value, "chunked"))
            return fail(err, 400, "Transfer-Encoding other than chunked");
        info->body = PT_H1_BODY_CHUNKED;
        out->has_body = true;
        out->content_length = -1;
    } else if (c.has_cl) {
        info->body = PT_H1_BODY_LENGTH;
        info->content_length = c.cl;
        out->has_body = true;
        out->content_length = (int64_t)c.cl;
    }

    /* Host */
    if (c.host_count > 1) return fail(err, 400, "duplicate Host");
    if (c.host_count == 0 && out->version == 11) return fail(err, 400, "missing Host");
    pt_str host = PT_STR_NULL;
    if (c.host_count == 1) {
        if (c.host_value.n == 0) {
            if (out->version == 11) return fail(err, 400, "empty Host");
        } else if (!pt_h1_split_authority(c.host_value, &host)) {
            return fail(err, 400, "invalid Host");
        }
        out->authority = c.host_value;
    }
    if (absolute) {
        if (!pt_h1_split_authority(target_authority, &host)) return fail(err, 400, "invalid authority in request-target");
        out->authority = target_authority;
    }
    if (out->authority.p == NULL) out->authority = PT_STR_LIT("");

    if (c.expect_other) return fail(err, 417, "unsupported expectation");
    out->expect_continue = c.expect_continue && out->version == 11;

    /* Success: from here on the arena may be used. */
    finish_fields(&c);
    out->host = host.p ? lowercase_host(a, host) : out->authority;
    if (absolute_needs_slash) {
        char *d = pt_arena_alloc(a, out->target.n + 2);
        d[0] = '/';
        memcpy(d + 1, out->target.p, out->target.n);
        d[out->target.n + 1] = '\0';
        out->target = pt_str_make(d, out->target.n + 1);
    }
    split_query(out);
    out->scheme = PT_STR_LIT("http");
    info->upgrade = c.nupgrade > 0;
    out->upgrade = upgrade_list(&c);
    out->connection_upgrade = c.conn_upgrade;
    info->keep_alive = out->version == 11 ? !c.conn_close : (c.conn_keep_alive && !c.conn_close);
    return head_len;
}

/* --------------------------------------------------------------- response */

ssize_t pt_h1_parse_response(const char *buf, size_t len, const pt_h1_limits *lim, bool request_was_head,
                             pt_arena *a, pt_response *out, pt_h1_info *info, pt_h1_error *err)
{
    memset(out, 0, sizeof(*out));
    memset(info, 0, sizeof(*info));
    err->status = 0;
    err->detail = NULL;
    limits l = resolve_limits(lim);
    size_t scan_end = len < l.max_head ? len : l.max_head;
    bool at_limit = len >= l.max_head;
    if (len == 0) return PT_AGAIN;

    size_t lf;
    ssize_t r = find_start_line(buf, len, 0, &l, 502, 502, &lf, err);
    if (r != PT_OK) return r;

    /* status-line = HTTP-version SP 3DIGIT SP [ reason-phrase ] */
    const char *e = buf + lf - 1;
    size_t line_len = (size_t)(e - buf);
    uint8_t version = 0;
    if (line_len < 12 || parse_version(buf, 8, &version) != 0 || buf[8] != ' ')
        return fail(err, 502, "invalid status line");
    if (!is_digit((unsigned char)buf[9]) || !is_digit((unsigned char)buf[10]) || !is_digit((unsigned char)buf[11]))
        return fail(err, 502, "invalid status code");
    int status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    if (status < 100 || status > 599) return fail(err, 502, "invalid status code");
    out->status = status;
    if (line_len == 12) {
        out->reason = pt_str_make(buf + 12, 0);
    } else {
        if (buf[12] != ' ') return fail(err, 502, "invalid status line");
        for (const char *p = buf + 13; p < e; p++)
            if (!is_field_byte((unsigned char)*p)) return fail(err, 502, "invalid reason phrase");
        out->reason = pt_str_make(buf + 13, (size_t)(e - (buf + 13)));
    }

    fields_ctx c;
    c.buf = buf;
    c.scan_end = scan_end;
    c.max_headers = l.max_headers;
    c.is_request = false;
    c.a = a;
    c.out = &out->headers;
    c.nlocal = 0;
    c.spilled = false;
    c.nfields = 0;
    c.has_cl = false;
    c.cl = 0;
    c.te_count = 0;
    c.host_count = 0;
    c.expect_continue = c.expect_other = false;
    c.conn_close = c.conn_keep_alive = c.conn_other = c.conn_upgrade = false;
    c.nconn = 0;
    c.nupgrade = 0;
    ssize_t head_len = parse_fields(&c, lf + 1, err);
    if (head_len == PT_AGAIN) return at_limit ? fail(err, 502, "response header section too large") : PT_AGAIN;
    if (head_len < 0) {
        err->status = 502; /* keep the detail, the upstream is at fault */
        return head_len;
    }

    /* framing, RFC 9112 §6.3 */
    if (c.te_count) {
        if (c.has_cl) return fail(err, 502, "Content-Length and Transfer-Encoding both present");
        if (version == 10) return fail(err, 502, "Transfer-Encoding in an HTTP/1.0 response");
        if (c.te_count != 1 || !SLICE_IEQ(c.te_value, "chunked"))
            return fail(err, 502, "Transfer-Encoding other than chunked");
    }
    bool no_body = request_was_head || status < 200 || status == 204 || status == 304;
    if (no_body) {
        info->body = PT_H1_BODY_NONE;
        out->has_body = false;
        out->content_length = -1;
        if (c.has_cl && (request_was_head || status == 304)) {
            out->content_length = (int64_t)c.cl; /* advertised size of the selected representation */
            info->content_length = c.cl;
        }
    } else if (c.te_count) {
        info->body = PT_H1_BODY_CHUNKED;
        out->has_body = true;
        out->content_length = -1;
    } else if (c.has_cl) {
        info->body = PT_H1_BODY_LENGTH;
        info->content_length = c.cl;
        out->has_body = true;
        out->content_length = (int64_t)c.cl;
    } else {
        info->body = PT_H1_BODY_CLOSE;
        out->has_body = true;
        out->content_length = -1;
    }

    finish_fields(&c);
    info->upgrade = c.nupgrade > 0;
    out->upgrade = upgrade_list(&c);
    out->connection_upgrade = c.conn_upgrade;
    info->keep_alive = version == 11 ? !c.conn_close : (c.conn_keep_alive && !c.conn_close);
    if (info->body == PT_H1_BODY_CLOSE) info->keep_alive = false;
    return head_len;
}

/* ---------------------------------------------------------------- chunked */

enum {
    CH_SIZE = 0,      /* hex digits of chunk-size */
    CH_EXT_NAME0,     /* after ';': first byte of ext name */
    CH_EXT_NAME,      /* inside ext name */
    CH_EXT_VALUE0,    /* after '=' */
    CH_EXT_TOKEN,     /* inside token ext value */
    CH_EXT_QUOTED,    /* inside quoted-string */
    CH_EXT_QUOTED_ESC,/* after backslash in quoted-string */
    CH_EXT_QUOTED_END,/* after closing quote */
    CH_SIZE_LF,       /* CR of the chunk line seen */
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TR_LINE0,      /* start of a trailer line (or the final empty line) */
    CH_TR_NAME,
    CH_TR_VALUE,
    CH_TR_LF,
    CH_END_LF,        /* CR of the final empty line seen */
    CH_DONE,
    CH_ERROR,
};

#define CHUNK_LINE_MAX 1024 /* chunk-size + extensions, without CRLF */
#define CHUNK_SIZE_DIGITS 16

void pt_chunked_init(pt_chunked_decoder *d)
{
    d->state = CH_SIZE;
    d->remaining = 0;
    d->line_len = 0;
    d->max_trailer_size = sizeof(d->trailers);
    d->done = false;
    d->trailers_len = 0;
}

static inline int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = ascii_lower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static ssize_t chunk_fail(pt_chunked_decoder *d, pt_h1_error *err, const char *detail)
{
    d->state = CH_ERROR;
    return fail(err, 400, detail);
}

/* Stores one trailer byte; false when the trailer section is too large. */
static inline bool trailer_put(pt_chunked_decoder *d, char c)
{
    uint32_t cap = d->max_trailer_size < sizeof(d->trailers) ? d->max_trailer_size : (uint32_t)sizeof(d->trailers);
    if (d->trailers_len >= cap) return false;
    d->trailers[d->trailers_len++] = c;
    return true;
}

ssize_t pt_chunked_decode(pt_chunked_decoder *d, const char *in, size_t len, const char **data,
                          size_t *data_len, pt_h1_error *err)
{
    *data = NULL;
    *data_len = 0;
    if (d->state == CH_ERROR) return fail(err, 400, "chunked decoder already failed");
    size_t i = 0;
    while (i < len && d->state != CH_DONE) {
        if (d->state == CH_DATA) {
            size_t avail = len - i;
            size_t take = d->remaining < avail ? (size_t)d->remaining : avail;
            *data = in + i;
            *data_len = take;
            d->remaining -= take;
            if (d->remaining == 0) d->state = CH_DATA_CR;
            return (ssize_t)(i + take);
        }
        unsigned char ch = (unsigned char)in[i++];
        /* every chunk-line state counts toward the line limit */
        if (d->state < CH_SIZE_LF && ch != '\r' && ++d->line_len > CHUNK_LINE_MAX)
            return chunk_fail(d, err, "chunk extensions too long");
        switch (d->state) {
        case CH_SIZE: {
            int h = hex_value(ch);
            if (h >= 0) {
                if (d->line_len > CHUNK_SIZE_DIGITS) return chunk_fail(d, err, "chunk size too large");
                d->remaining = (d->remaining << 4) | (uint64_t)h;
            } else if (d->line_len == 0 || (ch != '\r' && d->line_len == 1)) {
                return chunk_fail(d, err, "invalid chunk size");
            } else if (ch == ';') {
                d->state = CH_EXT_NAME0;
            } else if (ch == '\r') {
                d->state = CH_SIZE_LF;
            } else {
                return chunk_fail(d, err, "invalid chunk size");
            }
            break;
        }
        case CH_EXT_NAME0:
            if (!is_tchar(ch)) return chunk_fail(d, err, "invalid chunk extension");
            d->state = CH_EXT_NAME;
            break;
        case CH_EXT_NAME:
        case CH_EXT_TOKEN:
        case CH_EXT_QUOTED_END:
            if (ch == ';') d->state = CH_EXT_NAME0;
            else if (ch == '\r') d->state = CH_SIZE_LF;
            else if (ch == '=' && d->state == CH_EXT_NAME) d->state = CH_EXT_VALUE0;
            else if (!is_tchar(ch) || d->state == CH_EXT_QUOTED_END) return chunk_fail(d, err, "invalid chunk extension");
            break;
        case CH_EXT_VALUE0:
            if (ch == '"') d->state = CH_EXT_QUOTED;
            else if (is_tchar(ch)) d->state = CH_EXT_TOKEN;
            else return chunk_fail(d, err, "invalid chunk extension");
            break;
        case CH_EXT_QUOTED:
            if (ch == '"') d->state = CH_EXT_QUOTED_END;
            else if (ch == '\\') d->state = CH_EXT_QUOTED_ESC;
            else if (!is_field_byte(ch)) return chunk_fail(d, err, "invalid chunk extension");
            break;
        case CH_EXT_QUOTED_ESC:
            if (!is_field_byte(ch)) return chunk_fail(d, err, "invalid chunk extension");
            d->state = CH_EXT_QUOTED;
            break;
        case CH_SIZE_LF:
            if (ch != '\n') return chunk_fail(d, err, "bare CR in chunk line");
            d->line_len = 0;
            d->state = d->remaining ? CH_DATA : CH_TR_LINE0;
            break;
        case CH_DATA_CR:
            if (ch != '\r') return chunk_fail(d, err, "missing CRLF after chunk data");
            d->state = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (ch != '\n') return chunk_fail(d, err, "missing CRLF after chunk data");
            d->state = CH_SIZE;
            d->line_len = 0;
            break;
        case CH_TR_LINE0:
            if (ch == '\r') {
                d->state = CH_END_LF;
                break;
            }
            if (!is_tchar(ch)) return chunk_fail(d, err, is_ows(ch) ? "obsolete line folding in trailers" : "invalid trailer field");
            if (!trailer_put(d, (char)ch)) return chunk_fail(d, err, "trailer section too large");
            d->state = CH_TR_NAME;
            break;
        case CH_TR_NAME:
            if (ch == ':') d->state = CH_TR_VALUE;
            else if (!is_tchar(ch)) return chunk_fail(d, err, "invalid trailer field name");
            if (!trailer_put(d, (char)ch)) return chunk_fail(d, err, "trailer section too large");
            break;
        case CH_TR_VALUE:
            if (ch == '\r') d->state = CH_TR_LF;
            else if (!is_field_byte(ch)) return chunk_fail(d, err, "invalid trailer field value");
            if (!trailer_put(d, (char)ch)) return chunk_fail(d, err, "trailer section too large");
            break;
        case CH_TR_LF:
            if (ch != '\n') return chunk_fail(d, err, "bare CR in trailers");
            if (!trailer_put(d, (char)ch)) return chunk_fail(d, err, "trailer section too large");
            d->state = CH_TR_LINE0;
            break;
        case CH_END_LF:
            if (ch != '\n') return chunk_fail(d, err, "bare CR after trailers");
            d->state = CH_DONE;
            d->done = true;
            break;
        default:
            return chunk_fail(d, err, "chunked decoder in an invalid state");
        }
    }
    return (ssize_t)i;
}

size_t pt_chunk_header(char *out, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[16];
    size_t k = 0;
    do {
        tmp[k++] = hex[n & 0xf];
        n >>= 4;
    } while (n);
    for (size_t i = 0; i < k; i++) out[i] = tmp[k - 1 - i];
    out[k] = '\r';
    out[k + 1] = '\n';
    return k + 2;
}
