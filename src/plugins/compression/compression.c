/* compression.c — the `compression` plugin: its configuration, and the
 * callbacks that compress response bodies (gzip, br, zstd, chosen by
 * Accept-Encoding) and decompress request bodies, streaming, one body call
 * at a time. The decisions live in negotiate.c, the codecs in codec.c;
 * the design is described in docs/compression.md. */
#include "plugins/compression/compression.h"

#include <stdio.h>
#include <stdlib.h>

#include "plugins/plugin_util.h"

/* ============================================================ configuration */

static const char *const default_types[] = {
    "text/*",          "application/json", "application/javascript", "application/xml",
    "image/svg+xml",   "application/*+json", "application/*+xml",
};
/* Streaming media: every body call is flushed so nothing waits in the encoder. */
static const char *const default_flush_types[] = {
    "text/event-stream",
    "application/x-ndjson",
    "application/grpc-web*",
};

#define DEFAULT_WINDOW_LOG 19 /* 512 KiB for br and zstd */

/* Reads a list of media-type patterns at `n` into *out / *nout. */
static bool read_types(pt_conf_ctx *ctx, const pt_conf_node *n, const char *key, bool allow_empty,
                       pt_comp_type_pat **out, size_t *nout)
{
    if (n->kind != PT_NODE_SEQ || (!allow_empty && n->n == 0)) {
        pt_conf_error(ctx, n, "compression.%s: expected a %slist of media types such as text/* or application/json",
                      key, allow_empty ? "" : "non-empty ");
        return false;
    }
    bool ok = true;
    *out = pt_arena_calloc(ctx->arena, (n->n ? n->n : 1) * sizeof(**out));
    *nout = 0;
    for (size_t i = 0; i < n->n; i++) {
        const pt_conf_node *it = n->vals[i];
        if (it->kind != PT_NODE_SCALAR ||
            !pt_comp_type_pat_parse(ctx->arena, pt_str_make(it->scalar, it->scalar_len), &(*out)[*nout])) {
            pt_conf_error(ctx, it,
                          "compression.%s: invalid media type \"%s\" (expected type/subtype; '*' may stand for the "
                          "whole type or part of the subtype, e.g. text/* or application/*+json)",
                          key, it->kind == PT_NODE_SCALAR ? it->scalar : "");
            ok = false;
            continue;
        }
        (*nout)++;
    }
    return ok;
}

static void default_type_list(pt_arena *a, const char *const *names, size_t n, pt_comp_type_pat **out,
                              size_t *nout)
{
    *out = pt_arena_calloc(a, n * sizeof(**out));
    for (size_t i = 0; i < n; i++) PT_ASSERT(pt_comp_type_pat_parse(a, pt_str_c(names[i]), &(*out)[i]));
    *nout = n;
}

static bool read_algorithms(pt_conf_ctx *ctx, const pt_conf_node *n, pt_compression_conf *c)
{
    if (n->kind != PT_NODE_SEQ || n->n == 0) {
        pt_conf_error(ctx, n, "compression.algorithms: expected a non-empty list of br, zstd, gzip");
        return false;
    }
    bool ok = true;
    c->nprefs = 0;
    for (size_t i = 0; i < n->n; i++) {
        const pt_conf_node *it = n->vals[i];
        int k = it->kind == PT_NODE_SCALAR ? pt_coding_from_token(pt_str_make(it->scalar, it->scalar_len)) : -1;
        if (it->kind != PT_NODE_SCALAR || (k != PT_CODING_GZIP && k != PT_CODING_BR && k != PT_CODING_ZSTD) ||
            strcmp(it->scalar, pt_coding_name((pt_coding)k)) != 0) {
            pt_conf_error(ctx, it, "compression.algorithms: unknown algorithm \"%s\" (expected br, zstd or gzip)",
                          it->kind == PT_NODE_SCALAR ? it->scalar : "");
            ok = false;
            continue;
        }
        bool dup = false;
        for (size_t j = 0; j < c->nprefs; j++) dup |= c->prefs[j] == (pt_coding)k;
        if (dup) {
            pt_conf_error(ctx, it, "compression.algorithms: \"%s\" is listed twice", it->scalar);
            ok = false;
            continue;
        }
        c->prefs[c->nprefs++] = (pt_coding)k;
    }
    return ok;
}

