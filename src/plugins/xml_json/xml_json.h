/* xml_json.h — private: the xml_json plugin's configuration and its two
 * converters (xml_map.c), exposed for unit tests and bench/transform.
 * The mapping is documented in docs/transformation.md ("JSON and XML").
 *
 *   plugins:
 *     - xml_json:
 *         response: xml_to_json      # XML responses become JSON
 *         request: json_to_xml       # JSON requests become XML
 *         arrays: [orders.order]     # XML→JSON: element paths that are always arrays
 *         root: request              # JSON→XML: wrap the whole JSON in <request>
 *         xml_content_type: text/xml; charset=utf-8
 *         max_body: 1m
 *         max_depth: 64
 *
 * XML is parsed by libxml2 without network access, DTD loading or entity
 * substitution; a document with a DOCTYPE (where entities are declared:
 * billion laughs, XXE) is refused outright. */
#ifndef PT_PLUGINS_XML_JSON_H
#define PT_PLUGINS_XML_JSON_H

#include "plugin/plugin.h"
#include "plugins/plugin_util.h"


/* An element path ("a.b.c", '\' escapes a dot) split into names. */
typedef struct {
    const char **names; /* qualified names as written: "soap:Body" */
    size_t n;
} pt_xpath;

typedef struct {
    const pt_xpath *arrays; /* XML→JSON: these element paths are always arrays */
    size_t narrays;
    const char *root;       /* JSON→XML: the wrapping element, or NULL */
    size_t max_depth;       /* element / JSON nesting */
} pt_xj_opts;

typedef enum {
    PT_XJ_OK = 0,
    PT_XJ_INVALID,    /* not well-formed XML / not JSON */
    PT_XJ_REFUSED,    /* a DOCTYPE or entity declaration */
    PT_XJ_TOO_DEEP,   /* nesting over max_depth */
    PT_XJ_UNMAPPABLE, /* JSON that has no XML form under the mapping */
} pt_xj_result;

/* Parses path text into *out (names in arena a); false when empty or a
 * name is empty. */
bool pt_xpath_parse(pt_arena *a, const char *s, size_t n, pt_xpath *out);

/* XML in[0, len) → compact JSON appended to *out. `err` says why not. */
pt_xj_result pt_xml_to_json(const pt_xj_opts *o, const char *in, size_t len, pt_plugin_bytes *out, char *err, size_t errlen);
/* JSON in[0, len) → an XML document (with its declaration) appended to *out. */
pt_xj_result pt_json_to_xml(const pt_xj_opts *o, const char *in, size_t len, pt_plugin_bytes *out, char *err, size_t errlen);

typedef enum { PT_XJ_NONE = 0, PT_XJ_XML_TO_JSON, PT_XJ_JSON_TO_XML } pt_xj_direction;

typedef struct {
    pt_xj_direction dir[2]; /* [PT_SIDE_REQUEST], [PT_SIDE_RESPONSE] */
    pt_xj_opts opts;
    const char *xml_content_type;
    uint64_t max_body;
} pt_xml_json_conf;

extern const pt_plugin_type pt_plugin_xml_json;

#endif
