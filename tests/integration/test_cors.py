"""cors (issue 11): preflights answered by Portico (204, nothing upstream)
or refused (403 problem+json, no CORS field), exact / suffix / regex
origins compared in serialized form, credentials, allowed and exposed
headers, max-age, Vary: Origin appended once, and the attack spellings of
an Origin (case, trailing dot, ports, userinfo, null, two Origin fields,
very long values, suffix confusion)."""

import subprocess

from conftest import BIN, free_port, sanitizer_env, simple_config, to_yaml
from upstreams import Client, build_request, make_response, problem_check, request

APP = "https://app.example.com"


def cors_cfg(addr, **kw):
    conf = {"origins": [APP, "https://*.example.com", "http://localhost:3000"]}
    conf.update(kw)
    return simple_config(addr, route_extra={"plugins": [{"cors": conf}]})


def preflight(port, origin, method="PUT", headers=None, target="/api/x"):
    h = [("Origin", origin), ("Access-Control-Request-Method", method)]
    if headers is not None:
        h.append(("Access-Control-Request-Headers", headers))
    return request(port, "OPTIONS", target, headers=h)


def vary_tokens(r):
    out = []
    for v in r.header_all("Vary"):
        out += [t.strip().lower() for t in v.split(",") if t.strip()]
    return out


def no_cors_fields(r):
    return not any(n.lower().startswith("access-control-") for n, _ in r.headers)


def check_errors(tmp_path, conf):
    cfg = simple_config("127.0.0.1:1", route_extra={"plugins": [{"cors": conf}]})
    cfg["listen"] = ["127.0.0.1:%d" % free_port()]
    path = tmp_path / "c.yaml"
    path.write_text(to_yaml(cfg) + "\n")
    res = subprocess.run([BIN, "check", "-c", str(path)], capture_output=True, text=True, timeout=30,
                         env=sanitizer_env())
    return res.returncode, res.stdout + res.stderr


def test_preflight_answered_locally(portico, echo):
    p = portico(cors_cfg(echo.addr, allow_methods=["GET", "POST", "PUT"], allow_headers=["Content-Type", "X-Trace"],
                         max_age="10m"))
    r = preflight(p.port, APP, "PUT", "content-type, x-trace")
    assert r.status == 204, r
    assert r.header("Access-Control-Allow-Origin") == APP
    assert r.header("Access-Control-Allow-Methods") == "GET, POST, PUT"
    assert r.header("Access-Control-Allow-Headers") == "Content-Type, X-Trace"
    assert r.header("Access-Control-Max-Age") == "600"
    assert r.header("Access-Control-Allow-Credentials") is None
    assert vary_tokens(r) == ["origin"]
    assert r.body == b""
    assert echo.requests == []  # nothing went upstream


def test_preflight_refusals_are_403_without_cors_fields(portico, echo):
    p = portico(cors_cfg(echo.addr, allow_methods=["GET", "PUT"], allow_headers=["Content-Type"]))
    for origin, method, hdrs, why in [
        ("https://evil.example.net", "PUT", None, "origin"),
        (APP, "DELETE", None, "method"),
        (APP, "put", None, "method"),  # methods are case-sensitive
        (APP, "PUT", "content-type, x-secret", "header"),
        (APP, "PUT", "bad header", "Headers"),
    ]:
        r = preflight(p.port, origin, method, hdrs)
        doc = problem_check(r, 403)
        assert why in doc["detail"], (origin, method, hdrs, doc)
        assert no_cors_fields(r), r
        assert "origin" in vary_tokens(r)
    assert echo.requests == []


def test_options_without_request_method_is_not_a_preflight(portico, echo):
    p = portico(cors_cfg(echo.addr))
    r = request(p.port, "OPTIONS", "/api", headers={"Origin": APP})
    assert r.status == 200 and r.json()["method"] == "OPTIONS"
    assert r.header("Access-Control-Allow-Origin") == APP
    assert len(echo.requests) == 1


