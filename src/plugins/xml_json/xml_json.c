/* xml_json.c — the `xml_json` plugin: configuration, and the callbacks
 * that buffer an XML or JSON body (per side, per configured direction) up
 * to max_body and replace it with its conversion (xml_map.c), changing
 * Content-Type. Other bodies, and bodies with a Content-Encoding, stream
 * through untouched. Design: docs/transformation.md ("JSON and XML"). */
#include <stdio.h>
#include <stdlib.h>

#include <libxml/parser.h>

#include "plugins/plugin_util.h"
#include "plugins/xml_json/xml_json.h"

/* ============================================================ configuration */

static bool read_direction(pt_conf_ctx *ctx, const pt_conf_node *n, const char *side, pt_xj_direction *out)
{
    if (n->kind == PT_NODE_SCALAR && !strcmp(n->scalar, "xml_to_json")) *out = PT_XJ_XML_TO_JSON;
    else if (n->kind == PT_NODE_SCALAR && !strcmp(n->scalar, "json_to_xml")) *out = PT_XJ_JSON_TO_XML;
    else {
        pt_conf_error(ctx, n, "xml_json.%s: expected xml_to_json or json_to_xml", side);
        return false;
    }
    return true;
}

static bool read_arrays(pt_conf_ctx *ctx, const pt_conf_node *n, pt_xj_opts *o)
{
    if (n->kind != PT_NODE_SEQ) {
        pt_conf_error(ctx, n, "xml_json.arrays: expected a list of element paths such as [orders.order]");
        return false;
    }
    pt_xpath *v = pt_arena_calloc(ctx->arena, (n->n ? n->n : 1) * sizeof(*v));
    bool ok = true;
    for (size_t i = 0; i < n->n; i++) {
        const pt_conf_node *it = n->vals[i];
        if (it->kind != PT_NODE_SCALAR || !pt_xpath_parse(ctx->arena, it->scalar, it->scalar_len, &v[i])) {
            pt_conf_error(ctx, it, "xml_json.arrays: invalid element path \"%s\" (names separated by '.', from the "
                                   "root element)", it->kind == PT_NODE_SCALAR ? it->scalar : "");
            ok = false;
        }
    }
    o->arrays = v;
    o->narrays = n->n;
    return ok;
}

static void *xml_json_configure(pt_conf_ctx *ctx, const pt_conf_node *node)
{
    static const char *const keys[] = {"request", "response", "arrays", "root", "xml_content_type",
                                       "max_body", "max_depth", NULL};
    if (!node || node->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, node, "xml_json: expected a mapping such as {response: xml_to_json}");
        return NULL;
    }
    /* Once, on the main thread, before any worker parses. */
    xmlInitParser();
    pt_xml_json_conf *c = pt_arena_calloc(ctx->arena, sizeof(*c));
    c->max_body = 1u << 20;
    c->opts.max_depth = 64;
    c->xml_content_type = "application/xml; charset=utf-8";
    bool ok = pt_conf_check_keys(ctx, node, keys, "xml_json");
    const pt_conf_node *v;
    if ((v = pt_conf_get(node, "request")) && !read_direction(ctx, v, "request", &c->dir[PT_SIDE_REQUEST])) ok = false;
    if ((v = pt_conf_get(node, "response")) && !read_direction(ctx, v, "response", &c->dir[PT_SIDE_RESPONSE]))
        ok = false;
    if ((v = pt_conf_get(node, "arrays")) && !read_arrays(ctx, v, &c->opts)) ok = false;
    if ((v = pt_conf_get(node, "root"))) {
        char *root;
        if (!pt_conf_string(ctx, v, &root)) {
            ok = false;
        } else if (xmlValidateQName((const xmlChar *)root, 0) != 0) {
            pt_conf_error(ctx, v, "xml_json.root: \"%s\" is not a valid XML element name", root);
            ok = false;
        } else {
            c->opts.root = root;
        }
    }
    if ((v = pt_conf_get(node, "xml_content_type"))) {
        char *ct;
        if (!pt_conf_string(ctx, v, &ct)) ok = false;
        else if (!pt_plugin_header_value_ok(ct, strlen(ct)) || !strchr(ct, '/')) {
            pt_conf_error(ctx, v, "xml_json.xml_content_type: expected a media type such as text/xml; charset=utf-8");
            ok = false;
        } else {
            c->xml_content_type = ct;
        }
    }
    if ((v = pt_conf_get(node, "max_body"))) {
        if (!pt_conf_size(ctx, v, &c->max_body)) ok = false;
        else if (c->max_body == 0 || c->max_body > INT32_MAX) {
            pt_conf_error(ctx, v, "xml_json.max_body: must be between 1 and 2g");
            ok = false;
        }
    }
    int64_t depth;
    if ((v = pt_conf_get(node, "max_depth"))) {
        if (pt_conf_int(ctx, v, 1, 1000, &depth)) c->opts.max_depth = (size_t)depth;
        else ok = false;
    }
    if (ok && !c->dir[PT_SIDE_REQUEST] && !c->dir[PT_SIDE_RESPONSE]) {
        pt_conf_error(ctx, node, "xml_json: set request and/or response to xml_to_json or json_to_xml");
        ok = false;
    }
    return ok ? c : NULL;
}

