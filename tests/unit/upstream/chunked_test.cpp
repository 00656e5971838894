// ChunkedBody decodes what Beast's chunked parser decodes, fed in any pieces into any body buffer, and refuses
// framing that is not chunked encoding.
#include "upstream/chunked.hpp"

#include <gtest/gtest.h>

#include <boost/beast/http.hpp>
#include <random>
#include <string>

namespace sluice::upstream {
namespace {

namespace http = boost::beast::http;
using boost::system::error_code;

struct Decoded {
  std::string body;
  std::string left;  // what was not taken once done: the next message's bytes on a kept connection
  bool done = false;
  bool failed = false;
};

// Feeds `wire` to `parser` as the relay does: reads of up to `piece` bytes, each offered until the parser takes
// no more of it, into a body buffer of `room` bytes emptied whenever it fills. For ChunkedBody (`prompt`), also
// checks what makes a reader relay events at once: a call that gave body bytes never asks for more input,
// and one that asks for more has taken all it was given.
template <class Parser>
Decoded feed(Parser& parser, const std::string& wire, std::size_t piece, std::size_t room, bool prompt) {
  Decoded out;
  std::string held;  // bytes read but not yet taken
  std::string buffer(room, '\0');
  std::size_t at = 0;
  for (;;) {
    if (at < wire.size()) {
      const std::size_t n = std::min(piece, wire.size() - at);
      held.append(wire, at, n);
      at += n;
    }
    for (;;) {
      auto& body = parser.get().body();
      body.data = buffer.data();
      body.size = buffer.size();
      error_code ec;
      const std::size_t used = parser.put(boost::asio::buffer(held), ec);
      EXPECT_LE(used, held.size());
      const std::size_t written = buffer.size() - parser.get().body().size;
      if (prompt && ec == http::error::need_more) {
        EXPECT_EQ(written, 0u) << "body bytes held back until more input comes";
        EXPECT_EQ(used, held.size());
      }
      held.erase(0, std::min(used, held.size()));
      out.body.append(buffer.data(), written);
      if (ec && ec != http::error::need_more && ec != http::error::need_buffer) {
        out.failed = true;
        return out;
      }
      if (parser.is_done()) {
        out.done = true;
        out.left = held + wire.substr(at);
        return out;
      }
      if (ec == http::error::need_more || (used == 0 && written == 0) || held.empty()) break;
    }
    if (at == wire.size()) return out;
  }
}

// A decoder that writes into `buffer`.
ChunkedBody decoder_into(std::string& buffer, bool keep_alive = true) {
  ChunkedBody parser(keep_alive);
  parser.body().data = buffer.data();
  parser.body().size = buffer.size();
  return parser;
}

Decoded with_sluice(const std::string& wire, std::size_t piece, std::size_t room) {
  ChunkedBody parser(true);
  return feed(parser, wire, piece, room, true);
}

Decoded with_beast(const std::string& wire, std::size_t piece, std::size_t room) {
  http::response_parser<http::buffer_body> parser;
  parser.body_limit(boost::none);
  const std::string head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  error_code ec;
  parser.put(boost::asio::buffer(head), ec);
  EXPECT_FALSE(ec) << ec.message();
  return feed(parser, wire, piece, room, false);
}

std::string hex(std::size_t n, bool upper) {
  const char* digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  std::string s;
  do {
    s.insert(s.begin(), digits[n % 16]);
    n /= 16;
  } while (n > 0);
  return s;
}

// A chunked body of SSE-like events: random sizes, some with extensions, upper- or lower-case sizes, a few
// leading zeros, trailers sometimes.
std::string random_wire(std::mt19937& rng, std::string& body) {
  std::string wire;
  const int chunks = std::uniform_int_distribution<int>(0, 12)(rng);
  for (int c = 0; c < chunks; ++c) {
    const std::size_t n = std::uniform_int_distribution<std::size_t>(1, 700)(rng);
    std::string data;
    for (std::size_t i = 0; i < n; ++i) data.push_back(static_cast<char>(std::uniform_int_distribution<int>(0, 255)(rng)));
    body += data;
    const int shape = std::uniform_int_distribution<int>(0, 9)(rng);
    wire += (shape == 0 ? "00" : "") + hex(n, shape == 1);
    if (shape == 2) wire += ";name=value";
    if (shape == 3) wire += ";a;b=\"quoted\"";
    wire += "\r\n" + data + "\r\n";
  }
  wire += "0\r\n";
  if (std::uniform_int_distribution<int>(0, 3)(rng) == 0) wire += "X-Trailer: one\r\nX-Other: two\r\n";
  wire += "\r\n";
  if (std::uniform_int_distribution<int>(0, 3)(rng) == 0) wire += "HTTP/1.1 200 OK\r\n";  // the next answer
  return wire;
}

TEST(ChunkedBody, DecodesWhatBeastDecodesInAnyPiecesIntoAnyBuffer) {
  std::mt19937 rng(20261125);
  for (int round = 0; round < 400; ++round) {
    std::string body;
    const std::string wire = random_wire(rng, body);
    const std::size_t piece = std::uniform_int_distribution<std::size_t>(1, 2048)(rng);
    const std::size_t room = std::uniform_int_distribution<std::size_t>(1, 4096)(rng);
    SCOPED_TRACE("round " + std::to_string(round) + ", pieces of " + std::to_string(piece) + ", room " +
                 std::to_string(room));
    const Decoded ours = with_sluice(wire, piece, room);
    const Decoded beast = with_beast(wire, piece, room);
    ASSERT_FALSE(beast.failed);
    ASSERT_TRUE(beast.done);
    EXPECT_FALSE(ours.failed);
    EXPECT_TRUE(ours.done);
    EXPECT_EQ(ours.body, body);
    EXPECT_EQ(beast.body, body);
    EXPECT_EQ(ours.left, beast.left);  // what follows the message stays for the connection's next answer
  }
}

TEST(ChunkedBody, OnePutTakesEveryChunkItHolds) {
  const std::string wire = "5\r\nhello\r\n1\r\n,\r\n6\r\n world\r\n";
  std::string buffer(64, '\0');
  ChunkedBody parser = decoder_into(buffer);
  error_code ec;
  EXPECT_EQ(parser.put(boost::asio::buffer(wire), ec), wire.size());
  EXPECT_FALSE(ec) << ec.message();  // body bytes came: no need_more, so a reader relays them at once
  EXPECT_EQ(buffer.substr(0, 64 - parser.body().size), "hello, world");
  EXPECT_FALSE(parser.is_done());
  // The last chunk alone, in two pieces: no body, so the first piece asks for more.
  EXPECT_EQ(parser.put(boost::asio::buffer(std::string("0\r\n")), ec), 3u);
  EXPECT_EQ(ec, http::error::need_more);
  EXPECT_EQ(parser.put(boost::asio::buffer(std::string("\r\n")), ec), 2u);
  EXPECT_FALSE(ec);
  EXPECT_TRUE(parser.is_done());
  parser.put_eof(ec);
  EXPECT_FALSE(ec);
}

TEST(ChunkedBody, AFullBufferAsksForRoomAndAnEarlyEndIsPartial) {
  ChunkedBody parser(false);
  EXPECT_FALSE(parser.keep_alive());
  error_code ec;
  const std::string wire = "a\r\n0123456789\r\n";
  EXPECT_EQ(parser.put(boost::asio::buffer(wire), ec), 3u);  // no buffer set yet: the size line only
  EXPECT_EQ(ec, http::error::need_buffer);
  std::string buffer(4, '\0');
  parser.body().data = buffer.data();
  parser.body().size = buffer.size();
  EXPECT_EQ(parser.put(boost::asio::buffer(wire.substr(3)), ec), 4u);  // four bytes fit
  EXPECT_EQ(ec, http::error::need_buffer);
  EXPECT_EQ(buffer, "0123");
  parser.put_eof(ec);
  EXPECT_EQ(ec, http::error::partial_message);
}

TEST(ChunkedBody, FramingThatIsNotChunkedIsRefused) {
  for (const std::string& wire : {
           std::string("\r\n"),                       // no size
           std::string("zz\r\n"),                     // not hex
           std::string("5\nhello\r\n"),               // LF alone after the size
           std::string("5\r\nhelloX\r\n"),            // data longer than its size
           std::string("5\r\nhello\r\r"),             // CR CR
           std::string("11111111111111111\r\n"),      // 17 significant hex digits: over 64 bits
           std::string("5;") + std::string(9000, 'e') + "\r\n",  // an endless extension
           std::string("0\r\nX: y\n\r\n"),            // a trailer ended by LF alone
           std::string("5G\r\nhello\r\n"),            // a size followed by what is not an extension
           std::string("0x10\r\n"),                   // not a C literal either
           std::string(9000, '0') + "\r\n",           // a size line of endless zeros
           std::string("0\r\nX: ") + std::string(9000, 'y') + "\r\n",  // a trailer line over its bound
       }) {
    SCOPED_TRACE(wire.substr(0, 40));
    std::string buffer(64, '\0');
    ChunkedBody parser = decoder_into(buffer);
    error_code ec;
    parser.put(boost::asio::buffer(wire), ec);
    EXPECT_EQ(ec, http::error::bad_chunk);
  }
}

TEST(ChunkedBody, TrailersAreBoundedTogetherAndTheEndIsExact) {
  std::string wire = "3;ext=1\r\nabc\r\n0 ; last\r\n";
  for (int i = 0; i < 25; ++i) wire += "X-Trailer-" + std::to_string(i) + ": " + std::string(3000, 't') + "\r\n";
  wire += "\r\n";
  std::string buffer(64, '\0');
  ChunkedBody parser = decoder_into(buffer);
  error_code ec;
  parser.put(boost::asio::buffer(wire), ec);
  EXPECT_EQ(ec, http::error::bad_chunk);  // 75 KB of trailers, each line under kMaxLine, is over kMaxTrailers

  ChunkedBody fine = decoder_into(buffer);
  const std::string message = "3;ext=1\r\nabc\r\n0 ; last\r\nX-T: 1\r\n\r\n";
  EXPECT_EQ(fine.put(boost::asio::buffer(message + "next"), ec), message.size());  // not a byte past the end
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_TRUE(fine.is_done());
  EXPECT_EQ(fine.put(boost::asio::buffer(std::string("next")), ec), 0u);
  EXPECT_EQ(ec, http::error::stale_parser);
}

// The usual chunk (a size line of a few digits and its CRLF, then the data and its CRLF, all in one read) is
// read in one step; a size line of 16 or more digits, or framing split across reads, takes the byte-by-byte
// path. Both decode the same, and refuse at the same byte.
TEST(ChunkedBody, SizeLinesAndDataEndsDecodeTheSameWhicheverPathTheyTake) {
  for (const std::string& zeros : {std::string(), std::string(14, '0'), std::string(15, '0'), std::string(40, '0')}) {
    const std::string wire = zeros + "5\r\nhello\r\n0\r\n\r\n";
    SCOPED_TRACE(zeros.size());
    for (std::size_t piece : {std::size_t{1}, std::size_t{2}, std::size_t{7}, wire.size()}) {
      const Decoded got = with_sluice(wire, piece, 64);
      EXPECT_TRUE(got.done);
      EXPECT_EQ(got.body, "hello");
      const Decoded beast = with_beast(wire, piece, 64);
      EXPECT_EQ(beast.body, "hello");
    }
  }
  std::string buffer(64, '\0');
  error_code ec;
  {  // the largest size the one-step read takes (15 digits), and one digit more
    for (const std::string& size : {std::string(15, 'F'), std::string(16, 'F')}) {
      ChunkedBody parser = decoder_into(buffer);
      const std::string line = size + "\r\n";
      EXPECT_EQ(parser.put(boost::asio::buffer(line), ec), line.size()) << size;
      EXPECT_EQ(ec, http::error::need_more) << size;  // a size line alone gives the body nothing yet
      parser.put_eof(ec);
      EXPECT_EQ(ec, http::error::partial_message);
    }
  }
  {  // a CR after the data and then not an LF: refused at that byte
    ChunkedBody parser = decoder_into(buffer);
    EXPECT_EQ(parser.put(boost::asio::buffer(std::string("5\r\nhello\rX")), ec), 9u);
    EXPECT_EQ(ec, http::error::bad_chunk);
  }
  {  // the data's CR in one read, its LF in the next
    ChunkedBody parser = decoder_into(buffer);
    EXPECT_EQ(parser.put(boost::asio::buffer(std::string("5\r\nhello\r")), ec), 9u);
    EXPECT_FALSE(ec) << ec.message();
    EXPECT_EQ(parser.put(boost::asio::buffer(std::string("\n0\r\n\r\n")), ec), 6u);
    EXPECT_FALSE(ec) << ec.message();
    EXPECT_TRUE(parser.is_done());
  }
  {  // a chunk and its CRLF exactly: all of it taken, no error (body bytes were given)
    ChunkedBody parser = decoder_into(buffer);
    EXPECT_EQ(parser.put(boost::asio::buffer(std::string("5\r\nhello\r\n")), ec), 10u);
    EXPECT_FALSE(ec) << ec.message();
    EXPECT_EQ(std::string(buffer.data(), 5), "hello");
  }
}

}  // namespace
}  // namespace sluice::upstream
