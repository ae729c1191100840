"""CLI and process lifecycle: check (positions of errors), version, help,
proxy mode, SIGHUP reload, SIGTERM/SIGINT drain, ${ENV} interpolation."""

import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import BIN, free_port, sanitizer_env, simple_config, SANITIZER_MARKERS
from upstreams import Client, build_request, make_response, request


def run_cli(*args, timeout=20, env=None):
    res = subprocess.run([BIN] + list(args), capture_output=True, text=True, timeout=timeout,
                         env=sanitizer_env(env))
    for marker in SANITIZER_MARKERS:
        assert marker not in res.stderr, res.stderr
    return res


def write(tmp_path, text, name="c.yaml"):
    f = tmp_path / name
    f.write_text(text)
    return str(f)


VALID = """\
workers: 1
listen: ["127.0.0.1:{port}"]
upstreams:
  users:
    targets: ["127.0.0.1:9001", {{address: "127.0.0.1:9002", weight: 3}}]
    keepalive: 64
    preserve_host: true
plugins:
  - request_id: {{}}
  - headers: {{request: {{set: {{X-A: "1"}}, add: {{}}, remove: [X-Secret]}}, response: {{set: {{X-Gateway: portico}}}}}}
routes:
  - name: users
    match: {{host: api.example.com, path: "/users/{{id}}", methods: [GET]}}
    upstream: users
    rewrite: "/v2/users/{{id}}"
    max_body_size: 10m
  - name: local
    match: {{path_prefix: /static, headers: {{X-V: "2", X-P: ~}}, query: {{debug: "1"}}}}
    plugins:
      - direct_response: {{status: 200, headers: {{Content-Type: application/json}}, body: '{{"ok":true}}'}}
      - delay: {{duration: 200ms}}
  - name: svc
    match: {{hosts: [a.example.com, "*.b.example.com"], path_prefix: /svc}}
    upstream: users
    strip_prefix: true
  - name: re
    match: {{path_regex: "^/r/[0-9]+$"}}
    upstream: users
limits: {{max_request_line: 8k, max_header_size: 32k, max_headers: 100, max_body_size: 1g}}
timeouts: {{header: 10s, body: 30s, idle: 60s, upstream_connect: 5s, upstream_read: 60s, upstream_write: 60s, shutdown: 30s}}
access_log: {{enabled: true, path: stdout}}
"""


def test_check_valid_config(tmp_path):
    path = write(tmp_path, VALID.format(port=free_port()))
    res = run_cli("check", "-c", path)
    assert res.returncode == 0, res.stderr


def test_check_unknown_key_position(tmp_path):
    text = ("workers: 1\n"
            "listen: [\"127.0.0.1:%d\"]\n"
            "routes:\n"
            "  - name: r\n"
            "    match: {path_prefix: /}\n"
            "    bogus_key: 1\n"
            "    plugins:\n"
            "      - direct_response: {status: 200}\n") % free_port()
    path = write(tmp_path, text)
    res = run_cli("check", "-c", path)
    assert res.returncode == 1
    assert re.search(r"^%s:6:5: .*bogus_key" % re.escape(path), res.stderr, re.M), res.stderr


def test_check_bad_value_position(tmp_path):
    text = ("listen: [\"127.0.0.1:%d\"]\n"
            "timeouts:\n"
            "  header: 10parsecs\n") % free_port()
    path = write(tmp_path, text)
    res = run_cli("check", "-c", path)
    assert res.returncode == 1
    assert re.search(r"^%s:3:11: " % re.escape(path), res.stderr, re.M), res.stderr


def test_check_unknown_upstream_reference(tmp_path):
    text = ("listen: [\"127.0.0.1:%d\"]\n"
            "upstreams:\n"
            "  real: {targets: [\"127.0.0.1:1\"]}\n"
            "routes:\n"
            "  - match: {path_prefix: /}\n"
            "    upstream: nope\n") % free_port()
    path = write(tmp_path, text)
    res = run_cli("check", "-c", path)
    assert res.returncode == 1
    assert re.search(r"^%s:6:15: .*nope" % re.escape(path), res.stderr, re.M), res.stderr


