#include "openai/request.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <string>
#include <string_view>
#include <vector>

namespace sluice::openai {
namespace {

ClientRequest accept(Endpoint endpoint, std::string_view body) {
  auto r = inspect_request(endpoint, body);
  if (auto* e = std::get_if<ApiError>(&r)) {
    ADD_FAILURE() << "rejected: " << e->message;
    return ClientRequest{};
  }
  return std::move(std::get<ClientRequest>(r));
}

ApiError reject(Endpoint endpoint, std::string_view body) {
  auto r = inspect_request(endpoint, body);
  if (!std::holds_alternative<ApiError>(r)) {
    ADD_FAILURE() << "accepted: " << body;
    return ApiError{};
  }
  return std::get<ApiError>(r);
}

// The top-level members inspect_request notes while parsing are the ones a search of the document finds: in any
// order, with escaped names, beside nested members of the same name, and after the request has been moved.
TEST(InspectRequestTest, TopLevelMembersAreFoundWhereASearchFindsThem) {
  using T = ClientRequest::Top;
  const std::pair<T, const char*> tops[] = {
      {T::model, "model"}, {T::messages, "messages"}, {T::prompt, "prompt"}, {T::input, "input"},
      {T::tools, "tools"}, {T::stream, "stream"}, {T::stream_options, "stream_options"},
      {T::max_tokens, "max_tokens"}, {T::max_completion_tokens, "max_completion_tokens"}, {T::n, "n"}};
  for (std::string_view body : std::initializer_list<std::string_view>{
           R"({"model":"m","messages":[{"role":"user","content":"hi"}]})",
           R"({"n":2,"max_tokens":5,"stream":true,"stream_options":{"include_usage":true},"tools":[],)"
           R"("max_completion_tokens":7,"messages":[{"role":"user","content":"hi","model":"inner"}],"model":"m"})",
           R"({"model":"m","messages":[{"role":"user"}],"x":{"n":1,"stream":false}})",
           R"({"messages":[{"role":"user"}],"model":"m","prompt":"p","input":"i","m":1,"nn":2,"max_tokens_":3})"}) {
    ClientRequest req = accept(Endpoint::chat_completions, body);
    ClientRequest moved = std::move(req);
    for (const auto& [t, name] : tops) {
      const auto it = moved.doc.FindMember(name);
      const rapidjson::Value* found = it == moved.doc.MemberEnd() ? nullptr : &it->value;
      EXPECT_EQ(moved.top(t), found) << body << " " << name;
    }
  }
  EXPECT_EQ(ClientRequest{}.top(T::model), nullptr);  // nothing parsed: nothing found
}

rapidjson::Document parse(const std::string& json) {
  rapidjson::Document d;
  d.Parse(json.data(), json.size());
  EXPECT_FALSE(d.HasParseError()) << json;
  EXPECT_TRUE(d.IsObject()) << json;
  return d;
}

constexpr std::string_view kChat = R"({"model":"llama","messages":[{"role":"user","content":"hi"}]})";

// --- endpoints --------------------------------------------------------------------------------------

TEST(EndpointTest, PathsMapToEndpoints) {
  EXPECT_EQ(endpoint_for_path("/v1/chat/completions"), Endpoint::chat_completions);
  EXPECT_EQ(endpoint_for_path("/v1/completions"), Endpoint::completions);
  EXPECT_EQ(endpoint_for_path("/v1/embeddings"), Endpoint::embeddings);
  EXPECT_EQ(endpoint_for_path("/v1/models"), std::nullopt);
  EXPECT_EQ(endpoint_for_path("/v1/chat/completions/"), std::nullopt);
  EXPECT_EQ(endpoint_for_path("/chat/completions"), std::nullopt);
  EXPECT_EQ(endpoint_for_path(""), std::nullopt);
}

TEST(EndpointTest, ToStringIsTheUpstreamSuffix) {
  EXPECT_EQ(to_string(Endpoint::chat_completions), "chat/completions");
  EXPECT_EQ(to_string(Endpoint::completions), "completions");
  EXPECT_EQ(to_string(Endpoint::embeddings), "embeddings");
  for (auto e : {Endpoint::chat_completions, Endpoint::completions, Endpoint::embeddings})
    EXPECT_EQ(endpoint_for_path("/v1/" + std::string(to_string(e))), e);
}

// --- inspect_request --------------------------------------------------------------------------------

TEST(InspectRequestTest, AcceptsAMinimalChatRequest) {
  auto req = accept(Endpoint::chat_completions, kChat);
  EXPECT_EQ(req.endpoint, Endpoint::chat_completions);
  EXPECT_EQ(req.model, "llama");
  EXPECT_FALSE(req.stream);
  EXPECT_FALSE(req.stream_explicit);
  EXPECT_FALSE(req.include_usage);
}

TEST(InspectRequestTest, InvalidJsonIs400InvalidJson) {
  for (std::string_view body : {"", "{", "{\"model\":\"x\",}", "not json", "{\"model\":\"x\"} trailing"}) {
    auto e = reject(Endpoint::chat_completions, body);
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_EQ(e.code, "invalid_json") << body;
    EXPECT_EQ(e.type, "invalid_request_error");
    EXPECT_EQ(e.param, std::nullopt);
  }
}

TEST(InspectRequestTest, NonObjectBodyIsRejected) {
  for (std::string_view body : {"[]", "[{\"model\":\"x\"}]", "\"model\"", "42", "null", "true"}) {
    auto e = reject(Endpoint::chat_completions, body);
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_EQ(e.code, "invalid_json") << body;
    EXPECT_NE(e.message.find("object"), std::string::npos) << e.message;
  }
}

TEST(InspectRequestTest, MissingModel) {
  auto e = reject(Endpoint::chat_completions, R"({"messages":[{"role":"user","content":"hi"}]})");
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.param, "model");
  EXPECT_EQ(e.code, "missing_required_parameter");
  EXPECT_NE(e.message.find("model"), std::string::npos);
}

TEST(InspectRequestTest, ModelMustBeANonEmptyString) {
  for (std::string_view body :
       {R"({"model":42,"messages":[{"role":"user"}]})", R"({"model":null,"messages":[{"role":"user"}]})",
        R"({"model":["a"],"messages":[{"role":"user"}]})", R"({"model":"","messages":[{"role":"user"}]})"}) {
    auto e = reject(Endpoint::chat_completions, body);
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_EQ(e.param, "model") << body;
    EXPECT_EQ(e.code, "invalid_type") << body;
  }
}

TEST(InspectRequestTest, ChatNeedsMessages) {
  auto e = reject(Endpoint::chat_completions, R"({"model":"m"})");
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.param, "messages");
  EXPECT_EQ(e.code, "missing_required_parameter");
}

