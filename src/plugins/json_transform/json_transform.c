/* json_transform.c — the `json_transform` plugin: its configuration (paths
 * and operations, YAML constants turned into JSON) and the callbacks that
 * buffer JSON request and response bodies up to max_body, transform them
 * (jpath.c) and pass the result on. Bodies that are not JSON, or carry a
 * Content-Encoding, stream through untouched. Design:
 * docs/transformation.md ("JSON body transformation"). */
#include <stdio.h>
#include <stdlib.h>

#include "plugins/json_transform/json_transform.h"
#include "plugins/plugin_util.h"

/* ============================================================ configuration */

/* A YAML node as a JSON value: mappings become objects, sequences arrays;
 * quoted scalars are strings; plain scalars null/~, true/false and JSON
 * numbers are those, anything else a string. NULL (with an error) on a
 * number JSON cannot hold. */
static json_t *yaml_to_json(pt_conf_ctx *ctx, const pt_conf_node *n)
{
    switch (n->kind) {
    case PT_NODE_NULL:
        return json_null();
    case PT_NODE_MAP: {
        json_t *o = json_object();
        for (size_t i = 0; i < n->n; i++) {
            json_t *v = yaml_to_json(ctx, n->vals[i]);
            if (!v) {
                json_decref(o);
                return NULL;
            }
            json_object_setn_new(o, n->keys[i]->scalar, n->keys[i]->scalar_len, v);
        }
        return o;
    }
    case PT_NODE_SEQ: {
        json_t *a = json_array();
        for (size_t i = 0; i < n->n; i++) {
            json_t *v = yaml_to_json(ctx, n->vals[i]);
            if (!v) {
                json_decref(a);
                return NULL;
            }
            json_array_append_new(a, v);
        }
        return a;
    }
    case PT_NODE_SCALAR:
        break;
    }
    const char *s = n->scalar;
    if (n->quoted) return json_stringn(s, n->scalar_len);
    if (!strcmp(s, "null") || !strcmp(s, "~") || !*s) return json_null();
    if (!strcmp(s, "true")) return json_true();
    if (!strcmp(s, "false")) return json_false();
    if ((*s == '-' || (*s >= '0' && *s <= '9'))) {
        json_error_t e;
        json_t *num = json_loadb(s, n->scalar_len, JSON_DECODE_ANY, &e);
        if (num && json_is_number(num)) return num;
        json_decref(num);
        if (strpbrk(s, "0123456789") && strspn(s, "-+.0123456789eE") == n->scalar_len) {
            pt_conf_error(ctx, n, "json_transform: the number %s cannot be represented (quote it for a string)", s);
            return NULL;
        }
    }
    return json_stringn(s, n->scalar_len);
}

/* Reads a path scalar; `what` names it in errors. Rules per use:
 * allow_all: [*] may appear; allow_end: [-] may end it. */
static bool read_path(pt_conf_ctx *ctx, const pt_conf_node *n, const char *what, bool allow_all, bool allow_end,
                      pt_jpath *out)
{
    if (!n || n->kind != PT_NODE_SCALAR) {
        pt_conf_error(ctx, n, "json_transform: %s: expected a path such as user.address[0].city", what);
        return false;
    }
    const char *err;
    if (!pt_jpath_parse(ctx->arena, n->scalar, n->scalar_len, out, &err)) {
        pt_conf_error(ctx, n, "json_transform: %s: invalid path \"%s\": %s", what, n->scalar, err);
        return false;
    }
    for (size_t i = 0; i < out->n; i++) {
        pt_jseg_kind k = out->segs[i].kind;
        if (k == PT_JSEG_ALL && !allow_all) {
            pt_conf_error(ctx, n, "json_transform: %s: [*] is not allowed here (\"%s\")", what, n->scalar);
            return false;
        }
        if (k == PT_JSEG_END && (!allow_end || i + 1 != out->n)) {
            pt_conf_error(ctx, n, "json_transform: %s: [-] may only end the path of an add, move or copy target (\"%s\")",
                          what, n->scalar);
            return false;
        }
    }
    return true;
}

