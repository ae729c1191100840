/* basic_auth.h — private: the basic_auth plugin (RFC 7617), its config and
 * pure helpers exposed for unit tests.
 *
 *   plugins:
 *     - basic_auth:
 *         realm: api                 # default "portico"
 *         cache_ttl: 60s             # successful verifications cached per worker; 0: off
 *         keep_authorization: false  # forward the Authorization header (default: removed)
 *
 * `Authorization: Basic <base64>`: strict base64 (RFC 4648 alphabet,
 * padding required, no whitespace), decoded "user:password" split at the
 * first colon, user non-empty, both valid UTF-8 without control
 * characters. The user names a consumer's basic credential; its crypt(3)
 * hash is verified off the worker loop (ba_pool.c), and successes are
 * cached per worker (a digest cache of 1024 entries, LRU, keyed by a salted
 * SHA-256 of user and password, tied to the stored hash, TTL). An unknown user
 * costs the same hash as a wrong password and gets the same 401 with
 * `WWW-Authenticate: Basic realm="...", charset="UTF-8"`. A malformed
 * credential is a 401 too. Another scheme in Authorization (Bearer...) is
 * not this plugin's: pt_txn_auth_none. */
#ifndef PT_PLUGINS_BASIC_AUTH_H
#define PT_PLUGINS_BASIC_AUTH_H

#include "plugin/plugin.h"

typedef struct {
    char *realm;
    pt_str challenge;            /* Basic realm="...", charset="UTF-8" */
    uint64_t cache_ttl_ms;
    bool keep_authorization;
} pt_basic_auth_conf;

extern const pt_plugin_type pt_plugin_basic_auth;

/* Bounds (docs/authentication.md): verifications waiting for or running on
 * the hashing threads, per worker; beyond it a request gets 503. Failed
 * verifications per worker per second (burst: twice that); beyond it
 * uncached verifications get 429 until the bucket refills. */
#define PT_BASIC_MAX_PENDING 64
#define PT_BASIC_FAILURES_PER_SEC 20

/* Strict base64 (RFC 4648 §4, padded, no whitespace) of s into out (cap >=
 * s.n / 4 * 3). Returns the decoded length or -1. */
ssize_t pt_basic_b64_decode(pt_str s, char *out, size_t cap);
/* Parses an Authorization value. 1: Basic credential in *user, *pass (in
 * `a`); 0: another scheme; -1: a malformed Basic credential. */
int pt_basic_parse(pt_arena *a, pt_str value, pt_str *user, pt_str *pass);

#endif
