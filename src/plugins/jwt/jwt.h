/* jwt.h — private: the jwt plugin's configuration and its pure request
 * helpers, exposed for unit tests. Design note and reference: docs/jwt.md.
 *
 *   plugins:
 *     - jwt:
 *         keys:                                   # keys from the configuration
 *           - {alg: RS256, kid: k1, pem: "-----BEGIN PUBLIC KEY-----..."}
 *           - {alg: ES256, pem_file: /etc/portico/es.pem}
 *           - {alg: HS256, secret: "${JWT_SECRET}"}
 *           - {alg: EdDSA, jwk: {kty: OKP, crv: Ed25519, x: "..."}}
 *         jwks_file: /etc/portico/jwks.json       # a JWK Set read at load time
 *         jwks_alg: RS256                          # alg for its keys that have none
 *         jwks:                                    # a JWK Set fetched from the IdP (jwks_src.h)
 *           upstream: idp
 *           path: /.well-known/jwks.json
 *           alg: RS256                             # for its keys without alg (else skipped)
 *           refresh: 5m                            # without Cache-Control max-age
 *           min_refresh: 30s                       # also: unknown-kid refetch rate limit
 *           max_refresh: 24h
 *           timeout: 5s
 *         issuers: [https://idp.example]
 *         audiences: [orders-api]
 *         required_claims: [sub]
 *         require_exp: true
 *         leeway: 30s
 *         typ: at+jwt
 *         max_token_size: 8k
 *         token: [{header: Authorization}, {query: access_token}, {cookie: jwt}]
 *         realm: api
 *         claims_to_headers: {sub: X-User-Id, email: X-User-Email}
 *         forward_token: true
 *         cache: {max_entries: 10000, ttl: 5m}    # or `cache: off`
 *         consumer:                                # who the token names (identity model)
 *           claim: sub                             # the claim holding the consumer's name
 *           required: false                        # true: must be a configured consumer
 *           groups_claim: groups                   # ad-hoc consumers: their groups (off by default)
 *           max_groups: 32
 *
 * In the identity model (plugin.h "Identity") the plugin is a Bearer
 * method: no token is pt_txn_auth_none (challenge `Bearer realm=...`), a
 * refused token its own 401/400 (RFC 6750), a verified one names the
 * consumer, adds the `scope`/`scp` scopes and exports top-level claims
 * (pt_txn_set_claim) for authorization plugins.
 */
#ifndef PT_PLUGINS_JWT_JWT_H
#define PT_PLUGINS_JWT_JWT_H

#include "plugins/jwt/jwk.h"
#include "plugins/jwt/jwks_src.h"
#include "plugins/jwt/jws.h"
#include "plugin/plugin.h"

#define PT_JWT_MAX_MAX_TOKEN (64u << 10)
#define PT_JWT_DEFAULT_CACHE_ENTRIES 10000
#define PT_JWT_DEFAULT_CACHE_TTL_MS (5ull * 60 * 1000)
#define PT_JWT_MAX_HEADER_VALUE 4096 /* a mapped claim longer than this is not forwarded */
#define PT_JWT_SALT_LEN 16
#define PT_JWT_MAX_NAME 256        /* an ad-hoc consumer's name, bytes */
#define PT_JWT_MAX_GROUP 128       /* one group name, bytes */
#define PT_JWT_DEFAULT_MAX_GROUPS 32
#define PT_JWT_MAX_MAX_GROUPS 256
#define PT_JWT_MAX_SCOPES 256      /* more scopes: the token is refused */
#define PT_JWT_MAX_SCOPE 256       /* one scope, bytes */
#define PT_JWT_MAX_FACTS 64        /* top-level claims exported as facts */
#define PT_JWT_MAX_FACT 1024       /* a fact's value, bytes (longer: not exported) */

/* Where a token may come from. */
/* What a verified token says about its caller (jwt.c builds it; the
 * verified-token cache keeps a deep copy). */
