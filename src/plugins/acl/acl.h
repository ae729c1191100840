/* acl.h — private: the acl plugin (authorization by consumer group, and by
 * the scopes and claims authentication left on the request).
 *
 *   plugins:
 *     - jwt: {...}
 *     - acl:
 *         allow: [staff]             # the consumer must be in one of these groups
 *         deny: [suspended]          # and in none of these (deny wins)
 *         scopes: [orders:read]      # every one of these scopes (jwt, introspection)
 *         claims:                    # each claim must have one of the values
 *           tenant: acme
 *           amr: [mfa, hwk]          # an array claim matches when it holds one of them
 *         methods:                   # optional: per method, replaces the rule above
 *           DELETE: {allow: [admins], scopes: [orders:write]}
 *
 * Runs after the route's authentication plugins: it settles
 * authentication first (pt_txn_auth_settle: anonymous consumer, or 401
 * with the challenges), then a request with no consumer gets 401, a known
 * consumer who is not allowed 403 (problem+json both). A caller named by
 * a Bearer method (jwt, oauth2_introspection) that lacks a scope or claim
 * also gets `WWW-Authenticate: Bearer error="insufficient_scope"` (with
 * `scope="..."` listing the rule's scopes) — RFC 6750 §3.1. */
#ifndef PT_PLUGINS_ACL_H
#define PT_PLUGINS_ACL_H

#include "plugin/plugin.h"

/* One required claim: its name and the accepted values (any of them). */
typedef struct {
    const char *name;
    const char **values;
    size_t nvalues;
} pt_acl_claim;

typedef struct {
    const char **allow;
    size_t nallow;
    const char **deny;
    size_t ndeny;
    const char **scopes;        /* all required */
    size_t nscopes;
    const char *scope_list;     /* the scopes space-separated (the challenge's scope="") */
    pt_acl_claim *claims;       /* all required */
    size_t nclaims;
} pt_acl_rule;

typedef struct {
    pt_acl_rule dflt;
    pt_acl_rule by_method[PT_METHOD__COUNT];
    bool has_method[PT_METHOD__COUNT];
} pt_acl_conf;

extern const pt_plugin_type pt_plugin_acl;

/* The rule that applies to `method`. */
const pt_acl_rule *pt_acl_rule_for(const pt_acl_conf *conf, pt_method method);
/* Whether consumer `c` may make a request with `method` by its groups (c non-NULL). */
bool pt_acl_allows(const pt_acl_conf *conf, const pt_consumer *c, pt_method method);
/* Whether a claim's value as authentication set it (a string, or compact
 * JSON for other types: an array matches when one of its string, number
 * or boolean elements equals a value) is one of `values`. */
bool pt_acl_claim_matches(pt_str have, const char *const *values, size_t nvalues);

#endif
