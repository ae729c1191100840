/* test_logs.c — access-log columns and formats (json, logfmt), escaping of
 * hostile values, header capture, and the `access_log`/`error_log` config. */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>

#include "config/config.h"
#include "obs/accesslog.h"
#include "obs/errorlog.h"
#include "testlib.h"

static pt_access_record sample(void)
{
    return (pt_access_record){
        .time_us = 1764439262123456ull, /* 2025-11-29T18:01:02.123Z */
        .request_id = PT_STR_LIT("rid-1"),
        .client = PT_STR_LIT("203.0.113.7"),
        .method = PT_STR_LIT("GET"),
        .path = PT_STR_LIT("/users/42?x=1"),
        .uri_path = PT_STR_LIT("/users/42"),
        .query = PT_STR_LIT("x=1"),
        .route = PT_STR_LIT("users"),
        .status = 200,
        .bytes_in = 10,
        .bytes_out = 20,
        .duration_ms = 1.5,
        .upstream_ms = -1,
        .attempts = 1,
        .protocol = PT_STR_LIT("HTTP/1.1"),
    };
}

static pt_log_column col(pt_log_field f) { return (pt_log_column){.key = pt_log_field_name(f), .field = f}; }

static size_t fmt(char *buf, size_t cap, const pt_access_record *r, pt_log_format f, const pt_log_column *c, size_t n)
{
    pt_accesslog_spec spec = {.format = f, .columns = c, .ncolumns = n, .header_max = 16};
    return pt_accesslog_format_spec(buf, cap, r, &spec);
}

TEST(selected_fields_json_in_configured_order)
{
    pt_log_column c[] = {col(PT_LF_status), col(PT_LF_method), col(PT_LF_uri_path), col(PT_LF_query),
                         col(PT_LF_upstream_ms), col(PT_LF_protocol)};
    pt_access_record r = sample();
    char buf[1024];
    size_t n = fmt(buf, sizeof(buf), &r, PT_LOG_FORMAT_JSON, c, PT_ARRAY_LEN(c));
    CHECK_STRN(buf, n, "{\"status\":200,\"method\":\"GET\",\"uri_path\":\"/users/42\",\"query\":\"x=1\","
                       "\"upstream_ms\":null,\"protocol\":\"HTTP/1.1\"}\n");
}

TEST(logfmt_bare_quoted_and_null)
{
    pt_log_column c[] = {col(PT_LF_time), col(PT_LF_method), col(PT_LF_path), col(PT_LF_route),
                         col(PT_LF_consumer), col(PT_LF_upstream_ms), col(PT_LF_duration_ms), col(PT_LF_aborted)};
    pt_access_record r = sample();
    r.path = PT_STR_LIT("/a b=c");
    char buf[1024];
    size_t n = fmt(buf, sizeof(buf), &r, PT_LOG_FORMAT_LOGFMT, c, PT_ARRAY_LEN(c));
    CHECK_STRN(buf, n, "time=2025-11-29T18:01:02.123Z method=GET path=\"/a b=c\" route=users consumer=\"\" "
                       "upstream_ms= duration_ms=1.500 aborted=false\n");
}

TEST(logfmt_escapes_hostile_bytes)
{
    /* CR LF (log injection), quote, backslash, NUL, ESC, DEL, valid UTF-8
     * (é, U+20AC, U+1F600), invalid UTF-8 (lone continuation, overlong,
     * surrogate, truncated sequence). */
    static const char in[] = "a\r\nb\"c\\d\x00" "e\x1b\x7f\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"
                             "\x80\xc0\xaf\xed\xa0\x80\xe2\x82";
    char out[256];
    size_t n = pt_logfmt_escape_bounded(out, sizeof(out), in, sizeof(in) - 1);
    CHECK_STRN(out, n, "a\\r\\nb\\\"c\\\\d\\x00e\\x1b\\x7f\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"
                       "\\x80\\xc0\\xaf\\xed\\xa0\\x80\\xe2\\x82");
    /* bounded: never splits an escape or a UTF-8 sequence */
    for (size_t cap = 0; cap < n; cap++) {
        char small[256];
        size_t m = pt_logfmt_escape_bounded(small, cap, in, sizeof(in) - 1);
        CHECK(m <= cap);
        CHECK(memcmp(small, out, m) == 0);
        CHECK(m == n || m + 4 > cap); /* stops only when the next unit does not fit */
    }
}

