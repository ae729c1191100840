/* jwk.h — private to the jwt plugin: algorithms and verification keys.
 *
 * Every key is bound to exactly one algorithm when it is loaded (from the
 * configuration, a JWKS file or a JWKS document fetched from a URL) and only
 * ever verifies that algorithm: an RSA key loaded for RS256 is never used as
 * an HMAC secret (the HS/RS confusion), an HMAC secret never verifies
 * RS256. A key whose type does not fit its algorithm is refused at load
 * (RSA for RS and PS at >= 2048 bits, EC P-256/P-384/P-521 for
 * ES256/384/512, OKP Ed25519 for EdDSA, oct for HS at >= the hash length).
 *
 * Keys own their OpenSSL objects; a key set is a heap array freed with
 * pt_jwt_keyset_free. Loaded keys are immutable and may be used by several
 * worker threads at once (OpenSSL 3 EVP_PKEY verification is thread-safe on
 * a key that is not modified). Pure functions: no I/O, no globals. */
#ifndef PT_PLUGINS_JWT_JWK_H
#define PT_PLUGINS_JWT_JWK_H

#include <jansson.h>
#include <openssl/evp.h>

#include "plugin/plugin.h"

typedef enum {
    PT_JWT_HS256 = 0,
    PT_JWT_HS384,
    PT_JWT_HS512,
    PT_JWT_RS256,
    PT_JWT_RS384,
    PT_JWT_RS512,
    PT_JWT_PS256,
    PT_JWT_PS384,
    PT_JWT_PS512,
    PT_JWT_ES256,
    PT_JWT_ES384,
    PT_JWT_ES512,
    PT_JWT_EDDSA,
    PT_JWT_ALG__COUNT,
} pt_jwt_alg;

#define PT_JWT_ALG_UNKNOWN (-1)
#define PT_JWT_KID_MAX 256 /* bytes of a kid we keep or compare */

/* Strict base64url (RFC 4648 §5 without padding, as RFC 7515 §2 uses it):
 * only A-Z a-z 0-9 '-' '_', no '=', no whitespace, a length that is not 1
 * mod 4, and the unused low bits of the last character zero (one encoding
 * per byte string: no malleable tokens). Writes at most `cap` bytes to out.
 * Returns the decoded length, or -1 on any deviation or when cap is too
 * small. */
long pt_b64url_decode(const char *in, size_t n, uint8_t *out, size_t cap);
/* The decoded length of n base64url characters (n % 4 != 1). */
static inline size_t pt_b64url_decoded_len(size_t n) { return n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0); }

/* The algorithm named exactly `s` (case-sensitive, as RFC 7515 requires:
 * "none", "None", "hs256" are all unknown), or PT_JWT_ALG_UNKNOWN. */
int pt_jwt_alg_from_str(pt_str s);
const char *pt_jwt_alg_name(pt_jwt_alg alg);
bool pt_jwt_alg_is_hmac(pt_jwt_alg alg);

typedef struct {
    pt_jwt_alg alg;
    char *kid;            /* NUL-terminated heap copy, NULL when the key has none */
    EVP_PKEY *pkey;       /* asymmetric algorithms */
    uint8_t *secret;      /* HS*: the secret bytes (heap) */
    size_t secret_len;
    unsigned ec_len;      /* ES*: bytes of one coordinate / of r and of s (32, 48, 66) */
    uint8_t ec_order[66]; /* ES*: the group order n, big-endian, ec_len bytes */
} pt_jwt_key;

typedef struct {
    pt_jwt_key *v;
    size_t n;
} pt_jwt_keyset;

/* Releases what a key owns (not the struct itself). */
void pt_jwt_key_clear(pt_jwt_key *k);
/* Frees every key and the array; leaves an empty set. */
void pt_jwt_keyset_free(pt_jwt_keyset *s);
/* Moves *k (consumed) to the end of the set. */
void pt_jwt_keyset_add(pt_jwt_keyset *s, pt_jwt_key *k);

/* A public key from PEM text (SubjectPublicKeyInfo "PUBLIC KEY", or an
 * "RSA PUBLIC KEY") bound to `alg`, which must be asymmetric and fit the
 * key. false with a message in err on any problem. */
bool pt_jwt_key_from_pem(const char *pem, size_t len, pt_jwt_alg alg, const char *kid, pt_jwt_key *out, char *err,
                         size_t errlen);
/* An HMAC secret bound to `alg` (HS*), at least as long as the hash. */
bool pt_jwt_key_from_secret(const uint8_t *secret, size_t len, pt_jwt_alg alg, const char *kid, pt_jwt_key *out,
                            char *err, size_t errlen);
/* A key from a JWK object (RFC 7517/7518/8037): kty RSA (n, e), EC (crv, x,
 * y), OKP (crv Ed25519, x) or oct (k). Its algorithm is the JWK's `alg`;
 * when absent, `default_alg` (PT_JWT_ALG_UNKNOWN: refused). A JWK `alg`
 * that differs from a known default_alg is refused too. Private members
 * (d, p, q...) are ignored: only the public part is loaded. */
bool pt_jwk_parse(const json_t *jwk, int default_alg, pt_jwt_key *out, char *err, size_t errlen);

/* Parses a JWK Set document into *out (appending). Keys with `use` other
 * than "sig", or `key_ops` without "verify", are skipped (encryption keys
 * published beside signing keys). strict: any other unusable key is an
 * error; otherwise it is skipped and counted in *skipped. false (and err)
 * when the document is not a JWK Set, or on a strict error. */
bool pt_jwks_parse(const char *text, size_t len, int default_alg, bool strict, pt_jwt_keyset *out,
                   size_t *skipped, char *err, size_t errlen);

/* Parses JSON text with duplicate object keys rejected and at most
 * `max_depth` nested arrays/objects (checked before jansson sees it, so a
 * deep document costs one linear scan). NULL on any error. */
json_t *pt_jwt_json_parse(const char *text, size_t len, int max_depth);

#endif
