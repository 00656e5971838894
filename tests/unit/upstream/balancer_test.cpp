#include "upstream/balancer.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <random>
#include <set>
#include <thread>
#include <vector>

namespace sluice::upstream {
namespace {

using namespace std::chrono_literals;

// A fake clock: a fixed origin plus offsets; nothing here reads the real time.
const SteadyTime t0{};
constexpr auto kTick = 1ns;

OutlierConfig outlier3() {
  OutlierConfig c;
  c.consecutive_failures = 3;
  c.base_ejection = 1s;
  c.max_ejection = 5s;
  return c;
}

// Three failures in a row at `now`; the third ejects.
void fail3(BackendState& s, SteadyTime now) {
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(s.admit(now)) << "failure " << i;
    s.failure(now);
  }
}

// Ejected (and not yet due for a trial) at `now`.
void expect_ejected(BackendState& s, SteadyTime now) {
  EXPECT_FALSE(s.available(now));
  EXPECT_FALSE(s.up(now));
  EXPECT_FALSE(s.admit(now));
}

// --- BackendState: passive outlier ejection ------------------------------------------------------

TEST(BackendStateTest, StartsUpAndAdmitsFreely) {
  BackendState s(outlier3());
  EXPECT_TRUE(s.probe_up());
  for (int i = 0; i < 10; ++i) {
    EXPECT_TRUE(s.available(t0));
    EXPECT_TRUE(s.up(t0));
    EXPECT_TRUE(s.admit(t0));
  }
}

TEST(BackendStateTest, FailuresBelowTheThresholdKeepItAdmitted) {
  BackendState s(outlier3());
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(s.admit(t0));
    s.failure(t0);
  }
  EXPECT_TRUE(s.available(t0));
  EXPECT_TRUE(s.up(t0));
  EXPECT_TRUE(s.admit(t0));
  EXPECT_TRUE(s.admit(t0));  // not a half-open trial: admits repeatedly
}

TEST(BackendStateTest, ASuccessResetsTheFailureCount) {
  BackendState s(outlier3());
  s.failure(t0);
  s.failure(t0);
  s.success();
  s.failure(t0);
  s.failure(t0);  // 2 in a row again, not 4
  EXPECT_TRUE(s.available(t0));
  EXPECT_TRUE(s.up(t0));
  EXPECT_TRUE(s.admit(t0));
  s.failure(t0);  // now the third in a row
  expect_ejected(s, t0);
}

// Workers report outcomes at once; a healthy backend's successes take no lock. One worker's failures come in
// pairs, each pair followed by its own success, so the count never reaches three, whatever the others do in
// between: a success that skipped a count it had to forget would let it reach three and eject.
TEST(BackendStateTest, OutcomesFromManyWorkersAtOnceKeepTheCount) {
  BackendState s(outlier3());
  std::atomic<int> refused{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < 3; ++w)
    workers.emplace_back([&] {
      for (int i = 0; i < 20000; ++i) {
        if (!s.admit(t0) || !s.available(t0)) ++refused;
        s.success();
      }
    });
  for (int i = 0; i < 20000; ++i) {
    s.failure(t0);
    s.failure(t0);
    s.success();
  }
  for (auto& t : workers) t.join();
  EXPECT_EQ(refused.load(), 0);
  EXPECT_TRUE(s.up(t0));
  // And the count still works: three in a row eject.
  fail3(s, t0);
  expect_ejected(s, t0);
}

// After the cooldown, workers race for the half-open trial and report whatever they saw: each outcome frees the
// trial (success brings the backend back, failure ejects it again, neutral leaves it to the next trial). However
// they interleave, a success at the end brings it back: no trial is left claimed by nobody.
TEST(BackendStateTest, WorkersRacingForTheTrialNeverLeaveItStuck) {
  BackendState s(outlier3());
  fail3(s, t0);
  std::vector<std::thread> workers;
  for (int w = 0; w < 3; ++w)
    workers.emplace_back([&s, w] {
      std::mt19937 rng(static_cast<unsigned>(w));
      SteadyTime now = t0;
      for (int i = 0; i < 5000; ++i) {
        now += 10s;  // always past any cooldown (5 s at most)
        if (!s.admit(now)) continue;
        switch (rng() % 3) {
          case 0: s.success(); break;
          case 1: s.failure(now); break;
          default: s.neutral(); break;
        }
      }
    });
  for (auto& t : workers) t.join();
  const SteadyTime later = t0 + 1000000s;
  ASSERT_TRUE(s.available(later)) << "a trial is left claimed";
  ASSERT_TRUE(s.admit(later));
  s.success();
  EXPECT_TRUE(s.available(t0));
  EXPECT_TRUE(s.up(t0));
}

