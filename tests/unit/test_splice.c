/* test_splice.c — net/splice.h over real loopback TCP sockets: a splice
 * moves exactly its length byte-exact and reports DONE; a destination that
 * does not read stops the reads (the pipe is the only buffer); an early
 * source EOF, a dead destination and an empty source are told apart; the
 * budget bounds one step; pipes go back to the worker's pool only after a
 * clean end, and no pipe (EMFILE) is reported, not hidden. */
#include "net/splice.h"
#include "testlib.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* A connected loopback TCP pair: fd[0] <-> fd[1], both non-blocking. */
static void tcp_pair(int fd[2])
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    CHECK(bind(l, (struct sockaddr *)&a, sizeof(a)) == 0);
    CHECK(listen(l, 1) == 0);
    CHECK(getsockname(l, (struct sockaddr *)&a, &al) == 0);
    fd[0] = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(connect(fd[0], (struct sockaddr *)&a, sizeof(a)) == 0);
    fd[1] = accept(l, NULL, NULL);
    CHECK(fd[1] >= 0);
    close(l);
    for (int i = 0; i < 2; i++) fcntl(fd[i], F_SETFL, fcntl(fd[i], F_GETFL) | O_NONBLOCK);
}

static unsigned char pattern(size_t i) { return (unsigned char)(i * 131u + (i >> 9)); }

/* Writes bytes [*off, end) of the pattern into fd as far as it takes them. */
static void feed(int fd, size_t *off, size_t end)
{
    unsigned char buf[16384];
    while (*off < end) {
        size_t n = end - *off < sizeof(buf) ? end - *off : sizeof(buf);
        for (size_t i = 0; i < n; i++) buf[i] = pattern(*off + i);
        ssize_t w = write(fd, buf, n);
        if (w <= 0) return;
        *off += (size_t)w;
    }
}

/* Reads what fd has, checking it continues the pattern at *off. */
static int drain(int fd, size_t *off)
{
    unsigned char buf[16384];
    int ok = 1;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof(buf));
        if (r <= 0) return ok;
        for (ssize_t i = 0; i < r; i++) ok &= buf[i] == pattern(*off + (size_t)i);
        *off += (size_t)r;
    }
}

/* Reads until `want` bytes came in all (bytes still in flight after the
 * last splice), at most 10 s. */
static int drain_all(int fd, size_t *off, size_t want)
{
    int ok = 1;
    for (time_t end = time(NULL) + 10; *off < want && time(NULL) < end;) ok &= drain(fd, off);
    return ok;
}

TEST(moves_exactly_its_length_and_pools_the_pipe)
{
    pt_loop *loop = pt_loop_new();
    int src[2], dst[2];
    tcp_pair(src);
    tcp_pair(dst);
    const size_t total = 3u << 20, len = total - 1000; /* the last 1000 bytes are not ours */
    size_t wrote = 0, got = 0;
    pt_splice s;
    CHECK(pt_splice_open(loop, &s, len, 65536));
    CHECK(s.pipe_cap >= 4096);
    pt_splice_moved mv = {0, 0};
    pt_splice_status st = PT_SPLICE_WAIT_SRC;
    int ok = 1;
    for (int i = 0; i < 100000 && st != PT_SPLICE_DONE; i++) {
        feed(src[0], &wrote, total);
        st = pt_splice_step(&s, src[1], dst[0], true, 0, &mv);
        CHECK(st == PT_SPLICE_WAIT_SRC || st == PT_SPLICE_WAIT_DST || st == PT_SPLICE_DONE);
        ok &= drain(dst[1], &got);
    }
    CHECK(st == PT_SPLICE_DONE);
    ok &= drain_all(dst[1], &got, len);
    CHECK(ok);
    CHECK(mv.in == len && mv.out == len && got == len);
    CHECK(s.in_pipe == 0 && s.remaining == 0);
    /* the bytes after the body stay in the source socket */
    char rest[2000];
    feed(src[0], &wrote, total);
    CHECK(read(src[1], rest, sizeof(rest)) == 1000 && (unsigned char)rest[0] == pattern(len));
    CHECK_INT(pt_splice_pool_size(loop), 0);
    pt_splice_close(loop, &s, true);
    CHECK_INT(pt_splice_pool_size(loop), 1);
    CHECK(s.rd == -1 && s.wr == -1);
    pt_splice_close(loop, &s, true); /* idempotent */
    CHECK_INT(pt_splice_pool_size(loop), 1);
    /* the next splice takes the pooled pipe */
    CHECK(pt_splice_open(loop, &s, 10, 65536));
    CHECK_INT(pt_splice_pool_size(loop), 0);
    pt_splice_close(loop, &s, true);
    for (int i = 0; i < 2; i++) close(src[i]), close(dst[i]);
    pt_splice_pool_free(loop);
    CHECK_INT(pt_splice_pool_size(loop), 0);
    pt_loop_free(loop);
}

