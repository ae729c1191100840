/* arena.c — see arena.h. */
#include "core/arena.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct pt_arena_block {
    struct pt_arena_block *next;
    size_t size;
    size_t used;
    _Alignas(16) unsigned char data[];
} pt_arena_block;

typedef struct pt_arena_cleanup {
    struct pt_arena_cleanup *next;
    pt_arena_cleanup_fn fn;
    void *data;
} pt_arena_cleanup;

struct pt_arena {
    pt_arena_block *head;  /* current block (most recent) */
    pt_arena_block *first; /* kept across resets */
    pt_arena_cleanup *cleanups;
    size_t total_used;
};

static pt_arena_block *block_new(size_t size)
{
    pt_arena_block *b = pt_xmalloc(sizeof(*b) + size);
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

pt_arena *pt_arena_new(size_t first_block_size)
{
    pt_arena *a = pt_xcalloc(1, sizeof(*a));
    if (first_block_size < 256) first_block_size = 256;
    a->first = a->head = block_new(first_block_size);
    return a;
}

static void run_cleanups(pt_arena *a)
{
    while (a->cleanups) {
        pt_arena_cleanup *c = a->cleanups;
        a->cleanups = c->next;
        c->fn(c->data); /* the node itself lives in the arena */
    }
}

void pt_arena_reset(pt_arena *a)
{
    run_cleanups(a);
    pt_arena_block *b = a->head;
    while (b && b != a->first) {
        pt_arena_block *n = b->next;
        free(b);
        b = n;
    }
    a->head = a->first;
    a->first->next = NULL;
    a->first->used = 0;
    a->total_used = 0;
}

void pt_arena_free(pt_arena *a)
{
    if (!a) return;
    pt_arena_reset(a);
    free(a->first);
    free(a);
}

void *pt_arena_alloc(pt_arena *a, size_t n)
{
    size_t need = (n + 15) & ~(size_t)15;
    if (need == 0) need = 16;
    pt_arena_block *b = a->head;
    if (b->size - b->used < need) {
        size_t sz = a->first->size * 2;
        if (sz < need) sz = need;
        b = block_new(sz);
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += need;
    a->total_used += need;
    return p;
}

void *pt_arena_calloc(pt_arena *a, size_t n)
{
    void *p = pt_arena_alloc(a, n);
    memset(p, 0, n);
    return p;
}

char *pt_arena_strndup(pt_arena *a, const char *s, size_t n)
{
    char *d = pt_arena_alloc(a, n + 1);
    if (n) memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

pt_str pt_arena_str(pt_arena *a, pt_str s) { return (pt_str){pt_arena_strndup(a, s.p, s.n), s.n}; }

char *pt_arena_printf(pt_arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    char *d = pt_arena_alloc(a, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(d, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return d;
}

void pt_arena_on_cleanup(pt_arena *a, pt_arena_cleanup_fn fn, void *data)
{
    pt_arena_cleanup *c = pt_arena_alloc(a, sizeof(*c));
    c->fn = fn;
    c->data = data;
    c->next = a->cleanups;
    a->cleanups = c;
}

size_t pt_arena_used(const pt_arena *a) { return a->total_used; }
