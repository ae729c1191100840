/* admin_endpoints.c — admin listener endpoints declared by plugins
 * (plugin.h, "Admin endpoints"): a small registry under a mutex, each
 * endpoint counted by the configurations that declare it (like shared.c),
 * looked up and called on the admin thread. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "plugin/plugin.h"

typedef struct endpoint {
    struct endpoint *next;
    const char *path;
    uint32_t methods;
    pt_admin_handler fn;
    void *data;
    int refs;
} endpoint;

static pthread_mutex_t ep_lock = PTHREAD_MUTEX_INITIALIZER;
static endpoint *endpoints;

static endpoint *find(pt_str path)
{
    for (endpoint *e = endpoints; e; e = e->next)
        if (pt_str_eq_lit(path, e->path)) return e;
    return NULL;
}

/* Arena cleanup of a configuration that declared the endpoint. */
static void ep_release(void *data)
{
    endpoint *e = data;
    pthread_mutex_lock(&ep_lock);
    bool last = --e->refs == 0;
    if (last)
        for (endpoint **pp = &endpoints; *pp; pp = &(*pp)->next)
            if (*pp == e) {
                *pp = e->next;
                break;
            }
    pthread_mutex_unlock(&ep_lock);
    if (last) free(e);
}

bool pt_conf_admin_endpoint(pt_conf_ctx *ctx, const pt_conf_node *node, const char *path, uint32_t methods,
                            pt_admin_handler fn, void *data)
{
    PT_ASSERT(path && strncmp(path, "/api/", 5) == 0 && fn);
    pthread_mutex_lock(&ep_lock);
    endpoint *e = find(pt_str_c(path));
    if (e && (e->fn != fn || e->data != data)) {
        pthread_mutex_unlock(&ep_lock);
        pt_conf_error(ctx, node, "admin endpoint %s is already declared by another plugin", path);
        return false;
    }
    if (e) {
        e->refs++;
        e->methods |= methods;
    } else {
        e = pt_xcalloc(1, sizeof(*e));
        *e = (endpoint){.next = endpoints, .path = path, .methods = methods, .fn = fn, .data = data, .refs = 1};
        endpoints = e;
    }
    pthread_mutex_unlock(&ep_lock);
    pt_arena_on_cleanup(ctx->arena, ep_release, e);
    return true;
}

uint32_t pt_plugin_admin_methods(pt_str path)
{
    pthread_mutex_lock(&ep_lock);
    endpoint *e = find(path);
    uint32_t m = e ? e->methods : 0;
    pthread_mutex_unlock(&ep_lock);
    return m;
}

int pt_plugin_admin_call(pt_method method, pt_str path, pt_str query, char **body, size_t *len,
                         const char **content_type)
{
    /* held during the call: a reload cannot free what the handler uses */
    pthread_mutex_lock(&ep_lock);
    endpoint *e = find(path);
    int status = e ? e->fn(e->data, method, path, query, body, len, content_type) : 0;
    pthread_mutex_unlock(&ep_lock);
    return status;
}
