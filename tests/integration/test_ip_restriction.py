"""ip_restriction: allow/deny lists by client address, globally and per
route. The test clients connect from 127.0.0.1 (and from ::1 where the
IPv6 test listener is used)."""

import re
import socket
import subprocess
import time

from conftest import BIN, free_port, sanitizer_env, simple_config
from upstreams import Client, ConnReader, build_request, problem_check, read_response, request

DETAIL = "client address not allowed"


def rejected(r, status=403):
    doc = problem_check(r, status)
    assert doc["detail"] == DETAIL, doc
    return doc


def assert_nothing_upstream(echo):
    time.sleep(0.1)  # anything sent would have arrived by now
    assert echo.requests == [] and echo.partial == [], (echo.requests, echo.partial)
    assert echo.connections == 0 and echo.bytes_received == 0


def test_deny_loopback_rejects_with_problem_json(portico, echo):
    p = portico(simple_config(echo.addr, plugins=[{"ip_restriction": {"deny": ["127.0.0.0/8"]}}]))
    with Client(p.port) as c:
        r = c.request("GET", "/anything")
        rejected(r, 403)
        # The connection stays usable: the rejection is an ordinary response.
        r = c.request("GET", "/again")
        rejected(r, 403)
    assert_nothing_upstream(echo)


def test_deny_other_network_passes(portico, echo):
    p = portico(simple_config(echo.addr, plugins=[
        {"ip_restriction": {"deny": ["10.0.0.0/8", "127.0.0.2", "2001:db8::/32"]}}]))
    r = request(p.port, "GET", "/ok")
    assert r.status == 200 and r.json()["path"] == "/ok"
    assert len(echo.wait_requests(1)) == 1


def test_allow_exact_address_passes(portico, echo):
    p = portico(simple_config(echo.addr, plugins=[
        {"ip_restriction": {"allow": ["10.0.0.0/8", "2001:db8::/32", "127.0.0.1"]}}]))
    r = request(p.port, "GET", "/in")
    assert r.status == 200
    assert echo.last().path == "/in"


def test_allow_other_network_only_rejects(portico, echo):
    p = portico(simple_config(echo.addr, plugins=[{"ip_restriction": {"allow": ["10.0.0.0/8"]}}]))
    rejected(request(p.port, "GET", "/x"), 403)
    rejected(request(p.port, "POST", "/x", body=b"payload"), 403)
    assert_nothing_upstream(echo)


def test_deny_wins_over_allow(portico, echo):
    p = portico(simple_config(echo.addr, plugins=[
        {"ip_restriction": {"allow": ["127.0.0.0/8"], "deny": ["127.0.0.1/32"]}}]))
    rejected(request(p.port, "GET", "/x"), 403)
    assert_nothing_upstream(echo)


def test_custom_status(portico, echo):
    p = portico(simple_config(echo.addr, plugins=[
        {"ip_restriction": {"deny": ["127.0.0.1"], "status": 451}}]))
    doc = rejected(request(p.port, "GET", "/x"), 451)
    assert doc["status"] == 451
    assert_nothing_upstream(echo)


def test_per_route_and_global(portico, echo):
    cfg = simple_config(echo.addr, plugins=[{"ip_restriction": {"allow": ["127.0.0.0/8", "::1"]}}])
    cfg["routes"].insert(0, {"name": "admin", "match": {"path_prefix": "/admin"}, "upstream": "up",
                             "plugins": [{"ip_restriction": {"allow": ["192.168.0.0/16"], "status": 404}}]})
    cfg["routes"].insert(0, {"name": "internal", "match": {"path_prefix": "/internal"}, "upstream": "up",
                             "plugins": [{"ip_restriction": {"deny": ["127.0.0.1"]}}]})
    p = portico(cfg)
    # The global list lets loopback in; the route lists then decide.
    r = request(p.port, "GET", "/public")
    assert r.status == 200
    rejected(request(p.port, "GET", "/admin/users"), 404)
    rejected(request(p.port, "GET", "/internal/x"), 403)
    r = request(p.port, "GET", "/public/again")
    assert r.status == 200
    assert [q.path for q in echo.wait_requests(2)] == ["/public", "/public/again"]


def test_global_rejection_applies_to_every_route(portico, echo):
    cfg = simple_config(echo.addr, plugins=[{"ip_restriction": {"allow": ["10.0.0.0/8"]}}])
    cfg["routes"].insert(0, {"name": "health", "match": {"path": "/health"}, "plugins": [
        {"direct_response": {"status": 200, "body": "ok"}}]})
    p = portico(cfg)
    rejected(request(p.port, "GET", "/health"), 403)
    rejected(request(p.port, "GET", "/other"), 403)
    assert_nothing_upstream(echo)


def test_response_plugins_apply_to_the_rejection(portico, echo):
    p = portico(simple_config(echo.addr, plugins=[
        {"request_id": {}},
        {"headers": {"response": {"set": {"X-Gateway": "portico"}}}},
        {"ip_restriction": {"deny": ["127.0.0.1"]}},
    ]))
    r = request(p.port, "GET", "/x")
    doc = rejected(r, 403)
    assert r.header("X-Gateway") == "portico"
    rid = r.header("X-Request-Id")
    assert rid and doc.get("request_id") == rid
    assert_nothing_upstream(echo)


