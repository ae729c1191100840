/* test_buf.c — byte buffers and the per-thread block pool (core/buf.h):
 * it caches at most PT_BUF_POOL_MAX blocks, decays back to the hot set
 * (usage epochs, pt_buf_pool_trim) by giving the rest's pages back to the
 * OS, and blocks reused from it are whole and usable. */
#include "core/buf.h"
#include "testlib.h"

#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#define BURST 600

static size_t cached(void)
{
    size_t c = 0;
    pt_buf_pool_stats(&c, NULL);
    return c;
}

/* Pages of the block at p that are resident. */
static int resident_pages(const char *p)
{
    unsigned char vec[PT_BUF_BLOCK / 4096 + 1];
    long pg = sysconf(_SC_PAGESIZE);
    if (mincore((void *)p, PT_BUF_BLOCK, vec) != 0) return -1;
    int n = 0;
    for (size_t i = 0; i < PT_BUF_BLOCK / (size_t)pg; i++) n += vec[i] & 1;
    return n;
}

static void fill(pt_buf *b, unsigned seed)
{
    for (size_t i = 0; i < PT_BUF_BLOCK; i++) pt_buf_tail(b)[i] = (char)(seed * 31u + i * 7u);
    b->len = PT_BUF_BLOCK;
}

static int intact(const pt_buf *b, unsigned seed)
{
    for (size_t i = 0; i < PT_BUF_BLOCK; i++)
        if (pt_buf_head(b)[i] != (char)(seed * 31u + i * 7u)) return 0;
    return 1;
}

/* Takes and fills BURST standard buffers at once, like BURST connections
 * reading a request at the same time. */
static void burstn(pt_buf *bufs, char **ptrs, unsigned n)
{
    memset(bufs, 0, n * sizeof *bufs);
    for (unsigned i = 0; i < n; i++) {
        pt_buf_reserve(&bufs[i], 100);
        CHECK_INT(bufs[i].cap, PT_BUF_BLOCK);
        fill(&bufs[i], i);
        if (ptrs) ptrs[i] = bufs[i].data;
    }
    int ok = 1;
    for (unsigned i = 0; i < n; i++) ok &= intact(&bufs[i], i); /* no two buffers share bytes */
    CHECK(ok);
}
static void burst(pt_buf *bufs, char **ptrs) { burstn(bufs, ptrs, BURST); }

TEST(basic_append_consume_grow)
{
    pt_buf b = {0};
    pt_buf_append(&b, "hello ", 6);
    pt_buf_append_str(&b, PT_STR_LIT("world"));
    CHECK_STRN(pt_buf_head(&b), b.len, "hello world");
    pt_buf_consume(&b, 6);
    CHECK_STRN(pt_buf_head(&b), b.len, "world");
    pt_buf_consume(&b, 5);
    CHECK_INT(b.off, 0);
    static char big[3 * PT_BUF_BLOCK];
    memset(big, 'x', sizeof big);
    pt_buf_append(&b, "a", 1);
    pt_buf_append(&b, big, sizeof big); /* grows past a block: malloc'd */
    CHECK(b.cap > PT_BUF_BLOCK);
    CHECK_INT(b.len, 1 + sizeof big);
    CHECK(pt_buf_head(&b)[0] == 'a' && pt_buf_head(&b)[sizeof big] == 'x');
    pt_buf_release(&b);
    CHECK(b.data == NULL);
    pt_buf_pool_free();
}

TEST(burst_beyond_max_returns_pages_at_once)
{
    static pt_buf bufs[BURST];
    static char *ptrs[BURST];
    pt_buf_pool_free();
    burst(bufs, ptrs);
    for (unsigned i = 0; i < BURST; i++) pt_buf_release(&bufs[i]);
    size_t c = 0, r = 0;
    pt_buf_pool_stats(&c, &r);
    CHECK_INT(c, PT_BUF_POOL_MAX);
    CHECK_INT(c + r, BURST); /* nothing lost: the rest is parked for reuse */
    /* The first PT_BUF_POOL_MAX released stay cached; every later one had
     * its pages returned to the OS. */
    int returned_ok = 1;
    for (unsigned i = PT_BUF_POOL_MAX; i < BURST; i++) returned_ok &= resident_pages(ptrs[i]) == 0;
    CHECK(returned_ok);

    /* A second burst reuses the same blocks (cached ones first, then the
     * ones whose pages were returned) and every byte of each is usable. */
    burst(bufs, NULL);
    int reused = 0;
    for (unsigned i = 0; i < BURST; i++)
        for (unsigned j = 0; j < BURST; j++)
            if (bufs[i].data == ptrs[j]) {
                reused++;
                break;
            }
    CHECK_INT(reused, BURST);
    for (unsigned i = 0; i < BURST; i++) pt_buf_release(&bufs[i]);
    pt_buf_pool_free();
    CHECK_INT(cached(), 0);
}

TEST(usage_decay_shrinks_cache_to_hot_set)
{
    static pt_buf bufs[BURST];
    pt_buf_pool_free();
    burst(bufs, NULL);
    for (unsigned i = 0; i < BURST; i++) pt_buf_release(&bufs[i]);
    CHECK_INT(cached(), PT_BUF_POOL_MAX);
    /* Then one buffer at a time for a while: the blocks not needed during a
     * whole epoch (1024 gets+puts) are returned, down to the hot set. */
    for (unsigned i = 0; i < 4096; i++) {
        pt_buf b = {0};
        pt_buf_reserve(&b, 1);
        fill(&b, i);
        CHECK(intact(&b, i));
        pt_buf_release(&b);
    }
    /* the hot set, plus the one buffer that was in use when the epoch ended */
    CHECK(cached() >= PT_BUF_POOL_HOT && cached() <= PT_BUF_POOL_HOT + 1);
    pt_buf_pool_free();
}

