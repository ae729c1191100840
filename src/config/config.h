/* config.h — the validated configuration, as plain data.
 *
 * pt_config_load_file() parses the YAML, validates every key with precise
 * errors, resolves references (route -> upstream, plugin names -> plugin
 * types, each plugin validating its own block) and returns a pt_config whose
 * memory all lives in config->arena. A pt_config is immutable once loaded;
 * the runtime generation (router, pipelines, upstream state) is built from
 * it by proxy/generation.c. See docs/configuration.md for the schema. */
#ifndef PT_CONFIG_CONFIG_H
#define PT_CONFIG_CONFIG_H

#include <sys/socket.h>

#include "config/balance_conf.h"
#include "config/conf_node.h"
#include "config/log_fields.h"
#include "http/message.h"
#include "net/dns.h"
#include "net/dns_cache.h"
#include "net/ipset.h"

struct pt_plugin_type;
struct pt_metrics;
struct pt_route_metrics;
struct pt_upstream_metrics;
struct pt_lb;

typedef struct {
    char *text;                  /* "127.0.0.1:8080" as written */
    struct sockaddr_storage ss;  /* resolved at load time */
    socklen_t sslen;
} pt_conf_addr;

/* One certificate/key pair of a TLS listener. The host names it serves (for
 * SNI) are read from the certificate (subjectAltName DNS names, else CN). */
typedef struct {
    char *cert;                  /* PEM file: certificate (then any chain) */
    char *key;                   /* PEM file: private key */
    /* Per-SNI mTLS policy for connections whose SNI selects this certificate:
     * -1 = the listener's policy, else 0 none, 1 optional, 2 required. */
    int client_auth;
    char *client_ca;             /* PEM bundle of accepted CAs (client_auth > 0) */
    int ca_line, ca_col;         /* position of this client_auth mapping */
    int line, col;
} pt_tls_cert_conf;

typedef struct {
    bool enabled;
    pt_tls_cert_conf *certs;     /* the first is the default certificate */
    size_t ncerts;
    int min_version;             /* 12 or 13 (TLS 1.2 / 1.3); default 12 */
    char *ciphers;               /* TLS 1.2 cipher list (OpenSSL syntax); NULL = OpenSSL default */
    char *ciphersuites;          /* TLS 1.3 suites; NULL = OpenSSL default */
    /* HSTS: Strict-Transport-Security on every response of this listener */
    uint64_t hsts_max_age;       /* seconds; 0 = no header */
    bool hsts_subdomains;
    bool hsts_preload;
    /* mTLS: client certificates */
    int client_auth;             /* 0 none, 1 optional, 2 required */
    char *client_ca;             /* PEM bundle of accepted CAs */
    char *client_forward_header; /* header carrying the verified subject upstream; NULL = none */
    char *client_forward_san_header; /* header carrying the verified subjectAltNames; NULL = none */
    int ca_line, ca_col;         /* position of the listener-level client_auth mapping */
    int line, col;
} pt_tls_conf;

typedef struct {
    pt_conf_addr addr;
    int backlog;                 /* default 511 */
    pt_tls_conf tls;             /* tls.enabled => HTTPS listener */
    uint16_t redirect_https;     /* plain listener: answer 308 to https on this port; 0 = off */
    bool http2;                  /* accept HTTP/2 (ALPN h2 / h2c prior knowledge); default true */
    int line;
} pt_listener_conf;

typedef struct {
    pt_conf_addr addr;           /* host:port; hostnames resolved at load time */
    char *host;                  /* host part as written (for Host when preserve_host is false);
                                    IPv6 keeps its brackets: "[::1]" */
    uint16_t port;
    uint32_t weight;             /* 1..1000, default 1 */
    /* host is a name, not an IP literal: resolved with c-ares at load (addr =
     * the answer's first address) and again by each worker as TTLs expire
     * (net/dns.h). `answer` is the load-time answer that seeds the workers. */
    bool dns;
    pt_dns_answer answer;
    const char *srv;             /* the SRV name this target came from ({srv: NAME}); NULL otherwise */
} pt_target_conf;

