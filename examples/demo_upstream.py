#!/usr/bin/env python3
"""Demo upstream services for `make run` (stdlib only).

Starts three tiny HTTP/1.1 JSON services on 127.0.0.1:
  9001, 9002  "users"  — GET /users/<id>  -> {"id": ..., "name": ..., "served_by": port}
  9003        "orders" — GET /<id>        -> {"order": ..., "served_by": port}
Every response echoes the X-Request-Id it received, so the README's tour can
show the ID travelling from Portico to the service and back.
"""
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_handler(service, port):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status, obj):
            body = (json.dumps(obj) + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            rid = self.headers.get("X-Request-Id", "")
            parts = [p for p in self.path.split("?")[0].split("/") if p]
            if service == "users" and len(parts) == 2 and parts[0] == "users":
                self._send(200, {"id": parts[1], "name": "user-" + parts[1], "served_by": port,
                                 "request_id": rid})
            elif service == "orders" and len(parts) == 1:
                self._send(200, {"order": parts[0], "status": "shipped", "served_by": port,
                                 "request_id": rid})
            else:
                self._send(404, {"error": "not found", "path": self.path, "served_by": port})

        def log_message(self, fmt, *args):  # keep the terminal for Portico's log
            pass

    return Handler


def main():
    servers = []
    for port, service in ((9001, "users"), (9002, "users"), (9003, "orders")):
        srv = ThreadingHTTPServer(("127.0.0.1", port), make_handler(service, port))
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
    print("demo upstreams: users on :9001 and :9002, orders on :9003", file=sys.stderr, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    stop.wait()
    for s in servers:
        s.shutdown()


if __name__ == "__main__":
    main()
