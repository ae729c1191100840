"""concurrency_limit (issue 9): requests in flight per key across the
workers of a process, the waiting queue (FIFO per worker, woken across
workers), queue timeout, 503 problem+json over it, clients leaving while
queued, counts kept across a reload. The upstream holds requests on
`/hold` until the test opens its gate, and records how many it held at
once."""

import signal
import socket
import threading
import time

import pytest

from conftest import simple_config
from test_admin_metrics import admin_cfg, scrape, value
from upstreams import Client, problem_check, request, wait_for, wait_reloaded


class Gate:
    """An upstream handler: /hold waits for the gate, the rest answers at once."""

    def __init__(self):
        self.open = threading.Event()
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.served = []

    def __call__(self, req):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            if req.path.startswith("/hold"):
                self.open.wait(20)
            with self.lock:
                self.served.append(req.path)
            return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        finally:
            with self.lock:
                self.now -= 1

    def held(self):
        with self.lock:
            return self.now


def until(pred, msg):
    assert wait_for(pred), msg


def cl(**kw):
    return {"concurrency_limit": kw}


def background(port, path, results, headers=None):
    def run():
        try:
            r = request(port, "GET", path, headers=headers, timeout=30)
            results.append((path, r.status, r))
        except Exception as e:  # noqa: BLE001 - recorded for the assertion
            results.append((path, "error", e))

    t = threading.Thread(target=run)
    t.start()
    return t


def rejected(r):
    doc = problem_check(r, 503)
    assert "in flight" in doc["detail"], doc
    assert r.header("Retry-After") == "1"


@pytest.fixture
def gate(upstream):
    g = Gate()
    g.server = upstream(g)
    return g


def test_max_in_flight_then_503(portico, gate):
    p = portico(simple_config(gate.server.addr, route_extra={"plugins": [cl(max=2)]}))
    results = []
    ts = [background(p.port, "/hold/%d" % i, results) for i in range(2)]
    until(lambda: gate.held() == 2, msg="two requests held upstream")
    rejected(request(p.port, "GET", "/now"))  # the third is refused at once
    gate.open.set()
    for t in ts:
        t.join()
    assert sorted(s for _, s, _ in results) == [200, 200]
    assert request(p.port, "GET", "/after").status == 200  # the slots came back
    assert "/now" not in gate.served


def test_queue_admits_in_order_and_bounds(portico, gate):
    p = portico(simple_config(gate.server.addr, workers=1,
                              route_extra={"plugins": [cl(max=1, queue=2, queue_timeout="10s")]}))
    results = []
    first = background(p.port, "/hold/first", results)
    until(lambda: gate.held() == 1, msg="first request held")
    waiters = []
    for i in range(2):
        waiters.append(background(p.port, "/q%d" % i, results))
        time.sleep(0.1)  # arrival order
    time.sleep(0.2)
    assert gate.served == []  # both are waiting, not upstream
    rejected(request(p.port, "GET", "/over"))  # the queue (2) is full
    gate.open.set()
    for t in [first] + waiters:
        t.join()
    assert [s for _, s, _ in results] == [200, 200, 200], results
    assert gate.served == ["/hold/first", "/q0", "/q1"]
    assert gate.peak == 1


def test_queue_timeout(portico, gate):
    cfg, aport = admin_cfg(simple_config(gate.server.addr, route_extra={"plugins": [
        cl(max=1, queue=1, queue_timeout="300ms")]}))
    p = portico(cfg)
    results = []
    first = background(p.port, "/hold", results)
    until(lambda: gate.held() == 1, msg="first request held")
    r = request(p.port, "GET", "/waits")
    rejected(r)
    gate.open.set()
    first.join()
    s = scrape(aport)
    name = "portico_concurrency_limit_decisions_total"
    assert value(s, name, zone="route:main", decision="timed_out") == 1
    assert value(s, name, zone="route:main", decision="admitted") == 1
    assert "/waits" not in gate.served


