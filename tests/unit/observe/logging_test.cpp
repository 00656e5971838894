// The access line: one JSON object per request, whatever its strings hold.
#include "observe/logging.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <cmath>

namespace sluice::observe {
namespace {

TEST(AccessJson, IsOneJsonObjectWithEveryFieldAndEscapedStrings) {
  AccessRecord r;
  r.request_id = "req_1";
  r.method = "POST";
  const std::string path = std::string("/v1/\"odd\\path\n\t\x01") + "\xc3\xa9";
  r.path = path;
  r.client = "127.0.0.1:5000";
  r.model = "m";
  r.backend = "b";
  r.key = "team-a";
  r.status = 200;
  r.stream = true;
  r.bytes_in = 123;
  r.bytes_out = 18446744073709551615ull;
  r.prompt_tokens = 12;
  r.completion_tokens = 0;
  r.usage_estimated = true;
  r.attempts = 2;
  r.backend_tokens_per_second = 55.25;
  r.ttfb_ms = 1.23456;
  r.ttft_ms = 0.0004;
  r.tpot_ms = std::nan("");
  r.overhead_ms = 0.0716;
  r.duration_ms = 1234.5678;
  r.error = "client_disconnected";
  r.rate_limit = "tpm";
  const auto line = access_json(r);
  rapidjson::Document d;
  d.Parse(line.data(), line.size());
  ASSERT_FALSE(d.HasParseError()) << line;
  ASSERT_TRUE(d.IsObject());
  EXPECT_STREQ(d["type"].GetString(), "access");
  EXPECT_EQ(std::string(d["path"].GetString(), d["path"].GetStringLength()), r.path);
  EXPECT_EQ(d["status"].GetInt(), 200);
  EXPECT_TRUE(d["stream"].GetBool());
  EXPECT_EQ(d["bytes_out"].GetUint64(), 18446744073709551615ull);
  EXPECT_EQ(d["completion_tokens"].GetUint64(), 0u);
  EXPECT_TRUE(d["usage_estimated"].GetBool());
  EXPECT_EQ(d["attempts"].GetInt(), 2);
  EXPECT_DOUBLE_EQ(d["backend_tokens_per_second"].GetDouble(), 55.25);
  EXPECT_DOUBLE_EQ(d["ttfb_ms"].GetDouble(), 1.235);  // milliseconds to the microsecond
  EXPECT_DOUBLE_EQ(d["ttft_ms"].GetDouble(), 0.0);
  EXPECT_TRUE(d["tpot_ms"].IsNull());  // not a number: null, never invalid JSON
  EXPECT_DOUBLE_EQ(d["overhead_ms"].GetDouble(), 0.072);
  EXPECT_DOUBLE_EQ(d["duration_ms"].GetDouble(), 1234.568);
  EXPECT_STREQ(d["error"].GetString(), "client_disconnected");
  EXPECT_STREQ(d["rate_limit"].GetString(), "tpm");
}

TEST(AccessJson, LeavesOutWhatARequestDidNotHave) {
  AccessRecord r;
  r.request_id = "req_2";
  r.method = "GET";
  r.path = "/v1/models";
  r.client = "[::1]:1";
  r.status = 404;
  const auto line = access_json(r);
  rapidjson::Document d;
  d.Parse(line.data(), line.size());
  ASSERT_FALSE(d.HasParseError()) << line;
  for (const char* absent : {"model", "backend", "key", "prompt_tokens", "completion_tokens", "usage_estimated",
                             "attempts", "ttfb_ms", "ttft_ms", "tpot_ms", "overhead_ms", "error", "rate_limit"})
    EXPECT_FALSE(d.HasMember(absent)) << absent;
  EXPECT_EQ(d["status"].GetInt(), 404);
  EXPECT_FALSE(d["stream"].GetBool());
}

}  // namespace
}  // namespace sluice::observe
