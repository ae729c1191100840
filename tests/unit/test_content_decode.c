/* test_content_decode.c — pt_content_decode (plugin/coding.c), the one-shot
 * decoder whole-body plugins use: every coding, multi-member gzip, zlib and
 * raw deflate, truncated and trailing bytes, the output cap against a
 * decompression bomb, unknown codings. */
#include <brotli/encode.h>
#include <stdlib.h>
#include <zlib.h>
#include <zstd.h>

#include "plugin/plugin.h"
#include "testlib.h"

/* Encodes src with zlib: window_bits 31 gzip, 15 zlib, -15 raw deflate. */
static size_t zenc(int window_bits, const char *src, size_t n, char *dst, size_t cap)
{
    z_stream z = {0};
    CHECK(deflateInit2(&z, 6, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    z.next_in = (Bytef *)(uintptr_t)src;
    z.avail_in = (uInt)n;
    z.next_out = (Bytef *)dst;
    z.avail_out = (uInt)cap;
    CHECK(deflate(&z, Z_FINISH) == Z_STREAM_END);
    size_t out = cap - z.avail_out;
    deflateEnd(&z);
    return out;
}

static const char *decode(const char *coding, const char *in, size_t n, size_t max, pt_decode_result *r)
{
    static char res[4096];
    char *out;
    size_t len;
    *r = pt_content_decode(pt_str_c(coding), in, n, max, &out, &len);
    if (*r != PT_DECODE_OK) {
        CHECK(out == NULL && len == 0);
        return "";
    }
    snprintf(res, sizeof(res), "%.*s", (int)len, out);
    free(out);
    return res;
}

static const char text[] = "{\"hello\": \"world\", \"n\": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}";

TEST(every_coding_decodes)
{
    char enc[1024];
    pt_decode_result r;
    size_t n = zenc(31, text, strlen(text), enc, sizeof(enc));
    CHECK_STR(decode("gzip", enc, n, 1000, &r), text);
    CHECK_INT(r, PT_DECODE_OK);
    CHECK_STR(decode("X-GZIP", enc, n, 1000, &r), text);
    n = zenc(15, text, strlen(text), enc, sizeof(enc));
    CHECK_STR(decode("deflate", enc, n, 1000, &r), text);
    n = zenc(-15, text, strlen(text), enc, sizeof(enc));
    CHECK_STR(decode("deflate", enc, n, 1000, &r), text);
    size_t bn = sizeof(enc);
    CHECK(BrotliEncoderCompress(5, 22, BROTLI_MODE_TEXT, strlen(text), (const uint8_t *)text, &bn, (uint8_t *)enc));
    CHECK_STR(decode("br", enc, bn, 1000, &r), text);
    n = ZSTD_compress(enc, sizeof(enc), text, strlen(text), 3);
    CHECK(!ZSTD_isError(n));
    CHECK_STR(decode("zstd", enc, n, 1000, &r), text);
    CHECK_STR(decode("identity", text, strlen(text), 1000, &r), text);
    CHECK(pt_content_coding_known(PT_STR_LIT("Br")));
    CHECK(!pt_content_coding_known(PT_STR_LIT("compress")));
    decode("compress", text, strlen(text), 1000, &r);
    CHECK_INT(r, PT_DECODE_UNKNOWN);
}

TEST(gzip_members_are_joined)
{
    char enc[1024];
    size_t n = zenc(31, "abc", 3, enc, sizeof(enc));
    n += zenc(31, "def", 3, enc + n, sizeof(enc) - n);
    pt_decode_result r;
    CHECK_STR(decode("gzip", enc, n, 100, &r), "abcdef");
}

TEST(truncated_corrupt_and_trailing_bytes_are_malformed)
{
    char enc[1024];
    pt_decode_result r;
    const char *codings[] = {"gzip", "deflate", "br", "zstd"};
    for (size_t k = 0; k < 4; k++) {
        size_t n;
        if (k == 0) n = zenc(31, text, strlen(text), enc, sizeof(enc));
        else if (k == 1) n = zenc(15, text, strlen(text), enc, sizeof(enc));
        else if (k == 2) {
            n = sizeof(enc);
            CHECK(BrotliEncoderCompress(5, 22, BROTLI_MODE_TEXT, strlen(text), (const uint8_t *)text, &n,
                                        (uint8_t *)enc));
        } else n = ZSTD_compress(enc, sizeof(enc), text, strlen(text), 3);
        decode(codings[k], enc, n - 3, 1000, &r);
        CHECK_INT(r, PT_DECODE_MALFORMED);
        memcpy(enc + n, "XYZ", 3);
        decode(codings[k], enc, n + 3, 1000, &r);
        CHECK_INT(r, PT_DECODE_MALFORMED); /* gzip: "XYZ" is not a next member either */
        decode(codings[k], "not compressed at all", 21, 1000, &r);
        CHECK_INT(r, PT_DECODE_MALFORMED);
        decode(codings[k], "", 0, 1000, &r);
        CHECK_INT(r, PT_DECODE_MALFORMED);
    }
}

TEST(output_is_capped_against_bombs)
{
    size_t big = 20u << 20; /* 20 MiB of zeros: a few KB compressed */
    char *zeros = calloc(1, big);
    char *enc = malloc(1 << 20);
    pt_decode_result r;
    size_t n = zenc(31, zeros, big, enc, 1 << 20);
    CHECK(n < 100000);
    decode("gzip", enc, n, 1 << 20, &r);
    CHECK_INT(r, PT_DECODE_TOO_LARGE);
    n = ZSTD_compress(enc, 1 << 20, zeros, big, 3);
    decode("zstd", enc, n, 1 << 20, &r);
    CHECK_INT(r, PT_DECODE_TOO_LARGE);
    n = 1 << 20;
    CHECK(BrotliEncoderCompress(5, 22, BROTLI_MODE_GENERIC, big, (const uint8_t *)zeros, &n, (uint8_t *)enc));
    decode("br", enc, n, 1 << 20, &r);
    CHECK_INT(r, PT_DECODE_TOO_LARGE);
    /* exactly at the cap is fine */
    n = zenc(31, zeros, 1000, enc, 1 << 20);
    char *out;
    size_t len;
    CHECK_INT(pt_content_decode(PT_STR_LIT("gzip"), enc, n, 1000, &out, &len), PT_DECODE_OK);
    CHECK_INT(len, 1000);
    free(out);
    CHECK_INT(pt_content_decode(PT_STR_LIT("gzip"), enc, n, 999, &out, &len), PT_DECODE_TOO_LARGE);
    CHECK_INT(pt_content_decode(PT_STR_LIT("identity"), zeros, 1000, 999, &out, &len), PT_DECODE_TOO_LARGE);
    free(zeros);
    free(enc);
}

TEST_MAIN()
