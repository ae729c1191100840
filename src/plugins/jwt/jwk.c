/* jwk.c — the jwt plugin's keys: strict base64url, bounded JSON, algorithm
 * names, and loading keys from PEM, secrets, JWKs and JWK Sets with each
 * key bound to one algorithm (see jwk.h). */
#include "plugins/jwt/jwk.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* ------------------------------------------------------------ base64url */

/* Value of a base64url character, or -1. */
static int b64url_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

long pt_b64url_decode(const char *in, size_t n, uint8_t *out, size_t cap)
{
    if (n % 4 == 1) return -1;
    size_t need = pt_b64url_decoded_len(n);
    if (need > cap || need > (size_t)LONG_MAX) return -1;
    size_t o = 0;
    uint32_t acc = 0;
    unsigned bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_val((unsigned char)in[i]);
        if (v < 0) return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) return -1; /* non-canonical: leftover bits must be zero */
    return (long)o;
}

/* ------------------------------------------------------------ JSON */

json_t *pt_jwt_json_parse(const char *text, size_t len, int max_depth)
{
    int depth = 0;
    bool in_str = false, esc = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_str) {
            if (esc) esc = false;
            else if (c == '\\') esc = true;
            else if (c == '"') in_str = false;
            continue;
        }
        if (c == '"') in_str = true;
        else if (c == '{' || c == '[') {
            if (++depth > max_depth) return NULL;
        } else if (c == '}' || c == ']') depth--;
    }
    json_error_t e;
    return json_loadb(text, len, JSON_REJECT_DUPLICATES, &e);
}

/* ------------------------------------------------------------ algorithms */

static const char *const alg_names[PT_JWT_ALG__COUNT] = {
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256",
    "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
};

int pt_jwt_alg_from_str(pt_str s)
{
    for (int i = 0; i < PT_JWT_ALG__COUNT; i++)
        if (pt_str_eq_lit(s, alg_names[i])) return i;
    return PT_JWT_ALG_UNKNOWN;
}

const char *pt_jwt_alg_name(pt_jwt_alg alg) { return (unsigned)alg < PT_JWT_ALG__COUNT ? alg_names[alg] : "?"; }

bool pt_jwt_alg_is_hmac(pt_jwt_alg alg) { return alg <= PT_JWT_HS512; }

/* ------------------------------------------------------------ keys */

static bool fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return false;
}

void pt_jwt_key_clear(pt_jwt_key *k)
{
    if (!k) return;
    EVP_PKEY_free(k->pkey);
    if (k->secret) OPENSSL_clear_free(k->secret, k->secret_len);
    free(k->kid);
    memset(k, 0, sizeof(*k));
}

void pt_jwt_keyset_free(pt_jwt_keyset *s)
{
    for (size_t i = 0; i < s->n; i++) pt_jwt_key_clear(&s->v[i]);
    free(s->v);
    s->v = NULL;
    s->n = 0;
}

void pt_jwt_keyset_add(pt_jwt_keyset *s, pt_jwt_key *k)
{
    pt_jwt_key *v = realloc(s->v, (s->n + 1) * sizeof(*v));
    if (!v) pt_panic(__FILE__, __LINE__, "out of memory");
    s->v = v;
    s->v[s->n++] = *k;
    memset(k, 0, sizeof(*k));
}

/* Copies kid into the key (NULL or "" = none). */
static bool set_kid(pt_jwt_key *k, const char *kid, size_t n, char *err, size_t errlen)
{
    if (!kid || !n) return true;
    if (n > PT_JWT_KID_MAX) return fail(err, errlen, "kid longer than %d bytes", PT_JWT_KID_MAX);
    k->kid = malloc(n + 1);
    if (!k->kid) pt_panic(__FILE__, __LINE__, "out of memory");
    memcpy(k->kid, kid, n);
    k->kid[n] = '\0';
    return true;
}

/* The EC curve of ES256/384/512: OpenSSL group name, NID, coordinate bytes. */
static bool ec_curve_of(pt_jwt_alg alg, const char **group, int *nid, unsigned *len)
{
    switch (alg) {
    case PT_JWT_ES256: *group = "prime256v1", *nid = NID_X9_62_prime256v1, *len = 32; return true;
    case PT_JWT_ES384: *group = "secp384r1", *nid = NID_secp384r1, *len = 48; return true;
    case PT_JWT_ES512: *group = "secp521r1", *nid = NID_secp521r1, *len = 66; return true;
    default: return false;
    }
}

