/* config_routes.c — the `routes:` section: match predicates (hosts, path
 * kinds and templates, methods, headers, query), upstream references,
 * strip_prefix / rewrite, per-route limits and plugins. See
 * docs/configuration.md for the schema and docs/routing.md for matching. */
#include <stddef.h>
#include <stdio.h>

#include "config/config_int.h"

#define MAX_PARAMS 16 /* the router's PT_MAX_ROUTE_PARAMS */

/* The {name} parameters of a path template (slices into the template). */
typedef struct {
    const char *name[MAX_PARAMS];
    size_t len[MAX_PARAMS];
    size_t n;
} param_set;

static bool is_ident_start(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }
static bool is_ident_char(char c) { return is_ident_start(c) || (c >= '0' && c <= '9'); }

static bool param_set_has(const param_set *ps, const char *name, size_t len)
{
    for (size_t i = 0; i < ps->n; i++)
        if (ps->len[i] == len && memcmp(ps->name[i], name, len) == 0) return true;
    return false;
}

/* Validates a path template `s` (from `node`): starts with '/', visible
 * ASCII only, no '?' or '#', and well-formed {name} parameters. A route path
 * (`segments` true) requires each {name} to be a whole segment and unique;
 * its names are collected in `ps`. A rewrite (`segments` false) may place
 * {name} anywhere; its names are checked against `known` unless NULL. */
static bool check_template(pt_conf_ctx *ctx, const pt_conf_node *node, const char *s, bool segments,
                           param_set *ps, const param_set *known, const char *what)
{
    if (s[0] != '/') {
        pt_conf_error(ctx, node, "%s must start with '/'", what);
        return false;
    }
    for (size_t i = 0; s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x21 || c > 0x7e || c == '?' || c == '#') {
            pt_conf_error(ctx, node, "%s may contain only visible ASCII characters without '?' or '#'", what);
            return false;
        }
        if (segments && c == '/' && s[i + 1] == '/') {
            pt_conf_error(ctx, node, "%s has an empty segment ('//')", what);
            return false;
        }
        if (c == '}') {
            pt_conf_error(ctx, node, "%s has an unmatched '}'", what);
            return false;
        }
        if (c != '{') continue;
        size_t start = i + 1, j = start;
        if (is_ident_start(s[j]))
            while (is_ident_char(s[j])) j++;
        if (j == start || s[j] != '}') {
            pt_conf_error(ctx, node, "%s: malformed parameter (expected {name} with name [A-Za-z_][A-Za-z0-9_]*)",
                          what);
            return false;
        }
        size_t len = j - start;
        if (segments) {
            if (s[i - 1] != '/' || (s[j + 1] != '/' && s[j + 1] != '\0')) {
                pt_conf_error(ctx, node, "%s: a parameter must be a whole segment, like /users/{id}", what);
                return false;
            }
            if (param_set_has(ps, s + start, len)) {
                pt_conf_error(ctx, node, "%s: parameter '%.*s' appears twice", what, (int)len, s + start);
                return false;
            }
            if (ps->n == MAX_PARAMS) {
                pt_conf_error(ctx, node, "%s: too many parameters (max %d)", what, MAX_PARAMS);
                return false;
            }
            ps->name[ps->n] = s + start;
            ps->len[ps->n++] = len;
        } else if (known && !param_set_has(known, s + start, len)) {
            pt_conf_error(ctx, node, "%s uses '{%.*s}', which the route path does not define", what, (int)len,
                          s + start);
            return false;
        }
        i = j;
    }
    return true;
}

/* Reads one host pattern: letters, digits, '-', '_', '.', optionally led by
 * "*." (a wildcard for any subdomain). Returned lowercased, in the arena. */
