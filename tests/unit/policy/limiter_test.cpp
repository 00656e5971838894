#include "policy/limiter.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace sluice::policy {
namespace {

constexpr double kMinute = 60'000;
constexpr WallMs kDay = 86'400'000;
constexpr WallMs kHour = 3'600'000;
constexpr WallMs kT0 = 1'764'000'000'123;        // an ordinary instant, aligned to nothing
constexpr WallMs kMidnight = 1'764'028'800'000;  // 2025-11-25 00:00:00 UTC
static_assert(kMidnight % kDay == 0);

// Takes `cost` units at `now` for as long as they fit; returns how many were taken.
std::uint64_t burst(Gcra& g, std::uint64_t limit, std::uint64_t cost, WallMs now) {
  std::uint64_t n = 0;
  double wait = 0;
  while (n <= limit && g.fits(limit, kMinute, cost, now, wait)) {
    g.take(limit, kMinute, cost, now);
    ++n;
  }
  return n;
}

Demand demand(std::string key, KeyLimits kl, std::uint64_t tokens = 0, std::string model = "llama",
              ModelLimits ml = {}) {
  Demand d;
  d.key = std::move(key);
  d.key_limits = kl;
  d.model = std::move(model);
  d.model_limits = ml;
  d.tokens = tokens;
  return d;
}

// Admits `d` at `now` until the first refusal; returns how many were admitted (their reservations are kept).
int admit_until_refused(LocalLimiter& l, const Demand& d, WallMs now, std::vector<Reservation>* kept = nullptr) {
  int n = 0;
  while (n < 100'000) {
    Admission a = l.admit(d, now);
    if (!a.allowed) break;
    if (kept) kept->push_back(a.reservation);
    ++n;
  }
  return n;
}

void expect_view(const WindowView& v, std::uint64_t limit, std::uint64_t remaining, WallMs reset_ms) {
  EXPECT_EQ(v.limit, limit);
  EXPECT_EQ(v.remaining, remaining);
  EXPECT_EQ(v.reset_ms, reset_ms);
}

// --- GCRA -------------------------------------------------------------------------------------------

TEST(Gcra, AdmitsExactlyTheLimitAtOnce) {
  Gcra g;
  double wait = -1;
  for (int i = 0; i < 60; ++i) {
    ASSERT_TRUE(g.fits(60, kMinute, 1, kT0, wait)) << i;
    g.take(60, kMinute, 1, kT0);
  }
  EXPECT_FALSE(g.fits(60, kMinute, 1, kT0, wait));
  EXPECT_DOUBLE_EQ(wait, 1000);  // one interval of 60 s / 60
}

TEST(Gcra, EveryLimitAdmitsExactlyItselfFromRest) {
  // Epoch milliseconds are large doubles; rounding once made 9 rpm (and 90, 7777, ...) admit one less.
  for (WallMs now : {kT0, kMidnight, kMidnight + 59'999}) {
    for (std::uint64_t limit = 1; limit <= 2000; ++limit) {
      Gcra g;
      ASSERT_EQ(burst(g, limit, 1, now), limit) << "limit " << limit << " at " << now;
      Gcra one;
      one.take(limit, kMinute, 1, now);
      ASSERT_EQ(one.remaining(limit, kMinute, now), limit - 1) << "limit " << limit;
    }
  }
  for (std::uint64_t limit : {7'777u, 90'000u, 1'000'000u}) {
    Gcra g;
    EXPECT_EQ(burst(g, limit, 1000, kT0), limit / 1000) << limit;
  }
  Gcra g;
  EXPECT_EQ(burst(g, 150'000, 700, kT0), 214u);  // 214·700 = 149'800; one more would be 150'500
  double wait = 0;
  EXPECT_FALSE(g.fits(150'000, kMinute, 700, kT0, wait));
  EXPECT_NEAR(wait, 200, 1e-6);  // 500 tokens over, at 0.4 ms each
}

TEST(Gcra, RefillsOneIntervalAtATime) {
  Gcra g;
  ASSERT_EQ(burst(g, 60, 1, kT0), 60u);
  double wait = 0;
  EXPECT_FALSE(g.fits(60, kMinute, 1, kT0 + 999, wait));
  EXPECT_DOUBLE_EQ(wait, 1);
  EXPECT_EQ(burst(g, 60, 1, kT0 + 1000), 1u);  // after 1 s exactly one more
  EXPECT_FALSE(g.fits(60, kMinute, 1, kT0 + 1000, wait));
  EXPECT_DOUBLE_EQ(wait, 1000);
  EXPECT_EQ(burst(g, 60, 1, kT0 + 3500), 2u);  // 2.5 s more: two whole intervals
}

TEST(Gcra, FullAgainAfterAPeriod) {
  Gcra g;
  ASSERT_EQ(burst(g, 60, 1, kT0), 60u);
  EXPECT_EQ(burst(g, 60, 1, kT0 + 60'000), 60u);
  EXPECT_EQ(burst(g, 60, 1, kT0 + 90'000), 30u);
  EXPECT_EQ(burst(g, 60, 1, kT0 + 10 * 60'000), 60u);  // idle longer than a period: still only full, not more
}

TEST(Gcra, NoBurstAtTheEdgeOfAClockMinute) {
  // A fixed per-minute counter would allow 60 at 00:00:59 and 60 more at 00:01:01; GCRA allows the refill only.
  Gcra g;
  ASSERT_EQ(burst(g, 60, 1, kMidnight + 59'000), 60u);
  EXPECT_EQ(burst(g, 60, 1, kMidnight + 61'000), 2u);
  EXPECT_EQ(burst(g, 60, 1, kMidnight + 120'000), 59u);  // 59 s later: 59 more
}

TEST(Gcra, SteadyRateAtTheLimitIsNeverRefused) {
  Gcra g;
  double wait = 0;
  for (int i = 0; i < 600; ++i) {
    WallMs now = kT0 + i * 1000;
    ASSERT_TRUE(g.fits(60, kMinute, 1, now, wait)) << i;
    g.take(60, kMinute, 1, now);
  }
  // The same after a full burst: 1/s keeps being admitted, one more at any instant is not.
  Gcra h;
  ASSERT_EQ(burst(h, 90, 1, kT0), 90u);
  for (int i = 1; i <= 900; ++i) {
    WallMs now = kT0 + (i * 2000 + 2) / 3;  // every 666.67 ms, rounded up to the next whole ms
    ASSERT_EQ(burst(h, 90, 1, now), 1u) << i;
  }
}

TEST(Gcra, GreedyClientGetsTheBurstThenTheRate) {
  Gcra g;
  std::uint64_t admitted = 0;
  for (WallMs elapsed = 0; elapsed <= 180'000; elapsed += 250) {
    admitted += burst(g, 60, 1, kT0 + elapsed);
    ASSERT_EQ(admitted, 60u + static_cast<std::uint64_t>(elapsed / 1000)) << elapsed;
  }
}

TEST(Gcra, TwiceTheRateForAMinuteGetsTheBurstPlusTheRefill) {
  // 120 requests, one every 500 ms over [0 s, 60 s): 60 at once plus one per second in between.
  Gcra g;
  int admitted = 0;
  double wait = 0;
  for (int i = 0; i < 120; ++i) {
    WallMs now = kT0 + i * 500;
    if (g.fits(60, kMinute, 1, now, wait)) {
      g.take(60, kMinute, 1, now);
      ++admitted;
    } else {
      EXPECT_EQ(i, 119);  // only the last one is early
      EXPECT_DOUBLE_EQ(wait, 500);
    }
  }
  EXPECT_EQ(admitted, 119);  // 60 + 59.5 s of refill
}

TEST(Gcra, RemainingAndUntilFull) {
  Gcra g;
  EXPECT_EQ(g.remaining(60, kMinute, kT0), 60u);
  EXPECT_EQ(g.until_full(kT0), 0);
  g.take(60, kMinute, 1, kT0);
  EXPECT_EQ(g.remaining(60, kMinute, kT0), 59u);
  EXPECT_EQ(g.until_full(kT0), 1000);
  burst(g, 60, 1, kT0);
  EXPECT_EQ(g.remaining(60, kMinute, kT0), 0u);
  EXPECT_EQ(g.until_full(kT0), 60'000);
  EXPECT_EQ(g.remaining(60, kMinute, kT0 + 500), 0u);  // half an interval is not a request
  EXPECT_EQ(g.until_full(kT0 + 500), 59'500);
  EXPECT_EQ(g.remaining(60, kMinute, kT0 + 1000), 1u);
  EXPECT_EQ(g.remaining(60, kMinute, kT0 + 42'700), 42u);
  EXPECT_EQ(g.until_full(kT0 + 42'700), 17'300);
  EXPECT_EQ(g.remaining(60, kMinute, kT0 + 60'000), 60u);
  EXPECT_EQ(g.until_full(kT0 + 60'000), 0);
  EXPECT_EQ(g.remaining(60, kMinute, kT0 + 99'000), 60u);  // never more than the limit
  EXPECT_EQ(g.until_full(kT0 + 99'000), 0);

  Gcra h;  // an interval that is not a whole number of ms (60 s / 90) rounds up
  h.take(90, kMinute, 1, kT0);
  EXPECT_EQ(h.remaining(90, kMinute, kT0), 89u);
  EXPECT_EQ(h.until_full(kT0), 667);
}

TEST(Gcra, RefundNeverMakesTheBucketFullerThanFull) {
  Gcra g;
  g.take(60, kMinute, 10, kT0);
  EXPECT_EQ(g.remaining(60, kMinute, kT0), 50u);
  g.adjust(60, kMinute, -4, kT0);
  EXPECT_EQ(g.remaining(60, kMinute, kT0), 54u);
  g.adjust(60, kMinute, -100, kT0);  // more than was taken
  EXPECT_EQ(g.remaining(60, kMinute, kT0), 60u);
  EXPECT_EQ(g.until_full(kT0), 0);
  EXPECT_EQ(burst(g, 60, 1, kT0), 60u);  // the excess refund is not credit

  Gcra idle;  // a refund to a bucket that has long been full
  idle.take(60, kMinute, 5, kT0);
  idle.adjust(60, kMinute, -5, kT0 + 120'000);
  EXPECT_EQ(burst(idle, 60, 1, kT0 + 120'000), 60u);
}

TEST(Gcra, ChargeDelaysTheNextAdmissionByItsCost) {
  Gcra g;
  ASSERT_EQ(burst(g, 60, 1, kT0), 60u);
  g.adjust(60, kMinute, 5, kT0);  // 5 more than reserved: 5 s more to wait
  double wait = 0;
  EXPECT_FALSE(g.fits(60, kMinute, 1, kT0, wait));
  EXPECT_DOUBLE_EQ(wait, 6000);
  EXPECT_FALSE(g.fits(60, kMinute, 1, kT0 + 5999, wait));
  EXPECT_DOUBLE_EQ(wait, 1);
  EXPECT_TRUE(g.fits(60, kMinute, 1, kT0 + 6000, wait));

  Gcra tokens;  // 1000 per minute, 60 ms each
  tokens.take(1000, kMinute, 1000, kT0);
  tokens.adjust(1000, kMinute, 500, kT0);
  EXPECT_EQ(tokens.until_full(kT0), 90'000);
  EXPECT_FALSE(tokens.fits(1000, kMinute, 100, kT0, wait));
  EXPECT_DOUBLE_EQ(wait, 36'000);  // 1600 tokens' worth against a 1000-token allowance
}

// --- LocalLimiter -----------------------------------------------------------------------------------

TEST(LocalLimiter, KeyRpm) {
  LocalLimiter l;
  const Demand d = demand("alice", {.rpm = 60});
  Admission first = l.admit(d, kT0);
  ASSERT_TRUE(first.allowed);
  expect_view(first.requests, 60, 59, 1000);
  EXPECT_EQ(first.tokens.limit, 0u);
  EXPECT_FALSE(first.budget_remaining);
  EXPECT_EQ(admit_until_refused(l, d, kT0), 59);

  Admission refused = l.admit(d, kT0);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.refused, LimitKind::rpm);
  EXPECT_EQ(refused.retry_after_ms, 1000);
  expect_view(refused.requests, 60, 0, 60'000);

  EXPECT_FALSE(l.admit(d, kT0 + 999).allowed);
  Admission later = l.admit(d, kT0 + 1000);
  ASSERT_TRUE(later.allowed);
  expect_view(later.requests, 60, 0, 60'000);
  EXPECT_EQ(admit_until_refused(l, d, kT0 + 61'000), 60);
}

TEST(LocalLimiter, KeyTpm) {
  LocalLimiter l;
  const Demand d = demand("alice", {.tpm = 1000}, 300);
  Admission a = l.admit(d, kT0);
  ASSERT_TRUE(a.allowed);
  EXPECT_EQ(a.reservation.key_tokens, 300u);
  expect_view(a.tokens, 1000, 700, 18'000);
  EXPECT_EQ(a.requests.limit, 0u);
  ASSERT_TRUE(l.admit(d, kT0).allowed);
  a = l.admit(d, kT0);
  ASSERT_TRUE(a.allowed);
  expect_view(a.tokens, 1000, 100, 54'000);

  Admission refused = l.admit(d, kT0);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.refused, LimitKind::tpm);
  EXPECT_EQ(refused.retry_after_ms, 12'000);  // 200 tokens over, 60 ms each
  expect_view(refused.tokens, 1000, 100, 54'000);
  EXPECT_TRUE(l.admit(demand("alice", {.tpm = 1000}, 100), kT0).allowed);  // a smaller one still fits

  EXPECT_EQ(l.admit(d, kT0 + 11'999).retry_after_ms, 6001);  // the 100 above took 6 s more
  EXPECT_TRUE(l.admit(d, kT0 + 18'000).allowed);
}

TEST(LocalLimiter, RequestLargerThanTheTpmIsAdmittedFromRestThenBlocks) {
  LocalLimiter l;
  const Demand big = demand("alice", {.tpm = 1000}, 5000);
  Admission a = l.admit(big, kT0);
  ASSERT_TRUE(a.allowed);
  EXPECT_EQ(a.reservation.key_tokens, 1000u);  // capped at the whole allowance
  expect_view(a.tokens, 1000, 0, 60'000);

  Admission again = l.admit(big, kT0 + 1);
  EXPECT_FALSE(again.allowed);
  EXPECT_EQ(again.refused, LimitKind::tpm);
  EXPECT_EQ(again.retry_after_ms, 59'999);
  Admission tiny = l.admit(demand("alice", {.tpm = 1000}, 1), kT0);
  EXPECT_FALSE(tiny.allowed);
  EXPECT_EQ(tiny.retry_after_ms, 60);
  EXPECT_TRUE(l.admit(big, kT0 + 60'000).allowed);
}

TEST(LocalLimiter, Concurrency) {
  LocalLimiter l;
  const Demand d = demand("alice", {.concurrency = 2});
  std::vector<Reservation> held;
  EXPECT_EQ(admit_until_refused(l, d, kT0, &held), 2);
  Admission refused = l.admit(d, kT0);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.refused, LimitKind::concurrency);
  EXPECT_EQ(refused.retry_after_ms, 1000);

  EXPECT_EQ(l.settle(held[0], 0, kT0), std::nullopt);  // no budget: nothing to report
  Admission again = l.admit(d, kT0);
  ASSERT_TRUE(again.allowed);
  EXPECT_FALSE(l.admit(d, kT0).allowed);

  l.settle(held[1], 0, kT0);
  l.settle(again.reservation, 0, kT0);
  EXPECT_EQ(admit_until_refused(l, d, kT0), 2);  // all three released
}

TEST(LocalLimiter, BudgetPerUtcDay) {
  LocalLimiter l;
  const KeyLimits kl{.budget = 1000};
  const Demand d = demand("alice", kl, 300);
  const WallMs ten_am = kMidnight + 10 * kHour;
  std::vector<Reservation> held;
  for (std::uint64_t left : {700u, 400u, 100u}) {
    Admission a = l.admit(d, ten_am);
    ASSERT_TRUE(a.allowed);
    EXPECT_EQ(a.reservation.budget_tokens, 300u);
    EXPECT_EQ(a.budget_remaining, left);
    expect_view(a.tokens, 1000, left, 14 * kHour);  // no tpm: the budget is what tokens headers show
    held.push_back(a.reservation);
  }
  Admission refused = l.admit(d, ten_am);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.refused, LimitKind::budget);
  EXPECT_EQ(refused.retry_after_ms, 14 * kHour);  // until 00:00 UTC
  EXPECT_EQ(refused.budget_remaining, 100u);
  EXPECT_EQ(l.admit(d, kMidnight + kDay - 1).retry_after_ms, 1);

  // Used fewer than reserved: the rest comes back.
  EXPECT_EQ(l.settle(held[0], 100, ten_am), 300u);
  Admission refill = l.admit(d, ten_am);
  ASSERT_TRUE(refill.allowed);
  EXPECT_EQ(refill.budget_remaining, 0u);
  // Used more than reserved: the overrun is charged (1200 used, shown as 0 left).
  EXPECT_EQ(l.settle(held[1], 500, ten_am), 0u);
  EXPECT_EQ(l.admit(demand("alice", kl, 1), ten_am).refused, LimitKind::budget);
  EXPECT_EQ(l.settle(refill.reservation, 0, ten_am), 100u);  // 1200 - 300
  EXPECT_EQ(l.settle(held[2], 300, ten_am), 100u);           // as reserved
  EXPECT_FALSE(l.admit(demand("alice", kl, 101), ten_am).allowed);
  EXPECT_TRUE(l.admit(demand("alice", kl, 100), ten_am).allowed);

  // The next UTC day starts from zero.
  EXPECT_EQ(admit_until_refused(l, d, kMidnight + kDay), 3);
}

TEST(LocalLimiter, BudgetWindowIsConfigurable) {
  LocalLimiter l;
  const Demand d = demand("alice", {.budget = 500, .budget_window = Millis(kHour)}, 200);
  EXPECT_EQ(admit_until_refused(l, d, kMidnight + 59 * 60'000), 2);
  EXPECT_EQ(l.admit(d, kMidnight + 59 * 60'000).retry_after_ms, 60'000);
  EXPECT_EQ(admit_until_refused(l, d, kMidnight + kHour), 2);
}

TEST(LocalLimiter, RequestLargerThanTheBudgetIsCappedAtIt) {
  LocalLimiter l;
  const Demand d = demand("alice", {.budget = 1000}, 4000);
  Admission a = l.admit(d, kMidnight);
  ASSERT_TRUE(a.allowed);
  EXPECT_EQ(a.reservation.budget_tokens, 1000u);
  EXPECT_EQ(a.budget_remaining, 0u);
  EXPECT_FALSE(l.admit(d, kMidnight + 1).allowed);
}

TEST(LocalLimiter, SettledInTheNextWindowChargesOnlyTheOverrunThere) {
  const KeyLimits kl{.budget = 1000};
  const Demand d = demand("alice", kl, 300);
  const WallMs before = kMidnight + kDay - 1000, after = kMidnight + kDay + 5000;
  {
    // Nothing admitted yet in the new day: the overrun opens it.
    LocalLimiter l;
    Admission a = l.admit(d, before);
    ASSERT_TRUE(a.allowed);
    EXPECT_EQ(l.settle(a.reservation, 500, after), 800u);
    EXPECT_EQ(admit_until_refused(l, d, after), 2);
  }
  {
    // The new day already has admissions: the overrun adds to them.
    LocalLimiter l;
    Admission a = l.admit(d, before);
    ASSERT_TRUE(a.allowed);
    ASSERT_EQ(l.admit(d, after).budget_remaining, 700u);
    EXPECT_EQ(l.settle(a.reservation, 500, after), 500u);
  }
  {
    // Used fewer than reserved: the old day's refund does not credit the new day.
    LocalLimiter l;
    Admission a = l.admit(d, before);
    ASSERT_TRUE(a.allowed);
    ASSERT_EQ(l.admit(d, after).budget_remaining, 700u);
    EXPECT_EQ(l.settle(a.reservation, 100, after), 700u);
  }
}

TEST(LocalLimiter, SettleReplacesTheEstimateInTpm) {
  LocalLimiter l;
  const KeyLimits kl{.tpm = 1000};
  Admission a = l.admit(demand("alice", kl, 1000), kT0);
  ASSERT_TRUE(a.allowed);
  EXPECT_EQ(a.tokens.remaining, 0u);
  l.settle(a.reservation, 100, kT0);  // used 100 of the 1000 reserved: 900 back at once
  Admission b = l.admit(demand("alice", kl, 900), kT0);
  ASSERT_TRUE(b.allowed);
  expect_view(b.tokens, 1000, 0, 60'000);
  EXPECT_FALSE(l.admit(demand("alice", kl, 1), kT0).allowed);

  // An overrun is charged as if it had been reserved.
  LocalLimiter m;
  Admission c = m.admit(demand("bob", kl, 100), kT0);
  ASSERT_TRUE(c.allowed);
  m.settle(c.reservation, 400, kT0);
  Admission d = m.admit(demand("bob", kl, 600), kT0);
  ASSERT_TRUE(d.allowed);
  EXPECT_EQ(d.tokens.remaining, 0u);
  EXPECT_EQ(m.admit(demand("bob", kl, 1), kT0).retry_after_ms, 60);

  // Used exactly the reservation: nothing moves.
  LocalLimiter n;
  Admission e = n.admit(demand("carol", kl, 300), kT0);
  n.settle(e.reservation, 300, kT0);
  EXPECT_EQ(n.admit(demand("carol", kl, 700), kT0).tokens.remaining, 0u);
  EXPECT_FALSE(n.admit(demand("carol", kl, 1), kT0).allowed);
}

TEST(LocalLimiter, SettleReconcilesTheModelTpmToo) {
  LocalLimiter l;
  const ModelLimits ml{.tpm = 1000};
  Admission a = l.admit(demand("alice", {}, 1000, "llama", ml), kT0);
  ASSERT_TRUE(a.allowed);
  EXPECT_EQ(a.reservation.model_tokens, 1000u);
  l.settle(a.reservation, 250, kT0);
  EXPECT_TRUE(l.admit(demand("bob", {}, 750, "llama", ml), kT0).allowed);
  Admission refused = l.admit(demand("carol", {}, 1, "llama", ml), kT0);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.refused, LimitKind::model_tpm);
  EXPECT_EQ(refused.retry_after_ms, 60);
}

TEST(LocalLimiter, ModelLimitsApplyAcrossKeys) {
  LocalLimiter l;
  const ModelLimits ml{.rpm = 2};
  Admission a = l.admit(demand("alice", {}, 0, "llama", ml), kT0);
  ASSERT_TRUE(a.allowed);
  expect_view(a.requests, 2, 1, 30'000);  // the key has no rpm: headers show the model's
  Admission b = l.admit(demand("bob", {.rpm = 100}, 0, "llama", ml), kT0);
  ASSERT_TRUE(b.allowed);
  expect_view(b.requests, 100, 99, 600);  // the key's own limit comes first
  Admission c = l.admit(demand("carol", {}, 0, "llama", ml), kT0);
  EXPECT_FALSE(c.allowed);
  EXPECT_EQ(c.refused, LimitKind::model_rpm);
  EXPECT_EQ(c.retry_after_ms, 30'000);
  // Another model with the same limits has its own allowance.
  EXPECT_TRUE(l.admit(demand("carol", {}, 0, "qwen", ml), kT0).allowed);
  EXPECT_TRUE(l.admit(demand("carol", {}, 0, "llama", ml), kT0 + 30'000).allowed);

  const ModelLimits one{.concurrency = 1};
  Admission x = l.admit(demand("alice", {}, 0, "mistral", one), kT0);
  ASSERT_TRUE(x.allowed);
  Admission y = l.admit(demand("bob", {.concurrency = 5}, 0, "mistral", one), kT0);
  EXPECT_FALSE(y.allowed);
  EXPECT_EQ(y.refused, LimitKind::model_concurrency);
  EXPECT_EQ(y.retry_after_ms, 1000);
  l.settle(x.reservation, 0, kT0);
  EXPECT_TRUE(l.admit(demand("bob", {.concurrency = 5}, 0, "mistral", one), kT0).allowed);
}

TEST(LocalLimiter, KeyLimitsDoNotLeakAcrossKeys) {
  LocalLimiter l;
  const KeyLimits kl{.rpm = 3, .tpm = 1000, .concurrency = 5, .budget = 10'000};
  EXPECT_EQ(admit_until_refused(l, demand("alice", kl, 10), kT0), 3);
  EXPECT_EQ(admit_until_refused(l, demand("bob", kl, 10), kT0), 3);
  EXPECT_EQ(admit_until_refused(l, demand("alice", kl, 10, "qwen"), kT0), 0);  // per key, whatever the model
  Admission carol = l.admit(demand("carol", kl, 1000), kT0);
  ASSERT_TRUE(carol.allowed);
  EXPECT_EQ(carol.budget_remaining, 9000u);
  EXPECT_EQ(l.admit(demand("dave", kl, 1000), kT0).budget_remaining, 9000u);
}

// A demand that carries the states found in advance (a snapshot's) draws on the same allowances as one that
// names the key and the model: admissions and settlements through either count for both.
TEST(LocalLimiter, StatesFoundInAdvanceAreTheNamedOnes) {
  LocalLimiter l;
  EXPECT_EQ(l.key_state("alice"), l.key_state("alice"));
  EXPECT_NE(l.key_state("alice"), l.key_state("bob"));
  EXPECT_EQ(l.model_state("llama"), l.model_state("llama"));
  const KeyLimits kl{.rpm = 3, .concurrency = 2};
  const ModelLimits ml{.rpm = 4};
  Demand named = demand("alice", kl, 0, "llama", ml);
  Demand found = named;
  found.key_state = l.key_state("alice");
  found.model_state = l.model_state("llama");

  Admission a = l.admit(found, kT0);
  ASSERT_TRUE(a.allowed);
  Admission b = l.admit(named, kT0);
  ASSERT_TRUE(b.allowed);
  expect_view(b.requests, 3, 1, 40'000);  // the first admission counted for the named one
  Admission c = l.admit(found, kT0);  // concurrency 2: both earlier ones are still active
  EXPECT_FALSE(c.allowed);
  EXPECT_EQ(c.refused, LimitKind::concurrency);
  l.settle(b.reservation, 0, kT0);  // settled by name: releases the slot the found state holds
  Admission d = l.admit(found, kT0);
  ASSERT_TRUE(d.allowed);
  EXPECT_EQ(d.requests.remaining, 0u);
  // The model's rpm saw all three as well: a fourth key's request is the model's last.
  EXPECT_TRUE(l.admit(demand("bob", {}, 0, "llama", ml), kT0).allowed);
  EXPECT_FALSE(l.admit(demand("carol", {}, 0, "llama", ml), kT0).allowed);
}

TEST(LocalLimiter, NoLimitsAdmitsEverything) {
  LocalLimiter l;
  for (int i = 0; i < 10'000; ++i) {
    Admission a = l.admit(demand("alice", {}, 1'000'000), kT0);
    ASSERT_TRUE(a.allowed);
    if (i == 0) {
      EXPECT_EQ(a.requests.limit, 0u);
      EXPECT_EQ(a.tokens.limit, 0u);
      EXPECT_FALSE(a.budget_remaining);
      EXPECT_EQ(l.settle(a.reservation, 5'000'000, kT0), std::nullopt);
    }
  }
  // Without auth there is no key, so key limits cannot apply.
  const Demand anonymous = demand("", {.rpm = 1, .concurrency = 1, .budget = 1}, 100);
  for (int i = 0; i < 100; ++i) {
    Admission a = l.admit(anonymous, kT0);
    ASSERT_TRUE(a.allowed);
    EXPECT_EQ(a.requests.limit, 0u);
    EXPECT_FALSE(a.budget_remaining);
  }
}

TEST(LocalLimiter, HeaderViewsPreferTheKeyThenTheModelThenTheBudget) {
  LocalLimiter l;
  const ModelLimits ml{.rpm = 10, .tpm = 5000};
  Admission key_tpm = l.admit(demand("a", {.rpm = 100, .tpm = 1000, .budget = 50'000}, 200, "m1", ml), kT0);
  ASSERT_TRUE(key_tpm.allowed);
  expect_view(key_tpm.requests, 100, 99, 600);
  expect_view(key_tpm.tokens, 1000, 800, 12'000);
  EXPECT_EQ(key_tpm.budget_remaining, 49'800u);

  Admission model_tpm = l.admit(demand("b", {.budget = 50'000}, 200, "m2", ml), kT0);
  ASSERT_TRUE(model_tpm.allowed);
  expect_view(model_tpm.requests, 10, 9, 6000);
  expect_view(model_tpm.tokens, 5000, 4800, 2400);
  EXPECT_EQ(model_tpm.budget_remaining, 49'800u);  // still reported, though not in the tokens view

  Admission budget = l.admit(demand("c", {.budget = 50'000}, 200, "m3", {.rpm = 10}), kMidnight + 23 * kHour);
  ASSERT_TRUE(budget.allowed);
  expect_view(budget.tokens, 50'000, 49'800, kHour);
}

TEST(LocalLimiter, RefusedAdmissionsReserveNothing) {
  {
    // Refused by tpm: no rpm, concurrency or budget taken.
    LocalLimiter l;
    const KeyLimits kl{.rpm = 2, .tpm = 1000, .concurrency = 2, .budget = 1000};
    Admission first = l.admit(demand("alice", kl, 600), kT0);
    ASSERT_TRUE(first.allowed);
    for (int i = 0; i < 5; ++i) {
      Admission r = l.admit(demand("alice", kl, 600), kT0);
      ASSERT_FALSE(r.allowed);
      EXPECT_EQ(r.refused, LimitKind::tpm);
    }
    Admission second = l.admit(demand("alice", kl, 400), kT0);
    ASSERT_TRUE(second.allowed);
    expect_view(second.requests, 2, 0, 60'000);
    EXPECT_EQ(second.budget_remaining, 0u);
  }
  {
    // Refused by concurrency: no rpm taken.
    LocalLimiter l;
    const Demand d = demand("alice", {.rpm = 3, .concurrency = 1});
    Admission a = l.admit(d, kT0);
    ASSERT_TRUE(a.allowed);
    for (int i = 0; i < 10; ++i) EXPECT_EQ(l.admit(d, kT0).refused, LimitKind::concurrency);
    l.settle(a.reservation, 0, kT0);
    Admission b = l.admit(d, kT0);
    ASSERT_TRUE(b.allowed);
    expect_view(b.requests, 3, 1, 40'000);
  }
  {
    // Refused by budget: no tpm taken.
    LocalLimiter l;
    const KeyLimits kl{.tpm = 10'000, .budget = 1000};
    ASSERT_TRUE(l.admit(demand("alice", kl, 900), kMidnight).allowed);
    for (int i = 0; i < 5; ++i) EXPECT_EQ(l.admit(demand("alice", kl, 200), kMidnight).refused, LimitKind::budget);
    Admission a = l.admit(demand("alice", kl, 100), kMidnight);
    ASSERT_TRUE(a.allowed);
    EXPECT_EQ(a.tokens.remaining, 9000u);
  }
  {
    // Refused by the model: the key's limits untouched, and the model's concurrency too.
    LocalLimiter l;
    const KeyLimits kl{.rpm = 2, .concurrency = 1, .budget = 1000};
    const ModelLimits ml{.rpm = 1};
    Admission a = l.admit(demand("alice", kl, 100, "llama", ml), kT0);
    ASSERT_TRUE(a.allowed);
    l.settle(a.reservation, 100, kT0);
    Admission r = l.admit(demand("alice", kl, 100, "llama", ml), kT0);
    ASSERT_FALSE(r.allowed);
    EXPECT_EQ(r.refused, LimitKind::model_rpm);
    expect_view(r.requests, 2, 1, 30'000);
    EXPECT_EQ(r.budget_remaining, 900u);
    Admission other = l.admit(demand("alice", kl, 100, "qwen"), kT0);
    ASSERT_TRUE(other.allowed);  // so the key's concurrency was not held either
    EXPECT_EQ(other.budget_remaining, 800u);
  }
}

TEST(LocalLimiter, ThreadsNeverExceedConcurrencyAndShareRpmExactly) {
  constexpr int kThreads = 8;
  constexpr std::uint64_t kConcurrency = 3, kRpm = 2000;
  LocalLimiter l;
  const Demand d = demand("alice", {.rpm = kRpm, .concurrency = kConcurrency}, 10, "llama",
                          {.tpm = 1'000'000, .concurrency = 100});
  std::atomic<int> active{0}, most{0}, admitted{0}, wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (;;) {
        Admission a = l.admit(d, kT0);
        if (!a.allowed) {
          if (a.refused == LimitKind::rpm) return;  // the minute's allowance is spent
          if (a.refused != LimitKind::concurrency) ++wrong;
          std::this_thread::yield();
          continue;
        }
        int now_active = ++active;
        int seen = most.load();
        while (now_active > seen && !most.compare_exchange_weak(seen, now_active)) {
        }
        ++admitted;
        std::this_thread::yield();
        --active;
        l.settle(a.reservation, 5, kT0);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_LE(most.load(), static_cast<int>(kConcurrency));
  EXPECT_GE(most.load(), 1);
  EXPECT_EQ(admitted.load(), static_cast<int>(kRpm));
  // Every lease was given back.
  EXPECT_EQ(admit_until_refused(l, demand("alice", {.concurrency = kConcurrency}), kT0), 3);
}

TEST(LocalLimiter, ThreadsOnManyKeysShareOneModelExactly) {
  constexpr int kThreads = 8;
  constexpr std::uint64_t kModelRpm = 1000;
  LocalLimiter l;
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const Demand d = demand("key-" + std::to_string(t), {.rpm = 400}, 0, "llama", {.rpm = kModelRpm});
      for (;;) {
        Admission a = l.admit(d, kT0);
        if (!a.allowed) return;
        ++admitted;
        l.settle(a.reservation, 0, kT0);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(admitted.load(), static_cast<int>(kModelRpm));
}

TEST(LocalLimiter, BudgetObserverEndsOnTheTrueFigureWhenThreadsSettleAtOnce) {
  // The gauge a scrape shows is the last figure observed: settlements racing on several workers must not
  // leave an older one last (each refund below is different, so any reordering shows in the final figure).
  constexpr int kThreads = 8, kEach = 200;
  std::atomic<std::uint64_t> last{0};
  std::atomic<int> seen{0};
  LocalLimiter l([&](const std::string& key, std::uint64_t left) {
    EXPECT_EQ(key, "alice");
    last = left;
    ++seen;
  });
  const Demand d = demand("alice", {.budget = 1'000'000}, 100);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        Admission a = l.admit(d, kMidnight);
        ASSERT_TRUE(a.allowed);
        l.settle(a.reservation, static_cast<std::uint64_t>(t + i % 7), kMidnight);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(seen.load(), 2 * kThreads * kEach);
  Admission probe = l.admit(demand("alice", {.budget = 1'000'000}, 0), kMidnight);
  ASSERT_TRUE(probe.budget_remaining);
  EXPECT_EQ(last.load(), *probe.budget_remaining);
  std::uint64_t used = 0;
  for (int t = 0; t < kThreads; ++t)
    for (int i = 0; i < kEach; ++i) used += static_cast<std::uint64_t>(t + i % 7);
  EXPECT_EQ(*probe.budget_remaining, 1'000'000 - used);
}

TEST(LocalLimiter, TokenReservation) {
  EXPECT_EQ(token_reservation(100, 50, 1024), 150u);
  EXPECT_EQ(token_reservation(100, std::nullopt, 1024), 1124u);
  EXPECT_EQ(token_reservation(100, 0, 1024), 100u);  // max_tokens 0 is a number, not "unset"
  EXPECT_EQ(token_reservation(0, std::nullopt, 0), 0u);
}

// --- refusals ---------------------------------------------------------------------------------------

TEST(Refusal, LimitNames) {
  EXPECT_EQ(to_string(LimitKind::rpm), "rpm");
  EXPECT_EQ(to_string(LimitKind::tpm), "tpm");
  EXPECT_EQ(to_string(LimitKind::concurrency), "concurrency");
  EXPECT_EQ(to_string(LimitKind::budget), "budget");
  EXPECT_EQ(to_string(LimitKind::model_rpm), "model_rpm");
  EXPECT_EQ(to_string(LimitKind::model_tpm), "model_tpm");
  EXPECT_EQ(to_string(LimitKind::model_concurrency), "model_concurrency");
}

TEST(Refusal, TypeIsRequestsOrTokens) {
  const Demand d = demand("alice", {.rpm = 1, .tpm = 1, .concurrency = 1, .budget = 1}, 5, "llama",
                          {.rpm = 1, .tpm = 1, .concurrency = 1});
  const std::pair<LimitKind, const char*> cases[] = {
      {LimitKind::rpm, "requests"},       {LimitKind::concurrency, "requests"},
      {LimitKind::model_rpm, "requests"}, {LimitKind::model_concurrency, "requests"},
      {LimitKind::tpm, "tokens"},         {LimitKind::budget, "tokens"},
      {LimitKind::model_tpm, "tokens"},
  };
  for (auto [kind, type] : cases) {
    Admission a;
    a.refused = kind;
    a.retry_after_ms = 1000;
    EXPECT_EQ(refusal_text(a, d).type, type) << to_string(kind);
  }
}

TEST(Refusal, MessagesFromRealRefusals) {
  const WallMs ten_am = kMidnight + 10 * kHour;
  auto refused = [&](LocalLimiter& l, const Demand& d, WallMs now) {
    Admission a = l.admit(d, now);
    while (a.allowed) a = l.admit(d, now);
    return refusal_text(a, d);
  };
  {
    LocalLimiter l;
    auto t = refused(l, demand("alice", {.rpm = 60}), ten_am);
    EXPECT_EQ(t.message,
              "Rate limit reached for key `alice` on requests per min (RPM): Limit 60. Please try again in 1s.");
    EXPECT_EQ(t.type, "requests");
  }
  {
    LocalLimiter l;
    auto t = refused(l, demand("alice", {.tpm = 1000}, 300), ten_am);
    EXPECT_EQ(t.message,
              "Rate limit reached for key `alice` on tokens per min (TPM): Limit 1000. Please try again in 12s. "
              "Requested 300 tokens (prompt estimate plus max_tokens).");
    EXPECT_EQ(t.type, "tokens");
  }
  {
    LocalLimiter l;
    auto t = refused(l, demand("alice", {.concurrency = 2}), ten_am);
    EXPECT_EQ(t.message, "Too many concurrent requests for key `alice`: Limit 2. Wait for one of them to finish.");
  }
  {
    LocalLimiter l;
    auto t = refused(l, demand("alice", {.budget = 1000}, 300), ten_am + 1500);
    EXPECT_EQ(t.message,
              "Token budget exhausted for key `alice`: Limit 1000 tokens per 24h0m0s. It renews in 13h59m58.5s.");
    EXPECT_EQ(t.type, "tokens");
  }
  {
    LocalLimiter l;
    auto t = refused(l, demand("alice", {}, 0, "llama", {.rpm = 120}), ten_am);
    EXPECT_EQ(t.message,
              "Rate limit reached for model `llama` on requests per min (RPM): Limit 120. "
              "Please try again in 500ms.");
  }
  {
    LocalLimiter l;
    auto t = refused(l, demand("alice", {}, 700, "llama", {.tpm = 1000}), ten_am);
    EXPECT_EQ(t.message,
              "Rate limit reached for model `llama` on tokens per min (TPM): Limit 1000. Please try again in 24s.");
    EXPECT_EQ(t.type, "tokens");
  }
  {
    LocalLimiter l;
    auto t = refused(l, demand("alice", {}, 0, "llama", {.concurrency = 4}), ten_am);
    EXPECT_EQ(t.message, "Too many concurrent requests for model `llama`: Limit 4. Please try again shortly.");
  }
}

TEST(Refusal, KeyRefusalsNameTheKeyModelRefusalsNameTheModel) {
  const Demand d = demand("team-ops", {.rpm = 1, .tpm = 1, .concurrency = 1, .budget = 1}, 5, "qwen-72b",
                          {.rpm = 1, .tpm = 1, .concurrency = 1});
  for (LimitKind kind : {LimitKind::rpm, LimitKind::tpm, LimitKind::concurrency, LimitKind::budget}) {
    Admission a;
    a.refused = kind;
    a.retry_after_ms = 2500;
    auto m = refusal_text(a, d).message;
    EXPECT_NE(m.find("`team-ops`"), std::string::npos) << m;
    EXPECT_EQ(m.find("qwen-72b"), std::string::npos) << m;
    EXPECT_EQ(m.find("sk-"), std::string::npos) << m;
  }
  for (LimitKind kind : {LimitKind::model_rpm, LimitKind::model_tpm, LimitKind::model_concurrency}) {
    Admission a;
    a.refused = kind;
    a.retry_after_ms = 2500;
    auto m = refusal_text(a, d).message;
    EXPECT_NE(m.find("`qwen-72b`"), std::string::npos) << m;
    EXPECT_EQ(m.find("team-ops"), std::string::npos) << m;  // other callers' quotas are not about this key
    EXPECT_EQ(m.find("sk-"), std::string::npos) << m;
  }
}

}  // namespace
}  // namespace sluice::policy
