"""HTTP/1.1 client cases: generation (pure data, from a seeded Random) and
the runner that plays one case against the gateway.

A case is
    {"kind": "h1", "scripts": {token: [proto, script]}, "send": [[bytes, delay_s], ...],
     "end": "read" | "shut_wr" | "close" | "rst", "linger": s, "rst_after": None | n}
`send` is the whole client byte stream (one request or several pipelined
ones, possibly mutated or cut short) split at random boundaries; `end` is
what the client does once it has sent it; it then reads until the gateway
closes or stays silent for `linger` seconds (or resets after `rst_after`
response bytes).
"""

import socket
import struct
import time

from configs import ROUTES
from mutate import NUMBERS, mutate, rand_token, split_plan
from upstream_h1 import gen_h1_script, gen_trailers
from upstream_h2 import gen_h2_script

ROUTE_WEIGHTS = ["h1"] * 5 + ["stack"] * 3 + ["h2"] * 4 + ["echo", "direct", "direct", "mix", "get", "plain"]
METHODS = ["GET"] * 4 + ["POST"] * 3 + ["HEAD"] * 2 + ["PUT", "DELETE", "OPTIONS", "PATCH"]
ODD_METHODS = ["get", "CONNECT", "TRACE", "G\0T", "M" * 300, "PRI", "BREW", ""]


def gen_target(rng, prefix, token, bad=False):
    """Path with the case token; with `bad`, an odd or invalid form."""
    segs = [rand_token(rng, hi=8) for _ in range(rng.randint(0, 3))]
    t = "%s/%s/%s" % (prefix, token, "/".join(segs))
    if rng.random() < 0.3:
        t += "?" + "&".join("%s=%s" % (rand_token(rng, hi=5), rand_token(rng, hi=9)) for _ in range(rng.randint(1, 4)))
    if rng.random() < 0.05:                      # valid, but normalised by the gateway
        t = t.replace("/", "/./", 1) + "/x/../" + rand_token(rng)
    if not bad:
        return t
    return rng.choice(["http://gw.test" + t, t + "/%2e%2e/%2F%00%" + rand_token(rng, "0123456789abcdefg", 1, 2),
                       t + "/" + "a" * rng.choice([5000, 9000]), "*", "", "//", "gw.test:80", t + "#frag",
                       t.replace("/", "\\", 2), t + " " + t])


def gen_fields(rng):
    """Valid header fields: a handful, or 70..90 X-H<i> fields (the arena
    then grows past its first block)."""
    fields = []
    if rng.random() < 0.3:
        for i in range(rng.randint(70, 90)):
            fields.append(("X-H%d" % i, rand_token(rng, lo=1, hi=40)))
    for _ in range(rng.choice([0, 1, 2, 5])):
        fields.append(rng.choice([("Accept", "*/*"), ("User-Agent", "fuzz/1"), ("X-Request-Id", rand_token(rng)),
                                  ("X-Forwarded-For", "10.0.0.%d" % rng.randrange(256)), ("Cookie", "a=b"),
                                  ("Connection", rng.choice(["close", "keep-alive"])), ("TE", "trailers"),
                                  ("Via", "1.0 x"), ("Content-Type", "application/grpc"), ("grpc-timeout", "1m")]))
    return fields


