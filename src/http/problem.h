/* problem.h — RFC 9457 "problem+json" error bodies, and the JSON string
 * escaper shared with the access log.
 *
 * Every error Portico answers by itself (no route, bad request, upstream
 * down...) carries a small, stable JSON body:
 *   {"type":"urn:portico:error:no-route","title":"Not Found","status":404,
 *    "detail":"...","request_id":"..."}
 * so clients can branch on `type` and operators can grep for `request_id`. */
#ifndef PT_HTTP_PROBLEM_H
#define PT_HTTP_PROBLEM_H

#include "core/arena.h"
#include "core/common.h"

#define PT_PROBLEM_CONTENT_TYPE "application/problem+json"

/* The slug used in "urn:portico:error:<slug>" for `status` ("error" for any
 * status without a dedicated slug). Static string. */
const char *pt_problem_slug(int status);

/* Builds the problem+json body for `status` in arena `a` (NUL-terminated,
 * no trailing newline). `detail` (NUL-terminated, may be NULL or "" =>
 * the "detail" member is omitted) and `request_id` (empty => omitted) are
 * JSON-escaped. The title is pt_status_reason(status). */
pt_str pt_problem_json(pt_arena *a, int status, const char *detail, pt_str request_id);
/* The same with a "trace_id" member after request_id (the W3C trace id of
 * the request; empty => omitted). */
pt_str pt_problem_json_traced(pt_arena *a, int status, const char *detail, pt_str request_id, pt_str trace_id);

/* Writes `in[0..n)` to `out` as the inside of a JSON string (no quotes) and
 * returns the bytes written; `out` must hold at least 6*n bytes. '"' and '\'
 * and control characters are escaped; valid UTF-8 passes through unchanged;
 * each byte that is not part of a valid UTF-8 sequence becomes \ufffd so the
 * output is always valid JSON in valid UTF-8. Does not NUL-terminate. */
size_t pt_json_escape(char *out, const char *in, size_t n);

/* Like pt_json_escape, but writes at most `cap` bytes, never splitting an
 * escape or a UTF-8 sequence. *consumed (if non-NULL) receives the number of
 * input bytes represented in the output. */
size_t pt_json_escape_bounded(char *out, size_t cap, const char *in, size_t n, size_t *consumed);

#endif
