/* test_h1.c — the strict HTTP/1.1 codec: request/response heads, framing,
 * smuggling defences, limits, the chunked decoder. */
#include "http/h1.h"
#include "testlib.h"

#include <stdlib.h>

#define ERR_AGAIN 2 /* req_status()/res_status() result for PT_AGAIN */

/* A copy of s[0..n) in a heap block of exactly n bytes, so that ASan sees
 * any read past the end of the input. */
static char *exact_copy(const char *s, size_t n)
{
    char *p = malloc(n ? n : 1);
    if (n) memcpy(p, s, n);
    return p;
}

typedef struct {
    pt_arena *a;
    char *buf;
    ssize_t r;
    pt_request req;
    pt_response res;
    pt_h1_info info;
    pt_h1_error err;
} parsed;

static void parsed_free(parsed *p)
{
    pt_arena_free(p->a);
    free(p->buf);
}

static parsed parse_req_n(const char *s, size_t n, const pt_h1_limits *lim)
{
    parsed p;
    memset(&p, 0, sizeof(p));
    p.a = pt_arena_new(4096);
    p.buf = exact_copy(s, n);
    p.r = pt_h1_parse_request(p.buf, n, lim, p.a, &p.req, &p.info, &p.err);
    return p;
}
static parsed parse_req(const char *s) { return parse_req_n(s, strlen(s), NULL); }

static parsed parse_res_n(const char *s, size_t n, bool head)
{
    parsed p;
    memset(&p, 0, sizeof(p));
    p.a = pt_arena_new(4096);
    p.buf = exact_copy(s, n);
    p.r = pt_h1_parse_response(p.buf, n, NULL, head, p.a, &p.res, &p.info, &p.err);
    return p;
}
static parsed parse_res(const char *s, bool head) { return parse_res_n(s, strlen(s), head); }

/* 0 on success (and the whole input is the head), ERR_AGAIN, or the error
 * status. A success that does not consume everything returns -1. */
static int status_of(parsed *p, size_t n)
{
    int st;
    if (p->r == PT_AGAIN) st = ERR_AGAIN;
    else if (p->r == PT_ERR) st = p->err.status;
    else st = (size_t)p->r == n ? 0 : -1;
    if (p->r == PT_ERR && p->err.detail == NULL) st = -3; /* errors must explain themselves */
    return st;
}

static int req_status_lim(const char *s, const pt_h1_limits *lim)
{
    parsed p = parse_req_n(s, strlen(s), lim);
    int st = status_of(&p, strlen(s));
    parsed_free(&p);
    return st;
}
static int req_status(const char *s) { return req_status_lim(s, NULL); }

static int res_status(const char *s, bool head)
{
    parsed p = parse_res(s, head);
    int st = status_of(&p, strlen(s));
    parsed_free(&p);
    return st;
}

/* ------------------------------------------------------------ requests */

TEST(simple_get)
{
    const char *s = "GET /index.html HTTP/1.1\r\nHost: example.com\r\nUser-Agent:  curl/8 \r\nAccept: */*\r\n\r\n";
    parsed p = parse_req(s);
    CHECK_INT(p.r, strlen(s));
    CHECK_INT(p.req.method, PT_METHOD_GET);
    CHECK_SLICE(p.req.method_str, "GET");
    CHECK_SLICE(p.req.target, "/index.html");
    CHECK_SLICE(p.req.path, "/index.html");
    CHECK_INT(p.req.query.n, 0);
    CHECK(!p.req.has_query);
    CHECK_INT(p.req.version, 11);
    CHECK_SLICE(p.req.authority, "example.com");
    CHECK_SLICE(p.req.host, "example.com");
    CHECK_SLICE(p.req.scheme, "http");
    CHECK_INT(p.req.headers.n, 2);
    CHECK_SLICE(p.req.headers.v[0].name, "User-Agent");
    CHECK_SLICE(p.req.headers.v[0].value, "curl/8");
    CHECK_SLICE(p.req.headers.v[1].value, "*/*");
    CHECK(!p.req.has_body);
    CHECK_INT(p.info.body, PT_H1_BODY_NONE);
    CHECK(p.info.keep_alive);
    CHECK(!p.info.upgrade);
    CHECK(!p.req.expect_continue);
    parsed_free(&p);
}

TEST(header_name_case_preserved_value_tabs_trimmed)
{
    parsed p = parse_req("GET / HTTP/1.1\r\nhost: a\r\nX-MiXeD:\t a\tb \t\r\nX-Empty:\r\n\r\n");
    CHECK(p.r > 0);
    CHECK_INT(p.req.headers.n, 2);
    CHECK_SLICE(p.req.headers.v[0].name, "X-MiXeD");
    CHECK_SLICE(p.req.headers.v[0].value, "a\tb");
    CHECK_SLICE(p.req.headers.v[1].value, "");
    CHECK(pt_headers_get(&p.req.headers, "x-mixed") != NULL);
    parsed_free(&p);
}

TEST(pipelined_requests)
{
    const char *first = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
    const char *second = "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n";
    char both[256];
    snprintf(both, sizeof(both), "%s%sabc", first, second);
    parsed p = parse_req(both);
    CHECK_INT(p.r, strlen(first));
    CHECK_SLICE(p.req.path, "/a");
    parsed_free(&p);
    p = parse_req(both + strlen(first));
    CHECK_INT(p.r, strlen(second));
    CHECK_INT(p.req.method, PT_METHOD_POST);
    CHECK_INT(p.req.content_length, 3);
    parsed_free(&p);
}

