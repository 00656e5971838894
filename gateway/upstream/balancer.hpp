#pragma once
// Which backend a request goes to: backend health shared by all workers, and the order of attempts.
// Pure logic with time injected; no sockets.
#include <atomic>
#include <boost/container/small_vector.hpp>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "config.hpp"

namespace sluice::upstream {

using SteadyTime = std::chrono::steady_clock::time_point;

/// One backend's health as every worker sees it: active probe result, passive outlier ejection
/// (consecutive failures eject it for a cooldown that doubles on each ejection in a row, capped),
/// the single half-open trial after a cooldown, and the requests in flight. A healthy backend's requests take
/// no lock: available(), admit() and success() read two flags the locked changes publish, and lock only when
/// the backend is ejected or has failures to forget.
class BackendState {
 public:
  /// `trial_limit`: how long a half-open trial may go without reporting before it counts as lost (the backend's
  /// `total` deadline and an `idle` timeout for the last client write, past which its request cannot still be
  /// running).
  explicit BackendState(OutlierConfig cfg, std::chrono::milliseconds trial_limit = std::chrono::minutes(10))
      : cfg_(cfg), trial_limit_(trial_limit) {}

  /// Would a request be admitted now? (Does not claim the half-open trial.)
  bool available(SteadyTime now) const;
  /// Admits a request: false while probes say down or while ejected; after the cooldown, admits
  /// exactly one trial request until it reports back, or until `trial_limit` has passed without a report (a
  /// request that ended without one, by an exception or a shutdown, must not keep the backend out for good).
  bool admit(SteadyTime now);
  /// The outcome of an admitted request. Each returns true when it ejected the backend or brought it back.
  bool success();
  bool failure(SteadyTime now);
  void neutral();  // no verdict (the client left, or the backend said 429): frees a half-open trial

  void set_probe_result(bool ok) { probe_up_ = ok; }
  bool probe_up() const { return probe_up_; }
  /// For sluice_backend_up and /readyz: probes say up and it is not ejected.
  bool up(SteadyTime now) const;

  std::atomic<int> inflight{0};

 private:
  void eject(SteadyTime now);
  void publish();  // under the lock, after a change: the flags below

  bool trial_pending(SteadyTime now) const { return trial_in_flight_ && now < trial_started_ + trial_limit_; }

  const OutlierConfig cfg_;
  const std::chrono::milliseconds trial_limit_;
  // Set under the lock (publish) for the lock-free paths: ejected_ as it is, and whether success() would change
  // nothing. A path that reads one as a change is being made runs as if just before that change.
  std::atomic<bool> ejected_flag_{false};
  std::atomic<bool> clean_{true};
  mutable std::mutex mutex_;
  unsigned consecutive_failures_ = 0;
  unsigned ejections_ = 0;  // in a row; reset by a success
  bool ejected_ = false;
  bool trial_in_flight_ = false;
  SteadyTime trial_started_{};
  SteadyTime ejected_until_{};
  std::atomic<bool> probe_up_{true};
};

/// A target as the planner sees it.
struct Candidate {
  unsigned weight = 1;
  int inflight = 0;
  unsigned max_inflight = 0;  // 0: no limit
  bool available = true;      // healthy, not ejected
};

/// The order in which to try a model's targets (indices into `candidates`), at most `max_attempts`.
/// `fallback`: config order. `balance`: the first pick is the less loaded (in-flight per weight) of two
/// drawn at random in proportion to their weights; the rest follow, least loaded first.
/// Full targets (at max_inflight) are left out. Unavailable ones are left out too, unless none is
/// available: then all are tried in order rather than failing outright (panic mode).
/// Held inline for the few targets a model has (no allocation per request).
using AttemptPlan = boost::container::small_vector<std::size_t, 8>;
using Candidates = boost::container::small_vector<Candidate, 8>;
AttemptPlan plan_attempts(bool balance, std::span<const Candidate> candidates, unsigned max_attempts,
                          std::mt19937_64& rng);

/// Retries in flight may not exceed max(min_retries, ratio × requests in flight): a failing backend
/// cannot make the gateway multiply its load by max_attempts.
class RetryBudget {
 public:
  void request_started() { ++active_; }
  void request_finished() { --active_; }
  /// Claims a retry if the budget allows; pair with retry_finished().
  bool try_retry();
  void retry_finished() { --retries_; }

 private:
  static constexpr int kMinRetries = 3;
  static constexpr int kRatioPercent = 20;
  std::atomic<int> active_{0};
  std::atomic<int> retries_{0};
};

}  // namespace sluice::upstream
