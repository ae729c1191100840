/* common.h — small shared vocabulary: string slices, return codes, assertions,
 * allocation policy. Every subsystem includes this; it includes nothing of ours.
 *
 * Out-of-memory policy (decided once): allocation failure aborts the process
 * with a message (pt_xmalloc & co). A gateway that cannot allocate 4 KiB is
 * already lost; a clean abort beats a half-handled NULL on a rare path. */
#ifndef PT_COMMON_H
#define PT_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

/* A non-owning {ptr,len} slice. Not NUL-terminated unless stated. */
typedef struct {
    const char *p;
    size_t n;
} pt_str;

#define PT_STR_LIT(s) ((pt_str){(s), sizeof(s) - 1})
#define PT_STR_NULL ((pt_str){NULL, 0})

static inline pt_str pt_str_make(const char *p, size_t n) { return (pt_str){p, n}; }
static inline pt_str pt_str_c(const char *s) { return (pt_str){s, s ? strlen(s) : 0}; }
static inline bool pt_str_eq(pt_str a, pt_str b) { return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0); }
static inline bool pt_str_eq_lit(pt_str a, const char *lit) { return pt_str_eq(a, pt_str_c(lit)); }
bool pt_str_ieq(pt_str a, pt_str b);            /* ASCII case-insensitive equality */
/* Length (1..4) of the valid UTF-8 sequence at p[0..n) (n >= 1), or 0 when
 * the bytes there are not one (RFC 3629: no overlong forms, no surrogates,
 * nothing above U+10FFFF). */
size_t pt_utf8_seq(const unsigned char *p, size_t n);
bool pt_str_ieq_lit(pt_str a, const char *lit); /* same, against a C string */

/* One return-code convention across the codebase.
 * Parsers return bytes consumed (>= 0) or one of the negative codes below. */
enum {
    PT_OK = 0,
    PT_ERR = -1,   /* failure; details in an out-parameter or errno */
    PT_AGAIN = -2, /* need more input / would block; call again later */
};

/* Invariants stay on in production builds. */
void pt_panic(const char *file, int line, const char *msg) __attribute__((noreturn));
#define PT_ASSERT(cond) \
    do { if (__builtin_expect(!(cond), 0)) pt_panic(__FILE__, __LINE__, #cond); } while (0)

/* Allocation that never returns NULL (aborts on OOM, see policy above). */
void *pt_xmalloc(size_t n);
void *pt_xcalloc(size_t nmemb, size_t size);
void *pt_xrealloc(void *p, size_t n);
char *pt_xstrndup(const char *s, size_t n);

#define PT_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define PT_MIN(a, b) ((a) < (b) ? (a) : (b))
#define PT_MAX(a, b) ((a) > (b) ? (a) : (b))
#define PT_UNUSED(x) ((void)(x))

/* A fast per-thread PRNG (xoshiro256**, seeded once per thread from
 * getrandom): not cryptographic — ids, sampling, hash-table keys. No
 * syscall after a thread's first call. */
uint64_t pt_rand64(void);

#endif
