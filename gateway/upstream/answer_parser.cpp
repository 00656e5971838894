#include "upstream/answer_parser.hpp"

#include <boost/beast/http/error.hpp>
#include <cstring>

namespace sluice::upstream {

namespace http = boost::beast::http;

void AnswerParser::on_response_impl(int code, string_view, int, error_code&) {
  head_.status_ = code;
}

void AnswerParser::on_field_impl(http::field name, string_view, string_view value, error_code&) {
  if (is_header_done()) return;  // a chunked answer's trailer fields: not the head's
  using F = AnswerHead::Field;
  F which;
  switch (name) {
    case http::field::content_type:
      which = F::content_type;
      break;
    case http::field::content_encoding:
      which = F::content_encoding;
      break;
    case http::field::retry_after:
      which = F::retry_after;
      break;
    default:
      return;
  }
  head_.kept_.keep_first(which, value);
}

// As buffer_body's reader: copies what fits into the buffer the relay gave, and asks for another
// (need_buffer) when some did not fit or there is none.
std::size_t AnswerParser::take(string_view body, error_code& ec) {
  auto& b = head_.body_;
  if (!b.data) {
    ec = http::error::need_buffer;
    return 0;
  }
  const std::size_t n = std::min(b.size, body.size());
  if (n > 0) std::memcpy(b.data, body.data(), n);
  b.data = static_cast<char*>(b.data) + n;
  b.size -= n;
  if (n < body.size()) ec = http::error::need_buffer;
  return n;
}

std::size_t AnswerParser::on_body_impl(string_view body, error_code& ec) { return take(body, ec); }

std::size_t AnswerParser::on_chunk_body_impl(std::uint64_t, string_view body, error_code& ec) {
  return take(body, ec);
}

}  // namespace sluice::upstream
