"""Plugins: direct_response, request_id, headers, delay, ordering (global
before route), and the problem+json error format."""

import re
import socket
import time

import pytest

from conftest import free_port, simple_config
from upstreams import HANG, Client, build_request, make_response, problem_check, request

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def test_direct_response(portico, echo):
    cfg = simple_config(echo.addr)
    cfg["routes"].insert(0, {"name": "dr", "match": {"path": "/dr"}, "plugins": [
        {"direct_response": {"status": 200, "headers": {"Content-Type": "application/json", "X-Local": "yes"},
                             "body": '{"ok":true}'}}]})
    p = portico(cfg)
    with Client(p.port) as c:
        r = c.request("GET", "/dr")
        assert r.status == 200
        assert r.body == b'{"ok":true}'
        assert r.header("Content-Type") == "application/json"
        assert r.header("X-Local") == "yes"
        assert r.header("Content-Length") == str(len(r.body)) or r.framing == "chunked"
        r = c.request("POST", "/dr", body=b"ignored body")  # the unread body must not desync
        assert r.status == 200 and r.body == b'{"ok":true}'
        if "close" in (r.header("Connection") or "").lower():
            assert c.wait_closed(5)
            c = Client(p.port)  # closing instead of draining the body is allowed
        r = c.request("GET", "/proxied")
        assert r.status == 200 and r.json()["path"] == "/proxied"
        c.close()
    assert [q.path for q in echo.requests] == ["/proxied"]


def test_direct_response_other_status_and_head(portico):
    p = portico({"routes": [{"name": "tea", "match": {"path_prefix": "/"}, "plugins": [
        {"direct_response": {"status": 418, "body": "short and stout"}}]}]})
    r = request(p.port, "GET", "/")
    assert r.status == 418 and r.body == b"short and stout"
    r = request(p.port, "HEAD", "/")
    assert r.status == 418 and r.body == b""


def test_direct_response_empty_body(portico):
    p = portico({"routes": [{"name": "n", "match": {"path_prefix": "/"}, "plugins": [
        {"direct_response": {"status": 204}}]}]})
    with Client(p.port) as c:
        r = c.request("GET", "/")
        assert r.status == 204 and r.body == b""
        assert c.request("GET", "/").status == 204


# ---------------------------------------------------------------------------
# request_id
# ---------------------------------------------------------------------------

@pytest.fixture
def rid_gw(portico, echo):
    p = portico(simple_config(echo.addr, plugins=[{"request_id": {}}]))
    return p, echo


def test_request_id_generated(rid_gw):
    p, echo = rid_gw
    r1 = request(p.port, "GET", "/a")
    r2 = request(p.port, "GET", "/b")
    id1, id2 = r1.header("X-Request-Id"), r2.header("X-Request-Id")
    assert id1 and HEX32.match(id1), id1
    assert id2 and HEX32.match(id2) and id2 != id1
    reqs = echo.wait_requests(2)
    assert reqs[0].header_all("X-Request-Id") == [id1]
    assert reqs[1].header_all("X-Request-Id") == [id2]


def test_request_id_propagated_when_valid(rid_gw):
    p, echo = rid_gw
    rid = "abc-123_DEF.xyz"
    r = request(p.port, "GET", "/a", headers={"X-Request-Id": rid})
    assert r.header("X-Request-Id") == rid
    assert echo.last().header_all("X-Request-Id") == [rid]


@pytest.mark.parametrize("bad", ["has space", "semi;colon", "quote\"d", "x" * 300, ""])
def test_request_id_replaced_when_invalid(rid_gw, bad):
    p, echo = rid_gw
    r = request(p.port, "GET", "/a", headers={"X-Request-Id": bad})
    assert r.status == 200
    rid = r.header("X-Request-Id")
    assert rid and HEX32.match(rid), rid
    assert echo.last().header_all("X-Request-Id") == [rid]


def test_request_id_untrusted_incoming_replaced(portico, echo):
    p = portico(simple_config(echo.addr, plugins=[{"request_id": {"trust_incoming": False}}]))
    r = request(p.port, "GET", "/a", headers={"X-Request-Id": "client-chosen"})
    rid = r.header("X-Request-Id")
    assert rid != "client-chosen" and HEX32.match(rid)
    assert echo.last().header_all("X-Request-Id") == [rid]


def test_request_id_custom_header_and_no_response_header(portico, echo):
    p = portico(simple_config(echo.addr, plugins=[
        {"request_id": {"header": "X-Trace-Id", "response_header": False}}]))
    r = request(p.port, "GET", "/a", headers={"X-Trace-Id": "trace-1"})
    assert r.header("X-Trace-Id") is None
    assert r.header("X-Request-Id") is None
    assert echo.last().header("X-Trace-Id") == "trace-1"


