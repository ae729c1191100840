"""Fixtures for Portico's black-box tests.

* `portico(config)` starts `PORTICO_BIN run -c FILE` with a config (a YAML
  string or a dict rendered to YAML), waits until the listening port accepts
  connections, and at teardown sends SIGTERM and fails if the process did not
  exit 0 or printed an AddressSanitizer / UBSan report.
* `upstream(handler=None, name=...)` starts a fake upstream (see upstreams.py)
  that is stopped at teardown.
* `raw_server(fn, **kw)` starts an `upstreams.RawServer` (connections served
  by fn(sock, n)) that is closed at teardown.

Binary: $PORTICO_BIN, else <repo>/build/asan/portico, else <repo>/build/portico.
"""

import os
import re
import signal as _signal
import socket
import subprocess
import time

import pytest

from upstreams import RawServer, Upstream

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def portico_bin():
    env = os.environ.get("PORTICO_BIN")
    if env:
        return env
    for rel in ("build/asan/portico", "build/portico"):
        p = os.path.join(REPO, rel)
        if os.access(p, os.X_OK):
            return p
    return os.path.join(REPO, "build/asan/portico")


BIN = portico_bin()

SANITIZER_MARKERS = ("AddressSanitizer", "runtime error:", "LeakSanitizer", "ThreadSanitizer")


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def sanitizer_env(extra=None):
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    if extra:
        env.update(extra)
    return env


# ---------------------------------------------------------------------------
# YAML rendering (block style) so configs can be built from Python data.
# ---------------------------------------------------------------------------

_PLAIN = re.compile(r"^[A-Za-z_./-][A-Za-z0-9_./:@*-]*$")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "~", "y", "n"}


def _scalar(v):
    if v is None:
        return "~"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return str(v)
    s = str(v)
    if _PLAIN.match(s) and s.lower() not in _RESERVED and not s.endswith(":"):
        return s
    return "'" + s.replace("'", "''") + "'"


def to_yaml(obj, indent=0):
    pad = " " * indent
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = _scalar(k)
            if isinstance(v, dict) and v:
                out.append("%s%s:\n%s" % (pad, key, to_yaml(v, indent + 2)))
            elif isinstance(v, list) and v:
                out.append("%s%s:\n%s" % (pad, key, to_yaml(v, indent + 2)))
            elif isinstance(v, dict):
                out.append("%s%s: {}" % (pad, key))
            elif isinstance(v, list):
                out.append("%s%s: []" % (pad, key))
            else:
                out.append("%s%s: %s" % (pad, key, _scalar(v)))
        return "\n".join(out)
    if isinstance(obj, list):
        for item in obj:
            if isinstance(item, (dict, list)) and item:
                inner = to_yaml(item, indent + 2)
                out.append(pad + "- " + inner[indent + 2:])
            elif isinstance(item, dict):
                out.append(pad + "- {}")
            elif isinstance(item, list):
                out.append(pad + "- []")
            else:
                out.append(pad + "- " + _scalar(item))
        return "\n".join(out)
    return pad + _scalar(obj)


def simple_config(upstream_addr, route_extra=None, upstream_extra=None, plugins=None, **top):
    """A config with one upstream `up` and one catch-all route `main`."""
    up = {"targets": [upstream_addr] if isinstance(upstream_addr, str) else list(upstream_addr)}
    up.update(upstream_extra or {})
    route = {"name": "main", "match": {"path_prefix": "/"}, "upstream": "up"}
    route.update(route_extra or {})
    cfg = {"upstreams": {"up": up}, "routes": [route]}
    if plugins is not None:
        cfg["plugins"] = plugins
    cfg.update(top)
    return cfg


# ---------------------------------------------------------------------------
# The Portico process
# ---------------------------------------------------------------------------

