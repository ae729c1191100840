/* deprecation.c — announces that a route's API version is deprecated and
 * when it goes away: Deprecation (RFC 9745), Sunset (RFC 8594) and Link
 * (RFC 8288) fields, all precomputed at configure time. */
#include "plugins/deprecation/deprecation.h"

#include <stdio.h>

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static bool digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

bool pt_deprecation_parse_date(const char *s, int64_t *out)
{
    if (s[0] == '@') { /* the structured-field date itself */
        const char *p = s + 1;
        int64_t v = 0;
        if (!*p || strlen(p) > 12) return false;
        for (; *p; p++) {
            if (*p < '0' || *p > '9') return false;
            v = v * 10 + (*p - '0');
        }
        *out = v;
        return true;
    }
    int y, mo, d, h = 0, mi = 0, sec = 0;
    if (strlen(s) < 10 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
        !digits(s + 8, 2, &d))
        return false;
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] + (mo == 2 && leap)) return false;
    const char *p = s + 10;
    int64_t offset = 0;
    if (*p) {
        if ((*p != 'T' && *p != 't') || strlen(p) < 10 || !digits(p + 1, 2, &h) || p[3] != ':' ||
            !digits(p + 4, 2, &mi) || p[6] != ':' || !digits(p + 7, 2, &sec))
            return false;
        if (h > 23 || mi > 59 || sec > 59) return false;
        p += 9;
        if (*p == '.') {
            p++;
            if (*p < '0' || *p > '9') return false;
            while (*p >= '0' && *p <= '9') p++;
        }
        if ((*p == 'Z' || *p == 'z') && !p[1]) {
            offset = 0;
        } else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
            int oh, om;
            if (!digits(p + 1, 2, &oh) || !digits(p + 4, 2, &om) || oh > 23 || om > 59) return false;
            offset = (oh * 60 + om) * 60 * (*p == '-' ? -1 : 1);
        } else {
            return false;
        }
    }
    *out = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + sec - offset;
    return *out >= 0;
}

void pt_deprecation_http_date(int64_t t, char buf[30])
{
    static const char *const wd[] = {"Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"}; /* 1970-01-01: Thu */
    static const char *const mon[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    int64_t days = t / 86400, rem = t % 86400;
    /* civil_from_days */
    int64_t z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = (int64_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    unsigned d = doy - (153 * mp + 2) / 5 + 1;
    unsigned m = mp < 10 ? mp + 3 : mp - 9;
    y += m <= 2;
    /* callers pass t in 0..9999-12-31T23:59:59 (checked at configure time) */
    unsigned yy = (unsigned)y % 10000, hh = (unsigned)(rem / 3600) % 24, mm = (unsigned)(rem / 60 % 60),
             ss = (unsigned)(rem % 60);
    snprintf(buf, 30, "%s, %02u %s %04u %02u:%02u:%02u GMT", wd[days % 7], d % 100, mon[(m - 1) % 12], yy, hh, mm,
             ss);
}

/* A link target: an absolute http(s) URL or a path, visible ASCII without
 * '<', '>', '"' or spaces (it goes between <> in a Link field). */
static bool link_ok(const char *s)
{
    if (strncmp(s, "https://", 8) != 0 && strncmp(s, "http://", 7) != 0 && s[0] != '/') return false;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || strchr("<>\"\\", *p)) return false;
    return s[0] != '/' || s[1] != '/'; /* "//host" would be another site's path */
}

static bool read_date(pt_conf_ctx *ctx, const pt_conf_node *n, const char *key, int64_t *t)
{
    int64_t v;
    if (n->kind != PT_NODE_SCALAR || !pt_deprecation_parse_date(n->scalar, &v) || v > 253402300799) {
        pt_conf_error(ctx, n,
                      "deprecation: '%s' must be a date: YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ (or +HH:MM), or "
                      "@<unix seconds>",
                      key);
        return false;
    }
    *t = v;
    return true;
}

static bool read_link(pt_conf_ctx *ctx, const pt_conf_node *n, const char *key, const char *rel, pt_str *out)
{
    if (n->kind != PT_NODE_SCALAR || !link_ok(n->scalar)) {
        pt_conf_error(ctx, n,
                      "deprecation: '%s' must be an http(s) URL or a path, without spaces, quotes or angle "
                      "brackets",
                      key);
        return false;
    }
    *out = pt_str_c(pt_arena_printf(ctx->arena, "<%s>; rel=\"%s\"", n->scalar, rel));
    return true;
}

static void *deprecation_configure(pt_conf_ctx *ctx, const pt_conf_node *node)
{
    static const char *const allowed[] = {"deprecated", "sunset", "link", "sunset_link", NULL};
    if (!node || node->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, node, "deprecation: expected a mapping with 'deprecated' and/or 'sunset'");
        return NULL;
    }
    if (!pt_conf_check_keys(ctx, node, allowed, "deprecation")) return NULL;
    pt_deprecation_conf *c = pt_arena_calloc(ctx->arena, sizeof(*c));
    const pt_conf_node *dn = pt_conf_get(node, "deprecated"), *sn = pt_conf_get(node, "sunset");
    const pt_conf_node *ln = pt_conf_get(node, "link"), *sl = pt_conf_get(node, "sunset_link");
    if (!dn && !sn) {
        pt_conf_error(ctx, node, "deprecation: set 'deprecated' (the date) and/or 'sunset'");
        return NULL;
    }
    int64_t dep = 0, sun = 0;
    bool ok = true;
    if (dn && (ok = read_date(ctx, dn, "deprecated", &dep)))
        c->deprecation = pt_str_c(pt_arena_printf(ctx->arena, "@%lld", (long long)dep));
    if (sn && read_date(ctx, sn, "sunset", &sun)) {
        char buf[30];
        pt_deprecation_http_date(sun, buf);
        c->sunset = pt_str_c(pt_arena_printf(ctx->arena, "%s", buf));
    } else if (sn) {
        ok = false;
    }
    if (ok && dn && sn && sun < dep) {
        /* RFC 9745 §2.1: the sunset should not be earlier than the deprecation */
        pt_conf_error(ctx, sn, "deprecation: 'sunset' is earlier than 'deprecated'");
        ok = false;
    }
    if (ln && !read_link(ctx, ln, "link", "deprecation", &c->link)) ok = false;
    if (sl && !read_link(ctx, sl, "sunset_link", "sunset", &c->sunset_link)) ok = false;
    if (ok && sl && !sn) {
        pt_conf_error(ctx, sl, "deprecation: 'sunset_link' needs 'sunset'");
        ok = false;
    }
    return ok ? c : NULL;
}

static pt_plugin_result deprecation_on_response_headers(pt_txn *txn, const void *conf, void *state)
{
    const pt_deprecation_conf *c = conf;
    pt_headers *h = &pt_txn_response(txn)->headers;
    pt_arena *a = pt_txn_arena(txn);
    if (c->deprecation.n) pt_headers_set(h, a, PT_STR_LIT("Deprecation"), c->deprecation);
    if (c->sunset.n) pt_headers_set(h, a, PT_STR_LIT("Sunset"), c->sunset);
    if (c->link.n) pt_headers_add(h, a, PT_STR_LIT("Link"), c->link);
    if (c->sunset_link.n) pt_headers_add(h, a, PT_STR_LIT("Link"), c->sunset_link);
    return PT_PLUGIN_CONTINUE;
}

const pt_plugin_type pt_plugin_deprecation = {
    .name = "deprecation",
    .configure = deprecation_configure,
    .state_size = 0,
    .on_response_headers = deprecation_on_response_headers,
};
