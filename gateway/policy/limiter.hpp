#pragma once
// Rate limits and token budgets: per key (rpm, tpm, concurrency, budget) and per model (rpm, tpm,
// concurrency). Pure and time-injected; the in-memory limiter here is the default, and the Redis one
// (store/) makes the same decisions for several replicas with the same arithmetic.
//
// Rates use GCRA (the generic cell rate algorithm): each bucket keeps a "theoretical arrival time" (TAT);
// a request costing c units of a limit L per period P moves it by c·P/L and is admitted while TAT − now
// stays within P. This admits exactly L at once from rest, then a steady L per P, with no burst at the
// edge of a window. Budgets are plain counters per fixed window aligned to the Unix epoch (a "1d" budget
// resets at 00:00 UTC), since that is what people mean by a daily allowance.
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "config.hpp"

namespace sluice::policy {

/// Wall-clock milliseconds since the Unix epoch. Limits are shared by replicas, so they use wall time.
using WallMs = std::int64_t;
WallMs wall_now();

enum class LimitKind { rpm, tpm, concurrency, budget, model_rpm, model_tpm, model_concurrency };
/// The `limit` label of sluice_rate_limited_total: "rpm", "tpm", "concurrency", "budget", "model_rpm", ...
std::string_view to_string(LimitKind k);

/// One GCRA bucket (a rate of `limit` units per `period_ms`).
struct Gcra {
  double tat = 0;  // theoretical arrival time, ms

  /// Would `cost` units be admitted now? Sets `wait_ms` to the time until they would be when not.
  bool fits(std::uint64_t limit, double period_ms, std::uint64_t cost, WallMs now, double& wait_ms) const;
  void take(std::uint64_t limit, double period_ms, std::uint64_t cost, WallMs now);
  /// Moves `delta` units (positive: charge more, negative: refund) after the fact.
  void adjust(std::uint64_t limit, double period_ms, std::int64_t delta, WallMs now);
  std::uint64_t remaining(std::uint64_t limit, double period_ms, WallMs now) const;
  WallMs until_full(WallMs now) const;  // time until the bucket is back to its full allowance
};

/// A token budget counted per fixed window.
struct Budget {
  std::int64_t window = -1;  // index of the window `used` belongs to (now / window_ms)
  std::uint64_t used = 0;
  std::uint64_t used_at(WallMs now, std::int64_t window_ms) const {
    return now / window_ms == window ? used : 0;
  }
};

/// The state of one limit, as the x-ratelimit-* headers report it.
struct WindowView {
  std::uint64_t limit = 0;  // 0: no such limit configured (headers are left out)
  std::uint64_t remaining = 0;
  WallMs reset_ms = 0;  // until the allowance is whole again
};

/// A key's and a model's in-memory limit state (LocalLimiter's, one per name). Never removed once made, so a
/// pointer to one stays good for the limiter's life.
struct KeyLimitState {
  std::mutex mutex;
  Gcra rpm, tpm;
  Budget budget;
  std::uint64_t active = 0;
};
struct ModelLimitState {
  std::mutex mutex;
  Gcra rpm, tpm;
  std::uint64_t active = 0;
};

/// What one request asks of the limits.
struct Demand {
  std::string key;  // key name; empty when auth is off (no key limits)
  KeyLimits key_limits;
  std::string model;
  ModelLimits model_limits;
  std::uint64_t tokens = 0;  // the reservation: estimated prompt tokens + the most it may generate
  // The in-memory limiter's states for the key and the model, found when the config snapshot was built (Policy),
  // so that a request looks up no name under the limiter's map lock, which every worker would share; nullptr:
  // found by name. Only the LocalLimiter that made them may be given them.
  KeyLimitState* key_state = nullptr;
  ModelLimitState* model_state = nullptr;

  /// True when the request is subject to key limits (there is a key, and it has some).
  bool key_limited() const { return !key.empty() && key_limits.any(); }
};

/// What was reserved for an admitted request, handed back to settle() when it ends.
struct Reservation {
  Demand demand;
  std::uint64_t key_tokens = 0, model_tokens = 0, budget_tokens = 0;  // each capped at its limit
  std::int64_t budget_window = -1;
  WallMs at = 0;
  bool remote = false;   // reserved in Redis (settled there), not in this process
  std::string lease;     // the concurrency lease's id (Redis)
};

/// The reservation a demand makes: its tokens, capped at each limit (a request larger than a whole allowance
/// waits for a full bucket rather than never fitting). The same for the in-memory and the Redis limiter.
Reservation reserve(const Demand& d);

/// The answer to one admission.
struct Admission {
  bool allowed = false;
  LimitKind refused = LimitKind::rpm;  // when !allowed
  WallMs retry_after_ms = 0;            // when !allowed
  WindowView requests, tokens;          // for the x-ratelimit-* headers
  std::optional<std::uint64_t> budget_remaining;  // when the key has a budget
  Reservation reservation;              // when allowed
};

/// The per-request token reservation: prompt estimate plus max_tokens (or the configured estimate).
std::uint64_t token_reservation(std::uint64_t prompt_estimate, std::optional<std::uint64_t> max_tokens,
                                std::uint64_t completion_estimate);

/// The in-memory limiter: thread-safe; each key and each model has its own lock, and an admission
/// holds at most one of each (always key before model), so workers rarely contend.
class LocalLimiter {
 public:
  /// Told each key's budget left whenever admit() or settle() changes or reads it, under that key's lock, so
  /// concurrent settlements on several workers reach it in the order they happened (a gauge set after the
  /// lock is released could be overwritten by an older figure).
  using BudgetObserver = std::function<void(const std::string& key, std::uint64_t left)>;
  LocalLimiter() = default;
  explicit LocalLimiter(BudgetObserver observer) : observer_(std::move(observer)) {}

  Admission admit(const Demand& d, WallMs now);
  /// Ends a reservation: releases concurrency and charges `used_tokens` instead of the estimate (nullopt:
  /// usage unknown, the reservation stays charged as it was). Returns the key's budget left (when it has one).
  std::optional<std::uint64_t> settle(const Reservation& r, std::optional<std::uint64_t> used_tokens, WallMs now);

  /// The state of a key's limits and of a model's, by name, made on first use (for Demand::key_state and
  /// Demand::model_state).
  KeyLimitState* key_state(const std::string& key) { return state(keys_, key); }
  ModelLimitState* model_state(const std::string& model) { return state(models_, model); }

 private:
  using KeyState = KeyLimitState;
  using ModelState = ModelLimitState;
  /// The states a demand's limits are kept in: the ones it carries, else found by name; nullptr where it has none.
  std::pair<KeyState*, ModelState*> states(const Demand& d);
  template <class State>
  State* state(std::unordered_map<std::string, std::unique_ptr<State>>& map, const std::string& name);

  BudgetObserver observer_;
  std::shared_mutex maps_mutex_;  // guards the maps, not the states (states are never removed)
  std::unordered_map<std::string, std::unique_ptr<KeyState>> keys_;
  std::unordered_map<std::string, std::unique_ptr<ModelState>> models_;
};

/// The error for a refused admission (429, OpenAI's shape: code rate_limit_exceeded, type requests|tokens).
struct RefusalText {
  std::string message;
  std::string type;  // "requests" | "tokens"
};
RefusalText refusal_text(const Admission& a, const Demand& d);

}  // namespace sluice::policy
