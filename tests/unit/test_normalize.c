/* test_normalize.c — path normalization rules (router/normalize.h). */
#include "router/normalize.h"
#include "testlib.h"

/* Normalizes `in`; returns the output (static buffer) or NULL on error with
 * the detail message stored in last_detail. */
static const char *last_detail;
static const char *norm(const char *in)
{
    static char out[1024];
    size_t n = strlen(in);
    char *buf = malloc(n + 1); /* exact capacity len+1, so ASan sees overruns */
    last_detail = NULL;
    ssize_t r = pt_path_normalize(in, n, buf, &last_detail);
    if (r < 0) {
        free(buf);
        return NULL;
    }
    if ((size_t)r > n || buf[r] != '\0') {
        free(buf);
        return "(bad length or no NUL)";
    }
    memcpy(out, buf, (size_t)r + 1);
    free(buf);
    return out;
}

#define OK(in, want) CHECK_STR(norm(in), want)
#define BAD(in, msg)                                          \
    do {                                                      \
        CHECK(norm(in) == NULL);                              \
        CHECK(last_detail != NULL);                           \
        if (last_detail) CHECK(strstr(last_detail, msg) != NULL); \
    } while (0)

TEST(plain_paths_unchanged)
{
    OK("/", "/");
    OK("/a", "/a");
    OK("/api/v1/users", "/api/v1/users");
    OK("/a-b_c.d~e", "/a-b_c.d~e");
}

TEST(must_start_with_slash)
{
    BAD("", "start with '/'");
    BAD("a/b", "start with '/'");
    BAD("*", "start with '/'");
}

TEST(rejects_non_visible_bytes)
{
    BAD("/a b", "invalid character");
    BAD("/a\tb", "invalid character");
    BAD("/a\x7f", "invalid character");
    BAD("/caf\xc3\xa9", "invalid character");
}

TEST(decodes_percent_41_to_A) { OK("/%41", "/A"); }
TEST(decodes_lowercase_7e_to_tilde) { OK("/%7e", "/~"); }
TEST(decodes_uppercase_7E_to_tilde) { OK("/%7E", "/~"); }

TEST(decodes_unreserved)
{
    OK("/%61%62%63", "/abc");
    OK("/%30%2D%5f%2e", "/0-_."); /* "%2e" then end: a segment "0-_." (not a dot segment) */
}

TEST(reserved_stay_encoded_uppercase)
{
    OK("/a%20b", "/a%20b");
    OK("/a%3fb", "/a%3Fb");
    OK("/%c3%a9", "/%C3%A9");
    OK("/%C3%A9", "/%C3%A9");
    OK("/a%25b", "/a%25b"); /* encoded percent stays encoded */
}

TEST(encoded_slash_kept) { OK("/a%2Fb", "/a%2Fb"); }
TEST(encoded_slash_lowercase_uppercased) { OK("/a%2fb", "/a%2Fb"); }

TEST(encoded_slash_is_data)
{
    OK("/a%2F..%2Fb", "/a%2F..%2Fb"); /* one segment, not a dot segment */
    OK("/a/%2F/b", "/a/%2F/b");
}

TEST(encoded_backslash_stays)
{
    OK("/a%5cb", "/a%5Cb");
    OK("/a%5Cb", "/a%5Cb");
}

TEST(percent_at_end_rejected) { BAD("/a%", "truncated"); }
TEST(percent_one_digit_rejected) { BAD("/a%4", "truncated"); }

TEST(bad_percent_encoding)
{
    BAD("/a%zz", "invalid percent");
    BAD("/a%4g/b", "invalid percent");
    BAD("/a%%41", "invalid percent");
}

TEST(encoded_nul_rejected)
{
    BAD("/a%00b", "NUL");
}

TEST(merges_double_slashes) { OK("//a///b", "/a/b"); }

TEST(merges_slashes)
{
    OK("//", "/");
    OK("///a", "/a");
    OK("/a//", "/a/");
}

TEST(single_dot_removed) { OK("/a/./b", "/a/b"); }
TEST(double_dot_removes_previous) { OK("/a/b/../c", "/a/c"); }
TEST(trailing_double_dot_to_root) { OK("/a/..", "/"); }
TEST(trailing_single_dot_keeps_slash) { OK("/a/.", "/a/"); }

