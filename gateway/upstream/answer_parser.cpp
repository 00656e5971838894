#include "upstream/answer_parser.hpp"

#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>
#include <cstring>

#include "head_grammar.hpp"

namespace sluice::upstream {

namespace http = boost::beast::http;
using boost::system::error_code;
using Field = AnswerHead::Field;

namespace {

// As buffer_body's reader: copies what fits into the buffer the relay gave, and asks for another (need_buffer)
// when some did not fit or there is none. Returns the bytes copied.
std::size_t fill(AnswerHead::Body& b, std::string_view in, error_code& ec) {
  if (!b.data) {
    ec = http::error::need_buffer;
    return 0;
  }
  const std::size_t n = std::min(b.size, in.size());
  if (n > 0) std::memcpy(b.data, in.data(), n);
  b.data = static_cast<char*>(b.data) + n;
  b.size -= n;
  if (n < in.size()) ec = http::error::need_buffer;
  return n;
}

}  // namespace

/// Beast's parser, writing into the AnswerHead: for every answer the one-pass read leaves to it.
class AnswerParser::Beast final : public http::basic_parser<false> {
 public:
  explicit Beast(AnswerHead& head) : head_(head) {
    body_limit(boost::none);  // bounded by the relay: kMaxUpstreamBody, kMaxPendingEvent
    header_limit(kHeaderLimit);
  }

 private:
  using string_view = boost::beast::string_view;
  void on_request_impl(http::verb, string_view, string_view, int, error_code&) override {}
  void on_response_impl(int code, string_view, int, error_code&) override { head_.status_ = code; }
  void on_field_impl(http::field name, string_view, string_view value, error_code&) override {
    if (is_header_done()) return;  // a chunked answer's trailer fields: not the head's
    Field which;
    switch (name) {
      case http::field::content_type: which = Field::content_type; break;
      case http::field::content_encoding: which = Field::content_encoding; break;
      case http::field::retry_after: which = Field::retry_after; break;
      default: return;
    }
    head_.kept_.keep_first(which, value);
  }
  void on_header_impl(error_code&) override {}
  void on_body_init_impl(boost::optional<std::uint64_t> const&, error_code&) override {}
  std::size_t on_body_impl(string_view body, error_code& ec) override { return fill(head_.body_, body, ec); }
  void on_chunk_header_impl(std::uint64_t, string_view, error_code&) override {}
  std::size_t on_chunk_body_impl(std::uint64_t, string_view body, error_code& ec) override {
    return fill(head_.body_, body, ec);
  }
  void on_finish_impl(error_code&) override {}

