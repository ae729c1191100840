"""Body transformation plugins against the real binary: `json_transform`
(request bodies reach the echo upstream transformed; scripted upstreams'
JSON responses reach the client transformed with an exact Content-Length
and a weakened ETag; non-JSON and encoded bodies pass untouched; 413 / 400
/ 502 problem+json over max_body and for invalid JSON) and `xml_json`
(XML responses become JSON, JSON requests become XML, XXE / billion laughs
/ DOCTYPE refused). The attack battery: deep nesting, huge numbers,
invalid UTF-8, duplicate keys, 10 MB bodies over the bound, an upstream
dying mid-body while the head is held (502, not a cut response), CDATA,
comments and processing instructions.
"""
import gzip
import json

import pytest

from conftest import simple_config
from upstreams import Client, CLOSE, build_request, chunked, make_response, problem_check, request

JSON = [("Content-Type", "application/json")]
XML = [("Content-Type", "application/xml")]


class Routes:
    """Canned upstream responses by path: (status, headers, body, framing);
    framing "length", "chunked", or "truncated" (a Content-Length the body
    never reaches, then close)."""

    def __init__(self):
        self.routes = {}

    def add(self, path, status=200, headers=(), body=b"", framing="length"):
        if isinstance(body, str):
            body = body.encode()
        self.routes[path] = (status, list(headers), body, framing)

    def __call__(self, req):
        status, headers, body, framing = self.routes.get(req.path, (404, [], b"no such route", "length"))
        if req.method == "HEAD":
            return make_response(status, "X", headers + [("Content-Length", str(len(body)))], b"",
                                 content_length=False)
        if framing == "chunked":
            head = make_response(status, "X", headers + [("Transfer-Encoding", "chunked")], b"",
                                 content_length=False)
            return head + chunked(body, chunk=4096)
        if framing == "truncated":
            head = make_response(status, "X", headers + [("Content-Length", str(len(body) + 100))], b"",
                                 content_length=False)
            return [head + body, CLOSE]
        return make_response(status, "X", headers, body)


@pytest.fixture
def routes(upstream):
    r = Routes()
    r.up = upstream(r)
    return r


def jt_config(addr, conf, extra_plugins=(), **kw):
    return simple_config(addr, plugins=[{"json_transform": conf}] + list(extra_plugins), **kw)


RESPONSE_OPS = {"response": [
    {"remove": "internal"},
    {"rename": {"from": "user.fullName", "to": "full_name"}},
    {"move": {"from": "data.items", "to": "items"}},
    {"add": {"path": "meta.via", "value": "portico"}},
    {"remove": "items[*].secret"},
]}

UPSTREAM_DOC = {"internal": {"db": "x"}, "user": {"fullName": "Ann", "id": 7},
                "data": {"items": [{"id": 1, "secret": "s1"}, {"id": 2, "secret": "s2"}], "total": 2}}
EXPECTED_DOC = {"user": {"id": 7, "full_name": "Ann"}, "data": {"total": 2},
                "items": [{"id": 1}, {"id": 2}], "meta": {"via": "portico"}}


def body_of(obj):
    return json.dumps(obj).encode()


# ---------------------------------------------------------------------------
# json_transform: responses
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_response_transformed_with_exact_length_and_weak_etag(portico, routes, framing):
    routes.add("/doc", headers=JSON + [("ETag", '"v1"'), ("Accept-Ranges", "bytes")], body=body_of(UPSTREAM_DOC),
               framing=framing)
    p = portico(jt_config(routes.up.addr, RESPONSE_OPS))
    r = request(p.port, "GET", "/doc")
    assert r.status == 200
    assert json.loads(r.body) == EXPECTED_DOC
    # the held head carries the transformed body's exact length
    assert r.framing == "length" and r.header("Content-Length") == str(len(r.body))
    assert r.header("ETag") == 'W/"v1"'
    assert r.header("Accept-Ranges") is None
    assert r.header("Content-Type") == "application/json"


