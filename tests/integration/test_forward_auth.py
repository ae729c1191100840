"""forward_auth: every request is checked by a real auth service (a fake
upstream started by the test) before it reaches a real echo upstream.

Covers: allow with identity headers copied, forged identity headers
stripped (allowed, cached, failure-allowed and denied paths), denials passed
to the client (401 + WWW-Authenticate + body, 302 + Location + Set-Cookie,
5xx), fail-closed 503/504 problem+json and `failure: allow`, invalid and
oversized auth responses, the positive cache (hits, misses, expiry,
Cache-Control), what the auth request carries (method, normalised URI,
client address, selected headers, X-Request-Id), a client leaving while the
auth call stalls, HTTP/2 clients and an HTTPS auth upstream with
verification."""

import json
import socket
import subprocess
import threading
import time

import pytest

from conftest import BIN, free_port, simple_config
from h2util import H2, problem as h2_problem
from tlsutil import pki, tls_upstream  # noqa: F401 - fixtures
from upstreams import (Client, ConnReader, build_request, make_response, problem_check, read_server_request,
                       request, wait_for)

ALLOW = make_response(200, "OK", [("X-User-Id", "42"), ("X-User-Groups", "admins"),
                                  ("X-User-Groups", "dev"), ("X-Internal", "do-not-copy")])


class AuthService:
    """An auth service: `decide(req)` (settable by the test) returns the raw
    response bytes or a list of Upstream steps; every request is recorded."""

    def __init__(self, upstream, decide=None):
        self.decide = decide or (lambda req: ALLOW)
        self.up = upstream(lambda req: self.decide(req), name="auth")
        self.addr = self.up.addr

    @property
    def requests(self):
        return self.up.requests

    def count(self):
        return len(self.up.requests)


@pytest.fixture
def auth(upstream):
    return AuthService(upstream)


def fa_config(echo_addr, auth_addr, before=None, upstream_extra=None, **fa):
    """simple_config with an `auth` upstream and a global forward_auth."""
    cfg = simple_config(echo_addr)
    cfg["upstreams"]["auth"] = dict({"targets": [auth_addr]}, **(upstream_extra or {}))
    conf = {"upstream": "auth", "path": "/verify", "upstream_headers": ["X-User-Id", "X-User-Groups"]}
    conf.update(fa)
    cfg["plugins"] = list(before or []) + [{"forward_auth": conf}]
    return cfg


def echo_headers(resp):
    """The (name, value) pairs the echo upstream received."""
    assert resp.status == 200, resp
    return [tuple(h) for h in resp.json()["headers"]]


def values(pairs, name):
    return [v for n, v in pairs if n.lower() == name.lower()]


def dead_addr():
    """An address where nothing listens."""
    return "127.0.0.1:%d" % free_port()


# ---------------------------------------------------------------------------
# Allow / deny
# ---------------------------------------------------------------------------

def test_allow_copies_configured_headers(portico, echo, auth):
    p = portico(fa_config(echo.addr, auth.addr))
    r = request(p.port, "GET", "/orders/7?x=1", headers={"Authorization": "Bearer good"})
    hs = echo_headers(r)
    assert r.json()["target"] == "/orders/7?x=1"
    assert values(hs, "X-User-Id") == ["42"]
    assert values(hs, "X-User-Groups") == ["admins", "dev"]
    assert values(hs, "X-Internal") == []
    assert values(hs, "Authorization") == ["Bearer good"]  # the client's own header still travels
    assert auth.count() == 1


def test_forged_identity_headers_are_stripped(portico, echo, auth):
    p = portico(fa_config(echo.addr, auth.addr))
    forged = [("X-User-Id", "0"), ("x-user-id", "root"), ("X-User-Groups", "admins")]
    # The auth service allows and sets its own value: only that one arrives.
    r = request(p.port, "GET", "/", headers=forged)
    hs = echo_headers(r)
    assert values(hs, "X-User-Id") == ["42"]
    assert values(hs, "X-User-Groups") == ["admins", "dev"]
    # The auth service allows without identity headers: none arrive.
    auth.decide = lambda req: make_response(204, "No Content", content_length=False)
    r = request(p.port, "GET", "/", headers=forged)
    hs = echo_headers(r)
    assert values(hs, "X-User-Id") == [] and values(hs, "X-User-Groups") == []
    # The auth service never sees the forged copies either.
    for q in auth.requests:
        assert q.header("X-User-Id") is None