TEST(hostile_path_never_splits_a_line)
{
    pt_log_column c[] = {col(PT_LF_path), col(PT_LF_user_agent), col(PT_LF_status)};
    pt_access_record r = sample();
    r.path = PT_STR_LIT("/x\r\n{\"status\":500} injected=1\n");
    r.user_agent = PT_STR_LIT("ua\x01\xff");
    char buf[1024];
    for (int f = 0; f < 2; f++) {
        size_t n = fmt(buf, sizeof(buf), &r, (pt_log_format)f, c, PT_ARRAY_LEN(c));
        CHECK(n > 0 && buf[n - 1] == '\n');
        CHECK(memchr(buf, '\n', n - 1) == NULL);
        CHECK(memchr(buf, '\r', n) == NULL);
    }
    size_t n = fmt(buf, sizeof(buf), &r, PT_LOG_FORMAT_LOGFMT, c, PT_ARRAY_LEN(c));
    CHECK_STRN(buf, n, "path=\"/x\\r\\n{\\\"status\\\":500} injected=1\\n\" user_agent=\"ua\\x01\\xff\" status=200\n");
    n = fmt(buf, sizeof(buf), &r, PT_LOG_FORMAT_JSON, c, PT_ARRAY_LEN(c));
    CHECK_STRN(buf, n, "{\"path\":\"/x\\r\\n{\\\"status\\\":500} injected=1\\n\",\"user_agent\":\"ua\\u0001\\ufffd\","
                       "\"status\":200}\n");
}

TEST(header_capture_bounded_and_null_when_absent)
{
    pt_arena *a = pt_arena_new(4096);
    pt_headers req = {0}, resp = {0};
    pt_headers_add(&req, a, PT_STR_LIT("X-Tenant"), PT_STR_LIT("acme\r\nx=1"));
    pt_headers_add(&resp, a, PT_STR_LIT("X-Long"), PT_STR_LIT("0123456789abcdef-cut-here"));
    pt_log_column c[] = {
        {.key = "req_x_tenant", .source = PT_LOG_COL_REQ_HEADER, .header = "x-tenant"},
        {.key = "req_x_none", .source = PT_LOG_COL_REQ_HEADER, .header = "X-None"},
        {.key = "resp_x_long", .source = PT_LOG_COL_RESP_HEADER, .header = "X-Long"},
    };
    pt_access_record r = sample();
    r.req_headers = &req;
    r.resp_headers = &resp;
    char buf[512];
    size_t n = fmt(buf, sizeof(buf), &r, PT_LOG_FORMAT_LOGFMT, c, 3);
    CHECK_STRN(buf, n, "req_x_tenant=\"acme\\r\\nx=1\" req_x_none= resp_x_long=0123456789abcdef\n");
    n = fmt(buf, sizeof(buf), &r, PT_LOG_FORMAT_JSON, c, 3);
    CHECK_STRN(buf, n, "{\"req_x_tenant\":\"acme\\r\\nx=1\",\"req_x_none\":null,\"resp_x_long\":\"0123456789abcdef\"}\n");
    r.req_headers = NULL; /* no request (e.g. a parse error): null, not a crash */
    n = fmt(buf, sizeof(buf), &r, PT_LOG_FORMAT_JSON, c, 1);
    CHECK_STRN(buf, n, "{\"req_x_tenant\":null}\n");
    pt_arena_free(a);
}