def test_waiters_on_other_workers_are_woken(portico, gate):
    """4 workers, max 1: requests on many connections (spread over the
    workers by the kernel) all pass, one at a time, woken across workers."""
    # recheck 60s: only the wake-up posted by the worker that frees a slot
    # can admit a waiter on another worker before queue_timeout
    p = portico(simple_config(gate.server.addr, workers=4,
                              route_extra={"plugins": [cl(max=1, queue=20, queue_timeout="20s", recheck="60s")]}))
    results = []
    first = background(p.port, "/hold", results)
    until(lambda: gate.held() == 1, msg="first request held")
    ts = [background(p.port, "/w%d" % i, results) for i in range(12)]
    time.sleep(0.3)
    assert gate.served == []
    gate.open.set()
    for t in [first] + ts:
        t.join()
    assert [s for _, s, _ in results].count(200) == 13, results
    assert gate.peak == 1


def test_client_leaving_while_queued(portico, gate):
    p = portico(simple_config(gate.server.addr, workers=1,
                              route_extra={"plugins": [cl(max=1, queue=1, queue_timeout="10s")]}))
    results = []
    first = background(p.port, "/hold", results)
    until(lambda: gate.held() == 1, msg="first request held")
    s = socket.create_connection(("127.0.0.1", p.port))
    s.sendall(b"GET /gone HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)
    s.close()  # leaves the queue
    time.sleep(0.2)
    second = background(p.port, "/second", results)  # the queue has room again
    time.sleep(0.2)
    gate.open.set()
    first.join()
    second.join()
    assert sorted(st for _, st, _ in results) == [200, 200], results
    assert "/gone" not in gate.served
    assert p.alive()


def test_keys_count_separately(portico, gate):
    p = portico(simple_config(gate.server.addr, route_extra={"plugins": [cl(max=1, key="header:X-Tenant")]}))
    results = []
    a = background(p.port, "/hold/a", results, headers={"X-Tenant": "a"})
    until(lambda: gate.held() == 1, msg="tenant a held")
    assert request(p.port, "GET", "/b", headers={"X-Tenant": "b"}).status == 200
    rejected(request(p.port, "GET", "/a2", headers={"X-Tenant": "a"}))
    gate.open.set()
    a.join()


def test_in_flight_counts_survive_reload(portico, gate):
    def cfg(tag):
        return simple_config(gate.server.addr, route_extra={"plugins": [
            {"headers": {"response": {"set": {"X-Gen": tag}}}}, cl(max=1)]})

    p = portico(cfg("one"))
    results = []
    held = background(p.port, "/hold", results)
    until(lambda: gate.held() == 1, msg="request held")
    p.write_config(cfg("two"))
    p.signal(signal.SIGHUP)
    wait_reloaded(p, 1)
    r = request(p.port, "GET", "/x")
    assert r.header("X-Gen") == "two"
    rejected(r)  # the request still in flight from the old generation counts
    gate.open.set()
    held.join()
    assert request(p.port, "GET", "/y").status == 200


@pytest.mark.parametrize("block,err", [
    ({}, "'max'"),
    ({"max": 0}, "out of range"),
    ({"max": 1, "queue_timeout": "0s"}, "between 1ms and 10m"),
    ({"max": 1, "key": "cookie:a"}, "'key' parts"),
    ({"max": 1, "qeue": 3}, "unknown key 'qeue'"),
    ({"max": 1, "recheck": "0s"}, "between 1ms and 60s"),
])
def test_config_errors(tmp_path, block, err):
    import json
    import re
    import subprocess

    from conftest import BIN, sanitizer_env
    cfg = tmp_path / "c.yaml"
    cfg.write_text("listen: [{address: 127.0.0.1:1}]\nupstreams:\n  up: {targets: [127.0.0.1:9]}\nroutes:\n"
                   "  - match: {path_prefix: /}\n    upstream: up\n    plugins:\n      - concurrency_limit: %s\n"
                   % json.dumps(block))
    out = subprocess.run([BIN, "check", "-c", str(cfg)], capture_output=True, text=True, env=sanitizer_env(),
                         timeout=30)
    assert out.returncode != 0
    assert re.search(r"c\.yaml:\d+:\d+: .*" + re.escape(err), out.stderr), out.stderr
