/* oauth2_introspection.c — RFC 7662 token introspection: the request's
 * Bearer token is sent to the authorization server's introspection
 * endpoint (through the internal HTTP client, the request side paused),
 * with the gateway's client credentials; an active token names the
 * consumer and brings its scopes and claims, anything else is a 401 with
 * an RFC 6750 challenge. Answers are cached per worker (a digest store).
 * Semantics in oauth2_introspection.h; docs/authentication.md. */
#include "plugins/oauth2_introspection/oauth2_introspection.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>

#include "plugins/plugin_util.h"

/* ------------------------------------------------------------ pure helpers */

/* RFC 6750 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" */
static bool b64token_ok(pt_str t)
{
    size_t i = 0;
    while (i < t.n) {
        unsigned char ch = (unsigned char)t.p[i];
        bool body = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                    (ch && strchr("-._~+/", ch));
        if (!body) break;
        i++;
    }
    if (i == 0) return false;
    while (i < t.n && t.p[i] == '=') i++;
    return i == t.n;
}

/* True when header value v is a Bearer credential; *rest is what follows
 * the scheme and its spaces. */
static bool is_bearer(pt_str v, pt_str *rest)
{
    if (v.n < 6 || !pt_str_ieq_lit(pt_str_make(v.p, 6), "bearer")) return false;
    if (v.n > 6 && v.p[6] != ' ') return false; /* "Bearerx": another scheme */
    size_t i = 6;
    while (i < v.n && v.p[i] == ' ') i++;
    *rest = pt_str_make(v.p + i, v.n - i);
    return true;
}

pt_oi_token_found pt_oi_find_token(const pt_request *req, pt_str *token)
{
    int count = 0;
    bool bad = false;
    *token = PT_STR_NULL;
    for (uint32_t i = 0; i < req->headers.n; i++) {
        pt_str rest;
        if (!pt_str_ieq_lit(req->headers.v[i].name, "authorization") || !is_bearer(req->headers.v[i].value, &rest))
            continue;
        if (count++ == 0) *token = rest;
        if (!b64token_ok(rest)) bad = true;
    }
    if (count == 0) return PT_OI_TOKEN_NONE;
    if (count > 1) return PT_OI_TOKEN_MANY;
    return bad ? PT_OI_TOKEN_BAD : PT_OI_TOKEN_ONE;
}

int pt_oi_remove_bearer(pt_request *req)
{
    pt_headers *h = &req->headers;
    uint32_t out = 0;
    int removed = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        pt_str rest;
        if (pt_str_ieq_lit(h->v[i].name, "authorization") && is_bearer(h->v[i].value, &rest)) {
            removed++;
            continue;
        }
        h->v[out++] = h->v[i];
    }
    h->n = out;
    return removed;
}

pt_str pt_oi_form_encode(pt_str s, pt_arena *a)
{
    static const char hex[] = "0123456789ABCDEF";
    char *o = pt_arena_alloc(a, s.n * 3 + 1);
    size_t n = 0;
    for (size_t i = 0; i < s.n; i++) {
        unsigned char ch = (unsigned char)s.p[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
            ch == '.' || ch == '_' || ch == '*') {
            o[n++] = (char)ch;
        } else if (ch == ' ') {
            o[n++] = '+';
        } else {
            o[n++] = '%';
            o[n++] = hex[ch >> 4];
            o[n++] = hex[ch & 15];
        }
    }
    o[n] = '\0';
    return pt_str_make(o, n);
}

pt_str pt_oi_request_body(const pt_oi_conf *c, pt_str token, pt_arena *a)
{
    pt_str t = pt_oi_form_encode(token, a);
    char *s = pt_arena_printf(a, "%.*stoken=%.*s&token_type_hint=access_token", (int)c->body_prefix.n,
                              c->body_prefix.p ? c->body_prefix.p : "", (int)t.n, t.p);
    return pt_str_c(s);
}

pt_str pt_oi_basic_credentials(pt_str id, pt_str secret, pt_arena *a)
{
    pt_str fi = pt_oi_form_encode(id, a), fs = pt_oi_form_encode(secret, a);
    size_t n = fi.n + 1 + fs.n;
    char *plain = pt_arena_alloc(a, n + 1);
    memcpy(plain, fi.p, fi.n);
    plain[fi.n] = ':';
    memcpy(plain + fi.n + 1, fs.p, fs.n);
    char *out = pt_arena_alloc(a, 6 + 4 * ((n + 2) / 3) + 1);
    memcpy(out, "Basic ", 6);
    int len = EVP_EncodeBlock((unsigned char *)out + 6, (const unsigned char *)plain, (int)n);
    OPENSSL_cleanse(plain, n);
    return pt_str_make(out, 6 + (size_t)len);
}

/* Deepest nesting of arrays/objects in a JSON text (strings skipped). */
static int json_depth(pt_str s)
{
    int depth = 0, max = 0;
    bool in_str = false;
    for (size_t i = 0; i < s.n; i++) {
        char ch = s.p[i];
        if (in_str) {
            if (ch == '\\') i++;
            else if (ch == '"') in_str = false;
        } else if (ch == '"') {
            in_str = true;
        } else if (ch == '[' || ch == '{') {
            if (++depth > max) max = depth;
        } else if (ch == ']' || ch == '}') {
            depth--;
        }
    }
    return max;
}

