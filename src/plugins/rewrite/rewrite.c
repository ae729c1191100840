/* rewrite.c — per-route rewriting of what is sent upstream: the path by a
 * regex with captures (through pt_txn_set_upstream_path, which keeps the
 * result within what the route's path rules accept) and query parameters
 * removed, renamed, set or added by decoded name, the others untouched. */
#include "plugins/rewrite/rewrite.h"

#include <stdio.h>

static bool unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
           c == '_' || c == '~';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-encodes every byte but the unreserved ones. */
static pt_str encode(pt_arena *a, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = pt_arena_alloc(a, 3 * n + 1);
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c)) {
            out[w++] = (char)c;
        } else {
            out[w++] = '%';
            out[w++] = hex[c >> 4];
            out[w++] = hex[c & 15];
        }
    }
    out[w] = '\0';
    return pt_str_make(out, w);
}

/* Decodes a query name ('+' is a space, like the router's query
 * predicates); a '%' without two hex digits stays as it is. */
static pt_str decode(pt_arena *a, pt_str s)
{
    if (!s.n || (!memchr(s.p, '%', s.n) && !memchr(s.p, '+', s.n))) return s;
    char *out = pt_arena_alloc(a, s.n + 1);
    size_t w = 0;
    for (size_t i = 0; i < s.n; i++) {
        int hi, lo;
        if (s.p[i] == '+') {
            out[w++] = ' ';
        } else if (s.p[i] == '%' && i + 2 < s.n && (hi = hexval(s.p[i + 1])) >= 0 && (lo = hexval(s.p[i + 2])) >= 0) {
            out[w++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[w++] = s.p[i];
        }
    }
    return pt_str_make(out, w);
}

static const pt_rewrite_qop *find(const pt_rewrite_qop *v, size_t n, pt_str name)
{
    for (size_t i = 0; i < n; i++)
        if (pt_str_eq(v[i].name, name)) return &v[i];
    return NULL;
}

pt_str pt_rewrite_query(const pt_rewrite_conf *c, pt_str query, bool had_query, pt_arena *a, bool *present)
{
    if (!query.p) query = pt_str_make("", 0);
    /* pieces of the output: slices of the query or of the config */
    size_t cap = 1 + c->nset + c->nadd;
    for (size_t i = 0; i < query.n; i++) cap += query.p[i] == '&';
    pt_str *out = pt_arena_alloc(a, cap * 2 * sizeof(*out)); /* name-part, rest */
    size_t n = 0;
    bool *set_done = pt_arena_calloc(a, c->nset ? c->nset : 1);
    pt_str rest = query;
    bool any = had_query;
    while (any) {
        const char *amp = memchr(rest.p, '&', rest.n);
        pt_str piece = pt_str_make(rest.p, amp ? (size_t)(amp - rest.p) : rest.n);
        const char *eq = memchr(piece.p, '=', piece.n);
        pt_str raw_name = pt_str_make(piece.p, eq ? (size_t)(eq - piece.p) : piece.n);
        pt_str tail = pt_str_make(piece.p + raw_name.n, piece.n - raw_name.n); /* "=value" or empty */
        pt_str name = decode(a, raw_name);
        const pt_rewrite_qop *op;
        if (find(c->remove, c->nremove, name)) {
            /* dropped */
        } else if ((op = find(c->rename, c->nrename, name))) {
            out[n++] = op->enc_value;
            out[n++] = tail;
        } else if ((op = find(c->set, c->nset, name))) {
            size_t k = (size_t)(op - c->set);
            if (!set_done[k]) { /* the first occurrence takes the value, later ones go */
                set_done[k] = true;
                out[n++] = op->enc_name;
                out[n++] = op->enc_value;
            }
        } else {
            out[n++] = raw_name;
            out[n++] = tail;
        }
        if (!amp) break;
        rest = pt_str_make(amp + 1, rest.n - piece.n - 1);
    }
    for (size_t k = 0; k < c->nset; k++)
        if (!set_done[k]) {
            out[n++] = c->set[k].enc_name;
            out[n++] = c->set[k].enc_value;
        }
    for (size_t k = 0; k < c->nadd; k++) {
        out[n++] = c->add[k].enc_name;
        out[n++] = c->add[k].enc_value;
    }
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += out[i].n + 1;
    char *q = pt_arena_alloc(a, total + 1);
    size_t w = 0;
    for (size_t i = 0; i < n; i += 2) {
        if (i) q[w++] = '&';
        memcpy(q + w, out[i].p, out[i].n);
        w += out[i].n;
        if (out[i + 1].n) memcpy(q + w, out[i + 1].p, out[i + 1].n);
        w += out[i + 1].n;
    }
    q[w] = '\0';
    *present = n > 0;
    return pt_str_make(q, w);
}

/* ---- configuration ---- */

/* A literal part of a replacement: visible ASCII, no '?', '#' or '\', escapes
 * complete, and no %2F / %5C (a literal may not forge a separator). */
static const char *literal_problem(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f) return "only visible ASCII is allowed";
        if (c == '?' || c == '#') return "'?' and '#' are not path characters (use 'query' for the query)";
        if (c == '\\') return "'\\' is not allowed";
        if (c == '{' || c == '}') return "'{' and '}' are only for {name}";
        if (c == '%') {
            if (i + 2 >= n || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0) return "'%' must start an escape %XX";
            int v = hexval(s[i + 1]) * 16 + hexval(s[i + 2]);
            if (v == '/' || v == '\\') return "%2F and %5C would forge a separator";
        }
    }
    return NULL;
}

