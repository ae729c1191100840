/* fuzz_h1_response.c — libFuzzer driver for the upstream side of the HTTP/1
 * codec: pt_h1_parse_response, pt_response_rebase, the framing decisions
 * (Content-Length, chunked, close-delimited, none for HEAD/1xx/204/304) and
 * pt_chunked_decode with trailers, driven the way upstream/h1_client.c
 * (process_input / on_eof) drives them: bytes arrive in pieces, the head
 * parser is re-run from the start of the unconsumed bytes after each piece,
 * 100 is skipped, other 1xx are interim heads, 101 is an error, then the
 * body is delimited by its framing; a close-delimited body ends at EOF.
 *
 * Input: byte 0 = options, bytes 1..2 = split seed, the rest = what the
 * upstream sends.
 *   bit 0      the request was HEAD
 *   bits 1..2  limits: default (NULL), Portico's config defaults, small, tiny
 *   bit 3      lower the decoder's max_trailer_size to (seed & 0xff)
 *   bit 4      the upstream closes the connection after the last byte (EOF)
 *   bit 5      after a complete keep-alive response, parse the bytes that
 *              follow as the next response (up to 8; h1_client would not
 *              reuse such a connection, but it is more parser input)
 * The exchange is simulated twice, in one piece and in seed-chosen pieces,
 * each byte of every piece handed over in an exactly sized heap copy (so
 * ASan sees any read past what was received). Besides crashes, leaks and UB,
 * the driver aborts (__builtin_trap) when the contract of http/h1.h breaks:
 *   - a head parse returns PT_AGAIN, PT_ERR (status 502, a detail) or
 *     0 < r <= len; PT_AGAIN only below max_header_size and without arena
 *     allocation; a prefix of a head that parses gives PT_AGAIN and the
 *     head parses to the same length and framing however it was split;
 *     the parser never succeeds on bytes that extend ones it rejected;
 *   - status is 100..599; reason and every header name/value are slices
 *     inside the head (and inside the arena copy after pt_response_rebase,
 *     with the same bytes); names are tokens, values have no CR/LF/NUL and
 *     no surrounding OWS; no framing/hop-by-hop field is left in headers;
 *   - framing: HEAD/1xx/204/304 => NONE; has_body <=> body != NONE;
 *     CLOSE => !keep_alive; LENGTH => content_length agrees; CHUNKED => -1;
 *   - body bytes: each piece is a sub-range of the buffer handed in, a
 *     Content-Length body never delivers more than announced, decoded
 *     bytes never exceed the bytes received, the decoder never consumes
 *     more than it was given, stays failed after an error and consumes
 *     nothing once done;
 *   - trailers: at most max_trailer_size bytes, CRLF-terminated field
 *     lines with a token name; pt_field_line_next / pt_trailers_parse + _lines on
 *     them stay inside them;
 *   - the transcript (heads, body bytes, trailers, outcome) is identical
 *     for the one-piece and the split run.
 * Build: see tests/fuzz/run.sh (every src/ file but the CLI). */
#include "http/h1.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c) do { if (!(c)) __builtin_trap(); } while (0)
#define MAX_MESSAGES 8

static const pt_h1_limits limit_sets[4] = {
    {0, 0, 0},              /* unused: NULL limits */
    {8192, 32768, 100},     /* Portico's configuration defaults */
    {64, 256, 8},
    {16, 48, 3},
};

/* ------------------------------------------------------------ transcript */

typedef struct {
    char *p;
    size_t n, cap;
} tlog;

static void tlog_put(tlog *t, const void *p, size_t n)
{
    if (t->n + n > t->cap) {
        t->cap = (t->n + n) * 2 + 64;
        t->p = realloc(t->p, t->cap);
        REQUIRE(t->p);
    }
    if (n) memcpy(t->p + t->n, p, n);
    t->n += n;
}

static void tlog_tag(tlog *t, char tag, uint64_t v)
{
    tlog_put(t, &tag, 1);
    tlog_put(t, &v, sizeof(v));
}

