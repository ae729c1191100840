"""Slow-body defences (src/downstream/body_pace.h): `timeouts.body` as the longest
gap in a request body, for HTTP/1.1 connections and per HTTP/2 stream, and
`limits.min_body_rate` (after a grace period of `timeouts.body` the body
must arrive at that average rate). Only time during which Portico wants the
body counts: a paused body (plugin, upstream backpressure) is never blamed on
the client.

Clients: raw sockets (HTTP/1.1) and python3-h2 (h2util.H2, h2c with prior
knowledge).
Timeouts are short (body: 1s); assertions on time are generous bounds."""
import json
import os
import socket
import time

from conftest import simple_config
from h2util import H2, problem
from upstreams import GAP_DETAIL, RATE_DETAIL, ConnReader, make_response, problem_check, read_response

NO_ERROR = 0
CANCEL = 8


def cfg(up, body="1s", rate=None, route_plugins=None):
    top = {"timeouts": {"body": body}}
    if rate is not None:
        top["limits"] = {"min_body_rate": rate}
    c = simple_config(up.addr, **top)
    if route_plugins:
        c["routes"][0]["plugins"] = route_plugins
    return c


def access_statuses(p, path, timeout=5):
    """The access-log statuses of requests to `path` (waits for one)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [json.loads(ln)["status"] for ln in p.access_lines() if json.loads(ln).get("path") == path]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


# ------------------------------------------------------------------ HTTP/2

def test_h2_stalled_stream_gets_408_and_others_continue(portico, echo):
    p = portico(cfg(echo, rate=0))  # gap rule alone
    h = H2(p.port)
    h.request(1, "/stalled", body=b"partial-body", end=False)
    t0 = time.monotonic()
    # a healthy stream on the same connection meanwhile
    h.request(3, "/healthy-1", body=b"x" * 1000, end=True)
    assert h.wait(lambda: h.st(3)["ended"], 8), h.streams
    assert h.status(3) == 200 and json.loads(h.st(3)["data"])["body_len"] == 1000
    assert h.wait(lambda: h.st(1)["ended"] or h.st(1)["reset"] is not None, 8), h.streams
    elapsed = h.st(1)["t_head"] - t0
    doc = problem(h, 1, 408)
    assert doc["detail"] == GAP_DETAIL
    assert 0.5 <= elapsed < 8, elapsed
    # the unfinished request body is then cut off with RST_STREAM NO_ERROR
    assert h.wait(lambda: h.st(1)["reset"] is not None, 5), h.streams
    assert h.st(1)["reset"] == NO_ERROR
    # the connection is unaffected: another stream after the 408
    h.request(5, "/healthy-2", body=b"y" * 10, end=True)
    assert h.wait(lambda: h.st(5)["ended"], 8), h.streams
    assert h.status(5) == 200 and not h.closed
    h.close()
    # the upstream never got a complete /stalled request (it was aborted)
    paths = [r.path for r in echo.wait_requests(2)]
    assert "/stalled" not in paths and sorted(paths) == ["/healthy-1", "/healthy-2"]
    assert access_statuses(p, "/stalled") == [408]


def test_h2_trickle_below_min_rate_gets_408_good_rate_succeeds(portico, echo):
    p = portico(cfg(echo, rate="1k"))
    h = H2(p.port)
    h.request(1, "/trickle", body=b"0123456789", end=False)
    good = os.urandom(512 * 12)
    h.request(3, "/steady", body=good[:512], end=False)
    # every 0.25 s: 10 bytes on stream 1 (~40 B/s, each gap far below
    # timeouts.body) and 512 bytes on stream 3 (~2 KiB/s, above 1 KiB/s)
    t0 = time.monotonic()
    for i in range(1, 12):
        h.pump(0.25)
        h.send(1, b"0123456789")
        h.send(3, good[512 * i:512 * (i + 1)], end=(i == 11))
    assert h.wait(lambda: h.st(3)["ended"], 8), h.streams
    assert h.status(3) == 200, h.streams
    doc = json.loads(h.st(3)["data"])
    assert doc["body_len"] == len(good)
    # the trickle was stopped long before it ended (it never would have)
    assert h.wait(lambda: h.st(1)["headers"] is not None, 5), h.streams
    doc = problem(h, 1, 408)
    assert RATE_DETAIL in doc["detail"], doc
    assert h.st(1)["t_head"] - t0 < 8
    h.close()
    assert [r.path for r in echo.wait_requests(1)] == ["/steady"]
    assert access_statuses(p, "/trickle") == [408]


def test_h2_grpc_stalled_call_gets_deadline_exceeded(portico, echo):
    p = portico(cfg(echo, rate=0))
    h = H2(p.port)
    h.request(1, "/pkg.Svc/Upload", body=b"\x00\x00\x00\x00\x05hello", end=False,
              extra=[("content-type", "application/grpc"), ("te", "trailers")])
    assert h.wait(lambda: h.st(1)["headers"] is not None, 8), h.streams
    hdrs = h.st(1)["headers"]
    # gRPC Trailers-Only: HTTP 200, grpc-status 4 (DEADLINE_EXCEEDED)
    assert h.status(1) == 200 and hdrs[b"grpc-status"] == b"4", hdrs
    assert b"not received in time" in hdrs[b"grpc-message"]
    h.close()


def test_h2_request_body_pause_does_not_count(portico, echo):
    # the delay plugin holds the body for 3 s; the body (2 KiB) ends at
    # 3.6 s, later than timeouts.body + 2 KiB / min_body_rate (3 s) of
    # wall-clock time: only the time Portico wanted the body counts
    p = portico(cfg(echo, rate="1k", route_plugins=[{"delay": {"duration": "3s", "phase": "request_body"}}]))
    h = H2(p.port)
    body = os.urandom(2048)
    t0 = time.monotonic()
    h.request(1, "/paused", body=body[:1024], end=False)
    h.pump(0.2)
    h.send(1, body[1024:])  # arrives while the plugin holds the body
    h.pump(3.6 - (time.monotonic() - t0))
    assert h.send(1, b"", end=True), h.streams
    assert h.wait(lambda: h.st(1)["ended"] or h.st(1)["reset"] is not None, 12), h.streams
    assert h.status(1) == 200, h.streams
    assert json.loads(h.st(1)["data"])["body_len"] == len(body)
    h.close()


def test_h2_slow_upstream_after_complete_body(portico, upstream):
    up = upstream(lambda req: [2.5, make_response(200, "OK", [], b"done")])
    p = portico(cfg(up, rate="1k"))
    h = H2(p.port)
    h.request(1, "/slow-answer", body=b"hello", end=True)
    assert h.wait(lambda: h.st(1)["ended"] or h.st(1)["reset"] is not None, 10), h.streams
    assert h.status(1) == 200 and h.st(1)["data"] == b"done"
    h.close()


# ---------------------------------------------------------------- HTTP/1.1

def trickle_h1(port, total, piece, every, seconds, rest=False):
    """Sends a POST head with Content-Length `total`, then `piece` every
    `every` s until a response arrives or `seconds` pass (then the rest of
    the body if `rest`). Returns (response or None, time of the response
    relative to the head, socket)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /trickle HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % total)
    t0 = time.monotonic()
    sent = 0
    while time.monotonic() - t0 < seconds and sent + len(piece) < total:
        s.settimeout(every)
        try:
            data = s.recv(1, socket.MSG_PEEK)
        except socket.timeout:
            data = None
        if data:
            break
        try:
            s.sendall(piece)
            sent += len(piece)
        except OSError:
            break
    if rest and sent < total:
        s.sendall(b"z" * (total - sent))
    s.settimeout(10)
    r = read_response(ConnReader(s), "POST")
    return r, time.monotonic() - t0, s


