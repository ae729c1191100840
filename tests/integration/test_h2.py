"""Downstream HTTP/2 (src/http/h2_server.c): h2c with prior knowledge and h2
over TLS (ALPN), proxied to an HTTP/1.1 upstream; many concurrent streams;
large bodies both ways; problem+json errors over h2; idle timeout; and the
hostile cases: rapid reset (CVE-2023-44487), malformed header blocks
(uppercase names, connection-specific fields) and content-length mismatch.

Clients: curl (--http2-prior-knowledge / --http2), h2load, and python3-h2
for raw frames. Certificates are generated with the openssl CLI."""
import hashlib
import json
import os
import shutil
import socket
import subprocess
import time

import pytest

from conftest import free_port, simple_config
from h2util import h2_connect as raw_connect, h2_head, h2_read_until
from tlsutil import client_ctx, leaf, make_ca, tls_connect
from upstreams import make_response, recv_all, wait_for

import h2  # Debian python3-h2, installed by scripts/install-deps.sh
import h2.events  # noqa: E402
import h2.settings  # noqa: E402

# curl and h2load (nghttp2-client) come from scripts/install-deps.sh; a
# missing tool must fail the suite, not skip it silently.
assert shutil.which("curl") and shutil.which("h2load"), "install curl and nghttp2-client (scripts/install-deps.sh)"

PROTOCOL_ERROR = 1
REFUSED_STREAM = 7
ENHANCE_YOUR_CALM = 11


def curl(*args, timeout=60):
    out = subprocess.run(["curl", "-sS"] + list(args), capture_output=True, timeout=timeout)
    return out


def h2c(port, path, *args):
    """curl with prior knowledge; returns (status, http_version, body bytes)."""
    out = curl("--http2-prior-knowledge", "-w", "\n%{http_code} %{http_version}", *args,
               "http://127.0.0.1:%d%s" % (port, path))
    assert out.returncode == 0, out.stderr
    body, _, tail = out.stdout.rpartition(b"\n")
    code, version = tail.decode().split()
    return int(code), version, body


@pytest.fixture
def gw(portico, echo):
    return portico(simple_config(echo.addr)), echo


# ------------------------------------------------------------- raw client

def read_until(s, c, pred, timeout=10):
    """Reads events until pred(event) is true; returns (events, matched,
    closed)."""
    return h2_read_until(s, c, pred, timeout, report_closed=True, ignore_send_errors=True)


def get_headers(path, extra=(), method="GET"):
    return h2_head(path, extra, method)


def assert_stream_reset(port, echo, headers, body=None, end_stream=True):
    s, c = raw_connect(port)
    c.send_headers(1, headers, end_stream=body is None and end_stream)
    if body is not None:
        c.send_data(1, body, end_stream=end_stream)
    s.sendall(c.data_to_send())
    events, ok, _ = read_until(s, c, lambda e: isinstance(e, (h2.events.StreamReset, h2.events.ResponseReceived)))
    assert ok, events
    ev = events[-1]
    assert isinstance(ev, h2.events.StreamReset), "expected RST_STREAM, got %r" % ev
    assert ev.stream_id == 1 and ev.error_code == PROTOCOL_ERROR, ev
    # the connection survives a stream error: a good request on stream 3 works
    c.send_headers(3, get_headers("/after"), end_stream=True)
    s.sendall(c.data_to_send())
    events, ok, _ = read_until(s, c, lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == 3)
    assert ok, events
    resp = [e for e in events if isinstance(e, h2.events.ResponseReceived) and e.stream_id == 3]
    assert resp and dict(resp[0].headers)[b":status"] == b"200"
    s.close()
    reqs = echo.wait_requests(1)
    assert [r.path for r in reqs] == ["/after"], "the bad request reached the upstream: %r" % reqs


# ------------------------------------------------------------------ h2c

