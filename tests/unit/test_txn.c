/* test_txn.c — the transaction driven by a fake downstream codec and a
 * scripted upstream exchange, so interleavings are tested one event at a
 * time: early responses during an upload, pauses on both sides at once,
 * bidirectional streams, client aborts during each pause, body rewriting,
 * buffering, trailers, and upstream failures before and after the head.
 *
 * The fake codec frees the request arena when the txn says finished(): a
 * txn touched after that is a use-after-free that ASan reports. Plugins are
 * "probes": the pipeline of a generation built from a real config is
 * patched so each slot runs a probe whose behaviour a test scripts. */
#include "testlib.h"

#include <stdarg.h>
#include <time.h>

#include "core/loop.h"
#include "proxy/generation.h"
#include "plugin/plugin.h"
#include "proxy/txn.h"
#include "server/worker.h"
#include "upstream/exchange.h"

/* ------------------------------------------------------------------ probes */

enum { PH_REQH, PH_REQB, PH_RESH, PH_RESB };
#define NPROBES 3

typedef struct probe probe;
/* A probe's behaviour for one call; default: log and continue. */
typedef pt_plugin_result (*probe_fn)(probe *p, int phase, pt_txn *t, pt_body *b);
struct probe {
    char id;
    probe_fn fn;
    int calls[4];
    pt_txn_ref *ref;   /* taken when it pauses (what an async plugin holds) */
    pt_side paused_side;
};
static probe probes[NPROBES];
static char plog[4096]; /* "A:reqh B:resh ..." */
static int logs_on_log;

static void logf_(const char *fmt, ...)
{
    size_t n = strlen(plog);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(plog + n, sizeof(plog) - n, fmt, ap);
    va_end(ap);
}

static pt_plugin_result probe_call(probe *p, int phase, pt_txn *t, pt_body *b)
{
    static const char *const names[] = {"reqh", "reqb", "resh", "resb"};
    p->calls[phase]++;
    logf_("%c:%s%s ", p->id, names[phase], b && pt_body_last(b) ? "$" : "");
    return p->fn ? p->fn(p, phase, t, b) : PT_PLUGIN_CONTINUE;
}

static pt_plugin_result probe_reqh(pt_txn *t, const void *c, void *s) { return probe_call((probe *)c, PH_REQH, t, NULL); }
static pt_plugin_result probe_reqb(pt_txn *t, const void *c, void *s, pt_body *b) { return probe_call((probe *)c, PH_REQB, t, b); }
static pt_plugin_result probe_resh(pt_txn *t, const void *c, void *s) { return probe_call((probe *)c, PH_RESH, t, NULL); }
static pt_plugin_result probe_resb(pt_txn *t, const void *c, void *s, pt_body *b) { return probe_call((probe *)c, PH_RESB, t, b); }
static void probe_log(pt_txn *t, const void *c, void *s) { logs_on_log++; }
static int pauses_cancelled;
static void probe_pause_cancelled(pt_txn *t, const void *c, void *s, pt_side side) { pauses_cancelled++; }

static const pt_plugin_type probe_type = {
    .name = "probe",
    .state_size = 8,
    .on_request_headers = probe_reqh,
    .on_request_body = probe_reqb,
    .on_response_headers = probe_resh,
    .on_response_body = probe_resb,
    .on_log = probe_log,
    .on_pause_cancelled = probe_pause_cancelled,
};

/* Pause helper: remembers the side and holds a ref like an async plugin. */
static pt_plugin_result pause_here(probe *p, pt_txn *t, pt_side side)
{
    p->paused_side = side;
    if (!p->ref) p->ref = pt_txn_ref_new(t);
    return PT_PLUGIN_PAUSE;
}

/* ---------------------------------------------------------- fake codec */

typedef struct {
    pt_arena *arena;
    pt_txn *txn;
    bool head_sent;
    int status;
    int64_t content_length;
    char headers[2048]; /* "name: value\n"... of the sent head */
    char body[262144];
    size_t body_len;
    bool ended;
    char trailers[1024];
    bool aborted;
    int finished;
    bool want_body;
    bool high;        /* send_body reports backpressure */
    bool can_retract;
} fake_ds;
static fake_ds ds;

static void ds_head(void *s, const pt_response *r)
{
    ds.head_sent = true;
    ds.status = r->status;
    ds.content_length = r->content_length;
    ds.headers[0] = 0;
    for (uint32_t i = 0; i < r->headers.n; i++) {
        size_t n = strlen(ds.headers);
        snprintf(ds.headers + n, sizeof(ds.headers) - n, "%.*s: %.*s\n", (int)r->headers.v[i].name.n,
                 r->headers.v[i].name.p, (int)r->headers.v[i].value.n, r->headers.v[i].value.p);
    }
}
static bool ds_body(void *s, const char *d, size_t n)
{
    if (ds.body_len + n <= sizeof(ds.body)) memcpy(ds.body + ds.body_len, d, n);
    ds.body_len += n;
    return !ds.high;
}
static void ds_end(void *s, pt_str tr)
{
    ds.ended = true;
    snprintf(ds.trailers, sizeof(ds.trailers), "%.*s", (int)tr.n, tr.p ? tr.p : "");
}
static void ds_want(void *s, bool w) { ds.want_body = w; }
static void ds_abort(void *s) { ds.aborted = true; }
static bool ds_retract(void *s)
{
    if (!ds.can_retract) return false;
    ds.head_sent = false;
    ds.body_len = 0;
    return true;
}
static void ds_finished(void *s)
{
    ds.finished++;
    /* What a real codec may do at once: free the arena holding the txn. */
    pt_arena_free(ds.arena);
    ds.arena = NULL;
    ds.txn = NULL;
}
static uint64_t ds_sent(void *s) { return ds.body_len; }

static const pt_downstream_ops fake_ds_ops = {
    .send_head = ds_head,
    .send_body = ds_body,
    .send_end = ds_end,
    .want_body = ds_want,
    .abort = ds_abort,
    .retract = ds_retract,
    .finished = ds_finished,
    .bytes_sent = ds_sent,
};

/* ------------------------------------------------------ fake upstream */

typedef struct {
    bool open;
    const pt_uconn_cbs *cbs;
    void *owner;
    pt_arena *arena;
    bool head_sent;
    int64_t content_length;
    char head[2048];   /* "METHOD target\nname: value\n"... as sent */
    char body[262144];
    size_t body_len;
    bool ended;
    int ends;          /* send_end calls: one per exchange at most */
    char trailers[512];
    bool read_paused;
    bool released, closed;
    bool high; /* send_body reports backpressure */
    bool fail_send; /* send_body fails at once (a stale pooled connection) */
} fake_up;
/* Every exchange opened in a test gets a slot; `up` is the latest. */
static fake_up up_slots[4];
static int up_opened;
static fake_up *upp = &up_slots[0];
#define up (*upp)