/* An SRV name upstream targets are expanded from (`{srv: NAME}`, docs/dns.md
 * "SRV records"), once per configuration however many upstreams use it, with
 * the answer the expansion used: the server re-asks when its TTL passes and
 * reloads the configuration when the records differ. */
typedef struct {
    char *name;
    pt_dns_srv_answer answer;
    int line, col;               /* where it is first used */
} pt_srv_conf;

/* TLS to the upstream's targets (https). */
typedef struct {
    bool enabled;
    bool verify;                 /* verify the certificate chain and name (default true) */
    char *ca;                    /* PEM CA bundle; NULL = the system store */
    char *sni;                   /* server name sent and verified; NULL = the target's host */
    char *cert, *key;            /* optional client certificate (mTLS to the upstream) */
    int line, col;
} pt_upstream_tls_conf;

/* Protocol spoken to the upstream's targets. */
typedef enum {
    PT_UPROTO_HTTP1 = 0, /* HTTP/1.1 (default) */
    PT_UPROTO_H2,        /* HTTP/2 over TLS (ALPN h2); requires tls */
    PT_UPROTO_H2C,       /* HTTP/2 with prior knowledge over plain TCP */
} pt_upstream_protocol;

/* Retry policy (docs/traffic.md "Retries and deadlines"): set on an
 * upstream (the default of its routes) and per route, key by key. The zero
 * value (no `retries` block anywhere) is the built-in rule: a failed connect
 * of an idempotent request moves on to the next target, once per target,
 * without backoff, budget or kept body. */
enum {
    PT_RETRY_ON_CONNECT = 1u << 0, /* connect refused or timed out */
    PT_RETRY_ON_RESET = 1u << 1,   /* closed or reset before any response byte */
    PT_RETRY_ON_TIMEOUT = 1u << 2, /* per_try_timeout, or the read timeout before any response byte */
};
#define PT_RETRY_MAX_ATTEMPTS 8 /* upstream/exchange.h PT_EXCHANGE_MAX_ATTEMPTS */
typedef struct {
    bool configured;             /* a `retries` block applies (else the built-in rule above) */
    uint32_t attempts;           /* attempts in all, the first included (1..8); default 2 */
    uint32_t on;                 /* PT_RETRY_ON_* */
    uint64_t on_status[2];       /* bit s-500: upstream status s (500..599) is retried */
    bool all_methods;            /* methods: all (default idempotent only) */
    uint64_t per_try_timeout_ms; /* one attempt's wait for the response head; 0 = none */
    uint64_t backoff_base_ms;    /* full-jitter exponential backoff; default 25ms */
    uint64_t backoff_max_ms;     /* default 250ms */
    uint64_t body_buffer;        /* request body bytes kept for a re-send; default 64k */
} pt_retry_policy;

/* Retry budget of an upstream (`retries.budget`): retries in flight at most
 * max(min_retries, ratio x active requests), counted per process. */
typedef struct {
    double ratio;                /* default 0.2 */
    uint32_t min_retries;        /* default 3 */
} pt_retry_budget_conf;

