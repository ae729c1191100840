"""HTTP/2 client cases (h2c with prior knowledge on the plain listener).

Generation builds a valid session (preface, SETTINGS, streams of
HEADERS/CONTINUATION/DATA/trailers) and then mutates it: odd or invalid
SETTINGS, stream ids (even, zero, reused, going down), pseudo-headers,
HPACK bytes, random flags, types and length fields, and extra
RST_STREAM/WINDOW_UPDATE/PRIORITY/PING/GOAWAY/unknown frames. The case is
    {"kind": "h2", "scripts": {...}, "send": [[bytes, delay_s], ...],
     "end": ..., "linger": s, "auto": bool}
like an HTTP/1 case; with `auto` the runner answers the gateway's SETTINGS
and PINGs and grants flow-control credit for the DATA it receives.
"""

import socket
import struct
import time

import h2frames as F
from configs import ROUTES
from h1cases import METHODS, ROUTE_WEIGHTS, gen_target, read_until_quiet, rst_close
from mutate import flip_bytes, mutate, rand_token, split_plan
from upstream_h1 import gen_h1_script
from upstream_h2 import gen_h2_script


BAD_H2_KINDS = ["settings", "sid", "fields", "hpack", "frame", "frame", "conn", "preface", "cut", "flow", "size"]


def gen_settings(rng, bad=False):
    """The client's SETTINGS: sane values, or (bad) an invalid one."""
    pairs = [(2, 0)] if rng.random() < 0.8 else []
    if rng.random() < 0.5:
        pairs.append((4, rng.choice([65535, 1 << 20, (1 << 31) - 1, 100, 0])))
    if rng.random() < 0.3:
        pairs.append((5, rng.choice([16384, 65536, (1 << 24) - 1])))
    if rng.random() < 0.2:
        pairs.append((1, rng.choice([0, 4096, 1 << 20])))
    if bad:
        pairs.append(rng.choice([(2, 2), (4, 1 << 31), (5, 100), (5, 1 << 24), (0x99, 1), (3, 0), (8, 1)]))
    return F.settings(pairs)


def gen_fields(rng, method, target, body_len, bad=False):
    """A request header list; with `bad`, one defect."""
    fields = [(":method", method), (":scheme", "http"), (":authority", "gw.test"), (":path", target)]
    if rng.random() < 0.3:
        fields += [("x-h%d" % i, rand_token(rng, lo=1, hi=40)) for i in range(rng.randint(70, 90))]
    for _ in range(rng.choice([0, 1, 2])):
        fields.append(rng.choice([("accept", "*/*"), ("user-agent", "fuzz/2"), ("content-type", "application/grpc"),
                                  ("te", "trailers"), ("cookie", "a=b"), ("cookie", "c=d"), ("grpc-timeout", "5m")]))
    if body_len is not None and rng.random() < 0.5:
        fields.append(("content-length", str(body_len)))
    if not bad:
        return fields
    i = rng.randrange(len(fields))
    op = rng.randrange(9)
    if op == 0:
        del fields[i]
    elif op == 1:
        fields.append(fields[i % 4])
    elif op == 2:
        fields.append(rng.choice([("connection", "close"), ("te", "gzip"), ("transfer-encoding", "chunked"),
                                  ("upgrade", "h2c"), ("keep-alive", "5"), ("proxy-connection", "x")]))
    elif op == 3:
        fields.insert(0, ("x-first", "1"))
    elif op == 4:
        fields.append(("X-Upper", "1"))
    elif op == 5:
        fields.append((":foo", "bar"))
    elif op == 6:
        fields[i] = (fields[i][0], fields[i][1] + rng.choice(["\r\n", "\0", " ", "\x7f"]))
    elif op == 7:
        fields.append(("content-length", str((body_len or 0) + rng.choice([1, 50]))))
    else:
        fields[3] = (":path", rng.choice(["", "x", "*", "//", "/%00"]))
    return fields


