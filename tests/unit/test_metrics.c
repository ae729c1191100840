/* Unit tests for the metrics registry (src/obs/metrics.c): descriptions,
 * exposition text (escaping, fixed-point values, dims), histogram bucket
 * math, per-thread shards, series lifetime across "reloads", limits. */
#include <pthread.h>

#include "obs/metrics.h"
#include "testlib.h"

static const uint64_t BUCKETS_US[] = {5000, 10000, 250000, 1000000};
static const char *const ROUTE[] = {"route", NULL};
static const char *const CLASSES[] = {"2xx", "4xx", "5xx", NULL};
static const pt_metric_dim CLASS_DIM[] = {{"status_class", CLASSES}};

static char *expose(pt_metrics *m)
{
    size_t len;
    char *s = pt_metrics_expose(m, &len);
    CHECK(strlen(s) == len);
    return s;
}

/* True when `line` (without its newline) is a whole line of `text`. */
static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0')) return true;
    return false;
}

TEST(family_validation)
{
    pt_metrics *m = pt_metrics_new();
    char err[256];
    pt_metric_desc d = {.name = "9bad", .help = "x", .type = PT_METRIC_COUNTER};
    CHECK(pt_metrics_family(m, &d, err, sizeof err) == NULL);
    CHECK(strstr(err, "invalid metric name") != NULL);
    d.name = "ok_total";
    d.help = "two\nlines";
    CHECK(pt_metrics_family(m, &d, err, sizeof err) == NULL);
    d.help = "fine";
    static const char *const dup[] = {"a", "a", NULL};
    d.labels = dup;
    CHECK(pt_metrics_family(m, &d, err, sizeof err) == NULL);
    CHECK(strstr(err, "twice") != NULL);
    static const char *const reserved[] = {"__x", NULL};
    d.labels = reserved;
    CHECK(pt_metrics_family(m, &d, err, sizeof err) == NULL);
    d.labels = ROUTE;
    pt_metric_family *f = pt_metrics_family(m, &d, err, sizeof err);
    CHECK(f != NULL);
    /* identical description: the same family; a different one: refused */
    CHECK(pt_metrics_family(m, &d, err, sizeof err) == f);
    d.type = PT_METRIC_GAUGE;
    CHECK(pt_metrics_family(m, &d, err, sizeof err) == NULL);
    CHECK(strstr(err, "already registered") != NULL);

    static const char *const le[] = {"le", NULL};
    pt_metric_desc h = {.name = "h_seconds", .help = "h", .type = PT_METRIC_HISTOGRAM, .labels = le,
                        .buckets = BUCKETS_US, .nbuckets = 4};
    CHECK(pt_metrics_family(m, &h, err, sizeof err) == NULL);
    h.labels = NULL;
    static const uint64_t unsorted[] = {1, 3, 2};
    h.buckets = unsorted;
    h.nbuckets = 3;
    CHECK(pt_metrics_family(m, &h, err, sizeof err) == NULL);
    h.nbuckets = 0;
    CHECK(pt_metrics_family(m, &h, err, sizeof err) == NULL);
    pt_metric_desc c = {.name = "c_total", .help = "c", .type = PT_METRIC_COUNTER, .buckets = BUCKETS_US,
                        .nbuckets = 4};
    CHECK(pt_metrics_family(m, &c, err, sizeof err) == NULL);
    CHECK(pt_metrics_family(NULL, &c, err, sizeof err) == NULL);
    pt_metrics_free(m);
}