static char *exact_copy(const uint8_t *p, size_t n)
{
    char *b = malloc(n ? n : 1);
    REQUIRE(b);
    if (n) memcpy(b, p, n);
    return b;
}

static bool inside(pt_str s, const char *base, size_t len)
{
    return s.p >= base && s.p <= base + len && s.n <= (size_t)(base + len - s.p);
}

static bool is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_token(pt_str s)
{
    if (!s.n) return false;
    for (size_t i = 0; i < s.n; i++)
        if (!is_tchar((unsigned char)s.p[i])) return false;
    return true;
}

/* ------------------------------------------------------------ head checks */

static void check_head(const pt_response *res, const pt_h1_info *info, const char *buf, size_t hl, bool head_req)
{
    REQUIRE(res->status >= 100 && res->status <= 599);
    REQUIRE(inside(res->reason, buf, hl));
    for (size_t i = 0; i < res->reason.n; i++) REQUIRE(res->reason.p[i] != '\r' && res->reason.p[i] != '\n');
    REQUIRE(res->headers.n <= res->headers.cap || (res->headers.n == 0 && res->headers.cap == 0));
    REQUIRE(res->headers.n <= 2 * hl);
    for (uint32_t i = 0; i < res->headers.n; i++) {
        pt_str n = res->headers.v[i].name, v = res->headers.v[i].value;
        REQUIRE(inside(n, buf, hl) && inside(v, buf, hl));
        REQUIRE(is_token(n));
        for (size_t k = 0; k < v.n; k++) REQUIRE(v.p[k] != '\r' && v.p[k] != '\n' && v.p[k] != '\0');
        if (v.n) REQUIRE(v.p[0] != ' ' && v.p[0] != '\t' && v.p[v.n - 1] != ' ' && v.p[v.n - 1] != '\t');
        REQUIRE(!pt_field_connection_specific(n));
        REQUIRE(!pt_str_ieq_lit(n, "content-length"));
    }
    REQUIRE(res->has_body == (info->body != PT_H1_BODY_NONE));
    int st = res->status;
    if (head_req || st < 200 || st == 204 || st == 304) REQUIRE(info->body == PT_H1_BODY_NONE);
    switch (info->body) {
    case PT_H1_BODY_NONE:
        REQUIRE(res->content_length == -1 || (int64_t)info->content_length == res->content_length);
        if (res->content_length >= 0) REQUIRE(head_req || st == 304);
        break;
    case PT_H1_BODY_LENGTH:
        REQUIRE(res->content_length >= 0 && (uint64_t)res->content_length == info->content_length);
        break;
    case PT_H1_BODY_CHUNKED:
    case PT_H1_BODY_CLOSE:
        REQUIRE(res->content_length == -1);
        break;
    default:
        REQUIRE(0);
    }
    if (info->body == PT_H1_BODY_CLOSE) REQUIRE(!info->keep_alive);
}

/* Trailers as the decoder stores them: "name:value\r\n" lines, name a token. */
static void check_trailers(const pt_chunked_decoder *d, pt_arena *a)
{
    uint32_t cap = d->max_trailer_size < sizeof(d->trailers) ? d->max_trailer_size : (uint32_t)sizeof(d->trailers);
    REQUIRE(d->trailers_len <= cap);
    const char *p = d->trailers, *e = d->trailers + d->trailers_len;
    while (p < e) {
        const char *lf = memchr(p, '\n', (size_t)(e - p));
        REQUIRE(lf && lf > p && lf[-1] == '\r');
        const char *colon = memchr(p, ':', (size_t)(lf - p));
        REQUIRE(colon && colon > p && is_token(pt_str_make(p, (size_t)(colon - p))));
        p = lf + 1;
    }
    pt_str raw = pt_str_make(d->trailers, d->trailers_len), rest = raw, name, value;
    size_t fields = 0;
    while (pt_field_line_next(&rest, &name, &value)) {
        REQUIRE(inside(name, raw.p, raw.n) && inside(value, raw.p, raw.n) && inside(rest, raw.p, raw.n));
        REQUIRE(name.n > 0 && memchr(value.p, '\n', value.n) == NULL);
        REQUIRE(++fields <= raw.n);
    }
    pt_headers parsed = {0};
    pt_trailers_parse(&parsed, a, raw);
    pt_str kept = pt_trailers_lines(a, &parsed);
    REQUIRE(kept.n <= raw.n + 4 * (raw.n + 1));
    rest = kept;
    while (pt_field_line_next(&rest, &name, &value)) REQUIRE(!pt_trailer_field_forbidden(name));
}

