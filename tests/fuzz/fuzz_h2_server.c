/* fuzz_h2_server.c — libFuzzer driver for the downstream HTTP/2 codec
 * (http/h2_server.c: nghttp2 server session, request validation of RFC 9113
 * §8, flood and rapid-reset limits, request/response trailers, body pacing,
 * flow control) on its real code paths: a worker with its loop, a
 * configuration generation, pt_txn, plugins, the router and the HTTP/1
 * upstream client. The client is one end of a socketpair; the codec gets
 * the other end, as a connection accepted on a plaintext listener
 * (downstream/conn.c, then h1_server.c sees the h2c preface and moves the
 * connection to h2_server.c).
 *
 * Input: byte 0 = options, the rest = what the client sends after the
 * connection preface (the driver writes the preface itself).
 *   bit 0     the preface and the first frames arrive in one read (the
 *             HTTP/1 codec hands them all to pt_h2_conn_start)
 *   bit 1     write frame by frame (by the 9-byte frame headers), running
 *             the loop between frames; else everything at once
 *   bit 2     the client never reads: its socket buffer is tiny, so the
 *             codec's output backs up (send stall, output-queue pause)
 *   bits 3-4  end: 0 half-close (client FIN) and let the codec finish;
 *             1 the client closes its socket; 2 graceful drain
 *             (pt_conns_drain, GOAWAY) then FIN; 3 pt_conns_close_all
 *   bits 5-6  before the end, move the loop clock forward 0 / 0.5 s /
 *             3 s / 40 s (pt_loop_advance_clock): delay plugin, slow-body
 *             408s, header and idle timeouts, upstream read timeouts fire
 *   bit 7     the worker is draining when the connection arrives
 *
 * Routes of the configuration below:
 *   /up...      a fake HTTP/1.1 upstream run by this driver on the same
 *               loop (127.0.0.1, ephemeral port, keep-alive pool). The
 *               path picks the answer (fake_response): /chunked (with
 *               trailers), /grpc, /close (close-delimited), /early (100,
 *               103, then 201), /nocontent, /notmod, /bad (conflicting
 *               lengths), /short (FIN mid-body), /big (300 KB), /hang (no
 *               answer), /reset (RST); given once the request body is in,
 *               or at once with "/now" in the path;
 *   /slowbody   the same upstream, body_timeout 200 ms, min_body_rate 10;
 *   /delay      delay plugin (request and response phases), then the fake
 *               upstream;
 *   /dead       127.0.0.1:1, connect refused: 502;
 *   /grpc       an h2c upstream on 127.0.0.1:1 (gRPC error answers);
 *   /big        a 100 KB direct response (beyond the 64 KiB stream window);
 *   /nobody 204, /deny ip_restriction 403, /get GET/HEAD only (405);
 *   anything else a small direct_response.
 *
 * Besides crashes, UB and leaks, the driver aborts when
 *   - a request reaching the fake upstream is one Portico's own HTTP/1
 *     parser rejects (the h2 -> HTTP/1.1 downgrade must stay strict);
 *   - after a run, with everything closed (the connection, the fake
 *     upstream's sockets, pooled upstream connections), the loop does not
 *     go quiet, a timer is still armed, a deferred call is queued, an h1 or
 *     h2 connection is still counted, a worker generation is still pinned,
 *     or the number of open sockets differs from the first run's.
 * Build: see tests/fuzz/run.sh (every src/ file but the CLI). */
#include <dirent.h>
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config/config.h"
#include "core/arena.h"
#include "core/buf.h"
#include "core/loop.h"
#include "http/h1.h"
#include "downstream/conn.h"
#include "downstream/h2_server.h"
#include "proxy/generation.h"
#include "server/connlimit.h"
#include "server/worker.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c) do { if (!(c)) { fprintf(stderr, "fuzz_h2_server: %s failed (line %d)\n", #c, __LINE__); abort(); } } while (0)

#define MAX_SETTLE_ITER 256   /* loop iterations per settle() */
#define BIG_BODY 100000     /* the /big direct response */
#define UP_BIG_BODY 300000  /* the fake upstream's /big answer */

