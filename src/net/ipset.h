/* ipset.h — sets of IPv4/IPv6 addresses and CIDR ranges.
 *
 * Built once from a list of addresses and CIDRs (pt_ip_cidr_parse each,
 * then pt_ip_set_build; config/config.h:pt_ip_set_read does both for a
 * configuration list, with positioned errors), stored as sorted, merged
 * inclusive ranges per family in the config arena; `pt_ip_set_contains` is a binary search with
 * no allocation. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) match IPv4
 * entries. */
#ifndef PT_NET_IPSET_H
#define PT_NET_IPSET_H

#include <stdint.h>

#include "core/arena.h"
#include "core/common.h"

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

/* One address ("192.0.2.1": a /32) or CIDR ("10.0.0.0/8") as a range of
 * its family. */
typedef struct {
    bool is_v6;
    pt_ip_range4 r4; /* !is_v6 (an IPv4-mapped IPv6 entry becomes IPv4) */
    pt_ip_range6 r6; /* is_v6 */
} pt_ip_cidr;

/* Parses an address or CIDR. False with the reason in err (e.g. "host bits
 * set; did you mean 10.0.0.0/8?") when it is not a valid address, the
 * prefix length is bad, or host bits are set. */
bool pt_ip_cidr_parse(pt_str text, pt_ip_cidr *out, char *err, size_t errcap);

/* Builds `set` from v[0, n): sorted, merged ranges, arrays allocated in `a`. */
void pt_ip_set_build(const pt_ip_cidr *v, size_t n, pt_arena *a, pt_ip_set *set);

#endif
