"""The `cache` plugin (issue 11, docs/caching.md): RFC 9111 freshness, Age,
conditional requests and revalidation, HEAD from a GET entry, Vary,
request collapsing, stale-while-revalidate, stale-if-error, Cache-Status,
purges through the admin listener, metrics — and an attack battery
(unkeyed headers, fat GET, cache deception, Vary splitting, errors,
oversized objects, Authorization)."""

import re
import threading
import time

import pytest

from conftest import simple_config
from test_admin_metrics import admin_cfg, scrape
from h2util import H2
from upstreams import CLOSE, Client, PeerClosed, build_request, make_response, problem_check, request, wait_reloaded

TOKEN = "cache-admin-token-0123456789"


class Origin:
    """An upstream answering per path from `table` (path -> callable(req) or
    (status, headers, body)), counting the requests it saw per path."""

    def __init__(self, upstream):
        self.table = {}
        self.seen = []
        self.lock = threading.Lock()
        self.up = upstream(self.handle)

    def handle(self, req):
        with self.lock:
            self.seen.append(req)
        path = req.target.split("?")[0]
        spec = self.table.get(path) or self.table.get("*")
        if spec is None:
            return make_response(404, "Not Found", [("Content-Type", "text/plain")], b"none")
        if callable(spec):
            spec = spec(req)
        if not isinstance(spec, tuple):
            return spec  # raw steps
        status, headers, body = spec
        if req.method == "HEAD":
            return make_response(status, "X", list(headers) + [("Content-Length", str(len(body)))], b"",
                                 content_length=False)
        return make_response(status, "X", list(headers), body)

    def count(self, path):
        with self.lock:
            return sum(1 for r in self.seen if r.target.split("?")[0] == path)

    def last(self, path):
        with self.lock:
            return [r for r in self.seen if r.target.split("?")[0] == path][-1]


@pytest.fixture
def origin(upstream):
    return Origin(upstream)


def start(portico, origin, cache=None, token=TOKEN, **route_extra):
    plugins = route_extra.pop("plugins", [])
    cfg = simple_config(origin.up.addr, route_extra=dict(plugins=plugins + [{"cache": cache or {}}], **route_extra))
    cfg, aport = admin_cfg(cfg, token=token)
    p = portico(cfg)
    p.aport = aport
    return p


def get(p, target, headers=None, method="GET", body=None):
    return request(p.port, method, target, headers=headers, body=body)


def status_of(r):
    return r.header("Cache-Status") or ""


def body_resp(body, cc="max-age=60", extra=()):
    return (200, [("Content-Type", "text/plain"), ("Cache-Control", cc)] + list(extra), body)


# ------------------------------------------------------------ basics, Age

def test_h2_clients_hit_and_head(portico, origin):
    body = b"y" * 70000  # more than one HTTP/2 window's worth of DATA
    origin.table["/h2"] = body_resp(body)
    p = start(portico, origin)
    assert get(p, "/h2").body == body
    h = H2(p.port)
    try:
        for sid, method in ((1, "GET"), (3, "HEAD"), (5, "GET")):
            h.c.send_headers(sid, [(":method", method), (":scheme", "http"), (":authority", "example.com"),
                                   (":path", "/h2")], end_stream=True)
        h.flush()
        assert h.wait(lambda: all(h.st(i)["ended"] for i in (1, 3, 5)), 15)
        for sid in (1, 3, 5):
            hd = h.st(sid)["headers"]
            assert hd[b":status"] == b"200" and hd[b"cache-status"].startswith(b"portico; hit")
            assert hd[b"content-length"] == b"70000"
        assert h.st(1)["data"] == body and h.st(5)["data"] == body and h.st(3)["data"] == b""
    finally:
        h.close()
    assert origin.count("/h2") == 1

def test_miss_then_hit_with_age_and_cache_status(portico, origin):
    origin.table["/a"] = body_resp(b"hello", extra=[("ETag", '"v1"')])
    p = start(portico, origin)
    r1 = get(p, "/a")
    assert r1.status == 200 and r1.body == b"hello"
    assert status_of(r1) == "portico; fwd=uri-miss; stored"
    time.sleep(1.1)
    r2 = get(p, "/a")
    assert r2.status == 200 and r2.body == b"hello"
    assert status_of(r2).startswith("portico; hit; ttl=")
    assert int(r2.header("Age")) >= 1
    assert r2.header("ETag") == '"v1"' and r2.header("Content-Type") == "text/plain"
    assert origin.count("/a") == 1


def test_upstream_age_counts(portico, origin):
    origin.table["/aged"] = body_resp(b"x", cc="max-age=100", extra=[("Age", "40")])
    p = start(portico, origin)
    get(p, "/aged")
    r = get(p, "/aged")
    assert int(r.header("Age")) >= 40
    ttl = int(status_of(r).split("ttl=")[1].split(";")[0])
    assert 0 < ttl <= 60


def test_head_served_from_get_entry(portico, origin):
    origin.table["/h"] = body_resp(b"0123456789")
    p = start(portico, origin)
    get(p, "/h")
    r = get(p, "/h", method="HEAD")
    assert r.status == 200 and r.body == b""
    assert r.header("Content-Length") == "10"
    assert status_of(r).startswith("portico; hit")
    assert origin.count("/h") == 1


def test_head_miss_is_not_stored(portico, origin):
    origin.table["/h2"] = body_resp(b"abc")
    p = start(portico, origin)
    r = get(p, "/h2", method="HEAD")
    assert r.status == 200 and "stored" not in status_of(r)
    r = get(p, "/h2")
    assert r.body == b"abc" and status_of(r) == "portico; fwd=uri-miss; stored"


