/* config.c — walks the YAML node tree against the schema (docs/configuration.md)
 * and fills a pt_config: defaults, validation with positions, address
 * resolution, upstreams and plugin lists. Routes live in config_routes.c.
 * Also builds the minimal config of `portico proxy`. */
#include "config/config.h"

#include <errno.h>
#include <inttypes.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config_int.h"

#define PT_CONFIG_MAX_FILE (4u << 20)

const pt_conf_node *pt_conf_opt(const pt_conf_node *map, const char *key)
{
    const pt_conf_node *n = pt_conf_get(map, key);
    return (n && n->kind != PT_NODE_NULL) ? n : NULL;
}

/* ---------------------------------------------------------------- addresses */

typedef struct {
    char host[256];  /* without brackets; empty for a wildcard listener */
    bool bracketed;  /* written as [v6]:port */
    uint16_t port;
} host_port;

/* Splits "host:port" or "[v6]:port" (and, when `wildcard_ok`, "*:port" or
 * ":port" meaning every IPv4 address). Returns NULL, or a static message. */
static const char *split_host_port(const char *s, bool wildcard_ok, host_port *hp)
{
    memset(hp, 0, sizeof(*hp));
    const char *port_str;
    size_t host_len;
    const char *host;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close) return "missing ']' after an IPv6 address";
        host = s + 1;
        host_len = (size_t)(close - host);
        if (host_len == 0) return "empty IPv6 address";
        if (close[1] != ':') return "expected HOST:PORT (missing ':PORT' after ']')";
        port_str = close + 2;
        hp->bracketed = true;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon) return "expected HOST:PORT (missing ':PORT')";
        if (memchr(s, ':', (size_t)(colon - s))) return "IPv6 addresses must be in brackets, e.g. [::1]:8080";
        host = s;
        host_len = (size_t)(colon - s);
        port_str = colon + 1;
        if (host_len == 1 && host[0] == '*') host_len = 0;
        if (host_len == 0 && !wildcard_ok) return "missing host in HOST:PORT";
    }
    if (host_len >= sizeof(hp->host)) return "host name too long";
    for (size_t i = 0; i < host_len; i++)
        if ((unsigned char)host[i] <= ' ' || host[i] == 0x7f || host[i] == '/' || host[i] == '[' || host[i] == ']')
            return "invalid character in host";
    memcpy(hp->host, host, host_len);
    hp->host[host_len] = '\0';
    unsigned long port = 0;
    size_t digits = 0;
    while (port_str[digits] >= '0' && port_str[digits] <= '9' && digits < 6)
        port = port * 10 + (unsigned long)(port_str[digits++] - '0');
    if (digits == 0 || port_str[digits] != '\0' || port < 1 || port > 65535)
        return "invalid port (expected 1..65535)";
    hp->port = (uint16_t)port;
    return NULL;
}

/* Resolves hp into addr->ss (first getaddrinfo result). Listeners use
 * AI_PASSIVE; an empty host (wildcard) binds 0.0.0.0. Returns NULL or a
 * message in `err`. */
static bool resolve_host_port(const host_port *hp, bool passive, pt_conf_addr *addr, char *err, size_t errcap)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = hp->host[0] ? AF_UNSPEC : AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
    char port[8];
    snprintf(port, sizeof(port), "%u", (unsigned)hp->port);
    int rc = getaddrinfo(hp->host[0] ? hp->host : NULL, port, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errcap, "cannot resolve '%s': %s", hp->host, rc ? gai_strerror(rc) : "no address");
        if (res) freeaddrinfo(res);
        return false;
    }
    PT_ASSERT(res->ai_addrlen <= sizeof(addr->ss));
    memset(&addr->ss, 0, sizeof(addr->ss));
    memcpy(&addr->ss, res->ai_addr, res->ai_addrlen);
    addr->sslen = (socklen_t)res->ai_addrlen;
    freeaddrinfo(res);
    return true;
}

/* Parses and resolves the address text of `node` (a scalar) into `addr`
 * (text copied to the arena); on failure records an error at the node. */
/* Parses and resolves "HOST:PORT" `text`; errors are reported at `node`. */
static bool conf_address_text(pt_conf_ctx *ctx, const pt_conf_node *node, char *text, bool listener,
                              pt_conf_addr *addr, host_port *hp)
{
    const char *msg = split_host_port(text, listener, hp);
    if (msg) {
        pt_conf_error(ctx, node, "invalid address '%s': %s", text, msg);
        return false;
    }
    char err[512];
    if (!resolve_host_port(hp, listener, addr, err, sizeof(err))) {
        pt_conf_error(ctx, node, "invalid address '%s': %s", text, err);
        return false;
    }
    addr->text = text;
    return true;
}

/* --- upstream target addresses (DNS: see config_dns.c, docs/dns.md) --- */

/* An upstream target's host: an IP literal (or bracketed IPv6) is used as
 * is; a name is resolved with c-ares and the `dns:` settings, its answer
 * kept in tc for the workers' caches. */
static bool resolve_target(pt_conf_ctx *ctx, const host_port *hp, pt_target_conf *tc, char *err, size_t errcap)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV}, *res = NULL;
    bool numeric = getaddrinfo(hp->host, "1", &hints, &res) == 0;
    if (res) freeaddrinfo(res);
    if (numeric || hp->bracketed) return resolve_host_port(hp, false, &tc->addr, err, errcap);
    return pt_conf_resolve_target(ctx, hp->host, hp->port, tc, err, errcap);
}

static bool conf_target_address(pt_conf_ctx *ctx, const pt_conf_node *node, char *text, pt_target_conf *tc,
                                host_port *hp)
{
    const char *msg = split_host_port(text, false, hp);
    char err[512];
    if (!msg && resolve_target(ctx, hp, tc, err, sizeof(err))) {
        tc->addr.text = text;
        return true;
    }
    pt_conf_error(ctx, node, "invalid address '%s': %s", text, msg ? msg : err);
    return false;
}
/* --- */

static bool conf_address(pt_conf_ctx *ctx, const pt_conf_node *node, bool listener, pt_conf_addr *addr, host_port *hp)
{
    char *text;
    if (!pt_conf_string(ctx, node, &text)) return false;
    return conf_address_text(ctx, node, text, listener, addr, hp);
}

/* "http[s]://host[:port][/]" -> "host:port" in the arena (default port 80 or
 * 443); *https tells the scheme. NULL when `s` has no http(s) scheme (*err
 * stays NULL) or is malformed (*err says why). */