typedef struct pt_upstream_conf {
    char *name;
    int index;                   /* position in config->upstreams */
    pt_target_conf *targets;
    size_t ntargets;
    uint32_t keepalive;          /* max idle pooled connections per worker; default 64 */
    uint64_t keepalive_timeout_ms; /* idle pooled connection lifetime; default 60s */
    uint64_t connect_timeout_ms; /* default: timeouts.upstream_connect */
    uint64_t read_timeout_ms;    /* default: timeouts.upstream_read */
    uint64_t write_timeout_ms;   /* default: timeouts.upstream_write */
    bool preserve_host;          /* send the client's Host (default true) or the target's */
    pt_upstream_tls_conf tls;
    pt_upstream_protocol protocol; /* default PT_UPROTO_HTTP1 */
    pt_retry_policy retry;       /* `retries`: the default of the routes using this upstream */
    pt_retry_budget_conf retry_budget; /* `retries.budget` */
    pt_balance_conf balance;     /* balance, hash_on, outlier, circuit_breaker (config/balance_conf.h) */
    int line;
    /* Runtime, not configuration: this upstream's metric series, set by
     * obs/gateway_metrics.c when a generation is adopted (NULL: not counted). */
    struct pt_upstream_metrics *metrics;
    /* Runtime: the balancer and the shared target health of this upstream
     * (upstream/balance.h), set when the generation is built (NULL: plain
     * round-robin, no health). */
    struct pt_lb *lb;
} pt_upstream_conf;

/* ---- Consumers (docs/authentication.md) ----
 * Named identities with groups, optional metadata and credentials, part of
 * the configuration generation (immutable). Credentials never appear in
 * clear: API keys are kept as SHA-256 digests, passwords as crypt(3)
 * hashes. Authentication plugins find consumers through the lookups below;
 * a plugin may also build a pt_consumer of its own (a JWT subject) in the
 * request arena: only name, groups and metadata are read by the core. */
typedef struct {
    const char *key;
    const char *value;
} pt_consumer_meta;

typedef struct pt_consumer {
    const char *name;
    const char *const *groups;   /* ngroups names */
    size_t ngroups;
    const pt_consumer_meta *metadata; /* nmetadata entries, keys unique */
    size_t nmetadata;
    /* basic credential (configuration consumers only; NULL when none) */
    const char *basic_user;      /* username (default: the consumer's name) */
    const char *password_hash;   /* crypt(3) hash: $y$, $gy$, $7$, $2b$/$2y$, $6$ */
    uint8_t password_fp[32];     /* SHA-256 of password_hash: ties cached verifications to it */
    int line;
} pt_consumer;

/* One API key credential: the SHA-256 digest of the key and its consumer. */
typedef struct {
    uint8_t digest[32];
    const pt_consumer *consumer;
} pt_consumer_key;

/* One client-certificate identity (`credentials.mtls`) and its consumer:
 * "subject:<RFC 2253 DN>" or a SAN "DNS:<name>", "URI:<uri>",
 * "email:<address>" (',' written "%2C", as pt_txn_client_cert_sans). */
typedef struct {
    const char *id;
    const pt_consumer *consumer;
} pt_consumer_cert;

/* All consumers of a configuration, with O(1) lookups built at load:
 * open-addressing tables of indexes + 1 (0 = empty), sizes powers of two. */
typedef struct {
    pt_consumer *v;
    size_t n;
    pt_consumer_key *keys;
    size_t nkeys;
    pt_consumer_cert *certs;
    size_t ncerts;
    uint32_t *by_name, *by_user, *by_key, *by_cert;
    size_t name_mask, user_mask, key_mask, cert_mask;
} pt_consumers;

/* Upstream identity headers (`identity_headers:`): set on the upstream
 * request after authentication; client-sent copies are always removed, on
 * every route. NULL = not sent (still removed when it had a name). */
typedef struct {
    char *consumer;              /* default X-Consumer-Name */
    char *groups;                /* default X-Consumer-Groups (comma-separated) */
    char *anonymous;             /* default X-Anonymous-Consumer ("true" for the anonymous consumer) */
} pt_identity_headers;

/* How a route combines its authentication plugins (route `auth:`). */
typedef enum {
    PT_AUTH_ANY = 0,             /* the first plugin that recognises a credential decides */
    PT_AUTH_ALL,                 /* every authentication plugin must pass, for one consumer */
} pt_auth_mode;

typedef struct {
    pt_auth_mode mode;
    const pt_consumer *anonymous; /* unauthenticated requests go on as this consumer; NULL: 401 */
} pt_route_auth;

