#include "config.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "duration.hpp"
#include "upstream/url.hpp"

namespace sluice {

std::string ListenAddress::to_string() const {
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::string_view to_string(Dialect d) {
  switch (d) {
    case Dialect::openai:
      return "openai";
    case Dialect::vllm:
      return "vllm";
    case Dialect::sglang:
      return "sglang";
    case Dialect::llamacpp:
      return "llamacpp";
    case Dialect::tgi:
      return "tgi";
    case Dialect::qubrid:
      return "qubrid";
    case Dialect::simulator:
      return "simulator";
  }
  return "openai";
}

std::optional<Dialect> parse_dialect(std::string_view s) {
  for (auto d : {Dialect::openai, Dialect::vllm, Dialect::sglang, Dialect::llamacpp, Dialect::tgi,
                 Dialect::qubrid, Dialect::simulator})
    if (to_string(d) == s) return d;
  return std::nullopt;
}

const BackendConfig* Config::find_backend(std::string_view name) const {
  for (const auto& b : backends)
    if (b.name == name) return &b;
  return nullptr;
}

EnvLookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
  };
}

namespace {

// Walks the YAML tree, collecting every problem with its path instead of stopping at the first.
class Reader {
 public:
  Reader(const EnvLookup& env, LoadResult& out) : env_(env), out_(out) {}

  void error(const std::string& path, std::string msg) { out_.errors.push_back({path, std::move(msg)}); }
  void warn(const std::string& path, std::string msg) { out_.warnings.push_back({path, std::move(msg)}); }

  // Flags keys of a mapping that are not in `allowed`; false when `n` is not a mapping.
  bool check_map(const YAML::Node& n, const std::string& path,
                 std::initializer_list<std::string_view> allowed) {
    if (!n.IsMap()) {
      error(path, "must be a mapping");
      return false;
    }
    for (const auto& kv : n) {
      auto key = kv.first.as<std::string>();
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end())
        error(join(path, key), "unknown key");
    }
    return true;
  }

  static std::string join(const std::string& path, std::string_view key) {
    return path.empty() ? std::string(key) : path + "." + std::string(key);
  }
  static std::string index(const std::string& path, std::size_t i) {
    return path + "[" + std::to_string(i) + "]";
  }

  // A scalar with ${VAR} / ${VAR:-default} substituted. Sets `unset_var` when a variable had no value.
  std::optional<std::string> scalar(const YAML::Node& n, const std::string& path,
                                    std::string* unset_var = nullptr) {
    if (!n.IsScalar()) {
      error(path, "must be a scalar value");
      return std::nullopt;
    }
    return substitute(n.Scalar(), path, unset_var);
  }

  std::string substitute(const std::string& in, const std::string& path, std::string* unset_var) {
    std::string out;
    std::size_t i = 0;
    while (i < in.size()) {
      if (in.compare(i, 2, "${") == 0) {
        auto end = in.find('}', i + 2);
        if (end == std::string::npos) {
          error(path, "unterminated ${ in value");
          return in;
        }
        std::string spec = in.substr(i + 2, end - i - 2);
        std::optional<std::string> fallback;
        if (auto d = spec.find(":-"); d != std::string::npos) {
          fallback = spec.substr(d + 2);
          spec = spec.substr(0, d);
        }
        auto v = env_(spec);
        if (v && v->empty() && fallback) v.reset();
        if (v)
          out += *v;
        else if (fallback)
          out += *fallback;
        else if (unset_var)
          *unset_var = spec;
        else
          error(path, "environment variable " + spec + " is not set");
        i = end + 1;
      } else {
        out += in[i++];
      }
    }
    return out;
  }

  void string_at(const YAML::Node& parent, std::string_view key, const std::string& path, std::string& dst) {
    if (auto n = parent[std::string(key)]) {
      if (auto v = scalar(n, join(path, key))) dst = *v;
    }
  }

  void bool_at(const YAML::Node& parent, std::string_view key, const std::string& path, bool& dst) {
    if (auto n = parent[std::string(key)]) {
      auto p = join(path, key);
      if (auto v = scalar(n, p)) {
        if (*v == "true" || *v == "yes" || *v == "on")
          dst = true;
        else if (*v == "false" || *v == "no" || *v == "off")
          dst = false;
        else
          error(p, "must be true or false, got '" + *v + "'");
      }
    }
  }

