"""Access rules that hold whatever the path spelling (docs/routing.md, "Path
rules").

Setup: a route `/admin` (path_prefix) with ip_restriction deny-all, and a
catch-all `/` route to an echo upstream. A battery of spellings that common
backends resolve to /admin (encoded and raw separators, ';' parameters,
double encoding, encoded dot segments, NUL and control characters, overlong
UTF-8, trailing dots and spaces, malformed escapes) is sent over HTTP/1
(origin and absolute form) and HTTP/2. For every entry the answer must be a
400 problem, the 403 of the /admin rule, or a 200 from the echo upstream
whose received path no backend model below resolves to /admin. And the
decision and the forwarded path agree: requesting exactly the path the
upstream received is routed the same way and forwarded unchanged.
"""

import json
import re
import subprocess
import urllib.parse

import pytest

import h2.events
from h2util import h2_connect, h2_head, h2_read_until
from conftest import free_port, portico_bin
from upstreams import Client, problem_check

# ---------------------------------------------------------------------------
# How common backends resolve a received path
# ---------------------------------------------------------------------------

_OVERLONG = re.compile(rb"[\xc0\xc1][\x80-\xbf]|\xe0[\x80-\x9f][\x80-\xbf]|\xf0[\x80-\x8f][\x80-\xbf]{2}")


def _overlong_to_ascii(b):
    """Old IIS / lenient decoders: overlong UTF-8 forms become the ASCII byte."""
    def one(m):
        s = m.group(0)
        cp = 0
        for i, byte in enumerate(s):
            cp = (cp << 6) | (byte & (0x3F if i else (0x1F if len(s) == 2 else 0x0F if len(s) == 3 else 0x07)))
        return bytes([cp]) if cp < 0x80 else s
    return _OVERLONG.sub(one, b)


def _dot_merge(path):
    """Merges slashes and resolves dot segments (RFC 3986 5.2.4), as routers do."""
    out = []
    segs = path.split("/")
    for i, seg in enumerate(segs[1:], 1):
        last = i == len(segs) - 1
        if seg == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        elif seg == ".":
            if last:
                out.append("")
        elif seg == "" and not last:
            continue
        else:
            out.append(seg)
    return "/" + "/".join(out)


def _unquote(s, times=1):
    b = s.encode("latin-1")
    for _ in range(times):
        b = urllib.parse.unquote_to_bytes(b.decode("latin-1"))
    return _overlong_to_ascii(b).decode("latin-1")


def backend_views(received):
    """Paths that Flask/Werkzeug, Tomcat/Spring, Windows/IIS (and a broken
    double-decoding hop) would serve for the path `received`."""
    views = set()
    for times in (1, 2):
        # Werkzeug: PATH_INFO is percent-decoded (%2F becomes '/'), slashes merged
        views.add(_dot_merge(_unquote(received, times)))
        # Tomcat / Spring: ';...' stripped per segment before decoding; '\' as '/'
        stripped = "/".join(seg.split(";", 1)[0] for seg in received.split("/"))
        views.add(_dot_merge(_unquote(stripped, times).replace("\\", "/")))
        # Windows / IIS: decoded, '\' is '/', NUL truncates, trailing dots and spaces dropped
        w = _unquote(received, times).replace("\\", "/").split("\x00", 1)[0]
        w = "/".join(seg.rstrip(". ") if seg not in (".", "..") else seg for seg in w.split("/"))
        views.add(_dot_merge(w))
    return views


def resolves_to_admin(received):
    return any(v == "/admin" or v.startswith("/admin/") for v in backend_views(received))


def test_resolver_model_sees_the_classic_bypasses():
    """The model must flag what it is meant to flag, or the battery proves nothing."""
    for p in ["/admin", "/admin%2Fx", "/x%2F..%2Fadmin", "/x\\..\\admin", "/admin;x=1", "/x/..;/admin",
              "/admin%252Fx", "/x%C0%AF..%C0%AFadmin", "/admin.", "/admin%20", "/admin%00.html", "//admin"]:
        assert resolves_to_admin(p), p
    for p in ["/x", "/admin2", "/x/admin", "/administrator"]:
        assert not resolves_to_admin(p), p


# ---------------------------------------------------------------------------
# The battery
# ---------------------------------------------------------------------------

SEPS = ["/", "//", "%2F", "%2f", "\\", "%5C", "%5c", "%252F", "%255C", "/;x/", ";/", "/./", "/%2e/", "%c0%af"]
DOTS = ["..", "%2e%2e", ".%2E", "%2E%2e", "..;", "..;x=1", "..%20", "...", "..%00", "%252e%252e", "%c0%ae%c0%ae"]

