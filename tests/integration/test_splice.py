"""splice(2) for bulk HTTP/1 bodies (limits.splice, docs/performance.md
"splice(2) for bulk bodies"): large Content-Length bodies between plain
sockets move through a pipe instead of user space — byte-exact, counted
like copied bytes, never for bodies a plugin sees or TLS/chunked ones, and
every failure of a peer mid-body ends the way it does on the copy path."""

import hashlib
import json
import os
import signal
import subprocess
import socket
import time

from conftest import simple_config
from test_admin_metrics import admin_cfg, poll, scrape, value
from tlsutil import client_ctx, pki, tls_connect, tls_listen, tls_upstream, up_tls_config  # noqa: F401 (fixtures)
from upstreams import CLOSE, HANG, Client, ConnReader, build_request, chunked, read_response, recv_head, request

BIG = 8 << 20
MB = 1 << 20


def spliced(aport, direction):
    return value(scrape(aport), "portico_spliced_bytes_total", direction=direction)


def sha(b):
    return hashlib.sha256(b).hexdigest()


def big_handler(body):
    """GET: `body` with Content-Length; POST: the sha256 of the request body."""
    def handler(req):
        if req.method == "POST":
            d = sha(req.body).encode()
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(d), d)
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    return handler


def slow_download(port):
    """GET /big on a connection with a small receive window (a slow reader:
    the splice waits on the client); returns (socket, head, body bytes
    read so far)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.settimeout(30)
    s.connect(("127.0.0.1", port))
    s.sendall(build_request("GET", "/big"))
    head, got = recv_head(s)
    return s, head, got


def start(portico, upstream, body, handler=None, route_extra=None, upstream_extra=None, **top):
    up = upstream(handler or big_handler(body))
    cfg, aport = admin_cfg(simple_config(up.addr, route_extra=route_extra, upstream_extra=upstream_extra,
                                         workers=1, **top))
    return portico(cfg), aport, up


def fds(p):
    return len(os.listdir("/proc/%d/fd" % p.proc.pid))


def access(p, n):
    poll(lambda: len(p.access_lines()) >= n, msg="%d access-log lines" % n)
    return [json.loads(ln) for ln in p.access_lines()]


# ------------------------------------------------------------------ happy paths

def test_large_download_and_upload_are_spliced(portico, upstream):
    body = os.urandom(BIG)
    p, aport, up = start(portico, upstream, body)
    r = request(p.port, "GET", "/big", timeout=30)
    assert r.status == 200 and sha(r.body) == sha(body)
    n = spliced(aport, "response")
    assert BIG - MB <= n <= BIG, n  # all but what came with the head
    assert spliced(aport, "request") == 0
    r = request(p.port, "POST", "/up", body=body, timeout=30)
    assert r.status == 200 and r.body.decode() == sha(body)
    n = spliced(aport, "request")
    assert BIG - MB <= n <= BIG, n


def test_splice_off_copies_the_same_bytes_and_counts_the_same(portico, upstream):
    """limits.splice: false keeps the copy path: same bytes, no spliced
    bytes; the access log's and the metrics' byte counts equal those of the
    spliced run."""
    body = os.urandom(BIG)
    runs = {}
    for on in (True, False):
        p, aport, up = start(portico, upstream, body, limits={"splice": on})
        r = request(p.port, "GET", "/big", timeout=30)
        assert r.status == 200 and sha(r.body) == sha(body)
        r = request(p.port, "POST", "/up", body=body, timeout=30)
        assert r.status == 200 and r.body.decode() == sha(body)
        lines = access(p, 2)
        s = scrape(aport)
        runs[on] = ([(e["bytes_in"], e["bytes_out"]) for e in lines],
                    value(s, "portico_request_bytes_total"), value(s, "portico_response_bytes_total"),
                    value(s, "portico_spliced_bytes_total"))
        p.stop()
    assert runs[True][3] > 2 * (BIG - MB)
    assert runs[False][3] == 0
    assert runs[True][:3] == runs[False][:3], runs
    (get_in, get_out), (post_in, post_out) = runs[True][0]
    assert get_out > BIG and post_in > BIG


def test_small_bodies_are_not_spliced(portico, upstream):
    body = os.urandom(40 << 10)  # below limits.stream_buffer (64k)
    p, aport, up = start(portico, upstream, body)
    for _ in range(3):
        r = request(p.port, "GET", "/small")
        assert r.status == 200 and r.body == body
        r = request(p.port, "POST", "/small", body=body)
        assert r.body.decode() == sha(body)
    assert value(scrape(aport), "portico_spliced_bytes_total") == 0


def test_keep_alive_spliced_responses_and_pipelined_request_after_spliced_upload(portico, upstream):
    body = os.urandom(2 * MB)
    p, aport, up = start(portico, upstream, body)
    with Client(p.port, timeout=30) as c:
        for i in range(4):
            r = c.request("GET", "/big/%d" % i)
            assert r.status == 200 and sha(r.body) == sha(body), i
        # a spliced upload with the next request right behind its last byte
        c.send(build_request("POST", "/up", body=body) + build_request("GET", "/after"))
        r = c.read_response("POST")
        assert r.status == 200 and r.body.decode() == sha(body)
        r = c.read_response("GET")
        assert r.status == 200 and sha(r.body) == sha(body)
        r = c.request("POST", "/up2", body=body[:MB])
        assert r.body.decode() == sha(body[:MB])
    assert up.connections == 1  # one pooled upstream connection carried every exchange
    assert [q.target for q in up.requests] == ["/big/0", "/big/1", "/big/2", "/big/3", "/up", "/after", "/up2"]
    assert spliced(aport, "response") >= 5 * (2 * MB - MB)
    assert spliced(aport, "request") >= (2 * MB - MB) + MB // 2


def test_slow_reader_completes_byte_exact(portico, upstream):
    body = os.urandom(4 * MB)
    p, aport, up = start(portico, upstream, body)
    s, head, got = slow_download(p.port)
    assert b"Content-Length: %d" % len(body) in head
    got = bytearray(got)
    while len(got) < len(body):
        d = s.recv(32768)
        assert d, "closed after %d bytes" % len(got)
        got += d
        time.sleep(0.002)
    s.close()
    assert sha(bytes(got)) == sha(body)
    assert spliced(aport, "response") > 2 * MB


# ------------------------------------------------------- what is never spliced

def test_body_plugin_route_is_not_spliced(portico, upstream):
    """compression has body callbacks for both directions: its route copies
    (octet-stream is not compressed, so the bytes come out unchanged)."""
    body = os.urandom(BIG // 2)

    def handler(req):
        if req.method == "POST":
            d = sha(req.body).encode()
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(d), d)
        return (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
                % len(body) + body)

    p, aport, up = start(portico, upstream, body, handler=handler,
                         route_extra={"plugins": [{"compression": {}}]})
    r = request(p.port, "GET", "/big", headers={"Accept-Encoding": "gzip"}, timeout=30)
    assert r.status == 200 and sha(r.body) == sha(body)
    r = request(p.port, "POST", "/up", body=body, timeout=30)
    assert r.body.decode() == sha(body)
    assert value(scrape(aport), "portico_spliced_bytes_total") == 0


def test_chunked_upstream_response_and_chunked_upload_are_not_spliced(portico, upstream):
    body = os.urandom(BIG // 2)

    def handler(req):
        if req.method == "POST":
            d = sha(req.body).encode()
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(d), d)
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body)

    p, aport, up = start(portico, upstream, body, handler=handler)
    r = request(p.port, "GET", "/big", timeout=30)
    assert r.status == 200 and sha(r.body) == sha(body)
    r = request(p.port, "POST", "/up", body=body, chunked_body=True, timeout=30)
    assert r.body.decode() == sha(body)
    assert value(scrape(aport), "portico_spliced_bytes_total") == 0


def test_tls_listener_is_not_spliced(portico, upstream, pki):
    body = os.urandom(BIG // 2)
    up = upstream(big_handler(body))
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    lport = port.getsockname()[1]
    port.close()
    cfg, aport = admin_cfg(simple_config(up.addr, listen=tls_listen(lport, [pki["a"]])))
    p = portico(cfg, port=lport)
    s = tls_connect(lport, client_ctx(pki), "a.test", timeout=30)
    s.sendall(build_request("GET", "/big", host="a.test"))
    head, got = recv_head(s)
    while len(got) < len(body):
        d = s.recv(65536)
        assert d
        got += d
    s.close()
    assert sha(got) == sha(body)
    assert value(scrape(aport), "portico_spliced_bytes_total") == 0


def test_tls_upstream_is_not_spliced(portico, pki, tls_upstream):
    up = tls_upstream()
    cfg, aport = admin_cfg(up_tls_config(up.addr, ca=pki["ca"], sni="a.test"))
    p = portico(cfg)
    r = request(p.port, "GET", "/big", timeout=30)
    assert r.status == 200 and r.body == hashlib.sha256(b"seed").digest() * (3 << 15)
    assert value(scrape(aport), "portico_spliced_bytes_total") == 0


# ------------------------------------------------------------------ failures

def test_upstream_closing_mid_body_cuts_the_response_without_leaks(portico, upstream):
    """The upstream sends half of its Content-Length and closes: the client
    sees the connection close before the full length (never a complete
    response), Portico goes on serving, and no descriptor is left behind."""
    body = os.urandom(BIG)
    half = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:len(body) // 2]

    def handler(req):
        if req.target.startswith("/cut"):
            return [half, CLOSE]
        return big_handler(body)(req)

    p, aport, up = start(portico, upstream, body, handler=handler)
    r = request(p.port, "GET", "/big", timeout=30)  # warm: a pooled connection and a pooled pipe
    assert sha(r.body) == sha(body)
    time.sleep(0.2)
    base = fds(p)
    before = spliced(aport, "response")
    for i in range(4):
        s = socket.create_connection(("127.0.0.1", p.port), timeout=30)
        s.sendall(build_request("GET", "/cut/%d" % i))
        head, got = recv_head(s)
        assert head.startswith(b"HTTP/1.1 200")
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
        s.close()
        assert len(got) < len(body), i  # cut: the connection closed before the length
        assert got == body[:len(got)]
    assert spliced(aport, "response") > before  # the cut bodies were spliced
    r = request(p.port, "GET", "/big", timeout=30)
    assert r.status == 200 and sha(r.body) == sha(body)
    poll(lambda: fds(p) <= base, msg="descriptors back to %d (now %d)" % (base, fds(p)))
    lines = access(p, 6)
    assert [e.get("aborted") for e in lines[1:5]] == [True] * 4


def test_client_leaving_mid_download_and_mid_upload(portico, upstream):
    body = os.urandom(BIG)
    p, aport, up = start(portico, upstream, body)
    r = request(p.port, "GET", "/big", timeout=30)
    assert sha(r.body) == sha(body)
    time.sleep(0.2)
    base = fds(p)
    for i in range(3):
        # download: take the head and some bytes, then reset
        s = socket.create_connection(("127.0.0.1", p.port), timeout=30)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        s.sendall(build_request("GET", "/big/%d" % i))
        head, got = recv_head(s)
        while len(got) < 2 * MB:
            got += s.recv(65536)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
        # upload: head and part of the body, then a plain close
        s = socket.create_connection(("127.0.0.1", p.port), timeout=30)
        req = build_request("POST", "/up/%d" % i, body=body)
        s.sendall(req[:len(req) // 2])
        time.sleep(0.1)
        s.close()
    time.sleep(0.3)
    assert p.alive()
    # the next requests are answered correctly (no dirty upstream connection reused)
    for _ in range(2):
        r = request(p.port, "GET", "/big", timeout=30)
        assert r.status == 200 and sha(r.body) == sha(body)
        r = request(p.port, "POST", "/up", body=body, timeout=30)
        assert r.status == 200 and r.body.decode() == sha(body)
    assert spliced(aport, "request") > 0
    poll(lambda: fds(p) <= base, msg="descriptors back to %d (now %d)" % (base, fds(p)))
    statuses = [e["status"] for e in access(p, 11)]
    assert statuses.count(499) >= 3  # the uploads cut before their end


def test_upstream_read_timeout_fires_while_splicing(portico, upstream):
    body = os.urandom(BIG)

    def handler(req):
        return [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:2 * MB], HANG]

    p, aport, up = start(portico, upstream, body, handler=handler, upstream_extra={"read_timeout": "1s"})
    s = socket.create_connection(("127.0.0.1", p.port), timeout=30)
    s.sendall(build_request("GET", "/stall"))
    head, got = recv_head(s)
    t0 = time.monotonic()
    while True:
        d = s.recv(65536)
        if not d:
            break
        got += d
    assert len(got) < len(body) and time.monotonic() - t0 < 20
    s.close()
    assert spliced(aport, "response") > 0
    e = access(p, 1)[0]
    assert e["aborted"] is True


def test_request_body_timeout_fires_while_splicing(portico, upstream):
    body = os.urandom(BIG)
    p, aport, up = start(portico, upstream, body, timeouts={"body": "1s"})
    s = socket.create_connection(("127.0.0.1", p.port), timeout=30)
    req = build_request("POST", "/up", body=body)
    s.sendall(req[:len(req) - len(body) + 2 * MB])  # head and 2 MiB, then nothing
    r = read_response(ConnReader(s))
    assert r.status == 408, r
    s.close()
    assert spliced(aport, "request") > 0


def test_drain_and_reload_while_a_body_is_spliced(portico, upstream):
    """A reload and then a drain (SIGTERM) come while a download is being
    spliced to a slow client: it completes byte-exact, then Portico exits."""
    body = os.urandom(4 * MB)
    p, aport, up = start(portico, upstream, body, timeouts={"shutdown": "20s"})
    s, head, got = slow_download(p.port)
    got = bytearray(got)
    sent = {"hup": False, "term": False}
    while len(got) < len(body):
        d = s.recv(32768)
        assert d, "closed after %d bytes" % len(got)
        got += d
        if len(got) > MB and not sent["hup"]:
            p.signal(signal.SIGHUP)
            sent["hup"] = True
        if len(got) > 2 * MB and not sent["term"]:
            p.signal(signal.SIGTERM)
            sent["term"] = True
        time.sleep(0.002)
    assert sha(bytes(got)) == sha(body)
    assert s.recv(10) == b""  # closed after the response (draining)
    s.close()
    assert p.wait_exit() == 0


def test_bytes_behind_a_spliced_response_keep_its_connection_out_of_the_pool(portico, upstream):
    """An upstream that writes more than its Content-Length (here a whole
    forged second response): the splice takes exactly the length, and the
    connection, with bytes still unread in its socket, is never pooled —
    the next request gets a new connection and its own answer."""
    body = os.urandom(2 * MB)
    forged = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"

    def handler(req):
        if req.target == "/junk":
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body + forged
        return b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal"

    p, aport, up = start(portico, upstream, body, handler=handler)
    with Client(p.port, timeout=30) as c:
        # pipelined: the next request is served right after the spliced
        # response ends, before the loop could notice the bytes behind it
        c.send(build_request("GET", "/junk") + build_request("GET", "/next/p"))
        r = c.read_response()
        assert r.status == 200 and sha(r.body) == sha(body)
        r = c.read_response()
        assert r.status == 200 and r.body == b"real", r
        for i in range(3):
            r = c.request("GET", "/next/%d" % i)
            assert r.status == 200 and r.body == b"real", r
    assert spliced(aport, "response") > MB
    assert up.connections >= 2


def test_http2_client_is_not_spliced(portico, upstream, tmp_path):
    body = os.urandom(BIG // 2)
    p, aport, up = start(portico, upstream, body)
    out = tmp_path / "dl.bin"
    r = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", str(out), "-w", "%{http_code} %{http_version}",
                        "http://127.0.0.1:%d/big" % p.port], capture_output=True, timeout=60)
    assert r.stdout == b"200 2", r
    assert sha(out.read_bytes()) == sha(body)
    assert value(scrape(aport), "portico_spliced_bytes_total") == 0


def test_upload_kept_for_retries_is_not_spliced(portico, upstream):
    """A retry policy that keeps the whole body for a re-send
    (retries.body_buffer above its size) keeps the copy path; the default
    (64k) lets the rest of a large body be spliced."""
    body = os.urandom(4 * MB)
    p, aport, up = start(portico, upstream, body,
                         route_extra={"retries": {"attempts": 2, "on": ["connect_failure"], "body_buffer": "16m"}})
    r = request(p.port, "POST", "/up", body=body, timeout=30)
    assert r.status == 200 and r.body.decode() == sha(body)
    assert spliced(aport, "request") == 0


def test_upstream_answering_early_during_a_spliced_upload(portico, raw_server, upstream):
    """The upstream reads 1 MiB of an 8 MiB upload, answers 413 and closes:
    the client gets that answer (or a 502 when the upstream's reset came
    first), Portico goes on, and no descriptor is left behind."""
    body = os.urandom(BIG)

    def serve(s, n):
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        if b"POST" not in buf.split(b"\r\n", 1)[0]:
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            s.close()
            return
        got = len(buf.split(b"\r\n\r\n", 1)[1])
        while got < MB:
            d = s.recv(65536)
            if not d:
                return
            got += len(d)
        s.sendall(b"HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbig")
        s.shutdown(socket.SHUT_WR)
        time.sleep(0.2)
        s.close()

    srv = raw_server(serve, ignore=(OSError,))
    cfg, aport = admin_cfg(simple_config(srv.addr, workers=1))
    p = portico(cfg)
    assert request(p.port, "GET", "/warm").body == b"ok"
    time.sleep(0.2)
    base = fds(p)
    statuses = []
    for i in range(3):
        s = socket.create_connection(("127.0.0.1", p.port), timeout=30)
        req = build_request("POST", "/up/%d" % i, body=body)
        try:
            s.sendall(req)
        except OSError:
            pass  # Portico closed after answering: the rest of the body was not wanted
        try:
            r = read_response(ConnReader(s))
            statuses.append(r.status)
        except Exception:  # noqa: BLE001 — a reset before the answer could be read
            statuses.append(None)
        s.close()
    assert all(st in (413, 502, None) for st in statuses), statuses
    assert 413 in statuses or 502 in statuses, statuses
    assert spliced(aport, "request") > 0
    assert request(p.port, "GET", "/after").body == b"ok"
    poll(lambda: fds(p) <= base, msg="descriptors back to %d (now %d)" % (base, fds(p)))


def test_shutdown_timeout_closes_a_splice_to_a_stalled_client(portico, upstream):
    """A client that stops reading in the middle of a spliced download does
    not hold the drain past timeouts.shutdown: Portico closes it and exits
    cleanly (exit 0, no leak report: the pipe and the pool are closed)."""
    body = os.urandom(BIG)
    p, aport, up = start(portico, upstream, body, timeouts={"shutdown": "1s"})
    s, head, got = slow_download(p.port)
    while len(got) < MB:
        got += s.recv(65536)
    poll(lambda: spliced(aport, "response") > 0, msg="the download is spliced")
    t0 = time.monotonic()
    p.signal(signal.SIGTERM)
    assert p.wait_exit() == 0
    assert time.monotonic() - t0 < 10
    s.close()


def test_no_pipe_falls_back_to_copying(portico, upstream):
    """When pipe2 fails (EMFILE: the descriptor limit leaves room for the
    two sockets only) the body is copied, byte-exact, and the error log
    says why."""
    import resource
    body = os.urandom(4 * MB)
    p, aport, up = start(portico, upstream, body)
    pid = p.proc.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (fds(p) + 3, hard))  # the client and the upstream socket, + 1
    try:
        r = request(p.port, "GET", "/big", timeout=30)
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    assert r.status == 200 and sha(r.body) == sha(body)
    assert spliced(aport, "response") == 0
    poll(lambda: "kind=splice_pipe" in p.stderr(), msg="the error log names the missing pipe")
    assert "no pipe for splice(2) (Too many open files): the body is copied" in p.stderr()
    # with descriptors again, the next one is spliced
    r = request(p.port, "GET", "/big", timeout=30)
    assert sha(r.body) == sha(body) and spliced(aport, "response") > MB


def test_http2_upstream_is_not_spliced(portico):
    from h2util import H2Upstream
    body = os.urandom(2 * MB)

    def respond(rec):
        if rec["body"]:
            d = sha(bytes(rec["body"])).encode()
            return [(":status", "200"), ("content-length", str(len(d)))], d
        return [(":status", "200"), ("content-length", str(len(body)))], body

    up = H2Upstream(respond)
    try:
        cfg, aport = admin_cfg(simple_config(up.addr, upstream_extra={"protocol": "h2c"}))
        p = portico(cfg)
        r = request(p.port, "GET", "/big", timeout=30)
        assert r.status == 200 and sha(r.body) == sha(body)
        r = request(p.port, "POST", "/up", body=body, timeout=30)
        assert r.status == 200 and r.body.decode() == sha(body)
        assert value(scrape(aport), "portico_spliced_bytes_total") == 0
    finally:
        up.close()


def test_concurrent_spliced_bodies_do_not_mix(portico, upstream):
    """Many downloads and uploads at once on one worker (bodies that differ
    per request), with small requests between them: every body arrives
    intact and the pipes never carry one body's bytes into another."""
    import threading
    bodies = [os.urandom(MB + 4099 * i) for i in range(6)]

    def handler(req):
        if req.method == "POST":
            d = sha(req.body).encode()
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(d), d)
        if req.target.startswith("/small"):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsmall"
        b = bodies[int(req.target.rsplit("/", 1)[1])]
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(b) + b

    p, aport, up = start(portico, upstream, None, handler=handler)
    errors = []

    def client(k):
        try:
            with Client(p.port, timeout=60) as c:
                for j in range(4):
                    i = (k + j) % len(bodies)
                    r = c.request("GET", "/big/%d" % i)
                    if r.status != 200 or sha(r.body) != sha(bodies[i]):
                        errors.append(("get", k, j, r.status, len(r.body)))
                    r = c.request("POST", "/up", body=bodies[(i + 1) % len(bodies)])
                    if r.body.decode() != sha(bodies[(i + 1) % len(bodies)]):
                        errors.append(("post", k, j))
                    r = c.request("GET", "/small")
                    if r.body != b"small":
                        errors.append(("small", k, j))
        except Exception as e:  # noqa: BLE001
            errors.append(("exc", k, repr(e)))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(up.requests) == 8 * 4 * 3
    assert spliced(aport, "response") > 16 * MB and spliced(aport, "request") > 16 * MB
    # pooled pipes are bounded (16) and each costs two descriptors
    assert fds(p) < 100


