/* headers.c — adds, replaces and removes request/response headers, with
 * names and values validated once at configure time. */
#include "plugins/headers/headers.h"

#include <stdio.h>

/* Reads one side ("request" or "response"): {add, set, remove}. */
static bool read_side(pt_conf_ctx *ctx, const pt_conf_node *side, const char *side_name, pt_header_ops *ops)
{
    static const char *const allowed[] = {"add", "set", "remove", NULL};
    char what[64];
    snprintf(what, sizeof(what), "headers.%s", side_name);
    if (side->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, side, "%s: expected a mapping with add/set/remove", what);
        return false;
    }
    bool ok = pt_conf_check_keys(ctx, side, allowed, what);

    const pt_conf_node *rm = pt_conf_get(side, "remove");
    if (rm && rm->kind != PT_NODE_NULL) {
        if (rm->kind != PT_NODE_SEQ) {
            pt_conf_error(ctx, rm, "%s.remove: expected a list of header names", what);
            ok = false;
        } else {
            ops->remove = pt_arena_calloc(ctx->arena, (rm->n ? rm->n : 1) * sizeof(*ops->remove));
            for (size_t i = 0; i < rm->n; i++) {
                const pt_conf_node *it = rm->vals[i];
                if (it->kind != PT_NODE_SCALAR || !pt_plugin_header_name_ok(it->scalar, it->scalar_len)) {
                    pt_conf_error(ctx, it, "%s.remove: invalid header name \"%s\" (must be an HTTP token)", what,
                                  it->kind == PT_NODE_SCALAR ? it->scalar : "");
                    ok = false;
                } else if (pt_plugin_header_is_managed(it->scalar)) {
                    pt_conf_error(ctx, it,
                                  "%s.remove: cannot remove \"%s\": framing/hop-by-hop headers are managed by "
                                  "the proxy",
                                  what, it->scalar);
                    ok = false;
                } else {
                    ops->remove[ops->nremove++] = pt_arena_strndup(ctx->arena, it->scalar, it->scalar_len);
                }
            }
        }
    }

    char sub[80];
    const pt_conf_node *set = pt_conf_get(side, "set");
    if (set && set->kind != PT_NODE_NULL) {
        snprintf(sub, sizeof(sub), "%s.set", what);
        if (!pt_plugin_read_header_map(ctx, set, sub, &ops->set, &ops->nset)) ok = false;
    }
    const pt_conf_node *add = pt_conf_get(side, "add");
    if (add && add->kind != PT_NODE_NULL) {
        snprintf(sub, sizeof(sub), "%s.add", what);
        if (!pt_plugin_read_header_map(ctx, add, sub, &ops->add, &ops->nadd)) ok = false;
    }
    return ok;
}

/* Validates {request: {...}, response: {...}} (at least one side). */
static void *headers_configure(pt_conf_ctx *ctx, const pt_conf_node *node)
{
    static const char *const allowed[] = {"request", "response", NULL};
    if (!node || node->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, node, "headers: expected a mapping with 'request' and/or 'response'");
        return NULL;
    }
    bool ok = pt_conf_check_keys(ctx, node, allowed, "headers");
    pt_headers_plugin_conf *c = pt_arena_calloc(ctx->arena, sizeof(*c));
    const pt_conf_node *req = pt_conf_get(node, "request");
    const pt_conf_node *res = pt_conf_get(node, "response");
    if (!req && !res && ok) {
        pt_conf_error(ctx, node, "headers: expected 'request' and/or 'response'");
        ok = false;
    }
    if (req && !read_side(ctx, req, "request", &c->request)) ok = false;
    if (res && !read_side(ctx, res, "response", &c->response)) ok = false;
    return ok ? c : NULL;
}

void pt_headers_plugin_apply(const pt_header_ops *ops, pt_headers *h, pt_arena *a)
{
    for (size_t i = 0; i < ops->nremove; i++) pt_headers_remove(h, ops->remove[i]);
    for (size_t i = 0; i < ops->nset; i++) pt_headers_set(h, a, ops->set[i].name, ops->set[i].value);
    for (size_t i = 0; i < ops->nadd; i++) pt_headers_add(h, a, ops->add[i].name, ops->add[i].value);
}

static pt_plugin_result headers_on_request_headers(pt_txn *txn, const void *conf, void *state)
{
    const pt_headers_plugin_conf *c = conf;
    pt_headers_plugin_apply(&c->request, &pt_txn_request(txn)->headers, pt_txn_arena(txn));
    return PT_PLUGIN_CONTINUE;
}

static pt_plugin_result headers_on_response_headers(pt_txn *txn, const void *conf, void *state)
{
    const pt_headers_plugin_conf *c = conf;
    pt_headers_plugin_apply(&c->response, &pt_txn_response(txn)->headers, pt_txn_arena(txn));
    return PT_PLUGIN_CONTINUE;
}

const pt_plugin_type pt_plugin_headers = {
    .name = "headers",
    .configure = headers_configure,
    .state_size = 0,
    .on_request_headers = headers_on_request_headers,
    .on_response_headers = headers_on_response_headers,
};