/* ============================================================ the callbacks */

typedef struct {
    bool active[2];    /* this side's body is being buffered for conversion */
    bool failed;       /* we answered an error: its response passes untouched */
    char coding[2][8]; /* the Content-Encoding to undo first ("" none) */
} xj_state;

/* The media type without parameters. */
static pt_str media_type(const pt_headers *h)
{
    const pt_str *ct = pt_headers_get(h, "content-type");
    if (!ct) return PT_STR_NULL;
    size_t n = 0;
    while (n < ct->n && ct->p[n] != ';') n++;
    while (n && (ct->p[n - 1] == ' ' || ct->p[n - 1] == '\t')) n--;
    return pt_str_make(ct->p, n);
}

static bool has_suffix(pt_str m, const char *suffix)
{
    size_t k = strlen(suffix);
    return m.n > k && memchr(m.p, '/', m.n) && pt_str_ieq_lit(pt_str_make(m.p + m.n - k, k), suffix);
}

/* Whether the body's type is the one `dir` converts from. */
static bool source_type(const pt_headers *h, pt_xj_direction dir)
{
    pt_str m = media_type(h);
    if (dir == PT_XJ_XML_TO_JSON)
        return pt_str_ieq_lit(m, "application/xml") || pt_str_ieq_lit(m, "text/xml") || has_suffix(m, "+xml");
    return pt_str_ieq_lit(m, "application/json") || has_suffix(m, "+json");
}

static void too_large(pt_txn *txn, const pt_xml_json_conf *c, pt_side side)
{
    pt_plugin_body_too_large(txn, side, "xml_json", c->max_body);
}

/* Header phase of either side: decides, and announces the new body. */
static pt_plugin_result on_headers(pt_txn *txn, const pt_xml_json_conf *c, xj_state *st, pt_side side,
                                   pt_headers *h, bool has_body, int64_t content_length)
{
    st->active[side] = false;
    pt_xj_direction dir = c->dir[side];
    if (!dir || !has_body || !source_type(h, dir) || !pt_plugin_body_coding(h, st->coding[side], sizeof(st->coding[0])))
        return PT_PLUGIN_CONTINUE;
    if (content_length > 0 && (uint64_t)content_length > c->max_body) {
        st->failed = true;
        too_large(txn, c, side);
        return PT_PLUGIN_RESPOND;
    }
    st->active[side] = true;
    pt_arena *a = pt_txn_arena(txn);
    pt_headers_set(h, a, PT_STR_LIT("Content-Type"),
                   dir == PT_XJ_XML_TO_JSON ? PT_STR_LIT("application/json") : pt_str_c(c->xml_content_type));
    pt_headers_remove(h, "content-encoding"); /* decoded before the conversion */
    pt_headers_remove(h, "content-md5");
    pt_headers_remove(h, "content-digest");
    pt_headers_remove(h, "repr-digest");
    if (side == PT_SIDE_RESPONSE) pt_headers_remove(h, "accept-ranges");
    pt_txn_body_will_change(txn, side);
    if (side == PT_SIDE_RESPONSE) pt_txn_hold_response_head(txn);
    else pt_txn_hold_request_head(txn); /* exact Content-Length: SOAP servers may refuse chunked */
    return PT_PLUGIN_CONTINUE;
}

