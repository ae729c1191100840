/* redis.c — one Redis connection on a pt_loop (see redis.h for the model).
 *
 * Why not hiredis' async context: in 0.14 it has no timeouts, resolves
 * names with getaddrinfo (blocking), and calls every callback from inside
 * redisAsyncFree/handleRead, where a callback that sends or cancels is
 * re-entrant. Here the socket, the write buffer, the FIFO of commands and
 * the timers are ours; hiredis parses replies (redisReader), so the reply
 * tree plugins read is hiredis' redisReply. Commands are encoded as RESP
 * arrays of bulk strings directly into the write buffer. */
#include "net/redis.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define READ_CHUNK 16384
#define READS_PER_EVENT 16

enum { CMD_USER, CMD_HANDSHAKE };

/* A command written (or about to be) to the server, waiting for its reply in
 * the FIFO. `call` is NULL for the handshake and once its call is over
 * (timed out, cancelled): the reply is then read and dropped. */
typedef struct wcmd {
    struct wcmd *next;
    pt_redis_call *call;
    uint8_t kind;
} wcmd;

struct pt_redis_call {
    pt_redis_conn *conn;   /* NULL once the connection was freed (CLOSED pending) */
    pt_loop *loop;
    wcmd *cmd;             /* its command in the FIFO, or NULL */
    pt_redis_done_fn done;
    void *data;
    pt_timer timer;        /* command_timeout */
    pt_defer closed;       /* delivers PT_REDIS_ERR_CLOSED after pt_redis_conn_free */
    /* eval: the script and the RESP tail "nkeys key... arg..." kept for
     * the EVAL retry after NOSCRIPT */
    const pt_redis_script *script;
    int tail_argc;
    char *tail;
    size_t tail_len;
    bool retried;
};

struct pt_redis_conn {
    pt_loop *loop;
    pt_redis_opts opts;    /* strings owned (copies) */
    pt_redis_state state;
    pt_io io;
    int fd;                /* -1 when no socket */
    bool connected;        /* the socket's connect completed */
    uint32_t handshake_left; /* AUTH/SELECT replies still expected */
    pt_timer connect_timer, backoff_timer, stall_timer;
    pt_defer flush;
    char *out;             /* RESP bytes not yet written: out[out_off, out_len) */
    size_t out_off, out_len, out_cap;
    wcmd *head, *tail;
    uint32_t nfifo;
    redisReader *reader;
    uint64_t epoch;        /* bumped by every connection failure */
    uint64_t backoff_ms;   /* the next reconnect delay (before jitter) */
    uint64_t rng;
    uint64_t nreplies, stall_mark;
    uint64_t connects, failures;
    char last_error[160];
};

static void observe_result(pt_redis_conn *c, pt_redis_error e)
{
    if (c && c->opts.observer && c->opts.observer->result) c->opts.observer->result(c->opts.observer_data, e);
}

static void observe_ready(pt_redis_conn *c, bool ready)
{
    if (c->opts.observer && c->opts.observer->ready) c->opts.observer->ready(c->opts.observer_data, ready);
}

static void start_connect(pt_redis_conn *c);

/* ------------------------------------------------------------------ replies */

static const redisReply *rr(const pt_redis_reply *r) { return (const redisReply *)(const void *)r; }

pt_redis_reply_type pt_redis_reply_kind(const pt_redis_reply *r) { return (pt_redis_reply_type)rr(r)->type; }

long long pt_redis_reply_integer(const pt_redis_reply *r)
{
    return rr(r)->type == REDIS_REPLY_INTEGER ? rr(r)->integer : 0;
}

pt_str pt_redis_reply_str(const pt_redis_reply *r)
{
    int t = rr(r)->type;
    if (t == REDIS_REPLY_STRING || t == REDIS_REPLY_STATUS || t == REDIS_REPLY_ERROR)
        return pt_str_make(rr(r)->str, rr(r)->len);
    return pt_str_make("", 0);
}

size_t pt_redis_reply_count(const pt_redis_reply *r)
{
    return rr(r)->type == REDIS_REPLY_ARRAY ? rr(r)->elements : 0;
}

const pt_redis_reply *pt_redis_reply_elem(const pt_redis_reply *r, size_t i)
{
    if (rr(r)->type != REDIS_REPLY_ARRAY || i >= rr(r)->elements) return NULL;
    return (const pt_redis_reply *)(const void *)rr(r)->element[i];
}

