// Streams and whole answers, both ways: a completion replayed as SSE and joined again keeps its content,
// reasoning, tool calls, finish reason and usage; fragments are joined by index as they arrive.
#include "openai/stream_convert.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include "openai/sse_parser.hpp"

namespace sluice::openai {
namespace {

const std::string kCompletion =
    R"({"id":"chatcmpl-7","object":"chat.completion","created":5,"model":"m","choices":[{"index":0,)"
    R"("message":{"role":"assistant","content":"Paris.","reasoning_content":"The capital of France.",)"
    R"("tool_calls":[{"id":"call_1","type":"function","function":{"name":"lookup","arguments":"{\"q\":\"x\"}"}}]},)"
    R"("finish_reason":"tool_calls"}],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}})";

std::vector<std::string> payloads(const std::string& sse) {
  SseParser parser;
  std::vector<SseEvent> events;
  parser.feed(sse, events);
  std::vector<std::string> out;
  for (auto& e : events) out.push_back(std::string(e.data));
  return out;
}

TEST(StreamConvert, ACompletionReplayedAsAStreamAndJoinedAgainIsTheSameAnswer) {
  auto sse = stream_from_completion(Endpoint::chat_completions, kCompletion, true);
  ASSERT_TRUE(sse);
  auto events = payloads(*sse);
  ASSERT_GE(events.size(), 4u);
  EXPECT_EQ(events.back(), "[DONE]");
  auto joined = completion_from_stream(Endpoint::chat_completions, events);
  ASSERT_TRUE(joined);
  rapidjson::Document a, b;
  a.Parse(kCompletion.data(), kCompletion.size());
  b.Parse(joined->data(), joined->size());
  ASSERT_TRUE(b.IsObject()) << *joined;
  EXPECT_EQ(a, b) << *joined;  // every member, in any order
}

// Found by fuzzing (tests/fuzz/corpus/fuzz_dialect/two_tool_calls.json): a whole message's tool calls have
// no `index`, and replayed as they were, every call read as a fragment of the first.
TEST(StreamConvert, ReplayedToolCallsCarryTheirIndex) {
  const std::string completion =
      R"({"id":"c","object":"chat.completion","created":5,"model":"m","choices":[{"index":0,"message":)"
      R"({"role":"assistant","content":null,"tool_calls":[)"
      R"({"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},)"
      R"({"id":"call_2","type":"function","function":{"name":"get_time","arguments":"{}"}}]},)"
      R"("finish_reason":"tool_calls"}]})";
  auto sse = stream_from_completion(Endpoint::chat_completions, completion, false);
  ASSERT_TRUE(sse);
  auto events = payloads(*sse);
  rapidjson::Document first;
  first.Parse(events.at(0).data(), events.at(0).size());
  const auto& calls = first["choices"][0]["delta"]["tool_calls"];
  ASSERT_EQ(calls.Size(), 2u);
  EXPECT_EQ(calls[0]["index"].GetInt(), 0);
  EXPECT_EQ(calls[1]["index"].GetInt(), 1);
  EXPECT_STREQ(calls[1]["id"].GetString(), "call_2");

  auto joined = completion_from_stream(Endpoint::chat_completions, events);
  ASSERT_TRUE(joined);
  rapidjson::Document a, b;
  a.Parse(completion.data(), completion.size());
  b.Parse(joined->data(), joined->size());
  EXPECT_EQ(a, b) << *joined;
}

TEST(StreamConvert, WithoutIncludeUsageTheReplayCarriesNoUsageChunk) {
  auto sse = stream_from_completion(Endpoint::chat_completions, kCompletion, false);
  ASSERT_TRUE(sse);
  EXPECT_EQ(sse->find("\"usage\""), std::string::npos);
}

