/* websocket.c — see websocket.h. SHA-1 and randomness come from OpenSSL's
 * libcrypto (already linked for TLS). */
#include "http/websocket.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static bool b64_char(char ch) { return ch && memchr(B64, ch, sizeof(B64) - 1) != NULL; }

bool pt_ws_key_valid(pt_str key)
{
    if (key.n != PT_WS_KEY_LEN || key.p[22] != '=' || key.p[23] != '=') return false;
    for (size_t i = 0; i < 22; i++)
        if (!b64_char(key.p[i])) return false;
    return true;
}

void pt_ws_accept(pt_str key, char out[PT_WS_ACCEPT_LEN + 1])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) != 1 || EVP_DigestUpdate(ctx, key.p, key.n) != 1 ||
        EVP_DigestUpdate(ctx, guid, sizeof(guid) - 1) != 1 || EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != 20)
        pt_panic(__FILE__, __LINE__, "SHA-1 unavailable");
    EVP_MD_CTX_free(ctx);
    EVP_EncodeBlock((unsigned char *)out, md, 20); /* 28 chars + NUL */
}

void pt_ws_key_new(char out[PT_WS_KEY_LEN + 1])
{
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof(raw)) != 1) pt_panic(__FILE__, __LINE__, "RAND_bytes failed");
    EVP_EncodeBlock((unsigned char *)out, raw, sizeof(raw)); /* 24 chars + NUL */
}

