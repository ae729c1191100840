"""Admin listener: /metrics parsed with the real Prometheus text parser
(python3-prometheus-client), /healthz, /readyz (also while draining), the
bearer token, limits, the proxy listeners never reaching admin, reload
counts, and counts that match a known mix of requests."""

import os
import signal
import socket
import subprocess
import threading
import time

import h2.events
from prometheus_client.parser import text_string_to_metric_families

from conftest import BIN, free_port, simple_config
from h2util import h2_connect, h2_head, h2_read_until
from upstreams import Client, problem_check, request

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


# ---------------------------------------------------------------- helpers

def admin_cfg(cfg, token=None):
    port = free_port()
    cfg = dict(cfg)
    cfg["admin"] = {"listen": "127.0.0.1:%d" % port}
    if token:
        cfg["admin"]["token"] = token
    return cfg, port


def scrape(aport, token=None):
    """GET /metrics; returns {sample name: [(labels, value)]} after parsing
    the whole text with prometheus_client (which rejects malformed text)."""
    headers = {"Authorization": "Bearer " + token} if token else None
    r = request(aport, "GET", "/metrics", headers=headers)
    assert r.status == 200, r
    assert r.header("Content-Type") == CONTENT_TYPE
    assert r.header("Connection") == "close"
    samples = {}
    types = {}
    for fam in text_string_to_metric_families(r.body.decode("utf-8")):
        types[fam.name] = fam.type
        for s in fam.samples:
            samples.setdefault(s.name, []).append((dict(s.labels), s.value))
    samples["__types__"] = types
    return samples


def value(samples, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(v for l, v in samples.get(name, []) if all(l.get(k) == x for k, x in labels.items()))


def poll(fn, timeout=5, msg="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError("%s not reached within %ss (last: %r)" % (msg, timeout, last))


def wait_ready(aport):
    """/readyz turns 200 just after the workers start, which can be a moment
    after the proxy port accepts connections (the fixture's readiness probe)."""
    poll(lambda: request(aport, "GET", "/readyz").status == 200, msg="/readyz 200")


def check_histogram(samples, name, route):
    """Buckets cumulative and monotonic, +Inf == _count; returns _count."""
    buckets = sorted(((float(l["le"]), v) for l, v in samples.get(name + "_bucket", []) if l.get("route") == route))
    assert buckets, "no buckets for %s{route=%r}" % (name, route)
    les = [le for le, _ in buckets]
    assert les[-1] == float("inf")
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), "buckets not monotonic: %r" % buckets
    count = value(samples, name + "_count", route=route)
    assert counts[-1] == count
    assert value(samples, name + "_sum", route=route) >= 0
    return count


# ------------------------------------------------------------------ tests

def test_counts_match_a_known_mix_of_requests(portico, echo):
    dead = "127.0.0.1:%d" % free_port()  # nothing listens there
    cfg = {
        "upstreams": {"up": {"targets": [echo.addr]}, "dead": {"targets": [dead]}},
        "routes": [
            {"name": "api", "match": {"path_prefix": "/api"}, "upstream": "up"},
            {"name": "local", "match": {"path": "/local"},
             "plugins": [{"direct_response": {"status": 201, "body": "made"}}]},
            {"name": "down", "match": {"path": "/down"}, "upstream": "dead"},
        ],
    }
    cfg, aport = admin_cfg(cfg)
    p = portico(cfg)
    for i in range(5):
        assert request(p.port, "GET", "/api/x%d" % i).status == 200
    for _ in range(2):
        assert request(p.port, "POST", "/api/post", body=b"hello").status == 200
    for _ in range(3):
        assert request(p.port, "GET", "/local").status == 201
    for _ in range(4):
        assert request(p.port, "GET", "/nowhere").status == 404
    for _ in range(2):
        assert request(p.port, "GET", "/down").status == 502
    assert request(p.port, "FOO", "/api/ext").status == 200  # an extension method

    def settled():
        s = scrape(aport)
        return s if value(s, "portico_requests_total") == 17 else None
    s = poll(settled, msg="17 requests counted")
    assert s["__types__"]["portico_requests"] == "counter"
    assert s["__types__"]["portico_request_duration_seconds"] == "histogram"
    rq = "portico_requests_total"
    assert value(s, rq, route="api", method="GET", status_class="2xx") == 5
    assert value(s, rq, route="api", method="POST", status_class="2xx") == 2
    assert value(s, rq, route="api", method="OTHER", status_class="2xx") == 1
    assert value(s, rq, route="local", method="GET", status_class="2xx") == 3
    assert value(s, rq, route="", method="GET", status_class="4xx") == 4  # unmatched: route=""
    assert value(s, rq, route="down", method="GET", status_class="5xx") == 2
    # only the standard methods + OTHER, only classes, never paths
    for labels, _ in s[rq]:
        assert labels["method"] in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
                                    "CONNECT", "OTHER")
        assert labels["status_class"] in ("1xx", "2xx", "3xx", "4xx", "5xx")
        assert labels["route"] in ("api", "local", "down", "")
    # histogram counts == request counts, per route
    for route, n in (("api", 8), ("local", 3), ("", 4), ("down", 2)):
        assert check_histogram(s, "portico_request_duration_seconds", route) == n
    assert check_histogram(s, "portico_upstream_duration_seconds", "api") == 8
    assert check_histogram(s, "portico_upstream_duration_seconds", "down") == 2
    assert not any(l.get("route") == "local" for l, _ in s.get("portico_upstream_duration_seconds_count", []))
    # upstream attempts and errors by upstream and target
    assert value(s, "portico_upstream_attempts_total", upstream="up", target=echo.addr) == 8
    assert value(s, "portico_upstream_errors_total", upstream="up", target=echo.addr) == 0
    assert value(s, "portico_upstream_attempts_total", upstream="dead", target=dead) >= 2
    assert value(s, "portico_upstream_errors_total", upstream="dead", target=dead) == 2
    # bytes
    assert value(s, "portico_request_bytes_total", route="api") > 2 * len(b"hello")
    assert value(s, "portico_response_bytes_total", route="local") >= 3 * len(b"made")
    # process-level series
    assert value(s, "portico_build_info") == 1
    assert s["portico_build_info"][0][0]["version"]
    assert value(s, "portico_config_generation") >= 1
    assert value(s, "portico_open_tunnels") == 0
    # 17 requests + the fixture's readiness probe(s)
    assert value(s, "portico_connections_total", listener="127.0.0.1:%d" % p.port) >= 17


