/* redis.c — Redis for plugins: the `redis:` block reader, the per-worker
 * registry of shared connections (plugin/redis.h) and the calls of
 * plugin.h's Redis section, over net/redis.c (docs/redis.md). */
#include "plugin/redis.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "plugin/plugin.h"

#define LINGER_MS 30000

struct pt_redis_conf {
    pt_redis_opts opts; /* strings in the configuration's arena */
    char *key;          /* address, username, db, password: what makes two blocks share a connection */
    size_t key_len;
    const void *owner;  /* the configuration's arena: references are per (worker, configuration) */
    /* metrics (NULL when off), held by the configuration */
    pt_metric_series *m_commands, *m_failures, *m_ready;
};

static const char *const REDIS_LABEL[] = {"redis", NULL};
static const char *const RESULTS[] = {"ok", "server_error", "timeout", "down", "busy", NULL};
static const pt_metric_dim RESULT_DIM[] = {{"result", RESULTS}};
static const pt_metric_desc COMMANDS = {
    .name = "portico_redis_commands_total",
    .help = "Redis commands of plugins by outcome (down, busy: refused at once).",
    .type = PT_METRIC_COUNTER, .labels = REDIS_LABEL, .dims = RESULT_DIM, .ndims = 1};
static const pt_metric_desc FAILURES = {
    .name = "portico_redis_connection_failures_total",
    .help = "Redis connections lost or connection attempts failed (each is followed by a reconnect after backoff).",
    .type = PT_METRIC_COUNTER, .labels = REDIS_LABEL};
static const pt_metric_desc READY = {
    .name = "portico_redis_connections_ready",
    .help = "Workers whose connection to this Redis server is up (connected, AUTH/SELECT done).",
    .type = PT_METRIC_GAUGE, .labels = REDIS_LABEL};

/* ------------------------------------------------------------------ config */

/* "IP:port", "[IPv6]:port" or "unix:/path" into opts->ss. */
static bool parse_address(const char *s, pt_redis_opts *o)
{
    memset(&o->ss, 0, sizeof o->ss);
    if (strncmp(s, "unix:", 5) == 0) {
        struct sockaddr_un *un = (struct sockaddr_un *)&o->ss;
        size_t n = strlen(s + 5);
        if (n == 0 || n >= sizeof un->sun_path || s[5] != '/') return false;
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, s + 5, n + 1);
        o->sslen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
        return true;
    }
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || !colon[1]) return false;
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 1 || port > 65535) return false;
    char host[64];
    size_t hl = (size_t)(colon - s);
    if (s[0] == '[') {
        if (hl < 3 || s[hl - 1] != ']' || hl - 2 >= sizeof host) return false;
        memcpy(host, s + 1, hl - 2);
        host[hl - 2] = '\0';
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&o->ss;
        if (inet_pton(AF_INET6, host, &a6->sin6_addr) != 1) return false;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        o->sslen = sizeof *a6;
        return true;
    }
    if (hl >= sizeof host) return false;
    memcpy(host, s, hl);
    host[hl] = '\0';
    struct sockaddr_in *a4 = (struct sockaddr_in *)&o->ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) != 1) return false;
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    o->sslen = sizeof *a4;
    return true;
}

/* A duration in (0, 60 s]. */
static bool read_timeout(pt_conf_ctx *ctx, const pt_conf_node *node, const char *key, const char *what,
                         uint64_t *out)
{
    const pt_conf_node *n = pt_conf_get(node, key);
    if (!n) return true;
    if (!pt_conf_duration_ms(ctx, n, out)) return false;
    if (*out == 0 || *out > 60000) {
        pt_conf_error(ctx, n, "%s: '%s' must be more than 0 and at most 60s", what, key);
        return false;
    }
    return true;
}

