"""TLS helpers shared by the integration tests.

Certificates: `openssl(...)` runs the openssl CLI; `make_ca` and `sign` build
a throwaway CA and certificates it signs (`san_ext` writes the usual
subjectAltName extension). `make_test_pki(d)` is the PKI of test_tls.py,
also served by the module-scoped `pki` fixture here.

Clients: `client_ctx(pki, ...)` is an SSLContext trusting the test CA;
`tls_connect` opens a TLS connection to 127.0.0.1; `tls_listen` renders an
HTTPS listener and `up_tls_config` an HTTPS upstream for a config.

Upstream: `TLSUpstream` is a minimal HTTPS/1.1 upstream (fixture
`tls_upstream`), recording every request.

A test module uses the fixtures by importing them
(`from tlsutil import pki, tls_upstream`).
"""

import hashlib
import json
import socket
import ssl
import subprocess
import threading

import pytest

from conftest import simple_config

# ---------------------------------------------------------------------------
# Certificates (openssl CLI)
# ---------------------------------------------------------------------------


def openssl(*args, cwd):
    """Runs `openssl args...` in `cwd`; raises if it fails."""
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d, name, cn):
    """A self-signed CA `name`.crt / `name`.key in directory `d` (a
    pathlib.Path) with subject /CN=`cn`; returns the certificate path."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out", name + ".crt",
            "-days", "2", "-subj", "/CN=" + cn, cwd=d)
    return str(d / (name + ".crt"))


def sign(d, name, subj, ext=None, ca="ca"):
    """A new key and a certificate for `subj` signed by the CA files
    `ca`.crt / `ca`.key in `d`. `ext` is the text of an extension file
    (e.g. san_ext(...)), or None. Returns (cert path, key path)."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out", name + ".csr",
            "-subj", subj, cwd=d)
    extfile = []
    if ext is not None:
        (d / (name + ".ext")).write_text(ext)
        extfile = ["-extfile", name + ".ext"]
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt", "-CAkey", ca + ".key", "-CAcreateserial",
            "-out", name + ".crt", "-days", "2", *extfile, cwd=d)
    return str(d / (name + ".crt")), str(d / (name + ".key"))


def san_ext(*names):
    """subjectAltName extension text: IP: for names starting with a digit,
    DNS: for the others."""
    return "subjectAltName=" + ",".join(("IP:" if n[0].isdigit() else "DNS:") + n for n in names) + "\n"


def leaf(d, name, sans, ca="ca"):
    """A server certificate with CN = sans[0] and the subjectAltNames `sans`."""
    return sign(d, name, "/CN=" + sans[0], san_ext(*sans), ca=ca)


def make_test_pki(d):
    """The PKI of test_tls.py in `d`: CA "ca" (trusted by the tests) and
    "evil" (not), server certificates a (a.test, *.wild.test), b (b.test)
    and a2 (a.test, renewed.a.test), client certificates alice (from ca) and
    mallory (from evil). Returns a dict of paths and (cert, key) pairs."""
    make_ca(d, "ca", "Portico Test CA")
    make_ca(d, "evil", "Evil CA")
    return {
        "dir": d,
        "ca": str(d / "ca.crt"),
        "a": leaf(d, "a", ["a.test", "*.wild.test"]),
        "b": leaf(d, "b", ["b.test"]),
        "a2": leaf(d, "a2", ["a.test", "renewed.a.test"]),
        "client": sign(d, "alice", "/O=Acme/CN=alice"),
        "evil_client": sign(d, "mallory", "/O=Acme/CN=mallory", ca="evil"),
    }


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_test_pki(tmp_path_factory.mktemp("pki"))


# ---------------------------------------------------------------------------
# Clients and listeners
# ---------------------------------------------------------------------------

def tls_listen(port, certs, **extra):
    """`listen` config: one TLS listener on 127.0.0.1:port with the
    (cert, key) pairs `certs`; `extra` goes into its `tls` section."""
    tls = {"certificates": [{"cert": c, "key": k} for c, k in certs]}
    tls.update(extra)
    return [{"address": "127.0.0.1:%d" % port, "tls": tls}]


def up_tls_config(addr, **tls):
    """simple_config() with an HTTPS upstream at `addr` (`tls` section)."""
    return simple_config(addr, upstream_extra={"tls": tls})


def client_ctx(pki, alpn=("http/1.1",), cert=None, minv=None, maxv=None, check_hostname=True):
    """A client SSLContext trusting pki["ca"], offering `alpn`, presenting
    the (cert, key) pair `cert` if given, with optional version bounds."""
    ctx = ssl.create_default_context(cafile=pki["ca"])
    if not check_hostname:
        ctx.check_hostname = False
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if minv:
        ctx.minimum_version = minv
    if maxv:
        ctx.maximum_version = maxv
    if cert:
        ctx.load_cert_chain(*cert)
    return ctx


def tls_connect(port, ctx, sni, timeout=10, session=None):
    """A TLS connection to 127.0.0.1:port (handshake done, SNI `sni`)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname=sni, session=session)


# ---------------------------------------------------------------------------
# HTTPS upstream
# ---------------------------------------------------------------------------

class TLSUpstream:
    """A minimal HTTPS/1.1 keep-alive upstream: answers JSON describing the
    request (and the client certificate it saw), or a fixed 3 MiB body for
    /big. Counts `connections` (completed handshakes), `resumed` sessions
    and `handshake_failures`; records `requests` as (method, target,
    {lowercase header: value}, body)."""

    def __init__(self, cert, key, client_ca=None, close=False, max_version=None):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        if max_version:
            self.ctx.maximum_version = max_version
        self.close_each = close  # answer with Connection: close and close
        if client_ca:
            self.ctx.load_verify_locations(client_ca)
            self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.connections = 0
        self.resumed = 0
        self.handshake_failures = 0
        self.requests = []
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self):
        self.sock.close()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(c,), daemon=True).start()

    def _handle(self, raw):
        try:
            s = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            self.handshake_failures += 1
            raw.close()
            return
        self.connections += 1
        if s.session_reused:
            self.resumed += 1
        peer = s.getpeercert()
        f = s.makefile("rb")
        try:
            while True:
                line = f.readline()
                if not line:
                    return
                headers = {}
                while True:
                    h = f.readline()
                    if h in (b"\r\n", b""):
                        break
                    k, v = h.split(b":", 1)
                    headers[k.strip().lower().decode()] = v.strip().decode()
                body = f.read(int(headers.get("content-length", "0")))
                method, target, _ = line.decode().split(" ")
                self.requests.append((method, target, headers, body))
                if target == "/big":
                    payload = hashlib.sha256(b"seed").digest() * (3 << 15)
                else:
                    subject = dict(x[0] for x in peer["subject"]) if peer else {}
                    payload = json.dumps({"target": target, "sni_host": headers.get("host"),
                                          "client_cn": subject.get("commonName"),
                                          "body_len": len(body)}).encode()
                if self.close_each:
                    s.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(payload)
                              + payload)
                    s.unwrap()
                    return
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
        except (OSError, ValueError):
            return
        finally:
            s.close()


@pytest.fixture
def tls_upstream(pki):
    """tls_upstream(**kw) starts a TLSUpstream with pki["a"] (closed at teardown)."""
    servers = []

    def start(**kw):
        u = TLSUpstream(*pki["a"], **kw)
        servers.append(u)
        return u

    yield start
    for u in servers:
        u.close()
