#!/bin/bash
# abrows.sh N BUILD...: bench_proxy runs of several release builds (each named by its folder, e.g. build-release),
# alternated N times, printing row 4's CPU seconds and time to first event p50/p99 (nginx / Sluice) for each.
# ROWS (default 345: each proxy's row 4 after its own rows 3 and 5, as make bench runs it), ONLY (default
# nginx,sluice) and SECONDS_PER (default 2) pass to bench_proxy. Kills any bench_proxy first.
ROOT=$(cd "$(dirname "$0")/../../.." && pwd); cd "$ROOT" || exit 1
n=$1; shift
for i in $(seq "$n"); do
  for b in "$@"; do
    pkill -f bench_proxy; rm -rf /tmp/sluice-bench-*; sleep 1
    out=$(SLUICE_BINARY=$ROOT/$b/sluice ./build/bench_proxy --rows "${ROWS:-345}" --seconds "${SECONDS_PER:-2}" \
          --only "${ONLY:-nginx,sluice}" 2>&1)
    echo "$b run $i: $(echo "$out" | grep -E '^\| 4 \| … (CPU|time to first event p(50|99))' |
      awk -F'|' '{sub(/^ … /, "", $3); printf "%s %s / %s; ", $3, $5, $6}')"
  done
done
