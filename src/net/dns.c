/* dns.c — see dns.h.
 *
 * The channel tells which sockets it wants watched through its socket-state
 * callback (pt_io per socket, EPOLLIN/EPOLLOUT as asked); after every call
 * into c-ares the one pt_timer is re-armed to ares_timeout(). A query's
 * callback may run inside ares_getaddrinfo itself (an /etc/hosts answer),
 * inside ares_process_fd, or inside ares_destroy (ARES_EDESTRUCTION), so it
 * only records the result in the entry. A socket's pt_io is freed after the
 * current epoll batch (the batch may still hold an event for it). */
#include "net/dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef struct dns_sock {
    pt_io io;
    struct pt_dns *d;
    struct dns_sock *next;
    bool dead;
} dns_sock;

struct pt_dns {
    pt_loop *loop;
    ares_channel ch;             /* NULL until created (or if creation failed) */
    pt_dns_conf conf;            /* own copy (servers duplicated) */
    pt_dns_cache cache;
    pt_timer timer;
    pt_defer reap;
    dns_sock *socks, *dead;
    bool freeing;
};

typedef struct {
    pt_dns *d;
    pt_dns_entry *e;
} dns_query;

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static int lib_status;
static void lib_init(void) { lib_status = ares_library_init(ARES_LIB_INIT_ALL); }

uint64_t pt_dns_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A channel with `conf`'s servers and timeouts; NULL (err set) on failure. */
static ares_channel channel_new(const pt_dns_conf *conf, ares_sock_state_cb cb, void *cb_data, char *err,
                                size_t errcap)
{
    pthread_once(&lib_once, lib_init);
    if (lib_status != ARES_SUCCESS) {
        snprintf(err, errcap, "c-ares: %s", ares_strerror(lib_status));
        return NULL;
    }
    struct ares_options o = {0};
    int mask = ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
    o.timeout = (int)conf->timeout_ms;
    o.tries = (int)conf->attempts;
    if (cb) {
        mask |= ARES_OPT_SOCK_STATE_CB;
        o.sock_state_cb = cb;
        o.sock_state_cb_data = cb_data;
    }
    ares_channel ch = NULL;
    int rc = ares_init_options(&ch, &o, mask);
    if (rc != ARES_SUCCESS) {
        snprintf(err, errcap, "c-ares: %s", ares_strerror(rc));
        return NULL;
    }
    if (conf->servers && (rc = ares_set_servers_ports_csv(ch, conf->servers)) != ARES_SUCCESS) {
        snprintf(err, errcap, "c-ares: servers '%s': %s", conf->servers, ares_strerror(rc));
        ares_destroy(ch);
        return NULL;
    }
    return ch;
}

/* Addresses of a successful answer (at most `cap`), and its smallest TTL. */
static uint32_t answer_addrs(const struct ares_addrinfo *res, pt_dns_addr *v, uint32_t cap, uint32_t *ttl_s)
{
    uint32_t n = 0;
    int ttl = -1;
    for (const struct ares_addrinfo_node *a = res ? res->nodes : NULL; a && n < cap; a = a->ai_next) {
        if (!a->ai_addr || !pt_dns_addr_from_sockaddr(&v[n], a->ai_addr)) continue;
        n++;
        if (ttl < 0 || a->ai_ttl < ttl) ttl = a->ai_ttl;
    }
    for (const struct ares_addrinfo_cname *c = res ? res->cnames : NULL; c; c = c->next)
        if (ttl < 0 || c->ttl < ttl) ttl = c->ttl;
    *ttl_s = ttl > 0 ? (uint32_t)ttl : 0;
    return n;
}

/* Loading a configuration waits at most this long per name (c-ares doubles
 * the timeout on each round, so timeout x attempts can add up). */
#define RESOLVE_NOW_MAX_MS 30000u

static const struct ares_addrinfo_hints HINTS = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
#define MAX_ADDRS 64

/* ------------------------------------------------------------ the worker */

