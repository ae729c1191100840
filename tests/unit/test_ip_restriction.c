/* test_ip_restriction.c — the ip_restriction plugin: configure() on valid
 * and invalid YAML (exact messages and FILE:LINE:COL positions), the
 * compiled range sets (sorted, merged), client address parsing (IPv4, IPv6,
 * IPv4-mapped), matching at range boundaries, the allow/deny decision, and
 * a 10,000-entry list checked against a brute-force reference. The phase
 * callback itself is covered by tests/integration/test_ip_restriction.py. */
#include <arpa/inet.h>
#include <stdio.h>

#include "config/conf_node.h"
#include "plugins/ip_restriction/ip_restriction.h"
#include "testlib.h"

typedef struct {
    pt_arena *arena;
    pt_errors errors;
    const pt_ip_restriction_conf *conf;
} run;

/* Runs the plugin's configure() on a YAML block (the value under its name). */
static run configure(const char *yaml)
{
    run r = {.arena = pt_arena_new(4096)};
    pt_conf_ctx ctx = {.file = "test.yaml", .arena = r.arena, .errors = &r.errors};
    const pt_conf_node *node = pt_conf_parse_yaml(&ctx, yaml, strlen(yaml));
    if (!node && r.errors.n) {
        fprintf(stderr, "  YAML setup failed: %s\n", r.errors.msgs[0]);
        return r;
    }
    r.conf = pt_plugin_ip_restriction.configure(&ctx, node);
    return r;
}

static void run_free(run *r)
{
    pt_errors_free(&r->errors);
    pt_arena_free(r->arena);
}

static bool has_error(const run *r, const char *needle)
{
    for (size_t i = 0; i < r->errors.n; i++)
        if (strstr(r->errors.msgs[i], needle)) return true;
    fprintf(stderr, "  no error containing \"%s\"; got %zu:\n", needle, r->errors.n);
    for (size_t i = 0; i < r->errors.n; i++) fprintf(stderr, "    %s\n", r->errors.msgs[i]);
    return false;
}

/* Expects configure() to fail with exactly one error, equal to `msg`
 * (which includes the "test.yaml:LINE:COL: " position). */
static void expect_exact_error(const char *yaml, const char *msg)
{
    run r = configure(yaml);
    CHECK(r.conf == NULL);
    CHECK_INT(r.errors.n, 1);
    if (r.errors.n >= 1) CHECK_STR(r.errors.msgs[0], msg);
    run_free(&r);
}

static void expect_error(const char *yaml, const char *needle)
{
    run r = configure(yaml);
    CHECK(r.conf == NULL);
    CHECK(r.errors.n > 0);
    CHECK(has_error(&r, needle));
    run_free(&r);
}

static uint32_t v4(const char *s)
{
    struct in_addr a;
    if (inet_pton(AF_INET, s, &a) != 1) {
        fprintf(stderr, "  bad test address %s\n", s);
        return 0;
    }
    return ntohl(a.s_addr);
}

static pt_u128 v6(const char *s)
{
    unsigned char b[16];
    pt_u128 r = {0, 0};
    if (inet_pton(AF_INET6, s, b) != 1) {
        fprintf(stderr, "  bad test address %s\n", s);
        return r;
    }
    for (int i = 0; i < 8; i++) r.hi = (r.hi << 8) | b[i];
    for (int i = 8; i < 16; i++) r.lo = (r.lo << 8) | b[i];
    return r;
}

static bool u128_eq(pt_u128 a, pt_u128 b) { return a.hi == b.hi && a.lo == b.lo; }

/* Does the set contain the textual address? (false if it does not parse) */
static bool set_has(const pt_ip_set *s, const char *addr)
{
    pt_ip_addr a;
    if (!pt_ip_addr_parse(pt_str_c(addr), &a)) {
        fprintf(stderr, "  test address does not parse: %s\n", addr);
        return false;
    }
    return pt_ip_set_contains(s, &a);
}

static bool allows(const pt_ip_restriction_conf *c, const char *addr)
{
    return pt_ip_restriction_allows(c, pt_str_c(addr));
}

/* ------------------------------------------------------------ configure: valid */

