/* test_problem_accesslog.c — problem+json bodies, JSON escaping, the
 * access-log line format and the asynchronous log writer. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "obs/accesslog.h"
#include "http/message.h"
#include "http/problem.h"
#include "testlib.h"

/* ------------------------------------------------------------ helpers */

/* Minimal validator for a flat JSON object line: {"k":v,...}\n where v is a
 * string (with valid escapes, no raw control bytes), a number or null.
 * Writes the keys, comma-separated, to `keys` (if non-NULL). */
static bool flat_json_line_ok(const char *s, size_t n, char *keys, size_t keys_cap)
{
    size_t i = 0, k = 0;
    if (keys) keys[0] = '\0';
    if (n < 3 || s[n - 1] != '\n' || s[0] != '{') return false;
    n--; /* drop '\n' */
    if (memchr(s, '\n', n)) return false;
    i = 1;
    for (;;) {
        if (i >= n || s[i] != '"') return false;
        i++;
        size_t ks = i;
        while (i < n && s[i] != '"') {
            if (s[i] == '\\' || (unsigned char)s[i] < 0x20) return false;
            i++;
        }
        if (i >= n) return false;
        if (keys) {
            size_t kl = i - ks;
            if (k + kl + 2 >= keys_cap) return false;
            if (k) keys[k++] = ',';
            memcpy(keys + k, s + ks, kl);
            k += kl;
            keys[k] = '\0';
        }
        i++;
        if (i >= n || s[i++] != ':') return false;
        if (i < n && s[i] == '"') {
            i++;
            while (i < n && s[i] != '"') {
                unsigned char c = (unsigned char)s[i];
                if (c < 0x20) return false;
                if (c == '\\') {
                    i++;
                    if (i >= n) return false;
                    if (s[i] == 'u') {
                        for (int h = 1; h <= 4; h++)
                            if (i + h >= n || !strchr("0123456789abcdefABCDEF", s[i + h]) || !s[i + h])
                                return false;
                        i += 4;
                    } else if (!strchr("\"\\/bfnrt", s[i]) || !s[i]) {
                        return false;
                    }
                }
                i++;
            }
            if (i >= n) return false;
            i++;
        } else if (i + 4 <= n && (memcmp(s + i, "null", 4) == 0 || memcmp(s + i, "true", 4) == 0)) {
            i += 4;
        } else if (i + 5 <= n && memcmp(s + i, "false", 5) == 0) {
            i += 5;
        } else {
            size_t ns = i;
            while (i < n && (s[i] == '-' || s[i] == '.' || (s[i] >= '0' && s[i] <= '9'))) i++;
            if (i == ns) return false;
        }
        if (i < n && s[i] == ',') {
            i++;
            continue;
        }
        return i + 1 == n && s[i] == '}';
    }
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    *len = n;
    return buf;
}

static size_t count_char(const char *p, size_t n, char c)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += p[i] == c;
    return k;
}

/* ------------------------------------------------------------ problem+json */

/* The one UTF-8 check problem+json, the access log and the OTLP encoder
 * share (core/common.c): every boundary of RFC 3629. */
