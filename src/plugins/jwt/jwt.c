/* jwt.c — the jwt plugin: a request must carry a JSON Web Token signed by
 * a configured key and whose claims satisfy the policy; else 401 with
 * WWW-Authenticate: Bearer (RFC 6750) and problem+json. Verified tokens are
 * cached per worker (pt_jwt_cache_put, on the plugin API's digest cache);
 * selected claims travel upstream as headers (client copies always removed). Verification itself is in jws.c,
 * keys in jwk.c. Design note: docs/jwt.md. */
#include "plugins/jwt/jwt.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "plugins/plugin_util.h"

#define MAX_KEY_FILE (1u << 20)

/* ------------------------------------------------------------ configure */

/* Reads a whole (small) file at configure time into the config arena. */
static char *read_file(pt_conf_ctx *ctx, const pt_conf_node *n, const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        pt_conf_error(ctx, n, "jwt: cannot open \"%s\": %s", path, strerror(errno));
        return NULL;
    }
    char *buf = pt_arena_alloc(ctx->arena, MAX_KEY_FILE + 1);
    size_t got = fread(buf, 1, MAX_KEY_FILE + 1, f);
    bool err = ferror(f);
    fclose(f);
    if (err || got > MAX_KEY_FILE) {
        pt_conf_error(ctx, n, "jwt: cannot read \"%s\" (error, or larger than 1 MiB)", path);
        return NULL;
    }
    buf[got] = '\0';
    *len = got;
    return buf;
}

/* A YAML node as JSON (scalars become strings): an inline JWK. */
static json_t *node_json(const pt_conf_node *n)
{
    switch (n->kind) {
    case PT_NODE_SCALAR: return json_stringn(n->scalar, n->scalar_len);
    case PT_NODE_SEQ: {
        json_t *a = json_array();
        for (size_t i = 0; i < n->n; i++) json_array_append_new(a, node_json(n->vals[i]));
        return a;
    }
    case PT_NODE_MAP: {
        json_t *o = json_object();
        for (size_t i = 0; i < n->n; i++) json_object_set_new(o, n->keys[i]->scalar, node_json(n->vals[i]));
        return o;
    }
    default: return json_null();
    }
}

/* Reads an `alg` node; -1 on error (recorded). */
static int read_alg(pt_conf_ctx *ctx, const pt_conf_node *n, const char *what)
{
    int a = n && n->kind == PT_NODE_SCALAR ? pt_jwt_alg_from_str(pt_str_make(n->scalar, n->scalar_len))
                                           : PT_JWT_ALG_UNKNOWN;
    if (a == PT_JWT_ALG_UNKNOWN)
        pt_conf_error(ctx, n, "jwt: %s must be one of HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, "
                              "PS512, ES256, ES384, ES512, EdDSA",
                      what);
    return a;
}

/* One entry of `keys`: {alg, kid?, one of pem | pem_file | secret | jwk}. */
static bool read_key(pt_conf_ctx *ctx, const pt_conf_node *n, pt_jwt_conf *c)
{
    static const char *const allowed[] = {"alg", "kid", "pem", "pem_file", "secret", "jwk", NULL};
    if (!pt_conf_check_keys(ctx, n, allowed, "jwt.keys[]")) return false;
    int alg = read_alg(ctx, pt_conf_get(n, "alg"), "keys[].alg");
    if (alg < 0) return false;
    const pt_conf_node *kidn = pt_conf_get(n, "kid");
    char *kid = NULL;
    if (kidn && !pt_conf_string(ctx, kidn, &kid)) return false;
    static const char *const material[] = {"pem", "pem_file", "secret", "jwk"};
    const pt_conf_node *m = NULL;
    const char *which = NULL;
    int count = 0;
    for (size_t i = 0; i < PT_ARRAY_LEN(material); i++)
        if (pt_conf_get(n, material[i])) m = pt_conf_get(n, material[i]), which = material[i], count++;
    if (count != 1) {
        pt_conf_error(ctx, n, "jwt: each key needs exactly one of 'pem', 'pem_file', 'secret', 'jwk'");
        return false;
    }
    pt_jwt_key k;
    char err[200] = "";
    bool ok;
    if (strcmp(which, "jwk") == 0) {
        json_t *j = NULL;
        if (m->kind == PT_NODE_MAP) j = node_json(m);
        else if (m->kind == PT_NODE_SCALAR) j = pt_jwt_json_parse(m->scalar, m->scalar_len, 8);
        ok = j && pt_jwk_parse(j, alg, &k, err, sizeof(err));
        if (!j) snprintf(err, sizeof(err), "'jwk' must be a mapping or a JSON object without duplicate members");
        json_decref(j);
        if (ok && kid && !k.kid) k.kid = strdup(kid);
    } else if (strcmp(which, "secret") == 0) {
        if (m->kind != PT_NODE_SCALAR) {
            pt_conf_error(ctx, m, "jwt: 'secret' must be a string");
            return false;
        }
        ok = pt_jwt_key_from_secret((const uint8_t *)m->scalar, m->scalar_len, (pt_jwt_alg)alg, kid, &k, err,
                                    sizeof(err));
    } else {
        char *text = NULL;
        size_t len = 0;
        if (m->kind != PT_NODE_SCALAR) {
            pt_conf_error(ctx, m, "jwt: '%s' must be a string", which);
            return false;
        }
        if (strcmp(which, "pem_file") == 0) {
            if (!(text = read_file(ctx, m, m->scalar, &len))) return false;
        } else {
            text = m->scalar, len = m->scalar_len;
        }
        ok = pt_jwt_key_from_pem(text, len, (pt_jwt_alg)alg, kid, &k, err, sizeof(err));
    }
    if (!ok) {
        pt_conf_error(ctx, m, "jwt: key '%s': %s", which, err);
        return false;
    }
    pt_jwt_keyset_add(&c->keys, &k);
    return true;
}

