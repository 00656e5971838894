#include "config.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

namespace sluice {
namespace {

using namespace std::chrono_literals;

EnvLookup env_of(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

const EnvLookup kNoEnv = env_of({});

// One backend, one model: the smallest valid config.
constexpr const char* kMinimal = R"(
backends:
  - name: local
    dialect: vllm
    url: http://127.0.0.1:8000/v1
models:
  - name: llama
    targets: [ { backend: local } ]
)";

// A copy of the shipped config/sluice.yaml (unit tests do not know the source directory).
constexpr const char* kShipped = R"(
server:
  listen: 127.0.0.1:8080
  admin_listen: 127.0.0.1:9464     # /metrics, /healthz, /readyz (never behind client keys)
  workers: 0                       # one per core
  max_body_bytes: 8MiB
  drain_timeout: 30s

log:
  level: info
  format: json

backends:
  - name: demo
    dialect: simulator
    simulator: { tokens_per_second: 200, ttft: 50ms }
  # Hosted Qubrid: left out (with a warning) while QUBRID_API_KEY is unset.
  - name: qubrid
    dialect: qubrid
    url: https://platform.qubrid.com/api/v1/qubridai
    api_key: ${QUBRID_API_KEY}
    timeouts: { connect: 5s, first_token: 120s, idle: 60s, total: 10m }

models:
  - name: demo
    targets: [ { backend: demo } ]
  - name: openai/gpt-oss-120b
    targets: [ { backend: qubrid } ]

keys:
  # The documented demo key `sk-sluice-demo` (SHA-256 below), for the demo model only.
  - name: demo
    key_sha256: "1c590839af894cf25f9a5fe06929af05b377f60efbe55508ef93d251887b9213"
    models: [ demo ]
    limits: { rpm: 600, tpm: 200000, concurrency: 16 }
)";

std::string all_errors(const LoadResult& r) {
  std::string s;
  for (const auto& e : r.errors) s += e.to_string() + "\n";
  return s;
}

const ConfigIssue* find_issue(const std::vector<ConfigIssue>& issues, const std::string& path) {
  for (const auto& i : issues)
    if (i.path == path) return &i;
  return nullptr;
}

Config load_ok(const std::string& yaml, const EnvLookup& env = kNoEnv) {
  auto r = load_config_text(yaml, env);
  EXPECT_TRUE(r.errors.empty()) << all_errors(r);
  if (!r.config) {
    ADD_FAILURE() << "no config";
    return Config{};
  }
  return *r.config;
}

// Loads `yaml`, expects it to fail, and returns the error at `path` (failing the test when absent).
ConfigIssue load_error(const std::string& yaml, const std::string& path, const EnvLookup& env = kNoEnv) {
  auto r = load_config_text(yaml, env);
  EXPECT_FALSE(r.config.has_value());
  EXPECT_FALSE(r.errors.empty());
  if (const auto* e = find_issue(r.errors, path)) return *e;
  ADD_FAILURE() << "no error at '" << path << "'; errors:\n" << all_errors(r);
  return ConfigIssue{};
}

// A temporary file removed at the end of the test.
struct TempFile {
  std::filesystem::path path;
  explicit TempFile(const std::string& content) {
    path = std::filesystem::temp_directory_path() /
           ("sluice-config-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::ofstream(path, std::ios::binary) << content;
  }
  ~TempFile() { std::filesystem::remove(path); }
  static inline int counter = 0;
};

TEST(ConfigTest, ShippedConfigLoads) {
  auto r = load_config_text(kShipped, kNoEnv);
  ASSERT_TRUE(r.errors.empty()) << all_errors(r);
  ASSERT_TRUE(r.config.has_value());
  const Config& c = *r.config;
  EXPECT_EQ(c.server.listen.to_string(), "127.0.0.1:8080");
  EXPECT_EQ(c.server.admin_listen.port, 9464);
  EXPECT_EQ(c.server.max_body_bytes, 8ull << 20);
  ASSERT_EQ(c.backends.size(), 2u);
  EXPECT_EQ(c.backends[0].dialect, Dialect::simulator);
  EXPECT_TRUE(c.backends[0].enabled);
  EXPECT_EQ(c.backends[0].simulator.ttft, 50ms);
  EXPECT_DOUBLE_EQ(c.backends[0].simulator.tokens_per_second, 200);
  // QUBRID_API_KEY is unset: qubrid is left out with a warning.
  EXPECT_FALSE(c.backends[1].enabled);
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_EQ(r.warnings[0].path, "backends[1]");
  EXPECT_EQ(c.backends[1].timeouts.total, 600s);
  ASSERT_EQ(c.keys.size(), 1u);
  EXPECT_EQ(c.keys[0].limits.tpm, 200000u);
  EXPECT_EQ(c.keys[0].models, std::vector<std::string>{"demo"});
}

TEST(ConfigTest, ShippedConfigWithQubridKeyEnablesQubrid) {
  auto r = load_config_text(kShipped, env_of({{"QUBRID_API_KEY", "qb-secret"}}));
  ASSERT_TRUE(r.config.has_value()) << all_errors(r);
  EXPECT_TRUE(r.warnings.empty());
  EXPECT_TRUE(r.config->backends[1].enabled);
  EXPECT_EQ(r.config->backends[1].api_key, "qb-secret");
}

TEST(ConfigTest, ShippedFileMatchesTheParser) {
  // Reads the real file when the source tree is where this file was compiled from.
  auto path = std::filesystem::path(__FILE__).parent_path() / ".." / ".." / "config" / "sluice.yaml";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "source tree not found at " << path;
  auto r = load_config_file(path.string(), kNoEnv);
  EXPECT_TRUE(r.errors.empty()) << all_errors(r);
  EXPECT_TRUE(r.config.has_value());
}

TEST(ConfigTest, Defaults) {
  Config c = load_ok(kMinimal);
  EXPECT_EQ(c.server.listen.host, "127.0.0.1");
  EXPECT_EQ(c.server.listen.port, 8080);
  EXPECT_EQ(c.server.admin_listen.port, 9464);
  EXPECT_EQ(c.server.workers, 0u);
  EXPECT_EQ(c.server.max_body_bytes, 8ull << 20);
  EXPECT_EQ(c.server.drain_timeout, 30s);
  EXPECT_EQ(c.server.max_connections, 10'000u);
  EXPECT_EQ(c.log.level, "info");
  EXPECT_EQ(c.log.format, "json");
  EXPECT_TRUE(c.log.access_log);
  EXPECT_EQ(c.log.access_buffer, 0u);  // each access line written at once unless asked otherwise
  EXPECT_EQ(c.store, "memory");
  EXPECT_TRUE(c.auth_required);
  EXPECT_EQ(c.cache.max_bytes, 256ull << 20);
  ASSERT_EQ(c.backends.size(), 1u);
  const auto& b = c.backends[0];
  EXPECT_EQ(b.dialect, Dialect::vllm);
  EXPECT_EQ(b.url, "http://127.0.0.1:8000/v1");
  EXPECT_TRUE(b.api_key.empty());
  EXPECT_TRUE(b.tls_verify);
  EXPECT_TRUE(b.enabled);
  EXPECT_EQ(b.max_inflight, 64u);
  EXPECT_EQ(b.timeouts.connect, 2s);
  EXPECT_EQ(b.timeouts.first_token, 60s);
  EXPECT_EQ(b.timeouts.idle, 30s);
  EXPECT_EQ(b.timeouts.total, 600s);
  ASSERT_EQ(c.models.size(), 1u);
  EXPECT_EQ(c.models[0].strategy, "fallback");
  ASSERT_EQ(c.models[0].targets.size(), 1u);
  EXPECT_EQ(c.models[0].targets[0].backend, "local");
  EXPECT_EQ(c.models[0].targets[0].model, "");
  EXPECT_EQ(c.models[0].targets[0].weight, 1u);
  EXPECT_FALSE(c.models[0].cache_enabled);
  EXPECT_FALSE(c.models[0].cache_ttl.has_value());
  EXPECT_TRUE(c.keys.empty());
  EXPECT_EQ(c.find_backend("local"), &c.backends[0]);
  EXPECT_EQ(c.find_backend("nope"), nullptr);
}

TEST(ConfigTest, DurationsAndSizesAreParsed) {
  Config c = load_ok(R"(
server:
  max_body_bytes: 1MiB
  drain_timeout: 5s
  header_timeout: 1500ms
  idle_timeout: 2m
cache:
  max_bytes: 64KiB
  default_ttl: 1h
backends:
  - name: local
    url: http://127.0.0.1:8000/v1
    timeouts: { connect: 250ms, first_token: 90s, idle: 1.5s, total: 10m }
models:
  - name: llama
    strategy: balance
    targets:
      - { backend: local, model: meta-llama/Llama-3.1-8B-Instruct, weight: 3 }
    cache: { enabled: true, ttl: 30s }
)");
  EXPECT_EQ(c.server.max_body_bytes, 1048576u);
  EXPECT_EQ(c.server.drain_timeout, 5s);
  EXPECT_EQ(c.server.header_timeout, 1500ms);
  EXPECT_EQ(c.server.idle_timeout, 120s);
  EXPECT_EQ(c.cache.max_bytes, 65536u);
  EXPECT_EQ(c.cache.default_ttl, 3600s);
  const auto& t = c.backends[0].timeouts;
  EXPECT_EQ(t.connect, 250ms);
  EXPECT_EQ(t.first_token, 90s);
  EXPECT_EQ(t.idle, 1500ms);
  EXPECT_EQ(t.total, 600s);
  EXPECT_EQ(c.models[0].strategy, "balance");
  EXPECT_EQ(c.models[0].targets[0].model, "meta-llama/Llama-3.1-8B-Instruct");
  EXPECT_EQ(c.models[0].targets[0].weight, 3u);
  EXPECT_TRUE(c.models[0].cache_enabled);
  EXPECT_EQ(c.models[0].cache_ttl, 30s);
}

TEST(ConfigTest, UnknownTopLevelKey) {
  auto e = load_error(std::string(kMinimal) + "bogus: 1\n", "bogus");
  EXPECT_NE(e.message.find("unknown key"), std::string::npos) << e.message;
}

TEST(ConfigTest, UnknownNestedKey) {
  auto e = load_error(R"(
backends:
  - name: local
    url: http://127.0.0.1:8000/v1
    timeouts: { connect: 1s, bogus: 2s }
models:
  - name: llama
    targets: [ { backend: local } ]
)",
                      "backends[0].timeouts.bogus");
  EXPECT_EQ(e.to_string(), "backends[0].timeouts.bogus: unknown key");
  load_error(std::string(kMinimal) + "server: { listen: '127.0.0.1:1', lisen: '127.0.0.1:2' }\n",
             "server.lisen");
}

TEST(ConfigTest, BadDurationNamesThePathAndValue) {
  auto r = load_config_text(R"(
backends:
  - name: local
    url: http://127.0.0.1:8000/v1
    timeouts: { idle: 5parsecs }
models:
  - name: llama
    targets: [ { backend: local } ]
)",
                            kNoEnv);
  ASSERT_EQ(r.errors.size(), 1u) << all_errors(r);
  EXPECT_FALSE(r.config.has_value());
  auto text = r.errors[0].to_string();
  EXPECT_NE(text.find("backends[0].timeouts.idle"), std::string::npos) << text;
  EXPECT_NE(text.find("5parsecs"), std::string::npos) << text;
}

TEST(ConfigTest, BadSizeAndNumbers) {
  load_error(std::string(kMinimal) + "server: { max_body_bytes: 8 megs }\n", "server.max_body_bytes");
  load_error(std::string(kMinimal) + "server: { max_body_bytes: 0 }\n", "server.max_body_bytes");
  load_error(std::string(kMinimal) + "server: { workers: -1 }\n", "server.workers");
  load_error(std::string(kMinimal) + "server: { workers: many }\n", "server.workers");
  load_error(std::string(kMinimal) + "log: { access_log: maybe }\n", "log.access_log");
  auto buffered = load_ok(std::string(kMinimal) + "log: { access_buffer: 64KiB, access_flush: 2s }\n");
  EXPECT_EQ(buffered.log.access_buffer, 64u << 10);
  EXPECT_EQ(buffered.log.access_flush, 2s);
  load_error(std::string(kMinimal) + "log: { access_buffer: lots }\n", "log.access_buffer");
  load_error(std::string(kMinimal) + "log: { access_buffer: 1GiB }\n", "log.access_buffer");
  load_error(std::string(kMinimal) + "log: { access_flush: 0s }\n", "log.access_flush");
  load_error(std::string(kMinimal) + "log: { level: verbose }\n", "log.level");
}

TEST(ConfigTest, EnvironmentSubstitution) {
  Config c = load_ok(
      R"(
server:
  listen: ${HOST:-0.0.0.0}:${PORT}
  drain_timeout: ${DRAIN:-7s}
backends:
  - name: local
    url: http://${BACKEND_HOST}:8000/v1
    api_key: ${LOCAL_KEY}
models:
  - name: ${MODEL_NAME:-llama}
    targets: [ { backend: local } ]
)",
      env_of({{"PORT", "9000"}, {"BACKEND_HOST", "gpu-1"}, {"LOCAL_KEY", "sk-local"}, {"MODEL_NAME", ""}}));
  EXPECT_EQ(c.server.listen.host, "0.0.0.0");  // unset: the default
  EXPECT_EQ(c.server.listen.port, 9000);
  EXPECT_EQ(c.server.drain_timeout, 7s);
  EXPECT_EQ(c.backends[0].url, "http://gpu-1:8000/v1");
  EXPECT_EQ(c.backends[0].api_key, "sk-local");
  EXPECT_EQ(c.models[0].name, "llama");  // set but empty: the default too
}