def test_expires_and_no_freshness(portico, origin):
    now = time.time()
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))
    exp = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 120))
    origin.table["/exp"] = (200, [("Date", date), ("Expires", exp)], b"e")
    origin.table["/nofresh"] = (200, [("Content-Type", "text/plain")], b"n")
    p = start(portico, origin)
    get(p, "/exp")
    assert status_of(get(p, "/exp")).startswith("portico; hit")
    r = get(p, "/nofresh")
    assert status_of(r) == "portico; fwd=uri-miss; detail=no-freshness"  # heuristics are off
    get(p, "/nofresh")
    assert origin.count("/nofresh") == 2


def test_heuristic_ttl_when_configured(portico, origin):
    origin.table["/heur"] = (200, [("Content-Type", "text/plain")], b"n")
    p = start(portico, origin, cache={"heuristic_ttl": "30s"})
    get(p, "/heur")
    assert status_of(get(p, "/heur")).startswith("portico; hit")
    assert origin.count("/heur") == 1


def test_max_age_expiry(portico, origin):
    origin.table["/short"] = body_resp(b"s", cc="max-age=1")
    p = start(portico, origin)
    get(p, "/short")
    assert status_of(get(p, "/short")).startswith("portico; hit")
    time.sleep(2.1)
    r = get(p, "/short")
    assert status_of(r).startswith("portico; fwd=stale")
    assert origin.count("/short") == 2


def test_route_without_cache_has_no_cache_status(portico, origin):
    origin.table["/x"] = body_resp(b"x")
    p = portico(simple_config(origin.up.addr))
    r = get(p, "/x")
    assert r.header("Cache-Status") is None
    get(p, "/x")
    assert origin.count("/x") == 2


# ------------------------------------------------ Cache-Control directives

@pytest.mark.parametrize("cc,reason", [("no-store", "no-store"), ("private, max-age=60", "private")])
def test_never_stored(portico, origin, cc, reason):
    origin.table["/n"] = body_resp(b"n", cc=cc)
    p = start(portico, origin)
    assert status_of(get(p, "/n")) == "portico; fwd=uri-miss; detail=" + reason
    get(p, "/n")
    assert origin.count("/n") == 2


def test_no_cache_revalidates_every_time(portico, origin):
    def h(req):
        if req.header("If-None-Match") == '"e1"':
            return (304, [("ETag", '"e1"'), ("Cache-Control", "no-cache")], b"")
        return body_resp(b"body", cc="no-cache", extra=[("ETag", '"e1"')])
    origin.table["/nc"] = h
    p = start(portico, origin)
    assert get(p, "/nc").body == b"body"
    r = get(p, "/nc")
    assert r.status == 200 and r.body == b"body"
    assert "fwd-status=304" in status_of(r)
    assert origin.last("/nc").header("If-None-Match") == '"e1"'
    assert origin.count("/nc") == 2


def test_s_maxage_wins_and_must_revalidate_never_stale(portico, origin):
    origin.table["/s"] = body_resp(b"s", cc="max-age=0, s-maxage=60")
    origin.table["/mr"] = (200, [("Cache-Control", "max-age=1, must-revalidate, stale-if-error=60")], b"m")
    p = start(portico, origin)
    get(p, "/s")
    assert status_of(get(p, "/s")).startswith("portico; hit")
    get(p, "/mr")
    time.sleep(2.1)
    origin.table["/mr"] = (503, [("Content-Type", "text/plain")], b"down")
    r = get(p, "/mr")
    assert r.status == 503  # must-revalidate: never served stale, even on errors


def test_request_no_cache_goes_upstream(portico, origin):
    origin.table["/rq"] = body_resp(b"r")
    p = start(portico, origin)
    get(p, "/rq")
    r = get(p, "/rq", headers={"Cache-Control": "no-cache"})
    assert status_of(r).startswith("portico; fwd=request")
    assert origin.count("/rq") == 2


# ------------------------------------------------------ conditional requests

def test_client_conditionals_get_304_from_fresh_entry(portico, origin):
    lm = "Mon, 01 Jan 2024 00:00:00 GMT"
    origin.table["/c"] = body_resp(b"content", extra=[("ETag", 'W/"abc"'), ("Last-Modified", lm)])
    p = start(portico, origin)
    get(p, "/c")
    r = get(p, "/c", headers={"If-None-Match": '"abc"'})
    assert r.status == 304 and r.body == b"" and r.header("ETag") == 'W/"abc"'
    assert status_of(r).startswith("portico; hit")
    assert get(p, "/c", headers={"If-None-Match": '"zzz"'}).status == 200
    assert get(p, "/c", headers={"If-Modified-Since": lm}).status == 304
    assert get(p, "/c", headers={"If-Modified-Since": "Sun, 31 Dec 2023 00:00:00 GMT"}).status == 200
    assert origin.count("/c") == 1


def test_stale_entry_revalidated_with_etag_and_refreshed(portico, origin):
    def h(req):
        if req.header("If-None-Match") == '"v1"':
            return (304, [("ETag", '"v1"'), ("Cache-Control", "max-age=60"), ("X-Fresh", "yes")], b"")
        return body_resp(b"payload", cc="max-age=1", extra=[("ETag", '"v1"')])
    origin.table["/rv"] = h
    p = start(portico, origin)
    get(p, "/rv")
    time.sleep(2.1)
    r = get(p, "/rv")
    assert r.status == 200 and r.body == b"payload"
    assert "fwd=stale" in status_of(r) and "fwd-status=304" in status_of(r)
    assert r.header("X-Fresh") == "yes"  # stored fields updated from the 304
    r = get(p, "/rv")
    assert status_of(r).startswith("portico; hit")  # refreshed for max-age=60
    assert origin.count("/rv") == 2


