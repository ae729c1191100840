#!/usr/bin/env bash
# Starts the demo upstreams, then Portico in the foreground with
# examples/quickstart.yaml. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/portico}
/usr/bin/python3 examples/demo_upstream.py &
DEMO=$!
trap 'kill $DEMO 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  (exec 3<>/dev/tcp/127.0.0.1/9003) 2>/dev/null && break
  sleep 0.1
done
echo "portico: try  curl -i http://127.0.0.1:8080/users/42   (Ctrl-C to stop)" >&2
"$BIN" run -c examples/quickstart.yaml &
PORTICO=$!
trap 'kill -TERM $PORTICO 2>/dev/null || true; wait $PORTICO 2>/dev/null || true; kill $DEMO 2>/dev/null || true' EXIT INT TERM
wait $PORTICO
