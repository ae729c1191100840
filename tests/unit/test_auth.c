/* test_auth.c — consumers in the configuration (positioned errors, secret
 * storage rules, O(1) lookups) and the pure parts of the authentication
 * plugins: strict base64 and Basic parsing, key_auth's query stripping,
 * acl decisions. */
#include <openssl/evp.h>
#include <stdlib.h>

#include "config/config.h"
#include "plugins/acl/acl.h"
#include "plugins/mtls_auth/mtls_auth.h"
#include "plugins/basic_auth/basic_auth.h"
#include "plugins/key_auth/key_auth.h"
#include "testlib.h"

#define BASE                                                                                           \
    "listen: ['127.0.0.1:8080']\nupstreams: {up: {targets: ['127.0.0.1:9000']}}\n"                      \
    "routes:\n  - {match: {path_prefix: /}, upstream: up}\n"
/* lines 1-4 are BASE; "consumers:" is line 5, the first consumer line 6 */

/* sha512-crypt of "pw" (a real hash: crypt_checksalt accepts it) */
#define H6 "$6$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/"

static pt_config *load(const char *yaml, pt_errors *e)
{
    return pt_config_load_string("t.yaml", yaml, strlen(yaml), e);
}

static bool fails_with(const char *yaml, const char *prefix)
{
    pt_errors e = {0};
    pt_config *cfg = load(yaml, &e);
    bool ok = cfg == NULL;
    bool found = false;
    for (size_t i = 0; i < e.n; i++)
        if (strncmp(e.msgs[i], prefix, strlen(prefix)) == 0) found = true;
    if (!ok || !found) {
        fprintf(stderr, "  expected an error starting with %s\n", prefix);
        for (size_t i = 0; i < e.n; i++) fprintf(stderr, "    error: %s\n", e.msgs[i]);
    }
    if (cfg) pt_config_free(cfg);
    pt_errors_free(&e);
    return ok && found;
}

static void digest(const char *s, uint8_t out[32])
{
    unsigned int n = 32;
    EVP_Digest(s, strlen(s), out, &n, EVP_sha256(), NULL);
}

TEST(consumers_load_and_lookup)
{
    setenv("PT_TEST_KEY", "env-key-0123456789abcdef", 1);
    pt_errors e = {0};
    pt_config *cfg;
    cfg = load(BASE "consumers:\n"
                    "  - name: alice\n"
                    "    groups: [staff, admins]\n"
                    "    metadata: {team: payments}\n"
                    "    credentials:\n"
                    "      keys:\n"
                    "        - key_sha256: 0000000000000000000000000000000000000000000000000000000000000001\n"
                    "        - key: ${PT_TEST_KEY}\n"
                    "      basic: {username: al, password_hash: '" H6 "'}\n"
                    "  - name: bob\n",
               &e);
    for (size_t i = 0; i < e.n; i++) fprintf(stderr, "    error: %s\n", e.msgs[i]);
    CHECK(cfg != NULL);
    if (cfg) {
        const pt_consumers *cs = &cfg->consumers;
        CHECK_INT(cs->n, 2);
        CHECK_INT(cs->nkeys, 2);
        const pt_consumer *a = pt_consumer_find(cs, PT_STR_LIT("alice"));
        CHECK(a != NULL && pt_consumer_find(cs, PT_STR_LIT("bob")) != NULL);
        CHECK(pt_consumer_find(cs, PT_STR_LIT("carol")) == NULL);
        CHECK(pt_consumer_in_group(a, PT_STR_LIT("admins")) && !pt_consumer_in_group(a, PT_STR_LIT("x")));
        CHECK_SLICE(pt_consumer_meta_get(a, PT_STR_LIT("team")), "payments");
        CHECK(pt_consumer_by_basic_user(cs, PT_STR_LIT("al")) == a);
        CHECK(pt_consumer_by_basic_user(cs, PT_STR_LIT("alice")) == NULL);
        uint8_t d[32] = {0};
        d[31] = 1;
        CHECK(pt_consumer_by_key_digest(cs, d) == a);
        digest("env-key-0123456789abcdef", d);
        CHECK(pt_consumer_by_key_digest(cs, d) == a);
        digest("env-key-0123456789abcdeX", d);
        CHECK(pt_consumer_by_key_digest(cs, d) == NULL);
        CHECK_STR(cfg->identity_headers.consumer, "X-Consumer-Name");
        pt_config_free(cfg);
    }
    pt_errors_free(&e);
}

