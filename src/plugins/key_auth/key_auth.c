/* key_auth.c — API keys: taken from a header or a query parameter, removed
 * before forwarding, and matched by SHA-256 digest against the consumers'
 * keys (see key_auth.h for the semantics). */
#include "plugins/key_auth/key_auth.h"

#include <openssl/evp.h>

#include "plugins/plugin_util.h"

static int hexv(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s into `a` ('+' is a space, a bad escape stays as is). */
static pt_str pct_decode(pt_arena *a, pt_str s)
{
    char *o = pt_arena_alloc(a, s.n + 1);
    size_t n = 0;
    for (size_t i = 0; i < s.n; i++) {
        if (s.p[i] == '%' && i + 2 < s.n && hexv(s.p[i + 1]) >= 0 && hexv(s.p[i + 2]) >= 0) {
            o[n++] = (char)(hexv(s.p[i + 1]) << 4 | hexv(s.p[i + 2]));
            i += 2;
        } else {
            o[n++] = s.p[i] == '+' ? ' ' : s.p[i];
        }
    }
    o[n] = '\0';
    return pt_str_make(o, n);
}

int pt_key_auth_take_query(pt_arena *a, pt_str q, pt_str name, pt_str *value, pt_str *rest)
{
    char *out = pt_arena_alloc(a, q.n + 1);
    size_t on = 0;
    int found = 0;
    *value = PT_STR_NULL;
    size_t i = 0;
    while (i <= q.n && q.n) {
        size_t e = i;
        while (e < q.n && q.p[e] != '&') e++;
        pt_str param = pt_str_make(q.p + i, e - i);
        const char *eq = param.n ? memchr(param.p, '=', param.n) : NULL;
        pt_str pname = eq ? pt_str_make(param.p, (size_t)(eq - param.p)) : param;
        if (param.n && pt_str_eq(pct_decode(a, pname), name)) {
            if (!found) *value = eq ? pct_decode(a, pt_str_make(eq + 1, param.n - pname.n - 1)) : PT_STR_NULL;
            found++;
        } else if (param.n) {
            if (on) out[on++] = '&';
            memcpy(out + on, param.p, param.n);
            on += param.n;
        }
        i = e + 1;
        if (e >= q.n) break;
    }
    out[on] = '\0';
    *rest = pt_str_make(out, on);
    return found;
}

/* Takes the key parameter out of the query the upstream gets and out of
 * the target the access log shows. Returns how many there were. */
static int take_from_query(pt_txn *txn, const pt_key_auth_conf *c, pt_str *key)
{
    pt_request *req = pt_txn_request(txn);
    if (!c->query || !req->has_query) return 0;
    pt_arena *a = pt_txn_arena(txn);
    pt_str rest;
    int n = pt_key_auth_take_query(a, req->query, pt_str_c(c->query), key, &rest);
    if (!n) return 0;
    pt_plugin_set_query(req, a, rest);
    return n;
}

static pt_plugin_result key_auth_on_request_headers(pt_txn *txn, const void *conf, void *state)
{
    const pt_key_auth_conf *c = conf;
    pt_request *req = pt_txn_request(txn);
    pt_str key = PT_STR_NULL;
    int n = 0;
    if (c->header) {
        const pt_str *h = pt_headers_get(&req->headers, c->header);
        if (h) key = *h;
        n = pt_headers_remove(&req->headers, c->header);
    }
    pt_str qkey = PT_STR_NULL;
    int qn = take_from_query(txn, c, &qkey);
    if (!n && qn) key = qkey;
    n += qn;
    if (pt_txn_auth_skip(txn)) return PT_PLUGIN_CONTINUE;
    if (n == 0) return pt_txn_auth_none(txn, c->challenge);
    if (n > 1) return pt_txn_auth_reject(txn, c->challenge, "more than one API key in the request");
    uint8_t d[32];
    unsigned int dl = sizeof(d);
    EVP_Digest(key.p ? key.p : "", key.n, d, &dl, EVP_sha256(), NULL);
    const pt_consumer *who = pt_consumer_by_key_digest(pt_txn_consumers(txn), d);
    if (!who) return pt_txn_auth_reject(txn, c->challenge, "invalid API key");
    return pt_txn_set_consumer(txn, who, "key_auth");
}

/* Reads an optional header-name / parameter-name key: absent = `dflt`,
 * null = off. */
static bool opt_name(pt_conf_ctx *ctx, const pt_conf_node *node, const char *key, const char *dflt, bool header,
                     char **out)
{
    const pt_conf_node *n = pt_conf_get(node, key);
    *out = (char *)dflt;
    if (!n) return true;
    if (n->kind == PT_NODE_NULL) {
        *out = NULL;
        return true;
    }
    if (!pt_conf_string(ctx, n, out)) return false;
    if (header ? !pt_plugin_header_name_ok(*out, strlen(*out)) : !**out) {
        pt_conf_error(ctx, n, "key_auth.%s: \"%s\" is not a valid %s", key, *out,
                      header ? "header name" : "parameter name");
        return false;
    }
    return true;
}

/* realm: a string that can stand in a quoted-string unescaped. */
static bool read_realm(pt_conf_ctx *ctx, const pt_conf_node *r, const char **out)
{
    char *realm;
    if (!pt_conf_string(ctx, r, &realm)) return false;
    for (const char *q = realm; *q; q++)
        if ((unsigned char)*q < 0x20 || *q == 0x7f || *q == '"' || *q == '\\') {
            pt_conf_error(ctx, r, "key_auth.realm must not contain quotes, backslashes or control characters");
            return false;
        }
    *out = realm;
    return true;
}

/* Validates {header, query, realm}: at least one place to read the key from. */
static void *key_auth_configure(pt_conf_ctx *ctx, const pt_conf_node *node)
{
    static const char *const allowed[] = {"header", "query", "realm", NULL};
    pt_key_auth_conf *c = pt_arena_calloc(ctx->arena, sizeof(*c));
    c->header = "X-API-Key";
    c->realm = "portico";
    bool ok = true;
    if (node && node->kind != PT_NODE_NULL) {
        if (!pt_conf_check_keys(ctx, node, allowed, "key_auth")) return NULL;
        ok = opt_name(ctx, node, "header", "X-API-Key", true, &c->header);
        ok = opt_name(ctx, node, "query", NULL, false, &c->query) && ok;
        const pt_conf_node *r = pt_conf_get(node, "realm");
        if (r && !read_realm(ctx, r, &c->realm)) ok = false;
        if (ok && !c->header && !c->query) {
            pt_conf_error(ctx, node, "key_auth: header and query are both off: the key could not be read");
            ok = false;
        }
    }
    c->challenge = pt_str_c(pt_arena_printf(ctx->arena, "Key realm=\"%s\"", c->realm));
    return ok ? c : NULL;
}

const pt_plugin_type pt_plugin_key_auth = {
    .name = "key_auth",
    .configure = key_auth_configure,
    .on_request_headers = key_auth_on_request_headers,
};