static char *conf_host(pt_conf_ctx *ctx, const pt_conf_node *n)
{
    char *s;
    if (!pt_conf_string(ctx, n, &s)) return NULL;
    const char *body = s;
    if (s[0] == '*' && s[1] == '.') body = s + 2;
    bool ok = *body != '\0' && *body != '.';
    for (const char *p = body; *p && ok; p++) {
        char c = *p;
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
             c == '.';
    }
    if (!ok) {
        pt_conf_error(ctx, n, "invalid host '%s' (expected a name like api.example.com; a wildcard only as a "
                              "leading '*.'; no port)", s);
        return NULL;
    }
    size_t len = strlen(s);
    char *low = pt_arena_strndup(ctx->arena, s, len);
    for (size_t i = 0; i < len; i++)
        if (low[i] >= 'A' && low[i] <= 'Z') low[i] = (char)(low[i] + 32);
    return low;
}

static void conf_hosts(pt_conf_ctx *ctx, const pt_conf_node *match, pt_route_conf *r)
{
    const pt_conf_node *host = pt_conf_opt(match, "host"), *hosts = pt_conf_opt(match, "hosts");
    if (host && hosts) {
        pt_conf_error(ctx, hosts, "use either 'host' or 'hosts' in a route match, not both");
        return;
    }
    if (host) {
        char *h = conf_host(ctx, host);
        if (!h) return;
        r->hosts = pt_arena_alloc(ctx->arena, sizeof(*r->hosts));
        r->hosts[0] = h;
        r->nhosts = 1;
    } else if (hosts) {
        if (hosts->kind != PT_NODE_SEQ || hosts->n == 0) {
            pt_conf_error(ctx, hosts, "hosts must be a non-empty list of host names");
            return;
        }
        r->hosts = pt_arena_alloc(ctx->arena, hosts->n * sizeof(*r->hosts));
        for (size_t i = 0; i < hosts->n; i++) {
            char *h = conf_host(ctx, hosts->vals[i]);
            if (h) r->hosts[r->nhosts++] = h;
        }
    }
}

static const char *const method_list = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE, CONNECT";

static void conf_methods(pt_conf_ctx *ctx, const pt_conf_node *n, pt_route_conf *r)
{
    if (!n) return;
    if (n->kind != PT_NODE_SEQ || n->n == 0) {
        pt_conf_error(ctx, n, "methods must be a non-empty list, e.g. [GET, POST]");
        return;
    }
    for (size_t i = 0; i < n->n; i++) {
        char *m;
        if (!pt_conf_string(ctx, n->vals[i], &m)) continue;
        bool lower = false;
        for (const char *p = m; *p; p++) lower |= (*p >= 'a' && *p <= 'z');
        if (lower) {
            pt_conf_error(ctx, n->vals[i], "method '%s' must be uppercase", m);
            continue;
        }
        pt_method id = pt_method_from_str(pt_str_c(m));
        if (id == PT_METHOD_OTHER) {
            pt_conf_error(ctx, n->vals[i], "unknown method '%s' (expected one of: %s)", m, method_list);
            continue;
        }
        r->methods |= PT_METHOD_BIT(id);
    }
}

static bool is_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Reads a {name: value-or-null} map of predicates. Header names must be
 * tokens (RFC 9110); query names any non-empty text. */
static void conf_kv(pt_conf_ctx *ctx, const pt_conf_node *n, bool header_names, pt_kv_match **out, size_t *nout,
                    const char *what)
{
    if (!n) return;
    if (n->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, n, "%s must be a mapping of name -> value (~ = must be present)", what);
        return;
    }
    *out = pt_arena_calloc(ctx->arena, (n->n ? n->n : 1) * sizeof(**out));
    for (size_t i = 0; i < n->n; i++) {
        const pt_conf_node *k = n->keys[i], *v = n->vals[i];
        bool ok = k->scalar_len > 0;
        for (const char *p = k->scalar; ok && header_names && *p; p++) ok = is_tchar(*p);
        if (!ok) {
            pt_conf_error(ctx, k, "invalid %s name '%s'", header_names ? "header" : "query parameter", k->scalar);
            continue;
        }
        char *value = NULL;
        if (v->kind != PT_NODE_NULL && !pt_conf_string(ctx, v, &value)) continue;
        (*out)[(*nout)++] = (pt_kv_match){.name = k->scalar, .value = value};
    }
}

