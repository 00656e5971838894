// The response cache through the real gateway: a repeat is answered without touching the backend, as JSON
// or as a replayed SSE stream whichever the client asks for; cache-control, scopes, and what is never kept.
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <atomic>

#include "harness.hpp"
#include "policy/keyring.hpp"

namespace sluice::test {
namespace {

const std::string kCompletion =
    R"({"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,)"
    R"("message":{"role":"assistant","content":"Paris.","reasoning_content":"The capital of France.",)"
    R"("tool_calls":[{"id":"call_1","type":"function","function":{"name":"lookup","arguments":"{\"q\":\"x\"}"}}]},)"
    R"("finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}})";

std::string chunk(const std::string& delta, const std::string& finish = "null") {
  return R"(data: {"id":"chatcmpl-2","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":)" +
         delta + R"(,"finish_reason":)" + finish + "}]}\n\n";
}

/// A backend that counts the requests it gets: JSON or SSE as asked, or a fault named in the prompt.
struct Backend {
  std::atomic<int> hits{0};
  ScriptedUpstream upstream{[this](UpstreamConn& c) {
    for (;;) {
      auto req = c.read_request();
      if (req.empty()) return;
      ++hits;
      auto body = body_of(req);
      if (body.find("FAIL") != std::string::npos) {
        std::string e = R"({"error":{"message":"boom"}})";
        c.write("HTTP/1.1 500 X\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(e.size()) +
                "\r\n\r\n" + e);
        continue;
      }
      if (body.find("\"stream\":true") == std::string::npos) {
        c.write("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                std::to_string(kCompletion.size()) + "\r\n\r\n" + kCompletion);
        continue;
      }
      c.write_sse_header();
      c.write_chunk(chunk(R"({"role":"assistant","content":""})"));
      c.write_chunk(chunk(R"({"reasoning_content":"Streamed thought."})"));
      c.write_chunk(chunk(R"({"content":"Lyon"})"));
      c.write_chunk(chunk(R"({"content":" too."})"));
      if (body.find("CUT") != std::string::npos) return;  // the connection dies mid-answer
      c.write_chunk(chunk(R"({"tool_calls":[{"index":0,"id":"call_9","type":"function","function":{"name":"f","arguments":"{}"}}]})"));
      c.write_chunk(chunk("{}", R"("stop")"));
      if (body.find("include_usage") != std::string::npos)
        c.write_chunk(R"(data: {"id":"chatcmpl-2","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":4,"total_tokens":9}})"
                      "\n\n");
      c.write_chunk("data: [DONE]\n\n");
      c.write("0\r\n\r\n");
    }
  }};
};

std::string config(const Backend& b, const std::string& model_cache = "enabled: true",
                   const std::string& extra = "") {
  return "server: { listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0, workers: 2 }\n"
         "log: { level: warn, format: text, access_log: false }\n"
         "backends:\n  - { name: up, url: \"" + b.upstream.url() + "\", health: { enabled: false } }\n"
         "models:\n  - { name: m, targets: [ { backend: up } ], cache: { " + model_cache + " } }\n"
         "keys:\n"
         "  - { name: a, key_sha256: \"" + policy::sha256_hex("sk-a") + "\" }\n"
         "  - { name: b, key_sha256: \"" + policy::sha256_hex("sk-b") + "\" }\n" + extra;
}

std::string ask(const std::string& text, const std::string& extra = "") {
  return R"({"model":"m","temperature":0,"messages":[{"role":"user","content":")" + text + "\"}]" + extra + "}";
}

std::string metrics(const TestGateway& gw) {
  return HttpClient(gw.admin_port()).request("GET", "/metrics").body;
}

rapidjson::Document json(const std::string& s) {
  rapidjson::Document d;
  d.Parse(s.data(), s.size());
  return d;
}

}  // namespace

