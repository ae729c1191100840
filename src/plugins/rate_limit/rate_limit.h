/* rate_limit.h — private: the rate_limit plugin's configuration.
 *
 *   plugins:
 *     - rate_limit:
 *         key: consumer            # consumer | client_address | route | path |
 *                                  # header:NAME, or a list of them combined
 *         limits:
 *           - {requests: 10, per: 1s}                    # name "10/1s", GCRA
 *           - {name: hourly, requests: 1000, per: 1h, algorithm: sliding_window}
 *           - {requests: 2, per: 1s, consumers: [anonymous]}  # only for them
 *         queue: 0                 # GCRA: excess requests delayed, per key
 *         max_keys: 100000         # per limit; 16 bytes each, shared by the workers
 *         headers: true            # RateLimit / RateLimit-Policy on every response
 *         zone: NAME               # share counters with instances of the same zone
 *         mode: local              # local (default) | redis: one counter for every gateway
 *         redis: {address: 10.0.0.7:6379, ...}   # mode redis (docs/redis.md)
 *         on_redis_error: local    # local (count in this process) | allow | deny (503)
 *
 * Every limit must allow the request; a refused request gets 429
 * problem+json with Retry-After, and the requests the other limits counted
 * for it are given back. Counters are per process, lock-free, in tables that
 * survive a reload unless the limit (zone, name, algorithm, requests, per,
 * key, max_keys) changed. Semantics in docs/traffic.md. */
#ifndef PT_PLUGINS_RATE_LIMIT_H
#define PT_PLUGINS_RATE_LIMIT_H

#include "plugin/plugin.h"
#include "plugins/rate_limit/rl_table.h"

#include "plugins/plugin_util.h"

#define RL_MAX_LIMITS 8

typedef enum { RL_ON_ERROR_LOCAL = 0, RL_ON_ERROR_ALLOW, RL_ON_ERROR_DENY } rl_on_error;

typedef struct {
    const char *name;  /* the policy identifier in RateLimit / RateLimit-Policy */
    rl_limit lim;
    pt_str policy_item;  /* "name";q=N;w=S — this limit's RateLimit-Policy item */
    pt_str live_prefix;  /* "name";r= — the start of its RateLimit item */
    const char *redis_prefix; /* mode redis: "portico:rl:<zone>:<name>:<algo>:<requests>:<period>:<key>:" */
    size_t redis_prefix_len;
    rl_table *table;   /* pt_conf_shared */
    const char *const *consumers; /* applies only to these consumers / groups (none: to all) */
    size_t nconsumers;
    const char *const *groups;
    size_t ngroups;
    pt_metric_series *decisions;
} rl_limit_conf;

typedef struct {
    pt_plugin_key key;
    rl_limit_conf limits[RL_MAX_LIMITS];
    size_t nlimits;
    bool headers;
    bool needs_consumer; /* a key part is the consumer, or a limit filters on consumers */
    pt_str policy_all;   /* RateLimit-Policy when every limit applies (built once) */
    bool redis_mode;
    const pt_redis_conf *redis;
    const pt_redis_script *script;
    rl_on_error on_redis_error;
    pt_metric_series *redis_errors;
} rl_conf;

/* Per-request state (zeroed, in the request arena). */
typedef struct {
    bool evaluated;
    uint8_t applied[RL_MAX_LIMITS]; /* 1 when the limit applied to this request */
    rl_verdict verdict[RL_MAX_LIMITS];
    pt_timer timer;
    struct pt_loop *loop;
    pt_txn *txn;
    const rl_conf *conf;
    uint8_t redis_index[RL_MAX_LIMITS]; /* mode redis: the limit of each script key */
    uint8_t redis_n;
} rl_state;

/* Mode redis (rl_redis.c): the decision script; starting the call for the
 * applied limits of `st` with key bytes `key` (false: not started, *err
 * says why); reading its answer into st->verdict (false: malformed). */
const pt_redis_script *rl_redis_script(pt_conf_ctx *ctx);
bool rl_redis_start(pt_txn *txn, const rl_conf *c, rl_state *st, pt_str key, pt_redis_done_fn done,
                    pt_redis_error *err);
bool rl_redis_verdicts(const pt_redis_reply *reply, rl_state *st);

extern const pt_plugin_type pt_plugin_rate_limit;

#endif
