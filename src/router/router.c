/* router.c — see router.h for the matching rules and docs/routing.md for the
 * design.
 *
 * Layout: every route becomes a route_entry (compiled pattern info). Routes
 * are distributed into host groups (one per exact host, one per wildcard
 * suffix, one for "any host"); hosts are found through two hash maps. Each
 * host group owns a segment trie (nodes live in one shared array, addressed by
 * index) whose literal children are found through a per-node hash map, plus
 * one "{param}" child; nodes carry the EXACT and PREFIX routes whose pattern
 * ends there, in config order. REGEX routes are a per-group list.
 * All of it is heap memory owned by the router, immutable after build. */
#include "router/router.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "router/normalize.h"

#define NONE UINT32_MAX

/* ---------------------------------------------------------------------------
 * A string-keyed open-addressing hash map (linear probing, load <= 1/2).
 * Keys are not copied: they point into the route configuration. */

typedef struct {
    const char *key; /* NULL => empty slot */
    uint32_t len;
    uint32_t hash;
    uint32_t value;
} hm_entry;

typedef struct {
    hm_entry *v;
    uint32_t cap; /* 0 or a power of two */
    uint32_t count;
} hmap;

static inline uint32_t hash_bytes(const char *p, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 16777619u;
    }
    return h;
}

/* Value stored under key[0..len) (hash precomputed), or NONE. */
static inline uint32_t hm_get(const hmap *m, const char *key, size_t len, uint32_t h)
{
    if (!m->count) return NONE;
    uint32_t mask = m->cap - 1;
    for (uint32_t i = h & mask;; i = (i + 1) & mask) {
        const hm_entry *e = &m->v[i];
        if (!e->key) return NONE;
        if (e->hash == h && e->len == len && memcmp(e->key, key, len) == 0) return e->value;
    }
}

static void hm_place(hm_entry *v, uint32_t cap, hm_entry e)
{
    uint32_t mask = cap - 1;
    uint32_t i = e.hash & mask;
    while (v[i].key) i = (i + 1) & mask;
    v[i] = e;
}

/* Inserts a key known to be absent. The key must outlive the map. */
static void hm_put(hmap *m, const char *key, size_t len, uint32_t h, uint32_t value)
{
    if ((m->count + 1) * 2 > m->cap) {
        uint32_t ncap = m->cap ? m->cap * 2 : 4;
        hm_entry *nv = pt_xcalloc(ncap, sizeof(*nv));
        for (uint32_t i = 0; i < m->cap; i++)
            if (m->v[i].key) hm_place(nv, ncap, m->v[i]);
        free(m->v);
        m->v = nv;
        m->cap = ncap;
    }
    hm_place(m->v, m->cap, (hm_entry){key, (uint32_t)len, h, value});
    m->count++;
}

/* ---------------------------------------------------------------------------
 * Growable uint32 lists (route indices, in config order). */

typedef struct {
    uint32_t *v;
    uint32_t n, cap;
} u32list;

static void u32_push(u32list *l, uint32_t x)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 2;
        l->v = pt_xrealloc(l->v, l->cap * sizeof(*l->v));
    }
    l->v[l->n++] = x;
}

/* ---------------------------------------------------------------------------
 * Router data. */

typedef struct {
    const pt_route_conf *conf;
    pt_str names[PT_MAX_ROUTE_PARAMS]; /* tree: params in segment order; regex: named groups */
    uint16_t groups[PT_MAX_ROUTE_PARAMS]; /* regex: capture group number of names[i] */
    uint8_t nnames;
    uint32_t effective_methods; /* conf->methods plus HEAD when GET is allowed; 0 = any */
    pcre2_code *re;             /* REGEX routes only */
    char *pattern;              /* EXACT/PREFIX: the normalized pattern (heap; trie keys and
                                   parameter names point into it) */
} route_entry;

typedef struct {
    hmap children;         /* literal segment -> node index */
    uint32_t param_child;  /* node index or NONE */
    uint32_t parent;       /* NONE for a root */
    u32list exact;         /* route_entry indices whose EXACT pattern ends here */
    u32list prefix;        /* ... whose PREFIX pattern ends here */
    bool exact_below;      /* this node or a descendant has EXACT routes */
    bool prefix_below;     /* ... PREFIX routes */
} trie_node;

