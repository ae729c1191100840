/* plugin.h — the plugin contract: the public plugin API.
 *
 * What a plugin includes. A file under src/plugins/ includes only this
 * header, headers of its own plugin folder, plugins/plugin_util.h and
 * system/library headers (<...>); tests/lint/layers.py enforces it. The API
 * is this header plus what it includes, each for a reason:
 *   core/common.h, core/arena.h  pt_str, assertions, allocation, arenas
 *                                (through the headers below);
 *   core/loop.h        timers (pt_timer_start/stop), pt_loop_now and
 *                      deferred calls on pt_txn_loop(txn) — how a plugin
 *                      waits without blocking;
 *   http/message.h     the request/response model (pt_request,
 *                      pt_response, pt_headers, pt_list_next...);
 *   config/conf_node.h configure(): YAML nodes, pt_conf_ctx, typed readers,
 *                      pt_conf_error, pt_conf_check_keys;
 *   config/config.h    route and upstream configuration that plugins read
 *                      (pt_txn_route, pt_http_request.upstream: forward_auth
 *                      fingerprints an upstream's name and targets), and the
 *                      configure-time references pt_conf_upstream and
 *                      pt_ip_set_read. Kept as an include rather than forward
 *                      declarations because plugins read those structs' fields;
 *   net/ipset.h        address/CIDR sets (pt_ip_addr_parse,
 *                      pt_ip_set_contains), via config/config.h;
 *   obs/metrics.h      metric descriptions (pt_metric_desc, pt_metric_dim)
 *                      and lock-free writes (pt_metric_add, _observe, _set);
 *                      declare with pt_conf_metric() below. The registry's
 *                      other functions (shards, exposition) are not for
 *                      plugins;
 *   obs/txn_stats.h    pt_txn_stats, for the log phase;
 *   plugin/digest_cache.h  the per-worker TTL'd LRU cache keyed by salted
 *                      digests (pt_digest_cache, pt_digest_store) that
 *                      plugins remember verified credentials in;
 *   net/redis.h        Redis replies, results, errors, scripts and
 *                      pt_redis_cancel (the "Redis" section below).
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
#include "core/loop.h"
#include "http/message.h"
#include "net/ipset.h"
#include "net/redis.h"
#include "obs/metrics.h"
#include "obs/txn_stats.h"
#include "plugin/digest_cache.h"

typedef struct pt_txn pt_txn;

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

/* pt_txn_stats (obs/txn_stats.h): how a request went, for the log phase. */

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
/* In response phases: the response is Portico's own (pt_txn_respond*,
 * problem+json errors, a plugin's answer) rather than the upstream's. */
bool pt_txn_response_is_local(pt_txn *txn);
pt_arena *pt_txn_arena(pt_txn *txn);         /* the request arena */
struct pt_loop *pt_txn_loop(pt_txn *txn);    /* the worker loop owning the request */
const pt_route_conf *pt_txn_route(pt_txn *txn); /* NULL before routing / when unmatched */
/* The request path as routed: normalised once by the core (dot segments
 * resolved, %2F kept as data), without the query; what route matching and
 * path-based decisions must use instead of the raw target. Empty before
 * routing or when the path was invalid (the core answered 400). */
pt_str pt_txn_path(pt_txn *txn);
/* Replaces the path sent upstream (the route's rewrite / strip_prefix no
 * longer apply); request phase only, the last call wins. `path` (copied)
 * is normalised like a request path under the route's path rules
 * (docs/routing.md "Path rules": '//' collapsed, escapes made canonical,
 * refused spellings refused), so the upstream never receives a path the
 * route would not have accepted from a client. A path that does not start
 * with '/', has a "." or ".." segment (also as %2E) or is refused by those
 * rules is not taken: false, *detail (if not NULL) says why. The query is
 * the request's (pt_request.query / has_query, editable in place). */
bool pt_txn_set_upstream_path(pt_txn *txn, pt_str path, const char **detail);
/* Value of route parameter `name` ({name} in the route path), or a null slice. */
pt_str pt_txn_param(pt_txn *txn, const char *name);
pt_str pt_txn_request_id(pt_txn *txn);       /* empty until request_id (or the core) sets it */
/* The access log shows the value of query parameter `name` (as written or
 * percent-decoded) as REDACTED: for a credential that must still go
 * upstream in the query (credentials are never logged). */
