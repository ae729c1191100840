/* Unit tests for the DNS cache of upstream host names (src/net/dns_cache.h):
 * TTL clamping, retry backoff, answers and failures, when a refresh is due,
 * address rotation and down-marking, connection stamps; the `dns:` config
 * block; and the worker resolver's entry references (src/net/dns.h). */
#include <arpa/inet.h>
#include <netinet/in.h>

#include "config/config.h"
#include "net/dns.h"
#include "net/dns_cache.h"

#include "testlib.h"

static pt_dns_addr v4(const char *s)
{
    pt_dns_addr a = {.family = AF_INET};
    inet_pton(AF_INET, s, a.ip);
    return a;
}

static pt_dns_addr v6(const char *s)
{
    pt_dns_addr a = {.family = AF_INET6};
    inet_pton(AF_INET6, s, a.ip);
    return a;
}

static const char *txt(const pt_dns_addr *a)
{
    static char buf[4][64];
    static int k;
    k = (k + 1) % 4;
    return pt_dns_addr_text(a, buf[k], sizeof(buf[k]));
}

static pt_dns_conf conf(uint64_t min_ms, uint64_t max_ms)
{
    pt_dns_conf c;
    pt_dns_conf_defaults(&c);
    c.min_ttl_ms = min_ms;
    c.max_ttl_ms = max_ms;
    return c;
}

TEST(defaults)
{
    pt_dns_conf c;
    pt_dns_conf_defaults(&c);
    CHECK(c.servers == NULL);
    CHECK_INT(c.timeout_ms, 2000);
    CHECK_INT(c.attempts, 2);
    CHECK_INT(c.min_ttl_ms, 1000);
    CHECK_INT(c.max_ttl_ms, 3600000);
}

TEST(ttl_clamped_to_bounds)
{
    pt_dns_conf c = conf(1000, 3600000);
    CHECK_INT(pt_dns_ttl_ms(0, &c), 1000);        /* TTL 0: kept min_ttl */
    CHECK_INT(pt_dns_ttl_ms(1, &c), 1000);
    CHECK_INT(pt_dns_ttl_ms(30, &c), 30000);
    CHECK_INT(pt_dns_ttl_ms(3600, &c), 3600000);
    CHECK_INT(pt_dns_ttl_ms(86400, &c), 3600000); /* a day: max_ttl */
    CHECK_INT(pt_dns_ttl_ms(UINT32_MAX, &c), 3600000);
    pt_dns_conf z = conf(0, 5000);
    CHECK_INT(pt_dns_ttl_ms(0, &z), 0);           /* min_ttl 0 honours TTL 0 */
    CHECK_INT(pt_dns_ttl_ms(7, &z), 5000);
}

TEST(retry_backoff_doubles_to_30s)
{
    CHECK_INT(pt_dns_retry_ms(0), 0);
    CHECK_INT(pt_dns_retry_ms(1), 1000);
    CHECK_INT(pt_dns_retry_ms(2), 2000);
    CHECK_INT(pt_dns_retry_ms(3), 4000);
    CHECK_INT(pt_dns_retry_ms(5), 16000);
    CHECK_INT(pt_dns_retry_ms(6), 30000);
    CHECK_INT(pt_dns_retry_ms(7), 30000);
    CHECK_INT(pt_dns_retry_ms(1000), 30000);
}

TEST(answer_sets_expiry_and_serial)
{
    pt_dns_entry e = {0};
    uint32_t serials = 0;
    CHECK(pt_dns_entry_due(&e, 0)); /* nothing yet: due at once */
    pt_dns_addr a[] = {v4("10.0.0.1")};
    CHECK(pt_dns_entry_answer(&e, a, 1, 5000, 30000, &serials));
    CHECK_INT(e.serial, 1);
    CHECK_INT(e.expires, 35000);
    CHECK_INT(e.answered_at, 5000);
    CHECK(!pt_dns_entry_due(&e, 34999));
    CHECK(pt_dns_entry_due(&e, 35000));
    /* the same set again (refresh): not a change, serial kept, expiry moved */
    CHECK(!pt_dns_entry_answer(&e, a, 1, 35000, 30000, &serials));
    CHECK_INT(e.serial, 1);
    CHECK_INT(e.expires, 65000);
    /* a new address: a change, new serial */
    pt_dns_addr b[] = {v4("10.0.0.2")};
    CHECK(pt_dns_entry_answer(&e, b, 1, 65000, 1000, &serials));
    CHECK_INT(e.serial, 2);
    CHECK_STR(txt(&e.addrs[0]), "10.0.0.2");
    pt_dns_entry_free_addrs(&e);
}

