/* cache.h — the `cache` plugin: an RFC 9111 shared HTTP cache for the
 * routes that opt in (docs/caching.md). The store is cache_store.c, the
 * RFC rules cache_policy.c, the purge endpoint cache_admin.c. */
#ifndef PT_PLUGINS_CACHE_H
#define PT_PLUGINS_CACHE_H

#include "plugin/plugin.h"
#include "plugins/cache/cache_policy.h"
#include "plugins/cache/cache_store.h"

typedef struct {
    pt_cache_store *store;
    pt_cache_policy policy;
    const char *zone;
    uint64_t max_object;
    /* key */
    bool query_none;                 /* key.query: none */
    const char *const *query_keep;   /* key.query: [names] (NULL: all) */
    size_t nquery_keep;
    const char *const *query_ignore; /* key.ignore_query */
    size_t nquery_ignore;
    const char *const *key_headers;  /* key.headers */
    size_t nkey_headers;
    /* policy */
    bool allow_authorization;
    const char *tag_header;          /* NULL: no tags */
    bool collapse;
    uint64_t collapse_timeout_ms;
    int64_t default_swr, default_sie; /* seconds when the response names none */
    /* metrics */
    pt_metric_series *m_requests, *m_stores, *m_bytes, *m_entries, *m_evictions, *m_purged;
} pt_cache_conf;

extern const pt_plugin_type pt_plugin_cache;

/* cache_admin.c: the registry of live stores, for purges. */
void pt_cache_registry_add(pt_cache_store *s);
void pt_cache_registry_remove(pt_cache_store *s);
/* Runs fn(store, arg) under the registry lock if `s` (with `id`) is still
 * live; false when it is gone. */
bool pt_cache_registry_with(const pt_cache_store *s, uint64_t id, void (*fn)(pt_cache_store *, void *), void *arg);
/* Declares /api/cache/purge (configure time). */
bool pt_cache_admin_declare(pt_conf_ctx *ctx, const pt_conf_node *node);

#endif