void pt_txn_redact_query_param(pt_txn *txn, pt_str name);
void pt_txn_set_request_id(pt_txn *txn, pt_str id); /* copied into the arena */
/* Distributed tracing (docs/observability.md "Tracing"): the W3C trace id
 * (32 hex digits), and the `traceparent` value for a call this request
 * starts with pt_http_fetch (one that may outlive it or serve other
 * requests too, so pt_txn_subrequest does not fit): its parent is the
 * request's server span; no span of its own is recorded. Both empty when
 * tracing is off. pt_txn_subrequest adds traceparent by itself. */
pt_str pt_txn_trace_id(pt_txn *txn);
pt_str pt_txn_traceparent(pt_txn *txn);
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

/* Ends a streamed response whose source failed (an entry that stopped
 * arriving): once its head is out the client sees a cut response (HTTP/1:
 * the connection closes; HTTP/2: the stream is reset), before that it gets
 * 502. The generator's stop runs (complete false). No-op when the response
 * is over or not streamed. */
void pt_txn_stream_abort(pt_txn *txn);

/* From a header-phase callback of `side`: the body of that side will be
 * rewritten, so its length is unknown (Content-Length dropped, chunked /
 * unframed DATA). On the response side a strong ETag becomes weak. */
void pt_txn_body_will_change(pt_txn *txn, pt_side side);
/* From a request-header callback: the upstream is contacted only once the
 * request body has passed every request-body plugin whole; the head then
 * carries its exact Content-Length (no chunked framing, which some older
 * upstreams refuse) and the body follows at once. For plugins that buffer
 * and rewrite the whole request body: no upstream connection waits idle
 * while a client uploads. What passed is held under the route's
 * max_buffered_body (over it: 413). No effect on requests without a body. */
void pt_txn_hold_request_head(pt_txn *txn);
/* From a response-header callback: hold the response head until the
 * first body bytes (or the body's end) have passed every response-body
 * plugin, instead of sending it when the header phase ends. For a plugin
 * that buffers the whole body (PT_PLUGIN_BUFFER until the last call) and
 * rewrites it: while the head is held, PT_PLUGIN_RESPOND from a
 * response-body callback replaces the response (the response side starts
 * over on the local answer, e.g. a 502 problem+json), so does going over
 * max_buffered_body (502) and an upstream failure; and when the whole body
 * passes in one piece the head carries its exact Content-Length (after
 * pt_txn_body_will_change dropped it). No effect on bodiless responses
 * (HEAD, 204, 304) and upgrades. Costs the client the time to first byte
 * of the whole body: use only when the body is buffered anyway. */
void pt_txn_hold_response_head(pt_txn *txn);
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

/* ---- Content codings (plugin/coding.c) ----
 * One-shot decoding of a whole buffered body in its Content-Encoding, for
 * plugins that rewrite whole bodies (json_transform, xml_json): gzip
 * (x-gzip, several members), deflate (zlib, or the raw deflate some
 * servers send), br, zstd (windows up to 8 MiB), identity. The output is
 * capped at `max` bytes, so a decompression bomb stops there. */
typedef enum {
    PT_DECODE_OK = 0,
    PT_DECODE_UNKNOWN,   /* not one of the codings above */
    PT_DECODE_MALFORMED, /* not valid in that coding (also: truncated, bytes after the end) */
    PT_DECODE_TOO_LARGE, /* the decoded body would exceed max */
} pt_decode_result;
/* Whether pt_content_decode knows coding `c` (one token, any case). */
bool pt_content_coding_known(pt_str c);
/* Decodes in[0, n) from coding `c` into *out (heap, free() it; NULL on
 * failure) of *outlen bytes. */
pt_decode_result pt_content_decode(pt_str c, const char *in, size_t n, size_t max, char **out, size_t *outlen);

