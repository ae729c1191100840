/* buf.h — byte buffers with a per-thread pool of fixed-size blocks.
 *
 * A pt_buf holds bytes in data[off, off+len). Buffers of the standard size
 * (PT_BUF_BLOCK) come from and return to a thread-local cache, so the hot
 * path allocates nothing once warm; an idle connection holds no buffer at
 * all (pt_buf_release when empty). Larger buffers fall back to malloc.
 *
 * Memory model of the blocks (buf.c):
 *  - Blocks are carved from 1 MiB anonymous mappings (mmap), never from
 *    malloc, so that their pages can be given back to the OS individually.
 *  - Each thread caches at most PT_BUF_POOL_HOT (32) released blocks,
 *    resident (the "hot set", <= 512 KiB per thread, usually one touched
 *    page each). A release beyond that returns the block's pages at once
 *    (madvise MADV_DONTNEED): a burst of N concurrent buffers leaves no RSS
 *    behind, only N * 16 KiB of address space, which later bursts reuse
 *    (a reused block costs page faults, no syscall).
 *  - Decay, driven by usage: every 1024 block gets/puts on a thread, the
 *    cached blocks that stayed unused for that whole span are returned too.
 *    A thread that goes quiet keeps its hot set until pt_buf_pool_trim().
 *  - Blocks may be released on another thread than the one that took them;
 *    mappings are never unmapped. pt_buf_pool_free (thread exit) returns the
 *    pages and hands the address ranges to the other threads. */
#ifndef PT_CORE_BUF_H
#define PT_CORE_BUF_H

#include "core/common.h"

#define PT_BUF_BLOCK 16384u
/* Resident blocks a thread keeps cached (the "hot set"): 32 blocks = 512 KiB
 * at most per worker (typically 4 KiB each: a small request touches one page).
 * A put beyond it returns the block's pages to the OS at once, so a burst of
 * N concurrent buffers pins nothing once it is over. 32 covers the buffers a
 * worker has in flight at one time under ordinary load (a keep-alive
 * connection holds one only while a request or response is partial) without
 * a syscall or page fault per request; more would pin more after a burst. */
#define PT_BUF_POOL_HOT 32u

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

/* Returns to the OS the pages of this thread's cached blocks that were not
 * needed since the previous call (or the previous usage-driven decay): the
 * cache's low-water mark over that span. Costs nothing when there is nothing
 * to return, one madvise per returned block otherwise. Call it on each
 * worker thread about once a second from a timer (e.g. a housekeeping or
 * idle timer): an idle worker's cache then empties within two calls. Not
 * calling it only means up to PT_BUF_POOL_HOT blocks stay resident. */
void pt_buf_pool_trim(void);
/* This thread's pool: blocks cached resident, and blocks whose pages were
 * returned to the OS (address space kept for reuse). Either may be NULL. */
void pt_buf_pool_stats(size_t *cached, size_t *returned);
/* Returns this thread's cached blocks (call when a thread exits). */
void pt_buf_pool_free(void);

#endif
