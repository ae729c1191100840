"""jwt: the real binary verifies real tokens minted by python3-jwt and
cryptography (RSA, RSA-PSS, EC P-256/384/521, Ed25519, HMAC) before a real
echo upstream sees the request.

Covers: a valid token per algorithm, keys from PEM files, inline JWKs and a
JWKS file (kid lookup), exp/nbf/iat and leeway boundaries, iss/aud/typ and
required claims, token sources (header, query, cookie; two tokens refused),
claims mapped to upstream headers with spoofed copies removed, the
Authorization header dropped on request, the verified-token cache, and an
attack battery: alg none in every spelling, HS256 signed with the RSA public
key (key confusion), psychic ECDSA signatures, kid abuse, jku/x5u/jwk/x5c/
crit headers (and no connection to a jku URL), stripped and tampered
signatures, oversized tokens, deep JSON, duplicate members, non-canonical
base64url and padding. Every refusal is a 401 problem+json with an RFC 6750
challenge that never echoes the token."""

import base64
import hashlib
import hmac
import json
import socket
import subprocess
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from conftest import BIN, simple_config, to_yaml
from upstreams import Client, problem_check, request

SECRET = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-0123456789"  # 38 bytes: enough for HS256 only
SECRET64 = "k" * 64


def b64u(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_json(obj):
    return b64u(json.dumps(obj, separators=(",", ":")))


def pem_public(priv):
    return priv.public_key().public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


# One key per family, made once for the module (RSA generation is slow).
RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC256 = ec.generate_private_key(ec.SECP256R1())
EC384 = ec.generate_private_key(ec.SECP384R1())
EC521 = ec.generate_private_key(ec.SECP521R1())
ED = ed25519.Ed25519PrivateKey.generate()

P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

ALGS = {
    # alg: (private key for signing, key file name)
    "RS256": (RSA, "rsa.pem"), "RS384": (RSA, "rsa.pem"), "RS512": (RSA, "rsa.pem"),
    "PS256": (RSA, "rsa.pem"), "PS384": (RSA, "rsa.pem"), "PS512": (RSA, "rsa.pem"),
    "ES256": (EC256, "ec256.pem"), "ES384": (EC384, "ec384.pem"), "ES512": (EC521, "ec521.pem"),
    "EdDSA": (ED, "ed.pem"),
}


@pytest.fixture
def keydir(tmp_path):
    d = tmp_path / "keys"
    d.mkdir()
    for name, k in (("rsa.pem", RSA), ("ec256.pem", EC256), ("ec384.pem", EC384), ("ec521.pem", EC521),
                    ("ed.pem", ED)):
        (d / name).write_bytes(pem_public(k))
    return d


def all_keys(keydir):
    keys = [{"alg": alg, "pem_file": str(keydir / f)} for alg, (_, f) in ALGS.items()]
    keys.append({"alg": "HS256", "secret": SECRET})
    keys.append({"alg": "HS512", "secret": SECRET64})
    return keys


def jwt_config(echo_addr, keys, **opts):
    conf = {"keys": keys}
    conf.update(opts)
    return simple_config(echo_addr, plugins=[{"jwt": conf}])


def claims(**kw):
    now = int(time.time())
    c = {"sub": "alice", "iat": now, "exp": now + 300}
    c.update(kw)
    return {k: v for k, v in c.items() if v is not None}


def mint(alg="RS256", payload=None, key=None, headers=None):
    if key is None:
        key = SECRET if alg == "HS256" else SECRET64 if alg == "HS512" else ALGS[alg][0]
    return jwt.encode(payload if payload is not None else claims(), key, algorithm=alg, headers=headers)


def get(p, token=None, target="/", headers=None):
    hs = dict(headers or {})
    if token is not None:
        hs["Authorization"] = "Bearer " + token
    resp = request(p.port, "GET", target, headers=hs)
    resp.sent_token = token  # refused() checks the answer does not echo it
    return resp


def big_head_status(p, authorization):
    """Status of a request whose head is too large to be sent whole: the
    answer may come (and the connection close) before the client is done."""
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    try:
        try:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: " + authorization.encode() + b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        buf = b""
        while b"\r\n" not in buf:
            try:
                d = s.recv(4096)
            except ConnectionResetError:
                break
            if not d:
                break
            buf += d
        assert buf.startswith(b"HTTP/1.1 "), buf[:100]
        return int(buf[9:12])
    finally:
        s.close()


def echo_headers(resp):
    assert resp.status == 200, resp
    return [tuple(h) for h in resp.json()["headers"]]


def values(pairs, name):
    return [v for n, v in pairs if n.lower() == name.lower()]


def refused(resp, token=None, error="invalid_token", status=401):
    """A 401 problem+json with a Bearer challenge that does not echo the token."""
    doc = problem_check(resp, status)
    www = resp.header("WWW-Authenticate")
    assert www and www.startswith('Bearer realm="'), www
    if error:
        assert 'error="%s"' % error in www, www
    else:
        assert "error=" not in www, www
    token = token or getattr(resp, "sent_token", None)
    if token:
        for part in token.split("."):
            if len(part) >= 8:
                assert part not in www and part not in resp.text, "token echoed"
    return doc


def forge(header, payload, sig=b"", raw_sig=None):
    """A token from JSON header/payload (dicts or raw strings) and a signature."""
    h = b64u(header) if isinstance(header, (str, bytes)) else b64u_json(header)
    p = b64u(payload) if isinstance(payload, (str, bytes)) else b64u_json(payload)
    return "%s.%s.%s" % (h, p, raw_sig if raw_sig is not None else b64u(sig))


def hs256(signing_input, secret):
    return hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()


# ---------------------------------------------------------------------------
# Valid tokens
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("alg", list(ALGS) + ["HS256", "HS512"])
def test_valid_token_per_algorithm(portico, echo, keydir, alg):
    p = portico(jwt_config(echo.addr, all_keys(keydir), cache=False))
    tok = mint(alg)
    r = get(p, tok)
    assert r.status == 200, r
    # The Authorization header travels upstream by default.
    assert values(echo_headers(r), "Authorization") == ["Bearer " + tok]


def test_missing_token_is_401_without_error_code(portico, echo, keydir):
    p = portico(jwt_config(echo.addr, all_keys(keydir), realm="orders"))
    r = get(p)
    refused(r, error=None)
    assert r.header("WWW-Authenticate") == 'Bearer realm="orders"'
    # Another scheme is no bearer token.
    refused(get(p, headers={"Authorization": "Basic YWxpY2U6cHc="}), error=None)
    assert echo.requests == []


def test_jwks_file_and_inline_jwk_with_kid(portico, echo, tmp_path):
    rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA.public_key()))
    rsa_jwk.update(kid="r1", alg="RS256", use="sig")
    other = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_OTHER.public_key()))
    other.update(kid="r2", alg="RS256")
    ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(EC256.public_key()))
    ec_jwk.update(kid="e1", alg="ES256")
    enc = dict(other, kid="enc", use="enc")  # an encryption key is skipped
    f = tmp_path / "jwks.json"
    f.write_text(json.dumps({"keys": [rsa_jwk, other, enc]}))
    ed_jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(ED.public_key()))
    keys = [{"alg": "ES256", "jwk": ec_jwk}, {"alg": "EdDSA", "kid": "ed", "jwk": ed_jwk}]
    p = portico(jwt_config(echo.addr, keys, jwks_file=str(f)))
    assert get(p, mint("RS256", headers={"kid": "r1"})).status == 200
    assert get(p, mint("RS256", key=RSA_OTHER, headers={"kid": "r2"})).status == 200
    assert get(p, mint("ES256", headers={"kid": "e1"})).status == 200
    assert get(p, mint("EdDSA", headers={"kid": "ed"})).status == 200
    # A kid names one key: RSA's token under r2's kid does not verify.
    refused(get(p, mint("RS256", headers={"kid": "r2"})))
    # An unknown kid finds no key (these keys all have kids).
    doc = refused(get(p, mint("RS256", headers={"kid": "nope"})))
    assert doc["detail"] == "no key is configured to verify the token"