def test_check_reports_every_error(tmp_path):
    text = ("listen: [\"127.0.0.1:%d\"]\n"
            "workerz: 1\n"
            "limits: {max_headers: lots}\n") % free_port()
    path = write(tmp_path, text)
    res = run_cli("check", "-c", path)
    assert res.returncode == 1
    assert re.search(r"^%s:2:1: .*workerz" % re.escape(path), res.stderr, re.M), res.stderr
    assert re.search(r"^%s:3:\d+: " % re.escape(path), res.stderr, re.M), res.stderr


def test_check_yaml_syntax_error(tmp_path):
    path = write(tmp_path, "listen: [\"127.0.0.1:1\"\nroutes: {\n")
    res = run_cli("check", "-c", path)
    assert res.returncode == 1
    assert re.search(r"^%s:\d+:\d+: " % re.escape(path), res.stderr, re.M), res.stderr


def test_check_bad_regex(tmp_path):
    text = ("listen: [\"127.0.0.1:%d\"]\n"
            "upstreams: {u: {targets: [\"127.0.0.1:1\"]}}\n"
            "routes:\n"
            "  - match: {path_regex: \"/(unclosed\"}\n"
            "    upstream: u\n") % free_port()
    path = write(tmp_path, text)
    res = run_cli("check", "-c", path)
    assert res.returncode == 1
    assert re.search(r"^%s:4:\d+: " % re.escape(path), res.stderr, re.M), res.stderr


def test_check_rewrite_unknown_param(tmp_path):
    text = ("listen: [\"127.0.0.1:%d\"]\n"
            "upstreams: {u: {targets: [\"127.0.0.1:1\"]}}\n"
            "routes:\n"
            "  - match: {path: \"/a/{id}\"}\n"
            "    upstream: u\n"
            "    rewrite: \"/b/{nope}\"\n") % free_port()
    path = write(tmp_path, text)
    res = run_cli("check", "-c", path)
    assert res.returncode == 1
    assert re.search(r"^%s:6:14: .*nope" % re.escape(path), res.stderr, re.M), res.stderr


def test_check_missing_file():
    res = run_cli("check", "-c", "/nonexistent/portico.yaml")
    assert res.returncode == 1
    assert "/nonexistent/portico.yaml" in res.stderr


def test_check_unset_env_var(tmp_path):
    path = write(tmp_path, "listen: [\"127.0.0.1:${PORTICO_TEST_SURELY_UNSET}\"]\n")
    res = run_cli("check", "-c", path)
    assert res.returncode == 1
    assert re.search(r"^%s:1:\d+: .*PORTICO_TEST_SURELY_UNSET" % re.escape(path), res.stderr, re.M), res.stderr


def test_run_invalid_config_exits_1(tmp_path):
    path = write(tmp_path, "listen: [\"127.0.0.1:%d\"]\nbogus: 1\n" % free_port())
    res = run_cli("run", "-c", path)
    assert res.returncode == 1
    assert re.search(r"^%s:2:1: " % re.escape(path), res.stderr, re.M), res.stderr


def test_version():
    res = run_cli("version")
    assert res.returncode == 0
    assert re.match(r"^portico \S+", res.stdout), res.stdout


def test_help():
    res = run_cli("--help")
    assert res.returncode == 0
    out = res.stdout + res.stderr
    assert "usage" in out.lower()
    for word in ("run", "check", "proxy", "version"):
        assert word in out


def test_unknown_subcommand_fails():
    res = run_cli("frobnicate")
    assert res.returncode != 0
    assert res.stderr.strip()


def test_dash_c_without_subcommand_runs(portico, echo):
    p = portico(simple_config(echo.addr), args=["-c", "@CONFIG@"])
    assert request(p.port, "GET", "/dash-c").status == 200