/* `token`: one source mapping or a list of them. */
static bool read_sources(pt_conf_ctx *ctx, const pt_conf_node *n, pt_jwt_conf *c)
{
    static const char *const allowed[] = {"header", "scheme", "query", "cookie", NULL};
    if (!n) {
        c->sources = pt_arena_calloc(ctx->arena, sizeof(*c->sources));
        c->sources[0] = (pt_jwt_source){PT_JWT_SRC_HEADER, PT_STR_LIT("Authorization"), PT_STR_LIT("Bearer")};
        c->nsources = 1;
        return true;
    }
    const pt_conf_node *const *items = n->kind == PT_NODE_SEQ ? (const pt_conf_node *const *)n->vals : &n;
    size_t count = n->kind == PT_NODE_SEQ ? n->n : 1;
    if (count == 0) {
        pt_conf_error(ctx, n, "jwt: 'token' needs at least one source");
        return false;
    }
    c->sources = pt_arena_calloc(ctx->arena, count * sizeof(*c->sources));
    for (size_t i = 0; i < count; i++) {
        const pt_conf_node *it = items[i];
        if (!pt_conf_check_keys(ctx, it, allowed, "jwt.token")) return false;
        static const char *const kinds[] = {"header", "query", "cookie"};
        const pt_conf_node *name = NULL;
        int kind = -1, nk = 0;
        for (int k = 0; k < 3; k++)
            if (pt_conf_get(it, kinds[k])) name = pt_conf_get(it, kinds[k]), kind = k, nk++;
        if (nk != 1 || name->kind != PT_NODE_SCALAR || !pt_plugin_header_name_ok(name->scalar, name->scalar_len)) {
            pt_conf_error(ctx, it, "jwt: each token source is one of {header: NAME}, {query: NAME}, {cookie: NAME} "
                                   "with a token-character name");
            return false;
        }
        pt_jwt_source *s = &c->sources[i];
        s->kind = (pt_jwt_src_kind)kind;
        s->name = pt_arena_str(ctx->arena, pt_str_make(name->scalar, name->scalar_len));
        const pt_conf_node *sch = pt_conf_get(it, "scheme");
        if (sch && kind != PT_JWT_SRC_HEADER) {
            pt_conf_error(ctx, sch, "jwt: 'scheme' applies to header sources only");
            return false;
        }
        if (sch) {
            if (sch->kind != PT_NODE_SCALAR || (sch->scalar_len && !pt_plugin_header_name_ok(sch->scalar, sch->scalar_len))) {
                pt_conf_error(ctx, sch, "jwt: 'scheme' must be an auth-scheme token (or empty)");
                return false;
            }
            s->scheme = pt_arena_str(ctx->arena, pt_str_make(sch->scalar, sch->scalar_len));
        } else if (kind == PT_JWT_SRC_HEADER && pt_str_ieq_lit(s->name, "authorization")) {
            s->scheme = PT_STR_LIT("Bearer");
        }
    }
    c->nsources = count;
    return true;
}

static bool read_claim_headers(pt_conf_ctx *ctx, const pt_conf_node *n, pt_jwt_conf *c)
{
    if (!n) return true;
    if (n->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, n, "jwt: 'claims_to_headers' must map claim names to header names");
        return false;
    }
    c->claim_headers = pt_arena_calloc(ctx->arena, (n->n ? n->n : 1) * sizeof(*c->claim_headers));
    for (size_t i = 0; i < n->n; i++) {
        const pt_conf_node *h = n->vals[i];
        if (h->kind != PT_NODE_SCALAR || !pt_plugin_header_name_ok(h->scalar, h->scalar_len) ||
            pt_plugin_header_is_managed(h->scalar) || pt_str_ieq_lit(pt_str_c(h->scalar), "authorization")) {
            pt_conf_error(ctx, h, "jwt: claims_to_headers: \"%s\" is not a header name the plugin may set",
                          h->kind == PT_NODE_SCALAR ? h->scalar : "");
            return false;
        }
        for (size_t j = 0; j < c->nclaim_headers; j++)
            if (pt_str_ieq(c->claim_headers[j].header, pt_str_c(h->scalar))) {
                pt_conf_error(ctx, h, "jwt: claims_to_headers: header \"%s\" appears twice", h->scalar);
                return false;
            }
        c->claim_headers[c->nclaim_headers++] =
            (pt_jwt_claim_header){n->keys[i]->scalar, pt_arena_str(ctx->arena, pt_str_c(h->scalar))};
    }
    return true;
}

static bool read_cache(pt_conf_ctx *ctx, const pt_conf_node *n, pt_jwt_conf *c)
{
    c->cache = true;
    c->cache_max_entries = PT_JWT_DEFAULT_CACHE_ENTRIES;
    c->cache_ttl_ms = PT_JWT_DEFAULT_CACHE_TTL_MS;
    if (!n) return true;
    if (n->kind == PT_NODE_SCALAR) return pt_conf_bool(ctx, n, &c->cache);
    static const char *const allowed[] = {"max_entries", "ttl", NULL};
    if (!pt_conf_check_keys(ctx, n, allowed, "jwt.cache")) return false;
    int64_t me = 0;
    const pt_conf_node *m = pt_conf_get(n, "max_entries");
    if (m) {
        if (!pt_conf_int(ctx, m, 1, 1000000, &me)) return false;
        c->cache_max_entries = (size_t)me;
    }
    const pt_conf_node *t = pt_conf_get(n, "ttl");
    if (t) {
        if (!pt_conf_duration_ms(ctx, t, &c->cache_ttl_ms)) return false;
        if (c->cache_ttl_ms == 0 || c->cache_ttl_ms > 24ull * 3600 * 1000) {
            pt_conf_error(ctx, t, "jwt: cache.ttl must be between 1ms and 24h");
            return false;
        }
    }
    return true;
}

/* A request-target path for the JWKS call: '/' then visible ASCII, no '#'. */
static bool path_ok(const char *p, size_t n)
{
    if (n == 0 || p[0] != '/') return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] <= 0x20 || (unsigned char)p[i] >= 0x7f || p[i] == '#') return false;
    return true;
}

/* Reads a duration key of `n` into *out when present, within [lo, hi]. */
static bool read_ms(pt_conf_ctx *ctx, const pt_conf_node *n, const char *key, uint64_t lo, uint64_t hi,
                    uint64_t *out)
{
    const pt_conf_node *v = pt_conf_get(n, key);
    if (!v) return true;
    if (!pt_conf_duration_ms(ctx, v, out)) return false;
    if (*out < lo || *out > hi) {
        pt_conf_error(ctx, v, "jwt: jwks.%s out of range", key);
        return false;
    }
    return true;
}

