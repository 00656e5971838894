#!/bin/bash
# cg2.sh NAME LUA SECS: callgrind of sluice (CFG, default sluice.yaml, moved to port 18081) over a wrk window: instructions per request; needs the mock (up.sh)
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$HERE/../../.." && pwd); P=${P:-/tmp/sluice-profile}; mkdir -p "$P"
CFG=${CFG:-$HERE/sluice.yaml}; sed -e "s/18080/18081/; s/18464/18465/" "$CFG" > "$P/sluice-cg.yaml"  # the profiled copy listens beside up.sh's
BIN=${BIN:-$ROOT/build/sluice}
pkill -f 'sluice-cg.yaml'; sleep 0.3
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$P/cg-$1.out $BIN serve --config $P/sluice-cg.yaml > $P/cg-$1.log 2>&1 &
for i in $(seq 100); do curl -s 127.0.0.1:18465/metrics >/dev/null && break; sleep 0.2; done
taskset -c 0 wrk -t1 -c${CONNS:-8} -d2s -s $ROOT/tests/bench/wrk/$2 http://127.0.0.1:18081/v1/chat/completions > /dev/null
before=$(curl -s 127.0.0.1:18465/metrics | awk '/^sluice_requests_total/{s+=$2} END{print s}')
callgrind_control -i on > /dev/null
taskset -c 0 wrk -t1 -c${CONNS:-8} -d${3:-4}s -s $ROOT/tests/bench/wrk/$2 http://127.0.0.1:18081/v1/chat/completions > $P/cg-$1-wrk.txt
callgrind_control -i off > /dev/null
after=$(curl -s 127.0.0.1:18465/metrics | awk '/^sluice_requests_total/{s+=$2} END{print s}')
echo $((after-before)) > $P/cg-$1.reqs
pkill -INT -f 'sluice-cg.yaml'; sleep 2
tot=$(callgrind_annotate $P/cg-$1.out 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
echo "$1: reqs=$((after-before)) instr/req=$((tot/(after-before))) $(grep -c Non-2xx $P/cg-$1-wrk.txt) non2xx-lines"
