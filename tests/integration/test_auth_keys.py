"""Consumers, key_auth, basic_auth, acl, several methods on a route, the
anonymous consumer, identity headers and the access log (issue 8). The
password hashes are made by the tests with `portico hash-password`; the
upstream is the echo server, whose answer shows the headers it received.
Timing is never asserted."""

import base64
import hashlib
import json
import subprocess
import time

import pytest

from conftest import BIN, sanitizer_env, simple_config
from upstreams import problem_check, request

ALICE_KEY = "alice-key-0123456789abcdef"
BOB_KEY = "bob-key-0123456789abcdefgh"
ENV_KEY = "carol-env-key-0123456789abcdef"


def sha(s):
    return hashlib.sha256(s.encode()).hexdigest()


_HASHES = {}


def pw_hash(password, scheme="yescrypt"):
    if (password, scheme) not in _HASHES:
        out = subprocess.run([BIN, "hash-password", "--scheme", scheme], input=password.encode() + b"\n",
                             capture_output=True, env=sanitizer_env(), timeout=30, check=True).stdout.decode()
        assert out.startswith("password_hash: '") and out.endswith("'\n"), out
        _HASHES[(password, scheme)] = out[len("password_hash: '"):-2]
    return _HASHES[(password, scheme)]


def consumers():
    return [
        {"name": "alice", "groups": ["staff", "admins"], "metadata": {"team": "payments"},
         "credentials": {"keys": [{"key_sha256": sha(ALICE_KEY)}],
                         "basic": {"password_hash": pw_hash("alice-pw")}}},
        {"name": "bob", "groups": ["staff"],
         "credentials": {"keys": [{"key_sha256": sha(BOB_KEY)}],
                         "basic": {"username": "bobby", "password_hash": pw_hash("bob-pw:with:colons", "bcrypt")}}},
        {"name": "carol", "groups": ["readers"],
         "credentials": {"keys": [{"key": "${CAROL_KEY}"}],
                         "basic": {"password_hash": pw_hash("carol-pw", "sha512")}}},
        {"name": "guest", "groups": ["public"]},
    ]


def start(portico, echo, plugins, route_extra=None, **top):
    cfg = simple_config(echo.addr, route_extra=dict(route_extra or {}, plugins=plugins), consumers=consumers(), **top)
    return portico(cfg, env={"CAROL_KEY": ENV_KEY})


def basic(user, pw):
    return "Basic " + base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()


def upstream_headers(r):
    return {k.lower(): v for k, v in r.json()["headers"]}


def unauthorized(r, challenges=()):
    doc = problem_check(r, 401)
    assert sorted(r.header_all("WWW-Authenticate")) == sorted(challenges), r.header_all("WWW-Authenticate")
    return doc


BASIC_CHALLENGE = 'Basic realm="portico", charset="UTF-8"'
KEY_CHALLENGE = 'Key realm="portico"'


# ---------------------------------------------------------------- key_auth

def test_key_in_header_good_bad_missing(portico, echo):
    p = start(portico, echo, [{"key_auth": {}}])
    r = request(p.port, "GET", "/k", headers={"X-API-Key": ALICE_KEY, "X-Consumer-Name": "root"})
    assert r.status == 200, r
    h = upstream_headers(r)
    assert "x-api-key" not in h
    assert h["x-consumer-name"] == "alice"
    assert h["x-consumer-groups"] == "staff, admins"
    # RFC 9110 §15.5.2: every 401 has a challenge; unknown and wrong keys get the same answer
    bad = unauthorized(request(p.port, "GET", "/k", headers={"X-API-Key": "nope-nope-nope-nope"}), [KEY_CHALLENGE])
    unknown = unauthorized(request(p.port, "GET", "/k", headers={"X-API-Key": ALICE_KEY + "x"}), [KEY_CHALLENGE])
    assert bad == unknown and bad["detail"] == "invalid API key"
    unauthorized(request(p.port, "GET", "/k"), [KEY_CHALLENGE])
    unauthorized(request(p.port, "GET", "/k", headers=[("X-API-Key", ALICE_KEY), ("X-API-Key", BOB_KEY)]),
                 [KEY_CHALLENGE])
    assert len(echo.requests) == 1