/* One configured plugin: its type and the config its `configure` returned. */
typedef struct {
    const struct pt_plugin_type *type;
    void *conf;
    int line;
    const char *name; /* the type's name (static): what metrics and logs call it */
} pt_plugin_instance;

typedef struct {
    pt_plugin_instance *v;
    size_t n;
} pt_plugin_list;

/* How a request path spelled in a way that backends disagree about is
 * treated (docs/routing.md "Path rules"). Each field is a pt_path_rule; the
 * zero value is the secure default, reject. The loader stores in every route
 * the effective rules: the global `path_rules` with the route's overrides. */
typedef enum {
    PT_PATHRULE_REJECT = 0, /* 400 with a precise detail */
    PT_PATHRULE_DECODE,     /* resolve it (config word "decode", or "strip" where it removes) */
    PT_PATHRULE_KEEP,       /* opaque data for matching, forwarded as is (canonical escape) */
} pt_path_rule;

typedef struct {
    uint8_t encoded_slash;      /* %2F: reject | decode (a separator) | keep */
    uint8_t backslash;          /* '\' and %5C: reject | decode (a separator) | keep (as %5C) */
    uint8_t semicolon;          /* ';' parameters, %3B: reject | strip (";..." to the segment end) | keep */
    uint8_t double_encoding;    /* %25 followed by two hex digits: reject | keep */
    uint8_t encoded_control;    /* %01-%1F, %7F: reject | keep (%00 is always refused) */
    uint8_t invalid_utf8;       /* escaped octets >= %80 that are not well-formed UTF-8: reject | keep */
    uint8_t trailing_dot_space; /* a segment ending in '.' or %20: reject | strip | keep */
} pt_path_rules;

typedef enum { PT_PATH_ANY = 0, PT_PATH_EXACT, PT_PATH_PREFIX, PT_PATH_REGEX } pt_path_kind;

/* A header or query predicate: value NULL means "must be present". */
typedef struct {
    char *name;
    char *value;
} pt_kv_match;

typedef struct pt_route_conf {
    char *name;                  /* from config, or "route#N" (N = index, 0-based) */
    int index;                   /* position in config->routes (config order) */
    int line;
    char **hosts;                /* lowercased; "*.example.com" wildcards; nhosts==0 => any host */
    size_t nhosts;
    pt_path_kind path_kind;
    char *path;                  /* EXACT/PREFIX: the pattern as written (starts with '/', visible
                                    ASCII, no '?'/'#'), may contain whole-segment {param}s;
                                    REGEX: PCRE2 pattern (anchored at match time) */
    uint32_t methods;            /* PT_METHOD_BIT mask; 0 => any method */
    pt_kv_match *headers;        /* all must match (header names case-insensitive) */
    size_t nheaders;
    pt_kv_match *query;          /* all must match (exact names, decoded values) */
    size_t nquery;
    pt_upstream_conf *upstream;  /* NULL when the route only answers locally */
    bool strip_prefix;           /* PREFIX routes: remove the matched prefix */
    char *rewrite;               /* path template, e.g. "/v2/users/{id}"; NULL => none */
    uint64_t max_body_size;      /* 0 => limits.max_body_size. The loader always stores the
                                    effective value (the global one unless overridden); a route
                                    "max_body_size: 0" (unlimited) under a non-zero global limit
                                    is stored as UINT64_MAX. */
    uint64_t body_timeout_ms;    /* slow-body gap; resolved: timeouts.body unless overridden */
    uint64_t min_body_rate;      /* resolved: limits.min_body_rate unless overridden; 0 = off */
    uint64_t max_buffered_body;  /* resolved: limits.max_buffered_body unless overridden; 0 = unlimited */
    pt_plugin_list plugins;      /* route-level plugins, in order */
    /* Tunnels (docs/websocket.md): the Upgrade protocols tunnelled, as
     * written (NULL: the default, websocket only; nupgrade 0: none; h2c is
     * refused at load), and the idle timeout (0: timeouts.tunnel_idle). */
    char **upgrade;
    size_t nupgrade;
    uint64_t tunnel_idle_timeout_ms;
    pt_path_rules path_rules;    /* resolved: the global path_rules with this route's overrides */
    pt_route_auth auth;          /* `auth:` {mode, anonymous} */
    pt_retry_policy retry;       /* resolved: the upstream's `retries` with this route's overrides */
    uint64_t timeout_ms;         /* `timeout`: arrival to the response head, all attempts; 0 = none */
    /* Runtime, not configuration: this route's metric series, set by
     * obs/gateway_metrics.c when a generation is adopted (NULL: not counted). */
    struct pt_route_metrics *metrics;
} pt_route_conf;

