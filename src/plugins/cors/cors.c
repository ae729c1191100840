/* cors.c — Cross-Origin Resource Sharing (WHATWG Fetch "CORS protocol"):
 * preflights answered locally, Access-Control-* fields on the other
 * responses of an allowed origin, Vary: Origin. Origins are compared in
 * their serialized form; the configuration is checked so that credentials
 * never go with "*", "null" or anything but the configured origins. */
#include "plugins/cors/cors.h"

#include <stdio.h>

static char lower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c; }

static unsigned default_port(pt_str scheme)
{
    if (pt_str_eq_lit(scheme, "https") || pt_str_eq_lit(scheme, "wss")) return 443;
    if (pt_str_eq_lit(scheme, "http") || pt_str_eq_lit(scheme, "ws")) return 80;
    return 0;
}

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
}

bool pt_cors_origin_parse(const char *s, size_t n, pt_cors_origin *o)
{
    memset(o, 0, sizeof(*o));
    if (n == 0 || n > PT_CORS_ORIGIN_MAX) return false;
    char *t = o->text;
    size_t i = 0, w = 0;
    /* scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) */
    for (; i < n && s[i] != ':'; i++) {
        char c = lower(s[i]);
        bool ok = (c >= 'a' && c <= 'z') || (i > 0 && ((c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.'));
        if (!ok) return false;
        t[w++] = c;
    }
    if (i == 0 || n - i < 3 || memcmp(s + i, "://", 3) != 0) return false;
    o->scheme_len = w;
    memcpy(t + w, "://", 3);
    w += 3;
    i += 3;
    o->host_off = w;
    if (i < n && s[i] == '[') { /* IPv6 literal */
        t[w++] = s[i++];
        size_t start = w;
        for (; i < n && s[i] != ']'; i++) {
            char c = lower(s[i]);
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || c == ':' || c == '.')) return false;
            t[w++] = c;
        }
        if (i == n || w == start) return false;
        t[w++] = s[i++];
    } else {
        size_t label = 0;
        for (; i < n && s[i] != ':'; i++) {
            char c = lower(s[i]);
            if (!name_char(c)) return false; /* '@' (userinfo), '/', '%', spaces... */
            if (c == '.') {
                if (label == 0) return false; /* leading dot or ".." */
                label = 0;
            } else {
                label++;
            }
            t[w++] = c;
        }
        if (w == o->host_off || label == 0) return false; /* empty host, trailing dot */
    }
    o->host_len = w - o->host_off;
    pt_str scheme = pt_str_make(t, o->scheme_len);
    unsigned dflt = default_port(scheme);
    o->port = dflt;
    if (i < n) {
        if (s[i] != ':' || ++i == n) return false;
        unsigned long port = 0;
        for (; i < n; i++) {
            if (s[i] < '0' || s[i] > '9' || port > 65535) return false;
            port = port * 10 + (unsigned)(s[i] - '0');
        }
        if (port == 0 || port > 65535) return false;
        o->port = (unsigned)port;
        if (port != dflt) w += (size_t)snprintf(t + w, sizeof(o->text) - w, ":%lu", port);
    }
    t[w] = '\0';
    o->len = w;
    return true;
}

static bool host_has_suffix(const pt_cors_origin *o, pt_str suffix)
{
    /* at least one label before the suffix: "example.com" is not "*.example.com" */
    if (o->host_len <= suffix.n) return false;
    return memcmp(o->text + o->host_off + o->host_len - suffix.n, suffix.p, suffix.n) == 0;
}

bool pt_cors_origin_allowed(const pt_cors_conf *c, pt_str value, pt_arena *a, pt_str *origin)
{
    *origin = PT_STR_NULL;
    if (pt_str_eq_lit(value, "null")) { /* sandboxed documents, file:, redirects */
        *origin = PT_STR_LIT("null");
        return c->allow_null || c->any;
    }
    pt_cors_origin o;
    if (!pt_cors_origin_parse(value.p, value.n, &o)) return false;
    pt_str ser = pt_str_make(o.text, o.len);
    bool ok = c->any;
    for (size_t i = 0; !ok && i < c->nexact; i++) ok = pt_str_eq(c->exact[i], ser);
    for (size_t i = 0; !ok && i < c->nsuffix; i++) {
        const pt_cors_suffix *sf = &c->suffix[i];
        ok = pt_str_eq(sf->scheme, pt_str_make(o.text, o.scheme_len)) && sf->port == o.port &&
             o.text[o.host_off] != '[' && host_has_suffix(&o, sf->suffix);
    }
    for (size_t i = 0; !ok && i < c->nregex; i++) ok = pt_plugin_regex_match(a, c->regex[i], ser) != NULL;
    if (ok) *origin = pt_arena_str(a, ser);
    return ok;
}

/* ---- configuration ---- */

/* One `origins` entry: "*", "null", a suffix pattern (scheme, "://", "*.domain", optional port) or an origin. */
static bool read_origin(pt_conf_ctx *ctx, const pt_conf_node *n, pt_cors_conf *c)
{
    const char *s = n->scalar;
    if (strcmp(s, "*") == 0) {
        c->any = true;
        return true;
    }
    if (strcmp(s, "null") == 0) {
        c->allow_null = true;
        return true;
    }
    if (s[0] == '*') {
        pt_conf_error(ctx, n, "cors: origin pattern \"%s\" needs a scheme, e.g. \"https://%s\"", s, s);
        return false;
    }
    const char *star = strstr(s, "://*.");
    pt_cors_origin o;
    if (star) {
        /* parse the origin without "*." to validate and normalise the rest */
        char *rest = pt_arena_printf(ctx->arena, "%.*s://%s", (int)(star - s), s, star + 5);
        if (!pt_cors_origin_parse(rest, strlen(rest), &o) || o.text[o.host_off] == '[' ||
            !memchr(o.text + o.host_off, '.', o.host_len)) {
            pt_conf_error(ctx, n,
                          "cors: invalid origin pattern \"%s\" (expected scheme://*.domain.tld[:port], the "
                          "domain with at least two labels)",
                          s);
            return false;
        }
        pt_cors_suffix *sf = &c->suffix[c->nsuffix++];
        sf->scheme = pt_arena_str(ctx->arena, pt_str_make(o.text, o.scheme_len));
        char *suf = pt_arena_printf(ctx->arena, ".%.*s", (int)o.host_len, o.text + o.host_off);
        sf->suffix = pt_str_c(suf);
        sf->port = o.port;
        return true;
    }
    if (strchr(s, '*') || !pt_cors_origin_parse(s, n->scalar_len, &o)) {
        pt_conf_error(ctx, n,
                      "cors: invalid origin \"%s\" (expected scheme://host[:port] with nothing after it, "
                      "scheme://*.domain, \"null\" or \"*\")",
                      s);
        return false;
    }
    c->exact[c->nexact++] = pt_arena_str(ctx->arena, pt_str_make(o.text, o.len));
    return true;
}

/* Reads a list of tokens (methods or header names) and joins them with ", ". */
static bool read_tokens(pt_conf_ctx *ctx, const pt_conf_node *n, const char *what, bool credentials,
                        const char *const **out, size_t *nout, pt_str *joined)
{
    if (!pt_plugin_string_list(ctx, n, "cors", what, false, out, nout)) return false;
    size_t total = 0;
    for (size_t i = 0; i < *nout; i++) {
        const char *t = (*out)[i];
        if (strcmp(t, "*") == 0 && credentials) {
            pt_conf_error(ctx, n, "cors: '%s' cannot be \"*\" with allow_credentials (browsers take it literally)",
                          what);
            return false;
        }
        if (strcmp(t, "*") != 0 && !pt_plugin_header_name_ok(t, strlen(t))) {
            pt_conf_error(ctx, n, "cors: '%s': \"%s\" is not a valid token", what, t);
            return false;
        }
        total += strlen(t) + 2;
    }
    char *j = pt_arena_alloc(ctx->arena, total + 1);
    size_t w = 0;
    for (size_t i = 0; i < *nout; i++) w += (size_t)sprintf(j + w, "%s%s", i ? ", " : "", (*out)[i]);
    j[w] = '\0';
    *joined = pt_str_make(j, w);
    return true;
}

static void *cors_configure(pt_conf_ctx *ctx, const pt_conf_node *node)
{
    static const char *const allowed[] = {"origins",        "origin_regex",   "allow_credentials",
                                          "allow_methods",  "allow_headers",  "reflect_request_headers",
                                          "expose_headers", "max_age",        NULL};
    if (!node || node->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, node, "cors: expected a mapping with 'origins' and/or 'origin_regex'");
        return NULL;
    }
    if (!pt_conf_check_keys(ctx, node, allowed, "cors")) return NULL;
    pt_cors_conf *c = pt_arena_calloc(ctx->arena, sizeof(*c));
    const pt_conf_node *cr = pt_conf_get(node, "allow_credentials");
    if (cr && !pt_conf_bool(ctx, cr, &c->credentials)) return NULL;
    const pt_conf_node *rf = pt_conf_get(node, "reflect_request_headers");
    if (rf && !pt_conf_bool(ctx, rf, &c->reflect_headers)) return NULL;

    const char *const *list;
    size_t n;
    const pt_conf_node *on = pt_conf_get(node, "origins");
    if (!pt_plugin_string_list(ctx, on, "cors", "origins", false, &list, &n)) return NULL;
    c->exact = pt_arena_calloc(ctx->arena, (n ? n : 1) * sizeof(*c->exact));
    c->suffix = pt_arena_calloc(ctx->arena, (n ? n : 1) * sizeof(*c->suffix));
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        const pt_conf_node *it = on->kind == PT_NODE_SEQ ? on->vals[i] : on;
        ok = read_origin(ctx, it, c) && ok;
    }
    const pt_conf_node *rn = pt_conf_get(node, "origin_regex");
    if (!pt_plugin_string_list(ctx, rn, "cors", "origin_regex", false, &list, &n)) return NULL;
    c->regex = pt_arena_calloc(ctx->arena, (n ? n : 1) * sizeof(*c->regex));
    for (size_t i = 0; i < n; i++) {
        const pt_conf_node *it = rn->kind == PT_NODE_SEQ ? rn->vals[i] : rn;
        pcre2_code *re = pt_plugin_regex_compile(ctx, it, "cors: origin_regex", list[i], 0);
        if (re) c->regex[c->nregex++] = re;
        else ok = false;
    }
    if (!ok) return NULL;
    if (!c->any && !c->allow_null && !c->nexact && !c->nsuffix && !c->nregex) {
        pt_conf_error(ctx, node, "cors: no origin allowed (set 'origins' and/or 'origin_regex')");
        return NULL;
    }
    if (c->credentials && c->any) {
        pt_conf_error(ctx, on, "cors: origins \"*\" with allow_credentials would let every site read "
                               "credentialed responses; list the origins instead");
        return NULL;
    }
    if (c->credentials && c->allow_null) {
        pt_conf_error(ctx, on, "cors: origin \"null\" with allow_credentials would let any sandboxed page "
                               "read credentialed responses; remove one of them");
        return NULL;
    }
    if (c->reflect_headers && pt_conf_get(node, "allow_headers")) {
        pt_conf_error(ctx, rf, "cors: set either 'allow_headers' or 'reflect_request_headers', not both");
        return NULL;
    }

    const pt_conf_node *mn = pt_conf_get(node, "allow_methods");
    if (mn) {
        if (!read_tokens(ctx, mn, "allow_methods", c->credentials, &c->methods, &c->nmethods, &c->methods_value))
            return NULL;
    } else {
        static const char *const dflt[] = {"GET", "HEAD", "POST"};
        c->methods = dflt;
        c->nmethods = PT_ARRAY_LEN(dflt);
        c->methods_value = PT_STR_LIT("GET, HEAD, POST");
    }
    if (!read_tokens(ctx, pt_conf_get(node, "allow_headers"), "allow_headers", c->credentials, &c->headers,
                     &c->nheaders, &c->headers_value))
        return NULL;
    const char *const *expose;
    size_t nexpose;
    if (!read_tokens(ctx, pt_conf_get(node, "expose_headers"), "expose_headers", c->credentials, &expose,
                     &nexpose, &c->expose_value))
        return NULL;
    const pt_conf_node *ma = pt_conf_get(node, "max_age");
    if (ma) {
        uint64_t ms;
        if (!pt_conf_duration_ms(ctx, ma, &ms)) return NULL;
        if (ms > 86400000ull) {
            pt_conf_error(ctx, ma, "cors: 'max_age' is at most 24h (browsers cap it lower anyway)");
            return NULL;
        }
        c->max_age_value = pt_str_c(pt_arena_printf(ctx->arena, "%llu", (unsigned long long)(ms / 1000)));
    }
    return c;
}

