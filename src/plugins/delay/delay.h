/* delay.h — private: the delay plugin's config, exposed for unit tests.
 *
 *   plugins:
 *     - delay:
 *         duration: 250ms     # required, 0..60s
 *         percentage: 10      # share of requests delayed, 0..100 (default 100)
 *         phase: request      # request (default), request_body, response, response_body
 *
 * `request` holds the request before it is sent upstream; `request_body`
 * holds the first request-body chunk (a slow client, seen by the upstream);
 * `response` holds the response head; `response_body` the first response
 * chunk. Each exercises the pause/resume contract in that phase.
 * Fault injection (like Envoy's fault filter delay), and the reference
 * user of the pause/resume contract: the request is parked on a loop timer
 * and resumed from its callback. */
#ifndef PT_PLUGINS_DELAY_H
#define PT_PLUGINS_DELAY_H

#include "plugin/plugin.h"

#define PT_DELAY_MAX_MS 60000

typedef enum {
    PT_DELAY_REQUEST = 0,
    PT_DELAY_REQUEST_BODY,
    PT_DELAY_RESPONSE,
    PT_DELAY_RESPONSE_BODY,
} pt_delay_phase;

typedef struct {
    uint64_t duration_ms;
    double fraction; /* percentage / 100, in [0, 1] */
    pt_delay_phase phase;
} pt_delay_conf;

/* Per-request state (zeroed by the proxy, in the request arena). */
typedef struct {
    pt_timer timer;
    pt_txn *txn;
    struct pt_loop *loop;
    pt_side side; /* the side paused */
    bool done; /* body phases: only the first chunk is held */
} pt_delay_state;

extern const pt_plugin_type pt_plugin_delay;

#endif