TEST(stats_fields_read_through_the_table)
{
    pt_txn_stats st = {.ttfb_us = 2500, .responder = "rate_limit", .upstream_failed = true};
    pt_log_column c[] = {col(PT_LF_ttfb_ms), col(PT_LF_responder), col(PT_LF_upstream_failed)};
    pt_access_record r = sample();
    char buf[512];
    size_t n = fmt(buf, sizeof(buf), &r, PT_LOG_FORMAT_JSON, c, 3);
    CHECK_STRN(buf, n, "{\"ttfb_ms\":null,\"responder\":null,\"upstream_failed\":null}\n"); /* no stats */
    r.stats = &st;
    n = fmt(buf, sizeof(buf), &r, PT_LOG_FORMAT_JSON, c, 3);
    CHECK_STRN(buf, n, "{\"ttfb_ms\":2.500,\"responder\":\"rate_limit\",\"upstream_failed\":true}\n");
    st.ttfb_us = -1;
    st.responder = NULL;
    n = fmt(buf, sizeof(buf), &r, PT_LOG_FORMAT_LOGFMT, c, 3);
    CHECK_STRN(buf, n, "ttfb_ms= responder= upstream_failed=true\n");
}

TEST(logfmt_truncation_keeps_one_line_and_later_fields)
{
    size_t plen = 20000;
    char *path = malloc(plen);
    for (size_t i = 0; i < plen; i++) path[i] = "a\"\xc3\xa9\n\\\xff"[i % 7];
    pt_log_column c[] = {col(PT_LF_time), col(PT_LF_path), col(PT_LF_route), col(PT_LF_status)};
    pt_access_record r = sample();
    r.path = pt_str_make(path, plen);
    char *buf = malloc(PT_ACCESSLOG_LINE_MAX + 16);
    int bad = 0;
    for (size_t cap = PT_ACCESSLOG_MIN_CAP; cap <= PT_ACCESSLOG_LINE_MAX; cap += 131) {
        memset(buf, 'Z', cap + 16);
        size_t n = fmt(buf, cap, &r, PT_LOG_FORMAT_LOGFMT, c, 4);
        if (n == 0 || n > cap || buf[cap] != 'Z' || buf[n - 1] != '\n' || memchr(buf, '\n', n - 1) ||
            !memmem(buf, n, "\" route=users status=200\n", 25))
            bad++;
    }
    CHECK_INT(bad, 0);
    free(buf);
    free(path);
}

TEST(default_spec_is_the_default_line)
{
    pt_access_record r = sample();
    char a[1024], b[1024];
    size_t na = pt_accesslog_format(a, sizeof(a), &r);
    pt_accesslog_spec zero = {0};
    size_t nb = pt_accesslog_format_spec(b, sizeof(b), &r, &zero);
    CHECK_STRN(a, na, "{\"time\":\"2025-11-29T18:01:02.123Z\",\"request_id\":\"rid-1\",\"trace_id\":\"\","
                      "\"client\":\"203.0.113.7\","
                      "\"method\":\"GET\",\"path\":\"/users/42?x=1\",\"route\":\"users\",\"consumer\":\"\","
                      "\"upstream\":\"\",\"status\":200,\"aborted\":false,\"bytes_in\":10,\"bytes_out\":20,"
                      "\"duration_ms\":1.500,\"upstream_ms\":null,\"attempts\":1}\n");
    CHECK_STRN(b, nb, a);
}

/* ------------------------------------------------------------ config */

static pt_config *load(const char *yaml, pt_errors *e) { return pt_config_load_string("t.yaml", yaml, strlen(yaml), e); }

static bool fails_with(const char *yaml, const char *needle)
{
    pt_errors e = {0};
    pt_config *cfg = load(yaml, &e);
    bool ok = cfg == NULL;
    bool found = false;
    for (size_t i = 0; i < e.n; i++)
        if (strstr(e.msgs[i], needle)) found = true;
    if (!ok || !found) {
        fprintf(stderr, "  expected error containing '%s'\n", needle);
        for (size_t i = 0; i < e.n; i++) fprintf(stderr, "    %s\n", e.msgs[i]);
    }
    pt_config_free(cfg);
    pt_errors_free(&e);
    return ok && found;
}

#define BASE "listen: [127.0.0.1:8080]\nroutes: [{match: {path_prefix: /}, direct_response: {}}]\n"
#define MIN "listen: [127.0.0.1:8080]\n"

