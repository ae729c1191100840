/* jpath.c — the json_transform engine: paths into JSON documents, the
 * operations (add, remove, rename, move, copy) on a jansson tree, a depth
 * pre-check on the raw text, and a compact writer that keeps numbers in
 * their shortest exact form. No transaction here: the plugin callbacks live
 * in json_transform.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "plugins/json_transform/json_transform.h"

/* ================================================================== paths */

#define MAX_INDEX 999999999u

bool pt_jpath_parse(pt_arena *a, const char *s, size_t n, pt_jpath *out, const char **err)
{
    *out = (pt_jpath){0};
    if (n == 0) {
        *err = "the path is empty";
        return false;
    }
    size_t cap = 1;
    for (size_t i = 0; i < n; i++) cap += s[i] == '.' || s[i] == '[';
    out->segs = pt_arena_calloc(a, cap * sizeof(*out->segs));
    char *key = pt_arena_alloc(a, n + 1);
    size_t i = 0;
    bool need_key = true; /* at the start or after '.' */
    while (i < n) {
        if (s[i] == '[') {
            size_t j = i + 1;
            pt_jseg *g = &out->segs[out->n];
            if (j < n && (s[j] == '*' || s[j] == '-')) {
                g->kind = s[j] == '*' ? PT_JSEG_ALL : PT_JSEG_END;
                j++;
            } else {
                size_t v = 0, digits = 0;
                while (j < n && s[j] >= '0' && s[j] <= '9') {
                    if (v > MAX_INDEX / 10) {
                        *err = "an array index is too large";
                        return false;
                    }
                    v = v * 10 + (size_t)(s[j++] - '0');
                    digits++;
                }
                if (!digits) {
                    *err = "expected an index, '*' or '-' after '['";
                    return false;
                }
                g->kind = PT_JSEG_INDEX;
                g->index = v;
            }
            if (j >= n || s[j] != ']') {
                *err = "expected ']'";
                return false;
            }
            out->n++;
            i = j + 1;
            need_key = false;
            if (i < n && s[i] != '.' && s[i] != '[') {
                *err = "expected '.' or '[' after ']'";
                return false;
            }
            if (i < n && s[i] == '.') {
                i++;
                need_key = true;
                if (i == n) {
                    *err = "the path ends with '.'";
                    return false;
                }
            }
            continue;
        }
        if (!need_key) {
            *err = "expected '.' or '['";
            return false;
        }
        size_t k = 0;
        while (i < n && s[i] != '.' && s[i] != '[') {
            if (s[i] == '\\') {
                if (i + 1 == n) {
                    *err = "the path ends with a lone '\\'";
                    return false;
                }
                i++;
            }
            key[k++] = s[i++];
        }
        if (k == 0) {
            *err = "empty key (two dots in a row, or a leading dot)";
            return false;
        }
        key[k] = '\0';
        out->segs[out->n++] = (pt_jseg){.kind = PT_JSEG_KEY, .key = key, .key_len = k};
        key += k + 1;
        need_key = false;
        if (i < n && s[i] == '.') {
            i++;
            need_key = true;
            if (i == n) {
                *err = "the path ends with '.'";
                return false;
            }
        }
    }
    return true;
}

/* ============================================================= operations */

typedef void (*leaf_fn)(json_t *parent, const pt_jseg *last, void *ctx);

/* What a missing member before segment j of p is created as: an object
 * before a key, an array before a final [-] or [0] (the value is appended);
 * NULL (nothing created) otherwise: an empty array has no element to go
 * on into. */
static json_t *container_for(const pt_jpath *p, size_t j)
{
    const pt_jseg *next = &p->segs[j];
    if (next->kind == PT_JSEG_KEY) return json_object();
    bool last = j + 1 == p->n;
    if (last && (next->kind == PT_JSEG_END || (next->kind == PT_JSEG_INDEX && next->index == 0))) return json_array();
    return NULL;
}

/* Walks p from segment i below node and calls fn on each parent of the
 * last segment ([*] fans out). `create`: missing object members on the way
 * are created (container_for). */
