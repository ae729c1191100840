/* test_json_transform.c — the json_transform plugin: path syntax, each
 * operation on real documents (configured through YAML as a user would),
 * order of application, the writer (numbers, escapes), configuration
 * errors, and the attack inputs (deep nesting, huge numbers, invalid
 * UTF-8, duplicate keys). The HTTP side is in
 * tests/integration/test_transform.py. */
#include <stdio.h>

#include "config/conf_node.h"
#include "plugins/json_transform/json_transform.h"
#include "plugin/plugin.h"
#include "testlib.h"

typedef struct {
    pt_arena *arena;
    pt_errors errors;
    pt_json_transform_conf *conf;
} run;

static run configure(const char *yaml)
{
    run r = {.arena = pt_arena_new(4096)};
    pt_conf_ctx ctx = {.file = "t.yaml", .arena = r.arena, .errors = &r.errors};
    const pt_conf_node *node = pt_conf_parse_yaml(&ctx, yaml, strlen(yaml));
    if (node) r.conf = pt_plugin_json_transform.configure(&ctx, node);
    return r;
}

static void run_free(run *r)
{
    if (r->conf) pt_plugin_json_transform.destroy(r->conf);
    pt_errors_free(&r->errors);
    pt_arena_free(r->arena);
}

static bool has_error(const run *r, const char *needle)
{
    for (size_t i = 0; i < r->errors.n; i++)
        if (strstr(r->errors.msgs[i], needle)) return true;
    for (size_t i = 0; i < r->errors.n; i++) fprintf(stderr, "    got: %s\n", r->errors.msgs[i]);
    return false;
}

/* Applies the response operations of `yaml` to `in`; the output (or
 * "ERR:<reason>") in a static buffer. */
static const char *xform(const char *yaml, const char *in)
{
    static char res[4096];
    run r = configure(yaml);
    if (!r.conf) {
        snprintf(res, sizeof(res), "CONFIG:%s", r.errors.n ? r.errors.msgs[0] : "?");
        run_free(&r);
        return res;
    }
    pt_plugin_bytes out = {0};
    char err[200];
    pt_jt_result rc = pt_json_transform_text(r.conf->response.ops, r.conf->response.nops, r.conf->max_depth, in,
                                             strlen(in), &out, err, sizeof(err));
    if (rc == PT_JT_OK) snprintf(res, sizeof(res), "%.*s", (int)out.len, out.p);
    else snprintf(res, sizeof(res), "ERR:%s", err);
    pt_plugin_bytes_free(&out);
    run_free(&r);
    return res;
}

static void expect_config_error(const char *yaml, const char *needle)
{
    run r = configure(yaml);
    CHECK(r.conf == NULL);
    CHECK(has_error(&r, needle));
    run_free(&r);
}

/* ------------------------------------------------------------------ paths */

TEST(path_syntax)
{
    pt_arena *a = pt_arena_new(1024);
    pt_jpath p;
    const char *err;
    CHECK(pt_jpath_parse(a, "a.b[0].c", 8, &p, &err));
    CHECK_INT(p.n, 4);
    CHECK_INT(p.segs[0].kind, PT_JSEG_KEY);
    CHECK_STR(p.segs[1].key, "b");
    CHECK_INT(p.segs[2].kind, PT_JSEG_INDEX);
    CHECK_INT(p.segs[2].index, 0);
    CHECK_STR(p.segs[3].key, "c");
    const char *esc = "x\\.y.z\\[1\\]\\\\";
    CHECK(pt_jpath_parse(a, esc, strlen(esc), &p, &err));
    CHECK_INT(p.n, 2);
    CHECK_STR(p.segs[0].key, "x.y");
    CHECK_STR(p.segs[1].key, "z[1]\\");
    CHECK(pt_jpath_parse(a, "[*].id", 6, &p, &err));
    CHECK_INT(p.segs[0].kind, PT_JSEG_ALL);
    CHECK(pt_jpath_parse(a, "list[-]", 7, &p, &err));
    CHECK_INT(p.segs[1].kind, PT_JSEG_END);
    CHECK(pt_jpath_parse(a, "m[1][2]", 7, &p, &err));
    CHECK_INT(p.n, 3);
    const char *bad[] = {"", "a..b", ".a", "a.", "a[", "a[x]", "a[1]b", "a[1", "a\\", "a[99999999999]"};
    for (size_t i = 0; i < PT_ARRAY_LEN(bad); i++) CHECK(!pt_jpath_parse(a, bad[i], strlen(bad[i]), &p, &err));
    pt_arena_free(a);
}