/* ---- request path ---- */

static bool list_has(const char *const *v, size_t n, pt_str tok, bool case_insensitive)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v[i], "*") == 0) return true;
        if (case_insensitive ? pt_str_ieq(pt_str_c(v[i]), tok) : pt_str_eq(pt_str_c(v[i]), tok)) return true;
    }
    return false;
}

/* Takes the decision once: whether the request's single Origin is allowed. */
static void decide(pt_txn *txn, const pt_cors_conf *c, pt_cors_state *st)
{
    if (st->decided) return;
    st->decided = true;
    pt_request *req = pt_txn_request(txn);
    if (!req) return;
    const pt_str *origin = NULL;
    unsigned count = 0;
    for (uint32_t i = 0; i < req->headers.n; i++)
        if (pt_str_ieq_lit(req->headers.v[i].name, "Origin")) {
            origin = &req->headers.v[i].value;
            count++;
        }
    st->has_origin = count > 0;
    /* Browsers send one Origin; two are a forgery or a confused proxy. */
    if (count == 1) st->allowed = pt_cors_origin_allowed(c, *origin, pt_txn_arena(txn), &st->origin);
}

static pt_plugin_result refuse_preflight(pt_txn *txn, pt_cors_state *st, const char *detail)
{
    st->refused = true;
    pt_txn_respond_problem(txn, 403, detail);
    return PT_PLUGIN_RESPOND;
}