def test_key_challenge_realm_and_with_other_methods(portico, echo):
    """The realm is configurable; on a route with several methods a 401
    for no credential carries every method's challenge (key, Basic)."""
    p = start(portico, echo, [{"key_auth": {"realm": "orders api"}}, {"basic_auth": {"realm": "staff"}}])
    unauthorized(request(p.port, "GET", "/r"), ['Key realm="orders api"', 'Basic realm="staff", charset="UTF-8"'])
    unauthorized(request(p.port, "GET", "/r", headers={"X-API-Key": "nope-nope-nope-nope"}),
                 ['Key realm="orders api"'])
    r = request(p.port, "GET", "/r", headers={"X-API-Key": ALICE_KEY})
    assert r.status == 200 and r.header_all("WWW-Authenticate") == []


def test_key_from_environment(portico, echo):
    p = start(portico, echo, [{"key_auth": {}}])
    r = request(p.port, "GET", "/env", headers={"X-API-Key": ENV_KEY})
    assert r.status == 200 and upstream_headers(r)["x-consumer-name"] == "carol"


def test_key_in_query_stripped_upstream_and_from_log(portico, echo):
    p = start(portico, echo, [{"key_auth": {"query": "api_key"}}])
    r = request(p.port, "GET", "/q?a=1&api_key=%s&b=2" % BOB_KEY)
    assert r.status == 200, r
    assert r.json()["target"] == "/q?a=1&b=2"
    assert upstream_headers(r)["x-consumer-name"] == "bob"
    r = request(p.port, "GET", "/q?api_key=%s" % BOB_KEY)
    assert r.json()["target"] == "/q"
    unauthorized(request(p.port, "GET", "/q?api_key=wrong-key-wrong-key&x=1"), [KEY_CHALLENGE])
    unauthorized(request(p.port, "GET", "/q?api_key=%s&api_key=%s" % (BOB_KEY, BOB_KEY)), [KEY_CHALLENGE])
    time.sleep(0.3)
    log = open(p.access_log_path).read()
    assert BOB_KEY not in log and "wrong-key-wrong-key" not in log
    entries = [json.loads(ln) for ln in log.splitlines()]
    assert any(e["consumer"] == "bob" and e["path"] == "/q?a=1&b=2" for e in entries), entries
    assert any(e["status"] == 401 and e["consumer"] == "" for e in entries)


def test_spoofed_identity_headers_removed_without_auth(portico, echo):
    p = portico(simple_config(echo.addr))
    r = request(p.port, "GET", "/open", headers={"X-Consumer-Name": "admin", "X-Consumer-Groups": "admins",
                                                 "X-Anonymous-Consumer": "false"})
    h = upstream_headers(r)
    assert r.status == 200
    assert not {"x-consumer-name", "x-consumer-groups", "x-anonymous-consumer"} & set(h), h


def test_renamed_identity_headers(portico, echo):
    p = start(portico, echo, [{"key_auth": {}}], identity_headers={"consumer": "X-User", "groups": None})
    r = request(p.port, "GET", "/r", headers={"X-API-Key": ALICE_KEY, "X-User": "mallory",
                                              "X-Consumer-Name": "mallory", "X-Consumer-Groups": "admins"})
    h = upstream_headers(r)
    assert h["x-user"] == "alice"
    assert "x-consumer-name" not in h and "x-consumer-groups" not in h


# -------------------------------------------------------------- basic_auth

@pytest.mark.parametrize("user,pw,who", [("alice", "alice-pw", "alice"),          # yescrypt
                                         ("bobby", "bob-pw:with:colons", "bob"),  # bcrypt, ':' in password
                                         ("carol", "carol-pw", "carol")])         # sha512-crypt
def test_basic_good(portico, echo, user, pw, who):
    p = start(portico, echo, [{"basic_auth": {}}])
    for _ in range(2):  # the second one comes from the cache
        r = request(p.port, "GET", "/b", headers={"Authorization": basic(user, pw)})
        assert r.status == 200, r
        h = upstream_headers(r)
        assert h["x-consumer-name"] == who
        assert "authorization" not in h


