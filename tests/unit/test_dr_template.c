/* test_dr_template.c — direct_response templates: escaping per media type
 * and the compile-time placement checks. Rendering against a request is
 * covered by tests/integration/test_templates.py. */
#include "plugins/direct_response/dr_template.h"
#include "testlib.h"

static const char *esc(pt_dr_escape e, const char *in)
{
    static char out[512];
    size_t n = pt_dr_escape_into(e, pt_str_c(in), out);
    out[n] = '\0';
    return out;
}

TEST(escaping)
{
    CHECK_STR(esc(PT_DR_ESC_JSON, "a\"b\\c\n</x>&"), "a\\\"b\\\\c\\u000a\\u003c/x\\u003e\\u0026");
    CHECK_STR(esc(PT_DR_ESC_JSON, "\xc3\xa9\xff\xe2\x80\xa8\xed\xa0\x80"),
              "\xc3\xa9\\ufffd\\u2028\\ufffd\\ufffd\\ufffd");
    CHECK_STR(esc(PT_DR_ESC_JSON, "\xf0\x9f\x98\x80"), "\xf0\x9f\x98\x80");
    CHECK_STR(esc(PT_DR_ESC_JSON, "\xc0\xaf"), "\\ufffd\\ufffd"); /* overlong '/' */
    CHECK_STR(esc(PT_DR_ESC_HTML, "<a href='x'>\"&</a>"), "&lt;a href=&#39;x&#39;&gt;&quot;&amp;&lt;/a&gt;");
    CHECK_STR(esc(PT_DR_ESC_NONE, "<b>"), "<b>");
}

static const char *compile(const char *body, const char *ct, pt_dr_template *t)
{
    static pt_arena *a;
    if (!a) a = pt_arena_new(4096);
    return pt_dr_template_compile(a, pt_str_c(body), pt_str_c(ct), t);
}

TEST(compile)
{
    pt_dr_template t;
    CHECK(compile("{\"a\":\"{{param.id}}-{{ method }}\"}", "application/json", &t) == NULL);
    CHECK_INT(t.npieces, 5);
    CHECK_INT(t.pieces[1].kind, PT_DR_PARAM);
    CHECK_SLICE(t.pieces[1].text, "id");
    CHECK_INT(t.pieces[3].kind, PT_DR_METHOD);
    CHECK_INT(t.escape, PT_DR_ESC_JSON);
    CHECK(compile("{\"a\":\"\\\"\"} {{path}}", "application/json", &t) != NULL); /* after the string ends */
    CHECK(compile("x {{header.X-A}} y", "TEXT/PLAIN; charset=utf-8", &t) == NULL);
    CHECK_INT(t.escape, PT_DR_ESC_NONE);
    CHECK(compile("<p>{{path}}</p><script>1</script><i x=\"{{path}}\">", "text/html", &t) == NULL);
    CHECK(compile("<p>{{path}}</p><script>{{path}}</script>", "text/html", &t) != NULL);
    CHECK(compile("<i x={{path}}>", "text/html", &t) != NULL);
    CHECK(compile("{{header.Proxy-Authorization}}", "text/plain", &t) != NULL);
    CHECK(compile("{{request_id}", "text/plain", &t) != NULL);
    CHECK(compile("{{}}", "text/plain", &t) != NULL);
    CHECK(compile("{{path}}", "", &t) != NULL);
    CHECK(compile("no placeholders", "", &t) == NULL);
}

TEST_MAIN()