/* Where incoming traceparent/tracestate are believed (`tracing.trust_incoming`). */
typedef enum {
    PT_TRACE_TRUST_ALL = 0,        /* from any client (default) */
    PT_TRACE_TRUST_PROXIES,        /* only from peers in `trusted_proxies` */
    PT_TRACE_TRUST_NONE,           /* never: every request starts a new trace */
} pt_trace_trust;

/* `tracing:` — W3C Trace Context and OTLP/HTTP export (protobuf or JSON). */
typedef struct {
    bool enabled;                /* the block is present and not `enabled: false` */
    double sampling;             /* ratio 0..1 of new traces recorded (TraceIdRatioBased); default 1 */
    bool parent_based;           /* an incoming traceparent's sampled flag decides; default true */
    pt_trace_trust trust_incoming;
    char *service_name;          /* resource service.name; default "portico" */
    char *endpoint;              /* exporter.endpoint: http://host:port/v1/traces; NULL = no export */
    uint64_t timeout_ms;         /* exporter.timeout: one POST; default 5s */
    uint32_t batch_size;         /* exporter.batch_size: spans per POST; default 512 */
    uint64_t batch_delay_ms;     /* exporter.batch_delay: longest wait of a queued span; default 1s */
    uint32_t queue_size;         /* exporter.queue_size: spans waiting; over it they are dropped; default 8192 */
    uint32_t max_retries;        /* exporter.max_retries: POST retries with backoff; default 3 */
    bool protobuf;               /* exporter.protocol: http/protobuf (default) or http/json */
} pt_tracing_conf;