TEST(same_set_in_another_order_is_no_change)
{
    pt_dns_entry e = {0};
    uint32_t serials = 7;
    pt_dns_addr a[] = {v4("10.0.0.1"), v4("10.0.0.2")}, b[] = {v4("10.0.0.2"), v4("10.0.0.1")};
    CHECK(pt_dns_entry_answer(&e, a, 2, 0, 1000, &serials));
    CHECK_INT(e.serial, 8);
    CHECK(!pt_dns_entry_answer(&e, b, 2, 1000, 1000, &serials));
    CHECK_INT(e.serial, 8);
    pt_dns_addr c[] = {v4("10.0.0.2")}; /* one fewer: a change */
    CHECK(pt_dns_entry_answer(&e, c, 1, 2000, 1000, &serials));
    CHECK_INT(e.serial, 9);
    pt_dns_entry_free_addrs(&e);
}

TEST(duplicates_dropped_preferred_family_first)
{
    pt_dns_entry e = {0};
    uint32_t serials = 0;
    pt_dns_addr a[] = {v6("2001:db8::1"), v4("10.0.0.1"), v6("2001:db8::2"), v6("2001:db8::1")};
    CHECK(pt_dns_entry_answer(&e, a, 4, 0, 1000, &serials));
    CHECK_INT(e.naddrs, 3);
    CHECK_INT(e.nrot, 2);
    CHECK_STR(txt(&e.addrs[0]), "2001:db8::1");
    CHECK_STR(txt(&e.addrs[1]), "2001:db8::2");
    CHECK_STR(txt(&e.addrs[2]), "10.0.0.1");
    pt_dns_entry_free_addrs(&e);
}

TEST(failure_keeps_answer_and_backs_off)
{
    pt_dns_entry e = {0};
    uint32_t serials = 0;
    pt_dns_addr a[] = {v4("10.0.0.1")};
    pt_dns_entry_answer(&e, a, 1, 0, 1000, &serials);
    CHECK(pt_dns_entry_due(&e, 1000));
    e.querying = true;
    CHECK(!pt_dns_entry_due(&e, 1000)); /* one query at a time */
    e.querying = false;
    pt_dns_entry_failed(&e, 1500);
    CHECK_INT(e.failures, 1);
    CHECK_INT(e.naddrs, 1); /* the last good answer stays */
    CHECK_INT(e.serial, 1);
    CHECK(!pt_dns_entry_due(&e, 2499));
    CHECK(pt_dns_entry_due(&e, 2500));
    pt_dns_entry_failed(&e, 2500);
    CHECK(!pt_dns_entry_due(&e, 4499));
    CHECK(pt_dns_entry_due(&e, 4500));
    for (int i = 0; i < 10; i++) pt_dns_entry_failed(&e, 10000);
    CHECK_INT(e.retry_at, 40000); /* capped at 30s */
    pt_dns_addr out;
    CHECK(pt_dns_entry_pick(&e, 10000, &out));
    CHECK_STR(txt(&out), "10.0.0.1");
    /* an answer again: failures forgotten */
    CHECK(!pt_dns_entry_answer(&e, a, 1, 41000, 5000, &serials));
    CHECK_INT(e.failures, 0);
    CHECK_INT(e.retry_at, 0);
    CHECK(!pt_dns_entry_due(&e, 45999));
    CHECK(pt_dns_entry_due(&e, 46000));
    pt_dns_entry_free_addrs(&e);
}