def test_h1_trickle_below_min_rate_gets_408_and_close(portico, echo):
    p = portico(cfg(echo, rate="1k"))
    # 10 bytes every 0.3 s: each gap is far under timeouts.body (1 s)
    r, elapsed, s = trickle_h1(p.port, 100000, b"0123456789", 0.3, 15)
    doc = problem_check(r, 408)
    assert RATE_DETAIL in doc["detail"], doc
    assert elapsed < 8
    assert (r.header("Connection") or "").lower() == "close"
    s.settimeout(5)
    try:
        rest = s.recv(100)
    except ConnectionResetError:
        rest = b""
    assert rest == b"", "the connection stays open after the 408"
    s.close()
    assert access_statuses(p, "/trickle") == [408]
    assert not echo.requests


def test_h1_min_rate_zero_allows_trickle(portico, echo):
    # min_body_rate: 0 keeps only the gap rule: the same trickle for 2.7 s
    # (well past timeouts.body) completes
    p = portico(cfg(echo, rate=0))
    r, elapsed, s = trickle_h1(p.port, 200, b"0123456789", 0.3, 2.7, rest=True)
    s.close()
    assert r.status == 200 and r.json()["body_len"] == 200
    assert elapsed >= 2.5


def test_h1_stalled_body_gets_408(portico, echo):
    p = portico(cfg(echo, rate=0))
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    s.sendall(b"POST /stall HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
    t0 = time.monotonic()
    r = read_response(ConnReader(s), "POST")
    elapsed = time.monotonic() - t0
    doc = problem_check(r, 408)
    assert doc["detail"] == GAP_DETAIL
    assert 0.5 <= elapsed < 8
    s.close()


def test_h1_request_body_pause_does_not_count(portico, echo):
    p = portico(cfg(echo, rate="1k", route_plugins=[{"delay": {"duration": "3s", "phase": "request_body"}}]))
    s = socket.create_connection(("127.0.0.1", p.port), timeout=15)
    body = os.urandom(1024)
    t0 = time.monotonic()
    s.sendall(b"POST /paused HTTP/1.1\r\nHost: t\r\nContent-Length: 2048\r\n\r\n" + body)
    time.sleep(0.2)
    s.sendall(body)  # arrives while the plugin holds the body
    r = read_response(ConnReader(s), "POST")
    assert r.status == 200 and r.json()["body_len"] == 2048
    assert time.monotonic() - t0 >= 3.0
    s.close()


def test_h1_slow_upstream_after_complete_body(portico, upstream):
    # timeouts.body bounds the body, not the wait for the upstream's answer
    up = upstream(lambda req: [2.5, make_response(200, "OK", [], b"done")])
    p = portico(cfg(up, rate="1k"))
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    s.sendall(b"POST /slow-answer HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
    r = read_response(ConnReader(s), "POST")
    assert r.status == 200 and r.body == b"done"
    s.close()
