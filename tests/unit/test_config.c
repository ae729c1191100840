/* test_config.c — the configuration loader: YAML -> nodes, ${ENV}, typed
 * getters, schema validation with exact FILE:LINE:COL errors, defaults,
 * and the `portico proxy` config. Uses the real plugin registry
 * (request_id, direct_response, headers). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

#include "config/config.h"
#include "plugin/plugin.h"
#include "testlib.h"

/* ------------------------------------------------------------- helpers */

static pt_config *load(const char *yaml, pt_errors *e)
{
    return pt_config_load_string("t.yaml", yaml, strlen(yaml), e);
}

/* True if some error message starts with `prefix` (e.g. "t.yaml:3:5: unknown key"). */
static bool has_error(const pt_errors *e, const char *prefix)
{
    for (size_t i = 0; i < e->n; i++)
        if (strncmp(e->msgs[i], prefix, strlen(prefix)) == 0) return true;
    return false;
}

static void dump_errors(const pt_errors *e)
{
    for (size_t i = 0; i < e->n; i++) fprintf(stderr, "    error: %s\n", e->msgs[i]);
}

/* Loads `yaml`, expects failure with an error starting with `prefix`. */
static bool fails_with(const char *yaml, const char *prefix)
{
    pt_errors e = {0};
    pt_config *cfg = load(yaml, &e);
    bool ok = cfg == NULL && has_error(&e, prefix);
    if (!ok) {
        fprintf(stderr, "  expected error '%s' (config %s)\n", prefix, cfg ? "loaded" : "failed");
        dump_errors(&e);
    }
    pt_config_free(cfg);
    pt_errors_free(&e);
    return ok;
}

#define MINIMAL "listen: [127.0.0.1:8080]\n"

/* A node-level context for getter tests. */
typedef struct {
    pt_arena *arena;
    pt_errors errors;
    pt_conf_ctx ctx;
} getter_env;

static void env_init(getter_env *g)
{
    g->arena = pt_arena_new(4096);
    g->errors = (pt_errors){0};
    g->ctx = (pt_conf_ctx){.file = "g.yaml", .arena = g->arena, .errors = &g->errors};
}

static void env_done(getter_env *g)
{
    pt_arena_free(g->arena);
    pt_errors_free(&g->errors);
}

/* Parses "v: <text>" and returns the value node (NULL on parse error). */
static const pt_conf_node *value_node(getter_env *g, const char *text)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "v: %s\n", text);
    pt_conf_node *root = pt_conf_parse_yaml(&g->ctx, buf, strlen(buf));
    return root ? pt_conf_get(root, "v") : NULL;
}

static bool duration_of(const char *text, uint64_t *out)
{
    getter_env g;
    env_init(&g);
    const pt_conf_node *n = value_node(&g, text);
    bool ok = n && pt_conf_duration_ms(&g.ctx, n, out);
    env_done(&g);
    return ok;
}

static bool size_of(const char *text, uint64_t *out)
{
    getter_env g;
    env_init(&g);
    const pt_conf_node *n = value_node(&g, text);
    bool ok = n && pt_conf_size(&g.ctx, n, out);
    env_done(&g);
    return ok;
}

/* ------------------------------------------------------- a full config */

static const char full_yaml[] =
    "workers: 4\n"
    "listen:\n"
    "  - 127.0.0.1:8080\n"
    "  - {address: \"[::1]:8081\", backlog: 128}\n"
    "limits:\n"
    "  max_request_line: 4k\n"
    "  max_header_size: 16k\n"
    "  max_headers: 50\n"
    "  max_body_size: 2m\n"
    "timeouts:\n"
    "  header: 5s\n"
    "  body: 250ms\n"
    "  idle: 2m\n"
    "  upstream_connect: 1s\n"
    "  upstream_read: 1h\n"
    "  upstream_write: 3\n"
    "  shutdown: 10s\n"
    "access_log:\n"
    "  enabled: false\n"
    "  path: /tmp/access.log\n"
    "upstreams:\n"
    "  users:\n"
    "    targets:\n"
    "      - 127.0.0.1:9001\n"
    "      - {address: 127.0.0.1:9002, weight: 3}\n"
    "    keepalive: 8\n"
    "    keepalive_timeout: 30s\n"
    "    connect_timeout: 2s\n"
    "    read_timeout: 20s\n"
    "    write_timeout: 21s\n"
    "    preserve_host: false\n"
    "  orders:\n"
    "    targets: [\"[::1]:9003\"]\n"
    "plugins:\n"
    "  - request_id: {}\n"
    "routes:\n"
    "  - name: users\n"
    "    match:\n"
    "      hosts: [API.Example.com, \"*.example.org\"]\n"
    "      path: /users/{id}\n"
    "      methods: [GET, POST]\n"
    "      headers: {X-Version: \"2\", X-Debug: ~}\n"
    "      query: {debug: \"1\"}\n"
    "    upstream: users\n"
    "    rewrite: /v2/users/{id}\n"
    "    max_body_size: 10m\n"
    "    body_timeout: 5m\n"
    "    min_body_rate: 0\n"
    "  - match:\n"
    "      host: Shop.Example.com\n"
    "      path_prefix: /Orders\n"
    "    upstream: orders\n"
    "    strip_prefix: true\n"
    "  - match: {path_regex: \"^/v[0-9]+/items$\"}\n"
    "    plugins:\n"
    "      - direct_response: {status: 200, body: \"hi\"}\n";

TEST(full_config_top_level)
{
    pt_errors e = {0};
    pt_config *cfg = load(full_yaml, &e);
    dump_errors(&e);
    CHECK(cfg != NULL);
    if (!cfg) return;
    CHECK_STR(cfg->file, "t.yaml");
    CHECK_INT(cfg->workers, 4);
    CHECK_INT(cfg->nlisteners, 2);
    CHECK_STR(cfg->listeners[0].addr.text, "127.0.0.1:8080");
    CHECK_INT(cfg->listeners[0].addr.ss.ss_family, AF_INET);
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&cfg->listeners[0].addr.ss;
    CHECK_INT(ntohs(sin->sin_port), 8080);
    CHECK_INT(ntohl(sin->sin_addr.s_addr), 0x7f000001);
    CHECK_INT(cfg->listeners[0].backlog, 511);
    CHECK_INT(cfg->listeners[0].line, 3);
    CHECK_INT(cfg->listeners[1].addr.ss.ss_family, AF_INET6);
    CHECK_INT(cfg->listeners[1].addr.sslen, sizeof(struct sockaddr_in6));
    CHECK_INT(cfg->listeners[1].backlog, 128);
    CHECK_INT(cfg->limits.max_request_line, 4096);
    CHECK_INT(cfg->limits.max_header_size, 16384);
    CHECK_INT(cfg->limits.max_headers, 50);
    CHECK_INT(cfg->limits.max_body_size, 2 << 20);
    CHECK_INT(cfg->timeouts.header_ms, 5000);
    CHECK_INT(cfg->timeouts.body_ms, 250);
    CHECK_INT(cfg->timeouts.idle_ms, 120000);
    CHECK_INT(cfg->timeouts.upstream_connect_ms, 1000);
    CHECK_INT(cfg->timeouts.upstream_read_ms, 3600000);
    CHECK_INT(cfg->timeouts.upstream_write_ms, 3000);
    CHECK_INT(cfg->timeouts.shutdown_ms, 10000);
    CHECK(!cfg->access_log.enabled);
    CHECK_STR(cfg->access_log.path, "/tmp/access.log");
    CHECK_INT(cfg->plugins.n, 1);
    if (cfg->plugins.n == 1) {
        CHECK_STR(cfg->plugins.v[0].type->name, "request_id");
        CHECK(cfg->plugins.v[0].conf != NULL);
        CHECK_INT(cfg->plugins.v[0].line, 35);
    }
    pt_config_free(cfg);
    pt_errors_free(&e);
}