/* `jwks`: {upstream, path, alg?, refresh?, min_refresh?, max_refresh?, timeout?}. */
static bool read_jwks(pt_conf_ctx *ctx, const pt_conf_node *n, pt_jwt_conf *c)
{
    static const char *const allowed[] = {"upstream", "path", "alg", "refresh", "min_refresh", "max_refresh",
                                          "timeout", NULL};
    if (!pt_conf_check_keys(ctx, n, allowed, "jwt.jwks")) return false;
    pt_jwks_conf *j = pt_arena_calloc(ctx->arena, sizeof(*j));
    const pt_conf_node *up = pt_conf_get(n, "upstream"), *path = pt_conf_get(n, "path"), *alg = pt_conf_get(n, "alg");
    if (!up) {
        pt_conf_error(ctx, n, "jwt: jwks needs 'upstream' (a named upstream serving the JWK Set)");
        return false;
    }
    if (!(j->upstream = pt_conf_upstream(ctx, up))) return false;
    if (!path || path->kind != PT_NODE_SCALAR || !path_ok(path->scalar, path->scalar_len)) {
        pt_conf_error(ctx, path ? path : n, "jwt: jwks needs 'path' starting with '/' (visible ASCII, no '#')");
        return false;
    }
    j->path = pt_arena_str(ctx->arena, pt_str_make(path->scalar, path->scalar_len));
    j->alg = PT_JWT_ALG_UNKNOWN;
    if (alg && (j->alg = read_alg(ctx, alg, "jwks.alg")) < 0) return false;
    j->refresh_ms = PT_JWKS_DEFAULT_REFRESH_MS;
    j->min_refresh_ms = PT_JWKS_DEFAULT_MIN_REFRESH_MS;
    j->max_refresh_ms = PT_JWKS_DEFAULT_MAX_REFRESH_MS;
    j->timeout_ms = PT_JWKS_DEFAULT_TIMEOUT_MS;
    const uint64_t day = 24ull * 3600 * 1000;
    if (!read_ms(ctx, n, "refresh", 1000, 7 * day, &j->refresh_ms) ||
        !read_ms(ctx, n, "min_refresh", 100, day, &j->min_refresh_ms) ||
        !read_ms(ctx, n, "max_refresh", 1000, 7 * day, &j->max_refresh_ms) ||
        !read_ms(ctx, n, "timeout", 1, 300000, &j->timeout_ms))
        return false;
    if (j->min_refresh_ms > j->max_refresh_ms) {
        pt_conf_error(ctx, n, "jwt: jwks.min_refresh must not exceed jwks.max_refresh");
        return false;
    }
    j->id = pt_arena_printf(ctx->arena, "%s\n%s\n%d", j->upstream->name, j->path.p, j->alg);
    c->jwks = j;
    return true;
}

/* `consumer`: {claim, required, groups_claim, max_groups}. */
static bool read_consumer(pt_conf_ctx *ctx, const pt_conf_node *n, pt_jwt_conf *c)
{
    static const char *const allowed[] = {"claim", "required", "groups_claim", "max_groups", NULL};
    c->consumer_claim = "sub";
    c->max_groups = PT_JWT_DEFAULT_MAX_GROUPS;
    if (!n) return true;
    if (n->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, n, "jwt: 'consumer' must be a mapping {claim, required, groups_claim, max_groups}");
        return false;
    }
    if (!pt_conf_check_keys(ctx, n, allowed, "jwt.consumer")) return false;
    const pt_conf_node *v;
    char *s = NULL;
    if ((v = pt_conf_get(n, "claim"))) {
        if (!pt_conf_string(ctx, v, &s)) return false;
        if (!*s) {
            pt_conf_error(ctx, v, "jwt: consumer.claim must be a claim name");
            return false;
        }
        c->consumer_claim = s;
    }
    if ((v = pt_conf_get(n, "required")) && !pt_conf_bool(ctx, v, &c->consumer_required)) return false;
    if ((v = pt_conf_get(n, "groups_claim"))) {
        if (!pt_conf_string(ctx, v, &s)) return false;
        if (!*s) {
            pt_conf_error(ctx, v, "jwt: consumer.groups_claim must be a claim name");
            return false;
        }
        if (c->consumer_required) {
            pt_conf_error(ctx, v, "jwt: consumer.groups_claim applies to ad-hoc consumers only (required: true "
                                  "takes the configured consumer's groups)");
            return false;
        }
        c->groups_claim = s;
    }
    if ((v = pt_conf_get(n, "max_groups"))) {
        int64_t mg = 0;
        if (!pt_conf_int(ctx, v, 1, PT_JWT_MAX_MAX_GROUPS, &mg)) return false;
        c->max_groups = (size_t)mg;
    }
    return true;
}

static const char *const decision_results[] = {"allowed", "cache_hit", "missing", "invalid", "unavailable", NULL};
static const pt_metric_dim decision_dims[] = {{"result", decision_results}};
static const pt_metric_desc decisions_desc = {
    .name = "portico_jwt_decisions_total",
    .help = "Requests decided by the jwt plugin, by result.",
    .type = PT_METRIC_COUNTER,
    .dims = decision_dims,
    .ndims = 1,
};

static void jwt_destroy(void *conf)
{
    pt_jwt_conf *c = conf;
    if (c) pt_jwt_keyset_free(&c->keys);
}

/* Scalar options: policy, sizes, realm, forward_token. */
static bool read_options(pt_conf_ctx *ctx, const pt_conf_node *node, pt_jwt_conf *c)
{
    bool ok = true;
    pt_jwt_policy *p = &c->policy;
    p->require_exp = true;
    if (!pt_plugin_string_list(ctx, pt_conf_get(node, "issuers"), "jwt", "issuers", false, &p->issuers,
                               &p->nissuers))
        ok = false;
    if (!pt_plugin_string_list(ctx, pt_conf_get(node, "audiences"), "jwt", "audiences", false, &p->audiences,
                               &p->naudiences))
        ok = false;
    if (!pt_plugin_string_list(ctx, pt_conf_get(node, "required_claims"), "jwt", "required_claims", false,
                               &p->required, &p->nrequired))
        ok = false;
    const pt_conf_node *n;
    if ((n = pt_conf_get(node, "require_exp")) && !pt_conf_bool(ctx, n, &p->require_exp)) ok = false;
    uint64_t ms = 0;
    if ((n = pt_conf_get(node, "leeway"))) {
        if (!pt_conf_duration_ms(ctx, n, &ms)) ok = false;
        else if (ms > 3600 * 1000) {
            pt_conf_error(ctx, n, "jwt: 'leeway' must be at most 1h");
            ok = false;
        }
        p->leeway_s = (int64_t)(ms / 1000);
    }
    if ((n = pt_conf_get(node, "typ"))) {
        char *typ = NULL;
        if (!pt_conf_string(ctx, n, &typ)) ok = false;
        p->typ = typ;
    }
    c->max_token = PT_JWT_DEFAULT_MAX_TOKEN;
    if ((n = pt_conf_get(node, "max_token_size"))) {
        uint64_t sz = 0;
        if (!pt_conf_size(ctx, n, &sz)) ok = false;
        else if (sz < 64 || sz > PT_JWT_MAX_MAX_TOKEN) {
            pt_conf_error(ctx, n, "jwt: 'max_token_size' must be between 64 and 64k");
            ok = false;
        }
        c->max_token = (size_t)sz;
    }
    c->realm = PT_STR_LIT("portico");
    if ((n = pt_conf_get(node, "realm"))) {
        bool good = n->kind == PT_NODE_SCALAR && pt_plugin_header_value_ok(n->scalar, n->scalar_len) &&
                    !strpbrk(n->scalar, "\"\\");
        if (!good) {
            pt_conf_error(ctx, n, "jwt: 'realm' must be a string without quotes, backslashes or control bytes");
            ok = false;
        } else {
            c->realm = pt_str_make(n->scalar, n->scalar_len);
        }
    }
    c->forward_token = true;
    if ((n = pt_conf_get(node, "forward_token")) && !pt_conf_bool(ctx, n, &c->forward_token)) ok = false;
    return ok;
}

