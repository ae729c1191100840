"""Routing: priorities, prefixes, parameters and rewrite, hosts, methods,
header/query predicates, regex, 404/405, and path normalization (the router
and the upstream both see the normalized path)."""

import pytest

from upstreams import Client, problem_check, request


class Gateway:
    """Starts one named echo upstream per route, so a response tells which
    route matched (JSON "server") and what path the upstream received."""

    def __init__(self, portico, upstream, routes, **top):
        self.ups = {}
        cfg_ups = {}
        for r in routes:
            name = r["name"]
            if "upstream" not in r and "plugins" not in r:
                self.ups[name] = upstream(name=name)
                cfg_ups[name] = {"targets": [self.ups[name].addr]}
                r["upstream"] = name
        cfg = {"upstreams": cfg_ups, "routes": routes}
        cfg.update(top)
        self.p = portico(cfg)

    def get(self, target, method="GET", host="example.com", headers=None, body=None):
        return request(self.p.port, method, target, headers=headers, body=body, host=host)

    def route_of(self, target, **kw):
        """(route name, path+query the upstream received) or (status, None)."""
        r = self.get(target, **kw)
        if r.status != 200 or r.header("Content-Type") != "application/json":
            return r.status, None
        doc = r.json()
        return doc["server"], doc["target"]


@pytest.fixture
def gateway(portico, upstream):
    return lambda routes, **top: Gateway(portico, upstream, routes, **top)


def test_exact_beats_param_beats_prefix(gateway):
    # Listed in the "wrong" order on purpose: priority is by specificity, not config order.
    g = gateway([
        {"name": "prefix", "match": {"path_prefix": "/users"}},
        {"name": "param", "match": {"path": "/users/{id}"}, "rewrite": "/v2/users/{id}"},
        {"name": "exact", "match": {"path": "/users/me"}},
    ])
    assert g.route_of("/users/me") == ("exact", "/users/me")
    assert g.route_of("/users/42") == ("param", "/v2/users/42")
    assert g.route_of("/users/42?x=1&y") == ("param", "/v2/users/42?x=1&y")
    assert g.route_of("/users/42/extra") == ("prefix", "/users/42/extra")
    assert g.route_of("/users") == ("prefix", "/users")
    assert g.route_of("/users/") == ("prefix", "/users/")
    assert g.route_of("/usersx")[0] == 404


def test_longest_prefix_wins(gateway):
    g = gateway([
        {"name": "short", "match": {"path_prefix": "/api"}},
        {"name": "long", "match": {"path_prefix": "/api/v2"}},
        {"name": "root", "match": {"path_prefix": "/"}},
    ])
    assert g.route_of("/api/v2/x")[0] == "long"
    assert g.route_of("/api/v2")[0] == "long"
    assert g.route_of("/api/v3")[0] == "short"
    assert g.route_of("/api/v2x")[0] == "short"
    assert g.route_of("/other")[0] == "root"


def test_prefix_matches_on_segment_boundary(gateway):
    g = gateway([{"name": "api", "match": {"path_prefix": "/api"}}])
    assert g.route_of("/api")[0] == "api"
    assert g.route_of("/api/")[0] == "api"
    assert g.route_of("/api/x/y")[0] == "api"
    r = g.get("/apix")
    problem_check(r, 404)
    problem_check(g.get("/ap"), 404)


def test_param_matches_one_nonempty_segment(gateway):
    # encoded slashes are refused by default (test_path_rules.py); this route keeps them as data
    g = gateway([{"name": "param", "match": {"path": "/items/{id}/detail"}, "rewrite": "/i/{id}",
                  "path_rules": {"encoded_slash": "keep"}}])
    assert g.route_of("/items/abc/detail") == ("param", "/i/abc")
    assert g.route_of("/items/a%2Fb/detail") == ("param", "/i/a%2Fb")
    assert g.route_of("/items//detail")[0] == 404  # '//' collapses: /items/detail
    assert g.route_of("/items/a/b/detail")[0] == 404


def test_strip_prefix(gateway):
    g = gateway([{"name": "svc", "match": {"path_prefix": "/svc"}, "strip_prefix": True}])
    assert g.route_of("/svc/a/b") == ("svc", "/a/b")
    assert g.route_of("/svc/a?q=1") == ("svc", "/a?q=1")
    assert g.route_of("/svc") == ("svc", "/")
    assert g.route_of("/svc/") == ("svc", "/")
    assert g.route_of("/svcx")[0] == 404


