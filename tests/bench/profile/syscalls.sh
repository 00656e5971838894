#!/bin/bash
# syscalls.sh NAME PORT N: system calls per stream of process NAME (pgrep -f), counted by strace -c over N
# one-token streams from the mock's slow port, 20 at a time, each on a new connection.
pid=$(pgrep -f "$1" | head -1); out=${P:-/tmp/sluice-profile}/syscalls.txt; mkdir -p "$(dirname "$out")"
strace -c -f -p $pid -o $out & st=$!; sleep 1
seq $3 | xargs -P 20 -I{} taskset -c 0 curl -s -o /dev/null -H 'Authorization: Bearer sk-bench' \
  -H 'Content-Type: application/json' \
  -d '{"model":"bench-slow","messages":[{"role":"user","content":"hi"}],"max_tokens":5,"stream":true}' \
  http://127.0.0.1:$2/v1/chat/completions
sleep 0.5; kill -INT $st; wait $st 2>/dev/null
# strace -c's rows: % time, seconds, usecs/call, calls, [errors,] syscall
awk -v n=$3 '$1 ~ /^[0-9.]+$/ && (NF == 5 || NF == 6) {
  errs = NF == 6 ? $5 : 0; name = $NF == "total" ? "all" : $NF
  printf "%-16s %6.2f per stream%s\n", name, $4 / n, errs ? sprintf(" (%.2f failed)", errs / n) : "" }' $out