# ---------------------------------------------------------------------------
# Time claims, iss, aud, typ, required claims
# ---------------------------------------------------------------------------

def test_time_claims_and_leeway_boundaries(portico, echo, keydir):
    p = portico(jwt_config(echo.addr, all_keys(keydir), leeway="30s", cache=False))
    now = int(time.time())
    assert get(p, mint(payload=claims(exp=now + 5))).status == 200
    assert get(p, mint(payload=claims(exp=now - 20))).status == 200  # within leeway
    d = refused(get(p, mint(payload=claims(exp=now - 40))))
    assert d["detail"] == "the token has expired"
    assert get(p, mint(payload=claims(nbf=now + 20))).status == 200  # within leeway
    d = refused(get(p, mint(payload=claims(nbf=now + 40))))
    assert d["detail"] == "the token is not valid yet"
    refused(get(p, mint(payload=claims(iat=now + 40))))
    refused(get(p, mint(payload=claims(exp="tomorrow"))))
    # exp is required by default.
    d = refused(get(p, mint(payload={"sub": "alice"})))
    assert d["detail"] == "the token lacks a required claim"


def test_no_leeway_boundary(portico, echo, keydir):
    p = portico(jwt_config(echo.addr, all_keys(keydir), cache=False))
    now = int(time.time())
    refused(get(p, mint(payload=claims(exp=now - 1))))
    refused(get(p, mint(payload=claims(exp=now))))  # exp is exclusive
    assert get(p, mint(payload=claims(exp=now + 3))).status == 200


