"""Helpers for Portico's black-box tests: fake upstream servers and a raw
HTTP/1.1 client.

Everything here runs in-process on 127.0.0.1 ephemeral ports, built on raw
sockets so that tests can assert the exact bytes exchanged.

Upstream servers
----------------
`Upstream(handler)` accepts connections in a thread and serves each
connection in its own thread. Every request it receives is parsed strictly
(request line, header lines, body framing by Content-Length or chunked) and
recorded as a `ServerRequest` holding the exact raw bytes. Requests that were
cut off before being complete are recorded in `.partial`. Several requests per
connection are served (keep-alive) and `.connections` counts accepted
connections, so tests can assert pooling.

The handler decides the answer: `handler(req) -> action`, where the action is
  * bytes: sent as-is, then the connection waits for the next request;
  * a list of steps, run in order: bytes (sent), a float/int (sleep seconds),
    CLOSE (close the connection), RESET (close with RST), HANG (never answer:
    keep the connection open until the server stops).
The default handler is `echo_handler`: "200 OK" with Content-Length and a
JSON echo of the method, target, headers and body digest.

Client
------
`Client(port)` is a raw connection; `.request(...)` sends a request and parses
the response (`Response`, including interim 1xx responses, trailers and the
framing used). `request(port, ...)` is the one-shot form.

Also here: `RawServer` (an upstream whose connections a test function serves
by hand), and small helpers many tests share (`wait_for`, `wait_reloaded`,
`recv_all`, `recv_head`, `rst_close`, `assert_echo`).
"""

import hashlib
import json
import socket
import struct
import threading
import time

CLOSE = "CLOSE"
RESET = "RESET"
HANG = "HANG"


class ProtocolError(Exception):
    pass


class PeerClosed(Exception):
    """The peer closed the connection; .data holds what was buffered."""

    def __init__(self, data=b""):
        super().__init__("connection closed by peer (%d bytes buffered)" % len(data))
        self.data = data


class ConnReader:
    """Buffered reads on a blocking socket (the socket's timeout applies)."""

    def __init__(self, sock, on_bytes=None):
        self.sock = sock
        self.buf = bytearray()
        self.eof = False
        self.on_bytes = on_bytes

    def fill(self):
        try:
            data = self.sock.recv(262144)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        if self.on_bytes:
            self.on_bytes(data)
        self.buf += data
        return True

    def read_until(self, delim, limit=1 << 20):
        start = 0
        while True:
            i = self.buf.find(delim, start)
            if i >= 0:
                end = i + len(delim)
                out = bytes(self.buf[:end])
                del self.buf[:end]
                return out
            start = max(0, len(self.buf) - len(delim) + 1)
            if len(self.buf) > limit:
                raise ProtocolError("no %r within %d bytes" % (delim, limit))
            if not self.fill():
                raise PeerClosed(bytes(self.buf))

    def read_exact(self, n):
        while len(self.buf) < n:
            if not self.fill():
                raise PeerClosed(bytes(self.buf))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_to_eof(self):
        while self.fill():
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out


def _parse_fields(lines, errors):
    """Parses header field lines (bytes without CRLF) into [(name, value)]."""
    fields = []
    for line in lines:
        if b"\n" in line or b"\r" in line:
            errors.append("bare CR/LF in field line %r" % line)
        if line[:1] in (b" ", b"\t"):
            errors.append("obs-fold line %r" % line)
            continue
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            errors.append("malformed field line %r" % line)
            continue
        fields.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    return fields


def _decode_chunked(reader, errors, limit=64 << 20):
    """Reads a chunked body strictly. Returns (decoded body, raw bytes, trailer fields)."""
    raw = bytearray()
    body = bytearray()
    while True:
        line = reader.read_until(b"\r\n", limit=4096)
        raw += line
        size_text = line[:-2].split(b";", 1)[0]
        if not size_text or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
            raise ProtocolError("bad chunk size line %r" % line)
        size = int(size_text, 16)
        if size == 0:
            break
        data = reader.read_exact(size + 2)
        raw += data
        if data[-2:] != b"\r\n":
            raise ProtocolError("chunk data not followed by CRLF")
        body += data[:-2]
        if len(body) > limit:
            raise ProtocolError("chunked body too large for the test server")
    trailer_lines = []
    while True:
        line = reader.read_until(b"\r\n", limit=65536)
        raw += line
        if line == b"\r\n":
            break
        trailer_lines.append(line[:-2])
    trailers = _parse_fields(trailer_lines, errors)
    return bytes(body), bytes(raw), trailers