# ------------------------------------------------------------- review additions

def test_expect_continue_upload_is_spliced(portico, upstream):
    """A client that waits for 100 Continue before its body gets it, and the
    body then goes through the pipe byte-exact."""
    body = os.urandom(BIG)
    p, aport, up = start(portico, upstream, body)
    s = socket.create_connection(("127.0.0.1", p.port), timeout=30)
    s.sendall(build_request("POST", "/up", headers={"Expect": "100-continue", "Content-Length": str(len(body))}))
    rd = ConnReader(s)
    assert rd.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 100")
    s.sendall(body)
    r = read_response(rd, "POST")
    assert r.status == 200 and r.body.decode() == sha(body)
    s.close()
    assert spliced(aport, "request") >= BIG - MB


def test_requests_pipelined_behind_a_spliced_download(portico, upstream):
    """A HEAD and a GET sent with a spliced GET in one write: each answer is
    framed right (the HEAD's has no body, none of the pipe's bytes leak)."""
    body = os.urandom(BIG)
    p, aport, up = start(portico, upstream, body)
    with Client(p.port, timeout=30) as c:
        c.send(build_request("GET", "/a") + build_request("HEAD", "/h") + build_request("GET", "/b"))
        r = c.read_response("GET")
        assert r.status == 200 and sha(r.body) == sha(body)
        r = c.read_response("HEAD")
        assert r.status == 200 and r.body == b""
        r = c.read_response("GET")
        assert r.status == 200 and sha(r.body) == sha(body)
    assert spliced(aport, "response") >= 2 * (BIG - MB)


