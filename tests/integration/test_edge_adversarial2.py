"""Adversarial tests for the slow-body defence (src/downstream/body_pace.h, its use
in h1_server.c / h2_server.c, per-route body_timeout / min_body_rate) and for
upstream TLS session resumption (tls_client.c, the per-pool session slot).

Clients are raw sockets, python3-h2 and ssl; upstreams are the fakes of
upstreams.py, the TLS upstream of tlsutil.py and raw sockets. Timeouts are
short (body: 1s); assertions on time are generous bounds."""
import os
import signal
import socket
import threading
import time

import pytest

from conftest import simple_config
from h2util import H2, problem
from tlsutil import TLSUpstream, pki, tls_upstream, up_tls_config  # noqa: F401 (fixtures)
from upstreams import (GAP_DETAIL, RATE_DETAIL, ConnReader, make_response, problem_check, read_response, request,
                       wait_reloaded)


# ------------------------------------------------- upstream TLS: pooled conns

def test_pooled_tls_connection_not_reused_after_reload_tightens_verification(portico, pki, tls_upstream):
    """A keep-alive connection made with verify: false must not serve
    requests after a reload that requires verification against a CA that
    does not trust the upstream: the new settings start with a full,
    verified handshake (502), not with the old generation's idle connection."""
    up = tls_upstream()  # keep-alive
    cfg = up_tls_config(up.addr, verify=False, sni="a.test")
    cfg["workers"] = 1  # one pool
    p = portico(cfg)
    assert request(p.port, "GET", "/before").status == 200
    assert up.connections == 1
    cfg = up_tls_config(up.addr, ca=str(pki["dir"] / "evil.crt"), sni="a.test")
    cfg["workers"] = 1
    p.write_config(cfg)
    p.signal(signal.SIGHUP)
    wait_reloaded(p)
    for i in range(3):
        doc = problem_check(request(p.port, "GET", "/after%d" % i), 502)
        assert "TLS" in doc["detail"], doc
    assert not [t for _, t, _, _ in up.requests if t.startswith("/after")], up.requests


def test_pooled_tls_connection_not_shared_between_upstreams_with_other_tls(portico, pki, tls_upstream):
    """Two upstreams with the same address and server name but different TLS
    settings (verify: false / a CA that does not trust the upstream): the
    strict one never borrows the lax one's idle connection (HTTP/1 pool)."""
    up = tls_upstream()
    cfg = {
        "upstreams": {
            "lax": {"targets": [up.addr], "tls": {"verify": False, "sni": "a.test"}},
            "strict": {"targets": [up.addr], "tls": {"ca": str(pki["dir"] / "evil.crt"), "sni": "a.test"}},
        },
        "routes": [
            {"name": "lax", "match": {"path_prefix": "/lax"}, "upstream": "lax"},
            {"name": "strict", "match": {"path_prefix": "/strict"}, "upstream": "strict"},
        ],
        "workers": 1,
    }
    p = portico(cfg)
    assert request(p.port, "GET", "/lax/1").status == 200
    for i in range(3):
        problem_check(request(p.port, "GET", "/strict/%d" % i), 502)
    assert request(p.port, "GET", "/lax/2").status == 200
    assert not [t for _, t, _, _ in up.requests if t.startswith("/strict")], up.requests


def test_h2_upstream_connection_not_shared_between_upstreams_with_other_tls(portico, pki):
    """The same for HTTP/2 upstreams (protocol: h2): a connection opened for
    the verify: false upstream is not used for streams of an upstream whose
    CA does not trust the server."""
    import grpc
    from concurrent import futures
    from h2util import grpc_method as m, grpc_unary_echo as _unary, ident
    cert, key = pki["a"]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Svc", {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary, ident, ident)}),))
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(
        ((open(key, "rb").read(), open(cert, "rb").read()),)))
    server.start()
    try:
        addr = "127.0.0.1:%d" % port
        cfg = {
            "workers": 1,
            "upstreams": {
                "lax": {"targets": [addr], "protocol": "h2", "tls": {"verify": False, "sni": "a.test"}},
                "strict": {"targets": [addr], "protocol": "h2",
                           "tls": {"ca": str(pki["dir"] / "evil.crt"), "sni": "a.test"}},
            },
            "routes": [
                {"name": "lax", "match": {"host": "lax.test"}, "upstream": "lax"},
                {"name": "strict", "match": {"host": "strict.test"}, "upstream": "strict"},
            ],
        }
        gw = portico(cfg)
        target = "127.0.0.1:%d" % gw.port
        with grpc.insecure_channel(target, options=[("grpc.default_authority", "lax.test")]) as lax, \
                grpc.insecure_channel(target, options=[("grpc.default_authority", "strict.test")]) as strict:
            assert m(lax, "unary_unary", "Unary")(b"a", timeout=10) == b"echo:a"
            for _ in range(3):
                with pytest.raises(grpc.RpcError) as ei:
                    m(strict, "unary_unary", "Unary")(b"b", timeout=10)
                assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
            assert m(lax, "unary_unary", "Unary")(b"c", timeout=10) == b"echo:c"
    finally:
        server.stop(0)


