/* common.c — see common.h. */
#include "core/common.h"

#include <stdio.h>
#include <sys/random.h>
#include <time.h>
#include <stdlib.h>

static inline unsigned char pt_lower(unsigned char c) { return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c; }

bool pt_str_ieq(pt_str a, pt_str b)
{
    if (a.n != b.n) return false;
    for (size_t i = 0; i < a.n; i++)
        if (pt_lower((unsigned char)a.p[i]) != pt_lower((unsigned char)b.p[i])) return false;
    return true;
}

bool pt_str_ieq_lit(pt_str a, const char *lit) { return pt_str_ieq(a, pt_str_c(lit)); }

void pt_panic(const char *file, int line, const char *msg)
{
    fprintf(stderr, "portico: fatal: %s:%d: %s\n", file, line, msg);
    fflush(stderr);
    abort();
}

static void pt_oom(size_t n)
{
    fprintf(stderr, "portico: fatal: out of memory allocating %zu bytes\n", n);
    abort();
}

void *pt_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) pt_oom(n);
    return p;
}

void *pt_xcalloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
    if (!p) pt_oom(nmemb * size);
    return p;
}

void *pt_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) pt_oom(n);
    return q;
}

char *pt_xstrndup(const char *s, size_t n)
{
    char *d = pt_xmalloc(n + 1);
    if (n) memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* ---------------------------------------------------------------- random */

static inline uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t pt_rand64(void)
{
    static _Thread_local uint64_t s[4];
    static _Thread_local bool seeded;
    if (__builtin_expect(!seeded, 0)) {
        uint64_t seed[4] = {0};
        if (getrandom(seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed)) {
            /* no entropy pool yet (very early boot): mix clocks and addresses */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t x = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
            x ^= (uint64_t)(uintptr_t)&seeded;
            for (int i = 0; i < 4; i++) seed[i] ^= splitmix64(&x);
        }
        uint64_t mix = seed[0] ^ seed[1] ^ seed[2] ^ seed[3];
        for (int i = 0; i < 4; i++) s[i] = seed[i] ^ splitmix64(&mix); /* never all zero */
        seeded = true;
    }
    uint64_t result = rotl64(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

size_t pt_utf8_seq(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF; /* the allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0; /* overlong */
        if (c == 0xED) hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90; /* overlong */
        if (c == 0xF4) hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    return len;
}
