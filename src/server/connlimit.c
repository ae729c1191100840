/* connlimit.c — see connlimit.h. */
#include "server/connlimit.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define CLIENT_BUCKETS 4096

typedef struct client_count {
    struct client_count *next;
    unsigned char addr[16];
    uint32_t count;
} client_count;

struct pt_connlimit {
    atomic_uint *per_listener;
    size_t nlisteners;
    pthread_mutex_t lock;
    client_count *buckets[CLIENT_BUCKETS];
};

pt_connlimit *pt_connlimit_new(size_t nlisteners)
{
    pt_connlimit *cl = pt_xcalloc(1, sizeof(*cl));
    cl->nlisteners = nlisteners;
    cl->per_listener = pt_xcalloc(nlisteners ? nlisteners : 1, sizeof(*cl->per_listener));
    pthread_mutex_init(&cl->lock, NULL);
    return cl;
}

void pt_connlimit_free(pt_connlimit *cl)
{
    if (!cl) return;
    for (size_t i = 0; i < CLIENT_BUCKETS; i++)
        while (cl->buckets[i]) {
            client_count *c = cl->buckets[i];
            cl->buckets[i] = c->next;
            free(c);
        }
    pthread_mutex_destroy(&cl->lock);
    free(cl->per_listener);
    free(cl);
}

/* The client's address as 16 bytes (IPv4 as v4-mapped IPv6). */
static void addr_key(const struct sockaddr *sa, unsigned char out[16])
{
    memset(out, 0, 16);
    if (sa->sa_family == AF_INET) {
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
    }
}

static size_t bucket_of(const unsigned char k[16])
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < 16; i++) h = (h ^ k[i]) * 1099511628211ull;
    return (size_t)(h % CLIENT_BUCKETS);
}

bool pt_connlimit_acquire(pt_connlimit *cl, size_t listener, const struct sockaddr *peer, uint32_t max_listener,
                          uint32_t max_client)
{
    if (listener < cl->nlisteners) {
        unsigned prev = atomic_fetch_add(&cl->per_listener[listener], 1);
        if (max_listener && prev >= max_listener) {
            atomic_fetch_sub(&cl->per_listener[listener], 1);
            return false;
        }
    }
    if (!max_client) return true;
    unsigned char k[16];
    addr_key(peer, k);
    size_t b = bucket_of(k);
    bool ok = true;
    pthread_mutex_lock(&cl->lock);
    client_count *c = cl->buckets[b];
    while (c && memcmp(c->addr, k, 16) != 0) c = c->next;
    if (!c) {
        c = pt_xcalloc(1, sizeof(*c));
        memcpy(c->addr, k, 16);
        c->next = cl->buckets[b];
        cl->buckets[b] = c;
    }
    if (c->count >= max_client) ok = false;
    else c->count++;
    pthread_mutex_unlock(&cl->lock);
    if (!ok && listener < cl->nlisteners) atomic_fetch_sub(&cl->per_listener[listener], 1);
    return ok;
}

void pt_connlimit_release(pt_connlimit *cl, size_t listener, const struct sockaddr *peer, bool counted_client)
{
    if (listener < cl->nlisteners) atomic_fetch_sub(&cl->per_listener[listener], 1);
    if (!counted_client) return;
    unsigned char k[16];
    addr_key(peer, k);
    size_t b = bucket_of(k);
    pthread_mutex_lock(&cl->lock);
    client_count **pp = &cl->buckets[b];
    while (*pp && memcmp((*pp)->addr, k, 16) != 0) pp = &(*pp)->next;
    if (*pp && --(*pp)->count == 0) { /* forget idle clients: the table stays small */
        client_count *c = *pp;
        *pp = c->next;
        free(c);
    }
    pthread_mutex_unlock(&cl->lock);
}
