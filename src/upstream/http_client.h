/* http_client.h — the internal HTTP client's internals for the core (the
 * plugin-facing API is in plugin/plugin.h: pt_http_fetch, pt_http_cancel,
 * pt_txn_subrequest). A call runs one request/response exchange with a
 * configured upstream through pt_exchange_open, the same way a proxied
 * request does: target choice, pools, TLS, HTTP/1.1 or HTTP/2, retries of
 * stale pooled connections and of failed connects. */
#ifndef PT_UPSTREAM_HTTP_CLIENT_H
#define PT_UPSTREAM_HTTP_CLIENT_H

#include "plugin/plugin.h"

/* Puts `c` on the list at *head (an owner's calls, e.g. a txn's
 * sub-requests); a call leaves its list by itself when it completes or is
 * cancelled, so the owner can cancel whatever is still on it. */
void pt_http_call_link(pt_http_call *c, pt_http_call **head);
struct pt_worker;
struct pt_worker_gen;
/* pt_http_fetch on worker w against the upstreams of generation wg (a
 * request's own generation, which the call then pins too). */
pt_http_call *pt_http_fetch_in(struct pt_worker *w, struct pt_worker_gen *wg, const pt_http_request *req,
                               pt_http_done_fn done, void *data);

#endif
