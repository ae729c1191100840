/* test_trace.c — W3C traceparent/tracestate parsing, ids, the ratio
 * sampler, the OTLP JSON encoding of spans and export bodies (parsed back
 * with jansson), problem+json with a trace id, and the `tracing:` block. */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config/config.h"
#include "core/loop.h"
#include "http/problem.h"
#include "obs/trace.h"
#include "testlib.h"

#define S(lit) PT_STR_LIT(lit)

static const char *VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

TEST(traceparent_valid)
{
    pt_trace_parent tp;
    CHECK(pt_traceparent_parse(pt_str_c(VALID), &tp));
    CHECK_INT(tp.trace_id[0], 0x4b);
    CHECK_INT(tp.trace_id[15], 0x36);
    CHECK_INT(tp.span_id[0], 0x00);
    CHECK_INT(tp.span_id[7], 0xb7);
    CHECK_INT(tp.flags, 1);
    CHECK(pt_traceparent_parse(S("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"), &tp));
    CHECK_INT(tp.flags, 0);
    /* unknown flags are kept for version 00 */
    CHECK(pt_traceparent_parse(S("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09"), &tp));
    CHECK_INT(tp.flags, 9);
}

TEST(traceparent_invalid)
{
    static const char *bad[] = {
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", /* uppercase trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01", /* uppercase span id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A", /* uppercase flags */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01", /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", /* zero parent id */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", /* version ff */
        "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",   /* short trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01", /* long trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", /* extra field in 00 */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", /* future version: next char must be '-' */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        pt_trace_parent tp;
        if (pt_traceparent_parse(pt_str_c(bad[i]), &tp)) {
            fprintf(stderr, "accepted: %s\n", bad[i]);
            CHECK(0);
        }
    }
}

