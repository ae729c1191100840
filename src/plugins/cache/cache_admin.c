/* cache_admin.c — the registry of the process's live cache stores and the
 * purge endpoint on the admin listener (docs/caching.md "Purge"):
 *   POST|DELETE /api/cache/purge?key=K | prefix=P | tag=T [&zone=Z]
 * Runs on the admin thread and touches only the stores (process-wide,
 * each shard under its own lock), under the registry lock so a reload
 * cannot free a store meanwhile. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/cache/cache.h"
#include "plugins/plugin_util.h"

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static pt_cache_store *stores;
static uint64_t next_id = 1;

void pt_cache_registry_add(pt_cache_store *s)
{
    pthread_mutex_lock(&reg_lock);
    s->id = next_id++;
    s->reg_next = stores;
    stores = s;
    pthread_mutex_unlock(&reg_lock);
}

void pt_cache_registry_remove(pt_cache_store *s)
{
    pthread_mutex_lock(&reg_lock);
    for (pt_cache_store **pp = &stores; *pp; pp = &(*pp)->reg_next)
        if (*pp == s) {
            *pp = s->reg_next;
            break;
        }
    pthread_mutex_unlock(&reg_lock);
}

bool pt_cache_registry_with(const pt_cache_store *s, uint64_t id, void (*fn)(pt_cache_store *, void *), void *arg)
{
    pthread_mutex_lock(&reg_lock);
    pt_cache_store *it = stores;
    while (it && !(it == s && it->id == id)) it = it->reg_next;
    if (it) fn(it, arg);
    pthread_mutex_unlock(&reg_lock);
    return it != NULL;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes (and '+' as space) src into a malloc'ed string; NULL when malformed. */
static char *pct_decode(pt_str src, size_t *outlen)
{
    char *out = pt_xmalloc(src.n + 1);
    size_t n = 0;
    for (size_t i = 0; i < src.n; i++) {
        char c = src.p[i];
        if (c == '%') {
            int h = i + 2 < src.n ? hexval(src.p[i + 1]) : -1, l = i + 2 < src.n ? hexval(src.p[i + 2]) : -1;
            if (h < 0 || l < 0) {
                free(out);
                return NULL;
            }
            out[n++] = (char)(h * 16 + l);
            i += 2;
        } else {
            out[n++] = c == '+' ? ' ' : c;
        }
    }
    out[n] = '\0';
    *outlen = n;
    return out;
}

static int answer(char **body, size_t *len, int status, const char *fmt, const char *a1, size_t count)
{
    char buf[512];
    int n = snprintf(buf, sizeof(buf), fmt, a1, count);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof(buf)) n = sizeof(buf) - 1;
    *body = pt_xstrndup(buf, (size_t)n);
    *len = (size_t)n;
    return status;
}

/* A JSON string body value: the bytes the caller gave, with quotes,
 * backslashes, control characters and non-ASCII bytes replaced (it is
 * echoed for humans, and must stay valid JSON and UTF-8). */
static void json_safe(char *s)
{
    for (; *s; s++)
        if (*s == '"' || *s == '\\' || (unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f) *s = '?';
}

static int purge_handler(void *data, pt_method method, pt_str path, pt_str query, char **body, size_t *len,
                         const char **content_type)
{
    *content_type = "application/json";
    static const char *const modes[] = {"key", "prefix", "tag"};
    int mode = -1;
    char *arg = NULL, *zone = NULL;
    size_t arglen = 0, zlen = 0;
    pt_str rest = query, param, name, val;
    bool bad = false, has_eq;
    while (pt_plugin_query_next(&rest, &param, &name, &val, &has_eq)) {
        if (!has_eq) continue;
        if (pt_str_eq_lit(name, "zone")) {
            free(zone);
            zone = pct_decode(val, &zlen);
            bad |= zone == NULL;
            continue;
        }
        for (int m = 0; m < 3; m++)
            if (pt_str_eq_lit(name, modes[m])) {
                if (mode >= 0) bad = true;
                mode = m;
                free(arg);
                arg = pct_decode(val, &arglen);
                bad |= arg == NULL;
            }
    }
    int status;
    if (bad || mode < 0 || arglen == 0) {
        *content_type = "application/problem+json";
        status = answer(body, len, 400,
                        "{\"type\": \"about:blank\", \"title\": \"Bad Request\", \"status\": 400, \"detail\": "
                        "\"give exactly one of key=, prefix= or tag= (percent-encoded, non-empty)%s\", \"purged\": %zu}",
                        "", 0);
    } else {
        size_t n = 0;
        /* every zone unless one is named */
        pthread_mutex_lock(&reg_lock);
        for (pt_cache_store *s = stores; s; s = s->reg_next) {
            if (zone && strcmp(zone, s->zone) != 0) continue;
            n += pt_cache_store_purge(s, (pt_cache_purge_mode)mode, pt_str_make(arg, arglen));
        }
        pthread_mutex_unlock(&reg_lock);
        json_safe(arg);
        char what[300];
        snprintf(what, sizeof(what), "%s\": \"%.256s", modes[mode], arg);
        status = answer(body, len, 200, "{\"%s\", \"purged\": %zu}", what, n);
    }
    free(arg);
    free(zone);
    return status;
}

bool pt_cache_admin_declare(pt_conf_ctx *ctx, const pt_conf_node *node)
{
    return pt_conf_admin_endpoint(ctx, node, "/api/cache/purge",
                                  PT_METHOD_BIT(PT_METHOD_POST) | PT_METHOD_BIT(PT_METHOD_DELETE), purge_handler, NULL);
}
