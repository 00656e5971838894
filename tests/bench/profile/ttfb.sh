#!/bin/bash
# ttfb.sh PORT N: N one-token streams from the mock's slow port, one after another, each on a new connection
# (curl on core 0): the first one's time to first byte, then the median and 90th percentile of the others (ms).
# Run right after up.sh (or a fresh nginx) to see what a proxy's first request costs.
one() {
  taskset -c 0 curl -s -o /dev/null -w "%{time_connect} %{time_starttransfer}\n" -H 'Authorization: Bearer sk-bench' \
    -H 'Content-Type: application/json' \
    -d '{"model":"bench-slow","messages":[{"role":"user","content":"hi"}],"max_tokens":1,"stream":true}' \
    http://127.0.0.1:$1/v1/chat/completions
}
times=$(for i in $(seq $2); do one $1; done | awk '{printf "%.3f\n", ($2-$1)*1000}')
first=$(echo "$times" | head -1)
echo "$times" | tail -n +2 | sort -n | awk -v first=$first '{a[NR]=$1}
  END{printf "first %.2f  then p50 %.2f p90 %.2f (ms, %d streams)\n", first, a[int(NR/2)+1], a[int(NR*0.9)+1], NR}'