static pt_plugin_result on_request_headers(pt_txn *txn, const void *conf, void *state)
{
    pt_request *req = pt_txn_request(txn);
    return on_headers(txn, conf, state, PT_SIDE_REQUEST, &req->headers, req->has_body, req->content_length);
}

static pt_plugin_result on_response_headers(pt_txn *txn, const void *conf, void *state)
{
    xj_state *st = state;
    pt_response *res = pt_txn_response(txn);
    if (st->failed || pt_txn_response_is_local(txn) || res->status == 206) {
        st->active[PT_SIDE_RESPONSE] = false;
        return PT_PLUGIN_CONTINUE;
    }
    return on_headers(txn, conf, state, PT_SIDE_RESPONSE, &res->headers, res->has_body, res->content_length);
}

static pt_plugin_result on_body(pt_txn *txn, const pt_xml_json_conf *c, xj_state *st, pt_side side, pt_body *body)
{
    if (!st->active[side]) return PT_PLUGIN_CONTINUE;
    const char *in = NULL;
    size_t len = 0;
    char *decoded;
    pt_plugin_result w =
        pt_plugin_whole_body(txn, side, body, "xml_json", c->max_body, st->coding[side], &in, &len, &decoded);
    if (w == PT_PLUGIN_BUFFER) return w;
    st->active[side] = false;
    if (w == PT_PLUGIN_RESPOND) {
        st->failed = true;
        return w;
    }
    if (!len) {
        free(decoded);
        pt_body_replace(body, NULL, 0);
        return PT_PLUGIN_CONTINUE;
    }
    pt_plugin_bytes out = {0};
    char err[256];
    pt_xj_result r = c->dir[side] == PT_XJ_XML_TO_JSON ? pt_xml_to_json(&c->opts, in, len, &out, err, sizeof(err))
                                                       : pt_json_to_xml(&c->opts, in, len, &out, err, sizeof(err));
    free(decoded);
    if (r != PT_XJ_OK) {
        pt_plugin_bytes_free(&out);
        st->failed = true;
        char d[400];
        snprintf(d, sizeof(d), "the %s body could not be converted to %s: %s",
                 side == PT_SIDE_REQUEST ? "request" : "upstream response",
                 c->dir[side] == PT_XJ_XML_TO_JSON ? "JSON" : "XML", err);
        pt_txn_respond_problem(txn, side == PT_SIDE_REQUEST ? 400 : 502, d);
        return PT_PLUGIN_RESPOND;
    }
    pt_body_replace(body, out.p, out.len);
    pt_plugin_bytes_free(&out);
    return PT_PLUGIN_CONTINUE;
}

static pt_plugin_result on_request_body(pt_txn *txn, const void *conf, void *state, pt_body *body)
{
    return on_body(txn, conf, state, PT_SIDE_REQUEST, body);
}

static pt_plugin_result on_response_body(pt_txn *txn, const void *conf, void *state, pt_body *body)
{
    return on_body(txn, conf, state, PT_SIDE_RESPONSE, body);
}

const pt_plugin_type pt_plugin_xml_json = {
    .name = "xml_json",
    .configure = xml_json_configure,
    .state_size = sizeof(xj_state),
    .on_request_headers = on_request_headers,
    .on_request_body = on_request_body,
    .on_response_headers = on_response_headers,
    .on_response_body = on_response_body,
};
