/* target_state.c — the process-wide registry of shared target and breaker
 * state (see balance.h): entries keyed by (upstream name, target address),
 * reference-counted by the configurations that name them. The mutex is
 * taken only when a configuration is built or freed. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "upstream/balance.h"

typedef struct shared_entry {
    struct shared_entry *next;
    char *upstream, *target; /* target "" for an upstream's breaker */
    size_t refs;
    _Alignas(64) unsigned char data[]; /* the payload, on its own cache line */
} shared_entry;

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static shared_entry *reg_head;
static size_t reg_count;

void *pt_shared_acquire(const char *upstream, const char *target, size_t size)
{
    if (!target) target = "";
    pthread_mutex_lock(&reg_lock);
    shared_entry *e = reg_head;
    while (e && (strcmp(e->upstream, upstream) != 0 || strcmp(e->target, target) != 0)) e = e->next;
    if (!e) {
        e = aligned_alloc(64, (sizeof(*e) + size + 63) & ~(size_t)63);
        if (!e) pt_panic(__FILE__, __LINE__, "out of memory");
        memset(e, 0, sizeof(*e) + size);
        e->upstream = pt_xstrndup(upstream, strlen(upstream));
        e->target = pt_xstrndup(target, strlen(target));
        e->next = reg_head;
        reg_head = e;
        reg_count++;
    }
    e->refs++;
    pthread_mutex_unlock(&reg_lock);
    return e->data;
}

void pt_shared_release(void *entry)
{
    if (!entry) return;
    shared_entry *e = (shared_entry *)((unsigned char *)entry - offsetof(shared_entry, data));
    pthread_mutex_lock(&reg_lock);
    if (--e->refs == 0) {
        shared_entry **pp = &reg_head;
        while (*pp != e) pp = &(*pp)->next;
        *pp = e->next;
        reg_count--;
        free(e->upstream);
        free(e->target);
        free(e);
    }
    pthread_mutex_unlock(&reg_lock);
}

size_t pt_shared_count(void)
{
    pthread_mutex_lock(&reg_lock);
    size_t n = reg_count;
    pthread_mutex_unlock(&reg_lock);
    return n;
}
