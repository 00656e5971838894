-- wrk -t1 -c64 -d5s -s tests/bench/wrk/chat-slow.lua http://127.0.0.1:PORT/v1/chat/completions
-- (20-token streams from the mock's slow port: one event per read, 50 ms apart, as in row 4)
wrk.method = "POST"
wrk.body = '{"model":"bench-slow","messages":[{"role":"user","content":"Say hello to the benchmark."}],"max_tokens":20,"stream":true}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
