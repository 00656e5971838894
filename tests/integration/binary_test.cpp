// The real `sluice` binary: CLI, start-up failures, the shipped default config, and SIGTERM drain.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/resource.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "harness.hpp"

namespace sluice::test {
namespace {

const std::string kBinary = sluice_binary();

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (auto p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size()))
    s.replace(p, from.size(), to);
  return s;
}

// The shipped config with its fixed ports swapped for ephemeral ones.
std::string shipped_config_on_free_ports(const TempDir& dir) {
  auto yaml = read_file(std::string(SLUICE_SOURCE_DIR) + "/config/sluice.yaml");
  yaml = replace_all(yaml, "127.0.0.1:8080", "127.0.0.1:0");
  yaml = replace_all(yaml, "127.0.0.1:9464", "127.0.0.1:0");
  return dir.write("sluice.yaml", yaml);
}

TEST(Binary, VersionAndHelp) {
  auto [code, out] = run_command({kBinary, "--version"});
  EXPECT_EQ(code, 0);
  EXPECT_NE(out.find("sluice 0."), std::string::npos) << out;
  auto [hcode, hout] = run_command({kBinary, "--help"});
  EXPECT_EQ(hcode, 0);
  for (const char* sub : {"serve", "check-config", "keys", "simulate"})
    EXPECT_NE(hout.find(sub), std::string::npos);
}

TEST(Binary, CheckConfigAcceptsTheShippedConfigAndReportsTheMissingQubridKey) {
  auto [code, out] = run_command(
      {kBinary, "check-config", "--config", std::string(SLUICE_SOURCE_DIR) + "/config/sluice.yaml"});
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("ok"), std::string::npos) << out;
}

TEST(Binary, EveryShippedExampleConfigIsValid) {
  int checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(SLUICE_SOURCE_DIR) + "/config")) {
    if (entry.path().extension() != ".yaml") continue;
    auto [code, out] = run_command({kBinary, "check-config", "--config", entry.path().string()});
    EXPECT_EQ(code, 0) << entry.path() << ": " << out;
    ++checked;
  }
  EXPECT_GE(checked, 4);
}

TEST(Binary, TheReadmeConfigReferenceIsValid) {
  auto readme = read_file(std::string(SLUICE_SOURCE_DIR) + "/README.md");
  auto start = readme.find("```yaml\nserver:");
  ASSERT_NE(start, std::string::npos);
  start += 8;
  auto yaml = readme.substr(start, readme.find("```", start) - start);
  yaml = replace_all(yaml, "\"<64 hex digits from `sluice keys new`>\"",
                     "\"1c590839af894cf25f9a5fe06929af05b377f60efbe55508ef93d251887b9213\"");
  TempDir dir;
  auto [code, out] = run_command({kBinary, "check-config", "--config", dir.write("readme.yaml", yaml)});
  EXPECT_EQ(code, 0) << out;
}

TEST(Binary, CheckConfigNamesThePathOfEachError) {
  TempDir dir;
  auto path =
      dir.write("bad.yaml",
                "server: { listen: 127.0.0.1:0, colour: blue }\n"
                "backends:\n  - { name: a, url: \"http://127.0.0.1:1/v1\", timeouts: { idle: soon } }\n"
                "models:\n  - { name: m, targets: [ { backend: nope } ] }\n");
  auto [code, out] = run_command({kBinary, "check-config", "--config", path});
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("server.colour: unknown key"), std::string::npos) << out;
  EXPECT_NE(out.find("backends[0].timeouts.idle"), std::string::npos) << out;
  EXPECT_NE(out.find("models[0].targets[0].backend: unknown backend 'nope'"), std::string::npos) << out;
  // serve refuses the same file with the same reasons.
  auto [scode, sout] = run_command({kBinary, "serve", "--config", path});
  EXPECT_EQ(scode, 1);
  EXPECT_NE(sout.find("server.colour"), std::string::npos) << sout;
}

TEST(Binary, TakenPortIsAOneLineStartupFailure) {
  TempDir dir;
  ScriptedUpstream squatter([](UpstreamConn&) {});
  auto yaml = replace_all(read_file(shipped_config_on_free_ports(dir)), "listen: 127.0.0.1:0",
                          "listen: 127.0.0.1:" + std::to_string(squatter.port()));
  auto [code, out] = run_command({kBinary, "--config", dir.write("taken.yaml", yaml)});
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("cannot listen on 127.0.0.1:" + std::to_string(squatter.port()) + " (server.listen)"),
            std::string::npos)
      << out;
}