typedef struct {
    uint32_t root;  /* trie root node index */
    u32list regex;  /* REGEX route_entry indices, config order */
} host_group;

struct pt_router {
    route_entry *routes;
    size_t nroutes;
    trie_node *nodes;
    uint32_t nnodes, nodes_cap;
    host_group *groups;
    uint32_t ngroups, groups_cap;
    hmap exact_hosts;    /* "api.example.com" -> group */
    hmap wildcard_hosts; /* ".example.com" (from "*.example.com") -> group */
    uint32_t any_group;  /* routes without hosts */
    uint32_t max_ovector; /* largest capture count + 1 over REGEX routes */
};

static uint32_t node_new(pt_router *r, uint32_t parent)
{
    if (r->nnodes == r->nodes_cap) {
        r->nodes_cap = r->nodes_cap ? r->nodes_cap * 2 : 64;
        r->nodes = pt_xrealloc(r->nodes, r->nodes_cap * sizeof(*r->nodes));
    }
    trie_node *nd = &r->nodes[r->nnodes];
    memset(nd, 0, sizeof(*nd));
    nd->param_child = NONE;
    nd->parent = parent;
    return r->nnodes++;
}

static uint32_t group_new(pt_router *r)
{
    if (r->ngroups == r->groups_cap) {
        r->groups_cap = r->groups_cap ? r->groups_cap * 2 : 8;
        r->groups = pt_xrealloc(r->groups, r->groups_cap * sizeof(*r->groups));
    }
    uint32_t g = r->ngroups++;
    r->groups[g].regex = (u32list){0};
    r->groups[g].root = node_new(r, NONE);
    return g;
}

void pt_router_free(pt_router *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->nroutes; i++) {
        pcre2_code_free(r->routes[i].re);
        free(r->routes[i].pattern);
    }
    for (uint32_t i = 0; i < r->nnodes; i++) {
        free(r->nodes[i].children.v);
        free(r->nodes[i].exact.v);
        free(r->nodes[i].prefix.v);
    }
    for (uint32_t i = 0; i < r->ngroups; i++) free(r->groups[i].regex.v);
    free(r->exact_hosts.v);
    free(r->wildcard_hosts.v);
    free(r->routes);
    free(r->nodes);
    free(r->groups);
    free(r);
}

/* ---------------------------------------------------------------------------
 * Build: pattern parsing and validation. */

typedef struct {
    pt_conf_ctx *ctx;
    const pt_route_conf *rc;
    bool failed;
} build_err;

