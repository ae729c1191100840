/* redis.h — one Redis connection on a pt_loop: non-blocking connect,
 * AUTH/SELECT, pipelined commands with per-command timeouts, reconnect with
 * backoff, and Lua scripts by SHA1 (EVALSHA, EVAL on NOSCRIPT). Replies are
 * parsed with hiredis' reader; the socket, the queue and the timers are ours.
 * Knows nothing of configuration: plugin/redis.c reads the `redis:` block
 * and keeps one connection per worker and target (docs/redis.md).
 *
 * Model. Commands are written in order and answered in order (RESP
 * pipelining): every command sent waits in one FIFO until its reply comes.
 * A call (pt_redis_call) is the caller's view of one command: its callback
 * runs exactly once — reply, server error, timeout or connection loss —
 * unless the call is cancelled first, always from the loop (never inside
 * the call that started it). A call that timed out or was cancelled leaves
 * its command in the FIFO; the late reply is read and dropped.
 *
 * States. CONNECTING (socket connect, then AUTH/SELECT, which are queued
 * before any command; connect_timeout bounds both): on a connection's first
 * connect commands queue behind the handshake, bounded by max_pending and
 * their timeout, so its first users do not fail; on a reconnect they fail
 * at once like in BACKOFF. READY: commands are written at the end of the
 * loop iteration (many commands, one write). BACKOFF (after a failure,
 * until the next attempt): commands fail at once with PT_REDIS_ERR_DOWN. A
 * connection error fails every command in the FIFO with PT_REDIS_ERR_DOWN
 * and schedules a reconnect after 100 ms, doubling up to 5 s, with jitter
 * (half to all of the delay); the first good reply resets the delay. A
 * connection where a command timed out and then nothing at all was read for
 * another command_timeout is considered stuck and reset the same way.
 *
 * All functions run on the loop's thread. */
#ifndef PT_NET_REDIS_H
#define PT_NET_REDIS_H

#include <sys/socket.h>

#include "core/loop.h"

typedef enum {
    PT_REDIS_OK = 0,         /* a reply arrived (any type but an error reply) */
    PT_REDIS_ERR_SERVER,     /* the server answered with an error reply (detail: its text) */
    PT_REDIS_ERR_TIMEOUT,    /* no reply within command_timeout */
    PT_REDIS_ERR_DOWN,       /* not connected, or the connection was lost before the reply */
    PT_REDIS_ERR_BUSY,       /* max_pending commands already in flight */
    PT_REDIS_ERR_CLOSED,     /* the connection was closed for good (no configuration uses it) */
    PT_REDIS_ERR_INVALID,    /* bad arguments (no command, a NULL argument) */
} pt_redis_error;

/* A reply (hiredis' reply tree underneath), valid during the callback only. */
typedef struct pt_redis_reply pt_redis_reply;

typedef enum {
    PT_REDIS_REPLY_STRING = 1,
    PT_REDIS_REPLY_ARRAY,
    PT_REDIS_REPLY_INTEGER,
    PT_REDIS_REPLY_NIL,
    PT_REDIS_REPLY_STATUS,
    PT_REDIS_REPLY_ERROR,
} pt_redis_reply_type;

pt_redis_reply_type pt_redis_reply_kind(const pt_redis_reply *r);
long long pt_redis_reply_integer(const pt_redis_reply *r); /* INTEGER; 0 otherwise */
pt_str pt_redis_reply_str(const pt_redis_reply *r);        /* STRING, STATUS, ERROR (binary-safe); empty otherwise */
size_t pt_redis_reply_count(const pt_redis_reply *r);      /* ARRAY: number of elements; 0 otherwise */
const pt_redis_reply *pt_redis_reply_elem(const pt_redis_reply *r, size_t i); /* ARRAY element, NULL out of range */

typedef struct {
    pt_redis_error error;
    const pt_redis_reply *reply; /* PT_REDIS_OK and _ERR_SERVER; NULL otherwise */
    const char *detail;          /* errors: a short reason (the server's error text for _ERR_SERVER) */
} pt_redis_result;

typedef void (*pt_redis_done_fn)(void *data, const pt_redis_result *r);

typedef struct pt_redis_conn pt_redis_conn;
typedef struct pt_redis_call pt_redis_call;

