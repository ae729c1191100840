/* loop.c — see loop.h. A level-triggered epoll loop, a binary min-heap of
 * timers, a FIFO of deferred callbacks and an eventfd-backed inbox for
 * cross-thread posts. */
#include "core/loop.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define PT_LOOP_MAX_EVENTS 256

typedef struct pt_post {
    struct pt_post *next;
    void (*fn)(pt_loop *, void *);
    void *data;
} pt_post;

struct pt_loop {
    int epfd;
    bool running;
    uint64_t now_ms;
    uint64_t clock_offset_ms; /* pt_loop_advance_clock (tests) */
    uint64_t wall_us;
    void *data;
    void *slots[PT_LOOP_NSLOTS];
    /* timers: heap[1..ntimers] */
    pt_timer **heap;
    uint32_t ntimers, heap_cap;
    /* deferred callbacks */
    pt_defer *defer_head, *defer_tail;
    /* cross-thread inbox */
    pt_io wake_io;
    pthread_mutex_t post_lock;
    pt_post *posts;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void pt_loop_update_time(pt_loop *loop)
{
    loop->now_ms = mono_ms() + loop->clock_offset_ms;
    loop->wall_us = wall_us();
}

uint64_t pt_loop_now(const pt_loop *loop) { return loop->now_ms; }
uint64_t pt_loop_wall_us(const pt_loop *loop) { return loop->wall_us; }
void pt_loop_set_data(pt_loop *loop, void *data) { loop->data = data; }
void *pt_loop_data(const pt_loop *loop) { return loop->data; }
void pt_loop_set_slot(pt_loop *loop, pt_loop_slot_id slot, void *value) { loop->slots[slot] = value; }
void *pt_loop_slot(const pt_loop *loop, pt_loop_slot_id slot) { return loop->slots[slot]; }

static void run_posts(pt_loop *loop, pt_io *io, uint32_t events);

pt_loop *pt_loop_new(void)
{
    pt_loop *loop = pt_xcalloc(1, sizeof(*loop));
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) {
        free(loop);
        return NULL;
    }
    loop->heap_cap = 64;
    loop->heap = pt_xmalloc(sizeof(pt_timer *) * loop->heap_cap);
    pthread_mutex_init(&loop->post_lock, NULL);
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0 || pt_io_start(loop, &loop->wake_io, efd, EPOLLIN, run_posts, NULL) != PT_OK) {
        if (efd >= 0) close(efd);
        close(loop->epfd);
        free(loop->heap);
        free(loop);
        return NULL;
    }
    pt_loop_update_time(loop);
    return loop;
}

void pt_loop_free(pt_loop *loop)
{
    if (!loop) return;
    close(loop->wake_io.fd);
    close(loop->epfd);
    pthread_mutex_destroy(&loop->post_lock);
    while (loop->posts) {
        pt_post *p = loop->posts;
        loop->posts = p->next;
        free(p);
    }
    free(loop->heap);
    free(loop);
}

int pt_io_start(pt_loop *loop, pt_io *io, int fd, uint32_t events, pt_io_cb cb, void *data)
{
    io->fd = fd;
    io->events = events;
    io->cb = cb;
    io->data = data;
    struct epoll_event ev = {.events = events, .data.ptr = io};
    return epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) == 0 ? PT_OK : PT_ERR;
}

int pt_io_modify(pt_loop *loop, pt_io *io, uint32_t events)
{
    if (io->events == events) return PT_OK;
    io->events = events;
    struct epoll_event ev = {.events = events, .data.ptr = io};
    return epoll_ctl(loop->epfd, EPOLL_CTL_MOD, io->fd, &ev) == 0 ? PT_OK : PT_ERR;
}

int pt_io_move(pt_loop *loop, pt_io *from, pt_io *to, void *data)
{
    *to = *from;
    to->data = data;
    from->events = 0;
    from->fd = -1;
    struct epoll_event ev = {.events = to->events, .data.ptr = to};
    return epoll_ctl(loop->epfd, EPOLL_CTL_MOD, to->fd, &ev) == 0 ? PT_OK : PT_ERR;
}