TEST(Binary, KeysNewAndHash) {
  auto [code, out] = run_command({kBinary, "keys", "new", "--name", "alice"});
  ASSERT_EQ(code, 0);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(out, m, std::regex(R"(key:\s+(sk-sluice-[A-Za-z0-9_-]{43}))"))) << out;
  std::string key = m[1];
  ASSERT_TRUE(std::regex_search(out, m, std::regex(R"re(name: alice, key_sha256: "([0-9a-f]{64})")re")))
      << out;
  auto [hcode, hout] = run_command({kBinary, "keys", "hash", key});
  EXPECT_EQ(hcode, 0);
  EXPECT_EQ(hout.substr(0, 64), std::string(m[1]));
}

TEST(Binary, SimulateRunsTheSimulatedBackendAlone) {
  Child sim({kBinary, "simulate", "--listen", "127.0.0.1:0", "--tokens-per-second", "1000", "--ttft", "0"});
  std::string line;
  ASSERT_TRUE(wait_until([&] {
    line = sim.out();
    return line.find("listening on 127.0.0.1:") != std::string::npos;
  })) << sim.err();
  auto port = static_cast<std::uint16_t>(std::stoi(line.substr(line.find("127.0.0.1:") + 10)));
  HttpClient c(port);
  EXPECT_EQ(c.request("GET", "/health").status, 200);
  auto r = c.request(
      "POST", "/v1/chat/completions",
      R"({"model":"anything","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}],"simulator":{"tokens":3}})");
  ASSERT_EQ(r.status, 200);
  auto events = sse_data(r.body);
  ASSERT_EQ(events.size(), 6u) << r.body;  // 3 tokens, the finish chunk, the usage chunk, [DONE]
  EXPECT_NE(events[4].find("\"completion_tokens\":3"), std::string::npos) << events[4];
  sim.signal(SIGTERM);
  EXPECT_EQ(sim.wait_exit(), 0);
}

