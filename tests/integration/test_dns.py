"""Upstream host names resolved by Portico's workers with c-ares (docs/dns.md):
the load-time answer is used first, a new answer takes over once the old
one's TTL has passed (also for keep-alive traffic: pooled connections to an
address the name lost are not reused), a silent or failing DNS server keeps
the last good answer, and a name that does not resolve at load is a config
error.

A tiny UDP DNS server (`DnsServer`, standard library only) answers A queries
for the names it is given, an empty NOERROR for their AAAA queries, NXDOMAIN
for anything else, and can go silent. Two upstreams listen on the same port
on 127.0.0.1 and 127.0.0.2 (loopback aliases need no setup on Linux), so the
name's address decides which one serves a request.

SRV targets (`{srv: NAME}`): the DnsServer also answers SRV queries; two
echo upstreams on different ports of 127.0.0.1 are the records' targets, so
the records' weights, priorities and changes decide which one serves.

Not covered here: the internal HTTP client (pt_http_fetch) resolves through
the same pt_exchange_open, but no built-in plugin calls it yet, so there is
nothing to drive it from outside.
"""

import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import BIN, free_port
from upstreams import Client, Upstream, request, wait_for, wait_reloaded

NAME = "svc.portico.test"


class DnsServer:
    """A UDP DNS server on 127.0.0.1: `answers[name] = (["127.0.0.1"], ttl)`;
    `srv[name] = [(priority, weight, port, target, ttl), ...]` answers SRV
    queries (qtype 33); `silent = True` drops every query; `nxdomain` holds
    names answered NXDOMAIN even if they are known. `queries` records
    (name, qtype)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.answers = {}
        self.srv = {}
        self.nxdomain = set()
        self.silent = False
        self.queries = []
        self.lock = threading.Lock()
        self.stopped = False
        threading.Thread(target=self.loop, daemon=True).start()

    def set(self, name, addrs, ttl):
        with self.lock:
            self.answers[name.lower()] = (list(addrs), ttl)

    def set_srv(self, name, records):
        """records: (priority, weight, port, target, ttl) tuples."""
        with self.lock:
            self.srv[name.lower()] = list(records)

    def count(self, qtype=1):
        with self.lock:
            return sum(1 for _, t in self.queries if t == qtype)

    def close(self):
        self.stopped = True
        self.sock.close()

    def loop(self):
        while not self.stopped:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            try:
                reply = self.answer(data)
            except Exception:  # a malformed query: ignore it
                reply = None
            if reply:
                try:
                    self.sock.sendto(reply, peer)
                except OSError:
                    return

    def answer(self, q):
        qid, flags, qd = struct.unpack("!HHH", q[:6])
        pos, labels = 12, []
        while q[pos]:
            n = q[pos]
            labels.append(q[pos + 1:pos + 1 + n].decode("ascii"))
            pos += 1 + n
        qtype, qclass = struct.unpack("!HH", q[pos + 1:pos + 5])
        question = q[12:pos + 5]
        name = ".".join(labels).lower()
        with self.lock:
            self.queries.append((name, qtype))
            if self.silent:
                return None
            known = (name in self.answers or name in self.srv) and name not in self.nxdomain
            addrs, ttl = self.answers.get(name, ([], 0))
            srv = list(self.srv.get(name, []))
        rd = flags & 0x0100
        if not known:
            return struct.pack("!HHHHHH", qid, 0x8000 | rd | 0x0080 | 3, 1, 0, 0, 0) + question
        rrs = b""
        n = 0
        if qtype == 1:
            for a in addrs:
                rrs += struct.pack("!HHHIH", 0xC00C, 1, 1, ttl, 4) + socket.inet_aton(a)
            n = len(addrs)
        elif qtype == 33:
            for prio, weight, port, target, rttl in srv:
                tname = b"".join(bytes([len(l)]) + l.encode("ascii") for l in target.split(".") if l) + b"\0"
                rdata = struct.pack("!HHH", prio, weight, port) + tname
                rrs += struct.pack("!HHHIH", 0xC00C, 33, 1, rttl, len(rdata)) + rdata
            n = len(srv)
        return struct.pack("!HHHHHH", qid, 0x8000 | 0x0400 | rd | 0x0080, 1, n, 0, 0) + question + rrs


@pytest.fixture
def dns():
    d = DnsServer()
    yield d
    d.close()


def upstream_at(host, port, name):
    """A default echo Upstream listening on host:port."""
    u = Upstream(name=name)
    u.lsock.close()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(128)
    u.lsock, u.port, u.addr = s, port, "%s:%d" % (host, port)
    return u.start()


@pytest.fixture
def pair():
    """Echo upstreams "one" on 127.0.0.1:P and "two" on 127.0.0.2:P."""
    for _ in range(20):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        try:
            one = upstream_at("127.0.0.1", port, "one")
        except OSError:
            continue
        try:
            two = upstream_at("127.0.0.2", port, "two")
        except OSError:
            one.stop()
            continue
        yield port, one, two
        one.stop()
        two.stop()
        return
    pytest.skip("no port free on both 127.0.0.1 and 127.0.0.2")


def dns_config(dns, port, **dns_extra):
    d = {"servers": [dns.addr], "timeout": "300ms", "attempts": 1}
    d.update(dns_extra)
    return {
        "dns": d,
        "upstreams": {"up": {"targets": ["%s:%d" % (NAME, port)]}},
        "routes": [{"name": "main", "match": {"path_prefix": "/"}, "upstream": "up"}],
    }


def served_by(resp):
    assert resp.status == 200, resp
    return resp.json()["server"]


def test_dns_name_used_then_new_address_after_ttl(portico, dns, pair):
    port, one, two = pair
    dns.set(NAME, ["127.0.0.1"], 1)
    p = portico(dns_config(dns, port))
    with Client(p.port) as c:  # keep-alive: the pooled upstream connection too
        for _ in range(3):
            assert served_by(c.request("GET", "/a")) == "one"
        assert served_by(request(p.port, "GET", "/b")) == "one"
        dns.set(NAME, ["127.0.0.2"], 1)
        time.sleep(1.3)  # past the TTL: the next use refreshes in the background
        assert wait_for(lambda: served_by(c.request("GET", "/c")) == "two", timeout=5)
        # from now on only the new address: the pooled connection to .1 is not reused
        for _ in range(5):
            assert served_by(c.request("GET", "/d")) == "two"
        for _ in range(3):
            assert served_by(request(p.port, "GET", "/e")) == "two"
    assert "%s -> 127.0.0.2" % NAME in p.stderr()


def test_dns_answer_kept_for_its_ttl(portico, dns, pair):
    port, one, two = pair
    dns.set(NAME, ["127.0.0.1"], 30)
    p = portico(dns_config(dns, port))
    before = dns.count()
    dns.set(NAME, ["127.0.0.2"], 30)
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert served_by(request(p.port, "GET", "/")) == "one"
        time.sleep(0.05)
    assert dns.count() == before  # no query while the answer is fresh


def test_dns_min_ttl_clamps_short_ttl(portico, dns, pair):
    """A TTL of 0 is kept min_ttl long: at most a few queries per second."""
    port, one, two = pair
    dns.set(NAME, ["127.0.0.1"], 0)
    p = portico(dns_config(dns, port, min_ttl="500ms"))
    before = dns.count()
    deadline = time.monotonic() + 1.6
    n = 0
    while time.monotonic() < deadline:
        assert served_by(request(p.port, "GET", "/")) == "one"
        n += 1
    assert n > 20
    assert 1 <= dns.count() - before <= 4, dns.count() - before


def test_dns_silent_server_keeps_last_good_answer(portico, dns, pair):
    port, one, two = pair
    dns.set(NAME, ["127.0.0.1"], 1)
    p = portico(dns_config(dns, port))
    assert served_by(request(p.port, "GET", "/")) == "one"
    dns.silent = True
    n = dns.count()
    time.sleep(1.2)
    # expired: each request still goes to the last good address while the
    # refresh times out in the background (timeout 300ms, 1 attempt)
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert served_by(request(p.port, "GET", "/")) == "one"
        time.sleep(0.05)
    assert dns.count() > n  # it did try
    assert wait_for(lambda: "keeping the last good answer" in p.stderr(), timeout=3)
    # backoff: not a query per request
    assert dns.count() - n <= 3, dns.count() - n
    # the server answers again (with a new address): taken after the backoff
    dns.set(NAME, ["127.0.0.2"], 1)
    dns.silent = False
    assert wait_for(lambda: served_by(request(p.port, "GET", "/")) == "two", timeout=6)


def test_dns_nxdomain_on_refresh_keeps_last_good_answer(portico, dns, pair):
    port, one, two = pair
    dns.set(NAME, ["127.0.0.1"], 1)
    p = portico(dns_config(dns, port))
    dns.nxdomain.add(NAME)
    time.sleep(1.2)
    for _ in range(10):
        assert served_by(request(p.port, "GET", "/")) == "one"
        time.sleep(0.05)
    assert wait_for(lambda: "keeping the last good answer" in p.stderr(), timeout=3)


def test_dns_several_addresses_take_turns(portico, dns, pair):
    port, one, two = pair
    dns.set(NAME, ["127.0.0.1", "127.0.0.2"], 30)
    cfg = dns_config(dns, port)
    cfg["upstreams"]["up"]["keepalive"] = 0  # every request opens a connection
    p = portico(cfg)
    seen = [served_by(request(p.port, "GET", "/")) for _ in range(6)]
    assert seen.count("one") == 3 and seen.count("two") == 3, seen


def test_dns_failed_address_skipped(portico, dns, pair):
    """An address that refuses connections is avoided by the next ones."""
    port, one, two = pair
    dns.set(NAME, ["127.0.0.3", "127.0.0.1"], 30)  # nothing listens on 127.0.0.3
    cfg = dns_config(dns, port)
    cfg["upstreams"]["up"]["keepalive"] = 0
    p = portico(cfg)
    statuses = [request(p.port, "GET", "/").status for _ in range(6)]
    assert statuses.count(502) <= 1, statuses
    assert statuses[-4:] == [200] * 4, statuses


def test_dns_unresolvable_name_is_a_config_error(tmp_path, dns):
    dns.set("other.portico.test", ["127.0.0.1"], 30)
    cfg = tmp_path / "c.yaml"
    cfg.write_text('listen: ["127.0.0.1:1"]\ndns: {servers: ["%s"]}\nupstreams:\n  up: {targets: ["%s:80"]}\n'
                   'routes:\n  - {match: {path_prefix: /}, upstream: up}\n' % (dns.addr, NAME))
    r = subprocess.run([BIN, "check", "-c", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "c.yaml:4:" in r.stderr and "cannot resolve '%s'" % NAME in r.stderr, r.stderr
    # a silent server: an error too, after the timeout
    dns.silent = True
    cfg.write_text('listen: ["127.0.0.1:1"]\ndns: {servers: ["%s"], timeout: 200ms, attempts: 1}\n'
                   'upstreams:\n  up: {targets: ["other.portico.test:80"]}\n'
                   'routes:\n  - {match: {path_prefix: /}, upstream: up}\n' % dns.addr)
    t0 = time.monotonic()
    r = subprocess.run([BIN, "check", "-c", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "cannot resolve 'other.portico.test'" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 5


def test_dns_config_errors(tmp_path):
    def check(dns_yaml):
        cfg = tmp_path / "c.yaml"
        cfg.write_text('listen: ["127.0.0.1:1"]\ndns: %s\nupstreams: {up: {targets: ["127.0.0.1:80"]}}\n'
                       'routes:\n  - {match: {path_prefix: /}, upstream: up}\n' % dns_yaml)
        return subprocess.run([BIN, "check", "-c", str(cfg)], capture_output=True, text=True, timeout=30)
    r = check('{servers: ["dns.example:53"]}')
    assert r.returncode != 0 and "c.yaml:2:17: invalid dns server 'dns.example:53'" in r.stderr, r.stderr
    r = check('{min_ttl: 10s, max_ttl: 5s}')
    assert r.returncode != 0 and "dns.min_ttl (10000ms) must not exceed dns.max_ttl (5000ms)" in r.stderr, r.stderr
    r = check('{colour: blue}')
    assert r.returncode != 0 and "unknown key 'colour' in dns" in r.stderr, r.stderr
    r = check('{servers: ["127.0.0.1:5353", "[::1]", "10.0.0.2"], timeout: 1s, attempts: 3, min_ttl: 0, max_ttl: 10m}')
    assert r.returncode == 0, r.stderr


def test_dns_reload_takes_the_fresh_load_time_answer(portico, dns, pair):
    """A reload resolves the name again; workers adopt that newer answer
    even though their own has not expired."""
    port, one, two = pair
    dns.set(NAME, ["127.0.0.1"], 3600)
    cfg = dns_config(dns, port)
    p = portico(cfg)
    assert served_by(request(p.port, "GET", "/")) == "one"
    dns.set(NAME, ["127.0.0.2"], 3600)
    cfg["routes"][0]["name"] = "main2"
    p.write_config(cfg)
    p.signal(signal.SIGHUP)
    wait_reloaded(p)
    assert wait_for(lambda: served_by(request(p.port, "GET", "/")) == "two", timeout=5)


def test_dns_h2c_upstream_by_name(portico, dns):
    """HTTP/2 upstream connections follow the name too: a new address gets
    a new connection; the old one takes no new streams."""
    from h2util import H2Upstream, ok_length

    ups = []
    for _ in range(20):
        a = H2Upstream(respond=lambda rec: ok_length(rec))
        port = a.port
        b = H2Upstream.__new__(H2Upstream)
        try:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.2", port))
            s.listen(16)
        except OSError:
            a.close()
            continue
        b.respond, b.sock, b.port, b.addr, b.done, b.lock = ok_length, s, port, "127.0.0.2:%d" % port, [], threading.Lock()
        threading.Thread(target=b.accept_loop, daemon=True).start()
        ups = [a, b]
        break
    assert ups, "no port free on both addresses"
    a, b = ups
    try:
        dns.set(NAME, ["127.0.0.1"], 1)
        cfg = dns_config(dns, port)
        cfg["upstreams"]["up"]["protocol"] = "h2c"
        p = portico(cfg)
        with Client(p.port) as c:
            for _ in range(3):
                assert c.request("GET", "/x").status == 200
            assert len(a.done) == 3 and len(b.done) == 0
            dns.set(NAME, ["127.0.0.2"], 1)
            time.sleep(1.3)
            assert wait_for(lambda: c.request("GET", "/y").status == 200 and len(b.done) > 0, timeout=5)
            n = len(a.done)
            for _ in range(5):
                assert c.request("GET", "/z").status == 200
            assert len(a.done) == n
    finally:
        a.close()
        b.close()


# ------------------------------------------------------------- SRV records

SRV = "_http._tcp.svc.portico.test"
HOST = "host.portico.test"


def srv_config(dns, **dns_extra):
    d = {"servers": [dns.addr], "timeout": "300ms", "attempts": 1}
    d.update(dns_extra)
    return {
        "dns": d,
        "upstreams": {"up": {"targets": [{"srv": SRV}], "keepalive": 0}},
        "routes": [{"name": "main", "match": {"path_prefix": "/"}, "upstream": "up"}],
    }


def spread(port, n):
    seen = [served_by(request(port, "GET", "/")) for _ in range(n)]
    return seen.count("one"), seen.count("two"), seen


def test_srv_targets_weighted_by_records(portico, dns, upstream):
    one, two = upstream(name="one"), upstream(name="two")
    dns.set(HOST, ["127.0.0.1"], 60)
    dns.set_srv(SRV, [(10, 1, one.port, HOST, 60), (10, 2, two.port, HOST, 60)])
    p = portico(srv_config(dns))
    assert dns.count(33) >= 1
    n1, n2, seen = spread(p.port, 60)
    assert n1 + n2 == 60, seen
    assert 12 <= n1 <= 28 and 32 <= n2 <= 48, (n1, n2)


def test_srv_weight_zero_counts_as_one_and_ip_literal_target(portico, dns, upstream):
    one, two = upstream(name="one"), upstream(name="two")
    dns.set(HOST, ["127.0.0.1"], 60)
    dns.set_srv(SRV, [(0, 0, one.port, HOST, 60), (0, 0, two.port, "127.0.0.1", 60)])
    p = portico(srv_config(dns))
    n1, n2, seen = spread(p.port, 20)
    assert 6 <= n1 <= 14 and n1 + n2 == 20, seen


def test_srv_lowest_priority_value_used_exclusively(portico, dns, upstream):
    one, two = upstream(name="one"), upstream(name="two")
    dns.set(HOST, ["127.0.0.1"], 60)
    dns.set_srv(SRV, [(20, 100, two.port, HOST, 60), (10, 1, one.port, HOST, 60)])
    p = portico(srv_config(dns))
    n1, n2, seen = spread(p.port, 20)
    assert n1 == 20 and n2 == 0, seen


def test_srv_change_after_ttl_reloads(portico, dns, upstream):
    one, two = upstream(name="one"), upstream(name="two")
    dns.set(HOST, ["127.0.0.1"], 60)
    dns.set_srv(SRV, [(10, 1, one.port, HOST, 1), (10, 1, two.port, HOST, 1)])
    cfg = srv_config(dns)
    aport = free_port()
    cfg["admin"] = {"listen": "127.0.0.1:%d" % aport}
    p = portico(cfg)

    def targets():
        r = request(aport, "GET", "/api/upstreams")
        assert r.status == 200, r
        return sorted((t["port"], t["weight"], t.get("srv")) for t in r.json()["upstreams"][0]["targets"])
    assert targets() == sorted([(one.port, 1, SRV), (two.port, 1, SRV)])
    n1, n2, seen = spread(p.port, 10)
    assert n1 == 5 and n2 == 5, seen
    dns.set_srv(SRV, [(10, 1, one.port, HOST, 1)])  # "two" removed
    wait_reloaded(p, timeout=10)
    err = p.stderr()
    assert "SRV %s changed (2 -> 1 record: %s:%d (weight 1))" % (SRV, HOST, one.port) in err, err
    n1, n2, seen = spread(p.port, 10)
    assert n1 == 10, seen
    assert targets() == [(one.port, 1, SRV)]
    # unchanged answers afterwards: asked again, no further reload
    q = dns.count(33)
    assert wait_for(lambda: dns.count(33) >= q + 2, timeout=6)
    assert p.stderr().count("reloaded") == 1, p.stderr()


def test_srv_silent_dns_keeps_last_good_set(portico, dns, upstream):
    one, two = upstream(name="one"), upstream(name="two")
    dns.set(HOST, ["127.0.0.1"], 1)
    dns.set_srv(SRV, [(10, 1, one.port, HOST, 1), (10, 1, two.port, HOST, 1)])
    p = portico(srv_config(dns))
    dns.silent = True
    q = dns.count(33)
    assert wait_for(lambda: "keeping the last good answer (2 records)" in p.stderr(), timeout=6), p.stderr()
    assert dns.count(33) > q
    n1, n2, seen = spread(p.port, 10)
    assert n1 == 5 and n2 == 5, seen
    assert "reloaded" not in p.stderr()
    # the server answers again, with one record: taken after the backoff
    dns.set_srv(SRV, [(10, 1, two.port, HOST, 1)])
    dns.silent = False
    wait_reloaded(p, timeout=10)
    n1, n2, seen = spread(p.port, 6)
    assert n2 == 6, seen


def test_srv_sigterm_not_held_up_by_a_refresh(portico, dns, upstream):
    """A refresh waiting on a silent server (up to 5s + 10s + 15s here) is
    abandoned when SIGTERM arrives."""
    one = upstream(name="one")
    dns.set(HOST, ["127.0.0.1"], 60)
    dns.set_srv(SRV, [(10, 1, one.port, HOST, 1)])
    p = portico(srv_config(dns, timeout="5s", attempts=3))
    q = dns.count(33)
    dns.silent = True
    assert wait_for(lambda: dns.count(33) > q, timeout=5)  # the refresh is waiting now
    p.signal(signal.SIGTERM)
    assert p.wait_exit(timeout=10) == 0, p.stderr()
    assert "keeping the last good answer" not in p.stderr()


def test_srv_sighup_resolves_again(portico, dns, upstream):
    one, two = upstream(name="one"), upstream(name="two")
    dns.set(HOST, ["127.0.0.1"], 3600)
    dns.set_srv(SRV, [(10, 1, one.port, HOST, 3600)])
    p = portico(srv_config(dns))
    assert spread(p.port, 3)[0] == 3
    dns.set_srv(SRV, [(10, 1, two.port, HOST, 3600)])
    p.signal(signal.SIGHUP)
    wait_reloaded(p)
    assert spread(p.port, 3)[1] == 3


def test_srv_sighup_while_dns_silent_keeps_the_running_answer(portico, dns, upstream):
    """A reload (another route added) while the DNS server is silent: the SRV
    name keeps the running configuration's records instead of failing."""
    one, two = upstream(name="one"), upstream(name="two")
    dns.set(HOST, ["127.0.0.1"], 3600)
    dns.set_srv(SRV, [(10, 1, one.port, HOST, 3600), (10, 1, two.port, HOST, 3600)])
    cfg = srv_config(dns)
    p = portico(cfg)
    dns.silent = True
    cfg["routes"].insert(0, {"name": "local", "match": {"path": "/local"},
                             "plugins": [{"direct_response": {"status": 204}}]})
    p.write_config(cfg)
    p.signal(signal.SIGHUP)
    wait_reloaded(p)
    assert "this load keeps the running configuration's answer (2 records)" in p.stderr(), p.stderr()
    # and the records' host, a name too
    assert "cannot resolve '%s'" % HOST in p.stderr()
    assert "this load keeps the running configuration's answer (1 address)" in p.stderr(), p.stderr()
    assert request(p.port, "GET", "/local").status == 204  # the new configuration runs
    n1, n2, seen = spread(p.port, 10)
    assert n1 == 5 and n2 == 5, seen
    # a first load has nothing to fall back on: portico check fails
    r = subprocess.run([BIN, "check", "-c", p.config_path], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "cannot resolve SRV '%s'" % SRV in r.stderr, r.stderr


def check_config(tmp_path, text):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    return subprocess.run([BIN, "check", "-c", str(cfg)], capture_output=True, text=True, timeout=30)


def test_srv_unknown_name_is_a_config_error(tmp_path, dns):
    r = check_config(tmp_path, 'listen: ["127.0.0.1:1"]\ndns: {servers: ["%s"]}\nupstreams:\n'
                     '  up:\n    targets:\n      - srv: %s\n'
                     'routes:\n  - {match: {path_prefix: /}, upstream: up}\n' % (dns.addr, SRV))
    assert r.returncode != 0
    assert "c.yaml:6:14: upstream 'up': cannot resolve SRV '%s': Domain name not found" % SRV in r.stderr, r.stderr
    # a name with no SRV record (it has only an A record)
    dns.set(SRV, ["127.0.0.1"], 30)
    r = check_config(tmp_path, 'listen: ["127.0.0.1:1"]\ndns: {servers: ["%s"]}\nupstreams:\n'
                     '  up: {targets: [{srv: %s}]}\n'
                     'routes:\n  - {match: {path_prefix: /}, upstream: up}\n' % (dns.addr, SRV))
    assert r.returncode != 0 and "c.yaml:4:" in r.stderr and "cannot resolve SRV" in r.stderr, r.stderr


def test_srv_target_host_unresolvable_is_a_config_error(tmp_path, dns):
    dns.set_srv(SRV, [(10, 1, 8080, "missing.portico.test", 30)])
    r = check_config(tmp_path, 'listen: ["127.0.0.1:1"]\ndns: {servers: ["%s"]}\nupstreams:\n'
                     '  up: {targets: [{srv: %s}]}\n'
                     'routes:\n  - {match: {path_prefix: /}, upstream: up}\n' % (dns.addr, SRV))
    assert r.returncode != 0
    assert ("c.yaml:4:24: upstream 'up': SRV '%s' target missing.portico.test:8080: cannot resolve "
            "'missing.portico.test'" % SRV) in r.stderr, r.stderr


def test_srv_config_errors(tmp_path, dns):
    dns.set(HOST, ["127.0.0.1"], 30)
    dns.set_srv(SRV, [(10, 1, 8080, HOST, 30)])

    def check(targets):
        return check_config(tmp_path, 'listen: ["127.0.0.1:1"]\ndns: {servers: ["%s"]}\nupstreams:\n'
                            '  up: {targets: %s}\nroutes:\n  - {match: {path_prefix: /}, upstream: up}\n'
                            % (dns.addr, targets))
    r = check('[{srv: %s}, "127.0.0.1:80"]' % SRV)
    assert r.returncode != 0 and "targets are either all {srv: NAME} entries or none" in r.stderr, r.stderr
    r = check('[{srv: %s, weight: 3}]' % SRV)
    assert r.returncode != 0 and "unknown key 'weight' in SRV target" in r.stderr, r.stderr
    r = check('[{srv: "bad name"}]')
    assert r.returncode != 0 and "invalid SRV name 'bad name'" in r.stderr, r.stderr
    r = check('[{srv: %s}, {srv: %s}]' % (SRV, SRV.upper()))
    assert r.returncode == 0, r.stderr
