/* server.h — the process: workers, listening sockets, signals, reloads.
 *
 * The main thread owns the current generation and handles signals
 * synchronously (sigwaitinfo): SIGHUP reloads (parse + validate + build a
 * new generation; on success it is posted to every worker, on failure the
 * errors are printed and the old one keeps serving), SIGTERM/SIGINT drain,
 * SIGUSR1 reopens the access log. Workers never block on any of this. */
#ifndef PT_SERVER_SERVER_H
#define PT_SERVER_SERVER_H

#include "proxy/generation.h"

/* Runs until drained. `config_path` (may be NULL in proxy mode) is re-read
 * on SIGHUP. Takes the caller's reference on `gen`. Returns an exit code. */
int pt_server_run(pt_generation *gen, const char *config_path);

#endif
