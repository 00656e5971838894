#include "openai/usage.hpp"

#include <gtest/gtest.h>

namespace sluice::openai {
namespace {

TEST(UsageFromJsonTest, OpenAiCompletionBody) {
  auto u = usage_from_json(
      R"({"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],)"
      R"("usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46}})");
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->prompt_tokens, 12u);
  EXPECT_EQ(u->completion_tokens, 34u);
}

TEST(UsageFromJsonTest, FinalStreamChunkWithUsage) {
  auto u = usage_from_json(
      R"({"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}})");
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->prompt_tokens, 9u);
  EXPECT_EQ(u->completion_tokens, 3u);
}

TEST(UsageFromJsonTest, EmbeddingsUsageHasNoCompletionTokens) {
  auto u = usage_from_json(R"({"object":"list","data":[],"usage":{"prompt_tokens":8,"total_tokens":8}})");
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->prompt_tokens, 8u);
  EXPECT_EQ(u->completion_tokens, 0u);
}

TEST(UsageFromJsonTest, NullUsageIsNone) {
  EXPECT_EQ(
      usage_from_json(
          R"({"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"a"}}],"usage":null})"),
      std::nullopt);
}

TEST(UsageFromJsonTest, ChunkWithoutUsageIsNone) {
  EXPECT_EQ(
      usage_from_json(
          R"({"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]})"),
      std::nullopt);
  // The word inside content is not a usage member.
  EXPECT_EQ(usage_from_json(R"({"choices":[{"delta":{"content":"\"usage\": {\"prompt_tokens\": 5}"}}]})"),
            std::nullopt);
  EXPECT_EQ(usage_from_json("[DONE]"), std::nullopt);
  EXPECT_EQ(usage_from_json(""), std::nullopt);
}

TEST(UsageFromJsonTest, QubridMetrics) {
  auto u = usage_from_json(
      R"({"content":"Hello there","metrics":{"input_tokens":21,"output_tokens":7,"time_to_first_token":0.12}})");
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->prompt_tokens, 21u);
  EXPECT_EQ(u->completion_tokens, 7u);
}

TEST(UsageFromJsonTest, MetricsWithoutTokenCountsIsNone) {
  EXPECT_EQ(usage_from_json(R"({"content":"x","metrics":{"latency_ms":12}})"), std::nullopt);
}

TEST(UsageFromJsonTest, UsageWinsOverMetrics) {
  auto u = usage_from_json(
      R"({"usage":{"prompt_tokens":1,"completion_tokens":2},"metrics":{"input_tokens":100,"output_tokens":200}})");
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->prompt_tokens, 1u);
  EXPECT_EQ(u->completion_tokens, 2u);
}

TEST(UsageFromJsonTest, OddCountsBecomeZero) {
  auto u = usage_from_json(R"({"usage":{"prompt_tokens":-5,"completion_tokens":"7"}})");
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->prompt_tokens, 0u);
  EXPECT_EQ(u->completion_tokens, 0u);
}

TEST(UsageFromJsonTest, MalformedJsonIsNone) {
  EXPECT_EQ(usage_from_json(R"({"usage":{"prompt_tokens":12,"completion_tokens":)"), std::nullopt);
  EXPECT_EQ(usage_from_json(R"({"usage":{"prompt_tokens":12}} trailing)"), std::nullopt);
  EXPECT_EQ(usage_from_json(R"(["usage",{"prompt_tokens":1}])"), std::nullopt);
  EXPECT_EQ(usage_from_json(R"({"metrics":)"), std::nullopt);
}

}  // namespace
}  // namespace sluice::openai

namespace sluice::openai {
namespace {

TEST(MayCarryUsageTest, OnlyAUsageObjectOrQubridMetricsNeedAParse) {
  EXPECT_FALSE(may_carry_usage(R"({"choices":[{"delta":{"content":"x"}}],"usage":null})"));
  EXPECT_FALSE(may_carry_usage(R"({"choices":[{"delta":{"content":"x"}}]})"));
  EXPECT_FALSE(may_carry_usage(R"({"choices":[{"delta":{"content":"the word \"usage\" said"}}]})"));
  EXPECT_TRUE(may_carry_usage(R"({"choices":[],"usage":{"prompt_tokens":1}})"));
  EXPECT_TRUE(may_carry_usage(R"({"choices":[], "usage" : {"prompt_tokens":1}})"));
  EXPECT_TRUE(may_carry_usage(R"({"content":"x","metrics":{"input_tokens":1}})"));
  // Found by fuzzing (tests/fuzz/corpus/fuzz_dialect/usage_after_newline.json): pretty-printed JSON may put
  // the object on the next line.
  EXPECT_TRUE(may_carry_usage("{\"choices\":[],\"usage\":\n  {\"prompt_tokens\":1}}"));
  EXPECT_TRUE(may_carry_usage("{\"usage\"\r\n:\t{\"prompt_tokens\":1}}"));
  // The cheap test never hides a usage object from the real reader.
  EXPECT_EQ(usage_from_json(R"({"choices":[], "usage" : {"prompt_tokens":2,"completion_tokens":3}})")
                ->completion_tokens,
            3u);
}

}  // namespace
}  // namespace sluice::openai
