/* key_auth.h — private: the key_auth plugin's config and its pure query
 * helper, exposed for unit tests.
 *
 *   plugins:
 *     - key_auth:
 *         header: X-API-Key     # default; null: keys are not read from a header
 *         query: api_key        # default: none (keys in URLs end up in logs and caches)
 *         realm: api            # default "portico": the challenge's realm
 *
 * The key is looked for in the header and the query parameter; both are
 * removed from the request before anything else (a bad key never reaches
 * the upstream or the access log). The key's SHA-256 digest is looked up
 * in the consumers' key table (O(1), digests compared with CRYPTO_memcmp):
 * an unknown key and a wrong one get the same 401 after the same work.
 * Two keys in one request (two headers, two parameters, or both places)
 * are refused (401). No key: pt_txn_auth_none (the route's auth mode
 * decides: another method, the anonymous consumer, or 401). Every 401
 * carries the challenge `Key realm="..."` (RFC 9110 §11.6.1: a 401 has a
 * WWW-Authenticate; API keys have no registered scheme, `Key` names this
 * one), the same for a missing, unknown or wrong key. */
#ifndef PT_PLUGINS_KEY_AUTH_H
#define PT_PLUGINS_KEY_AUTH_H

#include "plugin/plugin.h"

typedef struct {
    char *header;            /* NULL: off */
    char *query;             /* NULL: off */
    const char *realm;
    pt_str challenge;        /* Key realm="..." */
} pt_key_auth_conf;

extern const pt_plugin_type pt_plugin_key_auth;

/* Removes every parameter of `query` whose percent-decoded name is `name`.
 * Returns how many there were; the first one's percent-decoded value goes
 * to *value and the query without them to *rest (both in `a`). */
int pt_key_auth_take_query(pt_arena *a, pt_str query, pt_str name, pt_str *value, pt_str *rest);

#endif
