/* testlib.h — a tiny unit-test runner. Each test file defines tests with
 * TEST(name) { ... } and ends with TEST_MAIN(). The runner prints one line
 * per failure and a closing "N passed, N failed" line, and exits non-zero if
 * anything failed. A test fails if any CHECK in it fails. */
#ifndef PT_TESTLIB_H
#define PT_TESTLIB_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*tl_fn)(void);
typedef struct { const char *name; tl_fn fn; } tl_test;

static tl_test tl_tests[1024];
static int tl_ntests;
static int tl_cur_failed;
static const char *tl_cur_name;

#define TEST(name)                                                                   \
    static void test_##name(void);                                                   \
    __attribute__((constructor)) static void tl_reg_##name(void)                     \
    {                                                                                \
        if (tl_ntests < 1024) tl_tests[tl_ntests++] = (tl_test){#name, test_##name}; \
    }                                                                                \
    static void test_##name(void)

#define CHECK(cond)                                                                              \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "FAIL %s (%s:%d): %s\n", tl_cur_name, __FILE__, __LINE__, #cond);    \
            tl_cur_failed = 1;                                                                   \
        }                                                                                        \
    } while (0)

#define CHECK_INT(a, b)                                                                         \
    do {                                                                                        \
        long long tl_a = (long long)(a), tl_b = (long long)(b);                                 \
        if (tl_a != tl_b) {                                                                     \
            fprintf(stderr, "FAIL %s (%s:%d): %s == %lld, expected %s == %lld\n", tl_cur_name,  \
                    __FILE__, __LINE__, #a, tl_a, #b, tl_b);                                    \
            tl_cur_failed = 1;                                                                  \
        }                                                                                       \
    } while (0)

/* Compares a (ptr,len) slice or C string `a` with the C string `b`. */
#define CHECK_STRN(p, n, b)                                                                        \
    do {                                                                                           \
        const char *tl_p = (p); size_t tl_n = (n); const char *tl_b = (b);                         \
        if (!tl_p || tl_n != strlen(tl_b) || memcmp(tl_p, tl_b, tl_n) != 0) {                      \
            fprintf(stderr, "FAIL %s (%s:%d): got \"%.*s\", expected \"%s\"\n", tl_cur_name,       \
                    __FILE__, __LINE__, tl_p ? (int)tl_n : 6, tl_p ? tl_p : "(null)", tl_b);       \
            tl_cur_failed = 1;                                                                     \
        }                                                                                          \
    } while (0)
#define CHECK_STR(a, b) CHECK_STRN((a), (a) ? strlen(a) : 0, (b))
#define CHECK_SLICE(s, b) CHECK_STRN((s).p, (s).n, (b))

#define TEST_MAIN()                                                          \
    int main(int argc, char **argv)                                          \
    {                                                                        \
        int passed = 0, failed = 0;                                          \
        for (int i = 0; i < tl_ntests; i++) {                                \
            if (argc > 1 && strstr(tl_tests[i].name, argv[1]) == NULL)       \
                continue;                                                    \
            tl_cur_failed = 0;                                               \
            tl_cur_name = tl_tests[i].name;                                  \
            tl_tests[i].fn();                                                \
            if (tl_cur_failed) failed++; else passed++;                      \
        }                                                                    \
        printf("%s: %d passed, %d failed\n", argv[0], passed, failed);       \
        return failed ? 1 : 0;                                               \
    }

#endif
