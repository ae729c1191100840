/* dns_cache.h — the per-worker DNS cache of upstream host names, as pure
 * data and arithmetic (no sockets, no loop, no c-ares): what an answer
 * becomes (addresses, expiry from its TTL clamped to the configured bounds),
 * when a refresh is due, what a failed refresh does (the last good answer
 * stays; retries back off), which address a new connection uses (rotation
 * within the preferred address family) and whether a pooled connection still
 * belongs to the name's current addresses. net/dns.c drives it with c-ares;
 * docs/dns.md explains the choices.
 *
 * Times are milliseconds on the monotonic clock (pt_loop_now()). */
#ifndef PT_NET_DNS_CACHE_H
#define PT_NET_DNS_CACHE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

/* One IP address of a name (no port). */
typedef struct {
    uint16_t family;             /* AF_INET or AF_INET6 */
    uint8_t ip[16];              /* network order; the first 4 bytes for AF_INET */
    uint32_t scope;              /* IPv6 scope id */
} pt_dns_addr;

/* A good answer: its addresses (never empty), its TTL and when it came. */
typedef struct {
    pt_dns_addr *v;
    uint32_t n;
    uint32_t ttl_s;              /* smallest TTL of the records, as answered */
    uint64_t at_ms;              /* monotonic time of the answer */
} pt_dns_answer;

/* The `dns:` settings of a configuration (see docs/configuration.md). */
typedef struct {
    char *servers;               /* "ip:port,[v6]:port" for c-ares; NULL = /etc/resolv.conf */
    uint64_t timeout_ms;         /* first attempt (c-ares doubles it per round); default 2s */
    uint32_t attempts;           /* rounds over the servers; default 2 */
    uint64_t min_ttl_ms;         /* answers are kept at least this long; default 1s */
    uint64_t max_ttl_ms;         /* and at most this long; default 1h */
} pt_dns_conf;

void pt_dns_conf_defaults(pt_dns_conf *c);
/* Same resolver settings (servers, timeout, attempts): one c-ares channel
 * serves both. TTL bounds do not need a new channel. */
bool pt_dns_conf_same_channel(const pt_dns_conf *a, const pt_dns_conf *b);

/* The lifetime of an answer whose TTL is ttl_s: clamped to [min_ttl, max_ttl]. */
uint64_t pt_dns_ttl_ms(uint32_t ttl_s, const pt_dns_conf *c);
/* The wait before retrying after `failures` consecutive failed refreshes
 * (>= 1): 1s, 2s, 4s ... at most 30s. */
uint64_t pt_dns_retry_ms(uint32_t failures);

/* Builds the socket address of `a` with `port`; returns its length. */
socklen_t pt_dns_addr_sockaddr(const pt_dns_addr *a, uint16_t port, struct sockaddr_storage *ss);
/* The IP of a socket address (port ignored); false for other families. */
bool pt_dns_addr_from_sockaddr(pt_dns_addr *a, const struct sockaddr *sa);
bool pt_dns_addr_eq(const pt_dns_addr *a, const pt_dns_addr *b);
/* "10.0.0.1" / "2001:db8::1" into buf (at least 64 bytes). */
const char *pt_dns_addr_text(const pt_dns_addr *a, char *buf, size_t cap);

/* One host name of a worker's cache. Fields are read by net/dns.c and the
 * tests; change them only through the functions below. */
typedef struct pt_dns_entry {
    char *host;
    pt_dns_addr *addrs;          /* the last good answer: preferred family first */
    uint64_t *down_until;        /* [naddrs]: a connect to it failed; skipped until then */
    uint32_t naddrs;
    uint32_t nrot;               /* addrs[0..nrot) (the preferred family) take turns */
    uint32_t cursor;             /* rotation */
    uint32_t serial;             /* changes whenever the address set changes (never 0) */
    uint64_t answered_at;        /* monotonic ms of the last good answer */
    uint64_t expires;            /* a refresh is due from then on */
    uint64_t retry_at;           /* after a failure: no new query before */
    uint32_t failures;           /* consecutive failed refreshes */
    uint32_t refs;               /* upstream targets using it (worker generations) */
    bool querying;               /* a query is in flight */
} pt_dns_entry;

/* A connection's note of the address it was opened to (pt_dns_stamp_valid).
 * Zeroed: opened to the target's load-time address. */
typedef struct {
    uint32_t serial;             /* the entry's serial when last checked */
    pt_dns_addr addr;
} pt_dns_stamp;

/* A good answer at `now` with a lifetime of ttl_ms (already clamped);
 * *serials provides a new serial when the address set changed (the worker's
 * counter, so serials are unique across names). Resets the failure count.
 * Returns true when the address set changed. n must be > 0. */
bool pt_dns_entry_answer(pt_dns_entry *e, const pt_dns_addr *v, uint32_t n, uint64_t now, uint64_t ttl_ms,
                         uint32_t *serials);
/* A load-time answer (a configuration's): taken only if it is newer than
 * what the entry has. Returns true when the address set changed. */
bool pt_dns_entry_seed(pt_dns_entry *e, const pt_dns_answer *a, const pt_dns_conf *c, uint32_t *serials);
/* A refresh failed (timeout, SERVFAIL, no such name, no address): the last
 * good answer stays in use; the next query waits pt_dns_retry_ms. */
void pt_dns_entry_failed(pt_dns_entry *e, uint64_t now);
/* A refresh should start now: expired, nothing in flight, not backing off. */
static inline bool pt_dns_entry_due(const pt_dns_entry *e, uint64_t now)
{
    return now >= e->expires && now >= e->retry_at && !e->querying;
}
/* The address for a new connection: the next of the preferred family in
 * rotation that is not marked down, else the first other-family address not
 * down, else the next in rotation anyway. False if the entry has none. */
bool pt_dns_entry_pick(pt_dns_entry *e, uint64_t now, pt_dns_addr *out);
/* A connect to `a` failed (refused, unreachable, timed out): new connections
 * avoid it for PT_DNS_DOWN_MS, or until the address set changes. */
#define PT_DNS_DOWN_MS 10000u
void pt_dns_entry_mark_down(pt_dns_entry *e, const pt_dns_addr *a, uint64_t now);
bool pt_dns_entry_has(const pt_dns_entry *e, const pt_dns_addr *a);
/* Whether a connection stamped `s` may still be used for the name: its
 * address is one of the current ones. `load_addr`: the target's load-time
 * address, which a zeroed stamp stands for (a connection opened to it). The
 * stamp remembers a positive check, so a steady answer costs one compare. */
bool pt_dns_stamp_valid(const pt_dns_entry *e, pt_dns_stamp *s, const struct sockaddr *load_addr);
void pt_dns_entry_free_addrs(pt_dns_entry *e);

/* The names of one worker: a small list searched by name only when a
 * configuration generation is attached (never per request). */
typedef struct {
    pt_dns_entry **v;
    uint32_t n, cap;
    uint32_t serials;            /* last serial handed out */
} pt_dns_cache;

pt_dns_entry *pt_dns_cache_find(pt_dns_cache *c, const char *host);
/* A new entry for `host` (no addresses yet, refs 0). */
pt_dns_entry *pt_dns_cache_add(pt_dns_cache *c, const char *host);
/* Removes and frees the entry. */
void pt_dns_cache_remove(pt_dns_cache *c, pt_dns_entry *e);
void pt_dns_cache_free(pt_dns_cache *c);

#endif
