"""The `compression` plugin against the real binary: responses compressed
with gzip, br or zstd as Accept-Encoding asks (and decoded here with
Python's zlib/gzip, python3-brotli and python3-zstandard), over HTTP/1.1
and HTTP/2 (python3-h2 and curl); every skip rule; Vary merging; ETag
weakening; Content-Length and Accept-Ranges dropped; streaming (a slow
chunked upstream arrives compressed in pieces, the client decodes the
first part while the upstream still holds the rest; event streams are
flushed per piece); local responses; request bodies decompressed (gzip,
deflate in both framings, br, zstd) or refused (415, 400, 413 with the
10 KB gzip bomb and bounded RSS); clients leaving mid-body (the teardown's
LeakSanitizer check proves every codec state is freed); config errors with
FILE:LINE:COL.
"""
import gzip
import hashlib
import json
import socket
import subprocess
import threading
import time
import zlib

import brotli  # Debian python3-brotli (scripts/install-deps.sh)
import pytest
import zstandard  # Debian python3-zstandard

from conftest import BIN, simple_config
from h2util import H2
from upstreams import (Client, RawServer, chunked, make_response, problem_check, recv_head, request,
                       rst_close)

CODINGS = ["gzip", "br", "zstd"]


def text_body(n, seed=1):
    """Deterministic JSON-ish text of about n bytes (compresses ~5x)."""
    out = []
    size = 0
    x = seed
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    while size < n:
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        line = '{"id":%d,"name":"%s","v":%d},\n' % (x >> 16, words[(x >> 8) & 7], x & 0xFFF)
        out.append(line)
        size += len(line)
    return "".join(out).encode()[:n]


def decode(coding, data):
    """The whole body decoded (raises if it is not one complete stream)."""
    if coding == "gzip":
        return gzip.decompress(data)
    if coding == "br":
        return brotli.decompress(data)
    if coding == "zstd":
        d = zstandard.ZstdDecompressor().decompressobj()
        out = d.decompress(data)
        assert d.eof, "zstd frame not finished"
        return out
    raise AssertionError(coding)


class StreamDecoder:
    """Incremental decoder: feed(data) returns what is decodable so far."""

    def __init__(self, coding):
        if coding == "gzip":
            self.d = zlib.decompressobj(31)
            self.feed = self.d.decompress
        elif coding == "br":
            self.d = brotli.Decompressor()
            self.feed = self.d.process
        else:
            self.d = zstandard.ZstdDecompressor().decompressobj()
            self.feed = self.d.decompress


def encode(coding, data):
    if coding == "gzip":
        return gzip.compress(data)
    if coding == "br":
        return brotli.compress(data)
    if coding == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    if coding == "deflate":
        return zlib.compress(data)
    if coding == "deflate-raw":
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush()
    raise AssertionError(coding)


def gzip_bomb(n=10 << 20):
    """n zero bytes, gzip level 9: 10 MiB -> about 10 KB."""
    return gzip.compress(b"\0" * n, 9)


class Routes:
    """An upstream handler serving canned responses by path:
    routes[path] = (status, [(name, value)], body[, "chunked" | "nolength"])."""

    def __init__(self):
        self.routes = {}

    def add(self, path, status=200, headers=(), body=b"", framing="length"):
        self.routes[path] = (status, list(headers), body, framing)

    def __call__(self, req):
        status, headers, body, framing = self.routes.get(req.path, (404, [], b"no such route", "length"))
        if req.method == "HEAD":
            hs = headers + ([("Content-Length", str(len(body)))] if framing == "length" else [])
            return make_response(status, "X", hs, b"", content_length=False)
        if status in (204, 304) or 100 <= status < 200:
            return make_response(status, "X", headers, b"", content_length=False)
        if framing == "chunked":
            head = make_response(status, "X", headers + [("Transfer-Encoding", "chunked")], b"",
                                 content_length=False)
            return head + chunked(body, chunk=4096)
        return make_response(status, "X", headers, body)


JSON = [("Content-Type", "application/json")]
BIG = text_body(200000)


@pytest.fixture
def routes(upstream):
    r = Routes()
    r.up = upstream(r)
    return r


def comp_config(addr, conf=None, **kw):
    return simple_config(addr, plugins=[{"compression": conf if conf is not None else {}}], **kw)


def get(port, path, ae=None, method="GET", headers=(), version="HTTP/1.1"):
    hs = list(headers)
    if ae is not None:
        hs.append(("Accept-Encoding", ae))
    return request(port, method, path, hs, version=version)


