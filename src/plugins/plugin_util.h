/* plugin_util.h — small helpers shared by the built-in plugins (private to
 * src/plugins): header name/value validation for config time, reading a
 * {Name: value} mapping, and a fast per-thread PRNG for the request path. */
#ifndef PT_PLUGINS_PLUGIN_UTIL_H
#define PT_PLUGINS_PLUGIN_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>

#include "plugin/plugin.h"

/* RFC 9110 tchar. */
static inline bool pt_plugin_is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* A header name: a non-empty token of at most 255 bytes (the message
 * helpers compare names through a 256-byte buffer). */
static inline bool pt_plugin_header_name_ok(const char *s, size_t n)
{
    if (n == 0 || n > 255) return false;
    for (size_t i = 0; i < n; i++)
        if (!pt_plugin_is_tchar((unsigned char)s[i])) return false;
    return true;
}

/* A header value: no CR, LF, NUL or other control bytes (HTAB allowed). */
static inline bool pt_plugin_header_value_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
    }
    return true;
}

/* Framing and hop-by-hop fields: owned by the codecs and the proxy, never
 * by configuration (the message model does not even carry them). */
static inline bool pt_plugin_header_is_managed(const char *name)
{
    static const char *const managed[] = {
        "content-length", "transfer-encoding", "host",  "connection", "keep-alive",
        "proxy-connection", "te",              "trailer", "upgrade",
    };
    for (size_t i = 0; i < PT_ARRAY_LEN(managed); i++)
        if (pt_str_ieq_lit(pt_str_c(name), managed[i])) return true;
    return false;
}

/* One configured header (slices into the config arena, NUL-terminated). */
typedef struct {
    pt_str name;
    pt_str value;
} pt_plugin_header;

/* Reads a mapping {Name: value, ...} at `map` into an arena array. Each
 * name must be a token and not a managed header, each value a scalar
 * without control bytes, and names must be unique case-insensitively.
 * `what` prefixes error messages (e.g. "headers.request.set"). Returns
 * false (after recording errors) on any problem. */
static inline bool pt_plugin_read_header_map(pt_conf_ctx *ctx, const pt_conf_node *map, const char *what,
                                             pt_plugin_header **out, size_t *nout)
{
    *out = NULL;
    *nout = 0;
    if (!map || map->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, map, "%s: expected a mapping of header names to values", what);
        return false;
    }
    bool ok = true;
    pt_plugin_header *v = pt_arena_calloc(ctx->arena, (map->n ? map->n : 1) * sizeof(*v));
    size_t n = 0;
    for (size_t i = 0; i < map->n; i++) {
        const pt_conf_node *k = map->keys[i], *val = map->vals[i];
        const char *name = k->scalar ? k->scalar : "";
        if (!pt_plugin_header_name_ok(name, k->scalar ? k->scalar_len : 0)) {
            pt_conf_error(ctx, k, "%s: invalid header name \"%s\" (must be an HTTP token)", what, name);
            ok = false;
            continue;
        }
        if (pt_plugin_header_is_managed(name)) {
            pt_conf_error(ctx, k, "%s: header \"%s\" is a framing/hop-by-hop header managed by the proxy",
                          what, name);
            ok = false;
            continue;
        }
        bool dup = false;
        for (size_t j = 0; j < n; j++)
            if (pt_str_ieq(v[j].name, pt_str_c(name))) dup = true;
        if (dup) {
            pt_conf_error(ctx, k, "%s: header \"%s\" appears more than once", what, name);
            ok = false;
            continue;
        }
        if (!val || val->kind != PT_NODE_SCALAR) {
            pt_conf_error(ctx, val ? val : k, "%s: value of header \"%s\" must be a string", what, name);
            ok = false;
            continue;
        }
        if (!pt_plugin_header_value_ok(val->scalar, val->scalar_len)) {
            pt_conf_error(ctx, val, "%s: value of header \"%s\" contains CR, LF, NUL or control characters",
                          what, name);
            ok = false;
            continue;
        }
        v[n].name = pt_arena_str(ctx->arena, pt_str_make(name, k->scalar_len));
        v[n].value = pt_arena_str(ctx->arena, pt_str_make(val->scalar, val->scalar_len));
        n++;
    }
    *out = v;
    *nout = n;
    return ok;
}

/* Per-thread PRNG (core's pt_rand64: xoshiro256**, seeded from getrandom
 * once per thread). Not cryptographic: ids, sampling, hash keys. */
