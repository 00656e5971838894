#!/usr/bin/env bash
# Builds the libFuzzer targets into build-fuzz/ and runs each for FUZZ_SECONDS (default 20) on a copy of
# its seed corpus, so tests/fuzz/corpus/ is never changed. Exits non-zero when any target crashes, leaks,
# times out or breaks an invariant; the crashing input lands in build-fuzz/artifacts/<target>/.
#   FUZZ_SECONDS=60 tests/fuzz/run.sh                 # every target
#   FUZZ_SECONDS=600 tests/fuzz/run.sh fuzz_dialect   # one target, longer
# Reproduce a crash: build-fuzz/fuzz_dialect build-fuzz/artifacts/fuzz_dialect/crash-...
set -euo pipefail
cd "$(dirname "$0")/../.."

BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
SECONDS_EACH=${FUZZ_SECONDS:-20}
JOBS=${FUZZ_JOBS:-2}
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(fuzz_sse_parser fuzz_request fuzz_config fuzz_dialect fuzz_chunked fuzz_incoming fuzz_answer)

if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  CXX=${FUZZ_CXX:-clang++} cmake -S tests/fuzz -B "$BUILD_DIR" -G Ninja >/dev/null
fi
cmake --build "$BUILD_DIR" -j "$JOBS" --target "${TARGETS[@]}"

# Clean reports: symbolised (llvm-14 has no unversioned llvm-symbolizer), leaks checked, UB fatal.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
if [ -z "${ASAN_SYMBOLIZER_PATH:-}" ] && [ -x /usr/lib/llvm-14/bin/llvm-symbolizer ]; then
  export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${TARGETS[@]}"; do
  corpus=tests/fuzz/corpus/$t
  artifacts=$BUILD_DIR/artifacts/$t
  mkdir -p "$artifacts" "$work/$t"
  [ -d "$corpus" ] && cp -R "$corpus/." "$work/$t/"
  log=$BUILD_DIR/artifacts/$t.log
  echo "== $t: ${SECONDS_EACH}s on $(find "$work/$t" -type f | wc -l) seed inputs"
  if "$BUILD_DIR/$t" "$work/$t" -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 \
      -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1; then
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" | tr '\n' ' ' || true
    echo
  else
    failed+=("$t")
    echo "!! $t FAILED (full log: $log)"
    # The report (sanitizer, invariant, timeout or OOM) up to the input that triggered it.
    sed -n '/^invariant violated\|runtime error\|^==[0-9]*== *ERROR\|ALARM\|out-of-memory/,$p' "$log" |
      grep -av '^stat::' | head -n 80
    grep -a 'Test unit written to' "$log" || true
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found problems in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzzing: no crashes in ${TARGETS[*]} (${SECONDS_EACH}s each)"