TEST(traceparent_future_version)
{
    pt_trace_parent tp;
    CHECK(pt_traceparent_parse(S("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-the-future"), &tp));
    CHECK_INT(tp.flags, 1); /* only the sampled bit is understood */
    CHECK(pt_traceparent_parse(S("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), &tp));
}

TEST(traceparent_format_roundtrip)
{
    pt_trace_parent tp;
    CHECK(pt_traceparent_parse(pt_str_c(VALID), &tp));
    char out[PT_TRACEPARENT_LEN];
    pt_traceparent_format(out, tp.trace_id, tp.span_id, true);
    CHECK(memcmp(out, VALID, PT_TRACEPARENT_LEN) == 0);
    pt_traceparent_format(out, tp.trace_id, tp.span_id, false);
    CHECK(memcmp(out + 53, "00", 2) == 0);
}

static bool ts_is(pt_arena *a, const char *in, const char *want)
{
    pt_str r = pt_tracestate_filter(a, pt_str_c(in));
    bool ok = r.n == strlen(want) && (r.n == 0 || memcmp(r.p, want, r.n) == 0);
    if (!ok) fprintf(stderr, "tracestate %s -> %.*s (want %s)\n", in, (int)r.n, r.p, want);
    return ok;
}

TEST(tracestate_rules)
{
    pt_arena *a = pt_arena_new(4096);
    CHECK(ts_is(a, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"));
    CHECK(ts_is(a, " rojo=1 ,, congo=2 ", "rojo=1,congo=2"));
    CHECK(ts_is(a, "tenant@vendor=x", "tenant@vendor=x"));
    CHECK(ts_is(a, "Rojo=1", ""));           /* uppercase key */
    CHECK(ts_is(a, "rojo", ""));             /* no '=' */
    CHECK(ts_is(a, "rojo=1,rojo=2", ""));    /* duplicate key */
    CHECK(ts_is(a, "rojo=a=b", ""));         /* '=' in the value */
    CHECK(ts_is(a, "rojo=", ""));            /* empty value */
    CHECK(ts_is(a, "t@toolongsystemid15=x", ""));
    /* 33 members: invalid */
    char many[33 * 8 + 1] = "";
    for (int i = 0; i < 33; i++) sprintf(many + strlen(many), "%sk%02d=v", i ? "," : "", i);
    CHECK(ts_is(a, many, ""));
    /* over 512 bytes: the long member goes first, then from the end */
    char big[2048];
    char longv[200];
    memset(longv, 'x', sizeof(longv) - 1);
    longv[sizeof(longv) - 1] = '\0';
    snprintf(big, sizeof(big), "a=1,long=%s", longv);
    for (int i = 0; i < 30; i++) sprintf(big + strlen(big), ",m%02d=%s", i, "yyyyyyyyyy");
    pt_str r = pt_tracestate_filter(a, pt_str_c(big));
    CHECK(r.n > 0 && r.n <= PT_TRACESTATE_MAX);
    CHECK(memmem(r.p, r.n, "long=", 5) == NULL);
    CHECK(r.n >= 4 && memcmp(r.p, "a=1,", 4) == 0);
    pt_arena_free(a);
}

TEST(ids_random_nonzero)
{
    uint8_t a[16], b[16];
    pt_trace_new_id(a, 16);
    pt_trace_new_id(b, 16);
    CHECK(memcmp(a, b, 16) != 0);
    uint8_t z[16] = {0};
    CHECK(memcmp(a, z, 16) != 0);
    char hex[32];
    pt_trace_hex(hex, (const uint8_t *)"\x00\xab\xff", 3);
    CHECK(memcmp(hex, "00abff", 6) == 0);
}

TEST(ratio_sampler)
{
    uint8_t id[16] = {0};
    CHECK(pt_trace_ratio_sampled(id, 1.0));
    CHECK(!pt_trace_ratio_sampled(id, 0.0));
    /* last 8 bytes small: sampled at a small ratio; large: not */
    id[15] = 1;
    CHECK(pt_trace_ratio_sampled(id, 0.01));
    memset(id + 8, 0xff, 8);
    CHECK(!pt_trace_ratio_sampled(id, 0.99));
    /* about the ratio over many random ids */
    int n = 0;
    for (int i = 0; i < 20000; i++) {
        pt_trace_new_id(id, 16);
        n += pt_trace_ratio_sampled(id, 0.25);
    }
    CHECK(n > 4000 && n < 6000);
}

static json_t *attr(json_t *span, const char *key)
{
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(span, "attributes"), i, a)
    {
        if (strcmp(json_string_value(json_object_get(a, "key")), key) == 0) return json_object_get(a, "value");
    }
    return NULL;
}

TEST(span_json_otlp)
{
    pt_span s = {0};
    for (int i = 0; i < 16; i++) s.trace_id[i] = (uint8_t)(0xa0 + i);
    for (int i = 0; i < 8; i++) s.span_id[i] = (uint8_t)(i + 1), s.parent_id[i] = (uint8_t)(0xf0 + i);
    s.has_parent = true;
    s.name = S("GET /api \"x\"");
    s.kind = PT_SPAN_SERVER;
    s.start_ns = 1765000000123456789ull;
    s.end_ns = 1765000000223456789ull;
    s.status = PT_SPAN_STATUS_ERROR;
    pt_span_str(&s, "http.request.method", S("GET"));
    pt_span_int(&s, "http.response.status_code", 502);
    pt_span_str(&s, "empty", PT_STR_NULL); /* skipped */
    pt_span_int(&s, "neg", -42);
    pt_span_str(&s, "utf8", S("caf\xc3\xa9 \x01"));
    pt_trace_buf b = {0};
    pt_span_json(&b, &s);
    json_error_t err;
    json_t *j = json_loadb(b.p, b.n, 0, &err);
    CHECK(j != NULL);
    if (!j) {
        fprintf(stderr, "%s: %.*s\n", err.text, (int)b.n, b.p);
        return;
    }
    CHECK(strcmp(json_string_value(json_object_get(j, "traceId")), "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf") == 0);
    CHECK(strcmp(json_string_value(json_object_get(j, "spanId")), "0102030405060708") == 0);
    CHECK(strcmp(json_string_value(json_object_get(j, "parentSpanId")), "f0f1f2f3f4f5f6f7") == 0);
    CHECK(strcmp(json_string_value(json_object_get(j, "name")), "GET /api \"x\"") == 0);
    CHECK(json_integer_value(json_object_get(j, "kind")) == 2);
    CHECK(strcmp(json_string_value(json_object_get(j, "startTimeUnixNano")), "1765000000123456789") == 0);
    CHECK(strcmp(json_string_value(json_object_get(j, "endTimeUnixNano")), "1765000000223456789") == 0);
    CHECK(json_integer_value(json_object_get(json_object_get(j, "status"), "code")) == 2);
    CHECK(strcmp(json_string_value(json_object_get(attr(j, "http.request.method"), "stringValue")), "GET") == 0);
    CHECK(strcmp(json_string_value(json_object_get(attr(j, "http.response.status_code"), "intValue")), "502") == 0);
    CHECK(attr(j, "empty") == NULL);
    CHECK(strcmp(json_string_value(json_object_get(attr(j, "neg"), "intValue")), "-42") == 0);
    CHECK(strcmp(json_string_value(json_object_get(attr(j, "utf8"), "stringValue")), "caf\xc3\xa9 \x01") == 0);
    CHECK_INT(json_array_size(json_object_get(j, "attributes")), 4);

    /* a root span has no parentSpanId; unset status is {} */
    s.has_parent = false;
    s.status = PT_SPAN_STATUS_UNSET;
    pt_trace_buf b2 = {0};
    pt_span_json(&b2, &s);
    json_t *j2 = json_loadb(b2.p, b2.n, 0, &err);
    CHECK(j2 && !json_object_get(j2, "parentSpanId"));
    CHECK(j2 && json_object_size(json_object_get(j2, "status")) == 0);

    /* the export body around two spans */
    pt_str spans[2] = {pt_str_make(b.p, b.n), pt_str_make(b2.p, b2.n)};
    pt_trace_buf body = {0};
    pt_trace_export_body(&body, "svc\"1", spans, 2);
    json_t *e = json_loadb(body.p, body.n, 0, &err);
    CHECK(e != NULL);
    if (e) {
        json_t *rs = json_array_get(json_object_get(e, "resourceSpans"), 0);
        json_t *ra = json_array_get(json_object_get(json_object_get(rs, "resource"), "attributes"), 0);
        CHECK(strcmp(json_string_value(json_object_get(ra, "key")), "service.name") == 0);
        CHECK(strcmp(json_string_value(json_object_get(json_object_get(ra, "value"), "stringValue")), "svc\"1") == 0);
        json_t *ss = json_array_get(json_object_get(rs, "scopeSpans"), 0);
        CHECK(strcmp(json_string_value(json_object_get(json_object_get(ss, "scope"), "name")), "portico") == 0);
        CHECK_INT(json_array_size(json_object_get(ss, "spans")), 2);
        json_decref(e);
    }
    json_decref(j);
    json_decref(j2);
    pt_trace_buf_free(&b);
    pt_trace_buf_free(&b2);
    pt_trace_buf_free(&body);
}

/* The protobuf encoding byte for byte: the expected bytes were produced by
 * python3-protobuf (SerializeToString) from the same span built with the
 * OTLP message types (tests/integration/otlp_proto.py), which writes fields
 * in number order as Portico does. The invalid byte 0xff becomes U+FFFD. */
static size_t unhex_str(const char *hex, uint8_t *out)
{
    size_t n = strlen(hex) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
    return n;
}

TEST(span_proto_otlp_bytes)
{
    static const char SPAN_HEX[] =
        "0a10a0a1a2a3a4a5a6a7a8a9aaabacadaeaf120801020304050607082208f0f1f2f3f4f5f6f72a06474554202f78"
        "300239154dec13268a7e1841152ee219268a7e184a1c0a13687474702e726571756573742e6d6574686f6412050a"
        "034745544a200a19687474702e726573706f6e73652e7374617475735f636f6465120318f6034a120a036e656712"
        "0b18d6ffffffffffffffff014a0e0a0362616412070a0561efbfbd627a081204626f6f6d1802";
    static const char BODY_HEAD_HEX[] =
        "0adc010a190a170a0c736572766963652e6e616d6512070a05737663c3a912be010a090a07706f727469636f";
    pt_span s = {0};
    for (int i = 0; i < 16; i++) s.trace_id[i] = (uint8_t)(0xa0 + i);
    for (int i = 0; i < 8; i++) s.span_id[i] = (uint8_t)(1 + i), s.parent_id[i] = (uint8_t)(0xf0 + i);
    s.has_parent = true;
    s.name = PT_STR_LIT("GET /x");
    s.kind = PT_SPAN_SERVER;
    s.start_ns = 1765000000123456789ull;
    s.end_ns = 1765000000223456789ull;
    pt_span_str(&s, "http.request.method", PT_STR_LIT("GET"));
    pt_span_int(&s, "http.response.status_code", 502);
    pt_span_str(&s, "empty", PT_STR_NULL); /* not written */
    pt_span_int(&s, "neg", -42);
    pt_span_str(&s, "bad", PT_STR_LIT("a\xff" "b"));
    s.status = PT_SPAN_STATUS_ERROR;
    s.status_message = PT_STR_LIT("boom");

    uint8_t want[512];
    size_t wn = unhex_str(SPAN_HEX, want);
    size_t n;
    char *enc = pt_span_proto_encode(&s, &n);
    /* ScopeSpans field 2: tag 0x12, length 176 as a varint (b0 01) */
    CHECK_INT(n, wn + 3);
    CHECK((uint8_t)enc[0] == 0x12 && (uint8_t)enc[1] == 0xb0 && (uint8_t)enc[2] == 0x01);
    CHECK(n == wn + 3 && memcmp(enc + 3, want, wn) == 0);

    /* bound + write agree with the one-shot encoder; the bound holds */
    char out[1024];
    CHECK(pt_span_proto_bound(&s) >= n && pt_span_proto_bound(&s) <= sizeof(out));
    CHECK_INT(pt_span_proto_write(out, &s), n);
    CHECK(memcmp(out, enc, n) == 0);

    /* the request around it: resource service.name (UTF-8 kept), scope portico */
    pt_trace_buf body = {0};
    pt_str spans[1] = {pt_str_make(enc, n)};
    pt_trace_proto_body(&body, "svc\xc3\xa9", spans, 1);
    uint8_t head[128];
    size_t hn = unhex_str(BODY_HEAD_HEX, head);
    CHECK_INT(body.n, hn + n);
    CHECK(body.n == hn + n && memcmp(body.p, head, hn) == 0 && memcmp(body.p + hn, enc, n) == 0);

    /* a root span without status: no parent field, no status field */
    s.has_parent = false;
    s.status = PT_SPAN_STATUS_UNSET;
    size_t n2;
    char *enc2 = pt_span_proto_encode(&s, &n2);
    CHECK_INT(n2, n - 10 - 10); /* parent (2 + 8) and status (2 + 8) gone */
    bool has4 = false;
    for (size_t i = 0; i + 1 < n2; i++) has4 |= (uint8_t)enc2[i] == 0x22 && (uint8_t)enc2[i + 1] == 0x08;
    CHECK(!has4);
    free(enc);
    free(enc2);
    pt_trace_buf_free(&body);
}

/* Every split of multi-byte UTF-8 and every invalid lead or continuation:
 * the encoded string is valid UTF-8 and as long as measured. */
TEST(span_proto_utf8_cleaning)
{
    static const char *const cases[][2] = {
        {"plain", "plain"},
        {"caf\xc3\xa9", "caf\xc3\xa9"},
        {"\xe2\x98\x83", "\xe2\x98\x83"},
        {"\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80"},
        {"\xc3", "\xef\xbf\xbd"},                             /* truncated */
        {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},             /* overlong */
        {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* surrogate */
        {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* > U+10FFFF */
        {"a\x80" "b", "a\xef\xbf\xbd" "b"},
        {"0123456789abcdef\xff", "0123456789abcdef\xef\xbf\xbd"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pt_span s = {0};
        s.name = pt_str_c(cases[i][0]);
        size_t n;
        char *enc = pt_span_proto_encode(&s, &n);
        /* 12 len | 0a 10 trace_id(16) | 12 08 span_id(8) | 2a len name */
        size_t want = strlen(cases[i][1]), off = 2 + 18 + 10 + 2;
        CHECK((uint8_t)enc[off - 2] == 0x2a && (uint8_t)enc[off - 1] == want);
        CHECK(off && off + want <= n && memcmp(enc + off, cases[i][1], want) == 0);
        free(enc);
    }
}

/* Values of every length around the 8-byte fast path, with a character that
 * must be escaped (or not) at each position, come back intact. */
TEST(span_json_escapes_at_every_position)
{
    const char specials[] = {'"', '\\', '\n', 0x01, 0x7f, (char)0xc3, 'a'};
    for (size_t len = 1; len <= 24; len++)
        for (size_t pos = 0; pos < len; pos++)
            for (size_t k = 0; k < sizeof(specials); k++) {
                char v[32];
                memset(v, 'x', len);
                v[pos] = specials[k];
                if (specials[k] == (char)0xc3) {
                    if (pos + 1 >= len) continue;
                    v[pos + 1] = (char)0xa9; /* "é" */
                }
                pt_span s = {0};
                s.kind = PT_SPAN_CLIENT;
                pt_span_str(&s, "v", pt_str_make(v, len));
                pt_trace_buf b = {0};
                pt_span_json(&b, &s);
                json_error_t err;
                json_t *j = json_loadb(b.p, b.n, 0, &err);
                const char *got = j ? json_string_value(json_object_get(attr(j, "v"), "stringValue")) : NULL;
                bool ok = got && strlen(got) == len && memcmp(got, v, len) == 0;
                if (!ok) fprintf(stderr, "len %zu pos %zu special %d: %.*s\n", len, pos, specials[k], (int)b.n, b.p);
                CHECK(ok);
                json_decref(j);
                pt_trace_buf_free(&b);
            }
}

TEST(problem_with_trace_id)
{
    pt_arena *a = pt_arena_new(4096);
    pt_str s = pt_problem_json_traced(a, 502, "down", S("r1"), S("4bf92f3577b34da6a3ce929d0e0e4736"));
    json_error_t err;
    json_t *j = json_loadb(s.p, s.n, 0, &err);
    CHECK(j != NULL);
    if (j) {
        CHECK(strcmp(json_string_value(json_object_get(j, "request_id")), "r1") == 0);
        CHECK(strcmp(json_string_value(json_object_get(j, "trace_id")), "4bf92f3577b34da6a3ce929d0e0e4736") == 0);
        json_decref(j);
    }
    s = pt_problem_json(a, 404, NULL, PT_STR_NULL);
    CHECK(memmem(s.p, s.n, "trace_id", 8) == NULL);
    pt_arena_free(a);
}

static pt_config *load(const char *yaml, pt_errors *errs)
{
    *errs = (pt_errors){0};
    return pt_config_load_string("t.yaml", yaml, strlen(yaml), errs);
}

#define BASE "listen: [\"127.0.0.1:18080\"]\nupstreams: {u: {targets: [\"127.0.0.1:1\"]}}\n" \
             "routes: [{match: {path_prefix: /}, upstream: u}]\n"

TEST(config_tracing_block)
{
    pt_errors errs;
    pt_config *c = load(BASE, &errs);
    CHECK(c && !c->tracing.enabled);
    pt_config_free(c);
    pt_errors_free(&errs);

    c = load(BASE "tracing:\n  sampling: 0.25\n  parent_based: false\n  trust_incoming: trusted_proxies\n"
                  "  service_name: edge\n  exporter:\n    endpoint: http://127.0.0.1:4318/v1/traces\n"
                  "    batch_size: 10\n    batch_delay: 200ms\n    queue_size: 100\n    timeout: 2s\n"
                  "    max_retries: 1\n",
             &errs);
    CHECK(c != NULL);
    if (c) {
        CHECK(c->tracing.enabled);
        CHECK(c->tracing.sampling == 0.25);
        CHECK(!c->tracing.parent_based);
        CHECK_INT(c->tracing.trust_incoming, PT_TRACE_TRUST_PROXIES);
        CHECK(strcmp(c->tracing.service_name, "edge") == 0);
        CHECK(strcmp(c->tracing.endpoint, "http://127.0.0.1:4318/v1/traces") == 0);
        CHECK_INT(c->tracing.batch_size, 10);
        CHECK_INT(c->tracing.batch_delay_ms, 200);
        CHECK_INT(c->tracing.queue_size, 100);
        CHECK_INT(c->tracing.timeout_ms, 2000);
        CHECK_INT(c->tracing.max_retries, 1);
        CHECK(c->tracing.protobuf); /* the default: http/protobuf */
    }
    pt_config_free(c);
    pt_errors_free(&errs);

    c = load(BASE "tracing:\n  exporter:\n    protocol: http/json\n", &errs);
    CHECK(c && !c->tracing.protobuf);
    pt_config_free(c);
    pt_errors_free(&errs);

    static const char *bad[] = {
        BASE "tracing:\n  sampling: 1.5\n",
        BASE "tracing:\n  sampling: lots\n",
        BASE "tracing:\n  trust_incoming: some\n",
        BASE "tracing:\n  exporter:\n    endpoint: https://x/v1/traces\n",
        BASE "tracing:\n  exporter:\n    batch_size: 0\n",
        BASE "tracing:\n  unknown: 1\n",
        BASE "tracing:\n  exporter:\n    protocol: grpc\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        c = load(bad[i], &errs);
        CHECK(c == NULL && errs.n > 0);
        if (errs.n) CHECK(strstr(errs.msgs[0], "t.yaml:") == errs.msgs[0]);
        pt_config_free(c);
        pt_errors_free(&errs);
    }
}

/* An exporter endpoint that refuses connections: a loopback port bound
 * but not listening (close the returned socket at the end). */
static int refusing_endpoint(char *ep, size_t n)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    CHECK(bind(ls, (struct sockaddr *)&a, sizeof(a)) == 0 && getsockname(ls, (struct sockaddr *)&a, &al) == 0);
    snprintf(ep, n, "http://127.0.0.1:%d/v1/traces", ntohs(a.sin_port));
    return ls;
}

/* The export queue holds encoded spans, not chunk buffers: spans that a
 * quiet worker hands over one by one (its 100 ms flush) take about their
 * encoded size each (observability.md: "queue_size encoded spans, about 300
 * bytes each"), not a 64 KiB chunk each. The endpoint refuses connections
 * and batch_size is never reached, so the spans stay queued until the stop. */
TEST(export_queue_holds_spans_not_chunk_buffers)
{
    char ep[64];
    int ls = refusing_endpoint(ep, sizeof(ep));
    pt_tracing_conf tc = {.enabled = true, .endpoint = ep, .timeout_ms = 1000, .batch_size = 1000,
                          .batch_delay_ms = 600000, .queue_size = 1000, .max_retries = 0, .protobuf = true};
    pt_trace_export_configure(&tc);
    pt_loop *loop = pt_loop_new();
    pt_span s = {0};
    s.name = PT_STR_LIT("GET /x");
    s.kind = PT_SPAN_SERVER;
    pt_span_str(&s, "http.request.method", PT_STR_LIT("GET"));
    for (int i = 0; i < 16; i++) {
        CHECK(pt_trace_export_room());
        pt_trace_submit(loop, &s);
        pt_trace_worker_fini(loop); /* the chunk goes to the queue with its one span */
    }
    size_t bytes = 0;
    CHECK_INT(pt_trace_export_queued(&bytes), 16);
    CHECK(bytes <= 16 * 1024); /* each span well under 1 KiB encoded */
    pt_loop_free(loop);
    pt_trace_export_stop(); /* the POST is refused: counted as failed */
    CHECK_INT(pt_trace_export_queued(&bytes), 0);
    close(ls);
}

/* A reload to `tracing` without an endpoint stops the export: spans are
 * dropped from then on, also once the exporter has sent (or failed) what
 * was queued before the reload. */
TEST(export_room_stays_closed_without_endpoint)
{
    char ep[64];
    int ls = refusing_endpoint(ep, sizeof(ep));
    pt_tracing_conf tc = {.enabled = true, .endpoint = ep, .timeout_ms = 1000, .batch_size = 1,
                          .batch_delay_ms = 10, .queue_size = 100, .max_retries = 0, .protobuf = true};
    pt_trace_export_configure(&tc);
    pt_loop *loop = pt_loop_new();
    pt_span s = {0};
    s.name = PT_STR_LIT("GET /x");
    CHECK(pt_trace_export_room());
    pt_trace_submit(loop, &s); /* in the worker's chunk */
    pt_tracing_conf off = tc;
    off.endpoint = NULL; /* the reload */
    pt_trace_export_configure(&off);
    CHECK(!pt_trace_export_room());
    uint64_t failed = pt_trace_spans_failed();
    pt_trace_worker_fini(loop); /* the span recorded before the reload goes out */
    size_t bytes;
    for (int i = 0; i < 500 && (pt_trace_spans_failed() == failed || pt_trace_export_queued(&bytes)); i++)
        usleep(10000); /* the exporter's refused POST */
    CHECK(pt_trace_spans_failed() == failed + 1);
    CHECK(!pt_trace_export_room());
    pt_loop_free(loop);
    pt_trace_export_stop();
    close(ls);
}

TEST_MAIN()
