#!/usr/bin/python3
"""Black-box fuzzer for Portico (see docs/fuzzing.md).

Starts the ASan+UBSan `portico` binary with generated configurations,
a good echo upstream, a misbehaving HTTP/1.1 upstream and a misbehaving
h2c upstream, and drives it with mutated HTTP/1.1 and HTTP/2 traffic in
batches while a reloader rewrites the configuration and sends SIGHUP about
every 1.5 s. After every batch: the process must be alive, a plain GET
(HTTP/1.1 and h2c) through /plain must get the echo upstream's 200, stderr
must hold no AddressSanitizer / UBSan / LeakSanitizer report, the upstreams
must have seen only well-formed requests, and every reload must have got
the expected verdict. On failure the batch is saved (seed, cases, configs)
to build/fuzz/blackbox/ and the report printed; the exit status is 1.

    fuzz.py --seconds 60 [--seed N]       # run (same seed = same cases)
    fuzz.py --replay build/fuzz/blackbox/fail-N-bK.json [--only 3,7]
"""

import argparse
import base64
import concurrent.futures
import json
import os
import random
import shutil
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True   # leave no __pycache__ outside build/
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

import configs  # noqa: E402
from gateway import Gateway  # noqa: E402
from h1cases import gen_h1_case, run_h1_case  # noqa: E402
from h2cases import gen_h2_case, run_h2_case  # noqa: E402
from upstream_h1 import BadH1Upstream  # noqa: E402
from upstream_h2 import BadH2Upstream  # noqa: E402
from upstreams import Upstream  # noqa: E402  (the integration tests' echo upstream)


# ----------------------------------------------------- (de)serialisation

