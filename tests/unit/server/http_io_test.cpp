// Sluice writes its busiest heads itself (WireHead, wire_head): byte for byte what Beast's serializer writes.
#include "server/http_io.hpp"

#include <gtest/gtest.h>

#include <set>

#include <sstream>

namespace sluice {
namespace {

template <bool IsRequest>
std::string beast_head(const http::header<IsRequest>& h) {
  std::ostringstream os;
  os << h;
  return os.str();
}

TEST(WireHead, ResponseMatchesBeastForEachVersionAndConnection) {
  for (unsigned version : {10u, 11u})
    for (bool keep_alive : {false, true}) {
      StringResponse res{http::status::ok, version};
      res.set(http::field::server, "sluice");
      res.set(http::field::content_type, "application/json");
      res.set("x-request-id", "req_0123");
      res.set("x-ratelimit-remaining-requests", "59");
      res.keep_alive(keep_alive);
      res.body() = R"({"ok":true})";
      res.prepare_payload();

      auto mine = WireHead::response(version, 200);
      mine.field("Server", "sluice")
          .field("Content-Type", "application/json")
          .field("x-request-id", "req_0123")
          .field("x-ratelimit-remaining-requests", "59")
          .connection(version, keep_alive);
      EXPECT_EQ(mine.finish(res.body().size()), beast_head(res.base())) << version << " " << keep_alive;
      EXPECT_EQ(wire_head(res), beast_head(res.base())) << version << " " << keep_alive;
    }
}

TEST(WireHead, ErrorStatusesCarryTheirReasonPhrase) {
  for (auto status : {http::status::too_many_requests, http::status::bad_gateway, http::status::not_found,
                      http::status::payload_too_large}) {
    auto res = error_response({static_cast<int>(status), "no", "invalid_request_error", std::nullopt, std::nullopt},
                              11, true);
    EXPECT_EQ(wire_head(res), beast_head(res.base()));
    auto mine = WireHead::response(11, static_cast<unsigned>(status)).finish(std::nullopt);
    EXPECT_EQ(mine.substr(0, mine.find("\r\n")), "HTTP/1.1 " + std::to_string(static_cast<unsigned>(status)) + " " +
                                                     std::string(http::obsolete_reason(status)));
  }
}

TEST(WireHead, ChunkedStreamHeadEndsWithTransferEncoding) {
  http::response<http::empty_body> res{http::status::ok, 11};
  res.set(http::field::content_type, "text/event-stream");
  res.chunked(true);
  auto mine = WireHead::response(11, 200);
  mine.field("Content-Type", "text/event-stream").connection(11, true).field("Transfer-Encoding", "chunked");
  EXPECT_EQ(mine.finish(std::nullopt), beast_head(res.base()));
}

TEST(WireHead, RequestMatchesBeast) {
  StringRequest req{http::verb::post, "/v1/chat/completions", 11};
  req.set(http::field::host, "gpu-1:8000");
  req.set(http::field::accept_encoding, "identity");
  req.set("x-request-id", "req_1");
  req.keep_alive(true);
  req.body() = "{}";
  req.prepare_payload();
  auto mine = WireHead::request("POST", "/v1/chat/completions");
  mine.field("Host", "gpu-1:8000").field("Accept-Encoding", "identity").field("x-request-id", "req_1");
  EXPECT_EQ(mine.finish(2), beast_head(req.base()));
}

// The headers Sluice adds to an answer (rate limits, cache) are kept as wire lines and read back as pairs.
TEST(ExtraHeaders, KeepsWireLinesAndGivesThemBackAsPairs) {
  ExtraHeaders extra;
  EXPECT_TRUE(extra.empty());
  extra.add("x-ratelimit-limit-requests", std::uint64_t{600}).add("x-ratelimit-reset-requests", "6m0s");
  const auto mark = extra.mark();
  extra.add("x-sluice-coalesced", "true").add("age", std::uint64_t{0});
  EXPECT_EQ(extra.wire(),
            "x-ratelimit-limit-requests: 600\r\nx-ratelimit-reset-requests: 6m0s\r\n"
            "x-sluice-coalesced: true\r\nage: 0\r\n");
  std::vector<std::pair<std::string, std::string>> seen;
  extra.each([&](std::string_view name, std::string_view value) { seen.emplace_back(name, value); });
  const std::vector<std::pair<std::string, std::string>> want{{"x-ratelimit-limit-requests", "600"},
                                                              {"x-ratelimit-reset-requests", "6m0s"},
                                                              {"x-sluice-coalesced", "true"},
                                                              {"age", "0"}};
  EXPECT_EQ(seen, want);
  extra.rewind(mark);  // a follower whose leader failed asks on its own: no longer coalesced
  EXPECT_EQ(extra.wire(), "x-ratelimit-limit-requests: 600\r\nx-ratelimit-reset-requests: 6m0s\r\n");
  extra.add("x-ratelimit-remaining-tokens", std::uint64_t{18446744073709551615u});
  EXPECT_NE(extra.wire().find("x-ratelimit-remaining-tokens: 18446744073709551615\r\n"), std::string_view::npos);
}

// The relay's and the cache's answer head, with the extra lines, is what Beast would write for the same fields.
TEST(WireHead, AnswerHeadMatchesBeastForEachShape) {
  ExtraHeaders extra;
  extra.add("x-ratelimit-limit-requests", std::uint64_t{60}).add("x-sluice-cache", "miss");
  for (unsigned version : {10u, 11u})
    for (bool keep_alive : {false, true})
      for (bool sse : {false, true})
        for (bool whole : {false, true})
          for (const ExtraHeaders* with : std::initializer_list<const ExtraHeaders*>{nullptr, &extra}) {
            const std::optional<std::size_t> length = whole ? std::optional<std::size_t>(42) : std::nullopt;
            http::response<http::empty_body> res{http::status::ok, version};
            res.set(http::field::server, "sluice");
            res.set(http::field::content_type, sse ? "text/event-stream" : "application/json");
            if (sse) res.set(http::field::cache_control, "no-cache");
            if (!whole) res.set("x-accel-buffering", "no");
            res.set("x-request-id", "req_1");
            res.set("x-sluice-overhead-ms", "0.125");
            if (with) with->each([&res](std::string_view name, std::string_view value) { res.set(name, value); });
            const bool chunked = !whole && version >= 11;
            res.keep_alive(keep_alive && (whole || chunked));
            if (chunked) res.set(http::field::transfer_encoding, "chunked");
            if (whole) res.content_length(42);
            EXPECT_EQ(answer_head(version, keep_alive, sse, "req_1", "0.125", with, length), beast_head(res.base()))
                << version << keep_alive << sse << whole << (with != nullptr);
          }
}

// Two answer heads written out in full, so the shape logic is checked against text, not only against itself.
TEST(WireHead, AnswerHeadsInFull) {
  ExtraHeaders extra;
  extra.add("x-ratelimit-limit-requests", std::uint64_t{60}).add("x-sluice-cache", "miss");
  EXPECT_EQ(answer_head(10, true, true, "req_1", "0.125", &extra, std::nullopt),
            "HTTP/1.0 200 OK\r\nServer: sluice\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            "x-accel-buffering: no\r\nx-request-id: req_1\r\nx-sluice-overhead-ms: 0.125\r\n"
            "x-ratelimit-limit-requests: 60\r\nx-sluice-cache: miss\r\n\r\n");  // an HTTP/1.0 stream ends with the close
  EXPECT_EQ(answer_head(11, false, true, "req_2", "1.000", nullptr, std::nullopt),
            "HTTP/1.1 200 OK\r\nServer: sluice\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            "x-accel-buffering: no\r\nx-request-id: req_2\r\nx-sluice-overhead-ms: 1.000\r\nConnection: close\r\n"
            "Transfer-Encoding: chunked\r\n\r\n");
  EXPECT_EQ(answer_head(11, true, false, "req_3", "0.010", &extra, 42),
            "HTTP/1.1 200 OK\r\nServer: sluice\r\nContent-Type: application/json\r\nx-request-id: req_3\r\n"
            "x-sluice-overhead-ms: 0.010\r\nx-ratelimit-limit-requests: 60\r\nx-sluice-cache: miss\r\n"
            "Content-Length: 42\r\n\r\n");
}

// Request ids: "req_" and 24 lowercase hex digits (96 random bits), drawn in batches: none repeats across them.
TEST(RequestId, IsReqAndTwentyFourHexDigitsAndDoesNotRepeat) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    const std::string id = new_request_id();
    ASSERT_EQ(id.size(), 28u) << id;
    EXPECT_EQ(id.substr(0, 4), "req_") << id;
    EXPECT_EQ(id.find_first_not_of("0123456789abcdef", 4), std::string::npos) << id;
    EXPECT_TRUE(seen.insert(id).second) << id;
  }
}

}  // namespace
}  // namespace sluice