void pt_io_stop(pt_loop *loop, pt_io *io)
{
    if (io->fd >= 0) epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, NULL);
    io->events = 0;
}

/* ---- timer heap ---- */

static inline void heap_set(pt_loop *loop, uint32_t i, pt_timer *t)
{
    loop->heap[i] = t;
    t->heap_idx = i;
}

static void heap_up(pt_loop *loop, uint32_t i)
{
    pt_timer *t = loop->heap[i];
    while (i > 1) {
        uint32_t p = i / 2;
        if (loop->heap[p]->deadline <= t->deadline) break;
        heap_set(loop, i, loop->heap[p]);
        i = p;
    }
    heap_set(loop, i, t);
}

static void heap_down(pt_loop *loop, uint32_t i)
{
    pt_timer *t = loop->heap[i];
    for (;;) {
        uint32_t c = i * 2;
        if (c > loop->ntimers) break;
        if (c + 1 <= loop->ntimers && loop->heap[c + 1]->deadline < loop->heap[c]->deadline) c++;
        if (loop->heap[c]->deadline >= t->deadline) break;
        heap_set(loop, i, loop->heap[c]);
        i = c;
    }
    heap_set(loop, i, t);
}

void pt_timer_stop(pt_loop *loop, pt_timer *t)
{
    uint32_t i = t->heap_idx;
    if (i == 0) return;
    PT_ASSERT(i <= loop->ntimers && loop->heap[i] == t);
    pt_timer *last = loop->heap[loop->ntimers--];
    t->heap_idx = 0;
    if (last == t) return;
    heap_set(loop, i, last);
    heap_up(loop, i);
    heap_down(loop, last->heap_idx);
}

void pt_timer_start_at(pt_loop *loop, pt_timer *t, uint64_t deadline, pt_timer_cb cb, void *data)
{
    t->cb = cb;
    t->data = data;
    if (t->heap_idx) {
        uint64_t old = t->deadline;
        t->deadline = deadline;
        if (deadline < old) heap_up(loop, t->heap_idx);
        else if (deadline > old) heap_down(loop, t->heap_idx);
        return;
    }
    t->deadline = deadline;
    if (loop->ntimers + 1 >= loop->heap_cap) {
        loop->heap_cap *= 2;
        loop->heap = pt_xrealloc(loop->heap, sizeof(pt_timer *) * loop->heap_cap);
    }
    loop->ntimers++;
    heap_set(loop, loop->ntimers, t);
    heap_up(loop, loop->ntimers);
}

void pt_timer_start(pt_loop *loop, pt_timer *t, uint64_t ms, pt_timer_cb cb, void *data)
{
    pt_timer_start_at(loop, t, loop->now_ms + ms, cb, data);
}

static int run_timers(pt_loop *loop)
{
    int n = 0;
    while (loop->ntimers && loop->heap[1]->deadline <= loop->now_ms) {
        pt_timer *t = loop->heap[1];
        pt_timer_stop(loop, t);
        t->cb(loop, t);
        n++;
    }
    return n;
}

static int next_timeout(const pt_loop *loop)
{
    if (loop->defer_head) return 0;
    if (!loop->ntimers) return 1000;
    uint64_t d = loop->heap[1]->deadline;
    if (d <= loop->now_ms) return 0;
    uint64_t w = d - loop->now_ms;
    return w > 1000 ? 1000 : (int)w;
}

/* ---- deferred callbacks ---- */

void pt_defer_queue(pt_loop *loop, pt_defer *d, pt_defer_cb cb, void *data)
{
    d->cb = cb;
    d->data = data;
    if (d->queued) return;
    d->queued = true;
    d->next = NULL;
    if (loop->defer_tail) loop->defer_tail->next = d;
    else loop->defer_head = d;
    loop->defer_tail = d;
}

