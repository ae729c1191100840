/* direct_response.c — answers every request locally with a fixed response
 * (health checks, maintenance pages, mocks). Everything is precomputed at
 * configure time; the request path only hands slices to pt_txn_respond, or
 * with `template: true` renders the body's placeholders (dr_template.c). */
#include "plugins/direct_response/direct_response.h"

#include <stdio.h>

/* Validates {status, headers, body}; returns a pt_direct_response_conf in
 * the config arena or NULL after recording errors. */
static void *direct_response_configure(pt_conf_ctx *ctx, const pt_conf_node *node)
{
    static const char *const allowed[] = {"status", "headers", "body", "template", NULL};
    if (!node || node->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, node, "direct_response: expected a mapping with at least 'status'");
        return NULL;
    }
    bool ok = pt_conf_check_keys(ctx, node, allowed, "direct_response");
    pt_direct_response_conf *c = pt_arena_calloc(ctx->arena, sizeof(*c));

    const pt_conf_node *st = pt_conf_get(node, "status");
    int64_t status = 0;
    if (!st) {
        pt_conf_error(ctx, node, "direct_response: 'status' is required");
        ok = false;
    } else if (!pt_conf_int(ctx, st, 200, 599, &status)) {
        ok = false;
    }
    c->status = (int)status;

    const pt_conf_node *hs = pt_conf_get(node, "headers");
    if (hs && hs->kind != PT_NODE_NULL) {
        pt_plugin_header *all;
        size_t n;
        if (!pt_plugin_read_header_map(ctx, hs, "direct_response.headers", &all, &n)) ok = false;
        c->headers = all;
        for (size_t i = 0; i < n; i++) {
            if (pt_str_ieq_lit(all[i].name, "content-type")) c->content_type = all[i].value;
            else c->headers[c->nheaders++] = all[i]; /* compacts in place, order kept */
        }
    }

    const pt_conf_node *b = pt_conf_get(node, "body");
    if (b && b->kind != PT_NODE_NULL) {
        if (b->kind != PT_NODE_SCALAR) {
            pt_conf_error(ctx, b, "direct_response: 'body' must be a string");
            ok = false;
        } else {
            c->body = pt_arena_str(ctx->arena, pt_str_make(b->scalar, b->scalar_len));
        }
    }
    const pt_conf_node *tn = pt_conf_get(node, "template");
    if (tn && !pt_conf_bool(ctx, tn, &c->templated)) ok = false;
    if (ok && c->templated) {
        const char *why = pt_dr_template_compile(ctx->arena, c->body, c->content_type, &c->tmpl);
        if (why) {
            pt_conf_error(ctx, b ? b : tn, "direct_response: body template: %s", why);
            ok = false;
        }
        /* reflected request data must never be sniffed into another type */
        c->add_nosniff = true;
        for (size_t i = 0; i < c->nheaders; i++)
            if (pt_str_ieq_lit(c->headers[i].name, "X-Content-Type-Options")) c->add_nosniff = false;
    }
    if (c->body.n && (c->status == 204 || c->status == 304)) {
        pt_conf_error(ctx, b, "direct_response: 'body' must be empty for status %d", c->status);
        ok = false;
    }
    return ok ? c : NULL;
}

static pt_plugin_result direct_response_on_request_headers(pt_txn *txn, const void *conf, void *state)
{
    const pt_direct_response_conf *c = conf;
    pt_str body = c->templated ? pt_dr_template_render(&c->tmpl, txn) : c->body;
    pt_txn_respond(txn, c->status, c->content_type, body);
    for (size_t i = 0; i < c->nheaders; i++) pt_txn_respond_header(txn, c->headers[i].name, c->headers[i].value);
    if (c->add_nosniff) pt_txn_respond_header(txn, PT_STR_LIT("X-Content-Type-Options"), PT_STR_LIT("nosniff"));
    return PT_PLUGIN_RESPOND;
}

const pt_plugin_type pt_plugin_direct_response = {
    .name = "direct_response",
    .configure = direct_response_configure,
    .state_size = 0,
    .on_request_headers = direct_response_on_request_headers,
};