static bool read_op(pt_conf_ctx *ctx, const pt_conf_node *n, pt_jop *op)
{
    static const char *const names[] = {"add", "remove", "rename", "move", "copy"};
    if (n->kind != PT_NODE_MAP || n->n != 1) {
        pt_conf_error(ctx, n, "json_transform: each operation is a mapping with one key: add, remove, rename, move "
                              "or copy (e.g. - remove: password)");
        return false;
    }
    const char *name = n->keys[0]->scalar;
    const pt_conf_node *v = n->vals[0];
    size_t k = 0;
    while (k < PT_ARRAY_LEN(names) && strcmp(names[k], name) != 0) k++;
    if (k == PT_ARRAY_LEN(names)) {
        pt_conf_error(ctx, n->keys[0], "json_transform: unknown operation \"%s\" (expected add, remove, rename, move or copy)",
                      name);
        return false;
    }
    op->kind = (pt_jop_kind)k;
    if (op->kind == PT_JOP_REMOVE) return read_path(ctx, v, "remove", true, false, &op->path);
    static const char *const add_keys[] = {"path", "value", NULL};
    static const char *const ft_keys[] = {"from", "to", NULL};
    char what[32];
    snprintf(what, sizeof(what), "json_transform.%s", name);
    if (v->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, v, "json_transform: %s: expected a mapping such as %s", name,
                      op->kind == PT_JOP_ADD ? "{path: meta.source, value: portico}" : "{from: a.b, to: c}");
        return false;
    }
    if (!pt_conf_check_keys(ctx, v, op->kind == PT_JOP_ADD ? add_keys : ft_keys, what)) return false;
    if (op->kind == PT_JOP_ADD) {
        const pt_conf_node *val = pt_conf_get(v, "value");
        if (!val) {
            pt_conf_error(ctx, v, "json_transform: add: `value` is required (use null for a JSON null)");
            return false;
        }
        if (!read_path(ctx, pt_conf_get(v, "path"), "add.path", true, true, &op->path)) return false;
        op->value = yaml_to_json(ctx, val);
        return op->value != NULL;
    }
    const pt_conf_node *from = pt_conf_get(v, "from"), *to = pt_conf_get(v, "to");
    if (!from || !to) {
        pt_conf_error(ctx, v, "json_transform: %s: both `from` and `to` are required", name);
        return false;
    }
    if (op->kind == PT_JOP_RENAME) {
        if (!read_path(ctx, from, "rename.from", true, false, &op->path)) return false;
        if (op->path.segs[op->path.n - 1].kind != PT_JSEG_KEY) {
            pt_conf_error(ctx, from, "json_transform: rename.from must end with a key (\"%s\")", from->scalar);
            return false;
        }
        if (to->kind != PT_NODE_SCALAR || !to->scalar_len) {
            pt_conf_error(ctx, to, "json_transform: rename.to: expected the new key name (not a path)");
            return false;
        }
        op->new_name = to->scalar;
        op->new_name_len = to->scalar_len;
        return true;
    }
    snprintf(what, sizeof(what), "%s.from", name);
    if (!read_path(ctx, from, what, false, false, &op->path)) return false;
    snprintf(what, sizeof(what), "%s.to", name);
    return read_path(ctx, to, what, false, true, &op->to);
}

static bool read_ops(pt_conf_ctx *ctx, const pt_conf_node *n, const char *side, pt_jop_list *out)
{
    if (n->kind != PT_NODE_SEQ) {
        pt_conf_error(ctx, n, "json_transform.%s: expected a list of operations (add, remove, rename, move, copy)", side);
        return false;
    }
    out->ops = pt_arena_calloc(ctx->arena, (n->n ? n->n : 1) * sizeof(*out->ops));
    bool ok = true;
    for (size_t i = 0; i < n->n; i++) {
        if (read_op(ctx, n->vals[i], &out->ops[out->nops])) out->nops++;
        else ok = false;
    }
    return ok;
}