static void arm_timer(pt_dns *d);

static void reap(pt_dns *d)
{
    while (d->dead) {
        dns_sock *s = d->dead;
        d->dead = s->next;
        free(s);
    }
}

static void reap_cb(pt_loop *loop, pt_defer *df) { reap(df->data); }

static void sock_io(pt_loop *loop, pt_io *io, uint32_t events)
{
    dns_sock *s = io->data;
    if (s->dead) return;
    pt_dns *d = s->d;
    ares_socket_t fd = io->fd;
    ares_process_fd(d->ch, (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) ? fd : ARES_SOCKET_BAD,
                    (events & EPOLLOUT) ? fd : ARES_SOCKET_BAD);
    arm_timer(d);
}

static void sock_forget(pt_dns *d, dns_sock *s)
{
    dns_sock **pp = &d->socks;
    while (*pp != s) pp = &(*pp)->next;
    *pp = s->next;
    pt_io_stop(d->loop, &s->io);
    s->dead = true;
    s->next = d->dead;
    d->dead = s;
    if (!d->freeing) pt_defer_queue(d->loop, &d->reap, reap_cb, d);
}

/* c-ares: watch `fd` for reading/writing, or no more (it is about to close). */
static void sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    pt_dns *d = data;
    dns_sock *s = d->socks;
    while (s && s->io.fd != fd) s = s->next;
    uint32_t ev = (readable ? EPOLLIN : 0) | (writable ? EPOLLOUT : 0);
    if (!ev) {
        if (s) sock_forget(d, s);
        return;
    }
    if (s) {
        pt_io_modify(d->loop, &s->io, ev);
        return;
    }
    s = pt_xcalloc(1, sizeof(*s));
    s->d = d;
    if (pt_io_start(d->loop, &s->io, fd, ev, sock_io, s) != PT_OK) {
        /* cannot watch it: its queries time out (the timer still runs) */
        fprintf(stderr, "portico: dns: cannot watch a resolver socket: %s\n", strerror(errno));
        free(s);
        return;
    }
    s->next = d->socks;
    d->socks = s;
}

static void timer_cb(pt_loop *loop, pt_timer *t)
{
    pt_dns *d = t->data;
    if (d->ch) ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD); /* timeouts */
    arm_timer(d);
}

static void arm_timer(pt_dns *d)
{
    struct timeval tv;
    if (!d->ch || d->freeing || !ares_timeout(d->ch, NULL, &tv)) {
        pt_timer_stop(d->loop, &d->timer);
        return;
    }
    uint64_t ms = (uint64_t)tv.tv_sec * 1000u + ((uint64_t)tv.tv_usec + 999u) / 1000u;
    pt_timer_start(d->loop, &d->timer, ms, timer_cb, d);
}

static void channel_destroy(pt_dns *d)
{
    if (!d->ch) return;
    ares_channel ch = d->ch;
    ares_destroy(ch); /* in-flight callbacks run (ARES_EDESTRUCTION); sockets close */
    d->ch = NULL;
    while (d->socks) sock_forget(d, d->socks);
    pt_timer_stop(d->loop, &d->timer);
}

static bool channel_ensure(pt_dns *d)
{
    if (d->ch) return true;
    char err[256];
    d->ch = channel_new(&d->conf, sock_state, d, err, sizeof(err));
    if (!d->ch) fprintf(stderr, "portico: dns: %s\n", err);
    return d->ch != NULL;
}

static void conf_copy(pt_dns_conf *dst, const pt_dns_conf *src)
{
    free(dst->servers);
    *dst = *src;
    dst->servers = src->servers ? pt_xstrndup(src->servers, strlen(src->servers)) : NULL;
}

pt_dns *pt_dns_new(pt_loop *loop, const pt_dns_conf *conf)
{
    pt_dns *d = pt_xcalloc(1, sizeof(*d));
    d->loop = loop;
    conf_copy(&d->conf, conf);
    /* the channel is made on first use, on the worker's thread */
    return d;
}

