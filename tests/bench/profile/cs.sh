#!/bin/bash
# cs.sh NAME PORT LUA: per request: context switches and CPU µs of process NAME and of the mock
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$HERE/../../.." && pwd); P=${P:-/tmp/sluice-profile}; mkdir -p "$P"
pid=$(pgrep -f "$1" | head -1); mpid=$(pgrep -f 'bench_proxy --mock' | head -1)
get() { cat /proc/$1/task/*/status | awk '/^voluntary_ctxt/{v+=$2} /^nonvoluntary/{n+=$2} END{print v, n}'; }
cpu() { awk '{print $14, $15}' /proc/$1/stat; }
read v0 n0 < <(get $pid); read mv0 mn0 < <(get $mpid); read u0 s0 < <(cpu $pid); read mu0 ms0 < <(cpu $mpid)
out=$(taskset -c 0 wrk -t1 -c${CONNS:-64} -d5s -s $ROOT/tests/bench/wrk/$3 http://127.0.0.1:$2/v1/chat/completions)
read v1 n1 < <(get $pid); read mv1 mn1 < <(get $mpid); read u1 s1 < <(cpu $pid); read mu1 ms1 < <(cpu $mpid)
r=$(echo "$out" | awk '/requests in/{print $1}')
f() { echo "scale=2; $1" | bc; }
echo "$1: rps=$(echo "$out" | awk '/Requests\/sec/{print $2}') sw/req vol=$(f "($v1-$v0)/$r") invol=$(f "($n1-$n0)/$r") mock-vol=$(f "($mv1-$mv0)/$r") | us/req proxy u=$(f "($u1-$u0)*10000/$r") s=$(f "($s1-$s0)*10000/$r") mock u=$(f "($mu1-$mu0)*10000/$r") s=$(f "($ms1-$ms0)*10000/$r") $(echo "$out" | grep Non-2xx)"
