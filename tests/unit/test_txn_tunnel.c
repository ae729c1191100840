/* test_txn_tunnel.c — tunnels in the transaction (proxy/txn_tunnel.c),
 * driven one event at a time by a fake codec and a scripted upstream, both
 * with tunnel ops: handshake checks, the 101 check, bytes both ways with
 * backpressure, every order of the two ends, errors, the idle timer, and a
 * response-header pause on the 101. The fake codec frees the request arena
 * when the txn says finished(): a txn touched after that is a
 * use-after-free that ASan reports (the re-entrancy rule). */
#include "testlib.h"

#include "core/loop.h"
#include "http/websocket.h"
#include "proxy/generation.h"
#include "plugin/plugin.h"
#include "proxy/txn.h"
#include "server/worker.h"
#include "upstream/exchange.h"

#define KEY "dGhlIHNhbXBsZSBub25jZQ=="

/* ------------------------------------------------------------------ probe */

static struct {
    int reqh, reqb, resh, resb;
    bool pause_resh;
    pt_txn_ref *ref;
} pr;

static pt_plugin_result p_reqh(pt_txn *t, const void *c, void *s) { pr.reqh++; return PT_PLUGIN_CONTINUE; }
static pt_plugin_result p_reqb(pt_txn *t, const void *c, void *s, pt_body *b) { pr.reqb++; return PT_PLUGIN_CONTINUE; }
static pt_plugin_result p_resh(pt_txn *t, const void *c, void *s)
{
    pr.resh++;
    pt_headers_set(&pt_txn_response(t)->headers, pt_txn_arena(t), PT_STR_LIT("X-Plugin"), PT_STR_LIT("yes"));
    if (pr.pause_resh) {
        pr.ref = pt_txn_ref_new(t);
        return PT_PLUGIN_PAUSE;
    }
    return PT_PLUGIN_CONTINUE;
}
static pt_plugin_result p_resb(pt_txn *t, const void *c, void *s, pt_body *b) { pr.resb++; return PT_PLUGIN_CONTINUE; }

static const pt_plugin_type probe_type = {
    .name = "probe",
    .on_request_headers = p_reqh,
    .on_request_body = p_reqb,
    .on_response_headers = p_resh,
    .on_response_body = p_resb,
};

/* ------------------------------------------------------------- fake codec */

static struct {
    pt_arena *arena;
    pt_txn *txn;
    int status;
    char headers[1024];
    bool tunnel;
    bool reading;
    bool shut;
    bool aborted;
    bool high;
    int finished;
    char out[256]; /* tunnel bytes to the client */
    size_t out_len;
    bool body_sent;
} ds;

static void ds_head(void *s, const pt_response *r)
{
    ds.status = r->status;
    ds.headers[0] = 0;
    for (uint32_t i = 0; i < r->headers.n; i++) {
        size_t n = strlen(ds.headers);
        snprintf(ds.headers + n, sizeof(ds.headers) - n, "%.*s: %.*s\n", (int)r->headers.v[i].name.n,
                 r->headers.v[i].name.p, (int)r->headers.v[i].value.n, r->headers.v[i].value.p);
    }
}
static bool ds_body(void *s, const char *d, size_t n) { ds.body_sent = true; return true; }
static void ds_end(void *s, pt_str tr) {}
static void ds_want(void *s, bool w) {}
static void ds_abort(void *s) { ds.aborted = true; }
static void ds_finished(void *s)
{
    ds.finished++;
    pt_arena_free(ds.arena); /* what a real codec may do at once */
    ds.arena = NULL;
    ds.txn = NULL;
}
static uint64_t ds_sent(void *s) { return ds.out_len; }
static void ds_tstart(void *s) { ds.tunnel = true; }
static bool ds_tsend(void *s, const char *d, size_t n)
{
    CHECK(ds.tunnel && !ds.shut);
    if (ds.out_len + n <= sizeof(ds.out)) memcpy(ds.out + ds.out_len, d, n);
    ds.out_len += n;
    return !ds.high;
}
static void ds_tread(void *s, bool w) { ds.reading = w; }
static void ds_tshut(void *s) { ds.shut = true; }

