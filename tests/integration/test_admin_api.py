"""The read-only admin API (issue 10): /api, /api/config (secrets
redacted), /api/routes (plugins in execution order), /api/upstreams,
/api/consumers (no credentials), /api/openapi.json — and every real answer
validated against the OpenAPI 3.1 document's schemas (python3-jsonschema,
Draft 2020-12)."""

import hashlib
import json
import signal

import jsonschema
import pytest

from conftest import simple_config
from test_admin_metrics import admin_cfg
from upstreams import problem_check, request, wait_reloaded

SECRET_KEY = "alice-secret-api-key-123456"
TOKEN = "admin-token-0123456789"


def config():
    cfg = simple_config("127.0.0.1:9", plugins=[{"request_id": {}}],
                        route_extra={"plugins": [{"key_auth": {}}, {"headers": {"request": {"set": {"X-A": "1"}}}}],
                                     "auth": {"anonymous": "guest"}})
    cfg["routes"].append({"name": "health", "match": {"path": "/health", "methods": ["GET"]},
                          "plugins": [{"direct_response": {"status": 200}}]})
    cfg["consumers"] = [
        {"name": "alice", "groups": ["staff"], "metadata": {"team": "payments"},
         "credentials": {"keys": [{"key_sha256": hashlib.sha256(SECRET_KEY.encode()).hexdigest()},
                                  {"key": "${BOB_KEY}"}]}},
        {"name": "guest"},
    ]
    return cfg


def get(aport, path, token=TOKEN):
    r = request(aport, "GET", path, headers={"Authorization": "Bearer " + token} if token else None)
    return r


def get_json(aport, path):
    r = get(aport, path)
    assert r.status == 200, r
    assert r.header("Content-Type") == "application/json"
    return r.json()


@pytest.fixture
def api(portico):
    cfg, aport = admin_cfg(config(), token=TOKEN)
    p = portico(cfg, env={"BOB_KEY": "bob-env-key-987654321"})
    return p, aport, cfg


def validator(doc, name):
    schema = {"$ref": "#/components/schemas/" + name}
    resolver = jsonschema.RefResolver.from_schema(doc)
    return jsonschema.Draft202012Validator(schema, resolver=resolver)


def test_every_endpoint_matches_the_openapi_document(api):
    p, aport, _ = api
    doc = get_json(aport, "/api/openapi.json")
    assert doc["openapi"] == "3.1.0"
    jsonschema.Draft202012Validator.check_schema(doc["components"]["schemas"]["Routes"])
    index = get_json(aport, "/api")
    assert set(index["endpoints"]) == set(doc["paths"]) - {"/api"}
    names = {"/api": "Index", "/api/config": "Config", "/api/routes": "Routes", "/api/upstreams": "Upstreams",
             "/api/consumers": "Consumers", "/api/reloads": "Reloads"}
    for path, schema in names.items():
        validator(doc, schema).validate(get_json(aport, path))
    # the schemas do reject a wrong answer (they are not vacuous)
    bad = get_json(aport, "/api/routes")
    bad["routes"][0]["plugins"][0]["scope"] = "elsewhere"
    with pytest.raises(jsonschema.ValidationError):
        validator(doc, "Routes").validate(bad)


def test_config_is_the_running_one_with_secrets_redacted(api):
    p, aport, cfg = api
    body = get(aport, "/api/config").body.decode()
    assert SECRET_KEY not in body and hashlib.sha256(SECRET_KEY.encode()).hexdigest() not in body
    assert TOKEN not in body and "bob-env-key" not in body
    doc = json.loads(body)
    assert doc["generation"] == 1
    c = doc["config"]
    assert c["admin"]["token"] == "<redacted>"
    assert c["consumers"][0]["credentials"]["keys"] == [{"key_sha256": "<redacted>"}, {"key": "<redacted>"}]
    assert c["consumers"][0]["metadata"] == {"team": "payments"}
    assert c["routes"][0]["name"] == "main" and c["routes"][1]["match"]["path"] == "/health"
    assert c["upstreams"]["up"]["targets"] == ["127.0.0.1:9"]


def test_routes_with_plugins_in_execution_order(api):
    p, aport, _ = api
    doc = get_json(aport, "/api/routes")
    assert [x["name"] for x in doc["global_plugins"]] == ["request_id"]
    main, health = doc["routes"]
    assert [(x["name"], x["scope"]) for x in main["plugins"]] == [
        ("request_id", "global"), ("key_auth", "route"), ("headers", "route")]
    assert main["upstream"] == "up" and main["match"]["path_kind"] == "prefix" and main["match"]["path"] == "/"
    assert main["auth"] == {"mode": "any", "anonymous": "guest"}
    assert health["upstream"] is None and health["match"]["methods"] == ["GET"]


