/* xml_map.c — the JSON ↔ XML mapping of the xml_json plugin (documented in
 * docs/transformation.md, "JSON and XML"):
 *   <a>text</a>                 {"a": "text"}
 *   <a/> (no attributes)        {"a": null}
 *   <a id="1">x</a>             {"a": {"@id": "1", "#text": "x"}}
 *   <a><b>1</b><b>2</b></a>     {"a": {"b": ["1", "2"]}}
 *   xmlns declarations          "@xmlns" / "@xmlns:p" members
 * XML → JSON parses with libxml2 (no network, no DTD, no entity
 * substitution; a DOCTYPE stops the parser and the document is refused);
 * JSON → XML writes the text itself. */
#include <stdio.h>
#include <stdlib.h>

#include <jansson.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

#include "plugins/xml_json/xml_json.h"

/* ================================================================ buffers */

static void put_lit(pt_plugin_bytes *b, const char *s) { pt_plugin_bytes_put(b, s, strlen(s)); }

bool pt_xpath_parse(pt_arena *a, const char *s, size_t n, pt_xpath *out)
{
    *out = (pt_xpath){0};
    size_t cap = 1;
    for (size_t i = 0; i < n; i++) cap += s[i] == '.';
    out->names = pt_arena_calloc(a, cap * sizeof(*out->names));
    char *name = pt_arena_alloc(a, n + 1);
    size_t i = 0;
    for (;;) {
        size_t k = 0;
        while (i < n && s[i] != '.') {
            if (s[i] == '\\' && i + 1 < n) i++;
            name[k++] = s[i++];
        }
        if (!k) return false;
        name[k] = '\0';
        out->names[out->n++] = name;
        name += k + 1;
        if (i == n) return true;
        i++; /* the dot */
    }
}

/* ============================================================ XML → JSON */

typedef struct {
    const pt_xj_opts *o;
    const xmlNode *stack[1024]; /* the element path being converted */
    char *err;
    size_t errlen;
    pt_xj_result fail;
} x2j;

/* Whether `node`'s qualified name is `name` ("p:local" or "local"). */
static bool qname_is(const xmlChar *local, const xmlNs *ns, const char *name)
{
    const char *l = (const char *)local;
    if (ns && ns->prefix) {
        size_t pn = strlen((const char *)ns->prefix);
        return !strncmp(name, (const char *)ns->prefix, pn) && name[pn] == ':' && !strcmp(name + pn + 1, l);
    }
    return !strcmp(name, l);
}

/* The qualified name as written, in buf. */
static const char *qname(const xmlChar *local, const xmlNs *ns, char *buf, size_t cap)
{
    if (!ns || !ns->prefix) return (const char *)local;
    snprintf(buf, cap, "%s:%s", (const char *)ns->prefix, (const char *)local);
    return buf;
}

/* Whether the element at stack[0..depth] is listed in `arrays`. */
static bool forced_array(const x2j *c, size_t depth)
{
    for (size_t i = 0; i < c->o->narrays; i++) {
        const pt_xpath *p = &c->o->arrays[i];
        if (p->n != depth + 1) continue;
        size_t k = 0;
        while (k <= depth && qname_is(c->stack[k]->name, c->stack[k]->ns, p->names[k])) k++;
        if (k > depth) return true;
    }
    return false;
}

static bool all_space(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r') return false;
    return true;
}

/* The JSON value of element el at stack depth `depth` (new reference), or
 * NULL with c->fail set. */
