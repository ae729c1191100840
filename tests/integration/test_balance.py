"""Load balancing and target health (docs/traffic.md): least_requests,
hash (header, cookie, client address; round-robin without the input),
ewma, passive outlier detection and the circuit breaker. Assertions are
on which target got which request, never on timings."""

import threading
import time

from conftest import free_port, simple_config
from test_admin_metrics import admin_cfg, scrape, value
import signal

import pytest

from tlsutil import pki, tls_upstream  # noqa: F401 (fixtures)
from upstreams import make_response, problem_check, request, wait_for, wait_reloaded


def named(upstream, name, delay=0.0, status=None):
    """An upstream answering its own name (after `delay` s; with
    status[0] when `status` is a one-item list the test may change)."""
    def handler(req):
        code = status[0] if status else 200
        resp = make_response(code, "X", [], name)
        return [delay, resp] if delay else resp
    return upstream(handler, name=name)


def cfg_for(ups, **upstream_extra):
    return simple_config([u.addr for u in ups], upstream_extra=upstream_extra)


def get(p, path="/", headers=None):
    r = request(p.port, "GET", path, headers=headers, timeout=20)
    return r


# ------------------------------------------------------------ least_requests

@pytest.mark.parametrize("workers", [1, 3])
def test_least_requests_prefers_idle_target(portico, upstream, workers):
    # with 3 workers the ten requests land on any of them: the in-flight
    # count they read is the process's, not their own
    slow = named(upstream, "slow", delay=3.0)
    fast = named(upstream, "fast")
    cfg = cfg_for([slow, fast], balance="least_requests")
    cfg["workers"] = workers
    p = portico(cfg)
    threads = []
    # park one request on the slow target (the idle ones tie and alternate)
    for _ in range(4):
        t = threading.Thread(target=get, args=(p, "/bg"))
        t.start()
        threads.append(t)
        if wait_for(lambda: len(slow.requests) >= 1, timeout=1):
            break
    assert len(slow.requests) == 1
    before = len(fast.requests)
    for _ in range(10):
        r = get(p)
        assert r.status == 200 and r.body == b"fast"
    assert len(slow.requests) == 1  # busy: it got none of the ten
    assert len(fast.requests) == before + 10
    for t in threads:
        t.join()


def test_round_robin_is_the_default(portico, upstream):
    a, b = named(upstream, "a"), named(upstream, "b")
    p = portico(cfg_for([a, b]))
    bodies = [get(p).body for _ in range(6)]
    assert bodies.count(b"a") == 3 and bodies.count(b"b") == 3


# --------------------------------------------------------------------- hash

def hash_spread(p, headers_for):
    """{key: set of targets that answered it} over 20 keys x 3 requests."""
    seen = {}
    for k in range(20):
        for _ in range(3):
            r = get(p, "/k", headers=headers_for("key-%d" % k))
            assert r.status == 200
            seen.setdefault(k, set()).add(r.body)
    return seen


def test_hash_on_header_sticks_and_spreads(portico, upstream):
    ups = [named(upstream, "t%d" % i) for i in range(3)]
    p = portico(cfg_for(ups, balance="hash", hash_on={"header": "X-User"}))
    seen = hash_spread(p, lambda k: {"X-User": k})
    assert all(len(s) == 1 for s in seen.values()), seen
    assert len(set().union(*seen.values())) == 3  # 20 keys reach every target
    # without the header: round-robin over all three
    bodies = {get(p).body for _ in range(6)}
    assert bodies == {b"t0", b"t1", b"t2"}


def test_hash_on_cookie(portico, upstream):
    ups = [named(upstream, "t%d" % i) for i in range(3)]
    p = portico(cfg_for(ups, balance="hash", hash_on={"cookie": "sid"}))
    seen = hash_spread(p, lambda k: {"Cookie": "theme=dark; sid=%s; x=1" % k})
    assert all(len(s) == 1 for s in seen.values()), seen
    assert len(set().union(*seen.values())) >= 2
    # another cookie's value does not count: the same sid goes to the same target
    r1 = get(p, headers={"Cookie": "sid=key-3; theme=a"})
    r2 = get(p, headers={"Cookie": "theme=b; sid=key-3"})
    assert r1.body == r2.body


