#include "server/http_io.hpp"

#include <openssl/rand.h>

#include <random>

namespace sluice {

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
  static const char* hex = "0123456789abcdef";
  std::string id = "req_";
  id.reserve(4 + 2 * kIdBytes);
  for (std::size_t i = 0; i < kIdBytes; ++i) {
    id.push_back(hex[raw[i] >> 4]);
    id.push_back(hex[raw[i] & 15]);
  }
  return id;
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

}  // namespace sluice
