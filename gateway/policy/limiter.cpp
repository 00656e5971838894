#include "policy/limiter.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "duration.hpp"

namespace sluice::policy {

namespace {

constexpr double kMinute = 60'000;

// What `cost` units move a bucket's TAT, floored to a 1/1024 ms grid: a double holding epoch milliseconds
// (< 2^43) adds such steps exactly, so rounding cannot drift (unrounded, 9 rpm admitted 8 from rest).
double span(std::uint64_t limit, double period_ms, std::uint64_t cost) {
  return std::floor(static_cast<double>(cost) * period_ms / static_cast<double>(limit) * 1024) / 1024;
}

WindowView gcra_view(const Gcra& g, std::uint64_t limit, WallMs now) {
  return {limit, g.remaining(limit, kMinute, now), g.until_full(now)};
}

WindowView budget_view(const Budget& b, const KeyLimits& l, WallMs now) {
  auto w = l.budget_window.count();
  auto used = b.used_at(now, w);
  return {l.budget, used >= l.budget ? 0 : l.budget - used, (now / w + 1) * w - now};
}

}  // namespace

WallMs wall_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string_view to_string(LimitKind k) {
  switch (k) {
    case LimitKind::rpm: return "rpm";
    case LimitKind::tpm: return "tpm";
    case LimitKind::concurrency: return "concurrency";
    case LimitKind::budget: return "budget";
    case LimitKind::model_rpm: return "model_rpm";
    case LimitKind::model_tpm: return "model_tpm";
    case LimitKind::model_concurrency: return "model_concurrency";
  }
  return "rpm";
}

bool Gcra::fits(std::uint64_t limit, double period_ms, std::uint64_t cost, WallMs now, double& wait_ms) const {
  double next = std::max(tat, static_cast<double>(now)) + span(limit, period_ms, cost);
  double over = next - static_cast<double>(now) - period_ms;
  // A little slack for floating point: L requests of cost 1 from rest must all fit.
  if (over <= 1e-6) return true;
  wait_ms = over;
  return false;
}

void Gcra::take(std::uint64_t limit, double period_ms, std::uint64_t cost, WallMs now) {
  tat = std::max(tat, static_cast<double>(now)) + span(limit, period_ms, cost);
}

void Gcra::adjust(std::uint64_t limit, double period_ms, std::int64_t delta, WallMs now) {
  auto step = span(limit, period_ms, static_cast<std::uint64_t>(delta < 0 ? -delta : delta));
  // A charge after the fact counts from now, like an admission (idle time before it cannot absorb it);
  // a refund cannot make the bucket fuller than full. The Redis script does the same.
  if (delta > 0)
    tat = std::max(tat, static_cast<double>(now)) + step;
  else
    tat = std::max(tat - step, static_cast<double>(now));
}

std::uint64_t Gcra::remaining(std::uint64_t limit, double period_ms, WallMs now) const {
  double t = period_ms / static_cast<double>(limit);
  double backlog = std::max(0.0, tat - static_cast<double>(now));
  double left = std::floor((period_ms - backlog) / t + 1e-9);
  return left <= 0 ? 0 : std::min<std::uint64_t>(limit, static_cast<std::uint64_t>(left));
}

WallMs Gcra::until_full(WallMs now) const {
  return static_cast<WallMs>(std::ceil(std::max(0.0, tat - static_cast<double>(now))));
}

std::uint64_t token_reservation(std::uint64_t prompt_estimate, std::optional<std::uint64_t> max_tokens,
                                std::uint64_t completion_estimate) {
  return prompt_estimate + (max_tokens ? *max_tokens : completion_estimate);
}

Reservation reserve(const Demand& d) {
  Reservation r;
  r.demand = d;
  r.key_tokens = std::min(d.tokens, d.key_limits.tpm);
  r.model_tokens = std::min(d.tokens, d.model_limits.tpm);
  r.budget_tokens = std::min(d.tokens, d.key_limits.budget);
  return r;
}

template <class State>
State* LocalLimiter::state(std::unordered_map<std::string, std::unique_ptr<State>>& map, const std::string& name) {
  {
    std::shared_lock lock(maps_mutex_);
    auto it = map.find(name);
    if (it != map.end()) return it->second.get();
  }
  std::unique_lock lock(maps_mutex_);
  auto& slot = map[name];
  if (!slot) slot = std::make_unique<State>();
  return slot.get();
}

std::pair<LocalLimiter::KeyState*, LocalLimiter::ModelState*> LocalLimiter::states(const Demand& d) {
  KeyState* ks = d.key_limited() ? (d.key_state ? d.key_state : state(keys_, d.key)) : nullptr;
  ModelState* ms = d.model_limits.any() ? (d.model_state ? d.model_state : state(models_, d.model)) : nullptr;
  return {ks, ms};
}

Admission LocalLimiter::admit(const Demand& d, WallMs now) {
  Admission a;
  const auto& kl = d.key_limits;
  const auto& ml = d.model_limits;
  auto [ks, ms] = states(d);
  // Key before model, always: no two admissions can wait on each other.
  std::unique_lock<std::mutex> key_lock, model_lock;
  if (ks) key_lock = std::unique_lock(ks->mutex);
  if (ms) model_lock = std::unique_lock(ms->mutex);

  Reservation& r = a.reservation;
  r = reserve(d);
  r.at = now;
  if (kl.budget) r.budget_window = now / kl.budget_window.count();

  auto refuse = [&](LimitKind k, double wait_ms) {
    a.allowed = false;
    a.refused = k;
    a.retry_after_ms = static_cast<WallMs>(std::ceil(std::max(wait_ms, 1.0)));
  };
  double wait = 0;
  bool ok = true;
  if (ks) {
    if (kl.concurrency && ks->active >= kl.concurrency) {
      refuse(LimitKind::concurrency, 1000), ok = false;
    } else if (kl.rpm && !ks->rpm.fits(kl.rpm, kMinute, 1, now, wait)) {
      refuse(LimitKind::rpm, wait), ok = false;
    } else if (kl.tpm && !ks->tpm.fits(kl.tpm, kMinute, r.key_tokens, now, wait)) {
      refuse(LimitKind::tpm, wait), ok = false;
    } else if (kl.budget && ks->budget.used_at(now, kl.budget_window.count()) + r.budget_tokens > kl.budget) {
      refuse(LimitKind::budget, static_cast<double>(budget_view(ks->budget, kl, now).reset_ms)), ok = false;
    }
  }
  if (ok && ms) {
    if (ml.concurrency && ms->active >= ml.concurrency) {
      refuse(LimitKind::model_concurrency, 1000), ok = false;
    } else if (ml.rpm && !ms->rpm.fits(ml.rpm, kMinute, 1, now, wait)) {
      refuse(LimitKind::model_rpm, wait), ok = false;
    } else if (ml.tpm && !ms->tpm.fits(ml.tpm, kMinute, r.model_tokens, now, wait)) {
      refuse(LimitKind::model_tpm, wait), ok = false;
    }
  }
  if (ok) {
    a.allowed = true;
    if (ks) {
      if (kl.rpm) ks->rpm.take(kl.rpm, kMinute, 1, now);
      if (kl.tpm) ks->tpm.take(kl.tpm, kMinute, r.key_tokens, now);
      if (kl.budget) {
        if (ks->budget.window != r.budget_window) ks->budget = {r.budget_window, 0};
        ks->budget.used += r.budget_tokens;
      }
      ++ks->active;
    }
    if (ms) {
      if (ml.rpm) ms->rpm.take(ml.rpm, kMinute, 1, now);
      if (ml.tpm) ms->tpm.take(ml.tpm, kMinute, r.model_tokens, now);
      ++ms->active;
    }
  }
  // What the headers report: the key's own limits first, else the model's; for tokens, the budget last.
  if (ks && kl.rpm)
    a.requests = gcra_view(ks->rpm, kl.rpm, now);
  else if (ms && ml.rpm)
    a.requests = gcra_view(ms->rpm, ml.rpm, now);
  if (ks && kl.tpm)
    a.tokens = gcra_view(ks->tpm, kl.tpm, now);
  else if (ms && ml.tpm)
    a.tokens = gcra_view(ms->tpm, ml.tpm, now);
  else if (ks && kl.budget)
    a.tokens = budget_view(ks->budget, kl, now);
  if (ks && kl.budget) {
    a.budget_remaining = budget_view(ks->budget, kl, now).remaining;
    if (observer_) observer_(d.key, *a.budget_remaining);
  }
  return a;
}

std::optional<std::uint64_t> LocalLimiter::settle(const Reservation& r, std::optional<std::uint64_t> used_tokens,
                                                  WallMs now) {
  const auto& d = r.demand;
  const auto& kl = d.key_limits;
  const auto& ml = d.model_limits;
  // The same states admit() locked (chosen from the limits at admission, not the current config).
  auto [ks, ms] = states(d);
  // Unknown usage keeps each reservation as it was charged (capped at its limit), never the raw estimate.
  auto delta = [&](std::uint64_t reserved) {
    return used_tokens ? static_cast<std::int64_t>(*used_tokens) - static_cast<std::int64_t>(reserved) : 0;
  };
  std::optional<std::uint64_t> budget_left;
  if (ks) {
    std::lock_guard lock(ks->mutex);
    if (ks->active) --ks->active;
    if (kl.tpm) ks->tpm.adjust(kl.tpm, kMinute, delta(r.key_tokens), now);
    if (kl.budget) {
      auto window = now / kl.budget_window.count();
      std::uint64_t used = used_tokens.value_or(r.budget_tokens);
      if (window == r.budget_window && ks->budget.window == r.budget_window) {
        // Still the window it was reserved in: replace the estimate by what was used.
        auto with_refund = ks->budget.used - std::min(ks->budget.used, r.budget_tokens);
        ks->budget.used = with_refund + used;
      } else if (used > r.budget_tokens) {
        // The window rolled over meanwhile: only an overrun is left to charge, to the new window.
        if (ks->budget.window != window) ks->budget = {window, 0};
        ks->budget.used += used - r.budget_tokens;
      }
      budget_left = budget_view(ks->budget, kl, now).remaining;
      if (observer_) observer_(d.key, *budget_left);
    }
  }
  if (ms) {
    std::lock_guard lock(ms->mutex);
    if (ms->active) --ms->active;
    if (ml.tpm) ms->tpm.adjust(ml.tpm, kMinute, delta(r.model_tokens), now);
  }
  return budget_left;
}

RefusalText refusal_text(const Admission& a, const Demand& d) {
  auto wait = format_duration(std::chrono::milliseconds(a.retry_after_ms));
  const auto& kl = d.key_limits;
  const auto& ml = d.model_limits;
  auto rate = [&](const char* who, const std::string& name, const char* what, const char* unit,
                  std::uint64_t limit) {
    return std::string("Rate limit reached for ") + who + " `" + name + "` on " + what + " per min (" + unit +
           "): Limit " + std::to_string(limit) + ". Please try again in " + wait + ".";
  };
  switch (a.refused) {
    case LimitKind::rpm: return {rate("key", d.key, "requests", "RPM", kl.rpm), "requests"};
    case LimitKind::tpm:
      return {rate("key", d.key, "tokens", "TPM", kl.tpm) + " Requested " + std::to_string(d.tokens) +
                  " tokens (prompt estimate plus max_tokens).",
              "tokens"};
    case LimitKind::concurrency:
      return {"Too many concurrent requests for key `" + d.key + "`: Limit " + std::to_string(kl.concurrency) +
                  ". Wait for one of them to finish.",
              "requests"};
    case LimitKind::budget:
      return {"Token budget exhausted for key `" + d.key + "`: Limit " + std::to_string(kl.budget) + " tokens per " +
                  format_duration(kl.budget_window) + ". It renews in " + wait + ".",
              "tokens"};
    case LimitKind::model_rpm: return {rate("model", d.model, "requests", "RPM", ml.rpm), "requests"};
    case LimitKind::model_tpm: return {rate("model", d.model, "tokens", "TPM", ml.tpm), "tokens"};
    case LimitKind::model_concurrency:
      return {"Too many concurrent requests for model `" + d.model + "`: Limit " +
                  std::to_string(ml.concurrency) + ". Please try again shortly.",
              "requests"};
  }
  return {"Rate limit reached.", "requests"};
}

}  // namespace sluice::policy
