/* plugin.h — the plugin contract.
 *
 * A plugin is a pt_plugin_type: a name, a `configure` that validates its
 * YAML block and returns its immutable per-instance config, the size of its
 * per-request state, and optional phase callbacks. The pipeline for a route
 * is built once per config generation: global plugins (config order), then
 * the route's plugins (config order). Request-side callbacks run in that
 * order; response-side callbacks run in the same order.
 *
 * Two directions, two cursors. The request side (request headers, request
 * body) and the response side (response headers, response body) each have
 * their own position in the pipeline, their own pause and their own held
 * body: a pause on one side never moves or hides the other side (an early
 * upstream response can go through the response plugins while a
 * request-body plugin is still paused, and both sides can be paused at
 * once).
 *
 * Each callback returns:
 *   PT_PLUGIN_CONTINUE  go on with the next plugin / the next step;
 *   PT_PLUGIN_RESPOND   the plugin called pt_txn_respond*(): stop the request
 *                       side and send that response (response-header
 *                       plugins still run on it, so headers/request_id apply);
 *                       from a response-header callback it replaces the
 *                       response, and the response side starts over on the
 *                       new one (every plugin sees what is sent; after 3
 *                       replacements it just goes on);
 *   PT_PLUGIN_PAUSE     the plugin started something asynchronous (a timer,
 *                       a Redis or HTTP call) on pt_txn_loop(txn). That side
 *                       stays parked (body: its reading stops, backpressure);
 *                       when the event fires the plugin calls
 *                       pt_txn_resume(txn, side, CONTINUE or RESPOND) once.
 *                       The request may end while paused (client gone,
 *                       deadline, shutdown): hold a pt_txn_ref, or register
 *                       a cleanup with pt_arena_on_cleanup(pt_txn_arena(txn))
 *                       to cancel the pending event;
 *   PT_PLUGIN_BUFFER    (body callbacks only) keep the bytes of this body
 *                       call in this plugin's slot and call again with the
 *                       next bytes appended (the plugin sees one growing
 *                       body); the later plugins see nothing yet. Bounded by
 *                       the route's max_buffered_body: over it the request
 *                       gets 413, a response 502. Treated as CONTINUE on the
 *                       last call.
 *
 * Bodies. A body callback gets the bytes that reached its position as a
 * mutable pt_body: it may read them, consume, replace or append (a
 * compressor replaces them with its output, possibly with nothing yet).
 * What it leaves is what the next plugin sees. Whoever changes a body's
 * length must say so in its header-phase callback with
 * pt_txn_body_will_change() (Content-Length dropped, framing switched to
 * chunked / unframed HTTP/2 DATA, a strong ETag weakened). Empty non-last
 * calls are not delivered. During a body pause the plugin may still edit
 * the held bytes (pt_txn_held_body) before it resumes: that is how data is
 * injected later from an async callback. On the last call trailers are
 * visible and editable (pt_txn_trailers); for an HTTP/1 upstream, request
 * trailers only travel with a chunked body.
 *
 * Callbacks run on the worker thread that owns the request; they must not
 * block. */
#ifndef PT_PLUGIN_PLUGIN_H
#define PT_PLUGIN_PLUGIN_H

#include "config/conf_node.h"
#include "config/config.h"
#include "http/message.h"

typedef struct pt_txn pt_txn;
struct pt_loop;

typedef enum {
    PT_PLUGIN_CONTINUE = 0,
    PT_PLUGIN_RESPOND,
    PT_PLUGIN_PAUSE,
    PT_PLUGIN_BUFFER,
} pt_plugin_result;

/* The two sides of a transaction. */
typedef enum {
    PT_SIDE_REQUEST = 0,
    PT_SIDE_RESPONSE = 1,
} pt_side;

/* Body bytes at one plugin position (see "Bodies" above). Opaque. */
typedef struct pt_body pt_body;