def test_proxy_mode_round_robin(portico, upstream):
    a = upstream(name="a")
    b = upstream(name="b")
    port = free_port()
    p = portico("", port=port, args=["proxy", "--listen", "127.0.0.1:%d" % port,
                                     "--to", "http://%s,http://%s" % (a.addr, b.addr)])
    servers = []
    with Client(p.port) as c:  # one connection: one worker, one balancer state
        for i in range(10):
            r = c.request("GET", "/rr/%d?q=1" % i)
            assert r.status == 200
            servers.append(r.json()["server"])
    assert servers.count("a") == 5 and servers.count("b") == 5, servers
    assert a.last().target.startswith("/rr/") and a.last().target.endswith("?q=1")


def test_env_interpolation(portico, echo):
    text = ("upstreams:\n"
            "  up: {targets: [\"127.0.0.1:${UPSTREAM_PORT}\"]}\n"
            "routes:\n"
            "  - name: main\n"
            "    match: {path_prefix: /}\n"
            "    upstream: up\n"
            "    plugins:\n"
            "      - headers: {request: {set: {X-Literal: \"$${NOT_EXPANDED}\"}}}\n"
            "timeouts: {shutdown: 5s}\n")
    p = portico(text, env={"UPSTREAM_PORT": str(echo.port)})
    r = request(p.port, "GET", "/env")
    assert r.status == 200 and r.json()["path"] == "/env"
    assert echo.last().header("X-Literal") == "${NOT_EXPANDED}"


# ---------------------------------------------------------------------------
# signals
# ---------------------------------------------------------------------------

