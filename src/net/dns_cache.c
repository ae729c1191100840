/* dns_cache.c — see dns_cache.h. */
#include "net/dns_cache.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

#define RETRY_FIRST_MS 1000u
#define RETRY_MAX_MS 30000u

void pt_dns_conf_defaults(pt_dns_conf *c)
{
    *c = (pt_dns_conf){
        .servers = NULL,
        .timeout_ms = 2000,
        .attempts = 2,
        .min_ttl_ms = 1000,
        .max_ttl_ms = 3600u * 1000,
    };
}

bool pt_dns_conf_same_channel(const pt_dns_conf *a, const pt_dns_conf *b)
{
    if (a->timeout_ms != b->timeout_ms || a->attempts != b->attempts) return false;
    if (!a->servers || !b->servers) return a->servers == b->servers;
    return strcmp(a->servers, b->servers) == 0;
}

uint64_t pt_dns_ttl_ms(uint32_t ttl_s, const pt_dns_conf *c)
{
    uint64_t ms = (uint64_t)ttl_s * 1000;
    if (ms < c->min_ttl_ms) ms = c->min_ttl_ms;
    if (ms > c->max_ttl_ms) ms = c->max_ttl_ms;
    return ms;
}

uint64_t pt_dns_retry_ms(uint32_t failures)
{
    if (failures == 0) return 0;
    if (failures > 6) return RETRY_MAX_MS;
    uint64_t ms = (uint64_t)RETRY_FIRST_MS << (failures - 1);
    return ms > RETRY_MAX_MS ? RETRY_MAX_MS : ms;
}