static pt_plugin_result cors_on_request_headers(pt_txn *txn, const void *conf, void *state)
{
    const pt_cors_conf *c = conf;
    pt_cors_state *st = state;
    decide(txn, c, st);
    pt_request *req = pt_txn_request(txn);
    const pt_str *acrm = pt_headers_get(&req->headers, "Access-Control-Request-Method");
    if (req->method != PT_METHOD_OPTIONS || !st->has_origin || !acrm) return PT_PLUGIN_CONTINUE;

    /* A preflight: Portico answers it, nothing goes upstream. */
    st->preflight = true;
    if (!st->allowed) return refuse_preflight(txn, st, "CORS preflight refused: the origin is not allowed");
    if (!list_has(c->methods, c->nmethods, *acrm, false))
        return refuse_preflight(txn, st, "CORS preflight refused: the requested method is not allowed");
    const pt_str *acrh = pt_headers_get(&req->headers, "Access-Control-Request-Headers");
    pt_str rest = acrh ? *acrh : PT_STR_NULL, tok;
    while (pt_list_next(&rest, &tok)) {
        if (!pt_plugin_header_name_ok(tok.p, tok.n))
            return refuse_preflight(txn, st, "CORS preflight refused: invalid Access-Control-Request-Headers");
        if (!c->reflect_headers && !list_has(c->headers, c->nheaders, tok, true))
            return refuse_preflight(txn, st, "CORS preflight refused: a requested header is not allowed");
    }
    pt_txn_respond(txn, 204, PT_STR_NULL, PT_STR_NULL);
    pt_txn_respond_header(txn, PT_STR_LIT("Access-Control-Allow-Methods"), c->methods_value);
    if (c->reflect_headers && acrh && acrh->n)
        pt_txn_respond_header(txn, PT_STR_LIT("Access-Control-Allow-Headers"), *acrh);
    else if (c->headers_value.n)
        pt_txn_respond_header(txn, PT_STR_LIT("Access-Control-Allow-Headers"), c->headers_value);
    if (c->max_age_value.n) pt_txn_respond_header(txn, PT_STR_LIT("Access-Control-Max-Age"), c->max_age_value);
    return PT_PLUGIN_RESPOND;
}

