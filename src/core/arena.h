/* arena.h — per-request bump allocator, freed all at once.
 *
 * A request's parsed head, route parameters, plugin state and rewritten
 * headers live in one arena; nothing is freed individually. pt_arena_reset()
 * keeps the first block so a keep-alive connection reuses it without malloc.
 * Cleanup callbacks run (in reverse registration order) at reset/free, for
 * the rare object that owns something outside the arena (an fd, a timer). */
#ifndef PT_ARENA_H
#define PT_ARENA_H

#include "core/common.h"

typedef struct pt_arena pt_arena;
typedef void (*pt_arena_cleanup_fn)(void *data);

pt_arena *pt_arena_new(size_t first_block_size);
void pt_arena_free(pt_arena *a);
/* Frees every block but the first, runs cleanups, rewinds. */
void pt_arena_reset(pt_arena *a);
/* Aligned to 16 bytes. Never returns NULL (OOM aborts). */
void *pt_arena_alloc(pt_arena *a, size_t n);
void *pt_arena_calloc(pt_arena *a, size_t n);
char *pt_arena_strndup(pt_arena *a, const char *s, size_t n); /* NUL-terminated copy */
pt_str pt_arena_str(pt_arena *a, pt_str s);                   /* copy of a slice (NUL-terminated) */
char *pt_arena_printf(pt_arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void pt_arena_on_cleanup(pt_arena *a, pt_arena_cleanup_fn fn, void *data);
/* Bytes handed out since the last reset (for tests and metrics). */
size_t pt_arena_used(const pt_arena *a);

#endif