TEST(consumers_mtls_identities)
{
    pt_errors e = {0};
    pt_config *cfg = load(BASE "consumers:\n"
                               "  - name: alice\n"
                               "    credentials: {mtls: {subject: 'CN=alice,O=Acme', san: ['URI:spiffe://a/x', "
                               "'DNS:alice.test', 'URI:spiffe://a,b']}}\n"
                               "  - name: bob\n"
                               "    credentials: {mtls: {san: 'email:bob@acme.com'}}\n",
                          &e);
    for (size_t i = 0; i < e.n; i++) fprintf(stderr, "    error: %s\n", e.msgs[i]);
    CHECK(cfg != NULL);
    if (cfg) {
        const pt_consumers *cs = &cfg->consumers;
        const pt_consumer *a = pt_consumer_find(cs, PT_STR_LIT("alice")), *b = pt_consumer_find(cs, PT_STR_LIT("bob"));
        CHECK(pt_consumer_by_cert(cs, PT_STR_LIT("subject:CN=alice,O=Acme")) == a);
        CHECK(pt_consumer_by_cert(cs, PT_STR_LIT("URI:spiffe://a/x")) == a);
        CHECK(pt_consumer_by_cert(cs, PT_STR_LIT("DNS:alice.test")) == a);
        CHECK(pt_consumer_by_cert(cs, PT_STR_LIT("URI:spiffe://a%2Cb")) == a); /* as the TLS layer writes it */
        CHECK(pt_consumer_by_cert(cs, PT_STR_LIT("email:bob@acme.com")) == b);
        CHECK(pt_consumer_by_cert(cs, PT_STR_LIT("CN=alice,O=Acme")) == NULL);
        CHECK(pt_consumer_by_cert(cs, PT_STR_LIT("DNS:alice.tes")) == NULL);
        pt_config_free(cfg);
    }
    pt_errors_free(&e);
    CHECK(fails_with(BASE "consumers:\n  - {name: a, credentials: {mtls: {san: 'IP:10.0.0.1'}}}\n", "t.yaml:6:"));
    CHECK(fails_with(BASE "consumers:\n  - {name: a, credentials: {mtls: {cn: a}}}\n", "t.yaml:6:"));
    CHECK(fails_with(BASE "consumers:\n  - {name: a, credentials: {mtls: {san: 'DNS:x'}}}\n"
                          "  - {name: b, credentials: {mtls: {san: 'DNS:x'}}}\n",
                     "t.yaml:"));
}

TEST(mtls_subject_cn)
{
    pt_str cn = PT_STR_NULL;
    CHECK_INT(pt_mtls_subject_cn(PT_STR_LIT("CN=alice,O=Acme"), &cn), 1);
    CHECK_SLICE(cn, "alice");
    CHECK_INT(pt_mtls_subject_cn(PT_STR_LIT("O=Acme\\,CN=x,CN=bob"), &cn), 1); /* an escaped ',' is data */
    CHECK_SLICE(cn, "bob");
    CHECK_INT(pt_mtls_subject_cn(PT_STR_LIT("O=Acme,OU=CN=x"), &cn), 0);
    CHECK_INT(pt_mtls_subject_cn(PT_STR_LIT("CN=a+CN=b,O=x"), &cn), -1);
    CHECK_INT(pt_mtls_subject_cn(PT_STR_LIT("CN=a,CN=b"), &cn), -1);
    CHECK_INT(pt_mtls_subject_cn(PT_STR_LIT(""), &cn), 0);
}

