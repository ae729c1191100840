/* message.c — see message.h. */
#include "http/message.h"

static const char *const method_names[PT_METHOD__COUNT] = {
    "OTHER", "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
};

pt_method pt_method_from_str(pt_str s)
{
    for (int m = 1; m < PT_METHOD__COUNT; m++)
        if (pt_str_eq_lit(s, method_names[m])) return (pt_method)m;
    return PT_METHOD_OTHER;
}

const char *pt_method_name(pt_method m) { return (unsigned)m < PT_METHOD__COUNT ? method_names[m] : "OTHER"; }

bool pt_method_idempotent(pt_method m)
{
    switch (m) {
    case PT_METHOD_GET: case PT_METHOD_HEAD: case PT_METHOD_PUT:
    case PT_METHOD_DELETE: case PT_METHOD_OPTIONS: case PT_METHOD_TRACE:
        return true;
    default:
        return false;
    }
}

void pt_headers_add(pt_headers *h, pt_arena *a, pt_str name, pt_str value)
{
    if (h->n == h->cap) {
        uint32_t cap = h->cap ? h->cap * 2 : 16;
        pt_header *v = pt_arena_alloc(a, cap * sizeof(*v));
        if (h->n) memcpy(v, h->v, h->n * sizeof(*v));
        h->v = v;
        h->cap = cap;
    }
    h->v[h->n].name = name;
    h->v[h->n].value = value;
    h->n++;
}

const pt_str *pt_headers_get(const pt_headers *h, const char *name)
{
    pt_str n = pt_str_c(name);
    for (uint32_t i = 0; i < h->n; i++)
        if (pt_str_ieq(h->v[i].name, n)) return &h->v[i].value;
    return NULL;
}

int pt_headers_remove(pt_headers *h, const char *name)
{
    pt_str n = pt_str_c(name);
    uint32_t w = 0;
    int removed = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (pt_str_ieq(h->v[i].name, n)) {
            removed++;
            continue;
        }
        h->v[w++] = h->v[i];
    }
    h->n = w;
    return removed;
}

void pt_headers_set(pt_headers *h, pt_arena *a, pt_str name, pt_str value)
{
    char tmp[256];
    size_t n = PT_MIN(name.n, sizeof(tmp) - 1);
    memcpy(tmp, name.p, n);
    tmp[n] = '\0';
    pt_headers_remove(h, tmp);
    pt_headers_add(h, a, name, value);
}

const char *pt_status_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

static void rebase(pt_str *s, const char *old_base, size_t len, const char *new_base)
{
    if (s->p && s->p >= old_base && s->p <= old_base + len) s->p = new_base + (s->p - old_base);
}

static void rebase_headers(pt_headers *h, const char *old_base, size_t len, const char *new_base)
{
    for (uint32_t i = 0; i < h->n; i++) {
        rebase(&h->v[i].name, old_base, len, new_base);
        rebase(&h->v[i].value, old_base, len, new_base);
    }
}

void pt_request_rebase(pt_request *r, const char *old_base, size_t len, const char *new_base)
{
    rebase(&r->method_str, old_base, len, new_base);
    rebase(&r->scheme, old_base, len, new_base);
    rebase(&r->authority, old_base, len, new_base);
    rebase(&r->host, old_base, len, new_base);
    rebase(&r->target, old_base, len, new_base);
    rebase(&r->path, old_base, len, new_base);
    rebase(&r->query, old_base, len, new_base);
    rebase(&r->upgrade, old_base, len, new_base);
    rebase_headers(&r->headers, old_base, len, new_base);
}

void pt_response_rebase(pt_response *r, const char *old_base, size_t len, const char *new_base)
{
    rebase(&r->reason, old_base, len, new_base);
    rebase(&r->upgrade, old_base, len, new_base);
    rebase_headers(&r->headers, old_base, len, new_base);
}