static json_t *element_value(x2j *c, const xmlNode *el, size_t depth)
{
    if (depth >= c->o->max_depth || depth >= PT_ARRAY_LEN(c->stack)) {
        snprintf(c->err, c->errlen, "XML nesting deeper than %zu elements", c->o->max_depth);
        c->fail = PT_XJ_TOO_DEEP;
        return NULL;
    }
    c->stack[depth] = el;
    bool has_children = false;
    xmlBuffer *text = xmlBufferCreate();
    for (const xmlNode *k = el->children; k; k = k->next) {
        if (k->type == XML_ELEMENT_NODE) has_children = true;
        else if ((k->type == XML_TEXT_NODE || k->type == XML_CDATA_SECTION_NODE) && k->content)
            xmlBufferCat(text, k->content);
    }
    const char *tp = (const char *)xmlBufferContent(text);
    size_t tn = (size_t)xmlBufferLength(text);
    json_t *v;
    if (!has_children && !el->properties && !el->nsDef) {
        v = tn ? json_stringn(tp, tn) : json_null();
        xmlBufferFree(text);
        return v;
    }
    v = json_object();
    char key[512], nb[400];
    for (const xmlNs *ns = el->nsDef; ns; ns = ns->next) {
        if (ns->prefix) snprintf(key, sizeof(key), "@xmlns:%s", (const char *)ns->prefix);
        else snprintf(key, sizeof(key), "@xmlns");
        json_object_set_new(v, key, json_string(ns->href ? (const char *)ns->href : ""));
    }
    for (const xmlAttr *a = el->properties; a; a = a->next) {
        snprintf(key, sizeof(key), "@%s", qname(a->name, a->ns, nb, sizeof(nb)));
        xmlChar *val = xmlNodeListGetString(el->doc, a->children, 1);
        json_object_set_new(v, key, json_string(val ? (const char *)val : ""));
        xmlFree(val);
    }
    for (const xmlNode *k = el->children; k; k = k->next) {
        if (k->type != XML_ELEMENT_NODE) continue;
        json_t *cv = element_value(c, k, depth + 1);
        if (!cv) {
            json_decref(v);
            xmlBufferFree(text);
            return NULL;
        }
        const char *name = qname(k->name, k->ns, nb, sizeof(nb));
        json_t *prev = json_object_get(v, name);
        if (prev && json_is_array(prev)) {
            json_array_append_new(prev, cv);
        } else if (prev) {
            json_t *arr = json_array();
            json_array_append(arr, prev);
            json_array_append_new(arr, cv);
            json_object_set_new(v, name, arr);
        } else {
            c->stack[depth + 1] = k;
            if (forced_array(c, depth + 1)) {
                json_t *arr = json_array();
                json_array_append_new(arr, cv);
                cv = arr;
            }
            json_object_set_new(v, name, cv);
        }
    }
    if (tn && !(has_children && all_space(tp, tn))) json_object_set_new(v, "#text", json_stringn(tp, tn));
    xmlBufferFree(text);
    return v;
}

/* SAX hooks: a DOCTYPE (and so any entity declaration) stops the parse. */
static void refuse_subset(void *ctx, const xmlChar *name, const xmlChar *ext, const xmlChar *sys)
{
    xmlParserCtxt *p = ctx;
    *(bool *)p->_private = true;
    xmlStopParser(p);
}

static void refuse_entity(void *ctx, const xmlChar *name, int type, const xmlChar *pub, const xmlChar *sys,
                          xmlChar *content)
{
    xmlParserCtxt *p = ctx;
    *(bool *)p->_private = true;
    xmlStopParser(p);
}

pt_xj_result pt_xml_to_json(const pt_xj_opts *o, const char *in, size_t len, pt_plugin_bytes *out, char *err, size_t errlen)
{
    if (len > INT32_MAX) {
        snprintf(err, errlen, "document too large");
        return PT_XJ_INVALID;
    }
    xmlParserCtxt *p = xmlNewParserCtxt();
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return PT_XJ_INVALID;
    }
    bool doctype = false;
    p->_private = &doctype;
    p->sax->internalSubset = refuse_subset;
    p->sax->externalSubset = refuse_subset;
    p->sax->entityDecl = refuse_entity;
    /* No NOENT (no entity substitution), no DTDLOAD/DTDATTR, no network. */
    int opts = XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING | XML_PARSE_NOCDATA;
    xmlDoc *doc = xmlCtxtReadMemory(p, in, (int)len, NULL, NULL, opts);
    pt_xj_result r = PT_XJ_OK;
    if (doctype) {
        snprintf(err, errlen, "XML with a DOCTYPE (DTD or entity declarations) is refused");
        r = PT_XJ_REFUSED;
    } else if (!doc || !p->wellFormed || !xmlDocGetRootElement(doc)) {
        const xmlError *e = xmlCtxtGetLastError(p);
        snprintf(err, errlen, "not well-formed XML%s%s (line %d)", e && e->message ? ": " : "",
                 e && e->message ? e->message : "", e ? e->line : 0);
        /* libxml2's messages end with a newline */
        size_t n = strlen(err);
        for (char *q = err; q < err + n; q++)
            if (*q == '\n') *q = ' ';
        r = PT_XJ_INVALID;
    }
    if (r == PT_XJ_OK) {
        x2j c = {.o = o, .err = err, .errlen = errlen};
        const xmlNode *root = xmlDocGetRootElement(doc);
        json_t *v = element_value(&c, root, 0);
        if (!v) {
            r = c.fail;
        } else {
            char nb[400];
            json_t *top = json_object();
            const char *name = qname(root->name, root->ns, nb, sizeof(nb));
            if (forced_array(&c, 0)) {
                json_t *arr = json_array();
                json_array_append_new(arr, v);
                v = arr;
            }
            json_object_set_new(top, name, v);
            char *s = json_dumps(top, JSON_COMPACT | JSON_PRESERVE_ORDER);
            if (s) pt_plugin_bytes_put(out, s, strlen(s));
            free(s);
            json_decref(top);
        }
    }
    xmlFreeDoc(doc);
    xmlFreeParserCtxt(p);
    return r;
}