def test_session_rejected_by_new_upstream_gets_full_verified_handshake(portico, pki, tls_upstream):
    """The slot's session is offered to an upstream that no longer knows it
    (the server at that address was replaced): the full handshake that
    follows verifies the certificate again, so a server whose certificate
    the CA did not sign is refused even though a session was offered."""
    up = tls_upstream(close=True)
    cfg = up_tls_config(up.addr, ca=pki["ca"], sni="a.test")
    cfg["workers"] = 1
    p = portico(cfg)
    for i in range(3):
        assert request(p.port, "GET", "/ok%d" % i).status == 200
    assert up.resumed == 2
    port = int(up.addr.rsplit(":", 1)[1])
    up.sock.shutdown(socket.SHUT_RDWR)  # wakes its accept()
    up.close()
    # an impostor on the same address with a self-signed certificate for a.test
    d = pki["dir"]
    import subprocess
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "imp.key", "-out",
                    "imp.crt", "-days", "2", "-subj", "/CN=a.test", "-addext", "subjectAltName=DNS:a.test"],
                   cwd=d, check=True, capture_output=True, timeout=60)
    imp = TLSUpstream(str(d / "imp.crt"), str(d / "imp.key"), close=True)
    imp.sock.close()
    imp.sock = socket.socket()
    imp.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    imp.sock.bind(("127.0.0.1", port))
    imp.sock.listen(16)
    threading.Thread(target=imp._serve, daemon=True).start()
    try:
        for i in range(2):
            doc = problem_check(request(p.port, "GET", "/impostor%d" % i), 502)
            assert "TLS" in doc["detail"], doc
        assert imp.resumed == 0 and not imp.requests
    finally:
        imp.close()


def test_resumption_with_verify_false_upstream(portico, tls_upstream):
    """verify: false upstreams resume too (their sessions stay within their
    own context)."""
    up = tls_upstream(close=True)
    cfg = up_tls_config(up.addr, verify=False)
    cfg["workers"] = 1
    p = portico(cfg)
    for i in range(4):
        assert request(p.port, "GET", "/v%d" % i).status == 200
    assert up.connections == 4 and up.resumed == 3, (up.connections, up.resumed)


@pytest.mark.parametrize("close", [True, False])
def test_reload_loop_under_https_load(portico, pki, tls_upstream, close):
    """SIGHUP in a loop (alternating between two TLS settings, so the
    contexts change) while clients hammer an https upstream: every request
    is answered 200, Portico stays up, and the sanitizers stay quiet at
    exit (session slots hold references on contexts of freed
    generations)."""
    up = tls_upstream(close=close)
    cfgs = [up_tls_config(up.addr, ca=pki["ca"], sni="a.test"),
            up_tls_config(up.addr, verify=False, sni="a.test")]
    for c in cfgs:
        c["workers"] = 2
    p = portico(cfgs[0])
    stop = threading.Event()
    results = []

    def client(n):
        i = 0
        while not stop.is_set():
            try:
                r = request(p.port, "GET", "/load%d-%d" % (n, i))
                results.append(r.status)
            except OSError as e:
                results.append(repr(e))
            i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        for k in range(12):
            p.write_config(cfgs[(k + 1) % 2])
            p.signal(signal.SIGHUP)
            wait_reloaded(p, k + 1)
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    assert p.alive()
    assert len(results) > 50, len(results)
    assert set(results) == {200}, [r for r in results if r != 200][:5]
    assert up.resumed > 0


# ----------------------------------------------------------- slow bodies

@pytest.fixture
def raw_upstream(raw_server):
    """An upstream that runs `handler(upstream, sock)` on each accepted
    connection (blocking sockets; OSError ends a connection quietly)."""
    def start(handler):
        u = raw_server(lambda s, n: handler(u, s), timeout=None, ignore=(OSError,), backlog=16)
        return u
    return start