/* Reads the path predicate: at most one of path / path_prefix / path_regex. */
static void conf_path(pt_conf_ctx *ctx, const pt_conf_node *match, pt_route_conf *r, param_set *ps)
{
    static const struct { const char *key; pt_path_kind kind; } kinds[] = {
        {"path", PT_PATH_EXACT}, {"path_prefix", PT_PATH_PREFIX}, {"path_regex", PT_PATH_REGEX},
    };
    const pt_conf_node *chosen = NULL;
    const char *chosen_key = NULL;
    for (size_t i = 0; i < PT_ARRAY_LEN(kinds); i++) {
        const pt_conf_node *n = pt_conf_opt(match, kinds[i].key);
        if (!n) continue;
        if (chosen) {
            pt_conf_error(ctx, n, "'%s' cannot be combined with '%s' (use exactly one of path, path_prefix, "
                                  "path_regex)", kinds[i].key, chosen_key);
            continue;
        }
        chosen = n;
        chosen_key = kinds[i].key;
        char *s;
        if (!pt_conf_string(ctx, n, &s)) continue;
        if (kinds[i].kind == PT_PATH_REGEX) {
            if (!*s) {
                pt_conf_error(ctx, n, "path_regex must not be empty");
                continue;
            }
        } else if (!check_template(ctx, n, s, true, ps, NULL, kinds[i].key)) {
            continue;
        }
        r->path_kind = kinds[i].kind;
        r->path = s;
    }
}

static void conf_match(pt_conf_ctx *ctx, const pt_conf_node *match, pt_route_conf *r, param_set *ps)
{
    static const char *const keys[] = {"host", "hosts", "path", "path_prefix", "path_regex",
                                       "methods", "headers", "query", NULL};
    if (!match || !pt_conf_check_keys(ctx, match, keys, "route match")) return;
    conf_hosts(ctx, match, r);
    conf_path(ctx, match, r, ps);
    conf_methods(ctx, pt_conf_opt(match, "methods"), r);
    conf_kv(ctx, pt_conf_opt(match, "headers"), true, &r->headers, &r->nheaders, "match.headers");
    conf_kv(ctx, pt_conf_opt(match, "query"), false, &r->query, &r->nquery, "match.query");
}

static pt_upstream_conf *find_upstream(pt_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nupstreams; i++)
        if (strcmp(cfg->upstreams[i].name, name) == 0) return &cfg->upstreams[i];
    return NULL;
}

static void conf_route_upstream(pt_conf_ctx *ctx, const pt_conf_node *n, pt_config *cfg, pt_route_conf *r)
{
    char *name;
    if (!n || !pt_conf_string(ctx, n, &name)) return;
    r->upstream = find_upstream(cfg, name);
    if (r->upstream) return;
    char list[512];
    size_t used = 0;
    list[0] = '\0';
    for (size_t i = 0; i < cfg->nupstreams && used < sizeof(list); i++)
        used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s", i ? ", " : "", cfg->upstreams[i].name);
    pt_conf_error(ctx, n, "unknown upstream '%s' (defined upstreams: %s)", name, used ? list : "none");
}