TEST(seed_only_when_newer)
{
    pt_dns_conf c = conf(1000, 60000);
    pt_dns_entry e = {0};
    uint32_t serials = 0;
    pt_dns_addr a[] = {v4("10.0.0.1")}, b[] = {v4("10.0.0.2")};
    pt_dns_answer load1 = {.v = a, .n = 1, .ttl_s = 300, .at_ms = 1000};
    CHECK(pt_dns_entry_seed(&e, &load1, &c, &serials));
    CHECK_INT(e.expires, 61000); /* 300 s clamped to max_ttl 60 s */
    /* the worker refreshed later on its own */
    pt_dns_entry_answer(&e, b, 1, 5000, 60000, &serials);
    /* a reload of an older answer does not win */
    pt_dns_answer old = {.v = a, .n = 1, .ttl_s = 30, .at_ms = 4000};
    CHECK(!pt_dns_entry_seed(&e, &old, &c, &serials));
    CHECK_STR(txt(&e.addrs[0]), "10.0.0.2");
    /* a newer one does */
    pt_dns_answer fresh = {.v = a, .n = 1, .ttl_s = 30, .at_ms = 6000};
    CHECK(pt_dns_entry_seed(&e, &fresh, &c, &serials));
    CHECK_STR(txt(&e.addrs[0]), "10.0.0.1");
    CHECK_INT(e.expires, 36000);
    pt_dns_answer none = {0};
    CHECK(!pt_dns_entry_seed(&e, &none, &c, &serials));
    pt_dns_entry_free_addrs(&e);
}

TEST(rotation_and_down_addresses)
{
    pt_dns_entry e = {0};
    uint32_t serials = 0;
    pt_dns_addr out, a[] = {v4("10.0.0.1"), v4("10.0.0.2"), v4("10.0.0.3"), v6("2001:db8::9")};
    CHECK(!pt_dns_entry_pick(&e, 0, &out)); /* empty */
    pt_dns_entry_answer(&e, a, 4, 0, 1000, &serials);
    const char *want[] = {"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.1"};
    for (int i = 0; i < 4; i++) {
        CHECK(pt_dns_entry_pick(&e, 0, &out));
        CHECK_STR(txt(&out), want[i]); /* the other family is not in the rotation */
    }
    pt_dns_addr two = v4("10.0.0.2");
    pt_dns_entry_mark_down(&e, &two, 100);
    for (int i = 0; i < 4; i++) {
        CHECK(pt_dns_entry_pick(&e, 200, &out));
        CHECK(strcmp(txt(&out), "10.0.0.2") != 0);
    }
    /* down for PT_DNS_DOWN_MS only */
    bool seen = false;
    for (int i = 0; i < 3; i++) {
        pt_dns_entry_pick(&e, 100 + PT_DNS_DOWN_MS, &out);
        seen = seen || strcmp(txt(&out), "10.0.0.2") == 0;
    }
    CHECK(seen);
    /* the whole preferred family down: the other family */
    for (int i = 0; i < 3; i++) pt_dns_entry_mark_down(&e, &a[i], 20000);
    CHECK(pt_dns_entry_pick(&e, 20001, &out));
    CHECK_STR(txt(&out), "2001:db8::9");
    /* everything down: keep turning rather than give up */
    pt_dns_entry_mark_down(&e, &a[3], 20000);
    CHECK(pt_dns_entry_pick(&e, 20001, &out));
    CHECK_INT(out.family, AF_INET);
    /* a changed answer forgets the marks */
    pt_dns_addr b[] = {v4("10.0.0.1"), v4("10.0.0.7")};
    pt_dns_entry_answer(&e, b, 2, 20002, 1000, &serials);
    CHECK(pt_dns_entry_pick(&e, 20003, &out));
    CHECK_STR(txt(&out), "10.0.0.1");
    pt_dns_entry_free_addrs(&e);
}