def test_h2c_get_is_proxied_as_http11(gw):
    p, echo = gw
    code, version, body = h2c(p.port, "/items/7?x=1&y=2", "-H", "X-Test: hello", "-H", "Cookie: a=1",
                              "-H", "Cookie: b=2")
    assert (code, version) == (200, "2")
    got = json.loads(body)
    assert got["method"] == "GET" and got["target"] == "/items/7?x=1&y=2"
    req = echo.last()
    assert req.version == "HTTP/1.1" and req.method == "GET" and req.target == "/items/7?x=1&y=2"
    assert req.header("x-test") == "hello"
    assert req.header("host") == "127.0.0.1:%d" % p.port
    assert req.header("x-forwarded-proto") == "http"
    # cookie crumbs are joined for HTTP/1.1 (RFC 9113 8.2.3)
    assert req.header_all("cookie") == ["a=1; b=2"]
    assert not req.has_header("transfer-encoding") and not req.errors
    # the access log is written by its own thread: the line may come just after the response
    assert wait_for(lambda: any('"status":200' in ln for ln in p.access_lines()), timeout=5), p.access_lines()


def test_h2c_post_body(gw, tmp_path):
    p, echo = gw
    data = os.urandom(300_000)
    f = tmp_path / "body.bin"
    f.write_bytes(data)
    code, _, body = h2c(p.port, "/upload", "--data-binary", "@" + str(f), "-H", "Content-Type: application/x-bin")
    assert code == 200
    got = json.loads(body)
    assert got["method"] == "POST" and got["body_len"] == len(data)
    assert got["body_sha256"] == hashlib.sha256(data).hexdigest()
    req = echo.last()
    assert req.body == data and req.header("content-type") == "application/x-bin"
    assert req.framing in ("length", "chunked")


def test_h2c_post_without_content_length_streams(gw):
    """A body of unknown length (no content-length) reaches the upstream intact."""
    p, echo = gw
    s, c = raw_connect(p.port)
    c.send_headers(1, get_headers("/stream", method="POST"), end_stream=False)
    chunks = [os.urandom(10_000) for _ in range(5)]
    for ch in chunks:
        c.send_data(1, ch)
    c.end_stream(1)
    s.sendall(c.data_to_send())
    events, ok, _ = read_until(s, c, lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == 1)
    assert ok, events
    body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    got = json.loads(body)
    assert got["body_sha256"] == hashlib.sha256(b"".join(chunks)).hexdigest()
    s.close()


def test_h2c_large_download(portico, upstream, tmp_path):
    payload = os.urandom(5 * 1024 * 1024)
    up = upstream(lambda req: make_response(200, "OK", [("Content-Type", "application/octet-stream")], payload))
    p = portico(simple_config(up.addr))
    out = tmp_path / "dl.bin"
    code, _, _ = h2c(p.port, "/big", "-o", str(out))
    assert code == 200
    assert hashlib.sha256(out.read_bytes()).hexdigest() == hashlib.sha256(payload).hexdigest()


def test_h2load_many_concurrent_streams(gw):
    p, echo = gw
    out = subprocess.run(["h2load", "-n", "1000", "-c", "4", "-m", "50", "http://127.0.0.1:%d/load" % p.port],
                         capture_output=True, text=True, timeout=120)
    assert "1000 succeeded, 0 failed, 0 errored" in out.stdout, out.stdout + out.stderr
    assert "1000 2xx" in out.stdout, out.stdout


def test_no_route_is_problem_json_over_h2(portico, echo):
    cfg = simple_config(echo.addr, route_extra={"match": {"path_prefix": "/api"}})
    p = portico(cfg)
    out = curl("--http2-prior-knowledge", "-i", "http://127.0.0.1:%d/nowhere" % p.port)
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/2 404"), head
    assert b"content-type: application/problem+json" in head.lower()
    prob = json.loads(body)
    assert prob["status"] == 404
    assert not echo.requests


def test_idle_connection_gets_goaway(portico, echo):
    p = portico(simple_config(echo.addr, timeouts={"idle": "1s", "shutdown": "5s"}))
    s, c = raw_connect(p.port)
    t0 = time.monotonic()
    events, ok, closed = read_until(s, c, lambda e: isinstance(e, h2.events.ConnectionTerminated), timeout=6)
    assert ok, events
    assert events[-1].error_code == 0
    assert 0.8 < time.monotonic() - t0 < 5
    s.close()


# ------------------------------------------------------------------ TLS

@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("h2pki")
    ca = make_ca(d, "ca", "Portico H2 Test CA")
    cert, key = leaf(d, "a", ["a.test"])
    return {"ca": ca, "cert": cert, "key": key}