TEST(dot_segments)
{
    OK("/.", "/");
    OK("/./", "/");
    OK("/a/b/..", "/a/");
    OK("/a/b/../", "/a/");
    OK("/a/b/c/../../d", "/a/d");
    OK("/a/./../b", "/b");
}

TEST(dot_lookalikes_are_plain_segments)
{
    OK("/...", "/...");
    OK("/a/.b", "/a/.b");
    OK("/a/..b/c", "/a/..b/c");
    OK("/a/b..", "/a/b..");
}

TEST(public_dotdot_admin) { OK("/public/../admin", "/admin"); }
TEST(public_encoded_dotdot_admin) { OK("/public/%2e%2e/admin", "/admin"); }

TEST(mixed_encoded_dot_segments)
{
    OK("/public/%2E%2E/admin", "/admin");
    OK("/public/.%2e/admin", "/admin");
    OK("/public/%2e/admin", "/public/admin");
}

TEST(dotdot_at_root_rejected) { BAD("/..", "escapes root"); }

TEST(escape_root_rejected)
{
    BAD("/../a", "escapes root");
    BAD("/a/../..", "escapes root");
    BAD("/a/../../b", "escapes root");
    BAD("/%2e%2e/etc/passwd", "escapes root");
}

TEST(slashes_and_dots_combined)
{
    OK("//a//./b//..//c", "/a/c");
    OK("/a/.//b", "/a/b");
}

TEST(trailing_slash_preserved)
{
    OK("/a/", "/a/");
    OK("/a/b/", "/a/b/");
    OK("/a%2F/", "/a%2F/");
}

TEST(null_detail_allowed)
{
    char out[8];
    CHECK_INT(pt_path_normalize("x", 1, out, NULL), PT_ERR);
    CHECK_INT(pt_path_normalize("/b", 2, out, NULL), 2);
}

/* Property test on pseudo-random paths built from tricky pieces: every
 * success is canonical (starts with '/', no "//", no "." or ".." segment, only
 * uppercase escapes of reserved octets) and normalizing again changes nothing. */
TEST(random_paths_are_canonical_and_idempotent)
{
    static const char *pieces[] = {"/", "//", ".", "..", "%2e", "%2E", "%2f", "%41", "%7e", "%c3",
                                   "a", "b", "~", "%25", "%5c", "x.y", "-", "_"};
    uint32_t seed = 12345;
    int ok_count = 0;
    for (int iter = 0; iter < 20000; iter++) {
        char in[256] = "/";
        size_t n = 1;
        int parts = 1 + (int)((seed = seed * 1103515245u + 12345u) >> 16) % 12;
        for (int k = 0; k < parts; k++) {
            const char *pc = pieces[((seed = seed * 1103515245u + 12345u) >> 16) % PT_ARRAY_LEN(pieces)];
            size_t l = strlen(pc);
            memcpy(in + n, pc, l);
            n += l;
        }
        in[n] = '\0';
        char out[256], again[256];
        ssize_t r = pt_path_normalize(in, n, out, NULL);
        if (r < 0) continue;
        ok_count++;
        CHECK(r >= 1 && out[0] == '/');
        CHECK(strstr(out, "//") == NULL);
        CHECK(strstr(out, "/./") == NULL && strstr(out, "/../") == NULL);
        size_t len = (size_t)r;
        CHECK(!(len >= 2 && strcmp(out + len - 2, "/.") == 0));
        CHECK(!(len >= 3 && strcmp(out + len - 3, "/..") == 0));
        for (size_t i = 0; i < len; i++) {
            if (out[i] != '%') continue;
            CHECK(i + 2 < len);
            if (i + 2 < len) CHECK(strchr("abcdef", out[i + 1]) == NULL && strchr("abcdef", out[i + 2]) == NULL);
        }
        ssize_t r2 = pt_path_normalize(out, len, again, NULL);
        CHECK_INT(r2, r);
        if (r2 == r) CHECK(memcmp(out, again, len) == 0);
        if (tl_cur_failed) {
            fprintf(stderr, "  (input was \"%s\")\n", in);
            break; /* one failing input is enough */
        }
    }
    CHECK(ok_count > 1000);
}

TEST_MAIN()