# ---------------------------------------------------------------------------
# Negotiation and the compressed response
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("ae,coding", [
    ("gzip", "gzip"),
    ("br", "br"),
    ("zstd", "zstd"),
    ("gzip, deflate, br, zstd", "br"),          # browsers: server order breaks the tie
    ("gzip;q=1, br;q=0.5, zstd;q=0.2", "gzip"),
    ("GZIP;Q=0.5 , ZsTd ; q=0.9", "zstd"),      # case and whitespace
    ("*", "br"),
    ("*;q=0.5, br;q=0, zstd;q=0", "gzip"),
    ("x-gzip", "gzip"),
    ("gzip;q=nope, zstd", "zstd"),              # a malformed entry is ignored
])
def test_negotiated_coding_round_trips(portico, routes, ae, coding):
    routes.add("/j", headers=JSON + [("ETag", '"v1"')], body=BIG)
    p = portico(comp_config(routes.up.addr))
    r = get(p.port, "/j", ae)
    assert r.status == 200
    assert r.header("Content-Encoding") == coding
    assert r.header("Vary") == "Accept-Encoding"
    assert r.header("Content-Length") is None and r.framing == "chunked"
    assert r.header("ETag") == 'W/"v1"'
    assert len(r.body) < len(BIG) // 3
    assert decode(coding, r.body) == BIG
    # the upstream saw the client's Accept-Encoding unchanged
    assert routes.up.last().header("Accept-Encoding") == ae


def test_server_preference_order_is_configurable(portico, routes):
    routes.add("/j", headers=JSON, body=BIG)
    p = portico(comp_config(routes.up.addr, {"algorithms": ["gzip", "zstd"]}))
    assert get(p.port, "/j", "br, zstd, gzip").header("Content-Encoding") == "gzip"
    assert get(p.port, "/j", "br, zstd").header("Content-Encoding") == "zstd"
    r = get(p.port, "/j", "br")        # br is not offered
    assert r.header("Content-Encoding") is None and r.body == BIG
    assert r.header("Vary") == "Accept-Encoding"


@pytest.mark.parametrize("ae", [None, "", "identity", "gzip;q=0, br;q=0, zstd;q=0", "*;q=0", "deflate, compress",
                                "gzip;q=0.5, identity", "garbage;;;q=="])
def test_identity_chosen_still_varies(portico, routes, ae):
    routes.add("/j", headers=JSON, body=BIG)
    p = portico(comp_config(routes.up.addr))
    r = get(p.port, "/j", ae)
    assert r.status == 200
    assert r.header("Content-Encoding") is None
    assert r.header("Content-Length") == str(len(BIG)) and r.body == BIG
    assert r.header("Vary") == "Accept-Encoding"  # a cache must not mix the two forms


def test_levels_and_types_config(portico, routes):
    routes.add("/h", headers=[("Content-Type", "text/html; charset=utf-8")], body=BIG)
    routes.add("/p", headers=[("Content-Type", "application/problem+json")], body=BIG)
    routes.add("/x", headers=[("Content-Type", "application/x-custom")], body=BIG)
    p = portico(comp_config(routes.up.addr, {"types": ["application/x-custom"], "gzip": {"level": 1}}))
    assert get(p.port, "/h", "gzip").header("Content-Encoding") is None
    assert get(p.port, "/p", "gzip").header("Content-Encoding") is None
    r = get(p.port, "/x", "gzip")
    assert r.header("Content-Encoding") == "gzip" and decode("gzip", r.body) == BIG
    # level 1 vs level 9 on the same body: 9 is smaller
    p9 = portico(comp_config(routes.up.addr, {"types": ["application/x-custom"], "gzip": {"level": 9}}))
    r9 = get(p9.port, "/x", "gzip")
    assert len(r9.body) < len(r.body)


def test_default_types(portico, routes):
    types = {"/a": "text/plain", "/b": "application/json; charset=utf-8", "/c": "application/javascript",
             "/d": "application/xml", "/e": "image/svg+xml", "/f": "application/vnd.api+json",
             "/g": "application/atom+xml", "/h": "TEXT/CSS"}
    for path, ct in types.items():
        routes.add(path, headers=[("Content-Type", ct)], body=BIG)
    p = portico(comp_config(routes.up.addr))
    for path in types:
        r = get(p.port, path, "gzip")
        assert r.header("Content-Encoding") == "gzip", (path, r)
        assert decode("gzip", r.body) == BIG


# ---------------------------------------------------------------------------
# Skip rules: the response passes byte for byte, without Vary
# ---------------------------------------------------------------------------

def assert_untouched(r, body):
    assert r.header("Content-Encoding") is None, r
    assert r.header("Vary") is None, r
    assert r.body == body


def test_skip_small_body(portico, routes):
    small = b'{"ok":true}' * 10
    routes.add("/s", headers=JSON, body=small)
    routes.add("/edge", headers=JSON, body=b"x" * 1024)
    p = portico(comp_config(routes.up.addr))
    r = get(p.port, "/s", "gzip")
    assert_untouched(r, small)
    assert r.header("Content-Length") == str(len(small))
    r = get(p.port, "/edge", "gzip")          # min_size itself is compressed
    assert r.header("Content-Encoding") == "gzip"
    p2 = portico(comp_config(routes.up.addr, {"min_size": 0}))
    r = get(p2.port, "/s", "gzip")
    assert r.header("Content-Encoding") == "gzip" and decode("gzip", r.body) == small