void pt_redis_script_init(pt_redis_script *s, const char *text, size_t len)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    PT_ASSERT(EVP_Digest(text, len, md, &mdlen, EVP_sha1(), NULL) == 1 && mdlen == 20);
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < 20; i++) {
        s->sha1[2 * i] = hex[md[i] >> 4];
        s->sha1[2 * i + 1] = hex[md[i] & 15];
    }
    s->sha1[40] = '\0';
    s->text = text;
    s->len = len;
}

/* ------------------------------------------------------------- write buffer */

static void out_reserve(pt_redis_conn *c, size_t n)
{
    if (c->out_off > 0 && c->out_off == c->out_len) c->out_off = c->out_len = 0;
    if (c->out_len + n <= c->out_cap) return;
    if (c->out_off > 0) { /* slide the unsent bytes down first */
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
        if (c->out_len + n <= c->out_cap) return;
    }
    size_t cap = c->out_cap ? c->out_cap : 4096;
    while (cap < c->out_len + n) cap *= 2;
    c->out = pt_xrealloc(c->out, cap);
    c->out_cap = cap;
}

static void out_put(pt_redis_conn *c, const char *p, size_t n)
{
    out_reserve(c, n);
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

/* RESP encoding into a caller's buffer: "*N\r\n" and "$len\r\nbytes\r\n". */
static size_t resp_array_head(char *buf, size_t cap, int n) { return (size_t)snprintf(buf, cap, "*%d\r\n", n); }

static size_t resp_bulk_size(size_t len) { return 1 + 20 + 2 + len + 2; }

static size_t resp_bulk(char *dst, const char *p, size_t len)
{
    int h = sprintf(dst, "$%zu\r\n", len);
    memcpy(dst + h, p, len);
    memcpy(dst + h + len, "\r\n", 2);
    return (size_t)h + len + 2;
}

static void out_bulk(pt_redis_conn *c, const char *p, size_t len)
{
    out_reserve(c, resp_bulk_size(len));
    c->out_len += resp_bulk(c->out + c->out_len, p, len);
}

static void out_array_head(pt_redis_conn *c, int n)
{
    char h[24];
    out_put(c, h, resp_array_head(h, sizeof h, n));
}

/* --------------------------------------------------------------------- FIFO */

static wcmd *fifo_push(pt_redis_conn *c, pt_redis_call *call, uint8_t kind)
{
    wcmd *w = pt_xcalloc(1, sizeof(*w));
    w->call = call;
    w->kind = kind;
    if (c->tail) c->tail->next = w;
    else c->head = w;
    c->tail = w;
    c->nfifo++;
    return w;
}

static wcmd *fifo_pop(pt_redis_conn *c)
{
    wcmd *w = c->head;
    if (!w) return NULL;
    c->head = w->next;
    if (!c->head) c->tail = NULL;
    c->nfifo--;
    return w;
}

/* ------------------------------------------------------------------ calls */

static void call_free(pt_redis_call *call)
{
    free(call->tail);
    free(call);
}

/* Ends `call` with `res`: detached from its command and timer, freed, then
 * its callback runs (so a callback that starts new calls sees a clean state). */
static void call_finish(pt_redis_call *call, pt_redis_error err, const redisReply *reply, const char *detail)
{
    if (call->cmd) call->cmd->call = NULL;
    if (pt_timer_active(&call->timer)) pt_timer_stop(call->loop, &call->timer);
    if (err != PT_REDIS_ERR_CLOSED) observe_result(call->conn, err);
    pt_redis_done_fn done = call->done;
    void *data = call->data;
    call_free(call);
    pt_redis_result res = {.error = err, .reply = (const pt_redis_reply *)(const void *)reply, .detail = detail};
    done(data, &res);
}

void pt_redis_cancel(pt_redis_call *call)
{
    if (!call) return;
    if (call->cmd) call->cmd->call = NULL;
    if (pt_timer_active(&call->timer)) pt_timer_stop(call->loop, &call->timer);
    pt_defer_cancel(call->loop, &call->closed);
    call_free(call);
}

/* ------------------------------------------------------------ connection */

static void set_error(pt_redis_conn *c, const char *fmt, const char *arg)
{
    snprintf(c->last_error, sizeof c->last_error, fmt, arg);
}

static void close_socket(pt_redis_conn *c)
{
    if (c->fd >= 0) {
        pt_io_stop(c->loop, &c->io);
        close(c->fd);
        c->fd = -1;
    }
    c->connected = false;
    if (c->reader) redisReaderFree(c->reader);
    c->reader = NULL;
    c->out_off = c->out_len = 0;
    pt_timer_stop(c->loop, &c->connect_timer);
    pt_timer_stop(c->loop, &c->stall_timer);
    pt_defer_cancel(c->loop, &c->flush);
}

static void backoff_fire(pt_loop *loop, pt_timer *t)
{
    PT_UNUSED(loop);
    start_connect(t->data);
}

static uint64_t next_rand(pt_redis_conn *c)
{
    c->rng ^= c->rng << 13;
    c->rng ^= c->rng >> 7;
    c->rng ^= c->rng << 17;
    return c->rng;
}

/* The connection failed (c->last_error says why): the socket goes, every
 * command waiting fails with _DOWN, and a reconnect is scheduled after the
 * backoff delay with jitter (half to all of it). Runs only from loop
 * callbacks, never inside a caller's pt_redis_conn_command. */
static void conn_fail(pt_redis_conn *c)
{
    c->epoch++;
    c->failures++;
    if (c->state == PT_REDIS_READY) observe_ready(c, false);
    if (c->opts.observer && c->opts.observer->failure) c->opts.observer->failure(c->opts.observer_data);
    close_socket(c);
    c->state = PT_REDIS_BACKOFF;
    uint64_t d = c->backoff_ms;
    uint64_t delay = d / 2 + next_rand(c) % (d / 2 + 1);
    c->backoff_ms = PT_MIN(d * 2, (uint64_t)BACKOFF_MAX_MS);
    pt_timer_start(c->loop, &c->backoff_timer, delay, backoff_fire, c);
    wcmd *list = c->head;
    c->head = c->tail = NULL;
    c->nfifo = 0;
    char detail[sizeof c->last_error + 80];
    snprintf(detail, sizeof detail, "redis %.60s: %s", c->opts.text, c->last_error);
    while (list) {
        wcmd *w = list;
        list = w->next;
        pt_redis_call *call = w->call;
        free(w);
        if (call) {
            call->cmd = NULL;
            call_finish(call, PT_REDIS_ERR_DOWN, NULL, detail);
        }
    }
}

static void conn_fail_errno(pt_redis_conn *c, const char *what, int err)
{
    char msg[120];
    snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
    set_error(c, "%s", msg);
    conn_fail(c);
}

static void update_events(pt_redis_conn *c)
{
    uint32_t ev = EPOLLIN;
    if (!c->connected || c->out_off < c->out_len) ev |= EPOLLOUT;
    if (ev != c->io.events) pt_io_modify(c->loop, &c->io, ev);
}

/* Writes what is buffered until done or the socket is full. */
static void flush_out(pt_redis_conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        conn_fail_errno(c, "write", n < 0 ? errno : EPIPE);
        return;
    }
    if (c->out_off == c->out_len) c->out_off = c->out_len = 0;
    update_events(c);
}