static void route_error(build_err *be, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void route_error(build_err *be, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    be->failed = true;
    if (!be->ctx) return;
    /* A position-only node gives the usual "FILE:LINE:COL: " prefix. */
    pt_conf_node at = {.kind = PT_NODE_NULL, .line = be->rc->line, .col = 1};
    pt_conf_error(be->ctx, be->rc->line > 0 ? &at : NULL, "route '%s': %s", be->rc->name ? be->rc->name : "?",
                  msg);
}

static bool is_name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* One segment of an EXACT/PREFIX pattern. */
typedef struct {
    pt_str text; /* literal text, or the parameter name */
    bool param;
} pat_seg;

/* Splits `pattern` into segments (after the leading '/'), validating "{name}"
 * segments and recording their names in e->names. For PREFIX patterns a
 * trailing '/' is ignored ("/" has no segments); for EXACT, "/" is one empty
 * segment and "/a/" ends with an empty one. Returns the segment count or -1
 * (error reported). `segs` must hold strlen(pattern)+1 entries. */
static int parse_pattern(build_err *be, route_entry *e, const char *pattern, bool prefix, pat_seg *segs)
{
    size_t len = strlen(pattern);
    if (len == 0 || pattern[0] != '/') {
        route_error(be, "path '%s' must start with '/'", pattern);
        return -1;
    }
    if (prefix && len > 1 && pattern[len - 1] == '/') len--;
    if (prefix && len == 1) return 0;
    int nseg = 0;
    size_t pos = 1;
    for (;;) {
        const char *s = pattern + pos;
        const char *slash = memchr(s, '/', len - pos);
        size_t end = slash ? (size_t)(slash - pattern) : len;
        pt_str seg = {s, end - pos};
        bool last = end == len;
        if (seg.n == 0 && !last) {
            route_error(be, "path '%s' has an empty segment", pattern);
            return -1;
        }
        bool has_brace = memchr(seg.p, '{', seg.n) || memchr(seg.p, '}', seg.n);
        if (has_brace) {
            if (seg.n < 2 || seg.p[0] != '{' || seg.p[seg.n - 1] != '}') {
                route_error(be, "path '%s': a parameter must be a whole segment '{name}'", pattern);
                return -1;
            }
            pt_str name = {seg.p + 1, seg.n - 2};
            if (name.n == 0) {
                route_error(be, "path '%s': empty parameter name '{}'", pattern);
                return -1;
            }
            for (size_t k = 0; k < name.n; k++) {
                if (!is_name_char((unsigned char)name.p[k])) {
                    route_error(be, "path '%s': invalid parameter name '%.*s' (letters, digits, '_')",
                                pattern, (int)name.n, name.p);
                    return -1;
                }
            }
            for (unsigned k = 0; k < e->nnames; k++) {
                if (pt_str_eq(e->names[k], name)) {
                    route_error(be, "path '%s': duplicate parameter name '%.*s'", pattern, (int)name.n,
                                name.p);
                    return -1;
                }
            }
            if (e->nnames == PT_MAX_ROUTE_PARAMS) {
                route_error(be, "path '%s': more than %d parameters", pattern, PT_MAX_ROUTE_PARAMS);
                return -1;
            }
            e->names[e->nnames++] = name;
            segs[nseg++] = (pat_seg){name, true};
        } else {
            segs[nseg++] = (pat_seg){seg, false};
        }
        if (last) break;
        pos = end + 1;
    }
    return nseg;
}

/* Compiles a REGEX route (anchored at both ends, JIT when available) and
 * records its named groups as parameter names. */
static bool compile_regex(build_err *be, pt_router *r, route_entry *e)
{
    int errcode;
    PCRE2_SIZE erroff;
    const char *pat = e->conf->path ? e->conf->path : "";
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_ANCHORED | PCRE2_ENDANCHORED,
                                   &errcode, &erroff, NULL);
    if (!re) {
        PCRE2_UCHAR buf[256];
        pcre2_get_error_message(errcode, buf, sizeof(buf));
        route_error(be, "bad regex '%s' at offset %zu: %s", pat, (size_t)erroff, (const char *)buf);
        return false;
    }
    e->re = re;
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional speed-up */
    uint32_t ncap = 0, nnames = 0, entry_size = 0;
    PCRE2_SPTR table = NULL;
    pcre2_pattern_info(re, PCRE2_INFO_CAPTURECOUNT, &ncap);
    pcre2_pattern_info(re, PCRE2_INFO_NAMECOUNT, &nnames);
    pcre2_pattern_info(re, PCRE2_INFO_NAMEENTRYSIZE, &entry_size);
    pcre2_pattern_info(re, PCRE2_INFO_NAMETABLE, &table);
    if (nnames > PT_MAX_ROUTE_PARAMS) {
        route_error(be, "regex '%s' has more than %d named groups", pat, PT_MAX_ROUTE_PARAMS);
        return false;
    }
    for (uint32_t i = 0; i < nnames; i++) {
        PCRE2_SPTR ent = table + (size_t)i * entry_size;
        e->groups[i] = (uint16_t)(ent[0] << 8 | ent[1]);
        e->names[i] = pt_str_c((const char *)ent + 2); /* lives inside the compiled code */
    }
    e->nnames = (uint8_t)nnames;
    if (ncap + 1 > r->max_ovector) r->max_ovector = ncap + 1;
    return true;
}