/* ---- Identity: who is calling, and what they may do (docs/authentication.md) ----
 * Authentication plugins (key_auth, basic_auth, jwt, ...) find a credential
 * of their scheme in the request and name the caller: a pt_consumer
 * (config/config.h: name, groups, metadata), usually one of the
 * configuration's consumers (pt_conf_consumers at configure time, or
 * pt_txn_consumers, with O(1) lookups pt_consumer_find /
 * pt_consumer_by_key_digest / pt_consumer_by_basic_user), or one the
 * plugin builds in the request arena (a token's subject). Authorization
 * plugins (acl, scope checks) come after them in the pipeline and read the
 * consumer and the facts below.
 *
 * The contract every authentication plugin follows in on_request_headers:
 *   1. remove its credential from what is forwarded (header, query
 *      parameter) whatever happens next;
 *   2. if pt_txn_auth_skip(txn): return PT_PLUGIN_CONTINUE (the route's
 *      auth mode is `any` and an earlier method already named the caller);
 *   3. no credential of its scheme: return pt_txn_auth_none(txn, challenge)
 *      (mode any: remembered for the 401, CONTINUE; mode all: 401 now);
 *   4. a credential that does not verify: return pt_txn_auth_reject(txn,
 *      challenge, detail) — one answer for unknown and wrong credentials;
 *   5. verified: return pt_txn_set_consumer(txn, consumer, method).
 * `challenge` is the scheme's WWW-Authenticate value (copied), e.g.
 * "Basic realm=\"api\", charset=\"UTF-8\"" or key_auth's "Key realm=\"api\"";
 * empty only for a method with no challenge to offer (a client certificate:
 * mtls_auth). When the request phase ends (or an authorization plugin
 * calls pt_txn_auth_settle) a request with no consumer goes on as the
 * route's `auth.anonymous` consumer if it has one, else, when some method
 * found no credential, gets 401 with every challenge collected. 401 and
 * 403 are problem+json. The consumer's name (never a credential) is in the
 * access log and, with its groups, in the upstream identity headers
 * (`identity_headers:`); client-sent copies of those headers are removed
 * before any plugin runs, on every route. */

/* The configuration's consumers (configure time; consumers are loaded
 * before plugins). */
const pt_consumers *pt_conf_consumers(pt_conf_ctx *ctx);
/* The consumers of the configuration generation the request runs in. */
const pt_consumers *pt_txn_consumers(pt_txn *txn);
/* True when this authentication plugin should not look at the request: the
 * route's auth mode is `any` and a consumer is already set. */
bool pt_txn_auth_skip(pt_txn *txn);
/* No credential of the calling plugin's scheme: see the contract above. */
pt_plugin_result pt_txn_auth_none(pt_txn *txn, pt_str challenge);
/* A credential of the plugin's scheme that does not verify: prepares 401
 * (problem+json with `detail`, WWW-Authenticate `challenge` when non-empty)
 * and returns PT_PLUGIN_RESPOND. */
pt_plugin_result pt_txn_auth_reject(pt_txn *txn, pt_str challenge, const char *detail);
/* The caller is `consumer` (kept by pointer: a configuration consumer, or
 * one in the request arena), authenticated by `method` (a static string:
 * "key_auth", "basic_auth", "jwt"...). Returns CONTINUE, or in mode `all`
 * a 401 RESPOND when an earlier method named a different consumer. */
pt_plugin_result pt_txn_set_consumer(pt_txn *txn, const pt_consumer *consumer, const char *method);
/* The caller, or NULL (not authenticated, or not yet). */
const pt_consumer *pt_txn_consumer(pt_txn *txn);
/* The method that named the caller ("anonymous" for the anonymous consumer), or NULL. */
const char *pt_txn_auth_method(pt_txn *txn);
/* True once an authentication plugin has looked at this request (named a
 * caller, or found no credential of its scheme). Plugins that act on the
 * caller but may also sit before the authentication plugins (rate limits)
 * settle only then, so they never end authentication early. */
