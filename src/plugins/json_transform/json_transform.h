/* json_transform.h — private: the json_transform plugin's configuration,
 * its path syntax and the transformation engine, exposed for unit tests
 * and bench/transform. Design and examples: docs/transformation.md
 * ("JSON body transformation").
 *
 *   plugins:
 *     - json_transform:
 *         max_body: 1m        # bodies buffered up to this; over it 413 / 502
 *         max_depth: 64       # nesting of objects and arrays
 *         request:            # operations on JSON request bodies, in order
 *           - add: {path: meta.source, value: portico}
 *           - remove: password
 *         response:
 *           - rename: {from: user.fullName, to: full_name}
 *           - move: {from: data.items, to: items}
 *           - copy: {from: id, to: meta.id}
 *
 * Paths: keys separated by '.', array positions as [N], every element as
 * [*], the end of an array (add/move/copy targets) as [-]; '\' escapes the
 * next character ("a\.b" is the key "a.b"). */
#ifndef PT_PLUGINS_JSON_TRANSFORM_H
#define PT_PLUGINS_JSON_TRANSFORM_H

#include <jansson.h>

#include "plugin/plugin.h"
#include "plugins/plugin_util.h"

typedef enum { PT_JSEG_KEY, PT_JSEG_INDEX, PT_JSEG_ALL, PT_JSEG_END } pt_jseg_kind;

typedef struct {
    pt_jseg_kind kind;
    const char *key; /* PT_JSEG_KEY: unescaped, NUL-terminated */
    size_t key_len;
    size_t index;    /* PT_JSEG_INDEX */
} pt_jseg;

typedef struct {
    pt_jseg *segs;
    size_t n;        /* >= 1 */
} pt_jpath;

/* Parses path text s[0, n) into *out (segments in arena a). False with a
 * static reason in *err when it is not a valid path. */
bool pt_jpath_parse(pt_arena *a, const char *s, size_t n, pt_jpath *out, const char **err);

typedef enum { PT_JOP_ADD, PT_JOP_REMOVE, PT_JOP_RENAME, PT_JOP_MOVE, PT_JOP_COPY } pt_jop_kind;

typedef struct {
    pt_jop_kind kind;
    pt_jpath path;        /* add, remove: the target; rename, move, copy: `from` */
    pt_jpath to;          /* move, copy */
    const char *new_name; /* rename: the new key */
    size_t new_name_len;
    json_t *value;        /* add: the constant (copied at each use; freed by destroy) */
} pt_jop;

/* Applies ops[0, n) in order to *root (which an op may replace). An op
 * whose path does not lead anywhere in this document does nothing. */
void pt_jops_apply(json_t **root, const pt_jop *ops, size_t n);

/* Deepest nesting of objects/arrays in JSON text (strings skipped). */
size_t pt_json_text_depth(const char *s, size_t n);


/* Writes v as compact JSON: object members in order, integers exactly,
 * reals in the shortest form that reads back as the same double. */
void pt_json_write(pt_plugin_bytes *out, const json_t *v);

typedef enum {
    PT_JT_OK = 0,
    PT_JT_INVALID,   /* not JSON (syntax, invalid UTF-8, duplicate key, number out of range) */
    PT_JT_TOO_DEEP,  /* nesting over max_depth */
} pt_jt_result;

/* The whole transformation of one body: parse in[0, len) (duplicate keys
 * refused), apply ops, write the result into *out (appended). On failure
 * `err` (errlen bytes) says why. */
pt_jt_result pt_json_transform_text(const pt_jop *ops, size_t nops, size_t max_depth, const char *in, size_t len,
                                    pt_plugin_bytes *out, char *err, size_t errlen);

typedef struct {
    pt_jop *ops;
    size_t nops;
} pt_jop_list;

typedef struct {
    pt_jop_list request, response;
    uint64_t max_body;
    size_t max_depth;
} pt_json_transform_conf;

extern const pt_plugin_type pt_plugin_json_transform;

#endif