TEST(full_config_upstreams)
{
    pt_errors e = {0};
    pt_config *cfg = load(full_yaml, &e);
    CHECK(cfg != NULL);
    if (!cfg) return;
    CHECK_INT(cfg->nupstreams, 2);
    pt_upstream_conf *u = &cfg->upstreams[0];
    CHECK_STR(u->name, "users");
    CHECK_INT(u->index, 0);
    CHECK_INT(u->line, 22);
    CHECK_INT(u->ntargets, 2);
    CHECK_STR(u->targets[0].addr.text, "127.0.0.1:9001");
    CHECK_STR(u->targets[0].host, "127.0.0.1");
    CHECK_INT(u->targets[0].port, 9001);
    CHECK_INT(u->targets[0].weight, 1);
    CHECK_INT(u->targets[1].port, 9002);
    CHECK_INT(u->targets[1].weight, 3);
    CHECK_INT(u->keepalive, 8);
    CHECK_INT(u->keepalive_timeout_ms, 30000);
    CHECK_INT(u->connect_timeout_ms, 2000);
    CHECK_INT(u->read_timeout_ms, 20000);
    CHECK_INT(u->write_timeout_ms, 21000);
    CHECK(!u->preserve_host);
    u = &cfg->upstreams[1];
    CHECK_STR(u->name, "orders");
    CHECK_INT(u->index, 1);
    CHECK_STR(u->targets[0].host, "[::1]"); /* brackets kept: usable as a Host value */
    CHECK_INT(u->targets[0].port, 9003);
    CHECK_INT(u->targets[0].addr.ss.ss_family, AF_INET6);
    /* Unset per-upstream timeouts inherit the global timeouts section. */
    CHECK_INT(u->connect_timeout_ms, 1000);
    CHECK_INT(u->read_timeout_ms, 3600000);
    CHECK_INT(u->write_timeout_ms, 3000);
    CHECK_INT(u->keepalive, 64);
    CHECK(u->preserve_host);
    pt_config_free(cfg);
    pt_errors_free(&e);
}

TEST(full_config_routes)
{
    pt_errors e = {0};
    pt_config *cfg = load(full_yaml, &e);
    CHECK(cfg != NULL);
    if (!cfg) return;
    CHECK_INT(cfg->nroutes, 3);
    pt_route_conf *r = &cfg->routes[0];
    CHECK_STR(r->name, "users");
    CHECK_INT(r->index, 0);
    CHECK_INT(r->line, 37);
    CHECK_INT(r->nhosts, 2);
    CHECK_STR(r->hosts[0], "api.example.com");
    CHECK_STR(r->hosts[1], "*.example.org");
    CHECK_INT(r->path_kind, PT_PATH_EXACT);
    CHECK_STR(r->path, "/users/{id}");
    CHECK_INT(r->methods, PT_METHOD_BIT(PT_METHOD_GET) | PT_METHOD_BIT(PT_METHOD_POST));
    CHECK_INT(r->nheaders, 2);
    CHECK_STR(r->headers[0].name, "X-Version");
    CHECK_STR(r->headers[0].value, "2");
    CHECK_STR(r->headers[1].name, "X-Debug");
    CHECK(r->headers[1].value == NULL);
    CHECK_INT(r->nquery, 1);
    CHECK_STR(r->query[0].name, "debug");
    CHECK_STR(r->query[0].value, "1");
    CHECK(r->upstream == &cfg->upstreams[0]);
    CHECK_STR(r->rewrite, "/v2/users/{id}");
    CHECK(!r->strip_prefix);
    CHECK_INT(r->max_body_size, 10 << 20);
    CHECK_INT(r->body_timeout_ms, 300000);
    CHECK_INT(r->min_body_rate, 0);
    CHECK_INT(r->plugins.n, 0);

    r = &cfg->routes[1];
    CHECK_STR(r->name, "route#1");
    CHECK_INT(r->nhosts, 1);
    CHECK_STR(r->hosts[0], "shop.example.com");
    CHECK_INT(r->path_kind, PT_PATH_PREFIX);
    CHECK_STR(r->path, "/Orders"); /* paths are not lowercased */
    CHECK(r->strip_prefix);
    CHECK(r->upstream == &cfg->upstreams[1]);
    CHECK_INT(r->methods, 0);
    CHECK_INT(r->max_body_size, 2 << 20); /* inherits limits.max_body_size */
    CHECK_INT(r->body_timeout_ms, 250);     /* inherits timeouts.body */
    CHECK_INT(r->min_body_rate, 1024);      /* inherits limits.min_body_rate (default 1k) */

    r = &cfg->routes[2];
    CHECK_STR(r->name, "route#2");
    CHECK_INT(r->path_kind, PT_PATH_REGEX);
    CHECK_STR(r->path, "^/v[0-9]+/items$");
    CHECK(r->upstream == NULL);
    CHECK_INT(r->plugins.n, 1);
    if (r->plugins.n == 1) {
        CHECK_STR(r->plugins.v[0].type->name, "direct_response");
        CHECK_INT(r->plugins.v[0].line, 56);
    }
    pt_config_free(cfg);
    pt_errors_free(&e);
}

TEST(defaults)
{
    pt_errors e = {0};
    pt_config *cfg = load(MINIMAL "upstreams: {a: {targets: [\"localhost:80\"]}}\n"
                                  "routes:\n  - upstream: a\n", &e);
    dump_errors(&e);
    CHECK(cfg != NULL);
    if (!cfg) return;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    CHECK_INT(cfg->workers, cpus < 1 ? 1 : cpus > 256 ? 256 : cpus);
    CHECK_INT(cfg->limits.max_request_line, 8192);
    CHECK_INT(cfg->limits.max_header_size, 32768);
    CHECK_INT(cfg->limits.max_headers, 100);
    CHECK_INT(cfg->limits.max_body_size, 1ll << 30);
    CHECK_INT(cfg->limits.min_body_rate, 1024);
    CHECK_INT(cfg->timeouts.header_ms, 10000);
    CHECK_INT(cfg->timeouts.body_ms, 30000);
    CHECK_INT(cfg->timeouts.idle_ms, 60000);
    CHECK_INT(cfg->timeouts.upstream_connect_ms, 5000);
    CHECK_INT(cfg->timeouts.upstream_read_ms, 60000);
    CHECK_INT(cfg->timeouts.upstream_write_ms, 60000);
    CHECK_INT(cfg->timeouts.shutdown_ms, 30000);
    CHECK(cfg->access_log.enabled);
    CHECK_STR(cfg->access_log.path, "stdout");
    CHECK_INT(cfg->plugins.n, 0);
    CHECK_INT(cfg->nroutes, 1);
    CHECK_STR(cfg->routes[0].name, "route#0");
    CHECK_INT(cfg->routes[0].path_kind, PT_PATH_ANY);
    CHECK(cfg->routes[0].path == NULL);
    CHECK_INT(cfg->routes[0].nhosts, 0);
    CHECK_INT(cfg->upstreams[0].keepalive, 64);
    CHECK_INT(cfg->upstreams[0].keepalive_timeout_ms, 60000);
    CHECK_INT(cfg->upstreams[0].connect_timeout_ms, 5000);
    CHECK_INT(cfg->upstreams[0].targets[0].weight, 1);
    CHECK_STR(cfg->upstreams[0].targets[0].host, "localhost");
    pt_config_free(cfg);
    pt_errors_free(&e);
}

TEST(workers_auto_and_range)
{
    pt_errors e = {0};
    pt_config *cfg = load("workers: auto\n" MINIMAL, &e);
    CHECK(cfg && cfg->workers >= 1);
    pt_config_free(cfg);
    pt_errors_free(&e);
    CHECK(fails_with("workers: 0\n" MINIMAL, "t.yaml:1:10: integer out of range (expected 1..256)"));
    CHECK(fails_with("workers: 257\n" MINIMAL, "t.yaml:1:10: integer out of range"));
    CHECK(fails_with("workers: many\n" MINIMAL, "t.yaml:1:10: workers must be an integer 1..256 or \"auto\""));
}