TEST(BackendStateTest, ThirdConsecutiveFailureEjectsForTheBaseCooldown) {
  BackendState s(outlier3());
  fail3(s, t0);
  expect_ejected(s, t0);
  expect_ejected(s, t0 + 500ms);
  expect_ejected(s, t0 + 1s - kTick);
  // Cooldown over: it is up and may take a trial.
  EXPECT_TRUE(s.up(t0 + 1s));
  EXPECT_TRUE(s.available(t0 + 1s));
}

TEST(BackendStateTest, AfterTheCooldownExactlyOneTrialIsAdmitted) {
  BackendState s(outlier3());
  fail3(s, t0);
  const auto t = t0 + 1s;
  EXPECT_TRUE(s.admit(t));  // the half-open trial
  EXPECT_FALSE(s.admit(t));
  EXPECT_FALSE(s.admit(t + 10s));  // still waiting for the trial's verdict, however long
  EXPECT_FALSE(s.available(t + 10s));
}

// A trial whose request ended without a verdict (an exception, a shutdown) is lost: once its limit has passed
// (the backend's total deadline, by which its request has ended whatever happened), the next request is the trial,
// and again only one; a lost trial's late verdict still counts.
TEST(BackendStateTest, ALostTrialGivesWayToANewOneAfterItsLimit) {
  BackendState s(outlier3(), 30s);
  fail3(s, t0);
  const auto t = t0 + 1s;
  ASSERT_TRUE(s.admit(t));  // never reports
  EXPECT_FALSE(s.admit(t + 30s - kTick));
  EXPECT_FALSE(s.available(t + 30s - kTick));
  EXPECT_TRUE(s.available(t + 30s));
  EXPECT_TRUE(s.admit(t + 30s));  // the next trial
  EXPECT_FALSE(s.admit(t + 30s));
  EXPECT_FALSE(s.up(t + 30s) && s.available(t + 30s));
  EXPECT_TRUE(s.success());  // it (or the lost one, late) succeeds: back
  EXPECT_TRUE(s.admit(t + 31s));
  EXPECT_TRUE(s.admit(t + 31s));
}

TEST(BackendStateTest, TrialSuccessBringsItFullyBack) {
  BackendState s(outlier3());
  fail3(s, t0);
  const auto t = t0 + 1s;
  ASSERT_TRUE(s.admit(t));
  s.success();
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(s.admit(t));
  EXPECT_TRUE(s.available(t));
  EXPECT_TRUE(s.up(t));
  // The ejection streak is reset too: the next ejection is the base cooldown again, not 2s.
  fail3(s, t);
  expect_ejected(s, t + 1s - kTick);
  EXPECT_TRUE(s.admit(t + 1s));
}

TEST(BackendStateTest, FailedTrialsDoubleTheCooldownUpToTheCap) {
  BackendState s(outlier3());
  fail3(s, t0);
  auto t = t0 + 1s;
  // Each failed trial ejects again: 2s, 4s, then capped at 5s (not 8s), and 5s from then on.
  for (auto cooldown : {2s, 4s, 5s, 5s}) {
    ASSERT_TRUE(s.admit(t)) << cooldown.count();
    s.failure(t);
    expect_ejected(s, t);
    expect_ejected(s, t + cooldown - kTick);
    t += cooldown;
    EXPECT_TRUE(s.up(t)) << cooldown.count();
    EXPECT_TRUE(s.available(t)) << cooldown.count();
  }
}