TEST(consumers_many_keys_all_found)
{
    /* 300 consumers with a key each: every digest is found in the table */
    size_t cap = 300 * 140 + 512;
    char *y = malloc(cap);
    size_t n = (size_t)snprintf(y, cap, "%sconsumers:\n", BASE);
    for (int i = 0; i < 300; i++) {
        char key[32];
        snprintf(key, sizeof(key), "key-number-%06d", i);
        uint8_t d[32];
        digest(key, d);
        n += (size_t)snprintf(y + n, cap - n, "  - {name: c%d, credentials: {keys: [{key_sha256: ", i);
        for (int k = 0; k < 32; k++) n += (size_t)snprintf(y + n, cap - n, "%02x", d[k]);
        n += (size_t)snprintf(y + n, cap - n, "}]}}\n");
    }
    pt_errors e = {0};
    pt_config *cfg = load(y, &e);
    CHECK(cfg != NULL);
    int found = 0;
    for (int i = 0; cfg && i < 300; i++) {
        char key[32], name[16];
        snprintf(key, sizeof(key), "key-number-%06d", i);
        snprintf(name, sizeof(name), "c%d", i);
        uint8_t d[32];
        digest(key, d);
        const pt_consumer *c = pt_consumer_by_key_digest(&cfg->consumers, d);
        if (c && !strcmp(c->name, name)) found++;
    }
    CHECK_INT(found, 300);
    if (cfg) pt_config_free(cfg);
    pt_errors_free(&e);
    free(y);
}

TEST(consumer_errors_are_positioned)
{
    unsetenv("PT_TEST_UNSET_VAR");
    setenv("PT_TEST_SHORT", "short", 1);
    CHECK(fails_with(BASE "consumers:\n  - {name: a, credentials: {keys: [{key: literal-key-0123456789}]}}\n",
                     "t.yaml:6:42: consumer a: key must be written as ${ENV_NAME}"));
    CHECK(fails_with(BASE "consumers:\n  - {name: a, credentials: {keys: [{key: 'x${PT_TEST_SHORT}'}]}}\n",
                     "t.yaml:6:42: consumer a: key must be written as ${ENV_NAME}"));
    CHECK(fails_with(BASE "consumers:\n  - {name: a, credentials: {keys: [{key: '${PT_TEST_UNSET_VAR}'}]}}\n",
                     "t.yaml:6:42:"));
    CHECK(fails_with(BASE "consumers:\n  - {name: a, credentials: {keys: [{key: '${PT_TEST_SHORT}'}]}}\n",
                     "t.yaml:6:42: consumer a: the key from the environment is too short"));
    CHECK(fails_with(BASE "consumers:\n  - {name: a, credentials: {keys: [{key_sha256: abc}]}}\n",
                     "t.yaml:6:49: consumer a: key_sha256 must be 64 hex digits"));
    CHECK(fails_with(BASE "consumers:\n  - {name: a, credentials: {basic: {password_hash: '$1$abc$abcdefghijklmnopqrstuv'}}}\n",
                     "t.yaml:6:52: consumer a: password_hash is an MD5-crypt hash"));
    CHECK(fails_with(BASE "consumers:\n  - {name: a, credentials: {basic: {password_hash: 'abJnggxhB/yWI'}}}\n",
                     "t.yaml:6:52: consumer a: password_hash is a DES crypt hash"));
    CHECK(fails_with(BASE "consumers:\n  - {name: a, credentials: {basic: {password_hash: '$6$saltsalt$'}}}\n",
                     "t.yaml:6:52: consumer a: password_hash is a malformed hash"));
    CHECK(fails_with(BASE "consumers:\n  - {name: a}\n  - {name: a}\n", "t.yaml:7:12: consumer \"a\" is declared twice"));
    CHECK(fails_with(BASE "consumers:\n  - {name: 'a b'}\n", "t.yaml:6:12: consumer name \"a b\""));
    CHECK(fails_with(BASE "consumers:\n  - {name: a, groups: ['x,y']}\n", "t.yaml:6:24: consumer a: group name"));
    CHECK(fails_with(BASE "consumers:\n  - {name: a, colour: red}\n", "t.yaml:6:15: unknown key 'colour'"));
    CHECK(fails_with(BASE "consumers:\n"
                          "  - {name: a, credentials: {keys: [{key_sha256: "
                          "0000000000000000000000000000000000000000000000000000000000000001}]}}\n"
                          "  - {name: b, credentials: {keys: [{key_sha256: "
                          "0000000000000000000000000000000000000000000000000000000000000001}]}}\n",
                     "t.yaml:6:3: consumers a and b share an API key"));
    CHECK(fails_with(BASE "consumers:\n  - {name: a, credentials: {basic: {password_hash: '" H6 "'}}}\n"
                          "  - {name: b, credentials: {basic: {username: a, password_hash: '" H6 "'}}}\n",
                     "t.yaml:7:28: consumer b: basic username \"a\" belongs to another consumer"));
    CHECK(fails_with(BASE "identity_headers: {consumer: 'X Bad'}\n", "t.yaml:5:30: identity_headers.consumer"));
}

