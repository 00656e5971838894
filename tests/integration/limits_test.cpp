// Keys, rate limits and token budgets through the real gateway: bursts of concurrent requests, streams,
// disconnects, backend wait queues, hot reload, and limits shared by replicas through a real redis-server.
#include <gtest/gtest.h>

#include <regex>
#include <rapidjson/document.h>

#include <csignal>
#include <cmath>
#include <mutex>
#include <thread>

#include "harness.hpp"
#include "policy/keyring.hpp"
#include "policy/limiter.hpp"

namespace sluice::test {
namespace {

using Clock = std::chrono::steady_clock;

// A fast simulated backend, so that a test measures limits rather than generation.
const std::string kFastSim =
    "backends:\n  - { name: sim, dialect: simulator, simulator: { tokens_per_second: 20000, ttft: 1ms } }\n";

std::string digest(const std::string& key) {
  return policy::sha256_hex(key);
}

/// A config with the fast simulator, one model `m` (with `model_extra`) and the given keys section.
std::string limits_config(const std::string& keys, const std::string& model_extra = "",
                          const std::string& backends = kFastSim, const std::string& extra = "") {
  return "server: { listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0, workers: 2, drain_timeout: 5s }\n"
         "log: { level: warn, format: text, access_log: false }\n" +
         backends + "models:\n  - { name: m, targets: [ { backend: sim } ]" + model_extra + " }\nkeys:\n" + keys +
         extra;
}

std::string key_line(const std::string& name, const std::string& key, const std::string& limits) {
  return "  - { name: " + name + ", key_sha256: \"" + digest(key) + "\", limits: { " + limits + " } }\n";
}

std::string chat(const std::string& extra = "") {
  return R"({"model":"m","messages":[{"role":"user","content":"hi"}])" + extra + "}";
}

std::string metrics_text(std::uint16_t admin_port) {
  return HttpClient(admin_port).request("GET", "/metrics").body;
}

/// The value of one exact series in a metrics text; NaN when absent.
double series(const std::string& metrics, const std::string& name_and_labels) {
  auto p = metrics.find("\n" + name_and_labels + " ");
  if (p == std::string::npos) return std::nan("");
  return std::stod(metrics.substr(p + name_and_labels.size() + 2));
}

/// Sends `n` requests at once, each from its own thread and connection; returns the responses.
std::vector<HttpResponse> burst(std::uint16_t port, int n, const std::string& body, const std::string& key) {
  std::vector<HttpResponse> out(n);
  std::vector<std::thread> threads;
  std::atomic<bool> go{false};
  for (int i = 0; i < n; ++i)
    threads.emplace_back([&, i] {
      while (!go) std::this_thread::yield();
      out[i] = post_json(port, "/v1/chat/completions", body, key);
    });
  go = true;
  for (auto& t : threads) t.join();
  return out;
}

int count_status(const std::vector<HttpResponse>& rs, int status) {
  return static_cast<int>(std::count_if(rs.begin(), rs.end(), [&](const auto& r) { return r.status == status; }));
}

/// Opens a stream and reads until its first event, so the request is surely admitted and in flight.
std::unique_ptr<HttpClient> open_stream(std::uint16_t port, const std::string& key, int tokens = 2000) {
  auto c = std::make_unique<HttpClient>(port);
  std::string body = chat(R"(,"stream":true,"simulator":{"tokens":)" + std::to_string(tokens) +
                          R"(,"tokens_per_second":20})");
  c->send_raw(raw_post("/v1/chat/completions", body, key));
  auto head = c->read_head();
  EXPECT_EQ(head.status, 200);
  std::string got;
  EXPECT_TRUE(wait_until([&] {
    got += c->read_some(100ms);
    return !sse_data(got).empty();
  }));
  return c;
}

/// A config for the real binary: info logs, so its start-up line tells the ports it bound.
std::string replica_config(std::string yaml) {
  auto p = yaml.find("level: warn");
  if (p != std::string::npos) yaml.replace(p, 11, "level: info");
  return yaml;
}

std::string redis_section(const RedisServer& redis, const std::string& extra = "") {
  return "store: redis\nredis: { url: \"" + redis.url() + "\", timeout: 500ms" + extra + " }\n";
}

bool redis_up(std::uint16_t admin_port) {
  return series(metrics_text(admin_port), "sluice_redis_up") == 1;
}

int status_of(std::uint16_t port, const std::string& key, const std::string& body = chat(R"(,"simulator":{"tokens":2})")) {
  return post_json(port, "/v1/chat/completions", body, key).status;
}

std::int64_t utc_day() {
  return policy::wall_now() / 86'400'000;
}

}  // namespace

TEST(Limits, RpmBurstOfConcurrentRequestsGetsExactlyTheAllowance) {
  TestGateway gw(limits_config(key_line("team", "sk-team", "rpm: 60")));
  auto started = Clock::now();
  auto rs = burst(gw.port(), 200, chat(R"(,"simulator":{"tokens":2})"), "sk-team");
  double elapsed = std::chrono::duration<double>(Clock::now() - started).count();
  int ok = count_status(rs, 200), limited = count_status(rs, 429);
  EXPECT_EQ(ok + limited, 200);
  // GCRA admits the whole allowance at once, then one more per second: exactly 60 when the burst took
  // under a second, and never more than the refill since.
  EXPECT_GE(ok, 60);
  EXPECT_LE(ok, 60 + static_cast<int>(elapsed));
  for (const auto& r : rs) {
    ASSERT_EQ(r.header("x-ratelimit-limit-requests"), "60");
    ASSERT_FALSE(r.header("x-ratelimit-remaining-requests").empty());
    ASSERT_FALSE(r.header("x-ratelimit-reset-requests").empty());
    if (r.status != 429) continue;
    EXPECT_EQ(r.header("x-ratelimit-remaining-requests"), "0");
    int retry = std::stoi(r.header("retry-after"));
    EXPECT_GE(retry, 1);
    EXPECT_LE(retry, 60);
    EXPECT_FALSE(r.header("retry-after-ms").empty());
    rapidjson::Document d;
    d.Parse(r.body.data(), r.body.size());
    ASSERT_TRUE(d.IsObject()) << r.body;
    EXPECT_STREQ(d["error"]["code"].GetString(), "rate_limit_exceeded");
    EXPECT_STREQ(d["error"]["type"].GetString(), "requests");
    EXPECT_NE(std::string(d["error"]["message"].GetString()).find("RPM"), std::string::npos);
  }
  auto m = metrics_text(gw.admin_port());
  EXPECT_EQ(series(m, R"(sluice_rate_limited_total{key="team",limit="rpm"})"), limited) << m;
}

TEST(Limits, TokenBudgetIsNotExceededByConcurrentStreams) {
  auto day = utc_day();
  TestGateway gw(limits_config(key_line("team", "sk-team", "budget: 1000, budget_window: 1d")));
  // Each stream may generate 100 tokens: its reservation is that plus a prompt estimate (~6). Each takes
  // about 2 s, so all 30 are decided while the admitted ones still hold their reservations.
  auto rs = burst(gw.port(), 30,
                  chat(R"(,"stream":true,"max_tokens":100,"simulator":{"tokens":100,"tokens_per_second":50})"),
                  "sk-team");
  if (utc_day() != day) GTEST_SKIP() << "the budget window rolled over during the test";
  int ok = count_status(rs, 200);
  EXPECT_EQ(ok, 9);  // 9 × 106 ≤ 1000 < 10 × 106
  EXPECT_EQ(count_status(rs, 429), 30 - ok);
  for (const auto& r : rs)
    if (r.status == 429) {
      EXPECT_NE(r.body.find("budget"), std::string::npos) << r.body;
      EXPECT_NE(r.body.find("\"type\":\"tokens\""), std::string::npos) << r.body;
      // The budget renews at the next UTC midnight.
      EXPECT_LE(std::stoi(r.header("retry-after")), 86'400);
    }
  // Settled with the real usage: what is left is the budget less what the backend reported.
  std::string m;
  ASSERT_TRUE(wait_until([&] {
    m = metrics_text(gw.admin_port());
    double in = series(m, R"(sluice_tokens_total{backend="sim",key="team",model="m",type="input"})");
    double out = series(m, R"(sluice_tokens_total{backend="sim",key="team",model="m",type="output"})");
    return in + out > 0 && series(m, R"(sluice_key_budget_remaining_tokens{key="team"})") == 1000 - in - out;
  })) << m;
  double used = 1000 - series(m, R"(sluice_key_budget_remaining_tokens{key="team"})");
  EXPECT_LE(used, 1000);
  EXPECT_EQ(series(m, R"(sluice_rate_limited_total{key="team",limit="budget"})"), 30 - ok);
}

// All six rate-limit headers, as OpenAI sends them, on an answer to a key with both limits.
TEST(Limits, AnAnswerCarriesAllSixRateLimitHeaders) {
  TestGateway gw(limits_config(key_line("team", "sk-team", "rpm: 60, tpm: 6000")));
  auto r = post_json(gw.port(), "/v1/chat/completions", chat(R"(,"max_tokens":100,"simulator":{"tokens":3})"),
                     "sk-team");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-ratelimit-limit-requests"), "60");
  EXPECT_EQ(r.header("x-ratelimit-remaining-requests"), "59");
  EXPECT_EQ(r.header("x-ratelimit-reset-requests"), "1s");  // one request's worth comes back each second
  EXPECT_EQ(r.header("x-ratelimit-limit-tokens"), "6000");
  const auto remaining = std::stoi(r.header("x-ratelimit-remaining-tokens"));
  EXPECT_LE(remaining, 6000 - 100);
  EXPECT_GT(remaining, 0);
  const std::string reset = r.header("x-ratelimit-reset-tokens");
  EXPECT_TRUE(std::regex_match(reset, std::regex(R"(([0-9]+m)?[0-9]+(\.[0-9]{1,3})?s|[0-9]+ms)"))) << reset;
  // And nothing joined to them: the header written after them is still read as its own.
  EXPECT_EQ(r.header("content-length"), std::to_string(r.body.size()));
}

TEST(Limits, TokensPerMinuteAreSettledWithTheRealUsage) {
  TestGateway gw(limits_config(key_line("team", "sk-team", "tpm: 300")));
  // Reservations of ~106 tokens against 300 per minute: without settlement only 2 would ever pass.
  // Each answer really uses a handful, so a long run of sequential requests all pass.
  for (int i = 0; i < 12; ++i) {
    auto r = post_json(gw.port(), "/v1/chat/completions", chat(R"(,"max_tokens":100,"simulator":{"tokens":3})"),
                       "sk-team");
    ASSERT_EQ(r.status, 200) << "request " << i << ": " << r.body;
    EXPECT_EQ(r.header("x-ratelimit-limit-tokens"), "300");
    EXPECT_LE(std::stoi(r.header("x-ratelimit-remaining-tokens")), 300 - 100);
  }
  // Concurrent ones are held to the allowance by their reservations (each answer takes ~3 s, so all six are
  // decided while the admitted ones still hold theirs).
  auto rs = burst(gw.port(), 6, chat(R"(,"max_tokens":100,"simulator":{"tokens":3,"tokens_per_second":1})"),
                  "sk-team");
  EXPECT_LE(count_status(rs, 200), 3);
  for (const auto& r : rs)
    if (r.status == 429) {
      EXPECT_NE(r.body.find("\"type\":\"tokens\""), std::string::npos) << r.body;
    }
}

TEST(Limits, ClientThatLeavesMidStreamIsChargedForWhatWasGenerated) {
  TestGateway gw(limits_config(key_line("team", "sk-team", "budget: 100000")));
  HttpClient c(gw.port());
  ASSERT_TRUE(c.send_raw(raw_post(
      "/v1/chat/completions", chat(R"(,"stream":true,"max_tokens":500,"simulator":{"tokens":500,"tokens_per_second":50})"),
      "sk-team")));
  ASSERT_EQ(c.read_head().status, 200);
  std::string got;
  ASSERT_TRUE(wait_until([&] {
    got += c.read_some(100ms);
    return sse_data(got).size() >= 4;
  }));
  c.close();
  std::string m;
  ASSERT_TRUE(wait_until([&] {
    m = metrics_text(gw.admin_port());
    return series(m, R"(sluice_client_disconnects_total{phase="streaming"})") == 1 &&
           series(m, R"(sluice_key_budget_remaining_tokens{key="team"})") > 100000 - 500;
  })) << m;
  // Charged: at least the chunks the client saw, far less than the 500 it reserved.
  double charged = 100000 - series(m, R"(sluice_key_budget_remaining_tokens{key="team"})");
  EXPECT_GE(charged, 3);
  EXPECT_LT(charged, 400);
}

TEST(Limits, AnswerWithoutUsageKeepsItsReservationButNeverMoreThanTheLimit) {
  // A backend that reports no usage: the reservation stays charged, capped at the limit, so one request
  // with an absurd max_tokens costs at most one minute of the model's allowance, never hours.
  ScriptedUpstream no_usage([](UpstreamConn& c) {
    for (;;) {
      if (c.read_request().empty()) return;
      std::string body =
          R"({"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,)"
          R"("message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]})";
      c.write("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
              "\r\n\r\n" + body);
    }
  });
  std::string backends = "backends:\n  - { name: sim, url: \"" + no_usage.url() + "\", health: { enabled: false } }\n";
  TestGateway gw(limits_config(key_line("a", "sk-a", "rpm: 1000") + key_line("b", "sk-b", "rpm: 1000"),
                               ", limits: { tpm: 100000 }", backends));
  EXPECT_EQ(status_of(gw.port(), "sk-a", chat(R"(,"max_tokens":100000000000)")), 200);
  auto r = post_json(gw.port(), "/v1/chat/completions", chat(R"(,"max_tokens":10)"), "sk-b");
  EXPECT_EQ(r.status, 429);
  EXPECT_LE(std::stoi(r.header("retry-after")), 60) << r.body;
}

