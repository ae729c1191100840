"""Bodies stream through Portico with backpressure: a 1 GiB upload and a
1 GiB download keep Portico's peak RSS (VmHWM) under 64 MiB.

The upstream here is a raw-socket server that counts (and hashes) what it
receives and generates what it sends, so the test checks content too, not
just sizes. Runs against the release or ASan binary; ASan's shadow memory
inflates RSS, so the bound is checked only for a non-sanitized binary and
the byte/hash checks always run.
"""
import hashlib
import os
import socket

from conftest import simple_config
from upstreams import RawServer, recv_head

GIB = 1 << 30
BLOCK = 1 << 20
RSS_LIMIT_KIB = 64 * 1024


def pattern_block(i):
    # A cheap, position-dependent block so reordering or loss changes the hash.
    return (i.to_bytes(8, "big") * (BLOCK // 8))


class StreamUpstream(RawServer):
    """POST: reads the body (Content-Length or chunked), answers its size and
    sha256. GET: answers GIB bytes of pattern_block()s with Content-Length.
    Exceptions are recorded in .errors (asserted by the test)."""

    def __init__(self):
        super().__init__(timeout=None, backlog=8)

    def handle(self, c, conn_no):
        f = c.makefile("rb")
        line = f.readline()
        hdrs = {}
        while True:
            h = f.readline()
            if h in (b"\r\n", b""):
                break
            k, v = h.split(b":", 1)
            hdrs[k.strip().lower()] = v.strip()
        digest = hashlib.sha256()
        total = 0
        if b"content-length" in hdrs:
            n = int(hdrs[b"content-length"])
            while total < n:
                d = f.read(min(BLOCK, n - total))
                if not d:
                    break
                digest.update(d)
                total += len(d)
        elif hdrs.get(b"transfer-encoding") == b"chunked":
            while True:
                size = int(f.readline().split(b";")[0], 16)
                if size == 0:
                    f.readline()
                    break
                d = f.read(size)
                digest.update(d)
                total += len(d)
                f.readline()
        if line.startswith(b"GET"):
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % GIB)
            for i in range(GIB // BLOCK):
                c.sendall(pattern_block(i))
        else:
            body = ("%d %s" % (total, digest.hexdigest())).encode()
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def vm_hwm_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def is_sanitized(binary):
    # ASan builds reference the runtime's init symbol (libasan is dynamic).
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


def read_head(s):
    head, rest = recv_head(s)
    return head.decode("latin-1"), rest


def test_one_gib_upload_and_download_bounded_rss(portico):
    up = StreamUpstream()
    try:
        p = portico(simple_config(up.addr))
        # Upload 1 GiB, chunked, from a raw socket.
        s = socket.create_connection(("127.0.0.1", p.port), timeout=60)
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        expect = hashlib.sha256()
        for i in range(GIB // BLOCK):
            blk = pattern_block(i)
            expect.update(blk)
            s.sendall(b"%x\r\n" % len(blk) + blk + b"\r\n")
        s.sendall(b"0\r\n\r\n")
        head, rest = read_head(s)
        assert head.startswith("HTTP/1.1 200"), head
        body = rest
        while len(body) < len("%d " % GIB) + 64:
            d = s.recv(4096)
            if not d:
                break
            body += d
        assert body.decode() == "%d %s" % (GIB, expect.hexdigest())
        s.close()

        # Download 1 GiB.
        s = socket.create_connection(("127.0.0.1", p.port), timeout=60)
        s.sendall(b"GET /download HTTP/1.1\r\nHost: t\r\n\r\n")
        head, rest = read_head(s)
        assert "Content-Length: %d" % GIB in head, head
        got = hashlib.sha256()
        want = hashlib.sha256()
        for i in range(GIB // BLOCK):
            want.update(pattern_block(i))
        total = len(rest)
        got.update(rest)
        while total < GIB:
            d = s.recv(1 << 20)
            assert d, "download truncated at %d bytes" % total
            got.update(d)
            total += len(d)
        assert total == GIB
        assert got.hexdigest() == want.hexdigest()
        s.close()

        assert not up.errors, up.errors
        hwm = vm_hwm_kib(p.proc.pid)
        if not is_sanitized(p.proc.args[0]):
            assert hwm < RSS_LIMIT_KIB, "peak RSS %d KiB" % hwm
    finally:
        up.close()
