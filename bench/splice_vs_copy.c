/* splice_vs_copy.c — does splice(2) through a pipe beat read/write for
 * moving a body between two TCP sockets on this machine? (issue 13)
 *
 * A producer thread writes N MiB into loopback connection A, a consumer
 * thread drains loopback connection B, and the relay (the main thread, the
 * part a proxy pays for) moves the bytes from A to B either with
 * read()/write() through a user buffer of the given size, or with
 * splice(A -> pipe) + splice(pipe -> B). Prints the relay thread's CPU time
 * (user + system, CLOCK_THREAD_CPUTIME_ID) per MiB for each, several rounds.
 *
 *   make splice-bench            # build/bench/splice_vs_copy 256 3
 *   build/bench/splice_vs_copy [MiB per round] [rounds]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static size_t total_bytes;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

/* A connected pair of loopback TCP sockets (client, server side). */
static void tcp_pair(int *c, int *s)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1) || getsockname(l, (struct sockaddr *)&a, &al))
        die("listen");
    *c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(*c, (struct sockaddr *)&a, sizeof(a))) die("connect");
    *s = accept(l, NULL, NULL);
    if (*s < 0) die("accept");
    close(l);
}

static void *producer(void *arg)
{
    int fd = *(int *)arg;
    static char buf[1 << 16];
    memset(buf, 'x', sizeof(buf));
    for (size_t sent = 0; sent < total_bytes;) {
        size_t n = total_bytes - sent < sizeof(buf) ? total_bytes - sent : sizeof(buf);
        ssize_t w = write(fd, buf, n);
        if (w <= 0) die("producer write");
        sent += (size_t)w;
    }
    shutdown(fd, SHUT_WR);
    return NULL;
}

static void *consumer(void *arg)
{
    int fd = *(int *)arg;
    static char buf[1 << 16];
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
    return NULL;
}

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One round: relay total_bytes from A to B; returns the relay's CPU seconds. */
static double round_once(int use_splice, size_t bufsize)
{
    int ac, as, bc, bs;
    tcp_pair(&ac, &as);
    tcp_pair(&bc, &bs);
    pthread_t p, c;
    pthread_create(&p, NULL, producer, &ac);
    pthread_create(&c, NULL, consumer, &bs);
    double t0 = thread_cpu_s();
    size_t moved = 0;
    if (use_splice) {
        int pp[2];
        if (pipe2(pp, 0)) die("pipe");
        fcntl(pp[1], F_SETPIPE_SZ, (int)bufsize);
        for (;;) {
            ssize_t n = splice(as, NULL, pp[1], NULL, bufsize, SPLICE_F_MOVE | SPLICE_F_MORE);
            if (n < 0) die("splice in");
            if (n == 0) break;
            for (ssize_t left = n; left > 0;) {
                ssize_t m = splice(pp[0], NULL, bc, NULL, (size_t)left, SPLICE_F_MOVE | SPLICE_F_MORE);
                if (m <= 0) die("splice out");
                left -= m;
            }
            moved += (size_t)n;
        }
        close(pp[0]);
        close(pp[1]);
    } else {
        char *buf = malloc(bufsize);
        for (;;) {
            ssize_t n = read(as, buf, bufsize);
            if (n < 0) die("read");
            if (n == 0) break;
            for (ssize_t off = 0; off < n;) {
                ssize_t m = write(bc, buf + off, (size_t)(n - off));
                if (m <= 0) die("write");
                off += m;
            }
            moved += (size_t)n;
        }
        free(buf);
    }
    double t1 = thread_cpu_s();
    shutdown(bc, SHUT_WR);
    pthread_join(p, NULL);
    pthread_join(c, NULL);
    close(ac), close(as), close(bc), close(bs);
    if (moved != total_bytes) {
        fprintf(stderr, "moved %zu of %zu bytes\n", moved, total_bytes);
        exit(1);
    }
    return t1 - t0;
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? (size_t)atoi(argv[1]) : 256;
    int rounds = argc > 2 ? atoi(argv[2]) : 3;
    total_bytes = mib << 20;
    static const size_t sizes[] = {16 << 10, 64 << 10};
    printf("splice_vs_copy: %zu MiB per round over loopback TCP, relay thread CPU ms per MiB\n", mib);
    for (int r = 1; r <= rounds; r++) {
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            double copy = round_once(0, sizes[i]) * 1000 / (double)mib;
            double spl = round_once(1, sizes[i]) * 1000 / (double)mib;
            printf("round %d  %3zu KiB: read/write %.3f  splice %.3f  (splice/copy %.2f)\n", r, sizes[i] >> 10, copy,
                   spl, spl / copy);
        }
    }
    return 0;
}
