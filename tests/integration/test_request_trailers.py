"""Request trailers: forwarded from the client to the upstream.

Downstream HTTP/1.1 (chunked trailer section, raw socket client) and HTTP/2
(a trailing HEADERS frame with END_STREAM, python-h2 raw client over h2c)
feed the transaction; an HTTP/1.1 upstream receives them after the last
chunk (upstreams.py records the trailer section it decoded), an h2c upstream
(h2util.H2Upstream) as a trailing HEADERS frame with END_STREAM.
Fields RFC 9110 §6.5.1 keeps out of trailers are not forwarded; a body
framed by Content-Length has no room for trailers (dropped, body intact);
malformed h2 trailer blocks reset the stream and never reach the upstream."""
import json

from conftest import simple_config
from h2util import H2Upstream, h2_connect, h2_head, h2_read_until
from upstreams import Client, read_response, wait_for

import h2  # Debian python3-h2, installed by scripts/install-deps.sh
import h2.events  # noqa: E402

PROTOCOL_ERROR = 1

# Trailer fields a client may send that must never be forwarded (name as
# sent, value); each appears alongside the allowed ones below.
FORBIDDEN = [("Content-Length", "99"), ("Host", "evil.test"), ("Authorization", "Bearer secret"),
             ("Transfer-Encoding", "gzip"), ("If-Match", '"x"'), ("Cookie", "a=b"), ("Content-Type", "text/evil")]
ALLOWED = [("X-Checksum", "sha256=abc123"), ("X-Other", "v  w")]


def access_entry(gw, path):
    def find():
        for ln in gw.access_lines():
            e = json.loads(ln)
            if e.get("path") == path:
                return e
        return None
    e = wait_for(find)
    assert e, "no access log entry for %s: %r" % (path, gw.access_lines())
    return e


# ------------------------------------------------------------ h2 client

def h2_exchange(port, path, body, trailers, extra=()):
    """One request on stream 1: HEADERS, DATA (if body), trailing HEADERS
    with END_STREAM. Returns (status, response body)."""
    s, c = h2_connect(port)
    c.send_headers(1, h2_head(path, extra), end_stream=False)
    if body:
        c.send_data(1, body, end_stream=False)
    c.send_headers(1, trailers, end_stream=True)
    s.sendall(c.data_to_send())
    events, ok = h2_read_until(s, c, lambda e: isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset))
                               and e.stream_id == 1)
    s.close()
    assert ok, events
    assert not any(isinstance(e, h2.events.StreamReset) for e in events), events
    status = [dict(e.headers)[b":status"] for e in events if isinstance(e, h2.events.ResponseReceived)]
    data = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    return int(status[0]), data


# ------------------------------------------------------------------ tests

def lower(fields):
    return [(n.lower(), v) for n, v in fields]


def test_h1_chunked_trailers_reach_h1_upstream_filtered(portico, echo):
    gw = portico(simple_config(echo.addr))
    head = (b"POST /h1-trailers HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n"
            b"Trailer: X-Checksum\r\nConnection: close\r\n\r\n")
    body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n"
    trailer_section = b"".join(b"%s: %s\r\n" % (n.encode(), v.encode()) for n, v in ALLOWED[:1] + FORBIDDEN
                               + ALLOWED[1:])
    with Client(gw.port) as c:
        c.send(head + body + trailer_section + b"\r\n")
        r = c.read_response("POST")
    assert r.status == 200, r
    req = echo.wait_requests(1)[0]
    assert req.framing == "chunked" and req.body == b"hello world"
    assert not req.errors, req.errors
    # the allowed fields arrive as sent, in order; none of the forbidden ones
    assert req.trailers == ALLOWED[:1] + [("X-Other", "v  w")], req.trailers
    assert req.raw_body.endswith(b"0\r\nX-Checksum: sha256=abc123\r\nX-Other: v  w\r\n\r\n"), req.raw_body
    # the framing of the forwarded head is Portico's own
    assert req.header_all("Transfer-Encoding") == ["chunked"] and not req.has_header("Content-Length")
    # bytes_in counts the head, the decoded body and the trailer section received
    e = access_entry(gw, "/h1-trailers")
    assert e["bytes_in"] == len(head) + len(b"hello world") + len(trailer_section), e


