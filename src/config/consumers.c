/* consumers.c — `consumers:` and `identity_headers:`: named identities with
 * groups, metadata and credentials (API key digests, crypt(3) password
 * hashes), validated with positioned errors, and the O(1) lookup tables
 * (by name, by basic username, by key digest) built once at load. */
#include <crypt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>

#include "config/config_int.h"

/* ------------------------------------------------------------------ hashing */

/* FNV-1a over a slice: table slots for names (not secret). */
static uint64_t name_hash(pt_str s)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < s.n; i++) h = (h ^ (unsigned char)s.p[i]) * 1099511628211ull;
    return h;
}

/* A key digest is already uniform: its first 8 bytes are the slot hash. */
static uint64_t digest_hash(const uint8_t d[32])
{
    uint64_t h;
    memcpy(&h, d, sizeof(h));
    return h;
}

static size_t table_size(size_t n)
{
    size_t sz = 8;
    while (sz < n * 2) sz <<= 1;
    return sz;
}

/* SHA-256 of data[0, n) into out. */
static void sha256(const void *data, size_t n, uint8_t out[32])
{
    unsigned int len = 32;
    EVP_Digest(data, n, out, &len, EVP_sha256(), NULL);
}

/* ---------------------------------------------------------------- lookups */

const pt_consumer *pt_consumer_find(const pt_consumers *cs, pt_str name)
{
    if (!cs->by_name) return NULL;
    for (size_t i = name_hash(name) & cs->name_mask;; i = (i + 1) & cs->name_mask) {
        uint32_t ix = cs->by_name[i];
        if (!ix) return NULL;
        if (pt_str_eq(pt_str_c(cs->v[ix - 1].name), name)) return &cs->v[ix - 1];
    }
}

const pt_consumer *pt_consumer_by_basic_user(const pt_consumers *cs, pt_str user)
{
    if (!cs->by_user) return NULL;
    for (size_t i = name_hash(user) & cs->user_mask;; i = (i + 1) & cs->user_mask) {
        uint32_t ix = cs->by_user[i];
        if (!ix) return NULL;
        if (pt_str_eq(pt_str_c(cs->v[ix - 1].basic_user), user)) return &cs->v[ix - 1];
    }
}

const pt_consumer *pt_consumer_by_key_digest(const pt_consumers *cs, const uint8_t digest[32])
{
    if (!cs->by_key) return NULL;
    for (size_t i = digest_hash(digest) & cs->key_mask;; i = (i + 1) & cs->key_mask) {
        uint32_t ix = cs->by_key[i];
        if (!ix) return NULL;
        const pt_consumer_key *k = &cs->keys[ix - 1];
        if (CRYPTO_memcmp(k->digest, digest, 32) == 0) return k->consumer;
    }
}

const pt_consumer *pt_consumer_by_cert(const pt_consumers *cs, pt_str id)
{
    if (!cs->by_cert) return NULL;
    for (size_t i = name_hash(id) & cs->cert_mask;; i = (i + 1) & cs->cert_mask) {
        uint32_t ix = cs->by_cert[i];
        if (!ix) return NULL;
        if (pt_str_eq(pt_str_c(cs->certs[ix - 1].id), id)) return cs->certs[ix - 1].consumer;
    }
}

pt_str pt_consumer_meta_get(const pt_consumer *c, pt_str key)
{
    for (size_t i = 0; c && i < c->nmetadata; i++)
        if (pt_str_eq(pt_str_c(c->metadata[i].key), key)) return pt_str_c(c->metadata[i].value);
    return PT_STR_NULL;
}

bool pt_consumer_in_group(const pt_consumer *c, pt_str group)
{
    for (size_t i = 0; c && i < c->ngroups; i++)
        if (pt_str_eq(pt_str_c(c->groups[i]), group)) return true;
    return false;
}

