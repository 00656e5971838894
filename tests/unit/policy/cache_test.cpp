#include "policy/cache.hpp"

#include <gtest/gtest.h>

#include <cstring>

namespace sluice::policy {
namespace {

using namespace std::chrono_literals;

rapidjson::Document parse(const char* json) {
  rapidjson::Document d;
  d.Parse(json, std::strlen(json));
  EXPECT_FALSE(d.HasParseError()) << json;
  return d;
}

std::string key_of(const char* json, std::string_view scope = "alice", std::string_view model = "m") {
  auto d = parse(json);
  return cache_key("chat/completions", scope, d, model);
}

TEST(CacheKey, CanonicalFormSortsMembersAndNormalisesNumbers) {
  auto d = parse(R"({ "temperature": 0.0, "model":"alias", "messages":[{"role":"user","content":"hi"}], "max_tokens": 1e1 })");
  EXPECT_EQ(canonical_request(d, "public"),
            R"({"max_tokens":10,"messages":[{"content":"hi","role":"user"}],"model":"public","temperature":0})");
}

TEST(CacheKey, StableAcrossOrderWhitespaceAndNumberSpelling) {
  auto a = key_of(R"({"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0,"seed":7})");
  auto b = key_of(R"({ "seed" : 7.0 , "temperature":0e0,
                      "messages" : [ { "content" : "hi", "role" : "user" } ], "model" : "m" })");
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.size(), 64u);
}

TEST(CacheKey, StreamStreamOptionsAndUserDoNotMatter) {
  auto plain = key_of(R"({"model":"m","messages":[{"role":"user","content":"hi"}]})");
  EXPECT_EQ(plain, key_of(R"({"model":"m","stream":true,"stream_options":{"include_usage":true},"user":"u1",)"
                          R"("messages":[{"role":"user","content":"hi"}]})"));
}

TEST(CacheKey, EverythingThatChangesTheAnswerDoes) {
  auto base = key_of(R"({"model":"m","messages":[{"role":"user","content":"hi"}]})");
  EXPECT_NE(base, key_of(R"({"model":"m","messages":[{"role":"user","content":"hi!"}]})"));
  EXPECT_NE(base, key_of(R"({"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5})"));
  EXPECT_NE(base, key_of(R"({"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[]})"));
  EXPECT_NE(base, key_of(R"({"model":"m","messages":[{"role":"user","content":"hi"}]})", "bob"));   // scope
  EXPECT_NE(base, key_of(R"({"model":"m","messages":[{"role":"user","content":"hi"}]})", "alice", "other"));
  // Numbers that are really different stay different.
  EXPECT_NE(key_of(R"({"model":"m","messages":[],"top_p":0.1})"), key_of(R"({"model":"m","messages":[],"top_p":0.10000001})"));
  // A user field nested below the top level is content, not the OpenAI `user` field.
  EXPECT_NE(key_of(R"({"model":"m","messages":[],"metadata":{"user":"a"}})"),
            key_of(R"({"model":"m","messages":[],"metadata":{"user":"b"}})"));
}

TEST(CacheKey, AliasesShareAnEntry) {
  auto a = parse(R"({"model":"gpt-oss","messages":[]})");
  auto b = parse(R"({"model":"openai/gpt-oss-120b","messages":[]})");
  EXPECT_EQ(cache_key("chat/completions", "", a, "openai/gpt-oss-120b"),
            cache_key("chat/completions", "", b, "openai/gpt-oss-120b"));
}

TEST(CacheKey, Deterministic) {
  EXPECT_TRUE(deterministic_request(parse(R"({"temperature":0})")));
  EXPECT_TRUE(deterministic_request(parse(R"({"temperature":0.0})")));
  EXPECT_TRUE(deterministic_request(parse(R"({"seed":1,"temperature":1})")));
  EXPECT_FALSE(deterministic_request(parse(R"({"temperature":0.2})")));
  EXPECT_FALSE(deterministic_request(parse(R"({})")));
  EXPECT_FALSE(deterministic_request(parse(R"({"seed":"x"})")));
}

CachedAnswer answer(std::size_t size, CacheClock::time_point now, std::chrono::seconds ttl = 60s) {
  CachedAnswer a;
  a.completion = std::string(size, 'x');
  a.stored = now;
  a.expires = now + ttl;
  return a;
}