static const pt_downstream_ops fake_ds_ops = {
    .send_head = ds_head,
    .send_body = ds_body,
    .send_end = ds_end,
    .want_body = ds_want,
    .abort = ds_abort,
    .finished = ds_finished,
    .bytes_sent = ds_sent,
    .tunnel_start = ds_tstart,
    .tunnel_send = ds_tsend,
    .tunnel_read = ds_tread,
    .tunnel_shutdown = ds_tshut,
};

/* ---------------------------------------------------------- fake upstream */

static struct {
    bool open, closed, released;
    const pt_uconn_cbs *cbs;
    void *owner;
    pt_arena *arena;
    char upgrade[64];      /* req->upgrade when the head was sent */
    char key[64];          /* its Sec-WebSocket-Key */
    bool tunnel;
    const pt_tunnel_cbs *tcbs;
    void *towner;
    bool read_paused;
    bool shut;
    bool high;
    char in[256];          /* tunnel bytes to the upstream */
    size_t in_len;
} up;
static int opened;

static void up_attach(void *x, const pt_uconn_cbs *cbs, void *owner, pt_arena *a, const pt_upstream_conf *u,
                      const pt_h1_limits *l, uint64_t ms)
{
    up.cbs = cbs;
    up.owner = owner;
    up.arena = a;
}
static void up_send_head(void *x, const pt_request *r, pt_str target, pt_str host, const pt_headers *h, bool hb,
                         int64_t cl)
{
    snprintf(up.upgrade, sizeof(up.upgrade), "%.*s", (int)r->upgrade.n, r->upgrade.p ? r->upgrade.p : "");
    const pt_str *k = pt_headers_get(h, "Sec-WebSocket-Key");
    snprintf(up.key, sizeof(up.key), "%.*s", k ? (int)k->n : 0, k ? k->p : "");
}
static bool up_send_body(void *x, const char *d, size_t n) { return true; }
static void up_send_end(void *x, pt_str tr) {}
static void up_pause(void *x, bool p) { up.read_paused = p; }
static void up_release(void *x) { up.released = true; up.open = false; }
static void up_close(void *x) { up.closed = true; up.open = false; }
static bool up_reused(const void *x) { return false; }
static void up_tstart(void *x, const pt_tunnel_cbs *cbs, void *owner)
{
    up.tunnel = true;
    up.tcbs = cbs;
    up.towner = owner;
}
static bool up_tsend(void *x, const char *d, size_t n)
{
    CHECK(up.open && up.tunnel && !up.shut);
    if (up.in_len + n <= sizeof(up.in)) memcpy(up.in + up.in_len, d, n);
    up.in_len += n;
    return !up.high;
}
static void up_tshut(void *x) { up.shut = true; }

static const pt_upstream_exchange_ops fake_up_ops = {
    .attach = up_attach,
    .send_head = up_send_head,
    .send_body = up_send_body,
    .send_end = up_send_end,
    .pause_read = up_pause,
    .release = up_release,
    .close = up_close,
    .reused = up_reused,
    .tunnel_start = up_tstart,
    .tunnel_send = up_tsend,
    .tunnel_shutdown = up_tshut,
};

static void *fake_open(pt_worker *w, pt_upstream_rt *u, int idx, SSL_CTX *tls, const pt_upstream_exchange_ops **ops,
                       bool *fresh)
{
    memset(&up, 0, sizeof(up));
    up.open = true;
    opened++;
    *ops = &fake_up_ops;
    *fresh = false;
    return &up;
}

/* ------------------------------------------------------------- the world */

static pt_worker W;
static pt_generation *G;