TEST(InspectRequestTest, ChatMessagesMustBeANonEmptyArrayOfObjectsWithStringRoles) {
  for (std::string_view body :
       {R"({"model":"m","messages":[]})", R"({"model":"m","messages":{"role":"user"}})",
        R"({"model":"m","messages":"hi"})", R"({"model":"m","messages":["hi"]})",
        R"({"model":"m","messages":[{"content":"hi"}]})",
        R"({"model":"m","messages":[{"role":1,"content":"hi"}]})",
        R"({"model":"m","messages":[{"role":"user"},{"role":null}]})"}) {
    auto e = reject(Endpoint::chat_completions, body);
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_EQ(e.param, "messages") << body;
    EXPECT_EQ(e.code, "invalid_type") << body;
  }
  accept(Endpoint::chat_completions, R"({"model":"m","messages":[{"role":"system"},{"role":"user"}]})");
}

TEST(InspectRequestTest, CompletionsNeedPrompt) {
  auto e = reject(Endpoint::completions, R"({"model":"m"})");
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.param, "prompt");
  EXPECT_EQ(e.code, "missing_required_parameter");
  // Messages are not a prompt.
  EXPECT_EQ(reject(Endpoint::completions, kChat).param, "prompt");
  auto req = accept(Endpoint::completions, R"({"model":"m","prompt":"Once upon"})");
  EXPECT_EQ(req.endpoint, Endpoint::completions);
  accept(Endpoint::completions, R"({"model":"m","prompt":["a","b"]})");
}

TEST(InspectRequestTest, EmbeddingsNeedInput) {
  auto e = reject(Endpoint::embeddings, R"({"model":"m"})");
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.param, "input");
  EXPECT_EQ(e.code, "missing_required_parameter");
  auto req = accept(Endpoint::embeddings, R"({"model":"m","input":"text"})");
  EXPECT_EQ(req.endpoint, Endpoint::embeddings);
  EXPECT_FALSE(req.stream);
}

TEST(InspectRequestTest, EmbeddingsCannotStream) {
  auto e = reject(Endpoint::embeddings, R"({"model":"m","input":"text","stream":true})");
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.param, "stream");
  accept(Endpoint::embeddings, R"({"model":"m","input":"text","stream":false})");
}

TEST(InspectRequestTest, StreamMustBeBoolean) {
  for (std::string_view body :
       {R"({"model":"m","prompt":"p","stream":"true"})", R"({"model":"m","prompt":"p","stream":1})",
        R"({"model":"m","prompt":"p","stream":{}})"}) {
    auto e = reject(Endpoint::completions, body);
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_EQ(e.param, "stream") << body;
    EXPECT_EQ(e.code, "invalid_type") << body;
  }
}

TEST(InspectRequestTest, StreamFlagIsRead) {
  auto on = accept(Endpoint::completions, R"({"model":"m","prompt":"p","stream":true})");
  EXPECT_TRUE(on.stream);
  EXPECT_TRUE(on.stream_explicit);
  auto off = accept(Endpoint::completions, R"({"model":"m","prompt":"p","stream":false})");
  EXPECT_FALSE(off.stream);
  EXPECT_TRUE(off.stream_explicit);
  // null is "not given".
  auto null = accept(Endpoint::completions, R"({"model":"m","prompt":"p","stream":null})");
  EXPECT_FALSE(null.stream);
  EXPECT_FALSE(null.stream_explicit);
}

TEST(InspectRequestTest, StreamOptionsNeedStreamTrue) {
  for (
      std::string_view body :
      {R"({"model":"m","messages":[{"role":"user"}],"stream_options":{"include_usage":true}})",
       R"({"model":"m","messages":[{"role":"user"}],"stream":false,"stream_options":{"include_usage":true}})"}) {
    auto e = reject(Endpoint::chat_completions, body);
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_EQ(e.param, "stream_options") << body;
  }
  // null stream_options is "not given".
  accept(Endpoint::chat_completions, R"({"model":"m","messages":[{"role":"user"}],"stream_options":null})");
}

TEST(InspectRequestTest, StreamOptionsMustBeAnObjectWithBooleanIncludeUsage) {
  auto e = reject(Endpoint::chat_completions,
                  R"({"model":"m","messages":[{"role":"user"}],"stream":true,"stream_options":true})");
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.param, "stream_options");
  e = reject(
      Endpoint::chat_completions,
      R"({"model":"m","messages":[{"role":"user"}],"stream":true,"stream_options":{"include_usage":"yes"}})");
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.param, "stream_options.include_usage");
}

TEST(InspectRequestTest, IncludeUsageIsRead) {
  auto yes = accept(
      Endpoint::chat_completions,
      R"({"model":"m","messages":[{"role":"user"}],"stream":true,"stream_options":{"include_usage":true}})");
  EXPECT_TRUE(yes.stream);
  EXPECT_TRUE(yes.include_usage);
  auto no = accept(
      Endpoint::chat_completions,
      R"({"model":"m","messages":[{"role":"user"}],"stream":true,"stream_options":{"include_usage":false}})");
  EXPECT_FALSE(no.include_usage);
  auto absent = accept(Endpoint::chat_completions,
                       R"({"model":"m","messages":[{"role":"user"}],"stream":true,"stream_options":{}})");
  EXPECT_FALSE(absent.include_usage);
}

// --- rewrite_request --------------------------------------------------------------------------------

TEST(RewriteRequestTest, ReturnsTheOriginalBytesWhenNothingChanges) {
  // Odd spacing and key order prove the bytes are passed through, not re-serialised.
  const std::string body =
      "{ \"stream\" : false,\n  \"model\":\"llama\", \"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
      " \"temperature\": 0.70 }";
  auto req = accept(Endpoint::chat_completions, body);
  EXPECT_EQ(rewrite_request(req, body, "llama"), body);

  const std::string streaming = R"({"model":"llama","prompt":"p","stream":true})";
  auto sreq = accept(Endpoint::completions, streaming);
  EXPECT_EQ(rewrite_request(sreq, streaming, "llama"), streaming);
}