void pt_dns_free(pt_dns *d)
{
    if (!d) return;
    d->freeing = true;
    channel_destroy(d);
    pt_defer_cancel(d->loop, &d->reap);
    reap(d);
    pt_dns_cache_free(&d->cache);
    free(d->conf.servers);
    free(d);
}

void pt_dns_configure(pt_dns *d, const pt_dns_conf *conf)
{
    if (!pt_dns_conf_same_channel(&d->conf, conf)) channel_destroy(d);
    conf_copy(&d->conf, conf);
}

pt_dns_entry *pt_dns_acquire(pt_dns *d, const char *host, const pt_dns_answer *initial)
{
    pt_dns_entry *e = pt_dns_cache_find(&d->cache, host);
    if (!e) e = pt_dns_cache_add(&d->cache, host);
    e->refs++;
    if (initial) pt_dns_entry_seed(e, initial, &d->conf, &d->cache.serials);
    return e;
}

void pt_dns_release(pt_dns *d, pt_dns_entry *e)
{
    PT_ASSERT(e->refs > 0);
    if (--e->refs == 0 && !e->querying) pt_dns_cache_remove(&d->cache, e);
    /* querying: removed when its answer arrives */
}

static void log_change(const pt_dns_entry *e)
{
    char a[64];
    fprintf(stderr, "portico: dns: %s -> %s%s (%u address%s)\n", e->host, pt_dns_addr_text(&e->addrs[0], a, sizeof(a)),
            e->nrot > 1 ? ", ..." : "", e->naddrs, e->naddrs == 1 ? "" : "es");
}

static void on_answer(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    dns_query *q = arg;
    pt_dns *d = q->d;
    pt_dns_entry *e = q->e;
    free(q);
    e->querying = false;
    if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED) {
        /* the channel went (reconfigured or stopping): the next use asks again */
        if (res) ares_freeaddrinfo(res);
        if (!d->freeing && e->refs == 0) pt_dns_cache_remove(&d->cache, e);
        return;
    }
    uint64_t now = pt_loop_now(d->loop);
    pt_dns_addr v[MAX_ADDRS];
    uint32_t ttl = 0, n = status == ARES_SUCCESS ? answer_addrs(res, v, MAX_ADDRS, &ttl) : 0;
    if (res) ares_freeaddrinfo(res);
    if (n) {
        if (pt_dns_entry_answer(e, v, n, now, pt_dns_ttl_ms(ttl, &d->conf), &d->cache.serials)) log_change(e);
    } else {
        pt_dns_entry_failed(e, now);
        if (e->failures == 1)
            fprintf(stderr, "portico: dns: refreshing %s failed (%s); keeping the last good answer\n", e->host,
                    status == ARES_SUCCESS ? "no address" : ares_strerror(status));
    }
    if (e->refs == 0) pt_dns_cache_remove(&d->cache, e);
}

void pt_dns_touch(pt_dns *d, pt_dns_entry *e)
{
    uint64_t now = pt_loop_now(d->loop);
    if (!pt_dns_entry_due(e, now)) return;
    if (!channel_ensure(d)) {
        pt_dns_entry_failed(e, now);
        return;
    }
    dns_query *q = pt_xcalloc(1, sizeof(*q));
    q->d = d;
    q->e = e;
    e->querying = true;
    ares_getaddrinfo(d->ch, e->host, NULL, &HINTS, on_answer, q); /* may answer at once */
    arm_timer(d);
}

void pt_dns_connect_failed(pt_dns *d, const pt_dns_stamp *st)
{
    if (!d || !st->serial) return;
    for (uint32_t i = 0; i < d->cache.n; i++)
        if (d->cache.v[i]->serial == st->serial) {
            pt_dns_entry_mark_down(d->cache.v[i], &st->addr, pt_loop_now(d->loop));
            return;
        }
}

