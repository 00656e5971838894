#include "openai/errors.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace sluice::openai {
namespace {

rapidjson::Document parse(const std::string& json) {
  rapidjson::Document d;
  d.Parse(json.data(), json.size());
  EXPECT_FALSE(d.HasParseError()) << json;
  return d;
}

TEST(ErrorJsonTest, FullErrorHasOpenAisShape) {
  ApiError e{400, "bad model", "invalid_request_error", "model", "model_not_found"};
  EXPECT_EQ(
      error_json(e),
      R"({"error":{"message":"bad model","type":"invalid_request_error","param":"model","code":"model_not_found"}})");
}

TEST(ErrorJsonTest, UnsetParamAndCodeAreNull) {
  ApiError e{500, "boom", "", std::nullopt, std::nullopt};
  auto d = parse(error_json(e));
  ASSERT_TRUE(d.IsObject());
  ASSERT_EQ(d.MemberCount(), 1u);
  const auto& err = d["error"];
  ASSERT_TRUE(err.IsObject());
  EXPECT_EQ(err.MemberCount(), 4u);
  EXPECT_STREQ(err["message"].GetString(), "boom");
  EXPECT_STREQ(err["type"].GetString(), "server_error");  // derived from the status
  ASSERT_TRUE(err.HasMember("param"));
  EXPECT_TRUE(err["param"].IsNull());
  ASSERT_TRUE(err.HasMember("code"));
  EXPECT_TRUE(err["code"].IsNull());
}

TEST(ErrorJsonTest, MessageIsEscaped) {
  ApiError e{400, "line1\n\"quoted\" \\ tab\t", "", std::nullopt, std::nullopt};
  auto d = parse(error_json(e));
  EXPECT_STREQ(d["error"]["message"].GetString(), "line1\n\"quoted\" \\ tab\t");
}

TEST(ErrorJsonTest, DefaultTypeFollowsStatus) {
  EXPECT_EQ(default_error_type(400), "invalid_request_error");
  EXPECT_EQ(default_error_type(401), "invalid_request_error");
  EXPECT_EQ(default_error_type(404), "invalid_request_error");
  EXPECT_EQ(default_error_type(429), "rate_limit_exceeded");
  EXPECT_EQ(default_error_type(500), "server_error");
  EXPECT_EQ(default_error_type(503), "server_error");
  auto d = parse(error_json(ApiError{429, "slow down", "", std::nullopt, std::nullopt}));
  EXPECT_STREQ(d["error"]["type"].GetString(), "rate_limit_exceeded");
}

TEST(ErrorJsonTest, InvalidRequestHelper) {
  auto e = invalid_request("missing x", "x", "missing_required_parameter");
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.type, "invalid_request_error");
  EXPECT_EQ(e.param, "x");
  EXPECT_EQ(e.code, "missing_required_parameter");
  auto bare = invalid_request("nope");
  EXPECT_EQ(bare.param, std::nullopt);
  EXPECT_EQ(bare.code, std::nullopt);
}

TEST(JsonQuoteTest, Escapes) {
  EXPECT_EQ(json_quote(""), R"("")");
  EXPECT_EQ(json_quote("plain"), R"("plain")");
  EXPECT_EQ(json_quote("a\"b"), R"("a\"b")");
  EXPECT_EQ(json_quote("a\\b"), R"("a\\b")");
  EXPECT_EQ(json_quote("a\nb\rc\td"), R"("a\nb\rc\td")");
  EXPECT_EQ(json_quote(std::string("\x01", 1)), R"("\u0001")");
  EXPECT_EQ(json_quote(std::string("a\0b", 3)), R"("a\u0000b")");
  EXPECT_EQ(json_quote("caf\xC3\xA9"), "\"caf\xC3\xA9\"");  // UTF-8 passes through
  // Whatever goes in comes back out of a JSON parser.
  const std::string nasty = "</script>\"\\\b\f\x1F end";
  auto d = parse("[" + json_quote(nasty) + "]");
  EXPECT_EQ(std::string(d[0].GetString(), d[0].GetStringLength()), nasty);
}