TEST(RewriteRequestTest, SetsTheUpstreamModel) {
  const std::string body = R"({"model":"llama","messages":[{"role":"user","content":"hi"}],"stream":true})";
  auto req = accept(Endpoint::chat_completions, body);
  auto out = parse(rewrite_request(req, body, "meta-llama/Llama-3.1-8B-Instruct"));
  EXPECT_STREQ(out["model"].GetString(), "meta-llama/Llama-3.1-8B-Instruct");
  EXPECT_TRUE(out["stream"].GetBool());
  EXPECT_STREQ(out["messages"][0]["content"].GetString(), "hi");
}

TEST(RewriteRequestTest, AddsStreamFalseWhenAbsent) {
  const std::string body(kChat);
  auto req = accept(Endpoint::chat_completions, body);
  auto text = rewrite_request(req, body, "llama");  // same model: only `stream` changes
  EXPECT_NE(text, body);
  auto out = parse(text);
  ASSERT_TRUE(out.HasMember("stream"));
  ASSERT_TRUE(out["stream"].IsBool());
  EXPECT_FALSE(out["stream"].GetBool());
  EXPECT_STREQ(out["model"].GetString(), "llama");
}

TEST(RewriteRequestTest, ReplacesStreamNullWithFalse) {
  const std::string body = R"({"model":"m","prompt":"p","stream":null})";
  auto req = accept(Endpoint::completions, body);
  auto out = parse(rewrite_request(req, body, "m"));
  ASSERT_TRUE(out["stream"].IsBool());
  EXPECT_FALSE(out["stream"].GetBool());
  EXPECT_EQ(out.MemberCount(), 3u);  // replaced, not added twice
}

TEST(RewriteRequestTest, KeepsUnknownAndNestedFieldsIntact) {
  const std::string body = R"({
    "model": "qwen",
    "messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "caf\u00e9 \"quoted\" \\ \n"}]}
    ],
    "top_k": 40,
    "temperature": 0.7,
    "seed": 12345678901234,
    "logit_bias": {"50256": -100},
    "chat_template_kwargs": {"enable_thinking": false, "nested": {"list": [1, 2.5, null, "x"]}},
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
  })";
  auto req = accept(Endpoint::chat_completions, body);
  auto out = parse(rewrite_request(req, body, "Qwen/Qwen3-8B"));
  auto in = parse(body);

  EXPECT_STREQ(out["model"].GetString(), "Qwen/Qwen3-8B");
  ASSERT_TRUE(out.HasMember("stream"));
  EXPECT_FALSE(out["stream"].GetBool());
  // Everything but model and the added stream compares equal to the input.
  for (auto it = in.MemberBegin(); it != in.MemberEnd(); ++it) {
    std::string name = it->name.GetString();
    if (name == "model") continue;
    ASSERT_TRUE(out.HasMember(it->name)) << name;
    EXPECT_TRUE(out[it->name] == it->value) << name;
  }
  EXPECT_EQ(out.MemberCount(), in.MemberCount() + 1);
  EXPECT_EQ(out["top_k"].GetInt(), 40);
  EXPECT_DOUBLE_EQ(out["temperature"].GetDouble(), 0.7);
  EXPECT_EQ(out["seed"].GetInt64(), 12345678901234);
  EXPECT_FALSE(out["chat_template_kwargs"]["enable_thinking"].GetBool());
  EXPECT_DOUBLE_EQ(out["chat_template_kwargs"]["nested"]["list"][1].GetDouble(), 2.5);
  EXPECT_TRUE(out["chat_template_kwargs"]["nested"]["list"][2].IsNull());
  EXPECT_STREQ(out["messages"][1]["content"][0]["text"].GetString(), "caf\xC3\xA9 \"quoted\" \\ \n");
}

// The usual rewrites are made in the client's bytes: its spacing and number spellings are what the backend
// sees, and nothing but the members the rewrite owns changes.
TEST(RewriteRequestTest, UsualRewritesKeepTheClientsBytes) {
  const std::string body =
      "{ \"model\" : \"llama\",\n  \"messages\":[{\"role\":\"user\",\"content\":\"} {\\\"model\\\":\\\"x\\\"}\"}],"
      " \"temperature\": 0.70, \"meta\": {\"model\": \"inner\", \"stream\": [1, {\"a\": \"]\"}]} }  ";
  auto req = accept(Endpoint::chat_completions, body);
  const auto out = rewrite_request(req, body, Rewrite{.upstream_model = "org/\"quoted\" model"});
  EXPECT_EQ(out,
            "{ \"model\" : \"org/\\\"quoted\\\" model\",\n  \"messages\":[{\"role\":\"user\",\"content\":\"} "
            "{\\\"model\\\":\\\"x\\\"}\"}], \"temperature\": 0.70, \"meta\": {\"model\": \"inner\", \"stream\": [1, "
            "{\"a\": \"]\"}]} ,\"stream\":false}  ");
  auto doc = parse(out);
  EXPECT_STREQ(doc["model"].GetString(), "org/\"quoted\" model");
  EXPECT_STREQ(doc["meta"]["model"].GetString(), "inner");
  EXPECT_FALSE(doc["stream"].GetBool());

  // A stream: null is replaced where it stands; include_usage adds stream_options.
  const std::string streaming = R"({"stream":null,"model":"m","prompt":"p"})";
  auto sreq = accept(Endpoint::completions, streaming);
  EXPECT_EQ(rewrite_request(sreq, streaming, Rewrite{.upstream_model = "up"}),
            R"({"stream":false,"model":"up","prompt":"p"})");
  const std::string asked = R"({"model":"m","prompt":"p","stream":true})";
  auto areq = accept(Endpoint::completions, asked);
  EXPECT_EQ(rewrite_request(areq, asked, Rewrite{.upstream_model = "m", .include_usage = true}),
            R"({"model":"m","prompt":"p","stream":true,"stream_options":{"include_usage":true}})");
}

