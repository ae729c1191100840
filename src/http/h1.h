/* h1.h — the strict HTTP/1.1 codec (RFC 9110 / RFC 9112): parsing of request
 * and response heads, an incremental chunked-body decoder, and the chunk-size
 * line writer. Pure functions over byte buffers: no I/O, no globals.
 * (Serialising heads for the wire is the proxy's business, not this file's.)
 *
 * Parsing contract (request and response alike):
 *   - The parser is given everything read so far, starting at the first byte
 *     of the message. It returns PT_AGAIN until the whole head (up to and
 *     including the empty line) is present, then returns the head's length in
 *     bytes (> 0). Bytes after the head (body, pipelined requests) are not
 *     looked at. The caller re-invokes it from the start when more bytes
 *     arrive; a PT_AGAIN call allocates nothing from the arena.
 *   - PT_AGAIN is never returned for a buffer that already proves a limit is
 *     exceeded: no CRLF within max_request_line + 2 bytes => 414 (502 for
 *     responses); len >= max_header_size without the end of the head => 431
 *     (502 for responses). So the caller never has to buffer more than
 *     max_header_size bytes of head.
 *   - Syntax errors may be reported before the head is complete (as soon as
 *     the offending line is complete); a prefix of a valid head always gives
 *     PT_AGAIN.
 *   - On error it returns PT_ERR and fills *err (status to answer, a short
 *     static human-readable detail). Errors are final: the connection is closed.
 *   - Output slices point into `buf` (zero-copy), except a few that point to
 *     static literals ("http", "/", "") or into `a` (a lowercased host, a
 *     rebuilt target). The caller copies the head (e.g. into the request
 *     arena) and calls pt_request_rebase(), which leaves those alone.
 *   - `a` is only used for the header array (sized max(16, n); more than 32
 *     fields are moved there once the end of the head is in the buffer), for
 *     lowercasing the host and for the target of "http://host?query" (both
 *     on success only).
 *   - Only CRLF line endings are accepted; a bare CR or bare LF is an error.
 *   - `lim` may be NULL; a NULL `lim` or a zero field means the default below.
 *
 * Hop-by-hop handling: Connection, Keep-Alive, Proxy-Connection, TE,
 * Transfer-Encoding, Upgrade, Content-Length, every header named in a
 * Connection field, and in requests also Host and Expect, are consumed by the
 * codec: they never appear in pt_request.headers / pt_response.headers. What
 * they mean is reported in pt_h1_info (framing, keep-alive, upgrade) and in
 * the message (authority/host, content_length, expect_continue). Trailer is
 * end-to-end and kept. Connection tokens other than close/keep-alive only
 * remove the fields they name; naming a framing field (Content-Length,
 * Transfer-Encoding, Host) there has no effect on framing. */
#ifndef PT_HTTP_H1_H
#define PT_HTTP_H1_H

#include "http/message.h"

#define PT_H1_DEFAULT_MAX_REQUEST_LINE 8192u
#define PT_H1_DEFAULT_MAX_HEADER_SIZE 65536u
#define PT_H1_DEFAULT_MAX_HEADERS 100u

typedef struct {
    uint32_t max_request_line; /* bytes of the request line without CRLF; over => 414 */
    uint32_t max_header_size;  /* bytes of the whole head incl. the final CRLF; over => 431 */
    uint32_t max_headers;      /* number of field lines (consumed ones included); over => 431 */
} pt_h1_limits;

typedef struct {
    int status;         /* 400, 414, 417, 431, 505 for requests; 502 for responses;
                           400 from the chunked decoder (map it to 502 for upstream bodies) */
    const char *detail; /* static string, e.g. "Content-Length and Transfer-Encoding both present" */
} pt_h1_error;

typedef enum {
    PT_H1_BODY_NONE = 0, /* no body */
    PT_H1_BODY_LENGTH,   /* Content-Length bytes follow */
    PT_H1_BODY_CHUNKED,  /* chunked transfer coding */
    PT_H1_BODY_CLOSE,    /* responses only: body ends when the connection closes */
} pt_h1_body_kind;

typedef struct {
    pt_h1_body_kind body;
    uint64_t content_length; /* for PT_H1_BODY_LENGTH; also the advertised length of a
                                HEAD / 304 response that carried Content-Length */
    bool keep_alive;         /* HTTP/1.1 without "close", or 1.0 with "keep-alive" and
                                without "close"; always false for BODY_CLOSE */
    bool upgrade;            /* an Upgrade field was present; its value is the message's
                                `upgrade` (several fields joined with ", ") and
                                `connection_upgrade` tells whether Connection named
                                "upgrade" (docs/websocket.md) */
} pt_h1_info;