def enc(o):
    """JSON-safe copy: bytes become {"b64": ...}."""
    if isinstance(o, (bytes, bytearray)):
        return {"b64": base64.b64encode(bytes(o)).decode()}
    if isinstance(o, dict):
        return {k: enc(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [enc(v) for v in o]
    return o


def dec(o):
    if isinstance(o, dict):
        if set(o) == {"b64"}:
            return base64.b64decode(o["b64"])
        return {k: dec(v) for k, v in o.items()}
    if isinstance(o, list):
        return [dec(v) for v in o]
    return o


# ------------------------------------------------------------ generation

def gen_case(seed, n):
    """Case number n of a seed (independent of every other case)."""
    rng = random.Random("%d/case/%d" % (seed, n))
    case = gen_h1_case(rng, n) if rng.random() < 0.6 else gen_h2_case(rng, n)
    case["n"] = n
    return case


def gen_variant(seed, k):
    """Configuration variant k of a seed: (config, valid)."""
    rng = random.Random("%d/cfg/%d" % (seed, k))
    cfg = configs.gen_config(rng)
    if k > 0 and rng.random() < 0.07:
        return configs.break_config(rng, cfg), False
    return cfg, True


# ------------------------------------------------------------------- run

class Fuzzer:
    def __init__(self, args):
        self.args = args
        self.seed = args.seed
        self.stop = threading.Event()
        self.out = os.path.abspath(args.out)
        self.workdir = os.path.join(self.out, "run-%d" % self.seed)
        shutil.rmtree(self.workdir, ignore_errors=True)
        os.makedirs(self.workdir)
        self.echo = Upstream(name="echo").start()
        self.bad1 = BadH1Upstream(self.stop)
        self.bad2 = BadH2Upstream(self.stop)
        self.dead = socket.socket()            # bound, never listening: connects are refused
        self.dead.bind(("127.0.0.1", 0))
        self.subst = {"@ECHO@": self.echo.addr, "@BAD1@": self.bad1.addr, "@BAD2@": self.bad2.addr,
                      "@DEAD@": "127.0.0.1:%d" % self.dead.getsockname()[1],
                      "@LOG1@": os.path.join(self.workdir, "access1.log"),
                      "@LOG2@": os.path.join(self.workdir, "access2.log")}
        self.gw = Gateway(args.bin, self.workdir, self.subst)
        self.gw_lock = threading.Lock()
        self.replay = None
        self.variant_no = 0
        self.current = None                    # the valid variant running now
        self.batch_variants = []               # variants in force during this batch
        self.window_cases = []                 # cases since the last (re)start: a leak shows only at exit
        self.window_variants = []
        self.reload_problems = []
        self.stats = {"cases": 0, "batches": 0, "h1": 0, "h2": 0, "client_errors": 0, "restarts": 0}

    def variant(self, k):
        if self.replay:
            v = self.replay["configs"][k % len(self.replay["configs"])]
            return v["config"], v["valid"]
        return gen_variant(self.seed, k)

    def start_gateway(self):
        if self.current is None:
            self.current = self.variant(0)[0]
        self.gw.start(lambda subst: configs.render(self.current, subst))
        self.batch_variants.append({"config": self.current, "valid": True})
        self.window_cases = []
        self.window_variants = [{"config": self.current, "valid": True}]

    # -- the reloader ------------------------------------------------------
    def reloader(self):
        rng = random.Random("%d/reload" % self.seed)
        while not self.stop.wait(self.args.reload_every * rng.uniform(0.7, 1.3)):
            with self.gw_lock:
                if not self.gw.alive():
                    continue
                self.variant_no += 1
                cfg, valid = self.variant(self.variant_no)
                self.batch_variants.append({"config": cfg, "valid": valid})
                self.window_variants.append({"config": cfg, "valid": valid})
                problem = self.gw.reload(configs.render(cfg, self.gw.subst), valid)
                if problem:
                    self.reload_problems.append("reload of variant %d: %s" % (self.variant_no, problem))
                if valid:
                    self.current = cfg

    # -- batches -----------------------------------------------------------
    def run_case(self, case):
        for token, (proto, script) in case["scripts"].items():
            (self.bad1 if proto == "h1" else self.bad2).scripts[token] = script
        try:
            runner = run_h1_case if case["kind"] == "h1" else run_h2_case
            return runner(self.gw.port, case)
        except OSError:
            self.stats["client_errors"] += 1
            return 0

    def run_batch(self, cases):
        with concurrent.futures.ThreadPoolExecutor(self.args.jobs) as ex:
            list(ex.map(self.run_case, cases))
        for case in cases:
            self.stats["cases"] += 1
            self.stats[case["kind"]] += 1
            for token, (proto, _) in case["scripts"].items():
                (self.bad1 if proto == "h1" else self.bad2).scripts.pop(token, None)
        self.stats["batches"] += 1

    def check(self, nonce):
        """Every check after a batch; returns a list of problems."""
        problems = []
        with self.gw_lock:
            for check in (self.gw.liveness, self.gw.liveness_h2):
                if not self.gw.alive() or self.gw.sanitizer_report():
                    break
                p = check(nonce)
                if p:
                    problems.append(p)
            self.gw.settle()
            if not self.gw.alive():
                problems.append("portico exited (code %s)" % self.gw.proc.returncode)
            if self.gw.sanitizer_report():
                problems.append("sanitizer report on stderr")
        for up in (self.bad1, self.bad2):
            for what, raw in up.violations:
                problems.append("upstream saw a malformed request: %s: %r" % (what, raw[:600]))
            up.violations.clear()
        problems += self.reload_problems
        self.reload_problems = []
        return problems

    def restart(self):
        """SIGTERM (leak check at exit), then a fresh process."""
        with self.gw_lock:
            problems = self.gw.stop()
            if self.gw.sanitizer_report():
                problems.append("sanitizer report at exit")
            if not problems:
                self.start_gateway()
                self.stats["restarts"] += 1
        return problems

    def save_failure(self, batch, cases, problems, variants):
        name = "fail-%d-b%d" % (self.seed, batch)
        path = os.path.join(self.out, name + ".json")
        doc = {"seed": self.seed, "batch": batch, "case_numbers": [c["n"] for c in cases], "problems": problems,
               "configs": variants, "cases": cases,
               "replay": "%s %s --replay %s" % (sys.executable, os.path.relpath(__file__, REPO),
                                                os.path.relpath(path, REPO))}
        with open(path, "w") as f:
            json.dump(enc(doc), f, indent=1)
        shutil.copy(self.gw.stderr_path, os.path.join(self.out, name + ".stderr"))
        return path

    def report(self, batch, cases, problems, at_exit=False):
        """Prints and saves a failure: the batch, or (at_exit: a leak or a
        bad exit status shows only then) every case since the last start."""
        if at_exit:
            cases, variants = self.window_cases, self.window_variants
        else:
            variants = self.batch_variants
        path = self.save_failure(batch, cases, problems, variants)
        print("\nblackbox fuzz: FAILED in batch %d (seed %d)" % (batch, self.seed))
        for p in problems:
            print("  - " + p[:3000])
        rep = self.gw.sanitizer_report()
        if rep:
            print("\n--- sanitizer report (portico stderr) ---")
            print("\n".join(rep.splitlines()[:150]))
        elif problems:
            print("\n--- last lines of portico stderr ---\n" + self.gw.stderr()[-3000:])
        print("\nsaved: %s (+ .stderr)\nreplay: %s %s --replay %s" % (
            os.path.relpath(path, REPO), sys.executable, os.path.relpath(__file__, REPO), os.path.relpath(path, REPO)))

    def batches(self):
        """Yields (batch number, cases) until the time is up."""
        b = 0
        while True:
            if self.replay and self.args.one_by_one:
                for case in self.replay["cases"]:
                    yield b, [case]
                    b += 1
                continue
            if self.replay:
                cases = self.replay["cases"]
            else:
                n0 = b * self.args.batch
                cases = [gen_case(self.seed, n) for n in range(n0, n0 + self.args.batch)]
            yield b, cases
            b += 1

    def run(self):
        t0 = time.monotonic()
        deadline = t0 + self.args.seconds
        last_restart = t0
        rl = None
        failed = False
        try:
            try:
                self.start_gateway()
            except RuntimeError as e:
                print("blackbox fuzz: %s" % e)
                failed = True
                return 1
            rl = threading.Thread(target=self.reloader, daemon=True)
            rl.start()
            for b, cases in self.batches():
                self.batch_variants = [{"config": self.current, "valid": True}]
                self.run_batch(cases)
                self.window_cases += cases
                problems = self.check("b%d" % b)
                at_exit = False
                if not problems and self.args.restart_every and time.monotonic() - last_restart > self.args.restart_every:
                    problems = self.restart()
                    at_exit = bool(problems)
                    last_restart = time.monotonic()
                if problems:
                    self.report(b, cases, problems, at_exit)
                    failed = True
                    break
                if not self.args.quiet and b % 10 == 0:
                    print("blackbox fuzz: %5.0fs batch %d, %d cases, %d reloads" % (
                        time.monotonic() - t0, b, self.stats["cases"], self.gw.reloads_ok), flush=True)
                if time.monotonic() >= deadline:
                    break
            self.stop.set()
            if rl:
                rl.join(15)
            if not failed:
                with self.gw_lock:
                    problems = self.gw.stop()
                    if self.gw.sanitizer_report():
                        problems.append("sanitizer report at exit")
                if problems:
                    self.report(self.stats["batches"] - 1, cases, ["at shutdown: " + p for p in problems], True)
                    failed = True
        finally:
            self.stop.set()
            self.gw.kill()
            self.echo.stop()
            self.bad1.close()
            self.bad2.close()
            self.dead.close()
        st = self.stats
        print("blackbox fuzz: %s seed=%d cases=%d (h1 %d, h2 %d) batches=%d reloads=%d (refused %d) restarts=%d; "
              "upstream requests: echo %d, h1 %d, h2c %d; client connect errors %d; %.0fs" % (
                  "FAILED" if failed else "ok", self.seed, st["cases"], st["h1"], st["h2"], st["batches"],
                  self.gw.reloads_ok, self.gw.reloads_refused, st["restarts"], len(self.echo.requests),
                  self.bad1.requests, self.bad2.requests, st["client_errors"], time.monotonic() - t0))
        if not failed and not self.args.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=None, help="case sequence seed (default: random, printed)")
    ap.add_argument("--seconds", type=float, default=60, help="stop after this long (default 60)")
    ap.add_argument("--batch", type=int, default=24, help="cases per batch (default 24)")
    ap.add_argument("--jobs", type=int, default=4, help="concurrent connections (default 4)")
    ap.add_argument("--reload-every", type=float, default=1.5, help="seconds between SIGHUPs (default 1.5)")
    ap.add_argument("--restart-every", type=float, default=300,
                    help="restart portico (leak check at exit) this often, 0 = never (default 300)")
    ap.add_argument("--bin", default=os.path.join(REPO, "build", "asan", "portico"))
    ap.add_argument("--out", default=os.path.join(REPO, "build", "fuzz", "blackbox"))
    ap.add_argument("--replay", help="a saved fail-*.json: run its batch again and again")
    ap.add_argument("--only", help="with --replay: comma-separated case numbers to keep")
    ap.add_argument("--one-by-one", action="store_true",
                    help="with --replay: each case is a batch of its own (finds the culprit)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory after a passing run")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    replay = None
    if args.replay:
        with open(args.replay) as f:
            replay = dec(json.load(f))
        args.seed = replay["seed"] if args.seed is None else args.seed
        if args.only:
            keep = {int(x) for x in args.only.split(",")}
            replay["cases"] = [c for c in replay["cases"] if c["n"] in keep]
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "big")
    if not os.access(args.bin, os.X_OK):
        print("blackbox fuzz: %s is missing (make asan)" % args.bin)
        return 2
    os.makedirs(args.out, exist_ok=True)
    print("blackbox fuzz: seed %d, %ss, binary %s%s" % (args.seed, args.seconds, os.path.relpath(args.bin, REPO),
                                                        ", replaying " + args.replay if replay else ""), flush=True)
    fz = Fuzzer(args)
    fz.replay = replay
    if replay:
        fz.current = replay["configs"][0]["config"]
    return fz.run()


if __name__ == "__main__":
    sys.exit(main())
