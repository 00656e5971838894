#include "upstream/balancer.hpp"

#include <algorithm>
#include <numeric>

namespace sluice::upstream {

void BackendState::publish() {
  ejected_flag_.store(ejected_, std::memory_order_release);
  clean_.store(!ejected_ && !trial_in_flight_ && consecutive_failures_ == 0 && ejections_ == 0,
               std::memory_order_release);
}

bool BackendState::available(SteadyTime now) const {
  if (!probe_up_) return false;
  if (!ejected_flag_.load(std::memory_order_acquire)) return true;
  std::lock_guard lock(mutex_);
  return !ejected_ || (now >= ejected_until_ && !trial_pending(now));
}

bool BackendState::admit(SteadyTime now) {
  if (!probe_up_) return false;
  if (!ejected_flag_.load(std::memory_order_acquire)) return true;
  std::lock_guard lock(mutex_);
  if (!ejected_) return true;
  if (now < ejected_until_ || trial_pending(now)) return false;
  trial_in_flight_ = true;  // half-open: this request decides (or one after it, should this one be lost)
  trial_started_ = now;
  publish();
  return true;
}

bool BackendState::success() {
  if (clean_.load(std::memory_order_acquire)) return false;  // nothing to forget
  std::lock_guard lock(mutex_);
  bool was_ejected = ejected_;
  consecutive_failures_ = 0;
  ejections_ = 0;
  ejected_ = false;
  trial_in_flight_ = false;
  publish();
  return was_ejected;
}

void BackendState::eject(SteadyTime now) {
  ++ejections_;
  auto cooldown = cfg_.base_ejection;
  for (unsigned i = 1; i < ejections_ && cooldown < cfg_.max_ejection; ++i) cooldown *= 2;
  ejected_ = true;
  ejected_until_ = now + std::min(cooldown, cfg_.max_ejection);
  consecutive_failures_ = 0;
}

bool BackendState::failure(SteadyTime now) {
  std::lock_guard lock(mutex_);
  bool flipped = false;
  if (ejected_) {
    // A failed half-open trial (or a late failure of a request admitted before the ejection).
    if (trial_in_flight_) {
      trial_in_flight_ = false;
      eject(now);
      flipped = true;
    }
  } else if (cfg_.consecutive_failures > 0 && ++consecutive_failures_ >= cfg_.consecutive_failures) {
    eject(now);
    flipped = true;
  }
  publish();
  return flipped;
}

void BackendState::neutral() {
  std::lock_guard lock(mutex_);
  trial_in_flight_ = false;
  publish();
}

bool BackendState::up(SteadyTime now) const {
  if (!probe_up_) return false;
  std::lock_guard lock(mutex_);
  return !ejected_ || now >= ejected_until_;
}

AttemptPlan plan_attempts(bool balance, std::span<const Candidate> candidates, unsigned max_attempts,
                          std::mt19937_64& rng) {
  auto not_full = [&](std::size_t i) {
    const auto& c = candidates[i];
    return c.max_inflight == 0 || c.inflight < static_cast<int>(c.max_inflight);
  };
  AttemptPlan pool;
  for (std::size_t i = 0; i < candidates.size(); ++i)
    if (candidates[i].available && not_full(i)) pool.push_back(i);
  if (pool.empty()) {  // panic mode: nothing healthy, so try what is not full rather than fail at once
    bool any_available = false;
    for (const auto& c : candidates) any_available |= c.available;
    if (!any_available)
      for (std::size_t i = 0; i < candidates.size(); ++i)
        if (not_full(i)) pool.push_back(i);
  }
  if (balance && pool.size() > 1) {
    auto load = [&](std::size_t i) {
      // In flight per weight. Idle targets tie at 0, and the weighted draw then decides, so
      // traffic that never overlaps still splits by weight.
      return static_cast<double>(candidates[i].inflight) / std::max(1u, candidates[i].weight);
    };
    auto draw = [&](std::size_t exclude) {
      double total = 0;
      for (auto i : pool)
        if (i != exclude) total += std::max(1u, candidates[i].weight);
      double x = std::uniform_real_distribution<double>(0, total)(rng);
      for (auto i : pool) {
        if (i == exclude) continue;
        x -= std::max(1u, candidates[i].weight);
        if (x < 0) return i;
      }
      return pool.back() == exclude ? pool.front() : pool.back();
    };
    auto a = draw(candidates.size());
    auto b = draw(a);
    auto first = load(b) < load(a) ? b : a;  // a tie keeps the first draw
    std::stable_sort(pool.begin(), pool.end(),
                     [&](std::size_t x, std::size_t y) { return load(x) < load(y); });
    std::rotate(pool.begin(), std::find(pool.begin(), pool.end(), first),
                std::find(pool.begin(), pool.end(), first) + 1);
  }
  if (pool.size() > max_attempts) pool.resize(max_attempts);
  return pool;
}

bool RetryBudget::try_retry() {
  int allowed = std::max(kMinRetries, active_.load() * kRatioPercent / 100);
  if (++retries_ > allowed) {
    --retries_;
    return false;
  }
  return true;
}

}  // namespace sluice::upstream
