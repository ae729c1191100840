/* coding.c — one-shot decoding of a whole body in a content coding, for
 * plugins that rewrite whole bodies (plugin.h, "Content codings"). The
 * output is capped: a decompression bomb stops at `max` bytes. The
 * streaming decoders of the compression plugin are separate (they also cap
 * the ratio per call); this is the simple form for a body already
 * buffered. */
#include <brotli/decode.h>
#include <stdlib.h>
#include <zlib.h>
#include <zstd.h>

#include "plugin/plugin.h"

#define STEP (64u << 10)
#define ZSTD_WINDOW_LOG_MAX 23 /* 8 MiB, RFC 9659's cap for HTTP */

typedef enum { C_GZIP, C_DEFLATE, C_BR, C_ZSTD, C_IDENTITY, C_UNKNOWN } coding;

static coding coding_of(pt_str s)
{
    if (pt_str_ieq_lit(s, "gzip") || pt_str_ieq_lit(s, "x-gzip")) return C_GZIP;
    if (pt_str_ieq_lit(s, "deflate")) return C_DEFLATE;
    if (pt_str_ieq_lit(s, "br")) return C_BR;
    if (pt_str_ieq_lit(s, "zstd")) return C_ZSTD;
    if (pt_str_ieq_lit(s, "identity")) return C_IDENTITY;
    return C_UNKNOWN;
}

bool pt_content_coding_known(pt_str c) { return coding_of(c) != C_UNKNOWN; }

/* Output room for one more step, never more than one byte past max (so the
 * cap is detected exactly). NULL-free: grows *out. */
static size_t room(char **out, size_t *cap, size_t len, size_t max)
{
    size_t want = len + (max - len < STEP ? max - len + 1 : STEP);
    if (want > *cap) {
        *out = pt_xrealloc(*out, want);
        *cap = want;
    }
    return want - len;
}

static pt_decode_result inflate_all(const char *in, size_t n, int window_bits, size_t max, char **out, size_t *len,
                                    size_t *cap)
{
    z_stream z = {0};
    if (inflateInit2(&z, window_bits) != Z_OK) return PT_DECODE_MALFORMED;
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)n;
    pt_decode_result r = PT_DECODE_MALFORMED;
    for (;;) {
        size_t step = room(out, cap, *len, max);
        z.next_out = (Bytef *)*out + *len;
        z.avail_out = (uInt)step;
        int rc = inflate(&z, Z_NO_FLUSH);
        *len += step - z.avail_out;
        if (*len > max) {
            r = PT_DECODE_TOO_LARGE;
            break;
        }
        if (rc == Z_STREAM_END) {
            if (z.avail_in == 0) {
                r = PT_DECODE_OK;
                break;
            }
            /* another gzip member (RFC 1952 allows several) */
            if (window_bits < 16 || inflateReset(&z) != Z_OK) break;
            continue;
        }
        if (rc != Z_OK && !(rc == Z_BUF_ERROR && z.avail_out == 0)) break; /* data error, or truncated */
        if (z.avail_in == 0 && z.avail_out != 0) break;                    /* ended before the stream did */
    }
    inflateEnd(&z);
    return r;
}

static pt_decode_result brotli_all(const char *in, size_t n, size_t max, char **out, size_t *len, size_t *cap)
{
    BrotliDecoderState *s = BrotliDecoderCreateInstance(NULL, NULL, NULL);
    if (!s) return PT_DECODE_MALFORMED;
    const uint8_t *next_in = (const uint8_t *)in;
    size_t avail_in = n;
    pt_decode_result r = PT_DECODE_MALFORMED;
    for (;;) {
        size_t step = room(out, cap, *len, max);
        uint8_t *next_out = (uint8_t *)*out + *len;
        size_t avail_out = step;
        BrotliDecoderResult rc = BrotliDecoderDecompressStream(s, &avail_in, &next_in, &avail_out, &next_out, NULL);
        *len += step - avail_out;
        if (*len > max) {
            r = PT_DECODE_TOO_LARGE;
            break;
        }
        if (rc == BROTLI_DECODER_RESULT_SUCCESS) {
            if (avail_in == 0) r = PT_DECODE_OK;
            break;
        }
        if (rc != BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT) break; /* error, or truncated */
    }
    BrotliDecoderDestroyInstance(s);
    return r;
}

static pt_decode_result zstd_all(const char *in, size_t n, size_t max, char **out, size_t *len, size_t *cap)
{
    ZSTD_DCtx *d = ZSTD_createDCtx();
    if (!d) return PT_DECODE_MALFORMED;
    pt_decode_result r = PT_DECODE_MALFORMED;
    if (ZSTD_isError(ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, ZSTD_WINDOW_LOG_MAX))) goto done;
    ZSTD_inBuffer ib = {in, n, 0};
    size_t rc = 1;
    while (ib.pos < ib.size || rc != 0) {
        size_t step = room(out, cap, *len, max);
        ZSTD_outBuffer ob = {*out + *len, step, 0};
        size_t before = ib.pos;
        rc = ZSTD_decompressStream(d, &ob, &ib);
        *len += ob.pos;
        if (ZSTD_isError(rc)) goto done;
        if (*len > max) {
            r = PT_DECODE_TOO_LARGE;
            goto done;
        }
        if (rc != 0 && ib.pos == ib.size && ob.pos < ob.size && ib.pos == before) goto done; /* truncated */
    }
    r = PT_DECODE_OK;
done:
    ZSTD_freeDCtx(d);
    return r;
}

pt_decode_result pt_content_decode(pt_str c, const char *in, size_t n, size_t max, char **out, size_t *outlen)
{
    *out = NULL;
    *outlen = 0;
    size_t cap = 0;
    pt_decode_result r;
    switch (coding_of(c)) {
    case C_GZIP:
        r = inflate_all(in, n, 15 + 16, max, out, outlen, &cap);
        break;
    case C_DEFLATE: {
        /* RFC 9110's deflate is the zlib format, but raw deflate is common:
         * a valid zlib header (CM 8, CINFO <= 7, check bits) decides */
        unsigned b0 = n > 0 ? (unsigned char)in[0] : 0, b1 = n > 1 ? (unsigned char)in[1] : 0;
        bool zlib = n > 1 && (b0 & 0x0f) == 8 && (b0 >> 4) <= 7 && ((b0 << 8) | b1) % 31 == 0;
        r = inflate_all(in, n, zlib ? 15 : -15, max, out, outlen, &cap);
        break;
    }
    case C_BR:
        r = brotli_all(in, n, max, out, outlen, &cap);
        break;
    case C_ZSTD:
        r = zstd_all(in, n, max, out, outlen, &cap);
        break;
    case C_IDENTITY:
        if (n > max) return PT_DECODE_TOO_LARGE;
        *out = pt_xmalloc(n ? n : 1);
        if (n) memcpy(*out, in, n);
        *outlen = n;
        return PT_DECODE_OK;
    default:
        return PT_DECODE_UNKNOWN;
    }
    if (r != PT_DECODE_OK) {
        free(*out);
        *out = NULL;
        *outlen = 0;
    }
    return r;
}