void pt_defer_cancel(pt_loop *loop, pt_defer *d)
{
    if (!d->queued) return;
    pt_defer **pp = &loop->defer_head, *prev = NULL;
    while (*pp && *pp != d) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp == d) {
        *pp = d->next;
        if (loop->defer_tail == d) loop->defer_tail = prev;
    }
    d->queued = false;
    d->next = NULL;
}

static int run_defers(pt_loop *loop)
{
    /* Only run what is queued now; callbacks may queue more for next time. */
    pt_defer *tail = loop->defer_tail;
    int n = 0;
    while (loop->defer_head) {
        pt_defer *d = loop->defer_head;
        loop->defer_head = d->next;
        if (!loop->defer_head) loop->defer_tail = NULL;
        d->queued = false;
        d->next = NULL;
        d->cb(loop, d);
        n++;
        if (d == tail) break;
    }
    return n;
}

/* ---- cross-thread posts ---- */

void pt_loop_post(pt_loop *loop, void (*fn)(pt_loop *, void *), void *data)
{
    pt_post *p = pt_xmalloc(sizeof(*p));
    p->fn = fn;
    p->data = data;
    pthread_mutex_lock(&loop->post_lock);
    p->next = loop->posts;
    loop->posts = p;
    pthread_mutex_unlock(&loop->post_lock);
    uint64_t one = 1;
    ssize_t w = write(loop->wake_io.fd, &one, sizeof(one));
    (void)w;
}

static void run_posts(pt_loop *loop, pt_io *io, uint32_t events)
{
    uint64_t v;
    while (read(io->fd, &v, sizeof(v)) > 0) {
    }
    pthread_mutex_lock(&loop->post_lock);
    pt_post *list = loop->posts;
    loop->posts = NULL;
    pthread_mutex_unlock(&loop->post_lock);
    /* reverse to FIFO */
    pt_post *fifo = NULL;
    while (list) {
        pt_post *n = list->next;
        list->next = fifo;
        fifo = list;
        list = n;
    }
    while (fifo) {
        pt_post *n = fifo->next;
        fifo->fn(loop, fifo->data);
        free(fifo);
        fifo = n;
    }
}

void pt_loop_stop(pt_loop *loop) { loop->running = false; }

/* One iteration: wait (at most `max_wait_ms`, less if a timer is due or a
 * deferred callback is queued), dispatch I/O, due timers, deferred calls.
 * Returns the number of callbacks run. */
static int run_iteration(pt_loop *loop, int max_wait_ms)
{
    struct epoll_event evs[PT_LOOP_MAX_EVENTS];
    int wait = next_timeout(loop);
    if (max_wait_ms >= 0 && max_wait_ms < wait) wait = max_wait_ms;
    int n = epoll_wait(loop->epfd, evs, PT_LOOP_MAX_EVENTS, wait);
    pt_loop_update_time(loop);
    if (n < 0 && errno != EINTR) pt_panic(__FILE__, __LINE__, "epoll_wait failed");
    for (int i = 0; i < n; i++) {
        pt_io *io = evs[i].data.ptr;
        io->cb(loop, io, evs[i].events);
    }
    if (n < 0) n = 0;
    n += run_timers(loop);
    n += run_defers(loop);
    return n;
}

void pt_loop_run(pt_loop *loop)
{
    loop->running = true;
    while (loop->running) run_iteration(loop, -1);
}

int pt_loop_run_once(pt_loop *loop, int max_wait_ms) { return run_iteration(loop, max_wait_ms); }

bool pt_loop_has_deferred(const pt_loop *loop) { return loop->defer_head != NULL; }

size_t pt_loop_timer_count(const pt_loop *loop) { return loop->ntimers; }

void pt_loop_advance_clock(pt_loop *loop, uint64_t ms)
{
    loop->clock_offset_ms += ms;
    loop->now_ms += ms;
}