socklen_t pt_dns_addr_sockaddr(const pt_dns_addr *a, uint16_t port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (a->family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        memcpy(&s6->sin6_addr, a->ip, 16);
        s6->sin6_scope_id = a->scope;
        return sizeof(*s6);
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons(port);
    memcpy(&s4->sin_addr, a->ip, 4);
    return sizeof(*s4);
}

bool pt_dns_addr_from_sockaddr(pt_dns_addr *a, const struct sockaddr *sa)
{
    memset(a, 0, sizeof(*a));
    if (sa->sa_family == AF_INET) {
        a->family = AF_INET;
        memcpy(a->ip, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        a->family = AF_INET6;
        memcpy(a->ip, &s6->sin6_addr, 16);
        a->scope = s6->sin6_scope_id;
        return true;
    }
    return false;
}

bool pt_dns_addr_eq(const pt_dns_addr *a, const pt_dns_addr *b)
{
    if (a->family != b->family) return false;
    if (a->family == AF_INET) return memcmp(a->ip, b->ip, 4) == 0;
    return memcmp(a->ip, b->ip, 16) == 0 && a->scope == b->scope;
}

const char *pt_dns_addr_text(const pt_dns_addr *a, char *buf, size_t cap)
{
    if (!inet_ntop(a->family == AF_INET6 ? AF_INET6 : AF_INET, a->ip, buf, (socklen_t)cap)) snprintf(buf, cap, "?");
    return buf;
}

/* Same addresses, in any order. */
static bool same_set(const pt_dns_entry *e, const pt_dns_addr *v, uint32_t n)
{
    if (e->naddrs != n) return false;
    for (uint32_t i = 0; i < n; i++)
        if (!pt_dns_entry_has(e, &v[i])) return false;
    for (uint32_t i = 0; i < e->naddrs; i++) {
        bool found = false;
        for (uint32_t j = 0; j < n && !found; j++) found = pt_dns_addr_eq(&e->addrs[i], &v[j]);
        if (!found) return false;
    }
    return true;
}

bool pt_dns_entry_answer(pt_dns_entry *e, const pt_dns_addr *v, uint32_t n, uint64_t now, uint64_t ttl_ms,
                         uint32_t *serials)
{
    PT_ASSERT(n > 0);
    e->answered_at = now;
    e->expires = now + ttl_ms;
    e->failures = 0;
    e->retry_at = 0;
    if (e->serial && same_set(e, v, n)) return false;
    /* Copy without duplicates, the family of the first address first: those
     * take turns; the others are kept (for the record) but not used. */
    pt_dns_addr *nv = pt_xcalloc(n, sizeof(*nv));
    uint32_t k = 0;
    for (int pass = 0; pass < 2; pass++)
        for (uint32_t i = 0; i < n; i++) {
            if ((v[i].family == v[0].family) != (pass == 0)) continue;
            bool dup = false;
            for (uint32_t j = 0; j < k && !dup; j++) dup = pt_dns_addr_eq(&nv[j], &v[i]);
            if (!dup) nv[k++] = v[i];
        }
    uint32_t nrot = 0;
    while (nrot < k && nv[nrot].family == nv[0].family) nrot++;
    free(e->addrs);
    free(e->down_until);
    e->addrs = nv;
    e->down_until = pt_xcalloc(k, sizeof(*e->down_until));
    e->naddrs = k;
    e->nrot = nrot;
    e->cursor = 0;
    e->serial = ++*serials;
    if (e->serial == 0) e->serial = ++*serials; /* wrapped: 0 means "unstamped" */
    return true;
}

bool pt_dns_entry_seed(pt_dns_entry *e, const pt_dns_answer *a, const pt_dns_conf *c, uint32_t *serials)
{
    if (!a->n || (e->serial && a->at_ms <= e->answered_at)) return false;
    return pt_dns_entry_answer(e, a->v, a->n, a->at_ms, pt_dns_ttl_ms(a->ttl_s, c), serials);
}

void pt_dns_entry_failed(pt_dns_entry *e, uint64_t now)
{
    e->failures++;
    e->retry_at = now + pt_dns_retry_ms(e->failures);
}

bool pt_dns_entry_pick(pt_dns_entry *e, uint64_t now, pt_dns_addr *out)
{
    if (!e->nrot) return false;
    for (uint32_t i = 0; i < e->nrot; i++) {
        uint32_t k = (e->cursor + i) % e->nrot;
        if (e->down_until[k] <= now) {
            e->cursor = k + 1;
            *out = e->addrs[k];
            return true;
        }
    }
    for (uint32_t k = e->nrot; k < e->naddrs; k++)
        if (e->down_until[k] <= now) {
            *out = e->addrs[k];
            return true;
        }
    uint32_t k = e->cursor % e->nrot; /* all down: keep turning */
    e->cursor = k + 1;
    *out = e->addrs[k];
    return true;
}

void pt_dns_entry_mark_down(pt_dns_entry *e, const pt_dns_addr *a, uint64_t now)
{
    for (uint32_t i = 0; i < e->naddrs; i++)
        if (pt_dns_addr_eq(&e->addrs[i], a)) e->down_until[i] = now + PT_DNS_DOWN_MS;
}

bool pt_dns_entry_has(const pt_dns_entry *e, const pt_dns_addr *a)
{
    for (uint32_t i = 0; i < e->naddrs; i++)
        if (pt_dns_addr_eq(&e->addrs[i], a)) return true;
    return false;
}

bool pt_dns_stamp_valid(const pt_dns_entry *e, pt_dns_stamp *s, const struct sockaddr *load_addr)
{
    if (s->serial == e->serial) return true;
    if (!s->serial && !pt_dns_addr_from_sockaddr(&s->addr, load_addr)) return false;
    if (!pt_dns_entry_has(e, &s->addr)) return false;
    s->serial = e->serial;
    return true;
}

void pt_dns_entry_free_addrs(pt_dns_entry *e)
{
    free(e->addrs);
    free(e->down_until);
    e->addrs = NULL;
    e->down_until = NULL;
    e->naddrs = e->nrot = 0;
}

/* ------------------------------------------------------------------ cache */

pt_dns_entry *pt_dns_cache_find(pt_dns_cache *c, const char *host)
{
    for (uint32_t i = 0; i < c->n; i++)
        if (strcmp(c->v[i]->host, host) == 0) return c->v[i];
    return NULL;
}

pt_dns_entry *pt_dns_cache_add(pt_dns_cache *c, const char *host)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 8;
        c->v = pt_xrealloc(c->v, c->cap * sizeof(*c->v));
    }
    pt_dns_entry *e = pt_xcalloc(1, sizeof(*e));
    e->host = pt_xstrndup(host, strlen(host));
    c->v[c->n++] = e;
    return e;
}

void pt_dns_cache_remove(pt_dns_cache *c, pt_dns_entry *e)
{
    for (uint32_t i = 0; i < c->n; i++)
        if (c->v[i] == e) {
            c->v[i] = c->v[--c->n];
            break;
        }
    pt_dns_entry_free_addrs(e);
    free(e->host);
    free(e);
}

void pt_dns_cache_free(pt_dns_cache *c)
{
    while (c->n) pt_dns_cache_remove(c, c->v[0]);
    free(c->v);
    c->v = NULL;
    c->cap = 0;
}