static void up_attach(void *x, const pt_uconn_cbs *cbs, void *owner, pt_arena *a, const pt_upstream_conf *u,
                      const pt_h1_limits *l, uint64_t ms)
{
    fake_up *f = x;
    f->cbs = cbs;
    f->owner = owner;
    f->arena = a;
}
static void up_send_head(void *x, const pt_request *r, pt_str target, pt_str host, const pt_headers *h, bool has_body,
                         int64_t cl)
{
    fake_up *f = x;
    f->head_sent = true;
    f->content_length = cl;
    snprintf(f->head, sizeof(f->head), "%.*s %.*s\n", (int)r->method_str.n, r->method_str.p, (int)target.n, target.p);
    for (uint32_t i = 0; i < h->n; i++) {
        size_t n = strlen(f->head);
        snprintf(f->head + n, sizeof(f->head) - n, "%.*s: %.*s\n", (int)h->v[i].name.n, h->v[i].name.p,
                 (int)h->v[i].value.n, h->v[i].value.p);
    }
}
static bool fake_reused; /* exchanges claim to be pooled connections */
static bool up_send_body(void *x, const char *d, size_t n)
{
    fake_up *f = x;
    CHECK(!f->closed && !f->released);
    if (f->fail_send) {
        f->fail_send = false;
        fake_reused = true;
        f->cbs->on_error(f->owner, PT_UERR_CLOSED, true);
        fake_reused = false;
        return false;
    }
    if (f->body_len + n <= sizeof(f->body)) memcpy(f->body + f->body_len, d, n);
    f->body_len += n;
    return !f->high;
}
static void up_send_end(void *x, pt_str tr)
{
    fake_up *f = x;
    f->ended = true;
    f->ends++;
    snprintf(f->trailers, sizeof(f->trailers), "%.*s", (int)tr.n, tr.p ? tr.p : "");
}
static void up_pause(void *x, bool p) { ((fake_up *)x)->read_paused = p; }
static void up_release(void *x) { ((fake_up *)x)->released = true; ((fake_up *)x)->open = false; }
static void up_close(void *x) { ((fake_up *)x)->closed = true; ((fake_up *)x)->open = false; }
static bool up_reused(const void *x) { return fake_reused; }

static const pt_upstream_exchange_ops fake_up_ops = {
    .attach = up_attach,
    .send_head = up_send_head,
    .send_body = up_send_body,
    .send_end = up_send_end,
    .pause_read = up_pause,
    .release = up_release,
    .close = up_close,
    .reused = up_reused,
};

static void *fake_open(pt_worker *w, pt_upstream_rt *u, int idx, SSL_CTX *tls, const pt_upstream_exchange_ops **ops,
                       bool *fresh)
{
    upp = &up_slots[up_opened++ % 4];
    memset(upp, 0, sizeof(*upp));
    up.open = true;
    *ops = &fake_up_ops;
    *fresh = false; /* "pooled": the owner sends at once */
    return upp;
}

/* The upstream answers (the txn must not be reading-paused for these). */
static void up_head(int status, int64_t cl, const char *extra_name, const char *extra_value)
{
    CHECK(up.open);
    pt_response *r = pt_arena_calloc(up.arena, sizeof(*r));
    r->status = status;
    r->has_body = status >= 200 && status != 204 && status != 304;
    r->content_length = cl;
    pt_headers_add(&r->headers, up.arena, PT_STR_LIT("Content-Type"), PT_STR_LIT("text/plain"));
    if (extra_name) pt_headers_add(&r->headers, up.arena, pt_str_c(extra_name), pt_str_c(extra_value));
    up.cbs->on_head(up.owner, r);
}
static void up_data(const char *s)
{
    CHECK(up.open);
    CHECK(!up.read_paused);
    up.cbs->on_body(up.owner, s, strlen(s));
}
static void up_end(const char *trailers)
{
    CHECK(up.open);
    CHECK(!up.read_paused);
    up.cbs->on_end(up.owner, pt_str_c(trailers));
}

/* ------------------------------------------------------------ the world */

static pt_worker W;
static pt_generation *G;

static const char *CONFIG = "listen: [\"127.0.0.1:1\"]\n"
                            "access_log: {enabled: false}\n"
                            "upstreams:\n"
                            "  u: {targets: [\"127.0.0.1:9\"]}\n"
                            "routes:\n"
                            "  - match: {path_prefix: /}\n"
                            "    upstream: u\n"
                            "    max_buffered_body: 64\n"
                            "    plugins: [request_id: {}, request_id: {}, request_id: {}]\n";

/* Replaces the route's three plugins by the probes (and recomputes the
 * pipeline's state layout, which depends on the types). */
static void patch_pipeline(pt_pipeline *p)
{
    size_t off = 0;
    for (size_t i = 0; i < p->n; i++) {
        pt_plugin_instance *pi = (pt_plugin_instance *)p->v[i];
        pi->type = &probe_type;
        pi->conf = &probes[i];
        p->state_off[i] = off;
        off += 16;
    }
    p->state_size = off;
    p->has_request_body = p->has_response_body = true;
}

static void world_up(void)
{
    pt_errors errs = {0};
    pt_config *cfg = pt_config_load_string("test.yaml", CONFIG, strlen(CONFIG), &errs);
    if (!cfg) {
        for (size_t i = 0; i < errs.n; i++) fprintf(stderr, "%s\n", errs.msgs[i]);
        abort();
    }
    G = pt_generation_build(cfg, &errs);
    PT_ASSERT(G);
    patch_pipeline(&G->route_pipes[0]);
    memset(&W, 0, sizeof(W));
    W.loop = pt_loop_new();
    pt_loop_set_data(W.loop, &W);
    W.open_exchange = fake_open;
    W.arena_cache = pt_xcalloc(256, sizeof(pt_arena *)); /* server.c's ARENA_CACHE_MAX */
    W.wgen = pt_worker_gen_new(&W, G);
}

/* Runs the loop until deferred work (resumes) is done. */
static void stop_cb(pt_loop *l, pt_timer *t) { pt_loop_stop(l); }
static void spin(void)
{
    for (int i = 0; i < 4; i++) {
        pt_timer t = {0};
        pt_timer_start(W.loop, &t, 0, stop_cb, NULL);
        pt_loop_run(W.loop);
        pt_timer_stop(W.loop, &t);
    }
}

/* A fresh request on the fake codec: method, content length (-1 chunked,
 * 0 = no body). */
static void setup(probe_fn a, probe_fn b, probe_fn c)
{
    probe_fn fns[NPROBES] = {a, b, c};
    for (int i = 0; i < NPROBES; i++) {
        if (probes[i].ref) pt_txn_ref_release(probes[i].ref);
        probes[i] = (probe){.id = (char)('A' + i), .fn = fns[i]};
    }
    memset(plog, 0, sizeof(plog));
    logs_on_log = 0;
}

static pt_txn *start(const char *method, int64_t cl)
{
    memset(&ds, 0, sizeof(ds));
    memset(up_slots, 0, sizeof(up_slots));
    up_opened = 0;
    upp = &up_slots[0];
    ds.arena = pt_arena_new(4096);
    pt_conn_info ci = {.client_addr = PT_STR_LIT("192.0.2.1")};
    ds.txn = pt_txn_new(&W, ds.arena, &fake_ds_ops, &ds, &ci, pt_loop_wall_us(W.loop));
    pt_request *r = pt_arena_calloc(ds.arena, sizeof(*r));
    r->method = pt_method_from_str(pt_str_c(method));
    r->method_str = pt_str_c(method);
    r->scheme = PT_STR_LIT("http");
    r->authority = r->host = PT_STR_LIT("example.test");
    r->target = r->path = PT_STR_LIT("/x");
    r->version = 11;
    r->has_body = cl != 0;
    r->content_length = cl;
    pt_txn_start(ds.txn, r, 100);
    return ds.txn;
}

/* The client sends body bytes (only when the txn wants them). */
static void client_body(const char *s, bool last)
{
    CHECK(ds.txn && ds.want_body);
    pt_txn_on_request_body(ds.txn, s, strlen(s), last);
}

static void resume(probe *p, pt_plugin_result r)
{
    pt_txn *t = pt_txn_ref_get(p->ref);
    if (t) pt_txn_resume(t, p->paused_side, r);
    spin();
}

static bool has_header(const char *line) { return strstr(ds.headers, line) != NULL; }

/* -------------------------------------------------------------- behaviours */