static char *url_host_port(pt_arena *a, const char *s, bool *https, const char **err)
{
    *err = NULL;
    const char *rest;
    if (strncasecmp(s, "http://", 7) == 0) {
        rest = s + 7;
        *https = false;
    } else if (strncasecmp(s, "https://", 8) == 0) {
        rest = s + 8;
        *https = true;
    } else {
        return NULL;
    }
    char *hp = pt_arena_strndup(a, rest, strlen(rest));
    char *slash = strchr(hp, '/');
    if (slash) {
        if (strcmp(slash, "/") != 0) {
            *err = "a path is not supported (only scheme://host[:port])";
            return NULL;
        }
        *slash = '\0';
    }
    /* no ":PORT" (after any IPv6 brackets): the scheme's default port */
    const char *after = hp[0] == '[' ? strchr(hp, ']') : hp;
    if (after && !strchr(after, ':')) hp = pt_arena_printf(a, "%s:%d", hp, *https ? 443 : 80);
    return hp;
}

/* ------------------------------------------------------------ small fields */

static void opt_duration(pt_conf_ctx *ctx, const pt_conf_node *map, const char *key, uint64_t *out)
{
    const pt_conf_node *n = pt_conf_opt(map, key);
    uint64_t v;
    if (!n || !pt_conf_duration_ms(ctx, n, &v)) return;
    if (v == 0) {
        pt_conf_error(ctx, n, "%s must be greater than 0", key);
        return;
    }
    *out = v;
}

static void opt_size32(pt_conf_ctx *ctx, const pt_conf_node *map, const char *key, uint64_t min, uint32_t *out)
{
    const pt_conf_node *n = pt_conf_opt(map, key);
    uint64_t v;
    if (!n || !pt_conf_size(ctx, n, &v)) return;
    if (v < min || v > (1u << 30)) {
        pt_conf_error(ctx, n, "%s must be between %" PRIu64 " and 1g", key, min);
        return;
    }
    *out = (uint32_t)v;
}

static void opt_bool(pt_conf_ctx *ctx, const pt_conf_node *map, const char *key, bool *out)
{
    const pt_conf_node *n = pt_conf_opt(map, key);
    bool v;
    if (n && pt_conf_bool(ctx, n, &v)) *out = v;
}

static int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    if (n > 256) n = 256;
    return (int)n;
}

static void conf_workers(pt_conf_ctx *ctx, const pt_conf_node *root, pt_config *cfg)
{
    cfg->workers = online_cpus();
    const pt_conf_node *n = pt_conf_opt(root, "workers");
    if (!n) return;
    if (n->kind == PT_NODE_SCALAR && strcmp(n->scalar, "auto") == 0) return;
    int64_t v;
    if (n->kind == PT_NODE_SCALAR && n->scalar[0] >= '0' && n->scalar[0] <= '9') {
        if (pt_conf_int(ctx, n, 1, 256, &v)) cfg->workers = (int)v;
        return;
    }
    pt_conf_error(ctx, n, "workers must be an integer 1..256 or \"auto\"");
}

static void conf_limits(pt_conf_ctx *ctx, const pt_conf_node *root, pt_config *cfg)
{
    cfg->limits.max_request_line = 8192;
    cfg->limits.max_header_size = 32768;
    cfg->limits.max_headers = 100;
    cfg->limits.max_body_size = 1ull << 30;
    cfg->limits.min_body_rate = 1024;
    cfg->limits.http2_max_concurrent_streams = 128;
    cfg->limits.max_buffered_body = 1u << 20;
    cfg->limits.stream_buffer = 64u << 10;
    cfg->limits.stream_buffer_memory = 64u << 20;
    cfg->limits.output_buffer = 64u << 10;
    cfg->limits.splice = true;
    const pt_conf_node *m = pt_conf_opt(root, "limits");
    static const char *const keys[] = {"max_request_line", "max_header_size", "max_headers", "max_body_size",
                                       "max_connections", "max_connections_per_client", "min_body_rate",
                                       "http2_max_concurrent_streams", "max_buffered_body", "stream_buffer",
                                       "stream_buffer_memory", "output_buffer", "splice", NULL};
    if (!m || !pt_conf_check_keys(ctx, m, keys, "limits")) return;
    opt_size32(ctx, m, "max_request_line", 64, &cfg->limits.max_request_line);
    opt_size32(ctx, m, "max_header_size", 256, &cfg->limits.max_header_size);
    const pt_conf_node *n = pt_conf_opt(m, "max_headers");
    int64_t v;
    if (n && pt_conf_int(ctx, n, 1, 10000, &v)) cfg->limits.max_headers = (uint32_t)v;
    n = pt_conf_opt(m, "max_body_size");
    uint64_t sz;
    if (n && pt_conf_size(ctx, n, &sz)) cfg->limits.max_body_size = sz;
    n = pt_conf_opt(m, "max_connections");
    if (n && pt_conf_int(ctx, n, 0, 10000000, &v)) cfg->limits.max_connections = (uint32_t)v;
    n = pt_conf_opt(m, "max_connections_per_client");
    if (n && pt_conf_int(ctx, n, 0, 10000000, &v)) cfg->limits.max_connections_per_client = (uint32_t)v;
    n = pt_conf_opt(m, "min_body_rate"); /* bytes per second; 0 disables the rule */
    if (n && pt_conf_size(ctx, n, &sz)) cfg->limits.min_body_rate = sz;
    n = pt_conf_opt(m, "http2_max_concurrent_streams");
    if (n && pt_conf_int(ctx, n, 1, 10000, &v)) cfg->limits.http2_max_concurrent_streams = (uint32_t)v;
    n = pt_conf_opt(m, "max_buffered_body");
    if (n && pt_conf_size(ctx, n, &sz)) cfg->limits.max_buffered_body = sz;
    n = pt_conf_opt(m, "stream_buffer");
    if (n && pt_conf_size(ctx, n, &sz)) {
        if (sz < 16384 || sz > (16u << 20)) pt_conf_error(ctx, n, "stream_buffer must be between 16k and 16m");
        else cfg->limits.stream_buffer = (uint32_t)sz;
    }
    n = pt_conf_opt(m, "stream_buffer_memory");
    if (n && pt_conf_size(ctx, n, &sz)) cfg->limits.stream_buffer_memory = sz;
    n = pt_conf_opt(m, "output_buffer");
    if (n && pt_conf_size(ctx, n, &sz)) {
        if (sz < 16384 || sz > (16u << 20)) pt_conf_error(ctx, n, "output_buffer must be between 16k and 16m");
        else cfg->limits.output_buffer = (uint32_t)sz;
    }
    n = pt_conf_opt(m, "splice");
    if (n) pt_conf_bool(ctx, n, &cfg->limits.splice);
}