// When the rewrite only adds members (the model stays), they go before the closing brace, found from the end:
// the client's bytes, trailing spaces and escaped names included, are kept; a `stream` or `stream_options`
// member, however its name is spelled, is replaced rather than added a second time.
TEST(RewriteRequestTest, AddedMembersGoBeforeTheClosingBrace) {
  const std::string body = "{\"model\":\"m\",\"mess\\u0061ges\":[{\"role\":\"user\",\"content\":\"}\"}]}\n\t ";
  auto req = accept(Endpoint::chat_completions, body);
  EXPECT_EQ(rewrite_request(req, body, "m"),
            "{\"model\":\"m\",\"mess\\u0061ges\":[{\"role\":\"user\",\"content\":\"}\"}],\"stream\":false}\n\t ");

  const std::string asked = R"({"model":"m","prompt":"p","stream":true} )";
  auto areq = accept(Endpoint::completions, asked);
  EXPECT_EQ(rewrite_request(areq, asked, Rewrite{.upstream_model = "m", .include_usage = true}),
            R"({"model":"m","prompt":"p","stream":true,"stream_options":{"include_usage":true}} )");

  const std::string escaped_stream = R"({"model":"m","prompt":"p","stream":null})";
  auto ereq = accept(Endpoint::completions, escaped_stream);
  auto out = parse(rewrite_request(ereq, escaped_stream, "m"));
  EXPECT_FALSE(out["stream"].GetBool());
  EXPECT_EQ(out.MemberCount(), 3u);

  const std::string options = R"({"model":"m","prompt":"p","stream":true,"stream_options":{"include_usage":false}})";
  auto oreq = accept(Endpoint::completions, options);
  auto with = parse(rewrite_request(oreq, options, Rewrite{.upstream_model = "m", .include_usage = true}));
  EXPECT_TRUE(with["stream_options"]["include_usage"].GetBool());
  EXPECT_EQ(with.MemberCount(), 4u);
}

// An escaped member name is not its bytes: the rewrite then goes through the document, and is still right.
TEST(RewriteRequestTest, EscapedMemberNamesAreRewrittenThroughTheDocument) {
  const std::string body = R"({"model":"m","messages":[{"role":"user","content":"hi"}]})";
  auto req = accept(Endpoint::chat_completions, body);
  auto out = parse(rewrite_request(req, body, Rewrite{.upstream_model = "up"}));
  EXPECT_STREQ(out["model"].GetString(), "up");
  EXPECT_FALSE(out["stream"].GetBool());
  EXPECT_EQ(out.MemberCount(), 3u);
}

TEST(RewriteRequestTest, EmbeddingsNeverGetAStreamField) {
  const std::string body = R"({"model":"embed","input":["a","b"],"encoding_format":"float"})";
  auto req = accept(Endpoint::embeddings, body);
  EXPECT_EQ(rewrite_request(req, body, "embed"), body);  // nothing to change
  auto out = parse(rewrite_request(req, body, "BAAI/bge-m3"));
  EXPECT_STREQ(out["model"].GetString(), "BAAI/bge-m3");
  EXPECT_FALSE(out.HasMember("stream"));
  EXPECT_STREQ(out["encoding_format"].GetString(), "float");
  EXPECT_EQ(out["input"].Size(), 2u);
}

// --- hostile bodies ---------------------------------------------------------------------------------

TEST(InspectRequestTest, ModeratelyNestedContentIsAccepted) {
  const std::string nest = std::string(64, '[') + std::string(64, ']');
  const std::string body = R"({"model":"m","messages":[{"role":"user","content":)" + nest + "}]}";
  auto req = accept(Endpoint::chat_completions, body);
  auto out = parse(rewrite_request(req, body, "up"));
  EXPECT_STREQ(out["model"].GetString(), "up");
}

