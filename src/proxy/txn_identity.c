/* txn_identity.c — who is calling: the consumer authentication plugins set
 * on a transaction, how several methods combine on a route (auth mode any
 * or all, the anonymous consumer, the 401 with every challenge), the
 * authorization facts (scopes, claims) later plugins check, and the
 * upstream identity headers (client copies always removed). The contract
 * is in plugin/plugin.h ("Identity"); docs/authentication.md tells it. */
#include "proxy/txn_int.h"

struct txn_identity {
    const pt_consumer *consumer;
    const char *method;
    bool anonymous;           /* consumer is the route's anonymous consumer */
    bool missing;             /* some method found no credential of its scheme */
    bool settled;
    pt_plugin_result settle_result;
    pt_headers challenges;    /* WWW-Authenticate values collected (name unused) */
    pt_headers scopes;        /* names only */
    pt_headers claims;        /* name -> value */
};

/* The txn's identity record, created on first use in the request arena. */
static txn_identity *ident(pt_txn *t)
{
    if (!t->id) t->id = pt_arena_calloc(t->a, sizeof(*t->id));
    return t->id;
}

static pt_auth_mode route_mode(const pt_txn *t) { return t->route ? t->route->auth.mode : PT_AUTH_ANY; }

const pt_consumers *pt_conf_consumers(pt_conf_ctx *ctx) { return &ctx->cfg->consumers; }
const pt_consumers *pt_txn_consumers(pt_txn *t) { return &t->gen->cfg->consumers; }
const pt_consumer *pt_txn_consumer(pt_txn *t) { return t->id ? t->id->consumer : NULL; }
const char *pt_txn_auth_method(pt_txn *t) { return t->id ? t->id->method : NULL; }

bool pt_txn_auth_skip(pt_txn *t) { return route_mode(t) == PT_AUTH_ANY && pt_txn_consumer(t) != NULL; }

/* Prepares the 401: problem+json with `detail` and one WWW-Authenticate
 * per collected challenge (plus `extra` when non-empty). */
static pt_plugin_result respond_401(pt_txn *t, pt_str extra, const char *detail)
{
    txn_identity *id = ident(t);
    pt_txn_respond_problem(t, 401, detail);
    for (uint32_t i = 0; i < id->challenges.n; i++)
        pt_txn_respond_header(t, PT_STR_LIT("WWW-Authenticate"), id->challenges.v[i].value);
    if (extra.n) pt_txn_respond_header(t, PT_STR_LIT("WWW-Authenticate"), extra);
    return PT_PLUGIN_RESPOND;
}

pt_plugin_result pt_txn_auth_none(pt_txn *t, pt_str challenge)
{
    txn_identity *id = ident(t);
    if (route_mode(t) == PT_AUTH_ALL) return respond_401(t, challenge, "authentication required");
    id->missing = true;
    if (challenge.n) {
        for (uint32_t i = 0; i < id->challenges.n; i++)
            if (pt_str_eq(id->challenges.v[i].value, challenge)) return PT_PLUGIN_CONTINUE;
        pt_headers_add(&id->challenges, t->a, PT_STR_LIT("WWW-Authenticate"), pt_arena_str(t->a, challenge));
    }
    return PT_PLUGIN_CONTINUE;
}

pt_plugin_result pt_txn_auth_reject(pt_txn *t, pt_str challenge, const char *detail)
{
    pt_txn_respond_problem(t, 401, detail ? detail : "invalid credentials");
    if (challenge.n) pt_txn_respond_header(t, PT_STR_LIT("WWW-Authenticate"), challenge);
    return PT_PLUGIN_RESPOND;
}

pt_plugin_result pt_txn_set_consumer(pt_txn *t, const pt_consumer *c, const char *method)
{
    txn_identity *id = ident(t);
    if (!c) return pt_txn_auth_reject(t, PT_STR_NULL, "invalid credentials");
    if (id->consumer && !id->anonymous && route_mode(t) == PT_AUTH_ALL &&
        !pt_str_eq(pt_str_c(id->consumer->name), pt_str_c(c->name)))
        return pt_txn_auth_reject(t, PT_STR_NULL, "the credentials name different consumers");
    id->consumer = c;
    id->method = method;
    id->anonymous = false;
    return PT_PLUGIN_CONTINUE;
}

bool pt_txn_auth_started(pt_txn *t)
{
    const txn_identity *id = ident(t);
    return id->missing || id->consumer != NULL;
}