def test_hash_on_client_addr_after_trusted_proxies(portico, upstream):
    ups = [named(upstream, "t%d" % i) for i in range(3)]
    cfg = cfg_for(ups, balance="hash", hash_on="client_addr")
    cfg["trusted_proxies"] = ["127.0.0.1/32"]
    p = portico(cfg)
    seen = hash_spread(p, lambda k: {"X-Forwarded-For": "10.1.0.%s" % k.split("-")[1]})
    assert all(len(s) == 1 for s in seen.values()), seen
    assert len(set().union(*seen.values())) >= 2


# --------------------------------------------------------------------- ewma

def test_ewma_shifts_traffic_from_slow_target(portico, upstream):
    slow = named(upstream, "slow", delay=0.3)
    fast = [named(upstream, "f%d" % i) for i in range(2)]
    p = portico(cfg_for([slow] + fast, balance="ewma"))
    for _ in range(30):
        assert get(p).status == 200
    # round-robin would send it 10; after its first answer it loses every draw
    assert len(slow.requests) <= 3, len(slow.requests)
    assert len(fast[0].requests) + len(fast[1].requests) >= 27


# ------------------------------------------------------- outlier detection

@pytest.mark.parametrize("workers", [1, 3])
def test_outlier_ejects_failing_target_and_returns(portico, upstream, workers):
    status = [503]
    bad = named(upstream, "bad", status=status)
    good = [named(upstream, "g%d" % i) for i in range(2)]
    cfg, aport = admin_cfg(cfg_for([bad] + good, outlier={"consecutive_5xx": 3, "base_ejection_time": "2s",
                                                          "max_ejected_percent": 50}))
    cfg["workers"] = workers  # the failures counted by any worker eject it for all
    p = portico(cfg)
    n = 0
    while len(bad.requests) < 3:
        get(p)
        n += 1
        assert n < 20
    m = scrape(aport)
    assert value(m, "portico_upstream_target_ejections_total", upstream="up", target=bad.addr) == 1
    assert value(m, "portico_upstream_target_ejected", upstream="up", target=bad.addr) == 1
    for _ in range(20):
        r = get(p)
        assert r.status == 200 and r.body in (b"g0", b"g1")
    assert len(bad.requests) == 3  # ejected: none of the twenty
    # after the ejection time it is back in rotation (and now healthy)
    status[0] = 200
    time.sleep(2.2)
    # round-robin state is per worker: with 3 workers, a few requests per
    # worker may all fall on the good targets; 30 cannot
    got = [get(p).body for _ in range(30)]
    assert b"bad" in got
    assert value(scrape(aport), "portico_upstream_target_ejected", upstream="up", target=bad.addr) == 0


def test_outlier_ejects_refusing_target(portico, upstream):
    dead = "127.0.0.1:%d" % free_port()
    good = [named(upstream, "g%d" % i) for i in range(2)]
    cfg, aport = admin_cfg(simple_config([dead] + [u.addr for u in good],
                                         upstream_extra={"outlier": {"consecutive_failures": 2,
                                                                     "base_ejection_time": "30s"}}))
    p = portico(cfg)
    for _ in range(12):  # idempotent: a refused connect moves on to the next target
        assert get(p).status == 200
    m = scrape(aport)
    assert value(m, "portico_upstream_target_ejections_total", upstream="up", target=dead) == 1
    assert value(m, "portico_upstream_target_ejected", upstream="up", target=dead) == 1
    retries = value(m, "portico_upstream_retries_total", upstream="up")
    for _ in range(10):
        assert get(p).status == 200
    # no more attempts on the ejected target: no more retries
    assert value(scrape(aport), "portico_upstream_retries_total", upstream="up") == retries


def test_ejection_survives_reload(portico, upstream):
    status = [503]
    bad = named(upstream, "bad", status=status)
    good = named(upstream, "good")
    outlier = {"consecutive_5xx": 2, "base_ejection_time": "60s"}
    p = portico(cfg_for([bad, good], outlier=outlier))
    while len(bad.requests) < 2:
        get(p)
    status[0] = 200
    # reload with the same upstream and targets (and one more route): the
    # target's shared state, hence its ejection, is kept
    cfg = cfg_for([bad, good], outlier=outlier)
    cfg["routes"].insert(0, {"name": "other", "match": {"path_prefix": "/other"}, "upstream": "up"})
    p.write_config(cfg)
    p.signal(signal.SIGHUP)
    wait_reloaded(p)
    for _ in range(8):
        assert get(p).body == b"good"
    assert len(bad.requests) == 2


