"""jwt with a remote JWKS under load: the identity provider rotates a key
in, then goes down, while client threads keep sending requests.

A JWKS server started by the test serves key A; client threads send
requests continuously (keep-alive, every request verified: cache off) and
count every answer. The IdP then adds key B (new kid): tokens signed with
B are accepted (the unknown kid triggers one refetch) while A keeps
working. Tokens with a third, unknown kid C are sent too: each is a 401,
and the refetches they cause are rate-limited — the IdP sees at most one
fetch per `min_refresh` however many C tokens arrive (a bound counted at
the server, not a timing). Then the IdP is stopped (connection refused):
A and B keep being accepted from the last good key set, C stays 401.
Throughout: zero 5xx, zero transport failures, zero refusals of a valid
token. Runs against the ASan binary like every integration test."""

import threading
import time

from test_jwt import RSA, RSA_OTHER, JwksServer, mint, rsa_jwk, jwks_config  # noqa: F401
from upstreams import Client

MIN_REFRESH = 1.0   # seconds, the config's min_refresh
THREADS = 4


class TimedJwks(JwksServer):
    """JwksServer that also notes when each fetch arrived (monotonic)."""

    def __init__(self, upstream):
        super().__init__(upstream)
        self.times = []
        inner = self.up.handler

        def timed(req):
            self.times.append(time.monotonic())
            return inner(req)
        self.up.handler = timed

    def fetches_between(self, t0, t1):
        return sum(1 for t in self.times if t0 <= t <= t1)


class Load:
    """THREADS keep-alive clients cycling through the token kinds in
    `self.kinds` (changed by the test between phases); every answer is
    counted per (kind, status), transport errors per kind."""

    def __init__(self, port, tokens):
        self.port = port
        self.tokens = tokens
        self.kinds = ["A"]
        self.counts = {}
        self.errors = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(THREADS)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def count(self, kind, status):
        with self.lock:
            return self.counts.get((kind, status), 0)

    def total(self, pred):
        with self.lock:
            return sum(n for (k, st), n in self.counts.items() if pred(k, st))

    def run(self, idx):
        i = idx
        client = None
        while not self.stop.is_set():
            kinds = list(self.kinds)
            kind = kinds[i % len(kinds)]
            i += 1
            try:
                if client is None:
                    client = Client(self.port, timeout=15)
                r = client.request("GET", "/load/%s" % kind,
                                   headers={"Authorization": "Bearer " + self.tokens[kind]})
                status = r.status
                if (r.header("Connection") or "").lower() == "close":
                    client.close()
                    client = None
            except Exception as e:  # noqa: BLE001 - any transport failure is counted
                with self.lock:
                    self.errors.append((kind, repr(e)))
                if client is not None:
                    client.close()
                client = None
                continue
            with self.lock:
                self.counts[(kind, status)] = self.counts.get((kind, status), 0) + 1
        if client is not None:
            client.close()

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(30)


def wait_until(pred, timeout=20, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def test_jwks_rotation_and_idp_outage_under_load(portico, echo, upstream):
    idp = TimedJwks(upstream)
    idp.keys = [rsa_jwk(RSA, "kid-a")]
    idp.cache_control = "max-age=300"        # no periodic refresh: only an unknown kid refetches
    p = portico(jwks_config(echo.addr, idp.addr, min_refresh="%dms" % int(MIN_REFRESH * 1000)))
    tokens = {
        "A": mint(headers={"kid": "kid-a"}),
        "B": mint(key=RSA_OTHER, headers={"kid": "kid-b"}),
        "C": mint(key=RSA_OTHER, headers={"kid": "kid-c"}),   # never published
    }
    load = Load(p.port, tokens).start()
    try:
        # Phase 1: key A only. One fetch, however many requests.
        wait_until(lambda: load.count("A", 200) >= 50, what="50 accepted A tokens")
        assert len(idp.times) == 1
        time.sleep(max(0.0, idp.times[0] + MIN_REFRESH * 1.5 - time.monotonic()))  # past the refetch limit
        assert len(idp.times) == 1

        # Phase 2: the IdP rotates key B in; B tokens join the load and are
        # accepted (refresh on the unknown kid: exactly one refetch). From
        # then on the IdP says no-cache: a refresh is due every min_refresh.
        idp.keys = [rsa_jwk(RSA, "kid-a"), rsa_jwk(RSA_OTHER, "kid-b")]
        load.kinds = ["A", "B"]
        wait_until(lambda: load.count("B", 200) >= 50, what="50 accepted B tokens")
        assert len(idp.times) == 2
        idp.cache_control = "no-cache"
        b_before = load.count("B", 200)

        # Phase 3: a flood of unknown kid C with the IdP up: 401 each, the
        # refetches bounded by one per min_refresh (periodic ones included).
        t_flood = time.monotonic()
        c_before = load.count("C", 401)
        load.kinds = ["A", "B", "C", "C", "C", "C"]
        time.sleep(MIN_REFRESH * 2.5)
        wait_until(lambda: load.count("C", 401) - c_before >= 100, what="100 refused C tokens")
        t_flood_end = time.monotonic()
        fetched = idp.fetches_between(t_flood, t_flood_end)
        c_refused = load.count("C", 401) - c_before
        bound = (t_flood_end - t_flood) / MIN_REFRESH + 2
        assert fetched <= bound, (fetched, bound)
        assert c_refused > 3 * bound, (c_refused, bound)   # without the rate limit each C would fetch
        assert load.count("B", 200) > b_before

        # Phase 4: the IdP is down (connection refused). A and B keep being
        # accepted from the last good set; C is still 401; refreshes fail.
        idp.up.stop()
        a_down, b_down, c_down = load.count("A", 200), load.count("B", 200), load.count("C", 401)
        time.sleep(MIN_REFRESH * 2.5)          # several failed refresh attempts
        wait_until(lambda: load.count("A", 200) >= a_down + 50 and load.count("B", 200) >= b_down + 50
                   and load.count("C", 401) >= c_down + 50, what="answers during the outage")
    finally:
        load.join()

    statuses = {k: n for k, n in load.counts.items()}
    assert load.errors == [], load.errors[:5]
    assert load.total(lambda k, st: st >= 500) == 0, statuses
    assert load.total(lambda k, st: k in ("A", "B") and st != 200) == 0, statuses
    assert load.total(lambda k, st: k == "C" and st != 401) == 0, statuses
    # The gateway still answers normally after the run.
    with Client(p.port) as c:
        assert c.request("GET", "/after", headers={"Authorization": "Bearer " + tokens["B"]}).status == 200
