"""WebSocket and other HTTP tunnels (docs/websocket.md): HTTP/1.1 Upgrade and
HTTP/2 extended CONNECT (RFC 8441) to HTTP/1.1 upstreams.

Real clients and servers: python3-websockets (asyncio) on both sides for
HTTP/1.1 and TLS; raw HTTP/2 frames (python3-h2) with hand-made WebSocket
frames for extended CONNECT, since websockets has no HTTP/2 client; raw
sockets where a test needs an upstream that misbehaves (wrong accept, a 101
nobody asked for) or exact half-close timing (a generic tunnel)."""
import asyncio
import base64
import hashlib
import json
import os
import signal
import socket
import struct
import threading
import time

import pytest
import websockets
import websockets.exceptions

import h2.events
from conftest import BIN, free_port, simple_config
from h2util import h2_connect
from tlsutil import client_ctx, pki, tls_listen  # noqa: F401 (fixture)
from upstreams import Client, Response, build_request, problem_check, read_response, recv_head, wait_for

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
SMALL_QUARANTINE = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:quarantine_size_mb=16"}


def accept_for(key):
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------
# A python-websockets upstream in its own thread
# ---------------------------------------------------------------------------

async def echo_handler(ws):
    async for m in ws:
        await ws.send(m)


class WSUpstream:
    """websockets.serve on 127.0.0.1:0 in a thread. `handler(ws)` serves each
    connection (default: echo). Records each handshake's (path, headers) in
    .requests and each connection's close code/reason in .closed."""

    def __init__(self, handler=None, **kw):
        self.handler = handler or echo_handler
        self.kw = kw
        self.requests = []
        self.closed = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)
        self.addr = "127.0.0.1:%d" % self.port

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def start():
            kw = {"max_size": None, "compression": None, "ping_interval": None}
            kw.update(self.kw)
            self.server = await websockets.serve(self._handle, "127.0.0.1", 0, process_request=self._record, **kw)
            self.port = self.server.sockets[0].getsockname()[1]
            self.ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    async def _record(self, path, headers):
        self.requests.append((path, headers))
        return None

    async def _handle(self, ws, path=None):
        try:
            await self.handler(ws)
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            self.closed.append((ws.close_code, ws.close_reason))

    def stop(self):
        async def stop():
            self.server.close()
            await asyncio.wait_for(self.server.wait_closed(), 3)

        try:
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        except (asyncio.TimeoutError, TimeoutError):
            pass  # a handler the test left blocked
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


@pytest.fixture
def ws_upstream():
    servers = []

    def start(handler=None, **kw):
        u = WSUpstream(handler, **kw)
        servers.append(u)
        return u

    yield start
    for u in servers:
        u.stop()


@pytest.fixture
def ws_echo(ws_upstream):
    return ws_upstream()


def connect(port, path="/chat", **kw):
    opts = {"max_size": None, "compression": None, "ping_interval": None, "open_timeout": 10}
    opts.update(kw)
    return websockets.connect("ws://127.0.0.1:%d%s" % (port, path), **opts)


def ws_config(addr, route_extra=None, upstream_extra=None, **top):
    return simple_config(addr, route_extra=route_extra, upstream_extra=upstream_extra, **top)


# ---------------------------------------------------------------------------
# Raw handshakes
# ---------------------------------------------------------------------------

def handshake_headers(key=KEY, version="13", connection="Upgrade", extra=()):
    h = []
    if connection is not None:
        h.append(("Connection", connection))
    h.append(("Upgrade", "websocket"))
    if key is not None:
        h.append(("Sec-WebSocket-Key", key))
    if version is not None:
        h.append(("Sec-WebSocket-Version", version))
    return h + list(extra)


def read_answer(c, method="GET"):
    """The response to a handshake: a 101 has no body (what follows is the
    tunnel's and stays in c.reader)."""
    head = c.reader.read_until(b"\r\n\r\n")
    if head.split(b" ", 2)[1] == b"101":
        c.reader.buf[:0] = head
        r = Response()
        r.raw_head = head
        lines = head[:-4].split(b"\r\n")
        r.status = 101
        r.headers = [(k.decode(), v.strip().decode()) for k, v in (ln.split(b":", 1) for ln in lines[1:])]
        del c.reader.buf[:len(head)]
        return r
    c.reader.buf[:0] = head
    return read_response(c.reader, method)


def raw_handshake(port, method="GET", path="/chat", http="HTTP/1.1", **kw):
    c = Client(port)
    c.send(build_request(method, path, handshake_headers(**kw), version=http))
    return c, read_answer(c, method)