def test_deny_401_passes_status_selected_headers_and_body(portico, echo, auth):
    body = b'{"error":"invalid_token"}'
    auth.decide = lambda req: make_response(401, "Unauthorized", [
        ("WWW-Authenticate", 'Bearer realm="api", error="invalid_token"'),
        ("Content-Type", "application/json"), ("X-Internal", "secret"), ("X-User-Id", "42")], body)
    p = portico(fa_config(echo.addr, auth.addr, before=[{"request_id": {}}]))
    with Client(p.port) as c:
        r = c.request("GET", "/private", headers={"Authorization": "Bearer bad"})
        assert r.status == 401
        assert r.body == body
        assert r.header("Content-Type") == "application/json"
        assert r.header("WWW-Authenticate") == 'Bearer realm="api", error="invalid_token"'
        assert r.header("X-Internal") is None and r.header("X-User-Id") is None
        assert r.header("X-Request-Id")  # response plugins still run on a denial
        # The connection stays usable, and a POST body the upstream never saw does not desync it.
        r = c.request("POST", "/private", body=b"x" * 1000)
        assert r.status == 401 and r.body == body
    assert echo.requests == []


def test_deny_head_request(portico, echo, auth):
    auth.decide = lambda req: make_response(401, "Unauthorized", [("WWW-Authenticate", "Basic")],
                                            content_length=req.method != "HEAD")
    p = portico(fa_config(echo.addr, auth.addr))
    r = request(p.port, "HEAD", "/")
    assert r.status == 401 and r.body == b"" and r.header("WWW-Authenticate") == "Basic"
    assert auth.requests[-1].method == "HEAD"


def test_redirect_302_passed_with_location_and_cookie(portico, echo, auth):
    auth.decide = lambda req: make_response(302, "Found", [
        ("Location", "https://login.example/?rd=" + req.header("X-Forwarded-Uri")),
        ("Set-Cookie", "state=abc; HttpOnly"), ("Set-Cookie", "nonce=xyz"), ("Cache-Control", "no-store")])
    p = portico(fa_config(echo.addr, auth.addr))
    r = request(p.port, "GET", "/app/page?q=1")
    assert r.status == 302
    assert r.header("Location") == "https://login.example/?rd=/app/page?q=1"
    assert r.header_all("Set-Cookie") == ["state=abc; HttpOnly", "nonce=xyz"]
    assert r.header("Cache-Control") is None  # not in client_headers
    assert echo.requests == []


def test_client_headers_configurable(portico, echo, auth):
    auth.decide = lambda req: make_response(403, "Forbidden", [("X-Reason", "plan"), ("WWW-Authenticate", "x")],
                                            "no")
    p = portico(fa_config(echo.addr, auth.addr, client_headers=["X-Reason"]))
    r = request(p.port, "GET", "/")
    assert r.status == 403 and r.body == b"no"
    assert r.header("X-Reason") == "plan" and r.header("WWW-Authenticate") is None
    assert r.header("Content-Type") is None  # the auth service sent none


def test_auth_5xx_is_passed_through_even_with_failure_allow(portico, echo, auth):
    """A 5xx is an answer, not a failure: failure: allow never turns an auth
    service's error into access."""
    auth.decide = lambda req: make_response(500, "Internal Server Error", [("Content-Type", "text/plain")], "boom")
    p = portico(fa_config(echo.addr, auth.addr, failure="allow"))
    r = request(p.port, "GET", "/")
    assert r.status == 500 and r.body == b"boom"
    assert echo.requests == []


# ---------------------------------------------------------------------------
# Failures
# ---------------------------------------------------------------------------

def test_auth_unreachable_is_503_problem(portico, echo):
    p = portico(fa_config(echo.addr, dead_addr(), before=[{"request_id": {}}]))
    r = request(p.port, "GET", "/", headers={"X-User-Id": "0"})
    doc = problem_check(r, 503)
    assert "authorization service" in doc["detail"]
    assert doc.get("request_id") == r.header("X-Request-Id")
    assert echo.requests == []


