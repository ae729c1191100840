/* admin.c — see admin.h. One thread, one pt_loop, a handful of
 * connections: read one request head, answer, close (after a short
 * lingering read, so a client's unread bytes never turn the answer into a
 * reset). */
#include "admin/admin.h"
#include "admin/dashboard.h"

#include <errno.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/loop.h"
#include "http/h1.h"
#include "http/problem.h"

#define HEAD_MAX 8192      /* request head, bytes */
#define LINGER_MS 1000     /* reading what the client still sends, after the answer */

typedef struct admin_conn admin_conn;

typedef struct {
    bool set;
    unsigned char digest[SHA256_DIGEST_LENGTH];
} token_hash;

struct pt_admin {
    pt_loop *loop;
    pthread_t thread;
    pt_io listener;
    pt_metrics *metrics;
    atomic_bool ready;
    token_hash token;          /* admin thread only (changed through posts) */
    admin_conn *conns;
    size_t nconns;
    pt_admin_api_fn api;       /* admin thread only (set through a post); NULL: no /api */
    void *api_data;
    const pt_admin_ext *ext;   /* admin thread only (set through a post); NULL: none */
};

typedef enum { C_READ, C_WRITE, C_LINGER } conn_state;

struct admin_conn {
    pt_admin *a;
    pt_io io;
    pt_timer timer;
    pt_defer free_defer;
    conn_state state;
    char in[HEAD_MAX];
    size_t inlen;
    char *out;                 /* malloc'ed answer */
    size_t outlen, outpos;
    admin_conn *prev, *next;
};

/* ------------------------------------------------------------ connections */

static void free_cb(pt_loop *loop, pt_defer *d) { free(d->data); }

static void conn_close(admin_conn *c)
{
    pt_admin *a = c->a;
    pt_timer_stop(a->loop, &c->timer);
    pt_io_stop(a->loop, &c->io);
    close(c->io.fd);
    free(c->out);
    c->out = NULL;
    if (c->prev) c->prev->next = c->next;
    else a->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    a->nconns--;
    /* after this iteration: an event for the fd may still be in the batch */
    pt_defer_queue(a->loop, &c->free_defer, free_cb, c);
}

static void on_timeout(pt_loop *loop, pt_timer *t) { conn_close(t->data); }

static void on_io(pt_loop *loop, pt_io *io, uint32_t events);

/* Queues `head` (status line and fields, without the final CRLF) plus the
 * body, and switches to writing. Every answer closes the connection. */
static void respond(admin_conn *c, int status, const char *content_type, const char *extra_headers,
                    const char *body, size_t body_len, bool head_only)
{
    char head[1024];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n"
                     "%sConnection: close\r\n\r\n",
                     status, pt_status_reason(status), content_type, body_len, extra_headers ? extra_headers : "");
    PT_ASSERT(n > 0 && (size_t)n < sizeof(head));
    size_t blen = head_only ? 0 : body_len;
    c->out = pt_xmalloc((size_t)n + blen);
    memcpy(c->out, head, (size_t)n);
    if (blen) memcpy(c->out + n, body, blen);
    c->outlen = (size_t)n + blen;
    c->outpos = 0;
    c->state = C_WRITE;
    pt_io_modify(c->a->loop, &c->io, EPOLLOUT);
}

static void respond_problem(admin_conn *c, int status, const char *detail, const char *extra_headers, bool head_only)
{
    pt_arena *ar = pt_arena_new(1024);
    pt_str body = pt_problem_json(ar, status, detail, PT_STR_NULL);
    respond(c, status, PT_PROBLEM_CONTENT_TYPE, extra_headers, body.p, body.n, head_only);
    pt_arena_free(ar);
}

