/* conf_node.c — YAML text -> positioned pt_conf_node tree (libyaml event
 * API), ${ENV} interpolation of every scalar, error collection and the typed
 * getters every config consumer uses. See conf_node.h. */
#include "config/conf_node.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <yaml.h>

#define PT_CONF_MAX_DEPTH 64          /* deeper nesting is refused (stack safety) */
#define PT_CONF_MAX_ERRORS 100        /* beyond this, errors are counted but dropped */
#define PT_CONF_MAX_TEXT (4u << 20)   /* 4 MiB */

/* ------------------------------------------------------------------ errors */

/* Formats into a new heap string (caller frees). One vsnprintf-family call
 * on purpose: gcc 12 with -fsanitize=undefined falsely reports "null format
 * string" when `fmt` feeds two of them. */
static char *heap_vformat(const char *fmt, va_list ap)
{
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0) pt_panic(__FILE__, __LINE__, "out of memory formatting an error");
    return msg;
}

/* Appends one formatted heap message. After PT_CONF_MAX_ERRORS messages a
 * single "too many errors" line is added and later ones are dropped, so a
 * pathological input cannot make the error list grow without bound. */
void pt_errors_add(pt_errors *e, const char *fmt, ...)
{
    if (e->n > PT_CONF_MAX_ERRORS) return;
    char *msg;
    if (e->n == PT_CONF_MAX_ERRORS) {
        msg = pt_xstrndup("too many errors; giving up listing them", 39);
    } else {
        va_list ap;
        va_start(ap, fmt);
        msg = heap_vformat(fmt, ap);
        va_end(ap);
    }
    e->msgs = pt_xrealloc(e->msgs, (e->n + 1) * sizeof(*e->msgs));
    e->msgs[e->n++] = msg;
}

void pt_errors_free(pt_errors *e)
{
    if (!e) return;
    for (size_t i = 0; i < e->n; i++) free(e->msgs[i]);
    free(e->msgs);
    e->msgs = NULL;
    e->n = 0;
}

/* Formats the message and records it as "FILE:LINE:COL: msg" (or
 * "FILE: msg" when there is no node to point at). */
void pt_conf_error(pt_conf_ctx *ctx, const pt_conf_node *node, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    const char *file = ctx->file ? ctx->file : "<config>";
    if (node && node->line > 0)
        pt_errors_add(ctx->errors, "%s:%d:%d: %s", file, node->line, node->col, buf);
    else
        pt_errors_add(ctx->errors, "%s: %s", file, buf);
}

/* Error at an explicit position (used before a node exists). */
static void error_at(pt_conf_ctx *ctx, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void error_at(pt_conf_ctx *ctx, int line, int col, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    pt_errors_add(ctx->errors, "%s:%d:%d: %s", ctx->file ? ctx->file : "<config>", line, col, buf);
}

/* ----------------------------------------------------------------- lookups */

const pt_conf_node *pt_conf_get(const pt_conf_node *map, const char *key)
{
    if (!map || map->kind != PT_NODE_MAP) return NULL;
    size_t klen = strlen(key);
    for (size_t i = 0; i < map->n; i++) {
        const pt_conf_node *k = map->keys[i];
        if (k->scalar && k->scalar_len == klen && memcmp(k->scalar, key, klen) == 0) return map->vals[i];
    }
    return NULL;
}

static const char *kind_name(pt_node_kind k)
{
    switch (k) {
    case PT_NODE_NULL: return "null";
    case PT_NODE_SCALAR: return "a scalar";
    case PT_NODE_MAP: return "a mapping";
    case PT_NODE_SEQ: return "a list";
    }
    return "?";
}

bool pt_conf_check_keys(pt_conf_ctx *ctx, const pt_conf_node *map, const char *const *allowed,
                        const char *what)
{
    if (!map || map->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, map, "%s must be a mapping, got %s", what, map ? kind_name(map->kind) : "nothing");
        return false;
    }
    bool ok = true;
    for (size_t i = 0; i < map->n; i++) {
        const pt_conf_node *k = map->keys[i];
        bool known = false;
        for (size_t j = 0; allowed[j]; j++)
            if (k->scalar && strcmp(k->scalar, allowed[j]) == 0) known = true;
        if (known) continue;
        char list[512];
        size_t used = 0;
        list[0] = '\0';
        for (size_t j = 0; allowed[j] && used < sizeof(list); j++)
            used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s", j ? ", " : "", allowed[j]);
        pt_conf_error(ctx, k, "unknown key '%s' in %s (expected one of: %s)", k->scalar ? k->scalar : "",
                      what, list);
        ok = false;
    }
    return ok;
}

