/* basic_auth.c — HTTP Basic authentication (RFC 7617) against the
 * consumers' crypt(3) password hashes: strict parsing, verification on the
 * hashing threads (ba_pool.c) with a per-worker cache of successes and a
 * bound on pending and failed verifications (see basic_auth.h). */
#include "plugins/basic_auth/basic_auth.h"

#include <crypt.h>
#include <openssl/crypto.h>
#include <stdlib.h>

#include "plugins/basic_auth/ba_pool.h"
#include "plugins/plugin_util.h"

/* ------------------------------------------------------------ pure parsing */

static int b64v(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

ssize_t pt_basic_b64_decode(pt_str s, char *out, size_t cap)
{
    if (s.n == 0 || s.n % 4 != 0 || cap < s.n / 4 * 3) return -1;
    size_t o = 0;
    for (size_t i = 0; i < s.n; i += 4) {
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)s.p[i + k];
            if (c == '=' && i + 4 == s.n && k >= 2) {
                v[k] = 0;
                pad++;
                continue;
            }
            if (pad) return -1; /* data after '=' */
            v[k] = b64v(c);
            if (v[k] < 0) return -1;
        }
        uint32_t x = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        if (pad == 2 && (v[1] & 0x0f)) return -1; /* non-canonical: bits left over */
        if (pad == 1 && (v[2] & 0x03)) return -1;
        out[o++] = (char)(x >> 16);
        if (pad < 2) out[o++] = (char)(x >> 8);
        if (pad < 1) out[o++] = (char)x;
    }
    return (ssize_t)o;
}

/* Valid UTF-8 (no overlongs, surrogates or code points above U+10FFFF)
 * without control characters. */
static bool utf8_text_ok(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f) return false;
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) len = 2, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef) len = 3, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4) len = 4, cp = c & 0x07;
        else return false;
        if (i + len > n) return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp <= 0x9f))
            return false;
        i += len;
    }
    return true;
}

int pt_basic_parse(pt_arena *a, pt_str v, pt_str *user, pt_str *pass)
{
    size_t i = 0;
    while (i < v.n && v.p[i] != ' ') i++;
    if (!pt_str_ieq_lit(pt_str_make(v.p, i), "Basic")) return 0;
    while (i < v.n && v.p[i] == ' ') i++;
    pt_str b = pt_str_make(v.p + i, v.n - i);
    if (b.n > 8192) return -1;
    char *out = pt_arena_alloc(a, b.n / 4 * 3 + 1);
    ssize_t n = pt_basic_b64_decode(b, out, b.n / 4 * 3 + 1);
    if (n < 0) return -1;
    const char *colon = memchr(out, ':', (size_t)n);
    if (!colon || colon == out) return -1;
    *user = pt_str_make(out, (size_t)(colon - out));
    *pass = pt_str_make(colon + 1, (size_t)n - user->n - 1);
    if (!utf8_text_ok((const unsigned char *)user->p, user->n) ||
        !utf8_text_ok((const unsigned char *)pass->p, pass->n))
        return -1;
    return 1;
}

/* ------------------------------------------------------- per-worker state */

#define CACHE_ENTRIES 1024

/* A cached success (a digest cache blob), keyed by SHA-256(cache salt,
 * user, ':', password). */
typedef struct {
    uint8_t fp[32];           /* the consumer's password_fp when verified */
    uint64_t at_ms;           /* verified at */
} cache_entry;

typedef struct {
    struct pt_loop *loop;
    ba_pool_client *pool;
    pt_digest_cache *cache;   /* successes, for cache_ttl */
    char *dummy_hash;         /* what an unknown user is verified against */
    double tokens;            /* failure bucket */
    uint64_t tokens_at_ms;
} ba_worker;

static void *ba_worker_init(struct pt_loop *loop)
{
    ba_worker *w = pt_xcalloc(1, sizeof(*w));
    w->loop = loop;
    w->pool = ba_pool_client_new(loop);
    w->cache = pt_digest_cache_new(CACHE_ENTRIES, 1);
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    struct crypt_data *cd = pt_xcalloc(1, sizeof(*cd));
    /* a real yescrypt hash of a random password: an unknown user costs
     * what a known one does (the first worker pays one hash at start) */
    char pw[17];
    for (size_t i = 0; i < 16; i++) pw[i] = (char)('a' + pt_plugin_rand64() % 26);
    pw[16] = '\0';
    const char *h = crypt_gensalt_rn("$y$", 0, NULL, 0, setting, sizeof(setting)) ? crypt_r(pw, setting, cd) : NULL;
    if (!h || h[0] == '*') h = "$6$portico$"; /* never matches: crypt of anything has a checksum */
    w->dummy_hash = pt_xstrndup(h, strlen(h));
    free(cd);
    w->tokens = 2 * PT_BASIC_FAILURES_PER_SEC;
    w->tokens_at_ms = pt_loop_now(loop);
    return w;
}

