/* buf.c — see buf.h. */
#include "core/buf.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/uio.h>

#define PT_BUF_POOL_MAX 512

typedef struct pool_block {
    struct pool_block *next;
} pool_block;

static __thread pool_block *pool_head;
static __thread unsigned pool_count;

static char *block_get(void)
{
    if (pool_head) {
        pool_block *b = pool_head;
        pool_head = b->next;
        pool_count--;
        return (char *)b;
    }
    return pt_xmalloc(PT_BUF_BLOCK);
}

static void block_put(char *p)
{
    if (pool_count >= PT_BUF_POOL_MAX) {
        free(p);
        return;
    }
    pool_block *b = (pool_block *)(void *)p;
    b->next = pool_head;
    pool_head = b;
    pool_count++;
}

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
    if (b->cap == PT_BUF_BLOCK) block_put(b->data);
    else free(b->data);
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
    if (b->cap == PT_BUF_BLOCK) block_put(b->data);
    else free(b->data);
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}

void pt_buf_pool_free(void)
{
    while (pool_head) {
        pool_block *b = pool_head;
        pool_head = b->next;
        free(b);
    }
    pool_count = 0;
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