static bool read_replacement(pt_conf_ctx *ctx, const pt_conf_node *n, pt_rewrite_conf *c)
{
    const char *s = n->scalar;
    size_t len = n->scalar_len;
    uint32_t ncap = 0;
    pcre2_pattern_info(c->regex, PCRE2_INFO_CAPTURECOUNT, &ncap);
    c->pieces = pt_arena_calloc(ctx->arena, (len + 1) * sizeof(*c->pieces));
    if (!len || s[0] != '/') {
        pt_conf_error(ctx, n, "rewrite: 'path.replacement' must start with '/'");
        return false;
    }
    char *lit = pt_arena_alloc(ctx->arena, len + 1);
    size_t lw = 0;
    for (size_t i = 0; i <= len; i++) {
        int group = -1;
        if (i < len && s[i] == '$') {
            if (i + 1 < len && s[i + 1] == '$') { /* "$$": a literal '$' */
                lit[lw++] = s[++i];
                continue;
            }
            if (i + 1 < len && s[i + 1] >= '0' && s[i + 1] <= '9') {
                group = s[i + 1] - '0';
                i += 1;
            } else {
                pt_conf_error(ctx, n, "rewrite: '$' must be followed by a digit (or '$' for a literal '$')");
                return false;
            }
            if ((uint32_t)group > ncap) {
                pt_conf_error(ctx, n, "rewrite: the regex has no group %d (it has %u)", group, ncap);
                return false;
            }
        }
        if (i < len && s[i] == '{') { /* {name}: a named group, as in route rewrite templates */
            const char *end = memchr(s + i + 1, '}', len - i - 1);
            size_t nl = end ? (size_t)(end - (s + i + 1)) : 0;
            char name[64];
            if (!end || nl == 0 || nl >= sizeof(name)) {
                pt_conf_error(ctx, n, "rewrite: unclosed or empty {name} in 'path.replacement'");
                return false;
            }
            memcpy(name, s + i + 1, nl);
            name[nl] = '\0';
            group = pcre2_substring_number_from_name(c->regex, (PCRE2_SPTR)name);
            if (group < 0) {
                pt_conf_error(ctx, n, "rewrite: the regex has no group named '%s'", name);
                return false;
            }
            i += nl + 1;
        }
        if (group >= 0 || i == len) {
            if (lw) {
                const char *why = literal_problem(lit, lw);
                if (why) {
                    pt_conf_error(ctx, n, "rewrite: 'path.replacement': %s", why);
                    return false;
                }
                c->pieces[c->npieces++] = (pt_rewrite_piece){.literal = pt_str_make(lit, lw), .group = -1};
                lit += lw + 1;
                lw = 0;
            }
            if (group >= 0) c->pieces[c->npieces++] = (pt_rewrite_piece){.group = group};
            continue;
        }
        lit[lw++] = s[i];
    }
    return true;
}

