"""gRPC pass-through and HTTP/2 upstreams (src/upstream/h2_client.c).

A grpcio client talks h2c (prior knowledge) to Portico, which forwards each
call on an HTTP/2 stream to a grpcio server (upstream `protocol: h2c`).
Generic handlers with raw-bytes (de)serialisers keep it free of codegen.
Also a plain HTTP/2 upstream written with python3-h2 (h2util.H2Upstream) for
GET/POST bodies."""
import socket
import time
from concurrent import futures

import pytest

from conftest import simple_config
from h2util import H2Upstream, grpc_method as m, grpc_unary_echo as _unary, ident
from tlsutil import openssl
from upstreams import recv_all

import grpc  # Debian python3-grpcio, installed by scripts/install-deps.sh
import h2  # Debian python3-h2
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402

def _server_stream(req, ctx):
    for i in range(int(req)):
        yield b"item-%d" % i


def _client_stream(it, ctx):
    return b"|".join(it)


def _bidi(it, ctx):
    for m in it:
        yield m.upper()


def _fail(req, ctx):
    ctx.abort(grpc.StatusCode.FAILED_PRECONDITION, "nope: bad state %")


def _slow(req, ctx):
    time.sleep(2)
    return b"late"


def _big(req, ctx):
    return bytes(range(256)) * (int(req) // 256)


@pytest.fixture
def grpc_server():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    h = {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary, ident, ident),
        "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream, ident, ident),
        "ClientStream": grpc.stream_unary_rpc_method_handler(_client_stream, ident, ident),
        "ClientStream2": grpc.stream_unary_rpc_method_handler(_client_stream, ident, ident),
        "Bidi": grpc.stream_stream_rpc_method_handler(_bidi, ident, ident),
        "Fail": grpc.unary_unary_rpc_method_handler(_fail, ident, ident),
        "Slow": grpc.unary_unary_rpc_method_handler(_slow, ident, ident),
        "Big": grpc.unary_unary_rpc_method_handler(_big, ident, ident),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Svc", h),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(0)


@pytest.fixture
def chan(portico, grpc_server):
    gw = portico(simple_config("127.0.0.1:%d" % grpc_server, upstream_extra={"protocol": "h2c"}))
    ch = grpc.insecure_channel("127.0.0.1:%d" % gw.port)
    yield ch
    ch.close()


def test_unary_and_metadata_both_ways(chan):
    resp, call = m(chan, "unary_unary", "Unary").with_call(b"hi", metadata=(("x-client", "abc"),), timeout=10)
    assert resp == b"echo:hi"
    assert ("x-initial", "i-abc") in call.initial_metadata()
    assert ("x-trailing", "t-ok") in call.trailing_metadata()
    assert call.code() == grpc.StatusCode.OK


def test_many_unary_calls_share_connection(chan):
    f = m(chan, "unary_unary", "Unary")
    futs = [f.future(b"n%d" % i, timeout=10) for i in range(50)]
    assert [x.result() for x in futs] == [b"echo:n%d" % i for i in range(50)]


def test_server_streaming(chan):
    assert list(m(chan, "unary_stream", "ServerStream")(b"5", timeout=10)) == [b"item-%d" % i for i in range(5)]


def test_client_streaming(chan):
    assert m(chan, "stream_unary", "ClientStream")(iter([b"a", b"b", b"c"]), timeout=10) == b"a|b|c"


def test_bidi_streaming(chan):
    out = list(m(chan, "stream_stream", "Bidi")(iter([b"x%d" % i for i in range(20)]), timeout=10))
    assert out == [b"X%d" % i for i in range(20)]


def test_large_message(chan):
    assert m(chan, "unary_unary", "Big")(b"%d" % (3 << 20), timeout=20) == bytes(range(256)) * ((3 << 20) // 256)


def test_error_status_and_message_preserved(chan):
    with pytest.raises(grpc.RpcError) as ei:
        m(chan, "unary_unary", "Fail")(b"", timeout=10)
    assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert ei.value.details() == "nope: bad state %"


def test_deadline_exceeded(chan):
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as ei:
        m(chan, "unary_unary", "Slow")(b"", timeout=0.5)
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 1.5
    # the gateway is still fine afterwards
    assert m(chan, "unary_unary", "Unary")(b"again", timeout=10) == b"echo:again"


def test_unknown_method_unimplemented(chan):
    with pytest.raises(grpc.RpcError) as ei:
        m(chan, "unary_unary", "Missing")(b"", timeout=10)
    assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A self-signed certificate for localhost / 127.0.0.1 (openssl CLI)."""
    d = tmp_path_factory.mktemp("grpc-tls")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "k.pem", "-out", "c.pem",
            "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", cwd=d)
    return str(d / "c.pem"), str(d / "k.pem")


def test_grpc_to_tls_upstream_over_h2(portico, tls_files):
    """protocol: h2 — TLS with ALPN h2 and certificate verification to a
    grpcio server with TLS credentials; a wrong CA is refused (UNAVAILABLE)."""
    cert, key = tls_files
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Svc", {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary, ident, ident),
        "Bidi": grpc.stream_stream_rpc_method_handler(_bidi, ident, ident),
    }),))
    creds = grpc.ssl_server_credentials(((open(key, "rb").read(), open(cert, "rb").read()),))
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        up = {"protocol": "h2", "tls": {"ca": cert, "sni": "localhost"}}
        gw = portico(simple_config("127.0.0.1:%d" % port, upstream_extra=up))
        with grpc.insecure_channel("127.0.0.1:%d" % gw.port) as ch:
            assert m(ch, "unary_unary", "Unary")(b"tls", timeout=10) == b"echo:tls"
            out = list(m(ch, "stream_stream", "Bidi")(iter([b"a", b"b"]), timeout=10))
            assert out == [b"A", b"B"]
        # verification on: a CA that did not sign the server certificate fails
        bad = {"protocol": "h2", "tls": {"sni": "localhost"}}  # system store only
        gw2 = portico(simple_config("127.0.0.1:%d" % port, upstream_extra=bad))
        with grpc.insecure_channel("127.0.0.1:%d" % gw2.port) as ch:
            with pytest.raises(grpc.RpcError) as ei:
                m(ch, "unary_unary", "Unary")(b"x", timeout=10)
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(0)


def test_upstream_down_is_unavailable(portico):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    gw = portico(simple_config("127.0.0.1:%d" % port, upstream_extra={"protocol": "h2c"}))
    with grpc.insecure_channel("127.0.0.1:%d" % gw.port) as ch:
        with pytest.raises(grpc.RpcError) as ei:
            m(ch, "unary_unary", "Unary")(b"", timeout=10)
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE


# ------------------------------------------------------- plain h2c upstream

def h2_echo(rec):
    """H2Upstream answer: "METHOD PATH BODY-LENGTH", or 200000 bytes for
    /big, with x-up: h2."""
    hdrs = dict(rec["headers"])
    out = ("%s %s %d" % (hdrs[":method"], hdrs[":path"], len(rec["body"]))).encode()
    if hdrs[":path"].startswith("/big"):
        out = b"z" * 200000
    return [(":status", "200"), ("content-type", "text/plain"), ("content-length", str(len(out))),
            ("x-up", "h2")], out


def http(port, method, path, body=None):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    req = "%s %s HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n" % (method, path)
    if body is not None:
        req += "Content-Length: %d\r\n" % len(body)
    s.sendall(req.encode() + b"\r\n" + (body or b""))
    data = recv_all(s)
    s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.decode(), rest


def test_h2c_upstream_get_and_post(portico):
    up = H2Upstream(h2_echo)
    gw = portico(simple_config("127.0.0.1:%d" % up.port, upstream_extra={"protocol": "h2c"}))
    head, body = http(gw.port, "GET", "/a/b?x=1")
    assert head.startswith("HTTP/1.1 200"), head
    assert "x-up: h2" in head.lower()
    assert body == b"GET /a/b?x=1 0"
    payload = b"p" * 300000
    head, body = http(gw.port, "POST", "/post", payload)
    assert head.startswith("HTTP/1.1 200"), head
    assert body == b"POST /post 300000"
    head, body = http(gw.port, "GET", "/big")
    assert body == b"z" * 200000
    seen = dict(up.done[0]["headers"])
    assert seen[":authority"] == "example.test" and seen[":scheme"] == "http"
    assert "connection" not in seen and "x-forwarded-for" in seen


def test_protocol_validation(tmp_path):
    import subprocess
    from conftest import BIN
    cfg = tmp_path / "c.yaml"
    cfg.write_text("listen: ['127.0.0.1:1']\nupstreams:\n  up:\n    targets: ['127.0.0.1:2']\n    protocol: h3\n"
                   "  up2:\n    targets: ['127.0.0.1:2']\n    protocol: h2\n"
                   "routes:\n  - name: r\n    match: {path_prefix: /}\n    upstream: up\n")
    out = subprocess.run([BIN, "check", "-c", str(cfg)], capture_output=True, text=True)
    assert out.returncode != 0
    assert "c.yaml:5:15: upstream 'up': unknown protocol 'h3'" in out.stderr + out.stdout
    assert "c.yaml:8:15: upstream 'up2': protocol h2 needs 'tls'" in out.stderr + out.stdout


def test_grpc_timeout_is_enforced_by_portico(portico, grpc_server):
    """A client that sends grpc-timeout but does not cancel by itself still
    gets DEADLINE_EXCEEDED from Portico at the deadline (the upstream method
    takes 2 s)."""
    gw = portico(simple_config("127.0.0.1:%d" % grpc_server, upstream_extra={"protocol": "h2c"}))
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    c.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", "gw"),
                       (":path", "/test.Svc/Slow"), ("content-type", "application/grpc"),
                       ("te", "trailers"), ("grpc-timeout", "300m")])
    c.send_data(1, b"\x00\x00\x00\x00\x00", end_stream=True)
    s.sendall(c.data_to_send())
    t0 = time.monotonic()
    headers, ended = {}, False
    s.settimeout(5)
    while not ended:
        data = s.recv(65536)
        assert data, "connection closed"
        for ev in c.receive_data(data):
            if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                headers.update({k.decode(): v.decode() for k, v in ev.headers})
            if isinstance(ev, h2.events.StreamEnded):
                ended = True
        s.sendall(c.data_to_send())
    elapsed = time.monotonic() - t0
    s.close()
    assert headers.get("grpc-status") == "4", headers  # DEADLINE_EXCEEDED
    assert 0.25 <= elapsed < 1.8, elapsed


# ---------------------------------------------------------------------------
# long-lived streams and the slow-body rules (timeouts.body, min_body_rate)
# ---------------------------------------------------------------------------

def paced(msgs, pause):
    """A request iterator that waits `pause` s before every message but the first."""
    for i, msg in enumerate(msgs):
        if i:
            time.sleep(pause)
        yield msg


def slow_body_gw(portico, grpc_server, routes_first=()):
    c = simple_config("127.0.0.1:%d" % grpc_server, upstream_extra={"protocol": "h2c"},
                      timeouts={"body": "1s"}, limits={"min_body_rate": "1k"})
    c["routes"] = list(routes_first) + c["routes"]
    return portico(c)


def test_bidi_stream_idle_client_outlives_body_timeout(portico, grpc_server):
    # the server answered the first message (response started): pauses of
    # the client longer than timeouts.body no longer count as a slow body
    gw = slow_body_gw(portico, grpc_server)
    with grpc.insecure_channel("127.0.0.1:%d" % gw.port) as ch:
        out = list(m(ch, "stream_stream", "Bidi")(paced([b"a", b"b", b"c"], 2.0), timeout=20))
    assert out == [b"A", b"B", b"C"]


def test_client_stream_slow_body_rules_per_route(portico, grpc_server):
    # no response before the end of a client stream: the slow-body rules
    # apply, with the route's own body_timeout / min_body_rate
    relaxed = {"name": "uploads", "match": {"path": "/test.Svc/ClientStream"}, "upstream": "up",
               "body_timeout": "10s", "min_body_rate": 0}
    gw = slow_body_gw(portico, grpc_server, [relaxed])
    with grpc.insecure_channel("127.0.0.1:%d" % gw.port) as ch:
        assert m(ch, "stream_unary", "ClientStream")(paced([b"a", b"b", b"c"], 2.0), timeout=20) == b"a|b|c"
        # the same kind of call on a route with the global 1 s limit is cut
        with pytest.raises(grpc.RpcError) as ei:
            m(ch, "stream_unary", "ClientStream2")(paced([b"a", b"b"], 2.5), timeout=20)
        assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, ei.value
        # the gap rule (timeouts.body) or the rate rule (min_body_rate) cuts
        # it, whichever deadline the loop reaches first on a loaded machine
        assert ("not received in time" in ei.value.details() or
                "slower than limits.min_body_rate" in ei.value.details()), ei.value.details()
