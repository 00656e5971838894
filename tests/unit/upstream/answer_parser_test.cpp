// AnswerParser against Beast's response_parser<buffer_body>, which the relay used before: fed the same answers
// the same way (reads of a few bytes, a small body buffer that is emptied when it fills), both give the same
// status, framing, keep-alive, kept fields, body bytes and errors. A chunked answer's trailer is not its head.
#include "upstream/answer_parser.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "answer_drive.hpp"

namespace sluice::upstream {
namespace {

using answer_drive::beasts;
using answer_drive::mine;
using answer_drive::Read;

constexpr std::size_t kPlain = 20;  // the first kPlain answers below are in the plain form
const std::vector<std::string> kAnswers = {
    // The plain forms the one-pass read takes.
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}",
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    "7\r\ndata: 1\r\n8\r\n\n\ndata: \r\n6\r\n[DONE]\r\n0\r\n\r\n",
    "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nRetry-After: 9\r\nContent-Length: 2\r\n\r\n{}",
    "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc",
    "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
    "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
    "HTTP/1.1 304 Not Modified\r\n\r\n",
    "HTTP/1.1 100 Continue\r\n\r\n",
    "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"until\":\"close\"}",
    "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}",
    "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbody",
    "HTTP/1.1 200 OK\r\nConnection: Keep-Alive, x-other\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcEXTRA",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nRetry-After: 99\r\nContent-Type: x\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",
    "HTTP/1.1 200 \r\nServer: uvicorn\r\ndate: Tue, 24 Nov 2026 10:00:00 GMT\r\ncontent-length: 2\r\n"
    "content-type:application/json \t\r\nx-empty:\r\n\r\n{}",
    "HTTP/1.1 503 Service Unavailable\r\nRetry-After:\t30\r\nContent-Length: 0\r\n\r\n",
    // Forms it hands to Beast's parser, which refuses or reads them as before.
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n{}",
    "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\n{}",
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    // (With a data chunk first: Beast 1.81 asserts, in a build with assertions, on a body that is only the last
    // chunk fed a byte at a time, though it reads it.)
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nabc",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    "HTTP/1.1 200 OK\r\nProxy-Connection: close\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Type: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 200 \xc3\xa9t\xc3\xa9\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nX-Bad: \x01\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nX Bad: 1\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nX-Bad : 1\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 2000 OK\r\n\r\n",
    "HTTP/1.1 20x OK\r\n\r\n",
    "HTTP/2.0 200 OK\r\n\r\n",
    "HTTP/1.1  200 OK\r\n\r\n",
    "http/1.1 200 OK\r\n\r\n",
    "HTTP/1.1 200 OK\r\n: empty-name\r\n\r\n",
    "garbage\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",
};

TEST(AnswerParser, ReadsEveryAnswerAsBeastsBufferBodyParser) {
  for (const auto& a : kAnswers)
    for (std::size_t piece : {std::size_t{1}, std::size_t{5}, a.size()})
      for (std::size_t room : {std::size_t{1}, std::size_t{4}, std::size_t{4096}}) {
        const auto m = mine(a, piece, room);
        const auto b = beasts(a, piece, room);
        // A trailer field is not the head's: AnswerParser keeps none, Beast's message holds them.
        if (a.find("0\r\nRetry-After") != std::string::npos) {
          EXPECT_EQ(m.retry_after, "") << a;
          EXPECT_EQ(m.content_type, "") << a;
          auto bb = b;
          bb.retry_after = bb.content_type = "";
          EXPECT_EQ(m, bb) << a << "\n" << m << "\n" << bb;
          continue;
        }
        EXPECT_EQ(m, b) << a << " piece " << piece << " room " << room << "\nmine:  " << m << "\nbeast: " << b;
      }
  EXPECT_EQ(mine(kAnswers[2], 3, 2).retry_after, "7");  // the first counts
  EXPECT_EQ(mine(kAnswers[1], 3, 2).body, "data: 1\n\ndata: [DONE]");
}

// The plain heads are read in one pass when they come whole (the usual case: one read brings the head), and
// everything else goes to Beast's parser, so every refusal above is Beast's own.
TEST(AnswerParser, ReadsThePlainFormsInOnePassAndLeavesTheRestToBeast) {
  std::size_t one_pass = 0;
  for (std::size_t i = 0; i < kAnswers.size(); ++i) {
    const auto& a = kAnswers[i];
    const auto whole = mine(a, a.size(), 4096);
    const bool plain = i < kPlain;
    EXPECT_EQ(whole.by_beast, !plain) << a << "\n" << whole;
    one_pass += !whole.by_beast;
    // A head split over reads goes to Beast's parser from its first byte.
    if (a.size() > 8) {
      EXPECT_TRUE(mine(a, 5, 4096).by_beast) << a;
    }
    // The reference mode reads everything with Beast's parser, to the same outcome.
    EXPECT_EQ(mine(a, a.size(), 4096, true), whole) << a;
    EXPECT_TRUE(mine(a, a.size(), 4096, true).by_beast) << a;
  }
  EXPECT_EQ(one_pass, kPlain);
}

TEST(AnswerParser, FramesTheBodyAfterAOnePassHead) {
  // By length: the bytes after it are not the body's.
  const auto by_length = mine("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcEXTRA", 64, 4096);
  EXPECT_FALSE(by_length.by_beast);
  EXPECT_EQ(by_length.body, "abc");
  EXPECT_TRUE(by_length.done);
  EXPECT_TRUE(by_length.keep_alive);
  EXPECT_EQ(by_length.content_length, 3u);
  // By chunks, every chunk in one put; trailers dropped.
  const auto chunks =
      mine("HTTP/1.1 200 OK\r\nTransfer-Encoding: CHUNKED\r\n\r\n1\r\na\r\n2;x=y\r\nbc\r\n0\r\nT: v\r\n\r\n", 128, 4096);
  EXPECT_FALSE(chunks.by_beast);
  EXPECT_EQ(chunks.body, "abc");
  EXPECT_TRUE(chunks.done && chunks.chunked && chunks.keep_alive);
  // To the connection's end, which then cannot be kept.
  const auto to_eof = mine("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it", 128, 4096);
  EXPECT_FALSE(to_eof.by_beast);
  EXPECT_EQ(to_eof.body, "all of it");
  EXPECT_TRUE(to_eof.done);
  EXPECT_FALSE(to_eof.keep_alive);
  EXPECT_EQ(to_eof.ec, boost::beast::http::error::end_of_stream) << to_eof;  // (the drive's mark of the end)
  // Cut short: Beast's error.
  EXPECT_EQ(mine("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", 128, 4096).ec,
            boost::beast::http::error::partial_message);
}

TEST(AnswerParser, APutAfterTheEndIsRefusedAsBeastRefusesIt) {
  AnswerParser p;
  const std::string wire = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
  boost::system::error_code ec;
  char room[8];
  p.get().body() = {room, sizeof room};
  auto used = p.put(boost::asio::buffer(wire), ec);
  ASSERT_FALSE(ec);
  ASSERT_FALSE(p.by_beast());
  ASSERT_EQ(used, wire.size() - 2);
  used = p.put(boost::asio::buffer(wire.data() + used, 2), ec);
  ASSERT_FALSE(ec);
  ASSERT_TRUE(p.is_done());
  EXPECT_EQ(p.put(boost::asio::buffer(wire.data(), 1), ec), 0u);
  EXPECT_EQ(ec, boost::beast::http::error::stale_parser);
}

}  // namespace
}  // namespace sluice::upstream
