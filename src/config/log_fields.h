/* log_fields.h — the access-log fields a configuration may name in
 * `access_log.fields`, as one table (an X-macro) shared by the config loader
 * (which only needs the names) and the formatter (obs/accesslog.c, which
 * reads each value from where the third column says).
 *
 * X(name, kind, member):
 *   name    the key in the log line and in `access_log.fields`;
 *   kind    how the value is read and written (accesslog.c, "kinds"): R_* read
 *           `member` of pt_access_record, S_* read `member` of pt_txn_stats
 *           (obs/txn_stats.h) through the record's `stats` pointer;
 *   member  the struct member.
 * Adding a field is one line here (plus the member if it is new). The order
 * is the order of the documentation table (docs/observability.md), not the
 * order of a line: that is the configuration's. */
#ifndef PT_CONFIG_LOG_FIELDS_H
#define PT_CONFIG_LOG_FIELDS_H

#include <sys/socket.h>

#define PT_ACCESS_LOG_FIELDS(X)                      \
    X(time, R_TIME, time_us)                         \
    X(request_id, R_STR, request_id)                 \
    X(trace_id, R_STR, trace_id)                     \
    X(client, R_STR, client)                         \
    X(method, R_STR, method)                         \
    X(path, R_STR, path)                             \
    X(route, R_STR, route)                           \
    X(consumer, R_STR, consumer)                     \
    X(upstream, R_STR, upstream)                     \
    X(status, R_STATUS, status)                      \
    X(aborted, R_BOOL, aborted)                      \
    X(bytes_in, R_U64, bytes_in)                     \
    X(bytes_out, R_U64, bytes_out)                   \
    X(duration_ms, R_MS, duration_ms)                \
    X(upstream_ms, R_MS_NULL, upstream_ms)           \
    X(attempts, R_COUNT, attempts)                   \
    X(uri_path, R_STR, uri_path)                     \
    X(query, R_STR, query)                           \
    X(host, R_STR, host)                             \
    X(user_agent, R_STR, user_agent)                 \
    X(protocol, R_STR, protocol)                     \
    X(scheme, R_STR, scheme)                         \
    X(tls_version, R_STR, tls_version)               \
    X(sni, R_STR, sni)                               \
    X(ttfb_ms, S_US_NULL, ttfb_us)                   \
    X(responder, S_CSTR, responder)                  \
    X(upstream_failed, S_BOOL, upstream_failed)

typedef enum {
#define PT_LF_ENUM(name, kind, member) PT_LF_##name,
    PT_ACCESS_LOG_FIELDS(PT_LF_ENUM)
#undef PT_LF_ENUM
    PT_LF_COUNT
} pt_log_field;

/* Where a column's value comes from. */
typedef enum {
    PT_LOG_COL_FIELD,      /* a field of the table above */
    PT_LOG_COL_REQ_HEADER, /* a captured request header */
    PT_LOG_COL_RESP_HEADER /* a captured response header */
} pt_log_col_source;

/* One key of an access-log line, in line order. */
typedef struct {
    const char *key;   /* "status", "req_x_tenant" */
    pt_log_col_source source;
    pt_log_field field; /* PT_LOG_COL_FIELD */
    const char *header; /* header name for the header sources */
} pt_log_column;

typedef enum { PT_LOG_FORMAT_JSON, PT_LOG_FORMAT_LOGFMT } pt_log_format;

/* The name of field f ("status"); "?" when out of range. */
const char *pt_log_field_name(pt_log_field f);

/* Error-log levels, most severe first. */
typedef enum { PT_ELOG_ERROR, PT_ELOG_WARN, PT_ELOG_INFO, PT_ELOG_DEBUG } pt_elog_level;

/* Where a log's lines go (obs/logwriter.h does the I/O). */
typedef enum {
    PT_LOG_SINK_STDOUT,
    PT_LOG_SINK_STDERR,
    PT_LOG_SINK_FILE,        /* `path`, appended to, reopened on SIGUSR1 */
    PT_LOG_SINK_SYSLOG_UNIX, /* RFC 5424 datagrams to the unix socket `path` */
    PT_LOG_SINK_SYSLOG_UDP   /* RFC 5424 datagrams to `udp_addr` (numeric IP:port) */
} pt_log_sink;

typedef struct {
    pt_log_sink sink;
    const char *path;      /* FILE: the file; SYSLOG_UNIX: the socket */
    const char *address;   /* SYSLOG_*: as configured ("unix:/dev/log", "udp:127.0.0.1:514") */
    struct sockaddr_storage udp; /* SYSLOG_UDP: the numeric address */
    socklen_t udp_len;
    int facility;          /* syslog facility number (0..23), default 16 = local0 */
    const char *app_name;  /* syslog APP-NAME, default "portico" */
    const char *msgid;     /* syslog MSGID ("access", "error") */
} pt_log_dest;

/* The default `access_log.fields`: today's line (kept byte-compatible). */
#define PT_ACCESS_LOG_DEFAULT_FIELDS                                                                           \
    PT_LF_time, PT_LF_request_id, PT_LF_trace_id, PT_LF_client, PT_LF_method, PT_LF_path, PT_LF_route, PT_LF_consumer,          \
        PT_LF_upstream, PT_LF_status, PT_LF_aborted, PT_LF_bytes_in, PT_LF_bytes_out, PT_LF_duration_ms,        \
        PT_LF_upstream_ms, PT_LF_attempts

#endif