def test_all_ejected_fails_open(portico, upstream):
    status = [503]
    only = named(upstream, "only", status=status)
    p = portico(cfg_for([only], outlier={"consecutive_5xx": 1, "max_ejected_percent": 100,
                                         "base_ejection_time": "30s"}))
    assert get(p).status == 503  # the upstream's own answer; ejected now
    status[0] = 200
    r = get(p)  # the only target is ejected: it is used anyway
    assert r.status == 200 and r.body == b"only"


# --------------------------------------------------------- circuit breaker

def test_circuit_breaker_closed_open_half_open(portico, upstream):
    status = [500]
    up = named(upstream, "up", status=status)
    cfg, aport = admin_cfg(cfg_for([up], circuit_breaker={"consecutive_failures": 3, "open_time": "1s",
                                                          "half_open_requests": 1}))
    p = portico(cfg)
    for _ in range(3):
        assert get(p).status == 500  # closed: the upstream's answers pass
    assert value(scrape(aport), "portico_upstream_circuit_state", upstream="up") == 1
    doc = problem_check(get(p), 503)  # open: answered without the upstream
    assert "circuit breaker" in doc["detail"]
    assert len(up.requests) == 3
    # half-open after open_time: a failing probe opens it again
    time.sleep(1.2)
    assert get(p).status == 500
    assert len(up.requests) == 4
    problem_check(get(p), 503)
    assert len(up.requests) == 4
    # half-open again: a good probe closes it
    status[0] = 200
    time.sleep(1.2)
    assert get(p).status == 200
    assert value(scrape(aport), "portico_upstream_circuit_state", upstream="up") == 0
    for _ in range(5):
        assert get(p).status == 200
    assert len(up.requests) == 10


# ------------------------------------------------------ active health checks

def checked(up):
    return [r for r in up.requests if r.path == "/healthz"]


def served(up):
    return [r for r in up.requests if r.path != "/healthz"]


def test_active_http_check_takes_target_out_and_back(portico, upstream):
    state = [b"degraded"]
    def bad_handler(req):
        if req.path == "/healthz":
            return make_response(200, "OK", [], state[0])
        return make_response(200, "OK", [], "bad")
    bad = upstream(bad_handler, name="bad")
    def good_handler(name):
        return lambda req: make_response(200, "OK", [], "ready" if req.path == "/healthz" else "ok " + name)
    good = [upstream(good_handler(n), name=n) for n in ("g0", "g1")]
    hc = {"path": "/healthz", "body": "ready", "expected_statuses": [200], "interval": "100ms",
          "timeout": "1s", "unhealthy_threshold": 2, "healthy_threshold": 1, "host": "health.local"}
    cfg, aport = admin_cfg(cfg_for([bad] + good, health_check=hc))
    p = portico(cfg)
    assert wait_for(lambda: len(checked(bad)) >= 3, timeout=10)
    m = scrape(aport)
    assert value(m, "portico_upstream_target_healthy", upstream="up", target=bad.addr) == 0
    assert value(m, "portico_upstream_target_healthy", upstream="up", target=good[0].addr) == 1
    hreq = checked(bad)[0]
    assert hreq.method == "GET" and dict((k.lower(), v) for k, v in hreq.headers)["host"] == "health.local"
    assert len(checked(good[0])) >= 1  # every target is checked
    for _ in range(12):
        assert get(p).body.startswith(b"ok")  # body lacks "ready": out of rotation
    assert served(bad) == []
    state[0] = b"all ready"
    n = len(checked(bad))
    assert wait_for(lambda: len(checked(bad)) >= n + 2, timeout=10)
    got = [get(p).body for _ in range(6)]
    assert b"bad" in got
    assert value(scrape(aport), "portico_upstream_target_healthy", upstream="up", target=bad.addr) == 1


def test_active_tcp_check_spares_non_idempotent_requests(portico, upstream):
    dead = "127.0.0.1:%d" % free_port()
    good = named(upstream, "good")
    cfg, aport = admin_cfg(simple_config([dead, good.addr], upstream_extra={
        "health_check": {"type": "tcp", "interval": "100ms", "timeout": "500ms", "unhealthy_threshold": 1}}))
    p = portico(cfg)
    time.sleep(1.0)  # a few check rounds; the assertion below does not depend on how many
    for _ in range(8):
        r = request(p.port, "POST", "/x", body=b"data")
        assert r.status == 200 and r.body == b"good"  # never sent to the dead target (no retry for POST)


