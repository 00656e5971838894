-- wrk -t1 -c64 -d5s -s tests/bench/wrk/chat-stream-close.lua http://127.0.0.1:PORT/v1/chat/completions
-- (4-token streams, each connection closed after its stream: what a new client connection and a stream's setup
-- cost, as row 4's ramp opens them)
wrk.method = "POST"
wrk.body = '{"model":"bench","messages":[{"role":"user","content":"Say hello to the benchmark."}],"max_tokens":4,"stream":true}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
wrk.headers["Connection"] = "close"
