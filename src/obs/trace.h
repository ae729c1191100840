/* trace.h — distributed tracing: W3C Trace Context (traceparent,
 * tracestate), sampling, spans and their OTLP/HTTP JSON encoding, and the
 * asynchronous exporter (docs/observability.md "Tracing").
 *
 * The pure part (parsing, ids, sampling, encoding) is usable from any
 * thread. The exporter is process-wide: pt_trace_export_configure and
 * pt_trace_export_stop run on the main thread; pt_trace_submit runs on
 * workers and never blocks: a span is encoded by the worker, put on a
 * bounded queue under a short mutex (no I/O under it), or dropped and
 * counted when the queue is full. One exporter thread batches the queue and
 * POSTs OTLP/HTTP JSON to the collector with a timeout and retries. */
#ifndef PT_OBS_TRACE_H
#define PT_OBS_TRACE_H

#include "config/config.h"
#include "obs/metrics.h"

/* ---- W3C Trace Context ---- */

typedef struct {
    uint8_t trace_id[16];
    uint8_t span_id[8];   /* the caller's span: our parent */
    uint8_t flags;        /* bit 0: sampled */
} pt_trace_parent;

/* Length of a version-00 traceparent value: "00-" 32 "-" 16 "-" 2. */
#define PT_TRACEPARENT_LEN 55
/* Most bytes of tracestate kept (the spec's minimum to propagate). */
#define PT_TRACESTATE_MAX 512
/* Most list-members of tracestate. */
#define PT_TRACESTATE_MAX_MEMBERS 32

/* Parses a traceparent value strictly (W3C Trace Context level 1): version
 * 00 exactly 55 bytes; lowercase hex only; trace-id and parent-id not all
 * zero; version ff invalid; a higher version is read for its first four
 * fields when the rest is empty or starts with '-'. False: ignore it. */
bool pt_traceparent_parse(pt_str v, pt_trace_parent *out);

/* Writes "00-<trace>-<span>-<flags>" (PT_TRACEPARENT_LEN bytes, no NUL). */
void pt_traceparent_format(char *out, const uint8_t trace_id[16], const uint8_t span_id[8], bool sampled);
/* The same with the trace id already in hex (32 lowercase digits). */
void pt_traceparent_format_hex(char *out, const char *trace_hex, const uint8_t span_id[8], bool sampled);

/* The tracestate to propagate from the combined field value `v` (several
 * field lines joined by ','): empty list-members dropped, at most 32
 * members; when longer than 512 bytes, members over 128 bytes go first,
 * then members from the end. Any invalid member (key or value syntax) or a
 * duplicate key makes the whole value invalid: an empty slice. The result
 * is in arena `a` (or a slice of v when nothing changed). */
pt_str pt_tracestate_filter(pt_arena *a, pt_str v);

/* Lowercase hex of in[0..n) into out (2n bytes, no NUL). */
void pt_trace_hex(char *out, const uint8_t *in, size_t n);

/* A fast per-thread PRNG (xoshiro256**), seeded from getrandom. */
uint64_t pt_trace_rand64(void);
/* Fills id[0..n) with random bytes, never all zero; n is 8 or 16. */
void pt_trace_new_id(uint8_t *id, size_t n);

/* OpenTelemetry TraceIdRatioBased: deterministic on the trace id (its last
 * 8 bytes, big-endian, under ratio * 2^63 after dropping the lowest bit),
 * so every service with the same ratio decides alike. */
bool pt_trace_ratio_sampled(const uint8_t trace_id[16], double ratio);

/* ---- spans ---- */

typedef enum {
    PT_SPAN_INTERNAL = 1,
    PT_SPAN_SERVER = 2,
    PT_SPAN_CLIENT = 3,
} pt_span_kind;

typedef enum {
    PT_SPAN_STATUS_UNSET = 0,
    PT_SPAN_STATUS_OK = 1,
    PT_SPAN_STATUS_ERROR = 2,
} pt_span_status;

typedef struct {
    const char *key;      /* static string */
    size_t key_n;
    pt_str str;           /* is_int false */
    int64_t num;          /* is_int true */
    bool is_int;
} pt_span_attr;

#define PT_SPAN_MAX_ATTRS 16

/* One finished span. Strings are borrowed for the duration of
 * pt_trace_submit / pt_span_json. */
typedef struct {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t parent_id[8];
    bool has_parent;
    pt_str name;
    pt_span_kind kind;
    uint64_t start_ns, end_ns;      /* unix nanoseconds */
    pt_span_status status;
    pt_str status_message;
    pt_span_attr attrs[PT_SPAN_MAX_ATTRS];
    size_t nattrs;
} pt_span;

/* Adds an attribute (ignored past PT_SPAN_MAX_ATTRS or when v is empty).
 * `key` is a static string; inline so its length folds for a literal. */