bool pt_password_hash_ok(const char *hash, const char **why)
{
    static const char *const accepted[] = {"$y$", "$gy$", "$7$", "$2b$", "$2y$", "$6$"};
    bool known = false;
    for (size_t i = 0; i < PT_ARRAY_LEN(accepted); i++)
        if (strncmp(hash, accepted[i], strlen(accepted[i])) == 0) known = true;
    if (!known) {
        *why = hash[0] != '$'              ? "a DES crypt hash (or not a crypt hash at all); DES is refused"
               : strncmp(hash, "$1$", 3) == 0 ? "an MD5-crypt hash; MD5 is refused"
               : strncmp(hash, "$2a$", 4) == 0 ? "a bcrypt $2a$ hash (ambiguous legacy variant); rehash as $2b$"
                                              : "not a scheme Portico accepts";
        return false;
    }
    int r = crypt_checksalt(hash);
    if (r == CRYPT_SALT_OK) {
        /* crypt_checksalt checks the setting; the hash must also carry its
         * checksum after the last '$' (a bare salt verifies nothing). */
        const char *last = strrchr(hash, '$');
        if (!last || !last[1] || strspn(last + 1, "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") !=
                                     strlen(last + 1)) {
            *why = "a malformed hash (no checksum after the salt)";
            return false;
        }
        return true;
    }
    *why = r == CRYPT_SALT_TOO_CHEAP      ? "the hash's cost parameters are too cheap"
           : r == CRYPT_SALT_METHOD_LEGACY ? "a legacy scheme"
           : r == CRYPT_SALT_METHOD_DISABLED ? "a scheme disabled in this libcrypt"
                                             : "a malformed hash";
    return false;
}

/* ---------------------------------------------------------------- parsing */

/* Consumer and group names: 1..128 of [A-Za-z0-9._@:+-] (they travel in
 * headers, joined by commas, and in the access log). */
static bool ident_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 128) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("._@:+-", c)))
            return false;
    }
    return true;
}

static bool text_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return false;
    return true;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Key credentials under `keys:` into a growing array (*keys, *nkeys, *cap). */
static void conf_keys(pt_conf_ctx *ctx, const pt_conf_node *list, pt_consumer *c, pt_consumer_key **keys,
                      size_t *nkeys, size_t *cap)
{
    static const char *const allowed[] = {"key_sha256", "key", NULL};
    if (list->kind != PT_NODE_SEQ) {
        pt_conf_error(ctx, list, "consumer %s: credentials.keys must be a list of {key_sha256: HEX} or {key: ${ENV}}",
                      c->name);
        return;
    }
    for (size_t i = 0; i < list->n; i++) {
        const pt_conf_node *e = list->vals[i];
        if (!pt_conf_check_keys(ctx, e, allowed, "credentials.keys entry")) continue;
        const pt_conf_node *hx = pt_conf_get(e, "key_sha256"), *k = pt_conf_get(e, "key");
        if ((hx != NULL) == (k != NULL)) {
            pt_conf_error(ctx, e, "consumer %s: a key entry needs exactly one of key_sha256 or key", c->name);
            continue;
        }
        uint8_t d[32];
        if (hx) {
            if (hx->kind != PT_NODE_SCALAR || hx->scalar_len != 64) {
                pt_conf_error(ctx, hx, "consumer %s: key_sha256 must be 64 hex digits (see portico hash-key)", c->name);
                continue;
            }
            bool ok = true;
            for (size_t j = 0; j < 32; j++) {
                int hi = hexval(hx->scalar[2 * j]), lo = hexval(hx->scalar[2 * j + 1]);
                if (hi < 0 || lo < 0) ok = false;
                else d[j] = (uint8_t)(hi << 4 | lo);
            }
            if (!ok) {
                pt_conf_error(ctx, hx, "consumer %s: key_sha256 must be 64 hex digits (see portico hash-key)", c->name);
                continue;
            }
        } else {
            if (k->kind != PT_NODE_SCALAR || !k->env_ref) {
                pt_conf_error(ctx, k,
                              "consumer %s: key must be written as ${ENV_NAME} (never a literal key in the file; "
                              "or store key_sha256: from portico hash-key)",
                              c->name);
                continue;
            }
            if (k->scalar_len < 16) {
                pt_conf_error(ctx, k, "consumer %s: the key from the environment is %s (at least 16 characters)",
                              c->name, k->scalar_len ? "too short" : "empty");
                continue;
            }
            sha256(k->scalar, k->scalar_len, d);
        }
        if (*nkeys == *cap) {
            size_t nc = *cap ? *cap * 2 : 16;
            pt_consumer_key *nk = pt_arena_alloc(ctx->arena, nc * sizeof(*nk));
            if (*nkeys) memcpy(nk, *keys, *nkeys * sizeof(*nk));
            *keys = nk;
            *cap = nc;
        }
        memcpy((*keys)[*nkeys].digest, d, 32);
        (*keys)[*nkeys].consumer = c;
        (*nkeys)++;
    }
}

