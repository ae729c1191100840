/* delay.h — private: the delay plugin's config, exposed for unit tests.
 *
 *   plugins:
 *     - delay:
 *         duration: 250ms     # required, 0..60s
 *         percentage: 10      # share of requests delayed, 0..100 (default 100)
 *
 * Fault injection (like Envoy's fault filter delay), and the reference
 * user of the pause/resume contract: the request is parked on a loop timer
 * and resumed from its callback. */
#ifndef PT_PLUGINS_DELAY_H
#define PT_PLUGINS_DELAY_H

#include "core/loop.h"
#include "proxy/plugin.h"

#define PT_DELAY_MAX_MS 60000

typedef struct {
    uint64_t duration_ms;
    double fraction; /* percentage / 100, in [0, 1] */
} pt_delay_conf;

/* Per-request state (zeroed by the proxy, in the request arena). */
typedef struct {
    pt_timer timer;
    pt_txn *txn;
    struct pt_loop *loop;
} pt_delay_state;

extern const pt_plugin_type pt_plugin_delay;

#endif
