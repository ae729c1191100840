"""oauth2_introspection: RFC 7662 token introspection against an
authorization server started by the test (a fake upstream whose handler
checks the client authentication and answers per token).

Covers: what the introspection request carries (POST, form body, Basic
client credentials per RFC 6749 §2.3.1, Accept), active tokens naming the
consumer (configured or ad-hoc) with the Authorization removed (or kept),
the 401s with RFC 6750 challenges (missing, malformed, inactive, iss/aud,
unknown consumer with lookup: require) and 400 for two tokens, the cache
(hits do not reach the server, exp honoured, inactive answers cached
briefly), server failures fail closed with 503 (unreachable, 500, garbage,
slow, duplicate JSON keys, oversized answer), stale_if_error, a client
leaving while the call is in flight (ASan binary), and the decisions
metric."""

import base64
import json
import socket
import threading
import time
import urllib.parse

import pytest

from conftest import free_port, simple_config
from upstreams import build_request, make_response, problem_check, request, wait_for

CLIENT_ID = "portico gw"          # a space: form-encoded as '+' before base64
CLIENT_SECRET = "s3cr:t/+%x"      # ':' '/' '+' '%' must be form-encoded too
ENV = {"IDP_SECRET": CLIENT_SECRET}
EXPECTED_BASIC = "Basic " + base64.b64encode(
    (urllib.parse.quote_plus(CLIENT_ID) + ":" + urllib.parse.quote_plus(CLIENT_SECRET)).encode()).decode()


def jresp(obj, status=200, reason="OK"):
    body = obj if isinstance(obj, (bytes, str)) else json.dumps(obj)
    return make_response(status, reason, [("Content-Type", "application/json")], body)


class IdP:
    """An introspection endpoint: `tokens` maps a token to an answer (a dict
    -> JSON, or raw response bytes / upstream steps); unknown tokens are
    inactive. Requests without the right client credentials get 401."""

    def __init__(self, upstream):
        self.tokens = {}
        self.bad_client = []
        self.up = upstream(self.handle, name="idp")
        self.addr = self.up.addr

    def handle(self, req):
        if req.header("Authorization") != EXPECTED_BASIC:
            self.bad_client.append(req)
            return jresp({"error": "invalid_client"}, 401, "Unauthorized")
        form = urllib.parse.parse_qs(req.body.decode())
        tok = form.get("token", [""])[0]
        a = self.tokens.get(tok, {"active": False})
        if callable(a):
            a = a()
        return jresp(a) if isinstance(a, dict) else a

    def calls(self, token=None):
        reqs = [r for r in self.up.requests if r.header("Authorization") == EXPECTED_BASIC]
        if token is None:
            return len(reqs)
        return sum(1 for r in reqs if urllib.parse.parse_qs(r.body.decode()).get("token", [""])[0] == token)


@pytest.fixture
def idp(upstream):
    return IdP(upstream)


def active(sub="alice", **extra):
    d = {"active": True, "sub": sub, "client_id": "app1", "scope": "read write", "iss": "https://idp.example",
         "aud": ["orders", "billing"], "exp": int(time.time()) + 3600, "token_type": "Bearer"}
    d.update(extra)
    return d


def oi_config(echo_addr, idp_addr, route_extra=None, consumers=None, **oi):
    conf = {"upstream": "idp", "path": "/oauth2/introspect", "client_id": CLIENT_ID,
            "client_secret": "${IDP_SECRET}", "realm": "api"}
    conf.update(oi)
    cfg = simple_config(echo_addr, route_extra=dict(route_extra or {}, plugins=[{"oauth2_introspection": conf}]))
    cfg["upstreams"]["idp"] = {"targets": [idp_addr]}
    if consumers:
        cfg["consumers"] = consumers
    return cfg


def bearer(tok):
    return {"Authorization": "Bearer " + tok}


def echoed(r):
    assert r.status == 200, r
    return [tuple(h) for h in r.json()["headers"]]