TEST(counter_with_labels_and_dims)
{
    pt_metrics *m = pt_metrics_new();
    pt_metric_desc d = {.name = "portico_test_requests_total", .help = "Requests.", .type = PT_METRIC_COUNTER,
                        .labels = ROUTE, .dims = CLASS_DIM, .ndims = 1};
    pt_metric_family *f = pt_metrics_family(m, &d, NULL, 0);
    CHECK(pt_metric_dim_index(f, 0, "4xx") == 1);
    CHECK(pt_metric_dim_index(f, 0, "3xx") == -1);
    CHECK(pt_metric_dim_index(f, 1, "4xx") == -1);
    pt_metric_series *users = pt_metrics_series(f, (const char *[]){"users"}, NULL);
    pt_metric_series *none = pt_metrics_series(f, (const char *[]){""}, NULL);
    CHECK(pt_metrics_series(f, (const char *[]){"users"}, NULL) == users);
    pt_metric_add(users, 0, 3);
    pt_metric_add(users, 2, 1);
    pt_metric_add(none, 1, 2);
    pt_metric_add(NULL, 0, 1); /* ignored */
    char *t = expose(m);
    CHECK(has_line(t, "# HELP portico_test_requests_total Requests."));
    CHECK(has_line(t, "# TYPE portico_test_requests_total counter"));
    CHECK(has_line(t, "portico_test_requests_total{route=\"users\",status_class=\"2xx\"} 3"));
    CHECK(has_line(t, "portico_test_requests_total{route=\"users\",status_class=\"5xx\"} 1"));
    CHECK(has_line(t, "portico_test_requests_total{route=\"\",status_class=\"4xx\"} 2"));
    /* combinations that never counted are left out */
    CHECK(strstr(t, "route=\"users\",status_class=\"4xx\"") == NULL);
    free(t);
    pt_metrics_free(m);
}

TEST(escaping)
{
    pt_metrics *m = pt_metrics_new();
    pt_metric_desc d = {.name = "esc_total", .help = "back\\slash \"quoted\"", .type = PT_METRIC_COUNTER,
                        .labels = ROUTE};
    pt_metric_family *f = pt_metrics_family(m, &d, NULL, 0);
    pt_metric_series *s = pt_metrics_series(f, (const char *[]){"a\"b\\c\nd é"}, NULL);
    pt_metric_add(s, 0, 1);
    char *t = expose(m);
    /* HELP escapes backslash (and line feeds), not quotes */
    CHECK(has_line(t, "# HELP esc_total back\\\\slash \"quoted\""));
    /* label values escape backslash, quote and line feed; UTF-8 passes */
    CHECK(has_line(t, "esc_total{route=\"a\\\"b\\\\c\\nd é\"} 1"));
    free(t);
    pt_metrics_free(m);
}

TEST(bucket_math)
{
    CHECK_INT(pt_metric_bucket(BUCKETS_US, 4, 0), 0);
    CHECK_INT(pt_metric_bucket(BUCKETS_US, 4, 5000), 0); /* le: the bound itself is inside */
    CHECK_INT(pt_metric_bucket(BUCKETS_US, 4, 5001), 1);
    CHECK_INT(pt_metric_bucket(BUCKETS_US, 4, 10000), 1);
    CHECK_INT(pt_metric_bucket(BUCKETS_US, 4, 999999), 3);
    CHECK_INT(pt_metric_bucket(BUCKETS_US, 4, 1000000), 3);
    CHECK_INT(pt_metric_bucket(BUCKETS_US, 4, 1000001), 4); /* +Inf */
    CHECK_INT(pt_metric_bucket(BUCKETS_US, 4, UINT64_MAX), 4);
}

TEST(histogram_exposition)
{
    pt_metrics *m = pt_metrics_new();
    pt_metric_desc d = {.name = "lat_seconds", .help = "Latency.", .type = PT_METRIC_HISTOGRAM, .labels = ROUTE,
                        .buckets = BUCKETS_US, .nbuckets = 4, .unit_decimals = 6};
    pt_metric_family *f = pt_metrics_family(m, &d, NULL, 0);
    pt_metric_series *s = pt_metrics_series(f, (const char *[]){"r"}, NULL);
    pt_metric_series *idle = pt_metrics_series(f, (const char *[]){"idle"}, NULL);
    (void)idle;
    uint64_t vals[] = {1000, 5000, 7000, 300000, 2500000, 1};
    for (size_t i = 0; i < PT_ARRAY_LEN(vals); i++) pt_metric_observe(s, 0, vals[i]);
    char *t = expose(m);
    CHECK(has_line(t, "# TYPE lat_seconds histogram"));
    CHECK(has_line(t, "lat_seconds_bucket{route=\"r\",le=\"0.005\"} 3"));
    CHECK(has_line(t, "lat_seconds_bucket{route=\"r\",le=\"0.01\"} 4"));
    CHECK(has_line(t, "lat_seconds_bucket{route=\"r\",le=\"0.25\"} 4"));
    CHECK(has_line(t, "lat_seconds_bucket{route=\"r\",le=\"1\"} 5"));
    CHECK(has_line(t, "lat_seconds_bucket{route=\"r\",le=\"+Inf\"} 6"));
    CHECK(has_line(t, "lat_seconds_count{route=\"r\"} 6"));
    CHECK(has_line(t, "lat_seconds_sum{route=\"r\"} 2.813001")); /* exact fixed point */
    /* a series without dims is shown even before its first observation */
    CHECK(has_line(t, "lat_seconds_bucket{route=\"idle\",le=\"+Inf\"} 0"));
    CHECK(has_line(t, "lat_seconds_sum{route=\"idle\"} 0"));
    free(t);
    pt_metrics_free(m);
}