def test_require_exp_off(portico, echo, keydir):
    p = portico(jwt_config(echo.addr, all_keys(keydir), require_exp=False))
    assert get(p, mint(payload={"sub": "alice"})).status == 200


def test_issuer_audience_required_claims_typ(portico, echo, keydir):
    p = portico(jwt_config(echo.addr, all_keys(keydir), issuers=["https://idp.example", "https://idp2.example"],
                           audiences=["orders"], required_claims=["sub", "scope"], typ="at+jwt", cache=False))
    good = dict(iss="https://idp.example", aud="orders", scope="read")
    hdr = {"typ": "at+jwt"}
    assert get(p, mint(payload=claims(**good), headers=hdr)).status == 200
    assert get(p, mint(payload=claims(**good), headers={"typ": "application/at+jwt"})).status == 200
    assert get(p, mint(payload=claims(**dict(good, aud=["x", "orders"])), headers=hdr)).status == 200
    d = refused(get(p, mint(payload=claims(**dict(good, iss="https://evil.example")), headers=hdr)))
    assert d["detail"] == "the token's issuer is not accepted"
    refused(get(p, mint(payload=claims(**dict(good, iss=None)), headers=hdr)))
    d = refused(get(p, mint(payload=claims(**dict(good, aud="billing")), headers=hdr)))
    assert d["detail"] == "the token's audience is not accepted"
    refused(get(p, mint(payload=claims(**dict(good, aud=["x", "y"])), headers=hdr)))
    refused(get(p, mint(payload=claims(**dict(good, aud=None)), headers=hdr)))
    d = refused(get(p, mint(payload=claims(**dict(good, scope=None)), headers=hdr)))
    assert d["detail"] == "the token lacks a required claim"
    d = refused(get(p, mint(payload=claims(**good), headers={"typ": "JWT"})))
    assert d["detail"] == "the token's type is not accepted"
    refused(get(p, mint(payload=claims(**good))))  # pyjwt's default typ JWT
    assert echo.requests and len(echo.requests) == 3


# ---------------------------------------------------------------------------
# Token sources, claim headers, forwarding
# ---------------------------------------------------------------------------

def test_token_from_query_and_cookie_and_two_tokens(portico, echo, keydir):
    p = portico(jwt_config(echo.addr, all_keys(keydir),
                           token=[{"header": "Authorization"}, {"query": "access_token"}, {"cookie": "jwt"}]))
    tok = mint()
    assert get(p, target="/x?a=1&access_token=" + tok).status == 200
    assert get(p, headers={"Cookie": "a=b; jwt=%s; c=d" % tok}).status == 200
    refused(get(p, target="/x?access_token=" + tok + "x"))
    r = get(p, tok, target="/x?access_token=" + tok)
    refused(r, error="invalid_request", status=400)
    p2 = portico(jwt_config(echo.addr, all_keys(keydir), token={"header": "X-Token"}))
    assert get(p2, headers={"X-Token": tok}).status == 200
    refused(get(p2, tok), error=None)  # Authorization is not a source there


