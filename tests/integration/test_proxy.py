"""Proxying: what the upstream receives, body framing, large bodies,
keep-alive, pipelining, HTTP/1.0, Expect: 100-continue, upstream pooling."""

import hashlib
import os
import socket
import time

import pytest

from conftest import simple_config
from upstreams import Client, build_request, chunked, make_response, request


def assert_well_framed(req, body):
    """The upstream request carries `body` with exactly one valid framing."""
    assert req.errors == [], req.errors
    te = req.header_all("Transfer-Encoding")
    cl = req.header_all("Content-Length")
    assert not (te and cl), "both CL and TE sent upstream: %r" % req.raw_head
    if body:
        assert req.framing in ("length", "chunked"), req.raw_head
    if req.framing == "length":
        assert cl == [str(len(body))], req.raw_head
    assert req.body == body


@pytest.fixture
def gw(portico, echo):
    p = portico(simple_config(echo.addr))
    return p, echo


# ---------------------------------------------------------------------------
# request line, methods, headers seen by the upstream
# ---------------------------------------------------------------------------

def test_get_request_line_path_and_raw_query(gw):
    p, echo = gw
    r = request(p.port, "GET", "/hello/world?b=2&a=1%20x&c=%2e%2e&d", host="example.com")
    assert r.status == 200
    up = echo.last()
    assert up.request_line == "GET /hello/world?b=2&a=1%20x&c=%2e%2e&d HTTP/1.1"
    assert up.errors == []
    assert not up.has_header("Transfer-Encoding")
    assert up.header("Content-Length") in (None, "0")
    assert r.json()["target"] == "/hello/world?b=2&a=1%20x&c=%2e%2e&d"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_methods_with_body(gw, method):
    p, echo = gw
    body = ("payload for %s \x00\xff" % method).encode("latin-1")
    r = request(p.port, method, "/items/7", headers={"Content-Type": "application/octet-stream"}, body=body)
    assert r.status == 200
    up = echo.last()
    assert up.method == method
    assert up.request_line == "%s /items/7 HTTP/1.1" % method
    assert up.header("Content-Type") == "application/octet-stream"
    assert_well_framed(up, body)


def test_delete_without_body(gw):
    p, echo = gw
    r = request(p.port, "DELETE", "/items/7")
    assert r.status == 200
    up = echo.last()
    assert up.method == "DELETE"
    assert up.body == b""
    assert not up.has_header("Transfer-Encoding")


def test_post_empty_body(gw):
    p, echo = gw
    r = request(p.port, "POST", "/empty", body=b"")
    assert r.status == 200
    up = echo.last()
    assert up.body == b""
    assert up.header("Content-Length") in (None, "0")
    assert up.errors == []


def test_host_preserved(portico, echo):
    p = portico(simple_config(echo.addr, upstream_extra={"preserve_host": True}))
    request(p.port, "GET", "/h", host="api.example.com:8443")
    assert echo.last().header_all("Host") == ["api.example.com:8443"]


def test_host_is_target_when_not_preserved(portico, echo):
    p = portico(simple_config(echo.addr, upstream_extra={"preserve_host": False}))
    request(p.port, "GET", "/h", host="api.example.com")
    up = echo.last()
    assert up.header_all("Host") == ["127.0.0.1:%d" % echo.port]
    assert up.header("X-Forwarded-Host") == "api.example.com"


def test_x_forwarded_headers_added(gw):
    p, echo = gw
    request(p.port, "GET", "/xff", host="shop.example.com")
    up = echo.last()
    assert up.header_all("X-Forwarded-For") == ["127.0.0.1"]
    assert up.header_all("X-Forwarded-Proto") == ["http"]
    assert up.header_all("X-Forwarded-Host") == ["shop.example.com"]


def test_x_forwarded_for_appends_client(gw):
    p, echo = gw
    request(p.port, "GET", "/xff", headers={"X-Forwarded-For": "203.0.113.7, 198.51.100.2"})
    up = echo.last()
    values = up.header_all("X-Forwarded-For")
    assert len(values) == 1, up.raw_head
    assert [v.strip() for v in values[0].split(",")] == ["203.0.113.7", "198.51.100.2", "127.0.0.1"]


