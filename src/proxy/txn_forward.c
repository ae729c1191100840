/* txn_forward.c — what the proxy says about the client: the client address
 * behind trusted proxies, the forwarding headers added to the upstream
 * request, and the gRPC forms of Portico's own errors. */
#include <stdio.h>

#include "proxy/txn_int.h"

/* gRPC status code for an HTTP status Portico would answer (the mapping of
 * gRPC's "HTTP to gRPC status code mapping" document, plus Portico's own
 * cases: 404 no route is UNIMPLEMENTED, 504 is DEADLINE_EXCEEDED). */
static int grpc_status_for(int http)
{
    switch (http) {
    case 400: return 13; /* INTERNAL (malformed request) */
    case 401: return 16; /* UNAUTHENTICATED */
    case 403: return 7;  /* PERMISSION_DENIED */
    case 404: return 12; /* UNIMPLEMENTED */
    case 413: case 429: return 8; /* RESOURCE_EXHAUSTED */
    case 502: case 503: return 14; /* UNAVAILABLE */
    case 504: case 408: return 4;  /* DEADLINE_EXCEEDED */
    default: return 2;   /* UNKNOWN */
    }
}

/* A gRPC client (HTTP/2, content-type application/grpc...) understands
 * errors only as grpc-status: answer "Trailers-Only" (HTTP 200, no body,
 * grpc-status and grpc-message in the head). */
bool txn_respond_grpc_error(pt_txn *t, int status, const char *detail)
{
    const pt_str *ct = t->req ? pt_headers_get(&t->req->headers, "content-type") : NULL;
    if (!t->req || t->req->version != 20 || !ct || ct->n < 16 || memcmp(ct->p, "application/grpc", 16) != 0)
        return false;
    pt_txn_respond(t, 200, PT_STR_LIT("application/grpc"), PT_STR_NULL);
    t->res.has_body = false;
    t->res.content_length = -1;
    char code[8];
    snprintf(code, sizeof(code), "%d", grpc_status_for(status));
    pt_txn_respond_header(t, PT_STR_LIT("grpc-status"), pt_str_c(code));
    /* grpc-message is percent-encoded (printable ASCII except '%' passes) */
    const char *d = detail ? detail : pt_status_reason(status);
    size_t n = strlen(d);
    char *enc = pt_arena_alloc(t->a, n * 3 + 1), *o = enc;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)d[i];
        if (ch >= 0x20 && ch <= 0x7e && ch != '%') *o++ = (char)ch;
        else o += sprintf(o, "%%%02X", ch);
    }
    pt_txn_respond_header(t, PT_STR_LIT("grpc-message"), pt_str_make(enc, (size_t)(o - enc)));
    return true;
}

/* The address inside one Forwarded element (RFC 7239): the value of its
 * for= parameter, unquoted, without a port or IPv6 brackets. Empty when the
 * element has none. */
static pt_str forwarded_for(pt_str el)
{
    size_t i = 0;
    while (i < el.n) {
        while (i < el.n && (el.p[i] == ' ' || el.p[i] == '\t' || el.p[i] == ';')) i++;
        size_t k = i;
        while (i < el.n && el.p[i] != '=' && el.p[i] != ';') i++;
        pt_str key = pt_str_make(el.p + k, i - k);
        if (i >= el.n || el.p[i] != '=') continue;
        i++;
        size_t vs = i, ve;
        if (i < el.n && el.p[i] == '"') {
            vs = ++i;
            while (i < el.n && el.p[i] != '"') i++;
            ve = i;
            if (i < el.n) i++;
        } else {
            while (i < el.n && el.p[i] != ';') i++;
            ve = i;
        }
        while (ve > vs && (el.p[ve - 1] == ' ' || el.p[ve - 1] == '\t')) ve--;
        if (!pt_str_ieq_lit(key, "for")) continue;
        pt_str v = pt_str_make(el.p + vs, ve - vs);
        if (v.n && v.p[0] == '[') { /* "[2001:db8::1]:4711" -> "2001:db8::1" */
            const char *rb = memchr(v.p, ']', v.n);
            if (!rb) return PT_STR_NULL;
            v = pt_str_make(v.p + 1, (size_t)(rb - v.p) - 1);
        } else {
            const char *colon = memchr(v.p, ':', v.n);
            if (colon && !memchr(colon + 1, ':', v.n - (size_t)(colon + 1 - v.p))) v.n = (size_t)(colon - v.p);
        }
        return v;
    }
    return PT_STR_NULL;
}

/* The client address: the peer, unless the peer is a trusted proxy; then
 * the configured header (X-Forwarded-For, or Forwarded's for= values) is
 * walked from the right, skipping trusted hops, and the first untrusted
 * address is the client (all trusted: the leftmost). An entry that is not
 * an IP address (garbage, "unknown", an obfuscated name) stops the walk at
 * the last address known to be good. */
