#!/usr/bin/env bash
# install-deps.sh — installs the Debian 12 packages Portico needs to build,
# test and benchmark. Idempotent: installs only what is missing, and skips
# apt entirely when everything is present. Must run as root (or via sudo).
set -euo pipefail

PKGS=(
  # build
  build-essential clang libclang-rt-14-dev llvm
  libyaml-dev libpcre2-dev libssl-dev openssl libnghttp2-dev nghttp2-client python3-h2 libc-ares-dev
  zlib1g-dev libbrotli-dev libzstd-dev libjansson-dev libxml2-dev libcrypt-dev libhiredis-dev
  # tests
  python3 python3-pytest python3-requests curl python3-grpcio python3-grpc-tools python3-prometheus-client python3-websockets
  python3-brotli python3-zstandard python3-jwt python3-cryptography python3-jsonschema redis-server
  chromium chromium-driver python3-selenium python3-protobuf
  # benchmarks (bench/compare)
  wrk nginx-light haproxy
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing: ${missing[*]}"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
# nginx/haproxy/redis-server packages start system services; the project never uses them
# (the Redis tests start their own redis-server on a free port).
for svc in nginx haproxy redis-server; do
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true; fi
done
