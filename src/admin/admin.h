/* admin.h — the admin listener: /metrics (Prometheus text format),
 * /healthz and /readyz, on its own socket, thread and event loop, so a
 * scrape never runs on (or stalls) a worker. See docs/metrics.md.
 *
 * Deliberately small and strict: HTTP/1.x parsed by the proxy's own strict
 * parser (http/h1.h), GET and HEAD only (plugin endpoints may also take
 * POST and DELETE, see pt_admin_ext), one request per connection
 * (answers carry Connection: close), at most PT_ADMIN_MAX_CONNS
 * connections at once (more are closed at accept), and PT_ADMIN_TIMEOUT_MS
 * for the whole exchange. /metrics needs `Authorization: Bearer <token>`
 * when a token is configured (compared in constant time); /healthz and
 * /readyz never do, so orchestrator probes need no secret. The socket is
 * opened without SO_REUSEPORT, so it can never be shared with a proxy
 * listener. */
#ifndef PT_ADMIN_ADMIN_H
#define PT_ADMIN_ADMIN_H

#include "config/config.h"
#include "obs/metrics.h"

#define PT_ADMIN_MAX_CONNS 16
#define PT_ADMIN_TIMEOUT_MS 5000

typedef struct pt_admin pt_admin;

/* Binds `addr` and starts the admin thread; serves `metrics` (may be NULL:
 * /metrics then answers 404). `token` (NULL = none) is copied. Returns
 * NULL with errno set when the socket cannot be opened. Not ready until
 * pt_admin_set_ready(true). Call with the process signals blocked (the
 * thread inherits the mask). */
pt_admin *pt_admin_start(const pt_conf_addr *addr, const char *token, pt_metrics *metrics);
/* /readyz: 200 when ready, else 503 (starting, draining). Any thread. */
void pt_admin_set_ready(pt_admin *a, bool ready);
/* Replaces the bearer token (a reload); NULL = none. Main thread. */
void pt_admin_set_token(pt_admin *a, const char *token);
/* JSON endpoints under /api (the admin API, server/admin_api.c): called on
 * the admin thread for GET/HEAD of a path starting with "/api"; returns the
 * status with *body malloc'ed (freed by the admin listener) and
 * *content_type static, or 0 when the path is unknown (404). The bearer
 * token, when set, protects /api like /metrics. */
typedef int (*pt_admin_api_fn)(void *data, pt_str path, char **body, size_t *len, const char **content_type);
/* Installs the API handler (any thread; applied on the admin thread). */
void pt_admin_set_api(pt_admin *a, pt_admin_api_fn fn, void *data);
/* Endpoints that plugins expose (plugin.h, pt_conf_admin_endpoint), wired
 * by the server: `methods` tells which methods `path` answers
 * (PT_METHOD_BIT mask; 0: not such an endpoint), `call` answers like the
 * /api handler with the method and the raw query. Such endpoints may take
 * POST and DELETE; they always need the bearer token, and mutating
 * methods are refused (403) when no token is configured. Both run on the
 * admin thread. */
typedef struct {
    uint32_t (*methods)(pt_str path);
    int (*call)(pt_method method, pt_str path, pt_str query, char **body, size_t *len, const char **content_type);
} pt_admin_ext;
/* Installs `ext` (static; any thread; applied on the admin thread). */
void pt_admin_set_ext(pt_admin *a, const pt_admin_ext *ext);
/* Closes the listener and its connections, joins the thread, frees. */
void pt_admin_stop(pt_admin *a);

#endif