def test_response_plus_json_type_and_parameters(portico, routes):
    routes.add("/p", headers=[("Content-Type", "application/vnd.api+json; charset=utf-8")],
               body=body_of({"internal": 1, "a": 2}))
    p = portico(jt_config(routes.up.addr, RESPONSE_OPS))
    assert json.loads(request(p.port, "GET", "/p").body) == {"a": 2, "meta": {"via": "portico"}}


@pytest.mark.parametrize("headers", [
    [("Content-Type", "text/plain")],
    [("Content-Type", "application/jsonx")],
    [],
    JSON + [("Content-Encoding", "gzip, gzip")],   # stacked codings are not undone
    JSON + [("Content-Encoding", "compress")],     # nor unknown ones
])
def test_non_json_or_encoded_responses_pass_untouched(portico, routes, headers):
    raw = b'{"internal": 1,   "kept": "exactly as sent"}'
    if any("gzip" in v for _, v in headers):
        raw = gzip.compress(gzip.compress(raw))
    routes.add("/t", headers=headers + [("ETag", '"e"')], body=raw, framing="chunked")
    p = portico(jt_config(routes.up.addr, RESPONSE_OPS))
    r = request(p.port, "GET", "/t")
    assert r.status == 200
    assert r.body == raw
    assert r.header("ETag") == '"e"'  # not a changed representation


def test_head_and_bodiless_responses_are_not_held(portico, routes):
    routes.add("/h", headers=JSON, body=body_of(UPSTREAM_DOC))
    routes.add("/n", status=204, headers=JSON)
    p = portico(jt_config(routes.up.addr, RESPONSE_OPS))
    r = request(p.port, "HEAD", "/h")
    assert r.status == 200 and r.body == b""
    r = request(p.port, "GET", "/n")
    assert r.status == 204 and r.body == b""


def test_response_over_max_body_is_502(portico, routes):
    big = b'{"a":"' + b"x" * (10 << 20) + b'"}'  # 10 MB
    routes.add("/len", headers=JSON, body=big)
    routes.add("/chunked", headers=JSON, body=big, framing="chunked")
    routes.add("/small", headers=JSON, body=b'{"a":1}')
    p = portico(jt_config(routes.up.addr, dict(RESPONSE_OPS, max_body="64k")))
    for path in ("/len", "/chunked"):
        with Client(p.port, timeout=30) as c:
            r = c.request("GET", path)
            doc = problem_check(r, 502)
            assert "json_transform.max_body (65536 bytes)" in doc["detail"]
    # the route still works
    assert json.loads(request(p.port, "GET", "/small").body) == {"a": 1, "meta": {"via": "portico"}}


@pytest.mark.parametrize("body,reason", [
    (b'{"a":1,"a":2}', "duplicate"),
    (b'{"a":', "invalid JSON"),
    (b'{"a":"\xff"}', "invalid JSON"),
    (b'{"n":123456789012345678901234567890}', "too big integer"),
    (b"[" * 5000 + b"]" * 5000, "nesting deeper than 64"),
])
def test_invalid_upstream_json_is_502(portico, routes, body, reason):
    routes.add("/bad", headers=JSON, body=body)
    p = portico(jt_config(routes.up.addr, RESPONSE_OPS))
    doc = problem_check(request(p.port, "GET", "/bad"), 502)
    assert reason in doc["detail"]


def test_upstream_dying_mid_body_gives_502_not_a_cut_response(portico, routes):
    routes.add("/cut", headers=JSON, body=b'{"a": [1, 2, 3', framing="truncated")
    p = portico(jt_config(routes.up.addr, RESPONSE_OPS))
    r = request(p.port, "GET", "/cut")
    problem_check(r, 502)


def test_transform_then_compress(portico, routes):
    routes.add("/doc", headers=JSON, body=body_of(UPSTREAM_DOC) * 1 + b" " * 2000)
    p = portico(jt_config(routes.up.addr, RESPONSE_OPS, extra_plugins=[{"compression": {"min_size": 10}}]))
    r = request(p.port, "GET", "/doc", [("Accept-Encoding", "gzip")])
    assert r.status == 200 and r.header("Content-Encoding") == "gzip"
    assert json.loads(gzip.decompress(r.body)) == EXPECTED_DOC


