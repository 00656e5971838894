#pragma once
// A client's request as the gateway reads it: the request line, the few header fields a decision needs, and the
// body. Beast's http::request keeps every field in an allocated node of a case-insensitive tree and looks each
// one up there; the gateway asks for five, so its parser keeps those (the first of each in the head, as Beast's
// lookup gives; never a chunked body's trailer fields) and lets the rest go by.
#include <boost/asio/buffer.hpp>
#include <boost/beast/http/verb.hpp>
#include <boost/system/error_code.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "kept_fields.hpp"

namespace sluice {

class IncomingRequest {
 public:
  /// The header fields the gateway reads.
  enum class Field : unsigned char { authorization, x_api_key, x_request_id, cache_control, expect, count };

  boost::beast::http::verb method() const { return method_; }
  std::string_view method_string() const { return kept_.view(method_span_); }
  std::string_view target() const { return kept_.view(target_span_); }
  /// 10 for HTTP/1.0, 11 for HTTP/1.1.
  unsigned version() const { return version_; }
  /// Whether the connection may carry another request after this one (HTTP/1.1 unless `Connection: close`,
  /// HTTP/1.0 with `Connection: keep-alive`). Known once the header has been read.
  bool keep_alive() const { return keep_alive_; }
  /// The first such field's value, or "" when the request has none.
  std::string_view operator[](Field f) const { return kept_[f]; }
  const std::string& body() const { return body_; }
  std::string& body() { return body_; }

 private:
  friend class IncomingParser;
  void request_line(boost::beast::http::verb method, std::string_view method_string, std::string_view target,
                    unsigned version);

  KeptFields<Field> kept_;  // the method, the target and the kept fields' values
  KeptFields<Field>::Span method_span_, target_span_;
  boost::beast::http::verb method_ = boost::beast::http::verb::unknown;
  unsigned version_ = 11;
  bool keep_alive_ = true;
  std::string body_;
};

/// Reads one client request, fed as Beast's http::request_parser (put, put_eof, header_limit, body_limit,
/// eager, is_header_done, is_done, got_some): one per request.
///
/// A head that arrives whole and in the plain form every HTTP client sends (a known method, an ASCII target,
/// HTTP/1.0 or 1.1, visible ASCII values, at most one Content-Length, no Transfer-Encoding or Upgrade, within
/// the header limit) is read in one pass over its bytes. Anything else goes to Beast's parser from its first
/// byte, so what is accepted, what is refused and with which error stay Beast's; the two agree on every
/// request the first reads (tests/unit/server/incoming_test.cpp holds them to it).
class IncomingParser {
 public:
  IncomingParser();
  ~IncomingParser();
  IncomingParser(const IncomingParser&) = delete;
  IncomingParser& operator=(const IncomingParser&) = delete;

  void header_limit(std::uint32_t n) { header_limit_ = n; }
  void body_limit(std::uint64_t n) { body_limit_ = n; }
  void eager(bool v);

  /// Parses from `input`; returns the bytes of it consumed. `ec` as Beast's put: http::error::need_more when
  /// a head is incomplete, another error when the request is malformed.
  std::size_t put(boost::asio::const_buffer input, boost::system::error_code& ec);
  /// The connection ended (only after got_some()): an error unless the request was whole.
  void put_eof(boost::system::error_code& ec);
  bool is_header_done() const;
  bool is_done() const;
  bool got_some() const;

  IncomingRequest& get() { return req_; }
  const IncomingRequest& get() const { return req_; }
  /// Whether this request went to Beast's parser (a head not in the plain form, or not whole in the first put).
  bool by_beast() const { return beast_ != nullptr; }

  /// Gives every request to Beast's parser (the reference the tests compare the one-pass read with). Before
  /// the first put.
  void use_beast_only() { force_beast_ = true; }

 private:
  class Beast;
  std::size_t one_pass_head(std::string_view in);

  IncomingRequest req_;
  std::unique_ptr<Beast> beast_;
  enum class State : unsigned char { head, body, done } state_ = State::head;
  bool force_beast_ = false;
  bool eager_ = false;
  std::uint32_t header_limit_ = 8192;  // Beast's defaults for a request
  std::uint64_t body_limit_ = 1024 * 1024;
  std::uint64_t remaining_ = 0;  // body bytes still to come (one-pass read)
};

}  // namespace sluice
