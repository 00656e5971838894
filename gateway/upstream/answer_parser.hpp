#pragma once
// A backend's answer as the relay reads it: the status, the three header fields a decision needs, and the body
// handed over piece by piece into buffers the relay provides (as Beast's buffer_body). Beast's
// http::response_parser keeps every field of the head in an allocated node of a case-insensitive tree; the
// relay asks for three, so this parser keeps those (the first of each, as Beast's lookup gives) and lets the
// rest go by. The grammar, the limits and the framing are Beast's own (http::basic_parser).
#include <boost/beast/http/basic_parser.hpp>
#include <cstdint>
#include <string_view>

#include "kept_fields.hpp"

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

/// http::response_parser<http::buffer_body>, for an AnswerHead: one per answer, fed as Beast's.
class AnswerParser final : public boost::beast::http::basic_parser<false> {
 public:
  AnswerParser() = default;
  AnswerHead& get() { return head_; }
  const AnswerHead& get() const { return head_; }

 private:
  using error_code = boost::system::error_code;
  using string_view = boost::beast::string_view;
  void on_request_impl(boost::beast::http::verb, string_view, string_view, int, error_code&) override {}
  void on_response_impl(int code, string_view reason, int version, error_code& ec) override;
  void on_field_impl(boost::beast::http::field name, string_view name_string, string_view value,
                     error_code& ec) override;
  void on_header_impl(error_code&) override {}
  void on_body_init_impl(boost::optional<std::uint64_t> const&, error_code&) override {}
  std::size_t on_body_impl(string_view body, error_code& ec) override;
  void on_chunk_header_impl(std::uint64_t, string_view, error_code&) override {}
  std::size_t on_chunk_body_impl(std::uint64_t, string_view body, error_code& ec) override;
  void on_finish_impl(error_code&) override {}
  std::size_t take(string_view body, error_code& ec);

  AnswerHead head_;
};

}  // namespace sluice::upstream