TEST(stamps)
{
    pt_dns_entry e = {0};
    uint32_t serials = 0;
    pt_dns_addr a[] = {v4("10.0.0.1"), v4("10.0.0.2")};
    pt_dns_entry_answer(&e, a, 2, 0, 1000, &serials);
    struct sockaddr_storage load;
    pt_dns_addr_sockaddr(&a[0], 8080, &load);
    /* a connection opened to the load-time address (zeroed stamp) */
    pt_dns_stamp z = {0};
    CHECK(pt_dns_stamp_valid(&e, &z, (struct sockaddr *)&load));
    CHECK_INT(z.serial, e.serial);
    /* a connection to .2 made under this answer */
    pt_dns_stamp s = {.serial = e.serial, .addr = a[1]};
    CHECK(pt_dns_stamp_valid(&e, &s, (struct sockaddr *)&load));
    /* a new answer without .1: the load-time connection is stale, .2 is not */
    pt_dns_addr b[] = {v4("10.0.0.2"), v4("10.0.0.3")};
    CHECK(pt_dns_entry_answer(&e, b, 2, 1000, 1000, &serials));
    CHECK(!pt_dns_stamp_valid(&e, &z, (struct sockaddr *)&load));
    pt_dns_stamp z2 = {0};
    CHECK(!pt_dns_stamp_valid(&e, &z2, (struct sockaddr *)&load));
    CHECK(pt_dns_stamp_valid(&e, &s, (struct sockaddr *)&load));
    CHECK_INT(s.serial, e.serial); /* remembered */
    pt_dns_entry_free_addrs(&e);
}

TEST(sockaddr_round_trip)
{
    pt_dns_addr a = v6("2001:db8::5"), b;
    a.scope = 3;
    struct sockaddr_storage ss;
    socklen_t len = pt_dns_addr_sockaddr(&a, 443, &ss);
    CHECK_INT(len, sizeof(struct sockaddr_in6));
    CHECK_INT(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port), 443);
    CHECK(pt_dns_addr_from_sockaddr(&b, (struct sockaddr *)&ss));
    CHECK(pt_dns_addr_eq(&a, &b));
    pt_dns_addr c = v4("192.0.2.1");
    len = pt_dns_addr_sockaddr(&c, 80, &ss);
    CHECK_INT(len, sizeof(struct sockaddr_in));
    CHECK(pt_dns_addr_from_sockaddr(&b, (struct sockaddr *)&ss));
    CHECK(pt_dns_addr_eq(&c, &b));
    CHECK(!pt_dns_addr_eq(&a, &c));
}

TEST(cache_find_add_remove)
{
    pt_dns_cache c = {0};
    CHECK(pt_dns_cache_find(&c, "a.test") == NULL);
    pt_dns_entry *a = pt_dns_cache_add(&c, "a.test");
    for (int i = 0; i < 20; i++) {
        char name[32];
        snprintf(name, sizeof(name), "n%d.test", i);
        pt_dns_cache_add(&c, name);
    }
    CHECK(pt_dns_cache_find(&c, "a.test") == a);
    CHECK(pt_dns_cache_find(&c, "n19.test") != NULL);
    CHECK_INT(c.n, 21);
    pt_dns_cache_remove(&c, a);
    CHECK(pt_dns_cache_find(&c, "a.test") == NULL);
    CHECK_INT(c.n, 20);
    pt_dns_cache_free(&c);
    CHECK_INT(c.n, 0);
}

TEST(resolver_entries_shared_and_released)
{
    pt_loop *loop = pt_loop_new();
    pt_dns_conf c = conf(1000, 60000);
    pt_dns *d = pt_dns_new(loop, &c);
    pt_dns_addr a[] = {v4("10.0.0.1")};
    uint64_t now = pt_loop_now(loop);
    pt_dns_answer ans = {.v = a, .n = 1, .ttl_s = 30, .at_ms = now};
    pt_dns_entry *e1 = pt_dns_acquire(d, "svc.test", &ans);
    pt_dns_entry *e2 = pt_dns_acquire(d, "svc.test", &ans);
    CHECK(e1 == e2);
    CHECK_INT(e1->refs, 2);
    CHECK_INT(e1->naddrs, 1);
    /* a fresh answer: using it starts no query */
    pt_dns_touch(d, e1);
    CHECK(!e1->querying);
    /* the connect target carries the entry's address and the target's port */
    struct sockaddr_storage ss;
    pt_dns_stamp st;
    CHECK(pt_dns_connect_addr(d, e1, 8080, &ss, &st) == sizeof(struct sockaddr_in));
    CHECK_INT(ntohs(((struct sockaddr_in *)&ss)->sin_port), 8080);
    CHECK_INT(st.serial, e1->serial);
    /* a failed connect marks the address down */
    pt_dns_connect_failed(d, &st);
    CHECK(e1->down_until[0] > now);
    pt_dns_release(d, e1);
    pt_dns_release(d, e2); /* last reference: gone */
    pt_dns_entry *e3 = pt_dns_acquire(d, "svc.test", NULL);
    CHECK_INT(e3->naddrs, 0);
    pt_dns_release(d, e3);
    pt_dns_free(d);
    pt_loop_free(loop);
}