TEST(every_prefix_is_again)
{
    const char *s = "\r\nPOST /up/load?x=1&y HTTP/1.1\r\nHost: Example.com:8080\r\nContent-Length: 5\r\n"
                    "Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nX-Tab:\tv\t\r\nExpect: 100-continue\r\n\r\n";
    size_t n = strlen(s);
    int bad = 0;
    pt_arena *a = pt_arena_new(4096);
    for (size_t k = 0; k < n; k++) {
        char *b = exact_copy(s, k);
        pt_request req;
        pt_h1_info info;
        pt_h1_error err;
        size_t before = pt_arena_used(a);
        ssize_t r = pt_h1_parse_request(b, k, NULL, a, &req, &info, &err);
        if (r != PT_AGAIN) {
            fprintf(stderr, "prefix %zu gave %zd (%s)\n", k, r, err.detail ? err.detail : "");
            bad++;
        }
        if (pt_arena_used(a) != before) bad++; /* AGAIN must not allocate */
        free(b);
    }
    CHECK_INT(bad, 0);
    pt_arena_free(a);
    parsed p = parse_req(s);
    CHECK_INT(p.r, n);
    CHECK_SLICE(p.req.host, "example.com");
    CHECK_SLICE(p.req.query, "x=1&y");
    CHECK_INT(p.req.headers.n, 1); /* X-Tab; X-Hop named by Connection */
    CHECK(p.req.expect_continue);
    parsed_free(&p);
}

TEST(many_headers_spill_to_arena_and_prefixes)
{
    char s[8192];
    size_t n = (size_t)snprintf(s, sizeof(s), "GET / HTTP/1.1\r\nHost: h\r\nConnection: X-7\r\n");
    for (int i = 0; i < 70; i++) n += (size_t)snprintf(s + n, sizeof(s) - n, "X-%d: v%d\r\n", i, i);
    n += (size_t)snprintf(s + n, sizeof(s) - n, "\r\n");
    parsed p = parse_req(s);
    CHECK_INT(p.r, n);
    CHECK_INT(p.req.headers.n, 69);
    CHECK_SLICE(p.req.headers.v[0].name, "X-0");
    CHECK_SLICE(p.req.headers.v[7].name, "X-8");
    CHECK_SLICE(p.req.headers.v[68].value, "v69");
    parsed_free(&p);
    int bad = 0;
    for (size_t k = 0; k < n; k++) {
        parsed q = parse_req_n(s, k, NULL);
        if (q.r != PT_AGAIN || pt_arena_used(q.a) != 0) bad++;
        parsed_free(&q);
    }
    CHECK_INT(bad, 0);
}

TEST(keep_alive_semantics)
{
    parsed p = parse_req("GET / HTTP/1.0\r\n\r\n");
    CHECK(p.r > 0);
    CHECK(!p.info.keep_alive);
    CHECK_INT(p.req.version, 10);
    CHECK_SLICE(p.req.authority, "");
    CHECK_SLICE(p.req.host, "");
    parsed_free(&p);
    p = parse_req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    CHECK(p.info.keep_alive);
    CHECK_INT(p.req.headers.n, 0);
    parsed_free(&p);
    p = parse_req("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n");
    CHECK(!p.info.keep_alive);
    parsed_free(&p);
    p = parse_req("GET / HTTP/1.1\r\nHost: h\r\nConnection: CLOSE\r\n\r\n");
    CHECK(!p.info.keep_alive);
    parsed_free(&p);
    p = parse_req("GET / HTTP/1.1\r\nHost: h\r\nConnection: ,, keep-alive ,\r\n\r\n");
    CHECK(p.r > 0);
    CHECK(p.info.keep_alive);
    parsed_free(&p);
}

TEST(http10_host_optional_but_validated)
{
    CHECK_INT(req_status("GET / HTTP/1.0\r\nHost:\r\n\r\n"), 0);
    CHECK_INT(req_status("GET / HTTP/1.0\r\nHost: a b\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n"), 400);
}

TEST(absolute_form)
{
    parsed p = parse_req("GET HTTP://Example.COM:8080/a/b?x=1 HTTP/1.1\r\nHost: other.example\r\n\r\n");
    CHECK(p.r > 0);
    CHECK_SLICE(p.req.authority, "Example.COM:8080");
    CHECK_SLICE(p.req.host, "example.com");
    CHECK_SLICE(p.req.target, "/a/b?x=1");
    CHECK_SLICE(p.req.path, "/a/b");
    CHECK_SLICE(p.req.query, "x=1");
    CHECK(p.req.has_query);
    parsed_free(&p);
}

