/* negotiate.c — the compression plugin's pure decisions: coding names,
 * media-type patterns, Accept-Encoding parsing and choice (RFC 9110
 * §12.5.3), Cache-Control no-transform, Vary merging, and whether and how
 * a response is compressed. No I/O, no library state: unit-tested on its
 * own (tests/unit/test_compression.c). */
#include "plugins/compression/compression.h"

#include <stdio.h>

#include "plugins/plugin_util.h"

static const char *const coding_names[PT_CODING__COUNT] = {
    [PT_CODING_IDENTITY] = "identity", [PT_CODING_GZIP] = "gzip", [PT_CODING_BR] = "br",
    [PT_CODING_ZSTD] = "zstd",         [PT_CODING_DEFLATE] = "deflate",
};

const char *pt_coding_name(pt_coding c) { return (unsigned)c < PT_CODING__COUNT ? coding_names[c] : "?"; }

int pt_coding_from_token(pt_str tok)
{
    for (int i = 0; i < PT_CODING__COUNT; i++)
        if (pt_str_ieq_lit(tok, coding_names[i])) return i;
    if (pt_str_ieq_lit(tok, "x-gzip")) return PT_CODING_GZIP;
    return -1;
}

static bool is_ows(char c) { return c == ' ' || c == '\t'; }

static pt_str trim(pt_str s)
{
    while (s.n && is_ows(s.p[0])) s.p++, s.n--;
    while (s.n && is_ows(s.p[s.n - 1])) s.n--;
    return s;
}

/* Splits `*rest` at the first `sep`: returns the part before (untrimmed)
 * and leaves *rest after the separator (or empty with p = NULL at the end). */
static pt_str split_next(pt_str *rest, char sep)
{
    const char *e = rest->n ? memchr(rest->p, sep, rest->n) : NULL;
    pt_str part;
    if (!e) {
        part = *rest;
        *rest = PT_STR_NULL;
    } else {
        part = pt_str_make(rest->p, (size_t)(e - rest->p));
        rest->n -= part.n + 1;
        rest->p = e + 1;
    }
    return part;
}

static bool is_token(pt_str s)
{
    if (s.n == 0) return false;
    for (size_t i = 0; i < s.n; i++)
        if (!pt_plugin_is_tchar((unsigned char)s.p[i])) return false;
    return true;
}

static char lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c; }

/* Case-insensitive: `s` starts with the (lowercase) `pre`. */
static bool ci_prefix(pt_str s, pt_str pre)
{
    if (s.n < pre.n) return false;
    for (size_t i = 0; i < pre.n; i++)
        if (lower(s.p[i]) != pre.p[i]) return false;
    return true;
}

static bool ci_suffix(pt_str s, pt_str suf)
{
    return s.n >= suf.n && ci_prefix(pt_str_make(s.p + s.n - suf.n, suf.n), suf);
}

/* ------------------------------------------------------------ media types */

bool pt_comp_type_pat_parse(pt_arena *a, pt_str text, pt_comp_type_pat *out)
{
    memset(out, 0, sizeof(*out));
    text = trim(text);
    const char *slash = text.n ? memchr(text.p, '/', text.n) : NULL;
    if (!slash) return false;
    pt_str type = pt_str_make(text.p, (size_t)(slash - text.p));
    pt_str sub = pt_str_make(slash + 1, text.n - type.n - 1);
    if (!is_token(type) || !is_token(sub)) return false; /* '*' is a tchar; '/' is not */
    if (memchr(type.p, '*', type.n) && !pt_str_eq_lit(type, "*")) return false;
    char *t = pt_arena_strndup(a, type.p, type.n);
    char *s = pt_arena_strndup(a, sub.p, sub.n);
    for (char *q = t; *q; q++) *q = lower(*q);
    for (char *q = s; *q; q++) *q = lower(*q);
    char *star = strchr(s, '*');
    if (star && strchr(star + 1, '*')) return false;
    out->type = pt_str_c(t);
    if (star) {
        out->sub_star = true;
        out->sub_pre = pt_str_make(s, (size_t)(star - s));
        out->sub_suf = pt_str_c(star + 1);
    } else {
        out->sub_pre = pt_str_c(s);
        out->sub_suf = PT_STR_LIT("");
    }
    return true;
}

