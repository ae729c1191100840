"""The Portico process under test: start, reload, health checks, stop.

The process runs with ASan/UBSan options that make every report end up on
its stderr (a file in the work directory); `sanitizer_report()` finds it.
"""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "integration"))
from upstreams import request  # noqa: E402  (the integration tests' raw client)

MARKERS = ("ERROR: AddressSanitizer", "AddressSanitizer:", "runtime error:", "LeakSanitizer")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Gateway:
    def __init__(self, binary, workdir, subst):
        self.binary = binary
        self.workdir = workdir
        self.subst = dict(subst)
        self.config_path = os.path.join(workdir, "portico.yaml")
        self.stderr_path = os.path.join(workdir, "portico.stderr")
        self.stdout_path = os.path.join(workdir, "portico.stdout")
        self.proc = None
        self.port = None
        self.reloads_ok = 0
        self.reloads_refused = 0

    # -- lifecycle ---------------------------------------------------------
    def start(self, config_text_fn):
        """Starts portico on a fresh port with config_text_fn(subst)."""
        for _ in range(3):
            self.port = free_port()
            self.subst["@LISTEN@"] = "127.0.0.1:%d" % self.port
            self.write_config(config_text_fn(self.subst))
            env = dict(os.environ)
            env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:halt_on_error=1:handle_abort=1"
            env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
            self._err = open(self.stderr_path, "ab")
            self._out = open(self.stdout_path, "ab")
            self.err_start = self._err.tell()
            self.proc = subprocess.Popen([self.binary, "run", "-c", self.config_path], stdout=self._out,
                                         stderr=self._err, env=env, cwd=self.workdir)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                except OSError:
                    time.sleep(0.05)
            if self.proc.poll() is None:
                break
            self._close_files()
            if "cannot listen" not in self.stderr():
                break
        raise RuntimeError("portico did not start:\n" + self.stderr()[-4000:])

    def write_config(self, text):
        tmp = self.config_path + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.config_path)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _close_files(self):
        for f in (self._err, self._out):
            try:
                f.close()
            except OSError:
                pass

    def stop(self, timeout=20):
        """SIGTERM (graceful drain), then a list of problems: exit code,
        hang, or a sanitizer report (LeakSanitizer runs at exit)."""
        problems = []
        if self.proc is None:
            return problems
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                problems.append("did not exit within %ss of SIGTERM" % timeout)
        rc = self.proc.returncode
        if rc != 0 and not problems:
            # a drain that took the whole timeouts.shutdown hints at a stuck request
            problems.append("exit code %s (%.1fs after SIGTERM)" % (rc, time.monotonic() - t0))
        self._close_files()
        self.proc = None
        return problems

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None:
            self._close_files()
        self.proc = None

    # -- reload ------------------------------------------------------------
    def reload(self, text, expect_ok, timeout=10):
        """Writes `text`, sends SIGHUP and waits for the verdict on stderr.
        Returns None, or a problem description."""
        err = self.stderr()
        before_ok = err.count("configuration reloaded")
        before_bad = err.count("reload failed") + err.count("reload refused")
        self.write_config(text)
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive():
            err = self.stderr()
            if err.count("configuration reloaded") > before_ok:
                self.reloads_ok += 1
                return None if expect_ok else "an invalid configuration was accepted"
            if err.count("reload failed") + err.count("reload refused") > before_bad:
                self.reloads_refused += 1
                return "a valid configuration was refused" if expect_ok else None
            time.sleep(0.02)
        return None if not self.alive() else "no verdict on stderr %ss after SIGHUP" % timeout

    # -- checks ------------------------------------------------------------
    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(getattr(self, "err_start", 0))
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def settle(self, timeout=60):
        """After a sanitizer report started: wait for the process to finish
        writing it (symbolizing takes a while; the sanitizers exit after
        the report), so that it is read whole."""
        if self.proc is not None and self.proc.poll() is None and self.sanitizer_report():
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass

    def sanitizer_report(self):
        """The sanitizer report on stderr (from its first line), or None."""
        err = self.stderr()
        idx = [err.find(m) for m in MARKERS if m in err]
        if not idx:
            return None
        start = err.rfind("\n", 0, min(idx)) + 1
        sep = err.rfind("=================", 0, start + 1)
        if sep != -1 and start - sep < 200:
            start = sep
        return err[start:start + 60000]

    def liveness(self, nonce):
        """A plain GET through /plain to the echo upstream: must be a 200
        whose JSON echo shows our path and header. Returns a problem or None."""
        path = "/plain/live-%s" % nonce
        try:
            r = request(self.port, "GET", path, headers={"X-Live": nonce}, timeout=20)
        except Exception as e:  # noqa: BLE001 - any failure is the finding
            return "liveness GET %s failed: %r" % (path, e)
        if r.status != 200:
            return "liveness GET %s: status %s, body %r" % (path, r.status, r.body[:300])
        try:
            doc = json.loads(r.body)
        except ValueError:
            return "liveness GET %s: body is not the echo JSON: %r" % (path, r.body[:300])
        if doc.get("path") != path or ["X-Live", nonce] not in doc.get("headers", []):
            return "liveness GET %s: echo does not match: %r" % (path, doc)
        if doc.get("body_sha256") != hashlib.sha256(b"").hexdigest():
            return "liveness GET %s: echo saw a body" % path
        return None

    def liveness_h2(self, nonce):
        """The same GET over h2c prior knowledge (the HTTP/2 codec must be
        alive too). Returns a problem or None."""
        import h2.events  # python3-h2
        from h2util import h2_connect, h2_head, h2_read_until
        path = "/plain/live2-%s" % nonce
        try:
            s, c = h2_connect(self.port, timeout=20)
            try:
                c.send_headers(1, h2_head(path, method="GET"), end_stream=True)
                s.sendall(c.data_to_send())
                events, ok = h2_read_until(s, c, lambda e: isinstance(e, (h2.events.StreamEnded,
                                                                          h2.events.StreamReset)), timeout=20)
            finally:
                s.close()
        except Exception as e:  # noqa: BLE001 - any failure is the finding
            return "h2 liveness GET %s failed: %r" % (path, e)
        status = [dict(e.headers).get(b":status") for e in events if isinstance(e, h2.events.ResponseReceived)]
        body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
        if not ok or status != [b"200"]:
            return "h2 liveness GET %s: status %r, ended %s, body %r" % (path, status, ok, body[:300])
        try:
            doc = json.loads(body)
        except ValueError:
            return "h2 liveness GET %s: body is not the echo JSON: %r" % (path, body[:300])
        if doc.get("path") != path:
            return "h2 liveness GET %s: echo does not match: %r" % (path, doc)
        return None
