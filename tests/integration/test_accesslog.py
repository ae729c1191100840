"""Access log: one JSON object per line with known keys and values; SIGUSR1
reopens the file (log rotation); stdout and disabled modes."""

import json
import os
import re
import signal
import time

from conftest import simple_config
from upstreams import request

KEYS = {"time", "request_id", "client", "method", "path", "route", "upstream", "status",
        "bytes_in", "bytes_out", "duration_ms", "upstream_ms", "attempts"}


def wait_for_entry(p, pred, timeout=5, reader=None):
    """Polls the access log until an entry satisfying pred appears."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        lines = reader() if reader else p.access_lines()
        seen = []
        for ln in lines:
            entry = json.loads(ln)  # every line must be valid JSON
            seen.append(entry)
            if pred(entry):
                return entry
        time.sleep(0.05)
    raise AssertionError("no matching access log entry within %ss; entries: %r" % (timeout, seen[-10:]))


def test_access_log_entry_for_known_request(portico, echo):
    p = portico(simple_config(echo.addr, plugins=[{"request_id": {}}],
                              route_extra={"name": "logroute"}))
    start = time.time()
    r = request(p.port, "POST", "/log/path?x=1", headers={"X-Request-Id": "log-test-1"}, body=b"hello")
    assert r.status == 200
    e = wait_for_entry(p, lambda e: e.get("request_id") == "log-test-1")
    assert KEYS <= set(e), "missing keys: %r" % (KEYS - set(e))
    assert e["method"] == "POST"
    assert e["path"] in ("/log/path?x=1", "/log/path")
    assert e["route"] == "logroute"
    assert e["upstream"] == echo.addr
    assert e["status"] == 200
    assert e["client"] == "127.0.0.1"
    assert isinstance(e["bytes_in"], int) and e["bytes_in"] >= 5
    assert isinstance(e["bytes_out"], int) and e["bytes_out"] >= len(r.body)
    assert isinstance(e["duration_ms"], (int, float)) and 0 <= e["duration_ms"] < 10000
    assert isinstance(e["upstream_ms"], (int, float)) and 0 <= e["upstream_ms"] <= e["duration_ms"] + 1
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)$", e["time"]), e["time"]
    # the timestamp is the real wall clock (request start), in UTC
    t = time.mktime(time.strptime(e["time"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert abs(t - start) < 5, (e["time"], start)


def test_access_log_generated_request_id_matches_response(portico, echo):
    p = portico(simple_config(echo.addr, plugins=[{"request_id": {}}]))
    r = request(p.port, "GET", "/gen")
    rid = r.header("X-Request-Id")
    e = wait_for_entry(p, lambda e: e.get("path", "").startswith("/gen"))
    assert e["request_id"] == rid


def test_access_log_404_and_direct_response(portico, echo):
    cfg = simple_config(echo.addr, route_extra={"name": "api", "match": {"path_prefix": "/api"}})
    cfg["routes"].append({"name": "local", "match": {"path": "/local"},
                          "plugins": [{"direct_response": {"status": 201, "body": "made"}}]})
    p = portico(cfg)
    assert request(p.port, "GET", "/missing").status == 404
    assert request(p.port, "GET", "/local").status == 201
    e404 = wait_for_entry(p, lambda e: e.get("path", "").startswith("/missing"))
    assert e404["status"] == 404
    assert e404["route"] in ("", None)
    assert e404["upstream"] in ("", None)
    assert e404["upstream_ms"] is None
    elocal = wait_for_entry(p, lambda e: e.get("path", "").startswith("/local"))
    assert elocal["status"] == 201 and elocal["route"] == "local"
    assert elocal["upstream"] in ("", None)
    assert elocal["bytes_out"] >= 4


def test_access_log_bad_request_logged(portico, echo):
    p = portico(simple_config(echo.addr))
    from upstreams import Client
    with Client(p.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        assert c.read_response().status == 400
    e = wait_for_entry(p, lambda e: e.get("status") == 400)
    assert e["client"] == "127.0.0.1"
    assert e["bytes_in"] > 0, "bytes received from the client not counted: %r" % e


def test_access_log_escapes_hostile_values(portico, echo):
    p = portico(simple_config(echo.addr))
    r = request(p.port, "GET", '/q?a="b"\\c%22')
    assert r.status == 200
    e = wait_for_entry(p, lambda e: "a=" in e.get("path", ""))
    assert e["path"] == '/q?a="b"\\c%22'


def test_sigusr1_reopens_log(portico, echo):
    p = portico(simple_config(echo.addr))
    assert request(p.port, "GET", "/before").status == 200
    wait_for_entry(p, lambda e: e["path"].startswith("/before"))
    rotated = p.access_log_path + ".1"
    os.rename(p.access_log_path, rotated)
    p.signal(signal.SIGUSR1)
    deadline = time.monotonic() + 5
    i = 0
    while not os.path.exists(p.access_log_path) or not p.access_lines():
        assert time.monotonic() < deadline, "no new log file after SIGUSR1"
        request(p.port, "GET", "/during%d" % i)
        i += 1
        time.sleep(0.05)
    assert request(p.port, "GET", "/after").status == 200
    wait_for_entry(p, lambda e: e["path"].startswith("/after"))
    with open(rotated) as f:
        old = [json.loads(ln) for ln in f if ln.strip()]
    assert any(e["path"].startswith("/before") for e in old)
    assert not any(e["path"].startswith("/after") for e in old)
    assert p.alive()


def test_access_log_stdout(portico, echo):
    cfg = simple_config(echo.addr, access_log={"enabled": True, "path": "stdout"})
    p = portico(cfg)
    assert request(p.port, "GET", "/to-stdout").status == 200

    def stdout_lines():
        return [ln for ln in p.stdout().splitlines() if ln.startswith("{")]
    e = wait_for_entry(p, lambda e: e.get("path", "").startswith("/to-stdout"), reader=stdout_lines)
    assert e["status"] == 200


def test_access_log_disabled(portico, echo):
    p2 = portico(simple_config(echo.addr, access_log={"enabled": False}))
    assert request(p2.port, "GET", "/quiet").status == 200
    time.sleep(0.3)
    assert "/quiet" not in p2.stdout()
    assert not os.path.exists(p2.access_log_path)


def test_access_log_durations_reflect_delay(portico, upstream):
    import time as _t
    slow = upstream(lambda req: [0.3, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    p = portico(simple_config(slow.addr, route_extra={"plugins": [{"delay": {"duration": "200ms"}}]}))
    assert request(p.port, "GET", "/timed").status == 200
    e = wait_for_entry(p, lambda e: e.get("path", "").startswith("/timed"))
    assert e["duration_ms"] >= 490, e
    assert 290 <= e["upstream_ms"] <= e["duration_ms"], e
    assert e["duration_ms"] < 10000


def test_access_log_byte_counts_are_wire_bytes(portico, echo):
    """bytes_in / bytes_out count what crossed the client connection: the
    request head plus body, the response head plus body."""
    from upstreams import Client, build_request
    p = portico(simple_config(echo.addr))
    raw = build_request("POST", "/bytes", body=b"0123456789")
    with Client(p.port) as c:
        c.send(raw)
        r = c.read_response()
    assert r.status == 200 and r.framing == "length"
    e = wait_for_entry(p, lambda e: e.get("path", "").startswith("/bytes"))
    assert e["bytes_in"] == len(raw), (e["bytes_in"], len(raw))
    assert e["bytes_out"] == len(r.raw_head) + len(r.body), (e["bytes_out"], len(r.raw_head), len(r.body))


def read_entries(path):
    try:
        with open(path) as f:
            return [json.loads(ln) for ln in f if ln.strip()]
    except FileNotFoundError:
        return []


def reload_with(p, cfg, marker_count):
    p.write_config(cfg)
    p.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while p.stderr().count("reloaded") < marker_count:
        assert time.monotonic() < deadline, p.stderr()
        time.sleep(0.05)


def test_reload_switches_disables_and_reenables_the_access_log(portico, echo, tmp_path):
    p = portico(simple_config(echo.addr))
    assert request(p.port, "GET", "/first").status == 200
    wait_for_entry(p, lambda e: e["path"] == "/first")
    # another file: later requests go there, earlier ones stay where they were
    second = str(tmp_path / "second.log")
    cfg = simple_config(echo.addr, access_log={"enabled": True, "path": second})
    reload_with(p, cfg, 1)
    assert request(p.port, "GET", "/second").status == 200
    wait_for_entry(p, lambda e: e["path"] == "/second", reader=lambda: [
        json.dumps(e) for e in read_entries(second)])
    assert [e["path"] for e in read_entries(p.access_log_path)] == ["/first"]
    # disabled: nothing is written anywhere
    reload_with(p, simple_config(echo.addr, access_log={"enabled": False}), 2)
    assert request(p.port, "GET", "/quiet").status == 200
    # enabled again, back on the first file
    reload_with(p, simple_config(echo.addr), 3)
    assert request(p.port, "GET", "/third").status == 200
    wait_for_entry(p, lambda e: e["path"] == "/third")
    everything = [e["path"] for e in read_entries(p.access_log_path) + read_entries(second)]
    assert "/quiet" not in everything and sorted(everything) == ["/first", "/second", "/third"], everything


def test_reload_with_unopenable_access_log_is_refused(portico, echo, tmp_path):
    p = portico(simple_config(echo.addr))
    bad = simple_config(echo.addr, access_log={"enabled": True, "path": str(tmp_path / "no-such-dir" / "a.log")})
    bad["routes"][0]["match"] = {"path_prefix": "/only-new"}
    p.write_config(bad)
    p.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload refused" not in p.stderr():
        assert time.monotonic() < deadline, p.stderr()
        time.sleep(0.05)
    assert "cannot open access log" in p.stderr()
    assert request(p.port, "GET", "/still-old").status == 200   # old routes, old log
    wait_for_entry(p, lambda e: e["path"] == "/still-old")