TEST(BackendStateTest, NeutralFreesTheTrialWithoutAVerdict) {
  BackendState s(outlier3());
  fail3(s, t0);
  const auto t = t0 + 1s;
  ASSERT_TRUE(s.admit(t));
  ASSERT_FALSE(s.admit(t));
  s.neutral();
  // No verdict: still ejected (one trial at a time), but a new trial may go, and no new cooldown began.
  EXPECT_TRUE(s.available(t));
  EXPECT_TRUE(s.admit(t));
  EXPECT_FALSE(s.admit(t));
  // The second trial fails: the cooldown doubles (the neutral one did not count as an ejection).
  s.failure(t);
  expect_ejected(s, t + 2s - kTick);
  EXPECT_TRUE(s.admit(t + 2s));
}

TEST(BackendStateTest, NeutralOutsideATrialChangesNothing) {
  BackendState s(outlier3());
  s.failure(t0);
  s.failure(t0);
  s.neutral();
  s.failure(t0);  // the neutral outcome did not reset the streak
  expect_ejected(s, t0);
}

TEST(BackendStateTest, LateFailuresWhileEjectedDoNotExtendTheCooldown) {
  BackendState s(outlier3());
  // Five requests admitted before any verdict; all fail.
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(s.admit(t0));
  for (int i = 0; i < 5; ++i) s.failure(t0 + 100ms);
  expect_ejected(s, t0 + 1100ms - kTick);
  EXPECT_TRUE(s.admit(t0 + 1100ms));
}

TEST(BackendStateTest, ZeroConsecutiveFailuresDisablesEjection) {
  auto cfg = outlier3();
  cfg.consecutive_failures = 0;
  BackendState s(cfg);
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(s.admit(t0)) << i;
    s.failure(t0);
  }
  EXPECT_TRUE(s.available(t0));
  EXPECT_TRUE(s.up(t0));
  EXPECT_TRUE(s.admit(t0));
}

TEST(BackendStateTest, ProbeDownOverridesEverything) {
  BackendState s(outlier3());
  s.set_probe_result(false);
  EXPECT_FALSE(s.probe_up());
  EXPECT_FALSE(s.admit(t0));
  EXPECT_FALSE(s.available(t0));
  EXPECT_FALSE(s.up(t0));
  s.success();  // a success does not outvote the probe
  EXPECT_FALSE(s.admit(t0));
  EXPECT_FALSE(s.up(t0 + 1h));

  s.set_probe_result(true);
  EXPECT_TRUE(s.probe_up());
  EXPECT_TRUE(s.admit(t0));
  EXPECT_TRUE(s.up(t0));
}

TEST(BackendStateTest, ProbeDownKeepsAnEjectedBackendOutAfterItsCooldown) {
  BackendState s(outlier3());
  fail3(s, t0);
  s.set_probe_result(false);
  const auto t = t0 + 2s;  // past the cooldown
  EXPECT_FALSE(s.available(t));
  EXPECT_FALSE(s.up(t));
  EXPECT_FALSE(s.admit(t));  // and no trial was claimed by that refusal:
  s.set_probe_result(true);
  EXPECT_TRUE(s.admit(t));
  EXPECT_FALSE(s.admit(t));
}

TEST(BackendStateTest, InflightIsAPlainAtomicCounter) {
  BackendState s(outlier3());
  EXPECT_EQ(s.inflight.load(), 0);
  ++s.inflight;
  s.inflight.fetch_add(2);
  EXPECT_EQ(s.inflight.load(), 3);
  --s.inflight;
  EXPECT_EQ(s.inflight.load(), 2);
}

// --- plan_attempts ---------------------------------------------------------------------------------

Candidate cand(unsigned weight = 1, int inflight = 0, unsigned max_inflight = 0, bool available = true) {
  return Candidate{weight, inflight, max_inflight, available};
}

using Plan = AttemptPlan;