TEST(stream_buffer_limits)
{
    pt_errors e = {0};
    pt_config *cfg = load(MINIMAL, &e);
    CHECK(cfg && cfg->limits.stream_buffer == 64 * 1024 && cfg->limits.stream_buffer_memory == 64u << 20);
    pt_config_free(cfg);
    cfg = load(MINIMAL "limits: {stream_buffer: 256k, stream_buffer_memory: 0}\n", &e);
    CHECK(cfg && cfg->limits.stream_buffer == 256 * 1024 && cfg->limits.stream_buffer_memory == 0);
    pt_config_free(cfg);
    CHECK(fails_with(MINIMAL "limits: {stream_buffer: 8k}\n", "t.yaml:2:25: stream_buffer must be between 16k and 16m"));
    CHECK(fails_with(MINIMAL "limits: {stream_buffer: 32m}\n", "t.yaml:2:25: stream_buffer must be between 16k and 16m"));
    cfg = load(MINIMAL "limits: {output_buffer: 16k}\n", &e);
    CHECK(cfg && cfg->limits.output_buffer == 16 * 1024);
    pt_config_free(cfg);
    CHECK(fails_with(MINIMAL "limits: {output_buffer: 4k}\n", "t.yaml:2:25: output_buffer must be between 16k and 16m"));
}

TEST(splice_limit)
{
    pt_errors e = {0};
    pt_config *cfg = load(MINIMAL, &e);
    CHECK(cfg && cfg->limits.splice); /* on by default */
    pt_config_free(cfg);
    cfg = load(MINIMAL "limits: {splice: false}\n", &e);
    CHECK(cfg && !cfg->limits.splice);
    pt_config_free(cfg);
    CHECK(fails_with(MINIMAL "limits: {splice: maybe}\n", "t.yaml:2:18:"));
}

/* --------------------------------------------------------------- errors */

TEST(unknown_key_in_route_has_position_and_list)
{
    CHECK(fails_with(MINIMAL "routes:\n"
                             "  - name: r\n"
                             "    plugins: [request_id: {}]\n"
                             "    foo: 1\n",
                     "t.yaml:5:5: unknown key 'foo' in route (expected one of: name, match, upstream, "
                     "strip_prefix, rewrite, max_body_size, body_timeout, min_body_rate, max_buffered_body, plugins, "
                     "upgrade, tunnel_idle_timeout, path_rules, auth, retries, timeout)"));
    CHECK(fails_with("listn: [127.0.0.1:1]\n", "t.yaml:1:1: unknown key 'listn' in top level"));
    CHECK(fails_with(MINIMAL "timeouts: {headr: 1s}\n", "t.yaml:2:12: unknown key 'headr' in timeouts"));
    CHECK(fails_with(MINIMAL "routes:\n  - match: {pth: /}\n    upstream: x\n",
                     "t.yaml:3:13: unknown key 'pth' in route match"));
}

TEST(errors_are_collected_not_just_first)
{
    pt_errors e = {0};
    pt_config *cfg = load("workers: 0\n"
                          "listen: [127.0.0.1:0]\n"
                          "limits: {max_headers: -1}\n"
                          "timeouts: {idle: forever}\n", &e);
    CHECK(cfg == NULL);
    CHECK_INT(e.n, 4);
    CHECK(has_error(&e, "t.yaml:1:10: "));
    CHECK(has_error(&e, "t.yaml:2:10: invalid address '127.0.0.1:0': invalid port"));
    CHECK(has_error(&e, "t.yaml:3:23: integer out of range"));
    CHECK(has_error(&e, "t.yaml:4:18: invalid duration 'forever'"));
    pt_config_free(cfg);
    pt_errors_free(&e);
}

TEST(yaml_syntax_error_position)
{
    pt_errors e = {0};
    pt_config *cfg = load("listen: [127.0.0.1:8080\nroutes: x\n", &e);
    CHECK(cfg == NULL);
    CHECK_INT(e.n, 1);
    CHECK(e.n == 1 && strncmp(e.msgs[0], "t.yaml:2:7: YAML syntax error: ", 31) == 0);
    pt_errors_free(&e);
    CHECK(fails_with("a: b\n  c: d\n", "t.yaml:2:4: YAML syntax error: mapping values are not allowed"));
}

TEST(anchors_and_aliases_rejected)
{
    CHECK(fails_with("x: &a [1]\ny: *a\n", "t.yaml:1:4: YAML anchors and aliases are not supported (anchor 'a')"));
    CHECK(fails_with("x: &a [1]\ny: *a\n", "t.yaml:2:4: YAML anchors and aliases are not supported (alias 'a')"));
}

TEST(duplicate_keys_rejected)
{
    CHECK(fails_with(MINIMAL "workers: 1\nworkers: 2\n", "t.yaml:3:1: duplicate key 'workers' (first defined at line 2)"));
    CHECK(fails_with(MINIMAL "upstreams:\n  a: {targets: [\"1.2.3.4:1\"], keepalive: 1, keepalive: 2}\n",
                     "t.yaml:3:45: duplicate key 'keepalive'"));
}

TEST(listen_required_and_validated)
{
    CHECK(fails_with("workers: 1\n", "t.yaml:1:1: missing required key 'listen'"));
    CHECK(fails_with("listen: []\n", "t.yaml:1:9: listen must be a non-empty list"));
    CHECK(fails_with("listen: [\"::1:80\"]\n", "t.yaml:1:10: invalid address '::1:80': IPv6 addresses must be in brackets"));
    CHECK(fails_with("listen: [localhost]\n", "t.yaml:1:10: invalid address 'localhost': expected HOST:PORT"));
    CHECK(fails_with("listen: [\"127.0.0.1:70000\"]\n", "t.yaml:1:10: invalid address '127.0.0.1:70000': invalid port"));
    CHECK(fails_with("listen: [\"no-such-host.invalid:80\"]\n", "t.yaml:1:10: invalid address 'no-such-host.invalid:80': cannot resolve"));
    CHECK(fails_with("listen: [{address: \"127.0.0.1:1\", backlog: 0}]\n", "t.yaml:1:44: integer out of range"));
    CHECK(fails_with("", "t.yaml:1:1: configuration is empty"));
    CHECK(fails_with("listen: [127.0.0.1:8080, \"127.0.0.1:8080\"]\n",
                     "t.yaml:1:26: duplicate listen address '127.0.0.1:8080' (also at line 1)"));
    CHECK(fails_with("- 127.0.0.1:8080\n", "t.yaml:1:1: top level must be a mapping, got a list"));
    CHECK(fails_with(MINIMAL "access_log: {enabled: maybe}\n", "t.yaml:2:23: expected a boolean"));
}

TEST(route_unknown_upstream)
{
    CHECK(fails_with(MINIMAL "upstreams: {users: {targets: [\"127.0.0.1:1\"]}}\n"
                             "routes:\n"
                             "  - upstream: userz\n",
                     "t.yaml:4:15: unknown upstream 'userz' (defined upstreams: users)"));
}

TEST(route_path_kinds_exclusive)
{
    CHECK(fails_with(MINIMAL "routes:\n"
                             "  - match:\n"
                             "      path: /a\n"
                             "      path_prefix: /b\n"
                             "    plugins: [request_id: {}]\n",
                     "t.yaml:5:20: 'path_prefix' cannot be combined with 'path'"));
    CHECK(fails_with(MINIMAL "routes:\n  - match: {host: a.com, hosts: [b.com]}\n    plugins: [request_id: {}]\n",
                     "t.yaml:3:33: use either 'host' or 'hosts'"));
}

TEST(route_strip_prefix_and_rewrite_rules)
{
    CHECK(fails_with(MINIMAL "routes:\n"
                             "  - match: {path: /a}\n"
                             "    strip_prefix: true\n"
                             "    plugins: [request_id: {}]\n",
                     "t.yaml:4:19: strip_prefix requires match.path_prefix"));
    CHECK(fails_with(MINIMAL "routes:\n"
                             "  - match: {path_prefix: /a}\n"
                             "    strip_prefix: true\n"
                             "    rewrite: /b\n"
                             "    plugins: [request_id: {}]\n",
                     "t.yaml:5:14: rewrite cannot be combined with strip_prefix"));
    CHECK(fails_with(MINIMAL "routes:\n"
                             "  - match: {path: \"/u/{id}\"}\n"
                             "    rewrite: /v/{uid}\n"
                             "    plugins: [request_id: {}]\n",
                     "t.yaml:4:14: rewrite uses '{uid}', which the route path does not define"));
    CHECK(fails_with(MINIMAL "routes:\n  - match: {path: users}\n    plugins: [request_id: {}]\n",
                     "t.yaml:3:19: path must start with '/'"));
    CHECK(fails_with(MINIMAL "routes:\n  - match: {path: \"/u/{1d}\"}\n    plugins: [request_id: {}]\n",
                     "t.yaml:3:19: path: malformed parameter"));
    CHECK(fails_with(MINIMAL "routes:\n  - match: {path: \"/u/x{id}\"}\n    plugins: [request_id: {}]\n",
                     "t.yaml:3:19: path: a parameter must be a whole segment"));
    CHECK(fails_with(MINIMAL "routes:\n  - match: {path_prefix: \"/a//b\"}\n    plugins: [request_id: {}]\n",
                     "t.yaml:3:26: path_prefix has an empty segment"));
}