def test_h1_chunked_without_trailers_unchanged(portico, echo):
    gw = portico(simple_config(echo.addr))
    with Client(gw.port) as c:
        c.send(b"POST /plain HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3\r\nabc\r\n0\r\n\r\n")
        r = c.read_response("POST")
    assert r.status == 200
    req = echo.wait_requests(1)[0]
    assert req.body == b"abc" and req.trailers == [] and req.raw_body.endswith(b"\r\n0\r\n\r\n")


def test_h1_only_forbidden_trailers_gives_empty_section(portico, echo):
    gw = portico(simple_config(echo.addr))
    with Client(gw.port) as c:
        c.send(b"POST /forbidden-only HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3\r\nabc\r\n0\r\nHost: evil\r\nContent-Length: 3\r\n\r\n")
        r = c.read_response("POST")
    assert r.status == 200
    req = echo.wait_requests(1)[0]
    assert req.body == b"abc" and req.trailers == [], req.trailers
    assert req.raw_body.endswith(b"\r\n0\r\n\r\n"), req.raw_body


def test_h2_trailers_reach_h1_upstream_chunked(portico, echo):
    gw = portico(simple_config(echo.addr))
    trailers = lower(ALLOWED) + [("authorization", "Bearer x"), ("cookie", "a=b"), ("if-none-match", "*"),
                                 ("content-type", "text/evil")]
    status, _ = h2_exchange(gw.port, "/h2-trailers", b"hello h2", trailers)
    assert status == 200
    req = echo.wait_requests(1)[0]
    assert req.framing == "chunked" and req.body == b"hello h2"
    assert req.trailers == lower(ALLOWED), req.trailers
    assert not req.errors, req.errors


def test_h2_bodyless_request_with_trailers(portico, echo):
    """HEADERS, then HEADERS+END_STREAM with trailers and no DATA: the
    upstream gets an empty chunked body followed by the trailers."""
    gw = portico(simple_config(echo.addr))
    status, _ = h2_exchange(gw.port, "/no-data", b"", [("x-checksum", "empty")])
    assert status == 200
    req = echo.wait_requests(1)[0]
    assert req.method == "POST" and req.body == b""
    assert req.trailers == [("x-checksum", "empty")], (req.raw_head, req.raw_body)


def test_h1_trailers_reach_h2c_upstream(portico):
    up = H2Upstream()
    try:
        gw = portico(simple_config(up.addr, upstream_extra={"protocol": "h2c"}))
        trailer_section = b"".join(b"%s: %s\r\n" % (n.encode(), v.encode()) for n, v in ALLOWED + FORBIDDEN)
        with Client(gw.port) as c:
            c.send(b"POST /to-h2 HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5\r\nhello\r\n0\r\n" + trailer_section + b"\r\n")
            r = c.read_response("POST")
        assert r.status == 200 and r.body == b"ok 5", r
        done = wait_for(lambda: list(up.done))
        assert done, "the h2c upstream saw no complete request"
        req = done[0]
        assert bytes(req["body"]) == b"hello"
        # names lowercased, forbidden fields removed, END_STREAM on the trailers
        assert req["trailers"] == [("x-checksum", "sha256=abc123"), ("x-other", "v  w")], req["trailers"]
        assert req["trailers_ended"] and not req["data_end"], req
    finally:
        up.close()


