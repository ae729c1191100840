/* shared.c — process-wide objects that plugins declare at configure time
 * and that outlive a configuration reload when the next configuration asks
 * for the same key and size (plugin.h, "State shared by the workers").
 *
 * A small registry under a mutex: configure runs on the main thread, but
 * the last reference can drop on whichever thread frees an old generation.
 * Nothing here is on the request path. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "plugin/plugin.h"

typedef struct shared_obj {
    struct shared_obj *next;
    char *key;
    size_t keylen;
    size_t size;    /* as asked */
    size_t mapped;  /* rounded to pages */
    int refs;
    void *mem;
    void (*fini)(void *obj, size_t size); /* before the unmap; may be NULL */
} shared_obj;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static shared_obj *registry;

/* Arena cleanup of the configuration that held a reference. */
static void shared_release(void *data)
{
    shared_obj *o = data;
    pthread_mutex_lock(&registry_lock);
    bool last = --o->refs == 0;
    if (last)
        for (shared_obj **pp = &registry; *pp; pp = &(*pp)->next)
            if (*pp == o) {
                *pp = o->next;
                break;
            }
    pthread_mutex_unlock(&registry_lock);
    if (!last) return;
    if (o->fini) o->fini(o->mem, o->size);
    munmap(o->mem, o->mapped);
    free(o->key);
    free(o);
}

void *pt_conf_shared(pt_conf_ctx *ctx, const pt_conf_node *node, pt_str key, size_t size,
                     void (*init)(void *obj, size_t size))
{
    return pt_conf_shared_ex(ctx, node, key, size, init, NULL);
}

void *pt_conf_shared_ex(pt_conf_ctx *ctx, const pt_conf_node *node, pt_str key, size_t size,
                        void (*init)(void *obj, size_t size), void (*fini)(void *obj, size_t size))
{
    pthread_mutex_lock(&registry_lock);
    shared_obj *o = registry;
    while (o && !(o->size == size && o->keylen == key.n && memcmp(o->key, key.p, key.n) == 0)) o = o->next;
    if (o) {
        o->refs++;
        pthread_mutex_unlock(&registry_lock);
        pt_arena_on_cleanup(ctx->arena, shared_release, o);
        return o->mem;
    }
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t mapped = size == 0 ? page : (size + page - 1) / page * page;
    void *mem = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) {
        pthread_mutex_unlock(&registry_lock);
        pt_conf_error(ctx, node, "cannot reserve %zu bytes of shared state", size);
        return NULL;
    }
    char *k = pt_xmalloc(key.n + 1);
    memcpy(k, key.p, key.n);
    k[key.n] = '\0';
    o = pt_xcalloc(1, sizeof(*o));
    *o = (shared_obj){.next = registry, .key = k, .keylen = key.n, .size = size, .mapped = mapped,
                      .refs = 1, .mem = mem, .fini = fini};
    if (init) init(mem, size);
    registry = o;
    pthread_mutex_unlock(&registry_lock);
    pt_arena_on_cleanup(ctx->arena, shared_release, o);
    return mem;
}

const char *pt_conf_scope(pt_conf_ctx *ctx) { return ctx->scope ? ctx->scope : "global"; }