/* ============================================================ JSON → XML */

typedef struct {
    const pt_xj_opts *o;
    pt_plugin_bytes *out;
    char *err;
    size_t errlen;
    pt_xj_result fail;
} j2x;

static bool unmappable(j2x *c, const char *fmt, const char *name)
{
    snprintf(c->err, c->errlen, fmt, name);
    c->fail = PT_XJ_UNMAPPABLE;
    return false;
}

/* An XML 1.0 Name (with at most one ':' between non-empty parts). */
static bool xml_name_ok(const char *s, size_t n)
{
    if (!n || strlen(s) != n) return false;
    return xmlValidateQName((const xmlChar *)s, 0) == 0;
}

/* Escaped text (attr: also quotes and whitespace kept as references).
 * False on a character XML 1.0 cannot carry. */
static bool put_escaped(j2x *c, const char *s, size_t n, bool attr)
{
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        const char *rep = NULL;
        if (ch == '&') rep = "&amp;";
        else if (ch == '<') rep = "&lt;";
        else if (ch == '>') rep = "&gt;";
        else if (ch == '\r') rep = "&#13;";
        else if (attr && ch == '"') rep = "&quot;";
        else if (attr && ch == '\n') rep = "&#10;";
        else if (attr && ch == '\t') rep = "&#9;";
        else if (ch < 0x20 && ch != '\n' && ch != '\t') {
            snprintf(c->err, c->errlen, "a string holds control character U+%04X, which XML 1.0 cannot carry", ch);
            c->fail = PT_XJ_UNMAPPABLE;
            return false;
        }
        if (!rep) continue;
        pt_plugin_bytes_put(c->out, s + run, i - run);
        put_lit(c->out, rep);
        run = i + 1;
    }
    pt_plugin_bytes_put(c->out, s + run, n - run);
    return true;
}

/* A scalar's text: strings as they are, numbers and booleans as JSON
 * spells them. False for objects, arrays and null. */
