/* test_redis.c — the Redis client (src/net/redis.c) and the plugins' side of
 * it (src/plugin/redis.c) against real redis-server processes this test
 * starts on free ports (no persistence) and stops: binary-safe round trips,
 * 10,000 pipelined commands, AUTH (right and wrong password), SELECT,
 * EVALSHA after SCRIPT FLUSH, command timeouts and recovery, a server killed
 * and restarted, cancellation, nothing listening (backoff, no busy loop), a
 * server that never answers; the `redis:` config block and the per-worker
 * registry (sharing, references, linger). A missing redis-server fails the
 * test with a clear message (scripts/install-deps.sh installs it). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config/conf_node.h"
#include "config/config.h"
#include "net/redis.h"
#include "plugin/plugin.h"
#include "plugin/redis.h"
#include "testlib.h"

/* ------------------------------------------------------------ redis-server */

typedef struct {
    pid_t pid;
    int port;
    char unix_path[100];
    char dir[60];
} server;

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        perror("free_port");
        exit(2);
    }
    close(fd);
    return ntohs(a.sin_port);
}

static bool port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* Starts redis-server on s->port, with `password` when non-NULL; waits
 * until it accepts connections. Exits the test with a clear message when
 * redis-server cannot run; with quiet_exit, a server that exited at start
 * (the port was taken) is reported by returning false. */
static bool server_try_start(server *s, const char *password, bool quiet_exit)
{
    if (!s->dir[0]) {
        snprintf(s->dir, sizeof s->dir, "/tmp/pt-redis-test-%d-%d", (int)getpid(), s->port);
        mkdir(s->dir, 0700);
        snprintf(s->unix_path, sizeof s->unix_path, "%s/redis.sock", s->dir);
    }
    char port[16];
    snprintf(port, sizeof port, "%d", s->port);
    const char *argv[32];
    int n = 0;
    argv[n++] = "redis-server";
    argv[n++] = "--port", argv[n++] = port;
    argv[n++] = "--bind", argv[n++] = "127.0.0.1";
    argv[n++] = "--save", argv[n++] = "";
    argv[n++] = "--appendonly", argv[n++] = "no";
    argv[n++] = "--dir", argv[n++] = s->dir;
    argv[n++] = "--unixsocket", argv[n++] = s->unix_path;
    argv[n++] = "--enable-debug-command", argv[n++] = "yes";
    argv[n++] = "--loglevel", argv[n++] = "warning";
    argv[n++] = "--daemonize", argv[n++] = "no";
    if (password) argv[n++] = "--requirepass", argv[n++] = password;
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) dup2(devnull, 1);
        execvp("redis-server", (char *const *)argv);
        fprintf(stderr, "test_redis: cannot run redis-server (%s): install it with scripts/install-deps.sh "
                        "(Debian package redis-server)\n", strerror(errno));
        _exit(127);
    }
    s->pid = pid;
    uint64_t deadline = wall_ms() + 10000;
    while (!port_open(s->port)) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            s->pid = 0;
            if (quiet_exit && WIFEXITED(st) && WEXITSTATUS(st) != 127) return false; /* port taken meanwhile? */
            fprintf(stderr, "test_redis: redis-server exited at start (status %d); is it installed "
                            "(scripts/install-deps.sh)?\n", st);
            rmdir(s->dir);
            exit(1);
        }
        if (wall_ms() > deadline) {
            fprintf(stderr, "test_redis: redis-server did not listen on port %d within 10 s\n", s->port);
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            unlink(s->unix_path);
            rmdir(s->dir);
            exit(1);
        }
        usleep(10000);
    }
    return true;
}

/* On a free port (s->port 0) another process may take the port between
 * free_port() and redis-server's bind: then a new port is tried. */
static void server_start(server *s, const char *password)
{
    if (s->port) {
        server_try_start(s, password, false);
        return;
    }
    for (int attempt = 0; attempt < 3; attempt++) {
        s->port = free_port();
        s->dir[0] = '\0';
        if (server_try_start(s, password, attempt < 2)) return;
        rmdir(s->dir);
    }
}

static void server_stop(server *s, int sig)
{
    if (s->pid <= 0) return;
    kill(s->pid, sig);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
}

static void server_cleanup(server *s)
{
    server_stop(s, SIGKILL);
    unlink(s->unix_path);
    rmdir(s->dir);
}

static server shared;

static void shared_stop(void) { server_cleanup(&shared); }

/* One server for the tests that do not stop it. */
static server *shared_server(void)
{
    if (!shared.pid) {
        server_start(&shared, NULL);
        atexit(shared_stop);
    }
    return &shared;
}

/* ------------------------------------------------------------------ client */

static pt_redis_opts opts_tcp(int port)
{
    pt_redis_opts o = {.text = "127.0.0.1", .connect_timeout_ms = 1000, .command_timeout_ms = 2000,
                       .max_pending = 1000};
    struct sockaddr_in *a = (struct sockaddr_in *)&o.ss;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    o.sslen = sizeof *a;
    return o;
}

/* What one callback saw. */
typedef struct {
    int calls;
    pt_redis_error err;
    pt_redis_reply_type type;
    long long integer;
    long long elem0; /* an array's first element, when an integer */
    char str[256];
    size_t len;
    char detail[256];
} result;

