"""Logs (docs/observability.md "Logs"): access-log field selection, logfmt,
escaping of hostile values, header capture and its refusals, sampling,
syslog (RFC 5424) sinks, and the rate-limited error log."""

import json
import os
import re
import signal
import socket
import subprocess
import time

from conftest import BIN, simple_config
from upstreams import Client, request
from tlsutil import pki  # noqa: F401 (fixture)

# ------------------------------------------------------------------ helpers

LOGFMT_PAIR = re.compile(rb'([A-Za-z0-9_]+)=("(?:[^"\\]|\\.)*"|[^ "]*)(?: |$)')


def unescape_logfmt(v):
    """The value of a logfmt pair as bytes (quoted values unescaped)."""
    if not v.startswith(b'"'):
        return v
    out = bytearray()
    i, s = 0, v[1:-1]
    while i < len(s):
        c = s[i:i + 1]
        if c != b"\\":
            out += c
            i += 1
            continue
        e = s[i + 1:i + 2]
        if e == b"x":
            out.append(int(s[i + 2:i + 4], 16))
            i += 4
        else:
            out += {b"n": b"\n", b"r": b"\r", b"t": b"\t", b'"': b'"', b"\\": b"\\"}[e]
            i += 2
    return bytes(out)


def parse_logfmt(line):
    """A logfmt line into {key: bytes or None (empty value)}; asserts the
    whole line is made of pairs."""
    out, pos = {}, 0
    while pos < len(line):
        m = LOGFMT_PAIR.match(line, pos)
        assert m, "not logfmt at %d: %r" % (pos, line)
        out[m.group(1).decode()] = unescape_logfmt(m.group(2)) if m.group(2) else None
        pos = m.end()
    return out


