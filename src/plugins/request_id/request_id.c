/* request_id.c — gives every request an id: a safe incoming one (when
 * trusted) or a fresh random 128-bit hex id, forwarded upstream in the
 * configured header, recorded with pt_txn_set_request_id (access log,
 * problem+json bodies) and echoed on the response. */
#include "plugins/request_id/request_id.h"

#include "plugins/plugin_util.h"

bool pt_request_id_is_safe(pt_str v)
{
    if (v.n == 0 || v.n > PT_REQUEST_ID_MAX) return false;
    for (size_t i = 0; i < v.n; i++) {
        unsigned char c = (unsigned char)v.p[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                  c == '_' || c == ':' || c == '-';
        if (!ok) return false;
    }
    return true;
}

void pt_request_id_generate(char out[PT_REQUEST_ID_GEN_LEN])
{
    static const char hex[] = "0123456789abcdef";
    uint64_t w[2] = {pt_plugin_rand64(), pt_plugin_rand64()};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 16; j++) out[i * 16 + j] = hex[(w[i] >> (60 - 4 * j)) & 15];
}

/* Validates {header, trust_incoming, response_header}; a missing block
 * (`- request_id` alone) means all defaults. */
static void *request_id_configure(pt_conf_ctx *ctx, const pt_conf_node *node)
{
    static const char *const allowed[] = {"header", "trust_incoming", "response_header", NULL};
    pt_request_id_conf *c = pt_arena_calloc(ctx->arena, sizeof(*c));
    c->header = PT_STR_LIT("X-Request-Id");
    c->trust_incoming = true;
    c->response_header = true;
    if (!node || node->kind == PT_NODE_NULL) return c;
    if (node->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, node, "request_id: expected a mapping (header, trust_incoming, response_header)");
        return NULL;
    }
    bool ok = pt_conf_check_keys(ctx, node, allowed, "request_id");

    const pt_conf_node *h = pt_conf_get(node, "header");
    if (h) {
        char *name = NULL;
        if (!pt_conf_string(ctx, h, &name)) {
            ok = false;
        } else if (!pt_plugin_header_name_ok(name, strlen(name))) {
            pt_conf_error(ctx, h, "request_id: 'header' \"%s\" is not a valid header name", name);
            ok = false;
        } else if (pt_plugin_header_is_managed(name)) {
            pt_conf_error(ctx, h, "request_id: 'header' \"%s\" is a framing/hop-by-hop header", name);
            ok = false;
        } else {
            c->header = pt_str_c(name);
        }
    }
    const pt_conf_node *t = pt_conf_get(node, "trust_incoming");
    if (t && !pt_conf_bool(ctx, t, &c->trust_incoming)) ok = false;
    const pt_conf_node *r = pt_conf_get(node, "response_header");
    if (r && !pt_conf_bool(ctx, r, &c->response_header)) ok = false;
    return ok ? c : NULL;
}

/* Generates a fresh id in the request arena and records it on the txn. */
static pt_str assign_new_id(pt_txn *txn)
{
    char *id = pt_arena_alloc(pt_txn_arena(txn), PT_REQUEST_ID_GEN_LEN + 1);
    pt_request_id_generate(id);
    id[PT_REQUEST_ID_GEN_LEN] = '\0';
    pt_txn_set_request_id(txn, pt_str_make(id, PT_REQUEST_ID_GEN_LEN));
    return pt_txn_request_id(txn);
}

static pt_plugin_result request_id_on_request_headers(pt_txn *txn, const void *conf, void *state)
{
    const pt_request_id_conf *c = conf;
    pt_request *req = pt_txn_request(txn);
    pt_str id = PT_STR_NULL;
    if (c->trust_incoming) {
        const pt_str *in = pt_headers_get(&req->headers, c->header.p);
        if (in && pt_request_id_is_safe(*in)) {
            pt_txn_set_request_id(txn, *in);
            id = pt_txn_request_id(txn);
        }
    }
    if (!id.n) id = assign_new_id(txn);
    /* Replaces any (untrusted or duplicate) incoming copies. */
    pt_headers_set(&req->headers, pt_txn_arena(txn), c->header, id);
    return PT_PLUGIN_CONTINUE;
}

/* Echoes the id. If the request phase never reached this plugin (an
 * earlier plugin answered locally), the id is created here so every
 * response still carries one. */
static pt_plugin_result request_id_on_response_headers(pt_txn *txn, const void *conf, void *state)
{
    const pt_request_id_conf *c = conf;
    pt_str id = pt_txn_request_id(txn);
    if (!id.n) id = assign_new_id(txn);
    if (c->response_header) pt_headers_set(&pt_txn_response(txn)->headers, pt_txn_arena(txn), c->header, id);
    return PT_PLUGIN_CONTINUE;
}

const pt_plugin_type pt_plugin_request_id = {
    .name = "request_id",
    .configure = request_id_configure,
    .state_size = 0,
    .on_request_headers = request_id_on_request_headers,
    .on_response_headers = request_id_on_response_headers,
};