static inline uint64_t pt_plugin_rand64(void) { return pt_rand64(); }

/* Rotate left (SipHash below). */
static inline uint64_t pt_plugin_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* SipHash-1-3 keyed by (k0, k1): a fast 64-bit hash of client-chosen bytes
 * (rate-limit keys) that clients cannot aim at one bucket without the key
 * (draw it with pt_plugin_rand64). */
static inline uint64_t pt_plugin_siphash13(uint64_t k0, uint64_t k1, const void *data, size_t len)
{
#define PT_SIP_ROUND                                                                                          \
    do {                                                                                                      \
        v0 += v1, v1 = pt_plugin_rotl(v1, 13), v1 ^= v0, v0 = pt_plugin_rotl(v0, 32);                          \
        v2 += v3, v3 = pt_plugin_rotl(v3, 16), v3 ^= v2;                                                      \
        v0 += v3, v3 = pt_plugin_rotl(v3, 21), v3 ^= v0;                                                      \
        v2 += v1, v1 = pt_plugin_rotl(v1, 17), v1 ^= v2, v2 = pt_plugin_rotl(v2, 32);                          \
    } while (0)
    const unsigned char *p = data;
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    size_t full = len & ~(size_t)7;
    for (size_t i = 0; i < full; i += 8) {
        uint64_t m;
        memcpy(&m, p + i, 8);
        v3 ^= m;
        PT_SIP_ROUND;
        v0 ^= m;
    }
    uint64_t last = (uint64_t)len << 56;
    for (size_t i = 0; i < (len & 7); i++) last |= (uint64_t)p[full + i] << (8 * i);
    v3 ^= last;
    PT_SIP_ROUND;
    v0 ^= last;
    v2 ^= 0xff;
    PT_SIP_ROUND;
    PT_SIP_ROUND;
    PT_SIP_ROUND;
#undef PT_SIP_ROUND
    return v0 ^ v1 ^ v2 ^ v3;
}

/* A growable byte string on the heap: a whole body a plugin rebuilds
 * (json_transform, xml_json). Zero-initialise; free with
 * pt_plugin_bytes_free. */
typedef struct {
    char *p;
    size_t len, cap;
} pt_plugin_bytes;

static inline void pt_plugin_bytes_put(pt_plugin_bytes *b, const char *s, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        b->p = pt_xrealloc(b->p, cap);
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
}

static inline void pt_plugin_bytes_free(pt_plugin_bytes *b)
{
    free(b->p);
    *b = (pt_plugin_bytes){0};
}

/* Reads a list of non-empty strings (a single string is a list of one)
 * into ctx->arena; `plugin` and `what` name it in errors. With `nonempty`
 * an empty list is an error too. An absent node (NULL) is an empty list. */
static inline bool pt_plugin_string_list(pt_conf_ctx *ctx, const pt_conf_node *n, const char *plugin,
                                         const char *what, bool nonempty, const char *const **out, size_t *nout)
{
    *out = NULL;
    *nout = 0;
    if (!n) return true;
    const pt_conf_node *const *items = n->kind == PT_NODE_SEQ ? (const pt_conf_node *const *)n->vals : &n;
    size_t count = n->kind == PT_NODE_SEQ ? n->n : 1;
    const char **v = pt_arena_calloc(ctx->arena, (count ? count : 1) * sizeof(*v));
    for (size_t i = 0; i < count; i++) {
        if (items[i]->kind != PT_NODE_SCALAR || items[i]->scalar_len == 0) {
            pt_conf_error(ctx, items[i], "%s: '%s' must be a list of non-empty strings", plugin, what);
            return false;
        }
        v[i] = items[i]->scalar;
    }
    if (nonempty && count == 0) {
        pt_conf_error(ctx, n, "%s: '%s' must not be empty", plugin, what);
        return false;
    }
    *out = v;
    *nout = count;
    return true;
}

/* ---- Request keys: which requests share a counter ----
 * `key:` of rate_limit and concurrency_limit: one part or a list of up to
 * PT_PLUGIN_KEY_PARTS combined. Parts: consumer (its name), client_address
 * (after trusted_proxies), route (its name), path (the route's pattern as
 * written), header:NAME (its first value). A missing consumer or header
 * falls back to the client address (docs/traffic.md). */
#define PT_PLUGIN_KEY_PARTS 4

typedef enum {
    PT_PLUGIN_KEY_CONSUMER = 0,
    PT_PLUGIN_KEY_CLIENT,
    PT_PLUGIN_KEY_ROUTE,
    PT_PLUGIN_KEY_PATH,
    PT_PLUGIN_KEY_HEADER,
} pt_plugin_key_kind;

