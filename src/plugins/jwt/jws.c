/* jws.c — compact JWS parsing, signature verification with algorithm-bound
 * keys, and claim checks (see jws.h). */
#include "plugins/jwt/jws.h"

#include <math.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>
#include <stdlib.h>
#include <strings.h>

const char *pt_jwt_err_text(pt_jwt_err e)
{
    switch (e) {
    case PT_JWT_OK: return "the token is valid";
    case PT_JWT_ERR_TOO_LARGE: return "the token is too large";
    case PT_JWT_ERR_MALFORMED: return "the token is malformed";
    case PT_JWT_ERR_ALG: return "the token's signing algorithm is not accepted";
    case PT_JWT_ERR_HEADER: return "the token's header carries a refused parameter";
    case PT_JWT_ERR_NO_KEY: return "no key is configured to verify the token";
    case PT_JWT_ERR_SIGNATURE: return "the token's signature is invalid";
    case PT_JWT_ERR_EXPIRED: return "the token has expired";
    case PT_JWT_ERR_NOT_YET: return "the token is not valid yet";
    case PT_JWT_ERR_CLAIM_TYPE: return "the token has a claim of the wrong type";
    case PT_JWT_ERR_ISS: return "the token's issuer is not accepted";
    case PT_JWT_ERR_AUD: return "the token's audience is not accepted";
    case PT_JWT_ERR_REQUIRED: return "the token lacks a required claim";
    case PT_JWT_ERR_TYP: return "the token's type is not accepted";
    }
    return "the token is invalid";
}

/* ------------------------------------------------------------ parsing */