/* A window size: a power of two between 2^min_log and 2^max_log bytes. */
static bool read_window(pt_conf_ctx *ctx, const pt_conf_node *n, const char *what, int min_log, int max_log,
                        int *out)
{
    uint64_t v;
    if (!pt_conf_size(ctx, n, &v)) return false;
    for (int l = min_log; l <= max_log; l++) {
        if (v == (uint64_t)1 << l) {
            *out = l;
            return true;
        }
    }
    pt_conf_error(ctx, n, "compression.%s.window: must be a power of two from %uk to %um (got \"%s\")", what,
                  1u << (min_log - 10), 1u << (max_log - 20), n->scalar ? n->scalar : "");
    return false;
}

/* gzip / br / zstd: {level[, window]}. */
static bool read_algo_block(pt_conf_ctx *ctx, const pt_conf_node *n, pt_coding k, pt_compression_conf *c)
{
    static const char *const gzip_keys[] = {"level", NULL};
    static const char *const keys[] = {"level", "window", NULL};
    const char *name = pt_coding_name(k);
    char what[32];
    snprintf(what, sizeof(what), "compression.%s", name);
    if (n->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, n, "%s: expected a mapping such as {level: %d}", what, c->level[k]);
        return false;
    }
    bool ok = pt_conf_check_keys(ctx, n, k == PT_CODING_GZIP ? gzip_keys : keys, what);
    static const int lmin[PT_CODING__COUNT] = {[PT_CODING_GZIP] = 1, [PT_CODING_BR] = 0, [PT_CODING_ZSTD] = 1};
    static const int lmax[PT_CODING__COUNT] = {[PT_CODING_GZIP] = 9, [PT_CODING_BR] = 11, [PT_CODING_ZSTD] = 19};
    const pt_conf_node *lv = pt_conf_get(n, "level");
    int64_t level;
    if (lv) {
        if (!pt_conf_int(ctx, lv, INT32_MIN, INT32_MAX, &level)) {
            ok = false;
        } else if (level < lmin[k] || level > lmax[k]) {
            pt_conf_error(ctx, lv, "%s.level: must be %d..%d (got %s)", what, lmin[k], lmax[k], lv->scalar);
            ok = false;
        } else {
            c->level[k] = (int)level;
        }
    }
    const pt_conf_node *w = pt_conf_get(n, "window");
    if (w && k != PT_CODING_GZIP) {
        int max_log = k == PT_CODING_BR ? 24 : PT_DEC_ZSTD_WINDOW_LOG_MAX;
        if (!read_window(ctx, w, name, 10, max_log, &c->window_log[k])) ok = false;
    }
    return ok;
}

static bool read_request(pt_conf_ctx *ctx, const pt_conf_node *n, pt_compression_conf *c)
{
    static const char *const keys[] = {"decompress", "max_size", "max_ratio", NULL};
    if (n->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, n, "compression.request: expected a mapping such as {decompress: true, max_size: 10m}");
        return false;
    }
    bool ok = pt_conf_check_keys(ctx, n, keys, "compression.request");
    const pt_conf_node *v;
    if ((v = pt_conf_get(n, "decompress")) && !pt_conf_bool(ctx, v, &c->decompress)) ok = false;
    if ((v = pt_conf_get(n, "max_size"))) {
        if (!pt_conf_size(ctx, v, &c->req_max_size)) {
            ok = false;
        } else if (c->req_max_size == 0) {
            pt_conf_error(ctx, v, "compression.request.max_size: must be greater than 0");
            ok = false;
        }
    }
    int64_t ratio;
    if ((v = pt_conf_get(n, "max_ratio"))) {
        if (!pt_conf_int(ctx, v, INT32_MIN, INT32_MAX, &ratio)) {
            ok = false;
        } else if (ratio < 1 || ratio > 100000) {
            pt_conf_error(ctx, v, "compression.request.max_ratio: must be 1..100000 (got %s)", v->scalar);
            ok = false;
        } else {
            c->req_max_ratio = (uint32_t)ratio;
        }
    }
    return ok;
}

/* ================================================================ metrics */

/* The `encoding` label: response codings only, in pt_coding order from
 * PT_CODING_GZIP (metric_cell). */
static const char *const metric_encodings[] = {"gzip", "br", "zstd", NULL};
static const pt_metric_dim metric_dims[] = {{"encoding", metric_encodings}};
static const pt_metric_desc responses_desc = {
    .name = "portico_compression_responses_total",
    .help = "Responses whose body the compression plugin encoded to the end, by coding.",
    .type = PT_METRIC_COUNTER, .dims = metric_dims, .ndims = 1,
};
static const pt_metric_desc bytes_in_desc = {
    .name = "portico_compression_input_bytes_total",
    .help = "Response body bytes given to the compression plugin's encoders, by coding.",
    .type = PT_METRIC_COUNTER, .dims = metric_dims, .ndims = 1,
};
static const pt_metric_desc bytes_out_desc = {
    .name = "portico_compression_output_bytes_total",
    .help = "Compressed response body bytes the compression plugin produced, by coding.",
    .type = PT_METRIC_COUNTER, .dims = metric_dims, .ndims = 1,
};

