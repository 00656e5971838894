-- wrk -t1 -c64 -d5s -s tests/bench/wrk/chat.lua http://127.0.0.1:PORT/v1/chat/completions  (model "bench", key sk-bench: see proxy_bench's config)
wrk.method = "POST"
wrk.body = '{"model":"bench","messages":[{"role":"user","content":"Say hello to the benchmark."}],"max_tokens":16}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