TEST(InspectRequestTest, DeeplyNestedBodyIsRejectedNotACrash) {
  // JSON libraries recurse per nesting level; 100,000 nested '[' once overflowed the worker's stack.
  // Absurd nesting is a 400 invalid_json, and nothing recurses on it.
  for (std::size_t depth : {100'000u, 1'000'000u}) {
    const std::string nest = std::string(depth, '[') + std::string(depth, ']');
    const std::string body = R"({"model":"m","messages":[{"role":"user","content":)" + nest + "}]}";
    ASSERT_LT(body.size(), 8u << 20);  // within the default max_body_bytes
    auto r = inspect_request(Endpoint::chat_completions, body);
    ASSERT_TRUE(std::holds_alternative<ApiError>(r));
    EXPECT_EQ(std::get<ApiError>(r).status, 400);
    EXPECT_EQ(std::get<ApiError>(r).code, "invalid_json");
  }
}

// Found by fuzzing (tests/fuzz/corpus/fuzz_request/number_above_dbl_max.json): RapidJSON 1.1 reads a number
// just above DBL_MAX as inf (or NaN), and the rewrite then sent the backend JSON cut short at it.
TEST(InspectRequestTest, NumbersBeyondDoubleRangeAreRejected) {
  for (const char* n : {"1.7976934348623157e308", "-1.7976934348623157e308", "17976931348623159e292"}) {
    const std::string body =
        R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":)" + std::string(n) + "}";
    auto e = reject(Endpoint::chat_completions, body);
    EXPECT_EQ(e.status, 400) << n;
    EXPECT_EQ(e.code, "invalid_json") << n;
  }
  // A large double is a number like any other.
  const std::string body = R"({"model":"m","prompt":"p","temperature":1e308})";
  auto req = accept(Endpoint::completions, body);
  EXPECT_EQ(parse(rewrite_request(req, body, "up"))["temperature"].GetDouble(), 1e308);
  // A default that is no double stays text.
  const std::vector<std::pair<std::string, std::string>> defaults{{"top_k", "1.7976934348623157e308"}};
  auto out = parse(rewrite_request(req, body, Rewrite{.upstream_model = "m", .defaults = &defaults}));
  EXPECT_STREQ(out["top_k"].GetString(), "1.7976934348623157e308");
}

// Found by fuzzing (tests/fuzz/corpus/fuzz_request/number_*): RapidJSON 1.1's full-precision reader
// indexed past its table of powers of ten for numbers beyond the double range, far enough for
// 1.8642975318642975e-341 to crash the worker.
TEST(InspectRequestTest, ExtremeNumbersAreNotACrash) {
  for (const char* n :
       {"1.8642975318642975e-341", "0.1864297531864297531e-330", "0e-300", "0.0e200",
        "6666666666666666666666666666666666666666666666666666666666666666666666666666666666666666"
        "1.7973691348623157e308"}) {
    const std::string body =
        R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":)" + std::string(n) + "}";
    auto r = inspect_request(Endpoint::chat_completions, body);
    if (auto* req = std::get_if<ClientRequest>(&r))
      parse(rewrite_request(*req, body, "up"));  // still JSON when forwarded
  }
  // Everyday numbers keep their exact value.
  const std::string body =
      R"({"model":"m","prompt":"p","temperature":0.7,"top_p":0.95,"seed":18446744073709551615,)"
      R"("frequency_penalty":-1.25,"logit_bias":{"50256":-100}})";
  auto req = accept(Endpoint::completions, body);
  auto out = parse(rewrite_request(req, body, "up"));
  EXPECT_EQ(out["temperature"].GetDouble(), 0.7);
  EXPECT_EQ(out["top_p"].GetDouble(), 0.95);
  EXPECT_EQ(out["seed"].GetUint64(), 18446744073709551615u);
  EXPECT_EQ(out["frequency_penalty"].GetDouble(), -1.25);
}

// Found by fuzzing (tests/fuzz/corpus/fuzz_request/lone_surrogate.json): invalid UTF-8 is refused, but a
// lone "\udc00" escape decoded to bytes that are not UTF-8, and the rewrite sent them upstream raw.
TEST(InspectRequestTest, LoneSurrogateEscapesAreRefusedLikeInvalidUtf8) {
  for (const char* text : {R"(\udc00)", R"(x\ude00y)", R"(\uDFFF)"}) {
    const std::string body =
        R"({"model":"m","messages":[{"role":"user","content":")" + std::string(text) + R"("}]})";
    auto e = reject(Endpoint::chat_completions, body);
    EXPECT_EQ(e.code, "invalid_json") << text;
  }
  EXPECT_EQ(reject(Endpoint::completions, R"({"model":"m","prompt":"p","\udc00":1})").code, "invalid_json");
  // A pair is one character (U+1F600), and é and 世 are not surrogates.
  const std::string body = R"({"model":"m","prompt":"\ud83d\ude00 \u00e9\u4e16 é"})";
  auto req = accept(Endpoint::completions, body);
  EXPECT_STREQ(parse(rewrite_request(req, body, "up"))["prompt"].GetString(),
               "\xF0\x9F\x98\x80 \xC3\xA9\xE4\xB8\x96 \xC3\xA9");
}

// Bodies are checked as UTF-8 sixteen or eight bytes at a time while they are ASCII: every well-formed
// sequence passes, and every ill-formed one is refused, wherever in a block it falls (RapidJSON's validating
// reader, which did this before, refuses the same ones).
TEST(InspectRequestTest, Utf8IsCheckedWhereverASequenceFallsInTheBody) {
  const std::vector<std::string> good{"\xC3\xA9", "\xDF\xBF", "\xE0\xA0\x80", "\xE4\xB8\x96", "\xED\x9F\xBF",
                                      "\xEE\x80\x80", "\xF0\x90\x80\x80", "\xF0\x9F\x98\x80", "\xF4\x8F\xBF\xBF"};
  const std::vector<std::string> bad{
      "\x80",         "\xBF",         "\xC0\x80",         "\xC1\xBF",         "\xC3",     "\xC3\x41",
      "\xE0\x80\x80",  "\xE0\x9F\xBF",  "\xED\xA0\x80",     "\xED\xBF\xBF",     "\xE4\xB8", "\xE4\x41\x96",
      "\xF0\x80\x80\x80", "\xF0\x8F\xBF\xBF", "\xF4\x90\x80\x80", "\xF5\x80\x80\x80", "\xF8",     "\xFF",
      "\xF0\x9F\x98"};
  const std::string head = R"({"model":"m","prompt":")";
  for (std::size_t pad = 0; pad < 40; ++pad) {
    const std::string before(pad, 'a');
    for (const auto& seq : good) {
      const std::string body = head + before + seq + R"(z"})";
      auto req = accept(Endpoint::completions, body);
      EXPECT_EQ(parse(rewrite_request(req, body, "up"))["prompt"].GetString(), before + seq + "z") << pad;
    }
    for (const auto& seq : bad) {
      EXPECT_EQ(reject(Endpoint::completions, head + before + seq + R"(z"})").code, "invalid_json")
          << pad << " " << seq.size();
      // At the very end of the body, where a sequence may be cut short by the end itself.
      EXPECT_EQ(reject(Endpoint::completions, head + before + R"("})" + seq).code, "invalid_json") << pad;
    }
  }
}