TEST(route_needs_upstream_or_plugins)
{
    CHECK(fails_with(MINIMAL "routes:\n  - name: lonely\n", "t.yaml:3:5: route has neither upstream nor plugins"));
    CHECK(fails_with(MINIMAL "routes:\n  - {name: a, plugins: [request_id: {}]}\n  - {name: a, plugins: [request_id: {}]}\n",
                     "t.yaml:4:12: duplicate route name 'a' (also at line 3)"));
}

TEST(route_methods_and_hosts)
{
    CHECK(fails_with(MINIMAL "routes:\n  - match: {methods: [GET, FETCH]}\n    plugins: [request_id: {}]\n",
                     "t.yaml:3:28: unknown method 'FETCH' (expected one of: GET,"));
    CHECK(fails_with(MINIMAL "routes:\n  - match: {methods: [get]}\n    plugins: [request_id: {}]\n",
                     "t.yaml:3:23: method 'get' must be uppercase"));
    CHECK(fails_with(MINIMAL "routes:\n  - match: {host: \"api.*.com\"}\n    plugins: [request_id: {}]\n",
                     "t.yaml:3:19: invalid host 'api.*.com'"));
    CHECK(fails_with(MINIMAL "routes:\n  - match: {headers: {\"Bad Name\": x}}\n    plugins: [request_id: {}]\n",
                     "t.yaml:3:23: invalid header name 'Bad Name'"));
}

TEST(plugins_unknown_and_plugin_errors)
{
    CHECK(fails_with(MINIMAL "plugins:\n  - no_such_plugin: {}\n",
                     "t.yaml:3:5: unknown plugin 'no_such_plugin' (known plugins: "));
    pt_errors e = {0};
    pt_config *cfg = load(MINIMAL "plugins:\n  - nope: {}\n", &e);
    CHECK(cfg == NULL && e.n == 1 && strstr(e.msgs[0], "request_id") && strstr(e.msgs[0], "direct_response"));
    pt_errors_free(&e);
    /* The plugin's own validation error surfaces (status out of range). */
    CHECK(fails_with(MINIMAL "routes:\n  - plugins:\n      - direct_response: {status: 99}\n",
                     "t.yaml:4:35: "));
    CHECK(fails_with(MINIMAL "plugins:\n  - request_id\n", "t.yaml:3:5: each entry of plugins must be a map with exactly one key"));
    CHECK(fails_with(MINIMAL "plugins: {request_id: {}}\n", "t.yaml:2:10: plugins must be a list"));
}

TEST(plugin_null_config_passed_as_null_node)
{
    pt_errors e = {0};
    pt_config *cfg = load(MINIMAL "plugins:\n  - request_id:\n  - request_id: ~\n", &e);
    dump_errors(&e);
    CHECK(cfg != NULL);
    CHECK(cfg && cfg->plugins.n == 2 && cfg->plugins.v[1].line == 4);
    pt_config_free(cfg);
    pt_errors_free(&e);
}

TEST(upstream_validation)
{
    CHECK(fails_with(MINIMAL "upstreams:\n  \"bad name\": {targets: [\"127.0.0.1:1\"]}\n",
                     "t.yaml:3:3: invalid upstream name 'bad name'"));
    CHECK(fails_with(MINIMAL "upstreams:\n  a: {keepalive: 1}\n", "t.yaml:3:3: upstream 'a' needs 'targets'"));
    CHECK(fails_with(MINIMAL "upstreams:\n  a: {targets: [{address: \"127.0.0.1:1\", weight: 1001}]}\n",
                     "t.yaml:3:50: integer out of range (expected 1..1000)"));
    CHECK(fails_with(MINIMAL "upstreams:\n  a: {targets: [\"127.0.0.1:1\"], keepalive: 10001}\n",
                     "t.yaml:3:44: integer out of range (expected 0..10000)"));
    CHECK(fails_with(MINIMAL "upstreams:\n  a: {targets: [\"127.0.0.1:1\"], tls: on}\n",
                     "t.yaml:3:38: upstream tls must be a mapping, got a scalar"));
}

/* ------------------------------------------------------------ ${ENV} */

TEST(env_interpolation)
{
    setenv("PT_TEST_PORT", "8099", 1);
    setenv("PT_TEST_EMPTY", "", 1);
    unsetenv("PT_TEST_UNSET");
    pt_errors e = {0};
    pt_config *cfg = load("listen: [\"127.0.0.1:${PT_TEST_PORT}\"]\n"
                          "access_log:\n"
                          "  path: \"${PT_TEST_UNSET:-/var/log/a.log}\"\n"
                          "routes:\n"
                          "  - name: \"$${literal} ${PT_TEST_EMPTY:-dflt} ${PT_TEST_EMPTY}x $5\"\n"
                          "    plugins: [request_id: {}]\n", &e);
    dump_errors(&e);
    CHECK(cfg != NULL);
    if (cfg) {
        CHECK_STR(cfg->listeners[0].addr.text, "127.0.0.1:8099");
        CHECK_INT(ntohs(((struct sockaddr_in *)&cfg->listeners[0].addr.ss)->sin_port), 8099);
        CHECK_STR(cfg->access_log.path, "/var/log/a.log");
        CHECK_STR(cfg->routes[0].name, "${literal} dflt x $5");
    }
    pt_config_free(cfg);
    pt_errors_free(&e);
}

TEST(env_errors)
{
    unsetenv("PT_TEST_UNSET");
    CHECK(fails_with(MINIMAL "access_log: {path: \"${PT_TEST_UNSET}\"}\n",
                     "t.yaml:2:20: environment variable PT_TEST_UNSET is not set"));
    CHECK(fails_with(MINIMAL "access_log: {path: \"${PT_TEST_UNSET\"}\n", "t.yaml:2:20: malformed '${'"));
    CHECK(fails_with(MINIMAL "access_log: {path: \"${1ABC}\"}\n", "t.yaml:2:20: malformed '${'"));
    CHECK(fails_with(MINIMAL "access_log: {path: \"${}\"}\n", "t.yaml:2:20: malformed '${'"));
}

/* ---------------------------------------------------- durations & sizes */

TEST(durations)
{
    uint64_t v = 0;
    CHECK(duration_of("250ms", &v) && v == 250);
    CHECK(duration_of("5s", &v) && v == 5000);
    CHECK(duration_of("2m", &v) && v == 120000);
    CHECK(duration_of("1h", &v) && v == 3600000);
    CHECK(duration_of("7", &v) && v == 7000);
    CHECK(!duration_of("-5s", &v));
    CHECK(!duration_of("5 s", &v));
    CHECK(!duration_of("1.5s", &v));
    CHECK(!duration_of("5d", &v));
    CHECK(!duration_of("s", &v));
    CHECK(!duration_of("99999999999999999999ms", &v));
    CHECK(!duration_of("18446744073709551h", &v)); /* fits u64 alone, overflows in ms */
    CHECK(!duration_of("[1]", &v));
    CHECK(fails_with(MINIMAL "timeouts: {idle: 0}\n", "t.yaml:2:18: idle must be greater than 0"));
    CHECK(fails_with(MINIMAL "timeouts: {idle: -1s}\n", "t.yaml:2:18: duration must not be negative"));
    CHECK(fails_with(MINIMAL "routes:\n  - {match: {path: /}, body_timeout: 0, plugins: [{direct_response: {}}]}\n",
                     "t.yaml:3:38: body_timeout must be greater than 0"));
    CHECK(fails_with(MINIMAL "routes:\n  - {match: {path: /}, min_body_rate: fast, plugins: [{direct_response: {}}]}\n",
                     "t.yaml:3:39: invalid size 'fast'"));
}

