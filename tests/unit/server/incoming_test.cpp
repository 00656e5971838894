// IncomingParser reads a plain head in one pass and hands anything else to Beast's parser. Held here to Beast's
// outcome on every request: the same error, the same bytes consumed, the same request line, kept fields,
// keep-alive and body, over plain requests, their variants, and tens of thousands of random mutations of them.
#include "server/incoming.hpp"

#include <gtest/gtest.h>

#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cctype>
#include <random>
#include <string>
#include <vector>

#include "incoming_drive.hpp"

namespace sluice {
namespace {

using namespace incoming_drive;

const std::string kBody = R"({"model":"m","messages":[{"role":"user","content":"hi"}]})";

std::string chat(std::string extra = "", std::string version = "1.1") {
  return "POST /v1/chat/completions HTTP/" + version +
         "\r\nHost: gw\r\nContent-Type: application/json\r\nAuthorization: Bearer sk-one\r\n" + extra +
         "Content-Length: " + std::to_string(kBody.size()) + "\r\n\r\n" + kBody;
}

TEST(IncomingParser, ReadsAPlainRequestInOnePass) {
  IncomingParser p;
  const auto out = drive(p, chat("X-Request-Id: abc\r\nx-api-key: k2\r\nCache-Control: no-cache\r\n"), {}, 8192,
                         1 << 20);
  ASSERT_FALSE(out.ec) << out;
  EXPECT_TRUE(out.done);
  EXPECT_FALSE(out.by_beast);
  const auto& r = p.get();
  EXPECT_EQ(r.method(), http::verb::post);
  EXPECT_EQ(r.method_string(), "POST");
  EXPECT_EQ(r.target(), "/v1/chat/completions");
  EXPECT_EQ(r.version(), 11u);
  EXPECT_TRUE(r.keep_alive());
  EXPECT_EQ(r[Field::authorization], "Bearer sk-one");
  EXPECT_EQ(r[Field::x_api_key], "k2");
  EXPECT_EQ(r[Field::x_request_id], "abc");
  EXPECT_EQ(r[Field::cache_control], "no-cache");
  EXPECT_EQ(r[Field::expect], "");
  EXPECT_EQ(r.body(), kBody);
  EXPECT_EQ(out, run(chat("X-Request-Id: abc\r\nx-api-key: k2\r\nCache-Control: no-cache\r\n"), {}, true));
}

TEST(IncomingParser, TheFirstOfARepeatedFieldCountsAsWithBeastsLookup) {
  const std::string c = chat("Authorization: Bearer sk-two\r\nx-api-key: a\r\nX-API-KEY: b\r\n");
  for (bool beast_only : {false, true}) {
    IncomingParser p;
    if (beast_only) p.use_beast_only();
    ASSERT_FALSE(drive(p, c, {}, 8192, 1 << 20).ec);
    EXPECT_EQ(p.by_beast(), beast_only);
    EXPECT_EQ(p.get()[Field::authorization], "Bearer sk-one");
    EXPECT_EQ(p.get()[Field::x_api_key], "a");
  }
  // And with Beast's own request type.
  http::request_parser<http::string_body> beast;
  error_code ec;
  beast.eager(true);
  beast.put(boost::asio::buffer(c), ec);
  ASSERT_FALSE(ec);
  EXPECT_EQ(beast.get()[http::field::authorization], "Bearer sk-one");
  EXPECT_EQ(beast.get()["x-api-key"], "a");
}

TEST(IncomingParser, AChunkedBodysTrailerFieldsAreNotTheHeads) {
  // Credentials (or a request id) in a trailer count for nothing: only the head's fields are read.
  const std::string c =
      "POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-Request-Id: head\r\n\r\n"
      "2\r\n{}\r\n0\r\nAuthorization: Bearer sk-trailer\r\nx-api-key: k\r\nX-Request-Id: trailer\r\n\r\n";
  IncomingParser p;
  const auto out = drive(p, c, {}, 8192, 1 << 20);
  ASSERT_FALSE(out.ec) << out;
  EXPECT_TRUE(out.done);
  EXPECT_EQ(p.get().body(), "{}");
  EXPECT_EQ(p.get()[Field::authorization], "");
  EXPECT_EQ(p.get()[Field::x_api_key], "");
  EXPECT_EQ(p.get()[Field::x_request_id], "head");
}

TEST(IncomingParser, AHeadThatArrivesInPiecesGoesToBeast) {
  IncomingParser p;
  const auto out = drive(p, chat(), {10}, 8192, 1 << 20);
  ASSERT_FALSE(out.ec) << out;
  EXPECT_TRUE(out.by_beast);
  EXPECT_EQ(p.get()[Field::authorization], "Bearer sk-one");
  EXPECT_EQ(p.get().body(), kBody);
  // A body that arrives in pieces after a whole head is still read in one pass.
  IncomingParser q;
  const auto split = chat();
  EXPECT_EQ(drive(q, split, {split.size() - 7, 3}, 8192, 1 << 20), out);
  EXPECT_FALSE(q.by_beast());
}

TEST(IncomingParser, AgreesWithBeastOnEachVariant) {
  const std::vector<std::string> cases = {
      chat(),
      chat("", "1.0"),
      chat("Connection: keep-alive\r\n", "1.0"),
      chat("Connection: close\r\n"),
      chat("Connection: Keep-Alive, CLOSE\r\n"),
      chat("Connection: keep-alive ,  te\r\n"),
      chat("Connection: upgrade\r\nUpgrade: websocket\r\n"),
      chat("Connection: ,close\r\n"),
      chat("Connection: close,\r\n"),
      chat("Proxy-Connection: close\r\n"),
      chat("Authorization: Bearer sk-two\r\n"),  // the first counts
      chat("AUTHORIZATION:Bearer sk-two\r\nX-API-KEY:\tk \t\r\n"),
      chat("x-api-key: a\r\nX-Api-Key: b\r\n"),
      chat("Expect: 100-continue\r\n"),
      chat("X-Empty:\r\nX-Spaces:    \r\n"),
      chat("Content-Length: 5\r\n"),
      chat("Content-Length: 0\r\n"),
      chat("Transfer-Encoding: chunked\r\n"),
      chat("X-Folded: a\r\n b\r\n"),
      chat("Bad Name: x\r\n"),
      chat("Name : x\r\n"),
      chat("X-Ctl: a\x01" "b\r\n"),
      chat("X-Del: a\x7f" "b\r\n"),
      chat("X-Utf8: caf\xc3\xa9\r\n"),
      chat("X-Bare: lf\nX-Other: y\r\n"),
      "GET /v1/models HTTP/1.1\r\nHost: gw\r\n\r\n",
      "GET /v1/models HTTP/1.1\r\n\r\n",
      "GET /v1/models HTTP/1.1\r\n\r\nGET /v1/models HTTP/1.1\r\n\r\n",  // pipelined: the first alone
      chat() + "POST /next HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
      "POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
      "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 01\r\n\r\nx",
      "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc",
      "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
      "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
      "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: -3\r\n\r\nabc",
      "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\nabc",
      "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort",
      "BREW /pot HTTP/1.1\r\n\r\n",
      "post /v1/chat/completions HTTP/1.1\r\n\r\n",
      "POST  /v1/chat/completions HTTP/1.1\r\n\r\n",
      "POST /v1/chat/completions  HTTP/1.1\r\n\r\n",
      "POST /v1/chat/completions HTTP/2.0\r\n\r\n",
      "POST /v1/chat/completions HTTP/1.1 \r\n\r\n",
      "POST /v1/\x80 HTTP/1.1\r\n\r\n",
      "POST  HTTP/1.1\r\n\r\n",
      "\r\nGET / HTTP/1.1\r\n\r\n",
      "GET / HTTP/1.1\r\n\r",
      "GET / HTTP/1.1\n\n",
      "",
  };
  for (const auto& c : cases) {
    for (std::vector<std::size_t> pieces : {std::vector<std::size_t>{}, {1}, {20, 1, 1000}, {c.size() / 2}}) {
      const auto mine = run(c, pieces);
      const auto beast = run(c, pieces, true);
      EXPECT_EQ(mine, beast) << "request: " << c << "\nmine:  " << mine << "\nbeast: " << beast;
    }
  }
  // And with what the gateway read before: Beast's own request type, where the two can agree (a message's
  // keep_alive() reads only its first Connection field; the parser, and so the gateway now, reads them all).
  for (const auto& c : cases) {
    const auto mine = run(c);
    http::request_parser<http::string_body> beast;
    beast.eager(true);
    error_code ec;
    const std::size_t used = beast.put(boost::asio::buffer(c), ec);
    if (ec || !beast.is_done()) {
      EXPECT_FALSE(mine.done && !mine.ec) << c;
      continue;
    }
    ASSERT_TRUE(mine.done && !mine.ec) << c << "\n" << mine;
    EXPECT_EQ(mine.consumed, used) << c;
    IncomingParser p;
    drive(p, c, {}, 8192, 1 << 20);
    const auto& m = beast.get();
    EXPECT_EQ(p.get().method(), m.method()) << c;
    EXPECT_EQ(p.get().method_string(), m.method_string()) << c;
    EXPECT_EQ(p.get().target(), m.target()) << c;
    EXPECT_EQ(p.get().version(), m.version()) << c;
    EXPECT_EQ(p.get().body(), m.body()) << c;
    EXPECT_EQ(p.get()[Field::authorization], m[http::field::authorization]) << c;
    EXPECT_EQ(p.get()[Field::cache_control], m[http::field::cache_control]) << c;
    EXPECT_EQ(p.get()[Field::expect], m[http::field::expect]) << c;
    EXPECT_EQ(p.get()[Field::x_api_key], m["x-api-key"]) << c;
    EXPECT_EQ(p.get()[Field::x_request_id], m["X-Request-Id"]) << c;
    if (m.count(http::field::connection) <= 1 && m.count(http::field::proxy_connection) == 0) {
      EXPECT_EQ(p.get().keep_alive(), m.keep_alive()) << c;
    }
  }
  // The plain ones are read in one pass (else this test would compare Beast with itself).
  for (const auto& c : {chat(), chat("", "1.0"), chat("Connection: Keep-Alive, CLOSE\r\n"),
                        chat("AUTHORIZATION:Bearer sk-two\r\nX-API-KEY:\tk \t\r\n"),
                        std::string("GET /v1/models HTTP/1.1\r\n\r\n")})
    EXPECT_FALSE(run(c).by_beast) << c;
}

TEST(IncomingParser, HonoursTheLimitsAsBeastDoes) {
  const std::string c = chat("X-Pad: " + std::string(300, 'p') + "\r\n");
  const auto head = static_cast<std::uint32_t>(c.find("\r\n\r\n") + 4);
  for (std::uint32_t header_limit : {64u, 200u, head - 1, head, head + 1, 8192u})
    for (std::uint64_t body_limit : {0u, 10u, 57u, 58u, 1000u}) {
      const auto mine = run(c, {}, false, header_limit, body_limit);
      const auto beast = run(c, {}, true, header_limit, body_limit);
      EXPECT_EQ(mine, beast) << header_limit << " " << body_limit << "\nmine:  " << mine << "\nbeast: " << beast;
    }
  EXPECT_FALSE(run(c, {}, false, head, 1000).by_beast);  // a head exactly at the limit is read in one pass
  EXPECT_FALSE(run(c, {}, false, head, kBody.size()).by_beast);
  EXPECT_EQ(run(c, {}, false, 8192, 10).ec, http::error::body_limit);
  EXPECT_EQ(run(c, {}, false, 200, 1000).ec, http::error::header_limit);
}

// Random mutations of plain requests: a byte replaced, inserted or removed, a line repeated, a name's case
// changed, arriving in random pieces under random limits. Each outcome is Beast's.
TEST(IncomingParser, AgreesWithBeastOnRandomMutations) {
  const std::vector<std::string> bases = {
      chat(),
      chat("X-Request-Id: r-1\r\nx-api-key: k\r\nConnection: keep-alive\r\n", "1.0"),
      chat("Cache-Control: no-store\r\nExpect: 100-continue\r\nConnection: close\r\n"),
      "GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer x\r\n\r\n",
      "POST /v1/embeddings HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
  };
  static constexpr char kAlphabet[] = "\r\n \t:,;0123456789aAzZ-\x7f\x80\xff";
  const std::string alphabet = std::string(kAlphabet, sizeof kAlphabet - 1) + std::string(1, '\0');
  std::mt19937 rng(20261125);
  auto pick = [&](std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng); };
  int one_pass = 0, mismatches = 0;
  const int kTrials = 30000;
  for (int trial = 0; trial < kTrials; ++trial) {
    std::string s = bases[pick(bases.size())];
    const std::size_t edits = pick(4);
    for (std::size_t e = 0; e < edits && !s.empty(); ++e) {
      const std::size_t at = pick(s.size());
      switch (pick(5)) {
        case 0:
          s[at] = alphabet[pick(alphabet.size())];
          break;
        case 1:
          s.insert(at, 1, alphabet[pick(alphabet.size())]);
          break;
        case 2:
          s.erase(at, 1);
          break;
        case 3: {  // repeat the line `at` is on
          const auto from = s.rfind('\n', at);
          const auto to = s.find('\n', at);
          const std::size_t b = from == std::string::npos ? 0 : from + 1;
          if (to != std::string::npos) s.insert(b, s.substr(b, to + 1 - b));
          break;
        }
        default:
          s[at] = static_cast<char>(std::isupper(static_cast<unsigned char>(s[at]))
                                        ? std::tolower(static_cast<unsigned char>(s[at]))
                                        : std::toupper(static_cast<unsigned char>(s[at])));
      }
    }
    std::vector<std::size_t> pieces;
    if (pick(3) == 0)
      for (int i = 0; i < 4; ++i) pieces.push_back(1 + pick(s.size() + 1));
    const std::uint32_t header_limit = pick(4) == 0 ? static_cast<std::uint32_t>(40 + pick(200)) : 8192;
    const std::uint64_t body_limit = pick(4) == 0 ? pick(80) : 1 << 20;
    const auto mine = run(s, pieces, false, header_limit, body_limit);
    const auto beast = run(s, pieces, true, header_limit, body_limit);
    if (!mine.by_beast) ++one_pass;
    if (!(mine == beast) && ++mismatches <= 5)
      ADD_FAILURE() << "request: " << testing::PrintToString(s) << "\nmine:  " << mine << "\nbeast: " << beast;
  }
  EXPECT_EQ(mismatches, 0);
  // Enough of them were read in one pass for the comparison to mean something.
  EXPECT_GT(one_pass, kTrials / 5);
}

}  // namespace
}  // namespace sluice