def test_claims_to_headers_and_spoofed_copies_removed(portico, echo, keydir):
    p = portico(jwt_config(echo.addr, all_keys(keydir),
                           claims_to_headers={"sub": "X-User-Id", "groups": "X-User-Groups", "admin": "X-Admin",
                                              "missing": "X-Missing", "name": "X-User-Name"}))
    tok = mint(payload=claims(groups=["dev", "ops"], admin=True))
    spoof = {"X-User-Id": "root", "x-user-id": "root2", "X-Missing": "forged", "X-Admin": "true"}
    for _ in range(2):  # verified, then from the cache
        hs = echo_headers(get(p, tok, headers=spoof))
        assert values(hs, "X-User-Id") == ["alice"]
        assert values(hs, "X-User-Groups") == ["dev,ops"]
        assert values(hs, "X-Admin") == ["true"]
        assert values(hs, "X-Missing") == []
    # A refused request never reaches the upstream, spoofed or not.
    n = len(echo.requests)
    refused(get(p, tok[:-4] + "AAAA", headers=spoof))
    assert len(echo.requests) == n
    # A claim value with control bytes is not forwarded.
    hs = echo_headers(get(p, mint(payload=claims(name="a\r\nX-Evil: 1"))))
    assert values(hs, "X-User-Name") == [] and values(hs, "X-Evil") == []
    # ... and as the consumer's name it refuses the token.
    refused(get(p, mint(payload=claims(sub="a\r\nX-Evil: 1"))))


def test_forward_token_false_drops_authorization(portico, echo, keydir):
    p = portico(jwt_config(echo.addr, all_keys(keydir), forward_token=False))
    tok = mint()
    for _ in range(2):
        assert values(echo_headers(get(p, tok)), "Authorization") == []
        # only the Bearer field is the token: another scheme's field stays for its plugin
        r = request(p.port, "GET", "/", headers=[("Authorization", "Bearer " + tok),
                                                 ("Authorization", "Basic Y2Fyb2w6cHc=")])
        assert values(echo_headers(r), "Authorization") == ["Basic Y2Fyb2w6cHc="]


def test_forward_token_false_removes_query_parameter_byte_exact(portico, echo, keydir):
    """A query token leaves the target the upstream gets (the other
    parameters kept byte for byte, order and separators included) and the
    access log; verified and cached paths alike, refused tokens too."""
    p = portico(jwt_config(echo.addr, all_keys(keydir), forward_token=False,
                           token=[{"header": "Authorization"}, {"query": "access_token"}]))
    tok = mint()
    for _ in range(2):  # verified, then from the cache
        r = get(p, target="/x?a=1&access_token=%s&b=%%20x+y&&c&access_tokens=k" % tok)
        assert r.status == 200, r
        assert r.json()["target"] == "/x?a=1&b=%20x+y&&c&access_tokens=k"
        assert get(p, target="/x?access_token=" + tok).json()["target"] == "/x"
        assert get(p, target="/y?access_token=%s&z=1" % tok).json()["target"] == "/y?z=1"
        # a header token: the query is left alone (an empty access_token= is that source's slot: it goes)
        assert get(p, tok, target="/h?q=1&&access_tokenx=2").json()["target"] == "/h?q=1&&access_tokenx=2"
        assert get(p, tok, target="/h?access_token=&q=1").json()["target"] == "/h?q=1"
    refused(get(p, target="/x?access_token=%s&keep=1" % (tok[:-4] + "AAAA")))
    time.sleep(0.3)
    log = open(p.access_log_path).read()
    assert tok[:-4] not in log, log
    assert '"/x?a=1&b=%20x+y&&c&access_tokens=k"' in log


def test_forward_token_false_removes_cookie_keeps_the_others(portico, echo, keydir):
    p = portico(jwt_config(echo.addr, all_keys(keydir), forward_token=False, token=[{"cookie": "jwt"}]))
    tok = mint()
    for _ in range(2):  # verified, then from the cache
        hs = echo_headers(get(p, headers={"Cookie": "a=b; jwt=%s; c=d;jwtx=1" % tok}))
        assert values(hs, "Cookie") == ["a=b; c=d; jwtx=1"]
        hs = echo_headers(get(p, headers={"Cookie": "jwt=" + tok}))
        assert values(hs, "Cookie") == []          # nothing left: the header goes
        hs = echo_headers(request(p.port, "GET", "/", headers=[("Cookie", "jwt=" + tok), ("Cookie", "session=s1")]))
        assert values(hs, "Cookie") == ["session=s1"]
    # forward_token: true (the default) keeps them
    p2 = portico(jwt_config(echo.addr, all_keys(keydir), token=[{"cookie": "jwt"}, {"query": "t"}]))
    hs = echo_headers(get(p2, headers={"Cookie": "a=b; jwt=" + tok}))
    assert values(hs, "Cookie") == ["a=b; jwt=" + tok]
    assert get(p2, target="/q?t=%s&x=1" % tok).json()["target"] == "/q?t=%s&x=1" % tok