TEST(Limits, AbandonedNonStreamRequestStaysCharged) {
  TestGateway gw(limits_config(key_line("team", "sk-team", "budget: 5000"), "", 
                               "backends:\n  - { name: sim, dialect: simulator, simulator: { tokens_per_second: 20, ttft: 1ms } }\n"));
  {
    HttpClient c(gw.port());
    ASSERT_TRUE(c.send_raw(raw_post("/v1/chat/completions", chat(R"(,"max_tokens":1000)"), "sk-team")));
    ASSERT_TRUE(wait_until([&] {
      return series(metrics_text(gw.admin_port()), R"(sluice_inflight_requests{backend="sim",model="m"})") == 1;
    }));
  }  // the client leaves while the backend is generating
  std::string m;
  ASSERT_TRUE(wait_until([&] {
    m = metrics_text(gw.admin_port());
    return series(m, R"(sluice_client_disconnects_total{phase="waiting"})") == 1 &&
           series(m, R"(sluice_inflight_requests{backend="sim",model="m"})") == 0;
  })) << m;
  // Usage unknown, generation may have run: the reservation (1000 + prompt estimate) is kept, not refunded.
  EXPECT_LE(series(m, R"(sluice_key_budget_remaining_tokens{key="team"})"), 4000) << m;
}