# ---------------------------------------------------------------------------
# json_transform: requests
# ---------------------------------------------------------------------------

REQUEST_OPS = {"request": [
    {"remove": "password"},
    {"add": {"path": "source", "value": "portico"}},
    {"copy": {"from": "user.id", "to": "ids[-]"}},
]}


@pytest.mark.parametrize("chunked_body", [False, True])
def test_request_transformed_before_the_upstream(portico, echo, chunked_body):
    p = portico(jt_config(echo.addr, REQUEST_OPS))
    body = body_of({"user": {"id": 5}, "password": "hunter2", "ids": [1]})
    r = request(p.port, "POST", "/x", JSON + [("Content-MD5", "abc")], body, chunked_body=chunked_body)
    assert r.status == 200
    seen = r.json()
    assert json.loads(seen["body"]) == {"user": {"id": 5}, "ids": [1, 5], "source": "portico"}
    assert seen["body_len"] == len(seen["body"])
    names = {k.lower() for k, _ in seen["headers"]}
    assert "content-md5" not in names
    # the held request head carries the changed body's exact length, never chunked
    te = [v for k, v in seen["headers"] if k.lower() == "transfer-encoding"]
    cl = [v for k, v in seen["headers"] if k.lower() == "content-length"]
    assert te == [] and cl == [str(seen["body_len"])]


def test_request_not_json_passes_untouched(portico, echo):
    p = portico(jt_config(echo.addr, REQUEST_OPS))
    body = b'{"password": "kept", "x": 1}'
    r = request(p.port, "POST", "/x", [("Content-Type", "text/plain")], body)
    seen = r.json()
    assert seen["body"].encode("latin-1") == body
    assert ("Content-Length", str(len(body))) in [tuple(h) for h in seen["headers"]]


@pytest.mark.parametrize("chunked_body", [False, True])
def test_request_over_max_body_is_413(portico, echo, chunked_body):
    p = portico(jt_config(echo.addr, dict(REQUEST_OPS, max_body="1k")))
    big = b'{"a":"' + b"x" * (10 << 20) + b'"}'
    with Client(p.port, timeout=30) as c:
        try:
            c.send(build_request("POST", "/x", JSON, big, chunked_body=chunked_body))
        except (BrokenPipeError, ConnectionResetError):
            pass
        doc = problem_check(c.read_response(), 413)
        assert "json_transform.max_body (1024 bytes)" in doc["detail"]
    # the upstream was never contacted (the request head is held until the body passed)
    assert not echo.requests and echo.connections == 0


@pytest.mark.parametrize("body,reason", [
    (b'{"a":1,"a":2}', "duplicate"),
    (b'{"a":}', "invalid JSON"),
    (b'{"a":"\xc3\x28"}', "invalid JSON"),
    (b'[1e999]', "invalid JSON"),
    (b'{"a":' * 100 + b'1' + b'}' * 100, "nesting deeper than 64"),
])
def test_invalid_request_json_is_400(portico, echo, body, reason):
    p = portico(jt_config(echo.addr, REQUEST_OPS))
    doc = problem_check(request(p.port, "POST", "/x", JSON, body), 400)
    assert reason in doc["detail"]
    assert not echo.requests or all(r.body != body for r in echo.requests)


def test_config_errors_have_positions(portico, echo, tmp_path):
    import subprocess
    from conftest import BIN, to_yaml
    cfg = jt_config(echo.addr, {"response": [{"rename": {"from": "a[0]", "to": "b"}}]})
    path = tmp_path / "bad.yaml"
    path.write_text(to_yaml(cfg) + "\n")
    out = subprocess.run([BIN, "check", "-c", str(path)], capture_output=True, text=True)
    assert out.returncode != 0
    assert "bad.yaml:" in out.stderr and "rename.from must end with a key" in out.stderr


# ---------------------------------------------------------------------------
# xml_json
# ---------------------------------------------------------------------------

def xj_config(addr, conf, **kw):
    return simple_config(addr, plugins=[{"xml_json": conf}], **kw)