TEST(valid_config_compiles_both_families)
{
    run r = configure("allow: [10.0.0.0/8, \"2001:db8::/32\", 127.0.0.1]\n"
                      "deny:  [10.1.2.0/24]\n");
    CHECK_INT(r.errors.n, 0);
    const pt_ip_restriction_conf *c = r.conf;
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->status, 403);
        CHECK(c->has_allow);
        CHECK_INT(c->allow.nv4, 2);
        CHECK_INT(c->allow.nv6, 1);
        if (c->allow.nv4 == 2) {
            CHECK_INT(c->allow.v4[0].first, v4("10.0.0.0"));
            CHECK_INT(c->allow.v4[0].last, v4("10.255.255.255"));
            CHECK_INT(c->allow.v4[1].first, v4("127.0.0.1"));
            CHECK_INT(c->allow.v4[1].last, v4("127.0.0.1"));
        }
        if (c->allow.nv6 == 1) {
            CHECK(u128_eq(c->allow.v6[0].first, v6("2001:db8::")));
            CHECK(u128_eq(c->allow.v6[0].last, v6("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")));
        }
        CHECK_INT(c->deny.nv4, 1);
        CHECK_INT(c->deny.nv6, 0);
        if (c->deny.nv4 == 1) {
            CHECK_INT(c->deny.v4[0].first, v4("10.1.2.0"));
            CHECK_INT(c->deny.v4[0].last, v4("10.1.2.255"));
        }
    }
    run_free(&r);
}

TEST(valid_deny_only_and_status)
{
    run r = configure("deny: [\"::1\", 192.0.2.0/24]\nstatus: 451\n");
    const pt_ip_restriction_conf *c = r.conf;
    CHECK(c != NULL);
    if (c) {
        CHECK(!c->has_allow);
        CHECK_INT(c->allow.nv4 + c->allow.nv6, 0);
        CHECK_INT(c->status, 451);
        CHECK_INT(c->deny.nv4, 1);
        CHECK_INT(c->deny.nv6, 1);
        if (c->deny.nv6 == 1) {
            CHECK(u128_eq(c->deny.v6[0].first, v6("::1")));
            CHECK(u128_eq(c->deny.v6[0].last, v6("::1")));
        }
    }
    run_free(&r);
    r = configure("allow: [0.0.0.0/0, \"::/0\"]\nstatus: 401\n");
    CHECK(r.conf != NULL);
    if (r.conf) {
        CHECK_INT(r.conf->status, 401);
        CHECK_INT(r.conf->allow.v4[0].first, 0);
        CHECK_INT(r.conf->allow.v4[0].last, UINT32_MAX);
        CHECK(u128_eq(r.conf->allow.v6[0].last, v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
    }
    run_free(&r);
    r = configure("allow: [1.2.3.4]\nstatus: 499\n");
    CHECK(r.conf != NULL && r.conf->status == 499);
    run_free(&r);
}

TEST(mapped_entry_becomes_ipv4)
{
    run r = configure("allow: [\"::ffff:192.168.0.0/112\", \"::ffff:10.0.0.1\", \"::ffff:0:0/96\"]\n");
    const pt_ip_restriction_conf *c = r.conf;
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->allow.nv6, 0);
        CHECK_INT(c->allow.nv4, 1); /* ::ffff:0:0/96 = 0.0.0.0/0 swallows the others */
        if (c->allow.nv4 == 1) {
            CHECK_INT(c->allow.v4[0].first, 0);
            CHECK_INT(c->allow.v4[0].last, UINT32_MAX);
        }
    }
    run_free(&r);
    r = configure("allow: [\"::ffff:192.168.0.0/112\", \"::ffff:10.0.0.1\"]\n");
    c = r.conf;
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->allow.nv6, 0);
        CHECK_INT(c->allow.nv4, 2);
        CHECK(set_has(&c->allow, "192.168.77.1"));
        CHECK(set_has(&c->allow, "::ffff:192.168.77.1"));
        CHECK(set_has(&c->allow, "10.0.0.1"));
        CHECK(!set_has(&c->allow, "10.0.0.2"));
        CHECK(!set_has(&c->allow, "192.169.0.0"));
    }
    run_free(&r);
}