def test_auth_slow_is_504_after_timeout(portico, echo, auth):
    auth.decide = lambda req: [3.0, ALLOW]
    p = portico(fa_config(echo.addr, auth.addr, timeout="300ms"))
    t0 = time.monotonic()
    r = request(p.port, "GET", "/")
    took = time.monotonic() - t0
    doc = problem_check(r, 504)
    assert "in time" in doc["detail"]
    assert 0.25 <= took < 2.0, took
    assert echo.requests == []


def test_failure_allow_lets_requests_through_without_identity(portico, echo):
    p = portico(fa_config(echo.addr, dead_addr(), failure="allow"))
    r = request(p.port, "GET", "/x", headers={"X-User-Id": "0", "Authorization": "Bearer t"})
    hs = echo_headers(r)
    assert values(hs, "X-User-Id") == []  # forged copy removed even then
    assert values(hs, "Authorization") == ["Bearer t"]


def test_failure_allow_on_timeout(portico, echo, auth):
    auth.decide = lambda req: [3.0, ALLOW]
    p = portico(fa_config(echo.addr, auth.addr, timeout="200ms", failure="allow"))
    r = request(p.port, "GET", "/", headers={"X-User-Groups": "admins"})
    hs = echo_headers(r)
    assert values(hs, "X-User-Groups") == []


def test_invalid_auth_response_is_503(portico, echo, auth):
    auth.decide = lambda req: b"HTTP/1.1 200 OK\r\nX-User-Id: 1\r\nContent-Length: zz\r\n\r\n"
    p = portico(fa_config(echo.addr, auth.addr))
    problem_check(request(p.port, "GET", "/"), 503)
    auth.decide = lambda req: [b"garbage\r\n\r\n", "CLOSE"]
    problem_check(request(p.port, "GET", "/"), 503)
    assert echo.requests == []


def test_oversized_auth_response_is_503(portico, echo, auth):
    auth.decide = lambda req: make_response(401, "Unauthorized", [("Content-Type", "text/plain")], b"x" * 5000)
    p = portico(fa_config(echo.addr, auth.addr, max_response="1k"))
    problem_check(request(p.port, "GET", "/"), 503)
    auth.decide = lambda req: make_response(401, "Unauthorized", [("Content-Type", "text/plain")], b"x" * 1000)
    r = request(p.port, "GET", "/")
    assert r.status == 401 and len(r.body) == 1000


# ---------------------------------------------------------------------------
# What the auth request carries
# ---------------------------------------------------------------------------

def test_auth_request_carries_method_uri_client_and_selected_headers(portico, echo, auth):
    p = portico(fa_config(echo.addr, auth.addr, before=[{"request_id": {}}],
                          request_headers=["Authorization", "Cookie", "X-Tenant"]))
    r = request(p.port, "POST", "/api/./v1//items/../users?id=7&x=%41", host="gw.example:8443",
                headers=[("Authorization", "Bearer abc"), ("Cookie", "a=1"), ("Cookie", "b=2"),
                         ("X-Tenant", "acme"), ("X-Secret", "nope"), ("X-Forwarded-Uri", "/forged"),
                         ("X-Real-IP", "6.6.6.6"), ("X-Request-Id", "client-chosen-id")],
                body=b"payload")
    assert r.status == 200
    rid = r.header("X-Request-Id")
    assert rid == "client-chosen-id"  # request_id trusts a safe incoming id
    q = auth.requests[-1]
    assert q.method == "POST"
    assert q.target == "/verify"
    assert q.body == b""  # the client's body is not sent to the auth service
    assert q.header("X-Forwarded-Method") == "POST"
    assert q.header_all("X-Forwarded-Uri") == ["/api/v1/users?id=7&x=%41"]  # normalised, as routed
    assert q.header("X-Forwarded-Host") == "gw.example:8443"
    assert q.header("X-Forwarded-Proto") == "http"
    assert q.header_all("X-Forwarded-For") == ["127.0.0.1"]
    assert q.header_all("X-Real-IP") == ["127.0.0.1"]
    assert q.header("Authorization") == "Bearer abc"
    assert q.header_all("Cookie") == ["a=1", "b=2"] or q.header("Cookie") == "a=1; b=2"
    assert q.header("X-Tenant") == "acme"
    assert q.header("X-Secret") is None
    assert q.header_all("X-Request-Id") == [rid]
    # the upstream got the body and the same id
    doc = r.json()
    assert doc["body"] == "payload" and doc["target"] == "/api/v1/users?id=7&x=%41"
    assert values([tuple(h) for h in doc["headers"]], "X-Request-Id") == [rid]


