/* cors.h — private: the cors plugin's config and origin parsing, exposed
 * for unit tests. docs/transformation.md "CORS" explains the policy.
 *
 *   plugins:
 *     - cors:
 *         origins: ["https://app.example.com"]   # also "null", "*", suffix patterns scheme + "://" + "*.example.com"
 *         origin_regex: ["https://pr-[0-9]+\\.preview\\.example\\.net"]
 *         allow_credentials: true
 *         allow_methods: [GET, POST, PUT]      # default GET, HEAD, POST
 *         allow_headers: [Content-Type, Authorization]
 *         reflect_request_headers: false       # true: allow whatever a preflight asks for
 *         expose_headers: [X-Request-Id]
 *         max_age: 10m
 *
 * A preflight (OPTIONS with Origin and Access-Control-Request-Method) is
 * answered by the plugin: 204 with the Access-Control-Allow-* fields when
 * the origin, method and headers are allowed, else 403 problem+json with
 * no CORS field. Other responses get Access-Control-Allow-Origin (and
 * -Credentials, -Expose-Headers) for an allowed origin, and Vary: Origin
 * whenever the answer depends on the origin. */
#ifndef PT_PLUGINS_CORS_H
#define PT_PLUGINS_CORS_H

#include "plugins/plugin_util.h"

/* Longest Origin value looked at; longer ones are refused unparsed. */
#define PT_CORS_ORIGIN_MAX 512

/* An origin in its serialized form (RFC 6454 §6.2): lowercase scheme and
 * host, the port only when it is not the scheme's default. */
typedef struct {
    char text[PT_CORS_ORIGIN_MAX + 1]; /* "https://a.example:8443" */
    size_t len;
    size_t scheme_len; /* "https" */
    size_t host_off, host_len;
    unsigned port;     /* effective port (default filled in); 0 if the scheme has none */
} pt_cors_origin;

/* Parses "scheme://host[:port]" into its serialized form. Refused (false):
 * anything after the authority (path, '/', query), userinfo, empty or
 * trailing-dot labels, characters outside [A-Za-z0-9._-] in a name, a bad
 * IPv6 literal, a port outside 1..65535, more than PT_CORS_ORIGIN_MAX
 * bytes. Uppercase and an explicit default port are normalised. */
bool pt_cors_origin_parse(const char *s, size_t n, pt_cors_origin *out);

typedef struct {
    pt_str scheme;   /* lowercase */
    pt_str suffix;   /* ".example.com" */
    unsigned port;   /* effective */
} pt_cors_suffix;

typedef struct {
    bool any;            /* "*" */
    bool allow_null;     /* "null" listed */
    pt_str *exact;       /* serialized origins */
    size_t nexact;
    pt_cors_suffix *suffix;
    size_t nsuffix;
    pcre2_code **regex;
    size_t nregex;
    bool credentials;
    bool reflect_headers;
    const char *const *methods;
    size_t nmethods;
    const char *const *headers;
    size_t nheaders;
    pt_str methods_value;  /* "GET, HEAD, POST" */
    pt_str headers_value;  /* allow_headers joined (empty if none) */
    pt_str expose_value;   /* expose_headers joined (empty if none) */
    pt_str max_age_value;  /* seconds, empty when not configured */
} pt_cors_conf;

/* Per-request state: the decision taken once per request. */
typedef struct {
    bool decided;
    bool has_origin;     /* the request carried Origin */
    bool allowed;        /* that origin may read the response */
    bool refused;        /* a refused preflight: no CORS field at all */
    bool preflight;      /* answered by the plugin */
    pt_str origin;       /* serialized form to send back ("null" for null) */
} pt_cors_state;

/* The decision for one Origin value (configuration order does not
 * matter). `origin` receives the serialized form. */
bool pt_cors_origin_allowed(const pt_cors_conf *c, pt_str value, pt_arena *a, pt_str *origin);

extern const pt_plugin_type pt_plugin_cors;

#endif