def test_rewrite_with_several_params(gateway):
    g = gateway([{"name": "r", "match": {"path": "/orgs/{org}/repos/{repo}"},
                  "rewrite": "/internal/{repo}/of/{org}"}])
    assert g.route_of("/orgs/acme/repos/rocket?v=1") == ("r", "/internal/rocket/of/acme?v=1")


def test_hosts_exact_wildcard_none(gateway):
    g = gateway([
        {"name": "any", "match": {"path_prefix": "/h"}},
        {"name": "wild", "match": {"host": "*.example.com", "path_prefix": "/h"}},
        {"name": "exact", "match": {"host": "api.example.com", "path_prefix": "/h"}},
    ])
    assert g.route_of("/h", host="api.example.com")[0] == "exact"
    assert g.route_of("/h", host="api.example.com:8080")[0] == "exact"
    assert g.route_of("/h", host="API.Example.COM")[0] == "exact"
    assert g.route_of("/h", host="foo.example.com")[0] == "wild"
    assert g.route_of("/h", host="a.b.example.com")[0] == "wild"
    assert g.route_of("/h", host="example.com")[0] == "any"
    assert g.route_of("/h", host="other.org")[0] == "any"
    assert g.route_of("/h", host="xexample.com")[0] == "any"


def test_hosts_list_and_fallback_to_less_specific_group(gateway):
    g = gateway([
        {"name": "multi", "match": {"hosts": ["a.test", "b.test"], "path": "/only"}},
        {"name": "fallback", "match": {"path_prefix": "/"}},
    ])
    assert g.route_of("/only", host="a.test")[0] == "multi"
    assert g.route_of("/only", host="b.test")[0] == "multi"
    assert g.route_of("/only", host="c.test")[0] == "fallback"
    # host group a.test has no candidate for /other: falls back to the hostless routes
    assert g.route_of("/other", host="a.test")[0] == "fallback"


def test_host_only_route_no_match_404(gateway):
    g = gateway([{"name": "h", "match": {"host": "api.example.com", "path_prefix": "/"}}])
    assert g.route_of("/x", host="api.example.com")[0] == "h"
    problem_check(g.get("/x", host="www.example.com"), 404)


def test_methods_405_with_allow(gateway):
    g = gateway([{"name": "m", "match": {"path": "/m", "methods": ["GET", "POST"]}}])
    assert g.route_of("/m")[0] == "m"
    assert g.route_of("/m", method="POST", body=b"x")[0] == "m"
    r = g.get("/m", method="HEAD")
    assert r.status == 200 and r.body == b""
    r = g.get("/m", method="DELETE")
    problem_check(r, 405)
    allow = {m.strip() for m in (r.header("Allow") or "").split(",")}
    assert {"GET", "POST"} <= allow, r.header("Allow")
    assert "DELETE" not in allow
    problem_check(g.get("/other", method="DELETE"), 404)


def test_methods_union_over_routes_for_same_path(gateway):
    g = gateway([
        {"name": "reader", "match": {"path": "/doc", "methods": ["GET"]}},
        {"name": "writer", "match": {"path": "/doc", "methods": ["PUT"]}},
    ])
    assert g.route_of("/doc")[0] == "reader"
    assert g.route_of("/doc", method="PUT", body=b"x")[0] == "writer"
    r = g.get("/doc", method="POST", body=b"x")
    problem_check(r, 405)
    allow = {m.strip() for m in (r.header("Allow") or "").split(",")}
    assert {"GET", "PUT"} <= allow


def test_header_predicates(gateway):
    g = gateway([
        {"name": "v2", "match": {"path_prefix": "/hv", "headers": {"X-V": "2"}}},
        {"name": "present", "match": {"path_prefix": "/hv", "headers": {"X-P": None}}},
        {"name": "v1", "match": {"path_prefix": "/hv"}},
    ])
    assert g.route_of("/hv", headers={"X-V": "2"})[0] == "v2"
    assert g.route_of("/hv", headers={"x-v": "2"})[0] == "v2"
    assert g.route_of("/hv", headers={"X-V": "3"})[0] == "v1"
    assert g.route_of("/hv", headers={"X-V": "2x"})[0] == "v1"
    assert g.route_of("/hv")[0] == "v1"
    assert g.route_of("/hv", headers={"X-P": ""})[0] == "present"
    assert g.route_of("/hv", headers={"X-P": "anything"})[0] == "present"