def test_streamed_body_of_unknown_length_is_compressed_even_if_small(portico, routes):
    routes.add("/c", headers=JSON, body=b"tiny", framing="chunked")
    p = portico(comp_config(routes.up.addr))
    r = get(p.port, "/c", "zstd")
    assert r.header("Content-Encoding") == "zstd" and decode("zstd", r.body) == b"tiny"


def test_skip_not_a_compressible_type(portico, routes):
    routes.add("/png", headers=[("Content-Type", "image/png")], body=BIG)
    routes.add("/none", headers=[], body=BIG)
    routes.add("/bin", headers=[("Content-Type", "application/octet-stream")], body=BIG)
    p = portico(comp_config(routes.up.addr))
    for path in ("/png", "/none", "/bin"):
        r = get(p.port, path, "gzip, br")
        assert_untouched(r, BIG)
        assert r.header("Content-Length") == str(len(BIG))


def test_skip_already_encoded(portico, routes):
    pre = gzip.compress(BIG)
    routes.add("/gz", headers=JSON + [("Content-Encoding", "gzip")], body=pre)
    routes.add("/br", headers=JSON + [("Content-Encoding", "br")], body=brotli.compress(BIG))
    routes.add("/id", headers=JSON + [("Content-Encoding", "identity")], body=BIG)
    p = portico(comp_config(routes.up.addr))
    r = get(p.port, "/gz", "br, gzip")
    assert r.header("Content-Encoding") == "gzip" and r.body == pre and r.header("Vary") is None
    r = get(p.port, "/br", "gzip")            # even one the client did not ask for: not ours to fix
    assert r.header("Content-Encoding") == "br" and r.header("Vary") is None
    r = get(p.port, "/id", "gzip")            # identity is no coding
    assert r.header("Content-Encoding") == "gzip" and decode("gzip", r.body) == BIG


def test_skip_no_transform(portico, routes):
    routes.add("/nt", headers=JSON + [("Cache-Control", "public, No-Transform, max-age=60")], body=BIG)
    p = portico(comp_config(routes.up.addr))
    r = get(p.port, "/nt", "gzip")
    assert_untouched(r, BIG)


def test_skip_206_and_ranged_requests(portico, routes):
    part = BIG[:5000]
    routes.add("/part", status=206, headers=JSON + [("Content-Range", "bytes 0-4999/%d" % len(BIG))], body=part)
    routes.add("/full", headers=JSON + [("Accept-Ranges", "bytes")], body=BIG)
    p = portico(comp_config(routes.up.addr))
    r = get(p.port, "/part", "gzip")
    assert r.status == 206
    assert_untouched(r, part)
    # a Range request answered 200 by the upstream: still left alone
    r = get(p.port, "/full", "gzip", headers=[("Range", "bytes=0-99")])
    assert r.status == 200
    assert_untouched(r, BIG)
    assert r.header("Accept-Ranges") == "bytes"
    # without Range it is compressed, and Accept-Ranges goes (no ranges of the encoded form)
    r = get(p.port, "/full", "gzip")
    assert r.header("Content-Encoding") == "gzip" and r.header("Accept-Ranges") is None


def test_skip_head_204_304(portico, routes):
    routes.add("/j", headers=JSON + [("ETag", '"e"')], body=BIG)
    routes.add("/nc", status=204, headers=JSON)
    routes.add("/nm", status=304, headers=JSON + [("ETag", '"e"')])
    p = portico(comp_config(routes.up.addr))
    r = get(p.port, "/j", "gzip", method="HEAD")
    assert r.status == 200 and r.body == b""
    assert r.header("Content-Encoding") is None and r.header("Vary") is None
    assert r.header("Content-Length") == str(len(BIG)) and r.header("ETag") == '"e"'
    r = get(p.port, "/nc", "gzip")
    assert r.status == 204 and r.header("Content-Encoding") is None and r.header("Vary") is None
    r = get(p.port, "/nm", "gzip", headers=[("If-None-Match", '"e"')])
    assert r.status == 304 and r.header("Content-Encoding") is None and r.header("ETag") == '"e"'


def test_skip_1xx_then_compress_final(portico, raw_server):
    def serve(s, n):
        recv_head(s)
        s.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
        s.sendall(make_response(200, "OK", JSON, BIG))
        time.sleep(0.5)
    srv = raw_server(serve)
    p = portico(comp_config(srv.addr))
    r = get(p.port, "/", "gzip")
    assert [i.status for i in r.interim] == [103]
    assert r.interim[0].header("Content-Encoding") is None and r.interim[0].header("Vary") is None
    assert r.status == 200 and r.header("Content-Encoding") == "gzip"
    assert decode("gzip", r.body) == BIG