const pt_redis_conf *pt_redis_conf_read(pt_conf_ctx *ctx, const pt_conf_node *node, const char *what)
{
    static const char *const allowed[] = {"address",         "username",        "password",   "db",
                                          "connect_timeout", "command_timeout", "max_pending", NULL};
    if (!node || node->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, node, "%s: expected a mapping {address: 127.0.0.1:6379 | unix:/path, ...}", what);
        return NULL;
    }
    if (!pt_conf_check_keys(ctx, node, allowed, what)) return NULL;
    pt_redis_conf *rc = pt_arena_calloc(ctx->arena, sizeof(*rc));
    pt_redis_opts *o = &rc->opts;
    *o = (pt_redis_opts){.connect_timeout_ms = 1000, .command_timeout_ms = 100, .max_pending = 1000};
    bool ok = true;
    const pt_conf_node *addr = pt_conf_get(node, "address");
    char *text = NULL;
    if (!addr) {
        pt_conf_error(ctx, node, "%s: 'address' is required (127.0.0.1:6379, [::1]:6379 or unix:/path)", what);
        ok = false;
    } else if (!pt_conf_string(ctx, addr, &text)) {
        ok = false;
    } else if (!parse_address(text, o)) {
        pt_conf_error(ctx, addr,
                      "%s: address '%s' is not an IP address with a port (127.0.0.1:6379, [::1]:6379) or "
                      "unix:/absolute/path (host names are not resolved: a worker never blocks)",
                      what, text);
        ok = false;
    }
    o->text = text;
    const pt_conf_node *user = pt_conf_get(node, "username"), *pass = pt_conf_get(node, "password");
    char *s = NULL;
    if (user) {
        if (!pt_conf_string(ctx, user, &s)) ok = false;
        else if (!*s) {
            pt_conf_error(ctx, user, "%s: 'username' must not be empty", what);
            ok = false;
        } else o->username = s;
        if (!pass) {
            pt_conf_error(ctx, user, "%s: 'username' needs a 'password'", what);
            ok = false;
        }
    }
    if (pass) {
        if (pass->kind != PT_NODE_SCALAR || !pass->env_ref || !pass->scalar_len) {
            pt_conf_error(ctx, pass,
                          "%s: 'password' must be written as ${ENV_NAME} (never a literal secret in the file), "
                          "with a non-empty value",
                          what);
            ok = false;
        } else {
            o->password = pass->scalar;
        }
    }
    const pt_conf_node *db = pt_conf_get(node, "db");
    int64_t v = 0;
    if (db) {
        if (pt_conf_int(ctx, db, 0, 65535, &v)) o->db = (int)v;
        else ok = false;
    }
    ok = read_timeout(ctx, node, "connect_timeout", what, &o->connect_timeout_ms) && ok;
    ok = read_timeout(ctx, node, "command_timeout", what, &o->command_timeout_ms) && ok;
    const pt_conf_node *mp = pt_conf_get(node, "max_pending");
    if (mp) {
        if (pt_conf_int(ctx, mp, 1, 1000000, &v)) o->max_pending = (uint32_t)v;
        else ok = false;
    }
    if (!ok) return NULL;
    /* the key: NUL-separated fields, so no two different tuples collide */
    const char *u = o->username ? o->username : "", *p = o->password ? o->password : "";
    size_t n = strlen(text) + strlen(u) + strlen(p) + 16 + 4;
    rc->key = pt_arena_alloc(ctx->arena, n);
    int kl = snprintf(rc->key, n, "%s%c%s%c%d%c%s", text, 0, u, 0, o->db, 0, p);
    rc->key_len = (size_t)kl;
    rc->owner = ctx->arena;
    const char *const values[] = {text, NULL};
    rc->m_commands = pt_conf_metric(ctx, node, &COMMANDS, values);
    rc->m_failures = pt_conf_metric(ctx, node, &FAILURES, values);
    rc->m_ready = pt_conf_metric(ctx, node, &READY, values);
    return rc;
}

const char *pt_redis_conf_address(const pt_redis_conf *conf) { return conf->opts.text; }

const pt_redis_script *pt_conf_redis_script(pt_conf_ctx *ctx, const char *text)
{
    pt_redis_script *s = pt_arena_calloc(ctx->arena, sizeof(*s));
    size_t len = strlen(text);
    char *copy = pt_arena_alloc(ctx->arena, len + 1);
    memcpy(copy, text, len + 1);
    pt_redis_script_init(s, copy, len);
    return s;
}

/* ------------------------------------------------- the per-worker registry */

typedef struct entry {
    char *key;
    size_t key_len;
    pt_redis_conn *conn;
    uint32_t refs;
    pt_timer linger;
    struct registry *reg;
    /* metrics: the series of a configuration still attached (NULL when
     * none or off); `counted`: this worker's +1 is in m->m_ready */
    const pt_redis_conf *m;
    bool ready, counted;
} entry;

/* ------------------------------------------------------------ metrics */

static void on_result(void *data, pt_redis_error e)
{
    entry *en = data;
    static const int cell[] = {[PT_REDIS_OK] = 0,           [PT_REDIS_ERR_SERVER] = 1, [PT_REDIS_ERR_TIMEOUT] = 2,
                               [PT_REDIS_ERR_DOWN] = 3,     [PT_REDIS_ERR_BUSY] = 4,   [PT_REDIS_ERR_CLOSED] = -1,
                               [PT_REDIS_ERR_INVALID] = -1};
    if (en->m && cell[e] >= 0) pt_metric_add(en->m->m_commands, (size_t)cell[e], 1);
}