/* Growing list of certificate identities while consumers are read. */
typedef struct {
    pt_consumer_cert *v;
    size_t n, cap;
} cert_list;

static void cert_add(pt_conf_ctx *ctx, cert_list *l, const char *id, const pt_consumer *c)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 16;
        pt_consumer_cert *nv = pt_arena_alloc(ctx->arena, nc * sizeof(*nv));
        if (l->n) memcpy(nv, l->v, l->n * sizeof(*nv));
        l->v = nv;
        l->cap = nc;
    }
    l->v[l->n++] = (pt_consumer_cert){id, c};
}

/* `mtls: {subject: DN | [DNs], san: SAN | [SANs]}`: certificate
 * identities, stored in the form the TLS layer reports them. */
static void conf_mtls(pt_conf_ctx *ctx, const pt_conf_node *m, pt_consumer *c, cert_list *certs)
{
    static const char *const allowed[] = {"subject", "san", NULL};
    if (m->kind != PT_NODE_MAP || !pt_conf_check_keys(ctx, m, allowed, "credentials.mtls")) {
        if (m->kind != PT_NODE_MAP)
            pt_conf_error(ctx, m, "consumer %s: credentials.mtls must be {subject: DN, san: \"URI:...\"}", c->name);
        return;
    }
    for (int k = 0; k < 2; k++) {
        const pt_conf_node *n = pt_conf_get(m, allowed[k]);
        if (!n) continue;
        const pt_conf_node *const *items = n->kind == PT_NODE_SEQ ? (const pt_conf_node *const *)n->vals : &n;
        size_t count = n->kind == PT_NODE_SEQ ? n->n : 1;
        for (size_t i = 0; i < count; i++) {
            char *v;
            if (!pt_conf_string(ctx, items[i], &v)) continue;
            size_t vl = strlen(v);
            bool ok = vl > 0 && vl < 1024 && text_ok(v, vl);
            if (ok && k == 1)
                ok = (!strncmp(v, "DNS:", 4) && v[4]) || (!strncmp(v, "URI:", 4) && v[4]) ||
                     (!strncmp(v, "email:", 6) && v[6]);
            if (!ok) {
                pt_conf_error(ctx, items[i],
                              k == 0 ? "consumer %s: mtls subject must be an RFC 2253 DN such as \"CN=alice,O=Acme\""
                                     : "consumer %s: mtls san must be \"DNS:name\", \"URI:uri\" or \"email:address\"",
                              c->name);
                continue;
            }
            /* the TLS layer writes ',' inside a SAN value as "%2C" */
            size_t commas = 0;
            for (const char *q = v; k == 1 && *q; q++) commas += *q == ',';
            char *id = pt_arena_alloc(ctx->arena, vl + 2 * commas + 9), *o = id;
            if (k == 0) o += sprintf(o, "subject:");
            for (const char *q = v; *q; q++) {
                if (k == 1 && *q == ',') o += sprintf(o, "%%2C");
                else *o++ = *q;
            }
            *o = '\0';
            cert_add(ctx, certs, id, c);
        }
    }
}

