"""A misbehaving h2c upstream (`protocol: h2c`) and its response scripts.

The server speaks raw frames: it answers SETTINGS and PING, grants flow
control for request DATA, decodes Portico's header blocks (hpack) and runs,
per stream, the script registered under the token found in `:path`:
    ["wait_end", s]                wait (at most s) for the request's END_STREAM
    ["headers", fields, end, n]    a header block ([name, value] pairs), split
                                   into HEADERS + n-1 CONTINUATION frames
    ["data", bytes, end]           DATA, within the peer's flow-control window
                                   (sent anyway after 2 s without window)
    ["frame", type, flags, sid, payload, length]
                                   any frame; sid "self" = this stream, else an
                                   int; length None or a lie for the length field
    ["rst", code] / ["goaway", code] / ["sleep", s] / ["close"]

Oracle: a header block that does not decode, a request without :method,
:scheme or :path (CONNECT aside), or with a connection-specific field (connection,
keep-alive, proxy-connection, transfer-encoding, upgrade, te other than
"trailers") is recorded in `.violations`.
"""

import socket
import threading

import hpack

import h2frames as F
from mutate import rand_token
from upstream_h1 import token_of

DEFAULT_SCRIPT = [["wait_end", 5], ["headers", [[":status", "200"], ["content-length", "2"]], False, 1],
                  ["data", b"ok", True]]
CONN_SPECIFIC = {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}


class _Conn:
    """One connection from Portico: a reader thread plus one thread per
    stream script; writes are serialised by `wlock`."""

    def __init__(self, up, s):
        self.up, self.s = up, s
        self.wlock = threading.Lock()
        self.cv = threading.Condition()
        self.conn_window = 65535
        self.initial_window = 65535
        self.windows = {}          # sid -> peer's window for our DATA
        self.ended = {}            # sid -> Event (request END_STREAM or reset)
        self.decoder = hpack.Decoder()
        self.block = None          # (sid, end_stream, bytearray) while CONTINUATIONs are due
        self.closed = False

    def send(self, data):
        with self.wlock:
            if not self.closed:
                self.s.sendall(data)

    def close(self):
        self.closed = True
        try:
            self.s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- reading -----------------------------------------------------------
    def run(self):
        rd = F.FrameReader()
        try:
            self.send(F.settings([(3, 100), (4, 65535)]))
            pre = b""
            while len(pre) < len(F.PREFACE):
                d = self.s.recv(len(F.PREFACE) - len(pre))
                if not d:
                    return
                pre += d
            while not self.up.stop.is_set():
                d = self.s.recv(65536)
                if not d:
                    return
                for fr in rd.feed(d):
                    self.on_frame(*fr)
        except OSError:
            return
        finally:
            self.closed = True
            with self.cv:
                self.cv.notify_all()
            for ev in list(self.ended.values()):
                ev.set()
            try:
                self.s.close()
            except OSError:
                pass

    def on_frame(self, ftype, flags, sid, payload):
        if ftype == F.SETTINGS and not flags & F.ACK:
            for i in range(0, len(payload) - 5, 6):
                k, v = int.from_bytes(payload[i:i + 2], "big"), int.from_bytes(payload[i + 2:i + 6], "big")
                if k == 4:
                    with self.cv:
                        for s in self.windows:
                            self.windows[s] += v - self.initial_window
                        self.initial_window = v
                        self.cv.notify_all()
            self.send(F.settings([], ack=True))
        elif ftype == F.PING and not flags & F.ACK:
            self.send(F.ping(payload[:8].ljust(8, b"\0"), ack=True))
        elif ftype == F.WINDOW_UPDATE and len(payload) >= 4:
            incr = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            with self.cv:
                if sid == 0:
                    self.conn_window += incr
                elif sid in self.windows:
                    self.windows[sid] += incr
                self.cv.notify_all()
        elif ftype in (F.HEADERS, F.CONTINUATION):
            self.on_header_frame(ftype, flags, sid, payload)
        elif ftype == F.DATA:
            n = len(payload)
            if n:
                self.send(F.window_update(0, n) + (F.window_update(sid, n) if not flags & F.END_STREAM else b""))
            if flags & F.END_STREAM and sid in self.ended:
                self.ended[sid].set()
        elif ftype == F.RST_STREAM and sid in self.ended:
            self.ended[sid].set()

    def on_header_frame(self, ftype, flags, sid, payload):
        if ftype == F.HEADERS:
            frag = F.strip_padding_priority(ftype, flags, payload)
            self.block = (sid, bool(flags & F.END_STREAM), bytearray(frag or b""))
        elif self.block:
            self.block[2].extend(payload)
        if not flags & F.END_HEADERS or not self.block:
            return
        sid, end, block = self.block
        self.block = None
        try:
            fields = self.decoder.decode(bytes(block), raw=True)
        except Exception as e:  # noqa: BLE001 - any decoding failure is a finding
            self.up.violation("undecodable header block (%r)" % e, bytes(block))
            self.close()
            return
        if sid in self.ended:                 # trailers
            if end:
                self.ended[sid].set()
            return
        self.check_request(fields)
        ev = threading.Event()
        if end:
            ev.set()
        self.ended[sid] = ev
        with self.cv:
            self.windows[sid] = self.initial_window
        path = dict(fields).get(b":path", b"")
        with self.up.lock:
            self.up.requests += 1
        script = self.up.scripts.get(token_of(path), DEFAULT_SCRIPT)
        threading.Thread(target=self.run_script, args=(sid, script), daemon=True).start()

    def check_request(self, fields):
        names = [n for n, _ in fields]
        connect = (b":method", b"CONNECT") in fields      # RFC 9113 §8.5: no :scheme, no :path
        for p in ((b":method",) if connect else (b":method", b":scheme", b":path")):
            if p not in names:
                self.up.violation("request without %s" % p.decode(), repr(fields).encode())
        for n, v in fields:
            if n in CONN_SPECIFIC or (n == b"te" and v != b"trailers") or n != n.lower():
                self.up.violation("field %r in a forwarded HTTP/2 request" % n, repr(fields).encode())

    # -- scripts -----------------------------------------------------------
    def send_data(self, sid, data, end):
        """DATA frames within the flow-control windows (2 s patience)."""
        while True:
            with self.cv:
                win = min(self.conn_window, self.windows.get(sid, 0), 16384)
                if win <= 0 and data:
                    self.cv.wait_for(lambda: self.closed or min(self.conn_window, self.windows.get(sid, 0)) > 0, 2)
                    win = min(self.conn_window, self.windows.get(sid, 0), 16384)
                    if win <= 0:
                        win = 16384         # out of patience: overrun the window
                n = min(len(data), max(win, 0))
                self.conn_window -= n
                if sid in self.windows:
                    self.windows[sid] -= n
            piece, data = data[:n], data[n:]
            self.send(F.frame(F.DATA, F.END_STREAM if end and not data else 0, sid, piece))
            if not data or self.closed:
                return

    def run_script(self, sid, script):
        try:
            for step in script:
                op = step[0]
                if op == "wait_end":
                    self.ended[sid].wait(step[1])
                elif op == "headers":
                    block = F.encode_headers([(n, v) for n, v in step[1]])
                    self.send(F.headers_frames(sid, block, step[2], step[3]))
                elif op == "data":
                    self.send_data(sid, step[1], step[2])
                elif op == "frame":
                    fsid = sid if step[3] == "self" else step[3]
                    self.send(F.frame(step[1], step[2], fsid, step[4], step[5]))
                elif op == "rst":
                    self.send(F.rst_stream(sid, step[1]))
                elif op == "goaway":
                    self.send(F.goaway(sid, step[1]))
                elif op == "sleep":
                    if self.up.stop.wait(step[1]):
                        return
                elif op == "close":
                    self.close()
                    return
                if self.closed:
                    return
        except OSError:
            self.close()


