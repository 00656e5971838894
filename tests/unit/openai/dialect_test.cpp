#include "openai/dialect.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <string>
#include <vector>
#include <string_view>

namespace sluice::openai {
namespace {

rapidjson::Document parse(const std::string& json) {
  rapidjson::Document d;
  d.Parse(json.data(), json.size());
  EXPECT_FALSE(d.HasParseError()) << json;
  EXPECT_TRUE(d.IsObject()) << json;
  return d;
}

// The parts of a chat.completion every client reads, checked once.
void expect_chat_completion(const rapidjson::Document& d) {
  ASSERT_TRUE(d.IsObject());
  ASSERT_TRUE(d.HasMember("id"));
  EXPECT_TRUE(d["id"].IsString());
  ASSERT_TRUE(d.HasMember("object"));
  EXPECT_STREQ(d["object"].GetString(), "chat.completion");
  ASSERT_TRUE(d.HasMember("created"));
  EXPECT_TRUE(d["created"].IsInt64());
  ASSERT_TRUE(d.HasMember("model"));
  EXPECT_TRUE(d["model"].IsString());
  ASSERT_TRUE(d.HasMember("choices"));
  ASSERT_TRUE(d["choices"].IsArray());
  ASSERT_EQ(d["choices"].Size(), 1u);
  const auto& c = d["choices"][0];
  EXPECT_EQ(c["index"].GetInt(), 0);
  ASSERT_TRUE(c["message"].IsObject());
  EXPECT_STREQ(c["message"]["role"].GetString(), "assistant");
  ASSERT_TRUE(c.HasMember("finish_reason"));
}

// --- normalize_completion --------------------------------------------------------------------------

TEST(NormalizeCompletionTest, OpenAiShapedBodyIsLeftAlone) {
  constexpr std::string_view body =
      R"({"id":"chatcmpl-1","object":"chat.completion","model":"m","choices":[{"index":0,)"
      R"("message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],)"
      R"("usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}})";
  EXPECT_EQ(normalize_completion(body, "m"), std::nullopt);
  // Even with a top-level "content" next to "choices".
  EXPECT_EQ(normalize_completion(R"({"content":"x","choices":[]})", "m"), std::nullopt);
}

TEST(NormalizeCompletionTest, QubridTopLevelShape) {
  constexpr std::string_view body =
      R"({"content":"Hello","metrics":{"input_tokens":5,"output_tokens":2,"total_time":0.3,"tps":6.6},)"
      R"("model":"openai/gpt-oss-120b"})";
  auto out = normalize_completion(body, "public-name");
  ASSERT_TRUE(out.has_value());
  auto d = parse(*out);
  expect_chat_completion(d);
  EXPECT_STREQ(d["model"].GetString(), "openai/gpt-oss-120b");  // the body's model, not the argument
  const auto& msg = d["choices"][0]["message"];
  EXPECT_STREQ(msg["content"].GetString(), "Hello");
  EXPECT_FALSE(msg.HasMember("reasoning_content"));
  EXPECT_STREQ(d["choices"][0]["finish_reason"].GetString(), "stop");
  ASSERT_TRUE(d.HasMember("usage"));
  EXPECT_EQ(d["usage"]["prompt_tokens"].GetUint64(), 5u);
  EXPECT_EQ(d["usage"]["completion_tokens"].GetUint64(), 2u);
  EXPECT_EQ(d["usage"]["total_tokens"].GetUint64(), 7u);
}

TEST(NormalizeCompletionTest, UsageWinsOverMetrics) {
  constexpr std::string_view body = R"({"content":"Hello","metrics":{"input_tokens":5,"output_tokens":2},)"
                                    R"("usage":{"prompt_tokens":9,"completion_tokens":4},"model":"q"})";
  auto out = normalize_completion(body, "q");
  ASSERT_TRUE(out.has_value());
  auto d = parse(*out);
  expect_chat_completion(d);
  EXPECT_EQ(d["usage"]["prompt_tokens"].GetUint64(), 9u);
  EXPECT_EQ(d["usage"]["completion_tokens"].GetUint64(), 4u);
  EXPECT_EQ(d["usage"]["total_tokens"].GetUint64(), 13u);
}

TEST(NormalizeCompletionTest, NoUsageMeansNoUsageMember) {
  auto out = normalize_completion(R"({"content":"Hi"})", "m");
  ASSERT_TRUE(out.has_value());
  auto d = parse(*out);
  expect_chat_completion(d);
  EXPECT_FALSE(d.HasMember("usage"));
}