TEST(utf8_sequence_boundaries)
{
    static const struct {
        const char *bytes;
        size_t n, want;
    } cases[] = {
        {"a", 1, 1},
        {"\x7f", 1, 1},
        {"\xc2\x80", 2, 2},          /* U+0080 */
        {"\xc1\xbf", 2, 0},          /* overlong */
        {"\xdf\xbf", 2, 2},
        {"\xe0\x9f\xbf", 3, 0},      /* overlong */
        {"\xe0\xa0\x80", 3, 3},      /* U+0800 */
        {"\xed\x9f\xbf", 3, 3},      /* U+D7FF */
        {"\xed\xa0\x80", 3, 0},      /* surrogate */
        {"\xef\xbf\xbf", 3, 3},
        {"\xf0\x8f\xbf\xbf", 4, 0},  /* overlong */
        {"\xf0\x90\x80\x80", 4, 4},  /* U+10000 */
        {"\xf4\x8f\xbf\xbf", 4, 4},  /* U+10FFFF */
        {"\xf4\x90\x80\x80", 4, 0},  /* above */
        {"\xf5\x80\x80\x80", 4, 0},
        {"\x80", 1, 0},              /* a continuation alone */
        {"\xe2\x98", 2, 0},          /* cut short */
        {"\xe2\x28\xa1", 3, 0},      /* bad continuation */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECK_INT(pt_utf8_seq((const unsigned char *)cases[i].bytes, cases[i].n), cases[i].want);
}

TEST(problem_404_exact)
{
    pt_arena *a = pt_arena_new(1024);
    pt_str s = pt_problem_json(a, 404, "no route for GET /x", PT_STR_LIT("abc-123"));
    CHECK_SLICE(s, "{\"type\":\"urn:portico:error:no-route\",\"title\":\"Not Found\",\"status\":404,"
                   "\"detail\":\"no route for GET /x\",\"request_id\":\"abc-123\"}");
    CHECK_INT(s.p[s.n], '\0');
    pt_arena_free(a);
}

TEST(problem_502_and_504_omit_empty_request_id)
{
    pt_arena *a = pt_arena_new(1024);
    pt_str s = pt_problem_json(a, 502, "upstream refused the connection", PT_STR_NULL);
    CHECK_SLICE(s, "{\"type\":\"urn:portico:error:bad-gateway\",\"title\":\"Bad Gateway\",\"status\":502,"
                   "\"detail\":\"upstream refused the connection\"}");
    s = pt_problem_json(a, 504, "upstream timed out", PT_STR_LIT(""));
    CHECK_SLICE(s, "{\"type\":\"urn:portico:error:gateway-timeout\",\"title\":\"Gateway Timeout\",\"status\":504,"
                   "\"detail\":\"upstream timed out\"}");
    pt_arena_free(a);
}

TEST(problem_null_detail_omitted_and_unknown_status_slug)
{
    pt_arena *a = pt_arena_new(1024);
    pt_str s = pt_problem_json(a, 431, NULL, PT_STR_LIT("r1"));
    CHECK_SLICE(s, "{\"type\":\"urn:portico:error:headers-too-large\",\"title\":\"Request Header Fields Too "
                   "Large\",\"status\":431,\"request_id\":\"r1\"}");
    s = pt_problem_json(a, 409, "slow down", PT_STR_NULL);
    char expect[256];
    snprintf(expect, sizeof(expect),
             "{\"type\":\"urn:portico:error:error\",\"title\":\"%s\",\"status\":409,\"detail\":\"slow down\"}",
             pt_status_reason(409));
    CHECK_SLICE(s, expect);
    pt_arena_free(a);
}

TEST(problem_slugs)
{
    static const struct { int status; const char *slug; } cases[] = {
        {400, "bad-request"},      {404, "no-route"},          {405, "method-not-allowed"},
        {408, "request-timeout"},  {413, "body-too-large"},    {414, "uri-too-long"},
        {417, "expectation-failed"}, {431, "headers-too-large"}, {500, "internal"},
        {501, "not-implemented"},  {502, "bad-gateway"},       {503, "unavailable"},
        {504, "gateway-timeout"},  {505, "version-not-supported"}, {403, "forbidden"}, {401, "unauthorized"}, {429, "rate-limited"}, {200, "error"},
    };
    for (size_t i = 0; i < PT_ARRAY_LEN(cases); i++) CHECK_STR(pt_problem_slug(cases[i].status), cases[i].slug);
}

TEST(problem_detail_escaping)
{
    pt_arena *a = pt_arena_new(1024);
    pt_str s = pt_problem_json(a, 400, "bad \"header\" \\ x\r\n\t\x01 caf\xc3\xa9", PT_STR_LIT("q\"id"));
    CHECK_SLICE(s, "{\"type\":\"urn:portico:error:bad-request\",\"title\":\"Bad Request\",\"status\":400,"
                   "\"detail\":\"bad \\\"header\\\" \\\\ x\\r\\n\\t\\u0001 caf\xc3\xa9\",\"request_id\":\"q\\\"id\"}");
    pt_arena_free(a);
}

TEST(json_escape_controls_and_utf8)
{
    char out[256];
    const char in[] = "a\"b\\c\b\f\n\r\t\x1f\x7f/";
    size_t n = pt_json_escape(out, in, sizeof(in) - 1);
    CHECK_STRN(out, n, "a\\\"b\\\\c\\b\\f\\n\\r\\t\\u001f\x7f/");

    /* Valid UTF-8 of every length passes through unchanged. */
    const char utf8[] = "\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf";
    n = pt_json_escape(out, utf8, sizeof(utf8) - 1);
    CHECK_STRN(out, n, utf8);

    /* Invalid bytes become \ufffd, one per byte: stray continuation, 0xff,
     * overlong 2-byte, UTF-16 surrogate, truncated sequence at the end. */
    const char bad[] = "\x80|\xff|\xc0\x80|\xed\xa0\x80|\xe2\x82";
    n = pt_json_escape(out, bad, sizeof(bad) - 1);
    CHECK_STRN(out, n,
               "\\ufffd|\\ufffd|\\ufffd\\ufffd|\\ufffd\\ufffd\\ufffd|\\ufffd\\ufffd");

    /* NUL inside the slice is escaped, and 6x is the worst case. */
    const char nul[4] = {'\0', '\x02', '\0', '\xfe'};
    n = pt_json_escape(out, nul, 4);
    CHECK_STRN(out, n, "\\u0000\\u0002\\u0000\\ufffd");
    CHECK_INT(n, 24);
}

TEST(json_escape_bounded_never_splits)
{
    char out[16];
    size_t used;
    size_t n = pt_json_escape_bounded(out, 3, "ab\"c", 4, &used);
    CHECK_STRN(out, n, "ab");
    CHECK_INT(used, 2);
    n = pt_json_escape_bounded(out, 4, "ab\"c", 4, &used);
    CHECK_STRN(out, n, "ab\\\"");
    CHECK_INT(used, 3);
    n = pt_json_escape_bounded(out, 2, "x\xe2\x82\xac", 4, &used);
    CHECK_STRN(out, n, "x");
    CHECK_INT(used, 1);
    n = pt_json_escape_bounded(out, 5, "\x01", 1, &used);
    CHECK_INT(n, 0);
    CHECK_INT(used, 0);
    n = pt_json_escape_bounded(out, 16, "hello", 5, &used);
    CHECK_STRN(out, n, "hello");
    CHECK_INT(used, 5);
}

/* ------------------------------------------------------------ line format */

static pt_access_record sample_record(void)
{
    return (pt_access_record){
        .time_us = 1795975262123456ull, /* 2026-11-29T18:01:02.123456Z */
        .request_id = PT_STR_LIT("0123456789abcdef0123456789abcdef"),
        .trace_id = PT_STR_LIT("4bf92f3577b34da6a3ce929d0e0e4736"),
        .client = PT_STR_LIT("203.0.113.7"),
        .method = PT_STR_LIT("GET"),
        .path = PT_STR_LIT("/users/42?x=1"),
        .route = PT_STR_LIT("users"),
        .consumer = PT_STR_LIT("alice"),
        .upstream = PT_STR_LIT("10.0.0.5:8080"),
        .status = 200,
        .bytes_in = 123,
        .bytes_out = 4567,
        .duration_ms = 12.3456,
        .upstream_ms = 10.5,
        .attempts = 2,
    };
}

TEST(accesslog_format_exact)
{
    char buf[PT_ACCESSLOG_LINE_MAX];
    pt_access_record r = sample_record();
    size_t n = pt_accesslog_format(buf, sizeof(buf), &r);
    CHECK_STRN(buf, n,
               "{\"time\":\"2026-11-29T18:01:02.123Z\",\"request_id\":\"0123456789abcdef0123456789abcdef\","
               "\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"client\":\"203.0.113.7\",\"method\":\"GET\",\"path\":\"/users/42?x=1\",\"route\":\"users\","
               "\"consumer\":\"alice\",\"upstream\":\"10.0.0.5:8080\",\"status\":200,\"aborted\":false,\"bytes_in\":123,\"bytes_out\":4567,"
               "\"duration_ms\":12.346,\"upstream_ms\":10.500,\"attempts\":2}\n");
}

TEST(accesslog_format_empty_fields_and_null_upstream)
{
    char buf[PT_ACCESSLOG_LINE_MAX];
    pt_access_record r = {
        .time_us = 951782400ull * 1000000 + 999, /* 2000-02-29 00:00:00.000999 */
        .client = PT_STR_LIT("::1"),
        .method = PT_STR_LIT("POST"),
        .path = PT_STR_LIT("/a\"b\x01"),
        .status = 404,
        .bytes_out = 0,
        .duration_ms = 0,
        .upstream_ms = -1,
    };
    size_t n = pt_accesslog_format(buf, sizeof(buf), &r);
    CHECK_STRN(buf, n,
               "{\"time\":\"2000-02-29T00:00:00.000Z\",\"request_id\":\"\",\"trace_id\":\"\",\"client\":\"::1\",\"method\":\"POST\","
               "\"path\":\"/a\\\"b\\u0001\",\"route\":\"\",\"consumer\":\"\",\"upstream\":\"\",\"status\":404,\"aborted\":false,\"bytes_in\":0,"
               "\"bytes_out\":0,\"duration_ms\":0.000,\"upstream_ms\":null,\"attempts\":0}\n");
}

TEST(accesslog_format_aborted)
{
    char buf[PT_ACCESSLOG_LINE_MAX];
    pt_access_record r = {.time_us = 0, .status = 200, .aborted = true, .bytes_out = 7, .upstream_ms = -1};
    size_t n = pt_accesslog_format(buf, sizeof(buf), &r);
    CHECK(strstr(buf, "\"status\":200,\"aborted\":true,\"bytes_in\":0,\"bytes_out\":7,") != NULL);
    CHECK(n > 0 && buf[n - 1] == '\n');
}

TEST(accesslog_format_time_edges)
{
    char buf[PT_ACCESSLOG_LINE_MAX];
    pt_access_record r = sample_record();
    struct { uint64_t us; const char *prefix; } cases[] = {
        {0, "{\"time\":\"1970-01-01T00:00:00.000Z\""},
        {1735689599ull * 1000000 + 999999, "{\"time\":\"2024-12-31T23:59:59.999Z\""},
        {1735689600ull * 1000000, "{\"time\":\"2025-01-01T00:00:00.000Z\""},
        {4107542400ull * 1000000, "{\"time\":\"2100-03-01T00:00:00.000Z\""}, /* 2100 is not a leap year */
    };
    for (size_t i = 0; i < PT_ARRAY_LEN(cases); i++) {
        r.time_us = cases[i].us;
        size_t n = pt_accesslog_format(buf, sizeof(buf), &r);
        size_t pl = strlen(cases[i].prefix);
        CHECK(n > pl);
        CHECK_STRN(buf, pl, cases[i].prefix);
    }
}

TEST(accesslog_format_truncates_safely)
{
    /* A huge path full of escapes and multi-byte characters. */
    size_t plen = 20000;
    char *path = malloc(plen);
    for (size_t i = 0; i < plen; i++) path[i] = "a\"\xc3\xa9\n\\"[i % 6];
    pt_access_record r = sample_record();
    r.path = pt_str_make(path, plen);
    r.upstream_ms = -1;

    char *buf = malloc(PT_ACCESSLOG_LINE_MAX + 64);
    const char *expected_keys = "time,request_id,trace_id,client,method,path,route,consumer,upstream,status,aborted,bytes_in,bytes_out,"
                                "duration_ms,upstream_ms,attempts";
    char keys[256];
    size_t prev = 0, last_cap = 0;
    int bad = 0;
    for (size_t cap = PT_ACCESSLOG_MIN_CAP; cap <= PT_ACCESSLOG_LINE_MAX; cap += (cap < 600 ? 1 : 97)) {
        memset(buf, 'Z', cap + 64);
        size_t n = pt_accesslog_format(buf, cap, &r);
        if (n == 0 || n > cap || buf[cap] != 'Z' || !flat_json_line_ok(buf, n, keys, sizeof(keys)) ||
            strcmp(keys, expected_keys) != 0 || n < prev) {
            if (bad++ < 3) fprintf(stderr, "  cap %zu: bad line (%zu bytes): %.*s\n", cap, n, (int)n, buf);
        }
        prev = n;
        last_cap = cap;
        /* The short fields after the path keep their values. */
        if (!memmem(buf, n, "\"route\":\"users\",\"consumer\":\"alice\",\"upstream\":\"10.0.0.5:8080\",\"status\":200", 74))
            bad++;
    }
    CHECK_INT(bad, 0);
    CHECK(prev + 6 > last_cap); /* the room is actually used (a 6-byte escape may not fit) */

    CHECK_INT(pt_accesslog_format(buf, PT_ACCESSLOG_MIN_CAP - 1, &r), 0);
    CHECK_INT(pt_accesslog_format(buf, 0, &r), 0);
    free(buf);
    free(path);
}

TEST(accesslog_format_extremes_fit_min_cap)
{
    char buf[PT_ACCESSLOG_MIN_CAP];
    pt_access_record r = sample_record();
    r.time_us = UINT64_MAX;
    r.bytes_in = UINT64_MAX;
    r.bytes_out = UINT64_MAX;
    r.status = -5;
    r.duration_ms = 1e300;
    r.upstream_ms = 0.0 / 0.0;
    size_t n = pt_accesslog_format(buf, sizeof(buf), &r);
    CHECK(n > 0 && n <= sizeof(buf));
    CHECK(flat_json_line_ok(buf, n, NULL, 0));
    CHECK(memmem(buf, n, "\"bytes_in\":18446744073709551615,", 32) != NULL);
    CHECK(memmem(buf, n, "\"upstream_ms\":null,\"attempts\":2}", 32) != NULL);
}

/* ------------------------------------------------------------ async writer */

static char tmpdir[64];

static void make_tmpdir(void)
{
    if (tmpdir[0]) return;
    strcpy(tmpdir, "/tmp/pt_accesslog_XXXXXX");
    if (!mkdtemp(tmpdir)) abort();
}

typedef struct {
    int thread;
    int lines;
} writer_arg;

static void *writer_thread(void *p)
{
    writer_arg *w = p;
    char line[128];
    for (int i = 0; i < w->lines; i++) {
        int n = snprintf(line, sizeof(line), "{\"thread\":%d,\"i\":%d,\"pad\":\"xxxxxxxxxxxxxxxx\"}\n", w->thread, i);
        pt_accesslog_write(line, (size_t)n);
    }
    return NULL;
}

TEST(accesslog_writer_two_threads_10000_lines)
{
    make_tmpdir();
    char path[128];
    snprintf(path, sizeof(path), "%s/access.log", tmpdir);
    unlink(path);
    CHECK_INT(pt_accesslog_open(path), PT_OK);
    CHECK_INT(pt_accesslog_open(path), PT_ERR); /* already open */

    pthread_t th[2];
    writer_arg args[2] = {{0, 5000}, {1, 5000}};
    for (int t = 0; t < 2; t++) pthread_create(&th[t], NULL, writer_thread, &args[t]);
    for (int t = 0; t < 2; t++) pthread_join(th[t], NULL);
    pt_accesslog_close();
    CHECK_INT(pt_accesslog_dropped(), 0);

    size_t len = 0;
    char *data = slurp(path, &len);
    CHECK(data != NULL);
    if (!data) return;
    CHECK_INT(count_char(data, len, '\n'), 10000);
    CHECK(len > 0 && data[len - 1] == '\n');

    /* Every line well-formed, every (thread, i) exactly once, per-thread order kept. */
    static unsigned char seen[2][5000];
    memset(seen, 0, sizeof(seen));
    int next[2] = {0, 0}, bad = 0;
    for (char *p = data, *end = data + len; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) { bad++; break; }
        int t, i;
        if (!flat_json_line_ok(p, (size_t)(nl - p + 1), NULL, 0) ||
            sscanf(p, "{\"thread\":%d,\"i\":%d,", &t, &i) != 2 || t < 0 || t > 1 || i < 0 || i >= 5000 ||
            seen[t][i] || i != next[t]) {
            bad++;
        } else {
            seen[t][i] = 1;
            next[t]++;
        }
        p = nl + 1;
    }
    CHECK_INT(bad, 0);
    CHECK_INT(next[0], 5000);
    CHECK_INT(next[1], 5000);
    free(data);
    unlink(path);

    pt_accesslog_write("after close\n", 12); /* a no-op, not a crash */
}