def test_open_connections_gauge_with_idle_keepalive_clients(portico, echo):
    cfg, aport = admin_cfg(simple_config(echo.addr))
    p = portico(cfg)
    listener = "127.0.0.1:%d" % p.port
    clients = [Client(p.port) for _ in range(5)]
    try:
        for c in clients:
            assert c.request("GET", "/k").status == 200  # keep-alive: stays open, idle
        poll(lambda: value(scrape(aport), "portico_open_connections", listener=listener) == 5,
             msg="5 open connections")
    finally:
        for c in clients:
            c.close()
    poll(lambda: value(scrape(aport), "portico_open_connections", listener=listener) == 0,
         msg="0 open connections after the clients left")
    assert value(scrape(aport), "portico_connections_total", listener=listener) >= 5


def test_http2_streams_counted(portico, echo):
    cfg, aport = admin_cfg(simple_config(echo.addr))
    p = portico(cfg)
    listener = "127.0.0.1:%d" % p.port
    s, c = h2_connect(p.port)
    try:
        for sid in (1, 3, 5):
            c.send_headers(sid, h2_head("/h2", method="GET"), end_stream=True)
            s.sendall(c.data_to_send())
            _, ok = h2_read_until(s, c, lambda e, sid=sid: isinstance(e, h2.events.StreamEnded) and e.stream_id == sid)
            assert ok
        m = scrape(aport)
        assert value(m, "portico_http2_streams_total", listener=listener) == 3
        assert value(m, "portico_open_connections", listener=listener) == 1  # one connection, handed to h2
        assert value(m, "portico_requests_total", route="main", method="GET", status_class="2xx") == 3
    finally:
        s.close()
    poll(lambda: value(scrape(aport), "portico_open_connections", listener=listener) == 0, msg="h2 connection closed")
    assert value(scrape(aport), "portico_http2_open_streams", listener=listener) == 0