static void free_values(pt_jop_list *l)
{
    for (size_t i = 0; i < l->nops; i++) {
        json_decref(l->ops[i].value);
        l->ops[i].value = NULL;
    }
}

static void json_transform_destroy(void *conf)
{
    pt_json_transform_conf *c = conf;
    free_values(&c->request);
    free_values(&c->response);
}

static void *json_transform_configure(pt_conf_ctx *ctx, const pt_conf_node *node)
{
    static const char *const keys[] = {"request", "response", "max_body", "max_depth", NULL};
    if (!node || node->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, node, "json_transform: expected a mapping with request and/or response operations");
        return NULL;
    }
    pt_json_transform_conf *c = pt_arena_calloc(ctx->arena, sizeof(*c));
    c->max_body = 1u << 20;
    c->max_depth = 64;
    bool ok = pt_conf_check_keys(ctx, node, keys, "json_transform");
    const pt_conf_node *v;
    if ((v = pt_conf_get(node, "max_body"))) {
        if (!pt_conf_size(ctx, v, &c->max_body)) ok = false;
        else if (c->max_body == 0) {
            pt_conf_error(ctx, v, "json_transform.max_body: must be greater than 0");
            ok = false;
        }
    }
    int64_t depth;
    if ((v = pt_conf_get(node, "max_depth"))) {
        if (pt_conf_int(ctx, v, 1, 1000, &depth)) c->max_depth = (size_t)depth;
        else ok = false;
    }
    if ((v = pt_conf_get(node, "request")) && !read_ops(ctx, v, "request", &c->request)) ok = false;
    if ((v = pt_conf_get(node, "response")) && !read_ops(ctx, v, "response", &c->response)) ok = false;
    if (ok && !c->request.nops && !c->response.nops) {
        pt_conf_error(ctx, node, "json_transform: no operation configured (request: or response: lists)");
        ok = false;
    }
    if (!ok) {
        json_transform_destroy(c);
        return NULL;
    }
    return c;
}

/* ============================================================ the callbacks */

typedef struct {
    bool active[2];     /* this side's body is JSON and is being buffered */
    bool failed;        /* we answered an error: its response passes untouched */
    char coding[2][8];  /* the Content-Encoding to undo first ("" none) */
} jt_state;

/* application/json or any type/...+json (parameters ignored). */
static bool is_json_type(const pt_headers *h)
{
    const pt_str *ct = pt_headers_get(h, "content-type");
    if (!ct) return false;
    size_t n = 0;
    while (n < ct->n && ct->p[n] != ';') n++;
    while (n && (ct->p[n - 1] == ' ' || ct->p[n - 1] == '\t')) n--;
    pt_str media = pt_str_make(ct->p, n);
    if (pt_str_ieq_lit(media, "application/json")) return true;
    return n > 5 && memchr(ct->p, '/', n) && pt_str_ieq_lit(pt_str_make(ct->p + n - 5, 5), "+json");
}

static void too_large(pt_txn *txn, const pt_json_transform_conf *c, pt_side side)
{
    pt_plugin_body_too_large(txn, side, "json_transform", c->max_body);
}

static pt_plugin_result on_request_headers(pt_txn *txn, const void *conf, void *state)
{
    const pt_json_transform_conf *c = conf;
    jt_state *st = state;
    pt_request *req = pt_txn_request(txn);
    char *coding = st->coding[PT_SIDE_REQUEST];
    if (!c->request.nops || !req->has_body || !is_json_type(&req->headers) ||
        !pt_plugin_body_coding(&req->headers, coding, sizeof(st->coding[0])))
        return PT_PLUGIN_CONTINUE;
    if (req->content_length > 0 && (uint64_t)req->content_length > c->max_body) {
        too_large(txn, c, PT_SIDE_REQUEST);
        return PT_PLUGIN_RESPOND;
    }
    st->active[PT_SIDE_REQUEST] = true;
    pt_headers_remove(&req->headers, "content-encoding"); /* decoded before the transformation */
    /* Digests of the original bytes no longer hold. */
    pt_headers_remove(&req->headers, "content-md5");
    pt_headers_remove(&req->headers, "content-digest");
    pt_headers_remove(&req->headers, "repr-digest");
    pt_txn_body_will_change(txn, PT_SIDE_REQUEST);
    pt_txn_hold_request_head(txn); /* the upstream gets the new body with its exact length */
    return PT_PLUGIN_CONTINUE;
}