def poll(pred, timeout=5, interval=0.05, msg="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("timed out waiting for %s" % msg)


def routes_cfg(echo, *paths):
    return {"upstreams": {"up": {"targets": [echo.addr]}},
            "routes": [{"name": "r%d" % i, "match": {"path_prefix": pth}, "upstream": "up"}
                       for i, pth in enumerate(paths)]}


def test_sighup_reload_adds_route_and_survives_invalid(portico, echo):
    p = portico(routes_cfg(echo, "/old"))
    assert request(p.port, "GET", "/old").status == 200
    assert request(p.port, "GET", "/new").status == 404
    p.write_config(routes_cfg(echo, "/old", "/new"))
    p.signal(signal.SIGHUP)
    poll(lambda: request(p.port, "GET", "/new").status == 200, msg="the new route after SIGHUP")
    # An invalid file is refused: logged, old config keeps serving.
    err_before = len(p.stderr())
    with open(p.config_path, "w") as f:
        f.write("listen: [\"127.0.0.1:%d\"]\nroutes: [{match: {path_prefix: /x}, upstream: missing}]\nbogus: 1\n"
                % p.port)
    p.signal(signal.SIGHUP)
    poll(lambda: len(p.stderr()) > err_before, msg="an error on stderr after the invalid reload")
    assert "portico.yaml" in p.stderr()[err_before:]
    assert p.alive()
    assert request(p.port, "GET", "/new").status == 200
    assert request(p.port, "GET", "/old").status == 200
    # and a later valid reload still works
    p.write_config(routes_cfg(echo, "/third"))
    p.signal(signal.SIGHUP)
    poll(lambda: request(p.port, "GET", "/old").status == 404, msg="the third config")
    assert request(p.port, "GET", "/third").status == 200


def test_sighup_inflight_request_finishes_on_old_config(portico, upstream):
    slow = upstream(lambda req: [1.0, make_response(200, "OK", [], b"slow-done")])
    p = portico(routes_cfg(slow, "/slow"))
    c = Client(p.port, timeout=15)
    c.send(build_request("GET", "/slow"))
    slow.wait_requests(1)
    p.write_config({"routes": [{"name": "gone", "match": {"path_prefix": "/"},
                                "plugins": [{"direct_response": {"status": 410, "body": "gone"}}]}]})
    p.signal(signal.SIGHUP)
    poll(lambda: request(p.port, "GET", "/slow").status == 410, msg="the new config")
    r = c.read_response()
    assert r.status == 200 and r.body == b"slow-done"
    c.close()


def test_sigterm_drains_inflight_and_exits_0(portico, upstream):
    slow = upstream(lambda req: [1.5, make_response(200, "OK", [], b"drained")])
    p = portico(routes_cfg(slow, "/"))
    result = {}

    def client():
        try:
            result["resp"] = request(p.port, "GET", "/slow", timeout=20)
        except Exception as e:  # reported below
            result["error"] = e

    t = threading.Thread(target=client)
    t.start()
    slow.wait_requests(1)
    p.signal(signal.SIGTERM)

    def refused():
        try:
            socket.create_connection(("127.0.0.1", p.port), timeout=0.5).close()
            return False
        except OSError:
            return True
    poll(refused, timeout=3, interval=0.02, msg="new connections to be refused after SIGTERM")
    assert "resp" not in result, "in-flight request finished before the listener closed"
    t.join(20)
    assert "error" not in result, result.get("error")
    assert result["resp"].status == 200 and result["resp"].body == b"drained"
    rc = p.wait_exit(15)
    assert rc == 0, "exit code %r\n%s" % (rc, p.logs())


def test_sigterm_closes_idle_keepalive_connections(portico, echo):
    p = portico(routes_cfg(echo, "/"))
    c = Client(p.port)
    assert c.request("GET", "/").status == 200
    start = time.monotonic()
    p.signal(signal.SIGTERM)
    assert c.wait_closed(5), "idle keep-alive connection not closed on SIGTERM"
    rc = p.wait_exit(10)
    assert rc == 0
    assert time.monotonic() - start < 5
    c.close()


def test_sigint_graceful_exit_0(portico, echo):
    p = portico(routes_cfg(echo, "/"))
    assert request(p.port, "GET", "/").status == 200
    p.signal(signal.SIGINT)
    assert p.wait_exit(10) == 0


def test_shutdown_timeout_bounds_drain(portico, upstream):
    hang = upstream(lambda req: [30, make_response(200, "OK", [], b"late")])
    cfg = routes_cfg(hang, "/")
    cfg["timeouts"] = {"shutdown": "1s"}
    p = portico(cfg)
    c = Client(p.port, timeout=15)
    c.send(build_request("GET", "/"))
    hang.wait_requests(1)
    start = time.monotonic()
    p.signal(signal.SIGTERM)
    rc = p.wait_exit(10)
    assert rc is not None, "did not exit within 10 s with shutdown: 1s"
    assert time.monotonic() - start < 8
    c.close()


def test_sighup_reload_reaches_every_worker(portico, echo):
    cfg = routes_cfg(echo, "/old")
    cfg["workers"] = 4
    p = portico(cfg)
    new = routes_cfg(echo, "/new")
    new["workers"] = 4
    p.write_config(new)
    p.signal(signal.SIGHUP)
    poll(lambda: request(p.port, "GET", "/new").status == 200, msg="the new route after SIGHUP")
    time.sleep(0.2)
    # fresh connections are spread over all workers (SO_REUSEPORT): every one must see the new config
    statuses = [request(p.port, "GET", "/new").status for _ in range(40)]
    assert statuses == [200] * 40, statuses
    assert all(request(p.port, "GET", "/old").status == 404 for _ in range(20))


def test_sighup_reload_with_changed_listeners_is_refused(portico, echo):
    # listener sockets and open connections are tied to listener positions:
    # another address, count or order would apply one listener's settings
    # to another's socket, so such a reload is refused as a whole
    other = free_port()
    p = portico(routes_cfg(echo, "/old"))
    for listen in (["127.0.0.1:%d" % p.port, "127.0.0.1:%d" % other],   # one more
                   ["127.0.0.1:%d" % other]):                           # another address
        err_before = len(p.stderr())
        cfg = routes_cfg(echo, "/new")
        cfg["listen"] = listen
        p.write_config(cfg)
        p.signal(signal.SIGHUP)
        poll(lambda: "reload refused" in p.stderr()[err_before:], msg="the refusal on stderr")
        assert "'listen' changed" in p.stderr()[err_before:]
        assert request(p.port, "GET", "/old").status == 200   # the running config still serves
        assert request(p.port, "GET", "/new").status == 404
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", other), timeout=2).close()
    # the same listeners again: accepted
    p.write_config(routes_cfg(echo, "/new"))
    p.signal(signal.SIGHUP)
    poll(lambda: request(p.port, "GET", "/new").status == 200, msg="the valid reload")


# ------------------------------------------------------------------ route-test

ROUTE_TEST_CFG = """listen: [{address: 127.0.0.1:1}]
upstreams:
  users: {targets: [127.0.0.1:9001]}
  admin: {targets: [127.0.0.1:9002]}
plugins:
  - request_id: {}
routes:
  - name: users
    match: {path: "/users/{id}", methods: [GET]}
    upstream: users
    rewrite: /v2/users/{id}
    plugins:
      - rate_limit: {key: client_address, limits: [{requests: 10, per: 1s}]}
      - headers: {request: {set: {X-A: b}}}
  - name: users-v1
    match: {path: "/users/{id}", headers: {Accept-Version: "1"}}
    upstream: users
  - name: admin
    match: {path_prefix: /admin, hosts: [admin.example.com]}
    upstream: admin
    strip_prefix: true
  - name: post-only
    match: {path_prefix: /users, methods: [POST]}
    upstream: users
  - name: health
    match: {path: /health}
    plugins: [{direct_response: {status: 200}}]
"""


def route_test(tmp_path, *args):
    cfg = tmp_path / "rt.yaml"
    cfg.write_text(ROUTE_TEST_CFG)
    return run_cli("route-test", "-c", str(cfg), *args)


def reasons(out):
    """{route name: reason} from the 'other routes:' part."""
    part = out.split("other routes:\n", 1)[1]
    res = {}
    for line in part.splitlines():
        m = re.match(r"  (\S+)\s+line \d+\s+(.*)$", line)
        assert m, line
        res[m.group(1)] = m.group(2)
    return res


def test_route_test_explains_match_plugins_and_target(tmp_path):
    r = route_test(tmp_path, "GET", "http://API.example.com:8080/users/42?x=1&y")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert 'request: GET /users/42?x=1&y (host "api.example.com")' in out
    assert "route: users (line 8): exact /users/{id}" in out
    assert "  param id = 42" in out
    plugins = re.findall(r"^  \d+\. (\S+)\s+(global|route)", out, re.M)
    assert plugins == [("request_id", "global"), ("rate_limit", "route"), ("headers", "route")]
    assert "upstream: users, target sent: /v2/users/42?x=1&y" in out
    why = reasons(out)
    assert why["users-v1"] == "needs header Accept-Version=1"
    assert why["admin"].startswith("path /users/42 does not match prefix /admin")
    assert why["post-only"] == "method not allowed (allows POST)"
    assert set(why) == {"users-v1", "admin", "post-only", "health"}


def test_route_test_host_header_strip_prefix_and_precedence(tmp_path):
    r = route_test(tmp_path, "GET", "/admin/x//y", "-H", "Host: Admin.Example.com:443")
    assert r.returncode == 0, r.stderr
    assert "path as routed: /admin/x/y" in r.stdout
    assert "route: admin" in r.stdout and "target sent: /x/y" in r.stdout
    r = route_test(tmp_path, "GET", "/users/7", "-H", "Accept-Version: 1")
    why = reasons(r.stdout)
    assert "route: users " in r.stdout
    assert why["users-v1"].startswith("matches too, but route 'users' takes precedence")


def test_route_test_errors_are_explained(tmp_path):
    r = route_test(tmp_path, "DELETE", "/users/42")
    assert r.returncode == 1
    assert "answer: 405" in r.stdout and "Allow: GET,HEAD" in r.stdout
    r = route_test(tmp_path, "GET", "/admin/panel")
    assert r.returncode == 1 and "answer: 404 (no route)" in r.stdout
    assert reasons(r.stdout)["admin"] == 'host "" is not admin.example.com'
    r = route_test(tmp_path, "GET", "/users/a%2Fb")
    assert r.returncode == 1 and "answer: 400" in r.stdout
    r = run_cli("route-test", "-c", "/nonexistent.yaml", "GET", "/")
    assert r.returncode == 2 and "nonexistent.yaml" in r.stderr
    r = route_test(tmp_path, "GET")
    assert r.returncode == 2 and "usage: portico route-test" in r.stderr
    r = route_test(tmp_path, "GET", "ftp://x/y")
    assert r.returncode == 2