/* A claim's value as kept: strings as they are, anything else as compact
 * JSON; empty when too long or holding control bytes. */
static pt_str claim_text(const json_t *v, pt_arena *a)
{
    pt_str out = PT_STR_NULL;
    if (json_is_string(v)) {
        out = pt_str_make(json_string_value(v), json_string_length(v));
        if (out.n > PT_OI_MAX_CLAIM || !pt_plugin_header_value_ok(out.p, out.n)) return PT_STR_NULL;
        return pt_arena_str(a, out);
    }
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!s) return PT_STR_NULL;
    size_t n = strlen(s);
    if (n <= PT_OI_MAX_CLAIM && pt_plugin_header_value_ok(s, n)) out = pt_arena_str(a, pt_str_make(s, n));
    free(s);
    return out;
}

/* A time claim in ms: absent -> true with *ms = 0; else must be a
 * non-negative number. */
static bool time_claim(const json_t *o, const char *name, uint64_t *ms)
{
    *ms = 0;
    const json_t *v = json_object_get(o, name);
    if (!v) return true;
    double d;
    if (json_is_integer(v)) d = (double)json_integer_value(v);
    else if (json_is_real(v)) d = json_real_value(v);
    else return false;
    if (!(d >= 0) || d > 1e13) return false;
    *ms = (uint64_t)d * 1000;
    return true;
}

static bool in_strings(const char *const *v, size_t n, const char *s, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(v[i]) == len && memcmp(v[i], s, len) == 0) return true;
    return false;
}

/* aud (a string or an array of strings) holds one of the configured audiences. */
static bool audience_ok(const pt_oi_conf *c, const json_t *aud)
{
    if (json_is_string(aud)) return in_strings(c->audiences, c->naudiences, json_string_value(aud), json_string_length(aud));
    if (!json_is_array(aud)) return false;
    size_t i;
    const json_t *e;
    json_array_foreach(aud, i, e) {
        if (json_is_string(e) && in_strings(c->audiences, c->naudiences, json_string_value(e), json_string_length(e)))
            return true;
    }
    return false;
}

/* The claims made available to authorization plugins (pt_txn_set_claim). */
static const char *const kept_claims[] = {"sub", "client_id", "username", "iss", "aud", "scope", "token_type"};

static void answer(pt_oi_answer *out, pt_oi_answer_kind kind, const char *detail)
{
    out->kind = kind;
    out->detail = detail;
}

void pt_oi_parse_answer(const pt_oi_conf *c, pt_str body, uint64_t now_ms, pt_arena *a, pt_oi_answer *out)
{
    memset(out, 0, sizeof(*out));
    if (json_depth(body) > PT_OI_MAX_JSON_DEPTH) return answer(out, PT_OI_ANSWER_INVALID, "the answer is nested too deeply");
    json_error_t err;
    json_t *o = json_loadb(body.p ? body.p : "", body.n, JSON_REJECT_DUPLICATES, &err);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        return answer(out, PT_OI_ANSWER_INVALID, "the answer is not a JSON object (or repeats a member)");
    }
    const json_t *act = json_object_get(o, "active");
    uint64_t exp = 0, nbf = 0;
    if (!json_is_boolean(act)) {
        answer(out, PT_OI_ANSWER_INVALID, "the answer has no boolean 'active'");
    } else if (!json_is_true(act)) {
        answer(out, PT_OI_ANSWER_INACTIVE, "the token is not active");
    } else if (!time_claim(o, "exp", &exp) || !time_claim(o, "nbf", &nbf) ||
               (json_object_get(o, "scope") && !json_is_string(json_object_get(o, "scope")))) {
        answer(out, PT_OI_ANSWER_INVALID, "the answer has an invalid exp, nbf or scope");
    } else if (exp && exp <= now_ms) {
        answer(out, PT_OI_ANSWER_INACTIVE, "the token has expired");
    } else if (nbf > now_ms) {
        answer(out, PT_OI_ANSWER_INACTIVE, "the token is not valid yet");
    } else if (c->nissuers && !(json_is_string(json_object_get(o, "iss")) &&
                                in_strings(c->issuers, c->nissuers, json_string_value(json_object_get(o, "iss")),
                                           json_string_length(json_object_get(o, "iss"))))) {
        answer(out, PT_OI_ANSWER_REFUSED, "the token's issuer is not accepted");
    } else if (c->naudiences && !audience_ok(c, json_object_get(o, "aud"))) {
        answer(out, PT_OI_ANSWER_REFUSED, "the token is not meant for this audience");
    } else {
        for (size_t i = 0; i < c->nconsumer_claims && !out->consumer.n; i++) {
            const json_t *v = json_object_get(o, c->consumer_claims[i]);
            size_t n = json_string_length(v);
            if (json_is_string(v) && n > 0 && n <= PT_OI_MAX_CONSUMER &&
                pt_plugin_header_value_ok(json_string_value(v), n) && !memchr(json_string_value(v), 0, n))
                out->consumer = pt_arena_str(a, pt_str_make(json_string_value(v), n));
        }
        if (!out->consumer.n) {
            answer(out, PT_OI_ANSWER_REFUSED, "the token names no consumer");
        } else {
            answer(out, PT_OI_ANSWER_ACTIVE, NULL);
            out->exp_ms = exp;
            out->claims = pt_arena_calloc(a, PT_ARRAY_LEN(kept_claims) * sizeof(*out->claims));
            for (size_t i = 0; i < PT_ARRAY_LEN(kept_claims); i++) {
                const json_t *v = json_object_get(o, kept_claims[i]);
                pt_str t = v ? claim_text(v, a) : PT_STR_NULL;
                if (t.n) out->claims[out->nclaims++] = (pt_header){pt_str_c(kept_claims[i]), t};
            }
        }
    }
    json_decref(o);
}

