// Soak: the real sluice binary under mixed load for a bounded time (SOAK_SECONDS, default 180) — streams,
// whole answers, cache hits, a rate-limited key, clients that leave mid-stream, a backend that fails in every
// way the simulator can — then checks that nothing was lost or leaked:
//   every request the clients sent is counted once, under the status they received, in sluice_requests_total;
//   every stream a client read to its end ends with [DONE];
//   file descriptors and resident memory after the run are where they were after warm-up;
//   no stream, in-flight request or client connection is left open.
// Prints a table and exits 1 when a check fails. `make soak` (long form), `make soak SOAK_SECONDS=30` in CI.
#include <dirent.h>

#include <csignal>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <regex>
#include <thread>
#include <vector>

#include "../integration/harness.hpp"
#include "policy/keyring.hpp"

using namespace sluice;
using namespace sluice::test;
using Clock = std::chrono::steady_clock;

namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

long fds_of(pid_t pid) {
  long n = 0;
  std::string path = "/proc/" + std::to_string(pid) + "/fd";
  if (DIR* d = opendir(path.c_str())) {
    while (auto* e = readdir(d))
      if (e->d_name[0] != '.') ++n;
    closedir(d);
  }
  return n;
}

long rss_kib_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  return -1;
}

std::string scrape(std::uint16_t admin) {
  return HttpClient(admin).request("GET", "/metrics").body;
}

double gauge(const std::string& text, const std::string& series) {
  auto at = text.find("\n" + series + " ");
  return at == std::string::npos ? -1 : std::stod(text.substr(at + series.size() + 2));
}

// sluice_requests_total summed by status code.
std::map<int, long> requests_by_code(const std::string& text) {
  std::map<int, long> out;
  static const std::regex line(R"re(\nsluice_requests_total\{[^}]*code="(\d+)"[^}]*\} ([0-9.e+]+))re");
  for (std::sregex_iterator it(text.begin(), text.end(), line), end; it != end; ++it)
    out[std::stoi((*it)[1])] += static_cast<long>(std::stod((*it)[2]));
  return out;
}

struct Tally {
  std::mutex mutex;
  std::map<int, long> by_code;  // what clients received (0: no answer at all)
  std::map<std::string, long> by_kind;
  long streams_read = 0, streams_broken = 0, left_mid_stream = 0;
  void add(const std::string& kind, int code) {
    std::lock_guard lock(mutex);
    ++by_code[code];
    ++by_kind[kind];
  }
};

std::string chat(const std::string& model, bool stream, const std::string& text, const std::string& extra = "") {
  return R"({"model":")" + model + R"(","messages":[{"role":"user","content":")" + text + R"("}],"stream":)" +
         (stream ? "true" : "false") + extra + "}";
}

