/* tls_server.c — see tls_server.h. */
#include "tls/tls_server.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

typedef struct {
    SSL_CTX *ctx;
    char **names; /* lowercased DNS names; may start with "*." */
    size_t nnames;
    int verify_mode;                /* SSL_VERIFY_* of this certificate's client_auth policy */
    unsigned char sid_ctx[32];      /* session id context: sessions resume only here */
    unsigned int sid_ctx_len;
    uintptr_t policy;               /* client_auth policy key (also the SSL_CTX's app data) */
} tls_cert;

struct pt_tls_server {
    tls_cert *certs; /* [0] is the default; its SSL_CTX carries the callbacks */
    size_t ncerts;
    bool http2;      /* offer ALPN h2 */
    bool uniform;    /* every certificate has the same client_auth policy */
};

/* The last OpenSSL error as text (static buffer; config load is single-threaded). */
static const char *ossl_error(void)
{
    static char buf[256];
    unsigned long e = ERR_get_error();
    if (!e) return "unknown error";
    ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    return buf;
}

static void add_name(tls_cert *c, const char *name, size_t n)
{
    char *s = pt_xstrndup(name, n);
    for (char *p = s; *p; p++)
        if (*p >= 'A' && *p <= 'Z') *p = (char)(*p + 32);
    c->names = pt_xrealloc(c->names, (c->nnames + 1) * sizeof(*c->names));
    c->names[c->nnames++] = s;
}

/* Collects the certificate's DNS names (SAN, else CN). */
static void collect_names(tls_cert *c, X509 *x)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    if (sans) {
        for (int i = 0; i < sk_GENERAL_NAME_num(sans); i++) {
            const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
            if (g->type != GEN_DNS) continue;
            const unsigned char *d = ASN1_STRING_get0_data(g->d.dNSName);
            add_name(c, (const char *)d, (size_t)ASN1_STRING_length(g->d.dNSName));
        }
        GENERAL_NAMES_free(sans);
    }
    if (c->nnames) return;
    char cn[256];
    int n = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
    if (n > 0) add_name(c, cn, (size_t)n);
}

/* Exact match scores highest; a wildcard "*.b.c" matches "a.b.c" (one label)
 * and scores by suffix length. Returns -1 if no match. Only host[0..hlen)
 * is compared. */
static int name_score(const char *pattern, const char *host, size_t hlen)
{
    if (pattern[0] == '*' && pattern[1] == '.') {
        size_t sl = strlen(pattern + 1); /* ".b.c" */
        if (hlen <= sl || strncasecmp(host + hlen - sl, pattern + 1, sl) != 0) return -1;
        if (memchr(host, '.', hlen - sl) != NULL) return -1; /* exactly one label */
        return (int)sl;
    }
    return strlen(pattern) == hlen && strncasecmp(pattern, host, hlen) == 0 ? 1 << 20 : -1;
}

/* The certificate for SNI `host` (host[0..hlen), need not be NUL-terminated):
 * exact names first, then the longest matching one-label wildcard, else the
 * default (index 0). With `deep`, a host that matches nothing that way falls
 * to the certificate with the longest wildcard suffix at any depth
 * ("*.b.c" for "x.y.b.c"), as the router's wildcard hosts match: used by
 * the per-request host check so that a host no certificate covers is still
 * judged by the policy of the wildcard it routes under. */
static size_t pick_cert(const pt_tls_server *s, const char *host, size_t hlen, bool deep)
{
    if (hlen && host[hlen - 1] == '.') hlen--; /* "a.example." is "a.example" (as the router sees it) */
    int best = -1;
    size_t pick = 0;
    for (size_t i = 0; i < s->ncerts; i++)
        for (size_t j = 0; j < s->certs[i].nnames; j++) {
            int sc = name_score(s->certs[i].names[j], host, hlen);
            if (sc > best) {
                best = sc;
                pick = i;
            }
        }
    if (best >= 0 || !deep) return pick;
    size_t longest = 0;
    for (size_t i = 0; i < s->ncerts; i++)
        for (size_t j = 0; j < s->certs[i].nnames; j++) {
            const char *pat = s->certs[i].names[j];
            if (pat[0] != '*' || pat[1] != '.') continue;
            size_t sl = strlen(pat + 1); /* ".b.c" */
            if (hlen > sl && sl > longest && strncasecmp(host + hlen - sl, pat + 1, sl) == 0) {
                longest = sl;
                pick = i;
            }
        }
    return pick;
}