/* ------------------------------------------------------------ configure: errors */

TEST(error_host_bits_set_with_suggestion_and_position)
{
    expect_exact_error("allow:\n"
                       "  - 10.0.0.0/8\n"
                       "  - 10.0.0.1/8\n",
                       "test.yaml:3:5: ip_restriction.allow: 10.0.0.1/8: host bits set; did you mean 10.0.0.0/8?");
    expect_exact_error("deny: [\"2001:db8::1/32\"]\n",
                       "test.yaml:1:8: ip_restriction.deny: 2001:db8::1/32: host bits set; did you mean "
                       "2001:db8::/32?");
    expect_error("deny: [\"::ffff:10.0.0.1/104\"]\n", "did you mean ::ffff:10.0.0.0/104?");
    expect_error("deny: [10.0.0.0/0]\n", "did you mean 0.0.0.0/0?");
    expect_error("deny: [\"2001:db8:0:0:8000::/64\"]\n", "did you mean 2001:db8::/64?");
    expect_error("deny: [\"2001:db8:0:0:4000::/65\"]\n", "did you mean 2001:db8::/65?");
    expect_error("deny: [\"::1/127\"]\n", "did you mean ::/127?");
}

TEST(error_bad_address_and_position)
{
    expect_exact_error("allow: [127.0.0.1, 10.0.0.256]\n",
                       "test.yaml:1:20: ip_restriction.allow: 10.0.0.256: not a valid IPv4 or IPv6 address or CIDR");
    const char *bad[] = {"1.2.3", "01.2.3.4", "abc", "\"\"", "/8", "\"2001:db8::g\"", "\"1:2:3:4:5:6:7:8:9\"",
                         "\" 1.2.3.4\"", "\"[::1]\"", "\"fe80::1%eth0\""};
    for (size_t i = 0; i < PT_ARRAY_LEN(bad); i++) {
        char yaml[128];
        snprintf(yaml, sizeof(yaml), "deny: [%s]\n", bad[i]);
        expect_error(yaml, "not a valid IPv4 or IPv6 address or CIDR");
    }
    expect_error("allow: [[1.2.3.4]]\n", "ip_restriction.allow: expected an IPv4/IPv6 address or CIDR, got a list");
    expect_error("allow: [{a: b}]\n", "got a mapping");
}

TEST(error_prefix_length)
{
    expect_exact_error("deny:\n  - 10.0.0.0/33\n",
                       "test.yaml:2:5: ip_restriction.deny: 10.0.0.0/33: prefix length 33 out of range (0..32 for IPv4)");
    expect_exact_error("deny: [\"::/129\"]\n",
                       "test.yaml:1:8: ip_restriction.deny: ::/129: prefix length 129 out of range (0..128 for IPv6)");
    const char *bad[] = {"10.0.0.0/", "10.0.0.0/x", "10.0.0.0/-1", "10.0.0.0/+8", "10.0.0.0/8/8", "10.0.0.0/0008",
                         "\"::/\"", "\"::/ 8\""};
    for (size_t i = 0; i < PT_ARRAY_LEN(bad); i++) {
        char yaml[128];
        snprintf(yaml, sizeof(yaml), "deny: [%s]\n", bad[i]);
        expect_error(yaml, "invalid prefix length");
    }
    run ok = configure("deny: [1.2.3.4/32, \"::1/128\", 0.0.0.0/0, \"::/0\"]\n");
    CHECK(ok.conf != NULL);
    run_free(&ok);
}

