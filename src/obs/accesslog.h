/* accesslog.h — the asynchronous access-log writer and its line format.
 *
 * Worker threads never touch the log file: pt_accesslog_write() appends the
 * line to an in-memory buffer under a short mutex and wakes a dedicated
 * writer thread, which swaps the buffer for an empty one (double buffering)
 * and write()s outside the lock. If the pending buffer would exceed
 * PT_ACCESSLOG_MAX_PENDING bytes (the disk or pipe is slower than the
 * traffic), the line is dropped and counted rather than stalling a worker.
 *
 * Rotation: logrotate renames the file and sends SIGUSR1; the handler calls
 * pt_accesslog_request_reopen() (async-signal-safe: it only sets an atomic
 * flag); the writer thread reopens the path at its next wakeup (at most
 * ~100 ms later) before writing its next batch.
 *
 * The writer is process-wide (one log for all workers). open/close/flush are
 * for the main thread; write/request_reopen/dropped may be called from any
 * thread (request_reopen also from a signal handler). */
#ifndef PT_OBS_ACCESSLOG_H
#define PT_OBS_ACCESSLOG_H

#include "core/common.h"

#define PT_ACCESSLOG_MAX_PENDING (8u * 1024 * 1024)
/* Smallest `cap` pt_accesslog_format() accepts; a buffer of
 * PT_ACCESSLOG_LINE_MAX is plenty for any line (long fields get truncated). */
#define PT_ACCESSLOG_MIN_CAP 384
#define PT_ACCESSLOG_LINE_MAX 8192

/* Opens the log: `path` is "stdout" or a file (created 0644, appended to)
 * and starts the writer thread. Returns PT_OK, or PT_ERR with errno set (the
 * file cannot be opened, or the log is already open). */
int pt_accesslog_open(const char *path);

/* Queues one complete line (should end in '\n'); copies it. Never blocks on
 * I/O. A no-op when the log is not open. */
void pt_accesslog_write(const char *line, size_t len);

/* Blocks until every line queued before the call has been handed to
 * write(2). For tests and graceful shutdown. */
void pt_accesslog_flush(void);

/* Asks the writer thread to reopen the file at its next wakeup.
 * Async-signal-safe. A no-op for "stdout". */
void pt_accesslog_request_reopen(void);
/* Same as pt_accesslog_request_reopen (named for SIGUSR1 handling code). */
void pt_accesslog_reopen(void);

/* Reload: switches the log to `path` ("stdout" or a file, opened here so
 * that an error is reported at once). Every line queued before this call
 * is written to the old file (then closed), every later line to `path`. PT_ERR with errno when the
 * file cannot be opened (the log keeps its destination) or the log is not
 * open. Main thread. */
int pt_accesslog_switch(const char *path);

/* Flushes everything queued, stops and joins the writer thread, closes the
 * file. Safe to call when not open. The log may be opened again later. */
void pt_accesslog_close(void);

/* Lines dropped since pt_accesslog_open() (buffer full or write errors). */
uint64_t pt_accesslog_dropped(void);

/* One finished request, as the proxy saw it. Strings are slices (any may be
 * empty); none needs to be NUL-terminated. */
typedef struct {
    uint64_t time_us;     /* wall clock, µs since the epoch (request start) */
    pt_str request_id;
    pt_str trace_id;      /* W3C trace id (32 hex digits), empty when tracing is off */
    pt_str client;        /* client address, "203.0.113.7" */
    pt_str method;
    pt_str path;          /* request target as received (path + query) */
    pt_str route;         /* route name, or empty if unmatched */
    pt_str consumer;      /* authenticated consumer's name (never a credential), or empty */
    pt_str upstream;      /* "host:port" of the target used, or empty */
    int status;
    bool aborted;         /* the response was cut after its head went out */
    uint64_t bytes_in;    /* bytes received from the client */
    uint64_t bytes_out;   /* bytes sent to the client */
    double duration_ms;   /* total time */
    double upstream_ms;   /* time waiting on the upstream; < 0 => null */
    int attempts;         /* upstream attempts (retries and stale re-sends included); 0 = none */
} pt_access_record;

/* Formats `r` as one JSON object line ending in "\n":
 * {"time":"2026-11-29T18:01:02.123Z","request_id":"..","trace_id":"..","client":"..",
 *  "method":"GET","path":"/x","route":"..","upstream":"..","status":200,
 *  "aborted":false,"bytes_in":0,"bytes_out":12,"duration_ms":1.234,"upstream_ms":null}
 * Returns the line length (no NUL is written). If the line does not fit in
 * `cap`, string fields are truncated (never mid-escape or mid-UTF-8) so the
 * result is still one well-formed JSON line. Returns 0 (and writes nothing
 * useful) if cap < PT_ACCESSLOG_MIN_CAP. */
size_t pt_accesslog_format(char *out, size_t cap, const pt_access_record *r);

#endif