def test_skip_integrity_fields(portico, routes):
    routes.add("/d", headers=JSON + [("Content-Digest", "sha-256=:%s:" % hashlib.sha256(BIG).hexdigest())], body=BIG)
    p = portico(comp_config(routes.up.addr))
    assert_untouched(get(p.port, "/d", "gzip"), BIG)


# ---------------------------------------------------------------------------
# Vary, ETag
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("vary,expect", [
    ([("Vary", "Origin")], ["Origin, Accept-Encoding"]),
    ([("Vary", "Origin"), ("Vary", "Cookie")], ["Origin, Cookie, Accept-Encoding"]),
    ([("Vary", "accept-encoding")], ["accept-encoding"]),
    ([("Vary", "Origin, Accept-Encoding")], ["Origin, Accept-Encoding"]),
    ([("Vary", "*")], ["*"]),
])
def test_vary_merged_not_duplicated(portico, routes, vary, expect):
    routes.add("/v", headers=JSON + vary, body=BIG)
    p = portico(comp_config(routes.up.addr))
    for ae in ("gzip", None):              # compressed, and identity chosen
        r = get(p.port, "/v", ae)
        assert r.header_all("Vary") == expect, r


def test_etag_weakened_only_when_compressed(portico, routes):
    routes.add("/s", headers=JSON + [("ETag", '"strong"')], body=BIG)
    routes.add("/w", headers=JSON + [("ETag", 'W/"weak"')], body=BIG)
    p = portico(comp_config(routes.up.addr))
    assert get(p.port, "/s", "br").header("ETag") == 'W/"strong"'
    assert get(p.port, "/s", None).header("ETag") == '"strong"'
    assert get(p.port, "/w", "br").header("ETag") == 'W/"weak"'


def test_http10_client_gets_close_delimited_compressed_body(portico, routes):
    routes.add("/j", headers=JSON, body=BIG)
    p = portico(comp_config(routes.up.addr))
    r = get(p.port, "/j", "gzip", version="HTTP/1.0")
    assert r.header("Content-Encoding") == "gzip" and r.framing == "close"
    assert decode("gzip", r.body) == BIG


def test_large_body_every_coding(portico, routes):
    big = text_body(5 << 20, seed=7)
    routes.add("/big", headers=JSON, body=big)
    routes.add("/bigc", headers=JSON, body=big, framing="chunked")
    p = portico(comp_config(routes.up.addr))
    for coding in CODINGS:
        for path in ("/big", "/bigc"):
            r = get(p.port, path, coding)
            assert r.header("Content-Encoding") == coding
            assert hashlib.sha256(decode(coding, r.body)).digest() == hashlib.sha256(big).digest()


def test_trailers_survive_compression(portico, raw_server):
    def serve(s, n):
        recv_head(s)
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + chunked(BIG, chunk=10000, trailers=b"X-Checksum: abc\r\n"))
        time.sleep(0.5)
    srv = raw_server(serve)
    p = portico(comp_config(srv.addr))
    r = get(p.port, "/", "gzip", headers=[("TE", "trailers")])
    assert r.header("Content-Encoding") == "gzip" and decode("gzip", r.body) == BIG
    assert ("X-Checksum", "abc") in r.trailers


# ---------------------------------------------------------------------------
# Local responses go through the plugin too
# ---------------------------------------------------------------------------

def test_local_responses_are_compressed_consistently(portico, routes):
    body = json.dumps({"items": [{"n": i, "name": "item %d" % i} for i in range(300)]})
    cfg = {
        "upstreams": {"up": {"targets": [routes.up.addr]}},
        "plugins": [{"compression": {"min_size": 0}}],
        "routes": [
            {"name": "mock", "match": {"path": "/mock"},
             "plugins": [{"direct_response": {"status": 200, "headers": {"Content-Type": "application/json"},
                                              "body": body}}]},
            {"name": "api", "match": {"path_prefix": "/api"}, "upstream": "up"},
        ],
    }
    p = portico(cfg)
    r = get(p.port, "/mock", "gzip")
    assert r.status == 200 and r.header("Content-Encoding") == "gzip"
    assert decode("gzip", r.body).decode() == body
    # Portico's own problem+json errors: their body is built after the
    # response phase (the plugin sees Content-Length 0), so they pass as is
    r = get(p.port, "/nothing-here", "br")
    assert r.header("Content-Encoding") is None
    problem_check(r, 404)


def test_unparsable_requests_answered_with_the_plugin_global(portico, routes):
    """Portico's 400/408 for a head it could not parse run the response
    plugins without a request: the plugin copes."""
    routes.add("/j", headers=JSON, body=BIG)
    p = portico(comp_config(routes.up.addr, {"min_size": 0}))
    with Client(p.port) as c:
        c.send(b"GARBAGE\r\n\r\n")
        r = c.read_response()
    problem_check(r, 400)
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    s.sendall(b"GET /j HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n")
    head, _ = recv_head(s)
    assert head.startswith(b"HTTP/1.1 400")
    s.close()
    assert get(p.port, "/j", "gzip").header("Content-Encoding") == "gzip"


