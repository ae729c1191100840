"""The downstream connection object (src/downstream/conn.c): every accepted
socket is one `pt_conn` whatever it speaks, and changes protocol by moving
(TLS handshake -> HTTP/1.1 or HTTP/2 by ALPN; plaintext HTTP/1 -> HTTP/2 on
the h2c preface).

Covered here, black-box against the real binary:
  * the connection limits (`limits.max_connections_per_client`, and
    `limits.max_connections` per listener) and the
    `portico_open_connections` gauge are released exactly once on every
    path: idle HTTP/1 keep-alive, h2c prior knowledge, TLS ALPN h2 and
    http/1.1, TLS handshakes left half done, aborted (garbage, RST), h2c
    preface split and abandoned; a double release would let one more client
    in than the limit allows, or make the gauge wrong;
  * the TLS handshake deadline (`timeouts.header`) closes a stalled
    handshake and releases its counts;
  * drain (SIGTERM) with idle HTTP/1, idle HTTP/2 (TLS and h2c), in-flight
    slow requests (HTTP/1 and HTTP/2) and a half-done handshake: the
    in-flight answers complete, the idle connections close at once, the
    process exits 0 before the drain deadline;
  * after a move: many concurrent TLS h2 streams carrying the mTLS identity
    (it moved with the connection), h2c with frames in the same write as
    the preface, and the preface split at every interesting offset;
  * HTTP/1 per-request state between requests (request arena): pipelined
    bodies (Content-Length, chunked), early local answers whose unread
    bodies are discarded, Expect: 100-continue, 408 on a head that never
    completes, and the access log's byte counts per request.

The `portico` fixture fails a test whose process exits non-zero or prints a
sanitizer report (conftest.SANITIZER_MARKERS)."""

import hashlib
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time

import h2.config
import h2.connection
import h2.events
import pytest

from conftest import free_port
from test_admin_metrics import scrape, value
from tlsutil import client_ctx, pki, tls_connect  # noqa: F401  (pki: fixture)
from upstreams import (Client, ConnReader, build_request, chunked, echo_body, make_response, read_response,
                       recv_head)

N = 3            # the per-client limit used by the limit tests
SUBJECT = "CN=alice,O=Acme"
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


# ------------------------------------------------------------------ config

class GW:
    """A Portico with a plaintext listener (h2c allowed), a TLS listener
    (ALPN h2 / http/1.1, optional mTLS forwarding the subject) and admin."""

    def __init__(self, portico, pki, up_addr, limits=None, timeouts=None, client_auth=None, env=None):
        self.plain = free_port()
        self.tls = free_port()
        self.admin = free_port()
        tls = {"certificates": [{"cert": pki["a"][0], "key": pki["a"][1]}]}
        if client_auth:
            tls["client_auth"] = client_auth
        cfg = {
            "listen": ["127.0.0.1:%d" % self.plain, {"address": "127.0.0.1:%d" % self.tls, "tls": tls}],
            "upstreams": {"up": {"targets": [up_addr]}},
            "routes": [
                {"name": "local", "match": {"path_prefix": "/local"},
                 "plugins": [{"direct_response": {"status": 200, "body": "local answer"}}]},
                {"name": "deny", "match": {"path_prefix": "/deny"},
                 "plugins": [{"ip_restriction": {"deny": ["127.0.0.0/8"]}}], "upstream": "up"},
                {"name": "main", "match": {"path_prefix": "/"}, "upstream": "up"},
            ],
            "admin": {"listen": "127.0.0.1:%d" % self.admin},
        }
        if limits:
            cfg["limits"] = limits
        if timeouts:
            cfg["timeouts"] = timeouts
        self.p = portico(cfg, port=self.plain, env=env)
        self.pki = pki
        self.plain_label = "127.0.0.1:%d" % self.plain
        self.tls_label = "127.0.0.1:%d" % self.tls
        # The fixture's readiness probe (a connect and close on the plain
        # port) holds a connection-limit slot until the worker has accepted
        # and closed it: wait for that, or a test's first connection can
        # race it and be refused.
        deadline = time.monotonic() + 10
        while True:
            m = scrape(self.admin)
            if (value(m, "portico_connections_total", listener=self.plain_label) or 0) >= 1 and \
                    value(m, "portico_open_connections", listener=self.plain_label) == 0:
                break
            assert time.monotonic() < deadline, "the readiness probe was never accepted and closed"
            time.sleep(0.02)

    def gauge(self):
        s = scrape(self.admin)
        return (value(s, "portico_open_connections", listener=self.plain_label),
                value(s, "portico_open_connections", listener=self.tls_label))

    def wait_gauge(self, plain, tls, timeout=10):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.gauge()
            if last == (plain, tls):
                return
            time.sleep(0.03)
        raise AssertionError("open connections (plain, tls) = %r, expected %r\n%s"
                             % (last, (plain, tls), self.p.logs()[-3000:]))


def slow_echo(req):
    """The upstream: /slow* answers after 1.5 s with a 200 KB body whose
    digest is in a header; everything else is the echo answer."""
    if req.path.startswith("/slow"):
        body = hashlib.sha256(req.target.encode()).digest() * 6400
        return [1.5, make_response(200, "OK", [("X-Digest", hashlib.sha256(body).hexdigest())], body)]
    return make_response(200, "OK", [("Content-Type", "application/json")], echo_body(req))