def test_head_with_stale_entry_is_forwarded_plainly(portico, origin):
    origin.table["/hs"] = body_resp(b"abc", cc="max-age=1", extra=[("ETag", '"h"')])
    p = start(portico, origin)
    get(p, "/hs")
    time.sleep(2.1)
    r = get(p, "/hs", method="HEAD")
    assert r.status == 200 and r.header("Content-Length") == "3"
    assert origin.last("/hs").header("If-None-Match") is None


def test_revalidation_with_last_modified(portico, origin):
    lm = "Mon, 01 Jan 2024 00:00:00 GMT"

    def h(req):
        if req.header("If-Modified-Since") == lm:
            return (304, [("Cache-Control", "max-age=60")], b"")
        return body_resp(b"lm", cc="max-age=1", extra=[("Last-Modified", lm)])
    origin.table["/lm"] = h
    p = start(portico, origin)
    get(p, "/lm")
    time.sleep(2.1)
    r = get(p, "/lm", headers={"If-Modified-Since": lm})
    assert r.status == 304  # the client holds it; refreshed upstream with a 304
    assert origin.last("/lm").header("If-Modified-Since") == lm


# ------------------------------------------------------------------- Vary

def test_vary_variants(portico, origin):
    origin.table["/v"] = lambda req: body_resp(("lang=" + (req.header("Accept-Language") or "-")).encode(),
                                                extra=[("Vary", "Accept-Language")])
    p = start(portico, origin)
    assert get(p, "/v", headers={"Accept-Language": "fr"}).body == b"lang=fr"
    r = get(p, "/v", headers={"Accept-Language": "de"})
    assert r.body == b"lang=de" and status_of(r).startswith("portico; fwd=vary-miss")
    r = get(p, "/v", headers={"Accept-Language": "fr"})
    assert r.body == b"lang=fr" and status_of(r).startswith("portico; hit")
    r = get(p, "/v", headers={"Accept-Language": "de"})
    assert r.body == b"lang=de" and status_of(r).startswith("portico; hit")
    assert origin.count("/v") == 2


def test_vary_changes_are_followed(portico, origin):
    vary = {"on": "Accept-Language"}
    origin.table["/vc"] = lambda req: body_resp(("l=%s e=%s" % (req.header("Accept-Language"),
                                                                 req.header("X-Enc"))).encode(),
                                                 cc="max-age=1", extra=[("Vary", vary["on"])] if vary["on"] else [])
    p = start(portico, origin)
    get(p, "/vc", headers={"Accept-Language": "fr", "X-Enc": "1"})
    time.sleep(2.1)
    vary["on"] = "X-Enc"  # the origin now varies on another field
    r = get(p, "/vc", headers={"Accept-Language": "fr", "X-Enc": "2"})
    assert r.body == b"l=fr e=2"
    r = get(p, "/vc", headers={"Accept-Language": "de", "X-Enc": "2"})
    assert r.body == b"l=fr e=2" and status_of(r).startswith("portico; hit")  # keyed on X-Enc now
    r = get(p, "/vc", headers={"Accept-Language": "fr", "X-Enc": "3"})
    assert r.body == b"l=fr e=3" and status_of(r).startswith("portico; fwd=vary-miss")
    time.sleep(2.1)
    vary["on"] = None  # no Vary any more: the entry replaces the marker
    r = get(p, "/vc", headers={"X-Enc": "4"})
    assert r.body == b"l=None e=4"
    r = get(p, "/vc", headers={"X-Enc": "5"})
    assert r.body == b"l=None e=4" and status_of(r).startswith("portico; hit")


def test_vary_star_never_served_from_cache(portico, origin):
    origin.table["/vs"] = body_resp(b"s", extra=[("Vary", "*")])
    p = start(portico, origin)
    assert "detail=vary-star" in status_of(get(p, "/vs"))
    get(p, "/vs")
    assert origin.count("/vs") == 2


# ------------------------------------------------------------------- keys

def test_key_query_and_headers(portico, origin):
    origin.table["/k"] = lambda req: body_resp(req.target.encode())
    p = start(portico, origin, cache={"key": {"ignore_query": ["utm_source"], "headers": ["X-Tenant"]}})
    get(p, "/k?a=1&utm_source=x")
    r = get(p, "/k?a=1&utm_source=y")
    assert status_of(r).startswith("portico; hit") and r.body == b"/k?a=1&utm_source=x"
    assert status_of(get(p, "/k?a=2")).startswith("portico; fwd=uri-miss")
    assert status_of(get(p, "/k?a=1", headers={"X-Tenant": "t1"})).startswith("portico; fwd=uri-miss")
    assert status_of(get(p, "/k?a=1", headers={"X-Tenant": "t1"})).startswith("portico; hit")


def test_key_query_none(portico, origin):
    origin.table["/q"] = body_resp(b"q")
    p = start(portico, origin, cache={"key": {"query": "none"}})
    get(p, "/q?x=1")
    assert status_of(get(p, "/q?y=2")).startswith("portico; hit")


