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
  unsigned char raw[12];
  if (RAND_bytes(raw, sizeof raw) != 1) {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    for (auto& b : raw) b = static_cast<unsigned char>(rng());
  }
  static const char* hex = "0123456789abcdef";
  std::string id = "req_";
  for (unsigned char b : raw) {
    id.push_back(hex[b >> 4]);
    id.push_back(hex[b & 15]);
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
