/* connlimit.h — process-wide connection counting for limits.max_connections
 * (per listener, all workers together: one atomic counter per listener) and
 * limits.max_connections_per_client (per client IP: a small hash table under
 * one mutex, touched only on accept and close, and only when that limit is
 * set). */
#ifndef PT_SERVER_CONNLIMIT_H
#define PT_SERVER_CONNLIMIT_H

#include <sys/socket.h>

#include "core/common.h"

typedef struct pt_connlimit pt_connlimit;

pt_connlimit *pt_connlimit_new(size_t nlisteners);
void pt_connlimit_free(pt_connlimit *cl);

/* Counts a new connection from `peer` on `listener`; returns false (and
 * counts nothing) when a limit (0 = none) would be exceeded. */
bool pt_connlimit_acquire(pt_connlimit *cl, size_t listener, const struct sockaddr *peer, uint32_t max_listener,
                          uint32_t max_client);
/* Undoes a successful acquire (same arguments as counted). */
void pt_connlimit_release(pt_connlimit *cl, size_t listener, const struct sockaddr *peer, bool counted_client);

#endif
