/* redis.h — the server's side of the plugins' Redis connections
 * (plugin/redis.c; the plugin API is in plugin.h, docs/redis.md).
 *
 * Each worker keeps a registry of connections keyed by (address, username,
 * db, password): every `redis:` block of every plugin instance that names
 * the same server shares one connection on that worker. A block takes a
 * reference on its worker's connection the first time it is used there,
 * owned by its configuration; when a worker is done with a configuration
 * (its last request on it ended, server/server.c:pt_worker_gen_free) it
 * drops that configuration's references. A connection nobody references
 * lingers for 30 s so that the next configuration (a reload) takes it over
 * already connected, then closes (calls still waiting get
 * PT_REDIS_ERR_CLOSED). */
#ifndef PT_PLUGIN_REDIS_H
#define PT_PLUGIN_REDIS_H

#include "core/arena.h"
#include "core/loop.h"
#include "net/redis.h"

typedef struct pt_redis_conf pt_redis_conf;

/* The worker on `loop` is done with the configuration whose arena is
 * `owner` (pt_config.arena): drops the references its `redis:` blocks took
 * there. */
void pt_redis_worker_release(pt_loop *loop, const void *owner);
/* The worker stopped: every connection closes; calls still waiting are
 * dropped without their callback (their owners are gone). */
void pt_redis_worker_fini(pt_loop *loop);
/* The connection of `conf` on `loop` (created and referenced on first use). */
pt_redis_conn *pt_redis_worker_conn(pt_loop *loop, const pt_redis_conf *conf);

/* What pt_txn_redis_command/_eval (plugin.h) do with the request's loop and
 * arena: a call cancelled when `arena` is freed or reset. True when
 * started. */
bool pt_redis_arena_command(pt_loop *loop, pt_arena *arena, const pt_redis_conf *conf, int argc,
                            const char *const *argv, const size_t *argvlen, pt_redis_done_fn done, void *data,
                            pt_redis_error *err);
bool pt_redis_arena_eval(pt_loop *loop, pt_arena *arena, const pt_redis_conf *conf, const pt_redis_script *script,
                         int nkeys, int argc, const char *const *argv, const size_t *argvlen, pt_redis_done_fn done,
                         void *data, pt_redis_error *err);

#endif
