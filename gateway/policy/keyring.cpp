#include "policy/keyring.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "hex.hpp"
#include "policy/limiter.hpp"

namespace sluice::policy {

Keyring::Keyring(const std::vector<KeyConfig>& keys, LocalLimiter* limiter) {
  for (const auto& k : keys) {
    if (k.key_sha256.size() != 64) continue;  // rejected by config validation
    KeyEntry e;
    e.name = k.name;
    for (int i = 0; i < 32; ++i)
      e.digest[i] = static_cast<unsigned char>(hex_value(k.key_sha256[2 * i]) * 16 +
                                               hex_value(k.key_sha256[2 * i + 1]));
    e.models = k.models;
    e.limits = k.limits;
    if (limiter && e.limits.any()) e.limit_state = limiter->key_state(e.name);
    entries_.push_back(std::move(e));
  }
  for (std::size_t i = 0; i < entries_.size(); ++i)
    by_digest_.emplace(std::string(reinterpret_cast<const char*>(entries_[i].digest), 32), i);
}

std::size_t Keyring::DigestHash::operator()(std::string_view digest) const {
  std::size_t h = 0;
  std::memcpy(&h, digest.data(), std::min(sizeof h, digest.size()));
  return h;
}

namespace {

// SHA-256 with the digest fetched once and a context kept per thread: OpenSSL 3's one-shot SHA256() looks
// the algorithm up (locks, property queries) and allocates a context on every call.
void sha256(std::string_view text, unsigned char out[32]) {
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  thread_local const std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx{EVP_MD_CTX_new(), &EVP_MD_CTX_free};
  unsigned int n = 0;
  if (!md || !ctx || EVP_DigestInit_ex2(ctx.get(), md, nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), text.data(), text.size()) != 1 || EVP_DigestFinal_ex(ctx.get(), out, &n) != 1)
    SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), out);  // the slow path still works
}

}  // namespace

const KeyEntry* Keyring::find(std::string_view presented) const {
  if (presented.empty()) return nullptr;
  unsigned char digest[32];
  sha256(presented, digest);
  // Looked up by digest, so thousands of keys cost one hash; what the lookup's timing could reveal is the
  // digest of the caller's own input, never a stored key. The match itself is confirmed in constant time.
  auto it = by_digest_.find(std::string_view(reinterpret_cast<const char*>(digest), sizeof digest));
  if (it == by_digest_.end()) return nullptr;
  const KeyEntry& e = entries_[it->second];
  return CRYPTO_memcmp(e.digest, digest, sizeof digest) == 0 ? &e : nullptr;
}

bool glob_match(std::string_view pattern, std::string_view text) {
  // `*` matches any run of characters ('/' included); everything else matches itself. Iterative, with
  // backtracking to the last star only, so it is linear-ish and cannot blow up.
  std::size_t p = 0, t = 0, star = std::string_view::npos, mark = 0;
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = t;
    } else if (p < pattern.size() && pattern[p] == text[t]) {
      ++p, ++t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

bool Keyring::allows(const KeyEntry& key, std::string_view model) {
  if (key.models.empty()) return true;
  for (const auto& m : key.models)
    if (m == model || (m.find('*') != std::string::npos && glob_match(m, model))) return true;
  return false;
}

std::string sha256_hex(std::string_view text) {
  unsigned char digest[32];
  sha256(text, digest);
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
    bool bearer = true;  // the scheme is case-insensitive (RFC 9110 §11.1): ASCII letters only, whatever the locale
    for (std::size_t i = 0; i < 6 && bearer; ++i) {
      char c = authorization[i];
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + ('a' - 'A'));
      bearer = c == "bearer"[i];
    }
    if (bearer) return trim(authorization.substr(7));
  }
  return trim(x_api_key);
}

}  // namespace sluice::policy
