/* server.c — see server.h and worker.h. */
#include "server/server.h"

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin/admin.h"
#include "obs/accesslog.h"
#include "obs/errorlog.h"
#include "obs/logwriter.h"
#include "obs/trace.h"
#include "core/buf.h"
#include "downstream/conn.h"
#include "obs/gateway_metrics.h"
#include "server/admin_api.h"
#include "net/dns.h"
#include "net/splice.h"
#include "server/connlimit.h"
#include "server/srv_watch.h"
#include "plugin/plugin.h"
#include "plugin/redis.h"
#include "server/worker.h"
#include "upstream/health_check.h"

#define ARENA_CACHE_MAX 256
#define ARENA_FIRST_BLOCK 4096

typedef struct pt_server {
    const char *config_path;
    pt_generation *gen;
    pt_worker *workers;
    int nworkers;
    pt_metrics *metrics;   /* registry (plugins' metrics, gateway metrics); may be NULL */
    pt_gw_metrics *gw;     /* the gateway's metrics; NULL without an admin listener */
    pt_admin *admin;       /* NULL without an admin listener */
    pt_health *health;     /* active health checker; NULL until a configuration asks for checks */
    pt_srv_watch *srv;     /* refresh of the running configuration's SRV names */
} pt_server;

/* ------------------------------------------------------------ worker caches */

pt_arena *pt_worker_arena_get(pt_worker *w)
{
    if (w->narena_cache) return w->arena_cache[--w->narena_cache];
    return pt_arena_new(ARENA_FIRST_BLOCK);
}

void pt_worker_arena_put(pt_worker *w, pt_arena *a)
{
    pt_arena_reset(a);
    if (w->narena_cache < ARENA_CACHE_MAX) w->arena_cache[w->narena_cache++] = a;
    else pt_arena_free(a);
}

pt_worker_gen *pt_worker_gen_new(pt_worker *w, pt_generation *g)
{
    pt_worker_gen *wg = pt_xcalloc(1, sizeof(*wg));
    wg->gen = g; /* takes the reference the caller holds */
    const pt_config *cfg = g->cfg;
    if (w->dns) pt_dns_configure(w->dns, &cfg->dns);
    wg->upstreams = pt_xcalloc(cfg->nupstreams ? cfg->nupstreams : 1, sizeof(*wg->upstreams));
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        pt_upstream_rt *u = &wg->upstreams[i];
        const pt_upstream_conf *uc = &cfg->upstreams[i];
        u->conf = uc;
        u->current = pt_xcalloc(uc->ntargets ? uc->ntargets : 1, sizeof(*u->current));
        u->pools = pt_xcalloc(uc->ntargets ? uc->ntargets : 1, sizeof(*u->pools));
        for (size_t t = 0; t < uc->ntargets; t++) {
            u->total += uc->targets[t].weight;
            u->pools[t] = pt_pool_for(w, &uc->targets[t], g->up_tls ? g->up_tls[i] : NULL,
                                      uc->tls.sni ? uc->tls.sni : uc->targets[t].host);
        }
        pt_upstream_dns_attach(w, u);
    }
    return wg;
}

void pt_worker_gen_free(pt_worker *w, pt_worker_gen *wg)
{
    for (size_t i = 0; i < wg->gen->cfg->nupstreams; i++) {
        for (size_t t = 0; t < wg->upstreams[i].conf->ntargets; t++) pt_pool_unref(w, wg->upstreams[i].pools[t]);
        pt_upstream_dns_detach(w, &wg->upstreams[i]);
        free(wg->upstreams[i].current);
        free(wg->upstreams[i].pools);
    }
    free(wg->upstreams);
    pt_redis_worker_release(w->loop, wg->gen->cfg->arena); /* its plugins' Redis connections */
    pt_generation_unref(wg->gen);
    free(wg);
}

pt_worker_gen *pt_worker_gen_acquire(pt_worker *w)
{
    w->wgen->users++;
    return w->wgen;
}

