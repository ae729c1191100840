/* direct_response.h — private: the direct_response plugin's config, exposed
 * for unit tests.
 *
 *   plugins:
 *     - direct_response:
 *         status: 200                       # required, 200..599
 *         headers: {Content-Type: text/plain, Cache-Control: no-store}
 *         body: "ok\n"                      # default empty
 *         template: false                   # true: body placeholders (dr_template.h)
 */
#ifndef PT_PLUGINS_DIRECT_RESPONSE_H
#define PT_PLUGINS_DIRECT_RESPONSE_H

#include "plugins/direct_response/dr_template.h"
#include "plugins/plugin_util.h"
#include "plugin/plugin.h"

typedef struct {
    int status;
    pt_str content_type;        /* from headers (any case); empty if none */
    pt_plugin_header *headers;  /* every other header, in config order */
    size_t nheaders;
    pt_str body;
    bool templated;             /* `template: true`: body rendered per request */
    bool add_nosniff;           /* templated and no X-Content-Type-Options configured */
    pt_dr_template tmpl;
} pt_direct_response_conf;

extern const pt_plugin_type pt_plugin_direct_response;

#endif
