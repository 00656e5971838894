#!/bin/bash
# trace.sh PORT N: scheduler switches and wake-ups and every system call on core 1 (the proxy's and the mock's)
# while held.py sends N streams to PORT; perf runs on core 0, so that it does not share the traced core.
# Writes $P/trace.txt (perf script: command, thread, time, event): follow one stream from its accept to the
# write of its first event.
P=${P:-/tmp/sluice-profile}; mkdir -p "$P"; HERE=$(cd "$(dirname "$0")" && pwd)
taskset -c 0 perf record -q -a -C 1 -e sched:sched_switch,sched:sched_wakeup,raw_syscalls:sys_enter,raw_syscalls:sys_exit \
  -o $P/trace.data -- sleep $(( $2 / 50 + 2 )) >/dev/null 2>&1 &
sleep 0.5; taskset -c 0 python3 $HERE/held.py $1 $2; wait
taskset -c 0 perf script -i $P/trace.data -F comm,tid,time,event,trace 2>/dev/null | awk '{$1=$1; print}' > $P/trace.txt
echo "$(wc -l < $P/trace.txt) lines in $P/trace.txt"
