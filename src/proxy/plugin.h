/* plugin.h — the plugin contract.
 *
 * A plugin is a pt_plugin_type: a name, a `configure` that validates its
 * YAML block and returns its immutable per-instance config, the size of its
 * per-request state, and optional phase callbacks. The pipeline for a route
 * is built once per config generation: global plugins (config order), then
 * the route's plugins (config order). Phases run in that order for the
 * request side and in the same order for the response side.
 *
 * Each callback returns:
 *   PT_PLUGIN_CONTINUE  go on with the next plugin / the next step;
 *   PT_PLUGIN_RESPOND   the plugin called pt_txn_respond(): stop the request
 *                       phases and send that response (response-header
 *                       plugins still run on it, so headers/request_id apply);
 *   PT_PLUGIN_PAUSE     the plugin started something asynchronous (a timer,
 *                       later a Redis or IdP call) on pt_txn_loop(txn). The
 *                       request stays parked; when the event fires, the plugin
 *                       calls pt_txn_resume(txn, CONTINUE or RESPOND) exactly
 *                       once. If the client goes away while paused, the
 *                       request's arena is reset: register a cleanup with
 *                       pt_arena_on_cleanup(pt_txn_arena(txn), ...) to cancel
 *                       the pending event.
 * Body callbacks see each chunk as it streams (read-only, valid during the
 * call). PAUSE holds that chunk (the core copies it and stops reading that
 * side: backpressure); after pt_txn_resume() the remaining plugins see the
 * copy and it is forwarded. RESPOND from a request-body callback drops the
 * upstream exchange and sends the plugin's response (if no response has
 * started); from a response-body callback it can only abort the response.
 * Only one callback of a request is paused at a time: an upstream response
 * head that arrives during a request-body pause waits for the resume.
 * Callbacks run on the worker thread that owns the request; they must not block. */
#ifndef PT_PROXY_PLUGIN_H
#define PT_PROXY_PLUGIN_H

#include "config/conf_node.h"
#include "config/config.h"
#include "http/message.h"

typedef struct pt_txn pt_txn;
struct pt_loop;

typedef enum {
    PT_PLUGIN_CONTINUE = 0,
    PT_PLUGIN_RESPOND,
    PT_PLUGIN_PAUSE,
} pt_plugin_result;

typedef struct {
    const char *data;
    size_t len;
    bool last; /* true on the final call for this body (len may be 0) */
} pt_body_chunk;

typedef struct pt_plugin_type {
    const char *name;
    /* Validate `node` (the value under the plugin's name; PT_NODE_NULL if
     * none) and return the instance config, allocated in ctx->arena. On
     * error call pt_conf_error() and return NULL. */
    void *(*configure)(pt_conf_ctx *ctx, const pt_conf_node *node);
    size_t state_size; /* per-request state, zeroed, in the request arena */
    pt_plugin_result (*on_request_headers)(pt_txn *txn, const void *conf, void *state);
    pt_plugin_result (*on_request_body)(pt_txn *txn, const void *conf, void *state, const pt_body_chunk *c);
    pt_plugin_result (*on_response_headers)(pt_txn *txn, const void *conf, void *state);
    pt_plugin_result (*on_response_body)(pt_txn *txn, const void *conf, void *state, const pt_body_chunk *c);
    void (*on_log)(pt_txn *txn, const void *conf, void *state);
} pt_plugin_type;

/* Registry of built-in plugins (plugins/registry.c). NULL if unknown. */
const pt_plugin_type *pt_plugin_find(const char *name);
/* NULL-terminated list of all built-in plugin types. */
const pt_plugin_type *const *pt_plugin_all(void);

/* ---- What a plugin may do with the transaction (proxy/txn.c) ---- */

pt_request *pt_txn_request(pt_txn *txn);     /* mutable in request phases */
pt_response *pt_txn_response(pt_txn *txn);   /* valid in response phases; mutable there */
pt_arena *pt_txn_arena(pt_txn *txn);         /* the request arena */
struct pt_loop *pt_txn_loop(pt_txn *txn);    /* the worker loop owning the request */
const pt_route_conf *pt_txn_route(pt_txn *txn); /* NULL before routing / when unmatched */
/* Value of route parameter `name` ({name} in the route path), or a null slice. */
pt_str pt_txn_param(pt_txn *txn, const char *name);
pt_str pt_txn_request_id(pt_txn *txn);       /* empty until request_id (or the core) sets it */
void pt_txn_set_request_id(pt_txn *txn, pt_str id); /* copied into the arena */
pt_str pt_txn_client_addr(pt_txn *txn);      /* "203.0.113.7" (no port) */
/* Subject (RFC 2253) of the client certificate verified by an mTLS
 * listener, or an empty slice. */
pt_str pt_txn_client_cert_subject(pt_txn *txn);
/* subjectAltNames of that verified certificate as one list, e.g.
 * "DNS:a.example,URI:spiffe://acme/ns/x,email:bob@acme.com,IP:10.0.0.1"
 * (a ',' inside a value is written "%2C"), or an empty slice. */
pt_str pt_txn_client_cert_sans(pt_txn *txn);

/* Prepare a local response (then return PT_PLUGIN_RESPOND, or resume with it).
 * `body` is copied. Content-Type is set when content_type is non-empty. */
void pt_txn_respond(pt_txn *txn, int status, pt_str content_type, pt_str body);
/* Add a header to the local response prepared by pt_txn_respond(). */
void pt_txn_respond_header(pt_txn *txn, pt_str name, pt_str value);
/* Answer with an application/problem+json error (RFC 9457). */
void pt_txn_respond_problem(pt_txn *txn, int status, const char *detail);

/* Resume a request paused by a callback of this plugin (see above). */
void pt_txn_resume(pt_txn *txn, pt_plugin_result r);

#endif