class BadH2Upstream:
    def __init__(self, stop):
        self.stop = stop
        self.scripts = {}
        self.violations = []
        self.requests = 0
        self.lock = threading.Lock()
        self.conns = []
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(256)
        self.addr = "127.0.0.1:%d" % self.lsock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def violation(self, what, data):
        with self.lock:
            self.violations.append((what, data[:2000]))

    def close(self):
        try:
            self.lsock.close()
        except OSError:
            pass
        for c in list(self.conns):
            c.close()

    def _accept(self):
        self.lsock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                s, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            s.settimeout(30)
            c = _Conn(self, s)
            self.conns = [x for x in self.conns if not x.closed] + [c]
            threading.Thread(target=c.run, daemon=True).start()


# ------------------------------------------------------- script generator

def gen_fields(rng, status_ok=True):
    """A response header list, sometimes with invalid or illegal fields."""
    status = rng.choice(["200", "200", "200", "204", "304", "404", "500", "201"])
    if not status_ok or rng.random() < 0.08:
        status = rng.choice(["", "abc", "99", "1000", "20", "2000", "101", "-200"])
    fields = [[":status", status]]
    if rng.random() < 0.03:
        fields = []
    fields.append(["content-type", "text/plain"])
    for i in range(rng.choice([0, 1, 2, rng.randint(60, 120)])):
        fields.append(["x-r%d" % i, rand_token(rng, hi=40)])
    if rng.random() < 0.15:
        fields.append(rng.choice([["connection", "close"], ["transfer-encoding", "chunked"], ["X-Upper", "1"],
                                  [":path", "/x"], ["", "empty"], ["x-bad", "a\r\nb"], ["x-nul", "a\0b"],
                                  [":status", "200"], ["te", "gzip"], ["keep-alive", "1"], ["x-sp ace", "1"],
                                  ["content-length", "-1"], ["content-length", "1, 2"]]))
    return fields


