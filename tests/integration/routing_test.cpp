// Model routing over several backends: failover before the first byte, balancing by outstanding
// requests, outlier ejection and recovery, health probes, dialect normalisation and exact usage.
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <thread>

#include "harness.hpp"

namespace sluice::test {
namespace {

const std::string kChat = R"({"model":"m","messages":[{"role":"user","content":"hi"}]})";
const std::string kStreamChat = R"({"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]})";
const std::string kCompletion =
    R"({"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}})";

std::string json_reply(int status, const std::string& body) {
  return "HTTP/1.1 " + std::to_string(status) +
         " X\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n\r\n" + body;
}

/// A backend that answers every request with `status` and `body`, counting them.
struct CountingBackend {
  std::atomic<int> hits{0};
  std::atomic<int> status;
  std::string body;
  ScriptedUpstream upstream;
  CountingBackend(int st, std::string b)
      : status(st), body(std::move(b)), upstream([this](UpstreamConn& c) {
          for (;;) {
            auto req = c.read_request();
            if (req.empty()) return;
            if (req.rfind("GET ", 0) == 0) {  // health probe
              c.write(json_reply(200, "{}"));
              continue;
            }
            ++hits;
            upstream.record(req);
            c.write(
                json_reply(status.load(), status.load() == 200 ? body : R"({"error":{"message":"busy"}})"));
          }
        }) {}
  std::string url() const { return upstream.url(); }
};

std::string backend_line(const std::string& name, const std::string& url, const std::string& extra = "") {
  return "  - { name: " + name + ", url: \"" + url + "\", health: { enabled: false }" + extra + " }\n";
}

std::string metrics_of(const TestGateway& gw) {
  return HttpClient(gw.admin_port()).request("GET", "/metrics").body;
}

TEST(Routing, FallbackOnRefusedConnection) {
  CountingBackend good(200, kCompletion);
  RefusedPort dead;
  TestGateway gw(test_config_yaml(
      "backends:\n" + backend_line("dead", "http://127.0.0.1:" + std::to_string(dead.port()) + "/v1") +
      backend_line("good", good.url()) +
      "models:\n  - { name: m, targets: [ { backend: dead }, { backend: good } ] }\n"));
  auto r = post_json(gw.port(), "/v1/chat/completions", kChat);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(good.hits.load(), 1);
  EXPECT_NE(metrics_of(gw).find("sluice_fallbacks_total{from=\"dead\",model=\"m\",to=\"good\"} 1"),
            std::string::npos)
      << metrics_of(gw);
}

TEST(Routing, FallbackOn503And429ButNotOn400) {
  CountingBackend busy(503, ""), limited(429, ""), good(200, kCompletion);
  TestGateway gw(test_config_yaml(
      "backends:\n" + backend_line("busy", busy.url()) + backend_line("limited", limited.url()) +
      backend_line("good", good.url()) +
      "models:\n  - { name: m, targets: [ { backend: busy }, { backend: limited }, { backend: good } ] }\n"));
  ASSERT_EQ(post_json(gw.port(), "/v1/chat/completions", kChat).status, 200);
  EXPECT_EQ(busy.hits.load(), 1);
  EXPECT_EQ(limited.hits.load(), 1);
  EXPECT_EQ(good.hits.load(), 1);
  // A client error is the client's: it is not retried elsewhere.
  busy.status = 400;
  auto r = post_json(gw.port(), "/v1/chat/completions", kChat);
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(limited.hits.load(), 1);
}

TEST(Routing, FallbackOnTimeoutBeforeTheFirstByte) {
  ScriptedUpstream silent([](UpstreamConn& c) {
    if (c.read_request().empty()) return;
    c.wait_closed(10s);
  });
  CountingBackend good(200, kCompletion);
  TestGateway gw(test_config_yaml(
      "backends:\n" +
      backend_line("silent", silent.url(), ", timeouts: { first_token: 200ms, total: 300ms }") +
      backend_line("good", good.url()) +
      "models:\n  - { name: m, targets: [ { backend: silent }, { backend: good } ] }\n"));
  auto r = post_json(gw.port(), "/v1/chat/completions", kChat);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(good.hits.load(), 1);
}

