"""Connection limits (per listener across workers, per client address) and
the Server / Via header options."""
import socket
import time

from conftest import simple_config
from upstreams import Client, make_response, problem_check, read_response, ConnReader, request


def open_idle(port):
    # the readiness probe's connection may not be released yet: retry briefly
    deadline = time.monotonic() + 5
    while True:
        c = Client(port, timeout=5)
        r = c.request("GET", "/warm")
        if r.status == 200:
            return c
        c.close()
        assert r.status == 503 and time.monotonic() < deadline, r
        time.sleep(0.02)


def rejected(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    r = read_response(ConnReader(s))
    s.close()
    return r


def wait_until(pred, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_max_connections_per_listener(portico, echo):
    p = portico(simple_config(echo.addr, workers=2, limits={"max_connections": 2}))
    a, b = open_idle(p.port), open_idle(p.port)
    doc = problem_check(rejected(p.port), 503)
    assert "too many connections" in doc["detail"]
    a.close()
    # the slot is released when Portico sees the close
    assert wait_until(lambda: request(p.port, "GET", "/again").status == 200)
    b.close()


def test_max_connections_per_client(portico, echo):
    p = portico(simple_config(echo.addr, limits={"max_connections_per_client": 1}))
    a = open_idle(p.port)
    problem_check(rejected(p.port), 503)
    a.close()
    assert wait_until(lambda: request(p.port, "GET", "/again").status == 200)


def test_server_and_via_headers(portico, upstream):
    up = upstream(lambda req: make_response(200, "OK", [("Server", "internal-app/1.2.3")], b"ok"))
    p = portico(simple_config(up.addr, server_header="edge", via=True))
    r = request(p.port, "GET", "/x")
    assert r.header("Server") == "edge"          # the upstream's version does not leak
    assert r.header("Via") == "1.1 portico"
    assert up.requests[-1].header("Via") == "1.1 portico"
    r = request(p.port, "GET", "/%zz")            # an error Portico generates
    assert r.status == 400 and r.header("Server") == "edge"


def test_upstream_server_header_passes_by_default(portico, upstream):
    up = upstream(lambda req: make_response(200, "OK", [("Server", "app")], b"ok"))
    p = portico(simple_config(up.addr))
    r = request(p.port, "GET", "/x")
    assert r.header("Server") == "app" and r.header("Via") is None