TEST(absolute_form_empty_path)
{
    parsed p = parse_req("GET http://h HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(p.r > 0);
    CHECK_SLICE(p.req.target, "/");
    CHECK_SLICE(p.req.path, "/");
    parsed_free(&p);
    p = parse_req("GET http://h?q=2 HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(p.r > 0);
    CHECK_SLICE(p.req.target, "/?q=2");
    CHECK_SLICE(p.req.path, "/");
    CHECK_SLICE(p.req.query, "q=2");
    parsed_free(&p);
}

TEST(absolute_form_rejections)
{
    CHECK_INT(req_status("GET http://user@h/ HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    CHECK_INT(req_status("GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    CHECK_INT(req_status("GET https://h/ HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    CHECK_INT(req_status("GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    /* Host is still required in HTTP/1.1 */
    CHECK_INT(req_status("GET http://h/ HTTP/1.1\r\n\r\n"), 400);
}

TEST(query_split)
{
    parsed p = parse_req("GET /p/q?a=1&b=%20?c HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK_SLICE(p.req.path, "/p/q");
    CHECK_SLICE(p.req.query, "a=1&b=%20?c");
    CHECK(p.req.has_query);
    parsed_free(&p);
    p = parse_req("GET /p? HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK_SLICE(p.req.path, "/p");
    CHECK_SLICE(p.req.query, "");
    CHECK(p.req.has_query);
    parsed_free(&p);
}

TEST(options_star)
{
    parsed p = parse_req("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(p.r > 0);
    CHECK_INT(p.req.method, PT_METHOD_OPTIONS);
    CHECK_SLICE(p.req.path, "*");
    parsed_free(&p);
    CHECK_INT(req_status("GET * HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
}

TEST(connect_and_authority_form_rejected)
{
    CHECK_INT(req_status("CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n"), 400);
    CHECK_INT(req_status("CONNECT /x HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    CHECK_INT(req_status("GET h:80 HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    CHECK_INT(req_status("GET x HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
}

TEST(extension_methods)
{
    parsed p = parse_req("PURGE /x HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(p.r > 0);
    CHECK_INT(p.req.method, PT_METHOD_OTHER);
    CHECK_SLICE(p.req.method_str, "PURGE");
    parsed_free(&p);
    p = parse_req("get /x HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK_INT(p.req.method, PT_METHOD_OTHER); /* methods are case-sensitive */
    parsed_free(&p);
    CHECK_INT(req_status("G(T / HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    CHECK_INT(req_status(" GET / HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
}

TEST(host_forms)
{
    parsed p = parse_req("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n");
    CHECK(p.r > 0);
    CHECK_SLICE(p.req.host, "[::1]");
    CHECK_SLICE(p.req.authority, "[::1]:8080");
    parsed_free(&p);
    p = parse_req("GET / HTTP/1.1\r\nHost: API.Example.COM\r\n\r\n");
    CHECK_SLICE(p.req.host, "api.example.com");
    CHECK_SLICE(p.req.authority, "API.Example.COM");
    parsed_free(&p);
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: 10.0.0.1:65535\r\n\r\n"), 0);
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: a%2Db\r\n\r\n"), 0);
}

TEST(host_invalid)
{
    CHECK_INT(req_status("GET / HTTP/1.1\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost:\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: a:b:c\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: a:65536\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: a:\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: [zz]\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: a%zz\r\n\r\n"), 400);
}

TEST(content_length_rules)
{
    parsed p = parse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\ncontent-length: 5\r\n\r\n");
    CHECK(p.r > 0);
    CHECK_INT(p.info.body, PT_H1_BODY_LENGTH);
    CHECK_INT(p.info.content_length, 5);
    CHECK_INT(p.req.content_length, 5);
    CHECK(p.req.has_body);
    CHECK_INT(p.req.headers.n, 0);
    parsed_free(&p);
    CHECK_INT(req_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"), 400);
    CHECK_INT(req_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n"), 400);
    CHECK_INT(req_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5,\r\n\r\n"), 400);
    CHECK_INT(req_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n"), 400);
    CHECK_INT(req_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n"), 400);
    CHECK_INT(req_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n"), 400);
    CHECK_INT(req_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x5\r\n\r\n"), 400);
    CHECK_INT(req_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\n"), 400);
    CHECK_INT(req_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775807\r\n\r\n"), 0);
    CHECK_INT(req_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775808\r\n\r\n"), 400);
    CHECK_INT(req_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n"), 400);
}

TEST(body_framing_kinds)
{
    parsed p = parse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
    CHECK_INT(p.info.body, PT_H1_BODY_LENGTH);
    CHECK(p.req.has_body);
    CHECK_INT(p.req.content_length, 0);
    parsed_free(&p);
    p = parse_req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n");
    CHECK(p.r > 0);
    CHECK_INT(p.info.body, PT_H1_BODY_CHUNKED);
    CHECK(p.req.has_body);
    CHECK_INT(p.req.content_length, -1);
    CHECK(pt_headers_get(&p.req.headers, "transfer-encoding") == NULL);
    parsed_free(&p);
    p = parse_req("POST / HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK_INT(p.info.body, PT_H1_BODY_NONE);
    CHECK(!p.req.has_body);
    parsed_free(&p);
}

TEST(smuggling_cl_and_te)
{
    CHECK_INT(req_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
    CHECK_INT(req_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"), 400);
    CHECK_INT(req_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n"), 400);
}

TEST(smuggling_transfer_encoding_variants)
{
    CHECK_INT(req_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n"), 400);
    CHECK_INT(req_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"), 400);
    CHECK_INT(req_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), 400);
    CHECK_INT(req_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
    CHECK_INT(req_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
    CHECK_INT(req_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n"), 400);
    CHECK_INT(req_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;q=1\r\n\r\n"), 400);
    CHECK_INT(req_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n"), 400);
    CHECK_INT(req_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n"), 400);
    CHECK_INT(req_status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
    CHECK_INT(req_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \tchunked \r\n\r\n"), 0);
}

TEST(smuggling_line_endings)
{
    CHECK_INT(req_status("GET / HTTP/1.1\nHost: h\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: h\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: h\r\n\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: h\r\n\rX\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1.1\r\r\nHost: h\r\n\r\n"), 400);
    CHECK_INT(req_status("\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    CHECK_INT(req_status("\rGET / HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
}

TEST(obs_fold_rejected)
{
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n\tb\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1.1\r\n Host: h\r\n\r\n"), 400);
}

TEST(control_bytes_rejected)
{
    static const char nul_value[] = "GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n";
    parsed p = parse_req_n(nul_value, sizeof(nul_value) - 1, NULL);
    CHECK_INT(status_of(&p, sizeof(nul_value) - 1), 400);
    parsed_free(&p);
    static const char nul_name[] = "GET / HTTP/1.1\r\nHost: h\r\nX\0Y: b\r\n\r\n";
    p = parse_req_n(nul_name, sizeof(nul_name) - 1, NULL);
    CHECK_INT(status_of(&p, sizeof(nul_name) - 1), 400);
    parsed_free(&p);
    static const char nul_target[] = "GET /a\0b HTTP/1.1\r\nHost: h\r\n\r\n";
    p = parse_req_n(nul_target, sizeof(nul_target) - 1, NULL);
    CHECK_INT(status_of(&p, sizeof(nul_target) - 1), 400);
    parsed_free(&p);
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: h\r\nX: a\x01z\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: h\r\nX: a\x7fz\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: h\r\nX: 0123456789abcdef\x1f\r\n\r\n"), 400);
    CHECK_INT(req_status("GET /a\x7f HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    CHECK_INT(req_status("GET /\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    CHECK_INT(req_status("GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    /* obs-text is allowed in values */
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: h\r\nX: caf\xc3\xa9\r\n\r\n"), 0);
}

TEST(field_name_rules)
{
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost : h\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: h\r\nX-A\t: v\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: h\r\nX(A): v\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: h\r\nX\xc3\xa9: v\r\n\r\n"), 400);
}

TEST(versions)
{
    CHECK_INT(req_status("GET / HTTP/1.2\r\nHost: h\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / http/1.1\r\nHost: h\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/01.1\r\nHost: h\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1\r\nHost: h\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1.1 \r\nHost: h\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/2.0\r\nHost: h\r\n\r\n"), 505);
    CHECK_INT(req_status("GET / HTTP/3.0\r\nHost: h\r\n\r\n"), 505);
    CHECK_INT(req_status("GET /\r\n\r\n"), 400);
}

TEST(request_line_shape)
{
    CHECK_INT(req_status("GET  / HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    CHECK_INT(req_status("GET /  HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    CHECK_INT(req_status("GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    CHECK_INT(req_status("GET HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    CHECK_INT(req_status("\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
}

TEST(limit_request_line_414)
{
    pt_h1_limits lim = {.max_request_line = 32, .max_header_size = 4096, .max_headers = 10};
    /* "GET /xxxx HTTP/1.1" sized to exactly 32 bytes passes, 33 fails */
    char ok[128], over[128];
    snprintf(ok, sizeof(ok), "GET /%s HTTP/1.1\r\nHost: h\r\n\r\n", "aaaaaaaaaaaaaaaaaa");
    snprintf(over, sizeof(over), "GET /%s HTTP/1.1\r\nHost: h\r\n\r\n", "aaaaaaaaaaaaaaaaaaa");
    CHECK_INT(strchr(ok, '\r') - ok, 32);
    CHECK_INT(req_status_lim(ok, &lim), 0);
    CHECK_INT(req_status_lim(over, &lim), 414);
    /* no CRLF yet: 33 bytes may still become a 32-byte line + CR; 34 cannot */
    CHECK_INT(req_status_lim("GET /aaaaaaaaaaaaaaaaaa HTTP/1.1\r", &lim), ERR_AGAIN); /* 33 bytes */
    CHECK_INT(req_status_lim("GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaa", &lim), ERR_AGAIN); /* 33 bytes */
    CHECK_INT(req_status_lim("GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaa", &lim), 414);     /* 34 bytes */
    CHECK_INT(req_status_lim("GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", &lim), 414);
}

TEST(limit_header_size_431)
{
    const char *s = "GET / HTTP/1.1\r\nHost: h\r\nX-A: 0123456789\r\n\r\n";
    size_t n = strlen(s);
    pt_h1_limits exact = {.max_request_line = 100, .max_header_size = (uint32_t)n, .max_headers = 10};
    pt_h1_limits small = {.max_request_line = 100, .max_header_size = (uint32_t)n - 1, .max_headers = 10};
    CHECK_INT(req_status_lim(s, &exact), 0);
    CHECK_INT(req_status_lim(s, &small), 431);
    /* buffered bytes already exceed the limit, no end of head in sight */
    pt_h1_limits lim = {.max_request_line = 100, .max_header_size = 40, .max_headers = 10};
    CHECK_INT(req_status_lim("GET / HTTP/1.1\r\nHost: h\r\nX-A: 01234567", &lim), ERR_AGAIN);
    CHECK_INT(req_status_lim("GET / HTTP/1.1\r\nHost: h\r\nX-A: 012345678901234567890", &lim), 431);
    CHECK_INT(req_status_lim("GET / HTTP/1.1\r\nHost: h\r\nX-A: 0123456789012\r\nX-B: 1", &lim), 431);
    /* pipelined bytes after a small head do not count */
    CHECK_INT(req_status_lim("GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", &lim), -1);
}

TEST(limit_header_count_431)
{
    pt_h1_limits lim = {.max_request_line = 100, .max_header_size = 4096, .max_headers = 3};
    CHECK_INT(req_status_lim("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n", &lim), 0);
    CHECK_INT(req_status_lim("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", &lim), 431);
    /* counted even for fields the codec consumes */
    CHECK_INT(req_status_lim("GET / HTTP/1.1\r\nHost: h\r\nTE: x\r\nKeep-Alive: 1\r\nUpgrade: y\r\n\r\n", &lim), 431);
}

TEST(hop_by_hop_stripping)
{
    parsed p = parse_req("GET / HTTP/1.1\r\nHost: h\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\n"
                         "Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n"
                         "Upgrade: websocket\r\nTrailer: X-Sum\r\nx-secret: 2\r\nX-Keep: 3\r\n\r\n");
    CHECK(p.r > 0);
    CHECK(!p.info.keep_alive);
    CHECK(p.info.upgrade);
    CHECK_INT(p.req.headers.n, 2);
    CHECK(pt_headers_get(&p.req.headers, "trailer") != NULL);
    CHECK(pt_headers_get(&p.req.headers, "x-keep") != NULL);
    CHECK(pt_headers_get(&p.req.headers, "x-secret") == NULL);
    CHECK(pt_headers_get(&p.req.headers, "connection") == NULL);
    CHECK(pt_headers_get(&p.req.headers, "host") == NULL);
    parsed_free(&p);
}

TEST(connection_naming_framing_field_does_not_unframe)
{
    parsed p = parse_req("POST / HTTP/1.1\r\nHost: h\r\nConnection: Content-Length\r\nContent-Length: 4\r\n\r\n");
    CHECK(p.r > 0);
    CHECK_INT(p.info.body, PT_H1_BODY_LENGTH);
    CHECK_INT(p.req.content_length, 4);
    parsed_free(&p);
}

TEST(connection_invalid)
{
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: h\r\nConnection: close foo\r\n\r\n"), 400);
    CHECK_INT(req_status("GET / HTTP/1.1\r\nHost: h\r\nConnection: \"close\"\r\n\r\n"), 400);
}

TEST(expect_handling)
{
    parsed p = parse_req("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n");
    CHECK(p.r > 0);
    CHECK(p.req.expect_continue);
    CHECK(pt_headers_get(&p.req.headers, "expect") == NULL);
    parsed_free(&p);
    p = parse_req("PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
    CHECK(p.r > 0);
    CHECK(!p.req.expect_continue);
    parsed_free(&p);
    CHECK_INT(req_status("PUT / HTTP/1.1\r\nHost: h\r\nExpect: something\r\n\r\n"), 417);
}

/* ------------------------------------------------------------ responses */

TEST(response_content_length)
{
    parsed p = parse_res("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Type: text/plain\r\n\r\nhello world!", false);
    CHECK_INT(p.r, strlen("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Type: text/plain\r\n\r\n"));
    CHECK_INT(p.res.status, 200);
    CHECK_SLICE(p.res.reason, "OK");
    CHECK_INT(p.info.body, PT_H1_BODY_LENGTH);
    CHECK_INT(p.info.content_length, 12);
    CHECK(p.res.has_body);
    CHECK_INT(p.res.content_length, 12);
    CHECK(p.info.keep_alive);
    CHECK_INT(p.res.headers.n, 1);
    parsed_free(&p);
}

TEST(response_head_and_bodyless_statuses)
{
    parsed p = parse_res("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", true);
    CHECK_INT(p.info.body, PT_H1_BODY_NONE);
    CHECK(!p.res.has_body);
    CHECK_INT(p.res.content_length, 1234);
    parsed_free(&p);
    p = parse_res("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", false);
    CHECK_INT(p.info.body, PT_H1_BODY_NONE);
    CHECK(p.info.keep_alive);
    parsed_free(&p);
    p = parse_res("HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n", false);
    CHECK_INT(p.info.body, PT_H1_BODY_NONE);
    CHECK_INT(p.res.content_length, -1);
    parsed_free(&p);
    p = parse_res("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n", false);
    CHECK_INT(p.r, strlen("HTTP/1.1 100 Continue\r\n\r\n"));
    CHECK_INT(p.res.status, 100);
    CHECK_INT(p.info.body, PT_H1_BODY_NONE);
    parsed_free(&p);
    p = parse_res("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n", false);
    CHECK(p.info.upgrade);
    CHECK_INT(p.res.headers.n, 0);
    parsed_free(&p);
}

TEST(response_chunked_and_close_delimited)
{
    parsed p = parse_res("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false);
    CHECK_INT(p.info.body, PT_H1_BODY_CHUNKED);
    CHECK_INT(p.res.content_length, -1);
    CHECK(p.info.keep_alive);
    parsed_free(&p);
    p = parse_res("HTTP/1.1 200 OK\r\nX: y\r\n\r\n", false);
    CHECK_INT(p.info.body, PT_H1_BODY_CLOSE);
    CHECK(p.res.has_body);
    CHECK(!p.info.keep_alive);
    parsed_free(&p);
    p = parse_res("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", false);
    CHECK(p.info.keep_alive);
    CHECK_INT(p.info.body, PT_H1_BODY_LENGTH);
    parsed_free(&p);
    p = parse_res("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false);
    CHECK(!p.info.keep_alive);
    parsed_free(&p);
}

TEST(response_conflicting_framing_502)
{
    CHECK_INT(res_status("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", false), 502);
    CHECK_INT(res_status("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", false), 502);
    CHECK_INT(res_status("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false), 502);
    CHECK_INT(res_status("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", false), 502);
    CHECK_INT(res_status("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false), 502);
    CHECK_INT(res_status("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false), 502);
    /* still errors when the body is absent anyway */
    CHECK_INT(res_status("HTTP/1.1 204 No Content\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", false), 502);
    CHECK_INT(res_status("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", true), 502);
}

TEST(response_status_line)
{
    CHECK_INT(res_status("HTTP/1.1 200\r\n\r\n", false), 0);
    CHECK_INT(res_status("HTTP/1.1 200 \r\n\r\n", false), 0);
    CHECK_INT(res_status("HTTP/1.1 404 Not\tFound\r\n\r\n", false), 0);
    CHECK_INT(res_status("HTTP/1.1 099 Low\r\n\r\n", false), 502);
    CHECK_INT(res_status("HTTP/1.1 600 High\r\n\r\n", false), 502);
    CHECK_INT(res_status("HTTP/1.1 20 OK\r\n\r\n", false), 502);
    CHECK_INT(res_status("HTTP/1.1 2000 OK\r\n\r\n", false), 502);
    CHECK_INT(res_status("HTTP/2.0 200 OK\r\n\r\n", false), 502);
    CHECK_INT(res_status("http/1.1 200 OK\r\n\r\n", false), 502);
    CHECK_INT(res_status("HTTP/1.1  200 OK\r\n\r\n", false), 502);
    CHECK_INT(res_status("HTTP/1.1 200 OK\n\r\n", false), 502);
    CHECK_INT(res_status("HTTP/1.1 200 O\x01K\r\n\r\n", false), 502);
    CHECK_INT(res_status("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", false), 502);
    CHECK_INT(res_status("\r\nHTTP/1.1 200 OK\r\n\r\n", false), 502);
}

TEST(response_every_prefix_is_again)
{
    const char *s = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: X-A\r\nX-A: 1\r\nServer: t\r\n\r\n";
    size_t n = strlen(s);
    int bad = 0;
    for (size_t k = 0; k < n; k++) {
        parsed p = parse_res_n(s, k, false);
        if (p.r != PT_AGAIN) bad++;
        parsed_free(&p);
    }
    CHECK_INT(bad, 0);
    parsed p = parse_res(s, false);
    CHECK_INT(p.r, n);
    CHECK_INT(p.res.headers.n, 1);
    CHECK_SLICE(p.res.headers.v[0].name, "Server");
    parsed_free(&p);
}

TEST(rebase_after_copy)
{
    const char *s = "GET /a?b HTTP/1.1\r\nHost: H\r\nX: y\r\n\r\n";
    parsed p = parse_req(s);
    CHECK(p.r > 0);
    char *copy = pt_arena_strndup(p.a, p.buf, (size_t)p.r);
    memset(p.buf, '#', strlen(s)); /* the read buffer is reused */
    pt_request_rebase(&p.req, p.buf, (size_t)p.r, copy);
    CHECK_SLICE(p.req.path, "/a");
    CHECK_SLICE(p.req.query, "b");
    CHECK_SLICE(p.req.host, "h");
    CHECK_SLICE(p.req.scheme, "http");
    CHECK_SLICE(p.req.headers.v[0].value, "y");
    parsed_free(&p);
}

/* -------------------------------------------------------------- chunked */

typedef struct {
    char data[4096];
    size_t data_len;
    size_t consumed;
    int rc; /* 0 ok (maybe not done), PT_ERR */
    pt_h1_error err;
    pt_chunked_decoder d;
} decoded;

/* Feeds s[0..n) to a fresh decoder in pieces of `piece` bytes (each piece in
 * its own exactly-sized heap block), re-feeding unconsumed bytes, until done
 * or error or the input runs out. */
static decoded *decode(const char *s, size_t n, size_t piece, uint32_t max_trailer)
{
    decoded *r = calloc(1, sizeof(*r));
    pt_chunked_init(&r->d);
    if (max_trailer) r->d.max_trailer_size = max_trailer;
    size_t off = 0;
    while (off < n && !r->d.done) {
        size_t k = n - off < piece ? n - off : piece;
        char *b = exact_copy(s + off, k);
        size_t used = 0;
        while (used < k && !r->d.done) {
            const char *data;
            size_t dl;
            ssize_t c = pt_chunked_decode(&r->d, b + used, k - used, &data, &dl, &r->err);
            if (c < 0) {
                r->rc = PT_ERR;
                free(b);
                return r;
            }
            if (dl) {
                CHECK(data + dl == b + used + (size_t)c);
                memcpy(r->data + r->data_len, data, dl);
                r->data_len += dl;
            }
            if (c == 0) break;
            used += (size_t)c;
        }
        free(b);
        off += used;
        r->consumed = off;
        if (used < k && !r->d.done) break; /* no progress */
    }
    return r;
}

static int chunk_status(const char *s)
{
    decoded *r = decode(s, strlen(s), strlen(s), 0);
    int st = r->rc == PT_ERR ? r->err.status : (r->d.done ? 0 : ERR_AGAIN);
    free(r);
    return st;
}

static const char chunked_body[] = "5\r\nhello\r\n1;ext=val;flag\r\n \r\nA;q=\"a \\\"b\\\" c\"\r\n0123456789\r\n"
                                   "0\r\nX-Sum: abc\r\nX-Other:1\r\n\r\nNEXT";

TEST(chunked_whole)
{
    size_t n = sizeof(chunked_body) - 1;
    decoded *r = decode(chunked_body, n, n, 0);
    CHECK_INT(r->rc, 0);
    CHECK(r->d.done);
    CHECK_INT(r->consumed, n - 4); /* stops before NEXT */
    CHECK_STRN(r->data, r->data_len, "hello 0123456789");
    CHECK_STRN(r->d.trailers, r->d.trailers_len, "X-Sum: abc\r\nX-Other:1\r\n");
    free(r);
}

TEST(chunked_every_piece_size)
{
    size_t n = sizeof(chunked_body) - 1;
    int bad = 0;
    for (size_t piece = 1; piece <= n; piece++) {
        decoded *r = decode(chunked_body, n, piece, 0);
        if (r->rc != 0 || !r->d.done || r->consumed != n - 4 || r->data_len != 16 ||
            memcmp(r->data, "hello 0123456789", 16) != 0 || r->d.trailers_len != 23)
            bad++;
        free(r);
    }
    CHECK_INT(bad, 0);
}

TEST(chunked_one_byte_feeding_progress)
{
    /* one byte at a time: every call consumes exactly that byte */
    const char *s = "3\r\nabc\r\n0\r\n\r\n";
    pt_chunked_decoder d;
    pt_chunked_init(&d);
    int bad = 0;
    char out[8];
    size_t got = 0;
    for (size_t i = 0; s[i]; i++) {
        const char *data;
        size_t dl;
        pt_h1_error err;
        ssize_t c = pt_chunked_decode(&d, s + i, 1, &data, &dl, &err);
        if (c != 1) bad++;
        if (dl) out[got++] = *data;
        if (d.done != (s[i + 1] == '\0')) bad++;
    }
    CHECK_INT(bad, 0);
    CHECK_STRN(out, got, "abc");
}

TEST(chunked_large_and_uppercase_sizes)
{
    pt_chunked_decoder d;
    pt_chunked_init(&d);
    const char *data;
    size_t dl;
    pt_h1_error err;
    const char *s = "FFFFFFFFFFFFFFFF\r\nxyz";
    ssize_t c = pt_chunked_decode(&d, s, strlen(s), &data, &dl, &err);
    CHECK_INT(c, strlen(s));
    CHECK_INT(dl, 3);
    CHECK(d.remaining == UINT64_MAX - 3);
    CHECK_INT(chunk_status("00000000000000a\r\n0123456789\r\n0\r\n\r\n"), 0);
}

TEST(chunked_malformed_sizes)
{
    CHECK_INT(chunk_status("\r\nabc\r\n0\r\n\r\n"), 400);
    CHECK_INT(chunk_status("g\r\n"), 400);
    CHECK_INT(chunk_status(" 5\r\nhello\r\n0\r\n\r\n"), 400);
    CHECK_INT(chunk_status("5 \r\nhello\r\n0\r\n\r\n"), 400);
    CHECK_INT(chunk_status("5\t\r\nhello\r\n0\r\n\r\n"), 400);
    CHECK_INT(chunk_status("0x5\r\nhello\r\n0\r\n\r\n"), 400);
    CHECK_INT(chunk_status("-5\r\nhello\r\n0\r\n\r\n"), 400);
    CHECK_INT(chunk_status("+5\r\nhello\r\n0\r\n\r\n"), 400);
    CHECK_INT(chunk_status("10000000000000000\r\n"), 400); /* 17 digits */
    CHECK_INT(chunk_status("00000000000000005\r\nhello\r\n"), 400);
    CHECK_INT(chunk_status("5\nhello\r\n0\r\n\r\n"), 400);
    CHECK_INT(chunk_status("5\rhello\r\n0\r\n\r\n"), 400);
    CHECK_INT(chunk_status(";x\r\n"), 400);
}

TEST(chunked_missing_crlf_after_data)
{
    CHECK_INT(chunk_status("5\r\nhelloX\r\n0\r\n\r\n"), 400);
    CHECK_INT(chunk_status("5\r\nhello\n0\r\n\r\n"), 400);
    CHECK_INT(chunk_status("5\r\nhello\rX0\r\n\r\n"), 400);
    CHECK_INT(chunk_status("5\r\nhello0\r\n\r\n"), 400);
}

TEST(chunked_extensions)
{
    CHECK_INT(chunk_status("1;a\r\nx\r\n0;b=c;d=\"e;f\"\r\n\r\n"), 0);
    CHECK_INT(chunk_status("1;\r\nx\r\n0\r\n\r\n"), 400);
    CHECK_INT(chunk_status("1; a\r\nx\r\n0\r\n\r\n"), 400);
    CHECK_INT(chunk_status("1 ;a\r\nx\r\n0\r\n\r\n"), 400);
    CHECK_INT(chunk_status("1;a=\r\nx\r\n0\r\n\r\n"), 400);
    CHECK_INT(chunk_status("1;a=b c\r\nx\r\n0\r\n\r\n"), 400);
    CHECK_INT(chunk_status("1;a=\"b\"c\r\nx\r\n0\r\n\r\n"), 400);
    CHECK_INT(chunk_status("1;a=\"b\r\nx\r\n0\r\n\r\n"), 400);
    CHECK_INT(chunk_status("1;a=\"b\x01\"\r\nx\r\n0\r\n\r\n"), 400);
    CHECK_INT(chunk_status("1;a\nx\r\n0\r\n\r\n"), 400);
}

TEST(chunked_extension_length_limit)
{
    char s[2200];
    /* chunk line of exactly 1024 bytes: "1;" + 1022 name bytes */
    size_t n = 0;
    s[n++] = '1';
    s[n++] = ';';
    memset(s + n, 'a', 1022);
    n += 1022;
    memcpy(s + n, "\r\nx\r\n0\r\n\r\n", 11);
    CHECK_INT(chunk_status(s), 0);
    /* one more byte */
    n = 0;
    s[n++] = '1';
    s[n++] = ';';
    memset(s + n, 'a', 1023);
    n += 1023;
    memcpy(s + n, "\r\nx\r\n0\r\n\r\n", 11);
    CHECK_INT(chunk_status(s), 400);
}

TEST(chunked_trailers)
{
    decoded *r = decode("0\r\nA: 1\r\nB:\t2 \r\n\r\n", 18, 3, 0);
    CHECK(r->d.done);
    CHECK_STRN(r->d.trailers, r->d.trailers_len, "A: 1\r\nB:\t2 \r\n");
    free(r);
    CHECK_INT(chunk_status("0\r\n\r\n"), 0);
    CHECK_INT(chunk_status("0\r\nA : 1\r\n\r\n"), 400);
    CHECK_INT(chunk_status("0\r\nNoColon\r\n\r\n"), 400);
    CHECK_INT(chunk_status("0\r\nA: 1\r\n b\r\n\r\n"), 400);
    CHECK_INT(chunk_status("0\r\n: 1\r\n\r\n"), 400);
    CHECK_INT(chunk_status("0\r\nA: 1\x01\r\n\r\n"), 400);
    CHECK_INT(chunk_status("0\r\nA: 1\n\r\n"), 400);
    CHECK_INT(chunk_status("0\r\nA: 1\r\n\n"), 400);
    CHECK_INT(chunk_status("0\r\n\n"), 400);
}

TEST(chunked_trailer_size_limit)
{
    decoded *r = decode("0\r\nA: 12\r\n\r\n", 13, 13, 7);
    CHECK_INT(r->rc, 0);
    CHECK(r->d.done);
    free(r);
    r = decode("0\r\nA: 123\r\n\r\n", 14, 14, 7);
    CHECK_INT(r->rc, PT_ERR);
    CHECK_INT(r->err.status, 400);
    free(r);
}

TEST(chunked_stays_failed_and_done_consumes_nothing)
{
    pt_chunked_decoder d;
    pt_chunked_init(&d);
    const char *data;
    size_t dl;
    pt_h1_error err;
    CHECK_INT(pt_chunked_decode(&d, "z", 1, &data, &dl, &err), PT_ERR);
    CHECK_INT(pt_chunked_decode(&d, "0\r\n\r\n", 5, &data, &dl, &err), PT_ERR);
    pt_chunked_init(&d);
    CHECK_INT(pt_chunked_decode(&d, "0\r\n\r\nGET", 8, &data, &dl, &err), 5);
    CHECK(d.done);
    CHECK_INT(pt_chunked_decode(&d, "GET", 3, &data, &dl, &err), 0);
    CHECK_INT(dl, 0);
}

TEST(chunked_partial_is_not_done)
{
    CHECK_INT(chunk_status("5\r\nhel"), ERR_AGAIN);
    CHECK_INT(chunk_status("5\r\nhello\r\n0\r\n"), ERR_AGAIN);
    CHECK_INT(chunk_status("5\r\nhello\r\n0\r\nA: 1\r\n"), ERR_AGAIN);
}

TEST(chunk_header_writer)
{
    char b[32];
    size_t n = pt_chunk_header(b, 0);
    CHECK_STRN(b, n, "0\r\n");
    n = pt_chunk_header(b, 255);
    CHECK_STRN(b, n, "ff\r\n");
    n = pt_chunk_header(b, 4096);
    CHECK_STRN(b, n, "1000\r\n");
    n = pt_chunk_header(b, SIZE_MAX);
    CHECK_STRN(b, n, "ffffffffffffffff\r\n");
    /* round trip through the decoder */
    char wire[64];
    size_t w = pt_chunk_header(wire, 11);
    memcpy(wire + w, "hello world\r\n0\r\n\r\n", 18);
    decoded *r = decode(wire, w + 18, 2, 0);
    CHECK(r->d.done);
    CHECK_STRN(r->data, r->data_len, "hello world");
    free(r);
}

/* ------------------------------------------------------------ upgrades */

TEST(request_upgrade_intent)
{
    parsed p = parse_req("GET /chat HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
                         "Upgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n");
    CHECK(p.r > 0);
    CHECK(p.info.upgrade);
    CHECK_SLICE(p.req.upgrade, "websocket");
    CHECK(p.req.connection_upgrade);
    CHECK(p.info.keep_alive);
    /* the hop-by-hop fields are consumed, the rest kept */
    CHECK_INT(p.req.headers.n, 1);
    CHECK_SLICE(p.req.headers.v[0].name, "Sec-WebSocket-Key");
    parsed_free(&p);
}

TEST(request_upgrade_without_connection_token)
{
    parsed p = parse_req("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMA\r\n"
                         "Connection: HTTP2-Settings\r\n\r\n");
    CHECK(p.r > 0);
    CHECK_SLICE(p.req.upgrade, "h2c");
    CHECK(!p.req.connection_upgrade);
    CHECK_INT(p.req.headers.n, 0); /* HTTP2-Settings was named by Connection */
    parsed_free(&p);
}

TEST(request_upgrade_fields_joined)
{
    parsed p = parse_req("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: foo/1, bar\r\nConnection: upgrade\r\n"
                         "Upgrade: websocket\r\n\r\n");
    CHECK(p.r > 0);
    CHECK_SLICE(p.req.upgrade, "foo/1, bar, websocket");
    CHECK(p.req.connection_upgrade);
    parsed_free(&p);
    p = parse_req("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: a\r\nUpgrade: b\r\nUpgrade: c\r\nUpgrade: d\r\n"
                  "Upgrade: e\r\n\r\n");
    CHECK(p.r == PT_ERR && p.err.status == 400);
    parsed_free(&p);
}

TEST(request_without_upgrade)
{
    parsed p = parse_req("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n");
    CHECK(p.r > 0);
    CHECK(!p.info.upgrade);
    CHECK(p.req.upgrade.n == 0);
    CHECK(p.req.connection_upgrade);
    parsed_free(&p);
}

TEST(response_101_upgrade)
{
    parsed p = parse_res("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Accept: x\r\n\r\n", false);
    CHECK(p.r > 0);
    CHECK_INT(p.res.status, 101);
    CHECK(!p.res.has_body);
    CHECK_SLICE(p.res.upgrade, "websocket");
    CHECK(p.res.connection_upgrade);
    CHECK_INT(p.res.headers.n, 1);
    parsed_free(&p);
}

TEST(upgrade_rebased_with_the_head)
{
    parsed p = parse_req("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n");
    CHECK(p.r > 0);
    char *copy = malloc((size_t)p.r);
    memcpy(copy, p.buf, (size_t)p.r);
    pt_request_rebase(&p.req, p.buf, (size_t)p.r, copy);
    memset(p.buf, 'x', (size_t)p.r);
    CHECK_SLICE(p.req.upgrade, "websocket");
    free(copy);
    parsed_free(&p);
}

TEST_MAIN()
