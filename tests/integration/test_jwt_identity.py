"""jwt in the identity model (issue 8): a verified token names a consumer
(a configured one with `consumer.required`, else an ad-hoc one with groups
from a claim), no token is `pt_txn_auth_none` (so `auth.mode any` with
key_auth/basic_auth and the anonymous consumer work), a refused token is
its own 401; the per-worker cache restores the identity; client copies of
the identity headers never reach the upstream. Tokens are minted by
python3-jwt with an HMAC secret; consumers and keys come from
test_auth_keys."""

import re
import time

import jwt
import pytest

from conftest import simple_config
from test_admin_metrics import admin_cfg
from test_auth_keys import ALICE_KEY, BASIC_CHALLENGE, basic, consumers, upstream_headers
from upstreams import Client, problem_check, request

SECRET = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-0123456789"
BEARER = 'Bearer realm="portico"'


def tok(sub="alice", **kw):
    now = int(time.time())
    c = {"sub": sub, "iat": now, "exp": now + 300}
    c.update(kw)
    return jwt.encode({k: v for k, v in c.items() if v is not None}, SECRET, algorithm="HS256")


def jwt_plugin(**consumer):
    conf = {"keys": [{"alg": "HS256", "secret": SECRET}]}
    if consumer:
        conf["consumer"] = consumer
    return {"jwt": conf}


def start(portico, echo, plugins, route_extra=None, admin=False):
    cfg = simple_config(echo.addr, route_extra=dict(route_extra or {}, plugins=plugins), consumers=consumers())
    aport = None
    if admin:
        cfg, aport = admin_cfg(cfg)
    p = portico(cfg, env={"CAROL_KEY": "carol-env-key-0123456789abcdef"})
    p.aport = aport
    return p


def bearer(t):
    return {"Authorization": "Bearer " + t}


def get(p, headers=None, target="/j", method="GET"):
    return request(p.port, method, target, headers=headers or {})


def who(r):
    assert r.status == 200, (r.status, r.text)
    h = upstream_headers(r)
    return h.get("x-consumer-name"), h.get("x-consumer-groups")


def challenges(r):
    return sorted(r.header_all("WWW-Authenticate"))


def refused(r, error="invalid_token", detail=None):
    doc = problem_check(r, 401)
    www = r.header_all("WWW-Authenticate")
    assert len(www) == 1 and www[0].startswith(BEARER) and ('error="%s"' % error) in www[0], www
    if detail:
        assert detail in doc["detail"], doc
    return doc


# ------------------------------------------------------- several methods

def test_mode_any_key_or_jwt_either_works_none_gets_every_challenge(portico, echo):
    p = start(portico, echo, [{"key_auth": {}}, {"basic_auth": {}}, jwt_plugin()])
    assert who(get(p, {"X-API-Key": ALICE_KEY})) == ("alice", "staff, admins")
    assert who(get(p, bearer(tok("dave")))) == ("dave", None)
    assert who(get(p, {"Authorization": basic("carol", "carol-pw")}))[0] == "carol"
    # the key decides first: the (bad) token is not even looked at
    assert who(get(p, dict(bearer("not.a.token"), **{"X-API-Key": ALICE_KEY})))[0] == "alice"
    # nothing presented: one 401 with the key, Basic and Bearer challenges
    r = get(p)
    problem_check(r, 401)
    assert challenges(r) == sorted(['Key realm="portico"', BASIC_CHALLENGE, BEARER])
    # a refused token decides: its own 401 with the RFC 6750 error
    refused(get(p, bearer(tok("dave")[:-3] + "AAA")))
    refused(get(p, bearer(tok("dave", exp=int(time.time()) - 10))))
    assert len(echo.requests) == 4


def test_mode_all_key_and_jwt_must_name_one_consumer(portico, echo):
    p = start(portico, echo, [{"key_auth": {}}, jwt_plugin(required=True)], route_extra={"auth": {"mode": "all"}})
    h = dict(bearer(tok("alice")), **{"X-API-Key": ALICE_KEY})
    assert who(get(p, h))[0] == "alice"
    # the token is missing: 401 now, with the Bearer challenge
    r = get(p, {"X-API-Key": ALICE_KEY})
    problem_check(r, 401)
    assert challenges(r) == [BEARER]
    # two credentials, two consumers
    doc = problem_check(get(p, dict(bearer(tok("bob")), **{"X-API-Key": ALICE_KEY})), 401)
    assert "different consumers" in doc["detail"]
    problem_check(get(p, bearer(tok("alice"))), 401)  # the key is missing