TEST(Binary, ShippedConfigAnswersTheReadmeCurlOffline) {
  TempDir dir;
  RunningGateway gw(shipped_config_on_free_ports(dir));
  ASSERT_NE(gw.port, 0) << gw.child.err();
  std::string body = R"({"model":"demo","messages":[{"role":"user","content":"Hello!"}]})";
  auto r = post_json(gw.port, "/v1/chat/completions", body, "sk-sluice-demo");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.body.find("\"chat.completion\""), std::string::npos);
  auto s = post_json(gw.port, "/v1/chat/completions",
                     R"({"model":"demo","stream":true,"messages":[{"role":"user","content":"Hello!"}]})",
                     "sk-sluice-demo");
  ASSERT_EQ(s.status, 200);
  EXPECT_EQ(sse_data(s.body).back(), "[DONE]");
  // The demo key is for the demo model only.
  EXPECT_EQ(post_json(gw.port, "/v1/chat/completions",
                      R"({"model":"openai/gpt-oss-120b","messages":[{"role":"user","content":"x"}]})",
                      "sk-sluice-demo")
                .status,
            403);
  // A request refused before it is routed, after its head (a chunk over the body limit), is logged with its
  // method and path too (not its query).
  HttpClient big(gw.port);
  ASSERT_TRUE(big.send_raw("POST /v1/chat/completions?q=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "ffffffff\r\n"));
  EXPECT_EQ(big.read_response().status, 413);
  // One JSON access-log line per request on stdout, never the key.
  gw.child.signal(SIGTERM);
  EXPECT_EQ(gw.child.wait_exit(), 0);
  auto out = gw.child.out();
  EXPECT_NE(out.find("\"type\":\"access\""), std::string::npos) << out;
  const auto refused = out.find("\"status\":413");
  ASSERT_NE(refused, std::string::npos) << out;
  const auto line_start = out.rfind('\n', refused) + 1;
  const auto line = out.substr(line_start, out.find('\n', refused) - line_start);
  EXPECT_NE(line.find("\"method\":\"POST\",\"path\":\"/v1/chat/completions\","), std::string::npos) << line;
  // Its client is the connection's address and port as the gateway accepted it.
  sockaddr_in local{};
  socklen_t local_len = sizeof local;
  ASSERT_EQ(::getsockname(big.fd(), reinterpret_cast<sockaddr*>(&local), &local_len), 0);
  EXPECT_NE(line.find("\"client\":\"127.0.0.1:" + std::to_string(ntohs(local.sin_port)) + "\""), std::string::npos)
      << line;
  EXPECT_NE(out.find("\"key\":\"demo\""), std::string::npos);
  EXPECT_EQ(out.find("sk-sluice-demo"), std::string::npos);
  EXPECT_EQ(gw.child.err().find("sk-sluice-demo"), std::string::npos);
}

namespace {

std::size_t access_lines(const std::string& out) {
  std::size_t n = 0;
  for (auto at = out.find("\"type\":\"access\""); at != std::string::npos; at = out.find("\"type\":\"access\"", at + 1))
    ++n;
  return n;
}

std::string buffered_access_config(const TempDir& dir, const std::string& flush) {
  auto yaml = replace_all(read_file(shipped_config_on_free_ports(dir)), "  format: json\n",
                          "  format: json\n  access_buffer: 64KiB\n  access_flush: " + flush + "\n");
  return dir.write("buffered.yaml", yaml);
}

const std::string kQuickChat = R"({"model":"demo","messages":[{"role":"user","content":"Hello!"}],"simulator":{"ttft":0}})";

}  // namespace

// log.access_buffer gathers a worker's lines; they reach stdout within access_flush however quiet it is.
TEST(Binary, BufferedAccessLogIsWrittenWithinTheFlushInterval) {
  TempDir dir;
  RunningGateway gw(buffered_access_config(dir, "300ms"));
  ASSERT_NE(gw.port, 0) << gw.child.err();
  for (int i = 0; i < 10; ++i) ASSERT_EQ(post_json(gw.port, "/v1/chat/completions", kQuickChat, "sk-sluice-demo").status, 200);
  EXPECT_TRUE(wait_until([&] { return access_lines(gw.child.out()) == 10; }, 10s)) << gw.child.out();
  gw.child.signal(SIGTERM);
  EXPECT_EQ(gw.child.wait_exit(), 0);
  // Whole lines only: every line of stdout is one JSON object.
  auto out = gw.child.out();
  std::size_t lines = 0;
  for (std::size_t at = 0; at < out.size();) {
    auto end = out.find('\n', at);
    ASSERT_NE(end, std::string::npos) << "unterminated line: " << out.substr(at);
    EXPECT_EQ(out[at], '{');
    EXPECT_EQ(out[end - 1], '}');
    ++lines;
    at = end + 1;
  }
  EXPECT_EQ(lines, 10u);
}

// Lines still gathered when the gateway stops are written before it exits.
TEST(Binary, BufferedAccessLogIsWrittenWhenTheGatewayStops) {
  TempDir dir;
  RunningGateway gw(buffered_access_config(dir, "10m"));
  ASSERT_NE(gw.port, 0) << gw.child.err();
  for (int i = 0; i < 12; ++i) ASSERT_EQ(post_json(gw.port, "/v1/chat/completions", kQuickChat, "sk-sluice-demo").status, 200);
  EXPECT_EQ(access_lines(gw.child.out()), 0u);  // 12 lines are far from 64 KiB, and 10 minutes from now
  gw.child.signal(SIGTERM);
  EXPECT_EQ(gw.child.wait_exit(), 0);
  EXPECT_EQ(access_lines(gw.child.out()), 12u) << gw.child.out();
}

// A /proc/<pid>/<file> line's first number after `field` ("FDSize:", "Max open files"); -1 when absent.
long long proc_number(pid_t pid, const std::string& file, const std::string& field) {
  std::istringstream in(read_file("/proc/" + std::to_string(pid) + "/" + file));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(field, 0) != 0) continue;
    const auto digit = line.find_first_of("0123456789", field.size());
    return digit == std::string::npos ? -1 : std::atoll(line.c_str() + digit);
  }
  return -1;
}

// The binary serving `config` under a shell's `ulimit` arguments.
Child gateway_under_ulimit(const std::string& ulimit_args, const std::string& config) {
  return Child({"/bin/sh", "-c", "ulimit " + ulimit_args + " && exec \"$@\"", "sh", kBinary, "serve", "--config",
                config});
}

// The binary carries its own jemalloc options (gateway/jemalloc_conf.cpp): deep per-class caches, so that a
// worker's bursts of requests do not go to the arena. jemalloc reports the options it runs with when asked to
// print its statistics at exit; an operator's MALLOC_CONF still wins.
TEST(Binary, JemallocRunsWithTheGatewaysCacheDepthAndMallocConfOverridesIt) {
  if (!SLUICE_JEMALLOC_LINKED)
    GTEST_SKIP() << "this build does not link jemalloc (a sanitizer build, or SLUICE_JEMALLOC=OFF)";
  auto depth = [](const std::string& conf) {
    auto [code, out] = run_command({"/usr/bin/env", "MALLOC_CONF=stats_print:true,stats_print_opts:Jmdxablea" + conf,
                                    kBinary, "--version"});
    EXPECT_EQ(code, 0) << out;
    std::smatch m;
    const std::regex option("\"tcache_nslots_small_min\":\\s*([0-9]+)");
    return std::regex_search(out, m, option) ? m[1].str() : "not reported: " + out;
  };
  EXPECT_EQ(depth(""), "128");
  EXPECT_EQ(depth(",tcache_nslots_small_min:32"), "32");
}