static void on_result(void *data, const pt_redis_result *r)
{
    result *x = data;
    x->calls++;
    x->err = r->error;
    x->type = r->reply ? pt_redis_reply_kind(r->reply) : 0;
    x->integer = r->reply ? pt_redis_reply_integer(r->reply) : 0;
    x->len = 0;
    const pt_redis_reply *e0 = r->reply ? pt_redis_reply_elem(r->reply, 0) : NULL;
    x->elem0 = e0 ? pt_redis_reply_integer(e0) : -1;
    if (r->reply) {
        pt_str s = pt_redis_reply_str(r->reply);
        x->len = PT_MIN(s.n, sizeof x->str);
        if (x->len) memcpy(x->str, s.p, x->len);
    }
    snprintf(x->detail, sizeof x->detail, "%s", r->detail ? r->detail : "");
}

/* Runs the loop until *calls reaches `target` or `ms` of wall time passed. */
static bool run_until(pt_loop *loop, const int *calls, int target, int ms)
{
    uint64_t deadline = wall_ms() + (uint64_t)ms;
    while (*calls < target && wall_ms() < deadline) pt_loop_run_once(loop, 10);
    return *calls >= target;
}

static void run_for(pt_loop *loop, int ms)
{
    uint64_t deadline = wall_ms() + (uint64_t)ms;
    while (wall_ms() < deadline) pt_loop_run_once(loop, 10);
}

/* Sends argv (C strings) and waits for the result. */
static result cmd(pt_loop *loop, pt_redis_conn *c, int argc, const char *const *argv)
{
    result r = {0};
    pt_redis_error err = PT_REDIS_OK;
    if (!pt_redis_conn_command(c, argc, argv, NULL, on_result, &r, &err)) {
        r.err = err;
        r.calls = -1; /* failed at once */
        return r;
    }
    if (!run_until(loop, &r.calls, 1, 10000)) fprintf(stderr, "  no reply within 10 s to %s\n", argv[0]);
    return r;
}

#define CMD(loop, c, ...) cmd((loop), (c), PT_ARRAY_LEN(((const char *const[]){__VA_ARGS__})), \
                              (const char *const[]){__VA_ARGS__})

/* Retries PING until it answers (the connection recovered), at most `ms`. */
static bool ping_until_ok(pt_loop *loop, pt_redis_conn *c, int ms)
{
    uint64_t deadline = wall_ms() + (uint64_t)ms;
    while (wall_ms() < deadline) {
        result r = CMD(loop, c, "PING");
        if (r.calls == 1 && r.err == PT_REDIS_OK) return true;
        run_for(loop, 50);
    }
    return false;
}

/* ------------------------------------------------------------------- tests */

TEST(set_get_binary_round_trip)
{
    server *s = shared_server();
    pt_loop *loop = pt_loop_new();
    pt_redis_opts o = opts_tcp(s->port);
    pt_redis_conn *c = pt_redis_conn_new(loop, &o);
    static const char key[] = "bin\0key";
    static const char val[] = "a\0b\r\n$3\r\n*\xff\x00z";
    const char *argv[] = {"SET", key, val};
    size_t lens[] = {3, sizeof key - 1, sizeof val - 1};
    result r = {0};
    pt_redis_error err;
    CHECK(pt_redis_conn_command(c, 3, argv, lens, on_result, &r, &err) != NULL);
    CHECK_INT(r.calls, 0); /* never inside the starting call */
    CHECK(run_until(loop, &r.calls, 1, 5000));
    CHECK_INT(r.err, PT_REDIS_OK);
    CHECK_INT(r.type, PT_REDIS_REPLY_STATUS);
    CHECK_STRN(r.str, r.len, "OK");
    const char *gargv[] = {"GET", key};
    size_t glens[] = {3, sizeof key - 1};
    result g = {0};
    CHECK(pt_redis_conn_command(c, 2, gargv, glens, on_result, &g, &err) != NULL);
    CHECK(run_until(loop, &g.calls, 1, 5000));
    CHECK_INT(g.type, PT_REDIS_REPLY_STRING);
    CHECK_INT(g.len, sizeof val - 1);
    CHECK(memcmp(g.str, val, sizeof val - 1) == 0);
    /* a missing key is nil; an unknown command a server error */
    result nil = CMD(loop, c, "GET", "no-such-key");
    CHECK_INT(nil.err, PT_REDIS_OK);
    CHECK_INT(nil.type, PT_REDIS_REPLY_NIL);
    result bad = CMD(loop, c, "NOSUCHCOMMAND", "x");
    CHECK_INT(bad.err, PT_REDIS_ERR_SERVER);
    CHECK(strstr(bad.detail, "unknown command") != NULL);
    /* the same server over its unix socket */
    pt_redis_opts u = o;
    struct sockaddr_un *un = (struct sockaddr_un *)&u.ss;
    memset(&u.ss, 0, sizeof u.ss);
    un->sun_family = AF_UNIX;
    snprintf(un->sun_path, sizeof un->sun_path, "%s", s->unix_path);
    u.sslen = sizeof *un;
    pt_redis_conn *cu = pt_redis_conn_new(loop, &u);
    result ug = {0};
    CHECK(pt_redis_conn_command(cu, 2, gargv, glens, on_result, &ug, &err) != NULL);
    CHECK(run_until(loop, &ug.calls, 1, 5000));
    CHECK_INT(ug.len, sizeof val - 1);
    CHECK(memcmp(ug.str, val, sizeof val - 1) == 0);
    pt_redis_conn_free(cu, false);
    pt_redis_conn_free(c, false);
    pt_loop_free(loop);
}

/* Counts INCR replies and checks they come in order: the i-th is i. */
typedef struct {
    int calls, in_order, errors;
} incr_state;