/* Decodes one base64url part and parses it as a bounded JSON object. */
static json_t *part_json(const char *p, size_t n)
{
    if (n == 0) return NULL;
    size_t cap = pt_b64url_decoded_len(n) + 1;
    char *buf = malloc(cap);
    if (!buf) pt_panic(__FILE__, __LINE__, "out of memory");
    long len = pt_b64url_decode(p, n, (uint8_t *)buf, cap);
    json_t *j = len > 0 ? pt_jwt_json_parse(buf, (size_t)len, PT_JWT_MAX_JSON_DEPTH) : NULL;
    free(buf);
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

void pt_jws_free(pt_jws *t)
{
    json_decref(t->header);
    json_decref(t->claims);
    t->header = t->claims = NULL;
}

/* Header parameters that would let the token choose its own key or demand
 * processing we do not do: refused whatever their value. */
static const char *const refused_params[] = {"jku", "x5u", "jwk", "x5c", "crit", NULL};

/* The header checks after JSON parsing. */
static pt_jwt_err check_header(pt_jws *t)
{
    const json_t *h = t->header;
    const json_t *alg = json_object_get(h, "alg");
    if (!json_is_string(alg)) return PT_JWT_ERR_ALG;
    int a = pt_jwt_alg_from_str(pt_str_make(json_string_value(alg), json_string_length(alg)));
    if (a == PT_JWT_ALG_UNKNOWN) return PT_JWT_ERR_ALG; /* "none" in every spelling included */
    t->alg = (pt_jwt_alg)a;
    for (size_t i = 0; refused_params[i]; i++)
        if (json_object_get(h, refused_params[i])) return PT_JWT_ERR_HEADER;
    const json_t *kid = json_object_get(h, "kid");
    if (kid) {
        if (!json_is_string(kid) || json_string_length(kid) > PT_JWT_KID_MAX) return PT_JWT_ERR_HEADER;
        t->kid = json_string_value(kid);
        t->kid_len = json_string_length(kid);
    }
    const json_t *typ = json_object_get(h, "typ");
    if (typ) {
        if (!json_is_string(typ)) return PT_JWT_ERR_HEADER;
        t->typ = json_string_value(typ);
    }
    return PT_JWT_OK;
}

pt_jwt_err pt_jws_parse(pt_str token, size_t max_len, pt_jws *out)
{
    memset(out, 0, sizeof(*out));
    if (token.n > max_len) return PT_JWT_ERR_TOO_LARGE;
    const char *d1 = memchr(token.p, '.', token.n);
    if (!d1) return PT_JWT_ERR_MALFORMED;
    const char *end = token.p + token.n;
    const char *d2 = memchr(d1 + 1, '.', (size_t)(end - d1 - 1));
    if (!d2 || memchr(d2 + 1, '.', (size_t)(end - d2 - 1))) return PT_JWT_ERR_MALFORMED; /* JWE has 5 parts */
    size_t sig_n = (size_t)(end - d2 - 1);
    if (sig_n == 0) return PT_JWT_ERR_MALFORMED; /* unsigned / stripped signature */
    out->signing_input = pt_str_make(token.p, (size_t)(d2 - token.p));

    out->header = part_json(token.p, (size_t)(d1 - token.p));
    if (!out->header) return PT_JWT_ERR_MALFORMED;
    pt_jwt_err e = check_header(out);
    if (e == PT_JWT_OK) {
        out->claims = part_json(d1 + 1, (size_t)(d2 - d1 - 1));
        if (!out->claims) e = PT_JWT_ERR_MALFORMED;
    }
    if (e == PT_JWT_OK) {
        long n = pt_b64url_decode(d2 + 1, sig_n, out->sig, sizeof(out->sig));
        if (n <= 0) e = PT_JWT_ERR_MALFORMED;
        else out->sig_len = (size_t)n;
    }
    if (e != PT_JWT_OK) pt_jws_free(out);
    return e;
}

/* ------------------------------------------------------------ signatures */

/* The hash of an algorithm: SHA-256/384/512 by its position in the family
 * (EdDSA hashes internally: NULL). */
static const EVP_MD *alg_md(pt_jwt_alg alg)
{
    if (alg == PT_JWT_EDDSA) return NULL;
    switch (alg % 3) {
    case 0: return EVP_sha256();
    case 1: return EVP_sha384();
    default: return EVP_sha512();
    }
}

static pt_jwt_err verify_hmac(const pt_jws *t, const pt_jwt_key *key)
{
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (!HMAC(alg_md(t->alg), key->secret, (int)key->secret_len, (const uint8_t *)t->signing_input.p,
              t->signing_input.n, mac, &n))
        return PT_JWT_ERR_SIGNATURE;
    bool ok = t->sig_len == n && CRYPTO_memcmp(mac, t->sig, n) == 0;
    OPENSSL_cleanse(mac, sizeof(mac));
    return ok ? PT_JWT_OK : PT_JWT_ERR_SIGNATURE;
}

/* 0 < v < order, both `len`-byte big-endian numbers. */
static bool in_range(const uint8_t *v, const uint8_t *order, unsigned len)
{
    bool nonzero = false;
    for (unsigned i = 0; i < len; i++) nonzero |= v[i] != 0;
    return nonzero && memcmp(v, order, len) < 0;
}

/* The DER ECDSA-Sig-Value for a JOSE r||s signature, checked first; the
 * length goes to *der_len, the buffer to the caller (OPENSSL_free). */
static uint8_t *ecdsa_der(const pt_jws *t, const pt_jwt_key *key, int *der_len)
{
    unsigned len = key->ec_len;
    if (len == 0 || t->sig_len != 2 * (size_t)len) return NULL;
    if (!in_range(t->sig, key->ec_order, len) || !in_range(t->sig + len, key->ec_order, len)) return NULL;
    BIGNUM *r = BN_bin2bn(t->sig, (int)len, NULL), *s = BN_bin2bn(t->sig + len, (int)len, NULL);
    ECDSA_SIG *es = ECDSA_SIG_new();
    uint8_t *der = NULL;
    *der_len = 0;
    if (r && s && es && ECDSA_SIG_set0(es, r, s) == 1) {
        r = s = NULL; /* owned by es now */
        *der_len = i2d_ECDSA_SIG(es, &der);
        if (*der_len <= 0) der = NULL;
    }
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    return der;
}

static pt_jwt_err verify_pkey(const pt_jws *t, const pt_jwt_key *key)
{
    const uint8_t *sig = t->sig;
    size_t sig_len = t->sig_len;
    uint8_t *der = NULL;
    if (t->alg >= PT_JWT_ES256 && t->alg <= PT_JWT_ES512) {
        int dl = 0;
        der = ecdsa_der(t, key, &dl);
        if (!der) return PT_JWT_ERR_SIGNATURE;
        sig = der;
        sig_len = (size_t)dl;
    } else if (t->alg == PT_JWT_EDDSA && sig_len != 64) {
        return PT_JWT_ERR_SIGNATURE;
    } else if (t->alg != PT_JWT_EDDSA && (int)sig_len != EVP_PKEY_get_size(key->pkey)) {
        return PT_JWT_ERR_SIGNATURE; /* RSA: exactly the modulus length */
    }
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    bool ok = m && EVP_DigestVerifyInit(m, &pctx, alg_md(t->alg), NULL, key->pkey) == 1;
    if (ok && t->alg >= PT_JWT_RS256 && t->alg <= PT_JWT_RS512 && EVP_PKEY_is_a(key->pkey, "RSA"))
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1;
    if (ok && t->alg >= PT_JWT_PS256 && t->alg <= PT_JWT_PS512) {
        /* RFC 7518 §3.5: MGF1 with the same hash, salt as long as the hash. */
        if (EVP_PKEY_is_a(key->pkey, "RSA")) ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1;
        ok = ok && EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, alg_md(t->alg)) == 1 &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1;
    }
    ok = ok && EVP_DigestVerify(m, sig, sig_len, (const uint8_t *)t->signing_input.p, t->signing_input.n) == 1;
    EVP_MD_CTX_free(m);
    OPENSSL_free(der);
    return ok ? PT_JWT_OK : PT_JWT_ERR_SIGNATURE;
}

