/* logwriter.h — the asynchronous log writers (the access log and the error
 * log) and their destinations: a file, stdout/stderr, or syslog (RFC 5424
 * datagrams over a unix socket or UDP).
 *
 * Worker threads never do log I/O: pt_logwriter_write() appends the line to
 * an in-memory buffer under a short mutex and wakes the log's writer
 * thread, which swaps the buffer for an empty one (double buffering) and
 * writes outside the lock. If the pending buffer would exceed
 * PT_LOG_MAX_PENDING bytes (the destination is slower than the traffic),
 * the line is dropped and counted rather than stalling a worker. Syslog
 * sockets are non-blocking: a datagram the receiver has no room for is
 * dropped and counted, never waited for.
 *
 * Rotation: logrotate renames the file and sends SIGUSR1; the handler calls
 * pt_logwriter_request_reopen() (async-signal-safe: it only sets an atomic
 * flag); the writer reopens the path (or reconnects the syslog socket) at
 * its next wakeup (at most ~100 ms later) before writing its next batch.
 *
 * There is one writer per log (pt_log_id), process-wide. open/switch/close/
 * flush are for the main thread; write/request_reopen/dropped may be called
 * from any thread (request_reopen also from a signal handler). */
#ifndef PT_OBS_LOGWRITER_H
#define PT_OBS_LOGWRITER_H

#include "config/log_fields.h"
#include "core/common.h"

#define PT_LOG_MAX_PENDING (8u * 1024 * 1024)

typedef enum { PT_LOG_ACCESS, PT_LOG_ERROR, PT_LOG__COUNT } pt_log_id;

/* Syslog severities (RFC 5424 6.2.1) used for a line's PRI. */
enum { PT_SEV_ERR = 3, PT_SEV_WARNING = 4, PT_SEV_INFO = 6, PT_SEV_DEBUG = 7 };

/* Opens log `id` on `dest` (copied) and starts its writer thread. PT_ERR with
 * errno set when the destination cannot be opened (a file, a unix socket
 * that does not exist) or the log is already open. */
int pt_logwriter_open(pt_log_id id, const pt_log_dest *dest);

/* Reload: switches log `id` to `dest` (opened here so that an error is
 * reported at once). Lines queued before the call go to the old
 * destination, later ones to the new. PT_ERR with errno when `dest` cannot
 * be opened (the log keeps its destination) or the log is not open. */
int pt_logwriter_switch(pt_log_id id, const pt_log_dest *dest);

/* Queues one complete line (ending in '\n'; copied) with its syslog
 * severity. Never blocks on I/O. A no-op when the log is not open. */
void pt_logwriter_write(pt_log_id id, int severity, const char *line, size_t len);

/* True when log `id` is open (any thread; a hint for callers that would
 * format a line for nothing). */
bool pt_logwriter_is_open(pt_log_id id);

/* Blocks until every line queued before the call has been handed to the
 * destination. For tests and graceful shutdown. */
void pt_logwriter_flush(pt_log_id id);

/* Asks the writer to reopen its file / reconnect its socket at its next
 * wakeup. Async-signal-safe. */
void pt_logwriter_request_reopen(pt_log_id id);

/* Flushes everything queued, stops and joins the writer, closes the
 * destination. Safe when not open; the log may be opened again later. */
void pt_logwriter_close(pt_log_id id);

/* Lines dropped since the log was opened (buffer full or write errors). */
uint64_t pt_logwriter_dropped(pt_log_id id);

/* True when two destinations are the same (a reload keeps the writer). */
bool pt_log_dest_same(const pt_log_dest *a, const pt_log_dest *b);

/* A short description of `dest` for messages ("/var/log/a.log", "stdout",
 * "syslog udp:127.0.0.1:514"). */
const char *pt_log_dest_text(const pt_log_dest *dest);

/* Writes "YYYY-MM-DDTHH:MM:SS.mmmZ" (24 bytes, UTC) for `us` µs since the
 * epoch and returns the end. */
char *pt_log_put_time(char *p, uint64_t us);

/* Wall clock in µs since the epoch. */
uint64_t pt_log_now_us(void);

#endif