static void walk(json_t *node, const pt_jpath *p, size_t i, bool create, leaf_fn fn, void *ctx)
{
    if (i + 1 == p->n) {
        fn(node, &p->segs[i], ctx);
        return;
    }
    const pt_jseg *g = &p->segs[i];
    json_t *child;
    switch (g->kind) {
    case PT_JSEG_KEY:
        if (!json_is_object(node)) return;
        child = json_object_getn(node, g->key, g->key_len);
        if (!child) {
            if (!create || !(child = container_for(p, i + 1))) return;
            if (json_object_setn_new(node, g->key, g->key_len, child) != 0) return;
        }
        walk(child, p, i + 1, create, fn, ctx);
        return;
    case PT_JSEG_INDEX:
        child = json_is_array(node) ? json_array_get(node, g->index) : NULL;
        if (child) walk(child, p, i + 1, create, fn, ctx);
        return;
    case PT_JSEG_ALL:
        if (!json_is_array(node)) return;
        for (size_t k = 0; k < json_array_size(node); k++) walk(json_array_get(node, k), p, i + 1, create, fn, ctx);
        return;
    case PT_JSEG_END:
        return; /* only meaningful as the last segment */
    }
}

/* Sets the value under `last` of parent to a new reference `v` (consumed). */
static void set_at(json_t *parent, const pt_jseg *last, json_t *v)
{
    switch (last->kind) {
    case PT_JSEG_KEY:
        if (json_is_object(parent)) {
            json_object_setn_new(parent, last->key, last->key_len, v);
            return;
        }
        break;
    case PT_JSEG_INDEX:
        if (json_is_array(parent) && last->index < json_array_size(parent)) {
            json_array_set_new(parent, last->index, v);
            return;
        }
        if (json_is_array(parent) && last->index == json_array_size(parent)) {
            json_array_append_new(parent, v);
            return;
        }
        break;
    case PT_JSEG_END:
        if (json_is_array(parent)) {
            json_array_append_new(parent, v);
            return;
        }
        break;
    case PT_JSEG_ALL:
        if (json_is_array(parent)) {
            for (size_t k = 0; k < json_array_size(parent); k++) json_array_set_new(parent, k, json_deep_copy(v));
        }
        break;
    }
    json_decref(v);
}

static void add_leaf(json_t *parent, const pt_jseg *last, void *ctx)
{
    set_at(parent, last, json_deep_copy(ctx));
}

static void remove_leaf(json_t *parent, const pt_jseg *last, void *ctx)
{
    switch (last->kind) {
    case PT_JSEG_KEY:
        if (json_is_object(parent)) json_object_deln(parent, last->key, last->key_len);
        return;
    case PT_JSEG_INDEX:
        if (json_is_array(parent)) json_array_remove(parent, last->index);
        return;
    case PT_JSEG_ALL:
        if (json_is_array(parent)) json_array_clear(parent);
        return;
    case PT_JSEG_END:
        return;
    }
}

static void rename_leaf(json_t *parent, const pt_jseg *last, void *ctx)
{
    const pt_jop *op = ctx;
    if (last->kind != PT_JSEG_KEY || !json_is_object(parent)) return;
    json_t *v = json_object_getn(parent, last->key, last->key_len);
    if (!v) return;
    json_incref(v);
    json_object_deln(parent, last->key, last->key_len);
    json_object_setn_new(parent, op->new_name, op->new_name_len, v);
}

/* The value at a path without [*] (a borrowed reference), or NULL. */
static json_t *get_at(json_t *root, const pt_jpath *p)
{
    json_t *v = root;
    for (size_t i = 0; v && i < p->n; i++) {
        const pt_jseg *g = &p->segs[i];
        if (g->kind == PT_JSEG_KEY) v = json_is_object(v) ? json_object_getn(v, g->key, g->key_len) : NULL;
        else if (g->kind == PT_JSEG_INDEX) v = json_is_array(v) ? json_array_get(v, g->index) : NULL;
        else v = NULL;
    }
    return v;
}

static void put_leaf(json_t *parent, const pt_jseg *last, void *ctx)
{
    set_at(parent, last, json_incref(ctx));
}

/* move / copy: `from` and `to` hold no [*] (checked at configure time). */
static void transfer(json_t **root, const pt_jop *op)
{
    json_t *v = get_at(*root, &op->path);
    if (!v) return;
    v = op->kind == PT_JOP_COPY ? json_deep_copy(v) : json_incref(v);
    if (!v) return;
    if (op->kind == PT_JOP_MOVE) walk(*root, &op->path, 0, false, remove_leaf, NULL);
    walk(*root, &op->to, 0, true, put_leaf, v);
    json_decref(v);
}

void pt_jops_apply(json_t **root, const pt_jop *ops, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const pt_jop *op = &ops[i];
        switch (op->kind) {
        case PT_JOP_ADD:
            walk(*root, &op->path, 0, true, add_leaf, op->value);
            break;
        case PT_JOP_REMOVE:
            walk(*root, &op->path, 0, false, remove_leaf, NULL);
            break;
        case PT_JOP_RENAME:
            walk(*root, &op->path, 0, false, rename_leaf, (void *)op);
            break;
        case PT_JOP_MOVE:
        case PT_JOP_COPY:
            transfer(root, op);
            break;
        }
    }
}