/* ---------------------------------------------------------- fake upstream */

/* One accepted upstream connection. Requests are framed with Portico's own
 * codec (pt_h1_parse_request, pt_chunked_decode), so keep-alive reuse from
 * the pool works, and Portico must send what that strict parser accepts.
 * A request is answered according to its path (fake_response) once its
 * body is complete (read and dropped), or at once when the path contains
 * "/now" (an early answer while the client still sends).
 * Closes with SO_LINGER 0 (RST: no TIME_WAIT piles up over millions of
 * runs); a close-delimited answer ends with a FIN first. */
typedef struct fup {
    pt_io io;
    struct fup *next;
    pt_buf in, out;
    pt_arena *arena;
    int state;          /* F_HEAD, F_LENGTH, F_CHUNKED, F_DEAD */
    uint64_t remaining;
    char target[256];   /* of the request whose answer waits for its body */
    size_t target_len;
    bool answer_after_body;
    pt_chunked_decoder dec;
    bool fin_after;     /* shutdown(SHUT_WR) once the output is written */
} fup;

enum { F_HEAD, F_LENGTH, F_CHUNKED, F_DEAD };

static pt_worker *W;
static pt_io up_listener;
static fup *fups;
static char *big_response;
static size_t big_response_len;
static FILE *dump;             /* FUZZ_H2_DUMP=file: what the client receives (debugging) */
static unsigned long accepted; /* upstream connections accepted by the fake upstream */

