/* forward_auth.c — asks an auth service about every request before it goes
 * upstream (nginx auth_request, Traefik ForwardAuth, Envoy ext_authz HTTP):
 * the request side pauses on a sub-request (pt_txn_subrequest) and resumes
 * from its callback with CONTINUE (allowed, identity headers copied) or
 * RESPOND (the denial, or 503/504). Positive results may be cached per
 * worker (pt_digest_store, plugin/digest_cache.h). Design note: docs/forward_auth.md. */
#include "plugins/forward_auth/forward_auth.h"

#include <openssl/evp.h>
#include <stdio.h>

#include "plugins/plugin_util.h"

/* ------------------------------------------------------------ hashing */

/* Incremental SHA-256 (OpenSSL EVP) with unambiguous framing: every field
 * is written as a tag byte and a 32-bit length before its bytes. */
typedef struct {
    EVP_MD_CTX *m;
} fa_hash;

static void hash_init(fa_hash *h)
{
    h->m = EVP_MD_CTX_new();
    if (!h->m || EVP_DigestInit_ex(h->m, EVP_sha256(), NULL) != 1) pt_panic(__FILE__, __LINE__, "EVP sha256 init");
}

static void hash_raw(fa_hash *h, const void *p, size_t n)
{
    if (n && EVP_DigestUpdate(h->m, p, n) != 1) pt_panic(__FILE__, __LINE__, "EVP update");
}

static void hash_field(fa_hash *h, uint8_t tag, pt_str s)
{
    uint8_t hdr[5] = {tag, (uint8_t)(s.n >> 24), (uint8_t)(s.n >> 16), (uint8_t)(s.n >> 8), (uint8_t)s.n};
    hash_raw(h, hdr, sizeof(hdr));
    hash_raw(h, s.p, s.n);
}

static void hash_u64(fa_hash *h, uint8_t tag, uint64_t v)
{
    char buf[24];
    int n = snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v);
    hash_field(h, tag, pt_str_make(buf, (size_t)n));
}

static void hash_final(fa_hash *h, uint8_t out[PT_DIGEST_LEN])
{
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(h->m, out, &len) != 1 || len != PT_DIGEST_LEN)
        pt_panic(__FILE__, __LINE__, "EVP final");
    EVP_MD_CTX_free(h->m);
    h->m = NULL;
}

/* ------------------------------------------------------------ configure */

/* Fields the plugin writes on the auth request itself: a client copy must
 * never travel in their place. X-Request-Id is added by pt_txn_subrequest. */
static const char *const generated_fields[] = {
    "x-forwarded-method", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-uri",
    "x-forwarded-for",    "x-real-ip",         "x-request-id",     NULL,
};
/* Fields the proxy sets on every upstream request: copying an auth
 * service's value would only be overwritten or mixed into them. */
static const char *const proxy_fields[] = {
    "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip", "via", NULL,
};
/* Fields a denial carries by other means. */
static const char *const denial_fields[] = {"content-type", NULL};

static bool in_list(const char *const *list, const char *name)
{
    for (size_t i = 0; list && list[i]; i++)
        if (pt_str_ieq_lit(pt_str_c(name), list[i])) return true;
    return false;
}

/* Reads a list of header names at `n` (a sequence; null = empty) into *out.
 * `reserved`: names refused with `why`. */
static bool read_names(pt_conf_ctx *ctx, const pt_conf_node *n, const char *what, const char *const *reserved,
                       const char *why, pt_fauth_names *out)
{
    out->v = NULL;
    out->n = 0;
    if (!n || n->kind == PT_NODE_NULL) return true;
    if (n->kind != PT_NODE_SEQ) {
        pt_conf_error(ctx, n, "forward_auth: '%s' must be a list of header names", what);
        return false;
    }
    bool ok = true;
    out->v = pt_arena_calloc(ctx->arena, (n->n ? n->n : 1) * sizeof(*out->v));
    for (size_t i = 0; i < n->n; i++) {
        const pt_conf_node *it = n->vals[i];
        const char *name = it->kind == PT_NODE_SCALAR ? it->scalar : "";
        if (it->kind != PT_NODE_SCALAR || !pt_plugin_header_name_ok(it->scalar, it->scalar_len)) {
            pt_conf_error(ctx, it, "forward_auth: '%s': invalid header name \"%s\" (must be an HTTP token)", what,
                          name);
            ok = false;
            continue;
        }
        if (pt_plugin_header_is_managed(name)) {
            pt_conf_error(ctx, it, "forward_auth: '%s': \"%s\" is a framing/hop-by-hop header managed by the proxy",
                          what, name);
            ok = false;
            continue;
        }
        if (in_list(reserved, name)) {
            pt_conf_error(ctx, it, "forward_auth: '%s': \"%s\" %s", what, name, why);
            ok = false;
            continue;
        }
        bool dup = false;
        for (size_t j = 0; j < out->n; j++)
            if (pt_str_ieq(out->v[j], pt_str_make(it->scalar, it->scalar_len))) dup = true;
        if (dup) {
            pt_conf_error(ctx, it, "forward_auth: '%s': \"%s\" appears more than once", what, name);
            ok = false;
            continue;
        }
        out->v[out->n++] = pt_arena_str(ctx->arena, pt_str_make(it->scalar, it->scalar_len));
    }
    return ok;
}