TEST(NormalizeCompletionTest, MessageShapeWithReasoningContent) {
  auto out = normalize_completion(
      R"({"message":{"role":"assistant","content":"x","reasoning_content":"think"}})", "arg-model");
  ASSERT_TRUE(out.has_value());
  auto d = parse(*out);
  expect_chat_completion(d);
  const auto& msg = d["choices"][0]["message"];
  EXPECT_STREQ(msg["content"].GetString(), "x");
  ASSERT_TRUE(msg.HasMember("reasoning_content"));
  EXPECT_STREQ(msg["reasoning_content"].GetString(), "think");
  EXPECT_STREQ(d["model"].GetString(), "arg-model");  // the body names none
}

TEST(NormalizeCompletionTest, ReasoningFieldIsCarriedAsReasoningContent) {
  for (std::string_view body : {R"({"message":{"role":"assistant","content":"x","reasoning":"hmm"}})",
                                R"({"content":"x","reasoning":"hmm"})"}) {
    auto out = normalize_completion(body, "m");
    ASSERT_TRUE(out.has_value()) << body;
    auto d = parse(*out);
    expect_chat_completion(d);
    const auto& msg = d["choices"][0]["message"];
    EXPECT_STREQ(msg["content"].GetString(), "x") << body;
    ASSERT_TRUE(msg.HasMember("reasoning_content")) << body;
    EXPECT_STREQ(msg["reasoning_content"].GetString(), "hmm") << body;
    EXPECT_FALSE(msg.HasMember("reasoning")) << body;
  }
}

TEST(NormalizeCompletionTest, ModelFallsBackToTheArgument) {
  auto out = normalize_completion(R"({"content":"Hello","metrics":{"input_tokens":1,"output_tokens":1}})",
                                  "meta-llama/Llama-3.1-8B-Instruct");
  ASSERT_TRUE(out.has_value());
  auto d = parse(*out);
  EXPECT_STREQ(d["model"].GetString(), "meta-llama/Llama-3.1-8B-Instruct");
}

TEST(NormalizeCompletionTest, ContentWithEscapesSurvives) {
  auto out = normalize_completion(R"({"content":"caf\u00e9 \"q\" \\ \n line"})", "m");
  ASSERT_TRUE(out.has_value());
  auto d = parse(*out);
  EXPECT_STREQ(d["choices"][0]["message"]["content"].GetString(), "caf\xC3\xA9 \"q\" \\ \n line");
}

TEST(NormalizeCompletionTest, NotJsonOrNoContentIsNullopt) {
  for (std::string_view body :
       {"", "not json", "{", R"({"content":"x")", "[\"content\"]", "\"content\"", R"({"model":"m"})",
        R"({"error":{"message":"boom"}})", R"({"metrics":{"input_tokens":5,"output_tokens":2}})",
        R"({"content":42})", R"({"content":["a"]})", R"({"message":{"role":"assistant"}})",
        R"({"message":{"role":"assistant","content":7}})"}) {
    EXPECT_EQ(normalize_completion(body, "m"), std::nullopt) << body;
  }
}

// --- read_telemetry --------------------------------------------------------------------------------

TEST(ReadTelemetryTest, QubridXMetrics) {
  auto t = read_telemetry(R"({"id":"c","choices":[],"x_metrics":{"ttft_seconds":0.38,"tps":42.1}})");
  ASSERT_TRUE(t.tokens_per_second.has_value());
  EXPECT_DOUBLE_EQ(*t.tokens_per_second, 42.1);
  ASSERT_TRUE(t.ttft_ms.has_value());
  EXPECT_NEAR(*t.ttft_ms, 380.0, 1e-9);
}

TEST(ReadTelemetryTest, QubridTopLevelMetrics) {
  auto t = read_telemetry(
      R"({"content":"Hello","metrics":{"input_tokens":5,"output_tokens":2,"total_time":0.3,"tps":6.6}})");
  ASSERT_TRUE(t.tokens_per_second.has_value());
  EXPECT_DOUBLE_EQ(*t.tokens_per_second, 6.6);
  EXPECT_EQ(t.ttft_ms, std::nullopt);
}

TEST(ReadTelemetryTest, VllmMetrics) {
  auto t =
      read_telemetry(R"({"choices":[],"metrics":{"tokens_per_second":55.5,"time_to_first_token_ms":120}})");
  ASSERT_TRUE(t.tokens_per_second.has_value());
  EXPECT_DOUBLE_EQ(*t.tokens_per_second, 55.5);
  ASSERT_TRUE(t.ttft_ms.has_value());
  EXPECT_DOUBLE_EQ(*t.ttft_ms, 120.0);
}

