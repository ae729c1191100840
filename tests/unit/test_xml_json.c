/* test_xml_json.c — the xml_json mapping: XML → JSON (attributes, text,
 * repeated and configured arrays, namespaces, CDATA, comments, processing
 * instructions), JSON → XML (escaping, names, unmappable shapes), round
 * trips JSON → XML → JSON, the safety rules (DOCTYPE, billion laughs, XXE,
 * undeclared entities, depth) and the plugin's configuration errors. */
#include <stdio.h>

#include "config/conf_node.h"
#include "plugins/xml_json/xml_json.h"
#include "plugin/plugin.h"
#include "testlib.h"

static pt_xj_opts opts(void) { return (pt_xj_opts){.max_depth = 64}; }

/* XML → JSON: the JSON, or "ERR<code>:<reason>". */
static const char *x2j(const pt_xj_opts *o, const char *xml)
{
    static char res[8192];
    pt_plugin_bytes out = {0};
    char err[256];
    pt_xj_result r = pt_xml_to_json(o, xml, strlen(xml), &out, err, sizeof(err));
    if (r == PT_XJ_OK) snprintf(res, sizeof(res), "%.*s", (int)out.len, out.p);
    else snprintf(res, sizeof(res), "ERR%d:%s", (int)r, err);
    pt_plugin_bytes_free(&out);
    return res;
}