def test_token_required_and_accepted(portico, echo):
    token = "t0ken-" + os.urandom(8).hex()
    cfg, aport = admin_cfg(simple_config(echo.addr), token=token)
    p = portico(cfg)
    r = request(aport, "GET", "/metrics")
    assert r.status == 401
    assert r.header("WWW-Authenticate").startswith("Bearer")
    problem_check(r, 401)
    for bad in ("Bearer wrong", "Bearer " + token + "x", "Bearer " + token[:-1], "Basic " + token, token):
        r = request(aport, "GET", "/metrics", headers={"Authorization": bad})
        assert r.status == 401, bad
        assert "Bearer" in r.header("WWW-Authenticate")
    assert "portico_build_info" in scrape(aport, token)
    r = request(aport, "GET", "/metrics", headers={"Authorization": "bearer " + token})
    assert r.status == 200  # the scheme is case-insensitive
    # probes need no secret
    assert request(aport, "GET", "/healthz").status == 200
    wait_ready(aport)
    assert p.alive()


def test_admin_endpoints_and_strictness(portico, echo):
    cfg, aport = admin_cfg(simple_config(echo.addr))
    portico(cfg)
    r = request(aport, "GET", "/healthz")
    assert (r.status, r.body) == (200, b"ok\n")
    wait_ready(aport)
    r = request(aport, "GET", "/readyz")
    assert (r.status, r.body) == (200, b"ready\n")
    r = request(aport, "HEAD", "/metrics")
    assert r.status == 200 and r.body == b"" and int(r.header("Content-Length")) > 0
    r = request(aport, "POST", "/metrics", body=b"x")
    assert r.status == 405 and r.header("Allow") == "GET, HEAD"
    problem_check(r, 405)
    problem_check(request(aport, "GET", "/admin"), 404)
    problem_check(request(aport, "GET", "/metrics/../metrics"), 404)
    with Client(aport) as c:  # the strict parser: a bare LF is a 400
        c.send(b"GET /metrics HTTP/1.1\nHost: x\n\n")
        assert c.read_response().status == 400
    # at most 16 connections: the 17th is closed at once, then service resumes
    idle = [socket.create_connection(("127.0.0.1", aport)) for _ in range(16)]
    try:
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", aport))
        extra.settimeout(3)
        try:
            assert extra.recv(100) == b""
        except ConnectionResetError:
            pass
        extra.close()
    finally:
        for s in idle:
            s.close()

    def healthy():
        try:
            return request(aport, "GET", "/healthz").status == 200
        except Exception:  # closed at accept while the admin thread still counts the old ones
            return False
    poll(healthy, msg="admin serving again")


def test_admin_idle_connection_times_out(portico, echo):
    cfg, aport = admin_cfg(simple_config(echo.addr))
    portico(cfg)
    s = socket.create_connection(("127.0.0.1", aport))
    s.sendall(b"GET /metrics HTTP/1.1\r\n")  # never finishes the head
    s.settimeout(10)
    t0 = time.monotonic()
    try:
        assert s.recv(100) == b""
    except ConnectionResetError:
        pass
    assert 3 < time.monotonic() - t0 < 9
    s.close()


def test_admin_not_reachable_through_the_proxy(portico, echo):
    # a catch-all route: /metrics on the proxy port goes upstream, not to admin
    cfg, aport = admin_cfg(simple_config(echo.addr))
    p = portico(cfg)
    r = request(p.port, "GET", "/metrics")
    assert r.status == 200
    assert echo.last().path == "/metrics"
    assert b"portico_requests_total" not in r.body
    # without a matching route it is an ordinary 404 of the router
    cfg2, aport2 = admin_cfg({"routes": [{"name": "only", "match": {"path": "/only"},
                                          "plugins": [{"direct_response": {"status": 200}}]}]})
    p2 = portico(cfg2)
    for path in ("/metrics", "/healthz", "/readyz"):
        problem_check(request(p2.port, "GET", path), 404)
    s = poll(lambda: (lambda m: m if value(m, "portico_requests_total", route="") == 3 else None)(scrape(aport2)),
             msg="the 3 proxy requests counted as unmatched")
    assert value(s, "portico_requests_total", route="", status_class="4xx") == 3