bool pt_txn_auth_started(pt_txn *txn);
/* Ends authentication now (idempotent; the core calls it when the request
 * phase ends): sets the route's anonymous consumer, or prepares the 401
 * with every challenge collected when some method found no credential
 * (RESPOND). CONTINUE otherwise, also with no consumer when no
 * authentication plugin ran. Authorization plugins call it first. */
pt_plugin_result pt_txn_auth_settle(pt_txn *txn);

/* Authorization facts set by authentication plugins (copied into the
 * request arena) and checked by later plugins: scopes ("read:orders") and
 * claims as strings (a JWT's or introspection answer's claims; non-string
 * JSON values in their JSON text form). */
void pt_txn_add_scope(pt_txn *txn, pt_str scope);
bool pt_txn_has_scope(pt_txn *txn, pt_str scope);
void pt_txn_set_claim(pt_txn *txn, pt_str name, pt_str value); /* replaces an earlier value */
pt_str pt_txn_claim(pt_txn *txn, pt_str name);                  /* null slice when absent */

/* ---- Configure-time references ----
 * From config/config.h: pt_conf_upstream(ctx, node) (an upstream by name,
 * for the internal HTTP client) and pt_ip_set_read(ctx, list, what, set)
 * (an address/CIDR list, matched with pt_ip_addr_parse and
 * pt_ip_set_contains from net/ipset.h). */

/* ---- Metrics (docs/metrics.md) ----
 * A plugin declares metric families and takes its series in `configure`,
 * and writes them on the request path without locks (each worker writes its
 * own shard; the admin listener's /metrics sums them). Label values are
 * fixed by the configuration, never taken from requests: `labels` get their
 * values here (an upstream's name...), `dims` are labels with a fixed list
 * of values declared with the family. Example:
 *
 *   enum { R_ALLOWED, R_DENIED };   // the order of `results`
 *   static const char *const results[] = {"allowed", "denied", NULL};
 *   static const pt_metric_dim dims[] = {{"result", results}};
 *   static const char *const labels[] = {"upstream", NULL};
 *   static const pt_metric_desc decisions = {
 *       .name = "portico_myplugin_decisions_total", .help = "Decisions by result.",
 *       .type = PT_METRIC_COUNTER, .labels = labels, .dims = dims, .ndims = 1};
 *   // configure:
 *   c->decisions = pt_conf_metric(ctx, node, &decisions, (const char *const[]){up->name});
 *   // a callback:
 *   pt_metric_add(c->decisions, R_DENIED, 1);
 *
 * The cell index is row-major over the dims (the last varies fastest).
 * Histograms: .type = PT_METRIC_HISTOGRAM with .buckets/.nbuckets (integer
 * bounds, e.g. microseconds with .unit_decimals = 6 to expose seconds),
 * written with pt_metric_observe. */

/* The series of family `desc` with `values` for desc->labels (NULL when it
 * has none), held as long as this configuration; the same values in the
 * next configuration (a reload) or in another instance give the same
 * series, so counts add up and survive reloads. The family is registered
 * by the first call and found again by the next ones: `desc` and its
 * strings must be static and every call must describe the family
 * identically, else a config error at `node`. NULL, not an error, when
 * metrics are off (no admin listener, `portico check`, unit tests) or the
 * family is full: every write function ignores a NULL series. */
pt_metric_series *pt_conf_metric(pt_conf_ctx *ctx, const pt_conf_node *node, const pt_metric_desc *desc,
                                 const char *const *values);

/* ---- State shared by the workers of a process, across reloads ----
 * Like nginx's shared zones: an object named by `key`, `size` bytes of
 * zeroed memory shared by every worker thread (write it with atomics),
 * that a configuration reload keeps when the new configuration asks for
 * the same key and size — so counters (rate limits) survive a reload
 * unless what they count changed. Put in the key everything whose change
 * must start afresh (e.g. the limit's rate and period). The object lives
 * as long as some loaded configuration holds it; `init` (optional) runs
 * once when it is created. Memory comes from mmap: untouched pages cost no
 * RSS. NULL (after pt_conf_error at `node`) when it cannot be mapped. */
void *pt_conf_shared(pt_conf_ctx *ctx, const pt_conf_node *node, pt_str key, size_t size,
                     void (*init)(void *obj, size_t size));