static const char *CONFIG = "listen: [\"127.0.0.1:1\"]\n"
                            "access_log: {enabled: false}\n"
                            "upstreams:\n"
                            "  u: {targets: [\"127.0.0.1:9\"]}\n"
                            "routes:\n"
                            "  - match: {path_prefix: /}\n"
                            "    upstream: u\n"
                            "    tunnel_idle_timeout: 30ms\n"
                            "    upgrade: [websocket, raw]\n"
                            "    plugins: [request_id: {}]\n";

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
    pt_pipeline *p = &G->route_pipes[0];
    pt_plugin_instance *pi = (pt_plugin_instance *)p->v[0];
    pi->type = &probe_type;
    pi->conf = NULL;
    p->state_size = 0;
    p->has_request_body = p->has_response_body = true;
    memset(&W, 0, sizeof(W));
    W.loop = pt_loop_new();
    pt_loop_set_data(W.loop, &W);
    W.open_exchange = fake_open;
    W.wgen = pt_worker_gen_new(&W, G);
}

static void stop_cb(pt_loop *l, pt_timer *t) { pt_loop_stop(l); }
/* Runs the loop for about `ms` (deferred resumes, timers). */
static void spin_ms(uint64_t ms)
{
    pt_timer t = {0};
    pt_timer_start(W.loop, &t, ms, stop_cb, NULL);
    pt_loop_run(W.loop);
    pt_timer_stop(W.loop, &t);
}

/* A WebSocket handshake from an HTTP/1.1 (version 11) or HTTP/2 (20) client. */
static pt_txn *start(int version, const char *key, const char *upgrade)
{
    memset(&ds, 0, sizeof(ds));
    memset(&up, 0, sizeof(up));
    if (pr.ref) pt_txn_ref_release(pr.ref);
    memset(&pr, 0, sizeof(pr));
    opened = 0;
    ds.arena = pt_arena_new(4096);
    pt_conn_info ci = {.client_addr = PT_STR_LIT("192.0.2.1")};
    ds.txn = pt_txn_new(&W, ds.arena, &fake_ds_ops, &ds, &ci, pt_loop_wall_us(W.loop));
    pt_request *r = pt_arena_calloc(ds.arena, sizeof(*r));
    r->method = PT_METHOD_GET;
    r->method_str = PT_STR_LIT("GET");
    r->scheme = PT_STR_LIT("http");
    r->authority = r->host = PT_STR_LIT("example.test");
    r->target = r->path = PT_STR_LIT("/ws");
    r->version = (uint8_t)version;
    r->upgrade = pt_str_c(upgrade);
    r->connection_upgrade = version == 11;
    if (key) pt_headers_add(&r->headers, ds.arena, PT_STR_LIT("Sec-WebSocket-Key"), pt_str_c(key));
    pt_headers_add(&r->headers, ds.arena, PT_STR_LIT("Sec-WebSocket-Version"), PT_STR_LIT("13"));
    pt_txn_start(ds.txn, r, 100);
    return ds.txn;
}

/* The upstream answers 101 (accept for `key`, or a wrong one). */
static void up_101(const char *key, const char *upgrade)
{
    CHECK(up.open);
    pt_response *r = pt_arena_calloc(up.arena, sizeof(*r));
    r->status = 101;
    r->content_length = -1;
    r->upgrade = pt_str_c(upgrade);
    r->connection_upgrade = true;
    char acc[PT_WS_ACCEPT_LEN + 1];
    pt_ws_accept(pt_str_c(key), acc);
    pt_headers_add(&r->headers, up.arena, PT_STR_LIT("Sec-WebSocket-Accept"),
                   pt_arena_str(up.arena, pt_str_c(acc)));
    up.cbs->on_head(up.owner, r);
}

/* A websocket tunnel from an HTTP/1.1 client, established. */
static void open_tunnel(void)
{
    start(11, KEY, "websocket");
    CHECK_STR(up.upgrade, "websocket");
    up_101(KEY, "websocket");
    CHECK(ds.tunnel && up.tunnel);
    CHECK_INT(ds.status, 101);
    CHECK(ds.reading && !up.read_paused);
}