/* strip_prefix, rewrite and max_body_size, which depend on the match. */
static void conf_route_transform(pt_conf_ctx *ctx, const pt_conf_node *rn, pt_config *cfg, pt_route_conf *r,
                                 const param_set *ps)
{
    const pt_conf_node *strip = pt_conf_opt(rn, "strip_prefix");
    if (strip && pt_conf_bool(ctx, strip, &r->strip_prefix) && r->strip_prefix && r->path_kind != PT_PATH_PREFIX)
        pt_conf_error(ctx, strip, "strip_prefix requires match.path_prefix");
    const pt_conf_node *rw = pt_conf_opt(rn, "rewrite");
    char *s;
    if (rw && pt_conf_string(ctx, rw, &s)) {
        if (r->strip_prefix) {
            pt_conf_error(ctx, rw, "rewrite cannot be combined with strip_prefix");
        } else if (check_template(ctx, rw, s, false, NULL, r->path_kind == PT_PATH_REGEX ? NULL : ps, "rewrite")) {
            r->rewrite = s;
        }
    }
    /* Stored resolved: the global limit unless overridden. An explicit 0
     * (unlimited) under a non-zero global limit is stored as UINT64_MAX, so
     * that 0 keeps meaning "the global limit" for consumers. */
    r->max_body_size = cfg->limits.max_body_size;
    const pt_conf_node *mb = pt_conf_opt(rn, "max_body_size");
    uint64_t v;
    if (mb && pt_conf_size(ctx, mb, &v)) r->max_body_size = v ? v : (cfg->limits.max_body_size ? UINT64_MAX : 0);
    r->max_buffered_body = cfg->limits.max_buffered_body;
    const pt_conf_node *mbb = pt_conf_opt(rn, "max_buffered_body");
    if (mbb && pt_conf_size(ctx, mbb, &v)) r->max_buffered_body = v;
    /* slow-body limits (e.g. long-lived gRPC client streams need more) */
    r->body_timeout_ms = cfg->timeouts.body_ms;
    r->min_body_rate = cfg->limits.min_body_rate;
    const pt_conf_node *bt = pt_conf_opt(rn, "body_timeout");
    if (bt && pt_conf_duration_ms(ctx, bt, &v)) {
        if (v == 0) pt_conf_error(ctx, bt, "body_timeout must be greater than 0");
        else r->body_timeout_ms = v;
    }
    const pt_conf_node *mr = pt_conf_opt(rn, "min_body_rate");
    if (mr) pt_conf_size(ctx, mr, &r->min_body_rate);
}

/* Tunnels (docs/websocket.md): `upgrade` lists the Upgrade protocols the
 * route tunnels (default [websocket], [] none; never h2c), and
 * `tunnel_idle_timeout` overrides timeouts.tunnel_idle. */
static void conf_route_tunnel(pt_conf_ctx *ctx, const pt_conf_node *rn, pt_route_conf *r)
{
    const pt_conf_node *n = pt_conf_opt(rn, "upgrade");
    if (n && n->kind != PT_NODE_SEQ) {
        pt_conf_error(ctx, n, "upgrade must be a list of protocols, e.g. [websocket]");
    } else if (n) {
        r->upgrade = pt_arena_calloc(ctx->arena, (n->n ? n->n : 1) * sizeof(*r->upgrade));
        for (size_t i = 0; i < n->n; i++) {
            char *p;
            if (!pt_conf_string(ctx, n->vals[i], &p)) continue;
            bool ok = *p && *p != '/';
            for (const char *q = p; ok && *q; q++) ok = is_tchar(*q) || (*q == '/' && q[1]);
            if (!ok) {
                pt_conf_error(ctx, n->vals[i], "'%s' is not a protocol name (token[/version])", p);
            } else if (pt_str_ieq_lit(pt_str_c(p), "h2c")) {
                pt_conf_error(ctx, n->vals[i], "h2c is never tunnelled (h2c upgrades smuggle requests past the gateway)");
            } else {
                r->upgrade[r->nupgrade++] = p;
            }
        }
    }
    const pt_conf_node *it = pt_conf_opt(rn, "tunnel_idle_timeout");
    uint64_t v;
    if (it && pt_conf_duration_ms(ctx, it, &v)) {
        if (v == 0) pt_conf_error(ctx, it, "tunnel_idle_timeout must be greater than 0");
        else r->tunnel_idle_timeout_ms = v;
    }
}

