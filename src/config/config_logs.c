/* config_logs.c — `access_log:` and `error_log:` (docs/configuration.md,
 * docs/observability.md "Logs"): destinations, the access log's fields,
 * format, sampling and header capture, the error log's level and rate. */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config_int.h"

static const char *const field_names[PT_LF_COUNT] = {
#define PT_LF_NAME(name, kind, member) #name,
    PT_ACCESS_LOG_FIELDS(PT_LF_NAME)
#undef PT_LF_NAME
};

static const pt_log_field default_fields[] = {PT_ACCESS_LOG_DEFAULT_FIELDS};

const char *pt_log_field_name(pt_log_field f) { return (unsigned)f < PT_LF_COUNT ? field_names[f] : "?"; }

/* Headers that carry credentials: refused in capture lists unless named in
 * allow_sensitive_headers. */
static const char *const sensitive_headers[] = {"authorization", "proxy-authorization", "cookie", "set-cookie",
                                                NULL};

static const char *const facilities[] = {"kern",   "user",   "mail",   "daemon", "auth",   "syslog",
                                         "lpr",    "news",   "uucp",   "cron",   "authpriv", "ftp",
                                         "ntp",    "audit",  "alert",  "clock",  "local0", "local1",
                                         "local2", "local3", "local4", "local5", "local6", "local7"};

/* "udp:IP:PORT" with a numeric IPv4 or bracketed IPv6 address into dest. */
static bool parse_udp(const char *s, pt_log_dest *dest)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || !colon[1]) return false;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 1 || port > 65535) return false;
    char host[64];
    size_t hn = (size_t)(colon - s);
    if (s[0] == '[') {
        if (hn < 3 || s[hn - 1] != ']' || hn - 2 >= sizeof(host)) return false;
        memcpy(host, s + 1, hn - 2);
        host[hn - 2] = 0;
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&dest->udp;
        memset(a6, 0, sizeof(*a6));
        if (inet_pton(AF_INET6, host, &a6->sin6_addr) != 1) return false;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        dest->udp_len = sizeof(*a6);
        return true;
    }
    if (hn >= sizeof(host)) return false;
    memcpy(host, s, hn);
    host[hn] = 0;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&dest->udp;
    memset(a4, 0, sizeof(*a4));
    if (inet_pton(AF_INET, host, &a4->sin_addr) != 1) return false;
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    dest->udp_len = sizeof(*a4);
    return true;
}

/* `syslog: {address, facility, app_name}` into dest. */
static void conf_syslog(pt_conf_ctx *ctx, const pt_conf_node *m, pt_log_dest *dest, const char *what)
{
    static const char *const keys[] = {"address", "facility", "app_name", NULL};
    if (!pt_conf_check_keys(ctx, m, keys, what)) return;
    const pt_conf_node *n = pt_conf_opt(m, "address");
    char *addr = "unix:/dev/log";
    if (n && !pt_conf_string(ctx, n, &addr)) return;
    dest->address = addr;
    if (strncmp(addr, "unix:", 5) == 0 && addr[5]) {
        dest->sink = PT_LOG_SINK_SYSLOG_UNIX;
        dest->path = addr + 5;
    } else if (strncmp(addr, "udp:", 4) == 0 && parse_udp(addr + 4, dest)) {
        dest->sink = PT_LOG_SINK_SYSLOG_UDP;
    } else {
        pt_conf_error(ctx, n ? n : m,
                      "%s.address must be unix:/PATH or udp:IP:PORT with a numeric IP (a name would need a DNS "
                      "lookup), not '%s'",
                      what, addr);
        return;
    }
    dest->facility = 16;
    if ((n = pt_conf_opt(m, "facility"))) {
        char *f;
        if (!pt_conf_string(ctx, n, &f)) return;
        int found = -1;
        for (int i = 0; i < (int)PT_ARRAY_LEN(facilities); i++)
            if (strcasecmp(f, facilities[i]) == 0) found = i;
        if (found < 0) pt_conf_error(ctx, n, "%s.facility: unknown facility '%s' (local0..local7, daemon, user...)", what, f);
        else dest->facility = found;
    }
    dest->app_name = "portico";
    if ((n = pt_conf_opt(m, "app_name"))) {
        char *a;
        if (!pt_conf_string(ctx, n, &a)) return;
        bool ok = *a && strlen(a) <= 48;
        for (const char *c = a; *c; c++)
            if (*c < 33 || *c > 126) ok = false;
        if (!ok) pt_conf_error(ctx, n, "%s.app_name must be 1 to 48 printable ASCII characters without spaces", what);
        else dest->app_name = a;
    }
}