/* Adds `token` to the response's Vary unless it (or "*") is there: appended
 * to the last Vary field, never a second copy. */
static void vary_add(pt_headers *h, pt_arena *a, const char *token)
{
    pt_header *last = NULL;
    for (uint32_t i = 0; i < h->n; i++) {
        if (!pt_str_ieq_lit(h->v[i].name, "Vary")) continue;
        last = &h->v[i];
        pt_str rest = h->v[i].value, tok;
        while (pt_list_next(&rest, &tok))
            if (pt_str_eq_lit(tok, "*") || pt_str_ieq_lit(tok, token)) return;
    }
    if (!last) {
        pt_headers_add(h, a, PT_STR_LIT("Vary"), pt_str_c(token));
        return;
    }
    if (!last->value.n) {
        last->value = pt_str_c(token);
        return;
    }
    last->value = pt_str_c(pt_arena_printf(a, "%.*s, %s", (int)last->value.n, last->value.p, token));
}

static pt_plugin_result cors_on_response_headers(pt_txn *txn, const void *conf, void *state)
{
    const pt_cors_conf *c = conf;
    pt_cors_state *st = state;
    pt_response *res = pt_txn_response(txn);
    pt_arena *a = pt_txn_arena(txn);
    decide(txn, c, st);
    /* This plugin owns the CORS fields of its responses: an upstream's own
     * (perhaps wider) policy is not passed on. */
    pt_headers_remove(&res->headers, "Access-Control-Allow-Origin");
    pt_headers_remove(&res->headers, "Access-Control-Allow-Credentials");
    if (!st->preflight) pt_headers_remove(&res->headers, "Access-Control-Expose-Headers");
    if (c->any && !c->credentials) {
        /* "*": the same answer for every origin, nothing to vary on */
        if (st->refused) return PT_PLUGIN_CONTINUE;
        pt_headers_add(&res->headers, a, PT_STR_LIT("Access-Control-Allow-Origin"), PT_STR_LIT("*"));
        if (!st->preflight && c->expose_value.n)
            pt_headers_add(&res->headers, a, PT_STR_LIT("Access-Control-Expose-Headers"), c->expose_value);
        return PT_PLUGIN_CONTINUE;
    }
    vary_add(&res->headers, a, "Origin");
    if (st->preflight && c->reflect_headers) vary_add(&res->headers, a, "Access-Control-Request-Headers");
    if (!st->allowed || st->refused) return PT_PLUGIN_CONTINUE;
    pt_headers_add(&res->headers, a, PT_STR_LIT("Access-Control-Allow-Origin"), st->origin);
    if (c->credentials)
        pt_headers_add(&res->headers, a, PT_STR_LIT("Access-Control-Allow-Credentials"), PT_STR_LIT("true"));
    if (!st->preflight && c->expose_value.n)
        pt_headers_add(&res->headers, a, PT_STR_LIT("Access-Control-Expose-Headers"), c->expose_value);
    return PT_PLUGIN_CONTINUE;
}

const pt_plugin_type pt_plugin_cors = {
    .name = "cors",
    .configure = cors_configure,
    .state_size = sizeof(pt_cors_state),
    .on_request_headers = cors_on_request_headers,
    .on_response_headers = cors_on_response_headers,
};