TEST(ReadTelemetryTest, LlamaCppTimings) {
  auto t = read_telemetry(
      R"({"choices":[],"timings":{"prompt_n":12,"prompt_ms":96.5,"predicted_n":40,"predicted_per_second":58.82}})");
  ASSERT_TRUE(t.tokens_per_second.has_value());
  EXPECT_DOUBLE_EQ(*t.tokens_per_second, 58.82);
  ASSERT_TRUE(t.ttft_ms.has_value());
  EXPECT_DOUBLE_EQ(*t.ttft_ms, 96.5);
}

TEST(ReadTelemetryTest, NothingToReadIsNullopt) {
  for (std::string_view body :
       {"", "not json", R"({"choices":[]})", R"({"usage":{"prompt_tokens":1,"completion_tokens":2}})",
        R"({"metrics":{"input_tokens":5}})", R"({"metrics":"fast"})",
        R"({"timings":{"predicted_per_second":"x"}})", R"({"metrics":{"tps":1.0})",
        R"([{"metrics":{"tps":1.0}}])"}) {
    auto t = read_telemetry(body);
    EXPECT_EQ(t.tokens_per_second, std::nullopt) << body;
    EXPECT_EQ(t.ttft_ms, std::nullopt) << body;
  }
}

// --- inspect_chunk ---------------------------------------------------------------------------------

TEST(InspectChunkTest, ContentDeltaIsGeneratedWithoutUsage) {
  auto i = inspect_chunk(R"({"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",)"
                         R"("choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]})");
  EXPECT_TRUE(i.generated);
  EXPECT_EQ(i.usage, std::nullopt);
  EXPECT_FALSE(i.usage_only);
  EXPECT_EQ(i.telemetry.tokens_per_second, std::nullopt);
  // Spaces around the colon.
  EXPECT_TRUE(inspect_chunk(R"({"choices":[{"delta":{"content" : "x"}}]})").generated);
}

// The cheap text tests take any JSON whitespace around the colon, as the usage test does (found by fuzzing:
// tests/fuzz/corpus/fuzz_dialect/usage_after_newline.json).
TEST(InspectChunkTest, PrettyPrintedChunksAreReadToo) {
  EXPECT_TRUE(inspect_chunk("{\"choices\":[{\"delta\":{\"content\":\n\t\"x\"}}]}").generated);
  EXPECT_TRUE(inspect_chunk("{\"choices\":[{\"finish_reason\"\r\n:\n \"stop\"}]}").finished);
  EXPECT_FALSE(inspect_chunk("{\"choices\":[{\"finish_reason\":\n null}]}").finished);
  EXPECT_EQ(inspect_chunk("{\"choices\":[],\"usage\":\n{\"prompt_tokens\":3}}")
                .usage.value_or(Usage{})
                .prompt_tokens,
            3u);
}

TEST(InspectChunkTest, EmptyOrNullContentIsNotGenerated) {
  EXPECT_FALSE(
      inspect_chunk(R"({"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]})").generated);
  EXPECT_FALSE(inspect_chunk(R"({"choices":[{"index":0,"delta":{"content":null}}]})").generated);
  EXPECT_FALSE(inspect_chunk(R"({"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})").generated);
  // The word "text" as a value is not a text field.
  EXPECT_FALSE(inspect_chunk(R"({"choices":[{"index":0,"delta":{"content":""},"type":"text"}]})").generated);
}

TEST(InspectChunkTest, ReasoningToolCallsAndCompletionTextAreGenerated) {
  EXPECT_TRUE(inspect_chunk(R"({"choices":[{"delta":{"reasoning_content":"let me think"}}]})").generated);
  EXPECT_TRUE(inspect_chunk(R"({"choices":[{"delta":{"reasoning":"hmm"}}]})").generated);
  EXPECT_TRUE(
      inspect_chunk(R"({"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function",)"
                    R"("function":{"name":"f","arguments":""}}]}}]})")
          .generated);
  EXPECT_TRUE(
      inspect_chunk(R"({"object":"text_completion","choices":[{"index":0,"text":" upon"}]})").generated);
  EXPECT_FALSE(inspect_chunk(R"({"object":"text_completion","choices":[{"index":0,"text":""}]})").generated);
  EXPECT_FALSE(inspect_chunk(R"({"choices":[{"delta":{"reasoning_content":""}}]})").generated);
}