TEST(Routing, NoRetryOnceStreamingStarted) {
  ScriptedUpstream breaks([](UpstreamConn& c) {
    if (c.read_request().empty()) return;
    c.write_sse_header();
    c.write_chunk("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"half\"}}]}\n\n");
    std::this_thread::sleep_for(20ms);
    c.reset();
  });
  CountingBackend good(200, kCompletion);
  TestGateway gw(test_config_yaml(
      "backends:\n" + backend_line("breaks", breaks.url()) + backend_line("good", good.url()) +
      "models:\n  - { name: m, targets: [ { backend: breaks }, { backend: good } ] }\n"));
  auto r = post_json(gw.port(), "/v1/chat/completions", kStreamChat);
  ASSERT_EQ(r.status, 200);
  auto events = sse_data(r.body);
  ASSERT_EQ(events.size(), 3u) << r.body;
  EXPECT_NE(events[1].find("\"error\""), std::string::npos);
  EXPECT_EQ(good.hits.load(), 0);  // the client already had bytes: no second backend
}

TEST(Routing, AllTargetsFailingGivesTheLastError) {
  CountingBackend a(503, ""), b(503, "");
  TestGateway gw(test_config_yaml("backends:\n" + backend_line("a", a.url()) + backend_line("b", b.url()) +
                                  "models:\n  - { name: m, targets: [ { backend: a }, { backend: b } ] }\n"));
  auto r = post_json(gw.port(), "/v1/chat/completions", kChat);
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(a.hits.load() + b.hits.load(), 2);
}

// Backends that hold every request until released, so outstanding counts build up.
struct HoldingBackend {
  std::atomic<int> hits{0};
  std::atomic<bool>& release;
  ScriptedUpstream upstream;
  explicit HoldingBackend(std::atomic<bool>& rel)
      : release(rel), upstream([this](UpstreamConn& c) {
          for (;;) {
            auto req = c.read_request();
            if (req.empty()) return;
            ++hits;
            wait_until([&] { return release.load(); }, 20s);
            c.write(json_reply(200, kCompletion));
          }
        }) {}
};

void balance_and_count(unsigned weight_a, unsigned weight_b, int requests, int& hits_a, int& hits_b) {
  std::atomic<bool> release{false};
  HoldingBackend a(release), b(release);
  TestGateway gw(test_config_yaml(
      "backends:\n" + backend_line("a", a.upstream.url()) + backend_line("b", b.upstream.url()) +
      "models:\n  - { name: m, strategy: balance, targets: [ { backend: a, weight: " +
      std::to_string(weight_a) + " }, { backend: b, weight: " + std::to_string(weight_b) + " } ] }\n"));
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int i = 0; i < requests; ++i) {
    // One at a time into the gateway, so each choice sees the previous ones outstanding.
    ASSERT_TRUE(wait_until([&] { return a.hits.load() + b.hits.load() == i; }));
    clients.emplace_back([&] {
      if (post_json(gw.port(), "/v1/chat/completions", kChat).status == 200) ++ok;
    });
  }
  ASSERT_TRUE(wait_until([&] { return a.hits.load() + b.hits.load() == requests; }));
  hits_a = a.hits.load();
  hits_b = b.hits.load();
  release = true;
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), requests);
}

TEST(Routing, BalanceSpreadsByOutstandingRequests) {
  int a = 0, b = 0;
  balance_and_count(1, 1, 20, a, b);
  EXPECT_NEAR(a, 10, 1);
  EXPECT_NEAR(b, 10, 1);
}

TEST(Routing, BalanceHonoursWeights) {
  int a = 0, b = 0;
  balance_and_count(3, 1, 20, a, b);
  EXPECT_NEAR(a, 15, 1);
  EXPECT_NEAR(b, 5, 1);
}

TEST(Routing, MaxInflightSendsTheOverflowElsewhereOrRefuses) {
  std::atomic<bool> release{false};
  HoldingBackend small(release);
  CountingBackend overflow(200, kCompletion);
  TestGateway gw(
      // max_queue: 0, so a full backend refuses at once (queueing has its own tests in limits_test).
      test_config_yaml("backends:\n" + backend_line("small", small.upstream.url(), ", max_inflight: 1, max_queue: 0") +
                       backend_line("overflow", overflow.url(), ", max_inflight: 1") +
                       "models:\n  - { name: m, targets: [ { backend: small }, { backend: overflow } ] }\n"
                       "  - { name: solo, targets: [ { backend: small, model: m } ] }\n"));
  std::thread held([&] { post_json(gw.port(), "/v1/chat/completions", kChat); });
  ASSERT_TRUE(wait_until([&] { return small.hits.load() == 1; }));
  EXPECT_EQ(post_json(gw.port(), "/v1/chat/completions", kChat).status,
            200);  // small is full: overflow serves
  EXPECT_EQ(overflow.hits.load(), 1);
  auto r = post_json(gw.port(), "/v1/chat/completions",
                     R"({"model":"solo","messages":[{"role":"user","content":"x"}]})");
  EXPECT_EQ(r.status, 503) << r.body;  // solo's only backend is full
  EXPECT_EQ(r.header("retry-after"), "1");
  EXPECT_NE(r.body.find("backend_overloaded"), std::string::npos);
  release = true;
  held.join();
}

