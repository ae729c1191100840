"""rate_limit in cluster mode (issue 9): one Redis (redis-server started by
the test) shared by several Portico processes — the limit holds across
them; the sliding window there too; Redis stopped: on_redis_error local /
allow / deny hold and no request hangs; Redis back: decisions resume."""

import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from conftest import free_port, simple_config
from test_admin_metrics import admin_cfg, scrape, value
from test_rate_limit import live, policy, refused, rl, statuses
from upstreams import problem_check, request


class Redis:
    def __init__(self, tmp):
        self.tmp = tmp
        self.port = free_port()
        self.proc = None

    def start(self):
        exe = shutil.which("redis-server")
        assert exe, "redis-server missing: run scripts/install-deps.sh"
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.tmp)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path).start()
    yield r
    r.stop()


def cfg_for(echo, redis, limits, workers=2, **kw):
    block = dict(kw, mode="redis", redis={"address": "127.0.0.1:%d" % redis.port, "command_timeout": "200ms"})
    c = simple_config(echo.addr, workers=workers, route_extra={"plugins": [rl(limits, key="route", **block)]})
    return c


def test_limit_holds_across_three_gateways(portico, echo, redis):
    """Three Portico processes, one Redis: together they admit exactly the limit."""
    ps = [portico(cfg_for(echo, redis, [{"requests": 12, "per": "1h"}])) for _ in range(3)]
    results = []
    for i in range(30):
        results.append(request(ps[i % 3].port, "GET", "/x").status)
    assert results.count(200) == 12 and results.count(429) == 18, results
    r = request(ps[0].port, "GET", "/x")
    refused(r)
    assert live(r)["12/3600s"][0] == 0 and policy(r) == {"12/3600s": (12, 3600)}


def test_sliding_window_and_give_back_in_redis(portico, echo, redis):
    p = portico(cfg_for(echo, redis, [{"name": "big", "requests": 5, "per": "1h"},
                                      {"name": "small", "requests": 3, "per": "1h", "algorithm": "sliding_window"}]))
    rs = statuses(p.port, 5)
    assert [r.status for r in rs] == [200, 200, 200, 429, 429]
    assert [live(r)["small"][0] for r in rs[:3]] == [2, 1, 0]
    assert live(rs[4])["big"][0] == 2  # nothing written for refused requests


def test_redis_down_local_fallback_then_back(portico, echo, redis):
    # one worker: "Redis is back" is then one connection's state
    cfg, aport = admin_cfg(cfg_for(echo, redis, [{"requests": 3, "per": "1h"}], workers=1))
    p = portico(cfg)
    assert [r.status for r in statuses(p.port, 4)] == [200, 200, 200, 429]
    redis.stop()
    # local fallback: the process's own counters, the same limit
    t0 = time.monotonic()
    rs = statuses(p.port, 4)
    assert [r.status for r in rs] == [200, 200, 200, 429]
    assert time.monotonic() - t0 < 5  # nobody waited for a dead Redis
    assert value(scrape(aport), "portico_rate_limit_redis_errors_total") >= 4
    redis.start()  # a fresh Redis: counting there starts afresh
    ok = None
    for _ in range(100):  # the client reconnects with backoff
        r = request(p.port, "GET", "/x")
        if r.status == 200 and value(scrape(aport), "portico_redis_connections_ready") >= 1:
            ok = r
            break
        time.sleep(0.1)
    assert ok is not None
    errs = value(scrape(aport), "portico_rate_limit_redis_errors_total")
    statuses(p.port, 3)
    assert value(scrape(aport), "portico_rate_limit_redis_errors_total") == errs  # decided by Redis again


@pytest.mark.parametrize("policy_name,status", [("allow", 200), ("deny", 503)])
def test_redis_down_allow_or_deny(portico, echo, redis, policy_name, status):
    p = portico(cfg_for(echo, redis, [{"requests": 1, "per": "1h"}], on_redis_error=policy_name))
    assert request(p.port, "GET", "/x").status == 200
    redis.stop()
    for _ in range(3):
        r = request(p.port, "GET", "/x")
        assert r.status == status, r
        if status == 503:
            problem_check(r, 503)
            assert r.header("Retry-After") == "1"
        else:
            assert r.header("RateLimit") is None  # nothing was counted


def test_redis_killed_under_load_no_request_hangs(portico, echo, redis):
    p = portico(cfg_for(echo, redis, [{"requests": 1000000, "per": "1h"}]))
    stop = threading.Event()
    counts = {}
    errors = []
    lock = threading.Lock()

    def client():
        try:
            while not stop.is_set():
                r = request(p.port, "GET", "/l", timeout=5)
                with lock:
                    counts[r.status] = counts.get(r.status, 0) + 1
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    ts = [threading.Thread(target=client) for _ in range(4)]
    for t in ts:
        t.start()
    time.sleep(0.5)
    redis.stop()
    time.sleep(0.5)
    redis.start()
    time.sleep(1.0)
    stop.set()
    for t in ts:
        t.join(20)
    assert errors == [], errors[:3]
    assert set(counts) == {200}, counts  # local fallback with a limit never reached


def test_config_errors(tmp_path):
    import json
    import re

    from conftest import BIN, sanitizer_env
    cases = [
        ({"mode": "redis", "limits": [{"requests": 1, "per": "1s"}]}, "rate_limit.redis"),
        ({"mode": "cluster", "limits": [{"requests": 1, "per": "1s"}]}, "'mode' must be local or redis"),
        ({"redis": {"address": "127.0.0.1:6379"}, "limits": [{"requests": 1, "per": "1s"}]}, "needs mode: redis"),
        ({"mode": "redis", "redis": {"address": "127.0.0.1:6379"}, "on_redis_error": "maybe",
          "limits": [{"requests": 1, "per": "1s"}]}, "local, allow or deny"),
    ]
    for block, err in cases:
        cfg = tmp_path / "c.yaml"
        cfg.write_text("listen: [{address: 127.0.0.1:1}]\nroutes:\n  - match: {path_prefix: /}\n    plugins:\n"
                       "      - rate_limit: %s\n      - direct_response: {status: 200}\n" % json.dumps(block))
        out = subprocess.run([BIN, "check", "-c", str(cfg)], capture_output=True, text=True, env=sanitizer_env(),
                             timeout=30)
        assert out.returncode != 0 and re.search(r"c\.yaml:\d+:\d+: .*" + re.escape(err), out.stderr), (block, out.stderr)
