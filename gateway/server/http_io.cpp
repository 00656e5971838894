#include "server/http_io.hpp"

#include <openssl/rand.h>

#include <cassert>
#include <charconv>
#include <cstring>
#include <random>

namespace sluice {

namespace {

// "HTTP/1.1 200 ", as Beast writes it.
std::string_view status_line_start(unsigned version, unsigned code) {
  thread_local char buf[13];
  buf[0] = 'H', buf[1] = 'T', buf[2] = 'T', buf[3] = 'P', buf[4] = '/';
  buf[5] = static_cast<char>('0' + version / 10);
  buf[6] = '.';
  buf[7] = static_cast<char>('0' + version % 10);
  buf[8] = ' ';
  buf[9] = static_cast<char>('0' + code / 100 % 10);
  buf[10] = static_cast<char>('0' + code / 10 % 10);
  buf[11] = static_cast<char>('0' + code % 10);
  buf[12] = ' ';
  return {buf, sizeof buf};
}

// "name: value\r\n" on the end of `text`: one size change and the copies (four appends each checked the
// capacity and the length).
void append_field(std::string& text, std::string_view name, std::string_view value) {
  const std::size_t at = text.size();
  text.resize(at + name.size() + value.size() + 4);
  char* p = text.data() + at;
  std::memcpy(p, name.data(), name.size());
  p += name.size();
  *p++ = ':';
  *p++ = ' ';
  std::memcpy(p, value.data(), value.size());
  p += value.size();
  *p++ = '\r';
  *p = '\n';
}

}  // namespace

WireHead WireHead::response(unsigned version, unsigned status) {
  WireHead h;
  h.text_.reserve(512);
  h.text_ += status_line_start(version, status);
  auto reason = http::obsolete_reason(static_cast<http::status>(status));
  h.text_.append(reason.data(), reason.size());
  h.text_ += "\r\n";
  return h;
}

WireHead WireHead::request(std::string_view method, std::string_view target) {
  WireHead h;
  h.text_.reserve(512);
  h.text_.append(method);
  h.text_ += ' ';
  h.text_.append(target);
  h.text_ += " HTTP/1.1\r\n";
  return h;
}

WireHead WireHead::starting(std::string_view start) {
  WireHead h;
  h.text_.reserve(start.size() + 200);  // the request id (up to 128 characters) and the length to come
  h.text_.append(start);
  return h;
}

WireHead& WireHead::field(std::string_view name, std::string_view value) {
  append_field(text_, name, value);
  return *this;
}

WireHead& WireHead::connection(unsigned version, bool keep_alive) {
  if (version >= 11 && !keep_alive) return field("Connection", "close");
  if (version < 11 && keep_alive) return field("Connection", "keep-alive");
  return *this;
}

std::string WireHead::finish(std::optional<std::size_t> content_length) {
  if (content_length) {
    char n[24];
    const char* end = std::to_chars(n, n + sizeof n, *content_length).ptr;
    field("Content-Length", std::string_view(n, static_cast<std::size_t>(end - n)));
  }
  text_ += "\r\n";
  return std::move(text_);
}

ExtraHeaders& ExtraHeaders::add(std::string_view name, std::string_view value) {
  // Sluice's own names and values (numbers, durations, words): never anything a client sent.
  assert(name.find_first_of(":\r\n") == std::string_view::npos);
  assert(value.find_first_of("\r\n") == std::string_view::npos);
  if (text_.capacity() < 256) text_.reserve(256);  // the six rate-limit lines and the cache's fit
  append_field(text_, name, value);
  return *this;
}

ExtraHeaders& ExtraHeaders::add_lines(std::string_view lines) {
  assert(lines.empty() || lines.ends_with("\r\n"));
  text_.append(lines);
  return *this;
}

ExtraHeaders& ExtraHeaders::add(std::string_view name, std::uint64_t value) {
  char digits[24];
  return add(name, std::string_view(digits, static_cast<std::size_t>(
                                                std::to_chars(digits, digits + sizeof digits, value).ptr - digits)));
}

std::string answer_head(unsigned version, bool keep_alive, bool sse, std::string_view request_id,
                        std::string_view overhead_ms, const ExtraHeaders* extra, std::optional<std::size_t> length) {
  const bool stream = !length;
  const bool chunked = stream && version >= 11;
  auto head = WireHead::response(version, 200);
  head.lines(sse ? std::string_view("Server: sluice\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n")
                 : std::string_view("Server: sluice\r\nContent-Type: application/json\r\n"));
  if (stream) head.lines("x-accel-buffering: no\r\n");
  head.field("x-request-id", request_id).field("x-sluice-overhead-ms", overhead_ms);
  if (extra) head.lines(extra->wire());
  head.connection(version, keep_alive && (!stream || chunked));  // an unchunked stream ends with the connection
  if (chunked) head.field("Transfer-Encoding", "chunked");
  return head.finish(length);
}

std::string wire_head(const StringResponse& res) {
  std::string out;
  out.reserve(512);
  out += status_line_start(res.version(), res.result_int());
  auto reason = res.reason();
  out.append(reason.data(), reason.size());
  out += "\r\n";
  for (const auto& f : res) {
    auto name = f.name_string();
    auto value = f.value();
    out.append(name.data(), name.size());
    out += ": ";
    out.append(value.data(), value.size());
    out += "\r\n";
  }
  out += "\r\n";
  return out;
}

StringResponse json_response(http::status status, std::string body, unsigned version, bool keep_alive) {
  StringResponse res{status, version};
  res.set(http::field::server, "sluice");
  res.set(http::field::content_type, "application/json");
  res.keep_alive(keep_alive);
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

StringResponse error_response(const openai::ApiError& e, unsigned version, bool keep_alive) {
  auto res = json_response(static_cast<http::status>(e.status), openai::error_json(e), version, keep_alive);
  if (e.retry_after) res.set(http::field::retry_after, *e.retry_after);
  return res;
}

std::string new_request_id() {
  // OpenSSL's generator, drawn 64 ids at a time per thread: one RAND_bytes call (and the getpid it makes to
  // notice a fork) per request was a syscall on every request's path.
  constexpr std::size_t kIdBytes = 12, kBatch = 64;
  thread_local unsigned char pool[kIdBytes * kBatch];
  thread_local std::size_t next = kBatch;
  if (next == kBatch) {
    if (RAND_bytes(pool, sizeof pool) != 1) {
      thread_local std::mt19937_64 rng{std::random_device{}()};
      for (auto& b : pool) b = static_cast<unsigned char>(rng());
    }
    next = 0;
  }
  const unsigned char* raw = pool + kIdBytes * next++;
  static constexpr char hex[] = "0123456789abcdef";
  char text[4 + 2 * kIdBytes] = {'r', 'e', 'q', '_'};
  for (std::size_t i = 0; i < kIdBytes; ++i) {
    text[4 + 2 * i] = hex[raw[i] >> 4];
    text[5 + 2 * i] = hex[raw[i] & 15];
  }
  return std::string(text, sizeof text);
}

bool acceptable_request_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (unsigned char c : id)
    if (c < 0x21 || c > 0x7e) return false;
  return true;
}

void reset_socket(tcp::socket& s) {
  error_code ec;
  s.set_option(asio::socket_base::linger(true, 0), ec);
  s.close(ec);
}

template asio::awaitable<std::tuple<error_code, std::size_t>> write_rest(beast::tcp_stream&, const HeadAndBody&,
                                                                         std::size_t);
template asio::awaitable<std::tuple<error_code, std::size_t>> write_all(beast::tcp_stream&, const HeadAndBody&);

}  // namespace sluice