static void on_incr(void *data, const pt_redis_result *r)
{
    incr_state *st = data;
    st->calls++;
    if (r->error != PT_REDIS_OK) st->errors++;
    else if (pt_redis_reply_integer(r->reply) == st->calls) st->in_order++;
}

TEST(ten_thousand_pipelined_incrs)
{
    server *s = shared_server();
    pt_loop *loop = pt_loop_new();
    pt_redis_opts o = opts_tcp(s->port);
    o.max_pending = 20000;
    o.command_timeout_ms = 30000;
    pt_redis_conn *c = pt_redis_conn_new(loop, &o);
    CHECK_INT(CMD(loop, c, "DEL", "counter").err, PT_REDIS_OK);
    incr_state st = {0};
    int started = 0;
    for (int i = 0; i < 10000; i++) {
        pt_redis_error err;
        if (pt_redis_conn_command(c, 2, (const char *const[]){"INCR", "counter"}, NULL, on_incr, &st, &err)) started++;
    }
    CHECK_INT(started, 10000);
    pt_redis_stats stats;
    pt_redis_conn_stats(c, &stats);
    CHECK_INT(stats.in_flight, 10000); /* all in flight at once: nothing waits for a reply to send */
    CHECK(run_until(loop, &st.calls, 10000, 30000));
    CHECK_INT(st.errors, 0);
    CHECK_INT(st.in_order, 10000);
    result g = CMD(loop, c, "GET", "counter");
    CHECK_STRN(g.str, g.len, "10000");
    pt_redis_conn_free(c, false);
    pt_loop_free(loop);
}

TEST(max_pending_fails_at_once)
{
    server *s = shared_server();
    pt_loop *loop = pt_loop_new();
    pt_redis_opts o = opts_tcp(s->port);
    o.max_pending = 3;
    pt_redis_conn *c = pt_redis_conn_new(loop, &o);
    result r[4] = {{0}};
    pt_redis_error err = PT_REDIS_OK;
    for (int i = 0; i < 3; i++) CHECK(pt_redis_conn_command(c, 1, (const char *const[]){"PING"}, NULL, on_result, &r[i], &err));
    CHECK(pt_redis_conn_command(c, 1, (const char *const[]){"PING"}, NULL, on_result, &r[3], &err) == NULL);
    CHECK_INT(err, PT_REDIS_ERR_BUSY);
    CHECK(run_until(loop, &r[2].calls, 1, 5000));
    CHECK_INT(r[0].calls + r[1].calls + r[2].calls, 3);
    CHECK_INT(r[3].calls, 0);
    /* room again once the replies came */
    CHECK_INT(CMD(loop, c, "PING").err, PT_REDIS_OK);
    /* bad arguments */
    CHECK(pt_redis_conn_command(c, 0, (const char *const[]){"PING"}, NULL, on_result, &r[3], &err) == NULL);
    CHECK_INT(err, PT_REDIS_ERR_INVALID);
    pt_redis_conn_free(c, false);
    pt_loop_free(loop);
}

TEST(auth_password_and_wrong_password)
{
    server s = {0};
    server_start(&s, "s3cret-pass");
    pt_loop *loop = pt_loop_new();
    pt_redis_opts o = opts_tcp(s.port);
    pt_redis_conn *none = pt_redis_conn_new(loop, &o);
    result r = CMD(loop, none, "PING");
    CHECK_INT(r.err, PT_REDIS_ERR_SERVER); /* NOAUTH */
    CHECK(strstr(r.detail, "NOAUTH") != NULL);
    o.password = "s3cret-pass";
    pt_redis_conn *good = pt_redis_conn_new(loop, &o);
    r = CMD(loop, good, "PING");
    CHECK_INT(r.err, PT_REDIS_OK);
    CHECK_STRN(r.str, r.len, "PONG");
    o.username = "default"; /* AUTH username password (Redis 6+ ACL form) */
    pt_redis_conn *named = pt_redis_conn_new(loop, &o);
    CHECK_INT(CMD(loop, named, "PING").err, PT_REDIS_OK);
    o.username = NULL;
    o.password = "wrong";
    pt_redis_conn *bad = pt_redis_conn_new(loop, &o);
    r = CMD(loop, bad, "PING");
    CHECK_INT(r.calls, 1); /* an answer, not a hang */
    CHECK_INT(r.err, PT_REDIS_ERR_DOWN);
    CHECK(strstr(r.detail, "WRONGPASS") != NULL || strstr(r.detail, "invalid") != NULL);
    pt_redis_stats st;
    pt_redis_conn_stats(bad, &st);
    CHECK(st.failures >= 1);
    CHECK(strstr(st.last_error, "AUTH") != NULL);
    pt_redis_conn_free(none, false);
    pt_redis_conn_free(good, false);
    pt_redis_conn_free(named, false);
    pt_redis_conn_free(bad, false);
    pt_loop_free(loop);
    server_cleanup(&s);
}

TEST(select_db)
{
    server *s = shared_server();
    pt_loop *loop = pt_loop_new();
    pt_redis_opts o = opts_tcp(s->port);
    o.db = 3;
    pt_redis_conn *c3 = pt_redis_conn_new(loop, &o);
    o.db = 0;
    pt_redis_conn *c0 = pt_redis_conn_new(loop, &o);
    CHECK_INT(CMD(loop, c0, "DEL", "dbkey").err, PT_REDIS_OK);
    CHECK_INT(CMD(loop, c3, "SET", "dbkey", "three").err, PT_REDIS_OK);
    result g3 = CMD(loop, c3, "GET", "dbkey");
    CHECK_STRN(g3.str, g3.len, "three");
    CHECK_INT(CMD(loop, c0, "GET", "dbkey").type, PT_REDIS_REPLY_NIL);
    result m = CMD(loop, c0, "MOVE", "dbkey", "0"); /* proves c3 really is db 3: nothing to move from 0 */
    CHECK_INT(m.integer, 0);
    pt_redis_conn_free(c0, false);
    pt_redis_conn_free(c3, false);
    pt_loop_free(loop);
}