// Runs without escapes are found eight bytes at a time: a byte that needs one is escaped wherever it falls.
TEST(JsonQuoteTest, EscapesEverySpecialByteWhereverItFalls) {
  for (const char special : {'"', '\\', '\0', '\x01', '\n', '\x1F'}) {
    for (std::size_t len = 1; len <= 40; ++len) {
      for (std::size_t at = 0; at < len; ++at) {
        std::string text(len, 'x');
        text[at] = special;
        text[len - 1 - at] = '\xE9';  // a byte past ASCII nearby must pass as it is
        text[at] = special;          // (again: it wins where the two coincide)
        const std::string quoted = json_quote(text);
        auto d = parse("[" + quoted + "]");
        ASSERT_EQ(std::string(d[0].GetString(), d[0].GetStringLength()), text) << len << " " << at;
        for (char c : quoted) ASSERT_GE(static_cast<unsigned char>(c), 0x20) << len << " " << at;
        std::string appended = "ab";
        append_json_string(appended, text);
        ASSERT_EQ(appended, "ab" + quoted);
      }
    }
  }
}

// write_json_string stores whole blocks of sixteen or eight bytes as it reads them: whatever the text (no escape,
// every byte escaped, a mix), it writes exactly a byte-by-byte escaper's output and nothing past the room
// json_string_bound promises.
TEST(JsonQuoteTest, WritesWhatAByteByByteEscaperWritesAndNothingPastItsBound) {
  auto reference = [](std::string_view text) {
    std::string out = "\"";
    for (char ch : text) {
      const auto c = static_cast<unsigned char>(ch);
      if (c == '"') out += "\\\"";
      else if (c == '\\') out += "\\\\";
      else if (c == '\b') out += "\\b";
      else if (c == '\f') out += "\\f";
      else if (c == '\n') out += "\\n";
      else if (c == '\r') out += "\\r";
      else if (c == '\t') out += "\\t";
      else if (c < 0x20) {
        char u[8];
        std::snprintf(u, sizeof u, "\\u%04x", c);
        out += u;
      } else out += ch;
    }
    return out + "\"";
  };
  std::mt19937 rng(5);
  const std::string alphabet("ab\"\\\x01\x1f\n\xe9\x7f ", 10);
  for (std::size_t len = 0; len <= 64; ++len)
    for (int pattern = 0; pattern < 40; ++pattern) {
      std::string text(len, 'x');
      if (pattern == 1) text.assign(len, '\x01');  // the worst case: six bytes for each
      if (pattern >= 2)
        for (auto& c : text)
          if (rng() % (pattern % 8 + 1) == 0) c = alphabet[rng() % alphabet.size()];
      const std::size_t bound = json_string_bound(len);
      std::vector<char> buffer(bound + 64, '#');
      const char* end = write_json_string(buffer.data(), text);
      ASSERT_EQ(std::string(static_cast<const char*>(buffer.data()), end), reference(text)) << len << " " << pattern;
      for (std::size_t i = bound; i < buffer.size(); ++i) ASSERT_EQ(buffer[i], '#') << len << " " << pattern << " " << i;
    }
}

TEST(NormalizeBackendErrorTest, OpenAiBodyIsKept) {
  auto e = normalize_backend_error(
      429,
      R"({"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}})");
  EXPECT_EQ(e.status, 429);
  EXPECT_EQ(e.message, "Rate limit reached");
  EXPECT_EQ(e.type, "requests");
  EXPECT_EQ(e.param, std::nullopt);
  EXPECT_EQ(e.code, "rate_limit_exceeded");

  auto p = normalize_backend_error(
      400, R"({"error":{"message":"bad","type":"invalid_request_error","param":"messages","code":null}})");
  EXPECT_EQ(p.param, "messages");
  EXPECT_EQ(p.code, std::nullopt);
}

