#!/bin/bash
# accesslines.sh RUN_DIR [MS]: row 2's time inside Sluice, from the access log a bench_proxy run leaves (its
# "Logs and configs" folder). Row 2's open-loop rounds are the stretches of fast answers between row 1's
# saturated ones; for each block of 1,000 whole (non-stream) answers whose mean duration_ms is under 0.25 ms it
# prints the block's first line, mean and max duration_ms, and how many took over 1 ms and over MS (default 3)
# inside the gateway (from the request's head read to its answer written). A round whose client-side p99 rose
# while these counts stay small spent the time outside Sluice's own work.
log=${1:?run folder}/sluice.log; ms=${2:-3}
awk -F'"duration_ms":' -v ms="$ms" '
  /"type":"access"/ && /"stream":false/ {
    split($2, a, "}"); d = a[1] + 0
    if (n == 0) first = NR
    n++; sum += d; if (d > mx) mx = d; if (d > 1) o1++; if (d > ms) o3++
    if (n == 1000) {
      if (sum / n < 0.25) printf "line %9d  mean %.3f  max %7.3f  >1ms %4d  >%sms %4d\n", first, sum / n, mx, o1, ms, o3
      n = 0; sum = 0; mx = 0; o1 = 0; o3 = 0
    }
  }' "$log"