/* The same, with `fini` (optional) run once when the object goes (the
 * last configuration holding it is freed, on whichever thread frees it),
 * before its memory is unmapped: for objects that own memory outside the
 * mapping (a cache's entries). */
void *pt_conf_shared_ex(pt_conf_ctx *ctx, const pt_conf_node *node, pt_str key, size_t size,
                        void (*init)(void *obj, size_t size), void (*fini)(void *obj, size_t size));
/* Where the instance being configured is declared: "global" or
 * "route:NAME" (a default key prefix for state that belongs to it). */
const char *pt_conf_scope(pt_conf_ctx *ctx);

/* ---- Admin endpoints (docs/admin_api.md "Plugin endpoints") ----
 * A plugin may answer paths of the admin listener (e.g. the cache's
 * /api/cache/purge). Declared in configure: the endpoint exists while some
 * loaded configuration declares it, so it follows reloads. The handler runs
 * on the admin thread, never on a worker: it must only touch process-wide
 * state (pt_conf_shared objects, its own registries under their locks) and
 * `data` must be such state (or NULL). Methods: GET (HEAD answered from
 * it), POST, DELETE, as a PT_METHOD_BIT mask. The bearer token
 * (admin.token) is always required, and POST/DELETE are refused with 403
 * when none is configured. The handler returns the status and sets *body
 * (malloc'ed, freed by the listener) and, if not JSON, *content_type
 * (static); 0 answers 404. `query` is the raw query string (no '?'). */
typedef int (*pt_admin_handler)(void *data, pt_method method, pt_str path, pt_str query, char **body, size_t *len,
                                const char **content_type);
/* Declares `path` (static string, starting with "/api/"). Declaring the
 * same path again with the same handler and data shares it; a different
 * handler or data for a path already declared is a config error at `node`. */
bool pt_conf_admin_endpoint(pt_conf_ctx *ctx, const pt_conf_node *node, const char *path, uint32_t methods,
                            pt_admin_handler fn, void *data);
/* For the server (admin wiring): the methods of a declared path (0: none),
 * and the call itself (0 when the path is not declared). */
uint32_t pt_plugin_admin_methods(pt_str path);
int pt_plugin_admin_call(pt_method method, pt_str path, pt_str query, char **body, size_t *len,
                         const char **content_type);

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
 * target). `req` and what it points to are read (and copied) only while
 * this call starts. That includes req->upstream: the pointer is read when
 * the call starts, so the caller must keep it alive for that call — it
 * belongs to the configuration generation the caller holds (a request
 * callback's: pt_conf_upstream from its instance's configure), so start
 * calls from request callbacks, never from a timer or a later callback
 * that holds no generation. The call then resolves it in the worker's
 * current generation (the same upstream, else the one of the same name;
 * none: PT_HTTP_ERR_UPSTREAM_GONE) and pins that generation until it ends,
 * so the caller's generation may go away while the call runs. */
pt_http_call *pt_http_fetch(struct pt_loop *loop, const pt_http_request *req, pt_http_done_fn done, void *data);
/* Abandons a call whose callback has not run: it never will. */
void pt_http_cancel(pt_http_call *call);
/* A call on behalf of `txn`: carries its request id (X-Request-Id) and,
 * with tracing on, a traceparent naming a client span of its own (recorded
 * when the callback runs), and is cancelled when the request ends (the
 * callback then never runs). */
pt_http_call *pt_txn_subrequest(pt_txn *txn, const pt_http_request *req, pt_http_done_fn done, void *data);

