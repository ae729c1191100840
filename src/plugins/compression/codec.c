/* codec.c — streaming encoders (gzip, br, zstd) and decoders (gzip,
 * deflate, br, zstd) over zlib, libbrotli and libzstd, with one calling
 * convention: feed bytes, get the output appended to a pt_comp_buf. The
 * decoders enforce the output caps step by step (see compression.h).
 * Nothing here knows about HTTP or the proxy. */
#include "plugins/compression/compression.h"

#include <brotli/decode.h>
#include <brotli/encode.h>
#include <limits.h>
#include <stdlib.h>
#include <zlib.h>
#include <zstd.h>

void pt_comp_buf_reserve(pt_comp_buf *b, size_t more)
{
    if (b->cap - b->len >= more) return;
    size_t want = b->len + more;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < want) cap *= 2;
    b->p = pt_xrealloc(b->p, cap);
    b->cap = cap;
}

void pt_comp_buf_free(pt_comp_buf *b)
{
    free(b->p);
    *b = (pt_comp_buf){0};
}

/* ================================================================ encoders */

struct pt_encoder {
    pt_coding coding;
    bool finished;
    size_t held; /* input given since the last flush */
    union {
        z_stream z;
        BrotliEncoderState *br;
        ZSTD_CCtx *zs;
    } u;
};

/* Output room to offer the encoder per round: about half the input (text
 * compresses at least that well), at least 8 KiB; the buffer doubles when
 * an encoder needs more. */
static size_t enc_room(size_t n) { return PT_MAX(n / 2, (size_t)8192); }

/* The smallest log2 window (>= min, <= max) that holds `len` bytes. */
static int window_for(int64_t len, int min, int max)
{
    if (len <= 0) return max;
    int w = min;
    while (w < max && ((int64_t)1 << w) < len) w++;
    return w;
}

pt_encoder *pt_encoder_new(pt_coding c, int level, int window_log, int64_t size_hint)
{
    pt_encoder *e = pt_xcalloc(1, sizeof(*e));
    e->coding = c;
    switch (c) {
    case PT_CODING_GZIP: {
        /* Like nginx: a body known to be small gets a smaller window and
         * hash (memLevel), so less memory to allocate and clear. */
        int wbits = 15, mem = 8;
        if (size_hint > 0) {
            while (wbits > 9 && size_hint < ((int64_t)1 << (wbits - 1)) - 262) {
                wbits--;
                if (mem > 1) mem--;
            }
        }
        if (deflateInit2(&e->u.z, level, Z_DEFLATED, wbits + 16, mem, Z_DEFAULT_STRATEGY) != Z_OK) break;
        return e;
    }
    case PT_CODING_BR: {
        BrotliEncoderState *s = BrotliEncoderCreateInstance(NULL, NULL, NULL);
        if (!s) break;
        int lgwin = window_for(size_hint > 0 ? size_hint + 16 : 0, BROTLI_MIN_WINDOW_BITS, window_log);
        BrotliEncoderSetParameter(s, BROTLI_PARAM_QUALITY, (uint32_t)level);
        BrotliEncoderSetParameter(s, BROTLI_PARAM_LGWIN, (uint32_t)lgwin);
        if (size_hint > 0)
            BrotliEncoderSetParameter(s, BROTLI_PARAM_SIZE_HINT, (uint32_t)PT_MIN(size_hint, (int64_t)1 << 30));
        e->u.br = s;
        return e;
    }
    case PT_CODING_ZSTD: {
        ZSTD_CCtx *z = ZSTD_createCCtx();
        if (!z) break;
        int wlog = window_for(size_hint, 10 /* ZSTD_WINDOWLOG_ABSOLUTEMIN */, window_log);
        bool ok = !ZSTD_isError(ZSTD_CCtx_setParameter(z, ZSTD_c_compressionLevel, level)) &&
                  !ZSTD_isError(ZSTD_CCtx_setParameter(z, ZSTD_c_windowLog, wlog));
        /* The exact length, when known, also sizes the tables and goes
         * into the frame header. */
        if (ok && size_hint > 0) ok = !ZSTD_isError(ZSTD_CCtx_setPledgedSrcSize(z, (unsigned long long)size_hint));
        if (!ok) {
            ZSTD_freeCCtx(z);
            break;
        }
        e->u.zs = z;
        return e;
    }
    default:
        break;
    }
    free(e);
    return NULL;
}