/* Checks that `pkey` fits `alg` and completes the key's ES fields. */
static bool bind_pkey(pt_jwt_key *k, EVP_PKEY *pkey, pt_jwt_alg alg, char *err, size_t errlen)
{
    const char *group;
    int nid;
    unsigned len;
    switch (alg) {
    case PT_JWT_RS256:
    case PT_JWT_RS384:
    case PT_JWT_RS512:
    case PT_JWT_PS256:
    case PT_JWT_PS384:
    case PT_JWT_PS512: {
        bool pss_alg = alg >= PT_JWT_PS256;
        if (!EVP_PKEY_is_a(pkey, "RSA") && !(pss_alg && EVP_PKEY_is_a(pkey, "RSA-PSS")))
            return fail(err, errlen, "%s needs an RSA key", pt_jwt_alg_name(alg));
        if (EVP_PKEY_get_bits(pkey) < 2048)
            return fail(err, errlen, "RSA key of %d bits: at least 2048 required", EVP_PKEY_get_bits(pkey));
        break;
    }
    case PT_JWT_ES256:
    case PT_JWT_ES384:
    case PT_JWT_ES512: {
        ec_curve_of(alg, &group, &nid, &len);
        char name[64] = "";
        if (!EVP_PKEY_is_a(pkey, "EC") ||
            !EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, name, sizeof(name), NULL) ||
            strcmp(name, group) != 0)
            return fail(err, errlen, "%s needs an EC key on curve %s", pt_jwt_alg_name(alg), group);
        EC_GROUP *g = EC_GROUP_new_by_curve_name(nid);
        if (!g) return fail(err, errlen, "curve %s unavailable", group);
        int ok = BN_bn2binpad(EC_GROUP_get0_order(g), k->ec_order, (int)len);
        EC_GROUP_free(g);
        if (ok != (int)len) return fail(err, errlen, "curve order");
        k->ec_len = len;
        break;
    }
    case PT_JWT_EDDSA:
        if (!EVP_PKEY_is_a(pkey, "ED25519")) return fail(err, errlen, "EdDSA needs an Ed25519 key");
        break;
    default: return fail(err, errlen, "%s is not a public-key algorithm", pt_jwt_alg_name(alg));
    }
    k->alg = alg;
    k->pkey = pkey;
    return true;
}

bool pt_jwt_key_from_pem(const char *pem, size_t len, pt_jwt_alg alg, const char *kid, pt_jwt_key *out, char *err,
                         size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (len > INT_MAX) return fail(err, errlen, "PEM too large");
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    if (!b) pt_panic(__FILE__, __LINE__, "out of memory");
    EVP_PKEY *pkey = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
    if (!pkey) {
        /* A certificate: its subject public key (the certificate itself is
         * not checked — the key is what is configured). */
        (void)BIO_reset(b);
        X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
        if (x) {
            pkey = X509_get_pubkey(x);
            X509_free(x);
        }
    }
    BIO_free(b);
    if (!pkey) return fail(err, errlen, "not a PEM public key (\"BEGIN PUBLIC KEY\") or certificate");
    if (!bind_pkey(out, pkey, alg, err, errlen) || !set_kid(out, kid, kid ? strlen(kid) : 0, err, errlen)) {
        if (!out->pkey) EVP_PKEY_free(pkey);
        pt_jwt_key_clear(out);
        return false;
    }
    return true;
}

/* Bytes of the hash of an HS algorithm. */
static size_t hmac_len(pt_jwt_alg alg) { return alg == PT_JWT_HS256 ? 32 : alg == PT_JWT_HS384 ? 48 : 64; }

bool pt_jwt_key_from_secret(const uint8_t *secret, size_t len, pt_jwt_alg alg, const char *kid, pt_jwt_key *out,
                            char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (!pt_jwt_alg_is_hmac(alg)) return fail(err, errlen, "a secret can only be used with HS256/384/512");
    if (len < hmac_len(alg))
        return fail(err, errlen, "%s secret of %zu bytes: at least %zu required (RFC 7518 §3.2)",
                    pt_jwt_alg_name(alg), len, hmac_len(alg));
    out->alg = alg;
    out->secret = OPENSSL_malloc(len);
    if (!out->secret) pt_panic(__FILE__, __LINE__, "out of memory");
    memcpy(out->secret, secret, len);
    out->secret_len = len;
    if (!set_kid(out, kid, kid ? strlen(kid) : 0, err, errlen)) {
        pt_jwt_key_clear(out);
        return false;
    }
    return true;
}

/* Decodes the base64url string member `name` of `jwk` into a heap buffer
 * (caller frees). NULL (and err) when absent, not a string or invalid. */
static uint8_t *jwk_bytes(const json_t *jwk, const char *name, size_t *len, char *err, size_t errlen)
{
    const json_t *v = json_object_get(jwk, name);
    if (!json_is_string(v)) {
        fail(err, errlen, "JWK member \"%s\" missing or not a string", name);
        return NULL;
    }
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n > 16384) {
        fail(err, errlen, "JWK member \"%s\" too long", name);
        return NULL;
    }
    size_t cap = pt_b64url_decoded_len(n) + 1;
    uint8_t *b = malloc(cap);
    if (!b) pt_panic(__FILE__, __LINE__, "out of memory");
    long r = pt_b64url_decode(s, n, b, cap);
    if (r <= 0) {
        free(b);
        fail(err, errlen, "JWK member \"%s\" is not non-empty strict base64url", name);
        return NULL;
    }
    *len = (size_t)r;
    return b;
}