@pytest.fixture
def up(upstream):
    return upstream(slow_echo)


# ----------------------------------------------------------------- clients

def idle_h1(port):
    """A plaintext HTTP/1.1 keep-alive connection that made one request
    (200); retries briefly while an earlier connection's slot is released."""
    deadline = time.monotonic() + 5
    while True:
        c = Client(port, timeout=5)
        r = c.request("GET", "/warm")
        if r.status == 200:
            return c
        c.close()
        assert r.status == 503 and time.monotonic() < deadline, r
        time.sleep(0.03)


def refused(port):
    """Asserts a new plaintext connection gets the connection-limit 503."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(b"GET /should-not-run HTTP/1.1\r\nHost: x\r\n\r\n")
    except OSError:
        pass
    try:
        r = read_response(ConnReader(s))
    finally:
        s.close()
    assert r.status == 503 and b"too many connections" in r.body, r


class H2Client:
    """A python-h2 client over a plain (h2c) or TLS (ALPN h2) socket."""

    def __init__(self, sock):
        self.s = sock
        self.s.settimeout(10)
        self.c = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8", validate_inbound_headers=False))
        self.c.initiate_connection()
        self.s.sendall(self.c.data_to_send())
        self.streams = {}
        self.closed = False
        self.goaway = False

    def send(self):
        out = self.c.data_to_send()
        if out:
            self.s.sendall(out)

    def request(self, sid, path, body=None, extra=(), authority="a.test", scheme="https"):
        hdrs = [(":method", "POST" if body is not None else "GET"), (":scheme", scheme),
                (":authority", authority), (":path", path)] + list(extra)
        self.c.send_headers(sid, hdrs, end_stream=body is None)
        if body is not None:
            self.c.send_data(sid, body, end_stream=True)
        self.streams[sid] = {"headers": None, "data": b"", "ended": False, "reset": None}
        self.send()

    def pump(self, until, timeout=15):
        """Reads until until() is true; returns False on timeout."""
        deadline = time.monotonic() + timeout
        while not until():
            if time.monotonic() > deadline:
                return False
            if self.closed:
                return until()
            self.s.settimeout(max(0.05, min(1.0, deadline - time.monotonic())))
            try:
                data = self.s.recv(65536)
            except socket.timeout:
                continue
            except (ConnectionResetError, ssl.SSLError, OSError):
                data = b""
            if not data:
                self.closed = True
                continue
            for ev in self.c.receive_data(data):
                st = self.streams.get(getattr(ev, "stream_id", None))
                if isinstance(ev, h2.events.ResponseReceived):
                    st["headers"] = dict(ev.headers)
                elif isinstance(ev, h2.events.DataReceived):
                    st["data"] += ev.data
                    self.c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    st["ended"] = True
                elif isinstance(ev, h2.events.StreamReset):
                    if st is not None:
                        st["reset"] = ev.error_code
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    self.goaway = True
            try:
                self.send()
            except OSError:
                self.closed = True
        return True

    def done(self, *sids):
        return all(self.streams[s]["ended"] or self.streams[s]["reset"] is not None for s in sids)

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def h2c(port):
    return H2Client(socket.create_connection(("127.0.0.1", port), timeout=10))


def tls_sock(gw, alpn, cert=None):
    s = tls_connect(gw.tls, client_ctx(gw.pki, alpn=alpn, cert=cert), "a.test")
    assert s.selected_alpn_protocol() == alpn[0], s.selected_alpn_protocol()
    return s


def client_hello(sni="a.test"):
    """The bytes of a TLS ClientHello (from an in-memory handshake)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    data = out.read()
    assert data[:1] == b"\x16" and len(data) > 100, data[:16]
    return data


