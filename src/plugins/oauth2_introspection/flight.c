/* flight.c — the per-worker table of introspection calls in flight and
 * their waiters (see flight.h). */
#include "plugins/oauth2_introspection/flight.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>

void pt_oi_flight_init(pt_oi_flight *f)
{
    memset(f, 0, sizeof(*f));
    size_t got = 0;
    while (got < sizeof(f->salt)) {
        ssize_t r = getrandom(f->salt + got, sizeof(f->salt) - got, 0);
        if (r <= 0) break;
        got += (size_t)r;
    }
    if (got < sizeof(f->salt)) { /* no entropy: still unique to this table and moment */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x[3] = {(uint64_t)ts.tv_sec, (uint64_t)ts.tv_nsec, (uint64_t)(uintptr_t)f};
        memcpy(f->salt, x, sizeof(x));
    }
}

void pt_oi_flight_key(const pt_oi_flight *f, const pt_str *parts, size_t n, uint8_t out[PT_DIGEST_LEN])
{
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    unsigned int len = 0;
    bool ok = m && EVP_DigestInit_ex(m, EVP_sha256(), NULL) == 1 && EVP_DigestUpdate(m, f->salt, sizeof(f->salt)) == 1;
    for (size_t i = 0; ok && i < n; i++)
        if (parts[i].n) ok = EVP_DigestUpdate(m, parts[i].p, parts[i].n) == 1;
    ok = ok && EVP_DigestFinal_ex(m, out, &len) == 1 && len == PT_DIGEST_LEN;
    EVP_MD_CTX_free(m);
    PT_ASSERT(ok);
}

/* Salted digests are uniform: the first byte is a fine bucket index. */
static size_t bucket(const uint8_t key[PT_DIGEST_LEN]) { return key[0] % PT_OI_FLIGHT_BUCKETS; }

pt_oi_pending *pt_oi_flight_find(pt_oi_flight *f, const uint8_t key[PT_DIGEST_LEN])
{
    for (pt_oi_pending *p = f->buckets[bucket(key)]; p; p = p->next)
        if (memcmp(p->key, key, PT_DIGEST_LEN) == 0) return p;
    return NULL;
}

pt_oi_pending *pt_oi_flight_add(pt_oi_flight *f, const uint8_t key[PT_DIGEST_LEN])
{
    PT_ASSERT(!pt_oi_flight_find(f, key));
    pt_oi_pending *p = pt_xcalloc(1, sizeof(*p));
    memcpy(p->key, key, PT_DIGEST_LEN);
    p->waiters.prev = p->waiters.next = &p->waiters;
    p->table = f;
    pt_oi_pending **head = &f->buckets[bucket(key)];
    p->next = *head;
    *head = p;
    f->count++;
    return p;
}

void pt_oi_pending_detach(pt_oi_pending *p)
{
    pt_oi_flight *f = p->table;
    p->delivering = true;
    if (!f) return;
    for (pt_oi_pending **pp = &f->buckets[bucket(p->key)]; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    p->next = NULL;
    p->table = NULL;
    f->count--;
}

void pt_oi_pending_wait(pt_oi_pending *p, pt_oi_waiter *w)
{
    PT_ASSERT(!w->pending);
    w->pending = p;
    w->prev = p->waiters.prev;
    w->next = &p->waiters;
    p->waiters.prev->next = w;
    p->waiters.prev = w;
    p->nwaiters++;
}

static void unlink_waiter(pt_oi_waiter *w)
{
    pt_oi_pending *p = w->pending;
    w->prev->next = w->next;
    w->next->prev = w->prev;
    w->prev = w->next = NULL;
    w->pending = NULL;
    p->nwaiters--;
}

void pt_oi_waiter_cancel(pt_oi_waiter *w)
{
    pt_oi_pending *p = w->pending;
    if (!p) return;
    unlink_waiter(w);
    if (p->nwaiters == 0 && !p->delivering) pt_oi_pending_free(p); /* nobody wants the answer: cancel the call */
}

pt_oi_waiter *pt_oi_pending_first(pt_oi_pending *p)
{
    return p->waiters.next != &p->waiters ? p->waiters.next : NULL;
}

pt_oi_waiter *pt_oi_pending_pop(pt_oi_pending *p)
{
    pt_oi_waiter *w = pt_oi_pending_first(p);
    if (w) unlink_waiter(w);
    return w;
}

void pt_oi_pending_free(pt_oi_pending *p)
{
    p->delivering = true; /* unlinking the waiters below must not free p again */
    if (p->call) pt_http_cancel(p->call);
    p->call = NULL;
    while (pt_oi_pending_pop(p)) {
    }
    pt_oi_pending_detach(p);
    free(p);
}

void pt_oi_flight_fini(pt_oi_flight *f)
{
    for (size_t b = 0; b < PT_OI_FLIGHT_BUCKETS; b++)
        while (f->buckets[b]) pt_oi_pending_free(f->buckets[b]);
}
