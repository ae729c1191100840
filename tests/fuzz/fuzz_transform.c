/* fuzz_transform.c — libFuzzer driver for the body transformations.
 *
 * Input: byte 0 selects the converter (0: json_transform with a fixed list
 * of operations, 1: JSON → XML, 2: XML → JSON, 3: pt_content_decode with
 * the coding in bits 4..5; bit 2: `arrays`/`root` set); the rest is the
 * body. Besides crashes, leaks and UB it checks:
 *   - json_transform output is JSON jansson accepts (duplicate keys
 *     refused), and writing it again gives the same bytes (the writer's
 *     numbers read back exactly);
 *   - JSON → XML output without namespace prefixes is XML that XML → JSON
 *     accepts;
 *   - XML → JSON output is JSON jansson accepts;
 *   - pt_content_decode never returns more than its cap;
 *   - a failure always leaves a reason and no output.
 * Build: see run.sh (every src/ object except the CLI). */
#include <jansson.h>
#include <libxml/parser.h>
#include <stdlib.h>

#include "config/conf_node.h"
#include "plugins/json_transform/json_transform.h"
#include "plugins/xml_json/xml_json.h"

#define REQUIRE(c) do { if (!(c)) __builtin_trap(); } while (0)

static pt_json_transform_conf *jt;

static void setup(void)
{
    static const char yaml[] = "response:\n"
                               "  - remove: 'a[*].b'\n"
                               "  - rename: {from: 'x[*].y', to: z}\n"
                               "  - move: {from: 'a[0]', to: 'm.n[-]'}\n"
                               "  - copy: {from: m, to: 'k[0]'}\n"
                               "  - add: {path: 'p.q', value: {r: [1, 0.1, \"s\", null]}}\n"
                               "  - remove: 'p[*]'\n";
    static pt_errors errs;
    static pt_arena *a; /* kept for the process: jt lives in it */
    a = pt_arena_new(4096);
    pt_conf_ctx ctx = {.file = "fuzz", .arena = a, .errors = &errs};
    const pt_conf_node *node = pt_conf_parse_yaml(&ctx, yaml, sizeof(yaml) - 1);
    jt = node ? pt_plugin_json_transform.configure(&ctx, node) : NULL;
    REQUIRE(jt);
    xmlInitParser();
}

static bool json_ok(const char *p, size_t n)
{
    json_error_t e;
    json_t *v = json_loadb(p, n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    json_decref(v);
    return v != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!jt) setup();
    if (size < 1) return 0;
    int mode = data[0] & 3;
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    char err[256] = "";
    pt_xpath arr = {.names = (const char *[]){"a", "b"}, .n = 2};
    pt_xj_opts o = {.max_depth = 32};
    if (data[0] & 4) {
        o.arrays = &arr;
        o.narrays = 1;
        o.root = "r";
    }
    if (mode == 0) {
        pt_plugin_bytes out = {0}, again = {0};
        pt_jt_result r = pt_json_transform_text(jt->response.ops, jt->response.nops, 32, in, len, &out, err, sizeof(err));
        if (r == PT_JT_OK) {
            REQUIRE(json_ok(out.p, out.len));
            REQUIRE(pt_json_transform_text(NULL, 0, 1000, out.p, out.len, &again, err, sizeof(err)) == PT_JT_OK);
            REQUIRE(again.len == out.len && memcmp(again.p, out.p, out.len) == 0);
        } else {
            REQUIRE(out.len == 0 && err[0]);
        }
        pt_plugin_bytes_free(&out);
        pt_plugin_bytes_free(&again);
    } else if (mode == 1) {
        pt_plugin_bytes out = {0}, back = {0};
        pt_xj_result r = pt_json_to_xml(&o, in, len, &out, err, sizeof(err));
        if (r == PT_XJ_OK) {
            static const char decl[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>";
            REQUIRE(out.len > sizeof(decl) - 1 && !memcmp(out.p, decl, sizeof(decl) - 1));
            if (!memchr(out.p + sizeof(decl) - 1, ':', out.len - (sizeof(decl) - 1)) && out.len < (1 << 20)) {
                pt_xj_opts deep = o;
                deep.max_depth = 1000;
                REQUIRE(pt_xml_to_json(&deep, out.p, out.len, &back, err, sizeof(err)) == PT_XJ_OK);
            }
        } else {
            REQUIRE(out.len == 0 && err[0]);
        }
        pt_plugin_bytes_free(&out);
        pt_plugin_bytes_free(&back);
    } else if (mode == 3) {
        static const char *const codings[] = {"gzip", "deflate", "br", "zstd"};
        char *out;
        size_t n;
        size_t cap = 1 << 16;
        pt_decode_result r = pt_content_decode(pt_str_c(codings[(data[0] >> 4) & 3]), in, len, cap, &out, &n);
        if (r == PT_DECODE_OK) REQUIRE(n <= cap);
        else REQUIRE(out == NULL && n == 0);
        free(out);
    } else {
        pt_plugin_bytes out = {0};
        pt_xj_result r = pt_xml_to_json(&o, in, len, &out, err, sizeof(err));
        if (r == PT_XJ_OK) REQUIRE(json_ok(out.p, out.len));
        else REQUIRE(out.len == 0 && err[0]);
        pt_plugin_bytes_free(&out);
    }
    return 0;
}