# ---------------------------------------------------------------------------
# HTTP/2 clients
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("coding", CODINGS)
def test_h2_client(portico, routes, coding):
    routes.add("/j", headers=JSON + [("ETag", '"x"')], body=BIG)
    routes.add("/small", headers=JSON, body=b"{}")
    p = portico(comp_config(routes.up.addr))
    h = H2(p.port)
    try:
        h.c.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "t"), (":path", "/j"),
                             ("accept-encoding", coding)], end_stream=True)
        h.c.send_headers(3, [(":method", "GET"), (":scheme", "http"), (":authority", "t"), (":path", "/small"),
                             ("accept-encoding", coding)], end_stream=True)
        h.flush()
        assert h.wait(lambda: h.st(1)["ended"] and h.st(3)["ended"], 15)
        hd = h.st(1)["headers"]
        assert hd[b":status"] == b"200"
        assert hd[b"content-encoding"] == coding.encode()
        assert hd[b"vary"] == b"Accept-Encoding"
        assert b"content-length" not in hd
        assert hd[b"etag"] == b'W/"x"'
        assert decode(coding, h.st(1)["data"]) == BIG
        hs = h.st(3)["headers"]
        assert b"content-encoding" not in hs and h.st(3)["data"] == b"{}"
    finally:
        h.close()


def curl(*args, timeout=60):
    return subprocess.run(["curl", "-sS"] + list(args), capture_output=True, timeout=timeout)


def test_curl_http2_compressed(portico, routes):
    routes.add("/j", headers=JSON, body=BIG)
    p = portico(comp_config(routes.up.addr))
    for coding in CODINGS:
        res = curl("--http2-prior-knowledge", "-H", "Accept-Encoding: " + coding, "--compressed",
                   "-D", "-", "-o", "/dev/stderr", p.url + "/j")
        assert res.returncode == 0, res
        head = res.stdout.decode().lower()
        assert head.startswith("http/2 200"), head
        assert "content-encoding: %s" % coding in head
        assert res.stderr == BIG


# ---------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------

class ChunkReader:
    """Reads a chunked HTTP/1.1 body from a raw socket piece by piece."""

    def __init__(self, sock, rest):
        self.s = sock
        self.buf = bytearray(rest)
        self.done = False

    def pieces(self):
        """The data of every complete chunk in the buffer (reads once if none)."""
        out = bytearray()
        while True:
            i = self.buf.find(b"\r\n")
            if i < 0:
                break
            size = int(self.buf[:i].split(b";")[0], 16)
            if size == 0:
                if self.buf.find(b"\r\n\r\n", i) >= 0:
                    self.done = True
                break
            if len(self.buf) < i + 2 + size + 2:
                break
            out += self.buf[i + 2:i + 2 + size]
            del self.buf[:i + 2 + size + 2]
        return bytes(out)

    def read_some(self, timeout=0.2):
        self.s.settimeout(timeout)
        try:
            d = self.s.recv(65536)
        except socket.timeout:
            return True
        if not d:
            return False
        self.buf += d
        return True


class HeldUpstream(RawServer):
    """Answers with a chunked response of `ctype`: the pieces in `first`,
    then waits for .release, then the pieces in `rest`."""

    def __init__(self, ctype, first, rest):
        super().__init__(timeout=30)
        self.ctype, self.first, self.rest = ctype, first, rest
        self.release = threading.Event()
        self.finished = threading.Event()

    def handle(self, s, n):
        recv_head(s)
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n\r\n" % self.ctype)
        for piece in self.first:
            s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            time.sleep(0.05)
        self.release.wait(30)
        for piece in self.rest:
            s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        s.sendall(b"0\r\n\r\n")
        self.finished.set()
        time.sleep(0.5)


def stream_get(port, coding):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET /s HTTP/1.1\r\nHost: t\r\nAccept-Encoding: %s\r\n\r\n" % coding.encode())
    head, rest = recv_head(s)
    return s, head.decode("latin-1"), ChunkReader(s, rest)


@pytest.mark.parametrize("coding", CODINGS)
def test_streamed_response_arrives_compressed_before_upstream_finishes(portico, coding):
    part1 = text_body(400000, seed=3)
    part2 = text_body(100000, seed=4)
    up = HeldUpstream(b"application/json", [part1[i:i + 16384] for i in range(0, len(part1), 16384)], [part2])
    try:
        p = portico(comp_config(up.addr))
        s, head, cr = stream_get(p.port, coding)
        assert "Content-Encoding: %s" % coding in head, head
        dec = StreamDecoder(coding)
        got = b""
        deadline = time.monotonic() + 15
        # the upstream still holds part2: decode what has arrived
        while len(got) < 200000 and time.monotonic() < deadline:
            assert cr.read_some()
            got += dec.feed(cr.pieces())
        assert not up.release.is_set() and not up.finished.is_set()
        assert len(got) >= 200000, "only %d bytes decodable while the upstream waits" % len(got)
        assert part1.startswith(got)
        up.release.set()
        while not cr.done:
            assert cr.read_some(1.0), "connection closed early"
            got += dec.feed(cr.pieces())
        assert got == part1 + part2
        s.close()
    finally:
        up.close()