static void conf_timeouts(pt_conf_ctx *ctx, const pt_conf_node *root, pt_config *cfg)
{
    cfg->timeouts.header_ms = 10000;
    cfg->timeouts.body_ms = 30000;
    cfg->timeouts.idle_ms = 60000;
    cfg->timeouts.upstream_connect_ms = 5000;
    cfg->timeouts.upstream_read_ms = 60000;
    cfg->timeouts.upstream_write_ms = 60000;
    cfg->timeouts.shutdown_ms = 30000;
    cfg->timeouts.tunnel_idle_ms = 3600000;
    const pt_conf_node *m = pt_conf_opt(root, "timeouts");
    static const char *const keys[] = {"header", "body", "idle", "upstream_connect", "upstream_read",
                                       "upstream_write", "shutdown", "tunnel_idle", NULL};
    if (!m || !pt_conf_check_keys(ctx, m, keys, "timeouts")) return;
    opt_duration(ctx, m, "header", &cfg->timeouts.header_ms);
    opt_duration(ctx, m, "body", &cfg->timeouts.body_ms);
    opt_duration(ctx, m, "idle", &cfg->timeouts.idle_ms);
    opt_duration(ctx, m, "upstream_connect", &cfg->timeouts.upstream_connect_ms);
    opt_duration(ctx, m, "upstream_read", &cfg->timeouts.upstream_read_ms);
    opt_duration(ctx, m, "upstream_write", &cfg->timeouts.upstream_write_ms);
    opt_duration(ctx, m, "shutdown", &cfg->timeouts.shutdown_ms);
    opt_duration(ctx, m, "tunnel_idle", &cfg->timeouts.tunnel_idle_ms);
}

/* ---------------------------------------------------------------- listeners */

/* client_auth {mode, ca}: mode required (default), optional or none; a CA
 * bundle is needed unless the mode is none. *mode: 0 none, 1 optional,
 * 2 required. */
static void conf_client_auth(pt_conf_ctx *ctx, const pt_conf_node *ca, int *mode_out, char **ca_out)
{
    const pt_conf_node *mode = pt_conf_opt(ca, "mode"), *bundle = pt_conf_opt(ca, "ca");
    *mode_out = 2;
    if (mode) {
        if (mode->kind == PT_NODE_SCALAR && strcmp(mode->scalar, "optional") == 0) *mode_out = 1;
        else if (mode->kind == PT_NODE_SCALAR && strcmp(mode->scalar, "none") == 0) *mode_out = 0;
        else if (!(mode->kind == PT_NODE_SCALAR && strcmp(mode->scalar, "required") == 0))
            pt_conf_error(ctx, mode, "client_auth mode must be 'required', 'optional' or 'none'");
    }
    if (bundle) pt_conf_string(ctx, bundle, ca_out);
    else if (*mode_out) pt_conf_error(ctx, ca, "client_auth needs 'ca': a PEM file of the accepted client CAs");
}

/* An optional header-name value (RFC 9110 token) into *out. */
static void conf_header_name(pt_conf_ctx *ctx, const pt_conf_node *n, const char *what, char **out)
{
    if (!n || !pt_conf_string(ctx, n, out)) return;
    if (!**out) pt_conf_error(ctx, n, "%s must be a header name", what);
    for (const char *q = *out; *q; q++)
        if (!strchr("!#$%&'*+-.^_`|~", *q) && !((*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'z') ||
                                                (*q >= 'A' && *q <= 'Z'))) {
            pt_conf_error(ctx, n, "%s must be a header name", what);
            break;
        }
}

/* listen[].tls: {certificates: [{cert, key, client_auth}], min_version, ciphers,
 * ciphersuites, hsts, client_auth}.
 * Files are only named here; they are read when the generation is built
 * (tls/tls_server.c), so a reload re-reads them. */
static void conf_tls(pt_conf_ctx *ctx, const pt_conf_node *t, pt_tls_conf *tls)
{
    static const char *const keys[] = {"certificates", "min_version", "ciphers", "ciphersuites", "hsts",
                                       "client_auth", NULL};
    if (!pt_conf_check_keys(ctx, t, keys, "tls")) return;
    tls->enabled = true;
    tls->min_version = 12;
    tls->line = t->line;
    tls->col = t->col;
    const pt_conf_node *cs = pt_conf_opt(t, "certificates");
    if (!cs || cs->kind != PT_NODE_SEQ || cs->n == 0) {
        pt_conf_error(ctx, cs ? cs : t, "tls needs 'certificates': a non-empty list of {cert: FILE, key: FILE}");
        return;
    }
    tls->certs = pt_arena_calloc(ctx->arena, cs->n * sizeof(*tls->certs));
    for (size_t i = 0; i < cs->n; i++) {
        const pt_conf_node *c = cs->vals[i];
        static const char *const ckeys[] = {"cert", "key", "client_auth", NULL};
        if (!pt_conf_check_keys(ctx, c, ckeys, "tls certificate")) continue;
        pt_tls_cert_conf *cc = &tls->certs[tls->ncerts];
        cc->client_auth = -1;
        const pt_conf_node *cca = pt_conf_opt(c, "client_auth");
        if (cca) {
            /* forward headers stay listener-level: one header per listener */
            static const char *const cakeys[] = {"mode", "ca", NULL};
            const pt_conf_node *fwd = pt_conf_get(cca, "forward_header");
            if (!fwd) fwd = pt_conf_get(cca, "forward_san_header");
            if (fwd)
                pt_conf_error(ctx, fwd, "forward headers are listener-level: set them in tls.client_auth");
            else if (pt_conf_check_keys(ctx, cca, cakeys, "certificate client_auth")) {
                conf_client_auth(ctx, cca, &cc->client_auth, &cc->client_ca);
                cc->ca_line = cca->line;
                cc->ca_col = cca->col;
            }
        }
        const pt_conf_node *cert = pt_conf_opt(c, "cert"), *key = pt_conf_opt(c, "key");
        if (!cert || !key) {
            pt_conf_error(ctx, c, "a tls certificate needs both 'cert' and 'key' (PEM files)");
            continue;
        }
        if (!pt_conf_string(ctx, cert, &cc->cert) || !pt_conf_string(ctx, key, &cc->key)) continue;
        cc->line = c->line;
        cc->col = c->col;
        tls->ncerts++;
    }
    const pt_conf_node *mv = pt_conf_opt(t, "min_version");
    if (mv) {
        if (mv->kind == PT_NODE_SCALAR && (strcmp(mv->scalar, "1.2") == 0 || strcmp(mv->scalar, "1.3") == 0))
            tls->min_version = mv->scalar[2] == '2' ? 12 : 13;
        else
            pt_conf_error(ctx, mv, "tls min_version must be \"1.2\" or \"1.3\"");
    }
    const pt_conf_node *ci = pt_conf_opt(t, "ciphers");
    if (ci) pt_conf_string(ctx, ci, &tls->ciphers);
    const pt_conf_node *su = pt_conf_opt(t, "ciphersuites");
    if (su) pt_conf_string(ctx, su, &tls->ciphersuites);

    const pt_conf_node *h = pt_conf_opt(t, "hsts");
    if (h) {
        static const char *const hkeys[] = {"max_age", "include_subdomains", "preload", NULL};
        if (pt_conf_check_keys(ctx, h, hkeys, "hsts")) {
            const pt_conf_node *ma = pt_conf_opt(h, "max_age");
            int64_t v;
            if (!ma) pt_conf_error(ctx, h, "hsts needs 'max_age' (seconds, e.g. 31536000)");
            else if (pt_conf_int(ctx, ma, 1, 100000000, &v)) tls->hsts_max_age = (uint64_t)v;
            const pt_conf_node *sd = pt_conf_opt(h, "include_subdomains"), *pl = pt_conf_opt(h, "preload");
            if (sd) pt_conf_bool(ctx, sd, &tls->hsts_subdomains);
            if (pl) pt_conf_bool(ctx, pl, &tls->hsts_preload);
        }
    }

    const pt_conf_node *ca = pt_conf_opt(t, "client_auth");
    if (ca) {
        static const char *const akeys[] = {"mode", "ca", "forward_header", "forward_san_header", NULL};
        if (pt_conf_check_keys(ctx, ca, akeys, "client_auth")) {
            conf_client_auth(ctx, ca, &tls->client_auth, &tls->client_ca);
            tls->ca_line = ca->line;
            tls->ca_col = ca->col;
            conf_header_name(ctx, pt_conf_opt(ca, "forward_header"), "forward_header", &tls->client_forward_header);
            conf_header_name(ctx, pt_conf_opt(ca, "forward_san_header"), "forward_san_header",
                             &tls->client_forward_san_header);
        }
    }
}