def _get(fields, name):
    lname = name.lower()
    for n, v in fields:
        if n.lower() == lname:
            return v
    return None


def _get_all(fields, name):
    lname = name.lower()
    return [v for n, v in fields if n.lower() == lname]


class ServerRequest:
    """One request as an upstream received it."""

    def __init__(self):
        self.raw_head = b""
        self.raw_body = b""
        self.method = self.target = self.version = None
        self.headers = []          # [(name, value)] in received order
        self.body = b""
        self.framing = "none"      # none | length | chunked
        self.trailers = []
        self.errors = []           # strictness violations noticed while parsing
        self.conn_id = None
        self.received_at = None

    @property
    def raw(self):
        return self.raw_head + self.raw_body

    @property
    def request_line(self):
        return self.raw_head.split(b"\r\n", 1)[0].decode("latin-1")

    @property
    def path(self):
        return self.target.split("?", 1)[0]

    def header(self, name):
        return _get(self.headers, name)

    def header_all(self, name):
        return _get_all(self.headers, name)

    def has_header(self, name):
        return _get(self.headers, name) is not None

    def __repr__(self):
        return "<ServerRequest %s %s conn=%s %r>" % (self.method, self.target, self.conn_id, self.raw_head[:400])


def read_server_request(reader):
    """Reads one request from `reader`. Raises PeerClosed if the peer closed
    (with .data = partial bytes), ProtocolError on broken framing."""
    req = ServerRequest()
    head = reader.read_until(b"\r\n\r\n", limit=1 << 20)
    req.received_at = time.monotonic()
    req.raw_head = head
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise ProtocolError("bad request line %r" % lines[0])
    req.method, req.target, req.version = (p.decode("latin-1") for p in parts)
    req.headers = _parse_fields(lines[1:], req.errors)
    te = req.header_all("Transfer-Encoding")
    cl = req.header_all("Content-Length")
    if te and cl:
        req.errors.append("both Content-Length and Transfer-Encoding")
    if len(set(cl)) > 1:
        req.errors.append("several Content-Length values %r" % cl)
    if len(te) > 1:
        req.errors.append("several Transfer-Encoding fields %r" % te)
    if te:
        if [t.strip().lower() for t in te] != ["chunked"]:
            raise ProtocolError("unsupported Transfer-Encoding %r" % te)
        req.framing = "chunked"
        req.body, req.raw_body, req.trailers = _decode_chunked(reader, req.errors)
    elif cl:
        if not cl[0].isdigit():
            raise ProtocolError("bad Content-Length %r" % cl[0])
        n = int(cl[0])
        req.framing = "length"
        req.body = req.raw_body = reader.read_exact(n)
    return req


def echo_body(req, name="echo"):
    return json.dumps({
        "server": name,
        "method": req.method,
        "target": req.target,
        "path": req.path,
        "version": req.version,
        "headers": req.headers,
        "body_len": len(req.body),
        "body_sha256": hashlib.sha256(req.body).hexdigest(),
        "body": req.body.decode("latin-1") if len(req.body) <= 4096 else None,
        "conn_id": req.conn_id,
    }).encode()