static int gzip_write(pt_encoder *e, const char *in, size_t n, pt_enc_mode mode, pt_comp_buf *out)
{
    z_stream *z = &e->u.z;
    int flush = mode == PT_ENC_FINISH ? Z_FINISH : mode == PT_ENC_FLUSH ? Z_SYNC_FLUSH : Z_NO_FLUSH;
    z->next_in = (Bytef *)(uintptr_t)in;
    z->avail_in = (uInt)n;
    for (;;) {
        pt_comp_buf_reserve(out, enc_room(z->avail_in));
        size_t room = PT_MIN(out->cap - out->len, (size_t)UINT_MAX);
        z->next_out = (Bytef *)out->p + out->len;
        z->avail_out = (uInt)room;
        int rc = deflate(z, flush);
        out->len += room - z->avail_out;
        if (rc == Z_STREAM_ERROR) return PT_ERR;
        if (flush == Z_FINISH) {
            if (rc == Z_STREAM_END) return PT_OK;
            continue;
        }
        /* Done when all input is taken and the encoder did not fill the
         * room (a full room may hide more pending output). */
        if (z->avail_in == 0 && z->avail_out != 0) return PT_OK;
    }
}

static int br_write(pt_encoder *e, const char *in, size_t n, pt_enc_mode mode, pt_comp_buf *out)
{
    BrotliEncoderOperation op = mode == PT_ENC_FINISH  ? BROTLI_OPERATION_FINISH
                                : mode == PT_ENC_FLUSH ? BROTLI_OPERATION_FLUSH
                                                       : BROTLI_OPERATION_PROCESS;
    const uint8_t *next_in = (const uint8_t *)in;
    size_t avail_in = n;
    for (;;) {
        pt_comp_buf_reserve(out, enc_room(avail_in));
        uint8_t *next_out = (uint8_t *)out->p + out->len;
        size_t avail_out = out->cap - out->len;
        if (!BrotliEncoderCompressStream(e->u.br, op, &avail_in, &next_in, &avail_out, &next_out, NULL))
            return PT_ERR;
        out->len = (size_t)((char *)next_out - out->p);
        if (op == BROTLI_OPERATION_FINISH) {
            if (BrotliEncoderIsFinished(e->u.br)) return PT_OK;
        } else if (avail_in == 0 && !BrotliEncoderHasMoreOutput(e->u.br)) {
            return PT_OK;
        }
    }
}

static int zstd_write(pt_encoder *e, const char *in, size_t n, pt_enc_mode mode, pt_comp_buf *out)
{
    ZSTD_EndDirective dir = mode == PT_ENC_FINISH ? ZSTD_e_end : mode == PT_ENC_FLUSH ? ZSTD_e_flush : ZSTD_e_continue;
    ZSTD_inBuffer ib = {in, n, 0};
    for (;;) {
        pt_comp_buf_reserve(out, enc_room(ib.size - ib.pos));
        ZSTD_outBuffer ob = {out->p + out->len, out->cap - out->len, 0};
        size_t r = ZSTD_compressStream2(e->u.zs, &ob, &ib, dir);
        out->len += ob.pos;
        if (ZSTD_isError(r)) return PT_ERR;
        if (dir == ZSTD_e_continue ? ib.pos == ib.size : r == 0) return PT_OK;
    }
}

int pt_encoder_write(pt_encoder *e, const char *in, size_t n, pt_enc_mode mode, pt_comp_buf *out)
{
    if (e->finished) return n ? PT_ERR : PT_OK;
    if (n == 0 && mode == PT_ENC_PROCESS) return PT_OK;
    e->held += n;
    if (mode == PT_ENC_PROCESS && e->held >= PT_ENC_MAX_HELD) mode = PT_ENC_FLUSH;
    if (mode != PT_ENC_PROCESS) e->held = 0;
    int rc;
    switch (e->coding) {
    case PT_CODING_GZIP: rc = gzip_write(e, in, n, mode, out); break;
    case PT_CODING_BR: rc = br_write(e, in, n, mode, out); break;
    case PT_CODING_ZSTD: rc = zstd_write(e, in, n, mode, out); break;
    default: rc = PT_ERR; break;
    }
    if (mode == PT_ENC_FINISH || rc != PT_OK) e->finished = true;
    return rc;
}

void pt_encoder_free(pt_encoder *e)
{
    if (!e) return;
    switch (e->coding) {
    case PT_CODING_GZIP: deflateEnd(&e->u.z); break;
    case PT_CODING_BR: BrotliEncoderDestroyInstance(e->u.br); break;
    case PT_CODING_ZSTD: ZSTD_freeCCtx(e->u.zs); break;
    default: break;
    }
    free(e);
}

/* ================================================================ decoders */

struct pt_decoder {
    pt_coding coding;
    bool ready;    /* the library state is initialised (deflate: after sniffing) */
    bool ended;    /* a stream / member / frame ended and nothing followed yet */
    bool failed;   /* a non-OK result was returned */
    uint64_t total_in;  /* compressed bytes consumed */
    uint64_t total_out; /* bytes produced */
    uint64_t max_size;
    uint32_t max_ratio;
    /* deflate: the first two bytes, to tell zlib-wrapped from raw */
    unsigned char sniff[2];
    size_t nsniff;
    union {
        z_stream z;
        BrotliDecoderState *br;
        ZSTD_DCtx *zs;
    } u;
};