@pytest.mark.parametrize("coding", CODINGS)
def test_event_stream_flushed_every_piece(portico, coding):
    ev1 = b"event: tick\ndata: {\"n\": 1}\n\n"
    ev2 = b"event: tick\ndata: {\"n\": 2}\n\n"
    up = HeldUpstream(b"text/event-stream", [ev1], [ev2])
    try:
        p = portico(comp_config(up.addr))
        s, head, cr = stream_get(p.port, coding)
        assert "Content-Encoding: %s" % coding in head, head
        dec = StreamDecoder(coding)
        got = b""
        deadline = time.monotonic() + 10
        while got != ev1 and time.monotonic() < deadline:
            assert cr.read_some()
            got += dec.feed(cr.pieces())
        assert got == ev1, "event 1 held back in the compressor: %r" % got
        assert not up.release.is_set()
        up.release.set()
        while not cr.done:
            assert cr.read_some(1.0)
            got += dec.feed(cr.pieces())
        assert got == ev1 + ev2
        s.close()
    finally:
        up.close()


def test_event_stream_flushed_over_h2(portico):
    ev1 = b"data: one\n\n"
    up = HeldUpstream(b"text/event-stream", [ev1], [b"data: two\n\n"])
    try:
        p = portico(comp_config(up.addr))
        h = H2(p.port)
        h.c.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "t"), (":path", "/s"),
                             ("accept-encoding", "gzip")], end_stream=True)
        h.flush()

        def first_event_decodable():
            data = h.st(1)["data"]
            return bool(data) and StreamDecoder("gzip").feed(data) == ev1

        assert h.wait(first_event_decodable, 10), h.st(1)
        assert not up.release.is_set()
        assert h.st(1)["headers"][b"content-encoding"] == b"gzip"
        up.release.set()
        assert h.wait(lambda: h.st(1)["ended"], 10)
        assert decode("gzip", h.st(1)["data"]) == b"data: one\n\ndata: two\n\n"
        h.close()
    finally:
        up.close()


# ---------------------------------------------------------------------------
# Request bodies
# ---------------------------------------------------------------------------

DECOMPRESS = {"request": {"decompress": True}}


@pytest.mark.parametrize("coding,header", [
    ("gzip", "gzip"), ("gzip", "x-gzip"), ("deflate", "deflate"), ("deflate-raw", "deflate"),
    ("br", "br"), ("zstd", "zstd"), ("gzip", "identity, GZIP"),
])
def test_request_body_decompressed(portico, echo, coding, header):
    body = text_body(300000, seed=9)
    p = portico(comp_config(echo.addr, DECOMPRESS))
    wire = encode(coding, body)
    r = request(p.port, "POST", "/up", [("Content-Encoding", header), ("Content-Type", "application/json"),
                                         ("Content-Digest", "sha-256=:x:")], wire)
    assert r.status == 200, r
    got = echo.last()
    assert got.body == body
    assert got.header("Content-Encoding") is None
    assert got.header("Content-Digest") is None
    assert got.header("Content-Length") is None and got.framing == "chunked"
    assert got.header("Content-Type") == "application/json"


def test_request_body_chunked_upload_in_small_pieces(portico, echo):
    body = text_body(200000, seed=2)
    wire = zstandard.ZstdCompressor().compress(body)
    p = portico(comp_config(echo.addr, DECOMPRESS))
    with Client(p.port) as c:
        c.send(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Encoding: zstd\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(wire), 999):
            piece = wire[i:i + 999]
            c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        c.send(b"0\r\n\r\n")
        r = c.read_response()
    assert r.status == 200
    assert echo.last().body == body


def test_request_decompression_off_by_default(portico, echo):
    wire = gzip.compress(b"hello" * 1000)
    p = portico(comp_config(echo.addr))
    r = request(p.port, "POST", "/", [("Content-Encoding", "gzip")], wire)
    assert r.status == 200
    got = echo.last()
    assert got.body == wire and got.header("Content-Encoding") == "gzip"
    assert got.header("Content-Length") == str(len(wire))


def test_request_without_content_encoding_untouched(portico, echo):
    p = portico(comp_config(echo.addr, DECOMPRESS))
    r = request(p.port, "POST", "/", [], b"plain body")
    assert r.status == 200
    got = echo.last()
    assert got.body == b"plain body" and got.header("Content-Length") == "10"


