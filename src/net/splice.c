/* splice.c — see splice.h. */
#include "net/splice.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/common.h"

#define STEP_ROUNDS 64 /* syscall rounds per step: the loop serves others between them */

typedef struct {
    size_t n;
    int fds[PT_SPLICE_POOL_MAX][2];
} pipe_pool;

static pipe_pool *pool_of(const pt_loop *loop) { return pt_loop_slot(loop, PT_LOOP_SLOT_SPLICE); }

bool pt_splice_open(pt_loop *loop, pt_splice *s, uint64_t len, size_t pipe_size)
{
    *s = (pt_splice){.rd = -1, .wr = -1, .remaining = len};
    int fds[2];
    pipe_pool *p = pool_of(loop);
    if (p && p->n) {
        p->n--;
        fds[0] = p->fds[p->n][0];
        fds[1] = p->fds[p->n][1];
    } else if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        return false;
    }
    int cap = fcntl(fds[1], F_GETPIPE_SZ);
    if (pipe_size && cap != (int)pipe_size) {
        (void)fcntl(fds[1], F_SETPIPE_SZ, (int)pipe_size); /* above pipe-max-size: keep the default */
        cap = fcntl(fds[1], F_GETPIPE_SZ);
    }
    s->rd = fds[0];
    s->wr = fds[1];
    s->pipe_cap = cap > 0 ? (uint32_t)cap : 65536u;
    return true;
}

pt_splice_status pt_splice_step(pt_splice *s, int src, int dst, bool dst_ready, size_t budget,
                                pt_splice_moved *moved)
{
    PT_ASSERT(s->rd >= 0);
    uint64_t taken = 0;
    for (int round = 0; round < STEP_ROUNDS; round++) {
        /* Source into the pipe while it has room. EAGAIN with bytes in the
         * pipe may mean that the pipe is full (a socket fills pipe buffers
         * with partial pages): drain, then try again. */
        bool src_blocked = true;
        if (s->remaining && s->in_pipe < s->pipe_cap && (!budget || taken < budget)) {
            size_t want = (size_t)PT_MIN(s->remaining, (uint64_t)(s->pipe_cap - s->in_pipe));
            ssize_t n = splice(src, NULL, s->wr, NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n > 0) {
                s->in_pipe += (uint32_t)n;
                s->remaining -= (uint64_t)n;
                taken += (uint64_t)n;
                moved->in += (uint64_t)n;
                src_blocked = false;
            } else if (n == 0) {
                return PT_SPLICE_SRC_EOF;
            } else if (errno == EINTR) {
                continue;
            } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
                return PT_SPLICE_SRC_ERROR;
            }
        }
        if (s->in_pipe) {
            if (!dst_ready) return PT_SPLICE_WAIT_DST;
            ssize_t m = splice(s->rd, NULL, dst, NULL, s->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (m > 0) {
                s->in_pipe -= (uint32_t)m;
                moved->out += (uint64_t)m;
            } else if (m < 0 && errno == EINTR) {
                continue;
            } else if (m < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                return PT_SPLICE_WAIT_DST;
            } else {
                return PT_SPLICE_DST_ERROR;
            }
        }
        if (!s->remaining && !s->in_pipe) return PT_SPLICE_DONE;
        if (budget && taken >= budget) break;
        if (src_blocked && !s->in_pipe) return PT_SPLICE_WAIT_SRC;
    }
    return s->in_pipe ? PT_SPLICE_WAIT_DST : PT_SPLICE_WAIT_SRC;
}

void pt_splice_close(pt_loop *loop, pt_splice *s, bool clean)
{
    if (s->rd < 0) return;
    pipe_pool *p = pool_of(loop);
    if (!p && clean && !s->in_pipe) {
        p = pt_xcalloc(1, sizeof(*p));
        pt_loop_set_slot(loop, PT_LOOP_SLOT_SPLICE, p);
    }
    if (p && clean && !s->in_pipe && p->n < PT_SPLICE_POOL_MAX) {
        p->fds[p->n][0] = s->rd;
        p->fds[p->n][1] = s->wr;
        p->n++;
    } else {
        close(s->rd);
        close(s->wr);
    }
    s->rd = s->wr = -1;
    s->in_pipe = 0;
}

void pt_splice_pool_free(pt_loop *loop)
{
    pipe_pool *p = pool_of(loop);
    if (!p) return;
    for (size_t i = 0; i < p->n; i++) {
        close(p->fds[i][0]);
        close(p->fds[i][1]);
    }
    free(p);
    pt_loop_set_slot(loop, PT_LOOP_SLOT_SPLICE, NULL);
}

size_t pt_splice_pool_size(const pt_loop *loop)
{
    const pipe_pool *p = pool_of(loop);
    return p ? p->n : 0;
}
