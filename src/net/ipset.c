/* ipset.c — IPv4/IPv6 address sets from lists of addresses and CIDRs,
 * compiled at configuration time into sorted, merged ranges per family; a
 * lookup is one inet_pton and a binary search. Used by the ip_restriction
 * plugin and by trusted_proxies. See ipset.h. */
#include "net/ipset.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ 128-bit helpers */

static int u128_cmp(pt_u128 a, pt_u128 b)
{
    if (a.hi != b.hi) return a.hi < b.hi ? -1 : 1;
    if (a.lo != b.lo) return a.lo < b.lo ? -1 : 1;
    return 0;
}

static bool u128_is_max(pt_u128 a) { return a.hi == UINT64_MAX && a.lo == UINT64_MAX; }

/* a + 1; the caller ensures a is not the maximum. */
static pt_u128 u128_inc(pt_u128 a)
{
    pt_u128 r = {a.hi, a.lo + 1};
    if (r.lo == 0) r.hi++;
    return r;
}

/* 16 network-order bytes -> host integer. */
static pt_u128 u128_from_bytes(const unsigned char b[16])
{
    pt_u128 r = {0, 0};
    for (int i = 0; i < 8; i++) r.hi = (r.hi << 8) | b[i];
    for (int i = 8; i < 16; i++) r.lo = (r.lo << 8) | b[i];
    return r;
}

static void u128_to_bytes(pt_u128 v, unsigned char b[16])
{
    for (int i = 7; i >= 0; i--, v.hi >>= 8) b[i] = (unsigned char)(v.hi & 0xff);
    for (int i = 15; i >= 8; i--, v.lo >>= 8) b[i] = (unsigned char)(v.lo & 0xff);
}

/* The network mask of a /plen IPv6 prefix (plen 0..128). */
static pt_u128 u128_mask(unsigned plen)
{
    pt_u128 m;
    m.hi = plen >= 64 ? UINT64_MAX : plen == 0 ? 0 : UINT64_MAX << (64 - plen);
    m.lo = plen <= 64 ? 0 : UINT64_MAX << (128 - plen);
    return m;
}

static uint32_t v4_mask(unsigned plen) { return plen == 0 ? 0 : UINT32_MAX << (32 - plen); }

static uint32_t v4_from_bytes(const unsigned char b[4])
{
    return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | (uint32_t)b[3];
}

/* True if the 16 bytes are an IPv4-mapped IPv6 address (::ffff:a.b.c.d). */
static bool is_v4_mapped(const unsigned char b[16])
{
    static const unsigned char prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return memcmp(b, prefix, sizeof(prefix)) == 0;
}

/* ------------------------------------------------------------ request side */

bool pt_ip_addr_parse(pt_str text, pt_ip_addr *out)
{
    const char *p = text.p;
    size_t n = p ? text.n : 0;
    if (n >= 2 && p[0] == '[' && p[n - 1] == ']') {
        p++;
        n -= 2;
    }
    const char *zone = n ? memchr(p, '%', n) : NULL;
    if (zone) n = (size_t)(zone - p);
    char buf[INET6_ADDRSTRLEN];
    if (n == 0 || n >= sizeof(buf) || memchr(p, '\0', n)) return false;
    memcpy(buf, p, n);
    buf[n] = '\0';

    unsigned char bytes[16];
    if (memchr(buf, ':', n)) {
        if (inet_pton(AF_INET6, buf, bytes) != 1) return false;
        if (is_v4_mapped(bytes)) {
            out->is_v6 = false;
            out->v4 = v4_from_bytes(bytes + 12);
        } else {
            out->is_v6 = true;
            out->v6 = u128_from_bytes(bytes);
        }
        return true;
    }
    if (inet_pton(AF_INET, buf, bytes) != 1) return false;
    out->is_v6 = false;
    out->v4 = v4_from_bytes(bytes);
    return true;
}

bool pt_ip_set_contains(const pt_ip_set *s, const pt_ip_addr *a)
{
    /* Find the number of ranges whose first <= a (upper bound), then check
     * the last of them: ranges are sorted and disjoint. */
    size_t lo = 0, hi;
    if (!a->is_v6) {
        hi = s->nv4;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (s->v4[mid].first <= a->v4) lo = mid + 1;
            else hi = mid;
        }
        return lo > 0 && a->v4 <= s->v4[lo - 1].last;
    }
    hi = s->nv6;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (u128_cmp(s->v6[mid].first, a->v6) <= 0) lo = mid + 1;
        else hi = mid;
    }
    return lo > 0 && u128_cmp(a->v6, s->v6[lo - 1].last) <= 0;
}

/* ------------------------------------------------------------ building */