typedef struct {
    struct {
        pt_plugin_key_kind kind;
        const char *header; /* lowercased, PT_PLUGIN_KEY_HEADER */
    } part[PT_PLUGIN_KEY_PARTS];
    size_t n;
    bool uses_consumer;
    const char *spec; /* canonical text ("consumer,header:x-tenant"), for shared-state keys */
} pt_plugin_key;

static inline bool pt_plugin_key_part_read(pt_conf_ctx *ctx, const pt_conf_node *n, const char *plugin,
                                           pt_plugin_key *k)
{
    static const char *const names[] = {"consumer", "client_address", "route", "path"};
    const char *s = n->kind == PT_NODE_SCALAR && n->scalar ? n->scalar : "";
    size_t i = k->n;
    for (size_t j = 0; j < PT_ARRAY_LEN(names); j++)
        if (strcmp(s, names[j]) == 0) {
            k->part[i].kind = (pt_plugin_key_kind)j;
            k->part[i].header = NULL;
            k->n++;
            return true;
        }
    if (strncmp(s, "header:", 7) == 0) {
        if (!pt_plugin_header_name_ok(s + 7, strlen(s + 7))) {
            pt_conf_error(ctx, n, "%s: 'key': \"%s\" is not a valid header name", plugin, s + 7);
            return false;
        }
        char *lower = pt_arena_printf(ctx->arena, "%s", s + 7);
        for (char *p = lower; *p; p++)
            if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
        k->part[i].kind = PT_PLUGIN_KEY_HEADER;
        k->part[i].header = lower;
        k->n++;
        return true;
    }
    pt_conf_error(ctx, n, "%s: 'key' parts are consumer, client_address, route, path or header:NAME", plugin);
    return false;
}

/* Reads `key:` (absent: `dflt`). */
static inline bool pt_plugin_key_read(pt_conf_ctx *ctx, const pt_conf_node *n, const char *plugin,
                                      pt_plugin_key_kind dflt, pt_plugin_key *k)
{
    memset(k, 0, sizeof(*k));
    bool ok = true;
    if (!n) {
        k->part[0].kind = dflt;
        k->n = 1;
    } else if (n->kind != PT_NODE_SEQ) {
        ok = pt_plugin_key_part_read(ctx, n, plugin, k);
    } else if (n->n == 0 || n->n > PT_PLUGIN_KEY_PARTS) {
        pt_conf_error(ctx, n, "%s: 'key' combines 1 to %d parts", plugin, PT_PLUGIN_KEY_PARTS);
        return false;
    } else {
        for (size_t i = 0; i < n->n; i++) ok = pt_plugin_key_part_read(ctx, n->vals[i], plugin, k) && ok;
    }
    if (!ok) return false;
    static const char *const names[] = {"consumer", "client_address", "route", "path", "header:"};
    char spec[PT_PLUGIN_KEY_PARTS * 270] = "";
    size_t used = 0;
    for (size_t i = 0; i < k->n; i++) {
        if (k->part[i].kind == PT_PLUGIN_KEY_CONSUMER) k->uses_consumer = true;
        used += (size_t)snprintf(spec + used, sizeof(spec) - used, "%s%s%s", i ? "," : "", names[k->part[i].kind],
                                 k->part[i].header ? k->part[i].header : "");
    }
    k->spec = pt_arena_printf(ctx->arena, "%s", spec);
    return true;
}

/* The key bytes of this request: each part as kind, 4-byte length, value
 * (so parts cannot run into each other); in buf when they fit, else in the
 * request arena. */
