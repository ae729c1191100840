/* loop.h — one epoll event loop per worker thread, with timers and deferred
 * callbacks. Knows nothing of HTTP.
 *
 * Ownership: the loop never owns pt_io/pt_timer/pt_defer objects; they are
 * embedded in the caller's structures. Stop a timer / remove an io before
 * freeing the structure that holds it. All functions except pt_loop_post()
 * must be called from the loop's own thread. */
#ifndef PT_CORE_LOOP_H
#define PT_CORE_LOOP_H

#include <stdint.h>
#include <sys/epoll.h>

#include "core/common.h"

typedef struct pt_loop pt_loop;

typedef struct pt_io pt_io;
typedef void (*pt_io_cb)(pt_loop *loop, pt_io *io, uint32_t events);
struct pt_io {
    int fd;
    uint32_t events; /* currently registered EPOLL* mask */
    pt_io_cb cb;
    void *data;
};

typedef struct pt_timer pt_timer;
typedef void (*pt_timer_cb)(pt_loop *loop, pt_timer *t);
struct pt_timer {
    uint64_t deadline; /* ms, pt_loop_now() clock */
    uint32_t heap_idx; /* 0 = not armed; private */
    pt_timer_cb cb;
    void *data;
};

typedef struct pt_defer pt_defer;
typedef void (*pt_defer_cb)(pt_loop *loop, pt_defer *d);
struct pt_defer {
    pt_defer *next; /* private */
    bool queued;    /* private */
    pt_defer_cb cb;
    void *data;
};

pt_loop *pt_loop_new(void);
void pt_loop_free(pt_loop *loop);

/* Register/modify/remove interest. events: EPOLLIN|EPOLLOUT|EPOLLRDHUP...
 * (edge/level: level-triggered). Returns PT_OK or PT_ERR (errno set). */
int pt_io_start(pt_loop *loop, pt_io *io, int fd, uint32_t events, pt_io_cb cb, void *data);
int pt_io_modify(pt_loop *loop, pt_io *io, uint32_t events);
void pt_io_stop(pt_loop *loop, pt_io *io);
/* The registration of `from` (fd, events, cb) moves to `to`, whose events
 * then carry `data`; `from` is left unregistered. One epoll_ctl. */
int pt_io_move(pt_loop *loop, pt_io *from, pt_io *to, void *data);

/* (Re)arms `t` to fire once, `ms` from now. */
void pt_timer_start(pt_loop *loop, pt_timer *t, uint64_t ms, pt_timer_cb cb, void *data);
/* Re-arm at an absolute deadline (pt_loop_now() clock). */
void pt_timer_start_at(pt_loop *loop, pt_timer *t, uint64_t deadline, pt_timer_cb cb, void *data);
void pt_timer_stop(pt_loop *loop, pt_timer *t);
static inline bool pt_timer_active(const pt_timer *t) { return t->heap_idx != 0; }

/* Runs cb on the next loop iteration (same thread). Queuing twice is a no-op. */
void pt_defer_queue(pt_loop *loop, pt_defer *d, pt_defer_cb cb, void *data);
void pt_defer_cancel(pt_loop *loop, pt_defer *d);

/* Thread-safe: run fn(data) on the loop's thread soon (wakes it via eventfd). */
void pt_loop_post(pt_loop *loop, void (*fn)(pt_loop *, void *), void *data);

/* Monotonic milliseconds, cached once per iteration. */
uint64_t pt_loop_now(const pt_loop *loop);
/* Wall-clock time (microseconds since the epoch), cached once per iteration. */
uint64_t pt_loop_wall_us(const pt_loop *loop);
/* Refresh the cached clocks (after a long callback). */
void pt_loop_update_time(pt_loop *loop);

/* Runs until pt_loop_stop(). */
void pt_loop_run(pt_loop *loop);
void pt_loop_stop(pt_loop *loop); /* from the loop thread */

/* For tests and fuzz drivers that run a loop step by step on their own
 * thread (the server uses pt_loop_run): one iteration of pt_loop_run —
 * wait for I/O at most `max_wait_ms` (0: just poll; -1: as pt_loop_run,
 * i.e. until the next timer, at most 1 s), then dispatch I/O events, due
 * timers and the deferred callbacks queued before this iteration. Returns
 * how many callbacks (I/O, timer, deferred) ran: 0 means nothing happened. */
int pt_loop_run_once(pt_loop *loop, int max_wait_ms);
/* True while deferred callbacks are queued (they run in the next iteration). */
bool pt_loop_has_deferred(const pt_loop *loop);
/* Number of armed timers. */
size_t pt_loop_timer_count(const pt_loop *loop);
/* Moves this loop's monotonic clock (pt_loop_now) forward by `ms` for good:
 * timers due by then fire in the next iteration, in deadline order. Lets a
 * test reach timeouts without waiting. The wall clock is not affected. */
void pt_loop_advance_clock(pt_loop *loop, uint64_t ms);

/* Per-loop user pointer (the worker). */
void pt_loop_set_data(pt_loop *loop, void *data);
void *pt_loop_data(const pt_loop *loop);

/* Loop-local slots: per-worker state of a layer that sits below the worker
 * (server/worker.h) and so cannot reach it through pt_loop_data. One owner
 * per slot, which creates and frees its value; NULL until set. */
typedef enum {
    PT_LOOP_SLOT_REDIS = 0, /* plugin/redis.c: the worker's Redis connections */
    PT_LOOP_SLOT_TRACE,     /* obs/trace_export.c: the worker's spans not yet queued */
    PT_LOOP_SLOT_SPLICE,    /* net/splice.c: the worker's idle pipes */
    PT_LOOP_NSLOTS
} pt_loop_slot_id;
void pt_loop_set_slot(pt_loop *loop, pt_loop_slot_id slot, void *value);
void *pt_loop_slot(const pt_loop *loop, pt_loop_slot_id slot);

#endif
