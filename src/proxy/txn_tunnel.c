/* txn_tunnel.c — upgrades and tunnels (docs/websocket.md).
 *
 * A request that asks for an upgrade (HTTP/1 Upgrade, HTTP/2 extended
 * CONNECT) runs as an ordinary request: routing, the request-header
 * plugins (which may answer 401/403/429 instead), the upstream exchange.
 * The route decides whether its protocol is tunnelled (txn_tunnel_route);
 * a WebSocket handshake is checked against RFC 6455 §4.2.1 there. The
 * HTTP/1 upstream client sends Upgrade / "Connection: Upgrade" and takes a
 * 101 as the final head; txn_tunnel_on_head checks it (Upgrade token,
 * Sec-WebSocket-Accept: else 502), the response-header plugins run, the
 * head goes to the client, and both ends switch to raw bytes
 * (txn_tunnel_begin): the codec's tunnel ops downstream, the exchange's
 * upstream. Plugins never see tunnel bytes.
 *
 * Half-close: a FIN (END_STREAM) from one side is passed on as a FIN to the
 * other; the tunnel ends when both sides ended and our FIN reached the
 * upstream (its socket is then closed, never pooled), or at the first
 * error or reset (both sides cut), or after the idle timeout (both sides
 * get a FIN). Then the access-log line is written (status 101, HTTP/2:
 * 200). Backpressure: a side whose output is above its high watermark
 * stops reading the other side. Every entry point obeys the re-entrancy
 * rule (txn_enter / txn_leave). */
#include "http/websocket.h"
#include "obs/gateway_metrics.h"
#include "proxy/txn_int.h"

struct txn_tunnel {
    bool websocket;
    bool h2;          /* an HTTP/2 extended CONNECT: the client gets :status 200 */
    bool bad_version; /* answered 400 with Sec-WebSocket-Version: 13 */
    bool accepted;    /* the upstream's 101 passed the checks */
    bool active;      /* bytes flow */
    bool ds_eof;      /* the client ended its side */
    bool up_eof;      /* the upstream ended its side */
    bool up_shut;     /* our FIN reached the upstream */
    char accept[PT_WS_ACCEPT_LEN + 1];
    uint64_t idle_ms;
    uint64_t last;    /* pt_loop_now() of the last byte either way */
    pt_timer idle;
};

/* ------------------------------------------------------------- handshake */

/* The only value of header `name`; false when absent or repeated. */
static bool single_header(const pt_headers *h, const char *name, pt_str *out)
{
    int n = 0;
    for (uint32_t i = 0; i < h->n; i++)
        if (pt_str_ieq_lit(h->v[i].name, name)) {
            *out = h->v[i].value;
            n++;
        }
    return n == 1;
}

static bool route_allows(const pt_route_conf *r, pt_str proto)
{
    if (pt_str_ieq_lit(proto, "h2c")) return false; /* never: h2c smuggling */
    if (!r->upgrade) return pt_str_ieq_lit(proto, "websocket"); /* the default list */
    for (size_t i = 0; i < r->nupgrade; i++)
        if (pt_str_ieq_lit(proto, r->upgrade[i])) return true;
    return false;
}

/* The offered protocols the route tunnels, as one list ("websocket" alone
 * when WebSocket is among them); empty when none. */
static pt_str allowed_protocols(pt_txn *t, pt_str offered, bool *websocket)
{
    pt_str rest = offered, tok;
    size_t n = 0;
    char *out = pt_arena_alloc(t->a, offered.n + 1);
    *websocket = false;
    while (pt_list_next(&rest, &tok)) {
        if (!route_allows(t->route, tok)) continue;
        if (pt_str_ieq_lit(tok, "websocket")) {
            *websocket = true;
            return PT_STR_LIT("websocket");
        }
        if (n) {
            memcpy(out + n, ", ", 2);
            n += 2;
        }
        memcpy(out + n, tok.p, tok.n);
        n += tok.n;
    }
    out[n] = '\0';
    return n ? pt_str_make(out, n) : PT_STR_NULL;
}

static void pending(pt_txn *t, int status, const char *detail)
{
    t->pending_error = status;
    t->pending_detail = detail;
}

/* RFC 6455 §4.2.1 (HTTP/1) / RFC 8441 §5 (HTTP/2): NULL when the
 * handshake is well formed, else what is wrong. Sets tun->accept. */