/* The cell of response coding `k` (gzip, br or zstd). */
static size_t metric_cell(pt_coding k)
{
    PT_ASSERT(k >= PT_CODING_GZIP && k <= PT_CODING_ZSTD);
    return (size_t)(k - PT_CODING_GZIP);
}

/* Validates the plugin block (every key optional; see compression.h). */
static void *compression_configure(pt_conf_ctx *ctx, const pt_conf_node *node)
{
    static const char *const keys[] = {"algorithms", "min_size", "types", "flush_types", "gzip",
                                       "br",         "zstd",     "request", NULL};
    pt_compression_conf *c = pt_arena_calloc(ctx->arena, sizeof(*c));
    c->prefs[0] = PT_CODING_BR;
    c->prefs[1] = PT_CODING_ZSTD;
    c->prefs[2] = PT_CODING_GZIP;
    c->nprefs = 3;
    c->min_size = 1024;
    c->level[PT_CODING_GZIP] = 6;
    c->level[PT_CODING_BR] = 4;
    c->level[PT_CODING_ZSTD] = 3;
    c->window_log[PT_CODING_GZIP] = 15;
    c->window_log[PT_CODING_BR] = DEFAULT_WINDOW_LOG;
    c->window_log[PT_CODING_ZSTD] = DEFAULT_WINDOW_LOG;
    c->req_max_size = 10u << 20;
    c->req_max_ratio = 100;
    default_type_list(ctx->arena, default_types, PT_ARRAY_LEN(default_types), &c->types, &c->ntypes);
    default_type_list(ctx->arena, default_flush_types, PT_ARRAY_LEN(default_flush_types), &c->flush_types,
                      &c->nflush_types);
    c->m_responses = pt_conf_metric(ctx, node, &responses_desc, NULL);
    c->m_bytes_in = pt_conf_metric(ctx, node, &bytes_in_desc, NULL);
    c->m_bytes_out = pt_conf_metric(ctx, node, &bytes_out_desc, NULL);
    if (!node || node->kind == PT_NODE_NULL) return c;
    if (node->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, node, "compression: expected a mapping (or nothing, for the defaults)");
        return NULL;
    }
    bool ok = pt_conf_check_keys(ctx, node, keys, "compression");
    const pt_conf_node *v;
    if ((v = pt_conf_get(node, "algorithms")) && !read_algorithms(ctx, v, c)) ok = false;
    if ((v = pt_conf_get(node, "min_size")) && !pt_conf_size(ctx, v, &c->min_size)) ok = false;
    if ((v = pt_conf_get(node, "types")) && !read_types(ctx, v, "types", false, &c->types, &c->ntypes)) ok = false;
    if ((v = pt_conf_get(node, "flush_types")) &&
        !read_types(ctx, v, "flush_types", true, &c->flush_types, &c->nflush_types))
        ok = false;
    static const pt_coding algos[] = {PT_CODING_GZIP, PT_CODING_BR, PT_CODING_ZSTD};
    for (size_t i = 0; i < PT_ARRAY_LEN(algos); i++)
        if ((v = pt_conf_get(node, pt_coding_name(algos[i]))) && !read_algo_block(ctx, v, algos[i], c)) ok = false;
    if ((v = pt_conf_get(node, "request")) && !read_request(ctx, v, c)) ok = false;
    return ok ? c : NULL;
}

/* ============================================================ worker state */

/* One output buffer per worker, shared by every request of that worker:
 * callbacks run one at a time on the worker thread, and a call's output is
 * copied into the body before the callback returns. */
typedef struct {
    pt_comp_buf scratch;
} comp_worker;

#define SCRATCH_KEEP (1u << 20) /* a buffer grown beyond this is released after use */

static void *compression_worker_init(struct pt_loop *loop) { return pt_xcalloc(1, sizeof(comp_worker)); }

static void compression_worker_fini(struct pt_loop *loop, void *wstate)
{
    comp_worker *w = wstate;
    pt_comp_buf_free(&w->scratch);
    free(w);
}

/* The worker's buffer; a transaction without worker state (a test
 * harness) gets one of its own, freed with its codecs. */