TEST(evalsha_survives_script_flush)
{
    server *s = shared_server();
    pt_loop *loop = pt_loop_new();
    pt_redis_opts o = opts_tcp(s->port);
    pt_redis_conn *c = pt_redis_conn_new(loop, &o);
    static const char text[] = "return redis.call('INCRBY', KEYS[1], ARGV[1])";
    pt_redis_script sc;
    pt_redis_script_init(&sc, text, sizeof text - 1);
    CHECK_INT(strlen(sc.sha1), 40);
    CHECK_INT(CMD(loop, c, "DEL", "evk").err, PT_REDIS_OK);
    CHECK_INT(CMD(loop, c, "SCRIPT", "FLUSH").err, PT_REDIS_OK);
    const char *argv[] = {"evk", "5"};
    for (int round = 1; round <= 3; round++) {
        if (round == 3) CHECK_INT(CMD(loop, c, "SCRIPT", "FLUSH").err, PT_REDIS_OK); /* the cache is lost again */
        result known = CMD(loop, c, "SCRIPT", "EXISTS", sc.sha1);
        CHECK_INT(known.type, PT_REDIS_REPLY_ARRAY);
        CHECK_INT(known.elem0, round == 2 ? 1 : 0); /* rounds 1 and 3 meet NOSCRIPT */
        result r = {0};
        pt_redis_error err;
        CHECK(pt_redis_conn_eval(c, &sc, 1, 2, argv, NULL, on_result, &r, &err) != NULL);
        CHECK(run_until(loop, &r.calls, 1, 5000));
        CHECK_INT(r.calls, 1);
        CHECK_INT(r.err, PT_REDIS_OK);
        CHECK_INT(r.integer, 5 * round);
    }
    /* EVAL loaded it: the next EVALSHA finds it */
    result after = CMD(loop, c, "EVALSHA", sc.sha1, "1", "evk", "1");
    CHECK_INT(after.err, PT_REDIS_OK);
    CHECK_INT(after.integer, 16);
    /* a script error is the server's error, not a retry loop */
    static const char broken[] = "return redis.call('NOSUCH')";
    pt_redis_script sb;
    pt_redis_script_init(&sb, broken, sizeof broken - 1);
    result e = {0};
    pt_redis_error err;
    CHECK(pt_redis_conn_eval(c, &sb, 0, 0, NULL, NULL, on_result, &e, &err) != NULL);
    CHECK(run_until(loop, &e.calls, 1, 5000));
    CHECK_INT(e.calls, 1);
    CHECK_INT(e.err, PT_REDIS_ERR_SERVER);
    pt_redis_conn_free(c, false);
    pt_loop_free(loop);
}

TEST(command_timeout_then_recovery)
{
    server *s = shared_server();
    pt_loop *loop = pt_loop_new();
    pt_redis_opts o = opts_tcp(s->port);
    o.command_timeout_ms = 100;
    pt_redis_conn *c = pt_redis_conn_new(loop, &o);
    CHECK(ping_until_ok(loop, c, 5000));
    pt_redis_conn *other = pt_redis_conn_new(loop, &o);
    CHECK(ping_until_ok(loop, other, 5000));
    result r = CMD(loop, other, "DEBUG", "SLEEP", "1");
    CHECK_INT(r.calls, 1);
    CHECK_INT(r.err, PT_REDIS_ERR_TIMEOUT);
    result p = CMD(loop, c, "PING"); /* the server is asleep: this one times out too */
    CHECK_INT(p.err, PT_REDIS_ERR_TIMEOUT);
    /* the late replies are dropped; once the server wakes up, commands
     * succeed again (on the same connection or a new one) */
    CHECK(ping_until_ok(loop, c, 10000));
    CHECK(ping_until_ok(loop, other, 10000));
    pt_redis_conn_free(c, false);
    pt_redis_conn_free(other, false);
    pt_loop_free(loop);
}

TEST(server_that_never_answers_is_reset)
{
    /* a listening socket nobody reads: connects succeed, replies never come */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    CHECK(bind(lfd, (struct sockaddr *)&a, sizeof a) == 0 && listen(lfd, 16) == 0);
    getsockname(lfd, (struct sockaddr *)&a, &len);
    pt_loop *loop = pt_loop_new();
    pt_redis_opts o = opts_tcp(ntohs(a.sin_port));
    o.command_timeout_ms = 100;
    pt_redis_conn *c = pt_redis_conn_new(loop, &o);
    result r = CMD(loop, c, "PING");
    CHECK_INT(r.calls, 1);
    CHECK_INT(r.err, PT_REDIS_ERR_TIMEOUT);
    /* nothing read for another command_timeout: the connection is reset */
    pt_redis_stats st = {0};
    uint64_t deadline = wall_ms() + 5000;
    while (wall_ms() < deadline) {
        pt_redis_conn_stats(c, &st);
        if (st.failures > 0) break;
        pt_loop_run_once(loop, 10);
    }
    CHECK(st.failures >= 1);
    CHECK(strstr(st.last_error, "no reply") != NULL);
    CHECK_INT(st.in_flight, 0);
    pt_redis_conn_free(c, false);
    /* AUTH never answered: connect_timeout bounds the handshake too */
    o.password = "pw";
    o.connect_timeout_ms = 200;
    c = pt_redis_conn_new(loop, &o);
    deadline = wall_ms() + 5000;
    do {
        pt_loop_run_once(loop, 10);
        pt_redis_conn_stats(c, &st);
    } while (st.failures == 0 && wall_ms() < deadline);
    CHECK(strstr(st.last_error, "AUTH/SELECT timed out") != NULL);
    pt_redis_conn_free(c, false);
    pt_loop_free(loop);
    close(lfd);
}

