/* test_jwt.c — the jwt plugin's pure parts: strict base64url, bounded JSON,
 * key loading bound to algorithms (PEM, secrets, JWKs, JWK Sets), compact
 * JWS parsing and its refusals, signature verification per algorithm with
 * fixed vectors minted by python3-jwt (and tampered / psychic / confused
 * variants), claim checks at their boundaries, token extraction, claim
 * header values, the verified-token cache, and configure() through the real
 * config loader. The request round trip is tests/integration/test_jwt.py. */
#include <stdio.h>

#include "config/config.h"
#include "plugins/jwt/jwk.h"
#include "plugins/jwt/jws.h"
#include "plugins/jwt/jwt.h"
#include "plugin/plugin.h"
#include "testlib.h"

/* ------------------------------------------------------------- vectors
 * Keys made by cryptography, tokens by python3-jwt 2.6; claims
 * {"sub":"alice","iss":"https://idp.example","aud":["orders","x"],
 *  "exp":4102444800,"iat":1700000000}. */
static const char TOK_RS256[] =
    "eyJhbGciOiJSUzI1NiIsImtpZCI6InIxIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsImlzcyI6Imh0dHBzOi8vaWRwLmV4"
    "YW1wbGUiLCJhdWQiOlsib3JkZXJzIiwieCJdLCJleHAiOjQxMDI0NDQ4MDAsImlhdCI6MTcwMDAwMDAwMH0.bKYlByrfIRNtC5XD"
    "e4TprwhGlOPzt6FMB_MEbGcUfag-6dIgQlA7_m06-1upzWwDzfv0ftsJjOpO71LIDAJXlat4F2aw9y_lNJWpAMxtFIVQpeB3U5sO"
    "7w_AROAPaOLPEGuqqjfOi2y2m1w_A2B1M7nQPxTG0DgqQW1cVwriBsEb7c_GiBMrYZrlJDlDTdrJ9nyVWwgScCMc0XgtKbhq2PKg"
    "eQkzvctyIMTCB73GA_h2Asn4c-TQmbf0N3hFJvhW90bLFyC3I4hq6xlU6CyJxpmxGJgyiT8z3Q1L98Q7VykWnvp8bcrxqwURDuF4"
    "i1WS9D5z6W-avfVWp15_00yxDQ";
static const char TOK_PS256[] =
    "eyJhbGciOiJQUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImlzcyI6Imh0dHBzOi8vaWRwLmV4YW1wbGUiLCJhdWQ"
    "iOlsib3JkZXJzIiwieCJdLCJleHAiOjQxMDI0NDQ4MDAsImlhdCI6MTcwMDAwMDAwMH0.bYF4fsw2SBLSEv0WxFzGevIUK35AGEy"
    "PV2hVHQc31y_4N1saJYn-C6LVnrSfhrYcD3fRC97cjy9Jx9J1oy79pk0P59LGGulMmzHLDCB5zaaZ_dCP3b2WU9OsVIoNADDlrtw"
    "wvpQk_z4WUD3rye0uvsqckdEpVuLJjBFRQMZy-MBPvIni_19_s5AyZciMo0yTH38Ya2VSU05fKc1hZmel1BznxwgsxdIAfjCRkct"
    "LgqluC3Q-c3KlM4FChUSriC0Ni9VnXy5QGQqvJVvq3dQ8HnmluJ0SAFyCld7REpXF3xep4NZ6Y3cPATePP3tFzTI_0AIhMFthNqm"
    "Glp2PAh97PQ";
static const char TOK_ES256[] =
    "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImlzcyI6Imh0dHBzOi8vaWRwLmV4YW1wbGUiLCJhdWQ"
    "iOlsib3JkZXJzIiwieCJdLCJleHAiOjQxMDI0NDQ4MDAsImlhdCI6MTcwMDAwMDAwMH0.bTmui--rsWFYjX5fNHl6wczmtNfxthe"
    "0a4H_Rw47ZM4ptTo2iL_YcTvAz8hTl0P9y_RIDhFYBwITInmeguULWw";
static const char TOK_EDDSA[] =
    "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImlzcyI6Imh0dHBzOi8vaWRwLmV4YW1wbGUiLCJhdWQ"
    "iOlsib3JkZXJzIiwieCJdLCJleHAiOjQxMDI0NDQ4MDAsImlhdCI6MTcwMDAwMDAwMH0.kijFyvKrEC5vPAQRr_mAjFM2qeWndHg"
    "dqWKJeAeApypgk1RWX_97V54erNoVqBOBwcQPR-1ckiy6GMA3Mw9KAw";