static void on_failure(void *data)
{
    entry *en = data;
    if (en->m) pt_metric_add(en->m->m_failures, 0, 1);
}

static void count_ready(entry *en, bool on)
{
    if (on == en->counted) return;
    if (on && (!en->m || !en->m->m_ready)) return;
    pt_metric_add(en->m->m_ready, 0, on ? 1 : -1);
    en->counted = on;
}

static void on_ready(void *data, bool ready)
{
    entry *en = data;
    en->ready = ready;
    count_ready(en, ready);
}

static const pt_redis_observer OBSERVER = {.result = on_result, .ready = on_ready, .failure = on_failure};

/* Writes go to the series of `conf` (a configuration attached to the entry,
 * so they stay valid), or nowhere (NULL). */
static void use_series(entry *en, const pt_redis_conf *conf)
{
    count_ready(en, false); /* out of the old series while it is still held */
    en->m = conf;
    count_ready(en, en->ready);
}

/* A reference of one block (conf) of one configuration (owner) on this worker. */
typedef struct {
    const pt_redis_conf *conf;
    const void *owner;
    entry *e;
} attachment;

typedef struct registry {
    pt_loop *loop;
    entry **entries;
    size_t nentries, cap;
    attachment *att;
    size_t natt, attcap;
} registry;

static registry *registry_of(pt_loop *loop, bool create)
{
    registry *r = pt_loop_slot(loop, PT_LOOP_SLOT_REDIS);
    if (!r && create) {
        r = pt_xcalloc(1, sizeof(*r));
        r->loop = loop;
        pt_loop_set_slot(loop, PT_LOOP_SLOT_REDIS, r);
    }
    return r;
}

static void entry_remove(registry *r, entry *e, bool notify)
{
    for (size_t i = 0; i < r->nentries; i++)
        if (r->entries[i] == e) {
            r->entries[i] = r->entries[--r->nentries];
            break;
        }
    pt_timer_stop(r->loop, &e->linger);
    use_series(e, NULL);
    pt_redis_conn_free(e->conn, notify);
    memset(e->key, 0, e->key_len); /* holds the password */
    free(e->key);
    free(e);
}

static void linger_done(pt_loop *loop, pt_timer *t)
{
    entry *e = t->data;
    PT_UNUSED(loop);
    if (e->refs == 0) entry_remove(e->reg, e, true);
}

pt_redis_conn *pt_redis_worker_conn(pt_loop *loop, const pt_redis_conf *conf)
{
    registry *r = registry_of(loop, true);
    for (size_t i = 0; i < r->natt; i++)
        if (r->att[i].conf == conf) return r->att[i].e->conn;
    entry *e = NULL;
    for (size_t i = 0; i < r->nentries && !e; i++)
        if (r->entries[i]->key_len == conf->key_len && memcmp(r->entries[i]->key, conf->key, conf->key_len) == 0)
            e = r->entries[i];
    if (!e) {
        e = pt_xcalloc(1, sizeof(*e));
        e->reg = r;
        e->key = pt_xmalloc(conf->key_len);
        memcpy(e->key, conf->key, conf->key_len);
        e->key_len = conf->key_len;
        e->m = conf; /* a connect refused at once is counted */
        pt_redis_opts o = conf->opts;
        o.observer = &OBSERVER;
        o.observer_data = e;
        e->conn = pt_redis_conn_new(loop, &o);
        if (r->nentries == r->cap) {
            r->cap = r->cap ? r->cap * 2 : 4;
            r->entries = pt_xrealloc(r->entries, r->cap * sizeof(*r->entries));
        }
        r->entries[r->nentries++] = e;
    }
    if (r->natt == r->attcap) {
        r->attcap = r->attcap ? r->attcap * 2 : 8;
        r->att = pt_xrealloc(r->att, r->attcap * sizeof(*r->att));
    }
    r->att[r->natt++] = (attachment){.conf = conf, .owner = conf->owner, .e = e};
    e->refs++;
    pt_timer_stop(loop, &e->linger);
    use_series(e, conf);
    pt_redis_conn_tune(e->conn, &conf->opts); /* the newest block's timeouts and max_pending */
    return e->conn;
}