/* EVP_PKEY from OSSL parameters of key type `type` (public key). */
static EVP_PKEY *pkey_fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY *pkey = NULL;
    if (params && ctx && EVP_PKEY_fromdata_init(ctx) == 1) {
        if (EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) pkey = NULL;
    }
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

/* An RSA public key from a JWK's n and e. */
static EVP_PKEY *jwk_rsa(const json_t *jwk, char *err, size_t errlen)
{
    size_t nl = 0, el = 0;
    uint8_t *n = jwk_bytes(jwk, "n", &nl, err, errlen);
    uint8_t *e = n ? jwk_bytes(jwk, "e", &el, err, errlen) : NULL;
    EVP_PKEY *pkey = NULL;
    if (n && e) {
        if (el > 8) {
            fail(err, errlen, "RSA exponent too large");
        } else {
            BIGNUM *bn = BN_bin2bn(n, (int)nl, NULL), *be = BN_bin2bn(e, (int)el, NULL);
            OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
            if (bn && be && bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) &&
                OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be))
                pkey = pkey_fromdata("RSA", bld);
            if (!pkey) fail(err, errlen, "invalid RSA JWK");
            OSSL_PARAM_BLD_free(bld);
            BN_free(bn);
            BN_free(be);
        }
    }
    free(n);
    free(e);
    return pkey;
}

/* An EC public key (x, y on `group`, each `len` bytes), point checked. */
static EVP_PKEY *jwk_ec(const json_t *jwk, const char *group, unsigned len, char *err, size_t errlen)
{
    size_t xl = 0, yl = 0;
    uint8_t *x = jwk_bytes(jwk, "x", &xl, err, errlen);
    uint8_t *y = x ? jwk_bytes(jwk, "y", &yl, err, errlen) : NULL;
    EVP_PKEY *pkey = NULL;
    if (x && y) {
        if (xl != len || yl != len) {
            fail(err, errlen, "EC JWK coordinates must be %u bytes", len);
        } else {
            uint8_t pt[1 + 2 * 66];
            pt[0] = 0x04; /* uncompressed point */
            memcpy(pt + 1, x, len);
            memcpy(pt + 1 + len, y, len);
            OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
            if (bld && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) &&
                OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, 1 + 2 * (size_t)len))
                pkey = pkey_fromdata("EC", bld);
            OSSL_PARAM_BLD_free(bld);
            if (pkey) {
                EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
                if (!c || EVP_PKEY_public_check(c) != 1) {
                    EVP_PKEY_free(pkey);
                    pkey = NULL;
                }
                EVP_PKEY_CTX_free(c);
            }
            if (!pkey) fail(err, errlen, "invalid EC JWK (point not on curve %s)", group);
        }
    }
    free(x);
    free(y);
    return pkey;
}

/* The JWK's string member `name`, or NULL when absent; *bad when present
 * but not a string. */
static const char *jwk_str(const json_t *jwk, const char *name, bool *bad)
{
    const json_t *v = json_object_get(jwk, name);
    if (!v) return NULL;
    if (!json_is_string(v)) {
        *bad = true;
        return NULL;
    }
    return json_string_value(v);
}