def test_actual_response_headers_and_vary(portico, upstream):
    def handler(req):
        return make_response(200, "OK", [("Vary", "Accept-Encoding"),
                                         ("Access-Control-Allow-Origin", "*"),
                                         ("Access-Control-Allow-Credentials", "true"),
                                         ("X-Request-Id", "abc")], b"ok")
    up = upstream(handler)
    p = portico(cors_cfg(up.addr, allow_credentials=True, expose_headers=["X-Request-Id"]))
    r = request(p.port, "GET", "/api", headers={"Origin": APP})
    assert r.status == 200
    assert r.header_all("Access-Control-Allow-Origin") == [APP]
    assert r.header_all("Access-Control-Allow-Credentials") == ["true"]
    assert r.header("Access-Control-Expose-Headers") == "X-Request-Id"
    assert r.header_all("Vary") == ["Accept-Encoding, Origin"]
    # a disallowed origin: the upstream's wider policy is not passed on
    r = request(p.port, "GET", "/api", headers={"Origin": "https://evil.example.net"})
    assert r.status == 200 and no_cors_fields(r), r
    assert vary_tokens(r) == ["accept-encoding", "origin"]
    # no Origin at all: still Vary (a cache must not serve this to a CORS request)
    r = request(p.port, "GET", "/api")
    assert no_cors_fields(r) and vary_tokens(r) == ["accept-encoding", "origin"]


def test_vary_not_duplicated(portico, upstream):
    up = upstream(lambda req: make_response(200, "OK", [("Vary", "origin, Accept")], b"ok"))
    p = portico(cors_cfg(up.addr))
    r = request(p.port, "GET", "/", headers={"Origin": APP})
    assert r.header_all("Vary") == ["origin, Accept"]
    up2 = upstream(lambda req: make_response(200, "OK", [("Vary", "*")], b"ok"))
    p2 = portico(cors_cfg(up2.addr))
    r = request(p2.port, "GET", "/", headers={"Origin": APP})
    assert r.header_all("Vary") == ["*"]


def test_origin_spellings(portico, echo):
    p = portico(cors_cfg(echo.addr))
    allowed = {
        APP: APP,
        "HTTPS://APP.EXAMPLE.COM": APP,          # normalised: lowercase scheme and host
        "https://app.example.com:443": APP,      # the default port is dropped
        "https://a.b.example.com": "https://a.b.example.com",
        "http://localhost:3000": "http://localhost:3000",
    }
    for o, want in allowed.items():
        r = request(p.port, "GET", "/", headers={"Origin": o})
        assert r.header("Access-Control-Allow-Origin") == want, (o, r)
    refused = [
        "https://app.example.com.",              # trailing dot: another host
        "https://app.example.com:8443",          # another port
        "http://app.example.com",                # another scheme
        "http://localhost:3001", "http://localhost",
        "https://user@app.example.com",          # userinfo
        "https://app.example.com@evil.net",
        "https://app.example.com/",              # a path
        "https://app.example.com/x",
        "https://app.example.com:0443x",
        "https://app.example.com:99999",
        "null", "NULL", "", "app.example.com", "https://", "https://.example.com",
        "https://example.com",                   # the suffix needs a label before it
        "https://evil-example.com",              # suffix confusion
        "https://example.com.evil.net",
        "https://xexample.com",
        "https://evil.net#.example.com",
        "https://evil.net%2e.example.com",
        "https://[::1].example.com",
        "https://" + "a" * 600 + ".example.com",  # very long
    ]
    for o in refused:
        r = request(p.port, "GET", "/", headers={"Origin": o})
        assert r.status == 200 and no_cors_fields(r), (o, r)
        r = preflight(p.port, o)
        assert r.status == 403 and no_cors_fields(r), (o, r)
    assert [q.method for q in echo.requests] == ["GET"] * (len(allowed) + len(refused))