TEST(config_fields_format_and_headers)
{
    pt_errors e = {0};
    pt_config *cfg = load(MIN "access_log:\n  format: logfmt\n  fields: [status, method, ttfb_ms]\n"
                              "  request_headers: [X-Tenant]\n  response_headers: [Content-Type]\n"
                              "  header_max_length: 32\n",
                          &e);
    CHECK(cfg != NULL);
    if (!cfg) {
        for (size_t i = 0; i < e.n; i++) fprintf(stderr, "    %s\n", e.msgs[i]);
        pt_errors_free(&e);
        return;
    }
    CHECK_INT(cfg->access_log.format, PT_LOG_FORMAT_LOGFMT);
    CHECK_INT(cfg->access_log.ncolumns, 5);
    CHECK_STR(cfg->access_log.columns[2].key, "ttfb_ms");
    CHECK_STR(cfg->access_log.columns[3].key, "req_x_tenant");
    CHECK_STR(cfg->access_log.columns[4].key, "resp_content_type");
    CHECK_INT(cfg->access_log.header_max, 32);
    pt_config_free(cfg);
    pt_errors_free(&e);
}

TEST(config_default_columns)
{
    pt_errors e = {0};
    pt_config *cfg = load(MIN, &e);
    CHECK(cfg != NULL);
    CHECK_INT(cfg->access_log.ncolumns, 16);
    CHECK_STR(cfg->access_log.columns[0].key, "time");
    CHECK_STR(cfg->access_log.columns[2].key, "trace_id");
    CHECK_STR(cfg->access_log.columns[15].key, "attempts");
    CHECK_INT(cfg->access_log.dest.sink, PT_LOG_SINK_STDOUT);
    CHECK_INT(cfg->error_log.dest.sink, PT_LOG_SINK_STDERR);
    CHECK_INT(cfg->error_log.level, PT_ELOG_WARN);
    pt_config_free(cfg);
    pt_errors_free(&e);
}

TEST(config_refuses_credentials_without_opt_in)
{
    CHECK(fails_with(MIN "access_log:\n  request_headers: [Authorization]\n",
                     "t.yaml:3:21: access_log.request_headers: refusing to log Authorization"));
    CHECK(fails_with(MIN "access_log:\n  request_headers: [cookie]\n", "refusing to log cookie"));
    CHECK(fails_with(MIN "access_log:\n  request_headers: [Proxy-Authorization]\n", "refusing to log Proxy-Authorization"));
    CHECK(fails_with(MIN "access_log:\n  response_headers: [Set-Cookie]\n", "refusing to log Set-Cookie"));
    pt_errors e = {0};
    pt_config *cfg = load(MIN "access_log:\n  request_headers: [Cookie]\n  allow_sensitive_headers: [cookie]\n", &e);
    CHECK(cfg != NULL);
    pt_config_free(cfg);
    pt_errors_free(&e);
}

TEST(config_errors)
{
    CHECK(fails_with(MIN "access_log:\n  fields: [status, nope]\n", "t.yaml:3:20: access_log.fields: unknown field 'nope'"));
    CHECK(fails_with(MIN "access_log:\n  fields: [status, status]\n", "listed twice"));
    CHECK(fails_with(MIN "access_log:\n  fields: []\n", "non-empty list"));
    CHECK(fails_with(MIN "access_log:\n  format: xml\n", "access_log.format must be json or logfmt"));
    CHECK(fails_with(MIN "access_log:\n  request_headers: [\"a b\"]\n", "is not a header name"));
    CHECK(fails_with(MIN "access_log:\n  syslog: {address: \"udp:localhost:514\"}\n", "numeric IP"));
    CHECK(fails_with(MIN "access_log:\n  syslog: {facility: nope}\n", "unknown facility"));
    CHECK(fails_with(MIN "access_log:\n  path: x\n  syslog: {}\n", "exclusive"));
    CHECK(fails_with(MIN "access_log:\n  sample: {ratio: 2}\n", "ratio must be a number from 0 to 1"));
    CHECK(fails_with(MIN "access_log:\n  sample: {always: [2xx]}\n", "'2xx' is not 4xx or 5xx"));
    CHECK(fails_with(MIN "error_log:\n  level: loud\n", "error_log.level must be"));
    CHECK(fails_with(MIN "error_log:\n  format: xml\n", "error_log.format must be text or json"));
}