TEST(Limits, ConcurrencyLimitRefusesTheExtraRequestAndFreesTheSlot) {
  TestGateway gw(limits_config(key_line("team", "sk-team", "concurrency: 2")));
  auto a = open_stream(gw.port(), "sk-team");
  auto b = open_stream(gw.port(), "sk-team");
  auto third = post_json(gw.port(), "/v1/chat/completions", chat(), "sk-team");
  EXPECT_EQ(third.status, 429);
  EXPECT_NE(third.body.find("concurrent"), std::string::npos) << third.body;
  EXPECT_NE(third.body.find("\"type\":\"requests\""), std::string::npos) << third.body;
  EXPECT_FALSE(third.header("retry-after").empty());
  a->close();  // the gateway notices, cancels the upstream and frees the slot
  ASSERT_TRUE(wait_until([&] {
    return post_json(gw.port(), "/v1/chat/completions", chat(R"(,"simulator":{"tokens":2})"), "sk-team").status ==
           200;
  }));
}

TEST(Limits, ModelLimitsHoldAcrossKeysAndKeyLimitsStayPerKey) {
  TestGateway gw(limits_config(key_line("a", "sk-a", "rpm: 100") + key_line("b", "sk-b", "rpm: 100"),
                               ", limits: { rpm: 4 }"));
  auto started = Clock::now();
  int ok = 0;
  for (int i = 0; i < 10; ++i)
    ok += post_json(gw.port(), "/v1/chat/completions", chat(R"(,"simulator":{"tokens":2})"), i % 2 ? "sk-a" : "sk-b")
              .status == 200;
  double elapsed = std::chrono::duration<double>(Clock::now() - started).count();
  EXPECT_GE(ok, 4);
  EXPECT_LE(ok, 4 + static_cast<int>(elapsed * 4 / 60));
  auto r = post_json(gw.port(), "/v1/chat/completions", chat(), "sk-a");
  EXPECT_EQ(r.status, 429);
  EXPECT_NE(r.body.find("model `m`"), std::string::npos) << r.body;
  // The key's own allowance is untouched by the other key's use.
  EXPECT_EQ(r.header("x-ratelimit-limit-requests"), "100");
}