def test_query_predicates(gateway):
    g = gateway([
        {"name": "debug", "match": {"path": "/q", "query": {"debug": "1"}}},
        {"name": "has_key", "match": {"path": "/q", "query": {"key": None}}},
        {"name": "plain", "match": {"path": "/q"}},
    ])
    assert g.route_of("/q?debug=1") == ("debug", "/q?debug=1")
    assert g.route_of("/q?x=2&debug=1")[0] == "debug"
    assert g.route_of("/q?debug=%31")[0] == "debug"
    assert g.route_of("/q?debug=0")[0] == "plain"
    assert g.route_of("/q?debug=10")[0] == "plain"
    assert g.route_of("/q?xdebug=1")[0] == "plain"
    assert g.route_of("/q")[0] == "plain"
    assert g.route_of("/q?key")[0] == "has_key"
    assert g.route_of("/q?key=")[0] == "has_key"


def test_regex_routes_anchored_and_last(gateway):
    g = gateway([
        {"name": "regex", "match": {"path_regex": "/r/[0-9]+"}},
        {"name": "named", "match": {"path_regex": "/n/(?<id>[a-z]+)"}, "rewrite": "/named/{id}"},
        {"name": "exact", "match": {"path": "/r/7"}},
    ])
    assert g.route_of("/r/123")[0] == "regex"
    assert g.route_of("/r/7")[0] == "exact"
    assert g.route_of("/r/12x")[0] == 404
    assert g.route_of("/x/r/12")[0] == 404
    assert g.route_of("/n/abc") == ("named", "/named/abc")


def test_no_route_404_problem_json(gateway):
    g = gateway([{"name": "only", "match": {"path": "/only"}}])
    doc = problem_check(g.get("/nothing/here"), 404)
    assert isinstance(doc["detail"], str)


def test_direct_route_without_upstream(gateway):
    g = gateway([{"name": "local", "match": {"path": "/ping"},
                  "plugins": [{"direct_response": {"status": 200, "body": "pong"}}]}])
    r = g.get("/ping")
    assert r.status == 200 and r.body == b"pong"


# ---------------------------------------------------------------------------
# normalization
# ---------------------------------------------------------------------------

@pytest.fixture
def norm(gateway):
    return gateway([
        {"name": "admin", "match": {"path": "/admin"}},
        {"name": "public", "match": {"path_prefix": "/public"}},
        {"name": "ab", "match": {"path": "/a/b"}},
        {"name": "upper", "match": {"path": "/A/b"}},
        {"name": "files_ab", "match": {"path": "/files/a/b"}},
        {"name": "files", "match": {"path": "/files/{name}"}, "path_rules": {"encoded_slash": "keep"}},
        {"name": "root", "match": {"path_prefix": "/"}},
    ])


@pytest.mark.parametrize("target,route,upstream_target", [
    ("/public/../admin", "admin", "/admin"),
    ("/public/%2e%2e/admin", "admin", "/admin"),
    ("/public/%2E%2E/admin", "admin", "/admin"),
    ("/public/.%2e/admin", "admin", "/admin"),
    ("/./admin", "admin", "/admin"),
    ("/public/./x/../y", "public", "/public/y"),
    ("/a//b", "ab", "/a/b"),
    ("//a///b", "ab", "/a/b"),
    ("/%41/b", "upper", "/A/b"),
    ("/%61dmin", "admin", "/admin"),
    ("/%7Euser", "root", "/~user"),
    ("/files/a%2Fb", "files", "/files/a%2Fb"),
    ("/files/a%2fb", "files", "/files/a%2Fb"),
    ("/files/a/b", "files_ab", "/files/a/b"),
    ("/public/a%20b", "public", "/public/a%20b"),
    ("/public/x?q=/../%2e%2e", "public", "/public/x?q=/../%2e%2e"),
    ("/public/", "public", "/public/"),
    ("/public/x/.", "public", "/public/x/"),
])
def test_normalization(norm, target, route, upstream_target):
    got = norm.route_of(target)
    assert got[0] == route, got
    assert got[1] == upstream_target, got


@pytest.mark.parametrize("target", ["/..", "/../admin", "/a/../..", "/%2e%2e", "/public/%2E%2E/%2e%2e/x"])
def test_dotdot_above_root_400(norm, target):
    r = norm.get(target)
    problem_check(r, 400)
    assert norm.ups["root"].requests == [] and norm.ups["admin"].requests == []


def test_absolute_form_target(norm):
    with Client(norm.p.port) as c:
        c.send(b"GET http://example.com/%61dmin?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
        r = c.read_response()
    assert r.status == 200
    assert r.json()["server"] == "admin"
    assert r.json()["target"] == "/admin?x=1"
