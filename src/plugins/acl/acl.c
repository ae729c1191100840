/* acl.c — allows or denies consumer groups per route and per method (see
 * acl.h). */
#include "plugins/acl/acl.h"

static bool in_any(const pt_consumer *c, const char *const *groups, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (pt_consumer_in_group(c, pt_str_c(groups[i]))) return true;
    return false;
}

bool pt_acl_allows(const pt_acl_conf *conf, const pt_consumer *c, pt_method method)
{
    const pt_acl_rule *r = (unsigned)method < PT_METHOD__COUNT && conf->has_method[method] ? &conf->by_method[method]
                                                                                           : &conf->dflt;
    if (in_any(c, r->deny, r->ndeny)) return false;
    return r->nallow == 0 || in_any(c, r->allow, r->nallow);
}

static pt_plugin_result acl_on_request_headers(pt_txn *txn, const void *conf, void *state)
{
    if (pt_txn_auth_settle(txn) == PT_PLUGIN_RESPOND) return PT_PLUGIN_RESPOND;
    const pt_consumer *c = pt_txn_consumer(txn);
    if (!c) return pt_txn_auth_reject(txn, PT_STR_NULL, "authentication required");
    if (pt_acl_allows(conf, c, pt_txn_request(txn)->method)) return PT_PLUGIN_CONTINUE;
    pt_txn_respond_problem(txn, 403, "the consumer is not allowed to use this route");
    return PT_PLUGIN_RESPOND;
}

/* A list of group names into (*out, *n). */
static bool read_groups(pt_conf_ctx *ctx, const pt_conf_node *n, const char *what, const char ***out, size_t *nout)
{
    if (!n) return true;
    if (n->kind != PT_NODE_SEQ || n->n == 0) {
        pt_conf_error(ctx, n, "acl.%s must be a non-empty list of group names", what);
        return false;
    }
    const char **v = pt_arena_calloc(ctx->arena, n->n * sizeof(*v));
    bool ok = true;
    for (size_t i = 0; i < n->n; i++) {
        char *g;
        if (!pt_conf_string(ctx, n->vals[i], &g) || !*g) {
            if (n->vals[i]->kind == PT_NODE_SCALAR) pt_conf_error(ctx, n->vals[i], "acl.%s: empty group name", what);
            ok = false;
            continue;
        }
        v[(*nout)++] = g;
    }
    *out = v;
    return ok;
}

/* {allow, deny} into r; at least one of them. */
static bool read_rule(pt_conf_ctx *ctx, const pt_conf_node *m, const char *what, bool check_keys, pt_acl_rule *r)
{
    static const char *const keys[] = {"allow", "deny", NULL};
    if (check_keys && !pt_conf_check_keys(ctx, m, keys, what)) return false;
    const pt_conf_node *a = pt_conf_get(m, "allow"), *d = pt_conf_get(m, "deny");
    if (!a && !d) {
        pt_conf_error(ctx, m, "%s: at least one of allow or deny is required", what);
        return false;
    }
    bool ok = read_groups(ctx, a, "allow", &r->allow, &r->nallow);
    return read_groups(ctx, d, "deny", &r->deny, &r->ndeny) && ok;
}

/* Validates {allow, deny, methods: {METHOD: {allow, deny}}}. */
static void *acl_configure(pt_conf_ctx *ctx, const pt_conf_node *node)
{
    static const char *const keys[] = {"allow", "deny", "methods", NULL};
    if (!node || node->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, node, "acl: expected a mapping with allow and/or deny (and optional methods)");
        return NULL;
    }
    if (!pt_conf_check_keys(ctx, node, keys, "acl")) return NULL;
    pt_acl_conf *c = pt_arena_calloc(ctx->arena, sizeof(*c));
    const pt_conf_node *ms = pt_conf_get(node, "methods");
    bool ok = true;
    if (pt_conf_get(node, "allow") || pt_conf_get(node, "deny") || !ms) ok = read_rule(ctx, node, "acl", false, &c->dflt);
    if (ms) {
        if (ms->kind != PT_NODE_MAP || ms->n == 0) {
            pt_conf_error(ctx, ms, "acl.methods must map method names to {allow, deny}");
            return NULL;
        }
        for (size_t i = 0; i < ms->n; i++) {
            pt_method m = pt_method_from_str(pt_str_c(ms->keys[i]->scalar));
            if (m == PT_METHOD_OTHER || (unsigned)m >= PT_METHOD__COUNT) {
                pt_conf_error(ctx, ms->keys[i], "acl.methods: unknown method \"%s\"", ms->keys[i]->scalar);
                ok = false;
                continue;
            }
            c->has_method[m] = true;
            if (!read_rule(ctx, ms->vals[i], "acl.methods entry", true, &c->by_method[m])) ok = false;
        }
    }
    return ok ? c : NULL;
}

const pt_plugin_type pt_plugin_acl = {
    .name = "acl",
    .configure = acl_configure,
    .on_request_headers = acl_on_request_headers,
};