TEST(ConfigTest, SetVariableWinsOverDefault) {
  Config c = load_ok(R"(
server: { listen: "${HOST:-0.0.0.0}:8080" }
backends:
  - name: local
    url: http://127.0.0.1:8000/v1
models:
  - name: llama
    targets: [ { backend: local } ]
)",
                     env_of({{"HOST", "10.0.0.5"}}));
  EXPECT_EQ(c.server.listen.host, "10.0.0.5");
}

TEST(ConfigTest, UnsetApiKeyVariableDisablesTheBackendWithAWarning) {
  auto r = load_config_text(R"(
backends:
  - name: local
    url: http://127.0.0.1:8000/v1
  - name: hosted
    dialect: openai
    url: https://api.example.com/v1
    api_key: ${HOSTED_API_KEY}
models:
  - name: llama
    targets: [ { backend: hosted }, { backend: local } ]
)",
                            kNoEnv);
  ASSERT_TRUE(r.errors.empty()) << all_errors(r);
  ASSERT_TRUE(r.config.has_value());
  EXPECT_TRUE(r.config->backends[0].enabled);
  EXPECT_FALSE(r.config->backends[1].enabled);
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_EQ(r.warnings[0].path, "backends[1]");
  EXPECT_NE(r.warnings[0].message.find("HOSTED_API_KEY"), std::string::npos) << r.warnings[0].message;
}

