/* plugin_util.h — small helpers shared by the built-in plugins (private to
 * src/plugins): header name/value validation for config time, reading a
 * {Name: value} mapping, and a fast per-thread PRNG for the request path. */
#ifndef PT_PLUGINS_PLUGIN_UTIL_H
#define PT_PLUGINS_PLUGIN_UTIL_H

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

/* ---- Per-thread PRNG (xoshiro256**), seeded once per thread ----
 * Not cryptographic: request ids and sampling only. No syscall after the
 * first call on a thread. Each translation unit including this header has
 * its own per-thread state, which is harmless. */

static inline uint64_t pt_plugin_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t pt_plugin_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t pt_plugin_rand64(void)
{
    static _Thread_local uint64_t s[4];
    static _Thread_local bool seeded;
    if (__builtin_expect(!seeded, 0)) {
        uint64_t seed[4] = {0};
        if (getrandom(seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed)) {
            /* No entropy pool yet (very early boot): mix clocks and addresses. */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t x = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
            x ^= (uint64_t)(uintptr_t)&seeded;
            for (int i = 0; i < 4; i++) seed[i] ^= pt_plugin_splitmix64(&x);
        }
        uint64_t mix = seed[0] ^ seed[1] ^ seed[2] ^ seed[3];
        for (int i = 0; i < 4; i++) s[i] = seed[i] ^ pt_plugin_splitmix64(&mix); /* never all zero */
        seeded = true;
    }
    uint64_t result = pt_plugin_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = pt_plugin_rotl(s[3], 45);
    return result;
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

#endif