void pt_oi_deadlines(const pt_oi_conf *c, uint64_t exp_ms, uint64_t now_ms, uint64_t *fresh, uint64_t *keep)
{
    uint64_t f = now_ms + c->ttl_ms, k = f + c->stale_ms;
    if (exp_ms && exp_ms < f) f = exp_ms;
    if (exp_ms && exp_ms < k) k = exp_ms;
    *fresh = f;
    *keep = k;
}

/* ------------------------------------------------------------ configure */

static const pt_metric_desc decisions_desc = {
    .name = "portico_oauth2_introspection_decisions_total",
    .help = "Requests decided by oauth2_introspection, by result.",
    .type = PT_METRIC_COUNTER,
    .dims = (const pt_metric_dim[]){{"result", (const char *const[]){"active", "cache_hit", "inactive",
                                                                      "inactive_cached", "missing", "malformed",
                                                                      "error", "stale", "overloaded", NULL}}},
    .ndims = 1,
};

/* A duration within [min, max] ms. */
static bool read_ms(pt_conf_ctx *ctx, const pt_conf_node *n, const char *what, uint64_t min, uint64_t max,
                    uint64_t *out)
{
    if (!n) return true;
    if (!pt_conf_duration_ms(ctx, n, out)) return false;
    if (*out < min || *out > max) {
        pt_conf_error(ctx, n, "oauth2_introspection: '%s' is out of range", what);
        return false;
    }
    return true;
}

/* consumer: {claims: [...], lookup: prefer | require | never} */
static bool read_consumer(pt_conf_ctx *ctx, const pt_conf_node *n, pt_oi_conf *c)
{
    static const char *const def[] = {"sub", "username", "client_id"};
    c->consumer_claims = def;
    c->nconsumer_claims = PT_ARRAY_LEN(def);
    if (!n) return true;
    static const char *const allowed[] = {"claims", "lookup", NULL};
    if (!pt_conf_check_keys(ctx, n, allowed, "oauth2_introspection.consumer")) return false;
    const pt_conf_node *cl = pt_conf_get(n, "claims");
    if (cl && !pt_plugin_string_list(ctx, cl, "oauth2_introspection", "consumer.claims", true, &c->consumer_claims,
                                     &c->nconsumer_claims))
        return false;
    const pt_conf_node *lk = pt_conf_get(n, "lookup");
    if (!lk) return true;
    static const char *const modes[] = {"prefer", "require", "never"};
    for (int i = 0; i < 3; i++)
        if (lk->kind == PT_NODE_SCALAR && strcmp(lk->scalar, modes[i]) == 0) {
            c->lookup = (pt_oi_lookup)i;
            return true;
        }
    pt_conf_error(ctx, lk, "oauth2_introspection: 'consumer.lookup' must be prefer, require or never");
    return false;
}

/* cache: off | {ttl, max_entries, negative_ttl, negative_max_entries} */
static bool read_cache(pt_conf_ctx *ctx, const pt_conf_node *n, pt_oi_conf *c)
{
    c->cache = true;
    c->ttl_ms = PT_OI_DEFAULT_TTL_MS;
    c->negative_ttl_ms = PT_OI_DEFAULT_NEGATIVE_TTL_MS;
    c->max_entries = PT_OI_DEFAULT_MAX_ENTRIES;
    c->negative_max_entries = 0;
    if (!n) goto done;
    bool b;
    if (n->kind == PT_NODE_SCALAR) {
        if (!pt_conf_bool(ctx, n, &b) || b) {
            pt_conf_error(ctx, n, "oauth2_introspection: 'cache' is a mapping or off");
            return false;
        }
        c->cache = false;
        return true;
    }
    static const char *const allowed[] = {"ttl", "max_entries", "negative_ttl", "negative_max_entries", NULL};
    if (!pt_conf_check_keys(ctx, n, allowed, "oauth2_introspection.cache")) return false;
    if (!read_ms(ctx, pt_conf_get(n, "ttl"), "cache.ttl", 1, PT_OI_MAX_TTL_MS, &c->ttl_ms)) return false;
    if (!read_ms(ctx, pt_conf_get(n, "negative_ttl"), "cache.negative_ttl", 0, PT_OI_MAX_TTL_MS, &c->negative_ttl_ms))
        return false;
    int64_t v;
    const pt_conf_node *me = pt_conf_get(n, "max_entries"), *nme = pt_conf_get(n, "negative_max_entries");
    if (me) {
        if (!pt_conf_int(ctx, me, 1, PT_OI_MAX_MAX_ENTRIES, &v)) return false;
        c->max_entries = (size_t)v;
    }
    if (nme) {
        if (!pt_conf_int(ctx, nme, 1, PT_OI_MAX_MAX_ENTRIES, &v)) return false;
        c->negative_max_entries = (size_t)v;
    }
done:
    if (!c->negative_max_entries) c->negative_max_entries = c->max_entries / 4 ? c->max_entries / 4 : 1;
    return true;
}