/* ------------------------------------------------------------- operations */

TEST(add_constants_of_every_type)
{
    CHECK_STR(xform("response:\n"
                    "  - add: {path: s, value: portico}\n"
                    "  - add: {path: q, value: \"42\"}\n"
                    "  - add: {path: n, value: 42}\n"
                    "  - add: {path: r, value: 1.5}\n"
                    "  - add: {path: b, value: true}\n"
                    "  - add: {path: z, value: null}\n"
                    "  - add: {path: o, value: {k: [1, x]}}\n",
                    "{}"),
              "{\"s\":\"portico\",\"q\":\"42\",\"n\":42,\"r\":1.5,\"b\":true,\"z\":null,\"o\":{\"k\":[1,\"x\"]}}");
}

TEST(add_creates_intermediate_objects_and_replaces)
{
    CHECK_STR(xform("response:\n  - add: {path: meta.gw.name, value: portico}\n", "{\"a\":1}"),
              "{\"a\":1,\"meta\":{\"gw\":{\"name\":\"portico\"}}}");
    CHECK_STR(xform("response:\n  - add: {path: a, value: 2}\n", "{\"a\":1,\"b\":0}"), "{\"a\":2,\"b\":0}");
    /* a non-object on the way: the operation does not apply */
    CHECK_STR(xform("response:\n  - add: {path: a.b, value: 2}\n", "{\"a\":\"text\"}"), "{\"a\":\"text\"}");
    CHECK_STR(xform("response:\n  - add: {path: a, value: 2}\n", "[1,2]"), "[1,2]");
}

TEST(add_into_arrays)
{
    const char *doc = "{\"items\":[{\"id\":1},{\"id\":2}],\"tags\":[\"a\"]}";
    CHECK_STR(xform("response:\n  - add: {path: 'items[*].seen', value: true}\n", doc),
              "{\"items\":[{\"id\":1,\"seen\":true},{\"id\":2,\"seen\":true}],\"tags\":[\"a\"]}");
    CHECK_STR(xform("response:\n  - add: {path: 'tags[-]', value: b}\n", doc),
              "{\"items\":[{\"id\":1},{\"id\":2}],\"tags\":[\"a\",\"b\"]}");
    CHECK_STR(xform("response:\n  - add: {path: 'tags[0]', value: z}\n", doc),
              "{\"items\":[{\"id\":1},{\"id\":2}],\"tags\":[\"z\"]}");
    CHECK_STR(xform("response:\n  - add: {path: 'tags[1]', value: z}\n", doc),
              "{\"items\":[{\"id\":1},{\"id\":2}],\"tags\":[\"a\",\"z\"]}");
    CHECK_STR(xform("response:\n  - add: {path: 'tags[5]', value: z}\n", doc), doc); /* beyond the end */
    /* missing containers: an array before a final [-] or [0], nothing else before an index */
    CHECK_STR(xform("response:\n  - add: {path: 'a.list[-]', value: 1}\n", "{}"), "{\"a\":{\"list\":[1]}}");
    CHECK_STR(xform("response:\n  - add: {path: 'l[0].k', value: 1}\n", "{}"), "{}");
    CHECK_STR(xform("response:\n  - add: {path: 'l[0]', value: 1}\n", "{}"), "{\"l\":[1]}");
    CHECK_STR(xform("response:\n  - add: {path: 'l[*].k', value: 1}\n", "{}"), "{}");
    CHECK_STR(xform("response:\n  - add: {path: 'l[2]', value: 1}\n", "{}"), "{}");
    CHECK_STR(xform("response:\n  - copy: {from: x, to: 'ids[-]'}\n", "{\"x\":5}"), "{\"x\":5,\"ids\":[5]}");
    CHECK_STR(xform("response:\n  - add: {path: 'items[1].id', value: 9}\n", doc),
              "{\"items\":[{\"id\":1},{\"id\":9}],\"tags\":[\"a\"]}");
}