static pt_plugin_result pause_resh_once(probe *p, int ph, pt_txn *t, pt_body *b)
{
    return ph == PH_RESH && p->calls[PH_RESH] == 1 ? pause_here(p, t, PT_SIDE_RESPONSE) : PT_PLUGIN_CONTINUE;
}
static pt_plugin_result set_x_after(probe *p, int ph, pt_txn *t, pt_body *b)
{
    if (ph == PH_RESH) pt_headers_set(&pt_txn_response(t)->headers, pt_txn_arena(t), PT_STR_LIT("X-After"), PT_STR_LIT("yes"));
    return PT_PLUGIN_CONTINUE;
}
static pt_plugin_result pause_reqb_first(probe *p, int ph, pt_txn *t, pt_body *b)
{
    return ph == PH_REQB && p->calls[PH_REQB] == 1 ? pause_here(p, t, PT_SIDE_REQUEST) : PT_PLUGIN_CONTINUE;
}
static pt_plugin_result pause_resb_first(probe *p, int ph, pt_txn *t, pt_body *b)
{
    return ph == PH_RESB && p->calls[PH_RESB] == 1 ? pause_here(p, t, PT_SIDE_RESPONSE) : PT_PLUGIN_CONTINUE;
}
static pt_plugin_result pause_reqh(probe *p, int ph, pt_txn *t, pt_body *b)
{
    return ph == PH_REQH ? pause_here(p, t, PT_SIDE_REQUEST) : PT_PLUGIN_CONTINUE;
}

/* ------------------------------------------------------------------- tests */

/* The reported bug: a response-header pause while request-body chunks keep
 * arriving must not skip the later response plugins. */
TEST(early_response_during_upload_keeps_response_plugins)
{
    setup(pause_resh_once, set_x_after, NULL);
    start("POST", 5000);
    CHECK(up.head_sent);
    client_body("aaaa", false);
    up_head(200, 2, NULL, NULL); /* early answer */
    CHECK(!ds.head_sent);        /* A paused the response side */
    for (int i = 0; i < 5; i++) client_body("bbbb", false); /* the upload goes on */
    CHECK_INT(probes[1].calls[PH_REQB], 6);
    CHECK(!ds.head_sent);
    resume(&probes[0], PT_PLUGIN_CONTINUE);
    CHECK(ds.head_sent);
    CHECK(has_header("X-After: yes"));
    up_data("ok");
    up_end("");
    CHECK(ds.ended);
    CHECK_INT(ds.finished, 1);
    CHECK(up.closed && !up.released); /* request body incomplete: never pooled */
}

/* Both sides paused at once, resumed in either order. */
static void both_sides(bool response_first)
{
    setup(pause_reqb_first, pause_resh_once, NULL);
    start("POST", 8);
    client_body("1234", false); /* A pauses the request side, holding it */
    CHECK(!ds.want_body);
    CHECK_INT(up.body_len, 0);
    up_head(200, 3, NULL, NULL); /* B pauses the response side */
    CHECK(!ds.head_sent);
    if (response_first) {
        resume(&probes[1], PT_PLUGIN_CONTINUE);
        CHECK(ds.head_sent);
        CHECK_INT(up.body_len, 0);
        resume(&probes[0], PT_PLUGIN_CONTINUE);
    } else {
        resume(&probes[0], PT_PLUGIN_CONTINUE);
        CHECK(!ds.head_sent);
        resume(&probes[1], PT_PLUGIN_CONTINUE);
        CHECK(ds.head_sent);
    }
    CHECK_INT(up.body_len, 4);
    CHECK(ds.want_body);
    client_body("5678", true);
    CHECK(up.ended);
    CHECK_STRN(up.body, up.body_len, "12345678");
    up_data("abc");
    up_end("");
    CHECK_STRN(ds.body, ds.body_len, "abc");
    CHECK_INT(ds.finished, 1);
    CHECK(up.released); /* complete both ways */
}
TEST(pauses_both_sides_response_resumed_first) { both_sides(true); }
TEST(pauses_both_sides_request_resumed_first) { both_sides(false); }

/* A bidirectional stream: response chunks flow while the request side is
 * paused, and each side keeps its order. */
TEST(bidi_stream_with_request_pause)
{
    setup(NULL, NULL, pause_reqb_first);
    start("POST", -1);
    client_body("req1-", false);
    up_head(200, -1, NULL, NULL);
    CHECK(ds.head_sent);
    up_data("res1-");
    up_data("res2-");
    CHECK_STRN(ds.body, ds.body_len, "res1-res2-");
    CHECK_INT(up.body_len, 0);
    resume(&probes[2], PT_PLUGIN_CONTINUE);
    client_body("req2-", false);
    up_data("res3-");
    client_body("req3", true);
    up_end("");
    CHECK_STRN(up.body, up.body_len, "req1-req2-req3");
    CHECK_STRN(ds.body, ds.body_len, "res1-res2-res3-");
    CHECK(ds.ended);
    CHECK_INT(ds.finished, 1);
}

/* The client goes away during a pause in each phase: finished once, the
 * upstream closed, the pausing plugin's reference reports the request gone,
 * and the late resume does nothing (ASan: the arena is freed). */
static void abort_during(int phase)
{
    probe_fn fns[] = {pause_reqh, pause_reqb_first, pause_resh_once, pause_resb_first};
    setup(NULL, fns[phase], NULL);
    start("POST", 8);
    if (phase >= PH_REQB) client_body("1234", phase != PH_REQB);
    if (phase >= PH_RESH) up_head(200, 4, NULL, NULL);
    if (phase == PH_RESB) {
        CHECK(ds.head_sent);
        up_data("abcd");
    }
    CHECK(probes[1].ref && pt_txn_ref_get(probes[1].ref));
    pt_txn_on_downstream_closed(ds.txn);
    CHECK_INT(ds.finished, 1);
    CHECK_INT(logs_on_log, 3);
    CHECK(pt_txn_ref_get(probes[1].ref) == NULL);
    if (phase >= PH_REQB) CHECK(up.closed && !up.released);
    resume(&probes[1], PT_PLUGIN_CONTINUE); /* the late async reply */
    CHECK_INT(ds.finished, 1);
}
TEST(client_abort_during_request_headers_pause) { abort_during(PH_REQH); }
TEST(client_abort_during_request_body_pause) { abort_during(PH_REQB); }
TEST(client_abort_during_response_headers_pause) { abort_during(PH_RESH); }
TEST(client_abort_during_response_body_pause) { abort_during(PH_RESB); }

/* Issue 12: a response-body pause on an empty body; the resume forwards the
 * end and finishes; nothing touches the txn afterwards (ASan). */
TEST(response_body_pause_on_empty_body_finishes_cleanly)
{
    setup(pause_resb_first, NULL, NULL);
    start("GET", 0);
    up_head(204, -1, NULL, NULL);
    CHECK(ds.head_sent);
    up_end("");
    CHECK(!ds.ended);
    resume(&probes[0], PT_PLUGIN_CONTINUE);
    CHECK(ds.ended);
    CHECK_INT(ds.finished, 1);
    CHECK(up.released);
}

/* A plugin resumes from inside the callback that pauses (a synchronous
 * answer of an async API): the request goes on. */
static pt_plugin_result pause_and_resume_now(probe *p, int ph, pt_txn *t, pt_body *b)
{
    if (ph != PH_REQH) return PT_PLUGIN_CONTINUE;
    pt_txn_resume(t, PT_SIDE_REQUEST, PT_PLUGIN_CONTINUE);
    return PT_PLUGIN_PAUSE;
}
TEST(resume_inside_the_pausing_callback)
{
    setup(pause_and_resume_now, NULL, NULL);
    start("GET", 0);
    CHECK(!up.head_sent);
    spin();
    CHECK(up.head_sent);
    up_head(200, 1, NULL, NULL);
    up_data("x");
    up_end("");
    CHECK_INT(ds.finished, 1);
}