SOAP = (b'<?xml version="1.0"?>\n<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">'
        b'<soap:Body><order id="7"><item>a</item><item>b</item><note><![CDATA[<b>&</b>]]></note>'
        b'<!-- comment --><?pi x?></order></soap:Body></soap:Envelope>')


def test_xml_response_becomes_json(portico, routes):
    routes.add("/soap", headers=[("Content-Type", "text/xml; charset=utf-8"), ("ETag", '"x"')], body=SOAP)
    p = portico(xj_config(routes.up.addr, {"response": "xml_to_json"}))
    r = request(p.port, "GET", "/soap")
    assert r.status == 200
    assert r.header("Content-Type") == "application/json"
    assert r.header("Content-Length") == str(len(r.body))
    assert r.header("ETag") == 'W/"x"'
    assert r.json() == {"soap:Envelope": {
        "@xmlns:soap": "http://schemas.xmlsoap.org/soap/envelope/",
        "soap:Body": {"order": {"@id": "7", "item": ["a", "b"], "note": "<b>&</b>"}}}}


def test_configured_arrays(portico, routes):
    routes.add("/one", headers=XML, body=b"<list><item>only</item></list>")
    p = portico(xj_config(routes.up.addr, {"response": "xml_to_json", "arrays": ["list.item"]}))
    assert request(p.port, "GET", "/one").json() == {"list": {"item": ["only"]}}


@pytest.mark.parametrize("doc,reason", [
    (b'<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><foo>&xxe;</foo>', "DOCTYPE"),
    (b'<!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
     b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">'
     b'<!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;"><!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">]><l>&f;&f;&f;</l>',
     "DOCTYPE"),
    (b'<!DOCTYPE a SYSTEM "http://127.0.0.1:9/x.dtd"><a/>', "DOCTYPE"),
    (b"<a><b></a>", "not well-formed"),
    (b"<a>&undeclared;</a>", "not well-formed"),
    (b"<a>\xff</a>", "not well-formed"),
    (b"<e>" * 100 + b"</e>" * 100, "nesting deeper than 64"),
])
def test_unsafe_or_invalid_xml_response_is_502(portico, routes, doc, reason):
    routes.add("/x", headers=XML, body=doc)
    p = portico(xj_config(routes.up.addr, {"response": "xml_to_json"}))
    d = problem_check(request(p.port, "GET", "/x"), 502)
    assert reason in d["detail"]
    assert "root:" not in d["detail"]


def test_json_request_becomes_xml_for_the_upstream(portico, echo):
    p = portico(xj_config(echo.addr, {"request": "json_to_xml", "root": "GetPrice",
                                      "xml_content_type": "text/xml; charset=utf-8"}))
    r = request(p.port, "POST", "/soap", JSON, body_of({"@xmlns": "urn:shop", "item": ["apple", "pear"],
                                                         "qty": 2, "note": "<&>"}))
    seen = r.json()
    assert seen["body"] == ('<?xml version="1.0" encoding="UTF-8"?><GetPrice xmlns="urn:shop"><item>apple</item>'
                            '<item>pear</item><qty>2</qty><note>&lt;&amp;&gt;</note></GetPrice>')
    ct = [v for k, v in seen["headers"] if k.lower() == "content-type"]
    assert ct == ["text/xml; charset=utf-8"]
    assert [v for k, v in seen["headers"] if k.lower() == "content-length"] == [str(len(seen["body"]))]


def test_unmappable_or_invalid_json_request_is_400(portico, echo):
    p = portico(xj_config(echo.addr, {"request": "json_to_xml"}))
    d = problem_check(request(p.port, "POST", "/x", JSON, b'{"a":1,"b":2}'), 400)
    assert "exactly one member" in d["detail"]
    d = problem_check(request(p.port, "POST", "/x", JSON, b'{"a":1,"a":2}'), 400)
    assert "duplicate" in d["detail"]
    d = problem_check(request(p.port, "POST", "/x", JSON, b'{"1a":1}'), 400)
    assert "not a valid XML element name" in d["detail"]