BATTERY = sorted(set(
    ["/admin", "//admin", "/./admin", "/x/../admin", "/admin/", "/%61dmin", "/a%64min",
     "/admin;x=1", "/admin;", "/admin;/", "/;/admin", "/..;/admin", "/x/..;/admin", "/admin;jsessionid=1/x",
     "/%3B/admin", "/admin%3Bx", "/admin%3b/x",
     "/admin%00", "/admin%00.html", "/admin%0a", "/admin%0d%0aX-A:%201", "/admin%09", "/admin%7f", "/admin%1f",
     "/admin%", "/admin%2", "/admin%2G", "/admin%%32%46x", "/admin%252Fx", "/%2561dmin", "/admin%25",
     "/admin.", "/admin..", "/admin%2e", "/admin%20", "/admin.%20", "/admin./x", "/admin%20/x",
     "/admin%C0%AFx", "/admin%E0%80%AFx", "/x%C0%AF..%C0%AFadmin", "/admin%ED%A0%80", "/admin%C3",
     "/ADMIN%2f..%2fadmin", "/admin%2F", "/admin%5C", "/admin\\"]
    + ["/admin%sx" % s for s in SEPS]
    + ["/x%s%s%sadmin" % (s, d, s) for s in SEPS for d in DOTS]
    + ["/x/%s/admin" % d for d in DOTS]
))


def check_outcome(spelling, status, received, upstream_name):
    """The rule of the battery for one answer (see the module docstring)."""
    if status in (400, 403):
        return
    assert status == 200, (spelling, status)
    assert upstream_name == "echo", (spelling, upstream_name)
    assert not resolves_to_admin(received), \
        "%r reached the upstream as %r, which a backend resolves to /admin (%r)" % (
            spelling, received, backend_views(received))


@pytest.fixture
def gw(portico, upstream):
    def start(path_rules=None, root_rules=None):
        admin_up, echo = upstream(name="admin"), upstream(name="echo")
        root = {"name": "root", "match": {"path_prefix": "/"}, "upstream": "echo"}
        if root_rules:
            root["path_rules"] = root_rules
        cfg = {
            "upstreams": {"admin": {"targets": [admin_up.addr]}, "echo": {"targets": [echo.addr]}},
            "routes": [
                {"name": "admin", "match": {"path_prefix": "/admin"}, "upstream": "admin",
                 "plugins": [{"ip_restriction": {"deny": ["0.0.0.0/0", "::/0"]}}]},
                root,
            ],
        }
        if path_rules:
            cfg["path_rules"] = path_rules
        return portico(cfg), admin_up, echo
    return start


def h1(port, target):
    """(status, path the echo upstream received or None, upstream name or None, problem detail)."""
    with Client(port) as c:
        c.send(("GET %s HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n" % target).encode("latin-1"))
        r = c.read_response()
    if r.status == 200:
        doc = r.json()
        return r.status, doc["target"], doc["server"], None
    detail = problem_check(r, r.status)["detail"] if r.status >= 400 else None
    return r.status, None, None, detail


def h2_get(port, path):
    s, c = h2_connect(port)
    c.send_headers(1, h2_head(path, method="GET"), end_stream=True)
    s.sendall(c.data_to_send())
    events, ok = h2_read_until(s, c, lambda e: isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)))
    s.close()
    assert ok, events
    status, body = None, b""
    for e in events:
        if isinstance(e, h2.events.ResponseReceived):
            status = int(dict(e.headers)[b":status"])
        elif isinstance(e, h2.events.DataReceived):
            body += e.data
    if status == 200:
        doc = json.loads(body)
        return status, doc["target"], doc["server"]
    return status, None, None


def assert_fixpoint(port, received):
    """Requesting exactly what the upstream received is routed the same way
    and forwarded unchanged: the decision and the forwarded path agree."""
    status, again, name, _ = h1(port, received)
    assert (status, again, name) == (200, received, "echo"), (received, status, again, name)


def run_battery(p, admin_up, send):
    results = {}
    for spelling in BATTERY:
        status, received, name = send(p.port, spelling)[:3]
        check_outcome(spelling, status, received, name)
        results[spelling] = (status, received)
        if status == 200:
            assert_fixpoint(p.port, received)
    assert admin_up.requests == [], "the /admin upstream was reached"
    return results


# ---------------------------------------------------------------------------
# Default rules
# ---------------------------------------------------------------------------

EXPECT_DEFAULT = {
    "/admin": 403, "//admin": 403, "/x/../admin": 403, "/%61dmin": 403, "/x/%2e%2e/admin": 403,
    "/admin%2Fx": 400, "/admin%2fx": 400, "/admin%5Cx": 400, "/admin\\x": 400, "/admin;x=1": 400,
    "/..;/admin": 400, "/;/admin": 400, "/admin%3Bx": 400, "/admin%252Fx": 400, "/admin%00": 400,
    "/admin%0a": 400, "/admin%C0%AFx": 400, "/admin.": 400, "/admin%20": 400, "/admin%": 400, "/admin%2": 400,
}


def test_default_rules_http1(gw):
    p, admin_up, echo = gw()
    res = run_battery(p, admin_up, h1)
    for spelling, want in EXPECT_DEFAULT.items():
        assert res[spelling][0] == want, (spelling, res[spelling])
    # ordinary paths still pass
    assert h1(p.port, "/public/caf%C3%A9?q=%2F")[:2] == (200, "/public/caf%C3%A9?q=%2F")
    assert h1(p.port, "/50%25off")[:2] == (200, "/50%25off")


