/* mtls_auth.c — names the consumer from the verified client certificate:
 * its subject DN, its CN or a subjectAltName, mapped to a configured
 * consumer (credentials.mtls, or the name) or to an ad-hoc one (see
 * mtls_auth.h). */
#include "plugins/mtls_auth/mtls_auth.h"

int pt_mtls_subject_cn(pt_str s, pt_str *cn)
{
    int found = 0;
    size_t i = 0;
    while (i < s.n) {
        /* one AVA: up to an unescaped ',' or '+' */
        size_t e = i;
        while (e < s.n && s.p[e] != ',' && s.p[e] != '+') e += s.p[e] == '\\' && e + 1 < s.n ? 2 : 1;
        if (e > s.n) e = s.n;
        if (e - i > 3 && (s.p[i] == 'C' || s.p[i] == 'c') && (s.p[i + 1] == 'N' || s.p[i + 1] == 'n') &&
            s.p[i + 2] == '=') {
            if (found++) return -1;
            *cn = pt_str_make(s.p + i + 3, e - i - 3);
        }
        i = e + 1;
    }
    return found;
}

/* An ad-hoc consumer's name: 1..PT_MTLS_MAX_NAME printable ASCII bytes,
 * no space at either end (it travels in a header). */
static bool name_ok(pt_str n)
{
    if (n.n == 0 || n.n > PT_MTLS_MAX_NAME || n.p[0] == ' ' || n.p[n.n - 1] == ' ') return false;
    for (size_t i = 0; i < n.n; i++)
        if ((unsigned char)n.p[i] < 0x20 || (unsigned char)n.p[i] >= 0x7f) return false;
    return true;
}

/* The SAN type bit of "TYPE:value" and its value, or 0. */
static unsigned san_kind(pt_str item, pt_str *value)
{
    static const struct { const char *prefix; unsigned bit; } kinds[] = {
        {"DNS:", PT_MTLS_SAN_DNS}, {"URI:", PT_MTLS_SAN_URI}, {"email:", PT_MTLS_SAN_EMAIL}};
    for (size_t k = 0; k < PT_ARRAY_LEN(kinds); k++) {
        size_t pl = strlen(kinds[k].prefix);
        if (item.n > pl && memcmp(item.p, kinds[k].prefix, pl) == 0) {
            *value = pt_str_make(item.p + pl, item.n - pl);
            return kinds[k].bit;
        }
    }
    return 0;
}

/* The caller named by an identity string: a configured consumer, or an
 * ad-hoc one in the request arena. NULL when it maps to nobody. */
static const pt_consumer *map_one(pt_txn *txn, const pt_mtls_auth_conf *c, pt_str cred_id, pt_str name)
{
    const pt_consumers *cs = pt_txn_consumers(txn);
    switch (c->map) {
    case PT_MTLS_MAP_CREDENTIALS: return pt_consumer_by_cert(cs, cred_id);
    case PT_MTLS_MAP_NAME: return pt_consumer_find(cs, name);
    case PT_MTLS_MAP_AD_HOC: break;
    }
    if (!name_ok(name)) return NULL;
    pt_arena *a = pt_txn_arena(txn);
    pt_consumer *ad = pt_arena_calloc(a, sizeof(*ad));
    ad->name = pt_arena_str(a, name).p;
    ad->groups = c->groups;
    ad->ngroups = c->ngroups;
    return ad;
}

static pt_plugin_result mtls_on_request_headers(pt_txn *txn, const void *conf, void *state)
{
    const pt_mtls_auth_conf *c = conf;
    if (pt_txn_auth_skip(txn)) return PT_PLUGIN_CONTINUE;
    pt_str subject = pt_txn_client_cert_subject(txn), sans = pt_txn_client_cert_sans(txn);
    if (!subject.n && !sans.n) return pt_txn_auth_none(txn, PT_STR_NULL);
    pt_arena *a = pt_txn_arena(txn);
    const pt_consumer *who = NULL;
    if (c->identity == PT_MTLS_ID_SUBJECT) {
        if (subject.n) {
            char *id = pt_arena_printf(a, "subject:%.*s", (int)subject.n, subject.p);
            who = map_one(txn, c, pt_str_c(id), subject);
        }
    } else if (c->identity == PT_MTLS_ID_CN) {
        pt_str cn = PT_STR_NULL;
        int r = pt_mtls_subject_cn(subject, &cn);
        if (r < 0) return pt_txn_auth_reject(txn, PT_STR_NULL, "the client certificate has several common names");
        if (r == 1) who = map_one(txn, c, PT_STR_NULL, cn);
    } else {
        size_t i = 0;
        while (i < sans.n) {
            size_t e = i;
            while (e < sans.n && sans.p[e] != ',') e++;
            pt_str item = pt_str_make(sans.p + i, e - i), value;
            i = e + 1;
            if (!(san_kind(item, &value) & c->san_types)) continue;
            const pt_consumer *m = map_one(txn, c, item, value);
            if (!m) continue;
            if (c->map == PT_MTLS_MAP_AD_HOC) { /* the first usable SAN names it */
                who = m;
                break;
            }
            if (who && who != m)
                return pt_txn_auth_reject(txn, PT_STR_NULL, "the client certificate names several consumers");
            who = m;
        }
    }
    if (!who) return pt_txn_auth_reject(txn, PT_STR_NULL, "the client certificate names no known consumer");
    return pt_txn_set_consumer(txn, who, "mtls_auth");
}

