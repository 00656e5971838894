#include "policy/keyring.hpp"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <cctype>
#include <stdexcept>

namespace sluice::policy {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

Keyring::Keyring(const std::vector<KeyConfig>& keys) {
  for (const auto& k : keys) {
    if (k.key_sha256.size() != 64) continue;  // rejected by config validation
    KeyEntry e;
    e.name = k.name;
    for (int i = 0; i < 32; ++i)
      e.digest[i] = static_cast<unsigned char>(hex_value(k.key_sha256[2 * i]) * 16 +
                                               hex_value(k.key_sha256[2 * i + 1]));
    e.models = k.models;
    e.limits = k.limits;
    entries_.push_back(std::move(e));
  }
}

const KeyEntry* Keyring::find(std::string_view presented) const {
  if (presented.empty()) return nullptr;
  unsigned char digest[32];
  SHA256(reinterpret_cast<const unsigned char*>(presented.data()), presented.size(), digest);
  const KeyEntry* found = nullptr;
  for (const auto& e : entries_)  // no early exit: the time taken does not depend on which key matched
    if (CRYPTO_memcmp(e.digest, digest, sizeof digest) == 0) found = &e;
  return found;
}

bool Keyring::allows(const KeyEntry& key, std::string_view model) {
  if (key.models.empty()) return true;
  for (const auto& m : key.models)
    if (m == "*" || m == model) return true;
  return false;
}

std::string sha256_hex(std::string_view text) {
  unsigned char digest[32];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  static const char* hex = "0123456789abcdef";
  std::string out;
  out.reserve(64);
  for (unsigned char b : digest) {
    out.push_back(hex[b >> 4]);
    out.push_back(hex[b & 15]);
  }
  return out;
}

std::string generate_key() {
  static const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  unsigned char raw[43];
  if (RAND_bytes(raw, sizeof raw) != 1) throw std::runtime_error("the system random generator failed");
  std::string key = "sk-sluice-";
  for (unsigned char b : raw) key.push_back(alphabet[b & 63]);  // 6 bits each: 258 bits in all
  return key;
}

std::string_view presented_key(std::string_view authorization, std::string_view x_api_key) {
  auto trim = [](std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
  };
  authorization = trim(authorization);
  if (authorization.size() > 7 && authorization[6] == ' ') {
    bool bearer = true;  // the scheme is case-insensitive (RFC 9110 §11.1)
    for (std::size_t i = 0; i < 6; ++i)
      bearer = bearer && std::tolower(static_cast<unsigned char>(authorization[i])) == "bearer"[i];
    if (bearer) return trim(authorization.substr(7));
  }
  return trim(x_api_key);
}

}  // namespace sluice::policy