// Started under a low soft descriptor limit, the gateway raises it to the hard one, and grows its descriptor
// table for its connections before any arrives (growing it later stalls a worker for an RCU grace period each
// time). With the hard limit itself too low, it says so.
TEST(Binary, DescriptorLimitIsRaisedAndTheTableMadeReadyAtStart) {
  rlimit ours{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &ours), 0);
  ASSERT_GE(ours.rlim_max, 2048u) << "this machine's hard descriptor limit is too low for the test";
  // Two workers, one backend keeping up to 10 idle connections per worker. What the gateway needs: 2 per
  // connection, the idle pools, 256 more; kept under this machine's hard limit.
  const long long idle = 2 * 10;
  const long long connections = std::min<long long>(3000, (static_cast<long long>(ours.rlim_max) - idle - 256) / 2);
  const long long needed = 2 * connections + idle + 256;
  TempDir dir;
  const std::string config = dir.write(
      "fds.yaml", "server: { listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0, workers: 2, max_connections: " +
                      std::to_string(connections) +
                      " }\n"
                      "log: { level: info, format: text }\n"
                      "auth: none\n"
                      "backends:\n"
                      "  - { name: sim, dialect: simulator, max_idle_connections: 10 }\n"
                      "models:\n"
                      "  - { name: demo, targets: [ { backend: sim } ] }\n");
  {
    Child gw = gateway_under_ulimit("-Sn 256", config);
    ASSERT_FALSE(gw.wait_for_stderr("listening on").empty()) << gw.err();
    EXPECT_NE(gw.err().find("2 worker(s)"), std::string::npos) << gw.err();
    EXPECT_EQ(proc_number(gw.pid(), "limits", "Max open files"), static_cast<long long>(ours.rlim_max));
    EXPECT_GE(proc_number(gw.pid(), "status", "FDSize:"), needed);
    EXPECT_EQ(gw.err().find("file descriptors"), std::string::npos) << gw.err();
    gw.signal(SIGTERM);
    EXPECT_EQ(gw.wait_exit(), 0) << gw.err();
  }
  {
    Child gw = gateway_under_ulimit("-n 500", config);
    EXPECT_NE(gw.wait_for_stderr("may need at least " + std::to_string(needed) +
                                 " file descriptors; the limit (RLIMIT_NOFILE) is 500"),
              "")
        << gw.err();
    ASSERT_FALSE(gw.wait_for_stderr("listening on").empty()) << gw.err();
    gw.signal(SIGTERM);
    EXPECT_EQ(gw.wait_exit(), 0) << gw.err();
  }
}

TEST(Binary, SigtermLetsAnOpenStreamFinish) {
  TempDir dir;
  auto yaml = read_file(shipped_config_on_free_ports(dir));
  RunningGateway gw(dir.write("slow.yaml", yaml));
  ASSERT_NE(gw.port, 0) << gw.child.err();
  // 30 tokens at 20/s: about 1.5 s of streaming, most of it after SIGTERM.
  std::string body =
      R"({"model":"demo","stream":true,"messages":[{"role":"user","content":"hi"}],"simulator":{"tokens":30,"tokens_per_second":20}})";
  HttpClient c(gw.port);
  ASSERT_TRUE(c.send_raw(raw_post("/v1/chat/completions", body, "sk-sluice-demo")));
  auto head = c.read_head();
  ASSERT_EQ(head.status, 200);
  std::string received = c.read_some();
  ASSERT_NE(received.find("data:"), std::string::npos);

  gw.child.signal(SIGTERM);
  HttpClient admin(gw.admin);
  EXPECT_TRUE(wait_until([&] { return HttpClient(gw.admin).request("GET", "/readyz").status == 503; }, 10s));
  // New connections are no longer accepted while the stream drains.
  EXPECT_TRUE(wait_until([&] {
    HttpClient probe(gw.port);
    return !probe.connected() || probe.request("GET", "/v1/models").status == 0;
  }));
  // Until the chunked stream's terminator, which may come in a later read than [DONE].
  for (int i = 0; i < 200 && received.find("0\r\n\r\n") == std::string::npos; ++i)
    received += c.read_some(100ms);
  EXPECT_NE(received.find("data: [DONE]"), std::string::npos) << received;
  EXPECT_NE(received.find("0\r\n\r\n"), std::string::npos);  // the chunked stream ended properly
  EXPECT_EQ(gw.child.wait_exit(), 0) << gw.child.err();
  EXPECT_NE(gw.child.err().find("drained"), std::string::npos) << gw.child.err();
}

}  // namespace
}  // namespace sluice::test