/* Body rewriting: a response plugin upper-cases, another appends; the
 * header phase declares the change (length dropped, ETag weakened). */
static pt_plugin_result upper_body(probe *p, int ph, pt_txn *t, pt_body *b)
{
    if (ph == PH_RESH) pt_txn_body_will_change(t, PT_SIDE_RESPONSE);
    if (ph != PH_RESB) return PT_PLUGIN_CONTINUE;
    char tmp[256];
    size_t n = pt_body_len(b);
    for (size_t i = 0; i < n && i < sizeof(tmp); i++) {
        char c = pt_body_data(b)[i];
        tmp[i] = c >= 'a' && c <= 'z' ? (char)(c - 32) : c;
    }
    pt_body_replace(b, tmp, n);
    return PT_PLUGIN_CONTINUE;
}
static pt_plugin_result append_at_end(probe *p, int ph, pt_txn *t, pt_body *b)
{
    if (ph == PH_RESB && pt_body_last(b)) pt_body_append(b, "!", 1);
    return PT_PLUGIN_CONTINUE;
}
TEST(response_body_rewrite)
{
    setup(upper_body, append_at_end, NULL);
    start("GET", 0);
    up_head(200, 10, "ETag", "\"v1\"");
    CHECK_INT(ds.content_length, -1);
    CHECK(has_header("ETag: W/\"v1\""));
    up_data("hello ");
    up_data("world");
    up_end("");
    CHECK_STRN(ds.body, ds.body_len, "HELLO WORLD!");
    CHECK_INT(ds.finished, 1);
}

/* PT_PLUGIN_BUFFER: a plugin sees the whole body at the end; later plugins
 * see nothing before. Over max_buffered_body (64 in CONFIG): 413. */
static pt_plugin_result buffer_request(probe *p, int ph, pt_txn *t, pt_body *b)
{
    if (ph == PH_REQH) pt_txn_body_will_change(t, PT_SIDE_REQUEST);
    if (ph != PH_REQB) return PT_PLUGIN_CONTINUE;
    if (!pt_body_last(b)) return PT_PLUGIN_BUFFER;
    char out[128];
    int n = snprintf(out, sizeof(out), "[%zu:%.*s]", pt_body_len(b), (int)pt_body_len(b), pt_body_data(b));
    pt_body_replace(b, out, (size_t)n);
    return PT_PLUGIN_CONTINUE;
}
TEST(request_body_buffered_then_rewritten)
{
    setup(buffer_request, NULL, NULL);
    start("POST", 9);
    CHECK_INT(up.content_length, -1); /* declared in the header phase */
    client_body("abc", false);
    client_body("def", false);
    CHECK_INT(probes[1].calls[PH_REQB], 0);
    CHECK_INT(up.body_len, 0);
    client_body("ghi", true);
    CHECK_INT(probes[1].calls[PH_REQB], 1);
    CHECK_STRN(up.body, up.body_len, "[9:abcdefghi]");
    CHECK(up.ended);
    up_head(200, 0, NULL, NULL);
    up_end("");
    CHECK_INT(ds.finished, 1);
    CHECK(up.released);
}
TEST(request_body_buffer_over_cap_gets_413)
{
    setup(buffer_request, NULL, NULL);
    start("POST", 100);
    client_body("0123456789012345678901234567890123456789", false);
    CHECK(!ds.head_sent);
    client_body("0123456789012345678901234567890123456789", false);
    CHECK(ds.head_sent);
    CHECK_INT(ds.status, 413);
    CHECK(up.closed);
    CHECK_INT(ds.finished, 1);
}

/* pt_txn_hold_request_head: the upstream is contacted only when the whole
 * (rewritten) body has passed, and gets its exact length, not chunked. */
static pt_plugin_result hold_request(probe *p, int ph, pt_txn *t, pt_body *b)
{
    if (ph == PH_REQH) pt_txn_hold_request_head(t);
    return buffer_request(p, ph, t, b);
}
TEST(held_request_head_waits_for_the_body_and_gets_its_length)
{
    setup(hold_request, NULL, NULL);
    start("POST", -1);
    CHECK_INT(up_opened, 0);
    CHECK(ds.want_body); /* the body is read before any upstream */
    client_body("abc", false);
    client_body("def", false);
    CHECK_INT(up_opened, 0);
    client_body("ghi", true);
    CHECK_INT(up_opened, 1);
    CHECK(up.head_sent);
    CHECK_INT(up.content_length, 13);
    CHECK_STRN(up.body, up.body_len, "[9:abcdefghi]");
    CHECK(up.ended);
    CHECK_INT(up.ends, 1);
    up_head(200, 0, NULL, NULL);
    up_end("");
    CHECK_INT(ds.finished, 1);
    CHECK(up.released);
}
TEST(held_request_head_over_the_cap_is_413_without_an_upstream)
{
    setup(hold_request, NULL, NULL);
    start("POST", -1);
    client_body("0123456789012345678901234567890123456789", false);
    client_body("0123456789012345678901234567890123456789", false);
    CHECK_INT(ds.status, 413);
    CHECK_INT(up_opened, 0);
    CHECK_INT(ds.finished, 1);
}

TEST(held_request_body_is_sent_again_on_a_stale_pooled_connection)
{
    setup(hold_request, NULL, NULL);
    start("POST", 3);
    client_body("abc", true);
    fake_up *first = upp;
    CHECK_STRN(first->body, first->body_len, "[3:abc]");
    fake_reused = true;
    first->cbs->on_error(first->owner, PT_UERR_CLOSED, true);
    fake_reused = false;
    fake_up *second = upp;
    CHECK(second != first && second->head_sent);
    CHECK_INT(second->content_length, 7);
    CHECK_STRN(second->body, second->body_len, "[3:abc]");
    CHECK_INT(second->ends, 1);
    up_head(200, 0, NULL, NULL);
    up_end("");
    CHECK_INT(ds.finished, 1);
    CHECK_INT(ds.status, 200);
}

/* Bytes the codec had in flight when the request side paused are queued and
 * forwarded in order after the resume. */
TEST(request_bytes_during_pause_are_queued_in_order)
{
    setup(pause_reqb_first, NULL, NULL);
    start("POST", 9);
    client_body("abc", false);
    pt_txn_on_request_body(ds.txn, "def", 3, false); /* in flight: want_body was just turned off */
    pt_txn_on_request_body(ds.txn, "ghi", 3, true);
    CHECK_INT(up.body_len, 0);
    resume(&probes[0], PT_PLUGIN_CONTINUE);
    CHECK_STRN(up.body, up.body_len, "abcdefghi");
    CHECK(up.ended);
    CHECK_INT(probes[1].calls[PH_REQB], 2); /* "abc", then the queued "defghi" in one call */
    up_head(200, 0, NULL, NULL);
    up_end("");
    CHECK_INT(ds.finished, 1);
}

/* Trailers: visible and editable in the last call; forbidden fields never
 * leave. */