static void flush_deferred(pt_loop *loop, pt_defer *d)
{
    PT_UNUSED(loop);
    pt_redis_conn *c = d->data;
    if (c->connected) flush_out(c);
}

static void want_flush(pt_redis_conn *c)
{
    if (c->connected) pt_defer_queue(c->loop, &c->flush, flush_deferred, c);
}

static void handshake_done(pt_redis_conn *c)
{
    pt_timer_stop(c->loop, &c->connect_timer);
    c->state = PT_REDIS_READY;
    c->last_error[0] = '\0';
    observe_ready(c, true);
}

/* One reply for the head of the FIFO. */
static void dispatch(pt_redis_conn *c, redisReply *reply)
{
    wcmd *w = fifo_pop(c);
    c->nreplies++;
    if (!w) {
        set_error(c, "%s", "protocol error: a reply nobody asked for");
        conn_fail(c);
        return;
    }
    if (w->kind == CMD_HANDSHAKE) {
        free(w);
        if (reply->type == REDIS_REPLY_ERROR) {
            char msg[140];
            snprintf(msg, sizeof msg, "handshake (AUTH/SELECT) refused: %.*s", (int)PT_MIN(reply->len, 100), reply->str);
            set_error(c, "%s", msg);
            conn_fail(c);
            return;
        }
        c->backoff_ms = BACKOFF_MIN_MS; /* the server answers: the next failure starts over */
        if (--c->handshake_left == 0) handshake_done(c);
        return;
    }
    c->backoff_ms = BACKOFF_MIN_MS;
    pt_redis_call *call = w->call;
    free(w);
    if (!call) return; /* timed out or cancelled: the late reply is dropped */
    call->cmd = NULL;
    if (reply->type == REDIS_REPLY_ERROR) {
        if (call->script && !call->retried && reply->len >= 8 && memcmp(reply->str, "NOSCRIPT", 8) == 0) {
            /* the server lost the script: send it whole, which loads it too */
            call->retried = true;
            out_array_head(c, call->tail_argc + 2);
            out_bulk(c, "EVAL", 4);
            out_bulk(c, call->script->text, call->script->len);
            out_put(c, call->tail, call->tail_len);
            call->cmd = fifo_push(c, call, CMD_USER);
            want_flush(c);
            return;
        }
        call_finish(call, PT_REDIS_ERR_SERVER, reply, reply->str);
        return;
    }
    call_finish(call, PT_REDIS_OK, reply, NULL);
}