static void conf_listen(pt_conf_ctx *ctx, const pt_conf_node *root, pt_config *cfg)
{
    const pt_conf_node *l = pt_conf_opt(root, "listen");
    if (!l) {
        const pt_conf_node *at = pt_conf_get(root, "listen");
        pt_conf_error(ctx, at ? at : root, "%s", at ? "listen must be a non-empty list of addresses"
                                                    : "missing required key 'listen'");
        return;
    }
    if (l->kind != PT_NODE_SEQ || l->n == 0) {
        pt_conf_error(ctx, l, "listen must be a non-empty list of addresses (e.g. [\"127.0.0.1:8080\"])");
        return;
    }
    cfg->listeners = pt_arena_calloc(ctx->arena, l->n * sizeof(*cfg->listeners));
    for (size_t i = 0; i < l->n; i++) {
        const pt_conf_node *item = l->vals[i];
        pt_listener_conf lc = {.backlog = 511, .http2 = true, .line = item->line};
        const pt_conf_node *addr = item;
        if (item->kind == PT_NODE_MAP) {
            static const char *const keys[] = {"address", "backlog", "tls", "redirect_https", "http2", NULL};
            if (!pt_conf_check_keys(ctx, item, keys, "listen entry")) continue;
            addr = pt_conf_opt(item, "address");
            if (!addr) {
                pt_conf_error(ctx, item, "listen entry needs an 'address'");
                continue;
            }
            const pt_conf_node *b = pt_conf_opt(item, "backlog");
            int64_t v;
            if (b && pt_conf_int(ctx, b, 1, 65535, &v)) lc.backlog = (int)v;
            const pt_conf_node *t = pt_conf_opt(item, "tls");
            if (t) conf_tls(ctx, t, &lc.tls);
            const pt_conf_node *h2 = pt_conf_opt(item, "http2");
            if (h2) pt_conf_bool(ctx, h2, &lc.http2);
            const pt_conf_node *rd = pt_conf_opt(item, "redirect_https");
            if (rd && pt_conf_int(ctx, rd, 1, 65535, &v)) {
                if (t) pt_conf_error(ctx, rd, "redirect_https is for plain listeners (this one has tls)");
                else lc.redirect_https = (uint16_t)v;
            }
        }
        host_port hp;
        if (!conf_address(ctx, addr, true, &lc.addr, &hp)) continue;
        for (size_t j = 0; j < cfg->nlisteners; j++)
            if (cfg->listeners[j].addr.sslen == lc.addr.sslen &&
                memcmp(&cfg->listeners[j].addr.ss, &lc.addr.ss, lc.addr.sslen) == 0)
                pt_conf_error(ctx, addr, "duplicate listen address '%s' (also at line %d)", lc.addr.text,
                              cfg->listeners[j].line);
        cfg->listeners[cfg->nlisteners++] = lc;
    }
}

/* -------------------------------------------------------------------- admin */

static bool addr_is_loopback(const pt_conf_addr *a)
{
    if (a->ss.ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)(const void *)&a->ss)->sin_addr.s_addr) >> 24) == 127;
    if (a->ss.ss_family == AF_INET6) {
        const struct in6_addr *v6 = &((const struct sockaddr_in6 *)(const void *)&a->ss)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(v6) || (IN6_IS_ADDR_V4MAPPED(v6) && v6->s6_addr[12] == 127);
    }
    return false;
}

static bool addr_is_any(const pt_conf_addr *a)
{
    if (a->ss.ss_family == AF_INET)
        return ((const struct sockaddr_in *)(const void *)&a->ss)->sin_addr.s_addr == htonl(INADDR_ANY);
    return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)(const void *)&a->ss)->sin6_addr);
}

static uint16_t addr_port(const pt_conf_addr *a)
{
    return ntohs(a->ss.ss_family == AF_INET ? ((const struct sockaddr_in *)(const void *)&a->ss)->sin_port
                                            : ((const struct sockaddr_in6 *)(const void *)&a->ss)->sin6_port);
}

/* admin: {listen, token}. The block turns the admin listener on; listen
 * defaults to 127.0.0.1:9901. A non-loopback address needs a token, and the
 * address may not be (or overlap) a proxy listener. Runs after conf_listen. */