def test_basic_bad_unknown_malformed(portico, echo):
    p = start(portico, echo, [{"basic_auth": {"realm": "api"}}])
    ch = ['Basic realm="api", charset="UTF-8"']
    wrong = unauthorized(request(p.port, "GET", "/b", headers={"Authorization": basic("alice", "nope")}), ch)
    unknown = unauthorized(request(p.port, "GET", "/b", headers={"Authorization": basic("nobody", "nope")}), ch)
    assert wrong["detail"] == unknown["detail"]
    for bad in ["Basic !!!!", "Basic " + base64.b64encode(b"nocolon").decode(),
                "Basic " + base64.b64encode(b":emptyuser").decode(),
                "Basic " + base64.b64encode(b"alice:alice-pw").decode().rstrip("="),  # unpadded
                "Basic YWxpY2U6YWxpY2UtcHd=",  # non-canonical last bits
                "Basic " + base64.b64encode(b"al\x01ice:pw").decode(),
                "Basic " + base64.b64encode(b"alice:\xff\xfe").decode()]:
        doc = unauthorized(request(p.port, "GET", "/b", headers={"Authorization": bad}), ch)
        assert doc["detail"] == "malformed Basic credentials", (bad, doc)
    unauthorized(request(p.port, "GET", "/b"), ch)
    # another scheme is not a Basic credential: challenge, and the header is not consumed
    unauthorized(request(p.port, "GET", "/b", headers={"Authorization": "Bearer abc"}), ch)
    assert echo.requests == []


def test_basic_keep_authorization(portico, echo):
    p = start(portico, echo, [{"basic_auth": {"keep_authorization": True}}])
    r = request(p.port, "GET", "/b", headers={"Authorization": basic("alice", "alice-pw")})
    assert r.status == 200 and upstream_headers(r)["authorization"] == basic("alice", "alice-pw")


# ------------------------------------------------- several methods, anonymous

def test_any_mode_first_recognised_decides_and_challenges(portico, echo):
    p = start(portico, echo, [{"key_auth": {}}, {"basic_auth": {}}])
    r = request(p.port, "GET", "/m", headers={"Authorization": basic("carol", "carol-pw")})
    assert r.status == 200 and upstream_headers(r)["x-consumer-name"] == "carol"
    r = request(p.port, "GET", "/m", headers={"X-API-Key": ALICE_KEY, "Authorization": basic("carol", "carol-pw")})
    assert r.status == 200 and upstream_headers(r)["x-consumer-name"] == "alice"
    # a wrong key decides, even with good Basic credentials
    unauthorized(request(p.port, "GET", "/m", headers={"X-API-Key": "wrong-wrong-wrong-wrong",
                                                        "Authorization": basic("carol", "carol-pw")}),
                 [KEY_CHALLENGE])
    unauthorized(request(p.port, "GET", "/m"), [KEY_CHALLENGE, BASIC_CHALLENGE])


def test_all_mode(portico, echo):
    p = start(portico, echo, [{"key_auth": {}}, {"basic_auth": {}}], route_extra={"auth": {"mode": "all"}})
    r = request(p.port, "GET", "/a", headers={"X-API-Key": ALICE_KEY, "Authorization": basic("alice", "alice-pw")})
    assert r.status == 200 and upstream_headers(r)["x-consumer-name"] == "alice"
    unauthorized(request(p.port, "GET", "/a", headers={"X-API-Key": ALICE_KEY}), [BASIC_CHALLENGE])
    doc = unauthorized(request(p.port, "GET", "/a", headers={"X-API-Key": ALICE_KEY,
                                                              "Authorization": basic("carol", "carol-pw")}))
    assert "different consumers" in doc["detail"]