TEST(NormalizeBackendErrorTest, VllmIntegerCodeBecomesAString) {
  auto e = normalize_backend_error(
      400,
      R"({"object":"error","message":"This model's maximum context length is 8192 tokens.","type":"BadRequestError","param":null,"code":400})");
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.message, "This model's maximum context length is 8192 tokens.");
  EXPECT_EQ(e.type, "BadRequestError");
  EXPECT_EQ(e.param, std::nullopt);
  EXPECT_EQ(e.code, "400");
  // ...and it serialises as a string.
  auto d = parse(error_json(e));
  ASSERT_TRUE(d["error"]["code"].IsString());
  EXPECT_STREQ(d["error"]["code"].GetString(), "400");
}

TEST(NormalizeBackendErrorTest, TgiFlatError) {
  auto e = normalize_backend_error(503, R"({"error":"Model is overloaded","error_type":"overloaded"})");
  EXPECT_EQ(e.status, 503);
  EXPECT_EQ(e.message, "Model is overloaded");
  EXPECT_EQ(e.code, "overloaded");
  EXPECT_EQ(e.param, std::nullopt);
  auto d = parse(error_json(e));
  EXPECT_STREQ(d["error"]["type"].GetString(), "server_error");
  EXPECT_STREQ(d["error"]["message"].GetString(), "Model is overloaded");
}

TEST(NormalizeBackendErrorTest, TopLevelMessage) {
  auto e = normalize_backend_error(502, R"({"message":"upstream unavailable","type":"gateway"})");
  EXPECT_EQ(e.message, "upstream unavailable");
  EXPECT_EQ(e.type, "gateway");
}

TEST(NormalizeBackendErrorTest, FastApiDetail) {
  auto e = normalize_backend_error(404, R"({"detail":"Not Found"})");
  EXPECT_EQ(e.message, "Not Found");
}

TEST(NormalizeBackendErrorTest, PlainTextBecomesTheMessage) {
  auto e = normalize_backend_error(502, "upstream connect error or disconnect/reset before headers");
  EXPECT_EQ(e.status, 502);
  EXPECT_EQ(e.message, "upstream connect error or disconnect/reset before headers");
  EXPECT_EQ(e.param, std::nullopt);
  EXPECT_EQ(e.code, std::nullopt);
  // A valid JSON error document is always produced from it.
  auto d = parse(error_json(e));
  EXPECT_STREQ(d["error"]["type"].GetString(), "server_error");
}

TEST(NormalizeBackendErrorTest, LongPlainTextIsCut) {
  std::string body(5000, 'x');
  auto e = normalize_backend_error(500, body);
  EXPECT_EQ(e.message, std::string(512, 'x'));
}

// Found by fuzzing (tests/fuzz/corpus/fuzz_dialect/err_cut_in_utf8.txt): the cut at 512 bytes could split a
// character, and the error sent to the client was then not valid UTF-8.
TEST(NormalizeBackendErrorTest, LongTextIsCutBetweenCharacters) {
  std::string body = std::string(511, 'x') + "\u00e9\u00e9";  // é is 2 bytes: the 512th is its first
  auto e = normalize_backend_error(500, body);
  EXPECT_EQ(e.message, std::string(511, 'x'));
  std::string euro = std::string(510, 'x') + "\u20ac";  // 3 bytes: 510, 511, 512
  EXPECT_EQ(normalize_backend_error(500, euro).message, std::string(510, 'x'));
  std::string fits = std::string(509, 'x') + "\u20ac";  // ends exactly at 512
  EXPECT_EQ(normalize_backend_error(500, fits + "y").message, fits);
}

TEST(NormalizeBackendErrorTest, EmptyBodyMentionsTheStatus) {
  auto e = normalize_backend_error(502, "");
  EXPECT_EQ(e.status, 502);
  EXPECT_FALSE(e.message.empty());
  EXPECT_NE(e.message.find("502"), std::string::npos) << e.message;
  // A JSON body without a message says what status came back, not "{}".
  EXPECT_EQ(normalize_backend_error(503, "{}").message, "the backend answered with HTTP status 503");
  // Text that is not JSON is passed on as it is.
  EXPECT_EQ(normalize_backend_error(503, "upstream overloaded").message, "upstream overloaded");
}

}  // namespace
}  // namespace sluice::openai
