// AnswerParser against Beast's response_parser<buffer_body>, which the relay used before: fed the same answers
// the same way (reads of a few bytes, a small body buffer that is emptied when it fills), both give the same
// status, framing, keep-alive, kept fields, body bytes and errors. A chunked answer's trailer is not its head.
#include "upstream/answer_parser.hpp"

#include <gtest/gtest.h>

#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <string>
#include <vector>

namespace sluice::upstream {
namespace {

namespace http = boost::beast::http;
using boost::system::error_code;
using Field = AnswerHead::Field;

struct Read {
  error_code ec;
  int status = 0;
  bool done = false, keep_alive = false, chunked = false;
  std::string body;
  std::string content_type, content_encoding, retry_after;
  bool operator==(const Read&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Read& r) {
  return os << "ec=" << r.ec.message() << " status=" << r.status << " done=" << r.done << " keep=" << r.keep_alive
            << " chunked=" << r.chunked << " body=[" << r.body << "] ct=" << r.content_type
            << " ce=" << r.content_encoding << " ra=" << r.retry_after;
}

// As the relay reads: `piece` bytes arrive at a time, the parser takes what it can into a `room`-byte body
// buffer, which is emptied whenever it fills; the end of the input is the connection's end.
template <class Parser, class Get>
Read feed(Parser& p, const std::string& wire, std::size_t piece, std::size_t room, Get get) {
  p.body_limit(boost::none);
  Read out;
  std::string held, buffer(room, '\0');
  std::size_t at = 0;
  for (;;) {
    auto& body = p.get().body();
    body.data = buffer.data();
    body.size = room;
    error_code ec;
    const std::size_t used = held.empty() ? 0 : p.put(boost::asio::buffer(held), ec);
    held.erase(0, used);
    out.body.append(buffer.data(), room - p.get().body().size);
    if (ec == http::error::need_buffer) continue;
    if (ec && ec != http::error::need_more) {
      out.ec = ec;
      break;
    }
    if (p.is_done()) break;
    if (!ec && used > 0) continue;
    if (at == wire.size()) {
      if (p.got_some()) p.put_eof(ec);
      out.ec = ec ? ec : error_code(http::error::end_of_stream);
      if (!ec) out.done = p.is_done();
      break;
    }
    const std::size_t n = std::min(piece, wire.size() - at);
    held.append(wire, at, n);
    at += n;
  }
  if (p.is_header_done()) {
    out.status = p.get().result_int();
    out.keep_alive = p.keep_alive();
    out.chunked = p.chunked();
    get(p, out);
  }
  out.done = p.is_done();
  return out;
}

Read mine(const std::string& wire, std::size_t piece, std::size_t room) {
  AnswerParser p;
  return feed(p, wire, piece, room, [](AnswerParser& q, Read& r) {
    r.content_type = q.get()[Field::content_type];
    r.content_encoding = q.get()[Field::content_encoding];
    r.retry_after = q.get()[Field::retry_after];
  });
}

Read beasts(const std::string& wire, std::size_t piece, std::size_t room) {
  http::response_parser<http::buffer_body> p;
  return feed(p, wire, piece, room, [](auto& q, Read& r) {
    r.content_type = q.get()[http::field::content_type];
    r.content_encoding = q.get()[http::field::content_encoding];
    r.retry_after = q.get()[http::field::retry_after];
  });
}

TEST(AnswerParser, ReadsEveryAnswerAsBeastsBufferBodyParser) {
  const std::vector<std::string> answers = {
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}",
      "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
      "7\r\ndata: 1\r\n8\r\n\n\ndata: \r\n6\r\n[DONE]\r\n0\r\n\r\n",
      "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nRetry-After: 9\r\nContent-Length: 2\r\n\r\n{}",
      "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc",
      "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
      "HTTP/1.1 304 Not Modified\r\n\r\n",
      "HTTP/1.1 100 Continue\r\n\r\n",
      "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"until\":\"close\"}",
      "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbody",
      "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nRetry-After: 99\r\nContent-Type: x\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      "HTTP/1.1 2000 OK\r\n\r\n",
      "garbage\r\n\r\n",
  };
  for (const auto& a : answers)
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
  EXPECT_EQ(mine(answers[2], 3, 2).retry_after, "7");  // the first counts
  EXPECT_EQ(mine(answers[1], 3, 2).body, "data: 1\n\ndata: [DONE]");
}

}  // namespace
}  // namespace sluice::upstream