def test_active_http_check_over_tls(portico, upstream, pki, tls_upstream):
    # two targets of an https upstream: a real HTTPS server, and one that
    # speaks plain HTTP (the TLS handshake fails there: unhealthy)
    good = tls_upstream()
    plain = named(upstream, "plain")
    cfg = simple_config([good.addr, plain.addr], upstream_extra={
        "tls": {"ca": pki["ca"], "sni": "a.test"},
        "health_check": {"path": "/healthz", "interval": "100ms", "timeout": "1s", "unhealthy_threshold": 1}})
    p = portico(cfg)
    assert wait_for(lambda: any(r[1] == "/healthz" for r in good.requests), timeout=10)
    method, target, headers, _ = next(r for r in good.requests if r[1] == "/healthz")
    assert method == "GET" and headers["host"] == good.addr and headers["user-agent"] == "portico-health-check"
    assert wait_for(lambda: len(plain.partial) + len(plain.requests) >= 2, timeout=10)  # checked, failed
    for _ in range(6):
        r = request(p.port, "POST", "/x", body=b"d")  # not retried: the plain target is never tried
        assert r.status == 200 and r.json()["target"] == "/x"


def test_active_http_check_over_h2c(portico):
    from h2util import H2Upstream

    def responder(name, health_status):
        def respond(rec):
            path = dict(rec["headers"])[":path"]
            if path == "/healthz":
                return [(":status", str(health_status))], b"ready"
            return [(":status", "200")], name.encode()
        return respond
    good, bad = H2Upstream(responder("good", 200)), H2Upstream(responder("bad", 503))
    try:
        cfg = simple_config([good.addr, bad.addr], upstream_extra={
            "protocol": "h2c",
            "health_check": {"path": "/healthz", "body": "ready", "interval": "100ms", "timeout": "1s",
                             "unhealthy_threshold": 1}})
        p = portico(cfg)
        checks = lambda up: [dict(r["headers"]) for r in up.done if dict(r["headers"])[":path"] == "/healthz"]
        assert wait_for(lambda: len(checks(bad)) >= 2 and len(checks(good)) >= 1, timeout=10)
        h = checks(good)[0]
        assert h[":method"] == "GET" and h[":authority"] == good.addr and h[":scheme"] == "http"
        assert h["user-agent"] == "portico-health-check"
        for _ in range(6):
            r = request(p.port, "GET", "/x")
            assert r.status == 200 and r.body == b"good"
    finally:
        good.close()
        bad.close()


def test_health_checks_follow_reloads(portico, upstream):
    def handler(name, health):
        return lambda req: make_response(health if req.path == "/healthz" else 200, "X", [], name)
    bad = upstream(handler("bad", 503), name="bad")
    good = upstream(handler("good", 200), name="good")
    plain = cfg_for([bad, good])
    p = portico(plain)
    assert {get(p).body for _ in range(4)} == {b"bad", b"good"}
    # a reload adds checks: the checker thread starts and takes bad out
    p.write_config(cfg_for([bad, good], health_check={"path": "/healthz", "interval": "100ms",
                                                      "unhealthy_threshold": 1}))
    p.signal(signal.SIGHUP)
    wait_reloaded(p, 1)
    assert wait_for(lambda: len(checked(bad)) >= 2, timeout=10)
    n = len(served(bad))
    for _ in range(6):
        assert get(p).body == b"good"
    assert len(served(bad)) == n
    # a reload without checks: their verdict no longer counts
    p.write_config(plain)
    p.signal(signal.SIGHUP)
    wait_reloaded(p, 2)
    assert b"bad" in {get(p).body for _ in range(4)}