/* Default name lists (used when the key is absent). */
static void default_names(pt_conf_ctx *ctx, const char *const *names, pt_fauth_names *out)
{
    size_t n = 0;
    while (names[n]) n++;
    out->v = pt_arena_calloc(ctx->arena, (n ? n : 1) * sizeof(*out->v));
    out->n = n;
    for (size_t i = 0; i < n; i++) out->v[i] = pt_str_c(names[i]);
}

/* A request-target path: '/' then visible ASCII without '#'. */
static bool path_ok(const char *s, size_t n, bool allow_query)
{
    if (n == 0 || s[0] != '/') return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '#') return false;
        if (ch == '?' && !allow_query) return false;
    }
    return true;
}

static bool read_path(pt_conf_ctx *ctx, const pt_conf_node *node, pt_fauth_conf *c)
{
    const pt_conf_node *p = pt_conf_get(node, "path");
    const pt_conf_node *pp = pt_conf_get(node, "path_prefix");
    if (p && pp) {
        pt_conf_error(ctx, pp, "forward_auth: 'path' and 'path_prefix' are mutually exclusive");
        return false;
    }
    c->path = PT_STR_LIT("/");
    if (!p && !pp) return true;
    const pt_conf_node *n = p ? p : pp;
    const char *key = p ? "path" : "path_prefix";
    if (n->kind != PT_NODE_SCALAR || !path_ok(n->scalar, n->scalar_len, p != NULL)) {
        pt_conf_error(ctx, n,
                      "forward_auth: '%s' must start with '/' and contain only visible ASCII without '#'%s, got "
                      "\"%s\"",
                      key, p ? "" : " or '?'", n->kind == PT_NODE_SCALAR ? n->scalar : "");
        return false;
    }
    size_t len = n->scalar_len;
    if (pp)
        while (len > 0 && n->scalar[len - 1] == '/') len--; /* "/auth/" + "/x" -> "/auth/x"; "/" -> "" */
    c->path = pt_arena_str(ctx->arena, pt_str_make(n->scalar, len));
    c->path_prefix = pp != NULL;
    return true;
}

static bool read_method(pt_conf_ctx *ctx, const pt_conf_node *n, pt_fauth_conf *c)
{
    if (!n) return true;
    if (n->kind == PT_NODE_SCALAR && strcmp(n->scalar, "original") == 0) return true;
    bool ok = n->kind == PT_NODE_SCALAR && n->scalar_len > 0 && n->scalar_len <= 32;
    for (size_t i = 0; ok && i < n->scalar_len; i++) ok = pt_plugin_is_tchar((unsigned char)n->scalar[i]);
    if (!ok) {
        pt_conf_error(ctx, n, "forward_auth: 'method' must be 'original' or a method token such as GET, got \"%s\"",
                      n->kind == PT_NODE_SCALAR ? n->scalar : "");
        return false;
    }
    c->method = pt_arena_str(ctx->arena, pt_str_make(n->scalar, n->scalar_len));
    return true;
}

static bool contains_name(const pt_fauth_names *l, pt_str name)
{
    for (size_t i = 0; i < l->n; i++)
        if (pt_str_ieq(l->v[i], name)) return true;
    return false;
}

