/* compression.h — private: the compression plugin's config, its pure
 * decision helpers and its streaming codecs, exposed for unit tests.
 *
 *   plugins:
 *     - compression:
 *         algorithms: [br, zstd, gzip]   # server preference order (default)
 *         min_size: 1k                   # skip when Content-Length is below
 *         types: [text/html, application/json]   # media types, see below
 *         flush_types: [text/event-stream]
 *         gzip: {level: 6}
 *         br:   {level: 4, window: 512k}
 *         zstd: {level: 3, window: 512k}
 *         request: {decompress: true, max_size: 10m, max_ratio: 100}
 *
 * Response side: a response is *eligible* when it has a body (not HEAD,
 * 1xx, 204, 304), is not 206, answers a request without Range, carries no
 * Content-Encoding other than identity, no Cache-Control: no-transform and
 * no integrity field (Content-MD5, Content-Digest, Repr-Digest), its
 * media type matches `types`, and its Content-Length (when known) is at
 * least `min_size`. For an eligible response the outcome depends on the
 * request's Accept-Encoding, so `Vary: Accept-Encoding` is merged in; the
 * coding is chosen by pt_accept_encoding_choose(). Compressing drops
 * Content-Length and weakens a strong ETag (pt_txn_body_will_change),
 * sets Content-Encoding and drops Accept-Ranges.
 *
 * Streaming: every body call is compressed as it passes and its bytes are
 * replaced by the encoder output so far; responses whose type matches
 * `flush_types` are flushed (sync flush) at every call so events are not
 * held back; every response is finished on its last call. See
 * docs/compression.md.
 *
 * Request side (only with request.decompress): a request body with a
 * Content-Encoding of gzip / x-gzip / deflate / br / zstd is decoded before
 * it goes upstream (Content-Encoding and Content-Length removed); another
 * coding, or more than one, is answered 415 with Accept-Encoding listing
 * what is supported; malformed data 400; output over max_size, or over
 * max_ratio times the compressed bytes, 413 (pt_decoder_write). */
#ifndef PT_PLUGINS_COMPRESSION_H
#define PT_PLUGINS_COMPRESSION_H

#include "plugin/plugin.h"

/* Content codings known to the plugin. Responses are compressed with
 * gzip, br or zstd; request bodies may also be deflate. */
typedef enum {
    PT_CODING_IDENTITY = 0,
    PT_CODING_GZIP,
    PT_CODING_BR,
    PT_CODING_ZSTD,
    PT_CODING_DEFLATE,
    PT_CODING__COUNT
} pt_coding;

/* "gzip", "br", "zstd", "deflate", "identity". */
const char *pt_coding_name(pt_coding c);
/* A coding token (case-insensitive; "x-gzip" is gzip) or -1 if unknown. */
int pt_coding_from_token(pt_str tok);

/* ---- Media-type patterns ------------------------------------------------
 * "type/subtype", lowercased, where the type may be "*" and the subtype may
 * hold one '*' standing for any run of characters: "text/" "*",
 * "application/" "*+json", "application/grpc-web*", "*" "/" "*" (written
 * split here only because a slash-star would end this comment). */
typedef struct {
    pt_str type;   /* "*" = any */
    pt_str sub_pre; /* subtype before the '*' (the whole subtype if no '*') */
    pt_str sub_suf; /* subtype after the '*' */
    bool sub_star;
} pt_comp_type_pat;

/* Parses a pattern (copied into `a`). False if it is not of the form above. */
bool pt_comp_type_pat_parse(pt_arena *a, pt_str text, pt_comp_type_pat *out);
/* True if the media type of a Content-Type value (parameters such as
 * charset ignored, case-insensitive) matches one of `pats`. */
bool pt_comp_type_match(const pt_comp_type_pat *pats, size_t n, pt_str content_type);

/* ---- Accept-Encoding (RFC 9110 §12.5.3) ---------------------------------
 * Weights are q-values times 1000 (0..1000); -1 = not mentioned. */