TEST(remove_keys_indexes_and_every_element)
{
    const char *doc = "{\"user\":{\"name\":\"ann\",\"password\":\"x\"},\"list\":[{\"id\":1,\"secret\":2},{\"id\":3,"
                      "\"secret\":4}]}";
    CHECK_STR(xform("response:\n  - remove: user.password\n", doc),
              "{\"user\":{\"name\":\"ann\"},\"list\":[{\"id\":1,\"secret\":2},{\"id\":3,\"secret\":4}]}");
    CHECK_STR(xform("response:\n  - remove: 'list[*].secret'\n", doc),
              "{\"user\":{\"name\":\"ann\",\"password\":\"x\"},\"list\":[{\"id\":1},{\"id\":3}]}");
    CHECK_STR(xform("response:\n  - remove: 'list[0]'\n", doc),
              "{\"user\":{\"name\":\"ann\",\"password\":\"x\"},\"list\":[{\"id\":3,\"secret\":4}]}");
    CHECK_STR(xform("response:\n  - remove: 'list[*]'\n", "{\"list\":[1,2]}"), "{\"list\":[]}");
    CHECK_STR(xform("response:\n  - remove: nothing.here\n", "{\"a\":1}"), "{\"a\":1}");
    CHECK_STR(xform("response:\n  - remove: 'a\\.b'\n", "{\"a.b\":1,\"a\":{\"b\":2}}"), "{\"a\":{\"b\":2}}");
}

TEST(rename_keeps_the_value_and_overwrites)
{
    CHECK_STR(xform("response:\n  - rename: {from: user.fullName, to: full_name}\n",
                    "{\"user\":{\"fullName\":\"Ann\",\"id\":1}}"),
              "{\"user\":{\"id\":1,\"full_name\":\"Ann\"}}");
    CHECK_STR(xform("response:\n  - rename: {from: 'rows[*].n', to: name}\n", "{\"rows\":[{\"n\":1},{\"x\":2}]}"),
              "{\"rows\":[{\"name\":1},{\"x\":2}]}");
    CHECK_STR(xform("response:\n  - rename: {from: a, to: b}\n", "{\"a\":1,\"b\":2}"), "{\"b\":1}");
    CHECK_STR(xform("response:\n  - rename: {from: missing, to: b}\n", "{\"a\":1}"), "{\"a\":1}");
}

TEST(move_and_copy_between_paths)
{
    const char *doc = "{\"data\":{\"items\":[1,2],\"total\":2},\"id\":\"x\"}";
    CHECK_STR(xform("response:\n  - move: {from: data.items, to: items}\n", doc),
              "{\"data\":{\"total\":2},\"id\":\"x\",\"items\":[1,2]}");
    CHECK_STR(xform("response:\n  - copy: {from: id, to: meta.request.id}\n", doc),
              "{\"data\":{\"items\":[1,2],\"total\":2},\"id\":\"x\",\"meta\":{\"request\":{\"id\":\"x\"}}}");
    CHECK_STR(xform("response:\n  - move: {from: 'data.items[0]', to: 'data.first'}\n", doc),
              "{\"data\":{\"items\":[2],\"total\":2,\"first\":1},\"id\":\"x\"}");
    CHECK_STR(xform("response:\n  - copy: {from: id, to: 'data.items[-]'}\n", doc),
              "{\"data\":{\"items\":[1,2,\"x\"],\"total\":2},\"id\":\"x\"}");
    /* into its own subtree */
    CHECK_STR(xform("response:\n  - move: {from: a, to: a.inner}\n", "{\"a\":{\"v\":1}}"),
              "{\"a\":{\"inner\":{\"v\":1}}}");
    CHECK_STR(xform("response:\n  - copy: {from: a, to: a.inner}\n", "{\"a\":{\"v\":1}}"),
              "{\"a\":{\"v\":1,\"inner\":{\"v\":1}}}");
    CHECK_STR(xform("response:\n  - move: {from: nope, to: b}\n", "{\"a\":1}"), "{\"a\":1}");
}