TEST(InspectChunkTest, IncludeUsageChunkIsUsageOnly) {
  auto i = inspect_chunk(R"({"id":"c1","object":"chat.completion.chunk","choices":[],)"
                         R"("usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}})");
  ASSERT_TRUE(i.usage.has_value());
  EXPECT_EQ(i.usage->prompt_tokens, 11u);
  EXPECT_EQ(i.usage->completion_tokens, 7u);
  EXPECT_TRUE(i.usage_only);
  EXPECT_FALSE(i.generated);
}

TEST(InspectChunkTest, FinalChunkWithChoicesAndUsageIsNotUsageOnly) {
  auto i = inspect_chunk(R"({"choices":[{"index":0,"delta":{"content":"!"},"finish_reason":"stop"}],)"
                         R"("usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}})");
  ASSERT_TRUE(i.usage.has_value());
  EXPECT_EQ(i.usage->prompt_tokens, 3u);
  EXPECT_EQ(i.usage->completion_tokens, 4u);
  EXPECT_FALSE(i.usage_only);
  EXPECT_TRUE(i.generated);
}

TEST(InspectChunkTest, NullUsageIsNoUsage) {
  auto i = inspect_chunk(R"({"choices":[{"index":0,"delta":{"content":"a"}}],"usage":null})");
  EXPECT_EQ(i.usage, std::nullopt);
  EXPECT_FALSE(i.usage_only);
  EXPECT_TRUE(i.generated);
  auto e = inspect_chunk(R"({"choices":[],"usage":null})");
  EXPECT_EQ(e.usage, std::nullopt);
  EXPECT_FALSE(e.usage_only);
}

TEST(InspectChunkTest, LlamaCppFinalChunkCarriesTimings) {
  auto i = inspect_chunk(
      R"({"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"model":"m",)"
      R"("timings":{"prompt_n":5,"prompt_ms":12.5,"predicted_n":20,"predicted_ms":340.0,"predicted_per_second":58.82}})");
  ASSERT_TRUE(i.telemetry.tokens_per_second.has_value());
  EXPECT_DOUBLE_EQ(*i.telemetry.tokens_per_second, 58.82);
  ASSERT_TRUE(i.telemetry.ttft_ms.has_value());
  EXPECT_DOUBLE_EQ(*i.telemetry.ttft_ms, 12.5);
  EXPECT_EQ(i.usage, std::nullopt);
  EXPECT_FALSE(i.generated);
}

TEST(InspectChunkTest, QubridXMetricsOnAUsageChunk) {
  auto i = inspect_chunk(
      R"({"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":3},"x_metrics":{"ttft_seconds":0.5,"tps":10}})");
  ASSERT_TRUE(i.usage.has_value());
  EXPECT_TRUE(i.usage_only);
  ASSERT_TRUE(i.telemetry.tokens_per_second.has_value());
  EXPECT_DOUBLE_EQ(*i.telemetry.tokens_per_second, 10.0);
  ASSERT_TRUE(i.telemetry.ttft_ms.has_value());
  EXPECT_DOUBLE_EQ(*i.telemetry.ttft_ms, 500.0);
}

TEST(InspectChunkTest, MalformedChunkWithUsageIsNoUsage) {
  auto i = inspect_chunk(R"({"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1})");
  EXPECT_EQ(i.usage, std::nullopt);
  EXPECT_FALSE(i.usage_only);
}

// --- default_health_path ---------------------------------------------------------------------------

// --- inspect_stream_chunk: the relay's one-pass form -----------------------------------------------