/* Request head rules (any violation => 400 unless stated):
 *  Empty lines (CRLF) before the request-line are skipped (RFC 9112 §2.2)
 *   and counted in the returned length.
 *  request-line: method SP request-target SP HTTP-version CRLF; exactly one SP
 *   each, nothing else on the line.
 *  method: tchar token (case-sensitive; extension methods give PT_METHOD_OTHER).
 *  target: origin-form ("/" followed by VCHARs except '#': no byte < 0x21,
 *   0x7f or >= 0x80), or absolute-form "http://authority[/path][?query]"
 *   (scheme case-insensitive; only "http"; the authority is validated like
 *   Host, userinfo is an error, and it replaces Host: authority/host come from
 *   it and target/path/query hold the origin-form part — "/" when the path is
 *   empty), or "*" for OPTIONS only. CONNECT and authority-form => 400
 *   ("CONNECT is not supported"); any other form => 400.
 *  version: exactly "HTTP/1.1" or "HTTP/1.0". A well-formed "HTTP/D.D" with
 *   major != 1 (0.9, 2.0, 3.0) => 505; "HTTP/1.2", "http/1.1", "HTTP/01.1",
 *   "HTTP/1" => 400.
 *  request-line longer than max_request_line (without CRLF) => 414.
 *  header field: token name, ':' immediately after the name (whitespace before
 *   the colon => 400), OWS, value of VCHAR/obs-text/SP/HTAB (no CTLs, NUL,
 *   bare CR, bare LF, DEL), OWS; the value is stored trimmed of OWS.
 *   obs-fold (a line starting with SP/HTAB) => 400.
 *  Host: HTTP/1.1 requires exactly one (even with absolute-form); missing,
 *   duplicated, empty-in-1.1 or syntactically invalid => 400. Syntax: reg-name
 *   (unreserved / sub-delims / pct-encoded; covers IPv4) or "[" IPv6 "]",
 *   optionally ":" 1*5DIGIT <= 65535 (an empty port is invalid).
 *   out->authority is the value as received; out->host is it without the port
 *   (brackets kept for IPv6), lowercased. HTTP/1.0 without Host (or with an
 *   empty one): authority and host are "".
 *  Content-Length: 1#(1*DIGIT) whose elements are all equal ("5, 5" is
 *   accepted); differing values (in one field or across fields), an empty or
 *   non-digit element, or a value > INT64_MAX => 400.
 *  Transfer-Encoding: exactly one such field whose value is "chunked"
 *   (case-insensitive) is accepted; anything else ("gzip", "chunked, chunked",
 *   "gzip, chunked", "chunked;x=1", empty, two fields) => 400.
 *   TE with HTTP/1.0 => 400. CL and TE together => 400.
 *  Connection: a comma-separated token list (non-token element => 400; more
 *   than 8 Connection fields => 400).
 *  Expect: "100-continue" (case-insensitive) sets expect_continue (HTTP/1.1
 *   only; ignored in 1.0 per RFC 9110 §10.1.1); any other value => 417.
 *  The number of field lines > max_headers or head > max_header_size => 431.
 *  On success: out->method/method_str/target/path/query/has_query/version/
 *   authority/host/scheme("http")/headers/has_body/content_length/
 *   expect_continue are set, and info is set. Framing:
 *     chunked            => info->body CHUNKED, has_body, content_length -1;
 *     Content-Length: N  => info->body LENGTH (N may be 0), has_body,
 *                           content_length N (so a POST with an explicit
 *                           zero length can be forwarded as such);
 *     neither            => info->body NONE, !has_body, content_length 0.
 *   info->upgrade is set when an Upgrade field was present; out->upgrade
 *   holds its protocol list (more than 4 Upgrade fields => 400) and
 *   out->connection_upgrade whether a Connection field named "upgrade". */
ssize_t pt_h1_parse_request(const char *buf, size_t len, const pt_h1_limits *lim, pt_arena *a,
                            pt_request *out, pt_h1_info *info, pt_h1_error *err);