TEST(operations_apply_in_configured_order)
{
    CHECK_STR(xform("response:\n"
                    "  - rename: {from: a, to: b}\n"
                    "  - copy: {from: b, to: c}\n"
                    "  - remove: b\n"
                    "  - add: {path: d, value: 1}\n",
                    "{\"a\":\"v\"}"),
              "{\"c\":\"v\",\"d\":1}");
    /* the reverse order gives another document: order matters */
    CHECK_STR(xform("response:\n"
                    "  - remove: b\n"
                    "  - copy: {from: b, to: c}\n"
                    "  - rename: {from: a, to: b}\n",
                    "{\"a\":\"v\"}"),
              "{\"b\":\"v\"}");
}

/* ----------------------------------------------------------------- writer */

TEST(writer_keeps_numbers_strings_and_order)
{
    const char *doc = "{\"z\":1,\"a\":0.1,\"big\":9007199254740993,\"neg\":-12,\"e\":1e300,\"r\":2.0,"
                      "\"s\":\"q\\\"\\\\\\n\\u0001\\u00e9\\u20ac\",\"nul\":\"a\\u0000b\",\"u\":\"\xc3\xa9\"}";
    CHECK_STR(xform("response:\n  - remove: nothing\n", doc),
              "{\"z\":1,\"a\":0.1,\"big\":9007199254740993,\"neg\":-12,\"e\":1e+300,\"r\":2.0,"
              "\"s\":\"q\\\"\\\\\\n\\u0001\xc3\xa9\xe2\x82\xac\",\"nul\":\"a\\u0000b\",\"u\":\"\xc3\xa9\"}");
    CHECK_STR(xform("response:\n  - remove: x\n", "\"just a string\""), "\"just a string\"");
    CHECK_STR(xform("response:\n  - remove: x\n", " [ 1 , 2 ] "), "[1,2]");
}

/* --------------------------------------------------------------- attacks */

TEST(invalid_json_is_refused_with_a_reason)
{
    const char *y = "response:\n  - remove: x\n";
    CHECK(strstr(xform(y, "{\"a\":1,\"a\":2}"), "ERR:") == xform(y, "{\"a\":1,\"a\":2}"));
    CHECK(strstr(xform(y, "{\"a\":1,\"a\":2}"), "duplicate"));
    CHECK(strstr(xform(y, "{\"a\":"), "ERR:invalid JSON"));
    CHECK(strstr(xform(y, "{\"a\":\"\xff\xfe\"}"), "ERR:invalid JSON")); /* invalid UTF-8 */
    CHECK(strstr(xform(y, "{\"a\":\"\xed\xa0\x80\"}"), "ERR:invalid JSON")); /* UTF-16 surrogate in UTF-8 */
    CHECK(strstr(xform(y, "{\"a\":123456789012345678901234567890}"), "ERR:invalid JSON")); /* too big integer */
    CHECK(strstr(xform(y, "[1e999]"), "ERR:invalid JSON"));
    CHECK(strstr(xform(y, "{} {}"), "ERR:invalid JSON"));
    CHECK(strstr(xform(y, "{'a':1}"), "ERR:invalid JSON"));
}

TEST(deep_nesting_is_refused_before_parsing)
{
    char doc[20000];
    size_t n = 0;
    for (int i = 0; i < 5000; i++) doc[n++] = '[';
    for (int i = 0; i < 5000; i++) doc[n++] = ']';
    doc[n] = '\0';
    CHECK(strstr(xform("response:\n  - remove: x\n", doc), "ERR:JSON nesting deeper than 64"));
    /* exactly at the bound is fine; brackets inside strings do not count */
    n = 0;
    for (int i = 0; i < 64; i++) doc[n++] = '[';
    for (int i = 0; i < 64; i++) doc[n++] = ']';
    doc[n] = '\0';
    CHECK(strncmp(xform("response:\n  - remove: x\n", doc), "[[[", 3) == 0);
    CHECK_INT(pt_json_text_depth("{\"a\":\"[[[[\\\"[[\"}", 16), 1);
    CHECK_STR(xform("max_depth: 2\nresponse:\n  - remove: x\n", "{\"a\":{\"b\":{}}}"),
              "ERR:JSON nesting deeper than 2 levels");
}

