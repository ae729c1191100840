/* metrics.c — see metrics.h.
 *
 * Storage. A registry numbers cells 0..ncells; every shard maps a cell
 * number to its own uint64 through a fixed table of 1024-cell chunks
 * (chunks are allocated for every shard when cells are handed out, under
 * the registry mutex, and never move or shrink, so a worker can index them
 * without a lock). A series owns cells [base, base + cells_per_series).
 * Cells of a removed series are zeroed and kept on the family's free list
 * for its next series of the same shape. */
#include "obs/metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#define CHUNK_BITS 10u
#define CHUNK_CELLS (1u << CHUNK_BITS)
#define MAX_CHUNKS 4096u /* 4 Mi cells per registry (32 MiB per shard at most) */
#define MAX_DIM_VALUES 64u
#define KEY_SEP '\xff' /* never in UTF-8 */

typedef _Atomic uint64_t cell_t;

struct pt_metrics_shard {
    pt_metrics *reg;
    pt_metrics_shard *next;
    _Atomic(cell_t *) chunks[MAX_CHUNKS];
};

struct pt_metric_series {
    pt_metric_family *fam;
    uint32_t base;
    atomic_uint refs;
    bool permanent;
    char *key; /* label values joined by KEY_SEP */
    size_t keylen;
    uint64_t hash;
    char **values; /* [fam->nlabels] */
    pt_metric_series *prev, *next, *hnext;
};

struct pt_metric_family {
    pt_metrics *reg;
    pt_metric_desc d;
    size_t nlabels;
    size_t dim_size[PT_METRIC_MAX_LABELS];
    size_t ncombos;          /* product of the dim sizes */
    size_t cells_per_combo;  /* 1, or nbuckets + 2 (buckets, +Inf, sum) */
    size_t cells_per_series;
    size_t max_series, nseries;
    pt_metric_series *head, *tail;
    pt_metric_series **hash;
    size_t hcap;
    uint32_t *free_bases;
    size_t nfree, free_cap;
    pt_metric_family *next;
};

struct pt_metrics {
    pthread_mutex_t lock;
    pt_metrics_shard *shards; /* the control shard first */
    pt_metrics_shard *control;
    uint32_t ncells;          /* cells handed out (high-water mark) */
    uint32_t nchunks;         /* chunks allocated in every shard */
    pt_metric_family *fams, *fams_tail;
    atomic_uint garbage;      /* series whose last reference went away since the last sweep */
};

static _Thread_local pt_metrics_shard *tl_shard;

/* ------------------------------------------------------------------ shards */

static cell_t *chunk_new(void) { return pt_xcalloc(CHUNK_CELLS, sizeof(cell_t)); }

static pt_metrics_shard *shard_alloc(pt_metrics *m)
{
    pt_metrics_shard *s = pt_xcalloc(1, sizeof(*s));
    s->reg = m;
    for (uint32_t c = 0; c < m->nchunks; c++) atomic_store_explicit(&s->chunks[c], chunk_new(), memory_order_release);
    return s;
}

pt_metrics *pt_metrics_new(void)
{
    pt_metrics *m = pt_xcalloc(1, sizeof(*m));
    pthread_mutex_init(&m->lock, NULL);
    m->control = m->shards = shard_alloc(m);
    return m;
}

pt_metrics_shard *pt_metrics_shard_new(pt_metrics *m)
{
    pthread_mutex_lock(&m->lock);
    pt_metrics_shard *s = shard_alloc(m);
    pt_metrics_shard **pp = &m->shards;
    while (*pp) pp = &(*pp)->next;
    *pp = s;
    pthread_mutex_unlock(&m->lock);
    return s;
}

void pt_metrics_thread_attach(pt_metrics_shard *s) { tl_shard = s; }

static inline cell_t *cell_at(const pt_metrics_shard *s, uint32_t idx)
{
    cell_t *chunk = atomic_load_explicit(&s->chunks[idx >> CHUNK_BITS], memory_order_acquire);
    return &chunk[idx & (CHUNK_CELLS - 1)];
}