/* ================================================================== depth */

size_t pt_json_text_depth(const char *s, size_t n)
{
    size_t depth = 0, max = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '"') {
            for (i++; i < n && s[i] != '"'; i++)
                if (s[i] == '\\') i++;
        } else if (c == '{' || c == '[') {
            if (++depth > max) max = depth;
        } else if ((c == '}' || c == ']') && depth) {
            depth--;
        }
    }
    return max;
}

/* ================================================================= writer */

static void put_lit(pt_plugin_bytes *b, const char *s) { pt_plugin_bytes_put(b, s, strlen(s)); }

static void write_string(pt_plugin_bytes *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    pt_plugin_bytes_put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        pt_plugin_bytes_put(b, s + run, i - run);
        run = i + 1;
        switch (c) {
        case '"': put_lit(b, "\\\""); break;
        case '\\': put_lit(b, "\\\\"); break;
        case '\n': put_lit(b, "\\n"); break;
        case '\r': put_lit(b, "\\r"); break;
        case '\t': put_lit(b, "\\t"); break;
        case '\b': put_lit(b, "\\b"); break;
        case '\f': put_lit(b, "\\f"); break;
        default: {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            pt_plugin_bytes_put(b, e, 6);
        }
        }
    }
    pt_plugin_bytes_put(b, s + run, n - run);
    pt_plugin_bytes_put(b, "\"", 1);
}

/* The shortest %.Ng (15..17) that reads back as d; a '.0' keeps it a real. */
static void write_real(pt_plugin_bytes *b, double d)
{
    char t[40];
    int len = 0;
    for (int prec = 15; prec <= 17; prec++) {
        len = snprintf(t, sizeof(t) - 2, "%.*g", prec, d);
        if (strtod(t, NULL) == d) break;
    }
    if (!strpbrk(t, ".eEni")) {
        t[len++] = '.';
        t[len++] = '0';
        t[len] = '\0';
    }
    pt_plugin_bytes_put(b, t, (size_t)len);
}

void pt_json_write(pt_plugin_bytes *b, const json_t *v)
{
    char t[32];
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        pt_plugin_bytes_put(b, "{", 1);
        bool first = true;
        for (void *it = json_object_iter((json_t *)v); it; it = json_object_iter_next((json_t *)v, it)) {
            if (!first) pt_plugin_bytes_put(b, ",", 1);
            first = false;
            write_string(b, json_object_iter_key(it), json_object_iter_key_len(it));
            pt_plugin_bytes_put(b, ":", 1);
            pt_json_write(b, json_object_iter_value(it));
        }
        pt_plugin_bytes_put(b, "}", 1);
        return;
    }
    case JSON_ARRAY:
        pt_plugin_bytes_put(b, "[", 1);
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i) pt_plugin_bytes_put(b, ",", 1);
            pt_json_write(b, json_array_get(v, i));
        }
        pt_plugin_bytes_put(b, "]", 1);
        return;
    case JSON_STRING:
        write_string(b, json_string_value(v), json_string_length(v));
        return;
    case JSON_INTEGER:
        pt_plugin_bytes_put(b, t, (size_t)snprintf(t, sizeof(t), "%" JSON_INTEGER_FORMAT, json_integer_value(v)));
        return;
    case JSON_REAL:
        write_real(b, json_real_value(v));
        return;
    case JSON_TRUE: put_lit(b, "true"); return;
    case JSON_FALSE: put_lit(b, "false"); return;
    case JSON_NULL: put_lit(b, "null"); return;
    }
}

/* ============================================================= whole body */

pt_jt_result pt_json_transform_text(const pt_jop *ops, size_t nops, size_t max_depth, const char *in, size_t len,
                                    pt_plugin_bytes *out, char *err, size_t errlen)
{
    if (pt_json_text_depth(in, len) > max_depth) {
        snprintf(err, errlen, "JSON nesting deeper than %zu levels", max_depth);
        return PT_JT_TOO_DEEP;
    }
    json_error_t e;
    json_t *root = json_loadb(in, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (!root) {
        snprintf(err, errlen, "invalid JSON at byte %d: %s", e.position, e.text);
        return PT_JT_INVALID;
    }
    pt_jops_apply(&root, ops, nops);
    pt_json_write(out, root);
    json_decref(root);
    return PT_JT_OK;
}