TEST(Cache, RepeatIsAnsweredWithoutTheBackendAsJsonAndAsAValidStream) {
  Backend up;
  TestGateway gw(config(up));
  auto first = post_json(gw.port(), "/v1/chat/completions", ask("capital?"), "sk-a");
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(first.header("x-sluice-cache"), "miss");
  ASSERT_EQ(up.hits.load(), 1);

  auto again = post_json(gw.port(), "/v1/chat/completions", ask("capital?"), "sk-a");
  ASSERT_EQ(again.status, 200);
  EXPECT_EQ(again.header("x-sluice-cache"), "hit");
  EXPECT_FALSE(again.header("age").empty());
  EXPECT_EQ(again.body, kCompletion);
  EXPECT_EQ(up.hits.load(), 1);

  // The same question asked as a stream: replayed as SSE the OpenAI client format accepts.
  auto streamed = post_json(gw.port(), "/v1/chat/completions",
                            ask("capital?", R"(,"stream":true,"stream_options":{"include_usage":true})"), "sk-a");
  ASSERT_EQ(streamed.status, 200);
  EXPECT_EQ(up.hits.load(), 1);
  EXPECT_EQ(streamed.header("x-sluice-cache"), "hit");
  EXPECT_NE(streamed.header("content-type").find("text/event-stream"), std::string::npos);
  auto events = sse_data(streamed.body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::string content, reasoning, tool;
  bool finished = false, usage = false, role = false;
  for (std::size_t i = 0; i + 1 < events.size(); ++i) {
    auto d = json(events[i]);
    ASSERT_TRUE(d.IsObject()) << events[i];
    EXPECT_STREQ(d["object"].GetString(), "chat.completion.chunk");
    if (d.HasMember("usage") && d["usage"].IsObject()) usage = d["usage"]["completion_tokens"].GetInt() == 3;
    if (!d["choices"].IsArray() || d["choices"].Empty()) continue;
    const auto& c = d["choices"][0];
    const auto& delta = c["delta"];
    if (delta.HasMember("role")) role = true;
    if (delta.HasMember("content") && delta["content"].IsString()) content += delta["content"].GetString();
    if (delta.HasMember("reasoning_content")) reasoning += delta["reasoning_content"].GetString();
    if (delta.HasMember("tool_calls")) tool = delta["tool_calls"][0]["function"]["name"].GetString();
    if (c.HasMember("finish_reason") && c["finish_reason"].IsString()) finished = true;
  }
  EXPECT_TRUE(role);
  EXPECT_EQ(content, "Paris.");
  EXPECT_EQ(reasoning, "The capital of France.");
  EXPECT_EQ(tool, "lookup");
  EXPECT_TRUE(finished);
  EXPECT_TRUE(usage);

  auto m = metrics(gw);
  EXPECT_NE(m.find(R"(sluice_cache_lookups_total{result="hit"} 2)"), std::string::npos) << m;
  EXPECT_NE(m.find(R"(sluice_cache_lookups_total{result="miss"} 1)"), std::string::npos) << m;
  EXPECT_NE(m.find(R"(sluice_tokens_total{backend="cache",key="a",model="m",type="output"} 6)"), std::string::npos)
      << m;
  EXPECT_EQ(m.find("\nsluice_cache_bytes 0\n"), std::string::npos) << m;
}

TEST(Cache, StreamedAnswerIsKeptAndServedAsJsonWithReasoningAndToolCalls) {
  Backend up;
  TestGateway gw(config(up));
  auto first = post_json(gw.port(), "/v1/chat/completions", ask("city?", R"(,"stream":true)"), "sk-a");
  ASSERT_EQ(first.status, 200);
  EXPECT_EQ(first.header("x-sluice-cache"), "miss");
  auto hit = post_json(gw.port(), "/v1/chat/completions", ask("city?"), "sk-a");
  ASSERT_EQ(hit.status, 200) << hit.body;
  EXPECT_EQ(hit.header("x-sluice-cache"), "hit");
  EXPECT_EQ(up.hits.load(), 1);
  auto d = json(hit.body);
  ASSERT_TRUE(d.IsObject()) << hit.body;
  EXPECT_STREQ(d["object"].GetString(), "chat.completion");
  const auto& msg = d["choices"][0]["message"];
  EXPECT_STREQ(msg["content"].GetString(), "Lyon too.");
  EXPECT_STREQ(msg["reasoning_content"].GetString(), "Streamed thought.");
  EXPECT_STREQ(msg["tool_calls"][0]["function"]["name"].GetString(), "f");
  EXPECT_STREQ(d["choices"][0]["finish_reason"].GetString(), "stop");
}

TEST(Cache, CacheControlNoCacheAndNoStoreAreObeyed) {
  Backend up;
  TestGateway gw(config(up));
  auto r = post_json(gw.port(), "/v1/chat/completions", ask("q1"), "sk-a", {{"Cache-Control", "no-store"}});
  EXPECT_EQ(r.header("x-sluice-cache"), "miss");
  EXPECT_EQ(post_json(gw.port(), "/v1/chat/completions", ask("q1"), "sk-a").header("x-sluice-cache"), "miss");
  EXPECT_EQ(up.hits.load(), 2);  // the no-store answer was not kept
  // no-cache: the backend is asked even though an answer is kept, and the fresh one replaces it.
  r = post_json(gw.port(), "/v1/chat/completions", ask("q1"), "sk-a", {{"Cache-Control", "max-age=0, No-Cache"}});
  EXPECT_EQ(r.header("x-sluice-cache"), "bypass");
  EXPECT_EQ(up.hits.load(), 3);
  EXPECT_EQ(post_json(gw.port(), "/v1/chat/completions", ask("q1"), "sk-a").header("x-sluice-cache"), "hit");
  EXPECT_EQ(up.hits.load(), 3);
}

TEST(Cache, AnswersAreScopedToTheKeyUnlessShared) {
  Backend up;
  TestGateway gw(config(up));
  ASSERT_EQ(post_json(gw.port(), "/v1/chat/completions", ask("mine"), "sk-a").status, 200);
  EXPECT_EQ(post_json(gw.port(), "/v1/chat/completions", ask("mine"), "sk-b").header("x-sluice-cache"), "miss");
  EXPECT_EQ(up.hits.load(), 2);

  Backend shared_up;
  TestGateway shared(config(shared_up, "enabled: true", "cache: { scope: shared }\n"));
  ASSERT_EQ(post_json(shared.port(), "/v1/chat/completions", ask("ours"), "sk-a").status, 200);
  EXPECT_EQ(post_json(shared.port(), "/v1/chat/completions", ask("ours"), "sk-b").header("x-sluice-cache"), "hit");
  EXPECT_EQ(shared_up.hits.load(), 1);
}

TEST(Cache, OnlyDeterministicRequestsByDefault) {
  Backend up;
  TestGateway gw(config(up));
  std::string warm = R"({"model":"m","temperature":0.7,"messages":[{"role":"user","content":"poem"}]})";
  EXPECT_EQ(post_json(gw.port(), "/v1/chat/completions", warm, "sk-a").header("x-sluice-cache"), "bypass");
  EXPECT_EQ(post_json(gw.port(), "/v1/chat/completions", warm, "sk-a").header("x-sluice-cache"), "bypass");
  EXPECT_EQ(up.hits.load(), 2);
  std::string seeded = R"({"model":"m","temperature":0.7,"seed":42,"messages":[{"role":"user","content":"poem"}]})";
  post_json(gw.port(), "/v1/chat/completions", seeded, "sk-a");
  EXPECT_EQ(post_json(gw.port(), "/v1/chat/completions", seeded, "sk-a").header("x-sluice-cache"), "hit");

  Backend all_up;
  TestGateway all(config(all_up, "enabled: true, only_deterministic: false, ttl: 1m"));
  post_json(all.port(), "/v1/chat/completions", warm, "sk-a");
  EXPECT_EQ(post_json(all.port(), "/v1/chat/completions", warm, "sk-a").header("x-sluice-cache"), "hit");
  EXPECT_EQ(all_up.hits.load(), 1);
}

TEST(Cache, FailedOrCutAnswersAreNeverKept) {
  Backend up;
  TestGateway gw(config(up));
  EXPECT_EQ(post_json(gw.port(), "/v1/chat/completions", ask("FAIL"), "sk-a").status, 502);
  EXPECT_EQ(post_json(gw.port(), "/v1/chat/completions", ask("FAIL"), "sk-a").status, 502);
  EXPECT_EQ(up.hits.load(), 2);
  // A stream whose backend dies mid-answer ends with an error event; nothing is kept.
  auto cut = post_json(gw.port(), "/v1/chat/completions", ask("CUT", R"(,"stream":true)"), "sk-a");
  EXPECT_NE(cut.body.find("\"error\""), std::string::npos) << cut.body;
  EXPECT_EQ(post_json(gw.port(), "/v1/chat/completions", ask("CUT", R"(,"stream":true)"), "sk-a")
                .header("x-sluice-cache"),
            "miss");
  EXPECT_EQ(up.hits.load(), 4);
}

TEST(Cache, ModelsWithoutCacheSayNothing) {
  Backend up;
  TestGateway gw(config(up, "enabled: false"));
  auto r = post_json(gw.port(), "/v1/chat/completions", ask("x"), "sk-a");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("x-sluice-cache"), "");
  post_json(gw.port(), "/v1/chat/completions", ask("x"), "sk-a");
  EXPECT_EQ(up.hits.load(), 2);
}