def test_anonymous_with_jwt(portico, echo):
    p = start(portico, echo, [jwt_plugin()], route_extra={"auth": {"anonymous": "guest"}})
    r = get(p)
    assert who(r) == ("guest", "public") and upstream_headers(r)["x-anonymous-consumer"] == "true"
    r = get(p, bearer(tok("erin")))
    assert who(r)[0] == "erin" and "x-anonymous-consumer" not in upstream_headers(r)
    refused(get(p, bearer("a.b.c")))  # a bad token is no way to become anonymous


# ----------------------------------------------------- consumer mapping

def test_required_consumer_takes_configured_groups_unknown_is_401(portico, echo):
    p = start(portico, echo, [jwt_plugin(required=True)])
    assert who(get(p, bearer(tok("alice", groups=["root"])))) == ("alice", "staff, admins")
    refused(get(p, bearer(tok("zed"))), detail="not a known consumer")
    refused(get(p, bearer(tok(None))), detail="names no consumer")
    # the cached verification still looks the consumer up
    assert who(get(p, bearer(tok("alice", groups=["root"]))))[0] == "alice"


def test_consumer_claim_and_ad_hoc_groups(portico, echo):
    p = start(portico, echo, [jwt_plugin(claim="preferred_username", groups_claim="roles", max_groups=3)])
    assert who(get(p, bearer(tok("u-1", preferred_username="zed", roles=["dev", "ops"])))) == ("zed", "dev, ops")
    assert who(get(p, bearer(tok("u-1", preferred_username="yan", roles="a b  c")))) == ("yan", "a, b, c")
    # an ad-hoc consumer that shares a configured name borrows nothing from it
    assert who(get(p, bearer(tok("u-1", preferred_username="alice")))) == ("alice", None)
    for bad in (["a,b"], ["x y"], ["a", "b", "c", "d"], [""], [1], {"a": 1}, "a\tb"):
        refused(get(p, bearer(tok("u", preferred_username="zed", roles=bad))), detail="groups")
    for bad in ("", "a b", "x" * 257, 7, "\u00e9"):
        refused(get(p, bearer(tok("u", preferred_username=bad))))
    refused(get(p, bearer(tok("zed"))), detail="names no consumer")  # the sub is not the configured claim


def test_groups_claim_feeds_acl(portico, echo):
    p = start(portico, echo, [jwt_plugin(groups_claim="groups"),
                              {"acl": {"allow": ["admins"], "deny": ["suspended"]}}])
    assert who(get(p, bearer(tok("zed", groups=["dev", "admins"]))))[0] == "zed"
    problem_check(get(p, bearer(tok("zed", groups=["dev"]))), 403)
    problem_check(get(p, bearer(tok("zed", groups=["admins", "suspended"]))), 403)
    problem_check(get(p, bearer(tok("zed"))), 403)
    r = get(p)
    problem_check(r, 401)
    assert challenges(r) == [BEARER]


def cache_hits(aport):
    r = request(aport, "GET", "/metrics")
    m = re.search(r'portico_jwt_decisions_total\{result="cache_hit"\} (\d+)', r.text)
    return int(m.group(1)) if m else 0


def test_cache_hit_keeps_identity_and_spoofed_headers_go(portico, echo):
    p = start(portico, echo, [jwt_plugin(groups_claim="groups"),
                              {"acl": {"allow": ["admins"]}}], admin=True)
    t = tok("zed", groups=["admins", "dev"], scope="orders:read", client_id="app-1")
    spoof = {"X-Consumer-Name": "root", "X-Consumer-Groups": "admins", "X-Anonymous-Consumer": "true"}
    with Client(p.port) as c:
        for _ in range(3):
            r = c.request("GET", "/j", headers=dict(bearer(t), **spoof))
            assert who(r) == ("zed", "admins, dev")
            assert "x-anonymous-consumer" not in upstream_headers(r)
    assert cache_hits(p.aport) >= 2
    # a token without groups is a different entry: no groups, refused by acl
    problem_check(get(p, bearer(tok("zed"))), 403)


def test_skipped_jwt_still_drops_token_when_not_forwarded(portico, echo):
    plug = jwt_plugin()
    plug["jwt"]["forward_token"] = False
    p = start(portico, echo, [{"key_auth": {}}, plug])
    r = get(p, dict(bearer(tok("dave")), **{"X-API-Key": ALICE_KEY}))
    assert who(r)[0] == "alice" and "authorization" not in upstream_headers(r)


