"""Upstream failures and response framing: refused, timeouts, truncated
bodies, invalid responses, failover, 1xx, HEAD/204/304, trailers,
close-delimited bodies, and the pool never reusing a broken connection."""

import os
import socket
import time

import pytest

from conftest import free_port, simple_config
from upstreams import (CLOSE, HANG, RESET, Client, PeerClosed, ProtocolError, build_request, chunked,
                       make_response, problem_check, request)


def gw_with(portico, upstream, handler, **cfg_extra):
    up = upstream(handler)
    p = portico(simple_config(up.addr, **cfg_extra))
    return p, up


def test_connection_refused_502(portico):
    p = portico(simple_config("127.0.0.1:%d" % free_port()))
    r = request(p.port, "GET", "/x")
    problem_check(r, 502)


def test_connection_refused_keeps_client_connection_usable(portico):
    p = portico(simple_config("127.0.0.1:%d" % free_port()))
    with Client(p.port) as c:
        problem_check(c.request("GET", "/1"), 502)
        problem_check(c.request("GET", "/2"), 502)


def test_upstream_never_answers_504(portico, upstream):
    p, up = gw_with(portico, upstream, lambda req: HANG, timeouts={"upstream_read": "1s"})
    start = time.monotonic()
    r = request(p.port, "GET", "/slow", timeout=15)
    problem_check(r, 504)
    assert time.monotonic() - start < 10


def test_upstream_hangs_after_partial_head_504(portico, upstream):
    p, up = gw_with(portico, upstream, lambda req: [b"HTTP/1.1 200 OK\r\nContent-Le", HANG],
                    timeouts={"upstream_read": "1s"})
    r = request(p.port, "GET", "/slow", timeout=15)
    problem_check(r, 504)


def read_until_closed(c, timeout=10):
    """Reads everything until the peer closes; fails on a hang."""
    c.sock.settimeout(timeout)
    data = bytes(c.reader.buf)
    c.reader.buf.clear()
    try:
        while True:
            chunk = c.sock.recv(65536)
            if not chunk:
                return data
            data += chunk
    except ConnectionResetError:
        return data
    except socket.timeout:
        pytest.fail("connection neither completed nor closed within %ss: %r" % (timeout, data[:300]))


def test_upstream_closes_mid_body_content_length(portico, upstream):
    p, up = gw_with(portico, upstream,
                    lambda req: [b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100, 0.1, CLOSE])
    with Client(p.port, timeout=10) as c:
        c.send(build_request("GET", "/trunc"))
        data = read_until_closed(c)
    head, _, body = data.partition(b"\r\n\r\n")
    # Either an error answered before the head went out, or a truncated
    # response that the client can detect: never a complete 1000-byte body.
    if head.startswith(b"HTTP/1.1 200"):
        if b"chunked" in head.lower():
            assert not body.endswith(b"0\r\n\r\n"), "truncated body was terminated as if complete"
        else:
            assert len(body) < 1000
    else:
        assert head.startswith(b"HTTP/1.1 502"), head


