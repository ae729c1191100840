/* dr_template.h — direct_response body templates: placeholders filled from
 * the request, escaped for the declared Content-Type. See
 * docs/transformation.md "Templates".
 *
 *   {{request_id}}  {{method}}  {{path}}  {{param.NAME}}  {{header.NAME}}
 *
 * Escaping follows the media type: JSON string escaping for
 * application/json and +json (placeholders must sit inside a JSON string),
 * HTML/XML escaping for text/html, application/xhtml+xml, application/xml,
 * text/xml and +xml (not inside a tag unless in a quoted attribute value,
 * never inside <script> or <style>), none for text/plain. Any other (or no)
 * Content-Type with placeholders is a configuration error. */
#ifndef PT_PLUGINS_DR_TEMPLATE_H
#define PT_PLUGINS_DR_TEMPLATE_H

#include "plugins/plugin_util.h"

typedef enum { PT_DR_ESC_NONE = 0, PT_DR_ESC_JSON, PT_DR_ESC_HTML } pt_dr_escape;

typedef enum {
    PT_DR_LITERAL = 0,
    PT_DR_REQUEST_ID,
    PT_DR_METHOD,
    PT_DR_PATH,
    PT_DR_PARAM,
    PT_DR_HEADER,
} pt_dr_kind;

typedef struct {
    pt_dr_kind kind;
    pt_str text; /* literal bytes, or the parameter / header name (NUL-terminated) */
} pt_dr_piece;

typedef struct {
    pt_dr_piece *pieces;
    size_t npieces;
    pt_dr_escape escape;
    size_t literal_len; /* sum of the literal pieces */
} pt_dr_template;

/* Compiles `body` for `content_type` into *t (arena memory). Returns NULL,
 * or a description of the problem (in `a`) for a configuration error. */
const char *pt_dr_template_compile(pt_arena *a, pt_str body, pt_str content_type, pt_dr_template *t);

/* Appends `v` escaped by `e` to out (room for 6 bytes per byte of v);
 * returns the bytes written. JSON: '"', '\\', control bytes, '<', '>',
 * '&', U+2028/2029 and ill-formed UTF-8 (as U+FFFD) become \u escapes;
 * HTML: & < > " ' become character references. */
size_t pt_dr_escape_into(pt_dr_escape e, pt_str v, char *out);

/* The body for this request (request arena). */
pt_str pt_dr_template_render(const pt_dr_template *t, pt_txn *txn);

#endif
