-- wrk -t1 -c64 -d5s -s tests/bench/wrk/chat-stream.lua http://127.0.0.1:PORT/v1/chat/completions  (64-token streams)
wrk.method = "POST"
wrk.body = '{"model":"bench","messages":[{"role":"user","content":"Say hello to the benchmark."}],"max_tokens":64,"stream":true}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
