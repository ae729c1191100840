"""rate_limit (issue 9): local counters shared by the workers of a process,
GCRA and sliding window, keys (client address, header, consumer, route),
several limits on one route with give-back, delaying excess requests
(queue), 429 problem+json with Retry-After, the RateLimit and
RateLimit-Policy fields, counters kept across reloads unless the limit
changed, metrics, and positioned configuration errors."""

import hashlib
import signal
import re
import socket
import subprocess
import threading
import time

import pytest

from conftest import BIN, free_port, sanitizer_env, simple_config
from test_admin_metrics import admin_cfg, scrape, value
from upstreams import Client, problem_check, request, wait_reloaded

POLICY_ITEM = re.compile(r'^"([^"\\]+)";q=(\d+);w=(\d+)$')
LIVE_ITEM = re.compile(r'^"([^"\\]+)";r=(\d+);t=(\d+)$')


def rl(limits, **kw):
    return {"rate_limit": dict(kw, limits=limits)}


def live(r):
    """{policy name: (remaining, reset)} from the RateLimit field."""
    v = r.header("RateLimit")
    assert v, r
    out = {}
    for item in v.split(", "):
        m = LIVE_ITEM.match(item)
        assert m, v
        out[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return out


def policy(r):
    v = r.header("RateLimit-Policy")
    assert v, r
    out = {}
    for item in v.split(", "):
        m = POLICY_ITEM.match(item)
        assert m, v
        out[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return out


def refused(r):
    doc = problem_check(r, 429)
    assert doc["type"] == "urn:portico:error:rate-limited", doc
    ra = r.header("Retry-After")
    assert ra and ra.isdigit() and int(ra) >= 1, r
    return doc


def statuses(port, n, **kw):
    out = []
    for _ in range(n):
        out.append(request(port, "GET", "/x", **kw))
    return out


def test_limit_then_429_with_headers(portico, echo):
    p = portico(simple_config(echo.addr, route_extra={"plugins": [rl([{"requests": 3, "per": "60s"}],
                                                                        key="client_address")]}))
    with Client(p.port) as c:
        for i in range(3):
            r = c.request("GET", "/a")
            assert r.status == 200, r
            assert policy(r) == {"3/60s": (3, 60)}
            rem, reset = live(r)["3/60s"]
            assert rem == 2 - i and 1 <= reset <= 60, r
        r = c.request("GET", "/a")
        doc = refused(r)
        assert "3/60s" in doc["detail"]
        assert live(r)["3/60s"][0] == 0
        # GCRA: one request every 20 s comes back, so the wait is about 20 s
        assert 15 <= int(r.header("Retry-After")) <= 20, r
        # the connection stays usable
        refused(c.request("GET", "/b"))
    assert len(echo.requests) == 3


def test_counters_shared_by_workers(portico, echo):
    """Fresh connections spread over 4 workers; the limit holds exactly."""
    p = portico(simple_config(echo.addr, workers=4,
                              route_extra={"plugins": [rl([{"requests": 20, "per": "1h"}], key="client_address")]}))
    results = []
    lock = threading.Lock()

    def worker():
        for _ in range(15):
            s = request(p.port, "GET", "/w").status
            with lock:
                results.append(s)

    ts = [threading.Thread(target=worker) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert results.count(200) == 20 and results.count(429) == 40, results


def test_sliding_window_limit(portico, echo):
    p = portico(simple_config(echo.addr, route_extra={"plugins": [
        rl([{"name": "hourly", "requests": 4, "per": "1h", "algorithm": "sliding_window"}], key="route")]}))
    rs = statuses(p.port, 6)
    assert [r.status for r in rs] == [200] * 4 + [429] * 2
    assert policy(rs[0]) == {"hourly": (4, 3600)}
    assert [live(r)["hourly"][0] for r in rs] == [3, 2, 1, 0, 0, 0]
    refused(rs[5])


def test_header_key_and_fallback_to_client(portico, echo):
    p = portico(simple_config(echo.addr, route_extra={"plugins": [rl([{"requests": 2, "per": "1h"}],
                                                                        key="header:X-Tenant")]}))
    for tenant in ("a", "b"):
        rs = statuses(p.port, 3, headers={"X-Tenant": tenant})
        assert [r.status for r in rs] == [200, 200, 429], tenant
    # without the header the client address is the key: a counter of its own
    rs = statuses(p.port, 3)
    assert [r.status for r in rs] == [200, 200, 429]
    # a long header value is a key like any other
    big = "t" * 6000
    rs = statuses(p.port, 3, headers={"X-Tenant": big})
    assert [r.status for r in rs] == [200, 200, 429]


def test_several_limits_give_back(portico, echo):
    """The second limit refuses; the first gives the request back."""
    p = portico(simple_config(echo.addr, route_extra={"plugins": [rl([
        {"name": "big", "requests": 5, "per": "1h"},
        {"name": "small", "requests": 3, "per": "1h", "algorithm": "sliding_window"}], key="route")]}))
    rs = statuses(p.port, 5)
    assert [r.status for r in rs] == [200, 200, 200, 429, 429]
    assert policy(rs[0]) == {"big": (5, 3600), "small": (3, 3600)}
    assert live(rs[2]) == {"big": (2, live(rs[2])["big"][1]), "small": (0, live(rs[2])["small"][1])}
    # refused requests did not consume "big"
    assert live(rs[4])["big"][0] == 2, rs[4].header("RateLimit")
    assert "\"small\"" in refused(rs[4])["detail"]


def test_consumer_key_and_per_consumer_limits(portico, echo):
    sha = lambda s: hashlib.sha256(s.encode()).hexdigest()
    consumers = [
        {"name": "alice", "groups": ["gold"], "credentials": {"keys": [{"key_sha256": sha("alice-key-123456")}]}},
        {"name": "bob", "groups": ["free"], "credentials": {"keys": [{"key_sha256": sha("bob-key-12345678")}]}},
        {"name": "anon"},
    ]
    plugins = [{"key_auth": {}},
               rl([{"name": "gold", "requests": 4, "per": "1h", "groups": ["gold"]},
                   {"name": "anon", "requests": 1, "per": "1h", "consumers": ["anon"]},
                   {"name": "all", "requests": 2, "per": "1h", "groups": ["free"]}], key="consumer")]
    p = portico(simple_config(echo.addr, consumers=consumers,
                              route_extra={"plugins": plugins, "auth": {"anonymous": "anon"}}))
    alice = {"X-API-Key": "alice-key-123456"}
    bob = {"X-API-Key": "bob-key-12345678"}
    assert [r.status for r in statuses(p.port, 5, headers=alice)] == [200] * 4 + [429]
    rs = statuses(p.port, 3, headers=bob)
    assert [r.status for r in rs] == [200, 200, 429]
    assert set(policy(rs[0])) == {"all"}  # only the limits that apply are advertised
    assert [r.status for r in statuses(p.port, 2)] == [200, 429]  # the anonymous consumer
    # a wrong key is still 401 (auth first), never counted
    r = request(p.port, "GET", "/x", headers={"X-API-Key": "nope-nope-nope-nope"})
    assert r.status == 401


def test_queue_delays_excess_requests(portico, echo):
    """2 per second with a queue of 2: of 6 simultaneous requests, 2 pass at
    once, 2 are delayed and pass, 2 are refused."""
    p = portico(simple_config(echo.addr, route_extra={"plugins": [rl([{"requests": 2, "per": "1s", "queue": 2}],
                                                                        key="route")]}))
    results = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def one():
        c = Client(p.port)
        barrier.wait()
        r = c.request("GET", "/q")
        c.close()
        with lock:
            results.append(r.status)

    ts = [threading.Thread(target=one) for _ in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(results) == [200, 200, 200, 200, 429, 429], results
    assert len(echo.requests) == 4


def test_client_gone_while_delayed(portico, echo):
    p = portico(simple_config(echo.addr, route_extra={"plugins": [rl([{"requests": 1, "per": "10s", "queue": 5}],
                                                                        key="route")]}))
    assert request(p.port, "GET", "/first").status == 200
    for _ in range(3):  # delayed by 10, 20, 30 s; the clients leave at once
        s = socket.create_connection(("127.0.0.1", p.port))
        s.sendall(b"GET /later HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.05)
        s.close()
    time.sleep(0.2)
    assert p.alive()
    assert [r.path for r in echo.requests] == ["/first"]


def test_reload_keeps_counters_unless_limit_changes(portico, echo):
    def cfg(requests, extra_header):
        return simple_config(echo.addr, route_extra={"plugins": [
            {"headers": {"response": {"set": {"X-Gen": extra_header}}}},
            rl([{"requests": requests, "per": "1h"}], key="client_address")]})

    p = portico(cfg(2, "one"))
    assert [r.status for r in statuses(p.port, 3)] == [200, 200, 429]
    p.write_config(cfg(2, "two"))  # an unrelated change
    p.signal(signal.SIGHUP)
    wait_reloaded(p, 1)
    r = request(p.port, "GET", "/x")
    assert r.header("X-Gen") == "two"
    refused(r)  # the counter survived the reload
    p.write_config(cfg(3, "three"))  # the limit changed: counted afresh
    p.signal(signal.SIGHUP)
    wait_reloaded(p, 2)
    assert [r.status for r in statuses(p.port, 4)] == [200, 200, 200, 429]


def test_global_plugin_keyed_by_route(portico, echo):
    cfg = simple_config(echo.addr, plugins=[rl([{"requests": 1, "per": "1h"}], key="route")])
    cfg["routes"].insert(0, {"name": "other", "match": {"path_prefix": "/other"}, "upstream": "up"})
    p = portico(cfg)
    assert [r.status for r in statuses(p.port, 2)] == [200, 429]
    assert request(p.port, "GET", "/other/1").status == 200
    assert request(p.port, "GET", "/other/2").status == 429


def test_headers_off(portico, echo):
    p = portico(simple_config(echo.addr, route_extra={"plugins": [rl([{"requests": 1, "per": "1h"}],
                                                                        key="route", headers=False)]}))
    r = request(p.port, "GET", "/x")
    assert r.status == 200 and r.header("RateLimit") is None and r.header("RateLimit-Policy") is None
    r = request(p.port, "GET", "/x")
    refused(r)
    assert r.header("RateLimit") is None


def test_metrics_count_decisions(portico, echo):
    cfg, aport = admin_cfg(simple_config(echo.addr, route_extra={"plugins": [
        rl([{"name": "m", "requests": 3, "per": "1h"}], key="route")]}))
    p = portico(cfg)
    statuses(p.port, 5)
    s = scrape(aport)
    name = "portico_rate_limit_decisions_total"
    assert value(s, name, zone="route:main", limit="m", decision="allowed") == 3
    assert value(s, name, zone="route:main", limit="m", decision="rejected") == 2
    assert value(s, name, decision="delayed") == 0


@pytest.mark.parametrize("block,err", [
    ({"limits": [{"requests": 0, "per": "1s"}]}, "out of range"),
    ({"limits": [{"requests": 5}]}, "needs 'requests' and 'per'"),
    ({"limits": [{"requests": 5, "per": "500ms"}]}, "whole seconds"),
    ({"limits": [{"requests": 5, "per": "1s", "algorithm": "leaky"}]}, "gcra or sliding_window"),
    ({"limits": [{"requests": 5, "per": "1s", "algorithm": "sliding_window", "queue": 3}]}, "needs algorithm gcra"),
    ({"limits": [{"requests": 5, "per": "1s"}, {"requests": 5, "per": "1s"}]}, "two limits named"),
    ({"limits": [{"requests": 5, "per": "1s"}], "key": "cookie:x"}, "'key' parts"),
    ({"limits": [{"requests": 5, "per": "1s"}], "key": "header:bad header"}, "not a valid header name"),
    ({"limits": []}, "'limits' must be a list"),
    ({"limits": [{"requests": 5, "per": "1s", "nmae": "x"}]}, "unknown key 'nmae'"),
    ({"limits": [{"requests": 2000000, "per": "1s", "algorithm": "sliding_window"}]}, "at most 1000000"),
])
def test_config_errors_positioned(tmp_path, block, err):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("listen: [{address: 127.0.0.1:1}]\nupstreams:\n  up: {targets: [127.0.0.1:9]}\nroutes:\n  - match: {path_prefix: /}\n"
                   "    upstream: up\n    plugins:\n      - rate_limit: %s\n" % __import__("json").dumps(block))
    out = subprocess.run([BIN, "check", "-c", str(cfg)], capture_output=True, text=True, env=sanitizer_env(),
                         timeout=30)
    assert out.returncode != 0, out
    assert re.search(r"p\.yaml:\d+:\d+: .*" + re.escape(err), out.stderr), out.stderr


def test_100_reloads_under_load_keep_counts(portico, echo):
    """Issue 9 figure: SIGHUP 100 times while clients keep sending; no
    request fails, and the limit admits exactly its quota over the whole
    run (a counter reset by a reload would admit more). Then a reload that
    changes the limit starts it afresh."""
    quota = 300

    def cfg(k, requests=quota):
        c = simple_config(echo.addr, workers=2, route_extra={"name": "main", "plugins": [
            {"headers": {"response": {"set": {"X-Gen": str(k)}}}},
            rl([{"name": "q", "requests": requests, "per": "1h"}], key="route")]})
        return c

    p = portico(cfg(0))
    counts = {}
    errors = []
    stop = threading.Event()
    lock = threading.Lock()

    def client(i):
        try:
            while not stop.is_set():
                with Client(p.port, timeout=20) as c:
                    for _ in range(20):
                        r = c.request("GET", "/c%d" % i)
                        with lock:
                            counts[r.status] = counts.get(r.status, 0) + 1
                        if r.status not in (200, 429):
                            errors.append(r)
                        if stop.is_set():
                            return
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    ts = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for k in range(1, 101):
        p.write_config(cfg(k))
        p.signal(signal.SIGHUP)
        wait_reloaded(p, k)
    stop.set()
    for t in ts:
        t.join(30)
    assert errors == [], errors[:5]
    assert counts.get(200) == quota, counts
    assert counts.get(429, 0) > 0, counts
    assert request(p.port, "GET", "/x").header("X-Gen") == "100"
    p.write_config(cfg(101, requests=quota + 1))
    p.signal(signal.SIGHUP)
    wait_reloaded(p, 101)
    assert request(p.port, "GET", "/x").status == 200


def test_requests_without_credentials_use_no_quota(portico, echo):
    """rate_limit after key_auth (key: route): a request without a key gets
    its 401 before the limit counts it."""
    key = "quota-key-0123456789abcd"
    p = portico(simple_config(echo.addr, consumers=[
        {"name": "a", "credentials": {"keys": [{"key_sha256": hashlib.sha256(key.encode()).hexdigest()}]}}],
        route_extra={"plugins": [{"key_auth": {}}, rl([{"requests": 2, "per": "1h"}], key="route")]}))
    for _ in range(5):
        r = request(p.port, "GET", "/x")
        assert r.status == 401 and r.header("RateLimit") is None, r
    assert [request(p.port, "GET", "/x", headers={"X-API-Key": key}).status for _ in range(3)] == [200, 200, 429]