def gen_h2_script(rng, method):
    """The behaviour of the h2c upstream for one request stream."""
    steps = []
    if rng.random() < 0.75:
        steps.append(["wait_end", rng.choice([0.5, 2, 5])])
    if rng.random() < 0.1:
        for _ in range(rng.choice([1, 3, 50])):
            steps.append(["headers", [[":status", rng.choice(["100", "103"])], ["link", "</a>"]], False, 1])
    fields = gen_fields(rng)
    n = rng.choice([0, 0, 2, 100, rng.randint(0, 20000), rng.randint(0, 100000)])
    body = (rand_token(rng).encode() * (n // 2 + 1))[:n]
    if rng.random() < 0.5:
        cl = len(body) if rng.random() < 0.8 else len(body) + rng.choice([-1, 1, 100])
        fields.append(["content-length", str(max(cl, 0))])
    trailers = None
    if rng.random() < 0.3:
        trailers = [["x-checksum", str(rng.randrange(1 << 30))]]
        if rng.random() < 0.3:   # a large trailer block
            trailers += [["x-t%d" % i, "v" * rng.randint(50, 300)] for i in range(rng.randint(20, 60))]
        if rng.random() < 0.2:
            trailers.append(rng.choice([[":status", "200"], ["content-length", "3"], ["Upper", "x"]]))
    end_in_headers = not body and trailers is None
    steps.append(["headers", fields, end_in_headers, rng.choice([1, 1, 1, 2, 5])])
    pieces = rng.choice([1, 1, 2, 4])
    step = max(1, -(-len(body) // pieces)) if body else 1
    chunks = [body[i:i + step] for i in range(0, len(body), step)]
    for i, c in enumerate(chunks):
        steps.append(["data", c, trailers is None and i == len(chunks) - 1])
        if rng.random() < 0.2:
            steps.append(["sleep", rng.choice([0, 0.005, 0.02])])
    if trailers is not None:
        steps.append(["headers", trailers, True, 1])
    elif not end_in_headers and not chunks:
        steps.append(["data", b"", True])
    if rng.random() < 0.35:                      # misbehaviour somewhere in the exchange
        steps.insert(rng.randint(0, len(steps)), rng.choice(_bad_steps(rng)))
    return steps


def _bad_steps(rng):
    """Steps that break the protocol or the stream."""
    return [
        ["rst", rng.choice([0, 1, 2, 5, 7, 8, 11, 0xdeadbeef])],
        ["goaway", rng.choice([0, 1, 2, 11])],
        ["close"],
        ["sleep", rng.choice([0.3, 1.5, 2.5])],
        ["frame", F.DATA, 0, 0, b"data-on-0", None],
        ["frame", F.DATA, F.PADDED, "self", b"\xff" + b"x", None],
        ["frame", F.HEADERS, F.END_HEADERS, 2, F.encode_headers([(":status", "200")]), None],
        ["frame", F.HEADERS, F.END_HEADERS, "self", b"\xff\xff\xff\xff\x0f", None],
        ["frame", F.CONTINUATION, F.END_HEADERS, "self", b"\x88", None],
        ["frame", F.WINDOW_UPDATE, 0, "self", b"\0\0\0\0", None],
        ["frame", F.WINDOW_UPDATE, 0, 0, b"\x7f\xff\xff\xff", None],
        ["frame", F.SETTINGS, 0, 0, b"\0\x02\0\0\0\x02", None],
        ["frame", F.SETTINGS, 0, 0, b"\0\x04\x80\0\0\0", None],
        ["frame", F.SETTINGS, 0, 0, b"\0\x05\0\0\0\x01", None],
        ["frame", F.SETTINGS, 0, 0, b"\0\x01\0\0\0\0\0\x03\0\0\0\0", None],
        ["frame", F.PUSH_PROMISE, F.END_HEADERS, "self", b"\0\0\0\x02\x82\x84\x86", None],
        ["frame", 0xFA, 0xFF, "self", b"unknown", None],
        ["frame", F.PING, 0, 0, b"1234567", None],
        ["frame", F.RST_STREAM, 0, 0x7FFFFFFF, b"\0\0\0\x01", None],
        ["frame", F.DATA, 0, "self", b"x" * 100, 20000],
        ["frame", F.PRIORITY, 0, "self", b"\0\0\0\x01\x10", None],
    ]