static pt_comp_buf *scratch_get(pt_txn *txn, pt_compression_state *st)
{
    comp_worker *w = pt_txn_worker_state(txn, &pt_plugin_compression);
    pt_comp_buf *b = w ? &w->scratch : &st->own_scratch;
    b->len = 0;
    return b;
}

static void scratch_done(pt_comp_buf *b)
{
    if (b->cap > SCRATCH_KEEP) pt_comp_buf_free(b);
    b->len = 0;
}

/* ======================================================== request lifetime */

static void free_codecs(pt_compression_state *st)
{
    pt_decoder_free(st->dec);
    st->dec = NULL;
    pt_encoder_free(st->enc);
    st->enc = NULL;
    pt_comp_buf_free(&st->own_scratch);
}

/* Arena cleanup: the request is over (finished, aborted, client gone). */
static void compression_cleanup(void *data) { free_codecs(data); }

static void arm_cleanup(pt_txn *txn, pt_compression_state *st)
{
    if (st->cleanup_armed) return;
    st->cleanup_armed = true;
    pt_arena_on_cleanup(pt_txn_arena(txn), compression_cleanup, st);
}

/* ============================================================ request side */

static const char accept_encoding_supported[] = "gzip, deflate, br, zstd";

/* Reads the request's Content-Encoding: *coding is the one coding to undo
 * (PT_CODING_IDENTITY: none); false if a coding is unknown or several are
 * stacked. */
static bool request_coding(const pt_headers *h, bool *present, pt_coding *coding)
{
    *present = false;
    *coding = PT_CODING_IDENTITY;
    int n = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (!pt_str_ieq_lit(h->v[i].name, "content-encoding")) continue;
        *present = true;
        pt_str rest = h->v[i].value, tok;
        while (pt_list_next(&rest, &tok)) {
            if (pt_str_ieq_lit(tok, "identity")) continue;
            int k = pt_coding_from_token(tok);
            if (k < 0) return false;
            *coding = (pt_coding)k;
            n++;
        }
    }
    return n <= 1;
}

static pt_plugin_result compression_on_request_headers(pt_txn *txn, const void *conf, void *state)
{
    const pt_compression_conf *c = conf;
    pt_compression_state *st = state;
    pt_request *req = pt_txn_request(txn);
    pt_comp_req_info_read(&st->req, req);
    st->req_seen = true;
    if (!c->decompress || !req->has_body) return PT_PLUGIN_CONTINUE;
    bool present;
    pt_coding coding;
    if (!request_coding(&req->headers, &present, &coding)) {
        /* RFC 9110 §15.5.16: 415, and Accept-Encoding says what would do. */
        pt_txn_respond_problem(txn, 415, "unsupported Content-Encoding in the request (supported: gzip, deflate, "
                                         "br, zstd; one coding)");
        pt_txn_respond_header(txn, PT_STR_LIT("Accept-Encoding"), PT_STR_LIT(accept_encoding_supported));
        return PT_PLUGIN_RESPOND;
    }
    if (!present) return PT_PLUGIN_CONTINUE;
    pt_headers_remove(&req->headers, "content-encoding");
    if (coding == PT_CODING_IDENTITY) return PT_PLUGIN_CONTINUE;
    st->dec = pt_decoder_new(coding, c->req_max_size, c->req_max_ratio);
    if (!st->dec) {
        pt_txn_respond_problem(txn, 500, "could not start the request body decoder");
        return PT_PLUGIN_RESPOND;
    }
    arm_cleanup(txn, st);
    /* Digests of the encoded bytes no longer hold. */
    pt_headers_remove(&req->headers, "content-md5");
    pt_headers_remove(&req->headers, "content-digest");
    pt_headers_remove(&req->headers, "repr-digest");
    pt_txn_body_will_change(txn, PT_SIDE_REQUEST);
    return PT_PLUGIN_CONTINUE;
}

static pt_plugin_result compression_on_request_body(pt_txn *txn, const void *conf, void *state, pt_body *body)
{
    pt_compression_state *st = state;
    if (!st->dec) return PT_PLUGIN_CONTINUE;
    bool last = pt_body_last(body);
    pt_comp_buf *out = scratch_get(txn, st);
    pt_dec_result r = pt_decoder_write(st->dec, pt_body_data(body), pt_body_len(body), last, out);
    if (r != PT_DEC_OK) {
        scratch_done(out);
        free_codecs(st);
        if (r == PT_DEC_MALFORMED)
            pt_txn_respond_problem(txn, 400, "the request body is not valid for its Content-Encoding");
        else if (r == PT_DEC_TOO_LARGE)
            pt_txn_respond_problem(txn, 413, "the decompressed request body exceeds request.max_size");
        else
            pt_txn_respond_problem(txn, 413, "the request body expands beyond request.max_ratio when decompressed");
        return PT_PLUGIN_RESPOND;
    }
    pt_body_replace(body, out->p, out->len);
    scratch_done(out);
    if (last) {
        pt_decoder_free(st->dec);
        st->dec = NULL;
    }
    return PT_PLUGIN_CONTINUE;
}

