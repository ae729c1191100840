/* conf_node.h — the YAML document as a tree of positioned nodes, and the
 * typed getters that every config consumer (core and plugins) uses to read
 * and validate it with "FILE:LINE:COL: message" errors.
 *
 * The loader (config.c) parses YAML with libyaml into pt_conf_node trees,
 * applying ${ENV_VAR} interpolation to every scalar (an unset variable is an
 * error; "$${" is a literal "${"). Anchors/aliases are rejected (billion-laughs
 * safe); duplicate keys in a mapping are an error.
 *
 * All memory (nodes, strings, the values consumers build) comes from the
 * context's arena, which becomes the config generation's arena. */
#ifndef PT_CONFIG_CONF_NODE_H
#define PT_CONFIG_CONF_NODE_H

#include "core/arena.h"
#include "core/common.h"

typedef enum { PT_NODE_NULL, PT_NODE_SCALAR, PT_NODE_MAP, PT_NODE_SEQ } pt_node_kind;

typedef struct pt_conf_node pt_conf_node;
struct pt_conf_node {
    pt_node_kind kind;
    int line, col;       /* 1-based position of the node's start */
    char *scalar;        /* SCALAR: interpolated text, NUL-terminated */
    size_t scalar_len;
    bool quoted;         /* SCALAR: was quoted in the source ('..' or "..") */
    bool env_ref;        /* SCALAR: written as exactly one ${NAME} (no default, nothing
                            around it): the value came from the environment only */
    size_t n;            /* MAP: number of pairs; SEQ: number of items */
    pt_conf_node **keys; /* MAP: key nodes (scalars) */
    pt_conf_node **vals; /* MAP: values; SEQ: items */
};

/* A list of error messages, each "FILE:LINE:COL: message" (heap strings). */
typedef struct {
    char **msgs;
    size_t n;
} pt_errors;

void pt_errors_add(pt_errors *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void pt_errors_free(pt_errors *e);

/* Loader context passed to every consumer (no global state while parsing). */
typedef struct pt_conf_ctx {
    const char *file; /* for messages */
    pt_arena *arena;  /* the generation's arena */
    pt_errors *errors;
    const struct pt_config *cfg; /* what is loaded so far (upstreams before plugins); may be NULL */
    /* Registry for metrics a plugin declares in configure, through
     * pt_conf_metric (plugin/plugin.h). NULL (portico check, tests):
     * metrics off. */
    struct pt_metrics *metrics;
    /* Where the plugin instance being configured is declared ("global",
     * "route:NAME"); NULL outside plugin lists. */
    const char *scope;
    /* A reload: the running configuration (its SRV answers stand in for a
     * query that fails, docs/dns.md); NULL for a first load or a check. */
    const struct pt_config *running;
} pt_conf_ctx;

/* Records "FILE:LINE:COL: <fmt...>" at node's position (node may be NULL: line 0). */
void pt_conf_error(pt_conf_ctx *ctx, const pt_conf_node *node, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Map lookup (NULL if absent or `map` is not a map). */
const pt_conf_node *pt_conf_get(const pt_conf_node *map, const char *key);
/* Errors on every key not in `allowed` (NULL-terminated) and returns false
 * if any; also errors (and returns false) if `map` is not a mapping. */
bool pt_conf_check_keys(pt_conf_ctx *ctx, const pt_conf_node *map, const char *const *allowed,
                        const char *what);

/* Typed readers: return true and set *out on success; otherwise record an
 * error at the node ("expected a string/integer/...") and return false.
 * Strings come from the arena. */
bool pt_conf_string(pt_conf_ctx *ctx, const pt_conf_node *n, char **out);
bool pt_conf_int(pt_conf_ctx *ctx, const pt_conf_node *n, int64_t min, int64_t max, int64_t *out);
bool pt_conf_bool(pt_conf_ctx *ctx, const pt_conf_node *n, bool *out); /* true/false/yes/no/on/off */
/* Durations: "250ms", "5s", "2m", "1h", or a bare integer meaning seconds. */
bool pt_conf_duration_ms(pt_conf_ctx *ctx, const pt_conf_node *n, uint64_t *out);
/* Sizes: "512", "16k", "1m", "2g" (k/K=1024, m/M, g/G; optional trailing b/B). */
bool pt_conf_size(pt_conf_ctx *ctx, const pt_conf_node *n, uint64_t *out);

/* Parse YAML text into a node tree (NULL on error, with errors recorded). */
pt_conf_node *pt_conf_parse_yaml(pt_conf_ctx *ctx, const char *text, size_t len);

#endif