/* The host_name entry of a raw server_name extension (RFC 6066 §3) into
 * `out` (NUL-terminated); false if absent or malformed. */
static bool sni_host(const unsigned char *p, size_t len, char *out, size_t outsz)
{
    if (len < 2) return false;
    size_t list = (size_t)p[0] << 8 | p[1];
    if (list != len - 2) return false;
    p += 2;
    len -= 2;
    while (len >= 3) {
        unsigned type = p[0];
        size_t n = (size_t)p[1] << 8 | p[2];
        if (n > len - 3) return false;
        if (type == TLSEXT_NAMETYPE_host_name) {
            if (n == 0 || n >= outsz || memchr(p + 3, 0, n)) return false;
            memcpy(out, p + 3, n);
            out[n] = '\0';
            return true;
        }
        p += 3 + n;
        len -= 3 + n;
    }
    return false;
}

/* ClientHello callback (runs before session resumption is decided and
 * before the extensions are processed): selects the certificate by SNI and
 * applies its client_auth policy to the connection. SSL_set_SSL_CTX swaps
 * the certificate, the CA store and the client CA list, but not the verify
 * mode/depth (copied at SSL_new), so they are set here; the session id
 * context is set explicitly so that a session (cache or ticket, TLS 1.2 or
 * 1.3) only resumes under the certificate - and so the client_auth policy -
 * it was established with: a client cannot skip client authentication by
 * resuming a session from a host that did not ask for it. */
static int on_client_hello(SSL *ssl, int *alert, void *arg)
{
    (void)alert;
    pt_tls_server *s = arg;
    const unsigned char *ext;
    size_t len;
    char host[256];
    size_t pick = 0;
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &ext, &len) &&
        sni_host(ext, len, host, sizeof(host)))
        pick = pick_cert(s, host, strlen(host), false);
    const tls_cert *c = &s->certs[pick];
    if (SSL_get_SSL_CTX(ssl) != c->ctx) SSL_set_SSL_CTX(ssl, c->ctx);
    if (SSL_set_session_id_context(ssl, c->sid_ctx, c->sid_ctx_len) != 1) return SSL_CLIENT_HELLO_ERROR;
    SSL_set_verify(ssl, c->verify_mode, NULL);
    SSL_set_verify_depth(ssl, 8);
    return SSL_CLIENT_HELLO_SUCCESS;
}

/* Acknowledges SNI (the certificate was already chosen by on_client_hello). */
static int on_sni(SSL *ssl, int *alert, void *arg)
{
    (void)ssl;
    (void)alert;
    (void)arg;
    return SSL_TLSEXT_ERR_OK;
}

