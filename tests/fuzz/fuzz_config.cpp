// Fuzzes config loading: YAML parsing, ${ENV} substitution, SLUICE_* overrides and validation. Whatever the
// file holds, load_config_text reports problems in its result and never throws or crashes; a config it
// accepts keeps the promises the gateway relies on without checking again.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "config.hpp"
#include "duration.hpp"
#include "fuzz_check.hpp"
#include "upstream/url.hpp"

namespace {

using namespace sluice;

// The environment comes from the input: a line `NAME=value` anywhere (a YAML comment works) sets NAME.
// Otherwise SLUICE_* overrides and names starting with UNSET are unset, and every other variable has a
// value, so shipped configs that name ${QUBRID_API_KEY} load with their backends enabled.
EnvLookup env_from(const std::string& text) {
  return [&text](const std::string& name) -> std::optional<std::string> {
    if (!name.empty()) {
      for (auto p = text.find(name + "="); p != std::string::npos; p = text.find(name + "=", p + 1)) {
        bool line_start = p == 0 || text[p - 1] == '\n' || text[p - 1] == ' ' || text[p - 1] == '#';
        if (!line_start) continue;
        auto from = p + name.size() + 1;
        auto end = text.find('\n', from);
        return text.substr(from, end == std::string::npos ? std::string::npos : end - from);
      }
    }
    if (name.rfind("SLUICE_", 0) == 0 || name.rfind("UNSET", 0) == 0) return std::nullopt;
    return "value-of-" + name;
  };
}

bool same_issues(const std::vector<ConfigIssue>& a, const std::vector<ConfigIssue>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].path != b[i].path || a[i].message != b[i].message) return false;
  return true;
}

