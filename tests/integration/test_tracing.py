"""Distributed tracing (docs/observability.md "Tracing"): W3C Trace Context
accepted, generated and propagated to upstreams and sub-requests; spans
exported over OTLP/HTTP (protobuf or JSON) to a small receiver written here, with their
parent links; sampling (ratio and parent-based); invalid traceparent
spellings; the trace id in problem+json and the access log; an exporter
that is down and a queue that overflows (requests unaffected, counted)."""

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import free_port, simple_config
from otlp_proto import decode_export
from upstreams import make_response, problem_check, request, wait_for

INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_SPAN = "00f067aa0ba902b7"
TP_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$")


class OtlpReceiver:
    """An OTLP/HTTP collector: POST /v1/traces bodies, protobuf
    (otlp_proto.py decodes them) or JSON, are parsed and kept; `status` is
    what it answers."""

    def __init__(self, slow=False):
        self.batches = []  # OTLP/JSON shape, whichever encoding came
        self.raw = []
        self.paths = []
        self.content_types = []
        self.status = 200
        self.lock = threading.Lock()
        recv = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                if recv.slow:  # small reads with pauses: the sender's writes come back partial
                    body = b""
                    while len(body) < n:
                        body += self.rfile.read(min(4096, n - len(body)))
                        time.sleep(0.002)
                else:
                    body = self.rfile.read(n)
                with recv.lock:
                    recv.paths.append(self.path)
                    ctype = self.headers.get("Content-Type")
                    recv.content_types.append(ctype)
                    recv.raw.append(body)
                    recv.batches.append(decode_export(body) if ctype == "application/x-protobuf"
                                        else json.loads(body))
                self.send_response(recv.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *a):
                pass

        self.slow = slow

        class Server(ThreadingHTTPServer):
            def server_bind(self):
                if slow:  # a small receive window
                    self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                super().server_bind()

        self.server = Server(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d/v1/traces" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def spans(self):
        out = []
        with self.lock:
            for b in self.batches:
                for rs in b["resourceSpans"]:
                    for ss in rs["scopeSpans"]:
                        out.extend(ss["spans"])
        return out

    def wait_spans(self, n, timeout=10):
        got = wait_for(lambda: len(self.spans()) >= n or None, timeout)
        assert got, "expected %d spans, got %r" % (n, self.spans())
        return self.spans()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def otlp():
    r = OtlpReceiver()
    yield r
    r.close()


def tracing(endpoint, **kw):
    exporter = {"endpoint": endpoint, "batch_delay": "50ms", "batch_size": 64}
    exporter.update(kw.pop("exporter", {}))
    t = {"sampling": 1, "exporter": exporter}
    t.update(kw)
    return t


def attrs(span):
    out = {}
    for a in span.get("attributes", []):
        v = a["value"]
        out[a["key"]] = int(v["intValue"]) if "intValue" in v else v["stringValue"]
    return out


def by_kind(spans, kind):
    return [s for s in spans if s["kind"] == kind]


def upstream_tp(up, i=-1):
    """(trace id, parent id, flags) of the traceparent the upstream got."""
    req = up.requests[i]
    vals = req.header_all("traceparent")
    assert len(vals) == 1, vals
    m = TP_RE.match(vals[0])
    assert m, vals[0]
    return m.group(1), m.group(2), m.group(3)


def incoming(flags="01"):
    return "00-%s-%s-%s" % (INCOMING_TRACE, INCOMING_SPAN, flags)


def admin_cfg(cfg):
    port = free_port()
    cfg["admin"] = {"listen": "127.0.0.1:%d" % port}
    return cfg, port


def metric(aport, name):
    r = request(aport, "GET", "/metrics")
    assert r.status == 200
    for ln in r.body.decode().splitlines():
        if ln.startswith(name + " "):
            return float(ln.split()[1])
    return None


# ----------------------------------------------------------- propagation + spans


@pytest.mark.parametrize("protocol", [None, "http/protobuf", "http/json"])
def test_spans_and_parent_links(portico, upstream, otlp, protocol):
    """The same spans whatever the encoding (protobuf by default)."""
    up = upstream()
    exporter = {"protocol": protocol} if protocol else {}
    cfg = simple_config(up.addr, route_extra={"match": {"path_prefix": "/api"}},
                        tracing=tracing(otlp.url, service_name="edge-gw", exporter=exporter))
    p = portico(cfg)
    r = request(p.port, "GET", "/api/users?x=1",
                headers={"traceparent": incoming(), "tracestate": "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
                         "User-Agent": "tracing-test/1"})
    assert r.status == 200
    trace, parent, flags = upstream_tp(up)
    assert trace == INCOMING_TRACE and flags == "01"
    assert up.last().header_all("tracestate") == ["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"]
    spans = otlp.wait_spans(2)
    assert otlp.paths[0] == "/v1/traces"
    assert otlp.content_types[0] == ("application/json" if protocol == "http/json" else "application/x-protobuf")
    res = otlp.batches[0]["resourceSpans"][0]["resource"]["attributes"]
    assert {"key": "service.name", "value": {"stringValue": "edge-gw"}} in res
    server, = by_kind(spans, 2)
    client, = by_kind(spans, 3)
    # the server span continues the caller's trace; the client span is its
    # child; the upstream's parent is the client span
    assert server["traceId"] == client["traceId"] == INCOMING_TRACE
    assert server["parentSpanId"] == INCOMING_SPAN
    assert client["parentSpanId"] == server["spanId"]
    assert parent == client["spanId"]
    assert server["name"] == "GET /api"
    a = attrs(server)
    assert a["http.request.method"] == "GET"
    assert a["url.path"] == "/api/users"
    assert a["url.scheme"] == "http"
    assert a["http.route"] == "/api"
    assert a["http.response.status_code"] == 200
    assert a["client.address"] == "127.0.0.1"
    assert a["network.protocol.version"] == "1.1"
    assert a["user_agent.original"] == "tracing-test/1"
    assert a["server.address"] == "example.com"
    assert "error.type" not in a and server["status"] == {}
    c = attrs(client)
    host, port = up.addr.split(":")
    assert c["server.address"] == host and c["server.port"] == int(port)
    assert c["http.response.status_code"] == 200
    assert "http.request.resend_count" not in c
    # unix nanoseconds, as strings, ordered
    now = time.time_ns()
    for s in (server, client):
        st, en = int(s["startTimeUnixNano"]), int(s["endTimeUnixNano"])
        assert now - 60 * 10**9 < st <= en <= now
    assert int(server["startTimeUnixNano"]) <= int(client["startTimeUnixNano"])


def test_new_trace_when_absent_and_ids_in_logs(portico, upstream, otlp):
    up = upstream()
    p = portico(simple_config(up.addr, tracing=tracing(otlp.url)))
    assert request(p.port, "GET", "/a", headers={"tracestate": "rojo=1"}).status == 200
    trace, parent, flags = upstream_tp(up)
    assert trace != INCOMING_TRACE and flags == "01"
    assert not up.last().has_header("tracestate")  # no valid traceparent: tracestate is not kept
    spans = otlp.wait_spans(2)
    server, = by_kind(spans, 2)
    assert "parentSpanId" not in server
    assert server["traceId"] == trace
    line = wait_for(lambda: [json.loads(ln) for ln in p.access_lines() if '"/a"' in ln])
    assert line and line[0]["trace_id"] == trace


def test_problem_json_carries_the_trace_id(portico, otlp):
    dead = "127.0.0.1:%d" % free_port()
    p = portico(simple_config(dead, tracing=tracing(otlp.url)))
    r = request(p.port, "GET", "/x", headers={"traceparent": incoming()})
    doc = problem_check(r, 502)
    assert doc["trace_id"] == INCOMING_TRACE
    spans = otlp.wait_spans(2)
    server, = by_kind(spans, 2)
    client, = by_kind(spans, 3)
    assert server["status"]["code"] == 2 and attrs(server)["error.type"] == "502"
    assert client["status"]["code"] == 2 and attrs(client)["error.type"] == "connect_error"
    # unrouted requests too
    p2 = portico(simple_config(dead, route_extra={"match": {"path_prefix": "/only"}}, tracing=tracing(otlp.url)))
    doc = problem_check(request(p2.port, "GET", "/elsewhere"), 404)
    assert re.match(r"^[0-9a-f]{32}$", doc["trace_id"])


def test_retries_are_separate_client_spans(portico, upstream, otlp):
    n = [0]
    lock = threading.Lock()

    def h(req):
        with lock:
            n[0] += 1
            k = n[0]
        if k == 1:
            return make_response(503, "Service Unavailable", [], b"no")
        return make_response(200, "OK", [], b"ok")

    a = upstream(h, name="a")
    b = upstream(h, name="b")
    cfg = simple_config([a.addr, b.addr], route_extra={"retries": {"attempts": 2, "backoff": {"base": "1ms",
                                                                                             "max": "2ms"}}},
                        tracing=tracing(otlp.url))
    p = portico(cfg)
    r = request(p.port, "GET", "/r", headers={"traceparent": incoming()})
    assert r.status == 200 and r.body == b"ok"
    spans = otlp.wait_spans(3)
    server, = by_kind(spans, 2)
    clients = sorted(by_kind(spans, 3), key=lambda s: int(s["startTimeUnixNano"]))
    assert len(clients) == 2
    assert all(c["parentSpanId"] == server["spanId"] for c in clients)
    assert clients[0]["spanId"] != clients[1]["spanId"]
    first, second = attrs(clients[0]), attrs(clients[1])
    assert first["http.response.status_code"] == 503 and clients[0]["status"]["code"] == 2
    assert second["http.response.status_code"] == 200 and second["http.request.resend_count"] == 1
    # each attempt's upstream saw its own span as parent
    sent = sorted([upstream_tp(a, 0), upstream_tp(b, 0)], key=lambda t: [c["spanId"] for c in clients].index(t[1]))
    assert [t[1] for t in sent] == [c["spanId"] for c in clients]
    assert all(t[0] == INCOMING_TRACE for t in sent)


def test_forward_auth_subrequest_carries_the_trace(portico, upstream, otlp):
    echo = upstream()
    auth = upstream(lambda req: make_response(200, "OK", [], b""), name="auth")
    cfg = simple_config(echo.addr, tracing=tracing(otlp.url))
    cfg["upstreams"]["auth"] = {"targets": [auth.addr]}
    cfg["plugins"] = [{"forward_auth": {"upstream": "auth", "path": "/verify"}}]
    p = portico(cfg)
    r = request(p.port, "GET", "/s", headers={"traceparent": incoming(), "tracestate": "k=v"})
    assert r.status == 200
    a_trace, a_parent, _ = upstream_tp(auth)
    e_trace, e_parent, _ = upstream_tp(echo)
    assert a_trace == e_trace == INCOMING_TRACE
    assert auth.last().header_all("tracestate") == ["k=v"]
    assert a_parent != e_parent
    spans = otlp.wait_spans(3)
    server, = by_kind(spans, 2)
    sub = [s for s in by_kind(spans, 3) if s["spanId"] == a_parent]
    assert len(sub) == 1, spans
    assert sub[0]["parentSpanId"] == server["spanId"]
    sa = attrs(sub[0])
    assert sa["portico.upstream"] == "auth" and sa["http.response.status_code"] == 200
    assert sa["url.path"] == "/verify"


# -------------------------------------------------------------------- sampling


def test_sampling_zero_exports_nothing_but_propagates(portico, upstream, otlp):
    up = upstream()
    p = portico(simple_config(up.addr, tracing=tracing(otlp.url, sampling=0)))
    for _ in range(5):
        assert request(p.port, "GET", "/z").status == 200
    trace, parent, flags = upstream_tp(up)
    assert flags == "00"
    assert len({upstream_tp(up, i)[0] for i in range(5)}) == 5  # a new trace each time
    # parent-based: an incoming sampled flag is honoured even at ratio 0
    request(p.port, "GET", "/sampled", headers={"traceparent": incoming("01")})
    assert upstream_tp(up)[2] == "01"
    spans = otlp.wait_spans(2)
    time.sleep(0.3)  # several batch delays: nothing else comes
    spans = otlp.spans()
    assert len(spans) == 2 and all(s["traceId"] == INCOMING_TRACE for s in spans)


def test_parent_based_follows_the_incoming_flag(portico, upstream, otlp):
    up = upstream()
    p = portico(simple_config(up.addr, tracing=tracing(otlp.url, sampling=1)))
    request(p.port, "GET", "/unsampled", headers={"traceparent": incoming("00")})
    trace, parent, flags = upstream_tp(up)
    assert (trace, flags) == (INCOMING_TRACE, "00")
    request(p.port, "GET", "/marker")  # sampled (ratio 1): arrives after the first would have
    spans = otlp.wait_spans(2)
    time.sleep(0.2)
    assert all(s["traceId"] != INCOMING_TRACE for s in otlp.spans())


def test_parent_based_off_uses_the_ratio(portico, upstream, otlp):
    up = upstream()
    p = portico(simple_config(up.addr, tracing=tracing(otlp.url, sampling=1, parent_based=False)))
    request(p.port, "GET", "/x", headers={"traceparent": incoming("00")})
    assert upstream_tp(up)[2] == "01"
    spans = otlp.wait_spans(2)
    assert all(s["traceId"] == INCOMING_TRACE for s in spans)


# --------------------------------------------------------- invalid and trust


@pytest.mark.parametrize("tp", [
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",   # uppercase hex
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   # all-zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   # all-zero parent id
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   # version ff
    "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",    # short trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7a-01",  # long parent id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xx",  # extra field in version 00
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",      # no flags
    "garbage",
])
def test_invalid_traceparent_starts_a_new_trace(portico, upstream, otlp, tp):
    up = upstream()
    p = portico(simple_config(up.addr, tracing=tracing(otlp.url)))
    assert request(p.port, "GET", "/i", headers={"traceparent": tp, "tracestate": "rojo=1"}).status == 200
    trace, parent, flags = upstream_tp(up)
    assert trace != INCOMING_TRACE.lower() and trace != "0" * 32
    assert not up.last().has_header("tracestate")
    server, = by_kind(otlp.wait_spans(2), 2)
    assert "parentSpanId" not in server and server["traceId"] == trace


def test_two_traceparent_fields_are_invalid(portico, upstream, otlp):
    up = upstream()
    p = portico(simple_config(up.addr, tracing=tracing(otlp.url)))
    r = request(p.port, "GET", "/d", headers=[("traceparent", incoming()), ("traceparent", incoming())])
    assert r.status == 200
    assert upstream_tp(up)[0] != INCOMING_TRACE


def test_trust_incoming(portico, upstream, otlp):
    up = upstream()
    # none: always a new trace
    p = portico(simple_config(up.addr, tracing=tracing(otlp.url, trust_incoming="none")))
    request(p.port, "GET", "/n", headers={"traceparent": incoming(), "tracestate": "a=b"})
    assert upstream_tp(up)[0] != INCOMING_TRACE
    assert not up.last().has_header("tracestate")
    # trusted_proxies: only from a listed peer
    p = portico(simple_config(up.addr, trusted_proxies=["10.0.0.0/8"],
                              tracing=tracing(otlp.url, trust_incoming="trusted_proxies")))
    request(p.port, "GET", "/t", headers={"traceparent": incoming()})
    assert upstream_tp(up)[0] != INCOMING_TRACE
    p = portico(simple_config(up.addr, trusted_proxies=["127.0.0.1"],
                              tracing=tracing(otlp.url, trust_incoming="trusted_proxies")))
    request(p.port, "GET", "/t", headers={"traceparent": incoming()})
    assert upstream_tp(up)[0] == INCOMING_TRACE


def test_tracing_off_passes_headers_through(portico, upstream):
    up = upstream()
    p = portico(simple_config(up.addr))
    r = request(p.port, "GET", "/o", headers={"traceparent": incoming(), "tracestate": "a=b"})
    assert r.status == 200
    assert up.last().header_all("traceparent") == [incoming()]
    line = wait_for(lambda: [json.loads(ln) for ln in p.access_lines() if '"/o"' in ln])
    assert line[0]["trace_id"] == ""


# -------------------------------------------------------------------- overload


def test_exporter_down_requests_unaffected_failures_counted(portico, upstream):
    up = upstream()
    dead = "http://127.0.0.1:%d/v1/traces" % free_port()
    cfg, aport = admin_cfg(simple_config(up.addr, tracing=tracing(dead, exporter={"max_retries": 1,
                                                                                  "timeout": "500ms"})))
    p = portico(cfg)
    for i in range(10):
        assert request(p.port, "GET", "/d%d" % i).status == 200
    assert upstream_tp(up)[2] == "01"
    failed = wait_for(lambda: (metric(aport, "portico_tracing_spans_failed_total") or 0) >= 20 or None)
    assert failed, metric(aport, "portico_tracing_spans_failed_total")
    assert metric(aport, "portico_tracing_spans_exported_total") == 0


def test_collector_error_status_counts_failures(portico, upstream, otlp):
    otlp.status = 400  # not retried
    up = upstream()
    cfg, aport = admin_cfg(simple_config(up.addr, tracing=tracing(otlp.url)))
    p = portico(cfg)
    assert request(p.port, "GET", "/e").status == 200
    assert wait_for(lambda: metric(aport, "portico_tracing_spans_failed_total") == 2 or None)
    assert len(otlp.batches) == 1
    otlp.status = 200
    assert request(p.port, "GET", "/e").status == 200
    assert wait_for(lambda: metric(aport, "portico_tracing_spans_exported_total") == 2 or None)


def test_bounded_queue_drops_and_counts(portico, upstream, otlp):
    up = upstream()
    # the exporter waits 30 s for a batch of 1000: the queue of 5 fills up
    cfg, aport = admin_cfg(simple_config(up.addr, tracing=tracing(
        otlp.url, exporter={"queue_size": 5, "batch_size": 1000, "batch_delay": "30s"})))
    cfg["workers"] = 2
    p = portico(cfg)
    errors = []

    def client(k):
        for i in range(15):
            try:
                r = request(p.port, "GET", "/q%d-%d" % (k, i))
                if r.status != 200:
                    errors.append(r.status)
            except Exception as e:  # noqa: BLE001 - any failure is a test failure
                errors.append(e)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(up.requests) == 60
    # 60 requests x 2 spans, 5 queued: the rest dropped (once the workers
    # handed their last spans over, at most 100 ms after they finished)
    assert wait_for(lambda: metric(aport, "portico_tracing_spans_dropped_total") == 115 or None), \
        metric(aport, "portico_tracing_spans_dropped_total")
    assert otlp.batches == []
    # shutdown sends what is queued
    p.stop()
    assert len(otlp.spans()) == 5


def test_introspection_call_carries_the_trace(portico, upstream, otlp):
    """oauth2_introspection calls with pt_http_fetch (a call shared by the
    requests with one token): it carries pt_txn_traceparent, whose parent is
    the server span of the request that started it."""
    from test_introspection import ENV, IdP, active, bearer, oi_config
    echo = upstream()
    idp = IdP(upstream)
    idp.tokens["tok"] = active()
    cfg = oi_config(echo.addr, idp.addr)
    cfg["tracing"] = tracing(otlp.url)
    p = portico(cfg, env=ENV)
    h = dict(bearer("tok"), traceparent=incoming())
    assert request(p.port, "GET", "/orders", headers=h).status == 200
    trace, parent, flags = upstream_tp(idp.up)
    assert (trace, flags) == (INCOMING_TRACE, "01")
    spans = otlp.wait_spans(2)
    server, = by_kind(spans, 2)
    assert parent == server["spanId"]


def test_http2_request_is_traced(portico, upstream, otlp):
    from h2util import H2
    up = upstream()
    port = free_port()
    cfg = simple_config(up.addr, tracing=tracing(otlp.url), listen=[{"address": "127.0.0.1:%d" % port, "http2": True}])
    p = portico(cfg, port=port)
    h = H2(p.port)
    try:
        h.request(1, "/h2", end=True, extra=[("traceparent", incoming())])
        assert h.wait(lambda: h.st(1)["ended"], 5)
        assert h.status(1) == 200
    finally:
        h.close()
    assert upstream_tp(up)[0] == INCOMING_TRACE
    server, = by_kind(otlp.wait_spans(2), 2)
    assert attrs(server)["network.protocol.version"] == "2"
    assert server["parentSpanId"] == INCOMING_SPAN


def test_reload_turns_tracing_on_and_changes_sampling(portico, upstream, otlp):
    import signal
    from upstreams import wait_reloaded
    up = upstream()
    cfg = simple_config(up.addr)
    p = portico(cfg)
    request(p.port, "GET", "/before", headers={"traceparent": incoming()})
    assert up.last().header_all("traceparent") == [incoming()]  # off: untouched
    cfg["tracing"] = tracing(otlp.url, sampling=0, parent_based=False)
    p.write_config(cfg)
    p.signal(signal.SIGHUP)
    wait_reloaded(p, 1)
    request(p.port, "GET", "/off")
    assert upstream_tp(up)[2] == "00"
    cfg["tracing"] = tracing(otlp.url, sampling=1)
    p.write_config(cfg)
    p.signal(signal.SIGHUP)
    wait_reloaded(p, 2)
    request(p.port, "GET", "/on")
    assert upstream_tp(up)[2] == "01"
    spans = otlp.wait_spans(2)
    server, = by_kind(spans, 2)
    assert attrs(server)["url.path"] == "/on"


def test_collector_that_never_answers_does_not_hold_requests(portico, upstream):
    """A collector that accepts and never answers: each POST times out, the
    queue fills and drops; every request still completes at once."""
    import socket
    up = upstream()
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    try:
        url = "http://127.0.0.1:%d/v1/traces" % lsock.getsockname()[1]
        cfg, aport = admin_cfg(simple_config(up.addr, tracing=tracing(
            url, exporter={"timeout": "300ms", "max_retries": 0, "queue_size": 4, "batch_size": 2})))
        p = portico(cfg)
        for i in range(20):
            r = request(p.port, "GET", "/b%d" % i, timeout=5)
            assert r.status == 200
        assert wait_for(lambda: (metric(aport, "portico_tracing_spans_dropped_total") or 0) > 0 or None)
        assert wait_for(lambda: (metric(aport, "portico_tracing_spans_failed_total") or 0) > 0 or None)
        assert metric(aport, "portico_tracing_spans_exported_total") == 0
    finally:
        lsock.close()


def test_reload_switches_the_exporter_protocol(portico, upstream, otlp):
    """Spans recorded before a reload that changes exporter.protocol go out
    in their encoding, those after in the new one; every batch parses."""
    import signal
    from upstreams import wait_reloaded
    up = upstream()
    cfg = simple_config(up.addr, tracing=tracing(otlp.url, exporter={"protocol": "http/json"}))
    p = portico(cfg)
    assert request(p.port, "GET", "/json").status == 200
    otlp.wait_spans(2)
    cfg["tracing"] = tracing(otlp.url, exporter={"protocol": "http/protobuf"})
    p.write_config(cfg)
    p.signal(signal.SIGHUP)
    wait_reloaded(p, 1)
    assert request(p.port, "GET", "/proto").status == 200
    spans = otlp.wait_spans(4)
    assert set(otlp.content_types) == {"application/json", "application/x-protobuf"}
    paths = {attrs(s)["url.path"]: otlp.content_types[i]
             for i, b in enumerate(otlp.batches)
             for rs in b["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]
             if s["kind"] == 2}
    assert paths == {"/json": "application/json", "/proto": "application/x-protobuf"}
    assert len(spans) == 4


@pytest.mark.parametrize("protocol", ["http/protobuf", "http/json"])
def test_header_bytes_that_are_not_utf8_keep_the_batch_valid(portico, upstream, otlp, protocol):
    """A User-Agent with obs-text bytes (valid HTTP, not UTF-8) must not make
    the collector refuse the batch: protobuf strings must be UTF-8 (Python's
    decoder enforces it), so each invalid byte becomes U+FFFD; valid UTF-8
    passes unchanged."""
    up = upstream()
    p = portico(simple_config(up.addr, tracing=tracing(otlp.url, exporter={"protocol": protocol})))
    import socket
    for ua in (b"bad-\xff\xfe-agent", "caf\u00e9-\u2603".encode()):
        s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
        s.sendall(b"GET /ua HTTP/1.1\r\nHost: x\r\nUser-Agent: " + ua + b"\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
        s.close()
        assert data.startswith(b"HTTP/1.1 200")
    spans = otlp.wait_spans(4)
    uas = sorted(attrs(s)["user_agent.original"] for s in by_kind(spans, 2))
    if protocol == "http/protobuf":
        assert uas == sorted(["bad-\ufffd\ufffd-agent", "caf\u00e9-\u2603"])
    else:  # JSON: valid UTF-8 unchanged, invalid bytes escaped; both parse
        assert "caf\u00e9-\u2603" in uas
        bad, = [u for u in uas if u.startswith("bad-")]
        assert bad.endswith("-agent") and len(bad) == len("bad-XX-agent")


def test_spans_of_an_idle_worker_are_sent(portico, upstream, otlp):
    """A worker gathers spans before queueing them (up to 64): the spans of
    one request on an otherwise idle gateway still go out, after the
    worker's flush timer (100 ms, or batch_delay when shorter) and the
    exporter's batch_delay; the gateway is not stopped."""
    up = upstream()
    p = portico(simple_config(up.addr, tracing=tracing(otlp.url, exporter={"batch_delay": "200ms",
                                                                           "batch_size": 1000})))
    assert request(p.port, "GET", "/one").status == 200
    spans = otlp.wait_spans(2)
    assert [attrs(s)["url.path"] for s in by_kind(spans, 2)] == ["/one"]
    assert p.proc.poll() is None


def test_last_spans_go_out_at_shutdown(portico, upstream, otlp):
    """Spans still in the workers or the queue when the gateway stops are
    sent before it exits."""
    up = upstream()
    cfg = simple_config(up.addr, tracing=tracing(otlp.url, exporter={"batch_delay": "30s", "batch_size": 1000}))
    cfg["workers"] = 2
    p = portico(cfg)
    for i in range(8):
        assert request(p.port, "GET", "/s%d" % i).status == 200
    assert otlp.batches == []  # the exporter waits 30 s for 1000 spans
    p.stop()
    paths = sorted(attrs(s)["url.path"] for s in by_kind(otlp.spans(), 2))
    assert paths == sorted("/s%d" % i for i in range(8))
    assert len(otlp.spans()) == 16


@pytest.mark.parametrize("protocol", ["http/protobuf", "http/json"])
def test_large_batches_to_a_slow_collector_arrive_whole(portico, upstream, protocol):
    """A collector with a small receive window that reads slowly: the
    exporter's writes of a large batch (over 1 MB) come back partial, and
    every span still arrives, each batch parsing."""
    up = upstream()
    otlp = OtlpReceiver(slow=True)
    try:
        p = portico(simple_config(up.addr, tracing=tracing(
            otlp.url, exporter={"protocol": protocol, "batch_size": 2000, "batch_delay": "2s"})))
        long = "x" * 600
        s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        f = s.makefile("rb")
        for i in range(1000):  # one keep-alive connection: quick
            s.sendall(("GET /big/%d/%s HTTP/1.1\r\nHost: x\r\n\r\n" % (i, long)).encode())
            line = f.readline()
            assert line.startswith(b"HTTP/1.1 200"), line
            n = 0
            while True:
                h = f.readline()
                if h in (b"\r\n", b""):
                    break
                if h.lower().startswith(b"content-length:"):
                    n = int(h.split(b":")[1])
            f.read(n)
        s.close()
        spans = otlp.wait_spans(2000, timeout=60)
        assert len(spans) == 2000
        paths = {attrs(x)["url.path"] for x in by_kind(spans, 2)}
        assert paths == {"/big/%d/%s" % (i, long) for i in range(1000)}
        assert max(len(b) for b in otlp.raw) > 1000000  # far more than one write takes
    finally:
        otlp.close()