def test_anonymous(portico, echo):
    p = start(portico, echo, [{"key_auth": {}}], route_extra={"auth": {"anonymous": "guest"}})
    r = request(p.port, "GET", "/anon", headers={"X-Anonymous-Consumer": "false"})
    assert r.status == 200, r
    h = upstream_headers(r)
    assert h["x-consumer-name"] == "guest" and h["x-anonymous-consumer"] == "true"
    r = request(p.port, "GET", "/anon", headers={"X-API-Key": BOB_KEY})
    h = upstream_headers(r)
    assert h["x-consumer-name"] == "bob" and "x-anonymous-consumer" not in h
    unauthorized(request(p.port, "GET", "/anon", headers={"X-API-Key": "wrong-wrong-wrong-wrong"}), [KEY_CHALLENGE])


# --------------------------------------------------------------------- acl

def test_acl_allow_deny_per_method(portico, echo):
    acl = {"allow": ["staff"], "deny": ["readers"], "methods": {"DELETE": {"allow": ["admins"]}}}
    p = start(portico, echo, [{"key_auth": {}}, {"acl": acl}])
    assert request(p.port, "GET", "/x", headers={"X-API-Key": BOB_KEY}).status == 200
    assert request(p.port, "DELETE", "/x", headers={"X-API-Key": ALICE_KEY}).status == 200
    doc = problem_check(request(p.port, "DELETE", "/x", headers={"X-API-Key": BOB_KEY}), 403)
    assert "not allowed" in doc["detail"]
    problem_check(request(p.port, "GET", "/x", headers={"X-API-Key": ENV_KEY}), 403)
    unauthorized(request(p.port, "GET", "/x"), [KEY_CHALLENGE])


def test_acl_with_anonymous_consumer(portico, echo):
    p = start(portico, echo, [{"key_auth": {}}, {"acl": {"allow": ["staff", "public"], "deny": ["readers"]}}],
              route_extra={"auth": {"anonymous": "guest"}})
    r = request(p.port, "GET", "/g")
    assert r.status == 200 and upstream_headers(r)["x-consumer-name"] == "guest"
    problem_check(request(p.port, "GET", "/g", headers={"X-API-Key": ENV_KEY}), 403)


def test_acl_without_authentication_is_401(portico, echo):
    p = start(portico, echo, [{"acl": {"allow": ["staff"]}}])
    problem_check(request(p.port, "GET", "/n"), 401)


# ------------------------------------------------------- config and CLI

def run_check(tmp_path, text, env=None):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    return subprocess.run([BIN, "check", "-c", str(f)], capture_output=True, env=sanitizer_env(env), timeout=30)


BASE = """listen: 127.0.0.1:1
upstreams:
  up: {targets: [127.0.0.1:2]}
routes:
  - {match: {path_prefix: /}, upstream: up}
"""


@pytest.mark.parametrize("consumers,err", [
    ("  - {name: a, credentials: {keys: [{key: literal-key-in-file-123}]}}", "c.yaml:7:"),
    ("  - {name: a, credentials: {keys: [{key: '${NOT_SET_FOR_SURE_X}'}]}}", "NOT_SET_FOR_SURE_X"),
    ("  - {name: a, credentials: {basic: {password_hash: '$1$abc$abcdefghijklmnopqrstuv'}}}", "MD5"),
    ("  - {name: a, credentials: {basic: {password_hash: 'abJnggxhB/yWI'}}}", "DES"),
    ("  - {name: a, credentials: {keys: [{key_sha256: abc}]}}", "64 hex digits"),
    ("  - {name: a}\n  - {name: a}", "declared twice"),
])
def test_config_errors_positioned(tmp_path, consumers, err):
    r = run_check(tmp_path, BASE + "consumers:\n" + consumers + "\n")
    assert r.returncode == 1, r
    msg = r.stderr.decode()
    assert err in msg and "c.yaml:" in msg, msg


def test_hash_key_cli(tmp_path):
    out = subprocess.run([BIN, "hash-key"], input=b"some-long-api-key-123\n", capture_output=True,
                         env=sanitizer_env(), timeout=30, check=True).stdout.decode()
    assert out == "key_sha256: %s\n" % sha("some-long-api-key-123")
    r = subprocess.run([BIN, "hash-key"], input=b"short\n", capture_output=True, env=sanitizer_env(), timeout=30)
    assert r.returncode == 1
