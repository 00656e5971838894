#pragma once
// Feeds a backend's answer to a parser as the relay does, and records the outcome: shared by the unit test and
// fuzz_answer, which hold AnswerParser (its one-pass head, its body framing) to Beast's
// response_parser<buffer_body>, the parser the relay used before.
#include <boost/asio/buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <algorithm>
#include <ostream>
#include <string>
#include <string_view>

#include "upstream/answer_parser.hpp"

namespace sluice::answer_drive {

namespace http = boost::beast::http;
using boost::system::error_code;
using Field = upstream::AnswerHead::Field;

struct Read {
  error_code ec;
  std::size_t head_size = 0;  // what the put that read the head consumed (0: the head was never read)
  int status = 0;
  bool done = false, keep_alive = false, chunked = false;
  std::optional<std::uint64_t> content_length;  // as the head gave it
  std::string body;
  std::string content_type, content_encoding, retry_after;
  bool by_beast = false;  // (AnswerParser only; not compared)

  /// The head's part: the same from any two parsers that read the same head.
  bool same_head(const Read& o) const {
    return head_size == o.head_size && status == o.status && keep_alive == o.keep_alive && chunked == o.chunked &&
           content_length == o.content_length && content_type == o.content_type &&
           content_encoding == o.content_encoding && retry_after == o.retry_after;
  }
  bool operator==(const Read& o) const { return same_head(o) && ec == o.ec && done == o.done && body == o.body; }
};

inline std::ostream& operator<<(std::ostream& os, const Read& r) {
  return os << "ec=" << r.ec.message() << " head=" << r.head_size << " status=" << r.status << " done=" << r.done
            << " keep=" << r.keep_alive << " chunked=" << r.chunked
            << " length=" << (r.content_length ? std::to_string(*r.content_length) : "none") << " body=[" << r.body
            << "] ct=" << r.content_type << " ce=" << r.content_encoding << " ra=" << r.retry_after
            << " by_beast=" << r.by_beast;
}

/// As the relay reads: `piece` bytes arrive at a time, the parser takes what it can into a `room`-byte body
/// buffer, which is emptied whenever it fills; the end of the input is the connection's end.
template <class Parser, class Get>
Read feed(Parser& p, std::string_view wire, std::size_t piece, std::size_t room, Get get) {
  Read out;
  std::string held, buffer(std::max<std::size_t>(room, 1), '\0');
  std::size_t at = 0;
  piece = std::max<std::size_t>(piece, 1);
  for (;;) {
    auto& body = p.get().body();
    body.data = buffer.data();
    body.size = room;
    error_code ec;
    const bool before = p.is_header_done();
    const std::size_t used = held.empty() ? 0 : p.put(boost::asio::buffer(held), ec);
    held.erase(0, used);
    if (!before && p.is_header_done()) {
      out.head_size = used;
      out.status = p.get().result_int();
      out.keep_alive = p.keep_alive();
      out.chunked = p.chunked();
      auto n = p.content_length();
      if (n) out.content_length = *n;
      get(p, out);
    }
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
  out.done = p.is_done();
  return out;
}

/// AnswerParser (`beast_only`: one that gives every answer to Beast's parser).
inline Read mine(std::string_view wire, std::size_t piece, std::size_t room, bool beast_only = false) {
  upstream::AnswerParser p;
  if (beast_only) p.use_beast_only();
  auto out = feed(p, wire, piece, room, [](upstream::AnswerParser& q, Read& r) {
    r.content_type = q.get()[Field::content_type];
    r.content_encoding = q.get()[Field::content_encoding];
    r.retry_after = q.get()[Field::retry_after];
  });
  out.by_beast = p.by_beast();
  return out;
}

/// Beast's response_parser<buffer_body>, as the relay set it up (no body limit, a 64 KiB head).
inline Read beasts(std::string_view wire, std::size_t piece, std::size_t room) {
  http::response_parser<http::buffer_body> p;
  p.body_limit(boost::none);
  p.header_limit(upstream::AnswerParser::kHeaderLimit);
  return feed(p, wire, piece, room, [](auto& q, Read& r) {
    r.content_type = q.get()[http::field::content_type];
    r.content_encoding = q.get()[http::field::content_encoding];
    r.retry_after = q.get()[http::field::retry_after];
  });
}

}  // namespace sluice::answer_drive
