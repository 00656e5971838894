// RedisLimiter against a real redis-server, without a gateway: the same decisions and header views as the
// in-memory LocalLimiter, settlement exactly once per lease, a release that overtakes its admission, and
// nothing left in Redis without an expiry.
//
// The scripts use Redis's clock, LocalLimiter the `now` it is given (wall_now() here, the same clock), so
// each step goes to Redis and at once to the local limiter. Limits are chosen so that a refusal is seconds
// of refill away from becoming an admission; exact outcomes are asserted only when the sequence took less
// than that, otherwise bounds computed from the time it took.
#include "store/redis_limiter.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <cmath>
#include <cstdlib>
#include <future>
#include <set>
#include <stdexcept>
#include <thread>

#include "harness.hpp"
#include "policy/limiter.hpp"
#include "server/http_io.hpp"
#include "store/redis.hpp"

namespace sluice::store {
namespace {

using namespace std::chrono_literals;
using policy::Admission;
using policy::Demand;
using policy::LimitKind;
using policy::WallMs;
using policy::WindowView;
using sluice::test::RedisServer;
using sluice::test::wait_until;
using Clock = std::chrono::steady_clock;
using Type = RedisReply::Type;
using Reply = std::optional<RedisReply>;

constexpr WallMs kLeaseTtl = 60'000;
constexpr WallMs kDay = 86'400'000;

/// One worker thread running an io_context, as the gateway's workers do.
class Worker {
 public:
  Worker() : guard_(io_.get_executor()), thread_([this] { io_.run(); }) {}
  ~Worker() {
    guard_.reset();
    wait_until([&] { return io_.stopped(); }, 10s);
    io_.stop();
    thread_.join();
  }
  asio::any_io_executor executor() { return io_.get_executor(); }
  /// Runs a coroutine on the worker and waits for its result.
  template <class T>
  T run(asio::awaitable<T> a) {
    return asio::co_spawn(io_, std::move(a), asio::use_future).get();
  }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  std::thread thread_;
};

/// A private redis-server and one client of it on a worker.
struct Rig {
  Rig() { client.start(); }
  Reply cmd(std::vector<std::string> argv) { return w.run(client.command(std::move(argv))); }