static inline pt_str pt_plugin_key_build(pt_txn *txn, const pt_plugin_key *k, char *buf, size_t cap)
{
    pt_str parts[PT_PLUGIN_KEY_PARTS];
    char kinds[PT_PLUGIN_KEY_PARTS];
    size_t total = 0;
    const pt_route_conf *route = pt_txn_route(txn);
    for (size_t i = 0; i < k->n; i++) {
        pt_str v = PT_STR_NULL;
        pt_plugin_key_kind kind = k->part[i].kind;
        if (kind == PT_PLUGIN_KEY_CONSUMER) {
            const pt_consumer *who = pt_txn_consumer(txn);
            if (who) v = pt_str_c(who->name);
        } else if (kind == PT_PLUGIN_KEY_HEADER) {
            pt_request *req = pt_txn_request(txn);
            const pt_str *hv = req ? pt_headers_get(&req->headers, k->part[i].header) : NULL;
            if (hv) v = *hv;
        } else if (kind == PT_PLUGIN_KEY_ROUTE) {
            v = pt_str_c(route ? route->name : "");
        } else if (kind == PT_PLUGIN_KEY_PATH) {
            v = pt_str_c(route && route->path ? route->path : "");
        }
        if (!v.p && kind != PT_PLUGIN_KEY_ROUTE && kind != PT_PLUGIN_KEY_PATH) {
            v = pt_txn_client_addr(txn); /* no consumer / no header: the client stands in */
            kind = PT_PLUGIN_KEY_CLIENT;
        }
        parts[i] = v;
        kinds[i] = (char)('a' + kind);
        total += 5 + v.n;
    }
    char *out = total > cap ? pt_arena_alloc(pt_txn_arena(txn), total) : buf;
    size_t used = 0;
    for (size_t i = 0; i < k->n; i++) {
        uint32_t len = (uint32_t)parts[i].n;
        out[used] = kinds[i];
        memcpy(out + used + 1, &len, 4);
        if (len) memcpy(out + used + 5, parts[i].p, len);
        used += 5 + len;
    }
    return pt_str_make(out, used);
}

/* Takes the next parameter of a query string (the pieces between '&') off
 * the front of *rest; false once *rest is empty. *param is the whole piece
 * (may be empty: "a&&b"), *name what comes before its first '=' (all of it
 * without one), *value what follows that '=' (empty without one); *has_eq
 * says whether there was one. Nothing is decoded. */
static inline bool pt_plugin_query_next(pt_str *rest, pt_str *param, pt_str *name, pt_str *value, bool *has_eq)
{
    if (!rest->n) return false;
    const char *amp = memchr(rest->p, '&', rest->n);
    *param = pt_str_make(rest->p, amp ? (size_t)(amp - rest->p) : rest->n);
    *rest = amp ? pt_str_make(amp + 1, rest->n - param->n - 1) : PT_STR_NULL;
    const char *eq = param->n ? memchr(param->p, '=', param->n) : NULL;
    *has_eq = eq != NULL;
    *name = eq ? pt_str_make(param->p, (size_t)(eq - param->p)) : *param;
    *value = eq ? pt_str_make(eq + 1, param->n - name->n - 1) : PT_STR_NULL;
    return true;
}

/* Replaces the request's query (without '?'; empty: none) and its target
 * to match (path + "?" + query), in `a`: what the upstream gets and what
 * the access log shows. For plugins that take a credential out of the
 * query. */
static inline void pt_plugin_set_query(pt_request *req, pt_arena *a, pt_str query)
{
    req->query = query;
    req->has_query = query.n > 0;
    char *t = pt_arena_alloc(a, req->path.n + 1 + query.n + 1);
    memcpy(t, req->path.p, req->path.n);
    size_t tn = req->path.n;
    if (query.n) {
        t[tn++] = '?';
        memcpy(t + tn, query.p, query.n);
        tn += query.n;
    }
    t[tn] = '\0';
    req->target = pt_str_make(t, tn);
}

/* ---- Regular expressions (PCRE2) compiled at configure time ----
 * Patterns live in the configuration arena (nothing to free in destroy);
 * match data comes from the request arena. Every pattern is anchored at
 * both ends: it must match the whole subject. A match limit bounds the
 * backtracking a hostile subject can cause. */
#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#define PT_PLUGIN_REGEX_MATCH_LIMIT 100000

static inline void *pt_plugin_pcre_alloc(size_t n, void *arena) { return pt_arena_alloc(arena, n); }
static inline void pt_plugin_pcre_free(void *p, void *arena) { PT_UNUSED(p); PT_UNUSED(arena); }

/* Compiles `pattern` (anchored, plus `options`) into ctx->arena; NULL after
 * an error at `n` naming `plugin` and the position of the problem. */
static inline pcre2_code *pt_plugin_regex_compile(pt_conf_ctx *ctx, const pt_conf_node *n, const char *plugin,
                                                  const char *pattern, uint32_t options)
{
    pcre2_general_context *g = pcre2_general_context_create(pt_plugin_pcre_alloc, pt_plugin_pcre_free, ctx->arena);
    pcre2_compile_context *cc = pcre2_compile_context_create(g);
    int err = 0;
    PCRE2_SIZE off = 0;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_ANCHORED | PCRE2_ENDANCHORED | options, &err, &off, cc);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(err, msg, sizeof(msg));
        pt_conf_error(ctx, n, "%s: invalid regex \"%s\" at offset %zu: %s", plugin, pattern, (size_t)off,
                      (const char *)msg);
    }
    return re;
}