static pt_plugin_result edit_trailers(probe *p, int ph, pt_txn *t, pt_body *b)
{
    if (ph != PH_RESB || !pt_body_last(b)) return PT_PLUGIN_CONTINUE;
    pt_headers *tr = pt_txn_trailers(t, PT_SIDE_RESPONSE);
    CHECK(pt_headers_get(tr, "grpc-status") != NULL);
    pt_headers_add(tr, pt_txn_arena(t), PT_STR_LIT("x-added"), PT_STR_LIT("1"));
    pt_headers_add(tr, pt_txn_arena(t), PT_STR_LIT("content-length"), PT_STR_LIT("5"));
    return PT_PLUGIN_CONTINUE;
}
TEST(response_trailers_editable)
{
    setup(edit_trailers, NULL, NULL);
    start("GET", 0);
    up_head(200, -1, NULL, NULL);
    up_data("x");
    up_end("grpc-status: 0\r\nset-cookie: a=b\r\n");
    CHECK(strstr(ds.trailers, "grpc-status: 0\r\n") != NULL);
    CHECK(strstr(ds.trailers, "x-added: 1\r\n") != NULL);
    CHECK(strstr(ds.trailers, "set-cookie") == NULL);
    CHECK(strstr(ds.trailers, "content-length") == NULL);
}

/* The upstream fails after its head: taken back when the client saw
 * nothing (502), else the response is cut and marked aborted. */
static pt_txn_stats last_stats;
static void up_fail(void) { up.cbs->on_error(up.owner, PT_UERR_PROTOCOL, false); }
TEST(upstream_failure_after_head_retracted_to_502)
{
    setup(NULL, NULL, NULL);
    start("GET", 0);
    ds.can_retract = true;
    up_head(200, -1, NULL, NULL);
    up_data("part");
    up_fail();
    CHECK_INT(ds.status, 502);
    CHECK(!ds.aborted);
    CHECK(ds.ended);
    CHECK(strstr(ds.body, "problem") || strstr(ds.headers, "problem+json"));
    CHECK_INT(ds.finished, 1);
}

static void capture_log(pt_txn *t, const void *c, void *s) { pt_txn_get_stats(t, &last_stats); }
TEST(upstream_failure_after_visible_bytes_aborts)
{
    pt_plugin_type logger = probe_type;
    logger.on_log = capture_log;
    pt_plugin_instance *pi = (pt_plugin_instance *)G->route_pipes[0].v[2];
    pi->type = &logger;
    setup(NULL, NULL, NULL);
    start("GET", 0);
    ds.can_retract = false;
    up_head(200, -1, NULL, NULL);
    up_data("part");
    up_fail();
    CHECK(ds.aborted);
    CHECK_INT(ds.finished, 1);
    CHECK_INT(last_stats.status, 200);
    CHECK(last_stats.aborted);
    pi->type = &probe_type;
}

/* pt_txn_hold_response_head: a plugin that buffers and rewrites the whole
 * response body holds the head until the body passed, so the head carries
 * the exact length, and the plugin (or an upstream failure, or the buffer
 * cap) can still answer instead of cutting a response. */
static bool hold_fail;
static pt_plugin_result hold_and_buffer(probe *p, int ph, pt_txn *t, pt_body *b)
{
    if (ph == PH_RESH) {
        if (pt_txn_response(t)->status == 200) {
            pt_txn_body_will_change(t, PT_SIDE_RESPONSE);
            pt_txn_hold_response_head(t);
        }
        return PT_PLUGIN_CONTINUE;
    }
    if (ph != PH_RESB || pt_txn_response(t)->status != 200) return PT_PLUGIN_CONTINUE;
    if (!pt_body_last(b)) return PT_PLUGIN_BUFFER;
    if (hold_fail) {
        pt_txn_respond_problem(t, 502, "bad upstream body");
        return PT_PLUGIN_RESPOND;
    }
    char out[128];
    int n = snprintf(out, sizeof(out), "<%.*s>", (int)pt_body_len(b), pt_body_data(b));
    pt_body_replace(b, out, (size_t)n);
    return PT_PLUGIN_CONTINUE;
}
TEST(held_head_goes_out_with_the_whole_body_and_its_length)
{
    hold_fail = false;
    setup(hold_and_buffer, NULL, NULL);
    start("GET", 0);
    up_head(200, 10, "ETag", "\"v1\"");
    CHECK(!ds.head_sent);
    up_data("hello ");
    up_data("world");
    CHECK(!ds.head_sent);
    up_end("");
    CHECK(ds.head_sent);
    CHECK_INT(ds.status, 200);
    CHECK_STRN(ds.body, ds.body_len, "<hello world>");
    CHECK_INT(ds.content_length, 13);
    CHECK(has_header("ETag: W/\"v1\""));
    CHECK_INT(ds.finished, 1);
}
TEST(held_head_lets_a_body_plugin_answer_502)
{
    hold_fail = true;
    setup(hold_and_buffer, NULL, NULL);
    start("GET", 0);
    up_head(200, -1, NULL, NULL);
    up_data("garbage");
    up_end("");
    hold_fail = false;
    CHECK_INT(ds.status, 502);
    CHECK(!ds.aborted);
    CHECK(has_header("problem+json"));
    CHECK(strstr(ds.body, "bad upstream body") != NULL);
    CHECK_INT(probes[1].calls[PH_RESH], 2); /* the response side ran again on the answer */
    CHECK(up.closed || up.released);
    CHECK_INT(ds.finished, 1);
}
TEST(held_head_upstream_failure_is_502_not_a_cut)
{
    hold_fail = false;
    setup(hold_and_buffer, NULL, NULL);
    start("GET", 0);
    ds.can_retract = false;
    up_head(200, 100, NULL, NULL);
    up_data("part");
    up_fail();
    CHECK_INT(ds.status, 502);
    CHECK(!ds.aborted);
    CHECK(ds.ended);
    CHECK_INT(ds.finished, 1);
}
TEST(held_head_over_the_buffer_cap_is_502)
{
    hold_fail = false;
    setup(hold_and_buffer, NULL, NULL);
    start("GET", 0);
    up_head(200, -1, NULL, NULL);
    up_data("0123456789012345678901234567890123456789");
    CHECK(!ds.head_sent);
    up_data("0123456789012345678901234567890123456789");
    CHECK_INT(ds.status, 502);
    CHECK(!ds.aborted);
    CHECK(strstr(ds.body, "buffer") != NULL);
    CHECK_INT(ds.finished, 1);
}

/* A local response (request-header plugin answers) goes through the
 * response-body plugins as one last chunk. */
static pt_plugin_result answer_locally(probe *p, int ph, pt_txn *t, pt_body *b)
{
    if (ph != PH_REQH) return PT_PLUGIN_CONTINUE;
    pt_txn_respond(t, 200, PT_STR_LIT("text/plain"), PT_STR_LIT("local body"));
    return PT_PLUGIN_RESPOND;
}
TEST(local_response_body_runs_response_body_plugins)
{
    setup(answer_locally, upper_body, NULL);
    start("GET", 0);
    CHECK(!up.head_sent);
    CHECK_STRN(ds.body, ds.body_len, "LOCAL BODY");
    CHECK_INT(ds.content_length, -1);
    CHECK(strstr(plog, "B:resb$") != NULL);
    CHECK_INT(ds.finished, 1);
}

/* A request-body plugin answers while the response side is paused in its
 * header phase: the local answer replaces the upstream's. */
static pt_plugin_result respond_in_body(probe *p, int ph, pt_txn *t, pt_body *b)
{
    if (ph != PH_REQB || p->calls[PH_REQB] != 2) return PT_PLUGIN_CONTINUE;
    pt_txn_respond(t, 403, PT_STR_NULL, PT_STR_LIT("no"));
    return PT_PLUGIN_RESPOND;
}
TEST(request_side_answer_replaces_paused_upstream_response)
{
    setup(respond_in_body, pause_resh_once, NULL);
    start("POST", 8);
    client_body("1234", false);
    up_head(200, 2, NULL, NULL);
    CHECK(!ds.head_sent);
    client_body("5678", true);
    CHECK(ds.head_sent);
    CHECK_INT(ds.status, 403);
    CHECK(up.closed);
    CHECK_INT(ds.finished, 1);
    resume(&probes[1], PT_PLUGIN_CONTINUE); /* stale: the request is over */
    CHECK_INT(ds.finished, 1);
}

