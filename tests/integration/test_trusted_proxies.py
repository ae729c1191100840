"""Client address resolution: X-Forwarded-For is believed only when the peer
is a configured trusted proxy (rightmost untrusted hop wins); X-Real-IP
always carries the address Portico decided on (client copies replaced);
X-Forwarded-For is forwarded as received plus the peer. The resolved
address is what ip_restriction and the access log see."""
import json
import subprocess
import time

from conftest import BIN, free_port, simple_config
from upstreams import problem_check, request


def last_access(p):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = p.access_lines()
        if lines:
            return json.loads(lines[-1])
        time.sleep(0.05)
    raise AssertionError("no access log line")


def test_without_trusted_proxies_xff_is_not_believed(portico, echo):
    cfg = simple_config(echo.addr)
    cfg["routes"][0]["plugins"] = [{"ip_restriction": {"deny": ["1.2.3.4"]}}]
    p = portico(cfg)
    r = request(p.port, "GET", "/a", headers={"X-Forwarded-For": "1.2.3.4", "X-Real-IP": "6.6.6.6"})
    assert r.status == 200  # the spoofed address is not the client
    q = echo.requests[-1]
    assert q.header("X-Forwarded-For") == "1.2.3.4, 127.0.0.1"
    assert q.header_all("X-Real-IP") == ["127.0.0.1"]
    assert last_access(p)["client"] == "127.0.0.1"


def test_trusted_chain_resolves_rightmost_untrusted(portico, echo):
    cfg = simple_config(echo.addr, trusted_proxies=["127.0.0.1", "10.0.0.0/8"])
    cfg["routes"][0]["plugins"] = [{"ip_restriction": {"deny": ["203.0.113.0/24"]}}]
    p = portico(cfg)
    r = request(p.port, "GET", "/b", headers={"X-Forwarded-For": "198.51.100.7, 10.1.2.3"})
    assert r.status == 200
    q = echo.requests[-1]
    assert q.header("X-Real-IP") == "198.51.100.7"
    assert q.header("X-Forwarded-For") == "198.51.100.7, 10.1.2.3, 127.0.0.1"
    assert last_access(p)["client"] == "198.51.100.7"
    n = len(echo.requests)
    problem_check(request(p.port, "GET", "/c", headers={"X-Forwarded-For": "203.0.113.9, 10.0.0.5"}), 403)
    assert len(echo.requests) == n


def test_spoofed_left_entries_are_ignored(portico, echo):
    p = portico(simple_config(echo.addr, trusted_proxies=["127.0.0.1"]))
    # a client prepends a fake address; the trusted proxy appended the real one
    request(p.port, "GET", "/d", headers={"X-Forwarded-For": "6.6.6.6, 8.8.8.8"})
    assert echo.requests[-1].header("X-Real-IP") == "8.8.8.8"


def test_multiple_xff_fields_form_one_list(portico, echo):
    p = portico(simple_config(echo.addr, trusted_proxies=["127.0.0.1", "10.0.0.0/8"]))
    request(p.port, "GET", "/e", headers=[("X-Forwarded-For", "192.0.2.1"), ("X-Forwarded-For", "10.9.9.9")])
    q = echo.requests[-1]
    assert q.header("X-Real-IP") == "192.0.2.1"
    assert q.header_all("X-Forwarded-For") == ["192.0.2.1, 10.9.9.9, 127.0.0.1"]


def test_garbage_entry_stops_the_walk(portico, echo):
    p = portico(simple_config(echo.addr, trusted_proxies=["127.0.0.1", "10.0.0.0/8"]))
    request(p.port, "GET", "/f", headers={"X-Forwarded-For": "1.1.1.1, not-an-ip, 10.0.0.7"})
    # 10.0.0.7 is trusted, "not-an-ip" cannot be believed: the client is the last good hop
    assert echo.requests[-1].header("X-Real-IP") == "10.0.0.7"


def test_trusted_proxies_config_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("listen: [\"127.0.0.1:%d\"]\n"
                    "trusted_proxies: [10.0.0.1/8]\n"
                    "routes:\n"
                    "  - plugins: [{direct_response: {status: 200}}]\n" % free_port())
    res = subprocess.run([BIN, "check", "-c", str(path)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 1
    assert "%s:2:" % path in res.stderr and "host bits" in res.stderr, res.stderr


def test_forwarded_header_when_configured(portico, echo):
    cfg = simple_config(echo.addr, trusted_proxies=["127.0.0.1", "10.0.0.0/8"], client_ip_header="Forwarded")
    p = portico(cfg)
    request(p.port, "GET", "/g", headers={"Forwarded": 'for=198.51.100.7;proto=https, for="10.1.2.3:8080"'})
    assert echo.requests[-1].header("X-Real-IP") == "198.51.100.7"
    request(p.port, "GET", "/h", headers={"Forwarded": 'for="[2001:db8:cafe::17]:4711";by=10.0.0.1'})
    assert echo.requests[-1].header("X-Real-IP") == "2001:db8:cafe::17"
    # an obfuscated or unknown hop cannot be believed: the walk stops there
    request(p.port, "GET", "/i", headers={"Forwarded": "for=203.0.113.5, for=unknown"})
    assert echo.requests[-1].header("X-Real-IP") == "127.0.0.1"
    # X-Forwarded-For is not read in this mode
    request(p.port, "GET", "/j", headers={"X-Forwarded-For": "192.0.2.99"})
    assert echo.requests[-1].header("X-Real-IP") == "127.0.0.1"


def test_forwarded_ignored_by_default(portico, echo):
    p = portico(simple_config(echo.addr, trusted_proxies=["127.0.0.1"]))
    request(p.port, "GET", "/k", headers={"Forwarded": "for=198.51.100.7"})
    assert echo.requests[-1].header("X-Real-IP") == "127.0.0.1"