TEST(ConfigTest, EmptyApiKeyVariableLeavesTheBackendOutButAnEmptyDefaultIsDeliberate) {
  const std::string yaml = R"(
backends:
  - { name: a, url: "http://127.0.0.1:8000/v1", api_key: "${A_KEY}" }
  - { name: b, url: "http://127.0.0.1:8001/v1", api_key: "${B_KEY:-}" }
models:
  - { name: m, targets: [ { backend: a }, { backend: b } ] }
)";
  auto r = load_config_text(yaml, env_of({{"A_KEY", ""}}));
  ASSERT_TRUE(r.config.has_value()) << all_errors(r);
  EXPECT_FALSE(r.config->backends[0].enabled);  // set but empty: a mistake, reported
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_EQ(r.warnings[0].path, "backends[0]");
  EXPECT_TRUE(r.config->backends[1].enabled);  // ${B_KEY:-}: no key on purpose
  EXPECT_EQ(r.config->backends[1].api_key, "");
}

TEST(ConfigTest, UnsetVariableElsewhereIsAnError) {
  auto e = load_error(R"(
backends:
  - name: local
    url: ${BACKEND_URL}
models:
  - name: llama
    targets: [ { backend: local } ]
)",
                      "backends[0].url");
  EXPECT_NE(e.message.find("BACKEND_URL"), std::string::npos) << e.message;
  load_error(std::string(kMinimal) + "server: { listen: \"${LISTEN}\" }\n", "server.listen");
}