static bool read_names(pt_conf_ctx *ctx, const pt_conf_node *n, pt_rewrite_qop **out, size_t *nout)
{
    const char *const *names;
    if (!pt_plugin_string_list(ctx, n, "rewrite", "query.remove", false, &names, nout)) return false;
    *out = pt_arena_calloc(ctx->arena, (*nout ? *nout : 1) * sizeof(**out));
    for (size_t i = 0; i < *nout; i++) (*out)[i].name = pt_str_c(names[i]);
    return true;
}

/* {name: value} for rename (value = the new name), set and add. */
static bool read_pairs(pt_conf_ctx *ctx, const pt_conf_node *n, const char *what, pt_rewrite_qop **out,
                       size_t *nout)
{
    if (n->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, n, "rewrite: 'query.%s' must be a mapping of parameter names to strings", what);
        return false;
    }
    *out = pt_arena_calloc(ctx->arena, (n->n ? n->n : 1) * sizeof(**out));
    for (size_t i = 0; i < n->n; i++) {
        const pt_conf_node *k = n->keys[i], *v = n->vals[i];
        if (!k->scalar_len || v->kind != PT_NODE_SCALAR) {
            pt_conf_error(ctx, v, "rewrite: 'query.%s': names must be non-empty and values strings", what);
            return false;
        }
        bool rename = strcmp(what, "rename") == 0;
        if (rename && !v->scalar_len) {
            pt_conf_error(ctx, v, "rewrite: 'query.rename': the new name must not be empty");
            return false;
        }
        pt_rewrite_qop *op = &(*out)[(*nout)++];
        op->name = pt_str_make(k->scalar, k->scalar_len);
        op->enc_name = encode(ctx->arena, k->scalar, k->scalar_len);
        pt_str ev = encode(ctx->arena, v->scalar, v->scalar_len);
        op->enc_value = rename ? ev : pt_str_c(pt_arena_printf(ctx->arena, "=%.*s", (int)ev.n, ev.p));
    }
    return true;
}

static void *rewrite_configure(pt_conf_ctx *ctx, const pt_conf_node *node)
{
    static const char *const allowed[] = {"path", "query", NULL};
    static const char *const path_keys[] = {"regex", "replacement", NULL};
    static const char *const query_keys[] = {"remove", "rename", "set", "add", NULL};
    if (!node || node->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, node, "rewrite: expected a mapping with 'path' and/or 'query'");
        return NULL;
    }
    if (!pt_conf_check_keys(ctx, node, allowed, "rewrite")) return NULL;
    pt_rewrite_conf *c = pt_arena_calloc(ctx->arena, sizeof(*c));
    const pt_conf_node *pn = pt_conf_get(node, "path"), *qn = pt_conf_get(node, "query");
    if (!pn && !qn) {
        pt_conf_error(ctx, node, "rewrite: expected 'path' and/or 'query'");
        return NULL;
    }
    if (pn) {
        if (!pt_conf_check_keys(ctx, pn, path_keys, "rewrite.path")) return NULL;
        const pt_conf_node *re = pt_conf_get(pn, "regex"), *rp = pt_conf_get(pn, "replacement");
        if (!re || !rp || re->kind != PT_NODE_SCALAR || rp->kind != PT_NODE_SCALAR || !re->scalar_len) {
            pt_conf_error(ctx, pn, "rewrite: 'path' needs 'regex' and 'replacement' (strings)");
            return NULL;
        }
        c->regex = pt_plugin_regex_compile(ctx, re, "rewrite: path.regex", re->scalar, 0);
        if (!c->regex || !read_replacement(ctx, rp, c)) return NULL;
    }
    if (qn) {
        if (!pt_conf_check_keys(ctx, qn, query_keys, "rewrite.query")) return NULL;
        const pt_conf_node *x;
        if ((x = pt_conf_get(qn, "remove")) && !read_names(ctx, x, &c->remove, &c->nremove)) return NULL;
        if ((x = pt_conf_get(qn, "rename")) && !read_pairs(ctx, x, "rename", &c->rename, &c->nrename)) return NULL;
        if ((x = pt_conf_get(qn, "set")) && !read_pairs(ctx, x, "set", &c->set, &c->nset)) return NULL;
        if ((x = pt_conf_get(qn, "add")) && !read_pairs(ctx, x, "add", &c->add, &c->nadd)) return NULL;
        /* one operation per name: the order would otherwise be a riddle */
        const pt_rewrite_qop *all[] = {c->remove, c->rename, c->set};
        size_t counts[] = {c->nremove, c->nrename, c->nset};
        for (size_t g = 0; g < 3; g++)
            for (size_t i = 0; i < counts[g]; i++)
                for (size_t h = g; h < 3; h++)
                    for (size_t j = h == g ? i + 1 : 0; j < counts[h]; j++)
                        if (pt_str_eq(all[g][i].name, all[h][j].name)) {
                            pt_conf_error(ctx, qn, "rewrite: query parameter '%s' is named by more than one "
                                                   "of remove/rename/set", all[g][i].name.p);
                            return NULL;
                        }
    }
    return c;
}