def raw_lines(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    return [ln for ln in data.split(b"\n") if ln]


def wait_lines(reader, pred, timeout=5):
    deadline = time.monotonic() + timeout
    while True:
        lines = reader()
        hits = [ln for ln in lines if pred(ln)]
        if hits:
            return hits
        assert time.monotonic() < deadline, "no matching line; last: %r" % lines[-5:]
        time.sleep(0.05)


def check_fails(tmp_path, cfg_text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(cfg_text)
    r = subprocess.run([BIN, "check", "-c", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0, r.stdout + r.stderr
    assert needle in r.stderr, r.stderr
    return r.stderr


# --------------------------------------------------------- fields, formats

def test_selected_fields_json(portico, echo):
    p = portico(simple_config(echo.addr, access_log={
        "path": "./a.log",
        "fields": ["status", "method", "uri_path", "query", "host", "user_agent", "protocol", "responder",
                   "attempts", "ttfb_ms", "scheme"]}))
    log = os.path.join(p.tmp, "a.log")
    r = request(p.port, "GET", "/sel/x?k=v", headers={"User-Agent": "probe/1.0", "Host": "api.example"})
    assert r.status == 200
    line = wait_lines(lambda: raw_lines(log), lambda ln: b"/sel/x" in ln)[0]
    e = json.loads(line)
    assert list(e) == ["status", "method", "uri_path", "query", "host", "user_agent", "protocol", "responder",
                       "attempts", "ttfb_ms", "scheme"]
    assert e["status"] == 200 and e["method"] == "GET"
    assert e["uri_path"] == "/sel/x" and e["query"] == "k=v"
    assert e["host"] == "api.example" and e["user_agent"] == "probe/1.0"
    assert e["protocol"] == "HTTP/1.1" and e["scheme"] == "http"
    assert e["responder"] is None and e["attempts"] == 1
    assert isinstance(e["ttfb_ms"], float) and e["ttfb_ms"] >= 0


def test_responder_field_names_the_plugin(portico, echo):
    cfg = simple_config(echo.addr, access_log={"path": "./a.log", "fields": ["uri_path", "status", "responder"]})
    cfg["routes"].insert(0, {"name": "local", "match": {"path": "/local"},
                             "plugins": [{"direct_response": {"status": 201, "body": "made"}}]})
    p = portico(cfg)
    assert request(p.port, "GET", "/local").status == 201
    line = wait_lines(lambda: raw_lines(os.path.join(p.tmp, "a.log")), lambda ln: b"/local" in ln)[0]
    assert json.loads(line) == {"uri_path": "/local", "status": 201, "responder": "direct_response"}


def test_logfmt_hostile_path_and_headers(portico, echo):
    p = portico(simple_config(echo.addr, access_log={
        "path": "./a.log", "format": "logfmt",
        "fields": ["method", "path", "status", "user_agent", "upstream_ms"],
        "request_headers": ["X-Tenant"]}))
    log = os.path.join(p.tmp, "a.log")
    hostile_ua = b'ua "quoted" back\\slash \xff\xfe bad-utf8 \xc3\xa9 ok\ttab'
    with Client(p.port) as c:
        c.send(b"GET /h/a%20b?q=\"x\"\\y HTTP/1.1\r\nHost: t\r\nUser-Agent: " + hostile_ua +
               b"\r\nX-Tenant: acme=1 status=500\r\n\r\n")
        assert c.read_response().status == 200
    line = wait_lines(lambda: raw_lines(log), lambda ln: b"/h/a" in ln)[0]
    assert b"\r" not in line
    kv = parse_logfmt(line)
    assert list(kv) == ["method", "path", "status", "user_agent", "upstream_ms", "req_x_tenant"]
    assert kv["path"] == b'/h/a%20b?q="x"\\y'
    assert kv["user_agent"] == hostile_ua           # every byte recoverable from the escapes
    assert b"\\xff\\xfe" in line and b"\\t" in line and "é".encode() in line
    assert kv["req_x_tenant"] == b"acme=1 status=500"   # cannot forge a status pair
    assert kv["status"] == b"200"
    float(kv["upstream_ms"])


def test_crlf_in_request_never_splits_a_line(portico, echo):
    """A CR or LF smuggled into the target or a header (rejected as 400 by
    the parser or not) is escaped: every line is one valid record."""
    p = portico(simple_config(echo.addr, access_log={"path": "./a.log", "format": "logfmt",
                                                     "fields": ["path", "status"],
                                                     "request_headers": ["X-Evil"]}))
    log = os.path.join(p.tmp, "a.log")
    for raw in (b"GET /x\rstatus=200 HTTP/1.1\r\nHost: t\r\n\r\n",
                b"GET /y HTTP/1.1\r\nHost: t\r\nX-Evil: a\rb\r\n\r\n",
                b"GET /z\x00\x7f HTTP/1.1\r\nHost: t\r\n\r\n"):
        with Client(p.port) as c:
            c.send(raw)
            try:
                c.read_response()
            except Exception:
                pass
    assert request(p.port, "GET", "/done").status == 200
    lines = wait_lines(lambda: raw_lines(log), lambda ln: b"/done" in ln) and raw_lines(log)
    for ln in lines:
        kv = parse_logfmt(ln)
        assert set(kv) == {"path", "status", "req_x_evil"}, ln
        assert b"\r" not in ln


def test_header_capture_json_bounded(portico, upstream):
    up = upstream(lambda req: b"HTTP/1.1 200 OK\r\nX-Cache: HIT\r\nContent-Length: 2\r\n\r\nok")
    p = portico(simple_config(up.addr, access_log={
        "path": "./a.log", "fields": ["uri_path"], "request_headers": ["X-Tenant", "X-Absent"],
        "response_headers": ["X-Cache"], "header_max_length": 8}))
    r = request(p.port, "GET", "/hc", headers={"X-Tenant": "tenant-0123456789"})
    assert r.status == 200
    line = wait_lines(lambda: raw_lines(os.path.join(p.tmp, "a.log")), lambda ln: b"/hc" in ln)[0]
    assert json.loads(line) == {"uri_path": "/hc", "req_x_tenant": "tenant-0", "req_x_absent": None,
                                "resp_x_cache": "HIT"}


def test_credentials_refused_without_opt_in(tmp_path, echo):
    base = "listen: [127.0.0.1:1]\nupstreams: {up: {targets: [\"%s\"]}}\nroutes: [{match: {path_prefix: /}, upstream: up}]\n" % echo.addr
    for key, name in (("request_headers", "Authorization"), ("request_headers", "Cookie"),
                      ("request_headers", "Proxy-Authorization"), ("response_headers", "Set-Cookie")):
        err = check_fails(tmp_path, base + "access_log:\n  %s: [%s]\n" % (key, name),
                          "access_log.%s: refusing to log %s" % (key, name))
        assert "bad.yaml:" in err and "allow_sensitive_headers" in err


def test_cookie_logged_with_explicit_opt_in(portico, echo):
    p = portico(simple_config(echo.addr, access_log={
        "path": "./a.log", "fields": ["uri_path"], "request_headers": ["Cookie"],
        "allow_sensitive_headers": ["Cookie"]}))
    assert request(p.port, "GET", "/ck", headers={"Cookie": "s=1"}).status == 200
    line = wait_lines(lambda: raw_lines(os.path.join(p.tmp, "a.log")), lambda ln: b"/ck" in ln)[0]
    assert json.loads(line)["req_cookie"] == "s=1"


def test_reload_changes_format(portico, echo):
    p = portico(simple_config(echo.addr))
    assert request(p.port, "GET", "/one").status == 200
    wait_lines(lambda: raw_lines(p.access_log_path), lambda ln: b"/one" in ln)
    cfg = simple_config(echo.addr, access_log={"path": p.access_log_path, "format": "logfmt",
                                               "fields": ["path", "status"]})
    p.write_config(cfg)
    p.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reloaded" not in p.stderr():
        assert time.monotonic() < deadline, p.stderr()
        time.sleep(0.05)
    assert request(p.port, "GET", "/two").status == 200
    line = wait_lines(lambda: raw_lines(p.access_log_path), lambda ln: b"/two" in ln)[0]
    assert line == b"path=/two status=200"


# ----------------------------------------------------------------- sampling

def metric_value(aport, name):
    r = request(aport, "GET", "/metrics")
    assert r.status == 200
    for ln in r.body.decode().splitlines():
        if ln.startswith(name + " ") or ln.startswith(name + "{"):
            return float(ln.rsplit(" ", 1)[1])
    return None


def test_sampling_keeps_every_5xx_and_a_deterministic_fraction(portico, upstream):
    from conftest import free_port
    def answer(req):
        code = 503 if "/fail" in req.target else 200
        return b"HTTP/1.1 %d X\r\nContent-Length: 2\r\n\r\nok" % code
    up = upstream(answer)
    aport = free_port()
    cfg = simple_config(up.addr, limits={"max_body_size": "1k"},
                        access_log={"path": "./a.log", "fields": ["uri_path", "status"],
                                             "sample": {"ratio": 0.25, "always": ["5xx"]}})
    cfg["admin"] = {"listen": "127.0.0.1:%d" % aport}
    p = portico(cfg)
    for i in range(40):
        assert request(p.port, "GET", "/ok%d" % i).status == 200
    for i in range(6):
        assert request(p.port, "GET", "/fail%d" % i).status == 503
    for i in range(4):  # 4xx (here a 413) is not in `always`: sampled like 2xx
        r = request(p.port, "POST", "/big%d" % i, body=b"x" * 2048)
        assert r.status == 413
    assert request(p.port, "GET", "/fail-last").status == 503  # marker: written, and after all others
    lines = wait_lines(lambda: raw_lines(os.path.join(p.tmp, "a.log")), lambda ln: b"/fail-last" in ln)
    lines = raw_lines(os.path.join(p.tmp, "a.log"))
    entries = [json.loads(ln) for ln in lines]
    fails = [e for e in entries if e["status"] == 503]
    others = [e for e in entries if e["status"] != 503]
    assert len(fails) == 7, entries
    # 44 requests eligible for sampling at 0.25: exactly floor(44 * 0.25) = 11
    # kept, every 4th one
    assert len(others) == 11, entries
    assert [e["uri_path"] for e in others[:3]] == ["/ok3", "/ok7", "/ok11"]
    assert metric_value(aport, "portico_access_log_sampled_out_total") == 33


# ------------------------------------------------------------------- syslog

RFC5424 = re.compile(rb"^<(\d{1,3})>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\S{1,255}) (\S{1,48}) (\d+) (\S{1,32}) - (.*)$",
                     re.S)


def recv_datagrams(sock, want, pred=lambda d: True, timeout=5):
    sock.settimeout(0.2)
    got = []
    deadline = time.monotonic() + timeout
    while len([d for d in got if pred(d)]) < want and time.monotonic() < deadline:
        try:
            got.append(sock.recv(70000))
        except socket.timeout:
            pass
    return got


def check_rfc5424(d, pid, app, msgid, pri):
    m = RFC5424.match(d)
    assert m, d
    assert int(m.group(1)) == pri, d
    assert m.group(3) == socket.gethostname().encode(), d
    assert m.group(4) == app and int(m.group(5)) == pid and m.group(6) == msgid, d
    t = time.mktime(time.strptime(m.group(2)[:19].decode(), "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert abs(t - time.time()) < 30
    assert not m.group(7).endswith(b"\n")
    return m.group(7)


def test_syslog_unix_socket(portico, echo, tmp_path):
    path = str(tmp_path / "log.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    try:
        p = portico(simple_config(echo.addr, access_log={
            "syslog": {"address": "unix:" + path, "facility": "local3", "app_name": "gw-test"},
            "fields": ["uri_path", "status"]}))
        for i in range(3):
            assert request(p.port, "GET", "/sys%d" % i).status == 200
        got = recv_datagrams(rx, 3, lambda d: b"/sys" in d)
        msgs = [check_rfc5424(d, p.proc.pid, b"gw-test", b"access", 19 * 8 + 6) for d in got]
        assert [json.loads(m)["uri_path"] for m in msgs] == ["/sys0", "/sys1", "/sys2"]
    finally:
        rx.close()


def test_syslog_udp_logfmt(portico, echo):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    port = rx.getsockname()[1]
    try:
        p = portico(simple_config(echo.addr, access_log={
            "syslog": {"address": "udp:127.0.0.1:%d" % port}, "format": "logfmt",
            "fields": ["uri_path", "status"]}))
        assert request(p.port, "GET", "/udp%0d%0a").status == 400
        got = recv_datagrams(rx, 1, lambda d: b"/udp" in d)
        msg = check_rfc5424(got[0], p.proc.pid, b"portico", b"access", 16 * 8 + 6)
        assert msg == b"uri_path=/udp%0d%0a status=400"
    finally:
        rx.close()


def test_syslog_unix_socket_missing_is_a_clear_startup_error(tmp_path, echo):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("listen: [\"127.0.0.1:1\"]\nupstreams: {up: {targets: [\"%s\"]}}\n"
                   "routes: [{match: {path_prefix: /}, upstream: up}]\n"
                   "access_log: {syslog: {address: \"unix:%s/nope.sock\"}}\n" % (echo.addr, tmp_path))
    r = subprocess.run([BIN, "run", "-c", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "cannot open access log unix:%s/nope.sock: No such file or directory" % tmp_path in r.stderr, r.stderr


# ---------------------------------------------------------------- error log

def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_error_log_upstream_refusing_connections(portico):
    dead = "127.0.0.1:%d" % closed_port()
    p = portico(simple_config(dead, plugins=[{"request_id": {}}],
                              error_log={"path": "./err.log", "level": "warn"}))
    r = request(p.port, "GET", "/down", headers={"X-Request-Id": "rid-down-1"})
    assert r.status == 502
    log = os.path.join(p.tmp, "err.log")
    lines = wait_lines(lambda: raw_lines(log), lambda ln: b"level=error" in ln)
    kv = parse_logfmt(lines[-1])
    assert kv["level"] == b"error" and kv["kind"] == b"upstream_connect"
    assert kv["worker"] == b"0" and kv["route"] == b"main" and kv["upstream"] == b"up"
    assert kv["target"] == dead.encode() and kv["request_id"] == b"rid-down-1"
    assert kv["client"] == b"127.0.0.1"
    assert kv["msg"].startswith(b"connection to the upstream failed")
    assert re.match(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", kv["time"])
    # startup messages still go to stderr as before
    assert "listening on" in p.stderr()


def test_error_log_json_and_level_filter(portico):
    dead = "127.0.0.1:%d" % closed_port()
    p = portico(simple_config(dead, error_log={"path": "./err.log", "level": "error", "format": "json"},
                              route_extra={"retries": {"attempts": 2, "on": ["connect_failure"], "backoff": {"base": "1ms"}}}))
    assert request(p.port, "GET", "/j").status == 502
    log = os.path.join(p.tmp, "err.log")
    lines = wait_lines(lambda: raw_lines(log), lambda ln: b'"level":"error"' in ln)
    time.sleep(0.3)
    entries = [json.loads(ln) for ln in raw_lines(log)]
    # the retried attempt is a warning: below the level, not written
    assert [e["level"] for e in entries] == ["error"], entries
    assert entries[0]["kind"] == "upstream_connect" and entries[0]["route"] == "main"
    assert "; retrying" not in entries[0]["msg"]


def test_error_log_flood_is_rate_limited(portico):
    dead = "127.0.0.1:%d" % closed_port()
    p = portico(simple_config(dead, access_log={"path": "./a.log", "fields": ["attempts"]},
                              error_log={"path": "./err.log", "rate_limit": {"burst": 5, "per_second": 0}}))
    n = 60
    for i in range(n):
        assert request(p.port, "GET", "/flood%d" % i).status == 502
    log = os.path.join(p.tmp, "err.log")
    # every failed attempt is one event of kind upstream_connect
    alog = os.path.join(p.tmp, "a.log")
    wait_lines(lambda: raw_lines(alog) if len(raw_lines(alog)) >= n else [], lambda ln: True)
    events = sum(json.loads(ln)["attempts"] for ln in raw_lines(alog))
    assert events >= n

    def suppressed_sum():
        return sum(int(re.search(rb"suppressed (\d+) similar", ln).group(1))
                   for ln in raw_lines(log) if b"suppressed" in ln)
    deadline = time.monotonic() + 10
    while suppressed_sum() < events - 5:
        assert time.monotonic() < deadline, raw_lines(log)
        time.sleep(0.1)
    lines = raw_lines(log)
    messages = [ln for ln in lines if b"suppressed" not in ln]
    summaries = [ln for ln in lines if b"suppressed" in ln]
    assert len(messages) == 5, lines
    assert suppressed_sum() == events - 5
    assert 1 <= len(summaries) <= 3, summaries  # at most one a second per kind
    for ln in summaries:
        assert parse_logfmt(ln)["kind"] == b"upstream_connect"
    assert len(lines) <= 5 + len(summaries)


def test_sigusr1_reopens_error_log_and_logfmt_access_log(portico):
    dead = "127.0.0.1:%d" % closed_port()
    p = portico(simple_config(dead, access_log={"path": "./a.log", "format": "logfmt", "fields": ["uri_path"]},
                              error_log={"path": "./err.log"}))
    elog, alog = os.path.join(p.tmp, "err.log"), os.path.join(p.tmp, "a.log")
    assert request(p.port, "GET", "/before").status == 502
    wait_lines(lambda: raw_lines(elog), lambda ln: b"upstream_connect" in ln)
    wait_lines(lambda: raw_lines(alog), lambda ln: ln == b"uri_path=/before")
    os.rename(elog, elog + ".1")
    os.rename(alog, alog + ".1")
    p.signal(signal.SIGUSR1)
    deadline = time.monotonic() + 5
    i = 0
    while not (raw_lines(elog) and raw_lines(alog)):
        assert time.monotonic() < deadline, "no new log files after SIGUSR1"
        request(p.port, "GET", "/after%d" % i)
        i += 1
        time.sleep(0.2)
    # the new files have only later lines; the renamed ones keep the earlier
    # (a request racing the reopen may land in either)
    assert all(b"/after" in ln for ln in raw_lines(alog))
    assert raw_lines(alog + ".1")[0] == b"uri_path=/before"
    assert raw_lines(elog + ".1") and b"upstream_connect" in raw_lines(elog)[0]


def test_tls_fields(portico, echo, pki):
    from conftest import free_port
    from tlsutil import client_ctx, tls_connect, tls_listen
    port = free_port()
    cfg = simple_config(echo.addr, listen=tls_listen(port, [pki["a"], pki["b"]]),
                        access_log={"path": "./a.log", "fields": ["uri_path", "scheme", "protocol", "tls_version", "sni"]})
    p = portico(cfg, port=port)
    s = tls_connect(p.port, client_ctx(pki), "a.test")
    s.sendall(b"GET /tls HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
    while s.recv(65536):
        pass
    version = s.version()
    s.close()
    line = wait_lines(lambda: raw_lines(os.path.join(p.tmp, "a.log")), lambda ln: b"/tls" in ln)[0]
    assert json.loads(line) == {"uri_path": "/tls", "scheme": "https", "protocol": "HTTP/1.1",
                                "tls_version": version, "sni": "a.test"}


def test_protocol_http2_and_host_from_authority(portico, echo):
    from h2util import H2
    p = portico(simple_config(echo.addr, access_log={"path": "./a.log", "format": "logfmt",
                                                     "fields": ["method", "uri_path", "protocol", "host", "status"]}))
    c = H2(p.port)
    c.request(1, "/over-h2", end=True, extra=[])
    assert c.wait(lambda: c.st(1)["ended"], 10)
    c.close()
    line = wait_lines(lambda: raw_lines(os.path.join(p.tmp, "a.log")), lambda ln: b"/over-h2" in ln)[0]
    assert line == b"method=POST uri_path=/over-h2 protocol=HTTP/2 host=gw.test status=200"
