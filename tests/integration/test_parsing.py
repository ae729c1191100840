"""Strict request parsing over raw sockets.

Every malformed request must get the stated status with a problem+json body,
the connection must be closed afterwards, and the upstream must receive
nothing (for errors in the head) or no complete request (for errors found
in the body, which a streaming proxy may only see after it has forwarded the
head)."""

import socket
import time

import pytest

from conftest import simple_config
from upstreams import Client, PeerClosed, build_request, problem_check, request

LIMITS = {"max_request_line": "1k", "max_header_size": "4k", "max_headers": 20, "max_body_size": "1k"}


@pytest.fixture
def gw(portico, echo):
    p = portico(simple_config(echo.addr, limits=LIMITS))
    return p, echo


def send_raw(port, raw, status, timeout=5):
    """Sends raw bytes, expects a problem+json `status` then a closed connection."""
    with Client(port, timeout=timeout) as c:
        c.send(raw)
        r = c.read_response()
        problem_check(r, status)
        assert c.wait_closed(timeout), "connection left open after a %d" % status
    return r


def assert_upstream_untouched(echo):
    time.sleep(0.05)
    assert echo.connections == 0 and echo.bytes_received == 0, \
        "upstream was contacted: %r %r" % (echo.requests, echo.partial)


def assert_no_complete_request(echo):
    time.sleep(0.05)
    assert echo.requests == [], "upstream received a complete request: %r" % echo.requests


H = b"Host: example.com\r\n"