TEST(Limits, RequestsWaitInABoundedQueueWhenTheBackendIsFull) {
  const std::string one_slot =
      "backends:\n  - { name: sim, dialect: simulator, max_inflight: 1, max_queue: 1, queue_timeout: 300ms,\n"
      "      simulator: { tokens_per_second: 20000, ttft: 1ms } }\n";
  TestGateway gw(limits_config(key_line("team", "sk-team", "rpm: 1000"), "", one_slot));
  auto holder = open_stream(gw.port(), "sk-team");  // takes the only slot
  // One waits its queue_timeout and gets 503; with the queue full, another is refused at once.
  HttpResponse waited, refused;
  std::thread waiter([&] { waited = post_json(gw.port(), "/v1/chat/completions", chat(), "sk-team"); });
  ASSERT_TRUE(wait_until(
      [&] { return series(metrics_text(gw.admin_port()), R"(sluice_queued_requests{backend="sim"})") == 1; }));
  refused = post_json(gw.port(), "/v1/chat/completions", chat(), "sk-team");
  waiter.join();
  EXPECT_EQ(refused.status, 503);
  EXPECT_EQ(waited.status, 503);
  EXPECT_NE(waited.body.find("backend_overloaded"), std::string::npos) << waited.body;
  EXPECT_EQ(waited.header("retry-after"), "1");
  EXPECT_GE(std::stod(waited.header("x-sluice-overhead-ms")), 250.0);  // it did wait (about 300 ms)

}