// RapidJSON reads strings and whitespace sixteen bytes at a time (RAPIDJSON_SSE2), in aligned blocks: every
// string reads back the same, and a control character is refused, wherever it starts and ends against a block
// and wherever an escape falls in it; whitespace runs of any length are skipped, up to the body's very end. The
// large bodies get a pool chunk of their own size, where a block read past the end would be past the allocation
// (`make test-sanitize` has ASan check inspect_request's padding there).
TEST(InspectRequestTest, StringsAndWhitespaceReadTheSameWhereverTheyFallAgainstSixteenByteBlocks) {
  struct Escape {
    std::string wire, text;
  };
  const std::vector<Escape> escapes{{"", ""},         {R"(\n)", "\n"},          {R"(\")", "\""},
                                    {R"(\\)", "\\"},  {R"(\u00e9)", "\xC3\xA9"}, {R"(\/)", "/"}};
  for (const std::size_t large : {std::size_t{0}, std::size_t{70000}}) {
    for (std::size_t lead = 0; lead < 17; ++lead) {
      const std::string space(lead, lead % 2 ? ' ' : '\n');
      for (std::size_t n = 0; n < 36; n += 5) {
        const std::string a(large + n / 2, 'a'), b(n - n / 2, 'b');
        for (const auto& e : escapes) {
          const std::string body = "{" + space + R"("model":"m",)" + space + R"("prompt":")" + a + e.wire + b +
                                   R"(",")" + std::string(n, 'k') + R"(":)" + space + "1" + space + "}" + space;
          auto r = inspect_request(Endpoint::completions, body);
          const auto* req = std::get_if<ClientRequest>(&r);
          ASSERT_NE(req, nullptr) << "lead " << lead << " n " << n << " escape " << e.wire;
          ASSERT_TRUE(req->top(ClientRequest::Top::prompt)->IsString());
          EXPECT_EQ(std::string(req->top(ClientRequest::Top::prompt)->GetString()), a + e.text + b)
              << "lead " << lead << " n " << n << " escape " << e.wire;
          EXPECT_EQ(req->doc[std::string(n, 'k').c_str()].GetInt(), 1) << "lead " << lead << " n " << n;
        }
        // A raw control character is refused wherever it falls: in a string (where RapidJSON 1.1's SSE2 scan
        // lets 0x1A to 0x1F through, so the byte check refuses those), and between members.
        for (const char c : {'\x01', '\x08', '\x0B', '\x19', '\x1A', '\x1B', '\x1F'}) {
          const std::string in_string =
              "{" + space + R"("model":"m","prompt":")" + a + c + b + R"("})" + space;
          EXPECT_EQ(reject(Endpoint::completions, in_string).code, "invalid_json")
              << "lead " << lead << " n " << n << " byte " << int{c};
          const std::string between = "{" + space + R"("model":"m",)" + a.substr(0, n % 16) + c + R"("prompt":"p"})";
          EXPECT_EQ(reject(Endpoint::completions, between).code, "invalid_json") << "lead " << lead << " n " << n;
        }
      }
    }
  }
}

// Found by fuzzing (tests/fuzz/corpus/fuzz_request/raw_control_in_key.json): with RapidJSON's SSE2 string scan,
// a raw 0x1B in a member name passed the parse, where RapidJSON's validating reader refuses it. JSON has no raw
// control character anywhere; the message says which kind of byte it was.
TEST(InspectRequestTest, RawControlCharacters1AThrough1FAreRefusedWithAClearMessage) {
  for (int c = 0x1A; c <= 0x1F; ++c) {
    const std::string key = "conkkkkstream_o" + std::string(24, 'k') + static_cast<char>(c) + "tent";
    const auto e = reject(Endpoint::chat_completions,
                          R"({"model":"m","messages":[{"role":"user",")" + key + R"(":"x"}]})");
    EXPECT_EQ(e.code, "invalid_json");
    EXPECT_NE(e.message.find("control character"), std::string::npos) << e.message;
  }
  // Tabs and line ends between members are whitespace, as ever.
  accept(Endpoint::chat_completions, "{\t\"model\":\"m\",\r\n\"messages\":[{\"role\":\"user\"}]\n}\n");
}

// Found by fuzzing (tests/fuzz/corpus/fuzz_request/bom_*.json): RapidJSON skipped a leading BOM, and even
// a lone 0xEF, so the body went upstream with bytes that are not UTF-8 (or a BOM Python's json refuses).
TEST(InspectRequestTest, ALeadingByteOrderMarkOrPartOfOneIsRefused) {
  for (const char* prefix : {"\xEF\xBB\xBF", "\xEF", "\xBB", "\xBF", "\xEF\xBF"}) {
    const std::string body = std::string(prefix) + std::string(kChat);
    EXPECT_EQ(reject(Endpoint::chat_completions, body).code, "invalid_json");
  }
  accept(Endpoint::chat_completions, " \n" + std::string(kChat));
}

// Found by fuzzing (tests/fuzz/corpus/fuzz_request/nul_after_body.json): RapidJSON reads a NUL as the end of
// the input, so whatever followed one was never looked at, yet forwarded when the body needed no rewrite.
TEST(InspectRequestTest, ANulByteAnywhereIsRefused) {
  const std::string body = std::string(kChat) + std::string("\0{\"model\":\"other\"}\xD8", 19);
  EXPECT_EQ(reject(Endpoint::chat_completions, body).code, "invalid_json");
  EXPECT_EQ(reject(Endpoint::chat_completions, std::string(kChat) + '\0').code, "invalid_json");
}

// Upstream servers written in Python/JS keep the LAST of duplicate members; Sluice must not decide
// on one value while the backend acts on another.
TEST(InspectRequestTest, DuplicateModelCannotSmuggleAnotherModel) {
  // Sluice must not authorize one "model" while the backend (which keeps the last member) serves
  // another: a repeated member is a 400.
  for (std::string upstream : {"llama", "meta-llama/Llama-3.1-8B-Instruct"}) {
    const std::string body =
        R"({"model":"llama","messages":[{"role":"user","content":"hi"}],"stream":false,"model":"gpt-4o"})";
    auto r = inspect_request(Endpoint::chat_completions, body);
    ASSERT_TRUE(std::holds_alternative<ApiError>(r)) << upstream;
    EXPECT_EQ(std::get<ApiError>(r).status, 400);
    EXPECT_EQ(std::get<ApiError>(r).param, "model");
  }
  const std::string streams = R"({"model":"m","prompt":"p","stream":false,"stream":true})";
  auto r = inspect_request(Endpoint::completions, streams);
  ASSERT_TRUE(std::holds_alternative<ApiError>(r));
  EXPECT_EQ(std::get<ApiError>(r).param, "stream");
}

// --- rewrite_request with a Rewrite -----------------------------------------------------------------

using Defaults = std::vector<std::pair<std::string, std::string>>;

TEST(RewriteRequestTest, IncludeUsageAddsStreamOptionsToAStream) {
  const std::string body = R"({"model":"llama","messages":[{"role":"user","content":"hi"}],"stream":true})";
  auto req = accept(Endpoint::chat_completions, body);
  auto out = parse(rewrite_request(req, body, Rewrite{.upstream_model = "llama", .include_usage = true}));
  ASSERT_TRUE(out.HasMember("stream_options"));
  ASSERT_TRUE(out["stream_options"].IsObject());
  ASSERT_TRUE(out["stream_options"].HasMember("include_usage"));
  EXPECT_TRUE(out["stream_options"]["include_usage"].GetBool());
  EXPECT_EQ(out["stream_options"].MemberCount(), 1u);
  EXPECT_TRUE(out["stream"].GetBool());
  EXPECT_STREQ(out["model"].GetString(), "llama");
  EXPECT_STREQ(out["messages"][0]["content"].GetString(), "hi");
  // Without include_usage in the Rewrite, nothing changes.
  EXPECT_EQ(rewrite_request(req, body, Rewrite{.upstream_model = "llama"}), body);
}