socklen_t pt_dns_connect_addr(pt_dns *d, pt_dns_entry *e, uint16_t port, struct sockaddr_storage *ss,
                              pt_dns_stamp *st)
{
    pt_dns_addr a;
    if (!pt_dns_entry_pick(e, pt_loop_now(d->loop), &a)) {
        memset(st, 0, sizeof(*st));
        return 0;
    }
    st->serial = e->serial;
    st->addr = a;
    return pt_dns_addr_sockaddr(&a, port, ss);
}

/* --------------------------------------------------------- blocking (main) */

typedef struct {
    bool done;
    int status;
    pt_arena *a;
    pt_dns_answer *out;
} blocking_query;

static void on_blocking_answer(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    blocking_query *q = arg;
    q->done = true;
    q->status = status;
    if (status == ARES_SUCCESS) {
        pt_dns_addr v[MAX_ADDRS];
        uint32_t ttl = 0, n = answer_addrs(res, v, MAX_ADDRS, &ttl);
        if (n) {
            q->out->v = pt_arena_alloc(q->a, n * sizeof(*v));
            memcpy(q->out->v, v, n * sizeof(*v));
            q->out->n = n;
            q->out->ttl_s = ttl;
            q->out->at_ms = pt_dns_mono_ms();
        }
    }
    if (res) ares_freeaddrinfo(res);
}

/* Drives `ch` until *done, the RESOLVE_NOW_MAX_MS bound, or one of the
 * `interrupt` signals pending (*interrupted set); in the last two cases the
 * queries are cancelled (their callbacks run with ARES_ECANCELLED). */