def test_xml_request_with_doctype_is_400(portico, echo):
    p = portico(xj_config(echo.addr, {"request": "xml_to_json"}))
    body = b'<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><foo>&xxe;</foo>'
    d = problem_check(request(p.port, "POST", "/x", XML, body), 400)
    assert "DOCTYPE" in d["detail"]
    ok = request(p.port, "POST", "/x", XML, b"<foo a='1'>x</foo>")
    assert json.loads(ok.json()["body"]) == {"foo": {"@a": "1", "#text": "x"}}


def test_xml_over_max_body(portico, routes, echo):
    big = b"<a>" + b"x" * (10 << 20) + b"</a>"
    routes.add("/big", headers=XML, body=big, framing="chunked")
    p = portico(xj_config(routes.up.addr, {"response": "xml_to_json", "max_body": "100k"}))
    with Client(p.port, timeout=30) as c:
        d = problem_check(c.request("GET", "/big"), 502)
        assert "xml_json.max_body" in d["detail"]


# ---------------------------------------------------------------------------
# HTTP/2 clients
# ---------------------------------------------------------------------------

def test_h2_client_gets_transformed_body_with_length_and_errors(portico, routes):
    from h2util import H2
    routes.add("/doc", headers=JSON + [("ETag", '"v1"')], body=body_of(UPSTREAM_DOC), framing="chunked")
    routes.add("/bad", headers=JSON, body=b'{"a":1,"a":2}')
    routes.add("/soap", headers=XML, body=b"<r><a>1</a></r>")
    p = portico(simple_config(routes.up.addr, plugins=[{"json_transform": RESPONSE_OPS},
                                                       {"xml_json": {"response": "xml_to_json"}}]))
    h = H2(p.port)
    try:
        for sid, path in ((1, "/doc"), (3, "/bad"), (5, "/soap")):
            h.c.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", "t"), (":path", path)],
                             end_stream=True)
        h.flush()
        assert h.wait(lambda: all(h.st(s)["ended"] for s in (1, 3, 5)), 15)
        hd = h.st(1)["headers"]
        assert hd[b":status"] == b"200"
        assert json.loads(h.st(1)["data"]) == EXPECTED_DOC
        assert hd[b"content-length"] == str(len(h.st(1)["data"])).encode()
        assert hd[b"etag"] == b'W/"v1"'
        hb = h.st(3)["headers"]
        assert hb[b":status"] == b"502"
        assert hb[b"content-type"] == b"application/problem+json"
        assert "duplicate" in json.loads(h.st(3)["data"])["detail"]
        # xml_json converts, then json_transform (earlier in the pipeline) does not see it: response
        # body plugins run in pipeline order, and the converted body is JSON only after xml_json
        assert json.loads(h.st(5)["data"]) == {"r": {"a": "1"}}
        assert h.st(5)["headers"][b"content-type"] == b"application/json"
    finally:
        h.close()


def test_xml_converted_then_reshaped(portico, routes):
    routes.add("/soap", headers=XML, body=SOAP)
    p = portico(simple_config(routes.up.addr, plugins=[
        {"xml_json": {"response": "xml_to_json"}},
        {"json_transform": {"response": [
            {"move": {"from": "soap:Envelope.soap:Body.order", "to": "order"}},
            {"remove": "soap:Envelope"},
            {"rename": {"from": "order.@id", "to": "id"}}]}}]))
    r = request(p.port, "GET", "/soap")
    assert r.json() == {"order": {"item": ["a", "b"], "note": "<b>&</b>", "id": "7"}}
    assert r.header("Content-Length") == str(len(r.body))