TEST(ConfigTest, UnterminatedVariableIsAnError) {
  load_error(std::string(kMinimal) + "server: { listen: \"${LISTEN\" }\n", "server.listen");
}

TEST(ConfigTest, ApiKeyFileIsReadAndTrimmed) {
  TempFile secret("sk-from-file\r\n\n");
  Config c = load_ok(R"(
backends:
  - name: local
    url: http://127.0.0.1:8000/v1
    api_key_file: )" +
                     secret.path.string() + R"(
models:
  - name: llama
    targets: [ { backend: local } ]
)");
  EXPECT_EQ(c.backends[0].api_key, "sk-from-file");
  EXPECT_TRUE(c.backends[0].enabled);
}

TEST(ConfigTest, UnreadableApiKeyFileDisablesTheBackend) {
  auto r = load_config_text(R"(
backends:
  - name: local
    url: http://127.0.0.1:8000/v1
    api_key_file: /nonexistent/sluice/secret
models:
  - name: llama
    targets: [ { backend: local } ]
)",
                            kNoEnv);
  ASSERT_TRUE(r.config.has_value()) << all_errors(r);
  EXPECT_FALSE(r.config->backends[0].enabled);
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_EQ(r.warnings[0].path, "backends[0]");
}

TEST(ConfigTest, ApiKeyAndApiKeyFileTogetherIsAnError) {
  TempFile secret("sk-from-file\n");
  auto e = load_error(R"(
backends:
  - name: local
    url: http://127.0.0.1:8000/v1
    api_key: sk-inline
    api_key_file: )" + secret.path.string() +
                          R"(
models:
  - name: llama
    targets: [ { backend: local } ]
)",
                      "backends[0]");
  EXPECT_NE(e.message.find("api_key_file"), std::string::npos) << e.message;
}