@pytest.mark.parametrize("header", ["compress", "gzip, br", "br, identity, zstd", "lz4"])
def test_request_unsupported_coding_415(portico, echo, header):
    p = portico(comp_config(echo.addr, DECOMPRESS))
    r = request(p.port, "POST", "/", [("Content-Encoding", header)], b"whatever")
    problem_check(r, 415)
    assert r.header("Accept-Encoding") == "gzip, deflate, br, zstd"
    time.sleep(0.2)
    assert echo.requests == []


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_request_malformed_400(portico, echo, coding):
    p = portico(comp_config(echo.addr, DECOMPRESS))
    r = request(p.port, "POST", "/", [("Content-Encoding", coding)], b"this is not compressed at all" * 10)
    problem_check(r, 400)
    # truncated
    wire = encode(coding, text_body(50000))
    r = request(p.port, "POST", "/", [("Content-Encoding", coding)], wire[:len(wire) // 2])
    problem_check(r, 400)
    assert echo.requests == []


def vm_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(field)


def is_sanitized(binary):
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


def test_gzip_bomb_413_with_bounded_memory(portico, echo):
    bomb = gzip_bomb()
    assert len(bomb) < 11000
    p = portico(comp_config(echo.addr, DECOMPRESS))
    # warm up (arena, buffers, the worker's scratch) with a legit body
    ok = text_body(100000)
    assert request(p.port, "POST", "/", [("Content-Encoding", "gzip")], gzip.compress(ok)).status == 200
    base = vm_kib(p.proc.pid, "VmHWM")
    for i in range(20):
        r = request(p.port, "POST", "/", [("Content-Encoding", "gzip")], bomb)
        doc = problem_check(r, 413)
        assert "max_ratio" in doc["detail"]
    grown = vm_kib(p.proc.pid, "VmHWM") - base
    if not is_sanitized(BIN):
        # 10 MiB of zeros inflate to at most ~1 MiB here (ratio 100) + one 64 KiB step
        assert grown < 8 * 1024, "peak RSS grew by %d KiB" % grown
    assert all(len(rq.body) < (2 << 20) for rq in echo.requests[1:])


def h2_post(h, sid, path, body, headers=()):
    """Sends a POST on stream `sid` of H2 client `h`, its body in frames
    within the peer's frame size and flow-control windows."""
    h.c.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", "t"), (":path", path)]
                     + list(headers))
    h.flush()
    off = 0
    while off < len(body):
        room = min(h.c.local_flow_control_window(sid), h.c.max_outbound_frame_size)
        if room <= 0:
            h.pump(0.05)
            continue
        piece = body[off:off + room]
        off += len(piece)
        h.c.send_data(sid, piece, end_stream=off == len(body))
        h.flush()
    if not body:
        h.c.end_stream(sid)
        h.flush()


@pytest.mark.parametrize("body,status", [(gzip_bomb(), 413), (b"not gzip at all" * 10, 400)])
def test_h2_request_refused_mid_body(portico, echo, body, status):
    p = portico(comp_config(echo.addr, DECOMPRESS))
    h = H2(p.port)
    try:
        h2_post(h, 1, "/", body, [("content-encoding", "gzip")])
        assert h.wait(lambda: h.status(1) is not None and (h.st(1)["ended"] or h.st(1)["reset"] is not None), 10)
        assert h.status(1) == status
    finally:
        h.close()


def test_bomb_stopped_by_max_size(portico, echo):
    p = portico(comp_config(echo.addr, {"request": {"decompress": True, "max_size": "1m", "max_ratio": 100000}}))
    r = request(p.port, "POST", "/", [("Content-Encoding", "br")], brotli.compress(b"\0" * (50 << 20)))
    doc = problem_check(r, 413)
    assert "max_size" in doc["detail"]
    # a legit body just under the limit passes
    body = text_body((1 << 20) - 10)
    r = request(p.port, "POST", "/", [("Content-Encoding", "br")], brotli.compress(body))
    assert r.status == 200 and echo.last().body == body


def test_h2_request_decompressed(portico, echo):
    body = text_body(100000)
    p = portico(comp_config(echo.addr, DECOMPRESS))
    h = H2(p.port)
    try:
        h2_post(h, 1, "/up", gzip.compress(body), [("content-encoding", "gzip")])
        assert h.wait(lambda: h.st(1)["ended"], 10)
        assert h.status(1) == 200
        got = echo.last()
        assert got.body == body and got.header("Content-Encoding") is None
    finally:
        h.close()


# ---------------------------------------------------------------------------
# Clients that leave mid-body: codec states freed (LeakSanitizer at teardown)
# ---------------------------------------------------------------------------

def test_client_aborts_mid_response_and_mid_request(portico):
    part1 = text_body(300000)
    up = HeldUpstream(b"application/json", [part1[i:i + 16384] for i in range(0, len(part1), 16384)], [b"x"])
    try:
        p = portico(comp_config(up.addr, DECOMPRESS))
        for coding in CODINGS:
            s, head, cr = stream_get(p.port, coding)
            assert "Content-Encoding: %s" % coding in head
            cr.read_some()
            rst_close(s)
        # HTTP/2: reset the stream mid-response
        h = H2(p.port)
        h.c.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "t"), (":path", "/s"),
                             ("accept-encoding", "br")], end_stream=True)
        h.flush()
        assert h.wait(lambda: len(h.st(1)["data"]) > 0, 10)
        h.c.reset_stream(1)
        h.flush()
        h.close()
        # a request body cut in the middle of its compressed stream
        for coding in ("gzip", "br", "zstd"):
            wire = encode(coding, text_body(200000))
            s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
            s.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n"
                      % (coding.encode(), len(wire)) + wire[:len(wire) // 2])
            time.sleep(0.2)
            rst_close(s)
        up.release.set()
        time.sleep(0.5)
        assert p.alive()
    finally:
        up.close()


def test_upstream_failing_after_its_head(portico, raw_server):
    """The upstream sends a compressible head, then dies: the response the
    plugin set up is retracted (502) or cut; no codec state leaks (the
    ASan binary's leak check at teardown)."""
    def serve(s, n):
        recv_head(s)
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500000\r\n\r\n"
                  + (BIG[:1000] if n % 2 else b""))
        time.sleep(0.1)
        rst_close(s)
    srv = raw_server(serve)
    p = portico(comp_config(srv.addr))
    for i in range(4):
        s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        s.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n")
        data = b""
        while True:
            try:
                d = s.recv(65536)
            except ConnectionResetError:
                break
            if not d:
                break
            data += d
        s.close()
        head = data.split(b"\r\n\r\n", 1)[0]
        assert head.startswith(b"HTTP/1.1 502") or b"Content-Encoding: gzip" in head, head
    assert p.alive()