def test_two_origin_fields_refused(portico, echo):
    p = portico(cors_cfg(echo.addr))
    h = [("Origin", APP), ("Origin", APP)]
    r = request(p.port, "GET", "/", headers=h)
    assert no_cors_fields(r) and "origin" in vary_tokens(r)
    r = request(p.port, "OPTIONS", "/", headers=h + [("Access-Control-Request-Method", "GET")])
    problem_check(r, 403)


def test_null_only_when_listed(portico, echo):
    p = portico(simple_config(echo.addr, route_extra={"plugins": [{"cors": {"origins": ["null"]}}]}))
    r = request(p.port, "GET", "/", headers={"Origin": "null"})
    assert r.header("Access-Control-Allow-Origin") == "null"
    r = request(p.port, "GET", "/", headers={"Origin": APP})
    assert no_cors_fields(r)


def test_regex_origins_anchored(portico, echo):
    p = portico(simple_config(echo.addr, route_extra={"plugins": [{"cors": {
        "origin_regex": [r"https://pr-[0-9]+\.preview\.example\.net"], "allow_credentials": True}}]}))
    r = request(p.port, "GET", "/", headers={"Origin": "https://pr-42.preview.example.net"})
    assert r.header("Access-Control-Allow-Origin") == "https://pr-42.preview.example.net"
    assert r.header("Access-Control-Allow-Credentials") == "true"
    # matched against the serialized origin, so case and default ports are folded
    r = request(p.port, "GET", "/", headers={"Origin": "HTTPS://PR-7.preview.example.net:443"})
    assert r.header("Access-Control-Allow-Origin") == "https://pr-7.preview.example.net"
    for o in ["https://pr-42.preview.example.net.evil.com", "https://xpr-42.preview.example.net",
              "https://pr-42.preview.example.net:8443", "https://pr-.preview.example.net"]:
        r = request(p.port, "GET", "/", headers={"Origin": o})
        assert no_cors_fields(r), (o, r)


def test_wildcard_without_credentials(portico, echo):
    p = portico(simple_config(echo.addr, route_extra={"plugins": [{"cors": {
        "origins": ["*"], "expose_headers": ["X-A"]}}]}))
    r = request(p.port, "GET", "/", headers={"Origin": "https://anything.test"})
    assert r.header("Access-Control-Allow-Origin") == "*"
    assert r.header("Access-Control-Expose-Headers") == "X-A"
    assert r.header("Access-Control-Allow-Credentials") is None
    assert "origin" not in vary_tokens(r)  # the answer does not depend on the origin
    r = preflight(p.port, "https://anything.test", "POST")
    assert r.status == 204 and r.header("Access-Control-Allow-Origin") == "*"


def test_reflect_request_headers(portico, echo):
    p = portico(cors_cfg(echo.addr, reflect_request_headers=True))
    r = preflight(p.port, APP, "POST", "x-one, x-two")
    assert r.status == 204
    assert r.header("Access-Control-Allow-Headers") == "x-one, x-two"
    assert vary_tokens(r) == ["origin", "access-control-request-headers"]


def test_errors_of_other_plugins_carry_cors(portico, echo):
    """A 401 from an auth plugin after cors is readable by the allowed origin."""
    cfg = simple_config(echo.addr, route_extra={"plugins": [
        {"cors": {"origins": [APP]}},
        {"direct_response": {"status": 401, "body": "no"}}]})
    p = portico(cfg)
    r = request(p.port, "GET", "/", headers={"Origin": APP})
    assert r.status == 401 and r.header("Access-Control-Allow-Origin") == APP


