/* srv_watch.h — the main thread's refresh of the SRV names whose records a
 * configuration expanded into upstream targets (`{srv: NAME}`, docs/dns.md
 * "SRV records").
 *
 * An upstream's targets are a fixed array per configuration generation
 * (balancer, pools, metrics and shared target state index it), so a changed
 * record set is applied the way an operator would: the server reloads the
 * configuration (the load asks DNS again and builds a new generation;
 * counters, ejections and pools of targets that stay carry over). This
 * module only decides *when*: each name is asked again, on the main thread,
 * once its answer's TTL (clamped by dns.min_ttl/max_ttl) has passed, and
 * the server is told when the records differ from the running
 * configuration's. */
#ifndef PT_SERVER_SRV_WATCH_H
#define PT_SERVER_SRV_WATCH_H

#include <signal.h>
#include <stdint.h>

#include "config/config.h"

typedef struct pt_srv_watch pt_srv_watch;

pt_srv_watch *pt_srv_watch_new(void);
void pt_srv_watch_free(pt_srv_watch *w);

/* Follows `cfg` (the running configuration; it must stay alive until the
 * next adopt): its SRV names, each due when its load-time answer expires. */
void pt_srv_watch_adopt(pt_srv_watch *w, const pt_config *cfg);

/* Milliseconds until the next name is due (0: now), or -1 when there is
 * none (no SRV names: the server just waits for signals). */
int64_t pt_srv_watch_wait_ms(const pt_srv_watch *w);

/* Asks every due name again (blocking, bounded by the dns settings;
 * abandoned when a signal of `interrupt` is pending). Returns the index of
 * the first name whose records differ from the configuration's, with a line
 * for the log in `msg` ("SRV NAME changed: ..."); the caller reloads. -1
 * when none changed. A failed query (timeout, SERVFAIL, NXDOMAIN, no usable
 * record) keeps the configuration's answer: the name is asked again after
 * 1 s, 2 s, 4 s ... 30 s, and the first failure of a streak is logged. */
int pt_srv_watch_refresh(pt_srv_watch *w, const sigset_t *interrupt, char *msg, size_t cap);

/* The reload that name `i`'s change asked for did not take (an invalid file,
 * or the load's own query failed): it is asked again after a backoff, and a
 * still differing answer asks for another reload. */
void pt_srv_watch_reload_failed(pt_srv_watch *w, int i);

#endif