def hvals(pairs, name):
    return [v for n, v in pairs if n.lower() == name.lower()]


def dead_addr():
    return "127.0.0.1:%d" % free_port()


# ---------------------------------------------------------------------------
# Active tokens
# ---------------------------------------------------------------------------

def test_active_token_request_shape_consumer_and_cache(portico, echo, idp):
    idp.tokens["tok-alice"] = active()
    p = portico(oi_config(echo.addr, idp.addr), env=ENV)
    r = request(p.port, "GET", "/orders", headers=bearer("tok-alice"))
    hs = echoed(r)
    assert hvals(hs, "X-Consumer-Name") == ["alice"]
    assert hvals(hs, "Authorization") == []          # removed by default
    q = idp.up.last()
    assert q.method == "POST" and q.target == "/oauth2/introspect"
    assert q.header("Content-Type") == "application/x-www-form-urlencoded"
    assert q.header("Accept") == "application/json"
    assert urllib.parse.parse_qs(q.body.decode()) == {"token": ["tok-alice"], "token_type_hint": ["access_token"]}
    assert idp.bad_client == []
    # Cached: the next requests do not reach the server.
    for _ in range(3):
        assert hvals(echoed(request(p.port, "GET", "/orders", headers=bearer("tok-alice"))),
                     "X-Consumer-Name") == ["alice"]
    assert idp.calls() == 1
    assert "tok-alice" not in open(p.access_log_path).read()


def test_configured_consumer_gets_its_groups_and_forward_token(portico, echo, idp):
    idp.tokens["t1"] = active(sub="bob")
    idp.tokens["t2"] = active(sub="zed")
    consumers = [{"name": "bob", "groups": ["staff", "admins"]}]
    p = portico(oi_config(echo.addr, idp.addr, consumers=consumers, forward_token=True), env=ENV)
    hs = echoed(request(p.port, "GET", "/", headers=bearer("t1")))
    assert hvals(hs, "X-Consumer-Name") == ["bob"]
    assert hvals(hs, "X-Consumer-Groups") == ["staff, admins"]
    assert hvals(hs, "Authorization") == ["Bearer t1"]
    hs = echoed(request(p.port, "GET", "/", headers=bearer("t2")))   # ad-hoc consumer, no groups
    assert hvals(hs, "X-Consumer-Name") == ["zed"] and hvals(hs, "X-Consumer-Groups") in ([], [""])


def test_consumer_claims_and_lookup_require(portico, echo, idp):
    idp.tokens["svc"] = {"active": True, "client_id": "billing-svc"}
    idp.tokens["known"] = {"active": True, "client_id": "carol"}
    consumers = [{"name": "carol"}]
    p = portico(oi_config(echo.addr, idp.addr, consumers=consumers,
                          consumer={"claims": ["client_id"], "lookup": "require"}), env=ENV)
    assert hvals(echoed(request(p.port, "GET", "/", headers=bearer("known"))), "X-Consumer-Name") == ["carol"]
    r = request(p.port, "GET", "/", headers=bearer("svc"))
    doc = problem_check(r, 401)
    assert "not a known consumer" in doc["detail"]
    assert 'error="invalid_token"' in r.header("WWW-Authenticate")


def test_issuer_and_audience_checks(portico, echo, idp):
    idp.tokens["ok"] = active()
    idp.tokens["other-iss"] = active(iss="https://evil.example")
    idp.tokens["other-aud"] = active(aud="payments")
    idp.tokens["no-aud"] = {"active": True, "sub": "x", "iss": "https://idp.example"}
    p = portico(oi_config(echo.addr, idp.addr, issuers=["https://idp.example"], audiences=["orders"]), env=ENV)
    assert request(p.port, "GET", "/", headers=bearer("ok")).status == 200
    for tok, word in (("other-iss", "issuer"), ("other-aud", "audience"), ("no-aud", "audience")):
        r = request(p.port, "GET", "/", headers=bearer(tok))
        assert word in problem_check(r, 401)["detail"]
        assert r.header("WWW-Authenticate").startswith('Bearer realm="api", error="invalid_token"')
    assert echo.requests and all(q.header("X-Consumer-Name") == "alice" for q in echo.requests)