TEST(large_document_round_trips)
{
    /* 100k elements: no recursion per element, output equals input */
    size_t cap = 1200000, n = 0;
    char *doc = malloc(cap);
    n += (size_t)snprintf(doc + n, cap - n, "{\"items\":[");
    for (int i = 0; i < 100000; i++) n += (size_t)snprintf(doc + n, cap - n, "%s{\"i\":%d}", i ? "," : "", i);
    n += (size_t)snprintf(doc + n, cap - n, "]}");
    run r = configure("response:\n  - remove: 'items[*].nothing'\n");
    pt_plugin_bytes out = {0};
    char err[100];
    CHECK_INT(pt_json_transform_text(r.conf->response.ops, r.conf->response.nops, 64, doc, n, &out, err, sizeof(err)),
              PT_JT_OK);
    CHECK(out.len == n && memcmp(out.p, doc, n) == 0);
    pt_plugin_bytes_free(&out);
    run_free(&r);
    free(doc);
}

/* ---------------------------------------------------------- configuration */

TEST(config_defaults_and_sides)
{
    run r = configure("request:\n  - remove: a\nresponse:\n  - remove: b\n  - remove: c\n");
    CHECK(r.conf != NULL);
    if (r.conf) {
        CHECK_INT(r.conf->max_body, 1 << 20);
        CHECK_INT(r.conf->max_depth, 64);
        CHECK_INT(r.conf->request.nops, 1);
        CHECK_INT(r.conf->response.nops, 2);
    }
    run_free(&r);
    r = configure("max_body: 10k\nmax_depth: 8\nrequest:\n  - remove: a\n");
    CHECK(r.conf && r.conf->max_body == 10240 && r.conf->max_depth == 8);
    run_free(&r);
}

TEST(config_errors_name_the_problem)
{
    expect_config_error("[]", "expected a mapping");
    expect_config_error("max_body: 1m\n", "no operation configured");
    expect_config_error("request:\n  - drop: a\n", "unknown operation \"drop\"");
    expect_config_error("request:\n  - remove: a\n    add: b\n", "a mapping with one key");
    expect_config_error("request:\n  - remove: 'a..b'\n", "invalid path \"a..b\": empty key");
    expect_config_error("request:\n  - add: {path: a}\n", "`value` is required");
    expect_config_error("request:\n  - add: {path: a, value: 1, extra: 2}\n", "extra");
    expect_config_error("request:\n  - move: {from: 'a[*]', to: b}\n", "[*] is not allowed here");
    expect_config_error("request:\n  - copy: {from: a, to: 'b[*]'}\n", "[*] is not allowed here");
    expect_config_error("request:\n  - remove: 'a[-]'\n", "[-] may only end");
    expect_config_error("request:\n  - move: {from: 'a[-]', to: b}\n", "[-] may only end");
    expect_config_error("request:\n  - rename: {from: 'a[0]', to: b}\n", "must end with a key");
    expect_config_error("request:\n  - rename: {from: a}\n", "both `from` and `to`");
    expect_config_error("request:\n  - add: {path: a, value: 1e999}\n", "cannot be represented");
    expect_config_error("max_body: 0\nrequest:\n  - remove: a\n", "greater than 0");
    expect_config_error("max_depth: 0\nrequest:\n  - remove: a\n", "out of range (expected 1..1000)");
    expect_config_error("request: {remove: a}\n", "expected a list of operations");
    run r = configure("request:\n  - remove: 'a..b'\n");
    CHECK(r.errors.n > 0 && strstr(r.errors.msgs[0], "t.yaml:2:13:") == r.errors.msgs[0]);
    run_free(&r);
}

TEST_MAIN()
