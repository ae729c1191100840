/* request_id.h — private: the request_id plugin's config and helpers,
 * exposed for unit tests.
 *
 *   plugins:
 *     - request_id:
 *         header: X-Request-Id     # default
 *         trust_incoming: true     # keep a safe incoming id (default true)
 *         response_header: true    # echo it on the response (default true)
 */
#ifndef PT_PLUGINS_REQUEST_ID_H
#define PT_PLUGINS_REQUEST_ID_H

#include "plugin/plugin.h"

#define PT_REQUEST_ID_MAX 128
#define PT_REQUEST_ID_GEN_LEN 32

typedef struct {
    pt_str header; /* NUL-terminated, in the config arena */
    bool trust_incoming;
    bool response_header;
} pt_request_id_conf;

extern const pt_plugin_type pt_plugin_request_id;

/* True if `v` is 1..128 bytes of [A-Za-z0-9._:-] (safe to log and echo). */
bool pt_request_id_is_safe(pt_str v);
/* Writes 32 lowercase hex digits (a random 128-bit value) to out[0..32). */
void pt_request_id_generate(char out[PT_REQUEST_ID_GEN_LEN]);

#endif