void pt_worker_gen_release(pt_worker *w, pt_worker_gen *wg)
{
    PT_ASSERT(wg->users > 0);
    wg->users--;
    if (wg->retired && wg->users == 0) pt_worker_gen_free(w, wg);
}

/* Runs on the worker thread: switch to a new generation. */
static void worker_set_gen(pt_loop *loop, void *data)
{
    pt_worker *w = pt_loop_data(loop);
    pt_worker_gen *old = w->wgen;
    w->wgen = pt_worker_gen_new(w, data);
    pt_buf_large_config(w->wgen->gen->cfg->limits.stream_buffer, w->wgen->gen->cfg->limits.stream_buffer_memory);
    old->retired = true;
    if (old->users == 0) pt_worker_gen_free(w, old);
}

/* ---------------------------------------------------------------- accepting */

/* Over a connection limit: a plain client gets a short 503 problem (one
 * best-effort non-blocking write), a TLS client just a close. */
static void reject_connection(int fd, bool tls)
{
    static const char body[] = "{\"type\":\"urn:portico:error:unavailable\",\"title\":\"Service Unavailable\","
                               "\"status\":503,\"detail\":\"too many connections\"}";
    if (!tls) {
        char resp[512];
        int n = snprintf(resp, sizeof(resp),
                         "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\n"
                         "Connection: close\r\nContent-Length: %zu\r\n\r\n%s",
                         sizeof(body) - 1, body);
        ssize_t w = send(fd, resp, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
    }
    close(fd);
}

static void on_accept(pt_loop *loop, pt_io *io, uint32_t events)
{
    pt_worker *w = io->data;
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept4(io->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE)
                pt_elog(PT_ELOG_ERROR, "accept", &(pt_elog_ctx){.worker = w->id}, "accept: %s", strerror(errno));
            return;
        }
        size_t l = (size_t)(io - w->listeners);
        const pt_generation *g = w->wgen->gen;
        struct pt_tls_server *tls = l < g->cfg->nlisteners ? g->tls[l] : NULL;
        uint32_t per_client = g->cfg->limits.max_connections_per_client;
        if (!pt_connlimit_acquire(w->connlimit, l, (struct sockaddr *)&ss, g->cfg->limits.max_connections,
                                  per_client)) {
            pt_metrics_conn_rejected(w, l);
            reject_connection(fd, tls != NULL);
            continue;
        }
        pt_conn_accept(w, fd, (struct sockaddr *)&ss, len, l, tls, per_client != 0);
    }
}

