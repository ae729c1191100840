/* test_websocket.c — the pure helpers of tunnels (http/websocket.h): the
 * Sec-WebSocket-Accept computation (RFC 6455's own example), key checks,
 * generated keys, comma-list iteration. */
#include "http/message.h"
#include "http/websocket.h"
#include "testlib.h"

TEST(accept_rfc6455_example)
{
    char out[PT_WS_ACCEPT_LEN + 1];
    pt_ws_accept(PT_STR_LIT("dGhlIHNhbXBsZSBub25jZQ=="), out);
    CHECK_STRN(out, strlen(out), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST(accept_other_key)
{
    /* base64(sha1("AAAAAAAAAAAAAAAAAAAAAA==" + GUID)), computed independently */
    char out[PT_WS_ACCEPT_LEN + 1];
    pt_ws_accept(PT_STR_LIT("AAAAAAAAAAAAAAAAAAAAAA=="), out);
    CHECK_INT(strlen(out), PT_WS_ACCEPT_LEN);
    char again[PT_WS_ACCEPT_LEN + 1];
    pt_ws_accept(PT_STR_LIT("AAAAAAAAAAAAAAAAAAAAAA=="), again);
    CHECK_STRN(out, strlen(out), again);
    CHECK(strcmp(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") != 0);
}

TEST(key_valid)
{
    CHECK(pt_ws_key_valid(PT_STR_LIT("dGhlIHNhbXBsZSBub25jZQ==")));
    CHECK(pt_ws_key_valid(PT_STR_LIT("AAAAAAAAAAAAAAAAAAAAAA==")));
    CHECK(pt_ws_key_valid(PT_STR_LIT("+/+/+/+/+/+/+/+/+/+/+w==")));
}

TEST(key_invalid)
{
    CHECK(!pt_ws_key_valid(PT_STR_NULL));
    CHECK(!pt_ws_key_valid(PT_STR_LIT("dGVzdA==")));                  /* 4 bytes */
    CHECK(!pt_ws_key_valid(PT_STR_LIT("dGhlIHNhbXBsZSBub25jZQ")));    /* no padding */
    CHECK(!pt_ws_key_valid(PT_STR_LIT("dGhlIHNhbXBsZSBub25jZQ=")));   /* one '=' */
    CHECK(!pt_ws_key_valid(PT_STR_LIT("dGhlIHNhbXBsZSBub25jZQ===")));
    CHECK(!pt_ws_key_valid(PT_STR_LIT("dGhlIHNhbXBsZSBub25jZ===")));  /* 17th byte padding */
    CHECK(!pt_ws_key_valid(PT_STR_LIT("dGhlIHNhbXBsZSBub25jZ-==")));  /* base64url */
    CHECK(!pt_ws_key_valid(PT_STR_LIT("dGhlIHNhbXBsZSBub25j Q==")));
    CHECK(!pt_ws_key_valid(pt_str_make("dGhlIHNhbXBsZSBub25j\0Q==", 24)));
    CHECK(!pt_ws_key_valid(PT_STR_LIT("YWJjZGVmZ2hpamtsbW5vcHFyc3Q="))); /* 20 bytes */
}

TEST(key_new_is_valid_and_fresh)
{
    char a[PT_WS_KEY_LEN + 1], b[PT_WS_KEY_LEN + 1];
    pt_ws_key_new(a);
    pt_ws_key_new(b);
    CHECK_INT(strlen(a), PT_WS_KEY_LEN);
    CHECK(pt_ws_key_valid(pt_str_c(a)));
    CHECK(pt_ws_key_valid(pt_str_c(b)));
    CHECK(strcmp(a, b) != 0);
}

TEST(list_iteration)
{
    pt_str rest = PT_STR_LIT(" websocket ,, h2c,\tfoo/2 ,"), tok;
    CHECK(pt_list_next(&rest, &tok));
    CHECK_SLICE(tok, "websocket");
    CHECK(pt_list_next(&rest, &tok));
    CHECK_SLICE(tok, "h2c");
    CHECK(pt_list_next(&rest, &tok));
    CHECK_SLICE(tok, "foo/2");
    CHECK(!pt_list_next(&rest, &tok));
    rest = PT_STR_NULL;
    CHECK(!pt_list_next(&rest, &tok));
    rest = PT_STR_LIT(" , ,");
    CHECK(!pt_list_next(&rest, &tok));
}

TEST_MAIN()