static const char TOK_HS256[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImlzcyI6Imh0dHBzOi8vaWRwLmV4YW1wbGUiLCJhdWQ"
    "iOlsib3JkZXJzIiwieCJdLCJleHAiOjQxMDI0NDQ4MDAsImlhdCI6MTcwMDAwMDAwMH0.Nqb4TXpI6CGNtl4uwlZ1UAgdbDrwVV8"
    "swbf25Cni9dQ";
static const char RSA_JWK[] =
    "{\"kty\":\"RSA\",\"key_ops\":[\"verify\"],\"n\":\"sK_jB7p-n1EuRvTCz4aExt4WX6qKiueaafDqPNQqJDufiFNpYThVyDONwG9J3"
    "XlhoEuVBWHGIxx51FJp0-CRuiixHnODH1Bqnnmo-3saGxa74DYjxmeilmVncD96ucSTlezI81WxQjvP3RwJwnhhG130_GspsXy-M"
    "e1ciVpZMGkcyEZZ-yMcu6eJTUFLAcL2FDRX7v_eJ9LLTHL0JEksUM7ZC7XGboq-Pstaeg1XsXHcYn5_SGDTPZU-prqwxpLvY85JL"
    "7CJKGQWVWEnaTR4BqHvdUBQWcWYw6Fl37EkCaM6qSAJGkiPutWKCMmT1X8nMCzsqWwCgoDflwkY39cGew\",\"e\":\"AQAB\"}";
static const char EC_JWK[] =
    "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"Jc3oc0TF_Io3_-3IQF66SgNgWtYQJOcHkwOj4OHwl58\",\"y\":\"8nPuwh3tnMU55TUeeYL"
    "Y40lRjNc45STbG8JLEM0uAf8\"}";
static const char ED_JWK[] =
    "{\"x\":\"rmCT2BqP_DdHOGpJ5ky2U7rzk-ElD3mnft2uRzXyivo\",\"kty\":\"OKP\",\"crv\":\"Ed25519\"}";
static const char EC_PEM[] =
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEJc3oc0TF/Io3/+3IQF66SgNgWtYQ\nJOcHkwOj"
    "4OHwl5/yc+7CHe2cxTnlNR55gtjjSVGM1zjlJNsbwksQzS4B/w==\n-----END PUBLIC KEY-----\n";
static const char HS_SECRET[] = "0123456789abcdef0123456789abcdef";
#define NOW 1800000000 /* between iat and exp */

/* ------------------------------------------------------------- helpers */

static long dec(const char *s, uint8_t *out, size_t cap) { return pt_b64url_decode(s, strlen(s), out, cap); }

static bool jwk_key(const char *json, int alg, pt_jwt_key *k)
{
    json_t *j = pt_jwt_json_parse(json, strlen(json), 8);
    char err[200];
    bool ok = j && pt_jwk_parse(j, alg, k, err, sizeof(err));
    json_decref(j);
    return ok;
}

/* Parses `tok` and verifies it with `k`. */
static pt_jwt_err verify_with(const char *tok, const pt_jwt_key *k)
{
    pt_jws t;
    pt_jwt_err e = pt_jws_parse(pt_str_c(tok), 65536, &t);
    if (e != PT_JWT_OK) return e;
    e = pt_jws_verify(&t, k);
    pt_jws_free(&t);
    return e;
}

static pt_jwt_err parse_only(const char *tok)
{
    pt_jws t;
    pt_jwt_err e = pt_jws_parse(pt_str_c(tok), 65536, &t);
    if (e == PT_JWT_OK) pt_jws_free(&t);
    return e;
}

/* base64url of `s` (no padding) into out. */
static void b64(const char *s, size_t n, char *out)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | (uint8_t)s[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = al[(acc >> bits) & 63];
        }
    }
    if (bits) out[o++] = al[(acc << (6 - bits)) & 63];
    out[o] = '\0';
}

/* A token "b64(header).b64(payload).sig". */
static char *forge(const char *header, const char *payload, const char *sig)
{
    static char buf[8192];
    char h[2048], p[4096];
    b64(header, strlen(header), h);
    b64(payload, strlen(payload), p);
    snprintf(buf, sizeof(buf), "%s.%s.%s", h, p, sig);
    return buf;
}

/* ------------------------------------------------------------- base64url */

TEST(b64url_strict)
{
    uint8_t b[64];
    CHECK_INT(dec("", b, sizeof(b)), 0);
    CHECK_INT(dec("YQ", b, sizeof(b)), 1);
    CHECK(b[0] == 'a');
    CHECK_INT(dec("YWI", b, sizeof(b)), 2);
    CHECK_INT(dec("YWJj", b, sizeof(b)), 3);
    CHECK_INT(dec("-_8", b, sizeof(b)), 2);
    CHECK(b[0] == 0xfb && b[1] == 0xff);
    CHECK_INT(dec("YQ==", b, sizeof(b)), -1);  /* padding */
    CHECK_INT(dec("YWJ=", b, sizeof(b)), -1);
    CHECK_INT(dec("+/8", b, sizeof(b)), -1);   /* standard alphabet */
    CHECK_INT(dec("YW Jj", b, sizeof(b)), -1); /* whitespace */
    CHECK_INT(dec("YWJjZ", b, sizeof(b)), -1); /* length 1 mod 4 */
    CHECK_INT(dec("YR", b, sizeof(b)), -1);    /* non-canonical: unused bits set */
    CHECK_INT(dec("YWJ", b, 1), -1);           /* does not fit */
    CHECK_INT(pt_b64url_decode("YQ\0A", 4, b, sizeof(b)), -1);
}

TEST(json_bounded_and_duplicate_free)
{
    json_t *j = pt_jwt_json_parse("{\"a\":[[1]]}", 11, 3);
    CHECK(j != NULL);
    json_decref(j);
    CHECK(pt_jwt_json_parse("{\"a\":[[1]]}", 11, 2) == NULL);
    /* brackets in strings do not count */
    j = pt_jwt_json_parse("{\"a\":\"[[[[\"}", 12, 1);
    CHECK(j != NULL);
    json_decref(j);
    CHECK(pt_jwt_json_parse("{\"a\":1,\"a\":2}", 13, 4) == NULL);
    CHECK(pt_jwt_json_parse("{\"a\":1} x", 9, 4) == NULL);
}

TEST(alg_names_exact)
{
    CHECK_INT(pt_jwt_alg_from_str(PT_STR_LIT("RS256")), PT_JWT_RS256);
    CHECK_INT(pt_jwt_alg_from_str(PT_STR_LIT("EdDSA")), PT_JWT_EDDSA);
    const char *bad[] = {"none", "None", "NONE", "nOnE", "rs256", "HS256 ", "", "ES256K"};
    for (size_t i = 0; i < PT_ARRAY_LEN(bad); i++) CHECK_INT(pt_jwt_alg_from_str(pt_str_c(bad[i])), PT_JWT_ALG_UNKNOWN);
}

/* ------------------------------------------------------------- keys */