  RedisServer redis;
  RedisHealth health;  // outlives the worker, which runs the client's shutdown
  Worker w;
  RedisClient client{w.executor(), *parse_redis_url(redis.url()), 5s, health};
};

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

/// A wait (bounded) until the current budget window has a minute left, so a sequence stays in one window.
bool clear_of_window_edge(WallMs window_ms) {
  return wait_until([&] { return window_ms - policy::wall_now() % window_ms > 60'000; }, 70s);
}

Demand key_demand(const std::string& key, KeyLimits limits, std::uint64_t tokens) {
  Demand d;
  d.key = key;
  d.key_limits = limits;
  d.model = "gpt-test";
  d.tokens = tokens;
  return d;
}

/// One step decided by both limiters.
struct Both {
  Admission remote, local;
};

/// A RedisLimiter (on its own prefix) and a LocalLimiter with the same limits, driven step by step.
class Pair {
 public:
  Pair(Rig& rig, const std::string& prefix) : rig_(rig), redis_(rig.client, prefix, kLeaseTtl) {}

  Both admit(const Demand& d) {
    std::string lease = "lease-" + std::to_string(++leases_);
    auto t = Clock::now();
    auto remote = rig_.w.run(redis_.admit(d, lease));
    auto local = local_.admit(d, policy::wall_now());
    note(t);
    if (!remote) throw std::runtime_error("Redis did not answer an admission");
    return {std::move(*remote), std::move(local)};
  }

  /// Settles in both; returns {Redis's answer, the local budget left}.
  std::pair<Settled, std::optional<std::uint64_t>> settle(const Both& b, std::optional<std::uint64_t> used) {
    auto t = Clock::now();
    auto remote = rig_.w.run(redis_.settle(b.remote.reservation, used));
    auto local = local_.settle(b.local.reservation, used, policy::wall_now());
    note(t);
    return {remote, local};
  }

  /// How far the two limiters' reset times may drift: each "now" of one is read up to a step's duration
  /// after the other's, once at the bucket's start and once at the step.
  WallMs reset_tolerance_ms() const { return 3 + 2 * static_cast<WallMs>(std::ceil(slowest_step_ms_)); }

 private:
  void note(Clock::time_point t) {
    slowest_step_ms_ =
        std::max(slowest_step_ms_, std::chrono::duration<double, std::milli>(Clock::now() - t).count());
  }
  Rig& rig_;
  RedisLimiter redis_;
  policy::LocalLimiter local_;
  int leases_ = 0;
  double slowest_step_ms_ = 0;
};

void expect_same_decision(const Both& b, const std::string& step) {
  EXPECT_EQ(b.remote.allowed, b.local.allowed) << step;
  if (!b.remote.allowed && !b.local.allowed) {
    EXPECT_EQ(policy::to_string(b.remote.refused), policy::to_string(b.local.refused)) << step;
  }
}

void expect_admitted(const Both& b, const std::string& step) {
  EXPECT_TRUE(b.remote.allowed) << step << " (Redis refused: " << policy::to_string(b.remote.refused) << ")";
  EXPECT_TRUE(b.local.allowed) << step << " (local refused: " << policy::to_string(b.local.refused) << ")";
}

void expect_refused(const Both& b, LimitKind kind, const std::string& step) {
  EXPECT_FALSE(b.remote.allowed) << step;
  EXPECT_FALSE(b.local.allowed) << step;
  if (!b.remote.allowed) {
    EXPECT_EQ(policy::to_string(b.remote.refused), policy::to_string(kind)) << step;
  }
  if (!b.local.allowed) {
    EXPECT_EQ(policy::to_string(b.local.refused), policy::to_string(kind)) << step;
  }
}

std::uint64_t gap(std::uint64_t a, std::uint64_t b) {
  return a > b ? a - b : b - a;
}

void expect_close(const WindowView& remote, const WindowView& local, WallMs tolerance_ms,
                  const std::string& step) {
  EXPECT_EQ(remote.limit, local.limit) << step;
  EXPECT_LE(gap(remote.remaining, local.remaining), 1u)
      << step << ": remaining " << remote.remaining << " (Redis) vs " << local.remaining << " (local)";
  EXPECT_LE(std::llabs(remote.reset_ms - local.reset_ms), tolerance_ms)
      << step << ": reset " << remote.reset_ms << " ms (Redis) vs " << local.reset_ms << " ms (local)";
}

void expect_same_views(const Both& b, WallMs tolerance_ms, const std::string& step) {
  expect_close(b.remote.requests, b.local.requests, tolerance_ms, step + " requests");
  expect_close(b.remote.tokens, b.local.tokens, tolerance_ms, step + " tokens");
  EXPECT_EQ(b.remote.budget_remaining, b.local.budget_remaining) << step;
  if (!b.remote.allowed && !b.local.allowed) {
    EXPECT_LE(std::llabs(b.remote.retry_after_ms - b.local.retry_after_ms), tolerance_ms)
        << step << ": retry after " << b.remote.retry_after_ms << " ms (Redis) vs " << b.local.retry_after_ms
        << " ms (local)";
  }
}

std::string step_name(int i) {
  return "step " + std::to_string(i);
}

long long integer_of(const Reply& r) {
  if (!r) return -100;
  if (r->type == Type::integer) return r->integer;
  if (r->type == Type::string) return std::atoll(r->str.c_str());
  return -100;
}

/// Every key of the Redis database whose name starts with `prefix`.
std::set<std::string> keys_under(Rig& rig, const std::string& prefix) {
  std::set<std::string> out;
  std::string cursor = "0";
  do {
    auto page = rig.cmd({"SCAN", cursor, "MATCH", prefix + "*", "COUNT", "100"});
    if (!page || page->type != Type::array || page->elements.size() != 2) {
      ADD_FAILURE() << "SCAN failed";
      break;
    }
    cursor = page->elements[0].str;
    for (const auto& k : page->elements[1].elements) out.insert(k.str);
  } while (cursor != "0");
  return out;
}

// ---- parity with LocalLimiter ----

TEST(RedisLimiter, RpmBurstAdmitsTheSameSixtyAsLocal) {
  Rig rig;
  Pair both(rig, "t1:");
  auto d = key_demand("team", {.rpm = 60}, 10);

  auto started = Clock::now();
  std::vector<Both> steps;
  for (int i = 0; i < 70; ++i) steps.push_back(both.admit(d));
  double elapsed = seconds_since(started);

  int remote_ok = 0, local_ok = 0;
  for (int i = 0; i < 70; ++i) {
    const auto& s = steps[i];
    if (i < 60) expect_admitted(s, step_name(i));  // GCRA admits the whole allowance from rest, at any pace
    remote_ok += s.remote.allowed;
    local_ok += s.local.allowed;
    if (!s.remote.allowed) {
      EXPECT_EQ(policy::to_string(s.remote.refused), "rpm") << step_name(i);
    }
    if (!s.local.allowed) {
      EXPECT_EQ(policy::to_string(s.local.refused), "rpm") << step_name(i);
    }
  }
  // Then one more per second since the burst began: exactly 60 when it took under a second.
  int most = 60 + static_cast<int>(elapsed);
  EXPECT_GE(remote_ok, 60);
  EXPECT_LE(remote_ok, most) << elapsed << " s";
  EXPECT_GE(local_ok, 60);
  EXPECT_LE(local_ok, most) << elapsed << " s";
  if (elapsed < 1.0) {
    for (int i = 0; i < 70; ++i) expect_same_decision(steps[i], step_name(i));
  }
}

TEST(RedisLimiter, TpmWithTokenCostsDecidesLikeLocal) {
  Rig rig;
  Pair both(rig, "t2:");
  // tpm 60 refills one token a second; each refusal below is short by 30 tokens or more.
  struct Step {
    std::uint64_t tokens;
    bool admitted;
  };
  const std::vector<Step> plan{{30, true},  {20, true},   {40, false}, {10, true},
                               {30, false}, {500, false}, {0, true}};

  auto started = Clock::now();
  std::vector<Both> steps;
  for (const auto& p : plan) steps.push_back(both.admit(key_demand("team", {.tpm = 60}, p.tokens)));
  double elapsed = seconds_since(started);

  for (std::size_t i = 0; i < plan.size(); ++i) {
    if (plan[i].admitted) expect_admitted(steps[i], step_name(static_cast<int>(i)));
    if (elapsed < 30 && !plan[i].admitted)
      expect_refused(steps[i], LimitKind::tpm, step_name(static_cast<int>(i)));
  }
  // A request larger than the whole allowance is charged the allowance (it waits for a full bucket).
  EXPECT_EQ(steps[5].remote.reservation.key_tokens, 60u);
  EXPECT_EQ(steps[5].local.reservation.key_tokens, 60u);
  // Full after the fourth: nothing left but what refilled since (one token a second).
  auto refilled = static_cast<std::uint64_t>(elapsed);
  EXPECT_LE(steps[3].remote.tokens.remaining, refilled);
  EXPECT_LE(steps[3].local.tokens.remaining, refilled);
}

TEST(RedisLimiter, ConcurrencyFreedBySettleLikeLocal) {
  Rig rig;
  Pair both(rig, "t3:");
  auto d = key_demand("team", {.concurrency = 3}, 10);

  auto a = both.admit(d);
  auto b = both.admit(d);
  auto c = both.admit(d);
  expect_admitted(a, "first");
  expect_admitted(b, "second");
  expect_admitted(c, "third");
  expect_refused(both.admit(d), LimitKind::concurrency, "fourth, while three run");
  EXPECT_EQ(integer_of(rig.cmd({"ZCARD", "t3:k:team:active"})), 3);

  auto [settled, local_left] = both.settle(b, 12);
  EXPECT_TRUE(settled.answered);
  EXPECT_FALSE(settled.already);
  EXPECT_FALSE(settled.budget_left);
  EXPECT_FALSE(local_left);
  EXPECT_EQ(integer_of(rig.cmd({"ZCARD", "t3:k:team:active"})), 2);

  expect_admitted(both.admit(d), "after one ended");
  auto over = both.admit(d);
  expect_refused(over, LimitKind::concurrency, "again three running");
  EXPECT_EQ(over.remote.retry_after_ms, over.local.retry_after_ms);
}

TEST(RedisLimiter, BudgetPerWindowLikeLocal) {
  Rig rig;
  ASSERT_TRUE(clear_of_window_edge(kDay));
  Pair both(rig, "t4:");
  struct Step {
    std::uint64_t tokens;
    bool admitted;
    std::uint64_t left;  // budget remaining after the step
  };
  const std::vector<Step> plan{{40, true, 60}, {40, true, 20}, {30, false, 20}, {20, true, 0}, {1, false, 0}};
  for (std::size_t i = 0; i < plan.size(); ++i) {
    auto name = step_name(static_cast<int>(i));
    auto s = both.admit(key_demand("team", {.budget = 100, .budget_window = Millis(kDay)}, plan[i].tokens));
    if (plan[i].admitted)
      expect_admitted(s, name);
    else
      expect_refused(s, LimitKind::budget, name);
    EXPECT_EQ(s.remote.budget_remaining, plan[i].left) << name;
    EXPECT_EQ(s.local.budget_remaining, plan[i].left) << name;
    // Without tpm, the tokens headers report the budget.
    EXPECT_EQ(s.remote.tokens.limit, 100u) << name;
    EXPECT_EQ(s.remote.tokens.remaining, plan[i].left) << name;
    expect_same_views(s, both.reset_tolerance_ms(), name);
    if (!plan[i].admitted) {
      // A budget renews at the next window (00:00 UTC), which is more than a minute away.
      EXPECT_GT(s.remote.retry_after_ms, 60'000) << name;
      EXPECT_LE(s.remote.retry_after_ms, kDay) << name;
    }
  }
}

TEST(RedisLimiter, ModelLimitsAreSharedByKeysLikeLocal) {
  Rig rig;
  Pair both(rig, "t5:");
  auto demand = [](const std::string& key, const std::string& model, ModelLimits ml, std::uint64_t tokens) {
    auto d = key_demand(key, {.rpm = 1000}, tokens);  // a key limit that never refuses here
    d.model = model;
    d.model_limits = ml;
    return d;
  };
  auto started = Clock::now();

  // Concurrency 2 for the model, whichever key asks.
  ModelLimits conc{.concurrency = 2};
  auto a = both.admit(demand("alice", "m-conc", conc, 1));
  auto b = both.admit(demand("bob", "m-conc", conc, 1));
  expect_admitted(a, "alice on m-conc");
  expect_admitted(b, "bob on m-conc");
  expect_refused(both.admit(demand("alice", "m-conc", conc, 1)), LimitKind::model_concurrency,
                 "alice, third");
  expect_refused(both.admit(demand("bob", "m-conc", conc, 1)), LimitKind::model_concurrency, "bob, third");
  both.settle(a, 1);
  expect_admitted(both.admit(demand("bob", "m-conc", conc, 1)), "bob after alice ended");
  EXPECT_EQ(integer_of(rig.cmd({"ZCARD", "t5:m:m-conc:active"})), 2);

  // 3 rpm for the model (one every 20 s).
  ModelLimits rpm{.rpm = 3};
  std::vector<Both> r;
  for (const char* key : {"alice", "bob", "alice", "bob", "alice"})
    r.push_back(both.admit(demand(key, "m-rpm", rpm, 1)));

  // 60 tpm for the model: two keys of 30 fill it.
  ModelLimits tpm{.tpm = 60};
  std::vector<Both> t;
  for (const char* key : {"alice", "bob", "alice", "bob"})
    t.push_back(both.admit(demand(key, "m-tpm", tpm, 30)));
  both.settle(t[0], 0);  // alice's used nothing: her 30 go back to the model, for either key
  t.push_back(both.admit(demand("bob", "m-tpm", tpm, 30)));
  t.push_back(both.admit(demand("alice", "m-tpm", tpm, 30)));

  // Without a key (auth off) key limits do not apply, the model's do.
  auto anonymous = key_demand("", {.rpm = 1}, 1);
  anonymous.model = "m-open";
  anonymous.model_limits = {.rpm = 100};
  expect_admitted(both.admit(anonymous), "anonymous, first");
  expect_admitted(both.admit(anonymous), "anonymous, second (the key's rpm 1 is not in force)");
  double elapsed = seconds_since(started);

  for (int i = 0; i < 3; ++i) expect_admitted(r[i], "m-rpm " + step_name(i));
  for (int i : {0, 1, 4}) expect_admitted(t[i], "m-tpm " + step_name(i));
  if (elapsed < 20) {
    for (int i = 3; i < 5; ++i) expect_refused(r[i], LimitKind::model_rpm, "m-rpm " + step_name(i));
    for (int i : {2, 3, 5}) expect_refused(t[i], LimitKind::model_tpm, "m-tpm " + step_name(i));
  }
  // The requests headers report the key's own rpm when it has one.
  EXPECT_EQ(r[0].remote.requests.limit, 1000u);
  EXPECT_EQ(r[0].local.requests.limit, 1000u);
}

// ---- header views ----

TEST(RedisLimiter, HeaderViewsAgreeWithLocal) {
  Rig rig;
  ASSERT_TRUE(clear_of_window_edge(kDay));
  Pair both(rig, "t6:");
  auto started = Clock::now();

  // Key rpm and tpm: 10-token requests against tpm 60, so the seventh is refused (10 s of refill short).
  auto d = key_demand("team", {.rpm = 60, .tpm = 60, .budget = 1000, .budget_window = Millis(kDay)}, 10);
  std::vector<Both> steps;
  for (int i = 0; i < 7; ++i) steps.push_back(both.admit(d));

  // Model only (no key): the views come from the model's limits.
  Demand m;
  m.model = "shared";
  m.model_limits = {.rpm = 30, .tpm = 120};
  m.tokens = 40;
  for (int i = 0; i < 4; ++i) steps.push_back(both.admit(m));
  double elapsed = seconds_since(started);

  auto tolerance = both.reset_tolerance_ms();
  for (std::size_t i = 0; i < steps.size(); ++i) {
    auto name = step_name(static_cast<int>(i));
    expect_same_views(steps[i], tolerance, name);
    if (elapsed < 10) expect_same_decision(steps[i], name);
  }
  const auto& first = steps[0];
  EXPECT_EQ(first.remote.requests.limit, 60u);
  EXPECT_EQ(first.remote.requests.remaining, 59u);
  EXPECT_EQ(first.remote.tokens.limit, 60u);
  EXPECT_EQ(first.remote.tokens.remaining, 50u);
  EXPECT_NEAR(static_cast<double>(first.remote.tokens.reset_ms), 10'000, static_cast<double>(tolerance));
  EXPECT_EQ(first.remote.budget_remaining, 990u);
  const auto& model_first = steps[7];
  EXPECT_EQ(model_first.remote.requests.limit, 30u);
  EXPECT_EQ(model_first.remote.tokens.limit, 120u);
  EXPECT_EQ(model_first.remote.tokens.remaining, 80u);
  EXPECT_FALSE(model_first.remote.budget_remaining);
  if (elapsed < 10) {
    expect_refused(steps[6], LimitKind::tpm, "key, seventh");
    EXPECT_GT(steps[6].remote.retry_after_ms, 5'000);
    expect_refused(steps[10], LimitKind::model_tpm, "model, fourth");
  }
}

// ---- settlement ----

TEST(RedisLimiter, SettleWithFewerTokensRefunds) {
  Rig rig;
  Pair both(rig, "t7:");
  auto of = [](std::uint64_t tokens) { return key_demand("team", {.tpm = 60}, tokens); };
  auto started = Clock::now();
  auto a = both.admit(of(50));
  auto refused = both.admit(of(40));                // 10 left
  auto [settled, local_left] = both.settle(a, 10);  // 40 back: 50 left
  auto after = both.admit(of(40));
  auto full = both.admit(of(40));  // 10 left again
  double elapsed = seconds_since(started);

  EXPECT_TRUE(settled.answered);
  EXPECT_FALSE(settled.already);
  expect_admitted(a, "50");
  expect_admitted(after, "40 after the refund");
  if (elapsed < 30) {  // each refusal is 30 tokens (30 s of refill) short
    expect_refused(refused, LimitKind::tpm, "40 before the refund");
    expect_refused(full, LimitKind::tpm, "40 once full again");
  }
  expect_same_views(after, both.reset_tolerance_ms(), "after the refund");
}

TEST(RedisLimiter, SettleWithMoreTokensCharges) {
  Rig rig;
  Pair both(rig, "t8:");
  auto of = [](std::uint64_t tokens) { return key_demand("team", {.tpm = 60}, tokens); };
  auto started = Clock::now();
  auto a = both.admit(of(10));
  both.settle(a, 40);  // 30 more: 20 left
  auto big = both.admit(of(50));
  auto fits = both.admit(of(20));
  double elapsed = seconds_since(started);

  expect_admitted(a, "10");
  expect_admitted(fits, "20 after the charge");
  if (elapsed < 30) expect_refused(big, LimitKind::tpm, "50 after the charge");
  auto refilled = static_cast<std::uint64_t>(elapsed);  // full again, but for one token a second since
  EXPECT_LE(fits.remote.tokens.remaining, refilled);
  EXPECT_LE(fits.local.tokens.remaining, refilled);
}

TEST(RedisLimiter, SettleWithUnknownUsageKeepsTheReservation) {
  Rig rig;
  Pair both(rig, "t9:");
  auto of = [](std::uint64_t tokens) { return key_demand("team", {.tpm = 60}, tokens); };
  auto started = Clock::now();
  auto a = both.admit(of(30));
  auto [settled, local_left] = both.settle(a, std::nullopt);  // still 30 charged
  auto big = both.admit(of(60));
  auto fits = both.admit(of(30));
  double elapsed = seconds_since(started);

  EXPECT_TRUE(settled.answered);
  EXPECT_FALSE(settled.already);
  expect_admitted(a, "30");
  expect_admitted(fits, "30 after an unknown usage");
  if (elapsed < 30) expect_refused(big, LimitKind::tpm, "60 after an unknown usage");
  expect_same_views(fits, both.reset_tolerance_ms(), "30 after an unknown usage");
}

TEST(RedisLimiter, SettleReturnsBudgetLeft) {
  Rig rig;
  ASSERT_TRUE(clear_of_window_edge(kDay));
  Pair both(rig, "t10:");
  auto of = [](std::uint64_t tokens) {
    return key_demand("team", {.budget = 100, .budget_window = Millis(kDay)}, tokens);
  };
  auto a = both.admit(of(60));
  expect_admitted(a, "60");
  EXPECT_EQ(a.remote.budget_remaining, 40u);

  auto [fewer, fewer_local] = both.settle(a, 20);
  EXPECT_TRUE(fewer.answered);
  EXPECT_FALSE(fewer.already);
  EXPECT_EQ(fewer.budget_left, 80u);
  EXPECT_EQ(fewer_local, 80u);

  auto b = both.admit(of(80));
  expect_admitted(b, "80 after the refund");
  auto [unknown, unknown_local] = both.settle(b, std::nullopt);
  EXPECT_EQ(unknown.budget_left, 0u);
  EXPECT_EQ(unknown_local, 0u);
  expect_refused(both.admit(of(1)), LimitKind::budget, "1 with the budget spent");

  auto c = both.admit(of(0));  // nothing reserved, then more used than that
  expect_admitted(c, "0");
  auto [over, over_local] = both.settle(c, 5);
  EXPECT_EQ(over.budget_left, 0u);
  EXPECT_EQ(over_local, 0u);
  EXPECT_EQ(integer_of(rig.cmd({"HGET", "t10:k:team:budget", "u"})), 105);
}

// ---- exactly once ----

TEST(RedisLimiter, SettlingTwiceChangesNothing) {
  Rig rig;
  ASSERT_TRUE(clear_of_window_edge(kDay));
  RedisLimiter limiter(rig.client, "t11:", kLeaseTtl);
  auto d = key_demand("team", {.concurrency = 2, .budget = 100, .budget_window = Millis(kDay)}, 30);
  auto admit = [&](const std::string& lease) {
    auto a = rig.w.run(limiter.admit(d, lease));
    if (!a) throw std::runtime_error("Redis did not answer an admission");
    return *a;
  };
  auto a = admit("a");
  auto b = admit("b");
  ASSERT_TRUE(a.allowed);
  ASSERT_TRUE(b.allowed);

  auto first = rig.w.run(limiter.settle(a.reservation, 10));
  EXPECT_TRUE(first.answered);
  EXPECT_FALSE(first.already);
  EXPECT_EQ(first.budget_left, 60u);  // 10 used by a, 30 reserved by b

  for (std::optional<std::uint64_t> used :
       {std::optional<std::uint64_t>(10), std::optional<std::uint64_t>(0), std::optional<std::uint64_t>(90),
        std::optional<std::uint64_t>()}) {
    auto again = rig.w.run(limiter.settle(a.reservation, used));
    EXPECT_TRUE(again.answered);
    EXPECT_TRUE(again.already);
    EXPECT_FALSE(again.budget_left);
  }
  EXPECT_EQ(integer_of(rig.cmd({"HGET", "t11:k:team:budget", "u"})), 40);  // unchanged
  // b still holds its slot: one more fits, then the key is at its concurrency again.
  EXPECT_EQ(integer_of(rig.cmd({"ZCARD", "t11:k:team:active"})), 1);
  auto b_slot = rig.cmd({"ZSCORE", "t11:k:team:active", "b"});
  ASSERT_TRUE(b_slot);
  EXPECT_EQ(b_slot->type, Type::string);
  auto c = admit("c");
  EXPECT_TRUE(c.allowed);
  EXPECT_EQ(c.budget_remaining, 30u);
  auto d_refused = admit("d");
  EXPECT_FALSE(d_refused.allowed);
  EXPECT_EQ(policy::to_string(d_refused.refused), "concurrency");
  EXPECT_EQ(integer_of(rig.cmd({"ZCARD", "t11:k:team:active"})), 2);

  auto b_done = rig.w.run(limiter.settle(b.reservation, 30));
  EXPECT_FALSE(b_done.already);
  EXPECT_EQ(b_done.budget_left, 30u);
  EXPECT_TRUE(rig.w.run(limiter.settle(b.reservation, 30)).already);
  EXPECT_EQ(integer_of(rig.cmd({"ZCARD", "t11:k:team:active"})), 1);  // c's lease, and only it
  auto c_slot = rig.cmd({"ZSCORE", "t11:k:team:active", "c"});
  ASSERT_TRUE(c_slot);
  EXPECT_EQ(c_slot->type, Type::string);
}

// ---- a release that overtakes its admission ----

TEST(RedisLimiter, ReleaseBeforeALateAdmissionReservesNothing) {
  Rig rig;
  RedisLimiter limiter(rig.client, "t12:", kLeaseTtl);
  auto d = key_demand("team", {.rpm = 60, .concurrency = 1}, 10);
  const std::string lease = "timed-out";

  // The admission timed out on its way; its release reaches Redis first.
  auto r = limiter.reservation_for(d, lease);
  EXPECT_TRUE(r.remote);
  EXPECT_EQ(r.lease, lease);
  auto released = rig.w.run(limiter.settle(r, std::nullopt));
  EXPECT_TRUE(released.answered);
  EXPECT_TRUE(released.already);
  auto tombstone = rig.cmd({"PTTL", "t12:r:" + lease});
  EXPECT_GT(integer_of(tombstone), 0);

  // Then the admission itself arrives: it must reserve nothing.
  auto late = rig.w.run(limiter.admit(d, lease));
  EXPECT_FALSE(late);
  EXPECT_EQ(integer_of(rig.cmd({"EXISTS", "t12:k:team:active"})), 0);
  EXPECT_EQ(integer_of(rig.cmd({"EXISTS", "t12:k:team:rpm"})), 0);

  // The key's whole allowance is still there.
  const std::string next = "next";
  auto fresh = rig.w.run(limiter.admit(d, next));
  ASSERT_TRUE(fresh);
  EXPECT_TRUE(fresh->allowed);
  EXPECT_EQ(fresh->requests.remaining, 59u);
  EXPECT_EQ(integer_of(rig.cmd({"ZCARD", "t12:k:team:active"})), 1);
  // And settling the overtaken lease once more is still a no-op.
  EXPECT_TRUE(rig.w.run(limiter.settle(r, 10)).already);
  EXPECT_EQ(integer_of(rig.cmd({"ZCARD", "t12:k:team:active"})), 1);
}

// ---- expiry ----

TEST(RedisLimiter, EveryKeyExpires) {
  Rig rig;
  RedisLimiter limiter(rig.client, "t13:", kLeaseTtl);
  // Slow rates, so that no bucket drains (and its key expires) before it is looked at.
  auto d = key_demand("team", {.rpm = 6, .tpm = 600, .concurrency = 5, .budget = 100000}, 100);
  d.model = "busy";
  d.model_limits = {.rpm = 6, .tpm = 600, .concurrency = 5};

  std::vector<Admission> admitted;
  for (const char* lease : {"one", "two", "three"}) {
    const std::string id = lease;
    auto a = rig.w.run(limiter.admit(d, id));
    ASSERT_TRUE(a);
    ASSERT_TRUE(a->allowed) << lease;
    admitted.push_back(*a);
  }
  // Settled with fewer (refund), more (charge) and unknown usage; a fourth lease only released.
  EXPECT_FALSE(rig.w.run(limiter.settle(admitted[0].reservation, 10)).already);
  EXPECT_FALSE(rig.w.run(limiter.settle(admitted[1].reservation, 200)).already);
  EXPECT_FALSE(rig.w.run(limiter.settle(admitted[2].reservation, std::nullopt)).already);
  auto released = limiter.reservation_for(d, "four");
  EXPECT_TRUE(rig.w.run(limiter.settle(released, std::nullopt)).already);
  // One still running holds its slots.
  const std::string running = "five";
  auto five = rig.w.run(limiter.admit(d, running));
  ASSERT_TRUE(five && five->allowed);

  auto keys = keys_under(rig, "t13:");
  for (const char* expected :
       {"t13:k:team:rpm", "t13:k:team:tpm", "t13:k:team:budget", "t13:k:team:active", "t13:m:busy:rpm",
        "t13:m:busy:tpm", "t13:m:busy:active", "t13:r:one", "t13:r:four", "t13:r:five"})
    EXPECT_EQ(keys.count(expected), 1u) << expected;
  for (const auto& k : keys) {
    auto ttl = integer_of(rig.cmd({"PTTL", k}));
    // -2: gone meanwhile (a full bucket's short expiry); -1 would be a key kept forever.
    EXPECT_TRUE(ttl > 0 || ttl == -2) << k << " PTTL " << ttl;
  }
}

}  // namespace
}  // namespace sluice::store