TEST(server_killed_then_restarted)
{
    server s = {0};
    server_start(&s, NULL);
    pt_loop *loop = pt_loop_new();
    pt_redis_opts o = opts_tcp(s.port);
    o.command_timeout_ms = 30000; /* so a failure below cannot be a timeout */
    pt_redis_conn *c = pt_redis_conn_new(loop, &o);
    CHECK(ping_until_ok(loop, c, 5000));
    /* two commands the server holds: BLPOP on a list nobody fills */
    result b1 = {0}, b2 = {0};
    pt_redis_error err;
    CHECK(pt_redis_conn_command(c, 3, (const char *const[]){"BLPOP", "nothing", "0"}, NULL, on_result, &b1, &err));
    CHECK(pt_redis_conn_command(c, 3, (const char *const[]){"BLPOP", "nothing", "0"}, NULL, on_result, &b2, &err));
    run_for(loop, 100);
    CHECK_INT(b1.calls + b2.calls, 0);
    server_stop(&s, SIGKILL);
    CHECK(run_until(loop, &b2.calls, 1, 5000)); /* promptly: well before the 30 s timeout */
    CHECK_INT(b1.calls, 1);
    CHECK_INT(b1.err, PT_REDIS_ERR_DOWN);
    CHECK_INT(b2.err, PT_REDIS_ERR_DOWN);
    CHECK(b1.detail[0] != '\0');
    /* while down (waiting, or trying to reconnect), new commands fail at
     * once: no callback, no queue */
    for (int i = 0; i < 5; i++) {
        result r = CMD(loop, c, "PING");
        CHECK_INT(r.calls, -1);
        CHECK_INT(r.err, PT_REDIS_ERR_DOWN);
        run_for(loop, 30);
    }
    server_start(&s, NULL); /* same port */
    CHECK(ping_until_ok(loop, c, 15000));
    CHECK_INT(CMD(loop, c, "SET", "back", "1").err, PT_REDIS_OK);
    pt_redis_conn_free(c, false);
    pt_loop_free(loop);
    server_cleanup(&s);
}

/* A callback that cancels another call whose reply is in the same read. */
typedef struct {
    pt_redis_call *victim;
    int calls;
} canceller;

static void on_cancel_other(void *data, const pt_redis_result *r)
{
    canceller *k = data;
    PT_UNUSED(r);
    k->calls++;
    pt_redis_cancel(k->victim);
}

static void on_never(void *data, const pt_redis_result *r)
{
    PT_UNUSED(r);
    (*(int *)data)++;
}

TEST(cancelled_callbacks_never_run)
{
    server *s = shared_server();
    pt_loop *loop = pt_loop_new();
    pt_redis_opts o = opts_tcp(s->port);
    pt_redis_conn *c = pt_redis_conn_new(loop, &o);
    int never = 0;
    pt_redis_error err;
    /* cancelled while connecting, before anything was written */
    pt_redis_call *early = pt_redis_conn_command(c, 1, (const char *const[]){"PING"}, NULL, on_never, &never, &err);
    CHECK(early != NULL);
    pt_redis_cancel(early);
    CHECK(ping_until_ok(loop, c, 5000));
    /* cancelled after it was written: its reply arrives and is dropped */
    pt_redis_call *sent = pt_redis_conn_command(c, 1, (const char *const[]){"PING"}, NULL, on_never, &never, &err);
    pt_loop_run_once(loop, 0); /* the write */
    pt_redis_cancel(sent);
    /* cancelled from the callback of the command before it */
    canceller k = {0};
    CHECK(pt_redis_conn_command(c, 1, (const char *const[]){"PING"}, NULL, on_cancel_other, &k, &err));
    k.victim = pt_redis_conn_command(c, 1, (const char *const[]){"PING"}, NULL, on_never, &never, &err);
    CHECK(k.victim != NULL);
    /* a cancelled call held by the server, then the connection closes */
    pt_redis_call *held =
        pt_redis_conn_command(c, 3, (const char *const[]){"BLPOP", "nothing", "0"}, NULL, on_never, &never, &err);
    CHECK(held != NULL);
    CHECK(run_until(loop, &k.calls, 1, 5000));
    run_for(loop, 50);
    pt_redis_cancel(held);
    pt_redis_conn_free(c, true); /* no _CLOSED for the cancelled call */
    run_for(loop, 50);
    CHECK_INT(never, 0);
    pt_loop_free(loop);
}

