/* metrics.h — a small metrics registry with Prometheus text exposition.
 *
 * Model. A *family* is one metric name with its help text, type (counter,
 * gauge, histogram) and label names. A *series* is one set of label values
 * of a family. Label values come from two places, so that cardinality is
 * always bounded by the configuration, never by traffic:
 *   - `labels`: values given when the series is acquired, at configure time
 *     (a route name, an upstream target) — never from request data;
 *   - `dims`: labels with a fixed list of allowed values declared with the
 *     family (a method out of GET..OTHER, a status class 1xx..5xx). A series
 *     holds one cell per combination; the request path picks the cell by
 *     index (row-major: the last dim varies fastest).
 * A histogram cell holds its buckets, +Inf and the sum.
 *
 * Values are integers. `unit_decimals` scales them for the exposition: a
 * histogram of durations observed in microseconds with unit_decimals 6 is
 * exposed in seconds (bucket bounds too), exactly (fixed-point printing).
 *
 * Threads and locking. Every thread that writes metrics on the request path
 * owns a *shard* (pt_metrics_thread_attach): a private array of relaxed
 * atomic uint64 cells that only it writes (load + store, no read-modify-write,
 * no lock, no shared cache line). The scraper sums the shards with relaxed
 * loads. A thread without a shard (the main thread, tests) writes the
 * registry's control shard with atomic adds. Only series acquisition,
 * family registration and exposition take the registry mutex; they run on
 * the main thread (configuration) and the admin thread (scrapes), never on
 * a worker.
 *
 * Lifetime of series. pt_metrics_series(f, values, owner) returns the series
 * with those label values, creating it if needed, and holds one reference
 * on it until the arena `owner` is freed (an arena cleanup). Pass the
 * configuration arena (ctx->arena in a plugin's configure): a series is
 * shared by every configuration generation that names the same values, so
 * its counts survive reloads (a route keeps its counters under the same
 * name), and when the last configuration that named it is freed it is
 * removed from the exposition and its cells are reused. owner NULL makes a
 * permanent series. Writes to a series are allowed only while a reference
 * is held (a request of a generation writes before that generation is
 * released). A family holds at most max_series series; past that
 * pt_metrics_series returns NULL, and every write function ignores a NULL
 * series, so callers need no checks.
 *
 * For plugins: declare with pt_conf_metric() (plugin/plugin.h) in
 * configure, which registers the family in ctx->metrics, acquires the
 * series owned by the configuration arena, and returns NULL when metrics
 * are off; write with pt_metric_add/observe/set on a worker.
 * See docs/metrics.md. */
#ifndef PT_OBS_METRICS_H
#define PT_OBS_METRICS_H

#include "core/arena.h"
#include "core/common.h"

typedef struct pt_metrics pt_metrics;
typedef struct pt_metric_family pt_metric_family;
typedef struct pt_metric_series pt_metric_series;
typedef struct pt_metrics_shard pt_metrics_shard;

typedef enum {
    PT_METRIC_COUNTER = 0,
    PT_METRIC_GAUGE,
    PT_METRIC_HISTOGRAM,
} pt_metric_type;

#define PT_METRIC_MAX_LABELS 8      /* labels + dims of one family */
#define PT_METRIC_MAX_BUCKETS 32
#define PT_METRIC_DEFAULT_MAX_SERIES 10000

/* A label with a fixed list of values (NULL-terminated, at most 64). */
typedef struct {
    const char *name;
    const char *const *values;
} pt_metric_dim;

typedef struct {
    const char *name;            /* [a-zA-Z_:][a-zA-Z0-9_:]*; counters should end in _total */
    const char *help;            /* one line of text */
    pt_metric_type type;
    const char *const *labels;   /* NULL-terminated names of per-series labels, or NULL */
    const pt_metric_dim *dims;   /* fixed-value labels, exposed after `labels` */
    size_t ndims;
    const uint64_t *buckets;     /* histograms: upper bounds, strictly increasing (+Inf is implicit) */
    size_t nbuckets;             /* histograms: 1..PT_METRIC_MAX_BUCKETS */
    unsigned unit_decimals;      /* exposed value = stored integer / 10^unit_decimals (0..9) */
    size_t max_series;           /* 0 = PT_METRIC_DEFAULT_MAX_SERIES */
} pt_metric_desc;

pt_metrics *pt_metrics_new(void);
/* Frees the registry, its shards and series. Every owner arena must have
 * been freed before (their cleanups touch the series). */
void pt_metrics_free(pt_metrics *m);

/* A new shard for one writing thread (call before that thread writes), and
 * binding it to the calling thread (NULL unbinds). */
pt_metrics_shard *pt_metrics_shard_new(pt_metrics *m);
void pt_metrics_thread_attach(pt_metrics_shard *s);

/* Registers a family, or returns the one already registered under that
 * name if its description is identical (type, labels, dims, buckets, unit).
 * NULL with a message in err for an invalid or conflicting description. The
 * strings of `d` must stay valid as long as the registry (use literals). */
pt_metric_family *pt_metrics_family(pt_metrics *m, const pt_metric_desc *d, char *err, size_t errcap);

/* The series of `f` with these values for the family's `labels` (an array
 * of as many strings; any UTF-8 text, copied), holding a reference until
 * `owner` is freed (NULL: forever). NULL when f is NULL or the family is
 * full. Main thread / configuration time only. */
pt_metric_series *pt_metrics_series(pt_metric_family *f, const char *const *values, pt_arena *owner);

/* Index of `value` in dim `dim` of the family, or -1. Configuration time. */
int pt_metric_dim_index(const pt_metric_family *f, size_t dim, const char *value);

/* Request-path writes; `cell` is the row-major index over the dims (0 when
 * the family has none). All ignore a NULL series. */
void pt_metric_add(pt_metric_series *s, size_t cell, int64_t delta); /* counters (delta >= 0), gauges */
void pt_metric_observe(pt_metric_series *s, size_t cell, uint64_t value); /* histograms */
/* Gauges written only this way (never with add): the exposed value is the
 * last one set. Any thread. */
void pt_metric_set(pt_metric_series *s, size_t cell, int64_t value);

/* The whole registry in the Prometheus text format 0.0.4. Returns a
 * malloc'ed, NUL-terminated buffer (caller frees) and its length in *len. Also drops the
 * series whose last owner is gone. */
char *pt_metrics_expose(pt_metrics *m, size_t *len);

/* The content type of that format. */
#define PT_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Histogram bucket of `value` among `bounds` (the first bound >= value;
 * nbounds for +Inf). Exposed for tests. */
size_t pt_metric_bucket(const uint64_t *bounds, size_t nbounds, uint64_t value);

#endif
