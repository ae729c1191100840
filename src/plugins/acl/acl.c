/* acl.c — allows or denies consumer groups, and requires scopes and claim
 * values, per route and per method (see acl.h). */
#include "plugins/acl/acl.h"

#include <jansson.h>
#include <stdlib.h>

static bool in_any(const pt_consumer *c, const char *const *groups, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (pt_consumer_in_group(c, pt_str_c(groups[i]))) return true;
    return false;
}

const pt_acl_rule *pt_acl_rule_for(const pt_acl_conf *conf, pt_method method)
{
    return (unsigned)method < PT_METHOD__COUNT && conf->has_method[method] ? &conf->by_method[method] : &conf->dflt;
}

bool pt_acl_allows(const pt_acl_conf *conf, const pt_consumer *c, pt_method method)
{
    const pt_acl_rule *r = pt_acl_rule_for(conf, method);
    if (in_any(c, r->deny, r->ndeny)) return false;
    return r->nallow == 0 || in_any(c, r->allow, r->nallow);
}

static bool one_of(pt_str v, const char *const *values, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (pt_str_eq(v, pt_str_c(values[i]))) return true;
    return false;
}

bool pt_acl_claim_matches(pt_str have, const char *const *values, size_t nvalues)
{
    if (!have.p) return false;
    if (one_of(have, values, nvalues)) return true;
    if (!have.n || have.p[0] != '[') return false;
    json_t *a = json_loadb(have.p, have.n, JSON_REJECT_DUPLICATES, NULL);
    bool ok = false;
    size_t i;
    json_t *e;
    if (json_is_array(a)) {
        json_array_foreach(a, i, e) {
            if (json_is_string(e)) {
                ok = one_of(pt_str_make(json_string_value(e), json_string_length(e)), values, nvalues);
            } else if (json_is_number(e) || json_is_boolean(e)) {
                char *t = json_dumps(e, JSON_ENCODE_ANY | JSON_COMPACT);
                ok = t && one_of(pt_str_c(t), values, nvalues);
                free(t);
            }
            if (ok) break;
        }
    }
    json_decref(a);
    return ok;
}

/* 403 for a known caller; Bearer callers learn it is about the token's
 * privileges (RFC 6750 insufficient_scope). */
static pt_plugin_result forbid(pt_txn *txn, const pt_acl_rule *r, const char *detail)
{
    pt_txn_respond_problem(txn, 403, detail);
    const char *m = pt_txn_auth_method(txn);
    if (m && (strcmp(m, "jwt") == 0 || strcmp(m, "oauth2_introspection") == 0)) {
        pt_arena *a = pt_txn_arena(txn);
        const char *v = r->nscopes ? pt_arena_printf(a, "Bearer error=\"insufficient_scope\", scope=\"%s\"",
                                                     r->scope_list)
                                   : "Bearer error=\"insufficient_scope\"";
        pt_txn_respond_header(txn, PT_STR_LIT("WWW-Authenticate"), pt_str_c(v));
    }
    return PT_PLUGIN_RESPOND;
}

static pt_plugin_result acl_on_request_headers(pt_txn *txn, const void *conf, void *state)
{
    if (pt_txn_auth_settle(txn) == PT_PLUGIN_RESPOND) return PT_PLUGIN_RESPOND;
    const pt_consumer *c = pt_txn_consumer(txn);
    if (!c) return pt_txn_auth_reject(txn, PT_STR_NULL, "authentication required");
    pt_method method = pt_txn_request(txn)->method;
    if (!pt_acl_allows(conf, c, method)) {
        pt_txn_respond_problem(txn, 403, "the consumer is not allowed to use this route");
        return PT_PLUGIN_RESPOND;
    }
    const pt_acl_rule *r = pt_acl_rule_for(conf, method);
    for (size_t i = 0; i < r->nscopes; i++)
        if (!pt_txn_has_scope(txn, pt_str_c(r->scopes[i])))
            return forbid(txn, r, "the caller lacks a scope this route requires");
    for (size_t i = 0; i < r->nclaims; i++)
        if (!pt_acl_claim_matches(pt_txn_claim(txn, pt_str_c(r->claims[i].name)), r->claims[i].values,
                                  r->claims[i].nvalues))
            return forbid(txn, r, "the caller lacks a claim value this route requires");
    return PT_PLUGIN_CONTINUE;
}

/* A non-empty list of non-empty strings into (*out, *n); `scope`: each an
 * RFC 6749 scope-token. */
