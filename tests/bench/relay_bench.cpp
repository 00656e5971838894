// Benchmark: what Sluice adds on the request path. The same load goes straight to the simulator and
// through the gateway; the table shows throughput and latency percentiles of each, and the SSE parser
// alone. Prints a table; asserts nothing (tests do that).
#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <thread>
#include <variant>
#include <vector>

#include "../integration/harness.hpp"
#include "openai/dialect.hpp"
#include "openai/request.hpp"
#include "openai/sse_parser.hpp"
#include "policy/limiter.hpp"
#include "simulator/simulator.hpp"

using namespace sluice;
using namespace sluice::test;
using Clock = std::chrono::steady_clock;

namespace {

struct Result {
  std::size_t ok = 0, failed = 0;
  double seconds = 0;
  std::vector<double> latencies_ms;
  double pct(double p) {
    if (latencies_ms.empty()) return 0;
    std::sort(latencies_ms.begin(), latencies_ms.end());
    return latencies_ms[std::min(latencies_ms.size() - 1, static_cast<std::size_t>(p * latencies_ms.size()))];
  }
};

// `clients` keep-alive connections, each sending `per_client` requests back to back.
Result load(std::uint16_t port, const std::string& key, const std::string& body, int clients,
            int per_client) {
  Result total;
  std::vector<Result> parts(clients);
  std::vector<std::thread> threads;
  auto start = Clock::now();
  for (int c = 0; c < clients; ++c)
    threads.emplace_back([&, c] {
      HttpClient client(port);
      std::map<std::string, std::string> h;
      if (!key.empty()) h["Authorization"] = "Bearer " + key;
      for (int i = 0; i < per_client; ++i) {
        auto t0 = Clock::now();
        auto r = client.request("POST", "/v1/chat/completions", body, h);
        if (r.status == 200) {
          ++parts[c].ok;
          parts[c].latencies_ms.push_back(
              std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
        } else {
          ++parts[c].failed;
          client = HttpClient(port);
        }
      }
    });
  for (auto& t : threads) t.join();
  total.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  for (auto& p : parts) {
    total.ok += p.ok;
    total.failed += p.failed;
    total.latencies_ms.insert(total.latencies_ms.end(), p.latencies_ms.begin(), p.latencies_ms.end());
  }
  return total;
}

void row(const char* name, Result r) {
  std::printf("| %-34s | %6zu | %4zu | %8.0f | %7.3f | %7.3f | %7.3f |\n", name, r.ok, r.failed,
              static_cast<double>(r.ok) / r.seconds, r.pct(0.50), r.pct(0.90), r.pct(0.99));
}

void parser_row() {
  // A realistic chunk stream: ~200-byte events, fed in 16 KiB reads.
  std::string ev =
      "data: "
      "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":"
      "[{\"index\":0,\"delta\":{\"content\":\" token\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n";
  std::string stream;
  while (stream.size() < (64u << 20)) stream += ev;
  openai::SseParser parser;
  std::vector<openai::SseEventView> events;  // the relay's form: views, no copy
  std::size_t count = 0, checked = 0, generated = 0;
  double check_s = 0;
  auto t0 = Clock::now();
  for (std::size_t off = 0; off < stream.size(); off += 16384) {
    events.clear();
    parser.feed(std::string_view(stream).substr(off, 16384), events);
    count += events.size();
  }
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("\nSSE parser: %zu events, %.0f MiB in %.3f s = %.0f MiB/s, %.2f M events/s\n", count,
              static_cast<double>(stream.size()) / (1 << 20), s,
              static_cast<double>(stream.size()) / (1 << 20) / s, static_cast<double>(count) / s / 1e6);
  // The relay's check of each event (inspect_stream_chunk: validation and accounting in one pass), alone.
  openai::SseParser again;
  for (std::size_t off = 0; off < stream.size(); off += 16384) {
    events.clear();
    again.feed(std::string_view(stream).substr(off, 16384), events);
    auto t1 = Clock::now();
    for (const auto& e : events) {
      auto info = openai::inspect_stream_chunk(e.data);
      checked += info.has_value();
      generated += info && info->generated;
    }
    check_s += std::chrono::duration<double>(Clock::now() - t1).count();
  }
  std::printf("Chunk check: %zu of %zu events valid (%zu with text) in %.3f s = %.0f ns per event, %.0f MiB/s\n",
              checked, count, generated, check_s, check_s * 1e9 / static_cast<double>(count),
              static_cast<double>(stream.size()) / (1 << 20) / check_s);
}

// The request's document alone (inspect_request: bytes checked, parsed in place, members found), by prompt size:
// the benchmark's own body first, then prompts of 1 KiB to 256 KiB.
void request_row() {
  std::printf("Request document (inspect_request):");
  const std::string words = "The quick brown fox jumps over the lazy dog; the gateway reads every prompt. ";
  for (const std::size_t size : {std::size_t{27}, std::size_t{1} << 10, std::size_t{4} << 10, std::size_t{32} << 10,
                                 std::size_t{256} << 10}) {
    std::string prompt;
    while (prompt.size() < size) prompt += words;
    prompt.resize(size);
    const std::string body = R"({"model":"bench","messages":[{"role":"system","content":"You are helpful."},)"
                             R"({"role":"user","content":")" + prompt + R"("}],"max_tokens":16})";
    const std::size_t n = std::max<std::size_t>(200, (std::size_t{256} << 20) / body.size());
    std::size_t ok = 0;
    auto t0 = Clock::now();
    for (std::size_t i = 0; i < n; ++i)
      ok += std::holds_alternative<openai::ClientRequest>(openai::inspect_request(openai::Endpoint::chat_completions, body));
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    std::printf("%s %zu-byte body %.2f us (%.0f MiB/s)%s", size == 27 ? "" : ",", body.size(), s / n * 1e6,
                static_cast<double>(body.size()) * n / (1 << 20) / s, ok == n ? "" : " REFUSED");
  }
  std::printf("\n");
}

// The in-memory limiter alone: one admission and its settlement, for a key with every limit set.
void limiter_row() {
  policy::LocalLimiter limiter;
  policy::Demand d;
  d.key = "bench";
  d.key_limits = {1'000'000'000, 1'000'000'000'000, 1'000'000, 1ull << 50, std::chrono::milliseconds(86'400'000)};
  d.model = "m";
  d.model_limits = {1'000'000'000, 1'000'000'000'000, 1'000'000};
  d.tokens = 1100;
  const int n = 2'000'000;
  auto now = policy::wall_now();
  auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    auto a = limiter.admit(d, now + i / 1000);
    limiter.settle(a.reservation, 40, now + i / 1000);
  }
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("In-memory limiter: %d admit+settle pairs (7 limits each) in %.3f s = %.0f ns per request\n", n, s,
              s / n * 1e9);
}

std::string bench_config(std::uint16_t sim_port, const std::string& key_extra, const std::string& extra = "",
                         const std::string& model_extra = "") {
  return "server: { listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0, workers: 1 }\n"
         "log: { level: warn, format: text, access_log: false }\n"
         "backends:\n  - { name: sim, url: \"http://127.0.0.1:" +
         std::to_string(sim_port) +
         "/v1\" }\n"
         "models:\n  - { name: m, targets: [ { backend: sim } ]" + model_extra + " }\n"
         "keys:\n  - { name: bench, key_sha256: \"KEYDIGEST\"" +
         key_extra + " }\n" + extra;
}

// Limits high enough never to refuse: what is measured is the cost of deciding and settling.
const char* kGenerousLimits =
    ", limits: { rpm: 100000000, tpm: 1000000000, concurrency: 100000, budget: 1000000000000 }";

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]) == "--micro") {  // the in-process figures alone, no servers
    parser_row();
    request_row();
    limiter_row();
    return 0;
  }
  int clients = argc > 1 ? std::atoi(argv[1]) : 16;
  int per_client = argc > 2 ? std::atoi(argv[2]) : 200;

  // The simulator on its own thread, decoding "instantly", so what is measured is HTTP and relay work.
  boost::asio::io_context sim_ctx{1};
  simulator::SimulatorServer sim(sim_ctx, SimulatorConfig{1e6, std::chrono::milliseconds(0)});
  auto sim_port = sim.listen("127.0.0.1", 0);
  std::thread sim_thread([&] { sim_ctx.run(); });

  TestGateway gw(bench_config(sim_port, ""));
  TestGateway limited(bench_config(sim_port, kGenerousLimits));
  TestGateway cached(bench_config(sim_port, "", "", ", cache: { enabled: true }"));
  std::unique_ptr<RedisServer> redis;
  std::unique_ptr<TestGateway> shared;
  try {
    redis = std::make_unique<RedisServer>();
    shared = std::make_unique<TestGateway>(
        bench_config(sim_port, kGenerousLimits, "store: redis\nredis: { url: \"" + redis->url() + "\" }\n"));
    wait_until([&] {
      auto m = HttpClient(shared->admin_port()).request("GET", "/metrics").body;
      return m.find("\nsluice_redis_up 1") != std::string::npos;
    });
  } catch (const std::exception& e) {
    std::printf("(no redis-server: %s; the Redis row is left out)\n", e.what());
  }

  const std::string plain =
      R"({"model":"m","messages":[{"role":"user","content":"hi"}],"simulator":{"tokens":16}})";
  const std::string stream =
      R"({"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}],"simulator":{"tokens":64}})";

  std::printf(
      "Sluice relay benchmark: %d keep-alive clients x %d requests, gateway with 1 worker, %u cores\n\n",
      clients, per_client, std::thread::hardware_concurrency());
  std::printf("| %-34s | %6s | %4s | %8s | %7s | %7s | %7s |\n", "scenario", "ok", "fail", "req/s", "p50 ms",
              "p90 ms", "p99 ms");
  std::printf("|%s|%s|%s|%s|%s|%s|%s|\n", std::string(36, '-').c_str(), std::string(8, '-').c_str(),
              std::string(6, '-').c_str(), std::string(10, '-').c_str(), std::string(9, '-').c_str(),
              std::string(9, '-').c_str(), std::string(9, '-').c_str());
  load(gw.port(), "sk-test", plain, clients, 20);  // warm-up: pools, allocator
  row("direct: JSON, 16 tokens", load(sim_port, "", plain, clients, per_client));
  row("via sluice: JSON, 16 tokens", load(gw.port(), "sk-test", plain, clients, per_client));
  load(limited.port(), "sk-test", plain, clients, 20);
  row("+ key limits (memory)", load(limited.port(), "sk-test", plain, clients, per_client));
  if (shared) {
    load(shared->port(), "sk-test", plain, clients, 20);
    row("+ key limits (redis)", load(shared->port(), "sk-test", plain, clients, per_client));
  }
  // Every request after the first is the same deterministic question: answered from the cache.
  const std::string repeat =
      R"({"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}],"simulator":{"tokens":16}})";
  load(cached.port(), "sk-test", repeat, clients, 20);
  row("via sluice: JSON, cache hit", load(cached.port(), "sk-test", repeat, clients, per_client));
  const std::string repeat_stream =
      R"({"model":"m","temperature":0,"stream":true,"messages":[{"role":"user","content":"hi"}],"simulator":{"tokens":64}})";
  load(cached.port(), "sk-test", repeat_stream, clients, 20);
  row("direct: SSE, 64 tokens", load(sim_port, "", stream, clients, per_client / 2));
  row("via sluice: SSE, 64 tokens", load(gw.port(), "sk-test", stream, clients, per_client / 2));
  row("via sluice: SSE, cache hit", load(cached.port(), "sk-test", repeat_stream, clients, per_client / 2));
  parser_row();
  request_row();
  limiter_row();

  sim_ctx.stop();
  sim_thread.join();
  return 0;
}