bool pt_ip_cidr_parse(pt_str text_in, pt_ip_cidr *out, char *err, size_t errcap)
{
    const char *text = text_in.p ? text_in.p : "";
    size_t n = text_in.p ? text_in.n : 0;
    const char *slash = n ? memchr(text, '/', n) : NULL;
    size_t addr_len = slash ? (size_t)(slash - text) : n;
    char buf[INET6_ADDRSTRLEN];
    bool v6 = false;
    if (addr_len == 0 || addr_len >= sizeof(buf) || memchr(text, '\0', n)) goto bad_addr;
    memcpy(buf, text, addr_len);
    buf[addr_len] = '\0';

    v6 = memchr(buf, ':', addr_len) != NULL;
    unsigned char bytes[16];
    if (inet_pton(v6 ? AF_INET6 : AF_INET, buf, bytes) != 1) goto bad_addr;
    unsigned max_len = v6 ? 128 : 32, plen = max_len;
    if (slash) {
        const char *d = slash + 1;
        size_t dn = n - addr_len - 1;
        if (dn == 0 || dn > 3) goto bad_len;
        plen = 0;
        for (size_t i = 0; i < dn; i++) {
            if (d[i] < '0' || d[i] > '9') goto bad_len;
            plen = plen * 10 + (unsigned)(d[i] - '0');
        }
        if (plen > max_len) {
            snprintf(err, errcap, "prefix length %u out of range (0..%u for %s)", plen, max_len, v6 ? "IPv6" : "IPv4");
            return false;
        }
    }

    memset(out, 0, sizeof(*out));
    if (v6) {
        pt_u128 addr = u128_from_bytes(bytes), m = u128_mask(plen);
        pt_u128 first = {addr.hi & m.hi, addr.lo & m.lo};
        if (u128_cmp(first, addr) != 0) {
            unsigned char nb[16];
            char shown[INET6_ADDRSTRLEN];
            u128_to_bytes(first, nb);
            inet_ntop(AF_INET6, nb, shown, sizeof(shown));
            snprintf(err, errcap, "host bits set; did you mean %s/%u?", shown, plen);
            return false;
        }
        if (plen >= 96 && is_v4_mapped(bytes)) {
            /* ::ffff:a.b.c.d/96+n is the IPv4 entry a.b.c.d/n. */
            unsigned p4 = plen - 96;
            uint32_t a4 = v4_from_bytes(bytes + 12);
            out->r4 = (pt_ip_range4){a4, a4 | ~v4_mask(p4)};
        } else {
            pt_u128 last = {addr.hi | ~m.hi, addr.lo | ~m.lo};
            out->is_v6 = true;
            out->r6 = (pt_ip_range6){first, last};
        }
        return true;
    }
    uint32_t a4 = v4_from_bytes(bytes), m4 = v4_mask(plen);
    if ((a4 & m4) != a4) {
        unsigned char nb[4];
        char shown[INET_ADDRSTRLEN];
        uint32_t f = a4 & m4;
        nb[0] = (unsigned char)(f >> 24);
        nb[1] = (unsigned char)(f >> 16);
        nb[2] = (unsigned char)(f >> 8);
        nb[3] = (unsigned char)f;
        inet_ntop(AF_INET, nb, shown, sizeof(shown));
        snprintf(err, errcap, "host bits set; did you mean %s/%u?", shown, plen);
        return false;
    }
    out->r4 = (pt_ip_range4){a4, a4 | ~m4};
    return true;

bad_addr:
    snprintf(err, errcap, "not a valid IPv4 or IPv6 address or CIDR");
    return false;
bad_len:
    snprintf(err, errcap, "invalid prefix length (expected /0../%u)", v6 ? 128u : 32u);
    return false;
}

static int cmp_range4(const void *a, const void *b)
{
    const pt_ip_range4 *x = a, *y = b;
    if (x->first != y->first) return x->first < y->first ? -1 : 1;
    return x->last < y->last ? -1 : x->last > y->last;
}

static int cmp_range6(const void *a, const void *b)
{
    const pt_ip_range6 *x = a, *y = b;
    int c = u128_cmp(x->first, y->first);
    return c ? c : u128_cmp(x->last, y->last);
}

/* Sorts `r[0..n)` and merges overlapping or adjacent ranges in place;
 * returns the new count. */
static size_t merge4(pt_ip_range4 *r, size_t n)
{
    if (n == 0) return 0;
    qsort(r, n, sizeof(*r), cmp_range4);
    size_t out = 0;
    for (size_t i = 1; i < n; i++) {
        pt_ip_range4 *cur = &r[out];
        if (cur->last == UINT32_MAX || r[i].first <= cur->last + 1) {
            if (r[i].last > cur->last) cur->last = r[i].last;
        } else {
            r[++out] = r[i];
        }
    }
    return out + 1;
}

static size_t merge6(pt_ip_range6 *r, size_t n)
{
    if (n == 0) return 0;
    qsort(r, n, sizeof(*r), cmp_range6);
    size_t out = 0;
    for (size_t i = 1; i < n; i++) {
        pt_ip_range6 *cur = &r[out];
        if (u128_is_max(cur->last) || u128_cmp(r[i].first, u128_inc(cur->last)) <= 0) {
            if (u128_cmp(r[i].last, cur->last) > 0) cur->last = r[i].last;
        } else {
            r[++out] = r[i];
        }
    }
    return out + 1;
}

void pt_ip_set_build(const pt_ip_cidr *v, size_t n, pt_arena *a, pt_ip_set *set)
{
    /* Per-family arrays of at most n ranges (temporary), sorted and merged,
     * then copied into the arena at their final size. */
    pt_ip_range4 *v4 = pt_xcalloc(n ? n : 1, sizeof(*v4));
    pt_ip_range6 *v6 = pt_xcalloc(n ? n : 1, sizeof(*v6));
    size_t nv4 = 0, nv6 = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i].is_v6) v6[nv6++] = v[i].r6;
        else v4[nv4++] = v[i].r4;
    }
    set->nv4 = merge4(v4, nv4);
    set->nv6 = merge6(v6, nv6);
    set->v4 = pt_arena_alloc(a, (set->nv4 ? set->nv4 : 1) * sizeof(*set->v4));
    set->v6 = pt_arena_alloc(a, (set->nv6 ? set->nv6 : 1) * sizeof(*set->v6));
    if (set->nv4) memcpy(set->v4, v4, set->nv4 * sizeof(*set->v4));
    if (set->nv6) memcpy(set->v6, v6, set->nv6 * sizeof(*set->v6));
    free(v4);
    free(v6);
}