static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                   unsigned int inlen, void *arg)
{
    static const unsigned char with_h2[] = "\x02h2\x08http/1.1"; /* server preference: h2 first */
    const pt_tls_server *s = arg;
    const unsigned char *ours = s->http2 ? with_h2 : with_h2 + 3;
    unsigned int ours_len = s->http2 ? sizeof(with_h2) - 1 : sizeof(with_h2) - 4;
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, ours, ours_len, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK; /* no common protocol: continue without ALPN */
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* One certificate's context; its client_auth policy is the certificate's own
 * (cc->client_auth >= 0) or else the listener's. */
static SSL_CTX *make_ctx(const pt_tls_conf *conf, const pt_tls_cert_conf *cc, const char *file, pt_errors *errors)
{
    bool own = cc->client_auth >= 0;
    int auth = own ? cc->client_auth : conf->client_auth;
    const char *ca = own ? cc->client_ca : conf->client_ca;
    int ca_line = own ? cc->ca_line : conf->ca_line, ca_col = own ? cc->ca_col : conf->ca_col;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        pt_errors_add(errors, "%s:%d:%d: cannot create a TLS context: %s", file, cc->line, cc->col, ossl_error());
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, conf->min_version == 13 ? TLS1_3_VERSION : TLS1_2_VERSION);
    /* IGNORE_UNEXPECTED_EOF: a client that half-closes TCP after its request
     * without close_notify still gets its response; HTTP framing already
     * detects truncated requests. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    if (conf->ciphers && SSL_CTX_set_cipher_list(ctx, conf->ciphers) != 1) {
        pt_errors_add(errors, "%s:%d:%d: invalid tls ciphers '%s': %s", file, conf->line, conf->col, conf->ciphers,
                      ossl_error());
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (conf->ciphersuites && SSL_CTX_set_ciphersuites(ctx, conf->ciphersuites) != 1) {
        pt_errors_add(errors, "%s:%d:%d: invalid tls ciphersuites '%s': %s", file, conf->line, conf->col,
                      conf->ciphersuites, ossl_error());
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cc->cert) != 1) {
        pt_errors_add(errors, "%s:%d:%d: cannot load certificate %s: %s", file, cc->line, cc->col, cc->cert,
                      ossl_error());
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cc->key, SSL_FILETYPE_PEM) != 1) {
        if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
            ERR_clear_error();
            pt_errors_add(errors, "%s:%d:%d: private key %s does not match certificate %s", file, cc->line, cc->col,
                          cc->key, cc->cert);
        } else {
            pt_errors_add(errors, "%s:%d:%d: cannot load private key %s: %s", file, cc->line, cc->col, cc->key,
                          ossl_error());
        }
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (auth) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
        if (!names || SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
            if (names) sk_X509_NAME_pop_free(names, X509_NAME_free);
            pt_errors_add(errors, "%s:%d:%d: cannot load client_auth ca %s: %s", file, ca_line, ca_col, ca,
                          ossl_error());
            SSL_CTX_free(ctx);
            return NULL;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        /* required: no certificate fails the handshake; optional: none is
         * fine, but a certificate that fails verification still fails it. */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (auth == 2 ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
        SSL_CTX_set_verify_depth(ctx, 8);
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        pt_errors_add(errors, "%s:%d:%d: private key %s does not match certificate %s", file, cc->line, cc->col,
                      cc->key, cc->cert);
        ERR_clear_error();
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* A key for a certificate's effective client_auth policy: 0 for none, else
 * an FNV-1a hash (never 0) of the mode and the CA bundle's bytes (its path
 * if it cannot be read; make_ctx has loaded it already). Equal keys mean
 * the same policy, across generations too: replacing the bundle at the same
 * path and reloading changes the key, so connections authenticated under
 * the old CAs get 421 for hosts of this certificate. Config load only. */
static uintptr_t policy_key(const pt_tls_conf *conf, const pt_tls_cert_conf *cc)
{
    bool own = cc->client_auth >= 0;
    int auth = own ? cc->client_auth : conf->client_auth;
    const char *ca = own ? cc->client_ca : conf->client_ca;
    if (!auth) return 0;
    uint64_t h = 1469598103934665603ull ^ (uint64_t)auth;
    FILE *f = ca ? fopen(ca, "rb") : NULL;
    if (f) {
        unsigned char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
            for (size_t i = 0; i < n; i++) h = (h ^ buf[i]) * 1099511628211ull;
        fclose(f);
    } else {
        for (const char *p = ca ? ca : ""; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    }
    return (uintptr_t)(h | 1);
}

pt_tls_server *pt_tls_server_new(const pt_tls_conf *conf, bool http2, const char *file, pt_errors *errors)
{
    pt_tls_server *s = pt_xcalloc(1, sizeof(*s));
    s->http2 = http2;
    s->certs = pt_xcalloc(conf->ncerts ? conf->ncerts : 1, sizeof(*s->certs));
    for (size_t i = 0; i < conf->ncerts; i++) {
        SSL_CTX *ctx = make_ctx(conf, &conf->certs[i], file, errors);
        if (!ctx) {
            pt_tls_server_free(s);
            return NULL;
        }
        tls_cert *c = &s->certs[s->ncerts];
        c->ctx = ctx;
        c->verify_mode = SSL_CTX_get_verify_mode(ctx);
        c->sid_ctx_len = (unsigned)snprintf((char *)c->sid_ctx, sizeof(c->sid_ctx), "portico/%zu", s->ncerts);
        SSL_CTX_set_session_id_context(ctx, c->sid_ctx, c->sid_ctx_len);
        c->policy = policy_key(conf, &conf->certs[i]);
        SSL_CTX_set_app_data(ctx, (void *)c->policy);
        s->ncerts++;
        collect_names(c, SSL_CTX_get0_certificate(ctx));
        SSL_CTX_set_alpn_select_cb(ctx, on_alpn, s);
    }
    if (!s->ncerts) {
        pt_errors_add(errors, "%s:%d:%d: tls needs at least one certificate", file, conf->line, conf->col);
        pt_tls_server_free(s);
        return NULL;
    }
    s->uniform = true;
    for (size_t i = 1; i < s->ncerts; i++)
        if (s->certs[i].policy != s->certs[0].policy) s->uniform = false;
    SSL_CTX_set_client_hello_cb(s->certs[0].ctx, on_client_hello, s);
    SSL_CTX_set_tlsext_servername_callback(s->certs[0].ctx, on_sni);
    SSL_CTX_set_tlsext_servername_arg(s->certs[0].ctx, s);
    return s;
}

void pt_tls_server_free(pt_tls_server *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->ncerts; i++) {
        SSL_CTX_free(s->certs[i].ctx);
        for (size_t j = 0; j < s->certs[i].nnames; j++) free(s->certs[i].names[j]);
        free(s->certs[i].names);
    }
    free(s->certs);
    free(s);
}

char *pt_tls_peer_subject(SSL *ssl)
{
    X509 *peer = SSL_get1_peer_certificate(ssl);
    if (!peer) return NULL;
    char *out = NULL;
    if (SSL_get_verify_result(ssl) == X509_V_OK) {
        BIO *bio = BIO_new(BIO_s_mem());
        if (bio && X509_NAME_print_ex(bio, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253) >= 0) {
            char *data = NULL;
            long n = BIO_get_mem_data(bio, &data);
            if (n > 0 && n < 4096) {
                out = pt_xstrndup(data, (size_t)n);
                /* a header value must not carry CR/LF/NUL (escaped DNs can) */
                for (char *q = out; *q; q++)
                    if ((unsigned char)*q < 0x20 || *q == 0x7f) *q = '?';
            }
        }
        BIO_free(bio);
    }
    X509_free(peer);
    return out;
}

/* Appends `n` bytes of a SAN value to out[*len] (capacity cap): control
 * characters become '?', ',' becomes "%2C" (the list separator). False
 * when it does not fit. */
static bool san_append(char *out, size_t *len, size_t cap, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch == ',') {
            if (*len + 3 >= cap) return false;
            memcpy(out + *len, "%2C", 3);
            *len += 3;
            continue;
        }
        if (*len + 1 >= cap) return false;
        out[(*len)++] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
    }
    return true;
}