void check_config(const Config& c) {
  SLUICE_FUZZ_CHECK(!c.backends.empty() && !c.models.empty(), "a config has backends and models");
  SLUICE_FUZZ_CHECK(c.store == "memory" || c.store == "redis", "store is memory or redis");
  SLUICE_FUZZ_CHECK(c.redis.url.rfind("redis://", 0) == 0, "the Redis URL is redis://");
  SLUICE_FUZZ_CHECK(c.server.max_body_bytes > 0, "bodies may have bytes");
  SLUICE_FUZZ_CHECK(c.server.header_timeout.count() > 0 && c.server.body_timeout.count() > 0 &&
                        c.server.idle_timeout.count() > 0,
                    "server timeouts are positive");
  SLUICE_FUZZ_CHECK(c.server.max_connections >= 1, "at least one connection");
  SLUICE_FUZZ_CHECK(c.cache.scope == "key" || c.cache.scope == "shared", "cache scope is key or shared");
  SLUICE_FUZZ_CHECK(c.limits.completion_estimate >= 1, "a completion estimate of at least one token");

  std::set<std::string> backends;
  for (const auto& b : c.backends) {
    SLUICE_FUZZ_CHECK(!b.name.empty(), "a backend has a name");
    SLUICE_FUZZ_CHECK(backends.insert(b.name).second, "backend names are unique");
    SLUICE_FUZZ_CHECK(c.find_backend(b.name) == &b, "find_backend finds it");
    SLUICE_FUZZ_CHECK(parse_dialect(to_string(b.dialect)) == b.dialect, "dialect names round-trip");
    if (b.dialect == Dialect::simulator)
      SLUICE_FUZZ_CHECK(b.url.empty(), "a simulator has no URL");
    else
      SLUICE_FUZZ_CHECK(upstream::parse_base_url(b.url).has_value(), "a backend URL parses");
    SLUICE_FUZZ_CHECK(b.max_inflight >= 1, "a backend takes at least one request");
    SLUICE_FUZZ_CHECK(b.timeouts.connect.count() > 0 && b.timeouts.first_token.count() > 0 &&
                          b.timeouts.idle.count() > 0 && b.timeouts.total.count() > 0,
                      "backend timeouts are positive");
    SLUICE_FUZZ_CHECK(b.health.path.empty() || b.health.path[0] == '/', "a health path is absolute");
    SLUICE_FUZZ_CHECK(b.health.interval.count() >= 100, "health checks at most every 100ms");
    SLUICE_FUZZ_CHECK(b.simulator.tokens_per_second > 0, "a simulator generates");
  }
  std::set<std::string> models;
  for (const auto& m : c.models) {
    SLUICE_FUZZ_CHECK(!m.name.empty(), "a model has a name");
    SLUICE_FUZZ_CHECK(models.insert(m.name).second, "model names are unique");
    for (const auto& a : m.aliases) SLUICE_FUZZ_CHECK(models.insert(a).second, "aliases are unique");
    SLUICE_FUZZ_CHECK(m.strategy == "fallback" || m.strategy == "balance", "strategy is fallback or balance");
    SLUICE_FUZZ_CHECK(!m.targets.empty(), "a model has targets");
    for (const auto& t : m.targets) {
      SLUICE_FUZZ_CHECK(backends.count(t.backend), "targets name known backends");
      SLUICE_FUZZ_CHECK(t.weight >= 1, "weights are positive");
    }
    SLUICE_FUZZ_CHECK(m.max_attempts >= 1 && m.max_attempts <= 10, "1 to 10 attempts");
    for (const auto& [k, v] : m.defaults)
      SLUICE_FUZZ_CHECK(
          k != "model" && k != "stream" && k != "stream_options" && k != "messages" && k != "prompt",
          "defaults leave what Sluice sets alone");
  }
  std::set<std::string> keys, digests;
  for (const auto& k : c.keys) {
    SLUICE_FUZZ_CHECK(!k.name.empty() && keys.insert(k.name).second, "key names are given and unique");
    SLUICE_FUZZ_CHECK(k.key_sha256.size() == 64 && digests.insert(k.key_sha256).second,
                      "key digests are 64 hex digits and unique");
    for (char ch : k.key_sha256)
      SLUICE_FUZZ_CHECK((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'),
                        "key digests are lowercase hex");
    for (const auto& m : k.models)
      SLUICE_FUZZ_CHECK(m.find('*') != std::string::npos || models.count(m), "keys name known models");
    SLUICE_FUZZ_CHECK(k.limits.budget_window.count() >= 1000, "budget windows are 1s or longer");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  // `api_key_file` reads the file it names: a device or /proc file could block or never end. Config files
  // are the operator's, so the fuzzer is kept away from those paths rather than the gateway from them.
  for (std::string_view bad : {"/dev", "/proc", "/sys"})
    if (text.find(bad) != std::string::npos) return -1;

  const auto env = env_from(text);
  LoadResult r;
  try {
    r = load_config_text(text, env);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "load_config_text threw: %s\n", e.what());
    SLUICE_FUZZ_CHECK(false, "load_config_text never throws");
  }
  SLUICE_FUZZ_CHECK(r.config.has_value() == r.errors.empty(), "a config exactly when there are no errors");
  for (const auto& e : r.errors) SLUICE_FUZZ_CHECK(!e.message.empty(), "every error says what is wrong");
  if (r.config) check_config(*r.config);

  // Loading is a pure function of the text and the environment.
  LoadResult again = load_config_text(text, env);
  SLUICE_FUZZ_CHECK(same_issues(r.errors, again.errors) && same_issues(r.warnings, again.warnings),
                    "loading twice gives the same result");

  // The duration and size parsers see every scalar of a config: exercise them on the whole input too.
  if (auto d = parse_duration(text)) {
    SLUICE_FUZZ_CHECK(d->count() >= 0, "durations are not negative");
    if (d->count() < 60'000)  // "250ms", "12.5s"; longer ones read "1m30s", which configs do not take
      SLUICE_FUZZ_CHECK(parse_duration(format_duration(*d)) == d, "a short formatted duration parses back");
  }
  (void)parse_size(text);
  return 0;
}