TEST(InspectStreamChunkTest, TellsWhatInspectChunkTellsForEveryShapeAbove) {
  for (std::string_view chunk : {
           R"({"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]})",
           R"({"choices":[{"delta":{"content" : "x"}}]})",
           "{\"choices\":[{\"delta\":{\"content\":\n\t\"x\"}}]}",
           "{\"choices\":[{\"finish_reason\"\r\n:\n \"stop\"}]}",
           "{\"choices\":[{\"finish_reason\":\n null}]}",
           "{\"choices\":[],\"usage\":\n{\"prompt_tokens\":3}}",
           R"({"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]})",
           R"({"choices":[{"index":0,"delta":{"content":null}}]})",
           R"({"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})",
           R"({"choices":[{"index":0,"delta":{"content":""},"type":"text"}]})",
           R"({"choices":[{"delta":{"reasoning_content":"let me think"}}]})",
           R"({"choices":[{"delta":{"reasoning":"hmm"}}]})",
           R"({"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]}}]})",
           R"({"object":"text_completion","choices":[{"index":0,"text":" upon"}]})",
           R"({"object":"text_completion","choices":[{"index":0,"text":""}]})",
           R"({"id":"c1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}})",
           R"({"choices":[{"index":0,"delta":{"content":"!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":2,"completion_tokens":3}})",
           R"({"choices":[{"index":0,"delta":{"content":"a"}}],"usage":null})",
           R"({"choices":[],"usage":null})",
           R"({"content":"","stop":true,"timings":{"prompt_ms":12.5,"predicted_per_second":80.25}})",
           R"({"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4},"x_metrics":{"tps":55.5,"ttft_seconds":0.25}})",
           R"({"content":"hi","metrics":{"input_tokens":4,"output_tokens":6,"tps":12}})",
           R"({"choices":[{"delta":{"content":"caf\u00e9"}}]})",          // \u: RapidJSON decides
           R"({"choices":[{"delta":{"content":"x"}}],"n":1.5e3})",        // exponent: RapidJSON decides
           R"({"a":[1,-2,3.25,0,-0.5,true,false,null,{},[],"s\"\\\/\b\f\n\r\t"]})",
           // Usage counts read on the way must be what usage_from_doc reads, whatever the shape.
           R"({"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":16,"total_tokens":28,"prompt_tokens_details":null}})",
           R"({"choices":[],"usage":{}})",
           R"({"choices":[],"usage":{},"x":{"prompt_tokens":9}})",
           R"({"choices":[],"usage":{"completion_tokens":4}})",
           R"({"choices":[],"usage":{"prompt_tokens":"7","completion_tokens":null}})",
           R"({"choices":[],"usage":{"prompt_tokens":-3,"completion_tokens":2}})",
           R"({"choices":[],"usage":{"prompt_tokens":3.9,"completion_tokens":2.0}})",
           R"({"choices":[],"usage":{"prompt_tokens":0,"completion_tokens":123456789012345}})",
           R"({"choices":[],"usage":{"prompt_tokens":1,"prompt_tokens":2,"completion_tokens":3,"completion_tokens":4}})",
           R"({"choices":[],"usage":{"details":{"prompt_tokens":99},"prompt_tokens":5,"completion_tokens":6}})",
           R"({"usage":{"prompt_tokens":1,"completion_tokens":1},"usage":{"prompt_tokens":2,"completion_tokens":2},"choices":[]})",
           R"({"usage":null,"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":2}})",
           R"({"choices":[{"usage":{"prompt_tokens":8}}]})",
           R"({"choices":[ ],"usage":{"prompt_tokens":1,"completion_tokens":1}})",
           R"({"choices":[],"choices":[{}],"usage":{"prompt_tokens":1,"completion_tokens":1}})",
           R"({"choices":[{}],"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}})",
           R"({"choices":{},"usage":{"prompt_tokens":1,"completion_tokens":1}})",
       }) {
    auto slow = inspect_chunk(chunk);
    auto fast = inspect_stream_chunk(chunk);
    ASSERT_TRUE(fast) << chunk;
    EXPECT_EQ(fast->generated, slow.generated) << chunk;
    EXPECT_EQ(fast->finished, slow.finished) << chunk;
    EXPECT_EQ(fast->usage_only, slow.usage_only) << chunk;
    EXPECT_EQ(fast->usage.has_value(), slow.usage.has_value()) << chunk;
    if (fast->usage && slow.usage) {
      EXPECT_EQ(fast->usage->prompt_tokens, slow.usage->prompt_tokens) << chunk;
      EXPECT_EQ(fast->usage->completion_tokens, slow.usage->completion_tokens) << chunk;
    }
    EXPECT_EQ(fast->telemetry.tokens_per_second, slow.telemetry.tokens_per_second) << chunk;
    EXPECT_EQ(fast->telemetry.ttft_ms, slow.telemetry.ttft_ms) << chunk;
  }
}