typedef struct pt_config {
    pt_arena *arena;             /* owns everything below */
    char *file;
    const struct pt_conf_node *root; /* the parsed file (the admin API shows it, secrets redacted) */
    int workers;                 /* resolved: "auto" => number of CPUs */
    pt_listener_conf *listeners;
    size_t nlisteners;
    struct {
        uint32_t max_request_line;   /* default 8k */
        uint32_t max_header_size;    /* default 32k */
        uint32_t max_headers;        /* default 100 */
        uint64_t max_body_size;      /* default 1g; 0 = unlimited */
        uint32_t max_connections;    /* per listener, all workers; 0 = unlimited (default) */
        uint32_t max_connections_per_client; /* per client address; 0 = unlimited (default) */
        uint64_t min_body_rate;      /* request body bytes/s after timeouts.body; default 1k; 0 = off */
        uint32_t http2_max_concurrent_streams; /* per HTTP/2 client connection; default 128 */
        uint64_t max_buffered_body;  /* bytes plugins may hold with PT_PLUGIN_BUFFER, per side; default 1m; 0 = unlimited */
        uint32_t stream_buffer;      /* read size for a body that streams (core/buf.h large blocks); default 64k */
        uint64_t stream_buffer_memory; /* per worker, bytes of such buffers at once; default 64m; 0 = off */
        uint32_t output_buffer;      /* HTTP/1 client connection: response bytes queued before backpressure; default 64k */
        bool splice;                 /* bulk HTTP/1 bodies between plain sockets move with splice(2); default true */
    } limits;
    char *server_header;             /* Server on every response; NULL = pass the upstream's through */
    bool via;                        /* add "Via: 1.1 portico" both ways */
    pt_path_rules path_rules;        /* `path_rules:` defaults for every route (all reject) */
    struct {
        uint64_t header_ms;          /* whole request head, absolute; default 10s */
        uint64_t body_ms;            /* between body reads (h1 conn, h2 stream); default 30s */
        uint64_t idle_ms;            /* keep-alive idle; default 60s */
        uint64_t upstream_connect_ms;/* default 5s */
        uint64_t upstream_read_ms;   /* default 60s */
        uint64_t upstream_write_ms;  /* default 60s */
        uint64_t shutdown_ms;        /* graceful drain on SIGTERM; default 30s */
        uint64_t tunnel_idle_ms;     /* a tunnel (WebSocket) with no byte either way; default 1h */
    } timeouts;
    struct {
        bool enabled;                /* default true */
        char *path;                  /* "stdout" (default) or a file path; "syslog" when dest is syslog */
        pt_log_dest dest;            /* where lines go (path or `syslog:`) */
        pt_log_format format;        /* json (default) or logfmt */
        const pt_log_column *columns;/* the line's keys in order (`fields` then captured headers) */
        size_t ncolumns;
        uint32_t header_max;         /* captured header values: at most this many bytes; default 256 */
        struct {
            bool on;                 /* `sample:` present */
            double ratio;            /* fraction of the other requests kept, 0..1 */
            bool always_4xx, always_5xx; /* default both */
            uint64_t slow_over_ms;   /* 0 = none */
        } sample;
    } access_log;
    struct {
        pt_log_dest dest;            /* default stderr */
        pt_elog_level level;         /* lines at this level or more severe; default warn */
        bool json;                   /* format: json (default text: key=value) */
        uint32_t burst;              /* lines per message kind before suppression; default 10 */
        uint32_t per_second;         /* refill rate per kind; default 1 */
    } error_log;
    pt_upstream_conf *upstreams;
    size_t nupstreams;
    pt_route_conf *routes;
    size_t nroutes;
    pt_plugin_list plugins;          /* global plugins; run before route plugins */
    /* Peers allowed to tell the client address in X-Forwarded-For. */
    pt_ip_set trusted_proxies;
    bool has_trusted_proxies;
    bool client_ip_forwarded;        /* client_ip_header: Forwarded (RFC 7239) instead of X-Forwarded-For */
    /* The admin listener (/metrics, /healthz, /readyz; docs/metrics.md). */
    struct {
        bool enabled;                /* an `admin` block is present */
        pt_conf_addr addr;           /* default 127.0.0.1:9901; loopback unless a token is set */
        char *token;                 /* bearer token for /metrics; NULL = none */
        int line;
    } admin;
    pt_dns_conf dns;                 /* `dns:` resolver settings for upstream host names */
    pt_srv_conf *srv;                /* SRV names of upstream targets, each once */
    size_t nsrv;
    pt_consumers consumers;          /* `consumers:` */
    pt_identity_headers identity_headers; /* `identity_headers:` */
    pt_tracing_conf tracing;         /* `tracing:` (config_tracing.c, docs/observability.md "Tracing") */
} pt_config;

/* Loads and validates. On failure returns NULL and fills `errors`. */
pt_config *pt_config_load_file(const char *path, pt_errors *errors);
/* Same, with a metrics registry that plugins' configure may declare their
 * metrics in (ctx->metrics; NULL = none, as in the other loaders). */
pt_config *pt_config_load_file_metrics(const char *path, struct pt_metrics *metrics, pt_errors *errors);
/* Same, for a reload of the configuration `running`: an SRV name of the
 * file that `running` also has and whose query fails now keeps `running`'s
 * answer (logged) instead of failing the load, so a DNS outage does not
 * block reloads of SRV-based upstreams (docs/dns.md "SRV records"). */