/* Optional observer (metrics): `result` hears every command's outcome —
 * PT_REDIS_OK or the error its callback got, and the failures at once
 * (_DOWN, _BUSY) — but not cancellations nor _CLOSED; `ready` hears the
 * connection become READY (true) and leave it (false); `failure` hears
 * every failed connection or attempt. Any hook may be NULL. */
typedef struct {
    void (*result)(void *data, pt_redis_error e);
    void (*ready)(void *data, bool ready);
    void (*failure)(void *data);
} pt_redis_observer;

typedef struct {
    struct sockaddr_storage ss; /* AF_INET, AF_INET6 or AF_UNIX */
    socklen_t sslen;
    const char *text;           /* "127.0.0.1:6379" / "unix:/run/redis.sock", for messages */
    const char *username;       /* NULL: AUTH with the password only (or no AUTH) */
    const char *password;       /* NULL: no AUTH */
    int db;                     /* SELECT when non-zero */
    uint64_t connect_timeout_ms;
    uint64_t command_timeout_ms;
    uint32_t max_pending;       /* commands in the FIFO at once */
    const pt_redis_observer *observer; /* optional (metrics) */
    void *observer_data;
} pt_redis_opts;

/* A Lua script: its text and SHA1 (hex), for pt_redis_conn_eval. */
typedef struct {
    const char *text;
    size_t len;
    char sha1[41];
} pt_redis_script;

/* Fills s->sha1 from text[0, len) (kept by pointer: it must outlive s). */
void pt_redis_script_init(pt_redis_script *s, const char *text, size_t len);

/* A connection to opts' server on `loop`, connecting at once (the strings of
 * opts are copied). */
pt_redis_conn *pt_redis_conn_new(pt_loop *loop, const pt_redis_opts *opts);
/* Closes and frees it. With `notify`, calls still waiting get
 * PT_REDIS_ERR_CLOSED (from a deferred callback: their callbacks may run
 * after this returns, never inside it); without, they are dropped silently
 * (the worker is stopping). Must not be called from one of its callbacks. */
void pt_redis_conn_free(pt_redis_conn *c, bool notify);

/* Applies opts' connect_timeout_ms, command_timeout_ms and max_pending
 * from now on (commands already sent keep their deadline): a reload that
 * changes only those keeps the connection. */
void pt_redis_conn_tune(pt_redis_conn *c, const pt_redis_opts *opts);

/* Sends argv[0, argc) (argvlen NULL: C strings; binary-safe with lengths).
 * Returns the call, whose `done` runs later exactly once unless cancelled;
 * or NULL, with *err set, when it fails at once (_DOWN while down,
 * _BUSY over max_pending, _INVALID): `done` is then never called. */
pt_redis_call *pt_redis_conn_command(pt_redis_conn *c, int argc, const char *const *argv, const size_t *argvlen,
                                     pt_redis_done_fn done, void *data, pt_redis_error *err);
/* Runs `script` with EVALSHA sha1 nkeys argv...: the first nkeys of argv
 * are its KEYS, the rest its ARGV. On a NOSCRIPT error (the server lost its
 * script cache: restart, SCRIPT FLUSH, failover) the same call is sent again
 * as EVAL with the script's text, which also loads it for the next EVALSHA;
 * the caller sees only the final result. Same return contract as above. */
pt_redis_call *pt_redis_conn_eval(pt_redis_conn *c, const pt_redis_script *script, int nkeys, int argc,
                                  const char *const *argv, const size_t *argvlen, pt_redis_done_fn done,
                                  void *data, pt_redis_error *err);
/* Abandons a call whose callback has not run: it never will. The call's
 * memory is released (do not use it again). */
void pt_redis_cancel(pt_redis_call *call);

typedef enum { PT_REDIS_CONNECTING, PT_REDIS_READY, PT_REDIS_BACKOFF } pt_redis_state;

typedef struct {
    pt_redis_state state;
    uint64_t connects;      /* connection attempts started */
    uint64_t failures;      /* connections lost or attempts failed */
    uint64_t in_flight;     /* commands in the FIFO (timed out or cancelled ones included) */
    const char *last_error; /* why the last connection failed; "" if none */
} pt_redis_stats;

void pt_redis_conn_stats(const pt_redis_conn *c, pt_redis_stats *out);

#endif