/* -------------------------------------------------- the simulated exchange */

enum { S_HEAD, S_BODY, S_DONE, S_FAILED };

typedef struct {
    const uint8_t *in;   /* everything the upstream will send */
    size_t size;
    size_t recv;         /* bytes received so far (in[0..recv)) */
    size_t cons;         /* bytes consumed by the codec */
    const pt_h1_limits *lim;
    size_t max_head;
    bool head_req;
    bool next_messages;
    uint32_t max_trailer; /* 0: decoder default */
    int state;
    int messages;
    pt_arena *arena;      /* the exchange's arena (request arena in Portico) */
    /* current message */
    ssize_t oracle;       /* head parse of in[msg_start..size) in one go */
    pt_h1_info info;
    uint64_t remaining;   /* Content-Length bytes still to come */
    uint64_t body_bytes;  /* delivered for this message */
    size_t body_start;    /* offset of the first body byte */
    pt_chunked_decoder dec;
    tlog log;
} exch;

static void new_message(exch *x)
{
    x->state = S_HEAD;
    x->body_bytes = 0;
    x->remaining = 0;
    /* What the whole rest of the input gives in one call: a prefix must
     * agree with it (PT_AGAIN below the head's length, the same length at
     * or past it; never success where it fails). */
    size_t n = x->size - x->cons;
    char *buf = exact_copy(x->in + x->cons, n);
    pt_arena *a = pt_arena_new(512);
    pt_response res;
    pt_h1_info info;
    pt_h1_error err;
    x->oracle = pt_h1_parse_response(buf, n, x->lim, x->head_req, a, &res, &info, &err);
    pt_arena_free(a);
    free(buf);
}

static void fail_exchange(exch *x, char why)
{
    x->state = S_FAILED;
    tlog_tag(&x->log, 'F', (uint64_t)why);
}

static void complete(exch *x, bool with_trailers)
{
    tlog_tag(&x->log, 'E', x->body_bytes);
    if (with_trailers) {
        check_trailers(&x->dec, x->arena);
        tlog_tag(&x->log, 'T', x->dec.trailers_len);
        tlog_put(&x->log, x->dec.trailers, x->dec.trailers_len);
    }
    /* h1_client would not reuse a connection with bytes left over; going on
     * parses them as a next response all the same. */
    if (x->next_messages && x->info.keep_alive && ++x->messages < MAX_MESSAGES) {
        pt_arena_reset(x->arena);
        new_message(x);
        return;
    }
    x->state = S_DONE;
}

static void deliver(exch *x, const char *p, size_t n, const char *buf, size_t len)
{
    REQUIRE(n > 0 && p >= buf && p + n <= buf + len);
    x->body_bytes += n;
    REQUIRE(x->body_bytes <= x->recv - x->body_start); /* never more than received */
    tlog_put(&x->log, p, n); /* piece sizes depend on the split: only the bytes */
}