TEST(keys_bound_to_algorithms)
{
    pt_jwt_key k;
    char err[200];
    CHECK(!pt_jwt_key_from_secret((const uint8_t *)"short", 5, PT_JWT_HS256, NULL, &k, err, sizeof(err)));
    CHECK(strstr(err, "at least 32") != NULL);
    CHECK(!pt_jwt_key_from_secret((const uint8_t *)HS_SECRET, 32, PT_JWT_HS384, NULL, &k, err, sizeof(err)));
    CHECK(!pt_jwt_key_from_secret((const uint8_t *)HS_SECRET, 32, PT_JWT_RS256, NULL, &k, err, sizeof(err)));
    /* An EC PEM is no RS256 key, no ES384 key, no HMAC secret. */
    CHECK(!pt_jwt_key_from_pem(EC_PEM, strlen(EC_PEM), PT_JWT_RS256, NULL, &k, err, sizeof(err)));
    CHECK(!pt_jwt_key_from_pem(EC_PEM, strlen(EC_PEM), PT_JWT_ES384, NULL, &k, err, sizeof(err)));
    CHECK(!pt_jwt_key_from_pem(EC_PEM, strlen(EC_PEM), PT_JWT_HS256, NULL, &k, err, sizeof(err)));
    CHECK(!pt_jwt_key_from_pem("garbage", 7, PT_JWT_ES256, NULL, &k, err, sizeof(err)));
    CHECK(pt_jwt_key_from_pem(EC_PEM, strlen(EC_PEM), PT_JWT_ES256, "e1", &k, err, sizeof(err)));
    CHECK_STR(k.kid, "e1");
    CHECK_INT(k.ec_len, 32);
    CHECK_INT(verify_with(TOK_ES256, &k), PT_JWT_OK);
    pt_jwt_key_clear(&k);
    /* JWKs: the type must fit the algorithm; a JWK alg must agree with the configured one. */
    CHECK(!jwk_key(RSA_JWK, PT_JWT_ES256, &k));
    CHECK(!jwk_key(RSA_JWK, PT_JWT_HS256, &k));
    CHECK(!jwk_key(EC_JWK, PT_JWT_ES384, &k));
    CHECK(!jwk_key(ED_JWK, PT_JWT_ES256, &k));
    CHECK(!jwk_key(RSA_JWK, PT_JWT_ALG_UNKNOWN, &k)); /* no alg anywhere */
    CHECK(!jwk_key("{\"kty\":\"RSA\",\"alg\":\"RS256\",\"n\":\"AQAB\",\"e\":\"AQAB\"}", PT_JWT_ALG_UNKNOWN, &k));
    CHECK(!jwk_key("{\"kty\":\"oct\",\"alg\":\"HS256\",\"k\":\"c2hvcnQ\"}", PT_JWT_ALG_UNKNOWN, &k));
    CHECK(!jwk_key("{\"kty\":\"oct\",\"alg\":\"RS256\",\"k\":\"c2hvcnQ\"}", PT_JWT_RS256, &k));
    /* A point off the curve. */
    CHECK(!jwk_key("{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"Jc3oc0TF_Io3_-3IQF66SgNgWtYQJOcHkwOj4OHwl58\","
                   "\"y\":\"8nPuwh3tnMU55TUeeYLY40lRjNc45STbG8JLEM0uAf4\"}",
                   PT_JWT_ES256, &k));
}

TEST(jwks_document)
{
    char doc[4096];
    snprintf(doc, sizeof(doc),
             "{\"keys\":[%.*s,\"kid\":\"r1\",\"alg\":\"RS256\"},%.*s,\"kid\":\"enc\",\"use\":\"enc\"},"
             "%.*s,\"kid\":\"e1\"}]}",
             (int)strlen(RSA_JWK) - 1, RSA_JWK, (int)strlen(RSA_JWK) - 1, RSA_JWK, (int)strlen(EC_JWK) - 1, EC_JWK);
    pt_jwt_keyset s = {0};
    size_t skipped = 0;
    char err[200];
    /* e1 has no alg: with the default ES256 it loads, strictly without one it is an error. */
    CHECK(pt_jwks_parse(doc, strlen(doc), PT_JWT_ALG_UNKNOWN, false, &s, &skipped, err, sizeof(err)));
    CHECK_INT(s.n, 1);
    CHECK_INT(skipped, 2);
    pt_jwt_keyset_free(&s);
    CHECK(!pt_jwks_parse(doc, strlen(doc), PT_JWT_ALG_UNKNOWN, true, &s, &skipped, err, sizeof(err)));
    pt_jwt_keyset_free(&s);
    CHECK(!pt_jwks_parse(doc, strlen(doc), PT_JWT_ES256, true, &s, &skipped, err, sizeof(err))); /* r1 is RS256 */
    pt_jwt_keyset_free(&s);
    CHECK(!pt_jwks_parse("[]", 2, PT_JWT_RS256, true, &s, NULL, err, sizeof(err)));
    CHECK(!pt_jwks_parse("{\"keys\":[],\"keys\":[]}", 21, PT_JWT_RS256, true, &s, NULL, err, sizeof(err)));
    pt_jwt_keyset_free(&s);
}

/* ------------------------------------------------------------- parsing */