// Seen while writing the fuzz targets (small versions: tests/fuzz/corpus/fuzz_dialect/deep_*): both
// conversions parse without recursion but wrote the message and the usage out recursively, so a backend
// answer of a few MB of brackets overflowed the worker's stack and took the gateway down.
TEST(StreamConvert, HostileNestingIsRefusedNotRecursedInto) {
  const std::string deep = std::string(1'000'000, '[') + std::string(1'000'000, ']');
  const std::string completion =
      R"({"id":"c","object":"chat.completion","created":5,"model":"m","choices":[{"index":0,"message":)" +
      deep + R"(,"finish_reason":"stop"}],"usage":)" + deep + "}";
  EXPECT_FALSE(stream_from_completion(Endpoint::chat_completions, completion, true));

  StreamJoiner joiner(Endpoint::chat_completions);
  joiner.add(R"({"id":"c","choices":[{"index":0,"delta":{"content":"ok"}}]})");
  joiner.add(R"({"id":"c","choices":[],"usage":{"prompt_tokens":)" + deep + "}}");
  auto joined = joiner.result();
  ASSERT_TRUE(joined);
  rapidjson::Document d;
  d.Parse(joined->data(), joined->size());
  ASSERT_TRUE(d.IsObject()) << *joined;
  EXPECT_STREQ(d["choices"][0]["message"]["content"].GetString(), "ok");
  EXPECT_FALSE(d.HasMember("usage"));
}

// Found by fuzzing (tests/fuzz/corpus/fuzz_dialect/number_above_dbl_max*): RapidJSON 1.1 reads a number
// just above DBL_MAX as inf or NaN, which its Writer refuses: the replayed chunk or the joined answer
// was JSON cut short.
TEST(StreamConvert, NumbersBeyondDoubleRangeNeverCutTheOutputShort) {
  const std::string completion =
      R"({"id":"c","object":"chat.completion","created":5,"model":"m","choices":[{"index":0,"message":)"
      R"({"role":"assistant","content":"x","score":1.7976934348623157e308},"finish_reason":"stop"}]})";
  EXPECT_FALSE(stream_from_completion(Endpoint::chat_completions, completion, true));

  StreamJoiner joiner(Endpoint::chat_completions);
  joiner.add(R"({"id":"c","choices":[{"index":0,"delta":{"content":"ok"}}]})");
  joiner.add(R"({"id":"c","choices":[],"usage":{"prompt_tokens":1.7976934348623157e308}})");
  auto joined = joiner.result();
  ASSERT_TRUE(joined);
  rapidjson::Document d;
  d.Parse(joined->data(), joined->size());
  ASSERT_FALSE(d.HasParseError()) << *joined;
  EXPECT_STREQ(d["choices"][0]["message"]["content"].GetString(), "ok");
  EXPECT_FALSE(d.HasMember("usage"));
}

TEST(StreamJoiner, FragmentsAreJoinedByIndexAsTheyArrive) {
  std::vector<std::string> chunks = {
      R"({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]})",
      R"({"id":"c","choices":[{"index":0,"delta":{"reasoning":"Think"}}]})",
      R"({"id":"c","choices":[{"index":0,"delta":{"content":"Hel"}},{"index":1,"delta":{"content":"Bon"}}]})",
      R"({"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"t1","function":{"name":"f","arguments":"{\"a\":"}}]}}]})",
      R"({"id":"c","choices":[{"index":0,"delta":{"content":"lo","tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}}]})",
      "not json",
      R"({"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"},{"index":1,"delta":{"content":"jour"},"finish_reason":"length"}]})",
      R"({"id":"c","choices":[],"usage":{"prompt_tokens":2,"completion_tokens":5,"total_tokens":7}})",
      "[DONE]"};
  StreamJoiner joiner(Endpoint::chat_completions);
  EXPECT_FALSE(joiner.result());  // nothing yet
  for (const auto& c : chunks) joiner.add(c);
  auto joined = joiner.result();
  ASSERT_TRUE(joined);
  EXPECT_EQ(*joined, *completion_from_stream(Endpoint::chat_completions, chunks));
  rapidjson::Document d;
  d.Parse(joined->data(), joined->size());
  ASSERT_TRUE(d.IsObject()) << *joined;
  const auto& c0 = d["choices"][0];
  EXPECT_STREQ(c0["message"]["content"].GetString(), "Hello");
  EXPECT_STREQ(c0["message"]["reasoning_content"].GetString(), "Think");
  EXPECT_STREQ(c0["message"]["tool_calls"][0]["function"]["arguments"].GetString(), "{\"a\":1}");
  EXPECT_STREQ(c0["finish_reason"].GetString(), "stop");
  EXPECT_STREQ(d["choices"][1]["message"]["content"].GetString(), "Bonjour");
  EXPECT_STREQ(d["choices"][1]["finish_reason"].GetString(), "length");
  EXPECT_EQ(d["usage"]["total_tokens"].GetInt(), 7);
}

}  // namespace
}  // namespace sluice::openai