TEST(error_lists_keys_and_shape)
{
    expect_exact_error("allow: []\n",
                       "test.yaml:1:8: ip_restriction.allow: empty list (list at least one address or CIDR, or "
                       "remove the key)");
    expect_error("deny: []\nallow: [1.2.3.4]\n", "ip_restriction.deny: empty list");
    expect_error("deny: 10.0.0.0/8\n", "ip_restriction.deny: expected a list");
    expect_error("deny: ~\n", "ip_restriction.deny: expected a list");
    expect_error("status: 403\n", "at least one of 'allow' or 'deny' is required");
    expect_error("{}\n", "at least one of 'allow' or 'deny' is required");
    expect_error("", "ip_restriction: expected a mapping");
    expect_error("[10.0.0.0/8]\n", "ip_restriction: expected a mapping");
    expect_exact_error("allow: [1.2.3.4]\nalow: [1.2.3.5]\n",
                       "test.yaml:2:1: unknown key 'alow' in ip_restriction (expected one of: allow, deny, status)");
    expect_error("allow: [1.2.3.4]\nstatus: 400\n", "401..499");
    expect_error("allow: [1.2.3.4]\nstatus: 500\n", "401..499");
    expect_error("allow: [1.2.3.4]\nstatus: forbidden\n", "integer");
}

TEST(error_every_bad_entry_reported)
{
    run r = configure("allow:\n"
                      "  - 10.0.0.1/8\n"
                      "  - 300.0.0.0\n"
                      "  - 1.2.3.4\n"
                      "deny:\n"
                      "  - 1.2.3.0/40\n");
    CHECK(r.conf == NULL);
    CHECK_INT(r.errors.n, 3);
    CHECK(has_error(&r, "test.yaml:2:5: "));
    CHECK(has_error(&r, "test.yaml:3:5: "));
    CHECK(has_error(&r, "test.yaml:6:5: "));
    run_free(&r);
}

/* ------------------------------------------------------------ client parsing */

TEST(client_address_parsing)
{
    pt_ip_addr a;
    CHECK(pt_ip_addr_parse(pt_str_c("203.0.113.7"), &a));
    CHECK(!a.is_v6);
    CHECK_INT(a.v4, v4("203.0.113.7"));
    CHECK(pt_ip_addr_parse(pt_str_c("2001:db8::7"), &a));
    CHECK(a.is_v6);
    CHECK(u128_eq(a.v6, v6("2001:db8::7")));
    CHECK(pt_ip_addr_parse(pt_str_c("::ffff:203.0.113.7"), &a));
    CHECK(!a.is_v6);
    CHECK_INT(a.v4, v4("203.0.113.7"));
    CHECK(pt_ip_addr_parse(pt_str_c("::FFFF:cb00:7107"), &a)); /* same, hex form */
    CHECK(!a.is_v6);
    CHECK_INT(a.v4, v4("203.0.113.7"));
    CHECK(pt_ip_addr_parse(pt_str_c("[2001:db8::7]"), &a));
    CHECK(a.is_v6 && u128_eq(a.v6, v6("2001:db8::7")));
    CHECK(pt_ip_addr_parse(pt_str_c("fe80::1%eth0"), &a));
    CHECK(a.is_v6 && u128_eq(a.v6, v6("fe80::1")));
    /* ::a.b.c.d (IPv4-compatible, deprecated) is an IPv6 address, not mapped. */
    CHECK(pt_ip_addr_parse(pt_str_c("::1.2.3.4"), &a));
    CHECK(a.is_v6);
    /* A slice that is not NUL-terminated is read only up to its length. */
    const char *text = "10.0.0.1234";
    CHECK(pt_ip_addr_parse(pt_str_make(text, 8), &a));
    CHECK_INT(a.v4, v4("10.0.0.1"));

    const char *bad[] = {"", "abc", "10.0.0", "10.0.0.256", "1.2.3.4 ", " 1.2.3.4", "1.2.3.4:80", "[]",
                         "2001:db8::g", "::ffff:1.2.3", "1111:2222:3333:4444:5555:6666:7777:8888:9999"};
    for (size_t i = 0; i < PT_ARRAY_LEN(bad); i++) {
        bool parsed = pt_ip_addr_parse(pt_str_c(bad[i]), &a);
        if (parsed) fprintf(stderr, "  parsed: \"%s\"\n", bad[i]);
        CHECK(!parsed);
    }
    CHECK(!pt_ip_addr_parse(PT_STR_NULL, &a));
    CHECK(!pt_ip_addr_parse(pt_str_make("1.2.3.4\0x", 9), &a));
}

/* ------------------------------------------------------------ matching */

