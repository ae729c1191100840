/* test_trailers.c — the trailer field filter shared by the codecs
 * (message.c: pt_field_connection_specific, pt_trailer_field_forbidden,
 * pt_trailers_parse, pt_trailers_lines). */
#include "http/message.h"
#include "testlib.h"

TEST(connection_specific_fields)
{
    CHECK(pt_field_connection_specific(PT_STR_LIT("Connection")));
    CHECK(pt_field_connection_specific(PT_STR_LIT("keep-alive")));
    CHECK(pt_field_connection_specific(PT_STR_LIT("Proxy-Connection")));
    CHECK(pt_field_connection_specific(PT_STR_LIT("TRANSFER-ENCODING")));
    CHECK(pt_field_connection_specific(PT_STR_LIT("upgrade")));
    CHECK(pt_field_connection_specific(PT_STR_LIT("TE")));
    CHECK(!pt_field_connection_specific(PT_STR_LIT("content-length")));
    CHECK(!pt_field_connection_specific(PT_STR_LIT("tea")));
    CHECK(!pt_field_connection_specific(PT_STR_LIT("x-connection")));
}

TEST(forbidden_trailer_fields)
{
    static const char *const bad[] = {
        "Content-Length", "transfer-encoding", "Host", ":authority", ":path", "connection", "keep-alive", "te",
        "upgrade", "proxy-connection", "Trailer", "Authorization", "proxy-authorization", "cookie",
        "Set-Cookie", "expect", "range", "max-forwards", "If-Match", "if-none-match", "if-modified-since",
        "if-unmodified-since", "if-range", "content-type", "Content-Encoding", "content-range", "",
    };
    for (size_t i = 0; i < PT_ARRAY_LEN(bad); i++) {
        if (!pt_trailer_field_forbidden(pt_str_c(bad[i]))) fprintf(stderr, "  allowed: %s\n", bad[i]);
        CHECK(pt_trailer_field_forbidden(pt_str_c(bad[i])));
    }
    static const char *const ok[] = {"x-checksum", "grpc-status", "Digest", "server-timing", "if", "ifx", "x-if-match"};
    for (size_t i = 0; i < PT_ARRAY_LEN(ok); i++) CHECK(!pt_trailer_field_forbidden(pt_str_c(ok[i])));
}

/* Parsed and written back: what the txn does with a trailer section. */
static pt_str filter(pt_arena *a, pt_str raw)
{
    pt_headers h = {0};
    pt_trailers_parse(&h, a, raw);
    return pt_trailers_lines(a, &h);
}

TEST(filter_keeps_order_and_drops_forbidden)
{
    pt_arena *a = pt_arena_new(1024);
    pt_str in = PT_STR_LIT("X-A: 1\r\nContent-Length: 5\r\nx-b:two words \r\nHost: h\r\nX-C:\r\n");
    pt_str out = filter(a, in);
    CHECK_SLICE(out, "X-A: 1\r\nx-b: two words\r\nX-C: \r\n");
    pt_arena_free(a);
}

TEST(filter_tolerates_lf_and_missing_final_newline)
{
    pt_arena *a = pt_arena_new(1024);
    pt_str out = filter(a, PT_STR_LIT("a:b\nc:d"));
    CHECK_SLICE(out, "a: b\r\nc: d\r\n");
    out = filter(a, PT_STR_LIT("no colon here\r\n: empty-name\r\nk: v\r\n"));
    CHECK_SLICE(out, "k: v\r\n");
    pt_arena_free(a);
}

TEST(filter_empty_results)
{
    pt_arena *a = pt_arena_new(1024);
    CHECK(filter(a, PT_STR_NULL).n == 0);
    pt_str out = filter(a, PT_STR_LIT("Authorization: x\r\nCookie: y\r\n"));
    CHECK(out.n == 0 && out.p == NULL);
    pt_arena_free(a);
}

TEST(lines_skip_forbidden_and_unsafe_values_added_later)
{
    pt_arena *a = pt_arena_new(1024);
    pt_headers h = {0};
    pt_headers_add(&h, a, PT_STR_LIT("x-ok"), PT_STR_LIT("1"));
    pt_headers_add(&h, a, PT_STR_LIT("content-length"), PT_STR_LIT("5"));
    pt_headers_add(&h, a, PT_STR_LIT("x-split"), PT_STR_LIT("a\r\nx-evil: 1"));
    CHECK_SLICE(pt_trailers_lines(a, &h), "x-ok: 1\r\n");
    pt_arena_free(a);
}

TEST(field_line_iterator)
{
    pt_str rest = PT_STR_LIT("A: 1\r\nno colon here\r\n: empty name\r\n  B\t:  two words \r\nC:3"), n, v;
    CHECK(pt_field_line_next(&rest, &n, &v));
    CHECK_SLICE(n, "A");
    CHECK_SLICE(v, "1");
    CHECK(pt_field_line_next(&rest, &n, &v)); /* the next two lines are skipped */
    CHECK_SLICE(n, "B");
    CHECK_SLICE(v, "two words");
    CHECK(pt_field_line_next(&rest, &n, &v)); /* last line without CRLF */
    CHECK_SLICE(n, "C");
    CHECK_SLICE(v, "3");
    CHECK(!pt_field_line_next(&rest, &n, &v));
    rest = PT_STR_NULL;
    CHECK(!pt_field_line_next(&rest, &n, &v));
}

TEST_MAIN()