/* Reads an enum-valued key: the index of its value in `names`, else -1
 * (error recorded); `dflt` when absent. */
static int read_choice(pt_conf_ctx *ctx, const pt_conf_node *node, const char *key, const char *const *names,
                       int dflt)
{
    const pt_conf_node *n = pt_conf_get(node, key);
    if (!n) return dflt;
    for (int i = 0; n->kind == PT_NODE_SCALAR && names[i]; i++)
        if (strcmp(n->scalar, names[i]) == 0) return i;
    pt_conf_error(ctx, n, "mtls_auth.%s must be one of %s%s%s%s%s", key, names[0], names[1] ? ", " : "",
                  names[1] ? names[1] : "", names[2] ? ", " : "", names[2] ? names[2] : "");
    return -1;
}

/* Validates {identity, san_types, consumer, groups}. */
static void *mtls_configure(pt_conf_ctx *ctx, const pt_conf_node *node)
{
    static const char *const keys[] = {"identity", "san_types", "consumer", "groups", NULL};
    static const char *const identities[] = {"subject", "cn", "san", NULL};
    static const char *const maps[] = {"credentials", "name", "ad_hoc", NULL};
    pt_mtls_auth_conf *c = pt_arena_calloc(ctx->arena, sizeof(*c));
    c->san_types = PT_MTLS_SAN_DNS | PT_MTLS_SAN_URI | PT_MTLS_SAN_EMAIL;
    if (!node || node->kind == PT_NODE_NULL) return c;
    if (node->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, node, "mtls_auth: expected a mapping {identity, san_types, consumer, groups}");
        return NULL;
    }
    if (!pt_conf_check_keys(ctx, node, keys, "mtls_auth")) return NULL;
    int id = read_choice(ctx, node, "identity", identities, PT_MTLS_ID_SUBJECT);
    int map = read_choice(ctx, node, "consumer", maps, PT_MTLS_MAP_CREDENTIALS);
    if (id < 0 || map < 0) return NULL;
    c->identity = (pt_mtls_identity)id;
    c->map = (pt_mtls_map)map;
    if (c->identity == PT_MTLS_ID_CN && c->map == PT_MTLS_MAP_CREDENTIALS) {
        pt_conf_error(ctx, pt_conf_get(node, "identity"),
                      "mtls_auth: identity cn maps by consumer name or ad_hoc (credentials.mtls holds subjects "
                      "and SANs): set consumer: name or ad_hoc");
        return NULL;
    }
    if (c->identity == PT_MTLS_ID_SUBJECT && c->map == PT_MTLS_MAP_NAME) {
        pt_conf_error(ctx, pt_conf_get(node, "consumer"),
                      "mtls_auth: a subject DN is not a consumer name: use identity cn, or consumer credentials");
        return NULL;
    }
    const pt_conf_node *st = pt_conf_get(node, "san_types");
    if (st) {
        if (c->identity != PT_MTLS_ID_SAN) {
            pt_conf_error(ctx, st, "mtls_auth: san_types applies to identity san only");
            return NULL;
        }
        if (st->kind != PT_NODE_SEQ || st->n == 0) {
            pt_conf_error(ctx, st, "mtls_auth.san_types must be a non-empty list of DNS, URI, email");
            return NULL;
        }
        c->san_types = 0;
        for (size_t i = 0; i < st->n; i++) {
            const pt_conf_node *t = st->vals[i];
            unsigned bit = t->kind != PT_NODE_SCALAR ? 0
                           : !strcmp(t->scalar, "DNS")  ? PT_MTLS_SAN_DNS
                           : !strcmp(t->scalar, "URI")  ? PT_MTLS_SAN_URI
                           : !strcmp(t->scalar, "email") ? PT_MTLS_SAN_EMAIL
                                                         : 0;
            if (!bit) {
                pt_conf_error(ctx, t, "mtls_auth.san_types: expected DNS, URI or email");
                return NULL;
            }
            c->san_types |= bit;
        }
    }
    const pt_conf_node *g = pt_conf_get(node, "groups");
    if (g) {
        if (c->map != PT_MTLS_MAP_AD_HOC) {
            pt_conf_error(ctx, g, "mtls_auth: groups applies to consumer ad_hoc only (configured consumers have "
                                  "their own)");
            return NULL;
        }
        if (g->kind != PT_NODE_SEQ || g->n == 0) {
            pt_conf_error(ctx, g, "mtls_auth.groups must be a non-empty list of group names");
            return NULL;
        }
        c->groups = pt_arena_calloc(ctx->arena, g->n * sizeof(*c->groups));
        for (size_t i = 0; i < g->n; i++) {
            char *s;
            if (!pt_conf_string(ctx, g->vals[i], &s)) return NULL;
            bool ok = *s && strlen(s) <= 128;
            for (const char *q = s; *q; q++)
                if ((unsigned char)*q <= 0x20 || (unsigned char)*q >= 0x7f || *q == ',') ok = false;
            if (!ok) {
                pt_conf_error(ctx, g->vals[i], "mtls_auth.groups: \"%s\" is not a group name", s);
                return NULL;
            }
            c->groups[c->ngroups++] = s;
        }
    }
    return c;
}

const pt_plugin_type pt_plugin_mtls_auth = {
    .name = "mtls_auth",
    .configure = mtls_configure,
    .on_request_headers = mtls_on_request_headers,
};