/* Hands out n consecutive cells; false when the registry is full. Locked. */
static bool cells_alloc(pt_metrics *m, size_t n, uint32_t *base)
{
    if (n > (size_t)MAX_CHUNKS * CHUNK_CELLS - m->ncells) return false;
    *base = m->ncells;
    m->ncells += (uint32_t)n;
    uint32_t need = (m->ncells + CHUNK_CELLS - 1) >> CHUNK_BITS;
    for (; m->nchunks < need; m->nchunks++)
        for (pt_metrics_shard *s = m->shards; s; s = s->next)
            atomic_store_explicit(&s->chunks[m->nchunks], chunk_new(), memory_order_release);
    return true;
}

static uint64_t cell_sum(const pt_metrics *m, uint32_t idx)
{
    uint64_t v = 0;
    for (const pt_metrics_shard *s = m->shards; s; s = s->next)
        v += atomic_load_explicit(cell_at(s, idx), memory_order_relaxed);
    return v;
}

/* ------------------------------------------------------------------ writes */

static inline void cell_add(pt_metrics *m, uint32_t idx, uint64_t d)
{
    pt_metrics_shard *s = tl_shard;
    if (s && s->reg == m) {
        /* single writer: a plain load + store, no bus lock */
        cell_t *c = cell_at(s, idx);
        atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + d, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(cell_at(m->control, idx), d, memory_order_relaxed);
    }
}

void pt_metric_add(pt_metric_series *s, size_t cell, int64_t delta)
{
    if (!s) return;
    const pt_metric_family *f = s->fam;
    PT_ASSERT(cell < f->ncombos && f->d.type != PT_METRIC_HISTOGRAM);
    cell_add(f->reg, s->base + (uint32_t)cell, (uint64_t)delta);
}

void pt_metric_set(pt_metric_series *s, size_t cell, int64_t value)
{
    if (!s) return;
    const pt_metric_family *f = s->fam;
    PT_ASSERT(cell < f->ncombos && f->d.type == PT_METRIC_GAUGE);
    atomic_store_explicit(cell_at(f->reg->control, s->base + (uint32_t)cell), (uint64_t)value, memory_order_relaxed);
}

size_t pt_metric_bucket(const uint64_t *bounds, size_t nbounds, uint64_t value)
{
    size_t i = 0;
    while (i < nbounds && value > bounds[i]) i++;
    return i;
}

void pt_metric_observe(pt_metric_series *s, size_t cell, uint64_t value)
{
    if (!s) return;
    const pt_metric_family *f = s->fam;
    PT_ASSERT(cell < f->ncombos && f->d.type == PT_METRIC_HISTOGRAM);
    uint32_t base = s->base + (uint32_t)(cell * f->cells_per_combo);
    cell_add(f->reg, base + (uint32_t)pt_metric_bucket(f->d.buckets, f->d.nbuckets, value), 1);
    cell_add(f->reg, base + (uint32_t)f->d.nbuckets + 1, value);
}

/* ---------------------------------------------------------------- families */

static bool valid_name(const char *s, bool colon)
{
    if (!s || !*s) return false;
    for (size_t i = 0; s[i]; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':') ||
                  (i > 0 && c >= '0' && c <= '9');
        if (!ok) return false;
    }
    return true;
}

static size_t count_strs(const char *const *v)
{
    size_t n = 0;
    while (v && v[n]) n++;
    return n;
}

static bool strs_eq(const char *const *a, const char *const *b)
{
    size_t n = count_strs(a);
    if (n != count_strs(b)) return false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(a[i], b[i]) != 0) return false;
    return true;
}

static bool desc_eq(const pt_metric_desc *a, const pt_metric_desc *b)
{
    if (a->type != b->type || a->ndims != b->ndims || a->nbuckets != b->nbuckets ||
        a->unit_decimals != b->unit_decimals || !strs_eq(a->labels, b->labels))
        return false;
    for (size_t i = 0; i < a->ndims; i++)
        if (strcmp(a->dims[i].name, b->dims[i].name) != 0 || !strs_eq(a->dims[i].values, b->dims[i].values))
            return false;
    for (size_t i = 0; i < a->nbuckets; i++)
        if (a->buckets[i] != b->buckets[i]) return false;
    return true;
}

static bool fail(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail(char *err, size_t cap, const char *fmt, ...)
{
    if (err && cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, cap, fmt, ap);
        va_end(ap);
    }
    return false;
}