static void *jwt_configure(pt_conf_ctx *ctx, const pt_conf_node *node)
{
    static const char *const allowed[] = {
        "keys",      "jwks_file",         "jwks_alg",      "issuers", "audiences", "required_claims",
        "require_exp", "leeway",          "typ",           "max_token_size", "token", "realm",
        "claims_to_headers", "forward_token", "cache",     "jwks", "consumer", NULL,
    };
    if (!node || node->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, node, "jwt: expected a mapping with 'keys', 'jwks_file' and/or 'jwks'");
        return NULL;
    }
    if (!pt_conf_check_keys(ctx, node, allowed, "jwt")) return NULL;
    pt_jwt_conf *c = pt_arena_calloc(ctx->arena, sizeof(*c));
    bool ok = true;
    const pt_conf_node *keys = pt_conf_get(node, "keys");
    if (keys) {
        if (keys->kind != PT_NODE_SEQ) {
            pt_conf_error(ctx, keys, "jwt: 'keys' must be a list");
            ok = false;
        } else {
            for (size_t i = 0; i < keys->n; i++)
                if (!read_key(ctx, keys->vals[i], c)) ok = false;
        }
    }
    const pt_conf_node *jf = pt_conf_get(node, "jwks_file"), *ja = pt_conf_get(node, "jwks_alg");
    int jwks_alg = PT_JWT_ALG_UNKNOWN;
    if (ja && (jwks_alg = read_alg(ctx, ja, "jwks_alg")) < 0) ok = false;
    if (ja && !jf) {
        pt_conf_error(ctx, ja, "jwt: 'jwks_alg' needs 'jwks_file'");
        ok = false;
    }
    if (jf) {
        char *text = NULL, err[240] = "";
        size_t len = 0;
        if (jf->kind != PT_NODE_SCALAR) {
            pt_conf_error(ctx, jf, "jwt: 'jwks_file' must be a path");
            ok = false;
        } else if (!(text = read_file(ctx, jf, jf->scalar, &len))) {
            ok = false;
        } else if (!pt_jwks_parse(text, len, jwks_alg, true, &c->keys, NULL, err, sizeof(err))) {
            pt_conf_error(ctx, jf, "jwt: %s: %s", jf->scalar, err);
            ok = false;
        }
    }
    const pt_conf_node *jw = pt_conf_get(node, "jwks");
    if (jw && !read_jwks(ctx, jw, c)) ok = false;
    if (ok && c->keys.n == 0 && !c->jwks) {
        pt_conf_error(ctx, node, "jwt: no verification key: give 'keys', 'jwks_file' and/or 'jwks'");
        ok = false;
    }
    if (!read_options(ctx, node, c)) ok = false;
    if (!read_sources(ctx, pt_conf_get(node, "token"), c)) ok = false;
    if (!read_claim_headers(ctx, pt_conf_get(node, "claims_to_headers"), c)) ok = false;
    if (!read_cache(ctx, pt_conf_get(node, "cache"), c)) ok = false;
    if (!read_consumer(ctx, pt_conf_get(node, "consumer"), c)) ok = false;
    if (!ok) {
        jwt_destroy(c);
        return NULL;
    }
    if (getrandom(c->salt, sizeof(c->salt), 0) != (ssize_t)sizeof(c->salt)) {
        /* Only a namespace, not a secret: uniqueness per instance suffices. */
        uint64_t x[2] = {(uint64_t)(uintptr_t)c, pt_plugin_rand64()};
        memcpy(c->salt, x, sizeof(c->salt));
    }
    c->decisions = pt_conf_metric(ctx, node, &decisions_desc, NULL);
    return c;
}

/* ------------------------------------------------------------ pure helpers */

/* The token in one header value under `scheme` (empty: the whole value). */
static bool token_in_value(pt_str v, pt_str scheme, pt_str *tok)
{
    if (scheme.n) {
        if (v.n <= scheme.n || !pt_str_ieq(pt_str_make(v.p, scheme.n), scheme) || v.p[scheme.n] != ' ') return false;
        size_t i = scheme.n;
        while (i < v.n && v.p[i] == ' ') i++;
        v = pt_str_make(v.p + i, v.n - i);
    }
    if (!v.n) return false;
    *tok = v;
    return true;
}

/* Adds a found token; returns the new count. */
static int found(int count, pt_str t, pt_str *out)
{
    if (count == 0) *out = t;
    return count + 1;
}

pt_jwt_token_found pt_jwt_find_token(const pt_jwt_conf *c, const pt_request *req, pt_str *token)
{
    int count = 0;
    pt_str t;
    for (size_t s = 0; s < c->nsources; s++) {
        const pt_jwt_source *src = &c->sources[s];
        if (src->kind == PT_JWT_SRC_HEADER) {
            for (uint32_t i = 0; i < req->headers.n; i++)
                if (pt_str_ieq(req->headers.v[i].name, src->name) &&
                    token_in_value(req->headers.v[i].value, src->scheme, &t))
                    count = found(count, t, token);
        } else if (src->kind == PT_JWT_SRC_QUERY && req->has_query) {
            pt_str q = req->query;
            size_t i = 0;
            while (i <= q.n) {
                size_t e = i;
                while (e < q.n && q.p[e] != '&') e++;
                pt_str pair = pt_str_make(q.p + i, e - i);
                if (pair.n > src->name.n && memcmp(pair.p, src->name.p, src->name.n) == 0 &&
                    pair.p[src->name.n] == '=' && pair.n > src->name.n + 1)
                    count = found(count, pt_str_make(pair.p + src->name.n + 1, pair.n - src->name.n - 1), token);
                i = e + 1;
            }
        } else if (src->kind == PT_JWT_SRC_COOKIE) {
            for (uint32_t h = 0; h < req->headers.n; h++) {
                if (!pt_str_ieq_lit(req->headers.v[h].name, "cookie")) continue;
                pt_str v = req->headers.v[h].value;
                size_t i = 0;
                while (i < v.n) {
                    while (i < v.n && (v.p[i] == ' ' || v.p[i] == ';')) i++;
                    size_t e = i;
                    while (e < v.n && v.p[e] != ';') e++;
                    pt_str pair = pt_str_make(v.p + i, e - i);
                    if (pair.n > src->name.n + 1 && memcmp(pair.p, src->name.p, src->name.n) == 0 &&
                        pair.p[src->name.n] == '=') {
                        size_t vn = pair.n - src->name.n - 1;
                        while (vn && pair.p[src->name.n + vn] == ' ') vn--;
                        if (vn) count = found(count, pt_str_make(pair.p + src->name.n + 1, vn), token);
                    }
                    i = e;
                }
            }
        }
    }
    return count == 0 ? PT_JWT_TOKEN_NONE : count == 1 ? PT_JWT_TOKEN_ONE : PT_JWT_TOKEN_MANY;
}