pt_jwt_err pt_jws_verify(const pt_jws *t, const pt_jwt_key *key)
{
    if (key->alg != t->alg) return PT_JWT_ERR_ALG;
    if (pt_jwt_alg_is_hmac(key->alg)) return key->secret ? verify_hmac(t, key) : PT_JWT_ERR_SIGNATURE;
    return key->pkey ? verify_pkey(t, key) : PT_JWT_ERR_SIGNATURE;
}

pt_jwt_err pt_jws_verify_set(const pt_jws *t, const pt_jwt_keyset *set, bool *kid_unknown)
{
    bool candidate = false, kid_seen = false;
    /* Pass 0: keys whose kid is the token's (all keys when it has none);
     * pass 1, only for a kid no key carries: the keys configured without a
     * kid (a single static key need not know the issuer's kid). */
    for (int pass = 0; pass < 2 && !candidate; pass++) {
        if (pass == 1 && (!t->kid || kid_seen)) break;
        for (size_t i = 0; set && i < set->n; i++) {
            const pt_jwt_key *k = &set->v[i];
            if (t->kid && pass == 0) {
                if (!k->kid || strlen(k->kid) != t->kid_len || memcmp(k->kid, t->kid, t->kid_len) != 0) continue;
                kid_seen = true;
            } else if (t->kid && k->kid) {
                continue;
            }
            if (k->alg != t->alg) continue;
            candidate = true;
            if (pt_jws_verify(t, k) == PT_JWT_OK) return PT_JWT_OK;
        }
    }
    if (kid_unknown) *kid_unknown = t->kid && !kid_seen;
    return candidate ? PT_JWT_ERR_SIGNATURE : PT_JWT_ERR_NO_KEY;
}

/* ------------------------------------------------------------ claims */