/* One pass of h1_client.c:process_input over in[cons..recv). */
static void process(exch *x)
{
    while (x->state == S_HEAD || x->state == S_BODY) {
        size_t avail = x->recv - x->cons;
        if (x->state == S_HEAD) {
            if (!avail) return;
            char *buf = exact_copy(x->in + x->cons, avail);
            pt_response res;
            pt_h1_info info;
            pt_h1_error err = {0, NULL};
            size_t used_before = pt_arena_used(x->arena);
            ssize_t r = pt_h1_parse_response(buf, avail, x->lim, x->head_req, x->arena, &res, &info, &err);
            if (x->oracle > 0) REQUIRE((size_t)x->oracle > avail ? r == PT_AGAIN : r == x->oracle);
            else if (x->oracle == PT_AGAIN) REQUIRE(r == PT_AGAIN);
            else REQUIRE(x->oracle == PT_ERR && (r == PT_AGAIN || r == PT_ERR));
            if (r == PT_AGAIN) {
                REQUIRE(avail < x->max_head);
                REQUIRE(pt_arena_used(x->arena) == used_before);
                free(buf);
                return;
            }
            if (r < 0) {
                REQUIRE(r == PT_ERR && err.status == 502 && err.detail && *err.detail);
                free(buf);
                fail_exchange(x, 'h');
                return;
            }
            size_t hl = (size_t)r;
            REQUIRE(hl <= avail && hl <= x->max_head && hl >= 16); /* "HTTP/1.1 200\r\n\r\n" */
            REQUIRE(memcmp(buf + hl - 4, "\r\n\r\n", 4) == 0);
            check_head(&res, &info, buf, hl, x->head_req);
            /* as h1_client: copy the head into the arena, rebase, drop it */
            char *copy = pt_arena_alloc(x->arena, hl);
            memcpy(copy, buf, hl);
            pt_response moved = res;
            pt_response_rebase(&moved, buf, hl, copy);
            free(buf); /* the read buffer moves on: nothing may point into it */
            check_head(&moved, &info, copy, hl, x->head_req);
            REQUIRE(moved.reason.n == res.reason.n && moved.headers.n == res.headers.n);
            tlog_tag(&x->log, 'H', (uint64_t)moved.status);
            tlog_tag(&x->log, 'L', hl);
            tlog_tag(&x->log, 'b', (uint64_t)info.body * 2 + info.keep_alive);
            tlog_tag(&x->log, 'n', moved.headers.n);
            for (uint32_t i = 0; i < moved.headers.n; i++) {
                tlog_put(&x->log, moved.headers.v[i].name.p, moved.headers.v[i].name.n);
                tlog_put(&x->log, ":", 1);
                tlog_put(&x->log, moved.headers.v[i].value.p, moved.headers.v[i].value.n);
                tlog_put(&x->log, "\n", 1);
            }
            x->cons += hl;
            if (moved.status < 200) {
                if (moved.status == 101) { /* no upgrade was asked for */
                    fail_exchange(x, 'u');
                    return;
                }
                new_message(x); /* an interim head: the final one follows */
                continue;
            }
            x->info = info;
            x->body_start = x->cons;
            x->state = S_BODY;
            if (info.body == PT_H1_BODY_LENGTH) x->remaining = info.content_length;
            if (info.body == PT_H1_BODY_CHUNKED) {
                pt_chunked_init(&x->dec);
                REQUIRE(x->dec.max_trailer_size == sizeof(x->dec.trailers));
                if (x->max_trailer) x->dec.max_trailer_size = x->max_trailer;
            }
            continue;
        }
        switch (x->info.body) {
        case PT_H1_BODY_NONE:
            complete(x, false);
            break;
        case PT_H1_BODY_LENGTH: {
            if (x->remaining == 0) {
                complete(x, false);
                break;
            }
            if (!avail) return;
            size_t n = (size_t)PT_MIN((uint64_t)avail, x->remaining);
            char *buf = exact_copy(x->in + x->cons, n);
            x->remaining -= n;
            deliver(x, buf, n, buf, n);
            REQUIRE(x->body_bytes <= x->info.content_length);
            free(buf);
            x->cons += n;
            break;
        }
        case PT_H1_BODY_CHUNKED: {
            if (x->dec.done) {
                const char *d;
                size_t dl;
                pt_h1_error err;
                char one = '0';
                REQUIRE(pt_chunked_decode(&x->dec, &one, 1, &d, &dl, &err) == 0 && dl == 0 && d == NULL);
                complete(x, true);
                break;
            }
            if (!avail) return;
            char *buf = exact_copy(x->in + x->cons, avail);
            const char *d = NULL;
            size_t dl = 0;
            pt_h1_error err = {0, NULL};
            ssize_t used = pt_chunked_decode(&x->dec, buf, avail, &d, &dl, &err);
            if (used < 0) {
                REQUIRE(used == PT_ERR && err.status == 400 && err.detail);
                /* errors are final */
                err.detail = NULL;
                REQUIRE(pt_chunked_decode(&x->dec, buf, avail, &d, &dl, &err) == PT_ERR && err.detail);
                free(buf);
                fail_exchange(x, 'c');
                return;
            }
            REQUIRE((size_t)used <= avail);
            if (dl) {
                REQUIRE(d + dl == buf + used); /* the payload ends where consumption does */
                deliver(x, d, dl, buf, avail);
            } else {
                REQUIRE(d == NULL);
                REQUIRE(x->dec.done || (size_t)used == avail);
            }
            REQUIRE(x->dec.trailers_len <= x->dec.max_trailer_size && x->dec.trailers_len <= sizeof(x->dec.trailers));
            free(buf);
            x->cons += (size_t)used;
            if (used == 0 && !x->dec.done) return;
            break;
        }
        case PT_H1_BODY_CLOSE: {
            if (!avail) return;
            char *buf = exact_copy(x->in + x->cons, avail);
            deliver(x, buf, avail, buf, avail);
            free(buf);
            x->cons += avail;
            break;
        }
        default:
            REQUIRE(0);
        }
    }
}