def make_response(status=200, reason="OK", headers=(), body=b"", content_length=True):
    """Builds raw response bytes with Content-Length (unless told not to)."""
    if isinstance(body, str):
        body = body.encode()
    if isinstance(headers, dict):
        headers = list(headers.items())
    out = ["HTTP/1.1 %d %s" % (status, reason)]
    for n, v in headers:
        out.append("%s: %s" % (n, v))
    if content_length:
        out.append("Content-Length: %d" % len(body))
    return ("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + body


def chunked(body, chunk=65536, trailers=b""):
    """Encodes `body` with the chunked transfer coding (trailers: raw field lines)."""
    out = bytearray()
    for i in range(0, len(body), chunk):
        piece = body[i:i + chunk]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    out += b"0\r\n" + trailers + b"\r\n"
    return bytes(out)


def shutdown_all(socks):
    """Shuts down (both ways) and closes every socket in `socks`, ignoring errors."""
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            s.close()
        except OSError:
            pass


class Upstream:
    """A fake upstream (see the module docstring)."""

    def __init__(self, handler=None, name="echo"):
        self.name = name
        self.handler = handler or self.echo_handler
        self.requests = []
        self.partial = []        # (conn_id, bytes) of requests cut off or unparsable
        self.connections = 0
        self.bytes_received = 0
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._socks = []
        self._threads = []
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(128)
        self.port = self.lsock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port

    # -- handlers ---------------------------------------------------------
    def echo_handler(self, req):
        body = echo_body(req, self.name)
        if req.method == "HEAD":
            return make_response(200, "OK", [("Content-Type", "application/json"),
                                             ("Content-Length", str(len(body)))],
                                 content_length=False)
        return make_response(200, "OK", [("Content-Type", "application/json")], body)

    # -- lifecycle --------------------------------------------------------
    def start(self):
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        try:
            self.lsock.close()
        except OSError:
            pass
        with self._lock:
            socks = list(self._socks)
        shutdown_all(socks)

    def _accept_loop(self):
        self.lsock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                s, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                conn_id = self.connections
                self._socks.append(s)
                self._lock.notify_all()
            t = threading.Thread(target=self._serve, args=(s, conn_id), daemon=True)
            t.start()

    def _count(self, data):
        with self._lock:
            self.bytes_received += len(data)
            self._lock.notify_all()

    def _serve(self, s, conn_id):
        try:
            s.settimeout(60)
        except OSError:  # stop() closed it before this thread ran
            return
        reader = ConnReader(s, on_bytes=self._count)
        try:
            while not self._stop.is_set():
                try:
                    req = read_server_request(reader)
                except PeerClosed as e:
                    if e.data or reader.buf:
                        with self._lock:
                            self.partial.append((conn_id, e.data))
                            self._lock.notify_all()
                    return
                except (ProtocolError, socket.timeout, OSError) as e:
                    with self._lock:
                        self.partial.append((conn_id, repr(e).encode()))
                        self._lock.notify_all()
                    return
                req.conn_id = conn_id
                with self._lock:
                    self.requests.append(req)
                    self._lock.notify_all()
                action = self.handler(req)
                if not self._run(s, action):
                    return
                conn = (req.header("Connection") or "").lower()
                if "close" in conn or (req.version == "HTTP/1.0" and "keep-alive" not in conn):
                    return
        except OSError:
            return
        finally:
            try:
                s.close()
            except OSError:
                pass

    def _run(self, s, action):
        """Runs a handler action; returns False when the connection is done."""
        steps = action if isinstance(action, list) else [action]
        for step in steps:
            if isinstance(step, (bytes, bytearray)):
                s.sendall(step)
            elif isinstance(step, (int, float)):
                if self._stop.wait(step):
                    return False
            elif step == CLOSE:
                return False
            elif step == RESET:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                return False
            elif step == HANG:
                self._stop.wait()
                return False
            elif step is None:
                continue
            else:
                raise ValueError("unknown step %r" % (step,))
        return True

    # -- inspection -------------------------------------------------------
    def wait_requests(self, n, timeout=10):
        """Waits until at least n complete requests arrived; returns the list."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("upstream %s: expected %d requests, got %d (partial: %r)"
                                         % (self.name, n, len(self.requests), self.partial))
                self._lock.wait(left)
            return list(self.requests)

    def last(self):
        with self._lock:
            assert self.requests, "upstream %s received no request" % self.name
            return self.requests[-1]

    def reset(self):
        with self._lock:
            self.requests.clear()
            self.partial.clear()


# Aliases named after the brief's two kinds of helper server.
EchoServer = Upstream
ScriptedServer = Upstream


# ---------------------------------------------------------------------------
# Raw HTTP/1.1 client
# ---------------------------------------------------------------------------

class Response:
    def __init__(self):
        self.version = None
        self.status = None
        self.reason = None
        self.headers = []
        self.body = b""
        self.trailers = []
        self.framing = None     # none | length | chunked | close
        self.interim = []       # 1xx responses received before this one
        self.raw_head = b""

    def header(self, name):
        return _get(self.headers, name)

    def header_all(self, name):
        return _get_all(self.headers, name)

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return "<Response %s %r body=%r>" % (self.status, self.headers, self.body[:300])


def read_response(reader, method="GET"):
    """Reads one final response (collecting 1xx interim responses)."""
    interim = []
    while True:
        r = Response()
        head = reader.read_until(b"\r\n\r\n", limit=1 << 20)
        r.raw_head = head
        lines = head[:-4].split(b"\r\n")
        status_line = lines[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError("bad status line %r" % status_line)
        r.version, r.status = parts[0], int(parts[1])
        r.reason = parts[2] if len(parts) > 2 else ""
        errors = []
        r.headers = _parse_fields(lines[1:], errors)
        if errors:
            raise ProtocolError("bad response header fields: %r" % errors)
        if 100 <= r.status < 200 and r.status != 101:
            interim.append(r)
            continue
        r.interim = interim
        te = r.header_all("Transfer-Encoding")
        cl = r.header_all("Content-Length")
        if te and cl:
            raise ProtocolError("response has both Content-Length and Transfer-Encoding")
        if len(set(cl)) > 1:
            raise ProtocolError("response has several Content-Length values")
        if method == "HEAD" or r.status in (204, 304):
            r.framing = "none"
        elif te:
            if [t.strip().lower() for t in te] != ["chunked"]:
                raise ProtocolError("unexpected response Transfer-Encoding %r" % te)
            r.framing = "chunked"
            r.body, _, r.trailers = _decode_chunked(reader, errors, limit=256 << 20)
        elif cl:
            r.framing = "length"
            r.body = reader.read_exact(int(cl[0]))
        else:
            r.framing = "close"
            r.body = reader.read_to_eof()
        return r


def build_request(method="GET", target="/", headers=None, body=None, host="example.com",
                  version="HTTP/1.1", chunked_body=False):
    """Raw request bytes. `headers`: dict or [(name, value)]. Adds Host (unless
    host is None) and Content-Length for a body (unless chunked_body, which
    encodes the body as chunked, or the caller set framing headers)."""
    if headers is None:
        headers = []
    elif isinstance(headers, dict):
        headers = list(headers.items())
    else:
        headers = list(headers)
    names = {n.lower() for n, _ in headers}
    lines = ["%s %s %s" % (method, target, version)]
    if host is not None and "host" not in names:
        lines.append("Host: %s" % host)
    for n, v in headers:
        lines.append("%s: %s" % (n, v))
    if isinstance(body, str):
        body = body.encode()
    payload = b""
    if body is not None:
        if chunked_body:
            lines.append("Transfer-Encoding: chunked")
            payload = chunked(body, chunk=max(1, min(65536, len(body) or 1)))
        else:
            if "content-length" not in names and "transfer-encoding" not in names:
                lines.append("Content-Length: %d" % len(body))
            payload = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


class Client:
    """A raw client connection to 127.0.0.1:port."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = ConnReader(self.sock)

    def send(self, data):
        self.sock.sendall(data)

    def request(self, method="GET", target="/", headers=None, body=None, **kw):
        self.send(build_request(method, target, headers, body, **kw))
        return self.read_response(method)

    def read_response(self, method="GET"):
        return read_response(self.reader, method)

    def wait_closed(self, timeout=5):
        """True if the peer closes (FIN or RST) within `timeout` with no more
        data; False if it stays open. Raises if unexpected bytes arrive."""
        if self.reader.buf:
            raise AssertionError("unexpected bytes after the response: %r" % bytes(self.reader.buf[:200]))
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
        if data:
            raise AssertionError("unexpected bytes after the response: %r" % data[:200])
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def request(port, method="GET", target="/", headers=None, body=None, timeout=10, **kw):
    """One request on a fresh connection; returns the Response."""
    with Client(port, timeout=timeout) as c:
        return c.request(method, target, headers, body, **kw)


def problem_check(resp, status):
    """Asserts `resp` is a Portico problem+json error with `status`; returns the JSON."""
    assert resp.status == status, "expected %d, got %r" % (status, resp)
    ct = resp.header("Content-Type") or ""
    assert ct.split(";")[0].strip().lower() == "application/problem+json", "Content-Type %r" % ct
    doc = resp.json()
    for key in ("type", "title", "status", "detail"):
        assert key in doc, "problem+json lacks %r: %r" % (key, doc)
    assert doc["status"] == status, doc
    assert isinstance(doc["type"], str) and doc["type"], doc
    assert isinstance(doc["title"], str) and doc["title"], doc
    return doc


# Details of the 408 problems of the slow-body rules (timeouts.body, min_body_rate).
GAP_DETAIL = "the request body was not received in time"
RATE_DETAIL = "min_body_rate"


def assert_echo(resp, method, target, body):
    """Asserts `resp` is the default echo answer to `method target` with
    `body`; returns its JSON."""
    assert resp.status == 200, resp
    doc = resp.json()
    assert doc["method"] == method, doc
    assert doc["target"] == target, doc
    assert doc["body_len"] == len(body), (doc["body_len"], len(body))
    assert doc["body_sha256"] == hashlib.sha256(body).hexdigest(), doc
    return doc


# ---------------------------------------------------------------------------
# Small shared helpers
# ---------------------------------------------------------------------------

def wait_for(pred, timeout=10):
    """Polls pred() until it returns something true (returned) or `timeout`
    passes (None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    return None


def wait_reloaded(p, count=1, timeout=10):
    """Waits until Portico `p` logged "reloaded" at least `count` times."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and p.stderr().count("reloaded") < count:
        time.sleep(0.05)
    assert p.stderr().count("reloaded") >= count, p.logs()


def recv_all(s):
    """Reads from socket `s` until the peer closes; returns the bytes."""
    buf = b""
    while True:
        d = s.recv(65536)
        if not d:
            return buf
        buf += d


def recv_head(s):
    """Reads from socket `s` up to the end of a message head; returns (head
    bytes without the blank line, bytes received after it). Asserts the
    peer does not close before."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        assert d, "connection closed before the response head"
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


def rst_close(sock):
    """Closes with RST (SO_LINGER 0)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


# ---------------------------------------------------------------------------
# RawServer: connections served by a test function
# ---------------------------------------------------------------------------

class RawServer:
    """Listens on 127.0.0.1 and serves each accepted connection with
    fn(sock, n) in its own thread (n = 1-based connection number; a
    subclass may override handle(sock, n) instead). `timeout` is set on
    each connection (None: blocking). Exceptions of the types in `ignore`
    end the connection quietly; any other is recorded in `.errors` (as
    repr) for the test to inspect. close() stops accepting and shuts down
    every connection."""

    def __init__(self, fn=None, timeout=30, ignore=(), backlog=128):
        self.fn = fn
        self.conn_timeout = timeout
        self.ignore = tuple(ignore)
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(backlog)
        self.port = self.lsock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.connections = 0
        self.errors = []
        self.stop = threading.Event()
        self.socks = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def handle(self, s, n):
        self.fn(s, n)

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
                self.connections += 1
                n = self.connections
                self.socks.append(s)
            threading.Thread(target=self._run, args=(s, n), daemon=True).start()

    def _run(self, s, n):
        s.settimeout(self.conn_timeout)
        try:
            self.handle(s, n)
        except self.ignore:
            pass
        except Exception as e:  # noqa: BLE001 - recorded for the test to inspect
            self.errors.append(repr(e))
        finally:
            try:
                s.close()
            except OSError:
                pass

    def close(self):
        self.stop.set()
        try:
            self.lsock.close()
        except OSError:
            pass
        with self.lock:
            socks = list(self.socks)
        shutdown_all(socks)