  template <class Int>
  void uint_at(const YAML::Node& parent, std::string_view key, const std::string& path, Int& dst,
               std::uint64_t min = 0, std::uint64_t max = UINT32_MAX) {
    if (auto n = parent[std::string(key)]) {
      auto p = join(path, key);
      if (auto v = scalar(n, p)) {
        char* end = nullptr;
        errno = 0;
        auto x = std::strtoull(v->c_str(), &end, 10);
        if (v->empty() || *end != '\0' || errno || (*v)[0] == '-' || x < min || x > max)
          error(p, "must be an integer from " + std::to_string(min) + " to " + std::to_string(max) +
                       ", got '" + *v + "'");
        else
          dst = static_cast<Int>(x);
      }
    }
  }

  void double_at(const YAML::Node& parent, std::string_view key, const std::string& path, double& dst) {
    if (auto n = parent[std::string(key)]) {
      auto p = join(path, key);
      if (auto v = scalar(n, p)) {
        char* end = nullptr;
        double x = std::strtod(v->c_str(), &end);
        if (v->empty() || *end != '\0' || !(x > 0) || x > 1e9)
          error(p, "must be a positive number, got '" + *v + "'");
        else
          dst = x;
      }
    }
  }

  void duration_at(const YAML::Node& parent, std::string_view key, const std::string& path, Millis& dst) {
    if (auto n = parent[std::string(key)]) {
      auto p = join(path, key);
      if (auto v = scalar(n, p)) {
        if (auto d = parse_duration(*v))
          dst = *d;
        else
          error(p, "must be a duration like 50ms, 2s or 10m, got '" + *v + "'");
      }
    }
  }

  void size_at(const YAML::Node& parent, std::string_view key, const std::string& path, std::uint64_t& dst) {
    if (auto n = parent[std::string(key)]) {
      auto p = join(path, key);
      if (auto v = scalar(n, p)) {
        if (auto s = parse_size(*v))
          dst = *s;
        else
          error(p, "must be a size like 8MiB or 4096, got '" + *v + "'");
      }
    }
  }

  void listen_at(const YAML::Node& parent, std::string_view key, const std::string& path,
                 ListenAddress& dst) {
    auto n = parent[std::string(key)];
    if (!n) return;
    auto p = join(path, key);
    auto v = scalar(n, p);
    if (!v) return;
    std::string host, port;
    if (!v->empty() && (*v)[0] == '[') {
      auto close = v->find(']');
      if (close == std::string::npos || close + 1 >= v->size() || (*v)[close + 1] != ':') {
        error(p, "must be HOST:PORT, got '" + *v + "'");
        return;
      }
      host = v->substr(1, close - 1);
      port = v->substr(close + 2);
    } else {
      auto colon = v->rfind(':');
      if (colon == std::string::npos) {
        error(p, "must be HOST:PORT, got '" + *v + "'");
        return;
      }
      host = v->substr(0, colon);
      port = v->substr(colon + 1);
    }
    char* end = nullptr;
    auto x = std::strtoul(port.c_str(), &end, 10);
    if (host.empty() || port.empty() || *end != '\0' || x > 65535) {
      error(p, "must be HOST:PORT with a port from 0 to 65535, got '" + *v + "'");
      return;
    }
    dst.host = host;
    dst.port = static_cast<std::uint16_t>(x);
  }

  std::vector<std::string> string_list_at(const YAML::Node& parent, std::string_view key,
                                          const std::string& path) {
    std::vector<std::string> out;
    auto n = parent[std::string(key)];
    if (!n) return out;
    auto p = join(path, key);
    if (!n.IsSequence()) {
      error(p, "must be a list");
      return out;
    }
    for (std::size_t i = 0; i < n.size(); ++i)
      if (auto v = scalar(n[i], index(p, i))) out.push_back(*v);
    return out;
  }