@pytest.mark.parametrize("spelling,detail", [
    ("/admin%2Fx", "encoded slash (%2F) in path"),
    ("/admin%5cx", "encoded backslash (%5C) in path"),
    ("/admin\\x", "backslash in path"),
    ("/admin;x=1", "';' path parameter in path"),
    ("/admin%3Bx", "encoded semicolon (%3B) in path"),
    ("/admin%252Fx", "double percent-encoding (%25 followed by hex digits) in path"),
    ("/admin%0A", "encoded control character in path"),
    ("/admin%C0%AF", "percent-encoded bytes in path are not valid UTF-8"),
    ("/admin.", "path segment ends with a dot or a space"),
    ("/admin%00", "encoded NUL in path"),
])
def test_default_rejections_have_precise_details(gw, spelling, detail):
    p, admin_up, echo = gw()
    assert h1(p.port, spelling) == (400, None, None, detail)
    assert echo.requests == [] and admin_up.requests == []


def test_default_rules_absolute_form(gw):
    p, admin_up, echo = gw()
    run_battery(p, admin_up, lambda port, s: h1(port, "http://example.com" + s))


def test_default_rules_http2(gw):
    p, admin_up, echo = gw()
    res = run_battery(p, admin_up, h2_get)
    for spelling, want in EXPECT_DEFAULT.items():
        assert res[spelling][0] == want, (spelling, res[spelling])


# ---------------------------------------------------------------------------
# Other modes
# ---------------------------------------------------------------------------

DECODE_ALL = {"encoded_slash": "decode", "backslash": "decode", "semicolon": "strip",
              "trailing_dot_space": "strip"}


@pytest.mark.parametrize("send", [h1, h2_get], ids=["http1", "http2"])
def test_decode_rules_resolve_to_the_admin_rule(gw, send):
    """Decoding globally: the spellings become /admin and meet its rule (403);
    the upstream receives decoded paths only."""
    p, admin_up, echo = gw(path_rules=DECODE_ALL)
    res = run_battery(p, admin_up, send)
    for spelling in ["/admin%2Fx", "/x%5C..%5Cadmin", "/x\\..\\admin", "/admin;x=1", "/x/..;/admin", "/;/admin",
                     "/admin.", "/admin%20", "/admin%2F"]:
        assert res[spelling][0] == 403, (spelling, res[spelling])
    assert h1(p.port, "/a%2Fb;v=1/c.")[:2] == (200, "/a/b/c")


def test_root_decodes_but_admin_rejects(gw):
    """The '/' route decodes %2F, the /admin route keeps the default (reject):
    a spelling whose decoded form reaches /admin is refused by /admin's rules,
    never forwarded by '/'."""
    p, admin_up, echo = gw(root_rules={"encoded_slash": "decode"})
    assert h1(p.port, "/admin%2Fx")[0] == 400
    assert h1(p.port, "/x%2F..%2Fadmin")[0] == 400
    assert h1(p.port, "/a%2Fb")[:2] == (200, "/a/b")
    assert echo.requests and all(not resolves_to_admin(r.path) for r in echo.requests)
    assert admin_up.requests == []


def test_keep_forwards_the_opaque_form_it_matched(gw):
    """keep: the encoded slash is one segment for matching and is forwarded
    encoded (so it is only safe for upstreams that do not decode %2F — the
    resolver shows why it is not the default)."""
    p, admin_up, echo = gw(root_rules={"encoded_slash": "keep", "semicolon": "keep"})
    assert h1(p.port, "/admin%2fx")[:3] == (200, "/admin%2Fx", "echo")
    assert resolves_to_admin("/admin%2Fx")
    assert_fixpoint(p.port, "/admin%2Fx")
    assert h1(p.port, "/a;v=1/b")[:2] == (200, "/a;v=1/b")
    # a kept form under /admin still meets the /admin rule (its own rules reject)
    assert h1(p.port, "/admin/a%2Fb")[0] == 400
    assert h1(p.port, "/admin/x")[0] == 403
    assert admin_up.requests == []


def test_bad_path_rules_value_is_a_positioned_config_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("listen: ['127.0.0.1:%d']\n"
                    "upstreams: {up: {targets: ['127.0.0.1:9']}}\n"
                    "path_rules:\n"
                    "  encoded_slash: allow\n"
                    "routes:\n"
                    "  - match: {path_prefix: /}\n"
                    "    upstream: up\n"
                    "    path_rules: {semicolon: decode}\n" % free_port())
    out = subprocess.run([portico_bin(), "check", "-c", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "%s:4:18: path_rules.encoded_slash: expected reject, decode or keep, got 'allow'" % path in out.stderr
    assert "%s:8:29: path_rules.semicolon: expected reject, strip or keep, got 'decode'" % path in out.stderr
