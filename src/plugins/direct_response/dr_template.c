/* dr_template.c — compiles a direct_response body with {{...}}
 * placeholders once, checking that each placeholder sits where the
 * escaping of the declared media type makes it inert, and renders it per
 * request. */
#include "plugins/direct_response/dr_template.h"

#include <stdio.h>

static bool ieq_n(const char *a, const char *lit, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = a[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if (c != lit[i]) return false;
    }
    return true;
}

/* The escaping a media type needs; false for types without one. */
static bool escape_for(pt_str ct, pt_dr_escape *e)
{
    size_t n = 0;
    while (n < ct.n && ct.p[n] != ';' && ct.p[n] != ' ' && ct.p[n] != '\t') n++;
    const char *s = ct.p;
    struct {
        const char *type;
        pt_dr_escape e;
    } exact[] = {{"application/json", PT_DR_ESC_JSON}, {"text/html", PT_DR_ESC_HTML},
                 {"application/xhtml+xml", PT_DR_ESC_HTML}, {"application/xml", PT_DR_ESC_HTML},
                 {"text/xml", PT_DR_ESC_HTML}, {"text/plain", PT_DR_ESC_NONE}};
    for (size_t i = 0; i < PT_ARRAY_LEN(exact); i++)
        if (strlen(exact[i].type) == n && ieq_n(s, exact[i].type, n)) {
            *e = exact[i].e;
            return true;
        }
    if (n > 5 && ieq_n(s + n - 5, "+json", 5)) {
        *e = PT_DR_ESC_JSON;
        return true;
    }
    if (n > 4 && ieq_n(s + n - 4, "+xml", 4)) {
        *e = PT_DR_ESC_HTML;
        return true;
    }
    return false;
}

/* Where the literal text so far leaves us, for the context checks. */
typedef struct {
    bool json_string;   /* inside a JSON string */
    bool json_escape;   /* after a backslash in it */
    bool in_tag;        /* between '<' and '>' */
    char quote;         /* quote of the attribute value we are in, or 0 */
    bool raw_text;      /* inside <script> or <style> */
    char tag[8];        /* start of the current tag's name, lowercased */
    size_t tag_len;
    bool tag_named;     /* the name is complete */
    bool closing;       /* "</..." */
} scan_state;

static void scan_json(scan_state *s, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!s->json_string) {
            if (p[i] == '"') s->json_string = true;
        } else if (s->json_escape) {
            s->json_escape = false;
        } else if (p[i] == '\\') {
            s->json_escape = true;
        } else if (p[i] == '"') {
            s->json_string = false;
        }
    }
}

static void scan_html(scan_state *s, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!s->in_tag) {
            if (c == '<') {
                s->in_tag = true;
                s->quote = 0;
                s->tag_len = 0;
                s->tag_named = false;
                s->closing = i + 1 < n && p[i + 1] == '/';
                if (s->closing) i++;
            }
            continue;
        }
        if (s->quote) {
            if (c == s->quote) s->quote = 0;
            continue;
        }
        if (!s->tag_named) {
            bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
            if (alpha && s->tag_len < sizeof(s->tag) - 1) {
                s->tag[s->tag_len++] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
                continue;
            }
            s->tag_named = true;
            s->tag[s->tag_len] = '\0';
        }
        if (c == '"' || c == '\'') {
            s->quote = c;
        } else if (c == '>') {
            s->in_tag = false;
            s->tag[s->tag_len] = '\0';
            bool raw = strcmp(s->tag, "script") == 0 || strcmp(s->tag, "style") == 0;
            if (raw) s->raw_text = !s->closing;
        }
    }
}

static bool header_name_refused(const char *name)
{
    static const char *const secret[] = {"authorization", "proxy-authorization", "cookie"};
    for (size_t i = 0; i < PT_ARRAY_LEN(secret); i++)
        if (pt_str_ieq_lit(pt_str_c(name), secret[i])) return true;
    return false;
}