static void conf_admin(pt_conf_ctx *ctx, const pt_conf_node *root, pt_config *cfg)
{
    const pt_conf_node *m = pt_conf_get(root, "admin");
    if (!m) return;
    if (m->kind == PT_NODE_NULL) {
        pt_conf_error(ctx, m, "admin must be a mapping, e.g. {listen: 127.0.0.1:9901} ({} for the defaults)");
        return;
    }
    static const char *const keys[] = {"listen", "token", NULL};
    if (!pt_conf_check_keys(ctx, m, keys, "admin")) return;
    cfg->admin.enabled = true;
    cfg->admin.line = m->line;
    const pt_conf_node *tok = pt_conf_opt(m, "token");
    if (tok && pt_conf_string(ctx, tok, &cfg->admin.token)) {
        bool ok = cfg->admin.token[0] != '\0';
        for (const char *q = cfg->admin.token; *q && ok; q++) ok = *q > 0x20 && *q < 0x7f;
        if (!ok) {
            pt_conf_error(ctx, tok, "admin.token must be non-empty visible ASCII without spaces "
                                    "(omit the key for no token)");
            cfg->admin.token = NULL;
        }
    }
    const pt_conf_node *l = pt_conf_opt(m, "listen");
    host_port hp;
    char *text = l ? NULL : pt_arena_strndup(ctx->arena, "127.0.0.1:9901", 14);
    if (l && !pt_conf_string(ctx, l, &text)) return;
    if (!conf_address_text(ctx, l ? l : m, text, true, &cfg->admin.addr, &hp)) return;
    const pt_conf_addr *a = &cfg->admin.addr;
    if (!addr_is_loopback(a) && !tok)
        pt_conf_error(ctx, l ? l : m,
                      "admin.listen %s is not a loopback address: set admin.token (a bearer token, e.g. "
                      "${PORTICO_ADMIN_TOKEN}) to expose the admin listener beyond this host", a->text);
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const pt_conf_addr *b = &cfg->listeners[i].addr;
        if (a->ss.ss_family != b->ss.ss_family || addr_port(a) != addr_port(b)) continue;
        bool same = a->sslen == b->sslen && memcmp(&a->ss, &b->ss, a->sslen) == 0;
        if (same || addr_is_any(a) || addr_is_any(b))
            pt_conf_error(ctx, l ? l : m, "admin.listen %s overlaps the proxy listener %s (line %d): the admin "
                                          "listener needs its own port", a->text, b->text, cfg->listeners[i].line);
    }
}

/* ---------------------------------------------------------------- upstreams */

static bool valid_upstream_name(const char *s)
{
    if (!*s) return false;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '-'))
            return false;
    }
    return true;
}

/* What the targets of an upstream say about TLS. */
typedef enum { TARGETS_BARE, TARGETS_HTTP_URL, TARGETS_HTTPS_URL } targets_scheme;

/* upstreams.NAME.targets: HOST:PORT, http://HOST[:PORT] or https://HOST[:PORT]
 * (also as {address, weight}). Returns TARGETS_HTTPS_URL when they are
 * https:// URLs (mixing https:// with the others is an error),
 * TARGETS_HTTP_URL when at least one is an http:// URL, else TARGETS_BARE. */
static targets_scheme conf_targets(pt_conf_ctx *ctx, const pt_conf_node *t, pt_config *cfg, pt_upstream_conf *u,
                                   const pt_conf_node *unode)
{
    if (!t) {
        pt_conf_error(ctx, unode, "upstream '%s' needs 'targets' (a non-empty list of HOST:PORT)", u->name);
        return TARGETS_BARE;
    }
    if (t->kind != PT_NODE_SEQ || t->n == 0) {
        pt_conf_error(ctx, t, "targets must be a non-empty list of HOST:PORT, {address, weight} or {srv: NAME}");
        return TARGETS_BARE;
    }
    /* {srv: NAME} entries: all of an upstream's targets, or none */
    size_t nsrv = 0;
    const pt_conf_node *plain = NULL;
    for (size_t i = 0; i < t->n; i++) {
        if (t->vals[i]->kind == PT_NODE_MAP && pt_conf_get(t->vals[i], "srv")) nsrv++;
        else if (!plain) plain = t->vals[i];
    }
    if (nsrv && plain) {
        pt_conf_error(ctx, plain, "upstream '%s': targets are either all {srv: NAME} entries or none "
                                  "(mixing SRV names and addresses is not supported)", u->name);
        return TARGETS_BARE;
    }
    if (nsrv) {
        pt_conf_srv_targets(ctx, t, cfg, u);
        return TARGETS_BARE;
    }
    u->targets = pt_arena_calloc(ctx->arena, t->n * sizeof(*u->targets));
    int scheme = -1;      /* 1 https://, 0 anything else */
    bool http_url = false;
    for (size_t i = 0; i < t->n; i++) {
        const pt_conf_node *item = t->vals[i], *addr = item;
        pt_target_conf tc = {.weight = 1};
        if (item->kind == PT_NODE_MAP) {
            static const char *const keys[] = {"address", "weight", NULL};
            if (!pt_conf_check_keys(ctx, item, keys, "target")) continue;
            addr = pt_conf_opt(item, "address");
            if (!addr) {
                pt_conf_error(ctx, item, "target needs an 'address'");
                continue;
            }
            const pt_conf_node *w = pt_conf_opt(item, "weight");
            int64_t v;
            if (w && pt_conf_int(ctx, w, 1, 1000, &v)) tc.weight = (uint32_t)v;
        }
        char *text;
        if (!pt_conf_string(ctx, addr, &text)) continue;
        bool https = false;
        const char *uerr;
        char *hostport = url_host_port(ctx->arena, text, &https, &uerr);
        if (uerr) {
            pt_conf_error(ctx, addr, "invalid target '%s': %s", text, uerr);
            continue;
        }
        int sc = https ? 1 : 0;
        if (hostport && !https) http_url = true;
        if (scheme >= 0 && sc != scheme) {
            pt_conf_error(ctx, addr, "upstream '%s': all targets must use the same scheme (https:// or not)", u->name);
            continue;
        }
        scheme = sc;
        host_port hp;
        if (!conf_target_address(ctx, addr, hostport ? hostport : text, &tc, &hp)) continue;
        tc.host = hp.bracketed ? pt_arena_printf(ctx->arena, "[%s]", hp.host)
                               : pt_arena_strndup(ctx->arena, hp.host, strlen(hp.host));
        tc.port = hp.port;
        u->targets[u->ntargets++] = tc;
    }
    return scheme == 1 ? TARGETS_HTTPS_URL : http_url ? TARGETS_HTTP_URL : TARGETS_BARE;
}

/* upstreams.NAME.tls: {verify, ca, sni, cert, key}; `tls: {}` enables https
 * with verification against the system store. Files are read when the
 * generation is built (tls/tls_client.c). */
static void conf_upstream_tls(pt_conf_ctx *ctx, const pt_conf_node *t, pt_upstream_tls_conf *tls)
{
    static const char *const keys[] = {"verify", "ca", "sni", "cert", "key", NULL};
    tls->enabled = true;
    tls->verify = true;
    tls->line = t->line;
    tls->col = t->col;
    if (t->kind == PT_NODE_NULL) return;
    if (!pt_conf_check_keys(ctx, t, keys, "upstream tls")) return;
    const pt_conf_node *n;
    if ((n = pt_conf_opt(t, "verify"))) pt_conf_bool(ctx, n, &tls->verify);
    if ((n = pt_conf_opt(t, "ca"))) pt_conf_string(ctx, n, &tls->ca);
    if ((n = pt_conf_opt(t, "sni"))) pt_conf_string(ctx, n, &tls->sni);
    if ((n = pt_conf_opt(t, "cert"))) pt_conf_string(ctx, n, &tls->cert);
    if ((n = pt_conf_opt(t, "key"))) pt_conf_string(ctx, n, &tls->key);
    if (!tls->cert != !tls->key) pt_conf_error(ctx, t, "upstream tls: 'cert' and 'key' go together");
}