TEST(RewriteRequestTest, IncludeUsageTurnsAClientFalseToTrueAndKeepsOtherStreamOptions) {
  const std::string body = R"({"model":"llama","prompt":"p","stream":true,)"
                           R"("stream_options":{"include_usage":false,"continuous_usage_stats":true}})";
  auto req = accept(Endpoint::completions, body);
  ASSERT_FALSE(req.include_usage);
  auto out = parse(rewrite_request(req, body, Rewrite{.upstream_model = "llama", .include_usage = true}));
  const auto& so = out["stream_options"];
  ASSERT_TRUE(so.IsObject());
  EXPECT_TRUE(so["include_usage"].GetBool());
  ASSERT_TRUE(so.HasMember("continuous_usage_stats"));
  EXPECT_TRUE(so["continuous_usage_stats"].GetBool());
  EXPECT_EQ(so.MemberCount(), 2u);  // replaced, not added twice
}

TEST(RewriteRequestTest, IncludeUsageLeavesNonStreamRequestsWithoutStreamOptions) {
  const std::string body = R"({"model":"llama","messages":[{"role":"user","content":"hi"}],"stream":false})";
  auto req = accept(Endpoint::chat_completions, body);
  EXPECT_EQ(rewrite_request(req, body, Rewrite{.upstream_model = "llama", .include_usage = true}), body);
  auto out = parse(rewrite_request(req, body, Rewrite{.upstream_model = "up", .include_usage = true}));
  EXPECT_STREQ(out["model"].GetString(), "up");
  EXPECT_FALSE(out.HasMember("stream_options"));
  EXPECT_FALSE(out["stream"].GetBool());
  // Absent `stream` is a non-stream request too.
  const std::string implicit(kChat);
  auto ireq = accept(Endpoint::chat_completions, implicit);
  auto iout =
      parse(rewrite_request(ireq, implicit, Rewrite{.upstream_model = "llama", .include_usage = true}));
  EXPECT_FALSE(iout.HasMember("stream_options"));
  EXPECT_FALSE(iout["stream"].GetBool());
}

TEST(RewriteRequestTest, ClientAlreadyAskingForUsageGetsItsBytesBack) {
  // Odd spacing proves the bytes are passed through, not re-serialised.
  const std::string body =
      "{\"model\": \"llama\",  \"prompt\":\"p\", \"stream\" : true, \"stream_options\": {\"include_usage\" : "
      "true} }";
  auto req = accept(Endpoint::completions, body);
  ASSERT_TRUE(req.include_usage);
  EXPECT_EQ(rewrite_request(req, body, Rewrite{.upstream_model = "llama", .include_usage = true}), body);
}

TEST(RewriteRequestTest, DefaultsAreAddedWithJsonTypes) {
  const Defaults defaults{{"reasoning_effort", "low"}, {"temperature", "0.2"}, {"logprobs", "true"}};
  const std::string body = R"({"model":"llama","messages":[{"role":"user","content":"hi"}],"stream":false})";
  auto req = accept(Endpoint::chat_completions, body);
  auto out = parse(rewrite_request(req, body, Rewrite{.upstream_model = "llama", .defaults = &defaults}));
  ASSERT_TRUE(out.HasMember("reasoning_effort"));
  ASSERT_TRUE(out["reasoning_effort"].IsString());
  EXPECT_STREQ(out["reasoning_effort"].GetString(), "low");
  ASSERT_TRUE(out.HasMember("temperature"));
  ASSERT_TRUE(out["temperature"].IsNumber());
  EXPECT_DOUBLE_EQ(out["temperature"].GetDouble(), 0.2);
  ASSERT_TRUE(out.HasMember("logprobs"));
  ASSERT_TRUE(out["logprobs"].IsBool());
  EXPECT_TRUE(out["logprobs"].GetBool());
  EXPECT_EQ(out.MemberCount(), 6u);
  EXPECT_FALSE(out["stream"].GetBool());
}

TEST(RewriteRequestTest, DefaultsOtherTypes) {
  const Defaults defaults{
      {"top_k", "40"}, {"echo", "false"}, {"stop", "null"}, {"suffix", ""}, {"seed", "-7"}};
  const std::string body = R"({"model":"m","prompt":"p","stream":false})";
  auto req = accept(Endpoint::completions, body);
  auto out = parse(rewrite_request(req, body, Rewrite{.upstream_model = "m", .defaults = &defaults}));
  ASSERT_TRUE(out["top_k"].IsInt());
  EXPECT_EQ(out["top_k"].GetInt(), 40);
  ASSERT_TRUE(out["echo"].IsBool());
  EXPECT_FALSE(out["echo"].GetBool());
  ASSERT_TRUE(out["stop"].IsString());  // only numbers and true/false are typed
  EXPECT_STREQ(out["stop"].GetString(), "null");
  ASSERT_TRUE(out["suffix"].IsString());
  EXPECT_STREQ(out["suffix"].GetString(), "");
  ASSERT_TRUE(out["seed"].IsInt());
  EXPECT_EQ(out["seed"].GetInt(), -7);
}

TEST(RewriteRequestTest, DefaultsNeverOverrideTheClient) {
  const Defaults defaults{{"reasoning_effort", "low"}, {"temperature", "0.2"}, {"logprobs", "true"}};
  const std::string body = R"({"model":"llama","messages":[{"role":"user","content":"hi"}],"stream":false,)"
                           R"("temperature":0.9,"logprobs":false})";
  auto req = accept(Endpoint::chat_completions, body);
  auto out = parse(rewrite_request(req, body, Rewrite{.upstream_model = "llama", .defaults = &defaults}));
  EXPECT_DOUBLE_EQ(out["temperature"].GetDouble(), 0.9);
  ASSERT_TRUE(out["logprobs"].IsBool());
  EXPECT_FALSE(out["logprobs"].GetBool());
  EXPECT_STREQ(out["reasoning_effort"].GetString(), "low");  // the one the client left out
  EXPECT_EQ(out.MemberCount(), 6u);

  // Every default already sent (even as null): nothing to add, the original bytes go up.
  const std::string all = R"({"model":"llama","messages":[{"role":"user","content":"hi"}],"stream":false,)"
                          R"("temperature":1,"logprobs":false,"reasoning_effort":null})";
  auto areq = accept(Endpoint::chat_completions, all);
  EXPECT_EQ(rewrite_request(areq, all, Rewrite{.upstream_model = "llama", .defaults = &defaults}), all);
}