TEST(ConfigTest, TargetNamingAnUnknownBackend) {
  auto e = load_error(R"(
backends:
  - name: local
    url: http://127.0.0.1:8000/v1
models:
  - name: llama
    targets: [ { backend: remote } ]
)",
                      "models[0].targets[0].backend");
  EXPECT_NE(e.message.find("remote"), std::string::npos) << e.message;
}

TEST(ConfigTest, ModelWithoutTargets) {
  load_error(R"(
backends:
  - name: local
    url: http://127.0.0.1:8000/v1
models:
  - name: llama
    targets: []
)",
             "models[0].targets");
}

TEST(ConfigTest, KeyNamingAnUnknownModel) {
  auto e = load_error(std::string(kMinimal) + R"(
keys:
  - name: alice
    key_sha256: 1c590839af894cf25f9a5fe06929af05b377f60efbe55508ef93d251887b9213
    models: [ llama, mistral ]
)",
                      "keys[0].models[1]");
  EXPECT_NE(e.message.find("mistral"), std::string::npos) << e.message;
}

TEST(ConfigTest, KeyAllowingEveryModelAndAnAlias) {
  Config c = load_ok(R"(
backends:
  - name: local
    url: http://127.0.0.1:8000/v1
models:
  - name: llama
    aliases: [ llama-latest ]
    targets: [ { backend: local } ]
keys:
  - name: all
    key_sha256: 1C590839AF894CF25F9A5FE06929AF05B377F60EFBE55508EF93D251887B9213
    models: [ "*" ]
  - name: alias
    key_sha256: 0000000000000000000000000000000000000000000000000000000000000000
    models: [ llama-latest ]
)");
  ASSERT_EQ(c.keys.size(), 2u);
  EXPECT_EQ(c.keys[0].key_sha256, "1c590839af894cf25f9a5fe06929af05b377f60efbe55508ef93d251887b9213");
  EXPECT_EQ(c.models[0].aliases, std::vector<std::string>{"llama-latest"});
}