/* Matches `re` against the whole of `s`; the match data (captures) in
 * arena `a`, or NULL when it does not match (or hits the match limit). */
static inline pcre2_match_data *pt_plugin_regex_match(pt_arena *a, const pcre2_code *re, pt_str s)
{
    pcre2_general_context *g = pcre2_general_context_create(pt_plugin_pcre_alloc, pt_plugin_pcre_free, a);
    pcre2_match_context *mc = pcre2_match_context_create(g);
    pcre2_set_match_limit(mc, PT_PLUGIN_REGEX_MATCH_LIMIT);
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, g);
    PT_ASSERT(g && mc && md);
    int rc = pcre2_match(re, (PCRE2_SPTR)(s.p ? s.p : ""), s.n, 0, 0, md, mc);
    return rc > 0 ? md : NULL;
}

/* ---- Whole-body plugins (json_transform, xml_json) ----
 * A body over `max` answered: 413 for a request, 502 for a response, the
 * message naming `plugin`.max_body. */
static inline void pt_plugin_body_too_large(pt_txn *txn, pt_side side, const char *plugin, size_t max)
{
    char d[160];
    snprintf(d, sizeof(d), "the %s body exceeds %s.max_body (%llu bytes)",
             side == PT_SIDE_REQUEST ? "request" : "upstream response", plugin, (unsigned long long)max);
    pt_txn_respond_problem(txn, side == PT_SIDE_REQUEST ? 413 : 502, d);
}

/* Collects a body in the plugin's slot until its last call, then undoes
 * its content `coding` ("" for none, see pt_plugin_body_coding):
 *   PT_PLUGIN_BUFFER    more is coming;
 *   PT_PLUGIN_RESPOND   answered: over `max` (pt_plugin_body_too_large), or
 *                       bytes that do not decode in `coding` (400 / 502);
 *   PT_PLUGIN_CONTINUE  *in / *len are the whole body, decoded (len 0:
 *                       empty); *owned is the decoded copy to free, or NULL. */
static inline pt_plugin_result pt_plugin_whole_body(pt_txn *txn, pt_side side, pt_body *body, const char *plugin,
                                                    size_t max, const char *coding, const char **in, size_t *len,
                                                    char **owned)
{
    *owned = NULL;
    if (pt_body_len(body) > max) {
        pt_plugin_body_too_large(txn, side, plugin, max);
        return PT_PLUGIN_RESPOND;
    }
    if (!pt_body_last(body)) return PT_PLUGIN_BUFFER;
    *in = pt_body_data(body);
    *len = pt_body_len(body);
    if (!coding[0] || !*len) return PT_PLUGIN_CONTINUE;
    pt_decode_result d = pt_content_decode(pt_str_c(coding), *in, *len, max, owned, len);
    if (d == PT_DECODE_OK) {
        *in = *owned;
        return PT_PLUGIN_CONTINUE;
    }
    if (d == PT_DECODE_TOO_LARGE) {
        pt_plugin_body_too_large(txn, side, plugin, max);
    } else {
        char m[160];
        snprintf(m, sizeof(m), "the %s body is not valid for its Content-Encoding (%s)",
                 side == PT_SIDE_REQUEST ? "request" : "upstream response", coding);
        pt_txn_respond_problem(txn, side == PT_SIDE_REQUEST ? 400 : 502, m);
    }
    return PT_PLUGIN_RESPOND;
}

/* The one content coding of a body (its Content-Encoding fields) that a
 * whole-body plugin can undo with pt_content_decode, copied into
 * out[0, cap) ("" for none / identity). False when it cannot be undone:
 * several codings stacked, or one pt_content_decode does not know. */
static inline bool pt_plugin_body_coding(const pt_headers *h, char *out, size_t cap)
{
    out[0] = '\0';
    int n = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (!pt_str_ieq_lit(h->v[i].name, "content-encoding")) continue;
        pt_str rest = h->v[i].value, tok;
        while (pt_list_next(&rest, &tok)) {
            if (pt_str_ieq_lit(tok, "identity")) continue;
            if (!pt_content_coding_known(tok) || tok.n >= cap || ++n > 1) return false;
            memcpy(out, tok.p, tok.n);
            out[tok.n] = '\0';
        }
    }
    return true;
}

#endif
