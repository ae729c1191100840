/* fuzz_h1.c — libFuzzer driver for the HTTP/1 codec.
 *
 * Input: byte 0 selects options (bit 0: small limits, bit 1: response to a
 * HEAD request, bits 2..7: seed for the chunked piece sizes); the rest is
 * fed to pt_h1_parse_request, pt_h1_parse_response and pt_chunked_decode
 * (the decoder also gets the bytes after a successfully parsed head).
 * Besides crashes, leaks and UB it checks the contract's invariants and
 * aborts (__builtin_trap) when one fails:
 *   - a successful parse consumes 0 < r <= len, every slice into the input
 *     lies inside the head, and parsing exactly the head gives the same r;
 *   - every strict prefix of a successfully parsed head gives PT_AGAIN;
 *   - PT_AGAIN is only returned while len < max_header_size;
 *   - errors carry an expected status and a detail;
 *   - the chunked decoder gives the same outcome, payload and trailers
 *     whether fed at once or in random-sized pieces.
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc tests/fuzz/fuzz_h1.c
 *        src/http/h1.c src/http/message.c src/core/arena.c src/core/common.c
 * (not src/http/h1*.c: that glob also picks up h1_server.c and its deps). */
#include "http/h1.h"

#include <stdlib.h>

#define REQUIRE(c) do { if (!(c)) __builtin_trap(); } while (0)

static const pt_h1_limits small_limits = {.max_request_line = 64, .max_header_size = 256, .max_headers = 8};

static void check_slice(pt_str s, const char *buf, size_t head_len)
{
    if (s.p >= buf && s.p <= buf + head_len) REQUIRE(s.n <= head_len - (size_t)(s.p - buf));
    REQUIRE(s.n == 0 || s.p != NULL);
}

static void check_headers(const pt_headers *h, const char *buf, size_t head_len)
{
    REQUIRE(h->n <= h->cap || (h->n == 0 && h->cap == 0));
    for (uint32_t i = 0; i < h->n; i++) {
        REQUIRE(h->v[i].name.n > 0);
        check_slice(h->v[i].name, buf, head_len);
        check_slice(h->v[i].value, buf, head_len);
    }
}

static char *exact_copy(const uint8_t *p, size_t n)
{
    char *b = malloc(n ? n : 1);
    if (n) memcpy(b, p, n);
    return b;
}

static ssize_t parse_one(bool response, const char *buf, size_t n, const pt_h1_limits *lim, bool head,
                         pt_arena *a, pt_request *req, pt_response *res, pt_h1_info *info, pt_h1_error *err)
{
    return response ? pt_h1_parse_response(buf, n, lim, head, a, res, info, err)
                    : pt_h1_parse_request(buf, n, lim, a, req, info, err);
}

/* Returns the head length on success, else 0. */
static size_t fuzz_head(bool response, const uint8_t *data, size_t n, const pt_h1_limits *lim, bool head)
{
    size_t max_head = lim ? lim->max_header_size : PT_H1_DEFAULT_MAX_HEADER_SIZE;
    char *buf = exact_copy(data, n);
    pt_arena *a = pt_arena_new(1024);
    pt_request req;
    pt_response res;
    pt_h1_info info;
    pt_h1_error err;
    ssize_t r = parse_one(response, buf, n, lim, head, a, &req, &res, &info, &err);
    if (r == PT_AGAIN) {
        REQUIRE(n < max_head);
        REQUIRE(pt_arena_used(a) == 0);
    } else if (r == PT_ERR) {
        REQUIRE(err.detail != NULL);
        if (response) REQUIRE(err.status == 502);
        else REQUIRE(err.status == 400 || err.status == 414 || err.status == 417 || err.status == 431 ||
                     err.status == 505);
    } else {
        REQUIRE(r > 0 && (size_t)r <= n && (size_t)r <= max_head);
        size_t hl = (size_t)r;
        if (response) {
            REQUIRE(res.status >= 100 && res.status <= 599);
            check_slice(res.reason, buf, hl);
            check_headers(&res.headers, buf, hl);
            check_slice(res.upgrade, buf, hl);
            REQUIRE(info.upgrade == (res.upgrade.p != NULL));
            REQUIRE(res.has_body == (info.body != PT_H1_BODY_NONE));
            if (info.body == PT_H1_BODY_CLOSE) REQUIRE(!info.keep_alive);
        } else {
            REQUIRE(req.version == 10 || req.version == 11);
            REQUIRE(req.method != PT_METHOD_CONNECT);
            REQUIRE(req.path.n > 0 && req.target.n >= req.path.n);
            check_slice(req.method_str, buf, hl);
            check_slice(req.target, buf, hl);
            check_slice(req.path, buf, hl);
            check_slice(req.query, buf, hl);
            check_slice(req.authority, buf, hl);
            check_slice(req.host, buf, hl);
            check_headers(&req.headers, buf, hl);
            check_slice(req.upgrade, buf, hl); /* one Upgrade field: a slice; several: joined in the arena */
            REQUIRE(info.upgrade == (req.upgrade.p != NULL));
            for (uint32_t i = 0; i < req.headers.n; i++) /* consumed, never passed on as fields */
                REQUIRE(!pt_str_ieq_lit(req.headers.v[i].name, "upgrade") &&
                        !pt_str_ieq_lit(req.headers.v[i].name, "connection"));
            REQUIRE(info.body != PT_H1_BODY_CLOSE);
            REQUIRE(req.has_body == (info.body != PT_H1_BODY_NONE));
            if (info.body == PT_H1_BODY_CHUNKED) REQUIRE(req.content_length == -1);
            if (info.body == PT_H1_BODY_LENGTH) REQUIRE(req.content_length >= 0);
            for (size_t i = 0; i < req.host.n; i++) REQUIRE(!(req.host.p[i] >= 'A' && req.host.p[i] <= 'Z'));
        }
        /* the head alone parses identically; its strict prefixes want more */
        pt_arena *a2 = pt_arena_new(1024);
        char *exact = exact_copy(data, hl);
        pt_request req2;
        pt_response res2;
        pt_h1_info info2;
        pt_h1_error err2;
        REQUIRE(parse_one(response, exact, hl, lim, head, a2, &req2, &res2, &info2, &err2) == r);
        REQUIRE(info2.body == info.body && info2.keep_alive == info.keep_alive);
        size_t cuts[4] = {hl - 1, hl / 2, hl > 2 ? hl - 2 : 0, 1};
        for (int i = 0; i < 4; i++) {
            if (cuts[i] >= hl) continue;
            REQUIRE(parse_one(response, exact, cuts[i], lim, head, a2, &req2, &res2, &info2, &err2) == PT_AGAIN);
        }
        free(exact);
        pt_arena_free(a2);
    }
    pt_arena_free(a);
    free(buf);
    return r > 0 ? (size_t)r : 0;
}