/* ---- request path ---- */

static pt_plugin_result rewrite_on_request_headers(pt_txn *txn, const void *conf, void *state)
{
    const pt_rewrite_conf *c = conf;
    pt_request *req = pt_txn_request(txn);
    pt_arena *a = pt_txn_arena(txn);
    if (c->nremove || c->nrename || c->nset || c->nadd) {
        bool present;
        pt_str q = pt_rewrite_query(c, req->query, req->has_query, a, &present);
        req->query = q;
        req->has_query = present;
    }
    if (!c->regex || !pt_txn_route(txn)) return PT_PLUGIN_CONTINUE; /* unrouted: the 404/405 comes next */
    pcre2_match_data *md = pt_plugin_regex_match(a, c->regex, pt_txn_path(txn));
    if (!md) return PT_PLUGIN_CONTINUE; /* no match: the route's own path */
    pt_str path = pt_txn_path(txn);
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    uint32_t npairs = pcre2_get_ovector_count(md);
    size_t total = 0;
    for (size_t i = 0; i < c->npieces; i++) {
        int g = c->pieces[i].group;
        if (g < 0) total += c->pieces[i].literal.n;
        else if ((uint32_t)g < npairs && ov[2 * g] != PCRE2_UNSET) total += ov[2 * g + 1] - ov[2 * g];
    }
    char *out = pt_arena_alloc(a, total + 1);
    size_t w = 0;
    for (size_t i = 0; i < c->npieces; i++) {
        int g = c->pieces[i].group;
        pt_str s = c->pieces[i].literal;
        if (g >= 0) {
            bool set = (uint32_t)g < npairs && ov[2 * g] != PCRE2_UNSET;
            s = set ? pt_str_make(path.p + ov[2 * g], ov[2 * g + 1] - ov[2 * g]) : PT_STR_NULL;
        }
        if (s.n) memcpy(out + w, s.p, s.n);
        w += s.n;
    }
    out[w] = '\0';
    const char *why = NULL;
    if (!pt_txn_set_upstream_path(txn, pt_str_make(out, w), &why)) {
        char *detail = pt_arena_printf(a, "the path cannot be rewritten: %s", why ? why : "invalid");
        pt_txn_respond_problem(txn, 400, detail);
        return PT_PLUGIN_RESPOND;
    }
    return PT_PLUGIN_CONTINUE;
}

const pt_plugin_type pt_plugin_rewrite = {
    .name = "rewrite",
    .configure = rewrite_configure,
    .state_size = 0,
    .on_request_headers = rewrite_on_request_headers,
};