void pt_redis_worker_release(pt_loop *loop, const void *owner)
{
    registry *r = registry_of(loop, false);
    if (!r) return;
    for (size_t i = 0; i < r->natt;) {
        if (r->att[i].owner != owner) {
            i++;
            continue;
        }
        entry *e = r->att[i].e;
        r->att[i] = r->att[--r->natt];
        e->refs--;
        /* the series may be the configuration going away: move to one
         * still attached (the same series when the address is the same) */
        const pt_redis_conf *still = NULL;
        for (size_t j = 0; j < r->natt && !still; j++)
            if (r->att[j].e == e) still = r->att[j].conf;
        use_series(e, still);
        if (e->refs == 0) pt_timer_start(loop, &e->linger, LINGER_MS, linger_done, e);
    }
}

void pt_redis_worker_fini(pt_loop *loop)
{
    registry *r = registry_of(loop, false);
    if (!r) return;
    while (r->nentries) entry_remove(r, r->entries[r->nentries - 1], false);
    free(r->entries);
    free(r->att);
    free(r);
    pt_loop_set_slot(loop, PT_LOOP_SLOT_REDIS, NULL);
}

/* ------------------------------------------------------------ plugin calls */

pt_redis_call *pt_redis_command(struct pt_loop *loop, const pt_redis_conf *conf, int argc, const char *const *argv,
                                const size_t *argvlen, pt_redis_done_fn done, void *data, pt_redis_error *err)
{
    return pt_redis_conn_command(pt_redis_worker_conn(loop, conf), argc, argv, argvlen, done, data, err);
}

pt_redis_call *pt_redis_eval(struct pt_loop *loop, const pt_redis_conf *conf, const pt_redis_script *script,
                             int nkeys, int argc, const char *const *argv, const size_t *argvlen,
                             pt_redis_done_fn done, void *data, pt_redis_error *err)
{
    return pt_redis_conn_eval(pt_redis_worker_conn(loop, conf), script, nkeys, argc, argv, argvlen, done, data, err);
}

/* A call bound to an arena (a request's): the holder lives in the arena,
 * so the arena's cleanup cancels a call still waiting. */
typedef struct {
    pt_redis_call *call;
    pt_redis_done_fn done;
    void *data;
} bound_call;

static void bound_done(void *data, const pt_redis_result *r)
{
    bound_call *b = data;
    b->call = NULL;
    b->done(b->data, r);
}

static void bound_cleanup(void *data)
{
    bound_call *b = data;
    if (b->call) pt_redis_cancel(b->call);
    b->call = NULL;
}

static bound_call *bound_new(pt_arena *arena, pt_redis_done_fn done, void *data, pt_redis_error *err)
{
    if (!done) {
        if (err) *err = PT_REDIS_ERR_INVALID;
        return NULL;
    }
    bound_call *b = pt_arena_calloc(arena, sizeof(*b));
    b->done = done;
    b->data = data;
    return b;
}

static bool bound_start(pt_arena *arena, bound_call *b, pt_redis_call *call)
{
    if (!call) return false;
    b->call = call;
    pt_arena_on_cleanup(arena, bound_cleanup, b);
    return true;
}

bool pt_redis_arena_command(pt_loop *loop, pt_arena *arena, const pt_redis_conf *conf, int argc,
                            const char *const *argv, const size_t *argvlen, pt_redis_done_fn done, void *data,
                            pt_redis_error *err)
{
    bound_call *b = bound_new(arena, done, data, err);
    return b && bound_start(arena, b, pt_redis_command(loop, conf, argc, argv, argvlen, bound_done, b, err));
}

bool pt_redis_arena_eval(pt_loop *loop, pt_arena *arena, const pt_redis_conf *conf, const pt_redis_script *script,
                         int nkeys, int argc, const char *const *argv, const size_t *argvlen, pt_redis_done_fn done,
                         void *data, pt_redis_error *err)
{
    bound_call *b = bound_new(arena, done, data, err);
    return b && bound_start(arena, b,
                            pt_redis_eval(loop, conf, script, nkeys, argc, argv, argvlen, bound_done, b, err));
}

bool pt_txn_redis_command(pt_txn *txn, const pt_redis_conf *conf, int argc, const char *const *argv,
                          const size_t *argvlen, pt_redis_done_fn done, void *data, pt_redis_error *err)
{
    return pt_redis_arena_command(pt_txn_loop(txn), pt_txn_arena(txn), conf, argc, argv, argvlen, done, data, err);
}

bool pt_txn_redis_eval(pt_txn *txn, const pt_redis_conf *conf, const pt_redis_script *script, int nkeys, int argc,
                       const char *const *argv, const size_t *argvlen, pt_redis_done_fn done, void *data,
                       pt_redis_error *err)
{
    return pt_redis_arena_eval(pt_txn_loop(txn), pt_txn_arena(txn), conf, script, nkeys, argc, argv, argvlen, done,
                               data, err);
}