typedef struct {
    int16_t q[PT_CODING__COUNT]; /* per known coding, identity included */
    int16_t star;                /* the "*" entry */
    bool present;                /* at least one Accept-Encoding field */
} pt_accept_enc;

void pt_accept_enc_init(pt_accept_enc *ae);
/* Adds one Accept-Encoding field value. Entries are "coding[;q=W][;...]"
 * separated by commas; codings are case-insensitive; an entry whose coding
 * is not a token or whose q-value is not a valid qvalue (0, 0.x to 0.xxx,
 * 1, 1.0 to 1.000) is ignored; parameters other than q are ignored; an
 * entry repeated keeps its lowest weight (so a q=0 always wins). */
void pt_accept_enc_parse(pt_accept_enc *ae, pt_str value);
/* The coding to send, among `prefs` (server preference order, no
 * identity), or PT_CODING_IDENTITY. No Accept-Encoding field: identity.
 * A coding's weight is its own entry, else the "*" entry, else 0; q=0
 * forbids. The highest weight wins, ties go to the earlier in `prefs`.
 * Identity wins only when listed explicitly with a weight above every
 * acceptable coding (an unlisted identity never beats a listed coding). */
pt_coding pt_accept_enc_choose(const pt_accept_enc *ae, const pt_coding *prefs, size_t nprefs);

/* ---- Field helpers ------------------------------------------------------ */

/* True if some Cache-Control field has the directive `no-transform`. */
bool pt_comp_no_transform(const pt_headers *h);
/* Merges "Accept-Encoding" into the Vary fields of `h` (one Vary field
 * results); nothing if Vary already names it or is "*". */
void pt_comp_vary_merge(pt_headers *h, pt_arena *a);

/* ---- Configuration ------------------------------------------------------ */

#define PT_COMP_MAX_PREFS 3

typedef struct {
    pt_coding prefs[PT_COMP_MAX_PREFS]; /* gzip / br / zstd, preference order */
    size_t nprefs;
    uint64_t min_size;
    pt_comp_type_pat *types;
    size_t ntypes;
    pt_comp_type_pat *flush_types;
    size_t nflush_types;
    int level[PT_CODING__COUNT];      /* gzip 1..9, br 0..11, zstd 1..19 */
    int window_log[PT_CODING__COUNT]; /* br 10..24, zstd 10..23 (gzip: 15) */
    bool decompress;                  /* request.decompress */
    uint64_t req_max_size;            /* request.max_size */
    uint32_t req_max_ratio;           /* request.max_ratio */
    /* portico_compression_{responses,input_bytes,output_bytes}_total
     * {encoding}: one cell per response coding (gzip, br, zstd); shared by
     * every instance; NULL when metrics are off. */
    pt_metric_series *m_responses, *m_bytes_in, *m_bytes_out;
} pt_compression_conf;

/* What a request looked like to the plugin (taken in its request-header
 * callback, or at response time when that did not run). */
typedef struct {
    pt_accept_enc ae;
    bool head;  /* HEAD request */
    bool range; /* the request has a Range field */
} pt_comp_req_info;

/* req may be NULL (a request Portico could not parse): no Accept-Encoding. */
void pt_comp_req_info_read(pt_comp_req_info *ri, const pt_request *req);

typedef enum {
    PT_COMP_SKIP = 0, /* not eligible: leave the response alone */
    PT_COMP_VARY,     /* eligible, but identity chosen: add Vary only */
    PT_COMP_ENCODE,   /* eligible and a coding chosen: Vary + compress */
} pt_comp_action;

typedef struct {
    pt_comp_action action;
    pt_coding coding; /* PT_COMP_ENCODE */
    bool flush_each;  /* the type matches flush_types */
} pt_comp_decision;

/* The response-side decision (see the top of this file); pure. */
pt_comp_decision pt_comp_decide(const pt_compression_conf *c, const pt_comp_req_info *ri,
                                const pt_response *res);

/* ---- Streaming codecs --------------------------------------------------- */

/* A growable heap byte buffer (output of the codecs). */
typedef struct {
    char *p;
    size_t len, cap;
} pt_comp_buf;

