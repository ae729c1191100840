/* ip_restriction.h — private: the ip_restriction plugin's config and its
 * pure matching helpers, exposed for unit tests.
 *
 *   plugins:
 *     - ip_restriction:
 *         allow: [10.0.0.0/8, "2001:db8::/32", 127.0.0.1]   # optional
 *         deny:  [10.1.2.0/24]                               # optional
 *         status: 403                                        # optional, 401..499
 *
 * Semantics, for the client address pt_txn_client_addr(txn) (textual IPv4 or
 * IPv6): if it matches `deny` the request is rejected; else if `allow` is
 * non-empty and the address does not match it, the request is rejected;
 * else it continues. A rejection answers pt_txn_respond_problem(txn, status,
 * "client address not allowed") (status defaults to 403) and nothing goes
 * upstream. At least one of allow/deny is required; a list given must not
 * be empty.
 *
 * Entries: an address (same as /32 or /128) or a CIDR whose host bits are
 * zero. An IPv4-mapped IPv6 client (::ffff:a.b.c.d) is matched as the IPv4
 * address a.b.c.d. An IPv6 entry inside ::ffff:0:0/96 (prefix >= 96) is
 * an IPv4 entry written in mapped form and is stored as one; every other
 * IPv6 entry (even ::/0) matches IPv6 clients only. A client address that
 * cannot be parsed matches no entry (so it passes a deny-only list and is
 * rejected by an allow list).
 *
 * At configure time every list is turned into two sorted arrays of
 * non-overlapping, non-adjacent [first, last] ranges (one per family);
 * a request costs one inet_pton into a stack buffer and a binary search,
 * with no allocation. */
#ifndef PT_PLUGINS_IP_RESTRICTION_H
#define PT_PLUGINS_IP_RESTRICTION_H

#include <stdint.h>

#include "plugin/plugin.h"

#define PT_IPR_DEFAULT_STATUS 403

/* The plugin instance's configuration (lists compiled to ranges). */
typedef struct {
    pt_ip_set allow;
    pt_ip_set deny;
    bool has_allow; /* `allow` was configured (it is then non-empty) */
    int status;     /* 401..499 */
} pt_ip_restriction_conf;

extern const pt_plugin_type pt_plugin_ip_restriction;

/* The plugin's decision for a textual client address: true = let it
 * through, false = reject (see the semantics above). */
bool pt_ip_restriction_allows(const pt_ip_restriction_conf *c, pt_str client);

#endif