TEST(PlanAttemptsTest, FallbackKeepsConfigOrder) {
  std::mt19937_64 rng(1);
  // Loads and weights do not matter in fallback.
  std::vector<Candidate> c{cand(1, 9), cand(5, 0), cand(1, 3), cand(2, 1)};
  EXPECT_EQ(plan_attempts(false, c, 10, rng), (Plan{0, 1, 2, 3}));
  EXPECT_EQ(plan_attempts(false, c, 4, rng), (Plan{0, 1, 2, 3}));
}

TEST(PlanAttemptsTest, FallbackTruncatesToMaxAttempts) {
  std::mt19937_64 rng(1);
  std::vector<Candidate> c{cand(), cand(), cand(), cand()};
  EXPECT_EQ(plan_attempts(false, c, 2, rng), (Plan{0, 1}));
  EXPECT_EQ(plan_attempts(false, c, 1, rng), (Plan{0}));
}

TEST(PlanAttemptsTest, UnavailableCandidatesAreSkipped) {
  std::mt19937_64 rng(1);
  std::vector<Candidate> c{cand(1, 0, 0, false), cand(), cand(1, 0, 0, false), cand()};
  EXPECT_EQ(plan_attempts(false, c, 10, rng), (Plan{1, 3}));
  for (int i = 0; i < 50; ++i) {
    auto p = plan_attempts(true, c, 10, rng);
    ASSERT_EQ(p.size(), 2u);
    EXPECT_EQ(std::set<std::size_t>(p.begin(), p.end()), (std::set<std::size_t>{1, 3}));
  }
}

TEST(PlanAttemptsTest, FullCandidatesAreSkipped) {
  std::mt19937_64 rng(1);
  std::vector<Candidate> c{
      cand(1, 4, 4),    // full
      cand(1, 3, 4),    // one slot left
      cand(1, 100, 0),  // no limit
      cand(1, 5, 4),    // over the limit
  };
  EXPECT_EQ(plan_attempts(false, c, 10, rng), (Plan{1, 2}));
  for (int i = 0; i < 50; ++i) {
    auto p = plan_attempts(true, c, 10, rng);
    EXPECT_EQ(std::set<std::size_t>(p.begin(), p.end()), (std::set<std::size_t>{1, 2}));
  }
}

TEST(PlanAttemptsTest, PanicModeTriesAllNonFullInOrderWhenNoneIsAvailable) {
  std::mt19937_64 rng(1);
  std::vector<Candidate> c{cand(1, 0, 0, false), cand(1, 2, 2, false), cand(1, 0, 0, false),
                           cand(1, 1, 8, false)};
  EXPECT_EQ(plan_attempts(false, c, 10, rng), (Plan{0, 2, 3}));
  EXPECT_EQ(plan_attempts(false, c, 2, rng), (Plan{0, 2}));
}

TEST(PlanAttemptsTest, NoPanicWhileSomeCandidateIsAvailableButFull) {
  // Panic mode is for "nothing healthy", not "the healthy ones are busy": unavailable ones stay out.
  std::mt19937_64 rng(1);
  std::vector<Candidate> c{cand(1, 2, 2), cand(1, 0, 0, false), cand(1, 0, 0, false)};
  EXPECT_TRUE(plan_attempts(false, c, 10, rng).empty());
  EXPECT_TRUE(plan_attempts(true, c, 10, rng).empty());
}

TEST(PlanAttemptsTest, AllFullIsEmpty) {
  std::mt19937_64 rng(1);
  std::vector<Candidate> c{cand(1, 2, 2), cand(1, 1, 1, false), cand(3, 7, 5)};
  EXPECT_TRUE(plan_attempts(false, c, 10, rng).empty());
  EXPECT_TRUE(plan_attempts(true, c, 10, rng).empty());
}

TEST(PlanAttemptsTest, NoCandidatesIsEmpty) {
  std::mt19937_64 rng(1);
  EXPECT_TRUE(plan_attempts(false, {}, 3, rng).empty());
  EXPECT_TRUE(plan_attempts(true, {}, 3, rng).empty());
}