TEST(Routing, FailingBackendIsEjectedAndRecoversAfterItsCooldown) {
  CountingBackend flaky(503, kCompletion), steady(200, kCompletion);
  TestGateway gw(test_config_yaml(
      "backends:\n" +
      backend_line("flaky", flaky.url(), ", outlier: { consecutive_failures: 2, base_ejection: 400ms }") +
      backend_line("steady", steady.url()) +
      "models:\n  - { name: m, targets: [ { backend: flaky }, { backend: steady } ] }\n"));
  for (int i = 0; i < 2; ++i) ASSERT_EQ(post_json(gw.port(), "/v1/chat/completions", kChat).status, 200);
  EXPECT_EQ(flaky.hits.load(), 2);  // two failures in a row: ejected
  EXPECT_NE(metrics_of(gw).find("sluice_backend_up{backend=\"flaky\"} 0"), std::string::npos);
  for (int i = 0; i < 5; ++i) ASSERT_EQ(post_json(gw.port(), "/v1/chat/completions", kChat).status, 200);
  EXPECT_EQ(flaky.hits.load(), 2);  // ejected: not tried
  flaky.status = 200;               // the backend heals
  ASSERT_TRUE(wait_until([&] {
    post_json(gw.port(), "/v1/chat/completions", kChat);
    return flaky.hits.load() > 2;  // the half-open trial after the cooldown
  }));
  int before = flaky.hits.load();
  ASSERT_EQ(post_json(gw.port(), "/v1/chat/completions", kChat).status, 200);
  EXPECT_EQ(flaky.hits.load(), before + 1);  // back in first place
  EXPECT_NE(metrics_of(gw).find("sluice_backend_up{backend=\"flaky\"} 1"), std::string::npos);
}

TEST(Routing, HealthProbesTakeADownBackendOutAndReadyzFollows) {
  std::atomic<int> health_status{503};
  std::atomic<int> hits{0};
  ScriptedUpstream probed([&](UpstreamConn& c) {
    for (;;) {
      auto req = c.read_request();
      if (req.empty()) return;
      if (req.rfind("GET /health ", 0) == 0) {
        c.write(json_reply(health_status.load(), "{}"));
        continue;
      }
      ++hits;
      c.write(json_reply(200, kCompletion));
    }
  });
  TestGateway gw(test_config_yaml(
      "backends:\n  - { name: p, dialect: vllm, url: \"" + probed.url() +
      "\", health: { interval: 100ms } }\nmodels:\n  - { name: m, targets: [ { backend: p } ] }\n"));
  HttpClient admin(gw.admin_port());
  ASSERT_TRUE(
      wait_until([&] { return HttpClient(gw.admin_port()).request("GET", "/readyz").status == 503; }));
  EXPECT_NE(metrics_of(gw).find("sluice_backend_up{backend=\"p\"} 0"), std::string::npos);
  health_status = 200;
  ASSERT_TRUE(
      wait_until([&] { return HttpClient(gw.admin_port()).request("GET", "/readyz").status == 200; }));
  EXPECT_EQ(post_json(gw.port(), "/v1/chat/completions", kChat).status, 200);
  EXPECT_EQ(hits.load(), 1);
}

TEST(Routing, QubridTopLevelReplyBecomesAChatCompletion) {
  CountingBackend qubrid(
      200,
      R"({"content":"Hello from Qubrid","metrics":{"input_tokens":5,"output_tokens":3,"total_time":0.4,"tps":7.5},"model":"openai/gpt-oss-120b"})");
  TestGateway gw(test_config_yaml(
      "backends:\n  - { name: q, dialect: qubrid, url: \"" + qubrid.url() +
      "\", api_key: qk, health: { enabled: false } }\n"
      "models:\n  - { name: m, targets: [ { backend: q, model: openai/gpt-oss-120b } ] }\n"));
  auto r = post_json(gw.port(), "/v1/chat/completions", kChat);
  ASSERT_EQ(r.status, 200) << r.body;
  rapidjson::Document d;
  d.Parse(r.body.data(), r.body.size());
  ASSERT_TRUE(d.IsObject()) << r.body;
  EXPECT_STREQ(d["object"].GetString(), "chat.completion");
  EXPECT_STREQ(d["choices"][0]["message"]["content"].GetString(), "Hello from Qubrid");
  EXPECT_STREQ(d["choices"][0]["message"]["role"].GetString(), "assistant");
  EXPECT_EQ(d["usage"]["prompt_tokens"].GetInt(), 5);
  EXPECT_EQ(d["usage"]["completion_tokens"].GetInt(), 3);
  // Qubrid gets an explicit stream:false and its own model name.
  auto sent = body_of(qubrid.upstream.requests().at(0));
  EXPECT_NE(sent.find("\"stream\":false"), std::string::npos) << sent;
  EXPECT_NE(sent.find("\"model\":\"openai/gpt-oss-120b\""), std::string::npos) << sent;
}