TEST(parse_refusals)
{
    CHECK_INT(parse_only(TOK_RS256), PT_JWT_OK);
    pt_jws t;
    CHECK_INT(pt_jws_parse(pt_str_c(TOK_RS256), 100, &t), PT_JWT_ERR_TOO_LARGE);
    const char *claims = "{\"sub\":\"a\"}";
    CHECK_INT(parse_only(forge("{\"alg\":\"none\"}", claims, "")), PT_JWT_ERR_MALFORMED);
    CHECK_INT(parse_only(forge("{\"alg\":\"none\"}", claims, "AAAA")), PT_JWT_ERR_ALG);
    CHECK_INT(parse_only(forge("{\"alg\":\"NONE\"}", claims, "AAAA")), PT_JWT_ERR_ALG);
    CHECK_INT(parse_only(forge("{\"typ\":\"JWT\"}", claims, "AAAA")), PT_JWT_ERR_ALG);
    CHECK_INT(parse_only(forge("{\"alg\":256}", claims, "AAAA")), PT_JWT_ERR_ALG);
    CHECK_INT(parse_only(forge("{\"alg\":\"HS256\"}", claims, "AAAA")), PT_JWT_OK);
    const char *refused[] = {
        "{\"alg\":\"RS256\",\"jku\":\"http://x\"}", "{\"alg\":\"RS256\",\"x5u\":\"http://x\"}",
        "{\"alg\":\"RS256\",\"jwk\":{\"kty\":\"oct\"}}", "{\"alg\":\"RS256\",\"x5c\":[]}",
        "{\"alg\":\"RS256\",\"crit\":[]}", "{\"alg\":\"RS256\",\"kid\":7}", "{\"alg\":\"RS256\",\"typ\":null}",
    };
    for (size_t i = 0; i < PT_ARRAY_LEN(refused); i++) CHECK_INT(parse_only(forge(refused[i], claims, "AAAA")), PT_JWT_ERR_HEADER);
    char longkid[400];
    snprintf(longkid, sizeof(longkid), "{\"alg\":\"RS256\",\"kid\":\"%0300d\"}", 0);
    CHECK_INT(parse_only(forge(longkid, claims, "AAAA")), PT_JWT_ERR_HEADER);
    CHECK_INT(parse_only(forge("{\"alg\":\"HS256\",\"alg\":\"none\"}", claims, "AAAA")), PT_JWT_ERR_MALFORMED);
    CHECK_INT(parse_only(forge("{\"alg\":\"HS256\"}", "[1]", "AAAA")), PT_JWT_ERR_MALFORMED);
    CHECK_INT(parse_only(forge("{\"alg\":\"HS256\"}", "{\"a\":[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}", "AAAA")),
              PT_JWT_ERR_MALFORMED);
    CHECK_INT(parse_only(forge("{\"alg\":\"HS256\"}", claims, "AA=A")), PT_JWT_ERR_MALFORMED);
    CHECK_INT(parse_only("a.b"), PT_JWT_ERR_MALFORMED);
    CHECK_INT(parse_only("a.b.c.d.e"), PT_JWT_ERR_MALFORMED);
    CHECK_INT(parse_only(".."), PT_JWT_ERR_MALFORMED);
    char *tok = strdup(TOK_HS256);
    *strrchr(tok, '.') = '\0';
    strcat(tok, ".");
    CHECK_INT(parse_only(tok), PT_JWT_ERR_MALFORMED); /* stripped signature */
    free(tok);
}

/* ------------------------------------------------------------- signatures */

TEST(verify_each_algorithm_and_tampering)
{
    pt_jwt_key rs, ps, es, ed, hs;
    CHECK(jwk_key(RSA_JWK, PT_JWT_RS256, &rs));
    CHECK(jwk_key(RSA_JWK, PT_JWT_PS256, &ps));
    CHECK(jwk_key(EC_JWK, PT_JWT_ES256, &es));
    CHECK(jwk_key(ED_JWK, PT_JWT_EDDSA, &ed));
    char err[200];
    CHECK(pt_jwt_key_from_secret((const uint8_t *)HS_SECRET, 32, PT_JWT_HS256, NULL, &hs, err, sizeof(err)));
    CHECK_INT(verify_with(TOK_RS256, &rs), PT_JWT_OK);
    CHECK_INT(verify_with(TOK_PS256, &ps), PT_JWT_OK);
    CHECK_INT(verify_with(TOK_ES256, &es), PT_JWT_OK);
    CHECK_INT(verify_with(TOK_EDDSA, &ed), PT_JWT_OK);
    CHECK_INT(verify_with(TOK_HS256, &hs), PT_JWT_OK);
    /* Each key verifies only its own algorithm. */
    CHECK_INT(verify_with(TOK_PS256, &rs), PT_JWT_ERR_ALG);
    CHECK_INT(verify_with(TOK_RS256, &ps), PT_JWT_ERR_ALG);
    CHECK_INT(verify_with(TOK_HS256, &rs), PT_JWT_ERR_ALG);
    /* A tampered payload or signature fails. */
    const char *toks[] = {TOK_RS256, TOK_PS256, TOK_ES256, TOK_EDDSA, TOK_HS256};
    pt_jwt_key *keys[] = {&rs, &ps, &es, &ed, &hs};
    for (size_t i = 0; i < PT_ARRAY_LEN(toks); i++) {
        /* the same header and signature over other claims */
        char evil[128], *t = malloc(strlen(toks[i]) + 256);
        const char *claims = "{\"sub\":\"admin\",\"exp\":4102444800}";
        b64(claims, strlen(claims), evil);
        size_t hl = (size_t)(strchr(toks[i], '.') - toks[i]);
        sprintf(t, "%.*s.%s%s", (int)hl, toks[i], evil, strrchr(toks[i], '.'));
        CHECK_INT(verify_with(t, keys[i]), PT_JWT_ERR_SIGNATURE);
        strcpy(t, toks[i]);
        char *s = strrchr(t, '.') + 3;
        *s = *s == 'A' ? 'B' : 'A';
        CHECK_INT(verify_with(t, keys[i]), PT_JWT_ERR_SIGNATURE);
        free(t);
    }
    /* HS256 keyed with the RSA public key text does not verify with the RSA key
     * (no key confusion: it never becomes an HMAC secret). */
    pt_jwt_keyset set = {0};
    pt_jwt_keyset_add(&set, &rs);
    bool unknown = false;
    pt_jws t;
    CHECK_INT(pt_jws_parse(pt_str_c(TOK_HS256), 8192, &t), PT_JWT_OK);
    CHECK_INT(pt_jws_verify_set(&t, &set, &unknown), PT_JWT_ERR_NO_KEY);
    pt_jws_free(&t);
    /* kid lookup: r1 matches; another kid names nothing. */
    CHECK_INT(pt_jws_parse(pt_str_c(TOK_RS256), 8192, &t), PT_JWT_OK);
    set.v[0].kid = strdup("r1");
    CHECK_INT(pt_jws_verify_set(&t, &set, &unknown), PT_JWT_OK);
    free(set.v[0].kid);
    set.v[0].kid = strdup("r2");
    CHECK_INT(pt_jws_verify_set(&t, &set, &unknown), PT_JWT_ERR_NO_KEY);
    CHECK(unknown);
    pt_jws_free(&t);
    pt_jwt_keyset_free(&set);
    pt_jwt_key_clear(&ps);
    pt_jwt_key_clear(&es);
    pt_jwt_key_clear(&ed);
    pt_jwt_key_clear(&hs);
}