static bool desc_check(const pt_metric_desc *d, char *err, size_t cap)
{
    if (!valid_name(d->name, true)) return fail(err, cap, "invalid metric name '%s'", d->name ? d->name : "");
    if (!d->help || strchr(d->help, '\n')) return fail(err, cap, "%s: help must be one line of text", d->name);
    if (d->type > PT_METRIC_HISTOGRAM) return fail(err, cap, "%s: unknown type", d->name);
    size_t nl = count_strs(d->labels);
    if (nl + d->ndims > PT_METRIC_MAX_LABELS) return fail(err, cap, "%s: too many labels", d->name);
    const char *names[PT_METRIC_MAX_LABELS];
    for (size_t i = 0; i < nl + d->ndims; i++) {
        const char *l = i < nl ? d->labels[i] : d->dims[i - nl].name;
        if (!valid_name(l, false) || (l[0] == '_' && l[1] == '_'))
            return fail(err, cap, "%s: invalid label name '%s'", d->name, l ? l : "");
        if (d->type == PT_METRIC_HISTOGRAM && strcmp(l, "le") == 0)
            return fail(err, cap, "%s: a histogram cannot have a label 'le'", d->name);
        for (size_t j = 0; j < i; j++)
            if (strcmp(names[j], l) == 0) return fail(err, cap, "%s: label '%s' appears twice", d->name, l);
        names[i] = l;
    }
    for (size_t i = 0; i < d->ndims; i++) {
        size_t nv = count_strs(d->dims[i].values);
        if (nv == 0 || nv > MAX_DIM_VALUES)
            return fail(err, cap, "%s: label '%s' needs 1..%u values", d->name, d->dims[i].name, MAX_DIM_VALUES);
    }
    if (d->type == PT_METRIC_HISTOGRAM) {
        if (d->nbuckets < 1 || d->nbuckets > PT_METRIC_MAX_BUCKETS || !d->buckets)
            return fail(err, cap, "%s: a histogram needs 1..%d buckets", d->name, PT_METRIC_MAX_BUCKETS);
        for (size_t i = 1; i < d->nbuckets; i++)
            if (d->buckets[i] <= d->buckets[i - 1])
                return fail(err, cap, "%s: bucket bounds must be strictly increasing", d->name);
    } else if (d->nbuckets) {
        return fail(err, cap, "%s: only histograms have buckets", d->name);
    }
    if (d->unit_decimals > 9) return fail(err, cap, "%s: unit_decimals must be 0..9", d->name);
    return true;
}

pt_metric_family *pt_metrics_family(pt_metrics *m, const pt_metric_desc *d, char *err, size_t errcap)
{
    if (!m) {
        fail(err, errcap, "no metrics registry");
        return NULL;
    }
    if (!desc_check(d, err, errcap)) return NULL;
    pthread_mutex_lock(&m->lock);
    pt_metric_family *f;
    for (f = m->fams; f; f = f->next)
        if (strcmp(f->d.name, d->name) == 0) break;
    if (f) {
        if (!desc_eq(&f->d, d)) {
            fail(err, errcap, "metric '%s' is already registered with another type, labels or buckets", d->name);
            f = NULL;
        }
        pthread_mutex_unlock(&m->lock);
        return f;
    }
    f = pt_xcalloc(1, sizeof(*f));
    f->reg = m;
    f->d = *d;
    f->nlabels = count_strs(d->labels);
    f->ncombos = 1;
    for (size_t i = 0; i < d->ndims; i++) {
        f->dim_size[i] = count_strs(d->dims[i].values);
        f->ncombos *= f->dim_size[i];
    }
    f->cells_per_combo = d->type == PT_METRIC_HISTOGRAM ? d->nbuckets + 2 : 1;
    f->cells_per_series = f->ncombos * f->cells_per_combo;
    f->max_series = d->max_series ? d->max_series : PT_METRIC_DEFAULT_MAX_SERIES;
    f->hcap = 64;
    f->hash = pt_xcalloc(f->hcap, sizeof(*f->hash));
    if (m->fams_tail) m->fams_tail->next = f;
    else m->fams = f;
    m->fams_tail = f;
    pthread_mutex_unlock(&m->lock);
    return f;
}

int pt_metric_dim_index(const pt_metric_family *f, size_t dim, const char *value)
{
    if (!f || dim >= f->d.ndims) return -1;
    for (size_t i = 0; i < f->dim_size[dim]; i++)
        if (strcmp(f->d.dims[dim].values[i], value) == 0) return (int)i;
    return -1;
}

