#include "server/incoming.hpp"

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>
#include <cstring>

#include "head_grammar.hpp"

namespace sluice {

namespace http = boost::beast::http;
using boost::system::error_code;
using Field = IncomingRequest::Field;

void IncomingRequest::request_line(http::verb method, std::string_view method_string, std::string_view target,
                                   unsigned version) {
  // Room for a usual request line and its few kept fields in one allocation.
  kept_.reserve(method_string.size() + target.size() + 192);
  method_ = method;
  method_span_ = kept_.append(method_string);
  target_span_ = kept_.append(target);
  version_ = version;
}

namespace {

/// Which of the kept fields `name` is (Beast's enumerator when it has one), or Field::count.
Field kept_field(http::field name, std::string_view name_string) {
  switch (name) {
    case http::field::authorization:
      return Field::authorization;
    case http::field::cache_control:
      return Field::cache_control;
    case http::field::expect:
      return Field::expect;
    case http::field::unknown:  // names Beast has no enumerator for
      if (boost::beast::iequals(name_string, "x-api-key")) return Field::x_api_key;
      if (boost::beast::iequals(name_string, "x-request-id")) return Field::x_request_id;
      return Field::count;
    default:
      return Field::count;
  }
}

}  // namespace

/// Beast's parser, writing into the IncomingRequest.
class IncomingParser::Beast final : public http::basic_parser<true> {
 public:
  explicit Beast(IncomingRequest& req) : req_(req) {}

 private:
  using string_view = boost::beast::string_view;
  void on_request_impl(http::verb method, string_view method_str, string_view target, int version,
                       error_code&) override {
    req_.request_line(method, method_str, target, static_cast<unsigned>(version));
  }
  void on_response_impl(int, string_view, int, error_code&) override {}
  void on_field_impl(http::field name, string_view name_string, string_view value, error_code&) override {
    // A chunked body's trailer fields arrive here too, after the head: none of them counts (RFC 9110 6.5.1), or
    // a trailer could carry the credentials the head lacked.
    if (is_header_done()) return;
    if (auto f = kept_field(name, name_string); f != Field::count) req_.kept_.keep_first(f, value);
  }
  void on_header_impl(error_code&) override { req_.keep_alive_ = keep_alive(); }
  void on_body_init_impl(boost::optional<std::uint64_t> const& content_length, error_code& ec) override {
    if (!content_length) return;
    // Within body_limit already (the parser checks a declared length before it gets here).
    if (*content_length > req_.body_.max_size()) {
      ec = http::error::buffer_overflow;
      return;
    }
    req_.body_.reserve(static_cast<std::size_t>(*content_length));
  }
  std::size_t on_body_impl(string_view body, error_code&) override {
    req_.body_.append(body.data(), body.size());
    return body.size();
  }
  void on_chunk_header_impl(std::uint64_t, string_view, error_code&) override {}
  std::size_t on_chunk_body_impl(std::uint64_t, string_view body, error_code&) override {
    req_.body_.append(body.data(), body.size());
    return body.size();
  }
  void on_finish_impl(error_code&) override {}

  IncomingRequest& req_;
};

IncomingParser::IncomingParser() = default;
IncomingParser::~IncomingParser() = default;

void IncomingParser::eager(bool v) {
  eager_ = v;
  if (beast_) beast_->eager(v);
}

bool IncomingParser::is_header_done() const { return beast_ ? beast_->is_header_done() : state_ != State::head; }
bool IncomingParser::is_done() const { return beast_ ? beast_->is_done() : state_ == State::done; }
bool IncomingParser::got_some() const { return beast_ ? beast_->got_some() : state_ != State::head; }

void IncomingParser::put_eof(error_code& ec) {
  if (beast_) return beast_->put_eof(ec);
  ec = state_ == State::done ? error_code{} : error_code(http::error::partial_message);
}

std::size_t IncomingParser::put(boost::asio::const_buffer input, error_code& ec) {
  ec = {};
  const std::string_view in(static_cast<const char*>(input.data()), input.size());
  if (!beast_ && state_ == State::head) {
    if (std::size_t head = force_beast_ ? 0 : one_pass_head(in)) {
      if (state_ == State::done || !eager_) return head;
      return head + put(boost::asio::buffer(in.data() + head, in.size() - head), ec);
    }
    // Not in the plain form, or not whole yet: Beast's parser reads it from its first byte.
    beast_ = std::make_unique<Beast>(req_);  // (one_pass_head left req_ untouched)
    beast_->header_limit(header_limit_);
    beast_->body_limit(body_limit_);
    beast_->eager(eager_);
  }
  if (beast_) return beast_->put(input, ec);
  if (state_ == State::done) return 0;
  if (req_.body_.empty() && in.size() > 0) req_.body_.reserve(static_cast<std::size_t>(remaining_));
  const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, in.size()));
  req_.body_.append(in.data(), n);
  remaining_ -= n;
  if (remaining_ == 0) state_ = State::done;
  return n;
}

