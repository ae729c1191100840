"""splice(2) for bulk HTTP/1 bodies (limits.splice, docs/performance.md
"splice(2) for bulk bodies"): large Content-Length bodies between plain
sockets move through a pipe instead of user space — byte-exact, counted
like copied bytes, never for bodies a plugin sees or TLS/chunked ones, and
every failure of a peer mid-body ends the same way as on the copy path."""

import hashlib
import os
import socket
import threading
import time

from conftest import simple_config
from test_admin_metrics import admin_cfg, scrape, value, poll
from upstreams import Client, CLOSE, read_response, request

BIG = 8 << 20


def spliced(aport, direction):
    return value(scrape(aport), "portico_spliced_bytes_total", direction=direction)


def big_handler(body):
    def handler(req):
        if req.method == "POST":
            digest = hashlib.sha256(req.body).hexdigest().encode()
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(digest), digest)
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    return handler


def start(portico, upstream, body, **top):
    up = upstream(big_handler(body))
    cfg, aport = admin_cfg(simple_config(up.addr, workers=1, **top))
    return portico(cfg), aport, up


def test_large_download_and_upload_are_spliced(portico, upstream):
    body = os.urandom(BIG)
    p, aport, up = start(portico, upstream, body)
    r = request(p.port, "GET", "/big", timeout=30)
    assert r.status == 200 and hashlib.sha256(r.body).digest() == hashlib.sha256(body).digest()
    n = spliced(aport, "response")
    assert BIG - (1 << 20) <= n <= BIG, n
    r = request(p.port, "POST", "/up", body=body, timeout=30)
    assert r.status == 200 and r.body.decode() == hashlib.sha256(body).hexdigest()
    n = spliced(aport, "request")
    assert BIG - (1 << 20) <= n <= BIG, n
