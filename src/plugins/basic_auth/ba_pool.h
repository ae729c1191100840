/* ba_pool.h — private to basic_auth: password hashes verified off the
 * worker loops, on a small process-wide pool of hashing threads.
 *
 * A worker submits a job (password, crypt hash) with a completion that
 * runs later on its own loop (pt_loop_post). Jobs belong to their worker's
 * ba_pool_client: when the worker stops (ba_pool_client_free), jobs not yet
 * started are skipped, the call waits for the running ones (one hash at
 * most per thread), and jobs whose completion was posted but will never run
 * are freed there (their completion runs with -1 from that call). */
#ifndef PT_PLUGINS_BA_POOL_H
#define PT_PLUGINS_BA_POOL_H

#include "plugin/plugin.h"

typedef struct ba_pool_client ba_pool_client;
/* result: 1 the password matches, 0 it does not, -1 the job was dropped
 * (its worker is stopping: release `data`, touch nothing else). */
typedef void (*ba_done_fn)(void *data, int result);

ba_pool_client *ba_pool_client_new(struct pt_loop *loop);
void ba_pool_client_free(ba_pool_client *c);
/* Jobs of this client submitted and not completed yet. */
unsigned ba_pool_pending(const ba_pool_client *c);
/* Verifies `password` against crypt hash `hash` (both copied, the copy of
 * the password wiped after use) on a hashing thread; done(data, ok) runs on
 * the client's loop. */
void ba_pool_verify(ba_pool_client *c, pt_str password, const char *hash, ba_done_fn done, void *data);

#endif
