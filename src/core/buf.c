/* buf.c — see buf.h (the header comment describes the memory model). */
#include "core/buf.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/uio.h>

#if defined(__SANITIZE_ADDRESS__)
#define PT_BUF_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PT_BUF_ASAN 1
#endif
#endif
#ifdef PT_BUF_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* Usage-driven decay: every PT_BUF_POOL_EPOCH gets+puts on a thread, the
 * cached blocks that stayed unused for the whole epoch (the low-water mark
 * of the cache) are returned to the OS, down to the hot set.
 * pt_buf_pool_trim() ends an epoch early (from a worker's timer). */
#define PT_BUF_POOL_EPOCH 1024u
/* Blocks are carved from anonymous mappings of this many blocks (1 MiB), so
 * that their pages can be given back with madvise(MADV_DONTNEED): glibc never
 * returns the pages of a free()d 16 KiB chunk in the middle of an arena. */
#define PT_BUF_SLAB_BLOCKS 64u

typedef struct pool_block {
    struct pool_block *next;
} pool_block;

/* Resident cache (LIFO, linked through the blocks). */
static __thread pool_block *pool_head;
static __thread unsigned pool_count;
static __thread unsigned pool_low; /* lowest pool_count since the epoch began */
static __thread unsigned pool_ops; /* gets + puts since the epoch began */
/* Blocks whose pages were returned: address space only, reused before any
 * new mapping. Kept outside the blocks so that parking one touches nothing. */
static __thread char **cold;
static __thread size_t cold_n, cold_cap;
/* Unused rest of this thread's current mapping. */
static __thread char *slab_next, *slab_end;

/* Blocks left by exited threads (their pages already returned). */
static pthread_mutex_t orphan_mu = PTHREAD_MUTEX_INITIALIZER;
static char **orphans;
static size_t orphan_n, orphan_cap;
static atomic_size_t orphan_avail;

static void push_ptr(char ***v, size_t *n, size_t *cap, char *p)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        *v = pt_xrealloc(*v, *cap * sizeof **v);
    }
    (*v)[(*n)++] = p;
}

/* Gives the block's pages back to the OS and parks its address range. */
static void block_return(char *p)
{
    UNPOISON(p, PT_BUF_BLOCK);
    (void)madvise(p, PT_BUF_BLOCK, MADV_DONTNEED); /* cannot fail on our own mapping */
    POISON(p, PT_BUF_BLOCK);
    push_ptr(&cold, &cold_n, &cold_cap, p);
}

/* Returns the cached blocks that stayed unused for the whole epoch (the
 * low-water mark), but keeps at least `floor` cached, and starts a new epoch.
 * Pops from the head: O(returned), no walk over the kept ones. */
static void pool_decay(unsigned floor)
{
    unsigned keep = PT_MAX(pool_count - pool_low, PT_MIN(pool_count, floor));
    while (pool_count > keep) {
        pool_block *b = pool_head;
        pool_head = b->next;
        pool_count--;
        block_return((char *)b);
    }
    pool_low = pool_count;
    pool_ops = 0;
}

static inline void pool_tick(void)
{
    if (__builtin_expect(++pool_ops >= PT_BUF_POOL_EPOCH, 0)) pool_decay(PT_BUF_POOL_HOT);
}

static char *block_get_slow(void)
{
    char *p = NULL;
    if (cold_n) {
        p = cold[--cold_n];
    } else if (atomic_load_explicit(&orphan_avail, memory_order_relaxed)) {
        pthread_mutex_lock(&orphan_mu);
        if (orphan_n) p = orphans[--orphan_n];
        atomic_store_explicit(&orphan_avail, orphan_n, memory_order_relaxed);
        pthread_mutex_unlock(&orphan_mu);
    }
    if (!p) {
        if (slab_next == slab_end) {
            size_t len = (size_t)PT_BUF_SLAB_BLOCKS * PT_BUF_BLOCK;
            void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (m == MAP_FAILED) pt_panic(__FILE__, __LINE__, "out of memory mapping buffer blocks");
            slab_next = m;
            slab_end = slab_next + len;
        }
        p = slab_next;
        slab_next += PT_BUF_BLOCK;
    }
    UNPOISON(p, PT_BUF_BLOCK);
    return p;
}

static inline char *block_get(void)
{
    pool_tick();
    pool_block *b = pool_head;
    if (__builtin_expect(b != NULL, 1)) {
        pool_head = b->next;
        if (--pool_count < pool_low) pool_low = pool_count;
        UNPOISON(b, PT_BUF_BLOCK);
        return (char *)b;
    }
    return block_get_slow();
}

static inline void block_put(char *p)
{
    pool_tick();
    if (__builtin_expect(pool_count >= PT_BUF_POOL_MAX, 0)) {
        block_return(p);
        return;
    }
    pool_block *b = (pool_block *)(void *)p;
    b->next = pool_head;
    pool_head = b;
    pool_count++;
    POISON(p + sizeof *b, PT_BUF_BLOCK - sizeof *b); /* the link stays readable */
}

/* ------------------------------------------------------------ large blocks */

#define PT_BUF_LARGE_CACHE 8u /* large blocks kept per thread between bodies */

static __thread char *large_cache[PT_BUF_LARGE_CACHE];
static __thread unsigned large_cached;
static __thread size_t large_size = 64u * 1024;
static __thread size_t large_budget = 64u << 20;
static __thread size_t large_used;
static __thread uint64_t large_taken;

