"""Retries and deadlines (docs/traffic.md "Retries and deadlines"): the
route's retry policy (failures retried, methods, a different target, the
kept request body, never after a response byte reached the client), the
per-try timeout, the route's deadline, the retry budget, backoff with a
client leaving during it, and the attempts in the access log and metrics."""

import json
import socket
import threading
import time

from conftest import free_port, simple_config
from upstreams import (HANG, RESET, Client, build_request, make_response, problem_check, request, wait_for)


def ok(name):
    return make_response(200, "OK", [("Content-Type", "text/plain")], ("ok from %s" % name).encode())


def status(code, body=b"unavailable"):
    reasons = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
               504: "Gateway Timeout"}
    return make_response(code, reasons.get(code, "Error"), [("Content-Type", "text/plain")], body)


class Script:
    """A handler shared by several upstreams: the n-th request overall
    (1-based, across all of them) gets `first(n)` while n <= len, then `rest`."""

    def __init__(self, first, rest):
        self.first = first
        self.rest = rest
        self.n = 0
        self.lock = threading.Lock()

    def handler(self, name):
        def h(req):
            with self.lock:
                self.n += 1
                n = self.n
            if n <= len(self.first):
                step = self.first[n - 1]
                return step(name) if callable(step) else step
            return self.rest(name) if callable(self.rest) else self.rest
        return h


def two_targets(upstream, script):
    a = upstream(script.handler("a"), name="a")
    b = upstream(script.handler("b"), name="b")
    return a, b


def cfg(targets, retries=None, route_extra=None, upstream_extra=None, **top):
    route = dict(route_extra or {})
    if retries is not None:
        route["retries"] = retries
    return simple_config([t.addr for t in targets], route_extra=route, upstream_extra=upstream_extra, **top)


FAST = {"base": "1ms", "max": "5ms"}