def test_cache_hit_needs_the_whole_token(portico, echo, keydir):
    """The verified-token cache is found by the signature part and checks
    the signing input: a cached token's signature under another payload
    (or header) is verified afresh and refused, never served from the
    cache; the genuine token still is."""
    p = portico(jwt_config(echo.addr, all_keys(keydir)))
    good = mint(payload=claims(sub="alice"))
    with Client(p.port) as c:
        for _ in range(2):
            assert c.request("GET", "/", headers={"Authorization": "Bearer " + good}).status == 200
    h, _, s = good.split(".")
    forged_payload = b64u_json(claims(sub="mallory"))
    forged_header = b64u_json({"alg": "RS256", "typ": "JWT", "x": 1})
    for forged in ("%s.%s.%s" % (h, forged_payload, s), "%s.%s.%s" % (forged_header, good.split(".")[1], s)):
        refused(get(p, forged))
    assert echo_headers(get(p, good)) is not None
    assert [r.header("X-Consumer-Name") for r in echo.requests] == ["alice"] * 3


def test_cache_serves_until_exp(portico, echo, keydir):
    p = portico(jwt_config(echo.addr, all_keys(keydir)))
    now = int(time.time())
    tok = mint("ES256", payload=claims(exp=now + 2))
    with Client(p.port) as c:
        for _ in range(3):
            r = c.request("GET", "/", headers={"Authorization": "Bearer " + tok})
            assert r.status == 200
    time.sleep(3.1)
    refused(get(p, tok))  # the cached entry expired with the token


# ---------------------------------------------------------------------------
# Attack battery
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_every_spelling(portico, echo, keydir, alg):
    p = portico(jwt_config(echo.addr, all_keys(keydir)))
    for sig in ("", "AAAA"):
        tok = forge({"alg": alg, "typ": "JWT"}, claims(), raw_sig=sig)
        refused(get(p, tok))
    assert echo.requests == []


def test_hs256_signed_with_rsa_public_key_is_refused(portico, echo, keydir):
    # The RSA key is configured for RS256 only; a token "HS256"-signed with
    # its PEM (the classic key confusion) must not verify.
    p = portico(jwt_config(echo.addr, [{"alg": "RS256", "pem_file": str(keydir / "rsa.pem")}]))
    pem = pem_public(RSA)
    for alg in ("HS256",):
        h = b64u_json({"alg": alg, "typ": "JWT"})
        pl = b64u_json(claims())
        sig = hs256(h + "." + pl, pem)
        d = refused(get(p, "%s.%s.%s" % (h, pl, b64u(sig))))
        assert d["detail"] == "no key is configured to verify the token"
    # And an RS256 key that is asked to verify HS256 by kid: still no.
    p2 = portico(jwt_config(echo.addr, [{"alg": "RS256", "kid": "k", "pem_file": str(keydir / "rsa.pem")}]))
    h = b64u_json({"alg": "HS256", "kid": "k"})
    pl = b64u_json(claims())
    refused(get(p2, "%s.%s.%s" % (h, pl, b64u(hs256(h + "." + pl, pem)))))
    assert echo.requests == []


def test_psychic_ecdsa_signatures(portico, echo, keydir):
    p = portico(jwt_config(echo.addr, all_keys(keydir), cache=False))
    h = b64u_json({"alg": "ES256"})
    pl = b64u_json(claims())
    n = P256_N.to_bytes(32, "big")
    for sig in (b"\0" * 64, n + n, b"\0" * 32 + n, n + b"\0" * 32, b"\0" * 63 + b"\1",
                b"\xff" * 64, b"\0" * 62):
        refused(get(p, "%s.%s.%s" % (h, pl, b64u(sig))))
    # A DER signature instead of JOSE r||s is refused too.
    from cryptography.hazmat.primitives import hashes
    der = EC256.sign((h + "." + pl).encode(), ec.ECDSA(hashes.SHA256()))
    refused(get(p, "%s.%s.%s" % (h, pl, b64u(der))))
    assert echo.requests == []