/* Parses the placeholder name[0, n) into piece *pc; NULL or the problem. */
static const char *read_placeholder(pt_arena *a, const char *name, size_t n, pt_dr_piece *pc)
{
    static const struct {
        const char *name;
        pt_dr_kind kind;
    } fixed[] = {{"request_id", PT_DR_REQUEST_ID}, {"method", PT_DR_METHOD}, {"path", PT_DR_PATH}};
    for (size_t i = 0; i < PT_ARRAY_LEN(fixed); i++)
        if (strlen(fixed[i].name) == n && memcmp(name, fixed[i].name, n) == 0) {
            pc->kind = fixed[i].kind;
            return NULL;
        }
    if (n > 6 && memcmp(name, "param.", 6) == 0) {
        for (size_t i = 6; i < n; i++) {
            char c = name[i];
            bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (i > 6 && c >= '0' && c <= '9');
            if (!ok) return "a route parameter name is [A-Za-z_][A-Za-z0-9_]*";
        }
        pc->kind = PT_DR_PARAM;
        pc->text = pt_arena_str(a, pt_str_make(name + 6, n - 6));
        return NULL;
    }
    if (n > 7 && memcmp(name, "header.", 7) == 0) {
        if (!pt_plugin_header_name_ok(name + 7, n - 7)) return "invalid header name";
        pc->kind = PT_DR_HEADER;
        pc->text = pt_arena_str(a, pt_str_make(name + 7, n - 7));
        if (header_name_refused(pc->text.p)) return "credentials (Authorization, Cookie) are never copied into a body";
        return NULL;
    }
    return "unknown placeholder (request_id, method, path, param.NAME, header.NAME)";
}

const char *pt_dr_template_compile(pt_arena *a, pt_str body, pt_str ct, pt_dr_template *t)
{
    memset(t, 0, sizeof(*t));
    t->pieces = pt_arena_calloc(a, (body.n + 1) * sizeof(*t->pieces));
    scan_state st = {0};
    bool has_escape = escape_for(ct, &t->escape);
    size_t i = 0, lit = 0;
    while (i <= body.n) {
        bool open = i + 1 < body.n && body.p[i] == '{' && body.p[i + 1] == '{';
        if (i < body.n && !open) {
            i++;
            continue;
        }
        if (i > lit) {
            t->pieces[t->npieces++] = (pt_dr_piece){.kind = PT_DR_LITERAL, .text = pt_str_make(body.p + lit, i - lit)};
            t->literal_len += i - lit;
            if (t->escape == PT_DR_ESC_JSON) scan_json(&st, body.p + lit, i - lit);
            if (t->escape == PT_DR_ESC_HTML) scan_html(&st, body.p + lit, i - lit);
        }
        if (i == body.n) break;
        const char *end = NULL;
        for (size_t j = i + 2; j + 1 < body.n && !end; j++)
            if (body.p[j] == '}' && body.p[j + 1] == '}') end = body.p + j;
        if (!end) return pt_arena_printf(a, "unclosed '{{' at byte %zu", i);
        const char *name = body.p + i + 2;
        size_t n = (size_t)(end - name);
        while (n && *name == ' ') name++, n--;
        while (n && name[n - 1] == ' ') n--;
        pt_dr_piece *pc = &t->pieces[t->npieces];
        const char *why = read_placeholder(a, name, n, pc);
        if (why) return pt_arena_printf(a, "{{%.*s}}: %s", (int)n, name, why);
        if (!has_escape)
            return "placeholders need a Content-Type header: application/json (or +json), text/html, "
                   "application/xml (or +xml, text/xml), or text/plain";
        if (t->escape == PT_DR_ESC_JSON && !st.json_string)
            return pt_arena_printf(a, "{{%.*s}} must be inside a JSON string (\"...\")", (int)n, name);
        if (t->escape == PT_DR_ESC_HTML && st.raw_text)
            return pt_arena_printf(a, "{{%.*s}} cannot be inside <script> or <style>", (int)n, name);
        if (t->escape == PT_DR_ESC_HTML && st.in_tag && !st.quote)
            return pt_arena_printf(a, "{{%.*s}} inside a tag must be in a quoted attribute value", (int)n, name);
        t->npieces++;
        i = (size_t)(end - body.p) + 2;
        lit = i;
    }
    if (t->escape == PT_DR_ESC_JSON && st.json_string) return "the JSON body has an unterminated string";
    return NULL;
}