static void client_bytes(const char *s) { pt_txn_on_tunnel_data(ds.txn, s, strlen(s)); }
static void upstream_bytes(const char *s) { up.tcbs->on_data(up.towner, s, strlen(s)); }

/* ------------------------------------------------------------------ tests */

TEST(bytes_both_ways_plugins_never_see_them)
{
    open_tunnel();
    CHECK(strstr(ds.headers, "X-Plugin: yes") != NULL); /* response-header phase ran on the 101 */
    client_bytes("ping");
    upstream_bytes("pong");
    CHECK_STRN(up.in, up.in_len, "ping");
    CHECK_STRN(ds.out, ds.out_len, "pong");
    CHECK_INT(pr.reqb, 0);
    CHECK_INT(pr.resb, 0);
    CHECK(!ds.body_sent);
    pt_txn_on_downstream_closed(ds.txn);
}

TEST(client_ends_first_then_upstream)
{
    open_tunnel();
    pt_txn_on_tunnel_eof(ds.txn);
    CHECK(up.shut);                     /* the FIN goes on */
    upstream_bytes("late");             /* the other direction still flows */
    CHECK_STRN(ds.out, ds.out_len, "late");
    up.tcbs->on_shutdown(up.towner);    /* our FIN reached the upstream */
    CHECK_INT(ds.finished, 0);
    up.tcbs->on_eof(up.towner);         /* finishes inside the upstream's event */
    CHECK(ds.shut);
    CHECK_INT(ds.finished, 1);
    CHECK(up.closed && !up.released);   /* never pooled */
    CHECK(!ds.aborted);
}

TEST(upstream_ends_first_then_client)
{
    open_tunnel();
    up.tcbs->on_eof(up.towner);
    CHECK(ds.shut);
    client_bytes("last words");
    CHECK_STRN(up.in, up.in_len, "last words");
    pt_txn_on_tunnel_eof(ds.txn);
    CHECK(up.shut);
    CHECK_INT(ds.finished, 0);          /* waits for our FIN to reach the upstream */
    up.tcbs->on_shutdown(up.towner);
    CHECK_INT(ds.finished, 1);
    CHECK(up.closed && !ds.aborted);
}

TEST(client_gone_closes_upstream)
{
    open_tunnel();
    pt_txn_on_downstream_closed(ds.txn);
    CHECK_INT(ds.finished, 1);
    CHECK(up.closed && !up.released);
}

TEST(upstream_error_cuts_the_client)
{
    open_tunnel();
    up.tcbs->on_error(up.towner);
    CHECK(ds.aborted);
    CHECK_INT(ds.finished, 1);
    CHECK(up.closed);
}

TEST(backpressure_both_ways)
{
    open_tunnel();
    ds.high = true;
    upstream_bytes("a lot");
    CHECK(up.read_paused);              /* the client is slow: stop reading the upstream */
    ds.high = false;
    pt_txn_on_downstream_writable(ds.txn);
    CHECK(!up.read_paused);
    up.high = true;
    client_bytes("a lot too");
    CHECK(!ds.reading);                 /* the upstream is slow: stop reading the client */
    up.tcbs->on_writable(up.towner);
    CHECK(ds.reading);
    pt_txn_on_downstream_closed(ds.txn);
}

TEST(wrong_accept_is_502)
{
    start(11, KEY, "websocket");
    up_101("AAAAAAAAAAAAAAAAAAAAAA==", "websocket");
    CHECK_INT(ds.status, 502);
    CHECK(!ds.tunnel && up.closed);
    CHECK_INT(ds.finished, 1);
}

TEST(switch_to_unoffered_protocol_is_502)
{
    start(11, KEY, "websocket");
    up_101(KEY, "h2c");
    CHECK_INT(ds.status, 502);
    CHECK(!ds.tunnel);
}