/* Per-call bookkeeping of pt_decoder_write. */
typedef struct {
    uint64_t call_in;  /* bytes given to this call */
    uint64_t call_out; /* bytes produced by this call */
} dec_call;

pt_decoder *pt_decoder_new(pt_coding c, uint64_t max_size, uint32_t max_ratio)
{
    pt_decoder *d = pt_xcalloc(1, sizeof(*d));
    d->coding = c;
    d->max_size = max_size;
    d->max_ratio = max_ratio;
    switch (c) {
    case PT_CODING_GZIP:
        if (inflateInit2(&d->u.z, 15 + 16) != Z_OK) break;
        d->ready = true;
        return d;
    case PT_CODING_DEFLATE:
        return d; /* inflateInit2 once the first two bytes tell the format */
    case PT_CODING_BR:
        d->u.br = BrotliDecoderCreateInstance(NULL, NULL, NULL);
        if (!d->u.br) break;
        d->ready = true;
        return d;
    case PT_CODING_ZSTD:
        d->u.zs = ZSTD_createDCtx();
        if (!d->u.zs) break;
        if (ZSTD_isError(ZSTD_DCtx_setParameter(d->u.zs, ZSTD_d_windowLogMax, PT_DEC_ZSTD_WINDOW_LOG_MAX))) {
            ZSTD_freeDCtx(d->u.zs);
            break;
        }
        d->ready = true;
        return d;
    default:
        break;
    }
    free(d);
    return NULL;
}

/* Output room for the next step: one PT_DEC_STEP, but never more than one
 * byte past max_size, so that limit is hit exactly. */
static size_t dec_step(const pt_decoder *d)
{
    uint64_t left = d->max_size >= d->total_out ? d->max_size - d->total_out : 0;
    return (size_t)PT_MIN((uint64_t)PT_DEC_STEP, left + 1);
}

/* Accounts one step and checks the caps. */
static pt_dec_result dec_account(pt_decoder *d, dec_call *call, size_t consumed, size_t produced)
{
    d->total_in += consumed;
    d->total_out += produced;
    call->call_out += produced;
    if (d->total_out > d->max_size) return PT_DEC_TOO_LARGE;
    uint64_t ratio = d->max_ratio;
    if (d->total_out > ratio * d->total_in + PT_DEC_SLACK) return PT_DEC_TOO_DENSE;
    if (call->call_out > ratio * call->call_in + PT_DEC_CALL_SLACK) return PT_DEC_TOO_DENSE;
    return PT_DEC_OK;
}

static pt_dec_result zlib_feed(pt_decoder *d, dec_call *call, const char *in, size_t n, pt_comp_buf *out)
{
    z_stream *z = &d->u.z;
    z->next_in = (Bytef *)(uintptr_t)in;
    z->avail_in = (uInt)n;
    for (;;) {
        if (d->ended) {
            if (z->avail_in == 0) return PT_DEC_OK;
            /* Bytes after the end: another gzip member (RFC 1952 allows
             * several), anything else is malformed. */
            if (d->coding != PT_CODING_GZIP || inflateReset(z) != Z_OK) return PT_DEC_MALFORMED;
            d->ended = false;
        }
        size_t step = dec_step(d);
        pt_comp_buf_reserve(out, step);
        z->next_out = (Bytef *)out->p + out->len;
        z->avail_out = (uInt)step;
        uInt in_before = z->avail_in;
        int rc = inflate(z, Z_NO_FLUSH);
        size_t produced = step - z->avail_out;
        out->len += produced;
        pt_dec_result r = dec_account(d, call, in_before - z->avail_in, produced);
        if (r != PT_DEC_OK) return r;
        switch (rc) {
        case Z_STREAM_END:
            d->ended = true;
            break;
        case Z_OK:
        case Z_BUF_ERROR: /* no progress possible: needs input */
            if (z->avail_in == 0 && z->avail_out != 0) return PT_DEC_OK;
            if (rc == Z_BUF_ERROR && z->avail_out != 0) return PT_DEC_MALFORMED;
            break;
        default: /* Z_DATA_ERROR, Z_NEED_DICT, Z_MEM_ERROR, Z_STREAM_ERROR */
            return PT_DEC_MALFORMED;
        }
    }
}

/* deflate: RFC 9110 means the zlib format (RFC 1950), but raw deflate is
 * common; a valid zlib header (CM 8, CINFO <= 7, check bits) decides. */
