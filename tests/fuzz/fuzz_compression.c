/* fuzz_compression.c — libFuzzer driver for the compression plugin's
 * parsers: the first byte picks a target, the rest is its input.
 *   0..3  a request-body decoder (gzip, deflate, br, zstd) with small caps
 *         (256 KiB, ratio 50), fed in pieces whose sizes come from the
 *         input: it must finish with a result, never exceed its caps by
 *         more than one step, crash, hang or leak;
 *   4     Accept-Encoding parsing and choice: a coding that was offered;
 *   5     Content-Type matching against the default patterns;
 *   6     an encoder round trip (gzip, br, zstd): decode(encode(x)) == x,
 *         with flushes where the input says. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "plugins/compression/compression.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const pt_coding decoders[] = {PT_CODING_GZIP, PT_CODING_DEFLATE, PT_CODING_BR, PT_CODING_ZSTD};
static const pt_coding encoders[] = {PT_CODING_GZIP, PT_CODING_BR, PT_CODING_ZSTD};

static void fuzz_decoder(pt_coding c, const uint8_t *p, size_t n)
{
    const uint64_t max = 256u << 10;
    pt_decoder *d = pt_decoder_new(c, max, 50);
    pt_comp_buf out = {0};
    pt_dec_result r = PT_DEC_OK;
    size_t off = 0;
    unsigned piece = n ? (p[0] % 97) + 1 : 1;
    do {
        size_t k = PT_MIN((size_t)piece, n - off);
        r = pt_decoder_write(d, (const char *)p + off, k, off + k == n, &out);
        off += k;
    } while (r == PT_DEC_OK && off < n);
    if (pt_decoder_total_out(d) > max + 1) __builtin_trap();
    if (out.len != pt_decoder_total_out(d)) __builtin_trap();
    pt_decoder_free(d);
    pt_comp_buf_free(&out);
}

static void fuzz_roundtrip(const uint8_t *p, size_t n)
{
    if (n == 0) return;
    pt_coding c = encoders[p[0] % 3];
    pt_encoder *e = pt_encoder_new(c, 1 + p[0] % 5, 15, (p[0] & 0x80) ? (int64_t)(n - 1) : -1);
    pt_comp_buf z = {0}, out = {0};
    size_t off = 1;
    while (off < n) {
        size_t k = PT_MIN((size_t)(p[off] % 64 + 1), n - off);
        if (pt_encoder_write(e, (const char *)p + off, k, (p[off] & 1) ? PT_ENC_FLUSH : PT_ENC_PROCESS, &z) != PT_OK)
            __builtin_trap();
        off += k;
    }
    if (pt_encoder_write(e, NULL, 0, PT_ENC_FINISH, &z) != PT_OK) __builtin_trap();
    pt_encoder_free(e);
    pt_decoder *d = pt_decoder_new(c, 1u << 20, 100000);
    if (pt_decoder_write(d, z.p, z.len, true, &out) != PT_DEC_OK) __builtin_trap();
    if (out.len != n - 1 || (out.len && memcmp(out.p, p + 1, out.len) != 0)) __builtin_trap();
    pt_decoder_free(d);
    pt_comp_buf_free(&z);
    pt_comp_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    unsigned which = data[0] % 7;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    pt_str s = pt_str_make((const char *)p, n);
    if (which < 4) {
        fuzz_decoder(decoders[which], p, n);
    } else if (which == 4) {
        static const pt_coding prefs[] = {PT_CODING_BR, PT_CODING_ZSTD, PT_CODING_GZIP};
        pt_accept_enc ae;
        pt_accept_enc_init(&ae);
        pt_accept_enc_parse(&ae, s);
        pt_coding c = pt_accept_enc_choose(&ae, prefs, 3);
        if (c != PT_CODING_IDENTITY && ae.q[c] == 0) __builtin_trap(); /* q=0 forbids */
        if (c != PT_CODING_IDENTITY && ae.q[c] < 0 && ae.star <= 0) __builtin_trap();
    } else if (which == 5) {
        pt_arena *a = pt_arena_new(1024);
        static const char *const pats[] = {"text/*", "application/*+json", "application/json", "*/*"};
        pt_comp_type_pat v[4];
        for (int i = 0; i < 4; i++)
            if (!pt_comp_type_pat_parse(a, pt_str_c(pats[i]), &v[i])) __builtin_trap();
        bool any = pt_comp_type_match(&v[3], 1, s);
        if (pt_comp_type_match(v, 3, s) && !any) __builtin_trap();
        pt_comp_type_pat mine;
        (void)pt_comp_type_pat_parse(a, s, &mine);
        pt_arena_free(a);
    } else {
        fuzz_roundtrip(p, n);
    }
    return 0;
}
