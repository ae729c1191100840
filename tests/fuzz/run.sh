#!/usr/bin/env bash
# Builds every libFuzzer driver tests/fuzz/fuzz_*.c with clang (ASan+UBSan)
# and runs each for a bounded time ($1 seconds, default 30) from a copy of
# its seed corpus (tests/fuzz/corpus_<name>/), so the repo is not touched.
# Fails if a driver finds a crash, leak or undefined behaviour.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-30}
OUT=build/fuzz
mkdir -p "$OUT"
OUT_ABS=$(cd "$OUT" && pwd)
SRCS=$(find src -name '*.c' ! -path 'src/cli/*' | sort)
rc=0
for drv in tests/fuzz/fuzz_*.c; do
  name=$(basename "$drv" .c)
  short=${name#fuzz_}
  bin="$OUT/$name"
  echo "fuzz: building $name"
  clang -std=c17 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
    -fno-sanitize-recover=undefined -Isrc -o "$bin" "$drv" $SRCS -lyaml -lpcre2-8 -lssl -lcrypto -lnghttp2 -lcares -lz -lbrotlienc -lbrotlidec -lzstd -pthread
  corpus="$OUT/corpus_$short"
  rm -rf "$corpus"; mkdir -p "$corpus"
  if [ -d "tests/fuzz/corpus_$short" ]; then cp -r "tests/fuzz/corpus_$short/." "$corpus/"; fi
  echo "fuzz: running $name for ${SECS}s"
  if ! (cd "$OUT" && "./$name" -max_total_time="$SECS" -print_final_stats=1 -artifact_prefix="$OUT_ABS/${name}-" "corpus_$short" >"$name.log" 2>&1); then
    echo "fuzz: $name FAILED — see $OUT/$name.log"; tail -40 "$OUT/$name.log"; rc=1
  else
    grep -E "^stat::number_of_executed_units" "$OUT/$name.log" | sed "s/^/fuzz: $name /" || true
  fi
done
exit $rc
