/* deprecation.h — private: the deprecation plugin's config and date
 * parser, exposed for unit tests. docs/transformation.md "Versioning".
 *
 *   plugins:
 *     - deprecation:
 *         deprecated: 2025-06-30              # or 2025-06-30T12:00:00Z, +02:00 offsets, @1751241600
 *         sunset: 2026-01-01T00:00:00Z
 *         link: https://developer.example.com/v1-deprecation     # rel="deprecation"
 *         sunset_link: https://developer.example.com/v1-sunset   # rel="sunset"
 *
 * Every response of the route (proxied or local) gets Deprecation
 * (RFC 9745: "@<unix seconds>"), Sunset (RFC 8594: an IMF-fixdate) and one
 * Link field per configured link; an upstream's own Deprecation / Sunset
 * are replaced, its Link fields kept. */
#ifndef PT_PLUGINS_DEPRECATION_H
#define PT_PLUGINS_DEPRECATION_H

#include "plugins/plugin_util.h"

typedef struct {
    pt_str deprecation; /* "@1751241600", empty when not configured */
    pt_str sunset;      /* "Thu, 01 Jan 2026 00:00:00 GMT", empty when not configured */
    pt_str link;        /* '<url>; rel="deprecation"', empty when not configured */
    pt_str sunset_link; /* '<url>; rel="sunset"' */
} pt_deprecation_conf;

/* Parses a date given as "@<seconds>", "YYYY-MM-DD" (midnight UTC) or
 * RFC 3339 "YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)" into seconds since
 * the epoch. Years 1970..9999; days checked against the month (leap years
 * included). False when malformed. */
bool pt_deprecation_parse_date(const char *s, int64_t *out);

/* Writes `t` as an IMF-fixdate (RFC 9110 §5.6.7) into buf (30 bytes). */
void pt_deprecation_http_date(int64_t t, char buf[30]);

extern const pt_plugin_type pt_plugin_deprecation;

#endif