TEST(a_destination_that_does_not_read_stops_the_reads)
{
    pt_loop *loop = pt_loop_new();
    int src[2], dst[2];
    tcp_pair(src);
    tcp_pair(dst);
    int small = 16384;
    setsockopt(dst[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    setsockopt(dst[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    const size_t len = 16u << 20;
    size_t wrote = 0, got = 0;
    pt_splice s;
    CHECK(pt_splice_open(loop, &s, len, 65536));
    pt_splice_moved mv = {0, 0};
    pt_splice_status st = PT_SPLICE_WAIT_SRC;
    for (int i = 0; i < 200; i++) {
        feed(src[0], &wrote, len);
        st = pt_splice_step(&s, src[1], dst[0], true, 0, &mv);
    }
    /* nobody reads dst: the reads stopped at what the pipe and the
     * destination's socket buffers hold, far below what was offered */
    CHECK(st == PT_SPLICE_WAIT_DST);
    CHECK(s.in_pipe > 0);
    CHECK(mv.in == mv.out + s.in_pipe);
    CHECK(mv.in < (4u << 20));
    CHECK(wrote > mv.in);
    /* dst_ready false: nothing goes to the destination */
    uint64_t out = mv.out;
    CHECK(pt_splice_step(&s, src[1], dst[0], false, 0, &mv) == PT_SPLICE_WAIT_DST);
    CHECK(mv.out == out);
    /* reading on resumes the flow, byte-exact */
    int ok = 1;
    /* tiny socket buffers: TCP may wait for a window probe, so by time */
    for (time_t end = time(NULL) + 20; time(NULL) < end && st != PT_SPLICE_DONE;) {
        ok &= drain(dst[1], &got);
        feed(src[0], &wrote, len);
        st = pt_splice_step(&s, src[1], dst[0], true, 0, &mv);
    }
    ok &= drain_all(dst[1], &got, len);
    CHECK(st == PT_SPLICE_DONE && ok && got == len);
    pt_splice_close(loop, &s, true);
    for (int i = 0; i < 2; i++) close(src[i]), close(dst[i]);
    pt_splice_pool_free(loop);
    pt_loop_free(loop);
}

TEST(empty_source_eof_and_dead_destination)
{
    pt_loop *loop = pt_loop_new();
    int src[2], dst[2];
    tcp_pair(src);
    tcp_pair(dst);
    pt_splice s;
    pt_splice_moved mv = {0, 0};
    CHECK(pt_splice_open(loop, &s, 100000, 65536));
    CHECK(pt_splice_step(&s, src[1], dst[0], true, 0, &mv) == PT_SPLICE_WAIT_SRC);
    CHECK(mv.in == 0 && mv.out == 0);
    /* 5000 bytes, then the source closes: an early EOF */
    size_t wrote = 0;
    feed(src[0], &wrote, 5000);
    close(src[0]);
    pt_splice_status st;
    do st = pt_splice_step(&s, src[1], dst[0], true, 0, &mv);
    while (st == PT_SPLICE_WAIT_DST);
    CHECK(st == PT_SPLICE_SRC_EOF);
    CHECK(mv.in == 5000);
    pt_splice_close(loop, &s, false); /* not clean: closed, not pooled */
    CHECK_INT(pt_splice_pool_size(loop), 0);
    /* a destination whose peer is gone */
    int src2[2];
    tcp_pair(src2);
    CHECK(pt_splice_open(loop, &s, 1u << 20, 65536));
    close(dst[1]);
    wrote = 0;
    st = PT_SPLICE_WAIT_SRC;
    for (int i = 0; i < 1000 && (st == PT_SPLICE_WAIT_SRC || st == PT_SPLICE_WAIT_DST); i++) {
        feed(src2[0], &wrote, 1u << 20);
        st = pt_splice_step(&s, src2[1], dst[0], true, 0, &mv);
    }
    CHECK(st == PT_SPLICE_DST_ERROR);
    pt_splice_close(loop, &s, false);
    CHECK_INT(pt_splice_pool_size(loop), 0);
    close(src[1]);
    close(dst[0]);
    close(src2[0]);
    close(src2[1]);
    pt_loop_free(loop);
}

TEST(the_budget_bounds_one_step)
{
    pt_loop *loop = pt_loop_new();
    int src[2], dst[2];
    tcp_pair(src);
    tcp_pair(dst);
    pt_splice s;
    CHECK(pt_splice_open(loop, &s, 1u << 20, 65536));
    size_t wrote = 0, got = 0;
    feed(src[0], &wrote, 1u << 20);
    CHECK(wrote > 3 * (size_t)s.pipe_cap);
    pt_splice_moved mv = {0, 0};
    pt_splice_status st = pt_splice_step(&s, src[1], dst[0], true, s.pipe_cap, &mv);
    CHECK(st == PT_SPLICE_WAIT_SRC || st == PT_SPLICE_WAIT_DST);
    CHECK(mv.in >= 1 && mv.in < 2 * (uint64_t)s.pipe_cap);
    drain(dst[1], &got);
    pt_splice_close(loop, &s, false);
    for (int i = 0; i < 2; i++) close(src[i]), close(dst[i]);
    pt_loop_free(loop);
}

TEST(no_pipe_is_reported)
{
    pt_loop *loop = pt_loop_new();
    struct rlimit old, low;
    CHECK(getrlimit(RLIMIT_NOFILE, &old) == 0);
    low = old;
    low.rlim_cur = 3; /* only stdin, stdout, stderr */
    CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0);
    pt_splice s;
    errno = 0;
    bool ok = pt_splice_open(loop, &s, 100, 65536);
    int err = errno;
    CHECK(setrlimit(RLIMIT_NOFILE, &old) == 0);
    CHECK(!ok && err == EMFILE);
    CHECK(s.rd == -1);
    pt_splice_close(loop, &s, true); /* nothing to close */
    pt_loop_free(loop);
}

static void ignore_sigpipe(void) __attribute__((constructor));
static void ignore_sigpipe(void) { signal(SIGPIPE, SIG_IGN); }

TEST_MAIN()