TEST(resolve_now_hosts_file)
{
    pt_dns_conf c;
    pt_dns_conf_defaults(&c);
    pt_arena *a = pt_arena_new(1024);
    pt_dns_answer ans;
    char err[256];
    CHECK(pt_dns_resolve_now(&c, "localhost", a, &ans, err, sizeof(err)));
    CHECK(ans.n >= 1);
    bool loopback = false;
    for (uint32_t i = 0; i < ans.n; i++)
        loopback = loopback || (ans.v[i].family == AF_INET && ans.v[i].ip[0] == 127) ||
                   (ans.v[i].family == AF_INET6 && ans.v[i].ip[15] == 1);
    CHECK(loopback);
    pt_arena_free(a);
}

/* --------------------------------------------------------- the dns: block */

static pt_config *load(const char *text, pt_errors *e)
{
    return pt_config_load_string("t.yaml", text, strlen(text), e);
}

#define BASE "listen: [\"127.0.0.1:8080\"]\nupstreams: {up: {targets: [\"127.0.0.1:9000\"]}}\n" \
             "routes:\n  - {match: {path_prefix: /}, upstream: up}\n"

TEST(config_dns_block)
{
    pt_errors e = {0};
    pt_config *cfg = load(BASE, &e);
    CHECK(cfg != NULL);
    if (cfg) {
        CHECK(cfg->dns.servers == NULL);
        CHECK_INT(cfg->dns.min_ttl_ms, 1000);
        CHECK(!cfg->upstreams[0].targets[0].dns); /* an IP literal */
    }
    pt_config_free(cfg);
    cfg = load(BASE "dns:\n  servers: [\"127.0.0.1:5353\", \"10.0.0.2\", \"[::1]:54\", \"::2\"]\n"
                    "  timeout: 500ms\n  attempts: 3\n  min_ttl: 5s\n  max_ttl: 10m\n",
               &e);
    CHECK(cfg != NULL);
    if (cfg) {
        CHECK_STR(cfg->dns.servers, "127.0.0.1:5353,10.0.0.2:53,[::1]:54,[::2]:53");
        CHECK_INT(cfg->dns.timeout_ms, 500);
        CHECK_INT(cfg->dns.attempts, 3);
        CHECK_INT(cfg->dns.min_ttl_ms, 5000);
        CHECK_INT(cfg->dns.max_ttl_ms, 600000);
    }
    pt_config_free(cfg);
    for (size_t i = 0; i < e.n; i++) fprintf(stderr, "%s\n", e.msgs[i]);
    pt_errors_free(&e);
}

static bool fails_with(const char *text, const char *want)
{
    pt_errors e = {0};
    pt_config *cfg = load(text, &e);
    bool ok = !cfg && e.n > 0 && strstr(e.msgs[0], want) != NULL;
    if (!ok) fprintf(stderr, "  got: %s\n", e.n ? e.msgs[0] : "(no error)");
    pt_config_free(cfg);
    pt_errors_free(&e);
    return ok;
}

TEST(config_dns_errors)
{
    CHECK(fails_with(BASE "dns: {servers: []}\n", "t.yaml:5:16: dns.servers must be a non-empty list"));
    CHECK(fails_with(BASE "dns: {servers: [ns.example]}\n", "t.yaml:5:17: invalid dns server 'ns.example'"));
    CHECK(fails_with(BASE "dns: {servers: [\"10.0.0.1:0\"]}\n", "invalid dns server '10.0.0.1:0'"));
    CHECK(fails_with(BASE "dns: {servers: [\"[::1\"]}\n", "invalid dns server '[::1'"));
    CHECK(fails_with(BASE "dns: {timeout: 11s}\n", "dns.timeout must be between 1ms and 10s"));
    CHECK(fails_with(BASE "dns: {attempts: 6}\n", "t.yaml:5:17:"));
    CHECK(fails_with(BASE "dns: {timeout: 0}\n", "dns.timeout must be between 1ms and 10s"));
    CHECK(fails_with(BASE "dns: {attempts: 0}\n", "t.yaml:5:17:"));
    CHECK(fails_with(BASE "dns: {max_ttl: 0}\n", "dns.max_ttl must be greater than 0"));
    CHECK(fails_with(BASE "dns: {min_ttl: 2h}\n", "dns.min_ttl (7200000ms) must not exceed dns.max_ttl (3600000ms)"));
    CHECK(fails_with(BASE "dns: {ttl: 5s}\n", "unknown key 'ttl' in dns"));
}