# ---------------------------------------------------------------------------
# Configuration errors
# ---------------------------------------------------------------------------

def test_config_errors_have_positions(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("""listen: ["127.0.0.1:1"]
upstreams:
  up: {targets: ["127.0.0.1:2"]}
plugins:
  - compression:
      algorithms: [br, lzma]
      gzip: {level: 10}
      types: [text]
routes:
  - match: {path_prefix: /}
    upstream: up
""")
    res = subprocess.run([BIN, "check", "-c", str(cfg)], capture_output=True, timeout=20)
    out = res.stdout.decode() + res.stderr.decode()
    assert res.returncode != 0, out
    assert "c.yaml:6:24: compression.algorithms: unknown algorithm \"lzma\"" in out, out
    assert "c.yaml:7:21: compression.gzip.level: must be 1..9 (got 10)" in out, out
    assert "c.yaml:8:15: compression.types: invalid media type \"text\"" in out, out


# ---------------------------------------------------------------------------
# Metrics (docs/metrics.md): portico_compression_*_total{encoding}
# ---------------------------------------------------------------------------

def test_metrics_count_responses_and_bytes_by_encoding(portico, routes):
    from test_admin_metrics import admin_cfg, scrape, value, wait_ready
    small = text_body(100)
    routes.add("/j", headers=JSON, body=BIG)
    routes.add("/c", headers=JSON, body=BIG, framing="chunked")
    routes.add("/small", headers=JSON, body=small)
    # A global instance and a second one on another route: one family each,
    # one shared series.
    cfg = comp_config(routes.up.addr)
    cfg["routes"].insert(0, {"name": "other", "match": {"path_prefix": "/other"}, "upstream": "up",
                             "plugins": [{"compression": {"algorithms": ["gzip"]}}]})
    cfg["plugins"] = []
    cfg["routes"][1]["plugins"] = [{"compression": {}}]
    routes.add("/other", headers=JSON, body=BIG)
    cfg, aport = admin_cfg(cfg)
    p = portico(cfg)
    wait_ready(aport)
    want = {c: {"responses": 0, "in": 0, "out": 0} for c in CODINGS}
    for coding, path, n in (("gzip", "/j", 2), ("br", "/c", 1), ("zstd", "/j", 3), ("gzip", "/other", 1)):
        for _ in range(n):
            r = get(p.port, path, coding)
            assert r.header("Content-Encoding") == coding
            assert decode(coding, r.body) == BIG
            want[coding]["responses"] += 1
            want[coding]["in"] += len(BIG)
            want[coding]["out"] += len(r.body)
    # Not compressed: below min_size, identity asked for.
    assert get(p.port, "/small", "gzip").header("Content-Encoding") is None
    assert get(p.port, "/j", "identity").header("Content-Encoding") is None

    s = scrape(aport)
    for fam in ("responses", "input_bytes", "output_bytes"):
        assert s["__types__"]["portico_compression_" + fam] == "counter"
    got = {c: {"responses": value(s, "portico_compression_responses_total", encoding=c),
               "in": value(s, "portico_compression_input_bytes_total", encoding=c),
               "out": value(s, "portico_compression_output_bytes_total", encoding=c)} for c in CODINGS}
    assert got == want
    assert len(s["portico_compression_responses_total"]) == 3  # one sample per coding, no other labels