TEST(gauges_and_units)
{
    pt_metrics *m = pt_metrics_new();
    pt_metric_desc g = {.name = "open", .help = "Open.", .type = PT_METRIC_GAUGE};
    pt_metric_series *s = pt_metrics_series(pt_metrics_family(m, &g, NULL, 0), NULL, NULL);
    pt_metric_add(s, 0, 2);
    pt_metric_add(s, 0, -5);
    pt_metric_desc set = {.name = "gen", .help = "Gen.", .type = PT_METRIC_GAUGE};
    pt_metric_series *gs = pt_metrics_series(pt_metrics_family(m, &set, NULL, 0), NULL, NULL);
    pt_metric_set(gs, 0, 7);
    pt_metric_set(gs, 0, 42);
    pt_metric_desc sec = {.name = "busy_seconds_total", .help = "B.", .type = PT_METRIC_COUNTER, .unit_decimals = 3};
    pt_metric_series *ss = pt_metrics_series(pt_metrics_family(m, &sec, NULL, 0), NULL, NULL);
    pt_metric_add(ss, 0, 1250);
    char *t = expose(m);
    CHECK(has_line(t, "open -3"));
    CHECK(has_line(t, "gen 42"));
    CHECK(has_line(t, "busy_seconds_total 1.25"));
    free(t);
    pt_metrics_free(m);
}

/* ------------------------------------------------------------- threads */

typedef struct {
    pt_metrics_shard *shard;
    pt_metric_series *s;
    int n;
} writer_arg;

static void *writer(void *p)
{
    writer_arg *a = p;
    pt_metrics_thread_attach(a->shard);
    for (int i = 0; i < a->n; i++) pt_metric_add(a->s, 1, 1);
    pt_metrics_thread_attach(NULL);
    return NULL;
}

TEST(shards_sum_across_threads)
{
    pt_metrics *m = pt_metrics_new();
    pt_metric_desc d = {.name = "t_total", .help = "T.", .type = PT_METRIC_COUNTER, .labels = ROUTE, .dims = CLASS_DIM,
                        .ndims = 1};
    pt_metric_family *f = pt_metrics_family(m, &d, NULL, 0);
    pt_metric_series *s = pt_metrics_series(f, (const char *[]){"x"}, NULL);
    writer_arg a[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        a[i] = (writer_arg){.shard = pt_metrics_shard_new(m), .s = s, .n = 100000};
        pthread_create(&th[i], NULL, writer, &a[i]);
    }
    pt_metric_add(s, 1, 5); /* this thread has no shard: the control shard */
    /* a thread attached to another registry's shard must not write there */
    pt_metrics *other = pt_metrics_new();
    pt_metrics_thread_attach(pt_metrics_shard_new(other));
    pt_metric_add(s, 1, 1);
    pt_metrics_thread_attach(NULL);
    for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
    char *t = expose(m);
    CHECK(has_line(t, "t_total{route=\"x\",status_class=\"4xx\"} 300006"));
    free(t);
    pt_metrics_free(other);
    pt_metrics_free(m);
}