/* `path:` into dest: stdout, stderr (when allowed) or a file. */
static void conf_path(pt_conf_ctx *ctx, const pt_conf_node *n, pt_log_dest *dest, bool allow_stderr, const char *what)
{
    char *path;
    if (!pt_conf_string(ctx, n, &path)) return;
    if (!*path) {
        pt_conf_error(ctx, n, "%s.path must not be empty", what);
        return;
    }
    if (strcmp(path, "stdout") == 0) dest->sink = PT_LOG_SINK_STDOUT;
    else if (allow_stderr && strcmp(path, "stderr") == 0) dest->sink = PT_LOG_SINK_STDERR;
    else dest->sink = PT_LOG_SINK_FILE;
    dest->path = path;
}

/* "req_" + the header name lowercased with '-' as '_'. */
static const char *header_key(pt_arena *a, const char *prefix, const char *name)
{
    char *k = pt_arena_printf(a, "%s%s", prefix, name);
    for (char *c = k; *c; c++) *c = *c == '-' ? '_' : (char)tolower((unsigned char)*c);
    return k;
}

static bool header_name_ok(const char *s)
{
    if (!*s || strlen(s) > 64) return false;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '-' || *s == '_')) return false;
    return true;
}

static bool in_list(const pt_conf_node *seq, const char *name)
{
    if (!seq || seq->kind != PT_NODE_SEQ) return false;
    for (size_t i = 0; i < seq->n; i++)
        if (seq->vals[i]->kind == PT_NODE_SCALAR && strcasecmp(seq->vals[i]->scalar, name) == 0) return true;
    return false;
}

/* Appends a column per header of `seq` (request or response side). */
static void conf_headers(pt_conf_ctx *ctx, const pt_conf_node *seq, const pt_conf_node *allow, pt_log_col_source src,
                         pt_log_column *cols, size_t *n, const char *what)
{
    if (!seq) return;
    if (seq->kind != PT_NODE_SEQ) {
        pt_conf_error(ctx, seq, "access_log.%s must be a list of header names", what);
        return;
    }
    for (size_t i = 0; i < seq->n; i++) {
        char *name;
        if (!pt_conf_string(ctx, seq->vals[i], &name)) continue;
        if (!header_name_ok(name)) {
            pt_conf_error(ctx, seq->vals[i], "access_log.%s: '%s' is not a header name", what, name);
            continue;
        }
        bool sensitive = false;
        for (const char *const *s = sensitive_headers; *s; s++)
            if (strcasecmp(name, *s) == 0) sensitive = true;
        if (sensitive && !in_list(allow, name)) {
            pt_conf_error(ctx, seq->vals[i],
                          "access_log.%s: refusing to log %s (it carries credentials); add it to "
                          "access_log.allow_sensitive_headers to log it anyway",
                          what, name);
            continue;
        }
        cols[*n] = (pt_log_column){.key = header_key(ctx->arena, src == PT_LOG_COL_REQ_HEADER ? "req_" : "resp_", name),
                                   .source = src,
                                   .header = name};
        ++*n;
    }
}

/* `sample: {ratio, always: [4xx, 5xx], slow_over: 1s}`. */
static void conf_sample(pt_conf_ctx *ctx, const pt_conf_node *m, pt_config *cfg)
{
    static const char *const keys[] = {"ratio", "always", "slow_over", NULL};
    if (!pt_conf_check_keys(ctx, m, keys, "access_log.sample")) return;
    cfg->access_log.sample.on = true;
    cfg->access_log.sample.ratio = 1.0;
    const pt_conf_node *n = pt_conf_opt(m, "ratio");
    if (n) {
        char *end = NULL;
        double r = n->kind == PT_NODE_SCALAR ? strtod(n->scalar, &end) : -1;
        if (!end || *end || !(r >= 0 && r <= 1)) pt_conf_error(ctx, n, "access_log.sample.ratio must be a number from 0 to 1");
        else cfg->access_log.sample.ratio = r;
    }
    if ((n = pt_conf_opt(m, "always"))) {
        cfg->access_log.sample.always_4xx = cfg->access_log.sample.always_5xx = false;
        if (n->kind != PT_NODE_SEQ) {
            pt_conf_error(ctx, n, "access_log.sample.always must be a list of 4xx, 5xx");
        } else {
            for (size_t i = 0; i < n->n; i++) {
                char *s;
                if (!pt_conf_string(ctx, n->vals[i], &s)) continue;
                if (strcasecmp(s, "4xx") == 0) cfg->access_log.sample.always_4xx = true;
                else if (strcasecmp(s, "5xx") == 0) cfg->access_log.sample.always_5xx = true;
                else pt_conf_error(ctx, n->vals[i], "access_log.sample.always: '%s' is not 4xx or 5xx", s);
            }
        }
    }
    if ((n = pt_conf_opt(m, "slow_over"))) {
        uint64_t v;
        if (pt_conf_duration_ms(ctx, n, &v)) cfg->access_log.sample.slow_over_ms = v;
    }
}