static void fup_close(fup *f)
{
    for (fup **pp = &fups; *pp; pp = &(*pp)->next)
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    pt_io_stop(W->loop, &f->io);
    struct linger lg = {1, 0};
    setsockopt(f->io.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(f->io.fd);
    pt_buf_release(&f->in);
    pt_buf_release(&f->out);
    pt_arena_free(f->arena);
    free(f);
}

#define ANSWER(f, lit) pt_buf_append(&(f)->out, (lit), sizeof(lit) - 1)

/* Queues the answer for a request target; false: reset the connection. */
static bool fake_response(fup *f, pt_str target)
{
#define HAS(s) (memmem(target.p, target.n, (s), sizeof(s) - 1) != NULL)
    if (HAS("/hang")) { /* never answers: the upstream read timeout */
        f->state = F_DEAD;
        return true;
    }
    if (HAS("/reset")) return false;
    if (HAS("/chunked"))
        ANSWER(f, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n"
                  "Trailer: x-checksum\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: 42\r\n"
                  "grpc-status: 0\r\ncontent-length: 3\r\nx-empty:\r\n\r\n");
    else if (HAS("/grpc"))
        ANSWER(f, "HTTP/1.1 200 OK\r\nContent-Type: application/grpc\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "5\r\n\0\0\0\0\0\r\n0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n");
    else if (HAS("/close")) {
        ANSWER(f, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the connection closes");
        f->fin_after = true;
        f->state = F_DEAD;
    } else if (HAS("/early"))
        ANSWER(f, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                  "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok");
    else if (HAS("/nocontent"))
        ANSWER(f, "HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n");
    else if (HAS("/notmod"))
        ANSWER(f, "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\nETag: \"1\"\r\n\r\n");
    else if (HAS("/bad"))
        ANSWER(f, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello");
    else if (HAS("/short")) {
        ANSWER(f, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this much");
        f->fin_after = true;
        f->state = F_DEAD;
    } else if (HAS("/big"))
        pt_buf_append(&f->out, big_response, big_response_len);
    else
        ANSWER(f, "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nContent-Type: text/plain\r\nX-Up: 1\r\n"
                  "Connection: x-hop\r\nX-Hop: dropped\r\n\r\nhello world");
    return true;
#undef HAS
}

/* Frames the requests in f->in; false: close the connection. */
static bool fup_consume(fup *f)
{
    while (f->in.len && f->state != F_DEAD) {
        const char *p = pt_buf_head(&f->in);
        if (f->state == F_HEAD) {
            pt_arena_reset(f->arena);
            pt_request req;
            pt_h1_info info;
            pt_h1_error err;
            ssize_t r = pt_h1_parse_request(p, f->in.len, NULL, f->arena, &req, &info, &err);
            if (r == PT_AGAIN) return true;
            if (r < 0) { /* Portico must send what its own strict parser accepts */
                fprintf(stderr, "fuzz_h2_server: upstream got a bad request (%d %s):\n%.*s\n", err.status, err.detail,
                        (int)PT_MIN(f->in.len, 2048u), p);
                abort();
            }
            pt_buf_consume(&f->in, (size_t)r);
            if (info.body == PT_H1_BODY_LENGTH && info.content_length) {
                f->state = F_LENGTH;
                f->remaining = info.content_length;
            } else if (info.body == PT_H1_BODY_CHUNKED) {
                f->state = F_CHUNKED;
                pt_chunked_init(&f->dec);
            }
            bool now = memmem(req.target.p, req.target.n, "/now", 4) != NULL;
            if (f->state == F_HEAD || now) {
                if (!fake_response(f, req.target)) return false;
            } else {
                f->target_len = PT_MIN(req.target.n, sizeof(f->target));
                memcpy(f->target, req.target.p, f->target_len);
                f->answer_after_body = true;
            }
            continue;
        }
        bool body_done = false;
        if (f->state == F_LENGTH) {
            size_t k = (size_t)PT_MIN((uint64_t)f->in.len, f->remaining);
            pt_buf_consume(&f->in, k);
            f->remaining -= k;
            body_done = !f->remaining;
        } else {
            const char *d;
            size_t dl;
            pt_h1_error err;
            ssize_t used = pt_chunked_decode(&f->dec, p, f->in.len, &d, &dl, &err);
            REQUIRE(used >= 0); /* Portico frames its chunks correctly */
            pt_buf_consume(&f->in, (size_t)used);
            body_done = f->dec.done;
            if (!used && !body_done) break;
        }
        if (body_done) {
            f->state = F_HEAD;
            if (f->answer_after_body) {
                f->answer_after_body = false;
                if (!fake_response(f, pt_str_make(f->target, f->target_len))) return false;
            }
        }
    }
    if (f->state == F_DEAD) f->in.len = 0; /* read and drop the rest */
    if (!f->in.len) pt_buf_release(&f->in);
    return true;
}

static void fup_flush(fup *f)
{
    while (f->out.len) {
        ssize_t n = send(f->io.fd, pt_buf_head(&f->out), f->out.len, MSG_NOSIGNAL);
        if (n <= 0) break;
        pt_buf_consume(&f->out, (size_t)n);
    }
    if (!f->out.len) {
        pt_buf_release(&f->out);
        if (f->fin_after) {
            shutdown(f->io.fd, SHUT_WR);
            f->fin_after = false;
        }
    }
    pt_io_modify(W->loop, &f->io, EPOLLIN | EPOLLRDHUP | (f->out.len ? EPOLLOUT : 0));
}

static void fup_io(pt_loop *loop, pt_io *io, uint32_t events)
{
    fup *f = io->data;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        for (;;) {
            pt_buf_reserve(&f->in, 4096);
            ssize_t n = recv(f->io.fd, pt_buf_tail(&f->in), pt_buf_tailroom(&f->in), 0);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
                fup_close(f); /* Portico closed (or reset) its side */
                return;
            }
            if (n < 0) break;
            f->in.len += (uint32_t)n;
            if (!fup_consume(f)) {
                fup_close(f);
                return;
            }
        }
    }
    fup_flush(f);
}

static void on_up_accept(pt_loop *loop, pt_io *io, uint32_t events)
{
    for (;;) {
        int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        fup *f = calloc(1, sizeof(*f));
        REQUIRE(f);
        if (pt_io_start(loop, &f->io, fd, EPOLLIN | EPOLLRDHUP, fup_io, f) != PT_OK) {
            close(fd);
            free(f);
            continue;
        }
        f->arena = pt_arena_new(1024);
        f->next = fups;
        fups = f;
        accepted++;
    }
}

/* ------------------------------------------------------------------- setup */

static const char config_fmt[] =
    "workers: 1\n"
    "listen: [127.0.0.1:1]\n" /* never opened: the driver makes the connections */
    "access_log: {enabled: true}\n" /* lines are formatted; the log is never opened (no output) */
    "server_header: portico-fuzz\n"
    "via: true\n"
    "limits: {max_header_size: 2k, max_headers: 24, http2_max_concurrent_streams: 8, max_body_size: 64k,"
    " min_body_rate: 1k}\n"
    "timeouts: {header: 2s, body: 1s, idle: 30s, upstream_connect: 1s, upstream_read: 20s, upstream_write: 20s}\n"
    "plugins:\n"
    "  - request_id: {}\n"
    "  - headers: {response: {set: {X-Gateway: portico}}, request: {add: {X-Fuzz: '1'}}}\n"
    "upstreams:\n"
    "  fake: {targets: ['127.0.0.1:%d'], keepalive: 2}\n"
    "  dead: {targets: ['127.0.0.1:1']}\n"
    "  dead_h2: {targets: ['127.0.0.1:1'], protocol: h2c}\n"
    "routes:\n"
    "  - name: direct\n"
    "    plugins: [{direct_response: {status: 200, headers: {Content-Type: text/plain}, body: hello}}]\n"
    "  - name: up\n"
    "    match: {path_prefix: /up}\n"
    "    upstream: fake\n"
    "  - name: up-slow\n"
    "    match: {path_prefix: /slowbody}\n"
    "    upstream: fake\n"
    "    body_timeout: 200ms\n"
    "    min_body_rate: 10\n"
    "  - name: delay\n"
    "    match: {path_prefix: /delay}\n"
    "    upstream: fake\n"
    "    plugins: [{delay: {duration: 100ms}}, {delay: {duration: 100ms, phase: response}}]\n"
    "  - name: dead\n"
    "    match: {path_prefix: /dead}\n"
    "    upstream: dead\n"
    "  - name: grpc\n"
    "    match: {path_prefix: /grpc}\n"
    "    upstream: dead_h2\n"
    "  - name: big\n"
    "    match: {path: /big}\n"
    "    plugins: [{direct_response: {status: 200, body: '%s'}}]\n"
    "  - name: nobody\n"
    "    match: {path: /nobody}\n"
    "    plugins: [{direct_response: {status: 204}}]\n"
    "  - name: deny\n"
    "    match: {path_prefix: /deny}\n"
    "    plugins: [{ip_restriction: {deny: [127.0.0.0/8]}}, {direct_response: {status: 200}}]\n"
    "  - name: get-only\n"
    "    match: {path: /get, methods: [GET, HEAD]}\n"
    "    plugins: [{direct_response: {status: 200, body: got}}]\n";

#define ARENA_CACHE_MAX 256 /* as server.c: pt_worker_arena_put fills up to this */

/* Open sockets (what connections leak); `show` prints every open fd. Other
 * fds come and go outside the driver's control: the sanitizers start a
 * symbolizer (pipes) when libFuzzer first prints a new function. */
static int count_sockets(bool show)
{
    DIR *d = opendir("/proc/self/fd");
    REQUIRE(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[64], target[256];
        snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
        ssize_t k = readlink(path, target, sizeof(target) - 1);
        target[k > 0 ? k : 0] = '\0';
        n += strncmp(target, "socket:", 7) == 0;
        if (show) fprintf(stderr, "  fd %s -> %s\n", e->d_name, target);
    }
    closedir(d);
    return n;
}

/* The worker as server.c sets it up (pt_server_run + worker_gen_new),
 * without threads and listening sockets. Lives for the whole process. */
static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    REQUIRE(lfd >= 0 && bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(lfd, 128) == 0 &&
            getsockname(lfd, (struct sockaddr *)&sa, &sl) == 0);

    char *big_body = malloc(BIG_BODY + 1);
    for (size_t i = 0; i < BIG_BODY; i++) big_body[i] = (char)('a' + i % 26);
    big_body[BIG_BODY] = '\0';
    size_t cap = sizeof(config_fmt) + BIG_BODY + 16;
    char *text = malloc(cap);
    int len = snprintf(text, cap, config_fmt, ntohs(sa.sin_port), big_body);
    REQUIRE(len > 0 && (size_t)len < cap);
    free(big_body);
    /* the upstream's big answer: beyond the 64 KiB stream buffer (send_body
     * backpressure) and the client's windows */
    big_response = malloc(UP_BIG_BODY + 128);
    big_response_len = (size_t)sprintf(big_response, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", UP_BIG_BODY);
    memset(big_response + big_response_len, 'z', UP_BIG_BODY);
    big_response_len += UP_BIG_BODY;

    pt_errors errs = {0};
    pt_config *cfg = pt_config_load_string("fuzz_h2_server.yaml", text, (size_t)len, &errs);
    pt_generation *g = cfg ? pt_generation_build(cfg, &errs) : NULL;
    for (size_t i = 0; i < errs.n; i++) fprintf(stderr, "%s\n", errs.msgs[i]);
    REQUIRE(g);
    pt_errors_free(&errs);
    free(text);

    W = calloc(1, sizeof(*W));
    W->loop = pt_loop_new();
    REQUIRE(W->loop);
    pt_loop_set_data(W->loop, W);
    W->connlimit = pt_connlimit_new(g->cfg->nlisteners);
    W->arena_cache = calloc(ARENA_CACHE_MAX, sizeof(pt_arena *));
    pt_worker_gen *wg = calloc(1, sizeof(*wg));
    wg->gen = g;
    const pt_config *c = g->cfg;
    wg->upstreams = calloc(c->nupstreams, sizeof(*wg->upstreams));
    for (size_t i = 0; i < c->nupstreams; i++) {
        pt_upstream_rt *u = &wg->upstreams[i];
        const pt_upstream_conf *uc = &c->upstreams[i];
        u->conf = uc;
        u->current = calloc(uc->ntargets, sizeof(*u->current));
        u->pools = calloc(uc->ntargets, sizeof(*u->pools));
        for (size_t t = 0; t < uc->ntargets; t++) {
            u->total += uc->targets[t].weight;
            u->pools[t] = pt_pool_for(W, &uc->targets[t], g->up_tls ? g->up_tls[i] : NULL,
                                      uc->tls.sni ? uc->tls.sni : uc->targets[t].host);
        }
    }
    W->wgen = wg;
    REQUIRE(pt_io_start(W->loop, &up_listener, lfd, EPOLLIN, on_up_accept, NULL) == PT_OK);
    const char *dp = getenv("FUZZ_H2_DUMP");
    if (dp) dump = fopen(dp, "wb");
}

/* ---------------------------------------------------------------- running */

typedef struct {
    int fd;           /* the client's end */
    bool reads;       /* the client reads what the codec sends */
    bool write_closed;
} client;

static void client_drain(client *cl, size_t *got)
{
    if (!cl->reads || cl->fd < 0) return;
    char buf[65536];
    for (;;) {
        ssize_t n = recv(cl->fd, buf, sizeof(buf), 0);
        if (n <= 0) return;
        *got += (size_t)n;
        if (dump) fwrite(buf, 1, (size_t)n, dump);
    }
}

/* Runs the loop until nothing happens any more (or MAX_SETTLE_ITER). */
static bool settle_for(client *cl, int max_iter)
{
    for (int i = 0; i < max_iter; i++) {
        size_t got = 0;
        int n = pt_loop_run_once(W->loop, 0);
        client_drain(cl, &got);
        if (n == 0 && got == 0 && !pt_loop_has_deferred(W->loop)) return true;
    }
    return false;
}

static void settle(client *cl) { settle_for(cl, MAX_SETTLE_ITER); }

/* Writes all of p[0..n) unless the codec stops reading for good. */
static void client_write(client *cl, const uint8_t *p, size_t n)
{
    int stuck = 0;
    while (n && stuck < 8) {
        ssize_t k = send(cl->fd, p, n, MSG_NOSIGNAL);
        if (k > 0) {
            p += k;
            n -= (size_t)k;
            stuck = 0;
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return; /* the codec closed */
        settle(cl);
        stuck++;
    }
}

static int fd_baseline = -1;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!W) setup();
    if (size < 1) return 0;
    uint8_t opt = data[0];
    const uint8_t *in = data + 1;
    size_t n = size - 1;

    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    client cl = {.fd = sv[1], .reads = !(opt & 4)};
    if (opt & 4) {
        int small = 4096; /* unix sockets: the sender's buffer bounds what is queued */
        setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    }
    W->draining = (opt & 128) != 0;

    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(40000), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    REQUIRE(pt_connlimit_acquire(W->connlimit, 0, (struct sockaddr *)&peer, 0, 0));
    pt_conn_accept(W, sv[0], (struct sockaddr *)&peer, sizeof(peer), 0, NULL, false);
    client_write(&cl, (const uint8_t *)PT_H2_PREFACE, PT_H2_PREFACE_LEN);
    if ((opt & 2) || !(opt & 1)) settle(&cl);

    if (opt & 2) {
        size_t off = 0;
        while (off < n) {
            size_t k = n - off;
            if (k >= 9) {
                size_t flen = (size_t)in[off] << 16 | (size_t)in[off + 1] << 8 | in[off + 2];
                if (9 + flen < k) k = 9 + flen;
            }
            client_write(&cl, in + off, k);
            off += k;
            settle(&cl);
        }
    } else {
        client_write(&cl, in, n);
        settle(&cl);
    }

    static const uint64_t jumps[4] = {0, 500, 3000, 40000};
    uint64_t jump = jumps[(opt >> 5) & 3];
    if (jump) {
        /* in two steps: what the first timers start (retries, 408s) runs too */
        pt_loop_advance_clock(W->loop, jump / 2);
        settle(&cl);
        pt_loop_advance_clock(W->loop, jump - jump / 2);
        settle(&cl);
    }

    switch ((opt >> 3) & 3) {
    case 0:
        shutdown(cl.fd, SHUT_WR);
        settle(&cl);
        break;
    case 1:
        close(cl.fd);
        cl.fd = -1;
        settle(&cl);
        break;
    case 2:
        pt_conns_drain(W);
        settle(&cl);
        shutdown(cl.fd, SHUT_WR);
        settle(&cl);
        break;
    default:
        break;
    }

    /* Tear down: whatever is still open is closed, as at the end of a drain.
     * With no client connection left the loop must go quiet (else
     * something spins); the fake upstream may still accept connections
     * Portico made and dropped, which end at once. */
    pt_conns_close_all(W);
    while (fups) fup_close(fups);
    settle(&cl);
    pt_pools_close_all(W);
    if (cl.fd >= 0) close(cl.fd);
    cl.fd = -1;
    REQUIRE(settle_for(&cl, 4096));
    REQUIRE(fups == NULL); /* no upstream connection of Portico is left open */
    W->draining = false;

    REQUIRE(pt_conns_count(W, NULL) == 0);
    REQUIRE(W->nconns == 0);
    REQUIRE(W->dead_conns == NULL && W->dead_conns_old == NULL); /* closed ones were freed */
    REQUIRE(!pt_loop_has_deferred(W->loop));
    REQUIRE(pt_loop_timer_count(W->loop) == 0);
    REQUIRE(W->wgen->users == 0);
    int fds = count_sockets(false);
    if (fd_baseline < 0) fd_baseline = fds;
    for (int i = 0; i < 50 && fds != fd_baseline; i++) { /* the kernel may still be delivering a close */
        usleep(1000);
        REQUIRE(settle_for(&cl, 4096));
        while (fups) fup_close(fups);
        fds = count_sockets(false);
    }
    if (fds != fd_baseline) {
        fprintf(stderr, "fuzz_h2_server: %d open sockets, %d after the first run:\n", fds, fd_baseline);
        count_sockets(true);
        abort();
    }
    if (dump) {
        fflush(dump);
        fprintf(stderr, "fuzz_h2_server: %lu upstream connections so far\n", accepted);
    }
    return 0;
}