typedef struct {
    int rc; /* 0 ok, PT_ERR */
    bool done;
    size_t consumed;
    char *out;
    size_t out_len;
} chunk_result;

/* Decodes data[0..n) in pieces whose sizes come from a small PRNG; piece
 * size n (seed 0) means one shot. Each piece lives in its own exact buffer. */
static chunk_result chunk_run(const uint8_t *data, size_t n, uint32_t seed, pt_chunked_decoder *d)
{
    chunk_result r = {0, false, 0, malloc(n ? n : 1), 0};
    pt_chunked_init(d);
    uint32_t x = seed * 2654435761u + 1;
    size_t off = 0;
    while (off < n && !d->done) {
        size_t k = n - off;
        if (seed) {
            x = x * 1103515245u + 12345u;
            size_t want = 1 + ((x >> 16) % 17);
            if (want < k) k = want;
        }
        char *piece = exact_copy(data + off, k);
        size_t used = 0;
        while (used < k && !d->done) {
            const char *p;
            size_t pl;
            pt_h1_error err;
            ssize_t c = pt_chunked_decode(d, piece + used, k - used, &p, &pl, &err);
            if (c < 0) {
                REQUIRE(c == PT_ERR && err.status == 400 && err.detail);
                r.rc = PT_ERR;
                free(piece);
                return r;
            }
            REQUIRE((size_t)c <= k - used);
            if (pl) {
                REQUIRE(p >= piece + used && p + pl == piece + used + (size_t)c);
                memcpy(r.out + r.out_len, p, pl);
                r.out_len += pl;
            } else {
                REQUIRE(p == NULL);
                REQUIRE(d->done || (size_t)c == k - used);
            }
            if (c == 0) break;
            used += (size_t)c;
        }
        free(piece);
        off += used;
        if (used < k && !d->done) break;
    }
    r.done = d->done;
    r.consumed = off;
    REQUIRE(d->trailers_len <= sizeof(d->trailers));
    return r;
}

static void fuzz_chunked(const uint8_t *data, size_t n, uint32_t seed)
{
    static pt_chunked_decoder whole_d, piece_d; /* 4 KiB each: keep off the stack */
    chunk_result whole = chunk_run(data, n, 0, &whole_d);
    chunk_result pieces = chunk_run(data, n, seed | 1, &piece_d);
    REQUIRE(whole.rc == pieces.rc);
    if (whole.rc == 0) {
        REQUIRE(whole.done == pieces.done);
        REQUIRE(whole.out_len == pieces.out_len && memcmp(whole.out, pieces.out, whole.out_len) == 0);
        if (whole.done) {
            REQUIRE(whole.consumed == pieces.consumed);
            REQUIRE(whole_d.trailers_len == piece_d.trailers_len);
            REQUIRE(memcmp(whole_d.trailers, piece_d.trailers, whole_d.trailers_len) == 0);
        }
    }
    free(whole.out);
    free(pieces.out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    uint8_t opt = data[0];
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    const pt_h1_limits *lim = (opt & 1) ? &small_limits : NULL;
    bool head = (opt & 2) != 0;
    size_t req_head = fuzz_head(false, p, n, lim, head);
    size_t res_head = fuzz_head(true, p, n, lim, head);
    fuzz_chunked(p, n, opt >> 2);
    /* a chunked body right after a head: the realistic position */
    size_t body_at = req_head ? req_head : res_head;
    if (body_at && body_at < n) fuzz_chunked(p + body_at, n - body_at, opt >> 2);
    return 0;
}