bool pt_jwk_parse(const json_t *jwk, int default_alg, pt_jwt_key *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (!json_is_object(jwk)) return fail(err, errlen, "a JWK must be a JSON object");
    bool bad = false;
    const char *kty = jwk_str(jwk, "kty", &bad);
    const char *alg_s = jwk_str(jwk, "alg", &bad);
    const char *crv = jwk_str(jwk, "crv", &bad);
    const json_t *kidv = json_object_get(jwk, "kid");
    if (bad || (kidv && !json_is_string(kidv))) return fail(err, errlen, "JWK kty, alg, crv and kid must be strings");
    if (!kty) return fail(err, errlen, "JWK without \"kty\"");
    int alg = default_alg;
    if (alg_s) {
        alg = pt_jwt_alg_from_str(pt_str_c(alg_s));
        if (alg == PT_JWT_ALG_UNKNOWN) return fail(err, errlen, "JWK alg \"%.32s\" is not supported", alg_s);
        if (default_alg != PT_JWT_ALG_UNKNOWN && alg != default_alg)
            return fail(err, errlen, "JWK alg %s differs from the configured %s", alg_s,
                        pt_jwt_alg_name((pt_jwt_alg)default_alg));
    }
    if (alg == PT_JWT_ALG_UNKNOWN) return fail(err, errlen, "JWK without \"alg\" and no alg configured for it");
    const char *kid = kidv ? json_string_value(kidv) : NULL;
    size_t kidn = kidv ? json_string_length(kidv) : 0;

    bool ok = false;
    if (strcmp(kty, "oct") == 0) {
        size_t kl = 0;
        uint8_t *k = jwk_bytes(jwk, "k", &kl, err, errlen);
        if (k) {
            ok = pt_jwt_key_from_secret(k, kl, (pt_jwt_alg)alg, NULL, out, err, errlen);
            OPENSSL_cleanse(k, kl);
            free(k);
        }
    } else {
        EVP_PKEY *pkey = NULL;
        const char *group;
        int nid;
        unsigned len;
        if (strcmp(kty, "RSA") == 0) {
            if (alg < PT_JWT_RS256 || alg > PT_JWT_PS512)
                return fail(err, errlen, "an RSA JWK cannot be used with %s", pt_jwt_alg_name((pt_jwt_alg)alg));
            pkey = jwk_rsa(jwk, err, errlen);
        } else if (strcmp(kty, "EC") == 0) {
            if (!ec_curve_of((pt_jwt_alg)alg, &group, &nid, &len))
                return fail(err, errlen, "an EC JWK cannot be used with %s", pt_jwt_alg_name((pt_jwt_alg)alg));
            static const char *const jose_crv[] = {"P-256", "P-384", "P-521"};
            if (!crv || strcmp(crv, jose_crv[alg - PT_JWT_ES256]) != 0)
                return fail(err, errlen, "%s needs crv %s", pt_jwt_alg_name((pt_jwt_alg)alg),
                            jose_crv[alg - PT_JWT_ES256]);
            pkey = jwk_ec(jwk, group, len, err, errlen);
        } else if (strcmp(kty, "OKP") == 0) {
            if (alg != PT_JWT_EDDSA || !crv || strcmp(crv, "Ed25519") != 0)
                return fail(err, errlen, "an OKP JWK must be crv Ed25519 with alg EdDSA");
            size_t xl = 0;
            uint8_t *x = jwk_bytes(jwk, "x", &xl, err, errlen);
            if (x && xl == 32) pkey = EVP_PKEY_new_raw_public_key_ex(NULL, "ED25519", NULL, x, xl);
            if (x && !pkey) fail(err, errlen, "invalid Ed25519 JWK (x must be 32 bytes)");
            free(x);
        } else {
            return fail(err, errlen, "JWK kty \"%.16s\" is not supported", kty);
        }
        if (pkey) {
            ok = bind_pkey(out, pkey, (pt_jwt_alg)alg, err, errlen);
            if (!ok) EVP_PKEY_free(pkey);
        }
    }
    if (ok && !set_kid(out, kid, kidn, err, errlen)) ok = false;
    if (!ok) pt_jwt_key_clear(out);
    return ok;
}

/* A JWK meant for something other than verifying signatures. */
static bool not_for_signatures(const json_t *jwk)
{
    const json_t *use = json_object_get(jwk, "use");
    if (use && (!json_is_string(use) || strcmp(json_string_value(use), "sig") != 0)) return true;
    const json_t *ops = json_object_get(jwk, "key_ops");
    if (ops) {
        if (!json_is_array(ops)) return true;
        size_t i;
        const json_t *op;
        json_array_foreach(ops, i, op)
            if (json_is_string(op) && strcmp(json_string_value(op), "verify") == 0) return false;
        return true;
    }
    return false;
}

bool pt_jwks_parse(const char *text, size_t len, int default_alg, bool strict, pt_jwt_keyset *out,
                   size_t *skipped, char *err, size_t errlen)
{
    if (skipped) *skipped = 0;
    json_t *doc = pt_jwt_json_parse(text, len, 8);
    const json_t *keys = doc ? json_object_get(doc, "keys") : NULL;
    if (!json_is_object(doc) || !json_is_array(keys)) {
        json_decref(doc);
        return fail(err, errlen, "not a JWK Set (a JSON object with a \"keys\" array, no duplicate members)");
    }
    size_t i;
    const json_t *jwk;
    json_array_foreach(keys, i, jwk) {
        if (json_is_object(jwk) && not_for_signatures(jwk)) {
            if (skipped) (*skipped)++;
            continue;
        }
        pt_jwt_key k;
        char kerr[160];
        if (!pt_jwk_parse(jwk, default_alg, &k, kerr, sizeof(kerr))) {
            if (strict) {
                json_decref(doc);
                return fail(err, errlen, "key #%zu: %s", i, kerr);
            }
            if (skipped) (*skipped)++;
            continue;
        }
        pt_jwt_keyset_add(out, &k);
    }
    json_decref(doc);
    return true;
}