def test_config_errors(tmp_path):
    bad = [
        ({"origins": ["*"], "allow_credentials": True}, "every site"),
        ({"origins": ["null"], "allow_credentials": True}, "sandboxed"),
        ({"origins": ["*.example.com"]}, "needs a scheme"),
        ({"origins": ["https://app.example.com/"]}, "invalid origin"),
        ({"origins": ["https://u@app.example.com"]}, "invalid origin"),
        ({"origins": ["https://*.com"]}, "invalid origin pattern"),
        ({"origins": ["https://a*.example.com"]}, "invalid origin"),
        ({"origin_regex": ["https://(unclosed"]}, "invalid regex"),
        ({"origins": [APP], "allow_headers": ["*"], "allow_credentials": True}, "cannot be"),
        ({"origins": [APP], "allow_headers": ["a b"]}, "not a valid token"),
        ({"origins": [APP], "allow_headers": ["X"], "reflect_request_headers": True}, "not both"),
        ({"origins": []}, "no origin allowed"),
        ({"origins": [APP], "max_age": "25h"}, "max_age"),
        ({"origins": [APP], "bogus": 1}, "bogus"),
    ]
    for conf, want in bad:
        rc, out = check_errors(tmp_path, conf)
        assert rc != 0 and want in out, (conf, out)
        assert ":" in out.split("\n")[0]
    rc, out = check_errors(tmp_path, {"origins": [APP, "https://*.example.com:8443", "null"], "max_age": 600})
    assert rc == 0, out


def test_raw_request_keeps_connection(portico, echo):
    """A locally answered preflight and a 403 keep the keep-alive connection usable."""
    p = portico(cors_cfg(echo.addr))
    with Client(p.port) as c:
        c.send(build_request("OPTIONS", "/a", [("Origin", APP), ("Access-Control-Request-Method", "POST")]))
        assert c.read_response("OPTIONS").status == 204
        c.send(build_request("OPTIONS", "/a", [("Origin", "https://x.test"),
                                               ("Access-Control-Request-Method", "POST")]))
        assert c.read_response("OPTIONS").status == 403
        r = c.request("GET", "/b", headers={"Origin": APP})
        assert r.status == 200 and r.json()["path"] == "/b"


def test_preflight_and_actual_over_h2c(portico, echo):
    """The same answers on an HTTP/2 stream (curl with prior knowledge)."""
    p = portico(cors_cfg(echo.addr, allow_methods=["GET", "PUT"]))

    def h2(method, origin, *extra):
        out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-X", method, "-D", "-", "-o", "/dev/null",
                              "-H", "Origin: " + origin] + list(extra) + ["http://127.0.0.1:%d/api" % p.port],
                             capture_output=True, timeout=30)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.decode().split("\r\n")
        assert lines[0].startswith("HTTP/2 "), lines
        fields = [ln.split(":", 1) for ln in lines[1:] if ":" in ln]
        return int(lines[0].split()[1]), {k.strip().lower(): v.strip() for k, v in fields}

    status, h = h2("OPTIONS", APP, "-H", "Access-Control-Request-Method: PUT")
    assert status == 204 and h["access-control-allow-origin"] == APP and h["vary"] == "Origin", h
    status, h = h2("OPTIONS", "https://evil.test", "-H", "Access-Control-Request-Method: PUT")
    assert status == 403 and "access-control-allow-origin" not in h, h
    status, h = h2("GET", APP)
    assert status == 200 and h["access-control-allow-origin"] == APP, h
    assert [q.method for q in echo.requests] == ["GET"]


def test_global_cors_with_route_methods_and_404(portico, echo):
    cfg = simple_config(echo.addr, route_extra={"match": {"path_prefix": "/api", "methods": ["GET"]}})
    cfg["plugins"] = [{"cors": {"origins": [APP], "allow_methods": ["GET", "DELETE"]}}]
    p = portico(cfg)
    r = preflight(p.port, APP, "DELETE", target="/api/x")  # the route allows only GET: answered all the same
    assert r.status == 204 and r.header("Access-Control-Allow-Origin") == APP
    r = preflight(p.port, APP, "GET", target="/nowhere")
    assert r.status == 204
    r = request(p.port, "GET", "/nowhere", headers={"Origin": APP})
    problem_check(r, 404)
    assert r.header("Access-Control-Allow-Origin") == APP and "origin" in vary_tokens(r)
    r = request(p.port, "DELETE", "/api/x", headers={"Origin": APP})
    problem_check(r, 405)
    assert echo.requests == []
