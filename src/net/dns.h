/* dns.h — resolution of upstream host names with c-ares, never blocking a
 * worker (see docs/dns.md).
 *
 * Each worker has one pt_dns: a c-ares channel driven by the worker's loop
 * (its sockets are pt_io, its timeouts a pt_timer) and a cache of the host
 * names its upstream targets use (net/dns_cache.h). A target whose host is
 * a name carries the answer the configuration got when it was loaded; that
 * seeds the cache, so a worker always has an address to connect to. When an
 * answer's TTL has passed, the next use starts a refresh in the background
 * and keeps using the last good answer meanwhile (stale-while-revalidate);
 * a failed refresh keeps it too, and is retried with backoff.
 *
 * pt_dns_resolve_now() is the blocking variant for the main thread (loading
 * a configuration): the same c-ares settings, so both agree. */
#ifndef PT_NET_DNS_H
#define PT_NET_DNS_H

#include <signal.h>

#include "core/arena.h"
#include "core/loop.h"
#include "net/dns_cache.h"

typedef struct pt_dns pt_dns;

/* Created before the worker serves (any thread); then used from the loop's
 * thread only. pt_dns_free after the loop stopped. */
pt_dns *pt_dns_new(pt_loop *loop, const pt_dns_conf *conf);
void pt_dns_free(pt_dns *d);
/* A new configuration's `dns:` settings: TTL bounds apply to the next
 * answers; other servers or timeouts replace the channel (queries in flight
 * are dropped and start again on next use). */
void pt_dns_configure(pt_dns *d, const pt_dns_conf *conf);

/* The cache entry for `host`, with one more reference, seeded with
 * `initial` (a configuration's answer) when that is newer than what the
 * worker knows. */
pt_dns_entry *pt_dns_acquire(pt_dns *d, const char *host, const pt_dns_answer *initial);
void pt_dns_release(pt_dns *d, pt_dns_entry *e);
/* Called whenever the entry is used (an exchange is opened): starts a
 * background refresh if its answer expired. Never waits. */
void pt_dns_touch(pt_dns *d, pt_dns_entry *e);
/* A connection opened with stamp `st` failed to connect: its address is
 * avoided for a while (PT_DNS_DOWN_MS). d may be NULL. */
void pt_dns_connect_failed(pt_dns *d, const pt_dns_stamp *st);

/* The address to open a new connection to: the entry's next address with
 * `port` in *ss, its length returned, and recorded in *st for
 * pt_dns_stamp_valid. 0 when the entry has no address yet (connect to the
 * load-time address), *st then zeroed. */
socklen_t pt_dns_connect_addr(pt_dns *d, pt_dns_entry *e, uint16_t port, struct sockaddr_storage *ss,
                              pt_dns_stamp *st);

/* Blocking resolution of `host` (A and AAAA) with the settings `conf`, for
 * the main thread: the answer in `a`'s memory. False with a message in err. */
bool pt_dns_resolve_now(const pt_dns_conf *conf, const char *host, pt_arena *a, pt_dns_answer *out, char *err,
                        size_t errcap);

/* ---- SRV records (RFC 2782), for upstream targets by service name ----
 * Resolved on the main thread only (loading a configuration, and the
 * server's refresh of SRV names by TTL); docs/dns.md "SRV records". */

/* One SRV record: the target host (lower case, no trailing dot), its port
 * and weight, as answered. */
typedef struct {
    char *host;
    uint16_t port;
    uint16_t weight;             /* 0..65535 as answered (the loader clamps it) */
} pt_dns_srv;

/* The records of an SRV answer that are used: those of the lowest priority
 * value (records with a higher number are backups and never used), sorted by
 * host, port, weight, duplicates removed. Records that cannot be targets
 * are dropped before the priority is chosen: a "." target (service not
 * offered), port 0, a host that is neither a plain DNS name (letters,
 * digits, '-', '_', dots) nor an IP address. */
typedef struct {
    pt_dns_srv *v;
    uint32_t n;                  /* > 0 in a good answer */
    uint16_t priority;           /* the priority value of these records */
    uint32_t ttl_s;              /* smallest TTL of the answer's records */
    uint64_t at_ms;              /* monotonic time of the answer */
} pt_dns_srv_answer;

/* At most this many records of one name are used. */
#define PT_DNS_SRV_MAX 256

/* Parses a raw SRV reply `buf` (len bytes) into *out (memory in `a`),
 * at_ms left 0. The TTL is read from the answer records themselves (c-ares
 * 1.18 does not return it for SRV). False with a message in err when the
 * reply is malformed or holds no usable record. */
bool pt_dns_srv_parse(const unsigned char *buf, int len, pt_arena *a, pt_dns_srv_answer *out, char *err,
                      size_t errcap);

/* Blocking resolution of SRV `name` with the settings `conf`, for the main
 * thread (bounded like pt_dns_resolve_now). `interrupt` (may be NULL): when
 * one of these signals is pending (blocked, waiting for sigwaitinfo) the
 * query is abandoned, so a SIGTERM is not held up by a silent DNS server.
 * False with a message in err (no such name, no record, timeout...). */
bool pt_dns_resolve_srv_now(const pt_dns_conf *conf, const char *name, const sigset_t *interrupt, pt_arena *a,
                            pt_dns_srv_answer *out, char *err, size_t errcap);

/* Whether two answers use the same records (host, port, weight). */
bool pt_dns_srv_same(const pt_dns_srv_answer *x, const pt_dns_srv_answer *y);

/* Monotonic milliseconds (the clock of pt_loop_now). */
uint64_t pt_dns_mono_ms(void);

#endif