TEST(accesslog_reopen_after_rename)
{
    make_tmpdir();
    char path[128], rotated[128];
    snprintf(path, sizeof(path), "%s/rot.log", tmpdir);
    snprintf(rotated, sizeof(rotated), "%s/rot.log.1", tmpdir);
    unlink(path);
    unlink(rotated);
    CHECK_INT(pt_accesslog_open(path), PT_OK);
    for (int i = 0; i < 100; i++) pt_accesslog_write("old line\n", 9);
    pt_accesslog_flush();
    CHECK_INT(rename(path, rotated), 0);
    pt_accesslog_request_reopen();
    for (int i = 0; i < 50; i++) pt_accesslog_write("new line\n", 9);
    pt_accesslog_close();

    size_t n1 = 0, n2 = 0;
    char *old = slurp(rotated, &n1), *cur = slurp(path, &n2);
    CHECK(old != NULL && cur != NULL);
    if (old && cur) {
        CHECK_INT(n1, 100 * 9);
        CHECK(memmem(old, n1, "new", 3) == NULL);
        CHECK_INT(n2, 50 * 9);
        CHECK(memmem(cur, n2, "old", 3) == NULL);
    }
    free(old);
    free(cur);
    unlink(path);
    unlink(rotated);
}

TEST(accesslog_switch_to_another_file)
{
    make_tmpdir();
    char a[128], b[128], c[128];
    snprintf(a, sizeof(a), "%s/sw-a.log", tmpdir);
    snprintf(b, sizeof(b), "%s/sw-b.log", tmpdir);
    snprintf(c, sizeof(c), "%s/sw-c.log", tmpdir);
    unlink(a);
    unlink(b);
    unlink(c);
    CHECK_INT(pt_accesslog_switch(b), PT_ERR); /* not open */
    CHECK_INT(pt_accesslog_open(a), PT_OK);
    for (int i = 0; i < 10; i++) pt_accesslog_write("aaaa\n", 5);
    pt_accesslog_flush();
    CHECK_INT(pt_accesslog_switch("/nonexistent-dir-pt/x.log"), PT_ERR); /* keeps a */
    CHECK_INT(pt_accesslog_switch(c), PT_OK);
    CHECK_INT(pt_accesslog_switch(b), PT_OK); /* replaces the pending switch to c */
    for (int i = 0; i < 20; i++) pt_accesslog_write("bbbb\n", 5);
    pt_accesslog_close();
    size_t na = 0, nb = 0, nc = 0;
    char *da = slurp(a, &na), *db = slurp(b, &nb), *dc = slurp(c, &nc);
    CHECK(da != NULL && db != NULL && dc != NULL);
    if (da && db) {
        CHECK_INT(na, 10 * 5);
        CHECK(memmem(da, na, "bbbb", 4) == NULL);
        CHECK_INT(nb, 20 * 5);
        CHECK(memmem(db, nb, "aaaa", 4) == NULL);
    }
    CHECK_INT(nc, 0);
    free(da);
    free(db);
    free(dc);
    unlink(a);
    unlink(b);
    unlink(c);
}