static bool token_ok(const pt_admin *a, const pt_request *req, const char **challenge)
{
    *challenge = "WWW-Authenticate: Bearer realm=\"portico-admin\"\r\n";
    if (!a->token.set) return true;
    const pt_str *h = pt_headers_get(&req->headers, "Authorization");
    if (!h) return false;
    /* the scheme is case-insensitive (RFC 9110 §11.1) */
    if (h->n < 7 || !pt_str_ieq(pt_str_make(h->p, 6), PT_STR_LIT("Bearer")) || h->p[6] != ' ') return false;
    unsigned char got[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)h->p + 7, h->n - 7, got);
    /* digests of equal length: the comparison says nothing about the token's length or prefix */
    bool ok = CRYPTO_memcmp(got, a->token.digest, sizeof(got)) == 0;
    if (!ok) *challenge = "WWW-Authenticate: Bearer realm=\"portico-admin\", error=\"invalid_token\"\r\n";
    return ok;
}

/* A plugin's endpoint (pt_admin_ext): its methods, the token always. */
static void handle_ext(admin_conn *c, const pt_request *req, uint32_t methods)
{
    pt_admin *a = c->a;
    bool head = req->method == PT_METHOD_HEAD;
    if (head && (methods & PT_METHOD_BIT(PT_METHOD_GET))) methods |= PT_METHOD_BIT(PT_METHOD_HEAD);
    if (!(methods & PT_METHOD_BIT(req->method))) {
        char allow[96] = "Allow: ";
        for (int m = PT_METHOD_GET; m < PT_METHOD__COUNT; m++)
            if (methods & PT_METHOD_BIT(m)) {
                if (allow[7]) strcat(allow, ", ");
                strcat(allow, pt_method_name((pt_method)m));
            }
        strcat(allow, "\r\n");
        respond_problem(c, 405, "this admin endpoint does not answer that method", allow, head);
        return;
    }
    bool mutating = req->method != PT_METHOD_GET && !head;
    if (mutating && !a->token.set) {
        respond_problem(c, 403, "admin endpoints that change state need admin.token to be configured", NULL, false);
        return;
    }
    const char *challenge;
    if (!token_ok(a, req, &challenge)) {
        respond_problem(c, 401, "a valid bearer token is required", challenge, head);
        return;
    }
    char *body = NULL;
    size_t len = 0;
    const char *ctype = "application/json";
    pt_method m = head ? PT_METHOD_GET : req->method;
    int status = a->ext->call(m, req->path, req->has_query ? req->query : PT_STR_NULL, &body, &len, &ctype);
    if (status == 0) respond_problem(c, 404, "no such admin endpoint", NULL, head);
    else if (body) respond(c, status, ctype, NULL, body, len, head);
    else respond_problem(c, status, "the admin endpoint cannot answer now", NULL, head);
    free(body);
}

static void handle(admin_conn *c, const pt_request *req)
{
    pt_admin *a = c->a;
    bool head = req->method == PT_METHOD_HEAD;
    bool metrics = pt_str_eq_lit(req->path, "/metrics") && a->metrics;
    bool healthz = pt_str_eq_lit(req->path, "/healthz"), readyz = pt_str_eq_lit(req->path, "/readyz");
    bool dashboard = pt_str_eq_lit(req->path, "/dashboard");
    uint32_t ext_methods = a->ext ? a->ext->methods(req->path) : 0;
    if (ext_methods) {
        handle_ext(c, req, ext_methods);
        return;
    }
    bool api = a->api && req->path.n >= 4 && memcmp(req->path.p, "/api", 4) == 0 &&
               (req->path.n == 4 || req->path.p[4] == '/');
    if (!metrics && !healthz && !readyz && !api && !dashboard) {
        respond_problem(c, 404, "admin endpoints: /metrics, /healthz, /readyz, /api, /dashboard", NULL, head);
        return;
    }
    if (req->method != PT_METHOD_GET && !head) {
        respond_problem(c, 405, "the admin endpoints answer GET and HEAD", "Allow: GET, HEAD\r\n", false);
        return;
    }
    if (dashboard) {
        /* the page holds no data (it asks /metrics and /api with the token) */
        pt_str page = pt_dashboard_page();
        respond(c, 200, "text/html; charset=utf-8",
                "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                "connect-src 'self'; form-action 'none'; frame-ancestors 'none'\r\nX-Content-Type-Options: nosniff\r\n",
                page.p, page.n, head);
    } else if (healthz) {
        respond(c, 200, "text/plain; charset=utf-8", NULL, "ok\n", 3, head);
    } else if (readyz) {
        if (atomic_load(&a->ready)) respond(c, 200, "text/plain; charset=utf-8", NULL, "ready\n", 6, head);
        else respond(c, 503, "text/plain; charset=utf-8", NULL, "not ready\n", 10, head);
    } else {
        const char *challenge;
        if (!token_ok(a, req, &challenge)) {
            respond_problem(c, 401, "a valid bearer token is required", challenge, head);
            return;
        }
        if (api) {
            char *body = NULL;
            size_t len = 0;
            const char *ctype = "application/json";
            int status = a->api(a->api_data, req->path, &body, &len, &ctype);
            if (status == 200 && body) respond(c, 200, ctype, NULL, body, len, head);
            else if (status == 0) respond_problem(c, 404, "no such admin API endpoint (see /api)", NULL, head);
            else respond_problem(c, status ? status : 500, "the admin API cannot answer now", NULL, head);
            free(body);
            return;
        }
        size_t len;
        char *text = pt_metrics_expose(a->metrics, &len);
        respond(c, 200, PT_METRICS_CONTENT_TYPE, NULL, text, len, head);
        free(text);
    }
}

