"""mtls_auth: the consumer named by the client certificate an mTLS listener
verified — its subject DN or a SAN through `credentials.mtls`, its CN by
consumer name, or an ad-hoc consumer — with real certificates made by the
openssl CLI. No certificate is "no credential" (other methods, anonymous);
a certificate that maps to nobody, or to two consumers, is a 401; headers a
client sends (X-Client-Subject, X-Consumer-Name...) never count. The same
holds over HTTP/2 (ALPN h2 on the mTLS listener)."""
import pytest

from conftest import free_port, simple_config, to_yaml
from test_auth_keys import ALICE_KEY, consumers as key_consumers, run_check
from tlsutil import client_ctx, make_ca, sign, tls_connect
from upstreams import recv_all


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("mtls-auth-pki")

    def signed(name, subj, sans, by="ca"):
        return sign(d, name, subj, "subjectAltName=" + sans + "\n", ca=by)

    out = {"ca": make_ca(d, "ca", "Portico mtls_auth CA"), "evil_ca": make_ca(d, "evil", "Evil CA")}
    out["server"] = signed("server", "/CN=a.test", "DNS:a.test")
    out["alice"] = signed("alice", "/O=Acme/CN=alice", "DNS:alice.acme.test,URI:spiffe://acme/ns/x,email:al@acme.com")
    out["svc"] = signed("svc", "/CN=svc-billing", "URI:spiffe://acme/ns/prod/sa/billing")
    out["two"] = signed("two", "/CN=two", "URI:spiffe://acme/alice-id,URI:spiffe://acme/bob-id")
    out["nobody"] = signed("nobody", "/CN=nobody", "DNS:nobody.test")
    out["evil_alice"] = signed("evil_alice", "/O=Acme/CN=alice", "URI:spiffe://acme/ns/x", by="evil")
    return out


def consumers():
    return [
        {"name": "alice", "groups": ["staff"],
         "credentials": {"mtls": {"subject": "CN=alice,O=Acme", "san": ["URI:spiffe://acme/alice-id"]}}},
        {"name": "bob", "groups": ["staff"], "credentials": {"mtls": {"san": "URI:spiffe://acme/bob-id"}}},
        {"name": "billing", "groups": ["services"],
         "credentials": {"mtls": {"san": "URI:spiffe://acme/ns/prod/sa/billing"}}},
        {"name": "guest", "groups": ["public"]},
    ]


def start(portico, echo, pki, plugins, route_extra=None, cons=None):
    port = free_port()
    tls = {"certificates": [{"cert": pki["server"][0], "key": pki["server"][1]}],
           "client_auth": {"mode": "optional", "ca": pki["ca"]}}
    cfg = simple_config(echo.addr, route_extra=dict(route_extra or {}, plugins=plugins),
                        listen=[{"address": "127.0.0.1:%d" % port, "tls": tls}],
                        consumers=cons if cons is not None else consumers())
    return portico(cfg, port=port, env={"CAROL_KEY": "carol-env-key-0123456789abcdef"})


def call(p, pki, cert=None, headers=""):
    """GET over TLS with an optional client certificate: (status, head, upstream request or None)."""
    s = tls_connect(p.port, client_ctx(pki, cert=pki[cert] if cert else None), "a.test")
    try:
        s.sendall(("GET /m HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n%s\r\n" % headers).encode())
        buf = recv_all(s)
    finally:
        s.close()
    head = buf.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    return int(head.split(" ", 2)[1]), head


def ok_as(p, echo, pki, cert, name, groups=None, headers=""):
    n = len(echo.requests)
    status, head = call(p, pki, cert, headers)
    assert status == 200, head
    assert len(echo.requests) == n + 1
    req = echo.requests[-1]
    assert req.header_all("X-Consumer-Name") == [name]
    if groups is not None:
        assert req.header_all("X-Consumer-Groups") == ([groups] if groups else [])


def unauthorized(p, echo, pki, cert=None, headers=""):
    n = len(echo.requests)
    status, head = call(p, pki, cert, headers)
    assert status == 401, head
    assert "application/problem+json" in head.lower()
    assert "www-authenticate" not in head.lower()  # certificates have no challenge
    assert len(echo.requests) == n


SPOOF = "X-Client-Subject: CN=alice,O=Acme\r\nX-Client-SANs: URI:spiffe://acme/alice-id\r\nX-Consumer-Name: alice\r\n"