void txn_resolve_client_addr(pt_txn *t)
{
    const pt_config *cfg = t->gen->cfg;
    if (!cfg->has_trusted_proxies) return;
    pt_ip_addr a;
    if (!pt_ip_addr_parse(t->conn.client_addr, &a) || !pt_ip_set_contains(&cfg->trusted_proxies, &a)) return;
    const char *hname = cfg->client_ip_forwarded ? "Forwarded" : "X-Forwarded-For";
    pt_str client = t->conn.client_addr;
    const pt_headers *h = &t->req->headers;
    /* fields in reverse order, entries right to left */
    for (uint32_t i = h->n; i-- > 0;) {
        if (!pt_str_ieq_lit(h->v[i].name, hname)) continue;
        pt_str v = h->v[i].value;
        size_t end = v.n;
        for (;;) {
            size_t start = end;
            while (start > 0 && v.p[start - 1] != ',') start--;
            size_t b = start, e = end;
            while (b < e && (v.p[b] == ' ' || v.p[b] == '\t')) b++;
            while (e > b && (v.p[e - 1] == ' ' || v.p[e - 1] == '\t')) e--;
            pt_str entry = pt_str_make(v.p + b, e - b);
            if (entry.n) {
                if (cfg->client_ip_forwarded) entry = forwarded_for(entry);
                if (!pt_ip_addr_parse(entry, &a)) goto done;
                client = entry;
                if (!pt_ip_set_contains(&cfg->trusted_proxies, &a)) goto done;
            }
            if (start == 0) break;
            end = start - 1;
        }
    }
done:
    t->client_addr = pt_arena_str(t->a, client);
}


/* gRPC deadline (grpc-timeout: 1-8 digits and a unit H M S m u n). Returns
 * milliseconds (rounded up, at least 1), or 0 when absent or malformed. */
uint64_t txn_grpc_timeout_ms(const pt_request *req)
{
    const pt_str *v = pt_headers_get(&req->headers, "grpc-timeout");
    if (!v || v->n < 2 || v->n > 9) return 0;
    uint64_t n = 0;
    for (size_t i = 0; i + 1 < v->n; i++) {
        if (v->p[i] < '0' || v->p[i] > '9') return 0;
        n = n * 10 + (uint64_t)(v->p[i] - '0');
    }
    uint64_t ms;
    switch (v->p[v->n - 1]) {
    case 'H': ms = n * 3600000; break;
    case 'M': ms = n * 60000; break;
    case 'S': ms = n * 1000; break;
    case 'm': ms = n; break;
    case 'u': ms = (n + 999) / 1000; break;
    case 'n': ms = (n + 999999) / 1000000; break;
    default: return 0;
    }
    return ms ? ms : 1;
}


/* X-Forwarded-For (the chain plus our peer), X-Real-IP, X-Forwarded-Proto,
 * X-Forwarded-Host, Via and the mTLS identity headers, set once per request
 * (retries reuse them). */
void txn_add_forwarding_headers(pt_txn *t)
{
    pt_request *r = t->req;
    pt_headers *h = &r->headers;
    /* XFF: the chain as received plus the peer that connected to us; several
     * XFF fields form one list (RFC 9110 §5.3): join them in order. */
    pt_str peer = t->conn.client_addr;
    size_t total = peer.n;
    for (uint32_t i = 0; i < h->n; i++)
        if (pt_str_ieq_lit(h->v[i].name, "X-Forwarded-For") && h->v[i].value.n) total += h->v[i].value.n + 2;
    char *s = pt_arena_alloc(t->a, total + 1);
    size_t n = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (!pt_str_ieq_lit(h->v[i].name, "X-Forwarded-For") || !h->v[i].value.n) continue;
        memcpy(s + n, h->v[i].value.p, h->v[i].value.n);
        n += h->v[i].value.n;
        memcpy(s + n, ", ", 2);
        n += 2;
    }
    memcpy(s + n, peer.p, peer.n);
    n += peer.n;
    pt_str xffv = pt_str_make(s, n);
    pt_headers_set(h, t->a, PT_STR_LIT("X-Forwarded-For"), xffv);
    /* X-Real-IP: the client address Portico decided on (trusted_proxies);
     * a client-sent copy is always replaced. */
    pt_headers_set(h, t->a, PT_STR_LIT("X-Real-IP"), t->client_addr);
    pt_headers_set(h, t->a, PT_STR_LIT("X-Forwarded-Proto"), r->scheme.n ? r->scheme : PT_STR_LIT("http"));
    if (r->authority.n) pt_headers_set(h, t->a, PT_STR_LIT("X-Forwarded-Host"), r->authority);
    pt_headers_remove(h, "Expect"); /* the codec answers 100-continue itself */
    if (t->gen->cfg->via) pt_headers_add(h, t->a, PT_STR_LIT("Via"), PT_STR_LIT("1.1 portico"));
    /* mTLS identity: never trust a client-supplied copy of the header. */
    const pt_listener_conf *lc = txn_listener(t);
    if (lc && lc->tls.client_forward_header) {
        pt_headers_remove(h, lc->tls.client_forward_header);
        if (t->conn.client_cert_subject.n)
            pt_headers_add(h, t->a, pt_str_c(lc->tls.client_forward_header), t->conn.client_cert_subject);
    }
    txn_identity_forward(t);
    if (lc && lc->tls.client_forward_san_header) {
        pt_headers_remove(h, lc->tls.client_forward_san_header);
        if (t->conn.client_cert_sans.n)
            pt_headers_add(h, t->a, pt_str_c(lc->tls.client_forward_san_header), t->conn.client_cert_sans);
    }
}