static pt_dec_result deflate_feed(pt_decoder *d, dec_call *call, const char *in, size_t n, pt_comp_buf *out,
                                  bool last)
{
    if (!d->ready) {
        while (n && d->nsniff < 2) {
            d->sniff[d->nsniff++] = (unsigned char)*in++;
            n--;
        }
        if (d->nsniff < 2 && !last) return PT_DEC_OK;
        unsigned b0 = d->sniff[0], b1 = d->nsniff > 1 ? d->sniff[1] : 0;
        bool zlib = d->nsniff == 2 && (b0 & 0x0f) == 8 && (b0 >> 4) <= 7 && ((b0 << 8) | b1) % 31 == 0;
        if (inflateInit2(&d->u.z, zlib ? 15 : -15) != Z_OK) return PT_DEC_MALFORMED;
        d->ready = true;
        pt_dec_result r = zlib_feed(d, call, (const char *)d->sniff, d->nsniff, out);
        if (r != PT_DEC_OK) return r;
    }
    return zlib_feed(d, call, in, n, out);
}

static pt_dec_result br_feed(pt_decoder *d, dec_call *call, const char *in, size_t n, pt_comp_buf *out)
{
    const uint8_t *next_in = (const uint8_t *)in;
    size_t avail_in = n;
    for (;;) {
        if (d->ended) return avail_in == 0 ? PT_DEC_OK : PT_DEC_MALFORMED; /* one stream only */
        size_t step = dec_step(d);
        pt_comp_buf_reserve(out, step);
        uint8_t *next_out = (uint8_t *)out->p + out->len;
        size_t avail_out = step;
        size_t in_before = avail_in;
        BrotliDecoderResult rc = BrotliDecoderDecompressStream(d->u.br, &avail_in, &next_in, &avail_out, &next_out, NULL);
        size_t produced = step - avail_out;
        out->len += produced;
        pt_dec_result r = dec_account(d, call, in_before - avail_in, produced);
        if (r != PT_DEC_OK) return r;
        switch (rc) {
        case BROTLI_DECODER_RESULT_SUCCESS: d->ended = true; break;
        case BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT: return PT_DEC_OK; /* all input taken */
        case BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT: break;
        default: return PT_DEC_MALFORMED;
        }
    }
}

static pt_dec_result zstd_feed(pt_decoder *d, dec_call *call, const char *in, size_t n, pt_comp_buf *out)
{
    ZSTD_inBuffer ib = {in, n, 0};
    bool full = false; /* the last step filled its room: more output may wait */
    while (ib.pos < ib.size || full) {
        size_t step = dec_step(d);
        pt_comp_buf_reserve(out, step);
        ZSTD_outBuffer ob = {out->p + out->len, step, 0};
        size_t in_before = ib.pos;
        size_t rc = ZSTD_decompressStream(d->u.zs, &ob, &ib);
        out->len += ob.pos;
        /* whatever was produced is counted, even by a call that then fails */
        pt_dec_result r = dec_account(d, call, ib.pos - in_before, ob.pos);
        if (ZSTD_isError(rc)) return PT_DEC_MALFORMED;
        if (r != PT_DEC_OK) return r;
        /* 0: a frame is complete and flushed (another may follow). A
         * call that moved nothing says nothing about that. */
        if (ob.pos || ib.pos != in_before) d->ended = rc == 0;
        full = ob.pos == ob.size;
    }
    return PT_DEC_OK;
}

pt_dec_result pt_decoder_write(pt_decoder *d, const char *in, size_t n, bool last, pt_comp_buf *out)
{
    if (d->failed) return PT_DEC_MALFORMED;
    dec_call call = {.call_in = n};
    pt_dec_result r;
    switch (d->coding) {
    case PT_CODING_GZIP: r = zlib_feed(d, &call, in, n, out); break;
    case PT_CODING_DEFLATE: r = deflate_feed(d, &call, in, n, out, last); break;
    case PT_CODING_BR: r = br_feed(d, &call, in, n, out); break;
    case PT_CODING_ZSTD: r = zstd_feed(d, &call, in, n, out); break;
    default: r = PT_DEC_MALFORMED; break;
    }
    /* The end of the body must be the end of a stream; an empty body is
     * accepted as empty. */
    bool started = d->total_in > 0 || d->nsniff > 0;
    if (r == PT_DEC_OK && last && started && !d->ended) r = PT_DEC_MALFORMED;
    if (r != PT_DEC_OK) d->failed = true;
    return r;
}

uint64_t pt_decoder_total_out(const pt_decoder *d) { return d->total_out; }

void pt_decoder_free(pt_decoder *d)
{
    if (!d) return;
    switch (d->coding) {
    case PT_CODING_GZIP:
    case PT_CODING_DEFLATE:
        if (d->ready) inflateEnd(&d->u.z);
        break;
    case PT_CODING_BR: BrotliDecoderDestroyInstance(d->u.br); break;
    case PT_CODING_ZSTD: ZSTD_freeDCtx(d->u.zs); break;
    default: break;
    }
    free(d);
}
