"""Raw HTTP/2 helpers (python3-h2) shared by the integration tests.

Client side
-----------
`h2_connect(port)` opens an h2c (prior knowledge) connection and sends the
preface; `h2_read_until(s, c, pred)` reads and collects events until
`pred(event)` holds; `h2_head(path)` builds a request header block. By
default the client does not validate or normalise headers, so that tests can
send malformed blocks on purpose. `H2` is a client that tracks the state of
every stream while the test keeps sending (slow bodies, many streams);
`problem(h, sid, status)` checks a problem+json answer on one of its streams.

Upstream side
-------------
`H2Upstream(respond)` is an h2c server that records every complete request
(head, body, trailers) and answers with `respond(record)`.

gRPC
----
`ident`, `grpc_method` and `grpc_unary_echo` are the raw-bytes helpers the
grpcio tests use (no generated code).
"""

import json
import socket
import threading
import time

import h2  # Debian python3-h2, installed by scripts/install-deps.sh
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402
import h2.exceptions  # noqa: E402

# ---------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------


def h2_connect(port, lenient=True, timeout=10, **cfg):
    """Connects to 127.0.0.1:port and sends the client preface; returns
    (socket, H2Connection). `lenient` turns off header validation and
    normalisation (outbound and inbound); `cfg` adds H2Configuration
    options."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    opts = {"client_side": True}
    if lenient:
        opts.update(validate_outbound_headers=False, normalize_outbound_headers=False,
                    validate_inbound_headers=False)
    opts.update(cfg)
    c = h2.connection.H2Connection(config=h2.config.H2Configuration(**opts))
    c.initiate_connection()
    s.sendall(c.data_to_send())
    return s, c


def h2_read_until(s, c, pred, timeout=10, report_closed=False, ignore_send_errors=False):
    """Reads events until pred(event) is true or `timeout` passes, sending
    what the connection wants to send (ACKs, WINDOW_UPDATEs) in between.
    Returns (events, matched), or (events, matched, closed) with
    `report_closed`, where closed tells that the peer closed the connection.
    With `ignore_send_errors` a failed send is ignored instead of raised."""
    events = []
    deadline = time.monotonic() + timeout
    s.settimeout(0.5)

    def result(matched, closed):
        return (events, matched, closed) if report_closed else (events, matched)

    while time.monotonic() < deadline:
        try:
            data = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return result(False, True)
        if not data:
            return result(False, True)
        for ev in c.receive_data(data):
            events.append(ev)
            if pred(ev):
                return result(True, False)
        out = c.data_to_send()
        if out:
            try:
                s.sendall(out)
            except OSError:
                if not ignore_send_errors:
                    raise
    return result(False, False)


def h2_head(path, extra=(), method="POST", scheme="http", authority="gw.test"):
    """A request header block: the four pseudo-headers, then `extra`."""
    return [(":method", method), (":scheme", scheme), (":authority", authority), (":path", path)] + list(extra)


class H2:
    """A python-h2 client over h2c prior knowledge that collects events per
    stream while the test keeps sending. Outbound headers are validated;
    inbound ones are not."""

    def __init__(self, port):
        self.s, self.c = h2_connect(port, lenient=False, validate_inbound_headers=False)
        self.streams = {}   # id -> {"headers", "data", "ended", "reset", "t_head"}
        self.closed = False

    def st(self, sid):
        return self.streams.setdefault(sid, {"headers": None, "data": b"", "ended": False, "reset": None,
                                             "t_head": None})

    def flush(self):
        out = self.c.data_to_send()
        if out:
            self.s.sendall(out)

    def request(self, sid, path, body=None, end=False, extra=()):
        self.st(sid)
        self.c.send_headers(sid, h2_head(path, extra), end_stream=end and body is None)
        if body is not None:
            self.c.send_data(sid, body, end_stream=end)
        self.flush()

    def send(self, sid, data, end=False):
        """Sends DATA unless the stream is already over; returns False then."""
        st = self.st(sid)
        if st["reset"] is not None or st["ended"]:
            return False
        try:
            self.c.send_data(sid, data, end_stream=end)
        except h2.exceptions.StreamClosedError:
            return False
        self.flush()
        return True

    def pump(self, seconds):
        """Reads and dispatches events for up to `seconds`."""
        end = time.monotonic() + seconds
        while not self.closed:
            left = end - time.monotonic()
            if left <= 0:
                return
            self.s.settimeout(min(left, 0.1))
            try:
                data = self.s.recv(65536)
            except socket.timeout:
                continue
            if not data:
                self.closed = True
                return
            for ev in self.c.receive_data(data):
                sid = getattr(ev, "stream_id", None)
                if isinstance(ev, h2.events.ResponseReceived):
                    self.st(sid)["headers"] = dict(ev.headers)
                    self.st(sid)["t_head"] = time.monotonic()
                elif isinstance(ev, h2.events.DataReceived):
                    self.st(sid)["data"] += ev.data
                    self.c.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.StreamEnded):
                    self.st(sid)["ended"] = True
                elif isinstance(ev, h2.events.StreamReset):
                    self.st(sid)["reset"] = ev.error_code
            self.flush()

    def wait(self, pred, timeout):
        deadline = time.monotonic() + timeout
        while not pred() and time.monotonic() < deadline and not self.closed:
            self.pump(0.1)
        return pred()

    def status(self, sid):
        h = self.st(sid)["headers"]
        return int(h[b":status"]) if h else None

    def close(self):
        self.s.close()


def problem(h, sid, status):
    """Asserts stream `sid` of H2 client `h` got a problem+json `status`;
    returns the document."""
    st = h.st(sid)
    assert h.status(sid) == status, st
    assert st["headers"][b"content-type"] == b"application/problem+json", st
    doc = json.loads(st["data"])
    assert doc["status"] == status, doc
    return doc


# ---------------------------------------------------------------------------
# Upstream
# ---------------------------------------------------------------------------

def ok_length(rec):
    """Default H2Upstream answer: 200 with body b"ok <body length>"."""
    out = b"ok %d" % len(rec["body"])
    return [(":status", "200"), ("content-length", str(len(out)))], out


class H2Upstream:
    """A tiny h2c server. Every complete request is recorded in `.done` as
    {"headers": [(name, value)], "body": bytearray, "trailers": [(name,
    value)] or None, "trailers_ended": bool, "data_end": bool} (str names and
    values; data_end: the last DATA frame carried END_STREAM) and answered
    with `respond(record) -> (response headers, body)`, the body sent
    within the flow-control windows."""

    def __init__(self, respond=ok_length):
        self.respond = respond
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.done = []
        self.lock = threading.Lock()
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def close(self):
        self.sock.close()

    def accept_loop(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        c.sendall(conn.data_to_send())
        reqs = {}
        while True:
            try:
                data = c.recv(65536)
            except OSError:
                return
            if not data:
                return
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    reqs[ev.stream_id] = {"headers": [(k.decode(), v.decode()) for k, v in ev.headers],
                                          "body": bytearray(), "trailers": None, "trailers_ended": False,
                                          "data_end": False}
                elif isinstance(ev, h2.events.DataReceived):
                    reqs[ev.stream_id]["body"] += ev.data
                    reqs[ev.stream_id]["data_end"] = ev.stream_ended is not None
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.TrailersReceived):
                    r = reqs[ev.stream_id]
                    r["trailers"] = [(k.decode(), v.decode()) for k, v in ev.headers]
                    r["trailers_ended"] = ev.stream_ended is not None
                elif isinstance(ev, h2.events.StreamEnded):
                    r = reqs.pop(ev.stream_id)
                    with self.lock:
                        self.done.append(r)
                    headers, out = self.respond(r)
                    conn.send_headers(ev.stream_id, headers)
                    self.send_body(conn, c, ev.stream_id, out)
            c.sendall(conn.data_to_send())

    def send_body(self, conn, c, sid, out):
        """Sends `out` on stream `sid` with END_STREAM, waiting for window
        updates when the flow-control window is exhausted."""
        if not out:
            conn.end_stream(sid)
        while out:
            n = min(len(out), conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            if n <= 0:
                c.sendall(conn.data_to_send())
                data = c.recv(65536)
                if not data:
                    return
                conn.receive_data(data)
                continue
            conn.send_data(sid, out[:n], end_stream=(n == len(out)))
            out = out[n:]
        c.sendall(conn.data_to_send())


# ---------------------------------------------------------------------------
# gRPC (grpcio with raw bytes)
# ---------------------------------------------------------------------------

def ident(b):
    """Identity (de)serialiser: messages are raw bytes."""
    return b


def grpc_method(ch, kind, name):
    """The callable for /test.Svc/`name` on channel `ch`; `kind` is the
    channel method (unary_unary, unary_stream, stream_unary, stream_stream)."""
    return getattr(ch, kind)("/test.Svc/" + name, request_serializer=ident, response_deserializer=ident)


def grpc_unary_echo(req, ctx):
    """Unary handler: answers b"echo:" + request, with initial metadata
    x-initial (from the client's x-client) and trailing x-trailing: t-ok."""
    md = dict(ctx.invocation_metadata())
    ctx.send_initial_metadata((("x-initial", "i-" + md.get("x-client", "")),))
    ctx.set_trailing_metadata((("x-trailing", "t-ok"),))
    return b"echo:" + req