const char *pt_route_check_rewrite(const char *tmpl, const pt_str *names, size_t nnames, pt_str *bad_name)
{
    if (!tmpl || tmpl[0] != '/') return "rewrite must start with '/'";
    for (const char *p = tmpl; *p; p++) {
        if (*p == '}') return "unbalanced '}' in rewrite";
        if (*p != '{') continue;
        const char *close = strchr(p + 1, '}');
        if (!close) return "unclosed '{' in rewrite";
        pt_str name = {p + 1, (size_t)(close - p - 1)};
        if (name.n == 0) return "empty parameter name '{}' in rewrite";
        if (memchr(name.p, '{', name.n)) return "nested '{' in rewrite";
        bool known = false;
        for (size_t i = 0; i < nnames && !known; i++) known = pt_str_eq(names[i], name);
        if (!known) {
            if (bad_name) *bad_name = name;
            return "rewrite uses an unknown parameter";
        }
        p = close;
    }
    return NULL;
}

/* Inserts route `ei` (already parsed into segs) into the trie of group g. */
static void trie_insert(pt_router *r, uint32_t g, const pat_seg *segs, int nseg, bool prefix, uint32_t ei)
{
    uint32_t cur = r->groups[g].root;
    for (int i = 0; i < nseg; i++) {
        uint32_t next;
        if (segs[i].param) {
            next = r->nodes[cur].param_child;
            if (next == NONE) {
                next = node_new(r, cur);
                r->nodes[cur].param_child = next;
            }
        } else {
            uint32_t h = hash_bytes(segs[i].text.p, segs[i].text.n);
            next = hm_get(&r->nodes[cur].children, segs[i].text.p, segs[i].text.n, h);
            if (next == NONE) {
                next = node_new(r, cur); /* may move r->nodes: index again below */
                hm_put(&r->nodes[cur].children, segs[i].text.p, segs[i].text.n, h, next);
            }
        }
        cur = next;
    }
    u32_push(prefix ? &r->nodes[cur].prefix : &r->nodes[cur].exact, ei);
}

/* The host group for one configured host pattern, created on first use. */
static uint32_t group_for_host(pt_router *r, const char *host)
{
    if (!host || !host[0] || strcmp(host, "*") == 0) return r->any_group;
    bool wild = host[0] == '*' && host[1] == '.';
    const char *key = wild ? host + 1 : host; /* wildcard key keeps the dot: ".example.com" */
    hmap *m = wild ? &r->wildcard_hosts : &r->exact_hosts;
    size_t len = strlen(key);
    uint32_t h = hash_bytes(key, len);
    uint32_t g = hm_get(m, key, len, h);
    if (g == NONE) {
        g = group_new(r);
        hm_put(m, key, len, h, g);
    }
    return g;
}

static int cmp_route_index(const void *a, const void *b)
{
    const pt_route_conf *x = *(const pt_route_conf *const *)a, *y = *(const pt_route_conf *const *)b;
    if (x->index != y->index) return x->index < y->index ? -1 : 1;
    return x < y ? -1 : (x > y ? 1 : 0); /* stable for equal indices */
}

/* Marks nodes that have EXACT / PREFIX routes in their subtree, so searches
 * skip branches that cannot produce a candidate. Children always have larger
 * indices than their parent, so one reverse sweep suffices. */
static void compute_subtree_flags(pt_router *r)
{
    for (uint32_t i = r->nnodes; i-- > 0;) {
        trie_node *nd = &r->nodes[i];
        if (nd->exact.n) nd->exact_below = true;
        if (nd->prefix.n) nd->prefix_below = true;
        if (nd->parent != NONE) {
            r->nodes[nd->parent].exact_below |= nd->exact_below;
            r->nodes[nd->parent].prefix_below |= nd->prefix_below;
        }
    }
}

