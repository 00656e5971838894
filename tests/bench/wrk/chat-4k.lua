-- wrk -t1 -c64 -d5s -s tests/bench/wrk/chat-4k.lua http://127.0.0.1:PORT/v1/chat/completions  (chat.lua with a 4 KiB prompt)
local words = "The quick brown fox jumps over the lazy dog; the gateway reads every prompt. "
local prompt = string.rep(words, math.ceil(4096 / #words)):sub(1, 4096)
wrk.method = "POST"
wrk.body = '{"model":"bench","messages":[{"role":"user","content":"' .. prompt .. '"}],"max_tokens":16}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
