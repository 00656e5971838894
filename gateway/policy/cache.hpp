#pragma once
// The response cache: which requests may share an answer (a digest of the canonical request), and an
// in-memory LRU store with a byte budget and TTLs. Pure and time-injected; no sockets.
#include <rapidjson/document.h>

#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sluice::policy {

using CacheClock = std::chrono::steady_clock;

/// The canonical form of a request body for caching: object members sorted by name at every level,
/// numbers written the same way however they were spelled (1, 1.0 and 1e0 are one number), no
/// whitespace; `stream`, `stream_options` and `user` left out (they do not change the answer), and
/// `model` replaced by `model` (the public name after aliasing).
std::string canonical_request(const rapidjson::Value& body, std::string_view model);

/// The cache key: SHA-256 (hex) of the endpoint, the scope (a key's name, or "" when shared) and the
/// canonical request.
std::string cache_key(std::string_view endpoint, std::string_view scope, const rapidjson::Value& body,
                      std::string_view model);

/// True when the request asks for a reproducible answer: `temperature: 0` or a `seed`.
bool deterministic_request(const rapidjson::Value& body);

/// True when `completion` is a whole, successful answer worth keeping: a JSON object without `error`
/// whose choices all carry a finish_reason.
bool complete_answer(std::string_view completion);

/// One stored answer: a whole completion (JSON), whatever form it was first delivered in.
struct CachedAnswer {
  std::string completion;
  std::uint64_t prompt_tokens = 0, completion_tokens = 0;
  CacheClock::time_point stored;
  CacheClock::time_point expires;
};

/// An answer as kept in a shared store (Redis): "<stored unix ms> <prompt tokens> <completion tokens>\n<completion>".
std::string encode_shared(const CachedAnswer& a, std::int64_t stored_unix_ms);
/// Reads one back; `stored` is set from its age (wall clocks of replicas may differ a little). nullopt when
/// the text is not such an entry.
std::optional<CachedAnswer> decode_shared(std::string_view text, CacheClock::time_point now, std::int64_t now_unix_ms);

/// In-memory LRU with a byte budget, split into shards (each with its own lock and share of the budget),
/// so workers rarely contend.
class MemoryCache {
 public:
  explicit MemoryCache(std::uint64_t max_bytes, unsigned shards = 16);

  std::optional<CachedAnswer> get(const std::string& key, CacheClock::time_point now);
  /// Stores (or replaces) an answer; returns how many entries were evicted to make room. An answer
  /// larger than a shard's budget is not stored.
  std::size_t put(const std::string& key, CachedAnswer answer);
  std::uint64_t bytes() const;
  std::size_t entries() const;

 private:
  struct Shard {
    mutable std::mutex mutex;
    std::list<std::pair<std::string, CachedAnswer>> lru;  // most recently used first
    std::unordered_map<std::string, decltype(lru)::iterator> index;
    std::uint64_t bytes = 0;
  };
  static std::uint64_t cost(const std::string& key, const CachedAnswer& a);
  Shard& shard_for(const std::string& key);

  std::vector<std::unique_ptr<Shard>> shards_;
  std::uint64_t shard_budget_;
};

}  // namespace sluice::policy