const char *pt_body_data(const pt_body *b); /* contiguous; valid until the body is changed */
size_t pt_body_len(const pt_body *b);
bool pt_body_last(const pt_body *b);        /* the last call for this body */
/* Drops the first n bytes (n <= len). */
void pt_body_consume(pt_body *b, size_t n);
/* Replaces the bytes with a copy of data[0, len) (len 0: nothing left). */
void pt_body_replace(pt_body *b, const char *data, size_t len);
/* Appends a copy of data[0, len). */
void pt_body_append(pt_body *b, const char *data, size_t len);

/* Statistics of a finished (or finishing) request, for the log phase. */
typedef struct {
    int status;            /* what the client got: the status sent, 502/504 when an upstream
                              failure was answered, 499 when the client left first */
    bool aborted;          /* the response was cut after its head (client saw a broken response) */
    bool upstream_failed;  /* the upstream exchange failed (connect, timeout, invalid or cut response) */
    uint64_t bytes_in;     /* request bytes received (head, body, trailers) */
    uint64_t bytes_out;    /* response bytes the codec wrote for this request */
    uint64_t total_us;     /* from the first byte of the request head to now */
    int64_t upstream_us;   /* first upstream attempt to the end of the upstream response, -1 none */
    int64_t ttfb_us;       /* request start to the upstream's response head, -1 none */
    int attempts;          /* upstream connection attempts (retries included) */
    pt_str target;         /* the last upstream target tried ("10.0.0.1:8080"), empty if none */
    int target_index;      /* its position in the route's upstream targets, -1 if none */
    const pt_route_conf *route; /* NULL when no route matched */
    pt_method method;
} pt_txn_stats;

typedef struct pt_plugin_type {
    const char *name;
    /* Validate `node` (the value under the plugin's name; PT_NODE_NULL if
     * none) and return the instance config, allocated in ctx->arena. On
     * error call pt_conf_error() and return NULL. */
    void *(*configure)(pt_conf_ctx *ctx, const pt_conf_node *node);
    /* Optional: release what configure() acquired outside ctx->arena; called
     * when the generation that holds the instance is freed (or a failed
     * load is discarded). */
    void (*destroy)(void *conf);
    /* Optional per-worker state of the type, living as long as the worker
     * (across reloads): created on the worker's thread before it serves,
     * destroyed when it stops. Reach it with pt_txn_worker_state(). */
    void *(*worker_init)(struct pt_loop *loop);
    void (*worker_fini)(struct pt_loop *loop, void *wstate);
    size_t state_size; /* per-request state, zeroed, in the request arena */
    pt_plugin_result (*on_request_headers)(pt_txn *txn, const void *conf, void *state);
    pt_plugin_result (*on_request_body)(pt_txn *txn, const void *conf, void *state, pt_body *body);
    pt_plugin_result (*on_response_headers)(pt_txn *txn, const void *conf, void *state);
    pt_plugin_result (*on_response_body)(pt_txn *txn, const void *conf, void *state, pt_body *body);
    /* Optional: a pause of this plugin on `side` was dropped before it
     * resumed (the request ended, or the response it paused on was replaced
     * by an error or a local answer). Cancel the pending event: a resume
     * arriving later could otherwise release a later pause of that side.
     * Plugins that pause on the response side must implement it. */
    void (*on_pause_cancelled)(pt_txn *txn, const void *conf, void *state, pt_side side);
    /* The request is over (also after aborts); pt_txn_get_stats() tells how. */
    void (*on_log)(pt_txn *txn, const void *conf, void *state);
} pt_plugin_type;

/* Registry of built-in plugins (plugins/registry.c). NULL if unknown. */
const pt_plugin_type *pt_plugin_find(const char *name);
/* NULL-terminated list of all built-in plugin types. */
const pt_plugin_type *const *pt_plugin_all(void);

/* ---- What a plugin may do with the transaction (proxy/txn.c) ---- */