static void read_replies(pt_redis_conn *c)
{
    uint64_t epoch = c->epoch;
    char buf[READ_CHUNK];
    for (int i = 0; i < READS_PER_EVENT; i++) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n == 0) {
            set_error(c, "%s", "connection closed by the server");
            conn_fail(c);
            return;
        }
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            conn_fail_errno(c, "read", errno);
            return;
        }
        if (redisReaderFeed(c->reader, buf, (size_t)n) != REDIS_OK) {
            set_error(c, "protocol error: %s", c->reader->errstr);
            conn_fail(c);
            return;
        }
        for (;;) {
            void *reply = NULL;
            if (redisReaderGetReply(c->reader, &reply) != REDIS_OK) {
                set_error(c, "protocol error: %s", c->reader->errstr);
                conn_fail(c);
                return;
            }
            if (!reply) break;
            dispatch(c, reply);
            freeReplyObject(reply);
            if (c->epoch != epoch) return; /* the connection failed meanwhile */
        }
        if ((size_t)n < sizeof buf) return;
    }
}

static void connect_complete(pt_redis_conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err) {
        conn_fail_errno(c, "connect", err);
        return;
    }
    c->connected = true; /* connect_timer runs on until AUTH/SELECT answered */
    if (c->handshake_left == 0) handshake_done(c);
    flush_out(c);
}

static void on_io(pt_loop *loop, pt_io *io, uint32_t events)
{
    PT_UNUSED(loop);
    pt_redis_conn *c = io->data;
    if (!c->connected) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) connect_complete(c);
        return;
    }
    uint64_t epoch = c->epoch;
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) read_replies(c);
    if (c->epoch == epoch && (events & EPOLLOUT)) flush_out(c);
}

static void connect_timeout(pt_loop *loop, pt_timer *t)
{
    PT_UNUSED(loop);
    pt_redis_conn *c = t->data;
    char msg[64];
    snprintf(msg, sizeof msg, "%s timed out after %llu ms", c->connected ? "AUTH/SELECT" : "connect",
             (unsigned long long)c->opts.connect_timeout_ms);
    set_error(c, "%s", msg);
    conn_fail(c);
}

/* Opens a socket and starts connecting; AUTH and SELECT go first into the
 * (empty) write buffer, so they precede every command. */
static void start_connect(pt_redis_conn *c)
{
    c->state = PT_REDIS_CONNECTING;
    c->connects++;
    c->reader = redisReaderCreate();
    PT_ASSERT(c->reader);
    c->handshake_left = 0;
    if (c->opts.password) {
        bool user = c->opts.username != NULL;
        out_array_head(c, user ? 3 : 2);
        out_bulk(c, "AUTH", 4);
        if (user) out_bulk(c, c->opts.username, strlen(c->opts.username));
        out_bulk(c, c->opts.password, strlen(c->opts.password));
        fifo_push(c, NULL, CMD_HANDSHAKE);
        c->handshake_left++;
    }
    if (c->opts.db != 0) {
        char db[16];
        int n = snprintf(db, sizeof db, "%d", c->opts.db);
        out_array_head(c, 2);
        out_bulk(c, "SELECT", 6);
        out_bulk(c, db, (size_t)n);
        fifo_push(c, NULL, CMD_HANDSHAKE);
        c->handshake_left++;
    }
    int family = c->opts.ss.ss_family;
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        conn_fail_errno(c, "socket", errno);
        return;
    }
    if (family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    c->fd = fd;
    if (pt_io_start(c->loop, &c->io, fd, EPOLLIN | EPOLLOUT, on_io, c) != PT_OK) {
        int e = errno;
        close(fd);
        c->fd = -1;
        conn_fail_errno(c, "epoll", e);
        return;
    }
    if (connect(fd, (const struct sockaddr *)&c->opts.ss, c->opts.sslen) < 0 && errno != EINPROGRESS) {
        conn_fail_errno(c, "connect", errno);
        return;
    }
    /* completion (or failure) is reported by EPOLLOUT, also when connect
     * finished at once */
    pt_timer_start(c->loop, &c->connect_timer, c->opts.connect_timeout_ms, connect_timeout, c);
}