/* One path rule class: its config key, its field, and whether the
 * resolving mode exists and is spelled "decode" or "strip". */
static const struct {
    const char *key;
    size_t off;
    const char *resolve; /* "decode", "strip" or NULL (reject | keep only) */
} path_rule_keys[] = {
    {"encoded_slash", offsetof(pt_path_rules, encoded_slash), "decode"},
    {"backslash", offsetof(pt_path_rules, backslash), "decode"},
    {"semicolon", offsetof(pt_path_rules, semicolon), "strip"},
    {"double_encoding", offsetof(pt_path_rules, double_encoding), NULL},
    {"encoded_control", offsetof(pt_path_rules, encoded_control), NULL},
    {"invalid_utf8", offsetof(pt_path_rules, invalid_utf8), NULL},
    {"trailing_dot_space", offsetof(pt_path_rules, trailing_dot_space), "strip"},
};

void pt_conf_path_rules(pt_conf_ctx *ctx, const pt_conf_node *node, pt_path_rules *rules)
{
    static const char *const keys[] = {"encoded_slash", "backslash", "semicolon", "double_encoding",
                                       "encoded_control", "invalid_utf8", "trailing_dot_space", NULL};
    if (!node) return;
    if (node->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, node, "path_rules must be a mapping of class -> reject | decode | strip | keep");
        return;
    }
    if (!pt_conf_check_keys(ctx, node, keys, "path_rules")) return;
    for (size_t i = 0; i < PT_ARRAY_LEN(path_rule_keys); i++) {
        const pt_conf_node *n = pt_conf_opt(node, path_rule_keys[i].key);
        char *v;
        if (!n || !pt_conf_string(ctx, n, &v)) continue;
        const char *res = path_rule_keys[i].resolve;
        uint8_t *field = (uint8_t *)rules + path_rule_keys[i].off;
        if (strcmp(v, "reject") == 0) *field = PT_PATHRULE_REJECT;
        else if (strcmp(v, "keep") == 0) *field = PT_PATHRULE_KEEP;
        else if (res && strcmp(v, res) == 0) *field = PT_PATHRULE_DECODE;
        else if (res)
            pt_conf_error(ctx, n, "path_rules.%s: expected reject, %s or keep, got '%s'", path_rule_keys[i].key, res, v);
        else
            pt_conf_error(ctx, n, "path_rules.%s: expected reject or keep, got '%s'", path_rule_keys[i].key, v);
    }
}

/* `auth: {mode: any|all, anonymous: CONSUMER}` (docs/authentication.md):
 * how the route's authentication plugins combine, and the consumer an
 * unauthenticated request goes on as. Consumers are loaded before routes. */
static void conf_route_auth(pt_conf_ctx *ctx, const pt_conf_node *n, const pt_config *cfg, pt_route_conf *r)
{
    static const char *const keys[] = {"mode", "anonymous", NULL};
    if (!n || !pt_conf_check_keys(ctx, n, keys, "route auth")) return;
    const pt_conf_node *m = pt_conf_opt(n, "mode");
    if (m) {
        if (m->kind == PT_NODE_SCALAR && !strcmp(m->scalar, "any")) r->auth.mode = PT_AUTH_ANY;
        else if (m->kind == PT_NODE_SCALAR && !strcmp(m->scalar, "all")) r->auth.mode = PT_AUTH_ALL;
        else pt_conf_error(ctx, m, "auth.mode must be any (the first method that finds a credential decides) or all");
    }
    const pt_conf_node *an = pt_conf_opt(n, "anonymous");
    char *name;
    if (an && pt_conf_string(ctx, an, &name)) {
        r->auth.anonymous = pt_consumer_find(&cfg->consumers, pt_str_c(name));
        if (!r->auth.anonymous) pt_conf_error(ctx, an, "auth.anonymous: no consumer named \"%s\"", name);
        else if (r->auth.mode == PT_AUTH_ALL)
            pt_conf_error(ctx, an, "auth.anonymous cannot be combined with mode: all (all methods must pass)");
    }
}