TEST(InspectStreamChunkTest, RefusesExactlyWhatIsJsonObjectRefuses) {
  const std::string nested_ok = std::string(127, '[') + std::string(127, ']');
  const std::string too_deep = std::string(128, '[') + std::string(128, ']');
  for (std::string_view chunk : std::initializer_list<std::string_view>{
           "", " ", "null", "[]", "\"s\"", "1", "{", "}", "{}", " {} ", "{}\n", "{} {}", "{},", "{\"a\"}",
           "{\"a\":}", "{\"a\":1,}", "{,}", "{\"a\":1 \"b\":2}", "{'a':1}", "{\"a\":01}", "{\"a\":-}",
           "{\"a\":1.}", "{\"a\":.5}", "{\"a\":+1}", "{\"a\":-0}", "{\"a\":tru}", "{\"a\":truex}", "{\"a\":nul}",
           "{\"a\":NaN}", "{\"a\":Infinity}", "{\"a\":\"\\x\"}", "{\"a\":\"\\u12\"}", "{\"a\":\"\\ud800\"}",
           "{\"a\":\"\\ud800\\udc00\"}", "{\"a\":\"tab\there\"}", "{\"a\":1e999}", "{\"a\":1e5}",
           "{\"a\":12345678901234567890123}", "{\"a\":[1,2,]}", "{\"a\":[1 2]}", "{\"a\":{\"b\":[{}]}}",
           "{\"a\":]}", "{\"a\":[}", "{\"a\":\"\xff\xfe\"}", "{\"a\":1}\xef", "{\"a\":\"unterminated}",
           "{\"a\":1}\t\r\n ", "\xEF\xBB\xBF{}"}) {
    EXPECT_EQ(inspect_stream_chunk(chunk).has_value(), is_json_object(chunk)) << chunk;
  }
  const std::string with_nul("{\"a\":1}\0", 8), nul_inside("{\"a\":\"x\0y\"}", 11);
  EXPECT_FALSE(inspect_stream_chunk(with_nul));
  EXPECT_FALSE(inspect_stream_chunk(nul_inside));
  for (const std::string& inner : {nested_ok, too_deep}) {
    const std::string chunk = "{\"a\":" + inner + "}";
    EXPECT_EQ(inspect_stream_chunk(chunk).has_value(), is_json_object(chunk)) << inner.size();
  }
}

// The relay skips normalize_completion when the scan saw a top-level "choices": every answer it says that of
// is one normalize_completion leaves alone, and answers in the other shapes are still reshaped.
TEST(InspectStreamChunkTest, TopLevelChoicesMeansAnAnswerNormalizeLeavesAlone) {
  for (std::string_view openai_shaped : std::initializer_list<std::string_view>{
           R"({"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant",)"
           R"("content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}})",
           R"({"choices":[]})", R"( { "content" : "x" , "choices" : null } )", R"({"a":{"b":1},"choices":7})"}) {
    auto info = inspect_stream_chunk(openai_shaped);
    ASSERT_TRUE(info) << openai_shaped;
    EXPECT_TRUE(info->has_choices) << openai_shaped;
    EXPECT_EQ(normalize_completion(openai_shaped, "m"), std::nullopt) << openai_shaped;
  }
  // No "choices" member: the scan says so, and these are reshaped.
  for (std::string_view other : std::initializer_list<std::string_view>{
           R"({"content":"Hello","metrics":{"input_tokens":5,"output_tokens":2}})",
           R"({"message":{"role":"assistant","content":"hi"}})", R"({"content":"choices are made"})"}) {
    auto info = inspect_stream_chunk(other);
    ASSERT_TRUE(info) << other;
    EXPECT_FALSE(info->has_choices) << other;
    EXPECT_NE(normalize_completion(other, "m"), std::nullopt) << other;
  }
  // Nested only: not the top level's (normalize_completion then decides for itself).
  auto nested = inspect_stream_chunk(R"({"message":{"content":"hi","choices":[]}})");
  ASSERT_TRUE(nested);
  EXPECT_FALSE(nested->has_choices);
}

// The string scan reads 16 or 8 bytes at a time: a special byte at every offset of every length, near the end
// of the chunk and far from it, must still be seen.
TEST(InspectStreamChunkTest, SeesEverySpecialByteWhereverItFallsInAString) {
  for (std::size_t len = 0; len <= 40; ++len) {
    for (std::size_t at = 0; at <= len; ++at) {
      for (std::string_view special : {"\\\"", "\\n", "\\u0041", "\\", "\x01", "\x1f", "\t", "\"", "\x7f", "\xc3\xa9"}) {
        std::string text(len, 'a');
        text.insert(at, special);
        for (const std::string& chunk : {"{\"choices\":[{\"delta\":{\"content\":\"" + text + "\"}}]}",
                                         "{\"" + text + "\":1}", "{\"a\":\"" + text + "\"}"}) {
          auto fast = inspect_stream_chunk(chunk);
          ASSERT_EQ(fast.has_value(), is_json_object(chunk)) << chunk;
          if (fast && chunk.starts_with("{\"choices\"")) {
            EXPECT_EQ(fast->generated, inspect_chunk(chunk).generated) << chunk;
          }
        }
      }
    }
  }
}