/* Reads cache: {ttl, key, max_entries}. */
static bool read_cache(pt_conf_ctx *ctx, const pt_conf_node *n, pt_fauth_conf *c)
{
    static const char *const allowed[] = {"ttl", "key", "max_entries", NULL};
    if (!n || n->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, n, "forward_auth: 'cache' must be a mapping with 'ttl' (and optional 'key', 'max_entries')");
        return false;
    }
    bool ok = pt_conf_check_keys(ctx, n, allowed, "forward_auth.cache");
    c->cache = true;
    c->cache_max_entries = PT_FAUTH_DEFAULT_MAX_ENTRIES;
    const pt_conf_node *ttl = pt_conf_get(n, "ttl");
    if (!ttl) {
        pt_conf_error(ctx, n, "forward_auth: 'cache.ttl' is required");
        ok = false;
    } else if (!pt_conf_duration_ms(ctx, ttl, &c->cache_ttl_ms)) {
        ok = false;
    } else if (c->cache_ttl_ms == 0 || c->cache_ttl_ms > PT_FAUTH_MAX_TTL_MS) {
        pt_conf_error(ctx, ttl, "forward_auth: 'cache.ttl' must be between 1ms and 24h");
        ok = false;
    }
    const pt_conf_node *me = pt_conf_get(n, "max_entries");
    if (me) {
        int64_t v;
        if (pt_conf_int(ctx, me, 1, PT_FAUTH_MAX_MAX_ENTRIES, &v)) c->cache_max_entries = (size_t)v;
        else ok = false;
    }

    /* The key: every request header sent to the auth service (else an
     * answer given for one value would be reused for another: a bypass),
     * plus what `key` adds. */
    const pt_conf_node *key = pt_conf_get(n, "key");
    size_t cap = c->request_headers.n + (key && key->kind == PT_NODE_SEQ ? key->n : 0);
    c->cache_key = pt_arena_calloc(ctx->arena, (cap ? cap : 1) * sizeof(*c->cache_key));
    pt_fauth_names given = {0};
    if (key && key->kind != PT_NODE_NULL) {
        if (key->kind != PT_NODE_SEQ) {
            pt_conf_error(ctx, key, "forward_auth: 'cache.key' must be a list of header names and :method, :path, "
                                    ":host, :client");
            return false;
        }
        given.v = pt_arena_calloc(ctx->arena, (key->n ? key->n : 1) * sizeof(*given.v));
        for (size_t i = 0; i < key->n; i++) {
            const pt_conf_node *it = key->vals[i];
            static const char *const pseudo[] = {":method", ":path", ":host", ":client"};
            pt_fauth_key k = {PT_FAUTH_KEY_HEADER, PT_STR_NULL};
            const char *s = it->kind == PT_NODE_SCALAR ? it->scalar : "";
            bool found = false;
            for (size_t j = 0; j < PT_ARRAY_LEN(pseudo); j++)
                if (strcmp(s, pseudo[j]) == 0) {
                    k.kind = (pt_fauth_key_kind)(PT_FAUTH_KEY_METHOD + j);
                    found = true;
                }
            if (!found) {
                if (it->kind != PT_NODE_SCALAR || !pt_plugin_header_name_ok(it->scalar, it->scalar_len)) {
                    pt_conf_error(ctx, it,
                                  "forward_auth: 'cache.key': \"%s\" is neither a header name nor one of :method, "
                                  ":path, :host, :client",
                                  s);
                    ok = false;
                    continue;
                }
                k.name = pt_arena_str(ctx->arena, pt_str_make(it->scalar, it->scalar_len));
            }
            bool dup = false;
            for (size_t j = 0; j < c->ncache_key; j++)
                if (c->cache_key[j].kind == k.kind &&
                    (k.kind != PT_FAUTH_KEY_HEADER || pt_str_ieq(c->cache_key[j].name, k.name)))
                    dup = true;
            if (dup) {
                pt_conf_error(ctx, it, "forward_auth: 'cache.key': \"%s\" appears more than once", s);
                ok = false;
                continue;
            }
            if (k.kind == PT_FAUTH_KEY_HEADER) given.v[given.n++] = k.name;
            c->cache_key[c->ncache_key++] = k;
        }
        for (size_t i = 0; i < c->request_headers.n; i++) {
            if (contains_name(&given, c->request_headers.v[i])) continue;
            pt_conf_error(ctx, key,
                          "forward_auth: 'cache.key' must include every request_headers entry: \"%s\" is sent to "
                          "the auth service but is not part of the key (an answer given for one value would be "
                          "reused for another)",
                          c->request_headers.v[i].p);
            ok = false;
        }
    } else {
        for (size_t i = 0; i < c->request_headers.n; i++)
            c->cache_key[c->ncache_key++] = (pt_fauth_key){PT_FAUTH_KEY_HEADER, c->request_headers.v[i]};
    }
    return ok;
}