/* A quoted-string-safe realm. */
static bool read_realm(pt_conf_ctx *ctx, const pt_conf_node *n, pt_oi_conf *c)
{
    c->realm = PT_STR_LIT("portico");
    if (n) {
        bool ok = n->kind == PT_NODE_SCALAR && n->scalar_len > 0 && n->scalar_len <= 128;
        for (size_t i = 0; ok && i < n->scalar_len; i++) {
            unsigned char ch = (unsigned char)n->scalar[i];
            ok = ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\';
        }
        if (!ok) {
            pt_conf_error(ctx, n, "oauth2_introspection: 'realm' must be 1-128 printable ASCII characters "
                                  "without '\"' or '\\'");
            return false;
        }
        c->realm = pt_arena_str(ctx->arena, pt_str_make(n->scalar, n->scalar_len));
    }
    c->challenge = pt_str_c(pt_arena_printf(ctx->arena, "Bearer realm=\"%s\"", c->realm.p));
    return true;
}

/* The client credentials: client_id, client_secret (${ENV} only), client_auth. */
static bool read_client(pt_conf_ctx *ctx, const pt_conf_node *node, pt_oi_conf *c)
{
    const pt_conf_node *id = pt_conf_get(node, "client_id"), *sec = pt_conf_get(node, "client_secret");
    const pt_conf_node *how = pt_conf_get(node, "client_auth");
    if (!id || id->kind != PT_NODE_SCALAR || !id->scalar_len) {
        pt_conf_error(ctx, id ? id : node, "oauth2_introspection: 'client_id' is required (a non-empty string)");
        return false;
    }
    if (!sec || sec->kind != PT_NODE_SCALAR || !sec->env_ref || !sec->scalar_len) {
        pt_conf_error(ctx, sec ? sec : node,
                      "oauth2_introspection: 'client_secret' is required and must be written as ${ENV_NAME} (never "
                      "a literal secret in the file), with a non-empty value");
        return false;
    }
    bool post = false;
    if (how) {
        if (how->kind == PT_NODE_SCALAR && strcmp(how->scalar, "post") == 0) post = true;
        else if (!(how->kind == PT_NODE_SCALAR && strcmp(how->scalar, "basic") == 0)) {
            pt_conf_error(ctx, how, "oauth2_introspection: 'client_auth' must be basic or post");
            return false;
        }
    }
    pt_str sid = pt_str_make(id->scalar, id->scalar_len), ssec = pt_str_make(sec->scalar, sec->scalar_len);
    if (post) {
        pt_str fi = pt_oi_form_encode(sid, ctx->arena), fs = pt_oi_form_encode(ssec, ctx->arena);
        c->body_prefix = pt_str_c(pt_arena_printf(ctx->arena, "client_id=%s&client_secret=%s&", fi.p, fs.p));
    } else {
        c->authorization = pt_oi_basic_credentials(sid, ssec, ctx->arena);
    }
    return true;
}

/* A target path: '/' then visible ASCII without '#'. */
static bool read_path(pt_conf_ctx *ctx, const pt_conf_node *n, pt_oi_conf *c)
{
    c->path = PT_STR_LIT("/");
    if (!n) return true;
    bool ok = n->kind == PT_NODE_SCALAR && n->scalar_len > 0 && n->scalar[0] == '/';
    for (size_t i = 0; ok && i < n->scalar_len; i++) {
        unsigned char ch = (unsigned char)n->scalar[i];
        ok = ch > 0x20 && ch < 0x7f && ch != '#';
    }
    if (!ok) {
        pt_conf_error(ctx, n, "oauth2_introspection: 'path' must start with '/' and hold visible ASCII without '#'");
        return false;
    }
    c->path = pt_arena_str(ctx->arena, pt_str_make(n->scalar, n->scalar_len));
    return true;
}

static void fp_field(EVP_MD_CTX *m, pt_str s)
{
    uint8_t len[4] = {(uint8_t)(s.n >> 24), (uint8_t)(s.n >> 16), (uint8_t)(s.n >> 8), (uint8_t)s.n};
    EVP_DigestUpdate(m, len, 4);
    if (s.n) EVP_DigestUpdate(m, s.p, s.n);
}

/* SHA-256 over what shapes a cached answer (length-prefixed fields). */
static void fingerprint(pt_oi_conf *c)
{
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    unsigned int n = 0;
    if (!m || EVP_DigestInit_ex(m, EVP_sha256(), NULL) != 1) pt_panic(__FILE__, __LINE__, "EVP sha256");
    char nums[96];
    snprintf(nums, sizeof(nums), "%llu/%llu/%llu/%zu/%zu", (unsigned long long)c->ttl_ms,
             (unsigned long long)c->negative_ttl_ms, (unsigned long long)c->stale_ms, c->max_entries,
             c->negative_max_entries);
    fp_field(m, pt_str_c(c->upstream->name));
    fp_field(m, c->path);
    fp_field(m, c->authorization);
    fp_field(m, c->body_prefix);
    fp_field(m, pt_str_c(nums));
    const char *const *lists[] = {c->consumer_claims, c->issuers, c->audiences};
    size_t counts[] = {c->nconsumer_claims, c->nissuers, c->naudiences};
    for (int l = 0; l < 3; l++) {
        fp_field(m, PT_STR_LIT("|"));
        for (size_t i = 0; i < counts[l]; i++) fp_field(m, pt_str_c(lists[l][i]));
    }
    if (EVP_DigestFinal_ex(m, c->fingerprint, &n) != 1) pt_panic(__FILE__, __LINE__, "EVP final");
    EVP_MD_CTX_free(m);
}

