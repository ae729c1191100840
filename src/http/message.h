/* message.h — the protocol-neutral HTTP message model.
 *
 * Codecs (HTTP/1 today, HTTP/2 later) translate wire bytes into these
 * structures; the router, the proxy and every plugin see only these. In
 * particular a pt_request carries no framing: no Transfer-Encoding, no
 * Connection/Keep-Alive/Upgrade/TE/Proxy-Connection, no Host header (the
 * authority is a field, as HTTP/2's :authority). Whether a body exists and
 * its length (if known) are fields; how it is delimited on the wire is the
 * codec's business. So is an upgrade: its intent travels as the `upgrade`
 * fields below, never as header fields (docs/websocket.md).
 *
 * Memory: every pt_str in a message points into the request's arena (or into
 * a buffer the codec guarantees outlives the message; see pt_message_rebase). */
#ifndef PT_HTTP_MESSAGE_H
#define PT_HTTP_MESSAGE_H

#include "core/arena.h"
#include "core/common.h"

typedef enum {
    PT_METHOD_OTHER = 0,
    PT_METHOD_GET,
    PT_METHOD_HEAD,
    PT_METHOD_POST,
    PT_METHOD_PUT,
    PT_METHOD_DELETE,
    PT_METHOD_PATCH,
    PT_METHOD_OPTIONS,
    PT_METHOD_TRACE,
    PT_METHOD_CONNECT,
    PT_METHOD__COUNT
} pt_method;

#define PT_METHOD_BIT(m) (1u << (unsigned)(m))

/* Maps a method token to its id (PT_METHOD_OTHER for extension methods). */
pt_method pt_method_from_str(pt_str s);
const char *pt_method_name(pt_method m); /* "GET", ...; "OTHER" for extension methods */
/* Idempotent per RFC 9110 §9.2.2 (GET HEAD PUT DELETE OPTIONS TRACE). */
bool pt_method_idempotent(pt_method m);

typedef struct {
    pt_str name; /* as received (case preserved); compare with pt_str_ieq */
    pt_str value; /* leading/trailing whitespace already trimmed */
} pt_header;

/* A growable array of headers in an arena. Order is preserved. */
typedef struct {
    pt_header *v;
    uint32_t n;
    uint32_t cap;
} pt_headers;

void pt_headers_add(pt_headers *h, pt_arena *a, pt_str name, pt_str value);
/* First value of `name` (case-insensitive), or NULL. */
const pt_str *pt_headers_get(const pt_headers *h, const char *name);
/* Removes every occurrence; returns how many were removed. */
int pt_headers_remove(pt_headers *h, const char *name);
/* Remove all `name` then add one with `value`. */
void pt_headers_set(pt_headers *h, pt_arena *a, pt_str name, pt_str value);

typedef struct pt_request {
    pt_method method;
    pt_str method_str;  /* the token as received */
    pt_str scheme;      /* "http" (or "https" once TLS lands) */
    pt_str authority;   /* Host / :authority, as received (may include a port) */
    pt_str host;        /* authority without port, lowercased */
    pt_str target;      /* raw request-target (origin-form) */
    pt_str path;        /* raw path part of target (before '?') */
    pt_str query;       /* part after '?', without it; empty if none */
    bool has_query;
    uint8_t version;    /* 10, 11 or 20 */
    pt_headers headers; /* end-to-end fields only */
    /* Body: has_body false => no body at all. content_length >= 0 when the
     * length is known up front, -1 when it is streamed with unknown length. */
    bool has_body;
    int64_t content_length;
    bool expect_continue; /* client sent Expect: 100-continue (codec answers it) */
    /* Tunnel intent (docs/websocket.md). HTTP/1: the Upgrade field's
     * protocol list as received (the codec consumes the field) and whether
     * Connection named "upgrade"; HTTP/2: the :protocol of an extended
     * CONNECT (RFC 8441), which the codec turns into a GET (version 20,
     * connection_upgrade false). Empty when none. The txn keeps it only for
     * a tunnel it will open (the HTTP/1 upstream client then writes Upgrade
     * and "Connection: Upgrade" itself), else clears it. */
    pt_str upgrade;
    bool connection_upgrade;
} pt_request;

typedef struct pt_response {
    int status;
    pt_str reason;      /* informational only; may be empty */
    pt_headers headers; /* end-to-end fields only */
    bool has_body;      /* false for HEAD responses, 1xx, 204, 304 */
    int64_t content_length; /* -1 unknown (streamed) */
    bool close_connection;  /* an error Portico generated after which the
                               connection (HTTP/2: the stream) must not be reused */
    /* A 101's Upgrade field (HTTP/1 upstream; consumed by the codec) and
     * whether its Connection named "upgrade". The HTTP/1 downstream codec
     * writes Upgrade and "Connection: Upgrade" back on a 101. */
    pt_str upgrade;
    bool connection_upgrade;
} pt_response;

/* Connection-specific (hop-by-hop) fields of RFC 9113 §8.2.2 / RFC 9110
 * §7.6.1: connection, keep-alive, proxy-connection, transfer-encoding,
 * upgrade, te. The one list the codecs share; each adds what its own
 * framing owns (content-length, host, ...). Case-insensitive. */
bool pt_field_connection_specific(pt_str name);

/* True for a field that must not be forwarded in a trailer section
 * (RFC 9110 §6.5.1): the connection-specific fields, message framing
 * (content-length), routing (host), authentication (authorization,
 * proxy-authorization, www-/proxy-authenticate, cookie, set-cookie),
 * request modifiers and controls (expect, range, max-forwards, if-*,
 * cache-control, pragma), payload processing (content-type,
 * content-encoding, content-range, trailer), HTTP/2 settings, and any
 * pseudo-header (":name") or empty name. Case-insensitive. */
bool pt_trailer_field_forbidden(pt_str name);

/* Steps through raw field lines ("name: value\r\n"..., LF-only lines
 * tolerated), the form trailers travel in: on true, *name and *value are
 * the next field (both trimmed of spaces and tabs, the value also of a
 * final CR) and *rest is advanced past its line; lines without a name and
 * a colon are skipped. False at the end. */
bool pt_field_line_next(pt_str *rest, pt_str *name, pt_str *value);

/* Steps through a comma-separated field value (RFC 9110 §5.6.1: Upgrade,
 * Connection, Content-Encoding...): on true *tok is the next non-empty
 * element, trimmed of spaces and tabs, and *rest is advanced past it.
 * False at the end. */
bool pt_list_next(pt_str *rest, pt_str *tok);

/* Adds the fields of a raw trailer section ("name: value\r\n"...; LF-only
 * lines and surrounding whitespace tolerated) to `out` (copies in `a`),
 * dropping the fields pt_trailer_field_forbidden() names and lines without
 * a name and a colon. */
void pt_trailers_parse(pt_headers *out, pt_arena *a, pt_str raw);
/* The trailer section for the wire: "name: value\r\n" per field of `h`,
 * skipping forbidden fields and values with CR/LF (a plugin may have added
 * them). PT_STR_NULL when nothing is left. */
pt_str pt_trailers_lines(pt_arena *a, const pt_headers *h);

/* Standard reason phrase for a status code ("Unknown" if none). */
const char *pt_status_reason(int status);

/* Shift every slice of `req` that points into [old_base, old_base+len) by
 * (new_base - old_base). Used after copying a parsed head out of a read
 * buffer into the arena. */
void pt_request_rebase(pt_request *req, const char *old_base, size_t len, const char *new_base);
void pt_response_rebase(pt_response *res, const char *old_base, size_t len, const char *new_base);

#endif