static void process(admin_conn *c)
{
    static const pt_h1_limits lim = {.max_request_line = 2048, .max_header_size = HEAD_MAX, .max_headers = 64};
    pt_arena *ar = pt_arena_new(4096);
    pt_request req;
    memset(&req, 0, sizeof(req));
    pt_h1_info info;
    pt_h1_error err = {0, NULL};
    ssize_t n = pt_h1_parse_request(c->in, c->inlen, &lim, ar, &req, &info, &err);
    if (n == PT_ERR) respond_problem(c, err.status ? err.status : 400, err.detail, NULL, false);
    else if (n > 0) handle(c, &req);
    pt_arena_free(ar);
}

static void do_read(admin_conn *c)
{
    for (;;) {
        char discard[4096];
        bool linger = c->state == C_LINGER;
        char *p = linger ? discard : c->in + c->inlen;
        size_t room = linger ? sizeof(discard) : sizeof(c->in) - c->inlen;
        if (room == 0) return; /* cannot happen: the parser rejects a full buffer */
        ssize_t r = recv(c->io.fd, p, room, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            conn_close(c);
            return;
        }
        if (r < 0) {
            if (errno == EINTR) continue;
            return;
        }
        if (linger) continue;
        c->inlen += (size_t)r;
        process(c);
        if (c->state != C_READ) return;
    }
}

static void do_write(admin_conn *c)
{
    while (c->outpos < c->outlen) {
        ssize_t w = send(c->io.fd, c->out + c->outpos, c->outlen - c->outpos, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) conn_close(c);
            return;
        }
        c->outpos += (size_t)w;
    }
    /* all sent: half-close, then read until the client closes (bounded) */
    free(c->out);
    c->out = NULL;
    shutdown(c->io.fd, SHUT_WR);
    c->state = C_LINGER;
    pt_io_modify(c->a->loop, &c->io, EPOLLIN | EPOLLRDHUP);
    pt_timer_start(c->a->loop, &c->timer, LINGER_MS, on_timeout, c);
}

static void on_io(pt_loop *loop, pt_io *io, uint32_t events)
{
    admin_conn *c = io->data;
    if (c->state == C_WRITE) {
        if (events & (EPOLLERR | EPOLLHUP)) conn_close(c);
        else do_write(c);
        return;
    }
    do_read(c);
}

static void on_accept(pt_loop *loop, pt_io *io, uint32_t events)
{
    pt_admin *a = io->data;
    for (int i = 0; i < 16; i++) {
        int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        if (a->nconns >= PT_ADMIN_MAX_CONNS) {
            close(fd); /* strict: a scraper needs one connection */
            continue;
        }
        admin_conn *c = pt_xcalloc(1, sizeof(*c));
        c->a = a;
        c->state = C_READ;
        if (pt_io_start(loop, &c->io, fd, EPOLLIN | EPOLLRDHUP, on_io, c) != PT_OK) {
            close(fd);
            free(c);
            continue;
        }
        c->next = a->conns;
        if (a->conns) a->conns->prev = c;
        a->conns = c;
        a->nconns++;
        pt_timer_start(loop, &c->timer, PT_ADMIN_TIMEOUT_MS, on_timeout, c);
    }
}