def test_auth_request_fixed_method_and_path_prefix(portico, echo, auth):
    cfg = fa_config(echo.addr, auth.addr, method="GET")
    del cfg["plugins"][0]["forward_auth"]["path"]
    cfg["plugins"][0]["forward_auth"]["path_prefix"] = "/check/"
    p = portico(cfg)
    assert request(p.port, "DELETE", "/a/b?c=d").status == 200
    q = auth.requests[-1]
    assert q.method == "GET" and q.target == "/check/a/b?c=d"
    assert q.header("X-Forwarded-Method") == "DELETE"


def test_token_exchange_same_header_both_ways(portico, echo, auth):
    """Authorization sent to the auth service and replaced by its answer."""
    auth.decide = lambda req: make_response(200, "OK", [("Authorization", "Internal " + req.header("Authorization")[7:])])
    p = portico(fa_config(echo.addr, auth.addr, upstream_headers=["Authorization"]))
    hs = echo_headers(request(p.port, "GET", "/", headers={"Authorization": "Bearer xyz"}))
    assert values(hs, "Authorization") == ["Internal xyz"]
    assert auth.requests[-1].header("Authorization") == "Bearer xyz"


def test_without_request_id_plugin_no_request_id_is_invented(portico, echo, auth):
    p = portico(fa_config(echo.addr, auth.addr))
    assert request(p.port, "GET", "/").status == 200
    assert auth.requests[-1].header("X-Request-Id") is None


# ---------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------

def test_cache_hits_misses_and_expiry(portico, echo, auth):
    p = portico(fa_config(echo.addr, auth.addr, request_headers=["Authorization"],
                          cache={"ttl": "1s", "key": ["Authorization"]}))
    alice = {"Authorization": "Bearer alice", "X-User-Id": "forged"}
    with Client(p.port) as c:
        for _ in range(5):
            hs = echo_headers(c.request("GET", "/", headers=alice))
            assert values(hs, "X-User-Id") == ["42"]  # cached entries carry the copied headers
            assert values(hs, "X-User-Groups") == ["admins", "dev"]
        assert auth.count() == 1
        echo_headers(c.request("GET", "/", headers={"Authorization": "Bearer bob"}))
        assert auth.count() == 2
        echo_headers(c.request("GET", "/"))  # no Authorization at all: its own key
        assert auth.count() == 3
        echo_headers(c.request("GET", "/", headers={"Authorization": "Bearer alice"}))
        assert auth.count() == 3
        time.sleep(1.2)
        echo_headers(c.request("GET", "/", headers=alice))
        assert auth.count() == 4  # expired: asked again, then cached again
        echo_headers(c.request("GET", "/", headers=alice))
        assert auth.count() == 4


def test_cache_never_stores_denials_or_failures(portico, echo, auth):
    auth.decide = lambda req: make_response(401, "Unauthorized", [("WWW-Authenticate", "Bearer")])
    p = portico(fa_config(echo.addr, auth.addr, cache={"ttl": "30s"}))
    for _ in range(3):
        assert request(p.port, "GET", "/", headers={"Authorization": "Bearer x"}).status == 401
    assert auth.count() == 3
    auth.decide = lambda req: ALLOW
    assert request(p.port, "GET", "/", headers={"Authorization": "Bearer x"}).status == 200
    assert request(p.port, "GET", "/", headers={"Authorization": "Bearer x"}).status == 200
    assert auth.count() == 4