pt_router *pt_router_build(const pt_route_conf *routes, size_t n, pt_conf_ctx *ctx)
{
    pt_router *r = pt_xcalloc(1, sizeof(*r));
    r->routes = pt_xcalloc(n ? n : 1, sizeof(*r->routes));
    r->nroutes = n;
    r->any_group = group_new(r);

    const pt_route_conf **order = pt_xmalloc((n ? n : 1) * sizeof(*order));
    for (size_t i = 0; i < n; i++) order[i] = &routes[i];
    qsort(order, n, sizeof(*order), cmp_route_index);

    bool failed = false;
    pat_seg *segs = NULL;
    size_t segs_cap = 0;
    for (size_t i = 0; i < n; i++) {
        const pt_route_conf *rc = order[i];
        route_entry *e = &r->routes[i];
        build_err be = {ctx, rc, false};
        e->conf = rc;
        e->effective_methods = rc->methods;
        if (rc->methods & PT_METHOD_BIT(PT_METHOD_GET)) e->effective_methods |= PT_METHOD_BIT(PT_METHOD_HEAD);

        bool is_regex = rc->path_kind == PT_PATH_REGEX;
        bool is_prefix = rc->path_kind == PT_PATH_PREFIX || rc->path_kind == PT_PATH_ANY;
        const char *pattern = rc->path_kind == PT_PATH_ANY || !rc->path ? "/" : rc->path;
        int nseg = 0;
        if (is_regex) {
            compile_regex(&be, r, e);
        } else {
            /* Patterns are stored as written; request paths arrive normalized,
             * so normalize the pattern the same way ("/a//b" => "/a/b"). */
            size_t plen = strlen(pattern);
            const char *why = NULL;
            e->pattern = pt_xmalloc(plen + 1);
            ssize_t nl = pt_path_normalize(pattern, plen, e->pattern, &why);
            if (nl < 0) {
                route_error(&be, "path '%s': %s", pattern, why);
            } else {
                if ((size_t)nl + 1 > segs_cap) {
                    segs_cap = (size_t)nl + 1;
                    segs = pt_xrealloc(segs, segs_cap * sizeof(*segs));
                }
                nseg = parse_pattern(&be, e, e->pattern, is_prefix, segs);
            }
        }
        if (!be.failed && rc->rewrite) {
            pt_str bad = PT_STR_NULL;
            const char *why = pt_route_check_rewrite(rc->rewrite, e->names, e->nnames, &bad);
            if (why && bad.p)
                route_error(&be, "%s '%.*s' in '%s'", why, (int)bad.n, bad.p, rc->rewrite);
            else if (why)
                route_error(&be, "%s ('%s')", why, rc->rewrite);
        }
        if (be.failed) {
            failed = true;
            continue;
        }
        size_t nh = rc->nhosts ? rc->nhosts : 1;
        for (size_t h = 0; h < nh; h++) {
            uint32_t g = group_for_host(r, rc->nhosts ? rc->hosts[h] : NULL);
            if (is_regex)
                u32_push(&r->groups[g].regex, (uint32_t)i);
            else
                trie_insert(r, g, segs, nseg, is_prefix, (uint32_t)i);
        }
    }
    free(segs);
    free(order);
    if (failed) {
        pt_router_free(r);
        return NULL;
    }
    compute_subtree_flags(r);
    return r;
}

/* ---------------------------------------------------------------------------
 * Match: predicates. */

static bool method_ok(const route_entry *e, pt_method m)
{
    return e->effective_methods == 0 || (e->effective_methods & PT_METHOD_BIT(m));
}

static bool headers_ok(const pt_route_conf *rc, const pt_headers *hs)
{
    for (size_t i = 0; i < rc->nheaders; i++) {
        const pt_kv_match *kv = &rc->headers[i];
        pt_str name = pt_str_c(kv->name);
        bool found = false;
        for (uint32_t k = 0; hs && k < hs->n && !found; k++) {
            if (!pt_str_ieq(hs->v[k].name, name)) continue;
            found = !kv->value || pt_str_eq(hs->v[k].value, pt_str_c(kv->value));
        }
        if (!found) return false;
    }
    return true;
}

static inline int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* True if the form-decoded raw[0..n) ('+' = space, %XX decoded; a malformed
 * '%' stands for itself) equals the C string `want`. No allocation. */
static bool decoded_eq(const char *raw, size_t n, const char *want)
{
    size_t i = 0, j = 0;
    while (i < n) {
        unsigned char c = (unsigned char)raw[i];
        if (c == '+') {
            c = ' ';
            i++;
        } else if (c == '%' && i + 2 < n && hexval((unsigned char)raw[i + 1]) >= 0 &&
                   hexval((unsigned char)raw[i + 2]) >= 0) {
            c = (unsigned char)(hexval((unsigned char)raw[i + 1]) << 4 | hexval((unsigned char)raw[i + 2]));
            i += 3;
        } else {
            i++;
        }
        if (want[j] == '\0' || (unsigned char)want[j] != c) return false;
        j++;
    }
    return want[j] == '\0';
}