TEST(ConfigTest, KeySha256MustBe64HexDigits) {
  for (std::string digest :
       {"abc", "1c590839af894cf25f9a5fe06929af05b377f60efbe55508ef93d251887b921",
        "1c590839af894cf25f9a5fe06929af05b377f60efbe55508ef93d251887b92133",
        "zc590839af894cf25f9a5fe06929af05b377f60efbe55508ef93d251887b9213", "sk-sluice-demo"}) {
    load_error(std::string(kMinimal) + "keys:\n  - name: k\n    key_sha256: \"" + digest + "\"\n",
               "keys[0].key_sha256");
  }
  load_error(std::string(kMinimal) + "keys:\n  - name: k\n", "keys[0].key_sha256");
}

TEST(ConfigTest, DuplicateNames) {
  load_error(R"(
backends:
  - name: local
    url: http://127.0.0.1:8000/v1
  - name: local
    url: http://127.0.0.1:8001/v1
models:
  - name: llama
    targets: [ { backend: local } ]
)",
             "backends[1].name");
  load_error(std::string(kMinimal) + R"(
  - name: llama
    targets: [ { backend: local } ]
)",
             "models[1].name");
  load_error(std::string(kMinimal) + R"(
  - name: qwen
    aliases: [ llama ]
    targets: [ { backend: local } ]
)",
             "models[1].aliases[0]");
  const std::string digest = "1c590839af894cf25f9a5fe06929af05b377f60efbe55508ef93d251887b9213";
  load_error(std::string(kMinimal) + "keys:\n  - { name: a, key_sha256: " + digest +
                 " }\n  - { name: a, key_sha256: " + std::string(64, 'b') + " }\n",
             "keys[1].name");
  load_error(std::string(kMinimal) + "keys:\n  - { name: a, key_sha256: " + digest +
                 " }\n  - { name: b, key_sha256: " + digest + " }\n",
             "keys[1].key_sha256");
}

TEST(ConfigTest, ListenAddresses) {
  Config c =
      load_ok(std::string(kMinimal) + "server: { listen: \"[::1]:8080\", admin_listen: \"0.0.0.0:0\" }\n");
  EXPECT_EQ(c.server.listen.host, "::1");
  EXPECT_EQ(c.server.listen.port, 8080);
  EXPECT_EQ(c.server.listen.to_string(), "[::1]:8080");
  EXPECT_EQ(c.server.admin_listen.host, "0.0.0.0");
  EXPECT_EQ(c.server.admin_listen.port, 0);
}

TEST(ConfigTest, ListenWithoutPortIsAnError) {
  for (std::string bad :
       {"localhost", "127.0.0.1:", ":8080", "[::1]", "[::1]8080", "host:http", "host:65536"}) {
    auto e = load_error(std::string(kMinimal) + "server: { listen: \"" + bad + "\" }\n", "server.listen");
    EXPECT_NE(e.message.find(bad), std::string::npos) << e.message;
  }
}

TEST(ConfigTest, SimulatorBackendTakesNoUrl) {
  load_error(R"(
backends:
  - name: sim
    dialect: simulator
    url: http://127.0.0.1:8000/v1
models:
  - name: demo
    targets: [ { backend: sim } ]
)",
             "backends[0].url");
}

TEST(ConfigTest, OtherBackendsNeedAnHttpUrl) {
  auto e = load_error(R"(
backends:
  - name: local
    dialect: tgi
models:
  - name: llama
    targets: [ { backend: local } ]
)",
                      "backends[0].url");
  EXPECT_NE(e.message.find("required"), std::string::npos) << e.message;
  load_error(R"(
backends:
  - name: local
    url: ftp://127.0.0.1/v1
models:
  - name: llama
    targets: [ { backend: local } ]
)",
             "backends[0].url");
  for (std::string bad :
       {"http://127.0.0.1:99999/v1", "http://127.0.0.1:8000/v1?key=x", "https://user@host/v1"}) {
    load_error(R"(
backends:
  - name: local
    url: ")" + bad +
                   R"("
models:
  - name: llama
    targets: [ { backend: local } ]
)",
               "backends[0].url");
  }
}

