/* acl.h — private: the acl plugin (authorization by consumer group).
 *
 *   plugins:
 *     - key_auth: {}
 *     - acl:
 *         allow: [staff]             # the consumer must be in one of these groups
 *         deny: [suspended]          # and in none of these (deny wins)
 *         methods:                   # optional: per method, replaces allow/deny
 *           DELETE: {allow: [admins]}
 *
 * Runs after the route's authentication plugins: it settles
 * authentication first (pt_txn_auth_settle: anonymous consumer, or 401
 * with the challenges), then a request with no consumer gets 401, a known
 * consumer who is not allowed 403 (problem+json both). */
#ifndef PT_PLUGINS_ACL_H
#define PT_PLUGINS_ACL_H

#include "plugin/plugin.h"

typedef struct {
    const char **allow;
    size_t nallow;
    const char **deny;
    size_t ndeny;
} pt_acl_rule;

typedef struct {
    pt_acl_rule dflt;
    pt_acl_rule by_method[PT_METHOD__COUNT];
    bool has_method[PT_METHOD__COUNT];
} pt_acl_conf;

extern const pt_plugin_type pt_plugin_acl;

/* Whether consumer `c` may make a request with `method` (c non-NULL). */
bool pt_acl_allows(const pt_acl_conf *conf, const pt_consumer *c, pt_method method);

#endif