def test_readyz_503_while_draining(portico, echo):
    cfg = simple_config(echo.addr, route_extra={"plugins": [{"delay": {"duration": "1500ms"}}]})
    cfg, aport = admin_cfg(cfg)
    p = portico(cfg)
    wait_ready(aport)
    result = {}

    def slow():
        result["r"] = request(p.port, "GET", "/slow")
    t = threading.Thread(target=slow)
    t.start()
    poll(lambda: value(scrape(aport), "portico_open_connections") == 1, msg="the slow request in flight")
    p.signal(signal.SIGTERM)
    r = poll(lambda: (lambda x: x if x.status == 503 else None)(request(aport, "GET", "/readyz")),
             msg="/readyz 503 while draining")
    assert r.body == b"not ready\n"
    assert request(aport, "GET", "/healthz").status == 200  # still alive
    assert scrape(aport)  # still scrapable while draining
    t.join(10)
    assert result["r"].status == 200
    assert p.wait_exit(10) == 0


def test_reload_counts_and_series_follow_routes(portico, echo):
    route_a = {"name": "a", "match": {"path": "/a"}, "upstream": "up"}
    route_b = {"name": "b", "match": {"path": "/b"}, "upstream": "up"}
    cfg = {"upstreams": {"up": {"targets": [echo.addr]}}, "routes": [route_a, route_b]}
    cfg, aport = admin_cfg(cfg)
    p = portico(cfg)
    for path in ("/a", "/a", "/b"):
        assert request(p.port, "GET", path).status == 200
    s = poll(lambda: (lambda m: m if value(m, "portico_requests_total") == 3 else None)(scrape(aport)),
             msg="3 requests")
    gen1 = value(s, "portico_config_generation")
    assert value(s, "portico_config_reloads_total", result="ok") == 0
    assert value(s, "portico_config_reloads_total", result="error") == 0

    # a good reload: route b goes, route c comes, a keeps its counts
    route_c = {"name": "c", "match": {"path": "/c"}, "upstream": "up"}
    cfg2 = dict(cfg, routes=[route_a, route_c])
    p.write_config(cfg2)
    p.signal(signal.SIGHUP)
    s = poll(lambda: (lambda m: m if value(m, "portico_config_reloads_total", result="ok") == 1 else None)(
        scrape(aport)), msg="reload ok counted")
    assert value(s, "portico_config_generation") > gen1
    assert value(s, "portico_requests_total", route="a") == 2
    # b's series go once the old generation is freed (workers drop it as
    # soon as they switch and no request of theirs uses it)

    def b_gone():
        m = scrape(aport)
        return m if not any(l.get("route") == "b" for name in ("portico_requests_total",
                                                               "portico_request_duration_seconds_count")
                            for l, _ in m.get(name, [])) else None
    s = poll(b_gone, msg="route b's series dropped")
    assert value(s, "portico_requests_total", route="a") == 2
    assert check_histogram(s, "portico_request_duration_seconds", "c") == 0
    assert request(p.port, "GET", "/c").status == 200
    poll(lambda: value(scrape(aport), "portico_requests_total", route="c") == 1, msg="route c counted")

    # a bad reload: counted as error, nothing else changes
    gen2 = value(s, "portico_config_generation")
    with open(p.config_path, "a") as f:
        f.write("bogus_key: 1\n")
    p.signal(signal.SIGHUP)
    s = poll(lambda: (lambda m: m if value(m, "portico_config_reloads_total", result="error") == 1 else None)(
        scrape(aport)), msg="reload error counted")
    assert value(s, "portico_config_reloads_total", result="ok") == 1
    assert value(s, "portico_config_generation") == gen2
    assert value(s, "portico_requests_total", route="a") == 2