static bool read_names(pt_conf_ctx *ctx, const pt_conf_node *n, const char *what, bool scope, const char ***out,
                       size_t *nout)
{
    if (!n) return true;
    if (n->kind != PT_NODE_SEQ || n->n == 0) {
        pt_conf_error(ctx, n, "acl.%s must be a non-empty list", what);
        return false;
    }
    const char **v = pt_arena_calloc(ctx->arena, n->n * sizeof(*v));
    bool ok = true;
    for (size_t i = 0; i < n->n; i++) {
        char *g;
        if (!pt_conf_string(ctx, n->vals[i], &g)) {
            ok = false;
            continue;
        }
        bool good = *g;
        /* RFC 6749 scope-token: %x21 / %x23-5B / %x5D-7E */
        for (const char *q = g; scope && *q; q++)
            if ((unsigned char)*q <= 0x20 || (unsigned char)*q >= 0x7f || *q == '"' || *q == '\\') good = false;
        if (!good) {
            pt_conf_error(ctx, n->vals[i], "acl.%s: \"%s\" is not a valid %s", what, g,
                          scope ? "scope (RFC 6749 scope-token)" : "name");
            ok = false;
            continue;
        }
        v[(*nout)++] = g;
    }
    *out = v;
    return ok;
}

/* `claims: {name: value | [values]}` into r. */
static bool read_claims(pt_conf_ctx *ctx, const pt_conf_node *n, pt_acl_rule *r)
{
    if (!n) return true;
    if (n->kind != PT_NODE_MAP || n->n == 0) {
        pt_conf_error(ctx, n, "acl.claims must map claim names to a value or a list of values");
        return false;
    }
    r->claims = pt_arena_calloc(ctx->arena, n->n * sizeof(*r->claims));
    for (size_t i = 0; i < n->n; i++) {
        pt_acl_claim *cl = &r->claims[r->nclaims++];
        cl->name = n->keys[i]->scalar;
        const pt_conf_node *v = n->vals[i];
        if (v->kind == PT_NODE_SCALAR) {
            cl->values = pt_arena_calloc(ctx->arena, sizeof(*cl->values));
            cl->values[cl->nvalues++] = v->scalar;
        } else if (!read_names(ctx, v, "claims values", false, &cl->values, &cl->nvalues)) {
            return false;
        }
        if (!*cl->name) {
            pt_conf_error(ctx, n->keys[i], "acl.claims: empty claim name");
            return false;
        }
    }
    return true;
}

/* {allow, deny, scopes, claims} into r; at least one of them. */
static bool read_rule(pt_conf_ctx *ctx, const pt_conf_node *m, const char *what, bool check_keys, pt_acl_rule *r)
{
    static const char *const keys[] = {"allow", "deny", "scopes", "claims", NULL};
    if (check_keys && !pt_conf_check_keys(ctx, m, keys, what)) return false;
    const pt_conf_node *a = pt_conf_get(m, "allow"), *d = pt_conf_get(m, "deny"), *s = pt_conf_get(m, "scopes"),
                       *cl = pt_conf_get(m, "claims");
    if (!a && !d && !s && !cl) {
        pt_conf_error(ctx, m, "%s: at least one of allow, deny, scopes or claims is required", what);
        return false;
    }
    bool ok = read_names(ctx, a, "allow", false, &r->allow, &r->nallow);
    ok = read_names(ctx, d, "deny", false, &r->deny, &r->ndeny) && ok;
    ok = read_names(ctx, s, "scopes", true, &r->scopes, &r->nscopes) && ok;
    ok = read_claims(ctx, cl, r) && ok;
    if (ok && r->nscopes) {
        size_t len = 0;
        for (size_t i = 0; i < r->nscopes; i++) len += strlen(r->scopes[i]) + 1;
        char *l = pt_arena_alloc(ctx->arena, len + 1), *o = l;
        for (size_t i = 0; i < r->nscopes; i++) {
            if (i) *o++ = ' ';
            size_t sl = strlen(r->scopes[i]);
            memcpy(o, r->scopes[i], sl);
            o += sl;
        }
        *o = '\0';
        r->scope_list = l;
    }
    return ok;
}

/* Validates {allow, deny, scopes, claims, methods: {METHOD: {...}}}. */
static void *acl_configure(pt_conf_ctx *ctx, const pt_conf_node *node)
{
    static const char *const keys[] = {"allow", "deny", "scopes", "claims", "methods", NULL};
    if (!node || node->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, node, "acl: expected a mapping with allow, deny, scopes and/or claims (and optional methods)");
        return NULL;
    }
    if (!pt_conf_check_keys(ctx, node, keys, "acl")) return NULL;
    pt_acl_conf *c = pt_arena_calloc(ctx->arena, sizeof(*c));
    const pt_conf_node *ms = pt_conf_get(node, "methods");
    bool ok = true;
    if (pt_conf_get(node, "allow") || pt_conf_get(node, "deny") || pt_conf_get(node, "scopes") ||
        pt_conf_get(node, "claims") || !ms)
        ok = read_rule(ctx, node, "acl", false, &c->dflt);
    if (ms) {
        if (ms->kind != PT_NODE_MAP || ms->n == 0) {
            pt_conf_error(ctx, ms, "acl.methods must map method names to {allow, deny, scopes, claims}");
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
