/* jws.h — private to the jwt plugin: compact JWS tokens (RFC 7515/7519),
 * their signature and their claims. Pure functions, unit-tested in
 * tests/unit/test_jwt.c; the plugin (jwt.c) strings them together:
 *
 *   pt_jws_parse   size cap, three strict base64url parts, header and
 *                  claims as bounded JSON objects without duplicate members,
 *                  the header's alg/kid/typ; refuses alg "none" (any
 *                  spelling), jku, x5u, jwk, x5c and any crit;
 *   pt_jws_verify  the signature with one key, which must be bound to the
 *                  token's alg (no HS/RS confusion);
 *   pt_jwt_check_claims  exp, nbf, iat with leeway, iss, aud, required
 *                  claims, typ.
 *
 * Errors are codes with fixed descriptions (pt_jwt_err_text) that never
 * contain token content. */
#ifndef PT_PLUGINS_JWT_JWS_H
#define PT_PLUGINS_JWT_JWS_H

#include "plugins/jwt/jwk.h"

#define PT_JWT_MAX_JSON_DEPTH 16
#define PT_JWT_DEFAULT_MAX_TOKEN 8192

typedef enum {
    PT_JWT_OK = 0,
    PT_JWT_ERR_TOO_LARGE,   /* over the size cap: nothing else looked at */
    PT_JWT_ERR_MALFORMED,   /* not three strict base64url parts of JSON objects */
    PT_JWT_ERR_ALG,         /* alg missing, "none", unknown or not allowed */
    PT_JWT_ERR_HEADER,      /* jku, x5u, jwk, x5c or crit present, or a bad kid/typ */
    PT_JWT_ERR_NO_KEY,      /* no configured key for this kid/alg */
    PT_JWT_ERR_SIGNATURE,   /* the signature does not verify */
    PT_JWT_ERR_EXPIRED,     /* exp passed (beyond the leeway) */
    PT_JWT_ERR_NOT_YET,     /* nbf or iat in the future (beyond the leeway) */
    PT_JWT_ERR_CLAIM_TYPE,  /* exp/nbf/iat not numbers, iss/aud/sub of the wrong type */
    PT_JWT_ERR_ISS,         /* iss not among the allowed issuers */
    PT_JWT_ERR_AUD,         /* no aud among the allowed audiences */
    PT_JWT_ERR_REQUIRED,    /* a required claim is missing */
    PT_JWT_ERR_TYP,         /* the header typ is not the one required */
} pt_jwt_err;

/* A fixed human-readable description (for error_description and logs). */
const char *pt_jwt_err_text(pt_jwt_err e);

/* A parsed token. `header` and `claims` are owned (pt_jws_free). */
typedef struct {
    pt_str signing_input;    /* "header.payload" in the caller's token bytes */
    json_t *header, *claims;
    pt_jwt_alg alg;
    const char *kid;         /* in `header`; NULL when absent */
    size_t kid_len;
    const char *typ;         /* in `header`; NULL when absent */
    uint8_t sig[1024];       /* the decoded signature (RSA up to 8192 bits) */
    size_t sig_len;
} pt_jws;

/* Parses `token` (its bytes stay the caller's; signing_input points into
 * them). Refuses tokens over max_len bytes before anything else. On error
 * nothing is left to free. */
pt_jwt_err pt_jws_parse(pt_str token, size_t max_len, pt_jws *out);
void pt_jws_free(pt_jws *t);

/* Verifies t's signature with `key`: PT_JWT_ERR_ALG when the key is bound
 * to another algorithm, else OK or PT_JWT_ERR_SIGNATURE. HMAC tags compare
 * in constant time; ECDSA signatures must be r||s of exactly twice the
 * coordinate length with 0 < r, s < n (so r = s = 0 and r = s = n, the
 * "psychic signatures", never reach the verifier). */
pt_jwt_err pt_jws_verify(const pt_jws *t, const pt_jwt_key *key);

/* Picks the keys to try: with a kid, the keys of that kid bound to t->alg
 * (when no key has that kid: the keys configured without a kid); without a
 * kid, every key bound to t->alg. Calls pt_jws_verify on each until one
 * verifies. Returns OK, PT_JWT_ERR_SIGNATURE (a candidate existed) or
 * PT_JWT_ERR_NO_KEY (none; *kid_unknown tells whether the kid named no key
 * at all, which may warrant a JWKS refresh). */
pt_jwt_err pt_jws_verify_set(const pt_jws *t, const pt_jwt_keyset *set, bool *kid_unknown);

/* What the claims must satisfy. Lists are arrays of NUL-terminated strings. */
typedef struct {
    int64_t leeway_s;        /* applied to exp, nbf and iat */
    bool require_exp;        /* a token without exp is refused */
    const char *const *issuers; size_t nissuers;     /* none: any iss */
    const char *const *audiences; size_t naudiences; /* none: aud not checked */
    const char *const *required; size_t nrequired;   /* claim names that must be present */
    const char *typ;         /* required header typ (case-insensitive; "at+jwt" also accepts
                                "application/at+jwt"); NULL: not checked */
} pt_jwt_policy;

/* Checks the header typ and the claims of a parsed token at wall-clock
 * time now_s. *exp_s gets exp (or INT64_MAX when absent) for caching. */
pt_jwt_err pt_jwt_check_claims(const pt_jws *t, const pt_jwt_policy *p, int64_t now_s, int64_t *exp_s);

#endif