TEST(psychic_ecdsa)
{
    pt_jwt_key es;
    CHECK(jwk_key(EC_JWK, PT_JWT_ES256, &es));
    const char *hdr = "{\"alg\":\"ES256\"}", *claims = "{\"sub\":\"a\",\"exp\":4102444800}";
    uint8_t sig[64];
    char s64[128];
    /* r = s = 0 */
    memset(sig, 0, sizeof(sig));
    b64((const char *)sig, 64, s64);
    CHECK_INT(verify_with(forge(hdr, claims, s64), &es), PT_JWT_ERR_SIGNATURE);
    /* r = s = n */
    memcpy(sig, es.ec_order, 32);
    memcpy(sig + 32, es.ec_order, 32);
    b64((const char *)sig, 64, s64);
    CHECK_INT(verify_with(forge(hdr, claims, s64), &es), PT_JWT_ERR_SIGNATURE);
    /* wrong length (a DER-sized blob) */
    b64((const char *)sig, 63, s64);
    CHECK_INT(verify_with(forge(hdr, claims, s64), &es), PT_JWT_ERR_SIGNATURE);
    pt_jwt_key_clear(&es);
}

/* ------------------------------------------------------------- claims */

static pt_jwt_err claims_at(const char *payload, const char *hdr, const pt_jwt_policy *p, int64_t now)
{
    pt_jws t;
    pt_jwt_err e = pt_jws_parse(pt_str_c(forge(hdr ? hdr : "{\"alg\":\"HS256\"}", payload, "AAAA")), 8192, &t);
    if (e != PT_JWT_OK) return e;
    int64_t exp;
    e = pt_jwt_check_claims(&t, p, now, &exp);
    pt_jws_free(&t);
    return e;
}

TEST(time_claims_and_leeway)
{
    pt_jwt_policy p = {.require_exp = true};
    CHECK_INT(claims_at("{\"exp\":1000}", NULL, &p, 999), PT_JWT_OK);
    CHECK_INT(claims_at("{\"exp\":1000}", NULL, &p, 1000), PT_JWT_ERR_EXPIRED);
    CHECK_INT(claims_at("{\"exp\":1000.5}", NULL, &p, 1000), PT_JWT_OK);
    CHECK_INT(claims_at("{\"exp\":\"1000\"}", NULL, &p, 10), PT_JWT_ERR_CLAIM_TYPE);
    CHECK_INT(claims_at("{\"sub\":\"a\"}", NULL, &p, 10), PT_JWT_ERR_REQUIRED);
    CHECK_INT(claims_at("{\"exp\":1000,\"nbf\":500}", NULL, &p, 499), PT_JWT_ERR_NOT_YET);
    CHECK_INT(claims_at("{\"exp\":1000,\"nbf\":500}", NULL, &p, 500), PT_JWT_OK);
    CHECK_INT(claims_at("{\"exp\":1000,\"iat\":501}", NULL, &p, 500), PT_JWT_ERR_NOT_YET);
    CHECK_INT(claims_at("{\"exp\":1000,\"nbf\":true}", NULL, &p, 500), PT_JWT_ERR_CLAIM_TYPE);
    p.leeway_s = 30;
    CHECK_INT(claims_at("{\"exp\":1000}", NULL, &p, 1029), PT_JWT_OK);
    CHECK_INT(claims_at("{\"exp\":1000}", NULL, &p, 1030), PT_JWT_ERR_EXPIRED);
    CHECK_INT(claims_at("{\"exp\":1000,\"nbf\":500}", NULL, &p, 470), PT_JWT_OK);
    CHECK_INT(claims_at("{\"exp\":1000,\"nbf\":500}", NULL, &p, 469), PT_JWT_ERR_NOT_YET);
    p.require_exp = false;
    CHECK_INT(claims_at("{\"sub\":\"a\"}", NULL, &p, 10), PT_JWT_OK);
    CHECK_INT(claims_at("{\"sub\":5}", NULL, &p, 10), PT_JWT_ERR_CLAIM_TYPE);
}

TEST(iss_aud_required_typ)
{
    const char *iss[] = {"https://a", "https://b"}, *aud[] = {"orders"}, *req[] = {"scope"};
    pt_jwt_policy p = {.issuers = iss, .nissuers = 2, .audiences = aud, .naudiences = 1, .required = req,
                       .nrequired = 1};
    CHECK_INT(claims_at("{\"iss\":\"https://b\",\"aud\":\"orders\",\"scope\":\"r\"}", NULL, &p, 1), PT_JWT_OK);
    CHECK_INT(claims_at("{\"iss\":\"https://b\",\"aud\":[\"x\",\"orders\"],\"scope\":\"r\"}", NULL, &p, 1), PT_JWT_OK);
    CHECK_INT(claims_at("{\"iss\":\"https://c\",\"aud\":\"orders\",\"scope\":\"r\"}", NULL, &p, 1), PT_JWT_ERR_ISS);
    CHECK_INT(claims_at("{\"iss\":\"https://a/\",\"aud\":\"orders\",\"scope\":\"r\"}", NULL, &p, 1), PT_JWT_ERR_ISS);
    CHECK_INT(claims_at("{\"aud\":\"orders\",\"scope\":\"r\"}", NULL, &p, 1), PT_JWT_ERR_ISS);
    CHECK_INT(claims_at("{\"iss\":\"https://a\",\"aud\":\"order\",\"scope\":\"r\"}", NULL, &p, 1), PT_JWT_ERR_AUD);
    CHECK_INT(claims_at("{\"iss\":\"https://a\",\"aud\":[],\"scope\":\"r\"}", NULL, &p, 1), PT_JWT_ERR_AUD);
    CHECK_INT(claims_at("{\"iss\":\"https://a\",\"aud\":[1],\"scope\":\"r\"}", NULL, &p, 1), PT_JWT_ERR_CLAIM_TYPE);
    CHECK_INT(claims_at("{\"iss\":\"https://a\",\"aud\":\"orders\"}", NULL, &p, 1), PT_JWT_ERR_REQUIRED);
    p.typ = "at+jwt";
    const char *c = "{\"iss\":\"https://a\",\"aud\":\"orders\",\"scope\":\"r\"}";
    CHECK_INT(claims_at(c, "{\"alg\":\"HS256\",\"typ\":\"at+JWT\"}", &p, 1), PT_JWT_OK);
    CHECK_INT(claims_at(c, "{\"alg\":\"HS256\",\"typ\":\"application/at+jwt\"}", &p, 1), PT_JWT_OK);
    CHECK_INT(claims_at(c, "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", &p, 1), PT_JWT_ERR_TYP);
    CHECK_INT(claims_at(c, NULL, &p, 1), PT_JWT_ERR_TYP);
}