/* ------------------------------------------------------------------ series */

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h;
}

static void hash_grow(pt_metric_family *f)
{
    size_t cap = f->hcap * 2;
    pt_metric_series **h = pt_xcalloc(cap, sizeof(*h));
    for (size_t i = 0; i < f->hcap; i++) {
        pt_metric_series *s = f->hash[i];
        while (s) {
            pt_metric_series *n = s->hnext;
            s->hnext = h[s->hash & (cap - 1)];
            h[s->hash & (cap - 1)] = s;
            s = n;
        }
    }
    free(f->hash);
    f->hash = h;
    f->hcap = cap;
}

static void series_remove(pt_metric_family *f, pt_metric_series *s)
{
    pt_metrics *m = f->reg;
    pt_metric_series **pp = &f->hash[s->hash & (f->hcap - 1)];
    while (*pp != s) pp = &(*pp)->hnext;
    *pp = s->hnext;
    if (s->prev) s->prev->next = s->next;
    else f->head = s->next;
    if (s->next) s->next->prev = s->prev;
    else f->tail = s->prev;
    for (pt_metrics_shard *sh = m->shards; sh; sh = sh->next)
        for (size_t i = 0; i < f->cells_per_series; i++)
            atomic_store_explicit(cell_at(sh, s->base + (uint32_t)i), 0, memory_order_relaxed);
    if (f->nfree == f->free_cap) {
        f->free_cap = f->free_cap ? f->free_cap * 2 : 16;
        f->free_bases = pt_xrealloc(f->free_bases, f->free_cap * sizeof(*f->free_bases));
    }
    f->free_bases[f->nfree++] = s->base;
    f->nseries--;
    for (size_t i = 0; i < f->nlabels; i++) free(s->values[i]);
    free(s->values);
    free(s->key);
    free(s);
}

/* Drops the series nobody holds any more. Locked. */
static void sweep(pt_metrics *m)
{
    if (atomic_exchange_explicit(&m->garbage, 0, memory_order_acq_rel) == 0) return;
    for (pt_metric_family *f = m->fams; f; f = f->next) {
        pt_metric_series *s = f->head;
        while (s) {
            pt_metric_series *n = s->next;
            if (!s->permanent && atomic_load_explicit(&s->refs, memory_order_acquire) == 0) series_remove(f, s);
            s = n;
        }
    }
}

/* Arena cleanup of an owner: drop its reference. Runs on whichever thread
 * frees the owner (a worker freeing an old generation): no lock. The
 * release order publishes that owner's last writes to the sweeper. */
static void series_release(void *data)
{
    pt_metric_series *s = data;
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
        atomic_fetch_add_explicit(&s->fam->reg->garbage, 1, memory_order_release);
}

pt_metric_series *pt_metrics_series(pt_metric_family *f, const char *const *values, pt_arena *owner)
{
    if (!f) return NULL;
    pt_metrics *m = f->reg;
    size_t keylen = 0;
    for (size_t i = 0; i < f->nlabels; i++) keylen += strlen(values[i]) + 1;
    char *key = pt_xmalloc(keylen + 1);
    size_t k = 0;
    for (size_t i = 0; i < f->nlabels; i++) {
        size_t n = strlen(values[i]);
        memcpy(key + k, values[i], n);
        k += n;
        key[k++] = KEY_SEP;
    }
    key[k] = '\0';
    uint64_t h = hash_bytes(key, keylen);

    pthread_mutex_lock(&m->lock);
    sweep(m);
    pt_metric_series *s = f->hash[h & (f->hcap - 1)];
    while (s && !(s->hash == h && s->keylen == keylen && memcmp(s->key, key, keylen) == 0)) s = s->hnext;
    if (s) {
        free(key);
    } else {
        uint32_t base;
        if (f->nseries >= f->max_series) goto full;
        if (f->nfree) base = f->free_bases[--f->nfree];
        else if (!cells_alloc(m, f->cells_per_series, &base)) goto full;
        s = pt_xcalloc(1, sizeof(*s));
        s->fam = f;
        s->base = base;
        s->key = key;
        s->keylen = keylen;
        s->hash = h;
        s->values = pt_xcalloc(f->nlabels ? f->nlabels : 1, sizeof(char *));
        for (size_t i = 0; i < f->nlabels; i++) s->values[i] = pt_xstrndup(values[i], strlen(values[i]));
        atomic_init(&s->refs, 0);
        s->prev = f->tail;
        if (f->tail) f->tail->next = s;
        else f->head = s;
        f->tail = s;
        s->hnext = f->hash[h & (f->hcap - 1)];
        f->hash[h & (f->hcap - 1)] = s;
        if (++f->nseries > f->hcap) hash_grow(f);
    }
    if (owner) atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    else s->permanent = true;
    pthread_mutex_unlock(&m->lock);
    if (owner) pt_arena_on_cleanup(owner, series_release, s);
    return s;
full:
    pthread_mutex_unlock(&m->lock);
    free(key);
    return NULL;
}

