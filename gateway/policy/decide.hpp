#pragma once
// The policy stages a request passes before it is forwarded: key → model → route. Pure: no sockets.
#include <boost/container/small_vector.hpp>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "config.hpp"
#include "openai/errors.hpp"
#include "policy/keyring.hpp"

namespace sluice::policy {

struct ModelLimitState;

/// Where an accepted request goes.
struct Forward {
  const ModelConfig* model = nullptr;          // the public model (resolved from an alias too)
  // In config order, enabled backends only; most models have a few (no allocation for up to four).
  boost::container::small_vector<const TargetConfig*, 4> targets;
  boost::container::small_vector<const BackendConfig*, 4> backends;  // each target's backend (same order)
  const KeyEntry* key = nullptr;               // nullptr when auth is off
  ModelLimitState* model_state = nullptr;      // the in-memory limiter's state for the model (see Demand)
};

/// What a client connection remembers of the key its last request was let in with, so that a keep-alive client
/// presenting the same key again is matched by one constant-time comparison instead of a SHA-256 and a lookup.
/// It holds only for the policy it was found by (each Policy has its own generation): a reload, which builds a
/// new one, may have removed or changed the key.
/// The secret is kept in memory only as long as the connection, and wiped when it goes.
class KeyMemo {
 public:
  KeyMemo() = default;
  KeyMemo(const KeyMemo&) = delete;
  KeyMemo& operator=(const KeyMemo&) = delete;
  ~KeyMemo() { forget(); }

  /// The entry remembered for `presented` by the policy of `generation`, or nullptr.
  const KeyEntry* recall(std::string_view presented, std::uint64_t generation) const;
  void remember(std::string_view presented, std::uint64_t generation, const KeyEntry* key);
  void forget();

 private:
  std::uint64_t generation_ = 0;  // 0: nothing remembered
  std::string presented_;
  const KeyEntry* key_ = nullptr;
};

/// The 503 for a model none of whose backends can take a request now.
openai::ApiError no_backend_available(std::string_view model);

/// Answers "may this request go, and where?" from an immutable config.
class Policy {
 public:
  /// With `limiter`, the keys and models that have limits get their states in it, once (see Demand).
  explicit Policy(const Config& config, LocalLimiter* limiter = nullptr);

  /// The caller's key from the Authorization / x-api-key headers: an entry, nullptr when auth is
  /// off, or a 401 error. With `memo` (the connection's memory of its last key) the key is hashed and looked
  /// up only when it is not the one this policy let in last on that connection.
  std::variant<const KeyEntry*, openai::ApiError> authenticate(std::string_view authorization,
                                                               std::string_view x_api_key,
                                                               KeyMemo* memo = nullptr) const;

  /// This policy's own number, never 0 and never shared with another Policy of the process (a KeyMemo's key).
  std::uint64_t generation() const { return generation_; }

  /// Resolves a model name for an authenticated caller: 404 unknown, 403 not allowed, 503 no usable backend.
  std::variant<Forward, openai::ApiError> route(const KeyEntry* key, std::string_view model) const;

  /// The public model names `key` may use, in config order.
  std::vector<std::string> visible_models(const KeyEntry* key) const;

  const Config& config() const { return config_; }

  /// True when `key` may use `model` (named by its name or one of its aliases, or "*").
  static bool allows(const KeyEntry& key, const ModelConfig& model);

 private:
  const Config& config_;
  std::uint64_t generation_;
  Keyring keyring_;
  struct NameHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view name) const { return std::hash<std::string_view>{}(name); }
  };
  // Names and aliases, looked up by the request's view of the name (no string made per request).
  std::unordered_map<std::string, const ModelConfig*, NameHash, std::equal_to<>> by_name_;
  std::vector<ModelLimitState*> model_states_;  // by position in config.models; empty without a limiter
};

}  // namespace sluice::policy
