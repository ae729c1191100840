"""Configuration variants for the fuzzed gateway.

A variant is a dict with placeholders (@LISTEN@, @ECHO@, @BAD1@, @BAD2@,
@DEAD@, @LOG1@, @LOG2@) rendered to a file at run time, so a saved
variant replays against freshly started upstreams. Every variant has the
same listener and the same route prefixes (the cases pick a route by its
prefix); what changes between reloads is the plugins (every phase of
`delay`, `headers`, `request_id`, `direct_response`, `ip_restriction`),
limits, timeouts, upstream settings and the access log. `/plain` is always a
plugin-free route to the echo upstream: the liveness check goes there.

Configuration reference: docs/configuration.md. The file is written as
JSON, which YAML reads as a flow mapping.
"""

import json

from mutate import rand_token

# route key -> (path prefix, kind of upstream script the route needs)
ROUTES = {
    "plain": ("/plain", None),
    "echo": ("/echo", None),
    "h1": ("/h1", "h1"),
    "h2": ("/h2", "h2"),
    "stack": ("/stack", "h1"),
    "direct": ("/direct", None),
    "mix": ("/mix", "h1"),
    "get": ("/get", "h1"),
}

PHASES = ["request", "request_body", "response", "response_body"]
HEADER_NAMES = ["X-Fuzz", "X-H3", "X-H42", "X-H85", "X-Request-Id", "Accept", "User-Agent", "X-Forwarded-For",
                "Cache-Control", "Content-Type", "X-R1", "Set-Cookie", "Server", "Via", "X-Trace"]


def gen_delay(rng):
    d = {"duration": "%dms" % rng.choice([0, 1, 2, 5, 10, 10, 15, 20]), "phase": rng.choice(PHASES)}
    if rng.random() < 0.2:
        d["percentage"] = rng.choice([0, 50, 99.5, 100])
    return {"delay": d}


def gen_headers(rng):
    side = {}
    for which in ("request", "response"):
        if rng.random() < 0.6:
            ops = {}
            if rng.random() < 0.5:
                ops["remove"] = rng.sample(HEADER_NAMES, rng.randint(1, 3))
            if rng.random() < 0.6:
                ops["set"] = {n: rand_token(rng, hi=30) for n in rng.sample(HEADER_NAMES, rng.randint(1, 3))}
            if rng.random() < 0.6:
                ops["add"] = {n: rand_token(rng, hi=200) for n in rng.sample(HEADER_NAMES, rng.randint(1, 4))}
            if ops:
                side[which] = ops
    return {"headers": side or {"response": {"add": {"X-Gateway": "portico"}}}}


def gen_request_id(rng):
    conf = {}
    if rng.random() < 0.5:
        conf["header"] = rng.choice(["X-Request-Id", "X-Correlation-Id", "X-Trace"])
    if rng.random() < 0.5:
        conf["trust_incoming"] = rng.random() < 0.5
    if rng.random() < 0.3:
        conf["response_header"] = rng.random() < 0.5
    return {"request_id": conf}


def gen_direct(rng):
    status = rng.choice([200, 200, 201, 204, 304, 404, 418, 503, 599])
    conf = {"status": status}
    if status not in (204, 304) and rng.random() < 0.8:
        conf["body"] = rand_token(rng, hi=40) * rng.choice([1, 10, 500])
    if rng.random() < 0.5:
        conf["headers"] = {"Content-Type": "text/plain", "X-Direct": rand_token(rng)}
    return {"direct_response": conf}


def gen_ip_restriction(rng):
    if rng.random() < 0.8:
        return {"ip_restriction": {"allow": ["127.0.0.0/8", "::1"]}}
    return {"ip_restriction": {"deny": ["127.0.0.1"], "status": rng.choice([401, 403, 451])}}


def gen_plugins(rng, n, local_ok=True):
    """n plugins of random kinds (direct_response/ip_restriction only when
    the route may answer locally)."""
    kinds = [gen_delay, gen_delay, gen_headers, gen_request_id]
    if local_ok:
        kinds += [gen_ip_restriction]
    return [rng.choice(kinds)(rng) for _ in range(n)]


def gen_upstreams(rng):
    def common(u):
        u["connect_timeout"] = "1s"
        u["read_timeout"] = rng.choice(["1s", "2s"])
        u["write_timeout"] = "2s"
        u["keepalive"] = rng.choice([0, 1, 8, 64])
        u["keepalive_timeout"] = rng.choice(["1s", "60s"])
        if rng.random() < 0.3:
            u["preserve_host"] = rng.random() < 0.5
        return u
    return {
        "echo": common({"targets": ["@ECHO@"]}),
        "bad1": common({"targets": ["@BAD1@"]}),
        "bad2": common({"targets": ["@BAD2@"], "protocol": "h2c"}),
        "mix": common({"targets": [{"address": "@BAD1@", "weight": rng.randint(1, 5)},
                                   {"address": "@DEAD@", "weight": rng.randint(1, 3)}],
                       "retries": {"budget": {"ratio": rng.choice([0, 0.2, 1]),
                                              "min_retries": rng.choice([0, 1, 3])}}}),
    }