TEST(MemoryCache, GetPutAndTtl) {
  MemoryCache c(1 << 20, 1);
  auto t0 = CacheClock::time_point{} + 1000s;
  EXPECT_FALSE(c.get("k", t0));
  c.put("k", answer(100, t0, 10s));
  ASSERT_TRUE(c.get("k", t0 + 9s));
  EXPECT_EQ(c.get("k", t0 + 9s)->completion.size(), 100u);
  EXPECT_FALSE(c.get("k", t0 + 10s));  // expired, and dropped
  EXPECT_EQ(c.entries(), 0u);
  EXPECT_EQ(c.bytes(), 0u);
}

TEST(MemoryCache, EvictsLeastRecentlyUsedByBytes) {
  auto t0 = CacheClock::time_point{} + 1000s;
  MemoryCache c(4000, 1);  // room for three answers of ~1000 bytes, not four
  EXPECT_EQ(c.put("a", answer(1000, t0)), 0u);
  EXPECT_EQ(c.put("b", answer(1000, t0)), 0u);
  EXPECT_EQ(c.put("c", answer(1000, t0)), 0u);
  ASSERT_TRUE(c.get("a", t0));                 // a is now the most recently used
  EXPECT_EQ(c.put("d", answer(1000, t0)), 1u);  // b goes
  EXPECT_TRUE(c.get("a", t0));
  EXPECT_FALSE(c.get("b", t0));
  EXPECT_TRUE(c.get("c", t0));
  EXPECT_TRUE(c.get("d", t0));
  EXPECT_LE(c.bytes(), 4000u);
  EXPECT_EQ(c.put("huge", answer(5000, t0)), 0u);  // larger than the budget: not stored, nothing evicted
  EXPECT_FALSE(c.get("huge", t0));
  EXPECT_EQ(c.entries(), 3u);
}

TEST(MemoryCache, ReplacingAnEntryKeepsTheByteCountRight) {
  auto t0 = CacheClock::time_point{} + 1000s;
  MemoryCache c(1 << 20, 4);
  c.put("k", answer(1000, t0));
  auto one = c.bytes();
  c.put("k", answer(1000, t0));
  EXPECT_EQ(c.bytes(), one);
  c.put("k", answer(10, t0));
  EXPECT_LT(c.bytes(), one);
  EXPECT_EQ(c.entries(), 1u);
}

TEST(SharedEntry, RoundTripKeepsTheAnswerTokensAndAge) {
  auto now = CacheClock::time_point{} + 5000s;
  CachedAnswer a;
  a.completion = "{\"choices\":[]}\nwith a newline";
  a.prompt_tokens = 7;
  a.completion_tokens = 3;
  auto text = encode_shared(a, 1'764'000'000'000);
  auto back = decode_shared(text, now, 1'764'000'012'500);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->completion, a.completion);
  EXPECT_EQ(back->prompt_tokens, 7u);
  EXPECT_EQ(back->completion_tokens, 3u);
  EXPECT_EQ(std::chrono::duration_cast<std::chrono::milliseconds>(now - back->stored).count(), 12'500);
  EXPECT_FALSE(decode_shared("garbage", now, 0));
  EXPECT_FALSE(decode_shared("1 2\n{}", now, 0));
}

TEST(CompleteAnswer, OnlyFinishedSuccessfulAnswers) {
  EXPECT_TRUE(complete_answer(R"({"choices":[{"index":0,"message":{"content":"x"},"finish_reason":"stop"}]})"));
  EXPECT_TRUE(complete_answer(R"({"choices":[{"finish_reason":"length"},{"finish_reason":"stop"}]})"));
  EXPECT_FALSE(complete_answer(R"({"choices":[{"finish_reason":"stop"},{"finish_reason":null}]})"));
  EXPECT_FALSE(complete_answer(R"({"choices":[]})"));
  EXPECT_FALSE(complete_answer(R"({"error":{"message":"x"},"choices":[{"finish_reason":"stop"}]})"));
  EXPECT_FALSE(complete_answer("not json"));
}

// A backend's answer is checked before it is cached: a few MB of brackets overflowed the stack of the
// (recursive) default parser.
TEST(CompleteAnswer, HostileNestingIsNotACrash) {
  const std::string deep = std::string(1'000'000, '[') + std::string(1'000'000, ']');
  EXPECT_TRUE(complete_answer(R"({"choices":[{"finish_reason":"stop","message":{"content":"x","x":)" + deep +
                              "}}]}"));
}

}  // namespace
}  // namespace sluice::policy
