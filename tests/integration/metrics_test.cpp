// The exported numbers, checked against traffic whose token counts and pacing the test controls.
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "harness.hpp"

namespace sluice::test {
namespace {

std::string metrics_of(std::uint16_t admin_port) {
  return HttpClient(admin_port).request("GET", "/metrics").body;
}

bool has(const std::string& scrape, const std::string& line) {
  return scrape.find(line) != std::string::npos;
}

const std::string kSim =
    "backends:\n  - { name: sim, dialect: simulator, simulator: { tokens_per_second: 5000, ttft: 1ms } }\n"
    "models:\n  - { name: demo, targets: [ { backend: sim } ] }\n";

TEST(Metrics, TokenCountersAreExactForStreamsAndWholeAnswers) {
  TestGateway gw(test_config_yaml(kSim));
  // "user" "one two three": 4 prompt words; 7 + 5 output tokens.
  ASSERT_EQ(
      post_json(
          gw.port(), "/v1/chat/completions",
          R"({"model":"demo","messages":[{"role":"user","content":"one two three"}],"simulator":{"tokens":7}})")
          .status,
      200);
  ASSERT_EQ(
      post_json(
          gw.port(), "/v1/chat/completions",
          R"({"model":"demo","stream":true,"messages":[{"role":"user","content":"one two three"}],"simulator":{"tokens":5}})")
          .status,
      200);
  auto m = metrics_of(gw.admin_port());
  EXPECT_TRUE(has(m, "sluice_tokens_total{backend=\"sim\",key=\"tester\",model=\"demo\",type=\"input\"} 8"))
      << m;
  EXPECT_TRUE(has(m, "sluice_tokens_total{backend=\"sim\",key=\"tester\",model=\"demo\",type=\"output\"} 12"))
      << m;
  EXPECT_TRUE(
      has(m,
          "sluice_requests_total{backend=\"sim\",code=\"200\",endpoint=\"chat/completions\",key=\"tester\","
          "model=\"demo\"} 2"));
  // The simulator reported usage: nothing estimated.
  EXPECT_TRUE(has(m, "sluice_estimated_tokens_total{backend=\"sim\",model=\"demo\"} 0")) << m;
}

TEST(Metrics, TimePerOutputTokenAndDecodeSpeedFollowThePacing) {
  // Four tokens 200 ms apart, then the usage chunk: TPOT ~0.2 s. The bounds below leave room for the first
  // token to be written up to 300 ms late on a loaded machine (or under a sanitizer).
  ScriptedUpstream paced([](UpstreamConn& c) {
    if (c.read_request().empty()) return;
    c.write_sse_header();
    for (int i = 0; i < 4; ++i) {
      if (i) std::this_thread::sleep_for(std::chrono::milliseconds(200));
      c.write_chunk("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"t\"}}]}\n\n");
    }
    c.write_chunk(
        "data: "
        "{\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":4,\"total_tokens\":6}}\n\n"
        "data: [DONE]\n\n");
    c.write("0\r\n\r\n");
  });
  TestGateway gw(test_config_yaml(
      "backends:\n  - { name: up, url: \"" + paced.url() +
      "\", health: { enabled: false } }\nmodels:\n  - { name: m, targets: [ { backend: up } ] }\n"));
  auto r = post_json(gw.port(), "/v1/chat/completions",
                     R"({"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]})");
  ASSERT_EQ(r.status, 200);
  auto m = metrics_of(gw.admin_port());
  const std::string labels = "backend=\"up\",model=\"m\"";
  EXPECT_TRUE(has(m, "sluice_time_per_output_token_seconds_count{" + labels + "} 1")) << m;
  EXPECT_TRUE(has(m, "sluice_time_per_output_token_seconds_bucket{" + labels + ",le=\"0.075\"} 0")) << m;
  EXPECT_TRUE(has(m, "sluice_output_tokens_per_second_bucket{" + labels + ",le=\"10\"} 1")) << m;
  EXPECT_TRUE(has(m, "sluice_output_tokens_per_second_bucket{" + labels + ",le=\"1\"} 0"))
      << m;  // 3 gaps of ~0.2 s: well over 1 token/s
  EXPECT_TRUE(has(m, "sluice_time_to_first_token_seconds_count{" + labels + "} 1"));
}

TEST(Metrics, OverheadIsMeasuredAndSent) {
  TestGateway gw(test_config_yaml(kSim));
  auto whole = post_json(gw.port(), "/v1/chat/completions",
                         R"({"model":"demo","messages":[{"role":"user","content":"x"}]})");
  auto streamed = post_json(gw.port(), "/v1/chat/completions",
                            R"({"model":"demo","stream":true,"messages":[{"role":"user","content":"x"}]})");
  auto refused = post_json(gw.port(), "/v1/chat/completions", "{}", "sk-wrong");
  for (const auto* r : {&whole, &streamed, &refused}) {
    auto v = r->header("x-sluice-overhead-ms");
    ASSERT_FALSE(v.empty());
    double ms = std::stod(v);
    EXPECT_GE(ms, 0.0);
    EXPECT_LT(ms, 5000.0);  // a sanity bound only; the figure itself belongs to the benchmark
  }
  auto m = metrics_of(gw.admin_port());
  EXPECT_TRUE(has(m, "sluice_overhead_seconds_count{endpoint=\"chat/completions\"} 3")) << m;
}