TEST(route_auth_settings)
{
    pt_errors e = {0};
    pt_config *cfg = load("listen: ['127.0.0.1:8080']\nupstreams: {up: {targets: ['127.0.0.1:9000']}}\n"
                          "consumers: [{name: guest}]\n"
                          "routes:\n  - {match: {path_prefix: /}, upstream: up, auth: {anonymous: guest}}\n",
                          &e);
    CHECK(cfg && cfg->routes[0].auth.anonymous && !strcmp(cfg->routes[0].auth.anonymous->name, "guest"));
    if (cfg) pt_config_free(cfg);
    pt_errors_free(&e);
    const char *head = "listen: ['127.0.0.1:8080']\nupstreams: {up: {targets: ['127.0.0.1:9000']}}\n"
                       "consumers: [{name: guest}]\nroutes:\n";
    char y[512];
    snprintf(y, sizeof(y), "%s  - {match: {path_prefix: /}, upstream: up, auth: {anonymous: nobody}}\n", head);
    CHECK(fails_with(y, "t.yaml:5:63: auth.anonymous: no consumer named \"nobody\""));
    snprintf(y, sizeof(y), "%s  - {match: {path_prefix: /}, upstream: up, auth: {mode: some}}\n", head);
    CHECK(fails_with(y, "t.yaml:5:58: auth.mode must be any"));
    snprintf(y, sizeof(y), "%s  - {match: {path_prefix: /}, upstream: up, auth: {mode: all, anonymous: guest}}\n", head);
    CHECK(fails_with(y, "t.yaml:5:74: auth.anonymous cannot be combined with mode: all"));
}

TEST(base64_strict)
{
    char out[64];
    CHECK_INT(pt_basic_b64_decode(PT_STR_LIT("YWxpY2U6cHc="), out, sizeof(out)), 8);
    CHECK_STRN(out, 8, "alice:pw");
    CHECK_INT(pt_basic_b64_decode(PT_STR_LIT("YWxpY2U6cHc"), out, sizeof(out)), -1);   /* unpadded */
    CHECK_INT(pt_basic_b64_decode(PT_STR_LIT("YWxpY2U6cHd="), out, sizeof(out)), -1);  /* leftover bits */
    CHECK_INT(pt_basic_b64_decode(PT_STR_LIT("YW=pY2U6cHc="), out, sizeof(out)), -1);  /* '=' inside */
    CHECK_INT(pt_basic_b64_decode(PT_STR_LIT("YWxp Y2U="), out, sizeof(out)), -1);     /* whitespace */
    CHECK_INT(pt_basic_b64_decode(PT_STR_LIT("YWxpY2U-cHc="), out, sizeof(out)), -1);  /* base64url */
    CHECK_INT(pt_basic_b64_decode(PT_STR_LIT("YQ=="), out, sizeof(out)), 1);
    CHECK_INT(pt_basic_b64_decode(PT_STR_LIT("YR=="), out, sizeof(out)), -1);
    CHECK_INT(pt_basic_b64_decode(PT_STR_LIT(""), out, sizeof(out)), -1);
}

TEST(basic_parse)
{
    pt_arena *a = pt_arena_new(4096);
    pt_str u, p;
    CHECK_INT(pt_basic_parse(a, PT_STR_LIT("Basic YWxpY2U6cDpx"), &u, &p), 1); /* alice:p:q */
    CHECK_SLICE(u, "alice");
    CHECK_SLICE(p, "p:q");
    CHECK_INT(pt_basic_parse(a, PT_STR_LIT("basic YWxpY2U6"), &u, &p), 1);      /* empty password is allowed */
    CHECK_INT((int)p.n, 0);
    CHECK_INT(pt_basic_parse(a, PT_STR_LIT("Bearer abc"), &u, &p), 0);
    CHECK_INT(pt_basic_parse(a, PT_STR_LIT("Basicx YWxpY2U6"), &u, &p), 0);
    CHECK_INT(pt_basic_parse(a, PT_STR_LIT("Basic bm9jb2xvbg=="), &u, &p), -1); /* nocolon */
    CHECK_INT(pt_basic_parse(a, PT_STR_LIT("Basic OnB3"), &u, &p), -1);         /* :pw, empty user */
    CHECK_INT(pt_basic_parse(a, PT_STR_LIT("Basic w6k6cHc="), &u, &p), 1);      /* "é:pw" UTF-8 */
    CHECK_INT(pt_basic_parse(a, PT_STR_LIT("Basic 6Tpwdw=="), &u, &p), -1);     /* latin-1 0xE9 */
    CHECK_INT(pt_basic_parse(a, PT_STR_LIT("Basic YQFiOnB3"), &u, &p), -1);     /* control char */
    CHECK_INT(pt_basic_parse(a, PT_STR_LIT("Basic "), &u, &p), -1);
    pt_arena_free(a);
}