static void *oi_configure(pt_conf_ctx *ctx, const pt_conf_node *node)
{
    static const char *const allowed[] = {"upstream",  "path",        "client_id",    "client_secret",
                                          "client_auth", "timeout",   "max_response", "max_token_size",
                                          "realm",     "consumer",    "issuers",      "audiences",
                                          "forward_token", "cache",   "stale_if_error", "max_in_flight",
                                          NULL};
    if (!pt_conf_check_keys(ctx, node, allowed, "oauth2_introspection")) return NULL;
    pt_oi_conf *c = pt_arena_calloc(ctx->arena, sizeof(*c));
    c->timeout_ms = PT_OI_DEFAULT_TIMEOUT_MS;
    c->max_response = PT_OI_DEFAULT_MAX_RESPONSE;
    c->max_token = PT_OI_DEFAULT_MAX_TOKEN;
    c->max_in_flight = PT_OI_DEFAULT_MAX_IN_FLIGHT;
    bool ok = true;
    const pt_conf_node *up = pt_conf_get(node, "upstream");
    if (!up) {
        pt_conf_error(ctx, node, "oauth2_introspection: 'upstream' is required (the authorization server's upstream)");
        ok = false;
    } else if (!(c->upstream = pt_conf_upstream(ctx, up))) {
        ok = false;
    }
    ok = read_path(ctx, pt_conf_get(node, "path"), c) && ok;
    ok = read_client(ctx, node, c) && ok;
    ok = read_ms(ctx, pt_conf_get(node, "timeout"), "timeout", 1, PT_OI_MAX_TIMEOUT_MS, &c->timeout_ms) && ok;
    const pt_conf_node *mr = pt_conf_get(node, "max_response"), *mt = pt_conf_get(node, "max_token_size");
    if (mr && (!pt_conf_size(ctx, mr, &c->max_response) || c->max_response < 16 ||
               c->max_response > PT_OI_MAX_MAX_RESPONSE)) {
        pt_conf_error(ctx, mr, "oauth2_introspection: 'max_response' must be between 16 and 1m");
        ok = false;
    }
    uint64_t mtv = c->max_token;
    if (mt && (!pt_conf_size(ctx, mt, &mtv) || mtv < 1 || mtv > PT_OI_MAX_MAX_TOKEN)) {
        pt_conf_error(ctx, mt, "oauth2_introspection: 'max_token_size' must be between 1 and 64k");
        ok = false;
    }
    c->max_token = (size_t)mtv;
    ok = read_realm(ctx, pt_conf_get(node, "realm"), c) && ok;
    ok = read_consumer(ctx, pt_conf_get(node, "consumer"), c) && ok;
    ok = pt_plugin_string_list(ctx, pt_conf_get(node, "issuers"), "oauth2_introspection", "issuers", true,
                               &c->issuers, &c->nissuers) && ok;
    ok = pt_plugin_string_list(ctx, pt_conf_get(node, "audiences"), "oauth2_introspection", "audiences", true,
                               &c->audiences, &c->naudiences) && ok;
    const pt_conf_node *ft = pt_conf_get(node, "forward_token");
    if (ft && !pt_conf_bool(ctx, ft, &c->forward_token)) ok = false;
    ok = read_cache(ctx, pt_conf_get(node, "cache"), c) && ok;
    const pt_conf_node *st = pt_conf_get(node, "stale_if_error");
    ok = read_ms(ctx, st, "stale_if_error", 0, PT_OI_MAX_TTL_MS, &c->stale_ms) && ok;
    if (ok && c->stale_ms && !c->cache) {
        pt_conf_error(ctx, st, "oauth2_introspection: 'stale_if_error' needs the cache");
        ok = false;
    }
    const pt_conf_node *mif = pt_conf_get(node, "max_in_flight");
    int64_t mifv;
    if (mif) {
        if (!pt_conf_int(ctx, mif, INT64_MIN, INT64_MAX, &mifv)) {
            ok = false;
        } else if (mifv < 1 || mifv > PT_OI_MAX_MAX_IN_FLIGHT) {
            pt_conf_error(ctx, mif, "oauth2_introspection: 'max_in_flight' must be between 1 and %d",
                          PT_OI_MAX_MAX_IN_FLIGHT);
            ok = false;
        } else {
            c->max_in_flight = (size_t)mifv;
        }
    }
    if (!ok) return NULL;
    fingerprint(c);
    c->decisions = pt_conf_metric(ctx, node, &decisions_desc, NULL);
    return c;
}

/* ------------------------------------------------------------ the phase */

/* 401 error="invalid_token" (RFC 6750 §3.1) through the identity contract. */
static pt_plugin_result refuse(pt_txn *txn, const pt_oi_conf *c, pt_oi_result r, const char *detail)
{
    pt_metric_add(c->decisions, r, 1);
    char *ch = pt_arena_printf(pt_txn_arena(txn), "%s, error=\"invalid_token\", error_description=\"%s\"",
                               c->challenge.p, detail);
    return pt_txn_auth_reject(txn, pt_str_c(ch), detail);
}

