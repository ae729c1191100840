/* tls_client.c — see tls_client.h. */
#include "tls/tls_client.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

static const char *ossl_err(void)
{
    static char buf[256];
    unsigned long e = ERR_get_error();
    if (!e) return "unknown error";
    ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    return buf;
}

/* The ex_data index of an SSL object's pt_tls_session_slot (allocated once,
 * on first use, by whichever thread comes first). */
static int slot_idx = -1;
static pthread_once_t slot_once = PTHREAD_ONCE_INIT;

static void slot_index_init(void) { slot_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL); }

static int slot_index(void)
{
    pthread_once(&slot_once, slot_index_init);
    return slot_idx;
}

static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    pt_tls_session_slot *slot = SSL_get_ex_data(ssl, slot_index());
    if (!slot || !SSL_SESSION_is_resumable(sess)) return 0; /* not kept: OpenSSL frees it */
    pt_tls_session_slot_clear(slot);
    slot->sess = sess; /* returning 1 hands us the reference */
    slot->ctx = SSL_get_SSL_CTX(ssl);
    SSL_CTX_up_ref(slot->ctx);
    return 1;
}

SSL_CTX *pt_tls_client_ctx_new(const pt_upstream_tls_conf *conf, bool h2, const char *file, pt_errors *errors)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        pt_errors_add(errors, "%s:%d:%d: cannot create a TLS context: %s", file, conf->line, conf->col, ossl_err());
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    /* Sessions go to the connection's pool slot (pt_tls_client_resume), not
     * to OpenSSL's internal cache. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    /* Offer only the protocol we will speak: an h2 upstream that cannot
     * select h2 fails the connection (h2_client.c checks the result). */
    static const unsigned char alpn_h1[] = "\x08http/1.1";
    static const unsigned char alpn_h2[] = "\x02h2";
    if (h2) SSL_CTX_set_alpn_protos(ctx, alpn_h2, sizeof(alpn_h2) - 1);
    else SSL_CTX_set_alpn_protos(ctx, alpn_h1, sizeof(alpn_h1) - 1);
    if (conf->verify) {
        int ok = conf->ca ? SSL_CTX_load_verify_locations(ctx, conf->ca, NULL) : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1) {
            pt_errors_add(errors, "%s:%d:%d: cannot load upstream tls ca %s: %s", file, conf->line, conf->col,
                          conf->ca ? conf->ca : "(system store)", ossl_err());
            SSL_CTX_free(ctx);
            return NULL;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    if (conf->cert) {
        if (SSL_CTX_use_certificate_chain_file(ctx, conf->cert) != 1 ||
            SSL_CTX_use_PrivateKey_file(ctx, conf->key, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
            pt_errors_add(errors, "%s:%d:%d: cannot load upstream client certificate %s / key %s: %s", file,
                          conf->line, conf->col, conf->cert, conf->key, ossl_err());
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
    return ctx;
}

SSL *pt_tls_client_ssl(SSL_CTX *ctx, const pt_upstream_tls_conf *conf, const char *host, int fd)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl) return NULL;
    const char *name = conf->sni ? conf->sni : host;
    char bare[256];
    /* "[::1]" -> "::1" for IP checks */
    size_t n = strlen(name);
    if (n >= 2 && name[0] == '[' && name[n - 1] == ']' && n - 2 < sizeof(bare)) {
        memcpy(bare, name + 1, n - 2);
        bare[n - 2] = '\0';
        name = bare;
    }
    unsigned char ipbuf[16];
    bool is_ip = inet_pton(AF_INET, name, ipbuf) == 1 || inet_pton(AF_INET6, name, ipbuf) == 1;
    if (!is_ip) SSL_set_tlsext_host_name(ssl, name); /* SNI carries names only */
    if (conf->verify) {
        if (is_ip) X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name);
        else SSL_set1_host(ssl, name);
    }
    if (SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_connect_state(ssl);
    return ssl;
}

void pt_tls_client_resume(SSL *ssl, pt_tls_session_slot *slot)
{
    SSL_set_ex_data(ssl, slot_index(), slot);
    if (slot->sess && slot->ctx == SSL_get_SSL_CTX(ssl) && SSL_SESSION_is_resumable(slot->sess))
        SSL_set_session(ssl, slot->sess); /* takes its own reference */
}

void pt_tls_session_slot_clear(pt_tls_session_slot *slot)
{
    if (slot->sess) SSL_SESSION_free(slot->sess);
    if (slot->ctx) SSL_CTX_free(slot->ctx);
    slot->sess = NULL;
    slot->ctx = NULL;
}
