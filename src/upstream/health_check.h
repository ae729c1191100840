/* health_check.h — active health checks of upstream targets: one checker
 * per process, on its own thread and pt_loop (docs/traffic.md "Active
 * health checks"), writing the verdicts into the shared target state of
 * upstream/balance.h (`unhealthy`), which every worker's balancer reads.
 *
 * Why a thread of its own rather than the workers or the admin loop: with
 * N workers, per-worker checkers would probe every target N times; the
 * admin loop serves /metrics and must stay responsive and exists only when
 * an admin listener is configured. A check is a few non-blocking sockets
 * on a loop that does nothing else. */
#ifndef PT_UPSTREAM_HEALTH_CHECK_H
#define PT_UPSTREAM_HEALTH_CHECK_H

#include "config/config.h"

typedef struct pt_health pt_health;
struct pt_gw_metrics;

/* Checks the targets of cfg's upstreams that have a `health_check` (from
 * now on; the checks of a previous configuration stop). Starts the checker
 * thread on first need; returns it (h, or the new one; NULL while no
 * configuration asked for checks). Main thread. Copies what it needs from
 * cfg: cfg may be freed afterwards. `gw`: where the verdicts are exposed
 * (portico_upstream_target_healthy; NULL: not exposed). */
pt_health *pt_health_update(pt_health *h, const pt_config *cfg, struct pt_gw_metrics *gw);
/* Stops the checker thread and frees everything (NULL: no-op). */
void pt_health_stop(pt_health *h);

#endif