bool pt_comp_type_match(const pt_comp_type_pat *pats, size_t n, pt_str content_type)
{
    pt_str rest = content_type;
    pt_str media = trim(split_next(&rest, ';'));
    const char *slash = media.n ? memchr(media.p, '/', media.n) : NULL;
    if (!slash) return false;
    pt_str type = trim(pt_str_make(media.p, (size_t)(slash - media.p)));
    pt_str sub = trim(pt_str_make(slash + 1, media.n - (size_t)(slash - media.p) - 1));
    if (type.n == 0 || sub.n == 0) return false;
    for (size_t i = 0; i < n; i++) {
        const pt_comp_type_pat *p = &pats[i];
        if (!pt_str_eq_lit(p->type, "*") && !(type.n == p->type.n && ci_prefix(type, p->type))) continue;
        if (p->sub_star) {
            if (sub.n >= p->sub_pre.n + p->sub_suf.n && ci_prefix(sub, p->sub_pre) && ci_suffix(sub, p->sub_suf))
                return true;
        } else if (sub.n == p->sub_pre.n && ci_prefix(sub, p->sub_pre)) {
            return true;
        }
    }
    return false;
}

/* ------------------------------------------------------- Accept-Encoding */

void pt_accept_enc_init(pt_accept_enc *ae)
{
    for (int i = 0; i < PT_CODING__COUNT; i++) ae->q[i] = -1;
    ae->star = -1;
    ae->present = false;
}

/* qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ); -1 if not. */
static int parse_qvalue(pt_str v)
{
    if (v.n == 0 || v.n > 5 || (v.p[0] != '0' && v.p[0] != '1')) return -1;
    int q = (v.p[0] - '0') * 1000;
    if (v.n == 1) return q;
    if (v.p[1] != '.') return -1;
    int scale = 100;
    for (size_t i = 2; i < v.n; i++, scale /= 10) {
        if (v.p[i] < '0' || v.p[i] > '9') return -1;
        q += (v.p[i] - '0') * scale;
    }
    return q > 1000 ? -1 : q;
}

static void keep_lowest(int16_t *slot, int w)
{
    if (*slot < 0 || w < *slot) *slot = (int16_t)w;
}

/* One list member "coding[;param]..." (already split at commas). */
static void parse_entry(pt_accept_enc *ae, pt_str entry)
{
    pt_str rest = entry;
    pt_str coding = trim(split_next(&rest, ';'));
    if (coding.n == 0 && !rest.p) return; /* empty list element: allowed */
    if (!is_token(coding)) return;
    int w = 1000;
    while (rest.p) {
        pt_str param = trim(split_next(&rest, ';'));
        pt_str pv = param;
        pt_str name = trim(split_next(&pv, '='));
        if (!pt_str_ieq_lit(name, "q")) continue; /* other parameters: ignored */
        if (!pv.p) return;                        /* "q" without a value */
        w = parse_qvalue(trim(pv));
        if (w < 0) return; /* malformed weight: ignore the whole entry */
    }
    if (pt_str_eq_lit(coding, "*")) {
        keep_lowest(&ae->star, w);
        return;
    }
    int c = pt_coding_from_token(coding);
    if (c >= 0) keep_lowest(&ae->q[c], w);
}

void pt_accept_enc_parse(pt_accept_enc *ae, pt_str value)
{
    ae->present = true;
    pt_str rest = value;
    while (rest.p) parse_entry(ae, split_next(&rest, ','));
}

pt_coding pt_accept_enc_choose(const pt_accept_enc *ae, const pt_coding *prefs, size_t nprefs)
{
    if (!ae->present) return PT_CODING_IDENTITY;
    int best = 0;
    pt_coding chosen = PT_CODING_IDENTITY;
    for (size_t i = 0; i < nprefs; i++) {
        pt_coding c = prefs[i];
        int w = ae->q[c] >= 0 ? ae->q[c] : (ae->star >= 0 ? ae->star : 0);
        if (w > best) {
            best = w;
            chosen = c;
        }
    }
    if (best == 0 || ae->q[PT_CODING_IDENTITY] > best) return PT_CODING_IDENTITY;
    return chosen;
}

/* ----------------------------------------------------------------- fields */