TEST(sizes)
{
    uint64_t v = 0;
    CHECK(size_of("512", &v) && v == 512);
    CHECK(size_of("512b", &v) && v == 512);
    CHECK(size_of("16k", &v) && v == 16384);
    CHECK(size_of("16KB", &v) && v == 16384);
    CHECK(size_of("1m", &v) && v == 1048576);
    CHECK(size_of("2g", &v) && v == 2147483648ull);
    CHECK(size_of("0", &v) && v == 0);
    CHECK(!size_of("-1", &v));
    CHECK(!size_of("1t", &v));
    CHECK(!size_of("k", &v));
    CHECK(!size_of("17179869184g", &v)); /* 2^34 GiB overflows 64 bits */
    CHECK(fails_with(MINIMAL "limits: {max_request_line: 2g}\n", "t.yaml:2:28: max_request_line must be between"));
    CHECK(fails_with(MINIMAL "limits: {max_body_size: lots}\n", "t.yaml:2:25: invalid size 'lots'"));
    CHECK(fails_with(MINIMAL "limits: {min_body_rate: fast}\n", "t.yaml:2:25: invalid size 'fast'"));
}

TEST(limits_min_body_rate)
{
    pt_errors e = {0};
    pt_config *cfg = load(MINIMAL "limits: {min_body_rate: 16k}\n", &e);
    dump_errors(&e);
    CHECK(cfg != NULL);
    if (cfg) CHECK_INT(cfg->limits.min_body_rate, 16384);
    pt_config_free(cfg);
    pt_errors_free(&e);
    cfg = load(MINIMAL "limits: {min_body_rate: 0}\n", &e);
    CHECK(cfg != NULL);
    if (cfg) CHECK_INT(cfg->limits.min_body_rate, 0); /* disabled */
    pt_config_free(cfg);
    pt_errors_free(&e);
}

TEST(route_body_size_zero_means_unlimited)
{
    pt_errors e = {0};
    pt_config *cfg = load(MINIMAL "routes:\n  - {max_body_size: 0, plugins: [request_id: {}]}\n", &e);
    CHECK(cfg && cfg->routes[0].max_body_size == UINT64_MAX);
    pt_config_free(cfg);
    pt_errors_free(&e);
}

/* -------------------------------------------------------------- getters */

TEST(getters_and_node_tree)
{
    getter_env g;
    env_init(&g);
    const char *y = "a: 'quoted'\nb: [1, ~, {c: d}]\nc: yes\nd: \"\"\n";
    pt_conf_node *root = pt_conf_parse_yaml(&g.ctx, y, strlen(y));
    CHECK(root && root->kind == PT_NODE_MAP && root->n == 4);
    if (root) {
        const pt_conf_node *a = pt_conf_get(root, "a");
        CHECK(a && a->kind == PT_NODE_SCALAR && a->quoted && a->line == 1 && a->col == 4);
        const pt_conf_node *b = pt_conf_get(root, "b");
        CHECK(b && b->kind == PT_NODE_SEQ && b->n == 3);
        CHECK(b && b->vals[1]->kind == PT_NODE_NULL);
        CHECK(b && b->vals[2]->kind == PT_NODE_MAP && b->vals[2]->line == 2 && b->vals[2]->col == 11);
        bool flag = false;
        CHECK(pt_conf_bool(&g.ctx, pt_conf_get(root, "c"), &flag) && flag);
        const pt_conf_node *d = pt_conf_get(root, "d");
        CHECK(d && d->kind == PT_NODE_SCALAR && d->scalar_len == 0); /* "" is a string, not null */
        int64_t iv;
        CHECK(!pt_conf_int(&g.ctx, a, 0, 10, &iv));
        CHECK_INT(g.errors.n, 1);
        CHECK(g.errors.n == 1 && strncmp(g.errors.msgs[0], "g.yaml:1:4: expected an integer", 31) == 0);
        CHECK(pt_conf_get(root, "zz") == NULL);
    }
    env_done(&g);
}

TEST(oversized_text_rejected)
{
    size_t len = (4u << 20) + 1;
    char *big = malloc(len);
    memset(big, '#', len);
    pt_errors e = {0};
    pt_config *cfg = pt_config_load_string("big.yaml", big, len, &e);
    CHECK(cfg == NULL);
    CHECK(has_error(&e, "big.yaml: configuration too large"));
    pt_errors_free(&e);
    free(big);
}

TEST(deep_nesting_rejected)
{
    char buf[512];
    size_t n = 0;
    for (int i = 0; i < 100; i++) buf[n++] = '[';
    for (int i = 0; i < 100; i++) buf[n++] = ']';
    buf[n] = '\0';
    pt_errors e = {0};
    pt_config *cfg = load(buf, &e);
    CHECK(cfg == NULL && has_error(&e, "t.yaml:1:65: nesting deeper than 64 levels"));
    pt_errors_free(&e);
}

TEST(error_list_is_capped)
{
    char *y = malloc(200 * 16 + 64);
    size_t n = (size_t)sprintf(y, MINIMAL);
    for (int i = 0; i < 200; i++) n += (size_t)sprintf(y + n, "k%d: 1\n", i);
    pt_errors e = {0};
    pt_config *cfg = load(y, &e);
    CHECK(cfg == NULL);
    CHECK_INT(e.n, 101);
    CHECK(e.n == 101 && strstr(e.msgs[100], "too many errors") != NULL);
    CHECK(e.n > 0 && strncmp(e.msgs[0], "t.yaml:2:1: unknown key 'k0' in top level", 41) == 0);
    pt_errors_free(&e);
    free(y);
}

/* ---------------------------------------------------------------- files */

TEST(load_file_and_missing_file)
{
    char path[] = "/tmp/pt_test_config_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    const char *y = MINIMAL "routes:\n  - plugins: [bogus: {}]\n";
    CHECK(write(fd, y, strlen(y)) == (ssize_t)strlen(y));
    close(fd);
    pt_errors e = {0};
    pt_config *cfg = pt_config_load_file(path, &e);
    CHECK(cfg == NULL);
    char want[128];
    snprintf(want, sizeof(want), "%s:3:15: unknown plugin 'bogus'", path);
    CHECK(has_error(&e, want));
    pt_errors_free(&e);
    unlink(path);
    cfg = pt_config_load_file("/nonexistent/portico.yaml", &e);
    CHECK(cfg == NULL && has_error(&e, "/nonexistent/portico.yaml: cannot open"));
    pt_errors_free(&e);
}

/* ------------------------------------------------------------ proxy mode */

TEST(config_for_proxy_valid)
{
    pt_errors e = {0};
    pt_config *cfg = pt_config_for_proxy(&(pt_proxy_opts){.listen = "127.0.0.1:8080", .to = "http://127.0.0.1:9001, http://[::1]:9002/"}, &e);
    dump_errors(&e);
    CHECK(cfg != NULL);
    if (!cfg) return;
    CHECK_INT(cfg->nlisteners, 1);
    CHECK_STR(cfg->listeners[0].addr.text, "127.0.0.1:8080");
    CHECK_INT(cfg->listeners[0].backlog, 511);
    CHECK_INT(cfg->nupstreams, 1);
    CHECK_STR(cfg->upstreams[0].name, "default");
    CHECK_INT(cfg->upstreams[0].ntargets, 2);
    CHECK_STR(cfg->upstreams[0].targets[0].host, "127.0.0.1");
    CHECK_INT(cfg->upstreams[0].targets[0].port, 9001);
    CHECK_STR(cfg->upstreams[0].targets[1].host, "[::1]");
    CHECK_INT(cfg->upstreams[0].targets[1].addr.ss.ss_family, AF_INET6);
    CHECK_INT(cfg->upstreams[0].connect_timeout_ms, 5000);
    CHECK_INT(cfg->nroutes, 1);
    CHECK_INT(cfg->routes[0].path_kind, PT_PATH_ANY);
    CHECK(cfg->routes[0].upstream == &cfg->upstreams[0]);
    CHECK_INT(cfg->routes[0].plugins.n, 0);
    CHECK_INT(cfg->plugins.n, 0);
    CHECK(cfg->access_log.enabled);
    CHECK_STR(cfg->access_log.path, "stdout");
    CHECK(cfg->workers >= 1);
    pt_config_free(cfg);
    pt_errors_free(&e);
}