/* The fingerprint: every setting that shapes an auth call or an entry. */
static void compute_fingerprint(pt_fauth_conf *c)
{
    fa_hash h;
    hash_init(&h);
    hash_field(&h, 'u', pt_str_c(c->upstream->name));
    for (size_t i = 0; i < c->upstream->ntargets; i++) {
        hash_field(&h, 't', pt_str_c(c->upstream->targets[i].addr.text));
        hash_field(&h, 'T', pt_str_c(c->upstream->targets[i].host));
    }
    hash_field(&h, c->path_prefix ? 'P' : 'p', c->path);
    hash_field(&h, 'm', c->method);
    const pt_fauth_names *lists[] = {&c->request_headers, &c->upstream_headers};
    for (size_t l = 0; l < PT_ARRAY_LEN(lists); l++)
        for (size_t i = 0; i < lists[l]->n; i++) hash_field(&h, (uint8_t)('0' + l), lists[l]->v[i]);
    for (size_t i = 0; i < c->ncache_key; i++) {
        hash_u64(&h, 'k', (uint64_t)c->cache_key[i].kind);
        hash_field(&h, 'K', c->cache_key[i].name);
    }
    hash_u64(&h, 'l', c->cache_ttl_ms);
    hash_u64(&h, 'e', c->cache_max_entries);
    hash_final(&h, c->fingerprint);
}

/* Declared once per configuration, however many instances: every
 * instance naming the same upstream shares one series. */
static const char *const decision_results[] = {"allowed", "denied", "error", "timeout", "cache_hit", NULL};
static const pt_metric_dim decision_dims[] = {{"result", decision_results}};
static const char *const decision_labels[] = {"upstream", NULL};
static const pt_metric_desc decisions_desc = {
    .name = "portico_forward_auth_decisions_total",
    .help = "Requests decided by forward_auth, by the auth upstream and the result.",
    .type = PT_METRIC_COUNTER,
    .labels = decision_labels,
    .dims = decision_dims,
    .ndims = 1,
};

static void *fauth_configure(pt_conf_ctx *ctx, const pt_conf_node *node)
{
    static const char *const allowed[] = {
        "upstream",       "path",           "path_prefix", "method",  "request_headers", "upstream_headers",
        "client_headers", "timeout",        "failure",     "max_response", "cache",    NULL,
    };
    if (!node || node->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, node, "forward_auth: expected a mapping with at least 'upstream'");
        return NULL;
    }
    bool ok = pt_conf_check_keys(ctx, node, allowed, "forward_auth");
    pt_fauth_conf *c = pt_arena_calloc(ctx->arena, sizeof(*c));
    c->timeout_ms = PT_FAUTH_DEFAULT_TIMEOUT_MS;
    c->max_response = PT_FAUTH_DEFAULT_MAX_RESPONSE;

    const pt_conf_node *up = pt_conf_get(node, "upstream");
    if (!up) {
        pt_conf_error(ctx, node, "forward_auth: 'upstream' is required (the name of the auth service's upstream)");
        ok = false;
    } else if (!(c->upstream = pt_conf_upstream(ctx, up))) {
        ok = false;
    }
    if (!read_path(ctx, node, c)) ok = false;
    if (!read_method(ctx, pt_conf_get(node, "method"), c)) ok = false;

    static const char *const def_request[] = {"Authorization", "Cookie", NULL};
    static const char *const def_client[] = {"WWW-Authenticate", "Location", "Set-Cookie", NULL};
    const pt_conf_node *rh = pt_conf_get(node, "request_headers");
    if (rh) {
        if (!read_names(ctx, rh, "request_headers", generated_fields, "is set by forward_auth itself",
                        &c->request_headers))
            ok = false;
    } else {
        default_names(ctx, def_request, &c->request_headers);
    }
    if (!read_names(ctx, pt_conf_get(node, "upstream_headers"), "upstream_headers", proxy_fields,
                    "is set by the proxy on every upstream request", &c->upstream_headers))
        ok = false;
    const pt_conf_node *ch = pt_conf_get(node, "client_headers");
    if (ch) {
        if (!read_names(ctx, ch, "client_headers", denial_fields, "always travels with a denial's body",
                        &c->client_headers))
            ok = false;
    } else {
        default_names(ctx, def_client, &c->client_headers);
    }

    const pt_conf_node *t = pt_conf_get(node, "timeout");
    if (t) {
        if (!pt_conf_duration_ms(ctx, t, &c->timeout_ms)) {
            ok = false;
        } else if (c->timeout_ms == 0 || c->timeout_ms > PT_FAUTH_MAX_TIMEOUT_MS) {
            pt_conf_error(ctx, t, "forward_auth: 'timeout' must be between 1ms and 5m");
            ok = false;
        }
    }
    const pt_conf_node *f = pt_conf_get(node, "failure");
    if (f) {
        if (f->kind == PT_NODE_SCALAR && strcmp(f->scalar, "deny") == 0) c->failure_allow = false;
        else if (f->kind == PT_NODE_SCALAR && strcmp(f->scalar, "allow") == 0) c->failure_allow = true;
        else {
            pt_conf_error(ctx, f, "forward_auth: 'failure' must be 'deny' or 'allow'");
            ok = false;
        }
    }
    const pt_conf_node *mr = pt_conf_get(node, "max_response");
    if (mr) {
        if (!pt_conf_size(ctx, mr, &c->max_response)) {
            ok = false;
        } else if (c->max_response == 0 || c->max_response > PT_FAUTH_MAX_MAX_RESPONSE) {
            pt_conf_error(ctx, mr, "forward_auth: 'max_response' must be between 1 and 16m");
            ok = false;
        }
    }
    const pt_conf_node *cache = pt_conf_get(node, "cache");
    if (cache && !read_cache(ctx, cache, c)) ok = false;
    if (!ok) return NULL;
    compute_fingerprint(c);
    c->decisions = pt_conf_metric(ctx, up, &decisions_desc, (const char *const[]){c->upstream->name});
    return c;
}