def test_active_http_check_over_h2_tls(portico, upstream, pki):
    import socket
    import ssl
    from h2util import H2Upstream

    class TLSH2Upstream(H2Upstream):
        """H2Upstream behind TLS with ALPN h2."""
        def __init__(self, respond):
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(*pki["a"])
            self.ctx.set_alpn_protocols(["h2"])
            super().__init__(respond)

        def accept_loop(self):
            while True:
                try:
                    c, _ = self.sock.accept()
                except OSError:
                    return
                threading.Thread(target=self.serve_tls, args=(c,), daemon=True).start()

        def serve_tls(self, c):
            try:
                s = self.ctx.wrap_socket(c, server_side=True)
            except (ssl.SSLError, OSError, socket.error):
                c.close()
                return
            self.serve(s)

    def respond(rec):
        path = dict(rec["headers"])[":path"]
        return [(":status", "200")], (b"ready" if path == "/healthz" else b"good")
    good = TLSH2Upstream(respond)
    plain = named(upstream, "plain")  # plain HTTP/1.1: the TLS handshake fails
    try:
        cfg = simple_config([good.addr, plain.addr], upstream_extra={
            "protocol": "h2", "tls": {"ca": pki["ca"], "sni": "a.test"},
            "health_check": {"path": "/healthz", "interval": "100ms", "timeout": "1s", "unhealthy_threshold": 1}})
        p = portico(cfg)
        checks = [lambda: [dict(r["headers"]) for r in good.done if dict(r["headers"])[":path"] == "/healthz"]]
        assert wait_for(lambda: len(checks[0]()) >= 2, timeout=10)
        h = checks[0]()[0]
        assert h[":scheme"] == "https" and h[":method"] == "GET"
        for _ in range(6):  # a TLS failure is not retried: every answer proves the plain target was skipped
            r = request(p.port, "GET", "/x")
            assert r.status == 200 and r.body == b"good"
    finally:
        good.close()


# ------------------------------------------------------ with retries

def test_retried_5xx_attempts_end_in_the_balancer(portico, upstream):
    """A 503 that the route retries on the other target ends its attempt in
    the shared in-flight count: with a leak the failing target would look
    ever busier and never be picked first again."""
    bad = named(upstream, "bad", status=[503])
    good = named(upstream, "good")
    p = portico(cfg_for([bad, good], balance="least_requests",
                        retries={"attempts": 2, "on": [503], "backoff": {"base": "1ms", "max": "2ms"}}))
    for _ in range(30):
        r = get(p)
        assert r.status == 200 and r.body == b"good", r
    # every request ended on "good"; "bad" kept being tried first for a share
    assert len(good.requests) == 30
    assert len(bad.requests) >= 5, len(bad.requests)


# ------------------------------------------------- a target killed under load

def test_target_killed_under_load_no_failed_requests(portico, upstream):
    """Issue 9 figure: one of three targets is killed while clients keep
    sending idempotent requests. Only requests the target was answering at
    that moment may fail (at most one per client: their response was cut);
    every later one succeeds (connect errors are retried on the others,
    then outlier detection ejects it), and once restarted on the same
    address the active health check brings it back into rotation."""
    from test_dns import upstream_at
    ups = [named(upstream, "t%d" % i) for i in range(3)]
    victim_port = ups[2].port
    cfg = simple_config([u.addr for u in ups], workers=2, upstream_extra={
        "outlier": {"consecutive_failures": 1, "base_ejection_time": "500ms", "max_ejected_percent": 34},
        "health_check": {"type": "tcp", "interval": "100ms", "timeout": "500ms",
                         "unhealthy_threshold": 1, "healthy_threshold": 1},
        "retries": {"attempts": 3, "on": ["connect_failure", "reset"], "backoff": {"base": "1ms", "max": "5ms"}}})
    p = portico(cfg)
    stop = threading.Event()
    results, lock = [], threading.Lock()

    def client():
        while not stop.is_set():
            try:
                r = request(p.port, "GET", "/load", timeout=10)
                s = (r.status, r.body)
            except Exception as e:  # noqa: BLE001
                s = ("error", repr(e))
            with lock:
                results.append(s)

    ts = [threading.Thread(target=client) for _ in range(4)]
    for t in ts:
        t.start()
    try:
        assert wait_for(lambda: len(results) > 50, timeout=20)
        ups[2].stop()  # killed: connections refused from now on
        with lock:
            killed_at = len(results)
        assert wait_for(lambda: len(results) > killed_at + 200, timeout=30)
        with lock:
            restarted_at = len(results)
        back = upstream_at("127.0.0.1", victim_port, "t2")  # restarted on the same address
        assert wait_for(lambda: len(back.requests) >= 5, timeout=20), "never back in rotation"
    finally:
        stop.set()
        for t in ts:
            t.join(20)
    back.stop()
    bad = [i for i, s in enumerate(results) if s[0] != 200]
    assert len(bad) <= len(ts), [results[i] for i in bad]
    assert all(killed_at - len(ts) <= i < restarted_at for i in bad), (killed_at, restarted_at, bad)
    assert all(results[i][0] == 502 for i in bad)
    assert len(results) > 250