def test_local_answers_are_not_transformed(portico, echo):
    """Portico's own responses (a direct_response, problem+json errors) are
    not the upstream's document: only upstream responses are transformed."""
    cfg = simple_config(echo.addr, plugins=[{"json_transform": RESPONSE_OPS}])
    cfg["routes"].insert(0, {"name": "local", "match": {"path_prefix": "/local"},
                             "plugins": [{"direct_response": {"status": 200,
                                                              "headers": {"Content-Type": "application/json"},
                                                              "body": '{"internal": 1, "a": 2}'}}]})
    p = portico(cfg)
    r = request(p.port, "GET", "/local")
    assert r.status == 200 and r.body == b'{"internal": 1, "a": 2}'
    d = problem_check(request(p.port, "DELETE", "/x", headers=[("Content-Length", "abc")]), 400)
    assert "meta" not in d
    # an upstream JSON response on the same configuration is transformed
    assert request(p.port, "GET", "/x").json()["meta"] == {"via": "portico"}


# ---------------------------------------------------------------------------
# Content codings: decoded, transformed, sent identity (or encoded again)
# ---------------------------------------------------------------------------

def encode(coding, data):
    import zlib
    if coding == "gzip":
        return gzip.compress(data)
    if coding == "deflate":
        return zlib.compress(data)
    if coding == "br":
        import brotli
        return brotli.compress(data)
    import zstandard
    return zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_encoded_json_response_is_decoded_and_transformed(portico, routes, coding):
    routes.add("/z", headers=JSON + [("Content-Encoding", coding), ("ETag", '"z"')],
               body=encode(coding, body_of(UPSTREAM_DOC)), framing="chunked")
    p = portico(jt_config(routes.up.addr, RESPONSE_OPS))
    r = request(p.port, "GET", "/z", [("Accept-Encoding", "gzip, deflate, br, zstd")])
    assert r.status == 200
    assert r.header("Content-Encoding") is None
    assert json.loads(r.body) == EXPECTED_DOC
    assert r.header("Content-Length") == str(len(r.body))
    assert r.header("ETag") == 'W/"z"'


def test_encoded_response_transformed_then_encoded_again(portico, routes):
    routes.add("/z", headers=JSON, body=encode("br", body_of(UPSTREAM_DOC)))
    routes.routes["/z"][1].append(("Content-Encoding", "br"))
    p = portico(jt_config(routes.up.addr, RESPONSE_OPS, extra_plugins=[{"compression": {"min_size": 10}}]))
    r = request(p.port, "GET", "/z", [("Accept-Encoding", "gzip")])
    assert r.header("Content-Encoding") == "gzip"
    assert json.loads(gzip.decompress(r.body)) == EXPECTED_DOC


def test_encoded_bombs_and_garbage_are_refused(portico, routes):
    routes.add("/bomb", headers=JSON + [("Content-Encoding", "gzip")],
               body=gzip.compress(b'{"a":"' + b"0" * (20 << 20) + b'"}'))
    routes.add("/garbage", headers=JSON + [("Content-Encoding", "gzip")], body=b"not gzip at all")
    p = portico(jt_config(routes.up.addr, RESPONSE_OPS))
    d = problem_check(request(p.port, "GET", "/bomb"), 502)
    assert "max_body" in d["detail"]
    d = problem_check(request(p.port, "GET", "/garbage"), 502)
    assert "not valid for its Content-Encoding (gzip)" in d["detail"]


def test_encoded_request_is_decoded_and_transformed(portico, echo):
    p = portico(jt_config(echo.addr, REQUEST_OPS))
    body = gzip.compress(body_of({"user": {"id": 5}, "password": "x"}))
    seen = request(p.port, "POST", "/x", JSON + [("Content-Encoding", "gzip")], body).json()
    assert json.loads(seen["body"]) == {"user": {"id": 5}, "source": "portico", "ids": [5]}
    assert "content-encoding" not in {k.lower() for k, _ in seen["headers"]}
    d = problem_check(request(p.port, "POST", "/x", JSON + [("Content-Encoding", "gzip")], b"garbage"), 400)
    assert "Content-Encoding" in d["detail"]


def test_encoded_xml_response_is_converted(portico, routes):
    routes.add("/x", headers=XML + [("Content-Encoding", "gzip")], body=gzip.compress(b"<r><a>1</a></r>"))
    p = portico(xj_config(routes.up.addr, {"response": "xml_to_json"}))
    r = request(p.port, "GET", "/x")
    assert r.header("Content-Encoding") is None and r.json() == {"r": {"a": "1"}}