TEST(nothing_listening_backs_off)
{
    int port = free_port(); /* closed again: nothing listens there */
    pt_loop *loop = pt_loop_new();
    pt_redis_opts o = opts_tcp(port);
    pt_redis_conn *c = pt_redis_conn_new(loop, &o);
    result r = {0};
    pt_redis_error err;
    /* refused at once by the kernel, or reported by the socket later */
    if (pt_redis_conn_command(c, 1, (const char *const[]){"PING"}, NULL, on_result, &r, &err)) {
        CHECK(run_until(loop, &r.calls, 1, 5000));
        CHECK_INT(r.err, PT_REDIS_ERR_DOWN);
        CHECK(strstr(r.detail, "refused") != NULL);
    } else {
        CHECK_INT(err, PT_REDIS_ERR_DOWN);
        r.calls = 1;
    }
    pt_redis_stats st;
    pt_redis_conn_stats(c, &st);
    CHECK(strstr(st.last_error, "refused") != NULL);
    /* in backoff: the next command fails at once */
    CHECK(pt_redis_conn_command(c, 1, (const char *const[]){"PING"}, NULL, on_result, &r, &err) == NULL);
    CHECK_INT(err, PT_REDIS_ERR_DOWN);
    /* 1.5 s: attempts after 100, 200, 400, 800 ms (with jitter: half to all
     * of each): a handful of attempts and loop events, not a busy loop */
    long events = 0;
    uint64_t deadline = wall_ms() + 1500;
    while (wall_ms() < deadline) events += pt_loop_run_once(loop, 50);
    pt_redis_conn_stats(c, &st);
    CHECK(st.connects >= 3);
    CHECK(st.connects <= 12);
    CHECK(events < 100);
    CHECK_INT(r.calls, 1);
    pt_redis_conn_free(c, false);
    pt_loop_free(loop);
}

/* ------------------------------------------------- config and the registry */

typedef struct {
    pt_arena *arena;
    pt_errors errors;
    const pt_redis_conf *conf;
} parsed;

static parsed parse_with_metrics(const char *yaml, pt_metrics *m)
{
    static pt_config cfg; /* what pt_conf_metric looks at: an admin listener */
    cfg.admin.enabled = true;
    parsed p = {.arena = pt_arena_new(4096)};
    pt_conf_ctx ctx = {.file = "test.yaml", .arena = p.arena, .errors = &p.errors, .cfg = m ? &cfg : NULL,
                       .metrics = m};
    const pt_conf_node *node = pt_conf_parse_yaml(&ctx, yaml, strlen(yaml));
    if (node) p.conf = pt_redis_conf_read(&ctx, node, "test.redis");
    return p;
}

static parsed parse(const char *yaml) { return parse_with_metrics(yaml, NULL); }

static void parsed_free(parsed *p)
{
    pt_errors_free(&p->errors);
    pt_arena_free(p->arena);
}

static void expect_conf_error(const char *yaml, const char *needle)
{
    parsed p = parse(yaml);
    CHECK(p.conf == NULL);
    bool found = false;
    for (size_t i = 0; i < p.errors.n; i++) found = found || strstr(p.errors.msgs[i], needle);
    if (!found) {
        fprintf(stderr, "  no error containing \"%s\" for: %s\n", needle, yaml);
        for (size_t i = 0; i < p.errors.n; i++) fprintf(stderr, "    %s\n", p.errors.msgs[i]);
    }
    CHECK(found);
    parsed_free(&p);
}

TEST(config_block_errors)
{
    setenv("PT_TEST_REDIS_PW", "pw-from-env", 1);
    expect_conf_error("address: localhost:6379\n", "test.yaml:1:10: test.redis: address 'localhost:6379'");
    expect_conf_error("address: 127.0.0.1\n", "is not an IP address with a port");
    expect_conf_error("address: 127.0.0.1:99999\n", "is not an IP address");
    expect_conf_error("address: unix:relative\n", "unix:/absolute/path");
    expect_conf_error("db: 1\n", "'address' is required");
    expect_conf_error("address: 127.0.0.1:6379\npassword: literal\n", "test.yaml:2:11: test.redis: 'password' must be written as ${ENV_NAME}");
    expect_conf_error("address: 127.0.0.1:6379\nusername: bob\n", "'username' needs a 'password'");
    expect_conf_error("address: 127.0.0.1:6379\ncommand_timeout: 0s\n", "'command_timeout' must be more than 0");
    expect_conf_error("address: 127.0.0.1:6379\nconnect_timeout: 2m\n", "at most 60s");
    expect_conf_error("address: 127.0.0.1:6379\ndb: -1\n", "test.yaml:2:5");
    expect_conf_error("address: 127.0.0.1:6379\nmax_pending: 0\n", "test.yaml:2:14");
    expect_conf_error("address: 127.0.0.1:6379\nhost: x\n", "host");
    expect_conf_error("- 127.0.0.1:6379\n", "expected a mapping");
    parsed ok = parse("address: '[::1]:6380'\nusername: app\npassword: ${PT_TEST_REDIS_PW}\ndb: 2\n"
                      "connect_timeout: 250ms\ncommand_timeout: 50ms\nmax_pending: 7\n");
    CHECK(ok.conf != NULL);
    CHECK_INT(ok.errors.n, 0);
    parsed_free(&ok);
}

/* The plugin calls over the registry: blocks naming the same server share a
 * connection per loop; references go with their configuration, and an
 * unreferenced connection lingers, then closes with _CLOSED for waiters. */