# ---------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------

def test_missing_token_is_401_with_bearer_challenge(portico, echo, idp):
    p = portico(oi_config(echo.addr, idp.addr), env=ENV)
    for h in ({}, {"Authorization": "Basic YTpi"}):
        r = request(p.port, "GET", "/", headers=h)
        problem_check(r, 401)
        assert r.header("WWW-Authenticate") == 'Bearer realm="api"'   # no error code (RFC 6750 §3.1)
    assert idp.up.requests == [] and echo.requests == []


def test_malformed_and_multiple_tokens_are_refused_unasked(portico, echo, idp):
    p = portico(oi_config(echo.addr, idp.addr, max_token_size=64), env=ENV)
    for v in ("Bearer a b", "Bearer tok\"en", "Bearer ==abc", "Bearer", "Bearer " + "a" * 65):
        r = request(p.port, "GET", "/", headers={"Authorization": v})
        problem_check(r, 401)
        assert 'error="invalid_token"' in r.header("WWW-Authenticate"), v
    r = request(p.port, "GET", "/", headers=[("Authorization", "Bearer a1"), ("Authorization", "Bearer a2")])
    problem_check(r, 400)
    assert 'error="invalid_request"' in r.header("WWW-Authenticate")
    assert idp.up.requests == [] and echo.requests == []


def test_inactive_is_401_and_cached_briefly(portico, echo, idp):
    p = portico(oi_config(echo.addr, idp.addr, cache={"negative_ttl": "1s"}), env=ENV)
    for _ in range(3):
        r = request(p.port, "GET", "/", headers=bearer("revoked"))
        assert "not active" in problem_check(r, 401)["detail"]
        assert r.header("WWW-Authenticate") == \
            'Bearer realm="api", error="invalid_token", error_description="the token is not active"'
    assert idp.calls("revoked") == 1
    time.sleep(1.2)
    problem_check(request(p.port, "GET", "/", headers=bearer("revoked")), 401)
    assert idp.calls("revoked") == 2
    # A token that turns active is seen once the negative entry is gone.
    idp.tokens["revoked"] = active()
    time.sleep(1.2)
    assert request(p.port, "GET", "/", headers=bearer("revoked")).status == 200


def test_exp_bounds_the_cache(portico, echo, idp):
    idp.tokens["short"] = active(exp=int(time.time()) + 2)
    p = portico(oi_config(echo.addr, idp.addr, cache={"ttl": "1h"}), env=ENV)
    assert request(p.port, "GET", "/", headers=bearer("short")).status == 200
    assert request(p.port, "GET", "/", headers=bearer("short")).status == 200
    assert idp.calls("short") == 1
    idp.tokens["short"] = {"active": False}
    deadline = time.time() + 5
    while time.time() < deadline and request(p.port, "GET", "/", headers=bearer("short")).status == 200:
        time.sleep(0.2)
    problem_check(request(p.port, "GET", "/", headers=bearer("short")), 401)
    assert idp.calls("short") == 2
    # An "active" answer whose exp has passed is not trusted.
    idp.tokens["stale-exp"] = active(exp=int(time.time()) - 10)
    assert "expired" in problem_check(request(p.port, "GET", "/", headers=bearer("stale-exp")), 401)["detail"]


def test_cache_off_asks_every_time(portico, echo, idp):
    idp.tokens["t"] = active()
    p = portico(oi_config(echo.addr, idp.addr, cache="off"), env=ENV)
    for _ in range(3):
        assert request(p.port, "GET", "/", headers=bearer("t")).status == 200
    assert idp.calls("t") == 3