def test_upstream_closes_mid_body_chunked(portico, upstream):
    p, up = gw_with(portico, upstream,
                    lambda req: [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", 0.1, CLOSE])
    with Client(p.port, timeout=10) as c:
        c.send(build_request("GET", "/trunc"))
        data = read_until_closed(c)
    assert not data.endswith(b"0\r\n\r\n"), "truncated chunked body was completed: %r" % data


def test_upstream_reset_mid_body(portico, upstream):
    body = os.urandom(300000)
    def handler(req):
        if req.path == "/trunc":
            return [b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + body, 0.1, RESET]
        return make_response(200, "OK", [], b"next")
    p, up = gw_with(portico, upstream, handler)
    with Client(p.port, timeout=10) as c:
        c.send(build_request("GET", "/trunc"))
        data = read_until_closed(c)
    head, _, got = data.partition(b"\r\n\r\n")
    if head.startswith(b"HTTP/1.1 200"):
        assert len(got) < 1000000
    r = request(p.port, "GET", "/next")  # the process survived and still serves
    assert r.status == 200 and r.body == b"next"


@pytest.mark.parametrize("resp", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked, gzip\r\n\r\nxx",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nBad Header: 1\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nX-A: 1\r\n  folded\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    b"GARBAGE GARBAGE GARBAGE\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
], ids=["cl_and_te", "two_cl", "te_not_chunked_final", "negative_cl", "bad_field_name", "obs_fold",
        "two_digit_status", "bare_lf", "garbage_status_line", "binary"])
def test_invalid_upstream_response_502(portico, upstream, resp):
    calls = []

    def handler(req):
        calls.append(req)
        if len(calls) == 1:
            return [resp, CLOSE]
        return make_response(200, "OK", [], b"good")

    p, up = gw_with(portico, upstream, handler)
    r = request(p.port, "GET", "/bad")
    problem_check(r, 502)
    r = request(p.port, "GET", "/good")
    assert r.status == 200 and r.body == b"good"


def test_invalid_chunked_response_body(portico, upstream):
    p, up = gw_with(portico, upstream,
                    lambda req: [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", HANG])
    with Client(p.port, timeout=10) as c:
        c.send(build_request("GET", "/badchunk"))
        data = read_until_closed(c)
    head = data.partition(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 502") or not data.endswith(b"0\r\n\r\n"), data


def test_failover_to_second_target_on_connect_failure(portico, echo):
    dead = "127.0.0.1:%d" % free_port()
    p = portico(simple_config([dead, echo.addr]))
    for i in range(6):
        r = request(p.port, "GET", "/f/%d" % i)
        assert r.status == 200, r
    assert len(echo.requests) == 6


def test_weighted_round_robin(portico, upstream):
    a = upstream(name="a")
    b = upstream(name="b")
    p = portico(simple_config([a.addr, {"address": b.addr, "weight": 3}]))
    for i in range(8):
        assert request(p.port, "GET", "/w").status == 200
    assert (len(a.requests), len(b.requests)) == (2, 6)


def test_103_early_hints_forwarded(portico, upstream):
    p, up = gw_with(portico, upstream, lambda req: [
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n", 0.05,
        make_response(200, "OK", [("Content-Type", "text/plain")], b"final")])
    with Client(p.port) as c:
        r = c.request("GET", "/hints")
        assert r.status == 200 and r.body == b"final"
        assert [i.status for i in r.interim] == [103]
        assert r.interim[0].header("Link") == "</style.css>; rel=preload"
        r2 = c.request("GET", "/again")
        assert r2.status == 200 and r2.body == b"final"


def test_unsolicited_100_from_upstream_does_not_break_response(portico, upstream):
    p, up = gw_with(portico, upstream, lambda req: [
        b"HTTP/1.1 100 Continue\r\n\r\n", make_response(200, "OK", [], b"after100")])
    with Client(p.port) as c:
        r = c.request("GET", "/")
        assert r.status == 200 and r.body == b"after100"
        assert all(i.status == 100 for i in r.interim)
        assert c.request("GET", "/").body == b"after100"


def test_103_not_sent_to_http10_client(portico, upstream):
    p, up = gw_with(portico, upstream, lambda req: [
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", make_response(200, "OK", [], b"x")])
    with Client(p.port) as c:
        c.send(b"GET / HTTP/1.0\r\nHost: example.com\r\n\r\n")
        r = c.read_response()
    assert r.status == 200 and r.interim == []


def test_head_response_has_length_but_no_body(portico, upstream):
    def handler(req):
        if req.method == "HEAD":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nContent-Type: text/plain\r\n\r\n"
        return make_response(200, "OK", [], b"get-body")
    p, up = gw_with(portico, upstream, handler)
    with Client(p.port) as c:
        r = c.request("HEAD", "/h")
        assert r.status == 200
        assert r.header("Content-Length") == "1234"
        assert r.body == b""
        r2 = c.request("GET", "/h")
        assert r2.status == 200 and r2.body == b"get-body"
    assert up.connections == 1


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(portico, upstream, status):
    def handler(req):
        if req.path == "/nobody":
            return b"HTTP/1.1 %d X\r\nETag: \"v1\"\r\n\r\n" % status
        return make_response(200, "OK", [], b"next")
    p, up = gw_with(portico, upstream, handler)
    with Client(p.port) as c:
        r = c.request("GET", "/nobody")
        assert r.status == status
        assert r.header("ETag") == '"v1"'
        assert r.header("Transfer-Encoding") is None
        assert r.header("Content-Length") in (None, "0")
        r2 = c.request("GET", "/next")
        assert r2.status == 200 and r2.body == b"next"


def test_chunked_response_trailers_forwarded(portico, upstream):
    resp = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc123\r\n\r\n")
    p, up = gw_with(portico, upstream, lambda req: resp)
    with Client(p.port) as c:
        r = c.request("GET", "/trailers", headers={"TE": "trailers"})
        assert r.status == 200
        assert r.framing == "chunked"
        assert r.body == b"hello world"
        assert ("X-Checksum", "abc123") in r.trailers, r.trailers
        assert c.request("GET", "/again").body == b"hello world"


def test_forbidden_response_trailer_fields_are_dropped(portico, upstream):
    # RFC 9110 §6.5.1: framing, routing, authentication and cookie fields are
    # never forwarded from a trailer section; the others pass unchanged.
    resp = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nContent-Length: 99\r\nSet-Cookie: s=1\r\n"
            b"Transfer-Encoding: gzip\r\nAuthorization: x\r\nX-Late:  late value\r\n\r\n")
    p, up = gw_with(portico, upstream, lambda req: resp)
    with Client(p.port) as c:
        r = c.request("GET", "/trailers", headers={"TE": "trailers"})
        assert r.status == 200 and r.body == b"hello"
        assert r.trailers == [("X-Checksum", "abc"), ("X-Late", "late value")], r.trailers
        assert c.request("GET", "/again").status == 200


def test_close_delimited_response(portico, upstream):
    body = os.urandom(200000)
    p, up = gw_with(portico, upstream, lambda req: [b"HTTP/1.1 200 OK\r\nContent-Type: x/y\r\n\r\n" + body, CLOSE])
    with Client(p.port) as c:
        r = c.request("GET", "/close")
        assert r.status == 200
        assert r.body == body
        if r.framing != "close":
            # Re-framed (chunked): the client connection stays usable.
            r2 = c.request("GET", "/close2")
            assert r2.body == body


def test_close_delimited_response_http10_upstream(portico, upstream):
    p, up = gw_with(portico, upstream, lambda req: [b"HTTP/1.0 200 OK\r\n\r\nold-server", CLOSE])
    r = request(p.port, "GET", "/")
    assert r.status == 200 and r.body == b"old-server"


def test_pool_not_reused_after_truncated_response(portico, upstream):
    calls = []

    def handler(req):
        calls.append(req.path)
        if req.path == "/broken":
            return [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345", 0.1, CLOSE]
        return make_response(200, "OK", [], ("ok:" + req.path).encode())

    p, up = gw_with(portico, upstream, handler)
    assert request(p.port, "GET", "/a").body == b"ok:/a"
    with Client(p.port, timeout=10) as c:
        c.send(build_request("GET", "/broken"))
        read_until_closed(c)
    for i in range(3):
        r = request(p.port, "GET", "/after%d" % i)
        assert r.status == 200 and r.body == ("ok:/after%d" % i).encode()


def test_pool_not_reused_when_upstream_sends_extra_bytes(portico, upstream):
    """Bytes after a complete response must not be taken as the next response."""
    def handler(req):
        if req.path == "/extra":
            return make_response(200, "OK", [], b"ok") + b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"
        return make_response(200, "OK", [], ("ok:" + req.path).encode())

    p, up = gw_with(portico, upstream, handler)
    with Client(p.port) as c:
        r = c.request("GET", "/extra")
        assert r.body == b"ok"
        time.sleep(0.05)
        for i in range(3):
            r = c.request("GET", "/n%d" % i)
            assert r.status == 200 and r.body == ("ok:/n%d" % i).encode(), r


def test_client_abort_mid_download_does_not_desync_pool(portico, upstream):
    big = os.urandom(8 * 1024 * 1024)

    def handler(req):
        if req.path == "/big":
            return make_response(200, "OK", [], big)
        return make_response(200, "OK", [], ("ok:" + req.path).encode())

    p, up = gw_with(portico, upstream, handler)
    c = Client(p.port)
    c.send(build_request("GET", "/big"))
    c.reader.read_until(b"\r\n\r\n")
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()  # RST
    time.sleep(0.1)
    for i in range(3):
        r = request(p.port, "GET", "/x%d" % i)
        assert r.status == 200 and r.body == ("ok:/x%d" % i).encode()


def test_upstream_slow_response_body_streams(portico, upstream):
    """Body pieces arriving slowly are all delivered (streaming, no early end)."""
    steps = [b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n"]
    for piece in (b"hello", b" big ", b"world"):
        steps += [0.1, piece]
    p, up = gw_with(portico, upstream, lambda req: steps)
    r = request(p.port, "GET", "/s")
    assert r.body == b"hello big world"


def test_upstream_response_too_large_head_502(portico, upstream):
    resp = b"HTTP/1.1 200 OK\r\nX-Big: " + b"v" * 70000 + b"\r\nContent-Length: 2\r\n\r\nok"
    p, up = gw_with(portico, upstream, lambda req: [resp, CLOSE])
    problem_check(request(p.port, "GET", "/"), 502)


def test_upstream_closes_without_response_502(portico, upstream):
    p, up = gw_with(portico, upstream, lambda req: CLOSE)
    r = request(p.port, "POST", "/p", body=b"data")
    problem_check(r, 502)


def test_idempotent_retry_on_stale_pooled_connection(portico, upstream):
    """A pooled connection that the upstream closed while idle must not turn
    the next request into an error."""
    def handler(req):
        return [make_response(200, "OK", [], ("ok:" + req.path).encode()), 0.05, CLOSE]

    p, up = gw_with(portico, upstream, handler)
    for i in range(5):
        r = request(p.port, "GET", "/s%d" % i)
        assert r.status == 200 and r.body == ("ok:/s%d" % i).encode()
        time.sleep(0.15)


def test_client_abort_while_waiting_for_upstream(portico, upstream):
    def handler(req):
        if req.path == "/slow":
            return [0.5, make_response(200, "OK", [], b"stale")]
        return make_response(200, "OK", [], ("ok:" + req.path).encode())

    p, up = gw_with(portico, upstream, handler)
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", p.port))
        s.sendall(build_request("GET", "/slow"))
        up_before = len(up.requests)
        s.close()
    time.sleep(0.8)
    for i in range(3):
        r = request(p.port, "GET", "/x%d" % i)
        assert r.status == 200 and r.body == ("ok:/x%d" % i).encode(), r
    assert p.alive()


def test_client_abort_mid_upload(portico, echo):
    p = portico(simple_config(echo.addr))
    s = socket.create_connection(("127.0.0.1", p.port))
    s.sendall(b"POST /up HTTP/1.1\r\nHost: example.com\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000)
    time.sleep(0.2)
    s.close()
    time.sleep(0.2)
    assert not any(q.path == "/up" for q in echo.requests), "upstream got a complete request from a truncated upload"
    for i in range(3):
        r = request(p.port, "POST", "/next%d" % i, body=b"abc")
        assert r.status == 200 and r.json()["body"] == "abc"
