/* txn_balance.c — what the transaction gives the balancer
 * (upstream/balance.h): the hash input of `balance: hash`. */
#include "proxy/txn_int.h"

/* The value of cookie `name` in the request's Cookie fields (RFC 6265
 * "name=value; name2=value2"), or a null slice. */
static pt_str cookie_value(const pt_headers *h, const char *name)
{
    size_t nlen = strlen(name);
    for (uint32_t i = 0; i < h->n; i++) {
        if (!pt_str_ieq_lit(h->v[i].name, "cookie")) continue;
        pt_str v = h->v[i].value;
        size_t k = 0;
        while (k < v.n) {
            while (k < v.n && (v.p[k] == ' ' || v.p[k] == ';' || v.p[k] == '\t')) k++;
            size_t s = k;
            while (k < v.n && v.p[k] != ';') k++;
            const char *eq = memchr(v.p + s, '=', k - s);
            if (eq && (size_t)(eq - (v.p + s)) == nlen && memcmp(v.p + s, name, nlen) == 0) {
                size_t vs = (size_t)(eq + 1 - v.p), ve = k;
                while (ve > vs && (v.p[ve - 1] == ' ' || v.p[ve - 1] == '\t')) ve--;
                if (ve - vs >= 2 && v.p[vs] == '"' && v.p[ve - 1] == '"') vs++, ve--;
                return pt_str_make(v.p + vs, ve - vs);
            }
        }
    }
    return PT_STR_NULL;
}

/* The hash input of the request for its upstream's `hash_on`, or a null
 * slice (not hashing, or the request lacks it: round-robin). An empty
 * header or cookie value counts as missing. */
pt_str txn_lb_key(const pt_txn *t)
{
    const pt_balance_conf *b = &t->ups->conf->balance;
    if (b->kind != PT_BALANCE_HASH || !t->req) return PT_STR_NULL;
    pt_str k = PT_STR_NULL;
    switch (b->hash_on) {
    case PT_HASH_HEADER: {
        const pt_str *v = pt_headers_get(&t->req->headers, b->hash_name);
        if (v) k = *v;
        break;
    }
    case PT_HASH_COOKIE: k = cookie_value(&t->req->headers, b->hash_name); break;
    case PT_HASH_CLIENT_ADDR: k = t->client_addr; break;
    case PT_HASH_PATH: k = t->req->path; break;
    default: break;
    }
    return k.n ? k : PT_STR_NULL;
}