/* True when a query pair or cookie-pair is `name=...` (or a bare `name`
 * when `bare`). */
static bool pair_named(pt_str pair, pt_str name, bool bare)
{
    if (pair.n < name.n || memcmp(pair.p, name.p, name.n) != 0) return false;
    return pair.n == name.n ? bare : pair.p[name.n] == '=';
}

pt_str pt_jwt_query_without(pt_str q, pt_str name, pt_arena *a, int *removed)
{
    *removed = 0;
    char *out = pt_arena_alloc(a, q.n + 1);
    size_t on = 0, kept = 0;
    size_t i = 0;
    while (i <= q.n) {
        size_t e = i;
        while (e < q.n && q.p[e] != '&') e++;
        pt_str pair = pt_str_make(q.p + i, e - i);
        if (pair_named(pair, name, true)) {
            (*removed)++;
        } else {
            if (kept++) out[on++] = '&';
            memcpy(out + on, pair.p, pair.n);
            on += pair.n;
        }
        i = e + 1;
    }
    if (!*removed) return q;
    out[on] = '\0';
    return pt_str_make(out, on);
}

pt_str pt_jwt_cookies_without(pt_str v, pt_str name, pt_arena *a, int *removed)
{
    *removed = 0;
    char *out = pt_arena_alloc(a, v.n + 1);
    size_t on = 0;
    size_t i = 0;
    while (i < v.n) {
        while (i < v.n && (v.p[i] == ' ' || v.p[i] == ';')) i++;
        size_t e = i;
        while (e < v.n && v.p[e] != ';') e++;
        size_t pe = e;
        while (pe > i && v.p[pe - 1] == ' ') pe--;
        pt_str pair = pt_str_make(v.p + i, pe - i);
        if (pair.n && pair_named(pair, name, false)) {
            (*removed)++;
        } else if (pair.n) {
            if (on) out[on++] = ';', out[on++] = ' ';
            memcpy(out + on, pair.p, pair.n);
            on += pair.n;
        }
        i = e;
    }
    if (!*removed) return v;
    out[on] = '\0';
    return pt_str_make(out, on);
}

pt_str pt_jwt_claim_value(const json_t *v, pt_arena *a)
{
    char *out = NULL;
    size_t n = 0;
    if (json_is_string(v)) {
        n = json_string_length(v);
        out = pt_arena_strndup(a, json_string_value(v), n);
    } else if (json_is_array(v)) {
        size_t i, total = 0;
        const json_t *e;
        bool strings = true;
        json_array_foreach(v, i, e) {
            if (!json_is_string(e)) strings = false;
            else total += json_string_length(e) + 1;
        }
        if (strings && total <= PT_JWT_MAX_HEADER_VALUE + 1) {
            out = pt_arena_alloc(a, total + 1);
            json_array_foreach(v, i, e) {
                if (i) out[n++] = ',';
                memcpy(out + n, json_string_value(e), json_string_length(e));
                n += json_string_length(e);
            }
            out[n] = '\0';
        }
    }
    if (!out && v) {
        char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (s) {
            n = strlen(s);
            out = pt_arena_strndup(a, s, n);
            free(s);
        }
    }
    if (!out || n == 0 || n > PT_JWT_MAX_HEADER_VALUE || !pt_plugin_header_value_ok(out, n) || memchr(out, 0, n))
        return PT_STR_NULL;
    return pt_str_make(out, n);
}

/* 1..max bytes of visible ASCII, none of `bad`. */
static bool word_ok(const char *p, size_t n, size_t max, const char *bad)
{
    if (n == 0 || n > max) return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] <= 0x20 || (unsigned char)p[i] >= 0x7f || strchr(bad, p[i])) return false;
    return true;
}

/* Appends the words of claim value v (a space-separated string or an array
 * of strings) to out[*n..max), unique, each checked by word_ok. False when
 * v has another type, a word is not acceptable or there are more than max. */
static bool read_words(const json_t *v, pt_arena *a, pt_str *out, uint32_t *n, size_t max, size_t wmax,
                       const char *bad)
{
    size_t count = json_is_array(v) ? json_array_size(v) : 1;
    for (size_t k = 0; k < count; k++) {
        const json_t *e = json_is_array(v) ? json_array_get(v, k) : v;
        if (!json_is_string(e)) return false;
        const char *p = json_string_value(e);
        size_t len = json_string_length(e), i = 0;
        bool split = !json_is_array(v);
        while (i < len) {
            size_t j = i;
            if (split) {
                while (i < len && p[i] == ' ') i++;
                if (i == len) break;
                j = i;
                while (j < len && p[j] != ' ') j++;
            } else {
                j = len;
            }
            if (!word_ok(p + i, j - i, wmax, bad)) return false;
            pt_str w = pt_str_make(p + i, j - i);
            bool dup = false;
            for (uint32_t d = 0; d < *n && !dup; d++) dup = pt_str_eq(out[d], w);
            if (!dup) {
                if (*n >= max) return false;
                out[(*n)++] = pt_arena_str(a, w);
            }
            i = j;
        }
        if (!split && len == 0) return false;
    }
    return true;
}

/* A claim's value as a fact: strings as they are, other JSON as compact
 * text; objects, control bytes and over-long values give an empty slice. */
static pt_str fact_value(const json_t *v, pt_arena *a)
{
    if (json_is_object(v)) return PT_STR_NULL;
    char *out;
    size_t n;
    if (json_is_string(v)) {
        n = json_string_length(v);
        if (n > PT_JWT_MAX_FACT) return PT_STR_NULL;
        out = pt_arena_strndup(a, json_string_value(v), n);
    } else {
        char *j = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!j) return PT_STR_NULL;
        n = strlen(j);
        out = n <= PT_JWT_MAX_FACT ? pt_arena_strndup(a, j, n) : NULL;
        free(j);
        if (!out) return PT_STR_NULL;
    }
    if (n == 0 || memchr(out, 0, n) || !pt_plugin_header_value_ok(out, n)) return PT_STR_NULL;
    return pt_str_make(out, n);
}