def gen_stream(rng, idx, sid, j, scripts, bad):
    """The frames (as a list of byte groups) of one request stream."""
    token = "t%dx%d" % (idx, j)
    route = rng.choice(ROUTE_WEIGHTS)
    prefix, kind = ROUTES[route]
    method = rng.choice(METHODS)
    if kind == "h1":
        scripts[token] = ["h1", gen_h1_script(rng, method)]
    elif kind == "h2":
        scripts[token] = ["h2", gen_h2_script(rng, method)]
    has_body = method not in ("GET", "HEAD") or rng.random() < 0.1
    n = rng.choice([0, 1, 100, rng.randint(0, 20000), rng.randint(0, 60000)]) if has_body else 0
    if bad == "flow":                          # beyond the 64 KiB stream window
        n = rng.choice([70000, 200000])
    body = (rand_token(rng).encode() * (n // 2 + 1))[:n]
    trailers = rng.random() < 0.15
    block = F.encode_headers(gen_fields(rng, method, gen_target(rng, prefix, token), n if has_body else None,
                                        bad == "fields"), use_static=rng.random() < 0.7)
    if bad == "hpack":
        block = mutate(rng, block)
    groups = [F.headers_frames(sid, block, not has_body and not trailers, rng.choice([1, 1, 1, 2, 4, 8] + ([40] if bad == "frame" else [])))]
    frame_max = 16384 if bad != "size" else 16385
    pieces = rng.choice([1, 1, 2, 5])
    step = max(1, min(frame_max, -(-len(body) // pieces)))
    chunks = [body[i:i + step] for i in range(0, len(body), step)] or ([b""] if has_body else [])
    for i, c in enumerate(chunks):
        end = i == len(chunks) - 1 and not trailers
        if rng.random() < 0.05 and len(c) < 16380:
            groups.append(F.frame(F.DATA, F.PADDED | (F.END_STREAM if end else 0), sid, bytes([3]) + c + b"\0\0\0"))
        else:
            groups.append(F.frame(F.DATA, F.END_STREAM if end else 0, sid, c))
    if trailers:
        tf = [("x-checksum", "1")]
        if rng.random() < 0.3:
            tf += [("x-t%d" % i, "v" * 200) for i in range(rng.randint(10, 40))]
        if rng.random() < 0.2:
            tf.append(("grpc-status", "0"))
        groups.append(F.headers_frames(sid, F.encode_headers(tf), True, 1))
    for _ in range(rng.choice([0, 0, 0, 1, 2])):  # valid extras in the middle of the stream
        extra = rng.choice([F.window_update(sid, rng.choice([1, 65535])),
                            F.priority(sid, rng.choice([0, sid + 2]), rng.randrange(256), rng.random() < 0.5)])
        groups.insert(rng.randint(1, len(groups)), extra)
    if rng.random() < 0.08:                       # the client cancels the stream
        groups = groups[:rng.randint(1, len(groups))] + [F.rst_stream(sid, rng.choice([0, 8]))]
    return groups


def gen_conn_frame(rng, bad):
    """A connection-level frame dropped in between (bad: an invalid one)."""
    if not bad:
        return rng.choice([F.ping(b"fuzzfuzz"), F.settings([(4, 1 << 16)]), F.settings([]),
                           F.window_update(0, rng.choice([1, 1 << 20])), F.frame(0xFB, 0, 0, b"ext")])
    return rng.choice([
        F.ping(b"ack!ack!", ack=True), F.settings([], ack=True), F.window_update(0, rng.choice([0, 0x7FFFFFFF])),
        F.goaway(0, 0), F.goaway(0x7FFFFFFF, 2), F.frame(F.DATA, 0, 0, b"x"), F.frame(F.CONTINUATION, F.END_HEADERS, 1, b"\x82"),
        F.frame(F.PUSH_PROMISE, F.END_HEADERS, 1, b"\0\0\0\x02\x82"), F.frame(F.PING, 0, 0, b"short"),
        F.frame(F.SETTINGS, 0, 1, b""), F.frame(F.RST_STREAM, 0, 0, b"\0\0\0\0"), F.priority(1, 1, 16),
        F.frame(F.WINDOW_UPDATE, 0, 1, b"\0\0\0\0"), F.rst_stream(99, 1), F.frame(F.SETTINGS, 0, 0, b"12345"),
    ])


def mutate_frame(rng, fr):
    """One frame's type, flags, stream id, length field or payload."""
    if len(fr) < 9:
        return flip_bytes(rng, fr)
    b = bytearray(fr)
    op = rng.randrange(5)
    if op == 0:
        b[3] = rng.randrange(11)
    elif op == 1:
        b[4] = rng.randrange(256)
    elif op == 2:
        b[5:9] = struct.pack(">I", rng.choice([0, 2, 3, 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(1 << 31)]))
    elif op == 3:
        n = int.from_bytes(b[:3], "big")
        b[:3] = struct.pack(">I", max(0, n + rng.choice([-1, 1, -9, 16384, 1 << 20])))[1:]
    else:
        b = bytearray(fr[:9] + flip_bytes(rng, fr[9:]) if len(fr) > 9 else fr)
    return bytes(b)


def gen_h2_case(rng, idx):
    """A session: preface, SETTINGS, 1..20 streams (sequential or
    interleaved) and extra frames; one case in four carries one defect
    (BAD_H2_KINDS) in one place."""
    bad = rng.choice(BAD_H2_KINDS) if rng.random() < 0.25 else None
    scripts = {}
    groups = [F.PREFACE if bad != "preface" else flip_bytes(rng, F.PREFACE), gen_settings(rng, bad == "settings")]
    if rng.random() < 0.5:
        groups.append(F.window_update(0, 1 << 20))
    nstreams = rng.choice([1, 1, 2, 3, 6, 20])
    spoiled = rng.randrange(nstreams)             # the stream that carries a stream-level defect
    streams = []
    sid = 1
    for j in range(nstreams):
        streams.append(gen_stream(rng, idx, sid, j, scripts, bad if j == spoiled else None))
        sid += 2
        if bad == "sid" and j == spoiled:
            sid = rng.choice([sid - 2, sid - 1, 0, max(1, sid - 4), 0x7FFFFFFF, 0x80000001])
    if rng.random() < 0.5:                     # sequential streams
        for s in streams:
            groups += s
    else:           # interleaved: each stream in order, streams opened in id order
        opened = 0
        while any(streams):
            pick = rng.choice([i for i in range(min(opened + 1, len(streams))) if streams[i]])
            opened = max(opened, pick + 1)
            groups.append(streams[pick].pop(0))
    for _ in range(rng.choice([0, 0, 1, 3])):
        groups.insert(rng.randint(2, len(groups)), gen_conn_frame(rng, False))
    if bad == "conn":
        groups.insert(rng.randint(2, len(groups)), gen_conn_frame(rng, True))
    if bad == "frame":
        i = rng.randrange(1, len(groups))
        groups[i] = mutate_frame(rng, groups[i])
    if rng.random() < 0.1:
        groups.append(F.goaway(0, 0))
    data = b"".join(groups)
    if bad == "cut":
        data = data[:rng.randrange(1, len(data))]
    end = rng.choices(["read", "shut_wr", "close", "rst"], [82, 6, 6, 6])[0]
    return {"kind": "h2", "scripts": scripts, "send": [list(p) for p in split_plan(rng, data, max_pieces=12)],
            "end": end, "linger": rng.choice([0.05, 0.1, 0.3, 0.6]), "auto": rng.random() < 0.95}


class _Auto:
    """Answers the gateway: SETTINGS ACK, PING ACK, WINDOW_UPDATE for DATA."""

    def __init__(self, s, enabled):
        self.s, self.enabled, self.rd = s, enabled, F.FrameReader()

    def __call__(self, data):
        if not self.enabled:
            return
        out = bytearray()
        for ftype, flags, sid, payload in self.rd.feed(data):
            if ftype == F.SETTINGS and not flags & F.ACK:
                out += F.settings([], ack=True)
            elif ftype == F.PING and not flags & F.ACK:
                out += F.ping(payload[:8].ljust(8, b"\0"), ack=True)
            elif ftype == F.DATA and payload:
                out += F.window_update(0, len(payload)) + F.window_update(sid, len(payload))
        if out:
            try:
                self.s.sendall(out)
            except OSError:
                self.enabled = False


def run_h2_case(port, case):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        auto = _Auto(s, case["auto"])
        for data, delay in case["send"]:
            try:
                s.sendall(data)
            except OSError:
                break
            read_until_quiet_nb(s, auto)
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
        return read_until_quiet(s, case["linger"], 8, None, on_data=auto)
    finally:
        s.close()


def read_until_quiet_nb(s, on_data):
    """Takes whatever the gateway already sent, without waiting."""
    s.setblocking(False)
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            on_data(d)
    except (BlockingIOError, OSError):
        pass
    finally:
        s.setblocking(True)
        s.settimeout(10)