/* ------------------------------------------------------------ pure helpers */

pt_str pt_fauth_uri(pt_str path, const pt_request *req, pt_arena *a)
{
    if (!path.n) return req->target; /* not routed (the core answers 400 for it) */
    size_t qn = req->has_query ? req->query.n + 1 : 0;
    char *out = pt_arena_alloc(a, path.n + qn + 1);
    memcpy(out, path.p, path.n);
    size_t n = path.n;
    if (req->has_query) {
        out[n] = '?';
        memcpy(out + n + 1, req->query.p, req->query.n);
    }
    out[n + qn] = '\0';
    return pt_str_make(out, n + qn);
}

pt_str pt_fauth_target(const pt_fauth_conf *c, pt_str uri, pt_arena *a)
{
    if (!c->path_prefix) return c->path;
    char *s = pt_arena_alloc(a, c->path.n + uri.n + 1);
    memcpy(s, c->path.p, c->path.n);
    memcpy(s + c->path.n, uri.p, uri.n);
    s[c->path.n + uri.n] = '\0';
    return pt_str_make(s, c->path.n + uri.n);
}

void pt_fauth_auth_headers(const pt_fauth_conf *c, const pt_request *req, pt_str uri, pt_str client, pt_arena *a,
                           pt_headers *out)
{
    const pt_headers *h = &req->headers;
    for (size_t i = 0; i < c->request_headers.n; i++)
        for (uint32_t j = 0; j < h->n; j++)
            if (pt_str_ieq(h->v[j].name, c->request_headers.v[i])) pt_headers_add(out, a, h->v[j].name, h->v[j].value);
    pt_headers_add(out, a, PT_STR_LIT("X-Forwarded-Method"), req->method_str);
    pt_headers_add(out, a, PT_STR_LIT("X-Forwarded-Proto"), req->scheme.n ? req->scheme : PT_STR_LIT("http"));
    if (req->authority.n) pt_headers_add(out, a, PT_STR_LIT("X-Forwarded-Host"), req->authority);
    pt_headers_add(out, a, PT_STR_LIT("X-Forwarded-Uri"), uri);
    if (client.n) {
        pt_headers_add(out, a, PT_STR_LIT("X-Forwarded-For"), client);
        pt_headers_add(out, a, PT_STR_LIT("X-Real-IP"), client);
    }
}