/* Length of the well-formed UTF-8 sequence at p[0, n), 0 if ill-formed. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    size_t len = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c <= 0xDF ? 2 : 0;
    if (c >= 0xF5 || len == 0 || len > n) return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    if (len == 3 && ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] >= 0xA0))) return 0; /* overlong, surrogate */
    if (len == 4 && ((c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] >= 0x90))) return 0;
    return len;
}

size_t pt_dr_escape_into(pt_dr_escape e, pt_str v, char *out)
{
    static const char hex[] = "0123456789abcdef";
    size_t w = 0;
    const unsigned char *p = (const unsigned char *)v.p;
    for (size_t i = 0; i < v.n; i++) {
        unsigned char c = p[i];
        if (e == PT_DR_ESC_NONE) {
            out[w++] = (char)c;
        } else if (e == PT_DR_ESC_HTML) {
            const char *ref = c == '&' ? "&amp;" : c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '"' ? "&quot;"
                            : c == '\'' ? "&#39;" : NULL;
            if (ref) {
                memcpy(out + w, ref, strlen(ref));
                w += strlen(ref);
            } else {
                out[w++] = (char)c;
            }
        } else if (c == '"' || c == '\\') {
            out[w++] = '\\';
            out[w++] = (char)c;
        } else if (c < 0x20 || c == 0x7f || c == '<' || c == '>' || c == '&') {
            memcpy(out + w, "\\u00", 4);
            out[w + 4] = hex[c >> 4];
            out[w + 5] = hex[c & 15];
            w += 6;
        } else if (c < 0x80) {
            out[w++] = (char)c;
        } else {
            size_t len = utf8_len(p + i, v.n - i);
            if (len == 0) { /* ill-formed: U+FFFD, never a broken JSON text */
                memcpy(out + w, "\\ufffd", 6);
                w += 6;
            } else if (len == 3 && c == 0xE2 && p[i + 1] == 0x80 && (p[i + 2] == 0xA8 || p[i + 2] == 0xA9)) {
                memcpy(out + w, p[i + 2] == 0xA8 ? "\\u2028" : "\\u2029", 6); /* line breaks in JavaScript */
                w += 6;
                i += 2;
            } else {
                memcpy(out + w, p + i, len);
                w += len;
                i += len - 1;
            }
        }
    }
    return w;
}

pt_str pt_dr_template_render(const pt_dr_template *t, pt_txn *txn)
{
    pt_request *req = pt_txn_request(txn);
    pt_str vals[64];
    pt_str *v = t->npieces <= PT_ARRAY_LEN(vals) ? vals : pt_arena_alloc(pt_txn_arena(txn), t->npieces * sizeof(*v));
    size_t cap = t->literal_len + 1;
    for (size_t i = 0; i < t->npieces; i++) {
        const pt_dr_piece *pc = &t->pieces[i];
        pt_str x = PT_STR_NULL;
        const pt_str *h;
        switch (pc->kind) {
        case PT_DR_LITERAL: x = pc->text; break;
        case PT_DR_REQUEST_ID: x = pt_txn_request_id(txn); break;
        case PT_DR_METHOD: x = req ? req->method_str : PT_STR_NULL; break;
        case PT_DR_PATH: x = pt_txn_path(txn); break;
        case PT_DR_PARAM: x = pt_txn_param(txn, pc->text.p); break;
        case PT_DR_HEADER:
            h = req ? pt_headers_get(&req->headers, pc->text.p) : NULL;
            x = h ? *h : PT_STR_NULL;
            break;
        }
        v[i] = x;
        if (pc->kind != PT_DR_LITERAL) cap += 6 * x.n;
    }
    char *out = pt_arena_alloc(pt_txn_arena(txn), cap);
    size_t w = 0;
    for (size_t i = 0; i < t->npieces; i++) {
        if (t->pieces[i].kind == PT_DR_LITERAL) {
            memcpy(out + w, v[i].p, v[i].n);
            w += v[i].n;
        } else if (v[i].n) {
            w += pt_dr_escape_into(t->escape, v[i], out + w);
        }
    }
    out[w] = '\0';
    return pt_str_make(out, w);
}