TEST(config_syslog_and_sample)
{
    pt_errors e = {0};
    pt_config *cfg = load(MIN "access_log:\n  syslog: {address: \"udp:127.0.0.1:5514\", facility: local3, app_name: gw}\n"
                              "  sample: {ratio: 0.25, always: [5xx], slow_over: 2s}\n"
                              "error_log:\n  syslog: {address: \"unix:/tmp/x.sock\"}\n  level: debug\n  format: json\n",
                          &e);
    CHECK(cfg != NULL);
    if (!cfg) return;
    CHECK_INT(cfg->access_log.dest.sink, PT_LOG_SINK_SYSLOG_UDP);
    CHECK_INT(cfg->access_log.dest.facility, 19);
    CHECK_STR(cfg->access_log.dest.app_name, "gw");
    CHECK_INT(cfg->access_log.dest.udp_len, sizeof(struct sockaddr_in));
    CHECK(cfg->access_log.sample.on);
    CHECK(cfg->access_log.sample.ratio == 0.25);
    CHECK(!cfg->access_log.sample.always_4xx && cfg->access_log.sample.always_5xx);
    CHECK_INT(cfg->access_log.sample.slow_over_ms, 2000);
    CHECK_INT(cfg->error_log.dest.sink, PT_LOG_SINK_SYSLOG_UNIX);
    CHECK_STR(cfg->error_log.dest.path, "/tmp/x.sock");
    CHECK_INT(cfg->error_log.level, PT_ELOG_DEBUG);
    CHECK(cfg->error_log.json);
    pt_config_free(cfg);
    pt_errors_free(&e);
}

/* ------------------------------------------------------------ error log */

TEST(error_log_line_text_and_json)
{
    char buf[1024];
    pt_elog_ctx ctx = {.worker = 2, .route = PT_STR_LIT("api"), .upstream = PT_STR_LIT("up"),
                       .target = PT_STR_LIT("10.0.0.1:80"), .request_id = PT_STR_LIT("r 1")};
    size_t n = pt_elog_format(buf, sizeof(buf), false, 1764439262123456ull, PT_ELOG_ERROR, "upstream_connect", &ctx,
                              "refused\r\nlevel=debug");
    CHECK_STRN(buf, n, "time=2025-11-29T18:01:02.123Z level=error worker=2 kind=upstream_connect route=api upstream=up "
                       "target=10.0.0.1:80 request_id=\"r 1\" msg=\"refused\\r\\nlevel=debug\"\n");
    n = pt_elog_format(buf, sizeof(buf), true, 0, PT_ELOG_WARN, "k", &(pt_elog_ctx){.worker = -1}, "a\"b");
    CHECK_STRN(buf, n, "{\"time\":\"1970-01-01T00:00:00.000Z\",\"level\":\"warn\",\"kind\":\"k\",\"msg\":\"a\\\"b\"}\n");
}

TEST(error_log_line_bounded)
{
    char big[3000];
    memset(big, '\n', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    pt_elog_ctx ctx = {.worker = 0, .route = pt_str_make(big, 2000)};
    char buf[600];
    for (int json = 0; json < 2; json++) {
        memset(buf, 'Z', sizeof(buf));
        size_t n = pt_elog_format(buf, 512, json, 0, PT_ELOG_INFO, "k", &ctx, big);
        CHECK(n > 0 && n <= 512 && buf[n - 1] == '\n' && buf[512] == 'Z');
        CHECK(memchr(buf, '\n', n - 1) == NULL);
        CHECK(memmem(buf, n, "msg=", 4) || memmem(buf, n, "\"msg\":", 6));
    }
}

TEST_MAIN()
