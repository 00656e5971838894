-- wrk -t1 -c64 -d5s -s tests/bench/wrk/chat-close.lua http://127.0.0.1:PORT/v1/chat/completions  (chat.lua, each connection closed after its response)
wrk.method = "POST"
wrk.body = '{"model":"bench","messages":[{"role":"user","content":"Say hello to the benchmark."}],"max_tokens":16}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
wrk.headers["Connection"] = "close"
