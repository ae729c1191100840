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
 *  - Released blocks go to a per-thread LIFO cache, resident, so that under
 *    load a get/put is a pointer swap. The cache holds at most
 *    PT_BUF_POOL_MAX (512) blocks; a release beyond returns the block's
 *    pages to the OS at once (madvise MADV_DONTNEED).
 *  - Decay back to the hot set (PT_BUF_POOL_HOT, 32): the blocks that stayed
 *    unused in the cache for a whole span are returned to the OS (their
 *    pages; the address range is parked and reused first, at the cost of a
 *    page fault per touched page, no syscall). A span ends every 1024 block
 *    gets/puts on the thread (usage-driven, no clock) and at each
 *    pt_buf_pool_trim() call. A thread that goes quiet right after a burst
 *    does no gets/puts, so only pt_buf_pool_trim() (called by the worker
 *    from a timer) brings it back to the hot set: call it, or up to
 *    PT_BUF_POOL_MAX blocks' touched pages stay resident.
 *  - Address space stays at the peak number of blocks in use at once (16 KiB
 *    each); page tables for it are ~1/512 of that. RSS does not.
 *  - Blocks may be released on another thread than the one that took them;
 *    mappings are never unmapped. pt_buf_pool_free (thread exit) returns the
 *    pages and hands the address ranges to the other threads. */
#ifndef PT_CORE_BUF_H
#define PT_CORE_BUF_H

#include "core/common.h"

#define PT_BUF_BLOCK 16384u
/* Blocks a thread keeps cached even when idle (the "hot set"): 32 blocks =
 * 512 KiB of address space, typically 128 KiB resident (a small request
 * touches one 4 KiB page of its block). Enough for light traffic to run
 * without a page fault or syscall per request; the decay never goes below. */
#define PT_BUF_POOL_HOT 32u
/* Most blocks a thread caches while they are in demand: 512 = 8 MiB. Under
 * steady load the cache follows the number of buffers in flight (a proxied
 * request holds up to about 3 at once: client read, upstream read, queued
 * output) with no syscall; a release beyond it returns the pages at once.
 * Measured: with only 32 cached, 50 keep-alive clients through the proxy
 * cost 1.3 madvise + 1.3 page faults per request and ~75% more CPU. */
#define PT_BUF_POOL_MAX 512u

typedef struct {
    char *data;
    uint32_t off;
    uint32_t len;
    uint32_t cap;
    bool large;    /* storage is a large block (pt_buf_reserve_large) */
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
/* Large blocks, for bodies that stream: reading a 1 MiB body 16 KiB at a
 * time costs 64 read(2) calls and as many passes through the proxy path;
 * a connection whose reads fill its standard block asks for a large one
 * (pt_buf_large_config's size, 64 KiB by default) for the rest of that body.
 * Large blocks come from a small per-thread cache (heap), and the bytes of
 * large blocks held by buffers on a thread never exceed its budget: over
 * it a buffer just keeps its standard block, so memory under many
 * concurrent streams stays bounded by configuration
 * (limits.stream_buffer_memory per worker).
 *
 * Gives an EMPTY buffer (len 0) a large block, returning its standard block
 * first. Returns true if the buffer now holds a large block (also when it
 * already did), false when the budget is spent or the buffer is not empty. */
bool pt_buf_reserve_large(pt_buf *b);
/* This thread's large-block size (>= PT_BUF_BLOCK) and budget (bytes of
 * large blocks held at once; 0 disables them). Blocks of an older size are
 * freed as they come back. */
void pt_buf_large_config(size_t size, size_t budget);
/* Bytes of large blocks held by this thread's buffers now. */
size_t pt_buf_large_in_use(void);
/* Large blocks this thread's buffers have taken since it started. */
uint64_t pt_buf_large_taken(void);

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
 * needed since the previous call (or the previous usage-driven decay) — the
 * cache's low-water mark over that span — keeping at least PT_BUF_POOL_HOT.
 * O(blocks returned); no syscall when there is nothing to return, one
 * madvise per returned block otherwise. Call it on each thread that uses
 * buffers (every worker) periodically from its loop, e.g. a 500 ms timer:
 * after a burst the cache is back to the hot set within two calls (the span
 * in which the burst ended saw the cache drawn, so it returns nothing). */
void pt_buf_pool_trim(void);
/* This thread's pool: blocks cached resident, and blocks whose pages were
 * returned to the OS (address space kept for reuse). Either may be NULL. */
void pt_buf_pool_stats(size_t *cached, size_t *returned);
/* Returns this thread's cached blocks (call when a thread exits). */
void pt_buf_pool_free(void);

#endif