/* `retries` over the upstream's policy (config_retry.c) and `timeout`, the
 * route's deadline from arrival to the response head. */
static void conf_route_retries(pt_conf_ctx *ctx, const pt_conf_node *rn, pt_route_conf *r)
{
    const pt_conf_node *n = pt_conf_opt(rn, "retries");
    if (r->upstream) r->retry = r->upstream->retry;
    if (n && !pt_conf_opt(rn, "upstream")) pt_conf_error(ctx, n, "retries needs the route's upstream");
    else pt_conf_retries(ctx, n, &r->retry, NULL);
    const pt_conf_node *to = pt_conf_opt(rn, "timeout");
    uint64_t v;
    if (to && pt_conf_duration_ms(ctx, to, &v)) {
        if (v == 0) pt_conf_error(ctx, to, "timeout must be greater than 0");
        else r->timeout_ms = v;
    }
}

void pt_conf_routes(pt_conf_ctx *ctx, const pt_conf_node *node, pt_config *cfg)
{
    if (!node) return;
    if (node->kind != PT_NODE_SEQ) {
        pt_conf_error(ctx, node, "routes must be a list of routes");
        return;
    }
    static const char *const keys[] = {"name", "match", "upstream", "strip_prefix", "rewrite",
                                       "max_body_size", "body_timeout", "min_body_rate", "max_buffered_body",
                                       "plugins", "upgrade", "tunnel_idle_timeout", "path_rules", "auth", "retries",
                                       "timeout", NULL};
    cfg->routes = pt_arena_calloc(ctx->arena, (node->n ? node->n : 1) * sizeof(*cfg->routes));
    for (size_t i = 0; i < node->n; i++) {
        const pt_conf_node *rn = node->vals[i];
        pt_route_conf *r = &cfg->routes[cfg->nroutes];
        *r = (pt_route_conf){.index = (int)cfg->nroutes, .line = rn->line};
        if (!pt_conf_check_keys(ctx, rn, keys, "route")) continue;
        cfg->nroutes++;
        const pt_conf_node *name = pt_conf_opt(rn, "name");
        if (name && pt_conf_string(ctx, name, &r->name)) {
            if (!*r->name) pt_conf_error(ctx, name, "route name must not be empty");
            for (size_t j = 0; j < cfg->nroutes - 1; j++)
                if (strcmp(cfg->routes[j].name, r->name) == 0)
                    pt_conf_error(ctx, name, "duplicate route name '%s' (also at line %d)", r->name,
                                  cfg->routes[j].line);
        }
        if (!r->name) r->name = pt_arena_printf(ctx->arena, "route#%d", r->index);
        param_set ps = {.n = 0};
        conf_match(ctx, pt_conf_opt(rn, "match"), r, &ps);
        conf_route_upstream(ctx, pt_conf_opt(rn, "upstream"), cfg, r);
        conf_route_transform(ctx, rn, cfg, r, &ps);
        conf_route_tunnel(ctx, rn, r);
        r->path_rules = cfg->path_rules;
        pt_conf_path_rules(ctx, pt_conf_opt(rn, "path_rules"), &r->path_rules);
        conf_route_auth(ctx, pt_conf_opt(rn, "auth"), cfg, r);
        conf_route_retries(ctx, rn, r);
        const pt_conf_node *plugins = pt_conf_get(rn, "plugins");
        ctx->scope = pt_arena_printf(ctx->arena, "route:%s", r->name);
        pt_conf_plugin_list(ctx, plugins, &r->plugins, "route plugins");
        ctx->scope = NULL;
        if (!pt_conf_opt(rn, "upstream") && (!plugins || plugins->kind != PT_NODE_SEQ || plugins->n == 0))
            pt_conf_error(ctx, rn, "route has neither upstream nor plugins");
    }
}