static void ba_worker_fini(struct pt_loop *loop, void *ws)
{
    ba_worker *w = ws;
    ba_pool_client_free(w->pool);
    pt_digest_cache_free(w->cache);
    free(w->dummy_hash);
    explicit_bzero(w, sizeof(*w));
    free(w);
}

/* The cache key of a credential: salted, so the cache holds nothing an
 * offline guesser could use without the cache's random salt. */
static void cache_key(const ba_worker *w, pt_str user, pt_str pass, uint8_t out[32])
{
    const pt_str parts[3] = {user, PT_STR_LIT(":"), pass};
    pt_digest_cache_key(w->cache, parts, 3, out);
}

/* A live entry for `key` verified against hash fingerprint `fp` within
 * `ttl_ms`; one that fails either test is dropped. */
static bool cache_hit(ba_worker *w, const uint8_t key[32], const uint8_t fp[32], uint64_t ttl_ms)
{
    uint64_t now = pt_loop_now(w->loop);
    const cache_entry *e = pt_digest_cache_get(w->cache, key, now, NULL, NULL);
    if (!e) return false;
    if (now - e->at_ms >= ttl_ms || CRYPTO_memcmp(e->fp, fp, 32) != 0) {
        pt_digest_cache_remove(w->cache, key);
        return false;
    }
    return true;
}

/* Stores a success for `ttl_ms`, evicting the least recently used entry
 * when full. */
static void cache_put(ba_worker *w, const uint8_t key[32], const uint8_t fp[32], uint64_t ttl_ms)
{
    cache_entry e;
    memcpy(e.fp, fp, 32);
    e.at_ms = pt_loop_now(w->loop);
    pt_digest_cache_put(w->cache, key, PT_DIGEST_POSITIVE, e.at_ms + ttl_ms, &e, sizeof(e), e.at_ms);
}

/* The failure bucket: refills PT_BASIC_FAILURES_PER_SEC per second up to
 * twice that. True while a failure may still be afforded. */
static bool failures_allowed(ba_worker *w)
{
    uint64_t now = pt_loop_now(w->loop);
    w->tokens += (double)(now - w->tokens_at_ms) * PT_BASIC_FAILURES_PER_SEC / 1000.0;
    if (w->tokens > 2 * PT_BASIC_FAILURES_PER_SEC) w->tokens = 2 * PT_BASIC_FAILURES_PER_SEC;
    w->tokens_at_ms = now;
    return w->tokens >= 1.0;
}

/* ------------------------------------------------------------- the plugin */

/* A verification in flight: heap, outlives the request if need be. */
typedef struct {
    pt_txn_ref *ref;
    ba_worker *w;
    const pt_basic_auth_conf *conf;
    const pt_consumer *consumer; /* NULL: unknown user (verified against the dummy hash) */
    uint8_t key[32];
} ba_pending;

static void verified(void *data, int result)
{
    ba_pending *p = data;
    pt_txn *txn = result >= 0 ? pt_txn_ref_get(p->ref) : NULL;
    if (result == 0) { /* a failure spends a token of the bucket */
        failures_allowed(p->w);
        p->w->tokens -= 1.0;
    }
    if (txn) {
        pt_plugin_result r;
        if (result == 1 && p->consumer) {
            if (p->conf->cache_ttl_ms) cache_put(p->w, p->key, p->consumer->password_fp, p->conf->cache_ttl_ms);
            r = pt_txn_set_consumer(txn, p->consumer, "basic_auth");
        } else {
            r = pt_txn_auth_reject(txn, p->conf->challenge, "invalid username or password");
        }
        pt_txn_resume(txn, PT_SIDE_REQUEST, r);
    }
    pt_txn_ref_release(p->ref);
    free(p);
}