def test_non_loopback_admin_needs_a_token(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("listen: [127.0.0.1:%d]\nadmin: {listen: \"0.0.0.0:%d\"}\n" % (free_port(), free_port()))
    r = subprocess.run([BIN, "check", "-c", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "%s:2:17: admin.listen 0.0.0.0:" % path in r.stderr
    assert "is not a loopback address: set admin.token" in r.stderr
    path.write_text("listen: [127.0.0.1:%d]\nadmin: {listen: \"0.0.0.0:%d\", token: abc}\n"
                    % (free_port(), free_port()))
    r = subprocess.run([BIN, "check", "-c", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_streamed_bodies_switch_to_large_buffers(portico, upstream):
    """Issue 13: a body that fills its 16 KiB buffer block is read into a
    large block (limits.stream_buffer) for the rest of the stream — counted
    by portico_stream_buffers_total; small bodies never take one, and the
    bytes held go back to 0 when the streams end. (limits.splice off: a
    spliced body skips user-space buffers; test_splice.py covers it.)"""
    big = os.urandom(4 << 20)

    def handler(req):
        body = big if req.target.startswith("/big") else b"small"
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    up = upstream(handler)
    cfg, aport = admin_cfg(simple_config(up.addr, workers=1, limits={"splice": False}))
    p = portico(cfg)
    for i in range(20):
        assert request(p.port, "GET", "/small/%d" % i).status == 200
    time.sleep(0.7)  # the worker publishes its buffer counts every 500 ms
    s = scrape(aport)
    assert value(s, "portico_stream_buffers_total") == 0
    r = request(p.port, "GET", "/big")
    assert r.status == 200 and r.body == big
    poll(lambda: value(scrape(aport), "portico_stream_buffers_total") >= 1, msg="download took a large buffer")
    taken = value(scrape(aport), "portico_stream_buffers_total")
    r = request(p.port, "POST", "/small/upload", body=big)  # the request body streams upstream
    assert r.status == 200
    poll(lambda: value(scrape(aport), "portico_stream_buffers_total") > taken, msg="upload took a large buffer")
    poll(lambda: value(scrape(aport), "portico_stream_buffer_bytes") == 0, msg="large buffers given back")


def test_plugin_responses_by_route_and_plugin(portico, echo):
    """portico_plugin_responses_total: answers a plugin gave itself, by
    route, plugin and status class (\"auth\": the 401 the core sends when
    authentication found no credential); upstream answers are not counted."""
    import hashlib
    key = "resp-test-key-0123456789"
    cfg, aport = admin_cfg(simple_config(
        echo.addr, consumers=[{"name": "a", "credentials": {"keys": [{"key_sha256": hashlib.sha256(key.encode()).hexdigest()}]}}],
        route_extra={"plugins": [{"key_auth": {}}, {"rate_limit": {"key": "route", "limits": [{"requests": 2, "per": "1h"}]}}]}))
    cfg["routes"].insert(0, {"name": "mock", "match": {"path": "/mock"}, "plugins": [{"direct_response": {"status": 204}}]})
    p = portico(cfg)
    ok = {"X-API-Key": key}
    assert [request(p.port, "GET", "/x", headers=ok).status for _ in range(3)] == [200, 200, 429]
    assert request(p.port, "GET", "/x").status == 401                                  # no key: the core's 401
    assert request(p.port, "GET", "/x", headers={"X-API-Key": "wrong-key-000000000"}).status == 401  # key_auth's
    assert request(p.port, "GET", "/mock").status == 204
    s = scrape(aport)
    name = "portico_plugin_responses_total"
    assert value(s, name, route="main", plugin="rate_limit", status_class="4xx") == 1
    assert value(s, name, route="main", plugin="auth", status_class="4xx") == 1
    assert value(s, name, route="main", plugin="key_auth", status_class="4xx") == 1
    assert value(s, name, route="mock", plugin="direct_response", status_class="2xx") == 1
    assert value(s, name, route="main", status_class="2xx") == 0  # the upstream's 200s are not plugin answers