/* Response head rules (every error => 502): status-line
 * "HTTP/1.1 SP 3DIGIT SP reason CRLF" or with "HTTP/1.0" (any other version
 * => 502); status 100..599; reason of SP/HTAB/VCHAR/obs-text, may be empty;
 * "HTTP/1.1 200\r\n" without the SP is tolerated. No empty lines before it.
 * The status line is limited by max_request_line. Field syntax and limits as
 * for requests; Host and Expect are ordinary fields in responses.
 * Framing per RFC 9112 §6.3, checked in this order:
 *   Transfer-Encoding present: with Content-Length => error; in HTTP/1.0 =>
 *     error; not exactly one field "chunked" => error (we cannot remove any
 *     other coding, and a body we could not re-frame must not be forwarded);
 *   request was HEAD, or status is 1xx/204/304 => BODY_NONE, !has_body
 *     (Content-Length ignored for framing; for HEAD/304 its value is reported
 *     in info->content_length and out->content_length, else -1);
 *   TE chunked => CHUNKED (content_length -1); valid CL => LENGTH (has_body,
 *   content_length N, N may be 0); else CLOSE (has_body, content_length -1).
 * Differing or invalid CLs are always errors. keep_alive is false for
 * BODY_CLOSE. 1xx heads are returned like others: the caller parses the
 * next head after them. */
ssize_t pt_h1_parse_response(const char *buf, size_t len, const pt_h1_limits *lim, bool request_was_head,
                             pt_arena *a, pt_response *out, pt_h1_info *info, pt_h1_error *err);

/* Incremental chunked-body decoder. Strict:
 *  chunk-size is 1..16 hex digits (a 17th digit => error, even if leading
 *   zeros); no whitespace anywhere in the chunk line (BWS is not tolerated),
 *   no "0x", no sign;
 *  optional chunk extensions: *( ";" token [ "=" ( token / quoted-string ) ] ),
 *   the whole chunk line at most 1024 bytes without its CRLF;
 *  exactly CRLF after the chunk line, after each chunk's data, after each
 *   trailer line and for the final empty line;
 *  trailer fields: token ":" value-bytes (as header values), no obs-fold;
 *   stored raw in `trailers` (each line with its CRLF, without the final
 *   empty line), at most min(max_trailer_size, sizeof trailers) bytes, else
 *   error. Trailers are not interpreted; forwarding them is the caller's call.
 * After an error the decoder stays failed. */
typedef struct {
    int state;              /* private */
    uint64_t remaining;     /* private: data bytes left in the current chunk */
    uint32_t line_len;      /* private */
    uint32_t max_trailer_size; /* set by pt_chunked_init to sizeof trailers; may be lowered */
    bool done;              /* set once the last chunk and trailers are consumed */
    /* Trailer section, raw, as received (field lines each ending in CRLF, without
     * the final empty line); valid once done. Owned by the decoder (fixed buffer). */
    char trailers[4096];
    uint32_t trailers_len;
} pt_chunked_decoder;

void pt_chunked_init(pt_chunked_decoder *d);
/* Consumes bytes from in[0..len). Returns the number of bytes consumed (>= 0)
 * or PT_ERR (with err->detail set, err->status 400). When the consumed range
 * ends with chunk data, *data and *data_len describe the payload bytes (a sub-range
 * of `in` ending at the consumed position; only one contiguous data span per
 * call — call again with the rest). *data_len is 0 (and *data NULL) when the
 * call consumed only framing; then the whole input was consumed unless done.
 * Stops right after the final CRLF when done (bytes after it belong to the
 * next message); once done it consumes nothing. */
ssize_t pt_chunked_decode(pt_chunked_decoder *d, const char *in, size_t len, const char **data,
                          size_t *data_len, pt_h1_error *err);

/* Writes "<lowercase hex, no leading zeros>\r\n" for a chunk of n bytes into out
 * (>= 18 bytes; not NUL-terminated); returns the length written. n == 0 gives
 * "0\r\n", the last-chunk line. */
size_t pt_chunk_header(char *out, size_t n);

/* authority = host [ ":" port ] as a Host field must be (reg-name with
 * %XX escapes, or a bracketed IPv6 literal holding a ':'; port <= 65535);
 * *host is the authority without its port. The HTTP/2 codec checks
 * :authority with it, so what is forwarded is what HTTP/1 accepts. */
bool pt_h1_split_authority(pt_str auth, pt_str *host);
/* An origin-form request-target ("/" then VCHARs without '#'), or "*" for
 * OPTIONS: what an HTTP/1.1 upstream can be sent (used for HTTP/2 :path). */
bool pt_h1_target_valid(pt_str target, pt_method m);

#endif
