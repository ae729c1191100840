"""HTTP/2 denial-of-service floods against the downstream server
(src/http/h2_server.c, nghttp2): the 2019 Netflix advisories and later.

Each test attacks one connection, then checks that the process is alive,
that its memory stayed bounded (VmRSS of the portico process, generous
bounds), that the offending connection ended (GOAWAY or closed) or stayed
harmless, and that a fresh connection still gets a 200. The conftest
teardown fails on any sanitizer report.

Frames python-h2 refuses to send (floods, overflowing WINDOW_UPDATEs, an
HPACK bomb) are crafted as bytes. ASan's quarantine would keep freed memory
resident and make VmRSS meaningless for a flood of small allocations, so the
gateway runs with a small quarantine here."""
import socket
import struct
import threading
import time

import pytest

from conftest import simple_config
from h2util import h2_connect, h2_head, h2_read_until
from upstreams import make_response, read_server_request, ConnReader

import h2  # Debian python3-h2, installed by scripts/install-deps.sh
import h2.events  # noqa: E402
import h2.settings  # noqa: E402

PROTOCOL_ERROR = 1
FLOW_CONTROL_ERROR = 3
ENHANCE_YOUR_CALM = 11

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 2, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4

SMALL_QUARANTINE = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:quarantine_size_mb=16"}
RSS_BOUND_MB = 64


# ------------------------------------------------------------------ helpers

def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def hpack_str(s):
    """An HPACK string literal (no Huffman), length with a 7-bit prefix."""
    return hpack_int(len(s), 7, 0) + s


def hpack_int(n, prefix, first):
    limit = (1 << prefix) - 1
    if n < limit:
        return bytes([first | n])
    out = [first | limit]
    n -= limit
    while n >= 128:
        out.append(0x80 | (n & 0x7f))
        n >>= 7
    out.append(n)
    return bytes(out)


def get_block(path, extra=b""):
    """A GET header block from the static table only (no dynamic-table
    state, so it can be repeated in any number of frames): :method GET,
    :scheme http, :path and :authority as literals without indexing."""
    return (b"\x82\x86" + b"\x04" + hpack_str(path) + b"\x01" + hpack_str(b"gw.test") + extra)


@pytest.fixture
def gw(portico, echo):
    return portico(simple_config(echo.addr), env=SMALL_QUARANTINE), echo


def fresh_request_ok(port, path="/after"):
    """A normal request on a new connection is answered 200."""
    s, c = h2_connect(port)
    c.send_headers(1, h2_head(path, method="GET"), end_stream=True)
    s.sendall(c.data_to_send())
    events, ok = h2_read_until(s, c, lambda e: isinstance(e, h2.events.StreamEnded))
    s.close()
    assert ok, events
    resp = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert resp and dict(resp[0].headers)[b":status"] == b"200", events


def flood(p, s, chunks, seconds=8):
    """Sends the byte chunks produced by `chunks` without ever reading,
    until it is exhausted, the server stops reading (a send blocks for 2 s)
    or closes, or `seconds` pass; samples the RSS of the gateway meanwhile.
    Returns (bytes sent, outcome, RSS growth in MiB) with outcome one of
    "done", "blocked", "closed", "time"."""
    base = rss_kb(p.proc.pid)
    res = {"sent": 0, "outcome": "time"}
    stop = threading.Event()

    def pump():
        s.settimeout(2.0)
        try:
            for data in chunks:
                if stop.is_set():
                    return
                s.sendall(data)
                res["sent"] += len(data)
            res["outcome"] = "done"
        except socket.timeout:
            res["outcome"] = "blocked"
        except OSError:
            res["outcome"] = "closed"
    t = threading.Thread(target=pump, daemon=True)
    t.start()
    peak = base
    deadline = time.monotonic() + seconds
    while t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
        peak = max(peak, rss_kb(p.proc.pid))
    stop.set()
    t.join(5)
    time.sleep(0.3)  # let the gateway work through what it already read
    peak = max(peak, rss_kb(p.proc.pid))
    return res["sent"], res["outcome"], (peak - base) / 1024.0