void pt_conf_access_log(pt_conf_ctx *ctx, const pt_conf_node *root, pt_config *cfg)
{
    cfg->access_log.enabled = true;
    cfg->access_log.path = pt_arena_strndup(ctx->arena, "stdout", 6);
    cfg->access_log.dest = (pt_log_dest){.sink = PT_LOG_SINK_STDOUT, .path = "stdout", .msgid = "access"};
    cfg->access_log.format = PT_LOG_FORMAT_JSON;
    cfg->access_log.header_max = 256;
    cfg->access_log.sample.always_4xx = cfg->access_log.sample.always_5xx = true;
    cfg->access_log.sample.ratio = 1.0;

    const pt_conf_node *m = pt_conf_opt(root, "access_log");
    static const char *const keys[] = {"enabled",          "path",       "syslog", "format", "fields",
                                       "request_headers",  "response_headers", "allow_sensitive_headers",
                                       "header_max_length", "sample",    NULL};
    const pt_conf_node *fields = NULL, *reqh = NULL, *resph = NULL, *allow = NULL;
    if (m && pt_conf_check_keys(ctx, m, keys, "access_log")) {
        const pt_conf_node *en = pt_conf_opt(m, "enabled");
        bool b;
        if (en && pt_conf_bool(ctx, en, &b)) cfg->access_log.enabled = b;
        const pt_conf_node *n = pt_conf_opt(m, "path"), *sl = pt_conf_opt(m, "syslog");
        if (n && sl) pt_conf_error(ctx, sl, "access_log: path and syslog are exclusive (one destination)");
        else if (n) conf_path(ctx, n, &cfg->access_log.dest, false, "access_log");
        else if (sl) conf_syslog(ctx, sl, &cfg->access_log.dest, "access_log.syslog");
        cfg->access_log.path = (char *)(cfg->access_log.dest.sink == PT_LOG_SINK_FILE ||
                                                cfg->access_log.dest.sink == PT_LOG_SINK_STDOUT
                                            ? cfg->access_log.dest.path
                                            : "syslog");
        if ((n = pt_conf_opt(m, "format"))) {
            char *f;
            if (pt_conf_string(ctx, n, &f)) {
                if (strcmp(f, "json") == 0) cfg->access_log.format = PT_LOG_FORMAT_JSON;
                else if (strcmp(f, "logfmt") == 0) cfg->access_log.format = PT_LOG_FORMAT_LOGFMT;
                else pt_conf_error(ctx, n, "access_log.format must be json or logfmt, not '%s'", f);
            }
        }
        if ((n = pt_conf_opt(m, "header_max_length"))) {
            int64_t v;
            if (pt_conf_int(ctx, n, 1, 4096, &v)) cfg->access_log.header_max = (uint32_t)v;
        }
        if ((n = pt_conf_opt(m, "sample"))) conf_sample(ctx, n, cfg);
        fields = pt_conf_opt(m, "fields");
        reqh = pt_conf_opt(m, "request_headers");
        resph = pt_conf_opt(m, "response_headers");
        allow = pt_conf_opt(m, "allow_sensitive_headers");
        if (allow && allow->kind != PT_NODE_SEQ)
            pt_conf_error(ctx, allow, "access_log.allow_sensitive_headers must be a list of header names");
    }

    size_t nf = fields && fields->kind == PT_NODE_SEQ ? fields->n : PT_ARRAY_LEN(default_fields);
    size_t cap = nf + (reqh && reqh->kind == PT_NODE_SEQ ? reqh->n : 0) + (resph && resph->kind == PT_NODE_SEQ ? resph->n : 0);
    pt_log_column *cols = pt_arena_calloc(ctx->arena, (cap ? cap : 1) * sizeof(*cols));
    size_t n = 0;
    if (fields) {
        if (fields->kind != PT_NODE_SEQ || fields->n == 0) {
            pt_conf_error(ctx, fields, "access_log.fields must be a non-empty list of field names");
        } else {
            for (size_t i = 0; i < fields->n; i++) {
                char *name;
                if (!pt_conf_string(ctx, fields->vals[i], &name)) continue;
                int found = -1;
                for (int f = 0; f < PT_LF_COUNT; f++)
                    if (strcmp(name, field_names[f]) == 0) found = f;
                if (found < 0) {
                    pt_conf_error(ctx, fields->vals[i], "access_log.fields: unknown field '%s' (see docs/observability.md)", name);
                    continue;
                }
                for (size_t j = 0; j < n; j++)
                    if (cols[j].field == (pt_log_field)found) {
                        pt_conf_error(ctx, fields->vals[i], "access_log.fields: '%s' is listed twice", name);
                        found = -1;
                        break;
                    }
                if (found >= 0)
                    cols[n++] = (pt_log_column){.key = field_names[found], .source = PT_LOG_COL_FIELD, .field = (pt_log_field)found};
            }
        }
    } else {
        for (size_t i = 0; i < PT_ARRAY_LEN(default_fields); i++)
            cols[n++] = (pt_log_column){.key = field_names[default_fields[i]], .source = PT_LOG_COL_FIELD, .field = default_fields[i]};
    }
    conf_headers(ctx, reqh, allow, PT_LOG_COL_REQ_HEADER, cols, &n, "request_headers");
    conf_headers(ctx, resph, allow, PT_LOG_COL_RESP_HEADER, cols, &n, "response_headers");
    cfg->access_log.columns = cols;
    cfg->access_log.ncolumns = n;
}