static bool query_ok(const pt_route_conf *rc, pt_str q)
{
    for (size_t i = 0; i < rc->nquery; i++) {
        const pt_kv_match *kv = &rc->query[i];
        bool found = false;
        size_t pos = 0;
        while (pos < q.n && !found) {
            const char *amp = memchr(q.p + pos, '&', q.n - pos);
            size_t end = amp ? (size_t)(amp - q.p) : q.n;
            const char *eq = memchr(q.p + pos, '=', end - pos);
            size_t name_end = eq ? (size_t)(eq - q.p) : end;
            if (name_end > pos && decoded_eq(q.p + pos, name_end - pos, kv->name)) {
                if (!kv->value)
                    found = true;
                else if (eq)
                    found = decoded_eq(eq + 1, end - name_end - 1, kv->value);
                else
                    found = kv->value[0] == '\0';
            }
            pos = end + 1;
        }
        if (!found) return false;
    }
    return true;
}

/* ---------------------------------------------------------------------------
 * Match: the search. */

enum { UNDECIDED = 0, DECIDED = 1 };

typedef struct {
    const pt_router *r;
    const pt_route_input *in;
    pt_route_match *out;
    pt_str caps[PT_MAX_ROUTE_PARAMS]; /* values of "{param}" segments on the current trie path */
    int ncaps;
} match_ctx;

/* Tries the routes of one pattern in config order (see router.h rule 3).
 * On a winner fills out (params from the capture stack) and returns DECIDED;
 * if none won but some failed only on the method, sets 405 and returns
 * DECIDED; else UNDECIDED. */
static int try_routes(match_ctx *c, const u32list *l, size_t prefix_len)
{
    uint32_t allowed = 0;
    bool method_only = false;
    for (uint32_t i = 0; i < l->n; i++) {
        const route_entry *e = &c->r->routes[l->v[i]];
        const pt_route_conf *rc = e->conf;
        bool mok = method_ok(e, c->in->method);
        if (!mok && method_only && (allowed & e->effective_methods) == e->effective_methods)
            continue; /* cannot change the 405 answer */
        if (!headers_ok(rc, c->in->headers) || !query_ok(rc, c->in->query)) continue;
        if (!mok) {
            method_only = true;
            allowed |= e->effective_methods;
            continue;
        }
        pt_route_match *o = c->out;
        o->route = rc;
        o->status = 0;
        o->allowed_methods = 0;
        o->prefix_len = prefix_len;
        o->nparams = PT_MIN(c->ncaps, (int)e->nnames);
        for (int k = 0; k < o->nparams; k++) o->params[k] = (pt_route_param){e->names[k], c->caps[k]};
        return DECIDED;
    }
    if (!method_only) return UNDECIDED;
    c->out->status = 405;
    c->out->allowed_methods = allowed;
    return DECIDED;
}

/* Bounds of the path segment starting at pos: returns its end (index of the
 * next '/' or path length). */
static inline size_t seg_end(pt_str path, size_t pos)
{
    const char *slash = memchr(path.p + pos, '/', path.n - pos);
    return slash ? (size_t)(slash - path.p) : path.n;
}

/* EXACT search from node ni; `pos` is the start of the next path segment.
 * Literal child first, then the "{param}" child (backtracking). */
static int exact_search(match_ctx *c, uint32_t ni, size_t pos)
{
    const trie_node *nd = &c->r->nodes[ni];
    pt_str path = c->in->path;
    size_t end = seg_end(path, pos);
    bool last = end == path.n;
    if (nd->children.count) {
        uint32_t ch = hm_get(&nd->children, path.p + pos, end - pos, hash_bytes(path.p + pos, end - pos));
        if (ch != NONE && c->r->nodes[ch].exact_below) {
            int d = last ? try_routes(c, &c->r->nodes[ch].exact, 0) : exact_search(c, ch, end + 1);
            if (d) return d;
        }
    }
    uint32_t pc = nd->param_child;
    if (pc != NONE && end > pos && c->r->nodes[pc].exact_below && c->ncaps < PT_MAX_ROUTE_PARAMS) {
        c->caps[c->ncaps++] = pt_str_make(path.p + pos, end - pos);
        int d = last ? try_routes(c, &c->r->nodes[pc].exact, 0) : exact_search(c, pc, end + 1);
        c->ncaps--;
        if (d) return d;
    }
    return UNDECIDED;
}

