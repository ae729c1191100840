/* headers.h — private: the headers plugin's config, exposed for unit tests.
 *
 *   plugins:
 *     - headers:
 *         request:
 *           remove: [X-Debug]
 *           set: {X-Forwarded-Proto: http}
 *           add: {Via: portico}
 *         response:
 *           set: {Cache-Control: no-store}
 *
 * Per side the order is: remove, then set (replace all), then add (append).
 * Framing/hop-by-hop headers (Content-Length, Transfer-Encoding, Host,
 * Connection, ...) are refused at config time. */
#ifndef PT_PLUGINS_HEADERS_H
#define PT_PLUGINS_HEADERS_H

#include "plugins/plugin_util.h"
#include "plugin/plugin.h"

typedef struct {
    const char **remove;     /* NUL-terminated names */
    size_t nremove;
    pt_plugin_header *set;
    size_t nset;
    pt_plugin_header *add;
    size_t nadd;
} pt_header_ops;

typedef struct {
    pt_header_ops request;
    pt_header_ops response;
} pt_headers_plugin_conf;

extern const pt_plugin_type pt_plugin_headers;

/* Applies ops to `h` (remove, set, add). Values are slices into the config
 * arena, which outlives every request of its generation: nothing is copied. */
void pt_headers_plugin_apply(const pt_header_ops *ops, pt_headers *h, pt_arena *a);

#endif