/* Downstream backpressure pauses upstream reading; a plugin pause and a
 * backpressure pause do not undo each other. */
TEST(backpressure_and_pause_do_not_undo_each_other)
{
    setup(pause_resb_first, NULL, NULL);
    start("GET", 0);
    up_head(200, -1, NULL, NULL);
    ds.high = true;
    up_data("one"); /* paused by the plugin */
    CHECK(up.read_paused);
    resume(&probes[0], PT_PLUGIN_CONTINUE); /* forwarded; the codec is full */
    CHECK_STRN(ds.body, ds.body_len, "one");
    CHECK(up.read_paused);
    ds.high = false;
    pt_txn_on_downstream_writable(ds.txn);
    CHECK(!up.read_paused);
    up_end("");
    CHECK_INT(ds.finished, 1);
}

/* --------------------------------------------------------------- generators */

typedef struct {
    int proceeds;
    int stops;
    bool stop_complete;
    int next;         /* next chunk to write */
    int total;        /* chunks in all */
    bool async;       /* write from the test instead of from proceed */
} gen_state;
static gen_state gs;

static void gen_write_some(pt_txn *t)
{
    char buf[16];
    while (gs.next < gs.total) {
        snprintf(buf, sizeof(buf), "c%d-", gs.next);
        bool last = gs.next + 1 == gs.total;
        gs.next++;
        if (!pt_txn_stream_write(t, buf, strlen(buf), last)) return;
    }
}
static void gen_proceed(pt_txn *t, void *data)
{
    gs.proceeds++;
    if (!gs.async) gen_write_some(t);
}
static void gen_stop(pt_txn *t, void *data, bool complete)
{
    gs.stops++;
    gs.stop_complete = complete;
}
static const pt_generator test_gen = {gen_proceed, gen_stop};

static pt_plugin_result answer_streamed(probe *p, int ph, pt_txn *t, pt_body *b)
{
    if (ph != PH_REQH) return PT_PLUGIN_CONTINUE;
    pt_txn_respond_stream(t, 200, PT_STR_LIT("text/plain"), -1, &test_gen, NULL);
    return PT_PLUGIN_RESPOND;
}

TEST(generator_streams_with_backpressure_through_body_plugins)
{
    memset(&gs, 0, sizeof(gs));
    gs.total = 6;
    setup(answer_streamed, upper_body, NULL);
    start("GET", 0);
    CHECK(ds.head_sent);
    CHECK_INT(ds.content_length, -1);
    CHECK_INT(gs.proceeds, 0); /* pulled from the loop, not inside the head */
    ds.high = true;            /* the client reads slowly */
    spin();
    CHECK_INT(gs.proceeds, 1);
    CHECK_STRN(ds.body, ds.body_len, "C0-"); /* one write, then "wait" */
    spin();
    CHECK_INT(gs.proceeds, 1); /* nobody said writable */
    ds.high = false;
    pt_txn_on_downstream_writable(ds.txn);
    spin();
    CHECK_STRN(ds.body, ds.body_len, "C0-C1-C2-C3-C4-C5-");
    CHECK(ds.ended);
    CHECK_INT(ds.finished, 1);
    CHECK_INT(gs.stops, 1);
    CHECK(gs.stop_complete);
}

TEST(generator_async_writes_and_client_abort_stops_it_once)
{
    memset(&gs, 0, sizeof(gs));
    gs.total = 100;
    gs.async = true;
    setup(answer_streamed, NULL, NULL);
    start("GET", 0);
    spin();
    CHECK_INT(gs.proceeds, 1);
    pt_txn_ref *ref = pt_txn_ref_new(ds.txn);
    CHECK(pt_txn_stream_write(pt_txn_ref_get(ref), "late ", 5, false)); /* from "an async callback" */
    CHECK_STRN(ds.body, ds.body_len, "late ");
    pt_txn_on_downstream_closed(ds.txn);
    CHECK_INT(gs.stops, 1);
    CHECK(!gs.stop_complete);
    CHECK(pt_txn_ref_get(ref) == NULL); /* the generator's next write has nowhere to go */
    pt_txn_ref_release(ref);
    spin();
    CHECK_INT(gs.stops, 1);
}

static pt_plugin_result replace_response(probe *p, int ph, pt_txn *t, pt_body *b)
{
    if (ph != PH_RESH) return PT_PLUGIN_CONTINUE;
    pt_txn_respond(t, 403, PT_STR_NULL, PT_STR_LIT("no"));
    return PT_PLUGIN_RESPOND;
}
TEST(generator_replaced_before_streaming_is_stopped)
{
    memset(&gs, 0, sizeof(gs));
    gs.total = 3;
    setup(answer_streamed, replace_response, NULL);
    start("GET", 0);
    CHECK_INT(ds.status, 403);
    CHECK_INT(gs.stops, 1);
    CHECK(!gs.stop_complete);
    CHECK_INT(gs.proceeds, 0);
    CHECK_STRN(ds.body, ds.body_len, "no");
    CHECK_INT(ds.finished, 1);
}

/* A response-header plugin that replaces the response: the response side
 * starts over, so earlier plugins see the response that is sent. */
static int statuses_seen[8], nseen;
static pt_plugin_result record_status(probe *p, int ph, pt_txn *t, pt_body *b)
{
    if (ph == PH_RESH && nseen < 8) statuses_seen[nseen++] = pt_txn_response(t)->status;
    return PT_PLUGIN_CONTINUE;
}
static pt_plugin_result replace_200_once(probe *p, int ph, pt_txn *t, pt_body *b)
{
    if (ph != PH_RESH || pt_txn_response(t)->status != 200) return PT_PLUGIN_CONTINUE;
    pt_txn_respond(t, 403, PT_STR_NULL, PT_STR_LIT("no"));
    return PT_PLUGIN_RESPOND;
}
TEST(replaced_response_runs_the_response_side_again)
{
    nseen = 0;
    setup(record_status, replace_200_once, NULL);
    start("GET", 0);
    up_head(200, 2, NULL, NULL);
    CHECK(up.closed);
    CHECK_INT(nseen, 2);
    CHECK_INT(statuses_seen[0], 200);
    CHECK_INT(statuses_seen[1], 403);
    CHECK_INT(ds.status, 403);
    CHECK_STRN(ds.body, ds.body_len, "no");
    CHECK_INT(ds.finished, 1);
}

static pt_plugin_result always_replace(probe *p, int ph, pt_txn *t, pt_body *b)
{
    if (ph != PH_RESH) return PT_PLUGIN_CONTINUE;
    pt_txn_respond(t, 500 + p->calls[PH_RESH], PT_STR_NULL, PT_STR_LIT("x"));
    return PT_PLUGIN_RESPOND;
}
TEST(replacing_plugins_cannot_loop)
{
    setup(always_replace, NULL, NULL);
    start("GET", 0);
    up_head(200, 2, NULL, NULL);
    CHECK(ds.head_sent);
    CHECK_INT(probes[0].calls[PH_RESH], 4); /* the first pass and 3 restarts */
    CHECK_INT(ds.status, 504);
    CHECK_INT(ds.finished, 1);
}

/* ------------------------------------------------------ internal HTTP client */