TEST(Metrics, LabelsStayBoundedAndProcessMetricsAreExported) {
  TestGateway gw(test_config_yaml(kSim));
  for (int i = 0; i < 3; ++i)
    post_json(
        gw.port(), "/v1/chat/completions",
        R"({"model":"invented-)" + std::to_string(i) + R"(","messages":[{"role":"user","content":"x"}]})");
  auto m = metrics_of(gw.admin_port());
  EXPECT_TRUE(has(m, "code=\"404\",endpoint=\"chat/completions\",key=\"tester\",model=\"other\"} 3")) << m;
  EXPECT_FALSE(has(m, "invented-"));
  EXPECT_FALSE(has(m, "req_"));  // no request ids as labels
  for (const char* name :
       {"process_cpu_seconds_total ", "process_resident_memory_bytes ", "process_open_fds ",
        "process_max_fds ", "process_start_time_seconds ", "process_virtual_memory_bytes "})
    EXPECT_TRUE(has(m, name)) << name;
  // Known label values start at zero, so dashboards and alerts see them before the first event.
  EXPECT_TRUE(has(m, "sluice_rate_limited_total{key=\"tester\",limit=\"rpm\"} 0"));
  EXPECT_TRUE(has(m, "sluice_cache_lookups_total{result=\"hit\"} 0"));
}

// ---- promtool and the deploy/ assets ----

std::string source(const std::string& rel) {
  return std::string(SLUICE_SOURCE_DIR) + "/" + rel;
}

TEST(Metrics, PromtoolAcceptsTheScrapeTheRulesAndTheConfig) {
  TestGateway gw(test_config_yaml(kSim));
  ASSERT_EQ(post_json(gw.port(), "/v1/chat/completions",
                      R"({"model":"demo","stream":true,"messages":[{"role":"user","content":"x"}]})")
                .status,
            200);
  TempDir dir;
  auto scrape = dir.write("scrape.txt", metrics_of(gw.admin_port()));
  auto [mcode, mout] = run_command({"/bin/sh", "-c", "promtool check metrics < " + scrape});
  EXPECT_EQ(mcode, 0) << mout;
  auto [rcode, rout] =
      run_command({"/usr/bin/promtool", "check", "rules", source("deploy/prometheus/alerts.yml")});
  EXPECT_EQ(rcode, 0) << rout;
  auto [ccode, cout] =
      run_command({"/usr/bin/promtool", "check", "config", source("deploy/prometheus/prometheus.yml")});
  EXPECT_EQ(ccode, 0) << cout;
  auto [tcode, tout] = run_command(
      {"/bin/sh", "-c", "cd " + source("deploy/prometheus") + " && promtool test rules alerts_test.yml"});
  EXPECT_EQ(tcode, 0) << tout;
}

TEST(Metrics, EveryMetricTheDashboardAndAlertsQueryIsExported) {
  // Two targets, so fallback series exist too; a key with a budget, a Redis store and a cache, so theirs do.
  RedisServer redis;
  TestGateway gw(test_config_yaml(
      "backends:\n  - { name: sim, dialect: simulator }\n  - { name: sim2, dialect: simulator }\n"
      "models:\n  - { name: demo, targets: [ { backend: sim }, { backend: sim2 } ], cache: { enabled: true } }\n",
      "  - { name: budgeted, key_sha256: \"" + std::string(64, 'b') + "\", limits: { budget: 1000 } }\n"
      "store: redis\nredis: { url: \"" + redis.url() + "\" }\n"));
  ASSERT_EQ(post_json(gw.port(), "/v1/chat/completions",
                      R"({"model":"demo","stream":true,"messages":[{"role":"user","content":"x"}]})")
                .status,
            200);
  auto scrape = metrics_of(gw.admin_port());
  std::set<std::string> exported;
  std::regex type_line(R"(# TYPE ([a-z_]+) )");
  for (std::sregex_iterator it(scrape.begin(), scrape.end(), type_line), end; it != end; ++it)
    exported.insert((*it)[1]);

  std::stringstream dashboard, alerts;
  dashboard << std::ifstream(source("deploy/grafana/sluice-dashboard.json")).rdbuf();
  alerts << std::ifstream(source("deploy/prometheus/alerts.yml")).rdbuf();
  rapidjson::Document d;
  const std::string dashboard_text = dashboard.str();
  d.Parse(dashboard_text.data(), dashboard_text.size());
  ASSERT_FALSE(d.HasParseError()) << "the dashboard is not valid JSON";
  ASSERT_TRUE(d.IsObject() && d.HasMember("panels"));

  std::regex metric(R"(\b((?:sluice|process)_[a-z_]+))");
  std::set<std::string> queried;
  for (const std::string& text : {dashboard.str(), alerts.str()})
    for (std::sregex_iterator it(text.begin(), text.end(), metric), end; it != end; ++it) {
      std::string name = (*it)[1];
      for (const char* suffix : {"_bucket", "_sum", "_count"})
        if (name.size() > std::strlen(suffix) &&
            name.compare(name.size() - std::strlen(suffix), std::string::npos, suffix) == 0 &&
            !exported.count(name))
          name.resize(name.size() - std::strlen(suffix));
      queried.insert(name);
    }
  EXPECT_GE(queried.size(), 15u);
  for (const auto& name : queried)
    EXPECT_TRUE(exported.count(name)) << name << " is queried but not exported";
}

}  // namespace
}  // namespace sluice::test