void pt_buf_large_config(size_t size, size_t budget)
{
    if (size < PT_BUF_BLOCK) size = PT_BUF_BLOCK;
    if (size != large_size) { /* cached blocks of the old size are no use */
        while (large_cached) free(large_cache[--large_cached]);
        large_size = size;
    }
    large_budget = budget;
}

size_t pt_buf_large_in_use(void) { return large_used; }
uint64_t pt_buf_large_taken(void) { return large_taken; }

static void large_put(char *p, size_t cap)
{
    large_used -= cap;
    if (cap == large_size && large_cached < PT_BUF_LARGE_CACHE) large_cache[large_cached++] = p;
    else free(p);
}

/* Frees a buffer's storage, whatever kind it is. */
static void storage_free(pt_buf *b)
{
    if (b->large) large_put(b->data, b->cap);
    else if (b->cap == PT_BUF_BLOCK) block_put(b->data);
    else free(b->data);
    b->large = false;
}

bool pt_buf_reserve_large(pt_buf *b)
{
    if (b->large) return true;
    if (b->len || large_used + large_size > large_budget) return false;
    if (b->data) storage_free(b);
    b->data = large_cached ? large_cache[--large_cached] : pt_xmalloc(large_size);
    b->cap = (uint32_t)large_size;
    b->off = 0;
    b->large = true;
    large_used += large_size;
    large_taken++;
    return true;
}

/* --------------------------------------------------------------- buffers */

void pt_buf_reserve(pt_buf *b, size_t n)
{
    if (!b->data) {
        if (n <= PT_BUF_BLOCK) {
            b->data = block_get();
            b->cap = PT_BUF_BLOCK;
        } else {
            b->cap = (uint32_t)n;
            b->data = pt_xmalloc(n);
        }
        b->off = b->len = 0;
        return;
    }
    if (b->cap - b->off - b->len >= n) return;
    if (b->off) { /* compact */
        memmove(b->data, b->data + b->off, b->len);
        b->off = 0;
        if (b->cap - b->len >= n) return;
    }
    size_t want = (size_t)b->len + n;
    size_t cap = b->cap * 2;
    while (cap < want) cap *= 2;
    PT_ASSERT(cap < UINT32_MAX);
    char *d = pt_xmalloc(cap);
    memcpy(d, b->data, b->len);
    storage_free(b);
    b->data = d;
    b->cap = (uint32_t)cap;
}

void pt_buf_append(pt_buf *b, const void *p, size_t n)
{
    if (!n) return;
    pt_buf_reserve(b, n);
    memcpy(b->data + b->off + b->len, p, n);
    b->len += (uint32_t)n;
}

void pt_buf_consume(pt_buf *b, size_t n)
{
    PT_ASSERT(n <= b->len);
    b->len -= (uint32_t)n;
    b->off = b->len ? b->off + (uint32_t)n : 0;
}

void pt_buf_release(pt_buf *b)
{
    if (!b->data) return;
    storage_free(b);
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}

void pt_buf_pool_trim(void)
{
    pool_decay(PT_BUF_POOL_HOT);
}

void pt_buf_pool_stats(size_t *cached, size_t *returned)
{
    if (cached) *cached = pool_count;
    if (returned) *returned = cold_n;
}

void pt_buf_pool_free(void)
{
    while (large_cached) free(large_cache[--large_cached]);
    pool_low = pool_count; /* every cached block counts as unused: all are returned */
    pool_decay(0);
    pthread_mutex_lock(&orphan_mu);
    for (size_t i = 0; i < cold_n; i++) push_ptr(&orphans, &orphan_n, &orphan_cap, cold[i]);
    for (; slab_next < slab_end; slab_next += PT_BUF_BLOCK) push_ptr(&orphans, &orphan_n, &orphan_cap, slab_next);
    atomic_store_explicit(&orphan_avail, orphan_n, memory_order_relaxed);
    pthread_mutex_unlock(&orphan_mu);
    free(cold);
    cold = NULL;
    cold_n = cold_cap = 0;
    slab_next = slab_end = NULL;
}

int pt_buf_writev(int fd, pt_buf *b, const struct iovec *extra, int nextra)
{
    struct iovec iov[8];
    int n = 0;
    PT_ASSERT(nextra < 7);
    if (b->len) iov[n++] = (struct iovec){pt_buf_head(b), b->len};
    for (int i = 0; i < nextra; i++)
        if (extra[i].iov_len) iov[n++] = extra[i];
    ssize_t w;
    do {
        w = n ? writev(fd, iov, n) : 0;
    } while (w < 0 && errno == EINTR);
    if (w < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK) return PT_ERR;
        w = 0;
    }
    size_t left = (size_t)w;
    /* drop what was written from b */
    size_t from_b = PT_MIN(left, (size_t)b->len);
    pt_buf_consume(b, from_b);
    left -= from_b;
    /* queue the unwritten rest of the extras */
    for (int i = 0; i < nextra; i++) {
        size_t len = extra[i].iov_len;
        if (left >= len) {
            left -= len;
            continue;
        }
        pt_buf_append(b, (const char *)extra[i].iov_base + left, len - left);
        left = 0;
    }
    return b->len ? PT_AGAIN : PT_OK;
}
