/* ipset.h — sets of IPv4/IPv6 addresses and CIDR ranges.
 *
 * Built once from a configuration list (`pt_ip_set_read`: every entry is an
 * address or CIDR; host bits set, bad prefixes and bad addresses are errors
 * at the entry's position), stored as sorted, merged inclusive ranges per
 * family in the config arena; `pt_ip_set_contains` is a binary search with
 * no allocation. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) match IPv4
 * entries. */
#ifndef PT_NET_IPSET_H
#define PT_NET_IPSET_H

#include <stdint.h>

#include "config/conf_node.h"

typedef struct {
    uint64_t hi, lo;
} pt_u128;

typedef struct {
    uint32_t first, last; /* inclusive, host order */
} pt_ip_range4;

typedef struct {
    pt_u128 first, last; /* inclusive */
} pt_ip_range6;

/* A set of addresses: ranges sorted by `first`, merged so that no two
 * overlap or touch. Arrays live in the config arena. */
typedef struct {
    pt_ip_range4 *v4;
    size_t nv4;
    pt_ip_range6 *v6;
    size_t nv6;
} pt_ip_set;

/* A parsed client address (IPv4-mapped IPv6 already folded into v4). */
typedef struct {
    bool is_v6;
    uint32_t v4;
    pt_u128 v6;
} pt_ip_addr;

/* Parses a textual client address ("192.0.2.1", "2001:db8::1",
 * "::ffff:192.0.2.1"; surrounding [] and a %zone suffix are tolerated)
 * without allocating. Returns false if it is not an address. */
bool pt_ip_addr_parse(pt_str text, pt_ip_addr *out);

/* True if `a` lies in one of the ranges of `s` (binary search). */
bool pt_ip_set_contains(const pt_ip_set *s, const pt_ip_addr *a);

/* Compiles the list node `list` into `set`; `what` names it in errors
 * (e.g. "trusted_proxies"). Returns false (errors recorded) if any entry is bad. */
bool pt_ip_set_read(pt_conf_ctx *ctx, const pt_conf_node *list, const char *what, pt_ip_set *set);

#endif