@pytest.mark.parametrize("conf,err", [
    ({"groups_claim": "roles", "required": True}, "ad-hoc consumers only"),
    ({"max_groups": 0}, "1..256"),
    ({"claim": ""}, "consumer.claim"),
    ({"bogus": 1}, "bogus"),
])
def test_consumer_config_errors(tmp_path, conf, err):
    from test_auth_keys import run_check
    from conftest import to_yaml
    cfg = simple_config("127.0.0.1:1", plugins=[{"jwt": {"keys": [{"alg": "HS256", "secret": SECRET}],
                                                          "consumer": conf}}], listen="127.0.0.1:1")
    out = run_check(tmp_path, to_yaml(cfg))
    assert out.returncode == 1 and err in out.stderr.decode(), out.stderr


# ------------------------------------------- required scopes and claims (acl)

def insufficient(r, scope=None):
    problem_check(r, 403)
    www = r.header_all("WWW-Authenticate")
    want = 'Bearer error="insufficient_scope"' + (', scope="%s"' % scope if scope else "")
    assert www == [want], www


def test_acl_scopes_per_method_and_bearer_challenge(portico, echo):
    acl = {"scopes": ["orders:read"], "methods": {"POST": {"scopes": ["orders:read", "orders:write"]}}}
    p = start(portico, echo, [{"key_auth": {}}, jwt_plugin(), {"acl": acl}])
    read = tok("zed", scope="orders:read profile")
    with Client(p.port) as c:  # the second round comes from the cache: scopes restored
        for _ in range(2):
            assert c.request("GET", "/o", headers=bearer(read)).status == 200
            insufficient(c.request("POST", "/o", headers=bearer(read)), "orders:read orders:write")
    assert get(p, bearer(tok("zed", scp=["orders:write", "orders:read"])), method="POST").status == 200
    assert get(p, bearer(tok("zed", scp="orders:read")), method="GET").status == 200
    insufficient(get(p, bearer(tok("zed"))), "orders:read")
    insufficient(get(p, bearer(tok("zed", scope="orders:reader"))), "orders:read")
    # a key holder has no scopes: 403, and no Bearer challenge for a key
    r = get(p, {"X-API-Key": ALICE_KEY})
    problem_check(r, 403)
    assert r.header_all("WWW-Authenticate") == []
    # nobody: 401
    problem_check(get(p), 401)
    # malformed scope claims refuse the token
    for bad in ([1], "a\"b", ["x" * 257]):
        refused(get(p, bearer(tok("zed", scope=bad))), detail="scopes")


def test_acl_claims(portico, echo):
    acl = {"allow": ["staff", "dev"], "claims": {"tenant": "acme", "amr": ["mfa", "hwk"], "client_id": "app-1",
                                                 "email_verified": "true"}}
    p = start(portico, echo, [jwt_plugin(groups_claim="groups"), {"acl": acl}])
    good = dict(groups=["dev"], tenant="acme", amr=["pwd", "mfa"], azp="app-1", email_verified=True)
    with Client(p.port) as c:
        for _ in range(2):
            assert c.request("GET", "/c", headers=bearer(tok("zed", **good))).status == 200
    for change in ({"tenant": "other"}, {"tenant": None}, {"amr": ["pwd"]}, {"amr": "pwd mfa"},
                   {"azp": "app-2"}, {"email_verified": False}, {"tenant": {"id": "acme"}}):
        insufficient(get(p, bearer(tok("zed", **dict(good, **change)))))
    # client_id wins over azp
    assert get(p, bearer(tok("zed", **dict(good, client_id="app-1", azp="x")))).status == 200
    insufficient(get(p, bearer(tok("zed", **dict(good, client_id="app-9", azp="app-1")))))
    # the group rule still comes first: plain 403 without a challenge
    r = get(p, bearer(tok("zed", **dict(good, groups=["other"]))))
    problem_check(r, 403)
    assert r.header_all("WWW-Authenticate") == []


@pytest.mark.parametrize("acl,err", [
    ({"scopes": ["a b"]}, "scope-token"),
    ({"scopes": []}, "non-empty list"),
    ({"claims": []}, "acl.claims"),
    ({"methods": {"GET": {"bogus": 1}}}, "bogus"),
    ({}, "at least one of allow, deny, scopes or claims"),
])
def test_acl_config_errors(tmp_path, acl, err):
    from test_auth_keys import run_check
    from conftest import to_yaml
    cfg = simple_config("127.0.0.1:1", plugins=[{"acl": acl}], listen="127.0.0.1:1")
    out = run_check(tmp_path, to_yaml(cfg))
    assert out.returncode == 1 and err in out.stderr.decode(), out.stderr