TEST(Limits, QueuedRequestsAreServedInTheOrderTheyArrived) {
  const std::string one_slot =
      "backends:\n  - { name: sim, dialect: simulator, max_inflight: 1, max_queue: 8, queue_timeout: 60s,\n"
      "      simulator: { tokens_per_second: 20000, ttft: 1ms } }\n";
  TestGateway gw(limits_config(key_line("team", "sk-team", "rpm: 1000"), "", one_slot));
  auto holder = open_stream(gw.port(), "sk-team");
  std::mutex mutex;
  std::vector<int> finished;
  std::vector<std::thread> waiters;
  for (int i = 0; i < 4; ++i) {
    waiters.emplace_back([&, i] {
      // Each answer takes about half a second, so the order of completion is the order of service.
      auto r = post_json(gw.port(), "/v1/chat/completions",
                         chat(R"(,"simulator":{"tokens":50,"tokens_per_second":100})"), "sk-team");
      std::lock_guard lock(mutex);
      finished.push_back(r.status == 200 ? i : -1);
    });
    // The next one arrives only once this one is in line.
    ASSERT_TRUE(wait_until([&] {
      return series(metrics_text(gw.admin_port()), R"(sluice_queued_requests{backend="sim"})") == i + 1;
    }));
  }
  holder->close();
  for (auto& t : waiters) t.join();
  EXPECT_EQ(finished, (std::vector<int>{0, 1, 2, 3}));  // one slot: each is served after the one before it
}

TEST(Limits, AQueuedRequestGetsTheSlotWhenItFreesUp) {
  const std::string one_slot =
      "backends:\n  - { name: sim, dialect: simulator, max_inflight: 1, max_queue: 4, queue_timeout: 30s,\n"
      "      simulator: { tokens_per_second: 20000, ttft: 1ms } }\n";
  TestGateway gw(limits_config(key_line("team", "sk-team", "rpm: 1000"), "", one_slot));
  auto holder = open_stream(gw.port(), "sk-team");
  HttpResponse served;
  std::thread next([&] {
    served = post_json(gw.port(), "/v1/chat/completions", chat(R"(,"simulator":{"tokens":2})"), "sk-team");
  });
  ASSERT_TRUE(wait_until(
      [&] { return series(metrics_text(gw.admin_port()), R"(sluice_queued_requests{backend="sim"})") == 1; }));
  holder->close();
  next.join();
  EXPECT_EQ(served.status, 200) << served.body;
  EXPECT_EQ(series(metrics_text(gw.admin_port()), R"(sluice_queued_requests{backend="sim"})"), 0);
}

// ---- shared state across replicas (a real redis-server) ----

