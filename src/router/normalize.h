/* normalize.h — request path normalization, applied once before routing.
 *
 * The router matches, and the upstream receives, exactly the normalized
 * path. Rules (see docs/routing.md for the rationale):
 *   1. The path must start with '/' and contain only visible ASCII (0x21..0x7E).
 *   2. Percent-encoding: '%' must be followed by two hex digits. Octets that
 *      decode to unreserved characters (ALPHA DIGIT - . _ ~) are decoded;
 *      every other octet stays encoded with UPPERCASE hex. %00 is rejected.
 *   3. Runs of '/' collapse into one.
 *   4. Dot segments ("." and "..", also when written %2E) are removed as in
 *      RFC 3986 §5.2.4; a ".." that would climb above the root is an error.
 *   5. A trailing slash is preserved ("/a/" stays "/a/"; "/a/." => "/a/").
 *   6. Spellings that backends resolve differently follow pt_path_rules
 *      (config/config.h): encoded slash, backslash (raw or %5C), ';'
 *      parameters and %3B, double encoding (%25 + two hex digits), encoded
 *      control characters, ill-formed UTF-8 in escapes, segments ending in
 *      '.' or %20. Each is rejected, decoded/stripped, or kept as opaque
 *      segment data (a kept %2F or %5C never separates segments; a kept raw
 *      '\' is written %5C, its canonical form).
 */
#ifndef PT_ROUTER_NORMALIZE_H
#define PT_ROUTER_NORMALIZE_H

#include "config/config.h"
#include "core/common.h"

/* Output capacity needed for an input of `len` bytes: a kept raw '\'
 * grows to "%5C"; everything else only shrinks. */
#define PT_PATH_NORM_CAP(len) (3 * (size_t)(len) + 1)

/* Bits of *seen: the spelling classes present in the input (rule 6). */
enum {
    PT_PATHC_ENCODED_SLASH = 1u << 0,
    PT_PATHC_BACKSLASH = 1u << 1,
    PT_PATHC_SEMICOLON = 1u << 2,
    PT_PATHC_DOUBLE_ENCODING = 1u << 3,
    PT_PATHC_ENCODED_CONTROL = 1u << 4,
    PT_PATHC_INVALID_UTF8 = 1u << 5,
    PT_PATHC_TRAILING_DOT_SPACE = 1u << 6,
};

/* Every class kept: the literal canonical form (route patterns use it). */
extern const pt_path_rules pt_path_rules_keep_all;

/* Normalizes in[0..len) under `rules` into `out`, which must have room for
 * PT_PATH_NORM_CAP(len) bytes (a NUL is written after the result). Single
 * pass plus, when "%25" was written, one scan; no allocation. Returns the
 * output length, or PT_ERR with *detail (if not NULL) set to a static
 * message for a 400 body. When `seen` is not NULL it receives the
 * PT_PATHC_* classes met (complete only on success). When the keep-all
 * result has seen == 0, every rule set gives the same output. */
ssize_t pt_path_normalize_rules(const char *in, size_t len, const pt_path_rules *rules, char *out, unsigned *seen,
                                const char **detail);

/* pt_path_normalize_rules with pt_path_rules_keep_all and no `seen`.
 * `out` needs PT_PATH_NORM_CAP(len) bytes. */
ssize_t pt_path_normalize(const char *in, size_t len, char *out, const char **detail);

#endif
