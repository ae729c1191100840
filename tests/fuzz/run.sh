#!/usr/bin/env bash
# Builds every libFuzzer driver tests/fuzz/fuzz_*.c with clang (ASan+UBSan)
# and runs each for a bounded time ($1 seconds, default 30) from a copy of
# its seed corpus (tests/fuzz/corpus_<name>/), so the repo is not touched.
# Fails if a driver finds a crash, leak or undefined behaviour.
# src/ (without the CLI) is compiled once, two files at a time, with fuzzer
# instrumentation; each driver is its own .c linked against those objects.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-30}
OUT=build/fuzz
mkdir -p "$OUT"
OUT_ABS=$(cd "$OUT" && pwd)
CFLAGS=(-std=c17 -D_GNU_SOURCE -g -O1 -fno-sanitize-recover=undefined -Isrc -I/usr/include/libxml2)
LIBS=(-lyaml -lpcre2-8 -lssl -lcrypto -lnghttp2 -lcares -lhiredis -lz -lbrotlienc -lbrotlidec -lzstd -ljansson -lxml2 -lcrypt -lm -pthread)
SRCS=$(find src -name '*.c' ! -path 'src/cli/*' | sort)
echo "fuzz: building src/"
rm -rf "$OUT/obj"
for s in $SRCS; do echo "$s"; done | xargs -P2 -I{} sh -c \
  'f=$1; shift; mkdir -p "$(dirname "$0/obj/$f")" && clang "$@" -c "$f" -o "$0/obj/${f%.c}.o"' "$OUT" {} \
  "${CFLAGS[@]}" -fsanitize=fuzzer-no-link,address,undefined
OBJS=$(for s in $SRCS; do echo "$OUT/obj/${s%.c}.o"; done)
rc=0
for drv in tests/fuzz/fuzz_*.c; do
  name=$(basename "$drv" .c)
  short=${name#fuzz_}
  bin="$OUT/$name"
  echo "fuzz: building $name"
  clang "${CFLAGS[@]}" -fsanitize=fuzzer,address,undefined -o "$bin" "$drv" $OBJS "${LIBS[@]}"
  corpus="$OUT/corpus_$short"
  rm -rf "$corpus"; mkdir -p "$corpus"
  if [ -d "tests/fuzz/corpus_$short" ]; then cp -r "tests/fuzz/corpus_$short/." "$corpus/"; fi
  echo "fuzz: running $name for ${SECS}s"
  if ! (cd "$OUT" && "./$name" -max_total_time="$SECS" -print_final_stats=1 -artifact_prefix="$OUT_ABS/${name}-" "corpus_$short" >"$name.log" 2>&1); then
    echo "fuzz: $name FAILED — see $OUT/$name.log"; tail -40 "$OUT/$name.log"; rc=1
  else
    grep -E "^stat::number_of_executed_units" "$OUT/$name.log" | sed "s/^/fuzz: $name /" || true
    grep -E "^#[0-9]+[[:space:]]+DONE" "$OUT/$name.log" | sed -E "s/^#[0-9]+[[:space:]]+DONE[[:space:]]+/fuzz: $name /" || true
  fi
done
exit $rc