char *pt_tls_format_sans(X509 *x)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    if (!sans) return NULL;
    char buf[PT_TLS_SANS_MAX];
    size_t len = 0;
    bool fits = true;
    for (int i = 0; fits && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        const char *prefix;
        const ASN1_STRING *v;
        char ip[INET6_ADDRSTRLEN];
        switch (g->type) {
        case GEN_DNS: prefix = "DNS:"; v = g->d.dNSName; break;
        case GEN_URI: prefix = "URI:"; v = g->d.uniformResourceIdentifier; break;
        case GEN_EMAIL: prefix = "email:"; v = g->d.rfc822Name; break;
        case GEN_IPADD: prefix = "IP:"; v = g->d.iPAddress; break;
        default: continue; /* otherName, dirName, RID, ...: not exposed */
        }
        const char *data = (const char *)ASN1_STRING_get0_data(v);
        size_t n = (size_t)ASN1_STRING_length(v);
        if (g->type == GEN_IPADD) {
            int af = n == 4 ? AF_INET : n == 16 ? AF_INET6 : 0;
            if (!af || !inet_ntop(af, data, ip, sizeof(ip))) continue;
            data = ip;
            n = strlen(ip);
        }
        if (len) {
            if (len + 1 >= sizeof(buf)) {
                fits = false;
                break;
            }
            buf[len++] = ',';
        }
        fits = san_append(buf, &len, sizeof(buf), prefix, strlen(prefix)) &&
               san_append(buf, &len, sizeof(buf), data, n);
    }
    GENERAL_NAMES_free(sans);
    if (!fits || !len) return NULL;
    return pt_xstrndup(buf, len);
}

char *pt_tls_peer_sans(SSL *ssl)
{
    X509 *peer = SSL_get1_peer_certificate(ssl);
    if (!peer) return NULL;
    char *out = SSL_get_verify_result(ssl) == X509_V_OK ? pt_tls_format_sans(peer) : NULL;
    X509_free(peer);
    return out;
}

uintptr_t pt_tls_conn_policy(SSL *ssl)
{
    return (uintptr_t)SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
}

bool pt_tls_host_allowed(const pt_tls_server *s, uintptr_t conn_policy, pt_str host)
{
    if (s->uniform) return s->certs[0].policy == conn_policy;
    return s->certs[pick_cert(s, host.p, host.n, true)].policy == conn_policy;
}

SSL *pt_tls_server_ssl(pt_tls_server *s, int fd)
{
    SSL *ssl = SSL_new(s->certs[0].ctx);
    if (!ssl) return NULL;
    if (SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_accept_state(ssl);
    return ssl;
}