TEST(config_target_names)
{
    pt_errors e = {0};
    pt_config *cfg = load("listen: [\"127.0.0.1:8080\"]\n"
                          "upstreams:\n  a: {targets: [\"localhost:9000\", \"127.0.0.1:9001\", \"[::1]:9002\"]}\n"
                          "  b: {targets: [\"localhost:9003\"]}\n"
                          "routes:\n  - {match: {path_prefix: /}, upstream: a}\n",
                          &e);
    CHECK(cfg != NULL);
    if (cfg) {
        const pt_target_conf *t = cfg->upstreams[0].targets;
        CHECK(t[0].dns);
        CHECK(t[0].answer.n >= 1);
        CHECK_INT(ntohs(((struct sockaddr_in *)&t[0].addr.ss)->sin_port), 9000);
        CHECK_STR(t[0].addr.text, "localhost:9000");
        CHECK(!t[1].dns);
        CHECK(!t[2].dns);
        /* the same name again: the same answer (resolved once) */
        CHECK(cfg->upstreams[1].targets[0].dns);
        CHECK(cfg->upstreams[1].targets[0].answer.v == t[0].answer.v);
    }
    pt_config_free(cfg);
    pt_errors_free(&e);
    CHECK(fails_with("listen: [\"127.0.0.1:8080\"]\nupstreams:\n  a: {targets: [\"no-such-host.invalid:80\"]}\n"
                     "routes:\n  - {match: {path_prefix: /}, upstream: a}\n",
                     "t.yaml:3:17: invalid address 'no-such-host.invalid:80': cannot resolve 'no-such-host.invalid'"));
}

/* ---- SRV replies (pt_dns_srv_parse) ---- */

/* Appends a name as uncompressed labels. */
static size_t put_name(unsigned char *b, size_t n, const char *name)
{
    while (*name) {
        const char *dot = strchr(name, '.');
        size_t l = dot ? (size_t)(dot - name) : strlen(name);
        b[n++] = (unsigned char)l;
        memcpy(b + n, name, l);
        n += l;
        name += l + (dot ? 1 : 0);
    }
    b[n++] = 0;
    return n;
}

static size_t put16(unsigned char *b, size_t n, unsigned v)
{
    b[n] = (unsigned char)(v >> 8);
    b[n + 1] = (unsigned char)v;
    return n + 2;
}

/* A reply to SRV `_http._tcp.x` with records (prio, weight, port, target, ttl). */
typedef struct {
    unsigned prio, weight, port;
    const char *target;
    uint32_t ttl;
} srv_rr;

static size_t srv_reply(unsigned char *b, const srv_rr *rr, size_t nrr)
{
    size_t n = 0;
    n = put16(b, n, 0x1234);
    n = put16(b, n, 0x8180);
    n = put16(b, n, 1);
    n = put16(b, n, (unsigned)nrr);
    n = put16(b, n, 0);
    n = put16(b, n, 0);
    n = put_name(b, n, "_http._tcp.x");
    n = put16(b, n, 33);
    n = put16(b, n, 1);
    for (size_t i = 0; i < nrr; i++) {
        n = put16(b, n, 0xC00C);
        n = put16(b, n, 33);
        n = put16(b, n, 1);
        n = put16(b, n, rr[i].ttl >> 16);
        n = put16(b, n, rr[i].ttl & 0xffff);
        size_t len_at = n;
        n += 2;
        n = put16(b, n, rr[i].prio);
        n = put16(b, n, rr[i].weight);
        n = put16(b, n, rr[i].port);
        n = put_name(b, n, rr[i].target);
        put16(b, len_at, (unsigned)(n - len_at - 2));
    }
    return n;
}

