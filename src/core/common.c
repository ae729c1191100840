/* common.c — see common.h. */
#include "core/common.h"

#include <stdio.h>
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