static pt_http_result got;
static int got_calls;
static char got_body[256];
static void on_fetched(void *data, const pt_http_result *r)
{
    got = *r;
    got_calls++;
    snprintf(got_body, sizeof(got_body), "%.*s", (int)r->body.n, r->body.p ? r->body.p : "");
    got.headers = NULL;
    got.body = PT_STR_NULL;
}

static pt_http_request fetch_req(void)
{
    return (pt_http_request){
        .upstream = &G->cfg->upstreams[0],
        .method = PT_STR_LIT("GET"),
        .target = PT_STR_LIT("/verify?x=1"),
    };
}

static void reset_fetch(void)
{
    memset(up_slots, 0, sizeof(up_slots));
    up_opened = 0;
    upp = &up_slots[0];
    memset(&got, 0, sizeof(got));
    got_calls = 0;
}

TEST(http_fetch_delivers_response_later_and_pools_the_connection)
{
    reset_fetch();
    pt_http_request req = fetch_req();
    pt_http_call *c = pt_http_fetch(W.loop, &req, on_fetched, NULL);
    CHECK(c != NULL);
    CHECK(up.head_sent);
    CHECK(strncmp(up.head, "GET /verify?x=1\n", 16) == 0);
    up_head(200, 2, "X-User", "bob");
    up_data("hi");
    up_end("");
    CHECK_INT(got_calls, 0); /* never inside the exchange's callback */
    spin();
    CHECK_INT(got_calls, 1);
    CHECK_INT(got.error, PT_HTTP_OK);
    CHECK_INT(got.status, 200);
    CHECK_STRN(got_body, strlen(got_body), "hi");
    CHECK(up.released && !up.closed);
}

TEST(http_fetch_body_over_cap_fails_and_closes)
{
    reset_fetch();
    pt_http_request req = fetch_req();
    req.max_body = 4;
    pt_http_fetch(W.loop, &req, on_fetched, NULL);
    up_head(200, 5, NULL, NULL);
    up.cbs->on_body(up.owner, "hello", 5);
    spin();
    CHECK_INT(got_calls, 1);
    CHECK_INT(got.error, PT_HTTP_ERR_TOO_LARGE);
    CHECK(up.closed && !up.released);
}

TEST(http_fetch_times_out)
{
    reset_fetch();
    pt_http_request req = fetch_req();
    req.timeout_ms = 1;
    pt_http_fetch(W.loop, &req, on_fetched, NULL);
    for (int i = 0; i < 50 && !got_calls; i++) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
        spin();
    }
    CHECK_INT(got_calls, 1);
    CHECK_INT(got.error, PT_HTTP_ERR_TIMEOUT);
    CHECK(up.closed);
}

TEST(http_fetch_cancelled_before_delivery_never_calls_back)
{
    reset_fetch();
    pt_http_request req = fetch_req();
    pt_http_call *c = pt_http_fetch(W.loop, &req, on_fetched, NULL);
    up_head(204, -1, NULL, NULL);
    up_end(""); /* decided, delivery queued */
    pt_http_cancel(c);
    spin();
    CHECK_INT(got_calls, 0);
}

TEST(http_fetch_post_body_and_headers)
{
    reset_fetch();
    pt_http_request req = fetch_req();
    pt_headers h = {0};
    pt_arena *a = pt_arena_new(1024);
    pt_headers_add(&h, a, PT_STR_LIT("Authorization"), PT_STR_LIT("Bearer t"));
    pt_headers_add(&h, a, PT_STR_LIT("Connection"), PT_STR_LIT("close")); /* hop-by-hop: dropped */
    req.method = PT_STR_LIT("POST");
    req.headers = &h;
    req.body = PT_STR_LIT("token=abc");
    pt_http_fetch(W.loop, &req, on_fetched, NULL);
    pt_arena_free(a); /* the call copied what it needs */
    CHECK(strstr(up.head, "Authorization: Bearer t\n") != NULL);
    CHECK(strstr(up.head, "Connection") == NULL);
    CHECK_INT(up.content_length, 9);
    CHECK_STRN(up.body, up.body_len, "token=abc");
    CHECK(up.ended);
    up_head(200, 0, NULL, NULL);
    up_end("");
    spin();
    CHECK_INT(got.status, 200);
}

/* A sub-request carries the request id and dies with its request. */
static pt_plugin_result subrequest_and_pause(probe *p, int ph, pt_txn *t, pt_body *b)
{
    if (ph != PH_REQH) return PT_PLUGIN_CONTINUE;
    pt_txn_set_request_id(t, PT_STR_LIT("rid-42"));
    pt_http_request req = fetch_req();
    CHECK(pt_txn_subrequest(t, &req, on_fetched, NULL) != NULL);
    return pause_here(p, t, PT_SIDE_REQUEST);
}
TEST(subrequest_carries_request_id_and_is_cancelled_with_its_request)
{
    reset_fetch();
    setup(subrequest_and_pause, NULL, NULL);
    start("GET", 0);
    fake_up *sub = upp;
    CHECK(sub->head_sent);
    CHECK(strstr(sub->head, "X-Request-Id: rid-42\n") != NULL);
    pt_txn_on_downstream_closed(ds.txn);
    CHECK_INT(ds.finished, 1);
    CHECK(sub->closed); /* the auth call was abandoned */
    spin();
    CHECK_INT(got_calls, 0);
}

static pt_plugin_result sub_then_resume(probe *p, int ph, pt_txn *t, pt_body *b);
static pt_txn_ref *sub_ref;
static void sub_done_resume(void *data, const pt_http_result *r)
{
    on_fetched(data, r);
    pt_txn *t = pt_txn_ref_get(sub_ref);
    if (t) pt_txn_resume(t, PT_SIDE_REQUEST, r->status == 200 ? PT_PLUGIN_CONTINUE : PT_PLUGIN_RESPOND);
}
static pt_plugin_result sub_then_resume(probe *p, int ph, pt_txn *t, pt_body *b)
{
    if (ph != PH_REQH) return PT_PLUGIN_CONTINUE;
    pt_http_request req = fetch_req();
    sub_ref = pt_txn_ref_new(t);
    pt_txn_subrequest(t, &req, sub_done_resume, NULL);
    return PT_PLUGIN_PAUSE;
}
TEST(subrequest_result_resumes_the_request)
{
    reset_fetch();
    setup(sub_then_resume, NULL, NULL);
    start("GET", 0);
    fake_up *sub = upp;
    up_head(200, 0, NULL, NULL);
    up_end("");
    CHECK(sub->released);
    spin(); /* the result, then the resume */
    CHECK_INT(got_calls, 1);
    CHECK(upp != sub && up.head_sent); /* the proxied request went upstream */
    up_head(200, 1, NULL, NULL);
    up_data("k");
    up_end("");
    CHECK_INT(ds.finished, 1);
    pt_txn_ref_release(sub_ref);
}

/* A reference taken once the request is over (in on_log, or a generator's
 * stop) is born dead: it never hands out the finished txn. */
static pt_txn_ref *log_ref;
static void ref_in_log(pt_txn *t, const void *c, void *s) { log_ref = pt_txn_ref_new(t); }
TEST(ref_taken_in_on_log_reports_the_request_gone)
{
    pt_plugin_type logger = probe_type;
    logger.on_log = ref_in_log;
    pt_plugin_instance *pi = (pt_plugin_instance *)G->route_pipes[0].v[2];
    pi->type = &logger;
    setup(NULL, NULL, NULL);
    start("GET", 0);
    up_head(200, 0, NULL, NULL);
    up_end("");
    CHECK_INT(ds.finished, 1);
    pi->type = &probe_type;
    CHECK(log_ref != NULL && pt_txn_ref_get(log_ref) == NULL);
    pt_txn_ref_release(log_ref);
}