def test_subject_through_credentials(portico, echo, pki):
    p = start(portico, echo, pki, [{"mtls_auth": {}}])
    ok_as(p, echo, pki, "alice", "alice", "staff", headers="X-Consumer-Name: root\r\n")
    unauthorized(p, echo, pki, "nobody")        # verified, but nobody's certificate
    unauthorized(p, echo, pki, "svc")           # its SAN is billing's, but identity is the subject
    unauthorized(p, echo, pki)                  # no certificate: 401 without a challenge
    unauthorized(p, echo, pki, headers=SPOOF)   # headers are never a certificate


def test_untrusted_certificate_never_names_anyone(portico, echo, pki):
    p = start(portico, echo, pki, [{"mtls_auth": {}}])
    try:
        status, _ = call(p, pki, "evil_alice")
    except Exception:  # noqa: BLE001 - the handshake may be refused outright
        return
    assert status == 401


def test_san_through_credentials(portico, echo, pki):
    p = start(portico, echo, pki, [{"mtls_auth": {"identity": "san", "san_types": ["URI"]}}])
    ok_as(p, echo, pki, "svc", "billing", "services")
    unauthorized(p, echo, pki, "two")       # two SANs, two consumers: ambiguous
    unauthorized(p, echo, pki, "alice")     # its URI SAN is nobody's; the DNS/email ones are not considered
    unauthorized(p, echo, pki, "nobody")


def test_cn_by_consumer_name(portico, echo, pki):
    p = start(portico, echo, pki, [{"mtls_auth": {"identity": "cn", "consumer": "name"}}])
    ok_as(p, echo, pki, "alice", "alice", "staff")
    unauthorized(p, echo, pki, "nobody")
    unauthorized(p, echo, pki, "svc")


def test_ad_hoc_from_uri_san_with_groups_and_acl(portico, echo, pki):
    p = start(portico, echo, pki, [{"mtls_auth": {"identity": "san", "san_types": ["URI"], "consumer": "ad_hoc",
                                                  "groups": ["workloads"]}},
                                   {"acl": {"allow": ["workloads"]}}])
    ok_as(p, echo, pki, "svc", "spiffe://acme/ns/prod/sa/billing", "workloads", headers=SPOOF)
    ok_as(p, echo, pki, "two", "spiffe://acme/alice-id", "workloads")  # ad hoc: the first URI SAN
    unauthorized(p, echo, pki, "nobody")                                 # no URI SAN
    unauthorized(p, echo, pki)                                           # acl: nobody at all


def test_ad_hoc_cn(portico, echo, pki):
    p = start(portico, echo, pki, [{"mtls_auth": {"identity": "cn", "consumer": "ad_hoc"}}])
    ok_as(p, echo, pki, "nobody", "nobody", "")


def test_mode_any_with_key_auth_and_anonymous(portico, echo, pki):
    cons = key_consumers() + [{"name": "billing", "groups": ["services"],
                               "credentials": {"mtls": {"san": "URI:spiffe://acme/ns/prod/sa/billing"}}}]
    p = start(portico, echo, pki, [{"mtls_auth": {"identity": "san"}}, {"key_auth": {}}],
              route_extra={"auth": {"anonymous": "guest"}}, cons=cons)
    ok_as(p, echo, pki, "svc", "billing")
    ok_as(p, echo, pki, None, "alice", headers="X-API-Key: %s\r\n" % ALICE_KEY)
    ok_as(p, echo, pki, None, "guest", headers=SPOOF)
    unauthorized(p, echo, pki, "nobody", headers="X-API-Key: %s\r\n" % ALICE_KEY)  # the certificate decides


@pytest.mark.parametrize("conf,err", [
    ({"identity": "cn"}, "identity cn maps by consumer name"),
    ({"consumer": "name"}, "not a consumer name"),
    ({"san_types": ["URI"]}, "identity san only"),
    ({"identity": "san", "san_types": ["IP"]}, "DNS, URI or email"),
    ({"groups": ["x"]}, "ad_hoc only"),
    ({"identity": "dn"}, "mtls_auth.identity must be one of"),
])
def test_config_errors(tmp_path, conf, err):
    cfg = simple_config("127.0.0.1:1", plugins=[{"mtls_auth": conf}], listen="127.0.0.1:1")
    out = run_check(tmp_path, to_yaml(cfg))
    assert out.returncode == 1 and err in out.stderr.decode(), out.stderr