/* ------------------------------------------------------------- cache */

TEST(cache_expiry_and_lru)
{
    pt_digest_cache *c = pt_digest_cache_new(1, 1);
    uint8_t k1[32] = {1}, k2[32] = {2}, k3[32] = {3};
    pt_header h = {PT_STR_LIT("X-User-Id"), PT_STR_LIT("alice")};
    pt_jwt_ident id = {.headers = &h, .nheaders = 1};
    pt_jwt_cache_put(c, k1, 1000, &id, 2, 0);
    const pt_jwt_ident *e = pt_jwt_cache_get(c, k1, 999);
    CHECK(e && e->nheaders == 1);
    if (e) CHECK_SLICE(e->headers[0].value, "alice");
    CHECK(pt_jwt_cache_get(c, k1, 1000) == NULL); /* expired, and dropped */
    CHECK_INT(pt_digest_cache_count(c, PT_DIGEST_POSITIVE), 0);
    pt_jwt_cache_put(c, k1, 5000, NULL, 2, 0);
    pt_jwt_cache_put(c, k2, 5000, NULL, 2, 0);
    CHECK(pt_jwt_cache_get(c, k1, 1) != NULL); /* k2 becomes least recently used */
    pt_jwt_cache_put(c, k3, 5000, NULL, 2, 0);
    CHECK_INT(pt_digest_cache_count(c, PT_DIGEST_POSITIVE), 2);
    CHECK(pt_jwt_cache_get(c, k2, 1) == NULL);
    CHECK(pt_jwt_cache_get(c, k1, 1) != NULL && pt_jwt_cache_get(c, k3, 1) != NULL);
    pt_jwt_cache_put(c, k2, 10, NULL, 2, 10); /* already expired: not stored */
    CHECK(pt_jwt_cache_get(c, k2, 1) == NULL);
    pt_digest_cache_free(c);
}

/* The whole identity is deep-copied: the caller's buffers may go away. */
TEST(cache_keeps_identity)
{
    pt_digest_cache *c = pt_digest_cache_new(1, 1);
    uint8_t k[32] = {9};
    char buf[64];
    strcpy(buf, "alice");
    pt_str groups[] = {PT_STR_LIT("dev"), PT_STR_LIT("ops")};
    pt_str scopes[] = {PT_STR_LIT("orders:read"), PT_STR_LIT("x")};
    pt_header claims[] = {{PT_STR_LIT("sub"), PT_STR_LIT("alice")}, {PT_STR_LIT("iss"), PT_STR_LIT("https://i")}};
    pt_header hs[] = {{PT_STR_LIT("X-Sub"), PT_STR_LIT("alice")}};
    pt_jwt_ident id = {pt_str_make(buf, 5), groups, 2, scopes, 2, claims, 2, hs, 1, PT_STR_LIT("h.p")};
    pt_jwt_cache_put(c, k, 100, &id, 10, 0);
    memset(buf, 'z', sizeof(buf));
    const pt_jwt_ident *e = pt_jwt_cache_get(c, k, 1);
    CHECK(e != NULL);
    if (e) {
        CHECK_SLICE(e->consumer, "alice");
        CHECK_INT(e->ngroups, 2);
        CHECK_SLICE(e->groups[1], "ops");
        CHECK_INT(e->nscopes, 2);
        CHECK_SLICE(e->scopes[0], "orders:read");
        CHECK_INT(e->nclaims, 2);
        CHECK_SLICE(e->claims[1].name, "iss");
        CHECK_SLICE(e->claims[1].value, "https://i");
        CHECK_SLICE(e->headers[0].name, "X-Sub");
        CHECK_SLICE(e->signing_input, "h.p");
        CHECK(e->consumer.p[5] == '\0');
    }
    pt_digest_cache_free(c);
}

/* ------------------------------------------------------------- JWKS refresh bounds */

static uint64_t delay_for(const pt_jwks_conf *c, const char *cache_control)
{
    pt_header h = {PT_STR_LIT("Cache-Control"), pt_str_c(cache_control)};
    pt_headers hs = {&h, 1, 1};
    return pt_jwks_refresh_delay(c, cache_control ? &hs : NULL);
}

TEST(jwks_refresh_delay)
{
    pt_jwks_conf c = {.refresh_ms = 300000, .min_refresh_ms = 30000, .max_refresh_ms = 3600000};
    CHECK_INT(delay_for(&c, NULL), 300000);
    CHECK_INT(delay_for(&c, "public, max-age=600"), 600000);
    CHECK_INT(delay_for(&c, "max-age=\"120\""), 120000);
    CHECK_INT(delay_for(&c, "max-age=1"), 30000);        /* bounded below */
    CHECK_INT(delay_for(&c, "max-age=99999999"), 3600000); /* and above */
    CHECK_INT(delay_for(&c, "no-cache"), 30000);
    CHECK_INT(delay_for(&c, "max-age=abc"), 300000);     /* ignored */
}

/* ------------------------------------------------------------- configure and request helpers */

#define HEAD                                                                                                    \
    "listen: [127.0.0.1:8080]\n"                                                                                \
    "upstreams:\n"                                                                                              \
    "  up: {targets: [127.0.0.1:9000]}\n"                                                                       \
    "plugins:\n"                                                                                                \
    "  - jwt:\n"

static pt_config *load(const char *block, pt_errors *e)
{
    char text[8192];
    snprintf(text, sizeof(text), "%s%s", HEAD, block);
    return pt_config_load_string("t.yaml", text, strlen(text), e);
}

