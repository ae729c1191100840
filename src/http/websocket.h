/* websocket.h — the pure parts of a WebSocket handshake (RFC 6455 §4) and
 * of Upgrade protocol lists, for the tunnel code (proxy/txn_tunnel.c).
 * No I/O, no state: Portico never looks inside WebSocket frames. */
#ifndef PT_HTTP_WEBSOCKET_H
#define PT_HTTP_WEBSOCKET_H

#include "core/common.h"

#define PT_WS_KEY_LEN 24    /* base64 of 16 bytes */
#define PT_WS_ACCEPT_LEN 28 /* base64 of a SHA-1 digest */

/* True when `key` (a Sec-WebSocket-Key value) is the base64 encoding of
 * 16 bytes: 22 characters of the base64 alphabet then "==" (RFC 6455
 * §4.2.1 item 5). */
bool pt_ws_key_valid(pt_str key);

/* Sec-WebSocket-Accept for `key`: base64(SHA-1(key ||
 * "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")), NUL-terminated. */
void pt_ws_accept(pt_str key, char out[PT_WS_ACCEPT_LEN + 1]);

/* A fresh Sec-WebSocket-Key (16 random bytes, base64), NUL-terminated. */
void pt_ws_key_new(char out[PT_WS_KEY_LEN + 1]);

#endif