static void wait_blocking(ares_channel ch, const bool *done, const sigset_t *interrupt, bool *interrupted)
{
    uint64_t deadline = pt_dns_mono_ms() + RESOLVE_NOW_MAX_MS;
    while (!*done) {
        sigset_t pending;
        if (interrupt && sigpending(&pending) == 0)
            for (int sig = 1; sig < NSIG && !*interrupted; sig++)
                if (sigismember(interrupt, sig) == 1 && sigismember(&pending, sig) == 1) *interrupted = true;
        if (*interrupted || pt_dns_mono_ms() >= deadline) {
            ares_cancel(ch);
            break;
        }
        ares_socket_t socks[ARES_GETSOCK_MAXNUM];
        int bits = ares_getsock(ch, socks, ARES_GETSOCK_MAXNUM);
        struct pollfd pfd[ARES_GETSOCK_MAXNUM];
        nfds_t n = 0;
        for (int i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
            /* ARES_GETSOCK_WRITABLE shifts a signed 1 by up to 31 */
            unsigned ub = (unsigned)bits;
            short ev = (short)(((ub >> i) & 1u ? POLLIN : 0) | ((ub >> (i + ARES_GETSOCK_MAXNUM)) & 1u ? POLLOUT : 0));
            if (ev) pfd[n++] = (struct pollfd){.fd = socks[i], .events = ev};
        }
        struct timeval tv;
        int ms = ares_timeout(ch, NULL, &tv) ? (int)(tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000) : 100;
        if (interrupt && ms > 100) ms = 100; /* look at pending signals now and then */
        int r = poll(pfd, n, ms);
        if (r < 0 && errno != EINTR) break;
        bool any = false;
        for (nfds_t i = 0; r > 0 && i < n; i++) {
            if (!pfd[i].revents) continue;
            any = true;
            ares_process_fd(ch, (pfd[i].revents & (POLLIN | POLLERR | POLLHUP)) ? pfd[i].fd : ARES_SOCKET_BAD,
                            (pfd[i].revents & POLLOUT) ? pfd[i].fd : ARES_SOCKET_BAD);
        }
        if (!any) ares_process_fd(ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    }
}

bool pt_dns_resolve_now(const pt_dns_conf *conf, const char *host, pt_arena *a, pt_dns_answer *out, char *err,
                        size_t errcap)
{
    memset(out, 0, sizeof(*out));
    ares_channel ch = channel_new(conf, NULL, NULL, err, errcap);
    if (!ch) return false;
    blocking_query q = {.a = a, .out = out};
    bool interrupted = false;
    ares_getaddrinfo(ch, host, NULL, &HINTS, on_blocking_answer, &q);
    wait_blocking(ch, &q.done, NULL, &interrupted);
    ares_destroy(ch); /* a query still pending (poll failed) ends here */
    if (out->n) return true;
    snprintf(err, errcap, "cannot resolve '%s': %s", host,
             !q.done ? "resolver failure"
             : q.status == ARES_SUCCESS ? "no address"
             : q.status == ARES_ECANCELLED ? "no answer within 30s" : ares_strerror(q.status));
    return false;
}

/* ------------------------------------------------------------------ SRV */

/* Steps *pos over a (possibly compressed) name in a DNS message. */
static bool skip_name(const unsigned char *buf, int len, int *pos)
{
    int p = *pos;
    for (int labels = 0; labels < 128; labels++) {
        if (p >= len) return false;
        unsigned c = buf[p];
        if (c == 0) {
            *pos = p + 1;
            return true;
        }
        if ((c & 0xC0) == 0xC0) {
            if (p + 2 > len) return false;
            *pos = p + 2;
            return true;
        }
        if (c & 0xC0) return false;
        p += 1 + (int)c;
    }
    return false;
}

/* The smallest TTL of the answer section (a TTL with the top bit set counts
 * as 0, RFC 2181 8). False when the message is malformed. */
static bool answer_min_ttl(const unsigned char *buf, int len, uint32_t *ttl)
{
    if (len < 12) return false;
    unsigned qd = (unsigned)buf[4] << 8 | buf[5], an = (unsigned)buf[6] << 8 | buf[7];
    int p = 12;
    for (unsigned i = 0; i < qd; i++) {
        if (!skip_name(buf, len, &p) || (p += 4) > len) return false;
    }
    bool any = false;
    uint32_t min = 0;
    for (unsigned i = 0; i < an; i++) {
        if (!skip_name(buf, len, &p) || p + 10 > len) return false;
        uint32_t t = (uint32_t)buf[p + 4] << 24 | (uint32_t)buf[p + 5] << 16 | (uint32_t)buf[p + 6] << 8 | buf[p + 7];
        int rdlen = buf[p + 8] << 8 | buf[p + 9];
        p += 10 + rdlen;
        if (p > len) return false;
        if (t > 0x7fffffffu) t = 0;
        if (!any || t < min) min = t;
        any = true;
    }
    *ttl = min;
    return any;
}

/* A record's target as a host Portico can use (it becomes a target's host,
 * its Host/SNI and a metrics label): a DNS name of letters, digits, '-',
 * '_' and dots without empty labels, at most 253 characters, or an IP
 * address. c-ares hands other bytes over escaped ("\\032"): such a
 * record is not used. */
static bool srv_host_ok(const char *h, size_t hl)
{
    if (hl == 0 || hl > 253) return false;
    char tmp[254];
    memcpy(tmp, h, hl);
    tmp[hl] = '\0';
    unsigned char ip[16];
    if (inet_pton(AF_INET6, tmp, ip) == 1) return true;
    for (size_t i = 0; i < hl; i++) {
        char c = h[i];
        bool dot = c == '.';
        if (!(dot || c == '-' || c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
            return false;
        if (dot && (i == 0 || h[i - 1] == '.')) return false;
    }
    return h[hl - 1] != '.';
}

/* A record that can be a target: not "." (the service is not offered there,
 * RFC 2782), a usable host, a port that can be connected to. */
static bool srv_usable(const struct ares_srv_reply *x)
{
    if (!x->host || x->port == 0) return false;
    size_t hl = strlen(x->host);
    if (hl && x->host[hl - 1] == '.') hl--;
    return srv_host_ok(x->host, hl);
}

static int srv_cmp(const void *x, const void *y)
{
    const pt_dns_srv *a = x, *b = y;
    int c = strcmp(a->host, b->host);
    if (c) return c;
    if (a->port != b->port) return a->port < b->port ? -1 : 1;
    return a->weight < b->weight ? -1 : a->weight > b->weight;
}

bool pt_dns_srv_parse(const unsigned char *buf, int len, pt_arena *a, pt_dns_srv_answer *out, char *err,
                      size_t errcap)
{
    memset(out, 0, sizeof(*out));
    struct ares_srv_reply *r = NULL;
    int rc = ares_parse_srv_reply(buf, len, &r);
    if (rc != ARES_SUCCESS) {
        snprintf(err, errcap, "%s", ares_strerror(rc));
        return false;
    }
    uint32_t ttl = 0;
    if (!answer_min_ttl(buf, len, &ttl)) {
        ares_free_data(r);
        snprintf(err, errcap, "malformed answer");
        return false;
    }
    int prio = -1;
    for (const struct ares_srv_reply *x = r; x; x = x->next)
        if (srv_usable(x) && (prio < 0 || x->priority < prio)) prio = x->priority;
    pt_dns_srv *v = pt_arena_alloc(a, PT_DNS_SRV_MAX * sizeof(*v));
    uint32_t n = 0;
    for (const struct ares_srv_reply *x = r; x && n < PT_DNS_SRV_MAX; x = x->next) {
        if (x->priority != prio || !srv_usable(x)) continue;
        size_t hl = strlen(x->host);
        if (x->host[hl - 1] == '.') hl--;
        char *h = pt_arena_strndup(a, x->host, hl);
        for (char *c = h; *c; c++)
            if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
        v[n++] = (pt_dns_srv){.host = h, .port = x->port, .weight = x->weight};
    }
    ares_free_data(r);
    if (!n) {
        snprintf(err, errcap, "no usable record (the service is not offered)");
        return false;
    }
    qsort(v, n, sizeof(*v), srv_cmp);
    uint32_t m = 1;
    for (uint32_t i = 1; i < n; i++)
        if (srv_cmp(&v[i], &v[m - 1]) != 0) v[m++] = v[i];
    *out = (pt_dns_srv_answer){.v = v, .n = m, .priority = (uint16_t)prio, .ttl_s = ttl};
    return true;
}

bool pt_dns_srv_same(const pt_dns_srv_answer *x, const pt_dns_srv_answer *y)
{
    if (x->n != y->n) return false;
    for (uint32_t i = 0; i < x->n; i++)
        if (srv_cmp(&x->v[i], &y->v[i]) != 0) return false;
    return true;
}

typedef struct {
    bool done, parsed;
    int status;
    pt_arena *a;
    pt_dns_srv_answer *out;
    char why[200];
} srv_query;

static void on_srv_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    srv_query *q = arg;
    q->done = true;
    q->status = status;
    if (status == ARES_SUCCESS) q->parsed = pt_dns_srv_parse(abuf, alen, q->a, q->out, q->why, sizeof(q->why));
}

bool pt_dns_resolve_srv_now(const pt_dns_conf *conf, const char *name, const sigset_t *interrupt, pt_arena *a,
                            pt_dns_srv_answer *out, char *err, size_t errcap)
{
    memset(out, 0, sizeof(*out));
    ares_channel ch = channel_new(conf, NULL, NULL, err, errcap);
    if (!ch) return false;
    srv_query q = {.a = a, .out = out};
    bool interrupted = false;
    ares_search(ch, name, 1 /* C_IN */, 33 /* T_SRV */, on_srv_answer, &q);
    wait_blocking(ch, &q.done, interrupt, &interrupted);
    ares_destroy(ch);
    if (q.parsed) {
        out->at_ms = pt_dns_mono_ms();
        return true;
    }
    snprintf(err, errcap, "cannot resolve SRV '%s': %s", name,
             interrupted ? "interrupted"
             : !q.done ? "resolver failure"
             : q.status == ARES_SUCCESS ? q.why
             : q.status == ARES_ECANCELLED ? "no answer within 30s" : ares_strerror(q.status));
    return false;
}