/* ----------------------------------------------------------- typed getters */

bool pt_conf_string(pt_conf_ctx *ctx, const pt_conf_node *n, char **out)
{
    if (!n || n->kind != PT_NODE_SCALAR) {
        pt_conf_error(ctx, n, "expected a string, got %s", n ? kind_name(n->kind) : "nothing");
        return false;
    }
    *out = n->scalar;
    return true;
}

/* Parses an unsigned decimal prefix of s into *v; returns the number of
 * digits consumed (0 if none) or -1 on overflow. */
static int parse_u64_prefix(const char *s, uint64_t *v)
{
    uint64_t acc = 0;
    int i = 0;
    while (s[i] >= '0' && s[i] <= '9') {
        unsigned d = (unsigned)(s[i] - '0');
        if (acc > (UINT64_MAX - d) / 10) return -1;
        acc = acc * 10 + d;
        i++;
    }
    *v = acc;
    return i;
}

bool pt_conf_int(pt_conf_ctx *ctx, const pt_conf_node *n, int64_t min, int64_t max, int64_t *out)
{
    if (!n || n->kind != PT_NODE_SCALAR) goto bad;
    const char *s = n->scalar;
    bool neg = false;
    if (*s == '-' || *s == '+') neg = (*s++ == '-');
    uint64_t mag;
    int digits = parse_u64_prefix(s, &mag);
    if (digits <= 0 || s[digits] != '\0') goto bad;
    if (mag > (uint64_t)INT64_MAX) goto range;
    int64_t v = neg ? -(int64_t)mag : (int64_t)mag;
    if (v < min || v > max) goto range;
    *out = v;
    return true;
range:
    pt_conf_error(ctx, n, "integer out of range (expected %" PRId64 "..%" PRId64 ")", min, max);
    return false;
bad:
    pt_conf_error(ctx, n, "expected an integer (%" PRId64 "..%" PRId64 "), got %s%s%s", min, max,
                  n && n->kind == PT_NODE_SCALAR ? "'" : "",
                  n ? (n->kind == PT_NODE_SCALAR ? n->scalar : kind_name(n->kind)) : "nothing",
                  n && n->kind == PT_NODE_SCALAR ? "'" : "");
    return false;
}

bool pt_conf_bool(pt_conf_ctx *ctx, const pt_conf_node *n, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on"};
    static const char *const no[] = {"false", "no", "off"};
    if (n && n->kind == PT_NODE_SCALAR) {
        for (size_t i = 0; i < PT_ARRAY_LEN(yes); i++) {
            if (strcasecmp(n->scalar, yes[i]) == 0) { *out = true; return true; }
            if (strcasecmp(n->scalar, no[i]) == 0) { *out = false; return true; }
        }
    }
    pt_conf_error(ctx, n, "expected a boolean (true/false/yes/no/on/off)");
    return false;
}

/* Shared shape of durations and sizes: digits, then a unit suffix looked up
 * in `units` (suffix -> multiplier; "" is the bare-number unit). Rejects
 * signs, spaces, fractions and overflow with one message naming the kind. */
typedef struct { const char *suffix; uint64_t mult; } unit_mult;

static bool parse_with_units(pt_conf_ctx *ctx, const pt_conf_node *n, const unit_mult *units, size_t nunits,
                             const char *what, const char *examples, uint64_t *out)
{
    if (!n || n->kind != PT_NODE_SCALAR) {
        pt_conf_error(ctx, n, "expected a %s (e.g. %s), got %s", what, examples, n ? kind_name(n->kind) : "nothing");
        return false;
    }
    const char *s = n->scalar;
    if (*s == '-') {
        pt_conf_error(ctx, n, "%s must not be negative: '%s'", what, s);
        return false;
    }
    uint64_t v;
    int digits = parse_u64_prefix(s, &v);
    if (digits < 0) {
        pt_conf_error(ctx, n, "%s too large: '%s'", what, s);
        return false;
    }
    if (digits > 0) {
        for (size_t i = 0; i < nunits; i++) {
            if (strcmp(s + digits, units[i].suffix) != 0) continue;
            if (units[i].mult && v > UINT64_MAX / units[i].mult) {
                pt_conf_error(ctx, n, "%s too large: '%s'", what, s);
                return false;
            }
            *out = v * units[i].mult;
            return true;
        }
    }
    pt_conf_error(ctx, n, "invalid %s '%s' (expected e.g. %s)", what, s, examples);
    return false;
}