def test_hop_by_hop_headers_removed(gw):
    p, echo = gw
    hdrs = [("Connection", "keep-alive, X-Foo"), ("Keep-Alive", "timeout=5"), ("TE", "trailers"),
            ("Upgrade", "h2c"), ("Proxy-Connection", "keep-alive"), ("X-Foo", "secret"),
            ("X-Keep", "yes")]
    with Client(p.port) as c:
        r = c.request("GET", "/hop", headers=hdrs)
        assert r.status == 200
    up = echo.last()
    for name in ("Keep-Alive", "TE", "Upgrade", "Proxy-Connection", "X-Foo"):
        assert not up.has_header(name), "%s forwarded: %r" % (name, up.raw_head)
    conn = (up.header("Connection") or "").lower()
    assert "x-foo" not in conn and "upgrade" not in conn, up.raw_head
    assert up.header("X-Keep") == "yes"


def test_connection_close_with_named_header(gw):
    p, echo = gw
    with Client(p.port) as c:
        r = c.request("GET", "/hop", headers=[("Connection", "close, X-Foo"), ("X-Foo", "secret"), ("X-Bar", "b")])
        assert r.status == 200
        assert "close" in (r.header("Connection") or "").lower()
        assert c.wait_closed(5), "connection not closed after Connection: close"
    up = echo.last()
    assert not up.has_header("X-Foo"), up.raw_head
    assert up.header("X-Bar") == "b"