def access_entry(p, pred, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ln in p.access_lines():
            e = json.loads(ln)
            if pred(e):
                return e
        time.sleep(0.05)
    raise AssertionError("no matching access log line: %r" % p.access_lines()[-5:])


# ------------------------------------------------------------------ policy


def test_503_then_200_is_retried_on_the_other_target(portico, upstream):
    script = Script([status(503, b"first answer, never forwarded")], ok)
    a, b = two_targets(upstream, script)
    p = portico(cfg([a, b], {"attempts": 3, "backoff": FAST}))
    r = request(p.port, "GET", "/x")
    assert r.status == 200, r
    assert r.body.startswith(b"ok from "), r.body
    assert b"never forwarded" not in r.body
    # two attempts, one on each target
    assert len(a.requests) == 1 and len(b.requests) == 1, (a.requests, b.requests)
    e = access_entry(p, lambda e: e["path"] == "/x")
    assert e["status"] == 200 and e["attempts"] == 2, e
    # the connection of the discarded 503 (read to its end) was kept: the
    # next request on its target reuses it
    request(p.port, "GET", "/y")
    request(p.port, "GET", "/z")
    assert a.connections + b.connections == 2, (a.connections, b.connections)


def test_response_plugins_do_not_see_a_discarded_response(portico, upstream):
    """A `headers` plugin copies nothing of the retried 503: the client gets
    the second answer's headers only, and the 503's own header never shows."""
    first = make_response(503, "Service Unavailable", [("X-From", "retried-503")], b"no")
    script = Script([first], lambda n: make_response(200, "OK", [("X-From", "second")], b"yes"))
    a, b = two_targets(upstream, script)
    p = portico(cfg([a, b], {"backoff": FAST},
                    route_extra={"plugins": [{"headers": {"response": {"add": {"X-Seen": "1"}}}}]}))
    r = request(p.port, "GET", "/h")
    assert r.status == 200 and r.body == b"yes"
    assert r.header_all("X-From") == ["second"]
    assert r.header_all("X-Seen") == ["1"]


def test_status_not_listed_is_forwarded(portico, upstream):
    script = Script([status(500, b"boom")], ok)
    a, b = two_targets(upstream, script)
    p = portico(cfg([a, b], {"on": [503], "backoff": FAST}))
    r = request(p.port, "GET", "/x")
    assert r.status == 500 and r.body == b"boom"
    assert len(a.requests) + len(b.requests) == 1


def test_all_attempts_fail_the_last_answer_goes_to_the_client(portico, upstream):
    a, b = two_targets(upstream, Script([], lambda n: status(503, ("last from " + n).encode())))
    p = portico(cfg([a, b], {"attempts": 3, "backoff": FAST}))
    r = request(p.port, "GET", "/x")
    assert r.status == 503 and r.body.startswith(b"last from")
    assert len(a.requests) + len(b.requests) == 3
    # every target tried once before any is tried again
    assert min(len(a.requests), len(b.requests)) == 1


def test_post_not_retried_by_default(portico, upstream):
    a, b = two_targets(upstream, Script([status(503)], ok))
    p = portico(cfg([a, b], {"backoff": FAST}))
    r = request(p.port, "POST", "/x", body=b"hello")
    assert r.status == 503
    assert len(a.requests) + len(b.requests) == 1


def test_post_retried_with_methods_all_and_the_same_body(portico, upstream):
    a, b = two_targets(upstream, Script([status(503)], ok))
    p = portico(cfg([a, b], {"methods": "all", "backoff": FAST}))
    body = b"0123456789" * 500
    r = request(p.port, "POST", "/x", body=body)
    assert r.status == 200, r
    reqs = a.requests + b.requests
    assert len(reqs) == 2
    assert all(q.body == body for q in reqs), [len(q.body) for q in reqs]


def test_chunked_body_kept_and_resent(portico, upstream):
    a, b = two_targets(upstream, Script([status(503)], ok))
    p = portico(cfg([a, b], {"methods": "all", "backoff": FAST}))
    with Client(p.port) as c:
        c.send(b"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        r = c.read_response()
    assert r.status == 200
    reqs = a.requests + b.requests
    assert len(reqs) == 2 and all(q.body == b"hello world" for q in reqs)


def test_body_over_body_buffer_is_not_retried(portico, upstream):
    a, b = two_targets(upstream, Script([status(503, b"full")], ok))
    p = portico(cfg([a, b], {"methods": "all", "body_buffer": "1k", "backoff": FAST}))
    r = request(p.port, "POST", "/big", body=b"x" * 4096)
    assert r.status == 503 and r.body == b"full"
    assert len(a.requests) + len(b.requests) == 1
    # within the bound, the same route retries
    r = request(p.port, "POST", "/small", body=b"y" * 512)
    assert r.status == 200


def test_connect_failure_retried_on_another_target(portico, upstream):
    good = upstream(name="good")
    dead = "127.0.0.1:%d" % free_port()
    conf = simple_config([dead, good.addr], route_extra={"retries": {"attempts": 2, "backoff": FAST}})
    p = portico(conf)
    for i in range(4):
        assert request(p.port, "GET", "/r%d" % i).status == 200
    assert len(good.requests) == 4


def test_reset_before_the_head_is_retried(portico, upstream):
    a, b = two_targets(upstream, Script([RESET], ok))
    p = portico(cfg([a, b], {"on": ["reset"], "backoff": FAST}))
    r = request(p.port, "GET", "/x")
    assert r.status == 200
    assert len(a.requests) + len(b.requests) == 2


def test_reset_without_the_policy_is_502(portico, upstream):
    """The built-in rule (no `retries`) only moves on after a failed connect."""
    a, b = two_targets(upstream, Script([RESET], ok))
    p = portico(cfg([a, b]))
    problem_check(request(p.port, "GET", "/x"), 502)
    assert len(a.requests) + len(b.requests) == 1


def test_response_started_then_cut_is_not_retried(portico, upstream):
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"s" * 100
    a, b = two_targets(upstream, Script([[head, 0.2, RESET]], ok))
    p = portico(cfg([a, b], {"attempts": 3, "on": ["reset", "timeout", "connect_failure", 502, 503],
                             "backoff": FAST}))
    with Client(p.port, timeout=10) as c:
        c.send(build_request("GET", "/stream"))
        c.sock.settimeout(10)
        data = b""
        try:
            while True:
                chunk = c.sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
    head_out, _, body = data.partition(b"\r\n\r\n")
    assert head_out.startswith(b"HTTP/1.1 200"), data[:200]
    assert body == b"s" * 100, len(body)  # cut, never completed, never duplicated
    assert data.count(b"HTTP/1.1") == 1
    time.sleep(0.3)
    assert len(a.requests) + len(b.requests) == 1
    e = access_entry(p, lambda e: e["path"] == "/stream")
    assert e["aborted"] is True and e["attempts"] == 1, e


def test_upstream_level_retries_are_the_routes_default(portico, upstream):
    a, b = two_targets(upstream, Script([status(502), status(502)], ok))
    conf = simple_config([a.addr, b.addr], upstream_extra={"retries": {"attempts": 3, "backoff": FAST}})
    conf["routes"].insert(0, {"name": "once", "match": {"path_prefix": "/once"}, "upstream": "up",
                              "retries": {"attempts": 1}})
    p = portico(conf)
    assert request(p.port, "GET", "/x").status == 200
    assert len(a.requests) + len(b.requests) == 3
    # the route's override: one attempt only
    a2, b2 = two_targets(upstream, Script([status(502)], ok))
    conf = simple_config([a2.addr, b2.addr], upstream_extra={"retries": {"attempts": 3, "backoff": FAST}},
                         route_extra={"retries": {"attempts": 1}})
    p2 = portico(conf)
    assert request(p2.port, "GET", "/once").status == 502


# ----------------------------------------------------------------- HTTP/2


def test_h2c_upstream_503_retried_on_the_same_single_target(portico):
    """One target: the retry goes to it again; the 503's stream is read and
    dropped, the POST body (kept) goes again on a new stream."""
    from h2util import H2Upstream
    answers = []

    def respond(rec):
        answers.append(rec)
        if len(answers) == 1:
            return [(":status", "503"), ("content-length", "4")], b"busy"
        out = b"ok %d" % len(rec["body"])
        return [(":status", "200"), ("content-length", str(len(out)))], out

    up = H2Upstream(respond)
    p = portico(simple_config(up.addr, upstream_extra={"protocol": "h2c"},
                              route_extra={"retries": {"methods": "all", "backoff": FAST}}))
    body = b"q" * 20000
    r = request(p.port, "POST", "/h2", body=body)
    assert r.status == 200 and r.body == b"ok 20000", r
    assert len(answers) == 2 and all(bytes(a["body"]) == body for a in answers)


def test_h2_client_retried_request(portico, upstream):
    import h2.events
    from h2util import h2_connect, h2_head, h2_read_until
    a, b = two_targets(upstream, Script([status(503)], ok))
    p = portico(cfg([a, b], {"methods": "all", "backoff": FAST}))
    s, c = h2_connect(p.port)
    c.send_headers(1, h2_head("/h2c", method="POST", extra=[("content-length", "5")]))
    c.send_data(1, b"hello", end_stream=True)
    s.sendall(c.data_to_send())
    events, done = h2_read_until(s, c, lambda e: isinstance(e, h2.events.StreamEnded))
    assert done
    heads = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert dict(heads[0].headers)[b":status"] == b"200"
    data = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    assert data.startswith(b"ok from ")
    s.close()
    reqs = a.requests + b.requests
    assert len(reqs) == 2 and all(q.body == b"hello" for q in reqs)


# ---------------------------------------------------------- per-try timeout


def test_per_try_timeout_moves_on_to_the_next_target(portico, upstream):
    a, b = two_targets(upstream, Script([HANG], ok))
    p = portico(cfg([a, b], {"per_try_timeout": "300ms", "backoff": FAST},
                    upstream_extra={"read_timeout": "30s"}))
    start = time.monotonic()
    r = request(p.port, "GET", "/slow", timeout=20)
    assert r.status == 200, r
    assert time.monotonic() - start < 15
    assert len(a.requests) + len(b.requests) == 2
    assert len(a.requests) == 1 and len(b.requests) == 1


def test_per_try_timeout_without_timeout_listed_is_504(portico, upstream):
    a, b = two_targets(upstream, Script([HANG], ok))
    p = portico(cfg([a, b], {"per_try_timeout": "300ms", "on": ["connect_failure", 503], "backoff": FAST},
                    upstream_extra={"read_timeout": "30s"}))
    r = request(p.port, "GET", "/slow", timeout=20)
    problem_check(r, 504)
    assert "per_try_timeout" in r.json()["detail"]
    assert len(a.requests) + len(b.requests) == 1


# ---------------------------------------------------------------- deadline


def test_route_timeout_gives_504_with_attempts_left(portico, upstream):
    a, b = two_targets(upstream, Script([], HANG))
    p = portico(cfg([a, b], {"attempts": 8, "per_try_timeout": "400ms", "backoff": FAST},
                    route_extra={"timeout": "1s"}, upstream_extra={"read_timeout": "30s"}))
    start = time.monotonic()
    r = request(p.port, "GET", "/deadline", timeout=20)
    problem_check(r, 504)
    assert "timeout" in r.json()["detail"]
    assert time.monotonic() - start < 10
    n = len(a.requests) + len(b.requests)
    assert 1 <= n < 8, n  # attempts were left when the deadline cut in
    # the route is still usable afterwards (no attempt runs on)
    time.sleep(0.5)
    assert len(a.requests) + len(b.requests) == n


def test_route_timeout_during_backoff(portico, upstream):
    """The deadline cuts a backoff wait short: 504 at once, no later attempt."""
    a, b = two_targets(upstream, Script([], lambda n: status(503)))
    p = portico(cfg([a, b], {"attempts": 8, "backoff": {"base": "5s", "max": "5s"}},
                    route_extra={"timeout": "500ms"}))
    start = time.monotonic()
    r = request(p.port, "GET", "/bo", timeout=20)
    problem_check(r, 504)
    assert time.monotonic() - start < 4
    n = len(a.requests) + len(b.requests)
    time.sleep(1)
    assert len(a.requests) + len(b.requests) == n


def test_route_timeout_without_retries(portico, upstream):
    hang = upstream(lambda req: HANG, name="hang")
    p = portico(simple_config(hang.addr, route_extra={"timeout": "500ms"},
                              upstream_extra={"read_timeout": "30s"}))
    r = request(p.port, "GET", "/t", timeout=20)
    problem_check(r, 504)


def test_route_timeout_not_reached_is_harmless(portico, echo):
    p = portico(simple_config(echo.addr, route_extra={"timeout": "5s"}))
    for i in range(3):
        assert request(p.port, "GET", "/ok%d" % i).status == 200


# ------------------------------------------------------------------ budget


def test_retry_budget_bounds_retries_under_concurrent_failures(portico, upstream):
    """20 requests fail at the same moment (the upstream holds every first
    attempt until all 20 arrived); the budget (ratio 0.1 of 20 active = 2,
    min_retries 1) lets at most 2 retries be in flight at once. Each retry
    is held 1 s, so the first wave of failures sees at most 2 places; the
    third attempts of those two at most 2 more."""
    n = 20
    arrived = threading.Semaphore(0)
    gate = threading.Event()
    lock = threading.Lock()
    seen = [0]

    def handler(req):
        with lock:
            seen[0] += 1
            k = seen[0]
            if k == n:
                gate.set()
        if k <= n:
            gate.wait(20)
            return status(503, b"first")
        return [1.0, status(503, b"retry")]

    a = upstream(handler, name="a")
    b = upstream(handler, name="b")
    aport = free_port()
    p = portico(cfg([a, b], {"attempts": 3, "backoff": FAST},
                    upstream_extra={"retries": {"budget": {"ratio": 0.1, "min_retries": 1}}},
                    admin={"listen": "127.0.0.1:%d" % aport}))
    results = []

    def one(i):
        results.append(request(p.port, "GET", "/b%d" % i, timeout=30).status)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    assert results == [503] * n
    total = len(a.requests) + len(b.requests)
    assert n + 1 <= total <= n + 4, total
    del arrived
    m = request(aport, "GET", "/metrics").body.decode()
    exhausted = [ln for ln in m.splitlines() if ln.startswith("portico_upstream_retry_budget_exhausted_total")]
    assert exhausted and float(exhausted[0].split()[-1]) >= n - 4, exhausted
    retried = [ln for ln in m.splitlines() if ln.startswith("portico_upstream_retries_total")]
    assert any('reason="status"' in ln and float(ln.split()[-1]) == total - n for ln in retried), retried


# ----------------------------------------------------------------- backoff


def test_client_leaving_during_backoff(portico, upstream):
    a, b = two_targets(upstream, Script([status(503)], ok))
    p = portico(cfg([a, b], {"backoff": {"base": "3s", "max": "3s"}}))
    s = socket.create_connection(("127.0.0.1", p.port))
    s.sendall(build_request("GET", "/leave"))
    wait_for(lambda: len(a.requests) + len(b.requests) >= 1)
    s.close()  # most likely during the backoff (a random wait up to 3 s)
    time.sleep(0.3)
    # still serving; the left request either retried before the close or not at all
    r = request(p.port, "GET", "/after", timeout=10)
    assert r.status in (200, 503)
    e = access_entry(p, lambda e: e["path"] == "/leave")
    assert e["status"] in (499, 200), e


def test_backoff_retry_happens(portico, upstream):
    a, b = two_targets(upstream, Script([status(503), status(503)], ok))
    p = portico(cfg([a, b], {"attempts": 3, "backoff": {"base": "20ms", "max": "100ms"}}))
    r = request(p.port, "GET", "/x", timeout=10)
    assert r.status == 200
    assert len(a.requests) + len(b.requests) == 3


# ------------------------------------------------------------------ config


def test_bad_retry_config_is_refused(portico, tmp_path):
    import subprocess
    from conftest import BIN
    bad = {
        "attempts: 0": "retries.attempts must be between 1 and 8",
        "on: [connect_failure, 404]": "unknown failure '404'",
        "methods: some": "retries.methods",
        "backoff: {base: 1s, max: 10ms}": "must not be less than base",
        "budget: {ratio: 0.2}": "retries.budget is set on the upstream",
    }
    for line, msg in bad.items():
        path = tmp_path / "bad.yaml"
        path.write_text("listen: [\"127.0.0.1:1\"]\nupstreams:\n  u: {targets: [\"127.0.0.1:9\"]}\n"
                        "routes:\n  - match: {path_prefix: /}\n    upstream: u\n    retries: {%s}\n" % line)
        r = subprocess.run([BIN, "check", "-c", str(path)], capture_output=True, text=True)
        assert r.returncode != 0, line
        assert "bad.yaml:7:" in r.stderr and msg in r.stderr, (line, r.stderr)
    path = tmp_path / "bad2.yaml"
    path.write_text("listen: [\"127.0.0.1:1\"]\nupstreams:\n  u:\n    targets: [\"127.0.0.1:9\"]\n"
                    "    retries: {budget: {ratio: 2}}\n"
                    "routes:\n  - match: {path_prefix: /}\n    upstream: u\n    timeout: 0s\n")
    r = subprocess.run([BIN, "check", "-c", str(path)], capture_output=True, text=True)
    assert r.returncode != 0
    assert "bad2.yaml:5:" in r.stderr and "ratio" in r.stderr, r.stderr
    assert "bad2.yaml:9:" in r.stderr and "timeout must be greater than 0" in r.stderr, r.stderr