TEST(LimitsRedis, TwoReplicasAdmitTheGlobalLimitNotTwiceIt) {
  RedisServer redis;
  TempDir dir;
  auto config = dir.write("sluice.yaml", replica_config(limits_config(key_line("team", "sk-team", "rpm: 40"), "",
                                                                      kFastSim, redis_section(redis))));
  RunningGateway a(config), b(config);
  ASSERT_NE(a.port, 0);
  ASSERT_NE(b.port, 0);
  ASSERT_TRUE(wait_until([&] { return redis_up(a.admin) && redis_up(b.admin); }, 20s));
  auto started = Clock::now();
  std::vector<HttpResponse> rs(100);
  std::vector<std::thread> threads;
  for (int i = 0; i < 100; ++i)
    threads.emplace_back([&, i] {
      rs[i] = post_json(i % 2 ? a.port : b.port, "/v1/chat/completions", chat(R"(,"simulator":{"tokens":2})"),
                        "sk-team");
    });
  for (auto& t : threads) t.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - started).count();
  int ok = count_status(rs, 200);
  EXPECT_EQ(ok + count_status(rs, 429), 100);
  EXPECT_GE(ok, 40);
  EXPECT_LE(ok, 40 + static_cast<int>(elapsed * 40 / 60));  // the global allowance, not 80
  // Both replicas refused some: the limit is one, wherever a request lands.
  EXPECT_GT(series(metrics_text(a.admin), R"(sluice_rate_limited_total{key="team",limit="rpm"})"), 0);
  EXPECT_GT(series(metrics_text(b.admin), R"(sluice_rate_limited_total{key="team",limit="rpm"})"), 0);
  // A reload leaves the store's health alone.
  EXPECT_EQ(HttpClient(a.admin).request("POST", "/admin/reload").status, 200);
  EXPECT_TRUE(redis_up(a.admin));
  a.child.signal(SIGTERM);
  b.child.signal(SIGTERM);
  EXPECT_EQ(a.child.wait_exit(), 0);
  EXPECT_EQ(b.child.wait_exit(), 0);
}

TEST(LimitsRedis, ConcurrencyAndTokensAreSettledAcrossReplicas) {
  RedisServer redis;
  TempDir dir;
  auto keys = key_line("team", "sk-team", "concurrency: 1") + key_line("tokens", "sk-tokens", "tpm: 300");
  auto config =
      dir.write("sluice.yaml", replica_config(limits_config(keys, "", kFastSim, redis_section(redis))));
  RunningGateway a(config), b(config);
  ASSERT_TRUE(wait_until([&] { return redis_up(a.admin) && redis_up(b.admin); }, 20s));
  // A stream on one replica holds the key's only slot everywhere.
  auto stream = open_stream(a.port, "sk-team", 2000);
  auto r = post_json(b.port, "/v1/chat/completions", chat(), "sk-team");
  EXPECT_EQ(r.status, 429);
  EXPECT_NE(r.body.find("concurrent"), std::string::npos) << r.body;
  stream->close();  // its lease is released when the first replica notices
  ASSERT_TRUE(wait_until([&] { return status_of(b.port, "sk-team") == 200; }));
  // A slot is released when its request has been finished off, just after the last byte went out (as nginx's
  // limit_conn does), so a client that fires its next request at once may find it still taken for a moment.
  // Reservations of ~106 tokens against 300 per minute: only settlement with the real (tiny) usage lets a
  // long run of requests through, alternating replicas (at most two reservations are ever unsettled).
  for (int i = 0; i < 10; ++i)
    ASSERT_EQ(status_of(i % 2 ? a.port : b.port, "sk-tokens", chat(R"(,"max_tokens":100,"simulator":{"tokens":3})")),
              200)
        << "request " << i;
}

TEST(LimitsRedis, AStalledRedisLeaksNoConcurrencySlot) {
  RedisServer redis;
  TestGateway gw(limits_config(key_line("team", "sk-team", "concurrency: 1"), "", kFastSim,
                               "store: redis\nredis: { url: \"" + redis.url() + "\", timeout: 200ms }\n"));
  ASSERT_TRUE(wait_until([&] { return redis_up(gw.admin_port()); }, 20s));
  // Another client keeps Redis busy for about two seconds with a script.
  Child busy({"/usr/bin/redis-cli", "-p", std::to_string(redis.port()), "EVAL",
              "local s = tonumber(redis.call('TIME')[1]) while tonumber(redis.call('TIME')[1]) < s + 2 do end "
              "return 1",
              "0"});
  ASSERT_TRUE(wait_until([&] {  // a PING that gets no answer in 300 ms: the script is running
    auto [code, out] =
        run_command({"/usr/bin/timeout", "0.3", "/usr/bin/redis-cli", "-p", std::to_string(redis.port()), "PING"});
    return code != 0;
  }));
  // Decided locally while Redis is stalled; the admission script sent meanwhile runs later, or never.
  EXPECT_EQ(status_of(gw.port(), "sk-team"), 200);
  EXPECT_EQ(busy.wait_exit(10s), 0);
  // Once Redis answers again, the key's only slot is free: whatever the late script took was released.
  ASSERT_TRUE(wait_until([&] { return status_of(gw.port(), "sk-team") == 200 && redis_up(gw.admin_port()); }, 20s));
  // A request settles in Redis just after its answer is sent: the count is read until that has happened.
  std::string out;
  EXPECT_TRUE(wait_until([&] {
    out = run_command({"/usr/bin/redis-cli", "-p", std::to_string(redis.port()), "ZCARD", "sluice:k:team:active"})
              .second;
    return out.substr(0, 2) == "0\n";
  }, 10s)) << out;
}

