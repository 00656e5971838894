#!/bin/bash
# ab.sh LUA ROUNDS BIN...: alternating 5 s wrk runs of each build (mock and sluice on core 1, wrk on core 0)
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$HERE/../../.." && pwd); P=${P:-/tmp/sluice-profile}; mkdir -p "$P"
LUA=$1; ROUNDS=$2; shift 2
for r in $(seq $ROUNDS); do
  for b in "$@"; do
    BIN=$b $HERE/up.sh
    taskset -c 0 wrk -t1 -c64 -d2s -s $ROOT/tests/bench/wrk/$LUA http://127.0.0.1:18080/v1/chat/completions > /dev/null
    echo "$(basename $(dirname $(dirname $b))) $(CONNS=64 $HERE/cs.sh "config $HERE/sluice.yaml" 18080 $LUA)"
  done
done