def _v6_request(port, target):
    s = socket.create_connection(("::1", port), timeout=10)
    try:
        s.sendall(build_request("GET", target))
        return read_response(ConnReader(s))
    finally:
        s.close()


def test_ipv6_client(portico, echo):
    port = free_port()
    cfg = simple_config(echo.addr, plugins=[{"ip_restriction": {"deny": ["::1/128"]}}])
    cfg["listen"] = ["127.0.0.1:%d" % port, "[::1]:%d" % port]
    p = portico(cfg, port=port)
    rejected(_v6_request(p.port, "/v6"), 403)
    r = request(p.port, "GET", "/v4")
    assert r.status == 200
    assert [q.path for q in echo.wait_requests(1)] == ["/v4"]


def test_ipv6_allow_list_rejects_ipv4_client(portico, echo):
    port = free_port()
    cfg = simple_config(echo.addr, plugins=[{"ip_restriction": {"allow": ["::/0"]}}])
    cfg["listen"] = ["127.0.0.1:%d" % port, "[::1]:%d" % port]
    p = portico(cfg, port=port)
    assert _v6_request(p.port, "/v6").status == 200
    rejected(request(p.port, "GET", "/v4"), 403)  # ::/0 covers IPv6 clients only
    assert [q.path for q in echo.wait_requests(1)] == ["/v6"]


# ---------------------------------------------------------------------------
# `portico check`
# ---------------------------------------------------------------------------

def run_check(tmp_path, text):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    res = subprocess.run([BIN, "check", "-c", str(f)], capture_output=True, text=True, timeout=20,
                         env=sanitizer_env())
    assert "AddressSanitizer" not in res.stderr and "runtime error:" not in res.stderr, res.stderr
    return str(f), res


def test_check_rejects_host_bits_with_position(tmp_path):
    path, res = run_check(tmp_path, (
        "listen: [\"127.0.0.1:%d\"]\n"
        "upstreams: {u: {targets: [\"127.0.0.1:1\"]}}\n"
        "plugins:\n"
        "  - ip_restriction:\n"
        "      allow:\n"
        "        - 10.0.0.0/8\n"
        "        - 10.0.0.1/8\n"
        "routes:\n"
        "  - match: {path_prefix: /}\n"
        "    upstream: u\n") % free_port())
    assert res.returncode == 1, res.stderr
    want = "%s:7:11: ip_restriction.allow: 10.0.0.1/8: host bits set; did you mean 10.0.0.0/8?" % path
    assert want in res.stderr.splitlines(), res.stderr


def test_check_rejects_bad_entries_on_a_route(tmp_path):
    path, res = run_check(tmp_path, (
        "listen: [\"127.0.0.1:%d\"]\n"
        "upstreams: {u: {targets: [\"127.0.0.1:1\"]}}\n"
        "routes:\n"
        "  - match: {path_prefix: /}\n"
        "    upstream: u\n"
        "    plugins:\n"
        "      - ip_restriction: {deny: [\"2001:db8::/129\", 10.0.0.300], status: 302}\n") % free_port())
    assert res.returncode == 1, res.stderr
    p = re.escape(path)
    assert re.search(r"^%s:7:33: .*2001:db8::/129: prefix length 129 out of range" % p, res.stderr, re.M), res.stderr
    assert re.search(r"^%s:7:51: .*10\.0\.0\.300: not a valid" % p, res.stderr, re.M), res.stderr
    assert re.search(r"^%s:7:72: .*401\.\.499" % p, res.stderr, re.M), res.stderr


def test_check_requires_a_list(tmp_path):
    path, res = run_check(tmp_path, (
        "listen: [\"127.0.0.1:%d\"]\n"
        "plugins:\n"
        "  - ip_restriction: {status: 403}\n"
        "  - ip_restriction: {allow: []}\n") % free_port())
    assert res.returncode == 1, res.stderr
    p = re.escape(path)
    assert re.search(r"^%s:3:\d+: .*at least one of 'allow' or 'deny'" % p, res.stderr, re.M), res.stderr
    assert re.search(r"^%s:4:29: .*allow: empty list" % p, res.stderr, re.M), res.stderr


def test_check_accepts_valid_config(tmp_path):
    _, res = run_check(tmp_path, (
        "listen: [\"127.0.0.1:%d\"]\n"
        "upstreams: {u: {targets: [\"127.0.0.1:1\"]}}\n"
        "plugins:\n"
        "  - ip_restriction:\n"
        "      allow: [10.0.0.0/8, \"2001:db8::/32\", 127.0.0.1]\n"
        "      deny:  [10.1.2.0/24]\n"
        "      status: 403\n"
        "routes:\n"
        "  - match: {path_prefix: /}\n"
        "    upstream: u\n") % free_port())
    assert res.returncode == 0, res.stderr