static const char *check_websocket(pt_txn *t, txn_tunnel *tun)
{
    pt_request *req = t->req;
    pt_str v;
    if (!tun->h2) {
        if (req->version != 11) return "a WebSocket handshake needs HTTP/1.1";
        if (req->method != PT_METHOD_GET) return "a WebSocket handshake must be a GET";
        if (!req->connection_upgrade) return "a WebSocket handshake needs Connection: upgrade";
        if (req->has_body) return "a WebSocket handshake has no body";
        if (!single_header(&req->headers, "Sec-WebSocket-Key", &v) || !pt_ws_key_valid(v))
            return "Sec-WebSocket-Key must be the base64 encoding of 16 bytes";
    }
    pt_str ver;
    if (!single_header(&req->headers, "Sec-WebSocket-Version", &ver) || !pt_str_eq_lit(ver, "13")) {
        tun->bad_version = true;
        return "unsupported Sec-WebSocket-Version (Portico speaks 13)";
    }
    if (tun->h2) {
        /* RFC 8441 has no key: make one for the HTTP/1.1 upstream. */
        char key[PT_WS_KEY_LEN + 1];
        pt_ws_key_new(key);
        v = pt_arena_str(t->a, pt_str_make(key, PT_WS_KEY_LEN));
        pt_headers_set(&req->headers, t->a, PT_STR_LIT("Sec-WebSocket-Key"), v);
    }
    pt_ws_accept(v, tun->accept);
    return NULL;
}

void txn_tunnel_route(pt_txn *t)
{
    pt_request *req = t->req;
    pt_str offered = req->upgrade;
    req->upgrade = PT_STR_NULL; /* kept below only for a tunnel */
    if (!t->route || t->pending_error || !offered.n) return;
    bool h2 = req->version == 20;
    bool websocket;
    pt_str proto = allowed_protocols(t, offered, &websocket);
    if (!proto.n) {
        /* HTTP/1: proxied as plain HTTP without the Upgrade; an extended
         * CONNECT has no such form. */
        if (h2) pending(t, 400, "this route does not tunnel the requested :protocol");
        return;
    }
    if (!t->route->upstream) return; /* answered locally (direct_response...) */
    if (t->route->upstream->protocol != PT_UPROTO_HTTP1) {
        if (h2) pending(t, 501, "tunnels to HTTP/2 upstreams are not supported");
        return;
    }
    if (!websocket && !h2 && (req->version != 11 || !req->connection_upgrade || req->has_body))
        return; /* not a valid upgrade request: plain HTTP */
    txn_tunnel *tun = pt_arena_calloc(t->a, sizeof(*tun));
    tun->websocket = websocket;
    tun->h2 = h2;
    const pt_config *cfg = t->gen->cfg;
    tun->idle_ms = t->route->tunnel_idle_timeout_ms ? t->route->tunnel_idle_timeout_ms : cfg->timeouts.tunnel_idle_ms;
    t->tun = tun;
    if (websocket) {
        const char *bad = check_websocket(t, tun);
        if (bad) {
            pending(t, 400, bad);
            return;
        }
    }
    req->upgrade = proto;
}

/* True when every protocol of the 101's Upgrade was offered. */
static bool switched_to_offered(pt_str switched, pt_str offered)
{
    pt_str rest = switched, tok;
    bool any = false;
    while (pt_list_next(&rest, &tok)) {
        pt_str r2 = offered, o;
        bool found = false;
        while (!found && pt_list_next(&r2, &o)) found = pt_str_ieq(tok, o);
        if (!found) return false;
        any = true;
    }
    return any;
}

bool txn_tunnel_on_head(pt_txn *t)
{
    txn_tunnel *tun = t->tun;
    pt_response *res = &t->res;
    if (res->status != 101 || !t->req->upgrade.n) return true; /* refused: passed through as it is */
    const char *bad = NULL;
    pt_str acc;
    if (!res->connection_upgrade || !switched_to_offered(res->upgrade, t->req->upgrade))
        bad = "the upstream switched protocols without the Upgrade asked for";
    else if (tun->websocket && (!single_header(&res->headers, "Sec-WebSocket-Accept", &acc) ||
                                !pt_str_eq(acc, pt_str_c(tun->accept))))
        bad = "the upstream's Sec-WebSocket-Accept does not match the handshake";
    if (bad) {
        txn_drop_upstream(t);
        txn_upstream_failed(t, 502, bad);
        return false;
    }
    tun->accepted = true;
    /* RFC 8441: the HTTP/2 client sent no key; the accept is ours. */
    if (tun->h2) pt_headers_remove(&res->headers, "Sec-WebSocket-Accept");
    return true;
}

bool txn_tunnel_prepare_head(pt_txn *t)
{
    txn_tunnel *tun = t->tun;
    if (t->local) {
        /* RFC 6455 §4.4: tell the client the version Portico speaks. */
        if (tun->bad_version && t->res.status == 400)
            pt_headers_set(&t->res.headers, t->a, PT_STR_LIT("Sec-WebSocket-Version"), PT_STR_LIT("13"));
        return false;
    }
    return tun->accepted;
}

/* ---------------------------------------------------------------- tunnel */

static void activity(pt_txn *t) { t->tun->last = pt_loop_now(t->w->loop); }