def ws_frame(opcode, payload, fin=True, mask=True):
    """One WebSocket frame (masked, as a client sends)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def ws_parse(buf):
    """Complete (opcode, payload) frames at the start of buf (server frames,
    unmasked); returns (frames, rest)."""
    out = []
    while len(buf) >= 2:
        op, n = buf[0] & 0x0F, buf[1] & 0x7F
        i = 2
        if n == 126:
            if len(buf) < 4:
                break
            n, i = struct.unpack("!H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, i = struct.unpack("!Q", buf[2:10])[0], 10
        if len(buf) < i + n:
            break
        out.append((op, bytes(buf[i:i + n])))
        buf = buf[i + n:]
    return out, buf


def access_lines(p, pred=None):
    lines = [json.loads(ln) for ln in p.access_lines()]
    return [ln for ln in lines if pred is None or pred(ln)]


def wait_log(p, pred, timeout=10):
    return wait_for(lambda: access_lines(p, pred), timeout)


# ---------------------------------------------------------------------------
# Echo through Portico (HTTP/1.1)
# ---------------------------------------------------------------------------

def test_echo_text_binary_fragmented_ping_and_large(portico, ws_echo):
    p = portico(ws_config(ws_echo.addr))
    big = os.urandom(1 << 20)

    async def go():
        async with connect(p.port) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\x01\xfe\xff")
            assert await ws.recv() == b"\x00\x01\xfe\xff"
            await ws.send(["frag", "mented ", "text"])  # one message in three frames
            assert await ws.recv() == "fragmented text"
            await ws.send([b"ab", b"cd"])
            assert await ws.recv() == b"abcd"
            pong = await ws.ping(b"are you there")
            await asyncio.wait_for(pong, 5)
            for _ in range(3):
                await ws.send(big)
                assert await ws.recv() == big
            assert ws.response_headers["Upgrade"].lower() == "websocket"

    run(go())
    path, headers = ws_echo.requests[0]
    assert path == "/chat"
    assert headers["Upgrade"] == "websocket" and "upgrade" in headers["Connection"].lower()
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    line = wait_log(p, lambda ln: ln["path"] == "/chat")[0]
    assert line["status"] == 101 and not line["aborted"], line
    assert line["bytes_in"] > 3 << 20 and line["bytes_out"] > 3 << 20, line


def test_close_codes_both_directions(portico, ws_upstream):
    async def server_closes(ws):
        msg = await ws.recv()
        if msg == "close me":
            await ws.close(4002, "server says bye")
        else:
            await ws.send(msg)
            await echo_handler(ws)

    up = ws_upstream(server_closes)
    p = portico(ws_config(up.addr))

    async def go():
        async with connect(p.port) as ws:  # the client closes
            await ws.send("echo")
            await ws.recv()
            await ws.close(4001, "client says bye")
        async with connect(p.port) as ws:  # the server closes
            await ws.send("close me")
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 4002 and ws.close_reason == "server says bye"

    run(go())
    assert wait_for(lambda: len(up.closed) == 2)
    assert (4001, "client says bye") in up.closed
    assert (4002, "server says bye") in up.closed
    # both tunnels ended cleanly
    lines = wait_log(p, lambda ln: ln["status"] == 101)
    assert wait_for(lambda: len(access_lines(p, lambda ln: ln["status"] == 101)) == 2)
    assert not any(ln["aborted"] for ln in access_lines(p)), access_lines(p)
    assert lines


def test_tls_listener(portico, pki, ws_echo):
    port = free_port()
    p = portico(ws_config(ws_echo.addr, listen=tls_listen(port, [pki["a"]])), port=port)

    async def go():
        sock = socket.create_connection(("127.0.0.1", port))
        async with websockets.connect("wss://a.test:%d/secure" % port, sock=sock, ssl=client_ctx(pki),
                                      server_hostname="a.test", max_size=None, compression=None) as ws:
            await ws.send("over tls")
            assert await ws.recv() == "over tls"
            data = os.urandom(300000)
            await ws.send(data)
            assert await ws.recv() == data
            await ws.close(1000)

    run(go())
    path, headers = ws_echo.requests[0]
    assert path == "/secure" and headers["X-Forwarded-Proto"] == "https"
    line = wait_log(p, lambda ln: ln["path"] == "/secure")[0]
    assert line["status"] == 101 and not line["aborted"]


def test_tls_upstream_and_tls_client(portico, pki, ws_upstream):
    """wss on both sides: the tunnel runs over TLS to the client and to the
    upstream (close_notify for the half-closes)."""
    import ssl
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(*pki["b"])
    up = ws_upstream(ssl=sctx)
    port = free_port()
    cfg = ws_config(up.addr, upstream_extra={"tls": {"ca": pki["ca"], "sni": "b.test"}},
                    listen=tls_listen(port, [pki["a"]]))
    p = portico(cfg, port=port)
    big = os.urandom(1 << 20)

    async def go():
        sock = socket.create_connection(("127.0.0.1", port))
        async with websockets.connect("wss://a.test:%d/both" % port, sock=sock, ssl=client_ctx(pki),
                                      server_hostname="a.test", max_size=None, compression=None) as ws:
            for _ in range(3):
                await ws.send(big)
                assert await ws.recv() == big
            await ws.close(1000, "done")

    run(go())
    assert wait_for(lambda: up.closed) and up.closed[0] == (1000, "done")
    line = wait_log(p, lambda ln: ln["path"] == "/both")[0]
    assert line["status"] == 101 and not line["aborted"], line


def test_permessage_deflate_negotiated_end_to_end(portico, ws_upstream):
    """Extensions are between the client and the upstream: Portico only
    carries bytes."""
    up = ws_upstream(compression="deflate")
    p = portico(ws_config(up.addr))

    async def go():
        async with connect(p.port, compression="deflate") as ws:
            assert "permessage-deflate" in ws.response_headers.get("Sec-WebSocket-Extensions", "")
            text = "compress me " * 10000
            await ws.send(text)
            assert await ws.recv() == text

    run(go())


# ---------------------------------------------------------------------------
# HTTP/2 extended CONNECT (RFC 8441)
# ---------------------------------------------------------------------------

class H2Tunnel:
    """A raw HTTP/2 connection (python3-h2) with one extended CONNECT stream.
    Every event is kept (h2util.h2_read_until drops those after its match)."""

    def __init__(self, port):
        self.s, self.c = h2_connect(port)
        self.sid = None
        self.settings = {}
        self.headers = {}
        self.data = bytearray()
        self.ended = self.reset = False

    def _take(self, e):
        if isinstance(e, h2.events.RemoteSettingsChanged):
            self.settings.update({k: v.new_value for k, v in e.changed_settings.items()})
        elif isinstance(e, h2.events.ResponseReceived) and e.stream_id == self.sid:
            self.headers = dict(e.headers)
        elif isinstance(e, h2.events.DataReceived) and e.stream_id == self.sid:
            self.data.extend(e.data)
            self.c.acknowledge_received_data(e.flow_controlled_length, self.sid)
        elif isinstance(e, h2.events.StreamEnded) and e.stream_id == self.sid:
            self.ended = True
        elif isinstance(e, h2.events.StreamReset) and e.stream_id == self.sid:
            self.reset = True

    def until(self, pred, timeout=10):
        """Reads until pred(self) holds; returns its value."""
        deadline = time.monotonic() + timeout
        self.s.settimeout(0.2)
        while not pred(self) and time.monotonic() < deadline:
            out = self.c.data_to_send()
            if out:
                self.s.sendall(out)
            try:
                data = self.s.recv(65536)
            except socket.timeout:
                continue
            if not data:
                break
            for e in self.c.receive_data(data):
                self._take(e)
        return pred(self)

    def open(self, path, extra, protocol):
        assert self.until(lambda t: 8 in t.settings)
        assert self.settings[8] == 1  # SETTINGS_ENABLE_CONNECT_PROTOCOL
        self.sid = self.c.get_next_available_stream_id()
        self.c.send_headers(self.sid, [(":method", "CONNECT"), (":protocol", protocol), (":scheme", "http"),
                                       (":path", path), (":authority", "gw.test")] + list(extra))
        self.s.sendall(self.c.data_to_send())
        assert self.until(lambda t: t.headers or t.reset)
        return self

    def frames(self):
        return ws_parse(bytes(self.data))[0]

    def send(self, data, end=False):
        """Sends DATA within the flow-control windows."""
        data = memoryview(data)
        while True:
            room = min(self.c.local_flow_control_window(self.sid), self.c.max_outbound_frame_size)
            n = min(room, len(data))
            if n or not len(data):
                self.c.send_data(self.sid, bytes(data[:n]), end_stream=end and n == len(data))
                self.s.sendall(self.c.data_to_send())
                data = data[n:]
                if not len(data):
                    return
            else:
                assert self.until(lambda t: t.c.local_flow_control_window(t.sid) > 0)

    def close(self):
        self.s.close()


def h2_ws_open(port, path="/chat", extra=(), protocol="websocket"):
    return H2Tunnel(port).open(path, extra, protocol)


def test_h2_extended_connect_echo(portico, ws_echo):
    p = portico(ws_config(ws_echo.addr))
    t = h2_ws_open(p.port, "/h2chat?room=1", extra=[("sec-websocket-version", "13"),
                                                    ("sec-websocket-protocol", "chat")])
    try:
        assert t.headers[b":status"] == b"200", t.headers
        assert b"sec-websocket-accept" not in t.headers  # RFC 8441: no key, no accept
        # the upstream got a real RFC 6455 handshake with a key Portico made up
        path, up_headers = ws_echo.requests[0]
        assert path == "/h2chat?room=1"
        key = up_headers["Sec-WebSocket-Key"]
        assert len(base64.b64decode(key)) == 16
        assert up_headers["Sec-WebSocket-Version"] == "13"
        assert up_headers["Upgrade"] == "websocket" and up_headers["Sec-WebSocket-Protocol"] == "chat"
        payload = os.urandom(200000)
        t.send(ws_frame(0x2, payload) + ws_frame(0x1, b"and text"))
        t.until(lambda t: len(t.frames()) >= 2)
        assert t.frames()[0] == (0x2, payload) and t.frames()[1] == (0x1, b"and text")
        # close handshake, then END_STREAM: the tunnel ends both ways
        t.send(ws_frame(0x8, struct.pack("!H", 1000) + b"done"), end=True)
        t.until(lambda t: t.ended or t.reset)
        assert t.ended and not t.reset
        assert t.frames()[2][0] == 0x8
    finally:
        t.close()
    line = wait_log(p, lambda ln: ln["path"] == "/h2chat?room=1")[0]
    assert line["status"] == 200 and not line["aborted"], line
    assert line["bytes_in"] > 200000 and line["bytes_out"] > 200000
    assert wait_for(lambda: ws_echo.closed) and ws_echo.closed[0][0] == 1000


def test_h2_upstream_closes_first(portico, ws_upstream):
    async def greet_and_close(ws):
        await ws.send("bye")
        await ws.close(1001, "going away")

    up = ws_upstream(greet_and_close)
    p = portico(ws_config(up.addr))
    t = h2_ws_open(p.port, extra=[("sec-websocket-version", "13")])
    try:
        assert t.headers[b":status"] == b"200"
        t.until(lambda t: len(t.frames()) >= 2)
        assert t.frames()[0] == (0x1, b"bye") and t.frames()[1][0] == 0x8
        t.send(ws_frame(0x8, t.frames()[1][1]), end=True)  # answer the close
        t.until(lambda t: t.ended or t.reset)
        assert t.ended and not t.reset
    finally:
        t.close()
    line = wait_log(p, lambda ln: ln["status"] == 200)[0]
    assert not line["aborted"]
    assert wait_for(lambda: up.closed) and up.closed[0][0] == 1001


def test_h2_backpressure_client_not_reading(portico, ws_upstream):
    """An HTTP/2 client that grants no window: the stream buffer fills,
    Portico stops reading the upstream."""
    sent = []
    chunk = os.urandom(1 << 20)

    async def flood(ws):
        for _ in range(100):
            await ws.send(chunk)
            sent.append(1)

    up = ws_upstream(flood)
    p = portico(ws_config(up.addr), env=SMALL_QUARANTINE)
    t = H2Tunnel(p.port)
    t.c.acknowledge_received_data = lambda n, sid: None  # never grant more window
    t.open("/flood", [("sec-websocket-version", "13")], "websocket")
    try:
        assert t.headers[b":status"] == b"200"
        base = rss_kb(p.proc.pid)
        time.sleep(3)
        stalled_at = len(sent)
        time.sleep(1)
        assert len(sent) == stalled_at < 40, "the upstream kept sending: %d MB" % len(sent)
        grown_mb = (rss_kb(p.proc.pid) - base) / 1024
        assert grown_mb < 32, "RSS grew by %.1f MB" % grown_mb
    finally:
        t.close()


def test_h2_client_reset_closes_upstream(portico, ws_echo):
    p = portico(ws_config(ws_echo.addr))
    t = h2_ws_open(p.port, extra=[("sec-websocket-version", "13")])
    try:
        assert t.headers[b":status"] == b"200"
        t.c.reset_stream(t.sid)
        t.s.sendall(t.c.data_to_send())
        assert wait_for(lambda: ws_echo.closed)
        line = wait_log(p, lambda ln: ln["status"] == 200)[0]
        assert line["aborted"]
    finally:
        t.close()


def test_h2_bad_version_and_disallowed_protocol(portico, ws_echo):
    p = portico(ws_config(ws_echo.addr))
    t = h2_ws_open(p.port, extra=[("sec-websocket-version", "8")])
    t.close()
    assert t.headers[b":status"] == b"400" and t.headers[b"sec-websocket-version"] == b"13"
    t = h2_ws_open(p.port, protocol="connect-udp")
    t.close()
    assert t.headers[b":status"] == b"400"
    assert not ws_echo.requests


def test_h2_upstream_refusal_passed_through(portico, raw_server):
    def refuse(sock, n):
        recv_head(sock)
        sock.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n\r\nno way!")
        time.sleep(1)

    up = raw_server(refuse)
    p = portico(ws_config(up.addr))
    t = h2_ws_open(p.port, extra=[("sec-websocket-version", "13")])
    try:
        assert t.headers[b":status"] == b"403"
        t.until(lambda t: t.ended or t.reset)
        assert bytes(t.data) == b"no way!", (t.ended, t.reset, t.headers)
    finally:
        t.close()


def test_h2_to_h2_upstream_not_implemented(portico):
    p = portico(simple_config("127.0.0.1:9", upstream_extra={"protocol": "h2c"}))
    t = h2_ws_open(p.port, extra=[("sec-websocket-version", "13")])
    t.close()
    assert t.headers[b":status"] == b"501"


# ---------------------------------------------------------------------------
# Plugins decide at the handshake
# ---------------------------------------------------------------------------

def test_ip_restriction_denies_handshake(portico, ws_echo):
    p = portico(ws_config(ws_echo.addr, route_extra={"plugins": [{"ip_restriction": {"deny": ["127.0.0.0/8"]}}]}))

    async def go():
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as ei:
            async with connect(p.port):
                pass
        assert ei.value.status_code == 403

    run(go())
    c, r = raw_handshake(p.port)
    c.close()
    problem_check(r, 403)
    assert not ws_echo.requests


def test_direct_response_route_never_tunnels(portico, ws_echo):
    cfg = ws_config(ws_echo.addr)
    cfg["routes"].insert(0, {"name": "local", "match": {"path": "/local"},
                             "plugins": [{"direct_response": {"status": 200, "body": "not a socket"}}]})
    p = portico(cfg)
    c, r = raw_handshake(p.port, path="/local")
    try:
        assert r.status == 200 and r.body == b"not a socket"
        assert r.header("Upgrade") is None
        # the connection is still plain HTTP
        r = c.request("GET", "/local")
        assert r.status == 200
    finally:
        c.close()
    assert not ws_echo.requests


def test_compression_plugin_leaves_tunnels_alone(portico, ws_echo):
    """A response plugin that rewrites bodies (compression) sees the 101's
    head and no body: the bytes pass untouched, in both client protocols."""
    p = portico(ws_config(ws_echo.addr, plugins=[{"compression": {"min_size": 0}}]))
    text = "squeeze me " * 5000

    async def go():
        async with connect(p.port, extra_headers={"Accept-Encoding": "gzip"}) as ws:
            assert "Content-Encoding" not in ws.response_headers
            await ws.send(text)
            assert await ws.recv() == text

    run(go())
    t = h2_ws_open(p.port, extra=[("sec-websocket-version", "13"), ("accept-encoding", "gzip")])
    try:
        assert t.headers[b":status"] == b"200" and b"content-encoding" not in t.headers
        t.send(ws_frame(0x1, b"plain"))
        t.until(lambda t: t.frames())
        assert t.frames()[0] == (0x1, b"plain")
    finally:
        t.close()


def test_request_id_reaches_upstream_handshake(portico, ws_echo):
    p = portico(ws_config(ws_echo.addr, plugins=[{"request_id": {}}]))

    async def go():
        async with connect(p.port) as ws:
            await ws.send("x")
            await ws.recv()
            return ws.response_headers.get("X-Request-Id")

    rid = run(go())
    _, headers = ws_echo.requests[0]
    assert rid and headers["X-Request-Id"] == rid
    assert wait_log(p, lambda ln: ln["request_id"] == rid and ln["status"] == 101)


# ---------------------------------------------------------------------------
# Malformed handshakes (RFC 6455 §4.2.1) -> 400 problem+json
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kw,detail", [
    ({"key": None}, "Sec-WebSocket-Key"),
    ({"key": "dGVzdA=="}, "Sec-WebSocket-Key"),                   # 4 bytes
    ({"key": "not base64 at all, sorry!"}, "Sec-WebSocket-Key"),
    ({"key": "dGhlIHNhbXBsZSBub25jZQ"}, "Sec-WebSocket-Key"),      # no padding
    ({"version": "8"}, "Sec-WebSocket-Version"),
    ({"version": None}, "Sec-WebSocket-Version"),
    ({"method": "POST"}, "GET"),
    ({"connection": "keep-alive"}, "Connection"),
    ({"connection": None}, "Connection"),
    ({"http": "HTTP/1.0"}, "HTTP/1.1"),
])
def test_malformed_handshake_is_400(portico, ws_echo, kw, detail):
    p = portico(ws_config(ws_echo.addr))
    c, r = raw_handshake(p.port, **kw)
    c.close()
    doc = problem_check(r, 400)
    assert detail in doc["detail"], doc
    if kw.get("version", "13") != "13":
        assert r.header("Sec-WebSocket-Version") == "13"
    assert not ws_echo.requests


def test_duplicate_key_is_400(portico, ws_echo):
    p = portico(ws_config(ws_echo.addr))
    c, r = raw_handshake(p.port, extra=[("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA==")])
    c.close()
    problem_check(r, 400)


# ---------------------------------------------------------------------------
# Upstream answers
# ---------------------------------------------------------------------------

def test_upstream_refusal_passed_through(portico, raw_server):
    def refuse(sock, n):
        while True:
            head, _ = recv_head(sock)
            sock.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\nX-Why: policy\r\n\r\nforbidden")

    up = raw_server(refuse, ignore=(AssertionError, OSError))
    p = portico(ws_config(up.addr))
    c, r = raw_handshake(p.port)
    try:
        assert r.status == 403 and r.body == b"forbidden" and r.header("X-Why") == "policy"
        assert r.header("Upgrade") is None
        # no tunnel: the client connection still speaks HTTP
        c.send(build_request("GET", "/plain"))
        assert c.read_response().status == 403
    finally:
        c.close()
    line = wait_log(p, lambda ln: ln["status"] == 403)[0]
    assert not line["aborted"]


def test_wrong_accept_is_502(portico, raw_server):
    def bad_accept(sock, n):
        recv_head(sock)
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept_for("AAAAAAAAAAAAAAAAAAAAAA==").encode() + b"\r\n\r\n"
                     b"\x81\x05hello")
        time.sleep(2)

    up = raw_server(bad_accept, ignore=(OSError,))
    p = portico(ws_config(up.addr))
    c, r = raw_handshake(p.port)
    c.close()
    problem_check(r, 502)
    assert b"hello" not in r.body


def test_101_switching_to_another_protocol_is_502(portico, raw_server):
    def other(sock, n):
        recv_head(sock)
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept_for(KEY).encode() + b"\r\n\r\n")
        time.sleep(2)

    up = raw_server(other, ignore=(OSError,))
    p = portico(ws_config(up.addr))
    c, r = raw_handshake(p.port)
    c.close()
    problem_check(r, 502)


def test_good_accept_through_raw_upstream_exact_bytes(portico, raw_server):
    """A hand-written upstream: Portico passes the 101's end-to-end fields
    and then every byte, both ways, unchanged."""
    got = {}

    def server(sock, n):
        head, rest = recv_head(sock)
        got["head"] = head.decode("latin-1")
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept_for(KEY).encode() + b"\r\nX-Up: yes\r\n\r\n"
                     b"early bytes")
        data = rest
        while len(data) < 5:
            data += sock.recv(100)
        got["data"] = data
        sock.sendall(b"later bytes")
        time.sleep(0.5)

    up = raw_server(server, ignore=(OSError,))
    p = portico(ws_config(up.addr))
    c, r = raw_handshake(p.port)
    try:
        assert r.status == 101 and r.header("Sec-WebSocket-Accept") == accept_for(KEY)
        assert r.header("X-Up") == "yes" and r.header("Upgrade") == "websocket"
        assert "upgrade" in r.header("Connection").lower()
        c.send(b"12345")
        buf = c.reader.read_exact(len(b"early byteslater bytes"))
        assert buf == b"early byteslater bytes"
    finally:
        c.close()
    assert got["data"] == b"12345"
    head = got["head"].lower()
    assert "upgrade: websocket" in head and "connection: upgrade" in head
    assert "sec-websocket-key: " + KEY.lower() in head


# ---------------------------------------------------------------------------
# Which protocols are tunnelled
# ---------------------------------------------------------------------------

H2C_SMUGGLE = (b"GET / HTTP/1.1\r\nHost: gw.test\r\nUpgrade: h2c\r\n"
               b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n")


def test_h2c_smuggling_is_never_forwarded(portico, echo):
    p = portico(ws_config(echo.addr))
    c = Client(p.port)
    try:
        c.send(H2C_SMUGGLE)
        r = c.read_response()
        assert r.status == 200 and r.header("Upgrade") is None
        # still HTTP/1.1 on the same connection: no switch happened
        r = c.request("GET", "/next")
        assert r.status == 200
    finally:
        c.close()
    req = echo.wait_requests(1)[0]
    assert not req.has_header("Upgrade") and not req.has_header("HTTP2-Settings")
    assert "upgrade" not in (req.header("Connection") or "").lower()


def test_h2c_smuggling_with_an_upstream_that_switches_anyway(portico, raw_server):
    """A naive upstream that answers the smuggled upgrade with 101 and an
    HTTP/2 preface never gets a tunnel to the client: the 101 was not asked
    for (502)."""
    def switch(sock, n):
        head, _ = recv_head(sock)
        assert b"h2c" not in head.lower()
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
                     b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        time.sleep(2)

    up = raw_server(switch, ignore=(OSError,))
    p = portico(ws_config(up.addr))
    c = Client(p.port)
    try:
        c.send(H2C_SMUGGLE)
        problem_check(c.read_response(), 502)
    finally:
        c.close()
    assert not up.errors, up.errors


def test_h2c_refused_in_config(tmp_path):
    import subprocess
    cfg = tmp_path / "c.yaml"
    cfg.write_text("listen: ['127.0.0.1:1']\nupstreams: {up: {targets: ['127.0.0.1:2']}}\n"
                   "routes:\n  - match: {path_prefix: /}\n    upstream: up\n    upgrade: [websocket, h2c]\n")
    r = subprocess.run([BIN, "check", "-c", str(cfg)], capture_output=True, text=True)
    assert r.returncode != 0 and "h2c is never tunnelled" in r.stderr, r.stderr


def test_route_without_websocket_proxies_plain_http(portico, echo):
    p = portico(ws_config(echo.addr, route_extra={"upgrade": []}))
    c, r = raw_handshake(p.port)
    c.close()
    assert r.status == 200  # the echo upstream answered an ordinary GET
    req = echo.wait_requests(1)[0]
    assert not req.has_header("Upgrade")
    assert req.header("Sec-WebSocket-Key") == KEY  # end-to-end fields are kept


def tunnel_server(script):
    """A raw upstream that accepts `Upgrade: echo-proto`, then runs
    script(sock, rest)."""
    def serve(sock, n):
        head, rest = recv_head(sock)
        if b"upgrade: echo-proto" not in head.lower():
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain")
            time.sleep(0.5)
            return
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo-proto\r\nConnection: Upgrade\r\n\r\n")
        script(sock, rest)
    return serve


def test_generic_tunnel_half_close(portico, raw_server):
    """Any protocol the route lists is tunnelled; a FIN is passed on as a FIN
    and the other direction keeps flowing until it ends too. The upstream
    connection is not reused afterwards."""
    seen = {}
    go_on = threading.Event()

    def script(sock, rest):
        data = rest
        while True:
            d = sock.recv(65536)
            if not d:
                break
            data += d
        seen["data"] = data  # the client's FIN arrived
        go_on.wait(10)
        sock.sendall(b"after your FIN")
        sock.shutdown(socket.SHUT_WR)
        time.sleep(0.5)

    up = raw_server(tunnel_server(script), ignore=(OSError,))
    p = portico(ws_config(up.addr, route_extra={"upgrade": ["websocket", "echo-proto"]}))
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    try:
        s.sendall(b"GET /t HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: echo-proto\r\n\r\n")
        head, rest = recv_head(s)
        assert head.startswith(b"HTTP/1.1 101"), head
        assert b"upgrade: echo-proto" in head.lower()
        s.sendall(b"some bytes")
        s.shutdown(socket.SHUT_WR)
        assert wait_for(lambda: "data" in seen)
        time.sleep(0.3)
        assert not access_lines(p, lambda ln: ln["path"] == "/t")  # the tunnel is still open one way
        go_on.set()
        data = rest
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
        assert data == b"after your FIN"
    finally:
        s.close()
    assert seen["data"] == b"some bytes"
    line = wait_log(p, lambda ln: ln["path"] == "/t")[0]
    assert line["status"] == 101 and not line["aborted"] and line["bytes_in"] >= 10
    # a plain request now needs a new upstream connection
    c = Client(p.port)
    r = c.request("GET", "/plain")
    c.close()
    assert r.status == 200 and r.body == b"plain"
    assert up.connections == 2


def test_generic_upgrade_not_listed_is_dropped(portico, echo):
    p = portico(ws_config(echo.addr))
    c = Client(p.port)
    r = c.request("GET", "/x", [("Connection", "Upgrade"), ("Upgrade", "echo-proto")])
    c.close()
    assert r.status == 200
    assert not echo.wait_requests(1)[0].has_header("Upgrade")


def test_upstream_reset_cuts_the_client(portico, raw_server):
    def script(sock, rest):
        sock.sendall(b"hi")
        time.sleep(0.3)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    up = raw_server(tunnel_server(script), ignore=(OSError,))
    p = portico(ws_config(up.addr, route_extra={"upgrade": ["echo-proto"]}))
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    try:
        s.sendall(b"GET /r HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: echo-proto\r\n\r\n")
        head, rest = recv_head(s)
        data = rest
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                data += d
        except ConnectionResetError:
            pass
        assert data == b"hi"
    finally:
        s.close()
    line = wait_log(p, lambda ln: ln["path"] == "/r")[0]
    assert line["status"] == 101 and line["aborted"]


# ---------------------------------------------------------------------------
# Timeouts, drain, backpressure
# ---------------------------------------------------------------------------

def test_idle_timeout_closes_both(portico, ws_echo):
    p = portico(ws_config(ws_echo.addr, route_extra={"tunnel_idle_timeout": "1s"}))

    async def go():
        async with connect(p.port) as ws:
            await ws.send("still here")
            assert await ws.recv() == "still here"
            t0 = time.monotonic()
            await asyncio.sleep(0.6)
            await ws.send("activity resets the clock")
            await ws.recv()
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            return time.monotonic() - t0

    elapsed = run(go())
    assert 1.4 <= elapsed < 6, elapsed
    assert wait_for(lambda: ws_echo.closed)  # the upstream side was closed too
    line = wait_log(p, lambda ln: ln["path"] == "/chat")[0]
    assert line["status"] == 101


def test_global_tunnel_idle_timeout(portico, ws_echo):
    p = portico(ws_config(ws_echo.addr, timeouts={"tunnel_idle": "1s"}))

    async def go():
        async with connect(p.port) as ws:
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)

    t0 = time.monotonic()
    run(go())
    assert time.monotonic() - t0 < 6


def test_drain_waits_for_tunnel_then_closes_it(portico, ws_echo):
    p = portico(ws_config(ws_echo.addr, timeouts={"shutdown": "3s"}))

    async def go():
        async with connect(p.port) as ws:
            await ws.send("before")
            assert await ws.recv() == "before"
            t0 = time.monotonic()
            p.signal(signal.SIGTERM)
            await asyncio.sleep(1)
            await ws.send("during the drain")  # the tunnel still works
            assert await ws.recv() == "during the drain"
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            return time.monotonic() - t0

    elapsed = run(go())
    assert 2.5 <= elapsed < 8, elapsed
    assert p.wait_exit(10) == 0
    assert wait_for(lambda: ws_echo.closed)
    assert access_lines(p, lambda ln: ln["path"] == "/chat")


def test_backpressure_client_not_reading(portico, ws_upstream):
    """The upstream floods, the client reads nothing: Portico stops reading
    the upstream (its sends block) and its memory stays bounded."""
    sent = []
    chunk = os.urandom(1 << 20)

    async def flood(ws):
        for _ in range(200):
            await ws.send(chunk)
            sent.append(1)

    up = ws_upstream(flood)
    p = portico(ws_config(up.addr), env=SMALL_QUARANTINE)
    c, r = raw_handshake(p.port)
    try:
        assert r.status == 101
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        time.sleep(0.5)
        base = rss_kb(p.proc.pid)
        time.sleep(3)
        stalled_at = len(sent)
        time.sleep(1)
        assert len(sent) == stalled_at < 40, "the upstream kept sending: %d MB" % len(sent)
        grown_mb = (rss_kb(p.proc.pid) - base) / 1024
        assert grown_mb < 32, "RSS grew by %.1f MB" % grown_mb
        # reading again drains everything that was held
        total = 0
        c.sock.settimeout(10)
        while total < 10 << 20:
            d = c.sock.recv(1 << 20)
            assert d
            total += len(d)
        assert wait_for(lambda: len(sent) > stalled_at)
    finally:
        c.close()


def test_backpressure_upstream_not_reading(portico, ws_upstream):
    """The client floods, the upstream reads nothing: the client is held
    back and Portico's memory stays bounded."""
    release = threading.Event()

    async def sleepy(ws):
        while not release.is_set():
            await asyncio.sleep(0.1)
        await echo_handler(ws)

    up = ws_upstream(sleepy)
    p = portico(ws_config(up.addr), env=SMALL_QUARANTINE)
    c, r = raw_handshake(p.port)
    try:
        assert r.status == 101
        c.sock.setblocking(False)
        frame = ws_frame(0x2, os.urandom(1 << 16))
        time.sleep(0.3)
        base = rss_kb(p.proc.pid)
        pushed = 0
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            try:
                pushed += c.sock.send(frame)
            except BlockingIOError:
                time.sleep(0.05)
        grown_mb = (rss_kb(p.proc.pid) - base) / 1024
        assert pushed < 64 << 20, "the client could push %d MB" % (pushed >> 20)
        assert grown_mb < 32, "RSS grew by %.1f MB" % grown_mb
    finally:
        release.set()
        c.close()