typedef struct {
    pt_str consumer;                   /* the consumer claim's value */
    const pt_str *groups;              /* an ad-hoc consumer's groups */
    uint32_t ngroups;
    const pt_str *scopes;
    uint32_t nscopes;
    const pt_header *claims;           /* name -> value (pt_txn_set_claim) */
    uint32_t nclaims;
    const pt_header *headers;          /* claims_to_headers: header -> value */
    uint32_t nheaders;
    pt_str signing_input;              /* the token's "header.payload" (the cache compares it) */
} pt_jwt_ident;

typedef enum { PT_JWT_SRC_HEADER = 0, PT_JWT_SRC_QUERY, PT_JWT_SRC_COOKIE } pt_jwt_src_kind;

typedef struct {
    pt_jwt_src_kind kind;
    pt_str name;   /* header, query parameter or cookie name (NUL-terminated) */
    pt_str scheme; /* HEADER: required auth-scheme ("Bearer"), empty: the whole value */
} pt_jwt_source;

/* One claim -> upstream header mapping. */
typedef struct {
    const char *claim;
    pt_str header;
} pt_jwt_claim_header;

typedef struct {
    pt_jwt_keyset keys;       /* configured + JWKS file keys (owned; freed by destroy) */
    pt_jwks_conf *jwks;       /* JWKS URL, or NULL */
    pt_jwt_policy policy;
    size_t max_token;
    pt_jwt_source *sources;
    size_t nsources;
    pt_str realm;             /* quoted-string-safe */
    pt_jwt_claim_header *claim_headers;
    size_t nclaim_headers;
    bool forward_token;
    bool cache;
    size_t cache_max_entries;
    uint64_t cache_ttl_ms;
    const char *consumer_claim;    /* default "sub" */
    bool consumer_required;        /* the claim must name a configured consumer */
    const char *groups_claim;      /* ad-hoc consumers' groups, or NULL */
    size_t max_groups;
    uint8_t salt[PT_JWT_SALT_LEN]; /* random per instance: cache namespace */
    pt_metric_series *decisions;   /* portico_jwt_decisions_total{result} */
} pt_jwt_conf;

/* The `result` label of portico_jwt_decisions_total. */
typedef enum {
    PT_JWT_R_ALLOWED = 0,  /* verified now */
    PT_JWT_R_CACHE_HIT,    /* allowed from the per-worker cache */
    PT_JWT_R_MISSING,      /* no token presented: 401 */
    PT_JWT_R_INVALID,      /* a token was refused: 401 (400 for several tokens) */
    PT_JWT_R_UNAVAILABLE,  /* no key set could be fetched yet: 503 */
} pt_jwt_result;

/* Per-worker state of the type: the verified-token cache (a digest cache
 * shared by the instances, whose keys also hash each instance's salt) and
 * the JWKS sources. */
typedef struct {
    pt_digest_cache *cache;
    pt_jwks_src *sources;
} pt_jwt_worker;

/* Per-request state (zeroed, in the request arena). */
typedef struct {
    pt_jwks_waiter wait;      /* first: the waiter is the state */
    pt_txn *txn;
    const pt_jwt_conf *conf;
    pt_str token;             /* in the request's headers / target */
    bool waited;              /* already waited once for a fetch: never again */
    bool cleanup;             /* the arena cleanup is registered */
} pt_jwt_state;

extern const pt_plugin_type pt_plugin_jwt;

/* Outcome of looking for the token. */
typedef enum { PT_JWT_TOKEN_NONE = 0, PT_JWT_TOKEN_ONE, PT_JWT_TOKEN_MANY } pt_jwt_token_found;

/* Looks for the token in the request as `sources` say: every occurrence of
 * every source is considered; more than one token is MANY (RFC 6750 §2:
 * one method only). A header with another auth-scheme is no token. */
pt_jwt_token_found pt_jwt_find_token(const pt_jwt_conf *c, const pt_request *req, pt_str *token);

