"""Pause/resume in every plugin phase, exercised through the built-in `delay`
plugin's `phase` option: request headers, request body, response headers and
response body. Each test checks that the request still arrives intact, the
response is complete and correct, and that the pause really happened (the
elapsed time is at least the delay; only a generous upper bound guards
against hangs)."""
import hashlib
import os
import socket
import time

import pytest

from conftest import simple_config
from upstreams import CLOSE, Client, build_request, make_response, request

DELAY_MS = 300


def delayed(echo, phase, **extra):
    cfg = simple_config(echo.addr)
    cfg["routes"][0]["plugins"] = [{"delay": dict({"duration": "%dms" % DELAY_MS, "phase": phase}, **extra)}]
    return cfg


@pytest.mark.parametrize("phase", ["request", "request_body", "response", "response_body"])
def test_delay_each_phase_keeps_exchange_intact(portico, echo, phase):
    p = portico(delayed(echo, phase))
    body = os.urandom(200000)
    t0 = time.monotonic()
    r = request(p.port, "POST", "/upload", body=body, timeout=15)
    elapsed = time.monotonic() - t0
    assert r.status == 200
    doc = r.json()
    assert doc["body_len"] == len(body)
    assert doc["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert elapsed >= DELAY_MS / 1000.0, "no pause in phase %s" % phase
    assert elapsed < 10


def test_request_body_pause_with_chunked_body(portico, echo):
    p = portico(delayed(echo, "request_body"))
    body = b"".join(os.urandom(1000) for _ in range(50))
    with Client(p.port, timeout=15) as c:
        chunks = b"".join(b"%x\r\n%s\r\n" % (1000, body[i:i + 1000]) for i in range(0, len(body), 1000))
        c.send(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
        # the connection stays usable afterwards
        r = c.request("GET", "/after")
        assert r.status == 200 and r.json()["path"] == "/after"


def test_response_body_pause_large_download(portico, upstream):
    payload = os.urandom(3 << 20)
    up = upstream(lambda req: make_response(200, "OK", [("Content-Type", "application/octet-stream")], payload))
    cfg = simple_config(up.addr)
    cfg["routes"][0]["plugins"] = [{"delay": {"duration": "%dms" % DELAY_MS, "phase": "response_body"}}]
    p = portico(cfg)
    t0 = time.monotonic()
    r = request(p.port, "GET", "/big", timeout=20)
    assert time.monotonic() - t0 >= DELAY_MS / 1000.0
    assert r.status == 200
    assert hashlib.sha256(r.body).hexdigest() == hashlib.sha256(payload).hexdigest()


def test_early_upstream_answer_during_request_body_pause(portico, upstream):
    # The upstream answers as soon as it has the head, without reading the
    # body, while the first body chunk is held by the paused plugin.
    up = upstream(lambda req: make_response(413, "Payload Too Large", [("Content-Type", "text/plain")], b"no"))
    cfg = simple_config(up.addr)
    cfg["routes"][0]["plugins"] = [{"delay": {"duration": "%dms" % DELAY_MS, "phase": "request_body"}}]
    p = portico(cfg)
    r = request(p.port, "POST", "/x", body=b"y" * 5000, timeout=15)
    assert r.status == 413 and r.body == b"no"
    # the gateway keeps serving
    assert request(p.port, "POST", "/x", body=b"z").status == 413


def test_client_gone_during_request_body_pause(portico, echo):
    p = portico(delayed(echo, "request_body"))
    s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    s.sendall(b"POST /gone HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" + b"a" * 50000)
    time.sleep(0.05)
    s.close()  # while the delay holds the first chunk
    time.sleep(DELAY_MS / 1000.0 + 0.2)  # let the timer fire on the dead request
    r = request(p.port, "GET", "/next")
    assert r.status == 200 and r.json()["path"] == "/next"
    assert all(q.path != "/gone" or len(q.body) < 100000 for q in echo.requests)


def test_client_gone_during_response_body_pause(portico, upstream):
    payload = os.urandom(1 << 20)
    up = upstream(lambda req: make_response(200, "OK", [], payload))
    cfg = simple_config(up.addr)
    cfg["routes"][0]["plugins"] = [{"delay": {"duration": "%dms" % DELAY_MS, "phase": "response_body"}}]
    p = portico(cfg)
    with Client(p.port, timeout=5) as c:
        c.send(build_request("GET", "/dl"))
        time.sleep(0.1)
    time.sleep(DELAY_MS / 1000.0 + 0.2)
    r = request(p.port, "GET", "/again", timeout=15)
    assert r.status == 200 and len(r.body) == len(payload)


def test_delay_phase_is_validated(tmp_path):
    import subprocess
    from conftest import BIN
    path = tmp_path / "c.yaml"
    path.write_text("listen: [\"127.0.0.1:1\"]\n"
                    "routes:\n"
                    "  - plugins:\n"
                    "      - delay: {duration: 1s, phase: sometimes}\n")
    res = subprocess.run([BIN, "check", "-c", str(path)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 1
    assert "%s:4:" % path in res.stderr and "phase" in res.stderr, res.stderr


def test_response_body_pause_close_delimited_and_chunked(portico, upstream):
    # A close-delimited body whose EOF arrives while the first chunk is held,
    # and a chunked body whose last chunk arrives while held: both complete.
    payload = os.urandom(100000)
    chunked = b"".join(b"%x\r\n%s\r\n" % (10000, payload[i:i + 10000]) for i in range(0, len(payload), 10000))

    def handler(req):
        if req.path == "/close":
            return [b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + payload, CLOSE]
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n"

    up = upstream(handler)
    cfg = simple_config(up.addr)
    cfg["routes"][0]["plugins"] = [{"delay": {"duration": "%dms" % DELAY_MS, "phase": "response_body"}}]
    p = portico(cfg)
    for path in ("/close", "/chunked"):
        r = request(p.port, "GET", path, timeout=15)
        assert r.status == 200, path
        assert r.body == payload, path