TEST(registry_shares_and_releases)
{
    server *s = shared_server();
    char yaml[128], yaml_db1[128];
    snprintf(yaml, sizeof yaml, "address: 127.0.0.1:%d\ncommand_timeout: 60s\n", s->port);
    snprintf(yaml_db1, sizeof yaml_db1, "address: 127.0.0.1:%d\ndb: 1\n", s->port);
    parsed gen1 = parse(yaml), gen1b = parse(yaml), gen2 = parse(yaml), other = parse(yaml_db1);
    CHECK(gen1.conf && gen1b.conf && gen2.conf && other.conf);
    pt_loop *loop = pt_loop_new();
    pt_redis_conn *c1 = pt_redis_worker_conn(loop, gen1.conf);
    CHECK(pt_redis_worker_conn(loop, gen1b.conf) == c1); /* same target, other block */
    CHECK(pt_redis_worker_conn(loop, other.conf) != c1); /* another db: another connection */
    result r = {0};
    pt_redis_error err;
    CHECK(pt_redis_command(loop, gen1.conf, 3, (const char *const[]){"SET", "reg", "1"}, NULL, on_result, &r, &err));
    CHECK(run_until(loop, &r.calls, 1, 5000));
    CHECK_INT(r.err, PT_REDIS_OK);
    if (r.err) fprintf(stderr, "  SET: %s\n", r.detail);
    /* a reload: the new configuration takes the connection over */
    CHECK(pt_redis_worker_conn(loop, gen2.conf) == c1);
    pt_redis_worker_release(loop, gen1.arena);
    pt_redis_worker_release(loop, gen1b.arena);
    CHECK(pt_redis_worker_conn(loop, gen2.conf) == c1);
    /* the last configuration goes: the connection lingers, then closes */
    result held = {0};
    CHECK(pt_redis_command(loop, gen2.conf, 3, (const char *const[]){"BLPOP", "nothing", "0"}, NULL, on_result,
                           &held, &err));
    run_for(loop, 50);
    pt_redis_worker_release(loop, gen2.arena);
    pt_redis_worker_release(loop, other.arena);
    run_for(loop, 20);
    CHECK_INT(held.calls, 0);
    pt_loop_advance_clock(loop, 31000);
    CHECK(run_until(loop, &held.calls, 1, 2000));
    CHECK_INT(held.err, PT_REDIS_ERR_CLOSED);
    /* a new configuration after that: a new connection that works */
    parsed gen3 = parse(yaml);
    result g = {0};
    CHECK(pt_redis_command(loop, gen3.conf, 2, (const char *const[]){"GET", "reg"}, NULL, on_result, &g, &err));
    CHECK(run_until(loop, &g.calls, 1, 5000));
    CHECK_STRN(g.str, g.len, "1");
    /* pt_redis_eval through the registry, with a configure-time script */
    pt_conf_ctx ctx = {.file = "test.yaml", .arena = gen3.arena, .errors = &gen3.errors};
    const pt_redis_script *sc = pt_conf_redis_script(&ctx, "return ARGV[1] .. KEYS[1]");
    result e = {0};
    CHECK(pt_redis_eval(loop, gen3.conf, sc, 1, 2, (const char *const[]){"k", "v"}, NULL, on_result, &e, &err));
    CHECK(run_until(loop, &e.calls, 1, 5000));
    CHECK_STRN(e.str, e.len, "vk");
    /* the worker stops with a call waiting: dropped, no callback, no leak */
    result dropped = {0};
    CHECK(pt_redis_command(loop, gen3.conf, 3, (const char *const[]){"BLPOP", "nothing", "0"}, NULL, on_result,
                           &dropped, &err));
    pt_redis_worker_fini(loop);
    run_for(loop, 20);
    CHECK_INT(dropped.calls, 0);
    pt_loop_free(loop);
    parsed_free(&gen1);
    parsed_free(&gen1b);
    parsed_free(&gen2);
    parsed_free(&gen3);
    parsed_free(&other);
}

/* Calls bound to a request's arena (pt_txn_redis_*): a call still waiting
 * when the arena goes is cancelled; a finished one leaves nothing behind. */
TEST(arena_bound_calls_cancelled_with_the_request)
{
    server *s = shared_server();
    char yaml[128];
    snprintf(yaml, sizeof yaml, "address: 127.0.0.1:%d\ncommand_timeout: 60s\n", s->port);
    parsed p = parse(yaml);
    CHECK(p.conf != NULL);
    pt_loop *loop = pt_loop_new();
    pt_redis_error err;
    /* finished before the request ends */
    pt_arena *req1 = pt_arena_new(1024);
    result r = {0};
    CHECK(pt_redis_arena_command(loop, req1, p.conf, 1, (const char *const[]){"PING"}, NULL, on_result, &r, &err));
    CHECK(run_until(loop, &r.calls, 1, 5000));
    CHECK_INT(r.err, PT_REDIS_OK);
    pt_arena_free(req1);
    /* still waiting when the request ends */
    pt_arena *req2 = pt_arena_new(1024);
    int never = 0;
    CHECK(pt_redis_arena_command(loop, req2, p.conf, 3, (const char *const[]){"BLPOP", "nothing", "0"}, NULL,
                                 on_never, &never, &err));
    pt_redis_script sc;
    pt_redis_script_init(&sc, "return 1", 8);
    CHECK(pt_redis_arena_eval(loop, req2, p.conf, &sc, 0, 0, NULL, NULL, on_never, &never, &err));
    run_for(loop, 50);
    pt_arena_free(req2);
    result behind = {0}; /* the BLPOP was still held: a PING waits behind it */
    CHECK(pt_redis_command(loop, p.conf, 1, (const char *const[]){"PING"}, NULL, on_result, &behind, &err));
    run_for(loop, 100);
    CHECK_INT(behind.calls, 0);
    pt_redis_worker_fini(loop); /* drops the waiting PING silently */
    run_for(loop, 20);
    CHECK_INT(never, 0);
    /* no callback: invalid */
    pt_arena *req3 = pt_arena_new(1024);
    CHECK(!pt_redis_arena_command(loop, req3, p.conf, 1, (const char *const[]){"PING"}, NULL, NULL, NULL, &err));
    CHECK_INT(err, PT_REDIS_ERR_INVALID);
    pt_arena_free(req3);
    pt_redis_worker_fini(loop);
    pt_loop_free(loop);
    parsed_free(&p);
}