static int open_listener(const pt_listener_conf *l)
{
    int fd = socket(l->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (l->addr.ss.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&l->addr.ss, l->addr.sslen) < 0 || listen(fd, l->backlog) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* ----------------------------------------------------------------- draining */

static void drain_check(pt_loop *loop, pt_timer *t)
{
    pt_worker *w = t->data;
    if (w->nconns == 0 || pt_loop_now(loop) >= w->drain_deadline) {
        pt_conns_close_all(w);
        pt_pools_close_all(w);
        pt_loop_stop(loop);
        return;
    }
    pt_timer_start(loop, t, 20, drain_check, w);
}

static void worker_drain(pt_loop *loop, void *data)
{
    pt_worker *w = pt_loop_data(loop);
    PT_UNUSED(data);
    if (w->draining) return;
    w->draining = true;
    w->drain_deadline = pt_loop_now(loop) + w->wgen->gen->cfg->timeouts.shutdown_ms;
    for (size_t i = 0; i < w->nlisteners; i++) {
        pt_io_stop(loop, &w->listeners[i]);
        close(w->listeners[i].fd);
        w->listeners[i].fd = -1;
    }
    pt_conns_drain(w);
    pt_pools_close_all(w);
    w->drain_timer.data = w;
    drain_check(loop, &w->drain_timer);
}

void pt_worker_plugins_init(pt_worker *w)
{
    const pt_plugin_type *const *all = pt_plugin_all();
    size_t n = 0;
    while (all[n]) n++;
    w->plugin_state = pt_xcalloc(n ? n : 1, sizeof(void *));
    for (size_t i = 0; i < n; i++)
        if (all[i]->worker_init) w->plugin_state[i] = all[i]->worker_init(w->loop);
}

void pt_worker_plugins_fini(pt_worker *w)
{
    if (!w->plugin_state) return;
    const pt_plugin_type *const *all = pt_plugin_all();
    for (size_t i = 0; all[i]; i++)
        if (all[i]->worker_fini) all[i]->worker_fini(w->loop, w->plugin_state[i]);
    free(w->plugin_state);
    w->plugin_state = NULL;
}

void *pt_worker_plugin_state(pt_worker *w, const pt_plugin_type *type)
{
    if (!w->plugin_state) return NULL;
    const pt_plugin_type *const *all = pt_plugin_all();
    for (size_t i = 0; all[i]; i++)
        if (all[i] == type) return w->plugin_state[i];
    return NULL;
}

/* Every 500 ms: buffer blocks a burst left cached go back to the OS
 * (core/buf.h), so idle connections do not keep a past peak resident. */
#define BUF_TRIM_MS 500

static void buf_trim_tick(pt_loop *loop, pt_timer *t)
{
    pt_buf_pool_trim();
    pt_metrics_stream_buffers(t->data, pt_buf_large_in_use(), pt_buf_large_taken());
    pt_worker *w = t->data;
    if (w->id == 0) pt_elog_tick();
    pt_metrics_log_counters(w, pt_accesslog_dropped(), pt_logwriter_dropped(PT_LOG_ERROR), pt_elog_suppressed_total());
    pt_timer_start(loop, t, BUF_TRIM_MS, buf_trim_tick, t->data);
}

static void *worker_main(void *arg)
{
    pt_worker *w = arg;
    pt_timer_start(w->loop, &w->buf_trim_timer, BUF_TRIM_MS, buf_trim_tick, w);
    pt_buf_large_config(w->wgen->gen->cfg->limits.stream_buffer, w->wgen->gen->cfg->limits.stream_buffer_memory);
    pt_metrics_thread_attach(w->metrics_shard);
    pt_worker_plugins_init(w);
    pt_loop_run(w->loop);
    pt_conns_reap(w);
    pt_worker_plugins_fini(w);
    pt_redis_worker_fini(w->loop); /* after the plugins: their fini may still cancel calls */
    pt_trace_worker_fini(w->loop);  /* its pending spans to the exporter, which stops after the workers */
    pt_splice_pool_free(w->loop); /* the worker's idle pipes */
    pt_buf_pool_free();
    return NULL;
}

/* ------------------------------------------------------------------ running */

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void reload(pt_server *s)
{
    if (!s->config_path) {
        fprintf(stderr, "portico: SIGHUP ignored: no config file (proxy mode)\n");
        return;
    }
    pt_errors errs = {0};
    pt_config *cfg = pt_config_reload_file(s->config_path, s->metrics, s->gen->cfg, &errs);
    pt_generation *g = cfg ? pt_generation_build(cfg, &errs) : NULL;
    if (!g) {
        if (s->gw) pt_gw_metrics_reloaded(s->gw, false);
        pt_admin_api_reloaded(false, s->gen->id, errs.n ? errs.msgs[0] : "invalid configuration");
        fprintf(stderr, "portico: reload failed, keeping the running configuration:\n");
        for (size_t i = 0; i < errs.n; i++) fprintf(stderr, "%s\n", errs.msgs[i]);
        pt_errors_free(&errs);
        return;
    }
    pt_errors_free(&errs);
    const pt_config *old = s->gen->cfg;
    /* Connections and listener sockets are tied to listener indexes: a new
     * generation whose listeners differ (address, count or order) would apply
     * one listener's settings (TLS, limits...) to another's socket. */
    bool same_listeners = g->cfg->nlisteners == old->nlisteners;
    for (size_t i = 0; same_listeners && i < old->nlisteners; i++) {
        const pt_conf_addr *a = &old->listeners[i].addr, *b = &g->cfg->listeners[i].addr;
        same_listeners = a->sslen == b->sslen && memcmp(&a->ss, &b->ss, a->sslen) == 0;
    }
    if (!same_listeners) {
        fprintf(stderr, "portico: reload refused, keeping the running configuration: 'listen' changed "
                        "(addresses, count or order); changing listeners needs a restart\n");
        if (s->gw) pt_gw_metrics_reloaded(s->gw, false);
        pt_admin_api_reloaded(false, s->gen->id, "'listen' changed: changing listeners needs a restart");
        pt_generation_unref(g);
        return;
    }
    /* Access log: opened, switched or closed with the generation; a
     * destination that cannot be opened refuses the reload (the log keeps
     * its destination). */
    const pt_log_dest *log_old = old->access_log.enabled ? &old->access_log.dest : NULL;
    const pt_log_dest *log_new = g->cfg->access_log.enabled ? &g->cfg->access_log.dest : NULL;
    if (log_new && (!log_old || !pt_log_dest_same(log_old, log_new))) {
        int rc = log_old ? pt_accesslog_switch_dest(log_new) : pt_accesslog_open_dest(log_new);
        if (rc != PT_OK) {
            fprintf(stderr, "portico: reload refused, keeping the running configuration: cannot open access log %s: %s\n",
                    pt_log_dest_text(log_new), strerror(errno));
            if (s->gw) pt_gw_metrics_reloaded(s->gw, false);
            pt_admin_api_reloaded(false, s->gen->id, "the access log cannot be opened");
            pt_generation_unref(g);
            return;
        }
    } else if (!log_new && log_old) {
        pt_accesslog_close();
    }
    if (pt_elog_configure(g->cfg) != PT_OK) /* after every refusal: nothing can undo it */
        fprintf(stderr, "portico: reload: cannot open error log %s: %s; it keeps its destination\n",
                pt_log_dest_text(&g->cfg->error_log.dest), strerror(errno));
    if (g->cfg->workers != old->workers)
        fprintf(stderr, "portico: reload: a change of 'workers' needs a restart; ignored\n");
    const pt_conf_addr *aold = old->admin.enabled ? &old->admin.addr : NULL;
    const pt_conf_addr *anew = g->cfg->admin.enabled ? &g->cfg->admin.addr : NULL;
    if ((aold == NULL) != (anew == NULL) ||
        (aold && (aold->sslen != anew->sslen || memcmp(&aold->ss, &anew->ss, aold->sslen) != 0)))
        fprintf(stderr, "portico: reload: adding, removing or moving the admin listener needs a restart; "
                        "ignored\n");
    if (s->admin && anew) pt_admin_set_token(s->admin, g->cfg->admin.token);
    if (s->gw) pt_gw_metrics_bind(s->gw, g->cfg); /* before any worker sees g */
    pt_trace_export_configure(&g->cfg->tracing);
    for (int i = 0; i < s->nworkers; i++) {
        pt_generation_ref(g);
        pt_loop_post(s->workers[i].loop, worker_set_gen, g);
    }
    pt_generation_unref(s->gen);
    s->gen = g;
    s->health = pt_health_update(s->health, g->cfg, s->gw);
    if (s->gw) {
        pt_gw_metrics_reloaded(s->gw, true);
        pt_gw_metrics_generation(s->gw, g->id);
    }
    if (s->admin) pt_admin_api_publish(g);
    pt_admin_api_reloaded(true, g->id, NULL);
    fprintf(stderr, "portico: configuration reloaded (generation %llu)\n", (unsigned long long)g->id);
}

/* SRV names whose TTL passed are asked again; a changed record set reloads
 * the configuration exactly as SIGHUP does (server/srv_watch.h). */
static void srv_refresh(pt_server *s)
{
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    char msg[1024];
    int i;
    while ((i = pt_srv_watch_refresh(s->srv, &stop, msg, sizeof(msg))) >= 0) {
        fprintf(stderr, "portico: dns: %s; reloading the configuration\n", msg);
        pt_generation *before = s->gen;
        reload(s);
        if (s->gen != before) {
            pt_srv_watch_adopt(s->srv, s->gen->cfg);
            return;
        }
        pt_srv_watch_reload_failed(s->srv, i);
    }
}

/* The next signal, or 0 when the nearest SRV refresh is due first. */
static int wait_signal(pt_server *s, const sigset_t *set)
{
    int64_t ms = pt_srv_watch_wait_ms(s->srv);
    if (ms < 0) return sigwaitinfo(set, NULL);
    /* ms 0: a pending signal still comes first (a SIGTERM that abandoned a
     * refresh leaves that name due) */
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    int sig = sigtimedwait(set, NULL, &ts);
    return sig < 0 && errno == EAGAIN ? 0 : sig;
}

int pt_server_run(pt_generation *gen, const char *config_path, pt_metrics *metrics)
{
    pt_server s = {.config_path = config_path, .gen = gen, .metrics = metrics};
    const pt_config *cfg = gen->cfg;
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    /* Only the main thread takes signals (sigwaitinfo below); every thread
     * started from here on inherits the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    if (pt_elog_configure(cfg) != PT_OK) {
        fprintf(stderr, "portico: cannot open error log %s: %s\n", pt_log_dest_text(&cfg->error_log.dest), strerror(errno));
        pt_generation_unref(gen);
        return 1;
    }
    if (cfg->access_log.enabled && pt_accesslog_open_dest(&cfg->access_log.dest) != PT_OK) {
        fprintf(stderr, "portico: cannot open access log %s: %s\n", pt_log_dest_text(&cfg->access_log.dest),
                strerror(errno));
        pt_generation_unref(gen);
        return 1;
    }

    pt_trace_export_configure(&cfg->tracing); /* the exporter thread, when tracing exports */

    /* The admin listener first: /readyz answers 503 until the workers run. */
    if (cfg->admin.enabled && metrics) {
        s.gw = pt_gw_metrics_new(metrics, cfg);
        pt_gw_metrics_bind(s.gw, gen->cfg);
        pt_gw_metrics_generation(s.gw, gen->id);
        s.admin = pt_admin_start(&cfg->admin.addr, cfg->admin.token, metrics);
        if (!s.admin) {
            fprintf(stderr, "portico: cannot listen on %s (admin): %s\n", cfg->admin.addr.text, strerror(errno));
            exit(1);
        }
        pt_admin_api_publish(gen);
        pt_admin_api_reloaded(true, gen->id, "started");
        pt_admin_set_api(s.admin, pt_admin_api, NULL);
        static const pt_admin_ext plugin_endpoints = {pt_plugin_admin_methods, pt_plugin_admin_call};
        pt_admin_set_ext(s.admin, &plugin_endpoints);
        fprintf(stderr, "portico: admin listener on %s (/metrics, /healthz, /readyz)%s\n", cfg->admin.addr.text,
                cfg->admin.token ? " with a bearer token" : "");
    }

    s.nworkers = cfg->workers > 0 ? cfg->workers : 1;
    pt_connlimit *connlimit = pt_connlimit_new(cfg->nlisteners);
    s.workers = pt_xcalloc((size_t)s.nworkers, sizeof(pt_worker));
    for (int i = 0; i < s.nworkers; i++) {
        pt_worker *w = &s.workers[i];
        w->id = i;
        w->server = (struct pt_server *)&s;
        w->connlimit = connlimit;
        w->metrics = s.gw;
        if (metrics) w->metrics_shard = pt_metrics_shard_new(metrics);
        w->loop = pt_loop_new();
        if (!w->loop) pt_panic(__FILE__, __LINE__, "cannot create event loop");
        pt_loop_set_data(w->loop, w);
        w->dns = pt_dns_new(w->loop, &cfg->dns); /* before the generation: it takes DNS entries */
        w->arena_cache = pt_xcalloc(ARENA_CACHE_MAX, sizeof(pt_arena *));
        pt_generation_ref(gen);
        w->wgen = pt_worker_gen_new(w, gen);
        w->nlisteners = cfg->nlisteners;
        w->listeners = pt_xcalloc(cfg->nlisteners, sizeof(pt_io));
        for (size_t l = 0; l < cfg->nlisteners; l++) {
            int fd = open_listener(&cfg->listeners[l]);
            if (fd < 0) {
                fprintf(stderr, "portico: cannot listen on %s: %s\n", cfg->listeners[l].addr.text, strerror(errno));
                exit(1);
            }
            pt_io_start(w->loop, &w->listeners[l], fd, EPOLLIN, on_accept, w);
        }
    }
    for (size_t l = 0; l < cfg->nlisteners; l++)
        fprintf(stderr, "portico: listening on %s%s (%d worker%s)\n", cfg->listeners[l].addr.text,
                cfg->listeners[l].tls.enabled ? " (TLS)" : "", s.nworkers, s.nworkers == 1 ? "" : "s");

    for (int i = 0; i < s.nworkers; i++)
        if (pthread_create(&s.workers[i].thread, NULL, worker_main, &s.workers[i]) != 0)
            pt_panic(__FILE__, __LINE__, "cannot start worker thread");
    s.health = pt_health_update(NULL, cfg, s.gw);
    pt_admin_set_ready(s.admin, true);

    s.srv = pt_srv_watch_new();
    pt_srv_watch_adopt(s.srv, s.gen->cfg);
    for (;;) {
        int sig = wait_signal(&s, &set);
        if (sig == 0) srv_refresh(&s);
        if (sig <= 0) continue;
        if (sig == SIGHUP) {
            pt_generation *before = s.gen;
            reload(&s);
            if (s.gen != before) pt_srv_watch_adopt(s.srv, s.gen->cfg);
        } else if (sig == SIGUSR1) {
            pt_logwriter_request_reopen(PT_LOG_ACCESS);
            pt_logwriter_request_reopen(PT_LOG_ERROR);
        }
        else break; /* SIGTERM / SIGINT */
    }
    pt_admin_set_ready(s.admin, false); /* /readyz: 503 while draining */
    fprintf(stderr, "portico: shutting down (draining for up to %llu ms)\n",
            (unsigned long long)s.gen->cfg->timeouts.shutdown_ms);
    for (int i = 0; i < s.nworkers; i++) pt_loop_post(s.workers[i].loop, worker_drain, NULL);
    for (int i = 0; i < s.nworkers; i++) pthread_join(s.workers[i].thread, NULL);
    pt_admin_stop(s.admin);
    pt_admin_api_publish(NULL);
    pt_health_stop(s.health);
    pt_srv_watch_free(s.srv);

    for (int i = 0; i < s.nworkers; i++) {
        pt_worker *w = &s.workers[i];
        /* flush deferred frees of connections closed during the drain */
        pt_loop_stop(w->loop);
        if (w->wgen) { /* before the pools: it drops its references on them */
            w->wgen->retired = true;
            if (w->wgen->users == 0) pt_worker_gen_free(w, w->wgen);
        }
        pt_pools_free(w);
        pt_dns_free(w->dns);
        w->dns = NULL;
        for (size_t a = 0; a < w->narena_cache; a++) pt_arena_free(w->arena_cache[a]);
        free(w->arena_cache);
        free(w->listeners);
        pt_loop_free(w->loop);
    }
    free(s.workers);
    pt_connlimit_free(connlimit);
    pt_generation_unref(s.gen);
    pt_gw_metrics_free(s.gw);
    pt_trace_export_stop(); /* sends what the drained requests left */
    pt_accesslog_close();
    pt_elog_close();
    fprintf(stderr, "portico: stopped\n");
    return 0;
}