pt_plugin_result pt_txn_auth_settle(pt_txn *t)
{
    txn_identity *id = ident(t);
    if (id->settled) {
        /* a 401 prepared once is prepared again (a caller may have answered since) */
        if (id->settle_result == PT_PLUGIN_RESPOND) respond_401(t, PT_STR_NULL, "authentication required");
        return id->settle_result;
    }
    id->settled = true;
    id->settle_result = PT_PLUGIN_CONTINUE;
    if (id->consumer) return PT_PLUGIN_CONTINUE;
    if (t->route && t->route->auth.anonymous) {
        id->consumer = t->route->auth.anonymous;
        id->method = "anonymous";
        id->anonymous = true;
        return PT_PLUGIN_CONTINUE;
    }
    if (id->missing) {
        id->settle_result = respond_401(t, PT_STR_NULL, "authentication required");
        t->responder = "auth"; /* whichever plugin asked for the settling */
    }
    return id->settle_result;
}

/* ---- facts ---- */

void pt_txn_add_scope(pt_txn *t, pt_str scope)
{
    if (!scope.n || pt_txn_has_scope(t, scope)) return;
    pt_headers_add(&ident(t)->scopes, t->a, pt_arena_str(t->a, scope), PT_STR_NULL);
}

bool pt_txn_has_scope(pt_txn *t, pt_str scope)
{
    if (!t->id) return false;
    for (uint32_t i = 0; i < t->id->scopes.n; i++)
        if (pt_str_eq(t->id->scopes.v[i].name, scope)) return true;
    return false;
}

void pt_txn_set_claim(pt_txn *t, pt_str name, pt_str value)
{
    txn_identity *id = ident(t);
    for (uint32_t i = 0; i < id->claims.n; i++)
        if (pt_str_eq(id->claims.v[i].name, name)) {
            id->claims.v[i].value = pt_arena_str(t->a, value);
            return;
        }
    pt_headers_add(&id->claims, t->a, pt_arena_str(t->a, name), pt_arena_str(t->a, value));
}

pt_str pt_txn_claim(pt_txn *t, pt_str name)
{
    if (!t->id) return PT_STR_NULL;
    for (uint32_t i = 0; i < t->id->claims.n; i++)
        if (pt_str_eq(t->id->claims.v[i].name, name)) return t->id->claims.v[i].value;
    return PT_STR_NULL;
}

/* ---- core hooks ---- */

void txn_identity_strip(pt_txn *t)
{
    const pt_identity_headers *ih = &t->gen->cfg->identity_headers;
    pt_headers *h = &t->req->headers;
    /* the defaults are removed even when renamed or switched off: an
     * upstream may still trust them */
    static const char *const defaults[] = {"X-Consumer-Name", "X-Consumer-Groups", "X-Anonymous-Consumer"};
    for (size_t i = 0; i < PT_ARRAY_LEN(defaults); i++) pt_headers_remove(h, defaults[i]);
    if (ih->consumer) pt_headers_remove(h, ih->consumer);
    if (ih->groups) pt_headers_remove(h, ih->groups);
    if (ih->anonymous) pt_headers_remove(h, ih->anonymous);
}

void txn_identity_forward(pt_txn *t)
{
    const pt_consumer *c = pt_txn_consumer(t);
    if (!c) return;
    const pt_identity_headers *ih = &t->gen->cfg->identity_headers;
    pt_headers *h = &t->req->headers;
    if (ih->consumer) pt_headers_set(h, t->a, pt_str_c(ih->consumer), pt_str_c(c->name));
    if (ih->groups && c->ngroups) {
        size_t n = 0;
        for (size_t i = 0; i < c->ngroups; i++) n += strlen(c->groups[i]) + 2;
        char *v = pt_arena_alloc(t->a, n + 1), *o = v;
        for (size_t i = 0; i < c->ngroups; i++) {
            if (o != v) *o++ = ',', *o++ = ' ';
            size_t gl = strlen(c->groups[i]);
            memcpy(o, c->groups[i], gl);
            o += gl;
        }
        pt_headers_set(h, t->a, pt_str_c(ih->groups), pt_str_make(v, (size_t)(o - v)));
    }
    if (ih->anonymous && t->id->anonymous) pt_headers_set(h, t->a, pt_str_c(ih->anonymous), PT_STR_LIT("true"));
}

pt_str txn_consumer_name(const pt_txn *t)
{
    return t->id && t->id->consumer ? pt_str_c(t->id->consumer->name) : PT_STR_NULL;
}