TEST(key_auth_query)
{
    pt_arena *a = pt_arena_new(4096);
    pt_str v, rest;
    CHECK_INT(pt_key_auth_take_query(a, PT_STR_LIT("a=1&api_key=k1&b=2"), PT_STR_LIT("api_key"), &v, &rest), 1);
    CHECK_SLICE(v, "k1");
    CHECK_SLICE(rest, "a=1&b=2");
    CHECK_INT(pt_key_auth_take_query(a, PT_STR_LIT("api%5Fkey=k%2B1"), PT_STR_LIT("api_key"), &v, &rest), 1);
    CHECK_SLICE(v, "k+1");
    CHECK_SLICE(rest, "");
    CHECK_INT(pt_key_auth_take_query(a, PT_STR_LIT("api_key=x&api_key=y"), PT_STR_LIT("api_key"), &v, &rest), 2);
    CHECK_SLICE(v, "x");
    CHECK_INT(pt_key_auth_take_query(a, PT_STR_LIT("api_keys=1&&x"), PT_STR_LIT("api_key"), &v, &rest), 0);
    CHECK_SLICE(rest, "api_keys=1&x");
    pt_arena_free(a);
}

TEST(acl_decisions)
{
    const char *staff[] = {"staff"}, *admins[] = {"admins"}, *banned[] = {"banned"};
    pt_acl_conf c = {.dflt = {.allow = staff, .nallow = 1, .deny = banned, .ndeny = 1}};
    c.has_method[PT_METHOD_DELETE] = true;
    c.by_method[PT_METHOD_DELETE] = (pt_acl_rule){.allow = admins, .nallow = 1};
    const char *g1[] = {"staff"}, *g2[] = {"staff", "banned"}, *g3[] = {"admins"};
    pt_consumer s = {.name = "s", .groups = g1, .ngroups = 1}, b = {.name = "b", .groups = g2, .ngroups = 2},
                a = {.name = "a", .groups = g3, .ngroups = 1};
    CHECK(pt_acl_allows(&c, &s, PT_METHOD_GET));
    CHECK(!pt_acl_allows(&c, &b, PT_METHOD_GET));
    CHECK(!pt_acl_allows(&c, &a, PT_METHOD_GET));
    CHECK(pt_acl_allows(&c, &a, PT_METHOD_DELETE));
    CHECK(!pt_acl_allows(&c, &s, PT_METHOD_DELETE));
}

TEST(acl_claim_values)
{
    const char *v[] = {"acme", "mfa", "true", "42"};
    CHECK(pt_acl_claim_matches(PT_STR_LIT("acme"), v, 1));
    CHECK(!pt_acl_claim_matches(PT_STR_LIT("acme2"), v, 1));
    CHECK(!pt_acl_claim_matches(PT_STR_NULL, v, 4));       /* absent */
    CHECK(!pt_acl_claim_matches(PT_STR_LIT(""), v, 4));
    CHECK(pt_acl_claim_matches(PT_STR_LIT("[\"pwd\",\"mfa\"]"), v, 2));
    CHECK(!pt_acl_claim_matches(PT_STR_LIT("[\"pwd\",\"otp\"]"), v, 4));
    CHECK(pt_acl_claim_matches(PT_STR_LIT("[1,42]"), v, 4));
    CHECK(pt_acl_claim_matches(PT_STR_LIT("true"), v, 4));
    CHECK(!pt_acl_claim_matches(PT_STR_LIT("[[\"acme\"]]"), v, 4)); /* nested: no */
    CHECK(!pt_acl_claim_matches(PT_STR_LIT("[\"acme\""), v, 4));    /* not JSON */
    CHECK(!pt_acl_claim_matches(PT_STR_LIT("{\"acme\":1}"), v, 4));
}

TEST_MAIN()