// One client: requests back to back until `stop`, each on a fresh connection, its kind drawn at random.
void client(std::uint16_t port, unsigned seed, const std::atomic<bool>& stop, Tally& tally) {
  std::mt19937 rng(seed);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  while (!stop.load()) {
    int r = pick(100);
    std::string tokens = std::to_string(1 + pick(40));
    if (r < 28) {
      auto res = post_json(port, "/v1/chat/completions",
                           chat("demo", false, "whole " + tokens, R"(,"simulator":{"tokens":)" + tokens + "}"),
                           "sk-soak");
      tally.add("whole", res.status);
    } else if (r < 52) {
      auto res = post_json(port, "/v1/chat/completions",
                           chat("demo", true, "stream " + tokens, R"(,"simulator":{"tokens":)" + tokens + "}"),
                           "sk-soak");
      tally.add("stream", res.status);
      auto events = sse_data(res.body);
      std::lock_guard lock(tally.mutex);
      ++tally.streams_read;
      if (res.status == 200 && (events.empty() || events.back() != "[DONE]")) ++tally.streams_broken;
    } else if (r < 66) {  // the same deterministic question: a cache hit after the first
      auto res = post_json(port, "/v1/chat/completions",
                           chat("cached", pick(2) == 0, "what is the answer", R"(,"temperature":0)"), "sk-soak");
      tally.add("cached", res.status);
    } else if (r < 74) {
      auto res = post_json(port, "/v1/chat/completions", chat("demo", false, "limited"), "sk-limited");
      tally.add("limited", res.status);
    } else if (r < 84) {  // reads the head and the first bytes of a long stream, then leaves
      HttpClient c(port);
      c.send_raw(raw_post("/v1/chat/completions",
                          chat("demo", true, "leaving", R"(,"simulator":{"tokens":400,"tokens_per_second":200})"),
                          "sk-soak"));
      auto head = c.read_head();
      if (head.status == 200) c.read_some(std::chrono::seconds(10));
      c.close();
      tally.add("leaves", head.status);
      std::lock_guard lock(tally.mutex);
      ++tally.left_mid_stream;
    } else {  // a backend that fails: 503, reset mid-stream, a chunk that is not JSON, a stall
      static const char* faults[] = {R"("fault":"status","status":503)", R"("fault":"reset","fault_after":3)",
                                     R"("fault":"malformed","fault_after":2)", R"("fault":"stall","fault_after":2)"};
      bool stream = pick(3) != 0;
      auto res = post_json(port, "/v1/chat/completions",
                           chat("flaky", stream, "flaky", std::string(R"(,"simulator":{"tokens":8,)") + faults[pick(4)] + "}"),
                           "sk-soak");
      tally.add("flaky", res.status);
      if (stream && res.status == 200) {
        auto events = sse_data(res.body);
        std::lock_guard lock(tally.mutex);
        ++tally.streams_read;
        if (events.empty() || events.back() != "[DONE]") ++tally.streams_broken;
      }
    }
  }
}

// Runs the clients for `seconds`, sampling the gateway's RSS once a second (and draining its log pipe).
void run_load(RunningGateway& gw, int clients, int seconds, unsigned seed, Tally& tally, long& peak_rss) {
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < clients; ++i)
    threads.emplace_back(client, gw.port, seed + static_cast<unsigned>(i), std::cref(stop), std::ref(tally));
  auto end = Clock::now() + std::chrono::seconds(seconds);
  while (Clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    gw.child.err();  // keep its stderr pipe from filling
    peak_rss = std::max(peak_rss, rss_kib_of(gw.child.pid()));
  }
  stop = true;
  for (auto& t : threads) t.join();
}

// Waits until no client connection, stream or request is left in the gateway.
bool quiet(RunningGateway& gw) {
  return wait_until(
      [&] {
        gw.child.err();
        auto m = scrape(gw.admin);
        return gauge(m, "sluice_client_connections") == 0 && gauge(m, "sluice_active_streams") == 0 &&
               m.find("sluice_inflight_requests{") != std::string::npos &&
               !std::regex_search(m, std::regex(R"(\nsluice_inflight_requests\{[^}]*\} [1-9])"));
      },
      std::chrono::seconds(90));
}

}  // namespace

