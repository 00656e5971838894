#pragma once
// Sluice's configuration: plain structs, loaded from YAML with ${ENV} substitution and strict validation.
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace sluice {

using Millis = std::chrono::milliseconds;

/// host:port as written in `listen:` (IPv6 as "[::1]:8080").
struct ListenAddress {
  std::string host = "127.0.0.1";
  std::uint16_t port = 8080;
  std::string to_string() const;
};

struct ServerConfig {
  ListenAddress listen{"127.0.0.1", 8080};
  ListenAddress admin_listen{"127.0.0.1", 9464};
  unsigned workers = 0;                       // 0: one per core
  std::uint64_t max_body_bytes = 8ull << 20;  // request bodies above this get 413
  std::uint32_t max_header_bytes = 32u << 10; // request headers above this get 431
  Millis drain_timeout{30'000};               // SIGTERM: how long in-flight requests may finish
  Millis header_timeout{10'000};              // a request's header must arrive within this
  Millis body_timeout{60'000};                // and its body within this, once the header is in
  Millis idle_timeout{60'000};                // keep-alive connections idle longer are closed
  unsigned max_connections = 10'000;          // accepted connections above this are refused at once
};

struct LogConfig {
  std::string level = "info";   // trace|debug|info|warn|error|off
  std::string format = "json";  // json|text
  bool access_log = true;
  // Access lines are gathered per worker and written together when this many bytes are waiting, or after
  // access_flush at the latest (like nginx's `access_log ... buffer=64k flush=1s`); 0: each line at once.
  std::uint64_t access_buffer = 0;
  Millis access_flush{1'000};
};

enum class Dialect { openai, vllm, sglang, llamacpp, tgi, qubrid, simulator };
std::string_view to_string(Dialect d);
std::optional<Dialect> parse_dialect(std::string_view s);

struct BackendTimeouts {
  Millis connect{2'000};
  Millis first_token{60'000};  // request sent → response header and first body bytes
  Millis idle{30'000};         // longest gap between two reads of a response
  Millis total{600'000};       // whole exchange
};

struct SimulatorConfig {
  double tokens_per_second = 200;
  Millis ttft{50};
};

/// Active health checks: a GET on `path` (under the backend's origin) every `interval`.
struct HealthConfig {
  bool enabled = true;
  std::string path;  // empty: the dialect's default (/health, or the base URL's /models)
  Millis interval{10'000};
  Millis timeout{2'000};
};

/// Passive outlier detection: consecutive failures eject a backend for a cooldown that doubles
/// on each ejection in a row (capped), then one trial request decides (half-open).
struct OutlierConfig {
  unsigned consecutive_failures = 3;
  Millis base_ejection{5'000};
  Millis max_ejection{300'000};
};

struct BackendConfig {
  std::string name;
  Dialect dialect = Dialect::openai;
  std::string url;      // base URL incl. path prefix, e.g. http://127.0.0.1:8000/v1
  std::string api_key;  // secret: never logged; empty means none sent
  std::string ca_file;  // extra trust anchor (PEM) for this backend's TLS
  bool tls_verify = true;
  unsigned max_inflight = 64;
  unsigned max_idle_connections = 64;  // per worker
  BackendTimeouts timeouts;
  SimulatorConfig simulator;
  HealthConfig health;
  OutlierConfig outlier;
  bool include_usage = true;  // ask for stream_options.include_usage when streaming (exact token counts)
  unsigned max_queue = 64;     // requests that may wait for a slot when every target is at max_inflight
  Millis queue_timeout{5'000};  // how long one may wait before it gets 503
  bool enabled = true;        // false: left out (reason in LoadResult::warnings)
};

/// Limits on one model for all callers together (0: unlimited).
struct ModelLimits {
  std::uint64_t rpm = 0;
  std::uint64_t tpm = 0;
  std::uint64_t concurrency = 0;
  bool any() const { return rpm || tpm || concurrency; }
};

/// Limits on one key (0: unlimited). rpm/tpm are rates without burst artefacts at window edges (GCRA);
/// the budget is a number of tokens per fixed window aligned to the Unix epoch (1d: per UTC day).
struct KeyLimits {
  std::uint64_t rpm = 0;
  std::uint64_t tpm = 0;
  std::uint64_t concurrency = 0;
  std::uint64_t budget = 0;
  Millis budget_window{86'400'000};
  bool any() const { return rpm || tpm || concurrency || budget; }
};

struct TargetConfig {
  std::string backend;
  std::string model;  // model name sent upstream; empty: the public name
  unsigned weight = 1;
};

struct ModelConfig {
  std::string name;
  std::vector<std::string> aliases;
  std::string strategy = "fallback";  // fallback | balance
  std::vector<TargetConfig> targets;
  unsigned max_attempts = 3;  // targets tried per request (failover), at most
  /// Fields set in the request body when the client did not send them, e.g. reasoning_effort: low.
  std::vector<std::pair<std::string, std::string>> defaults;
  std::uint64_t max_tokens_cap = 0;  // clamps max_tokens / max_completion_tokens; 0: no cap
  bool cache_enabled = false;
  std::optional<Millis> cache_ttl;     // empty: cache.default_ttl
  bool cache_only_deterministic = true;  // cache only temperature: 0 or seeded requests (false: all)
  ModelLimits limits;  // protect the model's backends, whoever calls
};

struct KeyConfig {
  std::string name;
  std::string key_sha256;           // 64 lowercase hex digits
  std::vector<std::string> models;  // empty: every model
  KeyLimits limits;
};

struct CacheConfig {
  std::uint64_t max_bytes = 256ull << 20;
  Millis default_ttl{300'000};
  std::string scope = "key";  // key: each key sees only its own answers | shared: every key shares them
};

struct RedisConfig {
  std::string url = "redis://127.0.0.1:6379/0";  // may carry a password: never logged
  bool fail_closed = false;     // Redis unreachable: refuse requests (503) instead of applying local limits
  Millis timeout{250};          // one decision waits at most this long for Redis
  std::string key_prefix = "sluice:";
};

/// How admission estimates the tokens a request will use before it runs.
struct LimitsConfig {
  std::uint64_t completion_estimate = 1024;  // reserved for the answer when a request sets no max_tokens
};

struct Config {
  ServerConfig server;
  LogConfig log;
  std::string store = "memory";
  RedisConfig redis;
  CacheConfig cache;
  LimitsConfig limits;
  std::vector<BackendConfig> backends;
  std::vector<ModelConfig> models;
  std::vector<KeyConfig> keys;
  bool auth_required = true;  // `auth: none` turns key checks off (local development only)

  const BackendConfig* find_backend(std::string_view name) const;
};

/// One problem in a config file, with the YAML path it concerns (e.g. "backends[1].timeouts.idle").
struct ConfigIssue {
  std::string path;
  std::string message;
  std::string to_string() const { return path.empty() ? message : path + ": " + message; }
};

struct LoadResult {
  std::optional<Config> config;       // set when there are no errors
  std::vector<ConfigIssue> errors;    // the config is unusable
  std::vector<ConfigIssue> warnings;  // usable, but something was left out (e.g. a backend without its key)
};

/// Looks up an environment variable; nullopt when unset. Injected so tests control the environment.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
EnvLookup process_env();

/// Parses YAML text into a validated Config.
LoadResult load_config_text(const std::string& yaml, const EnvLookup& env = process_env());
/// Reads and parses a config file.
LoadResult load_config_file(const std::string& path, const EnvLookup& env = process_env());

}  // namespace sluice
