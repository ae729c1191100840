/* ba_pool.c — the hashing threads of basic_auth (see ba_pool.h). */
#include "plugins/basic_auth/ba_pool.h"

#include <crypt.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#define BA_THREADS 2

typedef struct ba_job {
    struct ba_job *next;      /* pool queue */
    struct ba_job *cnext, *cprev; /* client's list */
    ba_pool_client *client;
    char *password;
    size_t password_n;
    char *hash;
    ba_done_fn done;
    void *data;
    bool ok;
    bool started;
} ba_job;

struct ba_pool_client {
    struct pt_loop *loop;
    ba_job *jobs;             /* submitted, completion not run yet */
    unsigned pending;
    unsigned running;         /* being hashed right now (under pool.lock) */
    bool closing;
};

static struct {
    pthread_once_t once;
    pthread_mutex_t lock;
    pthread_cond_t work, idle;
    ba_job *head, *tail;
} pool = {.once = PTHREAD_ONCE_INIT, .lock = PTHREAD_MUTEX_INITIALIZER,
          .work = PTHREAD_COND_INITIALIZER, .idle = PTHREAD_COND_INITIALIZER};

static void unlink_job(ba_job *j)
{
    ba_pool_client *c = j->client;
    if (j->cprev) j->cprev->cnext = j->cnext;
    else c->jobs = j->cnext;
    if (j->cnext) j->cnext->cprev = j->cprev;
}

static void job_free(ba_job *j)
{
    explicit_bzero(j->password, j->password_n);
    free(j->password);
    free(j->hash);
    free(j);
}

/* On the client's loop: the job's result. */
static void job_done(struct pt_loop *loop, void *data)
{
    ba_job *j = data;
    ba_pool_client *c = j->client;
    unlink_job(j);
    c->pending--;
    ba_done_fn done = j->done;
    void *d = j->data;
    bool ok = j->ok;
    job_free(j);
    done(d, ok ? 1 : 0);
}

/* A hashing thread: one job at a time, for the life of the process. */
static void *worker_main(void *arg)
{
    struct crypt_data *cd = calloc(1, sizeof(*cd));
    PT_ASSERT(cd);
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        while (!pool.head) pthread_cond_wait(&pool.work, &pool.lock);
        ba_job *j = pool.head;
        pool.head = j->next;
        if (!pool.head) pool.tail = NULL;
        ba_pool_client *c = j->client;
        if (c->closing) continue; /* freed by ba_pool_client_free */
        c->running++;
        j->started = true;
        pthread_mutex_unlock(&pool.lock);
        const char *out = crypt_r(j->password, j->hash, cd);
        size_t hn = strlen(j->hash);
        j->ok = out && out[0] != '*' && strlen(out) == hn && CRYPTO_memcmp(out, j->hash, hn) == 0;
        explicit_bzero(cd, sizeof(*cd));
        pthread_mutex_lock(&pool.lock);
        if (!c->closing) pt_loop_post(c->loop, job_done, j);
        c->running--;
        pthread_cond_broadcast(&pool.idle);
    }
    return NULL;
}

static void pool_start(void)
{
    for (int i = 0; i < BA_THREADS; i++) {
        pthread_t th;
        if (pthread_create(&th, NULL, worker_main, NULL) == 0) pthread_detach(th);
    }
}

ba_pool_client *ba_pool_client_new(struct pt_loop *loop)
{
    pthread_once(&pool.once, pool_start);
    ba_pool_client *c = pt_xcalloc(1, sizeof(*c));
    c->loop = loop;
    return c;
}

unsigned ba_pool_pending(const ba_pool_client *c) { return c->pending; }

void ba_pool_verify(ba_pool_client *c, pt_str password, const char *hash, ba_done_fn done, void *data)
{
    ba_job *j = pt_xcalloc(1, sizeof(*j));
    j->client = c;
    j->password = pt_xstrndup(password.p ? password.p : "", password.n);
    j->password_n = password.n;
    j->hash = pt_xstrndup(hash, strlen(hash));
    j->done = done;
    j->data = data;
    j->cnext = c->jobs;
    if (c->jobs) c->jobs->cprev = j;
    c->jobs = j;
    c->pending++;
    pthread_mutex_lock(&pool.lock);
    if (pool.tail) pool.tail->next = j;
    else pool.head = j;
    pool.tail = j;
    pthread_cond_signal(&pool.work);
    pthread_mutex_unlock(&pool.lock);
}

void ba_pool_client_free(ba_pool_client *c)
{
    if (!c) return;
    pthread_mutex_lock(&pool.lock);
    c->closing = true;
    /* drop its queued jobs from the pool queue */
    ba_job **pp = &pool.head;
    pool.tail = NULL;
    while (*pp) {
        if ((*pp)->client == c) *pp = (*pp)->next;
        else {
            pool.tail = *pp;
            pp = &(*pp)->next;
        }
    }
    while (c->running) pthread_cond_wait(&pool.idle, &pool.lock);
    pthread_mutex_unlock(&pool.lock);
    /* every job left is queued-and-dropped or posted-and-never-run */
    while (c->jobs) {
        ba_job *j = c->jobs;
        unlink_job(j);
        ba_done_fn done = j->done;
        void *d = j->data;
        job_free(j);
        done(d, -1);
    }
    free(c);
}