/* The request; mutable in request phases. NULL in the response phases of
 * an answer to a request that could not be parsed (400, 431...). */
pt_request *pt_txn_request(pt_txn *txn);
pt_response *pt_txn_response(pt_txn *txn);   /* valid in response phases; mutable there */
pt_arena *pt_txn_arena(pt_txn *txn);         /* the request arena */
struct pt_loop *pt_txn_loop(pt_txn *txn);    /* the worker loop owning the request */
const pt_route_conf *pt_txn_route(pt_txn *txn); /* NULL before routing / when unmatched */
/* The request path as routed: normalised once by the core (dot segments
 * resolved, %2F kept as data), without the query; what route matching and
 * path-based decisions must use instead of the raw target. Empty before
 * routing or when the path was invalid (the core answered 400). */
pt_str pt_txn_path(pt_txn *txn);
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
/* The per-worker state `type`'s worker_init returned on this worker (NULL if none). */
void *pt_txn_worker_state(pt_txn *txn, const pt_plugin_type *type);
/* How the request went so far (complete in on_log). */
void pt_txn_get_stats(pt_txn *txn, pt_txn_stats *out);

/* Prepare a local response (then return PT_PLUGIN_RESPOND, or resume with it).
 * `body` is copied. Content-Type is set when content_type is non-empty. */
void pt_txn_respond(pt_txn *txn, int status, pt_str content_type, pt_str body);
/* Add a header to the local response prepared by pt_txn_respond(). */
void pt_txn_respond_header(pt_txn *txn, pt_str name, pt_str value);
/* Answer with an application/problem+json error (RFC 9457). */
void pt_txn_respond_problem(pt_txn *txn, int status, const char *detail);

/* ---- Streamed responses (response sources) ----
 * A response comes from a source: the upstream exchange, a fixed local
 * body (pt_txn_respond), or a generator a plugin provides, which produces
 * the body over time (a cache entry still arriving, an aggregate of several
 * calls, server-sent events). A generator is pulled with the same
 * backpressure as an upstream: `proceed` runs whenever the client can take
 * more (first right after the head went out); the plugin writes with
 * pt_txn_stream_write() — now or later from an async callback — until that
 * returns false (wait for the next proceed) or it wrote the last bytes. The
 * bytes go through the response-body plugins like any others. */
typedef struct {
    void (*proceed)(pt_txn *txn, void *data);
    /* The response is over (complete, cut, or the request ended): release
     * what `data` holds. Runs exactly once; no call on txn after it. */
    void (*stop)(pt_txn *txn, void *data, bool complete);
} pt_generator;

/* Prepare a streamed response (then return PT_PLUGIN_RESPOND, or resume
 * with it). content_length: the body's length when known, else -1. Add
 * headers with pt_txn_respond_header(). */
void pt_txn_respond_stream(pt_txn *txn, int status, pt_str content_type, int64_t content_length,
                           const pt_generator *gen, void *data);
/* Body bytes of a streamed response (copied); `last` ends it. Returns true
 * while more is welcome now, false when the generator must wait for its
 * next proceed (or the response is over). */
bool pt_txn_stream_write(pt_txn *txn, const char *data, size_t len, bool last);

/* From a header-phase callback of `side`: the body of that side will be
 * rewritten, so its length is unknown (Content-Length dropped, chunked /
 * unframed DATA). On the response side a strong ETag becomes weak. */
void pt_txn_body_will_change(pt_txn *txn, pt_side side);
/* During a body pause of `side`: the bytes held at the paused plugin (it
 * may edit them before resuming). NULL when that side is not paused in a
 * body callback. */
pt_body *pt_txn_held_body(pt_txn *txn, pt_side side);
/* The trailer fields of `side`, mutable (an empty list if none arrived).
 * Meaningful in the last body call of that side (and during a pause in
 * it); what is left there is sent. */
pt_headers *pt_txn_trailers(pt_txn *txn, pt_side side);

