/* test_tls_sans.c — subjectAltName list formatting (tls/tls_server.h). */
#include <openssl/x509v3.h>

#include "testlib.h"
#include "tls/tls_server.h"

/* A bare certificate whose subjectAltName extension holds `gens`. */
static X509 *cert_with(GENERAL_NAMES *gens)
{
    X509 *x = X509_new();
    if (gens) X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, 0);
    GENERAL_NAMES_free(gens);
    return x;
}

static void add(GENERAL_NAMES *gens, int type, const void *data, int len)
{
    GENERAL_NAME *g = GENERAL_NAME_new();
    ASN1_STRING *s = ASN1_STRING_type_new(type == GEN_IPADD ? V_ASN1_OCTET_STRING : V_ASN1_IA5STRING);
    ASN1_STRING_set(s, data, len);
    GENERAL_NAME_set0_value(g, type, s);
    sk_GENERAL_NAME_push(gens, g);
}

static char *format(GENERAL_NAMES *gens)
{
    X509 *x = cert_with(gens);
    char *s = pt_tls_format_sans(x);
    X509_free(x);
    return s;
}

TEST(all_kinds_in_certificate_order)
{
    GENERAL_NAMES *g = GENERAL_NAMES_new();
    static const unsigned char v4[4] = {10, 0, 0, 1};
    static const unsigned char v6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1};
    add(g, GEN_DNS, "a.example", -1);
    add(g, GEN_URI, "spiffe://acme/ns/x", -1);
    add(g, GEN_EMAIL, "bob@acme.com", -1);
    add(g, GEN_IPADD, v4, 4);
    add(g, GEN_IPADD, v6, 16);
    char *s = format(g);
    CHECK_STR(s, "DNS:a.example,URI:spiffe://acme/ns/x,email:bob@acme.com,IP:10.0.0.1,IP:2001:db8::1");
    free(s);
}

TEST(control_characters_and_commas_cannot_forge_entries)
{
    GENERAL_NAMES *g = GENERAL_NAMES_new();
    add(g, GEN_URI, "spiffe://x,DNS:admin\r\nX-Evil: 1", -1);
    add(g, GEN_DNS, "a\0b", 3);
    char *s = format(g);
    CHECK_STR(s, "URI:spiffe://x%2CDNS:admin??X-Evil: 1,DNS:a?b");
    free(s);
}

TEST(other_kinds_skipped_and_bad_ip_lengths_ignored)
{
    GENERAL_NAMES *g = GENERAL_NAMES_new();
    add(g, GEN_IPADD, "\1\2\3", 3);
    GENERAL_NAME *rid = GENERAL_NAME_new();
    GENERAL_NAME_set0_value(rid, GEN_RID, OBJ_txt2obj("1.2.3.4", 1));
    sk_GENERAL_NAME_push(g, rid);
    add(g, GEN_DNS, "only.example", -1);
    char *s = format(g);
    CHECK_STR(s, "DNS:only.example");
    free(s);
    CHECK(format(GENERAL_NAMES_new()) == NULL); /* empty extension */
    X509 *x = cert_with(NULL);                  /* no extension */
    CHECK(pt_tls_format_sans(x) == NULL);
    X509_free(x);
}

TEST(bounded_length)
{
    char name[200];
    memset(name, 'a', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    GENERAL_NAMES *g = GENERAL_NAMES_new();
    for (int i = 0; i < 19; i++) add(g, GEN_DNS, name, -1); /* 19 * 204 - 1 = 3875 bytes: fits */
    char *s = format(g);
    CHECK(s && strlen(s) == 19 * 204 - 1);
    free(s);
    g = GENERAL_NAMES_new();
    for (int i = 0; i < 21; i++) add(g, GEN_DNS, name, -1); /* 4283 bytes: too long */
    CHECK(format(g) == NULL);
}

TEST_MAIN()