TEST(refusal_passes_through)
{
    start(11, KEY, "websocket");
    pt_response *r = pt_arena_calloc(up.arena, sizeof(*r));
    r->status = 403;
    r->has_body = true;
    r->content_length = 2;
    up.cbs->on_head(up.owner, r);
    CHECK_INT(ds.status, 403);
    CHECK(!ds.tunnel && !up.tunnel);
    up.cbs->on_body(up.owner, "no", 2);
    up.cbs->on_end(up.owner, PT_STR_NULL);
    CHECK_INT(ds.finished, 1);
    CHECK(up.released); /* an ordinary exchange: back to the pool */
}

TEST(malformed_handshake_never_reaches_upstream)
{
    start(11, NULL, "websocket");
    CHECK_INT(ds.status, 400);
    CHECK_INT(opened, 0);
    CHECK_INT(pr.reqh, 1); /* the request phase ran first */
    CHECK_INT(ds.finished, 1);
}

TEST(unlisted_protocol_goes_as_plain_http)
{
    start(11, NULL, "h2c, foo");
    CHECK_STR(up.upgrade, "");
    CHECK_INT(opened, 1);
    pt_txn_on_downstream_closed(ds.txn);
}

TEST(generic_protocol_tunnel)
{
    start(11, NULL, "foo, raw");
    CHECK_STR(up.upgrade, "raw");
    pt_response *r = pt_arena_calloc(up.arena, sizeof(*r));
    r->status = 101;
    r->upgrade = PT_STR_LIT("raw");
    r->connection_upgrade = true;
    up.cbs->on_head(up.owner, r);
    CHECK(ds.tunnel && up.tunnel);
    pt_txn_on_downstream_closed(ds.txn);
}

TEST(h2_client_gets_a_generated_key_and_200)
{
    start(20, NULL, "websocket");
    CHECK(pt_ws_key_valid(pt_str_c(up.key)));
    up_101(up.key, "websocket");
    CHECK(ds.tunnel);
    CHECK_INT(ds.status, 101); /* the HTTP/2 codec sends it as :status 200 */
    CHECK(strstr(ds.headers, "Sec-WebSocket-Accept") == NULL);
    pt_txn_stats st;
    pt_txn_get_stats(ds.txn, &st);
    CHECK_INT(st.status, 200);
    pt_txn_on_downstream_closed(ds.txn);
}

TEST(response_header_pause_on_101)
{
    start(11, KEY, "websocket");
    pr.pause_resh = true;
    up_101(KEY, "websocket");
    CHECK(!ds.tunnel && up.read_paused);
    pt_txn *t = pt_txn_ref_get(pr.ref);
    CHECK(t != NULL);
    pt_txn_resume(t, PT_SIDE_RESPONSE, PT_PLUGIN_CONTINUE);
    spin_ms(1);
    CHECK(ds.tunnel && up.tunnel && !up.read_paused);
    client_bytes("after the pause");
    CHECK_STRN(up.in, up.in_len, "after the pause");
    pt_txn_on_downstream_closed(ds.txn);
    CHECK(pt_txn_ref_get(pr.ref) == NULL);
}

TEST(idle_timeout_ends_both_sides)
{
    open_tunnel();
    spin_ms(15);
    client_bytes("activity");
    spin_ms(20); /* 35 ms since the start, 20 since the last byte */
    CHECK_INT(ds.finished, 0);
    spin_ms(40);
    CHECK_INT(ds.finished, 1);
    CHECK(ds.shut && !ds.aborted);
    CHECK(up.closed);
}

__attribute__((destructor)) static void world_dtor(void)
{
    if (pr.ref) pt_txn_ref_release(pr.ref);
    pr.ref = NULL;
}

/* Built before the tests run (after the test registrations). */
__attribute__((constructor(200))) static void world_ctor(void) { world_up(); }

TEST_MAIN()