TEST(accesslog_open_errors)
{
    CHECK_INT(pt_accesslog_open("/nonexistent-dir-pt/x/access.log"), PT_ERR);
    pt_accesslog_close(); /* closing a log that is not open is harmless */
}

typedef struct {
    int fd;
    size_t bytes;
} fifo_reader;

static void *drain_fifo(void *p)
{
    fifo_reader *r = p;
    char buf[65536];
    ssize_t n;
    while ((n = read(r->fd, buf, sizeof(buf))) != 0) {
        if (n > 0) r->bytes += (size_t)n;
    }
    return NULL;
}

/* A reader that stalls: the pending buffer hits its 8 MiB bound and lines
 * are dropped (and counted) instead of blocking the writers. */
TEST(accesslog_drops_when_sink_stalls)
{
    make_tmpdir();
    char path[128];
    snprintf(path, sizeof(path), "%s/stall.fifo", tmpdir);
    unlink(path);
    CHECK_INT(mkfifo(path, 0600), 0);
    int rfd = open(path, O_RDONLY | O_NONBLOCK);
    CHECK(rfd >= 0);
    if (rfd < 0) return;
    CHECK_INT(pt_accesslog_open(path), PT_OK);

    char line[100];
    memset(line, 'x', sizeof(line) - 1);
    line[sizeof(line) - 1] = '\n';
    /* 24 MiB: more than the pipe, the buffer the writer thread holds (up
     * to 8 MiB, however early it swapped) and 8 MiB pending together */
    size_t total = (24u * 1024 * 1024) / sizeof(line);
    for (size_t i = 0; i < total; i++) pt_accesslog_write(line, sizeof(line));
    uint64_t dropped = pt_accesslog_dropped();
    CHECK(dropped > 0);

    fcntl(rfd, F_SETFL, 0); /* blocking */
    fifo_reader r = {rfd, 0};
    pthread_t th;
    pthread_create(&th, NULL, drain_fifo, &r);
    pt_accesslog_close();
    pthread_join(th, NULL);
    close(rfd);
    CHECK_INT(r.bytes % sizeof(line), 0);
    CHECK_INT(r.bytes / sizeof(line) + pt_accesslog_dropped(), total);
    unlink(path);
}

TEST(zz_cleanup_tmpdir)
{
    if (tmpdir[0]) CHECK_INT(rmdir(tmpdir), 0);
}

TEST_MAIN()