TEST(ConfigTest, UnknownDialect) {
  load_error(R"(
backends:
  - name: local
    dialect: ollama
    url: http://127.0.0.1:11434/v1
models:
  - name: llama
    targets: [ { backend: local } ]
)",
             "backends[0].dialect");
}

TEST(ConfigTest, InvalidYamlMentionsTheLine) {
  // Line 3 is indented by one space: neither in `server` nor at the top level.
  auto r = load_config_text("server:\n  listen: 127.0.0.1:8080\n bad: 2\nbackends: []\n", kNoEnv);
  EXPECT_FALSE(r.config.has_value());
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].path, "");
  EXPECT_NE(r.errors[0].message.find("line 3"), std::string::npos) << r.errors[0].message;

  auto flow = load_config_text("server:\n  listen: 127.0.0.1:8080\nmodels: [ { name: a }\n", kNoEnv);
  ASSERT_EQ(flow.errors.size(), 1u);
  EXPECT_NE(flow.errors[0].message.find("line "), std::string::npos) << flow.errors[0].message;
}

TEST(ConfigTest, EmptyOrNonMappingConfig) {
  EXPECT_FALSE(load_config_text("", kNoEnv).config.has_value());
  EXPECT_FALSE(load_config_text("# only a comment\n", kNoEnv).config.has_value());
  EXPECT_FALSE(load_config_text("- a\n- b\n", kNoEnv).config.has_value());
  auto r = load_config_text("server: {}\n", kNoEnv);
  EXPECT_NE(find_issue(r.errors, "backends"), nullptr) << all_errors(r);
  EXPECT_NE(find_issue(r.errors, "models"), nullptr) << all_errors(r);
}

TEST(ConfigTest, WrongShapesAreErrorsNotCrashes) {
  load_error("backends: local\nmodels: []\n", "backends");
  load_error(std::string(kMinimal) + "server: [1, 2]\n", "server");
  load_error(std::string(kMinimal) + "server: { listen: [1, 2] }\n", "server.listen");
  load_error(R"(
backends:
  - just-a-string
models:
  - name: llama
    targets: [ { backend: local } ]
)",
             "backends[0]");
}

TEST(ConfigTest, AllErrorsAreCollected) {
  auto r = load_config_text(R"(
server:
  drain_timeout: soon
backends:
  - name: local
    url: http://127.0.0.1:8000/v1
    colour: blue
models:
  - name: llama
    targets: [ { backend: local } ]
)",
                            kNoEnv);
  EXPECT_FALSE(r.config.has_value());
  ASSERT_EQ(r.errors.size(), 2u) << all_errors(r);
  EXPECT_NE(find_issue(r.errors, "server.drain_timeout"), nullptr) << all_errors(r);
  EXPECT_NE(find_issue(r.errors, "backends[0].colour"), nullptr) << all_errors(r);
}

TEST(ConfigTest, AuthNone) {
  Config c = load_ok(std::string(kMinimal) + "auth: none\n");
  EXPECT_FALSE(c.auth_required);
  load_error(std::string(kMinimal) + "auth: maybe\n", "auth");
}

TEST(ConfigTest, DialectNamesRoundTrip) {
  for (auto d : {Dialect::openai, Dialect::vllm, Dialect::sglang, Dialect::llamacpp, Dialect::tgi,
                 Dialect::qubrid, Dialect::simulator})
    EXPECT_EQ(parse_dialect(to_string(d)), d);
  EXPECT_EQ(parse_dialect("OpenAI"), std::nullopt);
}

}  // namespace
}  // namespace sluice