pt_config *pt_config_reload_file(const char *path, struct pt_metrics *metrics, const pt_config *running,
                                 pt_errors *errors);
/* Same from memory; `name` is used as FILE in messages. */
pt_config *pt_config_load_string(const char *name, const char *text, size_t len, pt_errors *errors);
void pt_config_free(pt_config *cfg);

/* What `portico proxy` was given on its command line. */
typedef struct {
    const char *listen;          /* HOST:PORT */
    const char *to;              /* "http://h:p[,http://h2:p2...]" or https:// (one scheme for all) */
    const char *ca;              /* --ca FILE: verify https targets against this bundle; NULL = system store */
    bool insecure;               /* --insecure: do not verify https targets */
} pt_proxy_opts;

/* Builds an in-memory config for `portico proxy --listen A --to URL,...`:
 * one listener, one upstream "default" (TLS with verification when the URLs
 * are https://), one catch-all route. NULL with "--to: ..." errors. */
pt_config *pt_config_for_proxy(const pt_proxy_opts *opts, pt_errors *errors);

/* ---- Configure-time readers and references (the loader, and plugins'
 * configure through plugin/plugin.h) ---- */

/* The upstream named by scalar node `n` (in `configure`: upstreams are
 * loaded before plugins), or NULL with a positioned error. */
const pt_upstream_conf *pt_conf_upstream(pt_conf_ctx *ctx, const pt_conf_node *n);

/* Compiles the list node `list` of addresses and CIDRs into `set` (arrays
 * in ctx->arena); `what` names it in errors (e.g. "trusted_proxies"). False
 * (errors recorded at each bad entry) if any entry is bad (net/ipset.h). */
bool pt_ip_set_read(pt_conf_ctx *ctx, const pt_conf_node *list, const char *what, pt_ip_set *set);

/* One entry {name: block} of a plugin list: the plugin named by scalar `k`
 * configured with `v` into *out (its destroy() registered on ctx->arena).
 * False with a positioned error when the name is unknown or the block is
 * invalid. Implemented by the plugin layer (plugin/plugin.c), which owns
 * the registry: the loader sees plugin types only as opaque pointers. */
bool pt_conf_plugin_instance(pt_conf_ctx *ctx, const pt_conf_node *k, const pt_conf_node *v, pt_plugin_instance *out);

/* ---- Consumer lookups (config/consumers.c), O(1), for plugins at any time ---- */

/* The consumer called `name`, or NULL. */
const pt_consumer *pt_consumer_find(const pt_consumers *cs, pt_str name);
/* The consumer whose API key has SHA-256 `digest` (compared in constant
 * time once the table slot is found), or NULL. */
const pt_consumer *pt_consumer_by_key_digest(const pt_consumers *cs, const uint8_t digest[32]);
/* The consumer whose `credentials.mtls` holds certificate identity `id`
 * ("subject:CN=a,O=b", "DNS:a.example", "URI:spiffe://...",
 * "email:a@b"), or NULL. */
const pt_consumer *pt_consumer_by_cert(const pt_consumers *cs, pt_str id);
/* The consumer with basic credential user `user`, or NULL. */
const pt_consumer *pt_consumer_by_basic_user(const pt_consumers *cs, pt_str user);
/* Metadata value for `key`, or a null slice. */
pt_str pt_consumer_meta_get(const pt_consumer *c, pt_str key);
/* True when the consumer belongs to `group`. */
bool pt_consumer_in_group(const pt_consumer *c, pt_str group);
/* Whether a crypt(3) hash string uses a scheme Portico accepts (yescrypt,
 * gost-yescrypt, scrypt, bcrypt $2b$/$2y$, sha512-crypt) and is well formed;
 * else false with a reason in *why. */
bool pt_password_hash_ok(const char *hash, const char **why);

#endif
