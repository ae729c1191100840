"""direct_response body templates (issue 11): {{param.NAME}},
{{request_id}}, {{header.NAME}}, {{method}}, {{path}}, escaped for the
declared Content-Type (JSON strings, HTML/XML, none for text/plain) with
the placements that escaping cannot protect refused at load time, and the
injection attempts a reflected header makes."""

import json
import subprocess

from conftest import BIN, free_port, sanitizer_env, to_yaml
from upstreams import request

RID = {"request_id": {"trust_incoming": True}}


def start(portico, body, ctype, path="/users/{id}", extra_headers=None):
    headers = {"Content-Type": ctype} if ctype else {}
    headers.update(extra_headers or {})
    return portico({"plugins": [RID], "routes": [{"name": "t", "match": {"path": path}, "plugins": [
        {"direct_response": {"status": 200, "headers": headers, "body": body, "template": True}}]}]})


EVIL = '"},"admin":true,"x":"</script><script>alert(1)</script>\\u2028' + "'&"


def test_json_template(portico):
    p = start(portico, '{"id": "{{param.id}}", "rid": "{{ request_id }}", "ua": "{{header.X-Client}}", '
                       '"m": "{{method}}", "p": "{{path}}", "missing": "{{header.X-None}}"}',
              "application/json")
    r = request(p.port, "GET", "/users/42", headers={"X-Request-Id": "req-1", "X-Client": EVIL})
    assert r.status == 200, r
    assert r.header("X-Content-Type-Options") == "nosniff"
    doc = json.loads(r.body)  # still valid JSON: the value stayed inside its string
    assert doc == {"id": "42", "rid": "req-1", "ua": EVIL, "m": "GET", "p": "/users/42", "missing": ""}
    assert set(doc) == {"id", "rid", "ua", "m", "p", "missing"}  # no injected key
    ua_raw = r.body.split(b'"ua": "')[1].split(b'", "m"')[0]
    for ch in (b"<", b">", b"&"):
        assert ch not in ua_raw, ua_raw  # HTML-significant bytes escaped too (JSON shown as HTML)
    assert b"\\u003c/script\\u003e" in ua_raw, ua_raw
    assert b"</script>" not in r.body


def test_json_template_non_utf8_and_controls(portico):
    p = start(portico, '{"ua": "{{header.X-Client}}"}', "application/problem+json")
    r = request(p.port, "GET", "/users/1", headers={"X-Client": "a\tb\xff\xc3\xa9\xe2\x80\xa8"})
    assert r.status == 200, r
    doc = json.loads(r.body.decode("utf-8"))
    assert doc["ua"] == "a\tb\ufffd\u00e9\u2028"
    assert b"\\u2028" in r.body and b"\\t" not in r.body and b"\\u0009" in r.body


def test_html_template(portico):
    p = start(portico, '<p title="{{header.X-Name}}">Hello {{header.X-Name}} ({{param.id}})</p>',
              "text/html; charset=utf-8")
    r = request(p.port, "GET", "/users/7", headers={"X-Name": '<img src=x onerror="alert(1)">\'&'})
    assert r.body == (b'<p title="&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&#39;&amp;">Hello '
                      b'&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&#39;&amp; (7)</p>')


def test_plain_template_unescaped_with_nosniff(portico):
    p = start(portico, "id={{param.id}} ua={{header.User-Agent}}.", "text/plain")
    r = request(p.port, "GET", "/users/9", headers={"User-Agent": "<b>x</b>"})
    assert r.body == b"id=9 ua=<b>x</b>."
    assert r.header("X-Content-Type-Options") == "nosniff"
    assert r.header("Content-Length") == str(len(r.body))


def test_nosniff_not_doubled(portico):
    p = start(portico, "{{method}}", "text/plain", extra_headers={"X-Content-Type-Options": "nosniff"})
    r = request(p.port, "GET", "/users/1")
    assert r.header_all("X-Content-Type-Options") == ["nosniff"]


def test_param_from_regex_route_and_encoded_bytes(portico):
    p = portico({"routes": [{"name": "t", "match": {"path_regex": "/files/(?<name>[^/]+)"}, "plugins": [
        {"direct_response": {"status": 200, "headers": {"Content-Type": "application/json"},
                             "body": '{"name":"{{param.name}}"}', "template": True}}]}]})
    r = request(p.port, "GET", "/files/a%22b%3Cc")
    assert json.loads(r.body) == {"name": "a%22b%3Cc"}  # normalized path bytes, still escaped


def test_without_template_braces_are_literal(portico):
    p = portico({"routes": [{"name": "t", "match": {"path": "/x"}, "plugins": [
        {"direct_response": {"status": 200, "body": "{{param.id}}"}}]}]})
    assert request(p.port, "GET", "/x").body == b"{{param.id}}"


def test_head_request(portico):
    p = start(portico, '{"id":"{{param.id}}"}', "application/json")
    r = request(p.port, "HEAD", "/users/5")
    assert r.status == 200 and r.body == b""


def check(tmp_path, dr):
    cfg = {"listen": ["127.0.0.1:%d" % free_port()],
           "routes": [{"name": "t", "match": {"path": "/u/{id}"}, "plugins": [{"direct_response": dr}]}]}
    path = tmp_path / "c.yaml"
    path.write_text(to_yaml(cfg) + "\n")
    res = subprocess.run([BIN, "check", "-c", str(path)], capture_output=True, text=True, timeout=30,
                         env=sanitizer_env())
    return res.returncode, res.stdout + res.stderr


def test_config_errors(tmp_path):
    def dr(body, ctype="application/json"):
        d = {"status": 200, "body": body, "template": True}
        if ctype:
            d["headers"] = {"Content-Type": ctype}
        return d
    for conf, want in [
        (dr('{"a": {{param.id}}}'), "inside a JSON string"),
        (dr('{"a": "x"} {{method}}'), "inside a JSON string"),
        (dr('{"a": "{{param.id}}'), "unterminated"),
        (dr('{"a": "{{param.id"}'), "unclosed"),
        (dr('{"a": "{{nope}}"}'), "unknown placeholder"),
        (dr('{"a": "{{param.1x}}"}'), "route parameter name"),
        (dr('{"a": "{{header.Authorization}}"}'), "credentials"),
        (dr('{"a": "{{header.cookie}}"}'), "credentials"),
        (dr('{"a": "{{header.bad name}}"}'), "invalid header name"),
        (dr("{{method}}", None), "need a Content-Type"),
        (dr("{{method}}", "application/octet-stream"), "need a Content-Type"),
        (dr("<script>var a = '{{method}}'</script>", "text/html"), "<script>"),
        (dr("<style>{{method}}</style>", "text/html"), "<script>"),
        (dr("<a href={{path}}>x</a>", "text/html"), "quoted attribute"),
        (dr("<p {{path}}>x</p>", "text/html"), "quoted attribute"),
        ({"status": 200, "body": "x", "template": "maybe"}, "boolean"),
    ]:
        rc, out = check(tmp_path, conf)
        assert rc != 0 and want in out, (conf, out)
        assert "c.yaml:" in out
    for ok in [dr('{"a": "\\"{{param.id}}\\"", "b": ["{{method}}"]}'),
               dr('<a href="/u/{{param.id}}">{{path}}</a><script>x()</script>{{method}}', "text/html"),
               dr("<r a='{{method}}'>{{path}}</r>", "application/atom+xml"),
               dr("no placeholders", None)]:
        rc, out = check(tmp_path, ok)
        assert rc == 0, (ok, out)