const char *pt_jwt_read_ident(const pt_jwt_conf *c, const json_t *claims, pt_arena *a, pt_jwt_ident *id)
{
    memset(id, 0, sizeof(*id));
    const json_t *cv = json_object_get(claims, c->consumer_claim);
    if (!json_is_string(cv)) return "the token names no consumer";
    if (!word_ok(json_string_value(cv), json_string_length(cv), PT_JWT_MAX_NAME, ""))
        return "the token's consumer name is not acceptable";
    id->consumer = pt_arena_str(a, pt_str_make(json_string_value(cv), json_string_length(cv)));
    if (c->groups_claim && !c->consumer_required) {
        const json_t *g = json_object_get(claims, c->groups_claim);
        if (g) {
            pt_str *gv = pt_arena_alloc(a, c->max_groups * sizeof(*gv));
            if (!read_words(g, a, gv, &id->ngroups, c->max_groups, PT_JWT_MAX_GROUP, ","))
                return "the token's groups are not acceptable";
            id->groups = gv;
        }
    }
    const json_t *sc = json_object_get(claims, "scope"), *scp = json_object_get(claims, "scp");
    if (sc || scp) {
        pt_str *sv = pt_arena_alloc(a, PT_JWT_MAX_SCOPES * sizeof(*sv));
        if ((sc && !read_words(sc, a, sv, &id->nscopes, PT_JWT_MAX_SCOPES, PT_JWT_MAX_SCOPE, "\"\\")) ||
            (scp && !read_words(scp, a, sv, &id->nscopes, PT_JWT_MAX_SCOPES, PT_JWT_MAX_SCOPE, "\"\\")))
            return "the token's scopes are not acceptable";
        id->scopes = sv;
    }
    size_t nobj = json_object_size(claims);
    pt_header *fv = pt_arena_alloc(a, (nobj < PT_JWT_MAX_FACTS ? nobj : PT_JWT_MAX_FACTS) * sizeof(*fv) + sizeof(*fv));
    const char *k;
    const json_t *v;
    bool has_client_id = false;
    json_object_foreach((json_t *)claims, k, v) {
        if (id->nclaims >= PT_JWT_MAX_FACTS) break;
        size_t kl = strlen(k);
        if (!word_ok(k, kl, 128, "")) continue;
        pt_str val = fact_value(v, a);
        if (!val.n) continue;
        if (strcmp(k, "client_id") == 0) has_client_id = true;
        fv[id->nclaims++] = (pt_header){pt_arena_str(a, pt_str_make(k, kl)), val};
    }
    const json_t *azp = json_object_get(claims, "azp");
    if (!has_client_id && json_is_string(azp) && id->nclaims < PT_JWT_MAX_FACTS + 1) {
        pt_str val = fact_value(azp, a);
        if (val.n) fv[id->nclaims++] = (pt_header){PT_STR_LIT("client_id"), val};
    }
    id->claims = fv;
    return NULL;
}

pt_str pt_jwt_www_authenticate(const pt_jwt_conf *c, const char *err, const char *desc, pt_arena *a)
{
    char *s = err ? pt_arena_printf(a, "Bearer realm=\"%.*s\", error=\"%s\", error_description=\"%s\"",
                                    (int)c->realm.n, c->realm.p, err, desc)
                  : pt_arena_printf(a, "Bearer realm=\"%.*s\"", (int)c->realm.n, c->realm.p);
    return pt_str_c(s);
}

/* ------------------------------------------------------------ the phase */

/* 401 (or 400 for `invalid_request`) with problem+json and the challenge. */
static pt_plugin_result deny(pt_txn *txn, const pt_jwt_conf *c, pt_jwt_result r, const char *err, const char *desc)
{
    pt_metric_add(c->decisions, r, 1);
    int status = err && strcmp(err, "invalid_request") == 0 ? 400 : 401;
    pt_txn_respond_problem(txn, status, desc);
    pt_txn_respond_header(txn, PT_STR_LIT("WWW-Authenticate"), pt_jwt_www_authenticate(c, err, desc, pt_txn_arena(txn)));
    return PT_PLUGIN_RESPOND;
}

void pt_jwt_token_split(pt_str token, pt_str *signing_input, pt_str *signature)
{
    const char *dot = token.n ? memrchr(token.p, '.', token.n) : NULL;
    size_t i = dot ? (size_t)(dot - token.p) + 1 : 0;
    *signing_input = i ? pt_str_make(token.p, i - 1) : PT_STR_NULL;
    *signature = pt_str_make(token.p + i, token.n - i);
}

bool pt_jwt_cache_entry_matches(const pt_jwt_ident *e, pt_str signing_input)
{
    return e->signing_input.n == signing_input.n &&
           (signing_input.n == 0 || memcmp(e->signing_input.p, signing_input.p, signing_input.n) == 0);
}

/* SHA-256(worker cache salt || instance salt || the token's signature
 * part): the cache key (see jwt.h: a hit also compares the signing input). */
static void token_digest(pt_digest_cache *cache, const pt_jwt_conf *c, pt_str signature, uint8_t out[PT_DIGEST_LEN])
{
    const pt_str parts[2] = {pt_str_make((const char *)c->salt, sizeof(c->salt)), signature};
    pt_digest_cache_key(cache, parts, 2, out);
}

const pt_jwt_ident *pt_jwt_cache_put(pt_digest_cache *c, const uint8_t key[PT_DIGEST_LEN], uint64_t expires_ms,
                                     const pt_jwt_ident *id, size_t max_entries, uint64_t now_ms)
{
    static const pt_jwt_ident none;
    if (!id) id = &none;
    size_t bytes = sizeof(pt_jwt_ident) + pt_digest_blob_str_size(id->consumer) +
                   pt_digest_blob_strs_size(id->groups, id->ngroups) + pt_digest_blob_strs_size(id->scopes, id->nscopes) +
                   pt_digest_blob_headers_size(id->claims, id->nclaims) +
                   pt_digest_blob_headers_size(id->headers, id->nheaders) + pt_digest_blob_str_size(id->signing_input);
    pt_digest_cache_set_max(c, PT_DIGEST_POSITIVE, max_entries);
    pt_jwt_ident *e = pt_digest_cache_put(c, key, PT_DIGEST_POSITIVE, expires_ms, NULL, bytes, now_ms);
    if (!e) return NULL;
    char *p = (char *)(e + 1);
    e->groups = pt_digest_blob_strs(&p, id->groups, id->ngroups);
    e->ngroups = id->ngroups;
    e->scopes = pt_digest_blob_strs(&p, id->scopes, id->nscopes);
    e->nscopes = id->nscopes;
    e->claims = pt_digest_blob_headers(&p, id->claims, id->nclaims);
    e->nclaims = id->nclaims;
    e->headers = pt_digest_blob_headers(&p, id->headers, id->nheaders);
    e->nheaders = id->nheaders;
    e->consumer = pt_digest_blob_str(&p, id->consumer);
    e->signing_input = pt_digest_blob_str(&p, id->signing_input);
    PT_ASSERT((size_t)(p - (char *)e) <= bytes);
    return e;
}

const pt_jwt_ident *pt_jwt_cache_get(pt_digest_cache *c, const uint8_t key[PT_DIGEST_LEN], uint64_t now_ms)
{
    return pt_digest_cache_get(c, key, now_ms, NULL, NULL);
}

/* Removes the token from what goes upstream (forward_token: false): the
 * header sources' fields (of the source's scheme), the query sources' parameters (from the target
 * too, so the access log does not show them) and the cookie sources'
 * cookies (a Cookie field left empty goes). New strings go to `a`: a
 * token slice taken before stays valid. */