def test_response_headers_forwarded(portico, upstream):
    resp = make_response(201, "Created", [("X-Up", "1"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
                                          ("Content-Type", "text/plain")], b"made")
    up = upstream(lambda req: resp)
    p = portico(simple_config(up.addr))
    r = request(p.port, "POST", "/create", body=b"x")
    assert r.status == 201
    assert r.body == b"made"
    assert r.header("X-Up") == "1"
    assert r.header_all("Set-Cookie") == ["a=1", "b=2"]
    assert r.header("Content-Type") == "text/plain"


def test_response_hop_by_hop_from_upstream_removed(portico, upstream):
    resp = make_response(200, "OK", [("Connection", "keep-alive, X-Internal"), ("Keep-Alive", "timeout=3"),
                                     ("X-Internal", "1"), ("X-Public", "1")], b"ok")
    up = upstream(lambda req: resp)
    p = portico(simple_config(up.addr))
    r = request(p.port, "GET", "/")
    assert r.status == 200 and r.body == b"ok"
    assert r.header("X-Internal") is None
    assert r.header("Keep-Alive") is None
    assert r.header("X-Public") == "1"


# ---------------------------------------------------------------------------
# request bodies
# ---------------------------------------------------------------------------

def test_chunked_request_body(gw):
    p, echo = gw
    raw = (b"POST /upload HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n")
    with Client(p.port) as c:
        c.send(raw)
        r = c.read_response()
    assert r.status == 200
    assert_well_framed(echo.last(), b"hello 0123456789")


def test_chunked_request_body_split_across_writes(gw):
    p, echo = gw
    raw = (b"POST /upload HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    with Client(p.port) as c:
        for i in range(0, len(raw), 7):
            c.send(raw[i:i + 7])
            time.sleep(0.005)
        r = c.read_response()
    assert r.status == 200
    assert_well_framed(echo.last(), b"hello world")


def test_chunked_request_then_keepalive(gw):
    p, echo = gw
    with Client(p.port) as c:
        c.send(build_request("POST", "/a", body=b"abc" * 100, chunked_body=True))
        assert c.read_response().status == 200
        r = c.request("GET", "/b")
        assert r.status == 200
    reqs = echo.wait_requests(2)
    assert_well_framed(reqs[0], b"abc" * 100)
    assert reqs[1].path == "/b"


def test_large_upload_20mb_content_length(gw):
    p, echo = gw
    body = os.urandom(20 * 1024 * 1024)
    with Client(p.port, timeout=60) as c:
        r = c.request("POST", "/big", body=body)
    assert r.status == 200
    doc = r.json()
    assert doc["body_len"] == len(body)
    assert doc["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert_well_framed(echo.last(), body)


def test_large_upload_chunked(gw):
    p, echo = gw
    body = os.urandom(8 * 1024 * 1024 + 17)
    with Client(p.port, timeout=60) as c:
        c.send(build_request("POST", "/big", body=body, chunked_body=True))
        r = c.read_response()
    assert r.status == 200
    assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert_well_framed(echo.last(), body)


def test_large_download_20mb_content_length(portico, upstream):
    body = os.urandom(20 * 1024 * 1024)
    resp = make_response(200, "OK", [("Content-Type", "application/octet-stream")], body)
    up = upstream(lambda req: resp)
    p = portico(simple_config(up.addr))
    with Client(p.port, timeout=60) as c:
        r = c.request("GET", "/big")
        assert r.status == 200
        assert len(r.body) == len(body)
        assert hashlib.sha256(r.body).digest() == hashlib.sha256(body).digest()
        r2 = c.request("GET", "/again")
        assert r2.status == 200 and len(r2.body) == len(body)


def test_large_download_chunked(portico, upstream):
    body = os.urandom(8 * 1024 * 1024 + 3)
    resp = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body, chunk=100000))
    up = upstream(lambda req: resp)
    p = portico(simple_config(up.addr))
    with Client(p.port, timeout=60) as c:
        r = c.request("GET", "/big")
    assert r.status == 200
    assert hashlib.sha256(r.body).digest() == hashlib.sha256(body).digest()


def test_slow_reading_client_gets_everything(portico, upstream):
    """Backpressure: a client that reads slowly still gets the exact body."""
    body = os.urandom(4 * 1024 * 1024)
    resp = make_response(200, "OK", [], body)
    up = upstream(lambda req: resp)
    p = portico(simple_config(up.addr))
    s = socket.create_connection(("127.0.0.1", p.port), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.sendall(build_request("GET", "/slow"))
    time.sleep(0.5)  # let buffers fill up
    data = bytearray()
    head_end = -1
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
        if head_end < 0:
            head_end = data.find(b"\r\n\r\n")
        if head_end >= 0 and len(data) - head_end - 4 >= len(body):
            break
    s.close()
    assert head_end > 0
    assert bytes(data[head_end + 4:]) == body


# ---------------------------------------------------------------------------
# keep-alive, pipelining, HTTP/1.0
# ---------------------------------------------------------------------------

def test_keepalive_several_requests_one_connection(gw):
    p, echo = gw
    with Client(p.port) as c:
        for i in range(5):
            r = c.request("GET", "/k/%d" % i)
            assert r.status == 200
            assert r.json()["path"] == "/k/%d" % i
        assert not c.wait_closed(0.3), "connection closed after a keep-alive response"


def test_pipelined_requests_answered_in_order(gw):
    p, echo = gw
    with Client(p.port) as c:
        c.send(build_request("GET", "/one") + build_request("POST", "/two", body=b"2") + build_request("GET", "/three"))
        paths = [c.read_response().json()["path"] for _ in range(3)]
    assert paths == ["/one", "/two", "/three"]


def test_http10_connection_closes(gw):
    p, echo = gw
    with Client(p.port) as c:
        c.send(b"GET /old HTTP/1.0\r\nHost: example.com\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert r.framing != "chunked", "chunked sent to an HTTP/1.0 client"
        if r.framing == "length":
            assert c.wait_closed(5), "HTTP/1.0 connection without keep-alive stayed open"
    assert r.json()["path"] == "/old"


def test_http10_without_host(gw):
    p, echo = gw
    with Client(p.port) as c:
        c.send(b"GET /nohost HTTP/1.0\r\n\r\n")
        r = c.read_response()
    assert r.status == 200


def test_http10_keepalive_honoured(gw):
    p, echo = gw
    with Client(p.port) as c:
        c.send(b"GET /a HTTP/1.0\r\nHost: example.com\r\nConnection: keep-alive\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.framing == "length"
        assert "keep-alive" in (r.header("Connection") or "").lower()
        c.send(b"GET /b HTTP/1.0\r\nHost: example.com\r\nConnection: keep-alive\r\n\r\n")
        r2 = c.read_response()
        assert r2.status == 200 and r2.json()["path"] == "/b"


def test_connection_close_honoured(gw):
    p, echo = gw
    with Client(p.port) as c:
        r = c.request("GET", "/bye", headers={"Connection": "close"})
        assert r.status == 200
        assert "close" in (r.header("Connection") or "").lower()
        assert c.wait_closed(5)


def test_upstream_connections_reused(gw):
    p, echo = gw
    for i in range(20):
        r = request(p.port, "GET", "/reuse/%d" % i)
        assert r.status == 200
    echo.wait_requests(20)
    assert echo.connections <= 2, "20 sequential requests used %d upstream connections" % echo.connections


def test_upstream_connections_reused_on_one_client_connection(gw):
    p, echo = gw
    with Client(p.port) as c:
        for i in range(20):
            assert c.request("POST", "/reuse", body=b"x" * i).status == 200
    assert echo.connections <= 2


# ---------------------------------------------------------------------------
# Expect: 100-continue
# ---------------------------------------------------------------------------

def test_expect_100_continue(gw):
    p, echo = gw
    body = b"the body after continue"
    with Client(p.port) as c:
        c.send(build_request("POST", "/expect", headers={"Expect": "100-continue",
                                                          "Content-Length": str(len(body))}))
        head = c.reader.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 100 "), head
        assert echo.requests == [], "upstream got the request before the body was sent"
        c.send(body)
        r = c.read_response("POST")
    assert r.status == 200
    up = echo.last()
    assert_well_framed(up, body)


def test_expect_100_continue_chunked(gw):
    p, echo = gw
    with Client(p.port) as c:
        c.send(b"POST /expect HTTP/1.1\r\nHost: example.com\r\nExpect: 100-continue\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")
        head = c.reader.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 100 "), head
        c.send(b"3\r\nabc\r\n0\r\n\r\n")
        r = c.read_response("POST")
    assert r.status == 200
    assert_well_framed(echo.last(), b"abc")


def test_expect_100_continue_on_direct_response_skips_body(portico):
    """A locally answered request must not ask for the body: no 100 Continue,
    just the final response."""
    cfg = {"routes": [{"name": "local", "match": {"path_prefix": "/"},
                       "plugins": [{"direct_response": {"status": 403, "body": "no"}}]}]}
    p = portico(cfg)
    with Client(p.port) as c:
        c.send(build_request("POST", "/x", headers={"Expect": "100-continue", "Content-Length": "1000"}))
        r = c.read_response("POST")
    assert r.status == 403
    assert r.interim == []


def test_many_pipelined_requests(gw):
    p, echo = gw
    n = 100
    with Client(p.port, timeout=30) as c:
        c.send(b"".join(build_request("GET", "/pipe/%d" % i) for i in range(n)))
        paths = [c.read_response().json()["path"] for _ in range(n)]
    assert paths == ["/pipe/%d" % i for i in range(n)]


def test_concurrent_clients(portico, echo):
    import threading
    p = portico(simple_config(echo.addr))
    results = []
    lock = threading.Lock()

    def worker(k):
        try:
            with Client(p.port, timeout=30) as c:
                for i in range(5):
                    body = b"%d-%d" % (k, i)
                    r = c.request("POST", "/c/%d/%d" % (k, i), body=body)
                    ok = r.status == 200 and r.json()["body"] == body.decode()
                    with lock:
                        results.append(ok)
        except Exception as e:  # counted as a failure below
            with lock:
                results.append(repr(e))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results.count(True) == 250, [r for r in results if r is not True][:5]


def test_multiple_workers(portico, echo):
    cfg = simple_config(echo.addr)
    cfg["workers"] = 4
    p = portico(cfg)
    for i in range(40):
        assert request(p.port, "GET", "/w/%d" % i).status == 200
    assert len(echo.requests) == 40


def test_upstream_connection_close_header_not_pooled(portico, upstream):
    """The upstream says Connection: close (but leaves the socket open): the
    connection must not be reused."""
    up = upstream(lambda req: make_response(200, "OK", [("Connection", "close")], b"bye"))
    p = portico(simple_config(up.addr))
    for i in range(3):
        r = request(p.port, "GET", "/c%d" % i)
        assert r.status == 200 and r.body == b"bye"
    assert up.connections == 3


def test_head_request_to_chunked_upstream(portico, upstream):
    def handler(req):
        if req.method == "HEAD":
            return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"body")
    up = upstream(handler)
    p = portico(simple_config(up.addr))
    with Client(p.port) as c:
        r = c.request("HEAD", "/x")
        assert r.status == 200 and r.body == b""
        r = c.request("GET", "/x")
        assert r.status == 200 and r.body == b"body"
    assert up.connections == 1


def test_empty_query_preserved(gw):
    p, echo = gw
    request(p.port, "GET", "/x?")
    assert echo.last().target == "/x?"


def test_http10_client_chunked_upstream(portico, upstream):
    up = upstream(lambda req: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"x" * 5000, chunk=1000))
    p = portico(simple_config(up.addr))
    with Client(p.port) as c:
        c.send(b"GET /old HTTP/1.0\r\nHost: example.com\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert r.framing in ("length", "close"), "chunked sent to an HTTP/1.0 client"
        assert r.body == b"x" * 5000
        if r.framing == "length":
            assert c.wait_closed(5)


def test_upstream_status_line_without_reason(portico, upstream):
    up = upstream(lambda req: b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok")
    p = portico(simple_config(up.addr))
    r = request(p.port, "GET", "/")
    assert r.status == 200 and r.body == b"ok"