/* ------------------------------------------------------------ lifetime */

TEST(series_survive_reload_and_are_dropped_when_unowned)
{
    pt_metrics *m = pt_metrics_new();
    pt_metric_desc d = {.name = "r_total", .help = "R.", .type = PT_METRIC_COUNTER, .labels = ROUTE};
    pt_metric_family *f = pt_metrics_family(m, &d, NULL, 0);
    pt_arena *gen1 = pt_arena_new(1024), *gen2 = pt_arena_new(1024);
    pt_metric_series *a1 = pt_metrics_series(f, (const char *[]){"a"}, gen1);
    pt_metric_series *b1 = pt_metrics_series(f, (const char *[]){"b"}, gen1);
    pt_metric_add(a1, 0, 10);
    pt_metric_add(b1, 0, 20);
    /* a reload: generation 2 names route a again, not b */
    pt_metric_series *a2 = pt_metrics_series(f, (const char *[]){"a"}, gen2);
    CHECK(a2 == a1);
    pt_arena_free(gen1);
    char *t = expose(m);
    CHECK(has_line(t, "r_total{route=\"a\"} 10")); /* kept its count */
    CHECK(strstr(t, "route=\"b\"") == NULL);       /* gone with its last owner */
    free(t);
    /* a new series reuses b's cells, starting from zero */
    pt_metric_series *c2 = pt_metrics_series(f, (const char *[]){"c"}, gen2);
    t = expose(m);
    CHECK(has_line(t, "r_total{route=\"c\"} 0"));
    free(t);
    pt_metric_add(c2, 0, 1);
    pt_arena_free(gen2);
    t = expose(m);
    CHECK(strstr(t, "r_total{") == NULL);
    CHECK(has_line(t, "# TYPE r_total counter"));
    free(t);
    pt_metrics_free(m);
}

TEST(max_series_bounds_memory)
{
    pt_metrics *m = pt_metrics_new();
    pt_metric_desc d = {.name = "cap_total", .help = "C.", .type = PT_METRIC_COUNTER, .labels = ROUTE,
                        .max_series = 3};
    pt_metric_family *f = pt_metrics_family(m, &d, NULL, 0);
    pt_arena *a = pt_arena_new(1024);
    char name[16];
    int got = 0;
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof name, "r%d", i);
        pt_metric_series *s = pt_metrics_series(f, (const char *[]){name}, a);
        got += s != NULL;
        pt_metric_add(s, 0, 1); /* NULL: ignored */
    }
    CHECK_INT(got, 3);
    pt_arena_free(a);
    /* freed slots are available again */
    a = pt_arena_new(1024);
    CHECK(pt_metrics_series(f, (const char *[]){"again"}, a) != NULL);
    pt_arena_free(a);
    CHECK(pt_metrics_series(NULL, NULL, NULL) == NULL);
    pt_metrics_free(m);
}

TEST(many_series_grow_hash_and_chunks)
{
    pt_metrics *m = pt_metrics_new();
    pt_metric_desc d = {.name = "big_seconds", .help = "B.", .type = PT_METRIC_HISTOGRAM, .labels = ROUTE,
                        .buckets = BUCKETS_US, .nbuckets = 4, .unit_decimals = 6, .max_series = 5000};
    pt_metric_family *f = pt_metrics_family(m, &d, NULL, 0);
    char name[16];
    pt_metric_series *last = NULL;
    for (int i = 0; i < 3000; i++) {
        snprintf(name, sizeof name, "r%d", i);
        last = pt_metrics_series(f, (const char *[]){name}, NULL);
        pt_metric_observe(last, 0, (uint64_t)i);
    }
    CHECK(pt_metrics_series(f, (const char *[]){"r1234"}, NULL) != last);
    CHECK(pt_metrics_series(f, (const char *[]){"r2999"}, NULL) == last);
    char *t = expose(m);
    CHECK(has_line(t, "big_seconds_sum{route=\"r2999\"} 0.002999"));
    CHECK(has_line(t, "big_seconds_count{route=\"r1234\"} 1"));
    free(t);
    pt_metrics_free(m);
}

TEST_MAIN()
