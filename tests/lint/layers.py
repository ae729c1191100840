#!/usr/bin/env python3
"""layers.py — folder dependency rules of src/ (docs/architecture.md, "Layers").

Reads every file under src/, takes each `#include "dir/file.h"` as an edge
from the including file's top folder to `dir`, and fails when:
  * an edge is neither in ALLOWED (the layering, which must stay acyclic)
    nor in BACK_EDGES (known cycles, each with its reason);
  * a file under src/core/ includes anything outside core/;
  * a file under src/plugins/ includes a header that is not the plugin API
    (plugin/plugin.h), its own plugin folder's, or plugins/plugin_util.h
    (plugins/registry.c may also include each plugin's type header);
  * a quoted include has no folder ("foo.h"): the graph could not see it.
System/library headers (<...>) are not checked. No build needed; runs in
well under a second. Exit status 0 when clean, 1 otherwise.

Updating: a new folder gets an ALLOWED entry listing what it may include
(lower layers only). An edge that closes a cycle goes into BACK_EDGES with a
one-line reason, never into ALLOWED. Back-edges that no longer occur are
reported (not an error) so the table can be trimmed.
"""
import os
import re
import sys

# Folders from the bottom up; each may include the folders listed (and
# itself). This table must stay acyclic: the script checks it.
ALLOWED = {
    "core": [],
    "net": ["core"],
    "http": ["core"],
    "config": ["core", "http", "net"],
    "tls": ["core", "config"],
    "router": ["core", "http", "config"],
    "obs": ["core", "http", "net", "config"],
    "admin": ["core", "http", "config", "obs"],
    "plugin": ["core", "http", "net", "config", "obs"],
    "plugins": ["plugin"],  # narrowed further per file by check_plugins()
    "upstream": ["core", "net", "http", "config", "tls", "obs", "plugin"],
    "proxy": ["core", "net", "http", "config", "tls", "router", "obs", "plugin", "upstream"],
    # The client side: the connection object (accept, TLS handshake, drain)
    # and the HTTP/1 and HTTP/2 server codecs driving txns.
    "downstream": ["core", "net", "http", "config", "tls", "obs", "proxy"],
    "server": ["core", "net", "http", "config", "tls", "obs", "admin", "plugin", "upstream", "proxy",
               "downstream"],
    "cli": ["core", "config", "router", "obs", "plugin", "proxy", "server"],
}

# Edges that close a cycle, kept for now: (from, to) -> why.
BACK_EDGES = {
    ("downstream", "server"): "codecs reach per-worker state and connection limits (server/worker.h, connlimit.h)",
    ("obs", "server"): "gateway_metrics.c finds a worker's shard and series in pt_worker (server/worker.h)",
    ("proxy", "server"): "txn_int.h: a txn pins its worker generation and arena cache in pt_worker",
    ("upstream", "server"): "exchanges, pools and clients reach the worker's loop, pools and DNS via pt_worker",
}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def includes(root):
    """Yields (path, line number, included name) for every quoted include."""
    for dirpath, _, files in os.walk(root):
        for f in sorted(files):
            if not f.endswith((".c", ".h")):
                continue
            path = os.path.join(dirpath, f)
            with open(path, encoding="utf-8", errors="replace") as fh:
                for n, line in enumerate(fh, 1):
                    m = INCLUDE.match(line)
                    if m:
                        yield path, n, m.group(1)


def check_acyclic(errors):
    """ALLOWED itself must be a DAG (cycles belong in BACK_EDGES)."""
    state = {}

    def visit(a, stack):
        state[a] = 1
        for b in ALLOWED.get(a, []):
            if state.get(b) == 1:
                errors.append("layers.py: ALLOWED has a cycle %s -> %s: move one edge to BACK_EDGES"
                              % (" -> ".join(stack + [a]), b))
            elif b not in state:
                visit(b, stack + [a])
        state[a] = 2

    for a in ALLOWED:
        if a not in state:
            visit(a, [])


def check_plugins(rel, n, inc, errors):
    """The plugin rule for one include of src/plugins/<rel>."""
    parts = rel.split("/")
    if inc in ("plugin/plugin.h", "plugins/plugin_util.h"):
        if rel == "plugin_util.h" and inc == "plugins/plugin_util.h":
            errors.append("src/plugins/%s:%d: includes itself" % (rel, n))
        return
    if len(parts) > 1 and inc.startswith("plugins/%s/" % parts[0]):
        return  # its own plugin folder
    if rel == "registry.c":
        m = re.match(r"plugins/([^/]+)/([^/]+)\.h$", inc)
        if m and m.group(1) == m.group(2):
            return  # each plugin's type header, for the table
    errors.append('src/plugins/%s:%d: #include "%s" is not the plugin API (plugin/plugin.h), a header of its own '
                  "plugin folder or plugins/plugin_util.h" % (rel, n, inc))


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src")
    root = os.path.normpath(root)
    errors, used_back = [], set()
    check_acyclic(errors)
    for path, n, inc in includes(root):
        rel = os.path.relpath(path, root)
        src = rel.split(os.sep)[0]
        shown = "src/" + rel.replace(os.sep, "/")
        if "/" not in inc:
            errors.append('%s:%d: #include "%s" has no folder: write it as "<folder>/%s"' % (shown, n, inc, inc))
            continue
        dst = inc.split("/")[0]
        if src == "plugins":
            check_plugins(rel.split(os.sep, 1)[1].replace(os.sep, "/"), n, inc, errors)
        if dst == src:
            continue
        if src == "core":
            errors.append('%s:%d: #include "%s": core/ includes nothing outside core/' % (shown, n, inc))
            continue
        if src not in ALLOWED:
            errors.append("%s:%d: folder src/%s/ is not in tests/lint/layers.py ALLOWED" % (shown, n, src))
            continue
        if dst in ALLOWED[src]:
            continue
        if (src, dst) in BACK_EDGES:
            used_back.add((src, dst))
            continue
        errors.append('%s:%d: #include "%s": %s/ may not depend on %s/ (tests/lint/layers.py)'
                      % (shown, n, inc, src, dst))
    for edge in sorted(set(BACK_EDGES) - used_back):
        print("layers: note: back-edge %s -> %s does not occur; remove it from BACK_EDGES once that is for good" % edge)
    for e in errors:
        print(e)
    print("layers: %s (%d folders, %d back-edges in use)"
          % ("FAILED, %d problem(s)" % len(errors) if errors else "ok", len(ALLOWED), len(used_back)))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