TEST(upstream_url_targets)
{
    pt_errors e = {0};
    pt_config *cfg = load(MINIMAL "upstreams:\n"
                                  "  api: {targets: [\"https://127.0.0.1\", {address: \"https://localhost:8443/\", weight: 2}]}\n"
                                  "  web: {targets: [\"http://127.0.0.1\", \"127.0.0.1:8080\"]}\n"
                                  "  pinned: {targets: [\"https://127.0.0.1:9443\"], tls: {ca: /tmp/ca.pem, sni: api.test}}\n",
                          &e);
    dump_errors(&e);
    CHECK(cfg != NULL);
    if (cfg) {
        const pt_upstream_conf *api = &cfg->upstreams[0], *web = &cfg->upstreams[1], *pinned = &cfg->upstreams[2];
        CHECK(api->tls.enabled && api->tls.verify && api->tls.ca == NULL);
        CHECK_INT(api->targets[0].port, 443);
        CHECK_STR(api->targets[0].addr.text, "127.0.0.1:443");
        CHECK_STR(api->targets[1].host, "localhost");
        CHECK_INT(api->targets[1].port, 8443);
        CHECK_INT(api->targets[1].weight, 2);
        CHECK(!web->tls.enabled);
        CHECK_INT(web->targets[0].port, 80);
        CHECK_INT(web->targets[1].port, 8080);
        CHECK(pinned->tls.enabled);
        CHECK_STR(pinned->tls.ca, "/tmp/ca.pem");
        CHECK_STR(pinned->tls.sni, "api.test");
    }
    pt_config_free(cfg);
    pt_errors_free(&e);
    CHECK(fails_with(MINIMAL "upstreams:\n  a: {targets: [\"https://127.0.0.1\", \"127.0.0.1:80\"]}\n",
                     "t.yaml:3:38: upstream 'a': all targets must use the same scheme"));
    CHECK(fails_with(MINIMAL "upstreams:\n  a: {targets: [\"http://127.0.0.1\"], tls: {}}\n",
                     "t.yaml:3:43: upstream 'a' has http:// targets and 'tls'"));
    CHECK(fails_with(MINIMAL "upstreams:\n  a: {targets: [\"127.0.0.1:80\", \"http://127.0.0.2\"], tls: {}}\n",
                     "t.yaml:3:59: upstream 'a' has http:// targets and 'tls'"));
    CHECK(fails_with(MINIMAL "upstreams:\n  a: {targets: [\"https://127.0.0.1/api\"]}\n",
                     "t.yaml:3:17: invalid target 'https://127.0.0.1/api': a path is not supported"));
}

TEST(config_for_proxy_https)
{
    pt_errors e = {0};
    pt_config *cfg = pt_config_for_proxy(&(pt_proxy_opts){.listen = "127.0.0.1:8080", .to = "https://127.0.0.1, HTTPS://localhost:9443/",
                                                          .ca = "/tmp/ca.pem"},
                                         &e);
    dump_errors(&e);
    CHECK(cfg != NULL);
    if (!cfg) return;
    const pt_upstream_conf *u = &cfg->upstreams[0];
    CHECK_INT(u->ntargets, 2);
    CHECK_INT(u->targets[0].port, 443);
    CHECK_STR(u->targets[0].addr.text, "127.0.0.1:443");
    CHECK_STR(u->targets[1].host, "localhost");
    CHECK_INT(u->targets[1].port, 9443);
    CHECK(u->tls.enabled);
    CHECK(u->tls.verify);
    CHECK_STR(u->tls.ca, "/tmp/ca.pem");
    pt_config_free(cfg);
    cfg = pt_config_for_proxy(&(pt_proxy_opts){.listen = "127.0.0.1:8080", .to = "http://127.0.0.1", .insecure = false}, &e);
    CHECK(cfg != NULL);
    if (cfg) {
        CHECK_INT(cfg->upstreams[0].targets[0].port, 80);
        CHECK(!cfg->upstreams[0].tls.enabled);
        pt_config_free(cfg);
    }
    cfg = pt_config_for_proxy(&(pt_proxy_opts){.listen = "127.0.0.1:8080", .to = "https://[::1]", .insecure = true}, &e);
    CHECK(cfg != NULL);
    if (cfg) {
        CHECK_STR(cfg->upstreams[0].targets[0].addr.text, "[::1]:443");
        CHECK(cfg->upstreams[0].tls.enabled && !cfg->upstreams[0].tls.verify);
        pt_config_free(cfg);
    }
    pt_errors_free(&e);
}

TEST(config_for_proxy_invalid)
{
    pt_errors e = {0};
    CHECK(pt_config_for_proxy(&(pt_proxy_opts){.listen = "127.0.0.1:8080", .to = "https://127.0.0.1:9001,http://127.0.0.1:9002"}, &e) == NULL);
    CHECK(has_error(&e, "--to: 'http://127.0.0.1:9002': all URLs must use the same scheme"));
    pt_errors_free(&e);
    CHECK(pt_config_for_proxy(&(pt_proxy_opts){.listen = "127.0.0.1:8080", .to = "http://127.0.0.1:9001", .insecure = true}, &e) == NULL);
    CHECK(has_error(&e, "--ca/--insecure apply to https:// upstreams only"));
    pt_errors_free(&e);
    CHECK(pt_config_for_proxy(&(pt_proxy_opts){.listen = "127.0.0.1:8080", .to = "http://127.0.0.1:9001/api"}, &e) == NULL);
    CHECK(has_error(&e, "--to: 'http://127.0.0.1:9001/api': a path is not supported"));
    pt_errors_free(&e);
    CHECK(pt_config_for_proxy(&(pt_proxy_opts){.listen = "127.0.0.1", .to = "http://127.0.0.1:9001"}, &e) == NULL);
    CHECK(has_error(&e, "--listen: '127.0.0.1': expected HOST:PORT"));
    pt_errors_free(&e);
    CHECK(pt_config_for_proxy(&(pt_proxy_opts){.listen = "127.0.0.1:8080", .to = ""}, &e) == NULL);
    CHECK(has_error(&e, "--to: at least one upstream URL is needed"));
    pt_errors_free(&e);
    CHECK(pt_config_for_proxy(&(pt_proxy_opts){.listen = "127.0.0.1:8080", .to = "127.0.0.1:9001"}, &e) == NULL);
    CHECK(has_error(&e, "--to: '127.0.0.1:9001': expected a URL like http://host:port"));
    pt_errors_free(&e);
}

TEST(quickstart_example_loads)
{
    pt_errors e = {0};
    pt_config *cfg = pt_config_load_file("examples/quickstart.yaml", &e);
    if (!cfg) {
        /* Run from elsewhere than the repository root? */
        if (access("examples/quickstart.yaml", R_OK) != 0) {
            pt_errors_free(&e);
            return;
        }
    }
    dump_errors(&e);
    CHECK(cfg != NULL);
    if (cfg) {
        CHECK_INT(cfg->nupstreams, 2);
        CHECK_INT(cfg->plugins.n, 2);
        CHECK(cfg->nroutes >= 4);
    }
    pt_config_free(cfg);
    pt_errors_free(&e);
}

/* ------------------------------------------------------------- admin */