TEST(match_ipv4_boundaries)
{
    run r = configure("allow: [10.0.0.0/8, 192.168.1.128/25, 1.2.3.4, 0.0.0.0/32, 255.255.255.255]\n");
    const pt_ip_set *s = r.conf ? &r.conf->allow : NULL;
    CHECK(s != NULL);
    if (s) {
        CHECK(!set_has(s, "9.255.255.255"));
        CHECK(set_has(s, "10.0.0.0"));
        CHECK(set_has(s, "10.128.7.1"));
        CHECK(set_has(s, "10.255.255.255"));
        CHECK(!set_has(s, "11.0.0.0"));
        CHECK(!set_has(s, "192.168.1.127"));
        CHECK(set_has(s, "192.168.1.128"));
        CHECK(set_has(s, "192.168.1.255"));
        CHECK(!set_has(s, "192.168.2.0"));
        CHECK(!set_has(s, "1.2.3.3"));
        CHECK(set_has(s, "1.2.3.4"));
        CHECK(!set_has(s, "1.2.3.5"));
        CHECK(set_has(s, "0.0.0.0"));
        CHECK(!set_has(s, "0.0.0.1"));
        CHECK(set_has(s, "255.255.255.255"));
        CHECK(!set_has(s, "255.255.255.254"));
        CHECK(!set_has(s, "::a00:1")); /* IPv6 ::10.0.0.1 is not IPv4 */
        CHECK(!set_has(s, "2001:db8::1"));
    }
    run_free(&r);
}