bool pt_comp_no_transform(const pt_headers *h)
{
    for (uint32_t i = 0; i < h->n; i++) {
        if (!pt_str_ieq_lit(h->v[i].name, "cache-control")) continue;
        pt_str rest = h->v[i].value;
        while (rest.p) {
            pt_str dir = split_next(&rest, ',');
            pt_str name = trim(split_next(&dir, '='));
            if (pt_str_ieq_lit(name, "no-transform")) return true;
        }
    }
    return false;
}

void pt_comp_vary_merge(pt_headers *h, pt_arena *a)
{
    size_t total = 0, nvary = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (!pt_str_ieq_lit(h->v[i].name, "vary")) continue;
        pt_str rest = h->v[i].value;
        while (rest.p) {
            pt_str tok = trim(split_next(&rest, ','));
            if (pt_str_eq_lit(tok, "*") || pt_str_ieq_lit(tok, "accept-encoding")) return;
        }
        total += h->v[i].value.n + 2;
        nvary++;
    }
    if (nvary == 0) {
        pt_headers_add(h, a, PT_STR_LIT("Vary"), PT_STR_LIT("Accept-Encoding"));
        return;
    }
    /* One field: the existing values in order, then Accept-Encoding. */
    static const char ae[] = "Accept-Encoding";
    char *buf = pt_arena_alloc(a, total + sizeof(ae));
    size_t len = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (!pt_str_ieq_lit(h->v[i].name, "vary")) continue;
        pt_str v = trim(h->v[i].value);
        if (v.n == 0) continue;
        memcpy(buf + len, v.p, v.n);
        len += v.n;
        buf[len++] = ',';
        buf[len++] = ' ';
    }
    memcpy(buf + len, ae, sizeof(ae));
    len += sizeof(ae) - 1;
    pt_headers_set(h, a, PT_STR_LIT("Vary"), pt_str_make(buf, len));
}

/* -------------------------------------------------------------- decision */

void pt_comp_req_info_read(pt_comp_req_info *ri, const pt_request *req)
{
    pt_accept_enc_init(&ri->ae);
    ri->head = false;
    ri->range = false;
    if (!req) return; /* an unparsable request answered by Portico: no Accept-Encoding */
    ri->head = req->method == PT_METHOD_HEAD;
    for (uint32_t i = 0; i < req->headers.n; i++) {
        const pt_header *f = &req->headers.v[i];
        if (pt_str_ieq_lit(f->name, "accept-encoding"))
            pt_accept_enc_parse(&ri->ae, f->value);
        else if (pt_str_ieq_lit(f->name, "range"))
            ri->range = true;
    }
}

/* True if the response carries a content coding other than identity. */
static bool already_encoded(const pt_headers *h)
{
    for (uint32_t i = 0; i < h->n; i++) {
        if (!pt_str_ieq_lit(h->v[i].name, "content-encoding")) continue;
        pt_str rest = h->v[i].value;
        while (rest.p) {
            pt_str tok = trim(split_next(&rest, ','));
            if (tok.n && !pt_str_ieq_lit(tok, "identity")) return true;
        }
    }
    return false;
}

pt_comp_decision pt_comp_decide(const pt_compression_conf *c, const pt_comp_req_info *ri, const pt_response *res)
{
    pt_comp_decision d = {.action = PT_COMP_SKIP, .coding = PT_CODING_IDENTITY};
    if (!res->has_body || ri->head || res->content_length == 0) return d;
    if (res->status < 200 || res->status == 204 || res->status == 206 || res->status == 304) return d;
    if (ri->range) return d;
    const pt_headers *h = &res->headers;
    if (already_encoded(h) || pt_comp_no_transform(h)) return d;
    /* Integrity fields computed over the bytes we would change. */
    if (pt_headers_get(h, "content-md5") || pt_headers_get(h, "content-digest") || pt_headers_get(h, "repr-digest"))
        return d;
    const pt_str *ct = pt_headers_get(h, "content-type");
    if (!ct || !pt_comp_type_match(c->types, c->ntypes, *ct)) return d;
    if (res->content_length > 0 && (uint64_t)res->content_length < c->min_size) return d;
    d.action = PT_COMP_VARY;
    d.flush_each = pt_comp_type_match(c->flush_types, c->nflush_types, *ct);
    d.coding = pt_accept_enc_choose(&ri->ae, c->prefs, c->nprefs);
    if (d.coding != PT_CODING_IDENTITY) d.action = PT_COMP_ENCODE;
    return d;
}