/* A paused response phase replaced by an error: the pausing plugin is told
 * its pause was dropped, and the replacement's own pause works. */
static pt_plugin_result pause_every_resh(probe *p, int ph, pt_txn *t, pt_body *b)
{
    return ph == PH_RESH ? pause_here(p, t, PT_SIDE_RESPONSE) : PT_PLUGIN_CONTINUE;
}
TEST(dropped_pause_is_reported_to_its_plugin)
{
    pauses_cancelled = 0;
    setup(pause_every_resh, NULL, NULL);
    start("GET", 0);
    up_head(200, -1, NULL, NULL); /* paused on the upstream's 200 */
    up.cbs->on_error(up.owner, PT_UERR_READ_TIMEOUT, false);
    CHECK_INT(pauses_cancelled, 1);
    CHECK_INT(probes[0].calls[PH_RESH], 2); /* paused again, on the 504 */
    CHECK(!ds.head_sent);
    resume(&probes[0], PT_PLUGIN_CONTINUE);
    CHECK_INT(ds.status, 504);
    CHECK_INT(ds.finished, 1);
    CHECK_INT(pauses_cancelled, 1);
}

TEST(client_abort_during_pause_reports_it)
{
    pauses_cancelled = 0;
    setup(pause_reqh, NULL, NULL);
    start("GET", 0);
    pt_txn_on_downstream_closed(ds.txn);
    CHECK_INT(pauses_cancelled, 1);
    CHECK_INT(ds.finished, 1);
}

/* A stale pooled connection fails while the (empty) body's end is held by
 * a paused request-body plugin: the retry's exchange must get the end once,
 * from the resume (it used to get it twice: a desync found by the black-box
 * fuzzer). */
TEST(retry_while_body_end_is_held_sends_one_end)
{
    setup(pause_reqb_first, NULL, NULL);
    start("DELETE", -1);
    fake_up *first = upp;
    client_body("", true); /* the end, held by A */
    CHECK(!first->ended);
    fake_reused = true;
    first->cbs->on_error(first->owner, PT_UERR_CLOSED, true);
    fake_reused = false;
    fake_up *second = upp;
    CHECK(second != first && second->head_sent);
    CHECK_INT(second->ends, 0);
    resume(&probes[0], PT_PLUGIN_CONTINUE);
    CHECK_INT(second->ends, 1);
    up_head(204, -1, NULL, NULL);
    up_end("");
    CHECK_INT(second->ends, 1);
    CHECK(second->released);
    CHECK_INT(ds.finished, 1);
}

/* ------------------------------------------------------------- retries */

/* Gives the route a retry policy for one test (restored by the caller):
 * POST retried on 503 and resets, no backoff wait (a 0 ms timer). */
static pt_retry_policy retry_on(void)
{
    pt_retry_policy old = G->cfg->routes[0].retry;
    G->cfg->routes[0].retry = (pt_retry_policy){
        .configured = true, .attempts = 3, .on = PT_RETRY_ON_RESET, .all_methods = true, .body_buffer = 1024,
    };
    G->cfg->routes[0].retry.on_status[0] = 1ull << 3; /* 503 */
    return old;
}

/* A listed 5xx is read and dropped (no plugin sees it, the exchange is
 * pooled after its end); the next attempt gets the kept body again. */
TEST(retry_503_is_discarded_and_the_body_resent)
{
    pt_retry_policy old = retry_on();
    setup(NULL, NULL, NULL);
    start("POST", 8);
    fake_up *first = upp;
    client_body("1234", false);
    client_body("5678", true);
    CHECK(first->ended);
    up_head(503, 4, NULL, NULL);
    CHECK_INT(probes[0].calls[PH_RESH], 0);
    up_data("busy");
    up_end("");
    CHECK(first->released);
    CHECK(!ds.head_sent);
    spin(); /* the backoff timer (0 ms) */
    fake_up *second = upp;
    CHECK(second != first && second->head_sent);
    CHECK_STRN(second->body, second->body_len, "12345678");
    CHECK_INT(second->ends, 1);
    up_head(200, 2, NULL, NULL);
    CHECK_INT(probes[0].calls[PH_RESH], 1);
    up_data("ok");
    up_end("");
    CHECK_INT(ds.status, 200);
    CHECK_STRN(ds.body, ds.body_len, "ok");
    CHECK_INT(ds.finished, 1);
    G->cfg->routes[0].retry = old;
}

/* Bytes a paused request-body plugin releases while the request waits for
 * its next attempt reach that attempt once, after the kept ones. */
TEST(retry_with_body_held_by_a_paused_plugin)
{
    pt_retry_policy old = retry_on();
    setup(NULL, pause_reqb_first, NULL);
    start("PUT", 8);
    fake_up *first = upp;
    client_body("1234", false); /* held by B */
    CHECK_INT(first->body_len, 0);
    first->cbs->on_error(first->owner, PT_UERR_CLOSED, true); /* a reset: retried */
    resume(&probes[1], PT_PLUGIN_CONTINUE); /* the held bytes go on (kept), the backoff fires */
    spin();
    fake_up *second = upp;
    CHECK(second != first && second->head_sent);
    CHECK_STRN(second->body, second->body_len, "1234");
    CHECK(ds.want_body);
    client_body("5678", true);
    CHECK_STRN(second->body, second->body_len, "12345678");
    CHECK_INT(second->ends, 1);
    up_head(204, -1, NULL, NULL);
    up_end("");
    CHECK_INT(ds.status, 204);
    CHECK_INT(ds.finished, 1);
    G->cfg->routes[0].retry = old;
}

/* Once more than body_buffer went upstream, a failure is not retried. */
TEST(retry_refused_when_the_body_was_not_kept)
{
    pt_retry_policy old = retry_on();
    G->cfg->routes[0].retry.body_buffer = 4;
    setup(NULL, NULL, NULL);
    start("POST", 8);
    client_body("1234", false);
    client_body("5678", true);
    up_head(503, 0, NULL, NULL);
    CHECK_INT(ds.status, 503); /* forwarded: the whole body could not be re-sent */
    up_end("");
    CHECK_INT(ds.finished, 1);
    CHECK_INT(up_opened, 1);
    G->cfg->routes[0].retry = old;
}

/* The exchange fails inside send_body (a stale pooled connection) and the
 * re-send starts at once, inside that call: it gets the head, the kept
 * bytes and later the rest, each once. */
TEST(retry_started_inside_send_body_sends_everything_once)
{
    pt_retry_policy old = retry_on();
    setup(NULL, NULL, NULL);
    start("PUT", 8);
    fake_up *first = upp;
    first->fail_send = true;
    client_body("1234", false);
    fake_up *second = upp;
    CHECK(second != first && first->closed && second->head_sent);
    CHECK_STRN(second->body, second->body_len, "1234");
    CHECK_INT(second->ends, 0);
    CHECK(ds.want_body);
    client_body("5678", true);
    CHECK_STRN(second->body, second->body_len, "12345678");
    CHECK_INT(second->ends, 1);
    up_head(200, 0, NULL, NULL);
    up_end("");
    CHECK_INT(ds.status, 200);
    CHECK_INT(ds.finished, 1);
    G->cfg->routes[0].retry = old;
}

/* Releases what the last test's probes still hold. */
__attribute__((destructor)) static void world_dtor(void)
{
    setup(NULL, NULL, NULL);
    while (W.narena_cache) pt_arena_free(W.arena_cache[--W.narena_cache]);
    free(W.arena_cache);
}

/* Built before the tests run (after the test registrations). */
__attribute__((constructor(200))) static void world_ctor(void) { world_up(); }

TEST_MAIN()