// Whether each event is scanned whole or resumed from the previous one's envelope, a stream's checker must
// say exactly what inspect_stream_chunk says of every event on its own.
void expect_same_as_alone(StreamChunkChecker& check, std::string_view chunk) {
  auto alone = inspect_stream_chunk(chunk);
  auto streamed = check(chunk);
  ASSERT_EQ(streamed.has_value(), alone.has_value()) << chunk;
  if (!alone) return;
  EXPECT_EQ(streamed->generated, alone->generated) << chunk;
  EXPECT_EQ(streamed->finished, alone->finished) << chunk;
  EXPECT_EQ(streamed->usage_only, alone->usage_only) << chunk;
  ASSERT_EQ(streamed->usage.has_value(), alone->usage.has_value()) << chunk;
  if (alone->usage) {
    EXPECT_EQ(streamed->usage->prompt_tokens, alone->usage->prompt_tokens) << chunk;
    EXPECT_EQ(streamed->usage->completion_tokens, alone->usage->completion_tokens) << chunk;
  }
  EXPECT_EQ(streamed->telemetry.tokens_per_second, alone->telemetry.tokens_per_second) << chunk;
}

TEST(StreamChunkCheckerTest, ResumedEventsGetTheVerdictsOfWholeOnes) {
  const std::string head =
      R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":)";
  std::vector<std::string> events{
      head + R"("",)" + R"("role":"assistant"},"finish_reason":null}]})",
      head + R"(" Hello"},"finish_reason":null}]})",
      head + R"(" world"},"finish_reason":null}]})",
      head + R"(""},"finish_reason":null}]})",                     // empty text: not generated
      head + R"(null},"finish_reason":null}]})",                   // no text
      head + R"(" caf\u00e9"},"finish_reason":null}]})",           // \u after the envelope: RapidJSON decides
      head + R"(" x"},"finish_reason":"stop"}]})",                 // a finish after the text
      head + R"(" x"},"finish_reason":null}],"usage":{"prompt_tokens":3,"completion_tokens":4}})",
      head + R"(" x"},"finish_reason":null}]}  )",                 // trailing space
      head + R"(" x"},"finish_reason":null}]}x)",                  // garbage after the object
      head + R"(" x"},"finish_reason":null}])",                    // cut short
      head + R"(" x"})",                                           // cut shorter
      head + R"(")",                                               // the envelope and one byte of the text
      head,                                                        // the envelope alone
      head.substr(0, head.size() - 1),                             // less than the envelope
      head + R"(" x"},"finish_reason":null}]})",
      // The same bytes after the text as the last event: its verdict stands, but for the text's own part.
      head + R"(""},"finish_reason":null}]})",                     // empty: not generated this time
      head + R"(" \ud800"},"finish_reason":null}]})",              // a lone surrogate in the text: refused
      head + R"(" b"},"finish_reason":null}]})",
      head + R"(" b"},"finish_reason":null}]})",
      head + R"(" b\n"},"finish_reason":null}]})",
      head + R"(" b"},"finish_reason":null}]}])",                  // one byte more after the text
      head + R"(" b"},"finish_reason":null}])",                    // one byte less
      head + R"(" b"},"finish_reason":nul}]})",                    // as long, not the same
      head + R"( " c"},"finish_reason":null}]})",                  // space before the text: it starts later
      head + R"(
	"c"},"finish_reason":null}]})",
      head + R"( )",                                               // nothing but space after the envelope
      R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":9}})",
      head + R"(" again"},"finish_reason":null}]})",
      // A different envelope (another id) is scanned whole and becomes the one resumed from.
      R"({"id":"chatcmpl-2","choices":[{"index":0,"delta":{"content":"y"}}]})",
      R"({"id":"chatcmpl-2","choices":[{"index":0,"delta":{"content":"z"}}],"usage":{"prompt_tokens":1,"completion_tokens":2}})",
      R"({"id":"chatcmpl-2","choices":[{"index":0,"delta":{"content":"z"}}]],"x":1})",
      // The envelope's own state carries over: a \u in the id (unsure), usage before the text, nesting.
      R"({"id":"c\u0031","choices":[{"delta":{"content":"a"}}]})",
      R"({"id":"c\u0031","choices":[{"delta":{"content":"b"}}]})",
      R"({"id":"c\ud800","choices":[{"delta":{"content":"a"}}]})",  // a lone surrogate: RapidJSON refuses
      R"({"id":"c\ud800","choices":[{"delta":{"content":"b"}}]})",
      R"({"usage":{"prompt_tokens":5,"completion_tokens":6},"choices":[{"delta":{"content":"a"}}]})",
      R"({"usage":{"prompt_tokens":5,"completion_tokens":6},"choices":[{"delta":{"content":"b"}}]})",
      R"({"choices":[],"usage":{"prompt_tokens":5,"text":"t","completion_tokens":6}})",
      R"({"choices":[],"usage":{"prompt_tokens":5,"text":"u","completion_tokens":7}})",
      R"({"a":[[[[[[[[{"content":"x"}]]]]]]]]})",
      R"({"a":[[[[[[[[{"content":"y"}]]]]]]]]})",
      R"({"a":[[[[[[[{"content":"x"}]]]]]]]})",
      R"({"a":[[[[[[[{"content":"y"}]]]]]]]})",
      R"({"a":[[[[[[[{"content":"y"}]]]]]]]]})",
      R"({"a":[[[[[[[{"content":"y"}]]]]]]})",
  };
  StreamChunkChecker check;
  for (int round = 0; round < 2; ++round)
    for (const auto& e : events) expect_same_as_alone(check, e);
  // Every way of cutting the usual event short, after the envelope has been seen.
  const std::string whole = head + R"(" tok"},"logprobs":null,"finish_reason":null}]})";
  for (std::size_t n = 0; n <= whole.size(); ++n) {
    expect_same_as_alone(check, whole);
    expect_same_as_alone(check, std::string_view(whole).substr(0, n));
  }
}

