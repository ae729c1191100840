"""A misbehaving HTTP/1.1 upstream and the generator of its response scripts.

Each fuzz case registers a script under a token (`t<case>x<request>`) that
it puts into the request path; the upstream finds the token in the target
it receives and runs that script. A script is
    {"steps": [step, ...], "keep": bool}
with steps
    ["read_body"]         read the request body (Content-Length or chunked)
    ["send", bytes]       send bytes as they are
    ["sleep", seconds]    pause (a stall when longer than read_timeout)
    ["drain", seconds]    read and discard whatever arrives for a while
    ["close"] / ["rst"]   end the connection (FIN / RST)
and `keep` keeps the connection for the next request (only used when the
body was read and the response was well framed).

The upstream also checks every request head Portico forwards (oracle):
a request line that is not `METHOD TARGET HTTP/1.1`, a field name that is
not a token, CR/LF/NUL inside a value, several Content-Length fields,
Content-Length together with Transfer-Encoding or a coding other than
chunked is recorded in `.violations`; the fuzzer fails the batch on it.
"""

import re
import socket
import struct
import threading

from mutate import NUMBERS, flip_bytes, mutate, rand_token

TOKEN_RE = re.compile(rb"t(\d+)x(\d+)")
TCHAR = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
DEFAULT_SCRIPT = {"steps": [["read_body"], ["send", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                                   b"Connection: close\r\n\r\nok"], ["close"]], "keep": False}


def token_of(target):
    m = TOKEN_RE.search(target)
    return m.group(0).decode() if m else None


# ------------------------------------------------------------ the server