/* upstreams.NAME.protocol: http1 (default) | h2 (needs tls) | h2c (plain). */
static void conf_upstream_protocol(pt_conf_ctx *ctx, const pt_conf_node *n, pt_upstream_conf *u)
{
    if (!n) return;
    if (n->kind != PT_NODE_SCALAR) {
        pt_conf_error(ctx, n, "upstream '%s': protocol must be one of http1, h2, h2c", u->name);
        return;
    }
    if (strcmp(n->scalar, "http1") == 0) u->protocol = PT_UPROTO_HTTP1;
    else if (strcmp(n->scalar, "h2") == 0) u->protocol = PT_UPROTO_H2;
    else if (strcmp(n->scalar, "h2c") == 0) u->protocol = PT_UPROTO_H2C;
    else {
        pt_conf_error(ctx, n, "upstream '%s': unknown protocol '%s' (expected http1, h2 or h2c)", u->name, n->scalar);
        return;
    }
    if (u->protocol == PT_UPROTO_H2 && !u->tls.enabled)
        pt_conf_error(ctx, n, "upstream '%s': protocol h2 needs 'tls' (use h2c for HTTP/2 over plain TCP)", u->name);
    if (u->protocol == PT_UPROTO_H2C && u->tls.enabled)
        pt_conf_error(ctx, n, "upstream '%s': protocol h2c is plain TCP; use h2 with 'tls'", u->name);
}

static void conf_upstreams(pt_conf_ctx *ctx, const pt_conf_node *root, pt_config *cfg)
{
    const pt_conf_node *m = pt_conf_opt(root, "upstreams");
    if (!m) return;
    if (m->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, m, "upstreams must be a mapping of name -> upstream");
        return;
    }
    cfg->upstreams = pt_arena_calloc(ctx->arena, m->n * sizeof(*cfg->upstreams));
    static const char *const keys[] = {"targets", "keepalive", "keepalive_timeout", "connect_timeout",
                                       "read_timeout", "write_timeout", "preserve_host", "tls", "protocol", "retries",
                                       "balance", "hash_on", "outlier", "circuit_breaker", "health_check", NULL};
    for (size_t i = 0; i < m->n; i++) {
        const pt_conf_node *k = m->keys[i], *v = m->vals[i];
        if (!valid_upstream_name(k->scalar)) {
            pt_conf_error(ctx, k, "invalid upstream name '%s' (allowed: letters, digits, '_', '.', '-')", k->scalar);
            continue;
        }
        pt_upstream_conf *u = &cfg->upstreams[cfg->nupstreams];
        *u = (pt_upstream_conf){
            .name = k->scalar,
            .index = (int)cfg->nupstreams,
            .keepalive = 64,
            .keepalive_timeout_ms = 60000,
            .connect_timeout_ms = cfg->timeouts.upstream_connect_ms,
            .read_timeout_ms = cfg->timeouts.upstream_read_ms,
            .write_timeout_ms = cfg->timeouts.upstream_write_ms,
            .preserve_host = true,
            .retry_budget = {.ratio = 0.2, .min_retries = 3},
            .line = k->line,
        };
        cfg->nupstreams++;
        char what[300];
        snprintf(what, sizeof(what), "upstream '%s'", u->name);
        if (!pt_conf_check_keys(ctx, v, keys, what)) continue;
        const pt_conf_node *tn = pt_conf_opt(v, "targets");
        targets_scheme scheme = conf_targets(ctx, tn, cfg, u, k);
        const pt_conf_node *n = pt_conf_opt(v, "keepalive");
        int64_t iv;
        if (n && pt_conf_int(ctx, n, 0, 10000, &iv)) u->keepalive = (uint32_t)iv;
        opt_duration(ctx, v, "keepalive_timeout", &u->keepalive_timeout_ms);
        opt_duration(ctx, v, "connect_timeout", &u->connect_timeout_ms);
        opt_duration(ctx, v, "read_timeout", &u->read_timeout_ms);
        opt_duration(ctx, v, "write_timeout", &u->write_timeout_ms);
        opt_bool(ctx, v, "preserve_host", &u->preserve_host);
        const pt_conf_node *t = pt_conf_opt(v, "tls");
        if (t) conf_upstream_tls(ctx, t, &u->tls);
        else if (scheme == TARGETS_HTTPS_URL) /* https:// targets alone = `tls: {}` (verified, system store) */
            u->tls = (pt_upstream_tls_conf){.enabled = true, .verify = true, .line = tn->line, .col = tn->col};
        if (t && scheme == TARGETS_HTTP_URL)
            pt_conf_error(ctx, t, "upstream '%s' has http:// targets and 'tls' (use https:// targets)", u->name);
        conf_upstream_protocol(ctx, pt_conf_opt(v, "protocol"), u);
        pt_conf_retries(ctx, pt_conf_opt(v, "retries"), &u->retry, &u->retry_budget);
        pt_conf_upstream_balance(ctx, v, u);
    }
}

/* ------------------------------------------------------------------ plugins */

const pt_upstream_conf *pt_conf_upstream(pt_conf_ctx *ctx, const pt_conf_node *n)
{
    if (!n || n->kind != PT_NODE_SCALAR || !n->scalar_len) {
        pt_conf_error(ctx, n, "expected the name of an upstream");
        return NULL;
    }
    const pt_config *cfg = ctx->cfg;
    for (size_t i = 0; cfg && i < cfg->nupstreams; i++)
        if (strcmp(cfg->upstreams[i].name, n->scalar) == 0) return &cfg->upstreams[i];
    pt_conf_error(ctx, n, "unknown upstream '%s'", n->scalar);
    return NULL;
}

void pt_conf_plugin_list(pt_conf_ctx *ctx, const pt_conf_node *node, pt_plugin_list *out, const char *what)
{
    out->v = NULL;
    out->n = 0;
    if (!node || node->kind == PT_NODE_NULL) return;
    if (node->kind != PT_NODE_SEQ) {
        pt_conf_error(ctx, node, "%s must be a list of {plugin_name: config} entries", what);
        return;
    }
    out->v = pt_arena_calloc(ctx->arena, (node->n ? node->n : 1) * sizeof(*out->v));
    for (size_t i = 0; i < node->n; i++) {
        const pt_conf_node *item = node->vals[i];
        if (item->kind != PT_NODE_MAP || item->n != 1) {
            pt_conf_error(ctx, item, "each entry of %s must be a map with exactly one key, "
                                     "e.g. '- request_id: {}'", what);
            continue;
        }
        if (pt_conf_plugin_instance(ctx, item->keys[0], item->vals[0], &out->v[out->n])) out->n++;
    }
}

