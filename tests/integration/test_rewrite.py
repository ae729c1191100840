"""rewrite plugin (issue 11): the path sent upstream from a regex on the
normalized path with $N / {name} captures (kept within the route's path
rules: no dot segment, no forged separator), and query parameters removed,
renamed, set and added by decoded name with the others byte-exact and in
order. The echo upstream reports the exact target it received."""

import subprocess

from conftest import BIN, free_port, sanitizer_env, simple_config, to_yaml
from upstreams import problem_check, request

USERS = {"regex": r"/api/v1/users/([0-9]+)(?<rest>/.*)?", "replacement": "/users/$1{rest}"}


def start(portico, echo, rw, **route):
    extra = {"plugins": [{"rewrite": rw}]}
    extra.update(route)
    return portico(simple_config(echo.addr, route_extra=extra))


def target(p, t, **kw):
    r = request(p.port, "GET", t, **kw)
    assert r.status == 200, r
    return r.json()["target"]


def test_path_regex_with_captures(portico, echo):
    p = start(portico, echo, {"path": USERS})
    assert target(p, "/api/v1/users/42/orders?x=1&y") == "/users/42/orders?x=1&y"
    assert target(p, "/api/v1/users/42") == "/users/42"
    # matched on the normalized path: dot segments, '//', %7E resolved first
    assert target(p, "/api/v1/./x/../users//42/%7Efoo") == "/users/42/~foo"
    # no match: the route's path, unchanged
    assert target(p, "/api/v1/users/abc") == "/api/v1/users/abc"
    assert target(p, "/other") == "/other"


def test_no_match_falls_back_to_route_rewriting(portico, echo):
    p = portico(simple_config(echo.addr, route_extra={
        "match": {"path_prefix": "/api"}, "strip_prefix": True,
        "plugins": [{"rewrite": {"path": USERS}}]}))
    assert target(p, "/api/v1/users/7/a") == "/users/7/a"  # the plugin's path wins
    assert target(p, "/api/status") == "/status"           # strip_prefix otherwise


def test_numbered_named_and_dollar(portico, echo):
    p = start(portico, echo, {"path": {"regex": r"/r/(?<a>[a-z]+)/([0-9]+)",
                                       "replacement": "/x/$2/$1/{a}/$$/$0"}})
    assert target(p, "/r/abc/12") == "/x/12/abc/abc/$/r/abc/12"


def test_empty_capture_collapses_slashes(portico, echo):
    p = start(portico, echo, {"path": {"regex": r"/o/([a-z]*)/?(.*)", "replacement": "/x/$1/$2"}})
    assert target(p, "/o/abc/d") == "/x/abc/d"
    assert target(p, "/o/123") == "/x/123"   # "/x//123" normalised


def test_dot_segments_refused(portico, echo):
    """Captures of a normalized path can still form '.' or '..' with the
    literal around them: such a result is refused (400), never resolved."""
    p = start(portico, echo, {"path": {"regex": r"/dots/(.*)x", "replacement": "/base/$1."}},
              path_rules={"trailing_dot_space": "keep"})
    assert target(p, "/dots/ax") == "/base/a."
    for t in ["/dots/.x", "/dots/%2Ex", "/dots/x"]:
        r = request(p.port, "GET", t)
        doc = problem_check(r, 400)
        assert "dot segment" in doc["detail"], (t, doc)
    assert [q.target for q in echo.requests] == ["/base/a."]
    # under the default rules a segment ending in '.' is refused too
    p2 = start(portico, echo, {"path": {"regex": r"/dots/(.*)x", "replacement": "/base/$1."}})
    problem_check(request(p2.port, "GET", "/dots/ax"), 400)


def test_forged_separator_refused(portico, echo):
    """A capture ending in '%' followed by literal hex digits cannot forge
    %2F: the result is checked under the route's path rules (encoded slashes
    refused by default)."""
    p = start(portico, echo, {"path": {"regex": r"/f/(.*%)(?<two>2)0b", "replacement": "/g/$1{two}F"}})
    r = request(p.port, "GET", "/f/a%20b")
    problem_check(r, 400)
    assert echo.requests == []