TEST(admin_defaults_and_values)
{
    pt_errors e = {0};
    pt_config *cfg = load(MINIMAL, &e);
    CHECK(cfg && !cfg->admin.enabled); /* no block: no admin listener */
    pt_config_free(cfg);
    cfg = load(MINIMAL "admin: {}\n", &e);
    CHECK(cfg && cfg->admin.enabled && !cfg->admin.token);
    if (cfg) {
        CHECK_STR(cfg->admin.addr.text, "127.0.0.1:9901");
        CHECK_INT(cfg->admin.addr.ss.ss_family, AF_INET);
    }
    pt_config_free(cfg);
    cfg = load(MINIMAL "admin: {listen: \"[::1]:9902\"}\n", &e);
    CHECK(cfg && cfg->admin.enabled && cfg->admin.addr.ss.ss_family == AF_INET6);
    pt_config_free(cfg);
    setenv("PT_TEST_ADMIN_TOKEN", "s3cr3t-T0ken", 1);
    cfg = load(MINIMAL "admin:\n  listen: 0.0.0.0:9901\n  token: ${PT_TEST_ADMIN_TOKEN}\n", &e);
    CHECK(cfg && cfg->admin.token && strcmp(cfg->admin.token, "s3cr3t-T0ken") == 0);
    pt_config_free(cfg);
    if (e.n) dump_errors(&e);
    CHECK_INT(e.n, 0);
    pt_errors_free(&e);
}

TEST(admin_errors)
{
    /* a non-loopback address needs a token */
    CHECK(fails_with(MINIMAL "admin:\n  listen: 0.0.0.0:9901\n",
                     "t.yaml:3:11: admin.listen 0.0.0.0:9901 is not a loopback address: set admin.token"));
    CHECK(fails_with(MINIMAL "admin: {listen: \"*:9901\"}\n", "t.yaml:2:17: admin.listen *:9901 is not a loopback"));
    CHECK(fails_with(MINIMAL "admin: {token: \"\"}\n", "t.yaml:2:16: admin.token must be non-empty"));
    CHECK(fails_with(MINIMAL "admin: {token: \"a b\"}\n", "t.yaml:2:16: admin.token must be non-empty"));
    CHECK(fails_with(MINIMAL "admin: {listen: 127.0.0.1}\n", "t.yaml:2:17: invalid address '127.0.0.1'"));
    CHECK(fails_with(MINIMAL "admin: {port: 1}\n", "t.yaml:2:9: unknown key 'port' in admin"));
    CHECK(fails_with(MINIMAL "admin:\n", "t.yaml:2:7: admin must be a mapping"));
    /* never the same socket as a proxy listener */
    CHECK(fails_with(MINIMAL "admin: {listen: 127.0.0.1:8080}\n",
                     "t.yaml:2:17: admin.listen 127.0.0.1:8080 overlaps the proxy listener 127.0.0.1:8080 (line 1)"));
    CHECK(fails_with("listen: [\"*:8080\"]\nadmin: {listen: 127.0.0.1:8080}\n",
                     "t.yaml:2:17: admin.listen 127.0.0.1:8080 overlaps the proxy listener *:8080"));
}

/* ------------------------------------------------------------- tunnels */

#define TUNNEL_BASE MINIMAL "upstreams: {up: {targets: ['127.0.0.1:9000']}}\n"

TEST(tunnel_defaults)
{
    pt_errors e = {0};
    pt_config *cfg = load(TUNNEL_BASE "routes:\n  - match: {path_prefix: /}\n    upstream: up\n", &e);
    CHECK(cfg != NULL);
    if (!cfg) dump_errors(&e);
    if (cfg) {
        CHECK_INT(cfg->timeouts.tunnel_idle_ms, 3600000);
        CHECK(cfg->routes[0].upgrade == NULL); /* the default list: websocket */
        CHECK_INT(cfg->routes[0].tunnel_idle_timeout_ms, 0);
    }
    pt_config_free(cfg);
    pt_errors_free(&e);
}

TEST(tunnel_keys)
{
    pt_errors e = {0};
    pt_config *cfg = load(TUNNEL_BASE "timeouts: {tunnel_idle: 5m}\n"
                                      "routes:\n  - match: {path_prefix: /a}\n    upstream: up\n"
                                      "    upgrade: [websocket, my-proto/2]\n    tunnel_idle_timeout: 90s\n"
                                      "  - match: {path_prefix: /}\n    upstream: up\n    upgrade: []\n",
                          &e);
    CHECK(cfg != NULL);
    if (!cfg) dump_errors(&e);
    if (cfg) {
        CHECK_INT(cfg->timeouts.tunnel_idle_ms, 300000);
        CHECK_INT(cfg->routes[0].nupgrade, 2);
        CHECK_STR(cfg->routes[0].upgrade[0], "websocket");
        CHECK_STR(cfg->routes[0].upgrade[1], "my-proto/2");
        CHECK_INT(cfg->routes[0].tunnel_idle_timeout_ms, 90000);
        CHECK(cfg->routes[1].upgrade != NULL);
        CHECK_INT(cfg->routes[1].nupgrade, 0);
    }
    pt_config_free(cfg);
    pt_errors_free(&e);
}

TEST(tunnel_errors)
{
    CHECK(fails_with(TUNNEL_BASE "routes:\n  - match: {path_prefix: /}\n    upstream: up\n    upgrade: [h2c]\n",
                     "t.yaml:6:15: h2c is never tunnelled"));
    CHECK(fails_with(TUNNEL_BASE "routes:\n  - match: {path_prefix: /}\n    upstream: up\n    upgrade: [H2C]\n",
                     "t.yaml:6:15: h2c is never tunnelled"));
    CHECK(fails_with(TUNNEL_BASE "routes:\n  - match: {path_prefix: /}\n    upstream: up\n    upgrade: websocket\n",
                     "t.yaml:6:14: upgrade must be a list"));
    CHECK(fails_with(TUNNEL_BASE "routes:\n  - match: {path_prefix: /}\n    upstream: up\n    upgrade: ['a b']\n",
                     "t.yaml:6:15: 'a b' is not a protocol name"));
    CHECK(fails_with(TUNNEL_BASE "routes:\n  - match: {path_prefix: /}\n    upstream: up\n    upgrade: ['foo/']\n",
                     "t.yaml:6:15: 'foo/' is not a protocol name"));
    CHECK(fails_with(TUNNEL_BASE "routes:\n  - match: {path_prefix: /}\n    upstream: up\n"
                                 "    tunnel_idle_timeout: 0s\n",
                     "t.yaml:6:26: tunnel_idle_timeout must be greater than 0"));
    CHECK(fails_with(TUNNEL_BASE "timeouts: {tunnel_idle: 0}\n", "t.yaml:3:25: tunnel_idle must be greater than 0"));
}

/* ----------------------------------------------------------- path_rules */

#define PR_ROUTE "routes:\n  - match: {path_prefix: /}\n    upstream: up\n"

TEST(path_rules_default_reject)
{
    pt_errors e = {0};
    pt_config *cfg = load(TUNNEL_BASE PR_ROUTE, &e);
    CHECK(cfg != NULL);
    if (!cfg) dump_errors(&e);
    if (cfg) {
        static const pt_path_rules zero = {0};
        CHECK(memcmp(&cfg->path_rules, &zero, sizeof(zero)) == 0);
        CHECK(memcmp(&cfg->routes[0].path_rules, &zero, sizeof(zero)) == 0);
        CHECK_INT(cfg->path_rules.encoded_slash, PT_PATHRULE_REJECT);
    }
    pt_config_free(cfg);
    pt_errors_free(&e);
}

/* The route inherits the global block and overrides only the keys it sets. */
TEST(path_rules_global_and_route_override)
{
    pt_errors e = {0};
    pt_config *cfg = load(TUNNEL_BASE "path_rules:\n  encoded_slash: decode\n  semicolon: strip\n"
                                      "  double_encoding: keep\n  encoded_control: keep\n  invalid_utf8: keep\n"
                                      "  trailing_dot_space: strip\n  backslash: decode\n"
                                      "routes:\n  - match: {path_prefix: /files}\n    upstream: up\n"
                                      "    path_rules: {encoded_slash: keep, semicolon: reject, backslash: keep}\n"
                                      "  - match: {path_prefix: /}\n    upstream: up\n",
                          &e);
    CHECK(cfg != NULL);
    if (!cfg) dump_errors(&e);
    if (cfg) {
        const pt_path_rules *g = &cfg->path_rules, *r0 = &cfg->routes[0].path_rules, *r1 = &cfg->routes[1].path_rules;
        CHECK_INT(g->encoded_slash, PT_PATHRULE_DECODE);
        CHECK_INT(g->backslash, PT_PATHRULE_DECODE);
        CHECK_INT(g->semicolon, PT_PATHRULE_DECODE);
        CHECK_INT(g->double_encoding, PT_PATHRULE_KEEP);
        CHECK_INT(g->encoded_control, PT_PATHRULE_KEEP);
        CHECK_INT(g->invalid_utf8, PT_PATHRULE_KEEP);
        CHECK_INT(g->trailing_dot_space, PT_PATHRULE_DECODE);
        CHECK_INT(r0->encoded_slash, PT_PATHRULE_KEEP);
        CHECK_INT(r0->semicolon, PT_PATHRULE_REJECT);
        CHECK_INT(r0->backslash, PT_PATHRULE_KEEP);
        CHECK_INT(r0->double_encoding, PT_PATHRULE_KEEP);     /* inherited */
        CHECK_INT(r0->trailing_dot_space, PT_PATHRULE_DECODE); /* inherited */
        CHECK(memcmp(r1, g, sizeof(*g)) == 0);
    }
    pt_config_free(cfg);
    pt_errors_free(&e);
}