/* =========================================================== response side */

static pt_plugin_result compression_on_response_headers(pt_txn *txn, const void *conf, void *state)
{
    const pt_compression_conf *c = conf;
    pt_compression_state *st = state;
    /* A response that replaces an earlier one starts over. */
    pt_encoder_free(st->enc);
    st->enc = NULL;
    pt_response *res = pt_txn_response(txn);
    if (!st->req_seen) {
        /* An earlier plugin answered before our request callback ran. */
        pt_comp_req_info_read(&st->req, pt_txn_request(txn));
        st->req_seen = true;
    }
    pt_comp_decision d = pt_comp_decide(c, &st->req, res);
    if (d.action == PT_COMP_SKIP) return PT_PLUGIN_CONTINUE;
    pt_arena *a = pt_txn_arena(txn);
    pt_comp_vary_merge(&res->headers, a);
    if (d.action == PT_COMP_VARY) return PT_PLUGIN_CONTINUE;
    st->enc = pt_encoder_new(d.coding, c->level[d.coding], c->window_log[d.coding], res->content_length);
    if (!st->enc) return PT_PLUGIN_CONTINUE; /* the library refused: identity is always acceptable */
    arm_cleanup(txn, st);
    st->enc_coding = d.coding;
    st->enc_checked = false;
    st->flush_each = d.flush_each;
    pt_txn_body_will_change(txn, PT_SIDE_RESPONSE);
    pt_headers_set(&res->headers, a, PT_STR_LIT("Content-Encoding"), pt_str_c(pt_coding_name(d.coding)));
    pt_headers_remove(&res->headers, "accept-ranges"); /* ranges of the encoded form are not served */
    return PT_PLUGIN_CONTINUE;
}

static pt_plugin_result compression_on_response_body(pt_txn *txn, const void *conf, void *state, pt_body *body)
{
    pt_compression_state *st = state;
    if (!st->enc) return PT_PLUGIN_CONTINUE;
    if (!st->enc_checked) {
        /* A later response-header plugin may have replaced the response
         * (pt_txn_respond) after we decided: its body is not ours to encode. */
        st->enc_checked = true;
        const pt_str *ce = pt_headers_get(&pt_txn_response(txn)->headers, "content-encoding");
        if (!ce || !pt_str_eq_lit(*ce, pt_coding_name(st->enc_coding))) {
            free_codecs(st);
            return PT_PLUGIN_CONTINUE;
        }
    }
    bool last = pt_body_last(body);
    pt_enc_mode mode = last ? PT_ENC_FINISH : st->flush_each ? PT_ENC_FLUSH : PT_ENC_PROCESS;
    pt_comp_buf *out = scratch_get(txn, st);
    int rc = pt_encoder_write(st->enc, pt_body_data(body), pt_body_len(body), mode, out);
    if (rc != PT_OK) {
        /* Only possible on a library error; the head is gone, so the
         * response can only be cut. */
        scratch_done(out);
        free_codecs(st);
        pt_txn_respond_problem(txn, 500, "response compression failed");
        return PT_PLUGIN_RESPOND;
    }
    const pt_compression_conf *c = conf;
    size_t cell = metric_cell(st->enc_coding);
    pt_metric_add(c->m_bytes_in, cell, (int64_t)pt_body_len(body));
    pt_metric_add(c->m_bytes_out, cell, (int64_t)out->len);
    if (last) pt_metric_add(c->m_responses, cell, 1);
    pt_body_replace(body, out->p, out->len);
    scratch_done(out);
    if (last) {
        pt_encoder_free(st->enc);
        st->enc = NULL;
    }
    return PT_PLUGIN_CONTINUE;
}

const pt_plugin_type pt_plugin_compression = {
    .name = "compression",
    .configure = compression_configure,
    .worker_init = compression_worker_init,
    .worker_fini = compression_worker_fini,
    .state_size = sizeof(pt_compression_state),
    .on_request_headers = compression_on_request_headers,
    .on_request_body = compression_on_request_body,
    .on_response_headers = compression_on_response_headers,
    .on_response_body = compression_on_response_body,
};
