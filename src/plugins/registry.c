/* registry.c — the table of built-in plugin types, looked up by the config
 * loader when it meets a plugin name. Adding a built-in = one line here. */
#include "plugins/cache/cache.h"
#include "plugins/compression/compression.h"
#include "plugins/concurrency_limit/concurrency_limit.h"
#include "plugins/cors/cors.h"
#include "plugins/delay/delay.h"
#include "plugins/deprecation/deprecation.h"
#include "plugins/rate_limit/rate_limit.h"
#include "plugins/direct_response/direct_response.h"
#include "plugins/forward_auth/forward_auth.h"
#include "plugins/headers/headers.h"
#include "plugins/ip_restriction/ip_restriction.h"
#include "plugins/key_auth/key_auth.h"
#include "plugins/basic_auth/basic_auth.h"
#include "plugins/acl/acl.h"
#include "plugins/jwt/jwt.h"
#include "plugins/json_transform/json_transform.h"
#include "plugins/xml_json/xml_json.h"
#include "plugins/mtls_auth/mtls_auth.h"
#include "plugins/oauth2_introspection/oauth2_introspection.h"
#include "plugins/request_id/request_id.h"
#include "plugins/rewrite/rewrite.h"
#include "plugin/plugin.h"

static const pt_plugin_type *const builtin_plugins[] = {
    &pt_plugin_request_id,
    &pt_plugin_headers,
    &pt_plugin_direct_response,
    &pt_plugin_delay,
    &pt_plugin_rate_limit,
    &pt_plugin_concurrency_limit,
    &pt_plugin_ip_restriction,
    &pt_plugin_forward_auth,
    &pt_plugin_compression,
    &pt_plugin_key_auth,
    &pt_plugin_basic_auth,
    &pt_plugin_acl,
    &pt_plugin_jwt,
    &pt_plugin_mtls_auth,
    &pt_plugin_oauth2_introspection,
    &pt_plugin_cors,
    &pt_plugin_deprecation,
    &pt_plugin_rewrite,
    &pt_plugin_json_transform,
    &pt_plugin_xml_json,
    &pt_plugin_cache,
    NULL,
};

const pt_plugin_type *pt_plugin_find(const char *name)
{
    if (!name) return NULL;
    for (size_t i = 0; builtin_plugins[i]; i++)
        if (strcmp(builtin_plugins[i]->name, name) == 0) return builtin_plugins[i];
    return NULL;
}

const pt_plugin_type *const *pt_plugin_all(void) { return builtin_plugins; }