/* `credentials: {keys: [...], basic: {username, password_hash}, mtls: {...}}`. */
static void conf_credentials(pt_conf_ctx *ctx, const pt_conf_node *cr, pt_consumer *c, pt_consumer_key **keys,
                             size_t *nkeys, size_t *cap, cert_list *certs)
{
    static const char *const allowed[] = {"keys", "basic", "mtls", NULL};
    static const char *const basic_keys[] = {"username", "password_hash", NULL};
    if (!pt_conf_check_keys(ctx, cr, allowed, "credentials")) return;
    const pt_conf_node *ks = pt_conf_get(cr, "keys");
    if (ks) conf_keys(ctx, ks, c, keys, nkeys, cap);
    const pt_conf_node *mt = pt_conf_get(cr, "mtls");
    if (mt) conf_mtls(ctx, mt, c, certs);
    const pt_conf_node *b = pt_conf_get(cr, "basic");
    if (!b) return;
    if (!pt_conf_check_keys(ctx, b, basic_keys, "credentials.basic")) return;
    const pt_conf_node *u = pt_conf_get(b, "username"), *ph = pt_conf_get(b, "password_hash");
    char *user = (char *)c->name;
    if (u) {
        if (!pt_conf_string(ctx, u, &user)) return;
        if (!*user || strchr(user, ':') || !text_ok(user, strlen(user))) {
            pt_conf_error(ctx, u, "consumer %s: basic username must be non-empty, without ':' or control characters",
                          c->name);
            return;
        }
    }
    if (!ph) {
        pt_conf_error(ctx, b, "consumer %s: credentials.basic needs password_hash (see portico hash-password)", c->name);
        return;
    }
    char *hash;
    if (!pt_conf_string(ctx, ph, &hash)) return;
    const char *why = NULL;
    if (!pt_password_hash_ok(hash, &why)) {
        pt_conf_error(ctx, ph,
                      "consumer %s: password_hash is %s (accepted: yescrypt $y$, bcrypt $2b$, sha512-crypt $6$, "
                      "scrypt $7$, gost-yescrypt $gy$; see portico hash-password)",
                      c->name, why);
        return;
    }
    c->basic_user = user;
    c->password_hash = hash;
    sha256(hash, strlen(hash), c->password_fp);
}

