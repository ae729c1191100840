/* normalize.h — request path normalization, applied once before routing.
 *
 * The router matches, and the upstream receives, exactly the normalized
 * path. Rules (see docs/routing.md for the rationale):
 *   1. The path must start with '/' and contain only visible ASCII (0x21..0x7E).
 *   2. Percent-encoding: '%' must be followed by two hex digits. Octets that
 *      decode to unreserved characters (ALPHA DIGIT - . _ ~) are decoded;
 *      every other octet stays encoded with UPPERCASE hex. %00 is rejected.
 *      "%2F" (slash) and "%5C" (backslash) stay encoded: they are data inside
 *      a segment, never a segment separator.
 *   3. Runs of '/' collapse into one.
 *   4. Dot segments ("." and "..", also when written %2E) are removed as in
 *      RFC 3986 §5.2.4; a ".." that would climb above the root is an error.
 *   5. A trailing slash is preserved ("/a/" stays "/a/"; "/a/." => "/a/").
 */
#ifndef PT_ROUTER_NORMALIZE_H
#define PT_ROUTER_NORMALIZE_H

#include "core/common.h"

/* Normalizes in[0..len) into `out`, which must have room for len + 1 bytes
 * (the output is never longer than the input; a NUL is written after it).
 * Single pass, no allocation. Returns the output length, or PT_ERR with
 * *detail set to a static message suitable for a 400 response body. */
ssize_t pt_path_normalize(const char *in, size_t len, char *out, const char **detail);

#endif