def chunked(rng, body, bad=False):
    """Chunked coding of `body` (random chunk sizes, extensions, trailers);
    with `bad`, one invalid chunk-size line."""
    out = bytearray()
    i = 0
    spoil = rng.randrange(max(1, len(body) // 100 + 1)) if bad else -1
    k_no = 0
    while i < len(body):
        k = rng.randint(1, max(1, min(len(body) - i, rng.choice([1, 7, 1000, 70000]))))
        size = b"%x" % k
        if k_no == spoil:
            size = rng.choice([b"zz", b"-1", b"fffffffffffffffff", b"", b"5 ;x", b"0x5", b"%x" % (k + 1)])
        elif rng.random() < 0.05:
            size += b";ext=" + rand_token(rng).encode()
        out += size + b"\r\n" + body[i:i + k] + b"\r\n"
        i += k
        k_no += 1
    trailers = gen_trailers(rng, bad and spoil >= k_no) if rng.random() < 0.3 else b""
    return bytes(out) + b"0\r\n" + trailers + b"\r\n"


def gen_request_body(rng, method, bad=None):
    """(framing header lines, body bytes on the wire); `bad` names a framing
    error to make (None: valid)."""
    if method in ("GET", "HEAD") and rng.random() < 0.85 and bad is None:
        return [], b""
    n = rng.choice([0, 1, 10, 100, 1000, rng.randint(0, 20000), rng.randint(0, 100000)])
    body = (rand_token(rng).encode() * (n // 2 + 1))[:n]
    if bad == "chunks":
        return ["Transfer-Encoding: chunked"], chunked(rng, body, True)
    if bad == "te":
        return ["Transfer-Encoding: " + rng.choice(["gzip, chunked", "chunked, chunked", "xchunked", "gzip"])], \
            chunked(rng, body)
    if bad == "cl":
        lines = ["Content-Length: " + rng.choice(NUMBERS + ["%d" % (n + 1), "%d, %d" % (n, n + 1)])]
        return lines + rng.choice([[], ["Transfer-Encoding: chunked"], ["Content-Length: %d" % (n + 1)]]), body
    if rng.random() < 0.6:
        return ["Content-Length: %d" % n], body
    return ["Transfer-Encoding: " + rng.choice(["chunked"] * 5 + ["Chunked"])], chunked(rng, body)


BAD_REQUEST_KINDS = ["method", "version", "target", "host", "cl", "te", "chunks", "bytes", "bytes"]


def gen_request(rng, token, route=None):
    """One raw request; returns (bytes, route key, method). One request in
    four carries exactly one defect (BAD_REQUEST_KINDS), the rest are valid."""
    bad = rng.choice(BAD_REQUEST_KINDS) if rng.random() < 0.25 else None
    route = route or rng.choice(ROUTE_WEIGHTS)
    prefix, _ = ROUTES[route]
    method = rng.choice(METHODS) if bad != "method" else rng.choice(ODD_METHODS)
    version = "HTTP/1.1" if rng.random() < 0.95 else "HTTP/1.0"
    if bad == "version":
        version = rng.choice(["HTTP/1.2", "HTTP/2.0", "HTTP/1.1 x", "HTTP/1", "http/1.1", "HTTP/11"])
    lines = ["%s %s %s" % (method, gen_target(rng, prefix, token, bad == "target"), version)]
    if bad != "host":
        lines.append("Host: gw.test")
    else:
        lines += rng.choice([[], ["Host: a", "Host: b"], ["Host: a b"], ["Host: "], ["Host: [::1"]])
    for n, v in gen_fields(rng):
        lines.append("%s: %s" % (n, v))
    framing, body = gen_request_body(rng, method, bad if bad in ("cl", "te", "chunks") else None)
    lines += framing
    if body and rng.random() < 0.1:
        lines.append("Expect: 100-continue")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if bad == "bytes":
        head = mutate(rng, head)
    return head + body, route, method


def gen_h1_case(rng, idx):
    """A connection's worth of HTTP/1.1 traffic and its upstream scripts."""
    scripts = {}
    data = b""
    for j in range(1 if rng.random() < 0.75 else rng.randint(2, 4)):
        token = "t%dx%d" % (idx, j)
        raw, route, method = gen_request(rng, token)
        kind = ROUTES[route][1]
        if kind == "h1":
            scripts[token] = ["h1", gen_h1_script(rng, method)]
        elif kind == "h2":
            scripts[token] = ["h2", gen_h2_script(rng, method)]
        data += raw
    if rng.random() < 0.1 and len(data) > 1:          # abort mid-way
        data = data[:rng.randrange(1, len(data))]
    end = rng.choices(["read", "shut_wr", "close", "rst"], [80, 8, 6, 6])[0]
    return {"kind": "h1", "scripts": scripts, "send": [list(p) for p in split_plan(rng, data)], "end": end,
            "linger": rng.choice([0.02, 0.05, 0.1, 0.3, 0.6]),
            "rst_after": None if rng.random() < 0.9 else rng.randint(1, 400)}


def rst_close(s):
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    s.close()


def read_until_quiet(s, linger, cap, rst_after=None, on_data=None):
    """Reads until EOF, `linger` seconds of silence or `cap` seconds; with
    `rst_after`, resets the connection once that many bytes arrived.
    Returns the number of bytes received."""
    got = 0
    deadline = time.monotonic() + cap
    s.settimeout(linger)
    while time.monotonic() < deadline:
        try:
            d = s.recv(65536)
        except socket.timeout:
            break
        except OSError:
            break
        if not d:
            break
        got += len(d)
        if on_data:
            on_data(d)
        if rst_after is not None and got >= rst_after:
            break
    return got


def run_h1_case(port, case):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for data, delay in case["send"]:
            try:
                s.sendall(data)
            except OSError:
                break
            if delay:
                time.sleep(delay)
        end = case["end"]
        if end == "rst":
            rst_close(s)
            return 0
        if end == "close":
            s.close()
            return 0
        if end == "shut_wr":
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        got = read_until_quiet(s, case["linger"], 8, case["rst_after"])
        if case["rst_after"] is not None:
            rst_close(s)
        return got
    finally:
        s.close()
