/* rewrite.h — private: the rewrite plugin's config, exposed for unit tests.
 * docs/transformation.md "Rewriting".
 *
 *   plugins:
 *     - rewrite:
 *         path:
 *           regex: '/api/v1/users/([0-9]+)(?<rest>/.*)?'   # anchored, on the normalized path
 *           replacement: '/users/$1{rest}'                # $0..$9, {name}, $$ (a '$')
 *         query:                                          # on decoded names, in this order:
 *           remove: [debug]
 *           rename: {q: search}
 *           set: {format: json}                           # replace (first place) or append
 *           add: {source: portico}                        # append
 *
 * The path sent upstream becomes the replacement when the regex matches
 * (pt_txn_set_upstream_path: normalised and checked under the route's path
 * rules; a result with a dot segment is a 400); otherwise the route's own
 * rewrite / strip_prefix apply. Query parameters the operations do not
 * name keep their bytes and their order. */
#ifndef PT_PLUGINS_REWRITE_H
#define PT_PLUGINS_REWRITE_H

#include "plugins/plugin_util.h"

/* One piece of a replacement: literal bytes, or a capture group. */
typedef struct {
    pt_str literal; /* when group < 0 */
    int group;      /* capture number, -1 for a literal */
} pt_rewrite_piece;

typedef struct {
    pt_str name;    /* decoded, as configured */
    pt_str enc_name;  /* percent-encoded for the query */
    pt_str enc_value; /* set/add: percent-encoded value; rename: the new name, encoded */
} pt_rewrite_qop;

typedef struct {
    pcre2_code *regex; /* NULL: the path is left alone */
    pt_rewrite_piece *pieces;
    size_t npieces;
    pt_rewrite_qop *remove, *rename, *set, *add;
    size_t nremove, nrename, nset, nadd;
} pt_rewrite_conf;

/* Applies the query operations of `c` to `query` (without '?'); the result
 * in arena `a`. *present says whether a query is left (false: send none). */
pt_str pt_rewrite_query(const pt_rewrite_conf *c, pt_str query, bool had_query, pt_arena *a, bool *present);

extern const pt_plugin_type pt_plugin_rewrite;

#endif