// Right after an event whose envelope and ending a next event repeats: the text alone decides, and where it
// does not close exactly where the ending starts, the event is read whole. Each case follows the usual event.
TEST(StreamChunkCheckerTest, AnEventWithTheLastOnesEndsIsReadByItsTextAlone) {
  const std::string head =
      R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":)";
  const std::string usual = head + R"(" b"},"finish_reason":null}]})";
  struct Case {
    std::string event;
    bool valid, generated;
  };
  const std::vector<Case> cases{
      {head + R"("a\"},"finish_reason":null}]})", false, false},  // the quote escaped: the string runs on
      {head + R"("a"},"x":{"y":1},"finish_reason":null}]})", true, true},  // closes before it; still ends with it
      {head + R"("},"finish_reason":null}]})", false, false},             // no closing quote at all
      {head + "\"b\x01\"},\"finish_reason\":null}]}", false, false},     // a raw control character
      {head + R"("a\\"},"finish_reason":null}]})", true, true},          // an escaped backslash before the quote
      {head + R"(""},"finish_reason":null}]})", true, false},              // empty text: valid, nothing generated
      {head + R"("\u00e9"},"finish_reason":null}]})", true, true},        // a \u escape: RapidJSON decides
      {head + R"( "c"},"finish_reason":null}]})", true, true},             // space before the text
  };
  StreamChunkChecker check;
  for (const auto& c : cases) {
    expect_same_as_alone(check, usual);
    expect_same_as_alone(check, usual);  // the ending is kept: the next event may take the one-step path
    expect_same_as_alone(check, c.event);
    const auto alone = inspect_stream_chunk(c.event);
    EXPECT_EQ(alone.has_value(), c.valid) << c.event;
    if (alone) {
      EXPECT_EQ(alone->generated, c.generated) << c.event;
    }
  }
}

TEST(DefaultHealthPathTest, InferenceServersUseHealth) {
  for (auto d : {Dialect::vllm, Dialect::sglang, Dialect::llamacpp, Dialect::tgi, Dialect::simulator}) {
    EXPECT_EQ(default_health_path(d, "/v1"), "/health") << static_cast<int>(d);
    EXPECT_EQ(default_health_path(d, ""), "/health") << static_cast<int>(d);
  }
}

TEST(DefaultHealthPathTest, HostedApisUseModelsUnderTheBasePath) {
  EXPECT_EQ(default_health_path(Dialect::openai, "/v1"), "/v1/models");
  EXPECT_EQ(default_health_path(Dialect::qubrid, "/api/v1/qubridai"), "/api/v1/qubridai/models");
}

}  // namespace
}  // namespace sluice::openai