TEST(LimitsRedis, RedisOutageKeepsTheGatewayAnsweringUnderLocalLimits) {
  RedisServer redis;
  TestGateway gw(limits_config(key_line("team", "sk-team", "rpm: 5"), "", kFastSim, redis_section(redis)));
  ASSERT_TRUE(wait_until([&] { return redis_up(gw.admin_port()); }, 20s));
  EXPECT_EQ(status_of(gw.port(), "sk-team"), 200);
  redis.stop();
  // Every request is answered promptly (Redis never holds one past its timeout), under the local limits.
  auto started = Clock::now();
  int ok = 0, limited = 0;
  for (int i = 0; i < 10; ++i) {
    auto t0 = Clock::now();
    int st = status_of(gw.port(), "sk-team");
    EXPECT_LT(Clock::now() - t0, 5s);
    ok += st == 200;
    limited += st == 429;
  }
  double elapsed = std::chrono::duration<double>(Clock::now() - started).count();
  EXPECT_EQ(ok + limited, 10);
  EXPECT_GE(ok, 5);
  EXPECT_LE(ok, 5 + 1 + static_cast<int>(elapsed * 5 / 60));  // the local allowance (+1: the one before)
  auto m = metrics_text(gw.admin_port());
  EXPECT_EQ(series(m, "sluice_redis_up"), 0) << m;
  EXPECT_EQ(series(m, "sluice_redis_outages_total"), 1) << m;
  EXPECT_GT(series(m, R"(sluice_redis_errors_total{op="admit"})"), 0) << m;
  // Redis comes back: the gateway reconnects by itself.
  redis.start();
  ASSERT_TRUE(wait_until([&] { return redis_up(gw.admin_port()); }, 20s));
  EXPECT_EQ(series(metrics_text(gw.admin_port()), "sluice_redis_outages_total"), 1);
}

TEST(LimitsRedis, FailClosedRefusesWhileRedisIsDown) {
  RedisServer redis;
  TestGateway gw(
      limits_config(key_line("team", "sk-team", "rpm: 100"), "", kFastSim, redis_section(redis, ", fail_closed: true")));
  ASSERT_TRUE(wait_until([&] { return redis_up(gw.admin_port()); }, 20s));
  EXPECT_EQ(status_of(gw.port(), "sk-team"), 200);
  redis.stop();
  auto r = post_json(gw.port(), "/v1/chat/completions", chat(), "sk-team");
  EXPECT_EQ(r.status, 503);
  EXPECT_NE(r.body.find("limits_unavailable"), std::string::npos) << r.body;
  EXPECT_EQ(r.header("retry-after"), "1");
  redis.start();
  ASSERT_TRUE(wait_until([&] { return status_of(gw.port(), "sk-team") == 200; }, 20s));
}

// ---- hot reload ----

TEST(LimitsReload, SighupSwapsKeysAndLeavesStreamsInFlightAlone) {
  TempDir dir;
  auto path = dir.write("sluice.yaml", replica_config(limits_config(key_line("old", "sk-old", "rpm: 1000"))));
  RunningGateway gw(path);
  ASSERT_NE(gw.port, 0);
  EXPECT_EQ(status_of(gw.port, "sk-old"), 200);
  EXPECT_EQ(status_of(gw.port, "sk-new"), 401);
  auto stream = open_stream(gw.port, "sk-old", 40);  // 40 tokens at 20/s: about 2 s
  dir.write("sluice.yaml", replica_config(limits_config(key_line("new", "sk-new", "rpm: 1000"))));
  gw.child.signal(SIGHUP);
  ASSERT_TRUE(wait_until([&] { return status_of(gw.port, "sk-new") == 200; }));
  EXPECT_EQ(status_of(gw.port, "sk-old"), 401);
  // The stream admitted under the old key runs to its end.
  std::string rest;
  ASSERT_TRUE(wait_until([&] {
    rest += stream->read_some(200ms);
    return rest.find("data: [DONE]") != std::string::npos;
  }));
  EXPECT_EQ(rest.find("\"error\""), std::string::npos) << rest;
  gw.child.signal(SIGTERM);
  EXPECT_EQ(gw.child.wait_exit(), 0);
  EXPECT_NE(gw.child.err().find("config reloaded"), std::string::npos);
}