static bool refused_conf(const char *block, const char *needle)
{
    pt_errors e = {0};
    pt_config *cfg = load(block, &e);
    bool ok = cfg == NULL;
    bool found = false;
    for (size_t i = 0; i < e.n; i++)
        if (strstr(e.msgs[i], needle)) found = true;
    if (!found) {
        fprintf(stderr, "  no error containing \"%s\":\n", needle);
        for (size_t i = 0; i < e.n; i++) fprintf(stderr, "    %s\n", e.msgs[i]);
    }
    pt_config_free(cfg);
    pt_errors_free(&e);
    return ok && found;
}

#define SECRET_KEY "      keys: [{alg: HS256, secret: 0123456789abcdef0123456789abcdef}]\n"

TEST(configure_errors)
{
    CHECK(refused_conf("      issuers: [x]\n", "no verification key"));
    CHECK(refused_conf("      keys: [{alg: none, secret: 0123456789abcdef0123456789abcdef}]\n", "must be one of"));
    CHECK(refused_conf("      keys: [{alg: HS256, secret: abc}]\n", "at least 32"));
    CHECK(refused_conf("      keys: [{alg: HS256, secret: 0123456789abcdef0123456789abcdef, pem: x}]\n",
                       "exactly one of"));
    CHECK(refused_conf("      keys: [{alg: RS256, secret: 0123456789abcdef0123456789abcdef}]\n", "HS256/384/512"));
    CHECK(refused_conf("      keys: [{alg: RS256, pem_file: /nonexistent/k.pem}]\n", "cannot open"));
    CHECK(refused_conf("      keys: [{alg: RS256, jwk: {kty: EC, crv: P-256, x: a, y: b}}]\n", "cannot be used"));
    CHECK(refused_conf(SECRET_KEY "      claims_to_headers: {sub: Content-Length}\n", "may set"));
    CHECK(refused_conf(SECRET_KEY "      claims_to_headers: {sub: X-A, email: x-a}\n", "twice"));
    CHECK(refused_conf(SECRET_KEY "      realm: 'a\"b'\n", "realm"));
    CHECK(refused_conf(SECRET_KEY "      token: {query: t, scheme: Bearer}\n", "header sources only"));
    CHECK(refused_conf(SECRET_KEY "      token: {header: X, query: t}\n", "each token source"));
    CHECK(refused_conf(SECRET_KEY "      max_token_size: 1m\n", "max_token_size"));
    CHECK(refused_conf(SECRET_KEY "      unknown: 1\n", "unknown"));
    CHECK(refused_conf(SECRET_KEY "      jwks_alg: RS256\n", "needs 'jwks_file'"));
    CHECK(refused_conf("      jwks: {upstream: nope, path: /jwks}\n", "nope"));
    CHECK(refused_conf("      jwks: {upstream: up}\n", "needs 'path'"));
    CHECK(refused_conf("      jwks: {upstream: up, path: /j, min_refresh: 2h, max_refresh: 1h}\n", "must not exceed"));
}

TEST(configure_valid_and_helpers)
{
    char block[4096];
    snprintf(block, sizeof(block),
             "      keys:\n"
             "        - alg: ES256\n"
             "          kid: e1\n"
             "          pem: |\n"
             "            %.*s\n"
             "            %.*s\n"
             "            %.*s\n"
             "            %.*s\n"
             "        - {alg: HS256, secret: 0123456789abcdef0123456789abcdef}\n"
             "      issuers: https://idp.example\n"
             "      audiences: [orders]\n"
             "      leeway: 1m\n"
             "      token: [{header: Authorization}, {query: access_token}, {cookie: jwt}]\n"
             "      claims_to_headers: {sub: X-User-Id}\n"
             "      realm: api\n"
             "      cache: {max_entries: 10, ttl: 30s}\n",
             26, EC_PEM, 64, EC_PEM + 27, 60, EC_PEM + 92, 24, EC_PEM + 153);
    pt_errors e = {0};
    pt_config *cfg = load(block, &e);
    for (size_t i = 0; i < e.n; i++) fprintf(stderr, "  %s\n", e.msgs[i]);
    CHECK(cfg != NULL);
    if (!cfg) return;
    const pt_jwt_conf *c = cfg->plugins.v[0].conf;
    CHECK_INT(c->keys.n, 2);
    CHECK_STR(c->keys.v[0].kid, "e1");
    CHECK_INT(c->policy.nissuers, 1);
    CHECK_INT(c->policy.leeway_s, 60);
    CHECK(c->policy.require_exp);
    CHECK_INT(c->max_token, PT_JWT_DEFAULT_MAX_TOKEN);
    CHECK_INT(c->nsources, 3);
    CHECK_SLICE(c->sources[0].scheme, "Bearer");
    CHECK_INT(c->cache_max_entries, 10);
    CHECK_INT(c->cache_ttl_ms, 30000);

    pt_arena *a = pt_arena_new(4096);
    pt_request r = {0};
    pt_str tok;
    CHECK_INT(pt_jwt_find_token(c, &r, &tok), PT_JWT_TOKEN_NONE);
    pt_headers_add(&r.headers, a, PT_STR_LIT("authorization"), PT_STR_LIT("bearer   abc.def.ghi"));
    CHECK_INT(pt_jwt_find_token(c, &r, &tok), PT_JWT_TOKEN_ONE);
    CHECK_SLICE(tok, "abc.def.ghi");
    pt_headers_add(&r.headers, a, PT_STR_LIT("Cookie"), PT_STR_LIT("a=1; jwt=x.y.z"));
    CHECK_INT(pt_jwt_find_token(c, &r, &tok), PT_JWT_TOKEN_MANY);
    r.headers.n = 0;
    pt_headers_add(&r.headers, a, PT_STR_LIT("Authorization"), PT_STR_LIT("Basic abc"));
    pt_headers_add(&r.headers, a, PT_STR_LIT("Authorization"), PT_STR_LIT("Bearer"));
    pt_headers_add(&r.headers, a, PT_STR_LIT("Cookie"), PT_STR_LIT("xjwt=1; jwt=x.y.z"));
    CHECK_INT(pt_jwt_find_token(c, &r, &tok), PT_JWT_TOKEN_ONE);
    CHECK_SLICE(tok, "x.y.z");
    r.headers.n = 0;
    r.has_query = true;
    r.query = PT_STR_LIT("a=1&access_token=q.r.s&b=2");
    CHECK_INT(pt_jwt_find_token(c, &r, &tok), PT_JWT_TOKEN_ONE);
    CHECK_SLICE(tok, "q.r.s");

    CHECK_SLICE(pt_jwt_www_authenticate(c, NULL, NULL, a), "Bearer realm=\"api\"");
    CHECK_SLICE(pt_jwt_www_authenticate(c, "invalid_token", "the token has expired", a),
                "Bearer realm=\"api\", error=\"invalid_token\", error_description=\"the token has expired\"");

    json_t *v = json_loads("{\"s\":\"alice\",\"n\":42,\"b\":true,\"a\":[\"x\",\"y\"],\"o\":{\"k\":1},"
                           "\"bad\":\"a\\r\\nb\",\"m\":[1,\"x\"]}", 0, NULL);
    CHECK_SLICE(pt_jwt_claim_value(json_object_get(v, "s"), a), "alice");
    CHECK_SLICE(pt_jwt_claim_value(json_object_get(v, "n"), a), "42");
    CHECK_SLICE(pt_jwt_claim_value(json_object_get(v, "b"), a), "true");
    CHECK_SLICE(pt_jwt_claim_value(json_object_get(v, "a"), a), "x,y");
    CHECK_SLICE(pt_jwt_claim_value(json_object_get(v, "o"), a), "{\"k\":1}");
    CHECK_SLICE(pt_jwt_claim_value(json_object_get(v, "m"), a), "[1,\"x\"]");
    CHECK_INT(pt_jwt_claim_value(json_object_get(v, "bad"), a).n, 0);
    CHECK_INT(pt_jwt_claim_value(NULL, a).n, 0);
    json_decref(v);
    pt_arena_free(a);
    pt_config_free(cfg);
    pt_errors_free(&e);
}