/* One consumer mapping into *c (name already checked unique by the caller). */
static bool conf_consumer(pt_conf_ctx *ctx, const pt_conf_node *m, pt_consumer *c, pt_consumer_key **keys,
                          size_t *nkeys, size_t *cap, cert_list *certs)
{
    static const char *const allowed[] = {"name", "groups", "metadata", "credentials", NULL};
    if (!pt_conf_check_keys(ctx, m, allowed, "consumer")) return false;
    c->line = m->line;
    const pt_conf_node *nm = pt_conf_get(m, "name");
    char *name;
    if (!nm) {
        pt_conf_error(ctx, m, "consumer: 'name' is required");
        return false;
    }
    if (!pt_conf_string(ctx, nm, &name)) return false;
    if (!ident_ok(name)) {
        pt_conf_error(ctx, nm, "consumer name \"%s\" must be 1-128 characters of A-Z a-z 0-9 . _ @ : + -", name);
        return false;
    }
    c->name = name;
    const pt_conf_node *g = pt_conf_get(m, "groups");
    if (g) {
        if (g->kind != PT_NODE_SEQ) {
            pt_conf_error(ctx, g, "consumer %s: groups must be a list of names", name);
        } else {
            const char **gv = pt_arena_calloc(ctx->arena, (g->n ? g->n : 1) * sizeof(*gv));
            for (size_t i = 0; i < g->n; i++) {
                char *gn;
                if (!pt_conf_string(ctx, g->vals[i], &gn)) continue;
                if (!ident_ok(gn)) {
                    pt_conf_error(ctx, g->vals[i], "consumer %s: group name \"%s\" must be 1-128 characters of "
                                  "A-Z a-z 0-9 . _ @ : + -", name, gn);
                    continue;
                }
                gv[c->ngroups++] = gn;
            }
            c->groups = gv;
        }
    }
    const pt_conf_node *md = pt_conf_get(m, "metadata");
    if (md) {
        if (md->kind != PT_NODE_MAP) {
            pt_conf_error(ctx, md, "consumer %s: metadata must be a mapping of strings", name);
        } else {
            pt_consumer_meta *mv = pt_arena_calloc(ctx->arena, (md->n ? md->n : 1) * sizeof(*mv));
            for (size_t i = 0; i < md->n; i++) {
                const pt_conf_node *v = md->vals[i];
                if (v->kind != PT_NODE_SCALAR || !text_ok(v->scalar, v->scalar_len)) {
                    pt_conf_error(ctx, v, "consumer %s: metadata value of \"%s\" must be a string without control "
                                  "characters", name, md->keys[i]->scalar);
                    continue;
                }
                mv[c->nmetadata].key = md->keys[i]->scalar;
                mv[c->nmetadata++].value = v->scalar;
            }
            c->metadata = mv;
        }
    }
    const pt_conf_node *cr = pt_conf_get(m, "credentials");
    if (cr) conf_credentials(ctx, cr, c, keys, nkeys, cap, certs);
    return true;
}

/* `identity_headers: {consumer, groups, anonymous}`: names, or null/false
 * for "not sent". Defaults: X-Consumer-Name, X-Consumer-Groups,
 * X-Anonymous-Consumer. */
static void conf_identity_headers(pt_conf_ctx *ctx, const pt_conf_node *root, pt_config *cfg)
{
    static const char *const allowed[] = {"consumer", "groups", "anonymous", NULL};
    pt_identity_headers *ih = &cfg->identity_headers;
    ih->consumer = "X-Consumer-Name";
    ih->groups = "X-Consumer-Groups";
    ih->anonymous = "X-Anonymous-Consumer";
    const pt_conf_node *n = pt_conf_get(root, "identity_headers");
    if (!n || !pt_conf_check_keys(ctx, n, allowed, "identity_headers")) return;
    char **slots[] = {&ih->consumer, &ih->groups, &ih->anonymous};
    for (size_t i = 0; i < 3; i++) {
        const pt_conf_node *v = pt_conf_get(n, allowed[i]);
        if (!v) continue;
        if (v->kind == PT_NODE_NULL || (v->kind == PT_NODE_SCALAR && !v->quoted && !strcmp(v->scalar, "false"))) {
            *slots[i] = NULL;
            continue;
        }
        char *s;
        if (!pt_conf_string(ctx, v, &s)) continue;
        bool ok = *s && strlen(s) <= 255;
        for (const char *q = s; *q; q++)
            if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') || *q == '-' ||
                  *q == '_'))
                ok = false;
        if (!ok) {
            pt_conf_error(ctx, v, "identity_headers.%s: \"%s\" is not a header name (letters, digits, '-', '_')",
                          allowed[i], s);
            continue;
        }
        *slots[i] = s;
    }
}

/* Inserts index+1 `ix` at the first free slot from `h`. */
static void table_put(uint32_t *t, size_t mask, uint64_t h, uint32_t ix)
{
    size_t i = h & mask;
    while (t[i]) i = (i + 1) & mask;
    t[i] = ix;
}