TEST(Routing, StreamWithoutUsageIsCountedAndMarkedEstimated) {
  ScriptedUpstream no_usage([](UpstreamConn& c) {
    if (c.read_request().empty()) return;
    c.write_sse_header();
    for (const char* t : {"a", "b", "c", "d"})
      c.write_chunk(std::string("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"") + t +
                    "\"}}]}\n\n");
    c.write_chunk("data: [DONE]\n\n");
    c.write("0\r\n\r\n");
  });
  TestGateway gw(test_config_yaml("backends:\n" + backend_line("n", no_usage.url()) +
                                  "models:\n  - { name: m, targets: [ { backend: n } ] }\n"));
  ASSERT_EQ(post_json(gw.port(), "/v1/chat/completions", kStreamChat).status, 200);
  auto m = metrics_of(gw);
  EXPECT_NE(m.find("sluice_tokens_total{backend=\"n\",key=\"tester\",model=\"m\",type=\"output\"} 4"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("sluice_estimated_tokens_total{backend=\"n\",model=\"m\"} 4"), std::string::npos) << m;
}

TEST(Routing, DisconnectedStreamIsStillCharged) {
  TestGateway gw(test_config_yaml(
      "backends:\n  - { name: sim, dialect: simulator, simulator: { tokens_per_second: 50, ttft: 1ms } }\n"
      "models:\n  - { name: m, targets: [ { backend: sim } ] }\n"));
  HttpClient c(gw.port());
  std::string body =
      R"({"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}],"simulator":{"tokens":100}})";
  ASSERT_TRUE(c.send_raw(raw_post("/v1/chat/completions", body)));
  ASSERT_EQ(c.read_head().status, 200);
  std::string got;
  ASSERT_TRUE(wait_until([&] {
    got += c.read_some(100ms);
    return sse_data(got).size() >= 3;
  }));
  c.close();
  // The request is accounted once the gateway has noticed the client left.
  ASSERT_TRUE(wait_until([&] {
    return metrics_of(gw).find("sluice_client_disconnects_total{phase=\"streaming\"} 1") != std::string::npos;
  }));
  auto m = metrics_of(gw);
  auto p = m.find("sluice_tokens_total{backend=\"sim\",key=\"tester\",model=\"m\",type=\"output\"} ");
  ASSERT_NE(p, std::string::npos) << m;
  int charged = std::stoi(m.substr(m.find('}', p) + 2));
  EXPECT_GE(charged, 3);    // at least what the client saw
  EXPECT_LT(charged, 100);  // not the full answer: generation stopped when the client left
}

TEST(Routing, ModelDefaultsAndMaxTokensCapReachTheBackend) {
  CountingBackend up(200, kCompletion);
  TestGateway gw(
      test_config_yaml("backends:\n" + backend_line("up", up.url()) +
                       "models:\n  - { name: m, defaults: { reasoning_effort: low, temperature: 0.2 }, "
                       "max_tokens_cap: 64, targets: [ { backend: up, model: gpt-oss } ] }\n"));
  ASSERT_EQ(
      post_json(
          gw.port(), "/v1/chat/completions",
          R"({"model":"m","temperature":0.9,"max_tokens":5000,"messages":[{"role":"user","content":"x"}]})")
          .status,
      200);
  rapidjson::Document sent;
  auto body = body_of(up.upstream.requests().at(0));
  sent.Parse(body.data(), body.size());
  ASSERT_TRUE(sent.IsObject()) << body;
  EXPECT_STREQ(sent["model"].GetString(), "gpt-oss");
  EXPECT_STREQ(sent["reasoning_effort"].GetString(), "low");
  EXPECT_DOUBLE_EQ(sent["temperature"].GetDouble(), 0.9);  // the client's own value wins
  EXPECT_EQ(sent["max_tokens"].GetInt(), 64);
}

}  // namespace
}  // namespace sluice::test