void pt_metrics_free(pt_metrics *m)
{
    if (!m) return;
    pt_metric_family *f = m->fams;
    while (f) {
        pt_metric_family *nf = f->next;
        pt_metric_series *s = f->head;
        while (s) {
            pt_metric_series *n = s->next;
            for (size_t i = 0; i < f->nlabels; i++) free(s->values[i]);
            free(s->values);
            free(s->key);
            free(s);
            s = n;
        }
        free(f->hash);
        free(f->free_bases);
        free(f);
        f = nf;
    }
    pt_metrics_shard *s = m->shards;
    while (s) {
        pt_metrics_shard *n = s->next;
        for (uint32_t c = 0; c < m->nchunks; c++) free(atomic_load_explicit(&s->chunks[c], memory_order_relaxed));
        free(s);
        s = n;
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* --------------------------------------------------------------- exposition */

typedef struct {
    char *p;
    size_t len, cap;
} out_buf;

static void out_reserve(out_buf *o, size_t n)
{
    if (o->len + n <= o->cap) return;
    size_t cap = o->cap ? o->cap : 4096;
    while (cap < o->len + n) cap *= 2;
    o->p = pt_xrealloc(o->p, cap);
    o->cap = cap;
}

static void out_mem(out_buf *o, const char *s, size_t n)
{
    out_reserve(o, n);
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void out_str(out_buf *o, const char *s) { out_mem(o, s, strlen(s)); }

static void out_char(out_buf *o, char c) { out_mem(o, &c, 1); }

/* Label values: backslash, double quote and line feed are escaped. */
static void out_label_value(out_buf *o, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\') out_mem(o, "\\\\", 2);
        else if (*s == '"') out_mem(o, "\\\"", 2);
        else if (*s == '\n') out_mem(o, "\\n", 2);
        else out_char(o, *s);
    }
}

/* HELP text: backslash and line feed are escaped. */
static void out_help(out_buf *o, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\') out_mem(o, "\\\\", 2);
        else if (*s == '\n') out_mem(o, "\\n", 2);
        else out_char(o, *s);
    }
}

/* mag / 10^dec exactly, without trailing zeros ("0.005", "1", "2.5");
 * returns the length written to b (at least 48 bytes). */
static size_t fmt_fixed(char *b, uint64_t mag, bool neg, unsigned dec)
{
    uint64_t scale = 1;
    for (unsigned i = 0; i < dec; i++) scale *= 10;
    int n = snprintf(b, 48, "%s%llu", neg ? "-" : "", (unsigned long long)(mag / scale));
    uint64_t frac = mag % scale;
    if (frac) {
        char f[16];
        snprintf(f, sizeof(f), "%0*llu", (int)dec, (unsigned long long)frac);
        size_t fl = strlen(f);
        while (fl && f[fl - 1] == '0') fl--;
        f[fl] = '\0';
        n += snprintf(b + n, 48 - (size_t)n, ".%s", f);
    }
    return (size_t)n;
}

static void out_fixed(out_buf *o, uint64_t mag, bool neg, unsigned dec)
{
    char b[48];
    out_mem(o, b, fmt_fixed(b, mag, neg, dec));
}

static void out_value(out_buf *o, const pt_metric_family *f, uint64_t v)
{
    bool neg = f->d.type == PT_METRIC_GAUGE && (int64_t)v < 0;
    out_fixed(o, neg ? (uint64_t)0 - v : v, neg, f->d.unit_decimals);
}

/* name[suffix]{labels,dims[,le="..."]} */
static void out_series_name(out_buf *o, const pt_metric_family *f, const pt_metric_series *s, size_t combo,
                            const char *suffix, const char *le)
{
    out_str(o, f->d.name);
    out_str(o, suffix);
    if (f->nlabels + f->d.ndims == 0 && !le) return;
    out_char(o, '{');
    bool first = true;
    for (size_t i = 0; i < f->nlabels; i++) {
        if (!first) out_char(o, ',');
        first = false;
        out_str(o, f->d.labels[i]);
        out_str(o, "=\"");
        out_label_value(o, s->values[i]);
        out_char(o, '"');
    }
    /* row-major: the last dim varies fastest */
    size_t idx[PT_METRIC_MAX_LABELS], rest = combo;
    for (size_t i = f->d.ndims; i-- > 0;) {
        idx[i] = rest % f->dim_size[i];
        rest /= f->dim_size[i];
    }
    for (size_t i = 0; i < f->d.ndims; i++) {
        if (!first) out_char(o, ',');
        first = false;
        out_str(o, f->d.dims[i].name);
        out_str(o, "=\"");
        out_label_value(o, f->d.dims[i].values[idx[i]]);
        out_char(o, '"');
    }
    if (le) {
        if (!first) out_char(o, ',');
        out_str(o, "le=\"");
        out_str(o, le);
        out_char(o, '"');
    }
    out_char(o, '}');
}

static void expose_histogram(out_buf *o, const pt_metrics *m, const pt_metric_family *f, const pt_metric_series *s,
                             size_t combo)
{
    uint64_t v[PT_METRIC_MAX_BUCKETS + 2];
    uint32_t base = s->base + (uint32_t)(combo * f->cells_per_combo);
    uint64_t count = 0;
    for (size_t i = 0; i < f->d.nbuckets + 2; i++) {
        v[i] = cell_sum(m, base + (uint32_t)i);
        if (i <= f->d.nbuckets) count += v[i];
    }
    if (f->d.ndims && count == 0) return;
    uint64_t cum = 0;
    char le[64], num[32];
    for (size_t i = 0; i <= f->d.nbuckets; i++) {
        cum += v[i];
        if (i < f->d.nbuckets) {
            le[fmt_fixed(le, f->d.buckets[i], false, f->d.unit_decimals)] = '\0';
        } else {
            strcpy(le, "+Inf");
        }
        out_series_name(o, f, s, combo, "_bucket", le);
        snprintf(num, sizeof(num), " %llu\n", (unsigned long long)cum);
        out_str(o, num);
    }
    out_series_name(o, f, s, combo, "_sum", NULL);
    out_char(o, ' ');
    out_fixed(o, v[f->d.nbuckets + 1], false, f->d.unit_decimals);
    out_char(o, '\n');
    out_series_name(o, f, s, combo, "_count", NULL);
    snprintf(num, sizeof(num), " %llu\n", (unsigned long long)count);
    out_str(o, num);
}

char *pt_metrics_expose(pt_metrics *m, size_t *len)
{
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    out_buf o = {0};
    out_reserve(&o, 1);
    pthread_mutex_lock(&m->lock);
    sweep(m);
    for (const pt_metric_family *f = m->fams; f; f = f->next) {
        out_str(&o, "# HELP ");
        out_str(&o, f->d.name);
        out_char(&o, ' ');
        out_help(&o, f->d.help);
        out_str(&o, "\n# TYPE ");
        out_str(&o, f->d.name);
        out_char(&o, ' ');
        out_str(&o, type_names[f->d.type]);
        out_char(&o, '\n');
        for (const pt_metric_series *s = f->head; s; s = s->next)
            for (size_t c = 0; c < f->ncombos; c++) {
                if (f->d.type == PT_METRIC_HISTOGRAM) {
                    expose_histogram(&o, m, f, s, c);
                    continue;
                }
                uint64_t v = cell_sum(m, s->base + (uint32_t)c);
                if (f->d.ndims && v == 0) continue; /* a combination appears once it has counted */
                out_series_name(&o, f, s, c, "", NULL);
                out_char(&o, ' ');
                out_value(&o, f, v);
                out_char(&o, '\n');
            }
    }
    pthread_mutex_unlock(&m->lock);
    out_reserve(&o, 1);
    o.p[o.len] = '\0';
    *len = o.len;
    return o.p;
}