/* forward_token: false — what is left of a query / a Cookie value. */
static void check_query(pt_arena *a, const char *q, const char *want, int nwant)
{
    int n = -1;
    pt_str out = pt_jwt_query_without(pt_str_c(q), PT_STR_LIT("access_token"), a, &n);
    CHECK_INT(n, nwant);
    CHECK_SLICE(out, want);
}

static void check_cookie(pt_arena *a, const char *v, const char *want, int nwant)
{
    int n = -1;
    pt_str out = pt_jwt_cookies_without(pt_str_c(v), PT_STR_LIT("jwt"), a, &n);
    CHECK_INT(n, nwant);
    CHECK_SLICE(out, want);
}

TEST(cache_key_is_the_signature_and_the_signing_input_must_match)
{
    pt_str si, sig;
    pt_jwt_token_split(PT_STR_LIT("aGVhZA.cGF5bG9hZA.c2ln"), &si, &sig);
    CHECK_SLICE(si, "aGVhZA.cGF5bG9hZA");
    CHECK_SLICE(sig, "c2ln");
    pt_jwt_token_split(PT_STR_LIT("nodot"), &si, &sig);
    CHECK_INT(si.n, 0);
    CHECK_SLICE(sig, "nodot");
    pt_jwt_token_split(PT_STR_LIT("a.b."), &si, &sig);
    CHECK_SLICE(si, "a.b");
    CHECK_INT(sig.n, 0);

    pt_digest_cache *c = pt_digest_cache_new(4, 1);
    uint8_t k[PT_DIGEST_LEN];
    pt_str part = PT_STR_LIT("c2ln");
    pt_digest_cache_key(c, &part, 1, k);
    pt_jwt_ident id = {.consumer = PT_STR_LIT("alice"), .signing_input = PT_STR_LIT("aGVhZA.cGF5bG9hZA")};
    const pt_jwt_ident *e = pt_jwt_cache_put(c, k, 1000, &id, 4, 0);
    CHECK(e != NULL && e->signing_input.p != id.signing_input.p); /* a copy */
    e = pt_jwt_cache_get(c, k, 1);
    CHECK(e != NULL);
    if (e) {
        CHECK(pt_jwt_cache_entry_matches(e, PT_STR_LIT("aGVhZA.cGF5bG9hZA")));
        /* the same signature part under another header or payload: no hit */
        CHECK(!pt_jwt_cache_entry_matches(e, PT_STR_LIT("aGVhZA.cGF5bG9hZB")));
        CHECK(!pt_jwt_cache_entry_matches(e, PT_STR_LIT("aGVhZA.cGF5bG9hZAx")));
        CHECK(!pt_jwt_cache_entry_matches(e, PT_STR_LIT("aGVhZA")));
        CHECK(!pt_jwt_cache_entry_matches(e, PT_STR_NULL));
    }
    pt_digest_cache_free(c);
}

TEST(token_removal_from_query_and_cookie)
{
    pt_arena *a = pt_arena_new(4096);
    check_query(a, "a=1&access_token=T&b=%20x+y", "a=1&b=%20x+y", 1);
    check_query(a, "access_token=T", "", 1);
    check_query(a, "access_token=T&access_token=U&z", "z", 2);
    check_query(a, "access_token&access_token=", "", 2);
    check_query(a, "a=1&&access_token=T&&c", "a=1&&&c", 1);    /* the others' separators kept */
    check_query(a, "access_tokens=1&xaccess_token=2&Access_token=3", "access_tokens=1&xaccess_token=2&Access_token=3", 0);
    check_query(a, "a%3D1&access_token%3DT", "a%3D1&access_token%3DT", 0); /* raw names, as the token is found */
    check_cookie(a, "a=b; jwt=T; c=d", "a=b; c=d", 1);
    check_cookie(a, "jwt=T", "", 1);
    check_cookie(a, "jwt=T;a=b ;  jwt=U", "a=b", 2);
    check_cookie(a, "jwtx=1; xjwt=2; a=\"q r\"", "jwtx=1; xjwt=2; a=\"q r\"", 0);
    check_cookie(a, "jwt=", "", 1);
    pt_arena_free(a);
}

TEST_MAIN()