TEST(CacheRedis, TwoReplicasShareHitsAndAnOutageIsAMiss) {
  RedisServer redis;
  Backend up;
  auto yaml = config(up, "enabled: true", "store: redis\nredis: { url: \"" + redis.url() + "\", timeout: 300ms }\n");
  TestGateway a(yaml), b(yaml);
  auto redis_up = [](const TestGateway& gw) { return metrics(gw).find("\nsluice_redis_up 1") != std::string::npos; };
  ASSERT_TRUE(wait_until([&] { return redis_up(a) && redis_up(b); }, 20s));
  auto first = post_json(a.port(), "/v1/chat/completions", ask("shared?"), "sk-a");
  ASSERT_EQ(first.status, 200);
  EXPECT_EQ(first.header("x-sluice-cache"), "miss");
  // The answer is kept in Redis off the request's path: the other replica sees it shortly.
  // (Asked whole while waiting: a miss on b keeps b's own answer, which must be the same one.)
  ASSERT_TRUE(wait_until([&] {
    return post_json(b.port(), "/v1/chat/completions", ask("shared?"), "sk-a").header("x-sluice-cache") == "hit";
  }));
  auto hit = post_json(b.port(), "/v1/chat/completions", ask("shared?", R"(,"stream":true)"), "sk-a");
  EXPECT_EQ(hit.header("x-sluice-cache"), "hit");
  EXPECT_EQ(sse_data(hit.body).back(), "[DONE]");
  EXPECT_NE(hit.body.find("Paris."), std::string::npos) << hit.body;
  int before = up.hits.load();
  EXPECT_LE(before, 3);  // the first, and any repeats that raced the store
  // Redis gone: lookups are misses and answers still come, from the backend.
  redis.stop();
  auto during = post_json(b.port(), "/v1/chat/completions", ask("shared?"), "sk-a");
  EXPECT_EQ(during.status, 200);
  EXPECT_EQ(during.header("x-sluice-cache"), "miss");
  EXPECT_EQ(up.hits.load(), before + 1);
}

}  // namespace sluice::test