@pytest.mark.parametrize("kid", ["../../../../etc/passwd", "' OR '1'='1", "k1\u0000", "/dev/null", "x" * 300,
                                 "k1; DROP TABLE keys"])
def test_kid_abuse(portico, echo, keydir, kid):
    p = portico(jwt_config(echo.addr, [{"alg": "RS256", "kid": "k1", "pem_file": str(keydir / "rsa.pem")},
                                       {"alg": "HS256", "kid": "k2", "secret": SECRET}]))
    # Signed with a key the gateway does not know, or with the empty string.
    tok = mint("RS256", key=RSA_OTHER, headers={"kid": kid})
    refused(get(p, tok))
    h = b64u_json({"alg": "HS256", "kid": kid})
    pl = b64u_json(claims())
    refused(get(p, "%s.%s.%s" % (h, pl, b64u(hs256(h + "." + pl, b"")))))
    assert echo.requests == []


def test_key_selecting_headers_refused_and_no_outbound_connection(portico, echo, keydir):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.5)
    url = "http://127.0.0.1:%d/jwks.json" % listener.getsockname()[1]
    p = portico(jwt_config(echo.addr, all_keys(keydir)))
    attacker_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_OTHER.public_key()))
    for extra in ({"jku": url}, {"x5u": url}, {"jwk": attacker_jwk}, {"x5c": ["MIIB"]}, {"crit": ["exp"]},
                  {"crit": []}, {"b64": False, "crit": ["b64"]}):
        # Signed with a key the gateway knows: the header alone is the reason.
        tok = mint("RS256", headers=extra)
        d = refused(get(p, tok))
        assert d["detail"] == "the token's header carries a refused parameter", extra
    with pytest.raises(socket.timeout):
        listener.accept()
    listener.close()
    assert echo.requests == []


def test_stripped_and_tampered_tokens(portico, echo, keydir):
    p = portico(jwt_config(echo.addr, all_keys(keydir), cache=False))
    for alg in ("RS256", "ES256", "EdDSA", "HS256", "PS256"):
        tok = mint(alg)
        h, pl, s = tok.split(".")
        refused(get(p, h + "." + pl + "."))  # stripped
        refused(get(p, h + "." + pl))  # two parts
        evil = b64u_json(dict(claims(), sub="admin"))
        refused(get(p, h + "." + evil + "." + s))  # tampered payload
        refused(get(p, "%s.%s.%s.%s.%s" % (h, pl, s, s, s)))  # JWE-like five parts
    assert echo.requests == []


def test_oversized_tokens(portico, echo, keydir):
    p = portico(jwt_config(echo.addr, all_keys(keydir)))
    big = mint(payload=claims(pad="x" * 9000))
    d = refused(get(p, big))
    assert d["detail"] == "the token is too large"
    # 1 MB: refused before parsing (the core's head limit, 431, may be first;
    # Portico may answer and close while the client is still sending).
    for token in ("a" * (1 << 20), "a.b." * 250000):
        assert big_head_status(p, "Bearer " + token) in (401, 431)
    assert echo.requests == []
    p2 = portico(jwt_config(echo.addr, all_keys(keydir), max_token_size="32k"))
    assert get(p2, big).status == 200


def test_deep_json_and_duplicate_members(portico, echo, keydir):
    p = portico(jwt_config(echo.addr, all_keys(keydir), require_exp=False))
    deep = "[" * 200 + "]" * 200
    for header, payload in (
        ('{"alg":"HS256","x":%s}' % deep, json.dumps(claims())),
        ('{"alg":"HS256"}', '{"sub":"a","x":%s}' % deep),
        ('{"alg":"HS256","alg":"none"}', json.dumps(claims())),
        ('{"alg":"none","alg":"HS256"}', json.dumps(claims())),
        ('{"alg":"HS256"}', '{"sub":"alice","sub":"admin"}'),
        ('{"alg":"HS256"}', '["not", "an", "object"]'),
        ('{"alg":"HS256"}', '{"sub":"a"} trailing'),
        ('"HS256"', json.dumps(claims())),
    ):
        h, pl = b64u(header), b64u(payload)
        tok = "%s.%s.%s" % (h, pl, b64u(hs256(h + "." + pl, SECRET.encode())))
        refused(get(p, tok))
    # Moderate nesting is fine.
    h, pl = b64u('{"alg":"HS256"}'), b64u('{"sub":"a","x":%s}' % ("[" * 10 + "]" * 10))
    assert get(p, "%s.%s.%s" % (h, pl, b64u(hs256(h + "." + pl, SECRET.encode())))).status == 200
    assert len(echo.requests) == 1