/* forward_token: false for a query source: `query` without the parameters
 * named `name` ("name=..." or a bare "name"), the others kept byte for
 * byte in their order with their '&' separators. *removed says how many
 * went; when none, `query` itself is returned. Allocated in `a`. */
pt_str pt_jwt_query_without(pt_str query, pt_str name, pt_arena *a, int *removed);
/* The same for a Cookie field value: the cookie-pairs named `name`
 * removed, the others kept (each pair's bytes, joined with "; " as RFC
 * 6265 §5.4 writes them); empty when none is left. */
pt_str pt_jwt_cookies_without(pt_str value, pt_str name, pt_arena *a, int *removed);

/* The value sent upstream for a claim: strings as they are, numbers and
 * booleans as JSON text, an array of strings joined with ",", anything
 * else as compact JSON. Empty (not forwarded) when the result would hold
 * control bytes or exceed PT_JWT_MAX_HEADER_VALUE. Allocated in `a`. */
pt_str pt_jwt_claim_value(const json_t *v, pt_arena *a);

/* Reads what a verified token says about its caller into *id (in `a`):
 * the consumer claim, the groups claim (ad-hoc consumers), the scopes of
 * `scope` and `scp` (a space-separated string or an array of strings), the
 * top-level claims exported as facts (strings as they are, numbers,
 * booleans and arrays in compact JSON; objects, values with control bytes
 * or over PT_JWT_MAX_FACT bytes skipped; at most PT_JWT_MAX_FACTS), with
 * `client_id` taken from `azp` when the token has only that. Claim headers
 * are not touched. NULL on success, else why the token cannot name a
 * caller (a fixed sentence). */
/* The verified-token cache (plugin/digest_cache.h), so an RSA/ECDSA
 * verification is paid once per token and worker. An entry is keyed by
 * SHA-256(cache salt, instance salt, the token's signature part) and holds
 * the token's signing input ("header.payload"), which a hit must equal
 * byte for byte: together they match the exact token verified, while the
 * per-request hash covers only the signature (the signing input is
 * compared, not hashed: cheaper, and it is no secret — without its
 * signature it is no credential). The entry is a deep copy of the
 * identity, in the entry's own allocation, valid until the wall-clock
 * expires_ms (the token's exp, bounded by the configured ttl).
 * pt_jwt_cache_put stores it (NULL: an empty identity) keeping at most
 * max_entries entries, and returns the copy (NULL if already expired);
 * pt_jwt_cache_get returns the live copy or NULL. Copies stay valid until
 * the next put or free. */
const pt_jwt_ident *pt_jwt_cache_put(pt_digest_cache *c, const uint8_t key[PT_DIGEST_LEN], uint64_t expires_ms,
                                     const pt_jwt_ident *id, size_t max_entries, uint64_t now_ms);
const pt_jwt_ident *pt_jwt_cache_get(pt_digest_cache *c, const uint8_t key[PT_DIGEST_LEN], uint64_t now_ms);
const char *pt_jwt_read_ident(const pt_jwt_conf *c, const json_t *claims, pt_arena *a, pt_jwt_ident *id);
/* A compact token's signing input (before the last '.') and signature part
 * (after it; the whole token when it has no '.'). */
void pt_jwt_token_split(pt_str token, pt_str *signing_input, pt_str *signature);
/* The cache entry e serves a token whose signing input is `signing_input`
 * (found by the token's signature part): the two are equal. */
bool pt_jwt_cache_entry_matches(const pt_jwt_ident *e, pt_str signing_input);

/* The WWW-Authenticate value for a 401/400 (RFC 6750 §3), in `a`:
 * `Bearer realm="R"` and, when err is non-NULL, error="err" and
 * error_description="desc". */
pt_str pt_jwt_www_authenticate(const pt_jwt_conf *c, const char *err, const char *desc, pt_arena *a);

#endif