void pt_fauth_cache_key(const pt_fauth_conf *c, const uint8_t salt[PT_DIGEST_SALT_LEN], const pt_request *req,
                        pt_str uri, pt_str client, uint8_t out[PT_DIGEST_LEN])
{
    fa_hash h;
    hash_init(&h);
    hash_raw(&h, salt, PT_DIGEST_SALT_LEN);
    for (size_t i = 0; i < c->ncache_key; i++) {
        const pt_fauth_key *k = &c->cache_key[i];
        switch (k->kind) {
        case PT_FAUTH_KEY_METHOD: hash_field(&h, 'M', req->method_str); break;
        case PT_FAUTH_KEY_PATH: hash_field(&h, 'U', uri); break;
        case PT_FAUTH_KEY_HOST: hash_field(&h, 'H', req->authority); break;
        case PT_FAUTH_KEY_CLIENT: hash_field(&h, 'C', client); break;
        case PT_FAUTH_KEY_HEADER: {
            /* Every value, in order; "absent" and "present but empty" differ. */
            hash_field(&h, 'N', k->name);
            for (uint32_t j = 0; j < req->headers.n; j++)
                if (pt_str_ieq(req->headers.v[j].name, k->name)) hash_field(&h, 'V', req->headers.v[j].value);
            hash_field(&h, 'E', PT_STR_NULL);
            break;
        }
        }
    }
    hash_final(&h, out);
}

/* True if a value may be copied into a message we send. */
static bool value_ok(pt_str v) { return pt_plugin_header_value_ok(v.p, v.n) && !memchr(v.p, '\0', v.n); }

/* Every field of `h` named in `names` (and Content-Type when `ct`) has a
 * clean value. */
static bool copied_values_ok(const pt_headers *h, const pt_fauth_names *names, bool ct)
{
    for (uint32_t j = 0; h && j < h->n; j++) {
        bool copied = contains_name(names, h->v[j].name) || (ct && pt_str_ieq_lit(h->v[j].name, "content-type"));
        if (copied && !value_ok(h->v[j].value)) return false;
    }
    return true;
}

pt_fauth_verdict pt_fauth_classify(const pt_fauth_conf *c, const pt_http_result *r)
{
    if (r->error == PT_HTTP_ERR_TIMEOUT) return PT_FAUTH_FAIL_TIMEOUT;
    if (r->error != PT_HTTP_OK) return PT_FAUTH_FAIL;
    if (r->status < 200 || r->status > 599) return PT_FAUTH_FAIL;
    if (r->status < 300)
        return copied_values_ok(r->headers, &c->upstream_headers, false) ? PT_FAUTH_ALLOW : PT_FAUTH_FAIL;
    return copied_values_ok(r->headers, &c->client_headers, true) ? PT_FAUTH_DENY : PT_FAUTH_FAIL;
}

/* Skips spaces and tabs. */
static size_t skip_ows(pt_str s, size_t i)
{
    while (i < s.n && (s.p[i] == ' ' || s.p[i] == '\t')) i++;
    return i;
}

uint64_t pt_fauth_cache_ttl(const pt_fauth_conf *c, const pt_headers *res)
{
    uint64_t ttl = c->cache_ttl_ms;
    for (uint32_t j = 0; res && j < res->n; j++) {
        if (!pt_str_ieq_lit(res->v[j].name, "cache-control")) continue;
        pt_str v = res->v[j].value;
        size_t i = 0;
        while (i < v.n) {
            i = skip_ows(v, i);
            size_t ns = i;
            while (i < v.n && v.p[i] != ',' && v.p[i] != '=' && v.p[i] != ' ' && v.p[i] != '\t') i++;
            pt_str name = pt_str_make(v.p + ns, i - ns);
            i = skip_ows(v, i);
            pt_str arg = PT_STR_NULL;
            if (i < v.n && v.p[i] == '=') {
                i = skip_ows(v, i + 1);
                bool quoted = i < v.n && v.p[i] == '"';
                if (quoted) i++;
                size_t as = i;
                while (i < v.n && (quoted ? v.p[i] != '"' : (v.p[i] != ',' && v.p[i] != ' ' && v.p[i] != '\t'))) i++;
                arg = pt_str_make(v.p + as, i - as);
                if (quoted && i < v.n) i++;
            }
            while (i < v.n && v.p[i] != ',') i++; /* anything else up to the next directive */
            if (i < v.n) i++;
            if (pt_str_ieq_lit(name, "no-store") || pt_str_ieq_lit(name, "no-cache")) return 0;
            if (pt_str_ieq_lit(name, "max-age")) {
                uint64_t secs = 0;
                bool digits = arg.n > 0;
                for (size_t k = 0; k < arg.n; k++) {
                    if (arg.p[k] < '0' || arg.p[k] > '9') digits = false;
                    else if (secs < 86400ull * 365) secs = secs * 10 + (uint64_t)(arg.p[k] - '0');
                }
                if (!digits) return 0; /* an invalid max-age means stale (RFC 9111 §4.2.1) */
                if (secs * 1000 < ttl) ttl = secs * 1000;
            }
        }
    }
    return ttl;
}