TEST(PlanAttemptsTest, BalanceWithTwoAlwaysPutsTheLessLoadedFirst) {
  std::mt19937_64 rng(42);
  // In-flight per weight: 4/1 vs 1/1.
  std::vector<Candidate> c{cand(1, 4), cand(1, 1)};
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(plan_attempts(true, c, 2, rng), (Plan{1, 0})) << "draw " << i;
  // Weight counts: 6 in flight on weight 4 is less loaded than 2 on weight 1.
  std::vector<Candidate> w{cand(1, 2), cand(4, 6)};
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(plan_attempts(true, w, 2, rng), (Plan{1, 0})) << "draw " << i;
  // max_attempts 1: only the less loaded.
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(plan_attempts(true, c, 1, rng), (Plan{1})) << "draw " << i;
}

TEST(PlanAttemptsTest, BalanceFirstPickFollowsWeightsWhenLoadIsEqual) {
  // Both idle (0 in flight, so 0 in flight per weight each), weights 3:1: the first pick should be
  // drawn in proportion to the weights, ~75% for the heavy one.
  std::mt19937_64 rng(7);
  std::vector<Candidate> c{cand(3, 0), cand(1, 0)};
  constexpr int kDraws = 20000;
  int heavy_first = 0;
  for (int i = 0; i < kDraws; ++i) {
    auto p = plan_attempts(true, c, 2, rng);
    ASSERT_EQ(p.size(), 2u);
    if (p[0] == 0) ++heavy_first;
  }
  double ratio = static_cast<double>(heavy_first) / kDraws;
  EXPECT_GT(ratio, 0.70);
  EXPECT_LT(ratio, 0.80);
}

TEST(PlanAttemptsTest, BalanceWithEqualWeightsAndLoadsSpreadsTheFirstPick) {
  // Three idle targets of equal weight are tied under any load measure: the first pick is uniform.
  std::mt19937_64 rng(11);
  std::vector<Candidate> c{cand(), cand(), cand()};
  constexpr int kDraws = 30000;
  int first[3] = {0, 0, 0};
  for (int i = 0; i < kDraws; ++i) {
    auto p = plan_attempts(true, c, 3, rng);
    ASSERT_EQ(p.size(), 3u);
    ++first[p[0]];
  }
  for (int k = 0; k < 3; ++k) {
    double share = static_cast<double>(first[k]) / kDraws;
    EXPECT_GT(share, 0.29) << k;
    EXPECT_LT(share, 0.38) << k;
  }
}

TEST(PlanAttemptsTest, BalanceReturnsTheRestLeastLoadedFirst) {
  std::mt19937_64 rng(3);
  // Loads (in flight per weight): 8, 2, 5, 0, 3 — plus one unavailable and one full, never returned.
  std::vector<Candidate> c{cand(1, 8), cand(1, 2), cand(2, 10),  cand(1, 0, 0, false),
                           cand(1, 0), cand(1, 3), cand(1, 4, 4)};
  auto load = [&](std::size_t i) { return static_cast<double>(c[i].inflight) / c[i].weight; };
  std::set<std::size_t> usable{0, 1, 2, 4, 5};
  std::set<std::size_t> firsts;
  for (int i = 0; i < 500; ++i) {
    auto p = plan_attempts(true, c, 10, rng);
    ASSERT_EQ(p.size(), usable.size());
    EXPECT_EQ(std::set<std::size_t>(p.begin(), p.end()), usable);
    firsts.insert(p[0]);
    // After the first pick, the rest ascend in load.
    for (std::size_t k = 2; k < p.size(); ++k) EXPECT_LE(load(p[k - 1]), load(p[k])) << "draw " << i;
    // The first pick beat at least one other usable candidate, so it is never the most loaded one.
    EXPECT_NE(p[0], 0u);
  }
  EXPECT_GT(firsts.size(), 1u);  // random, not always the same first
  EXPECT_TRUE(firsts.count(4));  // the least loaded wins whenever drawn
}

