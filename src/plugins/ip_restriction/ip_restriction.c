/* ip_restriction.c — allows or rejects requests by client address with
 * IPv4/IPv6 allow and deny lists (addresses and CIDRs), compiled by
 * net/ipset.c at configure time. */
#include "plugins/ip_restriction/ip_restriction.h"

#include <stdio.h>

bool pt_ip_restriction_allows(const pt_ip_restriction_conf *c, pt_str client)
{
    pt_ip_addr a;
    if (!pt_ip_addr_parse(client, &a)) return !c->has_allow; /* matches nothing */
    if (pt_ip_set_contains(&c->deny, &a)) return false;
    if (c->has_allow && !pt_ip_set_contains(&c->allow, &a)) return false;
    return true;
}

static pt_plugin_result ipr_on_request_headers(pt_txn *txn, const void *conf, void *state)
{
    const pt_ip_restriction_conf *c = conf;
    if (pt_ip_restriction_allows(c, pt_txn_client_addr(txn))) return PT_PLUGIN_CONTINUE;
    pt_txn_respond_problem(txn, c->status, "client address not allowed");
    return PT_PLUGIN_RESPOND;
}

/* Validates {allow, deny, status} (at least one list) and compiles the lists. */
static void *ipr_configure(pt_conf_ctx *ctx, const pt_conf_node *node)
{
    static const char *const allowed[] = {"allow", "deny", "status", NULL};
    if (!node || node->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, node, "ip_restriction: expected a mapping with 'allow' and/or 'deny'");
        return NULL;
    }
    bool ok = pt_conf_check_keys(ctx, node, allowed, "ip_restriction");
    pt_ip_restriction_conf *c = pt_arena_calloc(ctx->arena, sizeof(*c));
    c->status = PT_IPR_DEFAULT_STATUS;

    const pt_conf_node *allow = pt_conf_get(node, "allow");
    const pt_conf_node *deny = pt_conf_get(node, "deny");
    if (!allow && !deny) {
        pt_conf_error(ctx, node, "ip_restriction: at least one of 'allow' or 'deny' is required");
        ok = false;
    }
    if (allow) {
        if (pt_ip_set_read(ctx, allow, "ip_restriction.allow", &c->allow)) c->has_allow = true;
        else ok = false;
    }
    if (deny && !pt_ip_set_read(ctx, deny, "ip_restriction.deny", &c->deny)) ok = false;

    const pt_conf_node *st = pt_conf_get(node, "status");
    if (st) {
        int64_t v;
        if (pt_conf_int(ctx, st, 401, 499, &v)) c->status = (int)v;
        else ok = false;
    }
    return ok ? c : NULL;
}

const pt_plugin_type pt_plugin_ip_restriction = {
    .name = "ip_restriction",
    .configure = ipr_configure,
    .state_size = 0,
    .on_request_headers = ipr_on_request_headers,
};
