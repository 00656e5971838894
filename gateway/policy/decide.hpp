#pragma once
// The policy stages a request passes before it is forwarded: key → model → route. Pure: no sockets.
#include <boost/container/small_vector.hpp>
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

/// Where an accepted request goes.
struct Forward {
  const ModelConfig* model = nullptr;          // the public model (resolved from an alias too)
  // In config order, enabled backends only; most models have a few (no allocation for up to four).
  boost::container::small_vector<const TargetConfig*, 4> targets;
  boost::container::small_vector<const BackendConfig*, 4> backends;  // each target's backend (same order)
  const KeyEntry* key = nullptr;               // nullptr when auth is off
};

/// The 503 for a model none of whose backends can take a request now.
openai::ApiError no_backend_available(std::string_view model);

/// Answers "may this request go, and where?" from an immutable config.
class Policy {
 public:
  explicit Policy(const Config& config);

  /// The caller's key from the Authorization / x-api-key headers: an entry, nullptr when auth is
  /// off, or a 401 error.
  std::variant<const KeyEntry*, openai::ApiError> authenticate(std::string_view authorization,
                                                               std::string_view x_api_key) const;

  /// Resolves a model name for an authenticated caller: 404 unknown, 403 not allowed, 503 no usable backend.
  std::variant<Forward, openai::ApiError> route(const KeyEntry* key, std::string_view model) const;

  /// The public model names `key` may use, in config order.
  std::vector<std::string> visible_models(const KeyEntry* key) const;

  const Config& config() const { return config_; }

  /// True when `key` may use `model` (named by its name or one of its aliases, or "*").
  static bool allows(const KeyEntry& key, const ModelConfig& model);

 private:
  const Config& config_;
  Keyring keyring_;
  struct NameHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view name) const { return std::hash<std::string_view>{}(name); }
  };
  // Names and aliases, looked up by the request's view of the name (no string made per request).
  std::unordered_map<std::string, const ModelConfig*, NameHash, std::equal_to<>> by_name_;
};

}  // namespace sluice::policy