@pytest.mark.parametrize("order", ["cache-first", "compression-first"])
def test_with_compression(portico, origin, order):
    import gzip
    text = b"hello cache " * 500
    origin.table["/z"] = (200, [("Content-Type", "text/plain"), ("Cache-Control", "max-age=60")], text)
    cache, comp = {"cache": {}}, {"compression": {"algorithms": ["gzip"]}}
    plugins = [cache, comp] if order == "cache-first" else [comp, cache]
    p = portico(simple_config(origin.up.addr, route_extra={"plugins": plugins}))
    for _ in range(2):
        rz = get(p, "/z", headers={"Accept-Encoding": "gzip"})
        assert rz.header("Content-Encoding") == "gzip" and gzip.decompress(rz.body) == text
        ri = get(p, "/z")
        assert ri.header("Content-Encoding") is None and ri.body == text
    assert status_of(rz).startswith("portico; hit") and status_of(ri).startswith("portico; hit")
    # cache first: one entry compressed per client; compression first: one variant per Accept-Encoding
    assert origin.count("/z") == (1 if order == "cache-first" else 2)


# ------------------------------------------------------------ attack battery

def test_unkeyed_headers_do_not_poison(portico, origin):
    origin.table["/p"] = lambda req: body_resp(("host=" + (req.header("X-Forwarded-Host") or "none")).encode())
    p = start(portico, origin)
    r = get(p, "/p", headers={"X-Forwarded-Host": "evil.example", "X-Forwarded-Scheme": "nothttps",
                               "X-Original-URL": "/admin", "X-HTTP-Method-Override": "POST"})
    assert b"evil" not in r.body  # Portico sets X-Forwarded-Host from the request's Host
    for hdrs in ({}, {"X-Forwarded-Host": "other.example"}, {"X-Original-URL": "/admin"},
                 {"X-Forwarded-Port": "1"}):
        r2 = get(p, "/p", headers=hdrs)
        assert status_of(r2).startswith("portico; hit") and r2.body == r.body  # unkeyed: one entry
    assert origin.count("/p") == 1


def test_unkeyed_forwarded_host_does_not_reach_origin(portico, origin):
    origin.table["/p2"] = lambda req: body_resp(("xfh=" + (req.header("X-Forwarded-Host") or "")).encode())
    p = start(portico, origin)
    r = get(p, "/p2", headers={"X-Forwarded-Host": "evil.example"})
    assert b"evil.example" not in r.body  # Portico sets X-Forwarded-Host from the request's Host


def test_fat_get_body_not_keyed_nor_stored(portico, origin):
    origin.table["/fat"] = lambda req: body_resp(b"body=" + req.body)
    p = start(portico, origin)
    r = get(p, "/fat", body=b"poison")
    assert r.body == b"body=poison" and "detail=request-body" in status_of(r)
    r = get(p, "/fat")
    assert r.body == b"body=" and status_of(r) == "portico; fwd=uri-miss; stored"
    r = get(p, "/fat", body=b"poison2")
    assert r.body == b"body=" and status_of(r).startswith("portico; hit")  # same key, the clean entry


def test_cache_deception_private_and_set_cookie(portico, origin):
    origin.table["/account/x.css"] = (200, [("Content-Type", "text/html"), ("Cache-Control", "private")],
                                      b"secret account page")
    origin.table["/account/y.css"] = (200, [("Content-Type", "text/html"), ("Cache-Control", "max-age=60"),
                                            ("Set-Cookie", "sid=abc")], b"secret with cookie")
    origin.table["/account/z.css"] = (200, [("Content-Type", "text/html"), ("Cache-Control", "no-store")],
                                      b"secret no-store")
    p = start(portico, origin)
    for path, why in (("/account/x.css", "private"), ("/account/y.css", "set-cookie"),
                      ("/account/z.css", "no-store")):
        r = get(p, path, headers={"Cookie": "sid=victim"})
        assert why in status_of(r)
        r = get(p, path)
        assert not status_of(r).startswith("portico; hit")
        assert origin.count(path) == 2


def test_set_cookie_opt_in_strips_the_cookie(portico, origin):
    origin.table["/sc"] = body_resp(b"sc", extra=[("Set-Cookie", "sid=abc")])
    p = start(portico, origin, cache={"cache_set_cookie": True})
    assert get(p, "/sc").header("Set-Cookie") == "sid=abc"
    r = get(p, "/sc")
    assert status_of(r).startswith("portico; hit") and r.header("Set-Cookie") is None


def test_vary_splitting_is_bounded(portico, origin):
    origin.table["/split"] = lambda req: body_resp(b"x", extra=[("Vary", "X-Junk")])
    p = start(portico, origin, cache={"max_size": "64k", "max_object_size": "4k"})
    for i in range(300):
        get(p, "/split", headers={"X-Junk": "v%d" % i * 20})
    m = scrape(p.aport, TOKEN)
    held = [v for labels, v in m["portico_cache_bytes"] if labels.get("zone") == "route:main"]
    assert held and held[0] <= 64 * 1024
    evicted = [v for labels, v in m["portico_cache_evicted_entries"] if labels.get("zone") == "route:main"]
    assert evicted and evicted[0] > 0


@pytest.mark.parametrize("status", [500, 502, 503, 403, 302])
def test_error_responses_not_cached_by_default(portico, origin, status):
    origin.table["/err"] = (status, [("Cache-Control", "max-age=60"), ("Location", "/x")], b"e")
    p = start(portico, origin)
    assert "stored" not in status_of(get(p, "/err"))
    get(p, "/err")
    assert origin.count("/err") == 2