int main() {
  const int seconds = std::max(10, env_int("SOAK_SECONDS", 180));
  const int clients = std::max(1, env_int("SOAK_CLIENTS", 16));
  const int warmup = std::max(5, seconds / 5);

  TempDir dir;
  auto config = dir.write(
      "soak.yaml",
      "server: { listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0, workers: 2, max_connections: 4096 }\n"
      "log: { level: info, format: text, access_log: false }\n"
      "cache: { max_bytes: 16MiB }\n"
      "backends:\n"
      "  - { name: sim, dialect: simulator, simulator: { tokens_per_second: 2000, ttft: 2ms },\n"
      "      max_idle_connections: 2 }\n"
      "  - { name: flaky, dialect: simulator, simulator: { tokens_per_second: 2000, ttft: 2ms },\n"
      "      max_idle_connections: 2,\n"
      "      outlier: { consecutive_failures: 0 }, timeouts: { first_token: 2s, idle: 300ms, total: 10s } }\n"
      "models:\n"
      "  - { name: demo, targets: [ { backend: sim } ] }\n"
      "  - { name: cached, targets: [ { backend: sim } ], cache: { enabled: true, ttl: 1h } }\n"
      "  - { name: flaky, targets: [ { backend: flaky } ] }\n"
      "keys:\n"
      "  - { name: soak, key_sha256: \"" +
          policy::sha256_hex("sk-soak") +
          "\" }\n"
          "  - { name: limited, key_sha256: \"" +
          policy::sha256_hex("sk-limited") + "\", limits: { rpm: 120 } }\n");

  RunningGateway gw(config);
  if (gw.port == 0) {
    std::fprintf(stderr, "soak: the gateway did not start:\n%s\n", gw.child.err().c_str());
    return 1;
  }
  std::printf("soak: sluice pid %d, %d clients, %d s warm-up then %d s\n", static_cast<int>(gw.child.pid()), clients,
              warmup, seconds - warmup);

  Tally tally;
  long peak_warm = 0, peak_main = 0;
  run_load(gw, clients, warmup, 1, tally, peak_warm);
  bool quiet_after_warmup = quiet(gw);
  const long fds_base = fds_of(gw.child.pid()), rss_base = rss_kib_of(gw.child.pid());
  run_load(gw, clients, seconds - warmup, 1000, tally, peak_main);
  bool quiet_at_end = quiet(gw);
  const long fds_end = fds_of(gw.child.pid()), rss_end = rss_kib_of(gw.child.pid());

  // Each request is counted once the gateway has finished with it: wait for the counters to settle.
  long sent = 0;
  for (const auto& [code, n] : tally.by_code) sent += n;
  std::map<int, long> counted;
  wait_until(
      [&] {
        counted = requests_by_code(scrape(gw.admin));
        long total = 0;
        for (const auto& [code, n] : counted) total += n;
        return total >= sent;
      },
      std::chrono::seconds(30));

  std::printf("\n%-22s %12s %12s\n", "status", "clients saw", "sluice counted");
  bool counts_match = true;
  std::map<int, bool> codes;
  for (const auto& [c, n] : tally.by_code) codes[c] = true;
  for (const auto& [c, n] : counted) codes[c] = true;
  for (const auto& [code, _] : codes) {
    long a = tally.by_code.count(code) ? tally.by_code[code] : 0;
    long b = counted.count(code) ? counted[code] : 0;
    std::printf("%-22d %12ld %12ld%s\n", code, a, b, a == b ? "" : "   MISMATCH");
    counts_match = counts_match && a == b && code != 0;
  }
  std::printf("\n%-22s %12s\n", "kind", "requests");
  for (const auto& [kind, n] : tally.by_kind) std::printf("%-22s %12ld\n", kind.c_str(), n);

  const long rss_allowed = rss_base + std::max(8L * 1024, rss_base / 10);
  // Idle pooled upstream connections may differ from the baseline: at most 2 per backend and worker, each with
  // two ends here (the simulator runs inside the gateway's process).
  const long fds_allowed = fds_base + 2 * 2 * 2 * 2;
  std::printf("\n%-36s %10s %10s %10s\n", "check", "after warm", "at end", "limit");
  std::printf("%-36s %10ld %10ld %10ld\n", "open file descriptors", fds_base, fds_end, fds_allowed);
  std::printf("%-36s %10ld %10ld %10ld\n", "resident memory (KiB)", rss_base, rss_end, rss_allowed);
  std::printf("%-36s %10ld %10ld\n", "peak resident memory (KiB)", peak_warm, peak_main);
  std::printf("%-36s %10ld\n", "streams read to the end", tally.streams_read);
  std::printf("%-36s %10ld\n", "  of which without [DONE]", tally.streams_broken);
  std::printf("%-36s %10ld\n", "clients that left mid-stream", tally.left_mid_stream);

  bool ok = true;
  auto check = [&](bool cond, const char* what) {
    std::printf("%-60s %s\n", what, cond ? "ok" : "FAILED");
    ok = ok && cond;
  };
  std::printf("\n");
  check(sent > 0, "requests were sent");
  check(counts_match, "every request counted once, under the status its client saw");
  check(tally.streams_broken == 0, "every stream read to its end ended with [DONE]");
  check(quiet_after_warmup && quiet_at_end, "no connection, stream or request left open");
  check(fds_end <= fds_allowed, "file descriptors back to the warm-up baseline");
  check(rss_end <= rss_allowed, "resident memory flat after warm-up");
  gw.child.signal(SIGTERM);
  check(gw.child.wait_exit(std::chrono::seconds(40)) == 0, "the gateway drained and exited cleanly on SIGTERM");
  return ok ? 0 : 1;
}