static char *dup_opt(const char *s) { return s ? pt_xstrndup(s, strlen(s)) : NULL; }

pt_redis_conn *pt_redis_conn_new(pt_loop *loop, const pt_redis_opts *opts)
{
    pt_redis_conn *c = pt_xcalloc(1, sizeof(*c));
    c->loop = loop;
    c->opts = *opts;
    c->opts.text = dup_opt(opts->text ? opts->text : "redis");
    c->opts.username = dup_opt(opts->username);
    c->opts.password = dup_opt(opts->password);
    if (c->opts.max_pending == 0) c->opts.max_pending = 1;
    c->fd = -1;
    c->backoff_ms = BACKOFF_MIN_MS;
    c->rng = ((uint64_t)(uintptr_t)c ^ pt_loop_wall_us(loop)) | 1;
    start_connect(c);
    return c;
}

void pt_redis_conn_tune(pt_redis_conn *c, const pt_redis_opts *opts)
{
    c->opts.connect_timeout_ms = opts->connect_timeout_ms;
    c->opts.command_timeout_ms = opts->command_timeout_ms;
    c->opts.max_pending = opts->max_pending ? opts->max_pending : 1;
}

/* Deferred delivery of _ERR_CLOSED to a call whose connection was freed. */
static void deliver_closed(pt_loop *loop, pt_defer *d)
{
    PT_UNUSED(loop);
    call_finish(d->data, PT_REDIS_ERR_CLOSED, NULL, "the Redis connection was closed");
}

void pt_redis_conn_free(pt_redis_conn *c, bool notify)
{
    if (!c) return;
    close_socket(c);
    pt_timer_stop(c->loop, &c->backoff_timer);
    while (c->head) {
        wcmd *w = fifo_pop(c);
        pt_redis_call *call = w->call;
        free(w);
        if (!call) continue;
        call->cmd = NULL;
        call->conn = NULL;
        if (pt_timer_active(&call->timer)) pt_timer_stop(c->loop, &call->timer);
        if (notify) pt_defer_queue(c->loop, &call->closed, deliver_closed, call);
        else call_free(call);
    }
    free(c->out);
    free((char *)c->opts.text);
    free((char *)c->opts.username);
    if (c->opts.password) { /* a secret: do not leave it in freed memory */
        size_t n = strlen(c->opts.password);
        memset((char *)c->opts.password, 0, n);
        free((char *)c->opts.password);
    }
    free(c);
}

/* ---------------------------------------------------------------- commands */

static void stall_check(pt_loop *loop, pt_timer *t)
{
    PT_UNUSED(loop);
    pt_redis_conn *c = t->data;
    if (!c->connected || c->nfifo == 0 || c->nreplies != c->stall_mark) return;
    char msg[80];
    snprintf(msg, sizeof msg, "no reply for %llu ms after a command timed out",
             (unsigned long long)c->opts.command_timeout_ms);
    set_error(c, "%s", msg);
    conn_fail(c);
}

static void call_timeout(pt_loop *loop, pt_timer *t)
{
    PT_UNUSED(loop);
    pt_redis_call *call = t->data;
    pt_redis_conn *c = call->conn;
    /* a server that answers nothing at all for another command_timeout is
     * stuck (or the network is): reset rather than let the FIFO grow */
    if (c->connected && !pt_timer_active(&c->stall_timer)) {
        c->stall_mark = c->nreplies;
        pt_timer_start(c->loop, &c->stall_timer, c->opts.command_timeout_ms, stall_check, c);
    }
    call_finish(call, PT_REDIS_ERR_TIMEOUT, NULL, "Redis command timed out");
}