bool pt_conf_duration_ms(pt_conf_ctx *ctx, const pt_conf_node *n, uint64_t *out)
{
    static const unit_mult units[] = {
        {"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000},
    };
    return parse_with_units(ctx, n, units, PT_ARRAY_LEN(units), "duration", "250ms, 5s, 2m, 1h", out);
}

bool pt_conf_size(pt_conf_ctx *ctx, const pt_conf_node *n, uint64_t *out)
{
    static const unit_mult units[] = {
        {"", 1},          {"b", 1},          {"B", 1},
        {"k", 1u << 10},  {"K", 1u << 10},  {"kb", 1u << 10}, {"kB", 1u << 10}, {"Kb", 1u << 10}, {"KB", 1u << 10},
        {"m", 1u << 20},  {"M", 1u << 20},  {"mb", 1u << 20}, {"mB", 1u << 20}, {"Mb", 1u << 20}, {"MB", 1u << 20},
        {"g", 1u << 30},  {"G", 1u << 30},  {"gb", 1u << 30}, {"gB", 1u << 30}, {"Gb", 1u << 30}, {"GB", 1u << 30},
    };
    return parse_with_units(ctx, n, units, PT_ARRAY_LEN(units), "size", "512, 16k, 1m, 2g", out);
}

/* ---------------------------------------------------- ${ENV} interpolation */

/* A growable heap byte buffer (temporary; results are copied to the arena). */
typedef struct {
    char *p;
    size_t n, cap;
} sbuf;

static void sbuf_put(sbuf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        while (cap < b->n + n + 1) cap *= 2;
        b->p = pt_xrealloc(b->p, cap);
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static bool is_name_start(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }
static bool is_name_char(char c) { return is_name_start(c) || (c >= '0' && c <= '9'); }

/* True when s[0, len) is exactly "${NAME}": a secret read from the
 * environment, with no literal text (or default) in the file. */
static bool is_env_ref(const char *s, size_t len)
{
    if (len < 4 || s[0] != '$' || s[1] != '{' || s[len - 1] != '}' || !is_name_start(s[2])) return false;
    for (size_t i = 3; i + 1 < len; i++)
        if (!is_name_char(s[i])) return false;
    return true;
}

/* Expands ${NAME}, ${NAME:-default} and "$${" (a literal "${") in the scalar
 * `s` of length `len`. Returns the expanded text in the arena (NUL-terminated,
 * length in *out_len), or NULL after recording errors at (line, col).
 * ":-default" applies when NAME is unset or empty (shell semantics); the
 * default is taken literally up to the first '}'. */
static char *interpolate(pt_conf_ctx *ctx, const char *s, size_t len, int line, int col, size_t *out_len)
{
    if (!memchr(s, '$', len)) {
        *out_len = len;
        return pt_arena_strndup(ctx->arena, s, len);
    }
    sbuf b = {0};
    bool ok = true;
    size_t i = 0;
    while (i < len) {
        if (s[i] != '$') {
            size_t j = i;
            while (j < len && s[j] != '$') j++;
            sbuf_put(&b, s + i, j - i);
            i = j;
            continue;
        }
        if (i + 2 < len && s[i + 1] == '$' && s[i + 2] == '{') { /* "$${" -> "${" */
            sbuf_put(&b, "${", 2);
            i += 3;
            continue;
        }
        if (i + 1 >= len || s[i + 1] != '{') { /* a lone '$' is literal */
            sbuf_put(&b, "$", 1);
            i++;
            continue;
        }
        size_t name_start = i + 2, j = name_start;
        if (j < len && is_name_start(s[j])) {
            j++;
            while (j < len && is_name_char(s[j])) j++;
        }
        size_t name_len = j - name_start;
        const char *deflt = NULL;
        size_t deflt_len = 0;
        if (name_len > 0 && j + 1 < len && s[j] == ':' && s[j + 1] == '-') {
            size_t d = j + 2, e = d;
            while (e < len && s[e] != '}') e++;
            deflt = s + d;
            deflt_len = e - d;
            j = e;
        }
        if (name_len == 0 || j >= len || s[j] != '}') {
            error_at(ctx, line, col, "malformed '${' in value (expected ${NAME} or ${NAME:-default}; "
                                     "write $${ for a literal ${)");
            ok = false;
            break;
        }
        char name[256];
        if (name_len >= sizeof(name)) {
            error_at(ctx, line, col, "environment variable name too long");
            ok = false;
            break;
        }
        memcpy(name, s + name_start, name_len);
        name[name_len] = '\0';
        const char *val = getenv(name);
        if (deflt && (!val || !*val)) {
            sbuf_put(&b, deflt, deflt_len);
        } else if (!val) {
            error_at(ctx, line, col, "environment variable %s is not set", name);
            ok = false; /* keep scanning: report every unset variable */
        } else {
            sbuf_put(&b, val, strlen(val));
        }
        i = j + 1;
    }
    char *res = NULL;
    if (ok) {
        *out_len = b.n;
        res = pt_arena_strndup(ctx->arena, b.p ? b.p : "", b.n);
    }
    free(b.p);
    return res;
}

/* ------------------------------------------------------------ YAML -> tree */

typedef struct {
    pt_conf_ctx *ctx;
    yaml_parser_t parser;
    bool failed;      /* a fatal error (syntax, depth): stop building */
    bool invalid;     /* non-fatal errors were recorded: result is NULL */
} tree_builder;

static pt_conf_node *node_new(tree_builder *tb, pt_node_kind kind, yaml_mark_t mark)
{
    pt_conf_node *n = pt_arena_calloc(tb->ctx->arena, sizeof(*n));
    n->kind = kind;
    n->line = (int)mark.line + 1;
    n->col = (int)mark.column + 1;
    return n;
}

static void syntax_error(tree_builder *tb)
{
    yaml_parser_t *p = &tb->parser;
    yaml_mark_t m = p->problem_mark;
    const char *problem = p->problem ? p->problem : "invalid YAML";
    if (p->error == YAML_MEMORY_ERROR) problem = "out of memory while parsing YAML";
    if (p->context)
        error_at(tb->ctx, (int)m.line + 1, (int)m.column + 1, "YAML syntax error: %s (%s at line %d)", problem,
                 p->context, (int)p->context_mark.line + 1);
    else
        error_at(tb->ctx, (int)m.line + 1, (int)m.column + 1, "YAML syntax error: %s", problem);
    tb->failed = true;
}

/* Fetches the next event; on a parser error records it and returns false. */
static bool next_event(tree_builder *tb, yaml_event_t *ev)
{
    if (!yaml_parser_parse(&tb->parser, ev)) {
        syntax_error(tb);
        return false;
    }
    return true;
}

/* Plain scalars spelled like YAML null become PT_NODE_NULL. */
static bool plain_is_null(const char *s, size_t n)
{
    return n == 0 || (n == 1 && s[0] == '~') ||
           (n == 4 && (memcmp(s, "null", 4) == 0 || memcmp(s, "Null", 4) == 0 || memcmp(s, "NULL", 4) == 0));
}

static void reject_anchor(tree_builder *tb, const yaml_char_t *anchor, yaml_mark_t m)
{
    if (!anchor) return;
    error_at(tb->ctx, (int)m.line + 1, (int)m.column + 1,
             "YAML anchors and aliases are not supported (anchor '%s')", (const char *)anchor);
    tb->invalid = true;
}

/* A temporary heap vector of node pointers, copied to the arena when done. */
typedef struct {
    pt_conf_node **v;
    size_t n, cap;
} node_vec;

static void vec_push(node_vec *v, pt_conf_node *n)
{
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 8;
        v->v = pt_xrealloc(v->v, v->cap * sizeof(*v->v));
    }
    v->v[v->n++] = n;
}

static pt_conf_node **vec_to_arena(pt_arena *a, node_vec *v)
{
    pt_conf_node **out = pt_arena_alloc(a, (v->n ? v->n : 1) * sizeof(*out));
    if (v->n) memcpy(out, v->v, v->n * sizeof(*out));
    free(v->v);
    v->v = NULL;
    return out;
}

static int key_cmp(const void *a, const void *b)
{
    const pt_conf_node *x = *(pt_conf_node *const *)a, *y = *(pt_conf_node *const *)b;
    size_t n = PT_MIN(x->scalar_len, y->scalar_len);
    int c = memcmp(x->scalar, y->scalar, n);
    if (c) return c;
    if (x->scalar_len != y->scalar_len) return x->scalar_len < y->scalar_len ? -1 : 1;
    if (x->line != y->line) return x->line < y->line ? -1 : 1;
    return (x->col > y->col) - (x->col < y->col);
}

/* Reports each key that repeats an earlier one (O(n log n) via a sorted copy). */
static void check_duplicate_keys(tree_builder *tb, pt_conf_node **keys, size_t n)
{
    if (n < 2) return;
    pt_conf_node **sorted = pt_xmalloc(n * sizeof(*sorted));
    memcpy(sorted, keys, n * sizeof(*sorted));
    qsort(sorted, n, sizeof(*sorted), key_cmp);
    for (size_t i = 1; i < n; i++) {
        const pt_conf_node *prev = sorted[i - 1], *k = sorted[i];
        if (prev->scalar_len == k->scalar_len && memcmp(prev->scalar, k->scalar, k->scalar_len) == 0) {
            pt_conf_error(tb->ctx, k, "duplicate key '%s' (first defined at line %d)", k->scalar, prev->line);
            tb->invalid = true;
        }
    }
    free(sorted);
}

static pt_conf_node *build_node(tree_builder *tb, yaml_event_t *ev, int depth);

/* Builds the children of a mapping or sequence whose start event was just
 * consumed; reads up to and including the matching end event. */
static void build_children(tree_builder *tb, pt_conf_node *parent, int depth)
{
    bool is_map = parent->kind == PT_NODE_MAP;
    node_vec keys = {0}, vals = {0};
    yaml_event_type_t end = is_map ? YAML_MAPPING_END_EVENT : YAML_SEQUENCE_END_EVENT;
    for (;;) {
        yaml_event_t ev;
        if (!next_event(tb, &ev)) break;
        if (ev.type == end) {
            yaml_event_delete(&ev);
            break;
        }
        pt_conf_node *child = build_node(tb, &ev, depth + 1);
        yaml_event_delete(&ev);
        if (tb->failed) break;
        if (!is_map) {
            vec_push(&vals, child);
            continue;
        }
        if (child->kind != PT_NODE_SCALAR) {
            if (child->kind == PT_NODE_NULL) {
                pt_conf_error(tb->ctx, child, "empty mapping key");
            } else {
                pt_conf_error(tb->ctx, child, "mapping keys must be plain strings, not %s", kind_name(child->kind));
            }
            tb->invalid = true;
            child->kind = PT_NODE_SCALAR; /* keep the tree well-formed */
            child->scalar = pt_arena_strndup(tb->ctx->arena, "", 0);
            child->scalar_len = 0;
            child->n = 0;
        }
        vec_push(&keys, child);
        yaml_event_t vev;
        if (!next_event(tb, &vev)) break;
        pt_conf_node *val = build_node(tb, &vev, depth + 1);
        yaml_event_delete(&vev);
        if (tb->failed) break;
        vec_push(&vals, val);
    }
    if (is_map) {
        /* On a fatal error keys may hold one more entry than vals; trim. */
        if (keys.n > vals.n) keys.n = vals.n;
        parent->n = vals.n;
        parent->keys = vec_to_arena(tb->ctx->arena, &keys);
        if (!tb->failed) check_duplicate_keys(tb, parent->keys, parent->n);
    } else {
        parent->n = vals.n;
    }
    parent->vals = vec_to_arena(tb->ctx->arena, &vals);
}

/* Builds the node that starts with event `ev` (not consumed by us: the
 * caller deletes it). Always returns a node, even on error, so the caller
 * can keep the tree consistent; tb->failed says whether to stop. */
static pt_conf_node *build_node(tree_builder *tb, yaml_event_t *ev, int depth)
{
    if (depth > PT_CONF_MAX_DEPTH) {
        error_at(tb->ctx, (int)ev->start_mark.line + 1, (int)ev->start_mark.column + 1,
                 "nesting deeper than %d levels", PT_CONF_MAX_DEPTH);
        tb->failed = true;
        return node_new(tb, PT_NODE_NULL, ev->start_mark);
    }
    switch (ev->type) {
    case YAML_SCALAR_EVENT: {
        reject_anchor(tb, ev->data.scalar.anchor, ev->start_mark);
        const char *text = (const char *)ev->data.scalar.value;
        size_t len = ev->data.scalar.length;
        bool plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        if (plain && plain_is_null(text, len)) return node_new(tb, PT_NODE_NULL, ev->start_mark);
        pt_conf_node *n = node_new(tb, PT_NODE_SCALAR, ev->start_mark);
        n->quoted = ev->data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
                    ev->data.scalar.style == YAML_DOUBLE_QUOTED_SCALAR_STYLE;
        if (memchr(text, '\0', len)) {
            pt_conf_error(tb->ctx, n, "NUL character in value");
            tb->invalid = true;
        }
        n->scalar = interpolate(tb->ctx, text, len, n->line, n->col, &n->scalar_len);
        n->env_ref = is_env_ref(text, len);
        if (!n->scalar) {
            tb->invalid = true;
            n->scalar = pt_arena_strndup(tb->ctx->arena, "", 0);
            n->scalar_len = 0;
        }
        return n;
    }
    case YAML_MAPPING_START_EVENT:
    case YAML_SEQUENCE_START_EVENT: {
        bool map = ev->type == YAML_MAPPING_START_EVENT;
        reject_anchor(tb, map ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor, ev->start_mark);
        pt_conf_node *n = node_new(tb, map ? PT_NODE_MAP : PT_NODE_SEQ, ev->start_mark);
        build_children(tb, n, depth);
        return n;
    }
    case YAML_ALIAS_EVENT:
        error_at(tb->ctx, (int)ev->start_mark.line + 1, (int)ev->start_mark.column + 1,
                 "YAML anchors and aliases are not supported (alias '%s')", (const char *)ev->data.alias.anchor);
        tb->invalid = true;
        return node_new(tb, PT_NODE_NULL, ev->start_mark);
    default:
        error_at(tb->ctx, (int)ev->start_mark.line + 1, (int)ev->start_mark.column + 1, "unexpected YAML event");
        tb->failed = true;
        return node_new(tb, PT_NODE_NULL, ev->start_mark);
    }
}

/* Parses exactly one YAML document (an empty stream yields a NULL-kind root
 * at 1:1). More than one document is an error. The returned tree lives in
 * ctx->arena; NULL means errors were recorded in ctx->errors. */
pt_conf_node *pt_conf_parse_yaml(pt_conf_ctx *ctx, const char *text, size_t len)
{
    if (len > PT_CONF_MAX_TEXT) {
        pt_conf_error(ctx, NULL, "configuration too large (%zu bytes; the limit is 4 MiB)", len);
        return NULL;
    }
    tree_builder tb = {.ctx = ctx};
    if (!yaml_parser_initialize(&tb.parser)) {
        pt_conf_error(ctx, NULL, "cannot initialise the YAML parser");
        return NULL;
    }
    yaml_parser_set_input_string(&tb.parser, (const unsigned char *)text, len);
    pt_conf_node *root = NULL;
    int documents = 0;
    yaml_event_t ev;
    while (!tb.failed && next_event(&tb, &ev)) {
        yaml_event_type_t type = ev.type;
        if (type == YAML_DOCUMENT_START_EVENT) {
            documents++;
            if (documents > 1) {
                error_at(ctx, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                         "only one YAML document is allowed");
                tb.failed = true;
            }
        } else if (type == YAML_SCALAR_EVENT || type == YAML_MAPPING_START_EVENT ||
                   type == YAML_SEQUENCE_START_EVENT || type == YAML_ALIAS_EVENT) {
            root = build_node(&tb, &ev, 1);
        }
        yaml_event_delete(&ev);
        if (type == YAML_STREAM_END_EVENT) break;
    }
    yaml_parser_delete(&tb.parser);
    if (tb.failed || tb.invalid) return NULL;
    if (!root) {
        root = pt_arena_calloc(ctx->arena, sizeof(*root));
        root->kind = PT_NODE_NULL;
        root->line = root->col = 1;
    }
    return root;
}
