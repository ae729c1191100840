/* balance_conf.h — an upstream's load-balancing and health settings, as
 * plain data (docs/traffic.md "Load balancing and health"): `balance`,
 * `hash_on`, `outlier` and `circuit_breaker`. Read by config_balance.c,
 * used by upstream/balance.c. */
#ifndef PT_CONFIG_BALANCE_CONF_H
#define PT_CONFIG_BALANCE_CONF_H

#include <stdbool.h>
#include <stdint.h>

typedef enum {
    PT_BALANCE_ROUND_ROBIN = 0, /* smooth weighted round-robin, per worker (default) */
    PT_BALANCE_LEAST_REQUESTS,  /* fewest in-flight requests per weight, process-wide */
    PT_BALANCE_EWMA,            /* power of two choices on EWMA latency x (in flight + 1) */
    PT_BALANCE_HASH,            /* Maglev consistent hashing on `hash_on` */
} pt_balance_kind;

typedef enum {
    PT_HASH_NONE = 0,
    PT_HASH_HEADER,      /* the first value of header `hash_name` */
    PT_HASH_COOKIE,      /* the value of cookie `hash_name` */
    PT_HASH_CLIENT_ADDR, /* the client address after trusted_proxies */
    PT_HASH_PATH,        /* the request path (without the query) */
} pt_hash_input;

/* Passive outlier detection; enabled = an `outlier` block is present. A
 * threshold of 0 turns that detector off. */
typedef struct {
    bool enabled;
    uint32_t consecutive_5xx;       /* default 5 */
    uint32_t consecutive_failures;  /* connect errors, resets, timeouts; default 5 */
    uint64_t base_ejection_ms;      /* default 30s */
    uint64_t max_ejection_ms;       /* default 5m */
    uint32_t max_ejected_percent;   /* default 50 */
} pt_outlier_conf;

/* Circuit breaker per upstream; enabled = a `circuit_breaker` block. Trips
 * on `consecutive_failures` (when > 0) or on `failure_ratio` over `window`
 * once `min_requests` results are in it. */
typedef struct {
    bool enabled;
    uint32_t consecutive_failures;  /* 0 = use the ratio (default 0) */
    uint32_t failure_ratio_pct;     /* percent, 1..100; default 50 */
    uint64_t window_ms;             /* default 10s */
    uint32_t min_requests;          /* default 20 */
    uint64_t open_ms;               /* default 30s */
    uint32_t half_open_requests;    /* probes let through when half-open; default 1 */
} pt_breaker_conf;

/* Active health checks; enabled = a `health_check` block. One checker per
 * process (upstream/health_check.c). */
#define PT_HEALTH_MAX_STATUSES 16
typedef struct {
    bool enabled;
    bool tcp;                       /* type tcp: a connect is the check; else http */
    char *path;                     /* http: request path; default "/" */
    char *host;                     /* http: Host header; default the target's host:port */
    char *body;                     /* http: the response's first 16 KiB must contain it; NULL = any */
    uint16_t statuses[PT_HEALTH_MAX_STATUSES]; /* expected; none listed = 200..399 */
    size_t nstatuses;
    uint64_t interval_ms;           /* default 10s */
    uint64_t timeout_ms;            /* default 2s */
    uint32_t healthy_threshold;     /* successes in a row to be healthy again; default 2 */
    uint32_t unhealthy_threshold;   /* failures in a row to be unhealthy; default 3 */
} pt_health_conf;

typedef struct {
    pt_balance_kind kind;
    pt_hash_input hash_on;
    char *hash_name;                /* header or cookie name */
    pt_outlier_conf outlier;
    pt_breaker_conf breaker;
    pt_health_conf health;
} pt_balance_conf;

#endif
