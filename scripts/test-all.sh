#!/usr/bin/env bash
# Runs every test stage of `make test` and ends with one summary line
# "tests: N passed, M failed" (the layers lint + unit test cases +
# integration tests + fuzz drivers + the black-box fuzzer). Exits non-zero if any stage failed.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=build/test-logs
mkdir -p "$LOG"
passed=0; failed=0; rc=0

stage() { echo; echo "=== $1 ==="; }

stage "layers (folder dependencies of src/, tests/lint/layers.py)"
if /usr/bin/python3 tests/lint/layers.py; then
  passed=$((passed + 1))
else
  failed=$((failed + 1)); rc=1
fi

stage "clang build (-Wall -Wextra -Werror)"
if make --no-print-directory BUILD=build/clang CC=clang >"$LOG/clang.log" 2>&1; then
  echo "clang build: ok"; passed=$((passed + 1))
else
  echo "clang build FAILED:"; grep -E "error|warning" "$LOG/clang.log" | head -20; failed=$((failed + 1)); rc=1
fi

stage "unit tests (ASan+UBSan)"
make --no-print-directory unit-bins BUILD=build/asan OPT="-O1 -g -fno-omit-frame-pointer" \
  SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" >"$LOG/unit-build.log" 2>&1 \
  || { echo "unit test build failed:"; tail -30 "$LOG/unit-build.log"; rc=1; failed=$((failed + 1)); }
for t in build/asan/tests/test_*; do
  [ -x "$t" ] || continue
  out=$("$t" 2>&1); trc=$?
  line=$(printf '%s\n' "$out" | tail -1); echo "$line"
  p=$(printf '%s' "$line" | sed -n 's/.* \([0-9]\+\) passed, \([0-9]\+\) failed.*/\1/p')
  f=$(printf '%s' "$line" | sed -n 's/.* \([0-9]\+\) passed, \([0-9]\+\) failed.*/\2/p')
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
  if [ $trc -ne 0 ]; then printf '%s\n' "$out" | grep -v "^PASS" | tail -30; rc=1; [ -z "$f" ] && failed=$((failed+1)); fi
done

stage "integration tests (pytest, real portico ASan+UBSan binary, real upstreams)"
out=$(cd tests/integration && PORTICO_BIN="$PWD/../../build/asan/portico" /usr/bin/python3 -m pytest -q -p no:cacheprovider . 2>&1); prc=$?
printf '%s\n' "$out" | tail -25
if [ $prc -ne 0 ]; then # the tracebacks of what failed (the tail above has only the summary)
  printf '%s\n' "$out" | sed -n '/^=\+ \(FAILURES\|ERRORS\) =\+$/,/^=\+ short test summary/p' | head -400
fi
sumline=$(printf '%s\n' "$out" | grep -E "^[0-9]+ (passed|failed)|^=+ .*(passed|failed)" | tail -1)
p=$(printf '%s' "$sumline" | grep -oE "[0-9]+ passed" | grep -oE "[0-9]+"); f=$(printf '%s' "$sumline" | grep -oE "[0-9]+ failed" | grep -oE "[0-9]+")
e=$(printf '%s' "$sumline" | grep -oE "[0-9]+ error" | grep -oE "[0-9]+")
passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0} + ${e:-0}))
if [ $prc -ne 0 ]; then rc=1; [ -z "$f$e" ] && failed=$((failed+1)); fi

stage "fuzzing (libFuzzer, bounded)"
if tests/fuzz/run.sh "${FUZZ_SECONDS:-30}"; then
  n=$(ls tests/fuzz/fuzz_*.c | wc -l); passed=$((passed + n))
else
  failed=$((failed + 1)); rc=1
fi

stage "black-box fuzzing (ASan+UBSan portico, mutated HTTP/1.1 + HTTP/2, misbehaving upstreams, reloads)"
# The seed is the UTC date unless BLACKBOX_SEED is set: one day's runs are
# reproducible, and every day explores other cases. See docs/fuzzing.md.
bb_seed=${BLACKBOX_SEED:-$(date -u +%Y%m%d)}
bb_secs=${BLACKBOX_SECONDS:-60}
echo "blackbox fuzz: seed $bb_seed, ${bb_secs}s (replay: /usr/bin/python3 tests/fuzz/blackbox/fuzz.py --seed $bb_seed --seconds $bb_secs)"
if /usr/bin/python3 tests/fuzz/blackbox/fuzz.py --seed "$bb_seed" --seconds "$bb_secs" --quiet >"$LOG/blackbox.log" 2>&1; then
  tail -1 "$LOG/blackbox.log"; passed=$((passed + 1))
else
  echo "black-box fuzzing FAILED — see $LOG/blackbox.log and build/fuzz/blackbox/"; tail -80 "$LOG/blackbox.log"
  failed=$((failed + 1)); rc=1
fi

echo
echo "tests: $passed passed, $failed failed"
exit $rc