/* h1_client.c:on_eof: a close-delimited body ends; anything else fails. */
static void on_eof(exch *x)
{
    if (x->state == S_BODY && x->info.body == PT_H1_BODY_CLOSE) {
        x->info.keep_alive = false;
        complete(x, false);
        return;
    }
    if (x->state == S_HEAD || x->state == S_BODY) fail_exchange(x, 'e');
}

static void run(exch *x, const uint8_t *in, size_t size, uint8_t opt, uint16_t seed, bool split)
{
    memset(x, 0, sizeof(*x));
    x->in = in;
    x->size = size;
    int ls = (opt >> 1) & 3;
    x->lim = ls ? &limit_sets[ls] : NULL;
    x->max_head = ls ? limit_sets[ls].max_header_size : PT_H1_DEFAULT_MAX_HEADER_SIZE;
    x->head_req = opt & 1;
    x->max_trailer = (opt & 8) ? (seed & 0xff) + 1 : 0;
    x->next_messages = opt & 32;
    x->arena = pt_arena_new(1024);
    new_message(x);
    uint32_t rng = seed * 2654435761u + 7;
    while (x->recv < size && (x->state == S_HEAD || x->state == S_BODY)) {
        size_t k = size - x->recv;
        if (split) {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            size_t want = 1 + (rng >> 8) % (1u << (1 + (rng & 7))); /* 1..256, mostly small */
            if (want < k) k = want;
        }
        x->recv += k;
        process(x);
        REQUIRE(x->cons <= x->recv);
    }
    if (opt & 16) on_eof(x);
    tlog_tag(&x->log, 'S', (uint64_t)x->state);
    REQUIRE(x->cons <= size);
    pt_arena_free(x->arena);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3) return 0;
    uint8_t opt = data[0];
    uint16_t seed = (uint16_t)(data[1] | data[2] << 8);
    static exch whole, pieces; /* 4 KiB decoders: keep them off the stack */
    run(&whole, data + 3, size - 3, opt, seed, false);
    run(&pieces, data + 3, size - 3, opt, seed, true);
    REQUIRE(whole.log.n == pieces.log.n && memcmp(whole.log.p, pieces.log.p, whole.log.n) == 0);
    free(whole.log.p);
    free(pieces.log.p);
    return 0;
}