  // A secret given inline (`api_key: ${ENV}`) or as a file (`api_key_file: /run/secrets/x`).
  // Returns false when it names an unset variable or unreadable file (the caller leaves the owner out).
  bool secret_at(const YAML::Node& parent, std::string_view key, const std::string& path, std::string& dst,
                 std::string& why) {
    auto inline_node = parent[std::string(key)];
    auto file_node = parent[std::string(key) + "_file"];
    if (inline_node && file_node) {
      error(path, std::string(key) + " and " + std::string(key) + "_file are exclusive");
      return true;
    }
    if (inline_node) {
      std::string unset;
      auto v = scalar(inline_node, join(path, key), &unset);
      if (!unset.empty()) {
        why = "environment variable " + unset + " is not set";
        return false;
      }
      // `${VAR}` set but empty is a mistake; `${VAR:-}` says "no key" on purpose.
      if (v && v->empty() && inline_node.Scalar().find("${") != std::string::npos &&
          inline_node.Scalar().find(":-") == std::string::npos) {
        why = "its key comes from an empty environment variable";
        return false;
      }
      if (v) dst = *v;
    } else if (file_node) {
      auto file = scalar(file_node, join(path, std::string(key) + "_file"));
      if (!file) return true;
      std::ifstream in(*file);
      if (!in) {
        why = "cannot read " + std::string(key) + "_file " + *file;
        return false;
      }
      std::stringstream ss;
      ss << in.rdbuf();
      dst = ss.str();
      while (!dst.empty() && (dst.back() == '\n' || dst.back() == '\r' || dst.back() == ' ')) dst.pop_back();
    }
    return true;
  }

 private:
  const EnvLookup& env_;
  LoadResult& out_;
};

void read_server(Reader& r, const YAML::Node& n, ServerConfig& s) {
  const std::string p = "server";
  if (!r.check_map(n, p,
                   {"listen", "admin_listen", "workers", "max_body_bytes", "max_header_bytes", "drain_timeout", "header_timeout",
                    "body_timeout", "idle_timeout", "max_connections"}))
    return;
  r.listen_at(n, "listen", p, s.listen);
  r.listen_at(n, "admin_listen", p, s.admin_listen);
  r.uint_at(n, "workers", p, s.workers, 0, 256);
  r.size_at(n, "max_body_bytes", p, s.max_body_bytes);
  std::uint64_t header_bytes = s.max_header_bytes;
  r.size_at(n, "max_header_bytes", p, header_bytes);
  if (header_bytes < 1024 || header_bytes > (1u << 20))
    r.error("server.max_header_bytes", "must be between 1KiB and 1MiB");
  else
    s.max_header_bytes = static_cast<std::uint32_t>(header_bytes);
  r.duration_at(n, "drain_timeout", p, s.drain_timeout);
  r.duration_at(n, "header_timeout", p, s.header_timeout);
  r.duration_at(n, "body_timeout", p, s.body_timeout);
  r.duration_at(n, "idle_timeout", p, s.idle_timeout);
  r.uint_at(n, "max_connections", p, s.max_connections, 1, 10'000'000);
  if (s.max_body_bytes == 0) r.error("server.max_body_bytes", "must be greater than 0");
  for (auto [name, d] :
       {std::pair{"header_timeout", s.header_timeout}, std::pair{"body_timeout", s.body_timeout},
        std::pair{"idle_timeout", s.idle_timeout}})
    if (d.count() <= 0) r.error(std::string("server.") + name, "must be longer than 0");
}

void read_log(Reader& r, const YAML::Node& n, LogConfig& l) {
  if (!r.check_map(n, "log", {"level", "format", "access_log", "access_buffer", "access_flush"})) return;
  r.string_at(n, "level", "log", l.level);
  r.string_at(n, "format", "log", l.format);
  r.bool_at(n, "access_log", "log", l.access_log);
  r.size_at(n, "access_buffer", "log", l.access_buffer);
  r.duration_at(n, "access_flush", "log", l.access_flush);
  if (l.access_buffer > (16u << 20)) r.error("log.access_buffer", "must be at most 16MiB");
  if (l.access_flush.count() <= 0) r.error("log.access_flush", "must be longer than 0");
  static const std::set<std::string> levels{"trace", "debug", "info", "warn", "error", "off"};
  if (!levels.count(l.level)) r.error("log.level", "must be one of trace, debug, info, warn, error, off");
  if (l.format != "json" && l.format != "text") r.error("log.format", "must be json or text");
}