/* Ends a tunnel. clean: both sides ended (nothing is cut); else `abort`
 * cuts both sides (error, reset), or both get a FIN (idle timeout). */
static void end_tunnel(pt_txn *t, bool clean, bool abort)
{
    if (t->finished) return;
    if (abort) {
        t->aborted = true;
        t->ops->abort(t->stream);
    } else {
        t->resp_done = true;
        if (!clean) t->ops->tunnel_shutdown(t->stream);
    }
    txn_drop_upstream(t);
    txn_finish(t);
}

static void maybe_end(pt_txn *t)
{
    txn_tunnel *tun = t->tun;
    if (tun->ds_eof && tun->up_eof && tun->up_shut) end_tunnel(t, true, false);
}

static void idle_cb(pt_loop *loop, pt_timer *tm)
{
    pt_txn *t = tm->data;
    if (t->finished) return;
    txn_tunnel *tun = t->tun;
    uint64_t due = tun->last + tun->idle_ms;
    if (due > pt_loop_now(loop)) { /* bytes moved since it was armed */
        pt_timer_start_at(loop, tm, due, idle_cb, t);
        return;
    }
    txn_enter(t);
    end_tunnel(t, false, false);
    txn_leave(t);
}

/* upstream -> client */
static void up_data(void *owner, const char *data, size_t len)
{
    pt_txn *t = owner;
    if (t->finished) return;
    txn_enter(t);
    activity(t);
    t->bytes_out += len;
    if (!t->ops->tunnel_send(t->stream, data, len) && t->uc) {
        t->up_read_paused_by_ds = true; /* pt_txn_on_downstream_writable resumes */
        t->uops->pause_read(t->uc, true);
    }
    txn_leave(t);
}

static void up_eof(void *owner)
{
    pt_txn *t = owner;
    if (t->finished) return;
    txn_enter(t);
    t->tun->up_eof = true;
    t->ops->tunnel_shutdown(t->stream);
    maybe_end(t);
    txn_leave(t);
}

static void up_writable(void *owner)
{
    pt_txn *t = owner;
    if (t->finished) return;
    txn_enter(t);
    if (!t->tun->ds_eof) t->ops->tunnel_read(t->stream, true);
    txn_leave(t);
}

static void up_shutdown(void *owner)
{
    pt_txn *t = owner;
    if (t->finished) return;
    txn_enter(t);
    t->tun->up_shut = true;
    maybe_end(t);
    txn_leave(t);
}

static void up_error(void *owner)
{
    pt_txn *t = owner;
    if (t->finished) return;
    txn_enter(t);
    end_tunnel(t, false, true);
    txn_leave(t);
}

static const pt_tunnel_cbs up_tunnel_cbs = {
    .on_data = up_data,
    .on_eof = up_eof,
    .on_writable = up_writable,
    .on_shutdown = up_shutdown,
    .on_error = up_error,
};

void txn_tunnel_begin(pt_txn *t)
{
    txn_tunnel *tun = t->tun;
    if (t->res.status != 101 || !t->uc || !t->ops->tunnel_start || !t->uops->tunnel_start) {
        /* a response plugin turned the switch into something else */
        txn_drop_upstream(t);
        txn_abort_response(t);
        return;
    }
    tun->active = true;
    pt_metrics_tunnel(t->w, true);
    t->status = tun->h2 ? 200 : 101;
    t->up_read_paused_by_ds = false;
    t->ops->tunnel_start(t->stream);
    t->uops->tunnel_start(t->uc, &up_tunnel_cbs, t);
    activity(t);
    pt_timer_start(t->w->loop, &tun->idle, tun->idle_ms, idle_cb, t);
    t->ops->tunnel_read(t->stream, true);
    t->uops->pause_read(t->uc, false);
}

void txn_tunnel_finish(pt_txn *t)
{
    txn_tunnel *tun = t->tun;
    pt_timer_stop(t->w->loop, &tun->idle);
    if (tun->active) pt_metrics_tunnel(t->w, false);
    if (tun->accepted) txn_drop_upstream(t); /* a switched connection is never pooled */
}

/* client -> upstream */
void pt_txn_on_tunnel_data(pt_txn *t, const char *data, size_t len)
{
    if (t->finished || !t->tun || !t->tun->active) return;
    txn_enter(t);
    activity(t);
    t->bytes_in += len;
    if (t->uc && !t->uops->tunnel_send(t->uc, data, len)) t->ops->tunnel_read(t->stream, false);
    txn_leave(t);
}

void pt_txn_on_tunnel_eof(pt_txn *t)
{
    if (t->finished || !t->tun || !t->tun->active) return;
    txn_enter(t);
    t->tun->ds_eof = true;
    if (t->uc) t->uops->tunnel_shutdown(t->uc);
    maybe_end(t);
    txn_leave(t);
}
