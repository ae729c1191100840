/* server.h — the process: workers, listening sockets, signals, reloads.
 *
 * The main thread owns the current generation and handles signals
 * synchronously (sigwaitinfo): SIGHUP reloads (parse + validate + build a
 * new generation; on success it is posted to every worker, on failure the
 * errors are printed and the old one keeps serving), SIGTERM/SIGINT drain,
 * SIGUSR1 reopens the access log. Between signals it asks the SRV names of
 * upstream targets again as their TTLs pass and reloads when their records
 * changed (server/srv_watch.h). Workers never block on any of this. */
#ifndef PT_SERVER_SERVER_H
#define PT_SERVER_SERVER_H

#include "proxy/generation.h"

struct pt_metrics;

/* Runs until drained. `config_path` (may be NULL in proxy mode) is re-read
 * on SIGHUP. Takes the caller's reference on `gen`. `metrics` is the
 * registry `gen`'s configuration was loaded with (plugins' metrics), or
 * NULL; it is used, not owned (free it after this returns). With an
 * `admin` block the admin listener serves it (and the gateway's own
 * metrics, obs/gateway_metrics.h) from its own thread; /readyz turns 200
 * once the workers run and 503 again when a drain starts. Returns an exit
 * code. */
int pt_server_run(pt_generation *gen, const char *config_path, struct pt_metrics *metrics);

#endif
