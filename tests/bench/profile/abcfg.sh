#!/bin/bash
# abcfg.sh LUA ROUNDS CFG...: alternating 5 s wrk runs of the main build under each config (up.sh, port 18080)
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$HERE/../../.." && pwd); P=${P:-/tmp/sluice-profile}; mkdir -p "$P"
LUA=$1; ROUNDS=$2; shift 2
for r in $(seq $ROUNDS); do
  for c in "$@"; do
    CFG=$c $HERE/up.sh
    taskset -c 0 wrk -t1 -c64 -d2s -s $ROOT/tests/bench/wrk/$LUA http://127.0.0.1:18080/v1/chat/completions > /dev/null
    echo "$(basename $c) $(CONNS=64 $HERE/cs.sh "serve --config $c" 18080 $LUA)"
  done
done
pkill -f "serve --config $HERE/"; pkill -f 'bench_proxy --mock'