/* ------------------------------------------------------------ the phases */

/* Applies the failure policy: the request goes on, or 503/504. */
static pt_plugin_result fail(pt_txn *txn, const pt_fauth_conf *c, pt_fauth_verdict v)
{
    pt_metric_add(c->decisions, v == PT_FAUTH_FAIL_TIMEOUT ? PT_FAUTH_R_TIMEOUT : PT_FAUTH_R_ERROR, 1);
    if (c->failure_allow) return PT_PLUGIN_CONTINUE;
    if (v == PT_FAUTH_FAIL_TIMEOUT)
        pt_txn_respond_problem(txn, 504, "the authorization service did not answer in time");
    else
        pt_txn_respond_problem(txn, 503, "the authorization service is unavailable");
    return PT_PLUGIN_RESPOND;
}

/* Copies every field of `from` named in `names` onto the request (values
 * copied into the request arena: `from` may go away first). */
static void copy_to_request(pt_txn *txn, const pt_fauth_names *names, const pt_header *from, size_t n)
{
    pt_request *req = pt_txn_request(txn);
    pt_arena *a = pt_txn_arena(txn);
    for (size_t i = 0; i < n; i++)
        if (contains_name(names, from[i].name))
            pt_headers_add(&req->headers, a, pt_arena_str(a, from[i].name), pt_arena_str(a, from[i].value));
}

/* A cached positive result (a digest cache blob): the header fields to copy
 * onto the upstream request, pointing into the blob. */
typedef struct {
    size_t nheaders;
    const pt_header *headers;
} fa_cached;

/* An allowing answer: copy the identity fields, maybe cache them. */
static void allow(pt_txn *txn, pt_fauth_state *st, const pt_http_result *r)
{
    const pt_fauth_conf *c = st->conf;
    const pt_headers *h = r->headers;
    size_t n = h ? h->n : 0;
    copy_to_request(txn, &c->upstream_headers, n ? h->v : NULL, n);
    if (!st->has_key) return;
    uint64_t ttl = pt_fauth_cache_ttl(c, h);
    pt_digest_store *store = pt_txn_worker_state(txn, &pt_plugin_forward_auth);
    if (!ttl || !store) return;
    /* The entry holds only the fields that are copied. */
    pt_header *keep = n ? pt_arena_alloc(pt_txn_arena(txn), n * sizeof(*keep)) : NULL;
    size_t nk = 0, bytes = 0;
    for (size_t i = 0; i < n; i++) {
        if (!contains_name(&c->upstream_headers, h->v[i].name)) continue;
        keep[nk++] = h->v[i];
        bytes += h->v[i].name.n + h->v[i].value.n;
    }
    if (bytes > PT_FAUTH_MAX_CACHED_HEADER_BYTES) return;
    uint64_t now = pt_loop_now(pt_txn_loop(txn));
    pt_digest_cache *cache = pt_digest_store_cache(store, c->fingerprint, c->cache_max_entries, 1, now);
    fa_cached *e = pt_digest_cache_put(cache, st->key, PT_DIGEST_POSITIVE, now + ttl, NULL,
                                       sizeof(fa_cached) + pt_digest_blob_headers_size(keep, nk), now);
    if (!e) return;
    char *p = (char *)(e + 1);
    e->headers = pt_digest_blob_headers(&p, keep, nk);
    e->nheaders = nk;
}

/* A denial: the auth service's status, selected fields, Content-Type and body. */
static void deny(pt_txn *txn, const pt_fauth_conf *c, const pt_http_result *r)
{
    const pt_headers *h = r->headers;
    const pt_str *ct = h ? pt_headers_get(h, "content-type") : NULL;
    pt_txn_respond(txn, r->status, ct ? *ct : PT_STR_NULL, r->body);
    for (uint32_t j = 0; h && j < h->n; j++)
        if (contains_name(&c->client_headers, h->v[j].name)) pt_txn_respond_header(txn, h->v[j].name, h->v[j].value);
}