# ---------------------------------------------------------------------------
# Server failures
# ---------------------------------------------------------------------------

def test_server_unreachable_is_503(portico, echo):
    p = portico(oi_config(echo.addr, dead_addr()), env=ENV)
    doc = problem_check(request(p.port, "GET", "/", headers=bearer("t")), 503)
    assert "authorization server" in doc["detail"]
    assert echo.requests == []


@pytest.mark.parametrize("answer,why", [
    (jresp({"error": "server"}, 500, "Internal Server Error"), "refused"),
    (jresp(b"<html>not json</html>"), "invalid"),
    (jresp(b'{"active": true, "sub": "a", "active": false}'), "invalid"),       # duplicate key
    (jresp(b'{"active": "true", "sub": "a"}'), "invalid"),                       # not a boolean
    (jresp(b'[{"active": true}]'), "invalid"),
    (jresp(b'{"active": true, "sub": "a"} trailing'), "invalid"),
    (jresp(b'{"active": true, "sub": "a", "x": ' + b"[" * 40 + b"]" * 40 + b"}"), "invalid"),
    (jresp(b'{"active": true, "sub": "a", "exp": "tomorrow"}'), "invalid"),
    (jresp({"active": True, "sub": "a", "pad": "x" * 5000}), "unavailable"),    # over max_response
    ([b"garbage\r\n\r\n", "CLOSE"], "unavailable"),
    ([3.0, jresp({"active": True, "sub": "a"})], "in time"),
])
def test_bad_answers_fail_closed_503(portico, echo, idp, answer, why):
    idp.tokens["t"] = answer
    p = portico(oi_config(echo.addr, idp.addr, timeout="300ms", max_response="1k"), env=ENV)
    doc = problem_check(request(p.port, "GET", "/", headers=bearer("t")), 503)
    assert why in doc["detail"], doc
    assert echo.requests == []


def test_wrong_client_credentials_are_503_not_401(portico, echo, idp):
    p = portico(oi_config(echo.addr, idp.addr), env={"IDP_SECRET": "wrong-secret"})
    problem_check(request(p.port, "GET", "/", headers=bearer("t")), 503)
    assert len(idp.bad_client) == 1


def test_stale_if_error_serves_cached_positives_while_down(portico, echo, idp):
    idp.tokens["t"] = active()
    idp.tokens["u"] = active(sub="ursula")
    p = portico(oi_config(echo.addr, idp.addr, cache={"ttl": "1s"}, stale_if_error="30s"), env=ENV)
    assert request(p.port, "GET", "/", headers=bearer("t")).status == 200
    idp.tokens["t"] = jresp({"error": "down"}, 500, "Internal Server Error")
    time.sleep(1.2)
    hs = echoed(request(p.port, "GET", "/", headers=bearer("t")))      # asked, failed, served stale
    assert hvals(hs, "X-Consumer-Name") == ["alice"]
    assert idp.calls("t") == 2
    # A token never seen is not helped by stale_if_error.
    idp.tokens["u"] = jresp({"error": "down"}, 500, "Internal Server Error")
    problem_check(request(p.port, "GET", "/", headers=bearer("u")), 503)
    # The server answering "inactive" is believed at once.
    idp.tokens["t"] = {"active": False}
    problem_check(request(p.port, "GET", "/", headers=bearer("t")), 401)


def test_without_stale_if_error_an_expired_entry_is_not_served(portico, echo, idp):
    idp.tokens["t"] = active()
    p = portico(oi_config(echo.addr, idp.addr, cache={"ttl": "1s"}), env=ENV)
    assert request(p.port, "GET", "/", headers=bearer("t")).status == 200
    idp.tokens["t"] = jresp({"error": "down"}, 500, "Internal Server Error")
    time.sleep(1.2)
    problem_check(request(p.port, "GET", "/", headers=bearer("t")), 503)