class BadH1Upstream:
    def __init__(self, stop):
        self.stop = stop                 # threading.Event shared by the run
        self.scripts = {}                # token -> script
        self.violations = []             # (description, raw head)
        self.requests = 0
        self.lock = threading.Lock()
        self.socks = set()
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(256)
        self.addr = "127.0.0.1:%d" % self.lsock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        try:
            self.lsock.close()
        except OSError:
            pass
        with self.lock:
            socks = list(self.socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _accept(self):
        self.lsock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                s, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.socks.add(s)
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        s.settimeout(20)
        buf = bytearray()
        history = []        # what this connection carried before, for the violation report
        try:
            while not self.stop.is_set():
                head = self._read_head(s, buf)
                if head is None:
                    return
                with self.lock:
                    self.requests += 1
                framing = self._check_head(head, history)
                history.append("%s [%s]" % (head.split(b"\r\n", 1)[0][:200].decode("latin-1"),
                                            "%s %d" % framing))
                tok = token_of(head.split(b"\r\n", 1)[0])
                script = self.scripts.get(tok, DEFAULT_SCRIPT)
                body_ok = framing[0] == "none"
                for step in script["steps"]:
                    r = self._step(s, buf, step, framing)
                    if r == "end":
                        return
                    if r == "body":
                        body_ok = True
                    elif r == "badbody":
                        return
                if not (script.get("keep") and body_ok):
                    return
        except OSError:
            return
        finally:
            with self.lock:
                self.socks.discard(s)
            try:
                s.close()
            except OSError:
                pass

    def _read_head(self, s, buf):
        while b"\r\n\r\n" not in buf:
            if len(buf) > (1 << 20):
                return None
            d = s.recv(65536)
            if not d:
                return None
            buf += d
        i = buf.index(b"\r\n\r\n") + 4
        head = bytes(buf[:i])
        del buf[:i]
        return head

    def _check_head(self, head, history=()):
        """Strict checks of a forwarded head; returns (framing, length)."""
        found = []

        def violation(what):          # the first problem of a head is enough
            if found:
                return
            found.append(what)
            if history:
                what += " (earlier on this connection: %r)" % list(history)
            with self.lock:
                self.violations.append((what, head[:2000]))

        lines = head[:-4].split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or parts[2] != b"HTTP/1.1" or not TCHAR.match(parts[0]) or not parts[1]:
            violation("bad request line")
        cl, te = [], []
        for ln in lines[1:]:
            name, sep, value = ln.partition(b":")
            if not sep or not TCHAR.match(name):
                violation("bad field line %r" % ln[:100])
                continue
            if any(c in value for c in (b"\r", b"\n", b"\0")):
                violation("CR/LF/NUL in a field value")
            n = name.lower()
            if n == b"content-length":
                cl.append(value.strip())
            elif n == b"transfer-encoding":
                te.append(value.strip().lower())
        if len(cl) > 1 or (cl and te):
            violation("ambiguous framing (CL %r, TE %r)" % (cl, te))
        if te:
            if te != [b"chunked"]:
                violation("Transfer-Encoding %r" % te)
            return ("chunked", 0)
        if cl:
            if not cl[0].isdigit():
                violation("bad Content-Length %r" % cl[0])
                return ("none", 0)
            return ("length", int(cl[0]))
        return ("none", 0)

    def _step(self, s, buf, step, framing):
        op = step[0]
        if op == "send":
            s.sendall(step[1])
        elif op == "sleep":
            if self.stop.wait(step[1]):
                return "end"
        elif op == "close":
            return "end"
        elif op == "rst":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return "end"
        elif op == "drain":
            s.settimeout(step[1])
            try:
                while s.recv(65536):
                    pass
            except socket.timeout:
                pass
            s.settimeout(20)
        elif op == "read_body":
            return "body" if self._read_body(s, buf, framing) else "badbody"
        return None

    def _need(self, s, buf, n):
        while len(buf) < n:
            d = s.recv(65536)
            if not d:
                return False
            buf += d
        return True

    def _read_body(self, s, buf, framing):
        """Consumes the request body; False if it is cut off or malformed."""
        kind, n = framing
        if kind == "length":
            if not self._need(s, buf, n):
                return False
            del buf[:n]
            return True
        if kind == "chunked":
            while True:
                while b"\r\n" not in buf:
                    if len(buf) > 4096 or not self._need(s, buf, len(buf) + 1):
                        return False
                i = buf.index(b"\r\n")
                size_txt = bytes(buf[:i]).split(b";")[0]
                del buf[:i + 2]
                try:
                    size = int(size_txt, 16)
                except ValueError:
                    return False
                if size == 0:
                    break
                if not self._need(s, buf, size + 2):
                    return False
                del buf[:size + 2]
            while True:  # trailer section
                while b"\r\n" not in buf:
                    if len(buf) > 65536 or not self._need(s, buf, len(buf) + 1):
                        return False
                i = buf.index(b"\r\n")
                line = bytes(buf[:i])
                del buf[:i + 2]
                if not line:
                    return True
        return True


# ------------------------------------------------------- script generator

def gen_body(rng):
    n = rng.choice([0, 0, 1, 2, 10, 100, 1000, rng.randint(0, 5000), rng.randint(0, 70000), 200000])
    return (rand_token(rng, lo=1, hi=8).encode() * (n // 4 + 1))[:n]


def gen_trailers(rng, bad=False):
    """Trailer lines: a few, a lot (over 4 KiB), forbidden ones; with
    `bad`, a malformed one."""
    if bad:
        return rng.choice([b"no-colon\r\n", b" folded: x\r\n", b"X-A: \x00\r\n", b"X-B:\r\n\r\n",
                           b"X-C: " + b"c" * 70000 + b"\r\n", b":empty-name\r\n", b"X-D: a\rb\r\n"])
    kind = rng.randrange(3)
    if kind == 0:
        return b"X-Checksum: %d\r\n" % rng.randrange(1 << 30)
    if kind == 1:  # a trailer section over 4 KiB
        return b"".join(b"X-T%d: %s\r\n" % (i, b"v" * rng.randint(50, 300)) for i in range(rng.randint(20, 80)))
    return b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\nHost: evil\r\nSet-Cookie: a=b\r\nX-Ok: 1\r\n"


def chunk_body(rng, body, trailers, bad=False):
    """Chunked encoding of `body`; with `bad`, one bad size line or no
    last chunk."""
    out = bytearray()
    i = 0
    spoil = rng.randrange(max(1, len(body) // 1000 + 2)) if bad else -1
    k_no = 0
    while i < len(body):
        n = rng.randint(1, max(1, min(len(body) - i, rng.choice([1, 10, 1000, 70000]))))
        size = b"%x" % n
        if k_no == spoil:
            size = rng.choice([b"zz", b"-1", b"fffffffffffffffff", b"", b" 5", b"5 ", b"0x5", b"%x" % (n + 1)])
        elif rng.random() < 0.05:
            size += b";ext=" + rand_token(rng).encode()
        out += size + b"\r\n" + body[i:i + n] + b"\r\n"
        i += n
        k_no += 1
    if bad and spoil >= k_no:
        return bytes(out)          # no last chunk
    return bytes(out) + b"0\r\n" + trailers + b"\r\n"


def gen_interim(rng):
    """0..n 1xx responses before the final one (an 1xx storm sometimes)."""
    if rng.random() < 0.85:
        return b""
    n = rng.choice([1, 2, 10, rng.randint(20, 300)])
    one = rng.choice([b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
                      b"HTTP/1.1 102 Processing\r\n\r\n", b"HTTP/1.1 199 Odd\r\nX-I: 1\r\n\r\n"])
    return one * n


BAD_RESPONSE_KINDS = ["status", "cl", "te", "chunks", "trailers", "bytes", "cut", "flip"]


def gen_head(rng, method, bad):
    """(head bytes without the final CRLF, body, framing): valid unless
    `bad` names a defect of the status line, framing or bytes."""
    status = rng.choice([200, 200, 200, 201, 204, 304, 404, 500, 301, 206])
    lines = [b"HTTP/1.1 %d %s" % (status, rng.choice([b"OK", b"", b"Whatever", b"A B C"]))]
    if bad == "status":
        lines[0] = rng.choice([b"HTTP/1.0 200 OK", b"HTTP/2 200", b"HTTP/1.1 20 OK", b"ICY 200 OK", b"HTTP/1.1 101 Up",
                               b"HTTP/1.1 2000 OK", b"HTTP/1.1  200 OK", b"http/1.1 200 OK", b"HTTP/1.1 600 X",
                               b"HTTP/1.1 000 Zero", b"HTTP/1.1 200 \xff\x01"])
    body = gen_body(rng)
    bodiless = method == "HEAD" or status in (204, 304)
    framing = rng.choice(["length", "length", "chunked", "chunked", "close"])
    lines.append(b"Content-Type: text/plain")
    for i in range(rng.choice([0, 1, 3, rng.randint(60, 120)])):
        lines.append(b"X-R%d: %s" % (i, rand_token(rng, hi=40).encode()))
    if framing == "length":
        v = b"%d" % len(body)
        if bad == "cl":
            v = rng.choice([b"%d" % (len(body) + 1), b"%d" % max(0, len(body) - 1), b"%d" % (1 << 40)] +
                           [x.encode() for x in NUMBERS] + [b"%d\r\nContent-Length: %d" % (len(body), len(body) + 1),
                                                             b"%d\r\nTransfer-Encoding: chunked" % len(body)])
        lines.append(b"Content-Length: " + v)
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked" if bad != "te" else
                     rng.choice([b"Transfer-Encoding: gzip, chunked", b"Transfer-Encoding: chunked, chunked",
                                 b"Transfer-Encoding: identity", b"Transfer-Encoding: chunked\r\nContent-Length: 3"]))
        if rng.random() < 0.2:
            lines.append(b"Trailer: X-Checksum")
    if rng.random() < 0.2:
        lines.append(rng.choice([b"Connection: close", b"Connection: keep-alive", b"Keep-Alive: timeout=1",
                                 b"Set-Cookie: a=b", b"Server: up", b"Upgrade: h2c"]))
    head = b"\r\n".join(lines) + b"\r\n"
    if bad == "bytes":
        head = mutate(rng, head)
    if bodiless and rng.random() < 0.8:
        body = b""
    return head, body, framing


def gen_h1_script(rng, method):
    """The whole behaviour of the upstream for one request: mostly valid
    but misbehaving answers (early, 1xx storms, many fields, big trailers,
    pieces with pauses, stalls), one in three with one defect."""
    bad = rng.choice(BAD_RESPONSE_KINDS) if rng.random() < 0.33 else None
    steps = []
    early = rng.random() < 0.2
    if not early:
        steps.append(["read_body"])
    head, body, framing = gen_head(rng, method, bad)
    if framing == "chunked":
        tr = gen_trailers(rng, bad == "trailers") if rng.random() < 0.4 or bad == "trailers" else b""
        payload = chunk_body(rng, body, tr, bad == "chunks")
    else:
        payload = body
    data = gen_interim(rng) + head + b"\r\n" + payload
    if bad == "cut" and len(data) > 1:          # close or reset mid-response
        data = data[:rng.randrange(1, len(data))]
    elif bad == "flip":
        data = flip_bytes(rng, data, 2)
    # deliver in pieces, sometimes with a stall in the middle
    pieces = 1 if rng.random() < 0.6 else rng.randint(2, 6)
    step = max(1, -(-len(data) // pieces))
    for i in range(0, len(data), step):
        steps.append(["send", data[i:i + step]])
        if i + step < len(data):
            steps.append(["sleep", rng.choice([0, 0.001, 0.01, 0.02])])
    if rng.random() < 0.04:
        steps.insert(len(steps) // 2 + 1, ["sleep", rng.choice([0.3, 1.2, 2.5])])   # stall
    if early:
        steps.append(["drain", rng.choice([0.01, 0.1])])
    keep = not early and framing in ("length", "chunked") and bad is None and rng.random() < 0.7
    if not keep:
        steps.append(["rst"] if rng.random() < 0.2 else ["close"])
    return {"steps": steps, "keep": keep}