TEST(path_rules_errors)
{
    CHECK(fails_with(TUNNEL_BASE "path_rules:\n  encoded_slash: allow\n" PR_ROUTE,
                     "t.yaml:4:18: path_rules.encoded_slash: expected reject, decode or keep, got 'allow'"));
    CHECK(fails_with(TUNNEL_BASE "path_rules:\n  semicolon: decode\n" PR_ROUTE,
                     "t.yaml:4:14: path_rules.semicolon: expected reject, strip or keep, got 'decode'"));
    CHECK(fails_with(TUNNEL_BASE "path_rules:\n  double_encoding: decode\n" PR_ROUTE,
                     "t.yaml:4:20: path_rules.double_encoding: expected reject or keep, got 'decode'"));
    CHECK(fails_with(TUNNEL_BASE "path_rules:\n  trailing_dot_space: decode\n" PR_ROUTE,
                     "t.yaml:4:23: path_rules.trailing_dot_space: expected reject, strip or keep"));
    CHECK(fails_with(TUNNEL_BASE "path_rules:\n  slashes: keep\n" PR_ROUTE,
                     "t.yaml:4:3: unknown key 'slashes' in path_rules"));
    CHECK(fails_with(TUNNEL_BASE "path_rules: [keep]\n" PR_ROUTE, "t.yaml:3:13: path_rules must be a mapping"));
    CHECK(fails_with(TUNNEL_BASE "path_rules:\n  encoded_slash: [keep]\n" PR_ROUTE, "t.yaml:4:18: "));
    CHECK(fails_with(TUNNEL_BASE "routes:\n  - match: {path_prefix: /}\n    upstream: up\n"
                                 "    path_rules: {invalid_utf8: strip}\n",
                     "t.yaml:6:32: path_rules.invalid_utf8: expected reject or keep, got 'strip'"));
}

/* `retries`: the built-in rule without a block, block defaults, the route's
 * keys over the upstream's, the budget on the upstream only. */
TEST(retries_policy_merge)
{
    pt_errors e = {0};
    pt_config *cfg = load(MINIMAL "upstreams:\n"
                                  "  plain: {targets: [\"127.0.0.1:1\"], retries: {budget: {min_retries: 1}}}\n"
                                  "  up:\n"
                                  "    targets: [\"127.0.0.1:1\"]\n"
                                  "    retries: {attempts: 4, per_try_timeout: 2s, budget: {ratio: 0.5, min_retries: 7}}\n"
                                  "routes:\n"
                                  "  - name: none\n    match: {path: /n}\n    upstream: plain\n"
                                  "  - name: inherit\n    match: {path: /i}\n    upstream: up\n    timeout: 30s\n"
                                  "  - name: over\n    match: {path: /o}\n    upstream: up\n"
                                  "    retries: {on: [reset, 500, 599], methods: all, backoff: {base: 1ms, max: 1s},\n"
                                  "              body_buffer: 1k}\n",
                          &e);
    if (!cfg) dump_errors(&e);
    CHECK(cfg != NULL);
    if (!cfg) return;
    const pt_retry_policy *none = &cfg->routes[0].retry, *inh = &cfg->routes[1].retry, *ov = &cfg->routes[2].retry;
    CHECK(!none->configured);
    CHECK_INT(cfg->routes[0].timeout_ms, 0);
    CHECK(inh->configured);
    CHECK_INT(inh->attempts, 4);
    CHECK_INT(inh->per_try_timeout_ms, 2000);
    CHECK_INT(inh->on, PT_RETRY_ON_CONNECT | PT_RETRY_ON_RESET | PT_RETRY_ON_TIMEOUT);
    CHECK(inh->on_status[0] == ((1ull << 2) | (1ull << 3) | (1ull << 4)) && inh->on_status[1] == 0);
    CHECK(!inh->all_methods);
    CHECK_INT(inh->backoff_base_ms, 25);
    CHECK_INT(inh->backoff_max_ms, 250);
    CHECK_INT(inh->body_buffer, 65536);
    CHECK_INT(cfg->routes[1].timeout_ms, 30000);
    CHECK_INT(ov->attempts, 4); /* inherited */
    CHECK_INT(ov->per_try_timeout_ms, 2000);
    CHECK_INT(ov->on, PT_RETRY_ON_RESET);
    CHECK(ov->on_status[0] == 1 && ov->on_status[1] == (1ull << (99 - 64)));
    CHECK(ov->all_methods);
    CHECK_INT(ov->backoff_base_ms, 1);
    CHECK_INT(ov->backoff_max_ms, 1000);
    CHECK_INT(ov->body_buffer, 1024);
    CHECK(cfg->upstreams[1].retry_budget.ratio == 0.5);
    CHECK_INT(cfg->upstreams[1].retry_budget.min_retries, 7);
    CHECK(cfg->upstreams[0].retry_budget.ratio == 0.2);
    CHECK_INT(cfg->upstreams[0].retry_budget.min_retries, 1); /* a budget alone: no policy */
    CHECK(!cfg->upstreams[0].retry.configured);
    pt_config_free(cfg);
    pt_errors_free(&e);
}

TEST(retries_errors)
{
#define RETRY_BASE MINIMAL "upstreams: {up: {targets: [\"127.0.0.1:1\"]}}\nroutes:\n  - upstream: up\n"
    CHECK(fails_with(RETRY_BASE "    retries: {attempts: 9}\n",
                     "t.yaml:5:25: retries.attempts must be between 1 and 8"));
    CHECK(fails_with(RETRY_BASE "    retries: {on: [connect_failure, 404]}\n",
                     "t.yaml:5:37: retries.on: unknown failure '404'"));
    CHECK(fails_with(RETRY_BASE "    retries: {on: 503}\n", "t.yaml:5:19: retries.on must be a list"));
    CHECK(fails_with(RETRY_BASE "    retries: {methods: post}\n", "t.yaml:5:24: retries.methods must be"));
    CHECK(fails_with(RETRY_BASE "    retries: {backoff: {base: 2s, max: 1s}}\n",
                     "t.yaml:5:24: retries.backoff.max must not be less than base"));
    CHECK(fails_with(RETRY_BASE "    retries: {budget: {ratio: 0.1}}\n",
                     "t.yaml:5:23: retries.budget is set on the upstream"));
    CHECK(fails_with(RETRY_BASE "    retries: {tries: 2}\n", "t.yaml:5:15: unknown key 'tries' in retries"));
    CHECK(fails_with(RETRY_BASE "    timeout: 0s\n", "t.yaml:5:14: timeout must be greater than 0"));
    CHECK(fails_with(MINIMAL "upstreams:\n  up:\n    targets: [\"127.0.0.1:1\"]\n"
                             "    retries: {budget: {ratio: 1.5}}\n"
                             "routes:\n  - upstream: up\n",
                     "t.yaml:5:31: retries.budget.ratio must be a number between 0 and 1"));
    CHECK(fails_with(MINIMAL "routes:\n  - plugins: [request_id: {}]\n    retries: {attempts: 2}\n",
                     "t.yaml:4:14: retries needs the route's upstream"));
#undef RETRY_BASE
}

TEST_MAIN()