def test_client_leaves_while_introspection_in_flight(portico, echo, idp):
    """The client goes away while the call is pending: the call is
    abandoned with the request, nothing crashes (ASan), later requests work."""
    got = threading.Event()

    def slow():
        got.set()
        return [2.0, jresp(active())]
    idp.tokens["slow"] = slow
    idp.tokens["fast"] = active(sub="fast")
    p = portico(oi_config(echo.addr, idp.addr, timeout="10s"), env=ENV)
    for _ in range(3):
        got.clear()
        s = socket.create_connection(("127.0.0.1", p.port))
        s.sendall(build_request("GET", "/x", headers=bearer("slow")))
        assert got.wait(5)
        s.close()
        assert request(p.port, "GET", "/y", headers=bearer("fast")).status == 200
    time.sleep(2.5)   # the abandoned answers would have arrived by now
    assert request(p.port, "GET", "/y", headers=bearer("fast")).status == 200
    assert all(q.path == "/y" for q in echo.requests)
    assert wait_for(lambda: sum(1 for x in p.access_lines() if json.loads(x)["status"] == 499) >= 3)


# ---------------------------------------------------------------------------
# Calls in flight: coalescing and max_in_flight
# ---------------------------------------------------------------------------

class Held:
    """An answer the IdP holds until released: counts the calls that reach it."""

    def __init__(self, answer):
        self.answer = answer
        self.calls = 0
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()

    def __call__(self):
        with self.lock:
            self.calls += 1
        self.arrived.set()
        self.release.wait(20)
        return self.answer


def send_waiting(port, token, n, path="/w"):
    """n connections that each sent one request with `token` (answers not read)."""
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.settimeout(20)
        s.sendall(build_request("GET", "%s/%d" % (path, i), headers=bearer(token)))
        socks.append(s)
    return socks


def read_answer(s):
    from upstreams import ConnReader, read_response
    try:
        return read_response(ConnReader(s))
    finally:
        s.close()


def test_concurrent_requests_with_one_token_share_one_call(portico, echo, idp):
    """Ten clients with the same uncached token while the IdP holds its
    answer: exactly one introspection call, and every client is admitted
    with the consumer (without coalescing each would start its own call)."""
    held = Held(jresp(active(sub="carla")))
    idp.tokens["shared"] = held
    p = portico(oi_config(echo.addr, idp.addr, timeout="20s"), env=ENV)
    socks = send_waiting(p.port, "shared", 10)
    assert held.arrived.wait(10)
    time.sleep(0.5)            # let Portico read every request before the answer comes
    held.release.set()
    for s in socks:
        r = read_answer(s)
        assert r.status == 200, r
        assert hvals([tuple(h) for h in r.json()["headers"]], "X-Consumer-Name") == ["carla"]
    assert held.calls == 1 and idp.calls("shared") == 1
    # Cached afterwards; a different token still gets its own call.
    assert request(p.port, "GET", "/", headers=bearer("shared")).status == 200
    idp.tokens["other"] = active(sub="otto")
    assert hvals(echoed(request(p.port, "GET", "/", headers=bearer("other"))), "X-Consumer-Name") == ["otto"]
    assert idp.calls("shared") == 1 and idp.calls("other") == 1


def test_coalesced_inactive_answer_refuses_every_waiter(portico, echo, idp):
    held = Held(jresp({"active": False}))
    idp.tokens["dead"] = held
    p = portico(oi_config(echo.addr, idp.addr, timeout="20s"), env=ENV)
    socks = send_waiting(p.port, "dead", 4)
    assert held.arrived.wait(10)
    time.sleep(0.5)
    held.release.set()
    for s in socks:
        r = read_answer(s)
        problem_check(r, 401)
        assert 'error="invalid_token"' in r.header("WWW-Authenticate")
    assert held.calls == 1 and echo.requests == []