def test_cache_respects_cache_control(portico, echo, auth):
    auth.decide = lambda req: make_response(200, "OK", [("X-User-Id", "1"), ("Cache-Control", "private, no-store")])
    p = portico(fa_config(echo.addr, auth.addr, cache={"ttl": "30s"}))
    for _ in range(3):
        request(p.port, "GET", "/", headers={"Authorization": "a"})
    assert auth.count() == 3
    auth.decide = lambda req: make_response(200, "OK", [("X-User-Id", "1"), ("Cache-Control", "max-age=1")])
    request(p.port, "GET", "/", headers={"Authorization": "b"})
    request(p.port, "GET", "/", headers={"Authorization": "b"})
    assert auth.count() == 4
    time.sleep(1.2)
    request(p.port, "GET", "/", headers={"Authorization": "b"})
    assert auth.count() == 5


def test_cache_key_covers_cookie_and_path(portico, echo, auth):
    """The default key is request_headers (both Authorization and Cookie);
    ":path" adds the URI."""
    p = portico(fa_config(echo.addr, auth.addr, cache={"ttl": "30s", "key": ["Authorization", "Cookie", ":path"]}))
    request(p.port, "GET", "/a", headers={"Cookie": "s=1"})
    request(p.port, "GET", "/a", headers={"Cookie": "s=1"})
    assert auth.count() == 1
    request(p.port, "GET", "/a", headers={"Cookie": "s=2"})  # another cookie: miss
    assert auth.count() == 2
    request(p.port, "GET", "/b", headers={"Cookie": "s=1"})  # another path: miss
    assert auth.count() == 3
    request(p.port, "GET", "/a")  # no cookie: miss (never served the s=1 answer)
    assert auth.count() == 4


def test_cache_max_entries_evicts(portico, echo, auth):
    p = portico(fa_config(echo.addr, auth.addr, cache={"ttl": "30s", "max_entries": 2}))
    for tok in ("a", "b", "c"):
        request(p.port, "GET", "/", headers={"Authorization": tok})
    assert auth.count() == 3
    request(p.port, "GET", "/", headers={"Authorization": "c"})
    request(p.port, "GET", "/", headers={"Authorization": "b"})
    assert auth.count() == 3
    request(p.port, "GET", "/", headers={"Authorization": "a"})  # evicted (least recently used)
    assert auth.count() == 4


# ---------------------------------------------------------------------------
# Lifetimes
# ---------------------------------------------------------------------------

def test_client_disconnect_while_auth_stalls(portico, echo, raw_server, upstream):
    """The client leaves while the auth call is pending: the call is
    abandoned (its connection closed), nothing crashes (ASan), and Portico
    keeps serving."""
    seen = threading.Event()
    closed = threading.Event()

    def stall(s, n):
        r = ConnReader(s)
        read_server_request(r)
        seen.set()
        s.settimeout(10)
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass
        closed.set()

    srv = raw_server(stall)
    cfg = fa_config(echo.addr, srv.addr, timeout="20s")
    ok_auth = AuthService(upstream)
    cfg["upstreams"]["auth2"] = {"targets": [ok_auth.addr]}
    cfg["routes"].insert(0, {"name": "other", "match": {"path_prefix": "/ok"}, "upstream": "up",
                             "plugins": [{"forward_auth": {"upstream": "auth2"}}]})
    cfg["plugins"] = []
    cfg["routes"][1]["plugins"] = [{"forward_auth": {"upstream": "auth", "timeout": "20s"}}]
    p = portico(cfg)
    for i in range(3):
        seen.clear()
        closed.clear()
        s = socket.create_connection(("127.0.0.1", p.port))
        s.sendall(build_request("GET", "/stalled"))
        assert seen.wait(5), "the auth service never got the request"
        s.close()
        assert closed.wait(5), "the auth call was not abandoned when the client left"
        # still serving
        r = request(p.port, "GET", "/ok")
        assert r.status == 200
    assert echo.wait_requests(3) and all(q.path == "/ok" for q in echo.requests)
    assert wait_for(lambda: sum(1 for x in p.access_lines() if json.loads(x)["status"] == 499) >= 3), p.access_lines()