def test_error_statuses_opt_in(portico, origin):
    origin.table["/e404"] = (404, [], b"nothing")  # heuristically cacheable, but no freshness
    origin.table["/e503"] = (503, [("Cache-Control", "max-age=60")], b"down")
    p = start(portico, origin, cache={"statuses": [503]})
    assert "no-freshness" in status_of(get(p, "/e404"))
    get(p, "/e503")
    assert status_of(get(p, "/e503")).startswith("portico; hit")


def test_oversized_objects_not_stored(portico, origin):
    big = b"x" * 200000
    origin.table["/big"] = body_resp(big)
    origin.table["/bigchunked"] = lambda req: [
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (10000, b"y" * 10000) for _ in range(20)) + b"0\r\n\r\n"]
    p = start(portico, origin, cache={"max_object_size": "100k"})
    r = get(p, "/big")
    assert r.body == big and "detail=too-large" in status_of(r)
    r = get(p, "/big")
    assert r.body == big and origin.count("/big") == 2
    r = get(p, "/bigchunked")
    assert len(r.body) == 200000
    r = get(p, "/bigchunked")
    assert len(r.body) == 200000 and not status_of(r).startswith("portico; hit")
    assert origin.count("/bigchunked") == 2


def test_max_object_size_counts_the_whole_entry(portico, origin):
    origin.table["/edge"] = body_resp(b"e" * 4090)  # the body fits 4k, the entry with its headers does not
    origin.table["/fits"] = body_resp(b"f" * 3000)
    p = start(portico, origin, cache={"max_object_size": "4k"})
    assert "detail=too-large" in status_of(get(p, "/edge"))
    assert status_of(get(p, "/fits")) == "portico; fwd=uri-miss; stored"
    assert status_of(get(p, "/fits")).startswith("portico; hit")


def test_authorization_not_cached_unless_opted_in(portico, origin):
    origin.table["/auth"] = body_resp(b"for alice")
    p = start(portico, origin)
    r = get(p, "/auth", headers={"Authorization": "Bearer alice"})
    assert status_of(r) == "portico; fwd=bypass; detail=authorization"
    r = get(p, "/auth")
    assert status_of(r) == "portico; fwd=uri-miss; stored"  # alice's answer was not stored
    r = get(p, "/auth", headers={"Authorization": "Bearer bob"})
    assert "bypass" in status_of(r)  # nor served from the anonymous entry
    assert origin.count("/auth") == 3


def test_callers_named_by_auth_plugins_not_cached(portico, origin):
    """key_auth removes its credential before the cache looks: the caller it
    named still keeps the response out of the shared cache."""
    origin.table["/me"] = lambda req: body_resp(("for " + (req.header("X-Consumer") or "?")).encode())
    cfg = simple_config(origin.up.addr, route_extra={"plugins": [{"key_auth": {}}, {"cache": {}}]})
    sha = lambda k: __import__("hashlib").sha256(k.encode()).hexdigest()  # noqa: E731
    cfg["consumers"] = [{"name": "alice", "credentials": {"keys": [{"key_sha256": sha("alice-key-0123456789")}]}},
                        {"name": "bob", "credentials": {"keys": [{"key_sha256": sha("bob-key-0123456789ab")}]}}]
    p = portico(cfg)
    for who in ("alice-key-0123456789", "bob-key-0123456789ab", "alice-key-0123456789"):
        r = get(p, "/me", headers={"X-API-Key": who})
        assert r.status == 200 and status_of(r) == "portico; fwd=bypass; detail=authorization"
    assert origin.count("/me") == 3
    # listed after the cache, the caller it names still keeps the answer out of the store
    cfg["routes"][0]["plugins"] = [{"cache": {}}, {"key_auth": {}}]
    p.write_config(cfg)
    p.signal(__import__("signal").SIGHUP)
    wait_reloaded(p)
    for who in ("alice-key-0123456789", "bob-key-0123456789ab"):
        r = get(p, "/me", headers={"X-API-Key": who})
        assert r.status == 200 and status_of(r) == "portico; fwd=bypass; detail=authorization"
    r = get(p, "/me")
    assert r.status == 401 and "hit" not in status_of(r)  # nothing stored for an anonymous client to get


def test_authorization_opt_in_keyed_per_credential(portico, origin):
    origin.table["/who"] = lambda req: body_resp(("for " + req.header("Authorization")).encode())
    p = start(portico, origin, cache={"cache_authorization": True, "key": {"headers": ["Authorization"]}})
    assert get(p, "/who", headers={"Authorization": "Bearer alice"}).body == b"for Bearer alice"
    r = get(p, "/who", headers={"Authorization": "Bearer alice"})
    assert r.body == b"for Bearer alice" and status_of(r).startswith("portico; hit")
    r = get(p, "/who", headers={"Authorization": "Bearer bob"})
    assert r.body == b"for Bearer bob" and status_of(r).startswith("portico; fwd=uri-miss")


def test_unsafe_method_invalidates(portico, origin):
    origin.table["/inv"] = lambda req: body_resp(b"ok")
    p = start(portico, origin)
    get(p, "/inv")
    assert status_of(get(p, "/inv")).startswith("portico; hit")
    r = get(p, "/inv", method="POST", body=b"change")
    assert status_of(r) == "portico; fwd=bypass; detail=method"
    assert status_of(get(p, "/inv")).startswith("portico; fwd=uri-miss")


