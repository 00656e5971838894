#include "policy/decide.hpp"

#include <openssl/crypto.h>

#include <atomic>

#include "policy/limiter.hpp"

namespace sluice::policy {

openai::ApiError no_backend_available(std::string_view model) {
  return openai::ApiError{503, "No backend is available for the model `" + std::string(model) + "`.",
                          "server_error", std::nullopt, "no_backend_available"};
}

namespace {
std::uint64_t next_generation() {
  static std::atomic<std::uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}
}  // namespace

Policy::Policy(const Config& config, LocalLimiter* limiter)
    : config_(config), generation_(next_generation()), keyring_(config.keys, limiter) {
  for (const auto& m : config.models) {
    by_name_.emplace(m.name, &m);
    for (const auto& a : m.aliases) by_name_.emplace(a, &m);
    if (limiter) model_states_.push_back(m.limits.any() ? limiter->model_state(m.name) : nullptr);
  }
}

const KeyEntry* KeyMemo::recall(std::string_view presented, std::uint64_t generation) const {
  if (generation_ == 0 || generation != generation_ || presented.size() != presented_.size()) return nullptr;
  return CRYPTO_memcmp(presented.data(), presented_.data(), presented.size()) == 0 ? key_ : nullptr;
}

void KeyMemo::remember(std::string_view presented, std::uint64_t generation, const KeyEntry* key) {
  forget();
  presented_.assign(presented);
  generation_ = generation;
  key_ = key;
}

void KeyMemo::forget() {
  if (!presented_.empty()) OPENSSL_cleanse(presented_.data(), presented_.size());
  presented_.clear();
  generation_ = 0;
  key_ = nullptr;
}

namespace {

openai::ApiError missing_key() {
  return openai::ApiError{401,
                          "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY' "
                          "(or the x-api-key header).",
                          "invalid_request_error", std::nullopt, "missing_api_key"};
}

// Never echo the presented key, not even in part.
openai::ApiError incorrect_key() {
  return openai::ApiError{401, "Incorrect API key provided.", "invalid_request_error", std::nullopt,
                          "invalid_api_key"};
}

}  // namespace

std::variant<const KeyEntry*, openai::ApiError> Policy::authenticate(std::string_view authorization,
                                                                     std::string_view x_api_key,
                                                                     KeyMemo* memo) const {
  if (!config_.auth_required) return static_cast<const KeyEntry*>(nullptr);
  auto presented = presented_key(authorization, x_api_key);
  if (presented.empty()) return missing_key();
  if (memo)
    if (const auto* key = memo->recall(presented, generation_)) return key;
  const auto* key = keyring_.find(presented);
  if (!key) return incorrect_key();
  if (memo) memo->remember(presented, generation_, key);
  return key;
}

std::variant<Forward, openai::ApiError> Policy::route(const KeyEntry* key, std::string_view model) const {
  auto it = by_name_.find(model);
  if (it == by_name_.end())
    return openai::ApiError{
        404, "The model `" + std::string(model) + "` does not exist or you do not have access to it.",
        "invalid_request_error", "model", "model_not_found"};
  const ModelConfig* m = it->second;
  if (key && !allows(*key, *m))
    return openai::ApiError{403, "This API key is not allowed to use the model `" + m->name + "`.",
                            "invalid_request_error", "model", "model_not_allowed"};
  Forward f;
  f.model = m;
  f.key = key;
  if (!model_states_.empty()) f.model_state = model_states_[static_cast<std::size_t>(m - config_.models.data())];
  for (const auto& t : m->targets) {
    const auto* b = config_.find_backend(t.backend);
    if (b && b->enabled) {
      f.targets.push_back(&t);
      f.backends.push_back(b);
    }
  }
  if (f.targets.empty()) return no_backend_available(m->name);
  return f;
}

bool Policy::allows(const KeyEntry& key, const ModelConfig& model) {
  if (Keyring::allows(key, model.name)) return true;
  for (const auto& alias : model.aliases)  // a key may name a model by one of its aliases
    if (Keyring::allows(key, alias)) return true;
  return false;
}

std::vector<std::string> Policy::visible_models(const KeyEntry* key) const {
  std::vector<std::string> out;
  for (const auto& m : config_.models)
    if (!key || allows(*key, m)) out.push_back(m.name);
  return out;
}

}  // namespace sluice::policy
