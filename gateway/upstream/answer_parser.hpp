#pragma once
// A backend's answer as the relay reads it: the status, the three header fields a decision needs, and the body
// handed over piece by piece into buffers the relay provides (as Beast's buffer_body). Beast's
// http::response_parser keeps every field of the head in an allocated node of a case-insensitive tree; the
// relay asks for three, so this parser keeps those (the first of each, as Beast's lookup gives) and lets the
// rest go by.
#include <boost/asio/buffer.hpp>
#include <boost/system/error_code.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

#include "kept_fields.hpp"
#include "upstream/chunked.hpp"

namespace sluice::upstream {

class AnswerHead {
 public:
  /// Where the next body bytes go and how many fit there; `data == nullptr` holds the body back (Beast's
  /// buffer_body::value_type, and the same contract).
  struct Body {
    void* data = nullptr;
    std::size_t size = 0;
  };
  /// The header fields the relay reads.
  enum class Field : unsigned char { content_type, content_encoding, retry_after, count };

  int result_int() const { return status_; }
  /// The first such field's value, or "" when the answer has none.
  std::string_view operator[](Field f) const { return kept_[f]; }
  Body& body() { return body_; }
  const Body& body() const { return body_; }

 private:
  friend class AnswerParser;
  KeptFields<Field> kept_;
  int status_ = 0;
  Body body_;
};

/// Reads one answer, fed as Beast's http::response_parser<http::buffer_body> (put, put_eof, is_header_done,
/// is_done, got_some, keep_alive, chunked, content_length, get().body()): one per answer.
///
/// A head that arrives whole and in the plain form every HTTP server sends (HTTP/1.0 or 1.1, a three-digit
/// status, visible ASCII, at most one Content-Length, Transfer-Encoding absent or exactly `chunked`, no
/// Upgrade) is read in one pass over its bytes, and its body framed here: by its length, by ChunkedBody (which
/// takes every chunk a put holds, where Beast's parser returns after each), or by the connection's end. Anything
/// else goes to Beast's parser from its first byte, so what is refused, and with which error, stays Beast's; on
/// every head the first reads, the two agree (tests/unit/upstream/answer_parser_test.cpp and fuzz_answer hold
/// them to it).
class AnswerParser {
 public:
  AnswerParser();
  ~AnswerParser();
  AnswerParser(const AnswerParser&) = delete;
  AnswerParser& operator=(const AnswerParser&) = delete;

  static constexpr std::uint32_t kHeaderLimit = 64 * 1024;

  /// Parses from `input`; returns the bytes of it consumed. `ec` as Beast's put: http::error::need_more when
  /// the head is incomplete, need_buffer when the body has no room left, another error when the answer is
  /// malformed. A put that reads the head returns after it (as Beast's parser does unless eager).
  std::size_t put(boost::asio::const_buffer input, boost::system::error_code& ec);
  /// The connection ended (only after got_some()): an error unless the answer was whole, or its body runs to
  /// the connection's end.
  void put_eof(boost::system::error_code& ec);
  bool is_header_done() const;
  bool is_done() const;
  bool got_some() const;
  /// Known once the head is read, as Beast's parser gives them (content_length: the body bytes still to come).
  bool keep_alive() const;
  bool chunked() const;
  std::optional<std::uint64_t> content_length() const;

  AnswerHead& get() { return head_; }
  const AnswerHead& get() const { return head_; }
  /// Whether this answer went to Beast's parser (a head not in the plain form, or not whole in the first put).
  bool by_beast() const { return beast_ != nullptr; }
  /// Gives every answer to Beast's parser (the reference the tests compare the one-pass read with). Before the
  /// first put.
  void use_beast_only() { force_beast_ = true; }

 private:
  class Beast;
  std::size_t one_pass_head(std::string_view in);
  std::size_t take(std::string_view in, boost::system::error_code& ec);

  AnswerHead head_;
  std::unique_ptr<Beast> beast_;
  // The one-pass read's framing: no head yet, then a body by length, by chunks, or to the connection's end.
  enum class State : unsigned char { head, length, chunks, to_eof, done } state_ = State::head;
  bool force_beast_ = false;
  bool keep_alive_ = false;
  bool has_length_ = false;
  std::uint64_t remaining_ = 0;  // the Content-Length's body bytes still to come (Beast's content_length())
  std::optional<ChunkedBody> chunks_;
};

}  // namespace sluice::upstream