  AnswerHead& head_;
};

AnswerParser::AnswerParser() = default;
AnswerParser::~AnswerParser() = default;

bool AnswerParser::is_header_done() const { return beast_ ? beast_->is_header_done() : state_ != State::head; }
bool AnswerParser::is_done() const {
  if (beast_) return beast_->is_done();
  return state_ == State::done || (state_ == State::chunks && chunks_->is_done());
}
// (The one-pass read either takes a whole head at its first put or hands over to Beast's parser.)
bool AnswerParser::got_some() const { return beast_ ? beast_->got_some() : state_ != State::head; }
bool AnswerParser::keep_alive() const { return beast_ ? beast_->keep_alive() : keep_alive_; }
bool AnswerParser::chunked() const { return beast_ ? beast_->chunked() : chunks_.has_value(); }
std::optional<std::uint64_t> AnswerParser::content_length() const {
  if (!beast_) return has_length_ ? std::optional<std::uint64_t>(remaining_) : std::nullopt;
  auto n = beast_->content_length();
  return n ? std::optional<std::uint64_t>(*n) : std::nullopt;
}

void AnswerParser::put_eof(error_code& ec) {
  if (beast_) return beast_->put_eof(ec);
  ec = {};
  switch (state_) {
    case State::to_eof:
      state_ = State::done;  // the body ran to the connection's end, as its head said it would
      break;
    case State::chunks:
      chunks_->put_eof(ec);
      break;
    case State::done:
      break;
    default:
      ec = http::error::partial_message;
  }
}

std::size_t AnswerParser::put(boost::asio::const_buffer input, error_code& ec) {
  ec = {};
  const std::string_view in(static_cast<const char*>(input.data()), input.size());
  if (!beast_ && state_ == State::head) {
    if (in.empty()) {
      ec = http::error::need_more;
      return 0;
    }
    if (std::size_t head = force_beast_ ? 0 : one_pass_head(in)) return head;
    // Not in the plain form, or not whole yet: Beast's parser reads it from its first byte.
    beast_ = std::make_unique<Beast>(head_);  // (one_pass_head left head_ untouched)
  }
  if (beast_) return beast_->put(input, ec);
  return take(in, ec);
}

// The body after a one-pass head, into the relay's buffer, with Beast's errors for the same cases.
std::size_t AnswerParser::take(std::string_view in, error_code& ec) {
  if (is_done()) {
    ec = http::error::stale_parser;
    return 0;
  }
  if (in.empty()) {
    ec = http::error::need_more;
    return 0;
  }
  auto& b = head_.body_;
  if (state_ == State::chunks) {
    auto& body = chunks_->body();
    body.data = b.data;
    body.size = b.size;
    const std::size_t used = chunks_->put(boost::asio::buffer(in.data(), in.size()), ec);
    b.data = body.data;
    b.size = body.size;
    return used;
  }
  // By length, the bytes past it are not the body's (Beast's parser clamps its input the same way).
  const std::size_t n = fill(b, state_ == State::length ? in.substr(0, std::min<std::uint64_t>(in.size(), remaining_)) : in, ec);
  if (state_ == State::length && (remaining_ -= n) == 0) state_ = State::done;
  return n;
}

namespace {

using head::Plain;
using Named = head::Named<Field>;

// What the one-pass read does with a field (Upgrade and Proxy-Connection go to Beast). Decided by length first:
// one or two comparisons per field instead of Beast's name table lookup.
Named classify(std::string_view name) {
  using head::is_name;
  switch (name.size()) {
    case 7:
      if (is_name(name, "upgrade")) return {Plain::to_beast};
      break;
    case 10:
      if (is_name(name, "connection")) return {Plain::connection};
      break;
    case 11:
      if (is_name(name, "retry-after")) return {Plain::kept, Field::retry_after};
      break;
    case 12:
      if (is_name(name, "content-type")) return {Plain::kept, Field::content_type};
      break;
    case 14:
      if (is_name(name, "content-length")) return {Plain::content_length};
      break;
    case 16:
      if (is_name(name, "content-encoding")) return {Plain::kept, Field::content_encoding};
      if (is_name(name, "proxy-connection")) return {Plain::to_beast};
      break;
    case 17:
      if (is_name(name, "transfer-encoding")) return {Plain::transfer_encoding};
      break;
  }
  return {Plain::other};
}

}  // namespace

// The head, when it is whole in `in` and in the plain form: its status and kept fields go into head_, the
// framing is set, and its size is returned. 0 leaves everything as it was for Beast's parser.
std::size_t AnswerParser::one_pass_head(std::string_view in) {
  // Well within Beast's limit, which it applies to the fields apart from the status line.
  const std::size_t end = head::find_head_end(in.substr(0, kHeaderLimit / 2));
  if (end == std::string_view::npos) return 0;
  const std::size_t head_size = end + 4;
  const char* p = in.data();
  const char* const last = p + end + 2;  // just past the last field line's CRLF

  // Status line: HTTP/1.x SP 3DIGIT SP reason CRLF
  if (end < 13 || std::memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ') return 0;
  const bool http11 = p[7] == '1';
  p += 9;
  int status = 0;
  for (int i = 0; i < 3; ++i, ++p) {
    if (*p < '0' || *p > '9') return 0;
    status = status * 10 + (*p - '0');
  }
  if (*p++ != ' ') return 0;
  p = head::value_end(p, last);  // the reason: visible ASCII, spaces and tabs, up to the line's CR
  if (p[0] != '\r' || p[1] != '\n') return 0;
  p += 2;

  head::PlainFields<Field, 8> fields;  // more kept fields than that (repeats) go to Beast
  if (!head::read_fields(p, last, in.data() + head_size, classify, fields)) return 0;
  if (fields.has_length && fields.chunked) return 0;  // Beast's parser refuses the pair

  head_.status_ = status;
  for (std::size_t i = 0; i < fields.n_kept; ++i) head_.kept_.keep_first(fields.kept[i].f, fields.kept[i].value);
  keep_alive_ = http11 ? !fields.close : fields.keep_alive;
  has_length_ = fields.has_length;
  if (fields.chunked) chunks_.emplace(keep_alive_);
  // As Beast's parser frames a response (RFC 9112 6.3): no body after 1xx, 204 or 304 whatever the head says.
  if (status / 100 == 1 || status == 204 || status == 304)
    state_ = State::done;
  else if (fields.has_length)
    state_ = fields.length > 0 ? State::length : State::done;
  else if (fields.chunked)
    state_ = State::chunks;
  else {
    state_ = State::to_eof;
    keep_alive_ = false;  // the body ends with the connection
  }
  remaining_ = fields.length;
  return head_size;
}

}  // namespace sluice::upstream
