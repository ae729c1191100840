/* buf.h — byte buffers with a per-thread pool of fixed-size blocks.
 *
 * A pt_buf holds bytes in data[off, off+len). Buffers of the standard size
 * (PT_BUF_BLOCK) come from and return to a thread-local free list, so the
 * hot path allocates nothing once warm; an idle connection holds no buffer
 * at all (pt_buf_release when empty). Larger buffers fall back to malloc. */
#ifndef PT_CORE_BUF_H
#define PT_CORE_BUF_H

#include "core/common.h"

#define PT_BUF_BLOCK 16384u

typedef struct {
    char *data;
    uint32_t off;
    uint32_t len;
    uint32_t cap;
} pt_buf;

/* Make sure at least `n` bytes are free after the data; compacts, then grows. */
void pt_buf_reserve(pt_buf *b, size_t n);
/* Appends n bytes (reserving as needed). */
void pt_buf_append(pt_buf *b, const void *p, size_t n);
static inline void pt_buf_append_str(pt_buf *b, pt_str s) { pt_buf_append(b, s.p, s.n); }
/* Pointer to the free space after the data (call pt_buf_reserve first) and its size. */
static inline char *pt_buf_tail(pt_buf *b) { return b->data + b->off + b->len; }
static inline size_t pt_buf_tailroom(const pt_buf *b) { return b->data ? b->cap - b->off - b->len : 0; }
static inline char *pt_buf_head(const pt_buf *b) { return b->data + b->off; }
/* Drops n bytes from the front. When empty, rewinds to the start. */
void pt_buf_consume(pt_buf *b, size_t n);
/* Returns the storage to the pool (buffer must be empty or its data is discarded). */
void pt_buf_release(pt_buf *b);
struct iovec;
/* Zero-copy send: one writev(2) of b's pending bytes followed by `extra`;
 * whatever was not written (of b, then of the extras) stays in / is
 * appended to b. Returns PT_OK when everything went out, PT_AGAIN when
 * bytes remain queued in b, PT_ERR on a socket error (errno set). */
int pt_buf_writev(int fd, pt_buf *b, const struct iovec *extra, int nextra);

/* Frees this thread's cached blocks (call when a thread exits). */
void pt_buf_pool_free(void);

#endif