/* The server could not tell: 503 problem+json. */
static pt_plugin_result unavailable(pt_txn *txn, const pt_oi_conf *c, const char *detail)
{
    pt_metric_add(c->decisions, PT_OI_R_ERROR, 1);
    pt_txn_respond_problem(txn, 503, detail);
    return PT_PLUGIN_RESPOND;
}

/* Names the caller from an active answer (or a cached one): the consumer,
 * scopes and claims; counts `r` on success. */
static pt_plugin_result admit(pt_txn *txn, const pt_oi_conf *c, pt_oi_result r, pt_str name, const pt_header *claims,
                              size_t nclaims)
{
    const pt_consumer *who = NULL;
    if (c->lookup != PT_OI_LOOKUP_NEVER) who = pt_consumer_find(pt_txn_consumers(txn), name);
    if (!who && c->lookup == PT_OI_LOOKUP_REQUIRE)
        return refuse(txn, c, PT_OI_R_INACTIVE, "the token's subject is not a known consumer");
    if (!who) {
        pt_consumer *adhoc = pt_arena_calloc(pt_txn_arena(txn), sizeof(*adhoc));
        adhoc->name = pt_arena_str(pt_txn_arena(txn), name).p;
        who = adhoc;
    }
    for (size_t i = 0; i < nclaims; i++) {
        pt_txn_set_claim(txn, claims[i].name, claims[i].value);
        if (!pt_str_eq_lit(claims[i].name, "scope")) continue;
        pt_str rest = claims[i].value;
        while (rest.n) {
            size_t k = 0;
            while (k < rest.n && rest.p[k] != ' ') k++;
            if (k) pt_txn_add_scope(txn, pt_str_make(rest.p, k));
            rest = pt_str_make(rest.p + k, rest.n - k);
            while (rest.n && rest.p[0] == ' ') rest = pt_str_make(rest.p + 1, rest.n - 1);
        }
    }
    pt_metric_add(c->decisions, r, 1);
    return pt_txn_set_consumer(txn, who, "oauth2_introspection");
}

static uint64_t wall_ms(pt_txn *txn) { return pt_loop_wall_us(pt_txn_loop(txn)) / 1000; }

const pt_oi_entry *pt_oi_cache_get(pt_digest_cache *c, const uint8_t key[PT_DIGEST_LEN], uint64_t now_ms)
{
    return pt_digest_cache_get(c, key, now_ms, NULL, NULL);
}

void pt_oi_cache_put(pt_digest_cache *c, const uint8_t key[PT_DIGEST_LEN], bool active, uint64_t fresh_until,
                     uint64_t keep_until, pt_str consumer, const pt_header *claims, size_t n, uint64_t now_ms)
{
    if (fresh_until > keep_until) fresh_until = keep_until;
    if (!active) consumer = PT_STR_NULL, n = 0;
    size_t bytes = sizeof(pt_oi_entry) + pt_digest_blob_str_size(consumer) + pt_digest_blob_headers_size(claims, n);
    pt_oi_entry *e = pt_digest_cache_put(c, key, active ? PT_DIGEST_POSITIVE : PT_DIGEST_NEGATIVE, keep_until, NULL,
                                         bytes, now_ms);
    if (!e) return;
    e->active = active;
    e->fresh_until = fresh_until;
    e->keep_until = keep_until;
    char *p = (char *)(e + 1);
    e->claims = pt_digest_blob_headers(&p, claims, n);
    e->nclaims = (uint32_t)n;
    e->consumer = pt_digest_blob_str(&p, consumer);
}

/* This configuration's cache on worker state w, or NULL (cache off). */
static pt_digest_cache *cache_of(pt_oi_worker *w, const pt_oi_conf *c, uint64_t now)
{
    return w && c->cache ? pt_digest_store_cache(w->store, c->fingerprint, c->max_entries, c->negative_max_entries, now)
                         : NULL;
}

static pt_oi_worker *worker_of(pt_txn *txn) { return pt_txn_worker_state(txn, &pt_plugin_oauth2_introspection); }

/* The cache key of st's token in `cache`. */
static void cache_key(pt_digest_cache *cache, const pt_oi_state *st, uint8_t key[PT_DIGEST_LEN])
{
    pt_digest_cache_key(cache, &st->token, 1, key);
}

/* The server failed: a stale positive entry if stale_if_error allows, else 503. */
static pt_plugin_result failed(pt_oi_state *st, const char *detail)
{
    const pt_oi_conf *c = st->conf;
    uint64_t now = wall_ms(st->txn);
    pt_digest_cache *cache = c->stale_ms ? cache_of(worker_of(st->txn), c, now) : NULL;
    const pt_oi_entry *e = NULL;
    if (cache) {
        uint8_t key[PT_DIGEST_LEN];
        cache_key(cache, st, key);
        e = pt_oi_cache_get(cache, key, now);
    }
    if (e && e->active) return admit(st->txn, c, PT_OI_R_STALE, e->consumer, e->claims, e->nclaims);
    return unavailable(st->txn, c, detail);
}

/* The answer of a call, judged once for all its waiters. */
typedef struct {
    const char *failure;     /* the server failed: why (each waiter: stale or 503) */
    pt_oi_answer ans;        /* else: ACTIVE, INACTIVE or REFUSED */
} verdict;