/* PREFIX search: deeper candidates (literal branch first, then the param
 * branch) before this node's own prefix routes. `pos` is the start of the
 * next path segment or NONE_POS when the path is consumed; `consumed` is the
 * byte length of the path matched so far (the prefix_len of this node). */
#define NONE_POS SIZE_MAX
static int prefix_search(match_ctx *c, uint32_t ni, size_t pos, size_t consumed)
{
    const trie_node *nd = &c->r->nodes[ni];
    pt_str path = c->in->path;
    if (pos != NONE_POS) {
        size_t end = seg_end(path, pos);
        size_t next = end == path.n ? NONE_POS : end + 1;
        if (end > pos && nd->children.count) {
            uint32_t ch = hm_get(&nd->children, path.p + pos, end - pos, hash_bytes(path.p + pos, end - pos));
            if (ch != NONE && c->r->nodes[ch].prefix_below) {
                int d = prefix_search(c, ch, next, end);
                if (d) return d;
            }
        }
        uint32_t pc = nd->param_child;
        if (pc != NONE && end > pos && c->r->nodes[pc].prefix_below && c->ncaps < PT_MAX_ROUTE_PARAMS) {
            c->caps[c->ncaps++] = pt_str_make(path.p + pos, end - pos);
            int d = prefix_search(c, pc, next, end);
            c->ncaps--;
            if (d) return d;
        }
    }
    return nd->prefix.n ? try_routes(c, &nd->prefix, consumed) : UNDECIDED;
}

static void *arena_pcre_alloc(size_t n, void *ud) { return pt_arena_alloc(ud, n); }
static void arena_pcre_free(void *p, void *ud) { PT_UNUSED(p); PT_UNUSED(ud); }

/* REGEX tier of a group: routes in config order, all counted as one pattern
 * for the 405 rule. Match data comes from the arena (or the heap if none). */
