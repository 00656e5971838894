#!/bin/bash
# up.sh: starts the mock and Sluice (BIN, default build/sluice; CFG, default sluice.yaml) on core 1
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$HERE/../../.." && pwd); P=${P:-/tmp/sluice-profile}; mkdir -p "$P"
BIN=${BIN:-$ROOT/build/sluice}; CFG=${CFG:-$HERE/sluice.yaml}
pkill -f 'bench_proxy --mock' ; pkill -f "serve --config $HERE/"; sleep 0.5
taskset -c 1 $ROOT/build/bench_proxy --mock 18001 18002 > $P/mock.log 2>&1 &
sleep 0.5
taskset -c 1 $BIN serve --config $CFG > $P/sluice.log 2>&1 &
for i in $(seq 50); do curl -s 127.0.0.1:18464/metrics >/dev/null && break; sleep 0.1; done