static void judge(const pt_oi_conf *c, const pt_http_result *r, uint64_t now, pt_arena *a, verdict *v)
{
    memset(v, 0, sizeof(*v));
    if (r->error == PT_HTTP_ERR_TIMEOUT) v->failure = "the authorization server did not answer in time";
    else if (r->error != PT_HTTP_OK) v->failure = "the authorization server is unavailable";
    else if (r->status != 200) v->failure = "the authorization server refused the introspection request";
    else {
        pt_oi_parse_answer(c, r->body, now, a, &v->ans);
        if (v->ans.kind == PT_OI_ANSWER_INVALID) v->failure = "the authorization server's answer is invalid";
    }
}

/* Remembers a verdict in the cache of `first`'s configuration (shared by
 * every waiter: they have the same fingerprint). */
static void remember(pt_oi_state *first, const verdict *v, uint64_t now)
{
    const pt_oi_conf *c = first->conf;
    pt_digest_cache *cache = v->failure ? NULL : cache_of(worker_of(first->txn), c, now);
    if (!cache) return;
    uint8_t key[PT_DIGEST_LEN];
    cache_key(cache, first, key);
    const pt_oi_answer *ans = &v->ans;
    if (ans->kind == PT_OI_ANSWER_ACTIVE) {
        uint64_t fresh, keep;
        pt_oi_deadlines(c, ans->exp_ms, now, &fresh, &keep);
        pt_oi_cache_put(cache, key, true, fresh, keep, ans->consumer, ans->claims, ans->nclaims, now);
    } else {
        uint64_t until = now + c->negative_ttl_ms;
        pt_oi_cache_put(cache, key, false, until, until, PT_STR_NULL, NULL, 0, now);
    }
}

/* What a verdict means for one waiter (its own instance: realm, lookup). */
static pt_plugin_result apply(pt_oi_state *st, const verdict *v)
{
    if (v->failure) return failed(st, v->failure);
    if (v->ans.kind == PT_OI_ANSWER_ACTIVE)
        return admit(st->txn, st->conf, PT_OI_R_ACTIVE, v->ans.consumer, v->ans.claims, v->ans.nclaims);
    return refuse(st->txn, st->conf, PT_OI_R_INACTIVE, v->ans.detail);
}

/* A call's answer. The entry leaves the table first (a request arriving
 * from now on finds the cache, or starts a new call), then every waiter
 * still there gets the verdict, taken off the list one at a time. Its
 * waiters' requests are alive (a request that ended left the list), and
 * their generations hold their configurations; all waiters share the
 * first one's fingerprint, so the first judges for all. Resumes are
 * deferred by the core: no request runs on inside this loop. */
static void oi_done(void *data, const pt_http_result *r)
{
    pt_oi_pending *p = data;
    p->call = NULL;
    pt_oi_pending_detach(p);
    pt_oi_state *first = (pt_oi_state *)pt_oi_pending_first(p);
    if (first) {
        pt_arena *a = pt_arena_new(4096);
        uint64_t now = wall_ms(first->txn);
        verdict v;
        judge(first->conf, r, now, a, &v);
        remember(first, &v, now);
        pt_oi_waiter *w;
        while ((w = pt_oi_pending_pop(p))) {
            pt_oi_state *st = (pt_oi_state *)w;
            pt_txn_resume(st->txn, PT_SIDE_REQUEST, apply(st, &v));
        }
        pt_arena_free(a);
    }
    pt_oi_pending_free(p);
}

/* The request ended or its pause was dropped: leave the wait (the call
 * goes on for the other waiters, or is cancelled with the last one). */
static void state_cleanup(void *data) { pt_oi_waiter_cancel(&((pt_oi_state *)data)->wait); }

static void oi_on_pause_cancelled(pt_txn *txn, const void *conf, void *state, pt_side side) { state_cleanup(state); }

/* Parks the request on p. */
static pt_plugin_result wait_on(pt_oi_state *st, pt_oi_pending *p)
{
    if (!st->cleanup) {
        pt_arena_on_cleanup(pt_txn_arena(st->txn), state_cleanup, st);
        st->cleanup = true;
    }
    pt_oi_pending_wait(p, &st->wait);
    return PT_PLUGIN_PAUSE;
}

/* The key of the call for st's token: the token with every setting that
 * shapes the call or its answer. */
static void flight_key(const pt_oi_flight *f, const pt_oi_state *st, uint8_t key[PT_DIGEST_LEN])
{
    const pt_oi_conf *c = st->conf;
    uint64_t nums[2] = {c->timeout_ms, c->max_response};
    const pt_str parts[3] = {pt_str_make((const char *)c->fingerprint, sizeof(c->fingerprint)),
                             pt_str_make((const char *)nums, sizeof(nums)), st->token};
    pt_oi_flight_key(f, parts, 3, key);
}