def test_upstream_write_timeout_fires_while_splicing_an_upload(portico, raw_server):
    """An upstream that stops reading a spliced upload: its write_timeout
    ends the exchange with 504."""
    import threading
    body = os.urandom(BIG)
    release = threading.Event()

    def serve(s, n):
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        got = len(buf.split(b"\r\n\r\n", 1)[1])
        while got < 2 * MB:
            got += len(s.recv(65536))
        release.wait(20)  # stops reading

    srv = raw_server(serve, ignore=(OSError,))
    cfg, aport = admin_cfg(simple_config(srv.addr, workers=1,
                                         upstream_extra={"write_timeout": "1s", "read_timeout": "30s"}))
    p = portico(cfg)
    s = socket.create_connection(("127.0.0.1", p.port), timeout=30)
    req = build_request("POST", "/up", body=body)
    def send():
        try:
            s.sendall(req)
        except OSError:
            pass  # Portico closed after answering
    threading.Thread(target=send, daemon=True).start()
    try:
        r = read_response(ConnReader(s), "POST")
    finally:
        release.set()
    assert r.status == 504, r
    assert spliced(aport, "request") > 0
    s.close()


def test_early_keep_alive_answer_then_pipelined_request(portico, raw_server):
    """The upstream answers a spliced upload after 1 MiB, keep-alive, then
    reads the rest: the request pipelined behind the upload is served, with
    and without splice."""
    body = os.urandom(MB + MB // 2)

    def serve(s, n):
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                d = s.recv(65536)
                if not d:
                    return
                buf += d
            head, buf = buf.split(b"\r\n\r\n", 1)
            if not head.startswith(b"POST"):
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nafter")
                continue
            got = len(buf)
            while got < MB:
                d = s.recv(65536)
                if not d:
                    return
                got += len(d)
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly")
            while got < len(body):  # the rest of the body, then the next request
                d = s.recv(min(65536, len(body) - got))
                if not d:
                    return
                got += len(d)
            buf = b""

    srv = raw_server(serve, ignore=(OSError,))
    for on in (True, False):
        cfg, aport = admin_cfg(simple_config(srv.addr, workers=1, limits={"splice": on}))
        p = portico(cfg)
        with Client(p.port, timeout=30) as c:
            c.send(build_request("POST", "/up", body=body) + build_request("GET", "/after"))
            r = c.read_response("POST")
            assert r.status == 200 and r.body == b"early"
            r = c.read_response("GET")
            assert r.status == 200 and r.body == b"after"
        assert (spliced(aport, "request") > 0) == on
        p.stop()
