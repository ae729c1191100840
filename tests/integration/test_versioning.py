"""API versioning (issue 11): the three route-selection patterns of
docs/transformation.md "Versioning" (path prefix, header — Accept-Version or
a media-type parameter —, query parameter), each checked against which
upstream answers, and the deprecation plugin (Deprecation RFC 9745, Sunset
RFC 8594, Link) with its configuration errors."""

import subprocess

from conftest import BIN, free_port, sanitizer_env, to_yaml
from upstreams import make_response, request

DEP = {"deprecated": "2025-06-30", "sunset": "2026-01-01T00:00:00Z",
       "link": "https://developer.example.com/v1-deprecation",
       "sunset_link": "https://developer.example.com/v1-sunset"}
DEP_VALUE = "@1751241600"                       # 2025-06-30T00:00:00Z
SUNSET_VALUE = "Thu, 01 Jan 2026 00:00:00 GMT"


def two_versions(upstream):
    return upstream(name="v1"), upstream(name="v2")


def cfg(v1, v2, routes):
    return {"upstreams": {"v1": {"targets": [v1.addr]}, "v2": {"targets": [v2.addr]}}, "routes": routes}


def served_by(p, target, headers=None):
    r = request(p.port, "GET", target, headers=headers)
    assert r.status == 200, r
    doc = r.json()
    return doc["server"], doc["target"], r


def test_by_path_prefix(portico, upstream):
    v1, v2 = two_versions(upstream)
    p = portico(cfg(v1, v2, [
        {"name": "v1", "match": {"path_prefix": "/v1"}, "upstream": "v1", "strip_prefix": True,
         "plugins": [{"deprecation": DEP}]},
        {"name": "v2", "match": {"path_prefix": "/v2"}, "upstream": "v2", "strip_prefix": True},
    ]))
    server, target, r = served_by(p, "/v1/orders/7?x=1")
    assert (server, target) == ("v1", "/orders/7?x=1")
    assert r.header("Deprecation") == DEP_VALUE
    assert r.header("Sunset") == SUNSET_VALUE
    assert r.header_all("Link") == ['<https://developer.example.com/v1-deprecation>; rel="deprecation"',
                                    '<https://developer.example.com/v1-sunset>; rel="sunset"']
    server, target, r = served_by(p, "/v2/orders/7")
    assert (server, target) == ("v2", "/orders/7")
    assert r.header("Deprecation") is None and r.header("Sunset") is None and r.header("Link") is None
    assert request(p.port, "GET", "/v3/orders").status == 404
    assert request(p.port, "GET", "/v10/orders").status == 404  # whole segments: /v1 is not /v10


def test_by_header(portico, upstream):
    v1, v2 = two_versions(upstream)
    media_v2 = "application/vnd.acme+json; version=2"
    p = portico(cfg(v1, v2, [
        # the versioned routes come first: same pattern, config order, first match wins
        {"name": "v2-header", "match": {"path_prefix": "/orders", "headers": {"Accept-Version": "2"}},
         "upstream": "v2"},
        {"name": "v2-media", "match": {"path_prefix": "/orders", "headers": {"Accept": media_v2}},
         "upstream": "v2"},
        {"name": "v1-default", "match": {"path_prefix": "/orders"}, "upstream": "v1",
         "plugins": [{"deprecation": {"deprecated": "@1751241600"}}]},
    ]))
    assert served_by(p, "/orders/1", {"Accept-Version": "2"})[0] == "v2"
    assert served_by(p, "/orders/1", {"Accept": media_v2})[0] == "v2"
    server, _, r = served_by(p, "/orders/1")
    assert server == "v1" and r.header("Deprecation") == DEP_VALUE
    assert served_by(p, "/orders/1", {"Accept-Version": "1"})[0] == "v1"
    # exact values: another spelling of the media type falls back to the default
    assert served_by(p, "/orders/1", {"Accept": "application/vnd.acme+json;version=2"})[0] == "v1"
    assert served_by(p, "/orders/1", {"Accept-Version": "02"})[0] == "v1"


