/* transform_bench.c — throughput of the body transformations on a 100 KB
 * JSON document, calling the transform functions directly (no network,
 * no proxy): json_transform (parse, 5 operations, write), JSON → XML and
 * XML → JSON (xml_json). Prints MB/s of input per transformation. A
 * micro-benchmark for docs/performance.md, never a test: run it on a quiet
 * machine (`make transform-bench`). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "config/conf_node.h"
#include "plugins/json_transform/json_transform.h"
#include "plugins/xml_json/xml_json.h"

#define DOC_SIZE (100 * 1024)
#define SECONDS 1.0

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* About 100 KB of order records: nested objects, arrays, strings, numbers. */
static char *make_doc(size_t *len)
{
    size_t cap = DOC_SIZE + 4096, n = 0;
    char *d = malloc(cap);
    n += (size_t)snprintf(d + n, cap - n, "{\"orders\":{\"meta\":{\"page\":1,\"internal\":\"x\"},\"order\":[");
    for (int i = 0; n < DOC_SIZE - 300; i++)
        n += (size_t)snprintf(d + n, cap - n,
                              "%s{\"id\":%d,\"customer\":{\"name\":\"Customer %d\",\"email\":\"c%d@example.com\"},"
                              "\"total\":%d.%02d,\"items\":[{\"sku\":\"A-%d\",\"qty\":%d},{\"sku\":\"B-%d\",\"qty\":1}],"
                              "\"secret\":\"s%d\"}",
                              i ? "," : "", i, i, i, i * 7 % 1000, i % 100, i, i % 5 + 1, i, i);
    n += (size_t)snprintf(d + n, cap - n, "]}}");
    *len = n;
    return d;
}

typedef pt_jt_result (*json_fn)(const void *ctx, const char *in, size_t len, pt_plugin_bytes *out);

static void report(const char *name, size_t len, int iters, double secs)
{
    printf("%-28s %8.1f MB/s  (%d runs of %zu bytes in %.2f s)\n", name, (double)len * iters / secs / 1e6, iters,
           len, secs);
}

int main(void)
{
    size_t len;
    char *doc = make_doc(&len);

    /* json_transform: the operations as a route would configure them */
    static const char yaml[] = "response:\n"
                               "  - remove: orders.meta.internal\n"
                               "  - remove: 'orders.order[*].secret'\n"
                               "  - rename: {from: 'orders.order[*].customer', to: buyer}\n"
                               "  - add: {path: orders.meta.via, value: portico}\n"
                               "  - move: {from: orders.meta, to: meta}\n";
    pt_errors errs = {0};
    pt_arena *a = pt_arena_new(4096);
    pt_conf_ctx ctx = {.file = "bench", .arena = a, .errors = &errs};
    const pt_conf_node *node = pt_conf_parse_yaml(&ctx, yaml, strlen(yaml));
    pt_json_transform_conf *c = node ? pt_plugin_json_transform.configure(&ctx, node) : NULL;
    if (!c) {
        fprintf(stderr, "bench config: %s\n", errs.n ? errs.msgs[0] : "?");
        return 1;
    }
    char err[256];
    int iters = 0;
    double t0 = now(), t;
    do {
        pt_plugin_bytes out = {0};
        if (pt_json_transform_text(c->response.ops, c->response.nops, 64, doc, len, &out, err, sizeof(err)) != PT_JT_OK) {
            fprintf(stderr, "json_transform: %s\n", err);
            return 1;
        }
        pt_plugin_bytes_free(&out);
        iters++;
    } while ((t = now() - t0) < SECONDS);
    report("json_transform (5 ops)", len, iters, t);

    /* JSON → XML, then XML → JSON on that XML */
    pt_xj_opts o = {.max_depth = 64};
    pt_plugin_bytes xml = {0};
    iters = 0;
    t0 = now();
    do {
        xml.len = 0;
        if (pt_json_to_xml(&o, doc, len, &xml, err, sizeof(err)) != PT_XJ_OK) {
            fprintf(stderr, "json_to_xml: %s\n", err);
            return 1;
        }
        iters++;
    } while ((t = now() - t0) < SECONDS);
    report("xml_json json_to_xml", len, iters, t);

    iters = 0;
    t0 = now();
    do {
        pt_plugin_bytes out = {0};
        if (pt_xml_to_json(&o, xml.p, xml.len, &out, err, sizeof(err)) != PT_XJ_OK) {
            fprintf(stderr, "xml_to_json: %s\n", err);
            return 1;
        }
        pt_plugin_bytes_free(&out);
        iters++;
    } while ((t = now() - t0) < SECONDS);
    report("xml_json xml_to_json", xml.len, iters, t);

    pt_plugin_bytes_free(&xml);
    pt_plugin_json_transform.destroy(c);
    pt_errors_free(&errs);
    pt_arena_free(a);
    free(doc);
    return 0;
}