def test_request_id_in_problem_json_502(portico):
    p = portico(simple_config("127.0.0.1:%d" % free_port(), plugins=[{"request_id": {}}]))
    r = request(p.port, "GET", "/x")
    doc = problem_check(r, 502)
    rid = r.header("X-Request-Id")
    assert rid and HEX32.match(rid)
    assert doc.get("request_id") == rid


def test_request_id_in_problem_json_404(portico, echo):
    cfg = {"upstreams": {"up": {"targets": [echo.addr]}}, "plugins": [{"request_id": {}}],
           "routes": [{"name": "only", "match": {"path": "/only"}, "upstream": "up"}]}
    p = portico(cfg)
    r = request(p.port, "GET", "/missing", headers={"X-Request-Id": "trace-404"})
    doc = problem_check(r, 404)
    assert doc.get("request_id") == "trace-404"
    assert r.header("X-Request-Id") == "trace-404"


def test_request_id_in_problem_json_504(portico, upstream):
    up = upstream(lambda req: HANG)
    p = portico(simple_config(up.addr, plugins=[{"request_id": {}}], timeouts={"upstream_read": "1s"}))
    r = request(p.port, "GET", "/x", headers={"X-Request-Id": "slow-1"}, timeout=15)
    doc = problem_check(r, 504)
    assert doc.get("request_id") == "slow-1"
    assert up.last().header("X-Request-Id") == "slow-1"


def test_problem_json_without_request_id_plugin_has_no_request_id(portico):
    p = portico({"routes": [{"name": "x", "match": {"path": "/x"},
                             "plugins": [{"direct_response": {"status": 200}}]}]})
    doc = problem_check(request(p.port, "GET", "/nope"), 404)
    assert "request_id" not in doc or doc["request_id"]  # never an empty placeholder


# ---------------------------------------------------------------------------
# headers
# ---------------------------------------------------------------------------

def test_headers_plugin_request_side(portico, echo):
    p = portico(simple_config(echo.addr, plugins=[{"headers": {"request": {
        "set": {"X-A": "1", "X-New": "fresh"},
        "add": {"X-Multi": "b"},
        "remove": ["X-Secret", "x-also-secret"]}}}]))
    request(p.port, "GET", "/h", headers=[("X-A", "0"), ("X-A", "00"), ("X-Multi", "a"),
                                         ("X-Secret", "s"), ("X-Also-Secret", "t"), ("X-Keep", "k")])
    up = echo.last()
    assert up.header_all("X-A") == ["1"]
    assert up.header_all("X-New") == ["fresh"]
    multi = [v.strip() for val in up.header_all("X-Multi") for v in val.split(",")]
    assert multi == ["a", "b"]
    assert not up.has_header("X-Secret")
    assert not up.has_header("X-Also-Secret")
    assert up.header("X-Keep") == "k"


def test_headers_plugin_response_side(portico, upstream):
    up = upstream(lambda req: make_response(200, "OK", [("X-Internal", "1"), ("X-Gateway", "upstream"),
                                                        ("X-Multi", "a")], b"ok"))
    p = portico(simple_config(up.addr, plugins=[{"headers": {"response": {
        "set": {"X-Gateway": "portico"}, "add": {"X-Multi": "b"}, "remove": ["X-Internal"]}}}]))
    r = request(p.port, "GET", "/h")
    assert r.body == b"ok"
    assert r.header_all("X-Gateway") == ["portico"]
    assert r.header("X-Internal") is None
    multi = [v.strip() for val in r.header_all("X-Multi") for v in val.split(",")]
    assert multi == ["a", "b"]


def test_response_headers_apply_to_local_responses(portico):
    p = portico({"plugins": [{"headers": {"response": {"set": {"X-Gateway": "portico"}}}}],
                 "routes": [{"name": "dr", "match": {"path": "/dr"},
                             "plugins": [{"direct_response": {"status": 200, "body": "x"}}]}]})
    assert request(p.port, "GET", "/dr").header("X-Gateway") == "portico"
    r404 = request(p.port, "GET", "/nope")
    problem_check(r404, 404)