def test_base64url_strictness(portico, echo, keydir):
    p = portico(jwt_config(echo.addr, all_keys(keydir), cache=False))
    tok = mint("HS256")
    h, pl, s = tok.split(".")
    assert get(p, tok).status == 200
    std = lambda x: x.replace("-", "+").replace("_", "/")  # noqa: E731
    cases = [
        h + "=." + pl + "." + s,                 # padding
        h + "." + pl + "." + s + "=",
        h + "." + pl + "==." + s,
        h + "." + pl + "." + s[:-1] + "*",       # non-alphabet
        h + "." + pl + " ." + s,                 # whitespace
        "%s.%s.%s" % (h, pl, s[:-1]),            # one character short
    ]
    if std(s) != s:
        cases.append("%s.%s.%s" % (h, pl, std(s)))  # standard alphabet
    # Non-canonical trailing bits: HS256 tags are 32 bytes = 43 chars with 2 unused bits.
    last = s[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    idx = alphabet.index(last)
    assert idx % 4 == 0
    cases.append("%s.%s.%s" % (h, pl, s[:-1] + alphabet[idx + 1]))
    for t in cases:
        refused(get(p, t))
    assert len(echo.requests) == 1


def test_hmac_secret_too_short_is_a_config_error(echo, tmp_path):
    cfg = tmp_path / "c.yaml"
    conf = jwt_config(echo.addr, [{"alg": "HS256", "secret": "short"}])
    conf["listen"] = ["127.0.0.1:8080"]
    cfg.write_text(to_yaml(conf))
    r = subprocess.run([BIN, "check", "-c", str(cfg)], capture_output=True, text=True)
    assert r.returncode != 0
    assert "at least 32 required" in r.stdout + r.stderr


# ---------------------------------------------------------------------------
# JWKS fetched from the identity provider (jwks: {upstream, path})
# ---------------------------------------------------------------------------

class JwksServer:
    """An identity provider's JWKS endpoint; `keys`, `status` and
    `cache_control` are settable by the test; every request is recorded."""

    def __init__(self, upstream):
        self.keys = []
        self.status = 200
        self.cache_control = "max-age=300"
        self.up = upstream(self.answer, name="idp")
        self.addr = self.up.addr

    def answer(self, req):
        from upstreams import make_response
        if self.status != 200:
            return make_response(self.status, "Oops", [], b"down")
        body = json.dumps({"keys": self.keys}).encode()
        return make_response(200, "OK", [("Content-Type", "application/json"),
                                         ("Cache-Control", self.cache_control)], body)

    def count(self):
        return len(self.up.requests)


def rsa_jwk(priv, kid):
    j = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(priv.public_key()))
    j.update(kid=kid, alg="RS256", use="sig")
    return j


@pytest.fixture
def idp(upstream):
    return JwksServer(upstream)


def jwks_config(echo_addr, idp_addr, **jwks):
    cfg = simple_config(echo_addr, plugins=[{"jwt": {"jwks": dict({"upstream": "idp", "path": "/jwks"}, **jwks),
                                                     "cache": False}}], workers=1)
    cfg["upstreams"]["idp"] = {"targets": [idp_addr]}
    return cfg


def test_jwks_url_first_fetch_then_cached_set(portico, echo, idp):
    idp.keys = [rsa_jwk(RSA, "r1")]
    p = portico(jwks_config(echo.addr, idp.addr))
    assert idp.count() == 0  # fetched on demand, not at start
    assert get(p, mint(headers={"kid": "r1"})).status == 200  # waited for the first fetch
    for _ in range(3):
        assert get(p, mint(headers={"kid": "r1"})).status == 200
    assert idp.count() == 1
    assert idp.up.requests[0].path == "/jwks"
    refused(get(p, mint(key=RSA_OTHER, headers={"kid": "r1"})))