/* JSON → XML, without the declaration. */
static const char *j2x(const pt_xj_opts *o, const char *json)
{
    static char res[8192];
    static const char decl[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>";
    pt_plugin_bytes out = {0};
    char err[256];
    pt_xj_result r = pt_json_to_xml(o, json, strlen(json), &out, err, sizeof(err));
    if (r == PT_XJ_OK && out.len >= sizeof(decl) - 1 && !memcmp(out.p, decl, sizeof(decl) - 1))
        snprintf(res, sizeof(res), "%.*s", (int)(out.len - (sizeof(decl) - 1)), out.p + sizeof(decl) - 1);
    else if (r == PT_XJ_OK) snprintf(res, sizeof(res), "NODECL");
    else snprintf(res, sizeof(res), "ERR%d:%s", (int)r, err);
    pt_plugin_bytes_free(&out);
    return res;
}

/* ------------------------------------------------------------ XML → JSON */

TEST(xml_elements_text_and_empty)
{
    pt_xj_opts o = opts();
    CHECK_STR(x2j(&o, "<a>hi</a>"), "{\"a\":\"hi\"}");
    CHECK_STR(x2j(&o, "<a/>"), "{\"a\":null}");
    CHECK_STR(x2j(&o, "<?xml version=\"1.0\"?>\n<a><b>1</b><c> x </c><d/></a>"),
              "{\"a\":{\"b\":\"1\",\"c\":\" x \",\"d\":null}}");
    /* formatting whitespace between elements is not text */
    CHECK_STR(x2j(&o, "<a>\n  <b>1</b>\n  <c>2</c>\n</a>\n"), "{\"a\":{\"b\":\"1\",\"c\":\"2\"}}");
    CHECK_STR(x2j(&o, "<a>&lt;&amp;&gt;&#233;&#x20AC;</a>"), "{\"a\":\"<&>\xc3\xa9\xe2\x82\xac\"}");
}

TEST(xml_attributes_and_text)
{
    pt_xj_opts o = opts();
    CHECK_STR(x2j(&o, "<price currency=\"EUR\">12.50</price>"), "{\"price\":{\"@currency\":\"EUR\",\"#text\":\"12.50\"}}");
    CHECK_STR(x2j(&o, "<a id=\"1\"/>"), "{\"a\":{\"@id\":\"1\"}}");
    CHECK_STR(x2j(&o, "<a id=\"1\"><b>x</b></a>"), "{\"a\":{\"@id\":\"1\",\"b\":\"x\"}}");
    /* mixed content: the text pieces are joined into #text */
    CHECK_STR(x2j(&o, "<p>Hello <b>you</b> there</p>"), "{\"p\":{\"b\":\"you\",\"#text\":\"Hello  there\"}}");
}

TEST(xml_repeated_elements_and_configured_arrays)
{
    pt_xj_opts o = opts();
    const char *one = "<orders><order><id>1</id></order></orders>";
    const char *two = "<orders><order><id>1</id></order><order><id>2</id></order></orders>";
    CHECK_STR(x2j(&o, two), "{\"orders\":{\"order\":[{\"id\":\"1\"},{\"id\":\"2\"}]}}");
    CHECK_STR(x2j(&o, one), "{\"orders\":{\"order\":{\"id\":\"1\"}}}");
    pt_arena *a = pt_arena_new(1024);
    pt_xpath paths[2];
    CHECK(pt_xpath_parse(a, "orders.order", 12, &paths[0]));
    CHECK(pt_xpath_parse(a, "orders.order.tag", 16, &paths[1]));
    o.arrays = paths;
    o.narrays = 2;
    CHECK_STR(x2j(&o, one), "{\"orders\":{\"order\":[{\"id\":\"1\"}]}}");
    CHECK_STR(x2j(&o, two), "{\"orders\":{\"order\":[{\"id\":\"1\"},{\"id\":\"2\"}]}}");
    CHECK_STR(x2j(&o, "<orders><order><tag>x</tag></order></orders>"),
              "{\"orders\":{\"order\":[{\"tag\":[\"x\"]}]}}");
    /* the same name elsewhere is not forced */
    CHECK_STR(x2j(&o, "<other><order>1</order></other>"), "{\"other\":{\"order\":\"1\"}}");
    pt_xpath esc;
    CHECK(pt_xpath_parse(a, "a\\.b.c", 6, &esc));
    CHECK_INT(esc.n, 2);
    CHECK_STR(esc.names[0], "a.b");
    CHECK(!pt_xpath_parse(a, "a..b", 4, &esc));
    CHECK(!pt_xpath_parse(a, "", 0, &esc));
    pt_arena_free(a);
}

TEST(xml_namespaces_keep_prefixes_and_declarations)
{
    pt_xj_opts o = opts();
    CHECK_STR(x2j(&o, "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\">"
                      "<soap:Body><m:GetPrice xmlns:m=\"urn:shop\" m:unit=\"kg\"><m:Item>apple</m:Item>"
                      "</m:GetPrice></soap:Body></soap:Envelope>"),
              "{\"soap:Envelope\":{\"@xmlns:soap\":\"http://schemas.xmlsoap.org/soap/envelope/\",\"soap:Body\":"
              "{\"m:GetPrice\":{\"@xmlns:m\":\"urn:shop\",\"@m:unit\":\"kg\",\"m:Item\":\"apple\"}}}}");
    CHECK_STR(x2j(&o, "<a xmlns=\"urn:x\"><b>1</b></a>"), "{\"a\":{\"@xmlns\":\"urn:x\",\"b\":\"1\"}}");
}

TEST(xml_cdata_comments_and_processing_instructions)
{
    pt_xj_opts o = opts();
    CHECK_STR(x2j(&o, "<a><![CDATA[<not> & markup]]></a>"), "{\"a\":\"<not> & markup\"}");
    CHECK_STR(x2j(&o, "<!-- c --><a><!-- inside -->x<?pi data?>y</a><?after?>"), "{\"a\":\"xy\"}");
    CHECK_STR(x2j(&o, "<?xml-stylesheet href=\"s.xsl\"?><a>1</a>"), "{\"a\":\"1\"}");
}

/* ---------------------------------------------------------------- safety */

TEST(xml_doctype_billion_laughs_and_xxe_are_refused)
{
    pt_xj_opts o = opts();
    const char *laughs =
        "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">"
        "<!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">"
        "<!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">"
        "<!ENTITY lol4 \"&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;\">"
        "<!ENTITY lol5 \"&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;\">"
        "<!ENTITY lol6 \"&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;\">"
        "<!ENTITY lol7 \"&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;\">"
        "<!ENTITY lol8 \"&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;\">"
        "<!ENTITY lol9 \"&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;\">"
        "]><lolz>&lol9;</lolz>";
    CHECK(strstr(x2j(&o, laughs), "ERR2:XML with a DOCTYPE"));
    const char *xxe = "<?xml version=\"1.0\"?><!DOCTYPE foo [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>"
                      "<foo>&xxe;</foo>";
    CHECK(strstr(x2j(&o, xxe), "ERR2:XML with a DOCTYPE"));
    CHECK(!strstr(x2j(&o, xxe), "root:"));
    const char *ext = "<?xml version=\"1.0\"?><!DOCTYPE foo SYSTEM \"http://127.0.0.1:1/x.dtd\"><foo>1</foo>";
    CHECK(strstr(x2j(&o, ext), "ERR2:"));
    const char *param = "<!DOCTYPE r [<!ENTITY % p SYSTEM \"file:///etc/passwd\"> %p;]><r/>";
    CHECK(strstr(x2j(&o, param), "ERR2:"));
    CHECK(strstr(x2j(&o, "<!DOCTYPE a><a>1</a>"), "ERR2:"));
    /* an entity no DTD declares is not well-formed */
    CHECK(strstr(x2j(&o, "<a>&undeclared;</a>"), "ERR1:not well-formed"));
}

TEST(xml_malformed_and_invalid_encoding_and_depth)
{
    pt_xj_opts o = opts();
    CHECK(strstr(x2j(&o, "<a><b></a>"), "ERR1:not well-formed"));
    CHECK(strstr(x2j(&o, "<a>\xff\xfe</a>"), "ERR1:"));
    CHECK(strstr(x2j(&o, ""), "ERR1:"));
    CHECK(strstr(x2j(&o, "just text"), "ERR1:"));
    CHECK(strstr(x2j(&o, "<a/><b/>"), "ERR1:"));
    CHECK(!strchr(x2j(&o, "<a><b></a>"), '\n'));
    char doc[40000];
    size_t n = 0;
    for (int i = 0; i < 100; i++) n += (size_t)snprintf(doc + n, sizeof(doc) - n, "<e>");
    for (int i = 0; i < 100; i++) n += (size_t)snprintf(doc + n, sizeof(doc) - n, "</e>");
    CHECK(strstr(x2j(&o, doc), "ERR3:XML nesting deeper than 64"));
    n = 0;
    for (int i = 0; i < 5000; i++) n += (size_t)snprintf(doc + n, sizeof(doc) - n, "<e>");
    CHECK(strstr(x2j(&o, doc), "ERR")); /* libxml2's own depth limit, or not closed */
}

/* ------------------------------------------------------------ JSON → XML */

TEST(json_to_xml_mapping)
{
    pt_xj_opts o = opts();
    CHECK_STR(j2x(&o, "{\"a\":\"hi\"}"), "<a>hi</a>");
    CHECK_STR(j2x(&o, "{\"a\":null}"), "<a/>");
    CHECK_STR(j2x(&o, "{\"a\":{\"n\":42,\"r\":0.1,\"t\":true,\"f\":false,\"z\":null}}"),
              "<a><n>42</n><r>0.1</r><t>true</t><f>false</f><z/></a>");
    CHECK_STR(j2x(&o, "{\"a\":{\"@id\":7,\"#text\":\"x\"}}"), "<a id=\"7\">x</a>");
    CHECK_STR(j2x(&o, "{\"a\":{\"b\":[\"1\",\"2\"],\"c\":[]}}"), "<a><b>1</b><b>2</b></a>");
    CHECK_STR(j2x(&o, "{\"a\":{\"b\":[{\"@k\":\"v\"},null]}}"), "<a><b k=\"v\"/><b/></a>");
    CHECK_STR(j2x(&o, "{\"a\":\"<&>\\\"'\\r\"}"), "<a>&lt;&amp;&gt;\"'&#13;</a>");
    CHECK_STR(j2x(&o, "{\"a\":{\"@q\":\"\\\"<&\\n\\t\"}}"), "<a q=\"&quot;&lt;&amp;&#10;&#9;\"/>");
    CHECK_STR(j2x(&o, "{\"s:E\":{\"@xmlns:s\":\"urn:s\",\"s:B\":\"1\"}}"), "<s:E xmlns:s=\"urn:s\"><s:B>1</s:B></s:E>");
    o.root = "request";
    CHECK_STR(j2x(&o, "{\"id\":1,\"tags\":[\"a\",\"b\"]}"), "<request><id>1</id><tags>a</tags><tags>b</tags></request>");
    CHECK_STR(j2x(&o, "\"plain\""), "<request>plain</request>");
}

TEST(json_to_xml_refuses_what_xml_cannot_say)
{
    pt_xj_opts o = opts();
    CHECK(strstr(j2x(&o, "{\"a\":1,\"b\":2}"), "ERR4:without `root`"));
    CHECK(strstr(j2x(&o, "[1]"), "ERR4:"));
    CHECK(strstr(j2x(&o, "{\"a\":[1,2]}"), "ERR4:the root element"));
    CHECK(strstr(j2x(&o, "{\"a\":{\"1bad\":1}}"), "ERR4:\"1bad\" is not a valid XML element name"));
    CHECK(strstr(j2x(&o, "{\"a\":{\"b c\":1}}"), "ERR4:"));
    CHECK(strstr(j2x(&o, "{\"a\":{\"@\":1}}"), "ERR4:"));
    CHECK(strstr(j2x(&o, "{\"a\":{\"@x\":{}}}"), "ERR4:attribute \"@x\""));
    CHECK(strstr(j2x(&o, "{\"a\":{\"b\":[[1]]}}"), "ERR4:an array directly inside"));
    CHECK(strstr(j2x(&o, "{\"a\":\"\\u0001\"}"), "ERR4:a string holds control character U+0001"));
    CHECK(strstr(j2x(&o, "{\"a\":\"x\\u0000\"}"), "ERR4:"));
    CHECK(strstr(j2x(&o, "{\"a\\u0000b\":1}"), "ERR1:")); /* jansson refuses NUL in keys */
    CHECK(strstr(j2x(&o, "{\"a\":1,\"a\":2}"), "ERR1:invalid JSON"));
    CHECK(strstr(j2x(&o, "{\"a\":\"\xc3\"}"), "ERR1:invalid JSON"));
    char doc[1000];
    size_t n = 0;
    n += (size_t)snprintf(doc + n, sizeof(doc) - n, "{\"a\":");
    for (int i = 0; i < 100; i++) n += (size_t)snprintf(doc + n, sizeof(doc) - n, "{\"a\":");
    n += (size_t)snprintf(doc + n, sizeof(doc) - n, "1");
    for (int i = 0; i < 101; i++) n += (size_t)snprintf(doc + n, sizeof(doc) - n, "}");
    CHECK(strstr(j2x(&o, doc), "ERR3:JSON nesting deeper than 64"));
}

/* ------------------------------------------------------------ round trips */

/* JSON → XML → JSON gives the same text for documents in the mapping's
 * domain: string or null leaves, attributes first, #text last, arrays of
 * two or more (or listed in `arrays`). */
TEST(round_trip_json_xml_json)
{
    pt_arena *a = pt_arena_new(1024);
    pt_xpath arr;
    CHECK(pt_xpath_parse(a, "r.one", 5, &arr));
    pt_xj_opts o = {.max_depth = 64, .arrays = &arr, .narrays = 1};
    const char *docs[] = {
        "{\"r\":\"text\"}",
        "{\"r\":null}",
        "{\"r\":{\"@id\":\"1\",\"#text\":\"x\"}}",
        "{\"r\":{\"a\":\"1\",\"b\":[\"2\",\"3\"],\"c\":{\"@k\":\"v\"},\"d\":null}}",
        "{\"r\":{\"one\":[\"only\"],\"many\":[{\"x\":\"1\"},{\"x\":\"2\",\"y\":[\"a\",\"b\"]}]}}",
        "{\"s:E\":{\"@xmlns:s\":\"urn:s\",\"s:B\":{\"@s:a\":\"1\",\"m\":\"<&>\\\" \\n\\t \xc3\xa9\"}}}",
        "{\"r\":{\"@a\":\"\\\"q\\\"\\n\\t\\r\",\"t\":\"  spaced  \",\"e\":\"\\r\\n\"}}",
    };
    for (size_t i = 0; i < PT_ARRAY_LEN(docs); i++) {
        char xml[4096];
        snprintf(xml, sizeof(xml), "%s", j2x(&o, docs[i]));
        CHECK(strncmp(xml, "ERR", 3) != 0);
        const char *back = x2j(&o, xml);
        if (strcmp(back, docs[i]) != 0) fprintf(stderr, "  doc %zu: %s\n   xml: %s\n  back: %s\n", i, docs[i], xml, back);
        CHECK_STR(back, docs[i]);
    }
    pt_arena_free(a);
}

/* ---------------------------------------------------------- configuration */

typedef struct {
    pt_arena *arena;
    pt_errors errors;
    pt_xml_json_conf *conf;
} run;

static run configure(const char *yaml)
{
    run r = {.arena = pt_arena_new(4096)};
    pt_conf_ctx ctx = {.file = "t.yaml", .arena = r.arena, .errors = &r.errors};
    const pt_conf_node *node = pt_conf_parse_yaml(&ctx, yaml, strlen(yaml));
    if (node) r.conf = pt_plugin_xml_json.configure(&ctx, node);
    return r;
}

static void expect_config_error(const char *yaml, const char *needle)
{
    run r = configure(yaml);
    CHECK(r.conf == NULL);
    bool found = false;
    for (size_t i = 0; i < r.errors.n; i++) found |= strstr(r.errors.msgs[i], needle) != NULL;
    if (!found)
        for (size_t i = 0; i < r.errors.n; i++) fprintf(stderr, "    got: %s\n", r.errors.msgs[i]);
    CHECK(found);
    pt_errors_free(&r.errors);
    pt_arena_free(r.arena);
}

TEST(config)
{
    run r = configure("response: xml_to_json\nrequest: json_to_xml\narrays: [a.b]\nroot: req\nmax_body: 2k\n"
                      "xml_content_type: text/xml; charset=utf-8\n");
    CHECK(r.conf != NULL);
    if (r.conf) {
        CHECK_INT(r.conf->dir[PT_SIDE_RESPONSE], PT_XJ_XML_TO_JSON);
        CHECK_INT(r.conf->dir[PT_SIDE_REQUEST], PT_XJ_JSON_TO_XML);
        CHECK_INT(r.conf->opts.narrays, 1);
        CHECK_STR(r.conf->opts.root, "req");
        CHECK_INT(r.conf->max_body, 2048);
        CHECK_INT(r.conf->opts.max_depth, 64);
        CHECK_STR(r.conf->xml_content_type, "text/xml; charset=utf-8");
    }
    pt_errors_free(&r.errors);
    pt_arena_free(r.arena);
    expect_config_error("max_body: 1m\n", "set request and/or response");
    expect_config_error("response: to_json\n", "expected xml_to_json or json_to_xml");
    expect_config_error("response: xml_to_json\narrays: [a..b]\n", "invalid element path");
    expect_config_error("response: xml_to_json\nroot: 1x\n", "not a valid XML element name");
    expect_config_error("response: xml_to_json\nxml_content_type: xml\n", "expected a media type");
    expect_config_error("response: xml_to_json\nmax_body: 0\n", "between 1 and 2g");
    expect_config_error("response: xml_to_json\nbogus: 1\n", "bogus");
}

TEST_MAIN()