class Portico:
    def __init__(self, tmpdir, config, env=None, args=None, port=None, wait=True):
        self.tmp = str(tmpdir)
        self.port = port or free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.access_log_path = os.path.join(self.tmp, "access.log")
        self.config_path = os.path.join(self.tmp, "portico.yaml")
        self.stdout_path = os.path.join(self.tmp, "portico.stdout")
        self.stderr_path = os.path.join(self.tmp, "portico.stderr")
        self.env = env
        self.write_config(config)
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        args = args if args is not None else ["run", "-c", "@CONFIG@"]
        cmd = [BIN] + [a.replace("@CONFIG@", self.config_path) for a in args]
        # The binary may be relinked while the suite runs (ETXTBSY / EACCES
        # for a moment): retry briefly rather than report a bogus failure.
        deadline = time.monotonic() + 5
        while True:
            try:
                self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=self._err,
                                             env=sanitizer_env(env), cwd=self.tmp)
                break
            except (PermissionError, OSError) as e:
                if time.monotonic() > deadline or getattr(e, "errno", None) not in (13, 26):
                    raise
                time.sleep(0.2)
        self.stopped = False
        self.returncode = None
        if wait:
            self.wait_ready()

    def render(self, config):
        """Turns `config` (dict or YAML text) into the final YAML text."""
        if isinstance(config, dict):
            cfg = dict(config)
            cfg.setdefault("workers", 1)
            cfg.setdefault("listen", ["127.0.0.1:%d" % self.port])
            cfg.setdefault("access_log", {"enabled": True, "path": self.access_log_path})
            t = dict(cfg.get("timeouts") or {})
            t.setdefault("shutdown", "5s")
            cfg["timeouts"] = t
            order = ["workers", "listen", "limits", "timeouts", "access_log", "upstreams", "plugins", "routes"]
            ordered = {k: cfg[k] for k in order if k in cfg}
            ordered.update({k: v for k, v in cfg.items() if k not in ordered})
            return to_yaml(ordered) + "\n"
        text = config.replace("@PORT@", str(self.port)).replace("@TMP@", self.tmp)
        prefix = ""
        if not re.search(r"^workers:", text, re.M):
            prefix += "workers: 1\n"
        if not re.search(r"^listen:", text, re.M):
            prefix += 'listen: ["127.0.0.1:%d"]\n' % self.port
        return prefix + text

    def write_config(self, config):
        self.config_text = self.render(config)
        tmp = self.config_path + ".new"
        with open(tmp, "w") as f:
            f.write(self.config_text)
        os.replace(tmp, self.config_path)

    def wait_ready(self, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail("portico exited early with %s\n%s\nconfig:\n%s"
                            % (self.proc.returncode, self.logs(), self.config_text))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.02)
        pytest.fail("portico did not accept connections on %d within %ss\n%s" % (self.port, timeout, self.logs()))

    def alive(self):
        return self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stdout(self):
        with open(self.stdout_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def logs(self):
        return "--- stdout ---\n%s\n--- stderr ---\n%s" % (self.stdout()[-20000:], self.stderr()[-20000:])

    def access_lines(self):
        try:
            with open(self.access_log_path, "rb") as f:
                data = f.read().decode("utf-8")
        except FileNotFoundError:
            return []
        return [ln for ln in data.splitlines() if ln.strip()]

    def wait_exit(self, timeout=15):
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.returncode = self.proc.wait()
            return None
        return self.returncode

    def stop(self, sig=_signal.SIGTERM, timeout=15):
        """Sends `sig` (if still running), waits, returns a list of problems."""
        problems = []
        if not self.stopped:
            self.stopped = True
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
                if self.wait_exit(timeout) is None:
                    problems.append("did not exit within %ss of signal %s (killed)" % (timeout, sig))
            else:
                self.returncode = self.proc.returncode
            self._out.close()
            self._err.close()
        if self.returncode not in (0, None):
            problems.append("exit code %s" % self.returncode)
        err = self.stderr() + self.stdout()
        for marker in SANITIZER_MARKERS:
            if marker in err:
                problems.append("sanitizer report (%s)" % marker)
                break
        return problems


@pytest.fixture
def portico(tmp_path):
    started = []
    counter = [0]

    def start(config, env=None, args=None, port=None, wait=True):
        counter[0] += 1
        d = tmp_path / ("portico%d" % counter[0])
        d.mkdir()
        p = Portico(d, config, env=env, args=args, port=port, wait=wait)
        started.append(p)
        return p

    yield start
    failures = []
    for p in started:
        problems = p.stop()
        if problems:
            failures.append("portico on port %d: %s\n%s" % (p.port, "; ".join(problems), p.logs()))
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


@pytest.fixture
def upstream():
    servers = []

    def start(handler=None, name="echo"):
        u = Upstream(handler, name=name).start()
        servers.append(u)
        return u

    yield start
    for u in servers:
        u.stop()


@pytest.fixture
def echo(upstream):
    return upstream()


@pytest.fixture
def raw_server():
    servers = []

    def start(fn, **kw):
        s = RawServer(fn, **kw)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()
