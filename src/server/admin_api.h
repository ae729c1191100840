/* admin_api.h — the read-only JSON admin API on the admin listener
 * (docs/admin_api.md): /api, /api/config, /api/routes, /api/upstreams,
 * /api/consumers and /api/openapi.json. */
#ifndef PT_SERVER_ADMIN_API_H
#define PT_SERVER_ADMIN_API_H

#include "proxy/generation.h"

/* The generation the API describes (the one serving new requests); takes a
 * reference, drops the previous one. NULL at shutdown. Main thread. */
void pt_admin_api_publish(pt_generation *g);

/* Records a configuration event for /api/reloads (the last 32 are kept):
 * ok with the generation now serving (detail "started" at start), or a
 * refused reload with the generation that kept serving and the first
 * error. Main thread. */
void pt_admin_api_reloaded(bool ok, uint64_t generation, const char *detail);

/* pt_admin_api_fn (admin/admin.h): answers GET `path` under /api with a
 * malloc'ed body; 0 when the path is not an API endpoint, 503 before the
 * first generation is published. Admin thread. */
int pt_admin_api(void *data, pt_str path, char **body, size_t *len, const char **content_type);

/* The OpenAPI 3.1 document (malloc'ed). */
char *pt_admin_openapi(size_t *len);

#endif