def test_query_operations(portico, echo):
    p = start(portico, echo, {"query": {"remove": ["debug"], "rename": {"q": "search"},
                                        "set": {"format": "json"}, "add": {"source": "portico gw"}}})
    t = target(p, "/q?keep=1&debug=x&q=hello+w&b=%41&format=xml&de%62ug=2&format=csv&z&=v&&q")
    assert t == "/q?keep=1&search=hello+w&b=%41&format=json&z&=v&&search&source=portico%20gw"
    assert target(p, "/q") == "/q?format=json&source=portico%20gw"
    assert target(p, "/q?") == "/q?&format=json&source=portico%20gw"


def test_query_removing_everything_drops_the_question_mark(portico, echo):
    p = start(portico, echo, {"query": {"remove": ["a", "b c"]}})
    assert target(p, "/q?a=1&b+c=2&b%20c") == "/q"
    assert target(p, "/q?a=1&x=%2F") == "/q?x=%2F"
    assert target(p, "/q?x") == "/q?x"


def test_query_names_encoded(portico, echo):
    p = start(portico, echo, {"query": {"rename": {"old": "new name&x"}, "set": {"k": "a=b&c"}}})
    assert target(p, "/q?old=1&k=2") == "/q?new%20name%26x=1&k=a%3Db%26c"


def test_path_and_query_together(portico, echo):
    p = start(portico, echo, {"path": USERS, "query": {"remove": ["token"]}})
    assert target(p, "/api/v1/users/9?token=s3cret&x=1") == "/users/9?x=1"


def check(tmp_path, conf):
    cfg = simple_config("127.0.0.1:1", route_extra={"plugins": [{"rewrite": conf}]})
    cfg["listen"] = ["127.0.0.1:%d" % free_port()]
    path = tmp_path / "c.yaml"
    path.write_text(to_yaml(cfg) + "\n")
    res = subprocess.run([BIN, "check", "-c", str(path)], capture_output=True, text=True, timeout=30,
                         env=sanitizer_env())
    return res.returncode, res.stdout + res.stderr


def test_config_errors(tmp_path):
    for conf, want in [
        ({}, "expected 'path' and/or 'query'"),
        ({"path": {"regex": "/a(", "replacement": "/b"}}, "invalid regex"),
        ({"path": {"regex": "/a"}}, "needs 'regex' and 'replacement'"),
        ({"path": {"regex": "/(a)", "replacement": "/$2"}}, "no group 2"),
        ({"path": {"regex": "/(a)", "replacement": "/{nope}"}}, "no group named"),
        ({"path": {"regex": "/(a)", "replacement": "/{a"}}, "unclosed"),
        ({"path": {"regex": "/(a)", "replacement": "/}"}}, "only for {name}"),
        ({"path": {"regex": "/(a)", "replacement": "/$x"}}, "followed by a digit"),
        ({"path": {"regex": "/(a)", "replacement": "b/$1"}}, "start with '/'"),
        ({"path": {"regex": "/(a)", "replacement": "/a%2Fb/$1"}}, "forge a separator"),
        ({"path": {"regex": "/(a)", "replacement": "/a%5cb"}}, "forge a separator"),
        ({"path": {"regex": "/(a)", "replacement": "/a?b=1"}}, "'?'"),
        ({"path": {"regex": "/(a)", "replacement": "/a b"}}, "visible ASCII"),
        ({"path": {"regex": "/(a)", "replacement": "/a%zz"}}, "escape"),
        ({"query": {"remove": ["a"], "set": {"a": "1"}}}, "more than one"),
        ({"query": {"rename": {"a": ""}}}, "must not be empty"),
        ({"query": {"upsert": {"a": "1"}}}, "upsert"),
    ]:
        rc, out = check(tmp_path, conf)
        assert rc != 0 and want in out, (conf, out)
        assert "c.yaml:" in out
    assert check(tmp_path, {"path": USERS, "query": {"add": {"a": "1"}, "set": {"b": ""}}})[0] == 0


def test_global_rewrite_keeps_404(portico, echo):
    cfg = simple_config(echo.addr, route_extra={"match": {"path_prefix": "/api"}})
    cfg["plugins"] = [{"rewrite": {"path": {"regex": "/(.*)", "replacement": "/api/$1"}}}]
    p = portico(cfg)
    assert target(p, "/api/x") == "/api/api/x"
    problem_check(request(p.port, "GET", "/other"), 404)