def test_by_query_parameter(portico, upstream):
    v1, v2 = two_versions(upstream)
    p = portico(cfg(v1, v2, [
        {"name": "v2", "match": {"path_prefix": "/orders", "query": {"api-version": "2"}}, "upstream": "v2"},
        {"name": "v1", "match": {"path_prefix": "/orders"}, "upstream": "v1"},
    ]))
    server, target, _ = served_by(p, "/orders?api-version=2&page=3")
    assert (server, target) == ("v2", "/orders?api-version=2&page=3")
    assert served_by(p, "/orders?page=3&api%2Dversion=%32")[0] == "v2"  # decoded names and values
    assert served_by(p, "/orders?api-version=1")[0] == "v1"
    assert served_by(p, "/orders")[0] == "v1"


def test_deprecation_replaces_upstream_fields_and_keeps_links(portico, upstream):
    up = upstream(lambda req: make_response(200, "OK", [("Deprecation", "@1"), ("Sunset", "x"),
                                                         ("Link", "</next>; rel=\"next\"")], b"ok"))
    p = portico({"upstreams": {"up": {"targets": [up.addr]}}, "routes": [
        {"name": "r", "match": {"path_prefix": "/"}, "upstream": "up", "plugins": [
            {"deprecation": {"deprecated": "2025-06-30T02:00:00+02:00", "sunset": "2026-01-01",
                             "link": "/docs/deprecations"}}]}]})
    r = request(p.port, "GET", "/")
    assert r.header_all("Deprecation") == [DEP_VALUE]
    assert r.header_all("Sunset") == [SUNSET_VALUE]
    assert r.header_all("Link") == ['</next>; rel="next"', '</docs/deprecations>; rel="deprecation"']


def test_deprecation_on_local_answers(portico):
    p = portico({"routes": [{"name": "r", "match": {"path_prefix": "/"}, "plugins": [
        {"deprecation": {"sunset": "@1767225600"}},
        {"direct_response": {"status": 410, "body": "gone"}}]}]})
    r = request(p.port, "GET", "/")
    assert r.status == 410 and r.header("Sunset") == SUNSET_VALUE and r.header("Deprecation") is None


def check(tmp_path, conf):
    c = {"listen": ["127.0.0.1:%d" % free_port()], "routes": [
        {"name": "r", "match": {"path_prefix": "/"}, "plugins": [
            {"deprecation": conf}, {"direct_response": {"status": 200}}]}]}
    path = tmp_path / "c.yaml"
    path.write_text(to_yaml(c) + "\n")
    res = subprocess.run([BIN, "check", "-c", str(path)], capture_output=True, text=True, timeout=30,
                         env=sanitizer_env())
    return res.returncode, res.stdout + res.stderr


def test_deprecation_config_errors(tmp_path):
    for conf, want in [
        ({}, "set 'deprecated'"),
        ({"deprecated": "2025-02-30"}, "must be a date"),
        ({"deprecated": "2025-13-01"}, "must be a date"),
        ({"deprecated": "30/06/2025"}, "must be a date"),
        ({"deprecated": "2025-06-30T25:00:00Z"}, "must be a date"),
        ({"deprecated": "2025-06-30T12:00:00"}, "must be a date"),   # no zone: ambiguous
        ({"deprecated": "@-5"}, "must be a date"),
        ({"deprecated": "@12abc"}, "must be a date"),
        ({"deprecated": "2026-01-02", "sunset": "2026-01-01"}, "earlier"),
        ({"deprecated": "2025-01-01", "link": "javascript:alert(1)"}, "'link'"),
        ({"deprecated": "2025-01-01", "link": "https://x.test/a b"}, "'link'"),
        ({"deprecated": "2025-01-01", "link": "https://x.test/>; rel=x"}, "'link'"),
        ({"deprecated": "2025-01-01", "link": "//evil.test/x"}, "'link'"),
        ({"deprecated": "2025-01-01", "sunset_link": "/s"}, "needs 'sunset'"),
        ({"deprecated": "2025-01-01", "when": 1}, "when"),
    ]:
        rc, out = check(tmp_path, conf)
        assert rc != 0 and want in out, (conf, out)
        assert "c.yaml:" in out, out
    assert check(tmp_path, {"deprecated": "2024-02-29T23:59:59.5Z", "sunset": "2030-12-31"})[0] == 0