namespace {

using head::is_name;

using head::Plain;
using Named = head::Named<Field>;

// What the one-pass read does with a field (Transfer-Encoding, Upgrade and Proxy-Connection go to Beast). Decided
// by length first: one or two comparisons per field instead of Beast's name table lookup.
Named classify(std::string_view name) {
  switch (name.size()) {
    case 6:
      if (is_name(name, "expect")) return {Plain::kept, Field::expect};
      break;
    case 7:
      if (is_name(name, "upgrade")) return {Plain::to_beast};
      break;
    case 9:
      if (is_name(name, "x-api-key")) return {Plain::kept, Field::x_api_key};
      break;
    case 10:
      if (is_name(name, "connection")) return {Plain::connection};
      break;
    case 12:
      if (is_name(name, "x-request-id")) return {Plain::kept, Field::x_request_id};
      break;
    case 13:
      if (is_name(name, "authorization")) return {Plain::kept, Field::authorization};
      if (is_name(name, "cache-control")) return {Plain::kept, Field::cache_control};
      break;
    case 14:
      if (is_name(name, "content-length")) return {Plain::content_length};
      break;
    case 16:
      if (is_name(name, "proxy-connection")) return {Plain::to_beast};
      break;
    case 17:
      if (is_name(name, "transfer-encoding")) return {Plain::to_beast};
      break;
  }
  return {Plain::other};
}

}  // namespace

// The head, when it is whole in `in` and in the plain form: its fields go into req_, the state moves on, and
// its size is returned. 0 leaves everything as it was for Beast's parser.
std::size_t IncomingParser::one_pass_head(std::string_view in) {
  const std::size_t end = head::find_head_end(in.substr(0, header_limit_));
  if (end == std::string_view::npos) return 0;
  const std::size_t head_size = end + 4;
  const char* p = in.data();
  const char* const last = p + end + 2;  // just past the last field line's CRLF

  // Request line: method SP target SP HTTP/1.x CRLF
  const char* m = p;
  while (p < last && *p >= 'A' && *p <= 'Z') ++p;
  if (p == m || p >= last || *p != ' ') return 0;
  const std::string_view method(m, static_cast<std::size_t>(p - m));
  const http::verb verb = http::string_to_verb(method);
  if (verb == http::verb::unknown) return 0;
  const char* t = ++p;
  while (p < last && *p > ' ' && *p < 0x7f) ++p;
  if (p == t || last - p < 11 || *p != ' ') return 0;
  const std::string_view target(t, static_cast<std::size_t>(p - t));
  ++p;
  if (std::memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != '\r' || p[9] != '\n') return 0;
  const unsigned version = p[7] == '1' ? 11 : 10;
  p += 10;

  head::PlainFields<Field, 16> fields;  // more kept fields than that (repeats) go to Beast
  if (!head::read_fields(p, last, in.data() + head_size, classify, fields)) return 0;
  if (fields.length > body_limit_) return 0;  // Beast's parser answers body_limit

  req_.request_line(verb, method, target, version);
  for (std::size_t i = 0; i < fields.n_kept; ++i) req_.kept_.keep_first(fields.kept[i].f, fields.kept[i].value);
  req_.keep_alive_ = version == 11 ? !fields.close : fields.keep_alive;
  remaining_ = fields.length;  // (its room is taken when the body begins, as Beast's parser does, not on a promise)
  state_ = fields.length > 0 ? State::body : State::done;
  return head_size;
}

}  // namespace sluice