def test_global_plugins_run_before_route_plugins(portico, upstream):
    up = upstream(lambda req: make_response(200, "OK", [], ("order=" + (req.header("X-Order") or "")).encode()))
    cfg = {
        "upstreams": {"up": {"targets": [up.addr]}},
        "plugins": [{"headers": {"request": {"set": {"X-Order": "global"}},
                                 "response": {"set": {"X-Resp-Order": "global"}}}}],
        "routes": [{"name": "r", "match": {"path_prefix": "/"}, "upstream": "up",
                    "plugins": [{"headers": {"request": {"set": {"X-Order": "route"}},
                                             "response": {"set": {"X-Resp-Order": "route"}}}}]}],
    }
    p = portico(cfg)
    r = request(p.port, "GET", "/")
    # request side: global then route => the route's value wins
    assert r.body == b"order=route"
    # response side runs in the same order => the route's value wins again
    assert r.header_all("X-Resp-Order") == ["route"]


def test_global_request_id_visible_to_route_direct_response(portico):
    p = portico({"plugins": [{"request_id": {}}],
                 "routes": [{"name": "dr", "match": {"path": "/dr"},
                             "plugins": [{"direct_response": {"status": 200, "body": "x"}}]}]})
    r = request(p.port, "GET", "/dr", headers={"X-Request-Id": "given-1"})
    assert r.status == 200 and r.header("X-Request-Id") == "given-1"


# ---------------------------------------------------------------------------
# delay
# ---------------------------------------------------------------------------

def test_delay_then_proxy(portico, echo):
    cfg = simple_config(echo.addr, route_extra={"plugins": [{"delay": {"duration": "300ms"}}]})
    p = portico(cfg)
    start = time.monotonic()
    r = request(p.port, "GET", "/d", timeout=15)
    elapsed = time.monotonic() - start
    assert r.status == 200 and r.json()["path"] == "/d"
    assert elapsed >= 0.3
    assert elapsed < 10
    assert echo.last().received_at - start >= 0.29


def test_delay_then_direct_response(portico):
    p = portico({"routes": [{"name": "d", "match": {"path_prefix": "/"}, "plugins": [
        {"delay": {"duration": "200ms"}}, {"direct_response": {"status": 200, "body": "late"}}]}]})
    start = time.monotonic()
    r = request(p.port, "GET", "/")
    assert r.body == b"late"
    assert time.monotonic() - start >= 0.2


def test_delay_does_not_block_other_requests(portico, echo):
    cfg = simple_config(echo.addr)
    cfg["routes"].insert(0, {"name": "slow", "match": {"path_prefix": "/slow"}, "upstream": "up",
                             "plugins": [{"delay": {"duration": "2s"}}]})
    p = portico(cfg)
    slow = Client(p.port, timeout=15)
    slow.send(build_request("GET", "/slow"))
    start = time.monotonic()
    r = request(p.port, "GET", "/fast")
    fast_elapsed = time.monotonic() - start
    assert r.status == 200
    assert fast_elapsed < 1.5, "a paused request blocked the worker for %.2fs" % fast_elapsed
    assert slow.read_response().status == 200
    slow.close()


def test_client_disconnect_during_delay(portico, echo):
    cfg = simple_config(echo.addr, route_extra={"plugins": [{"delay": {"duration": "300ms"}}]})
    p = portico(cfg)
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", p.port))
        s.sendall(build_request("GET", "/gone"))
        s.close()
    time.sleep(0.6)  # the timers fire after the clients left
    r = request(p.port, "GET", "/still-fine")
    assert r.status == 200
    assert p.alive()


# ---------------------------------------------------------------------------
# config errors of plugins (reported by `check`)
# ---------------------------------------------------------------------------

def test_unknown_plugin_rejected(tmp_path):
    import subprocess
    from conftest import BIN
    cfg = tmp_path / "c.yaml"
    cfg.write_text('listen: ["127.0.0.1:%d"]\nplugins:\n  - no_such_plugin: {}\n' % free_port())
    res = subprocess.run([BIN, "check", "-c", str(cfg)], capture_output=True, text=True, timeout=10)
    assert res.returncode == 1
    assert re.search(r"%s:3:\d+: .*no_such_plugin" % re.escape(str(cfg)), res.stderr), res.stderr


def test_request_id_consistent_on_parse_error(portico, echo):
    """When an error response carries an X-Request-Id, its problem+json body
    carries the same id (and so does the access log)."""
    from test_accesslog import wait_for_entry
    p = portico(simple_config(echo.addr, plugins=[{"request_id": {}}]))
    with Client(p.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        r = c.read_response()
    doc = problem_check(r, 400)
    rid = r.header("X-Request-Id")
    if rid is not None:
        assert doc.get("request_id") == rid, (rid, doc)
        e = wait_for_entry(p, lambda e: e.get("status") == 400)
        assert e["request_id"] == rid