def rst(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def wait_closed(sock, timeout):
    """Seconds until the peer closes `sock` (EOF or RST; any bytes read
    meanwhile are returned too), or None if it stays open for `timeout`."""
    t0 = time.monotonic()
    got = b""
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            d = sock.recv(65536)
        except socket.timeout:
            break
        except (ConnectionResetError, ssl.SSLError):
            return time.monotonic() - t0, got
        except OSError:
            return time.monotonic() - t0, got
        if not d:
            return time.monotonic() - t0, got
        got += d
    return None, got


# ---------------------------------------------------------------- 1. limits

def holders(gw, kind):
    """Opens one connection of `kind`, established to the point the kind
    names; returns (object with close(), closer kind)."""
    if kind == "h1-idle":
        return idle_h1(gw.plain)
    if kind == "h2c":
        h = h2c(gw.plain)
        h.request(1, "/h2c", scheme="http")
        assert h.pump(lambda: h.done(1)) and h.streams[1]["headers"][":status"] == "200", h.streams
        return h
    if kind == "tls-h2":
        h = H2Client(tls_sock(gw, ("h2",)))
        h.request(1, "/tls-h2")
        assert h.pump(lambda: h.done(1)) and h.streams[1]["headers"][":status"] == "200", h.streams
        return h
    if kind == "tls-h1":
        s = tls_sock(gw, ("http/1.1",))
        s.sendall(b"GET /tls-h1 HTTP/1.1\r\nHost: a.test\r\n\r\n")
        r = read_response(ConnReader(s))
        assert r.status == 200, r
        return s
    if kind in ("tls-half", "tls-half-rst"):
        s = socket.create_connection(("127.0.0.1", gw.tls), timeout=10)
        hello = client_hello()
        s.sendall(hello[:len(hello) // 2])   # then stall
        return s
    if kind == "tls-full-hello-stall":
        s = socket.create_connection(("127.0.0.1", gw.tls), timeout=10)
        s.sendall(client_hello())            # the server answers; we never finish
        return s
    if kind == "tls-nothing":
        return socket.create_connection(("127.0.0.1", gw.tls), timeout=10)
    if kind == "tls-garbage":
        s = socket.create_connection(("127.0.0.1", gw.tls), timeout=10)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")   # not TLS: the server closes
        return s
    if kind in ("h2c-split", "h2c-split-rst"):
        s = socket.create_connection(("127.0.0.1", gw.plain), timeout=10)
        s.sendall(H2_PREFACE[:3])
        time.sleep(0.05)
        s.sendall(H2_PREFACE[3:11])
        return s
    if kind == "h1-partial-head":
        s = socket.create_connection(("127.0.0.1", gw.plain), timeout=10)
        s.sendall(b"GET /partial HTTP/1.1\r\nHost: x\r\n")
        return s
    raise ValueError(kind)


def close_holder(kind, h):
    if kind in ("tls-half-rst", "h2c-split-rst"):
        rst(h)
    else:
        h.close()


KINDS = ["h1-idle", "h2c", "tls-h2", "tls-h1", "tls-half", "tls-half-rst", "tls-full-hello-stall",
         "tls-nothing", "tls-garbage", "h2c-split", "h2c-split-rst", "h1-partial-head"]
TLS_KINDS = {"tls-h2", "tls-h1", "tls-half", "tls-half-rst", "tls-full-hello-stall", "tls-nothing", "tls-garbage"}


def test_limits_released_exactly_once_on_every_path(portico, pki, up):
    """N-1 idle HTTP/1 connections stay open throughout; each kind of
    connection takes the last slot (N+1 is refused while it holds it), goes
    away, and then exactly one slot is free again: a double release would
    admit two, a missed one none. The per-listener count (max_connections)
    would wrap below zero on a double release and refuse everything on that
    listener; the gauge must match at every step. Three rounds."""
    gw = GW(portico, pki, up.addr, limits={"max_connections_per_client": N, "max_connections": 50},
            timeouts={"header": "20s", "idle": "60s"})
    gw.wait_gauge(0, 0)
    base = [idle_h1(gw.plain) for _ in range(N - 1)]
    gw.wait_gauge(N - 1, 0)
    for rnd in range(3):
        for kind in KINDS:
            h = holders(gw, kind)
            if kind == "tls-garbage":
                # the server closes a non-TLS client at once: its slot returns alone
                t, _ = wait_closed(h, 5)
                assert t is not None, "garbage on the TLS listener did not get the connection closed"
                h.close()
            else:
                refused(gw.plain)
                exp_tls = 1 if kind in TLS_KINDS else 0
                gw.wait_gauge(N - 1 + (1 - exp_tls), exp_tls)
                close_holder(kind, h)
            gw.wait_gauge(N - 1, 0)
            extra = idle_h1(gw.plain)          # exactly one slot is free again ...
            try:
                refused(gw.plain)              # ... not two
                gw.wait_gauge(N, 0)
            finally:
                extra.close()
            gw.wait_gauge(N - 1, 0)
    # every listener still admits (nothing wrapped below zero), the counter of
    # refusals saw every refusal on the plain listener
    s = tls_sock(gw, ("http/1.1",))
    s.sendall(b"GET /end HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
    assert read_response(ConnReader(s)).status == 200
    s.close()
    for c in base:
        c.close()
    gw.wait_gauge(0, 0)
    # all N available again
    again = [idle_h1(gw.plain) for _ in range(N)]
    refused(gw.plain)
    for c in again:
        c.close()
    gw.wait_gauge(0, 0)


def test_limit_full_of_each_kind_then_all_free(portico, pki, up):
    """The whole per-client limit taken by N connections of one kind (TLS
    and plaintext mixed in one round), then released together: N fresh
    connections fit again and N+1 does not."""
    gw = GW(portico, pki, up.addr, limits={"max_connections_per_client": N},
            timeouts={"header": "20s", "idle": "60s"})
    gw.wait_gauge(0, 0)
    groups = [["h2c"] * N, ["tls-h2"] * N, ["tls-half"] * N, ["h2c-split"] * N,
              ["tls-h2", "h2c", "tls-half-rst"], ["tls-h1", "tls-full-hello-stall", "h2c-split-rst"]]
    for _ in range(2):
        for group in groups:
            held = [(k, holders(gw, k)) for k in group]
            refused(gw.plain)
            ntls = sum(k in TLS_KINDS for k in group)
            gw.wait_gauge(N - ntls, ntls)
            for k, h in held:
                close_holder(k, h)
            gw.wait_gauge(0, 0)
            fresh = [idle_h1(gw.plain) for _ in range(N)]
            refused(gw.plain)
            for c in fresh:
                c.close()
            gw.wait_gauge(0, 0)
    s = scrape(gw.admin)
    assert value(s, "portico_connections_total", listener=gw.tls_label) >= 2 * 10


# ------------------------------------------------------- 2. handshake deadline

@pytest.mark.parametrize("stall", ["nothing", "half-hello", "full-hello"])
def test_stalled_handshake_closed_after_header_timeout(portico, pki, up, stall):
    """A TLS client that stalls before / in the middle of its handshake is
    closed once timeouts.header (300 ms) passes, and its slot comes back."""
    gw = GW(portico, pki, up.addr, limits={"max_connections_per_client": 2},
            timeouts={"header": "300ms", "idle": "60s"})
    gw.wait_gauge(0, 0)
    socks = []
    for _ in range(2):
        s = socket.create_connection(("127.0.0.1", gw.tls), timeout=10)
        hello = client_hello()
        if stall == "half-hello":
            s.sendall(hello[:40])
        elif stall == "full-hello":
            s.sendall(hello)
        socks.append(s)
    t0 = time.monotonic()
    for s in socks:
        t, _ = wait_closed(s, 8)
        assert t is not None, "stalled handshake (%s) still open after 8 s (timeouts.header 300ms)" % stall
        s.close()
    elapsed = time.monotonic() - t0
    assert elapsed < 8
    gw.wait_gauge(0, 0)
    a, b = idle_h1(gw.plain), idle_h1(gw.plain)
    refused(gw.plain)
    a.close()
    b.close()


def test_handshake_then_silence_is_bounded_too(portico, pki, up):
    """The handshake and the first request head share one deadline: a TLS
    HTTP/1.1 client that completes its handshake and sends nothing is not
    kept for timeouts.idle (60 s) but closed near timeouts.header."""
    gw = GW(portico, pki, up.addr, timeouts={"header": "300ms", "idle": "60s"})
    s = tls_sock(gw, ("http/1.1",))
    t, got = wait_closed(s, 8)
    s.close()
    assert t is not None, "silent TLS HTTP/1.1 connection still open after 8 s"
    # if anything was said, it is the 408 of the head timeout
    assert got == b"" or got.startswith(b"HTTP/1.1 408 "), got[:200]
    gw.wait_gauge(0, 0)


def test_h2c_preface_stalled_midway_bounded_by_header_timeout(portico, pki, up):
    """A plaintext client that sends the first bytes of the h2c preface and
    stalls holds a partly received request head: like any partial head it
    must be closed once timeouts.header passes, not kept for timeouts.idle."""
    gw = GW(portico, pki, up.addr, timeouts={"header": "300ms", "idle": "60s"})
    s = socket.create_connection(("127.0.0.1", gw.plain), timeout=10)
    s.sendall(H2_PREFACE[:10])
    partial = socket.create_connection(("127.0.0.1", gw.plain), timeout=10)
    partial.sendall(b"GET /x HTTP/1.1\r\n")   # the HTTP/1 analogue, for comparison
    t1, got1 = wait_closed(partial, 8)
    assert t1 is not None and got1.startswith(b"HTTP/1.1 408 "), (t1, got1[:200])
    t2, _ = wait_closed(s, 8)
    s.close()
    partial.close()
    assert t2 is not None, "partial h2c preface kept open beyond timeouts.header (300ms) for 8+ s"


# ------------------------------------------------------------------ 3. drain

def test_drain_mixed_connections(portico, pki, up):
    """SIGTERM with idle HTTP/1 (plain, TLS), idle HTTP/2 (h2c, TLS h2),
    slow requests in flight on HTTP/1 and HTTP/2 (TLS and h2c) and a
    half-done handshake: the in-flight answers arrive whole, the idle
    connections close promptly, the process exits 0 well before the 8 s
    drain deadline (the slow upstream answers after 1.5 s)."""
    gw = GW(portico, pki, up.addr, timeouts={"header": "20s", "idle": "60s", "shutdown": "8s"})
    idle_plain = idle_h1(gw.plain)
    idle_tls = tls_sock(gw, ("http/1.1",))
    idle_tls.sendall(b"GET /i HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert read_response(ConnReader(idle_tls)).status == 200
    idle_h2c = holders(gw, "h2c")
    idle_tls_h2 = holders(gw, "tls-h2")
    half = holders(gw, "tls-half")

    slow_h1 = Client(gw.plain, timeout=15)
    slow_h1.send(build_request("GET", "/slow-h1"))
    slow_tls_h1 = tls_sock(gw, ("http/1.1",))
    slow_tls_h1.settimeout(15)
    slow_tls_h1.sendall(b"GET /slow-tls-h1 HTTP/1.1\r\nHost: a.test\r\n\r\n")
    # HTTP/2 in flight: curl (python-h2 refuses frames that follow a GOAWAY)
    outdir = gw.p.tmp
    slow_h2 = curl_h2(gw, ["--http2", "--cacert", pki["ca"], "--resolve", "a.test:%d:127.0.0.1" % gw.tls,
                           "-Z", "https://a.test:%d/slow-h2" % gw.tls, "https://a.test:%d/slow-h2b" % gw.tls],
                      outdir, "tls")
    slow_h2c = curl_h2(gw, ["--http2-prior-knowledge", "http://127.0.0.1:%d/slow-h2c" % gw.plain], outdir, "h2c")
    up.wait_requests(9)     # 4 warm-ups + 5 slow requests reached the upstream
    # plain: idle h1, idle h2c, slow h1, curl h2c; TLS: idle h1, idle h2, half,
    # slow h1, curl's h2 connection (both transfers multiplexed on it)
    gw.wait_gauge(4, 5)

    t0 = time.monotonic()
    gw.p.signal(signal.SIGTERM)

    results = {}

    def run(name, fn):
        try:
            results[name] = fn()
        except Exception as e:  # reported below
            results[name] = e

    def h1_answer(reader_sock, target):
        r = read_response(ConnReader(reader_sock))
        body_ok = hashlib.sha256(r.body).hexdigest() == r.header("X-Digest")
        expect = hashlib.sha256(target.encode()).digest() * 6400
        return r.status, body_ok and r.body == expect, (r.header("Connection") or "").lower()

    def h2_answer(proc, paths):
        out, err = proc.communicate(timeout=20)
        lines = out.decode().split()
        res = []
        for path in paths:
            expect = hashlib.sha256(path.encode()).digest() * 6400
            with open(proc.outfiles[path], "rb") as f:
                res.append(f.read() == expect)
        return proc.returncode, sorted(lines), res

    threads = [
        threading.Thread(target=run, args=("h1", lambda: h1_answer(slow_h1.sock, "/slow-h1"))),
        threading.Thread(target=run, args=("tls-h1", lambda: h1_answer(slow_tls_h1, "/slow-tls-h1"))),
        threading.Thread(target=run, args=("h2", lambda: h2_answer(slow_h2, ["/slow-h2", "/slow-h2b"]))),
        threading.Thread(target=run, args=("h2c", lambda: h2_answer(slow_h2c, ["/slow-h2c"]))),
    ]
    for t in threads:
        t.start()
    # idle ones close promptly (before the slow answers, long before the deadline)
    for name, sock in (("idle plain h1", idle_plain.sock), ("idle tls h1", idle_tls),
                       ("idle h2c", idle_h2c.s), ("idle tls h2", idle_tls_h2.s), ("half handshake", half)):
        t, _ = wait_closed(sock, 6)
        assert t is not None, "%s not closed by the drain within 6 s" % name
    for t in threads:
        t.join(20)
    assert results["h1"] == (200, True, "close"), results["h1"]
    assert results["tls-h1"] == (200, True, "close"), results["tls-h1"]
    assert results["h2"] == (0, ["200:2", "200:2"], [True, True]), results["h2"]
    assert results["h2c"] == (0, ["200:2"], [True]), results["h2c"]
    rc = gw.p.wait_exit(15)
    elapsed = time.monotonic() - t0
    assert rc == 0, gw.p.logs()
    assert elapsed < 7.5, "exit took %.1fs: the drain waited for the deadline (8s)" % elapsed
    for x in (idle_plain, idle_tls, idle_h2c, idle_tls_h2, half, slow_h1, slow_tls_h1):
        x.close()


def curl_h2(gw, args, outdir, tag):
    """Starts curl for the URLs in `args` (one -o file each, named by
    path); .outfiles maps path -> file. Prints "status:http_version" per
    transfer."""
    urls = [a for a in args if a.startswith("http")]
    outs = []
    files = {}
    for u in urls:
        path = "/" + u.split("/", 3)[3]
        f = os.path.join(outdir, "curl-%s-%s.out" % (tag, path.strip("/")))
        files[path] = f
        outs += ["-o", f]
    cmd = ["curl", "-sS", "--max-time", "20", "-w", "%{http_code}:%{http_version}\\n"] + args[:-len(urls)]
    for u, o in zip(urls, [outs[i:i + 2] for i in range(0, len(outs), 2)]):
        cmd += o + [u]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.outfiles = files
    return proc


@pytest.mark.parametrize("kind", ["h2c-split", "h1-partial-head", "tls-half"])
def test_drain_with_only_a_stalled_connection_exits_before_deadline(portico, pki, up, kind):
    """Nothing in flight, one connection stalled in its first bytes (partial
    h2c preface, partial HTTP/1 head, half a ClientHello): SIGTERM exits 0
    without sitting out the whole drain deadline (shutdown 20 s; the
    header timeout is 1 s, so the stalled head is over by then anyway)."""
    gw = GW(portico, pki, up.addr, timeouts={"header": "1s", "idle": "60s", "shutdown": "20s"})
    h = holders(gw, kind)
    gw.wait_gauge(0 if kind in TLS_KINDS else 1, 1 if kind in TLS_KINDS else 0)
    t0 = time.monotonic()
    gw.p.signal(signal.SIGTERM)
    rc = gw.p.wait_exit(25)
    elapsed = time.monotonic() - t0
    h.close()
    assert rc == 0, gw.p.logs()
    assert elapsed < 10, "exit took %.1fs with one stalled %s connection (header timeout 1s)" % (elapsed, kind)


# ------------------------------------------------------- 4. after the move

def test_tls_h2_many_streams_carry_mtls_identity(portico, pki, up):
    """64 concurrent streams (bodies of several sizes) on one TLS h2
    connection with a client certificate: every request reaches the
    upstream with the verified subject (which moved with the connection from
    the handshake to HTTP/2) and a forged copy stripped; the same over TLS
    HTTP/1.1 keep-alive; without a certificate no subject."""
    gw = GW(portico, pki, up.addr, client_auth={"mode": "optional", "ca": pki["ca"],
                                                "forward_header": "X-Client-Subject"})
    h = H2Client(tls_sock(gw, ("h2",), cert=pki["client"]))
    sids = list(range(1, 129, 2))
    bodies = {}
    for i, sid in enumerate(sids):
        # small enough for the client's initial 64 KiB connection window
        body = None if i % 3 == 0 else hashlib.sha256(b"%d" % sid).digest() * (i % 8 + 1)
        bodies[sid] = body
        h.request(sid, "/m/%d" % sid, body=body, extra=[("x-client-subject", "CN=forged")])
    assert h.pump(lambda: h.done(*sids), timeout=30), [s for s in sids if not h.done(s)]
    for sid in sids:
        st = h.streams[sid]
        assert st["reset"] is None and st["headers"][":status"] == "200", (sid, st)
        doc = json.loads(st["data"])
        hdrs = [(k.lower(), v) for k, v in doc["headers"]]
        assert doc["target"] == "/m/%d" % sid
        assert [v for k, v in hdrs if k == "x-client-subject"] == [SUBJECT], (sid, hdrs)
        body = bodies[sid] or b""
        assert doc["body_sha256"] == hashlib.sha256(body).hexdigest(), sid
    h.close()
    s = tls_sock(gw, ("http/1.1",), cert=pki["client"])
    rd = ConnReader(s)
    for i in range(3):
        s.sendall(build_request("POST", "/h1/%d" % i, headers={"X-Client-Subject": "CN=forged"}, body=b"x" * i,
                                host="a.test"))
        r = read_response(rd)
        hdrs = [(k.lower(), v) for k, v in r.json()["headers"]]
        assert [v for k, v in hdrs if k == "x-client-subject"] == [SUBJECT], hdrs
    s.close()
    h = H2Client(tls_sock(gw, ("h2",)))  # no certificate
    h.request(1, "/anon", extra=[("x-client-subject", "CN=forged")])
    assert h.pump(lambda: h.done(1))
    hdrs = [(k.lower(), v) for k, v in json.loads(h.streams[1]["data"])["headers"]]
    assert not [v for k, v in hdrs if k == "x-client-subject"], hdrs
    h.close()
    gw.wait_gauge(0, 0)


def h2c_all_in_one_write(port, nstreams, body_len, split=None):
    """Preface + SETTINGS + nstreams requests (each with a body) serialised
    by python-h2 and sent in one write (or two, cut at `split`)."""
    c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    c.initiate_connection()
    sids = list(range(1, 2 * nstreams, 2))
    bodies = {}
    for sid in sids:
        body = bytes([sid % 251]) * body_len
        bodies[sid] = body
        c.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", "gw.test"),
                             (":path", "/pipe/%d" % sid)])
        for off in range(0, body_len, 16384):
            c.send_data(sid, body[off:off + 16384], end_stream=off + 16384 >= body_len)
    data = c.data_to_send()
    assert data.startswith(H2_PREFACE)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if split is None:
        s.sendall(data)
    else:
        s.sendall(data[:split])
        time.sleep(0.05)
        s.sendall(data[split:])
    h = H2Client.__new__(H2Client)
    h.s, h.c, h.closed, h.goaway = s, c, False, False
    h.streams = {sid: {"headers": None, "data": b"", "ended": False, "reset": None} for sid in sids}
    assert h.pump(lambda: h.done(*sids), timeout=20), h.streams
    for sid in sids:
        st = h.streams[sid]
        assert st["reset"] is None and st["headers"][":status"] == "200", (sid, st)
        doc = json.loads(st["data"])
        assert doc["target"] == "/pipe/%d" % sid
        assert doc["body_sha256"] == hashlib.sha256(bodies[sid]).hexdigest(), (sid, doc["body_len"])
    return h


def test_h2c_frames_in_the_same_write_as_the_preface(portico, pki, up):
    """The handoff from HTTP/1 to HTTP/2 carries every byte read with the
    preface: 10 requests with bodies in one write, then requests filling the
    initial window in one write (more than one read's worth), then the same
    cut at offsets inside and right after the preface."""
    gw = GW(portico, pki, up.addr)
    h2c_all_in_one_write(gw.plain, 10, 100).close()
    h2c_all_in_one_write(gw.plain, 1, 60000).close()      # ~60 KB after the preface in one write
    h2c_all_in_one_write(gw.plain, 4, 15000).close()
    for split in (1, 5, 23, 24, 25, 33, 60):
        h2c_all_in_one_write(gw.plain, 3, 500, split=split).close()
    gw.wait_gauge(0, 0)
    up.wait_requests(10 + 1 + 4 + 7 * 3)


def test_not_quite_the_preface_is_http1(portico, pki, up):
    """Bytes that start like the preface but differ are an HTTP/1 request
    (505 for the version HTTP/2.0, close), and the connection is counted once."""
    gw = GW(portico, pki, up.addr, limits={"max_connections_per_client": 2})
    s = socket.create_connection(("127.0.0.1", gw.plain), timeout=10)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
    t, got = wait_closed(s, 5)
    s.close()
    assert t is not None and got.startswith(b"HTTP/1.1 505 "), got[:200]
    gw.wait_gauge(0, 0)
    a, b = idle_h1(gw.plain), idle_h1(gw.plain)
    refused(gw.plain)
    a.close()
    b.close()


# ------------------------------------------- 5. HTTP/1 state between requests

def access_entries(p, n, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        lines = p.access_lines()
        if len(lines) >= n or time.monotonic() > deadline:
            return [json.loads(ln) for ln in lines]
        time.sleep(0.05)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_pipelined_mixed_bodies_and_discarded_bodies(portico, pki, up, tls):
    """One write carrying: POST with Content-Length, POST chunked, a local
    answer (direct_response) with an unread Content-Length body, an
    ip_restriction deny with an unread chunked body (200 KB), a GET, a POST
    chunked with trailers; all answered in order on one connection, the
    upstream sees exactly the four proxied requests with their bodies, the
    discarded bodies never become requests, and every access log line's
    bytes_out is exactly its response's wire size."""
    gw = GW(portico, pki, up.addr)
    b1 = b"a" * 1000
    b2 = hashlib.sha256(b"2").digest() * 1000
    b3 = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n" * 10      # unread body that looks like requests
    b4 = (b"POST /smuggled2 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" * 4000)[:200000]
    b6 = b"trailer-body" * 50
    reqs = [
        build_request("POST", "/p1", body=b1),
        build_request("POST", "/p2", body=b2, chunked_body=True),
        build_request("POST", "/local/3", body=b3),
        build_request("POST", "/deny/4", body=b4, chunked_body=True),
        build_request("GET", "/p5"),
        build_request("POST", "/p6", headers=[("Transfer-Encoding", "chunked")], body=None)[:-2]
        + b"\r\n" + chunked(b6, chunk=100, trailers=b"X-T: 1\r\n"),
    ]
    raw = b"".join(reqs)
    if tls:
        s = tls_sock(gw, ("http/1.1",))
    else:
        s = socket.create_connection(("127.0.0.1", gw.plain), timeout=10)
    s.settimeout(15)
    s.sendall(raw)
    rd = ConnReader(s)
    rs = [read_response(rd) for _ in range(6)]
    assert [r.status for r in rs] == [200, 200, 200, 403, 200, 200], rs
    assert json.loads(rs[0].body)["body_sha256"] == hashlib.sha256(b1).hexdigest()
    assert json.loads(rs[1].body)["body_sha256"] == hashlib.sha256(b2).hexdigest()
    assert rs[2].body == b"local answer"
    assert json.loads(rs[4].body)["target"] == "/p5"
    assert json.loads(rs[5].body)["body_sha256"] == hashlib.sha256(b6).hexdigest()
    # the connection still serves requests
    s.sendall(build_request("GET", "/after"))
    r7 = read_response(rd)
    assert r7.status == 200 and json.loads(r7.body)["target"] == "/after"
    s.close()
    got = [r.target for r in up.requests if not r.target.startswith("/warm")]
    assert got == ["/p1", "/p2", "/p5", "/p6", "/after"], got
    assert not up.partial, up.partial
    entries = access_entries(gw.p, 7)
    paths = [e["path"] for e in entries]
    assert paths == ["/p1", "/p2", "/local/3", "/deny/4", "/p5", "/p6", "/after"], paths
    for e, r in zip(entries, rs + [r7]):
        assert e["status"] == r.status, (e, r)
        assert e["bytes_out"] == len(r.raw_head) + len(r.body), (e, len(r.raw_head), len(r.body))
    # bytes_in: wire bytes for a Content-Length body (a chunked one counts
    # its decoded size, not the chunk framing)
    assert entries[0]["bytes_in"] == len(reqs[0]), (entries[0], len(reqs[0]))
    gw.wait_gauge(0, 0)


def test_discard_limit_closes_and_releases(portico, pki, up):
    """An early answer with more unread body than Portico discards (over
    1 MiB) closes the connection after the answer; the slot is released."""
    gw = GW(portico, pki, up.addr, limits={"max_connections_per_client": 1})
    c = idle_h1(gw.plain)
    c.send(b"POST /local/big HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000\r\n\r\n")
    r = c.read_response()
    assert r.status == 200 and r.body == b"local answer"
    closed = False
    try:
        for _ in range(40):
            c.sock.sendall(b"z" * 65536)
    except OSError:
        closed = True
    if not closed:
        t, _ = wait_closed(c.sock, 5)
        closed = t is not None
    assert closed, "connection kept after 2.5 MB of body to discard"
    c.close()
    gw.wait_gauge(0, 0)
    idle_h1(gw.plain).close()


def test_expect_100_continue_between_requests(portico, pki, up):
    """Expect: 100-continue to the upstream route gets 100 then the answer;
    to a local answer the final response comes without 100; the client then
    either sends its body (discarded) or the connection closes; in both
    cases the connection state is right for the next request."""
    gw = GW(portico, pki, up.addr)
    c = Client(gw.plain, timeout=10)
    body = b"q" * 5000
    c.send(b"POST /e1 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
    head, rest = recv_head(c.sock)
    assert head.startswith(b"HTTP/1.1 100"), head
    assert rest == b""
    c.send(body)
    r = c.read_response()
    assert r.status == 200 and json.loads(r.body)["body_sha256"] == hashlib.sha256(body).hexdigest()
    # local answer: no 100
    c.send(b"POST /local/e2 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
    r = c.read_response()
    assert r.status == 200 and r.body == b"local answer" and not r.interim, r
    if (r.header("Connection") or "").lower() == "close":
        t, _ = wait_closed(c.sock, 5)
        assert t is not None
        c.close()
        c = Client(gw.plain, timeout=10)
    else:
        c.send(body)                 # the body, which Portico drops
    r = c.request("POST", "/e3", body=b"next")
    assert r.status == 200 and json.loads(r.body)["target"] == "/e3", r
    assert [q.target for q in up.requests if q.target != "/warm"] == ["/e1", "/e3"]
    c.close()
    entries = access_entries(gw.p, 3)
    assert [e["path"] for e in entries] == ["/e1", "/local/e2", "/e3"]
    assert entries[2]["bytes_out"] == len(r.raw_head) + len(r.body), entries[2]
    gw.wait_gauge(0, 0)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_408_after_a_served_request_then_close(portico, pki, up, tls):
    """A first request is served; the second head never completes: 408
    problem+json after timeouts.header, then the connection closes; the
    access log has both, bytes_out of the 408 is its wire size; the slot is
    released."""
    gw = GW(portico, pki, up.addr, limits={"max_connections_per_client": 1},
            timeouts={"header": "400ms", "idle": "60s"})
    gw.wait_gauge(0, 0)
    if tls:
        s = tls_sock(gw, ("http/1.1",))
    else:
        s = socket.create_connection(("127.0.0.1", gw.plain), timeout=10)
    s.settimeout(10)
    rd = ConnReader(s)
    s.sendall(build_request("GET", "/first"))
    r1 = read_response(rd)
    assert r1.status == 200
    s.sendall(b"GET /second HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    t0 = time.monotonic()
    r2 = read_response(rd)
    assert r2.status == 408, r2
    assert "application/problem+json" in (r2.header("Content-Type") or "")
    assert (r2.header("Connection") or "").lower() == "close"
    tail = rd.read_to_eof()
    assert tail == b"", tail[:100]
    assert time.monotonic() - t0 < 8
    s.close()
    entries = access_entries(gw.p, 2)
    assert [e["status"] for e in entries] == [200, 408], entries
    assert entries[0]["bytes_out"] == len(r1.raw_head) + len(r1.body)
    assert entries[1]["bytes_out"] == len(r2.raw_head) + len(r2.body), entries[1]
    gw.wait_gauge(0, 0)
    idle_h1(gw.plain).close()


# ------------------------------------------------ reload during a handshake

def bio_tls(gw, alpn):
    """A TLS client driven by hand (MemoryBIO) over a raw socket, so that
    the ClientHello can be cut and the handshake resumed later."""
    ctx = client_ctx(gw.pki, alpn=alpn)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="a.test")
    s = socket.create_connection(("127.0.0.1", gw.tls), timeout=10)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return s, obj, inc, out


def bio_pump(s, obj, inc, out, step, timeout=10):
    """Sends what the TLS object wants to send, feeds it what the socket
    gives, until step() returns something other than None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = out.read()
        if pending:
            s.sendall(pending)
        try:
            r = step()
            if r is not None:
                pending = out.read()
                if pending:
                    s.sendall(pending)
                return r
        except ssl.SSLWantReadError:
            pass
        s.settimeout(max(0.05, deadline - time.monotonic()))
        d = s.recv(65536)
        if not d:
            raise ConnectionError("closed by the server")
        inc.write(d)
    raise AssertionError("TLS step did not finish in %ss" % timeout)


def test_reload_between_halves_of_a_client_hello(portico, pki, up):
    """Half a ClientHello, a SIGHUP reload, the other half: the handshake
    finishes on the generation pinned at accept, the connection moves to
    HTTP/1.1 and serves requests; the old generation's pin is released
    (no leak report at exit, counts back to 0)."""
    gw = GW(portico, pki, up.addr, limits={"max_connections_per_client": 2})
    conns = []
    for _ in range(2):
        s, obj, inc, out = bio_tls(gw, ("http/1.1",))
        hello = out.read()
        s.sendall(hello[:len(hello) // 2])
        conns.append((s, obj, inc, out, hello[len(hello) // 2:]))
    gw.wait_gauge(0, 2)
    refused(gw.plain)
    with open(gw.p.config_path) as f:
        text = f.read()
    gw.p.write_config(text)
    gw.p.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reloaded" not in gw.p.stderr():
        assert time.monotonic() < deadline, gw.p.logs()
        time.sleep(0.05)
    for s, obj, inc, out, rest in conns:
        s.sendall(rest)
        bio_pump(s, obj, inc, out, lambda: obj.do_handshake() or True)
        assert obj.selected_alpn_protocol() == "http/1.1"
        for i in range(2):
            obj.write(b"GET /after-reload/%d HTTP/1.1\r\nHost: a.test\r\n\r\n" % i)
            buf = [b""]

            def step():
                buf[0] += obj.read(65536)
                if b"\r\n\r\n" in buf[0]:
                    head, body = buf[0].split(b"\r\n\r\n", 1)
                    n = int([ln.split(b":")[1] for ln in head.split(b"\r\n")
                             if ln.lower().startswith(b"content-length:")][0])
                    if len(body) >= n:
                        return head
                return None
            head = bio_pump(s, obj, inc, out, step)
            assert head.startswith(b"HTTP/1.1 200 "), head
    for s, *_ in conns:
        s.close()
    gw.wait_gauge(0, 0)
    a, b = idle_h1(gw.plain), idle_h1(gw.plain)
    refused(gw.plain)
    a.close()
    b.close()