def test_waiters_leaving_do_not_end_the_call_for_the_others(portico, echo, idp):
    """The client whose request started the call and some later ones
    disconnect while waiting: the call goes on, the remaining waiters get
    the answer, nothing crashes (ASan binary); when every waiter left the
    call is abandoned and the next request asks again."""
    held = Held(jresp(active(sub="dana")))
    idp.tokens["t"] = held
    p = portico(oi_config(echo.addr, idp.addr, timeout="20s"), env=ENV)
    first = send_waiting(p.port, "t", 1, path="/first")
    assert held.arrived.wait(10)
    rest = send_waiting(p.port, "t", 6, path="/rest")
    time.sleep(0.5)
    for s in [first[0]] + rest[:3]:                  # the starter and three others leave
        s.close()

    def gone(n):
        return sum(1 for x in p.access_lines() if json.loads(x)["status"] == 499) >= n
    assert wait_for(lambda: gone(4))                 # their requests ended while waiting
    held.release.set()
    for s in rest[3:]:
        r = read_answer(s)
        assert r.status == 200, r
        assert hvals([tuple(h) for h in r.json()["headers"]], "X-Consumer-Name") == ["dana"]
    assert held.calls == 1
    assert sorted(q.path for q in echo.requests) == ["/rest/3", "/rest/4", "/rest/5"]

    # Every waiter leaves: the call is cancelled, the next request asks anew.
    held2 = Held(jresp(active(sub="eve")))
    idp.tokens["u"] = held2
    socks = send_waiting(p.port, "u", 3)
    assert held2.arrived.wait(10)
    time.sleep(0.3)
    for s in socks:
        s.close()
    assert wait_for(lambda: gone(7))
    held2.release.set()
    idp.tokens["u"] = active(sub="eve")
    assert hvals(echoed(request(p.port, "GET", "/again", headers=bearer("u"))), "X-Consumer-Name") == ["eve"]
    assert idp.calls("u") == 2


def test_call_in_flight_across_a_reload(portico, echo, idp):
    """A request of the new configuration joins the call a request of the
    old one started (same settings); the old request's client leaves, so
    the old generation can go while the call is in flight; the answer
    reaches the new request (ASan binary: nothing of the old generation is
    touched after it is gone)."""
    import signal
    from upstreams import wait_reloaded
    held = Held(jresp(active(sub="rita")))
    idp.tokens["r"] = held
    cfg = oi_config(echo.addr, idp.addr, timeout="20s")
    p = portico(cfg, env=ENV)
    old = send_waiting(p.port, "r", 1, path="/old")
    assert held.arrived.wait(10)
    cfg["routes"][0]["name"] = "renamed"          # the introspection settings are unchanged
    p.write_config(cfg)
    p.signal(signal.SIGHUP)
    wait_reloaded(p, 1)
    new = send_waiting(p.port, "r", 1, path="/new")
    time.sleep(0.3)
    old[0].close()
    assert wait_for(lambda: any(json.loads(x)["status"] == 499 for x in p.access_lines()))
    held.release.set()
    r = read_answer(new[0])
    assert r.status == 200, r
    assert hvals([tuple(h) for h in r.json()["headers"]], "X-Consumer-Name") == ["rita"]
    assert held.calls == 1 and [q.path for q in echo.requests] == ["/new/0"]