def drain(s, timeout=20):
    """Reads until the server closes (or `timeout`); returns (frames as
    (type, flags, sid, payload) after the server preface, closed)."""
    s.settimeout(1.0)
    buf = bytearray()
    closed = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            d = s.recv(1 << 20)
        except socket.timeout:
            continue
        except OSError:
            closed = True
            break
        if not d:
            closed = True
            break
        buf += d
    frames = []
    i = 0
    while i + 9 <= len(buf):
        n = int.from_bytes(buf[i:i + 3], "big")
        if i + 9 + n > len(buf):
            break
        frames.append((buf[i + 3], buf[i + 4], int.from_bytes(buf[i + 5:i + 9], "big") & 0x7fffffff,
                       bytes(buf[i + 9:i + 9 + n])))
        i += 9 + n
    return frames, closed


def goaway_code(frames):
    for t, _, _, payload in frames:
        if t == GOAWAY:
            return int.from_bytes(payload[4:8], "big")
    return None


def raw_conn(port, rcvbuf=16384):
    """A connection with a small receive buffer, so that a client that does
    not read stops the gateway's writes early; sends the preface."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(SETTINGS, 0, 0))
    return s


def batches(one, per_batch, total_bytes):
    """Yields `one` repeated, per_batch at a time, up to total_bytes."""
    chunk = one * per_batch
    for _ in range(max(1, total_bytes // len(chunk))):
        yield chunk


# ------------------------------------------------------------ ACK floods

@pytest.mark.parametrize("kind", ["ping", "settings"])
def test_ack_flood_without_reading_is_cut(gw, kind):
    """CVE-2019-9512 (ping flood) / CVE-2019-9515 (settings flood): the
    client sends PINGs or empty SETTINGS and never reads the ACKs. The
    gateway must not queue ACKs without limit: nghttp2 refuses more than
    1000 queued ACKs and the connection ends; memory stays bounded."""
    p, echo = gw
    s = raw_conn(p.port)
    one = frame(PING, 0, 0, b"12345678") if kind == "ping" else frame(SETTINGS, 0, 0)
    sent, outcome, grown = flood(p, s, batches(one, 4096, 64 << 20))
    assert outcome in ("blocked", "closed"), (outcome, sent)   # it stopped reading at some point
    assert grown < RSS_BOUND_MB, "RSS grew by %.0f MiB (%d bytes of %s sent)" % (grown, sent, kind)
    frames, closed = drain(s)
    s.close()
    assert closed, "the connection was not closed after the flood"
    acks = sum(1 for t, f, _, _ in frames if t == (PING if kind == "ping" else SETTINGS) and f & ACK)
    assert acks < sent // len(one), (acks, sent // len(one))
    assert p.alive()
    fresh_request_ok(p.port)



# ------------------------------------------------------------ reset flood

def headers_flood(first_sid, block, count, per_batch=2000):
    """HEADERS frames (END_STREAM|END_HEADERS) with the same block on
    `count` new streams from first_sid, per_batch frames at a time."""
    sid = first_sid
    left = count
    while left > 0:
        n = min(per_batch, left)
        yield b"".join(frame(HEADERS, END_STREAM | END_HEADERS, sid + 2 * k, block) for k in range(n))
        sid += 2 * n
        left -= n


def big_upstream(raw_server, size=64 << 20, written=None, lock=None):
    """An HTTP/1.1 upstream answering /ok/big... with `size` bytes and
    anything else with a 2-byte body. With `written` (a dict) and `lock`,
    the bytes of the large bodies each connection managed to write are
    counted there."""
    chunk = b"x" * 65536

    def serve(sock, n):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        reader = ConnReader(sock)
        while True:
            req = read_server_request(reader)
            if req.target.startswith("/ok/big"):
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
                for _ in range(size // len(chunk)):
                    sock.sendall(chunk)
                    if written is not None:
                        with lock:
                            written[n] = written.get(n, 0) + len(chunk)
            else:
                sock.sendall(make_response(200, "OK", [], b"ok"))
    return raw_server(serve, ignore=(OSError, Exception))


@pytest.mark.parametrize("kind", ["not_found", "malformed", "stalled_not_found", "stalled_malformed"])
def test_reset_flood_without_reading_is_bounded(portico, raw_server, kind):
    """CVE-2019-9514 (reset flood): the client opens stream after stream
    that the server answers at once (404, no route) or must reset (an
    uppercase field name, PROTOCOL_ERROR), and never reads. Answers and
    resets queued for it must stay bounded. "stalled": the client first
    stalls the server's output with a large response it does not read (its
    windows wide open, a tiny TCP receive buffer), so that nothing the flood
    causes is sent and the rapid-reset accounting (on sending) never runs:
    the gateway stops reading while nghttp2 holds many frames it could not
    send, then sends them and says GOAWAY once the client reads."""
    up = big_upstream(raw_server)
    p = portico(simple_config(up.addr, route_extra={"match": {"path_prefix": "/ok"}}), env=SMALL_QUARANTINE)
    stalled = kind.startswith("stalled")
    s = raw_conn(p.port, rcvbuf=1 if stalled else 16384)
    first = 1
    if stalled:
        s.sendall(frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 0x7fffffff)) +
                  frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7fffffff - 65535)) +
                  frame(HEADERS, END_STREAM | END_HEADERS, 1, get_block(b"/ok/big")))
        first = 3
        time.sleep(2)  # the response fills the socket buffers
    extra = b"\x00" + hpack_str(b"X-Upper") + hpack_str(b"1") if kind.endswith("malformed") else b""
    block = get_block(b"/nf" if kind.endswith("not_found") else b"/ok/x", extra)
    n = 400000  # ~10 MB of HEADERS
    sent, outcome, grown = flood(p, s, headers_flood(first, block, n))
    assert grown < RSS_BOUND_MB, "RSS grew by %.0f MiB (%d bytes sent, %s)" % (grown, sent, outcome)
    assert outcome != "done", "the whole flood was read (%d bytes)" % sent
    frames, closed = drain(s, timeout=30)
    s.close()
    assert closed, "the connection was not closed"
    # Closing with the rest of the flood unread sends a TCP RST, which may
    # discard the GOAWAY before the client reads it.
    assert goaway_code(frames) in (None, ENHANCE_YOUR_CALM, PROTOCOL_ERROR), frames[-3:]
    answered = sum(1 for t, _, _, _ in frames if t in (HEADERS, RST_STREAM))
    assert answered < n // 10, answered
    assert p.alive()
    fresh_request_ok(p.port, "/ok/after")


# ------------------------------------------------------- empty frames flood

@pytest.mark.parametrize("kind", ["data", "headers", "continuation"])
def test_empty_frames_flood_is_cut(gw, kind):
    """CVE-2019-9518 (empty frames): endless zero-length DATA frames without
    END_STREAM on an open request, empty HEADERS opening streams, or empty
    CONTINUATION frames after an unfinished header block. Each costs the
    client 9 bytes and the server work but carries nothing: the connection
    is cut (GOAWAY, or closed at once), not served forever. nghttp2 1.52 has
    no limit on empty DATA: h2_server.c allows 100 in a row."""
    p, echo = gw
    s = raw_conn(p.port)
    if kind == "data":
        head = frame(HEADERS, END_HEADERS, 1, b"\x83\x86" + b"\x04" + hpack_str(b"/up") + b"\x01" + hpack_str(b"gw.test"))
        chunks = [head] + list(batches(frame(DATA, 0, 1), 4096, 2 << 20))
    elif kind == "headers":
        chunks = headers_flood(1, b"", 200000)
    else:
        chunks = [frame(HEADERS, END_STREAM, 1, get_block(b"/c"))] + list(batches(frame(CONTINUATION, 0, 1), 4096,
                                                                                       2 << 20))
    sent, outcome, grown = flood(p, s, chunks)
    assert grown < RSS_BOUND_MB, grown
    frames, closed = drain(s, timeout=10)
    s.close()
    assert closed, "connection still open after %d bytes of empty frames (%s)" % (sent, outcome)
    if kind != "continuation":   # nghttp2 closes at once after too many CONTINUATIONs
        assert goaway_code(frames) in (ENHANCE_YOUR_CALM, PROTOCOL_ERROR), frames[-3:]
    assert p.alive()
    if kind != "data":
        assert not echo.requests
    fresh_request_ok(p.port)


def test_flood_cut_then_bad_frame_in_the_same_read(gw):
    """The empty-DATA limit trips in the middle of one read, and a later
    frame of that read has an invalid size (a 5-byte PING). nghttp2 1.52
    must not keep parsing after the GOAWAY: it used to, and its frame-size
    handling then failed an assertion that aborted the whole gateway (found
    by tests/fuzz/fuzz_h2_server.c). Now: GOAWAY ENHANCE_YOUR_CALM, the
    connection closes, the gateway serves on."""
    p, echo = gw
    s = raw_conn(p.port)
    head = frame(HEADERS, END_HEADERS, 1, b"\x83\x86" + b"\x04" + hpack_str(b"/up") + b"\x01" + hpack_str(b"gw.test"))
    s.sendall(head + frame(DATA, 0, 1) * 101 + frame(PING, 0, 0, b"short"))
    frames, closed = drain(s, timeout=10)
    s.close()
    assert closed
    assert goaway_code(frames) == ENHANCE_YOUR_CALM, frames[-3:]
    assert p.alive()
    fresh_request_ok(p.port)


# ----------------------------------------------------- internal buffering

def test_unread_large_responses_stay_bounded(portico, raw_server):
    """CVE-2019-9517 (internal data buffering): many streams each ask for a
    16 MiB response while the client keeps every stream window at 0 and
    never reads. Each stream buffers at most 64 KiB and the upstreams are
    paused (they cannot write their whole body), so memory stays bounded."""
    size = 16 << 20
    nstreams = 32
    written = {}
    lock = threading.Lock()
    up = big_upstream(raw_server, size, written, lock)
    p = portico(simple_config(up.addr, route_extra={"match": {"path_prefix": "/ok"}}), env=SMALL_QUARANTINE)
    base = rss_kb(p.proc.pid)
    s, c = h2_connect(p.port)
    c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    for i in range(nstreams):
        c.send_headers(1 + 2 * i, h2_head("/ok/big/%d" % i, method="GET"), end_stream=True)
    s.sendall(c.data_to_send())
    # wait until every upstream started and their total stopped growing
    peak = base
    last, still_since = -1, time.monotonic()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        time.sleep(0.25)
        peak = max(peak, rss_kb(p.proc.pid))
        with lock:
            total = sum(written.values())
            started = len(written)
        if total != last:
            last, still_since = total, time.monotonic()
        elif started == nstreams and time.monotonic() - still_since > 1.5:
            break
    with lock:
        per_conn = dict(written)
    grown = (peak - base) / 1024.0
    assert len(per_conn) == nstreams, per_conn
    assert max(per_conn.values()) < 4 << 20, "an upstream wrote %d bytes: not paused" % max(per_conn.values())
    assert grown < RSS_BOUND_MB, "RSS grew by %.0f MiB for %d unread streams" % (grown, nstreams)
    # the streams are alive, merely paused: a window opens one and bytes flow
    c.increment_flow_control_window(65535, stream_id=1)
    s.sendall(c.data_to_send())
    events, ok = h2_read_until(s, c, lambda e: isinstance(e, h2.events.DataReceived) and e.stream_id == 1)
    assert ok, events[-5:]
    s.close()
    assert p.alive()
    fresh_request_ok(p.port, "/ok/after")


# ----------------------------------------------------------- PRIORITY churn

def test_priority_churn_stays_bounded(gw):
    """CVE-2019-9513 (resource loop): a flood of PRIORITY frames reshuffling
    the dependencies of idle streams. The connection must stay cheap: it
    still answers a normal request within a generous time (or is closed),
    and memory stays bounded."""
    p, echo = gw
    s, c = h2_connect(p.port)
    nids = 400

    def prio(i):
        sid = 2 * (i % nids) + 1
        dep = 2 * ((i * 7 + 3) % nids) + 1
        if dep == sid:
            dep = 2 * ((i + 1) % nids) + 1
        excl = 0x80000000 if i % 3 == 0 else 0
        return frame(PRIORITY, 0, sid, struct.pack(">IB", dep | excl, i % 256))

    def chunks():
        for b in range(60):
            yield b"".join(prio(b * 2000 + k) for k in range(2000))
    sent, outcome, grown = flood(p, s, chunks(), seconds=15)
    assert grown < RSS_BOUND_MB, grown
    t0 = time.monotonic()
    sid = 2 * nids + 1
    try:
        c.send_headers(sid, h2_head("/after-priority", method="GET"), end_stream=True)
        s.sendall(c.data_to_send())
        events, ok, closed = h2_read_until(s, c, lambda e: isinstance(e, h2.events.StreamEnded), timeout=30,
                                           report_closed=True, ignore_send_errors=True)
    except OSError:
        ok, closed, events = False, True, []
    s.close()
    if not closed:
        assert ok, events[-5:]
        assert time.monotonic() - t0 < 20
        resp = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
        assert dict(resp[0].headers)[b":status"] == b"200"
    assert p.alive()
    fresh_request_ok(p.port)


# -------------------------------------------------------------- HPACK bomb

def read_frames(s, pred, timeout=10):
    """Reads frames until pred(frame) holds; returns (frames, matched)."""
    s.settimeout(0.5)
    buf = bytearray()
    frames = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            n = int.from_bytes(buf[:3], "big")
            f = (buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7fffffff, bytes(buf[9:9 + n]))
            del buf[:9 + n]
            frames.append(f)
            if pred(f):
                return frames, True
        try:
            d = s.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return frames, False
        if not d:
            return frames, False
        buf += d
    return frames, False


def test_hpack_bomb_is_refused(gw):
    """CVE-2016-6581-style HPACK bomb: a 13 KiB header block that inserts one
    4000-byte field into the dynamic table and then refers to it 9000 times,
    decoding to 36 MB of header list. limits.max_header_size refuses it
    (431) without allocating for the whole list; the upstream sees nothing."""
    p, echo = gw
    import hpack
    s = raw_conn(p.port)
    big = b"v" * 4000
    refs = 9000
    block = (b"\x82\x86\x04" + hpack_str(b"/bomb") + b"\x01" + hpack_str(b"gw.test") +
             b"\x40" + hpack_str(b"x-bomb") + hpack_str(big) + b"\xbe" * refs)
    assert len(block) < 16384
    base = rss_kb(p.proc.pid)
    s.sendall(frame(HEADERS, END_STREAM | END_HEADERS, 1, block))
    frames, ok = read_frames(s, lambda f: f[2] == 1 and f[0] in (HEADERS, RST_STREAM) or f[0] == GOAWAY)
    grown = (rss_kb(p.proc.pid) - base) / 1024.0
    assert ok, frames
    t, _, _, payload = frames[-1]
    if t == HEADERS:
        status = dict(hpack.Decoder().decode(payload))[":status"]
        assert status == "431", status
    assert grown < RSS_BOUND_MB, grown
    s.close()
    assert not echo.requests
    fresh_request_ok(p.port)


# ------------------------------------------------- WINDOW_UPDATE overflow

@pytest.mark.parametrize("scope", ["connection", "stream"])
def test_window_update_overflow_is_flow_control_error(gw, scope):
    """WINDOW_UPDATEs that push a flow-control window beyond 2^31-1 (RFC 9113
    6.9.1): FLOW_CONTROL_ERROR, as GOAWAY on the connection window and as
    RST_STREAM on a stream window (the connection then still serves)."""
    p, echo = gw
    import hpack
    s = raw_conn(p.port)
    sid = 0
    if scope == "stream":
        sid = 1
        s.sendall(frame(HEADERS, END_HEADERS, 1, b"\x83\x86\x04" + hpack_str(b"/wu") + b"\x01" + hpack_str(b"gw.test")))
    wu = frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", 65536))
    try:
        s.sendall(wu * 40000)  # 2.6 GB of window in 65536-byte steps
    except OSError:
        pass
    if scope == "connection":
        frames, ok = read_frames(s, lambda f: f[0] == GOAWAY)
        assert ok, frames[-3:]
        assert int.from_bytes(frames[-1][3][4:8], "big") == FLOW_CONTROL_ERROR
        frames, closed = drain(s, timeout=10)
        assert closed
    else:
        frames, ok = read_frames(s, lambda f: f[0] in (RST_STREAM, GOAWAY))
        assert ok, frames[-3:]
        assert frames[-1][0] == RST_STREAM and frames[-1][2] == 1, frames[-1]
        assert int.from_bytes(frames[-1][3], "big") == FLOW_CONTROL_ERROR
        # the connection survives the stream error
        s.sendall(frame(HEADERS, END_STREAM | END_HEADERS, 3, get_block(b"/after-wu")))
        dec = hpack.Decoder()
        frames, ok = read_frames(s, lambda f: f[0] == HEADERS and f[2] == 3)
        assert ok, frames[-3:]
        for t, _, fsid, payload in frames:
            if t == HEADERS:
                hdrs = dict(dec.decode(payload))
        assert hdrs[":status"] == "200"
    s.close()
    assert p.alive()
    fresh_request_ok(p.port)