TEST(match_ipv6_boundaries)
{
    run r = configure("allow: [\"2001:db8::/32\", \"2001:db8:1:2::/64\", \"fd00::/65\", \"fe80::/127\", "
                      "\"::1\", \"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff\", \"4000::/2\"]\n");
    const pt_ip_set *s = r.conf ? &r.conf->allow : NULL;
    CHECK(s != NULL);
    if (s) {
        CHECK_INT(s->nv6, 6); /* 2001:db8:1:2::/64 is inside 2001:db8::/32 */
        CHECK(!set_has(s, "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff"));
        CHECK(set_has(s, "2001:db8::"));
        CHECK(set_has(s, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"));
        CHECK(!set_has(s, "2001:db9::"));
        CHECK(set_has(s, "fd00::"));
        CHECK(set_has(s, "fd00::7fff:ffff:ffff:ffff"));
        CHECK(!set_has(s, "fd00::8000:0:0:0"));
        CHECK(!set_has(s, "fcff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
        CHECK(set_has(s, "fe80::"));
        CHECK(set_has(s, "fe80::1"));
        CHECK(!set_has(s, "fe80::2"));
        CHECK(set_has(s, "::1"));
        CHECK(!set_has(s, "::"));
        CHECK(!set_has(s, "::2"));
        CHECK(set_has(s, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
        CHECK(!set_has(s, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"));
        CHECK(!set_has(s, "3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
        CHECK(set_has(s, "4000::"));
        CHECK(set_has(s, "7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
        CHECK(!set_has(s, "8000::"));
        CHECK(!set_has(s, "127.0.0.1"));
    }
    run_free(&r);
}

TEST(match_mapped_clients_against_ipv4_entries)
{
    run r = configure("allow: [10.0.0.0/8, 127.0.0.1, \"::/0\"]\n");
    const pt_ip_set *s = r.conf ? &r.conf->allow : NULL;
    CHECK(s != NULL);
    if (s) {
        CHECK(set_has(s, "::ffff:10.1.2.3"));
        CHECK(set_has(s, "::ffff:127.0.0.1"));
        CHECK(!set_has(s, "::ffff:127.0.0.2"));
        CHECK(!set_has(s, "::ffff:11.0.0.0"));
        CHECK(set_has(s, "2001:db8::1")); /* ::/0 covers every IPv6 client... */
        CHECK(!set_has(s, "8.8.8.8"));    /* ...but not IPv4 ones */
        CHECK(!set_has(s, "::ffff:8.8.8.8"));
    }
    run_free(&r);
}

TEST(merge_overlapping_and_adjacent)
{
    run r = configure("allow:\n"
                      "  - 10.0.1.0/24\n"
                      "  - 10.0.0.0/24\n"
                      "  - 10.0.0.128/25\n"
                      "  - 10.0.3.0/24\n"
                      "  - 10.0.2.0/24\n"
                      "  - 192.168.0.1\n"
                      "  - 192.168.0.0/16\n"
                      "  - 192.168.0.1\n"
                      "  - 10.0.5.0/24\n"
                      "  - 255.255.255.254/31\n"
                      "  - 255.255.255.255\n"
                      "  - \"2001:db8:8000::/33\"\n"
                      "  - \"2001:db8::/33\"\n"
                      "  - \"2001:db8::1\"\n"
                      "  - \"::ffff:ffff:ffff:ffff\"\n"
                      "  - \"::1:0:0:0:0\"\n"
                      "  - \"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff\"\n"
                      "  - \"ffff::/16\"\n");
    const pt_ip_set *s = r.conf ? &r.conf->allow : NULL;
    CHECK(s != NULL);
    if (s) {
        CHECK_INT(s->nv4, 4);
        if (s->nv4 == 4) {
            CHECK_INT(s->v4[0].first, v4("10.0.0.0"));
            CHECK_INT(s->v4[0].last, v4("10.0.3.255"));
            CHECK_INT(s->v4[1].first, v4("10.0.5.0"));
            CHECK_INT(s->v4[1].last, v4("10.0.5.255"));
            CHECK_INT(s->v4[2].first, v4("192.168.0.0"));
            CHECK_INT(s->v4[2].last, v4("192.168.255.255"));
            CHECK_INT(s->v4[3].first, v4("255.255.255.254"));
            CHECK_INT(s->v4[3].last, UINT32_MAX);
        }
        CHECK(!set_has(s, "10.0.4.0"));
        CHECK(set_has(s, "10.0.3.255"));
        /* The two /33 halves join into one /32 (2001:db8::1 inside it);
         * ::ffff:ffff:ffff:ffff and ::1:0:0:0:0 touch across the 64-bit
         * halves; ffff::/16 swallows the all-ones address. */
        CHECK_INT(s->nv6, 3);
        if (s->nv6 == 3) {
            CHECK(u128_eq(s->v6[0].first, v6("::ffff:ffff:ffff:ffff")));
            CHECK(u128_eq(s->v6[0].last, v6("0:0:0:1::")));
            CHECK(u128_eq(s->v6[1].first, v6("2001:db8::")));
            CHECK(u128_eq(s->v6[1].last, v6("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")));
            CHECK(u128_eq(s->v6[2].first, v6("ffff::")));
            CHECK(u128_eq(s->v6[2].last, v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        }
        CHECK(!set_has(s, "::ffff:ffff:ffff:fffe"));
        CHECK(!set_has(s, "0:0:0:1::1"));
    }
    run_free(&r);
}

TEST(decision_deny_wins_then_allow)
{
    run r = configure("allow: [10.0.0.0/8, \"2001:db8::/32\", 127.0.0.1]\ndeny: [10.1.2.0/24, \"2001:db8:bad::/48\"]\n");
    const pt_ip_restriction_conf *c = r.conf;
    CHECK(c != NULL);
    if (c) {
        CHECK(allows(c, "10.0.0.1"));
        CHECK(allows(c, "10.1.3.0"));
        CHECK(!allows(c, "10.1.2.0"));
        CHECK(!allows(c, "10.1.2.255"));
        CHECK(!allows(c, "::ffff:10.1.2.9"));
        CHECK(allows(c, "::ffff:10.1.1.255"));
        CHECK(allows(c, "127.0.0.1"));
        CHECK(!allows(c, "127.0.0.2"));
        CHECK(!allows(c, "11.0.0.1"));
        CHECK(allows(c, "2001:db8::1"));
        CHECK(!allows(c, "2001:db8:bad::1"));
        CHECK(allows(c, "2001:db8:bae::1"));
        CHECK(!allows(c, "2001:db9::1"));
        CHECK(!allows(c, "not-an-address")); /* allow list present: unparsable is rejected */
        CHECK(!allows(c, ""));
    }
    run_free(&r);

    r = configure("deny: [127.0.0.0/8]\n");
    c = r.conf;
    CHECK(c != NULL);
    if (c) {
        CHECK(!allows(c, "127.0.0.1"));
        CHECK(!allows(c, "::ffff:127.255.0.1"));
        CHECK(allows(c, "128.0.0.0"));
        CHECK(allows(c, "::1"));
        CHECK(allows(c, "not-an-address")); /* deny only: unparsable matches nothing, passes */
    }
    run_free(&r);
}

/* ------------------------------------------------------------ large lists */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Reference entries, kept as plain (network, prefix) and checked linearly. */
typedef struct {
    bool is_v6;
    uint32_t a4;
    pt_u128 a6;
    unsigned plen;
} ref_entry;

static bool ref_match(const ref_entry *e, size_t n, const pt_ip_addr *a)
{
    for (size_t i = 0; i < n; i++) {
        if (e[i].is_v6 != a->is_v6) continue;
        unsigned p = e[i].plen;
        if (!a->is_v6) {
            if (p == 0 || (a->v4 >> (32 - p)) == (e[i].a4 >> (32 - p))) return true;
        } else {
            bool hi_ok, lo_ok;
            if (p <= 64) {
                hi_ok = p == 0 || (a->v6.hi >> (64 - p)) == (e[i].a6.hi >> (64 - p));
                lo_ok = true;
            } else {
                hi_ok = a->v6.hi == e[i].a6.hi;
                lo_ok = p == 128 ? a->v6.lo == e[i].a6.lo : (a->v6.lo >> (128 - p)) == (e[i].a6.lo >> (128 - p));
            }
            if (hi_ok && lo_ok) return true;
        }
    }
    return false;
}

static void format_addr(const pt_ip_addr *a, char *out, size_t cap)
{
    unsigned char b[16];
    if (!a->is_v6) {
        uint32_t x = htonl(a->v4);
        inet_ntop(AF_INET, &x, out, (socklen_t)cap);
        return;
    }
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(a->v6.hi >> (56 - 8 * i));
    for (int i = 0; i < 8; i++) b[8 + i] = (unsigned char)(a->v6.lo >> (56 - 8 * i));
    inet_ntop(AF_INET6, b, out, (socklen_t)cap);
}

/* Checks one address (given as parsed values) against the set and the
 * reference, through the textual parser the request path uses. */
static int check_one(const pt_ip_set *s, const ref_entry *ref, size_t n, pt_ip_addr a)
{
    char text[INET6_ADDRSTRLEN];
    format_addr(&a, text, sizeof(text));
    pt_ip_addr parsed;
    if (!pt_ip_addr_parse(pt_str_c(text), &parsed)) return 1;
    if (parsed.is_v6 != a.is_v6) return 0; /* a v6 address that formats as mapped: skip */
    bool want = ref_match(ref, n, &a), got = pt_ip_set_contains(s, &parsed);
    if (want != got) {
        fprintf(stderr, "  mismatch for %s: set=%d reference=%d\n", text, got, want);
        return 1;
    }
    return 0;
}

TEST(ten_thousand_entries_match_brute_force)
{
    enum { N = 10000 };
    ref_entry *ref = calloc(N, sizeof(*ref));
    size_t cap = (size_t)N * 64 + 64;
    char *yaml = malloc(cap);
    size_t used = (size_t)snprintf(yaml, cap, "deny:\n");
    for (size_t i = 0; i < N; i++) {
        ref_entry *e = &ref[i];
        e->is_v6 = (i % 3) == 2;
        if (!e->is_v6) {
            /* Cluster the networks in 10.0.0.0/12 so they overlap often. */
            e->plen = 12 + (unsigned)(rnd() % 21); /* 12..32 */
            uint32_t a = 0x0a000000u | (uint32_t)(rnd() & 0x000fffffu);
            e->a4 = a & (UINT32_MAX << (32 - e->plen));
            uint32_t x = htonl(e->a4);
            char t[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, &x, t, sizeof(t));
            used += (size_t)snprintf(yaml + used, cap - used, "  - %s/%u\n", t, e->plen);
        } else {
            e->plen = 40 + (unsigned)(rnd() % 89); /* 40..128, across the 64-bit halves */
            pt_u128 a = {0x20010db800000000ull | (rnd() & 0x00000000000fffffull) << 8, rnd() & 0xffff0000000000ffull};
            if (e->plen <= 64) {
                a.hi &= UINT64_MAX << (64 - e->plen);
                a.lo = 0;
            } else if (e->plen < 128) {
                a.lo &= UINT64_MAX << (128 - e->plen);
            }
            e->a6 = a;
            pt_ip_addr pa = {.is_v6 = true, .v6 = a};
            char t[INET6_ADDRSTRLEN];
            format_addr(&pa, t, sizeof(t));
            used += (size_t)snprintf(yaml + used, cap - used, "  - \"%s/%u\"\n", t, e->plen);
        }
    }
    run r = configure(yaml);
    CHECK_INT(r.errors.n, 0);
    const pt_ip_set *s = r.conf ? &r.conf->deny : NULL;
    CHECK(s != NULL);
    if (s) {
        /* Sorted, disjoint, not touching. */
        CHECK(s->nv4 > 0 && s->nv4 < N);
        CHECK(s->nv6 > 0 && s->nv6 < N);
        for (size_t i = 0; i < s->nv4; i++) {
            CHECK(s->v4[i].first <= s->v4[i].last);
            if (i) CHECK(s->v4[i].first > s->v4[i - 1].last + 1);
        }
        for (size_t i = 0; i < s->nv6; i++) {
            const pt_ip_range6 *x = &s->v6[i];
            CHECK(x->first.hi < x->last.hi || (x->first.hi == x->last.hi && x->first.lo <= x->last.lo));
            if (i) {
                pt_u128 prev = s->v6[i - 1].last, next = {prev.hi + (prev.lo == UINT64_MAX), prev.lo + 1};
                CHECK(x->first.hi > next.hi || (x->first.hi == next.hi && x->first.lo > next.lo));
            }
        }
        int failures = 0;
        /* Every entry's boundaries, just inside and just outside. */
        for (size_t i = 0; i < N && failures < 10; i++) {
            const ref_entry *e = &ref[i];
            if (!e->is_v6) {
                uint32_t first = e->a4, last = e->a4 | ~(UINT32_MAX << (32 - e->plen));
                if (e->plen == 32) last = e->a4;
                pt_ip_addr a = {.is_v6 = false};
                a.v4 = first;
                failures += check_one(s, ref, N, a);
                a.v4 = last;
                failures += check_one(s, ref, N, a);
                a.v4 = first - 1;
                failures += check_one(s, ref, N, a);
                a.v4 = last + 1;
                failures += check_one(s, ref, N, a);
            } else {
                pt_u128 first = e->a6, last = e->a6;
                if (e->plen <= 64) {
                    last.hi |= ~(UINT64_MAX << (64 - e->plen));
                    last.lo = UINT64_MAX;
                } else if (e->plen < 128) {
                    last.lo |= ~(UINT64_MAX << (128 - e->plen));
                }
                pt_ip_addr a = {.is_v6 = true};
                a.v6 = first;
                failures += check_one(s, ref, N, a);
                a.v6 = last;
                failures += check_one(s, ref, N, a);
                a.v6 = (pt_u128){first.hi - (first.lo == 0), first.lo - 1};
                failures += check_one(s, ref, N, a);
                a.v6 = (pt_u128){last.hi + (last.lo == UINT64_MAX), last.lo + 1};
                failures += check_one(s, ref, N, a);
            }
        }
        /* Random addresses in and around the clustered space. */
        for (int i = 0; i < 20000 && failures < 10; i++) {
            pt_ip_addr a = {.is_v6 = (i & 1) != 0};
            if (!a.is_v6) a.v4 = 0x0a000000u | (uint32_t)(rnd() & 0x001fffffu);
            else a.v6 = (pt_u128){0x20010db800000000ull | (rnd() & 0x00000000001fffffull) << 8, rnd()};
            failures += check_one(s, ref, N, a);
        }
        CHECK_INT(failures, 0);
    }
    run_free(&r);
    free(yaml);
    free(ref);
}

TEST_MAIN()
