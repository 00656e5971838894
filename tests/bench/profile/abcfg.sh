#!/bin/bash
# abcfg.sh LUA ROUNDS CFG...: alternating 5 s wrk runs of the main build under each config (ab.sh with configs)
exec "$(dirname "$0")/ab.sh" "$@"