static pt_plugin_result on_response_headers(pt_txn *txn, const void *conf, void *state)
{
    const pt_json_transform_conf *c = conf;
    jt_state *st = state;
    st->active[PT_SIDE_RESPONSE] = false; /* a replaced response starts over */
    pt_response *res = pt_txn_response(txn);
    /* Portico's own answers (errors, local responses) are not the upstream's document. */
    if (st->failed || !c->response.nops || pt_txn_response_is_local(txn) || !res->has_body || res->status == 206 ||
        !is_json_type(&res->headers) ||
        !pt_plugin_body_coding(&res->headers, st->coding[PT_SIDE_RESPONSE], sizeof(st->coding[0])))
        return PT_PLUGIN_CONTINUE;
    if (res->content_length > 0 && (uint64_t)res->content_length > c->max_body) {
        st->failed = true;
        too_large(txn, c, PT_SIDE_RESPONSE);
        return PT_PLUGIN_RESPOND;
    }
    st->active[PT_SIDE_RESPONSE] = true;
    pt_headers_remove(&res->headers, "content-encoding"); /* sent decoded (compression may encode it again) */
    pt_headers_remove(&res->headers, "content-md5");
    pt_headers_remove(&res->headers, "content-digest");
    pt_headers_remove(&res->headers, "repr-digest");
    pt_headers_remove(&res->headers, "accept-ranges");
    pt_txn_body_will_change(txn, PT_SIDE_RESPONSE);
    pt_txn_hold_response_head(txn);
    return PT_PLUGIN_CONTINUE;
}

/* Buffers until the last call, then replaces the body with its transform. */
static pt_plugin_result on_body(pt_txn *txn, const pt_json_transform_conf *c, jt_state *st, pt_side side,
                                pt_body *body)
{
    if (!st->active[side]) return PT_PLUGIN_CONTINUE;
    const char *in = NULL;
    size_t len = 0;
    char *decoded;
    pt_plugin_result w =
        pt_plugin_whole_body(txn, side, body, "json_transform", c->max_body, st->coding[side], &in, &len, &decoded);
    if (w == PT_PLUGIN_BUFFER) return w;
    st->active[side] = false;
    if (w == PT_PLUGIN_RESPOND) {
        st->failed = true;
        return w;
    }
    if (!len) {
        free(decoded);
        pt_body_replace(body, NULL, 0);
        return PT_PLUGIN_CONTINUE; /* nothing to transform */
    }
    const pt_jop_list *ops = side == PT_SIDE_REQUEST ? &c->request : &c->response;
    pt_plugin_bytes out = {0};
    char err[200];
    pt_jt_result r = pt_json_transform_text(ops->ops, ops->nops, c->max_depth, in, len, &out, err, sizeof(err));
    free(decoded);
    if (r != PT_JT_OK) {
        pt_plugin_bytes_free(&out);
        st->failed = true;
        char d[300];
        snprintf(d, sizeof(d), "the %s body is not acceptable JSON: %s",
                 side == PT_SIDE_REQUEST ? "request" : "upstream response", err);
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

const pt_plugin_type pt_plugin_json_transform = {
    .name = "json_transform",
    .configure = json_transform_configure,
    .destroy = json_transform_destroy,
    .state_size = sizeof(jt_state),
    .on_request_headers = on_request_headers,
    .on_request_body = on_request_body,
    .on_response_headers = on_response_headers,
    .on_response_body = on_response_body,
};