namespace sluice {
namespace {

constexpr const char* kLimited = R"(
store: redis
redis: { url: "redis://:${REDIS_PASSWORD}@10.0.0.5:6380/2", timeout: 100ms, fail_closed: true, key_prefix: "team-a:" }
limits: { completion_estimate: 512 }
backends:
  - { name: local, dialect: vllm, url: "http://127.0.0.1:8000/v1", max_inflight: 8, max_queue: 16, queue_timeout: 2s }
models:
  - name: openai/gpt-oss-120b
    targets: [ { backend: local } ]
    limits: { rpm: 100, tpm: 50000, concurrency: 32 }
keys:
  - name: alice
    key_sha256: "1c590839af894cf25f9a5fe06929af05b377f60efbe55508ef93d251887b9213"
    models: [ "openai/*" ]
    limits: { rpm: 60, tpm: 10000, concurrency: 4, budget: 1000000, budget_window: 7d }
)";

TEST(ConfigLimitsTest, EveryLimitIsRead) {
  auto r = load_config_text(kLimited, env_of({{"REDIS_PASSWORD", "pw"}}));
  ASSERT_TRUE(r.config) << all_errors(r);
  const Config& c = *r.config;
  EXPECT_EQ(c.store, "redis");
  EXPECT_EQ(c.redis.url, "redis://:pw@10.0.0.5:6380/2");
  EXPECT_EQ(c.redis.timeout, 100ms);
  EXPECT_TRUE(c.redis.fail_closed);
  EXPECT_EQ(c.redis.key_prefix, "team-a:");
  EXPECT_EQ(c.limits.completion_estimate, 512u);
  EXPECT_EQ(c.backends[0].max_queue, 16u);
  EXPECT_EQ(c.backends[0].queue_timeout, 2s);
  const auto& ml = c.models[0].limits;
  EXPECT_EQ(ml.rpm, 100u);
  EXPECT_EQ(ml.tpm, 50000u);
  EXPECT_EQ(ml.concurrency, 32u);
  const auto& kl = c.keys[0].limits;
  EXPECT_EQ(kl.rpm, 60u);
  EXPECT_EQ(kl.tpm, 10000u);
  EXPECT_EQ(kl.concurrency, 4u);
  EXPECT_EQ(kl.budget, 1000000u);
  EXPECT_EQ(kl.budget_window, std::chrono::milliseconds(7 * 86'400'000LL));
  EXPECT_EQ(c.keys[0].models[0], "openai/*");  // a glob: not checked against the model names
}

TEST(ConfigLimitsTest, DefaultsAreUnlimitedWithADailyWindow) {
  Config c = load_ok(kMinimal);
  EXPECT_EQ(c.store, "memory");
  EXPECT_EQ(c.redis.timeout, 250ms);
  EXPECT_FALSE(c.models[0].limits.any());
  EXPECT_EQ(c.backends[0].max_queue, 64u);
  EXPECT_EQ(c.backends[0].queue_timeout, 5s);
  EXPECT_EQ(KeyLimits{}.budget_window, std::chrono::milliseconds(86'400'000));
}

TEST(ConfigLimitsTest, BadLimitsAreErrorsWithTheirPaths) {
  std::string base = kMinimal;
  load_error(base + "keys: [ { name: a, key_sha256: \"" + std::string(64, 'a') +
                 "\", limits: { rpm: -1 } } ]\n",
             "keys[0].limits.rpm");
  load_error(base + "keys: [ { name: a, key_sha256: \"" + std::string(64, 'a') +
                 "\", limits: { budget: 10, budget_window: 10ms } } ]\n",
             "keys[0].limits.budget_window");
  load_error(base + "keys: [ { name: a, key_sha256: \"" + std::string(64, 'a') +
                 "\", limits: { rph: 10 } } ]\n",
             "keys[0].limits.rph");
  load_error(base + "redis: { url: \"http://x\" }\n", "redis.url");
  load_error(base + "redis: { timeout: 0ms }\n", "redis.timeout");
  load_error(base + "limits: { completion_estimate: 0 }\n", "limits.completion_estimate");
  load_error(std::string(R"(
backends:
  - { name: local, url: "http://127.0.0.1:8000/v1" }
models:
  - { name: llama, targets: [ { backend: local } ], limits: { rps: 1 } }
)"),
             "models[0].limits.rps");
}

}  // namespace
}  // namespace sluice