def test_max_in_flight_answers_503_with_retry_after(portico, echo, idp):
    """max_in_flight: 2 — two distinct tokens hold calls; a third distinct
    token gets 503 problem+json with Retry-After unasked, while a request
    with a token already in flight joins its call; counted as overloaded."""
    from test_admin_metrics import admin_cfg, scrape, value, wait_ready
    h1, h2 = Held(jresp(active(sub="a1"))), Held(jresp(active(sub="a2")))
    idp.tokens.update({"t1": h1, "t2": h2, "t3": active(sub="a3")})
    cfg, aport = admin_cfg(oi_config(echo.addr, idp.addr, timeout="20s", max_in_flight=2))
    p = portico(cfg, env=ENV)
    wait_ready(aport)
    s1 = send_waiting(p.port, "t1", 1)
    assert h1.arrived.wait(10)
    s2 = send_waiting(p.port, "t2", 1)
    assert h2.arrived.wait(10)
    r = request(p.port, "GET", "/third", headers=bearer("t3"))
    doc = problem_check(r, 503)
    assert r.header("Retry-After") == "1"
    assert "in flight" in doc["detail"]
    assert idp.calls("t3") == 0
    joined = send_waiting(p.port, "t1", 1, path="/join")
    time.sleep(0.3)
    h1.release.set()
    h2.release.set()
    for s in s1 + s2 + joined:
        assert read_answer(s).status == 200
    assert h1.calls == 1 and h2.calls == 1
    # Room again: t3 is asked.
    assert hvals(echoed(request(p.port, "GET", "/", headers=bearer("t3"))), "X-Consumer-Name") == ["a3"]
    assert value(scrape(aport), "portico_oauth2_introspection_decisions_total", result="overloaded") == 1


# ---------------------------------------------------------------------------
# Configuration and metrics
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("extra,needle", [
    ({"client_secret": "literal"}, "client_secret"),
    ({"client_id": None}, "client_id"),
    ({"upstream": "nope"}, "nope"),
    ({"cache": "off", "stale_if_error": "10s"}, "needs the cache"),
    ({"consumer": {"lookup": "maybe"}}, "lookup"),
    ({"realm": 'a"b'}, "realm"),
    ({"max_response": "2m"}, "max_response"),
    ({"max_in_flight": 0}, "max_in_flight"),
])
def test_config_errors(portico, echo, tmp_path, extra, needle):
    import subprocess
    from conftest import BIN, to_yaml
    cfg = oi_config(echo.addr, "127.0.0.1:9")
    oi = cfg["routes"][0]["plugins"][0]["oauth2_introspection"]
    for k, v in extra.items():
        if v is None:
            oi.pop(k)
        else:
            oi[k] = v
    cfg["listen"] = ["127.0.0.1:%d" % free_port()]
    path = tmp_path / "c.yaml"
    path.write_text(to_yaml(cfg) + "\n")
    r = subprocess.run([BIN, "check", "-c", str(path)], capture_output=True, text=True,
                       env=dict(ENV, PATH="/usr/bin:/bin"))
    assert r.returncode != 0 and needle in r.stdout + r.stderr, r.stdout + r.stderr


def test_decisions_metric(portico, echo, idp):
    from test_admin_metrics import admin_cfg, scrape, value, wait_ready
    idp.tokens["good"] = active()
    cfg, aport = admin_cfg(oi_config(echo.addr, idp.addr))
    p = portico(cfg, env=ENV)
    wait_ready(aport)
    assert request(p.port, "GET", "/", headers=bearer("good")).status == 200       # active
    assert request(p.port, "GET", "/", headers=bearer("good")).status == 200       # cache_hit
    assert request(p.port, "GET", "/", headers=bearer("bad")).status == 401        # inactive
    assert request(p.port, "GET", "/", headers=bearer("bad")).status == 401        # inactive_cached
    assert request(p.port, "GET", "/").status == 401                               # missing
    assert request(p.port, "GET", "/", headers={"Authorization": "Bearer a b"}).status == 401  # malformed
    idp.tokens["boom"] = jresp({}, 500, "Internal Server Error")
    assert request(p.port, "GET", "/", headers=bearer("boom")).status == 503       # error
    s = scrape(aport)
    got = {r: value(s, "portico_oauth2_introspection_decisions_total", result=r)
           for r in ("active", "cache_hit", "inactive", "inactive_cached", "missing", "malformed", "error", "stale",
                      "overloaded")}
    assert got == {"active": 1, "cache_hit": 1, "inactive": 1, "inactive_cached": 1, "missing": 1,
                   "malformed": 1, "error": 1, "stale": 0, "overloaded": 0}, got