/* The value of `series` in the exposition, -1 when absent. */
static long long metric_value(pt_metrics *m, const char *series)
{
    size_t len;
    char *text = pt_metrics_expose(m, &len);
    char key[256];
    snprintf(key, sizeof key, "\n%s ", series);
    const char *at = strstr(text, key);
    long long v = at ? strtoll(at + strlen(key), NULL, 10) : -1;
    if (!at) fprintf(stderr, "  no series %s in:\n%s", series, text);
    free(text);
    return v;
}

static bool metric_is(pt_metrics *m, const char *series, long long value)
{
    long long v = metric_value(m, series);
    if (v != value) fprintf(stderr, "  %s is %lld, expected %lld\n", series, v, value);
    return v == value;
}

TEST(metrics_count_outcomes_and_readiness)
{
    server *s = shared_server();
    pt_metrics *m = pt_metrics_new();
    char yaml[128], label[160];
    snprintf(yaml, sizeof yaml, "address: 127.0.0.1:%d\n", s->port);
    parsed p = parse_with_metrics(yaml, m);
    CHECK(p.conf != NULL);
    pt_loop *loop = pt_loop_new();
    pt_redis_error err;
    result r[3] = {{0}};
    CHECK(pt_redis_command(loop, p.conf, 1, (const char *const[]){"PING"}, NULL, on_result, &r[0], &err));
    CHECK(pt_redis_command(loop, p.conf, 1, (const char *const[]){"PING"}, NULL, on_result, &r[1], &err));
    CHECK(pt_redis_command(loop, p.conf, 1, (const char *const[]){"NOSUCHCOMMAND"}, NULL, on_result, &r[2], &err));
    CHECK(run_until(loop, &r[2].calls, 1, 5000));
    snprintf(label, sizeof label, "portico_redis_commands_total{redis=\"127.0.0.1:%d\",result=\"ok\"}", s->port);
    CHECK(metric_is(m, label, 2));
    snprintf(label, sizeof label, "portico_redis_commands_total{redis=\"127.0.0.1:%d\",result=\"server_error\"}",
             s->port);
    CHECK(metric_is(m, label, 1));
    snprintf(label, sizeof label, "portico_redis_connections_ready{redis=\"127.0.0.1:%d\"}", s->port);
    CHECK(metric_is(m, label, 1));
    /* the configuration goes: this worker's connection no longer counts */
    pt_redis_worker_release(loop, p.arena);
    CHECK(metric_is(m, label, 0));
    /* nothing listening: failures and commands refused at once */
    int port = free_port();
    snprintf(yaml, sizeof yaml, "address: 127.0.0.1:%d\n", port);
    parsed q = parse_with_metrics(yaml, m);
    result d = {0};
    if (pt_redis_command(loop, q.conf, 1, (const char *const[]){"PING"}, NULL, on_result, &d, &err))
        CHECK(run_until(loop, &d.calls, 1, 5000));
    CHECK(pt_redis_command(loop, q.conf, 1, (const char *const[]){"PING"}, NULL, on_result, &d, &err) == NULL);
    snprintf(label, sizeof label, "portico_redis_commands_total{redis=\"127.0.0.1:%d\",result=\"down\"}", port);
    CHECK(metric_is(m, label, 2));
    snprintf(label, sizeof label, "portico_redis_connection_failures_total{redis=\"127.0.0.1:%d\"}", port);
    CHECK(metric_value(m, label) >= 1);
    pt_redis_worker_fini(loop);
    pt_loop_free(loop);
    parsed_free(&p);
    parsed_free(&q);
    pt_metrics_free(m);
}

/* A reload that changes only command_timeout keeps the connection and
 * applies the new timeout. */
TEST(reload_with_new_timeouts_keeps_the_connection)
{
    server *s = shared_server();
    char slow[128], fast[128];
    snprintf(slow, sizeof slow, "address: 127.0.0.1:%d\ncommand_timeout: 60s\n", s->port);
    snprintf(fast, sizeof fast, "address: 127.0.0.1:%d\ncommand_timeout: 100ms\n", s->port);
    parsed a = parse(slow), b = parse(fast);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", s->port);
    CHECK_STR(pt_redis_conf_address(a.conf), addr);
    pt_loop *loop = pt_loop_new();
    pt_redis_error err;
    pt_redis_conn *c = pt_redis_worker_conn(loop, a.conf);
    result held = {0};
    CHECK(pt_redis_command(loop, a.conf, 3, (const char *const[]){"BLPOP", "nothing", "0"}, NULL, on_result, &held,
                           &err));
    run_for(loop, 300);
    CHECK_INT(held.calls, 0); /* 60 s */
    CHECK(pt_redis_worker_conn(loop, b.conf) == c);
    pt_redis_worker_release(loop, a.arena);
    result quick = {0};
    CHECK(pt_redis_command(loop, b.conf, 3, (const char *const[]){"BLPOP", "nothing", "0"}, NULL, on_result, &quick,
                           &err));
    CHECK(run_until(loop, &quick.calls, 1, 5000));
    CHECK_INT(quick.err, PT_REDIS_ERR_TIMEOUT);
    CHECK_INT(held.calls, 0); /* sent before: keeps its own deadline */
    pt_redis_worker_fini(loop);
    pt_loop_free(loop);
    parsed_free(&a);
    parsed_free(&b);
}

TEST_MAIN()