def test_upstreams_and_consumers_without_credentials(api):
    p, aport, _ = api
    ups = get_json(aport, "/api/upstreams")["upstreams"]
    assert ups[0]["name"] == "up" and ups[0]["targets"][0]["port"] == 9
    cons = get_json(aport, "/api/consumers")["consumers"]
    assert cons[0] == {"name": "alice", "line": cons[0]["line"], "groups": ["staff"], "metadata": {"team": "payments"},
                       "credentials": {"keys": 2, "basic": False, "mtls": 0}}
    assert cons[1]["name"] == "guest" and cons[1]["credentials"] == {"keys": 0, "basic": False, "mtls": 0}


def test_token_errors_and_methods(api):
    p, aport, _ = api
    r = get(aport, "/api/routes", token=None)
    problem_check(r, 401)
    assert r.header("WWW-Authenticate").startswith("Bearer")
    problem_check(get(aport, "/api/routes", token="wrong"), 401)
    problem_check(get(aport, "/api/nope"), 404)
    problem_check(get(aport, "/apix"), 404)
    r = request(aport, "POST", "/api/routes", headers={"Authorization": "Bearer " + TOKEN}, body=b"{}")
    problem_check(r, 405)
    r = request(aport, "HEAD", "/api/routes", headers={"Authorization": "Bearer " + TOKEN})
    assert r.status == 200 and r.body == b""


def test_reload_shows_the_new_generation(api):
    p, aport, cfg = api
    cfg = dict(cfg)
    cfg["routes"] = cfg["routes"] + [{"name": "extra", "match": {"path": "/extra"}, "upstream": "up"}]
    p.write_config(cfg)
    p.signal(signal.SIGHUP)
    wait_reloaded(p, 1)
    doc = get_json(aport, "/api/routes")
    assert doc["generation"] == 2 and [r["name"] for r in doc["routes"]] == ["main", "health", "extra"]
    assert get_json(aport, "/api/config")["generation"] == 2


def test_reload_history(api):
    p, aport, cfg = api
    ev = get_json(aport, "/api/reloads")["events"]
    assert [(e["result"], e["generation"], e.get("detail")) for e in ev] == [("ok", 1, "started")]
    p.write_config(cfg)
    p.signal(signal.SIGHUP)
    wait_reloaded(p, 1)
    with open(p.config_path, "w") as f:
        f.write("listen: [{address: 127.0.0.1:1}]\nroutes: nope\n")
    p.signal(signal.SIGHUP)
    doc = None
    for _ in range(100):
        doc = get_json(aport, "/api/reloads")
        if len(doc["events"]) == 3:
            break
        __import__("time").sleep(0.05)
    ev = doc["events"]
    assert [(e["result"], e["generation"]) for e in ev] == [("ok", 1), ("ok", 2), ("error", 2)], ev
    assert ev[2]["detail"].startswith(p.config_path + ":"), ev[2]
    assert doc["generation"] == 2
    assert ev[0]["at"] <= ev[1]["at"] <= ev[2]["at"] and ev[0]["at"].endswith("Z")


def test_upstream_targets_live_state(portico, upstream):
    """/api/upstreams shows the state the workers share: requests in
    flight, an ejection by outlier detection, the breaker's state."""
    import threading
    from upstreams import make_response
    gate = threading.Event()

    def bad(req):
        return make_response(503, "X", [], "bad")

    def slow(req):
        if req.path == "/hold":
            gate.wait(10)
        return make_response(200, "X", [], "ok")

    b, s = upstream(bad, name="bad"), upstream(slow, name="slow")
    cfg = simple_config([b.addr, s.addr], upstream_extra={
        "balance": "least_requests",
        "outlier": {"consecutive_5xx": 2, "base_ejection_time": "30s", "max_ejected_percent": 50},
        "circuit_breaker": {"consecutive_failures": 100, "open_time": "1s"}})
    cfg, aport = admin_cfg(cfg, token=TOKEN)
    p = portico(cfg)
    for _ in range(6):
        request(p.port, "GET", "/x")
    doc = get_json(aport, "/api/upstreams")
    up = doc["upstreams"][0]
    assert up["balance"] == "least_requests" and up["circuit"] == "closed"
    by = {t["address"]: t["state"] for t in up["targets"]}
    assert by[b.addr]["ejected"] is True and by[b.addr]["ejected_for_ms"] > 0
    assert by[s.addr]["ejected"] is False and by[s.addr]["healthy"] is None
    held = threading.Thread(target=lambda: request(p.port, "GET", "/hold", timeout=20))
    held.start()
    try:
        deadline = __import__("time").monotonic() + 10
        while get_json(aport, "/api/upstreams")["upstreams"][0]["targets"][1]["state"]["in_flight"] != 1:
            assert __import__("time").monotonic() < deadline, "in_flight never 1"
            __import__("time").sleep(0.05)
    finally:
        gate.set()
        held.join(20)
    assert get_json(aport, "/api/upstreams")["upstreams"][0]["targets"][1]["state"]["in_flight"] == 0