# ---------------------------------------------------------------- collapsing

def test_collapsing_one_upstream_fetch(portico, origin):
    origin.table["/slow"] = lambda req: [1.0, make_response(200, "OK", [("Cache-Control", "max-age=60")], b"slow")]
    p = start(portico, origin)
    results = []

    def client():
        results.append(get(p, "/slow"))
    ts = [threading.Thread(target=client) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(results) == 8 and all(r.status == 200 and r.body == b"slow" for r in results)
    assert origin.count("/slow") == 1
    # the others read the stored entry, or the fetch's response as it streamed
    assert sum(1 for r in results if status_of(r).startswith("portico; hit")
               or status_of(r) == "portico; fwd=uri-miss; collapsed") == 7


class Gated(list):
    """Upstream steps that send `first`, wait for `gate`, then send `rest`."""

    def __init__(self, first, gate, rest):
        super().__init__()
        self.first, self.gate, self.rest = first, gate, rest

    def __iter__(self):
        yield self.first
        self.gate.wait(20)
        yield self.rest


def open_get(p, target):
    c = Client(p.port)
    c.send(build_request("GET", target))
    return c


def test_collapsed_waiter_streams_the_response_as_it_arrives(portico, origin):
    """A waiter gets the head and the first half while the origin still
    holds the second half back: entries are streamed to waiting clients."""
    body = bytes(range(256)) * 400  # 102,400 bytes
    half = len(body) // 2
    gate = threading.Event()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nCache-Control: max-age=60\r\n" \
        b"Content-Length: %d\r\n\r\n" % len(body)
    origin.table["/stream"] = lambda req: Gated(head + body[:half], gate, body[half:])
    p = start(portico, origin)
    try:
        a = open_get(p, "/stream")
        deadline = time.time() + 10
        while origin.count("/stream") < 1 and time.time() < deadline:
            time.sleep(0.01)
        b = open_get(p, "/stream")
        hb = b.reader.read_until(b"\r\n\r\n").decode()
        assert hb.startswith("HTTP/1.1 200")
        assert "cache-status: portico; fwd=uri-miss; collapsed" in hb.lower()
        assert "content-length: %d" % len(body) in hb.lower()
        assert b.reader.read_exact(half) == body[:half]  # before the origin sent the rest
    finally:
        gate.set()
    assert b.reader.read_exact(len(body) - half) == body[half:]
    ha = a.reader.read_until(b"\r\n\r\n").decode()
    assert "portico; fwd=uri-miss; stored" in ha
    assert a.reader.read_exact(len(body)) == body
    a.close()
    b.close()
    assert origin.count("/stream") == 1
    r = get(p, "/stream")
    assert r.body == body and status_of(r).startswith("portico; hit")


def test_collapsed_waiter_cut_when_the_fetch_fails(portico, origin):
    body = b"x" * 50000
    gate = threading.Event()
    head = b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: %d\r\n\r\n" % len(body)
    origin.table["/cut"] = lambda req: Gated(head + body[:1000], gate, CLOSE)
    p = start(portico, origin)
    try:
        a = open_get(p, "/cut")
        deadline = time.time() + 10
        while origin.count("/cut") < 1 and time.time() < deadline:
            time.sleep(0.01)
        b = open_get(p, "/cut")
        hb = b.reader.read_until(b"\r\n\r\n").decode()
        assert "collapsed" in hb
        assert b.reader.read_exact(1000) == body[:1000]
    finally:
        gate.set()
    with pytest.raises(PeerClosed):  # cut, never a short body passed off as complete
        b.reader.read_exact(len(body) - 1000)
    with pytest.raises(PeerClosed):
        a.reader.read_until(b"\r\n\r\n")
        a.reader.read_exact(len(body))
    a.close()
    b.close()
    origin.table["/cut"] = body_resp(b"ok")
    r = get(p, "/cut")
    assert r.body == b"ok" and status_of(r) == "portico; fwd=uri-miss; stored"  # nothing half-stored


def test_collapsing_waiters_fetch_themselves_after_timeout(portico, origin):
    origin.table["/hang"] = lambda req: [2.0, make_response(200, "OK", [("Cache-Control", "no-store")], b"h")]
    p = start(portico, origin, cache={"collapse_timeout": "200ms"})
    results = []

    def client():
        results.append(get(p, "/hang"))
    ts = [threading.Thread(target=client) for _ in range(3)]
    for t in ts:
        t.start()
        time.sleep(0.05)
    for t in ts:
        t.join()
    assert all(r.status == 200 for r in results)
    assert origin.count("/hang") == 3
    assert sum(1 for r in results if "collapse-timeout" in status_of(r)) == 2


def test_collapsing_uncacheable_answer_releases_waiters(portico, origin):
    origin.table["/nost"] = lambda req: [0.5, make_response(200, "OK", [("Cache-Control", "no-store")], b"n")]
    p = start(portico, origin)
    results = []
    ts = [threading.Thread(target=lambda: results.append(get(p, "/nost"))) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert all(r.status == 200 and r.body == b"n" for r in results)
    assert origin.count("/nost") >= 2  # each waiter fetched for itself once the first answer was not stored


def test_workers_share_one_store_under_concurrent_load(portico, origin):
    """Two workers, 12 client threads over 40 keys (some slow, so fetches
    collapse and stream), purges meanwhile: every answer is the right body
    for its key, and the origin sees far fewer requests than clients made."""
    def h(req):
        k = int(req.target.split("/")[-1])
        body = (b"%d:" % k) * (50 + k * 40)
        return [0.05 if k % 5 == 0 else 0, make_response(200, "OK", [("Cache-Control", "max-age=60")], body)]
    origin.table["*"] = h
    plugins = [{"cache": {"max_size": "64k", "max_object_size": "16k"}}]  # evicting all the time
    cfg = simple_config(origin.up.addr, route_extra={"plugins": plugins}, workers=2)
    cfg, aport = admin_cfg(cfg, token=TOKEN)
    p = portico(cfg)
    p.aport = aport
    errors = []

    def client(n):
        import random
        rnd = random.Random(n)
        for _ in range(40):
            k = rnd.randrange(40)
            try:
                r = get(p, "/k/%d" % k)
                if r.status != 200 or r.body != (b"%d:" % k) * (50 + k * 40):
                    errors.append((k, r.status, r.body[:40]))
            except Exception as e:  # noqa: BLE001
                errors.append((k, repr(e)))
            if rnd.random() < 0.03:
                purge(p, "prefix=example.com/k/%d" % rnd.randrange(4))
    ts = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[:5]
    assert len(origin.seen) < 12 * 40 * 0.8
    assert p.alive()


# ------------------------------------------------------------------ stale

def test_stale_while_revalidate(portico, origin):
    n = {"v": 0}

    def h(req):
        n["v"] += 1
        return body_resp(b"v%d" % n["v"], cc="max-age=1, stale-while-revalidate=30")
    origin.table["/swr"] = h
    p = start(portico, origin)
    assert get(p, "/swr").body == b"v1"
    time.sleep(2.1)
    r = get(p, "/swr")
    assert r.body == b"v1" and "stale-while-revalidate" in status_of(r)
    deadline = time.time() + 5
    while origin.count("/swr") < 2 and time.time() < deadline:
        time.sleep(0.05)
    assert origin.count("/swr") == 2  # refreshed in the background
    while time.time() < deadline:
        r = get(p, "/swr")
        if r.body == b"v2":
            break
        time.sleep(0.05)
    assert r.body == b"v2" and status_of(r).startswith("portico; hit; ttl=")
    assert origin.count("/swr") == 2


def test_stale_if_error_on_5xx_and_unreachable(portico, origin, upstream):
    origin.table["/sie"] = body_resp(b"good", cc="max-age=1, stale-if-error=60")
    p = start(portico, origin)
    get(p, "/sie")
    time.sleep(2.1)
    origin.table["/sie"] = (503, [("Content-Type", "text/plain")], b"down")
    r = get(p, "/sie")
    assert r.status == 200 and r.body == b"good"
    assert "fwd-status=503" in status_of(r) and "stale-if-error" in status_of(r)
    origin.up.stop()
    r = get(p, "/sie")
    assert r.status == 200 and r.body == b"good" and "fwd-status=502" in status_of(r)


def test_stale_defaults_from_configuration(portico, origin):
    origin.table["/d"] = body_resp(b"good", cc="max-age=1")  # the response names no stale windows
    p = start(portico, origin, cache={"stale_if_error": "1m", "stale_while_revalidate": "0s"})
    get(p, "/d")
    time.sleep(2.1)
    origin.table["/d"] = (502, [("Content-Type", "text/plain")], b"bad")
    r = get(p, "/d")
    assert r.status == 200 and r.body == b"good" and "stale-if-error" in status_of(r)


def test_stale_if_error_window_passed(portico, origin):
    origin.table["/sie2"] = body_resp(b"good", cc="max-age=1, stale-if-error=1")
    p = start(portico, origin)
    get(p, "/sie2")
    time.sleep(3.1)
    origin.table["/sie2"] = (503, [("Content-Type", "text/plain")], b"down")
    assert get(p, "/sie2").status == 503


# ------------------------------------------------------------------ purge

def purge(p, query, method="POST", token=TOKEN):
    h = {"Authorization": "Bearer " + token} if token else None
    return request(p.aport, method, "/api/cache/purge" + ("?" + query if query else ""), headers=h)


def test_purge_by_key_prefix_tag(portico, origin):
    origin.table["*"] = lambda req: body_resp(req.target.encode(),
                                              extra=[("Cache-Tag", "prod-%s, all" % req.target[-1])])
    p = start(portico, origin, cache={"tag_header": "Cache-Tag"})
    for t in ("/p/1", "/p/2", "/q/3", "/q/4"):
        get(p, t)
        assert status_of(get(p, t)).startswith("portico; hit")
    r = purge(p, "key=example.com/p/1")
    assert r.status == 200 and r.json()["purged"] == 1
    assert status_of(get(p, "/p/1")).startswith("portico; fwd=uri-miss")
    assert status_of(get(p, "/p/2")).startswith("portico; hit")
    r = purge(p, "tag=prod-3", method="DELETE")
    assert r.json()["purged"] == 1
    assert status_of(get(p, "/q/3")).startswith("portico; fwd=uri-miss")
    r = purge(p, "prefix=example.com/p/")
    assert r.json()["purged"] == 2
    assert status_of(get(p, "/p/2")).startswith("portico; fwd=uri-miss")
    assert status_of(get(p, "/q/4")).startswith("portico; hit")
    m = scrape(p.aport, TOKEN)
    purged = [v for labels, v in m["portico_cache_purged_entries"] if labels.get("zone") == "route:main"]
    assert purged and purged[0] == 4


def test_purge_needs_token_and_method(portico, origin):
    origin.table["/t"] = body_resp(b"t")
    p = start(portico, origin)
    get(p, "/t")
    assert purge(p, "key=example.com/t", token=None).status == 401
    assert purge(p, "key=example.com/t", token="wrong-token").status == 401
    r = purge(p, "key=example.com/t", method="GET")
    assert r.status == 405 and "POST" in r.header("Allow") and "DELETE" in r.header("Allow")
    for bad in ("", "key=a&tag=b", "key=", "key=%zz", "nothing=1"):
        problem_check(purge(p, bad), 400)
    r = purge(p, "key=%C3%A9%22%5C")  # echoed as plain ASCII JSON
    assert r.status == 200 and r.json() == {"key": "????", "purged": 0}
    assert status_of(get(p, "/t")).startswith("portico; hit")  # nothing purged by refused calls


def test_purge_refused_without_configured_token(portico, origin):
    origin.table["/t"] = body_resp(b"t")
    p = start(portico, origin, token=None)
    get(p, "/t")
    assert purge(p, "key=example.com/t", token=None).status == 403
    assert status_of(get(p, "/t")).startswith("portico; hit")


def test_admin_post_elsewhere_still_refused(portico, origin):
    p = start(portico, origin)
    r = request(p.aport, "POST", "/metrics", headers={"Authorization": "Bearer " + TOKEN})
    assert r.status == 405


# --------------------------------------------------------- reload, metrics

def test_entries_survive_reload_with_same_settings(portico, origin):
    origin.table["/rl"] = body_resp(b"rl")
    p = start(portico, origin)
    get(p, "/rl")
    cfg = simple_config(origin.up.addr, route_extra={"plugins": [{"cache": {}}]},
                        plugins=[{"request_id": {}}])
    cfg["admin"] = {"listen": "127.0.0.1:%d" % p.aport, "token": TOKEN}
    p.write_config(cfg)
    p.signal(__import__("signal").SIGHUP)
    wait_reloaded(p)
    assert status_of(get(p, "/rl")).startswith("portico; hit")
    cfg["routes"][0]["plugins"] = [{"cache": {"max_size": "32m"}}]
    p.write_config(cfg)
    p.signal(__import__("signal").SIGHUP)
    wait_reloaded(p, 2)
    assert status_of(get(p, "/rl")).startswith("portico; fwd=uri-miss")  # new settings: a new store


def test_purge_endpoint_follows_reloads(portico, origin):
    origin.table["/e"] = body_resp(b"e")
    p = start(portico, origin)
    get(p, "/e")
    assert purge(p, "key=example.com/e").json()["purged"] == 1
    cfg = simple_config(origin.up.addr)  # no cache any more
    cfg["admin"] = {"listen": "127.0.0.1:%d" % p.aport, "token": TOKEN}
    p.write_config(cfg)
    p.signal(__import__("signal").SIGHUP)
    wait_reloaded(p)
    deadline = time.time() + 10
    while purge(p, "key=example.com/e").status == 200 and time.time() < deadline:
        time.sleep(0.05)  # the old generation goes once its requests are done
    # no plugin endpoint any more: the read-only API answers GET only, and knows no such path
    assert purge(p, "key=example.com/e").status == 405
    assert purge(p, "key=example.com/e", method="GET").status == 404
    assert get(p, "/e").header("Cache-Status") is None


def test_metrics(portico, origin):
    origin.table["/m"] = body_resp(b"m")
    p = start(portico, origin)
    get(p, "/m")
    get(p, "/m")
    get(p, "/m", headers={"Authorization": "Bearer x"})
    m = scrape(p.aport, TOKEN)

    def val(name, **want):
        for labels, v in m.get(name, []):
            if all(labels.get(k) == w for k, w in want.items()):
                return v
        return None
    assert val("portico_cache_requests_total", zone="route:main", result="hit") == 1
    assert val("portico_cache_requests_total", zone="route:main", result="miss") == 1
    assert val("portico_cache_requests_total", zone="route:main", result="bypass") == 1
    assert val("portico_cache_stores_total", zone="route:main") == 1
    assert val("portico_cache_bytes", zone="route:main") > 2
    assert val("portico_cache_entries", zone="route:main") == 1


def test_config_errors(portico, origin, tmp_path):
    import subprocess
    from conftest import portico_bin, to_yaml
    cfg = simple_config(origin.up.addr, route_extra={"plugins": [{"cache": {"max_size": "1k", "bogus": 1}}]})
    f = tmp_path / "c.yaml"
    f.write_text(to_yaml(cfg))
    r = subprocess.run([portico_bin(), "check", "-c", str(f)], capture_output=True, text=True)
    assert r.returncode != 0
    assert "cache" in r.stderr and "bogus" in r.stderr
    for block, msg in (({"max_size": "1k"}, "cache.max_size: must be at least 64k"),
                       ({"max_object_size": "40m"}, "cache.max_object_size: must be between"),
                       ({"statuses": [99]}, "cache.statuses: 99 is not a final status"),
                       ({"key": {"headers": ["bad header"]}}, "cache.key.headers: \"bad header\" is not a header name"),
                       ({"tag_header": "a b"}, "cache.tag_header: expected a header name")):
        f.write_text(to_yaml(simple_config(origin.up.addr, route_extra={"plugins": [{"cache": block}]})))
        r = subprocess.run([portico_bin(), "check", "-c", str(f)], capture_output=True, text=True)
        assert r.returncode != 0
        assert re.search(r"c\.yaml:\d+:\d+: " + re.escape(msg), r.stderr), r.stderr
