#!/bin/bash
# nginx on core 1 with the mock, then cs.sh
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$HERE/../../.." && pwd); P=${P:-/tmp/sluice-profile}; mkdir -p "$P"
pkill -f 'bench_proxy --mock'; pkill -f "serve --config $HERE/"; pkill nginx; sleep 0.5
taskset -c 1 $ROOT/build/bench_proxy --mock 18001 18002 > $P/mock.log 2>&1 &
mkdir -p $P/ngx; taskset -c 1 nginx -c $HERE/ngx.conf -p $P/ngx & sleep 1
taskset -c 0 wrk -t1 -c64 -d2s -s $ROOT/tests/bench/wrk/chat.lua http://127.0.0.1:18090/v1/chat/completions > /dev/null
CONNS=64 $HERE/cs.sh 'nginx -c' 18090 $1
pkill nginx