static void drop_token(const pt_jwt_conf *c, pt_request *req, pt_arena *a)
{
    for (size_t s = 0; s < c->nsources; s++) {
        const pt_jwt_source *src = &c->sources[s];
        int n = 0;
        if (src->kind == PT_JWT_SRC_HEADER) {
            /* with a scheme, only the fields of that scheme: another
             * scheme's credential (Basic) is not the token */
            pt_headers *h = &req->headers;
            uint32_t out = 0;
            for (uint32_t i = 0; i < h->n; i++) {
                pt_str t;
                if (pt_str_ieq(h->v[i].name, src->name) &&
                    (!src->scheme.n || token_in_value(h->v[i].value, src->scheme, &t)))
                    continue;
                h->v[out++] = h->v[i];
            }
            h->n = out;
        } else if (src->kind == PT_JWT_SRC_QUERY && req->has_query) {
            pt_str q = pt_jwt_query_without(req->query, src->name, a, &n);
            if (n) pt_plugin_set_query(req, a, q);
        } else if (src->kind == PT_JWT_SRC_COOKIE) {
            pt_headers *h = &req->headers;
            uint32_t out = 0;
            for (uint32_t i = 0; i < h->n; i++) {
                if (pt_str_ieq_lit(h->v[i].name, "cookie")) {
                    h->v[i].value = pt_jwt_cookies_without(h->v[i].value, src->name, a, &n);
                    if (!h->v[i].value.n) continue;
                }
                h->v[out++] = h->v[i];
            }
            h->n = out;
        }
    }
}

/* Verifies with the static keys, then the JWKS source's; *kid_unknown
 * when neither has a key with the token's kid. */
static pt_jwt_err verify_keys(const pt_jws *t, const pt_jwt_keyset *fixed, const pt_jwt_keyset *fetched,
                              bool *kid_unknown)
{
    bool u1 = true, u2 = true;
    pt_jwt_err e1 = pt_jws_verify_set(t, fixed, &u1);
    if (e1 == PT_JWT_OK) return e1;
    pt_jwt_err e2 = fetched ? pt_jws_verify_set(t, fetched, &u2) : PT_JWT_ERR_NO_KEY;
    *kid_unknown = u1 && u2;
    if (e2 == PT_JWT_OK) return e2;
    return e1 == PT_JWT_ERR_SIGNATURE || e2 == PT_JWT_ERR_SIGNATURE ? PT_JWT_ERR_SIGNATURE : PT_JWT_ERR_NO_KEY;
}

/* Names the caller from *id (a fresh verification or a cache entry;
 * everything is copied into the request arena): the configured consumer
 * (required) or an ad-hoc one, its scopes, facts and claim headers.
 * Counts `result` when the caller is named, `invalid` when not. */
static pt_plugin_result apply_ident(pt_txn *txn, const pt_jwt_conf *c, const pt_jwt_ident *id, pt_jwt_result result)
{
    pt_arena *a = pt_txn_arena(txn);
    const pt_consumer *who;
    if (c->consumer_required) {
        who = pt_consumer_find(pt_txn_consumers(txn), id->consumer);
        if (!who) return deny(txn, c, PT_JWT_R_INVALID, "invalid_token", "the token's subject is not a known consumer");
    } else {
        pt_consumer *ad = pt_arena_calloc(a, sizeof(*ad));
        ad->name = pt_arena_str(a, id->consumer).p;
        if (id->ngroups) {
            const char **g = pt_arena_alloc(a, id->ngroups * sizeof(*g));
            for (uint32_t i = 0; i < id->ngroups; i++) g[i] = pt_arena_str(a, id->groups[i]).p;
            ad->groups = g;
            ad->ngroups = id->ngroups;
        }
        who = ad;
    }
    for (uint32_t i = 0; i < id->nscopes; i++) pt_txn_add_scope(txn, id->scopes[i]);
    for (uint32_t i = 0; i < id->nclaims; i++) pt_txn_set_claim(txn, id->claims[i].name, id->claims[i].value);
    pt_request *req = pt_txn_request(txn);
    for (uint32_t i = 0; i < id->nheaders; i++)
        pt_headers_add(&req->headers, a, pt_arena_str(a, id->headers[i].name), pt_arena_str(a, id->headers[i].value));
    pt_metric_add(c->decisions, result, 1);
    return pt_txn_set_consumer(txn, who, "jwt");
}

static void wake(pt_jwks_waiter *w);

/* The request ended or its pause was dropped: leave the wait list. */
static void state_cleanup(void *data) { pt_jwks_waiter_cancel(&((pt_jwt_state *)data)->wait); }

/* Parks the request on the source's fetch in flight. */
static pt_plugin_result wait_for(pt_jwt_state *st, pt_jwks_src *src)
{
    st->waited = true;
    st->wait.wake = wake;
    if (!st->cleanup) {
        pt_arena_on_cleanup(pt_txn_arena(st->txn), state_cleanup, st);
        st->cleanup = true;
    }
    pt_jwks_src_wait(src, &st->wait);
    return PT_PLUGIN_PAUSE;
}

/* Verifies st->token and applies the outcome (claim headers and cache, or
 * an error response). May pause once on a JWKS fetch. */
