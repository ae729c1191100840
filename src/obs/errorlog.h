/* errorlog.h — the error log: one line per event (an upstream that refused
 * a connection, a timeout, a reset, a failed TLS handshake) with its context
 * (level, time, worker, route, upstream, target, request id, message),
 * written by the PT_LOG_ERROR writer thread (obs/logwriter.h) so a worker
 * never blocks on it, and rate-limited per message kind so an upstream
 * outage cannot flood the disk.
 *
 * Rate limit: a token bucket per kind (`error_log.rate_limit`: `burst`
 * lines at once, refilled at `per_second`). An event without a token is
 * counted, not written; pt_elog_tick() (every 500 ms, worker 0) then writes
 * one "suppressed K similar messages" line per kind that has some, at most
 * once a second per kind. So a flood of N events of one kind with
 * per_second 0 gives exactly `burst` lines plus summaries whose K add up to
 * N - burst.
 *
 * Startup and reload messages ("listening on", "configuration reloaded")
 * are not events: they keep going to stderr directly. */
#ifndef PT_OBS_ERRORLOG_H
#define PT_OBS_ERRORLOG_H

#include "config/config.h"
#include "core/common.h"

/* What is known about where the event happened; any field may be empty
 * (worker -1: not on a worker). */
typedef struct {
    int worker;
    pt_str route;
    pt_str upstream;
    pt_str target;
    pt_str request_id;
    pt_str client;
} pt_elog_ctx;

/* Applies cfg->error_log (level, format, rate) and opens or switches the
 * error log's destination. PT_ERR with errno when the destination cannot
 * be opened (the log keeps its destination). Main thread. */
int pt_elog_configure(const pt_config *cfg);

/* Flushes and closes the error log (shutdown). Main thread. */
void pt_elog_close(void);

/* True when events of `level` are written (cheap; any thread). */
bool pt_elog_enabled(pt_elog_level level);

/* One event of `kind` (a short static name: "upstream_connect"); the
 * message is printf-style. Never blocks on I/O. Any thread. When the log is
 * not open (portico check, unit tests) the line goes to stderr directly. */
void pt_elog(pt_elog_level level, const char *kind, const pt_elog_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Writes the pending "suppressed K similar messages" lines. Any thread
 * (the server calls it from worker 0's periodic tick). */
void pt_elog_tick(void);

/* Events suppressed by the rate limit since start. */
uint64_t pt_elog_suppressed_total(void);

/* Formats one line (ending in '\n') into out[0..cap): text is
 * `time=.. level=error worker=0 kind=.. route=.. upstream=.. target=..
 * request_id=.. msg=".."` (logfmt rules of obs/accesslog.h; empty context
 * fields are left out), json the same keys in one object. Returns the
 * length (values are truncated to fit; cap >= 512). */
size_t pt_elog_format(char *out, size_t cap, bool json, uint64_t time_us, pt_elog_level level, const char *kind,
                      const pt_elog_ctx *ctx, const char *msg);

#endif