def test_jwks_unknown_kid_refetch_is_rate_limited(portico, echo, idp):
    idp.keys = [rsa_jwk(RSA, "r1")]
    p = portico(jwks_config(echo.addr, idp.addr, min_refresh="2s"))
    assert get(p, mint(headers={"kid": "r1"})).status == 200
    assert idp.count() == 1
    # The IdP rotates in r2: a token with the new kid triggers one refetch...
    idp.keys = [rsa_jwk(RSA, "r1"), rsa_jwk(RSA_OTHER, "r2")]
    time.sleep(2.1)
    assert get(p, mint(key=RSA_OTHER, headers={"kid": "r2"})).status == 200
    assert idp.count() == 2
    # ...and a flood of unknown kids right after does not hammer the IdP.
    for i in range(5):
        d = refused(get(p, mint(headers={"kid": "unknown%d" % i})))
        assert d["detail"] == "no key is configured to verify the token"
    assert idp.count() == 2


def test_jwks_last_good_set_kept_while_idp_down(portico, echo, idp):
    idp.keys = [rsa_jwk(RSA, "r1")]
    idp.cache_control = "max-age=1"
    p = portico(jwks_config(echo.addr, idp.addr, min_refresh="500ms"))
    assert get(p, mint(headers={"kid": "r1"})).status == 200
    idp.status = 500
    time.sleep(1.2)
    for _ in range(3):
        assert get(p, mint(headers={"kid": "r1"})).status == 200
        time.sleep(0.6)
    assert idp.count() >= 2  # it kept trying in the background
    # Back up with the key gone: the next refresh drops it.
    idp.status = 200
    idp.keys = [rsa_jwk(RSA_OTHER, "r2")]
    time.sleep(1.2)
    get(p, mint(headers={"kid": "r1"}))  # triggers the refresh
    time.sleep(0.3)
    refused(get(p, mint(headers={"kid": "r1"})))
    assert get(p, mint(key=RSA_OTHER, headers={"kid": "r2"})).status == 200


def test_jwks_unavailable_from_start_is_503(portico, echo, idp):
    idp.status = 503
    p = portico(jwks_config(echo.addr, idp.addr))
    r = get(p, mint(headers={"kid": "r1"}))
    problem_check(r, 503)
    assert echo.requests == []
    # A missing token is still a 401, without asking the IdP.
    refused(get(p), error=None)


def test_jwks_max_age_drives_refresh(portico, echo, idp):
    idp.keys = [rsa_jwk(RSA, "r1")]
    idp.cache_control = "public, max-age=1"
    p = portico(jwks_config(echo.addr, idp.addr, min_refresh="200ms"))
    assert get(p, mint(headers={"kid": "r1"})).status == 200
    assert get(p, mint(headers={"kid": "r1"})).status == 200
    assert idp.count() == 1
    time.sleep(1.3)
    assert get(p, mint(headers={"kid": "r1"})).status == 200  # served with the current set...
    deadline = time.time() + 3
    while idp.count() < 2 and time.time() < deadline:
        time.sleep(0.05)
    assert idp.count() == 2  # ...while it refreshed in the background


def test_query_token_forwarded_but_never_logged(portico, echo, keydir):
    """forward_token: true (the default) sends a query token upstream, but
    the access log shows it REDACTED — the other parameters as received —
    whether the token verified or not."""
    p = portico(jwt_config(echo.addr, all_keys(keydir), token=[{"query": "access_token"}]))
    tok = mint()
    assert get(p, target="/x?a=1&access_token=%s&b=2" % tok).status == 200
    assert echo.last().target == "/x?a=1&access_token=%s&b=2" % tok
    refused(get(p, target="/y?access_token=%s" % (tok + "x")))  # refused: masked too
    deadline = time.monotonic() + 5
    while len(p.access_lines()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = p.access_lines()
    assert len(lines) == 2 and all(tok not in ln for ln in lines), lines
    paths = [json.loads(ln)["path"] for ln in lines]
    assert paths == ["/x?a=1&access_token=REDACTED&b=2", "/y?access_token=REDACTED"]