/* Resume `side`, paused by a callback of this plugin (see above). A resume
 * for a request that is over, or a side that is not paused, is ignored.
 * A pause the core drops (see on_pause_cancelled) must not be resumed
 * later: the resume would release whatever pause that side has then. */
void pt_txn_resume(pt_txn *txn, pt_side side, pt_plugin_result r);

/* ---- Configure-time references ----
 * From config/config.h: pt_conf_upstream(ctx, node) (an upstream by name,
 * for the internal HTTP client) and pt_ip_set_read(ctx, list, what, set)
 * (an address/CIDR list, matched with pt_ip_addr_parse and
 * pt_ip_set_contains from net/ipset.h). */

/* ---- Internal HTTP client ----
 * Calls to a configured upstream on the same machinery as proxied requests
 * (target choice, keep-alive pools, TLS with verification, HTTP/1.1 or
 * HTTP/2, timeouts), for plugins: an auth service, a JWKS or introspection
 * endpoint. Non-blocking: the result comes back through `done`, always
 * later on the same worker loop (never inside the starting call), exactly
 * once unless the call is cancelled first. */
typedef struct pt_http_call pt_http_call;

typedef struct {
    const pt_upstream_conf *upstream; /* from pt_conf_upstream() */
    pt_str method;           /* "GET", "POST"... */
    pt_str target;           /* "/path?query" (origin form) */
    pt_str host;             /* Host / :authority; empty: the target's "host:port" */
    const pt_headers *headers; /* extra request fields (copied), or NULL */
    pt_str body;             /* request body (copied); empty: none */
    uint64_t timeout_ms;     /* whole call; 0: the upstream's read timeout */
    size_t max_body;         /* response body cap; 0: 1 MiB; over it the call fails */
} pt_http_request;

typedef enum {
    PT_HTTP_OK = 0,          /* a response arrived (any status) */
    PT_HTTP_ERR_CONNECT,     /* no target could be reached */
    PT_HTTP_ERR_TIMEOUT,     /* timeout_ms passed */
    PT_HTTP_ERR_TOO_LARGE,   /* the response body exceeded max_body */
    PT_HTTP_ERR_PROTOCOL,    /* invalid response, closed mid-way, TLS failure */
    PT_HTTP_ERR_UPSTREAM_GONE, /* the upstream is not in the running configuration */
} pt_http_error;

typedef struct {
    pt_http_error error;
    int status;              /* PT_HTTP_OK: the response status */
    const pt_headers *headers; /* response fields (end-to-end), valid during the callback */
    pt_str body;             /* valid during the callback */
    const char *detail;      /* failure: a short human-readable reason */
} pt_http_result;

typedef void (*pt_http_done_fn)(void *data, const pt_http_result *r);

/* Starts a call on the worker owning `loop` (pt_txn_loop, or the loop given
 * to worker_init). NULL when req is invalid (no upstream, empty method or
 * target). */
pt_http_call *pt_http_fetch(struct pt_loop *loop, const pt_http_request *req, pt_http_done_fn done, void *data);
/* Abandons a call whose callback has not run: it never will. */
void pt_http_cancel(pt_http_call *call);
/* A call on behalf of `txn`: carries its request id (X-Request-Id) and is
 * cancelled when the request ends (the callback then never runs). */
pt_http_call *pt_txn_subrequest(pt_txn *txn, const pt_http_request *req, pt_http_done_fn done, void *data);

/* ---- Safe references for asynchronous work ----
 * A late reply (timer, Redis, HTTP client) must not touch a request that
 * ended. Take a reference when starting the work; on the reply, get the txn
 * back (NULL when the request is over: drop the reply), then release. */
typedef struct pt_txn_ref pt_txn_ref;
pt_txn_ref *pt_txn_ref_new(pt_txn *txn);
pt_txn *pt_txn_ref_get(const pt_txn_ref *ref);
void pt_txn_ref_release(pt_txn_ref *ref);

#endif