/* ------------------------------------------------------------ address lists */

bool pt_ip_set_read(pt_conf_ctx *ctx, const pt_conf_node *list, const char *what, pt_ip_set *set)
{
    if (list->kind != PT_NODE_SEQ) {
        pt_conf_error(ctx, list, "%s: expected a list of IPv4/IPv6 addresses or CIDRs", what);
        return false;
    }
    if (list->n == 0) {
        pt_conf_error(ctx, list, "%s: empty list (list at least one address or CIDR, or remove the key)", what);
        return false;
    }
    pt_ip_cidr *v = pt_xcalloc(list->n, sizeof(*v));
    bool ok = true;
    for (size_t i = 0; i < list->n; i++) {
        const pt_conf_node *it = list->vals[i];
        char err[128];
        if (it->kind != PT_NODE_SCALAR) {
            pt_conf_error(ctx, it, "%s: expected an IPv4/IPv6 address or CIDR, got a %s", what,
                          it->kind == PT_NODE_MAP ? "mapping" : it->kind == PT_NODE_SEQ ? "list" : "null");
            ok = false;
        } else if (!pt_ip_cidr_parse(pt_str_make(it->scalar, it->scalar_len), &v[i], err, sizeof err)) {
            pt_conf_error(ctx, it, "%s: %s: %s", what, it->scalar, err);
            ok = false;
        }
    }
    if (ok) pt_ip_set_build(v, list->n, ctx->arena, set);
    free(v);
    return ok;
}

/* ------------------------------------------------------------------ loading */

static pt_config *config_new(const char *name, pt_conf_ctx *ctx, struct pt_metrics *metrics, pt_errors *errors)
{
    pt_arena *a = pt_arena_new(64 * 1024);
    pt_config *cfg = pt_arena_calloc(a, sizeof(*cfg));
    cfg->arena = a;
    cfg->file = pt_arena_strndup(a, name, strlen(name));
    *ctx = (pt_conf_ctx){.file = cfg->file, .arena = a, .errors = errors, .cfg = cfg, .metrics = metrics};
    return cfg;
}

/* Fills cfg from the parsed root; every section reports its own errors. */
static void config_from_tree(pt_conf_ctx *ctx, const pt_conf_node *root, pt_config *cfg)
{
    static const char *const keys[] = {"workers", "listen", "limits", "timeouts", "access_log", "error_log",
                                       "upstreams", "plugins", "routes", "trusted_proxies", "client_ip_header",
                                       "server_header", "via", "admin", "dns", "path_rules", "consumers",
                                       "identity_headers", "tracing", NULL};
    cfg->root = root;
    if (root->kind == PT_NODE_NULL) {
        pt_conf_error(ctx, root, "configuration is empty (at least 'listen' and 'routes' are needed)");
        return;
    }
    if (!pt_conf_check_keys(ctx, root, keys, "top level") && root->kind != PT_NODE_MAP) return;
    conf_workers(ctx, root, cfg);
    conf_limits(ctx, root, cfg);
    conf_timeouts(ctx, root, cfg);
    pt_conf_access_log(ctx, root, cfg);
    pt_conf_error_log(ctx, root, cfg);
    pt_conf_tracing(ctx, root, cfg);
    conf_listen(ctx, root, cfg);
    conf_admin(ctx, root, cfg);
    pt_conf_dns(ctx, root, cfg); /* before the upstreams: their names are resolved with it */
    conf_upstreams(ctx, root, cfg);
    const pt_conf_node *sh = pt_conf_opt(root, "server_header");
    if (sh && pt_conf_string(ctx, sh, &cfg->server_header)) {
        for (const char *q = cfg->server_header; *q; q++)
            if ((unsigned char)*q < 0x20 || *q == 0x7f) {
                pt_conf_error(ctx, sh, "server_header must not contain control characters");
                break;
            }
        if (!*cfg->server_header) cfg->server_header = NULL;
    }
    const pt_conf_node *via = pt_conf_opt(root, "via");
    if (via) pt_conf_bool(ctx, via, &cfg->via);
    const pt_conf_node *cih = pt_conf_opt(root, "client_ip_header");
    if (cih) {
        if (cih->kind == PT_NODE_SCALAR && strcasecmp(cih->scalar, "forwarded") == 0) cfg->client_ip_forwarded = true;
        else if (!(cih->kind == PT_NODE_SCALAR && strcasecmp(cih->scalar, "x-forwarded-for") == 0))
            pt_conf_error(ctx, cih, "client_ip_header must be X-Forwarded-For or Forwarded");
    }
    const pt_conf_node *tp = pt_conf_opt(root, "trusted_proxies");
    if (tp && pt_ip_set_read(ctx, tp, "trusted_proxies", &cfg->trusted_proxies)) cfg->has_trusted_proxies = true;
    pt_conf_read_consumers(ctx, root, cfg); /* before plugins and routes: they name consumers */
    ctx->scope = "global";
    pt_conf_plugin_list(ctx, pt_conf_get(root, "plugins"), &cfg->plugins, "plugins");
    ctx->scope = NULL;
    pt_conf_path_rules(ctx, pt_conf_opt(root, "path_rules"), &cfg->path_rules); /* before routes: inherited */
    pt_conf_routes(ctx, pt_conf_opt(root, "routes"), cfg);
}

static pt_config *load_string(const char *name, const char *text, size_t len, struct pt_metrics *metrics,
                              const pt_config *running, pt_errors *errors)
{
    pt_conf_ctx ctx;
    pt_config *cfg = config_new(name ? name : "<config>", &ctx, metrics, errors);
    ctx.running = running;
    size_t before = errors->n;
    pt_conf_node *root = pt_conf_parse_yaml(&ctx, text, len);
    if (root) config_from_tree(&ctx, root, cfg);
    if (!root || errors->n != before) {
        pt_config_free(cfg);
        return NULL;
    }
    return cfg;
}

pt_config *pt_config_load_string(const char *name, const char *text, size_t len, pt_errors *errors)
{
    return load_string(name, text, len, NULL, NULL, errors);
}

pt_config *pt_config_load_file_metrics(const char *path, struct pt_metrics *metrics, pt_errors *errors)
{
    return pt_config_reload_file(path, metrics, NULL, errors);
}

pt_config *pt_config_reload_file(const char *path, struct pt_metrics *metrics, const pt_config *running,
                                 pt_errors *errors)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        pt_errors_add(errors, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && st.st_size > (off_t)PT_CONFIG_MAX_FILE) {
        pt_errors_add(errors, "%s: file too large (%lld bytes; the limit is 4 MiB)", path, (long long)st.st_size);
        fclose(f);
        return NULL;
    }
    /* Read up to one byte past the limit so growth after fstat is caught too. */
    char *buf = pt_xmalloc(PT_CONFIG_MAX_FILE + 1);
    size_t len = fread(buf, 1, PT_CONFIG_MAX_FILE + 1, f);
    bool read_err = ferror(f);
    fclose(f);
    pt_config *cfg = NULL;
    if (read_err)
        pt_errors_add(errors, "%s: read error", path);
    else if (len > PT_CONFIG_MAX_FILE)
        pt_errors_add(errors, "%s: file too large (the limit is 4 MiB)", path);
    else
        cfg = load_string(path, buf, len, metrics, running, errors);
    free(buf);
    return cfg;
}