TEST(PlanAttemptsTest, BalanceTruncatesToMaxAttempts) {
  std::mt19937_64 rng(5);
  std::vector<Candidate> c{cand(1, 8), cand(1, 2), cand(1, 5), cand(1, 0), cand(1, 3)};
  for (int i = 0; i < 500; ++i) {
    auto p = plan_attempts(true, c, 3, rng);
    ASSERT_EQ(p.size(), 3u);
    std::set<std::size_t> uniq(p.begin(), p.end());
    EXPECT_EQ(uniq.size(), 3u);
    // The two after the first are the least loaded of those not picked first.
    std::vector<std::size_t> rest;
    for (std::size_t k : {3u, 1u, 4u, 2u, 0u})  // least loaded first
      if (k != p[0]) rest.push_back(k);
    EXPECT_EQ(p[1], rest[0]) << "draw " << i;
    EXPECT_EQ(p[2], rest[1]) << "draw " << i;
  }
}

TEST(PlanAttemptsTest, BalanceWithOneUsableCandidate) {
  std::mt19937_64 rng(9);
  std::vector<Candidate> c{cand(1, 0, 0, false), cand(5, 3), cand(1, 1, 1)};
  for (int i = 0; i < 20; ++i) EXPECT_EQ(plan_attempts(true, c, 3, rng), (Plan{1}));
}

TEST(PlanAttemptsTest, SameSeedSamePlan) {
  std::vector<Candidate> c{cand(2, 1), cand(1, 1), cand(3, 2), cand(1, 0)};
  std::mt19937_64 a(123), b(123);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(plan_attempts(true, c, 4, a), plan_attempts(true, c, 4, b));
}

// --- RetryBudget -----------------------------------------------------------------------------------

TEST(RetryBudgetTest, ThreeRetriesWithNoActiveRequests) {
  RetryBudget b;
  EXPECT_TRUE(b.try_retry());
  EXPECT_TRUE(b.try_retry());
  EXPECT_TRUE(b.try_retry());
  EXPECT_FALSE(b.try_retry());
  EXPECT_FALSE(b.try_retry());  // a refused claim holds nothing
  b.retry_finished();
  EXPECT_TRUE(b.try_retry());
  EXPECT_FALSE(b.try_retry());
}

TEST(RetryBudgetTest, TwentyPercentOfActiveRequests) {
  RetryBudget b;
  for (int i = 0; i < 100; ++i) b.request_started();
  for (int i = 0; i < 20; ++i) EXPECT_TRUE(b.try_retry()) << "retry " << i;
  EXPECT_FALSE(b.try_retry());
  b.retry_finished();
  EXPECT_TRUE(b.try_retry());
  EXPECT_FALSE(b.try_retry());
}

TEST(RetryBudgetTest, FinishedRequestsShrinkTheBudget) {
  RetryBudget b;
  for (int i = 0; i < 50; ++i) b.request_started();  // 20% of 50 = 10
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(b.try_retry()) << "retry " << i;
  EXPECT_FALSE(b.try_retry());
  for (int i = 0; i < 10; ++i) b.retry_finished();
  for (int i = 0; i < 40; ++i) b.request_finished();  // 10 active: the floor of 3 applies
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(b.try_retry()) << "retry " << i;
  EXPECT_FALSE(b.try_retry());
}

}  // namespace
}  // namespace sluice::upstream

namespace sluice::upstream {
namespace {

TEST(BackendStateTest, OutcomesSayWhenTheEjectionStateFlips) {
  BackendState s(OutlierConfig{2, std::chrono::seconds(1), std::chrono::seconds(5)});
  const SteadyTime t0{};
  EXPECT_FALSE(s.success());          // healthy stays healthy
  EXPECT_FALSE(s.failure(t0));        // one failure: not yet
  EXPECT_TRUE(s.failure(t0));         // the second ejects
  EXPECT_FALSE(s.failure(t0));        // late failures while ejected change nothing
  ASSERT_TRUE(s.admit(t0 + std::chrono::seconds(1)));  // the half-open trial
  EXPECT_TRUE(s.failure(t0 + std::chrono::seconds(1)));  // a failed trial ejects again
  ASSERT_TRUE(s.admit(t0 + std::chrono::seconds(4)));
  EXPECT_TRUE(s.success());           // a successful trial brings it back
}

}  // namespace
}  // namespace sluice::upstream