TEST(RewriteRequestTest, MaxTokensCapClampsLargerValues) {
  const std::string body = R"({"model":"llama","messages":[{"role":"user","content":"hi"}],"stream":false,)"
                           R"("max_tokens":500,"max_completion_tokens":1000})";
  auto req = accept(Endpoint::chat_completions, body);
  auto out = parse(rewrite_request(req, body, Rewrite{.upstream_model = "llama", .max_tokens_cap = 100}));
  ASSERT_TRUE(out["max_tokens"].IsUint64());
  EXPECT_EQ(out["max_tokens"].GetUint64(), 100u);
  ASSERT_TRUE(out["max_completion_tokens"].IsUint64());
  EXPECT_EQ(out["max_completion_tokens"].GetUint64(), 100u);
  EXPECT_EQ(out.MemberCount(), 5u);

  // Only the one over the cap changes.
  const std::string one =
      R"({"model":"m","prompt":"p","stream":false,"max_tokens":50,"max_completion_tokens":101})";
  auto oreq = accept(Endpoint::completions, one);
  auto oout = parse(rewrite_request(oreq, one, Rewrite{.upstream_model = "m", .max_tokens_cap = 100}));
  EXPECT_EQ(oout["max_tokens"].GetUint64(), 50u);
  EXPECT_EQ(oout["max_completion_tokens"].GetUint64(), 100u);
}

TEST(RewriteRequestTest, MaxTokensCapLeavesSmallerOrAbsentValuesAlone) {
  // Spaces prove the bytes are passed through, not re-serialised.
  for (std::string body : {std::string(R"({"model":"m", "prompt":"p", "stream":false, "max_tokens": 50})"),
                           std::string(R"({"model":"m", "prompt":"p", "stream":false, "max_tokens": 100})"),
                           std::string(R"({"model":"m", "prompt":"p", "stream":false})")}) {
    auto req = accept(Endpoint::completions, body);
    EXPECT_EQ(rewrite_request(req, body, Rewrite{.upstream_model = "m", .max_tokens_cap = 100}), body);
  }
  // When the body is rewritten for another reason, the cap still adds nothing.
  const std::string body = R"({"model":"m","prompt":"p"})";
  auto req = accept(Endpoint::completions, body);
  auto out = parse(rewrite_request(req, body, Rewrite{.upstream_model = "up", .max_tokens_cap = 100}));
  EXPECT_FALSE(out.HasMember("max_tokens"));
  EXPECT_FALSE(out.HasMember("max_completion_tokens"));
  // A cap of 0 is no cap.
  const std::string big = R"({"model":"m","prompt":"p","stream":false,"max_tokens":100000})";
  auto breq = accept(Endpoint::completions, big);
  EXPECT_EQ(rewrite_request(breq, big, Rewrite{.upstream_model = "m", .max_tokens_cap = 0}), big);
}

// Found by fuzzing (tests/fuzz/corpus/fuzz_request/default_over_cap.json): a model's default max_tokens
// larger than its max_tokens_cap went upstream unclamped when the client set none.
TEST(RewriteRequestTest, MaxTokensCapAlsoClampsDefaults) {
  const Defaults defaults{{"max_tokens", "8192"}, {"max_completion_tokens", "50"}};
  const std::string body = R"({"model":"m","prompt":"p","stream":false})";
  auto req = accept(Endpoint::completions, body);
  auto out = parse(rewrite_request(
      req, body, Rewrite{.upstream_model = "m", .defaults = &defaults, .max_tokens_cap = 4096}));
  EXPECT_EQ(out["max_tokens"].GetUint64(), 4096u);
  EXPECT_EQ(out["max_completion_tokens"].GetUint64(), 50u);
}

TEST(RewriteRequestTest, RewritingTwiceDoesNotMutateTheRequest) {
  const Defaults defaults{{"temperature", "0.2"}};
  const std::string body =
      R"({"model":"llama","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":500})";
  auto req = accept(Endpoint::chat_completions, body);
  const Rewrite first{.upstream_model = "backend-a/llama",
                      .include_usage = true,
                      .defaults = &defaults,
                      .max_tokens_cap = 100};
  const Rewrite second{.upstream_model = "backend-b/llama"};

  auto a = parse(rewrite_request(req, body, first));
  auto b = parse(rewrite_request(req, body, second));

  EXPECT_STREQ(a["model"].GetString(), "backend-a/llama");
  EXPECT_TRUE(a["stream_options"]["include_usage"].GetBool());
  EXPECT_DOUBLE_EQ(a["temperature"].GetDouble(), 0.2);
  EXPECT_EQ(a["max_tokens"].GetUint64(), 100u);

  // The second attempt sees the client's body, not the first attempt's changes.
  EXPECT_STREQ(b["model"].GetString(), "backend-b/llama");
  EXPECT_FALSE(b.HasMember("stream_options"));
  EXPECT_FALSE(b.HasMember("temperature"));
  EXPECT_EQ(b["max_tokens"].GetUint64(), 500u);
  EXPECT_TRUE(b["stream"].GetBool());

  // And the request itself is as the client sent it.
  EXPECT_EQ(req.model, "llama");
  EXPECT_STREQ(req.doc["model"].GetString(), "llama");
  EXPECT_FALSE(req.doc.HasMember("stream_options"));
  EXPECT_FALSE(req.doc.HasMember("temperature"));
  EXPECT_EQ(req.doc["max_tokens"].GetUint64(), 500u);
  EXPECT_TRUE(parse(body) == req.doc);
  // Same model as the client: its own bytes.
  EXPECT_EQ(rewrite_request(req, body, Rewrite{.upstream_model = "llama"}), body);
}

}  // namespace
}  // namespace sluice::openai