TEST(srv_parse_lowest_priority_sorted_min_ttl)
{
    unsigned char b[1024];
    const srv_rr rr[] = {
        {10, 5, 8002, "B.example", 30}, {20, 1, 9000, "backup.example", 2}, {10, 0, 8001, "a.example", 60},
        {10, 5, 8002, "b.example", 40}, /* a duplicate once lower-cased */
    };
    size_t n = srv_reply(b, rr, 4);
    pt_arena *a = pt_arena_new(1024);
    pt_dns_srv_answer ans;
    char err[256];
    CHECK(pt_dns_srv_parse(b, (int)n, a, &ans, err, sizeof(err)));
    CHECK_INT(ans.n, 2);
    CHECK_INT(ans.priority, 10);
    CHECK_INT(ans.ttl_s, 2); /* the smallest of all the answer's records */
    CHECK_STR(ans.v[0].host, "a.example");
    CHECK_INT(ans.v[0].port, 8001);
    CHECK_INT(ans.v[0].weight, 0);
    CHECK_STR(ans.v[1].host, "b.example");
    CHECK_INT(ans.v[1].weight, 5);
    /* the same records in another order: the same answer */
    const srv_rr rr2[] = {{10, 5, 8002, "b.example", 30}, {10, 0, 8001, "a.example", 30}};
    pt_dns_srv_answer ans2;
    CHECK(pt_dns_srv_parse(b, (int)srv_reply(b, rr2, 2), a, &ans2, err, sizeof(err)));
    CHECK(pt_dns_srv_same(&ans, &ans2));
    const srv_rr rr3[] = {{10, 6, 8002, "b.example", 30}, {10, 0, 8001, "a.example", 30}};
    CHECK(pt_dns_srv_parse(b, (int)srv_reply(b, rr3, 2), a, &ans2, err, sizeof(err)));
    CHECK(!pt_dns_srv_same(&ans, &ans2)); /* a weight changed */
    pt_arena_free(a);
}

TEST(srv_parse_refuses_unusable)
{
    unsigned char b[1024];
    pt_arena *a = pt_arena_new(1024);
    pt_dns_srv_answer ans;
    char err[256];
    /* "." alone: the service is not offered */
    const srv_rr dot[] = {{0, 0, 0, "", 30}};
    CHECK(!pt_dns_srv_parse(b, (int)srv_reply(b, dot, 1), a, &ans, err, sizeof(err)));
    CHECK(strstr(err, "not offered") != NULL);
    /* a lower-numbered "." does not hide the usable records */
    const srv_rr mixed[] = {{0, 0, 0, "", 30}, {5, 1, 80, "a.example", 30}};
    CHECK(pt_dns_srv_parse(b, (int)srv_reply(b, mixed, 2), a, &ans, err, sizeof(err)));
    CHECK_INT(ans.n, 1);
    CHECK_INT(ans.priority, 5);
    /* port 0 and hosts that are not plain names are not used; the priority
     * is chosen among the usable records */
    const srv_rr odd[] = {{1, 1, 0, "zero.example", 30}, {1, 1, 80, "sp ace.example", 30},
                          {2, 1, 81, "ok.example", 30}, {2, 1, 82, "10.0.0.1", 30}};
    CHECK(pt_dns_srv_parse(b, (int)srv_reply(b, odd, 4), a, &ans, err, sizeof(err)));
    CHECK_INT(ans.n, 2);
    CHECK_INT(ans.priority, 2);
    CHECK_STR(ans.v[0].host, "10.0.0.1");
    CHECK_STR(ans.v[1].host, "ok.example");
    /* no record at all, and truncated messages */
    CHECK(!pt_dns_srv_parse(b, (int)srv_reply(b, NULL, 0), a, &ans, err, sizeof(err)));
    const srv_rr one[] = {{1, 1, 80, "a.example", 30}};
    size_t n = srv_reply(b, one, 1);
    for (size_t cut = 0; cut < n; cut++) CHECK(!pt_dns_srv_parse(b, (int)cut, a, &ans, err, sizeof(err)));
    pt_arena_free(a);
}

TEST_MAIN()