def read_head(c):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = c.recv(65536)
        if not d:
            raise OSError("closed")
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    cl = 0
    for ln in head.split(b"\r\n")[1:]:
        k, v = ln.split(b":", 1)
        if k.strip().lower() == b"content-length":
            cl = int(v)
    return head, rest, cl


def body_cfg(addr, body="1s", rate=0, **top):
    t = {"timeouts": {"body": body}, "limits": {"min_body_rate": rate}}
    t.update(top)
    return simple_config(addr, **t)


def test_h1_expect_100_clock_starts_with_our_100(portico, echo):
    """A client that waits for our 100 Continue before sending (as it
    should) is not blamed for the time before it: routing is held 2.5 s by a
    plugin (timeouts.body 1s), then the 100 goes out and the body follows."""
    c = body_cfg(echo.addr)
    c["routes"][0]["plugins"] = [{"delay": {"duration": "2500ms", "phase": "request"}}]
    p = portico(c)
    s = socket.create_connection(("127.0.0.1", p.port), timeout=15)
    t0 = time.monotonic()
    s.sendall(b"POST /expect HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got:
        d = s.recv(4096)
        assert d, got
        got += d
    assert got.startswith(b"HTTP/1.1 100"), got
    assert time.monotonic() - t0 >= 2.0
    time.sleep(0.5)  # well within timeouts.body after our 100
    s.sendall(b"hello")
    r = read_response(ConnReader(s), "POST")
    assert r.status == 200 and r.json()["body_len"] == 5, r
    s.close()


def test_h1_pipelined_bodies_with_slow_upstream(portico, upstream):
    """Three pipelined POSTs (bodies complete, sent in one write) behind an
    upstream that takes 1.5 s each (timeouts.body 1s): no 408, all answered
    in order."""
    up = upstream(lambda req: [1.5, make_response(200, "OK", [], req.body)])
    p = portico(body_cfg(up.addr, rate="1k"))
    s = socket.create_connection(("127.0.0.1", p.port), timeout=20)
    reqs = b"".join(b"POST /p%d HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nbody-%d" % (i, i) for i in range(3))
    reqs += b"POST /p3 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nbody-3\r\n0\r\n\r\n"
    s.sendall(reqs)
    rd = ConnReader(s)
    for i in range(4):
        r = read_response(rd, "POST")
        assert r.status == 200 and r.body == b"body-%d" % i, (i, r)
    s.close()


def test_h1_chunked_trickle_within_gap_then_chunked_stall(portico, echo):
    """Chunked bodies: chunks every 0.4 s for 2.4 s (each gap under
    timeouts.body 1s, min_body_rate 0) complete; a chunked body that stops
    gets the gap 408."""
    p = portico(body_cfg(echo.addr))
    s = socket.create_connection(("127.0.0.1", p.port), timeout=15)
    s.sendall(b"POST /chunky HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(6):
        time.sleep(0.4)
        s.sendall(b"3\r\nabc\r\n")
    s.sendall(b"0\r\n\r\n")
    r = read_response(ConnReader(s), "POST")
    assert r.status == 200 and r.json()["body_len"] == 18, r
    s.sendall(b"POST /chunk-stall HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    t0 = time.monotonic()
    r = read_response(ConnReader(s), "POST")
    doc = problem_check(r, 408)
    assert doc["detail"] == GAP_DETAIL and time.monotonic() - t0 < 8
    s.close()


def slow_reader(delay):
    """Upstream handler: reads the head, waits `delay` s without reading (the
    request body backs up into Portico), then reads the whole body and
    answers its length."""
    def handler(u, c):
        head, rest, cl = read_head(c)
        time.sleep(delay)
        got = len(rest)
        while got < cl:
            d = c.recv(1 << 20)
            if not d:
                return
            got += len(d)
        c.sendall(make_response(200, "OK", [], b"%d" % got))
    return handler


def test_h1_large_body_under_upstream_backpressure(portico, raw_upstream):
    """8 MiB sent at once while the upstream does not read for 3 s
    (timeouts.body 1s, min_body_rate 64k): the client cannot send because
    Portico stopped reading; it is not blamed."""
    up = raw_upstream(slow_reader(3))
    p = portico(body_cfg(up.addr, rate="64k"))
    body = os.urandom(8 << 20)
    s = socket.create_connection(("127.0.0.1", p.port), timeout=30)
    threading.Thread(target=lambda: s.sendall(b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
                                               % len(body) + body), daemon=True).start()
    r = read_response(ConnReader(s), "POST")
    assert r.status == 200 and r.body == b"%d" % len(body), r
    s.close()


def test_h2_window_exhausted_by_backpressure_not_blamed(portico, raw_upstream):
    """HTTP/2: a 4 MiB body while the upstream does not read for 3 s: the
    stream window runs out because Portico did not consume; no 408."""
    up = raw_upstream(slow_reader(3))
    p = portico(body_cfg(up.addr, rate="64k"))
    h = H2(p.port)
    body = os.urandom(4 << 20)
    h.request(1, "/h2big", end=False, extra=[("content-length", str(len(body)))])
    sent = 0
    deadline = time.monotonic() + 30
    while sent < len(body) and time.monotonic() < deadline and h.st(1)["headers"] is None:
        win = min(h.c.local_flow_control_window(1), h.c.max_outbound_frame_size)
        if win <= 0:
            h.pump(0.05)
            continue
        n = min(win, len(body) - sent)
        h.send(1, body[sent:sent + n], end=(sent + n == len(body)))
        sent += n
    assert sent == len(body), (sent, h.streams)
    assert h.wait(lambda: h.st(1)["ended"], 20), h.streams
    assert h.status(1) == 200 and h.st(1)["data"] == b"%d" % len(body), h.streams
    h.close()


def test_h2_many_trickling_streams_all_cut(portico, echo):
    """Eight streams on one connection, each trickling 5 bytes every 0.3 s
    (every gap under timeouts.body, far below min_body_rate 1k): every one
    gets its rate 408; the connection then still serves a request."""
    p = portico(body_cfg(echo.addr, rate="1k"))
    h = H2(p.port)
    sids = list(range(1, 17, 2))
    for sid in sids:
        h.request(sid, "/t%d" % sid, body=b"12345", end=False)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 10 and not all(h.st(sid)["headers"] for sid in sids):
        h.pump(0.3)
        for sid in sids:
            h.send(sid, b"12345")
    for sid in sids:
        doc = problem(h, sid, 408)
        assert RATE_DETAIL in doc["detail"], doc
    h.request(101, "/after", body=b"ok", end=True)
    assert h.wait(lambda: h.st(101)["ended"], 8), h.streams
    assert h.status(101) == 200
    h.close()
    assert not [r for r in echo.requests if r.path.startswith("/t")]


def test_h1_one_byte_before_each_gap_is_cut_by_rate(portico, echo):
    """One byte right before each gap expiry (0.8 s; timeouts.body 1s) with
    the default-style rate rule on: cut by the rate rule within a bound."""
    p = portico(body_cfg(echo.addr, rate="100"))
    s = socket.create_connection(("127.0.0.1", p.port), timeout=15)
    s.sendall(b"POST /drip HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
    t0 = time.monotonic()
    s.setblocking(False)
    got = b""
    while time.monotonic() - t0 < 12:
        try:
            d = s.recv(65536)
            if not d:
                break
            got += d
            if b"\r\n\r\n" in got:
                break
        except BlockingIOError:
            pass
        try:
            s.send(b"x")
        except OSError:
            break
        time.sleep(0.8)
    s.setblocking(True)
    s.settimeout(5)
    rd = ConnReader(s)
    rd.buf += got
    r = read_response(rd, "POST")
    doc = problem_check(r, 408)
    assert RATE_DETAIL in doc["detail"], doc
    assert time.monotonic() - t0 < 10
    s.close()


def test_huge_declared_length_rate_one_and_1ms_gap(portico, echo):
    """Arithmetic edges: min_body_rate 1 with a Content-Length of 2^60 (no
    overflow makes the deadline wrap: a stall still gets its 408), and a
    route with body_timeout 1ms whose bodies arrive with the head (no
    spurious 408)."""
    c = body_cfg(echo.addr, rate=1)
    c["routes"][0]["max_body_size"] = 0  # unlimited
    c["routes"].insert(0, {"name": "tight", "match": {"path_prefix": "/tight"}, "upstream": "up",
                           "body_timeout": "1ms", "min_body_rate": "1"})
    p = portico(c)
    s = socket.create_connection(("127.0.0.1", p.port), timeout=15)
    s.sendall(b"POST /huge HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n0123456789" % (1 << 60))
    t0 = time.monotonic()
    doc = problem_check(read_response(ConnReader(s), "POST"), 408)
    assert doc["detail"] == GAP_DETAIL and 0.5 <= time.monotonic() - t0 < 8
    s.close()
    for i in range(10):
        r = request(p.port, "POST", "/tight/%d" % i, body=b"z" * 3000)
        assert r.status == 200 and r.json()["body_len"] == 3000, r


def test_huge_content_length_forwarded_exactly(portico, raw_upstream):
    """Regression: the upstream request head's Content-Length field was
    formatted into a 32-byte stack buffer; 19 digits overflowed it (ASan
    stack-buffer-overflow, stack bytes sent upstream)."""
    heads = []

    def handler(u, c):
        head, rest, cl = read_head(c)
        heads.append(head)
        c.sendall(make_response(200, "OK", [], b"early"))

    up = raw_upstream(handler)
    c = body_cfg(up.addr)
    c["routes"][0]["max_body_size"] = 0
    p = portico(c)
    s = socket.create_connection(("127.0.0.1", p.port), timeout=15)
    s.sendall(b"POST /cl HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000000000000\r\n\r\n0123456789")
    r = read_response(ConnReader(s), "POST")
    assert r.status == 200 and r.body == b"early", r
    s.close()
    assert len(heads) == 1 and b"\r\nContent-Length: 1000000000000000000" in heads[0] and b"\0" not in heads[0], heads


def test_early_response_then_silent_both_ways_bounded_by_read_timeout(portico, raw_upstream):
    """The response-started rule: the upstream sends its head (and part of a
    body) early, then goes silent while still accepting the request body.
    The slow-body clock is off then; a client that stops sending is bounded
    by the upstream's read_timeout (2s, timeouts.body 30s): the response is
    cut off and the connection closed, not held."""
    def handler(u, c):
        head, rest, cl = read_head(c)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        c.settimeout(60)
        while c.recv(65536):
            pass

    up = raw_upstream(handler)
    c = body_cfg(up.addr, body="30s", rate="1k")
    c["upstreams"]["up"]["read_timeout"] = "2s"
    p = portico(c)
    for path in ("/early-h1", "/early-h1-b"):
        s = socket.create_connection(("127.0.0.1", p.port), timeout=15)
        s.sendall(b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\nxyz" % path.encode())
        t0 = time.monotonic()
        got = b""
        while True:
            try:
                d = s.recv(65536)
            except ConnectionResetError:
                d = b""
            if not d:
                break
            got += d
        elapsed = time.monotonic() - t0
        s.close()
        assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"partial"), got
        assert 1.5 <= elapsed < 12, elapsed


def test_h1_discard_after_early_complete_response(portico, raw_upstream):
    """The upstream answers completely before reading the body: Portico
    discards the rest. A client that sends the rest promptly keeps its
    connection; one that stops is cut by the body clock (not held)."""
    def handler(u, c):
        while True:
            head, rest, cl = read_head(c)
            c.sendall(make_response(200, "OK", [], b"early"))

    up = raw_upstream(handler)
    p = portico(body_cfg(up.addr, rate="1k"))
    s = socket.create_connection(("127.0.0.1", p.port), timeout=15)
    s.sendall(b"POST /d1 HTTP/1.1\r\nHost: t\r\nContent-Length: 20000\r\n\r\n" + b"a" * 100)
    rd = ConnReader(s)
    r = read_response(rd, "POST")
    assert r.status == 200 and r.body == b"early", r
    s.sendall(b"a" * 19900)
    s.sendall(b"GET /d2 HTTP/1.1\r\nHost: t\r\n\r\n")
    r = read_response(rd, "GET")
    assert r.status == 200 and r.body == b"early", r
    # now a body that stops after the early answer
    s.sendall(b"POST /d3 HTTP/1.1\r\nHost: t\r\nContent-Length: 20000\r\n\r\n" + b"a" * 100)
    r = read_response(rd, "POST")
    assert r.status == 200
    t0 = time.monotonic()
    s.settimeout(10)
    try:
        rest = s.recv(100)
    except ConnectionResetError:
        rest = b""
    assert rest == b"" and time.monotonic() - t0 < 8
    s.close()


def test_h2_connection_dropped_with_armed_body_timers(portico, echo):
    """Streams waiting for bodies (timers armed), one reset by the client,
    then the TCP connection dropped: nothing fires on freed streams (ASan at
    teardown), and Portico keeps serving."""
    p = portico(body_cfg(echo.addr, body="500ms", rate="1k"))
    for _ in range(3):
        h = H2(p.port)
        for sid in (1, 3, 5, 7):
            h.request(sid, "/armed%d" % sid, body=b"abc", end=False)
        h.pump(0.2)
        h.c.reset_stream(3)
        h.flush()
        h.pump(0.1)
        h.close()
    time.sleep(1.5)  # past every deadline those timers had
    h = H2(p.port)
    h.request(1, "/fine", body=b"ok", end=True)
    assert h.wait(lambda: h.st(1)["ended"], 8), h.streams
    assert h.status(1) == 200
    h.close()
