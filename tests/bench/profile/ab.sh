#!/bin/bash
# ab.sh LUA ROUNDS X...: alternating 5 s wrk runs (up.sh, then cs.sh) of each X: a build (a sluice binary) or a
# config (a path ending in .yaml, run by the main build); mock and Sluice on core 1, wrk on core 0
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$HERE/../../.." && pwd); P=${P:-/tmp/sluice-profile}; mkdir -p "$P"
LUA=$1; ROUNDS=$2; shift 2
for r in $(seq $ROUNDS); do
  for x in "$@"; do
    if [[ $x == *.yaml ]]; then cfg=$x bin=$ROOT/build/sluice name=$(basename $x); else cfg=$HERE/sluice.yaml bin=$x name=$(basename $(dirname $x)); fi
    CFG=$cfg BIN=$bin $HERE/up.sh
    taskset -c 0 wrk -t1 -c64 -d2s -s $ROOT/tests/bench/wrk/$LUA http://127.0.0.1:18080/v1/chat/completions > /dev/null
    echo "$name $(CONNS=64 $HERE/cs.sh "serve --config $cfg" 18080 $LUA)"
  done
done
pkill -f "serve --config $HERE/"; pkill -f 'bench_proxy --mock'