void pt_conf_error_log(pt_conf_ctx *ctx, const pt_conf_node *root, pt_config *cfg)
{
    cfg->error_log.dest = (pt_log_dest){.sink = PT_LOG_SINK_STDERR, .path = "stderr", .msgid = "error"};
    cfg->error_log.level = PT_ELOG_WARN;
    cfg->error_log.burst = 10;
    cfg->error_log.per_second = 1;
    const pt_conf_node *m = pt_conf_opt(root, "error_log");
    static const char *const keys[] = {"path", "syslog", "level", "format", "rate_limit", NULL};
    if (!m || !pt_conf_check_keys(ctx, m, keys, "error_log")) return;
    const pt_conf_node *n = pt_conf_opt(m, "path"), *sl = pt_conf_opt(m, "syslog");
    if (n && sl) pt_conf_error(ctx, sl, "error_log: path and syslog are exclusive (one destination)");
    else if (n) conf_path(ctx, n, &cfg->error_log.dest, true, "error_log");
    else if (sl) conf_syslog(ctx, sl, &cfg->error_log.dest, "error_log.syslog");
    if ((n = pt_conf_opt(m, "level"))) {
        static const char *const levels[] = {"error", "warn", "info", "debug"};
        char *l;
        if (pt_conf_string(ctx, n, &l)) {
            int found = -1;
            for (int i = 0; i < 4; i++)
                if (strcmp(l, levels[i]) == 0) found = i;
            if (found < 0) pt_conf_error(ctx, n, "error_log.level must be error, warn, info or debug, not '%s'", l);
            else cfg->error_log.level = (pt_elog_level)found;
        }
    }
    if ((n = pt_conf_opt(m, "format"))) {
        char *f;
        if (pt_conf_string(ctx, n, &f)) {
            if (strcmp(f, "json") == 0) cfg->error_log.json = true;
            else if (strcmp(f, "text") != 0) pt_conf_error(ctx, n, "error_log.format must be text or json, not '%s'", f);
        }
    }
    if ((n = pt_conf_opt(m, "rate_limit"))) {
        static const char *const rkeys[] = {"burst", "per_second", NULL};
        if (pt_conf_check_keys(ctx, n, rkeys, "error_log.rate_limit")) {
            const pt_conf_node *v;
            int64_t x;
            if ((v = pt_conf_opt(n, "burst")) && pt_conf_int(ctx, v, 1, 100000, &x)) cfg->error_log.burst = (uint32_t)x;
            if ((v = pt_conf_opt(n, "per_second")) && pt_conf_int(ctx, v, 0, 100000, &x))
                cfg->error_log.per_second = (uint32_t)x;
        }
    }
}
