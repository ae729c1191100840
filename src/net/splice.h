/* splice.h — moving a body between two plain sockets through a pipe with
 * splice(2), without copying it into user space (docs/performance.md,
 * "splice(2) for bulk bodies").
 *
 * A pt_splice moves exactly `remaining` bytes from a source socket into its
 * pipe and from the pipe to a destination socket. It never blocks: both
 * sockets are non-blocking and the pipe is used with SPLICE_F_NONBLOCK. The
 * pipe is the only buffer: bytes are taken from the source only while the
 * pipe has room, so a slow destination stops the reads (backpressure).
 *
 * Who waits for what: after a step, a pipe that holds bytes waits for the
 * destination to be writable (PT_SPLICE_WAIT_DST), an empty pipe for the
 * source to be readable (PT_SPLICE_WAIT_SRC). The owners of the two sockets
 * keep their epoll registrations and report that readiness; a step that
 * stopped on its budget returns the same answers (level-triggered epoll
 * calls again).
 *
 * Pipes come from a small per-worker pool (a loop slot): taken lazily when
 * a splice opens, returned when it ends cleanly with an empty pipe, closed
 * otherwise. pt_splice_open fails (and the caller keeps copying) when no
 * pipe can be had (EMFILE, ENFILE...). */
#ifndef PT_NET_SPLICE_H
#define PT_NET_SPLICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/loop.h"

#define PT_SPLICE_POOL_MAX 16 /* idle pipes a worker keeps */

typedef struct {
    int rd, wr;          /* the pipe; -1 when none */
    uint32_t in_pipe;    /* bytes in the pipe, read from the source, not yet written */
    uint32_t pipe_cap;   /* the pipe's capacity (F_GETPIPE_SZ) */
    uint64_t remaining;  /* bytes still to take from the source */
} pt_splice;

typedef enum {
    PT_SPLICE_WAIT_SRC = 0, /* the pipe is empty: wait until the source is readable */
    PT_SPLICE_WAIT_DST,     /* the pipe holds bytes: wait until the destination is writable */
    PT_SPLICE_DONE,         /* every byte went through; the pipe is empty */
    PT_SPLICE_SRC_EOF,      /* the source closed before `remaining` bytes came */
    PT_SPLICE_SRC_ERROR,    /* reading the source failed (reset...) */
    PT_SPLICE_DST_ERROR,    /* writing the destination failed (EPIPE, reset...) */
} pt_splice_status;

/* How the owner of one end hears that a splice is over. */
typedef enum {
    PT_SPLICE_END_DONE = 0, /* every byte went through: the body is complete */
    PT_SPLICE_END_STOP,     /* back to the owner's own I/O (the other end failed, the request ended) */
    PT_SPLICE_END_FAIL,     /* this end's socket failed or its peer closed early */
} pt_splice_end;

/* Bytes one step moved: taken from the source, written to the destination. */
typedef struct {
    uint64_t in, out;
} pt_splice_moved;

/* Takes a pipe from loop's pool or a new one, sized to pipe_size when the
 * kernel allows (failure ignored), for `len` bytes. false: no pipe (errno). */
bool pt_splice_open(pt_loop *loop, pt_splice *s, uint64_t len, size_t pipe_size);

/* Moves what it can without blocking, at most `budget` bytes into the pipe
 * (0: no limit). `dst_ready` false: the destination has user-space bytes
 * queued before ours; only the pipe is filled. Adds to *moved. */
pt_splice_status pt_splice_step(pt_splice *s, int src, int dst, bool dst_ready, size_t budget,
                                pt_splice_moved *moved);

/* Ends the splice: the pipe goes back to loop's pool when it is empty and
 * `clean` (the body ended well), else it is closed. Idempotent. */
void pt_splice_close(pt_loop *loop, pt_splice *s, bool clean);

/* Closes the worker's idle pipes (worker exit). */
void pt_splice_pool_free(pt_loop *loop);

/* Idle pipes in loop's pool (tests). */
size_t pt_splice_pool_size(const pt_loop *loop);

#endif
