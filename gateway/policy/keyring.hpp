#pragma once
// Client keys: stored only as SHA-256 digests, compared in constant time, each with the models it may use.
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config.hpp"

namespace sluice::policy {

class LocalLimiter;
struct KeyLimitState;

/// A configured client key, as far as policy needs it (never the secret itself).
struct KeyEntry {
  std::string name;
  unsigned char digest[32];
  std::vector<std::string> models;  // exact names and `*` globs ("openai/*"); empty or "*": every model
  KeyLimits limits;
  KeyLimitState* limit_state = nullptr;  // the in-memory limiter's state for it (when it has limits; see Demand)
};

/// Looks up presented keys against the configured digests.
class Keyring {
 public:
  /// With `limiter`, each key that has limits gets its state in it (KeyEntry::limit_state).
  explicit Keyring(const std::vector<KeyConfig>& keys, LocalLimiter* limiter = nullptr);

  /// The entry whose digest matches `presented`, or nullptr. Compares every entry in constant time.
  const KeyEntry* find(std::string_view presented) const;

  /// True when `key` may use the public model `model`.
  static bool allows(const KeyEntry& key, std::string_view model);

  bool empty() const { return entries_.empty(); }

 private:
  std::vector<KeyEntry> entries_;
  // Looked up with the digest of what a request presents, without copying it into a string. The digest is
  // SHA-256 output, so its first bytes already make a good hash.
  struct DigestHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view digest) const;
  };
  std::unordered_map<std::string, std::size_t, DigestHash, std::equal_to<>> by_digest_;  // raw digest → entry
};

/// True when `text` matches `pattern`, where `*` stands for any run of characters.
bool glob_match(std::string_view pattern, std::string_view text);

/// SHA-256 of `text` as 64 lowercase hex digits.
std::string sha256_hex(std::string_view text);

/// A fresh random client key: "sk-sluice-" followed by 43 URL-safe characters (256 random bits).
std::string generate_key();

/// The bearer token from `Authorization: Bearer …`, or the raw `x-api-key` value; empty when absent.
std::string_view presented_key(std::string_view authorization, std::string_view x_api_key);

}  // namespace sluice::policy
