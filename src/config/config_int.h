/* config_int.h — internals shared by the config loader's files (config.c,
 * config_routes.c). Not for other subsystems: they read pt_config. */
#ifndef PT_CONFIG_CONFIG_INT_H
#define PT_CONFIG_CONFIG_INT_H

#include "config/config.h"

/* The value under `key`, or NULL when absent or written as null (~): an
 * optional key set to null means "use the default". */
const pt_conf_node *pt_conf_opt(const pt_conf_node *map, const char *key);

/* Parses a plugin list (a sequence of one-key maps {name: config}) into
 * `out`, calling each plugin type's `configure`. `node` may be NULL. */
void pt_conf_plugin_list(pt_conf_ctx *ctx, const pt_conf_node *node, pt_plugin_list *out, const char *what);

/* Reads a `path_rules:` mapping (node may be NULL: nothing changes) over
 * *rules, which holds the defaults to override: each key set to reject,
 * decode/strip or keep (docs/routing.md "Path rules"). */
void pt_conf_path_rules(pt_conf_ctx *ctx, const pt_conf_node *node, pt_path_rules *rules);

/* Parses `routes:` (node may be NULL) into cfg->routes; upstreams and
 * limits must already be filled in. */
void pt_conf_routes(pt_conf_ctx *ctx, const pt_conf_node *node, pt_config *cfg);

/* config_dns.c: `dns:` into cfg->dns (defaults when absent); and the
 * load-time answer for a target whose host is a name (tc->dns, tc->answer,
 * tc->addr = the first address with `port`), resolved with cfg->dns (in
 * ctx->cfg, memory in ctx->arena). On a reload (ctx->running) a name the
 * running configuration has keeps its answer when the query fails. */
void pt_conf_dns(pt_conf_ctx *ctx, const pt_conf_node *root, pt_config *cfg);
bool pt_conf_resolve_target(pt_conf_ctx *ctx, const char *host, uint16_t port, pt_target_conf *tc, char *err,
                            size_t errcap);

/* config_dns.c: an upstream's `targets` written as {srv: NAME} entries
 * (sequence `t`, every item such a map): each name resolved (SRV, cfg->srv)
 * and expanded into u->targets, each record's host resolved like a target's.
 * Errors are positioned at the entries. */
void pt_conf_srv_targets(pt_conf_ctx *ctx, const pt_conf_node *t, pt_config *cfg, pt_upstream_conf *u);

/* consumers.c: `identity_headers:` and `consumers:` into cfg (before
 * plugins and routes, which refer to consumers by name). */
void pt_conf_read_consumers(pt_conf_ctx *ctx, const pt_conf_node *root, pt_config *cfg);

/* config_retry.c: a `retries` block (node may be NULL: nothing changes)
 * over *pol, which holds the inherited values; `budget` is non-NULL at the
 * upstream level only (a route's block may not set it). */
void pt_conf_retries(pt_conf_ctx *ctx, const pt_conf_node *node, pt_retry_policy *pol, pt_retry_budget_conf *budget);
/* config_balance.c: upstreams.NAME.{balance, hash_on, outlier,
 * circuit_breaker} (map `v`) into u->balance. */
void pt_conf_upstream_balance(pt_conf_ctx *ctx, const pt_conf_node *v, pt_upstream_conf *u);

/* config_logs.c: `access_log:` and `error_log:` into cfg (defaults when
 * absent). */
void pt_conf_access_log(pt_conf_ctx *ctx, const pt_conf_node *root, pt_config *cfg);
void pt_conf_error_log(pt_conf_ctx *ctx, const pt_conf_node *root, pt_config *cfg);

/* config_tracing.c: `tracing:` into cfg->tracing (defaults, disabled, when absent). */
void pt_conf_tracing(pt_conf_ctx *ctx, const pt_conf_node *root, pt_config *cfg);

#endif