void pt_conf_read_consumers(pt_conf_ctx *ctx, const pt_conf_node *root, pt_config *cfg)
{
    conf_identity_headers(ctx, root, cfg);
    const pt_conf_node *list = pt_conf_opt(root, "consumers");
    if (!list) return;
    if (list->kind != PT_NODE_SEQ) {
        pt_conf_error(ctx, list, "consumers must be a list of {name, groups, metadata, credentials}");
        return;
    }
    pt_consumers *cs = &cfg->consumers;
    cs->v = pt_arena_calloc(ctx->arena, (list->n ? list->n : 1) * sizeof(*cs->v));
    size_t cap = 0;
    cert_list certs = {0};
    cs->name_mask = table_size(list->n) - 1;
    cs->by_name = pt_arena_calloc(ctx->arena, (cs->name_mask + 1) * sizeof(uint32_t));
    cs->user_mask = cs->name_mask;
    cs->by_user = pt_arena_calloc(ctx->arena, (cs->user_mask + 1) * sizeof(uint32_t));
    for (size_t i = 0; i < list->n; i++) {
        pt_consumer *c = &cs->v[cs->n];
        size_t before = cs->nkeys, before_certs = certs.n;
        if (!conf_consumer(ctx, list->vals[i], c, &cs->keys, &cs->nkeys, &cap, &certs)) {
            certs.n = before_certs;
            continue;
        }
        c->line = list->vals[i]->line;
        if (pt_consumer_find(cs, pt_str_c(c->name))) {
            pt_conf_error(ctx, pt_conf_get(list->vals[i], "name"), "consumer \"%s\" is declared twice", c->name);
            cs->nkeys = before;
            certs.n = before_certs;
            continue;
        }
        if (c->basic_user && pt_consumer_by_basic_user(cs, pt_str_c(c->basic_user))) {
            pt_conf_error(ctx, pt_conf_get(list->vals[i], "credentials"),
                          "consumer %s: basic username \"%s\" belongs to another consumer", c->name, c->basic_user);
            cs->nkeys = before;
            certs.n = before_certs;
            continue;
        }
        cs->n++;
        table_put(cs->by_name, cs->name_mask, name_hash(pt_str_c(c->name)), (uint32_t)cs->n);
        if (c->basic_user)
            table_put(cs->by_user, cs->user_mask, name_hash(pt_str_c(c->basic_user)), (uint32_t)cs->n);
    }
    /* the certificate identity table; an identity on two consumers is refused */
    cs->certs = certs.v;
    if (certs.n) {
        cs->cert_mask = table_size(certs.n) - 1;
        cs->by_cert = pt_arena_calloc(ctx->arena, (cs->cert_mask + 1) * sizeof(uint32_t));
        for (size_t i = 0; i < certs.n; i++) {
            const pt_consumer *owner = pt_consumer_by_cert(cs, pt_str_c(certs.v[i].id));
            if (owner == certs.v[i].consumer) continue; /* listed twice on one consumer */
            if (owner) {
                pt_conf_error(ctx, list, "consumers %s and %s share the mTLS identity \"%s\"", owner->name,
                              certs.v[i].consumer->name, certs.v[i].id);
                continue;
            }
            table_put(cs->by_cert, cs->cert_mask, name_hash(pt_str_c(certs.v[i].id)), (uint32_t)(i + 1));
            cs->ncerts = i + 1;
        }
    }
    if (!cs->nkeys) return;
    /* the key table (consumer pointers point into cs->v, which never
     * moves); a digest seen twice is refused */
    cs->key_mask = table_size(cs->nkeys) - 1;
    cs->by_key = pt_arena_calloc(ctx->arena, (cs->key_mask + 1) * sizeof(uint32_t));
    for (size_t i = 0; i < cs->nkeys; i++) {
        const pt_consumer *owner = pt_consumer_by_key_digest(cs, cs->keys[i].digest);
        if (owner) {
            pt_conf_error(ctx, list, "consumers %s and %s share an API key (keys must be unique)", owner->name,
                          cs->keys[i].consumer->name);
            continue;
        }
        table_put(cs->by_key, cs->key_mask, digest_hash(cs->keys[i].digest), (uint32_t)(i + 1));
    }
}