static bool put_scalar(j2x *c, const json_t *v, bool attr)
{
    char t[40];
    int n;
    switch (json_typeof(v)) {
    case JSON_STRING:
        return put_escaped(c, json_string_value(v), json_string_length(v), attr);
    case JSON_INTEGER:
        n = snprintf(t, sizeof(t), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        break;
    case JSON_REAL:
        for (int prec = 15; prec <= 17; prec++) {
            n = snprintf(t, sizeof(t), "%.*g", prec, json_real_value(v));
            if (strtod(t, NULL) == json_real_value(v)) break;
        }
        break;
    case JSON_TRUE: n = snprintf(t, sizeof(t), "true"); break;
    case JSON_FALSE: n = snprintf(t, sizeof(t), "false"); break;
    default: return false;
    }
    pt_plugin_bytes_put(c->out, t, (size_t)n);
    return true;
}

static bool put_element(j2x *c, const char *name, size_t name_len, const json_t *v, size_t depth);

/* The content of an object: attributes into the open tag, then children,
 * then "#text". */
static bool put_object(j2x *c, const char *name, size_t name_len, const json_t *v, size_t depth)
{
    const json_t *text = NULL;
    bool children = false;
    for (void *it = json_object_iter((json_t *)v); it; it = json_object_iter_next((json_t *)v, it)) {
        const char *k = json_object_iter_key(it);
        size_t kn = json_object_iter_key_len(it);
        const json_t *kv = json_object_iter_value(it);
        if (kn == 5 && !memcmp(k, "#text", 5)) {
            if (!json_is_string(kv) && !json_is_number(kv) && !json_is_boolean(kv))
                return unmappable(c, "\"#text\" of <%s> must be a string, number or boolean", name);
            text = kv;
        } else if (k[0] == '@') {
            if (!xml_name_ok(k + 1, kn - 1)) return unmappable(c, "\"%s\" is not a valid XML attribute name", k);
            if (!json_is_string(kv) && !json_is_number(kv) && !json_is_boolean(kv))
                return unmappable(c, "attribute \"%s\" must be a string, number or boolean", k);
            put_lit(c->out, " ");
            pt_plugin_bytes_put(c->out, k + 1, kn - 1);
            put_lit(c->out, "=\"");
            if (!put_scalar(c, kv, true)) return false;
            put_lit(c->out, "\"");
        } else {
            children = true;
        }
    }
    if (!children && !text) {
        put_lit(c->out, "/>");
        return true;
    }
    put_lit(c->out, ">");
    for (void *it = json_object_iter((json_t *)v); it; it = json_object_iter_next((json_t *)v, it)) {
        const char *k = json_object_iter_key(it);
        size_t kn = json_object_iter_key_len(it);
        if (k[0] == '@' || (kn == 5 && !memcmp(k, "#text", 5))) continue;
        if (!put_element(c, k, kn, json_object_iter_value(it), depth + 1)) return false;
    }
    if (text && !put_scalar(c, text, false)) return false;
    put_lit(c->out, "</");
    pt_plugin_bytes_put(c->out, name, name_len);
    put_lit(c->out, ">");
    return true;
}

/* <name>…</name> for v; an array repeats the element. */
static bool put_element(j2x *c, const char *name, size_t name_len, const json_t *v, size_t depth)
{
    if (depth >= c->o->max_depth) {
        snprintf(c->err, c->errlen, "JSON nesting deeper than %zu levels", c->o->max_depth);
        c->fail = PT_XJ_TOO_DEEP;
        return false;
    }
    if (!xml_name_ok(name, name_len)) return unmappable(c, "\"%s\" is not a valid XML element name", name);
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            const json_t *item = json_array_get(v, i);
            if (json_is_array(item))
                return unmappable(c, "an array directly inside the array \"%s\" has no XML form", name);
            if (!put_element(c, name, name_len, item, depth + 1)) return false;
        }
        return true;
    }
    put_lit(c->out, "<");
    pt_plugin_bytes_put(c->out, name, name_len);
    if (json_is_object(v)) return put_object(c, name, name_len, v, depth);
    if (json_is_null(v)) {
        put_lit(c->out, "/>");
        return true;
    }
    put_lit(c->out, ">");
    if (!put_scalar(c, v, false)) return false;
    put_lit(c->out, "</");
    pt_plugin_bytes_put(c->out, name, name_len);
    put_lit(c->out, ">");
    return true;
}

pt_xj_result pt_json_to_xml(const pt_xj_opts *o, const char *in, size_t len, pt_plugin_bytes *out, char *err, size_t errlen)
{
    json_error_t e;
    json_t *root = json_loadb(in, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (!root) {
        snprintf(err, errlen, "invalid JSON at byte %d: %s", e.position, e.text);
        return PT_XJ_INVALID;
    }
    size_t start = out->len;
    j2x c = {.o = o, .out = out, .err = err, .errlen = errlen};
    put_lit(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    bool ok;
    if (o->root) {
        if (json_is_array(root)) ok = unmappable(&c, "a JSON array cannot be the content of <%s>", o->root);
        else ok = put_element(&c, o->root, strlen(o->root), root, 0);
    } else if (!json_is_object(root) || json_object_size(root) != 1) {
        ok = unmappable(&c, "%s", "without `root`, the JSON must be an object with exactly one member: the root element");
    } else {
        void *it = json_object_iter(root);
        const json_t *v = json_object_iter_value(it);
        const char *k = json_object_iter_key(it);
        if (json_is_array(v)) ok = unmappable(&c, "the root element \"%s\" cannot be an array", k);
        else ok = put_element(&c, k, json_object_iter_key_len(it), v, 0);
    }
    json_decref(root);
    if (!ok) {
        out->len = start;
        return c.fail;
    }
    return PT_XJ_OK;
}