@pytest.fixture
def tls_gw(portico, pki, echo):
    port = free_port()
    listen = [{"address": "127.0.0.1:%d" % port,
               "tls": {"certificates": [{"cert": pki["cert"], "key": pki["key"]}]}}]
    return portico(simple_config(echo.addr, listen=listen), port=port), echo


def test_tls_alpn_h2_with_curl(tls_gw, pki, tmp_path):
    p, echo = tls_gw
    data = os.urandom(100_000)
    f = tmp_path / "b.bin"
    f.write_bytes(data)
    out = curl("--http2", "--cacert", pki["ca"], "--resolve", "a.test:%d:127.0.0.1" % p.port,
               "-w", "\n%{http_code} %{http_version}", "--data-binary", "@" + str(f),
               "https://a.test:%d/tls?z=1" % p.port)
    assert out.returncode == 0, out.stderr
    body, _, tail = out.stdout.rpartition(b"\n")
    assert tail == b"200 2", tail
    got = json.loads(body)
    assert got["body_sha256"] == hashlib.sha256(data).hexdigest()
    req = echo.last()
    assert req.version == "HTTP/1.1" and req.target == "/tls?z=1"
    assert req.header("x-forwarded-proto") == "https"


def test_tls_http11_client_still_gets_http11(tls_gw, pki):
    p, _ = tls_gw
    with tls_connect(p.port, client_ctx(pki), "a.test") as s:
        assert s.selected_alpn_protocol() == "http/1.1"
        s.sendall(b"GET /one HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        data = recv_all(s)
        assert data.startswith(b"HTTP/1.1 200")
    out = curl("--http1.1", "--cacert", pki["ca"], "--resolve", "a.test:%d:127.0.0.1" % p.port,
               "-o", "/dev/null", "-w", "%{http_code} %{http_version}", "https://a.test:%d/x" % p.port)
    assert out.stdout == b"200 1.1"


# ------------------------------------------------------------- hostile

def test_rapid_reset_gets_goaway_enhance_your_calm(gw):
    p, echo = gw
    s, c = raw_connect(p.port)
    sid = 1
    for _ in range(1000):
        c.send_headers(sid, get_headers("/rr%d" % sid), end_stream=True)
        c.reset_stream(sid)
        sid += 2
    try:
        s.sendall(c.data_to_send())
    except OSError:
        pass  # the server may already have closed
    events, ok, closed = read_until(s, c, lambda e: isinstance(e, h2.events.ConnectionTerminated))
    assert ok, "no GOAWAY (closed=%s): %r" % (closed, events[-5:])
    assert events[-1].error_code == ENHANCE_YOUR_CALM
    # and the connection is closed afterwards
    s.settimeout(5)
    try:
        while s.recv(65536):
            pass
    except OSError:
        pass
    s.close()
    time.sleep(0.3)
    # the gateway is fine
    code, _, _ = h2c(p.port, "/after")
    assert code == 200


@pytest.mark.parametrize("trigger", ["content_length_exceeded", "uppercase_header", "zero_window_update",
                                     "data_after_end_stream"])
def test_made_you_reset_is_bounded(gw, trigger):
    """CVE-2025-8671 ("MadeYouReset"): the client never sends RST_STREAM but
    makes the server reset each stream it opens. Stream errors the server
    resets for (a body longer than its content-length after the request went
    upstream, a malformed header) count like client resets and end in
    GOAWAY ENHANCE_YOUR_CALM; the errors nghttp2 treats as connection errors
    (a zero WINDOW_UPDATE, DATA after END_STREAM) end the connection at
    once. Either way a connection cannot churn through hundreds of streams."""
    p, echo = gw
    s, c = raw_connect(p.port)
    raw = b""
    sid = 1
    for _ in range(400):
        if trigger == "content_length_exceeded":
            c.send_headers(sid, get_headers("/myr%d" % sid, [("content-length", "1")], "POST"))
            raw += c.data_to_send() + b"\x00\x00\x02\x00\x01" + sid.to_bytes(4, "big") + b"xx"
        elif trigger == "uppercase_header":
            c.send_headers(sid, get_headers("/myr%d" % sid, [("X-Upper", "1")]), end_stream=True)
            raw += c.data_to_send()
        elif trigger == "zero_window_update":
            c.send_headers(sid, get_headers("/myr%d" % sid, method="POST"))
            raw += c.data_to_send() + b"\x00\x00\x04\x08\x00" + sid.to_bytes(4, "big") + b"\x00\x00\x00\x00"
        else:  # DATA on a stream the client already half-closed
            c.send_headers(sid, get_headers("/myr%d" % sid), end_stream=True)
            raw += c.data_to_send() + b"\x00\x00\x01\x00\x01" + sid.to_bytes(4, "big") + b"x"
        sid += 2
    try:
        s.sendall(raw)
    except OSError:
        pass  # the server may already have closed
    events, ok, closed = read_until(s, c, lambda e: isinstance(e, h2.events.ConnectionTerminated))
    s.close()
    assert ok, "no GOAWAY (closed=%s): %r" % (closed, events[-5:])
    code = events[-1].error_code
    if trigger in ("content_length_exceeded", "uppercase_header"):
        assert code == ENHANCE_YOUR_CALM, events[-1]
        assert events[-1].last_stream_id < 2 * 250, events[-1]
    else:
        assert code in (PROTOCOL_ERROR, 5), events[-1]  # 5: STREAM_CLOSED
    time.sleep(0.3)
    assert len(echo.requests) < 250, len(echo.requests)
    code, _, _ = h2c(p.port, "/after")
    assert code == 200


def test_continuation_flood_is_refused(gw):
    """A header block split into many CONTINUATION frames: GOAWAY and close."""
    p, echo = gw
    import hpack
    import hyperframe.frame as hf
    s, c = raw_connect(p.port)
    block = hpack.Encoder().encode(get_headers("/cont") + [("x-pad-%d" % i, "v") for i in range(200)])
    pieces = [block[i:i + 8] for i in range(0, len(block), 8)]
    assert len(pieces) > 40
    hdr = hf.HeadersFrame(1)
    hdr.flags.add("END_STREAM")
    hdr.data = pieces[0]
    frames = [hdr.serialize()]
    for i, piece in enumerate(pieces[1:]):
        f = hf.ContinuationFrame(1)
        f.data = piece
        if i == len(pieces) - 2:
            f.flags.add("END_HEADERS")
        frames.append(f.serialize())
    s.sendall(c.data_to_send() + b"".join(frames))
    events, ok, closed = read_until(s, c, lambda e: isinstance(e, h2.events.ConnectionTerminated))
    assert ok or closed, events
    if ok:
        assert events[-1].error_code == ENHANCE_YOUR_CALM
    assert not any(isinstance(e, h2.events.ResponseReceived) for e in events)
    s.close()
    assert not echo.requests


def test_uppercase_header_name_resets_stream(gw):
    p, echo = gw
    assert_stream_reset(p.port, echo, get_headers("/upper", [("X-Upper", "1")]))


def test_connection_specific_header_resets_stream(gw):
    p, echo = gw
    assert_stream_reset(p.port, echo, get_headers("/conn", [("connection", "keep-alive")]))


def test_content_length_mismatch_resets_stream(gw):
    p, echo = gw
    assert_stream_reset(p.port, echo, get_headers("/cl", [("content-length", "10")], method="POST"), body=b"12345")


def test_content_length_excess_resets_stream(gw):
    p, echo = gw
    assert_stream_reset(p.port, echo, get_headers("/cl2", [("content-length", "3")], method="POST"),
                        body=b"123456")


def test_http2_can_be_disabled_per_listener(portico, echo, tmp_path):
    """`http2: false`: TLS offers only http/1.1 and the h2c preface is not
    taken as HTTP/2 (it is a malformed HTTP/1 request: 400 or 505)."""
    import socket as _socket
    port = free_port()
    cfg = simple_config(echo.addr, listen=[{"address": "127.0.0.1:%d" % port, "http2": False}])
    p = portico(cfg, port=port)
    s = _socket.create_connection(("127.0.0.1", p.port), timeout=5)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    data = b""
    try:
        while True:
            d = s.recv(4096)
            if not d:
                break
            data += d
    except _socket.timeout:
        pass
    s.close()
    assert data.startswith(b"HTTP/1.1 4") or data.startswith(b"HTTP/1.1 505"), data[:80]
    assert not echo.requests


def _grpc_call(port, path):
    s, c = raw_connect(port)
    c.send_headers(1, get_headers(path, [("content-type", "application/grpc"), ("te", "trailers")], "POST"))
    c.send_data(1, b"\x00\x00\x00\x00\x00", end_stream=True)  # one empty gRPC message
    s.sendall(c.data_to_send())
    events, ok, _ = read_until(s, c, lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == 1)
    s.close()
    assert ok, events
    resp = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert resp, events
    assert not [e for e in events if isinstance(e, h2.events.DataReceived)], "trailers-only answer has no body"
    return {k.decode(): v.decode() for k, v in resp[0].headers}


def test_grpc_client_gets_grpc_status_for_portico_errors(portico, echo):
    """Errors Portico generates for a gRPC request are gRPC statuses
    (Trailers-Only, HTTP 200), not problem+json bodies."""
    cfg = simple_config("127.0.0.1:%d" % free_port())  # nothing listens there: 502
    cfg["routes"][0]["match"] = {"path_prefix": "/pkg.Svc"}
    p = portico(cfg)
    h = _grpc_call(p.port, "/other.Svc/Method")  # no route
    assert h[":status"] == "200" and h["content-type"] == "application/grpc"
    assert h["grpc-status"] == "12", h  # UNIMPLEMENTED
    assert "no route" in h["grpc-message"]
    h = _grpc_call(p.port, "/pkg.Svc/Method")  # upstream refused
    assert h["grpc-status"] == "14", h  # UNAVAILABLE
    assert h["grpc-message"] == "upstream connection failed", h


def test_unfinished_header_block_is_cut_by_header_timeout(portico, echo):
    """Slowloris over HTTP/2: a HEADERS frame without END_HEADERS followed by
    nothing (or a slow CONTINUATION trickle) — GOAWAY ENHANCE_YOUR_CALM after
    timeouts.header, not an idle-forever connection."""
    import hpack
    import hyperframe.frame as hf
    p = portico(simple_config(echo.addr, timeouts={"header": "1s", "idle": "60s"}))
    s, c = raw_connect(p.port)
    block = hpack.Encoder().encode(get_headers("/slow") + [("x-a", "b")])
    hdr = hf.HeadersFrame(1)
    hdr.flags.add("END_STREAM")
    hdr.data = block[:5]  # no END_HEADERS
    # finish the SETTINGS exchange first: any frame sent after the partial
    # header block would itself be a protocol error
    read_until(s, c, lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
    s.sendall(c.data_to_send() + hdr.serialize())
    t0 = time.monotonic()
    s.settimeout(8)
    data = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
            if b"\x07\x00\x00\x00\x00\x00" in data:  # a GOAWAY frame header (type 7, no flags, stream 0)
                break
    except (socket.timeout, ConnectionResetError):
        pass
    elapsed = time.monotonic() - t0
    s.close()
    events = c.receive_data(data) if data else []
    goaway = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaway, events
    assert goaway[0].error_code == ENHANCE_YOUR_CALM, goaway
    assert 0.5 <= elapsed < 8, elapsed
    assert not echo.requests


def test_max_concurrent_streams_is_configurable_and_enforced(portico, upstream):
    # slow upstream: streams stay open while the client opens more
    up = upstream(lambda req: [1.5, make_response(200, "OK", [], b"slow")])
    p = portico(simple_config(up.addr, limits={"http2_max_concurrent_streams": 3}))
    s, c = raw_connect(p.port)
    events, ok, _ = read_until(s, c, lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
    assert ok, events
    assert c.remote_settings.max_concurrent_streams == 3
    for sid in (1, 3, 5):
        c.send_headers(sid, get_headers("/s%d" % sid), end_stream=True)
    s.sendall(c.data_to_send())
    assert sorted(r.path for r in up.wait_requests(3)) == ["/s1", "/s3", "/s5"]
    # a 4th concurrent stream (python-h2 would refuse to send it: lift its
    # view of the limit) violates the acknowledged setting
    c.remote_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = 100
    c.remote_settings.acknowledge()
    c.send_headers(7, get_headers("/s7"), end_stream=True)
    s.sendall(c.data_to_send())
    events, ok, closed = read_until(
        s, c, lambda e: isinstance(e, h2.events.ConnectionTerminated)
        or (isinstance(e, h2.events.StreamReset) and e.stream_id == 7), timeout=10)
    s.close()
    assert ok, events
    ev = events[-1]
    assert ev.error_code in (PROTOCOL_ERROR, REFUSED_STREAM), ev
    time.sleep(0.3)
    assert "/s7" not in [r.path for r in up.requests], "the refused stream reached the upstream"


# h2 -> HTTP/1.1 downgrade: a field that would change the meaning of the
# HTTP/1.1 request Portico writes upstream (request-line injection through
# :path or :method, header injection, ambiguous framing or authority) must be
# refused before anything reaches the upstream.
DOWNGRADE_CASES = [
    ("path-space", "GET", "gw.test", "/a b", []),
    ("path-request-line", "GET", "gw.test", "/a HTTP/1.1", []),
    ("path-tab", "GET", "gw.test", "/a\tb", []),
    ("path-relative", "GET", "gw.test", "a", []),
    ("path-crlf", "GET", "gw.test", "/a\r\nX-Injected: 1", []),
    ("method-space", "GET /x", "gw.test", "/m", []),
    ("authority-space", "GET", "gw.test x", "/au", []),
    ("authority-slash", "GET", "gw.test/x", "/au2", []),
    ("authority-userinfo", "GET", "user@gw.test", "/au3", []),
    ("name-space", "GET", "gw.test", "/n1", [("x a", "1")]),
    ("name-colon", "GET", "gw.test", "/n2", [("x:a", "1")]),
    ("value-crlf", "GET", "gw.test", "/v1", [("x-a", "1\r\nX-Injected: 2")]),
    ("value-outer-space", "GET", "gw.test", "/v2", [("x-a", " 1 ")]),
    ("transfer-encoding", "POST", "gw.test", "/te", [("transfer-encoding", "chunked")]),
    ("two-content-lengths", "POST", "gw.test", "/cl", [("content-length", "1"), ("content-length", "2")]),
    # found by tests/fuzz/fuzz_h2_server.c: HTTP/1 would reject these upstream
    ("path-fragment", "GET", "gw.test", "/a#frag", []),
    ("authority-bare-percent", "GET", "gw.test%", "/au4", []),
    ("authority-ipv6-without-colon", "GET", "[1]", "/au5", []),
]


@pytest.mark.parametrize("name,method,authority,path,extra", DOWNGRADE_CASES, ids=[c[0] for c in DOWNGRADE_CASES])
def test_downgrade_smuggling_vectors_never_reach_upstream(gw, name, method, authority, path, extra):
    p, echo = gw
    s, c = raw_connect(p.port)
    c.send_headers(1, [(k.encode(), v.encode()) for k, v in h2_head(path, extra, method, authority=authority)],
                   end_stream=True)
    s.sendall(c.data_to_send())
    events, ok = h2_read_until(s, c, lambda e: isinstance(e, (h2.events.StreamReset, h2.events.StreamEnded,
                                                                h2.events.ConnectionTerminated)))
    s.close()
    assert ok, events
    status = [dict(e.headers)[b":status"] for e in events if isinstance(e, h2.events.ResponseReceived)]
    reset = [e for e in events if isinstance(e, (h2.events.StreamReset, h2.events.ConnectionTerminated))]
    assert reset or (status and status[0].startswith(b"4")), events
    time.sleep(0.2)
    assert echo.requests == [], [r.raw_head for r in echo.requests]


def test_authority_wins_over_host_on_downgrade(gw):
    # RFC 9113 §8.3.1: :authority is the target; a conflicting host field is
    # not forwarded as a second Host
    p, echo = gw
    s, c = raw_connect(p.port)
    c.send_headers(1, h2_head("/auth", [("host", "other.test")], "GET"), end_stream=True)
    s.sendall(c.data_to_send())
    events, ok = h2_read_until(s, c, lambda e: isinstance(e, h2.events.StreamEnded))
    s.close()
    assert ok, events
    head = echo.wait_requests(1)[0].raw_head
    assert head.count(b"\r\nHost: ") == 1 and b"\r\nHost: gw.test\r\n" in head, head
    assert b"other.test" not in head, head