def test_h2_trailers_reach_h2c_upstream_without_body(portico):
    up = H2Upstream()
    try:
        gw = portico(simple_config(up.addr, upstream_extra={"protocol": "h2c"}))
        status, body = h2_exchange(gw.port, "/h2-h2", b"", [("x-checksum", "none")])
        assert status == 200 and body == b"ok 0"
        req = wait_for(lambda: list(up.done))[0]
        assert req["trailers"] == [("x-checksum", "none")] and req["trailers_ended"], req
        status, body = h2_exchange(gw.port, "/h2-h2-body", b"abc", [("x-checksum", "three")])
        assert status == 200 and body == b"ok 3"
        req = wait_for(lambda: len(up.done) >= 2 and up.done)[1]
        assert bytes(req["body"]) == b"abc" and req["trailers"] == [("x-checksum", "three")], req
    finally:
        up.close()


def test_content_length_body_drops_trailers_for_h1_upstream(portico, echo):
    """An h2 request with content-length is forwarded with Content-Length:
    HTTP/1.1 has no room for its trailers, so they are dropped; the body is
    intact and the exchange succeeds."""
    gw = portico(simple_config(echo.addr))
    status, body = h2_exchange(gw.port, "/cl", b"12345", [("x-checksum", "c")], extra=[("content-length", "5")])
    assert status == 200
    assert json.loads(body)["body"] == "12345"
    req = echo.wait_requests(1)[0]
    assert req.framing == "length" and req.body == b"12345" and req.header("Content-Length") == "5"
    assert req.trailers == [] and not req.errors


def _assert_bad_trailers_reset(port, echo, trailers):
    s, c = h2_connect(port)
    c.send_headers(1, h2_head("/bad"), end_stream=False)
    c.send_data(1, b"partial body", end_stream=False)
    c.send_headers(1, trailers, end_stream=True)
    s.sendall(c.data_to_send())
    events, ok = h2_read_until(s, c, lambda e: isinstance(e, (h2.events.StreamReset, h2.events.ResponseReceived))
                               and e.stream_id == 1)
    assert ok, events
    assert isinstance(events[-1], h2.events.StreamReset), "expected RST_STREAM, got %r" % events[-1]
    assert events[-1].error_code == PROTOCOL_ERROR, events[-1]
    # the connection survives: a good request on stream 3 reaches the upstream
    c.send_headers(3, h2_head("/after", method="GET"), end_stream=True)
    s.sendall(c.data_to_send())
    events, ok = h2_read_until(s, c, lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == 3)
    assert ok, events
    s.close()
    reqs = echo.wait_requests(1)
    assert [r.path for r in reqs] == ["/after"], "the bad request reached the upstream: %r" % reqs


def test_h2_trailers_with_pseudo_header_reset(portico, echo):
    gw = portico(simple_config(echo.addr))
    _assert_bad_trailers_reset(gw.port, echo, [("x-ok", "1"), (":path", "/evil")])


def test_h2_trailers_with_uppercase_name_reset(portico, echo):
    gw = portico(simple_config(echo.addr))
    _assert_bad_trailers_reset(gw.port, echo, [("X-Upper", "1")])


def test_h2_trailers_over_field_limit_431(portico, echo):
    """The trailer block is held to the head's limits (limits.max_headers)."""
    cfg = simple_config(echo.addr)
    cfg["limits"] = {"max_headers": 10}
    gw = portico(cfg)
    s, c = h2_connect(gw.port)
    c.send_headers(1, h2_head("/many"), end_stream=False)
    c.send_data(1, b"body", end_stream=False)
    c.send_headers(1, [("x-t%d" % i, "v") for i in range(20)], end_stream=True)
    s.sendall(c.data_to_send())
    events, ok = h2_read_until(s, c, lambda e: isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset))
                               and e.stream_id == 1)
    assert ok, events
    status = [dict(e.headers)[b":status"] for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert status == [b"431"], events
    # the request never completed upstream (its exchange was closed before
    # the end of the body): only the next request arrives there
    c.send_headers(3, h2_head("/after", method="GET"), end_stream=True)
    s.sendall(c.data_to_send())
    events, ok = h2_read_until(s, c, lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == 3)
    assert ok, events
    s.close()
    reqs = echo.wait_requests(1)
    assert [r.path for r in reqs] == ["/after"], reqs