static pt_plugin_result basic_on_request_headers(pt_txn *txn, const void *conf, void *state)
{
    const pt_basic_auth_conf *c = conf;
    pt_request *req = pt_txn_request(txn);
    const pt_str *h = pt_headers_get(&req->headers, "Authorization");
    pt_str user, pass;
    int kind = h ? pt_basic_parse(pt_txn_arena(txn), *h, &user, &pass) : 0;
    int count = 0;
    for (uint32_t i = 0; i < req->headers.n; i++)
        if (pt_str_ieq_lit(req->headers.v[i].name, "Authorization")) count++;
    if (kind != 0 && !c->keep_authorization) pt_headers_remove(&req->headers, "Authorization");
    if (pt_txn_auth_skip(txn)) return PT_PLUGIN_CONTINUE;
    if (kind == 0) return pt_txn_auth_none(txn, c->challenge);
    if (kind < 0 || count > 1) return pt_txn_auth_reject(txn, c->challenge, "malformed Basic credentials");

    ba_worker *w = pt_txn_worker_state(txn, &pt_plugin_basic_auth);
    const pt_consumer *who = pt_consumer_by_basic_user(pt_txn_consumers(txn), user);
    uint8_t key[32];
    cache_key(w, user, pass, key);
    if (who && c->cache_ttl_ms && cache_hit(w, key, who->password_fp, c->cache_ttl_ms))
        return pt_txn_set_consumer(txn, who, "basic_auth");
    if (ba_pool_pending(w->pool) >= PT_BASIC_MAX_PENDING) {
        pt_txn_respond_problem(txn, 503, "too many password verifications in progress");
        pt_txn_respond_header(txn, PT_STR_LIT("Retry-After"), PT_STR_LIT("1"));
        return PT_PLUGIN_RESPOND;
    }
    if (!failures_allowed(w)) {
        pt_txn_respond_problem(txn, 429, "too many failed password verifications; try again shortly");
        pt_txn_respond_header(txn, PT_STR_LIT("Retry-After"), PT_STR_LIT("1"));
        return PT_PLUGIN_RESPOND;
    }
    ba_pending *p = pt_xcalloc(1, sizeof(*p));
    p->ref = pt_txn_ref_new(txn);
    p->w = w;
    p->conf = c;
    p->consumer = who;
    memcpy(p->key, key, 32);
    ba_pool_verify(w->pool, pass, who ? who->password_hash : w->dummy_hash, verified, p);
    return PT_PLUGIN_PAUSE;
}

/* Validates {realm, cache_ttl, keep_authorization}. */
static void *basic_configure(pt_conf_ctx *ctx, const pt_conf_node *node)
{
    static const char *const allowed[] = {"realm", "cache_ttl", "keep_authorization", NULL};
    pt_basic_auth_conf *c = pt_arena_calloc(ctx->arena, sizeof(*c));
    c->realm = "portico";
    c->cache_ttl_ms = 60000;
    bool ok = true;
    if (node && node->kind != PT_NODE_NULL) {
        if (!pt_conf_check_keys(ctx, node, allowed, "basic_auth")) return NULL;
        const pt_conf_node *r = pt_conf_get(node, "realm");
        if (r && pt_conf_string(ctx, r, &c->realm)) {
            for (const char *q = c->realm; *q; q++)
                if ((unsigned char)*q < 0x20 || *q == 0x7f || *q == '"' || *q == '\\') {
                    pt_conf_error(ctx, r, "basic_auth.realm must not contain quotes, backslashes or control characters");
                    ok = false;
                    break;
                }
        } else if (r) {
            ok = false;
        }
        const pt_conf_node *t = pt_conf_get(node, "cache_ttl");
        if (t && !pt_conf_duration_ms(ctx, t, &c->cache_ttl_ms)) ok = false;
        const pt_conf_node *k = pt_conf_get(node, "keep_authorization");
        if (k && !pt_conf_bool(ctx, k, &c->keep_authorization)) ok = false;
    }
    const char *ch = pt_arena_printf(ctx->arena, "Basic realm=\"%s\", charset=\"UTF-8\"", c->realm);
    c->challenge = pt_str_c(ch);
    return ok ? c : NULL;
}

const pt_plugin_type pt_plugin_basic_auth = {
    .name = "basic_auth",
    .configure = basic_configure,
    .worker_init = ba_worker_init,
    .worker_fini = ba_worker_fini,
    .on_request_headers = basic_on_request_headers,
};