void pt_comp_buf_reserve(pt_comp_buf *b, size_t more); /* cap >= len + more */
void pt_comp_buf_free(pt_comp_buf *b);

typedef struct pt_encoder pt_encoder;

/* PROCESS never lets more than this much input wait inside an encoder:
 * once that much went in since the last flush, the call flushes. brotli
 * would otherwise hold up to a whole metablock (1 MiB at a 512 KiB
 * window) before emitting anything; the cost is ~0.2% of ratio. */
#define PT_ENC_MAX_HELD (64u * 1024u)

typedef enum {
    PT_ENC_PROCESS = 0, /* compress; output what the encoder emits (see above) */
    PT_ENC_FLUSH,       /* and flush: everything so far is decodable */
    PT_ENC_FINISH,      /* and end the stream */
} pt_enc_mode;

/* A gzip, br or zstd encoder at `level` (window_log for br/zstd: the
 * configured window). size_hint >= 0 is the body length if known: small
 * bodies get a smaller window and tables (less memory, faster start).
 * NULL if the library refuses. Free with pt_encoder_free. */
pt_encoder *pt_encoder_new(pt_coding c, int level, int window_log, int64_t size_hint);
/* Compresses in[0, n) and appends the output to `out`. After FINISH the
 * encoder accepts nothing more. PT_OK, or PT_ERR on a library error. */
int pt_encoder_write(pt_encoder *e, const char *in, size_t n, pt_enc_mode mode, pt_comp_buf *out);
void pt_encoder_free(pt_encoder *e);

typedef struct pt_decoder pt_decoder;

typedef enum {
    PT_DEC_OK = 0,
    PT_DEC_MALFORMED,  /* invalid or truncated data, or bytes after the end */
    PT_DEC_TOO_LARGE,  /* output over max_size */
    PT_DEC_TOO_DENSE,  /* output over the max_ratio bound */
} pt_dec_result;

/* Output is produced in steps of PT_DEC_STEP bytes and the limits are
 * checked after every step, so at most one step is ever inflated beyond a
 * limit. The ratio bound: total output <= max_ratio * compressed bytes
 * consumed + PT_DEC_SLACK, and one call's output <= max_ratio * that
 * call's input + PT_DEC_CALL_SLACK (which bounds the memory one call
 * needs). zstd frames may use windows up to 8 MiB (RFC 9659), br up to its
 * 16 MiB maximum, gzip/deflate 32 KiB. */
#define PT_DEC_STEP (64u * 1024u)
#define PT_DEC_SLACK (64u * 1024u)
#define PT_DEC_CALL_SLACK (1024u * 1024u)
#define PT_DEC_ZSTD_WINDOW_LOG_MAX 23

/* A decoder for gzip (several members allowed), deflate (zlib-wrapped or
 * raw), br or zstd (several frames allowed). NULL if the library refuses. */
pt_decoder *pt_decoder_new(pt_coding c, uint64_t max_size, uint32_t max_ratio);
/* Decodes in[0, n) and appends the output to `out`; `last` = no more
 * input follows (a stream that did not end is then malformed; no input at
 * all is an empty body). After a non-OK result the decoder is finished. */
pt_dec_result pt_decoder_write(pt_decoder *d, const char *in, size_t n, bool last, pt_comp_buf *out);
uint64_t pt_decoder_total_out(const pt_decoder *d);
void pt_decoder_free(pt_decoder *d);

/* ---- The plugin ---------------------------------------------------------- */

/* Per-request state (zeroed by the proxy, in the request arena). */
typedef struct {
    pt_comp_req_info req;
    bool req_seen;       /* on_request_headers ran */
    bool cleanup_armed;  /* the arena cleanup that frees the codecs is registered */
    pt_decoder *dec;     /* request body decoder (request.decompress) */
    pt_encoder *enc;     /* response body encoder */
    pt_coding enc_coding;
    bool enc_checked;    /* the first response body call checked Content-Encoding */
    bool flush_each;
    pt_comp_buf own_scratch; /* only without per-worker state */
} pt_compression_state;

extern const pt_plugin_type pt_plugin_compression;

#endif
