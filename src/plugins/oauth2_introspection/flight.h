/* flight.h — private to oauth2_introspection: the per-worker table of
 * introspection calls in flight, so that concurrent requests carrying the
 * same not-yet-cached token share one call (request coalescing), and the
 * count that `max_in_flight` bounds.
 *
 * An entry (pt_oi_pending) is keyed by a salted digest of the token and of
 * every setting that shapes the call and its answer (the caller computes
 * it with pt_oi_flight_key), holds the HTTP call and a list of waiters.
 * The entry belongs to the worker's table, not to the request that started
 * the call: a waiter (embedded in a request's plugin state) leaves with
 * pt_oi_waiter_cancel when its request ends, and the call goes on for the
 * others; when the last waiter leaves, the call is cancelled and the entry
 * freed. When the answer arrives the owner detaches the entry (a new
 * request for the token then starts a new call), takes the waiters one at
 * a time (pt_oi_pending_pop) and frees the entry. Only the owning worker's
 * thread touches a table: no locks. */
#ifndef PT_PLUGINS_OAUTH2_INTROSPECTION_FLIGHT_H
#define PT_PLUGINS_OAUTH2_INTROSPECTION_FLIGHT_H

#include "plugin/plugin.h"

#define PT_OI_FLIGHT_BUCKETS 256

typedef struct pt_oi_pending pt_oi_pending;

/* A request waiting for a call's answer (embedded in its plugin state). */
typedef struct pt_oi_waiter {
    struct pt_oi_waiter *prev, *next;
    pt_oi_pending *pending;  /* non-NULL while waiting */
} pt_oi_waiter;

struct pt_oi_pending {
    pt_oi_pending *next;     /* bucket chain while in the table */
    struct pt_oi_flight *table; /* NULL once detached */
    uint8_t key[PT_DIGEST_LEN];
    pt_http_call *call;      /* the call in flight; the owner clears it when it completes */
    pt_oi_waiter waiters;    /* circular list head */
    size_t nwaiters;
    bool delivering;         /* detached, answer being handed out: the last waiter leaving frees nothing */
};

typedef struct pt_oi_flight {
    pt_oi_pending *buckets[PT_OI_FLIGHT_BUCKETS];
    size_t count;            /* entries in the table: distinct calls in flight */
    uint8_t salt[PT_DIGEST_SALT_LEN];
} pt_oi_flight;

/* An empty table with a fresh random salt. */
void pt_oi_flight_init(pt_oi_flight *f);
/* Frees every entry (cancelling its call; waiters are just unlinked). */
void pt_oi_flight_fini(pt_oi_flight *f);
/* out = SHA-256(salt || parts...), parts hashed as is. */
void pt_oi_flight_key(const pt_oi_flight *f, const pt_str *parts, size_t n, uint8_t out[PT_DIGEST_LEN]);

/* The entry in the table for `key`, or NULL. */
pt_oi_pending *pt_oi_flight_find(pt_oi_flight *f, const uint8_t key[PT_DIGEST_LEN]);
/* A new entry for `key` (not already in the table), no call, no waiter. */
pt_oi_pending *pt_oi_flight_add(pt_oi_flight *f, const uint8_t key[PT_DIGEST_LEN]);

/* Appends w to p's waiters (w must not be waiting). */
void pt_oi_pending_wait(pt_oi_pending *p, pt_oi_waiter *w);
/* w leaves its entry, if it waits (idempotent). When it was the last
 * waiter of an entry still in the table, the call is cancelled and the
 * entry freed. */
void pt_oi_waiter_cancel(pt_oi_waiter *w);
/* Takes p out of the table (its answer arrived): later requests for the
 * key start a new call; the waiters stay. */
void pt_oi_pending_detach(pt_oi_pending *p);
/* The first waiter, still waiting (NULL when none). */
pt_oi_waiter *pt_oi_pending_first(pt_oi_pending *p);
/* Unlinks and returns the first waiter (NULL when none left). */
pt_oi_waiter *pt_oi_pending_pop(pt_oi_pending *p);
/* Frees p: cancels its call if any, unlinks the waiters left, leaves the table. */
void pt_oi_pending_free(pt_oi_pending *p);

#endif