/* Joins the call in flight for st's token, or starts one. */
static pt_plugin_result introspect(pt_oi_state *st)
{
    pt_txn *txn = st->txn;
    const pt_oi_conf *c = st->conf;
    pt_oi_worker *w = worker_of(txn);
    if (!w) return unavailable(txn, c, "the authorization server is unavailable");
    uint8_t key[PT_DIGEST_LEN];
    flight_key(&w->flight, st, key);
    pt_oi_pending *p = pt_oi_flight_find(&w->flight, key);
    if (p) return wait_on(st, p);
    if (w->flight.count >= c->max_in_flight) {
        pt_metric_add(c->decisions, PT_OI_R_OVERLOADED, 1);
        pt_txn_respond_problem(txn, 503, "too many token introspections are in flight; retry shortly");
        pt_txn_respond_header(txn, PT_STR_LIT("Retry-After"), PT_STR_LIT(PT_OI_RETRY_AFTER));
        return PT_PLUGIN_RESPOND;
    }
    pt_arena *a = pt_txn_arena(txn);
    pt_headers *fields = pt_arena_calloc(a, sizeof(*fields));
    if (c->authorization.n) pt_headers_add(fields, a, PT_STR_LIT("Authorization"), c->authorization);
    pt_headers_add(fields, a, PT_STR_LIT("Content-Type"), PT_STR_LIT("application/x-www-form-urlencoded"));
    pt_headers_add(fields, a, PT_STR_LIT("Accept"), PT_STR_LIT("application/json"));
    pt_str rid = pt_txn_request_id(txn); /* the request that started the call */
    if (rid.n) pt_headers_add(fields, a, PT_STR_LIT("X-Request-Id"), rid);
    pt_str tp = pt_txn_traceparent(txn); /* and its trace (tracing on) */
    if (tp.n) pt_headers_add(fields, a, PT_STR_LIT("traceparent"), tp);
    pt_http_request hr = {
        .upstream = c->upstream,
        .method = PT_STR_LIT("POST"),
        .target = c->path,
        .headers = fields,
        .body = pt_oi_request_body(c, st->token, a),
        .timeout_ms = c->timeout_ms,
        .max_body = (size_t)c->max_response,
    };
    /* Owned by the worker's table, not by this request (pt_http_fetch, not
     * pt_txn_subrequest): it survives this client leaving. */
    p = pt_oi_flight_add(&w->flight, key);
    p->call = pt_http_fetch(pt_txn_loop(txn), &hr, oi_done, p);
    if (!p->call) {
        pt_oi_pending_free(p);
        return failed(st, "the authorization server is unavailable");
    }
    return wait_on(st, p);
}

static pt_plugin_result oi_on_request_headers(pt_txn *txn, const void *conf, void *state)
{
    const pt_oi_conf *c = conf;
    pt_oi_state *st = state;
    st->txn = txn;
    st->conf = c;
    pt_request *req = pt_txn_request(txn);
    pt_arena *a = pt_txn_arena(txn);
    pt_str token;
    pt_oi_token_found f = pt_oi_find_token(req, &token);
    if (!c->forward_token) pt_oi_remove_bearer(req); /* the slice stays valid: it points into the request */
    if (pt_txn_auth_skip(txn)) return PT_PLUGIN_CONTINUE;
    if (f == PT_OI_TOKEN_NONE) {
        pt_metric_add(c->decisions, PT_OI_R_MISSING, 1);
        return pt_txn_auth_none(txn, c->challenge);
    }
    if (f == PT_OI_TOKEN_MANY) {
        pt_metric_add(c->decisions, PT_OI_R_MALFORMED, 1);
        pt_txn_respond_problem(txn, 400, "more than one bearer token was presented");
        pt_txn_respond_header(txn, PT_STR_LIT("WWW-Authenticate"),
                              pt_str_c(pt_arena_printf(a, "%s, error=\"invalid_request\"", c->challenge.p)));
        return PT_PLUGIN_RESPOND;
    }
    if (f == PT_OI_TOKEN_BAD) return refuse(txn, c, PT_OI_R_MALFORMED, "the bearer token is malformed");
    if (token.n > c->max_token) return refuse(txn, c, PT_OI_R_MALFORMED, "the bearer token is too large");
    st->token = token;

    uint64_t now = wall_ms(txn);
    pt_digest_cache *cache = cache_of(worker_of(txn), c, now);
    if (cache) {
        uint8_t key[PT_DIGEST_LEN];
        cache_key(cache, st, key);
        const pt_oi_entry *e = pt_oi_cache_get(cache, key, now);
        if (e && now < e->fresh_until) {
            if (!e->active) return refuse(txn, c, PT_OI_R_INACTIVE_CACHED, "the token is not active");
            return admit(txn, c, PT_OI_R_CACHE_HIT, e->consumer, e->claims, e->nclaims);
        }
        /* absent, or a positive kept for stale_if_error: ask the server */
    }
    return introspect(st);
}

static void *oi_worker_init(struct pt_loop *loop)
{
    pt_oi_worker *w = pt_xcalloc(1, sizeof(*w));
    w->store = pt_digest_store_new();
    pt_oi_flight_init(&w->flight);
    return w;
}

static void oi_worker_fini(struct pt_loop *loop, void *wstate)
{
    pt_oi_worker *w = wstate;
    if (!w) return;
    pt_oi_flight_fini(&w->flight);
    pt_digest_store_free(w->store);
    free(w);
}

const pt_plugin_type pt_plugin_oauth2_introspection = {
    .name = "oauth2_introspection",
    .configure = oi_configure,
    .worker_init = oi_worker_init,
    .worker_fini = oi_worker_fini,
    .state_size = sizeof(pt_oi_state),
    .on_request_headers = oi_on_request_headers,
    .on_pause_cancelled = oi_on_pause_cancelled,
};