# ------------------------------------------------------------ over HTTP/2

def h2_calls(p, pki, cert=None, requests=(((), "/m"),)):
    """One TLS connection that negotiates h2 by ALPN (with an optional
    client certificate) and sends each (extra headers, path) on its own
    stream; returns [(status, headers dict, body)] in order."""
    import h2.config
    import h2.connection
    import h2.events
    from h2util import h2_head, h2_read_until
    s = tls_connect(p.port, client_ctx(pki, alpn=("h2",), cert=pki[cert] if cert else None), "a.test")
    try:
        assert s.selected_alpn_protocol() == "h2"
        c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
        c.initiate_connection()
        sids = []
        for extra, path in requests:
            sid = c.get_next_available_stream_id()
            c.send_headers(sid, h2_head(path, extra, method="GET", scheme="https", authority="a.test"),
                           end_stream=True)
            sids.append(sid)
        s.sendall(c.data_to_send())
        got = {sid: {"headers": None, "body": b""} for sid in sids}
        ended = set()

        def pred(ev):
            if isinstance(ev, h2.events.ResponseReceived):
                got[ev.stream_id]["headers"] = {k.decode(): v.decode() for k, v in ev.headers}
            elif isinstance(ev, h2.events.DataReceived):
                got[ev.stream_id]["body"] += ev.data
                c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                ended.add(ev.stream_id)
            return len(ended) == len(sids)
        _, done = h2_read_until(s, c, pred)
        assert done, got
    finally:
        s.close()
    return [(int(got[sid]["headers"][":status"]), got[sid]["headers"], got[sid]["body"]) for sid in sids]


def test_h2_consumer_from_certificate(portico, echo, pki):
    """mtls_auth over HTTP/2 (ALPN h2 on the mTLS listener): every stream of
    the connection is the certificate's consumer; spoofed headers do not
    count; a certificate of nobody, or none, is the same 401 (no challenge)
    as over HTTP/1."""
    p = start(portico, echo, pki, [{"mtls_auth": {}}])
    n = len(echo.requests)
    res = h2_calls(p, pki, "alice", [((), "/one"), ((("x-consumer-name", "root"),), "/two")])
    assert [st for st, _, _ in res] == [200, 200], res
    reqs = echo.requests[n:]
    assert sorted(r.path for r in reqs) == ["/one", "/two"]
    for r in reqs:
        assert r.header_all("X-Consumer-Name") == ["alice"] and r.header_all("X-Consumer-Groups") == ["staff"]
    spoof = tuple((k.lower(), v) for k, v in (("X-Client-Subject", "CN=alice,O=Acme"), ("X-Consumer-Name", "alice")))
    for cert, extra in (("nobody", ()), (None, ()), (None, spoof), ("svc", ())):
        n = len(echo.requests)
        [(st, hs, body)] = h2_calls(p, pki, cert, [(extra, "/m")])
        assert st == 401, (cert, st, body)
        assert hs["content-type"] == "application/problem+json" and "www-authenticate" not in hs
        assert len(echo.requests) == n


def test_h2_acl_forbids_known_consumer_and_untrusted_ca(portico, echo, pki):
    p = start(portico, echo, pki, [{"mtls_auth": {"identity": "san", "san_types": ["URI"]}},
                                   {"acl": {"allow": ["staff"]}}])
    n = len(echo.requests)
    [(st, hs, _)] = h2_calls(p, pki, "svc")     # billing, group services: known but not allowed
    assert st == 403 and hs["content-type"] == "application/problem+json"
    [(st, _, _)] = h2_calls(p, pki, "two")      # ambiguous: 401
    assert st == 401
    [(st, _, _)] = h2_calls(p, pki)             # no certificate: 401
    assert st == 401
    assert len(echo.requests) == n
    try:
        [(st, _, _)] = h2_calls(p, pki, "evil_alice")
    except (OSError, AssertionError):           # the handshake may be refused outright
        st = None
    assert st in (None, 401)
    # the same certificate on a route that allows its group: admitted over h2
    p2 = start(portico, echo, pki, [{"mtls_auth": {"identity": "san", "san_types": ["URI"]}},
                                    {"acl": {"allow": ["services"]}}])
    [(st, _, _)] = h2_calls(p2, pki, "svc")
    assert st == 200 and echo.requests[-1].header_all("X-Consumer-Name") == ["billing"]