static int regex_search(match_ctx *c, const u32list *l, pt_arena *a)
{
    const pt_router *r = c->r;
    pcre2_general_context *gctx = NULL;
    if (a) gctx = pcre2_general_context_create(arena_pcre_alloc, arena_pcre_free, a);
    pcre2_match_data *md = pcre2_match_data_create(r->max_ovector, gctx);
    PT_ASSERT(md != NULL);
    uint32_t allowed = 0;
    bool method_only = false;
    int result = UNDECIDED;
    for (uint32_t i = 0; i < l->n; i++) {
        const route_entry *e = &r->routes[l->v[i]];
        const pt_route_conf *rc = e->conf;
        bool mok = method_ok(e, c->in->method);
        if (!mok && method_only && (allowed & e->effective_methods) == e->effective_methods) continue;
        int rc_match = pcre2_match(e->re, (PCRE2_SPTR)c->in->path.p, c->in->path.n, 0, 0, md, NULL);
        if (rc_match < 0) continue;
        if (!headers_ok(rc, c->in->headers) || !query_ok(rc, c->in->query)) continue;
        if (!mok) {
            method_only = true;
            allowed |= e->effective_methods;
            continue;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        uint32_t npairs = pcre2_get_ovector_count(md);
        pt_route_match *o = c->out;
        o->route = rc;
        o->status = 0;
        o->allowed_methods = 0;
        o->prefix_len = 0;
        o->nparams = 0;
        for (unsigned k = 0; k < e->nnames; k++) {
            uint32_t g = e->groups[k];
            if (g >= npairs || ov[2 * g] == PCRE2_UNSET) continue; /* group did not participate */
            o->params[o->nparams++] =
                (pt_route_param){e->names[k], pt_str_make(c->in->path.p + ov[2 * g], ov[2 * g + 1] - ov[2 * g])};
        }
        result = DECIDED;
        break;
    }
    if (result == UNDECIDED && method_only) {
        c->out->status = 405;
        c->out->allowed_methods = allowed;
        result = DECIDED;
    }
    if (!a) pcre2_match_data_free(md); /* arena memory goes with the arena */
    return result;
}

/* Searches one host group: EXACT, then PREFIX, then REGEX. */
static int group_search(match_ctx *c, uint32_t g, pt_arena *a)
{
    const host_group *hg = &c->r->groups[g];
    const trie_node *root = &c->r->nodes[hg->root];
    c->ncaps = 0;
    if (root->exact_below && exact_search(c, hg->root, 1)) return DECIDED;
    c->ncaps = 0;
    if (root->prefix_below && prefix_search(c, hg->root, c->in->path.n > 1 ? 1 : NONE_POS, 0)) return DECIDED;
    if (hg->regex.n && regex_search(c, &hg->regex, a)) return DECIDED;
    return UNDECIDED;
}

void pt_router_match(const pt_router *r, const pt_route_input *in, pt_arena *a, pt_route_match *out)
{
    out->route = NULL;
    out->status = 404;
    out->allowed_methods = 0;
    out->nparams = 0;
    out->prefix_len = 0;
    if (!r || in->path.n == 0 || in->path.p[0] != '/') return;
    match_ctx c = {.r = r, .in = in, .out = out, .ncaps = 0};

    pt_str host = in->host;
    if (host.n && host.p[host.n - 1] == '.') host.n--; /* "example.com." is "example.com" */
    if (host.n) {
        uint32_t g = hm_get(&r->exact_hosts, host.p, host.n, hash_bytes(host.p, host.n));
        if (g != NONE && group_search(&c, g, a)) return;
        if (r->wildcard_hosts.count) {
            /* Suffixes after each dot, longest first; at least one label before. */
            for (size_t i = 1; i < host.n; i++) {
                if (host.p[i] != '.') continue;
                pt_str suf = {host.p + i, host.n - i};
                g = hm_get(&r->wildcard_hosts, suf.p, suf.n, hash_bytes(suf.p, suf.n));
                if (g != NONE && group_search(&c, g, a)) return;
            }
        }
    }
    group_search(&c, r->any_group, a);
}

/* ---------------------------------------------------------------------------
 * Upstream path. */

static pt_str param_value(const pt_route_match *m, pt_str name)
{
    for (int i = 0; i < m->nparams; i++)
        if (pt_str_eq(m->params[i].name, name)) return m->params[i].value;
    return (pt_str){"", 0};
}

pt_str pt_route_upstream_path(const pt_route_conf *route, const pt_route_match *m, pt_str normalized_path,
                              pt_arena *a)
{
    bool strip = route->strip_prefix &&
                 (route->path_kind == PT_PATH_PREFIX || route->path_kind == PT_PATH_ANY);
    pt_str rest = PT_STR_NULL;
    if (strip) {
        size_t cut = PT_MIN(m->prefix_len, normalized_path.n);
        rest = pt_str_make(normalized_path.p + cut, normalized_path.n - cut);
    }
    if (route->rewrite) {
        /* Two passes over the template: measure, then fill. */
        const char *t = route->rewrite;
        size_t total = 0;
        for (int pass = 0; pass < 2; pass++) {
            char *buf = pass ? pt_arena_alloc(a, total + rest.n + 1) : NULL;
            size_t o = 0;
            for (const char *p = t; *p; p++) {
                const char *close = *p == '{' ? strchr(p + 1, '}') : NULL;
                if (close) {
                    pt_str v = param_value(m, pt_str_make(p + 1, (size_t)(close - p - 1)));
                    if (buf && v.n) memcpy(buf + o, v.p, v.n);
                    o += v.n;
                    p = close;
                } else {
                    if (buf) buf[o] = *p;
                    o++;
                }
            }
            if (!buf) {
                total = o;
                continue;
            }
            if (rest.n) { /* strip_prefix + rewrite: append the rest, one '/' between */
                size_t skip = (o > 0 && buf[o - 1] == '/' && rest.p[0] == '/') ? 1 : 0;
                memcpy(buf + o, rest.p + skip, rest.n - skip);
                o += rest.n - skip;
            }
            buf[o] = '\0';
            return pt_str_make(buf, o);
        }
    }
    if (strip) return rest.n ? rest : PT_STR_LIT("/");
    return normalized_path;
}