TEST(trim_after_burst_returns_to_hot_set)
{
    /* 300 gets + 300 puts: within one usage epoch (1024), so only trim decays. */
    enum { N = 300 };
    static pt_buf bufs[N];
    static char *ptrs[N];
    pt_buf_pool_free();
    burstn(bufs, ptrs, N);
    for (unsigned i = 0; i < N; i++) pt_buf_release(&bufs[i]);
    CHECK_INT(cached(), N);
    pt_buf_pool_trim(); /* the cache was empty during the burst: all were needed */
    CHECK_INT(cached(), N);
    pt_buf_pool_trim(); /* none were needed since the last trim */
    CHECK_INT(cached(), PT_BUF_POOL_HOT);
    /* LIFO: ptrs[N-1] was released last, is on top and is the one trimmed
     * first; the hot set is the bottom PT_BUF_POOL_HOT of the stack. */
    int returned_ok = 1;
    for (unsigned i = PT_BUF_POOL_HOT; i < N; i++) returned_ok &= resident_pages(ptrs[i]) == 0;
    CHECK(returned_ok);
    /* Blocks whose pages were returned are whole again when reused. */
    burstn(bufs, NULL, N);
    for (unsigned i = 0; i < N; i++) pt_buf_release(&bufs[i]);
    pt_buf_pool_free();
    CHECK_INT(cached(), 0);
}

static char *thread_block;
static void *take_one(void *arg)
{
    pt_buf b = {0};
    pt_buf_reserve(&b, 1);
    fill(&b, 7);
    thread_block = intact(&b, 7) ? b.data : NULL;
    pt_buf_release(&b);
    pt_buf_pool_free();
    return NULL;
}

TEST(exited_thread_blocks_are_reused)
{
    static pt_buf bufs[8];
    pt_buf_pool_free();
    for (unsigned i = 0; i < 8; i++) {
        bufs[i] = (pt_buf){0};
        pt_buf_reserve(&bufs[i], 1);
    }
    for (unsigned i = 0; i < 8; i++) pt_buf_release(&bufs[i]);
    pt_buf_pool_free(); /* hands the 8 blocks (and the rest of the mapping) on */
    pthread_t t;
    CHECK_INT(pthread_create(&t, NULL, take_one, NULL), 0);
    pthread_join(t, NULL);
    CHECK(thread_block != NULL);
    pt_buf b = {0};
    pt_buf_reserve(&b, 1);
    fill(&b, 9);
    CHECK(intact(&b, 9));
    pt_buf_release(&b);
    pt_buf_pool_free();
}

/* Large blocks for streaming bodies: only an empty buffer switches, the
 * per-thread budget bounds what buffers hold at once, released blocks are
 * accounted back, and data round-trips through a large block. */
TEST(large_blocks_within_budget)
{
    pt_buf_large_config(64 * 1024, 128 * 1024); /* room for two */
    pt_buf a = {0}, b = {0}, c = {0};
    pt_buf_append(&a, "x", 1);
    CHECK(!pt_buf_reserve_large(&a)); /* not empty: keeps its block */
    CHECK(!a.large && a.cap == PT_BUF_BLOCK);
    pt_buf_consume(&a, 1);
    CHECK(pt_buf_reserve_large(&a)); /* empty (storage held): switches */
    CHECK(a.large && a.cap == 64 * 1024 && a.len == 0);
    CHECK(pt_buf_reserve_large(&a)); /* already large */
    CHECK(pt_buf_large_in_use() == 64 * 1024);
    CHECK(pt_buf_reserve_large(&b));
    CHECK(pt_buf_large_in_use() == 128 * 1024);
    CHECK(!pt_buf_reserve_large(&c)); /* over the budget */
    CHECK(!c.large);
    /* a large block holds a full read and keeps it intact */
    pt_buf_reserve(&a, 4096);
    CHECK(pt_buf_tailroom(&a) == 64 * 1024);
    memset(pt_buf_tail(&a), 0x5a, 64 * 1024);
    a.len = 64 * 1024;
    int same = 1;
    for (size_t i = 0; i < 64 * 1024; i++) same &= pt_buf_head(&a)[i] == 0x5a;
    CHECK(same);
    /* growing past it moves to the heap and gives the large block back */
    pt_buf_append(&a, "y", 1);
    CHECK(!a.large && a.len == 64 * 1024 + 1 && pt_buf_head(&a)[64 * 1024] == 'y');
    CHECK(pt_buf_large_in_use() == 64 * 1024);
    CHECK(pt_buf_reserve_large(&c)); /* room again */
    pt_buf_release(&a);
    pt_buf_release(&b);
    pt_buf_release(&c);
    CHECK(pt_buf_large_in_use() == 0);
    pt_buf_large_config(64 * 1024, 0); /* 0: never */
    CHECK(!pt_buf_reserve_large(&a));
    pt_buf_large_config(64 * 1024, 64u << 20);
}

TEST_MAIN()