void read_backend(Reader& r, const YAML::Node& n, const std::string& p, BackendConfig& b) {
  if (!r.check_map(
          n, p,
          {"name", "dialect", "url", "api_key", "api_key_file", "ca_file", "tls_verify", "max_inflight",
           "max_idle_connections", "timeouts", "simulator", "health", "outlier", "include_usage", "max_queue",
           "queue_timeout"}))
    return;
  r.string_at(n, "name", p, b.name);
  if (b.name.empty()) r.error(Reader::join(p, "name"), "is required");
  std::string dialect = "openai";
  r.string_at(n, "dialect", p, dialect);
  if (auto d = parse_dialect(dialect))
    b.dialect = *d;
  else
    r.error(Reader::join(p, "dialect"),
            "must be one of openai, vllm, sglang, llamacpp, tgi, qubrid, simulator");
  r.string_at(n, "url", p, b.url);
  r.string_at(n, "ca_file", p, b.ca_file);
  r.bool_at(n, "tls_verify", p, b.tls_verify);
  r.uint_at(n, "max_inflight", p, b.max_inflight, 1, 1'000'000);
  r.uint_at(n, "max_idle_connections", p, b.max_idle_connections, 0, 100'000);
  r.uint_at(n, "max_queue", p, b.max_queue, 0, 1'000'000);
  r.duration_at(n, "queue_timeout", p, b.queue_timeout);
  if (auto t = n["timeouts"]) {
    auto tp = Reader::join(p, "timeouts");
    if (r.check_map(t, tp, {"connect", "first_token", "idle", "total"})) {
      r.duration_at(t, "connect", tp, b.timeouts.connect);
      r.duration_at(t, "first_token", tp, b.timeouts.first_token);
      r.duration_at(t, "idle", tp, b.timeouts.idle);
      r.duration_at(t, "total", tp, b.timeouts.total);
      for (auto [name, d] :
           {std::pair{"connect", b.timeouts.connect}, std::pair{"first_token", b.timeouts.first_token},
            std::pair{"idle", b.timeouts.idle}, std::pair{"total", b.timeouts.total}})
        if (d.count() <= 0) r.error(Reader::join(tp, name), "must be longer than 0");
    }
  }
  if (auto s = n["simulator"]) {
    auto sp = Reader::join(p, "simulator");
    if (r.check_map(s, sp, {"tokens_per_second", "ttft"})) {
      r.double_at(s, "tokens_per_second", sp, b.simulator.tokens_per_second);
      r.duration_at(s, "ttft", sp, b.simulator.ttft);
    }
  }
  r.bool_at(n, "include_usage", p, b.include_usage);
  if (auto h = n["health"]) {
    auto hp = Reader::join(p, "health");
    if (r.check_map(h, hp, {"enabled", "path", "interval", "timeout"})) {
      r.bool_at(h, "enabled", hp, b.health.enabled);
      r.string_at(h, "path", hp, b.health.path);
      r.duration_at(h, "interval", hp, b.health.interval);
      r.duration_at(h, "timeout", hp, b.health.timeout);
      if (!b.health.path.empty() && b.health.path[0] != '/')
        r.error(Reader::join(hp, "path"), "must start with /");
      if (b.health.interval.count() < 100) r.error(Reader::join(hp, "interval"), "must be at least 100ms");
    }
  }
  if (auto o = n["outlier"]) {
    auto op = Reader::join(p, "outlier");
    if (r.check_map(o, op, {"consecutive_failures", "base_ejection", "max_ejection"})) {
      r.uint_at(o, "consecutive_failures", op, b.outlier.consecutive_failures, 0, 1000);
      r.duration_at(o, "base_ejection", op, b.outlier.base_ejection);
      r.duration_at(o, "max_ejection", op, b.outlier.max_ejection);
    }
  }
  if (b.dialect == Dialect::simulator) {
    if (!b.url.empty())
      r.error(Reader::join(p, "url"), "a simulator backend runs in-process and takes no url");
  } else if (b.url.empty()) {
    r.error(Reader::join(p, "url"), "is required");
  } else if (!upstream::parse_base_url(b.url)) {
    r.error(Reader::join(p, "url"),
            "must be an http:// or https:// URL with a host, an optional port and path, "
            "and no query, got '" +
                b.url + "'");
  }
  std::string why;
  if (!r.secret_at(n, "api_key", p, b.api_key, why)) {
    b.enabled = false;
    r.warn(p, "backend '" + b.name + "' left out: " + why);
  }
}

void read_model(Reader& r, const YAML::Node& n, const std::string& p, ModelConfig& m) {
  if (!r.check_map(
          n, p,
          {"name", "aliases", "strategy", "targets", "cache", "max_attempts", "defaults", "max_tokens_cap",
           "limits"}))
    return;
  r.string_at(n, "name", p, m.name);
  if (m.name.empty()) r.error(Reader::join(p, "name"), "is required");
  m.aliases = r.string_list_at(n, "aliases", p);
  r.string_at(n, "strategy", p, m.strategy);
  if (m.strategy != "fallback" && m.strategy != "balance")
    r.error(Reader::join(p, "strategy"), "must be fallback or balance");
  auto t = n["targets"];
  auto tp = Reader::join(p, "targets");
  if (!t || !t.IsSequence() || t.size() == 0) {
    r.error(tp, "must be a non-empty list");
  } else {
    for (std::size_t i = 0; i < t.size(); ++i) {
      auto ip = Reader::index(tp, i);
      TargetConfig tc;
      if (!r.check_map(t[i], ip, {"backend", "model", "weight"})) continue;
      r.string_at(t[i], "backend", ip, tc.backend);
      r.string_at(t[i], "model", ip, tc.model);
      r.uint_at(t[i], "weight", ip, tc.weight, 1, 1000);
      if (tc.backend.empty()) r.error(Reader::join(ip, "backend"), "is required");
      m.targets.push_back(tc);
    }
  }
  r.uint_at(n, "max_attempts", p, m.max_attempts, 1, 10);
  r.uint_at(n, "max_tokens_cap", p, m.max_tokens_cap, 0, UINT32_MAX);
  if (auto d = n["defaults"]) {
    auto dp = Reader::join(p, "defaults");
    if (!d.IsMap()) {
      r.error(dp, "must be a mapping of request fields to values");
    } else {
      for (const auto& kv : d) {
        auto key = kv.first.as<std::string>();
        if (key == "model" || key == "stream" || key == "stream_options" || key == "messages" ||
            key == "prompt")
          r.error(Reader::join(dp, key), "cannot be given a default");
        else if (auto v = r.scalar(kv.second, Reader::join(dp, key)))
          m.defaults.emplace_back(key, *v);
      }
    }
  }
  if (auto l = n["limits"]) {
    auto lp = Reader::join(p, "limits");
    if (r.check_map(l, lp, {"rpm", "tpm", "concurrency"})) {
      r.uint_at(l, "rpm", lp, m.limits.rpm, 0, UINT32_MAX);
      r.uint_at(l, "tpm", lp, m.limits.tpm, 0, UINT32_MAX);
      r.uint_at(l, "concurrency", lp, m.limits.concurrency, 0, UINT32_MAX);
    }
  }
  if (auto c = n["cache"]) {
    auto cp = Reader::join(p, "cache");
    if (r.check_map(c, cp, {"enabled", "ttl", "only_deterministic"})) {
      r.bool_at(c, "enabled", cp, m.cache_enabled);
      r.bool_at(c, "only_deterministic", cp, m.cache_only_deterministic);
      if (c["ttl"]) {
        Millis ttl{0};
        r.duration_at(c, "ttl", cp, ttl);
        m.cache_ttl = ttl;
      }
    }
  }
}

bool is_hex64(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

void read_key(Reader& r, const YAML::Node& n, const std::string& p, KeyConfig& k) {
  if (!r.check_map(n, p, {"name", "key_sha256", "models", "limits"})) return;
  r.string_at(n, "name", p, k.name);
  if (k.name.empty()) r.error(Reader::join(p, "name"), "is required");
  r.string_at(n, "key_sha256", p, k.key_sha256);
  std::transform(k.key_sha256.begin(), k.key_sha256.end(), k.key_sha256.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (!is_hex64(k.key_sha256))
    r.error(Reader::join(p, "key_sha256"),
            "must be 64 hex digits (run `sluice keys hash` or `sluice keys new`)");
  k.models = r.string_list_at(n, "models", p);
  if (auto l = n["limits"]) {
    auto lp = Reader::join(p, "limits");
    if (r.check_map(l, lp, {"rpm", "tpm", "concurrency", "budget", "budget_window"})) {
      r.uint_at(l, "rpm", lp, k.limits.rpm, 0, UINT32_MAX);
      r.uint_at(l, "tpm", lp, k.limits.tpm, 0, UINT32_MAX);
      r.uint_at(l, "concurrency", lp, k.limits.concurrency, 0, UINT32_MAX);
      r.uint_at(l, "budget", lp, k.limits.budget, 0, 1ull << 50);
      r.duration_at(l, "budget_window", lp, k.limits.budget_window);
      if (k.limits.budget_window < Millis{1000}) r.error(Reader::join(lp, "budget_window"), "must be 1s or longer");
    }
  }
}

template <class T, class Fn>
void read_list(Reader& r, const YAML::Node& root, const char* key, std::vector<T>& out, Fn fn) {
  auto n = root[key];
  if (!n) return;
  if (!n.IsSequence()) {
    r.error(key, "must be a list");
    return;
  }
  for (std::size_t i = 0; i < n.size(); ++i) {
    T item;
    fn(r, n[i], Reader::index(key, i), item);
    out.push_back(std::move(item));
  }
}

// Cross-references: unique names, targets naming known backends, keys naming known models.
void check_references(Reader& r, Config& c) {
  std::set<std::string> names;
  for (std::size_t i = 0; i < c.backends.size(); ++i)
    if (!c.backends[i].name.empty() && !names.insert(c.backends[i].name).second)
      r.error(Reader::index("backends", i) + ".name", "duplicate backend name '" + c.backends[i].name + "'");
  std::set<std::string> models;
  for (std::size_t i = 0; i < c.models.size(); ++i) {
    const auto& m = c.models[i];
    auto mp = Reader::index("models", i);
    if (!m.name.empty() && !models.insert(m.name).second)
      r.error(mp + ".name", "duplicate model name '" + m.name + "'");
    for (std::size_t a = 0; a < m.aliases.size(); ++a)
      if (!models.insert(m.aliases[a]).second)
        r.error(Reader::index(mp + ".aliases", a), "duplicate model name '" + m.aliases[a] + "'");
    for (std::size_t t = 0; t < m.targets.size(); ++t)
      if (!m.targets[t].backend.empty() && !names.count(m.targets[t].backend))
        r.error(Reader::index(mp + ".targets", t) + ".backend",
                "unknown backend '" + m.targets[t].backend + "'");
  }
  std::set<std::string> key_names, digests;
  for (std::size_t i = 0; i < c.keys.size(); ++i) {
    auto kp = Reader::index("keys", i);
    const auto& k = c.keys[i];
    if (!k.name.empty() && !key_names.insert(k.name).second)
      r.error(kp + ".name", "duplicate key name '" + k.name + "'");
    if (!k.key_sha256.empty() && !digests.insert(k.key_sha256).second)
      r.error(kp + ".key_sha256", "the same key is configured twice");
    for (std::size_t j = 0; j < k.models.size(); ++j)
      if (k.models[j].find('*') == std::string::npos && !models.count(k.models[j]))
        r.error(Reader::index(kp + ".models", j), "unknown model '" + k.models[j] + "'");
  }
}

}  // namespace

LoadResult load_config_text(const std::string& yaml, const EnvLookup& env) {
  LoadResult result;
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    result.errors.push_back({"", "invalid YAML at line " + std::to_string(e.mark.line + 1) + ", column " +
                                     std::to_string(e.mark.column + 1) + ": " + e.msg});
    return result;
  }
  Reader r(env, result);
  Config c;
  if (!root || root.IsNull()) {
    r.error("", "the config is empty");
    return result;
  }
  try {
    if (!r.check_map(root, "",
                     {"server", "log", "store", "redis", "cache", "limits", "backends", "models", "keys", "auth"}))
      return result;
    // Container-style overrides: each environment variable replaces one setting of the file.
    static constexpr std::array<std::array<const char*, 3>, 7> kOverrides{{
        {"SLUICE_STORE", "", "store"},
        {"SLUICE_LISTEN", "server", "listen"},
        {"SLUICE_ADMIN_LISTEN", "server", "admin_listen"},
        {"SLUICE_WORKERS", "server", "workers"},
        {"SLUICE_LOG_LEVEL", "log", "level"},
        {"SLUICE_LOG_FORMAT", "log", "format"},
        {"SLUICE_REDIS_URL", "redis", "url"},
    }};
    std::vector<std::pair<std::string, std::string>> overridden;  // setting path, variable
    for (const auto& [var, section, key] : kOverrides)
      if (auto v = env(var); v && !v->empty()) {
        if (!*section) {
          root[key] = *v;
          overridden.emplace_back(key, var);
          continue;
        }
        if (root[section] && !root[section].IsMap()) continue;  // reported as the file's own mistake below
        root[section][key] = *v;
        overridden.emplace_back(std::string(section) + "." + key, var);
      }
    struct SayWhere {  // an error in an overridden setting names the variable it came from
      LoadResult& result;
      const std::vector<std::pair<std::string, std::string>>& overridden;
      ~SayWhere() {
        for (auto& e : result.errors)
          for (const auto& [path, var] : overridden)
            if (e.path == path) e.message += " (set by " + var + ")";
      }
    } say_where{result, overridden};
    if (auto n = root["server"]) read_server(r, n, c.server);
    if (auto n = root["log"]) read_log(r, n, c.log);
    r.string_at(root, "store", "", c.store);
    if (c.store != "memory" && c.store != "redis") r.error("store", "must be memory or redis");
    if (auto n = root["redis"]) {
      if (r.check_map(n, "redis", {"url", "fail_closed", "timeout", "key_prefix"})) {
        r.string_at(n, "url", "redis", c.redis.url);
        r.bool_at(n, "fail_closed", "redis", c.redis.fail_closed);
        r.duration_at(n, "timeout", "redis", c.redis.timeout);
        r.string_at(n, "key_prefix", "redis", c.redis.key_prefix);
        if (c.redis.timeout.count() <= 0) r.error("redis.timeout", "must be longer than 0");
        if (c.redis.url.rfind("redis://", 0) != 0) r.error("redis.url", "must start with redis://");
      }
    }
    if (auto n = root["limits"]) {
      if (r.check_map(n, "limits", {"completion_estimate"}))
        r.uint_at(n, "completion_estimate", "limits", c.limits.completion_estimate, 1, UINT32_MAX);
    }
    if (auto n = root["cache"]) {
      if (r.check_map(n, "cache", {"max_bytes", "default_ttl", "scope"})) {
        r.size_at(n, "max_bytes", "cache", c.cache.max_bytes);
        r.duration_at(n, "default_ttl", "cache", c.cache.default_ttl);
        r.string_at(n, "scope", "cache", c.cache.scope);
        if (c.cache.scope != "key" && c.cache.scope != "shared") r.error("cache.scope", "must be key or shared");
      }
    }
    std::string auth = "keys";
    r.string_at(root, "auth", "", auth);
    if (auth != "keys" && auth != "none") r.error("auth", "must be keys or none");
    c.auth_required = auth == "keys";
    read_list(r, root, "backends", c.backends, read_backend);
    read_list(r, root, "models", c.models, read_model);
    read_list(r, root, "keys", c.keys, read_key);
    if (c.backends.empty()) r.error("backends", "at least one backend is required");
    if (c.models.empty()) r.error("models", "at least one model is required");
    check_references(r, c);
  } catch (const YAML::Exception& e) {
    r.error("", std::string("unexpected YAML structure: ") + e.what());
  }
  if (result.errors.empty()) result.config = std::move(c);
  return result;
}

LoadResult load_config_file(const std::string& path, const EnvLookup& env) {
  std::ifstream in(path);
  if (!in) {
    LoadResult r;
    r.errors.push_back({"", "cannot read config file " + path});
    return r;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return load_config_text(ss.str(), env);
}

}  // namespace sluice