bool pt_field_connection_specific(pt_str n)
{
    static const char *const hop[] = {"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                                      "upgrade", "te"};
    for (size_t i = 0; i < PT_ARRAY_LEN(hop); i++)
        if (pt_str_ieq_lit(n, hop[i])) return true;
    return false;
}

bool pt_trailer_field_forbidden(pt_str n)
{
    static const char *const forbidden[] = {
        "content-length", "host", "trailer", "http2-settings",                           /* framing, routing */
        "authorization", "proxy-authorization", "www-authenticate", "proxy-authenticate", /* authentication */
        "cookie", "set-cookie",
        "expect", "range", "max-forwards", "cache-control", "pragma",                     /* request controls */
        "content-type", "content-encoding", "content-range",                              /* payload processing */
    };
    if (!n.n || n.p[0] == ':' || pt_field_connection_specific(n)) return true;
    if (n.n > 3 && pt_str_ieq_lit(pt_str_make(n.p, 3), "if-")) return true; /* conditionals */
    for (size_t i = 0; i < PT_ARRAY_LEN(forbidden); i++)
        if (pt_str_ieq_lit(n, forbidden[i])) return true;
    return false;
}

static pt_str trim_ws(pt_str v)
{
    while (v.n && (v.p[0] == ' ' || v.p[0] == '\t')) {
        v.p++;
        v.n--;
    }
    while (v.n && (v.p[v.n - 1] == ' ' || v.p[v.n - 1] == '\t' || v.p[v.n - 1] == '\r')) v.n--;
    return v;
}

bool pt_field_line_next(pt_str *rest, pt_str *name, pt_str *value)
{
    while (rest->n) {
        const char *p = rest->p, *e = rest->p + rest->n;
        const char *eol = memchr(p, '\n', rest->n);
        if (!eol) eol = e;
        *rest = eol < e ? pt_str_make(eol + 1, (size_t)(e - eol - 1)) : PT_STR_NULL;
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (!colon) continue;
        *name = trim_ws(pt_str_make(p, (size_t)(colon - p)));
        *value = trim_ws(pt_str_make(colon + 1, (size_t)(eol - colon - 1)));
        if (name->n) return true;
    }
    return false;
}

void pt_trailers_parse(pt_headers *out, pt_arena *a, pt_str raw)
{
    pt_str rest = raw, name, value;
    while (pt_field_line_next(&rest, &name, &value))
        if (!pt_trailer_field_forbidden(name)) pt_headers_add(out, a, pt_arena_str(a, name), pt_arena_str(a, value));
}

pt_str pt_trailers_lines(pt_arena *a, const pt_headers *h)
{
    if (!h->n) return PT_STR_NULL;
    size_t total = 0;
    for (uint32_t i = 0; i < h->n; i++) total += h->v[i].name.n + h->v[i].value.n + 4;
    char *s = pt_arena_alloc(a, total + 1), *o = s;
    for (uint32_t i = 0; i < h->n; i++) {
        const pt_header *f = &h->v[i];
        if (pt_trailer_field_forbidden(f->name) || memchr(f->value.p, '\n', f->value.n) ||
            memchr(f->value.p, '\r', f->value.n))
            continue;
        memcpy(o, f->name.p, f->name.n);
        o += f->name.n;
        memcpy(o, ": ", 2);
        o += 2;
        memcpy(o, f->value.p, f->value.n);
        o += f->value.n;
        memcpy(o, "\r\n", 2);
        o += 2;
    }
    *o = '\0';
    return o == s ? PT_STR_NULL : pt_str_make(s, (size_t)(o - s));
}

bool pt_list_next(pt_str *rest, pt_str *tok)
{
    while (rest->n) {
        const char *p = rest->p, *e = rest->p + rest->n;
        const char *comma = memchr(p, ',', rest->n);
        const char *end = comma ? comma : e;
        *rest = comma ? pt_str_make(comma + 1, (size_t)(e - comma - 1)) : PT_STR_NULL;
        while (p < end && (*p == ' ' || *p == '\t')) p++;
        while (end > p && (end[-1] == ' ' || end[-1] == '\t')) end--;
        if (end > p) {
            *tok = pt_str_make(p, (size_t)(end - p));
            return true;
        }
    }
    return false;
}