def gen_retries(rng):
    """A route `retries` block (docs/traffic.md): the misbehaving upstreams
    give it resets, timeouts, 5xx and cut responses to retry or not."""
    r = {"attempts": rng.randint(1, 4)}
    if rng.random() < 0.7:
        r["on"] = rng.sample(["connect_failure", "reset", "timeout", 500, 502, 503, 504],
                             rng.randint(1, 4))
    if rng.random() < 0.5:
        r["methods"] = rng.choice(["idempotent", "all"])
    if rng.random() < 0.4:
        r["per_try_timeout"] = rng.choice(["200ms", "500ms", "2s"])
    r["backoff"] = {"base": rng.choice(["0ms", "1ms", "10ms"]), "max": rng.choice(["10ms", "50ms"])}
    if rng.random() < 0.5:
        r["body_buffer"] = rng.choice(["0", "100", "1k", "64k"])
    return r


def gen_route(rng, key):
    prefix, _ = ROUTES[key]
    r = {"name": key, "match": {"path_prefix": prefix}}
    up = {"plain": "echo", "echo": "echo", "h1": "bad1", "h2": "bad2", "stack": "bad1", "mix": "mix",
          "get": "bad1"}.get(key)
    if up:
        r["upstream"] = up
    if key == "plain":
        return r
    if key == "get":
        r["match"]["methods"] = ["GET", "HEAD"]
    if key == "direct":
        r["plugins"] = gen_plugins(rng, rng.randint(0, 3), local_ok=False) + [gen_direct(rng)]
        return r
    if key == "stack":    # many plugins stacked, every delay phase at least once
        r["plugins"] = gen_plugins(rng, rng.randint(6, 14), local_ok=False) + \
            [{"delay": {"duration": "%dms" % rng.randint(0, 20), "phase": ph}} for ph in PHASES]
        rng.shuffle(r["plugins"])
    else:
        r["plugins"] = gen_plugins(rng, rng.choice([0, 1, 1, 2, 3, 5]))
    if not r["plugins"]:
        del r["plugins"]
    if up and rng.random() < 0.4:
        r["retries"] = gen_retries(rng)
    if rng.random() < 0.2:
        r["timeout"] = rng.choice(["300ms", "1s", "3s"])
    if rng.random() < 0.3:
        r["strip_prefix"] = True
    if rng.random() < 0.2:
        r["max_body_size"] = rng.choice(["0", "1k", "64k"])
    if rng.random() < 0.2:
        r["body_timeout"] = rng.choice(["1s", "3s"])
        r["min_body_rate"] = rng.choice(["0", "1k"])
    return r


def gen_config(rng):
    """One valid configuration variant."""
    cfg = {
        "workers": 2,
        "listen": [{"address": "@LISTEN@", "http2": True}],
        "limits": {
            "max_headers": rng.choice([100, 100, 128, 200, 64]),
            "max_header_size": rng.choice(["32k", "32k", "64k", "8k"]),
            "max_body_size": rng.choice(["1m", "1m", "0", "100k"]),
            "min_body_rate": rng.choice(["0", "1k"]),
            "http2_max_concurrent_streams": rng.choice([128, 128, 16, 4, 1]),
        },
        "timeouts": {"header": "3s", "body": "2s", "idle": "10s", "shutdown": "5s"},
        "access_log": rng.choice([{"enabled": True, "path": "@LOG1@"}, {"enabled": True, "path": "@LOG2@"},
                                  {"enabled": False}, {"enabled": True, "path": "stdout"}]),
        "upstreams": gen_upstreams(rng),
        "routes": [gen_route(rng, k) for k in ROUTES],
    }
    if rng.random() < 0.7:
        cfg["plugins"] = gen_plugins(rng, rng.randint(1, 3), local_ok=False)
    if rng.random() < 0.3:
        cfg["via"] = True
    if rng.random() < 0.3:
        cfg["server_header"] = "portico-fuzz"
    return cfg


def break_config(rng, cfg):
    """Turns a valid variant into one the loader must refuse (the reload
    must then fail and the running configuration keep serving)."""
    cfg = json.loads(json.dumps(cfg))
    how = rng.randrange(4)
    if how == 0:
        cfg["bogus_key"] = 1
    elif how == 1:
        cfg["routes"][1]["upstream"] = "missing"
    elif how == 2:
        cfg["routes"][2].setdefault("plugins", []).append({"delay": {"duration": "61s"}})
    else:
        cfg["limits"]["max_headers"] = 0
    return cfg


def render(cfg, subst):
    """The config file text: JSON (valid YAML) with placeholders replaced."""
    text = json.dumps(cfg, indent=1)
    for k, v in subst.items():
        text = text.replace(k, v)
    return text + "\n"