/* The sub-request's answer. Runs on the request's worker, while the
 * request is alive and paused here (pt_txn_subrequest cancels the call,
 * and this callback with it, when the request ends). */
static void fauth_done(void *data, const pt_http_result *r)
{
    pt_fauth_state *st = data;
    pt_txn *txn = st->txn;
    st->call = NULL;
    pt_fauth_verdict v = pt_fauth_classify(st->conf, r);
    pt_plugin_result res;
    switch (v) {
    case PT_FAUTH_ALLOW:
        pt_metric_add(st->conf->decisions, PT_FAUTH_R_ALLOWED, 1);
        allow(txn, st, r);
        res = PT_PLUGIN_CONTINUE;
        break;
    case PT_FAUTH_DENY:
        pt_metric_add(st->conf->decisions, PT_FAUTH_R_DENIED, 1);
        deny(txn, st->conf, r);
        res = PT_PLUGIN_RESPOND;
        break;
    default:
        res = fail(txn, st->conf, v);
        break;
    }
    pt_txn_resume(txn, PT_SIDE_REQUEST, res);
}

static pt_plugin_result fauth_on_request_headers(pt_txn *txn, const void *conf, void *state)
{
    const pt_fauth_conf *c = conf;
    pt_fauth_state *st = state;
    st->txn = txn;
    st->conf = c;
    pt_request *req = pt_txn_request(txn);
    pt_arena *a = pt_txn_arena(txn);
    pt_str uri = pt_fauth_uri(pt_txn_path(txn), req, a);
    pt_str client = pt_txn_client_addr(txn);

    /* The key and the auth request are made from the request as the client
     * sent it (an upstream_headers name may also be a request_headers one:
     * token exchange), then the client's copies of upstream_headers go. */
    pt_digest_store *store = c->cache ? pt_txn_worker_state(txn, &pt_plugin_forward_auth) : NULL;
    pt_digest_cache *cache = NULL;
    if (store) {
        /* this configuration's cache: its salt keys the entry (looked up
         * again after the call, as the store may free caches meanwhile) */
        cache = pt_digest_store_cache(store, c->fingerprint, c->cache_max_entries, 1, pt_loop_now(pt_txn_loop(txn)));
        pt_fauth_cache_key(c, pt_digest_cache_salt(cache), req, uri, client, st->key);
        st->has_key = true;
    }
    pt_headers *fields = pt_arena_calloc(a, sizeof(*fields));
    pt_fauth_auth_headers(c, req, uri, client, a, fields);
    for (size_t i = 0; i < c->upstream_headers.n; i++) pt_headers_remove(&req->headers, c->upstream_headers.v[i].p);

    if (cache) {
        const fa_cached *e = pt_digest_cache_get(cache, st->key, pt_loop_now(pt_txn_loop(txn)), NULL, NULL);
        if (e) {
            pt_metric_add(c->decisions, PT_FAUTH_R_CACHE_HIT, 1);
            copy_to_request(txn, &c->upstream_headers, e->headers, e->nheaders);
            return PT_PLUGIN_CONTINUE;
        }
    }

    pt_http_request hr = {
        .upstream = c->upstream,
        .method = c->method.n ? c->method : req->method_str,
        .target = pt_fauth_target(c, uri, a),
        .headers = fields,
        .timeout_ms = c->timeout_ms,
        .max_body = (size_t)c->max_response,
    };
    st->call = pt_txn_subrequest(txn, &hr, fauth_done, st);
    if (!st->call) return fail(txn, c, PT_FAUTH_FAIL);
    return PT_PLUGIN_PAUSE;
}

static void *fauth_worker_init(struct pt_loop *loop) { return pt_digest_store_new(); }

static void fauth_worker_fini(struct pt_loop *loop, void *wstate) { pt_digest_store_free(wstate); }

const pt_plugin_type pt_plugin_forward_auth = {
    .name = "forward_auth",
    .configure = fauth_configure,
    .worker_init = fauth_worker_init,
    .worker_fini = fauth_worker_fini,
    .state_size = sizeof(pt_fauth_state),
    .on_request_headers = fauth_on_request_headers,
};