# ---------------------------------------------------------------------------
# Access log
# ---------------------------------------------------------------------------

def test_access_log_written_when_tunnel_ends(portico, ws_echo):
    p = portico(ws_config(ws_echo.addr))
    payload = os.urandom(100000)

    async def go():
        async with connect(p.port, path="/logged") as ws:
            await ws.send(payload)
            assert await ws.recv() == payload
            await asyncio.sleep(0.3)
            assert not access_lines(p, lambda ln: ln["path"] == "/logged")  # not before the end
            t0 = time.monotonic()
            await asyncio.sleep(0.5)
        return t0

    run(go())
    line = wait_log(p, lambda ln: ln["path"] == "/logged")[0]
    assert line["status"] == 101 and line["method"] == "GET" and line["route"] == "main"
    assert line["bytes_in"] >= 100000 and line["bytes_out"] >= 100000
    assert line["duration_ms"] >= 800
    assert line["upstream"] == ws_echo.addr


def test_open_tunnels_gauge(portico, ws_echo):
    """portico_open_tunnels counts tunnels from the switch to their end."""
    from upstreams import request as http_request

    aport = free_port()
    cfg = ws_config(ws_echo.addr, admin={"listen": "127.0.0.1:%d" % aport})
    p = portico(cfg)

    def gauge():
        r = http_request(aport, "GET", "/metrics")
        assert r.status == 200, r
        for line in r.text.splitlines():
            if line.startswith("portico_open_tunnels "):
                return float(line.split()[1])
        raise AssertionError("no portico_open_tunnels in %r" % r.text[:500])

    def ready_zero():
        try:
            return gauge() == 0
        except OSError:
            return False

    assert wait_for(ready_zero)

    async def go():
        async with connect(p.port) as ws1, connect(p.port) as ws2:
            await ws1.send("a")
            await ws2.send("b")
            await ws1.recv()
            await ws2.recv()
            assert gauge() == 2
        assert wait_for(lambda: gauge() == 0, 5)

    run(go())