/* ---- Redis (docs/redis.md) ----
 * Asynchronous Redis commands on the worker's loop. A plugin reads a
 * `redis:` block in configure (pt_redis_conf_read) and sends commands with
 * it; on each worker, every block naming the same (address, username, db,
 * password) shares one pipelined connection, which survives reloads. The
 * first use on a worker connects; commands sent meanwhile wait for it.
 *
 * Contract of every call below: it returns at once. Either it fails now —
 * NULL/false with *err set (PT_REDIS_ERR_DOWN: the connection is down,
 * waiting to reconnect or reconnecting; commands are not queued; _BUSY: max_pending
 * commands in flight; _INVALID) — and `done` never runs; or `done` runs
 * later, on this loop, exactly once (never inside the starting call):
 *   PT_REDIS_OK          r->reply is the reply (strings, integers, arrays,
 *                        nil, status), read with pt_redis_reply_* and valid
 *                        only during the callback;
 *   PT_REDIS_ERR_SERVER  the server answered an error (r->detail, r->reply);
 *   PT_REDIS_ERR_TIMEOUT no reply within command_timeout (a reply arriving
 *                        later is dropped);
 *   PT_REDIS_ERR_DOWN    the connection was lost (or could not be made)
 *                        before the reply; r->detail says why;
 *   PT_REDIS_ERR_CLOSED  the connection was closed for good (no
 *                        configuration uses it any more).
 * Arguments are binary-safe (argvlen[i] bytes; argvlen NULL: C strings) and
 * copied. pt_redis_cancel(call) before `done` ran guarantees it never runs.
 * A reply may arrive after the request that asked for it ended: use the
 * pt_txn_redis_* forms, cancelled with the request, or a pt_txn_ref. */
typedef struct pt_redis_conf pt_redis_conf;

/* Reads a `redis:` block {address, username, password (${ENV} only), db,
 * connect_timeout, command_timeout, max_pending}; errors at `node` are
 * prefixed with `what` ("rate_limit.redis"); a NULL node (the block is
 * missing) is one. NULL on error; the result lives in ctx->arena. */
const pt_redis_conf *pt_redis_conf_read(pt_conf_ctx *ctx, const pt_conf_node *node, const char *what);
/* Its `address` as written ("10.0.0.7:6379", "unix:/run/redis.sock"): for
 * messages and metric labels (never the password). */
const char *pt_redis_conf_address(const pt_redis_conf *conf);
/* A Lua script for pt_redis_eval (its SHA1 computed once), in the
 * configuration's arena. */
const pt_redis_script *pt_conf_redis_script(pt_conf_ctx *ctx, const char *text);

/* Sends one command (argv[0] is its name) on the worker owning `loop`. */
pt_redis_call *pt_redis_command(struct pt_loop *loop, const pt_redis_conf *conf, int argc, const char *const *argv,
                                const size_t *argvlen, pt_redis_done_fn done, void *data, pt_redis_error *err);
/* Runs `script` by SHA1 (EVALSHA); the first nkeys of argv are KEYS, the
 * rest ARGV. When the server does not know the script (NOSCRIPT: restarted,
 * SCRIPT FLUSH) it is sent whole (EVAL, which also caches it) without the
 * caller noticing. */
pt_redis_call *pt_redis_eval(struct pt_loop *loop, const pt_redis_conf *conf, const pt_redis_script *script,
                             int nkeys, int argc, const char *const *argv, const size_t *argvlen,
                             pt_redis_done_fn done, void *data, pt_redis_error *err);
/* The same on behalf of `txn`: cancelled when the request ends (`done`
 * then never runs), so `done` may use the txn. True when started. */
bool pt_txn_redis_command(pt_txn *txn, const pt_redis_conf *conf, int argc, const char *const *argv,
                          const size_t *argvlen, pt_redis_done_fn done, void *data, pt_redis_error *err);
bool pt_txn_redis_eval(pt_txn *txn, const pt_redis_conf *conf, const pt_redis_script *script, int nkeys, int argc,
                       const char *const *argv, const size_t *argvlen, pt_redis_done_fn done, void *data,
                       pt_redis_error *err);

/* ---- Safe references for asynchronous work ----
 * A late reply (timer, Redis, HTTP client) must not touch a request that
 * ended. Take a reference when starting the work; on the reply, get the txn
 * back (NULL when the request is over: drop the reply), then release. */
typedef struct pt_txn_ref pt_txn_ref;
pt_txn_ref *pt_txn_ref_new(pt_txn *txn);
pt_txn *pt_txn_ref_get(const pt_txn_ref *ref);
void pt_txn_ref_release(pt_txn_ref *ref);

#endif