def test_many_concurrent_requests_and_disconnects(portico, echo, auth):
    """Mixed load: some clients wait for slow answers, some leave early."""
    auth.decide = lambda req: [0.2, ALLOW] if "slow" in req.header("X-Forwarded-Uri") else ALLOW
    p = portico(fa_config(echo.addr, auth.addr))
    socks = []
    for i in range(20):
        s = socket.create_connection(("127.0.0.1", p.port))
        s.sendall(build_request("GET", "/slow/%d" % i))
        socks.append(s)
    for s in socks[::2]:
        s.close()
    results = []
    for s in socks[1::2]:
        s.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            d = s.recv(65536)
            if not d:
                break
            data += d
        results.append(data.split(b"\r\n", 1)[0])
        s.close()
    assert all(b" 200 " in line for line in results), results
    assert request(p.port, "GET", "/fast").status == 200


# ---------------------------------------------------------------------------
# HTTP/2 clients, HTTPS auth service, configuration
# ---------------------------------------------------------------------------

def test_http2_client(portico, echo, auth):
    def decide(req):
        if req.header("Authorization") == "Bearer ok":
            return ALLOW
        return make_response(401, "Unauthorized", [("WWW-Authenticate", "Bearer"), ("Content-Type", "text/plain")],
                             "denied")
    auth.decide = decide
    p = portico(fa_config(echo.addr, auth.addr))
    h = H2(p.port)
    try:
        h.request(1, "/h2/ok?a=b", end=True, extra=[("authorization", "Bearer ok"), ("x-user-id", "forged")])
        h.request(3, "/h2/no", end=True)
        assert h.wait(lambda: h.st(1)["ended"] and h.st(3)["ended"], 10)
        assert h.status(1) == 200
        doc = json.loads(h.st(1)["data"])
        hs = [tuple(x) for x in doc["headers"]]
        assert values(hs, "X-User-Id") == ["42"]
        assert h.status(3) == 401
        assert h.st(3)["headers"][b"www-authenticate"] == b"Bearer"
        assert h.st(3)["data"] == b"denied"
    finally:
        h.close()
    q = [r for r in auth.requests if r.header("Authorization") == "Bearer ok"][0]
    assert q.header("X-Forwarded-Uri") == "/h2/ok?a=b"
    assert q.header("X-Forwarded-Host") == "gw.test"
    assert q.header("X-Forwarded-Method") == "POST"


def test_http2_client_auth_unreachable(portico, echo):
    p = portico(fa_config(echo.addr, dead_addr()))
    h = H2(p.port)
    try:
        h.request(1, "/", end=True)
        assert h.wait(lambda: h.st(1)["ended"], 10)
        h2_problem(h, 1, 503)
    finally:
        h.close()


def test_https_auth_upstream_verified(portico, echo, pki, tls_upstream):  # noqa: F811
    tu = tls_upstream()
    p = portico(fa_config(echo.addr, tu.addr, upstream_extra={"tls": {"ca": pki["ca"], "sni": "a.test"}}))
    r = request(p.port, "GET", "/secure", headers={"Authorization": "Bearer t"})
    assert r.status == 200
    method, target, headers, _ = tu.requests[-1]
    assert target == "/verify" and headers.get("authorization") == "Bearer t"
    assert headers.get("x-forwarded-uri") == "/secure"


def test_https_auth_upstream_unverifiable_is_503(portico, echo, pki, tls_upstream):  # noqa: F811
    tu = tls_upstream()
    # The certificate is for a.test, signed by the test CA: the system store does not trust it.
    p = portico(fa_config(echo.addr, tu.addr, upstream_extra={"tls": {"sni": "a.test"}}))
    problem_check(request(p.port, "GET", "/"), 503)
    assert tu.requests == []
    assert echo.requests == []