/* Reads numeric claim `name` into *v. false: absent (*bad untouched) or
 * not a finite number (*bad set). */
static bool num_claim(const json_t *c, const char *name, double *v, bool *bad)
{
    const json_t *j = json_object_get(c, name);
    if (!j) return false;
    if (!json_is_number(j) || !isfinite(json_number_value(j))) {
        *bad = true;
        return false;
    }
    *v = json_number_value(j);
    return true;
}

static bool in_names(const char *s, size_t n, const char *const *list, size_t nlist)
{
    for (size_t i = 0; i < nlist; i++)
        if (strlen(list[i]) == n && memcmp(list[i], s, n) == 0) return true;
    return false;
}

/* The header typ against the required one (RFC 9068 §4: "at+jwt" and
 * "application/at+jwt" are the same media type; compared without case). */
static bool typ_ok(const char *have, const char *want)
{
    if (!have) return false;
    if (strcasecmp(have, want) == 0) return true;
    if (strncasecmp(have, "application/", 12) == 0 && strcasecmp(have + 12, want) == 0) return true;
    if (strncasecmp(want, "application/", 12) == 0 && strcasecmp(want + 12, have) == 0) return true;
    return false;
}

pt_jwt_err pt_jwt_check_claims(const pt_jws *t, const pt_jwt_policy *p, int64_t now_s, int64_t *exp_s)
{
    const json_t *c = t->claims;
    if (exp_s) *exp_s = INT64_MAX;
    if (p->typ && !typ_ok(t->typ, p->typ)) return PT_JWT_ERR_TYP;
    double now = (double)now_s, leeway = (double)p->leeway_s, v = 0;
    bool bad = false;
    if (num_claim(c, "exp", &v, &bad)) {
        if (now >= v + leeway) return PT_JWT_ERR_EXPIRED;
        if (exp_s) *exp_s = v >= 9.2e18 ? INT64_MAX : (int64_t)v;
    } else if (bad) {
        return PT_JWT_ERR_CLAIM_TYPE;
    } else if (p->require_exp) {
        return PT_JWT_ERR_REQUIRED;
    }
    if (num_claim(c, "nbf", &v, &bad) && now + leeway < v) return PT_JWT_ERR_NOT_YET;
    if (num_claim(c, "iat", &v, &bad) && now + leeway < v) return PT_JWT_ERR_NOT_YET;
    if (bad) return PT_JWT_ERR_CLAIM_TYPE;

    const json_t *sub = json_object_get(c, "sub");
    if (sub && !json_is_string(sub)) return PT_JWT_ERR_CLAIM_TYPE;
    const json_t *iss = json_object_get(c, "iss");
    if (iss && !json_is_string(iss)) return PT_JWT_ERR_CLAIM_TYPE;
    if (p->nissuers && (!iss || !in_names(json_string_value(iss), json_string_length(iss), p->issuers, p->nissuers)))
        return PT_JWT_ERR_ISS;

    const json_t *aud = json_object_get(c, "aud");
    if (aud && !json_is_string(aud) && !json_is_array(aud)) return PT_JWT_ERR_CLAIM_TYPE;
    if (p->naudiences) {
        bool match = false;
        if (json_is_string(aud)) {
            match = in_names(json_string_value(aud), json_string_length(aud), p->audiences, p->naudiences);
        } else if (aud) {
            size_t i;
            const json_t *a;
            json_array_foreach(aud, i, a) {
                if (!json_is_string(a)) return PT_JWT_ERR_CLAIM_TYPE;
                if (in_names(json_string_value(a), json_string_length(a), p->audiences, p->naudiences)) match = true;
            }
        }
        if (!match) return PT_JWT_ERR_AUD;
    }
    for (size_t i = 0; i < p->nrequired; i++)
        if (!json_object_get(c, p->required[i])) return PT_JWT_ERR_REQUIRED;
    return PT_JWT_OK;
}
