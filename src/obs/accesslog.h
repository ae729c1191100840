/* accesslog.h — the access log: its line format and the API over its
 * asynchronous writer (obs/logwriter.h: workers never do I/O, a bounded
 * pending buffer drops and counts lines rather than stalling a worker,
 * SIGUSR1 reopens the file).
 *
 * open/close/flush/switch are for the main thread; write/request_reopen/
 * dropped may be called from any thread (request_reopen also from a signal
 * handler). */
#ifndef PT_OBS_ACCESSLOG_H
#define PT_OBS_ACCESSLOG_H

#include "core/common.h"
#include "config/log_fields.h"
#include "http/message.h"
#include "obs/logwriter.h"
#include "obs/txn_stats.h"

#define PT_ACCESSLOG_MAX_PENDING PT_LOG_MAX_PENDING
/* Smallest `cap` pt_accesslog_format() accepts; a buffer of
 * PT_ACCESSLOG_LINE_MAX is plenty for any line (long fields get truncated). */
#define PT_ACCESSLOG_MIN_CAP 384
#define PT_ACCESSLOG_LINE_MAX 8192

/* Opens the log: `path` is "stdout" or a file (created 0644, appended to)
 * and starts the writer thread. Returns PT_OK, or PT_ERR with errno set (the
 * file cannot be opened, or the log is already open). */
int pt_accesslog_open(const char *path);

/* Opens / switches the log on any destination (file, stdout, syslog). */
int pt_accesslog_open_dest(const pt_log_dest *dest);
int pt_accesslog_switch_dest(const pt_log_dest *dest);

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
 * empty); none needs to be NUL-terminated. Which of these a line shows is
 * the configuration's `access_log.fields` (config/log_fields.h names them
 * and says where each is read from). */
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
    pt_str uri_path;      /* the path part of the target (no query) */
    pt_str query;         /* the query (after '?'), empty if none */
    pt_str host;          /* Host / :authority as received */
    pt_str user_agent;
    pt_str protocol;      /* "HTTP/1.1", "HTTP/2", "HTTP/1.0" */
    pt_str scheme;        /* "http" or "https" (the client connection) */
    pt_str tls_version;   /* "TLSv1.3"... for a TLS client connection, else empty */
    pt_str sni;           /* the TLS server name the client sent, else empty */
    const pt_txn_stats *stats;      /* S_* fields; NULL => those are null */
    const pt_headers *req_headers;  /* header capture; NULL => captured values are null */
    const pt_headers *resp_headers;
} pt_access_record;

/* How lines are built: format, columns in order, captured header bound.
 * A zeroed spec (columns NULL) means the default line (JSON, today's
 * fields). */
typedef struct {
    pt_log_format format;
    const pt_log_column *columns;
    size_t ncolumns;
    uint32_t header_max; /* captured header values: bytes kept (0 = 256) */
} pt_accesslog_spec;

/* Sampling (access_log.sample): whether the request with `status` and
 * `total_ms` is written. Errors in the `always` classes and requests slower
 * than slow_over always are; the others are kept deterministically: of the
 * n-th such request process-wide (n = 1, 2, ...), the line is written when
 * floor(n * ratio) > floor((n - 1) * ratio), so exactly floor(N * ratio) of
 * N requests are kept, evenly spread (ratio 0.1: every 10th). Any thread. */
bool pt_accesslog_sample(int status, uint64_t total_ms, double ratio, bool always_4xx, bool always_5xx,
                         uint64_t slow_over_ms);

/* Formats `r` as one line ending in "\n" with the columns of `spec`:
 *   json:   {"time":"2026-11-29T18:01:02.123Z","request_id":"..",...,"attempts":1}
 *   logfmt: time=2026-11-29T18:01:02.123Z request_id=abc path="/a b" ... attempts=1
 * Strings: JSON escapes '"', '\\' and control bytes, invalid UTF-8 becomes
 * \ufffd. logfmt writes a value bare when it is non-empty printable ASCII
 * without space, '"', '=' or '\\', otherwise in double quotes with \" \\ \n
 * \r \t escapes and \xHH for other control bytes, DEL and bytes that are not
 * valid UTF-8 (valid UTF-8 passes). Null (no upstream time, no header, no
 * responder): JSON null, logfmt an empty value (`key=`). A CR or LF never
 * reaches the output unescaped, so a line is always one line.
 * Returns the line length (no NUL is written). If the line does not fit in
 * `cap`, string values are truncated (never mid-escape or mid-UTF-8) so the
 * result is still one well-formed line; returns 0 when even the keys and
 * numbers do not fit (always fits when cap >= PT_ACCESSLOG_MIN_CAP with the
 * default columns). */
size_t pt_accesslog_format_spec(char *out, size_t cap, const pt_access_record *r, const pt_accesslog_spec *spec);

/* Writes in[0..n) as the inside of a quoted logfmt value (the escapes
 * above), at most `cap` bytes, never splitting an escape or a UTF-8
 * sequence. Returns the bytes written. */
size_t pt_logfmt_escape_bounded(char *out, size_t cap, const char *in, size_t n);

/* pt_accesslog_format_spec with the default spec (today's JSON line):
 * {"time":"2026-11-29T18:01:02.123Z","request_id":"..","client":"..",
 *  "method":"GET","path":"/x","route":"..","consumer":"..","upstream":"..","status":200,
 *  "aborted":false,"bytes_in":0,"bytes_out":12,"duration_ms":1.234,"upstream_ms":null,"attempts":1}
 * Returns 0 if cap < PT_ACCESSLOG_MIN_CAP. */
size_t pt_accesslog_format(char *out, size_t cap, const pt_access_record *r);

#endif