/* ------------------------------------------------------------------ thread */

static void *admin_main(void *arg)
{
    pt_admin *a = arg;
    pt_loop_run(a->loop);
    return NULL;
}

static void hash_token(const char *token, token_hash *out)
{
    memset(out, 0, sizeof(*out));
    if (!token) return;
    out->set = true;
    SHA256((const unsigned char *)token, strlen(token), out->digest);
}

pt_admin *pt_admin_start(const pt_conf_addr *addr, const char *token, pt_metrics *metrics)
{
    int fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return NULL;
    int one = 1;
    /* SO_REUSEADDR only (restarts); no SO_REUSEPORT: never shared with a proxy listener */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (addr->ss.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&addr->ss, addr->sslen) < 0 || listen(fd, 64) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return NULL;
    }
    pt_admin *a = pt_xcalloc(1, sizeof(*a));
    a->metrics = metrics;
    atomic_init(&a->ready, false);
    hash_token(token, &a->token);
    a->loop = pt_loop_new();
    if (!a->loop) pt_panic(__FILE__, __LINE__, "cannot create the admin event loop");
    pt_loop_set_data(a->loop, a);
    pt_io_start(a->loop, &a->listener, fd, EPOLLIN, on_accept, a);
    if (pthread_create(&a->thread, NULL, admin_main, a) != 0) pt_panic(__FILE__, __LINE__, "cannot start the admin thread");
    return a;
}

typedef struct {
    pt_admin_api_fn fn;
    void *data;
} api_hook;

static void set_api_cb(pt_loop *loop, void *data)
{
    pt_admin *a = pt_loop_data(loop);
    api_hook *h = data;
    a->api = h->fn;
    a->api_data = h->data;
    free(h);
}

void pt_admin_set_api(pt_admin *a, pt_admin_api_fn fn, void *data)
{
    if (!a) return;
    api_hook *h = pt_xmalloc(sizeof(*h));
    *h = (api_hook){fn, data};
    pt_loop_post(a->loop, set_api_cb, h); /* the admin thread owns its fields */
}

void pt_admin_set_ready(pt_admin *a, bool ready)
{
    if (a) atomic_store(&a->ready, ready);
}

static void set_ext_cb(pt_loop *loop, void *data)
{
    pt_admin_ext **h = data;
    pt_admin *a = (pt_admin *)h[0];
    a->ext = (const pt_admin_ext *)h[1];
    free(h);
}

void pt_admin_set_ext(pt_admin *a, const pt_admin_ext *ext)
{
    void **h = pt_xmalloc(2 * sizeof(void *));
    h[0] = a;
    h[1] = (void *)ext;
    pt_loop_post(a->loop, set_ext_cb, h); /* the admin thread owns its fields */
}

static void set_token_cb(pt_loop *loop, void *data)
{
    pt_admin *a = pt_loop_data(loop);
    a->token = *(token_hash *)data;
    free(data);
}

void pt_admin_set_token(pt_admin *a, const char *token)
{
    if (!a) return;
    token_hash *h = pt_xmalloc(sizeof(*h));
    hash_token(token, h);
    pt_loop_post(a->loop, set_token_cb, h);
}

static void stop_cb(pt_loop *loop, void *data)
{
    pt_admin *a = pt_loop_data(loop);
    pt_io_stop(loop, &a->listener);
    close(a->listener.fd);
    while (a->conns) conn_close(a->conns);
    pt_loop_stop(loop);
}

void pt_admin_stop(pt_admin *a)
{
    if (!a) return;
    pt_loop_post(a->loop, stop_cb, NULL);
    pthread_join(a->thread, NULL);
    pt_loop_free(a->loop);
    free(a);
}