/* Checks that a command may be queued now. */
static bool admit(pt_redis_conn *c, int argc, const char *const *argv, pt_redis_error *err)
{
    pt_redis_error e = PT_REDIS_OK;
    if (argc <= 0 || !argv) e = PT_REDIS_ERR_INVALID;
    for (int i = 0; e == PT_REDIS_OK && i < argc; i++)
        if (!argv[i]) e = PT_REDIS_ERR_INVALID;
    /* down: waiting to reconnect, or reconnecting (only a connection's
     * first connect queues commands, so that its first users do not fail) */
    if (e == PT_REDIS_OK && (c->state == PT_REDIS_BACKOFF || (c->state == PT_REDIS_CONNECTING && c->failures > 0)))
        e = PT_REDIS_ERR_DOWN;
    if (e == PT_REDIS_OK && c->nfifo >= c->opts.max_pending) e = PT_REDIS_ERR_BUSY;
    if (err) *err = e;
    if (e == PT_REDIS_ERR_DOWN || e == PT_REDIS_ERR_BUSY) observe_result(c, e);
    return e == PT_REDIS_OK;
}

static pt_redis_call *call_new(pt_redis_conn *c, pt_redis_done_fn done, void *data)
{
    pt_redis_call *call = pt_xcalloc(1, sizeof(*call));
    call->conn = c;
    call->loop = c->loop;
    call->done = done;
    call->data = data;
    pt_timer_start(c->loop, &call->timer, c->opts.command_timeout_ms, call_timeout, call);
    return call;
}

static size_t arg_len(const size_t *argvlen, const char *const *argv, int i)
{
    return argvlen ? argvlen[i] : strlen(argv[i]);
}

pt_redis_call *pt_redis_conn_command(pt_redis_conn *c, int argc, const char *const *argv, const size_t *argvlen,
                                     pt_redis_done_fn done, void *data, pt_redis_error *err)
{
    if (!done || !admit(c, argc, argv, err)) {
        if (err && !done) *err = PT_REDIS_ERR_INVALID;
        return NULL;
    }
    pt_redis_call *call = call_new(c, done, data);
    out_array_head(c, argc);
    for (int i = 0; i < argc; i++) out_bulk(c, argv[i], arg_len(argvlen, argv, i));
    call->cmd = fifo_push(c, call, CMD_USER);
    want_flush(c);
    return call;
}

pt_redis_call *pt_redis_conn_eval(pt_redis_conn *c, const pt_redis_script *script, int nkeys, int argc,
                                  const char *const *argv, const size_t *argvlen, pt_redis_done_fn done,
                                  void *data, pt_redis_error *err)
{
    bool ok = script && done && nkeys >= 0 && nkeys <= argc && argc >= 0;
    for (int i = 0; ok && i < argc; i++) ok = argv && argv[i];
    if (!ok) {
        if (err) *err = PT_REDIS_ERR_INVALID;
        return NULL;
    }
    static const char *const dummy[] = {"EVALSHA"};
    if (!admit(c, 1, dummy, err)) return NULL;
    /* the tail "nkeys key... arg..." is encoded once and kept for a retry */
    char nk[16];
    int nkl = snprintf(nk, sizeof nk, "%d", nkeys);
    size_t cap = resp_bulk_size((size_t)nkl);
    for (int i = 0; i < argc; i++) cap += resp_bulk_size(arg_len(argvlen, argv, i));
    pt_redis_call *call = call_new(c, done, data);
    call->script = script;
    call->tail_argc = argc + 1;
    call->tail = pt_xmalloc(cap);
    call->tail_len = resp_bulk(call->tail, nk, (size_t)nkl);
    for (int i = 0; i < argc; i++) call->tail_len += resp_bulk(call->tail + call->tail_len, argv[i], arg_len(argvlen, argv, i));
    out_array_head(c, call->tail_argc + 2);
    out_bulk(c, "EVALSHA", 7);
    out_bulk(c, script->sha1, 40);
    out_put(c, call->tail, call->tail_len);
    call->cmd = fifo_push(c, call, CMD_USER);
    want_flush(c);
    return call;
}

void pt_redis_conn_stats(const pt_redis_conn *c, pt_redis_stats *out)
{
    *out = (pt_redis_stats){.state = c->state,
                            .connects = c->connects,
                            .failures = c->failures,
                            .in_flight = c->nfifo,
                            .last_error = c->last_error};
}