static inline void pt_span_str(pt_span *s, const char *key, pt_str v)
{
    if (s->nattrs >= PT_SPAN_MAX_ATTRS || !v.n) return;
    s->attrs[s->nattrs++] = (pt_span_attr){.key = key, .key_n = strlen(key), .str = v};
}
static inline void pt_span_int(pt_span *s, const char *key, int64_t v)
{
    if (s->nattrs >= PT_SPAN_MAX_ATTRS) return;
    s->attrs[s->nattrs++] = (pt_span_attr){.key = key, .key_n = strlen(key), .num = v, .is_int = true};
}

/* A growable byte string (malloc'd), for encoders. */
typedef struct {
    char *p;
    size_t n, cap;
} pt_trace_buf;
void pt_trace_buf_put(pt_trace_buf *b, const char *p, size_t n);
void pt_trace_buf_free(pt_trace_buf *b);

/* Appends the OTLP JSON object of one span: traceId/spanId/parentSpanId as
 * lowercase hex strings, kind and status code as integers, times as
 * decimal strings of unix nanoseconds, attributes as
 * {"key":..,"value":{"stringValue":..}} or {"intValue":"N"}. */
void pt_span_json(pt_trace_buf *out, const pt_span *s);
/* The same into `out`, which holds at least pt_span_json_bound(s) bytes;
 * returns the length written. */
size_t pt_span_json_bound(const pt_span *s);
size_t pt_span_json_write(char *out, const pt_span *s);

/* Appends a whole ExportTraceServiceRequest body: one resourceSpans with
 * service.name, one scopeSpans (scope "portico"), and the span objects
 * spans[0..n) (each as written by pt_span_json), comma-separated. */
void pt_trace_export_body(pt_trace_buf *out, const char *service_name, const pt_str *spans, size_t n);
/* The same in pieces: the text before the first span, and after the last
 * (the caller puts the spans in between, comma-separated). */
void pt_trace_export_open(pt_trace_buf *out, const char *service_name);
void pt_trace_export_close(pt_trace_buf *out);

/* The OTLP protobuf encoding of one span, as it sits in a ScopeSpans
 * message (field 2: tag, length, Span): a malloc'd buffer of *len bytes.
 * trace_id/span_id/parent are bytes, times fixed64, attributes KeyValue
 * with string_value or int_value; strings that are not UTF-8 get U+FFFD
 * for each invalid byte. */
char *pt_span_proto_encode(const pt_span *s, size_t *len);
/* The same into a buffer the caller sizes: pt_span_proto_bound is a cheap
 * upper bound (no scan of the strings), pt_span_proto_write writes the
 * span into out[0..bound) and returns its exact length. */
size_t pt_span_proto_bound(const pt_span *s);
size_t pt_span_proto_write(char *out, const pt_span *s);
/* The same appended to `out`. */
void pt_span_proto(pt_trace_buf *out, const pt_span *s);
/* Appends a whole protobuf ExportTraceServiceRequest: one ResourceSpans
 * with service.name, one ScopeSpans (scope "portico") and the encoded
 * spans[0..n) (each from pt_span_proto_encode) concatenated. */
void pt_trace_proto_body(pt_trace_buf *out, const char *service_name, const pt_str *spans, size_t n);
/* The part before the spans, when they will total spans_len bytes. */
void pt_trace_proto_open(pt_trace_buf *out, const char *service_name, size_t spans_len);

/* ---- the exporter ---- */

/* Starts the exporter thread (first call with an endpoint) or changes its
 * settings (endpoint, batching, queue bound) for the spans that follow.
 * Main thread. `c` is copied. */
void pt_trace_export_configure(const pt_tracing_conf *c);
/* Sends what is queued (one attempt per batch; after a failed one the rest
 * is counted as failed without trying), stops and joins the thread. */
void pt_trace_export_stop(void);
/* Whether a span submitted now could be queued (the exporter runs and the
 * queue has room): lets a worker skip building a span that would be dropped
 * (it is counted as dropped by pt_trace_drop_one). */
bool pt_trace_export_room(void);
/* Adds one finished span to the worker's chunk (loop slot
 * PT_LOOP_SLOT_TRACE), which goes to the export queue when full or 100 ms
 * (at most batch_delay) after its first span; spans over the queue's bound
 * are dropped and counted. The loop's thread; never blocks on I/O. */
void pt_trace_submit(struct pt_loop *loop, const pt_span *s);
/* Queues the worker's pending spans and frees its chunk (worker exit,
 * before pt_trace_export_stop). */
void pt_trace_worker_fini(struct pt_loop *loop);
/* Counts one span dropped without being built (queue full). */
void pt_trace_drop_one(void);
/* Spans and bytes of buffer the export queue holds (tests: the memory
 * bound of observability.md). */
size_t pt_trace_export_queued(size_t *bytes);

/* portico_tracing_spans_{exported,failed,dropped}_total in `reg`
 * (permanent series). Main thread, once. */
void pt_trace_metrics_init(pt_metrics *reg);
/* Totals since start (tests, admin). */
uint64_t pt_trace_spans_dropped(void);
uint64_t pt_trace_spans_exported(void);
uint64_t pt_trace_spans_failed(void);

#endif