@pytest.mark.parametrize("fa,needle", [
    ({"upstream": "nope"}, "unknown upstream 'nope'"),
    ({"upstream": "auth", "request_headers": ["Bad Header"]}, "invalid header name"),
    ({"upstream": "auth", "timeout": "soon"}, "invalid duration 'soon'"),
    ({"upstream": "auth", "cache": {"ttl": "10s", "key": ["X-Other"]}}, "must include every request_headers"),
])
def test_config_errors_are_positioned(tmp_path, echo, fa, needle):
    cfg = fa_config(echo.addr, dead_addr())
    cfg["plugins"] = [{"forward_auth": fa}]
    from conftest import to_yaml
    cfg.setdefault("listen", ["127.0.0.1:%d" % free_port()])
    path = tmp_path / "c.yaml"
    path.write_text(to_yaml(cfg) + "\n")
    out = subprocess.run([BIN, "check", "-c", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert needle in text, text
    assert str(path) + ":" in text, text  # FILE:LINE:COL


def test_reload_keeps_cache_for_same_settings_and_drops_it_for_new_ones(portico, echo, auth):
    import signal
    from upstreams import wait_reloaded
    cfg = fa_config(echo.addr, auth.addr, cache={"ttl": "30s"})
    p = portico(cfg)
    request(p.port, "GET", "/", headers={"Authorization": "t"})
    cfg["routes"][0]["name"] = "renamed"  # the forward_auth settings are unchanged
    p.write_config(cfg)
    p.signal(signal.SIGHUP)
    wait_reloaded(p, 1)
    request(p.port, "GET", "/", headers={"Authorization": "t"})
    assert auth.count() == 1
    cfg["plugins"][0]["forward_auth"]["upstream_headers"] = ["X-User-Id"]
    p.write_config(cfg)
    p.signal(signal.SIGHUP)
    wait_reloaded(p, 2)
    hs = echo_headers(request(p.port, "GET", "/", headers={"Authorization": "t"}))
    assert auth.count() == 2
    assert values(hs, "X-User-Groups") == []


# ---------------------------------------------------------------------------
# More lifetimes: HTTP/2 resets, reloads and shutdown during an auth call
# ---------------------------------------------------------------------------

def stalling_auth(raw_server):
    """An auth service that reads a request and never answers; `seen` is set
    when a request arrived, `closed` when Portico closed the connection."""
    seen, closed = threading.Event(), threading.Event()

    def stall(s, n):
        read_server_request(ConnReader(s))
        seen.set()
        s.settimeout(30)
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass
        closed.set()

    srv = raw_server(stall)
    return srv, seen, closed


def test_http2_stream_reset_while_auth_stalls(portico, echo, raw_server):
    srv, seen, closed = stalling_auth(raw_server)
    cfg = fa_config(echo.addr, srv.addr, timeout="20s")
    cfg["plugins"] = []
    cfg["routes"].insert(0, {"name": "stall", "match": {"path_prefix": "/stall"}, "upstream": "up",
                             "plugins": [{"forward_auth": {"upstream": "auth", "timeout": "20s"}}]})
    p = portico(cfg)
    h = H2(p.port)
    try:
        h.request(1, "/stall", end=True)
        assert seen.wait(5)
        h.c.reset_stream(1)
        h.flush()
        assert closed.wait(5), "the auth call outlived its stream"
        h.request(3, "/free", end=True)  # same connection, no forward_auth on this route
        assert h.wait(lambda: h.st(3)["ended"], 10)
        assert h.status(3) == 200
    finally:
        h.close()


def test_shutdown_with_auth_call_pending(portico, echo, raw_server):
    srv, seen, closed = stalling_auth(raw_server)
    cfg = fa_config(echo.addr, srv.addr, timeout="20s")
    cfg["timeouts"] = {"shutdown": "1s"}
    p = portico(cfg)
    s = socket.create_connection(("127.0.0.1", p.port))
    s.sendall(build_request("GET", "/"))
    assert seen.wait(5)
    import signal
    p.signal(signal.SIGTERM)
    assert p.wait_exit(10) == 0, p.logs()
    assert closed.wait(5)
    s.close()
    # the fixture's teardown checks the exit code and the sanitizer output (leaks included)


def test_reload_while_auth_call_pending(portico, echo, auth):
    import signal
    from upstreams import wait_reloaded
    gate = threading.Event()

    def slow(req):
        gate.wait(10)
        return ALLOW
    auth.decide = slow
    cfg = fa_config(echo.addr, auth.addr, timeout="10s")
    p = portico(cfg)
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    s.sendall(build_request("GET", "/before"))
    assert wait_for(lambda: auth.count() >= 1, 5)
    cfg["plugins"][0]["forward_auth"]["upstream_headers"] = ["X-User-Groups"]
    p.write_config(cfg)
    p.signal(signal.SIGHUP)
    wait_reloaded(p, 1)
    gate.set()
    from upstreams import read_response
    r = read_response(ConnReader(s))
    s.close()
    hs = echo_headers(r)
    assert values(hs, "X-User-Id") == ["42"]  # the request finished under the old settings
    hs = echo_headers(request(p.port, "GET", "/after"))
    assert values(hs, "X-User-Id") == [] and values(hs, "X-User-Groups") == ["admins", "dev"]


def test_h2c_auth_service(portico, echo):
    from h2util import H2Upstream

    def respond(rec):
        hs = dict(rec["headers"])
        if hs.get("authorization") == "Bearer ok":
            return [(":status", "200"), ("x-user-id", "h2-user")], b""
        return [(":status", "401"), ("www-authenticate", "Bearer"), ("content-type", "text/plain")], b"nope"
    up = H2Upstream(respond)
    try:
        p = portico(fa_config(echo.addr, up.addr, upstream_extra={"protocol": "h2c"}))
        hs = echo_headers(request(p.port, "GET", "/x", headers={"Authorization": "Bearer ok"}))
        assert values(hs, "X-User-Id") == ["h2-user"]
        r = request(p.port, "GET", "/x")
        assert r.status == 401 and r.body == b"nope" and r.header("WWW-Authenticate") == "Bearer"
        rec = dict(up.done[0]["headers"])
        assert rec[":path"] == "/verify" and rec["x-forwarded-uri"] == "/x"
    finally:
        up.close()


# ---------------------------------------------------------------------------
# Metrics (docs/metrics.md): portico_forward_auth_decisions_total
# ---------------------------------------------------------------------------

def test_decisions_counted_by_result_across_instances_and_reloads(portico, echo, auth):
    import signal
    from test_admin_metrics import admin_cfg, scrape, value, wait_ready
    from upstreams import wait_reloaded

    def decide(req):
        a = req.header("Authorization")
        if a == "slow":
            return [3.0, ALLOW]
        if a == "broken":
            return [b"garbage\r\n\r\n", "CLOSE"]
        if a == "good":
            return ALLOW
        return make_response(401, "Unauthorized", [("WWW-Authenticate", "Bearer")], b"no")
    auth.decide = decide
    cfg = simple_config(echo.addr)
    cfg["upstreams"]["auth"] = {"targets": [auth.addr]}
    base = {"upstream": "auth", "path": "/verify", "upstream_headers": ["X-User-Id"],
            "request_headers": ["Authorization"]}
    # Two instances on the same auth upstream (one cached): one family, one series.
    cfg["routes"][0]["plugins"] = [{"forward_auth": dict(base, timeout="300ms",
                                                         cache={"ttl": "30s", "key": ["Authorization"]})}]
    cfg["routes"].insert(0, {"name": "other", "match": {"path_prefix": "/other"}, "upstream": "up",
                             "plugins": [{"forward_auth": dict(base)}]})
    cfg, aport = admin_cfg(cfg)
    p = portico(cfg)
    wait_ready(aport)

    def get(path, token):
        return request(p.port, "GET", path, headers={"Authorization": token})

    assert get("/", "good").status == 200          # allowed (then cached)
    assert get("/", "good").status == 200          # cache_hit
    assert get("/other", "good").status == 200     # allowed (no cache on this instance)
    assert get("/", "bad").status == 401           # denied
    assert get("/other", "bad").status == 401      # denied
    problem_check(get("/", "slow"), 504)           # timeout
    problem_check(get("/", "broken"), 503)         # error
    assert auth.count() == 6

    def counts():
        s = scrape(aport)
        assert s["__types__"]["portico_forward_auth_decisions"] == "counter"
        rows = s.get("portico_forward_auth_decisions_total", [])
        assert all(l["upstream"] == "auth" for l, _ in rows), rows
        return {r: value(s, "portico_forward_auth_decisions_total", upstream="auth", result=r)
                for r in ("allowed", "denied", "error", "timeout", "cache_hit")}

    assert counts() == {"allowed": 2, "denied": 2, "error": 1, "timeout": 1, "cache_hit": 1}

    # A reload declares the family again (same description): the series and
    # its counts carry on.
    p.write_config(cfg)
    p.signal(signal.SIGHUP)
    wait_reloaded(p, 1)
    assert get("/other", "bad").status == 401
    assert counts() == {"allowed": 2, "denied": 3, "error": 1, "timeout": 1, "cache_hit": 1}