HEAD_ERRORS = {
    "cl_and_te": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "te_and_cl": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    "two_different_cl": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    "cl_list_different": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 6\r\n\r\nhello!", 400),
    "cl_not_digits": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello", 400),
    "cl_hex": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x5\r\n\r\nhello", 400),
    "cl_overflow": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999999\r\n\r\n", 400),
    "te_gzip": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n", 400),
    "te_chunked_chunked": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
    "te_gzip_chunked": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400),
    "te_space_before_colon": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    "te_http10": (b"POST / HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "te_empty": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: \r\n\r\n", 400),
    "obs_fold": (b"GET / HTTP/1.1\r\n" + H + b"X-A: one\r\n  two\r\n\r\n", 400),
    "bare_cr_in_value": (b"GET / HTTP/1.1\r\n" + H + b"X-A: one\rtwo\r\n\r\n", 400),
    "bare_lf_line_ending": (b"GET / HTTP/1.1\nHost: example.com\n\n", 400),
    "bare_lf_one_header": (b"GET / HTTP/1.1\r\nHost: example.com\nX-A: 1\r\n\r\n", 400),
    "nul_in_header": (b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", 400),
    "ctl_in_header": (b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x01b\r\n\r\n", 400),
    "invalid_name_char": (b"GET / HTTP/1.1\r\n" + H + b"X(A): 1\r\n\r\n", 400),
    "space_in_name": (b"GET / HTTP/1.1\r\n" + H + b"X A: 1\r\n\r\n", 400),
    "empty_name": (b"GET / HTTP/1.1\r\n" + H + b": 1\r\n\r\n", 400),
    "no_colon": (b"GET / HTTP/1.1\r\n" + H + b"X-A\r\n\r\n", 400),
    "missing_host": (b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400),
    "duplicate_host": (b"GET / HTTP/1.1\r\n" + H + b"Host: other.com\r\n\r\n", 400),
    "duplicate_same_host": (b"GET / HTTP/1.1\r\n" + H + H + b"\r\n", 400),
    "empty_host": (b"GET / HTTP/1.1\r\nHost: \r\n\r\n", 400),
    "invalid_host_space": (b"GET / HTTP/1.1\r\nHost: exa mple.com\r\n\r\n", 400),
    "invalid_host_slash": (b"GET / HTTP/1.1\r\nHost: example.com/evil\r\n\r\n", 400),
    "invalid_host_port": (b"GET / HTTP/1.1\r\nHost: example.com:80a\r\n\r\n", 400),
    "invalid_host_at": (b"GET / HTTP/1.1\r\nHost: user@example.com\r\n\r\n", 400),
    "version_1_2": (b"GET / HTTP/1.2\r\n" + H + b"\r\n", 400),
    "version_2_0": (b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    "version_garbage": (b"GET / HTTX/1.1\r\n" + H + b"\r\n", 400),
    "version_lowercase": (b"GET / http/1.1\r\n" + H + b"\r\n", 400),
    "double_space_request_line": (b"GET  / HTTP/1.1\r\n" + H + b"\r\n", 400),
    "missing_version": (b"GET /\r\n" + H + b"\r\n", 400),
    "space_in_target": (b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400),
    "fragment_in_target": (b"GET /a#frag HTTP/1.1\r\n" + H + b"\r\n", 400),
    "non_ascii_target": (b"GET /caf\xc3\xa9 HTTP/1.1\r\n" + H + b"\r\n", 400),
    "bad_method_char": (b"G(ET / HTTP/1.1\r\n" + H + b"\r\n", 400),
    "connect": (b"CONNECT example.com:443 HTTP/1.1\r\n" + H + b"\r\n", 400),
    "relative_target": (b"GET foo HTTP/1.1\r\n" + H + b"\r\n", 400),
    "expect_unknown": (b"POST / HTTP/1.1\r\n" + H + b"Expect: teapot\r\nContent-Length: 1\r\n\r\nx", 417),
}


@pytest.mark.parametrize("name", sorted(HEAD_ERRORS))
def test_malformed_head_rejected(gw, name):
    p, echo = gw
    raw, status = HEAD_ERRORS[name]
    send_raw(p.port, raw, status)
    assert_upstream_untouched(echo)


# Targets that parse but cannot be normalized: 400 before routing. The request
# itself was well framed, so keeping the connection is allowed, but it must
# stay in sync (or be closed).
BAD_PATHS = ["/a%zz", "/a%0", "/a%00b", "/../etc/passwd", "/a/../../etc", "/%2e%2e/etc", "/a/%2E%2E/%2e%2e/b"]


@pytest.mark.parametrize("target", BAD_PATHS)
def test_unnormalizable_path_400(gw, target):
    p, echo = gw
    with Client(p.port) as c:
        c.send(build_request("GET", target))
        problem_check(c.read_response(), 400)
        try:
            r = c.request("GET", "/next")
            assert r.status == 200 and r.json()["path"] == "/next"
        except (PeerClosed, ConnectionError):
            pass  # closing after the error is fine too
    assert [q.path for q in echo.requests] in ([], ["/next"])


CHUNK_ERRORS = {
    "size_zz": b"zz\r\nhello\r\n0\r\n\r\n",
    "size_negative": b"-1\r\nhello\r\n0\r\n\r\n",
    "size_0x": b"0x10\r\n0123456789abcdef\r\n0\r\n\r\n",
    "size_overflow": b"fffffffffffffffff1\r\nhello\r\n0\r\n\r\n",
    "size_empty": b"\r\nhello\r\n0\r\n\r\n",
    "size_space": b"5 \r\nhello\r\n0\r\n\r\n",
    "data_too_long": b"3\r\nhello\r\n0\r\n\r\n",
    "missing_crlf_after_data": b"5\r\nhelloXX0\r\n\r\n",
    "bare_lf_size_line": b"5\nhello\r\n0\r\n\r\n",
    "bad_trailer": b"5\r\nhello\r\n0\r\nBad Trailer: x\r\n\r\n",
    "extension_too_long": b"5;" + b"e" * 2000 + b"\r\nhello\r\n0\r\n\r\n",
    "bad_extension": b"5;a b\r\nhello\r\n0\r\n\r\n",
    "trailers_too_large": b"5\r\nhello\r\n0\r\nX-T: " + b"t" * 10000 + b"\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(CHUNK_ERRORS))
def test_malformed_chunked_body_rejected(gw, name):
    p, echo = gw
    raw = b"POST /c HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" + CHUNK_ERRORS[name]
    send_raw(p.port, raw, 400)
    assert_no_complete_request(echo)


def test_request_line_too_long_414(gw):
    p, echo = gw
    raw = b"GET /" + b"a" * 1100 + b" HTTP/1.1\r\n" + H + b"\r\n"
    send_raw(p.port, raw, 414)
    assert_upstream_untouched(echo)


def test_request_line_too_long_without_newline_414(gw):
    """The limit applies before the line is complete (no unbounded buffering)."""
    p, echo = gw
    with Client(p.port) as c:
        c.send(b"GET /" + b"a" * 3000)
        r = c.read_response()
    problem_check(r, 414)
    assert_upstream_untouched(echo)


def test_request_line_just_under_limit_ok(gw):
    p, echo = gw
    target = "/" + "a" * (1024 - len("GET  HTTP/1.1") - 1)
    r = request(p.port, "GET", target)
    assert r.status == 200
    assert echo.last().target == target


def test_too_many_headers_431(gw):
    p, echo = gw
    hdrs = b"".join(b"X-H%d: v\r\n" % i for i in range(25))
    send_raw(p.port, b"GET / HTTP/1.1\r\n" + H + hdrs + b"\r\n", 431)
    assert_upstream_untouched(echo)


def test_header_section_too_large_431(gw):
    p, echo = gw
    send_raw(p.port, b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"v" * 5000 + b"\r\n\r\n", 431)
    assert_upstream_untouched(echo)


def test_header_section_too_large_unterminated_431(gw):
    p, echo = gw
    with Client(p.port) as c:
        c.send(b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"v" * 6000)
        r = c.read_response()
    problem_check(r, 431)
    assert_upstream_untouched(echo)


def test_body_over_limit_with_content_length_413_before_body(gw):
    p, echo = gw
    with Client(p.port) as c:
        # Only the head is sent: the answer must not wait for the body.
        c.send(b"POST /up HTTP/1.1\r\n" + H + b"Content-Length: 5000\r\n\r\n")
        r = c.read_response()
        problem_check(r, 413)
        assert c.wait_closed(5)
    assert_upstream_untouched(echo)


def test_body_over_limit_with_expect_gets_413_not_100(gw):
    p, echo = gw
    with Client(p.port) as c:
        c.send(b"POST /up HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\nContent-Length: 5000\r\n\r\n")
        r = c.read_response()
    problem_check(r, 413)
    assert r.interim == [], "100 Continue sent for a body that is then refused"
    assert_upstream_untouched(echo)


def test_body_at_limit_accepted(gw):
    p, echo = gw
    r = request(p.port, "POST", "/up", body=b"x" * 1024)
    assert r.status == 200
    assert echo.last().body == b"x" * 1024


def test_chunked_body_over_limit_413(gw):
    p, echo = gw
    raw = b"POST /up HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
    with Client(p.port) as c:
        c.send(raw)
        try:
            for _ in range(4):
                c.send(b"190\r\n" + b"y" * 400 + b"\r\n")  # 4 x 400 = 1600 > 1k
                time.sleep(0.02)
            c.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.read_response()
        problem_check(r, 413)
        assert c.wait_closed(5)
    assert_no_complete_request(echo)


def test_route_max_body_size(portico, echo):
    cfg = simple_config(echo.addr, limits=LIMITS)
    cfg["routes"].insert(0, {"name": "small", "match": {"path_prefix": "/small"}, "upstream": "up",
                             "max_body_size": 100})
    p = portico(cfg)
    with Client(p.port) as c:
        c.send(b"POST /small HTTP/1.1\r\n" + H + b"Content-Length: 200\r\n\r\n")
        problem_check(c.read_response(), 413)
    assert request(p.port, "POST", "/small", body=b"s" * 100).status == 200
    assert request(p.port, "POST", "/other", body=b"o" * 200).status == 200


def test_error_closes_connection_even_if_pipelined(gw):
    """After a parse error nothing else on the connection is processed."""
    p, echo = gw
    raw = b"GET / HTTP/1.1\r\n" + H + b"X A: 1\r\n\r\n" + build_request("GET", "/smuggled")
    send_raw(p.port, raw, 400)
    assert_upstream_untouched(echo)


def test_smuggling_cl_te_pipeline(gw):
    """CL+TE is refused, so the 'hidden' request never reaches the upstream."""
    p, echo = gw
    hidden = b"GET /admin HTTP/1.1\r\n" + H + b"\r\n"
    body = b"0\r\n\r\n" + hidden
    raw = (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(body)) + body
    send_raw(p.port, raw, 400)
    assert_upstream_untouched(echo)


def test_valid_request_after_errors_on_other_connections(gw):
    p, echo = gw
    send_raw(p.port, b"GET / HTTP/1.1\r\n\r\n", 400)
    r = request(p.port, "GET", "/fine")
    assert r.status == 200


def test_header_timeout_absolute_deadline(portico, echo):
    cfg = simple_config(echo.addr, timeouts={"header": "1s"})
    p = portico(cfg)
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Slow: ")
    start = time.monotonic()
    data = b""
    s.setblocking(False)
    try:
        # Trickle one byte every 200 ms for up to 8 s; stop when Portico answers.
        while time.monotonic() - start < 8:
            try:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                if b"\r\n\r\n" in data:
                    break
            except BlockingIOError:
                pass
            except ConnectionResetError:
                break
            try:
                s.send(b"a")
            except (BrokenPipeError, ConnectionResetError):
                pass
            time.sleep(0.2)
        elapsed = time.monotonic() - start
        s.setblocking(True)
        s.settimeout(5)
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (socket.timeout, ConnectionResetError):
            pass
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 408"), "no 408 (after %.1fs): %r" % (elapsed, data[:200])
    assert b"application/problem+json" in data
    # Generous bound: proves that the trickle did not extend the 1 s deadline.
    assert elapsed < 6, "408 arrived only after %.1fs" % elapsed
    assert_upstream_untouched(echo)


def test_idle_connection_with_no_bytes_closed_silently_after_header_timeout(portico, echo):
    """A connection that never sends a byte is closed (a 408 is optional) within
    a bounded time; the process does not hang on it."""
    p = portico(simple_config(echo.addr, timeouts={"header": "1s", "idle": "1s"}))
    s = socket.create_connection(("127.0.0.1", p.port), timeout=8)
    try:
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    except socket.timeout:
        pytest.fail("idle connection not closed within 8 s")
    finally:
        s.close()
    assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:200]


def test_body_timeout(portico, echo):
    """A client that stops sending its body is cut off (408) in bounded time
    and the upstream never sees a complete request."""
    p = portico(simple_config(echo.addr, timeouts={"body": "1s"}))
    with Client(p.port, timeout=10) as c:
        c.send(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 100\r\n\r\n0123456789")
        try:
            r = c.read_response()
        except PeerClosed:
            r = None
        assert r is not None, "connection closed without a 408"
        problem_check(r, 408)
        assert c.wait_closed(8)
    assert_no_complete_request(echo)


@pytest.mark.parametrize("host", ["[::1]:8080", "127.0.0.1", "127.0.0.1:80", "xn--bcher-kva.example", "a-b.c_d.example"])
def test_valid_hosts_accepted(gw, host):
    p, echo = gw
    r = request(p.port, "GET", "/h", host=host)
    assert r.status == 200
    assert echo.last().header("Host") == host


def test_extension_method_forwarded(gw):
    p, echo = gw
    r = request(p.port, "PURGE", "/cache/x")
    assert r.status == 200
    assert echo.last().request_line == "PURGE /cache/x HTTP/1.1"


def test_identical_content_length_list_accepted(gw):
    p, echo = gw
    with Client(p.port) as c:
        c.send(b"POST /cl HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\nhello")
        r = c.read_response()
    assert r.status == 200
    assert echo.last().body == b"hello"
    assert echo.last().header_all("Content-Length") == ["5"]