pt_config *pt_config_load_file(const char *path, pt_errors *errors)
{
    return pt_config_load_file_metrics(path, NULL, errors);
}

void pt_config_free(pt_config *cfg)
{
    if (cfg) pt_arena_free(cfg->arena);
}

/* ------------------------------------------------------------ proxy config */

/* Parses one "http[s]://host[:port][/]" URL of --to into a target (default
 * port 80 / 443); *https tells the scheme. Errors are recorded as
 * "--to: ...". */
static bool proxy_target(pt_conf_ctx *ctx, const char *url, size_t len, pt_target_conf *tc, bool *https)
{
    char *u = pt_arena_strndup(ctx->arena, url, len);
    const char *uerr;
    char *hostport = url_host_port(ctx->arena, u, https, &uerr);
    if (!hostport) {
        pt_errors_add(ctx->errors, "--to: '%s': %s", u, uerr ? uerr : "expected a URL like http://host:port or https://host[:port]");
        return false;
    }
    host_port hp;
    const char *msg = split_host_port(hostport, false, &hp);
    char err[512];
    if (msg) {
        pt_errors_add(ctx->errors, "--to: '%s': %s", u, msg);
        return false;
    }
    if (!resolve_target(ctx, &hp, tc, err, sizeof(err))) {
        pt_errors_add(ctx->errors, "--to: '%s': %s", u, err);
        return false;
    }
    tc->addr.text = hostport;
    tc->host = hp.bracketed ? pt_arena_printf(ctx->arena, "[%s]", hp.host)
                            : pt_arena_strndup(ctx->arena, hp.host, strlen(hp.host));
    tc->port = hp.port;
    tc->weight = 1;
    return true;
}

/* Builds: workers auto, default limits/timeouts, access log to stdout, one
 * listener, one upstream "default" with the --to targets, and one route
 * "default" matching everything -> that upstream. No plugins. */
pt_config *pt_config_for_proxy(const pt_proxy_opts *opts, pt_errors *errors)
{
    const char *listen = opts->listen, *to_urls = opts->to;
    pt_conf_ctx ctx;
    pt_config *cfg = config_new("command line", &ctx, NULL, errors);
    size_t before = errors->n;
    pt_conf_node empty = {.kind = PT_NODE_MAP, .line = 0};
    conf_workers(&ctx, &empty, cfg);
    conf_limits(&ctx, &empty, cfg);
    conf_timeouts(&ctx, &empty, cfg);
    pt_conf_access_log(&ctx, &empty, cfg);
    pt_conf_error_log(&ctx, &empty, cfg);
    pt_conf_tracing(&ctx, &empty, cfg);
    pt_dns_conf_defaults(&cfg->dns);

    host_port hp;
    const char *msg = listen ? split_host_port(listen, true, &hp) : "missing";
    cfg->listeners = pt_arena_calloc(ctx.arena, sizeof(*cfg->listeners));
    pt_listener_conf *lc = &cfg->listeners[0];
    char err[512];
    if (msg) {
        pt_errors_add(errors, "--listen: '%s': %s", listen ? listen : "", msg);
    } else if (!resolve_host_port(&hp, true, &lc->addr, err, sizeof(err))) {
        pt_errors_add(errors, "--listen: '%s': %s", listen, err);
    } else {
        lc->addr.text = pt_arena_strndup(ctx.arena, listen, strlen(listen));
        lc->backlog = 511;
        lc->http2 = true;
        cfg->nlisteners = 1;
    }

    size_t max_targets = 1;
    for (const char *p = to_urls ? to_urls : ""; *p; p++) max_targets += *p == ',';
    pt_upstream_conf *u = pt_arena_calloc(ctx.arena, sizeof(*u));
    *u = (pt_upstream_conf){
        .name = pt_arena_strndup(ctx.arena, "default", 7),
        .targets = pt_arena_calloc(ctx.arena, max_targets * sizeof(*u->targets)),
        .keepalive = 64,
        .keepalive_timeout_ms = 60000,
        .connect_timeout_ms = cfg->timeouts.upstream_connect_ms,
        .read_timeout_ms = cfg->timeouts.upstream_read_ms,
        .write_timeout_ms = cfg->timeouts.upstream_write_ms,
        .preserve_host = true,
    };
    const char *p = to_urls ? to_urls : "";
    int scheme = -1; /* of the first valid URL: 0 http, 1 https */
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        while (len && (*p == ' ' || *p == '\t')) { p++; len--; }
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t')) len--;
        if (len == 0) {
            pt_errors_add(errors, "--to: empty URL in the list");
        } else {
            bool https = false;
            if (proxy_target(&ctx, p, len, &u->targets[u->ntargets], &https)) {
                if (scheme >= 0 && scheme != (int)https)
                    pt_errors_add(errors, "--to: '%.*s': all URLs must use the same scheme (http:// or https://)",
                                  (int)len, p);
                scheme = https;
                u->ntargets++;
            }
        }
        if (!comma) break;
        p = comma + 1;
    }
    if (u->ntargets == 0 && errors->n == before) pt_errors_add(errors, "--to: at least one upstream URL is needed");
    if (scheme == 1) {
        /* https: verification on (system store or --ca); SNI and the
         * verified name are each target's host */
        u->tls = (pt_upstream_tls_conf){.enabled = true, .verify = !opts->insecure};
        if (opts->ca) u->tls.ca = pt_arena_strndup(ctx.arena, opts->ca, strlen(opts->ca));
    } else if (scheme == 0 && (opts->ca || opts->insecure)) {
        pt_errors_add(errors, "--ca/--insecure apply to https:// upstreams only");
    }
    cfg->upstreams = u;
    cfg->nupstreams = 1;

    pt_route_conf *r = pt_arena_calloc(ctx.arena, sizeof(*r));
    r->name = pt_arena_strndup(ctx.arena, "default", 7);
    r->path_kind = PT_PATH_ANY;
    r->upstream = u;
    r->max_body_size = cfg->limits.max_body_size;
    r->body_timeout_ms = cfg->timeouts.body_ms;
    r->min_body_rate = cfg->limits.min_body_rate;
    cfg->routes = r;
    cfg->nroutes = 1;

    if (errors->n != before) {
        pt_config_free(cfg);
        return NULL;
    }
    return cfg;
}
