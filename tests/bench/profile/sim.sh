#!/bin/bash
# sim.sh sluice|nginx (BIN= another sluice build): callgrind with cache and branch simulation over a 4 s wrk -c8 window; prints events per request
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$HERE/../../.." && pwd); P=${P:-/tmp/sluice-profile}; mkdir -p "$P"
BIN=${BIN:-$ROOT/build/sluice}; CFG=${CFG:-$HERE/sluice.yaml}; sed -e "s/18080/18081/; s/18464/18465/" "$CFG" > "$P/sluice-cg.yaml"  # the profiled copy listens beside up.sh's
pkill -f "serve --config $P/sluice-cg.yaml"; pkill nginx; sleep 0.3
if [ $1 = sluice ]; then
  valgrind --tool=callgrind --cache-sim=yes --branch-sim=yes --instr-atstart=no --callgrind-out-file=$P/sim-$1.out $BIN serve --config $P/sluice-cg.yaml > $P/sim-$1.log 2>&1 &
  port=18081
  for i in $(seq 100); do curl -s 127.0.0.1:18465/metrics >/dev/null && break; sleep 0.2; done
else
  mkdir -p $P/ngx; valgrind --tool=callgrind --cache-sim=yes --branch-sim=yes --instr-atstart=no --callgrind-out-file=$P/sim-$1.out nginx -c $HERE/ngx.conf -p $P/ngx > $P/sim-$1.log 2>&1 &
  port=18090; sleep 4
fi
taskset -c 0 wrk -t1 -c8 -d2s -s $ROOT/tests/bench/wrk/chat.lua http://127.0.0.1:$port/v1/chat/completions > /dev/null
callgrind_control -i on > /dev/null
out=$(taskset -c 0 wrk -t1 -c8 -d4s -s $ROOT/tests/bench/wrk/chat.lua http://127.0.0.1:$port/v1/chat/completions)
callgrind_control -i off > /dev/null
r=$(echo "$out" | awk '/requests in/{print $1}')
if [ $1 = sluice ]; then pkill -INT -f 'sluice-cg.yaml'; else pkill -QUIT -f "nginx -c $HERE/ngx.conf"; fi; sleep 3
callgrind_annotate $P/sim-$1.out 2>/dev/null | grep -A1 '^Ir' | head -2 > $P/sim-$1.hdr
callgrind_annotate $P/sim-$1.out 2>/dev/null | awk '/PROGRAM TOTALS/' > $P/sim-$1.tot
echo "$1 requests=$r"; cat $P/sim-$1.hdr $P/sim-$1.tot