// A connection remembers the key its last request was let in with (not to hash it again); a reload that removes
// the key must still refuse it there, and the connection must not lend it to a different key.
TEST(LimitsReload, AKeepAliveConnectionCannotKeepUsingAKeyTheReloadRemoved) {
  TempDir dir;
  auto path = dir.write("sluice.yaml", replica_config(limits_config(key_line("old", "sk-old", "rpm: 1000"))));
  RunningGateway gw(path);
  ASSERT_NE(gw.port, 0);
  HttpClient conn(gw.port);
  ASSERT_TRUE(conn.connected());
  auto ask = [&](const std::string& key) {
    auto r = conn.request("POST", "/v1/chat/completions", chat(R"(,"simulator":{"tokens":2})"),
                          {{"Authorization", "Bearer " + key}});
    EXPECT_EQ(r.header("connection"), "") << "the connection must stay open";
    return r.status;
  };
  EXPECT_EQ(ask("sk-old"), 200);
  EXPECT_EQ(ask("sk-old"), 200);
  EXPECT_EQ(ask("sk-old-but-longer"), 401);
  EXPECT_EQ(ask("sk-ole"), 401);  // as long as the remembered key, one byte apart
  EXPECT_EQ(ask("sk-old"), 200);
  dir.write("sluice.yaml", replica_config(limits_config(key_line("new", "sk-new", "rpm: 1000"))));
  gw.child.signal(SIGHUP);
  ASSERT_TRUE(wait_until([&] { return status_of(gw.port, "sk-new") == 200; }));
  // The same connection, which last let sk-old in, now refuses it.
  EXPECT_EQ(ask("sk-old"), 401);
  EXPECT_EQ(ask("sk-new"), 200);
  EXPECT_EQ(ask("sk-old"), 401);
  EXPECT_EQ(ask("sk-new"), 200);
  gw.child.signal(SIGTERM);
  EXPECT_EQ(gw.child.wait_exit(), 0);
}

TEST(LimitsReload, InvalidConfigIsRejectedAndCountersSurviveAReload) {
  TempDir dir;
  auto yaml = replica_config(
      limits_config(key_line("team", "sk-team", "rpm: 2") + key_line("free", "sk-free", "rpm: 1000")));
  auto path = dir.write("sluice.yaml", yaml);
  RunningGateway gw(path);
  ASSERT_NE(gw.port, 0);
  EXPECT_EQ(status_of(gw.port, "sk-team"), 200);
  EXPECT_EQ(status_of(gw.port, "sk-team"), 200);
  auto ok = HttpClient(gw.admin).request("POST", "/admin/reload");
  EXPECT_EQ(ok.status, 200) << ok.body;
  // The key still exists, so its counters carried over: its allowance is spent.
  EXPECT_EQ(status_of(gw.port, "sk-team"), 429);
  dir.write("sluice.yaml", yaml + "bogus_section: 1\n");
  auto bad = HttpClient(gw.admin).request("POST", "/admin/reload");
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("bogus_section"), std::string::npos) << bad.body;
  EXPECT_EQ(status_of(gw.port, "sk-free"), 200);  // the running config is kept
  EXPECT_EQ(HttpClient(gw.admin).request("GET", "/admin/reload").status, 405);
  // A change only a restart can apply is reported, not silently ignored.
  auto changed = yaml;
  changed.replace(changed.find("dialect: simulator,"), 19, "dialect: simulator, max_inflight: 7,");
  dir.write("sluice.yaml", changed);
  EXPECT_EQ(HttpClient(gw.admin).request("POST", "/admin/reload").status, 200);
  gw.child.signal(SIGTERM);
  EXPECT_EQ(gw.child.wait_exit(), 0);
  auto err = gw.child.err();
  EXPECT_NE(err.find("config reload rejected"), std::string::npos) << err;
  EXPECT_NE(err.find("backend sim changed (takes effect at the next restart)"), std::string::npos) << err;
}

}  // namespace sluice::test