static pt_plugin_result decide(pt_jwt_state *st)
{
    pt_txn *txn = st->txn;
    const pt_jwt_conf *c = st->conf;
    pt_arena *a = pt_txn_arena(txn);
    pt_jwt_worker *w = pt_txn_worker_state(txn, &pt_plugin_jwt);
    pt_jwks_src *src = NULL;
    uint64_t mono = pt_loop_now(pt_txn_loop(txn));
    if (c->jwks && w) {
        src = pt_jwks_src_get(&w->sources, pt_txn_loop(txn), c->jwks);
        bool loading = pt_jwks_src_refresh(src, c->jwks, mono, false);
        if (!pt_jwks_src_keys(src) && loading && !st->waited) return wait_for(st, src);
    }
    pt_jws t;
    pt_jwt_err e = pt_jws_parse(st->token, c->max_token, &t);
    if (e != PT_JWT_OK) return deny(txn, c, PT_JWT_R_INVALID, "invalid_token", pt_jwt_err_text(e));
    bool kid_unknown = false;
    const pt_jwt_keyset *fetched = src ? pt_jwks_src_keys(src) : NULL;
    e = verify_keys(&t, &c->keys, fetched, &kid_unknown);
    if (e == PT_JWT_ERR_NO_KEY && src && !st->waited && kid_unknown &&
        pt_jwks_src_refresh(src, c->jwks, mono, true)) {
        pt_jws_free(&t);
        return wait_for(st, src); /* a key rotated in at the IdP: fetch once, rate-limited */
    }
    if (e == PT_JWT_ERR_NO_KEY && src && !fetched && c->keys.n == 0) {
        pt_jws_free(&t);
        pt_metric_add(c->decisions, PT_JWT_R_UNAVAILABLE, 1);
        pt_txn_respond_problem(txn, 503, "the token issuer's keys are unavailable");
        return PT_PLUGIN_RESPOND;
    }
    uint64_t now_ms = pt_loop_wall_us(pt_txn_loop(txn)) / 1000;
    int64_t exp_s = INT64_MAX;
    if (e == PT_JWT_OK) e = pt_jwt_check_claims(&t, &c->policy, (int64_t)(now_ms / 1000), &exp_s);
    if (e != PT_JWT_OK) {
        pt_jws_free(&t);
        return deny(txn, c, PT_JWT_R_INVALID, "invalid_token", pt_jwt_err_text(e));
    }
    pt_jwt_ident id;
    const char *why = pt_jwt_read_ident(c, t.claims, a, &id);
    if (why) {
        pt_jws_free(&t);
        return deny(txn, c, PT_JWT_R_INVALID, "invalid_token", why);
    }
    pt_header *hs = c->nclaim_headers ? pt_arena_alloc(a, c->nclaim_headers * sizeof(*hs)) : NULL;
    for (size_t i = 0; i < c->nclaim_headers; i++) {
        pt_str v = pt_jwt_claim_value(json_object_get(t.claims, c->claim_headers[i].claim), a);
        if (v.n) hs[id.nheaders++] = (pt_header){c->claim_headers[i].header, v};
    }
    id.headers = hs;
    pt_jws_free(&t);
    if (c->cache && w) {
        uint64_t until = now_ms + c->cache_ttl_ms;
        /* exp in ms, with the leeway the check allowed. */
        if (exp_s != INT64_MAX && exp_s < INT64_MAX / 1000 - c->policy.leeway_s) {
            int64_t exp_ms = (exp_s + c->policy.leeway_s) * 1000;
            if (exp_ms < (int64_t)until) until = exp_ms > 0 ? (uint64_t)exp_ms : 0;
        }
        uint8_t key[PT_DIGEST_LEN];
        pt_str sig;
        pt_jwt_token_split(st->token, &id.signing_input, &sig);
        token_digest(w->cache, c, sig, key);
        pt_jwt_cache_put(w->cache, key, until, &id, c->cache_max_entries, now_ms);
    }
    return apply_ident(txn, c, &id, PT_JWT_R_ALLOWED);
}

/* The fetch the request waited for ended: decide now and resume. */
static void wake(pt_jwks_waiter *wt)
{
    pt_jwt_state *st = (pt_jwt_state *)wt;
    pt_txn_resume(st->txn, PT_SIDE_REQUEST, decide(st));
}

static pt_plugin_result jwt_on_request_headers(pt_txn *txn, const void *conf, void *state)
{
    const pt_jwt_conf *c = conf;
    pt_jwt_state *st = state;
    st->txn = txn;
    st->conf = c;
    pt_request *req = pt_txn_request(txn);
    pt_arena *a = pt_txn_arena(txn);
    /* Whatever happens, the client's copies of the claim headers go. */
    for (size_t i = 0; i < c->nclaim_headers; i++) pt_headers_remove(&req->headers, c->claim_headers[i].header.p);

    pt_jwt_token_found f = pt_jwt_find_token(c, req, &st->token);
    /* Whatever the outcome, a presented token goes neither upstream nor to
     * the access log (st->token stays valid: drop_token copies). */
    if (f != PT_JWT_TOKEN_NONE && !c->forward_token) drop_token(c, req, a);
    if (f != PT_JWT_TOKEN_NONE && c->forward_token) /* forwarded in the query: still never logged */
        for (size_t s = 0; s < c->nsources; s++)
            if (c->sources[s].kind == PT_JWT_SRC_QUERY) pt_txn_redact_query_param(txn, c->sources[s].name);
    if (pt_txn_auth_skip(txn)) return PT_PLUGIN_CONTINUE; /* another method named the caller (auth mode any) */
    if (f == PT_JWT_TOKEN_NONE) {
        pt_metric_add(c->decisions, PT_JWT_R_MISSING, 1);
        return pt_txn_auth_none(txn, pt_jwt_www_authenticate(c, NULL, NULL, a));
    }
    if (f == PT_JWT_TOKEN_MANY)
        return deny(txn, c, PT_JWT_R_INVALID, "invalid_request", "more than one token was presented");
    if (st->token.n > c->max_token)
        return deny(txn, c, PT_JWT_R_INVALID, "invalid_token", pt_jwt_err_text(PT_JWT_ERR_TOO_LARGE));

    pt_jwt_worker *w = pt_txn_worker_state(txn, &pt_plugin_jwt);
    if (c->cache && w) {
        uint8_t key[PT_DIGEST_LEN];
        pt_str si, sig;
        pt_jwt_token_split(st->token, &si, &sig);
        token_digest(w->cache, c, sig, key);
        const pt_jwt_ident *e = pt_jwt_cache_get(w->cache, key, pt_loop_wall_us(pt_txn_loop(txn)) / 1000);
        if (e && pt_jwt_cache_entry_matches(e, si)) { /* else: another token with that signature part */
            /* Keep a JWKS source fresh even when every request hits the cache
             * (no put can happen in between: e stays valid). */
            if (c->jwks)
                pt_jwks_src_refresh(pt_jwks_src_get(&w->sources, pt_txn_loop(txn), c->jwks), c->jwks,
                                    pt_loop_now(pt_txn_loop(txn)), false);
            return apply_ident(txn, c, e, PT_JWT_R_CACHE_HIT);
        }
    }
    return decide(st);
}

static void jwt_on_pause_cancelled(pt_txn *txn, const void *conf, void *state, pt_side side)
{
    pt_jwks_waiter_cancel(&((pt_jwt_state *)state)->wait);
}

static void *jwt_worker_init(struct pt_loop *loop)
{
    pt_jwt_worker *w = pt_xcalloc(1, sizeof(*w));
    w->cache = pt_digest_cache_new(PT_JWT_DEFAULT_CACHE_ENTRIES, 1);
    return w;
}

static void jwt_worker_fini(struct pt_loop *loop, void *wstate)
{
    pt_jwt_worker *w = wstate;
    if (!w) return;
    pt_jwks_src_free_all(&w->sources);
    pt_digest_cache_free(w->cache);
    free(w);
}

const pt_plugin_type pt_plugin_jwt = {
    .name = "jwt",
    .configure = jwt_configure,
    .destroy = jwt_destroy,
    .worker_init = jwt_worker_init,
    .worker_fini = jwt_worker_fini,
    .state_size = sizeof(pt_jwt_state),
    .on_request_headers = jwt_on_request_headers,
    .on_pause_cancelled = jwt_on_pause_cancelled,
};
